"""Hide: one hide on the belt, with its outline, defects, uninspected stretches and grade."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .defect import Defect, _round_pts


@dataclass(slots=True)
class UninspectedRegion:
    """Lines [first_line, end_line) that were not inspected, and why ("lost", "dropped", "model")."""

    first_line: int
    end_line: int
    reason: str
    along_mm: tuple[float, float] = (0.0, 0.0)  # belt frame

    def to_json(self) -> dict[str, Any]:
        return {
            "first_line": self.first_line,
            "end_line": self.end_line,
            "reason": self.reason,
            "along_belt_mm": [round(v, 2) for v in self.along_mm],
        }


@dataclass(slots=True)
class Hide:
    hide_id: int
    first_line: int
    last_line: int  # inclusive
    origin_belt_mm: tuple[float, float] = (0.0, 0.0)  # across, along of the hide frame origin
    outline_belt_mm: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    outline_hide_mm: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    area_m2: float = 0.0
    defects: list[Defect] = field(default_factory=list)
    uninspected: list[UninspectedRegion] = field(default_factory=list)
    inspected_fraction: float = 1.0
    grade: str = "A"
    # Subsampled picture of the hide for the hide map: (h, w, 3) uint8, one pixel per
    # ``thumb_step`` camera pixels and lines, top-left at (thumb_x0, first_line).
    thumbnail: np.ndarray | None = None
    thumb_step: int = 8
    thumb_x0: int = 0

    @property
    def n_lines(self) -> int:
        return self.last_line - self.first_line + 1

    def to_json(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for d in self.defects:
            counts[d.class_name] = counts.get(d.class_name, 0) + 1
        return {
            "hide_id": self.hide_id,
            "first_line": self.first_line,
            "last_line": self.last_line,
            "origin_belt_mm": [round(v, 2) for v in self.origin_belt_mm],
            "area_m2": round(float(self.area_m2), 4),
            "inspected_fraction": round(float(self.inspected_fraction), 4),
            "grade": self.grade,
            "defect_counts": counts,
            "outline_belt_mm": _round_pts(self.outline_belt_mm, 1),
            "outline_hide_mm": _round_pts(self.outline_hide_mm, 1),
            "uninspected": [u.to_json() for u in self.uninspected],
            "defects": [d.to_json() for d in self.defects],
        }
