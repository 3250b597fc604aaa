"""``edge-inspector eval-model``: score a defect model on an image dataset, tiled as on the station.

Datasets (``find_dataset``; ``--layout auto`` tries MVTec AD, then YOLO)
    MVTec AD  ``<root>/<split>/<type>/*.png`` (split ``test`` unless ``--split``; ``good`` = no
              defect) with masks ``<root>/ground_truth/<type>/<stem>_mask.png`` (> 0 = defect).
    YOLO      ``<root>/[<split>/]images/*`` with ``<root>/[<split>/]labels/<stem>.txt``, lines
              ``cls cx cy w h`` normalised to the image (missing or empty file: no defect);
              class names from ``<root>/data.yaml`` ``names`` when present. ``--split`` defaults
              to ``val``, else ``test``, else the root itself. Boxes are rasterised to the pixels
              they touch; their union is the *box-mask (weak)*: boxes over-cover defects, so pixel
              figures against it are a lower bound, reported under that label.

Tiling "as on the station" (``score_image``)
    Square tiles of ``tile`` px (default: the model's fixed input size, else min(2048, the longer
    image side rounded up to a multiple of 32)), overlapping by ``overlap`` (default
    min(128, tile // 4)); tile origins as ``tile.column_starts`` (every tile - overlap px, the last
    aligned to the far edge). An image smaller than the tile is padded at the bottom / right by
    mirroring (reflect-101), predictions there are dropped. ``Model.maps`` gives each tile's defect
    score in [0, 1] and class map at tile px (nearest-neighbour upsampling of strided outputs);
    overlaps combine by max (the class of the tile with the higher score; first tile on ties).
    Anomaly maps outside [0, 1] without min/max metadata are min-max scaled over the evaluated
    images (a first pass finds the range; reported under ``model.anomaly_scaling``).

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
    - timing: images/s over the whole evaluation loop (reading, tiling, model, stitching,
      metrics), ms per tile = time inside ``Model.maps`` / tiles.
"""

from __future__ import annotations

import ast
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from .config import ModelCfg, load_station
from .errors import InputError
from .inference.decoders import AnomalyDecoder
from .inference.model import Model
from .tile import column_starts

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
LAYOUTS = ("auto", "mvtec", "yolo")
BINS = 1 << 16  # score quantisation of the AUROC / AUPRO histograms
MAX_FPR = 0.3  # AUPRO integration limit
MAX_TILE = 2048
STATION_OVERLAP = 128
BOX_COVERAGE = 0.10  # a box is found when blobs cover this share of it ...
BLOB_INSIDE = 0.50  # ... or this share of one blob lies inside it


# ---------------------------------------------------------------------------------------------
# Datasets


@dataclass(frozen=True, slots=True)
class Sample:
    """One test image and where its ground truth is (a mask, a YOLO label file, or none)."""

    image: Path
    group: str  # MVTec defect type ("good" = defect-free); "" for YOLO
    mask: Path | None = None
    labels: Path | None = None


@dataclass(slots=True)
class Dataset:
    root: Path
    layout: str  # "mvtec" | "yolo"
    split: str  # folder evaluated, relative to root ("." for the root itself)
    samples: list[Sample]
    names: list[str] = field(default_factory=list)  # YOLO class names (data.yaml), may be empty


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def _is_mvtec(root: Path, split: str) -> bool:
    return (root / split).is_dir() and ((root / "ground_truth").is_dir() or (root / "train" / "good").is_dir())


def _yolo_split(root: Path, split: str | None) -> str | None:
    """The YOLO split folder to evaluate (``"."`` = the root), or None when there is none."""
    if split is not None:
        return split if (root / split / "images").is_dir() else None
    return next((s for s in ("val", "test", ".") if (root / s / "images").is_dir()), None)


