"""``edge-inspector plc-sim`` (also ``python -m edge_inspector.plc.softplc``): the soft-PLC as a
command, for tests, the demo and hil (edge_inspector/plc/launch.py starts it as a child process).

It prints one line when it listens and one summary line when it stops (SIGTERM/SIGINT, ``--seconds``,
or ``--exit-with-parent PID`` gone).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from typing import Any

import structlog

from ..errors import InputError
from .softplc import SoftPlc

log = structlog.get_logger(__name__)

_PARENT_POLL_S = 0.2


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``edge-inspector plc-sim`` (explicit options override --station)."""
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="TCP port; 0 = any free port (default: station plc.port, else 5020)")
    p.add_argument("--unit-id", type=int, default=None, help="Modbus unit id to answer (default: station plc.unit_id, else 1)")
    p.add_argument("--station", default=None, help="station TOML: belt speed, marker and reject distances, plc port/unit id")
    p.add_argument("--speed-mm-s", type=float, default=None, help="belt speed (default: station belt.speed_m_per_min, else 1000)")
    p.add_argument("--marker-distance-mm", type=float, default=None, help="camera line -> marker (default 4000)")
    p.add_argument("--reject-distance-mm", type=float, default=None, help="camera line -> reject gate (default 8000)")
    p.add_argument("--log", default=None, help="JSON lines of fired/missed/heartbeat events")
    p.add_argument("--state", default=None, help="RETAIN memory file (last ack, fire list, belt position)")
    p.add_argument("--seconds", type=float, default=None, help="stop after this long (default: until SIGTERM/SIGINT)")
    p.add_argument("--exit-with-parent", type=int, default=None, metavar="PID",
                   help="stop (state saved, summary line) when process PID is gone: a child of the inspector")


def _settings(a: argparse.Namespace) -> dict[str, Any]:
    """SoftPlc keyword arguments: explicit options, then the station file, then defaults."""
    s: dict[str, Any] = {"port": 5020, "unit_id": 1, "speed_mm_s": 1000.0, "marker_distance_mm": 4000.0,
                         "reject_distance_mm": 8000.0}
    if a.station:
        from ..config import load_station

        st = load_station(a.station)
        s.update(port=st.plc.port, unit_id=st.plc.unit_id, speed_mm_s=st.belt.speed_m_per_min * 1000.0 / 60.0,
                 marker_distance_mm=st.belt.marker_distance_mm, reject_distance_mm=st.marking.reject_distance_mm)
    given = {"port": a.port, "unit_id": a.unit_id, "speed_mm_s": a.speed_mm_s,
             "marker_distance_mm": a.marker_distance_mm, "reject_distance_mm": a.reject_distance_mm}
    s.update({k: v for k, v in given.items() if v is not None})
    return s


def run(a: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT or --seconds; one line when listening, one summary line at the end."""
    plc = SoftPlc(a.host, log_path=a.log, state_path=a.state, **_settings(a))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        plc.start()
    except RuntimeError as e:
        raise InputError(str(e), where=f"--host {a.host} --port {plc.port}") from None
    print(f"soft-plc unit {plc.unit_id} at {plc.speed_mm_s:g} mm/s listening on {plc.address}", flush=True)
    try:
        _wait(stop, a.seconds, a.exit_with_parent)
    finally:
        plc.stop()
    c = plc.counts
    print(f"soft-plc stopped: fired {c['fired']}, missed {c['missed']}, heartbeat lost {c['heartbeat_lost']}",
          flush=True)
    return 0


def _wait(stop: threading.Event, seconds: float | None, parent: int | None) -> None:
    """Until ``stop``, ``seconds`` or, with ``parent``, until that process is gone (we are re-parented)."""
    end = None if seconds is None else time.monotonic() + seconds
    while not stop.is_set():
        left = None if end is None else end - time.monotonic()
        if left is not None and left <= 0:
            return
        if parent is None:
            stop.wait(left)
            continue
        if os.getppid() != parent:
            log.warning("soft-plc: the inspector that started it is gone; stopping", parent_pid=parent)
            return
        stop.wait(_PARENT_POLL_S if left is None else min(left, _PARENT_POLL_S))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edge_inspector.plc.softplc", description="Soft-PLC: Modbus TCP server with a simulated belt and marker.")
    add_arguments(p)
    try:
        return run(p.parse_args(argv))
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2



if __name__ == "__main__":
    sys.exit(main())
