"""Decoders: one class per model family, pairing its first stage (raw outputs -> named maps,
``maps``) with its second stage (maps -> one ``Detections`` per tile, in tile pixels).

All share the same interface::

    dec = DECODERS[name](class_names=[...], score_threshold=0.3, min_area_px=6, spec={...})
    maps = dec.to_maps(outputs, batch, (tile_h, tile_w))   # first stage
    dets: list[Detections] = dec.to_detections(maps)        # second stage
    dets = dec.decode(outputs, batch, (tile_h, tile_w))     # both
    dense: DenseMaps = dec.to_dense(maps)                   # score / class per tile px (eval-model)

``outputs`` maps output names to arrays (what ``session.run`` returned). ``spec`` is the model's
``edge_inspector.output`` metadata (output names, stride, ...) or ``{}`` for foreign models;
every first stage also finds its outputs by shape when names are not given.
``class_id`` in the result indexes ``class_names`` (background is never a class).

Before a model runs on real tiles, ``check_names(graph outputs)`` (at load) refuses an output
spec that names an output the graph does not have, and ``check_outputs(outputs, batch, tile_hw)``
(at warm-up) refuses outputs whose shape or type the first stage would misread (a reshape error,
or pixel values taken for class ids), with an ``OutputMismatch`` naming the output.

A new family: its maps and first stage in ``maps``, a ``Decoder`` subclass here, a row in
``DECODERS`` (and in ``KIND_DECODER`` when models name it as their ``edge_inspector.kind``).
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar, Generic, Self, TypeVar

import cv2
import numpy as np

from ..detections import Detections, nms, rasterise
from .components import core_extent_pixels, components, peak_extent_detections, peak_extent_labels, whole_tile
from .maps import (
    AnomalyMaps, Boxes, DenseMaps, Maps, SegmentationMaps, TileScores, anomaly_maps, map_scale, segmentation_maps,
    tile_scores, to_tile, yolo_boxes,
)

M = TypeVar("M", bound=Maps)


class OutputMismatch(ValueError):
    """The model's outputs do not fit its decoder; the message names the output."""


def _named(outputs: dict[str, np.ndarray], spec: dict[str, Any], key: str, *fallbacks: str
           ) -> tuple[str, np.ndarray] | None:
    """(name, array) of the output ``pick_output`` would take, or None."""
    name = spec.get(key)
    for n in ([name] if name is not None else []) + list(fallbacks):
        if n in outputs:
            return n, outputs[n]
    return None


def _only_or(outputs: dict[str, np.ndarray], spec: dict[str, Any], key: str, *fallbacks: str
             ) -> tuple[str, np.ndarray]:
    """The output a single-output family reads: the only one, else the named one, else the first."""
    if len(outputs) == 1:
        return next(iter(outputs.items()))
    got = _named(outputs, spec, key, *fallbacks)
    if got is None:
        raise OutputMismatch(f"outputs {', '.join(map(repr, outputs))}: none is named"
                             f" {' or '.join(map(repr, fallbacks))}; name the one to read in"
                             f" edge_inspector.output {{\"{key}\": NAME}}")
    return got


def _per_tile_map(name: str, x: np.ndarray, batch: int, what: str) -> tuple[int, int]:
    """(h, w) of an output read as one (h, w) map per tile; OutputMismatch otherwise."""
    if x.ndim < 2 or x.size != batch * x.shape[-2] * x.shape[-1] or (x.ndim > 2 and x.shape[0] != batch):
        raise OutputMismatch(f"output {name!r} has shape {tuple(x.shape)}; the decoder reads it as {what},"
                             f" one (h, w) map per tile of a batch of {batch}")
    return int(x.shape[-2]), int(x.shape[-1])


