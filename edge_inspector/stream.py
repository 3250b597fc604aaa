"""What flows through the pipeline: the messages between stages, the line clock, the stage counters.

One strip of tiles travels (docs/architecture.md)::

    LineBlock (lines.py) -> Stitcher (stitch.py) -> Strip | LineSamples | Uninspected
      -> inference (pipeline.py) -> StripDetections | LineSamples | Uninspected
      -> Assembler (assemble.py) -> Defect, Hide -> InspectionRun (run.py): grade, write, mark

Messages arrive at the assembler in line order. ``LineClock`` estimates the line under the
camera now; the run creates one and hands it to the assembler (which advances it) and the mark
planner (which reads it). Each stage owns one counters object and is the only one to write it;
the probe (probe.py) reads them from other threads (plain int reads, no locks).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .defect import Defect
from .detections import Detections

# -- messages ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Strip:
    """A filled ring slot: one row of tiles, handed to inference, then released.

    The slot holds the strip's lines whole, ``(tile, width, channels)``: the camera's bytes once
    (plus the vertical overlap), each line one contiguous row. A tile is a view of it, columns
    ``x0 .. x0 + tile`` (``tile_view``); ``tiles`` copies tiles into the contiguous batch a model
    takes (docs/performance.md, "the strip stored once").
    """

    index: int
    first_line: int
    valid_lines: int  # rows holding camera lines; the rest repeat the last valid row
    x0s: list[int]
    pixels: np.ndarray  # (tile, width, channels) view of the ring slot: the strip's lines
    slot: int
    lost: list[tuple[int, int]] = field(default_factory=list)  # line ranges filled by repetition
    t_complete_ns: int = 0  # when its last line arrived

    @property
    def tile(self) -> int:
        """Tile side in px (tiles are square: a strip is one tile high)."""
        return int(self.pixels.shape[0])

    def tile_view(self, col: int) -> np.ndarray:
        """Tile column ``col`` as a (tile, tile, channels) view of the slot (no copy)."""
        x0, t = self.x0s[col], self.tile
        return self.pixels[:, x0 : x0 + t]

    def pick(self, cols: list[int], out: np.ndarray) -> np.ndarray:
        """Tile columns ``cols`` copied into the first ``len(cols)`` tiles of ``out`` (returned)."""
        batch = out[: len(cols)]
        for i, c in enumerate(cols):
            np.copyto(batch[i], self.tile_view(c))
        return batch

    def tiles(self, first: int = 0, end: int | None = None, out: np.ndarray | None = None) -> np.ndarray:
        """Tile columns ``first .. end`` copied into a contiguous (n, tile, tile, channels) batch:
        into ``out`` (its first n tiles, returned) when given, else a new array."""
        end = len(self.x0s) if end is None else min(end, len(self.x0s))
        n, t = max(0, end - first), self.tile
        shape = (n, t, t) + self.pixels.shape[2:]
        if out is None:
            out = np.empty(shape, self.pixels.dtype)
        elif out.shape[1:] != shape[1:] or len(out) < n or out.dtype != self.pixels.dtype:
            raise ValueError(f"batch buffer {out.shape} {out.dtype} cannot hold {shape} {self.pixels.dtype}")
        batch = out[:n]
        for i in range(n):
            np.copyto(batch[i], self.tile_view(first + i))
        return batch


@dataclass(slots=True)
class StripDetections:
    """Model output for one strip: one Detections per tile column, in tile px."""

    index: int
    first_line: int
    valid_lines: int
    x0s: list[int]
    detections: list[Detections]
    lost: list[tuple[int, int]] = field(default_factory=list)
    t_complete_ns: int = 0
    t_infer_start_ns: int = 0
    t_infer_end_ns: int = 0


@dataclass(slots=True)
class LineSamples:
    """Every ``step``-th pixel of every ``step``-th line, for hide presence and thumbnails."""

    first_line: int  # global line of samples[0]; a multiple of step
    step: int
    samples: np.ndarray  # (n, width // step, channels) uint8/uint16 copy


@dataclass(slots=True)
class Uninspected:
    """Lines [first_line, end_line) that will not be inspected."""

    first_line: int
    end_line: int
    reason: str  # "lost" (missing from the source), "dropped" (no free tile slot), "model" (model server failed)


StitchMessage = Strip | LineSamples | Uninspected  # stitcher -> inference
AssemblyMessage = StripDetections | LineSamples | Uninspected  # inference -> assembler


# -- the line clock ---------------------------------------------------------------------------


class LineClock:
    """Estimate of the line under the camera now: the latest strip's end plus the time since, at the line rate."""

    def __init__(self, line_rate_hz: float) -> None:
        self.line_rate_hz = line_rate_hz
        self._at: tuple[int, int] = (0, 0)  # (last line of the latest strip, monotonic ns when it was complete)

    def advance(self, end_line: int, t_ns: int) -> None:
        """Lines below ``end_line`` had all arrived at ``t_ns`` (time.monotonic_ns())."""
        self._at = (end_line, t_ns)

    def now(self) -> float:
        end, t_ns = self._at
        if not t_ns:
            return float(end)
        return end + max(0, time.monotonic_ns() - t_ns) / 1e9 * self.line_rate_hz


# -- early events for marking -------------------------------------------------------------------


class AssemblyListener(Protocol):
    """Events the assembler hands out before a hide is complete (marking.MarkPlanner is one).

    ``now_line`` is the line clock's reading when the event happened.
    """

    def defects(self, found: list[Defect], now_line: float) -> None:
        """Defects that just became final and lie on a hide, at least ``edge_margin_mm`` inside its
        outline (checked on the presence mask; ``hide_id`` is provisional)."""

    def hide_start(self, hide_id: int, first_line: int, now_line: float) -> None:
        """A hide was confirmed under the camera."""

    def uninspected(self, u: Uninspected, now_line: float) -> None:
        """Lines that will not be inspected."""


# -- stage counters -------------------------------------------------------------------------------


@dataclass
class StitchCounters:
    """Written by the stitcher (source thread)."""

    lines_in: int = 0
    lines_lost: int = 0
    strips_out: int = 0
    strips_dropped: int = 0
    tiles_out: int = 0
    last_block_ns: int = 0  # time.monotonic_ns() when the source last delivered a block


@dataclass
class InferenceCounters:
    """Written by the inference thread."""

    strips: int = 0  # strips through the model
    last_ns: int = 0  # time.monotonic_ns() when the last strip left the model
    ms_last: float = 0.0  # model time of the last strip
    ms: list[float] = field(default_factory=list)  # model time per strip
    model_failed: int = 0  # strips the model could not run (model server down or slow): uninspected
    tiles_run: int = 0  # tiles the model ran on
    tiles_skipped: int = 0  # tiles of bare belt the model was not run on (tiling.skip_belt_tiles)


@dataclass
class AssemblyCounters:
    """Written by the assembler."""

    done_line: int = -1  # every line below this has been through the model and the merge
    hides: int = 0  # hides complete
    defects_by_class: dict[str, int] = field(default_factory=dict)
    off_hide: int = 0  # defects outside any hide (belt dirt, edge effects), dropped
    suppressed_lost: int = 0  # detections centred in lost or dropped lines
    suppressed_edge: int = 0  # defects within hide_detection.edge_margin_mm of the hide outline
    latencies_ns: list[int] = field(default_factory=list)  # strip complete -> assembled

    @property
    def defects(self) -> int:
        return sum(self.defects_by_class.values())
