"""The live station as a systemd service: ``edge-inspector run`` (docs/service.md; docs/architecture.md).

``run_service()`` is the live run (edge_inspector/live.py) plus what the service manager needs,
without extra dependencies:

- sd_notify over the datagram socket in $NOTIFY_SOCKET (``Notifier``): EXTEND_TIMEOUT_USEC while
  the model loads and the camera opens, READY=1 once the model is warm and the camera streams,
  STATUS= with throughput every few seconds, STOPPING=1 when a stop begins. Without
  $NOTIFY_SOCKET (a run by hand, the tests) nothing is sent and the run is the same.
- the watchdog (``Supervisor`` with a ``StallDetector``): WATCHDOG=1 every $WATCHDOG_USEC / 2
  while lines and inferences progress, or while the camera waits for lines from a stopped belt.
  A stage without progress for ``service.stall_s`` is named in an error and the pings stop, so
  systemd kills and restarts the service.
- a bounded drain (``RunThread``): after SIGTERM/SIGINT (or ``--seconds``) the run finishes the
  strips in flight, writes the open hides, flushes marks and summary.json; when that takes longer
  than ``service.drain_timeout_s`` the exit code is EXIT_DRAIN_TIMEOUT. A second SIGTERM/SIGINT
  ends the marks' delivery at once (undelivered marks are counted not fired) and the summary is
  still written (exit code EXIT_INTERRUPTED); a third one interrupts without it.
- child processes (the ``--plc sim`` soft-PLC) are stopped by the run, and stop by themselves
  when the inspector dies (edge_inspector/plc/launch.py).
- events and telemetry over ZeroMQ when ``[events] enabled`` (edge_inspector/events.py).
"""

from __future__ import annotations

import contextvars
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import structlog

from . import logs
from .camera import AcquisitionStats, GenICamSource
from .config import Station
from .live import run_live, stop_on_signals
from .probe import Probe
from .run import Publish

log = structlog.get_logger(__name__)

EXIT_DRAIN_TIMEOUT = 3
"""Exit code when the drain after a stop exceeded ``service.drain_timeout_s`` (2 is bad input)."""
EXIT_INTERRUPTED = 130
"""Exit code after a second stop signal cut the drain short (the summary is written)."""

TICK_S = 0.5  # how often the supervisor looks at the pipeline (at most; less when pings are due sooner)
STATUS_S = 2.0  # STATUS= period
EXTEND_S = 30.0  # each EXTEND_TIMEOUT_USEC= gives the start this much more time ...
EXTEND_EVERY_S = 10.0  # ... and is sent this often while starting ...
START_EXTEND_MAX_S = 300.0  # ... for at most this long: a start that hangs still times out


class Notifier:
    """sd_notify(3) without libsystemd: newline-separated KEY=VALUE datagrams to $NOTIFY_SOCKET.

    ``address``: a socket path, or "@name" for the abstract namespace; None: nothing is sent.
    """

    def __init__(self, address: str | None) -> None:
        self.address = address
        self._sock: socket.socket | None = None
        self._target = ""
        if not address:
            return
        if address[0] not in "/@":
            log.warning("NOTIFY_SOCKET is neither a path nor abstract (@); not notifying", notify_socket=address)
            return
        self._target = "\0" + address[1:] if address[0] == "@" else address
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Notifier:
        return cls(env.get("NOTIFY_SOCKET") or None)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, *fields: str) -> bool:
        """Send ``fields`` ("READY=1", "STATUS=...") as one message; False when nothing was sent."""
        if self._sock is None:
            return False
        try:
            self._sock.sendto("\n".join(fields).encode(), self._target)
        except OSError as e:
            log.warning("sd_notify failed", error=str(e), notify_socket=self.address)
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_ping_s(env: Mapping[str, str] = os.environ) -> float | None:
    """Seconds between WATCHDOG=1 pings: half of $WATCHDOG_USEC; None when the watchdog is not on
    for this process ($WATCHDOG_PID names another one, or no watchdog)."""
    usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2e6 if value > 0 else None


