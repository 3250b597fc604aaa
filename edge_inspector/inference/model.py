"""Model: an ONNX defect model behind one call, ``infer(tiles) -> list[Detections]``.

``Model.load(cfg)`` reads the model contract (ARCHITECTURE.md 6) from the file's
``metadata_props``, picks the decoder, opens an ONNX Runtime session on the first execution
provider of ``cfg.providers`` that is available (and says in the log which one really runs),
and refuses a fallback when ``cfg.require_provider`` is set.

Models without ``edge_inspector.*`` metadata (an ultralytics or anomalib export, plain
segmentation logits) run when the station file names the decoder (``model.decoder``).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
import onnxruntime as ort
import structlog

from ..config import ModelCfg, Station
from ..detections import Detections
from ..errors import ModelError
from .baseline import BASELINE_PATH
from .decoders import DECODERS, KIND_DECODER, Decoder

log = structlog.get_logger(__name__)

# Built-in models shipped in edge_inspector/models/, addressed as "builtin:<name>".
BUILTIN_MODELS: dict[str, Path] = {"baseline": BASELINE_PATH}
# The station default ("builtin:default"). A learned model replaces the baseline here, in one place.
DEFAULT_MODEL = "baseline"

META = "edge_inspector."
KINDS = tuple(KIND_DECODER)
_DECODER_CHOICES = " | ".join(sorted(DECODERS))


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
        decoder = DECODERS[decoder_name](
            class_names=class_names, score_threshold=score_threshold,
            min_area_px=cfg.min_area_px, spec=out_spec,
        )
        session = cls._session(cfg, path)
        return cls(
            path=path, session=session, decoder=decoder, kind=kind, class_names=class_names,
            input_layout=inp["layout"], input_dtype=inp["dtype"], input_channels=inp["channels"],
            input_size=inp["size"], fixed_batch=inp["batch"], score_threshold=score_threshold,
            min_area_px=cfg.min_area_px, metadata=props,
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
        model.warmup()
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

    def warmup(self, tile: int = 256, batch: int = 1) -> None:
        """One inference on a blank batch (allocations, kernel selection) before real tiles."""
        h, w = self.input_size or (tile, tile)
        c = self.input_channels or 3
        self.infer(np.zeros((self.fixed_batch or batch, h, w, c), np.uint8))

    def __repr__(self) -> str:
        return (f"Model({self.path.name}, kind={self.kind}, classes={self.class_names},"
                f" provider={self.provider})")
