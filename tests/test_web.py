"""The web view: JSON endpoints over a real run folder, token and address rules, the live feed over
server-sent events from real ZeroMQ events, and a real headless Chromium on replay --web."""

from __future__ import annotations

import base64
import csv
import http.client
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import ezdxf
import pytest
from starlette.testclient import TestClient

from edge_inspector.cli import main
from edge_inspector.config import Station
from edge_inspector.errors import InputError
from edge_inspector.events import EventPublisher
from edge_inspector.web.app import create_app
from edge_inspector.web.attach import station_feed
from edge_inspector.web.live import LiveFeed
from edge_inspector.web.server import WebServer

from conftest import SMALL_STATION

TOKEN = "s3cret-token-for-tests"


@pytest.fixture(scope="module")
def run_dir(recording, tmp_path_factory) -> Path:
    rec, st, _ = recording
    out = tmp_path_factory.mktemp("web") / "run"
    assert main(["replay", str(rec), "--station", str(st), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def client(run_dir) -> TestClient:
    return TestClient(create_app(run_dir))


def _records(run_dir: Path) -> dict[int, dict]:
    return {r["hide_id"]: r for r in (json.loads(p.read_text()) for p in (run_dir / "hides").glob("hide-*.json"))}


def test_history_endpoints_return_what_the_run_wrote(client, run_dir):
    recs = _records(run_dir)
    runs = client.get("/api/runs").json()["runs"]
    assert [r["run_id"] for r in runs] == [1] and runs[0]["n_hides"] == len(recs) == 2
    hides = client.get("/api/hides").json()
    assert hides["total"] == 2 and {h["hide_id"] for h in hides["hides"]} == set(recs)
    for h in hides["hides"]:
        assert h["grade"] == recs[h["hide_id"]]["grade"] and h["defect_counts"] == recs[h["hide_id"]]["defect_counts"]
    one = client.get("/api/runs/latest/hides/1").json()
    assert one["defects"] == recs[1]["defects"] and one["outline_hide_mm"] == recs[1]["outline_hide_mm"]
    assert one["links"]["dxf"] == "/api/runs/1/hides/1.dxf"
    r = client.get("/api/runs/1/hides/7")
    assert r.status_code == 404 and "no hide 7" in r.json()["error"]


def test_hide_filters(client, run_dir):
    recs = _records(run_dir)
    classes = sorted({c for r in recs.values() for c in r["defect_counts"]})
    assert classes, "the small recording has defects"
    for cls in classes:
        got = {h["hide_id"] for h in client.get("/api/hides", params={"class": cls}).json()["hides"]}
        assert got == {i for i, r in recs.items() if cls in r["defect_counts"]}
    grade = recs[1]["grade"]
    got = client.get("/api/hides", params={"grade": grade}).json()["hides"]
    assert got and all(h["grade"] == grade for h in got)
    big = max(r["area_m2"] for r in recs.values())
    assert client.get("/api/hides", params={"min_area": big + 0.01}).json()["total"] == 0
    assert client.get("/api/hides", params={"max_area": big}).json()["total"] == 2
    bad = client.get("/api/hides", params={"min_area": "lots"})
    assert bad.status_code == 400 and "min_area" in bad.json()["error"]


def test_browser_gets_thumbnails_dxf_and_grading_not_pixels(client, run_dir):
    png = (run_dir / "hides" / "hide-0001.png").read_bytes()
    thumb = client.get("/api/runs/1/hides/1/thumb.jpg?w=200")
    assert thumb.headers["content-type"] == "image/jpeg" and thumb.content[:2] == b"\xff\xd8"
    assert len(thumb.content) < len(png) / 4
    import cv2
    import numpy as np
    assert cv2.imdecode(np.frombuffer(thumb.content, np.uint8), cv2.IMREAD_COLOR).shape[1] == 200
    served = ezdxf.read(io.StringIO(client.get("/api/runs/1/hides/1.dxf").text)).modelspace()
    written = ezdxf.readfile(run_dir / "hides" / "hide-0001.dxf").modelspace()
    assert ([list(e.get_points("xy")) for e in served.query("LWPOLYLINE")]
            == [list(e.get_points("xy")) for e in written.query("LWPOLYLINE")])
    rows = list(csv.DictReader(io.StringIO(client.get("/api/runs/latest/grading.csv").text)))
    with open(run_dir / "grading.csv", newline="") as f:
        assert rows == list(csv.DictReader(f))
    assert client.get("/api/runs/1/grading.json").json()["totals"]["hides"] == 2


def test_token_is_required_when_set(run_dir):
    c = TestClient(create_app(run_dir, token=TOKEN))
    r = c.get("/api/runs")
    assert r.status_code == 401 and "token" in r.text
    assert c.get("/api/runs", headers={"Authorization": "Bearer wrong-token-xxxxx"}).status_code == 401
    assert c.get("/api/runs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    first = c.get(f"/history?token={TOKEN}")  # a browser: the token once in the address, then the cookie
    assert first.status_code == 200 and "ei_token" in first.headers["set-cookie"]
    assert c.get("/api/hides").status_code == 200


def test_other_addresses_need_a_token(run_dir, capsys):
    assert main(["web", str(run_dir), "--host", "0.0.0.0", "--port", "0", "--seconds", "0.1"]) == 2
    err = capsys.readouterr().err
    assert "--host" in err and "without a token" in err
    assert main(["web", str(run_dir), "--host", "0.0.0.0", "--token", "short", "--seconds", "0.1"]) == 2
    assert "--token" in capsys.readouterr().err
    assert main(["web", str(tempfile.gettempdir()) + "/no-such-run-folder", "--seconds", "0.1"]) == 2
    assert "results.sqlite" in capsys.readouterr().err
    with WebServer(run_dir, host="0.0.0.0", port=0, token=TOKEN) as srv:  # a real socket on every address
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        conn.request("GET", "/api/runs")
        resp = conn.getresponse()
        assert resp.status == 401 and b"token" in resp.read()
        conn.request("GET", "/api/runs", headers={"Authorization": f"Bearer {TOKEN}"})
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read())["runs"]
        conn.close()


def test_run_web_needs_the_station_events():
    st = Station()
    st.events.enabled = False
    with pytest.raises(InputError, match="events.enabled"):
        station_feed(st)
    st.events.enabled, st.events.endpoint = True, "tcp://127.0.0.1:*"
    with pytest.raises(InputError, match="fixed port"):
        station_feed(st)


def _sse_messages(port: int, n: int, out: list[dict]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    conn.request("GET", "/api/live/events")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("content-type").startswith("text/event-stream")
    while len(out) < n:
        line = resp.fp.readline()
        if line.startswith(b"data: "):
            out.append(json.loads(line[6:]))
    conn.close()


def test_live_feed_turns_station_events_into_browser_messages(run_dir):
    """A real publisher -> ZeroMQ -> LiveFeed -> uvicorn -> server-sent events."""
    rec = _records(run_dir)[1]
    with EventPublisher("tcp://127.0.0.1:*", "small") as pub:
        feed = LiveFeed(pub.endpoint, mm_per_line=1.5, belt_width_mm=1536.0, station="small")
        with WebServer(run_dir, port=0, feed=feed) as srv:
            assert feed.connected.wait(5)
            got: list[dict] = []
            reader = threading.Thread(target=_sse_messages, args=(srv.port, 5, got), daemon=True)
            reader.start()
            deadline = time.monotonic() + 20
            while feed.n_clients == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.3)  # ZeroMQ subscriptions join late (docs/events.md)
            pub.publish("metrics", {"rates": {"lines_per_s": 2700.0, "tiles_per_s": 7.0},
                                    "pipeline": {"lines": 4000, "lines_lost": 0, "hides": 0}})
            pub.publish("mark", {"action": "hide_start", "belt_mm": 744.0, "hide_id": 1, "across_mm": 0.0})
            pub.publish("mark", {"action": "ink", "belt_mm": 1597.5, "hide_id": 1, "across_mm": 600.0,
                                 "class": "dark"})
            for d in rec["defects"]:
                pub.publish("defect", d)
            pub.publish("hide", {k: v for k, v in rec.items() if k != "defects"})
            reader.join(20)
    assert [m["type"] for m in got] == ["snapshot", "status", "mark", "mark", "hide"]
    status, hide = got[1], got[4]
    assert status["lines"] == 4000 and status["head_mm"] == 6000.0 and status["lines_per_s"] == 2700.0
    assert hide["hide_id"] == 1 and len(hide["defects"]) == len(rec["defects"])
    assert hide["outline"][0][1] == pytest.approx(rec["outline_belt_mm"][0][1] - rec["origin_belt_mm"][1], abs=0.2)
    assert hide["thumb"] == "/api/runs/latest/hides/1/thumb.jpg"
    assert feed.gaps == 0 and feed.dropped == 0


# -- a real browser -----------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _high_fd(fd: int) -> int:
    import fcntl

    high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return high


class Chromium:
    """Debian's headless Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe)."""

    def __init__(self, exe: str, width: int = 1400, height: int = 1000) -> None:
        self.profile = tempfile.mkdtemp(prefix="ei-chromium-")
        r_cmd, self.w_cmd = os.pipe()
        self.r_res, w_res = os.pipe()
        # the browser's ends above fd 10, so that bash's 3<& and 4>& never overwrite one of them
        r_cmd, w_res = (_high_fd(fd) for fd in (r_cmd, w_res))
        args = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--user-data-dir={self.profile}", "--remote-debugging-pipe", f"--window-size={width},{height}",
                "about:blank"]
        # the protocol pipe is fd 3 (commands) and fd 4 (replies) of the browser
        self.proc = subprocess.Popen(["bash", "-c", f'exec "$@" 3<&{r_cmd} 4>&{w_res}', "bash", *args],
                                     pass_fds=(r_cmd, w_res), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(r_cmd)
        os.close(w_res)
        self.buf, self.n = b"", 0
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def call(self, method: str, session: str | None = None, **params: object) -> dict:
        self.n += 1
        msg: dict = {"id": self.n, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self.w_cmd, json.dumps(msg).encode() + b"\0")
        while True:
            while b"\0" not in self.buf:
                chunk = os.read(self.r_res, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed its DevTools pipe")
                self.buf += chunk
            raw, self.buf = self.buf.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self.n:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def goto(self, url: str) -> None:
        self.call("Page.navigate", self.session, url=url)

    def js(self, expr: str) -> object:
        r = self.call("Runtime.evaluate", self.session, expression=expr, returnByValue=True)
        return r.get("result", {}).get("value")

    def wait_for(self, expr: str, timeout: float = 60.0) -> object:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            v = self.js(expr)
            if v:
                return v
            time.sleep(0.1)
        raise AssertionError(f"the page never showed: {expr}")

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", self.session, format="png")["data"]))

    def close(self) -> None:
        try:
            self.call("Browser.close")
            self.proc.wait(10)
        except (RuntimeError, OSError, subprocess.TimeoutExpired):
            self.proc.kill()
        os.close(self.w_cmd)
        os.close(self.r_res)
        shutil.rmtree(self.profile, ignore_errors=True)


def _text(b: Chromium, sel: str) -> str:
    return str(b.js(f"(document.querySelector({json.dumps(sel)}) || {{}}).textContent || ''"))


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium;"
                    " .ci/run installs it)")
def test_live_and_history_pages_in_headless_chromium(recording, tmp_path):
    rec, _, _ = recording
    art = Path(os.environ.get("EI_TEST_ARTEFACTS", tmp_path))
    art.mkdir(parents=True, exist_ok=True)
    slow = tmp_path / "slow.toml"  # the recording at 600 lines/s: about 8 s of belt to watch
    slow.write_text(SMALL_STATION.replace("line_rate_hz = 20000", "line_rate_hz = 600")
                    + "\n[events]\nmetrics_period_s = 0.25\n")
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_inspector.cli", "replay", str(rec), "--station", str(slow), "--out", str(out),
         "--realtime", "--web", "--port", "0", "--web-linger", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    browser = None
    try:
        url = ""
        for line in proc.stderr:  # "edge-inspector replay: live view at http://127.0.0.1:PORT/live"
            if "live view at" in line:
                url = line.split("live view at ")[1].strip().removesuffix("live")
                break
        assert url, "replay --web did not say where it serves"
        threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep the pipe drained
        browser = Chromium(CHROMIUM)
        browser.goto(url + "live")
        first = int(str(browser.wait_for(
            "(t => t !== '–' && parseInt(t.replace(/,/g, '')) > 0 && t)(document.querySelector('#lines').textContent)"
        )).replace(",", ""))
        later = int(str(browser.wait_for(
            f"(t => parseInt(t.replace(/,/g, '')) > {first} && t)(document.querySelector('#lines').textContent)"
        )).replace(",", ""))
        assert later > first  # the line counter moves while the replay runs
        browser.wait_for("document.querySelector('#scan-caption').textContent.startsWith('hide ')")
        browser.screenshot(art / "live-scanning.png")
        browser.wait_for("document.querySelectorAll('#recent .card').length === 2")
        # the counter comes with the metrics message (every 0.25 s), the card with the hide event: wait for both
        assert browser.wait_for("(t => t === '2' && t)(document.querySelector('#hide-count').textContent)") == "2"
        assert "hide 2" in _text(browser, "#last-caption") or "hide 1" in _text(browser, "#last-caption")
        browser.screenshot(art / "live.png")
        proc.stdout.readline()  # the replay's summary table: the run is finished
        browser.goto(url + "history")
        assert browser.wait_for("(t => t.includes('hides') && t)(document.querySelector('#hide-count').textContent)") \
            == "2 hides"
        assert browser.js("document.querySelectorAll('#hides tbody tr').length") == 2
        browser.screenshot(art / "history.png")
        recs = _records(out)
        hid = max(recs, key=lambda i: len(recs[i]["defects"]))
        browser.goto(f"{url}hide?run=1&hide={hid}")
        n = browser.wait_for("document.querySelectorAll('#defects tr.defect-row').length")
        assert n == len(recs[hid]["defects"]) > 0
        d = recs[hid]["defects"][0]
        row = str(browser.js("document.querySelector('#defects tr.defect-row').textContent"))
        assert str(d["id"]) in row and d["class"] in row
        assert browser.js("document.querySelectorAll('#map polygon.defect').length") == n
        browser.screenshot(art / "hide.png")
        assert (art / "hide.png").stat().st_size > 10_000
    finally:
        if browser is not None:
            browser.close()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
    assert rc == 0
    print(f"screenshots in {art}")
