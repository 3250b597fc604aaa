"""``edge-inspector monitor [ENDPOINT]``: a live terminal view of a station's events (docs/events.md).

It subscribes to every topic and redraws about once a second: rates, queues, losses, the model's
provider, camera and PLC state, the marks, the last hides and defects and the health alarms. On
a terminal the view is redrawn in place with plain ANSI codes; when stdout is not a terminal it
prints one status line per refresh and one line per hide instead. ``--json`` prints every decoded
event as one JSON line (for scripts); ``--once`` waits for the first metrics sample, shows it and
exits. A gap in an event's ``seq`` counts as missed events; a message that does not decode is
counted and skipped.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, TextIO

import zmq

from .events import Event, EventError, decode, subscribe

REFRESH_S = 1.0
ONCE_TIMEOUT_S = 5.0
_HOME_CLEAR = "\x1b[H\x1b[J"


class MonitorState:
    """What the view shows, updated event by event."""

    def __init__(self, endpoint: str, last_n: int = 5) -> None:
        self.endpoint = endpoint
        self.started = time.monotonic()
        self.received = 0
        self.undecodable = 0
        self.last_error = ""
        self.missed = 0  # events lost between publisher and here (gaps in seq)
        self.restarts = 0  # the publisher's seq went back: the station was restarted
        self.station = ""
        self.metrics: dict[str, Any] | None = None
        self.metrics_at = 0.0
        self.health: dict[str, Any] | None = None
        self.hides: deque[dict[str, Any]] = deque(maxlen=last_n)
        self.defects: deque[dict[str, Any]] = deque(maxlen=last_n)
        self.marks: Counter[str] = Counter()
        self.late_marks = 0
        self.new_hides: deque[dict[str, Any]] = deque(maxlen=256)  # since the last refresh (not a terminal)
        self._last_seq: int | None = None

    def add(self, ev: Event) -> None:
        self.received += 1
        self._count_gap(ev)
        self.station = ev.station
        if ev.topic == "metrics":
            self.metrics, self.metrics_at = ev.data, time.monotonic()
        elif ev.topic == "health":
            self.health = ev.data
        elif ev.topic == "hide":
            self.hides.append(ev.data)
            self.new_hides.append(ev.data)
        elif ev.topic == "defect":
            self.defects.append(ev.data)
        elif ev.topic == "mark":
            self.marks[str(ev.data.get("action", "?"))] += 1
            self.late_marks += int(bool(ev.data.get("late")))

    def bad(self, error: EventError) -> None:
        self.undecodable += 1
        self.last_error = str(error)

    def _count_gap(self, ev: Event) -> None:
        last, self._last_seq = self._last_seq, ev.seq
        if last is None:
            return
        if ev.seq <= last:
            self.restarts += 1
        else:
            self.missed += ev.seq - last - 1

    # -- rendering ------------------------------------------------------------------------------

    def state_text(self) -> str:
        return str((self.health or {}).get("state", "-")).upper()

    def header(self) -> str:
        now = time.monotonic()
        if self.received == 0:
            return f"waiting for events from {self.endpoint} ({now - self.started:.0f} s)"
        age = f"metrics {now - self.metrics_at:.1f} s ago" if self.metrics is not None else "no metrics yet"
        return f"edge-inspector monitor  {self.endpoint}  station {self.station}  {self.state_text()}  ({age})"

    def view(self) -> list[str]:
        """The whole view, one string per line."""
        lines = [self.header()]
        if self.received == 0:
            return lines
        lines += self._metrics_rows() + self._mark_rows() + self._event_rows() + self._alarm_rows()
        lines += self._hide_rows() + self._defect_rows()
        return lines

    def status_line(self) -> str:
        """One line for a log or a pipe: state, rates, losses, PLC, alarms."""
        if self.received == 0:
            return self.header()
        m = self.metrics or {}
        r, p, plc = m.get("rates", {}), m.get("pipeline", {}), m.get("plc")
        parts = [
            time.strftime("%H:%M:%S"), self.station, self.state_text(),
            f"{_n(r.get('lines_per_s'))} lines/s", f"{_f(r.get('tiles_per_s'))} tiles/s",
            f"queues {_n(p.get('queue_tiles'))}/{_n(p.get('queue_detections'))}",
            f"lost {_n(p.get('lines_lost'))}", f"dropped {_n(p.get('strips_dropped'))}",
            f"hides {_n(p.get('hides'))}", f"defects {_n(p.get('defects'))}",
        ]
        if plc is not None:
            parts.append(f"plc {'connected' if plc.get('connected') else 'DISCONNECTED'} pending {_n(plc.get('pending'))}")
        alarms = (self.health or {}).get("alarms", [])
        parts.append("alarms: " + "; ".join(a.get("code", "?") for a in alarms) if alarms else "no alarms")
        return "  ".join(parts)

    def _metrics_rows(self) -> list[str]:
        m = self.metrics
        if m is None:
            return ["metrics   none yet (published every events.metrics_period_s)"]
        r, p = m.get("rates", {}), m.get("pipeline", {})
        rows = [
            f"rates     {_n(r.get('lines_per_s'))} lines/s   {_f(r.get('tiles_per_s'))} tiles/s"
            f"   {_f(r.get('strips_per_s'))} strips/s   {_f(r.get('hides_per_min'))} hides/min",
            f"pipeline  lines {_n(p.get('lines'))}   lost {_n(p.get('lines_lost'))}   strips {_n(p.get('strips'))}"
            f" (dropped {_n(p.get('strips_dropped'))}, waiting {_n(p.get('strips_pending'))})"
            f"   tiles {_n(p.get('tiles'))}   hides {_n(p.get('hides'))}   defects {_n(p.get('defects'))}",
            f"queues    tiles {_n(p.get('queue_tiles'))}/{_n(p.get('queue_tiles_max'))}"
            f"   detections {_n(p.get('queue_detections'))}/{_n(p.get('queue_detections_max'))}"
            f"   free tile slots {_n(p.get('ring_free_slots'))}   inference {_f(p.get('infer_ms_last'))} ms"
            f"   provider {p.get('provider', '-')}",
        ]
        cam = m.get("camera")
        if cam is not None:
            rows.append(f"camera    frames {_n(cam.get('frames'))}   lost lines {_n(cam.get('lost_lines'))}"
                        f"   frame gaps {_n(cam.get('frame_id_gaps'))}   incomplete {_n(cam.get('incomplete'))}"
                        f"   reconnects {_n(cam.get('reconnects'))}   timeouts {_n(cam.get('fetch_timeouts'))}")
        rows.append(_plc_row(m.get("plc")))
        return rows

    def _mark_rows(self) -> list[str]:
        if not self.marks:
            return ["marks     none"]
        return ["marks     " + ", ".join(f"{k} {v}" for k, v in sorted(self.marks.items()))
                + f"   late {self.late_marks}"]

    def _event_rows(self) -> list[str]:
        pub = (self.metrics or {}).get("events", {})
        row = (f"events    received {self.received:,}   missed {self.missed} (seq gaps)   undecodable"
               f" {self.undecodable}   publisher dropped {_n(pub.get('dropped'))}")
        if self.restarts:
            row += f"   publisher restarts {self.restarts}"
        return [row] + ([f"          last undecodable: {self.last_error}"] if self.last_error else [])

    def _alarm_rows(self) -> list[str]:
        alarms = (self.health or {}).get("alarms", [])
        if not alarms:
            return ["alarms    none"]
        return ["alarms"] + [f"  [{a.get('severity', '?')}] {a.get('code', '?')}: {a.get('message', '')}" for a in alarms]

    def _hide_rows(self) -> list[str]:
        rows = [f"last hides ({len(self.hides)})", f"  {'hide':>6}  {'area m2':>8}  {'defects':>7}  grade  inspected"]
        for h in reversed(self.hides):
            rows.append(f"  {h.get('hide_id', '?'):>6}  {_f(h.get('area_m2'), 4):>8}"
                        f"  {sum((h.get('defect_counts') or {}).values()):>7}  {h.get('grade', '?'):<5}"
                        f"  {100 * float(h.get('inspected_fraction', 0)):.0f} %")
        return rows

    def _defect_rows(self) -> list[str]:
        rows = [f"last defects ({len(self.defects)})",
                f"  {'hide':>6}  {'class':<12}  {'size mm':>13}  {'across, along mm':>20}  score"]
        for d in reversed(self.defects):
            b = d.get("bbox_belt_mm") or [0, 0, 0, 0]
            size = f"{b[2] - b[0]:.1f} x {b[3] - b[1]:.1f}"
            pos = f"{(b[0] + b[2]) / 2:.1f}, {(b[1] + b[3]) / 2:.1f}"
            rows.append(f"  {d.get('hide_id', '-')!s:>6}  {d.get('class', '?'):<12}  {size:>13}  {pos:>20}"
                        f"  {_f(d.get('score'), 2)}")
        return rows


def _plc_row(plc: dict[str, Any] | None) -> str:
    if plc is None:
        return "plc       - (no PLC stats in the metrics)"
    state = "connected" if plc.get("connected") else f"DISCONNECTED ({plc.get('last_error') or 'connecting'})"
    belt = plc.get("belt_mm")
    return (f"plc       {plc.get('plc', '-')}  {state}   state {plc.get('state', '-')}   pending {_n(plc.get('pending'))}"
            f"   acknowledged {_n(plc.get('marks_acked'))}   belt {_f(belt, 1)} mm"
            f"   faults {', '.join(plc.get('plc_faults') or []) or '-'}")


def _n(v: Any) -> str:
    """A count with thousands separators, or "-"."""
    return f"{v:,.0f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "-"


def _f(v: Any, nd: int = 1) -> str:
    return f"{v:,.{nd}f}" if isinstance(v, (int, float)) and not isinstance(v, bool) else "-"


class _Screen:
    """Draws the state: redrawn in place on a terminal, status lines otherwise."""

    def __init__(self, out: TextIO, tty: bool) -> None:
        self.out = out
        self.tty = tty

    def refresh(self, state: MonitorState) -> None:
        if self.tty:
            self.out.write(_HOME_CLEAR + "\n".join(state.view()) + "\n")
        else:
            for h in state.new_hides:
                self.out.write(f"hide {h.get('hide_id')}: {_f(h.get('area_m2'), 4)} m2, grade {h.get('grade')},"
                               f" defects {sum((h.get('defect_counts') or {}).values())}\n")
            self.out.write(state.status_line() + "\n")
        state.new_hides.clear()
        self.out.flush()

    def full(self, state: MonitorState) -> None:
        self.out.write(("\n".join(state.view())) + "\n")
        self.out.flush()


def run_monitor(
    endpoint: str,
    *,
    seconds: float | None = None,
    once: bool = False,
    as_json: bool = False,
    last_n: int = 5,
    out: TextIO | None = None,
) -> int:
    """Subscribe to ``endpoint`` and show its events until Ctrl-C/SIGTERM or ``seconds``; the exit code.

    ``once``: wait for the first metrics sample (at most ``seconds``, default 5 s), show it, exit
    (1 when none came). ``as_json``: every decoded event as one JSON line instead of the view.
    """
    out = out or sys.stdout
    if once and seconds is None:
        seconds = ONCE_TIMEOUT_S
    state = MonitorState(endpoint, last_n)
    screen = _Screen(out, out.isatty())
    sock = subscribe(endpoint)
    try:
        with _sigterm_interrupts():
            got_metrics = _loop(sock, state, screen, seconds=seconds, once=once, as_json=as_json)
    except KeyboardInterrupt:
        return 0
    finally:
        sock.close()
    if once and not got_metrics:
        print(f"no metrics from {endpoint} within {seconds:g} s: is the station running with [events] enabled?",
              file=sys.stderr)
        return 1
    if once and not as_json:
        screen.full(state)
    return 0


def _loop(sock: zmq.Socket[bytes], state: MonitorState, screen: _Screen, *, seconds: float | None, once: bool,
          as_json: bool) -> bool:
    """Receive and show events; True when ``once`` got a metrics sample and its health."""
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    t_end = None if seconds is None else time.monotonic() + seconds
    draws = not as_json and not once
    next_draw = time.monotonic()
    while True:
        now = time.monotonic()
        if draws and now >= next_draw:
            screen.refresh(state)
            next_draw = now + REFRESH_S
        if t_end is not None and now >= t_end:
            return False
        due = [t for t in (t_end, next_draw if draws else None) if t is not None]
        wait_s = min(due) - now if due else REFRESH_S
        if not poller.poll(max(1, int(wait_s * 1000))):
            continue
        for ev in _drain(sock, state):
            state.add(ev)
            if as_json:
                screen.out.write(json.dumps(ev.to_json()) + "\n")
                screen.out.flush()
            if once and ev.topic == "health" and state.metrics is not None:  # health follows its metrics
                return True


def _drain(sock: zmq.Socket[bytes], state: MonitorState) -> Iterator[Event]:
    """Every message waiting on ``sock``, decoded; undecodable ones are counted (and told on stderr)."""
    while True:
        try:
            frames = sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        try:
            yield decode(frames)
        except EventError as e:
            if state.undecodable == 0:
                print(f"monitor: skipping undecodable message: {e}", file=sys.stderr)
            state.bad(e)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM ends the monitor like Ctrl-C (exit 0)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
