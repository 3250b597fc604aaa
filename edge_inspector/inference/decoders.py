"""Decoders: raw ONNX outputs of one batch -> one ``Detections`` per tile, in tile pixels.

One class per model family, all with the same interface::

    dec = DECODERS[name](class_names=[...], score_threshold=0.3, min_area_px=6, spec={...})
    dets: list[Detections] = dec.decode(outputs, batch, (tile_h, tile_w))

``outputs`` maps output names to arrays (what ``session.run`` returned). ``spec`` is the model's
``edge_inspector.output`` metadata (output names, stride, ...) or ``{}`` for foreign models;
every decoder also finds its outputs by shape when names are not given.
``class_id`` in the result indexes ``class_names`` (background is never a class).

Decoding runs on every tile, so the common case (nothing found) exits early, and per-defect work
(outlines) is only done for components that pass the score and area filters.
"""

from __future__ import annotations

from typing import Any, ClassVar

import cv2
import numpy as np

from ..detections import Detections


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _is_probability(x: np.ndarray) -> bool:
    return x.size == 0 or (float(x.min()) >= 0.0 and float(x.max()) <= 1.0)


class Decoder:
    """Common base: thresholds, class names and the output spec."""

    name: ClassVar[str] = "base"

    def __init__(
        self,
        *,
        class_names: list[str],
        score_threshold: float = 0.5,
        min_area_px: float = 0.0,
        spec: dict[str, Any] | None = None,
    ) -> None:
        self.class_names = list(class_names)
        self.score_threshold = float(score_threshold)
        self.min_area_px = float(min_area_px)
        self.spec = dict(spec or {})

    def decode(
        self, outputs: dict[str, np.ndarray], batch: int, tile_hw: tuple[int, int]
    ) -> list[Detections]:
        raise NotImplementedError

    def _output(self, outputs: dict[str, np.ndarray], key: str, *fallbacks: str) -> np.ndarray | None:
        """The output named by spec[key], else the first of ``fallbacks`` present."""
        name = self.spec.get(key)
        if name is not None and name in outputs:
            return outputs[name]
        for f in fallbacks:
            if f in outputs:
                return outputs[f]
        return None


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


def _scale(map_hw: tuple[int, int], tile_hw: tuple[int, int], stride: Any) -> tuple[float, float]:
    if stride:
        s = float(stride)
        return s, s
    return tile_hw[0] / map_hw[0], tile_hw[1] / map_hw[1]


