"""Modbus TCP plumbing for the PLC link: pymodbus version differences, exception texts, errors,
and a log throttle (edge_inspector/plc/link.py uses them)."""

from __future__ import annotations

import inspect
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from pymodbus.client import ModbusTcpClient

LOG_EVERY_S = 5.0
EXCEPTIONS = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    6: "server device busy",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


def unit_keyword(method: Callable[..., Any]) -> str:
    """The keyword a pymodbus request method takes the unit id by.

    pymodbus 3.10 renamed ``slave=`` to ``device_id=``; the installed version decides.
    """
    params = inspect.signature(method).parameters
    for name in ("device_id", "slave"):
        if name in params:
            return name
    raise RuntimeError(f"pymodbus {method.__qualname__} takes neither device_id= nor slave=: unsupported version")


UNIT_KW = unit_keyword(ModbusTcpClient.read_holding_registers)
TRACE = "trace_packet" in inspect.signature(ModbusTcpClient.__init__).parameters


class LinkError(Exception):
    """One failed Modbus exchange: ``kind`` is the counter it goes to, the text says what to check."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        super().__init__(message)


class Throttle:
    """At most one log line per key every ``every_s``; tells how many were held back."""

    def __init__(self, every_s: float = LOG_EVERY_S) -> None:
        self.every_s = every_s
        self._last: dict[str, float] = {}
        self._held: Counter[str] = Counter()

    def due(self, key: str) -> int | None:
        """None: stay quiet; else the number of suppressed repeats since the last line."""
        now = time.monotonic()
        if now - self._last.get(key, -1e9) < self.every_s:
            self._held[key] += 1
            return None
        self._last[key] = now
        return self._held.pop(key, 0)

