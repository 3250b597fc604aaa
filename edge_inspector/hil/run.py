"""``run_hil``: the checks in their order, each timed, on a station and PLC (a soft-PLC in simulator mode)."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import structlog

from .. import __version__
from ..errors import InputError
from ..plc.launch import SIM, SoftPlcProcess
from .camera import check_camera, check_encoder
from .marking import check_marking, load_test_hide
from .plc import check_heartbeat, check_plc_reachable, check_round_trip, observe_heartbeat
from .result import CHECKS, NOT_REACHABLE, REPORT_VERSION, CheckResult, failed, skipped
from .session import HilOptions, Session, open_session

log = structlog.get_logger(__name__)


class Runner:
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
    t = open_session(opts)
    if opts.truth is not None:
        t.test_hide = load_test_hide(Path(opts.truth))
    started, t0 = time.time(), time.monotonic()
    runner = Runner(on_result)
    with _workdir(opts.out) as work:
        if t.plc is None and (t.simulator or opts.plc == SIM):
            t.soft_plc = SoftPlcProcess.for_station(t.station, log_path=work / "plc.jsonl")
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


def _camera_desc(t: Session) -> str:
    if t.station.source.kind != "genicam":
        return f"none (source.kind = {t.station.source.kind!r})"
    g = t.station.source.genicam
    return f"{'GenTL simulator viky.cti' if t.camera_sim else g.cti}, device {g.device!r}"


def _plc_desc(t: Session) -> str:
    if t.plc is None:
        return "none"
    where = f"{t.plc[0]}:{t.plc[1]} unit {t.station.plc.unit_id}"
    return f"soft-PLC at {where}" if t.soft_plc is not None else where


def _run_checks(t: Session, opts: HilOptions, work: Path, runner: Runner) -> None:
    """PLC first (the camera check samples its encoder), then the camera, the PLC's watchdog, the test hide."""
    beat = None
    if t.plc is None:
        why = "no PLC configured: give --plc HOST:PORT (or --plc sim), or set [plc] host in the station"
        for name in ("plc_reachable", "plc_heartbeat", "mark_round_trip"):
            runner.add(skipped(name, why))
    else:
        runner.run(check_plc_reachable, t, work)
        if t.link is not None:
            beat = observe_heartbeat(t)
            runner.run(check_round_trip, t)
        else:
            runner.add(failed("mark_round_trip", NOT_REACHABLE))
    runner.run(check_camera, t, opts.seconds)
    runner.run(check_encoder, t)
    t.close_link()  # STOPPED: the watchdog probe beats by hand
    if t.plc is not None:
        runner.run(check_heartbeat, t, beat)
    runner.run(check_marking, t, opts, work)
