"""Leather and belt texture: tone octaves, grain, hue, the illumination fall-off, and the belt.

A hide's texture fields are planned once (``texture_fields``: coarse random grids, B-spline
interpolated by ``Octave``) and rendered chunk by chunk (``HideRender``): tone octaves plus grain
noise keyed by (seed, hide, band of lines), times the across-the-belt fall-off, the defects
blended in, and a soft floor that keeps every hide pixel clearly above the belt.  ``Belt`` draws
the conveyor: noise, a faint weave and a little of the same fall-off.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import TYPE_CHECKING

import cv2
import numpy as np

from .config import RENDER_LINES, SynthConfig

if TYPE_CHECKING:
    from .hide import Hide

# Leather tone octaves: (grid spacing in mm, amplitude as a fraction of the hide's colour).
_TONE_OCTAVES: tuple[tuple[float, float], ...] = ((7.0, 0.045), (35.0, 0.06), (220.0, 0.09))
_HUE_SPACING_MM = 300.0
_HUE_AMP = 0.05
_GRAIN_FINE = 0.035  # pores / grain, sigma ~0.3 mm
_GRAIN_CELL = 0.06  # grain cells, sigma ~1 mm
_SOFT_FLOOR = 14.0  # levels over which dark leather is compressed towards the hide floor
_BAND = 32  # grain noise is keyed by bands of this many lines
_PAD = 16  # lines of neighbouring noise used when blurring the grain (> 4 sigma)


def _gauss_lut() -> np.ndarray:
    nd = NormalDist()
    return np.array([nd.inv_cdf((i + 0.5) / 256.0) for i in range(256)], np.float32).reshape(1, 256)


_GAUSS_LUT = _gauss_lut()
# Belt noise: a rounded normal (sigma 2.2 levels) clipped to +-6, indexed by a random byte.
_BELT_LUT = np.clip(np.rint(_GAUSS_LUT[0] * 2.2), -6, 6).astype(np.int16)


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


class Octave:
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


def _edge_term(mask: np.ndarray, sx: float, sy: float, shape: tuple[int, int],
               rng: np.random.Generator) -> np.ndarray:
    """Thinner, darker leather along the hide's outline: a tone term that fades inwards."""
    small = cv2.resize(mask, (shape[1] - 2, shape[0] - 2), interpolation=cv2.INTER_AREA)
    g = np.zeros(shape, np.uint8)
    g[1:-1, 1:-1] = small
    d = cv2.distanceTransform(g, cv2.DIST_L2, 3)
    return (-np.float32(rng.uniform(0.05, 0.12)) * np.exp(-d / 1.5)).astype(np.float32)


def texture_fields(rng: np.random.Generator, mask: np.ndarray, cfg: SynthConfig
                   ) -> tuple[np.ndarray, list[tuple[np.ndarray, float, float]],
                              tuple[np.ndarray, float, float] | None]:
    """A hide's hue direction, tone octave grids (grid, sx, sy in px) and hue grid (RGB only).

    ``mask`` is the hide's (n_lines, width) outline raster; the grids come from ``rng``.
    """
    ppx, ppl = cfg.mm_per_px, cfg.mm_per_line
    n_lines, hw = mask.shape
    hue_dir = (np.array([1.0, 0.0, -1.0], np.float32) if cfg.channels == 3
               else np.zeros(1, np.float32))
    hue_dir = hue_dir * np.float32(_HUE_AMP)
    grids = []
    for sp_mm, amp in _TONE_OCTAVES:
        sx, sy = sp_mm / ppx, sp_mm / ppl
        g = rng.standard_normal(Octave.grid_shape(n_lines, hw, sx, sy)).astype(np.float32)
        g *= np.float32(amp)
        if sp_mm == _TONE_OCTAVES[1][0]:  # thinner, darker leather along the edges
            g += _edge_term(mask, sx, sy, g.shape, rng)
        grids.append((g, sx, sy))
    hue_grid = None
    if cfg.channels == 3:
        sx, sy = _HUE_SPACING_MM / ppx, _HUE_SPACING_MM / ppl
        hue_grid = (rng.standard_normal(Octave.grid_shape(n_lines, hw, sx, sy)).astype(np.float32),
                    sx, sy)
    return hue_dir, grids, hue_grid


class Belt:
    """The conveyor belt under the camera and the illumination fall-off across the line.

    ``level``: belt grey per output channel; ``fall``: the hide's across-the-belt illumination
    factor (cos^4 law); ``belt_fall``: the belt's (much flatter) edge darkening in levels;
    ``weave``: a (10, width) twill pattern repeating every 10 lines.
    """

    def __init__(self, cfg: SynthConfig) -> None:
        self.seed = cfg.seed
        self.width = cfg.width
        lv = np.asarray(cfg.belt_level, np.float32)
        if cfg.channels == 1:
            lv = lv.mean(keepdims=True)
        elif len(lv) == 1:
            lv = np.repeat(lv, 3)
        self.level = lv
        w = self.width
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

    def planes(self, c0: int, c1: int) -> list[np.ndarray]:
        """Belt pixels of global lines c0..c1 (one render chunk), one uint8 plane per channel."""
        n, w = c1 - c0, self.width
        rng = np.random.default_rng([self.seed, 11, c0 // RENDER_LINES])
        idx = np.frombuffer(rng.bytes(n * w), np.uint8).reshape(n, w)
        dev = _BELT_LUT[idx]
        dev += self.weave[np.arange(c0, c1) % self.weave.shape[0]]
        dev += self.belt_fall
        out = []
        for lv in self.level:
            out.append((dev + np.int16(round(float(lv)))).astype(np.uint8))
        return out


class HideRender:
    """Per-hide render state while its lines are being produced (mask, smooth fields, buffers)."""

    def __init__(self, hide: Hide, seed: int, channels: int, floor: float, fall: np.ndarray) -> None:
        self.hide = hide
        self.seed = seed
        self.channels = channels
        self.floor = floor
        self.mask = hide.mask()
        self.octaves = [Octave(g, sx, sy, hide.width) for g, sx, sy in hide.grids]
        self.hue = (Octave(hide.hue_grid[0], hide.hue_grid[1], hide.hue_grid[2], hide.width)
                    if hide.hue_grid is not None else None)
        self.fall = np.ascontiguousarray(fall[hide.x0:hide.x0 + hide.width])

    def render(self, planes: list[np.ndarray], c0: int, c1: int) -> None:
        hide = self.hide
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
            rng = np.random.default_rng([self.seed, 101, hide.hide_id, b + (1 << 20)])
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
        for c in range(self.channels):
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
        t = np.minimum(mean, self.floor + k)
        t -= self.floor + k
        t *= 1.0 / k
        cv2.exp(t, dst=t)
        t *= k
        t += self.floor + k
        np.maximum(t, mean, out=t)
        np.subtract(t, mean, out=mean)  # lift >= 0
        sel = m == 1
        for c, p in enumerate(fplanes):
            p += mean
            u8 = cv2.convertScaleAbs(p)
            np.copyto(planes[c][r0 - c0:r1 - c0, hide.x0:hide.x0 + w], u8, where=sel)

