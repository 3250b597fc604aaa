"""Training patches for the default model, from three sources (see docs/models.md).

Every sample is (image uint8 (P, P, 3), mask uint8 (P, P): 0 background, k = class k-1, 255 ignore,
boxes float32 (B, 5): x0, y0, x1, y1, class of weak box labels in patch px, source id).

1. ``SynthPatches``: the station's own synthetic hides (edge_inspector.synth) at 0.37 mm/px with
   exact class masks; patches near defects and anywhere on hides, also across the hide edge.
2. ``RealTexturePatches``: real leather photographs (a YOLO-layout set) with synthetic defects
   pasted in at a random scale (the photos have no known mm per pixel: 0.2-0.6 mm/px assumed);
   exact masks for the pasted defects; the photo's own labelled boxes are "ignore".
3. ``RealBoxPatches``: the same photos with their labelled defects as weak labels: the box is
   handed to the box-projection loss, pixels outside every box are background.

Augmentation (``augment``): flips and 90-degree turns, scale, per-channel gain (colour),
brightness and an illumination gradient (line-scan fall-off), a little blur and noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..classes import DEFECT_CLASSES, SYNONYMS
from ..synth import SynthConfig, generate_blocks, make_defect

IGNORE = 255
SOURCES = ("synthetic", "real_texture", "real_boxes")


def read_yolo_names(root: Path) -> list[str]:
    """Class names from ``data.yaml`` (``names: [...]``), without a YAML dependency."""
    for line in (root / "data.yaml").read_text(encoding="utf-8").splitlines():
        if line.strip().startswith("names:"):
            inner = line.split(":", 1)[1].strip().strip("[]")
            return [n.strip().strip("'\"") for n in inner.split(",") if n.strip()]
    raise ValueError(f"{root / 'data.yaml'}: no 'names:' line")


def _same_as(name: str) -> str | None:
    """The synthetic class a real class name is the same defect as (``classes.SYNONYMS``), or None."""
    return SYNONYMS.get(name.strip().lower())


def class_list(real_names: list[str]) -> list[str]:
    """The model's classes: the synthetic generator's, then the real set's that are not synonyms of
    one of them (``SYNONYMS``: Hole = hole, Scratch = scratch, Crease = wrinkle)."""
    return list(DEFECT_CLASSES) + [n for n in real_names if n not in DEFECT_CLASSES and _same_as(n) is None]


def real_class_index(real_names: list[str], classes: list[str]) -> np.ndarray:
    """Model class index of every class id of the real set (synonyms fold into synthetic classes)."""
    return np.array([classes.index(_same_as(n) or n) for n in real_names], np.int64)


@dataclass
class Sample:
    image: np.ndarray
    mask: np.ndarray
    boxes: np.ndarray  # (B, 5) x0, y0, x1, y1, class index (model classes)
    source: int


# ----------------------------------------------------------------------------- synthetic hides


class SynthPatches:
    """Patches of rendered synthetic hides with exact class masks (held in memory).

    ``width`` 8192 renders the station's own geometry (the synthetic generator's defaults, as in
    ``make run``, with other seeds); narrower widths shrink the hides to fit.
    """

    SMALL_PX = 10  # defects at most this many px across (3.7 mm) are "small"

    def __init__(self, seeds: list[int], width: int = 8192, hides: int = 3, patch: int = 256) -> None:
        self.patch = patch
        self.images: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []
        pools: dict[str, list[np.ndarray]] = {k: [] for k in ("defect", "small", "edge", "hide")}
        for seed in seeds:
            if width >= 8192:
                cfg = SynthConfig(hides=hides, seed=seed, width=width, defects_per_hide=(14, 28))
            else:
                belt_mm = width * 0.37 - 100
                cfg = SynthConfig(hides=hides, seed=seed, width=width, defects_per_hide=(14, 28),
                                  hide_width_mm=(min(1000.0, 0.6 * belt_mm), belt_mm), gap_lines=(200, 300),
                                  hide_length_mm=(min(1600.0, 2 * belt_mm), min(2600.0, 3 * belt_mm)))
            stream = generate_blocks(cfg)
            img = np.concatenate([b.lines for b in stream])
            mask = np.zeros(img.shape[:2], np.uint8)
            hide = np.zeros(img.shape[:2], np.uint8)
            for (hid, cm), (_, hm) in zip(stream.class_masks(), stream.hide_masks()):
                h = next(h for h in stream.hides if h.hide_id == hid)
                sl = slice(h.first_line, h.first_line + cm.shape[0])
                mask[sl] = np.maximum(mask[sl], cm)
                hide[sl] |= (hm == 1)
            i = len(self.images)
            self.images.append(img)
            self.masks.append(mask)

            def pool(ys: np.ndarray, xs: np.ndarray, cap: int = 20000) -> np.ndarray:
                keep = slice(None, None, max(1, len(ys) // cap))
                return np.stack([np.full(len(ys[keep]), i), ys[keep], xs[keep]], 1)

            pools["defect"].append(pool(*np.nonzero(mask)))
            n, lab, st, _ = cv2.connectedComponentsWithStats((mask > 0).view(np.uint8), connectivity=8)
            small = np.flatnonzero(np.maximum(st[1:, cv2.CC_STAT_WIDTH], st[1:, cv2.CC_STAT_HEIGHT]) <= self.SMALL_PX)
            pools["small"].append(pool((st[small + 1, cv2.CC_STAT_TOP] + st[small + 1, cv2.CC_STAT_HEIGHT] // 2),
                                       (st[small + 1, cv2.CC_STAT_LEFT] + st[small + 1, cv2.CC_STAT_WIDTH] // 2)))
            h16 = hide[::16, ::16]
            pools["hide"].append(pool(*(np.array(np.nonzero(h16)) * 16)))
            # the hide's outline (leather against belt) and the thin, darker leather along it:
            # the places a model learns to call "defect" when it never saw them as good
            h4 = hide[::4, ::4]
            edge = cv2.morphologyEx(h4, cv2.MORPH_GRADIENT, np.ones((5, 5), np.uint8))
            pools["edge"].append(pool(*(np.array(np.nonzero(edge)) * 4)))
        self.pools = {k: np.concatenate(v) for k, v in pools.items()}
        if not len(self.pools["small"]):
            self.pools["small"] = self.pools["defect"]

    # share of patches centred on: any defect, a small defect, the hide outline, the hide; the rest anywhere
    MIX = (("defect", 0.25), ("small", 0.12), ("edge", 0.2), ("hide", 0.18))

    def sample(self, rng: np.random.Generator, scale: float = 1.0) -> Sample:
        u = rng.random()
        size = int(round(self.patch * scale))
        where = None
        for name, share in self.MIX:
            if u < share:
                where = name
                break
            u -= share
        if where is not None and len(self.pools[where]):
            pool = self.pools[where]
            i, y, x = pool[rng.integers(len(pool))]
        else:
            i = int(rng.integers(len(self.images)))
            y, x = (int(rng.integers(0, d - size + 1)) + size // 2 for d in self.images[i].shape[:2])
        img, mask = self.images[i], self.masks[i]
        y0 = int(np.clip(y - rng.integers(size // 8, size - size // 8), 0, img.shape[0] - size))
        x0 = int(np.clip(x - rng.integers(size // 8, size - size // 8), 0, img.shape[1] - size))
        im = img[y0:y0 + size, x0:x0 + size]
        m = mask[y0:y0 + size, x0:x0 + size]
        if size != self.patch:
            im = cv2.resize(im, (self.patch, self.patch), interpolation=cv2.INTER_AREA)
            m = cv2.resize(m, (self.patch, self.patch), interpolation=cv2.INTER_NEAREST)
        return Sample(np.ascontiguousarray(im), np.ascontiguousarray(m), np.zeros((0, 5), np.float32), 0)


# ------------------------------------------------------------------------------ real photographs


def load_yolo_split(root: Path, split: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(image RGB uint8, boxes (B, 5) px x0 y0 x1 y1 class)] of a YOLO-layout split."""
    out = []
    for p in sorted((root / split / "images").iterdir()):
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            continue
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        h, w = img.shape[:2]
        rows = []
        lp = root / split / "labels" / f"{p.stem}.txt"
        if lp.is_file():
            for line in lp.read_text().split("\n"):
                v = line.split()
                if len(v) == 5:
                    c, cx, cy, bw, bh = int(v[0]), *map(float, v[1:])
                    rows.append([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h, c])
        out.append((img, np.array(rows, np.float32).reshape(-1, 5)))
    return out


