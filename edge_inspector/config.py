"""Station configuration: a TOML file validated with pydantic.

``load_station(path)`` returns a ``Station`` or raises ``ConfigError`` listing every problem,
each with its field and a fix.  ``edge-inspector check-config FILE`` prints the same list.
"""

from __future__ import annotations

import re

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ConfigError
from .lines import MAX_WIDTH

# allow_inf_nan=False: `line_rate_hz = inf` or `nan` in a station file is an error, not a number.
_STRICT = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

RING_MEMORY_SHARE = 0.5  # the tile ring may take at most this share of the machine's memory
REQUIRED_SECTIONS = ("camera", "belt")  # a station file must describe these; no silent defaults


class StationInfo(BaseModel):
    model_config = _STRICT
    name: str = "station"


class Camera(BaseModel):
    """Camera geometry. ``mm_per_line`` is belt travel per line (encoder-triggered lines)."""

    model_config = _STRICT
    width: int = Field(8192, gt=0, le=MAX_WIDTH, description="pixels per line")
    channels: Literal[1, 3] = 3
    dtype: Literal["uint8", "uint16"] = "uint8"
    pixel_format: str = "RGB8"
    line_rate_hz: float = Field(2700.0, gt=0)
    mm_per_px: float = Field(0.37, gt=0)
    mm_per_line: float = Field(0.37, gt=0)
    across_table: str | None = Field(
        None, description=".npy file with width+1 across positions (mm) of the pixel edges"
    )


FeatureValue = bool | int | float | str
"""A GenICam node value in a station file: Boolean, Integer, Float, Enumeration entry or String
(``true`` executes a Command node)."""


class LineTrigger(BaseModel):
    """One trigger, written in this order: TriggerSelector, TriggerMode, TriggerSource, TriggerActivation."""

    model_config = _STRICT
    selector: str = Field("LineStart", description="TriggerSelector: LineStart, FrameStart, ...")
    mode: Literal["On", "Off"] = Field("On", description="TriggerMode")
    source: str | None = Field(None, description="TriggerSource, e.g. EncoderModuleOut, Encoder0, Line0")
    activation: str | None = Field(None, description="TriggerActivation, e.g. RisingEdge")


class Encoder(BaseModel):
    """The camera's encoder module (SFNC names); unset fields leave the camera's value."""

    model_config = _STRICT
    selector: str | None = Field(None, description="EncoderSelector, e.g. Encoder0")
    source_a: str | None = Field(None, description="EncoderSourceA, e.g. Line1")
    source_b: str | None = Field(None, description="EncoderSourceB, e.g. Line2")
    mode: str | None = Field(None, description="EncoderMode, e.g. FourPhase, HighResolution")
    divider: int | None = Field(None, ge=1, description="EncoderDivider: encoder ticks per line")
    output_mode: str | None = Field(None, description="EncoderOutputMode, e.g. PositionUp, Motion")


class GenICam(BaseModel):
    """Live acquisition through a GenTL producer (``source.kind = "genicam"``; docs/cameras.md).

    Width and PixelFormat come from ``[camera]``; the line rate from ``camera.line_rate_hz``.
    Node writes happen in this order: Width, Height, PixelFormat, line/frame rate, triggers,
    encoder, flat_field, features.
    """

    model_config = _STRICT
    cti: str = Field(
        "viky", description='GenTL producer file; "viky" or "" = the simulator shipped with the genicam package'
    )
    device: int | str = Field(0, description="list index (int), or serial number / user-defined name / device id")
    lines_per_buffer: int = Field(1024, gt=0, description="camera Height: lines per GenTL buffer and per LineBlock")
    rate_node: Literal["auto", "AcquisitionLineRate", "AcquisitionFrameRate", "none"] = Field(
        "auto",
        description="auto: AcquisitionLineRate = line_rate_hz, or AcquisitionFrameRate = line_rate_hz /"
        " lines_per_buffer on area-scan devices; none: leave it (encoder-triggered lines)",
    )
    trigger: list[LineTrigger] = Field(default_factory=list, description="[[source.genicam.trigger]] tables")
    encoder: Encoder | None = None
    flat_field: dict[str, FeatureValue] = Field(
        default_factory=dict, description="camera-side flat-field / shading switches (vendor node names)"
    )
    features: dict[str, FeatureValue] = Field(
        default_factory=dict, description="any other node = value, written last, in the order given"
    )
    required: list[str] = Field(
        default_factory=list, description="nodes the camera must have; others that are missing are warnings"
    )
    num_buffers: int = Field(16, ge=1, description="GenTL buffers announced to the producer (bursts)")
    ring_blocks: int = Field(8, ge=2, description="line blocks buffered between acquisition and the pipeline")
    fetch_timeout_s: float = Field(1.0, gt=0, description="no buffer for this long counts as one fetch timeout")
    max_fetch_timeouts: int = Field(
        3, ge=0, description="consecutive fetch timeouts that mean the camera is lost; 0 = never (belt may stop)"
    )
    reconnect_retries: int = Field(10, ge=0, description="reconnect attempts before giving up; 0 = forever")
    reconnect_backoff_s: float = Field(0.5, gt=0, description="first pause between attempts; doubles each time")
    reconnect_backoff_max_s: float = Field(5.0, gt=0)


