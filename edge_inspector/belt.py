"""Coordinates: pixel frame -> belt frame (mm) -> hide frame (mm).

Pixel frame: x = column from the camera's first pixel, y = global line index.
Belt frame: across = calibrated column -> mm (linear from ``mm_per_px`` unless a per-column
table is given); along = line index x ``mm_per_line`` (the line trigger is the encoder), or
the encoder position converted to mm when a block carries one.
Hide frame: origin at the hide's leading edge (its first line) and the across position of the
hide's leftmost point on that line.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class BeltGeometry:
    mm_per_px: float
    mm_per_line: float
    width: int
    across_table_mm: np.ndarray | None = None  # (width + 1,) mm at each pixel edge, optional

    def across_mm(self, x: np.ndarray | float) -> np.ndarray:
        """Column (may be fractional, pixel edges at integers) -> across position in mm."""
        xa = np.asarray(x, np.float64)
        if self.across_table_mm is None:
            return xa * self.mm_per_px
        edges = np.arange(self.width + 1, dtype=np.float64)
        return np.interp(xa, edges, self.across_table_mm)

    def along_mm(self, y: np.ndarray | float) -> np.ndarray:
        """Global line index (may be fractional) -> along-the-belt position in mm."""
        return np.asarray(y, np.float64) * self.mm_per_line

    def px_to_belt_mm(self, pts: np.ndarray) -> np.ndarray:
        """(K, 2) pixel x/y -> (K, 2) belt mm across/along."""
        pts = np.asarray(pts, np.float64).reshape(-1, 2)
        return np.stack([self.across_mm(pts[:, 0]), self.along_mm(pts[:, 1])], axis=1)

    def mm2_per_px(self) -> float:
        return self.mm_per_px * self.mm_per_line


def belt_to_hide_mm(pts_belt_mm: np.ndarray, origin_belt_mm: tuple[float, float]) -> np.ndarray:
    """Belt mm (across, along) -> hide mm (x from the leftmost point, y from the leading edge)."""
    o = np.asarray(origin_belt_mm, np.float64)
    return np.asarray(pts_belt_mm, np.float64).reshape(-1, 2) - o
