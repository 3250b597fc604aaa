"""Which tiles of a strip lie on a hide: the model runs only on those.

A tile with no hide in it cannot hold a defect the station reports: the assembler drops every
defect outside a hide (``off_hide``). On a real line the hides cover only part of the belt (and
none of it between hides), so the model need not see the bare belt. The decision uses the same
rule as the hide tracker (``hide_tracker.hide_mask``: mean |pixel - belt_level| over the channels
above ``hide_detection.threshold``) on every ``subsample``-th pixel of every ``subsample``-th line
of the strip (the flat-field-corrected pixels the model would see), and it errs towards running:
a tile runs when any hide sample lies within it or within ``pad`` px of it (the tiling overlap),
and a strip whose samples cannot be read runs whole.

``[tiling] skip_belt_tiles = false`` turns it off (every tile runs, as before 2026-12-02).
"""

from __future__ import annotations

import numpy as np

from .config import HideDetection
from .hide_tracker import hide_mask
from .stream import Strip


class HideCoverage:
    """``active(strip)``: (columns,) bool, True where the tile holds (or borders) hide."""

    def __init__(self, cfg: HideDetection, channels: int, pad_px: int) -> None:
        belt = list(cfg.belt_level)
        if len(belt) == 1:
            belt = belt * channels
        self.belt = np.asarray(belt, np.float64)
        self.threshold = float(cfg.threshold)
        self.step = int(cfg.subsample)
        self.pad = int(pad_px)

    def active(self, strip: Strip) -> np.ndarray:
        cols = len(strip.x0s)
        rows = strip.pixels[: max(0, strip.valid_lines) : self.step, :: self.step]
        if rows.size == 0 or rows.shape[-1] != len(self.belt):
            return np.ones(cols, bool)
        mask, _ = hide_mask(np.ascontiguousarray(rows), self.belt, self.threshold)
        hide = np.concatenate([[0], np.cumsum(mask.any(axis=0))])  # hide sample columns up to x
        t, s, n = strip.tile, self.step, mask.shape[1]
        out = np.empty(cols, bool)
        for i, x0 in enumerate(strip.x0s):
            a = min(n, max(0, (x0 - self.pad) // s))
            b = min(n, max(a, -(-(x0 + t + self.pad) // s)))
            out[i] = hide[b] > hide[a]
        return out
