"""Synthetic hides on a conveyor belt: a seeded generator of line-scan recordings with ground truth.

The generator draws what an 8K line-scan camera at a leather station sees: a dark grey conveyor
belt (close to the station's belt level, with noise and a faint weave), and hides passing under
the camera with gaps of belt between them.  Every hide has an irregular cowhide-like outline, its
own colour, leather grain at several scales and the camera's across-the-belt illumination
fall-off.  Defects are drawn at station scale with their true sizes in mm, each with an exact
pixel mask from which the ground truth (bounding boxes, outlines, areas in px and mm) is taken.

    cfg = SynthConfig(hides=3, seed=7)
    stream = generate_blocks(cfg)      # iterator of LineBlock; stream.truth is the ground truth
    for block in stream: ...
    truth = write_recording("hides.raw", cfg)   # hides.raw + hides.raw.gt.json (+ masks)

Same config -> bit-identical lines and truth.  Lines are rendered in chunks of ``RENDER_LINES``
aligned to the global line index, with random streams keyed by (seed, chunk), so the pixels do not
depend on ``block_lines`` either.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from statistics import NormalDist
from typing import Any

import cv2
import numpy as np

from .classes import DEFECT_CLASSES
from .lines import LineBlock

RENDER_LINES = 512
"""Lines rendered at a time; chunks are aligned to multiples of this global line index."""

TRUTH_VERSION = 1

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

# Leather tone octaves: (grid spacing in mm, amplitude as a fraction of the hide's colour).
_TONE_OCTAVES: tuple[tuple[float, float], ...] = ((7.0, 0.045), (35.0, 0.06), (220.0, 0.09))
_HUE_SPACING_MM = 300.0
_HUE_AMP = 0.05
_GRAIN_FINE = 0.035  # pores / grain, sigma ~0.3 mm
_GRAIN_CELL = 0.06  # grain cells, sigma ~1 mm
_SOFT_FLOOR = 14.0  # levels over which dark leather is compressed towards the hide floor
_BAND = 32  # grain noise is keyed by bands of this many lines
_PAD = 16  # lines of neighbouring noise used when blurring the grain (> 4 sigma)


# ------------------------------------------------------------------------------------ config


@dataclass(slots=True)
class SynthConfig:
    """What to generate.  Sizes in mm are true sizes on the belt.

    hides: number of hides; seed: everything random follows from it.
    width, channels (3 = RGB, 1 = mono), mm_per_px (across), mm_per_line (along), line_rate_hz:
    the camera.  block_lines: lines per LineBlock.  defects_per_hide: (min, max) inclusive.
    masks: also write per-hide class-index PNGs.  belt_level: belt grey per channel (one value
    or one per channel), as in the station's hide_detection.belt_level.
    hide_length_mm / hide_width_mm: (min, max) along / across; across is clipped to the belt
    with ``margin_mm`` on both sides.  gap_lines: (min, max) belt lines before, between and after
    hides.  falloff: illumination loss at the line ends (0.2 = 20 % darker at the edges).
    hide_min_contrast: every hide pixel's channel mean stays this far above the belt level.
    created: the header's creation time (fixed so that recordings are bit-identical).
    """

    hides: int = 3
    seed: int = 0
    width: int = 8192
    channels: int = 3
    mm_per_px: float = 0.37
    mm_per_line: float = 0.37
    line_rate_hz: float = 2700.0
    block_lines: int = 512
    defects_per_hide: tuple[int, int] = (3, 12)
    masks: bool = False
    belt_level: tuple[float, ...] = (38.0, 40.0, 42.0)
    hide_length_mm: tuple[float, float] = (1600.0, 2600.0)
    hide_width_mm: tuple[float, float] = (1500.0, 2800.0)
    gap_lines: tuple[int, int] = (300, 900)
    margin_mm: float = 40.0
    falloff: float = 0.2
    hide_min_contrast: float = 46.0
    created: str = "2000-01-01T00:00:00.000+00:00"

    def problems(self) -> list[str]:
        out = []
        if self.hides < 0:
            out.append(f"hides: {self.hides} must be >= 0")
        if self.channels not in (1, 3):
            out.append(f"channels: {self.channels} must be 1 or 3")
        if self.width < 64:
            out.append(f"width: {self.width} px is too narrow (>= 64)")
        if self.mm_per_px <= 0 or self.mm_per_line <= 0:
            out.append("mm_per_px and mm_per_line must be > 0")
        if self.block_lines <= 0:
            out.append(f"block_lines: {self.block_lines} must be > 0")
        lo, hi = self.defects_per_hide
        if not 0 <= lo <= hi:
            out.append(f"defects_per_hide: {self.defects_per_hide} must be (min, max), 0 <= min <= max")
        if len(self.belt_level) not in (1, self.channels):
            out.append(f"belt_level: {len(self.belt_level)} values for {self.channels} channels")
        if not 0 <= self.falloff < 0.6:
            out.append(f"falloff: {self.falloff} must be in [0, 0.6)")
        if self.gap_lines[0] < 1 or self.gap_lines[1] < self.gap_lines[0]:
            out.append(f"gap_lines: {self.gap_lines} must be (min, max) with min >= 1")
        belt_mm = self.width * self.mm_per_px - 2 * self.margin_mm
        if self.hides and belt_mm < 60:
            out.append(f"width: the belt ({self.width} px) leaves {belt_mm:.0f} mm for hides; need >= 60 mm")
        return out


# ---------------------------------------------------------------------------- small helpers


def _gauss_lut() -> np.ndarray:
    nd = NormalDist()
    return np.array([nd.inv_cdf((i + 0.5) / 256.0) for i in range(256)], np.float32).reshape(1, 256)


_GAUSS_LUT = _gauss_lut()
# Belt noise: a rounded normal (sigma 2.2 levels) clipped to +-6, indexed by a random byte.
_BELT_LUT = np.clip(np.rint(_GAUSS_LUT[0] * 2.2), -6, 6).astype(np.int16)


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _bspline_weights(u: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Cubic B-spline: node index floor(u) and the weights of nodes i-1 .. i+2."""
    i = np.floor(u).astype(np.int64)
    t = (u - i).astype(np.float32)
    t2, t3 = t * t, t * t * t
    w = [
        (1 - t) ** 3 / 6,
        (3 * t3 - 6 * t2 + 4) / 6,
        (-3 * t3 + 3 * t2 + 3 * t + 1) / 6,
        t3 / 6,
    ]
    return i, w