class Decoder(Generic[M]):
    """Common base: thresholds, class names and the output spec."""

    name: ClassVar[str] = "base"
    # keys of the output spec (edge_inspector.output) that name a graph output
    OUTPUT_KEYS: ClassVar[tuple[str, ...]] = ()
    PER_CLASS_THRESHOLDS: ClassVar[bool] = False  # whether class_thresholds apply

    def __init__(
        self,
        *,
        class_names: list[str],
        score_threshold: float = 0.5,
        min_area_px: float = 0.0,
        spec: dict[str, Any] | None = None,
        class_thresholds: dict[str, float] | None = None,
    ) -> None:
        self.class_names = list(class_names)
        self.score_threshold = float(score_threshold)
        self.min_area_px = float(min_area_px)
        self.spec = dict(spec or {})
        self.class_thresholds = self._class_thresholds(
            {**dict(self.spec.get("class_thresholds") or {}), **dict(class_thresholds or {})})

    def _class_thresholds(self, given: dict[str, Any]) -> dict[str, float]:
        """Per-class thresholds by class name (output spec, then the station's); ValueError naming
        a class the model does not have, or a family with one threshold."""
        if given and not self.PER_CLASS_THRESHOLDS:
            raise ValueError(f"class_thresholds: the {self.name} decoder has one score threshold; per-class"
                             " thresholds apply to detection (yolo) models")
        for k, v in given.items():
            if k not in self.class_names:
                raise ValueError(f"class_thresholds names class {k!r}, but the model's classes are "
                                 + ", ".join(map(repr, self.class_names)))
            if not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
                raise ValueError(f"class_thresholds: {k!r} = {v!r} must be a number within 0..1")
        return {k: float(v) for k, v in given.items()}

    def thresholds(self) -> np.ndarray:
        """(nc,) float32: the score threshold of each class (``class_thresholds`` over the one threshold)."""
        t = np.full(max(len(self.class_names), 1), self.score_threshold, np.float32)
        for k, v in self.class_thresholds.items():
            t[self.class_names.index(k)] = v
        return t

    def ranking(self, threshold: float) -> Self:
        """A copy that keeps every detection scoring at least ``threshold`` (no per-class
        thresholds): ``eval-model`` ranks these for average precision."""
        d = copy.copy(self)
        d.score_threshold = min(float(threshold), self.score_threshold)
        d.class_thresholds = {}
        return d

    def check_names(self, output_names: tuple[str, ...] | list[str]) -> None:
        """ValueError when the output spec names an output the graph does not have."""
        for key in self.OUTPUT_KEYS:
            if key not in self.spec:
                continue
            v = self.spec[key]
            if not isinstance(v, str) or v not in output_names:
                raise ValueError(
                    f"{key!r} names output {v!r}, but the model's outputs are "
                    + ", ".join(repr(n) for n in output_names)
                )

    def check_outputs(self, outputs: dict[str, np.ndarray], batch: int, tile_hw: tuple[int, int]) -> None:
        """OutputMismatch when the raw outputs of a ``batch`` do not have the shapes and types the
        first stage reads (run once at warm-up; the hot path does not repeat it)."""

    def to_maps(self, outputs: dict[str, np.ndarray], batch: int, tile_hw: tuple[int, int]) -> M:
        """First stage: the raw outputs of a batch of ``batch`` tiles -> this family's maps."""
        raise NotImplementedError

    def to_detections(self, maps: M) -> list[Detections]:
        """Second stage: maps -> one ``Detections`` per tile."""
        raise NotImplementedError

    def decode(self, outputs: dict[str, np.ndarray], batch: int, tile_hw: tuple[int, int]) -> list[Detections]:
        """Both stages: raw outputs -> one ``Detections`` per tile."""
        return self.to_detections(self.to_maps(outputs, batch, tile_hw))

    def to_dense(self, maps: M, *, anomaly_range: tuple[float, float] | None = None,
                 raw: bool = False) -> DenseMaps:
        """Score and class per tile px. Here: the decoded detections rasterised (outline, else box)
        with their scores (the highest wins where they overlap), so only detections above the
        score threshold score at all. Families with dense outputs override it; ``anomaly_range``
        and ``raw`` only concern anomaly maps."""
        return DenseMaps(*rasterise(self.to_detections(maps), maps.tile_hw))

    def reported(self, score: np.ndarray) -> np.ndarray:
        """(H, W) bool: the pixels this decoder reports as defects, from a dense score at tile px
        (``to_dense``, stitched over tiles). Here: the score at or above the threshold."""
        return score >= self.score_threshold

    def reported_labels(self, score: np.ndarray) -> np.ndarray | None:
        """(H, W) int32: which defect each reported pixel belongs to (0: none), where a defect can
        be in pieces (``AnomalyDecoder`` with ``peak_extent``); None: each connected group of
        ``reported`` pixels is one defect."""
        return None


