"""The ``.raw`` file format: constants, the 64-byte block header layout, and the file header.

docs/recording-format.md has the byte tables.  ``RecordingHeader`` is the file header's JSON
(validated field by field); ``encode_file_header`` turns it into the bytes that start a file.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from datetime import datetime, timezone
from os import PathLike
from typing import Any

import numpy as np

from ..errors import RecordingError
from ..lines import MAX_WIDTH

FILE_MAGIC = b"EIRAW\r\n\x1a"
"""First 8 bytes of every .raw recording (PNG-style: catches text-mode and truncating copies)."""
FORMAT_VERSION = 1
BLOCK_MAGIC = b"EIBK"
ALIGN = 64
"""File header and every block start at a multiple of this many bytes."""
FLAG_ENCODER_VALID = 1 << 0

_FILE_PREFIX = struct.Struct("<8sHHI")  # magic, version, reserved, json_len -> 16 bytes
# magic, n_lines, first_line, encoder, timestamp_ns, lost_before, flags, crc32, payload_bytes,
# reserved -> 64 bytes
_BLOCK_HEADER = struct.Struct("<4sIQqQQIIQ8x")
assert _FILE_PREFIX.size == 16 and _BLOCK_HEADER.size == ALIGN

_MAX_JSON = 16 * 1024 * 1024
_DTYPES = {"uint8": np.dtype("<u1"), "uint16": np.dtype("<u2")}
_DEFAULT_PIXEL_FORMAT = {
    (1, "uint8"): "Mono8",
    (1, "uint16"): "Mono16",
    (3, "uint8"): "RGB8",
    (3, "uint16"): "RGB16",
    (4, "uint8"): "RGBa8",
    (4, "uint16"): "RGBa16",
}
_HEADERLESS_HINT = (
    "a headerless raw dump is read with explicit geometry: --width/--channels/--dtype "
    "(open_recording(path, width=..., channels=..., dtype=...))"
)
_CORRUPT_HINT = "the file is damaged; skip_corrupt=True (--skip-corrupt) skips damaged blocks"


def _align(n: int) -> int:
    """Round ``n`` up to the next multiple of ALIGN."""
    return -(-n // ALIGN) * ALIGN


def _dtype_name(dtype: Any) -> str:
    """'uint8' or 'uint16' for anything numpy accepts as one of those dtypes, else ValueError."""
    dt = np.dtype(dtype)
    if dt.kind == "u" and dt.itemsize in (1, 2):
        return f"uint{dt.itemsize * 8}"
    raise ValueError(f"dtype {dt} is not uint8 or uint16")


# --------------------------------------------------------------------------------------- header


_KNOWN_KEYS = (
    "width",
    "channels",
    "dtype",
    "pixel_format",
    "line_rate_hz",
    "mm_per_px",
    "mm_per_line",
    "camera",
    "station",
    "created",
)
_REQUIRED_KEYS = ("width", "channels", "dtype", "line_rate_hz", "mm_per_px", "mm_per_line")


@dataclass(slots=True)
class RecordingHeader:
    """What the file header's JSON says about the lines that follow.

    width, channels, dtype: geometry of one line (dtype "uint8" or "uint16").
    line_rate_hz: recorded line rate; 0 when unknown (headerless dumps).
    mm_per_px, mm_per_line: belt geometry (across per pixel, along per line).
    pixel_format: GenICam name (Mono8, RGB8, ...); derived from channels/dtype when empty.
    camera: {"vendor", "model", "serial"} when known, else {}.
    station: station name.  created: ISO-8601 time the recording started (now when empty).
    extra: any other JSON keys; written and read back untouched.
    """

    width: int
    channels: int
    dtype: str
    line_rate_hz: float = 0.0
    mm_per_px: float = 0.37
    mm_per_line: float = 0.37
    pixel_format: str = ""
    camera: dict[str, Any] = field(default_factory=dict)
    station: str = ""
    created: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = _header_problems(self)
        if problems:
            key, what = problems[0]
            raise RecordingError(what, where=f"header key {key!r}")
        if not self.pixel_format:
            self.pixel_format = _DEFAULT_PIXEL_FORMAT.get((self.channels, self.dtype), "")
        if not self.created:
            self.created = datetime.now(timezone.utc).isoformat(timespec="milliseconds")

    @property
    def np_dtype(self) -> np.dtype:
        """Little-endian numpy dtype of one pixel sample."""
        return _DTYPES[self.dtype]

    @property
    def line_bytes(self) -> int:
        """Bytes of one line: width x channels x itemsize."""
        return self.width * self.channels * self.np_dtype.itemsize

    @classmethod
    def from_camera(cls, camera: Any, **kwargs: Any) -> RecordingHeader:
        """Header from a station config's ``Camera`` (or anything with the same attributes)."""
        fields = {
            k: getattr(camera, k)
            for k in ("width", "channels", "dtype", "pixel_format", "line_rate_hz",
                      "mm_per_px", "mm_per_line")
        }
        fields.update(kwargs)
        return cls(**fields)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object: known keys first, then ``extra``."""
        d: dict[str, Any] = {k: getattr(self, k) for k in _KNOWN_KEYS}
        d.update(self.extra)
        return d

    def to_json(self) -> str:
        """JSON text of the header (without the binary prefix or padding)."""
        clash = sorted(set(self.extra) & set(_KNOWN_KEYS))
        if clash:
            raise RecordingError(
                f"extra keys {clash} clash with standard header keys", where="header extra"
            )
        try:
            return json.dumps(self.to_dict(), indent=2, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise RecordingError(
                f"header is not JSON-serialisable: {exc}", where="header"
            ) from None

    @classmethod
    def from_json(
        cls, text: str | bytes, *, path: str | PathLike[str] | None = None
    ) -> RecordingHeader:
        """Parse and check header JSON; RecordingError naming the key on any problem."""
        where0 = f"file header JSON at byte {_FILE_PREFIX.size}"
        try:
            obj = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RecordingError(
                f"header is not valid UTF-8 JSON: {exc}", path=path, where=where0,
                hint=_HEADERLESS_HINT,
            ) from None
        if not isinstance(obj, dict):
            raise RecordingError(
                f"header JSON is a {type(obj).__name__}, expected an object", path=path,
                where=where0, hint=_HEADERLESS_HINT,
            )
        missing = [k for k in _REQUIRED_KEYS if k not in obj]
        if missing:
            raise RecordingError(
                f"header JSON lacks required key(s) {missing}", path=path, where=where0,
                hint=_HEADERLESS_HINT,
            )
        known = {k: obj[k] for k in _KNOWN_KEYS if k in obj}
        extra = {k: v for k, v in obj.items() if k not in _KNOWN_KEYS}
        for k, default in (("pixel_format", ""), ("station", ""), ("created", "")):
            known.setdefault(k, default)
        known.setdefault("camera", {})
        try:
            return cls(**known, extra=extra)
        except RecordingError as exc:
            raise RecordingError(
                exc.message, path=path, where=f"{where0}, {exc.where}", hint=_HEADERLESS_HINT
            ) from None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # an int too large for a float
        return False


def _header_problems(h: RecordingHeader) -> list[tuple[str, str]]:
    """(key, what is wrong) for every invalid field, in field order."""
    p: list[tuple[str, str]] = []
    if not _is_int(h.width) or not 0 < h.width <= MAX_WIDTH:
        p.append(("width", f"must be a positive integer up to {MAX_WIDTH} px, got {h.width!r}"))
    if not _is_int(h.channels) or not 1 <= h.channels <= 4:
        p.append(("channels", f"must be an integer 1..4, got {h.channels!r}"))
    if h.dtype not in _DTYPES:
        p.append(("dtype", f'must be "uint8" or "uint16", got {h.dtype!r}'))
    if not _is_num(h.line_rate_hz) or h.line_rate_hz < 0:
        p.append(("line_rate_hz", f"must be a number >= 0 (0 = unknown), got {h.line_rate_hz!r}"))
    for k in ("mm_per_px", "mm_per_line"):
        v = getattr(h, k)
        if not _is_num(v) or v <= 0:
            p.append((k, f"must be a number > 0, got {v!r}"))
    for k in ("pixel_format", "station", "created"):
        if not isinstance(getattr(h, k), str):
            p.append((k, f"must be a string, got {getattr(h, k)!r}"))
    if not isinstance(h.camera, dict):
        p.append(("camera", f"must be an object (vendor/model/serial) or {{}}, got {h.camera!r}"))
    if not isinstance(h.extra, dict):
        p.append(("extra", f"must be a dict, got {type(h.extra).__name__}"))
    return p


def encode_file_header(header: RecordingHeader) -> bytes:
    """Binary file header: prefix + JSON + space padding to a multiple of ALIGN bytes."""
    body = header.to_json().encode("utf-8")
    if len(body) > _MAX_JSON:
        raise RecordingError(f"header JSON is {len(body)} bytes, limit {_MAX_JSON}")
    raw = _FILE_PREFIX.pack(FILE_MAGIC, FORMAT_VERSION, 0, len(body)) + body
    return raw + b" " * (_align(len(raw)) - len(raw))
