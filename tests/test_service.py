"""The systemd service (edge_inspector/service.py, systemd/edge-inspector@.service, docs/service.md).

Real parts: systemd-analyze on the unit, `edge-inspector run` on the GenTL simulator with a real
AF_UNIX notify socket, the real pipeline with a model that can be held (a stuck inference stage).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import structlog
from conftest import SMALL_STATION

from edge_inspector.config import load_station
from edge_inspector.detections import Detections
from edge_inspector.lines import LineBlock
from edge_inspector.pipeline import run_pipeline
from edge_inspector.probe import Probe
from edge_inspector.service import Notifier, RunThread, Supervisor, watchdog_ping_s

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "edge-inspector@.service"
VIKY = ROOT / "configs" / "stations" / "viky-sim.toml"
EI = [sys.executable, "-m", "edge_inspector.cli"]


# -- the unit file -----------------------------------------------------------------------------

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze is not installed (package systemd)")


@pytest.fixture
def unit_dir(tmp_path) -> Path:
    """The unit with ExecStart on this venv's edge-inspector and the station on a real file."""
    station = tmp_path / "line-1.toml"
    station.write_text(VIKY.read_text())
    exe = Path(sys.executable).parent / "edge-inspector"
    assert exe.is_file(), "the project is not installed in this environment"
    text = UNIT.read_text()
    assert "/opt/edge-inspector/.venv/bin/edge-inspector " in text and "/etc/edge-inspector/%i.toml" in text
    text = text.replace("/opt/edge-inspector/.venv/bin/edge-inspector", str(exe))
    text = text.replace("/etc/edge-inspector/%i.toml", str(station))
    d = tmp_path / "units"
    d.mkdir()
    (d / "edge-inspector@.service").write_text(text)
    return d


@needs_analyze
def test_systemd_analyze_verify_accepts_the_unit_without_warnings(unit_dir):
    r = subprocess.run(["systemd-analyze", "verify", str(unit_dir / "edge-inspector@line-1.service")],
                       capture_output=True, text=True, timeout=60)
    about_unit = [line for line in (r.stdout + r.stderr).splitlines() if "edge-inspector" in line]
    assert r.returncode == 0 and about_unit == [], r.stdout + r.stderr


@needs_analyze
def test_security_exposure_is_below_3(unit_dir):
    r = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager",
                        str(unit_dir / "edge-inspector@line-1.service")], capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for edge-inspector@line-1\.service: (\d+\.\d+)", r.stdout)
    assert m, r.stdout + r.stderr
    assert float(m.group(1)) < 3.0, r.stdout
    documented = re.search(r"exposure level.*?(\d+\.\d+)", (ROOT / "docs" / "service.md").read_text())
    assert documented and documented.group(1) == m.group(1), "docs/service.md records another score"
    # what the station needs stays allowed
    assert re.search(r"^MemoryDenyWriteExecute=yes", UNIT.read_text(), re.M) is None  # numba's JIT
    assert "char-nvidia*:rw" in r.stdout and "char-usb_device:rw" in r.stdout


# -- sd_notify ---------------------------------------------------------------------------------


