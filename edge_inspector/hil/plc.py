"""The PLC checks: plc_reachable, plc_heartbeat (the PLC's watchdog), mark_round_trip."""

from __future__ import annotations

import statistics
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from .result import NOT_REACHABLE, CheckResult, failed, passed
from .session import OUTBOX, Session

ROUND_TRIP_MARKS = 6  # three uninspected start/end pairs: no ink, no reject


# -- c) PLC reachable -------------------------------------------------------------------------


def check_plc_reachable(t: Session, work: Path) -> CheckResult:
    """Connect a PlcLink (state RUNNING, so that the PLC watches its heartbeat); kept in ``t.link`` for the next checks."""
    from ..mark import InspectorState
    from ..plc.link import PlcLink
    from ..plc.outbox import Outbox

    assert t.plc is not None
    name = "plc_reachable"
    cfg = t.station.plc.model_copy(update={"host": t.plc[0], "port": t.plc[1]})
    link = PlcLink(cfg, Outbox(work / OUTBOX)).start()
    t0 = time.monotonic()
    timeout = max(3.0, 4 * cfg.timeout_s)
    if not link.wait_connected(timeout):
        last = link.stats()["last_error"] or f"no answer within {timeout:g} s"
        link.stop()
        link.outbox.close()
        return failed(name, last, plc=link.where, timeout_s=timeout)
    t.link, t.plc_ok = link, True
    connect_ms = round((time.monotonic() - t0) * 1000, 1)
    link.set_state(InspectorState.RUNNING)
    first = link.stats()
    time.sleep(3 * cfg.heartbeat_ms / 1000.0)
    s = link.stats()
    values = {
        "plc": link.where, "connect_ms": connect_ms, "map_version": link.map.version,
        "plc_map_version": s.get("plc_map_version"), "plc_alive_moves": s.get("plc_alive") != first.get("plc_alive"),
        "belt_mm": _r(s.get("belt_mm")), "belt_speed_mm_s": _r(s.get("plc_belt_speed")),
        "line_running": bool(s.get("plc_line_running")), "plc_faults": s.get("plc_faults"),
        "plc_ack": s.get("plc_ack"), "errors": s.get("errors"),
    }
    problems = []
    if s.get("plc_map_version") != link.map.version:
        problems.append(f"PLC_MAP_VERSION = {s.get('plc_map_version')}, this inspector speaks map version"
                        f" {link.map.version}: load the PLC program built from firmware_io/register_map.toml")
    if not values["plc_alive_moves"]:
        problems.append("PLC_ALIVE does not count: the PLC program is not running (STOP mode?)")
    if not s.get("connected"):
        problems.append(f"link lost again: {s.get('last_error')}")
    if problems:
        return failed(name, "; ".join(problems), **values)
    speed = values["belt_speed_mm_s"]
    return passed(name, f"connected in {connect_ms:g} ms, map version {link.map.version}, PLC program"
                       f" running, belt at {values['belt_mm']} mm, {speed} mm/s", **values)


def _r(v: Any, nd: int = 1) -> Any:
    return round(float(v), nd) if isinstance(v, (int, float)) and not isinstance(v, bool) else v


# -- d) heartbeat -----------------------------------------------------------------------------


@dataclass
class Beat:
    """HEARTBEAT_LOST as read by the link while it beat."""

    samples: int
    lost_samples: int  # readings with the flag set after it first cleared
    cleared_after_ms: float | None  # from the start of the observation to the first clear reading
    sim_lost_events: int | None  # soft-PLC heartbeat_lost events during the observation


def observe_heartbeat(t: Session) -> Beat:
    """Read HEARTBEAT_LOST every 50 ms for three heartbeat timeouts (at least 1 s) while the link beats."""
    link = t.link
    window = max(1.0, 3 * link.map.heartbeat_timeout_ms / 1000.0)
    t0, wall0 = time.monotonic(), time.time()
    samples = lost = 0
    cleared: float | None = None
    while time.monotonic() - t0 < window:
        flag = bool(link.stats().get("plc_heartbeat_lost"))
        samples += 1
        if not flag and cleared is None:
            cleared = round((time.monotonic() - t0) * 1000, 1)
        elif flag and cleared is not None:
            lost += 1
        time.sleep(0.05)
    sim = None
    if t.soft_plc is not None:
        sim = len(t.soft_plc.events("heartbeat_lost", since=wall0))
    return Beat(samples, lost, cleared, sim)


def check_heartbeat(t: Session, beat: Beat | None) -> CheckResult:
    """The observation while the link ran, then the PLC's watchdog: beats stop -> HEARTBEAT_LOST set."""
    from pymodbus.exceptions import ModbusException

    name = "plc_heartbeat"
    if beat is None:
        return failed(name, NOT_REACHABLE)
    values: dict[str, Any] = asdict(beat)
    problems = []
    if beat.cleared_after_ms is None:
        problems.append("HEARTBEAT_LOST never cleared while the inspector beat: the PLC does not see"
                        " INSPECTOR_HEARTBEAT change (register map, unit id, PLC program)")
    elif beat.lost_samples:
        problems.append(f"HEARTBEAT_LOST set in {beat.lost_samples} of {beat.samples} readings while the"
                        " inspector beat every heartbeat period (network delays, PLC scan time?)")
    if beat.sim_lost_events:
        problems.append(f"the soft-PLC logged {beat.sim_lost_events} heartbeat_lost event(s) while the link beat")
    try:
        values.update(_watchdog_probe(t))
    except (InputError, ModbusException, OSError) as e:
        return failed(name, f"watchdog probe: {e}", **values)
    timeout_ms = values["heartbeat_timeout_ms"]
    if values["lost_after_ms"] is None:
        problems.append(f"HEARTBEAT_LOST not set {timeout_ms + 1000} ms after the last beat: the PLC does not"
                        " watch the inspector's heartbeat")
    if not values["cleared_when_stopped"]:
        problems.append("HEARTBEAT_LOST stayed set after INSPECTOR_STATE = STOPPED")
    if t.soft_plc is not None and values.get("sim_lost_events_probe") != 1:
        problems.append(f"the soft-PLC logged {values.get('sim_lost_events_probe')} heartbeat_lost events for one stop")
    if problems:
        return failed(name, "; ".join(problems), **values)
    return passed(name, f"clear while beating ({beat.samples} readings); set {values['lost_after_ms']:g} ms after"
                 f" the last beat (timeout {timeout_ms} ms); clear again after STOPPED", **values)