class SegmentationDecoder(Decoder):
    """Class map (+ optional score map), (N, C, h, w) logits/probabilities with background
    channel 0, or a (N, 1, h, w) single-class probability/logit map.

    With a class map, ``score_threshold`` acts as the high threshold of a hysteresis: the map
    marks candidate pixels, a component is kept when its peak score reaches the threshold.
    """

    name = "segmentation"

    def decode(self, outputs, batch, tile_hw):
        cm = self._output(outputs, "class_map", "class_map")
        if cm is not None:
            sm = self._output(outputs, "score_map", "score_map")
            return self._from_class_map(cm, sm, batch, tile_hw)
        logits = self._output(outputs, "logits", "logits", "probabilities", "output")
        if logits is None:
            logits = next(iter(outputs.values()))
        return self._from_logits(np.asarray(logits), batch, tile_hw)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.by_class = self.spec.get("components", "class") != "defect"
        self.large = self._large()

    def _large(self) -> tuple[float, float] | None:
        """``"large": {"area_px": A, "threshold": T}`` in the output spec (see ``components``)."""
        lg = self.spec.get("large")
        if lg is None:
            return None
        try:
            return float(lg["area_px"]), float(lg["threshold"])
        except (TypeError, KeyError, ValueError):
            raise ValueError(f"output 'large' must be {{\"area_px\": number, \"threshold\": number}}, got {lg!r}")

    def _from_class_map(self, cm, sm, batch, tile_hw):
        cm = cm.reshape(batch, *cm.shape[-2:])
        if sm is not None:
            sm = sm.reshape(batch, *sm.shape[-2:])
        scale = _scale(cm.shape[-2:], tile_hw, self.spec.get("stride"))
        score_scale = 1.0 / 255.0 if sm is not None and sm.dtype == np.uint8 else 1.0
        if cm.dtype != np.uint8:
            cm = cm.astype(np.uint8)
        out = []
        for i in range(batch):
            if not cm[i].any():  # the common case: a clean tile
                out.append(Detections.empty())
                continue
            out.append(
                components(
                    cm[i], None if sm is None else sm[i], scale_yx=scale,
                    score_threshold=self.score_threshold, min_area_px=self.min_area_px,
                    score_scale=score_scale, n_classes=len(self.class_names) or None,
                    by_class=self.by_class, large=self.large,
                )
            )
        return out

    def _from_logits(self, x, batch, tile_hw):
        if x.ndim == 3:
            x = x[:, None]
        x = x.reshape(batch, -1, *x.shape[-2:])
        scale = _scale(x.shape[-2:], tile_hw, self.spec.get("stride"))
        out = []
        for i in range(batch):
            xi = x[i].astype(np.float32, copy=False)
            if xi.shape[0] == 1:  # one class: probability or logit
                p = xi[0] if _is_probability(xi) else _sigmoid(xi[0])
                label = (p >= self.score_threshold).astype(np.uint8)
                score = p
            else:
                p = xi if (_is_probability(xi) and np.allclose(xi.sum(0)[::16, ::16], 1, atol=1e-3)) else _softmax(xi, 0)
                label = p.argmax(0).astype(np.uint8)
                score = p.max(0)
            out.append(
                components(
                    label, score, scale_yx=scale, score_threshold=self.score_threshold,
                    min_area_px=self.min_area_px,
                )
            )
        return out


class AnomalyDecoder(Decoder):
    """anomalib export: ``anomaly_map`` (N,1,h,w) and/or ``pred_mask``, ``pred_score``.

    Pixels of the anomaly map at or above ``score_threshold`` (or the exported pred_mask) form
    components of class 0 ("anomaly"), scored by their peak. With only ``pred_score``, a tile
    whose score reaches the threshold is one detection covering the whole tile.
    """

    name = "anomaly"

    def decode(self, outputs, batch, tile_hw):
        amap = self._output(outputs, "anomaly_map", "anomaly_map")
        pmask = self._output(outputs, "pred_mask", "pred_mask")
        pscore = self._output(outputs, "pred_score", "pred_score")
        if amap is None and pmask is None:
            if pscore is None:  # an unnamed single output: take it as the map
                amap = next(iter(outputs.values()))
            else:
                return _whole_tile(np.asarray(pscore, np.float32).reshape(batch, -1)[:, 0],
                                   np.zeros(batch, np.int32), self.score_threshold, tile_hw)
        ref = amap if amap is not None else pmask
        hw = ref.shape[-2:]
        scale = _scale(hw, tile_hw, self.spec.get("stride"))
        if amap is not None:
            amap = np.asarray(amap, np.float32).reshape(batch, *hw)
        if pmask is not None:
            pmask = np.asarray(pmask).reshape(batch, *hw)
        out = []
        for i in range(batch):
            label = (pmask[i] > 0) if pmask is not None else (amap[i] >= self.score_threshold)
            if not label.any():
                out.append(Detections.empty())
                continue
            out.append(
                components(
                    label.view(np.uint8) if label.dtype == bool else label.astype(np.uint8),
                    None if amap is None else amap[i], scale_yx=scale,
                    score_threshold=self.score_threshold if amap is not None else 0.0,
                    min_area_px=self.min_area_px, n_classes=1,
                )
            )
        return out


def _whole_tile(score: np.ndarray, cls: np.ndarray, thr: float, tile_hw: tuple[int, int]) -> list[Detections]:
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


