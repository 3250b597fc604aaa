"""First stage of inference: raw ONNX outputs of one batch -> the model family's named maps.

Each family turns what ``session.run`` returned into one named intermediate, at the model's
output resolution (with the stride that brings it to tile px) or already in tile px:

- ``SegmentationMaps``: class map and score map (exported, or from per-class logits/probabilities);
- ``AnomalyMaps``: anomaly map and/or predicted mask, or one predicted score per tile;
- ``Boxes``: candidate boxes per tile above the score threshold, before NMS;
- ``TileScores``: one score and class per tile (whole-tile classification).

The second stage (``decoders``: maps -> ``Detections``) and ``eval-model`` (maps -> ``DenseMaps``,
score and class per tile px) both start from these, so they read the same outputs the same way.
All maps are batch-first: ``head(n)`` drops the tiles padded onto a fixed-batch call and
``concat`` joins the calls. A new family adds its maps class here and its decoder in ``decoders``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, NamedTuple, Self, Sequence

import cv2
import numpy as np


class DenseMaps(NamedTuple):
    """Per-pixel defect score and class of a batch at tile px (what ``eval-model`` scores)."""

    score: np.ndarray  # (B, H, W) float32 in [0, 1] (anomaly maps with ``raw``: as the model gives them)
    class_map: np.ndarray | None  # (B, H, W) int32: 0 = background, k = class k-1; None for anomaly models


# ------------------------------------------------------------------ helpers


def pick_output(outputs: dict[str, np.ndarray], spec: dict[str, Any], key: str, *fallbacks: str) -> np.ndarray | None:
    """The output named by ``spec[key]``, else the first of ``fallbacks`` present, else None."""
    name = spec.get(key)
    if name is not None and name in outputs:
        return outputs[name]
    for f in fallbacks:
        if f in outputs:
            return outputs[f]
    return None


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def is_probability(x: np.ndarray) -> bool:
    return x.size == 0 or (float(x.min()) >= 0.0 and float(x.max()) <= 1.0)


def map_scale(map_hw: tuple[int, int], tile_hw: tuple[int, int], stride: Any) -> tuple[float, float]:
    """Tile px per map px (y, x): the output stride when given, else from the shapes."""
    if stride:
        s = float(stride)
        return s, s
    return tile_hw[0] / map_hw[0], tile_hw[1] / map_hw[1]


def to_tile(m: np.ndarray, tile_hw: tuple[int, int], stride: Any, linear: bool = False) -> np.ndarray:
    """(B, h, w) map -> (B, H, W) tile px: nearest neighbour (pixel centres; ``stride`` if given), or
    bilinear for score maps (``linear``): a strided model is trained against its upsampled output."""
    h, w = m.shape[-2:]
    if (h, w) == tuple(tile_hw):
        return m
    sy, sx = map_scale((h, w), tile_hw, stride if (h, w) != (1, 1) else None)
    if linear and min(h, w) > 1:
        big = [cv2.resize(np.ascontiguousarray(x, np.float32), (round(w * sx), round(h * sy)),
                          interpolation=cv2.INTER_LINEAR) for x in m]
        out = np.zeros((len(m), *tile_hw), np.float32)
        for o, b in zip(out, big):
            hh, ww = min(tile_hw[0], b.shape[0]), min(tile_hw[1], b.shape[1])
            o[:hh, :ww] = b[:hh, :ww]
        return out
    rows = np.minimum(((np.arange(tile_hw[0]) + 0.5) / sy).astype(np.intp), h - 1)
    cols = np.minimum(((np.arange(tile_hw[1]) + 0.5) / sx).astype(np.intp), w - 1)
    return np.take(np.take(m, rows, axis=1), cols, axis=2)


# ------------------------------------------------------------------ the named maps


@dataclass(frozen=True, slots=True)
class Maps:
    """Base of the named maps: the tile size they belong to. Array and list fields are batch-first."""

    tile_hw: tuple[int, int]

    def head(self, n: int) -> Self:
        """The maps of the first ``n`` tiles."""
        return replace(self, **{f.name: v[:n] for f in fields(self)
                                if isinstance(v := getattr(self, f.name), (np.ndarray, list))})

    @classmethod
    def concat(cls, parts: Sequence[Self]) -> Self:
        """The maps of several calls, in order (fields that are not batch-first: the first call's)."""
        first = parts[0]
        if len(parts) == 1:
            return first
        joined: dict[str, Any] = {}
        for f in fields(first):
            v = getattr(first, f.name)
            if isinstance(v, np.ndarray):
                joined[f.name] = np.concatenate([getattr(p, f.name) for p in parts])
            elif isinstance(v, list):
                joined[f.name] = [x for p in parts for x in getattr(p, f.name)]
        return replace(first, **joined)


@dataclass(frozen=True, slots=True)
class SegmentationMaps(Maps):
    """Class map and score map at the output resolution; ``stride`` (else the shapes) scales to tile px."""

    class_map: np.ndarray  # (B, h, w): 0 = background, k = class k-1 (dtype as exported)
    score_map: np.ndarray | None  # (B, h, w) uint8 (x score_scale) or float; None: a class map alone
    score_scale: float  # score_map x score_scale = score in [0, 1]
    stride: Any  # the output spec's stride, or None
    # (B, h, w) p(background) of models giving per-class logits/probabilities; None otherwise
    background: np.ndarray | None = None
    from_probabilities: bool = False  # computed from logits/probabilities, not exported maps

    def dense(self) -> DenseMaps:
        """Score and class at tile px: scores bilinear, classes by nearest neighbour.

        Exported maps: the score map (uint8 / 255, or float clipped to [0, 1]), or 1 on the class
        map's pixels without one. Per-class probabilities: 1 - p(background), class = argmax;
        one channel: the probability, class 1 where it reaches the threshold.
        """
        cm = self.class_map
        if self.background is not None:
            score = (1 - self.background).astype(np.float32)
        elif self.from_probabilities:
            score = self.score_map.astype(np.float32)  # type: ignore[union-attr]
        elif self.score_map is None:
            score = (cm > 0).astype(np.float32)
        elif self.score_map.dtype == np.uint8:
            score = self.score_map.astype(np.float32) / np.float32(255)
        else:
            score = np.clip(np.asarray(self.score_map, np.float32), 0, 1)
        return DenseMaps(to_tile(score, self.tile_hw, self.stride, linear=True),
                         to_tile(cm.astype(np.int32), self.tile_hw, self.stride))


@dataclass(frozen=True, slots=True)
class AnomalyMaps(Maps):
    """anomalib outputs at the output resolution: raw anomaly map, predicted mask, or tile scores."""

    anomaly_map: np.ndarray | None  # (B, h, w) float32, unscaled
    pred_mask: np.ndarray | None  # (B, h, w), > 0 = anomalous; only read when there is no map
    pred_score: np.ndarray | None  # (B,) float32, only when there is neither map nor mask
    stride: Any

    def raw_score(self) -> np.ndarray:
        """(B, h, w) float32: the anomaly map, else the mask (0 / 1), else the tile score as a 1 x 1 map."""
        if self.anomaly_map is not None:
            return self.anomaly_map
        if self.pred_mask is not None:
            return (self.pred_mask > 0).astype(np.float32)
        return self.pred_score[:, None, None]  # type: ignore[index]


@dataclass(frozen=True, slots=True)
class Boxes(Maps):
    """Candidate boxes per tile in tile px (not clipped), above the score threshold."""

    xyxy: list[np.ndarray]  # per tile (k, 4) float32 x0, y0, x1, y1
    score: list[np.ndarray]  # per tile (k,)
    class_id: list[np.ndarray]  # per tile (k,) int32
    suppressed: bool  # the model ran NMS itself (end-to-end export)


@dataclass(frozen=True, slots=True)
class TileScores(Maps):
    """One score and class per tile."""

    score: np.ndarray  # (B,) float32
    class_id: np.ndarray  # (B,) int32; -1 = the good class (no defect)


# ------------------------------------------------------------------ raw outputs -> maps


def segmentation_maps(outputs: dict[str, np.ndarray], batch: int, tile_hw: tuple[int, int], *,
                      spec: dict[str, Any], score_threshold: float) -> SegmentationMaps:
    """Class map (+ optional score map), (N, C, h, w) logits/probabilities with background
    channel 0 (class = argmax, score = its probability), or a (N, 1, h, w) single-class
    probability/logit map (class 1 where the probability reaches ``score_threshold``)."""
    stride = spec.get("stride")
    cm = pick_output(outputs, spec, "class_map", "class_map")
    if cm is not None:
        cm = cm.reshape(batch, *cm.shape[-2:])
        sm = pick_output(outputs, spec, "score_map", "score_map")
        if sm is not None:
            sm = sm.reshape(batch, *sm.shape[-2:])
        score_scale = 1.0 / 255.0 if sm is not None and sm.dtype == np.uint8 else 1.0
        return SegmentationMaps(tile_hw, cm, sm, score_scale, stride)
    x = pick_output(outputs, spec, "logits", "logits", "probabilities", "output")
    x = np.asarray(next(iter(outputs.values())) if x is None else x)
    if x.ndim == 3:
        x = x[:, None]
    x = x.reshape(batch, -1, *x.shape[-2:])
    labels, scores, background = [], [], []
    for xi in x:
        xi = xi.astype(np.float32, copy=False)
        if xi.shape[0] == 1:  # one class: probability or logit, decided per tile
            p = xi[0] if is_probability(xi) else sigmoid(xi[0])
            labels.append((p >= score_threshold).astype(np.uint8))
            scores.append(p)
        else:
            p = xi if (is_probability(xi) and np.allclose(xi.sum(0)[::16, ::16], 1, atol=1e-3)) else softmax(xi, 0)
            labels.append(p.argmax(0).astype(np.uint8))
            scores.append(p.max(0))
            background.append(p[0])
    return SegmentationMaps(tile_hw, np.stack(labels), np.stack(scores).astype(np.float32, copy=False), 1.0,
                            stride, np.stack(background) if background else None, from_probabilities=True)


def anomaly_maps(outputs: dict[str, np.ndarray], batch: int, tile_hw: tuple[int, int], *,
                 spec: dict[str, Any]) -> AnomalyMaps:
    """``anomaly_map`` (N, 1, h, w); else ``pred_mask``; else ``pred_score``; else the one output as the
    map. The map wins over an exported mask (the mask is then not read): thresholds act on the map."""
    amap = pick_output(outputs, spec, "anomaly_map", "anomaly_map")
    pmask = None if amap is not None else pick_output(outputs, spec, "pred_mask", "pred_mask")
    pscore = None
    if amap is None and pmask is None:
        pscore = pick_output(outputs, spec, "pred_score", "pred_score")
        if pscore is None:  # an unnamed single output: take it as the map
            amap = next(iter(outputs.values()))
        else:
            pscore = np.asarray(pscore, np.float32).reshape(batch, -1)[:, 0]
    if amap is not None or pmask is not None:
        hw = (amap if amap is not None else pmask).shape[-2:]  # type: ignore[union-attr]
        if amap is not None:
            amap = np.asarray(amap, np.float32).reshape(batch, *hw)
        if pmask is not None:
            pmask = np.asarray(pmask).reshape(batch, *hw)
    return AnomalyMaps(tile_hw, amap, pmask, pscore, spec.get("stride"))


def _looks_end2end(x: np.ndarray, nc: int) -> bool:
    """(N, k, 6) rows read as x0, y0, x1, y1, score, class: whole class ids below ``nc`` and
    x1 >= x0, y1 >= y0 everywhere (transposed rows hold cx, cy, w, h and a second class score)."""
    c = x[..., 5]
    return bool(((c == np.round(c)) & (c >= 0) & (c < nc)).all()
                and (x[..., 2] >= x[..., 0]).all() and (x[..., 3] >= x[..., 1]).all())


MAX_BOX_CANDIDATES = 3000  # per tile, best scores first, before NMS


def yolo_boxes(outputs: dict[str, np.ndarray], batch: int, tile_hw: tuple[int, int], *,
               spec: dict[str, Any], n_classes: int, score_threshold: float | np.ndarray) -> Boxes:
    """ultralytics export: (N, 4+nc, anchors) with cx, cy, w, h in input px and class scores
    (also accepted transposed, (N, anchors, 4+nc)); end-to-end exports (N, k, 6) with
    x0, y0, x1, y1, score, class. ``spec["format"]`` (ultralytics | transposed | end2end) settles
    the layout when the shapes are ambiguous (else a 2-class (N, k, 6) output is end-to-end when its
    rows read as such, ``_looks_end2end``). ``score_threshold``: one for all classes, or (nc,)
    one per class. Boxes are in input px (a resized tile: ``feed.Resize.boxes_to_tile``)."""
    x = np.asarray(pick_output(outputs, spec, "boxes", "output0") if len(outputs) > 1
                   else next(iter(outputs.values())), np.float32)
    nc = n_classes
    fmt = spec.get("format")
    if fmt is None:
        if nc and x.shape[1] == 4 + nc:
            fmt = "ultralytics"
        elif nc and x.shape[2] == 4 + nc:  # 2 classes: (N, k, 6) is transposed or end-to-end
            fmt = "end2end" if nc == 2 and _looks_end2end(x, nc) else "transposed"
        elif x.shape[-1] == 6:
            fmt = "end2end"
        else:
            fmt = "ultralytics" if x.shape[1] < x.shape[2] else "transposed"
    if fmt == "transposed":
        x = x.transpose(0, 2, 1)  # (N, anchors, 4+nc) -> (N, 4+nc, anchors)
    end2end = fmt == "end2end"
    thr = np.asarray(score_threshold, np.float32)
    per_class = thr.ndim == 1

    def above(score: np.ndarray, cls: np.ndarray) -> np.ndarray:
        if not per_class:
            return score >= thr
        return score >= thr[np.clip(cls, 0, len(thr) - 1)]  # ids out of range: checked by the model

    boxes, scores, classes = [], [], []
    for i in range(batch):
        r = x[i]
        if end2end:
            r = r[above(r[:, 4], r[:, 5].astype(np.int32))]
            xyxy, score, cls = r[:, :4], r[:, 4], r[:, 5].astype(np.int32)
        else:
            cls_scores = r[4:]
            cls = cls_scores.argmax(0).astype(np.int32)
            score = cls_scores[cls, np.arange(r.shape[1])]
            sel = np.flatnonzero(above(score, cls))
            if len(sel) > MAX_BOX_CANDIDATES:
                sel = sel[np.argsort(-score[sel], kind="stable")[:MAX_BOX_CANDIDATES]]
            cx, cy, bw, bh = r[:4, sel]
            xyxy = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1)
            score, cls = score[sel], cls[sel]
        boxes.append(xyxy)
        scores.append(score)
        classes.append(cls)
    return Boxes(tile_hw, boxes, scores, classes, suppressed=end2end)


GOOD_NAMES = ("good", "ok", "normal", "background", "no_defect")


def tile_scores(outputs: dict[str, np.ndarray], batch: int, tile_hw: tuple[int, int], *,
                spec: dict[str, Any], class_names: list[str]) -> TileScores:
    """(N, nc) logits or probabilities for a whole tile -> top class and its probability; the
    "good" class (named as in ``GOOD_NAMES``, else index 0) becomes -1."""
    x = np.asarray(pick_output(outputs, spec, "logits", "logits", "output") if len(outputs) > 1
                   else next(iter(outputs.values())), np.float32).reshape(batch, -1)
    p = x if (is_probability(x) and np.allclose(x.sum(1), 1, atol=1e-3)) else softmax(x, 1)
    top = p.argmax(1).astype(np.int32)
    good = next((i for i, n in enumerate(class_names) if n.lower() in GOOD_NAMES), 0)
    return TileScores(tile_hw, p.max(1), np.where(top == good, -1, top))
