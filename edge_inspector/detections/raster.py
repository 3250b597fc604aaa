"""Rasterising: detections per tile -> dense score and class maps at tile px."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from .record import Detections


def rasterise(dets: list[Detections], tile_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Detections per tile -> (score (B, H, W) float32, class map (B, H, W) int32).

    Each outline (else box) is filled with its score and class id + 1 (0 = background); where
    detections overlap the highest score wins.
    """
    h, w = tile_hw
    score = np.zeros((len(dets), h, w), np.float32)
    cls = np.zeros((len(dets), h, w), np.int32)
    for i, d in enumerate(dets):
        for j in np.argsort(d.score, kind="stable"):  # ascending: the highest score is painted last
            poly = d.polygons[j] if d.polygons is not None else None
            if poly is not None:
                inside = np.zeros((h, w), np.uint8)
                cv2.fillPoly(inside, [np.round(poly - 0.5).astype(np.int32)], 1)
                sel: Any = inside.view(bool)
            else:
                x0, y0, x1, y1 = d.xyxy[j]
                sel = (slice(max(0, int(np.floor(y0))), min(h, int(np.ceil(y1)))),
                       slice(max(0, int(np.floor(x0))), min(w, int(np.ceil(x1)))))
            score[i][sel] = d.score[j]
            cls[i][sel] = d.class_id[j] + 1
    return score, cls
