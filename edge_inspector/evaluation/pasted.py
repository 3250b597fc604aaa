"""A pixel-exact proxy for real leather: synthetic defects pasted into defect-free crops of real
photos, written as an MVTec AD dataset that ``eval-model`` and ``learn-good`` read.

Real leather with pixel masks is what stations are judged on, but the real set here has boxes
only. This builds the next best thing from it: crops of the photos that touch no labelled box
(real texture, grain and lighting; no labelled defect), into which the synthetic generator's
defects (``synth.make_defect``: holes, cuts, scratches, dots, streaks, wrinkles, tick bites,
brands; 1-80 mm at 0.2-0.6 mm/px, the photos have no known scale) are pasted with exact masks::

    python -m edge_inspector.evaluation.pasted ../shared/datasets/leather-defects-yolo --split val \\
        --out out/pasted-val

    out/pasted-val/train/good/*.png         good crops of the first --train-photos photos (learn-good)
    out/pasted-val/test/good/*.png          good crops of the other photos
    out/pasted-val/test/<class>/*.png       the same kind of crops with 1-2 pasted defects
    out/pasted-val/ground_truth/<class>/*_mask.png

Train and test crops come from different photos. The crops are box-free, not guaranteed
defect-free: an unlabelled real flaw in a "good" crop counts against the model. Deterministic for
a given ``--seed``. The photos' own defects (creases, growth marks...) are not in this set: it
measures outlines of sharp, pasted defects on real texture, not the real classes' look.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import cv2
import numpy as np

from ..classes import DEFECT_CLASSES
from ..errors import InputError
from ..synth import make_defect

MARGIN = 8  # px kept between a crop and any labelled box


def _photos(root: Path, split: str) -> list[tuple[Path, np.ndarray, np.ndarray]]:
    """[(path, RGB image, boxes (k, 4) px)] of a YOLO split, sorted by name."""
    images = root / split / "images"
    if not images.is_dir():
        raise InputError(f"{images}: no such folder (a YOLO dataset: <root>/<split>/images, labels)")
    out = []
    for p in sorted(images.iterdir()):
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            continue
        h, w = img.shape[:2]
        rows = []
        lp = root / split / "labels" / f"{p.stem}.txt"
        if lp.is_file():
            for n, line in enumerate(lp.read_text().splitlines(), 1):
                v = line.split()
                if not v:
                    continue
                if len(v) != 5:
                    raise InputError(f"{lp}:{n}: expected 'class cx cy w h', got {line!r}")
                cx, cy, bw, bh = map(float, v[1:])
                rows.append([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h])
        out.append((p, cv2.cvtColor(img, cv2.COLOR_BGR2RGB), np.array(rows, np.float64).reshape(-1, 4)))
    return out


def free_crops(img: np.ndarray, boxes: np.ndarray, size: int, step: int) -> list[tuple[int, int]]:
    """Top-left corners (y, x) of ``size`` crops on a ``step`` grid that keep ``MARGIN`` px off every box."""
    h, w = img.shape[:2]
    busy = np.zeros((h, w), np.uint8)
    for x0, y0, x1, y1 in boxes:
        busy[max(0, int(y0) - MARGIN):int(math.ceil(y1)) + MARGIN, max(0, int(x0) - MARGIN):int(math.ceil(x1)) + MARGIN] = 1
    integral = cv2.integral(busy)
    out = []
    for y in range(0, h - size + 1, step):
        for x in range(0, w - size + 1, step):
            if integral[y + size, x + size] - integral[y, x + size] - integral[y + size, x] + integral[y, x] == 0:
                out.append((y, x))
    return out


def paste(crop: np.ndarray, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, str]:
    """``n`` synthetic defects pasted into ``crop`` (RGB uint8): (image, mask uint8 0/255, first class)."""
    im = crop.astype(np.float32)
    size = im.shape[0]
    mask = np.zeros(im.shape[:2], np.uint8)
    base = im.reshape(-1, 3).mean(0)
    first = ""
    tries = 0
    while n and tries < 50:
        tries += 1
        cls = DEFECT_CLASSES[int(rng.integers(len(DEFECT_CLASSES)))]
        mm = float(rng.uniform(0.2, 0.6))
        d = make_defect(cls, rng, mm, mm, base, small=bool(rng.random() < 0.3))
        if d.h >= size - 4 or d.w >= size - 4 or not d.mask.any():
            continue
        y0, x0 = int(rng.integers(2, size - d.h - 1)), int(rng.integers(2, size - d.w - 1))
        sub = im[y0:y0 + d.h, x0:x0 + d.w]
        s3 = d.s[..., None]
        if d.mode == "blend":
            sub += (s3 * d.alpha) * (d.target[None, None, :3] - sub)
        elif d.mode == "mul":
            sub *= 1.0 + d.amp * s3
        else:  # a hole: something dark shows through
            sub[d.mask] = rng.uniform(25, 50, 3)
        mask[y0:y0 + d.h, x0:x0 + d.w][d.mask] = 255
        first = first or cls
        n -= 1
    return np.clip(im, 0, 255).astype(np.uint8), mask, first


def build(root: Path, split: str, out: Path, *, size: int = 256, per_photo: int = 2, train_photos: int = 4,
          good_share: float = 0.3, seed: int = 0) -> dict[str, int]:
    """Write the MVTec-layout proxy (see module doc); returns counts per folder."""
    rng = np.random.default_rng(seed)
    photos = _photos(root, split)
    if not photos:
        raise InputError(f"{root / split / 'images'}: no readable images")
    counts: dict[str, int] = {}

    def write(folder: Path, name: str, img: np.ndarray) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if img.ndim == 3 else img)

    n_train = 0
    for i, (p, img, boxes) in enumerate(photos):
        spots = free_crops(img, boxes, size, max(16, size // 8))
        if not spots:
            continue
        picks = [spots[int(k)] for k in rng.choice(len(spots), min(per_photo, len(spots)), replace=False)]
        for j, (y, x) in enumerate(picks):
            crop = img[y:y + size, x:x + size]
            name = f"{p.stem}_{j}.png"
            if n_train < train_photos:
                write(out / "train" / "good", name, crop)
                counts["train/good"] = counts.get("train/good", 0) + 1
                continue
            if rng.random() < good_share:
                write(out / "test" / "good", name, crop)
                counts["test/good"] = counts.get("test/good", 0) + 1
                continue
            im, mask, cls = paste(crop, rng, int(rng.integers(1, 3)))
            if not cls:
                continue
            write(out / "test" / cls, name, im)
            write(out / "ground_truth" / cls, f"{Path(name).stem}_mask.png", mask)
            counts[f"test/{cls}"] = counts.get(f"test/{cls}", 0) + 1
        if n_train < train_photos:
            n_train += 1
    (out / "pasted.json").write_text(json.dumps(
        {"source": str(root), "split": split, "size": size, "per_photo": per_photo, "train_photos": train_photos,
         "good_share": good_share, "seed": seed, "counts": counts}, indent=1))
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edge_inspector.evaluation.pasted", description=__doc__.split("\n\n")[0])
    ap.add_argument("root", type=Path, help="YOLO dataset root (<root>/<split>/images, labels)")
    ap.add_argument("--split", default="val")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--size", type=int, default=256, help="crop size in px (default 256)")
    ap.add_argument("--per-photo", type=int, default=2, help="crops per photo (default 2)")
    ap.add_argument("--train-photos", type=int, default=4, help="photos whose crops form train/good (default 4)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    try:
        counts = build(a.root, a.split, a.out, size=a.size, per_photo=a.per_photo, train_photos=a.train_photos,
                       seed=a.seed)
    except InputError as e:
        print(f"pasted: {e}", file=sys.stderr)
        return 2
    print(f"{a.out}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
