"""Fault injection on marking and the PLC (issue 18, cases 1, 2, 3, 5, 14 and 15).

Real parts only: the soft-PLC is a Modbus TCP server on loopback, the outbox is SQLite, the
belt is a thread that ties camera lines to the clock as a realtime source does. The belt here
runs at 1000 mm/s (2000 lines/s at 0.5 mm per line) with the marker 500 mm past the camera, so
a mark's spot reaches the marker half a second after it was under the camera.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge_inspector.cli import build_parser
from edge_inspector.config import Plc, parse_station
from edge_inspector.dispatch import EXIT_MARKS_NOT_FIRED, MarkDispatch, exit_status
from edge_inspector.mark import Action, InspectorState, Mark
from edge_inspector.plc import softplc
from edge_inspector.plc.link import PlcLink
from edge_inspector.plc.outbox import Outbox
from edge_inspector.plc.regmap import default_map
from edge_inspector.plc.regmap_doc import render_st_block, st_block_of
from edge_inspector.plc.softplc import SoftPlc

from conftest import free_port, wait_until

ROOT = Path(__file__).resolve().parents[1]
LINES_PER_S = 2000
MM_PER_LINE = 0.5
SPEED = LINES_PER_S * MM_PER_LINE  # mm/s
MARKER = 500.0


def station(port: int) -> Any:
    return parse_station({
        "camera": {"mm_per_px": 0.5, "mm_per_line": MM_PER_LINE, "line_rate_hz": LINES_PER_S},
        "belt": {"speed_m_per_min": SPEED * 60 / 1000, "marker_distance_mm": MARKER, "processing_latency_s": 0.05,
                 "margin_mm": 10},
        "tiling": {"tile": 64, "overlap": 8},
        "plc": {"host": "127.0.0.1", "port": port, "heartbeat_ms": 20, "timeout_s": 0.3, "reconnect_max_s": 0.2},
    })


class Belt:
    """The camera side of a realtime run: line ``(t - t0) x line rate`` is under the camera at ``t``."""

    def __init__(self, dispatch: MarkDispatch) -> None:
        self.d = dispatch
        self.t0 = time.monotonic()
        self._stop = threading.Event()
        self.d.line_seen(0)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def line(self) -> int:
        return int((time.monotonic() - self.t0) * LINES_PER_S)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.d.line_seen(self.line())

    def hide_start(self, hide_id: int) -> float:
        """A hide whose leading edge is under the camera now: its HIDE_START mark; the line-frame position."""
        line = self.line()
        self.d.planner.hide_start(hide_id, line, line)
        return line * MM_PER_LINE

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def plcs() -> Iterator[Callable[..., SoftPlc]]:
    started: list[SoftPlc] = []

    def make(port: int, **kw: Any) -> SoftPlc:
        plc = SoftPlc(port=port, speed_mm_s=SPEED, marker_distance_mm=MARKER, **kw)
        started.append(plc.start())
        return plc

    yield make
    for p in started:
        p.stop()


def records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (out / "marks.jsonl").read_text().splitlines()]


def frame_offset(out: Path) -> float:
    frames = [r for r in records(out) if r["event"] == "frame"]
    return float(frames[-1]["belt_offset_mm"])


# -- case 2: the PLC answers only after the run started ---------------------------------------

def test_marks_planned_before_the_encoder_is_known_are_rebased_or_not_fired(tmp_path: Path, plcs) -> None:
    port = free_port()
    d = MarkDispatch(station(port), [], tmp_path, source_id="late-plc.raw", plc=f"127.0.0.1:{port}")
    d.start(connect_timeout_s=0.1)
    belt = Belt(d)
    try:
        head = records(tmp_path)[0]
        assert head["event"] == "run" and head["encoder_known"] is False
        belt.hide_start(1)  # its spot reaches the marker at 0.5 s: before the PLC answers
        time.sleep(0.8)
        along = belt.hide_start(2)  # reaches the marker at 1.3 s: after the PLC answered
        t_plc = time.monotonic()
        plc = plcs(port)  # its encoder starts at 0, 0.8 s after line 0
        wait_until(lambda: len(plc.fired) + len(plc.missed) >= 1, 3.0, "the held mark fired")
        summary = d.finish(drain_timeout_s=2.0, fire_timeout_s=0.0)
    finally:
        belt.stop()
    offset = frame_offset(tmp_path)
    assert offset == pytest.approx(-(t_plc - belt.t0) * SPEED, abs=60)  # encoder at the tie, not 0
    (fired,) = plc.fired
    assert fired["action"] == "hide_start" and fired["belt_mm"] == pytest.approx(along + offset, abs=0.1)
    assert abs(fired["error_mm"]) <= default_map().fire_window_mm and not plc.missed
    assert summary["rebased"] == 1 and summary["not_fired"] == {"passed": 1}
    assert exit_status(summary) == EXIT_MARKS_NOT_FIRED
    (closed,) = [r for r in records(tmp_path) if r["event"] == "not_fired"]
    assert closed["reason"] == "passed" and closed["hide_id"] == 1


# -- case 1: the PLC is killed and comes back without its memory -------------------------------

def test_plc_restarted_without_memory_rebases_pending_marks_and_counts_the_lost(tmp_path: Path, plcs) -> None:
    port = free_port()
    first = plcs(port)
    d = MarkDispatch(station(port), [], tmp_path, source_id="kill.raw", plc=f"127.0.0.1:{port}")
    d.start(connect_timeout_s=5.0)
    belt = Belt(d)
    try:
        belt.hide_start(1)
        assert d.link is not None
        wait_until(lambda: d.link.outbox.counts()["acked_upto"] == 1, 2.0, "the first mark acknowledged")
        first.stop()  # killed before its belt reached the mark: the PLC had it, then lost it
        time.sleep(0.1)
        belt.hide_start(2)  # planned while the PLC is away; its spot passes the marker meanwhile
        time.sleep(0.8)
        along = belt.hide_start(3)
        second = plcs(port)  # no RETAIN state: acknowledgement 0, encoder from 0
        wait_until(lambda: len(second.fired) + len(second.missed) >= 1, 3.0, "the re-based mark fired")
        summary = d.finish(drain_timeout_s=2.0, fire_timeout_s=0.0)
    finally:
        belt.stop()
    assert not first.fired
    (fired,) = second.fired  # only mark 3, at its spot in the new PLC's frame
    assert fired["belt_mm"] == pytest.approx(along + frame_offset(tmp_path), abs=0.1)
    assert abs(fired["error_mm"]) <= default_map().fire_window_mm and not second.missed
    assert summary["link"]["errors"]["plc_memory_lost"] == 1 and summary["link"]["frame_changes"] == 1
    assert summary["not_fired"] == {"lost_in_plc": 1, "passed": 1}
    assert exit_status(summary) == EXIT_MARKS_NOT_FIRED


# -- case 3: an outbox left by another run -----------------------------------------------------

def test_a_new_run_never_sends_the_marks_another_run_left_in_the_outbox(tmp_path: Path, plcs) -> None:
    port = free_port()
    st = station(port)
    killed = MarkDispatch(st, [], tmp_path, source_id="first.raw", plc=f"127.0.0.1:{port}")
    killed.start(connect_timeout_s=0.1)  # no PLC
    belt = Belt(killed)
    for i in range(3):
        belt.hide_start(10 + i)
    belt.stop()
    assert killed.link is not None
    killed.link.stop(drain_timeout_s=0.0)  # the process dies here: no finish(), 3 marks pending
    killed.link.outbox.close()
    assert Outbox(tmp_path / st.plc.outbox).counts()["pending"] == 3

    plc = plcs(port)
    d = MarkDispatch(st, [], tmp_path, source_id="second.raw", plc=f"127.0.0.1:{port}")
    d.start(connect_timeout_s=5.0)
    belt = Belt(d)
    try:
        belt.hide_start(1)
        wait_until(lambda: len(plc.fired) >= 1, 3.0, "the new run's mark fired")
        time.sleep(0.3)
        summary = d.finish(drain_timeout_s=2.0, fire_timeout_s=0.0)
    finally:
        belt.stop()
    assert [e["hide_id"] for e in plc.fired] == [1] and not plc.missed  # nothing of the first run
    assert summary["earlier_run_closed"] == {"earlier_run": 3}
    assert summary["not_fired_total"] == 0 and exit_status(summary) == 0


def test_a_run_whose_plc_never_answers_counts_its_marks_not_fired(tmp_path: Path) -> None:
    port = free_port()
    d = MarkDispatch(station(port), [], tmp_path, source_id="nop.raw", plc=f"127.0.0.1:{port}")
    d.start(connect_timeout_s=0.1)
    belt = Belt(d)
    belt.hide_start(1)
    belt.hide_start(2)
    belt.stop()
    summary = d.finish(drain_timeout_s=0.2, fire_timeout_s=0.0)
    assert summary["not_fired"] == {"encoder_unknown": 2} and exit_status(summary) == EXIT_MARKS_NOT_FIRED
    assert Outbox(tmp_path / "plc-outbox.sqlite").counts()["pending"] == 0  # nothing left for the next run


# -- case 5: a target the belt passed is missed, never fired somewhere else --------------------

def test_a_late_scan_reports_missed_instead_of_firing_elsewhere(tmp_path: Path) -> None:
    plc = SoftPlc(speed_mm_s=SPEED, marker_distance_mm=MARKER, tick_s=0.25).start()  # 250 mm of belt per scan
    link = PlcLink(Plc(host="127.0.0.1", port=plc.port, heartbeat_ms=20, timeout_s=0.3), Outbox(tmp_path / "o.sqlite"))
    try:
        link.start()
        link.set_state(InspectorState.RUNNING)
        assert link.wait_connected(5.0)
        start = (link.belt_mm() or 0.0) + 400.0 - MARKER  # consumed before due
        link.submit([Mark(Action.INK, start + 17.0 * i, key=f"m{i}") for i in range(12)])
        wait_until(lambda: len(plc.fired) + len(plc.missed) >= 12, 5.0, "12 marks fired or missed")
    finally:
        link.stop(drain_timeout_s=0.0)
        plc.stop()
    window = default_map().fire_window_mm
    assert plc.missed and all(e["late_by_mm"] > window for e in plc.missed)
    assert all(abs(e["error_mm"]) <= window for e in plc.fired)
    assert sorted(e["seq"] for e in [*plc.fired, *plc.missed]) == list(range(1, 13))


def test_the_plc_program_misses_a_passed_target_with_the_maps_window() -> None:
    block = render_st_block()
    assert f"FIRE_WINDOW : DINT := {default_map().fire_window};" in block
    text = (ROOT / "firmware_io" / "edge_inspector_marks.st").read_text(encoding="utf-8")
    assert st_block_of(text) == block
    fire = text[text.index("(* 3. Fire"):text.index("(* 4. Publish")]
    late, on_time = fire.index("> FIRE_WINDOW THEN"), fire.index(">= 0 THEN")
    assert late < on_time  # the window is checked before firing
    assert "marksMissed := marksMissed + 1" in fire[late:on_time] and "fireMarker := TRUE" not in fire[late:on_time]


def test_the_soft_plc_keeps_a_bounded_event_history() -> None:
    plc = SoftPlc()
    for i in range(softplc.EVENTS_KEPT + 500):
        plc._event("fired", seq=i + 1)
    assert len(plc.events) == len(plc.fired) == softplc.EVENTS_KEPT
    assert plc.counts["fired"] == softplc.EVENTS_KEPT + 500 and plc.fired[-1]["seq"] == softplc.EVENTS_KEPT + 500


# -- case 15: short and garbage Modbus replies -------------------------------------------------

def _serve(reply: Callable[[bytes], bytes]) -> int:
    """A TCP server on loopback that answers every request with ``reply(request)``."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()

    def run() -> None:
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            with c:
                while data := c.recv(1024):
                    c.sendall(reply(data))

    threading.Thread(target=run, daemon=True).start()
    return int(srv.getsockname()[1])