def _watchdog_probe(t: Session) -> dict[str, Any]:
    """Beat once with state RUNNING, stop beating, time until the PLC sets HEARTBEAT_LOST; then STOPPED."""
    from pymodbus.client import ModbusTcpClient

    from ..mark import InspectorState
    from ..plc.link import UNIT_KW
    from ..plc.regmap import default_map

    assert t.plc is not None
    m, cfg = default_map(), t.station.plc
    client = ModbusTcpClient(t.plc[0], port=t.plc[1], timeout=cfg.timeout_s, retries=0)
    if not client.connect():
        raise InputError(f"cannot connect to {t.plc[0]}:{t.plc[1]}")
    wall0 = time.time()
    try:
        def read(reg: str) -> float | int:
            r = m.reg(reg)
            rr = client.read_holding_registers(r.address, count=r.count, **{UNIT_KW: cfg.unit_id})
            if rr.isError():
                raise InputError(f"read {reg} (address {r.address}) failed: {rr}")
            return r.decode(rr.registers)

        def write(reg: str, value: float) -> None:
            r = m.reg(reg)
            rr = client.write_registers(r.address, r.encode(value), **{UNIT_KW: cfg.unit_id})
            if rr.isError():
                raise InputError(f"write {reg} (address {r.address}) failed: {rr}")

        def wait_flag(want: int, limit_s: float) -> float | None:
            t0 = time.monotonic()
            while time.monotonic() - t0 < limit_s:
                if int(read("HEARTBEAT_LOST")) == want:
                    return round((time.monotonic() - t0) * 1000, 1)
                time.sleep(0.01)
            return None

        hb = int(read("INSPECTOR_HEARTBEAT"))
        write("MAP_VERSION", m.version)
        write("INSPECTOR_STATE", int(InspectorState.RUNNING))
        write("INSPECTOR_HEARTBEAT", (hb + 1) & 0xFFFF)  # the last beat
        lost_after = wait_flag(1, m.heartbeat_timeout_ms / 1000.0 + 1.0)
        write("INSPECTOR_STATE", int(InspectorState.STOPPED))
        cleared = wait_flag(0, 1.0) is not None
    finally:
        client.close()
    out: dict[str, Any] = {"heartbeat_timeout_ms": m.heartbeat_timeout_ms, "lost_after_ms": lost_after,
                           "cleared_when_stopped": cleared}
    if t.soft_plc is not None:
        out["sim_lost_events_probe"] = len(t.soft_plc.events("heartbeat_lost", since=wall0))
    return out


# -- e) mark round trip -----------------------------------------------------------------------


def check_round_trip(t: Session) -> CheckResult:
    """Uninspected start/end pairs 1 m + the actuator distance ahead of the belt: submit -> acknowledged."""
    from ..mark import Action, Mark

    name = "mark_round_trip"
    link = t.link
    belt = link.belt_mm() or 0.0
    run = uuid.uuid4().hex[:8]
    rtts: list[float] = []
    limit_s = max(2.0, 10 * link.cfg.heartbeat_ms / 1000.0)
    for i in range(ROUND_TRIP_MARKS):
        action = Action.UNINSPECTED_START if i % 2 == 0 else Action.UNINSPECTED_END
        at = belt + 1000.0 + 20.0 * i
        t0 = time.perf_counter()
        (m,) = link.submit([Mark(action, at, key=f"hil-{run}-{i}", deadline_belt_mm=at)])
        while (link.stats().get("plc_ack") or 0) < m.seq:
            if time.perf_counter() - t0 > limit_s:
                return failed(name, f"mark seq {m.seq} not acknowledged within {limit_s:g} s:"
                             f" {link.stats().get('last_error') or 'the PLC does not take marks from the ring'}",
                             acked=len(rtts), round_trip_ms=[round(v, 1) for v in rtts])
            time.sleep(0.001)
        rtts.append((time.perf_counter() - t0) * 1000)
    speed = t.station.belt.speed_m_per_min * 1000.0 / 60.0
    budget = t.station.belt.margin_mm / speed * 1000.0
    values = {"marks": len(rtts), "p50_ms": round(statistics.median(rtts), 1), "max_ms": round(max(rtts), 1),
              "budget_ms": round(budget, 1), "heartbeat_ms": link.cfg.heartbeat_ms}
    if values["max_ms"] > budget:
        return failed(name, f"slowest acknowledgement {values['max_ms']:g} ms exceeds the belt's safety margin"
                     f" ({t.station.belt.margin_mm:g} mm = {budget:.0f} ms): marks planned near their deadline"
                     " would be late; check the network and the PLC scan time", **values)
    return passed(name, f"{len(rtts)} marks acknowledged: p50 {values['p50_ms']:g} ms, max {values['max_ms']:g} ms"
                 f" (margin {budget:.0f} ms)", **values)
