"""``RecordingWriter``: append LineBlocks to a new .raw file, one flushed block per LineBlock."""

from __future__ import annotations

import os
import zlib
from os import PathLike
from pathlib import Path

import numpy as np

from ..errors import RecordingError
from ..lines import LineBlock
from .format import (
    _BLOCK_HEADER,
    ALIGN,
    BLOCK_MAGIC,
    FLAG_ENCODER_VALID,
    RecordingHeader,
    _align,
    encode_file_header,
)

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
