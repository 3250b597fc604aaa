"""Hardware-in-the-loop checks for a new station: ``edge-inspector hil`` (hil/README.md).

Six checks, each ending pass, fail or skip with measured values and a message:

    camera_stream     the camera streams N seconds at the configured line rate, no lost lines, no frame gaps
    encoder           encoder-triggered lines: belt travel (PLC encoder) per camera line = camera.mm_per_line
    plc_reachable     Modbus TCP link up, map version matches, PLC program alive, registers read
    plc_heartbeat     HEARTBEAT_LOST stays clear while the link beats; the PLC sets it when beats stop
    mark_round_trip   marks submitted far ahead of the belt: submit -> PLC acknowledgement, p50 / max ms
    marking_accuracy  a test hide through the whole chain, marks evaluated against its ground truth

Simulator mode (no ``--cti``/``--device``/``--plc`` and a station on the GenTL simulator, e.g.
configs/stations/viky-sim.toml): the camera is viky.cti and the PLC under test is a SoftPlc on a
free loopback port; marking_accuracy replays a small synthetic recording with ground truth at the
soft-PLC's belt speed and evaluates where the soft-PLC fired the marks. Against real hardware
marking_accuracy needs a physical test hide and its truth file (``--truth``), else it is skipped.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import structlog

from . import __version__
from .config import Station, load_station, parse_station
from .errors import InputError

log = structlog.get_logger(__name__)

REPORT_VERSION = 1
SIM_STATION = Path(__file__).resolve().parents[1] / "configs" / "stations" / "viky-sim.toml"
CHECKS = ("camera_stream", "encoder", "plc_reachable", "plc_heartbeat", "mark_round_trip", "marking_accuracy")
RATE_TOLERANCE = 0.05  # measured line rate vs the one set
ENCODER_TOLERANCE = 0.02  # belt travel per line vs camera.mm_per_line
ROUND_TRIP_MARKS = 6  # three uninspected start/end pairs: no ink, no reject
PLACEMENT_TOL_MM = 5.0  # fired position - commanded target (soft-PLC log)
MIN_MARKED_OF_FOUND = 0.8  # of the test defects the inspector detected: an ink mark within MARK_TOL_MM
MARK_TOL_MM = 10.0
OUTBOX = "hil-outbox.sqlite"
NOT_REACHABLE = "not run: the PLC is not reachable (see plc_reachable)"
_CAMERA_GRACE_S = 10.0  # the stream is cut this long after the planned end, whatever the camera does


@dataclass
class CheckResult:
    """One check's outcome: ``status`` pass / fail / skip, what was measured, and why."""

    name: str
    status: str
    message: str
    values: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pass(name: str, message: str, **values: Any) -> CheckResult:
    return CheckResult(name, "pass", message, values)


def _fail(name: str, message: str, **values: Any) -> CheckResult:
    return CheckResult(name, "fail", message, values)


def _skip(name: str, message: str, **values: Any) -> CheckResult:
    return CheckResult(name, "skip", message, values)


@dataclass
class HilOptions:
    """The command line of ``edge-inspector hil``."""

    station: str | None = None
    cti: str | None = None
    device: str | None = None
    plc: str | None = None  # "HOST:PORT", "sim", or None (station [plc] host, or the soft-PLC in simulator mode)
    seconds: float = 5.0
    truth: str | None = None
    out: str | None = None
    hide_timeout_s: float = 120.0


@dataclass
class _Stream:
    """The camera check's samples: (monotonic time, line index, PLC belt mm) at the first and last block."""

    first: tuple[float, int, float | None]
    last: tuple[float, int, float | None]


