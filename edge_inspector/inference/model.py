"""Model: an ONNX defect model behind one call, ``infer(tiles) -> list[Detections]``.

``Model.load(cfg)`` reads the model contract (ARCHITECTURE.md 6) from the file's
``metadata_props``, picks the decoder, opens an ONNX Runtime session on the first execution
provider of ``cfg.providers`` that is available (and says in the log which one really runs),
and refuses a fallback when ``cfg.require_provider`` is set.

Models without ``edge_inspector.*`` metadata (an ultralytics or anomalib export, plain
segmentation logits) run when the station file names the decoder (``model.decoder``).

``model.maps(tiles)`` gives the per-pixel defect score and class maps instead of detections
(for ``edge-inspector eval-model``).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import structlog

from ..config import ModelCfg, Station
from ..detections import Detections
from ..errors import ModelError
from .baseline import BASELINE_PATH
from .decoders import (
    DECODERS, KIND_DECODER, AnomalyDecoder, Decoder, SegmentationDecoder, _is_probability, _scale, _sigmoid,
    _softmax,
)

log = structlog.get_logger(__name__)

# Built-in models shipped in edge_inspector/models/, addressed as "builtin:<name>" (docs/models.md).
MODELS_DIR = BASELINE_PATH.parent
BUILTIN_MODELS: dict[str, Path] = {
    "baseline": BASELINE_PATH,  # classical, brightness only
    "attention-unet": MODELS_DIR / "attention_unet.onnx",  # learned (edge_inspector/train)
    "attention-unet-fp16": MODELS_DIR / "attention_unet_fp16.onnx",  # the same in float16, for GPUs
    "unet": MODELS_DIR / "unet.onnx",  # plain U-Net trained the same way, for comparison
}
# The station default ("builtin:default"): the learned Attention U-Net (edge_inspector/train,
# docs/models.md); the classical baseline stays selectable as builtin:baseline.
DEFAULT_MODEL = "attention-unet"

META = "edge_inspector."
DEFAULT_MIN_AREA_PX = 6  # smallest detection (tile px) when neither the station nor the model says
KINDS = tuple(KIND_DECODER)
_DECODER_CHOICES = " | ".join(sorted(DECODERS))


def station_batch(station: Station) -> tuple[int, int]:
    """(tile, tiles per inference call) of a station: ``model.batch``, else one strip's tiles."""
    from ..tile import column_starts

    t = station.tiling.tile
    try:
        cols = len(column_starts(station.camera.width, t, station.tiling.overlap))
    except ValueError:  # tiling that does not fit the line: reported where the stitcher is built
        cols = 1
    return t, station.model.batch or cols


def builtin_path(path: str) -> Path:
    """``builtin:<name>`` -> the shipped file; ``builtin:default`` -> ``DEFAULT_MODEL``."""
    name = path.split(":", 1)[1]
    if name == "default":
        name = DEFAULT_MODEL
    if name not in BUILTIN_MODELS:
        raise ModelError(
            f"unknown built-in model {name!r}", path=path, where="model.path",
            hint="use builtin:default, " + ", ".join(f"builtin:{n}" for n in BUILTIN_MODELS)
            + " or the path of an .onnx file",
        )
    return BUILTIN_MODELS[name]


def _json_meta(props: dict[str, str], key: str, path: Path, kind: type) -> Any:
    try:
        value = json.loads(props[key])
    except json.JSONDecodeError as e:
        raise ModelError(f"metadata {key} is not valid JSON: {e}", path=path) from None
    if not isinstance(value, kind):
        raise ModelError(
            f"metadata {key} must be a JSON {'list' if kind is list else 'object'}, got {props[key]!r}",
            path=path,
        )
    return value


def _float_meta(props: dict[str, str], key: str, path: Path) -> float | None:
    if key not in props:
        return None
    try:
        return float(props[key])
    except ValueError:
        raise ModelError(f"metadata {key} must be a number, got {props[key]!r}", path=path) from None


def _ultralytics_names(props: dict[str, str]) -> list[str]:
    """ultralytics stores ``names`` as a Python dict literal: "{0: 'hole', 1: 'cut'}"."""
    try:
        names = ast.literal_eval(props.get("names", ""))
    except (ValueError, SyntaxError):
        return []
    if isinstance(names, dict):
        return [str(names[k]) for k in sorted(names)]
    if isinstance(names, (list, tuple)):
        return [str(n) for n in names]
    return []


