"""Mark dispatch for one run: the planner, the PLC link and (for ``--plc sim``) a soft-PLC.

The inspection run (edge_inspector/run.py) uses it for replay and the live run::

    d = MarkDispatch(station, class_names, out_dir, source_id=..., plc="sim" | "HOST:PORT" | None, clock=clock)
    d.start()                     # outbox claimed for this run, soft-PLC up, link connected (or retrying)
    Pipeline(..., listener=d.planner, clock=clock)   # early events: ink, hide start, uninspected
    d.line_seen(line_now)         # each block, as it arrives: line -> encoder tie (the first one: line_zero)
    d.on_hide(hide)               # each complete hide, after grading: hide end, reject
    summary = d.finish()          # drain the outbox, let the belt carry the last marks, stop

A mark is sent only in the belt frame it was planned in (docs/marking.md, "Belt frames"). Each
block ties the line frame to the clock; when the PLC's encoder becomes known, or its frame changes
(the PLC lost its memory, the encoder jumped), the dispatch ties the line frame to the new frame
with the latest tie and re-bases the unsent marks, provided that tie is fresh (the lines are
flowing: the mapping is certain). Marks whose spot has passed, marks still without a certain
frame at the end, marks left unacknowledged and marks the PLC lost or missed are counted in
``not_fired`` by reason, logged as errors, and make the run's exit status
``EXIT_MARKS_NOT_FIRED``. The outbox belongs to the run: another run's marks are closed, never sent.

Without a PLC the planner still runs: ``marks.jsonl`` in the results folder lists every mark
the station would have sent. With ``sim``, the soft-PLC (``edge-inspector plc-sim``) runs as a
child process on a free loopback port with a fresh outbox and state; its log of fired marks
(``plc.jsonl``) lands next to the results, where ``edge-inspector eval`` reads it.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from .config import Station
from .hide import Hide
from .mark import InspectorState
from .marking import MarkPlanner
from .plc.launch import SoftPlcProcess, parse_plc_address, plc_target
from .runfiles import MARKS_LOG, PLC_LOG, PLC_STATE, SIM_OUTBOX
from .stream import LineClock

if TYPE_CHECKING:
    from .plc.link import PlcLink

log = structlog.get_logger(__name__)

EXIT_MARKS_NOT_FIRED = 4
"""Exit code of a run that finished but did not fire every mark it planned (summary: marks.not_fired)."""

TIE_MAX_AGE_S = 1.0  # a line <-> time tie older than this (or 2.5 block periods) is not certain
DRIFT_MM = 20.0  # the line frame slipped this far against the encoder: new marks use the new offset


def exit_status(marks: dict[str, Any] | None) -> int:
    """0, or EXIT_MARKS_NOT_FIRED when the run's marks summary counts marks not fired."""
    return EXIT_MARKS_NOT_FIRED if (marks or {}).get("not_fired_total") else 0


