"""Which PLC a run talks to, and the soft-PLC child process that plays it for ``--plc sim``.

The ``--plc`` option of replay, the live run and ``hil`` names the PLC: "HOST:PORT" (or "HOST",
port from the station), "sim" for a soft-PLC started for the run, or nothing for the station's
``[plc] host`` (empty: no PLC)::

    plc_target("sim", st.plc)        # "sim"
    plc_target(None, st.plc)         # "10.0.0.5:502" from [plc] host, or None
    plc_address("10.0.0.5", st.plc)  # ("10.0.0.5", st.plc.port); None for "sim" and for no PLC

The soft-PLC runs in its own process (``edge-inspector plc-sim``), as a real PLC is its own
device: in the inspector's process its 1 ms scan would wait for the GIL behind the camera
thread and fire late. It listens on a free loopback port::

    sim = SoftPlcProcess.for_station(st, log_path=out / "plc.jsonl")
    sim.address                      # ("127.0.0.1", PORT)
    sim.events("fired", since=t0)    # its log (JSON lines)
    sim.stop()                       # SIGTERM; its summary line
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..config import Plc, Station
from ..errors import InputError

SIM = "sim"
LOOPBACK = "127.0.0.1"


def plc_target(plc: str | None, cfg: Plc) -> str | None:
    """The PLC a run talks to: ``plc`` as given ("HOST:PORT", "HOST", "sim"), else ``[plc] host``:port, else None."""
    if plc is not None:
        return plc
    return f"{cfg.host}:{cfg.port}" if cfg.host else None


def parse_plc_address(text: str, default_port: int = 502) -> tuple[str, int]:
    """"HOST:PORT" or "HOST" -> (host, port), with a clear error."""
    host, _, port = text.rpartition(":") if ":" in text else (text, "", str(default_port))
    try:
        p = int(port)
    except ValueError:
        p = -1
    if not host or not 1 <= p <= 65535:
        raise InputError(f"--plc {text!r}: give HOST:PORT (e.g. 192.168.0.10:502), or 'sim' for the soft-PLC")
    return host, p


def plc_address(plc: str | None, cfg: Plc) -> tuple[str, int] | None:
    """The (host, port) of the PLC ``plc_target`` names; None for no PLC and for the soft-PLC ("sim")."""
    target = plc_target(plc, cfg)
    if target is None or target == SIM:
        return None
    return parse_plc_address(target, cfg.port)


class SoftPlcProcess:
    """A soft-PLC (``python -m edge_inspector.plc.plcsim``) in a child process on a free loopback port.

    ``options``: more ``plc-sim`` options; ``log_path``: its event log (``--log``). The child stops
    by itself when this process is gone (``--exit-with-parent``), so a killed inspector leaves no
    soft-PLC behind. Returns once the child listens (its first line, "soft-plc unit 1 at 947.2 mm/s listening on 127.0.0.1:PORT", is
    ``banner``); InputError when it does not start.
    """

    def __init__(self, speed_mm_s: float, options: Sequence[str] = (), *, log_path: Path | None = None) -> None:
        self.speed_mm_s = speed_mm_s
        self.log_path = log_path
        cmd = [sys.executable, "-m", "edge_inspector.plc.plcsim", "--host", LOOPBACK, "--port", "0",
               "--speed-mm-s", f"{speed_mm_s:.6f}", "--exit-with-parent", str(os.getpid()), *options]
        if log_path is not None:
            cmd += ["--log", str(log_path)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert self.proc.stdout is not None
        self.banner = self.proc.stdout.readline()
        if "listening on" not in self.banner:
            self.stop()
            raise InputError("the soft-PLC did not start", where=" ".join(cmd))
        self.where = self.banner.split()[-1]
        self.address = parse_plc_address(self.where)

    @classmethod
    def for_station(cls, st: Station, *, log_path: Path, state_path: Path | None = None) -> SoftPlcProcess:
        """The station's PLC: its unit id, belt speed and actuator distances; RETAIN state in ``state_path``."""
        options = ["--unit-id", str(st.plc.unit_id),
                   "--marker-distance-mm", f"{st.belt.marker_distance_mm:g}",
                   "--reject-distance-mm", f"{st.marking.reject_distance_mm:g}"]
        if state_path is not None:
            options += ["--state", str(state_path)]
        return cls(st.belt.speed_m_per_min * 1000.0 / 60.0, options, log_path=log_path)

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def events(self, kind: str | None = None, since: float = 0.0) -> list[dict[str, Any]]:
        """Logged events (of ``kind``) from wall-clock time ``since`` on."""
        if self.log_path is None or not self.log_path.is_file():
            return []
        evs = [json.loads(x) for x in self.log_path.read_text(encoding="utf-8").splitlines() if x.endswith("}")]
        return [e for e in evs if (kind is None or e.get("event") == kind) and e.get("t", 0.0) >= since]

    def stop(self) -> str:
        """SIGTERM, wait (kill after 10 s); what it printed after the banner (its summary line)."""
        if self.proc.poll() is not None:
            return ""
        self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return out or ""
