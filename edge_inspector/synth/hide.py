"""One hide on the belt: its cowhide outline, colour, texture fields and the defects placed on it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from ..classes import DEFECT_CLASSES
from .catalogue import Defect, make_defect, rotate, trim_defect
from .config import SynthConfig
from .texture import texture_fields

# Hide colours (RGB, 0-255) before grain and fall-off.  The darkest ones ("dark", "oxblood") are
# dyed hides as the camera sees them under the station's line light: still far above the belt.
_PALETTES: tuple[tuple[str, tuple[float, float, float]], ...] = (
    ("brown", (176.0, 124.0, 88.0)),
    ("tan", (204.0, 158.0, 112.0)),
    ("natural", (212.0, 188.0, 158.0)),
    ("honey", (212.0, 150.0, 82.0)),
    ("dark", (150.0, 140.0, 133.0)),
    ("oxblood", (186.0, 106.0, 92.0)),
    ("chocolate", (170.0, 128.0, 104.0)),
)


def _hide_outline_mm(rng: np.random.Generator, length_mm: float, width_mm: float) -> np.ndarray:
    """A cowhide-like closed outline (K, 2) in mm (x across, y along), bbox from (0, 0)."""
    n = 900
    phi = np.linspace(0, 2 * math.pi, n, endpoint=False)
    p = rng.uniform(2.2, 3.4)  # superellipse exponent: 2 = ellipse, larger = squarer
    c, s = np.cos(phi), np.sin(phi)
    r = (np.abs(c) ** p + np.abs(s) ** p) ** (-1.0 / p)

    def bump(center: float, amp: float, w: float) -> np.ndarray:
        d = np.angle(np.exp(1j * (phi - center)))
        return amp * np.exp(-((d / w) ** 2))

    for k in range(2, 10):  # low-frequency irregularity
        r *= 1 + rng.normal(0, 0.03 / k ** 0.5) * np.cos(k * phi + rng.uniform(0, 2 * math.pi))
    front, hind = rng.uniform(0.55, 0.85), rng.uniform(0.55, 0.85)
    for ang in (front, -front, math.pi - hind, -(math.pi - hind)):  # legs
        r += bump(ang + rng.normal(0, 0.05), rng.uniform(0.22, 0.45), rng.uniform(0.07, 0.13))
    r += bump(0.0, rng.uniform(0.04, 0.12), rng.uniform(0.2, 0.35))  # neck
    r += bump(math.pi, rng.uniform(0.05, 0.15), rng.uniform(0.03, 0.06))  # tail
    for side in (math.pi / 2, -math.pi / 2):  # belly
        r -= bump(side, rng.uniform(0.02, 0.08), rng.uniform(0.3, 0.5))
    pts = np.stack([r * s, r * c], axis=1)
    if rng.uniform() < 0.5:
        pts[:, 1] = -pts[:, 1]  # head or tail first
    pts = rotate(pts, math.radians(rng.uniform(-7, 7)))
    pts -= pts.min(axis=0)
    pts *= np.array([width_mm, length_mm]) / pts.max(axis=0)
    return pts


@dataclass(slots=True)
class Hide:
    hide_id: int
    first_line: int  # global line of canvas row 0 (the hide's first line)
    n_lines: int
    x0: int  # global column of canvas column 0
    width: int
    poly: np.ndarray  # (K, 1, 2) int32, canvas px with 4 fractional bits, before cropping
    crop: tuple[int, int, int, int]  # rows r0, r1, cols c0, c1 of the raster that hold the hide
    raster_shape: tuple[int, int]
    base: np.ndarray  # (C,) float32 colour
    hue_dir: np.ndarray  # (C,) float32
    palette: str
    grids: list[tuple[np.ndarray, float, float]]  # tone octaves: grid, sx, sy (px)
    hue_grid: tuple[np.ndarray, float, float] | None
    defects: list[Defect] = field(default_factory=list)
    truth: dict[str, Any] = field(default_factory=dict)

    @property
    def end_line(self) -> int:
        return self.first_line + self.n_lines

    def mask(self) -> np.ndarray:
        """(n_lines, width) uint8: 1 hide, 2 hole (belt shows through), 0 belt."""
        m = np.zeros(self.raster_shape, np.uint8)
        cv2.fillPoly(m, [self.poly], 1, cv2.LINE_8, 4)
        r0, r1, c0, c1 = self.crop
        m = np.ascontiguousarray(m[r0:r1, c0:c1])
        for d in self.defects:
            if d.mode == "hole":
                sub = m[d.y0 - self.first_line:d.y0 - self.first_line + d.h,
                        d.x0 - self.x0:d.x0 - self.x0 + d.w]
                sub[d.mask] = 2
        return m


def plan_hide(cfg: SynthConfig, k: int, first_line: int, class_cycle: list[str],
              next_id: int) -> tuple[Hide, np.ndarray, int]:
    """Hide number ``k`` (hide_id k + 1) from global line ``first_line`` on, from its own random
    stream (seed, 2, k): outline, position across the belt, colour, texture fields, defects.

    Returns the hide, its (n_lines, width) outline raster (1 = hide) and the next free defect id.
    """
    hr = np.random.default_rng([cfg.seed, 2, k])
    ppx, ppl = cfg.mm_per_px, cfg.mm_per_line
    belt_mm = cfg.width * ppx - 2 * cfg.margin_mm
    length = hr.uniform(*cfg.hide_length_mm)
    width = min(hr.uniform(*cfg.hide_width_mm), belt_mm)
    pts = _hide_outline_mm(hr, length, width)
    pad = 4
    px = np.stack([pts[:, 0] / ppx + pad, pts[:, 1] / ppl + pad], axis=1)
    shape = (int(math.ceil(px[:, 1].max())) + pad, int(math.ceil(px[:, 0].max())) + pad)
    poly = np.rint(px * 16).astype(np.int32).reshape(-1, 1, 2)
    raster = np.zeros(shape, np.uint8)
    cv2.fillPoly(raster, [poly], 1, cv2.LINE_8, 4)
    rows = np.flatnonzero(raster.any(axis=1))
    cols = np.flatnonzero(raster.any(axis=0))
    crop = (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)
    mask = np.ascontiguousarray(raster[crop[0]:crop[1], crop[2]:crop[3]])
    del raster
    n_lines, hw = mask.shape
    margin_px = int(round(cfg.margin_mm / ppx))
    lo, hi = margin_px, cfg.width - margin_px - hw
    x0 = int(hr.integers(lo, hi + 1)) if hi > lo else max(0, (cfg.width - hw) // 2)
    name, rgb = _PALETTES[int(hr.integers(len(_PALETTES)))]
    rgb = np.array(rgb, np.float32) * np.float32(hr.uniform(0.93, 1.07))
    rgb *= hr.uniform(0.96, 1.04, 3).astype(np.float32)
    base = rgb if cfg.channels == 3 else rgb.mean(keepdims=True)
    hue_dir, grids, hue_grid = texture_fields(hr, mask, cfg)
    hide = Hide(k + 1, first_line, n_lines, x0, hw, poly, crop, shape, base, hue_dir, name,
                grids, hue_grid)
    next_id = place_defects(cfg, hide, mask, hr, class_cycle, next_id)
    return hide, mask, next_id


def place_defects(cfg: SynthConfig, hide: Hide, mask: np.ndarray, rng: np.random.Generator,
                  cycle: list[str], next_id: int) -> int:
    """Draw ``cfg.defects_per_hide`` defects and place them inside the hide, 4 mm apart.

    ``cycle`` (shared by all hides) deals every class once per len(DEFECT_CLASSES) defects;
    every hide gets at least one small (1-3 mm) dot.  Returns the next free defect id.
    """
    lo, hi = cfg.defects_per_hide
    n = int(rng.integers(lo, hi + 1))
    ppx, ppl = cfg.mm_per_px, cfg.mm_per_line
    sep = int(math.ceil(4.0 / ppx))  # keep defects apart (and off the edge) by 4 mm
    taken: list[tuple[int, int, int, int]] = []
    full_base = hide.base if cfg.channels == 3 else np.repeat(hide.base, 3)
    for j in range(n):
        if not cycle:  # every class once per cycle of len(DEFECT_CLASSES) defects
            cycle.extend(rng.permutation(DEFECT_CLASSES).tolist())
        cls = cycle.pop()
        small = False
        if j == 0:  # every hide gets at least one small (1-3 mm) dot
            cycle.append(cls)
            cls, small = str(rng.choice(["black_dot", "white_dot"])), True
        placed = None
        for _attempt in range(4):
            d = trim_defect(make_defect(cls, rng, ppx, ppl, full_base, small))
            if d is None:
                continue
            if cfg.channels == 1:
                d.target = d.target.mean(keepdims=True).astype(np.float32)
            for _try in range(60):
                ly = int(rng.integers(0, max(1, hide.n_lines - d.h)))
                lx = int(rng.integers(0, max(1, hide.width - d.w)))
                y0, y1, x0, x1 = ly - sep, ly + d.h + sep, lx - sep, lx + d.w + sep
                if y0 < 0 or x0 < 0 or y1 > hide.n_lines or x1 > hide.width:
                    continue
                if any(y0 < b[3] and b[1] < y1 and x0 < b[2] and b[0] < x1 for b in taken):
                    continue
                if not mask[y0:y1, x0:x1].all():
                    continue
                placed = (lx, ly)
                break
            if placed:
                break
        if placed is None or d is None:
            continue
        d.x0, d.y0 = hide.x0 + placed[0], hide.first_line + placed[1]
        d.id = next_id
        next_id += 1
        taken.append((placed[0], placed[1], placed[0] + d.w, placed[1] + d.h))
        hide.defects.append(d)
    return next_id