class MarkDispatch:
    """The planner (marks from the run's events) and where its marks go: a PLC link, or only marks.jsonl.

    ``clock`` is the run's line clock (stream.LineClock), for the planner. ``hurry``: once set
    (a second SIGTERM), ``finish`` waits for nothing: undelivered marks are counted not fired.
    """

    def __init__(
        self,
        station: Station,
        class_names: list[str],
        out_dir: Path,
        *,
        source_id: str,
        plc: str | None = None,
        clock: LineClock | None = None,
        hurry: threading.Event | None = None,
    ) -> None:
        self.st = station
        self.out_dir = Path(out_dir)
        self.plc = plc_target(plc, station.plc)
        self.link: PlcLink | None = None
        self.sim: SoftPlcProcess | None = None
        self.sim_address: tuple[str, int] | None = None
        self.run_id = f"{source_id}#{uuid.uuid4().hex[:8]}"
        self.hurry = hurry or threading.Event()
        self.planner = MarkPlanner(
            station, class_names, source_id=source_id, log_path=self.out_dir / MARKS_LOG, clock=clock,
            run_id=self.run_id, epoch=None if self.plc is None else 0,
        )
        self._line0_done = False
        self._tie: tuple[int, int] | None = None  # (line under the camera, monotonic ns)
        self._tie_period_ns = 0  # between the last two ties
        self._frame_lock = threading.Lock()
        self._plc_missed0: int | None = None  # the PLC's MARKS_MISSED when its frame was first tied
        self._recent_offsets: deque[float] = deque(maxlen=32)  # offsets of the latest ties, same frame

    # -- set-up -----------------------------------------------------------------------------
    def start(self, connect_timeout_s: float = 5.0) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.plc is None:
            return
        from .plc.link import PlcLink
        from .plc.outbox import Outbox

        if self.plc == "sim":
            host, port = self._start_sim()
            outbox_path = self.out_dir / SIM_OUTBOX
            for suffix in ("", "-wal", "-shm"):  # a fresh soft-PLC knows nothing of older marks
                Path(f"{outbox_path}{suffix}").unlink(missing_ok=True)
        else:
            host, port = parse_plc_address(self.plc, self.st.plc.port)
            outbox_path = self.out_dir / self.st.plc.outbox
            if Path(self.st.plc.outbox).is_absolute():
                outbox_path = Path(self.st.plc.outbox)
        cfg = self.st.plc.model_copy(update={"host": host, "port": port})
        outbox = Outbox(outbox_path)
        closed = outbox.claim(self.run_id)
        if closed:
            self.planner.earlier_run_closed = closed
            log.error("marks an earlier run left unacknowledged are closed, not sent: a run never fires another"
                      " run's marks", closed=closed, outbox=str(outbox_path))
        self.link = PlcLink(cfg, outbox)
        self.link.start()
        if not self.link.wait_connected(connect_timeout_s):
            log.error("plc unreachable; marks are kept in the outbox and sent once it answers",
                      plc=f"{host}:{port}", unit_id=cfg.unit_id, outbox=str(outbox_path))
        self.link.set_state(InspectorState.RUNNING)
        self.planner.sink = self.link.submit
        self.planner.belt_now_mm = self._belt_now

    def _start_sim(self) -> tuple[str, int]:
        for name in (PLC_LOG, PLC_STATE):
            (self.out_dir / name).unlink(missing_ok=True)
        self.sim = SoftPlcProcess.for_station(
            self.st, log_path=self.out_dir / PLC_LOG, state_path=self.out_dir / PLC_STATE,
        )
        self.sim_address = self.sim.address
        log.info("soft-plc", address=self.sim.where)
        return self.sim_address

    # -- during the run ---------------------------------------------------------------------
    def _belt_now(self) -> float | None:
        """The PLC's belt position now, when the planner plans in the link's frame; else None (line clock)."""
        link = self.link
        if link is None or link.epoch != self.planner.epoch:
            return None
        return link.belt_mm()

    def line_zero(self, line_now: int) -> None:
        """Line ``line_now`` is under the camera now (the first call writes the marks log's header)."""
        self.line_seen(line_now)

    def line_seen(self, line_now: int) -> None:
        """Line ``line_now`` is under the camera now (each block, source thread): the line <-> time tie."""
        t = time.monotonic_ns()
        if self._tie is not None:
            self._tie_period_ns = t - self._tie[1]
        self._tie = (line_now, t)
        if not self._line0_done:
            self._first_tie(line_now)
        else:
            self.sync_frame()

    def _first_tie(self, line_now: int) -> None:
        self._line0_done = True
        link = self.link
        epoch = link.epoch if link is not None else None
        belt = link.belt_mm() if link is not None and epoch else None
        offset = 0.0 if belt is None else belt - line_now * self.st.camera.mm_per_line
        with self._frame_lock:
            self.planner.epoch = epoch
            self.planner.belt_offset_mm = offset
        if link is not None and belt is not None:
            self._plc_missed0 = link.stats().get("plc_marks_missed")
        self.planner.write_header({
            "belt_offset_mm": round(offset, 3),
            "mm_per_line": self.st.camera.mm_per_line,
            "mm_per_px": self.st.camera.mm_per_px,
            "marker_distance_mm": self.st.belt.marker_distance_mm,
            "reject_distance_mm": self.st.marking.reject_distance_mm,
            "plc": self.plc,
            "encoder_known": belt is not None,
            "epoch": epoch,
            "run_id": self.run_id,
        })
        if link is not None and belt is None:
            log.warning("the PLC's encoder is not known yet: marks are held until it is, then re-based on it;"
                        " marks whose spot passes meanwhile are counted not fired", plc=self.plc)

    def _tie_fresh(self) -> tuple[int, int] | None:
        """The latest tie while lines flow (certain), else None."""
        tie = self._tie
        if tie is None:
            return None
        limit = max(TIE_MAX_AGE_S * 1e9, 2.5 * self._tie_period_ns)
        return tie if time.monotonic_ns() - tie[1] <= limit else None

    def sync_frame(self) -> None:
        """When the link's belt frame is not the planner's: tie the line frame to it and re-base the unsent marks.

        Needs a fresh tie (lines flowing); without one the marks stay held (``finish`` closes them).
        In the same frame, a line frame that slipped more than DRIFT_MM against the encoder (a
        free-running camera delivering fewer lines than its nominal rate, a replay falling behind)
        gets the new offset for the marks planned from now on: a line's spot is where the belt was
        when the line arrived.
        """
        link = self.link
        if link is None or not self._line0_done or link.epoch == 0:
            return
        if link.epoch == self.planner.epoch:
            self._follow_drift(link)
            return
        with self._frame_lock:
            epoch = link.epoch
            if epoch in (0, self.planner.epoch):
                return
            tie = self._tie_fresh()
            belt = link.belt_mm(at_ns=tie[1]) if tie is not None else None
            if tie is None or belt is None:
                return
            offset = belt - tie[0] * self.st.camera.mm_per_line
            self._recent_offsets.clear()
            old = self.planner.epoch
            reason = "encoder known" if old == 0 else "belt frame changed"
            self.planner.set_frame(epoch, offset, reason)
            if self._plc_missed0 is None or old != 0:
                self._plc_missed0 = link.stats().get("plc_marks_missed")
            res = link.outbox.rebase(self.run_id, epoch, offset, link.belt_mm())
        log.warning("marks tied to the PLC's belt frame", reason=reason, epoch=epoch, belt_offset_mm=round(offset, 1),
                    rebased=res["rebased"], closed={k: len(v) for k, v in res["closed"].items()})
        self.planner.record_rebased(res["rebased"], epoch, offset)
        for why, marks in res["closed"].items():
            self.planner.record_not_fired(marks, why, "the belt carried the spot past its actuator before the PLC"
                                          " could be told" if why == "passed" else "planned by another run")

    def on_hide(self, h: Hide) -> None:
        """After grading: hide end and reject marks."""
        self.planner.hide(h)

    def degraded(self, yes: bool) -> None:
        if self.link is not None:
            self.link.set_state(InspectorState.DEGRADED if yes else InspectorState.RUNNING)

    def _follow_drift(self, link: PlcLink) -> None:
        tie = self._tie
        belt = link.belt_mm(at_ns=tie[1]) if tie is not None else None
        if tie is None or belt is None:
            return
        # a block is handed on a little after its last line arrived, never before: the smallest
        # offset of the latest ties is the best estimate (a late block only makes it larger)
        self._recent_offsets.append(belt - tie[0] * self.st.camera.mm_per_line)
        offset = min(self._recent_offsets)
        if len(self._recent_offsets) < 8 or abs(offset - self.planner.belt_offset_mm) <= DRIFT_MM:
            return
        with self._frame_lock:
            if link.epoch != self.planner.epoch:
                return
            self.planner.set_frame(self.planner.epoch or 0, offset, "line frame drift", quiet=True)
            self._recent_offsets.clear()

    # -- end of run -------------------------------------------------------------------------
    def finish(self, drain_timeout_s: float = 10.0, fire_timeout_s: float = 30.0) -> dict[str, Any]:
        """Deliver every mark, let the soft-PLC's belt reach the last one, stop; the summary.

        Marks that cannot be fired any more are closed and counted in ``not_fired``: still without
        a certain belt frame, not acknowledged when the drain ends, lost or missed by the PLC.
        """
        out: dict[str, Any] = {"plc": self.plc}
        link = self.link
        try:
            if link is not None:
                self.sync_frame()
                self._close_unframed()
                delivered = self._drain(0.0 if self.hurry.is_set() else drain_timeout_s)
                if not delivered:
                    log.error("marks not acknowledged by the PLC at the end of the run",
                              pending=link.stats().get("pending"), interrupted=self.hurry.is_set())
                if self.sim is not None and not self.hurry.is_set():
                    self._wait_for_belt(fire_timeout_s)
                link.set_state(InspectorState.STOPPED)
                link.stop(drain_timeout_s=0.0)
                self.planner.record_not_fired(link.outbox.close_pending("unacknowledged_at_end", run_id=self.run_id),
                                              "unacknowledged_at_end", "the PLC had not acknowledged them when the run ended")
                out["link"] = link.stats()
                self._count_plc_losses(out["link"])
        finally:
            if link is not None:
                link.stop(drain_timeout_s=0.0)
            self._stop_sim()
        if self.sim is not None:
            out["plc_log"] = summarise_plc_log(self.out_dir / PLC_LOG)
            self._count(out["plc_log"]["missed"], "missed_by_plc", "the soft-PLC got them after their spot had passed")
            self._count(out["plc_log"]["queued_at_stop"], "plc_stopped_before_firing",
                        "the soft-PLC stopped before its belt reached them")
        elif link is not None and self._plc_missed0 is not None:
            now = out["link"].get("plc_marks_missed")
            if isinstance(now, int):
                self._count(now - self._plc_missed0 if now >= self._plc_missed0 else now, "missed_by_plc",
                            "the PLC's MARKS_MISSED counter moved during the run")
        out.update(self.planner.summary())
        if out["not_fired_total"]:
            log.error("run ends with marks not fired", not_fired=out["not_fired"], total=out["not_fired_total"])
        self.planner.close()
        return out

    def _close_unframed(self) -> None:
        """Marks still held in another frame at the end (no certain tie came): closed, not fired."""
        link = self.link
        assert link is not None
        if link.epoch == self.planner.epoch and self.planner.epoch != 0:
            return
        unknown = self.planner.epoch == 0 and link.epoch == 0
        reason = "encoder_unknown" if unknown else "frame_uncertain"
        why = ("the PLC's encoder was never read during the run" if unknown else
               "the PLC's belt frame changed and no line <-> encoder tie was certain afterwards")
        epoch = link.epoch if link.epoch else -1
        self.planner.record_not_fired(link.outbox.close_pending(reason, run_id=self.run_id, not_epoch=epoch,
                                                                unsent_only=True), reason, why)

    def _drain(self, timeout_s: float) -> bool:
        """Until the PLC acknowledged every mark, ``timeout_s`` passed or ``hurry`` is set."""
        link = self.link
        assert link is not None
        end = time.monotonic() + timeout_s
        while link.outbox.counts()["pending"]:
            if time.monotonic() >= end or self.hurry.is_set():
                return False
            time.sleep(0.02)
        return True

    def _count(self, n: int, reason: str, why: str) -> None:
        if n > 0:
            self.planner.not_fired[reason] = self.planner.not_fired.get(reason, 0) + int(n)
            log.error("marks not fired", reason=reason, why=why, count=int(n))

    def _count_plc_losses(self, stats: dict[str, Any]) -> None:
        self._count(int(stats.get("marks_lost_in_plc", 0)), "lost_in_plc",
                    "acknowledged by a PLC that lost its memory before firing them")

    def _wait_for_belt(self, timeout_s: float) -> None:
        last, link = self.planner.last_deadline_mm, self.link
        if last is None or link is None:
            return
        t_end = time.monotonic() + timeout_s
        while time.monotonic() < t_end and not self.hurry.is_set():
            pos = link.belt_mm()
            if pos is not None and pos > last + 50.0:
                return
            time.sleep(0.05)
        log.warning("soft-plc belt did not reach the last mark in time", last_deadline_mm=round(last, 1))

    def _stop_sim(self) -> None:
        if self.sim is not None:
            self.sim.stop()


