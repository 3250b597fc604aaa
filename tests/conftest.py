"""Shared test set-up."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import structlog

from edge_inspector.synth import SynthConfig, write_recording


@pytest.fixture(autouse=True)
def _reset_structlog():
    """The CLI configures structlog globally; give every test the library defaults back."""
    yield
    structlog.reset_defaults()


# A small station: 1024 px at 1.5 mm per px and line keeps hides at ~1000 x ~1400 px.
SMALL_STATION = """
[station]
name = "small"
[camera]
width = 1024
channels = 3
line_rate_hz = 20000
mm_per_px = 1.5
mm_per_line = 1.5
[tiling]
tile = 512
overlap = 64
ring_slots = 3
[hide_detection]
subsample = 4
min_hide_lines = 32
gap_lines = 32
[model]
path = "builtin:baseline"
providers = ["CPUExecutionProvider"]
[belt]
speed_m_per_min = 60
marker_distance_mm = 3000
"""


@pytest.fixture(scope="session")
def recording(tmp_path_factory) -> tuple[Path, Path, dict]:
    d = tmp_path_factory.mktemp("rec")
    st = d / "small.toml"
    st.write_text(SMALL_STATION)
    rec = d / "hides.raw"
    truth = write_recording(rec, SynthConfig(hides=2, seed=11, width=1024, mm_per_px=1.5, mm_per_line=1.5,
                                             line_rate_hz=20000))
    return rec, st, truth


def wait_until(cond: Callable[[], Any], timeout: float = 5.0, what: str = "") -> None:
    """Poll ``cond`` every 10 ms; AssertionError naming ``what`` after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or cond}")
        time.sleep(0.01)


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