class Source(BaseModel):
    model_config = _STRICT
    kind: Literal["replay", "synthetic", "genicam"] = "replay"
    path: str | None = None
    block_lines: int = Field(512, gt=0, description="lines per LineBlock (genicam: lines_per_buffer)")
    genicam: GenICam = Field(default_factory=GenICam)


class Tiling(BaseModel):
    model_config = _STRICT
    tile: int = Field(2048, gt=0, description="tile height and width in px")
    overlap: int = Field(128, ge=0, description="overlap with the neighbouring tiles in px")
    ring_slots: int = Field(4, ge=2, description="strip slots in the tile ring")
    flat_field: str | None = Field(
        None, description=".npz with per-column 'gain' and 'offset' arrays (width,) or (width, channels)"
    )
    skip_belt_tiles: bool = Field(
        True, description="run the model only on tiles that hold hide (hide_detection's rule, padded by the"
        " overlap); bare belt cannot hold a reported defect (edge_inspector/coverage.py)"
    )


class HideDetection(BaseModel):
    """How a line tells hide from belt: mean |pixel - belt_level| over channels > threshold."""

    model_config = _STRICT
    belt_level: list[float] = Field(default_factory=lambda: [38.0, 40.0, 42.0])
    threshold: float = Field(28.0, gt=0)
    subsample: int = Field(8, ge=1, description="look at every n-th pixel and line")
    min_hide_lines: int = Field(64, ge=1, description="lines with hide before a hide starts")
    gap_lines: int = Field(64, ge=1, description="lines without hide before a hide ends")
    min_px_per_line: int = Field(16, ge=1, description="hide pixels (subsampled) for a line to count")
    edge_margin_mm: float = Field(
        10.0, ge=0, description="defects whose centre lies closer than this to the hide outline are not reported"
    )


# what a station's [model] outputs may name (the decoders' OUTPUT_KEYS, inference/decoders.py)
OUTPUT_ROLES = ("anomaly_map", "pred_score", "pred_mask", "class_map", "score_map", "logits", "boxes",
                "patch_scores")


_SERVER_URL = re.compile(r"^grpc://(?P<host>[A-Za-z0-9_.\-]+|\[[0-9A-Fa-f:]+\]):(?P<port>\d{1,5})$")


def parse_server_url(url: str) -> tuple[str, int]:
    """(host, port) of ``[model] server`` = grpc://host:port; ValueError otherwise."""
    m = _SERVER_URL.match(url)
    if not m or not 0 < int(m["port"]) < 65536:
        raise ValueError(f"server: {url!r} is not grpc://host:port (e.g. grpc://127.0.0.1:8001)")
    return m["host"], int(m["port"])