def _short(req: bytes) -> bytes:
    """Reads: one register whatever was asked; writes: acknowledged."""
    tid, _, _, unit, fc = struct.unpack(">HHHBB", req[:8])
    if fc == 3:
        return struct.pack(">HHHBBBH", tid, 0, 5, unit, 3, 2, 7)
    return struct.pack(">HHHBB", tid, 0, 6, unit, fc) + req[8:12]


@pytest.mark.parametrize("reply, kind, text", [
    (_short, "short_reply", "the reply carries 1 register, 2 were asked"),
    (lambda req: b"\xde\xad\xbe\xef" * 3, "bad_reply", "not a Modbus TCP response"),
])
def test_short_and_garbage_replies_are_named(tmp_path: Path, reply, kind, text) -> None:
    port = _serve(reply)
    link = PlcLink(Plc(host="127.0.0.1", port=port, timeout_s=0.3, reconnect_max_s=0.1), Outbox(tmp_path / "o.sqlite"))
    link.start()
    try:
        wait_until(lambda: link.stats()["errors"].get(kind, 0) >= 1, 5.0, kind)
        stats = link.stats()
    finally:
        link.stop(drain_timeout_s=0.0)
    assert text in stats["last_error"] and "LAST_WRITTEN_SEQ" in stats["last_error"]
    assert set(stats["errors"]) == {kind}  # no "internal" (IndexError), no "no_response"


