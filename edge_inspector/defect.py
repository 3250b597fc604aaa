"""Defect: one physical defect, merged across tiles, in pixel, belt and hide coordinates."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


def _round_pts(a: np.ndarray, nd: int = 2) -> list[list[float]]:
    return [[round(float(x), nd), round(float(y), nd)] for x, y in np.asarray(a).reshape(-1, 2)]


@dataclass(slots=True)
class Defect:
    defect_id: int
    hide_id: int | None
    class_name: str
    score: float
    bbox_px: tuple[float, float, float, float]  # x0, y0(line), x1, y1 (exclusive) in pixel frame
    outline_px: np.ndarray  # (K, 2) x/line
    area_px: float
    bbox_belt_mm: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # across0, along0, across1, along1
    outline_belt_mm: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    bbox_hide_mm: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    outline_hide_mm: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    area_mm2: float = 0.0
    n_tiles: int = 1  # how many tile detections were merged into this defect

    @property
    def lines(self) -> tuple[int, int]:
        """Source camera lines [first, last] that hold the defect."""
        return int(self.bbox_px[1]), int(np.ceil(self.bbox_px[3])) - 1

    @property
    def center_belt_mm(self) -> tuple[float, float]:
        b = self.bbox_belt_mm
        return (0.5 * (b[0] + b[2]), 0.5 * (b[1] + b[3]))

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.defect_id,
            "hide_id": self.hide_id,
            "class": self.class_name,
            "score": round(float(self.score), 4),
            "bbox_px": [round(float(v), 1) for v in self.bbox_px],
            "lines": list(self.lines),
            "area_px": round(float(self.area_px), 1),
            "area_mm2": round(float(self.area_mm2), 2),
            "bbox_belt_mm": [round(float(v), 2) for v in self.bbox_belt_mm],
            "bbox_hide_mm": [round(float(v), 2) for v in self.bbox_hide_mm],
            "outline_belt_mm": _round_pts(self.outline_belt_mm),
            "outline_hide_mm": _round_pts(self.outline_hide_mm),
            "n_tiles": self.n_tiles,
        }