class ModelCfg(BaseModel):
    model_config = _STRICT
    path: str = Field("builtin:default", description="ONNX file, or builtin:default / builtin:baseline")
    decoder: Literal["auto", "segmentation", "detection", "anomaly", "classification", "yolo", "patch"] = "auto"
    providers: list[str] = Field(
        default_factory=lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    require_provider: bool = Field(False, description="refuse to run on anything but providers[0]")
    cpu_runtime: Literal["auto", "openvino", "onnxruntime"] = Field(
        "auto", description="on the CPU: auto = OpenVINO when installed (faster), else ONNX Runtime")
    cpu_precision: Literal["f32", "bf16"] = Field(
        "bf16", description="OpenVINO CPU precision: bf16 where the CPU has it (AVX-512 BF16 / AMX; 1.75x end to"
        " end on the demo, same recall), f32 elsewhere; f32 = the same scores as ONNX Runtime")
    score_threshold: float | None = Field(None, ge=0, le=1, description="None: the model's default")
    min_area_px: int | None = Field(
        None, ge=0, description="smallest detection in tile px; None: the model's default"
        " (metadata edge_inspector.min_area_px), else 6")
    batch: int = Field(0, ge=0, description="tiles per inference call; 0 = auto: one tile on a CPU runtime (the"
                       " same tiles/s, a fifth of the memory), the tiles of one strip on a GPU")
    intra_op_threads: int = Field(0, ge=0, description="0 = ONNX Runtime's default")
    cpu_streams: int = Field(
        0, ge=0, description="OpenVINO on the CPU: tiles inferred at once, the cores shared between them (the"
        " pipeline runs that many strips side by side, in order); 1 = one tile at a time on every core; 0 = auto:"
        " 2 where the process has 2 cores or more (1.1-1.4x the tiles/s of one stream on 2 cores,"
        " docs/performance.md)")
    resize: Literal["auto", "none", "letterbox", "stretch"] = Field(
        "auto", description="detection models with a fixed input size other than tiling.tile: letterbox"
        " (ultralytics' own: keep the aspect, pad grey) or stretch each tile to the input, boxes mapped back to"
        " tile px; none = refuse; auto = the model's edge_inspector.input \"resize\", else none")
    class_thresholds: dict[str, float] = Field(
        default_factory=dict, description="per-class score thresholds of a detection (yolo) model, by class"
        " name, over score_threshold; e.g. {pinhole = 0.6, Crease = 0.35}")
    peak_extent: float | None = Field(
        None, ge=0, lt=1, description="anomaly-map models: each defect is reported down to this fraction of its"
        " own peak, not down to the threshold (the threshold decides whether a defect is there); None: the"
        " model's (learn-good writes 0.8), 0 = off")
    outputs: dict[str, str] = Field(
        default_factory=dict, description="which graph output the decoder reads as what, over the model's"
        " edge_inspector.output; for foreign exports, e.g. {anomaly_map = \"output\", pred_score ="
        " \"onnx::Sigmoid_123\"} of an older anomalib export")

    server: str | None = Field(
        None, description="grpc://host:port of a Triton Inference Server serving the same ONNX file"
        " (edge-inspector serve-model, docs/serving.md); None = run the model here")
    server_wait_s: float = Field(
        60.0, ge=0, description="replay: how long a call waits for a server that is down or slow (retrying,"
        " reconnecting) before its strip is reported uninspected; a live station does not wait")

    @model_validator(mode="after")
    def _known_outputs(self) -> "ModelCfg":
        if self.server is not None:
            parse_server_url(self.server)  # ValueError: pydantic names the field
        bad = sorted(set(self.outputs) - set(OUTPUT_ROLES))
        if bad:
            raise ValueError(f"outputs: unknown role {bad[0]!r}; one of {', '.join(OUTPUT_ROLES)}")
        off = sorted(k for k, v in self.class_thresholds.items() if not 0.0 <= v <= 1.0)
        if off:
            raise ValueError(f"class_thresholds: {off[0]!r} = {self.class_thresholds[off[0]]} is not within 0..1")
        return self


class Belt(BaseModel):
    """Belt and marker geometry, used for the marking-feasibility check (docs/architecture.md section 6)."""

    model_config = _STRICT
    speed_m_per_min: float = Field(60.0, gt=0)
    marker_distance_mm: float = Field(4000.0, gt=0, description="camera line to marker")
    margin_mm: float = Field(200.0, ge=0)
    processing_latency_s: float = Field(1.5, ge=0, description="budget for inference + planning")


class Merge(BaseModel):
    model_config = _STRICT
    ios: float = Field(0.5, gt=0, le=1, description="intersection over the smaller box to merge")
    touch_px: float = Field(3.0, ge=0, description="boxes this close across a border merge")


class Grading(BaseModel):
    """Grade by defect area share of the hide: A below grade_a, B below grade_b, ... else D."""

    model_config = _STRICT
    grade_a: float = Field(0.001, ge=0)
    grade_b: float = Field(0.005, ge=0)
    grade_c: float = Field(0.02, ge=0)
    min_inspected: float = Field(0.9, ge=0, le=1, description="below this a hide is graded U")


class Plc(BaseModel):
    """The line's PLC over Modbus TCP (docs/architecture.md section 8; docs/register-map.md).

    ``host`` empty: no PLC (marks are still planned and logged to marks.jsonl).
    """

    model_config = _STRICT
    host: str = Field("", description="PLC address; empty = no PLC")
    port: int = Field(502, ge=1, le=65535)
    unit_id: int = Field(1, ge=0, le=255, description="Modbus unit (device) id of the PLC")
    heartbeat_ms: int = Field(100, ge=10, le=10000, description="heartbeat write period")
    timeout_s: float = Field(0.5, gt=0, description="Modbus request timeout")
    reconnect_max_s: float = Field(5.0, gt=0, description="longest pause between reconnect attempts")
    outbox: str = Field(
        "plc-outbox.sqlite",
        description="SQLite outbox of unacknowledged marks; relative paths resolve against outputs.dir",
    )


class Marking(BaseModel):
    """Which defects get an ink mark, which hides are rejected (edge_inspector/marking.py)."""

    model_config = _STRICT
    enabled: bool = True
    classes: list[str] | None = Field(None, description="classes to ink-mark; None = every class")
    min_score: float = Field(0.0, ge=0, le=1)
    min_area_mm2: float = Field(0.0, ge=0)
    cluster_mm: float = Field(
        20.0, ge=0, description="a defect this close to an already planned ink mark gets no mark of its own"
    )
    reject_grades: list[str] = Field(default_factory=lambda: ["D"], description="grades that reject a hide")
    reject_defect_share: float | None = Field(
        None, ge=0, le=1, description="reject a hide whose defect area share exceeds this"
    )
    reject_distance_mm: float = Field(
        8000.0, gt=0,
        description="camera line to the reject gate; more than the longest hide + a strip + processing latency,"
        " or rejects are late (a hide is graded once it is complete)",
    )
    uninspected: bool = Field(True, description="send uninspected stretches to the PLC")
    hide_events: bool = Field(True, description="send hide start/end to the PLC")


class Events(BaseModel):
    """Events and metrics over ZeroMQ PUB (docs/events.md); ``edge-inspector monitor`` subscribes."""

    model_config = _STRICT
    enabled: bool = True
    endpoint: str = Field("tcp://127.0.0.1:5556", description="ZeroMQ PUB bind address; loopback by default")
    metrics_period_s: float = Field(1.0, gt=0, description="how often metrics and health are published")


class Service(BaseModel):
    """The systemd service (docs/service.md): readiness, watchdog and drain."""

    model_config = _STRICT
    drain_timeout_s: float = Field(30.0, gt=0, description="longest drain after SIGTERM before exiting")
    stall_s: float = Field(
        10.0, gt=0, description="no progress of lines or inferences for this long stops the watchdog pings"
    )


class Outputs(BaseModel):
    model_config = _STRICT
    dir: str = "out"
    hide_maps: bool = True
    sqlite: bool = True
    dxf: bool = Field(True, description="per hide hides/hide-NNNN.dxf for the cutting room, and grading.csv/.json"
                      " (edge_inspector/cutting.py)")


class Station(BaseModel):
    model_config = _STRICT
    station: StationInfo = Field(default_factory=StationInfo)
    camera: Camera = Field(default_factory=Camera)
    source: Source = Field(default_factory=Source)
    tiling: Tiling = Field(default_factory=Tiling)
    hide_detection: HideDetection = Field(default_factory=HideDetection)
    model: ModelCfg = Field(default_factory=ModelCfg)
    belt: Belt = Field(default_factory=Belt)
    merge: Merge = Field(default_factory=Merge)
    grading: Grading = Field(default_factory=Grading)
    plc: Plc = Field(default_factory=Plc)
    marking: Marking = Field(default_factory=Marking)
    events: Events = Field(default_factory=Events)
    service: Service = Field(default_factory=Service)
    outputs: Outputs = Field(default_factory=Outputs)

    # Path of the file this came from; relative paths in it resolve against its folder.
    _path: Path | None = None

    @model_validator(mode="after")
    def _geometry(self) -> "Station":
        problems = geometry_problems(self)
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def resolve(self, p: str) -> Path:
        """A path from the config, relative to the config file's folder."""
        pp = Path(p).expanduser()
        if pp.is_absolute() or self._path is None:
            return pp
        return (self._path.parent / pp).resolve()

    def strip_time_s(self) -> float:
        return self.tiling.tile / self.camera.line_rate_hz


def geometry_problems(st: Station) -> list[str]:
    """Cross-field checks: tiling fits the line, marker far enough for the strip latency,
    grade limits in order, the events endpoint, the tile ring's memory."""
    return [msg for _, msg in cross_field_problems(st)]


def cross_field_problems(st: Station) -> list[tuple[tuple[str, ...], str]]:
    """Each cross-field problem with the fields it involves (``section.field``), for reporting
    them beside field errors without blaming a field that already has its own error."""
    out: list[tuple[tuple[str, ...], str]] = []
    t, c = st.tiling, st.camera
    if t.tile > c.width:
        out.append((("tiling.tile", "camera.width"),
            f"tiling.tile: {t.tile} px is wider than the line (camera.width = {c.width});"
            f" set tiling.tile <= {c.width}"
        ))
    if t.overlap >= t.tile:
        out.append((("tiling.overlap", "tiling.tile"),
            f"tiling.overlap: {t.overlap} must be smaller than tiling.tile ({t.tile});"
            f" the default is 128"
        ))
    hd = st.hide_detection
    if len(hd.belt_level) not in (1, c.channels):
        out.append((("hide_detection.belt_level", "camera.channels"),
            f"hide_detection.belt_level: {len(hd.belt_level)} values for a {c.channels}-channel"
            f" camera; give 1 or {c.channels}"
        ))
    b = st.belt
    v = b.speed_m_per_min * 1000.0 / 60.0  # mm/s
    strip_s = t.tile / c.line_rate_hz
    need = v * (strip_s + b.processing_latency_s) + b.margin_mm
    if b.marker_distance_mm <= need:
        out.append((("belt.marker_distance_mm", "belt.speed_m_per_min", "tiling.tile", "camera.line_rate_hz",
                     "belt.processing_latency_s", "belt.margin_mm"),
            f"belt.marker_distance_mm: {b.marker_distance_mm:g} mm is too short to mark in time:"
            f" at {b.speed_m_per_min:g} m/min a strip of {t.tile} lines takes {strip_s:.3f} s"
            f" and processing {b.processing_latency_s:g} s, so the marker must sit more than"
            f" {need:.0f} mm after the camera; move the marker, lower belt.speed_m_per_min,"
            f" or use a smaller tiling.tile"
        ))
    g = st.grading
    if not g.grade_a <= g.grade_b <= g.grade_c:
        out.append((("grading.grade_a", "grading.grade_b", "grading.grade_c"),
                    f"grading: the limits must rise, grade_a <= grade_b <= grade_c; got {g.grade_a:g},"
                    f" {g.grade_b:g}, {g.grade_c:g}"))
    ep = endpoint_problem(st.events.endpoint)
    if ep:
        out.append((("events.endpoint",), f"events.endpoint: {ep}"))
    if t.tile <= c.width and t.overlap < t.tile:
        need_b = ring_bytes(st)
        have_b = physical_memory_bytes()
        if have_b and need_b > RING_MEMORY_SHARE * have_b:
            out.append((("tiling.ring_slots", "tiling.tile", "camera.width", "camera.channels", "camera.dtype"),
                        f"tiling.ring_slots: {t.ring_slots} slots of {ring_bytes(st) // t.ring_slots / 2**20:.0f} MiB"
                        f" need {need_b / 2**30:.1f} GiB, more than {RING_MEMORY_SHARE:.0%} of this machine's"
                        f" {have_b / 2**30:.1f} GiB; 3-8 slots are enough (the default is 4)"))
    return out


def ring_bytes(st: Station) -> int:
    """Bytes of the tile ring (stitch.TileRing): slots x a strip's tile whole lines x width x
    channels x sample size."""
    t, c = st.tiling, st.camera
    itemsize = 2 if c.dtype == "uint16" else 1
    return t.ring_slots * t.tile * c.width * c.channels * itemsize


def physical_memory_bytes() -> int | None:
    """This machine's physical memory, or None where the OS does not say."""
    import os

    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def endpoint_problem(endpoint: str) -> str:
    """Why a ZeroMQ bind endpoint cannot work ("" when it can): tcp://HOST:PORT, ipc://PATH, inproc://NAME."""
    import re

    if re.fullmatch(r"(ipc|inproc)://.+", endpoint):
        return ""
    m = re.fullmatch(r"tcp://(\*|\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):(\d+|\*)", endpoint)
    if not m:
        return (f"{endpoint!r} is not a ZeroMQ endpoint; use tcp://HOST:PORT (e.g. tcp://127.0.0.1:5556),"
                f" ipc://PATH or inproc://NAME")
    if m.group(2) == "*":  # any free port (ZeroMQ picks one)
        return ""
    port = int(m.group(2))
    if not 1 <= port <= 65535:
        return f"port {port} in {endpoint!r} is out of range 1-65535"
    return ""


def file_problems(st: Station) -> list[str]:
    """Files the station names that are missing: the model, the across table, the flat field.

    Not part of validation (a station file may be checked on another machine); ``check-config``
    and the commands that run a station report these before they start.
    """
    out: list[str] = []
    mp = st.model.path
    if mp.startswith("builtin:"):
        from .inference.registry import BUILTIN_MODELS

        name = mp.split(":", 1)[1]
        if name not in BUILTIN_MODELS:
            out.append(f"model.path: no built-in model {name!r}; built-in models: "
                       + ", ".join(f"builtin:{n}" for n in sorted(BUILTIN_MODELS)))
    elif not st.resolve(mp).is_file():
        out.append(f"model.path: file not found ({st.resolve(mp)}); give an ONNX file (relative to the"
                   f" station file) or builtin:default")
    for key, value in (("camera.across_table", st.camera.across_table), ("tiling.flat_field", st.tiling.flat_field)):
        if value and not st.resolve(value).is_file():
            out.append(f"{key}: file not found ({st.resolve(value)})")
    return out


def _fmt_loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc if p != "__root__") or "(top level)"


