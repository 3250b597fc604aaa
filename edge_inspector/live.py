"""The live station: ``edge-inspector run --station FILE`` (docs/architecture.md).

Camera (GenICamSource) -> InspectionRun(live=True) (edge_inspector/run.py) -> graded hides in the
results folder and marks, built like ``replay()``. A stop (SIGTERM, Ctrl-C, ``seconds``) ends the camera stream; the
pipeline then drains: strips in flight are inspected, open hides are finished and written, and
summary.json closes the run. A camera that does not come back after its reconnect attempts ends
the run the same way, and ``run_live`` raises its CameraError after the summary is written.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import structlog

from .camera import CameraError, GenICamSource
from .config import Station
from .errors import InputError
from .lines import LineBlock
from .pipeline import RunStats
from .probe import Probe
from .run import HideSubscriber, InspectionRun, Publish

log = structlog.get_logger(__name__)


def run_live(
    station: Station,
    out_dir: Path,
    *,
    seconds: float | None = None,
    model_path: str | None = None,
    stop: threading.Event | None = None,
    on_ready: Callable[[GenICamSource], None] | None = None,
    hide_callbacks: Sequence[HideSubscriber] = (),
    plc: str | None = None,
    probe: Probe | None = None,
    publish: Publish | None = None,
    hurry: threading.Event | None = None,
) -> tuple[RunStats, dict[str, Any]]:
    """Inspect the camera's lines until ``stop`` is set or ``seconds`` pass; write results into ``out_dir``.

    ``on_ready(source)`` runs once the model is warm and the camera streams (systemd READY=1).
    Marks go to ``plc`` ("HOST:PORT" or "sim"), else to the station's ``[plc] host`` when set;
    they are always planned and logged to marks.jsonl (edge_inspector/dispatch.py).
    ``probe`` gives other threads a live view of the pipeline (metrics, watchdog);
    ``publish(topic, data)`` receives every finished hide ("hide"), its defects ("defect") and
    every mark handed to the PLC ("mark") (edge_inspector/events.py). ``hide_callbacks`` receive
    each graded hide after the results, the marks and the events (edge_inspector/run.py).
    ``hurry`` (a second SIGTERM): the marks' delivery ends at once, the summary is still written.
    """
    from .calibrate import apply_calibration
    from .inference import Model

    if seconds is not None and seconds <= 0:
        raise InputError(f"--seconds must be greater than 0, got {seconds}")
    stop = stop or threading.Event()
    station, threshold = apply_calibration(station, model_path)
    model = Model.for_station(station, model_path)
    with GenICamSource(station, stop=stop) as source:
        camera = source.device.as_dict()
        run_info = {"command": "run", "camera": camera, "camera_settings": source.applied, "model": str(model.path),
                    "provider": model.provider, "station": station.model_dump(mode="json")}
        failure: list[CameraError] = []
        with InspectionRun(
            station, model, out_dir, run_info=run_info, plc=plc, live=True, subscribers=hide_callbacks,
            publish=publish, probe=probe, hurry=hurry,
            source_id=f"camera-{camera['serial'] or camera.get('id', '-')}@{time.strftime('%Y%m%dT%H%M%S')}",
        ) as run:
            timer = stop_after(seconds, stop)
            try:
                run.start(_first_line_to(run, _until_camera_fails(source, failure)))
                if on_ready is not None:
                    on_ready(source)
                if timer is not None:
                    timer.start()
                stats = run.join()
            except BaseException:
                stop.set()  # the camera ends its stream; the run drains as it closes
                raise
            finally:
                if timer is not None:
                    timer.cancel()
            summary = run.finish({
                "recording": f"camera {camera['vendor']} {camera['model']} serial {camera['serial'] or '-'}",
                "camera": camera,
                "camera_settings": source.applied,
                "acquisition": source.stats.as_dict(),
                "camera_error": str(failure[0]) if failure else None,
                "threshold": {**threshold, "value": model.score_threshold},
            })
    if failure:
        raise failure[0]
    return stats, summary


def _first_line_to(run: InspectionRun, blocks: Iterator[LineBlock]) -> Iterator[LineBlock]:
    """Tell the run which line is under the camera when the first block arrives."""
    for b in blocks:
        run.line_zero(b.end_line)
        yield b


def _until_camera_fails(source: GenICamSource, failure: list[CameraError]) -> Iterator[LineBlock]:
    """The source's blocks; a CameraError ends the stream (the pipeline drains) and is kept in ``failure``."""
    try:
        yield from source
    except CameraError as e:
        log.error("camera failed; finishing the run", error=str(e))
        failure.append(e)


def stop_after(seconds: float | None, stop: threading.Event) -> threading.Timer | None:
    """A daemon timer (not started) that sets ``stop`` after ``seconds``; None without seconds."""
    if seconds is None:
        return None
    timer = threading.Timer(seconds, stop.set)
    timer.daemon = True
    return timer


@contextmanager
def stop_on_signals(stop: threading.Event, hurry: threading.Event | None = None) -> Iterator[None]:
    """SIGTERM and SIGINT set ``stop`` (a clean stop with drain).

    With ``hurry``, a second one sets it: the drain ends as soon as it can (no waiting for the
    PLC; what is not delivered is counted), the summary is still written; a third interrupts at
    once. Without ``hurry`` the second one interrupts at once (KeyboardInterrupt).
    """
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.getsignal(s) for s in signals}

    def handler(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            if hurry is not None and not hurry.is_set():
                log.warning("second stop signal: finishing now; marks not delivered are counted not fired", signal=name)
                hurry.set()
                return
            raise KeyboardInterrupt
        log.warning("stopping", signal=name)
        stop.set()

    for s in signals:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