def _bspline_matrix(pos: np.ndarray, spacing: float, g0: int, n_grid: int) -> np.ndarray:
    """(len(pos), n_grid) matrix taking grid nodes g0.. to a smooth field at positions ``pos``.

    Node k sits at position (k - 1) * spacing (one node of padding before 0).
    """
    i, w = _bspline_weights(np.asarray(pos, np.float64) / spacing + 1.0)
    m = np.zeros((len(i), n_grid), np.float32)
    rows = np.arange(len(i))
    for k in range(4):
        m[rows, i - 1 + k - g0] += w[k]
    return m


class _Octave:
    """A smooth random field over a hide's canvas: a coarse grid, B-spline interpolated.

    The across direction is interpolated once (``h``: grid rows x canvas columns); rows of a
    render chunk take a small (lines x few grid rows) matrix product.
    """

    def __init__(self, grid: np.ndarray, sx: float, sy: float, width: int) -> None:
        self.grid = grid
        self.sy = sy
        rx = _bspline_matrix(np.arange(width) + 0.5, sx, 0, grid.shape[1])
        self.h = np.ascontiguousarray(grid @ rx.T)  # (grid rows, width) float32

    @staticmethod
    def grid_shape(n_lines: int, width: int, sx: float, sy: float) -> tuple[int, int]:
        return int(n_lines / sy) + 5, int(width / sx) + 5

    def rows(self, r0: int, r1: int, out: np.ndarray) -> None:
        pos = np.arange(r0, r1) + 0.5
        g0 = int(np.floor(pos[0] / self.sy + 1.0)) - 1
        g1 = int(np.floor(pos[-1] / self.sy + 1.0)) + 3
        ry = _bspline_matrix(pos, self.sy, g0, g1 - g0)
        np.matmul(ry, self.h[g0:g1], out=out)


# --------------------------------------------------------------------------------- defects


@dataclass(slots=True)
class _Defect:
    """One drawn defect: a local canvas at (x0, y0) (global px) with its mask and strength."""

    cls: str
    mask: np.ndarray  # (h, w) bool: exactly the pixels the defect changes
    s: np.ndarray  # (h, w) float32 strength, 0 outside the mask (signed for "mul")
    mode: str  # "blend" (towards target), "mul" (shading), "hole" (belt shows through)
    target: np.ndarray = field(default_factory=lambda: np.zeros(3, np.float32))
    alpha: float = 1.0
    amp: float = 0.0
    x0: int = 0
    y0: int = 0
    id: int = 0

    @property
    def h(self) -> int:
        return int(self.mask.shape[0])

    @property
    def w(self) -> int:
        return int(self.mask.shape[1])


class _Canvas:
    """Local pixel canvas around a shape centre with mm coordinates of every pixel centre."""

    def __init__(self, rng: np.random.Generator, ext_mm: float, ppx: float, ppl: float) -> None:
        self.ppx, self.ppl = ppx, ppl
        self.w = int(math.ceil(ext_mm / ppx)) + 6
        self.h = int(math.ceil(ext_mm / ppl)) + 6
        self.cx = self.w / 2 + rng.uniform(-0.5, 0.5)
        self.cy = self.h / 2 + rng.uniform(-0.5, 0.5)
        self.X = ((np.arange(self.w, dtype=np.float32) + 0.5 - self.cx) * ppx)[None, :]
        self.Y = ((np.arange(self.h, dtype=np.float32) + 0.5 - self.cy) * ppl)[:, None]

    def rotated(self, theta: float) -> tuple[np.ndarray, np.ndarray]:
        c, s = math.cos(theta), math.sin(theta)
        return self.X * c + self.Y * s, -self.X * s + self.Y * c

    def to_px(self, pts_mm: np.ndarray) -> np.ndarray:
        """(K, 2) mm (x, y) around the centre -> int32 px with 3 fractional bits (shift=3)."""
        px = np.empty_like(pts_mm)
        px[:, 0] = self.cx + pts_mm[:, 0] / self.ppx
        px[:, 1] = self.cy + pts_mm[:, 1] / self.ppl
        return np.rint(px * 8).astype(np.int32)


def _rot(pts: np.ndarray, theta: float) -> np.ndarray:
    c, s = math.cos(theta), math.sin(theta)
    return np.stack([pts[:, 0] * c - pts[:, 1] * s, pts[:, 0] * s + pts[:, 1] * c], axis=1)


