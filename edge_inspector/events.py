"""Events and metrics over ZeroMQ PUB (docs/architecture.md section 11; the schema: docs/events.md).

::

    pub = EventPublisher("tcp://127.0.0.1:5556", station="line-1")   # binds; InputError when it cannot
    run_live(..., probe=probe, publish=pub.publish)                    # "hide", "defect", "mark"
    tel = Telemetry(pub, probe, period_s=1.0, stopping=stop, extra=lambda: {"plc": link.stats()}).start()
    ...
    tel.stop(); pub.close()

Every message is two frames: the topic (UTF-8) and a JSON envelope
``{"v": 1, "topic", "station", "seq", "ts", "data"}``. ``seq`` numbers every ``publish`` call,
dropped events included, so a subscriber sees lost events as a gap. ``publish`` never blocks: it numbers the
event and puts it on a bounded queue; a sender thread encodes and sends it. A full queue drops
the event (``dropped``); a subscriber that reads too slowly loses events at ZeroMQ's high-water
mark (``SNDHWM``, per subscriber) and sees the gap in ``seq``.

``decode(frames)`` turns a received message back into an ``Event`` and refuses other schema
versions and garbage with an ``EventError`` that says what is wrong.
"""

from __future__ import annotations

import json
import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
import zmq

from .errors import InputError
from .probe import Probe

log = structlog.get_logger(__name__)

SCHEMA_VERSION = 1
TOPICS = ("defect", "hide", "mark", "metrics", "health")
DEFAULT_ENDPOINT = "tcp://127.0.0.1:5556"
HEALTH_STATES = ("starting", "running", "degraded", "stopping", "fault")
_LOOPBACK = ("127.0.0.1", "localhost", "[::1]", "::1")
_STOP = object()


class EventError(ValueError):
    """A received message that is not an edge-inspector event this code can read."""


@dataclass(frozen=True, slots=True)
class Event:
    """One decoded event: the envelope's fields (docs/events.md)."""

    topic: str
    station: str
    seq: int
    ts: float
    data: dict[str, Any]
    v: int = SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        """The envelope as it travels: {"v", "topic", "station", "seq", "ts", "data"}."""
        return {"v": self.v, "topic": self.topic, "station": self.station, "seq": self.seq, "ts": self.ts,
                "data": self.data}


def _jsonable(o: Any) -> Any:
    """json.dumps fallback: numpy scalars and arrays, tuples of them, anything else as text."""
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


def encode(event: Event) -> list[bytes]:
    """The two frames of ``event``: topic, JSON envelope."""
    body = json.dumps(event.to_json(), default=_jsonable, separators=(",", ":"))
    return [event.topic.encode(), body.encode()]


def decode(frames: Sequence[bytes]) -> Event:
    """A received multipart message -> Event; EventError for another schema version or garbage."""
    if len(frames) != 2:
        raise EventError(f"expected 2 frames (topic, JSON envelope), got {len(frames)}")
    topic_b, body_b = frames
    try:
        topic = bytes(topic_b).decode()
        env = json.loads(bytes(body_b))
    except (UnicodeDecodeError, ValueError) as e:
        raise EventError(f"not an edge-inspector event: {e}") from None
    if not isinstance(env, dict) or "v" not in env:
        raise EventError("not an edge-inspector event: the JSON envelope has no schema version \"v\"")
    if env["v"] != SCHEMA_VERSION:
        raise EventError(f"event schema version {env['v']!r} is not supported: this edge-inspector reads"
                         f" version {SCHEMA_VERSION} (update the subscriber or the station to the same release)")
    want = {"topic": str, "station": str, "seq": int, "ts": (int, float), "data": dict}
    bad = [k for k, t in want.items() if not isinstance(env.get(k), t) or isinstance(env.get(k), bool)]
    if bad:
        raise EventError(f"event envelope version 1: missing or mistyped field(s) {', '.join(bad)}")
    if env["topic"] != topic:
        raise EventError(f"topic frame {topic!r} differs from the envelope's topic {env['topic']!r}")
    return Event(topic, env["station"], env["seq"], float(env["ts"]), env["data"], SCHEMA_VERSION)


