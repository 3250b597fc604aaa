"""Probe: a live view into a running pipeline, for metrics, the watchdog and the monitor.

``run_pipeline(..., probe=Probe())`` fills in references to its stages when it starts; any thread
may then call ``snapshot()`` for a consistent-enough dict of counters (plain int reads, no locks
on the hot path). ``progress()`` tells the watchdog whether lines and inferences move.
"""

from __future__ import annotations

import queue
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Probe:
    stitcher: Any = None  # edge_inspector.stitch.Stitcher
    ring: Any = None  # edge_inspector.stitch.TileRing
    q_tiles: queue.Queue[object] | None = None
    q_dets: queue.Queue[object] | None = None
    assembler: Any = None  # edge_inspector.assemble.Assembler
    dispatch: Any = None  # edge_inspector.dispatch.MarkDispatch of a live run: planner and PLC link
    provider: str = "none"
    strips_inferred: int = 0  # updated by the inference thread
    last_infer_ns: int = 0  # time.monotonic_ns() when the last strip left the model
    last_block_ns: int = 0  # when the source last delivered a block
    infer_ms_last: float = 0.0
    started_ns: int = field(default_factory=time.monotonic_ns)
    running: bool = False  # True between pipeline start and the end of the drain

    def snapshot(self) -> dict[str, Any]:
        """Counters since the start of the run, queue depths and ages (seconds) of the last events."""
        s, a = self.stitcher, self.assembler
        now = time.monotonic_ns()

        def age(t: int) -> float | None:
            return round((now - t) / 1e9, 3) if t else None

        strips_out = s.strips_out if s is not None else 0
        return {
            "running": self.running,
            "uptime_s": round((now - self.started_ns) / 1e9, 3),
            "lines": s.lines_in if s is not None else 0,
            "lines_lost": s.lines_lost if s is not None else 0,
            "strips": strips_out,
            "strips_dropped": s.strips_dropped if s is not None else 0,
            "strips_inferred": self.strips_inferred,
            "strips_pending": max(0, strips_out - self.strips_inferred),
            "tiles": s.tiles_out if s is not None else 0,
            "hides": a.hides_done if a is not None else 0,
            "defects": sum(a.defects_by_class.values()) if a is not None else 0,
            "queue_tiles": self.q_tiles.qsize() if self.q_tiles is not None else 0,
            "queue_detections": self.q_dets.qsize() if self.q_dets is not None else 0,
            "ring_free_slots": self.ring.free_slots if self.ring is not None else 0,
            "infer_ms_last": round(self.infer_ms_last, 2),
            "last_block_age_s": age(self.last_block_ns),
            "last_infer_age_s": age(self.last_infer_ns),
            "provider": self.provider,
        }

    def plc_line_running(self) -> bool | None:
        """The PLC's LINE_RUNNING when a PLC link is up, else None (unknown)."""
        link = getattr(self.dispatch, "link", None)
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
        s = self.stitcher
        lines = s.lines_in if s is not None else 0
        out = s.strips_out if s is not None else 0
        return lines, self.strips_inferred, max(0, out - self.strips_inferred)