def _dot_strength(cv: _Canvas, cx_mm: float, cy_mm: float, d_mm: float, ratio: float,
                  theta: float, rough: np.ndarray | None = None) -> np.ndarray:
    """Normalised radius r of an ellipse (diameter d_mm, minor/major ``ratio``) at every pixel."""
    c, s = math.cos(theta), math.sin(theta)
    dx, dy = cv.X - cx_mm, cv.Y - cy_mm
    u, v = dx * c + dy * s, -dx * s + dy * c
    a, b = d_mm / 2, d_mm / 2 * ratio
    r = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    if rough is not None:  # radial harmonics: (k, amplitude, phase) rows
        ang = np.arctan2(v, u)
        f = np.ones_like(r)
        for k, am, ph in rough:
            f += am * np.cos(k * ang + ph)
        r = r / f
    return r


def _dark_target(rng: np.random.Generator) -> np.ndarray:
    return np.array([rng.uniform(22, 40), rng.uniform(16, 28), rng.uniform(12, 24)], np.float32)


def _make_defect(cls: str, rng: np.random.Generator, ppx: float, ppl: float,
                 base: np.ndarray, small: bool = False) -> _Defect:
    """Draw one defect of class ``cls`` on a local canvas (sizes in mm, see module doc)."""
    if cls in ("black_dot", "white_dot"):
        d = rng.uniform(1.0, 3.0) if small else rng.uniform(1.0, 4.0)
        cv = _Canvas(rng, d, ppx, ppl)
        r = _dot_strength(cv, 0.0, 0.0, d, rng.uniform(0.75, 1.0), rng.uniform(0, math.pi))
        mask = r <= 1.0
        s = (1.0 - 0.4 * _smoothstep(0.5, 1.0, r)) * mask
        if cls == "black_dot":
            return _Defect(cls, mask, s.astype(np.float32), "blend", _dark_target(rng),
                           float(rng.uniform(0.55, 0.9)))
        tgt = np.array([250, 247, 240], np.float32)
        return _Defect(cls, mask, s.astype(np.float32), "blend", tgt, float(rng.uniform(0.5, 0.85)))

    if cls == "hole":
        d = rng.uniform(2.0, 12.0)
        cv = _Canvas(rng, d * 1.2, ppx, ppl)
        rough = np.array([[k, rng.uniform(0, 0.06), rng.uniform(0, 2 * math.pi)] for k in (2, 3, 5)])
        r = _dot_strength(cv, 0.0, 0.0, d, rng.uniform(0.6, 1.0), rng.uniform(0, math.pi), rough)
        mask = r <= 1.0
        return _Defect(cls, mask, mask.astype(np.float32), "hole")

    if cls in ("cut", "scratch"):
        if cls == "cut":
            length, wid = rng.uniform(10, 80), rng.uniform(0.5, 1.5)
            bend = rng.uniform(-0.08, 0.08)
        else:
            length, wid = rng.uniform(20, 150), rng.uniform(0.3, 1.0)
            bend = rng.uniform(-0.3, 0.3)
        cv = _Canvas(rng, length * 1.05 + 2 * wid, ppx, ppl)
        t = np.linspace(-0.5, 0.5, 33)
        pts = np.stack([t * length, bend * length * (1 - 4 * t * t)], axis=1)
        pts[:, 1] += rng.normal(0, 0.1, len(t)).cumsum() * (0.3 if cls == "scratch" else 0.05)
        pts[:, 1] -= np.linspace(pts[0, 1], pts[-1, 1], len(t))
        pts = _rot(pts, rng.uniform(0, math.pi))
        px = cv.to_px(pts)
        img = np.zeros((cv.h, cv.w), np.uint8)
        thick = max(1, int(round(wid / ppx)))
        if cls == "cut":  # a slit: full width in the middle, tapering to the ends
            tang = np.gradient(pts, axis=0)
            nrm = np.stack([-tang[:, 1], tang[:, 0]], axis=1)
            nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
            hw = wid / 2 * (0.3 + 0.7 * np.sin(math.pi * (t + 0.5)) ** 0.5)
            hw = np.maximum(hw, 0.55 * min(ppx, ppl))
            outline = np.concatenate([pts + nrm * hw[:, None], (pts - nrm * hw[:, None])[::-1]])
            cv2.fillPoly(img, [cv.to_px(outline).reshape(-1, 1, 2)], 255, cv2.LINE_AA, 3)
            tgt, alpha = _dark_target(rng), float(rng.uniform(0.5, 0.8))
        else:  # intensity varies along the scratch
            lev = 150 + 105 * (0.5 + 0.5 * np.sin(np.linspace(0, rng.uniform(2, 9), len(t) - 1)
                                                   + rng.uniform(0, 6.3)))
            for k in range(len(t) - 1):
                cv2.line(img, (int(px[k, 0]), int(px[k, 1])), (int(px[k + 1, 0]), int(px[k + 1, 1])),
                         int(lev[k]), thick, cv2.LINE_AA, 3)
            tgt, alpha = np.array([250, 246, 238], np.float32), float(rng.uniform(0.3, 0.55))
        s = img.astype(np.float32) / 255.0
        mask = s >= 0.3
        return _Defect(cls, mask, s * mask, "blend", tgt, alpha)

    if cls in ("color_streak", "wrinkle"):
        if cls == "color_streak":
            length, wid = rng.uniform(50, 300), rng.uniform(5, 20)
        else:
            length, wid = rng.uniform(50, 300), rng.uniform(10, 28)  # wid: fold period
        cv = _Canvas(rng, length * 1.02 + 2 * wid, ppx, ppl)
        u, v = cv.rotated(rng.uniform(0, math.pi))
        half = length / 2
        wave_amp = rng.uniform(0, 0.25 if cls == "color_streak" else 0.1) * wid
        wave = wave_amp * np.sin(2 * math.pi * u / rng.uniform(40, 120) + rng.uniform(0, 6.3))
        bow = rng.uniform(-0.06, 0.06) * length * (1 - (u / half) ** 2)
        vv = v - wave - bow
        taper = np.clip(1.0 - (np.abs(u) / half) ** 4, 0.0, 1.0)
        if cls == "color_streak":
            across = np.cos(np.clip(np.abs(vv) / (wid / 2), 0, 1) * (math.pi / 2))
            s = (across * taper).astype(np.float32)
            mask = s >= 0.35
            if rng.uniform() < 0.6:  # darker, redder
                tgt = base * np.array([0.7, 0.56, 0.54], np.float32) * rng.uniform(0.8, 1.0)
            else:  # paler, yellower
                tgt = np.minimum(base * np.array([1.3, 1.3, 1.12], np.float32) + 15, 252)
            return _Defect(cls, mask, s * mask, "blend", tgt.astype(np.float32),
                           float(rng.uniform(0.6, 0.9)))
        lam = wid
        env = np.where(np.abs(vv) <= 0.75 * lam, np.cos(vv / (0.75 * lam) * (math.pi / 2)), 0.0)
        s = (np.sin(2 * math.pi * vv / lam) * env * taper).astype(np.float32)
        mask = np.abs(s) >= 0.3
        return _Defect(cls, mask, s * mask, "mul", amp=float(rng.uniform(0.16, 0.3)))

    if cls == "tick_bite":
        dia = rng.uniform(20, 40)
        cv = _Canvas(rng, dia + 3, ppx, ppl)
        n = int(rng.integers(4, 16))
        s = np.zeros((cv.h, cv.w), np.float32)
        for _ in range(n):
            d = rng.uniform(1.0, 2.5)
            rr = (dia / 2 - d / 2) * math.sqrt(rng.uniform())
            a = rng.uniform(0, 2 * math.pi)
            r = _dot_strength(cv, rr * math.cos(a), rr * math.sin(a), d, rng.uniform(0.7, 1.0),
                              rng.uniform(0, math.pi))
            np.maximum(s, (1.0 - 0.45 * _smoothstep(0.45, 1.0, r)) * (r <= 1.0), out=s)
        mask = s > 0
        tgt = np.array([rng.uniform(60, 85), rng.uniform(35, 50), rng.uniform(30, 42)], np.float32)
        return _Defect(cls, mask, s, "blend", tgt, float(rng.uniform(0.55, 0.85)))

    if cls == "brand":
        size = rng.uniform(30, 76)
        cv = _Canvas(rng, size * 1.5, ppx, ppl)
        img = np.zeros((cv.h, cv.w), np.uint8)
        stroke = rng.uniform(2.5, 6.0)
        th = max(1, int(round(stroke / ppx)))
        kind = rng.choice(["ring", "ring_letter", "letters"])
        c = (int(round(cv.cx)), int(round(cv.cy)))
        rad = (size - stroke) / 2
        if kind in ("ring", "ring_letter"):
            axes = (max(1, int(round(rad / ppx))), max(1, int(round(rad * rng.uniform(0.8, 1.0) / ppl))))
            cv2.ellipse(img, c, axes, 0, 0, 360, 255, th, cv2.LINE_AA)
        if kind in ("ring_letter", "letters"):
            text = "".join(rng.choice(list("ABCDEHKMNRSTVXZ0123456789"), 1 if kind == "ring_letter" else 2))
            font = cv2.FONT_HERSHEY_SIMPLEX
            lth = max(1, int(round((stroke * (0.7 if kind == "ring_letter" else 1.0)) / ppx)))
            (tw, tht), _ = cv2.getTextSize(text, font, 1.0, lth)
            # the letters' box (diagonal < size) stays within the mark's size at any rotation
            target_h = (rad * 0.9 if kind == "ring_letter" else size * 0.48) / ppl
            target_w = (rad * 1.2 if kind == "ring_letter" else size * 0.8) / ppx
            scale = min(target_h / max(tht, 1), target_w / max(tw, 1))
            (tw, tht), _ = cv2.getTextSize(text, font, scale, lth)
            org = (int(round(cv.cx - tw / 2)), int(round(cv.cy + tht / 2)))
            cv2.putText(img, text, org, font, scale, 255, lth, cv2.LINE_AA)
            if kind == "letters":  # a bar under the letters: the mark spans its full size
                yb = int(round(cv.cy + tht / 2 + 1.2 * lth))
                half = target_w / 2
                cv2.line(img, (int(round(cv.cx - half)), yb), (int(round(cv.cx + half)), yb), 255,
                         lth, cv2.LINE_AA)
        # rotate in mm (pixels may be not square): px -> mm -> rotated -> px
        ang = math.radians(rng.uniform(-30, 30))
        dmm = np.diag([ppx, ppl])
        a = np.linalg.inv(dmm) @ np.array([[math.cos(ang), -math.sin(ang)],
                                           [math.sin(ang), math.cos(ang)]]) @ dmm
        ctr = np.array([cv.cx, cv.cy])
        rot = np.hstack([a, (ctr - a @ ctr)[:, None]]).astype(np.float64)
        img = cv2.warpAffine(img, rot, (cv.w, cv.h), flags=cv2.INTER_LINEAR)
        s = cv2.GaussianBlur(img.astype(np.float32) / 255.0, (0, 0), max(0.6, 0.4 / ppx))
        s *= np.float32(rng.uniform(0.85, 1.0))
        mask = s >= 0.3
        tgt = np.array([rng.uniform(55, 80), rng.uniform(35, 48), rng.uniform(25, 38)], np.float32)
        return _Defect(cls, mask, (s * mask).astype(np.float32), "blend", tgt,
                       float(rng.uniform(0.5, 0.8)))

    raise ValueError(f"unknown defect class {cls!r}")


