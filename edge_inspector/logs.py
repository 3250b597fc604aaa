"""Logging set-up: structlog, readable console lines on a terminal, JSON lines otherwise."""

from __future__ import annotations

import logging
import sys

import structlog


class _StderrLogger:
    """Writes to whatever ``sys.stderr`` is at the time of the call (not at configure time)."""

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    log = debug = info = warn = warning = error = critical = exception = fatal = failure = err = msg


def _stderr_logger(*_args: object) -> _StderrLogger:
    return _StderrLogger()


def configure(level: str = "info", json: bool | None = None) -> None:
    """Console renderer on a TTY, JSON lines (for journald) when stderr is not a terminal."""
    if json is None:
        json = not sys.stderr.isatty()
    lvl = getattr(logging, level.upper(), logging.INFO)
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=processors + [renderer],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