def find_dataset(root: Path, layout: str = "auto", split: str | None = None) -> Dataset:
    """The samples of ``root`` in MVTec AD or YOLO layout; InputError naming the path otherwise."""
    if layout not in LAYOUTS:
        raise InputError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if not root.is_dir():
        raise InputError("dataset folder not found", path=root)
    if layout in ("auto", "mvtec") and _is_mvtec(root, split or "test"):
        return _mvtec(root, split or "test")
    if layout in ("auto", "yolo"):
        ysplit = _yolo_split(root, split)
        if ysplit is not None:
            return _yolo(root, ysplit)
    wanted = {
        "mvtec": f"MVTec AD layout ({split or 'test'}/<type>/*.png with ground_truth/<type>/ or train/good/)",
        "yolo": f"YOLO layout ({split + '/' if split else '[val|test/]'}images/ with labels/)",
    }
    expected = " or ".join(wanted.values()) if layout == "auto" else wanted[layout]
    raise InputError(f"not a dataset in {expected}", path=root, hint="check the path, --layout and --split")


def _mvtec(root: Path, split: str) -> Dataset:
    samples = []
    for group_dir in sorted(d for d in (root / split).iterdir() if d.is_dir()):
        for img in _images_in(group_dir):
            mask = None
            if group_dir.name != "good":
                mask = root / "ground_truth" / group_dir.name / f"{img.stem}_mask.png"
                if not mask.is_file():
                    raise InputError(f"ground-truth mask missing for {img}", path=mask)
            samples.append(Sample(img, group_dir.name, mask=mask))
    if not samples:
        raise InputError(f"no images in {split}/<type>/", path=root)
    return Dataset(root, "mvtec", split, samples)


def _yolo(root: Path, split: str) -> Dataset:
    base = root / split
    images = _images_in(base / "images")
    if not images:
        raise InputError("no images", path=base / "images")
    samples = [Sample(p, "", labels=base / "labels" / f"{p.stem}.txt") for p in images]
    names = read_names(root / "data.yaml") if (root / "data.yaml").is_file() else []
    return Dataset(root, "yolo", split, samples, names)


def read_names(path: Path) -> list[str]:
    """``names`` of a YOLO data.yaml: a flow list / dict, or a block of ``- name`` / ``k: name``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if not line.startswith("names:"):
            continue
        rest = line.split(":", 1)[1].split(" #")[0].strip()
        if rest:
            return _flow_names(rest, path)
        names = []
        for item in lines[i + 1 :]:
            if item.strip() and not item[0].isspace():
                break
            item = item.split(" #")[0].strip()
            if item:
                names.append(item[1:].strip() if item.startswith("-") else item.split(":", 1)[-1].strip())
        return [n.strip("'\"") for n in names]
    return []


def _flow_names(text: str, path: Path) -> list[str]:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):  # unquoted YAML flow items: [a, b] / {0: a, 1: b}
        items = [t.strip() for t in text.strip("[]{}").split(",") if t.strip()]
        value = [t.split(":", 1)[-1].strip().strip("'\"") for t in items]
    if isinstance(value, dict):
        return [str(value[k]) for k in sorted(value)]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    raise InputError(f"names must be a list or a mapping, got {text!r}", path=path)


def read_labels(path: Path, n_names: int) -> tuple[np.ndarray, np.ndarray]:
    """(class ids (k,), boxes (k, 4) cx cy w h normalised) of a YOLO label file (missing: none)."""
    cls: list[int] = []
    boxes: list[list[float]] = []
    if not path.is_file():
        return np.zeros(0, np.int64), np.zeros((0, 4))
    for no, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            if len(parts) != 5:
                raise ValueError(f"{len(parts)} fields")
            c, vals = float(parts[0]), [float(v) for v in parts[1:]]
            if not c.is_integer() or c < 0 or (n_names and c >= n_names):
                raise ValueError(f"class {parts[0]} is not one of 0..{n_names - 1 if n_names else 'n'}")
            if not all(np.isfinite(vals)) or vals[2] <= 0 or vals[3] <= 0:
                raise ValueError("the box needs finite numbers and a positive width and height")
        except ValueError as e:
            raise InputError(f"expected 'class cx cy w h' (5 numbers, normalised), got {line.strip()!r} ({e})",
                             path=path, where=f"line {no}") from None
        cls.append(int(c))
        boxes.append(vals)
    return np.asarray(cls, np.int64), np.asarray(boxes, np.float64).reshape(-1, 4)


def box_pixels(boxes: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Normalised cx cy w h -> integer x0 y0 x1 y1 (exclusive) of the pixels each box touches."""
    h, w = hw
    x0 = np.floor((boxes[:, 0] - boxes[:, 2] / 2) * w)
    x1 = np.ceil((boxes[:, 0] + boxes[:, 2] / 2) * w)
    y0 = np.floor((boxes[:, 1] - boxes[:, 3] / 2) * h)
    y1 = np.ceil((boxes[:, 1] + boxes[:, 3] / 2) * h)
    lo = np.clip(np.stack([x0, y0], 1), 0, [w - 1, h - 1])
    hi = np.clip(np.stack([x1, y1], 1), lo + 1, [w, h])  # at least one pixel
    return np.concatenate([lo, hi], 1).astype(np.int64).reshape(-1, 4)