def subscribe(endpoint: str, topics: Sequence[str] = ()) -> zmq.Socket[bytes]:
    """A SUB socket connected to ``endpoint`` for ``topics`` (all when empty); the caller closes it."""
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(endpoint)
    except zmq.ZMQError as e:
        sock.close()
        raise InputError(f"cannot connect to the events endpoint {endpoint}: {e.strerror}",
                         hint="give tcp://HOST:PORT, e.g. tcp://127.0.0.1:5556") from None
    for t in topics or [""]:
        sock.setsockopt(zmq.SUBSCRIBE, t.encode())
    return sock


class EventPublisher:
    """A ZeroMQ PUB socket bound to ``endpoint``; ``publish(topic, data)`` from any thread.

    ``endpoint`` may end in ``:*`` (any free port); ``self.endpoint`` is the address bound.
    ``queue_size`` events wait for the sender thread at most; ``sndhwm`` messages wait per
    subscriber. ``close()`` sends what is queued (up to ``linger_s``) and closes the socket.
    """

    def __init__(self, endpoint: str, station: str, *, queue_size: int = 10_000, sndhwm: int = 1000,
                 linger_s: float = 1.0) -> None:
        self.station = station
        self._linger_ms = int(linger_s * 1000)
        self._sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.PUB)
        self._sock.setsockopt(zmq.SNDHWM, sndhwm)
        self._sock.setsockopt(zmq.LINGER, self._linger_ms)
        try:
            self._sock.bind(endpoint)
        except zmq.ZMQError as e:
            self._sock.close(linger=0)
            raise _bind_error(endpoint, e) from None
        self.endpoint: str = self._sock.getsockopt_string(zmq.LAST_ENDPOINT) or endpoint
        self._q: queue.Queue[object] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._seq = 0
        self._closed = False
        self._sent = 0
        self._dropped_queue = 0
        self._dropped_send = 0
        self._thread = threading.Thread(target=self._send_loop, name="ei-events", daemon=True)
        self._thread.start()
        if not _is_local(self.endpoint):
            log.warning("events endpoint is not loopback: anyone who can reach it reads the events",
                        endpoint=self.endpoint)
        log.info("events publishing", endpoint=self.endpoint, station=station)

    @property
    def sent(self) -> int:
        """Events handed to ZeroMQ."""
        return self._sent

    @property
    def dropped(self) -> int:
        """Events given up here: the queue was full, the data could not be encoded, or the publisher was closed.

        Events ZeroMQ drops for a subscriber that reads too slowly are not counted here: that
        subscriber sees them as a gap in ``seq``.
        """
        return self._dropped_queue + self._dropped_send

    def publish(self, topic: str, data: dict[str, Any]) -> None:
        """Number ``data`` as the next event of ``topic`` and queue it; never blocks.

        ``data`` must not change after the call (it is encoded later, by the sender thread).
        """
        if topic not in TOPICS:
            raise ValueError(f"unknown event topic {topic!r}; topics: {', '.join(TOPICS)}")
        with self._lock:
            self._seq += 1
            if self._closed:
                self._dropped_queue += 1
                return
            try:
                self._q.put_nowait(Event(topic, self.station, self._seq, time.time(), data))
                return
            except queue.Full:
                self._dropped_queue += 1
                dropped = self._dropped_queue
        if dropped % 1000 == 1:
            log.warning("events queue full: dropping events until the sender catches up", endpoint=self.endpoint,
                        dropped=dropped)

    def close(self) -> None:
        """Send what is queued, close the socket; later ``publish`` calls are counted as dropped."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._q.put(_STOP)
        self._thread.join(timeout=10)
        self._sock.close(linger=self._linger_ms)

    def __enter__(self) -> EventPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send_loop(self) -> None:
        while (ev := self._q.get()) is not _STOP:
            assert isinstance(ev, Event)
            try:  # a PUB socket never blocks: at a subscriber's SNDHWM ZeroMQ drops for that subscriber alone
                self._sock.send_multipart(encode(ev))
                self._sent += 1
            except (ValueError, zmq.ZMQError) as e:  # data json cannot take (a cycle), a terminated context
                self._dropped_send += 1
                log.error("event not sent", topic=ev.topic, seq=ev.seq, error=str(e))


def _bind_error(endpoint: str, e: zmq.ZMQError) -> InputError:
    if e.errno == zmq.EADDRINUSE:
        hint = "another program (a second edge-inspector?) publishes there; stop it or choose another port"
    else:
        hint = "give tcp://HOST:PORT, e.g. tcp://127.0.0.1:5556, or ipc:///run/edge-inspector/events"
    return InputError(f"cannot bind the events endpoint {endpoint}: {e.strerror}", where="events.endpoint",
                      hint=hint)


def _is_local(endpoint: str) -> bool:
    """ipc:// and inproc:// endpoints, and tcp:// on a loopback address."""
    if not endpoint.startswith("tcp://"):
        return True
    host = endpoint[len("tcp://"):].rsplit(":", 1)[0]
    return host in _LOOPBACK