@dataclass(frozen=True)
class Sample:
    """A look at the pipeline's counters (plain reads of the stage counters the Probe holds, from any thread)."""

    lines: int  # lines the stitcher took in
    tiles: int  # tiles cut
    inferred: int  # strips through the model
    pending: int  # strips waiting for the model
    queue_tiles: int  # messages waiting for the inference thread
    queue_detections: int  # messages waiting for the assembler
    assembled: int  # the assembler's done_line: every line below it is through assembly
    hides: int  # hides finished
    camera_waits: int  # the camera's fetch timeouts + reconnects: they move while it waits for lines
    belt_stopped: bool  # the PLC says the line is not running

    @classmethod
    def of(cls, probe: Probe, camera: AcquisitionStats | None) -> Sample:
        lines, inferred, pending = probe.progress()
        qt, qd = probe.q_tiles, probe.q_dets
        return cls(
            lines=lines,
            tiles=probe.stitch.tiles_out,
            inferred=inferred,
            pending=pending,
            queue_tiles=qt.qsize() if qt is not None else 0,
            queue_detections=qd.qsize() if qd is not None else 0,
            assembled=probe.assembly.done_line,
            hides=probe.assembly.hides,
            camera_waits=camera.fetch_timeouts + camera.reconnects if camera is not None else 0,
            belt_stopped=probe.plc_line_running() is False,
        )


class StallDetector:
    """The pipeline stage without progress for longer than ``stall_s``, or None.

    - source: no new lines while the camera is not visibly waiting. A line-scan camera triggered
      by the encoder of a stopped belt delivers nothing; its fetch timeouts (one per
      ``fetch_timeout_s``) and reconnects keep counting, which says the belt stopped and the
      camera thread is alive. A PLC that reports LINE_RUNNING = 0 says the same.
    - inference: strips wait for the model and none came out.
    - assembly: messages wait for the assembler and it did not move on.

    Checked downstream first: a stuck stage backs up the ones before it (a full detections queue
    blocks the inference thread), so the last stuck stage is the cause.
    """

    STAGES = ("assembly", "inference", "source")

    def __init__(self, stall_s: float, now: float) -> None:
        self.stall_s = stall_s
        self.last_moved = dict.fromkeys(self.STAGES, now)
        self._prev: Sample | None = None

    def update(self, s: Sample, now: float) -> str | None:
        p = self._prev or s
        self._prev = s
        moved = {
            "assembly": s.assembled > p.assembled or s.queue_detections == 0,
            "inference": s.inferred > p.inferred or s.pending == 0,
            "source": s.lines > p.lines or s.camera_waits > p.camera_waits or s.belt_stopped,
        }
        for stage, yes in moved.items():
            if yes:
                self.last_moved[stage] = now
        return next((st for st in self.STAGES if now - self.last_moved[st] > self.stall_s), None)


