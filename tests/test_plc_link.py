"""PlcLink, Outbox and SoftPlc end to end over real Modbus TCP on loopback (no mocks).

Marks are placed ahead of the soft-PLC's belt; each test checks what the soft-PLC fired: every
mark exactly once, in sequence order, at the commanded position.
"""

from __future__ import annotations

import inspect
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pymodbus
import pytest
import structlog
from pymodbus.client import ModbusTcpClient

from edge_inspector.config import Plc
from edge_inspector.mark import Action, InspectorState, Mark
from edge_inspector.plc.link import UNIT_KW, PlcLink
from edge_inspector.plc.modbus import unit_keyword
from edge_inspector.plc.outbox import Outbox, OutboxError
from edge_inspector.plc.regmap import default_map
from edge_inspector.plc.softplc import SoftPlc

from conftest import free_port, wait_until

TESTS = Path(__file__).resolve().parent
MAP = default_map()


@pytest.fixture
def plcs() -> Iterator[Callable[..., SoftPlc]]:
    """Start soft-PLCs (stopped at the end)."""
    started: list[SoftPlc] = []

    def make(**kw: Any) -> SoftPlc:
        plc = SoftPlc(**{"speed_mm_s": 500.0, "marker_distance_mm": 300.0, "reject_distance_mm": 400.0, **kw})
        started.append(plc.start())
        return plc

    yield make
    for p in started:
        p.stop()


@pytest.fixture
def links(tmp_path: Path) -> Iterator[Callable[..., PlcLink]]:
    """Start links on an outbox in tmp_path (stopped at the end); state RUNNING."""
    started: list[PlcLink] = []

    def make(port: int, outbox: str = "outbox.sqlite", **kw: Any) -> PlcLink:
        cfg = Plc(host="127.0.0.1", port=port, **{"heartbeat_ms": 20, "timeout_s": 0.3, "reconnect_max_s": 0.2, **kw})
        link = PlcLink(cfg, Outbox(tmp_path / outbox)).start()
        link.set_state(InspectorState.RUNNING)
        started.append(link)
        return link

    yield make
    for link in started:
        link.stop(drain_timeout_s=0.0)
        link.outbox.close()


def ink_marks(start_mm: float, n: int, spacing_mm: float = 5.0, prefix: str = "m") -> list[Mark]:
    return [
        Mark(Action.INK, start_mm + i * spacing_mm, across_mm=10.0 * i - 100.0, class_id=i % 5, hide_id=1000 + i // 10,
             length_mm=0.5 * i, key=f"{prefix}{i}")
        for i in range(n)
    ]


def wait_done(plc: SoftPlc, n: int, timeout: float) -> None:
    """Until the soft-PLC fired or missed ``n`` marks."""
    wait_until(lambda: len(plc.fired) + len(plc.missed) >= n, timeout, f"{n} marks fired or missed")


def fired_seqs(events: list[dict[str, Any]]) -> list[int]:
    return [e["seq"] for e in events if e["event"] == "fired"]


def log_events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_fired_once(events: list[dict[str, Any]], n: int) -> None:
    seqs = fired_seqs(events)
    assert sorted(seqs) == list(range(1, n + 1)), f"fired {seqs}"
    assert not [e for e in events if e["event"] == "missed"]


# -- delivery ----------------------------------------------------------------------------------

