"""Stitcher: LineBlocks -> overlapping tiles in a ring of preallocated strip slots.

A *strip* is one row of tiles (``tile`` lines high, all columns). Each ring slot holds one
strip's lines whole, (tile, width, channels): a block's rows are copied in one piece, the
camera's bytes once, and the tiles are views of the slot at their x0 (``Strip.tile_view``); the
copy of a tile into the model's contiguous batch happens where the model is fed
(``Strip.tiles``, pipeline.py). Lines that fall in the vertical overlap are copied into both
strips. Optional per-column flat-field correction (gain, offset) is fused into the copy. On the
same pass the stitcher samples every ``subsample``-th pixel of every ``subsample``-th line:
those samples decide hide presence and make the hide map thumbnails.

Loss policy (docs/architecture.md): with ``live=True`` the stitcher never waits; when no
slot is free it drops the whole strip, counts it and reports it as an uninspected stretch.
With ``live=False`` (replay) it waits for a free slot. Lines the source lost (gaps in the line
index, ``LineBlock.lost_before``) are counted and reported as ``Uninspected(..., "lost")``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numba
import numpy as np

from .lines import LineBlock
from .stream import LineSamples, StitchCounters, StitchMessage, Strip, Uninspected
from .tile import TileGrid


@numba.njit(nogil=True, cache=True)
def _copy_flat_field(src, dst, x0, gain, offset, maxval):  # pragma: no cover - jit
    # src: (n, width, c) block rows; dst: (n, w, c) slot rows from column x0; gain/offset: (width, c)
    n, tw, c = dst.shape
    for i in range(n):
        for x in range(tw):
            for ch in range(c):
                v = src[i, x0 + x, ch] * gain[x0 + x, ch] + offset[x0 + x, ch]
                if v < 0.0:
                    v = 0.0
                elif v > maxval:
                    v = maxval
                dst[i, x, ch] = v + 0.5


@numba.njit(nogil=True, cache=True)
def _gather_samples(src, r0, step, out):  # pragma: no cover - jit
    # out[i, j] = src[r0 + i * step, j * step]: one pass, no numpy strided-copy overhead per pixel.
    # RGB and mono spelled out: with the channel count known the loop is 3x faster than the
    # generic one (0.07 against 0.2-0.6 ms per 512-line 8K block, in cache).
    n, w, c = out.shape
    for i in range(n):
        s = src[r0 + i * step]
        o = out[i]
        if c == 3:
            for j in range(w):
                x = j * step
                o[j, 0] = s[x, 0]
                o[j, 1] = s[x, 1]
                o[j, 2] = s[x, 2]
        elif c == 1:
            for j in range(w):
                o[j, 0] = s[j * step, 0]
        else:
            for j in range(w):
                x = j * step
                for ch in range(c):
                    o[j, ch] = s[x, ch]


class TileRing:
    """``n_slots`` preallocated strip slots, each ``(lines, width, channels)``, and the queue of free ones.

    The slots are written once here, so their pages are mapped before the first line arrives: a
    lazily mapped ring costs a page fault per 4 KiB on the first pass over each slot (the
    stitcher ran at half speed during the first ``n_slots`` strips). The ring's memory,
    ``n_slots x tile x width x channels`` bytes (4 x 50 MB for the 8K RGB demo), is resident
    from the start (docs/performance.md, "Where the memory goes")."""

    def __init__(self, n_slots: int, *, lines: int, width: int, channels: int, dtype: np.dtype) -> None:
        self.buffers = np.empty((n_slots, lines, width, channels), dtype)
        self.buffers.fill(0)  # map every page now, not in the hot path
        self._free: queue.Queue[int] = queue.Queue()
        self.wait_s = 0.0  # time spent waiting for a free slot (replay backpressure)
        for i in range(n_slots):
            self._free.put(i)

    def acquire(self, wait: bool, stop: threading.Event | None = None) -> int | None:
        if not wait:
            try:
                return self._free.get_nowait()
            except queue.Empty:
                return None
        t0 = time.perf_counter()
        try:
            while True:
                try:
                    return self._free.get(timeout=0.1)
                except queue.Empty:
                    if stop is not None and stop.is_set():
                        return None
        finally:
            self.wait_s += time.perf_counter() - t0

    def release(self, slot: int) -> None:
        self._free.put(slot)

    @property
    def free_slots(self) -> int:
        return self._free.qsize()


@dataclass(slots=True)
class _Open:
    index: int
    slot: int | None  # None: dropped (no slot was free)
    filled_until: int  # next line expected
    lost: list[tuple[int, int]]


class Stitcher:
    """Feeds LineBlocks into strip slots and emits Strip / LineSamples / Uninspected messages.

    ``emit`` receives each message in line order: the samples of a block come before any
    strip that block completes, so hide presence is known before the strip's detections.
    ``counters`` (stream.StitchCounters) count lines and strips for the probe.
    """

    def __init__(
        self,
        grid: TileGrid,
        channels: int,
        dtype: np.dtype,
        ring: TileRing,
        emit: Callable[[StitchMessage], None],
        *,
        live: bool = False,
        sample_step: int = 8,
        flat_field: tuple[np.ndarray, np.ndarray] | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.grid = grid
        self.channels = channels
        self.dtype = np.dtype(dtype)
        want = (grid.tile, grid.width, channels)
        if ring.buffers.shape[1:] != want or ring.buffers.dtype != self.dtype:
            raise ValueError(f"tile ring slots are {ring.buffers.shape[1:]} {ring.buffers.dtype}, the stitcher"
                             f" needs (tile, width, channels) = {want} {self.dtype}")
        self.ring = ring
        self.emit = emit
        self.live = live
        self.sample_step = sample_step
        self.stop = stop
        self.x0s = grid.x0s
        self._open: dict[int, _Open] = {}
        self._next_strip = 0  # strips below this were opened (or skipped) already
        self._end_line: int | None = None
        self._origin_set = False
        if flat_field is not None:
            gain, offset = flat_field
            shape = (grid.width, channels)
            gain = np.broadcast_to(np.asarray(gain, np.float32).reshape(grid.width, -1), shape)
            offset = np.broadcast_to(np.asarray(offset, np.float32).reshape(grid.width, -1), shape)
            self._ff: tuple[np.ndarray, np.ndarray] | None = (
                np.ascontiguousarray(gain),
                np.ascontiguousarray(offset),
            )
        else:
            self._ff = None
        self._maxval = float(np.iinfo(self.dtype).max)
        self.counters = StitchCounters()

    @property
    def lines_in(self) -> int:
        return self.counters.lines_in

    @property
    def lines_lost(self) -> int:
        return self.counters.lines_lost

    @property
    def strips_out(self) -> int:
        return self.counters.strips_out

    @property
    def strips_dropped(self) -> int:
        return self.counters.strips_dropped

    @property
    def tiles_out(self) -> int:
        return self.counters.tiles_out

    # -- public -----------------------------------------------------------------------------
    def push(self, block: LineBlock) -> None:
        n = self.counters
        n.last_block_ns = time.monotonic_ns()
        a, b = block.first_line, block.end_line
        if not self._origin_set:
            self.grid = TileGrid(self.grid.width, self.grid.tile, self.grid.overlap, a)
            self._origin_set = True
            self._end_line = a
        assert self._end_line is not None
        if a < self._end_line:
            raise ValueError(f"block at line {a} goes back before line {self._end_line}")
        # Lost lines: the gap in the line index, or what the source reports when that is more
        # (the first block's own loss, or a source whose index did not leave room for it). They
        # end right before this block; a region reaching back over lines already received is
        # kept so (it cannot be placed more exactly) and counted once.
        lost = max(a - self._end_line, block.lost_before)
        if lost:
            n.lines_lost += lost
            if a > 0:  # (line indices start at 0: a loss reported before line 0 has no place)
                self.emit(Uninspected(max(0, a - lost), a, "lost"))
        n.lines_in += b - a  # a block may have no lines: it only reports lost ones (a lost tail)
        self._emit_samples(block)
        for k in self.grid.strips_touching(a, b):
            st = self._strip(k, a)
            if st is None:
                continue
            self._fill(st, block)
        self._end_line = b
        self._complete(upto=b)

    def flush(self) -> None:
        """End of stream: emit the open strips with the lines they have (partial last strip)."""
        for k in sorted(self._open):
            self._finish(self._open.pop(k))

    # -- internals ----------------------------------------------------------------------------
    def _strip(self, k: int, a: int) -> _Open | None:
        st = self._open.get(k)
        if st is not None:
            return st
        if k < self._next_strip:
            return None  # already emitted (cannot happen with monotonic lines) or skipped
        start = self.grid.strip_start(k)
        # Strips between the last opened one and k got no line at all (a gap): skip them.
        self._next_strip = k + 1
        slot = self.ring.acquire(wait=not self.live, stop=self.stop)
        if slot is None:
            self.counters.strips_dropped += 1
            self.emit(Uninspected(start, start + self.grid.tile, "dropped"))
        st = _Open(k, slot, start, [])
        self._open[k] = st
        return st

    def _fill(self, st: _Open, block: LineBlock) -> None:
        start = self.grid.strip_start(st.index)
        end = start + self.grid.tile
        a = max(block.first_line, start)
        b = min(block.end_line, end)
        if b <= a or st.slot is None:
            st.filled_until = max(st.filled_until, b)
            return
        buf = self.ring.buffers[st.slot]
        top_gap = 0
        if a > st.filled_until:  # lines missing inside this strip: repeat the last good row
            r0, r1 = st.filled_until - start, a - start
            if r0 > 0:
                buf[r0:r1] = buf[r0 - 1 : r0]
            else:
                top_gap = r1
            st.lost.append((st.filled_until, a))
        rows = block.lines[a - block.first_line : b - block.first_line]
        r0 = a - start
        if self._ff is None:  # whole rows, one copy: the camera's bytes once
            buf[r0 : r0 + (b - a)] = rows
        else:
            _copy_flat_field(rows, buf[r0 : r0 + (b - a)], 0, self._ff[0], self._ff[1], self._maxval)
        if top_gap:  # the gap was at the top of the strip: repeat the first good row upwards
            buf[:top_gap] = buf[top_gap : top_gap + 1]
        st.filled_until = b

    def _complete(self, upto: int) -> None:
        for k in sorted(self._open):
            if self.grid.strip_end(k) <= upto:
                self._finish(self._open.pop(k))

    def _finish(self, st: _Open) -> None:
        if st.slot is None:
            return
        start = self.grid.strip_start(st.index)
        valid = min(st.filled_until, start + self.grid.tile) - start
        buf = self.ring.buffers[st.slot]
        if 0 < valid < self.grid.tile:
            buf[valid:] = buf[valid - 1 : valid]
        self.counters.strips_out += 1
        self.counters.tiles_out += len(self.x0s)
        self.emit(
            Strip(
                index=st.index,
                first_line=start,
                valid_lines=valid,
                x0s=self.x0s,
                pixels=buf,
                slot=st.slot,
                lost=st.lost,
                t_complete_ns=time.monotonic_ns(),
            )
        )

    def _emit_samples(self, block: LineBlock) -> None:
        s = self.sample_step
        a = block.first_line
        first = -(-a // s) * s  # first multiple of s at or after a
        if first >= block.end_line:
            return
        lines = block.lines
        n = -(-(block.end_line - first) // s)
        if lines.ndim == 3 and lines.strides[-1] == lines.itemsize:
            samples = np.empty((n, -(-lines.shape[1] // s), lines.shape[2]), lines.dtype)
            _gather_samples(lines, first - a, s, samples)  # a copy, also for step 1
        else:
            samples = np.array(lines[first - a :: s, ::s], order="C")
        if self._ff is not None:
            g = self._ff[0][::s][None]
            o = self._ff[1][::s][None]
            samples = np.clip(samples * g + o + 0.5, 0, self._maxval).astype(self.dtype)
        self.emit(LineSamples(first, s, samples))