# -- case 14: child processes die with the inspector; a second SIGTERM still leaves a summary --

def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").is_dir() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split(")")[1][:3]


def test_the_soft_plc_child_dies_with_a_killed_inspector(tmp_path: Path) -> None:
    code = ("import sys, time\nfrom pathlib import Path\nfrom edge_inspector.plc.launch import SoftPlcProcess\n"
            f"sim = SoftPlcProcess(1000.0, log_path=Path({str(tmp_path / 'plc.jsonl')!r}))\n"
            "print(sim.proc.pid, flush=True)\ntime.sleep(60)\n")
    inspector = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert inspector.stdout is not None
    child = int(inspector.stdout.readline())
    assert _alive(child)
    inspector.kill()
    inspector.wait()
    wait_until(lambda: not _alive(child), 5.0, "the soft-PLC child to exit")
    assert json.loads((tmp_path / "plc.jsonl").read_text().splitlines()[-1])["event"] == "stop"


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(x) for x in (task / "children").read_text().split()]
    return out


def test_a_second_sigterm_during_the_drain_still_writes_the_summary(tmp_path: Path) -> None:
    viky = ROOT / "configs" / "stations" / "viky-sim.toml"
    st = tmp_path / "viky.toml"
    st.write_text(viky.read_text() + "\n[marking]\nreject_grades = []\n")
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "edge_inspector.cli", "--log-json", "--log-level", "info", "run",
                             "--station", str(st), "--out", str(out), "--plc", "sim"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if '"event": "ready"' in line:
            break
    sims = _children(proc.pid)
    assert len(sims) == 1 and _alive(sims[0])
    wait_until(lambda: (out / "marks.jsonl").is_file() and '"planned"' in (out / "marks.jsonl").read_text(), 20.0,
               "a planned mark")
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)  # during the drain: the marks' delivery is cut short
    rest = proc.stdout.read()
    assert proc.wait(30) == 130, rest
    summary = json.loads((out / "summary.json").read_text())
    assert summary["marks"]["link"]["state"] == "stopped"
    assert '"run summary"' in rest
    wait_until(lambda: not _alive(sims[0]), 5.0, "the soft-PLC child to exit")


def test_plc_sim_stops_when_its_parent_is_gone(tmp_path: Path) -> None:
    """The option behind the child's fate, on its own: a parent pid that is not ours stops it at once."""
    r = subprocess.run([sys.executable, "-m", "edge_inspector.plc.softplc", "--port", "0", "--exit-with-parent", "1",
                        "--log", str(tmp_path / "p.jsonl")], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "soft-plc stopped" in r.stdout
    assert build_parser().parse_args(["plc-sim", "--exit-with-parent", "5"]).exit_with_parent == 5
