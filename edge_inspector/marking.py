"""Mark planning: from defects, hides and uninspected stretches to PLC marks.

Rules (station ``[marking]``, docs/architecture.md):

- **Ink marks** are planned the moment a defect is final (one strip after the camera saw it),
  not when its hide is complete, so the mark reaches the PLC before the defect reaches the
  marker. Only defects on a hide and at least ``hide_detection.edge_margin_mm`` inside its
  outline are marked, filtered by ``classes``, ``min_score`` and ``min_area_mm2``. Defects
  final at the same time whose centres lie within ``cluster_mm`` of each other share one mark
  at the centre of their boxes; a defect within ``cluster_mm`` of a recent mark gets none.
- **Reject**: when a hide is complete and graded, it is rejected when its grade is in
  ``reject_grades`` or its defect area share exceeds ``reject_defect_share``. The reject
  mark sits at the hide's leading edge; the deadline uses ``reject_distance_mm``.
- **Hide start/end** and **uninspected start/end** marks when ``hide_events`` /
  ``uninspected`` are on.

Positions: the inspector's belt frame (line x mm_per_line, zero at line 0) plus
``belt_offset_mm`` = the PLC encoder position at line 0, so marks are in the PLC's frame.
Each mark records that frame (``epoch``, ``offset_mm``, ``run_id``; edge_inspector/mark.py):
before the PLC's encoder is known the planner plans in epoch 0 (offset 0), and such marks are
held until the run re-bases them (edge_inspector/dispatch.py). Marks closed without being fired
are counted by reason in ``not_fired`` (docs/marking.md, "Belt frames").
Deadline = mark position + actuator distance: the encoder position at which the actuator
reaches the spot. A mark planned when the belt is already past its deadline is *late*: it is
still sent, flagged, counted and logged.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import structlog

from .config import Station
from .defect import Defect
from .grading import defect_area_share
from .hide import Hide
from .mark import Action, Mark
from .stream import LineClock, Uninspected

log = structlog.get_logger(__name__)

MarkSink = Callable[[list[Mark]], list[Mark]]  # persists/sends; returns the accepted marks


class MarkPlanner:
    """Turns assembler events into marks, hands them to ``sink`` and logs them to ``log_path``.

    It is the assembler's listener (stream.AssemblyListener: ``defects``, ``hide_start``,
    ``uninspected``); the run hands it each complete, graded hide (``hide``).

    ``class_ids`` maps class names to the model's class indices. ``source_id`` identifies the
    line source (recording path, camera serial + start time) and makes every mark's idempotency
    key unique to it. ``belt_now_mm`` gives the encoder position now when a PLC reports one;
    otherwise the planner uses the line clock: its reading passed with each event, and ``clock``
    (the run's stream.LineClock) for complete hides.
    """

    def __init__(
        self,
        station: Station,
        class_names: list[str],
        *,
        source_id: str,
        sink: MarkSink | None = None,
        log_path: Path | None = None,
        belt_offset_mm: float = 0.0,
        belt_now_mm: Callable[[], float | None] | None = None,
        clock: LineClock | None = None,
        run_id: str = "",
        epoch: int | None = None,
    ) -> None:
        self.st = station
        self.cfg = station.marking
        self.class_ids = {n: i for i, n in enumerate(class_names)}
        self.source_id = source_id
        self.sink = sink
        self.belt_offset_mm = belt_offset_mm
        self.epoch = epoch  # the frame new marks are planned in (mark.py); None: not checked
        self.run_id = run_id
        self.not_fired: dict[str, int] = {}  # marks closed without being fired, by reason
        self.earlier_run_closed: dict[str, int] = {}  # another run's marks this run closed (never sent)
        self.belt_now_mm = belt_now_mm
        self.mm_per_line = station.camera.mm_per_line
        self.clock = clock
        self.on_marks: list[Callable[[list[Mark]], None]] = []  # e.g. the event publisher
        self._recent: deque[tuple[float, float]] = deque(maxlen=64)  # ink marks (along, across), line frame
        self.log_path = log_path
        self._log: IO[str] | None = None
        self._log_lock = threading.Lock()  # the assembler, the source thread (frames) and finish() write
        self._closed = False
        self._last_deadline_line: float | None = None  # latest deadline of any mark handed out, line frame
        self.planned: dict[str, int] = {}
        self.late = 0
        self.covered = 0  # defects within cluster_mm of another mark
        self.filtered = 0  # defects the class/score/area rules leave unmarked
        self.duplicates = 0  # marks the sink already had (same key)
        self.rebased = 0  # marks moved into a new belt frame before they were sent
        self.drift_retied = 0  # times the line frame's drift against the encoder was followed
        self.line_to_mark_ms: list[float] = []  # camera line of the defect's end -> ink mark planned

    # -- events from the assembler (stream.AssemblyListener) --------------------------------
    def defects(self, found: list[Defect], now_line: float) -> None:
        """Ink marks for defects that just became final."""
        if not self.cfg.enabled:
            return
        keep = [d for d in found if self._wanted(d)]
        self.filtered += len(found) - len(keep)
        marks = []
        for group in self._clusters(keep):
            box = np.array([d.bbox_belt_mm for d in group])
            across = 0.5 * (box[:, 0].min() + box[:, 2].max())
            along = 0.5 * (box[:, 1].min() + box[:, 3].max())
            if any(np.hypot(along - a, across - c) <= self.cfg.cluster_mm for a, c in self._recent):
                self.covered += len(group)
                continue
            self._recent.append((along, across))
            self.covered += len(group) - 1
            last_line = max(d.bbox_px[3] for d in group)
            self.line_to_mark_ms.append(max(0.0, now_line - last_line) / self.st.camera.line_rate_hz * 1e3)
            best = max(group, key=lambda d: d.score)
            y0 = int(min(d.bbox_px[1] for d in group))
            x0 = int(min(d.bbox_px[0] for d in group))
            marks.append(
                self._mark(
                    Action.INK, along, across, now_line, self.st.belt.marker_distance_mm,
                    class_name=best.class_name, hide_id=best.hide_id or 0,
                    length_mm=float(box[:, 3].max() - box[:, 1].min()), key=f"ink:{y0}:{x0}",
                )
            )
        self._emit(marks)

    def hide_start(self, hide_id: int, first_line: int, now_line: float) -> None:
        if self.cfg.enabled and self.cfg.hide_events:
            along = first_line * self.mm_per_line
            self._emit([self._mark(Action.HIDE_START, along, 0.0, now_line, self.st.belt.marker_distance_mm,
                                   hide_id=hide_id, key=f"hide_start:{first_line}")])

    def uninspected(self, u: Uninspected, now_line: float) -> None:
        if not (self.cfg.enabled and self.cfg.uninspected):
            return
        a, b = u.first_line * self.mm_per_line, u.end_line * self.mm_per_line
        d = self.st.belt.marker_distance_mm
        self._emit([
            self._mark(Action.UNINSPECTED_START, a, 0.0, now_line, d, length_mm=b - a,
                       class_name=u.reason, key=f"uninspected_start:{u.first_line}"),
            self._mark(Action.UNINSPECTED_END, b, 0.0, now_line, d, length_mm=b - a,
                       class_name=u.reason, key=f"uninspected_end:{u.end_line}"),
        ])

    def hide(self, h: Hide) -> None:
        """A complete, graded hide: its end and, by the reject rules, a reject."""
        if not self.cfg.enabled:
            return
        now_line = self.clock.now() if self.clock is not None else (h.last_line + 1)
        marks = []
        if self.cfg.hide_events:
            marks.append(self._mark(Action.HIDE_END, (h.last_line + 1) * self.mm_per_line, 0.0, now_line,
                                    self.st.belt.marker_distance_mm, hide_id=h.hide_id,
                                    length_mm=h.n_lines * self.mm_per_line, key=f"hide_end:{h.last_line}"))
        reason = self.reject_reason(h)
        if reason:
            marks.append(self._mark(Action.REJECT_HIDE, h.first_line * self.mm_per_line, h.origin_belt_mm[0],
                                    now_line, self.cfg.reject_distance_mm, hide_id=h.hide_id,
                                    length_mm=h.n_lines * self.mm_per_line, class_name=reason,
                                    key=f"reject:{h.first_line}"))
            log.info("reject", hide_id=h.hide_id, reason=reason)
        self._emit(marks)

    def reject_reason(self, h: Hide) -> str:
        """Why the hide is rejected ("" when it is not)."""
        if h.grade in self.cfg.reject_grades:
            return f"grade {h.grade}"
        share = self.cfg.reject_defect_share
        if share is not None and h.area_m2 > 0:
            got = defect_area_share(h)
            if got > share:
                return f"defect area share {got:.4f} > {share:g}"
        return ""

    # -- internals ------------------------------------------------------------------------------
    def _wanted(self, d: Defect) -> bool:
        c = self.cfg
        return (
            (c.classes is None or d.class_name in c.classes)
            and d.score >= c.min_score
            and d.area_mm2 >= c.min_area_mm2
        )

    def _clusters(self, ds: list[Defect]) -> list[list[Defect]]:
        """Group defects whose centres are within cluster_mm (single linkage)."""
        if len(ds) <= 1 or self.cfg.cluster_mm <= 0:
            return [[d] for d in ds]
        c = np.array([d.center_belt_mm for d in ds])
        near = np.hypot(*(c[:, None, :] - c[None, :, :]).transpose(2, 0, 1)) <= self.cfg.cluster_mm
        label = list(range(len(ds)))
        for i, j in zip(*np.nonzero(np.triu(near, 1))):
            li, lj = label[i], label[j]
            if li != lj:
                label = [li if v == lj else v for v in label]
        groups: dict[int, list[Defect]] = {}
        for i, d in enumerate(ds):
            groups.setdefault(label[i], []).append(d)
        return list(groups.values())

    def _mark(
        self, action: Action, along_mm: float, across_mm: float, now_line: float, distance_mm: float, *,
        key: str, class_name: str = "", hide_id: int = 0, length_mm: float = 0.0,
    ) -> Mark:
        belt = along_mm + self.belt_offset_mm
        deadline = belt + distance_mm
        now = self.belt_now_mm() if self.belt_now_mm is not None else None
        if now is None:
            now = now_line * self.mm_per_line + self.belt_offset_mm
        m = Mark(
            action=action, belt_mm=float(belt), across_mm=float(across_mm),
            class_id=self.class_ids.get(class_name, 0) if action == Action.INK else 0,
            hide_id=hide_id, length_mm=length_mm, key=f"{self.source_id}:{key}", class_name=class_name,
            deadline_belt_mm=float(deadline), planned_ns=time.monotonic_ns(), late=bool(now >= deadline),
            run_id=self.run_id, epoch=self.epoch, offset_mm=float(self.belt_offset_mm),
        )
        if m.late:
            self.late += 1
            log.warning("late mark", action=action.name.lower(), belt_mm=round(belt, 1),
                        deadline_mm=round(deadline, 1), now_mm=round(now, 1), hide_id=hide_id)
        return m

    def _emit(self, marks: list[Mark]) -> None:
        if not marks:
            return
        accepted = self.sink(marks) if self.sink is not None else marks
        self.duplicates += len(marks) - len(accepted)
        for m in accepted:
            name = m.action.name.lower()
            self.planned[name] = self.planned.get(name, 0) + 1
            d = m.deadline_belt_mm - m.offset_mm
            self._last_deadline_line = d if self._last_deadline_line is None else max(self._last_deadline_line, d)
        self._write([{"event": "planned", **m.to_json()} for m in accepted])
        for callback in self.on_marks:
            callback(accepted)

    @property
    def last_deadline_mm(self) -> float | None:
        """The latest deadline of any mark handed out, in the current belt frame."""
        return None if self._last_deadline_line is None else self._last_deadline_line + self.belt_offset_mm

    def write_header(self, info: dict[str, Any]) -> None:
        """A line in the marks log with the offsets and distances eval needs to read it back."""
        self._write([{"event": "run", **info, "t": round(time.time(), 6)}])

    def set_frame(self, epoch: int, offset_mm: float, reason: str, quiet: bool = False) -> None:
        """New marks are planned in frame ``epoch`` with ``offset_mm``; a "frame" line in the marks log.

        ``quiet``: the same frame, the line frame's drift followed (counted, logged at debug).
        """
        if quiet:
            self.drift_retied += 1
            drift = offset_mm - self.belt_offset_mm
            log.debug("line frame drift followed", drift_mm=round(drift, 1), belt_offset_mm=round(offset_mm, 1))
        self.epoch, self.belt_offset_mm = epoch, offset_mm
        self._write([{"event": "frame", "epoch": epoch, "belt_offset_mm": round(offset_mm, 3), "reason": reason,
                      "t": round(time.time(), 6)}])

    def record_not_fired(self, marks: list[Mark], reason: str, why: str) -> None:
        """Marks closed without being fired: counted by ``reason``, logged as an error (an alarm), in the marks log."""
        if not marks:
            return
        self.not_fired[reason] = self.not_fired.get(reason, 0) + len(marks)
        log.error("marks not fired", reason=reason, why=why, count=len(marks), total=self.not_fired_total,
                  seqs=[m.seq for m in marks[:20]])
        self._write([{"event": "not_fired", "reason": reason, **m.to_json()} for m in marks])

    def record_rebased(self, n: int, epoch: int, offset_mm: float) -> None:
        if n:
            self.rebased += n
            log.warning("marks re-based on the new belt frame", count=n, epoch=epoch, belt_offset_mm=round(offset_mm, 1))

    @property
    def not_fired_total(self) -> int:
        return sum(self.not_fired.values())

    def _write(self, records: list[dict[str, Any]]) -> None:
        if self.log_path is None or not records:
            return
        with self._log_lock:
            if self._closed:
                return
            if self._log is None:
                self.log_path.parent.mkdir(parents=True, exist_ok=True)
                self._log = open(self.log_path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
            for r in records:
                self._log.write(json.dumps(r) + "\n")
            self._log.flush()

    def summary(self) -> dict[str, Any]:
        lat = self.line_to_mark_ms
        return {
            "planned": dict(sorted(self.planned.items())),
            "line_to_mark_ms_p50": round(float(np.percentile(lat, 50)), 1) if lat else None,
            "line_to_mark_ms_p99": round(float(np.percentile(lat, 99)), 1) if lat else None,
            "late": self.late,
            "defects_covered_by_cluster": self.covered,
            "defects_not_marked_by_rule": self.filtered,
            "duplicates_skipped": self.duplicates,
            "rebased": self.rebased,
            "line_frame_drift_retied": self.drift_retied,
            "not_fired": dict(sorted(self.not_fired.items())),
            "not_fired_total": self.not_fired_total,
            "earlier_run_closed": dict(sorted(self.earlier_run_closed.items())),
        }

    def close(self) -> None:
        with self._log_lock:
            self._closed = True
            if self._log is not None:
                self._log.close()
                self._log = None