def _trim(d: _Defect) -> _Defect | None:
    """Crop the defect canvas to its mask; None if nothing was drawn."""
    ys, xs = np.nonzero(d.mask)
    if len(ys) == 0:
        return None
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    d.mask = np.ascontiguousarray(d.mask[y0:y1, x0:x1])
    d.s = np.ascontiguousarray(d.s[y0:y1, x0:x1], dtype=np.float32)
    return d


# ------------------------------------------------------------------------------------ hides


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
    pts = _rot(pts, math.radians(rng.uniform(-7, 7)))
    pts -= pts.min(axis=0)
    pts *= np.array([width_mm, length_mm]) / pts.max(axis=0)
    return pts


@dataclass(slots=True)
class _Hide:
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
    defects: list[_Defect] = field(default_factory=list)
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


def _outline(mask: np.ndarray, eps: float = 0.0) -> np.ndarray:
    """Outer outline (K, 2) of a mask's pixels (pixel indices); several parts -> convex hull."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if len(contours) == 1:
        c = contours[0]
    else:
        c = cv2.convexHull(np.concatenate(contours, axis=0))
    if eps > 0 and len(c) > 8:
        c = cv2.approxPolyDP(c, eps, True)
    return c.reshape(-1, 2).astype(np.float64)


def _largest_extent_mm(mask: np.ndarray, ppx: float, ppl: float) -> float:
    """Largest distance between two points of the mask's pixels (pixel squares), in mm."""
    hull = cv2.convexHull(_outline(mask).astype(np.float32).reshape(-1, 1, 2)).reshape(-1, 2)
    corners = (hull[:, None, :] + np.array([[0, 0], [1, 0], [0, 1], [1, 1]], np.float32)[None])
    pts = corners.reshape(-1, 2).astype(np.float64) * np.array([ppx, ppl])
    pts = cv2.convexHull(pts.astype(np.float32).reshape(-1, 1, 2)).reshape(-1, 2).astype(np.float64)
    d = pts[:, None, :] - pts[None, :, :]
    return float(np.sqrt((d ** 2).sum(-1)).max())


