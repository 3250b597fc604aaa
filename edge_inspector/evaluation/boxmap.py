"""Detection metrics for ``edge-inspector eval-model`` on YOLO datasets: COCO-style box AP.

Predicted boxes (``stitch``): what the station would report for the image, as ``Detections``:
a detector's boxes, or the bounding boxes of a segmentation / anomaly model's decoded blobs;
per tile, shifted to image px, clipped to the image, then parts of one class merged with the
station's rule (``assemble``: intersection over the smaller box >= ``merge.ios`` = 0.5, or from
different tiles within ``merge.touch_px`` = 3 px; the union box keeps the best score), at most
``MAX_PER_IMAGE`` per image, best first.

Average precision (``BoxAP``), per class and IoU threshold 0.50, 0.55, ..., 0.95 (COCO): the
predictions of a class over all images, best score first; in each image a prediction matches the
unmatched labelled box of the same class with the highest IoU >= the threshold (true positive),
else it is a false positive; precision made non-increasing, sampled at 101 recall points 0, 0.01,
.., 1 (0 beyond the highest recall reached), averaged. AP50 = at IoU 0.5, AP50-95 = the mean over
the ten thresholds; mAP = the mean over the dataset's classes that have labelled boxes.
- class-aware: a model class counts for the dataset class of the same name (``classes.
  canonical_class``: case, "_" = " ", synonyms such as Crease = wrinkle); a dataset class the
  model does not name has AP 0. ``map50`` is None when no name matches.
- class-agnostic (``map50_agnostic``): every prediction against every box, one class.
Ranking uses the decoder at a low threshold (``Decoder.ranking``); precision / recall / F1 are
at the operating threshold (the model's own decoder), at IoU 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..classes import canonical_class
from ..detections import Detections

IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
RECALL_POINTS = np.linspace(0.0, 1.0, 101)
MAX_PER_IMAGE = 300  # predictions per image (ultralytics max_det; COCO keeps 100)
MERGE_IOS, MERGE_TOUCH_PX = 0.5, 3.0  # the station's defaults (config.Merge)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes (x0, y0, x1, y1), (len(a), len(b))."""
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def merge_overlaps(d: Detections, tile: np.ndarray, ios: float = MERGE_IOS, touch_px: float = MERGE_TOUCH_PX
                   ) -> Detections:
    """Parts of one class joined as the station's assembler joins them (module docstring)."""
    n = len(d)
    if n <= 1:
        return d
    b = d.xyxy.astype(np.float64)
    ix = np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0])
    iy = np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1])
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    inter = np.clip(ix, 0, None) * np.clip(iy, 0, None)
    small = np.maximum(np.minimum(area[:, None], area[None, :]), 1e-9)
    gap = np.maximum(np.maximum(-ix, -iy), 0)  # Chebyshev gap, 0 when they overlap or touch
    same = d.class_id[:, None] == d.class_id[None, :]
    link = same & ((inter / small >= ios) | ((tile[:, None] != tile[None, :]) & (gap <= touch_px)))
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(np.triu(link, 1))):
        ri, rj = find(int(i)), find(int(j))
        if ri != rj:
            parent[rj] = ri
    roots = np.array([find(i) for i in range(n)])
    groups = [np.flatnonzero(roots == r) for r in np.unique(roots)]
    if len(groups) == n:
        return d
    xyxy = np.array([[b[g, 0].min(), b[g, 1].min(), b[g, 2].max(), b[g, 3].max()] for g in groups], np.float32)
    best = [g[np.argmax(d.score[g])] for g in groups]
    return Detections(xyxy, d.class_id[best], d.score[best], np.array([d.area_px[g].sum() for g in groups],
                                                                        np.float32))


def stitch(tile_dets: list[Detections], origins: list[tuple[int, int]], hw: tuple[int, int]) -> Detections:
    """One image's detections: each tile's (origin (y, x)) in image px, clipped to the image (h, w)
    (mirrored padding dropped), merged across tiles, the best ``MAX_PER_IMAGE``."""
    parts, tiles = [], []
    for k, (d, (y, x)) in enumerate(zip(tile_dets, origins)):
        if len(d):
            parts.append(Detections(d.xyxy.astype(np.float64) + [x, y, x, y], d.class_id, d.score, d.area_px))
            tiles.append(np.full(len(d), k))
    if not parts:
        return Detections.empty()
    d = Detections.concat(parts)
    h, w = hw
    d.xyxy = np.clip(d.xyxy, 0, [w, h, w, h]).astype(np.float32)
    tile = np.concatenate(tiles)
    keep = (d.xyxy[:, 2] > d.xyxy[:, 0]) & (d.xyxy[:, 3] > d.xyxy[:, 1])
    d = merge_overlaps(d.filter(keep), tile[keep])
    return d.filter(np.argsort(-d.score, kind="stable")[:MAX_PER_IMAGE])


def match(pred: np.ndarray, score: np.ndarray, gt: np.ndarray, thresholds: tuple[float, ...] = IOU_THRESHOLDS
          ) -> np.ndarray:
    """(k, len(thresholds)) bool: whether each prediction of one image and class is a true
    positive at each IoU threshold (greedy, best score first, each box matched once)."""
    tp = np.zeros((len(pred), len(thresholds)), bool)
    if not len(pred) or not len(gt):
        return tp
    iou = iou_matrix(pred.astype(np.float64), gt.astype(np.float64))
    order = np.argsort(-score, kind="stable")
    for t, thr in enumerate(thresholds):
        free = np.ones(len(gt), bool)
        for i in order:
            cand = np.where(free & (iou[i] >= thr - 1e-12), iou[i], -1.0)
            j = int(cand.argmax())
            if cand[j] >= 0:
                free[j] = False
                tp[i, t] = True
    return tp


