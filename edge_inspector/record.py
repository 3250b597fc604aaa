"""``edge-inspector record``: camera lines into a .raw recording (docs/recording-format.md).

Every block the camera source yields is appended and flushed as it arrives, so a stop, a
crash or a camera that does not come back leaves a valid file with everything recorded so far.
Lost lines are gaps in ``first_line`` with the block's ``lost_before`` stored, as the format
defines. The file header names the camera (vendor, model, serial, user name, device id,
producer file) and holds the node values the camera accepted under ``genicam.settings``
(the camera's PixelFormat is there; ``pixel_format`` names what the file stores: RGB8 for RGBa8).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .camera import AcquisitionStats, GenICamSource
from .config import Station
from .errors import InputError
from .live import stop_after
from .recording import RecordingHeader, RecordingWriter


def recording_header(station: Station, source: GenICamSource) -> RecordingHeader:
    """Header of a recording from ``source``: geometry, the line rate set, camera identity, settings."""
    cam, g = station.camera, station.source.genicam
    return RecordingHeader(
        width=cam.width, channels=cam.channels, dtype=cam.dtype, pixel_format=source.layout.lines_format,
        line_rate_hz=source.line_rate_hz, mm_per_px=cam.mm_per_px, mm_per_line=cam.mm_per_line,
        camera=source.device.as_dict(), station=station.station.name,
        extra={"genicam": {"settings": source.applied, "lines_per_buffer": g.lines_per_buffer,
                           "num_buffers": g.num_buffers}},
    )


@dataclass
class RecordResult:
    """What ``record`` wrote, and the camera source's counters."""

    path: Path
    lines: int  # lines written
    lost_lines: int  # lost_before summed over the written blocks
    seconds: float  # from the camera streaming to the end of the recording
    cpu_s: float  # process CPU time over the same span
    acquisition: AcquisitionStats

    def summary_line(self) -> str:
        rate = self.lines / self.seconds if self.seconds > 0 else 0.0
        return (f"recorded {self.path}: {self.lines:,} lines, lost {self.lost_lines:,}, {self.seconds:.2f} s,"
                f" {rate:,.0f} lines/s")


def record(
    station: Station,
    out_path: Path,
    *,
    seconds: float | None = None,
    lines: int | None = None,
    stop: threading.Event | None = None,
    on_ready: Callable[[GenICamSource], None] | None = None,
) -> RecordResult:
    """Record from the station's camera until ``seconds`` pass, ``lines`` are written, or ``stop`` is set.

    ``on_ready(source)`` runs once the camera streams and the file exists. A CameraError (the
    device did not come back) propagates after the file is closed; it stays a valid recording.
    """
    for name, value in (("seconds", seconds), ("lines", lines)):
        if value is not None and value <= 0:
            raise InputError(f"--{name} must be greater than 0, got {value}")
    stop = stop or threading.Event()
    with GenICamSource(station, stop=stop) as source, \
            RecordingWriter(out_path, recording_header(station, source)) as writer:
        timer = stop_after(seconds, stop)
        if on_ready is not None:
            on_ready(source)
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        if timer is not None:
            timer.start()
        lost = 0
        try:
            for block in source:
                if lines is not None and writer.lines_written + block.n_lines > lines:
                    block.lines = block.lines[: lines - writer.lines_written]
                writer.write(block)
                lost += block.lost_before
                if lines is not None and writer.lines_written >= lines:
                    break
        finally:
            if timer is not None:
                timer.cancel()
        return RecordResult(Path(out_path), writer.lines_written, lost, time.perf_counter() - t0,
                            time.process_time() - cpu0, source.stats)

