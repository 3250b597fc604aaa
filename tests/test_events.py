"""Events over ZeroMQ on loopback (real sockets, no mocks): envelope, decoding, threads, health, monitor."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from edge_inspector.config import load_station
from edge_inspector.errors import InputError
from edge_inspector.events import (
    SCHEMA_VERSION,
    TOPICS,
    Event,
    EventError,
    EventPublisher,
    HealthRules,
    Telemetry,
    decode,
    encode,
    subscribe,
)
from edge_inspector.live import run_live
from edge_inspector.monitor import run_monitor
from edge_inspector.probe import Probe

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def endpoint() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


@pytest.fixture
def pub(endpoint: str) -> Iterator[EventPublisher]:
    p = EventPublisher(endpoint, "test-station", sndhwm=100_000)
    yield p
    p.close()


@pytest.fixture
def sub(endpoint: str) -> Iterator[zmq.Socket[bytes]]:
    s = subscribe(endpoint)
    s.setsockopt(zmq.RCVHWM, 0)
    yield s
    s.close()


def connected(pub: EventPublisher, sub: zmq.Socket[bytes]) -> int:
    """Publish "health" until the subscriber gets one (ZeroMQ drops what is sent before it joins); its seq."""
    end = time.monotonic() + 5
    while time.monotonic() < end:
        pub.publish("health", {"state": "starting", "alarms": []})
        if sub.poll(50):
            seq = decode(sub.recv_multipart()).seq
            while sub.poll(100):  # the other handshake events still in flight
                seq = decode(sub.recv_multipart()).seq
            return seq
    raise AssertionError("subscriber never connected")


def receive(sub: zmq.Socket[bytes], n: int, timeout_s: float = 5.0) -> list[Event]:
    out: list[Event] = []
    end = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < end:
        if sub.poll(100):
            out.append(decode(sub.recv_multipart()))
    return out


def test_every_topic_arrives_decoded_with_envelope_and_monotonic_seq(pub, sub):
    last = connected(pub, sub)
    t0 = time.time()
    for i, topic in enumerate(TOPICS):
        pub.publish(topic, {"n": i, "what": topic})
    got = receive(sub, len(TOPICS))
    assert [e.topic for e in got] == list(TOPICS)
    assert [e.seq for e in got] == list(range(last + 1, last + 1 + len(TOPICS)))
    for i, e in enumerate(got):
        assert e.v == SCHEMA_VERSION and e.station == "test-station" and e.data == {"n": i, "what": e.topic}
        assert t0 - 1 <= e.ts <= time.time() + 1
    raw = encode(got[0])
    assert raw[0] == TOPICS[0].encode()
    assert json.loads(raw[1]) == {"v": 1, "topic": got[0].topic, "station": "test-station", "seq": got[0].seq,
                                  "ts": got[0].ts, "data": {"n": 0, "what": TOPICS[0]}}


def test_decode_refuses_other_versions_and_garbage():
    env = {"v": 2, "topic": "hide", "station": "s", "seq": 1, "ts": 1.0, "data": {}}
    with pytest.raises(EventError, match=r"schema version 2 is not supported.*reads version 1"):
        decode([b"hide", json.dumps(env).encode()])
    with pytest.raises(EventError, match="expected 2 frames"):
        decode([b"hide"])
    with pytest.raises(EventError, match="not an edge-inspector event"):
        decode([b"hide", b"\xff\xfe not json"])
    with pytest.raises(EventError, match="no schema version"):
        decode([b"hide", b'{"topic": "hide"}'])
    with pytest.raises(EventError, match="seq"):
        decode([b"hide", json.dumps({**env, "v": 1, "seq": "7"}).encode()])
    with pytest.raises(EventError, match="differs"):
        decode([b"mark", json.dumps({**env, "v": 1}).encode()])
    with pytest.raises(ValueError, match="unknown event topic"):
        with EventPublisher("tcp://127.0.0.1:*", "s") as p:
            p.publish("hides", {})


def test_a_second_publisher_on_the_same_endpoint_is_a_clear_error(pub, endpoint):
    with pytest.raises(InputError) as e:
        EventPublisher(endpoint, "other")
    text = str(e.value)
    assert endpoint in text and "events.endpoint" in text and "in use" in text
    with pytest.raises(InputError, match="cannot bind the events endpoint nonsense"):
        EventPublisher("nonsense", "s")


def test_publishing_from_many_threads_numbers_every_event_once_in_order(pub, sub):
    last = connected(pub, sub)
    threads, per = 8, 400

    def worker(k: int) -> None:
        for n in range(per):
            pub.publish("defect", {"thread": k, "n": n})

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    got = receive(sub, threads * per, timeout_s=20)
    assert [e.seq for e in got] == list(range(last + 1, last + 1 + threads * per))
    for k in range(threads):
        assert [e.data["n"] for e in got if e.data["thread"] == k] == list(range(per))
    assert pub.dropped == 0
    published = last + threads * per
    pub.close()
    assert pub.sent == published
    pub.publish("defect", {"late": True})  # after close: counted, not sent
    assert pub.dropped == 1 and pub.sent == published


def _metrics(running: bool = True, lines: int = 0, lost: int = 0, **sections: Any) -> dict[str, Any]:
    return {"pipeline": {"running": running, "lines": lines, "lines_lost": lost, "last_block_age_s": 0.1,
                         "queue_tiles": 0, "queue_tiles_max": 256, "ring_free_slots": 2}, **sections}


def test_health_follows_the_metrics():
    r = HealthRules(stall_s=5, hold_s=3)
    assert r.update(_metrics(running=False), now=0) == {"state": "starting", "alarms": []}
    assert r.update(_metrics(lines=1000), now=1)["state"] == "running"
    h = r.update(_metrics(lines=2000, lost=128), now=2)
    assert h["state"] == "degraded" and [a["code"] for a in h["alarms"]] == ["lines_lost"]
    assert "+128" in h["alarms"][0]["message"]
    assert r.update(_metrics(lines=3000, lost=128), now=4)["state"] == "degraded"  # held for hold_s
    assert r.update(_metrics(lines=4000, lost=128), now=6)["state"] == "running"
    plc = {"connected": False, "plc": "10.0.0.5:502 unit 1", "last_error": "connection refused", "pending": 3}
    h = r.update(_metrics(lines=5000, lost=128, plc=plc), now=7)
    assert h["state"] == "degraded" and "connection refused" in h["alarms"][0]["message"]
    stalled = _metrics(lines=5000, lost=128)
    stalled["pipeline"]["last_block_age_s"] = 12.0
    assert [a["code"] for a in r.update(stalled, now=8)["alarms"]] == ["no_lines"]
    h = r.update(_metrics(running=False, lines=5000, lost=128), now=9)
    assert h["state"] == "fault" and h["alarms"][0]["code"] == "pipeline_stopped"
    assert r.update(_metrics(running=False, lines=5000, lost=128), stopping=True, now=10) == {
        "state": "stopping", "alarms": []}


def test_strips_the_model_server_failed_raise_the_model_unavailable_alarm():
    r = HealthRules(stall_s=5, hold_s=3)
    r.update(_metrics(lines=1000), now=0)
    failed = _metrics(lines=2000)
    failed["pipeline"]["strips_model_failed"] = 3
    h = r.update(failed, now=1)
    assert h["state"] == "degraded" and [a["code"] for a in h["alarms"]] == ["model_unavailable"]
    assert "+3 strips uninspected" in h["alarms"][0]["message"]


def test_telemetry_publishes_metrics_and_health_with_rates(pub, sub):
    connected(pub, sub)
    probe = Probe()
    tel = Telemetry(pub, probe, period_s=0.1, extra=lambda: {"camera": {"reconnects": 0}}).start()
    got = receive(sub, 4)
    tel.stop()
    assert [e.topic for e in got] == ["metrics", "health", "metrics", "health"]
    m = got[2].data
    assert set(m) >= {"period_s", "rates", "pipeline", "camera", "events"}
    assert m["rates"]["lines_per_s"] == 0.0 and m["pipeline"]["running"] is False
    assert got[1].data["state"] == "starting"
    assert tel.latest is not None and tel.latest[1]["state"] == "stopping"


def test_monitor_once_renders_the_view_and_waits_without_a_publisher(pub, endpoint, capsys):
    out = io.StringIO()
    assert run_monitor(endpoint, seconds=1.0, out=out) == 0  # nothing published yet
    assert out.getvalue().splitlines()[0].startswith(f"waiting for events from {endpoint}")
    tel = Telemetry(pub, Probe(), period_s=0.2)

    def publish() -> None:
        time.sleep(0.3)  # the monitor subscribes meanwhile
        pub.publish("defect", {"id": 7, "hide_id": 3, "class": "hole", "score": 0.91,
                               "bbox_belt_mm": [100.0, 2000.0, 104.0, 2006.0]})
        pub.publish("hide", {"hide_id": 3, "area_m2": 1.8123, "grade": "B", "defect_counts": {"hole": 1},
                             "inspected_fraction": 1.0})
        pub.publish("mark", {"seq": 1, "action": "ink", "late": False})
        tel.start()

    threading.Thread(target=publish).start()
    out = io.StringIO()
    assert run_monitor(endpoint, once=True, seconds=10, out=out) == 0
    tel.stop()
    view = out.getvalue()
    assert "station test-station  STARTING" in view and "rates     0 lines/s" in view
    assert "marks     ink 1   late 0" in view and "missed 0 (seq gaps)" in view
    hide_row = view.splitlines()[view.splitlines().index("last hides (1)") + 2].split()
    assert hide_row == ["3", "1.8123", "1", "B", "100", "%"]
    assert "hole" in view and "4.0 x 6.0" in view and "102.0, 2003.0" in view
    other = f"tcp://127.0.0.1:{free_port()}"
    assert run_monitor(other, once=True, seconds=0.3, out=io.StringIO()) == 1
    assert f"no metrics from {other} within 0.3 s" in capsys.readouterr().err


def test_monitor_shows_the_events_of_a_running_pipeline(tmp_path, endpoint):
    """run_live on the GenTL simulator publishes; `edge-inspector monitor --json` in a subprocess decodes them."""
    text = (ROOT / "configs" / "stations" / "viky-sim.toml").read_text().replace("hide_maps = true", "hide_maps = false")
    (tmp_path / "viky.toml").write_text(text)
    station = load_station(tmp_path / "viky.toml")
    pub = EventPublisher(endpoint, station.station.name)
    probe, stop = Probe(), threading.Event()
    sources: list[Any] = []
    tel = Telemetry(pub, probe, period_s=0.3, stopping=stop,
                    extra=lambda: {"camera": sources[0].stats.as_dict()} if sources else {}).start()
    mon = subprocess.Popen([sys.executable, "-m", "edge_inspector.cli", "monitor", endpoint, "--json", "--seconds", "60"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    first = threading.Event()

    def read() -> None:
        assert mon.stdout is not None
        for line in mon.stdout:
            lines.append(line)
            first.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert first.wait(20), "the monitor printed nothing"
        _, summary = run_live(station, tmp_path / "run", seconds=2, stop=stop, probe=probe, publish=pub.publish,
                              on_ready=sources.append)
        tel.stop()
        pub.close()
        time.sleep(0.5)
    finally:
        mon.send_signal(signal.SIGINT)  # Ctrl-C
        rc = mon.wait(20)
        reader.join(5)
    assert rc == 0, mon.stderr.read() if mon.stderr else ""
    events = [json.loads(x) for x in lines]
    assert all(e["v"] == 1 and e["station"] == "viky-sim" for e in events)
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    by: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by.setdefault(e["topic"], []).append(e["data"])
    faults = [a["message"] for h in by["health"] for a in h["alarms"] if a["severity"] == "fault"]
    assert faults == []
    assert summary["hides"] > 0
    assert len(by["hide"]) == summary["hides"] and len(by["defect"]) == summary["defects"] > 0
    assert {"hide_id", "area_m2", "grade", "defect_counts"} <= set(by["hide"][0]) and "defects" not in by["hide"][0]
    assert {"class", "bbox_belt_mm", "score", "hide_id"} <= set(by["defect"][0])
    assert max(m["pipeline"]["lines"] for m in by["metrics"]) > 0
    assert max(m["rates"]["lines_per_s"] for m in by["metrics"]) > 0
    assert any("camera" in m and m["camera"]["frames"] > 0 for m in by["metrics"])
    states = [h["state"] for h in by["health"]]
    assert "running" in states and states[-1] == "stopping"