def average_precision(score: np.ndarray, tp: np.ndarray, n_gt: int) -> float | None:
    """COCO 101-point interpolated AP of predictions (scores, true-positive flags) against
    ``n_gt`` boxes; None without boxes."""
    if not n_gt:
        return None
    if not len(score):
        return 0.0
    order = np.argsort(-score, kind="stable")
    hits = np.cumsum(tp[order])
    recall = hits / n_gt
    precision = hits / np.arange(1, len(hits) + 1)
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, RECALL_POINTS, side="left")
    return float(np.where(idx < len(precision), precision[np.minimum(idx, len(precision) - 1)], 0.0).mean())


def prf(tp: int, n_pred: int, n_gt: int) -> dict[str, Any]:
    fp, fn = n_pred - tp, n_gt - tp
    p = tp / n_pred if n_pred else None
    r = tp / n_gt if n_gt else None
    return {"precision": p, "recall": r, "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None,
            "tp": tp, "fp": fp, "fn": fn}


@dataclass
class _Curve:
    """Scores and true-positive flags of one class (or all classes), over the images so far."""

    score: list[np.ndarray] = field(default_factory=list)
    tp: list[np.ndarray] = field(default_factory=list)
    n_gt: int = 0
    op_tp: int = 0  # at the operating threshold, IoU 0.5
    op_pred: int = 0

    def add(self, pred: np.ndarray, score: np.ndarray, gt: np.ndarray, op: np.ndarray) -> None:
        self.score.append(score)
        self.tp.append(match(pred, score, gt))
        self.n_gt += len(gt)
        self.op_tp += int(match(op, np.ones(len(op)), gt, (0.5,)).sum())
        self.op_pred += len(op)

    def ap(self) -> tuple[float | None, float | None]:
        s = np.concatenate(self.score) if self.score else np.zeros(0)
        tp = np.concatenate(self.tp) if self.tp else np.zeros((0, len(IOU_THRESHOLDS)), bool)
        aps = [average_precision(s, tp[:, t], self.n_gt) for t in range(len(IOU_THRESHOLDS))]
        return (None, None) if aps[0] is None else (aps[0], float(np.mean(aps)))


@dataclass
class BoxAP:
    """Streaming COCO-style AP over the images of a YOLO dataset (module docstring)."""

    names: list[str]  # the dataset's classes
    model_names: list[str]
    boxes_from: str  # what the predicted boxes are (detector boxes / blob bounding boxes)
    ranking_threshold: float
    threshold: float
    agnostic: _Curve = field(default_factory=_Curve)
    per_class: dict[int, _Curve] = field(default_factory=dict)
    images: int = 0
    ranked: int = 0

    def __post_init__(self) -> None:
        by_name = {canonical_class(n): k for k, n in enumerate(self.names)}
        # model class id -> dataset class id (-1: the dataset has no such class)
        self.to_dataset = np.array([by_name.get(canonical_class(n), -1) for n in self.model_names] or [-1])
        self.class_aware = bool((self.to_dataset >= 0).any())

    def add(self, gt_xyxy: np.ndarray, gt_cls: np.ndarray, ranked: Detections, operating: Detections) -> None:
        """One image: labelled boxes (k, 4) image px and their classes; the predictions at the
        ranking threshold and at the operating threshold."""
        self.images += 1
        self.ranked += len(ranked)
        gt_xyxy = np.asarray(gt_xyxy, np.float64).reshape(-1, 4)
        self.agnostic.add(ranked.xyxy, ranked.score, gt_xyxy, operating.xyxy)
        if not self.class_aware:
            return
        rk = self.to_dataset[np.clip(ranked.class_id, 0, len(self.to_dataset) - 1)]
        ok = self.to_dataset[np.clip(operating.class_id, 0, len(self.to_dataset) - 1)]
        for c in set(np.unique(gt_cls).tolist()) | set(rk[rk >= 0].tolist()):
            self.per_class.setdefault(c, _Curve()).add(ranked.xyxy[rk == c], ranked.score[rk == c],
                                                       gt_xyxy[gt_cls == c], operating.xyxy[ok == c])

    def report(self) -> dict[str, Any]:
        ap50, ap = self.agnostic.ap()
        rows: dict[str, Any] = {}
        maps50, maps = [], []
        for c in sorted(self.per_class):
            cv = self.per_class[c]
            a50, a = cv.ap()
            named = [self.model_names[m] for m in np.flatnonzero(self.to_dataset == c)]
            rows[self.names[c] if c < len(self.names) else str(c)] = {
                "n": cv.n_gt, "model_classes": named, "ap50": a50, "ap50_95": a,
                **prf(cv.op_tp, cv.op_pred, cv.n_gt)}
            if a50 is not None:
                maps50.append(a50)
                maps.append(a)
        return {
            "boxes_from": self.boxes_from, "ranking_threshold": self.ranking_threshold,
            "threshold": self.threshold, "iou": list(IOU_THRESHOLDS), "ap": "COCO 101-point interpolated",
            "merge": f"same class, IoS >= {MERGE_IOS} or across tiles within {MERGE_TOUCH_PX:g} px",
            "images": self.images, "n_gt": self.agnostic.n_gt, "n_ranked": self.ranked,
            "n_pred": self.agnostic.op_pred, "class_aware": self.class_aware,
            "map50": float(np.mean(maps50)) if maps50 else None,
            "map50_95": float(np.mean(maps)) if maps else None,
            "map50_agnostic": ap50, "map50_95_agnostic": ap,
            **prf(self.agnostic.op_tp, self.agnostic.op_pred, self.agnostic.n_gt),
            "per_class": rows,
        }