class Marks:
    """This run's marks for STATUS=: planned (the run's "mark" events) and waiting for the PLC's ack."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        self.planned = 0

    def counting(self, publish: Publish | None) -> Publish:
        """A publish function for run_live that counts marks, then hands every event to ``publish``."""

        def on_event(topic: str, data: dict[str, Any]) -> None:
            if topic == "mark":
                self.planned += 1
            if publish is not None:
                publish(topic, data)

        return on_event

    def pending(self) -> int | None:
        """Marks the PLC has not acknowledged yet; None without a PLC."""
        plc = self.probe.marks().get("plc")
        return None if plc is None else int(plc.get("pending", 0))


class Supervisor(threading.Thread):
    """Tells systemd how the run goes: EXTEND_TIMEOUT_USEC while starting, then READY=1,
    WATCHDOG=1 while the pipeline progresses (or while draining), STATUS= every STATUS_S.

    ``ping_s``: seconds between pings (``watchdog_ping_s()``); None: no pings, a stall is still
    logged. ``ready`` is run_live's ``on_ready``; ``draining`` marks the stop; ``close`` the end.
    """

    def __init__(self, notifier: Notifier, probe: Probe, *, stall_s: float, ping_s: float | None,
                 marks: Marks | None = None) -> None:
        super().__init__(name="ei-service", daemon=True)
        self.notifier, self.probe, self.stall_s, self.ping_s, self.marks = notifier, probe, stall_s, ping_s, marks
        self.phase = "starting"  # -> running -> draining
        self.stalled: str | None = None  # the stuck stage while pings are held back
        self._t0 = time.monotonic()
        self._camera: AcquisitionStats | None = None
        self._detector = StallDetector(stall_s, self._t0)
        self._halt = threading.Event()
        self._last = {"ping": -1e18, "status": -1e18, "extend": -1e18}
        self._rate_from: tuple[float, int, int] | None = None  # (time, lines, tiles) of the last STATUS=

    def ready(self, source: GenICamSource | None = None) -> None:
        """The model is warm and the camera streams: READY=1; the watchdog starts looking."""
        now = time.monotonic()
        self._camera = source.stats if source is not None else None
        self._detector = StallDetector(self.stall_s, now)
        self.phase = "running"
        self._last["status"] = now
        self.notifier.notify("READY=1", f"STATUS={self.status_text(now)}")
        log.info("ready", start_s=round(now - self._t0, 2), watchdog_ping_s=self.ping_s,
                 notify=self.notifier.enabled)

    def telemetry_extra(self) -> dict[str, Any]:
        """Sections for the "metrics" events (events.Telemetry's ``extra``): camera counters, marks, PLC link."""
        out = self.probe.marks()
        if self._camera is not None:
            out["camera"] = self._camera.as_dict()
        return out

    def draining(self) -> None:
        """A stop began: STOPPING=1. Pings go on while the run drains (bounded by drain_timeout_s)."""
        if self.phase == "draining":
            return
        self.phase = "draining"
        self.notifier.notify("STOPPING=1", "STATUS=draining: strips in flight, open hides, marks, summary")

    def close(self, status: str) -> None:
        """End the thread; the last STATUS=."""
        self._halt.set()
        if self.is_alive():
            self.join()
        self.notifier.notify(f"STATUS={status}")

    def run(self) -> None:
        tick = min(TICK_S, self.ping_s or TICK_S)
        while True:
            self._step(time.monotonic())
            if self._halt.wait(tick):
                return

    def _step(self, now: float) -> None:
        if self.phase == "starting":
            self._extend_start(now)
            return
        healthy = self.phase == "draining" or self._check(now)
        if healthy and self.ping_s is not None and now - self._last["ping"] >= self.ping_s:
            self._last["ping"] = now
            self.notifier.notify("WATCHDOG=1")
        if now - self._last["status"] >= STATUS_S:
            self._last["status"] = now
            self.notifier.notify(f"STATUS={self.status_text(now)}")
            logs.flush_repeats()

    def _extend_start(self, now: float) -> None:
        """Slow start (model load and warm-up, camera open): ask for EXTEND_S more, up to START_EXTEND_MAX_S."""
        if now - self._t0 > START_EXTEND_MAX_S or now - self._last["extend"] < EXTEND_EVERY_S:
            return
        self._last["extend"] = now
        self.notifier.notify(f"EXTEND_TIMEOUT_USEC={int(EXTEND_S * 1e6)}", f"STATUS={self.status_text(now)}")

    def _check(self, now: float) -> bool:
        """True while no stage is stuck; logs when one gets stuck and when it moves again."""
        sample = Sample.of(self.probe, self._camera)
        stage = self._detector.update(sample, now)
        if stage is not None and self.stalled is None:
            log.error("pipeline stalled", stage=stage, stall_s=self.stall_s,
                      watchdog="pings stopped, systemd restarts the service" if self.ping_s else "off",
                      **asdict(sample))
            self.notifier.notify(f"STATUS={self.status_text(now, stage)}")
        elif stage is None and self.stalled is not None:
            log.warning("pipeline progressing again", stage=self.stalled)
        self.stalled = stage
        return stage is None

    def status_text(self, now: float, stalled: str | None = None) -> str:
        """One line for STATUS=: throughput since the last one, queue depths, hides, marks."""
        if self.phase == "starting":
            return f"starting: loading the model, opening the camera ({now - self._t0:.0f} s)"
        s = Sample.of(self.probe, self._camera)
        rates = "- lines/s, - tiles/s"
        if self._rate_from is not None and now > self._rate_from[0]:
            t, lines, tiles = self._rate_from
            rates = f"{(s.lines - lines) / (now - t):,.0f} lines/s, {(s.tiles - tiles) / (now - t):.1f} tiles/s"
        self._rate_from = (now, s.lines, s.tiles)
        state = f"STALLED in {stalled}" if stalled else ("draining" if self.phase == "draining" else "running")
        text = (f"{state}: {rates}, queues tiles {s.queue_tiles} detections {s.queue_detections},"
                f" strips pending {s.pending}, {s.hides} hides")
        if self.marks is not None:
            pending = self.marks.pending()
            text += f", marks {self.marks.planned} planned {'-' if pending is None else pending} pending"
        return text


class RunThread(threading.Thread):
    """Runs ``fn`` (the live run) off the main thread, which keeps the signal handlers and bounds the drain.

    The caller's contextvars (structlog's bound fields) go with it.
    """

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(name="ei-run", daemon=True)
        self._fn, self._ctx = fn, contextvars.copy_context()
        self._value: Any = None
        self._error: BaseException | None = None

    def run(self) -> None:
        try:
            self._value = self._ctx.run(self._fn)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread by result()
            self._error = e

    def wait(self, stop: threading.Event, drain_timeout_s: float, on_stop: Callable[[], None]) -> bool:
        """Until ``fn`` returns: True. Once ``stop`` is set, ``on_stop()`` and at most ``drain_timeout_s``
        more; False when ``fn`` is still running then (it is left behind: a daemon thread)."""
        while self.is_alive() and not stop.is_set():
            self.join(0.2)
        if stop.is_set():
            on_stop()
            self.join(drain_timeout_s)
        return not self.is_alive()

    def result(self) -> Any:
        """What ``fn`` returned; what it raised is raised here."""
        if self._error is not None:
            raise self._error
        return self._value


@contextmanager
def _events(station: Station, probe: Probe, stop: threading.Event,
            extra: Callable[[], dict[str, Any]]) -> Iterator[Publish | None]:
    """ZeroMQ events and telemetry for the run when ``[events] enabled`` (edge_inspector/events.py)."""
    if not station.events.enabled:
        yield None
        return
    from .events import EventPublisher, Telemetry

    with EventPublisher(station.events.endpoint, station.station.name) as publisher:
        telemetry = Telemetry(publisher, probe, period_s=station.events.metrics_period_s, extra=extra, stopping=stop)
        telemetry.start()
        try:
            yield publisher.publish
        finally:
            telemetry.stop()


def run_service(
    station: Station,
    out_dir: Path,
    *,
    seconds: float | None = None,
    model_path: str | None = None,
    plc: str | None = None,
    summary_table: bool = True,
) -> int:
    """``edge-inspector run``: the live run with sd_notify, watchdog, bounded drain and events; the exit code.

    0 after a clean end (a stop drained within ``service.drain_timeout_s``, or ``seconds`` passed);
    dispatch.EXIT_MARKS_NOT_FIRED when marks were not fired (summary marks.not_fired);
    EXIT_INTERRUPTED when a second stop signal cut the drain short (summary written);
    EXIT_DRAIN_TIMEOUT when the drain took longer: the run is still going in its daemon thread,
    so the caller should exit without waiting for it (``os._exit``). Bad input, and a camera that
    does not come back, raise InputError/CameraError as run_live does. The summary is printed as a
    table (``summary_table``) or logged as one "run summary" event (JSON logs for journald).
    """
    svc = station.service
    notifier = Notifier.from_env()
    probe = Probe()
    marks = Marks(probe)
    supervisor = Supervisor(notifier, probe, stall_s=svc.stall_s, ping_s=watchdog_ping_s(), marks=marks)
    stop = threading.Event()
    hurry = threading.Event()
    status = "stopped: the run failed (see the log)"
    with (logs.process_context(station=station.station.name),
          _events(station, probe, stop, supervisor.telemetry_extra) as publish):
        try:
            supervisor.start()
            run = RunThread(lambda: run_live(
                station, out_dir, seconds=seconds, model_path=model_path, stop=stop, on_ready=supervisor.ready,
                plc=plc, probe=probe, publish=marks.counting(publish), hurry=hurry,
            ))
            with stop_on_signals(stop, hurry):
                run.start()
                drained = run.wait(stop, svc.drain_timeout_s, on_stop=supervisor.draining)
            if not drained:
                log.error("drain took longer than service.drain_timeout_s; exiting without it",
                          drain_timeout_s=svc.drain_timeout_s, **asdict(Sample.of(probe, None)))
                status = f"stopped: drain exceeded {svc.drain_timeout_s:g} s; finished hides are written"
                return EXIT_DRAIN_TIMEOUT
            _, summary = run.result()
            status = f"stopped: {summary['hides']} hides, {summary['defects']} defects, results in {out_dir}"
        finally:
            supervisor.close(status)
            notifier.close()
            logs.flush_repeats(everything=True)
        _report(summary, out_dir, summary_table)
    if hurry.is_set():
        return EXIT_INTERRUPTED
    from .dispatch import exit_status

    return exit_status(summary.get("marks"))


SUMMARY_FIELDS = ("lines", "lines_lost", "strips_dropped", "tiles", "hides", "defects", "grades", "lines_per_s",
                  "tiles_per_s", "camera_error")


def _report(summary: dict[str, Any], out_dir: Path, table: bool) -> None:
    """The run summary for a person (the table of ``replay``) or for journald (one JSON event)."""
    if table:
        from .replay import format_summary

        print(format_summary(summary, out_dir))
    else:
        log.info("run summary", out=str(out_dir), **{k: summary.get(k) for k in SUMMARY_FIELDS},
                 marks=summary["marks"].get("planned"), marks_not_fired=summary["marks"].get("not_fired"))
