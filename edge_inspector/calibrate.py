"""``edge-inspector calibrate``: a station's operating point from known-good leather.

At commissioning a station runs its model over leather known to be good (a .raw recording of good
hides, or a folder of images of good leather), optionally also over a few labelled defect images,
and picks the lowest score threshold at which the model reports at most ``budget`` false defects per
m² of good leather (default 0.2 /m²). The result goes into ``<station>.calibration.json`` next to
the station file: what it ran on, the score distribution on good leather, the trade-off table
(false defects /m² and, with defect images, recall per threshold) and the chosen threshold.

``replay`` and ``run`` apply it (``apply_calibration``) unless the station file sets
``[model] score_threshold`` itself, and only for the model it was made for (path and SHA-256);
the run summary says which threshold was in force and where it came from.

How false defects are counted: the model's dense score map (its first stage, as ``eval-model``
uses it) is max-pooled by ``POOL``; at each threshold, 8-connected blobs of at least the model's
``min_area_px`` on good leather count as false defects. In a recording, good leather is where the
station's hide detection sees hide (mean |pixel - belt_level| > threshold), eroded by
``hide_detection.edge_margin_mm`` as the station does not report defects on the hide outline; an
image is leather all over. A blob crossing the border of two scoring segments of a long recording
counts twice (conservative). Recall on defect images: a labelled box (or mask region) is found at
threshold t when the model's score inside it reaches t.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import structlog

from .config import Station
from .errors import InputError
from .inference.components import core_extent_count

log = structlog.get_logger(__name__)

CAL_VERSION = 1
POOL = 4  # score maps are kept max-pooled by this factor
THRESHOLDS = np.round(np.arange(0.05, 1.0, 0.01), 2)
DEFAULT_BUDGET_PER_M2 = 0.2
SEGMENT_LINES = 16384  # a recording is scored in segments of this many lines (bounded memory)
HIST_BINS = 100


def calibration_path(station_path: str | Path) -> Path:
    """``line-1.toml`` -> ``line-1.calibration.json`` in the same folder."""
    p = Path(station_path)
    return p.with_name(p.stem + ".calibration.json")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# -- good leather -----------------------------------------------------------------------------


@dataclass
class GoodLeather:
    """Blob counts per threshold on good leather, the leather area and the score histogram."""

    false_blobs: np.ndarray = field(default_factory=lambda: np.zeros(len(THRESHOLDS), np.int64))
    leather_mm2: float = 0.0
    hist: np.ndarray = field(default_factory=lambda: np.zeros(HIST_BINS, np.int64))  # pooled px on leather
    sources: list[dict[str, Any]] = field(default_factory=list)
    tiles: int = 0
    # a model decoded by core and extent (``inference.components``): count its defects the way the
    # station reports them; else components of the score at or above the threshold
    extent: float | None = None

    def add(self, score: np.ndarray, leather: np.ndarray, mm2_per_px: float, min_area_px: float) -> None:
        """One pooled score map (H, W) float and its leather mask (H, W) bool."""
        if not leather.any():
            return
        self.leather_mm2 += float(leather.sum()) * mm2_per_px
        s = np.where(leather, score, -1.0).astype(np.float32)
        self.hist += np.histogram(s[leather], bins=HIST_BINS, range=(0.0, 1.0))[0]
        for i, t in enumerate(THRESHOLDS):
            above = (s >= t).astype(np.uint8)
            if not above.any():
                break  # higher thresholds find nothing either
            if self.extent is not None:
                self.false_blobs[i] += core_extent_count(s, float(t), self.extent, min_area_px)
                continue
            n, _, stats, _ = cv2.connectedComponentsWithStats(above, connectivity=8)
            self.false_blobs[i] += int((stats[1:, cv2.CC_STAT_AREA] >= min_area_px).sum())

    def per_m2(self) -> np.ndarray:
        m2 = self.leather_mm2 / 1e6
        return self.false_blobs / m2 if m2 > 0 else np.full(len(THRESHOLDS), np.inf)

    def quantiles(self) -> dict[str, float]:
        """Score quantiles of good-leather pixels (pooled), from the histogram."""
        c = np.cumsum(self.hist)
        if not c[-1]:
            return {}
        out = {}
        for q in (0.5, 0.9, 0.99, 0.999, 0.9999):
            k = int(np.searchsorted(c, q * c[-1]))
            out[f"q{q:g}"] = round((k + 1) / HIST_BINS, 3)
        return out


def pool_max(a: np.ndarray, k: int = POOL) -> np.ndarray:
    """(H, W) -> (ceil(H/k), ceil(W/k)) block maximum."""
    h, w = a.shape
    hp, wp = -(-h // k) * k, -(-w // k) * k
    if (hp, wp) != (h, w):
        a = np.pad(a, ((0, hp - h), (0, wp - w)), constant_values=a.min() if a.size else 0)
    return a.reshape(hp // k, k, wp // k, k).max(axis=(1, 3))


def pool_mean(a: np.ndarray, k: int = POOL) -> np.ndarray:
    h, w = a.shape
    hp, wp = -(-h // k) * k, -(-w // k) * k
    if (hp, wp) != (h, w):
        a = np.pad(a, ((0, hp - h), (0, wp - w)), mode="edge")
    return a.reshape(hp // k, k, wp // k, k).mean(axis=(1, 3))


def hide_mask(lines: np.ndarray, station: Station) -> np.ndarray:
    """Pooled (H/POOL, W/POOL) bool: hide, by the station's hide-detection rule."""
    hd = station.hide_detection
    level = np.asarray(hd.belt_level, np.float32).reshape(1, 1, -1)
    diff = np.abs(lines.astype(np.float32) - level).mean(axis=2)
    mask = pool_mean(diff) > hd.threshold
    return mask


