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

MARGIN_CELLS = 2  # map cells around a candidate when it is upsampled alone (bilinear reach: 1)


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
    extent: float | None = None,
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
    ``extent`` (``by_class=False`` with a score map): *core and extent*. A defect is found by its
    core, the pixels at or above ``score_threshold``: a component needs ``min_area_px`` of core
    (one very sure pixel does not make a defect); what is reported is its extent, the labelled
    pixels at or above ``min(extent, score_threshold)`` connected to that core (the whole defect,
    not only its surest centre). Neighbouring cores joined by their extent are one defect.
    """
    if not by_class:
        return _defect_components(label_map, score_map, scale_yx, score_threshold, min_area_px, score_scale,
                                  polygons, large, extent)
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
                       large: tuple[float, float] | None = None, extent: float | None = None) -> Detections:
    if extent is not None and score_map is not None:
        return _core_extent(label_map, score_map, scale_yx, score_threshold, min_area_px, score_scale, polygons,
                            large, min(extent, score_threshold))
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


def _raw(level: float, score_map: np.ndarray, score_scale: float) -> float:
    """A score level on the raw map's scale (uint8 maps: the smallest integer at or above it)."""
    raw = level / score_scale
    return min(int(np.ceil(raw - 1e-6)), 256) if score_map.dtype == np.uint8 else raw


