"""Non-maximum suppression: of overlapping boxes of one class, keep the best scored."""

from __future__ import annotations

import numpy as np


def nms(xyxy: np.ndarray, score: np.ndarray, cls: np.ndarray, iou: float) -> np.ndarray:
    """Class-wise non-maximum suppression; indices kept, best score first."""
    if len(score) == 0:
        return np.zeros(0, np.int64)
    # offset boxes by class so that boxes of different classes never overlap (torchvision trick)
    off = (cls.astype(np.float64) * (float(np.abs(xyxy).max()) + 1.0))[:, None]
    b = xyxy.astype(np.float64) + off
    order = np.argsort(-score, kind="stable")
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    keep = []
    while len(order):
        i = order[0]
        keep.append(i)
        rest = order[1:]
        xx0 = np.maximum(b[i, 0], b[rest, 0])
        yy0 = np.maximum(b[i, 1], b[rest, 1])
        xx1 = np.minimum(b[i, 2], b[rest, 2])
        yy1 = np.minimum(b[i, 3], b[rest, 3])
        inter = np.clip(xx1 - xx0, 0, None) * np.clip(yy1 - yy0, 0, None)
        ov = inter / np.maximum(area[i] + area[rest] - inter, 1e-9)
        order = rest[ov <= iou]
    return np.asarray(keep, np.int64)
