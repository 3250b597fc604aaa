"""Image datasets for ``edge-inspector eval-model``: layouts, labels, images and ground truth.

Datasets (``find_dataset``; ``--layout auto`` tries MVTec AD, then YOLO)
    MVTec AD  ``<root>/<split>/<type>/*.png`` (split ``test`` unless ``--split``; ``good`` = no
              defect) with masks ``<root>/ground_truth/<type>/<stem>_mask.png`` (> 0 = defect).
    YOLO      ``<root>/[<split>/]images/*`` with ``<root>/[<split>/]labels/<stem>.txt``, lines
              ``cls cx cy w h`` normalised to the image (missing or empty file: no defect);
              class names from ``<root>/data.yaml`` ``names`` when present. ``--split`` defaults
              to ``val``, else ``test``, else the root itself. Boxes are rasterised to the pixels
              they touch; their union is the *box-mask (weak)*: boxes over-cover defects, so pixel
              figures against it are a lower bound, reported under that label.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..errors import InputError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
LAYOUTS = ("auto", "mvtec", "yolo")


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


def subset(samples: list[Sample], limit: int | None) -> list[Sample]:
    """``limit`` samples evenly spaced over the sorted list (all groups represented), or all."""
    if limit is None or limit >= len(samples):
        return samples
    if limit < 1:
        raise InputError(f"--limit must be at least 1, got {limit}")
    idx = np.linspace(0, len(samples) - 1, limit).round().astype(int)
    return [samples[i] for i in idx]