def test_marks_fire_once_in_order_at_the_commanded_position(plcs, links) -> None:
    # A slow belt: the placement error is belt travel between two scans, so 5 mm allows 50 ms
    # of scheduling delay on a busy test machine.
    plc = plcs(speed_mm_s=100.0, marker_distance_mm=60.0)
    link = links(plc.port)
    assert link.wait_connected(5.0)
    belt = link.belt_mm()
    assert belt is not None
    marks = ink_marks(belt + 60.0, 40, spacing_mm=2.0)  # targets 1.2 s .. 2.0 s ahead
    plc.set_consuming(False)  # the ring fills whatever the machine's timing: 16 written, the rest wait
    sent = link.submit(marks)
    assert [m.seq for m in sent] == list(range(1, 41))
    wait_until(lambda: link.stats()["ring_full_waits"] > 0, 5.0, "the link to find the ring full")
    assert link.stats()["marks_sent"] == 16  # never a slot written over before its ack
    plc.set_consuming(True)
    assert link.drain(10.0)
    wait_done(plc, 40, 10.0)
    assert_fired_once(plc.events, 40)
    assert fired_seqs(plc.events) == list(range(1, 41)), "fired out of sequence order"
    for ev, mk in zip(plc.fired, sent):
        assert ev["belt_mm"] == pytest.approx(mk.belt_mm, abs=0.051)
        assert ev["target_mm"] == pytest.approx(ev["belt_mm"] + 60.0, abs=0.051)
        assert 0.0 <= ev["error_mm"] <= 5.0, ev
        assert ev["fired_at_mm"] == pytest.approx(ev["target_mm"] + ev["error_mm"], abs=0.051)
        assert (ev["across_mm"], ev["class_id"], ev["hide_id"]) == (pytest.approx(mk.across_mm), mk.class_id, mk.hide_id)
        assert ev["length_mm"] == pytest.approx(mk.length_mm, abs=0.051)
        assert ev["action"] == "ink"
    s = link.stats()
    assert (s["marks_sent"], s["marks_acked"], s["pending"], s["resends"]) == (40, 40, 0, 0)
    assert s["plc_ack"] == 40 and s["errors"] == {}
    wait_until(lambda: link.stats()["plc_marks_fired"] == 40, 1.0, "the link reads the PLC's counter")
    assert s["ring_full_waits"] > 0  # 40 marks at once do not fit 16 slots: the rest waited


def test_each_action_goes_to_its_actuator(plcs, links) -> None:
    plc = plcs(reject_distance_mm=450.0)
    link = links(plc.port)
    assert link.wait_connected(5.0)
    belt = link.belt_mm()
    assert belt is not None
    link.submit([Mark(a, belt + 10.0 * i, key=a.name) for i, a in enumerate(Action)])
    wait_done(plc, len(Action), 5.0)
    for ev in plc.fired:
        want = 450.0 if ev["action"] == "reject_hide" else 300.0
        assert ev["target_mm"] - ev["belt_mm"] == pytest.approx(want, abs=0.051)
    assert {e["action"] for e in plc.fired} == {a.name.lower() for a in Action}


def test_encoder_wraparound(plcs, links) -> None:
    top_mm = ((1 << 31) - 1) / 10.0
    plc = plcs(speed_mm_s=200.0, start_belt_mm=top_mm - 150.0)
    link = links(plc.port)
    assert link.wait_connected(5.0)
    belt = link.belt_mm()
    assert belt is not None and belt < top_mm
    link.submit(ink_marks(belt - 200.0, 20, spacing_mm=10.0))  # targets from -200 + 300 mm: across the wrap
    wait_done(plc, 20, 5.0)
    assert fired_seqs(plc.events) == list(range(1, 21)) and not plc.missed
    assert all(0.0 <= e["error_mm"] <= 10.0 for e in plc.fired)
    assert any(e["fired_at_mm"] < 0 for e in plc.fired), "no mark fired after the encoder wrapped"
    after = link.belt_mm()
    assert after is not None and after > top_mm  # the link unwraps the encoder


# -- restarts ----------------------------------------------------------------------------------

def test_soft_plc_restart_mid_run_fires_every_mark_once(plcs, links, tmp_path: Path) -> None:
    state, log = tmp_path / "plc-state.json", tmp_path / "plc.jsonl"
    plc = plcs(speed_mm_s=400.0, marker_distance_mm=200.0, state_path=state, log_path=log)
    port = plc.port
    link = links(port)
    assert link.wait_connected(5.0)
    belt = link.belt_mm()
    assert belt is not None
    link.submit(ink_marks(belt, 30, spacing_mm=15.0))  # fire over ~1.6 s from 0.5 s on
    wait_until(lambda: len(plc.fired) >= 3, 5.0)
    assert plc.fire_list, "nothing acknowledged but unfired when the PLC stops"
    plc.stop()
    wait_until(lambda: not link.stats()["connected"], 2.0)
    down = link.submit(ink_marks(belt + 460.0, 10, spacing_mm=15.0, prefix="down"))
    assert [m.seq for m in down] == list(range(31, 41))
    time.sleep(0.3)  # the link retries with back-off meanwhile
    assert link.stats()["errors"].get("connect_refused", 0) >= 1
    plcs(port=port, speed_mm_s=400.0, marker_distance_mm=200.0, state_path=state, log_path=log)
    assert link.wait_connected(3.0)
    assert link.drain(5.0)
    wait_until(lambda: len(fired_seqs(log_events(log))) >= 40, 8.0)
    assert_fired_once(log_events(log), 40)
    assert link.stats()["reconnects"] >= 1


