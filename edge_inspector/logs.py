"""Logging set-up: structlog, readable console lines on a terminal, JSON lines otherwise.

Every event carries its level and an ISO timestamp, the fields bound with
``structlog.contextvars`` in the calling thread, and the process-wide fields of
``process_context()`` (the station name: a thread started by a library has an empty contextvars
context, so per-thread binding alone would miss the camera, pipeline and PLC threads).

Repeats are rate-limited (``RepeatLimiter``): per window, the first few events with the same
event, level and text fields pass; the rest are dropped and counted, and one summary event with
``repeated=K`` follows (before the next such event, or on ``flush_repeats()``).

``run`` (the service, docs/service.md) logs to stdout, where journald reads the JSON lines; the
other commands log to stderr because their stdout is their product (bench JSON, reports).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import structlog
from structlog.typing import EventDict, WrappedLogger

Stream = Literal["stdout", "stderr"]

REPEAT_LIMIT = 5
"""Identical events let through per window before the rest are counted instead of written."""
REPEAT_WINDOW_S = 10.0
MAX_WINDOWS = 1000  # distinct events remembered before the ended windows are dropped


class _StreamLogger:
    """Writes one line to whatever ``sys.stdout``/``sys.stderr`` is at the time of the call.

    Looked up per call (not at configure time) so pytest's capture and redirections work; one
    ``write`` per line under a lock, so lines from different threads never interleave.
    """

    _lock = threading.Lock()

    def __init__(self, stream: Stream) -> None:
        self.stream = stream

    def msg(self, message: str) -> None:
        out = getattr(sys, self.stream)
        with self._lock:
            out.write(message + "\n")
            out.flush()

    log = debug = info = warn = warning = error = critical = exception = fatal = failure = err = msg


class _StreamLoggerFactory:
    def __init__(self, stream: Stream) -> None:
        self.stream = stream

    def __call__(self, *_args: object) -> _StreamLogger:
        return _StreamLogger(self.stream)


_process_fields: dict[str, Any] = {}


@contextmanager
def process_context(**fields: Any) -> Iterator[None]:
    """Add ``fields`` to every event of every thread while the block runs (e.g. ``station=``)."""
    previous = dict(_process_fields)
    _process_fields.update(fields)
    try:
        yield
    finally:
        _process_fields.clear()
        _process_fields.update(previous)


def _add_process_fields(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    for k, v in _process_fields.items():
        event_dict.setdefault(k, v)
    return event_dict


class RepeatLimiter:
    """structlog processor: at most ``limit`` identical events per ``window_s``, then one summary.

    Identical: same event, level, text fields (str, bool, None) and ids (``id``, ``*_id``). Other
    numbers are measurements, so "camera fetch timeout" repeats although its waited_s differs each
    time, while "hide" events of different hides never collapse. The summary is the event itself with ``repeated`` (how many were
    dropped) and ``window_s``; it is logged before the next identical event after the window, or
    by ``flush()`` (the service calls ``flush_repeats()`` every few seconds and at the end).
    """

    def __init__(self, limit: int = REPEAT_LIMIT, window_s: float = REPEAT_WINDOW_S) -> None:
        self.limit = limit
        self.window_s = window_s
        self._lock = threading.Lock()
        self._windows: dict[tuple[Any, ...], _Window] = {}

    def __call__(self, _logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
        if "repeated" in event_dict:  # our own summary
            return event_dict
        key = _key(event_dict)
        now = time.monotonic()
        with self._lock:
            w = self._windows.get(key)
            ended = w if w is not None and now - w.start >= self.window_s else None
            if w is None or ended is not None:
                w = self._windows[key] = _Window(now, dict(event_dict))
            w.count += 1
            drop = w.count > self.limit
            if drop:
                w.dropped += 1
        if ended is not None and ended.dropped:
            self._emit([ended])
        if len(self._windows) > MAX_WINDOWS:  # many distinct events (ids): forget the ended windows
            self.flush()
        if drop:
            raise structlog.DropEvent
        return event_dict

    def flush(self, *, everything: bool = False) -> None:
        """Log the summaries of windows that ended (``everything``: of every window now)."""
        now = time.monotonic()
        with self._lock:
            done = [k for k, w in self._windows.items() if everything or now - w.start >= self.window_s]
            ended = [self._windows.pop(k) for k in done]
        self._emit([w for w in ended if w.dropped])

    def _emit(self, windows: list[_Window]) -> None:
        log = structlog.get_logger("edge_inspector.logs")
        for w in windows:
            fields = {k: v for k, v in w.first.items() if k not in ("event", "level", "timestamp", "exc_info")}
            getattr(log, w.first.get("level", "info"))(
                w.first["event"], **fields, repeated=w.dropped, window_s=self.window_s,
            )


@dataclass
class _Window:
    start: float
    first: EventDict
    count: int = 0
    dropped: int = 0


def _key(event_dict: EventDict) -> tuple[Any, ...]:
    """What makes events identical: the event, and its text fields and ids (level included)."""
    ident = tuple(sorted(
        (k, repr(v)) for k, v in event_dict.items()
        if k != "event" and (v is None or isinstance(v, (str, bool)) or k == "id" or k.endswith("_id"))
    ))
    return (str(event_dict.get("event")), ident)


_limiter: RepeatLimiter | None = None


def configure(level: str = "info", json: bool | None = None, stream: Stream = "stderr",
              repeat_limit: int = REPEAT_LIMIT, repeat_window_s: float = REPEAT_WINDOW_S) -> None:
    """Console lines on a terminal, JSON lines (for journald) when ``stream`` is not one or ``json``."""
    global _limiter
    if json is None:
        json = not getattr(sys, stream).isatty()
    _limiter = RepeatLimiter(repeat_limit, repeat_window_s)
    lvl = getattr(logging, level.upper(), logging.INFO)
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        _add_process_fields,
        structlog.processors.add_log_level,
        _limiter,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: list[structlog.typing.Processor] = (
        [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()] if json
        else [structlog.dev.ConsoleRenderer(colors=False)]
    )
    structlog.configure(
        processors=processors + renderer,
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=_StreamLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )


def flush_repeats(*, everything: bool = False) -> None:
    """Log the "repeated K times" summaries that are due (``everything``: all of them, at exit)."""
    if _limiter is not None:
        _limiter.flush(everything=everything)
