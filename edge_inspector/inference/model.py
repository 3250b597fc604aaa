"""Model: an ONNX defect model behind one call, ``infer(tiles) -> list[Detections]``.

``Model.load(cfg)`` reads the model contract (``contract.ModelContract``, docs/models.md) from
the file's ``metadata_props``, picks the decoder, opens an ONNX Runtime session on the first
runtime of ``cfg.providers`` that is present (``runtime.open_session``: an ONNX Runtime provider,
or OpenVINO for the CPU when installed; the log says which one really runs), and refuses a fallback
when ``cfg.require_provider`` is set.

``Model.for_station(station)`` then fits it to the camera (``check_fits``: tile size, and the
input mapping of ``feed.InputFeed``: mono into a 3-channel model, 12/16-bit samples into a uint8
or float model) and warms it up on batches of the real shape, checking that its outputs fit the
decoder; anything that cannot work ends there, before the first line is read, as a ``ModelError``
naming the model file and the key or output.

Inference runs in two stages: ``model.run_maps(tiles)`` turns the raw outputs into the family's
named maps (``maps``: segmentation, anomaly, boxes, tile scores), and the decoder turns those into
``Detections`` (``infer``) or, for ``edge-inspector eval-model``, into dense score and class maps
at tile px (``model.decoder.to_dense(maps)``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import structlog

from ..config import ModelCfg, Station
from ..detections import Detections
from ..errors import ModelError, ModelUnavailable
from .contract import META, ModelContract
from .decoders import DECODERS, Decoder, OutputMismatch, YoloDecoder
from .feed import MODEL_DTYPES, InputFeed, Resize, sample_bits
from .maps import Boxes, Maps
from .registry import builtin_path
from .runtime import Session, open_session

log = structlog.get_logger(__name__)

DEFAULT_MIN_AREA_PX = 6  # smallest detection (tile px) when neither the station nor the model says


def station_batch(station: Station, provider: str | None = None, fixed: int | None = None) -> tuple[int, int]:
    """(tile, tiles per inference call) of a station: ``model.batch``, else (0 = auto) the model's
    ``fixed`` batch if its graph has one, one tile per call on a CPU runtime, one strip's tiles
    elsewhere (a GPU). On the CPU one tile per call runs
    at the same tiles/s as a strip of 5 and needs a fifth of the model's working memory
    (ONNX Runtime 3.4 GB -> 0.9 GB peak for the default model, docs/performance.md)."""
    from ..tile import column_starts

    t = station.tiling.tile
    try:
        cols = len(column_starts(station.camera.width, t, station.tiling.overlap))
    except ValueError:  # tiling that does not fit the line: reported where the stitcher is built
        cols = 1
    if station.model.batch:
        return t, station.model.batch
    if fixed:
        return t, fixed
    return t, 1 if provider is not None and cpu_provider(provider) else cols


def cpu_provider(provider: str) -> bool:
    """Whether a session's provider runs on the CPU (ONNX Runtime's CPU provider, OpenVINO:CPU)."""
    return provider == "CPUExecutionProvider" or provider.endswith(":CPU")


class Model:
    """A loaded defect model: its contract, the decoder and the runtime session (runtime.py)."""

    def __init__(
        self,
        *,
        path: Path,
        session: Session,
        contract: ModelContract,
        decoder: Decoder[Any],
        score_threshold: float,
        min_area_px: float,
        resize_mode: str = "none",
    ) -> None:
        self.path = path
        self.session = session
        self.contract = contract
        self.decoder = decoder
        self.class_names: list[str] = list(contract.classes)
        self.score_threshold = score_threshold
        self.min_area_px = min_area_px
        self.metadata: dict[str, str] = dict(contract.metadata)
        self.provider: str = session.provider
        self.parallel: int = getattr(session, "parallel", 1)  # calls that run side by side (OpenVINO streams)
        self.input_name: str = session.input_name
        self.output_names: list[str] = list(session.output_names)
        # camera samples -> model input; set by check_fits, else planned per batch from its tiles
        self.feed: InputFeed | None = None
        # tile -> fixed input of a detection model ("letterbox" | "stretch" | "none"); set by check_fits
        self.resize_mode = resize_mode
        self.resize: Resize | None = None

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
        if contract.input.dtype not in MODEL_DTYPES:
            raise ModelError(f"input type {contract.input.dtype} is not supported (one of {', '.join(MODEL_DTYPES)})",
                             path=path, where=f"{META}input")
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
                min_area_px=min_area_px, spec={**contract.output, **cfg.outputs,  # the station's names win
                      **({} if cfg.peak_extent is None else {"peak_extent": cfg.peak_extent})},
                class_thresholds=cfg.class_thresholds,
            )
            decoder.check_names(contract.outputs)
        except ValueError as e:  # an output spec the decoder cannot read, or names no output has
            src = ("station [model] class_thresholds" if cfg.class_thresholds and "class_thresholds" in str(e)
                   else "station [model] outputs" if any(f"{k!r}" in str(e) for k in cfg.outputs)
                   else f"metadata {META}output")
            raise ModelError(f"{src}: {e}", path=path) from None
        session = open_session(cfg, path)
        resize_mode = cfg.resize if cfg.resize != "auto" else contract.input.resize or "none"
        return cls(path=path, session=session, contract=contract, decoder=decoder,
                   score_threshold=score_threshold, min_area_px=min_area_px, resize_mode=resize_mode)

    # ---------------------------------------------------------------- use

    @classmethod
    def for_station(cls, station: Station, model_path: str | None = None) -> "Model":
        """The station's model (or ``model_path``), checked against its tiles and warmed up."""
        cfg = station.model if model_path is None else station.model.model_copy(update={"path": model_path})
        model = cls.load(cfg, resolve=station.resolve)
        model.fit_station(station)
        model.warmup(*station_batch(station, model.provider, model.fixed_batch))
        log.info("model", path=str(model.path), kind=model.kind, provider=model.provider, classes=model.class_names,
                 input=model.feed.describe() if model.feed else None,
                 resize=model.resize.describe() if model.resize else None)
        return model

    def fit_station(self, station: Station) -> None:
        """``check_fits`` with the station's tile and camera (channels, sample type, bit depth from
        ``camera.pixel_format``)."""
        cam = station.camera
        self.check_fits(station.tiling.tile, cam.channels, station._path, dtype=cam.dtype,
                        bits=sample_bits(cam.pixel_format, cam.dtype))

    def check_fits(self, tile: int, channels: int, path_for_errors: str | Path | None = None, *,
                   dtype: str = "uint8", bits: int | None = None) -> None:
        """ModelError when the model's input cannot take the camera's tiles (``channels`` x ``dtype``
        with ``bits`` significant bits; see ``feed.InputFeed``) or its fixed size does not fit the
        tiling; otherwise the input mapping is set (``self.feed``). A detection model whose fixed
        input differs from the tile gets each tile resized (``self.resize``, ``feed.Resize``) when
        ``[model] resize`` (or its ``edge_inspector.input`` "resize") says letterbox or stretch.
        ``path_for_errors``: the file that sets the camera and tiling (the station), named beside
        the model file."""
        where = f"camera.channels ({path_for_errors})" if path_for_errors else "camera.channels"
        self.feed = InputFeed.plan(model_channels=self.input_channels, model_dtype=self.input_dtype,
                                   layout=self.input_layout, channels=channels, dtype=dtype, bits=bits,
                                   path=self.path, where=where)
        self.resize = None
        if self.input_size is not None and tuple(self.input_size) != (tile, tile):
            h, w = self.input_size
            detector = isinstance(self.decoder, YoloDecoder)
            if self.resize_mode != "none" and not detector:
                raise ModelError(f"[model] resize = {self.resize_mode!r} applies to detection (yolo) models; this"
                                 f" is a {self.decoder.name} model with input {h}x{w}", path=path_for_errors,
                                 where="model.resize", hint=f"set tiling.tile = {h}" if h == w else None)
            if self.resize_mode == "none":
                hint = f"set tiling.tile = {h}" if h == w else f"the model ({self.path}) needs square tiles"
                if detector:
                    hint += ', or [model] resize = "letterbox" (or "stretch") to scale each tile to the input'
                raise ModelError(f"model input size {h}x{w} does not fit tiling.tile = {tile}",
                                 path=path_for_errors, where="tiling.tile", hint=hint)
            self.resize = Resize.plan(self.resize_mode, (tile, tile), (h, w), self.feed.bits)

    def _feed(self, tiles: np.ndarray) -> np.ndarray:
        feed = self.feed or InputFeed.plan(
            model_channels=self.input_channels, model_dtype=self.input_dtype, layout=self.input_layout,
            channels=tiles.shape[-1], dtype=tiles.dtype.name, path=self.path)
        return feed(tiles)

    def run_raw(self, tiles: np.ndarray) -> dict[str, np.ndarray]:
        """Raw outputs by name for a (B, H, W, C) camera batch (no decoding)."""
        feed = self._feed(tiles)
        outs = self.session.run(self.output_names, {self.input_name: feed})
        return dict(zip(self.output_names, outs))

    def run_maps(self, tiles: np.ndarray, *, check: bool = False) -> Maps:
        """First stage for a (B, H, W, C) camera batch (uint8, or uint16 after ``check_fits``): the
        decoder's named maps (``maps``) of the raw outputs. A model with a fixed batch runs in
        calls of that batch, the last one padded (the padding's maps are dropped). A resized
        detection model (``self.resize``) gets its boxes back in tile px. ``check``:
        ValueError when the raw outputs do not fit the decoder (``Decoder.check_outputs``)."""
        return self.run_maps_of(tiles, (self.decoder,), check=check)[0]

    def run_maps_of(self, tiles: np.ndarray, decoders: tuple[Decoder[Any], ...], *, check: bool = False
                    ) -> list[Maps]:
        """``run_maps`` for several decoders of this model's outputs (e.g. its own and a
        ``Decoder.ranking`` copy for ``eval-model``), from one run of the model."""
        tiles = _batch(tiles, "run_maps")
        b, h, w, _ = tiles.shape
        if self.resize is not None and (h, w) != self.resize.tile_hw:
            raise ValueError(f"the model is set up for {self.resize.describe()}, got {w}x{h} tiles")
        step = self.fixed_batch or b
        calls = [(tiles, b)] if step == b else [(tiles[i : i + step], len(tiles[i : i + step]))
                                                  for i in range(0, max(b, 1), step)]
        parts: list[list[Maps]] = [[] for _ in decoders]
        for part, n in calls:  # an empty batch with a fixed batch: one padded call, no maps
            if n < step:  # pad the last call to the fixed batch
                part = np.concatenate([part, np.zeros((step - n,) + part.shape[1:], part.dtype)])
            if self.resize is not None:
                part = self.resize(part)
            raw = self.run_raw(part)
            hw = part.shape[1:3]
            for k, dec in enumerate(decoders):
                if check:
                    dec.check_outputs(raw, len(part), hw)
                maps = dec.to_maps(raw, len(part), hw)
                if self.resize is not None and isinstance(maps, Boxes):
                    maps = replace(maps, tile_hw=(h, w), xyxy=[self.resize.to_tile(x) for x in maps.xyxy])
                parts[k].append(maps.head(n) if n < len(part) else maps)
        return [type(p[0]).concat(p) for p in parts]

    def infer(self, tiles: np.ndarray) -> list[Detections]:
        """Detections (tile px) for each tile of a (B, H, W, C) camera batch. ModelError when the
        model gives a class id its ``edge_inspector.classes`` does not name (a run stops with it
        rather than report defects of a class "100")."""
        try:
            dets = self.decoder.to_detections(self.run_maps(_batch(tiles, "infer")))
        except OutputMismatch as e:
            raise ModelError(str(e), path=self.path, where=f"{META}output ({self.decoder.name} decoder)") from None
        self._check_class_ids(dets)
        return dets

    def _check_class_ids(self, dets: list[Detections]) -> None:
        n = len(self.class_names)
        for d in dets:
            if len(d) and (int(d.class_id.min()) < 0 or int(d.class_id.max()) >= n):
                bad = int(d.class_id.max()) if int(d.class_id.max()) >= n else int(d.class_id.min())
                raise ModelError(
                    f"the outputs ({', '.join(self.output_names)}) give class id {bad}, but"
                    f" {META}classes names {n} class(es) (ids 0..{n - 1})", path=self.path,
                    hint="the outputs are not what the metadata says (a class map of pixel values?)",
                )

    def warmup(self, tile: int = 256, batch: int = 1, runs: int = 2) -> None:
        """Inferences on batches of the real shape before real tiles: ONNX Runtime sizes its
        memory arena and picks kernels on the first calls of a shape (on 2 CPU cores the first two
        calls with a strip of 2048² tiles took 1.6 and 3.7 s against 0.56 s after).

        The batches alternate between blank and a ramp over the camera's whole value range, and
        the first of each kind is checked: ONNX Runtime must take the input, the outputs must fit
        the decoder (``Decoder.check_outputs``) and every class id must be one the model names.
        Anything else is a ModelError naming the model file, before a line is read."""
        h, w = (tile, tile) if self.resize is not None or self.input_size is None else self.input_size
        n = self.fixed_batch or batch
        feed = self.feed or InputFeed.plan(model_channels=self.input_channels, model_dtype=self.input_dtype,
                                           layout=self.input_layout, channels=self.input_channels or 3,
                                           dtype="uint8", path=self.path)
        shape = (n, h, w, feed.camera_channels)
        ramp = np.empty(shape, feed.camera_dtype)
        ramp[:] = np.linspace(0, 2 ** feed.bits - 1, w).astype(feed.camera_dtype)[None, None, :, None]
        batches = (np.zeros(shape, feed.camera_dtype), ramp)
        for i in range(max(runs, 2)):
            x = batches[i % 2]
            if i >= 2:
                self.infer(x)
                continue
            self._checked_infer(x)

    def _checked_infer(self, x: np.ndarray) -> None:
        """``infer`` with every failure turned into one ModelError line naming the model file."""
        what = f"a ({', '.join(map(str, x.shape))}) {x.dtype} batch"
        try:
            dets = self.decoder.to_detections(self.run_maps(x, check=True))
        except ModelError:
            raise
        except ModelUnavailable as e:  # its inference server did not answer the warm-up
            raise ModelError(str(e), path=self.path, where="model.server") from None
        except OutputMismatch as e:
            raise ModelError(str(e), path=self.path, where=f"{META}output ({self.decoder.name} decoder)") from None
        except Exception as e:  # noqa: BLE001 - onnxruntime's errors, reshape/IndexError of a decoder
            raise self._failed(e, what) from None
        self._check_class_ids(dets)

    def _failed(self, e: Exception, what: str) -> ModelError:
        first = (str(e).strip().splitlines() or [""])[0]
        if not type(e).__module__.startswith("onnxruntime"):
            return ModelError(f"the {self.decoder.name} decoder cannot read the outputs"
                              f" ({', '.join(self.output_names)}) of {what}: {type(e).__name__}: {first}",
                              path=self.path, where=f"{META}output")
        fed = f" ({self.feed.describe()})" if self.feed else ""
        return ModelError(f"ONNX Runtime cannot run the model on {what}{fed}: {first}", path=self.path,
                          where=f"{META}input")

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
