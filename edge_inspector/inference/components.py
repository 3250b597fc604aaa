"""Converters from first-stage maps to ``Detections`` (tile px), shared by the decoders.

- ``components``: connected components of a label map (0 = background, k = class k-1), scored by
  the peak of a score map, filtered by score and area, with outlines.
- ``whole_tile``: one detection covering the whole tile per tile score.

Decoding runs on every tile, so the common case (nothing found) exits early, and per-defect work
(outlines) is only done for components that pass the score and area filters.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..detections import Detections


def components(
    label_map: np.ndarray,
    score_map: np.ndarray | None,
    *,
    scale_yx: tuple[float, float],
    score_threshold: float,
    min_area_px: float,
    score_scale: float = 1.0,
    n_classes: int | None = None,
    polygons: bool = True,
    by_class: bool = True,
    large: tuple[float, float] | None = None,
) -> Detections:
    """Connected components of a (h, w) label map (0 = background, k = class k-1) -> Detections.

    Boxes, areas and outlines are scaled to tile px by ``scale_yx`` (the output stride). A
    component's score is the peak of ``score_map x score_scale`` inside it (1.0 without a score
    map); components below ``score_threshold`` or ``min_area_px`` (tile px) are dropped.
    ``by_class=False``: components of the defect pixels whatever their class (one defect whose
    pixels disagree on the class stays one detection), each with its majority class; there
    ``large = (area_px, threshold)`` also keeps components of at least ``area_px`` whose peak
    reaches the lower ``threshold`` (a long scratch is many moderately sure cells; a grain spot
    is a few very sure ones).
    """
    if not by_class:
        return _defect_components(label_map, score_map, scale_yx, score_threshold, min_area_px, score_scale,
                                  polygons, large)
    if score_map is not None:
        # hysteresis: only components holding a pixel at or above the threshold can survive,
        # so look at those "seed" pixels only (a handful) instead of every labelled pixel.
        raw_thr = score_threshold / score_scale
        if score_map.dtype == np.uint8:
            raw_thr = min(int(np.ceil(raw_thr - 1e-6)), 256)
        seeds = np.flatnonzero((score_map >= raw_thr).ravel() & (label_map.ravel() > 0))
        if not len(seeds):
            return Detections.empty()
        seed_cls = label_map.ravel()[seeds]
        seed_score = score_map.ravel()[seeds].astype(np.float64) * score_scale
        ks = np.unique(seed_cls)
    elif not label_map.any():
        return Detections.empty()
    elif n_classes is None:
        ks = np.flatnonzero(np.bincount(label_map.ravel()))
    else:
        ks = range(1, n_classes + 1)
    sy, sx = scale_yx
    px_area = sy * sx
    boxes, cls_ids, scores, areas, polys = [], [], [], [], []
    for k in ks:
        k = int(k)
        if k == 0:
            continue
        mask = (label_map == k).view(np.uint8)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8, ltype=cv2.CV_32S)
        if n <= 1:
            continue
        area = stats[1:, cv2.CC_STAT_AREA].astype(np.float64) * px_area
        if score_map is None:
            peak = np.ones(n - 1)
        else:
            sel = seed_cls == k
            peak = np.zeros(n - 1)
            np.maximum.at(peak, labels.ravel()[seeds[sel]] - 1, seed_score[sel])
        keep = np.flatnonzero((area >= min_area_px) & (peak >= score_threshold))
        if not len(keep):
            continue
        st = stats[1:][keep]
        x0, y0 = st[:, cv2.CC_STAT_LEFT], st[:, cv2.CC_STAT_TOP]
        w, h = st[:, cv2.CC_STAT_WIDTH], st[:, cv2.CC_STAT_HEIGHT]
        boxes.append(np.stack([x0 * sx, y0 * sy, (x0 + w) * sx, (y0 + h) * sy], 1))
        cls_ids.append(np.full(len(keep), k - 1, np.int32))
        scores.append(peak[keep])
        areas.append(area[keep])
        if polygons:
            for j, (cx0, cy0, cw, ch) in zip(keep, zip(x0, y0, w, h)):
                crop = (labels[cy0 : cy0 + ch, cx0 : cx0 + cw] == j + 1).astype(np.uint8)
                polys.append(_outline(crop, cx0, cy0, sx, sy))
    if not boxes:
        return Detections.empty()
    return Detections(
        xyxy=np.concatenate(boxes).astype(np.float32),
        class_id=np.concatenate(cls_ids),
        score=np.concatenate(scores).astype(np.float32),
        area_px=np.concatenate(areas).astype(np.float32),
        polygons=polys if polygons else None,
    )


def _defect_components(label_map: np.ndarray, score_map: np.ndarray | None, scale_yx: tuple[float, float],
                       score_threshold: float, min_area_px: float, score_scale: float, polygons: bool,
                       large: tuple[float, float] | None = None) -> Detections:
    fg = (label_map > 0).view(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8, ltype=cv2.CV_32S)
    if n <= 1:
        return Detections.empty()
    sy, sx = scale_yx
    area = stats[1:, cv2.CC_STAT_AREA].astype(np.float64) * sy * sx
    flat = labels.ravel()
    on = flat > 0
    if score_map is None:
        peak = np.ones(n - 1)
    else:  # only pixels at or above the threshold can lift a component over it: look at those
        low = min(score_threshold, large[1]) if large else score_threshold
        raw_thr = low / score_scale
        if score_map.dtype == np.uint8:
            raw_thr = min(int(np.ceil(raw_thr - 1e-6)), 256)
        seeds = np.flatnonzero((score_map.ravel() >= raw_thr) & on)
        peak = np.zeros(n - 1)
        np.maximum.at(peak, flat[seeds] - 1, score_map.ravel()[seeds].astype(np.float64) * score_scale)
    ok = peak >= score_threshold
    if large:
        ok |= (area >= large[0]) & (peak >= large[1])
    keep = np.flatnonzero((area >= min_area_px) & ok)
    if not len(keep):
        return Detections.empty()
    k1 = int(label_map.max()) + 1
    votes = np.bincount(flat[on].astype(np.int64) * k1 + label_map.ravel()[on], minlength=n * k1).reshape(n, k1)
    cls = votes[keep + 1, 1:].argmax(1).astype(np.int32)
    st = stats[1:][keep]
    x0, y0 = st[:, cv2.CC_STAT_LEFT], st[:, cv2.CC_STAT_TOP]
    w, h = st[:, cv2.CC_STAT_WIDTH], st[:, cv2.CC_STAT_HEIGHT]
    polys = None
    if polygons:
        polys = [_outline((labels[cy0:cy0 + ch, cx0:cx0 + cw] == j + 1).astype(np.uint8), cx0, cy0, sx, sy)
                 for j, (cx0, cy0, cw, ch) in zip(keep, zip(x0, y0, w, h))]
    return Detections(
        xyxy=np.stack([x0 * sx, y0 * sy, (x0 + w) * sx, (y0 + h) * sy], 1).astype(np.float32),
        class_id=cls,
        score=peak[keep].astype(np.float32),
        area_px=area[keep].astype(np.float32),
        polygons=polys,
    )


def _outline(crop: np.ndarray, x0: int, y0: int, sx: float, sy: float) -> np.ndarray:
    """Outer outline of one component (pixel centres at map scale, simplified ~1 px) in tile px."""
    contours, _ = cv2.findContours(crop, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    c = max(contours, key=len)
    if len(c) > 4:
        c = cv2.approxPolyDP(c, 1.0, True)
    pts = c.reshape(-1, 2).astype(np.float32)
    pts[:, 0] = (pts[:, 0] + x0 + 0.5) * sx
    pts[:, 1] = (pts[:, 1] + y0 + 0.5) * sy
    return pts


def whole_tile(score: np.ndarray, cls: np.ndarray, thr: float, tile_hw: tuple[int, int]) -> list[Detections]:
    """One detection covering the tile per tile whose score reaches ``thr`` (class -1: none)."""
    h, w = tile_hw
    out = []
    for s, c in zip(score, cls):
        if s < thr or c < 0:
            out.append(Detections.empty())
            continue
        out.append(
            Detections(
                xyxy=np.array([[0, 0, w, h]], np.float32), class_id=np.array([c], np.int32),
                score=np.array([s], np.float32), area_px=np.array([w * h], np.float32),
            )
        )
    return out
