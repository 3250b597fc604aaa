"""`edge-inspector hil` against the GenTL simulator and a soft-PLC (real Modbus TCP on loopback, no mocks)."""

from __future__ import annotations

import json
import socket

from edge_inspector.cli import main
from edge_inspector.hil import CHECKS, PLACEMENT_TOL_MM


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_simulator_mode_passes_every_check_and_writes_the_report(tmp_path, capsys):
    report_path = tmp_path / "hil" / "report.json"
    assert main(["hil", "--seconds", "2", "--report", str(report_path)]) == 0
    out = capsys.readouterr().out
    assert "PASSED" in out and "(simulator)" in out
    report = json.loads(report_path.read_text())
    assert report["mode"] == "simulator" and report["passed"] is True
    checks = {c["name"]: c for c in report["checks"]}
    assert [c["name"] for c in report["checks"]] == list(CHECKS)
    assert {n: c["status"] for n, c in checks.items()} == {
        "camera_stream": "pass", "encoder": "skip", "plc_reachable": "pass", "plc_heartbeat": "pass",
        "mark_round_trip": "pass", "marking_accuracy": "pass"}
    assert "free-running" in checks["encoder"]["message"]
    cam = checks["camera_stream"]["values"]
    assert cam["lines"] > 0 and cam["lost_lines"] == 0 and cam["frame_id_gaps"] == 0 and cam["reconnects"] == 0
    assert cam["line_rate_hz_set"] == 2560
    plc = checks["plc_reachable"]["values"]
    assert plc["plc_map_version"] == plc["map_version"] and plc["plc_alive_moves"] is True
    beat = checks["plc_heartbeat"]["values"]
    assert beat["lost_samples"] == 0 and beat["sim_lost_events"] == 0 and beat["sim_lost_events_probe"] == 1
    assert beat["lost_after_ms"] is not None and beat["cleared_when_stopped"] is True
    rtt = checks["mark_round_trip"]["values"]
    assert rtt["marks"] == 6 and 0 < rtt["p50_ms"] <= rtt["max_ms"]
    mk = checks["marking_accuracy"]["values"]
    assert mk["source"].startswith("fired by the soft-PLC") and mk["ink_marks"] > 0
    assert mk["gt_defects_marked"] >= 1 and mk["late"] == 0 and mk["missed_by_plc"] == 0
    assert mk["ink_marks_not_fired"] == 0 and mk["placement_error_mm_max"] <= PLACEMENT_TOL_MM


def test_an_unreachable_plc_fails_the_plc_checks(tmp_path, capsys):
    port = free_port()  # closed again: nothing listens there
    report_path = tmp_path / "report.json"
    assert main(["hil", "--plc", f"127.0.0.1:{port}", "--seconds", "1", "--report", str(report_path)]) == 1
    out = capsys.readouterr().out
    assert "FAILED (4 checks)" in out
    checks = {c["name"]: c for c in json.loads(report_path.read_text())["checks"]}
    assert checks["plc_reachable"]["status"] == "fail"
    assert f"127.0.0.1:{port}" in checks["plc_reachable"]["message"]
    assert "connection refused" in checks["plc_reachable"]["message"]
    for name in ("plc_heartbeat", "mark_round_trip", "marking_accuracy"):
        assert checks[name]["status"] == "fail" and "not reachable" in checks[name]["message"]
    assert checks["camera_stream"]["status"] == "pass" and checks["encoder"]["status"] == "skip"


def test_bad_options_end_with_a_clear_error_before_any_check(tmp_path, capsys):
    assert main(["hil", "--truth", str(tmp_path / "missing.json")]) == 2
    err = capsys.readouterr().err
    assert "missing.json" in err and "--truth" in err and "not found" in err
    assert main(["hil", "--plc", "no-port-here:x"]) == 2
    assert "HOST:PORT" in capsys.readouterr().err