class Model:
    """A loaded defect model. Attributes describe what it expects and how it decodes."""

    def __init__(
        self,
        *,
        path: Path,
        session: ort.InferenceSession,
        decoder: Decoder,
        kind: str,
        class_names: list[str],
        input_layout: str,
        input_dtype: str,
        input_channels: int | None,
        input_size: tuple[int, int] | None,
        fixed_batch: int | None,
        score_threshold: float,
        min_area_px: float,
        metadata: dict[str, str],
    ) -> None:
        self.path = path
        self.session = session
        self.decoder = decoder
        self.kind = kind
        self.class_names = class_names
        self.input_layout = input_layout
        self.input_dtype = input_dtype
        self.input_channels = input_channels
        self.input_size = input_size
        self.fixed_batch = fixed_batch
        self.score_threshold = score_threshold
        self.min_area_px = min_area_px
        self.metadata = metadata
        self.provider: str = session.get_providers()[0]
        self.input_name: str = session.get_inputs()[0].name
        self.output_names: list[str] = [o.name for o in session.get_outputs()]

    # ---------------------------------------------------------------- loading

    @classmethod
    def load(cls, cfg: ModelCfg, *, resolve: Callable[[str], Path] = lambda p: Path(p)) -> "Model":
        """Open the model named by ``cfg`` (station ``[model]``); ModelError says what is wrong."""
        path = builtin_path(cfg.path) if cfg.path.startswith("builtin:") else Path(resolve(cfg.path))
        if not path.is_file():
            raise ModelError("model file not found", path=path, where="model.path",
                             hint="give an .onnx file, or builtin:default")
        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as e:  # protobuf DecodeError, RuntimeError, ...
            raise ModelError(f"not an ONNX model ({type(e).__name__}: {e})", path=path) from None
        if not len(proto.graph.node) or not len(proto.graph.input) or not len(proto.graph.output):
            raise ModelError("not an ONNX model (no graph, inputs or outputs)", path=path)
        props = {p.key: p.value for p in proto.metadata_props}
        initializers = {i.name for i in proto.graph.initializer}
        graph_input = next((i for i in proto.graph.input if i.name not in initializers), None)
        if graph_input is None:
            raise ModelError("not an ONNX model (no graph input)", path=path)
        del proto  # the session parses the file itself

        kind, decoder_name, class_names, inp, out_spec = cls._contract(cfg, props, path, graph_input)
        meta_thr = _float_meta(props, META + "score_threshold", path)
        score_threshold = (
            cfg.score_threshold if cfg.score_threshold is not None
            else meta_thr if meta_thr is not None else 0.5
        )
        meta_area = _float_meta(props, META + "min_area_px", path)
        min_area_px = (
            cfg.min_area_px if cfg.min_area_px is not None
            else meta_area if meta_area is not None else DEFAULT_MIN_AREA_PX
        )
        try:
            decoder = DECODERS[decoder_name](
                class_names=class_names, score_threshold=score_threshold,
                min_area_px=min_area_px, spec=out_spec,
            )
        except ValueError as e:  # an output spec the decoder cannot read
            raise ModelError(f"metadata {META}output: {e}", path=path) from None
        session = cls._session(cfg, path)
        return cls(
            path=path, session=session, decoder=decoder, kind=kind, class_names=class_names,
            input_layout=inp["layout"], input_dtype=inp["dtype"], input_channels=inp["channels"],
            input_size=inp["size"], fixed_batch=inp["batch"], score_threshold=score_threshold,
            min_area_px=min_area_px, metadata=props,
        )

    @staticmethod
    def _contract(
        cfg: ModelCfg, props: dict[str, str], path: Path, graph_input: onnx.ValueInfoProto
    ) -> tuple[str, str, list[str], dict[str, Any], dict[str, Any]]:
        """kind, decoder name, class names, input description, output spec."""
        dims = [d.dim_value if d.HasField("dim_value") else None
                for d in graph_input.type.tensor_type.shape.dim]
        elem = graph_input.type.tensor_type.elem_type
        graph_dtype = onnx.helper.tensor_dtype_to_np_dtype(elem).name if elem else "float32"
        batch = dims[0] if dims and dims[0] else None
        has_meta = any(k.startswith(META) for k in props)

        if has_meta:
            key = META + "kind"
            if key not in props:
                raise ModelError(f"metadata {key} is missing (one of {', '.join(KINDS)})", path=path)
            kind = props[key]
            if kind not in KIND_DECODER:
                raise ModelError(f"metadata {key} = {kind!r} is not a known kind (one of {', '.join(KINDS)})",
                                 path=path)
            key = META + "classes"
            if key not in props:
                raise ModelError(f"metadata {key} is missing (a JSON list of class names)", path=path)
            class_names = _json_meta(props, key, path, list)
            if not all(isinstance(c, str) for c in class_names):
                raise ModelError(f"metadata {key} must list class names as strings", path=path)
            key = META + "input"
            if key not in props:
                raise ModelError(f"metadata {key} is missing (JSON: layout, dtype, channels, size)", path=path)
            spec_in = _json_meta(props, key, path, dict)
            layout = spec_in.get("layout", "NHWC")
            if layout not in ("NHWC", "NCHW"):
                raise ModelError(f"metadata {key}: layout {layout!r} must be NHWC or NCHW", path=path)
            dtype = spec_in.get("dtype", graph_dtype)
            channels = spec_in.get("channels")
            size = spec_in.get("size") or [None, None]
            if (channels is not None and not isinstance(channels, int)) or not isinstance(size, list) \
                    or len(size) != 2:
                raise ModelError(f"metadata {key}: channels must be an integer and size [h, w]"
                                 f" (null for dynamic), got {props[key]!r}", path=path)
            out_spec = _json_meta(props, META + "output", path, dict) if META + "output" in props else {}
            decoder_name = KIND_DECODER[kind] if cfg.decoder == "auto" else cfg.decoder
        else:
            if cfg.decoder == "auto":
                raise ModelError(
                    "no edge_inspector.* metadata (edge_inspector.kind is missing), so the decoder is"
                    " unknown", path=path,
                    hint=f"set model.decoder in the station file ({_DECODER_CHOICES})",
                )
            decoder_name = cfg.decoder
            kind = {"yolo": "detection"}.get(decoder_name, decoder_name)
            class_names = _ultralytics_names(props) or (["anomaly"] if kind == "anomaly" else ["defect"])
            # foreign exports: NCHW float (ultralytics, anomalib) unless the shape says NHWC
            if len(dims) == 4 and dims[3] in (1, 3) and dims[1] not in (1, 3):
                layout, channels, size = "NHWC", dims[3], dims[1:3]
            elif len(dims) == 4:
                layout, channels, size = "NCHW", dims[1], dims[2:4]
            else:
                raise ModelError(f"input {graph_input.name!r} has shape {dims}; expected 4 dimensions",
                                 path=path)
            dtype, out_spec = graph_dtype, {}
        size_t = tuple(size) if all(isinstance(s, int) and s > 0 for s in size) else None
        inp = {"layout": layout, "dtype": dtype, "channels": channels, "size": size_t, "batch": batch}
        return kind, decoder_name, class_names, inp, out_spec

    @staticmethod
    def _session(cfg: ModelCfg, path: Path) -> ort.InferenceSession:
        available = ort.get_available_providers()
        wanted = list(cfg.providers) or ["CPUExecutionProvider"]
        providers = []
        for p in wanted:
            if p in available:
                providers.append(p)
            else:
                log.warning("provider_unavailable", provider=p, available=available, model=str(path))
        if cfg.require_provider and wanted[0] not in providers:
            raise ModelError(
                f"execution provider {wanted[0]} is not available in this onnxruntime"
                f" (available: {', '.join(available)})", path=path, where="model.providers",
                hint="install the matching onnxruntime build, or set model.require_provider = false",
            )
        if not providers:
            log.warning("provider_fallback", wanted=wanted, using="CPUExecutionProvider")
            providers = ["CPUExecutionProvider"]
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if cfg.intra_op_threads:
            so.intra_op_num_threads = cfg.intra_op_threads
        so.log_severity_level = 3  # ONNX Runtime's own warnings go to stderr otherwise
        try:
            session = ort.InferenceSession(str(path), sess_options=so, providers=providers)
        except Exception as e:
            raise ModelError(f"ONNX Runtime cannot open the model: {e}", path=path) from None
        running = session.get_providers()[0]
        if running != wanted[0]:
            log.warning("provider_fallback", wanted=wanted[0], provider=running, model=str(path))
        if cfg.require_provider and running != wanted[0]:
            raise ModelError(
                f"runs on {running}, not on {wanted[0]}", path=path, where="model.providers",
                hint="model.require_provider = true refuses a fallback",
            )
        log.info("model_session", model=str(path), provider=running, providers=session.get_providers())
        return session

    # ---------------------------------------------------------------- use

    @classmethod
    def for_station(cls, station: Station, model_path: str | None = None) -> "Model":
        """The station's model (or ``model_path``), checked against its tiles and warmed up."""
        cfg = station.model if model_path is None else station.model.model_copy(update={"path": model_path})
        model = cls.load(cfg, resolve=station.resolve)
        model.check_fits(station.tiling.tile, station.camera.channels, cfg.path)
        model.warmup(*station_batch(station))
        log.info("model", path=str(model.path), kind=model.kind, provider=model.provider, classes=model.class_names)
        return model

    def check_fits(self, tile: int, channels: int, path_for_errors: str | Path | None = None) -> None:
        """ModelError when the model's input channels or fixed size do not fit camera / tiling."""
        if self.input_channels is not None and self.input_channels != channels:
            raise ModelError(
                f"model input channels {self.input_channels} does not fit camera.channels = {channels}",
                path=path_for_errors, where="camera.channels",
                hint=f"use a {channels}-channel model in model.path ({self.path})",
            )
        if self.input_size is not None and tuple(self.input_size) != (tile, tile):
            h, w = self.input_size
            raise ModelError(
                f"model input size {h}x{w} does not fit tiling.tile = {tile}",
                path=path_for_errors, where="tiling.tile",
                hint=f"set tiling.tile = {h}" if h == w else f"the model ({self.path}) needs square tiles",
            )

    def _feed(self, tiles: np.ndarray) -> np.ndarray:
        if self.input_layout == "NHWC" and self.input_dtype == "uint8":
            return tiles if tiles.flags.c_contiguous else np.ascontiguousarray(tiles)
        # foreign models: float NCHW scaled to 0..1 (ultralytics, anomalib convention)
        x = tiles.transpose(0, 3, 1, 2) if self.input_layout == "NCHW" else tiles
        return np.ascontiguousarray(x, dtype=np.dtype(self.input_dtype)) * (
            np.float32(1 / 255) if self.input_dtype.startswith("float") else 1
        )

    def run_raw(self, tiles: np.ndarray) -> dict[str, np.ndarray]:
        """Raw outputs by name for a (B, H, W, C) batch (no decoding)."""
        feed = self._feed(tiles)
        outs = self.session.run(self.output_names, {self.input_name: feed})
        return dict(zip(self.output_names, outs))

    def infer(self, tiles: np.ndarray) -> list[Detections]:
        """Detections (tile px) for each tile of a (B, H, W, C) uint8 batch."""
        if tiles.ndim == 3:
            tiles = tiles[..., None]
        if tiles.ndim != 4:
            raise ValueError(f"infer wants a (B, H, W, C) batch, got shape {tiles.shape}")
        b, h, w, _ = tiles.shape
        if self.fixed_batch and self.fixed_batch != b:
            fb = self.fixed_batch
            out: list[Detections] = []
            for i in range(0, b, fb):
                part = tiles[i : i + fb]
                if len(part) < fb:  # pad the last call to the fixed batch
                    pad = np.zeros((fb - len(part),) + part.shape[1:], part.dtype)
                    out.extend(self.decoder.decode(self.run_raw(np.concatenate([part, pad])), fb, (h, w))[: len(part)])
                else:
                    out.extend(self.decoder.decode(self.run_raw(part), fb, (h, w)))
            return out
        return self.decoder.decode(self.run_raw(tiles), b, (h, w))

    def maps(
        self, tiles: np.ndarray, *, anomaly_range: tuple[float, float] | None = None, raw: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Per-pixel defect score and class map of a (B, H, W, C) uint8 batch, at tile resolution.

        Returns ``score`` (B, H, W) float32 in [0, 1] and ``class_map`` (B, H, W) int32
        (0 = background, k = class k-1 of ``class_names``), or None for anomaly models.
        Maps at an output stride are brought to tile px: scores bilinear, classes by nearest neighbour (each output pixel
        covers its stride x stride block, as the decoders scale components).

        - segmentation: ``class_map`` + ``score_map`` (uint8 / 255, or float); a class map alone
          scores 1 on its pixels; (N, C, h, w) logits/probabilities: 1 - p(background), class =
          argmax; one channel: the probability (sigmoid of logits), class 1 where >= threshold.
        - anomaly: ``anomaly_map`` scaled by ``anomaly_range`` (lo, hi) -> (x - lo) / (hi - lo),
          else by the metadata ``edge_inspector.output`` ``min`` / ``max`` (with ``threshold``:
          anomalib's (x - threshold) / (max - min) + 0.5), else as is; then clipped to [0, 1].
          ``raw=True`` skips scaling and clipping (to find a map's range). Without a map:
          ``pred_mask`` (1 inside), else ``pred_score`` over the whole tile.
        - detection / classification: the decoded ``Detections`` rasterised (outline, else box)
          with their scores (the highest wins where they overlap), so only detections above the
          score threshold score at all.
        """
        if tiles.ndim == 3:
            tiles = tiles[..., None]
        if tiles.ndim != 4:
            raise ValueError(f"maps wants a (B, H, W, C) batch, got shape {tiles.shape}")
        b, h, w, _ = tiles.shape
        if not isinstance(self.decoder, (SegmentationDecoder, AnomalyDecoder)):
            return _rasterise(self.infer(tiles), (h, w))
        step = self.fixed_batch or b
        scores: list[np.ndarray] = []
        classes: list[np.ndarray | None] = []
        for i in range(0, b, step):
            part = tiles[i : i + step]
            n = len(part)
            if n < step:  # pad the last call to the fixed batch
                part = np.concatenate([part, np.zeros((step - n,) + part.shape[1:], part.dtype)])
            outputs = self.run_raw(part)
            if isinstance(self.decoder, SegmentationDecoder):
                score, cls = _segmentation_maps(self.decoder, outputs, step)
            else:
                score, cls = _anomaly_map(self.decoder, outputs, step, anomaly_range, raw), None
            stride = self.decoder.spec.get("stride")
            scores.append(_to_tile(score[:n], (h, w), stride, linear=True))
            classes.append(None if cls is None else _to_tile(cls[:n], (h, w), stride))
        return np.concatenate(scores), None if classes[0] is None else np.concatenate(classes)  # type: ignore[arg-type]

    def warmup(self, tile: int = 256, batch: int = 1, runs: int = 2) -> None:
        """Inferences on a blank batch of the real shape before real tiles: ONNX Runtime sizes its
        memory arena and picks kernels on the first calls of a shape (on 2 CPU cores the first two
        calls with a strip of 2048² tiles took 1.6 and 3.7 s against 0.56 s after)."""
        h, w = self.input_size or (tile, tile)
        c = self.input_channels or 3
        x = np.zeros((self.fixed_batch or batch, h, w, c), np.uint8)
        for _ in range(runs):
            self.infer(x)

    def __repr__(self) -> str:
        return (f"Model({self.path.name}, kind={self.kind}, classes={self.class_names},"
                f" provider={self.provider})")


# ------------------------------------------------------------------ raw maps (Model.maps)


def _segmentation_maps(dec: Decoder, outputs: dict[str, np.ndarray], batch: int) -> tuple[np.ndarray, np.ndarray]:
    """(score, class map) at the output resolution, from the outputs the decoder would read."""
    cm = dec._output(outputs, "class_map", "class_map")
    if cm is not None:
        cm = np.asarray(cm).reshape(batch, *cm.shape[-2:])
        sm = dec._output(outputs, "score_map", "score_map")
        if sm is None:
            score = (cm > 0).astype(np.float32)
        elif sm.dtype == np.uint8:
            score = sm.reshape(cm.shape).astype(np.float32) / np.float32(255)
        else:
            score = np.clip(np.asarray(sm, np.float32).reshape(cm.shape), 0, 1)
        return score, cm.astype(np.int32)
    x = dec._output(outputs, "logits", "logits", "probabilities", "output")
    x = np.asarray(next(iter(outputs.values())) if x is None else x, np.float32)
    if x.ndim == 3:
        x = x[:, None]
    x = x.reshape(batch, -1, *x.shape[-2:])
    if x.shape[1] == 1:  # one class, decided per tile as the decoder does
        p = np.stack([xi[0] if _is_probability(xi) else _sigmoid(xi[0]) for xi in x]).astype(np.float32)
        return p, (p >= dec.score_threshold).astype(np.int32)
    p = np.stack([xi if _is_probability(xi) and np.allclose(xi.sum(0)[::16, ::16], 1, atol=1e-3)
                  else _softmax(xi, 0) for xi in x]).astype(np.float32)
    return 1 - p[:, 0], p.argmax(1).astype(np.int32)


def _anomaly_map(dec: Decoder, outputs: dict[str, np.ndarray], batch: int,
                 anomaly_range: tuple[float, float] | None, raw: bool) -> np.ndarray:
    """Anomaly score at the output resolution, scaled as ``Model.maps`` says."""
    amap = dec._output(outputs, "anomaly_map", "anomaly_map")
    if amap is None:
        pmask = dec._output(outputs, "pred_mask", "pred_mask")
        if pmask is not None:
            return (np.asarray(pmask).reshape(batch, *pmask.shape[-2:]) > 0).astype(np.float32)
        pscore = dec._output(outputs, "pred_score", "pred_score")
        if pscore is not None:  # one score for the whole tile: a 1 x 1 map
            amap = np.asarray(pscore).reshape(batch, -1)[:, :1, None]
        else:
            amap = next(iter(outputs.values()))
    a = np.asarray(amap, np.float32).reshape(batch, *amap.shape[-2:])
    if raw:
        return a
    spec = dec.spec
    if anomaly_range is not None:
        lo, hi = anomaly_range
        a = (a - np.float32(lo)) / np.float32(max(hi - lo, 1e-12))
    elif "min" in spec and "max" in spec:
        span = np.float32(max(float(spec["max"]) - float(spec["min"]), 1e-12))
        a = ((a - np.float32(spec["threshold"])) / span + np.float32(0.5) if "threshold" in spec
             else (a - np.float32(spec["min"])) / span)
    return np.clip(a, 0, 1)


def _to_tile(m: np.ndarray, tile_hw: tuple[int, int], stride: Any, linear: bool = False) -> np.ndarray:
    """(B, h, w) map -> (B, H, W) tile px: nearest neighbour (pixel centres; ``stride`` if given), or
    bilinear for score maps (``linear``): a strided model is trained against its upsampled output."""
    h, w = m.shape[-2:]
    if (h, w) == tuple(tile_hw):
        return m
    sy, sx = _scale((h, w), tile_hw, stride if (h, w) != (1, 1) else None)
    if linear and min(h, w) > 1:
        big = [cv2.resize(np.ascontiguousarray(x, np.float32), (round(w * sx), round(h * sy)),
                          interpolation=cv2.INTER_LINEAR) for x in m]
        out = np.zeros((len(m), *tile_hw), np.float32)
        for o, b in zip(out, big):
            hh, ww = min(tile_hw[0], b.shape[0]), min(tile_hw[1], b.shape[1])
            o[:hh, :ww] = b[:hh, :ww]
        return out
    rows = np.minimum(((np.arange(tile_hw[0]) + 0.5) / sy).astype(np.intp), h - 1)
    cols = np.minimum(((np.arange(tile_hw[1]) + 0.5) / sx).astype(np.intp), w - 1)
    return np.take(np.take(m, rows, axis=1), cols, axis=2)


def _rasterise(dets: list[Detections], tile_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Detections per tile -> (score, class map): each outline (else box) filled with its score."""
    h, w = tile_hw
    score = np.zeros((len(dets), h, w), np.float32)
    cls = np.zeros((len(dets), h, w), np.int32)
    for i, d in enumerate(dets):
        for j in np.argsort(d.score, kind="stable"):  # ascending: the highest score is painted last
            poly = d.polygons[j] if d.polygons is not None else None
            if poly is not None:
                inside = np.zeros((h, w), np.uint8)
                cv2.fillPoly(inside, [np.round(poly - 0.5).astype(np.int32)], 1)
                sel: Any = inside.view(bool)
            else:
                x0, y0, x1, y1 = d.xyxy[j]
                sel = (slice(max(0, int(np.floor(y0))), min(h, int(np.ceil(y1)))),
                       slice(max(0, int(np.floor(x0))), min(w, int(np.ceil(x1)))))
            score[i][sel] = d.score[j]
            cls[i][sel] = d.class_id[j] + 1
    return score, cls