def erode_mm(mask: np.ndarray, margin_mm: float, mm_per_pooled_px: float) -> np.ndarray:
    r = int(round(margin_mm / mm_per_pooled_px)) if mm_per_pooled_px > 0 else 0
    if r <= 0 or not mask.any():
        return mask
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return cv2.erode(mask.astype(np.uint8), k, borderValue=0).astype(bool)


def _segments(blocks: Iterator[Any], width: int, channels: int, dtype: np.dtype, seg: int) -> Iterator[np.ndarray]:
    """Consecutive (<= seg, width, channels) arrays of a recording's lines."""
    buf = np.empty((seg, width, channels), dtype)
    n = 0
    for b in blocks:
        lines = b.lines
        i = 0
        while i < len(lines):
            take = min(seg - n, len(lines) - i)
            buf[n : n + take] = lines[i : i + take]
            n += take
            i += take
            if n == seg:
                yield buf
                n = 0
    if n:
        yield buf[:n]


def score_recording(model: Any, station: Station, path: Path, good: GoodLeather,
                    progress: Callable[[int, int], None] | None = None) -> None:
    """Good leather of a .raw recording: hides found by the station's hide detection."""
    from .evaluation.model_eval import score_image
    from .recording import open_recording

    reader = open_recording(path, on_warning=lambda w: log.warning("recording", file=str(path), warning=w))
    h = reader.header
    cam = station.camera
    if (h.width, h.channels, h.dtype) != (cam.width, cam.channels, cam.dtype):
        raise InputError(f"the recording is {h.width} px x {h.channels} ch {h.dtype}, the station's camera"
                         f" {cam.width} px x {cam.channels} ch {cam.dtype}", path=path,
                         hint="calibrate with a recording of this station's camera")
    first, end = reader.line_range
    total = max(1, end - first)
    tile, overlap = station.tiling.tile, station.tiling.overlap
    mm2 = h.mm_per_px * h.mm_per_line * POOL * POOL
    mm_pooled = min(h.mm_per_px, h.mm_per_line) * POOL
    done = 0
    for seg in _segments(reader.blocks(), h.width, h.channels, np.dtype(h.dtype), SEGMENT_LINES):
        score, _, n_tiles, _ = score_image(model, seg, tile, overlap, batch=station.model.batch or 4)
        good.tiles += n_tiles
        leather = erode_mm(hide_mask(seg, station), station.hide_detection.edge_margin_mm, mm_pooled)
        good.add(pool_max(score), leather, mm2, model.min_area_px / (POOL * POOL))
        done += len(seg)
        if progress is not None:
            progress(done, total)
    good.sources.append({"kind": "recording", "path": str(path.resolve()), "lines": done,
                         "mm_per_px": h.mm_per_px, "mm_per_line": h.mm_per_line})


