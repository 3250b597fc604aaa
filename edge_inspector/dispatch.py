"""Mark dispatch for one run: the planner, the PLC link and (for ``--plc sim``) a soft-PLC.

The inspection run (edge_inspector/run.py) uses it for replay and the live run::

    d = MarkDispatch(station, class_names, out_dir, source_id=..., plc="sim" | "HOST:PORT" | None, clock=clock)
    d.start()                     # soft-PLC up, link connected (or retrying in the background)
    Pipeline(..., listener=d.planner, clock=clock)   # early events: ink, hide start, uninspected
    d.line_zero(line_now)         # once, as the first lines arrive: line -> encoder offset
    d.on_hide(hide)               # each complete hide, after grading: hide end, reject
    summary = d.finish()          # drain the outbox, let the belt carry the last marks, stop

Without a PLC the planner still runs: ``marks.jsonl`` in the results folder lists every mark
the station would have sent. With ``sim``, the soft-PLC (``edge-inspector plc-sim``) runs as a
child process on a free loopback port with a fresh outbox and state; its log of fired marks
(``plc.jsonl``) lands next to the results, where ``edge-inspector eval`` reads it.
"""

from __future__ import annotations

import json
import time
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

class MarkDispatch:
    """The planner (marks from the run's events) and where its marks go: a PLC link, or only marks.jsonl.

    ``clock`` is the run's line clock (stream.LineClock), for the planner.
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
    ) -> None:
        self.st = station
        self.out_dir = Path(out_dir)
        self.plc = plc_target(plc, station.plc)
        self.link: PlcLink | None = None
        self.sim: SoftPlcProcess | None = None
        self.sim_address: tuple[str, int] | None = None
        self.planner = MarkPlanner(
            station, class_names, source_id=source_id, log_path=self.out_dir / MARKS_LOG, clock=clock,
        )
        self._line0_done = False

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
        self.link = PlcLink(cfg, Outbox(outbox_path))
        self.link.start()
        if not self.link.wait_connected(connect_timeout_s):
            log.error("plc unreachable; marks are kept in the outbox and sent once it answers",
                      plc=f"{host}:{port}", unit_id=cfg.unit_id, outbox=str(outbox_path))
        self.link.set_state(InspectorState.RUNNING)
        self.planner.sink = self.link.submit
        self.planner.belt_now_mm = self.link.belt_mm

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
    def line_zero(self, line_now: int) -> None:
        """Line ``line_now`` is under the camera now: tie the line frame to the PLC's encoder (once)."""
        if self._line0_done:
            return
        self._line0_done = True
        belt = self.link.belt_mm() if self.link is not None else None
        offset = 0.0 if belt is None else belt - line_now * self.st.camera.mm_per_line
        self.planner.belt_offset_mm = offset
        self.planner.write_header({
            "belt_offset_mm": round(offset, 3),
            "mm_per_line": self.st.camera.mm_per_line,
            "mm_per_px": self.st.camera.mm_per_px,
            "marker_distance_mm": self.st.belt.marker_distance_mm,
            "reject_distance_mm": self.st.marking.reject_distance_mm,
            "plc": self.plc,
            "encoder_known": belt is not None,
        })

    def on_hide(self, h: Hide) -> None:
        """After grading: hide end and reject marks."""
        self.planner.hide(h)

    def degraded(self, yes: bool) -> None:
        if self.link is not None:
            self.link.set_state(InspectorState.DEGRADED if yes else InspectorState.RUNNING)

    # -- end of run -------------------------------------------------------------------------
    def finish(self, drain_timeout_s: float = 10.0, fire_timeout_s: float = 30.0) -> dict[str, Any]:
        """Deliver every mark, let the soft-PLC's belt reach the last one, stop; the summary."""
        out: dict[str, Any] = {"plc": self.plc, **self.planner.summary()}
        try:
            if self.link is not None:
                delivered = self.link.drain(drain_timeout_s)
                if not delivered:
                    log.error("marks not acknowledged by the PLC at the end of the run; they stay in the outbox",
                              pending=self.link.stats().get("pending"))
                if self.sim is not None:
                    self._wait_for_belt(fire_timeout_s)
                self.link.set_state(InspectorState.STOPPED)
                out["link"] = self.link.stats()
        finally:
            if self.link is not None:
                self.link.stop()
            self._stop_sim()
            self.planner.close()
        if self.sim is not None:
            out["plc_log"] = summarise_plc_log(self.out_dir / PLC_LOG)
        return out

    def _wait_for_belt(self, timeout_s: float) -> None:
        last, link = self.planner.last_deadline_mm, self.link
        if last is None or link is None:
            return
        t_end = time.monotonic() + timeout_s
        while time.monotonic() < t_end:
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
        "placement_error_mm_p50": round(float(np.percentile(err, 50)), 2) if len(err) else None,
        "placement_error_mm_p95": round(float(np.percentile(err, 95)), 2) if len(err) else None,
        "placement_error_mm_max": round(float(err.max()), 2) if len(err) else None,
    }