def test_inspector_killed_mid_run_resends_from_ack(plcs, links, tmp_path: Path) -> None:
    plc = plcs(speed_mm_s=500.0, marker_distance_mm=1500.0, consume=False)
    outbox = tmp_path / "outbox.sqlite"
    child = subprocess.Popen(
        [sys.executable, str(TESTS / "plc_link_child.py"), str(plc.port), str(outbox), "30", "5"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "submitted 30"
        wait_until(lambda: plc.read("LAST_WRITTEN_SEQ") == 16, 5.0, "the child filled the ring")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(5.0)
    assert plc.read("LAST_ACK_SEQ") == 0
    link = links(plc.port)
    assert link.wait_connected(5.0)
    wait_until(lambda: link.stats()["marks_sent"] >= 16, 3.0)
    assert link.stats()["resends"] == 16  # slots 1..16 written again: the PLC had not taken them
    assert link.outbox.counts()["pending"] == 30
    plc.set_consuming(True)
    assert link.drain(5.0)
    wait_done(plc, 30, 6.0)
    assert_fired_once(plc.events, 30)
    assert fired_seqs(plc.events) == list(range(1, 31))


def test_heartbeat_loss_and_return_seen_by_the_soft_plc(plcs, links, tmp_path: Path) -> None:
    plc = plcs(heartbeat_timeout_s=0.3)  # 15 heartbeat periods of the child
    child = subprocess.Popen(
        [sys.executable, str(TESTS / "plc_link_child.py"), str(plc.port), str(tmp_path / "c.sqlite"), "0", "5"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "submitted 0"
        time.sleep(0.3)
        assert not plc.heartbeat_lost and plc.read("INSPECTOR_STATE") == InspectorState.RUNNING
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(5.0)
    wait_until(lambda: plc.heartbeat_lost, 2.0, "heartbeat lost")
    assert plc.read("HEARTBEAT_LOST") == 1
    assert [e["event"] for e in plc.events if e["event"].startswith("heartbeat")] == ["heartbeat_lost"]
    link = links(plc.port)
    wait_until(lambda: not plc.heartbeat_lost, 3.0, "heartbeat back")
    assert plc.read("HEARTBEAT_LOST") == 0
    assert [e["event"] for e in plc.events if e["event"].startswith("heartbeat")] == ["heartbeat_lost", "heartbeat_ok"]
    wait_until(lambda: link.stats().get("plc_heartbeat_lost") == 0, 2.0)
    # A clean stop says STOPPED: a stopped inspector is not "lost".
    link.stop()
    assert plc.read("INSPECTOR_STATE") == InspectorState.STOPPED
    time.sleep(0.4)
    assert not plc.heartbeat_lost


# -- backpressure and faults -------------------------------------------------------------------

def test_ring_full_backpressure_never_overwrites(plcs, links) -> None:
    plc = plcs(marker_distance_mm=700.0, consume=False)
    link = links(plc.port)
    assert link.wait_connected(5.0)
    belt = link.belt_mm()
    assert belt is not None
    link.submit(ink_marks(belt, 30))
    wait_until(lambda: link.stats()["marks_sent"] == 16 and link.stats()["ring_full_waits"] > 0, 3.0)
    slots = [plc.slot_words(k) for k in range(MAP.ring.slots)]
    assert [MAP.decode_mark(w).seq for w in slots] == list(range(1, 17))
    wait_until(lambda: plc.read("INSPECTOR_STATE") == InspectorState.DEGRADED, 2.0, "DEGRADED on the PLC")
    time.sleep(0.3)  # many heartbeats and send attempts later ...
    assert [plc.slot_words(k) for k in range(MAP.ring.slots)] == slots  # ... nothing overwritten
    assert plc.read("LAST_WRITTEN_SEQ") == 16
    s = link.stats()
    assert s["marks_sent"] == 16 and s["pending"] == 30 and "ring_full" in s["problems"]
    plc.set_consuming(True)
    assert link.drain(5.0)
    wait_done(plc, 30, 5.0)
    assert_fired_once(plc.events, 30)
    wait_until(lambda: plc.read("INSPECTOR_STATE") == InspectorState.RUNNING, 2.0, "RUNNING again")


def test_unreachable_plc_keeps_marks_until_it_answers(plcs, links) -> None:
    port = free_port()
    with structlog.testing.capture_logs() as logs:
        link = links(port)
        accepted = link.submit(ink_marks(0.0, 5))
        assert [m.seq for m in accepted] == [1, 2, 3, 4, 5]
        assert not link.wait_connected(0.5)
    s = link.stats()
    assert not s["connected"] and s["pending"] == 5 and s["errors"]["connect_refused"] >= 1
    assert f"127.0.0.1:{port}" in s["last_error"] and "refused" in s["last_error"]
    errors = [e for e in logs if e["log_level"] == "error"]
    assert errors and f"127.0.0.1:{port} unit 1" in errors[0]["event"]
    assert len(errors) <= 2  # rate-limited: one line per kind every few seconds
    plc = plcs(port=port, marker_distance_mm=50.0, start_belt_mm=-300.0)  # targets 0.7 s away
    assert link.wait_connected(3.0)
    assert link.drain(3.0)
    wait_done(plc, 5, 3.0)
    assert_fired_once(plc.events, 5)


def test_wrong_unit_id_is_named(plcs, links) -> None:
    plc = plcs(unit_id=1)
    link = links(plc.port, unit_id=7)
    link.submit(ink_marks(0.0, 2))
    assert not link.wait_connected(0.8)
    s = link.stats()
    # pymodbus >= 3.10 servers answer exception 0x0B (wrong_unit); older ones let it time out.
    assert s["errors"] and set(s["errors"]) <= {"wrong_unit", "no_response"} and s["pending"] == 2
    assert "unit id 7" in s["last_error"] and "check plc.unit_id" in s["last_error"]
    assert "LAST_WRITTEN_SEQ (address 4" in s["last_error"]
    assert plc.read("LAST_WRITTEN_SEQ") == 0 and not plc.fired


def test_garbage_ack_is_not_trusted_and_nothing_is_lost(plcs, links) -> None:
    plc = plcs()
    link = links(plc.port)
    assert link.wait_connected(5.0)
    belt = link.belt_mm()
    assert belt is not None
    link.submit(ink_marks(belt, 5))
    assert link.drain(3.0)
    plc.force("LAST_ACK_SEQ", 1_000_000)
    wait_until(lambda: link.stats()["errors"].get("ack_beyond", 0) >= 1, 2.0)
    s = link.stats()
    assert "LAST_ACK_SEQ (address 1002) = 1000000" in s["last_error"] and s["plc_ack"] == 5
    wait_until(lambda: plc.read("INSPECTOR_STATE") == InspectorState.DEGRADED, 2.0)
    belt = link.belt_mm()
    assert belt is not None
    link.submit(ink_marks(belt, 5, prefix="late"))
    wait_done(plc, 10, 3.0)  # the PLC has them ...
    assert link.outbox.counts()["pending"] == 5  # ... but the garbage ack acknowledged nothing
    plc.force("LAST_ACK_SEQ", None)
    assert link.drain(3.0)
    wait_until(lambda: plc.read("INSPECTOR_STATE") == InspectorState.RUNNING, 2.0)
    assert_fired_once(plc.events, 10)


def test_plc_map_version_mismatch_stops_sending(plcs, links) -> None:
    plc = plcs()
    plc.force("PLC_MAP_VERSION", MAP.version + 1)
    link = links(plc.port)
    link.submit(ink_marks(0.0, 3))
    wait_until(lambda: link.stats()["errors"].get("map_version", 0) >= 1, 3.0)
    time.sleep(0.1)
    assert link.stats()["marks_sent"] == 0 and plc.read("LAST_WRITTEN_SEQ") == 0
    assert "PLC_MAP_VERSION (address 1000)" in link.stats()["last_error"]
    wait_until(lambda: plc.read("INSPECTOR_STATE") == InspectorState.DEGRADED, 2.0)


def test_a_plc_whose_program_stands_still_is_reported(plcs, links) -> None:
    plc = plcs()
    link = links(plc.port)
    assert link.wait_connected(5.0)
    plc.force("PLC_ALIVE", 5)  # the scan counter stops: the PLC is in STOP mode
    wait_until(lambda: link.stats()["errors"].get("plc_stalled", 0) >= 1, 2.0)
    assert "PLC_ALIVE (address 1001) = 5 unchanged" in link.stats()["last_error"]
    wait_until(lambda: plc.read("INSPECTOR_STATE") == InspectorState.DEGRADED, 2.0)
    plc.force("PLC_ALIVE", None)
    wait_until(lambda: plc.read("INSPECTOR_STATE") == InspectorState.RUNNING, 2.0)
    assert link.stats()["problems"] == []


def test_link_needs_a_host(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="plc.host is empty"):
        PlcLink(Plc(), Outbox(tmp_path / "o.sqlite"))


def test_fresh_outbox_continues_above_the_plcs_history(plcs, links) -> None:
    plc = plcs()
    first = links(plc.port, outbox="first.sqlite")
    assert first.wait_connected(5.0)
    first.submit(ink_marks(first.belt_mm() or 0.0, 5, prefix="a"))
    assert first.drain(3.0)
    first.stop()
    second = links(plc.port, outbox="second.sqlite")
    assert second.outbox.next_seq == 1
    pre = second.submit(ink_marks(plc.belt_mm + 10.0, 3, prefix="b"))  # numbered 1..3 before it knows better
    assert [m.seq for m in pre] == [1, 2, 3]
    assert second.drain(3.0)
    wait_done(plc, 8, 3.0)
    assert fired_seqs(plc.events) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert second.outbox.next_seq == 9


def test_plc_cold_start_renumbers_pending_marks(plcs, links) -> None:
    plc = plcs()
    port = plc.port
    link = links(port)
    assert link.wait_connected(5.0)
    link.submit(ink_marks(link.belt_mm() or 0.0, 5))
    assert link.drain(3.0)
    plc.stop()
    wait_until(lambda: not link.stats()["connected"], 2.0)
    link.submit(ink_marks(200.0, 3, prefix="after"))  # seq 6..7..8 in the outbox
    fresh = plcs(port=port, start_belt_mm=0.0)  # no RETAIN: ack 0; targets 0.9 s away
    assert link.drain(3.0)
    wait_done(fresh, 3, 3.0)
    assert fired_seqs(fresh.events) == [1, 2, 3] and not fresh.missed
    assert link.stats()["errors"]["plc_memory_lost"] == 1


# -- outbox ------------------------------------------------------------------------------------

def test_outbox_numbers_across_reopen_and_deduplicates_keys(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    with Outbox(path) as ob:
        got = ob.add([Mark(Action.INK, 1.0, key="a"), Mark(Action.INK, 2.0, key="b"), Mark(Action.INK, 3.0, key="a"),
                      Mark(Action.REJECT_HIDE, 4.0)])
        assert [(m.seq, m.key) for m in got] == [(1, "a"), (2, "b"), (3, "")]
        assert ob.ack(2) == 2
        assert [m.seq for m in ob.pending()] == [3]
    with Outbox(path) as ob:
        assert ob.next_seq == 4 and ob.acked_upto == 2
        assert ob.add([Mark(Action.INK, 5.0, key="a"), Mark(Action.INK, 6.0, key="c")])[0].seq == 4  # "a" acked: skipped
        assert [m.seq for m in ob.pending(after_seq=3)] == [4]
        pend = ob.pending()
        assert [m.key for m in pend] == ["", "c"] and pend[1].belt_mm == 6.0
        assert ob.counts() == {"pending": 2, "acked": 2, "closed": 0, "first_pending_seq": 3, "last_seq": 4, "acked_upto": 2,
                               "written_upto": 0}
        assert [h["key"] for h in ob.history()] == ["b", "a"]


def test_outbox_raise_seq_floor_and_renumber(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite") as ob:
        ob.add([Mark(Action.INK, float(i), key=str(i)) for i in range(3)])
        assert ob.raise_seq_floor(500) == 3
        assert [(m.seq, m.key) for m in ob.pending()] == [(501, "0"), (502, "1"), (503, "2")]
        assert ob.add([Mark(Action.INK, 9.0)])[0].seq == 504
        assert ob.raise_seq_floor(10) == 0 and ob.next_seq == 505
        assert ob.renumber_pending(1) == 4
        assert [m.seq for m in ob.pending()] == [1, 2, 3, 4] and ob.next_seq == 5


@pytest.mark.parametrize("content", [b"this is not a database at all" * 100, b"SQLite format 3\x00" + b"\xff" * 2000])
def test_outbox_refuses_a_corrupt_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.sqlite"
    path.write_bytes(content)
    with pytest.raises(OutboxError, match="not an outbox") as e:
        Outbox(path)
    assert str(path) in str(e.value)


def test_outbox_refuses_a_foreign_database_and_an_unwritable_place(tmp_path: Path) -> None:
    other = tmp_path / "results.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE hides (id INTEGER)")
    with pytest.raises(OutboxError, match=r"not an outbox.*hides") as e:
        Outbox(other)
    assert str(other) in str(e.value)
    missing = tmp_path / "no" / "such" / "dir" / "o.sqlite"
    with pytest.raises(OutboxError, match="cannot write the outbox") as e:
        Outbox(missing)
    assert str(missing) in str(e.value)


# -- pymodbus compatibility and the command line -----------------------------------------------

def test_unit_keyword_shim_matches_the_installed_pymodbus(plcs) -> None:
    major, minor = (int(p) for p in pymodbus.__version__.split(".")[:2])
    assert UNIT_KW == ("device_id" if (major, minor) >= (3, 10) else "slave")
    assert UNIT_KW in inspect.signature(ModbusTcpClient.write_registers).parameters

    def old(address: int, count: int = 1, slave: int = 0, **kwargs: Any) -> None: ...

    def new(address: int, *, count: int = 1, device_id: int = 1) -> None: ...

    assert (unit_keyword(old), unit_keyword(new)) == ("slave", "device_id")
    with pytest.raises(RuntimeError, match="unsupported"):
        unit_keyword(lambda address: None)
    plc = plcs(unit_id=9)
    c = ModbusTcpClient("127.0.0.1", port=plc.port, timeout=1.0, retries=0)
    assert c.connect()
    try:
        rr = c.read_holding_registers(MAP.reg("PLC_MAP_VERSION").address, count=1, **{UNIT_KW: 9})
        assert not rr.isError() and rr.registers == [MAP.version]
        assert c.read_holding_registers(MAP.reg("PLC_MAP_VERSION").address, count=1, **{UNIT_KW: 8}).isError()
    finally:
        c.close()


def test_plc_sim_command_line(tmp_path: Path, links) -> None:
    log = tmp_path / "plc.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_inspector.plc.softplc", "--port", "0", "--speed-mm-s", "500",
         "--marker-distance-mm", "50", "--log", str(log), "--state", str(tmp_path / "state.json"), "--seconds", "60"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "listening on 127.0.0.1:" in first, first
        port = int(first.split(":")[-1])
        link = links(port)
        assert link.wait_connected(5.0)
        link.submit(ink_marks(link.belt_mm() or 0.0, 3))
        wait_until(lambda: log.is_file() and len(fired_seqs(log_events(log))) == 3, 5.0)
        link.stop()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert "fired 3, missed 0, heartbeat lost 0" in out
    kinds = [e["event"] for e in log_events(log)]
    assert kinds[0] == "start" and kinds[-1] == "stop" and (tmp_path / "state.json").is_file()