def read_image(path: Path, channels: int) -> np.ndarray:
    """(H, W, channels) uint8, RGB for 3 channels; InputError naming the file when unreadable."""
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR)
    if img is None:
        raise InputError("cannot read the image (not an image file, or corrupt)", path=path)
    return img[..., None] if channels == 1 else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def ground_truth(sample: Sample, hw: tuple[int, int], n_names: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(defect mask (H, W) bool, class ids, box px (k, 4)) of one sample."""
    if sample.labels is not None:
        cls, boxes = read_labels(sample.labels, n_names)
        px = box_pixels(boxes, hw)
        mask = np.zeros(hw, bool)
        for x0, y0, x1, y1 in px:
            mask[y0:y1, x0:x1] = True
        return mask, cls, px
    mask = np.zeros(hw, bool)
    if sample.mask is not None:
        m = cv2.imread(str(sample.mask), cv2.IMREAD_GRAYSCALE)
        if m is None:
            raise InputError("cannot read the mask", path=sample.mask)
        if m.shape != hw:
            raise InputError(f"mask is {m.shape[1]}x{m.shape[0]}, the image {hw[1]}x{hw[0]}", path=sample.mask)
        mask = m > 0
    return mask, np.zeros(0, np.int64), np.zeros((0, 4), np.int64)


# ---------------------------------------------------------------------------------------------
# Tiling


def auto_tile(model: Model, hw: tuple[int, int]) -> int:
    """The model's fixed input size, else min(2048, the longer side rounded up to 32)."""
    if model.input_size is not None:
        return int(model.input_size[0])
    return min(MAX_TILE, -(-max(hw) // 32) * 32)


def score_image(
    model: Model, img: np.ndarray, tile: int, overlap: int, *, batch: int = 4,
    anomaly_range: tuple[float, float] | None = None, raw: bool = False,
) -> tuple[np.ndarray, np.ndarray | None, int, float]:
    """Tile ``img`` (H, W, C) as on the station and stitch the model's maps back (max on overlaps).

    Returns (score (H, W) float32, class map (H, W) int32 or None, tiles run, seconds in the model).
    """
    h, w = img.shape[:2]
    hp, wp = max(h, tile), max(w, tile)
    if (hp, wp) != (h, w):
        img = cv2.copyMakeBorder(img, 0, hp - h, 0, wp - w, cv2.BORDER_REFLECT_101).reshape(hp, wp, -1)
    origins = [(y, x) for y in column_starts(hp, tile, overlap) for x in column_starts(wp, tile, overlap)]
    score = np.full((hp, wp), -np.inf, np.float32)
    cls: np.ndarray | None = None
    model_s = 0.0
    for i in range(0, len(origins), batch):
        part = origins[i : i + batch]
        t0 = time.perf_counter()
        s, c = model.maps(np.stack([img[y : y + tile, x : x + tile] for y, x in part]),
                          anomaly_range=anomaly_range, raw=raw)
        model_s += time.perf_counter() - t0
        if c is not None and cls is None:
            cls = np.zeros((hp, wp), np.int32)
        for k, (y, x) in enumerate(part):
            view = score[y : y + tile, x : x + tile]
            if c is not None and cls is not None:
                better = s[k] > view
                cls[y : y + tile, x : x + tile][better] = c[k][better]
            np.maximum(view, s[k], out=view)
    return score[:h, :w], None if cls is None else cls[:h, :w], len(origins), model_s


# ---------------------------------------------------------------------------------------------
# Metrics


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


def _ratio(a: float, b: float) -> float | None:
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

    def add(self, score: np.ndarray, gt: np.ndarray) -> float | None:
        """Add one image (score (H, W) in [0, 1], gt (H, W) bool); returns its Dice (None: skipped)."""
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
        p = score >= self.threshold
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
            "gt_regions": self.regions, "gt_px": self.gt, "pred_px": self.pred,
        }

    def image(self) -> dict[str, Any]:
        s, y = np.asarray(self.image_score), np.asarray(self.image_gt, bool)
        flagged = s >= self.threshold
        tp, fp = int((flagged & y).sum()), int((flagged & ~y).sum())
        fn, tn = int((~flagged & y).sum()), int((~flagged & ~y).sum())
        return {
            "auroc": auroc(s, y), "f1": _ratio(2 * tp, 2 * tp + fp + fn),
            "precision": _ratio(tp, tp + fp), "recall": _ratio(tp, tp + fn),
            "tp": tp, "fp": fp, "fn": fn, "tn": tn,
        }


def blobs(pred: np.ndarray, min_area_px: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """8-connected components of ``pred`` -> (labels (H, W), areas (n+1,), kept (n+1,) bool)."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(pred.view(np.uint8), connectivity=8, ltype=cv2.CV_32S)
    area = stats[:, cv2.CC_STAT_AREA].astype(np.int64)
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
            px: np.ndarray) -> None:
        """One image: predicted mask, union of its boxes, class map, box classes and box px."""
        labels, area, kept = blobs(pred, self.min_area_px)
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
            "n": n, "found": found, "recall": _ratio(found, n), "class_aware": class_aware,
            "per_class": per_class, "blobs": self.blobs, "false_blobs": self.false_blobs,
            "false_blobs_per_image": _ratio(self.false_blobs, self.images),
        }


# ---------------------------------------------------------------------------------------------
# Evaluation


def load_model(model_path: str | None, station_path: str | None) -> Model:
    """The model to evaluate: ``model_path`` (default the station's, else builtin:default) with
    the station's ``[model]`` settings (decoder, providers, thresholds) when a station is given."""
    station = load_station(station_path) if station_path else None
    cfg = station.model if station else ModelCfg()
    if model_path:
        cfg = cfg.model_copy(update={"path": model_path})
    return Model.load(cfg, resolve=station.resolve) if station else Model.load(cfg)


def subset(samples: list[Sample], limit: int | None) -> list[Sample]:
    """``limit`` samples evenly spaced over the sorted list (all groups represented), or all."""
    if limit is None or limit >= len(samples):
        return samples
    if limit < 1:
        raise InputError(f"--limit must be at least 1, got {limit}")
    idx = np.linspace(0, len(samples) - 1, limit).round().astype(int)
    return [samples[i] for i in idx]


def _channels(model: Model) -> int:
    return model.input_channels or 3


def _tile_for(model: Model, hw: tuple[int, int], tile: int | None, overlap: int | None) -> tuple[int, int]:
    """(tile, overlap) for an image: the given ones, else ``auto_tile`` and min(128, tile // 4)."""
    t = tile or auto_tile(model, hw)
    o = min(STATION_OVERLAP, t // 4) if overlap is None else overlap
    if not 0 <= o < t:
        raise InputError(f"--overlap must be 0 or more and smaller than the tile ({t} px), got {o}")
    return t, o


def anomaly_scaling(model: Model, samples: list[Sample], tile: int | None, overlap: int | None,
                    batch: int) -> tuple[tuple[float, float] | None, str]:
    """How anomaly maps are brought to [0, 1]: metadata, as is, or min-max over ``samples``."""
    if not isinstance(model.decoder, AnomalyDecoder):
        return None, "-"
    if {"min", "max"} <= model.decoder.spec.keys():
        return None, "metadata min/max"
    lo, hi = np.inf, -np.inf
    for s in samples:
        img = read_image(s.image, _channels(model))
        t, o = _tile_for(model, img.shape[:2], tile, overlap)
        raw, _, _, _ = score_image(model, img, t, o, batch=batch, raw=True)
        lo, hi = min(lo, float(raw.min())), max(hi, float(raw.max()))
    if lo >= 0.0 and hi <= 1.0:
        return None, "as is (maps within [0, 1])"
    return (lo, hi), f"min-max over the evaluated images [{lo:.6g}, {hi:.6g}]"


def evaluate_model(
    model: Model, dataset: Dataset, *, threshold: float | None = None, tile: int | None = None,
    overlap: int | None = None, limit: int | None = None, batch: int = 4,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Run ``model`` on the dataset's images, tiled as on the station; the report (a dict)."""
    thr = model.score_threshold if threshold is None else float(threshold)
    if not 0.0 <= thr <= 1.0:
        raise InputError(f"--threshold must be within 0..1, got {thr}")
    if tile is not None:
        if tile < 1:
            raise InputError(f"--tile must be at least 1, got {tile}")
        model.check_fits(tile, _channels(model), model.path)
    if batch < 1:
        raise InputError(f"--batch must be at least 1, got {batch}")
    samples = subset(dataset.samples, limit)
    rng, scaling = anomaly_scaling(model, samples, tile, overlap, batch)
    yolo = dataset.layout == "yolo"
    px = PixelStats(thr)
    boxes = BoxStats(dataset.names, model.class_names, model.min_area_px) if yolo else None
    groups: dict[str, dict[str, Any]] = {}
    tiles, model_s, tile_sizes, overlaps = 0, 0.0, set(), set()
    t0 = time.perf_counter()
    for i, s in enumerate(samples):
        img = read_image(s.image, _channels(model))
        hw = img.shape[:2]
        t, o = _tile_for(model, hw, tile, overlap)
        score, cls_map, n_tiles, secs = score_image(model, img, t, o, batch=batch, anomaly_range=rng)
        tiles, model_s = tiles + n_tiles, model_s + secs
        tile_sizes.add(t)
        overlaps.add(o)
        gt, cls, box_px = ground_truth(s, hw, len(dataset.names))
        d = px.add(score, gt)
        if boxes is not None:
            boxes.add(score >= thr, gt, cls_map, cls, box_px)
        g = groups.setdefault(s.group, {"images": 0, "flagged": 0, "dice": []})
        g["images"] += 1
        g["flagged"] += int(px.image_score[-1] >= thr)
        if d is not None:
            g["dice"].append(d)
        if progress:
            progress(i + 1, len(samples))
    wall = time.perf_counter() - t0
    report: dict[str, Any] = {
        "model": {
            "path": str(model.path), "kind": model.kind, "classes": model.class_names,
            "provider": model.provider, "threshold": thr, "min_area_px": model.min_area_px,
            "anomaly_scaling": scaling,
        },
        "dataset": {
            "root": str(dataset.root), "layout": dataset.layout, "split": dataset.split,
            "images": len(samples), "images_total": len(dataset.samples),
            "defective_images": int(sum(px.image_gt)), "names": dataset.names,
        },
        "tiling": {"tile": sorted(tile_sizes), "overlap": sorted(overlaps), "tiles": tiles,
                   "upsampling": "nearest", "combine": "max"},
        "pixel": px.pixel("box-mask (weak)" if yolo else "ground truth"),
        "image": px.image(),
        "timing": {"wall_s": wall, "model_s": model_s, "images_per_s": _ratio(len(samples), wall),
                   "ms_per_tile": _ratio(1000.0 * model_s, tiles)},
    }
    if boxes is not None:
        report["boxes"] = boxes.report()
    else:
        report["per_type"] = {
            k: {"images": g["images"], "flagged": g["flagged"],
                "dice_mean": float(np.mean(g["dice"])) if g["dice"] else None}
            for k, g in groups.items()
        }
    return report


# ---------------------------------------------------------------------------------------------
# Report


def _f(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec) if isinstance(v, float) else str(v)


def format_report(r: dict[str, Any]) -> str:
    """A readable text version of an ``evaluate_model`` report."""
    m, d, t, p, im, tm = r["model"], r["dataset"], r["tiling"], r["pixel"], r["image"], r["timing"]
    L = [
        f"Model   {m['path']} ({m['kind']}, classes {', '.join(m['classes'])}) on {m['provider']}",
        f"        threshold {m['threshold']:g}" + (f", anomaly maps scaled {m['anomaly_scaling']}"
                                                  if m["anomaly_scaling"] != "-" else ""),
        f"Dataset {d['root']} ({d['layout']}, split {d['split']}): {d['images']} of {d['images_total']} images,"
        f" {d['defective_images']} with defects",
        f"Tiling  tile {'/'.join(map(str, t['tile']))} px, overlap {'/'.join(map(str, t['overlap']))} px,"
        f" {t['tiles']} tiles",
        "",
        f"Pixel ({p['mask']})      pooled    mean (over {p['images_in_mean']} images;"
        f" {p['images_both_empty']} with neither mask skipped)",
        f"  Dice {_f(p['dice_pooled']):>19}  {_f(p['dice_mean']):>7}",
        f"  IoU  {_f(p['iou_pooled']):>19}  {_f(p['iou_mean']):>7}",
        f"  AUROC {_f(p['auroc'])}   AUPRO (FPR <= 0.3) {_f(p['aupro_30'])}   over {p['gt_regions']} regions",
        "",
        f"Image   AUROC {_f(im['auroc'])}   F1 {_f(im['f1'])}   precision {_f(im['precision'])}"
        f"   recall {_f(im['recall'])}   (TP {im['tp']}  FP {im['fp']}  FN {im['fn']}  TN {im['tn']})",
    ]
    if "boxes" in r:
        b = r["boxes"]
        L += ["", f"Boxes   recall {_f(b['recall'])} ({b['found']} / {b['n']})   false blobs {b['false_blobs']}"
                  f" of {b['blobs']} ({_f(b['false_blobs_per_image'], '.2f')} per image)",
              f"        {b['rule']}",
              f"  {'class':<20}{'boxes':>6}{'found':>7}{'recall':>8}"
              + (f"{'same class':>12}" if b["class_aware"] else "")]
        for name, c in b["per_class"].items():
            L.append(f"  {name:<20}{c['n']:>6}{c['found']:>7}{_f(c['recall']):>8}"
                     + (f"{c['found_same_class']:>12}" if b["class_aware"] else ""))
    if "per_type" in r:
        L += ["", f"  {'type':<20}{'images':>7}{'flagged':>8}{'Dice mean':>11}"]
        for name, g in r["per_type"].items():
            L.append(f"  {name:<20}{g['images']:>7}{g['flagged']:>8}{_f(g['dice_mean']):>11}")
    L += ["", f"Timing  {_f(tm['images_per_s'], '.1f')} images/s, {_f(tm['ms_per_tile'], '.1f')} ms per tile"
              f" in the model ({tm['wall_s']:.1f} s)"]
    return "\n".join(L) + "\n"