class SoftPlcProcess:
    """The PLC under test in simulator mode: a SoftPlc in its own process, as a real PLC is its own device.

    (In this process its 1 ms scan would wait for the GIL behind the camera thread and fire late.)
    It listens on a free loopback port and logs every event to ``log_path`` (``edge-inspector plc-sim``).
    """

    def __init__(self, st: Station, log_path: Path) -> None:
        self.speed_mm_s = st.belt.speed_m_per_min * 1000.0 / 60.0
        self.log_path = log_path
        cmd = [sys.executable, "-m", "edge_inspector.plc.softplc", "--host", "127.0.0.1", "--port", "0",
               "--unit-id", str(st.plc.unit_id), "--speed-mm-s", f"{self.speed_mm_s:.6f}",
               "--marker-distance-mm", f"{st.belt.marker_distance_mm:g}",
               "--reject-distance-mm", f"{st.marking.reject_distance_mm:g}", "--log", str(log_path)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # "soft-plc unit 1 at 947.2 mm/s listening on 127.0.0.1:PORT"
        if "listening on" not in line:
            self.stop()
            raise InputError("the soft-PLC did not start", where=" ".join(cmd))
        host, _, port = line.split()[-1].rpartition(":")
        self.address = (host, int(port))

    def events(self, kind: str | None = None, since: float = 0.0) -> list[dict[str, Any]]:
        """Logged events (of ``kind``) from wall-clock time ``since`` on."""
        if not self.log_path.is_file():
            return []
        evs = [json.loads(x) for x in self.log_path.read_text(encoding="utf-8").splitlines() if x.endswith("}")]
        return [e for e in evs if (kind is None or e.get("event") == kind) and e.get("t", 0.0) >= since]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.communicate()


@dataclass
class _Session:
    """What is under test (the station with --cti/--device applied, the PLC address) and what the checks found."""

    station: Station
    station_file: str
    simulator: bool
    plc: tuple[str, int] | None  # None: no PLC to test
    soft_plc: SoftPlcProcess | None = None  # simulator mode, --plc sim
    link: Any = None  # edge_inspector.plc.link.PlcLink while connected
    plc_ok: bool = False  # plc_reachable connected
    stream: _Stream | None = None  # camera_stream got at least two buffers
    test_hide: dict[str, Any] | None = None  # --truth, read before any check runs

    @property
    def camera_sim(self) -> bool:
        return self.station.source.genicam.cti in ("", "viky")

    def close_link(self) -> None:
        if self.link is not None:
            self.link.stop()
            self.link.outbox.close()
            self.link = None


class _Runner:
    """Times each check, keeps its result, tells ``on_result``."""

    def __init__(self, on_result: Callable[[CheckResult], None] | None) -> None:
        self.results: dict[str, CheckResult] = {}
        self.on_result = on_result

    def run(self, check: Callable[..., CheckResult], *args: Any) -> None:
        t0 = time.monotonic()
        r = check(*args)
        r.seconds = round(time.monotonic() - t0, 2)
        self.add(r)

    def add(self, r: CheckResult) -> None:
        self.results[r.name] = r
        log.info("hil check", check=r.name, status=r.status, message=r.message, seconds=r.seconds)
        if self.on_result is not None:
            self.on_result(r)


# -- set-up -----------------------------------------------------------------------------------


def _session(opts: HilOptions) -> _Session:
    """Load the station, apply --cti/--device, decide simulator mode and the PLC address."""
    path = opts.station or str(SIM_STATION)
    if opts.station is None and not SIM_STATION.is_file():
        raise InputError("no station file: give --station FILE", where="--station")
    st = load_station(path).model_copy(deep=True)
    g = st.source.genicam
    if opts.cti is not None:
        st.source.kind = "genicam"
        g.cti = opts.cti
    if opts.device is not None:
        g.device = int(opts.device) if opts.device.isdigit() else opts.device
    camera_sim = st.source.kind == "genicam" and g.cti in ("", "viky")
    simulator = camera_sim and opts.cti is None and opts.device is None and opts.plc is None and not st.plc.host
    plc: tuple[str, int] | None = None
    if opts.plc not in (None, "sim"):
        from .dispatch import parse_plc_address

        plc = parse_plc_address(opts.plc, st.plc.port)
    elif st.plc.host and opts.plc is None:
        plc = (st.plc.host, st.plc.port)
    return _Session(st, path, simulator, plc)


@contextmanager
def _workdir(out: str | None) -> Iterator[Path]:
    if out is not None:
        p = Path(out)
        p.mkdir(parents=True, exist_ok=True)
        yield p
        return
    with tempfile.TemporaryDirectory(prefix="edge-inspector-hil-") as d:
        yield Path(d)


def run_hil(opts: HilOptions, on_result: Callable[[CheckResult], None] | None = None) -> dict[str, Any]:
    """Run every check; the report (``format_report`` prints it). ``on_result`` sees each check as it ends."""
    if not opts.seconds > 0:
        raise InputError(f"--seconds must be greater than 0, got {opts.seconds}")
    t = _session(opts)
    if opts.truth is not None:
        t.test_hide = _load_test_hide(Path(opts.truth))
    started, t0 = time.time(), time.monotonic()
    runner = _Runner(on_result)
    with _workdir(opts.out) as work:
        if t.plc is None and (t.simulator or opts.plc == "sim"):
            t.soft_plc = SoftPlcProcess(t.station, work / "plc.jsonl")
            t.plc = t.soft_plc.address
        try:
            _run_checks(t, opts, work, runner)
        finally:
            t.close_link()
            if t.soft_plc is not None:
                t.soft_plc.stop()
    checks = [runner.results[n].as_dict() for n in CHECKS]
    return {
        "version": REPORT_VERSION,
        "tool": f"edge-inspector {__version__} hil",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "seconds": round(time.monotonic() - t0, 1),
        "mode": "simulator" if t.simulator else "hardware",
        "station": t.station.station.name,
        "station_file": t.station_file,
        "camera": _camera_desc(t),
        "plc": _plc_desc(t),
        "checks": checks,
        "passed": all(c["status"] != "fail" for c in checks),
    }


def _camera_desc(t: _Session) -> str:
    if t.station.source.kind != "genicam":
        return f"none (source.kind = {t.station.source.kind!r})"
    g = t.station.source.genicam
    return f"{'GenTL simulator viky.cti' if t.camera_sim else g.cti}, device {g.device!r}"


def _plc_desc(t: _Session) -> str:
    if t.plc is None:
        return "none"
    where = f"{t.plc[0]}:{t.plc[1]} unit {t.station.plc.unit_id}"
    return f"soft-PLC at {where}" if t.soft_plc is not None else where


def _run_checks(t: _Session, opts: HilOptions, work: Path, runner: _Runner) -> None:
    """PLC first (the camera check samples its encoder), then the camera, the PLC's watchdog, the test hide."""
    beat = None
    if t.plc is None:
        why = "no PLC configured: give --plc HOST:PORT (or --plc sim), or set [plc] host in the station"
        for name in ("plc_reachable", "plc_heartbeat", "mark_round_trip"):
            runner.add(_skip(name, why))
    else:
        runner.run(check_plc_reachable, t, work)
        if t.link is not None:
            beat = observe_heartbeat(t)
            runner.run(check_round_trip, t)
        else:
            runner.add(_fail("mark_round_trip", NOT_REACHABLE))
    runner.run(check_camera, t, opts.seconds)
    runner.run(check_encoder, t)
    t.close_link()  # STOPPED: the watchdog probe beats by hand
    if t.plc is not None:
        runner.run(check_heartbeat, t, beat)
    runner.run(check_marking, t, opts, work)


# -- c) PLC reachable -------------------------------------------------------------------------


def check_plc_reachable(t: _Session, work: Path) -> CheckResult:
    """Connect a PlcLink (state RUNNING, so that the PLC watches its heartbeat); kept in ``t.link`` for the next checks."""
    from .mark import InspectorState
    from .plc.link import PlcLink
    from .plc.outbox import Outbox

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
        return _fail(name, last, plc=link.where, timeout_s=timeout)
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
        return _fail(name, "; ".join(problems), **values)
    speed = values["belt_speed_mm_s"]
    return _pass(name, f"connected in {connect_ms:g} ms, map version {link.map.version}, PLC program"
                       f" running, belt at {values['belt_mm']} mm, {speed} mm/s", **values)


def _r(v: Any, nd: int = 1) -> Any:
    return round(float(v), nd) if isinstance(v, (int, float)) and not isinstance(v, bool) else v


# -- d) heartbeat -----------------------------------------------------------------------------


@dataclass
class _Beat:
    """HEARTBEAT_LOST as read by the link while it beat."""

    samples: int
    lost_samples: int  # readings with the flag set after it first cleared
    cleared_after_ms: float | None  # from the start of the observation to the first clear reading
    sim_lost_events: int | None  # soft-PLC heartbeat_lost events during the observation


def observe_heartbeat(t: _Session) -> _Beat:
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
    return _Beat(samples, lost, cleared, sim)


def check_heartbeat(t: _Session, beat: _Beat | None) -> CheckResult:
    """The observation while the link ran, then the PLC's watchdog: beats stop -> HEARTBEAT_LOST set."""
    from pymodbus.exceptions import ModbusException

    name = "plc_heartbeat"
    if beat is None:
        return _fail(name, NOT_REACHABLE)
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
        return _fail(name, f"watchdog probe: {e}", **values)
    timeout_ms = values["heartbeat_timeout_ms"]
    if values["lost_after_ms"] is None:
        problems.append(f"HEARTBEAT_LOST not set {timeout_ms + 1000} ms after the last beat: the PLC does not"
                        " watch the inspector's heartbeat")
    if not values["cleared_when_stopped"]:
        problems.append("HEARTBEAT_LOST stayed set after INSPECTOR_STATE = STOPPED")
    if t.soft_plc is not None and values.get("sim_lost_events_probe") != 1:
        problems.append(f"the soft-PLC logged {values.get('sim_lost_events_probe')} heartbeat_lost events for one stop")
    if problems:
        return _fail(name, "; ".join(problems), **values)
    return _pass(name, f"clear while beating ({beat.samples} readings); set {values['lost_after_ms']:g} ms after"
                 f" the last beat (timeout {timeout_ms} ms); clear again after STOPPED", **values)


def _watchdog_probe(t: _Session) -> dict[str, Any]:
    """Beat once with state RUNNING, stop beating, time until the PLC sets HEARTBEAT_LOST; then STOPPED."""
    from pymodbus.client import ModbusTcpClient

    from .mark import InspectorState
    from .plc.link import UNIT_KW
    from .plc.regmap import default_map

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


def check_round_trip(t: _Session) -> CheckResult:
    """Uninspected start/end pairs 1 m + the actuator distance ahead of the belt: submit -> acknowledged."""
    from .mark import Action, Mark

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
                return _fail(name, f"mark seq {m.seq} not acknowledged within {limit_s:g} s:"
                             f" {link.stats().get('last_error') or 'the PLC does not take marks from the ring'}",
                             acked=len(rtts), round_trip_ms=[round(v, 1) for v in rtts])
            time.sleep(0.001)
        rtts.append((time.perf_counter() - t0) * 1000)
    speed = t.station.belt.speed_m_per_min * 1000.0 / 60.0
    budget = t.station.belt.margin_mm / speed * 1000.0
    values = {"marks": len(rtts), "p50_ms": round(statistics.median(rtts), 1), "max_ms": round(max(rtts), 1),
              "budget_ms": round(budget, 1), "heartbeat_ms": link.cfg.heartbeat_ms}
    if values["max_ms"] > budget:
        return _fail(name, f"slowest acknowledgement {values['max_ms']:g} ms exceeds the belt's safety margin"
                     f" ({t.station.belt.margin_mm:g} mm = {budget:.0f} ms): marks planned near their deadline"
                     " would be late; check the network and the PLC scan time", **values)
    return _pass(name, f"{len(rtts)} marks acknowledged: p50 {values['p50_ms']:g} ms, max {values['max_ms']:g} ms"
                 f" (margin {budget:.0f} ms)", **values)


# -- a) camera, b) encoder --------------------------------------------------------------------


def encoder_triggered(st: Station) -> bool:
    """Lines come from the belt encoder: a LineStart trigger that is on, an encoder module, or no rate node."""
    g = st.source.genicam
    line_trigger = any(tr.selector == "LineStart" and tr.mode == "On" for tr in g.trigger)
    return line_trigger or g.encoder is not None or g.rate_node == "none"


def check_camera(t: _Session, seconds: float) -> CheckResult:
    """Stream ``seconds`` from the station's camera; line rate, lost lines, frame-id gaps, reconnects."""
    from .camera import CameraError, GenICamSource

    name = "camera_stream"
    st, link = t.station, t.link
    if st.source.kind != "genicam":
        return _skip(name, f"source.kind is {st.source.kind!r}: no camera; give --cti PATH or a genicam station")
    stop = threading.Event()
    cutoff = threading.Timer(seconds + _CAMERA_GRACE_S, stop.set)
    cutoff.daemon = True
    first: tuple[float, int, float | None] | None = None
    last = first
    try:
        with GenICamSource(st, stop=stop) as src:
            cutoff.start()
            for b in src:
                point = (time.monotonic(), b.end_line, link.belt_mm() if link is not None else None)
                first = first or point
                last = point
                if point[0] - first[0] >= seconds:
                    break
            stats, rate_set, device = src.stats.as_dict(), src.line_rate_hz, src.device.as_dict()
    except CameraError as e:
        return _fail(name, str(e))
    finally:
        cutoff.cancel()
    values: dict[str, Any] = {"device": device, **stats, "line_rate_hz_set": rate_set,
                              "line_rate_hz_configured": st.camera.line_rate_hz}
    if first is None or last is None or last[0] - first[0] <= 0:
        return _fail(name, f"fewer than two buffers in {seconds + _CAMERA_GRACE_S:g} s: the camera does not stream"
                     " (triggers without pulses? belt stopped?)", **values)
    t.stream = _Stream(first, last)
    measured = (last[1] - first[1]) / (last[0] - first[0])
    err = measured / rate_set - 1.0
    values.update(seconds=round(last[0] - first[0], 2), lines_per_s=round(measured, 1), rate_error_pct=round(100 * err, 2))
    return _camera_verdict(st, values, err)


def _camera_verdict(st: Station, v: dict[str, Any], err: float) -> CheckResult:
    name = "camera_stream"
    bad = [f"{k.replace('_', ' ')} {v[k]}" for k in ("lost_lines", "frame_id_gaps", "incomplete", "ring_full_drops",
                                                      "reconnects") if v.get(k)]
    encoder = encoder_triggered(st)
    if not encoder and abs(err) > RATE_TOLERANCE:
        bad.append(f"{v['lines_per_s']:,.0f} lines/s measured, {v['line_rate_hz_set']:,.0f} set"
                   f" ({v['rate_error_pct']:+.1f} %, tolerance {100 * RATE_TOLERANCE:g} %)")
    text = f"{v['lines']:,} lines in {v['seconds']:g} s = {v['lines_per_s']:,.0f} lines/s"
    if bad:
        return _fail(name, f"{text}: " + "; ".join(bad), **v)
    if encoder:
        return _pass(name, f"{text} (encoder-triggered: the rate follows the belt, see encoder); no lost lines,"
                     " no frame gaps", **v)
    return _pass(name, f"{text} ({v['line_rate_hz_set']:,.0f} set, {v['rate_error_pct']:+.1f} %); no lost lines,"
                 " no frame gaps", **v)


def check_encoder(t: _Session) -> CheckResult:
    """Encoder-triggered lines: belt travel per camera line (PLC encoder) against camera.mm_per_line."""
    name = "encoder"
    st, link, stream = t.station, t.link, t.stream
    if not encoder_triggered(st):
        return _skip(name, "lines are free-running (no LineStart trigger on, no [source.genicam.encoder],"
                     f" rate_node = {st.source.genicam.rate_node!r}): nothing to compare with the belt")
    if t.plc is None:
        return _skip(name, "no PLC configured: the belt encoder position comes from the PLC (give --plc)")
    if link is None or stream is None:
        return _fail(name, "not run: " + ("the PLC is not reachable" if link is None else "the camera did not stream"))
    (_, l0, b0), (_, l1, b1) = stream.first, stream.last
    if b0 is None or b1 is None or l1 <= l0:
        return _fail(name, "no belt position or no lines to compare", lines=l1 - l0)
    belt = b1 - b0
    if abs(belt) < 1.0:
        return _fail(name, "the belt did not move during the camera check: run again with the belt at production"
                     " speed", lines=l1 - l0, belt_mm=round(belt, 1))
    per_line = belt / (l1 - l0)
    err = per_line / st.camera.mm_per_line - 1.0
    values = {"lines": l1 - l0, "belt_mm": round(belt, 1), "mm_per_line_measured": round(per_line, 5),
              "mm_per_line_configured": st.camera.mm_per_line, "error_pct": round(100 * err, 2)}
    if abs(err) > ENCODER_TOLERANCE:
        return _fail(name, f"{per_line:.4f} mm of belt per line, camera.mm_per_line = {st.camera.mm_per_line:g}"
                     f" ({100 * err:+.1f} %, tolerance {100 * ENCODER_TOLERANCE:g} %): check EncoderDivider,"
                     " the encoder resolution and camera.mm_per_line", **values)
    return _pass(name, f"{per_line:.4f} mm of belt per line ({100 * err:+.2f} % from camera.mm_per_line)", **values)


# -- f) marking accuracy ----------------------------------------------------------------------


def check_marking(t: _Session, opts: HilOptions, work: Path) -> CheckResult:
    """Soft-PLC: a synthetic hide replayed at its belt speed; otherwise the physical test hide of --truth."""
    name = "marking_accuracy"
    if t.plc is None:
        return _skip(name, "no PLC configured: nothing fires marks")
    if not t.plc_ok:
        return _fail(name, NOT_REACHABLE)
    try:
        if t.test_hide is not None:
            return _test_hide_run(t, t.test_hide, opts.hide_timeout_s, work)
        if t.soft_plc is not None:
            return _synthetic_run(t, work)
    except InputError as e:  # the test geometry, a camera that fails, a results folder
        return _fail(name, str(e))
    return _skip(name, "a real PLC fires real marks: run a physical test hide with known defects and give its truth"
                 " file with --truth (hil/README.md); not run")


def _synthetic_station(t: _Session, outbox: Path) -> Station:
    """A small fast geometry (1024 px, 1.5 mm per px and line, baseline model) at the soft-PLC's belt speed.

    ``outbox``: the one the earlier checks used, so that mark sequences go on where they ended.
    """
    st, mm = t.station, 1.5
    assert t.soft_plc is not None
    speed = t.soft_plc.speed_mm_s
    return parse_station({
        "station": {"name": "hil-marking"},
        "camera": {"width": 1024, "channels": 3, "line_rate_hz": speed / mm, "mm_per_px": mm, "mm_per_line": mm},
        "tiling": {"tile": 512, "overlap": 64, "ring_slots": 3},
        "hide_detection": {"subsample": 4, "min_hide_lines": 32, "gap_lines": 32, "edge_margin_mm": 0},
        "model": {"path": "builtin:baseline", "providers": ["CPUExecutionProvider"]},
        "belt": {"speed_m_per_min": speed * 60.0 / 1000.0, "marker_distance_mm": st.belt.marker_distance_mm,
                 "processing_latency_s": 0.5, "margin_mm": 100},
        "plc": {"unit_id": st.plc.unit_id, "outbox": str(outbox)},
        "marking": {"reject_grades": []},  # rejects fire at the reject gate, far behind: not what is measured
        "outputs": {"hide_maps": False, "sqlite": False},
    })


def _synthetic_run(t: _Session, work: Path) -> CheckResult:
    """Replay a one-hide synthetic recording with --realtime to the soft-PLC; evaluate where it fired."""
    from .replay import replay
    from .synth import SynthConfig, write_recording

    st = _synthetic_station(t, work / OUTBOX)
    rec = work / "test-hide.raw"
    write_recording(rec, SynthConfig(hides=1, seed=5, width=1024, mm_per_px=1.5, mm_per_line=1.5,
                                     line_rate_hz=st.camera.line_rate_hz, gap_lines=(150, 250)))
    run_dir = work / "marking"
    assert t.plc is not None
    since = time.time()
    _, summary = replay(rec, st, run_dir, realtime=True, plc=f"{t.plc[0]}:{t.plc[1]}")
    _keep_fired(t, run_dir, since)
    return _marking_verdict(run_dir, Path(f"{rec}.gt.json"), summary, fired_log=True)


def _keep_fired(t: _Session, run_dir: Path, since: float) -> None:
    """Wait until the soft-PLC fired (or missed) every mark the run planned; its log of the run -> run_dir/plc.jsonl."""
    from .runfiles import MARKS_LOG, PLC_LOG

    assert t.soft_plc is not None
    planned = [r for r in map(json.loads, (run_dir / MARKS_LOG).read_text().splitlines()) if r.get("event") == "planned"]
    want = {int(r["seq"]) for r in planned}
    travel = max((r["deadline_belt_mm"] - r["belt_mm"] for r in planned), default=0.0)
    end = time.monotonic() + travel / max(t.soft_plc.speed_mm_s, 1.0) + 10.0
    while time.monotonic() < end:
        done = {int(e["seq"]) for e in t.soft_plc.events(since=since) if e.get("event") in ("fired", "missed")}
        if want <= done:
            break
        time.sleep(0.1)
    events = t.soft_plc.events(since=since)
    (run_dir / PLC_LOG).write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")


def _marking_verdict(run_dir: Path, truth: Path, summary: dict[str, Any], *, fired_log: bool) -> CheckResult:
    """Pass: the detected test defects carry ink marks, none late or missed; with a PLC log, fired where commanded.

    Detection recall is reported, not judged: it measures the model, not the station's marking chain.
    """
    from .evaluation.runs import evaluate

    name = "marking_accuracy"
    rep = evaluate(run_dir, truth, tol_mm=5.0, mark_tol_mm=MARK_TOL_MM)
    mk = rep["marking"] or {}
    pe, pl = mk.get("position_error_mm", {}), mk.get("placement_error_mm", {})
    values = {
        "hides": summary.get("hides"), "gt_defects": mk.get("gt_defects_inspected"),
        "gt_defects_detected": rep["overall"]["found"], "detection_recall": rep["overall"]["recall"],
        "ink_marks": mk.get("ink_marks"),
        "gt_defects_marked": mk.get("gt_defects_marked"), "marked_fraction": mk.get("marked_fraction"),
        "position_error_mm_p50": pe.get("p50"), "position_error_mm_max": pe.get("max"),
        "placement_error_mm_p50": pl.get("p50"), "placement_error_mm_max": pl.get("max"),
        "late": mk.get("late_planned"), "missed_by_plc": mk.get("missed_by_plc"),
        "ink_marks_not_fired": mk.get("ink_marks_not_fired"), "source": mk.get("source"), "run_dir": str(run_dir),
    }
    problems = []
    if not values["ink_marks"]:
        problems.append("no ink marks")
    found, marked = values["gt_defects_detected"] or 0, values["gt_defects_marked"] or 0
    if not found or marked < MIN_MARKED_OF_FOUND * found:
        problems.append(f"{marked} of the {found} detected test defects marked (at least"
                        f" {100 * MIN_MARKED_OF_FOUND:g} % within {MARK_TOL_MM:g} mm)")
    for key in ("late", "missed_by_plc", "ink_marks_not_fired"):
        if values[key]:
            problems.append(f"{key.replace('_', ' ')}: {values[key]}")
    if fired_log and (pl.get("max") is None or pl["max"] > PLACEMENT_TOL_MM):
        problems.append(f"placement error (fired - commanded) max {pl.get('max')} mm > {PLACEMENT_TOL_MM:g} mm")
    text = (f"{marked} of {found} detected test defects marked ({values['gt_defects']} in the truth), mark"
            f" position error p50 {pe.get('p50')} mm; placement p50 {pl.get('p50')} / max {pl.get('max')} mm;"
            f" late {values['late']}, missed {values['missed_by_plc']}")
    if problems:
        return _fail(name, "; ".join(problems) + f" ({text})", **values)
    return _pass(name, text, **values)


def _test_hide_run(t: _Session, spec: dict[str, Any], timeout_s: float, work: Path) -> CheckResult:
    """Live run until the physical test hide has passed; its truth (hide frame) aligned with the hide found."""
    from .live import run_live

    stop = threading.Event()
    found: list[Any] = []

    def on_hide(h: Any) -> None:
        if h.area_m2 >= spec["min_area_m2"] and not found:
            found.append(h)
            stop.set()

    run_dir = work / "test-hide"
    assert t.plc is not None
    since = time.time()
    _, summary = run_live(t.station, run_dir, seconds=timeout_s, stop=stop, hide_callbacks=[on_hide],
                          plc=f"{t.plc[0]}:{t.plc[1]}")
    if not found:
        return _fail("marking_accuracy", f"no hide of at least {spec['min_area_m2']:g} m² within {timeout_s:g} s:"
                     " put the test hide on the running belt after the start")
    if t.soft_plc is not None:
        _keep_fired(t, run_dir, since)
    truth = _belt_truth(spec, found[0], t.station, run_dir / "test-hide.gt.json")
    return _marking_verdict(run_dir, truth, summary, fired_log=t.soft_plc is not None)


def _load_test_hide(path: Path) -> dict[str, Any]:
    """The truth of a physical test hide (hil/README.md): defects in the hide frame, mm."""
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
        defects = [{"class": str(d["class"]), "bbox_mm": [float(v) for v in d["bbox_mm"]]} for d in spec["defects"]]
        if not defects or any(len(d["bbox_mm"]) != 4 for d in defects):
            raise ValueError("defects: give at least one, each with bbox_mm = [x0, y0, x1, y1]")
        return {"defects": defects, "min_area_m2": float(spec.get("min_area_m2", 0.1)), "name": spec.get("name", "")}
    except FileNotFoundError:
        raise InputError("test hide truth file not found", path=path, where="--truth") from None
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"not a test hide truth file: {e}", path=path, where="--truth",
                         hint='{"defects": [{"class": "hole", "bbox_mm": [x0, y0, x1, y1]}], "min_area_m2": 0.5}'
                         ) from None


