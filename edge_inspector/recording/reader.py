"""``RecordingReader`` and ``open_recording``: read a .raw file (or a headerless dump) zero-copy.

The whole file is mapped with ``numpy.memmap``; the 64-byte block headers are walked once (payloads
untouched) into an index, and ``LineBlock``s are yielded whose ``lines`` are views into the map.
CRC-32 checks, lost-line gaps, truncated tails (power loss) and corrupt blocks are handled here.
"""

from __future__ import annotations

import bisect
import os
import stat
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from os import PathLike
from pathlib import Path

import numpy as np

from ..errors import RecordingError
from ..lines import LineBlock
from .format import (
    _BLOCK_HEADER,
    _CORRUPT_HINT,
    _FILE_PREFIX,
    _HEADERLESS_HINT,
    _MAX_JSON,
    ALIGN,
    BLOCK_MAGIC,
    FILE_MAGIC,
    FLAG_ENCODER_VALID,
    FORMAT_VERSION,
    RecordingHeader,
    _align,
    _dtype_name,
)
from .headerless import HeaderlessGeometry

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
    the previous block)``; the first block reports its stored value (plus the lines of skipped
    blocks before it).  ``lost_lines`` sums them, with the lost tail (below).
    Truncated tail (power loss): the incomplete last block is dropped with a warning.
    Corrupt block: RecordingError naming the block and byte offset, or with ``skip_corrupt`` a
    warning and the block's lines become lost lines of the next block.  A block header that
    cannot be trusted (bad magic, wrong payload length) is skipped to the next valid block
    header found at a 64-byte boundary; the lines in between are lost.  Lines lost after the
    last good block (skipped last blocks, or no valid header after a bad one) are reported by
    one final block with no lines whose ``lost_before`` counts them, so a consumer (the
    stitcher) turns them into an uninspected stretch like any other gap.
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
        self._tail_lost = 0  # lines estimated lost after the last block header that could be read
        self._lost_first = 0  # lines estimated lost before the first good block (its header was bad)
        size = _regular_file_size(self.path)
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
        """Sum of ``lost_before`` over the blocks that will be yielded, and the lost tail."""
        return sum(e.lost_before for e in self._entries if not e.skipped) + self._lost_after()[1]

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
        end, lost = self._lost_after()
        if lost and end > start_line:
            h = self._header
            yield LineBlock(np.zeros((0, h.width, h.channels), self._dtype), end, None, 0, lost)

    def _lost_after(self) -> tuple[int, int]:
        """(line after the lost tail, lines lost after the last live block): skipped last blocks
        and the estimated lines of an unreadable rest of the file; (0, 0) when none."""
        entries = self._entries
        last_live = max((i for i, e in enumerate(entries) if not e.skipped), default=-1)
        after = entries[last_live + 1:]  # all skipped
        if last_live >= 0:
            start = entries[last_live].end_line
        else:
            start = after[0].first_line if after else 0
        end = (after[-1].end_line if after else start) + self._tail_lost
        return (end, end - start) if end > start else (0, 0)

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
            bad = None
            if magic != BLOCK_MAGIC:
                if not buf[off:].any():
                    # Filesystems extend files with zeros when power fails mid-append.
                    self._warn(
                        f"{where}: {size - off} zero bytes to the end of the file "
                        "(recording interrupted); ignored"
                    )
                    return
                bad = f"bad block magic {magic!r}, expected {BLOCK_MAGIC!r}"
            elif nbytes != n * line_bytes or n == 0:
                bad = (f"payload_bytes {nbytes} does not match n_lines {n} x {line_bytes} bytes "
                       "per line" if n else "n_lines is 0")
            if bad is not None:
                nxt = self._resync(index, off, bad, prev_end)
                if nxt is None:
                    return
                off = nxt
                index += 1
                continue
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

    def _resync(self, index: int, offset: int, what: str, prev_end: int | None) -> int | None:
        """A block header that cannot be trusted: raise, or (skip_corrupt) go on at the next valid
        block header; its offset, or None when there is none (the rest of the file is lost)."""
        if not self.skip_corrupt:
            self._corrupt(index, offset, what, skipping="")
        nxt = self._next_header(offset + ALIGN, prev_end)
        if nxt is not None:
            first = _BLOCK_HEADER.unpack_from(self._buf, nxt)[2]
            if prev_end is None:  # no block before: estimate the skipped lines from their bytes
                est = min(int(first), (nxt - offset) // self._header.line_bytes)
                self._lost_first = max(self._lost_first, est)
            gap = f"lines {prev_end}..{first}" if prev_end is not None else f"the lines before {first}"
            self._corrupt(
                index, offset, what,
                skipping=f"skipped to the next block header at byte {nxt}; {gap} count as lost",
            )
            return nxt
        rest = self.file_bytes - offset
        self._tail_lost = self._lines_in(rest)
        self._corrupt(
            index, offset, what,
            skipping=f"no valid block header follows; the remaining {rest} bytes "
            f"(about {self._tail_lost} lines) are treated as lost",
        )
        return None

    def _lines_in(self, nbytes: int) -> int:
        """About how many lines ``nbytes`` of blocks hold, at the size of the last good block."""
        lb = self._header.line_bytes
        n = self._entries[-1].n_lines if self._entries else 0
        if not n:
            return nbytes // lb
        per_block = ALIGN + _align(n * lb)
        k, extra = divmod(nbytes, per_block)
        return k * n + max(0, extra - ALIGN) // lb

    def _next_header(self, start: int, prev_end: int | None) -> int | None:
        """Offset of the next plausible block header at or after ``start`` (64-byte aligned):
        the magic, a payload length that matches, a payload inside the file, a first line that
        does not go back, and (``verify_crc``) a matching CRC-32."""
        buf, size, lb = self._buf, self.file_bytes, self._header.line_bytes
        start = _align(start)
        rows = (size - start) // ALIGN
        if rows <= 0:
            return None
        heads = buf[start:start + rows * ALIGN].reshape(rows, ALIGN)[:, :4]
        hits = np.flatnonzero((heads == np.frombuffer(BLOCK_MAGIC, np.uint8)).all(axis=1))
        for h in hits:
            off = start + int(h) * ALIGN
            (_, n, first, _, _, _, _, crc, nbytes) = _BLOCK_HEADER.unpack_from(buf, off)
            if n == 0 or nbytes != n * lb or off + ALIGN + nbytes > size:
                continue
            if prev_end is not None and first < prev_end:
                continue
            if self.verify_crc and zlib.crc32(buf[off + ALIGN:off + ALIGN + nbytes]) != crc:
                continue
            return off
        return None

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
        """lost_before of each live block: max(stored, gap to the previous live block). Lines of
        skipped blocks before the first live one count as lost before it too."""
        prev_end: int | None = None
        lost_first = self._lost_first
        for e in self._entries:
            if e.skipped:
                if prev_end is None:
                    prev_end = e.first_line
                continue
            gap = lost_first if prev_end is None else e.first_line - prev_end
            e.lost_before = max(e.stored_lost, gap)
            prev_end = e.end_line
            lost_first = 0


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
    _regular_file_size(Path(path))  # a FIFO or a device would block the open below or never end
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


_KINDS = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a directory",
}


def _regular_file_size(path: Path) -> int:
    """Size of ``path``; RecordingError when it is missing or not a regular file.

    A recording is memory-mapped and read from both ends, so it must be a file: a FIFO would
    block the open until a writer comes, a device would never end.
    """
    try:
        st = os.stat(path)
    except OSError as exc:
        raise RecordingError(f"cannot open: {exc.strerror or exc}", path=path) from None
    if not stat.S_ISREG(st.st_mode):
        kind = _KINDS.get(stat.S_IFMT(st.st_mode), "not a regular file")
        raise RecordingError(
            f"is {kind}, not a regular file: a recording is read from a file",
            path=path, hint="record to a file first (edge-inspector record -o FILE)",
        )
    return st.st_size