# -- metrics and health --------------------------------------------------------------------------


class Publishes(Protocol):
    def publish(self, topic: str, data: dict[str, Any]) -> None: ...


def _alarm(code: str, message: str, severity: str = "warning") -> dict[str, str]:
    return {"code": code, "severity": severity, "message": message}


def _num(d: dict[str, Any] | None, key: str) -> float:
    v = (d or {}).get(key)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else 0.0


class HealthRules:
    """The station's health from consecutive "metrics" samples (docs/events.md, topic health).

    Conditions (PLC disconnected, no lines, ...) are alarms while they last. Counters that moved
    (lines lost, strips dropped, camera reconnects, late or missed marks) raise an alarm that is
    held ``hold_s`` after the last increase, so that a monitor refreshing once a second sees it.
    """

    def __init__(self, *, stall_s: float = 10.0, hold_s: float = 10.0, backlog_samples: int = 3,
                 queue_full: float = 0.9) -> None:
        self.stall_s = stall_s
        self.hold_s = hold_s
        self.backlog_samples = backlog_samples
        self.queue_full = queue_full
        self._prev: dict[str, Any] | None = None
        self._held: dict[str, tuple[float, dict[str, str]]] = {}
        self._backlog = 0
        self._no_ring = 0
        self._ran = False
        self._run_since = 0.0
        self._prev_plc: dict[str, Any] = {}

    def update(self, metrics: dict[str, Any], *, stopping: bool = False, now: float | None = None) -> dict[str, Any]:
        """{"state", "alarms"} for ``metrics`` (the newest sample)."""
        now = time.monotonic() if now is None else now
        prev, self._prev = self._prev or {}, metrics
        p = metrics.get("pipeline", {})
        if p.get("running") and not self._ran:
            self._ran, self._run_since = True, now
        for code, alarm in self._increases(prev, metrics):
            self._held[code] = (now + self.hold_s, alarm)
        self._held = {c: h for c, h in self._held.items() if h[0] > now}
        alarms = self._conditions(metrics, now, stopping) + [a for _, a in self._held.values()]
        alarms.sort(key=lambda a: (a["severity"] != "fault", a["code"]))
        if stopping:
            state = "stopping"
        elif any(a["severity"] == "fault" for a in alarms):
            state = "fault"
        elif not self._ran:
            state = "starting"
        else:
            state = "degraded" if alarms else "running"
        return {"state": state, "alarms": alarms}

    def _increases(self, prev: dict[str, Any], cur: dict[str, Any]) -> list[tuple[str, dict[str, str]]]:
        """Alarms for counters that went up since the previous sample."""
        rules = (
            ("pipeline", "lines_lost", "lines_lost", "camera lines lost: +{d:.0f} (total {t:.0f}); stretches uninspected"),
            ("pipeline", "strips_dropped", "strips_dropped", "strips dropped, the model is behind: +{d:.0f} (total {t:.0f})"),
            ("pipeline", "strips_model_failed", "model_unavailable", "the model server did not answer: +{d:.0f} strips"
             " uninspected (total {t:.0f})"),
            ("camera", "reconnects", "camera_reconnect", "camera lost and reconnected: +{d:.0f} (total {t:.0f})"),
            ("camera", "fetch_timeouts", "camera_timeout", "no buffer from the camera within fetch_timeout_s: +{d:.0f}"),
            ("marks", "late", "late_marks", "marks planned after their deadline: +{d:.0f} (total {t:.0f})"),
            ("marks", "not_fired_total", "marks_not_fired", "marks closed without being fired: +{d:.0f} (total {t:.0f})"),
            ("plc", "plc_marks_missed", "marks_missed", "marks the PLC could not fire in time: +{d:.0f} (total {t:.0f})"),
        )
        out = []
        for section, key, code, text in rules:
            if section not in cur or section not in prev:
                continue
            t, d = _num(cur[section], key), _num(cur[section], key) - _num(prev[section], key)
            if d > 0:
                out.append((code, _alarm(code, text.format(d=d, t=t))))
        return out

    def _conditions(self, m: dict[str, Any], now: float, stopping: bool) -> list[dict[str, str]]:
        """Alarms for what is wrong in this sample itself."""
        return self._pipeline_conditions(m.get("pipeline", {}), now, stopping) + self._plc_conditions(m.get("plc"))

    def _pipeline_conditions(self, p: dict[str, Any], now: float, stopping: bool) -> list[dict[str, str]]:
        if not p.get("running"):
            if self._ran and not stopping:
                return [_alarm("pipeline_stopped", "the pipeline ended without a stop request (camera lost?)", "fault")]
            return []
        out = []
        infer_age = p.get("last_infer_age_s")
        if p.get("strips_pending", 0) and infer_age is not None and infer_age > self.stall_s:
            out.append(_alarm("model_stalled", f"the model has not finished a strip for {infer_age:.0f} s with"
                              f" {p['strips_pending']} waiting", "fault"))
        block_age = p.get("last_block_age_s")
        if block_age is None:  # running, no line yet
            block_age = now - self._run_since
        if block_age > self.stall_s:
            out.append(_alarm("no_lines", f"no camera lines for {block_age:.0f} s (belt stopped, or camera lost)"))
        for q in ("tiles", "detections"):
            depth, cap = _num(p, f"queue_{q}"), _num(p, f"queue_{q}_max")
            if cap and depth >= self.queue_full * cap:
                out.append(_alarm(f"queue_{q}_full", f"{q} queue {depth:.0f}/{cap:.0f}: the next stage is behind"))
        self._no_ring = self._no_ring + 1 if p.get("ring_free_slots") == 0 else 0
        if self._no_ring >= 2:
            out.append(_alarm("ring_full", "no free tile slot in two samples: strips will be dropped (model too slow)"))
        return out

    def _plc_conditions(self, plc: dict[str, Any] | None) -> list[dict[str, str]]:
        if plc is None:
            return []
        out = []
        if not plc.get("connected"):
            out.append(_alarm("plc_disconnected", f"PLC {plc.get('plc', '')} not connected:"
                              f" {plc.get('last_error') or 'connecting'}; marks wait in the outbox"))
        if plc.get("problems"):
            out.append(_alarm("plc_link", "PLC link trouble: " + ", ".join(plc["problems"])))
        if plc.get("plc_faults"):
            out.append(_alarm("plc_faults", "PLC fault bits: " + ", ".join(plc["plc_faults"])))
        if plc.get("plc_heartbeat_lost"):
            out.append(_alarm("plc_heartbeat_lost", "the PLC reports the inspector's heartbeat lost"))
        pending, before = _num(plc, "pending"), _num(self._prev_plc, "pending")
        self._backlog = self._backlog + 1 if pending > before else 0
        if self._backlog >= self.backlog_samples:
            out.append(_alarm("marks_backlog", f"{pending:.0f} marks pending and growing: the PLC does not keep up"))
        self._prev_plc = plc
        return out