class SegmentationDecoder(Decoder[SegmentationMaps]):
    """Class map (+ optional score map), (N, C, h, w) logits/probabilities with background
    channel 0, or a (N, 1, h, w) single-class probability/logit map (``maps.segmentation_maps``).

    With a class map, ``score_threshold`` acts as the high threshold of a hysteresis: the map
    marks candidate pixels, a component is kept when its peak score reaches the threshold.
    The output spec's ``components`` and ``large`` (see ``components``) apply to class maps.
    """

    name = "segmentation"
    OUTPUT_KEYS = ("class_map", "score_map", "logits")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.by_class = self.spec.get("components", "class") != "defect"
        self.large = self._large()
        self.extent = self._extent()

    def _extent(self) -> float | None:
        """``"extent": level`` in the output spec: core and extent decoding (see ``components``)."""
        e = self.spec.get("extent")
        if e is None:
            return None
        if isinstance(e, bool) or not isinstance(e, (int, float)) or not 0.0 <= float(e) <= 1.0:
            raise ValueError(f"output 'extent' must be a score level within 0..1, got {e!r}")
        return float(e)

    def ranking(self, threshold: float) -> Self:
        d = super().ranking(threshold)
        if d.large is not None:
            d.large = (d.large[0], min(d.large[1], d.score_threshold))
        return d

    def _large(self) -> tuple[float, float] | None:
        """``"large": {"area_px": A, "threshold": T}`` in the output spec (see ``components``)."""
        lg = self.spec.get("large")
        if lg is None:
            return None
        try:
            return float(lg["area_px"]), float(lg["threshold"])
        except (TypeError, KeyError, ValueError):
            raise ValueError(f"output 'large' must be {{\"area_px\": number, \"threshold\": number}}, got {lg!r}")

    def check_outputs(self, outputs, batch, tile_hw):
        nc = len(self.class_names)
        cm = _named(outputs, self.spec, "class_map", "class_map")
        if cm is not None:
            name, x = cm
            hw = _per_tile_map(name, x, batch, "the class map")
            if x.dtype.kind not in "uib":
                raise OutputMismatch(f"output {name!r} is {x.dtype}; a class map holds class indices (integers)")
            top = int(x.max()) if x.size else 0
            if top > nc or (x.dtype.kind == "i" and x.size and int(x.min()) < 0):
                raise OutputMismatch(f"output {name!r} holds value {top}, but a class map holds 0 (background)"
                                     f" or 1..{nc}, one per class in edge_inspector.classes")
            sm = _named(outputs, self.spec, "score_map", "score_map")
            if sm is not None and _per_tile_map(sm[0], sm[1], batch, "the score map") != hw:
                raise OutputMismatch(f"output {sm[0]!r} has shape {tuple(sm[1].shape)}, the class map {name!r}"
                                     f" {tuple(x.shape)}; a score map must match its class map")
            return
        got = _named(outputs, self.spec, "logits", "logits", "probabilities", "output")
        name, x = got if got is not None else next(iter(outputs.items()))
        if x.dtype.kind != "f" or x.ndim not in (3, 4) or x.shape[0] != batch:
            raise OutputMismatch(f"output {name!r} is {x.dtype} of shape {tuple(x.shape)}; the decoder reads a"
                                 f" float (N, C, h, w) or (N, h, w) map for a batch of {batch} (or a"
                                 " 'class_map' output)")
        c = x.shape[1] if x.ndim == 4 else 1
        if c != 1 and c != nc + 1:
            raise OutputMismatch(f"output {name!r} has {c} channels (background + {c - 1} classes), but the"
                                 f" model names {nc} class(es); set edge_inspector.classes to the {c - 1} names")

    def to_maps(self, outputs, batch, tile_hw):
        return segmentation_maps(outputs, batch, tile_hw, spec=self.spec, score_threshold=self.score_threshold)

    def to_detections(self, maps):
        cm, sm = maps.class_map, maps.score_map
        scale = map_scale(cm.shape[-2:], maps.tile_hw, maps.stride)
        if maps.from_probabilities:
            return [components(cm[i], sm[i], scale_yx=scale, score_threshold=self.score_threshold,
                               min_area_px=self.min_area_px) for i in range(len(cm))]
        nc = len(self.class_names)
        if cm.size and nc and int(cm.max()) > nc:  # not class ids: refuse rather than drop or misname
            raise OutputMismatch(f"the class map holds value {int(cm.max())}, but a class map holds 0"
                                 f" (background) or 1..{nc}, one per class in edge_inspector.classes")
        if cm.dtype != np.uint8:
            cm = cm.astype(np.uint8)
        out = []
        for i in range(len(cm)):
            if not cm[i].any():  # the common case: a clean tile
                out.append(Detections.empty())
                continue
            out.append(
                components(
                    cm[i], None if sm is None else sm[i], scale_yx=scale,
                    score_threshold=self.score_threshold, min_area_px=self.min_area_px,
                    score_scale=maps.score_scale, n_classes=len(self.class_names) or None,
                    by_class=self.by_class, large=self.large,
                    extent=self.extent if sm is not None else None,
                )
            )
        return out

    def to_dense(self, maps, *, anomaly_range=None, raw=False):
        return maps.dense()

    def ranking(self, threshold):
        # with an extent, cores below the extent level would grow over the whole tile
        return super().ranking(threshold if self.extent is None else max(float(threshold), self.extent))

    def reported(self, score):
        if self.extent is None:
            return super().reported(score)
        return core_extent_pixels(score, self.score_threshold, self.extent, self.min_area_px, self.large)


