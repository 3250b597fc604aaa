"""The defect catalogue: one shape generator per class of DEFECT_CLASSES, drawn at true size.

``make_defect(cls, rng, mm_per_px, mm_per_line, base)`` draws one defect on a local pixel canvas
and returns a ``Defect``: the exact mask of the pixels it changes, a strength map, and how it
changes them ("blend" towards a target colour, "mul" shading, "hole": the belt shows through).
Sizes are true sizes in mm (dots 1-4 mm, holes 2-12 mm, cuts 10-80 mm, scratches 20-150 mm,
streaks and wrinkles 50-300 mm, tick bites 20-40 mm, brands 30-76 mm).  The generator places them
on hides (synth.hide); training pastes them onto real leather photographs (train.data).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


@dataclass(slots=True)
class Defect:
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


def rotate(pts: np.ndarray, theta: float) -> np.ndarray:
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


def make_defect(cls: str, rng: np.random.Generator, ppx: float, ppl: float,
                 base: np.ndarray, small: bool = False) -> Defect:
    """Draw one defect of class ``cls`` on a local canvas (sizes in mm, see module doc).

    ppx, ppl: mm per pixel across and along.  base: the leather's RGB colour (colour streaks are
    drawn relative to it).  small: a 1-3 mm dot instead of 1-4 mm (dot classes only).  The canvas
    has a margin around the mask (``trim_defect`` crops it).  ValueError for an unknown class.
    """
    if cls in ("black_dot", "white_dot"):
        d = rng.uniform(1.0, 3.0) if small else rng.uniform(1.0, 4.0)
        cv = _Canvas(rng, d, ppx, ppl)
        r = _dot_strength(cv, 0.0, 0.0, d, rng.uniform(0.75, 1.0), rng.uniform(0, math.pi))
        mask = r <= 1.0
        s = (1.0 - 0.4 * _smoothstep(0.5, 1.0, r)) * mask
        if cls == "black_dot":
            return Defect(cls, mask, s.astype(np.float32), "blend", _dark_target(rng),
                           float(rng.uniform(0.55, 0.9)))
        tgt = np.array([250, 247, 240], np.float32)
        return Defect(cls, mask, s.astype(np.float32), "blend", tgt, float(rng.uniform(0.5, 0.85)))

    if cls == "hole":
        d = rng.uniform(2.0, 12.0)
        cv = _Canvas(rng, d * 1.2, ppx, ppl)
        rough = np.array([[k, rng.uniform(0, 0.06), rng.uniform(0, 2 * math.pi)] for k in (2, 3, 5)])
        r = _dot_strength(cv, 0.0, 0.0, d, rng.uniform(0.6, 1.0), rng.uniform(0, math.pi), rough)
        mask = r <= 1.0
        return Defect(cls, mask, mask.astype(np.float32), "hole")

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
        pts = rotate(pts, rng.uniform(0, math.pi))
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
        return Defect(cls, mask, s * mask, "blend", tgt, alpha)

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
            return Defect(cls, mask, s * mask, "blend", tgt.astype(np.float32),
                           float(rng.uniform(0.6, 0.9)))
        lam = wid
        env = np.where(np.abs(vv) <= 0.75 * lam, np.cos(vv / (0.75 * lam) * (math.pi / 2)), 0.0)
        s = (np.sin(2 * math.pi * vv / lam) * env * taper).astype(np.float32)
        mask = np.abs(s) >= 0.3
        return Defect(cls, mask, s * mask, "mul", amp=float(rng.uniform(0.16, 0.3)))

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
        return Defect(cls, mask, s, "blend", tgt, float(rng.uniform(0.55, 0.85)))

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
        return Defect(cls, mask, (s * mask).astype(np.float32), "blend", tgt,
                       float(rng.uniform(0.5, 0.8)))

    raise ValueError(f"unknown defect class {cls!r}")


def trim_defect(d: Defect) -> Defect | None:
    """Crop the defect canvas to its mask; None if nothing was drawn."""
    ys, xs = np.nonzero(d.mask)
    if len(ys) == 0:
        return None
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    d.mask = np.ascontiguousarray(d.mask[y0:y1, x0:x1])
    d.s = np.ascontiguousarray(d.s[y0:y1, x0:x1], dtype=np.float32)
    return d