def _problems_from(e: ValidationError) -> list[str]:
    out: list[str] = []
    for err in e.errors():
        loc = _fmt_loc(err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field (typo?); see configs/stations/template.toml"
        if err["type"] == "value_error" and not err["loc"]:
            out.extend(m.strip() for m in str(err.get("ctx", {}).get("error", msg)).splitlines() if m.strip())
            continue
        given = err.get("input")
        if err["type"] != "missing" and not isinstance(given, dict):
            msg += f" (got {given!r})"
        out.append(f"{loc}: {msg}")
    return out


def _partial_station(data: dict[str, Any], bad: set[str]) -> Station | None:
    """The station with every field that had an error left at its default, for cross-field checks."""
    clean: dict[str, Any] = {}
    for sec, body in data.items():
        if sec not in Station.model_fields or not isinstance(body, dict):
            continue
        clean[sec] = {k: v for k, v in body.items()
                      if f"{sec}.{k}" not in bad and k in Station.model_fields[sec].annotation.model_fields}
    try:
        sections = {k: Station.model_fields[k].annotation.model_validate(v) for k, v in clean.items()}
        return Station.model_construct(**sections)
    except (ValidationError, TypeError, AttributeError):
        return None


def parse_station(data: dict[str, Any], path: str | Path = "<station>") -> Station:
    try:
        st = Station.model_validate(data)
    except ValidationError as e:
        problems = _problems_from(e)
        # Field errors stop pydantic before the cross-field checks; run those on what is valid so
        # that one check-config lists every problem, not only the first kind.
        bad = {".".join(str(p) for p in err["loc"][:2]) for err in e.errors() if err["loc"]}
        if any(err["loc"] for err in e.errors()):
            partial = _partial_station(data, bad)
            if partial is not None:
                problems += [msg for fields, msg in cross_field_problems(partial)
                             if not bad & set(fields) and msg not in problems]
        raise ConfigError(path, problems) from None
    st._path = Path(path).resolve() if str(path) != "<station>" else None
    return st


def load_station(path: str | Path | None, *, required: tuple[str, ...] = REQUIRED_SECTIONS) -> Station:
    """Load and validate a station file; ``None`` gives the built-in defaults.

    ``required``: sections the file must have (a station that runs a line must describe its camera
    and belt; a file that only selects a model for ``eval-model`` need not)."""
    if path is None:
        return Station()
    p = Path(path)
    if not p.is_file():
        raise ConfigError(p, ["file not found; give a station TOML (see configs/stations/)"])
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(p, [f"not valid TOML: {e}"]) from None
    missing = [s for s in required if s not in data]
    if missing:
        problems = [f"[{s}]: section missing; a station file must describe its {s} (copy [{s}] from"
                    f" configs/stations/template.toml and set it for this line)" for s in missing]
        try:
            parse_station(data, p)
        except ConfigError as e:
            problems += e.problems
        raise ConfigError(p, problems)
    return parse_station(data, p)