def _crop_scaled(img: np.ndarray, boxes: np.ndarray, patch: int, scale: float,
                 rng: np.random.Generator, centre: tuple[float, float] | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Resize by ``scale`` and cut a patch (around ``centre`` when given); boxes follow."""
    h, w = img.shape[:2]
    nh, nw = max(patch, int(round(h * scale))), max(patch, int(round(w * scale)))
    sy, sx = nh / h, nw / w
    im = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    b = boxes.copy()
    b[:, [0, 2]] *= sx
    b[:, [1, 3]] *= sy
    if centre is None:
        y0, x0 = int(rng.integers(0, nh - patch + 1)), int(rng.integers(0, nw - patch + 1))
    else:
        cx, cy = centre[0] * sx, centre[1] * sy
        x0 = int(np.clip(cx - rng.integers(patch // 6, patch - patch // 6), 0, nw - patch))
        y0 = int(np.clip(cy - rng.integers(patch // 6, patch - patch // 6), 0, nh - patch))
    b[:, [0, 2]] -= x0
    b[:, [1, 3]] -= y0
    b[:, :4] = np.clip(b[:, :4], 0, patch)
    keep = ((b[:, 2] - b[:, 0]) >= 2) & ((b[:, 3] - b[:, 1]) >= 2)
    return np.ascontiguousarray(im[y0:y0 + patch, x0:x0 + patch]), b[keep]


def photo_scale(rng: np.random.Generator) -> float:
    """Resize factor of a real photograph (640 px, unknown mm/px): mostly near its own scale, which
    is how ``eval-model`` and a station camera of similar resolution see it (grain pores included)."""
    return float(rng.uniform(0.7, 1.1))


class RealBoxPatches:
    """Real photographs with their labelled boxes as weak labels."""

    def __init__(self, items: list[tuple[np.ndarray, np.ndarray]], class_index: np.ndarray, patch: int = 256) -> None:
        self.items = items
        self.class_index = np.asarray(class_index)  # real class id -> model class index
        self.patch = patch

    def sample(self, rng: np.random.Generator, scale: float = 1.0) -> Sample:
        img, boxes = self.items[rng.integers(len(self.items))]
        centre = None
        if len(boxes) and rng.random() < 0.8:
            b = boxes[rng.integers(len(boxes))]
            centre = (0.5 * (b[0] + b[2]), 0.5 * (b[1] + b[3]))
        s = scale * photo_scale(rng)
        im, b = _crop_scaled(img, boxes, self.patch, s, rng, centre)
        b[:, 4] = self.class_index[b[:, 4].astype(np.int64)]
        mask = np.zeros((self.patch, self.patch), np.uint8)
        for x0, y0, x1, y1, _ in b:  # box interiors: left to the projection loss
            mask[int(y0):int(math.ceil(y1)), int(x0):int(math.ceil(x1))] = IGNORE
        return Sample(im, mask, b.astype(np.float32), 2)


class RealTexturePatches:
    """Real leather texture with synthetic defects pasted in (exact masks); real boxes ignored."""

    def __init__(self, items: list[tuple[np.ndarray, np.ndarray]], patch: int = 256) -> None:
        self.items = items
        self.patch = patch

    def sample(self, rng: np.random.Generator, scale: float = 1.0) -> Sample:
        img, boxes = self.items[rng.integers(len(self.items))]
        s = scale * photo_scale(rng)
        im, b = _crop_scaled(img, boxes, self.patch, s, rng)
        im = im.astype(np.float32)
        mask = np.zeros((self.patch, self.patch), np.uint8)
        for x0, y0, x1, y1, _ in b:
            mask[int(y0):int(math.ceil(y1)), int(x0):int(math.ceil(x1))] = IGNORE
        mm_per_px = rng.uniform(0.2, 0.6) / scale
        base = im.reshape(-1, 3).mean(0)
        for _ in range(int(rng.integers(1, 4))):
            cls = DEFECT_CLASSES[rng.integers(len(DEFECT_CLASSES))]
            d = make_defect(cls, rng, mm_per_px, mm_per_px, base, small=bool(rng.random() < 0.3))
            if d.h >= self.patch or d.w >= self.patch:
                continue
            y0, x0 = int(rng.integers(0, self.patch - d.h)), int(rng.integers(0, self.patch - d.w))
            sub = im[y0:y0 + d.h, x0:x0 + d.w]
            s3 = d.s[..., None]
            if d.mode == "blend":
                sub += (s3 * d.alpha) * (d.target[None, None, :3] - sub)
            elif d.mode == "mul":
                sub *= 1.0 + d.amp * s3
            else:  # a hole: the dark belt shows through
                sub[d.mask] = rng.uniform(25, 50, 3)
            mask[y0:y0 + d.h, x0:x0 + d.w][d.mask] = DEFECT_CLASSES.index(cls) + 1
        return Sample(np.clip(im, 0, 255).astype(np.uint8), mask, np.zeros((0, 5), np.float32), 1)


# --------------------------------------------------------------------------------- augmentation


def augment(s: Sample, rng: np.random.Generator) -> Sample:
    """Flips and 90-degree turns, colour gain, brightness, illumination gradient, blur, noise."""
    img, mask, boxes = s.image, s.mask, s.boxes.copy()
    p = img.shape[0]
    k = int(rng.integers(4))
    if k:
        img, mask = np.rot90(img, k), np.rot90(mask, k)
        for _ in range(k):  # (x, y) -> (y, p - x) for one counter-clockwise turn
            boxes[:, :4] = np.stack([boxes[:, 1], p - boxes[:, 2], boxes[:, 3], p - boxes[:, 0]], 1)
    if rng.random() < 0.5:
        img, mask = img[:, ::-1], mask[:, ::-1]
        boxes[:, [0, 2]] = p - boxes[:, [2, 0]]
    f = img.astype(np.float32)
    gain = rng.uniform(0.75, 1.25) * rng.uniform(0.88, 1.12, 3)
    ramp = np.linspace(-1, 1, p, dtype=np.float32)
    grad = 1.0 + rng.uniform(-0.2, 0.2) * (ramp[None, :] if rng.random() < 0.5 else ramp[:, None])
    f = f * gain[None, None, :] * grad[..., None] + rng.uniform(-20, 20)
    if rng.random() < 0.3:
        f = cv2.GaussianBlur(f, (0, 0), rng.uniform(0.4, 1.0))
    if rng.random() < 0.5:
        f += rng.normal(0, rng.uniform(1, 5), f.shape).astype(np.float32)
    img = np.clip(f, 0, 255).astype(np.uint8)
    return Sample(np.ascontiguousarray(img), np.ascontiguousarray(mask), boxes, s.source)
