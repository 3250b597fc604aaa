"""A shared inference server (docs/serving.md): a real Triton server (``edge-inspector serve-model``,
pytriton, CPU) on loopback serving builtin:baseline to replays of the small station.

Skipped, with the reason, where the serve extra is not installed or the server cannot start here.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import SMALL_STATION, free_port, wait_until
from edge_inspector.cli import main
from edge_inspector.synth import SynthConfig, write_recording

pytest.importorskip("pytriton", reason="the serve extra (nvidia-pytriton) is not installed")
pytest.importorskip("tritonclient.grpc", reason="the serve extra (tritonclient[grpc]) is not installed")

MODEL = "builtin:baseline"
START_S = 180.0  # the Triton server's start (a cold one on 2 busy cores took ~30 s)


class Server:
    """``edge-inspector serve-model`` in a subprocess; its output in a file."""

    def __init__(self, port: int, log: Path) -> None:
        self.port, self.log = port, log
        self.url = f"grpc://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_inspector.cli", "serve-model", "--model", MODEL, "--port", str(port)],
            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)  # its own group: see kill

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            return True  # ended: wait_ready says why
        return "SIGTERM stops" in self.log.read_text(errors="replace")

    def wait_ready(self) -> None:
        wait_until(self.ready, START_S, f"serve-model on port {self.port}")
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace").strip().splitlines()[-5:]
            pytest.skip(f"the Triton server cannot start here (exit {self.proc.returncode}): " + " | ".join(tail))

    def kill(self) -> None:
        """SIGKILL to the server's process group (the command, tritonserver, its Python backend
        stub): the server dies as in a crash."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        return self.proc.returncode


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    d = tmp_path_factory.mktemp("serve")
    s = Server(free_port(), d / "serve.log")
    try:
        s.wait_ready()
        yield s
    finally:
        code = s.stop()
        assert code in (0, None, -signal.SIGTERM), s.log.read_text()[-2000:]


@pytest.fixture(scope="module")
def hides(tmp_path_factory) -> Path:
    """Four synthetic hides on the small station's 1024 px camera (9059 lines)."""
    rec = tmp_path_factory.mktemp("srec") / "hides.raw"
    write_recording(rec, SynthConfig(hides=4, seed=11, width=1024, mm_per_px=1.5, mm_per_line=1.5,
                                     line_rate_hz=20000))
    return rec


def _station(d: Path, name: str, url: str | None, extra: str = "", rate: int = 20000) -> Path:
    text = SMALL_STATION.replace("line_rate_hz = 20000", f"line_rate_hz = {rate}")
    if url is not None:
        text = text.replace('providers = ["CPUExecutionProvider"]',
                            f'providers = ["CPUExecutionProvider"]\nserver = "{url}"\n{extra}')
    p = d / f"{name}.toml"
    p.write_text(text)
    return p