class Telemetry:
    """A daemon thread that publishes "metrics" and "health" every ``period_s`` (docs/events.md).

    ``extra()`` adds sections to each metrics sample, by convention ``plc`` (PlcLink.stats()),
    ``camera`` (AcquisitionStats.as_dict()) and ``marks`` (MarkPlanner.summary()); the health
    rules read them when present. ``stopping`` (the run's stop Event) turns the state to
    "stopping" once set; without it, a pipeline that ends is a fault. ``latest`` holds the last
    (metrics, health) pair, e.g. for the service's STATUS line.
    """

    def __init__(self, publisher: Publishes, probe: Probe, *, period_s: float = 1.0,
                 extra: Callable[[], dict[str, Any]] | None = None, stopping: threading.Event | None = None,
                 rules: HealthRules | None = None) -> None:
        if not period_s > 0 or not math.isfinite(period_s):
            raise InputError(f"metrics period must be > 0 s, got {period_s}", where="events.metrics_period_s")
        self.publisher = publisher
        self.probe = probe
        self.period_s = period_s
        self.extra = extra
        self.stopping = stopping or threading.Event()
        self.rules = rules or HealthRules()
        self.latest: tuple[dict[str, Any], dict[str, Any]] | None = None
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self._prev: tuple[float, dict[str, Any]] | None = None
        self._extra_failed = False
        self._failure = ""

    def start(self) -> Telemetry:
        """Publish a first sample now, then one every period."""
        if self._thread is None:
            self._halt.clear()
            self._thread = threading.Thread(target=self._loop, name="ei-telemetry", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """End the thread after one last sample with state "stopping"."""
        if self._thread is None:
            return
        self._halt.set()
        self._thread.join(timeout=10)
        self._thread = None
        self.stopping.set()
        self._sample_or_report()

    def _loop(self) -> None:
        while True:
            self._sample_or_report()
            if self._halt.wait(self.period_s):
                return

    def _sample_or_report(self) -> None:
        """``sample()``; when it fails, a "health" fault that names the error (logged once per new error)."""
        try:
            self.sample()
            self._failure = ""
        except Exception as e:  # a metrics problem must never end the thread or the run: tell the subscribers
            text = f"{type(e).__name__}: {e}"
            if text != self._failure:
                log.exception("telemetry sample failed")
            self._failure = text
            self.publisher.publish("health", {"state": "fault", "alarms": [
                _alarm("telemetry_failed", f"metrics sample failed: {text}", "fault")]})

    def sample(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Take one sample, publish "metrics" then "health", and return both."""
        now = time.monotonic()
        metrics = self._metrics(now)
        health = self.rules.update(metrics, stopping=self.stopping.is_set(), now=now)
        self.publisher.publish("metrics", metrics)
        self.publisher.publish("health", health)
        self.latest = (metrics, health)
        return metrics, health

    def _metrics(self, now: float) -> dict[str, Any]:
        snap = self.probe.snapshot()
        for name, q in (("queue_tiles_max", self.probe.q_tiles), ("queue_detections_max", self.probe.q_dets)):
            snap[name] = q.maxsize if q is not None else 0
        prev_t, prev = self._prev or (now - (snap["uptime_s"] or 0.0), {})
        self._prev = (now, snap)
        dt = max(now - prev_t, 1e-6)

        def rate(key: str, per: float = 1.0) -> float:
            return round(max(0.0, (snap[key] - prev.get(key, 0)) / dt * per), 2)

        out: dict[str, Any] = {
            "period_s": round(dt, 3),
            "rates": {"lines_per_s": rate("lines"), "tiles_per_s": rate("tiles"), "strips_per_s": rate("strips"),
                      "hides_per_min": rate("hides", 60.0), "defects_per_min": rate("defects", 60.0)},
            "pipeline": snap,
        }
        out.update(self._extra())
        publisher = self.publisher
        if isinstance(publisher, EventPublisher):
            out["events"] = {"sent": publisher.sent, "dropped": publisher.dropped}
        return out

    def _extra(self) -> dict[str, Any]:
        if self.extra is None:
            return {}
        try:
            return dict(self.extra())
        except Exception as e:  # noqa: BLE001 - a broken extra source leaves the rest of the metrics
            if not self._extra_failed:
                log.exception("telemetry extra() failed; metrics go on without it")
            self._extra_failed = True
            return {"extra_error": f"{type(e).__name__}: {e}"}