def _image_files(folder: Path) -> list[Path]:
    from .evaluation.datasets import IMAGE_EXTS

    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def score_images(model: Any, folder: Path, mm_per_px: float, good: GoodLeather, channels: int,
                 progress: Callable[[int, int], None] | None = None) -> None:
    """Good leather photos: every pixel of every image is leather."""
    from .evaluation.datasets import read_image
    from .evaluation.model_eval import auto_tile, score_image

    files = _image_files(folder)
    if not files:
        raise InputError("no images found (png, jpg, bmp, tif, webp)", path=folder)
    mm2 = mm_per_px * mm_per_px * POOL * POOL
    for i, f in enumerate(files):
        img = read_image(f, channels)
        tile = auto_tile(model, img.shape[:2])
        score, _, n_tiles, _ = score_image(model, img, tile, min(128, tile // 4))
        good.tiles += n_tiles
        pooled = pool_max(score)
        good.add(pooled, np.ones(pooled.shape, bool), mm2, model.min_area_px / (POOL * POOL))
        if progress is not None:
            progress(i + 1, len(files))
    good.sources.append({"kind": "images", "path": str(folder.resolve()), "images": len(files),
                         "mm_per_px": mm_per_px})


def defect_recall(model: Any, root: Path, channels: int) -> tuple[np.ndarray, int]:
    """Recall per threshold on labelled defect images (YOLO boxes or MVTec masks): (recall, n)."""
    from .evaluation.datasets import find_dataset, ground_truth, read_image
    from .evaluation.model_eval import auto_tile, score_image

    ds = find_dataset(root)
    peaks: list[float] = []
    for s in ds.samples:
        img = read_image(s.image, channels)
        hw = img.shape[:2]
        mask, _, boxes = ground_truth(s, hw, len(ds.names))
        if not mask.any():
            continue
        tile = auto_tile(model, hw)
        score, _, _, _ = score_image(model, img, tile, min(128, tile // 4))
        if len(boxes):
            for x0, y0, x1, y1 in boxes:
                peaks.append(float(score[y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)].max()))
        else:
            n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
            for k in range(1, n):
                peaks.append(float(score[labels == k].max()))
    if not peaks:
        raise InputError("no labelled defects found", path=root, hint="give a YOLO or MVTec AD folder with defects")
    p = np.asarray(peaks)
    return np.array([(p >= t).mean() for t in THRESHOLDS]), len(p)


# -- the calibration --------------------------------------------------------------------------


def choose_threshold(per_m2: np.ndarray, budget: float) -> tuple[float, bool]:
    """Lowest threshold within the budget; (highest threshold, False) when none is."""
    ok = np.nonzero(per_m2 <= budget)[0]
    if len(ok):
        return float(THRESHOLDS[ok[0]]), True
    return float(THRESHOLDS[-1]), False


def model_identity(station: Station, model_path: str | None = None) -> dict[str, str]:
    """The model a calibration belongs to: the station's path string and the file's SHA-256."""
    from .inference.registry import builtin_path

    spec = model_path or station.model.path
    file = builtin_path(spec) if spec.startswith("builtin:") else station.resolve(spec)
    return {"path": spec, "sha256": file_sha256(file)}


def calibrate(
    station: Station,
    station_path: Path,
    good_sources: list[Path],
    *,
    budget: float = DEFAULT_BUDGET_PER_M2,
    defects: Path | None = None,
    mm_per_px: float | None = None,
    model_path: str | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Run the station's model over good leather (and defect images); the calibration record."""
    from .inference import Model

    if budget <= 0:
        raise InputError(f"--budget must be > 0 false defects per m², got {budget:g}")
    if not good_sources:
        raise InputError("give at least one recording (.raw) or folder of good-leather images")
    cfg = station.model.model_copy(update={"path": model_path} if model_path else {})
    model = Model.load(cfg, resolve=station.resolve)
    channels = model.input_channels or station.camera.channels
    good = GoodLeather(extent=getattr(model.decoder, "extent", None))
    t0 = time.perf_counter()
    for src in good_sources:
        prog = (lambda d, t, s=src: progress(s.name, d, t)) if progress else None
        if src.is_dir():
            score_images(model, src, mm_per_px or station.camera.mm_per_px, good, channels, prog)
        elif src.is_file():
            score_recording(model, station, src, good, prog)
        else:
            raise InputError("not found: give a .raw recording or a folder of images", path=src)
    if good.leather_mm2 <= 0:
        raise InputError("no good leather found in the data (the hide detection saw no hide)",
                         path=good_sources[0], hint="check [hide_detection] belt_level and threshold")
    per_m2 = good.per_m2()
    threshold, within = choose_threshold(per_m2, budget)
    recall, n_defects = (None, 0)
    if defects is not None:
        recall, n_defects = defect_recall(model, defects, channels)
    table = [
        {"threshold": float(t), "false_per_m2": round(float(f), 4),
         **({"recall": round(float(recall[i]), 4)} if recall is not None else {})}
        for i, (t, f) in enumerate(zip(THRESHOLDS, per_m2))
    ]
    return {
        "version": CAL_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "station": station.station.name,
        "station_file": str(Path(station_path).resolve()),
        "model": model_identity(station, model_path),
        "model_default_threshold": model.score_threshold if cfg.score_threshold is None else None,
        "min_area_px": model.min_area_px,
        "data": good.sources,
        "defect_images": str(defects.resolve()) if defects is not None else None,
        "defects_labelled": n_defects,
        "leather_m2": round(good.leather_mm2 / 1e6, 4),
        "tiles": good.tiles,
        "seconds": round(time.perf_counter() - t0, 1),
        "budget_per_m2": budget,
        "threshold": threshold,
        "within_budget": within,
        "score_quantiles_on_good_leather": good.quantiles(),
        "table": table,
    }


def write_calibration(record: dict[str, Any], station_path: Path) -> Path:
    from .store import atomic_write_json

    out = calibration_path(station_path)
    atomic_write_json(out, record)
    return out


def format_calibration(rec: dict[str, Any], path: Path) -> str:
    """What the chosen threshold trades: false defects per m² (and recall) around it."""
    lines = [
        f"calibration of station {rec['station']} with model {rec['model']['path']}",
        f"  good leather   {rec['leather_m2']:.3f} m2 in {len(rec['data'])} source(s), {rec['tiles']} tiles,"
        f" {rec['seconds']:.1f} s",
        f"  budget         {rec['budget_per_m2']:g} false defects per m2",
    ]
    rows = rec["table"]
    k = next(i for i, r in enumerate(rows) if r["threshold"] == rec["threshold"])
    show = sorted({0, len(rows) - 1, *range(max(0, k - 3), min(len(rows), k + 4)),
                   *(i for i, r in enumerate(rows) if abs(r["threshold"] * 10 - round(r["threshold"] * 10)) < 1e-9)})
    has_recall = "recall" in rows[0]
    lines.append("  threshold  false/m2" + ("   recall" if has_recall else ""))
    for i in show:
        r = rows[i]
        mark = "  <- chosen" if i == k else ""
        lines.append(f"  {r['threshold']:9.2f}  {r['false_per_m2']:8.3f}"
                     + (f"   {r['recall']:6.3f}" if has_recall else "") + mark)
    if not rec["within_budget"]:
        lines.append(f"  WARNING: no threshold keeps to the budget; the highest ({rec['threshold']:g}) is used")
    if rec.get("model_default_threshold") is not None:
        lines.append(f"  the model's own default threshold: {rec['model_default_threshold']:g}")
    lines.append(f"threshold {rec['threshold']:g} written to {path}")
    return "\n".join(lines)


# -- using it -------------------------------------------------------------------------------------


def load_calibration(path: Path) -> dict[str, Any]:
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"unreadable calibration file: {e}", path=path,
                         hint="run edge-inspector calibrate again, or remove the file") from None
    if not isinstance(rec, dict) or rec.get("version") != CAL_VERSION:
        raise InputError(f"calibration file version {rec.get('version') if isinstance(rec, dict) else None!r},"
                         f" this program reads version {CAL_VERSION}", path=path,
                         hint="run edge-inspector calibrate again")
    thr = rec.get("threshold")
    if not isinstance(thr, (int, float)) or not 0 <= thr <= 1:
        raise InputError(f"threshold must be a number in [0, 1], got {thr!r}", path=path, where="threshold")
    return rec


def apply_calibration(station: Station, model_path: str | None = None) -> tuple[Station, dict[str, Any]]:
    """The station with its calibrated threshold in force, and where the threshold comes from.

    Order: ``[model] score_threshold`` in the station file; else the calibration file next to the
    station file when it was made for this model (path and SHA-256); else the model's default.
    """
    if "score_threshold" in station.model.model_fields_set and station.model.score_threshold is not None:
        return station, {"source": "station file", "value": station.model.score_threshold}
    st_path = getattr(station, "_path", None)
    if st_path is None:
        return station, {"source": "model default"}
    cal = calibration_path(st_path)
    if not cal.is_file():
        return station, {"source": "model default"}
    rec = load_calibration(cal)
    ident = model_identity(station, model_path)
    if rec.get("model") != ident:
        log.warning("calibration is for another model; using the model's default threshold", file=str(cal),
                    calibrated=rec.get("model", {}).get("path"), running=ident["path"])
        return station, {"source": f"model default (calibration {cal.name} is for another model)"}
    new = station.model_copy(deep=True)
    new.model = new.model.model_copy(update={"score_threshold": float(rec["threshold"])})
    new._path = st_path
    log.info("calibrated threshold", file=str(cal), threshold=rec["threshold"])
    return new, {"source": f"calibration {cal}", "value": float(rec["threshold"]),
                 "budget_per_m2": rec.get("budget_per_m2")}