def summarise_plc_log(path: Path) -> dict[str, Any]:
    """Fired / missed counts and placement error (fired position - target) of a soft-PLC log."""
    fired: list[dict[str, Any]] = []
    missed = 0
    hb_lost = 0
    queued = 0
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                continue
            kind = ev.get("event")
            if kind == "fired":
                fired.append(ev)
            elif kind == "missed":
                missed += 1
            elif kind == "heartbeat_lost":
                hb_lost += 1
            elif kind == "stop":
                queued = int(ev.get("queued", 0))  # the last stop counts
    err = np.abs([float(e.get("error_mm", 0.0)) for e in fired]) if fired else np.zeros(0)
    by: dict[str, int] = {}
    for e in fired:
        a = str(e.get("action", "?")).lower()
        by[a] = by.get(a, 0) + 1
    return {
        "fired": len(fired),
        "fired_by_action": dict(sorted(by.items())),
        "missed": missed,
        "heartbeat_lost": hb_lost,
        "queued_at_stop": queued,
        "placement_error_mm_p50": round(float(np.percentile(err, 50)), 2) if len(err) else None,
        "placement_error_mm_p95": round(float(np.percentile(err, 95)), 2) if len(err) else None,
        "placement_error_mm_max": round(float(err.max()), 2) if len(err) else None,
    }
