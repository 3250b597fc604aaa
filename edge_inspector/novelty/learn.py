"""``edge-inspector learn-good``: a novelty model from good leather alone, on the station, no labels.

    edge-inspector learn-good good.raw [more.raw | good-photos/] --out line-1-novelty.onnx \
        [--station line-1.toml] [--method knn|gauss] [--bank 512] [--budget 0.2]

1. **Units of good leather**: every image of a folder (all of it leather; where a YOLO ``labels/``
   folder sits beside ``images/``, the labelled boxes and one cell around them are left out), or
   every ``UNIT_LINES`` lines of a .raw recording of good hides (leather = the station's hide
   detection, eroded by ``hide_detection.edge_margin_mm``: ``calibrate.hide_mask`` / ``erode_mm``).
   Every ``holdout_every``-th unit (4th by default) is held out to set the threshold; with fewer
   than ``KFOLD_UNITS`` images (no recording) every unit is held out once instead (``holdout_every``
   folds: unit i in fold i mod k), so that 4 good images give the threshold 4 images of evidence.
2. **Features**: the shipped EfficientNet-Lite0 extractor (``features.py``) on the station's tiles,
   one 152-d feature per map cell (16 tile px at the default ``downscale`` 2); leather cells only.
3. **Memory** (bounded, ``bank.py``): ``knn``: a reservoir of at most ``reservoir`` patches, then a
   greedy coreset of ``bank`` patches; ``gauss``: mean and covariance, exact, streamed.
4. **Threshold, no labels**: a first model from the training units scores the held-out units (per
   fold: a model from the other folds) with
   the ``calibrate`` machinery (dense maps as on the station, blobs of at least ``min_area_px``
   counted per m² of leather) and the lowest threshold with at most ``budget`` false blobs per m²
   is taken. Fallback without held-out data (a single image or a short recording): the
   ``FALLBACK_QUANTILE`` of the good patches' distances to the memory (patches the coreset did not
   pick; for the Gaussian, all), said so in the model's metadata and on the terminal.
5. **The model**: the memory of all units (training + held out; the threshold of the first model
   is then slightly conservative), the head and the threshold in one ONNX file (``graph.py``) with
   the model contract; the threshold is 0.5 on its map.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import structlog

from ..calibrate import (POOL, THRESHOLDS, GoodLeather, _image_files, _segments, choose_threshold, erode_mm,
                         hide_mask, pool_max)
from ..config import Station
from ..errors import InputError
from ..tile import column_starts
from .bank import GaussianStats, Reservoir, greedy_coreset
from .features import EMBED_DIM, FeatureExtractor, cell_px
from .graph import THRESHOLD, Head, LeatherMask, ModelSpec, build_model

log = structlog.get_logger(__name__)

METHODS = ("knn", "gauss")
UNIT_LINES = 2048  # a recording is learned in units of this many lines (full width)
MAX_TILE = 2048
FALLBACK_QUANTILE = 0.999
SAMPLE = 20_000  # patches for the map's scale and the fallback quantile
HOLE_FILL_MM = 24.0  # holes in a hide up to about this size are inspected (leather mask closing)
DEFAULT_MM_PER_PX = 0.37
# a defect's edge: where its response falls to this fraction of its own peak (pixel proxy, 4 seeds:
# pooled Dice 0.62-0.65 / 0.53 against 0.36-0.44 down to the threshold; docs/models.md)
PEAK_EXTENT = 0.8
KFOLD_UNITS = 16  # image folders with fewer units: every unit held out once (k-fold), not every k-th


@dataclass
class LearnOptions:
    method: str = "knn"
    # knn: memory bank size (patches); the head costs 152 x bank MACs per cell. 512: the pixel proxy
    # (6 seeds) and the 8K defect recording scored 256, 512 and 1024 alike (docs/models.md)
    bank: int = 512
    reservoir: int = 100_000  # knn: patches sampled from the stream before the coreset
    downscale: int = 2  # input px averaged into one before the extractor (2: 16 px cells)
    budget: float = 0.2  # false blobs per m² of held-out good leather
    holdout_every: int = 4
    mm_per_px: float | None = None  # image folders; default the station camera's, else 0.37
    min_area_px: float | None = None  # default (cell / 2)²
    peak_extent: float = PEAK_EXTENT  # each defect reported down to this fraction of its peak (0: off)
    batch: int = 1  # tiles per extractor / scoring call: 1 is as fast on a CPU and a third of the memory
    seed: int = 0
    threads: int = 0


@dataclass
class Unit:
    """A piece of good leather: an image (H, W, C) uint8 and its leather mask (H, W) bool."""

    name: str
    image: np.ndarray
    leather: np.ndarray
    mm_per_px: float
    mm_per_line: float
    recording: bool = False


@dataclass
class LearnReport:
    out: Path
    method: str
    units: int = 0
    holdout_units: int = 0
    patches: int = 0
    patches_holdout: int = 0
    memory: int = 0
    threshold_source: str = ""
    distance_at_threshold: float = 0.0
    holdout_leather_m2: float = 0.0
    false_per_m2_at_threshold: float | None = None
    within_budget: bool | None = None
    seconds: float = 0.0
    sources: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["out"] = str(self.out)
        return d


# -- good leather ---------------------------------------------------------------------------------


def _labels_for(img: Path) -> Path | None:
    """YOLO layout: .../images/x.jpg -> .../labels/x.txt when that folder exists."""
    if img.parent.name != "images":
        return None
    lab = img.parent.parent / "labels"
    return lab / (img.stem + ".txt") if lab.is_dir() else None


def _image_units(folder: Path, channels: int, mm_per_px: float, cell: int) -> Iterator[Unit]:
    from ..evaluation.datasets import box_pixels, read_image, read_labels

    files = _image_files(folder)
    if not files:
        raise InputError("no images found (png, jpg, bmp, tif, webp)", path=folder)
    for f in files:
        img = read_image(f, channels)
        leather = np.ones(img.shape[:2], bool)
        lab = _labels_for(f)
        if lab is not None:
            _, boxes = read_labels(lab, 10**6)
            for x0, y0, x1, y1 in box_pixels(boxes, img.shape[:2]):
                leather[max(0, y0 - cell) : y1 + cell, max(0, x0 - cell) : x1 + cell] = False
        yield Unit(f.name, img, leather, mm_per_px, mm_per_px)


def _recording_units(path: Path, station: Station) -> Iterator[Unit]:
    from ..recording import open_recording

    reader = open_recording(path, on_warning=lambda w: log.warning("recording", file=str(path), warning=w))
    h = reader.header
    if h.dtype != "uint8":
        raise InputError(f"the recording is {h.dtype}; learn-good reads uint8 recordings", path=path)
    if h.channels != station.camera.channels:
        raise InputError(f"the recording has {h.channels} channel(s), the station's camera {station.camera.channels}",
                         path=path, hint="learn with a recording of this station's camera")
    mm_pooled = min(h.mm_per_px, h.mm_per_line) * POOL
    first = reader.line_range[0]
    for k, seg in enumerate(_segments(reader.blocks(), h.width, h.channels, np.dtype(h.dtype), UNIT_LINES)):
        pooled = erode_mm(hide_mask(seg, station), station.hide_detection.edge_margin_mm, mm_pooled)
        leather = np.repeat(np.repeat(pooled, POOL, 0), POOL, 1)[: len(seg), : h.width]
        yield Unit(f"{path.name}:{first + k * UNIT_LINES}", seg.copy(), leather, h.mm_per_px, h.mm_per_line,
                   recording=True)


def count_units(sources: list[Path]) -> int:
    """How many units the sources hold (for the progress bar)."""
    from ..recording import open_recording

    n = 0
    for s in sources:
        if s.is_dir():
            n += len(_image_files(s))
        elif s.is_file():
            with open_recording(s) as r:
                first, end = r.line_range
                n += -(-(end - first) // UNIT_LINES)
    return n


def iter_units(sources: list[Path], station: Station, opts: LearnOptions, channels: int) -> Iterator[Unit]:
    mm = opts.mm_per_px or station.camera.mm_per_px or DEFAULT_MM_PER_PX
    for s in sources:
        if s.is_dir():
            yield from _image_units(s, channels, mm, cell_px(opts.downscale))
        elif s.is_file():
            yield from _recording_units(s, station)
        else:
            raise InputError("not found: give a .raw recording or a folder of images", path=s)


# -- tiles and patches ----------------------------------------------------------------------------


def unit_tiles(unit: Unit, station: Station, multiple: int) -> tuple[np.ndarray, list[tuple[int, int]], int, int]:
    """The unit as tiles: the station's tiling for recordings, one tile (<= 2048) for images.

    Returns (image padded by mirroring to at least one tile, tile origins, tile size, overlap);
    an image's tile is its longer side rounded up to ``multiple``."""
    img = unit.image
    h, w = img.shape[:2]
    if unit.recording and w >= station.tiling.tile:  # the station's tiles
        tile, overlap = station.tiling.tile, station.tiling.overlap
    else:
        tile = min(MAX_TILE, -(-max(h, w) // multiple) * multiple)
        overlap = min(128, tile // 4) // multiple * multiple
    hp, wp = max(h, tile), max(w, tile)
    if (hp, wp) != (h, w):
        img = cv2.copyMakeBorder(img, 0, hp - h, 0, wp - w, cv2.BORDER_REFLECT_101).reshape(hp, wp, -1)
    origins = [(y, x) for y in column_starts(hp, tile, overlap) for x in column_starts(wp, tile, overlap)]
    return img, origins, tile, overlap


def cell_leather(leather: np.ndarray, y: int, x: int, tile: int, cell: int) -> np.ndarray:
    """(tile / cell)² bool: cells of this tile that are leather all over (outside the image: no)."""
    m = np.zeros((tile, tile), bool)
    part = leather[y : y + tile, x : x + tile]
    m[: part.shape[0], : part.shape[1]] = part
    g = tile // cell
    return m.reshape(g, cell, g, cell).all(axis=(1, 3))


def unit_patches(fx: FeatureExtractor, unit: Unit, station: Station, batch: int) -> Iterator[np.ndarray]:
    """(k, EMBED_DIM) features of the unit's leather cells, a batch of tiles at a time."""
    img, origins, tile, _ = unit_tiles(unit, station, 2 * fx.cell)
    for i in range(0, len(origins), batch):
        part = origins[i : i + batch]
        emb = fx.embed(np.stack([img[y : y + tile, x : x + tile] for y, x in part]))
        rows = [emb[k][cell_leather(unit.leather, y, x, tile, fx.cell)] for k, (y, x) in enumerate(part)]
        yield np.concatenate(rows) if rows else np.zeros((0, EMBED_DIM), np.float32)


# -- the threshold ----------------------------------------------------------------------------------


def score_holdout(model: Any, units: Iterator[Unit], station: Station, multiple: int, min_area_px: float,
                  good: GoodLeather | None = None, batch: int = 1) -> GoodLeather:
    """The calibrate machinery on held-out units: false blobs per threshold and leather area (added
    to ``good`` when given: the folds of a k-fold add up)."""
    from ..evaluation.model_eval import score_image

    good = good if good is not None else GoodLeather()
    for u in units:
        img, _, tile, overlap = unit_tiles(u, station, multiple)
        score, _, n_tiles, _ = score_image(model, img, tile, overlap, batch=batch)
        h, w = u.image.shape[:2]
        score = score[:h, :w]
        good.tiles += n_tiles
        leather = ~pool_max(~u.leather)  # a pooled px is leather when all of it is
        good.add(pool_max(score), leather, u.mm_per_px * u.mm_per_line * POOL * POOL, min_area_px / (POOL * POOL))
    return good


def fold_groups(total: int, every: int, kfold: bool) -> tuple[list[int], list[int]]:
    """(group of each unit, groups that are scored as held out). Groups hold the units' patches
    apart; a scored group is held out from a model of all the other groups. ``kfold``: unit i in
    group i mod k (k = min(every, total)), every group scored; else group 1 = every ``every``-th
    unit, scored, group 0 = the rest. No held-out data: all in group 0, nothing scored."""
    if total < 2 or every < 2:
        return [0] * total, []
    if kfold:
        k = min(every, total)
        return [i % k for i in range(total)], list(range(k))
    group = [1 if i % every == every - 1 else 0 for i in range(total)]
    return group, [1] if 1 in group else []


# -- learn ---------------------------------------------------------------------------------------


def _save(model: onnx.ModelProto, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    onnx.save(model, str(tmp))
    tmp.replace(path)


def learn_good(sources: list[Path], out: Path, station: Station, opts: LearnOptions | None = None,
               progress: Callable[[str, int, int], None] | None = None) -> LearnReport:
    """Learn a novelty model from good leather and write it to ``out`` (see the module doc)."""
    from ..config import ModelCfg
    from ..inference import Model

    opts = opts or LearnOptions()
    if opts.method not in METHODS:
        raise InputError(f"--method must be one of {', '.join(METHODS)}, got {opts.method!r}")
    if opts.bank < 1 or opts.reservoir < opts.bank:
        raise InputError(f"--bank must be >= 1 and <= --reservoir ({opts.reservoir}), got {opts.bank}")
    if opts.downscale not in (1, 2, 4):
        raise InputError(f"--downscale must be 1, 2 or 4, got {opts.downscale}")
    if not 0.0 <= opts.peak_extent < 1.0:
        raise InputError(f"--peak-extent must be a fraction of the peak within 0..1 (0 = off), got {opts.peak_extent:g}")
    if opts.batch < 1:
        raise InputError(f"--batch must be at least 1 tile, got {opts.batch}")
    if opts.budget <= 0:
        raise InputError(f"--budget must be > 0 false defects per m², got {opts.budget:g}")
    if not sources:
        raise InputError("give at least one folder of good-leather images or .raw recording of good hides")
    for s in sources:
        if not s.exists():
            raise InputError("not found: give a .raw recording or a folder of images", path=s)
    t0 = time.perf_counter()
    channels = station.camera.channels
    cell = cell_px(opts.downscale)
    multiple = 2 * cell
    min_area = opts.min_area_px if opts.min_area_px is not None else float((cell // 2) ** 2)
    fx = FeatureExtractor(channels, opts.downscale, opts.threads)
    total = count_units(sources)
    has_recording = any(s.is_file() for s in sources)
    kfold = not has_recording and total < KFOLD_UNITS
    group_of, scored = fold_groups(total, opts.holdout_every, kfold)
    n_groups = max(group_of, default=0) + 1
    rep = LearnReport(out=out, method=opts.method)
    knn = opts.method == "knn"
    cap = opts.reservoir if knn else SAMPLE  # gauss: a sample for the scale and the fallback only
    # one reservoir (and Gaussian statistics) per group, together bounded by ``cap``
    res = [Reservoir(cap if n_groups <= 2 else -(-cap // n_groups), EMBED_DIM, opts.seed + g) for g in range(n_groups)]
    stats = [GaussianStats(EMBED_DIM) for _ in range(n_groups)]
    mm_per_px = opts.mm_per_px or station.camera.mm_per_px or DEFAULT_MM_PER_PX

    # 1-3: patches of every unit into the memory (the groups apart)
    for i, u in enumerate(iter_units(sources, station, opts, channels)):
        g = group_of[i] if i < len(group_of) else 0
        hold = g in scored
        for rows in unit_patches(fx, u, station, opts.batch):
            res[g].add(rows)
            if not knn:
                stats[g].add(rows)
            if hold:
                rep.patches_holdout += len(rows)
            if not hold or kfold:  # k-fold: every unit is also in the other folds' memories
                rep.patches += len(rows)
        rep.units += 1
        if progress:
            progress("features", i + 1, total)
    rep.holdout_units = sum(1 for g in group_of if g in scored)
    if rep.patches < 2:
        raise InputError("no good leather found in the data (no leather patches)", path=sources[0],
                         hint="check [hide_detection] belt_level and threshold, or give images of leather")
    mask = None
    if has_recording:
        cell_mm = mm_per_px * cell
        mask = LeatherMask(list(station.hide_detection.belt_level), station.hide_detection.threshold,
                           fill_cells=int(np.ceil(HOLE_FILL_MM / 2 / cell_mm)),
                           margin_cells=max(1, int(np.ceil(station.hide_detection.edge_margin_mm / cell_mm))))

    def head_from(groups: list[int]) -> tuple[Head, np.ndarray]:
        """The head of these groups' patches, and good patches it was not built from (for the
        fallback quantile)."""
        if knn:
            x = Reservoir.merged([res[g] for g in groups], opts.reservoir, opts.seed)
            idx = greedy_coreset(x, opts.bank, seed=opts.seed,
                                 progress=(lambda d, t: progress("coreset", d, t)) if progress else None)
            rest = np.setdiff1d(np.arange(len(x)), idx)
            return Head("knn", bank=x[idx].copy()), x[rest[:SAMPLE]]
        gs = stats[groups[0]]
        for g in groups[1:]:
            gs = gs.merged(stats[g])
        w, b = gs.whitening()
        return Head("gauss", w=w, b=b), np.concatenate([res[g].sample() for g in groups])[:SAMPLE]

    # 4: the threshold from held-out good leather: each scored group by a model of the others
    everything = list(range(n_groups))
    if scored:
        heads = {g: head_from([o for o in everything if o != g]) for g in scored}
        # the map's scale: the largest sampled held-out distance at 0.5; it doubles while the
        # thresholds up to 0.99 cannot keep to the budget (the sample misses the true maximum)
        d_ref = max((float(heads[g][0].distance(res[g].sample()[:SAMPLE]).max()) for g in scored
                     if res[g].n), default=1.0)
        d_scale = max(d_ref, 1e-6)
        for attempt in range(3):
            good = GoodLeather()
            for g in scored:
                spec_a = ModelSpec(channels, opts.downscale, d_scale, mm_per_px, min_area, mask)
                with tempfile.TemporaryDirectory() as tmp:
                    pa = Path(tmp) / "a.onnx"
                    onnx.save(build_model(heads[g][0], spec_a), str(pa))
                    model_a = Model.load(ModelCfg(path=str(pa), providers=["CPUExecutionProvider"],
                                                  intra_op_threads=opts.threads))
                    held = (u for i, u in enumerate(iter_units(sources, station, opts, channels))
                            if i < len(group_of) and group_of[i] == g)
                    score_holdout(model_a, held, station, multiple, min_area, good, opts.batch)
            if progress:
                progress("threshold", attempt + 1, attempt + 1)
            per_m2 = good.per_m2()
            t, within = choose_threshold(per_m2, opts.budget)
            if within or good.leather_mm2 <= 0:
                break
            d_scale *= 2
        d_thr = t / THRESHOLD * d_scale
        how = (f"{len(scored)}-fold, every unit held out once" if kfold
               else f"every {opts.holdout_every}th unit held out")
        rep.threshold_source = (f"held-out good leather ({how}): lowest threshold with <= {opts.budget:g}"
                                " false blobs per m2")
        rep.holdout_leather_m2 = round(good.leather_mm2 / 1e6, 4)
        k = int(np.nonzero(THRESHOLDS == t)[0][0])
        rep.false_per_m2_at_threshold = round(float(per_m2[k]), 4)
        rep.within_budget = within
        if good.leather_mm2 <= 0:
            unused = heads[scored[0]][1]
            d_thr = float(np.quantile(heads[scored[0]][0].distance(unused), FALLBACK_QUANTILE)) if len(unused) else d_ref
            rep.threshold_source = f"fallback: quantile {FALLBACK_QUANTILE} of good patch distances (no held-out leather)"
        head = head_from(everything)[0]
    else:
        head, unused = head_from(everything)
        d_thr = float(np.quantile(head.distance(unused), FALLBACK_QUANTILE)) if len(unused) else 1.0
        rep.threshold_source = f"fallback: quantile {FALLBACK_QUANTILE} of good patch distances (no held-out data)"

    # 5: the memory of all units, the model
    rep.memory = len(head.bank) if knn else EMBED_DIM
    rep.distance_at_threshold = round(float(d_thr), 5)
    rep.seconds = round(time.perf_counter() - t0, 1)
    rep.sources = [{"path": str(s.resolve()), "kind": "images" if s.is_dir() else "recording"} for s in sources]
    info = {"learn_good": {k: v for k, v in rep.as_dict().items() if k not in ("out", "sources")},
            "peak_extent": opts.peak_extent}
    spec = ModelSpec(channels, opts.downscale, max(d_thr, 1e-6), mm_per_px, min_area, mask, info)
    model = build_model(head, spec)
    model.metadata_props.add(key="edge_inspector.learn_good.sources", value=json.dumps(rep.sources))
    _save(model, out)
    return rep


SPEED_TILES = 3  # timed calls (after one warm-up) of the speed check


def speed_check(path: Path, station: Station) -> tuple[float, float, int]:
    """(tiles/s of the learned model alone on this machine, tiles/s the station's line needs,
    tile px): the station's runtime and providers, one tile at a time, as many side by side as the
    pipeline runs (``Model.parallel``); the speed depends on the CPU as much as on the model
    (docs/models.md: 2.2 against 6.5 tiles/s for the same model on two 2-core hosts)."""
    from concurrent.futures import ThreadPoolExecutor

    from ..bench import needed_tiles_per_s
    from ..config import ModelCfg
    from ..inference import Model

    tile = station.tiling.tile
    c = station.model  # its runtime, not its decoding settings (those are for the station's own model)
    model = Model.load(ModelCfg(path=str(path), providers=c.providers, cpu_runtime=c.cpu_runtime,
                                cpu_precision=c.cpu_precision, intra_op_threads=c.intra_op_threads,
                                cpu_streams=c.cpu_streams))
    x = np.zeros((1, tile, tile, station.camera.channels), np.uint8)
    model.run_raw(x)
    n = max(1, model.parallel)
    with ThreadPoolExecutor(n) as pool:
        t0 = time.perf_counter()
        list(pool.map(lambda _: model.run_raw(x), range(SPEED_TILES * n)))
        secs = time.perf_counter() - t0
    return SPEED_TILES * n / max(secs, 1e-9), needed_tiles_per_s(station), tile


def format_speed(tps: float, needed: float, tile: int, opts: LearnOptions) -> str:
    """The speed check's line: what the model does here against what the line needs, and what
    would make it faster (factors measured on a 2-core AVX-512 host, docs/models.md)."""
    line = (f"  speed          {tps:.2f} tiles/s of {tile} px here (the model alone); the station's line needs"
            f" {needed:.2f}")
    if tps >= needed:
        return line + f": headroom {tps / needed:.2f}"
    knn = opts.method == "knn"
    tips = ((["--bank 256 (1.0-1.1x)"] if knn and opts.bank > 256 else [])
            + (["--downscale 4 (3x; 32 px cells: small defects fade)"] if opts.downscale < 4 else [])
            + (["--method gauss (1.1x; lower Dice on the pixel proxy)"] if knn else []))
    return (line + f": NOT enough here ({tps / needed:.2f} of it)." + (f" Faster: {', '.join(tips)}." if tips else "")
            + " Measure on the station's own PC: edge-inspector bench --model ...")


def format_report(rep: LearnReport) -> str:
    lines = [
        f"learn-good ({rep.method}): {rep.units} units of good leather, {rep.patches:,} training patches,"
        f" {rep.patches_holdout:,} held out ({rep.holdout_units} units), {rep.seconds:.1f} s",
        f"  memory         {rep.memory} {'patches (coreset)' if rep.method == 'knn' else 'dimensions (one Gaussian)'}",
        f"  threshold      {rep.threshold_source}",
        f"                 distance {rep.distance_at_threshold:g} = {THRESHOLD:g} on the anomaly map",
    ]
    if rep.false_per_m2_at_threshold is not None:
        lines.append(f"  held out       {rep.holdout_leather_m2:.4f} m2 of leather, {rep.false_per_m2_at_threshold:g}"
                     f" false blobs per m2 at the threshold" + ("" if rep.within_budget else " (budget NOT met)"))
    lines.append(f"wrote {rep.out}")
    return "\n".join(lines)
