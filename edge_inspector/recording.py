"""The ``.raw`` recording: camera lines on disk, self-describing, append-only, crash-safe.

Layout (docs/recording-format.md has the byte tables)::

    file header   magic b"EIRAW\\r\\n\\x1a" | u16 version | u16 reserved | u32 json_len | JSON
                  | spaces up to the next multiple of 64 bytes
    block         64-byte header (b"EIBK", n_lines, first_line, encoder, timestamp_ns,
                  lost_before, flags, crc32, payload_bytes, reserved)
                  | payload n_lines x width x channels pixels (C order, little-endian)
                  | zeros up to the next multiple of 64 bytes
    block ...

``RecordingWriter`` appends one block per ``LineBlock`` and flushes after each, so a crash loses
at most the block being written.  ``RecordingReader`` maps the whole file with ``numpy.memmap``,
walks the 64-byte block headers once (payloads are not touched), and yields ``LineBlock``s whose
``lines`` are zero-copy views into the map.  ``open_recording`` also reads headerless raw dumps
from camera tools when the geometry is given.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from .errors import RecordingError
from .lines import LineBlock

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
    if not _is_int(h.width) or not 0 < h.width < 2**31:
        p.append(("width", f"must be a positive integer, got {h.width!r}"))
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


# --------------------------------------------------------------------------------------- writer


class RecordingWriter:
    """Append LineBlocks to a new .raw file (an existing file is replaced).

    Each ``write`` is one block: 64-byte header, the payload in a single write, zero padding,
    then ``flush()`` (and ``os.fsync`` when ``fsync=True``), so a crash loses at most the block
    being written and readers recover everything before it.

        with RecordingWriter("hides.raw", RecordingHeader(8192, 3, "uint8")) as w:
            for block in source:
                w.write(block)
    """

    def __init__(
        self, path: str | PathLike[str], header: RecordingHeader, *, fsync: bool = False
    ) -> None:
        self.path = Path(path)
        self.header = header
        self.fsync = fsync
        self.lines_written = 0
        self.n_blocks = 0
        self.end_line: int | None = None
        """One past the last line written; None before the first block."""
        self._shape = (header.width, header.channels)
        self._dtype = header.np_dtype
        self._broken: str | None = None
        prefix = encode_file_header(header)
        try:
            self._f = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise RecordingError(f"cannot create: {exc.strerror or exc}", path=self.path) from None
        try:
            self._f.write(prefix)
            self._f.flush()
        except BaseException:
            self._f.close()
            raise
        self.bytes_written = len(prefix)

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._f.closed

    def _err(self, msg: str, hint: str | None = None) -> RecordingError:
        return RecordingError(msg, path=self.path, where=f"block {self.n_blocks}", hint=hint)

    def write(self, block: LineBlock) -> None:
        """Append one block; RecordingError when it does not fit the header or goes backwards."""
        if self._f.closed:
            raise self._err("writer is closed")
        if self._broken:
            raise self._err(f"an earlier write failed ({self._broken}); the writer is unusable")
        lines = block.lines
        if not isinstance(lines, np.ndarray) or lines.ndim != 3 or lines.shape[1:] != self._shape:
            got = lines.shape if isinstance(lines, np.ndarray) else type(lines).__name__
            raise self._err(
                f"lines have shape {got}, the header says (n_lines, {self._shape[0]}, "
                f"{self._shape[1]})"
            )
        if lines.dtype.kind != "u" or lines.dtype.itemsize != self._dtype.itemsize:
            raise self._err(f"lines are {lines.dtype}, the header says {self.header.dtype}")
        n = lines.shape[0]
        if n == 0:
            raise self._err("block has 0 lines")
        if n > 0xFFFFFFFF:
            raise self._err(f"block has {n} lines, at most {0xFFFFFFFF} per block")
        first = int(block.first_line)
        if first < 0:
            raise self._err(f"first_line {first} is negative")
        if self.end_line is not None and first < self.end_line:
            raise self._err(
                f"first_line {first} goes backwards: the previous block ended at line "
                f"{self.end_line} (lines are append-only; gaps are allowed)"
            )
        lost = int(block.lost_before)
        ts = int(block.timestamp_ns)
        if lost < 0 or ts < 0:
            raise self._err(f"lost_before {lost} and timestamp_ns {ts} must be >= 0")
        flags = 0
        encoder = 0
        if block.encoder is not None:
            flags |= FLAG_ENCODER_VALID
            encoder = int(block.encoder)
            if not -(2**63) <= encoder < 2**63:
                raise self._err(f"encoder {encoder} does not fit in int64")

        # Copy only when the caller's array is not already C-contiguous little-endian.
        data = np.ascontiguousarray(lines, dtype=self._dtype)
        payload = memoryview(data).cast("B")
        nbytes = payload.nbytes
        head = _BLOCK_HEADER.pack(
            BLOCK_MAGIC, n, first, encoder, ts, lost, flags, zlib.crc32(payload), nbytes
        )
        pad = _align(nbytes) - nbytes
        start = self.bytes_written
        try:
            self._f.write(head)
            self._f.write(payload)
            if pad:
                self._f.write(b"\0" * pad)
            self._f.flush()
            if self.fsync:
                os.fsync(self._f.fileno())
        except OSError as exc:
            # Cut the partial block off so the file stays a valid recording up to here.
            self._broken = str(exc)
            try:
                self._f.truncate(start)
                self._f.flush()
            except OSError:
                pass
            raise self._err(f"writing failed: {exc}") from exc
        self.bytes_written = start + ALIGN + nbytes + pad
        self.lines_written += n
        self.n_blocks += 1
        self.end_line = first + n

    def close(self) -> None:
        """Flush and close; safe to call twice."""
        if not self._f.closed:
            try:
                self._f.flush()
                if self.fsync:
                    os.fsync(self._f.fileno())
            finally:
                self._f.close()


# --------------------------------------------------------------------------------------- reader


@dataclass(frozen=True, slots=True)
class HeaderlessGeometry:
    """How to read a raw dump without a file header: consecutive lines, nothing else.

    Lines are numbered from 0; blocks are ``block_lines`` lines long (the last may be shorter).
    """

    width: int
    channels: int
    dtype: str
    block_lines: int = 512
    mm_per_px: float = 0.37
    mm_per_line: float = 0.37
    line_rate_hz: float = 0.0

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "dtype", _dtype_name(self.dtype))
        except (TypeError, ValueError):
            raise RecordingError(
                f'headerless dtype must be "uint8" or "uint16", got {self.dtype!r}',
                where="--dtype",
            ) from None
        if not _is_int(self.block_lines) or self.block_lines <= 0:
            raise RecordingError(
                f"block_lines must be a positive integer, got {self.block_lines!r}"
            )

    def to_header(self, created: str = "") -> RecordingHeader:
        """The RecordingHeader this geometry stands for (``extra`` marks it headerless)."""
        try:
            return RecordingHeader(
                width=self.width, channels=self.channels, dtype=self.dtype,
                line_rate_hz=self.line_rate_hz, mm_per_px=self.mm_per_px,
                mm_per_line=self.mm_per_line, created=created, extra={"headerless": True},
            )
        except RecordingError as exc:
            raise RecordingError(exc.message, where=f"headerless geometry: {exc.where}") from None


@dataclass(slots=True)
class _Entry:
    """One indexed block: where its payload is and what its header says."""

    index: int  # position among all block headers in the file (0-based)
    offset: int  # byte offset of the block header
    n_lines: int
    first_line: int
    encoder: int | None
    timestamp_ns: int
    stored_lost: int
    crc: int | None  # None: nothing to verify (headerless)
    lost_before: int = 0  # what the yielded LineBlock reports
    verified: bool = False
    skipped: bool = False

    @property
    def end_line(self) -> int:
        return self.first_line + self.n_lines


class RecordingReader:
    """Read a .raw recording (or a headerless dump) through one read-only numpy.memmap.

    Opening parses the file header and walks the 64-byte block headers once; payloads are not
    read until a block is yielded, then its CRC-32 is checked (``verify_crc``) once.

    Lost lines: each block's ``lost_before`` is ``max(stored lost_before, first_line - end of
    the previous block)``; the first block reports its stored value.  ``lost_lines`` sums them.
    Truncated tail (power loss): the incomplete last block is dropped with a warning.
    Corrupt block: RecordingError naming the block and byte offset, or with ``skip_corrupt`` a
    warning and the block's lines become lost lines of the next block.
    Warnings go to ``warnings`` and, as they happen, to ``on_warning``.
    """

    def __init__(
        self,
        path: str | PathLike[str],
        *,
        verify_crc: bool = True,
        skip_corrupt: bool = False,
        headerless: HeaderlessGeometry | None = None,
        on_warning: Callable[[str], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.verify_crc = verify_crc
        self.skip_corrupt = skip_corrupt
        self.headerless = headerless
        self.warnings: list[str] = []
        self._on_warning = on_warning
        self._entries: list[_Entry] = []
        try:
            size = self.path.stat().st_size
        except OSError as exc:
            raise RecordingError(f"cannot open: {exc.strerror or exc}", path=self.path) from None
        self.file_bytes = size
        # np.memmap cannot map an empty file; an empty buffer behaves the same for everything else.
        try:
            self._mm: np.ndarray = (
                np.memmap(self.path, dtype=np.uint8, mode="r") if size else np.zeros(0, np.uint8)
            )
        except OSError as exc:
            raise RecordingError(f"cannot map: {exc.strerror or exc}", path=self.path) from None
        self._buf = self._mm.view(np.ndarray)  # plain ndarray views, same memory
        if headerless is None:
            self._header, self.data_offset = self._read_file_header()
            self._index_blocks()
        else:
            if bytes(self._buf[:8]) == FILE_MAGIC:
                raise RecordingError(
                    "the file has a .raw header; open it without headerless geometry",
                    path=self.path, where="byte 0",
                )
            created = datetime.fromtimestamp(self.path.stat().st_mtime, timezone.utc)
            self._header = headerless.to_header(created.isoformat(timespec="seconds"))
            self.data_offset = 0
            self._index_headerless(headerless)
        self._dtype = self._header.np_dtype
        self._recompute_lost()

    # -- properties

    @property
    def header(self) -> RecordingHeader:
        return self._header

    @property
    def memmap(self) -> np.ndarray:
        """The uint8 map of the whole file every yielded ``lines`` is a view of."""
        return self._mm

    @property
    def n_blocks(self) -> int:
        """Blocks that will be yielded (complete, not skipped)."""
        return sum(1 for e in self._entries if not e.skipped)

    @property
    def n_lines(self) -> int:
        """Lines present in the blocks that will be yielded."""
        return sum(e.n_lines for e in self._entries if not e.skipped)

    @property
    def lost_lines(self) -> int:
        """Sum of ``lost_before`` over the blocks that will be yielded."""
        return sum(e.lost_before for e in self._entries if not e.skipped)

    @property
    def line_range(self) -> tuple[int, int]:
        """(first line, one past the last line); (0, 0) for a recording without lines."""
        live = [e for e in self._entries if not e.skipped]
        if not live:
            return (0, 0)
        return (live[0].first_line, live[-1].end_line)

    def __enter__(self) -> RecordingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Drop the reader's reference to the map; yielded views stay valid while referenced."""
        self._entries = []
        self._mm = self._buf = np.zeros(0, np.uint8)

    def __iter__(self) -> Iterator[LineBlock]:
        return self.blocks()

    # -- reading

    def blocks(self, start_line: int = 0) -> Iterator[LineBlock]:
        """Yield LineBlocks in file order, from the one holding ``start_line`` on.

        A block that starts before ``start_line`` is cut to start there (encoder None,
        lost_before 0, timestamp moved by the line rate when known).
        """
        live = [e for e in self._entries if not e.skipped]
        i = max(0, bisect.bisect_right([e.end_line for e in live], start_line))
        for e in live[i:]:
            if e.skipped:  # skipped while iterating another generator
                continue
            if self.verify_crc and not e.verified and e.crc is not None:
                if not self._check_crc(e):
                    continue
            lines = self._lines(e)
            if e.first_line < start_line:
                cut = start_line - e.first_line
                ts = e.timestamp_ns
                if self._header.line_rate_hz > 0:
                    ts += round(cut * 1e9 / self._header.line_rate_hz)
                yield LineBlock(lines[cut:], start_line, None, ts, 0)
            else:
                yield LineBlock(lines, e.first_line, e.encoder, e.timestamp_ns, e.lost_before)

    def _lines(self, e: _Entry) -> np.ndarray:
        """Zero-copy (n_lines, width, channels) view of a block's payload."""
        start = e.offset + (0 if e.crc is None else ALIGN)
        h = self._header
        n = e.n_lines * h.line_bytes
        return self._buf[start:start + n].view(self._dtype).reshape(
            e.n_lines, h.width, h.channels
        )

    def _check_crc(self, e: _Entry) -> bool:
        """Verify a block's CRC-32; False (skip) or RecordingError when it does not match."""
        start = e.offset + ALIGN
        got = zlib.crc32(self._buf[start:start + e.n_lines * self._header.line_bytes])
        if got == e.crc:
            e.verified = True
            return True
        self._corrupt(
            e.index, e.offset,
            f"CRC-32 mismatch: header says {e.crc:#010x}, payload has {got:#010x}",
            skipping=f"skipped; its {e.n_lines} lines count as lost",
        )
        e.skipped = True
        self._recompute_lost()
        return False

    # -- opening

    def _warn(self, msg: str) -> None:
        text = f"{self.path}: {msg}"
        self.warnings.append(text)
        if self._on_warning is not None:
            self._on_warning(text)

    def _corrupt(self, index: int, offset: int, what: str, skipping: str) -> None:
        """Raise for a corrupt block, or warn when skip_corrupt."""
        where = f"block {index} at byte {offset}"
        if not self.skip_corrupt:
            raise RecordingError(what, path=self.path, where=where, hint=_CORRUPT_HINT)
        self._warn(f"{where}: {what}; {skipping}")

    def _read_file_header(self) -> tuple[RecordingHeader, int]:
        buf, size = self._buf, self.file_bytes
        magic = bytes(buf[:8])
        if magic != FILE_MAGIC:
            what = "empty file" if size == 0 else f"bad magic {magic!r}, expected {FILE_MAGIC!r}"
            raise RecordingError(
                f"not a .raw recording: {what}", path=self.path, where="byte 0",
                hint=_HEADERLESS_HINT,
            )
        if size < _FILE_PREFIX.size:
            raise RecordingError(
                f"file header truncated: {size} of {_FILE_PREFIX.size} bytes",
                path=self.path, where="byte 0",
            )
        _, version, _, json_len = _FILE_PREFIX.unpack_from(buf, 0)
        if version != FORMAT_VERSION:
            raise RecordingError(
                f"unknown format version {version}; this program reads version {FORMAT_VERSION}",
                path=self.path, where="byte 8", hint="a newer edge-inspector wrote it",
            )
        end = _FILE_PREFIX.size + json_len
        if json_len > _MAX_JSON or end > size:
            raise RecordingError(
                f"header JSON length {json_len} runs past the end of the file ({size} bytes)"
                if end > size else f"header JSON length {json_len} is over {_MAX_JSON}",
                path=self.path, where="byte 12",
            )
        header = RecordingHeader.from_json(bytes(buf[_FILE_PREFIX.size:end]), path=self.path)
        data_offset = _align(end)
        if data_offset > size:
            self._warn(
                f"file header padding truncated at byte {size} ({data_offset - size} bytes "
                "missing); no blocks"
            )
        return header, data_offset

    def _index_blocks(self) -> None:
        """Walk block headers (64 bytes each, payloads untouched) and build the index."""
        buf, size, line_bytes = self._buf, self.file_bytes, self._header.line_bytes
        off, index, prev_end = self.data_offset, 0, None
        while off < size:
            where = f"block {index} at byte {off}"
            if size - off < ALIGN:
                if not buf[off:].any():
                    self._warn(
                        f"{size - off} zero bytes at byte {off} after the last block ignored"
                    )
                else:
                    self._warn(
                        f"{where}: truncated block header, {ALIGN - (size - off)} bytes missing "
                        "(recording interrupted); block dropped"
                    )
                return
            (magic, n, first, enc, ts, lost, flags, crc, nbytes) = _BLOCK_HEADER.unpack_from(
                buf, off
            )
            if magic != BLOCK_MAGIC:
                if not buf[off:].any():
                    # Filesystems extend files with zeros when power fails mid-append.
                    self._warn(
                        f"{where}: {size - off} zero bytes to the end of the file "
                        "(recording interrupted); ignored"
                    )
                    return
                self._stop(index, off, f"bad block magic {magic!r}, expected {BLOCK_MAGIC!r}")
                return
            if nbytes != n * line_bytes or n == 0:
                self._stop(
                    index, off,
                    f"payload_bytes {nbytes} does not match n_lines {n} x {line_bytes} bytes per "
                    "line" if n else "n_lines is 0",
                )
                return
            nxt = off + ALIGN + _align(nbytes)
            if off + ALIGN + nbytes > size:
                have = size - off - ALIGN
                self._warn(
                    f"{where}: truncated payload, {have} of {nbytes} bytes present, "
                    f"{nbytes - have} bytes missing (recording interrupted); its {n} lines dropped"
                )
                return
            if prev_end is not None and first < prev_end:
                self._corrupt(
                    index, off,
                    f"first_line {first} goes backwards (the previous block ended at line "
                    f"{prev_end})",
                    skipping="skipped",
                )
            else:
                self._entries.append(
                    _Entry(index, off, n, first,
                           enc if flags & FLAG_ENCODER_VALID else None, ts, lost, crc)
                )
                prev_end = first + n
            off = nxt
            index += 1

    def _stop(self, index: int, offset: int, what: str) -> None:
        """A block header that cannot be trusted: raise, or (skip_corrupt) stop reading here."""
        rest = self.file_bytes - offset
        self._corrupt(
            index, offset, what,
            skipping=f"the next block cannot be located; the remaining {rest} bytes "
            f"(up to about {rest // self._header.line_bytes} lines) are treated as lost",
        )

    def _index_headerless(self, geo: HeaderlessGeometry) -> None:
        line_bytes = self._header.line_bytes
        n_total, trailing = divmod(self.file_bytes, line_bytes)
        if trailing:
            self._warn(
                f"file size {self.file_bytes} is not a multiple of the line size {line_bytes} "
                f"bytes; {trailing} trailing bytes at byte {n_total * line_bytes} ignored"
            )
        for i, first in enumerate(range(0, n_total, geo.block_lines)):
            n = min(geo.block_lines, n_total - first)
            self._entries.append(_Entry(i, first * line_bytes, n, first, None, 0, 0, None))

    def _recompute_lost(self) -> None:
        """lost_before of each live block: max(stored, gap to the previous live block)."""
        prev_end: int | None = None
        for e in self._entries:
            if e.skipped:
                continue
            gap = 0 if prev_end is None else e.first_line - prev_end
            e.lost_before = max(e.stored_lost, gap)
            prev_end = e.end_line


