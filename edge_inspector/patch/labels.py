"""Patch labels from boxes or masks: the one rule training and ``eval-model`` share.

The patch of cell (i, j) on a grid of ``stride`` px is labelled on its reported square
(``report_px``, centred on the cell, clipped to the image): *defective* (1) when some box covers
at least ``COVER`` of the smaller of the square and the box (a pinhole well inside the square, or
a crease across most of it); *good* (0) when no box touches the square; otherwise *ambiguous* (-1,
neither trained on nor scored). Masks count through the boxes of their 8-connected components.
"""

from __future__ import annotations

import cv2
import numpy as np

COVER = 0.25
GOOD, DEFECT, AMBIGUOUS = 0, 1, -1


def squares(hw: tuple[int, int], stride: int, report_px: int) -> np.ndarray:
    """(gh, gw, 4) x0, y0, x1, y1 of every cell's reported square, clipped to the image."""
    h, w = hw
    m = (report_px - stride) / 2
    ys = np.arange(h // stride) * stride
    xs = np.arange(w // stride) * stride
    y0, x0 = np.meshgrid(np.clip(ys - m, 0, h), np.clip(xs - m, 0, w), indexing="ij")
    y1, x1 = np.meshgrid(np.clip(ys + stride + m, 0, h), np.clip(xs + stride + m, 0, w), indexing="ij")
    return np.stack([x0, y0, x1, y1], -1).astype(np.float64)


def cell_labels(boxes: np.ndarray, hw: tuple[int, int], stride: int, report_px: int) -> np.ndarray:
    """(gh, gw) int8 labels (GOOD / DEFECT / AMBIGUOUS) from (k, >=4) boxes x0, y0, x1, y1 in px."""
    sq = squares(hw, stride, report_px)
    out = np.full(sq.shape[:2], GOOD, np.int8)
    if not len(boxes):
        return out
    b = np.asarray(boxes, np.float64)[:, :4]
    ix = np.minimum(sq[..., None, 2], b[:, 2]) - np.maximum(sq[..., None, 0], b[:, 0])
    iy = np.minimum(sq[..., None, 3], b[:, 3]) - np.maximum(sq[..., None, 1], b[:, 1])
    inter = np.clip(ix, 0, None) * np.clip(iy, 0, None)  # (gh, gw, k)
    touch = (ix >= 0) & (iy >= 0)
    sq_area = ((sq[..., 2] - sq[..., 0]) * (sq[..., 3] - sq[..., 1]))[..., None]
    box_area = np.maximum((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), 1.0)
    covered = inter >= COVER * np.minimum(sq_area, box_area)
    out[touch.any(-1)] = AMBIGUOUS
    out[(covered & (inter > 0)).any(-1)] = DEFECT
    return out


def mask_boxes(mask: np.ndarray) -> np.ndarray:
    """(k, 4) x0, y0, x1, y1 (px, exclusive ends) of the 8-connected components of ``mask > 0``
    (255 = ignore counts as defect: such patches are not called good)."""
    n, _, st, _ = cv2.connectedComponentsWithStats((mask > 0).view(np.uint8), connectivity=8)
    st = st[1:]
    return np.stack([st[:, 0], st[:, 1], st[:, 0] + st[:, 2], st[:, 1] + st[:, 3]], 1).astype(np.float64)
