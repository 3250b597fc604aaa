"""Probe: a live view into a running pipeline, for metrics, the watchdog and the monitor.

The pipeline attaches its stages' counters (stream.StitchCounters, InferenceCounters,
AssemblyCounters), its queues and its tile ring when it is built; each stage writes only its own
counters. Any thread may then call ``snapshot()`` for a consistent-enough dict of counters (plain
int reads, no locks on the hot path). ``progress()`` tells the watchdog whether lines and
inferences move.
"""

from __future__ import annotations

import queue
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .stream import AssemblyCounters, InferenceCounters, StitchCounters

if TYPE_CHECKING:
    from .dispatch import MarkDispatch


class SlotPool(Protocol):
    """The tile ring as the probe sees it (stitch.TileRing)."""

    @property
    def free_slots(self) -> int: ...


@dataclass
class Probe:
    stitch: StitchCounters = field(default_factory=StitchCounters)
    inference: InferenceCounters = field(default_factory=InferenceCounters)
    assembly: AssemblyCounters = field(default_factory=AssemblyCounters)
    ring: SlotPool | None = None
    q_tiles: queue.Queue[object] | None = None
    q_dets: queue.Queue[object] | None = None
    dispatch: MarkDispatch | None = None  # the mark dispatch of a live run: planner and PLC link
    provider: str = "none"
    started_ns: int = field(default_factory=time.monotonic_ns)
    running: bool = False  # True between pipeline start and the end of the drain

    def attach(
        self, stitch: StitchCounters, inference: InferenceCounters, assembly: AssemblyCounters, ring: SlotPool,
        q_tiles: queue.Queue[object], q_dets: queue.Queue[object], provider: str,
    ) -> None:
        """Called by the pipeline when it is built: the counters and queues to read from now on."""
        self.stitch, self.inference, self.assembly = stitch, inference, assembly
        self.ring, self.q_tiles, self.q_dets, self.provider = ring, q_tiles, q_dets, provider

    @property
    def strips_inferred(self) -> int:
        return self.inference.strips

    def snapshot(self) -> dict[str, Any]:
        """Counters since the start of the run, queue depths and ages (seconds) of the last events."""
        s, i, a = self.stitch, self.inference, self.assembly
        now = time.monotonic_ns()

        def age(t: int) -> float | None:
            return round((now - t) / 1e9, 3) if t else None

        return {
            "running": self.running,
            "uptime_s": round((now - self.started_ns) / 1e9, 3),
            "lines": s.lines_in,
            "lines_lost": s.lines_lost,
            "strips": s.strips_out,
            "strips_dropped": s.strips_dropped,
            "strips_inferred": i.strips,
            "strips_pending": max(0, s.strips_out - i.strips),
            "tiles": s.tiles_out,
            "hides": a.hides,
            "defects": a.defects,
            "queue_tiles": self.q_tiles.qsize() if self.q_tiles is not None else 0,
            "queue_detections": self.q_dets.qsize() if self.q_dets is not None else 0,
            "ring_free_slots": self.ring.free_slots if self.ring is not None else 0,
            "infer_ms_last": round(i.ms_last, 2),
            "last_block_age_s": age(s.last_block_ns),
            "last_infer_age_s": age(i.last_ns),
            "provider": self.provider,
            "strips_model_failed": i.model_failed,
        }

    def plc_line_running(self) -> bool | None:
        """The PLC's LINE_RUNNING when a PLC link is up, else None (unknown)."""
        link = self.dispatch.link if self.dispatch is not None else None
        if link is None or not link.stats().get("connected"):
            return None
        return link.line_running

    def marks(self) -> dict[str, Any]:
        """Planner summary and PLC link counters of a live run ({} before the run starts)."""
        d = self.dispatch
        if d is None:
            return {}
        out: dict[str, Any] = {"marks": d.planner.summary()}
        if d.link is not None:
            out["plc"] = d.link.stats()
        return out

    def progress(self) -> tuple[int, int, int]:
        """(lines in, strips inferred, strips waiting for the model): what the watchdog compares."""
        s, i = self.stitch, self.inference
        return s.lines_in, i.strips, max(0, s.strips_out - i.strips)