def open_recording(
    path: str | PathLike[str],
    *,
    width: int | None = None,
    channels: int | None = None,
    dtype: str | None = None,
    verify_crc: bool = True,
    skip_corrupt: bool = False,
    block_lines: int = 512,
    on_warning: Callable[[str], None] | None = None,
) -> RecordingReader:
    """Open a .raw recording, or a headerless dump when width/channels/dtype are all given.

    A file that starts with the .raw magic always uses its own header (given geometry that
    disagrees with it is reported as a warning).  Anything else needs the geometry.
    """
    geometry = {"width": width, "channels": channels, "dtype": dtype}
    given = {k: v for k, v in geometry.items() if v is not None}
    try:
        with open(path, "rb") as f:
            magic = f.read(len(FILE_MAGIC))
    except OSError as exc:
        raise RecordingError(f"cannot open: {exc.strerror or exc}", path=path) from None
    if magic == FILE_MAGIC:
        reader = RecordingReader(
            path, verify_crc=verify_crc, skip_corrupt=skip_corrupt, on_warning=on_warning
        )
        h = reader.header
        for k, v in given.items():
            try:
                mine = _dtype_name(v) if k == "dtype" else v
            except (TypeError, ValueError):
                mine = v
            if mine != getattr(h, k):
                reader._warn(f"--{k} {v} ignored: the file header says {getattr(h, k)}")
        return reader
    if len(given) < 3:
        missing = [f"--{k}" for k, v in geometry.items() if v is None]
        raise RecordingError(
            f"not a .raw recording (no {FILE_MAGIC!r} magic at byte 0)"
            + (f"; headerless geometry lacks {', '.join(missing)}" if given else ""),
            path=path, where="byte 0", hint=_HEADERLESS_HINT,
        )
    assert width is not None and channels is not None and dtype is not None
    geo = HeaderlessGeometry(width, channels, dtype, block_lines=block_lines)
    return RecordingReader(path, verify_crc=verify_crc, headerless=geo, on_warning=on_warning)


__all__ = [
    "ALIGN",
    "BLOCK_MAGIC",
    "FILE_MAGIC",
    "FORMAT_VERSION",
    "HeaderlessGeometry",
    "RecordingHeader",
    "RecordingReader",
    "RecordingWriter",
    "encode_file_header",
    "open_recording",
]
