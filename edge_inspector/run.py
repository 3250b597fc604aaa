"""One inspection run: the pipeline, grading, results and marks, wired in one place.

Replay (replay.py), the live run (live.py) and bench (bench.py) build an ``InspectionRun``; hil
runs through replay and the live run. One tile's way from the camera to a PLC mark:

    camera / recording    LineBlock (lines.py; camera/, recording.py)
    Stitcher              -> Strip in a ring slot (stitch.py; messages in stream.py)
    inference thread      -> StripDetections (pipeline.py; inference/)
    Assembler             -> a final Defect: the listener, MarkPlanner (marking.py), plans its ink mark
                          -> a complete Hide: graded once here, then written, marked and published
    MarkDispatch          -> PlcLink -> PLC (dispatch.py; plc/)

Use::

    with InspectionRun(station, model, out_dir, run_info=..., source_id=..., plc=..., live=...) as run:
        run.start(blocks)             # PLC link up, pipeline threads running
        ...                           # run.stop(): the source ends early, the pipeline drains
        stats = run.join()            # drained, marks delivered (run.marks_summary)
        summary = run.finish({...})   # summary.json

Each complete hide is graded once (``grade_hide``) before any subscriber sees it, then handed
in this order to the results writer, the mark planner (hide end; reject by grade), the event
publisher and the caller's ``subscribers``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import structlog

from .config import Station
from .dispatch import MarkDispatch
from .grading import grade_hide
from .hide import Hide
from .lines import LineBlock
from .pipeline import Pipeline, RunStats, TileModel
from .probe import Probe
from .store import ResultsWriter
from .stream import LineClock

log = structlog.get_logger(__name__)

HideSubscriber = Callable[[Hide], None]
Publish = Callable[[str, dict[str, Any]], None]  # (topic, data): see edge_inspector/events.py


class InspectionRun:
    """A stream of blocks through the pipeline into results and marks. Built once; a context manager.

    ``out_dir``: results (ResultsWriter, with ``run_info``) and marks (MarkDispatch: marks.jsonl,
    and the PLC ``plc``: "HOST:PORT", "sim", or None for the station's ``[plc] host``) go there;
    None (bench): hides are counted only. ``source_id`` makes the marks' keys unique to the
    source. ``live``: the stitcher drops strips when the ring is full instead of waiting.
    ``publish(topic, data)`` receives each hide ("hide"), its defects ("defect") and each mark
    ("mark"). ``probe`` gets the stages' counters and the mark dispatch, for metrics and the
    watchdog. ``progress(end_line)`` is called from the source thread after each block. In a
    ``live`` run each block also ties the line frame to the clock for the marks (dispatch.line_seen).
    ``hurry``: set it (a second SIGTERM) to end the marks' delivery at once; what is not delivered
    is counted not fired.
    """

    def __init__(
        self,
        station: Station,
        model: TileModel | None,
        out_dir: Path | None = None,
        *,
        run_info: dict[str, Any] | None = None,
        source_id: str = "",
        plc: str | None = None,
        live: bool = False,
        subscribers: Sequence[HideSubscriber] = (),
        publish: Publish | None = None,
        probe: Probe | None = None,
        progress: Callable[[int], None] | None = None,
        hurry: threading.Event | None = None,
    ) -> None:
        self.station = station
        self.model = model
        self.clock = LineClock(station.camera.line_rate_hz)
        self.subscribers = list(subscribers)
        self.publish = publish
        self.dispatch: MarkDispatch | None = None
        self.results: ResultsWriter | None = None
        names = list(model.class_names) if model is not None else []
        if out_dir is not None:
            self.dispatch = MarkDispatch(station, names, out_dir, plc=plc, source_id=source_id, clock=self.clock,
                                         hurry=hurry)
            if live:
                progress = _tied(self.dispatch, progress)
            if probe is not None:
                probe.dispatch = self.dispatch
            self.results = ResultsWriter.for_station(out_dir, station, run_info or {})
            if station.outputs.dxf:  # cutting-room DXF per hide + grading report (edge_inspector/cutting.py)
                from .cutting import CuttingExport
                self.subscribers.insert(0, CuttingExport.for_station(out_dir, self.results.run_id, station, names))
            if publish is not None:
                self.dispatch.planner.on_marks.append(lambda ms: [publish("mark", m.to_json()) for m in ms])
        self.pipeline = Pipeline(
            station, model, self._hide, live=live, progress=progress, class_names=names,
            listener=self.dispatch.planner if self.dispatch is not None else None, clock=self.clock, probe=probe,
        )
        self.stats: RunStats | None = None
        self.marks_summary: dict[str, Any] = {}
        self._started = self._joined = self._marks_done = False

    # -- control ------------------------------------------------------------------------------
    def start(self, blocks: Iterable[LineBlock], *, first_line: int | None = None) -> None:
        """PLC link up (or retrying), then the pipeline threads on ``blocks``.

        ``first_line``: tie that line to the PLC's belt position now (``line_zero``); without it
        the caller ties the line frame itself, when its first lines arrive.
        """
        if self._started:
            raise RuntimeError("InspectionRun.start called twice")
        self._started = True
        if self.dispatch is not None:
            self.dispatch.start()
            if first_line is not None:
                self.dispatch.line_zero(first_line)
        self.pipeline.start(blocks)

    def line_zero(self, line_now: int) -> None:
        """Line ``line_now`` is under the camera now: the marks' line -> encoder offset (once)."""
        if self.dispatch is not None:
            self.dispatch.line_zero(line_now)

    def stop(self) -> None:
        """End the source after the block in hand; the pipeline drains (Pipeline.stop)."""
        self.pipeline.stop()

    def join(self) -> RunStats:
        """Wait for the drain, then deliver the marks (``marks_summary``); the pipeline's figures.

        The marks are delivered and the PLC link stopped also when the pipeline failed.
        """
        try:
            self.stats = self.pipeline.join()
        finally:
            self._joined = True
            self._finish_marks()
        return self.stats

    def finish(self, head: dict[str, Any]) -> dict[str, Any]:
        """summary.json: ``head`` (what the source knows) + model, grades, counters, marks; returned."""
        if self.results is None or self.stats is None or self.model is None:
            raise RuntimeError("InspectionRun.finish needs a joined run with an output folder and a model")
        summary = {**head, **run_summary(self.model, self.station, self.results, self.stats, self.marks_summary)}
        self.results.finish(summary)
        return summary

    def __enter__(self) -> InspectionRun:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if self._started and not self._joined:  # an error between start and join
                self.pipeline.stop()
                with contextlib.suppress(Exception):
                    self.pipeline.join()
            self._finish_marks()
        finally:
            if self.results is not None:
                self.results.close(aborted=et is not None)

    # -- internals ----------------------------------------------------------------------------
    def _finish_marks(self) -> None:
        if self._started and not self._marks_done and self.dispatch is not None:
            self._marks_done = True
            self.marks_summary = self.dispatch.finish()

    def _hide(self, h: Hide) -> None:
        """A complete hide (assembler thread): graded once, then to each subscriber in order."""
        if self.results is None and self.publish is None and not self.subscribers:
            return  # bench: counted by the assembler, nothing to write or mark
        h.grade = grade_hide(h, self.station.grading)
        if self.results is not None:
            self.results.write_hide(h)
        if self.dispatch is not None:
            self.dispatch.on_hide(h)
        if self.publish is not None:
            publish_hide(self.publish, h)
        for subscriber in self.subscribers:
            subscriber(h)
        log.info("hide", hide_id=h.hide_id, lines=[h.first_line, h.last_line], area_m2=round(h.area_m2, 3),
                 defects=len(h.defects), grade=h.grade)


def _tied(dispatch: MarkDispatch, progress: Callable[[int], None] | None) -> Callable[[int], None]:
    """The source's progress callback that also ties each block's last line to the clock (marks' belt frame)."""

    def on_block(end_line: int) -> None:
        dispatch.line_seen(end_line)
        if progress is not None:
            progress(end_line)

    return on_block


def run_summary(model: Any, station: Station, writer: ResultsWriter, stats: RunStats, marks: dict[str, Any]
                ) -> dict[str, Any]:
    """The part of summary.json that replay and the live run share: model, grades, counters, marks."""
    return {
        "model": str(model.path),
        "model_kind": model.kind,
        "classes": list(model.class_names),
        "station": station.station.name,
        "grades": writer.grades,
        **stats.as_dict(),
        "marks": marks,
    }


def publish_hide(publish: Publish, h: Hide) -> None:
    """A finished hide as events: each defect ("defect"), then the hide without its defect list ("hide")."""
    rec = h.to_json()
    for d in rec.pop("defects"):
        publish("defect", d)
    publish("hide", rec)

