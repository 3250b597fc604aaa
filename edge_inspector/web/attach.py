"""The web view beside a running station: ``replay --web``, ``run --web``, ``web RUN_DIR --events``.

``replay --web`` has no events publisher of its own: ``replay_events`` binds one on a free
loopback port, with the metrics telemetry (edge_inspector/events.py), and the web view's live feed
subscribes to it. ``run --web`` subscribes to the station's ``[events] endpoint``, which the service
binds (edge_inspector/service.py). Either way the page is fed by the same ZeroMQ events a
``edge-inspector monitor`` sees.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..config import Station
from ..errors import InputError
from ..events import EventPublisher, Telemetry
from ..probe import Probe
from ..run import Publish
from ..runfiles import DB_NAME
from .live import LiveFeed
from .server import WebServer, feed_for_station


@dataclass
class WebOptions:
    """``--host``, ``--port``, ``--token`` of a command."""

    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None


@dataclass
class ReplayEvents:
    publish: Publish
    probe: Probe
    server: WebServer


@contextmanager
def replay_events(station: Station, out_dir: Path, opts: WebOptions) -> Iterator[ReplayEvents]:
    """Publisher (free loopback port) + telemetry + web server with a live feed, for one replay."""
    with EventPublisher("tcp://127.0.0.1:*", station.station.name) as pub:
        feed = feed_for_station(station, pub.endpoint)
        server = WebServer(out_dir, host=opts.host, port=opts.port, token=opts.token, feed=feed)
        probe = Probe()
        stopping = threading.Event()
        tel = Telemetry(pub, probe, period_s=station.events.metrics_period_s, extra=probe.marks, stopping=stopping)
        server.start()
        feed.connected.wait(5)
        tel.start()
        try:
            yield ReplayEvents(pub.publish, probe, server)
        except BaseException:
            server.stop()
            raise
        finally:
            tel.stop()  # the last sample: state "stopping"


def station_feed(station: Station) -> LiveFeed:
    """The live feed of ``run --web``: the station's own events endpoint."""
    ev = station.events
    if not ev.enabled:
        raise InputError("the live page needs the station's events", where="events.enabled",
                         hint="set [events] enabled = true, or drop --web")
    if ev.endpoint.endswith(":*"):
        raise InputError(f"the live page cannot find a station publishing on any free port ({ev.endpoint})",
                         where="events.endpoint", hint="give a fixed port, e.g. tcp://127.0.0.1:5556")
    return feed_for_station(station, ev.endpoint)


def folder_feed(run_dir: Path, endpoint: str) -> LiveFeed:
    """A live feed of ``endpoint`` with the scales of the newest run in ``run_dir`` (defaults without one)."""
    station = Station()
    db = Path(run_dir) / DB_NAME
    if db.is_file():
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
        try:
            row = conn.execute("SELECT run_info FROM runs ORDER BY run_id DESC LIMIT 1").fetchone()
        except sqlite3.DatabaseError:
            row = None
        finally:
            conn.close()
        try:
            st = json.loads(row[0]).get("station") if row and row[0] else None
            if st:
                station = Station.model_validate(st)
        except ValueError:
            pass
    return feed_for_station(station, endpoint)
