"""``Detections``: one vectorised record of model output, the same type for every model family.

In the spirit of supervision's ``Detections``: numpy arrays side by side, converters at the
edges (``inference.decoders``, ``inference.components``), no per-object Python classes on the
hot path; ``nms`` and ``rasterise`` sit beside the type in this package.
Coordinates are pixels of the frame the record is in (tile px out of a decoder; belt px after
``offset``): x = column, y = line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(slots=True)
class Detections:
    xyxy: np.ndarray  # (N, 4) float32: x0, y0, x1, y1 (x1/y1 exclusive)
    class_id: np.ndarray  # (N,) int32
    score: np.ndarray  # (N,) float32
    area_px: np.ndarray  # (N,) float32: defect pixels (mask area, else box area)
    # Optional outline per detection, (K, 2) float32 x/y in the same frame, or None.
    polygons: list[np.ndarray | None] | None = field(default=None)

    def __post_init__(self) -> None:
        n = len(self.xyxy)
        if not (len(self.class_id) == len(self.score) == len(self.area_px) == n):
            raise ValueError("Detections arrays differ in length")
        if self.polygons is not None and len(self.polygons) != n:
            raise ValueError("Detections.polygons differs in length")

    @classmethod
    def empty(cls) -> "Detections":
        return cls(
            xyxy=np.zeros((0, 4), np.float32),
            class_id=np.zeros(0, np.int32),
            score=np.zeros(0, np.float32),
            area_px=np.zeros(0, np.float32),
            polygons=None,
        )

    def __len__(self) -> int:
        return int(len(self.xyxy))

    def offset(self, dx: float, dy: float) -> "Detections":
        """The same detections shifted by (dx, dy), e.g. from tile px to belt px."""
        shift = np.array([dx, dy, dx, dy], np.float64)
        polys = None
        if self.polygons is not None:
            d = np.array([dx, dy], np.float64)
            polys = [None if p is None else (p.astype(np.float64) + d) for p in self.polygons]
        return Detections(
            xyxy=self.xyxy.astype(np.float64) + shift,
            class_id=self.class_id,
            score=self.score,
            area_px=self.area_px,
            polygons=polys,
        )

    def filter(self, keep: np.ndarray) -> "Detections":
        """Detections where ``keep`` (bool mask or index array) selects."""
        idx = np.flatnonzero(keep) if keep.dtype == bool else np.asarray(keep)
        polys = None if self.polygons is None else [self.polygons[i] for i in idx]
        return Detections(
            self.xyxy[idx], self.class_id[idx], self.score[idx], self.area_px[idx], polys
        )

    @classmethod
    def concat(cls, parts: list["Detections"]) -> "Detections":
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        polys: list[np.ndarray | None] | None = None
        if any(p.polygons is not None for p in parts):
            polys = []
            for p in parts:
                polys.extend(p.polygons if p.polygons is not None else [None] * len(p))
        return cls(
            np.concatenate([p.xyxy for p in parts]),
            np.concatenate([p.class_id for p in parts]),
            np.concatenate([p.score for p in parts]),
            np.concatenate([p.area_px for p in parts]),
            polys,
        )
