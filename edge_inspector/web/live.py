"""The live feed: the station's ZeroMQ events (docs/events.md) turned into small browser messages.

A daemon thread subscribes to the station's events endpoint, keeps the state a freshly opened page
needs (``snapshot()``: status, health, the hide being scanned, the last finished hides) and hands
every message to each connected browser (``connect()``: one bounded asyncio queue per page,
filled from the thread with ``call_soon_threadsafe``; a page that reads too slowly loses messages,
counted in ``dropped``).

What a browser receives (``"type"``):

- ``status`` (once per ``metrics`` event, about 1/s): lines, lines/s, tiles/s, queues, ring, drops,
  PLC link and marks, events seen/lost, and ``head_mm``: the belt position under the camera now,
  in the marks' frame (the PLC encoder when a PLC reports it, else line x mm_per_line);
- ``health``: state and alarms;
- ``mark``: a mark handed to the PLC. ``hide_start`` opens the hide being scanned; ink and
  uninspected marks draw it as it grows (across mm, along from its leading edge);
- ``hide``: a finished, graded hide as vectors: outline, defects (class, score, area, outline) and
  uninspected stretches in belt-across / along-from-the-leading-edge mm, outlines thinned to at
  most ``MAX_OUTLINE_POINTS``. The picture comes separately as a JPEG thumbnail
  (``/api/runs/latest/hides/{id}/thumb.jpg``), never as camera pixels.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from typing import Any

import structlog
import zmq

from ..events import EventError, decode, subscribe

log = structlog.get_logger(__name__)

MAX_OUTLINE_POINTS = 400
MAX_DEFECT_POINTS = 48
RECENT_HIDES = 12
CLIENT_QUEUE = 256


def thin(pts: Any, n: int) -> list[list[float]]:
    """At most ``n`` points of a polygon (every k-th), rounded to 0.1 mm."""
    p = list(pts or [])
    step = max(1, -(-len(p) // n))
    return [[round(float(x), 1), round(float(y), 1)] for x, y in p[::step]]


def _shift(pts: Any, along0: float) -> list[list[float]]:
    return [[x, y - along0] for x, y in pts]


class LiveFeed:
    """Subscribes to ``endpoint`` and fans the events out to browsers (see the module docstring).

    ``mm_per_line`` converts the metrics' line counter into a belt position when no PLC reports
    one; ``belt_width_mm`` is the camera's field of view (the width of the live drawing).
    """

    def __init__(self, endpoint: str, *, mm_per_line: float, belt_width_mm: float, station: str = "") -> None:
        self.endpoint = endpoint
        self.mm_per_line = float(mm_per_line)
        self.belt_width_mm = float(belt_width_mm)
        self.station = station
        self.received = 0
        self.undecodable = 0
        self.gaps = 0  # events the station published that never reached this feed (seq gaps)
        self.dropped = 0  # messages not delivered to a slow page
        self._last_seq: int | None = None
        self._lock = threading.Lock()
        self._clients: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[str]]] = []
        self._status: dict[str, Any] | None = None
        self._health: dict[str, Any] | None = None
        self._scanning: dict[str, Any] | None = None
        self._recent: deque[dict[str, Any]] = deque(maxlen=RECENT_HIDES)
        self._defects: dict[int, list[dict[str, Any]]] = {}
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self.connected = threading.Event()

    # -- thread -------------------------------------------------------------------------------
    def start(self) -> LiveFeed:
        self._thread = threading.Thread(target=self._loop, name="ei-web-feed", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        sock = subscribe(self.endpoint)
        self.connected.set()
        try:
            while not self._halt.is_set():
                if not sock.poll(200):
                    continue
                frames = sock.recv_multipart()
                try:
                    ev = decode(frames)
                except EventError as e:
                    self.undecodable += 1
                    log.warning("web feed: undecodable event", error=str(e))
                    continue
                self._on_event(ev.topic, ev.seq, ev.data)
        except zmq.ZMQError as e:  # pragma: no cover - context terminated at exit
            log.warning("web feed ended", error=str(e))
        finally:
            sock.close()

    # -- events -> messages -------------------------------------------------------------------
    def _on_event(self, topic: str, seq: int, data: dict[str, Any]) -> None:
        self.received += 1
        if self._last_seq is not None and seq > self._last_seq + 1:
            self.gaps += seq - self._last_seq - 1
        self._last_seq = seq
        msg: dict[str, Any] | None = None
        with self._lock:
            if topic == "metrics":
                msg = self._status = self.status_of(data)
            elif topic == "health":
                msg = self._health = {"type": "health", "state": data.get("state"), "alarms": data.get("alarms", [])}
            elif topic == "defect":
                self._defects.setdefault(int(data.get("hide_id") or 0), []).append(data)
            elif topic == "mark":
                msg = self._mark(data)
            elif topic == "hide":
                msg = self.hide_message(data, self._defects.pop(int(data["hide_id"]), []))
                self._recent.appendleft(msg)
                if self._scanning is not None and self._scanning.get("hide_id") == msg["hide_id"]:
                    self._scanning = None
        if msg is not None:
            self._broadcast(msg)

    def status_of(self, m: dict[str, Any]) -> dict[str, Any]:
        """A ``metrics`` event -> the ``status`` message (a few hundred bytes)."""
        p, r = m.get("pipeline", {}), m.get("rates", {})
        plc, marks = m.get("plc"), m.get("marks") or {}
        head = None
        if plc and plc.get("connected") and plc.get("belt_mm") is not None:
            head = float(plc["belt_mm"])
        elif p.get("lines") is not None:
            head = (int(p.get("lines", 0)) + int(p.get("lines_lost", 0))) * self.mm_per_line
        keys = ("running", "lines", "lines_lost", "strips", "strips_dropped", "strips_pending", "tiles", "hides",
                "defects", "queue_tiles", "queue_tiles_max", "queue_detections", "queue_detections_max",
                "ring_free_slots", "infer_ms_last", "provider")
        return {
            "type": "status",
            "ts": time.time(),
            "station": self.station,
            **{k: p.get(k) for k in keys},
            "lines_per_s": r.get("lines_per_s"),
            "tiles_per_s": r.get("tiles_per_s"),
            "head_mm": round(head, 1) if head is not None else None,
            "plc": None if plc is None else {k: plc.get(k) for k in (
                "connected", "plc", "marks_sent", "marks_acked", "pending", "reconnects", "plc_marks_missed",
                "last_error")},
            "marks": {"planned": marks.get("planned", {}), "late": marks.get("late", 0)},
            "events": {**(m.get("events") or {}), "received": self.received, "lost": self.gaps,
                       "to_browsers_dropped": self.dropped},
        }

    def _mark(self, m: dict[str, Any]) -> dict[str, Any]:
        msg = {"type": "mark", **{k: m.get(k) for k in (
            "action", "belt_mm", "across_mm", "class", "hide_id", "length_mm", "late", "seq")}}
        if m.get("action") == "hide_start":
            self._scanning = {"hide_id": m.get("hide_id"), "start_mm": m.get("belt_mm"), "marks": []}
        elif self._scanning is not None and m.get("action") in ("ink", "uninspected_start", "uninspected_end"):
            self._scanning["marks"].append(msg)
            del self._scanning["marks"][:-500]
        return msg

    @staticmethod
    def hide_message(h: dict[str, Any], defects: list[dict[str, Any]]) -> dict[str, Any]:
        """A ``hide`` event (+ its ``defect`` events) -> vectors along from the leading edge."""
        along0 = float((h.get("origin_belt_mm") or [0.0, 0.0])[1])
        width = [p[0] for p in h.get("outline_belt_mm", [])] or [0.0]
        return {
            "type": "hide",
            **{k: h.get(k) for k in ("hide_id", "grade", "area_m2", "inspected_fraction", "defect_counts",
                                     "first_line", "last_line")},
            "outline": _shift(thin(h.get("outline_belt_mm"), MAX_OUTLINE_POINTS), along0),
            "uninspected": [[min(width), round(u["along_belt_mm"][0] - along0, 1), max(width),
                             round(u["along_belt_mm"][1] - along0, 1), u.get("reason")]
                            for u in h.get("uninspected", [])],
            "defects": [{"id": d.get("id"), "class": d.get("class"), "score": d.get("score"),
                         "area_mm2": d.get("area_mm2"),
                         "outline": _shift(thin(d.get("outline_belt_mm"), MAX_DEFECT_POINTS), along0)}
                        for d in defects],
            "thumb": f"/api/runs/latest/hides/{h.get('hide_id')}/thumb.jpg",
        }

    # -- browsers -----------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """What a page shows before the next event: geometry, status, health, scanning, recent hides."""
        with self._lock:
            return {"type": "snapshot", "endpoint": self.endpoint, "station": self.station,
                    "belt_width_mm": self.belt_width_mm, "mm_per_line": self.mm_per_line,
                    "status": self._status, "health": self._health,
                    "scanning": json.loads(json.dumps(self._scanning)) if self._scanning else None,
                    "recent": list(self._recent)}

    def connect(self) -> asyncio.Queue[str]:
        """A queue of JSON messages for one page (call from the server's event loop)."""
        q: asyncio.Queue[str] = asyncio.Queue(maxsize=CLIENT_QUEUE)
        with self._lock:
            self._clients.append((asyncio.get_running_loop(), q))
        return q

    def disconnect(self, q: asyncio.Queue[str]) -> None:
        with self._lock:
            self._clients = [c for c in self._clients if c[1] is not q]

    @property
    def n_clients(self) -> int:
        return len(self._clients)

    def _broadcast(self, msg: dict[str, Any]) -> None:
        text = json.dumps(msg, separators=(",", ":"))
        with self._lock:
            clients = list(self._clients)
        for loop, q in clients:
            try:
                loop.call_soon_threadsafe(self._put, q, text)
            except RuntimeError:  # the server's loop is closed
                self.disconnect(q)

    def _put(self, q: asyncio.Queue[str], text: str) -> None:
        try:
            q.put_nowait(text)
        except asyncio.QueueFull:
            self.dropped += 1