def _belt_truth(spec: dict[str, Any], hide: Any, st: Station, out: Path) -> Path:
    """Write the test hide's truth in the run's belt frame (the .gt.json schema): hide frame + the hide's corner."""
    ax, ay = (float(v) for v in hide.outline_belt_mm.min(axis=0)) if len(hide.outline_belt_mm) else hide.origin_belt_mm
    c = st.camera
    defects = []
    for i, d in enumerate(spec["defects"], 1):
        x0, y0, x1, y1 = d["bbox_mm"]
        b = [x0 + ax, y0 + ay, x1 + ax, y1 + ay]
        defects.append({"id": i, "class": d["class"], "hide_id": hide.hide_id, "size_mm": max(x1 - x0, y1 - y0),
                        "bbox_belt_mm": b, "bbox_px": [b[0] / c.mm_per_px, b[1] / c.mm_per_line,
                                                       b[2] / c.mm_per_px, b[3] / c.mm_per_line]})
    truth = {"version": 1, "recording": spec["name"] or "test hide", "mm_per_px": c.mm_per_px,
             "mm_per_line": c.mm_per_line, "hides": [{"hide_id": hide.hide_id, "first_line": hide.first_line,
                                                     "last_line": hide.last_line, "area_m2": hide.area_m2,
                                                     "defects": defects}]}
    out.write_text(json.dumps(truth, indent=1))
    return out


# -- report -----------------------------------------------------------------------------------


def format_report(report: dict[str, Any]) -> str:
    """The readable summary: one row per check with its result and message."""
    head = [f"edge-inspector hil: station {report['station']} ({report['mode']}), camera {report['camera']},"
            f" PLC {report['plc']}"]
    w = max(len(n) for n in CHECKS)
    rows = [f"{c['name']:<{w}}  {c['status'].upper():<4}  {c['message']}" for c in report["checks"]]
    n_fail = sum(c["status"] == "fail" for c in report["checks"])
    verdict = "PASSED" if report["passed"] else f"FAILED ({n_fail} check{'s' if n_fail > 1 else ''})"
    return "\n".join(head + rows + [f"{verdict} in {report['seconds']:g} s"])


def exit_code(report: dict[str, Any]) -> int:
    """0 when every check passed or was skipped with a reason, 1 when any failed."""
    return 0 if report["passed"] else 1
