"""GenTL producers and devices: find the .cti file, list its devices, pick and open the station's.

One ``Harvester`` per source: the simulated producer (viky) lists no devices to a second
Harvester in the same process while the first one holds it, and ``Harvester.update()`` (used to
reconnect) invalidates every acquirer of its Harvester.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import genicam
from genicam import gentl
from genicam.gentl import DEVICE_ACCESS_STATUS_LIST as _Access
from harvesters.core import Harvester, ImageAcquirer

from ..config import Station
from .errors import CameraError

SIMULATOR = "viky"
"""``source.genicam.cti`` value (or "") for the GenTL simulator shipped with the genicam package."""

_BUSY_STATUS = (_Access.DEVICE_ACCESS_STATUS_BUSY, _Access.DEVICE_ACCESS_STATUS_NOACCESS)
_BUSY_ERRORS = (gentl.ResourceInUseException, gentl.AccessDeniedException, gentl.BusyException)


def producer_path(station: Station) -> Path:
    """The producer file of the station: the simulator, or a path relative to the station file."""
    cti = station.source.genicam.cti
    path = Path(genicam.__file__).parent / "viky.cti" if cti in ("", SIMULATOR) else station.resolve(cti)
    if not path.is_file():
        raise CameraError(
            f"GenTL producer file not found: {path}", where="source.genicam.cti",
            hint='install the camera vendor\'s GenTL producer and give the path of its .cti file,'
                 ' or "viky" for the simulator',
        )
    return path


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    """Who a device is, from the producer's device list."""

    index: int
    vendor: str
    model: str
    serial: str
    user_name: str
    device_id: str
    tl_type: str
    producer: str

    def describe(self) -> str:
        return (f"{self.index}: {self.vendor} {self.model}, serial {self.serial or '-'},"
                f" user name {self.user_name or '-'}, id {self.device_id or '-'}")

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "index"}


def open_harvester(producer: Path) -> Harvester:
    """A Harvester with ``producer`` loaded and its device list read."""
    # harvesters prints tracebacks to stderr for conditions this package reports itself.
    logging.getLogger("harvesters.core").setLevel(logging.CRITICAL + 1)
    h = Harvester()
    h.add_file(str(producer))
    h.update()
    return h


def list_devices(h: Harvester, producer: Path) -> list[DeviceIdentity]:
    def prop(info: Any, name: str) -> str:
        return str(info.property_dict.get(name) or "")

    return [
        DeviceIdentity(i, prop(d, "vendor"), prop(d, "model"), prop(d, "serial_number"),
                       prop(d, "user_defined_name"), prop(d, "id_"), prop(d, "tl_type"), str(producer))
        for i, d in enumerate(h.device_info_list)
    ]


def select_device(devices: list[DeviceIdentity], selector: int | str, producer: Path) -> DeviceIdentity:
    """The device ``selector`` names: a list index, or a serial number, user-defined name or device id."""
    found = "\n  ".join(d.describe() for d in devices)
    listing = f"; devices found:\n  {found}" if devices else ""
    if not devices:
        raise CameraError(
            f"no devices found by the GenTL producer {producer}", where="source.genicam.device",
            hint="check the cable, power and network/driver set-up; a producer lists no devices while"
                 " another program in this process holds it",
        )
    if isinstance(selector, int):
        if 0 <= selector < len(devices):
            return devices[selector]
        raise CameraError(f"no device with index {selector}{listing}", where="source.genicam.device")
    matches = [d for d in devices if selector in (d.serial, d.user_name, d.device_id)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise CameraError(
            f"no device matches {selector!r} (serial number, user-defined name or device id){listing}",
            where="source.genicam.device",
        )
    raise CameraError(f"device {selector!r} is ambiguous: {len(matches)} devices match{listing}",
                      where="source.genicam.device")


def create_acquirer(h: Harvester, device: DeviceIdentity) -> ImageAcquirer:
    """Open ``device`` (found in ``h``'s current device list by its id or serial) for streaming."""
    infos = [d for d, ident in zip(h.device_info_list, list_devices(h, Path(device.producer)))
             if (ident.device_id, ident.serial) == (device.device_id, device.serial)]
    if not infos:
        raise CameraError(f"device {device.describe()} is not listed by the producer",
                          where="source.genicam.device")
    info = infos[0]
    busy = CameraError(
        f"device {device.describe()} is busy: another program (or another source in this process) has it open",
        where="source.genicam.device", hint="close camera viewers or a second edge-inspector on this camera",
    )
    if info.property_dict.get("access_status") in _BUSY_STATUS:
        raise busy
    try:
        with _sigint_untouched():
            return h.create(info)
    except _BUSY_ERRORS:
        raise busy from None
    except gentl.GenericException as e:
        raise CameraError(f"cannot open device {device.describe()}: {e}", where="source.genicam.device") from None


@contextmanager
def _sigint_untouched() -> Iterator[None]:
    """harvesters' ImageAcquirer, created in the main thread, installs a SIGINT handler that destroys
    it; keep the program's own Ctrl-C handling (a clean stop) instead."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