class AnomalyDecoder(Decoder[AnomalyMaps]):
    """Any anomaly-map model (learn-good, DRAEM, SSIM-AE, anomalib exports): ``anomaly_map``
    (N,1,h,w) at any resolution, ``pred_score``, optionally ``pred_label`` / ``pred_mask``.

    Pixels of the anomaly map at or above ``score_threshold`` form components of class 0
    ("anomaly"), scored by their peak; h, w smaller than the tile scale up (the output's stride, else
    the shapes). The map wins over an exported ``pred_mask`` whenever both are there, so the
    station's threshold and ``edge-inspector calibrate`` act on it; the mask is read only by a
    model without a map. With only ``pred_score``, a tile whose score reaches the threshold is one
    detection covering the whole tile. Outputs are found by name (``anomaly_map``, ``pred_score``,
    ...) or by the names the model's ``edge_inspector.output`` or the station's ``[model] outputs``
    give them (older anomalib exports call the map ``output`` and the score ``onnx::...``).
    """

    name = "anomaly"
    OUTPUT_KEYS = ("anomaly_map", "pred_mask", "pred_score")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.peak_extent = self._peak_extent()

    def _peak_extent(self) -> float | None:
        """``"peak_extent": fraction`` in the output spec (learn-good writes 0.8; the station's
        ``[model] peak_extent`` wins): each defect is reported down to that fraction of its own
        peak, not down to the threshold (``components.peak_extent``); 0 or absent: off."""
        f = self.spec.get("peak_extent")
        if f is None:
            return None
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 <= float(f) < 1.0:
            raise ValueError(f"output 'peak_extent' must be a fraction of the peak within 0..1 (0 = off), got {f!r}")
        return float(f) or None

    def check_outputs(self, outputs, batch, tile_hw):
        amap = _named(outputs, self.spec, "anomaly_map", "anomaly_map")
        pmask = None if amap is not None else _named(outputs, self.spec, "pred_mask", "pred_mask")
        if amap is None and pmask is None:
            ps = _named(outputs, self.spec, "pred_score", "pred_score")
            if ps is not None:
                if ps[1].size < batch or ps[1].size % batch:
                    raise OutputMismatch(f"output {ps[0]!r} has shape {tuple(ps[1].shape)}; the decoder reads one"
                                         f" score per tile of a batch of {batch}")
                return
            amap = next(iter(outputs.items()))
        hw = None
        for got, what in ((amap, "the anomaly map"), (pmask, "the predicted mask")):
            if got is None:
                continue
            if got[1].dtype.kind not in "uifb":
                raise OutputMismatch(f"output {got[0]!r} is {got[1].dtype}; {what} must be numbers")
            this = _per_tile_map(got[0], got[1], batch, what)
            if hw is not None and this != hw:
                raise OutputMismatch(f"outputs {amap[0]!r} and {pmask[0]!r} differ in size"  # type: ignore[index]
                                     f" ({hw} and {this})")
            hw = this

    def to_maps(self, outputs, batch, tile_hw):
        return anomaly_maps(outputs, batch, tile_hw, spec=self.spec)

    def to_detections(self, maps):
        amap, pmask = maps.anomaly_map, maps.pred_mask
        if amap is None and pmask is None:
            n = len(maps.pred_score)  # type: ignore[arg-type]
            return whole_tile(maps.pred_score, np.zeros(n, np.int32), self.score_threshold, maps.tile_hw)
        ref = amap if amap is not None else pmask
        scale = map_scale(ref.shape[-2:], maps.tile_hw, maps.stride)  # type: ignore[union-attr]
        out = []
        trim = self.peak_extent if amap is not None else None
        for i in range(len(ref)):  # type: ignore[arg-type]
            label = (amap[i] >= self.score_threshold) if amap is not None else (pmask[i] > 0)
            if not label.any():
                out.append(Detections.empty())
                continue
            if trim:
                out.append(peak_extent_detections(amap[i], self.score_threshold, trim,  # type: ignore[index]
                                                  self.min_area_px, scale))
                continue
            out.append(
                components(
                    label.view(np.uint8) if label.dtype == bool else label.astype(np.uint8),
                    None if amap is None else amap[i], scale_yx=scale,
                    score_threshold=self.score_threshold if amap is not None else 0.0,
                    min_area_px=self.min_area_px, n_classes=1,
                )
            )
        return out

    def reported(self, score):
        labels = self.reported_labels(score)
        return super().reported(score) if labels is None else labels > 0

    def reported_labels(self, score):
        if self.peak_extent is None:
            return None
        return peak_extent_labels(score, self.score_threshold, self.peak_extent, self.min_area_px)

    def to_dense(self, maps, *, anomaly_range=None, raw=False):
        """The anomaly score at tile px (bilinear), class map None.

        The anomaly map scaled by ``anomaly_range`` (lo, hi) -> (x - lo) / (hi - lo), else by the
        output spec's ``min`` / ``max`` (with ``threshold``: anomalib's (x - threshold) /
        (max - min) + 0.5), else as is; then clipped to [0, 1]. ``raw=True`` skips scaling and
        clipping (to find a map's range). Without a map: ``pred_mask`` (1 inside), else
        ``pred_score`` over the whole tile.
        """
        a = maps.raw_score()
        if not raw and (maps.anomaly_map is not None or maps.pred_mask is None):
            a = self._scaled(a, anomaly_range)
        return DenseMaps(to_tile(a, maps.tile_hw, maps.stride, linear=True), None)

    def _scaled(self, a: np.ndarray, anomaly_range: tuple[float, float] | None) -> np.ndarray:
        spec = self.spec
        if anomaly_range is not None:
            lo, hi = anomaly_range
            a = (a - np.float32(lo)) / np.float32(max(hi - lo, 1e-12))
        elif "min" in spec and "max" in spec:
            span = np.float32(max(float(spec["max"]) - float(spec["min"]), 1e-12))
            a = ((a - np.float32(spec["threshold"])) / span + np.float32(0.5) if "threshold" in spec
                 else (a - np.float32(spec["min"])) / span)
        return np.clip(a, 0, 1)