class ClassificationDecoder(Decoder):
    """(N, nc) logits or probabilities for a whole tile: one box = the tile when the top class is
    not the "good" class (named "good"/"ok"/"normal"/"background", else index 0). ``class_id``
    indexes ``class_names`` as given (the good class included)."""

    name = "classification"
    GOOD_NAMES = ("good", "ok", "normal", "background", "no_defect")

    def decode(self, outputs, batch, tile_hw):
        x = np.asarray(self._output(outputs, "logits", "logits", "output") if len(outputs) > 1
                       else next(iter(outputs.values())), np.float32).reshape(batch, -1)
        p = x if (_is_probability(x) and np.allclose(x.sum(1), 1, atol=1e-3)) else _softmax(x, 1)
        top = p.argmax(1).astype(np.int32)
        good = next((i for i, n in enumerate(self.class_names) if n.lower() in self.GOOD_NAMES), 0)
        cls = np.where(top == good, -1, top)
        return _whole_tile(p.max(1), cls, self.score_threshold, tile_hw)


class YoloDecoder(Decoder):
    """ultralytics export: (N, 4+nc, anchors) with cx, cy, w, h in input px and class scores
    (also accepted transposed, (N, anchors, 4+nc)); end-to-end exports (N, k, 6) with
    x0, y0, x1, y1, score, class. ``spec["format"]`` (ultralytics | transposed | end2end) settles
    the layout when the shapes are ambiguous. Threshold, then class-wise NMS (``spec["iou"]``, default 0.45).
    Input px are tile px: the tile is fed as is."""

    name = "yolo"
    MAX_CANDIDATES = 3000

    def decode(self, outputs, batch, tile_hw):
        x = np.asarray(self._output(outputs, "boxes", "output0") if len(outputs) > 1
                       else next(iter(outputs.values())), np.float32)
        nc = len(self.class_names)
        iou = float(self.spec.get("iou", 0.45))
        h, w = tile_hw
        out = []
        fmt = self.spec.get("format")
        if fmt is None:
            if nc and x.shape[1] == 4 + nc:
                fmt = "ultralytics"
            elif nc and x.shape[2] == 4 + nc:
                fmt = "transposed"
            elif x.shape[-1] == 6:
                fmt = "end2end"
            else:
                fmt = "ultralytics" if x.shape[1] < x.shape[2] else "transposed"
        if fmt == "transposed":
            x = x.transpose(0, 2, 1)  # (N, anchors, 4+nc) -> (N, 4+nc, anchors)
        end2end = fmt == "end2end"
        for i in range(batch):
            if end2end:
                r = x[i]
                r = r[r[:, 4] >= self.score_threshold]
                xyxy, score, cls = r[:, :4], r[:, 4], r[:, 5].astype(np.int32)
            else:
                r = x[i]
                cls_scores = r[4:]
                cls = cls_scores.argmax(0).astype(np.int32)
                score = cls_scores[cls, np.arange(r.shape[1])]
                sel = np.flatnonzero(score >= self.score_threshold)
                if len(sel) > self.MAX_CANDIDATES:
                    sel = sel[np.argsort(-score[sel], kind="stable")[: self.MAX_CANDIDATES]]
                if not len(sel):
                    out.append(Detections.empty())
                    continue
                cx, cy, bw, bh = r[:4, sel]
                xyxy = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
                score, cls = score[sel], cls[sel]
                keep = nms(xyxy, score, cls, iou)
                xyxy, score, cls = xyxy[keep], score[keep], cls[keep]
            if not len(score):
                out.append(Detections.empty())
                continue
            xyxy = np.clip(xyxy, 0, [w, h, w, h]).astype(np.float32)
            area = (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1])
            d = Detections(xyxy, cls, score.astype(np.float32), area.astype(np.float32))
            out.append(d.filter(area >= self.min_area_px))
        return out


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


DECODERS: dict[str, type[Decoder]] = {
    "segmentation": SegmentationDecoder,
    "yolo": YoloDecoder,
    "detection": YoloDecoder,
    "anomaly": AnomalyDecoder,
    "classification": ClassificationDecoder,
}

# edge_inspector.kind -> decoder name
KIND_DECODER: dict[str, str] = {
    "segmentation": "segmentation",
    "detection": "yolo",
    "anomaly": "anomaly",
    "classification": "classification",
}
