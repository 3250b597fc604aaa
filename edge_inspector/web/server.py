"""Running the web view: address rules, the uvicorn server in a thread, the live feed for a run.

Loopback (127.0.0.1, ::1, localhost) by default. Any other address is refused unless a token is
given (``--token`` or $EDGE_INSPECTOR_WEB_TOKEN): the station's results would otherwise be open to
the plant network. There is no login beyond that token.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import structlog
import uvicorn

from ..config import Station
from ..errors import InputError
from .app import create_app
from .live import LiveFeed

log = structlog.get_logger(__name__)

DEFAULT_PORT = 8080
TOKEN_ENV = "EDGE_INSPECTOR_WEB_TOKEN"
MIN_TOKEN = 12


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_address(host: str, token: str | None) -> str | None:
    """The token to require (None: none); InputError for a non-loopback ``host`` without a usable token."""
    token = token or os.environ.get(TOKEN_ENV) or None
    if not is_loopback(host):
        if not token:
            raise InputError(f"refusing to serve on {host} without a token: anyone on that network could read"
                             " the station's results", where="--host",
                             hint=f"add --token TOKEN (or set ${TOKEN_ENV}), or leave --host at 127.0.0.1")
        if len(token) < MIN_TOKEN:
            raise InputError(f"the token is too short ({len(token)} characters; at least {MIN_TOKEN})",
                             where="--token", hint="e.g. python3 -c 'import secrets; print(secrets.token_urlsafe())'")
    return token


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port); InputError when it cannot bind."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as e:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {e.strerror}", where="--port",
                         hint="another program uses it; choose another --port (0: any free port)") from None
    sock.listen(64)
    sock.set_inheritable(True)
    return sock


class WebServer:
    """The app on a socket bound now, served by uvicorn in a daemon thread (``start``/``stop``)."""

    def __init__(self, run_dir: Path, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                 token: str | None = None, feed: LiveFeed | None = None) -> None:
        self.token = check_address(host, token)
        self.feed = feed
        self.sock = bind(host, port)
        self.host = host
        self.port = int(self.sock.getsockname()[1])
        self.app = create_app(run_dir, feed, token=self.token)
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        h = f"[{self.host.strip('[]')}]" if ":" in self.host.strip("[]") else self.host
        return f"http://{h}:{self.port}/"

    def start(self) -> WebServer:
        if self.feed is not None:
            self.feed.start()
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                        name="ei-web", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        log.info("web view", url=self.url)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.feed is not None:
            self.feed.stop()
        self.sock.close()

    def __enter__(self) -> WebServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def feed_for_station(station: Station, endpoint: str) -> LiveFeed:
    """A live feed of ``endpoint`` with the station's scales."""
    cam = station.camera
    return LiveFeed(endpoint, mm_per_line=cam.mm_per_line, belt_width_mm=cam.width * cam.mm_per_px,
                    station=station.station.name)


def serve_until_stopped(server: WebServer, seconds: float | None = None) -> None:
    """Block until SIGINT/SIGTERM (or ``seconds``), then stop ``server``."""
    import signal

    stop = threading.Event()
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, lambda *_: stop.set())
    try:
        stop.wait(seconds)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        server.stop()
