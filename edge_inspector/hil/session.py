"""What ``edge-inspector hil`` tests: its options, the station and PLC under test, what the checks found."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Station, load_station
from ..errors import InputError
from ..plc.launch import SoftPlcProcess, plc_address

SIM_STATION = Path(__file__).resolve().parents[2] / "configs" / "stations" / "viky-sim.toml"
OUTBOX = "hil-outbox.sqlite"


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
class Stream:
    """The camera check's samples: (monotonic time, line index, PLC belt mm) at the first and last block."""

    first: tuple[float, int, float | None]
    last: tuple[float, int, float | None]


@dataclass
class Session:
    """What is under test (the station with --cti/--device applied, the PLC address) and what the checks found."""

    station: Station
    station_file: str
    simulator: bool
    plc: tuple[str, int] | None  # None: no PLC to test
    soft_plc: SoftPlcProcess | None = None  # simulator mode, --plc sim
    link: Any = None  # edge_inspector.plc.link.PlcLink while connected
    plc_ok: bool = False  # plc_reachable connected
    stream: Stream | None = None  # camera_stream got at least two buffers
    test_hide: dict[str, Any] | None = None  # --truth, read before any check runs

    @property
    def camera_sim(self) -> bool:
        return self.station.source.genicam.cti in ("", "viky")

    def close_link(self) -> None:
        if self.link is not None:
            self.link.stop()
            self.link.outbox.close()
            self.link = None


def open_session(opts: HilOptions) -> Session:
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
    return Session(st, path, simulator, plc_address(opts.plc, st.plc))