class PatchDecoder(AnomalyDecoder):
    """Patch classifiers (``edge_inspector/patch``): ``patch_scores`` (N, 1, gh, gw), the probability
    that the patch on each cell of a grid at ``stride`` px is defective; ``spec["patch"]`` holds the
    grid (``report_px``: the square reported per patch, centred on its cell; default the stride).

    A region = the patches at or above the threshold that touch, outline = the union of their
    squares, score = the highest probability in it, class "defect". ``to_dense``: each cell's
    probability over its stride x stride block (eval-model's patch grid); ``reported``: the union
    of the squares of the patches at or above the threshold.
    """

    name = "patch"
    OUTPUT_KEYS = ("patch_scores",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        grid = dict(self.spec.get("patch") or {})
        stride = self.spec.get("stride", grid.get("stride"))
        if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
            raise ValueError(f"a patch model's output spec needs \"stride\" (px between patch centres, an"
                             f" integer >= 1), got {stride!r}")
        report = grid.get("report_px", stride)
        if isinstance(report, bool) or not isinstance(report, int) or report < stride or (report - stride) % 2:
            raise ValueError(f"output 'patch' 'report_px' must be an integer >= the stride ({stride}) by an even"
                             f" number of px, got {report!r}")
        self.stride, self.report_px = stride, report
        self.margin = (report - stride) // 2

    def check_outputs(self, outputs, batch, tile_hw):
        name, x = _only_or(outputs, self.spec, "patch_scores", "patch_scores")
        if x.dtype.kind != "f":
            raise OutputMismatch(f"output {name!r} is {x.dtype}; patch scores are probabilities (float)")
        hw = _per_tile_map(name, x, batch, "the patch scores")
        want = (tile_hw[0] // self.stride, tile_hw[1] // self.stride)
        if hw != want or tile_hw[0] % self.stride or tile_hw[1] % self.stride:
            raise OutputMismatch(f"output {name!r} is a {hw[0]} x {hw[1]} patch grid; a {tile_hw[0]} x"
                                 f" {tile_hw[1]} tile at stride {self.stride} needs {want[0]} x {want[1]}"
                                 " (the tile must be a multiple of the stride)")

    def to_maps(self, outputs, batch, tile_hw):
        name, x = _only_or(outputs, self.spec, "patch_scores", "patch_scores")
        amap = np.asarray(x, np.float32).reshape(batch, *x.shape[-2:])
        return AnomalyMaps(tile_hw, amap, None, None, self.stride)

    def _cells(self, grid: np.ndarray, tile_hw: tuple[int, int]) -> np.ndarray:
        """(gh, gw) -> (H, W): each cell's value over its stride x stride block."""
        s = self.stride
        up = np.repeat(np.repeat(grid, s, axis=0), s, axis=1)
        out = np.zeros(tile_hw, np.float32)
        h, w = min(tile_hw[0], up.shape[0]), min(tile_hw[1], up.shape[1])
        out[:h, :w] = up[:h, :w]
        return out

    def _squares(self, x: np.ndarray) -> np.ndarray:
        """(H, W) per-cell values -> the max over each pixel's patch squares (union of squares)."""
        if not self.margin:
            return x
        k = 2 * self.margin + 1
        return cv2.dilate(x, np.ones((k, k), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)

    def to_detections(self, maps):
        out = []
        for g in maps.anomaly_map:  # type: ignore[union-attr]
            if not (g >= self.score_threshold).any():
                out.append(Detections.empty())
                continue
            sq = self._squares(self._cells(g, maps.tile_hw))
            label = (sq >= self.score_threshold).view(np.uint8)
            out.append(components(label, sq, scale_yx=(1.0, 1.0), score_threshold=self.score_threshold,
                                  min_area_px=self.min_area_px, n_classes=1))
        return out

    def to_dense(self, maps, *, anomaly_range=None, raw=False):
        cells = np.stack([self._cells(g, maps.tile_hw) for g in maps.anomaly_map])  # type: ignore[union-attr]
        return DenseMaps(cells if raw else np.clip(cells, 0, 1), None)

    def reported(self, score):
        hit = (score >= self.score_threshold).view(np.uint8)
        return self._squares(hit).astype(bool) if self.margin else hit.astype(bool)


class ClassificationDecoder(Decoder[TileScores]):
    """(N, nc) logits or probabilities for a whole tile: one box = the tile when the top class is
    not the "good" class (named "good"/"ok"/"normal"/"background", else index 0). ``class_id``
    indexes ``class_names`` as given (the good class included)."""

    name = "classification"
    OUTPUT_KEYS = ("logits",)

    def check_outputs(self, outputs, batch, tile_hw):
        name, x = _only_or(outputs, self.spec, "logits", "logits", "output")
        nc = len(self.class_names)
        if x.dtype.kind != "f" or x.ndim < 1 or x.size != batch * nc or x.shape[0] != batch:
            raise OutputMismatch(f"output {name!r} is {x.dtype} of shape {tuple(x.shape)}; the decoder reads"
                                 f" (N, {nc}) scores, one per class in edge_inspector.classes, for a batch of {batch}")

    def to_maps(self, outputs, batch, tile_hw):
        return tile_scores(outputs, batch, tile_hw, spec=self.spec, class_names=self.class_names)

    def to_detections(self, maps):
        return whole_tile(maps.score, maps.class_id, self.score_threshold, maps.tile_hw)


class YoloDecoder(Decoder[Boxes]):
    """ultralytics export (``maps.yolo_boxes``): boxes above their class's threshold
    (``class_thresholds`` by name, else ``score_threshold``), then class-wise NMS (``spec["iou"]``,
    default 0.45; not for end-to-end exports), clipped to the tile, and the area filter."""

    name = "yolo"
    OUTPUT_KEYS = ("boxes",)
    PER_CLASS_THRESHOLDS = True
    FORMATS = ("ultralytics", "transposed", "end2end")

    def check_outputs(self, outputs, batch, tile_hw):
        name, x = _only_or(outputs, self.spec, "boxes", "output0")
        nc = len(self.class_names)
        fmt = self.spec.get("format")
        if fmt is not None and fmt not in self.FORMATS:
            raise OutputMismatch(f"output format {fmt!r} is not one of {', '.join(self.FORMATS)}")
        shape = tuple(x.shape)
        fits = {
            "ultralytics": len(shape) == 3 and shape[1] == 4 + nc,
            "transposed": len(shape) == 3 and shape[2] == 4 + nc,
            "end2end": len(shape) == 3 and shape[2] == 6,
        }
        fits_any = fits[fmt] if fmt else any(fits.values())
        if x.dtype.kind != "f" or len(shape) != 3 or shape[0] != batch or not fits_any:
            raise OutputMismatch(
                f"output {name!r} is {x.dtype} of shape {shape}; the decoder reads float (N, 4+nc, anchors),"
                f" (N, anchors, 4+nc) with nc = {nc} (the classes the model names), or end-to-end (N, k, 6),"
                f" for a batch of {batch}" + (f" (format {fmt!r})" if fmt else ""))

    def to_maps(self, outputs, batch, tile_hw):
        return yolo_boxes(outputs, batch, tile_hw, spec=self.spec, n_classes=len(self.class_names),
                          score_threshold=self.thresholds() if self.class_thresholds else self.score_threshold)

    def to_detections(self, maps):
        iou = float(self.spec.get("iou", 0.45))
        h, w = maps.tile_hw
        out = []
        for xyxy, score, cls in zip(maps.xyxy, maps.score, maps.class_id):
            if not maps.suppressed:
                keep = nms(xyxy, score, cls, iou)
                xyxy, score, cls = xyxy[keep], score[keep], cls[keep]
            if not len(score):
                out.append(Detections.empty())
                continue
            xyxy = np.clip(xyxy, 0, [w, h, w, h]).astype(np.float32)
            area = (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1])
            d = Detections(xyxy, cls, score.astype(np.float32), area.astype(np.float32))
            out.append(d.filter(area >= self.min_area_px))
        return out


DECODERS: dict[str, type[Decoder[Any]]] = {
    "segmentation": SegmentationDecoder,
    "yolo": YoloDecoder,
    "detection": YoloDecoder,
    "anomaly": AnomalyDecoder,
    "classification": ClassificationDecoder,
    "patch": PatchDecoder,
}

# edge_inspector.kind -> decoder name
KIND_DECODER: dict[str, str] = {
    "segmentation": "segmentation",
    "detection": "yolo",
    "anomaly": "anomaly",
    "classification": "classification",
    "patch": "patch",
}