def _replay(rec: Path, station: Path, out: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "edge_inspector.cli", "replay", str(rec), "--station",
                             str(station), "--out", str(out), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _defects(out: Path) -> list[tuple]:
    """Every defect of a run: hide, class, bbox in belt mm (0.1 mm), score (0.01)."""
    with sqlite3.connect(out / "results.sqlite") as db:
        cols = [r[1] for r in db.execute("PRAGMA table_info(defects)")]
        rows = db.execute("SELECT * FROM defects").fetchall()
    recs = [dict(zip(cols, r)) for r in rows]
    keep = [c for c in cols if c not in ("id", "run_id", "rowid", "t", "time", "created")]
    return sorted(tuple(round(v, 1) if isinstance(v, float) else v for v in (r[c] for c in keep)) for r in recs)


def test_two_replays_sharing_a_server_find_what_local_inference_finds(server, hides, tmp_path, capsys):
    local = tmp_path / "local"
    assert main(["replay", str(hides), "--station", str(_station(tmp_path, "local", None)), "--out", str(local)]) == 0
    capsys.readouterr()
    st = _station(tmp_path, "remote", server.url)
    runs = [_replay(hides, st, tmp_path / f"station{i}") for i in (1, 2)]  # at once: batched together
    for p in runs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
        assert "model server" in out and server.url in out
    want = _defects(local)
    assert want, "the local replay found no defect: the comparison would be empty"
    loc = json.loads((local / "summary.json").read_text())
    for i in (1, 2):
        s = json.loads((tmp_path / f"station{i}" / "summary.json").read_text())
        assert s["provider"] == f"Triton:{server.url}"
        assert s["model_server"]["shared_memory"] is True and s["model_server"]["failed_calls"] == 0
        assert s["strips_model_failed"] == 0 and s["strips"] == loc["strips"]
        assert s["defects_by_class"] == loc["defects_by_class"]
        assert _defects(tmp_path / f"station{i}") == want


def test_unreachable_server_exits_2_naming_the_url(hides, tmp_path, capsys):
    url = f"grpc://127.0.0.1:{free_port()}"
    st = _station(tmp_path, "nowhere", url)
    assert main(["replay", str(hides), "--station", str(st), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"inference server {url} not reachable" in err[0] and "model.server" in err[0]


def test_a_station_with_another_model_file_is_refused(server, hides, tmp_path, capsys):
    st = _station(tmp_path, "other", server.url)
    st.write_text(st.read_text().replace('path = "builtin:baseline"', 'path = "builtin:default"'))
    assert main(["replay", str(hides), "--station", str(st), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not serve this model file" in err[0] and server.url in err[0]


def test_bad_server_url_is_a_config_error_naming_the_key(tmp_path, hides, capsys):
    st = _station(tmp_path, "bad", "http://127.0.0.1:8001")
    assert main(["replay", str(hides), "--station", str(st), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "model" in err and "is not grpc://host:port" in err


def _first_hide_written(out: Path, proc: subprocess.Popen[str]) -> bool:
    return proc.poll() is not None or any((out / "hides").glob("hide-*.json"))


def test_server_killed_mid_run_live_strips_uninspected_alarm_clean_finish(hides, tmp_path):
    """Live policy (replay --realtime at 1000 lines/s, 9 s): the strips after the kill are uninspected,
    the alarm is logged, reconnect attempts are counted and the run ends normally."""
    s = Server(free_port(), tmp_path / "serve.log")
    try:
        s.wait_ready()
        out = tmp_path / "live"
        p = _replay(hides, _station(tmp_path, "live", s.url, rate=1000), out, "--realtime")
        wait_until(lambda: _first_hide_written(out, p), 300, "the first hide of the run")
        assert p.poll() is None, "the run ended before the server could be killed"
        s.kill()
        stdout, err = p.communicate(timeout=600)
    finally:
        s.stop()
    assert p.returncode == 0, err[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["strips_model_failed"] > 0
    assert summary["model_server"]["failed_calls"] > 0 and summary["model_server"]["reconnect_attempts"] > 0
    assert "model_unavailable" in err and "alarm" in err
    assert f"{summary['strips_model_failed']} strips uninspected" in stdout
    unins = [u for hj in sorted((out / "hides").glob("hide-*.json")) for u in json.loads(hj.read_text())["uninspected"]]
    # "dropped" as well when the machine is too slow for the line (a loaded CI runner): still reported
    reasons = {u["reason"] for u in unins}
    assert "model" in reasons and reasons <= {"model", "dropped"}, reasons
    assert summary["hides"] == 4  # presence comes from the line samples: every hide is still reported


def test_replay_waits_for_a_restarted_server_and_loses_nothing(server, hides, tmp_path, capsys):
    """Replay policy: the server is killed as soon as the replay has connected (its warm-up and strips
    still to come) and started again on the same port; the replay waits ([model] server_wait_s),
    reconnects, and finds what local inference finds."""
    local = tmp_path / "local"
    assert main(["replay", str(hides), "--station", str(_station(tmp_path, "local", None)), "--out", str(local)]) == 0
    capsys.readouterr()
    port = free_port()
    s = Server(port, tmp_path / "serve1.log")
    s2: Server | None = None
    log = tmp_path / "replay.log"
    try:
        s.wait_ready()
        out = tmp_path / "waits"
        st = _station(tmp_path, "waits", s.url, "server_wait_s = 600")
        with log.open("w") as f:
            p = subprocess.Popen([sys.executable, "-m", "edge_inspector.cli", "--log-level", "info", "replay",
                                  str(hides), "--station",
                                  str(st), "--out", str(out)], stdout=subprocess.DEVNULL, stderr=f, text=True)
        wait_until(lambda: p.poll() is not None or '"model_server"' in log.read_text(), 300, "the replay's connect")
        assert p.poll() is None, log.read_text()[-3000:]
        s.kill()
        s2 = Server(port, tmp_path / "serve2.log")
        s2.wait_ready()
        p.wait(600)
    finally:
        s.stop()
        if s2 is not None:
            s2.stop()
    err = log.read_text()
    assert p.returncode == 0, err[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["strips_model_failed"] == 0 and summary["model_server"]["reconnects"] >= 1
    assert "model_server_error" in err and "model_server_reconnected" in err
    assert _defects(out) == _defects(local)
