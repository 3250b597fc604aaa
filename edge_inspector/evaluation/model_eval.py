"""``edge-inspector eval-model``: score a defect model on an image dataset, tiled as on the station.

Datasets: ``datasets``; metrics: ``metrics``; the text report: ``model_report``.

Tiling "as on the station" (``score_image``)
    Square tiles of ``tile`` px (default: the model's fixed input size, else min(2048, the longer
    image side rounded up to a multiple of 32)), overlapping by ``overlap`` (default
    min(128, tile // 4)); tile origins as ``tile.column_starts`` (every tile - overlap px, the last
    aligned to the far edge). An image smaller than the tile is padded at the bottom / right by
    mirroring (reflect-101), predictions there are dropped. ``tile_maps`` gives each tile's defect
    score in [0, 1] and class map at tile px (the model's first stage, ``Model.run_maps``, then its
    decoder's ``to_dense``: strided scores upsampled bilinear, classes by nearest neighbour);
    overlaps combine by max (the class of the tile with the higher score; first tile on ties).
    Anomaly maps outside [0, 1] without min/max metadata are min-max scaled over the evaluated
    images (a first pass finds the range; reported under ``model.anomaly_scaling``).

Detection metrics on YOLO datasets (``boxmap``): the same model run also gives each tile's
detections, from the model's own decoder (operating threshold) and from a ``Decoder.ranking`` copy
at ``RANKING_THRESHOLD`` (the ranking for AP), stitched per image as the station merges them.

Timing: images/s over the whole evaluation loop (reading, tiling, model, stitching, metrics),
ms per tile = time inside ``tile_maps`` / tiles.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import cv2
import numpy as np

from ..config import ModelCfg, load_station
from ..errors import InputError
from ..detections import Detections
from ..inference.decoders import AnomalyDecoder, Decoder, PatchDecoder, YoloDecoder
from ..inference.maps import DenseMaps
from ..inference.model import Model
from ..tile import column_starts
from .boxmap import BoxAP, stitch
from .datasets import Dataset, Sample, ground_truth, read_image, read_labels, subset
from ..patch.labels import cell_labels, mask_boxes
from .metrics import BoxStats, PatchStats, PixelStats, ratio

MAX_TILE = 2048
STATION_OVERLAP = 128
# the lowest score a detection is ranked at for AP: ultralytics' val confidence for detectors; blobs
# of segmentation / anomaly models from 0.05 (their peak score; fewer, larger blobs below that)
RANKING_THRESHOLD = {"yolo": 0.001}
RANKING_DEFAULT = 0.05


def auto_tile(model: Model, hw: tuple[int, int]) -> int:
    """The model's fixed input size, else min(2048, the longer side rounded up to 32)."""
    if model.input_size is not None:
        return int(model.input_size[0])
    return min(MAX_TILE, -(-max(hw) // 32) * 32)


def tile_maps(model: Model, tiles: np.ndarray, *, anomaly_range: tuple[float, float] | None = None,
              raw: bool = False) -> DenseMaps:
    """Defect score and class map per tile px of a (B, H, W, C) uint8 batch: the model's first
    stage, then its decoder's dense view (``Decoder.to_dense``: anomaly maps scaled by
    ``anomaly_range`` unless ``raw``; box and tile-score models: their detections rasterised)."""
    return model.decoder.to_dense(model.run_maps(tiles), anomaly_range=anomaly_range, raw=raw)


def score_image(
    model: Model, img: np.ndarray, tile: int, overlap: int, *, batch: int = 4,
    anomaly_range: tuple[float, float] | None = None, raw: bool = False,
) -> tuple[np.ndarray, np.ndarray | None, int, float]:
    """Tile ``img`` (H, W, C) as on the station and stitch the model's maps back (max on overlaps).

    Returns (score (H, W) float32, class map (H, W) int32 or None, tiles run, seconds in the model).
    """
    score, cls, n, secs, _ = score_and_detect(model, img, tile, overlap, batch=batch,
                                              anomaly_range=anomaly_range, raw=raw)
    return score, cls, n, secs


def ranking_decoder(model: Model) -> Decoder:
    """The model's decoder at the ranking threshold (``RANKING_THRESHOLD``)."""
    return model.decoder.ranking(RANKING_THRESHOLD.get(model.decoder.name, RANKING_DEFAULT))


def operating_decoder(model: Model, threshold: float | None) -> Decoder:
    """The model's decoder, or with ``--threshold`` a copy at that one threshold for every class."""
    if threshold is None:
        return model.decoder
    d = model.decoder.ranking(1.0)  # a copy without per-class thresholds
    d.score_threshold = float(threshold)
    return d


def score_and_detect(
    model: Model, img: np.ndarray, tile: int, overlap: int, *, batch: int = 4,
    anomaly_range: tuple[float, float] | None = None, raw: bool = False,
    detect: tuple[Decoder, Decoder] | None = None,
) -> tuple[np.ndarray, np.ndarray | None, int, float, tuple[Detections, Detections] | None]:
    """``score_image``, and with ``detect`` = (ranking decoder, operating decoder) also the image's
    detections (image px, ``boxmap.stitch``) of each, from the same run of the model."""
    h, w = img.shape[:2]
    hp, wp = max(h, tile), max(w, tile)
    if (hp, wp) != (h, w):
        img = cv2.copyMakeBorder(img, 0, hp - h, 0, wp - w, cv2.BORDER_REFLECT_101).reshape(hp, wp, -1)
    origins = [(y, x) for y in column_starts(hp, tile, overlap) for x in column_starts(wp, tile, overlap)]
    score = np.full((hp, wp), -np.inf, np.float32)
    cls: np.ndarray | None = None
    model_s = 0.0
    ranked: list[Detections] = []
    operating: list[Detections] = []
    for i in range(0, len(origins), batch):
        part = origins[i : i + batch]
        t0 = time.perf_counter()
        tiles = np.stack([img[y : y + tile, x : x + tile] for y, x in part])
        if detect is None:
            s, c = tile_maps(model, tiles, anomaly_range=anomaly_range, raw=raw)
        else:
            own, low, op = model.run_maps_of(tiles, (model.decoder, *detect))
            s, c = model.decoder.to_dense(own, anomaly_range=anomaly_range, raw=raw)
            ranked += detect[0].to_detections(low)
            operating += detect[1].to_detections(op)
        model_s += time.perf_counter() - t0
        if c is not None and cls is None:
            cls = np.zeros((hp, wp), np.int32)
        for k, (y, x) in enumerate(part):
            view = score[y : y + tile, x : x + tile]
            if c is not None and cls is not None:
                better = s[k] > view
                cls[y : y + tile, x : x + tile][better] = c[k][better]
            np.maximum(view, s[k], out=view)
    dets = None if detect is None else (stitch(ranked, origins, (h, w)), stitch(operating, origins, (h, w)))
    return score[:h, :w], None if cls is None else cls[:h, :w], len(origins), model_s, dets


def label_boxes(sample: Sample, hw: tuple[int, int], n_names: int) -> np.ndarray:
    """(k, 4) float x0 y0 x1 y1 image px of a YOLO sample's labelled boxes (clipped to the image)."""
    if sample.labels is None:
        return np.zeros((0, 4))
    _, b = read_labels(sample.labels, n_names)
    h, w = hw
    xyxy = np.stack([b[:, 0] - b[:, 2] / 2, b[:, 1] - b[:, 3] / 2, b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2], 1)
    return np.clip(xyxy * [w, h, w, h], 0, [w, h, w, h]).reshape(-1, 4)


def patch_cells(score: np.ndarray, boxes: np.ndarray, stride: int, report_px: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """(probability, label) of every patch of a patch model's grid laid from the image origin: the
    stitched score at each cell's centre (tile origins off the stride fall back to the max over the
    overlap, as the score map does) and ``cell_labels`` of the boxes."""
    hw = score.shape[:2]
    gh, gw = hw[0] // stride, hw[1] // stride
    c = stride // 2
    prob = score[c : gh * stride : stride, c : gw * stride : stride]
    return prob, cell_labels(boxes, hw, stride, report_px)


def load_model(model_path: str | None, station_path: str | None) -> Model:
    """The model to evaluate: ``model_path`` (default the station's, else builtin:default) with
    the station's ``[model]`` settings (decoder, providers, thresholds) when a station is given."""
    # Only [model] matters here: a station file with no [camera]/[belt] is fine for eval-model.
    station = load_station(station_path, required=()) if station_path else None
    cfg = station.model if station else ModelCfg()
    if model_path:
        cfg = cfg.model_copy(update={"path": model_path})
    return Model.load(cfg, resolve=station.resolve) if station else Model.load(cfg)


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
    if not isinstance(model.decoder, AnomalyDecoder) or isinstance(model.decoder, PatchDecoder):
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
    model.decoder.score_threshold = thr
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
    detect = (ranking_decoder(model), operating_decoder(model, threshold)) if yolo else None
    box_ap = BoxAP(dataset.names, model.class_names,
                   "detector boxes" if isinstance(model.decoder, YoloDecoder) else "bounding boxes of the decoded blobs",
                   detect[0].score_threshold, thr) if detect is not None else None
    dec = model.decoder
    patches = PatchStats(thr, dec.stride, dec.report_px) if isinstance(dec, PatchDecoder) else None
    groups: dict[str, dict[str, Any]] = {}
    tiles, model_s, tile_sizes, overlaps = 0, 0.0, set(), set()
    t0 = time.perf_counter()
    for i, s in enumerate(samples):
        img = read_image(s.image, _channels(model))
        hw = img.shape[:2]
        t, o = _tile_for(model, hw, tile, overlap)
        score, cls_map, n_tiles, secs, dets = score_and_detect(model, img, t, o, batch=batch, anomaly_range=rng,
                                                               detect=detect)
        tiles, model_s = tiles + n_tiles, model_s + secs
        tile_sizes.add(t)
        overlaps.add(o)
        gt, cls, box_px = ground_truth(s, hw, len(dataset.names))
        labels = model.decoder.reported_labels(score)  # a defect in pieces is one (peak_extent)
        pred = model.decoder.reported(score) if labels is None else labels > 0  # what the station reports
        d = px.add(score, gt, pred)
        if boxes is not None:
            boxes.add(pred, gt, cls_map, cls, box_px, labels)
        if box_ap is not None and dets is not None:
            box_ap.add(label_boxes(s, hw, len(dataset.names)), cls, *dets)
        if patches is not None:
            patches.add(*patch_cells(score, label_boxes(s, hw, len(dataset.names)) if yolo else mask_boxes(gt),
                                     patches.stride, patches.report_px))
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
            "anomaly_scaling": scaling, "peak_extent": getattr(model.decoder, "peak_extent", None),
        },
        "dataset": {
            "root": str(dataset.root), "layout": dataset.layout, "split": dataset.split,
            "images": len(samples), "images_total": len(dataset.samples),
            "defective_images": int(sum(px.image_gt)), "names": dataset.names,
        },
        "tiling": {"tile": sorted(tile_sizes), "overlap": sorted(overlaps), "tiles": tiles,
                   "upsampling": "nearest", "combine": "max"},
        "pixel": {**px.pixel("box-mask (weak)" if yolo else "ground truth"),
                  "prediction": "the pixels the decoder reports (Decoder.reported: core and extent where the"
                                " model's output names an extent, else the score at or above the threshold);"
                                " AUROC / AUPRO on the score"},
        "image": px.image(),
        "timing": {"wall_s": wall, "model_s": model_s, "images_per_s": ratio(len(samples), wall),
                   "ms_per_tile": ratio(1000.0 * model_s, tiles)},
    }
    if boxes is not None:
        report["boxes"] = boxes.report()
    if patches is not None:
        report["patch"] = patches.report()
    if box_ap is not None:
        report["detection"] = box_ap.report()
    else:
        report["per_type"] = {
            k: {"images": g["images"], "flagged": g["flagged"],
                "dice_mean": float(np.mean(g["dice"])) if g["dice"] else None}
            for k, g in groups.items()
        }
    return report
