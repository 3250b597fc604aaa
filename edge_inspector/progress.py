"""A small progress bar on stderr (only on a terminal, at most ~8 updates per second)."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, label: str, unit: str = "lines", enabled: bool | None = None) -> None:
        self.total = max(1, total)
        self.label = label
        self.unit = unit
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.t0 = time.perf_counter()
        self._last = 0.0
        self.done = 0

    def update(self, done: int) -> None:
        self.done = done
        now = time.perf_counter()
        if not self.enabled or now - self._last < 0.125:
            return
        self._last = now
        frac = min(1.0, done / self.total)
        bar = "#" * int(frac * 30)
        rate = done / max(now - self.t0, 1e-9)
        sys.stderr.write(
            f"\r{self.label} [{bar:<30}] {frac * 100:5.1f}% {done:,}/{self.total:,} {self.unit}"
            f" {rate:,.0f} {self.unit}/s "
        )
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            self._last = 0.0
            self.update(self.done)
            sys.stderr.write("\n")
            sys.stderr.flush()