class NotifySocket:
    """What systemd does: a datagram socket that collects (time, message) pairs in a thread."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._halt.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            self.messages.append((time.monotonic(), data.decode()))

    def fields(self, key: str, since: float = 0.0) -> list[tuple[float, str]]:
        """(time, value) of every ``key=value`` line received after ``since``."""
        return [(t, line.split("=", 1)[1]) for t, m in list(self.messages) if t >= since
                for line in m.split("\n") if line.startswith(key + "=")]

    def wait_for(self, key: str, timeout: float = 60.0, value: str | None = None) -> float:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            hits = [t for t, v in self.fields(key) if value is None or v == value]
            if hits:
                return hits[0]
            time.sleep(0.05)
        raise AssertionError(f"no {key}= within {timeout} s; got {self.messages}")

    def close(self) -> None:
        self._halt.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path) -> Iterator[tuple[str, NotifySocket]]:
    path = str(tmp_path / "notify.sock")
    s = NotifySocket(path)
    yield path, s
    s.close()


def _viky_station(tmp_path: Path, events: str) -> Path:
    st = tmp_path / "viky.toml"
    st.write_text(VIKY.read_text() + f"\n[events]\n{events}\n")
    return st


def test_run_under_a_notify_socket_is_ready_pings_reports_and_drains_on_sigterm(tmp_path, notify_socket):
    path, sd = notify_socket
    out = tmp_path / "run"
    env = {**os.environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": ""}
    station = _viky_station(tmp_path, 'enabled = true\nendpoint = "tcp://127.0.0.1:*"')
    proc = subprocess.Popen([*EI, "--log-level", "info", "run", "--station", str(station), "--out", str(out)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        t_ready = sd.wait_for("READY", value="1")
        sd.wait_for("STATUS", timeout=10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (len(sd.fields("WATCHDOG", since=t_ready)) < 3
                                               or not any("lines/s" in v and not v.startswith("running: -")
                                                          for _, v in sd.fields("STATUS", since=t_ready))):
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert sd.fields("EXTEND_TIMEOUT_USEC") and sd.fields("EXTEND_TIMEOUT_USEC")[0][0] < t_ready
    pings = [t for t, v in sd.fields("WATCHDOG") if v == "1"]
    assert len(pings) >= 3 and min(pings) >= t_ready  # pinging starts once ready
    running = [v for _, v in sd.fields("STATUS", since=t_ready) if v.startswith("running: ")]
    assert any(re.search(r"running: [\d,]+ lines/s, [\d.]+ tiles/s, queues tiles \d+ detections \d+", v)
               for v in running), running
    t_stopping = sd.wait_for("STOPPING", value="1", timeout=1)
    final = sd.fields("STATUS", since=t_stopping)[-1][1]
    assert final.startswith("stopped: ") and str(out) in final
    summary = json.loads((out / "summary.json").read_text())  # results written, not lost
    assert summary["lines"] > 0 and summary["hides"] > 0
    assert f"{summary['hides']} hides" in final
    assert "tiles/s" in stdout  # the summary table for a person, as before
    log_lines = [json.loads(x) for x in stdout.splitlines() if x.startswith("{")]  # stdout is no terminal
    assert any(e["event"] == "ready" and e["notify"] is True for e in log_lines)
    assert any(e["event"] == "events publishing" for e in log_lines)  # [events] on: ZeroMQ + telemetry
    assert all(e["station"] == "viky-sim" for e in log_lines)
    assert [e for e in log_lines if e["level"] == "error"] == []


def test_run_without_notify_socket_works_and_logs_its_summary_as_json(tmp_path):
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    station = _viky_station(tmp_path, "enabled = false")
    r = subprocess.run([*EI, "--log-json", "--log-level", "info", "run", "--station", str(station), "--seconds",
                        "1.5", "--out", str(out)], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    events = [json.loads(x) for x in r.stdout.splitlines()]  # every stdout line is JSON
    by_name = {e["event"]: e for e in events}
    assert by_name["ready"]["notify"] is False and by_name["ready"]["watchdog_ping_s"] is None
    assert by_name["camera streaming"]["station"] == "viky-sim"  # logged by the camera's thread
    summary = json.loads((out / "summary.json").read_text())
    assert by_name["run summary"]["hides"] == summary["hides"] > 0
    assert all(e["station"] == "viky-sim" for e in events)


def test_notify_to_an_abstract_socket_and_the_watchdog_environment(tmp_path):
    name = f"@edge-inspector-test-{os.getpid()}"
    sd = NotifySocket(name)
    try:
        n = Notifier(name)
        assert n.notify("READY=1", "STATUS=ok")
        sd.wait_for("STATUS", timeout=5, value="ok")
        n.close()
    finally:
        sd.close()
    assert not Notifier(None).notify("READY=1")
    assert watchdog_ping_s({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_ping_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 15.0
    assert watchdog_ping_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None  # for another process
    assert watchdog_ping_s({}) is None


# -- a stuck stage -----------------------------------------------------------------------------


class HeldModel:
    """A TileModel whose ``infer`` waits while ``go`` is clear: a stand-in for a hung inference stage."""

    class_names = ["dark", "bright"]
    provider = "test"

    def __init__(self) -> None:
        self.go = threading.Event()
        self.go.set()

    def infer(self, tiles: np.ndarray) -> list[Detections]:
        self.go.wait()
        return [Detections.empty() for _ in range(tiles.shape[0])]


def _belt(stop: threading.Event, width: int = 1024, n: int = 64) -> Iterator[LineBlock]:
    """Empty belt lines, 64 at a time, every 10 ms, until ``stop``."""
    lines = np.full((n, width, 3), 255, np.uint8)
    first = 0
    while not stop.is_set():
        yield LineBlock(lines, first, timestamp_ns=time.monotonic_ns())
        first += n
        time.sleep(0.01)


@pytest.fixture
def small_station(tmp_path):
    p = tmp_path / "small.toml"
    p.write_text(SMALL_STATION)
    return load_station(p)


def _pipeline(station, model: HeldModel, stop: threading.Event, probe: Probe) -> RunThread:
    return RunThread(lambda: run_pipeline(_belt(stop), station, model, lambda h: None, live=True, probe=probe))


def _until(cond, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def test_a_stuck_inference_stops_the_watchdog_pings_and_is_named(small_station, notify_socket):
    path, sd = notify_socket
    model, stop, probe = HeldModel(), threading.Event(), Probe()
    run = _pipeline(small_station, model, stop, probe)
    sup = Supervisor(Notifier(path), probe, stall_s=1.0, ping_s=0.1)
    with structlog.testing.capture_logs() as captured:
        try:
            sup.start()
            run.start()
            sup.ready()
            _until(lambda: probe.strips_inferred >= 3)
            time.sleep(1.5)  # progressing: pings
            t_held = time.monotonic()
            model.go.clear()
            _until(lambda: sup.stalled is not None)
            t_stalled = time.monotonic()
            time.sleep(1.0)  # stuck: no pings
            t_release = time.monotonic()
            model.go.set()
            _until(lambda: sup.stalled is None)
            time.sleep(0.5)
        finally:
            model.go.set()
            stop.set()
            run.join(20)
            sup.close("stopped")
    pings = [t for t, v in sd.fields("WATCHDOG") if v == "1"]
    assert sum(1 for t in pings if t < t_held) >= 5
    assert t_stalled - t_held >= 1.0 - 0.2  # stall_s after the last strip out (at most a look before t_held)
    assert not [t for t in pings if t_stalled + 0.05 < t < t_release]
    assert [t for t in pings if t > t_release]  # pinging again once the model answers
    stalled = [e for e in captured if e["event"] == "pipeline stalled"]
    assert len(stalled) == 1 and stalled[0]["stage"] == "inference" and stalled[0]["log_level"] == "error"
    assert stalled[0]["pending"] > 0
    assert any(v.startswith("STALLED in inference") for _, v in sd.fields("STATUS"))
    assert any(e["event"] == "pipeline progressing again" for e in captured)
    assert not run.is_alive() and run.result().lines > 0


def test_the_drain_is_bounded_and_a_clean_one_returns_the_result(small_station):
    probe = Probe()
    model, stop = HeldModel(), threading.Event()
    run = _pipeline(small_station, model, stop, probe)
    stops: list[str] = []
    try:
        run.start()
        _until(lambda: probe.strips_inferred >= 1)
        model.go.clear()  # the model hangs: the drain cannot finish
        _until(lambda: probe.progress()[2] > 0)
        stop.set()
        assert run.wait(stop, 0.5, on_stop=lambda: stops.append("stop")) is False
        assert run.is_alive() and stops == ["stop"]
    finally:
        model.go.set()
        run.join(20)
    assert run.result().lines > 0

    stop2 = threading.Event()
    run2 = _pipeline(small_station, HeldModel(), stop2, Probe())
    run2.start()
    threading.Timer(0.5, stop2.set).start()
    assert run2.wait(stop2, 20.0, on_stop=lambda: stops.append("stop2")) is True
    assert stops == ["stop", "stop2"] and run2.result().strips > 0
