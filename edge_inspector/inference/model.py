"""Model: an ONNX defect model behind one call, ``infer(tiles) -> list[Detections]``.

``Model.load(cfg)`` reads the model contract (``contract.ModelContract``, docs/models.md) from
the file's ``metadata_props``, picks the decoder, opens an ONNX Runtime session on the first
execution provider of ``cfg.providers`` that is available (and says in the log which one really
runs), and refuses a fallback when ``cfg.require_provider`` is set.

Inference runs in two stages: ``model.run_maps(tiles)`` turns the raw outputs into the family's
named maps (``maps``: segmentation, anomaly, boxes, tile scores), and the decoder turns those into
``Detections`` (``infer``) or, for ``edge-inspector eval-model``, into dense score and class maps
at tile px (``model.decoder.to_dense(maps)``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnxruntime as ort
import structlog

from ..config import ModelCfg, Station
from ..detections import Detections
from ..errors import ModelError
from .contract import META, ModelContract
from .decoders import DECODERS, Decoder
from .maps import Maps
from .registry import builtin_path

log = structlog.get_logger(__name__)

DEFAULT_MIN_AREA_PX = 6  # smallest detection (tile px) when neither the station nor the model says


def station_batch(station: Station) -> tuple[int, int]:
    """(tile, tiles per inference call) of a station: ``model.batch``, else one strip's tiles."""
    from ..tile import column_starts

    t = station.tiling.tile
    try:
        cols = len(column_starts(station.camera.width, t, station.tiling.overlap))
    except ValueError:  # tiling that does not fit the line: reported where the stitcher is built
        cols = 1
    return t, station.model.batch or cols


class Model:
    """A loaded defect model: its contract, the decoder and the ONNX Runtime session."""

    def __init__(
        self,
        *,
        path: Path,
        session: ort.InferenceSession,
        contract: ModelContract,
        decoder: Decoder[Any],
        score_threshold: float,
        min_area_px: float,
    ) -> None:
        self.path = path
        self.session = session
        self.contract = contract
        self.decoder = decoder
        self.class_names: list[str] = list(contract.classes)
        self.score_threshold = score_threshold
        self.min_area_px = min_area_px
        self.metadata: dict[str, str] = dict(contract.metadata)
        self.provider: str = session.get_providers()[0]
        self.input_name: str = session.get_inputs()[0].name
        self.output_names: list[str] = [o.name for o in session.get_outputs()]

    @property
    def kind(self) -> str:
        return self.contract.kind

    @property
    def input_layout(self) -> str:
        return self.contract.input.layout

    @property
    def input_dtype(self) -> str:
        return self.contract.input.dtype

    @property
    def input_channels(self) -> int | None:
        return self.contract.input.channels

    @property
    def input_size(self) -> tuple[int, int] | None:
        return self.contract.input.size

    @property
    def fixed_batch(self) -> int | None:
        return self.contract.input.batch

    # ---------------------------------------------------------------- loading

    @classmethod
    def load(cls, cfg: ModelCfg, *, resolve: Callable[[str], Path] = lambda p: Path(p)) -> "Model":
        """Open the model named by ``cfg`` (station ``[model]``); ModelError says what is wrong."""
        path = builtin_path(cfg.path) if cfg.path.startswith("builtin:") else Path(resolve(cfg.path))
        if not path.is_file():
            raise ModelError("model file not found", path=path, where="model.path",
                             hint="give an .onnx file, or builtin:default")
        contract = ModelContract.read(path, cfg.decoder)
        # the station's settings win over the model's defaults
        score_threshold = (
            cfg.score_threshold if cfg.score_threshold is not None
            else contract.score_threshold if contract.score_threshold is not None else 0.5
        )
        min_area_px = (
            cfg.min_area_px if cfg.min_area_px is not None
            else contract.min_area_px if contract.min_area_px is not None else DEFAULT_MIN_AREA_PX
        )
        try:
            decoder = DECODERS[contract.decoder](
                class_names=list(contract.classes), score_threshold=score_threshold,
                min_area_px=min_area_px, spec=dict(contract.output),
            )
        except ValueError as e:  # an output spec the decoder cannot read
            raise ModelError(f"metadata {META}output: {e}", path=path) from None
        session = cls._session(cfg, path)
        return cls(path=path, session=session, contract=contract, decoder=decoder,
                   score_threshold=score_threshold, min_area_px=min_area_px)

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

    def run_maps(self, tiles: np.ndarray) -> Maps:
        """First stage for a (B, H, W, C) uint8 batch: the decoder's named maps (``maps``) of the raw
        outputs. A model with a fixed batch runs in calls of that batch, the last one padded
        (the padding's maps are dropped)."""
        tiles = _batch(tiles, "run_maps")
        b, h, w, _ = tiles.shape
        step = self.fixed_batch or b
        if step == b:
            return self.decoder.to_maps(self.run_raw(tiles), b, (h, w))
        parts = []
        for i in range(0, max(b, 1), step):  # an empty batch: one padded call, no maps
            part = tiles[i : i + step]
            n = len(part)
            if n < step:  # pad the last call to the fixed batch
                part = np.concatenate([part, np.zeros((step - n,) + part.shape[1:], part.dtype)])
            parts.append(self.decoder.to_maps(self.run_raw(part), step, (h, w)).head(n))
        return type(parts[0]).concat(parts)

    def infer(self, tiles: np.ndarray) -> list[Detections]:
        """Detections (tile px) for each tile of a (B, H, W, C) uint8 batch."""
        return self.decoder.to_detections(self.run_maps(_batch(tiles, "infer")))

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


def _batch(tiles: np.ndarray, who: str) -> np.ndarray:
    """A (B, H, W, C) batch; (B, H, W) gets a channel axis; ValueError otherwise."""
    if tiles.ndim == 3:
        tiles = tiles[..., None]
    if tiles.ndim != 4:
        raise ValueError(f"{who} wants a (B, H, W, C) batch, got shape {tiles.shape}")
    return tiles
