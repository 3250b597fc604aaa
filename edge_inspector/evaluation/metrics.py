"""Metrics for ``edge-inspector eval-model``: pixel AUROC / AUPRO / Dice / IoU, image level, box recall.

Metrics (``threshold`` = ``--threshold``, default the model's ``score_threshold``)
    Predicted mask P = score >= threshold (plain per-pixel threshold, no hysteresis or area filter
    unlike the station's decoder); G = ground truth (or box-mask).
    - Dice = 2|P∩G| / (|P| + |G|), IoU = |P∩G| / |P∪G|. *pooled*: the sums over all images;
      *mean*: the mean of per-image values over the images where P or G is non-empty (an image
      with neither is skipped and counted apart; a good image with a false mask scores 0).
    - pixel AUROC over all pixels of all images (Mann-Whitney, ties count 1/2), from histograms of
      the scores quantised to 1/65536 (exact for uint8 score maps); no subsampling.
    - AUPRO up to 30 % FPR (MVTec AD / anomalib): regions = 8-connected components of G per image;
      for each threshold t, FPR(t) = share of all non-defect pixels with score >= t and
      PRO(t) = mean over regions of the region's share of pixels with score >= t; the curve from
      (0, 0) is integrated (trapezoids) over FPR 0..0.3, interpolated at 0.3, divided by 0.3.
    - image level: image score = max pixel score; the image is defective in the ground truth when
      G is non-empty (MVTec: a mask; YOLO: any box) and predicted defective when any pixel is
      >= threshold; AUROC (exact) and F1 / precision / recall at the threshold.
    - YOLO boxes: blobs = 8-connected components of P with at least ``min_area_px`` px (the model's
      ``min_area_px``, default 6). A labelled box is *found* when the blobs cover >= 10 % of its
      pixels, or when >= 50 % of some blob lies inside it. Recall overall and per class name; when
      the model's class names share names with the dataset, also *found with the same class*
      (the most common predicted class on blob pixels inside the box). A *false blob* touches no
      labelled box; false blobs per image = false blobs / images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

BINS = 1 << 16  # score quantisation of the AUROC / AUPRO histograms
MAX_FPR = 0.3  # AUPRO integration limit
BOX_COVERAGE = 0.10  # a box is found when blobs cover this share of it ...
BLOB_INSIDE = 0.50  # ... or this share of one blob lies inside it


def auroc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney U; ties count 1/2); None without both classes."""
    s = np.asarray(scores, np.float64).ravel()
    y = np.asarray(labels, bool).ravel()
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if not n_pos or not n_neg:
        return None
    _, inv, counts = np.unique(s, return_inverse=True, return_counts=True)
    mid_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based average rank of each value
    u = mid_rank[inv][y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def auroc_hist(pos: np.ndarray, neg: np.ndarray) -> float | None:
    """AUROC from histograms of positive and negative scores over the same bins (ties count 1/2)."""
    p, n = pos.astype(np.float64), neg.astype(np.float64)
    if not p.sum() or not n.sum():
        return None
    below = np.cumsum(n) - n
    return float((p * (below + 0.5 * n)).sum() / (p.sum() * n.sum()))


def _area_upto(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoid area under y(x) for x in [x[0], x_max] (x non-decreasing), interpolated at x_max."""
    k = int(np.searchsorted(x, x_max, side="right"))
    xs, ys = x[:k], y[:k]
    if k < len(x) and xs[-1] < x_max:
        t = (x_max - x[k - 1]) / (x[k] - x[k - 1])
        xs = np.append(xs, x_max)
        ys = np.append(ys, y[k - 1] + t * (y[k] - y[k - 1]))
    return float(np.sum(np.diff(xs) * (ys[1:] + ys[:-1]) / 2.0))


def aupro_hist(neg: np.ndarray, pro: np.ndarray, n_regions: int, max_fpr: float = MAX_FPR) -> float | None:
    """Normalised area under the PRO curve up to ``max_fpr`` from score histograms.

    ``neg``: non-defect pixels per bin; ``pro``: defect pixels per bin, each weighted by
    1 / the area of its ground-truth region; ``n_regions``: number of regions.
    """
    total_neg = float(neg.sum())
    if not n_regions or not total_neg:
        return None
    fpr = np.concatenate([[0.0], np.cumsum(neg[::-1]) / total_neg])  # thresholds high -> low
    pros = np.concatenate([[0.0], np.cumsum(pro[::-1]) / n_regions])
    return _area_upto(fpr, pros, max_fpr) / max_fpr


def dice_iou(inter: int, pred: int, gt: int) -> tuple[float | None, float | None]:
    """Dice and IoU from pixel counts; None when both masks are empty."""
    if pred + gt == 0:
        return None, None
    return 2.0 * inter / (pred + gt), inter / (pred + gt - inter)


def score_bins(score: np.ndarray) -> np.ndarray:
    """Scores in [0, 1] -> histogram bin 0..BINS-1 (exact: BINS is a power of two)."""
    return np.minimum((score * np.float32(BINS)).astype(np.int64), BINS - 1)


def ratio(a: float, b: float) -> float | None:
    """a / b, None when b is 0."""
    return a / b if b else None


@dataclass
class PixelStats:
    """Streaming pixel and image figures: histograms, pooled counts, per-image values."""

    threshold: float
    pos: np.ndarray = field(default_factory=lambda: np.zeros(BINS, np.int64))
    neg: np.ndarray = field(default_factory=lambda: np.zeros(BINS, np.int64))
    pro: np.ndarray = field(default_factory=lambda: np.zeros(BINS, np.float64))
    regions: int = 0
    inter: int = 0
    pred: int = 0
    gt: int = 0
    dice: list[float] = field(default_factory=list)
    iou: list[float] = field(default_factory=list)
    both_empty: int = 0
    image_score: list[float] = field(default_factory=list)
    image_gt: list[bool] = field(default_factory=list)

    def add(self, score: np.ndarray, gt: np.ndarray, pred: np.ndarray | None = None) -> float | None:
        """Add one image (score (H, W) in [0, 1], gt (H, W) bool, the predicted defect pixels
        (default: score >= threshold)); returns its Dice (None: skipped)."""
        b = score_bins(score).ravel()
        g = gt.ravel()
        self.pos += np.bincount(b[g], minlength=BINS)
        self.neg += np.bincount(b[~g], minlength=BINS)
        n, labels = cv2.connectedComponents(gt.view(np.uint8), connectivity=8)
        if n > 1:
            lab = labels.ravel()[g]
            area = np.bincount(lab, minlength=n)
            self.pro += np.bincount(b[g], weights=1.0 / area[lab], minlength=BINS)
            self.regions += n - 1
        p = score >= self.threshold if pred is None else pred
        inter, n_pred, n_gt = int((p & gt).sum()), int(p.sum()), int(g.sum())
        self.inter, self.pred, self.gt = self.inter + inter, self.pred + n_pred, self.gt + n_gt
        d, j = dice_iou(inter, n_pred, n_gt)
        if d is None:
            self.both_empty += 1
        else:
            self.dice.append(d)
            self.iou.append(j)  # type: ignore[arg-type]
        self.image_score.append(float(score.max()))
        self.image_gt.append(bool(n_gt))
        return d

    def pixel(self, mask_kind: str) -> dict[str, Any]:
        dice, iou = dice_iou(self.inter, self.pred, self.gt)
        return {
            "mask": mask_kind, "threshold": self.threshold,
            "dice_pooled": dice, "iou_pooled": iou,
            "dice_mean": float(np.mean(self.dice)) if self.dice else None,
            "iou_mean": float(np.mean(self.iou)) if self.iou else None,
            "images_in_mean": len(self.dice), "images_both_empty": self.both_empty,
            "auroc": auroc_hist(self.pos, self.neg), "aupro_30": aupro_hist(self.neg, self.pro, self.regions),
            "gt_regions": self.regions, "gt_px": self.gt, "pred_px": self.pred, "inter_px": self.inter,
            "px": int(self.pos.sum() + self.neg.sum()),
        }

    def image(self) -> dict[str, Any]:
        s, y = np.asarray(self.image_score), np.asarray(self.image_gt, bool)
        flagged = s >= self.threshold
        tp, fp = int((flagged & y).sum()), int((flagged & ~y).sum())
        fn, tn = int((~flagged & y).sum()), int((~flagged & ~y).sum())
        return {
            "auroc": auroc(s, y), "f1": ratio(2 * tp, 2 * tp + fp + fn),
            "precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn),
            "tp": tp, "fp": fp, "fn": fn, "tn": tn,
        }


def blobs(pred: np.ndarray, min_area_px: float, labels: np.ndarray | None = None,
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """8-connected components of ``pred`` -> (labels (H, W), areas (n+1,), kept (n+1,) bool);
    with ``labels`` (the decoder's ``reported_labels``: a defect in pieces is one) those instead."""
    if labels is None:
        n, labels, stats, _ = cv2.connectedComponentsWithStats(pred.view(np.uint8), connectivity=8, ltype=cv2.CV_32S)
        area = stats[:, cv2.CC_STAT_AREA].astype(np.int64)
    else:
        area = np.bincount(labels.ravel(), minlength=1).astype(np.int64)
    kept = area >= min_area_px
    kept[0] = False  # background
    return labels, area, kept


@dataclass
class BoxStats:
    """YOLO box recall and false blobs (rules in the module docstring)."""

    names: list[str]
    model_names: list[str]
    min_area_px: float
    n: dict[int, int] = field(default_factory=dict)
    found: dict[int, int] = field(default_factory=dict)
    same_class: dict[int, int] = field(default_factory=dict)
    blobs: int = 0
    false_blobs: int = 0
    images: int = 0

    def name(self, k: int) -> str:
        return self.names[k] if k < len(self.names) else str(k)

    def add(self, pred: np.ndarray, union: np.ndarray, cls_map: np.ndarray | None, cls: np.ndarray,
            px: np.ndarray, labels: np.ndarray | None = None) -> None:
        """One image: predicted mask, union of its boxes, class map, box classes and box px (and
        the decoder's ``reported_labels``, where a defect can be in pieces)."""
        labels, area, kept = blobs(pred, self.min_area_px, labels)
        on_blob = kept[labels]
        touches = np.bincount(labels[union], minlength=len(area)) > 0
        self.images += 1
        self.blobs += int(kept.sum())
        self.false_blobs += int((kept & ~touches).sum())
        for k, (x0, y0, x1, y1) in zip(cls.tolist(), px):
            crop, on = labels[y0:y1, x0:x1], on_blob[y0:y1, x0:x1]
            inside = np.bincount(crop.ravel(), minlength=len(area))
            hit = bool(on.mean() >= BOX_COVERAGE or (kept & (inside >= BLOB_INSIDE * area)).any())
            self.n[k] = self.n.get(k, 0) + 1
            self.found[k] = self.found.get(k, 0) + hit
            if hit and cls_map is not None:
                votes = np.bincount(cls_map[y0:y1, x0:x1][on], minlength=1)
                votes[0] = 0
                pk = int(votes.argmax()) - 1
                same = votes.any() and 0 <= pk < len(self.model_names) and self.model_names[pk] == self.name(k)
                self.same_class[k] = self.same_class.get(k, 0) + bool(same)

    def report(self) -> dict[str, Any]:
        class_aware = bool(set(self.model_names) & {self.name(k) for k in self.n})
        per_class = {}
        for k in sorted(self.n):
            row: dict[str, Any] = {"n": self.n[k], "found": self.found[k], "recall": self.found[k] / self.n[k]}
            if class_aware:
                row["found_same_class"] = self.same_class.get(k, 0)
            per_class[self.name(k)] = row
        n, found = sum(self.n.values()), sum(self.found.values())
        return {
            "rule": f"found when blobs cover >= {BOX_COVERAGE:.0%} of the box or >= {BLOB_INSIDE:.0%}"
                    f" of a blob lies inside it; blobs >= {self.min_area_px:g} px",
            "n": n, "found": found, "recall": ratio(found, n), "class_aware": class_aware,
            "per_class": per_class, "blobs": self.blobs, "false_blobs": self.false_blobs,
            "false_blobs_per_image": ratio(self.false_blobs, self.images),
        }


@dataclass
class PatchStats:
    """Patch classifiers (``eval-model`` on a ``patch`` model): every patch of the model's own grid
    labelled from the boxes / masks by ``patch.labels.cell_labels`` (ambiguous patches left out),
    predicted defective when its probability reaches the threshold: accuracy, the confusion matrix
    (rows: truth good, defect; columns: predicted good, defect), precision / recall of the defect
    class, and the patch AUROC."""

    threshold: float
    stride: int
    report_px: int
    probs: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)

    def add(self, prob: np.ndarray, label: np.ndarray) -> None:
        keep = label >= 0
        self.probs.append(prob[keep].astype(np.float32))
        self.labels.append(label[keep] == 1)

    def report(self) -> dict[str, Any]:
        p = np.concatenate(self.probs) if self.probs else np.zeros(0, np.float32)
        y = np.concatenate(self.labels) if self.labels else np.zeros(0, bool)
        pred = p >= self.threshold
        tn, fp = int((~y & ~pred).sum()), int((~y & pred).sum())
        fn, tp = int((y & ~pred).sum()), int((y & pred).sum())
        return {
            "stride": self.stride, "report_px": self.report_px, "patches": len(y), "defective": int(y.sum()),
            "accuracy": ratio(tp + tn, len(y)), "confusion": [[tn, fp], [fn, tp]],
            "precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn), "auroc": auroc(p, y),
            "labels": "patch.labels.cell_labels: defective when a box covers 25 % of the patch's square or of"
                      " itself, good when none touches it, ambiguous (left out) otherwise",
        }