def _found(score: np.ndarray, where: np.ndarray | None, score_threshold: float, extent: float, min_area_px: float,
           large: tuple[float, float] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """The core-and-extent rule on a score map at tile px: (labels, stats, kept component indices
    (0-based), peak, area) of the extent's components, or None when none is kept."""
    fg = score >= extent
    if where is not None:
        fg &= where
    m, lab, st, _ = cv2.connectedComponentsWithStats(fg.view(np.uint8), connectivity=8, ltype=cv2.CV_32S)
    if m <= 1:
        return None
    flat = lab.ravel()
    on = flat > 0
    core = np.bincount(flat[on & (score.ravel() >= score_threshold)], minlength=m)[1:].astype(np.float64)
    peak = np.zeros(m - 1)
    np.maximum.at(peak, flat[on] - 1, score.ravel()[on].astype(np.float64))
    area = st[1:, cv2.CC_STAT_AREA].astype(np.float64)
    ok = core >= min_area_px
    if large:
        ok |= (area >= large[0]) & (peak >= large[1])
    keep = np.flatnonzero(ok)
    return (lab, st, keep, peak, area) if len(keep) else None


def core_extent_pixels(score: np.ndarray, score_threshold: float, extent: float, min_area_px: float,
                       large: tuple[float, float] | None = None) -> np.ndarray:
    """(H, W) bool: the pixels of the defects that ``components(..., extent=...)`` reports, from
    the score at tile px (``eval-model`` scores these; an outline drawn around a ring-shaped
    defect would also cover its inside)."""
    found = _found(score, None, score_threshold, min(extent, score_threshold), min_area_px, large)
    if found is None:
        return np.zeros(score.shape, bool)
    lab, _, keep, _, _ = found
    lut = np.zeros(int(lab.max()) + 1, bool)
    lut[keep + 1] = True
    return lut[lab]


def peak_extent(score: np.ndarray, score_threshold: float, fraction: float, min_area_px: float) -> np.ndarray:
    """(H, W) bool: every defect trimmed to its own peak (``peak_extent_labels`` > 0)."""
    return peak_extent_labels(score, score_threshold, fraction, min_area_px) > 0


def peak_extent_labels(score: np.ndarray, score_threshold: float, fraction: float, min_area_px: float) -> np.ndarray:
    """(H, W) int32: every defect trimmed to its own peak (anomaly maps, ``peak_extent``); 0 =
    nothing, k = the k-th defect.

    A defect is a connected group of pixels at or above ``score_threshold`` (its *core*) with at
    least ``min_area_px`` of them (px of this map); reported are its pixels at or above
    max(threshold, ``fraction`` x its peak). A novelty map spreads a defect's response over the
    features' reach (a 16 px cell, 3x3 neighbours), so the fixed threshold that decides *whether* a
    defect is there draws it far too wide; the edge of each defect is where its response has
    fallen to a fraction of its own peak (weak defects keep their whole core, strong ones lose
    their halo). A trimmed defect may come apart in pieces: they keep the label of their core (one
    defect, counted once), and none of them is lost to the area filter, since the core passed it."""
    core = score >= score_threshold
    if not core.any():
        return np.zeros(score.shape, np.int32)
    m, lab, st, _ = cv2.connectedComponentsWithStats(core.view(np.uint8), connectivity=8, ltype=cv2.CV_32S)
    peak = np.zeros(m, np.float64)
    np.maximum.at(peak, lab.ravel(), score.ravel().astype(np.float64))
    level = np.maximum(float(score_threshold), float(fraction) * peak)
    level[0] = np.inf  # background
    level[st[:, cv2.CC_STAT_AREA] < min_area_px] = np.inf
    keep = score >= level[lab].astype(score.dtype if score.dtype.kind == "f" else np.float64)
    return np.where(keep, lab, 0).astype(np.int32)


def peak_extent_detections(score_map: np.ndarray, score_threshold: float, fraction: float, min_area_px: float,
                           scale_yx: tuple[float, float]) -> Detections:
    """``peak_extent_labels`` on a map (``min_area_px`` in tile px) -> one detection per defect:
    box and area of its trimmed pixels, score its peak, outline its largest piece (tile px)."""
    sy, sx = scale_yx
    lab = peak_extent_labels(score_map, score_threshold, fraction, min_area_px / max(sy * sx, 1e-9))
    ks = np.unique(lab)
    ks = ks[ks > 0]
    if not len(ks):
        return Detections.empty()
    ys, xs = np.nonzero(lab)
    k = lab[ys, xs]
    n = int(ks.max()) + 1
    peak = np.zeros(n)
    np.maximum.at(peak, k, score_map[ys, xs].astype(np.float64))
    area = np.bincount(k, minlength=n).astype(np.float64) * sy * sx
    y0, x0 = np.full(n, lab.shape[0]), np.full(n, lab.shape[1])
    y1, x1 = np.zeros(n, np.int64), np.zeros(n, np.int64)
    np.minimum.at(y0, k, ys)
    np.minimum.at(x0, k, xs)
    np.maximum.at(y1, k, ys + 1)
    np.maximum.at(x1, k, xs + 1)
    y0, x0, y1, x1 = y0[ks], x0[ks], y1[ks], x1[ks]
    polys = [_outline((lab[a:b, c:d] == j).astype(np.uint8), int(c), int(a), sx, sy)
             for j, a, c, b, d in zip(ks, y0, x0, y1, x1)]
    return Detections(xyxy=np.stack([x0 * sx, y0 * sy, x1 * sx, y1 * sy], 1).astype(np.float32),
                      class_id=np.zeros(len(ks), np.int32), score=peak[ks].astype(np.float32),
                      area_px=area[ks].astype(np.float32), polygons=polys)


def core_extent_count(score: np.ndarray, score_threshold: float, extent: float, min_area_px: float) -> int:
    """How many defects ``components(..., extent=...)`` reports on a score map (``calibrate``)."""
    found = _found(score, None, score_threshold, min(extent, score_threshold), min_area_px, None)
    return 0 if found is None else len(found[2])


def _core_extent(label_map: np.ndarray, score_map: np.ndarray, scale_yx: tuple[float, float],
                 score_threshold: float, min_area_px: float, score_scale: float, polygons: bool,
                 large: tuple[float, float] | None, extent: float) -> Detections:
    """``components(..., by_class=False, extent=...)``: found by the core, reported by the extent.

    Decided at tile px, as ``eval-model`` sees the map: the score map bilinear, the class map
    nearest (a stride-4 map's cells would make a 2 mm dot a 4 mm square). Only around candidates:
    groups of map cells at or above the extent level that hold a cell at or above the lowest
    threshold (bilinear values never exceed the cells they come from), each cut out with a margin
    of ``MARGIN_CELLS`` and upsampled alone (the same values as upsampling the whole map).
    """
    low = min(score_threshold, large[1]) if large else score_threshold
    hot = score_map >= _raw(low, score_map, score_scale)
    if not hot.any():
        return Detections.empty()  # the common case: a clean tile
    sy, sx = scale_yx
    fy, fx = int(round(sy)), int(round(sx))
    cand = (score_map >= _raw(extent, score_map, score_scale)) | hot
    grown = cv2.dilate(cand.view(np.uint8), np.ones((3, 3), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(grown, connectivity=8, ltype=cv2.CV_32S)
    groups = np.unique(labels[hot])
    h, w = score_map.shape
    boxes, cls_ids, scores, areas, polys = [], [], [], [], []
    for g in groups[groups > 0]:
        x0, y0, gw, gh = stats[g, :4]
        c0, r0 = max(0, x0 - MARGIN_CELLS), max(0, y0 - MARGIN_CELLS)
        c1, r1 = min(w, x0 + gw + MARGIN_CELLS), min(h, y0 + gh + MARGIN_CELLS)
        crop = np.ascontiguousarray(score_map[r0:r1, c0:c1], np.float32) * np.float32(score_scale)
        up = cv2.resize(crop, ((c1 - c0) * fx, (r1 - r0) * fy), interpolation=cv2.INTER_LINEAR)
        if (c1 - c0, r1 - r0) == (1, 1) or min(crop.shape) == 1:
            up = np.repeat(np.repeat(crop, fy, 0), fx, 1)
        lab_up = np.repeat(np.repeat(label_map[r0:r1, c0:c1], fy, 0), fx, 1)
        # cells of other groups inside this cut-out are not this group's
        mine = np.repeat(np.repeat(labels[r0:r1, c0:c1] == g, fy, 0), fx, 1)
        found = _found(up, mine, score_threshold, extent, min_area_px, large)
        if found is None:
            continue
        lab, st, keep, peak, area = found
        flat = lab.ravel()
        on = flat > 0
        m = len(st)
        k1 = int(lab_up.max()) + 1
        votes = np.bincount(flat[on].astype(np.int64) * k1 + lab_up.ravel()[on], minlength=m * k1).reshape(m, k1)
        votes[:, 0] = 0
        ox, oy = c0 * fx, r0 * fy
        for j in keep:
            bx, by, bw, bh = st[j + 1, :4]
            boxes.append([ox + bx, oy + by, ox + bx + bw, oy + by + bh])
            cls_ids.append(max(int(votes[j + 1].argmax()) - 1, 0))
            scores.append(peak[j])
            areas.append(area[j])
            if polygons:
                polys.append(_outline((lab[by:by + bh, bx:bx + bw] == j + 1).astype(np.uint8), ox + bx, oy + by, 1, 1))
    if not boxes:
        return Detections.empty()
    if (fx, fy) != (sx, sy):  # a stride that is no whole number: cells were cut at the nearest one
        polys = [p * np.float32([sx / fx, sy / fy]) for p in polys]
    return Detections(
        xyxy=np.asarray(boxes, np.float32) * np.float32([sx / fx, sy / fy, sx / fx, sy / fy]),
        class_id=np.asarray(cls_ids, np.int32),
        score=np.asarray(scores, np.float32),
        area_px=np.asarray(areas, np.float32),
        polygons=polys if polygons else None,
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
