"""Logging (edge_inspector/logs.py): JSON lines off a terminal, console lines on one, process-wide
context from every thread, repeats collapsed into one counted summary."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import threading
import time

import structlog

from edge_inspector import logs


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_json_lines_on_stdout_when_it_is_not_a_terminal(capsys):
    logs.configure("info", stream="stdout")  # pytest's captured stdout is not a terminal
    structlog.get_logger().warning("camera lost", reason="cable", frames=3)
    out, err = capsys.readouterr()
    (ev,) = _json_lines(out)
    assert err == ""
    assert ev["event"] == "camera lost" and ev["reason"] == "cable" and ev["frames"] == 3
    assert ev["level"] == "warning" and ev["timestamp"].endswith("Z")


def test_console_lines_on_a_terminal():
    """A real pseudo-terminal as stdout: readable lines, not JSON."""
    master, slave = pty.openpty()
    code = ("import structlog; from edge_inspector import logs; logs.configure('info', stream='stdout');"
            " structlog.get_logger().warning('camera lost', reason='cable')")
    try:
        proc = subprocess.run([sys.executable, "-c", code], stdout=slave, stderr=subprocess.PIPE, timeout=60)
        os.close(slave)
        out = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed its end
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.close(master)
    assert proc.returncode == 0, proc.stderr.decode()
    text = out.decode()
    assert "camera lost" in text and "reason=cable" in text and "[warning" in text
    assert not text.lstrip().startswith("{")


def test_process_context_reaches_every_thread_and_contextvars_add_to_it(capsys):
    logs.configure("info", json=True, stream="stdout")
    log = structlog.get_logger()

    def in_thread() -> None:
        log.info("from a pipeline thread")

    with logs.process_context(station="line-7"):
        with structlog.contextvars.bound_contextvars(hide_id=12):
            log.info("from the caller")
        t = threading.Thread(target=in_thread)
        t.start()
        t.join()
    log.info("after the run")
    caller, thread, after = _json_lines(capsys.readouterr().out)
    assert caller["station"] == "line-7" and caller["hide_id"] == 12
    assert thread["station"] == "line-7" and "hide_id" not in thread  # contextvars stay in their thread
    assert "station" not in after


def test_repeats_are_collapsed_into_one_summary_with_the_count(capsys):
    logs.configure("info", json=True, stream="stdout", repeat_limit=3, repeat_window_s=0.3)
    log = structlog.get_logger()
    for i in range(10):
        log.warning("camera fetch timeout", waited_s=1.0 + i, in_row=i)  # numbers differ: still a repeat
    for i in range(5):
        log.info("hide", hide_id=i)  # ids differ: every hide is its own event
    log.warning("camera fetch timeout", device="other")  # another text field: another event
    time.sleep(0.35)
    log.warning("camera fetch timeout", waited_s=99.0, in_row=0)  # the next window
    evs = _json_lines(capsys.readouterr().out)
    timeouts = [e for e in evs if e["event"] == "camera fetch timeout" and "device" not in e]
    assert [e.get("repeated") for e in timeouts] == [None, None, None, 7, None]
    summary = timeouts[3]
    assert summary["level"] == "warning" and summary["window_s"] == 0.3 and summary["in_row"] == 0
    assert timeouts[4]["waited_s"] == 99.0  # the summary comes before the next event
    assert [e["hide_id"] for e in evs if e["event"] == "hide"] == [0, 1, 2, 3, 4]
    assert sum(1 for e in evs if e.get("device") == "other") == 1


def test_flush_reports_repeats_still_held_at_the_end(capsys):
    logs.configure("info", json=True, stream="stdout", repeat_limit=1, repeat_window_s=60.0)
    log = structlog.get_logger()
    for _ in range(4):
        log.error("plc unreachable", plc="10.0.0.5:502")
    logs.flush_repeats()  # the window has not ended: nothing yet
    assert len(_json_lines(capsys.readouterr().out)) == 1
    logs.flush_repeats(everything=True)
    (summary,) = _json_lines(capsys.readouterr().out)
    assert summary["event"] == "plc unreachable" and summary["repeated"] == 3 and summary["plc"] == "10.0.0.5:502"
    assert summary["level"] == "error"