def _r(v: float, nd: int = 3) -> float:
    return round(float(v), nd)


def _pts(a: np.ndarray, nd: int = 2) -> list[list[float]]:
    return [[round(float(x), nd), round(float(y), nd)] for x, y in np.asarray(a).reshape(-1, 2)]


# -------------------------------------------------------------------------------- generator


class SynthStream:
    """Iterator of LineBlocks for one synthetic recording; ``truth`` is known from the start.

    Planning (hide outlines, defect shapes and positions, the ground truth) happens in the
    constructor; pixels are rendered lazily, chunk by chunk, as the iterator advances.
    """

    def __init__(self, cfg: SynthConfig, recording: str = "synthetic") -> None:
        problems = cfg.problems()
        if problems:
            raise ValueError("invalid SynthConfig: " + "; ".join(problems))
        self.cfg = cfg
        self.width = cfg.width
        self.channels = cfg.channels
        lv = np.asarray(cfg.belt_level, np.float32)
        if cfg.channels == 1:
            lv = lv.mean(keepdims=True)
        elif len(lv) == 1:
            lv = np.repeat(lv, 3)
        self.belt_level = lv
        self.floor = float(lv.mean()) + cfg.hide_min_contrast
        self._setup_belt()
        self.hides: list[_Hide] = []
        self.n_lines = 0
        self._plan()
        self.truth = self._truth(recording)
        self._it: Iterator[LineBlock] | None = None

    # -- belt and illumination

    def _setup_belt(self) -> None:
        cfg, w = self.cfg, self.width
        x = np.arange(w, dtype=np.float64) + 0.5 - w / 2
        if cfg.falloff > 0:  # cos^4 law, edge factor = 1 - falloff
            theta_e = math.acos((1 - cfg.falloff) ** 0.25)
            f = (w / 2) / math.tan(theta_e)
            v = np.cos(np.arctan(x / f)) ** 4
        else:
            v = np.ones(w)
        self.fall = v.astype(np.float32)  # applied to the hide
        # The belt sees the same light, but flat-field-ish: at most 2 levels darker at the edges,
        # so the belt stays within +-10 of belt_level with noise (+-6) and weave (+-1).
        rel = (1 - v) / max(cfg.falloff, 1e-9)
        self.belt_fall = -np.rint(2.0 * rel).astype(np.int16)
        xx = np.arange(w)[None, :]
        yy = np.arange(10)[:, None]
        twill = 0.9 * np.sin(2 * math.pi * (xx + 2 * yy) / 10.0) + 0.5 * np.sin(2 * math.pi * xx / 5.0)
        self.weave = np.clip(np.rint(twill), -1, 1).astype(np.int16)  # (10, width), period 10 lines

    # -- planning

    def _plan(self) -> None:
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, 1])
        ppx, ppl = cfg.mm_per_px, cfg.mm_per_line
        belt_mm = cfg.width * ppx - 2 * cfg.margin_mm
        cursor = int(rng.integers(cfg.gap_lines[0], cfg.gap_lines[1] + 1))
        class_cycle: list[str] = []
        next_id = 1
        for k in range(cfg.hides):
            hr = np.random.default_rng([cfg.seed, 2, k])
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
            hue_dir = (np.array([1.0, 0.0, -1.0], np.float32) if cfg.channels == 3
                       else np.zeros(1, np.float32))
            hue_dir = hue_dir * np.float32(_HUE_AMP)
            grids = []
            for sp_mm, amp in _TONE_OCTAVES:
                sx, sy = sp_mm / ppx, sp_mm / ppl
                g = hr.standard_normal(_Octave.grid_shape(n_lines, hw, sx, sy)).astype(np.float32)
                g *= np.float32(amp)
                if sp_mm == _TONE_OCTAVES[1][0]:  # thinner, darker leather along the edges
                    g += self._edge_term(mask, sx, sy, g.shape, hr)
                grids.append((g, sx, sy))
            hue_grid = None
            if cfg.channels == 3:
                sx, sy = _HUE_SPACING_MM / ppx, _HUE_SPACING_MM / ppl
                hue_grid = (hr.standard_normal(_Octave.grid_shape(n_lines, hw, sx, sy)).astype(np.float32),
                            sx, sy)
            hide = _Hide(k + 1, cursor, n_lines, x0, hw, poly, crop, shape, base, hue_dir, name,
                         grids, hue_grid)
            next_id = self._place_defects(hide, mask, hr, class_cycle, next_id)
            hide.truth = self._hide_truth(hide, mask)
            self.hides.append(hide)
            cursor += n_lines + int(rng.integers(cfg.gap_lines[0], cfg.gap_lines[1] + 1))
        self.n_lines = cursor if cfg.hides else int(rng.integers(cfg.gap_lines[0], cfg.gap_lines[1] + 1))

    @staticmethod
    def _edge_term(mask: np.ndarray, sx: float, sy: float, shape: tuple[int, int],
                   rng: np.random.Generator) -> np.ndarray:
        small = cv2.resize(mask, (shape[1] - 2, shape[0] - 2), interpolation=cv2.INTER_AREA)
        g = np.zeros(shape, np.uint8)
        g[1:-1, 1:-1] = small
        d = cv2.distanceTransform(g, cv2.DIST_L2, 3)
        return (-np.float32(rng.uniform(0.05, 0.12)) * np.exp(-d / 1.5)).astype(np.float32)

    def _place_defects(self, hide: _Hide, mask: np.ndarray, rng: np.random.Generator,
                       cycle: list[str], next_id: int) -> int:
        cfg = self.cfg
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
                d = _trim(_make_defect(cls, rng, ppx, ppl, full_base, small))
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

    # -- ground truth

    def _hide_truth(self, hide: _Hide, mask: np.ndarray) -> dict[str, Any]:
        cfg = self.cfg
        ppx, ppl = cfg.mm_per_px, cfg.mm_per_line
        first = hide.first_line
        x_left = int(np.flatnonzero(mask[0])[0])
        origin = ((hide.x0 + x_left) * ppx, first * ppl)
        outline = _outline(mask, eps=1.5) + np.array([hide.x0 + 0.5, first + 0.5])
        outline_mm = outline * np.array([ppx, ppl])
        defects = []
        for d in hide.defects:
            ys, xs = np.nonzero(d.mask)
            bx0, by0 = d.x0 + int(xs.min()), d.y0 + int(ys.min())
            bx1, by1 = d.x0 + int(xs.max()) + 1, d.y0 + int(ys.max()) + 1
            bb = [bx0 * ppx, by0 * ppl, bx1 * ppx, by1 * ppl]
            ol = (_outline(d.mask, eps=0.5 if d.mask.size > 400 else 0.0)
                  + np.array([d.x0 + 0.5, d.y0 + 0.5])) * np.array([ppx, ppl])
            defects.append({
                "id": d.id,
                "class": d.cls,
                "hide_id": hide.hide_id,
                "size_mm": _r(_largest_extent_mm(d.mask, ppx, ppl), 2),
                "bbox_px": [bx0, by0, bx1, by1],
                "bbox_belt_mm": [_r(v) for v in bb],
                "bbox_hide_mm": [_r(bb[0] - origin[0]), _r(bb[1] - origin[1]),
                                 _r(bb[2] - origin[0]), _r(bb[3] - origin[1])],
                "center_belt_mm": [_r((bb[0] + bb[2]) / 2), _r((bb[1] + bb[3]) / 2)],
                "outline_belt_mm": _pts(ol),
                "outline_hide_mm": _pts(ol - np.array(origin)),
                "area_mm2": _r(int(d.mask.sum()) * ppx * ppl, 2),
            })
        return {
            "hide_id": hide.hide_id,
            "first_line": first,
            "last_line": first + hide.n_lines - 1,
            "origin_belt_mm": [_r(origin[0]), _r(origin[1])],
            "area_m2": _r(int(np.count_nonzero(mask)) * ppx * ppl / 1e6, 4),
            "outline_belt_mm": _pts(outline_mm),
            "defects": defects,
        }

    def _truth(self, recording: str) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "version": TRUTH_VERSION,
            "recording": recording,
            "seed": int(cfg.seed),
            "width": int(cfg.width),
            "channels": int(cfg.channels),
            "mm_per_px": float(cfg.mm_per_px),
            "mm_per_line": float(cfg.mm_per_line),
            "n_lines": int(self.n_lines),
            "classes": list(DEFECT_CLASSES),
            "hides": [h.truth for h in self.hides],
        }

    def hide_masks(self) -> Iterator[tuple[int, np.ndarray]]:
        """(hide_id, (n_lines, width) uint8) hide maps: 0 belt, 1 hide, 2 hole (belt shows).

        Rows are the hide's lines first_line..last_line, columns the full camera width.
        """
        for hide in self.hides:
            m = np.zeros((hide.n_lines, self.width), np.uint8)
            m[:, hide.x0:hide.x0 + hide.width] = hide.mask()
            yield hide.hide_id, m

    def class_masks(self) -> Iterator[tuple[int, np.ndarray]]:
        """(hide_id, (n_lines, width) uint8) class-index maps: 0 none, i+1 = DEFECT_CLASSES[i].

        Rows are the hide's lines first_line..last_line, columns the full camera width.
        """
        for hide in self.hides:
            m = np.zeros((hide.n_lines, self.width), np.uint8)
            for d in hide.defects:
                sub = m[d.y0 - hide.first_line:d.y0 - hide.first_line + d.h, d.x0:d.x0 + d.w]
                sub[d.mask] = DEFECT_CLASSES.index(d.cls) + 1
            yield hide.hide_id, m

    # -- rendering

    def __iter__(self) -> Iterator[LineBlock]:
        return self

    def __next__(self) -> LineBlock:
        if self._it is None:
            self._it = self._blocks()
        return next(self._it)

    def _blocks(self) -> Iterator[LineBlock]:
        bl = self.cfg.block_lines
        rate = self.cfg.line_rate_hz
        pending: list[np.ndarray] = []
        have = 0
        start = 0

        def block(lines: np.ndarray, first: int) -> LineBlock:
            return LineBlock(lines, first, first, int(round(first * 1e9 / rate)), 0)

        for c0, chunk in self.chunks():
            if not pending and len(chunk) == bl and c0 == start:
                start += bl
                yield block(chunk, c0)
                continue
            pending.append(chunk)
            have += len(chunk)
            while have >= bl:
                buf = np.concatenate(pending) if len(pending) > 1 else pending[0]
                yield block(np.ascontiguousarray(buf[:bl]), start)
                start += bl
                rest = buf[bl:]
                pending = [rest] if len(rest) else []
                have = len(rest)
        if have:
            buf = np.concatenate(pending) if len(pending) > 1 else pending[0]
            yield block(np.ascontiguousarray(buf), start)

    def chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        """(first_line, (n, width, channels) uint8) render chunks of RENDER_LINES lines."""
        state: dict[int, _HideRender] = {}
        for c0 in range(0, self.n_lines, RENDER_LINES):
            c1 = min(self.n_lines, c0 + RENDER_LINES)
            planes = self._belt(c0, c1)
            for hide in self.hides:
                if hide.end_line <= c0 or hide.first_line >= c1:
                    state.pop(hide.hide_id, None)
                    continue
                hr = state.get(hide.hide_id)
                if hr is None:
                    hr = state[hide.hide_id] = _HideRender(self, hide)
                hr.render(planes, c0, c1)
            if self.channels == 1:
                yield c0, planes[0][:, :, None]
            else:
                yield c0, cv2.merge(planes)

    def _belt(self, c0: int, c1: int) -> list[np.ndarray]:
        n, w = c1 - c0, self.width
        rng = np.random.default_rng([self.cfg.seed, 11, c0 // RENDER_LINES])
        idx = np.frombuffer(rng.bytes(n * w), np.uint8).reshape(n, w)
        dev = _BELT_LUT[idx]
        dev += self.weave[np.arange(c0, c1) % self.weave.shape[0]]
        dev += self.belt_fall
        out = []
        for lv in self.belt_level:
            out.append((dev + np.int16(round(float(lv)))).astype(np.uint8))
        return out


class _HideRender:
    """Per-hide render state while its lines are being produced (mask, smooth fields, buffers)."""

    def __init__(self, stream: SynthStream, hide: _Hide) -> None:
        self.st = stream
        self.hide = hide
        self.mask = hide.mask()
        self.octaves = [_Octave(g, sx, sy, hide.width) for g, sx, sy in hide.grids]
        self.hue = (_Octave(hide.hue_grid[0], hide.hue_grid[1], hide.hue_grid[2], hide.width)
                    if hide.hue_grid is not None else None)
        self.fall = np.ascontiguousarray(stream.fall[hide.x0:hide.x0 + hide.width])

    def render(self, planes: list[np.ndarray], c0: int, c1: int) -> None:
        hide, st = self.hide, self.st
        r0, r1 = max(c0, hide.first_line), min(c1, hide.end_line)
        hr0, hr1 = r0 - hide.first_line, r1 - hide.first_line
        n, w = r1 - r0, hide.width
        m = self.mask[hr0:hr1]
        # Luminance factor: 1 + tone octaves + grain, times the illumination fall-off.
        lum = np.empty((n, w), np.float32)
        tmp = np.empty((n, w), np.float32)
        self.octaves[0].rows(hr0, hr1, lum)
        for o in self.octaves[1:]:
            o.rows(hr0, hr1, tmp)
            lum += tmp
        # Grain: white noise keyed by (seed, hide, band of lines), blurred with PAD lines of the
        # neighbouring bands so that render chunks join without a seam.
        g0, g1 = r0 - _PAD, r1 + _PAD
        b0, b1 = g0 // _BAND, -(-g1 // _BAND)
        raw = np.empty(((b1 - b0) * _BAND, w), np.uint8)
        for b in range(b0, b1):
            rng = np.random.default_rng([st.cfg.seed, 101, hide.hide_id, b + (1 << 20)])
            raw[(b - b0) * _BAND:(b - b0 + 1) * _BAND] = np.frombuffer(
                rng.bytes(_BAND * w), np.uint8).reshape(_BAND, w)
        noise = cv2.LUT(raw[g0 - b0 * _BAND:g1 - b0 * _BAND], _GAUSS_LUT)
        blur = cv2.GaussianBlur(noise, (0, 0), 0.8)
        cv2.scaleAdd(blur[_PAD:_PAD + n], _GRAIN_FINE * 1.7, lum, dst=lum)
        cv2.GaussianBlur(noise, (0, 0), 2.8, dst=blur)
        cv2.scaleAdd(blur[_PAD:_PAD + n], _GRAIN_CELL * 4.5, lum, dst=lum)
        lum += 1.0
        lum *= self.fall[None, :]
        hue = None
        if self.hue is not None:
            self.hue.rows(hr0, hr1, tmp)
            hue = tmp
        fplanes = []
        for c in range(st.channels):
            p = np.empty((n, w), np.float32)
            if hue is not None:
                np.multiply(hue, hide.hue_dir[c] * hide.base[c], out=p)
                p += hide.base[c]
                p *= lum
            else:
                np.multiply(lum, hide.base[c], out=p)
            fplanes.append(p)
        # Defects (holes are in the mask: the belt stays there).
        for d in hide.defects:
            if d.mode == "hole" or d.y0 >= r1 or d.y0 + d.h <= r0:
                continue
            a0, a1 = max(r0, d.y0), min(r1, d.y0 + d.h)
            s = d.s[a0 - d.y0:a1 - d.y0]
            x0 = d.x0 - hide.x0
            for c, p in enumerate(fplanes):
                sub = p[a0 - r0:a1 - r0, x0:x0 + d.w]
                if d.mode == "blend":
                    sub += (s * d.alpha) * (d.target[c] - sub)
                else:
                    sub *= 1.0 + d.amp * s
        # Every hide pixel stays clearly off the belt: a soft floor on the channel mean m,
        # m' = floor + K exp((m - floor - K) / K) below floor + K (smooth, keeps some contrast
        # of dark defects on dark leather), unchanged above.
        mean = fplanes[0].copy()
        for p in fplanes[1:]:
            mean += p
        mean *= 1.0 / len(fplanes)
        k = _SOFT_FLOOR
        t = np.minimum(mean, st.floor + k)
        t -= st.floor + k
        t *= 1.0 / k
        cv2.exp(t, dst=t)
        t *= k
        t += st.floor + k
        np.maximum(t, mean, out=t)
        np.subtract(t, mean, out=mean)  # lift >= 0
        sel = m == 1
        for c, p in enumerate(fplanes):
            p += mean
            u8 = cv2.convertScaleAbs(p)
            np.copyto(planes[c][r0 - c0:r1 - c0, hide.x0:hide.x0 + w], u8, where=sel)


# ------------------------------------------------------------------------------- public API


def generate_blocks(cfg: SynthConfig, recording: str = "synthetic") -> SynthStream:
    """LineBlocks of a synthetic recording; the returned iterator's ``truth`` is the ground truth.

    Blocks have ``block_lines`` lines (the last may be shorter), ``encoder = first_line`` (the
    line trigger is the encoder) and timestamps from ``line_rate_hz``.
    """
    return SynthStream(cfg, recording)


def ground_truth(cfg: SynthConfig, recording: str = "synthetic") -> dict[str, Any]:
    """The ground truth of ``cfg`` without rendering any lines."""
    return SynthStream(cfg, recording).truth


def write_recording(
    out_path: str | PathLike[str],
    cfg: SynthConfig,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Write ``out_path`` (.raw), ``<out_path>.gt.json`` and, with cfg.masks, the class masks
    ``<out_path>.gt-masks/hide-NNNN.png``.  Returns the ground truth dict.

    ``progress(lines_done, lines_total)`` is called after every block.
    """
    from .recording import RecordingHeader, RecordingWriter

    out = Path(out_path)
    stream = SynthStream(cfg, out.name)
    header = RecordingHeader(
        width=cfg.width,
        channels=cfg.channels,
        dtype="uint8",
        line_rate_hz=float(cfg.line_rate_hz),
        mm_per_px=float(cfg.mm_per_px),
        mm_per_line=float(cfg.mm_per_line),
        pixel_format="RGB8" if cfg.channels == 3 else "Mono8",
        camera={"vendor": "edge-inspector", "model": "synthetic", "serial": f"seed-{cfg.seed}"},
        station="synthetic",
        created=cfg.created,
        extra={"synthetic": {"generator": "edge_inspector.synth", "seed": int(cfg.seed),
                             "hides": int(cfg.hides), "truth": out.name + ".gt.json"}},
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    done = 0
    with RecordingWriter(out, header) as w:
        for block in stream:
            w.write(block)
            done += block.n_lines
            if progress is not None:
                progress(done, stream.n_lines)
    gt_path = Path(str(out) + ".gt.json")
    tmp = gt_path.with_name(gt_path.name + ".tmp")
    tmp.write_text(json.dumps(stream.truth, indent=1) + "\n")
    os.replace(tmp, gt_path)
    if cfg.masks:
        mdir = Path(str(out) + ".gt-masks")
        mdir.mkdir(exist_ok=True)
        for hide_id, m in stream.class_masks():
            if not cv2.imwrite(str(mdir / f"hide-{hide_id:04d}.png"), m):
                raise OSError(f"cannot write {mdir / f'hide-{hide_id:04d}.png'}")
    return stream.truth


__all__ = [
    "RENDER_LINES",
    "SynthConfig",
    "SynthStream",
    "generate_blocks",
    "ground_truth",
    "write_recording",
]
