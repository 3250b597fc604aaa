"""Live acquisition against the real GenTL simulator (viky.cti from the genicam package), no mocks.

Every test opens its own source and closes it: viky lists no devices to a second Harvester in
the process while one holds it.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

import genicam
import numpy as np
import pytest
from structlog.testing import capture_logs

from edge_inspector.camera import CameraError, GenICamSource
from edge_inspector.camera.producer import create_acquirer, list_devices, open_harvester, producer_path
from edge_inspector.cli import main
from edge_inspector.config import Station, parse_station
from edge_inspector.lines import LineBlock
from edge_inspector.inference.runtime import openvino_available
from edge_inspector.live import run_live
from edge_inspector.pipeline import run_pipeline
from edge_inspector.record import record, recording_header
from edge_inspector.recording import RecordingWriter, open_recording
from edge_inspector.stitch import Stitcher, TileRing
from edge_inspector.stream import Strip
from edge_inspector.tile import TileGrid

ROOT = Path(__file__).resolve().parents[1]
SIM = ROOT / "configs" / "stations" / "viky-sim.toml"
LPB = 128
FAST = {  # 100 buffers/s, few GenTL buffers (viky allocates 10 MB each), quick reconnects
    "camera.line_rate_hz": 12800,
    "source.genicam.num_buffers": 4,
    "source.genicam.reconnect_backoff_s": 0.05,
    "source.genicam.reconnect_backoff_max_s": 0.2,
}


def sim_station(**dotted: Any) -> Station:
    """configs/stations/viky-sim.toml with ``section.key=value`` overrides (``__`` stands for a dot)."""
    data = tomllib.loads(SIM.read_text())
    for key, value in {**FAST, **{k.replace("__", "."): v for k, v in dotted.items()}}.items():
        *path, last = key.split(".")
        node = data
        for p in path:
            node = node.setdefault(p, {})
        node[last] = value
    return parse_station(data, SIM)


def take(source: GenICamSource, n: int) -> list[LineBlock]:
    """The next ``n`` blocks, copied (a block's lines are valid until the next one is taken)."""
    out = []
    for block in source:
        out.append(LineBlock(block.lines.copy(), block.first_line, block.encoder, block.timestamp_ns,
                             block.lost_before))
        if len(out) == n:
            break
    return out


def check_numbering(blocks: list[LineBlock]) -> None:
    """first_line counts every line the camera produced: lost lines fill the gaps exactly."""
    for prev, b in zip(blocks, blocks[1:]):
        assert b.first_line % LPB == 0
        assert b.first_line == prev.end_line + b.lost_before


def strips_of(blocks: list[LineBlock] | Any, station: Station) -> list[tuple[int, int, np.ndarray]]:
    """(index, valid_lines, pixels copy) of every strip a Stitcher cuts from ``blocks``."""
    cam, tl = station.camera, station.tiling
    grid = TileGrid(cam.width, tl.tile, tl.overlap)
    ring = TileRing(2, lines=tl.tile, width=cam.width, channels=cam.channels, dtype=np.dtype(cam.dtype))
    strips: list[tuple[int, int, np.ndarray]] = []

    def emit(msg: object) -> None:
        if isinstance(msg, Strip):
            strips.append((msg.index, msg.valid_lines, msg.tiles()))
            ring.release(msg.slot)

    stitcher = Stitcher(grid, cam.channels, np.dtype(cam.dtype), ring, emit, sample_step=4)
    for b in blocks:
        stitcher.push(b)
    stitcher.flush()
    return strips


@pytest.mark.parametrize("fmt, channels", [("RGBa8", 3), ("Mono8", 1)])
def test_open_configure_stream(fmt, channels):
    before = signal.getsignal(signal.SIGINT)
    st = sim_station(camera__pixel_format=fmt, camera__channels=channels,
                     hide_detection__belt_level=[255.0])
    with GenICamSource(st) as src:
        assert signal.getsignal(signal.SIGINT) is before  # harvesters' own SIGINT handler is not left behind
        assert src.applied == {"Width": 800, "Height": LPB, "PixelFormat[Intensity]": fmt,  # viky: per component
                               "AcquisitionFrameRate": 100.0, "BouncingBallSize": 40}
        assert src.line_rate_hz == 12800 and src.device.vendor == "Machine Vision Games Ltd."
        blocks = take(src, 20)
    assert [b.lines.shape for b in blocks] == [(LPB, 800, channels)] * 20
    assert all(b.lines.dtype == np.uint8 and b.encoder is None and b.timestamp_ns > 0 for b in blocks)
    assert blocks[0].first_line == 0
    check_numbering(blocks)
    # viky draws a single-colour square on a white field: exactly two colours, mostly white
    colours, counts = np.unique(np.concatenate([b.lines for b in blocks]).reshape(-1, channels), axis=0,
                                return_counts=True)
    assert len(colours) == 2 and (colours[counts.argmax()] == 255).all()


def test_recording_replays_to_the_same_tiles_as_the_live_stream(tmp_path):
    st = sim_station()
    raw = tmp_path / "live.raw"
    live: list[LineBlock] = []
    with GenICamSource(st) as src, RecordingWriter(raw, recording_header(st, src)) as writer:
        for block in src:
            writer.write(block)
            live.append(LineBlock(block.lines.copy(), block.first_line, None, block.timestamp_ns,
                                  block.lost_before))
            if len(live) == 12:  # 1536 lines: 3 strips of 512 with overlap 32
                break
    reader = open_recording(raw)
    h = reader.header
    assert (h.width, h.channels, h.dtype, h.pixel_format, h.line_rate_hz) == (800, 3, "uint8", "RGB8", 12800)
    assert h.camera["serial"] == "0" and h.camera["model"] == "Viky" and h.camera["producer"].endswith("viky.cti")
    assert h.extra["genicam"]["settings"]["PixelFormat[Intensity]"] == "RGBa8"
    replayed = strips_of(reader.blocks(), st)
    from_camera = strips_of(live, st)
    assert len(from_camera) >= 3 and [s[:2] for s in replayed] == [s[:2] for s in from_camera]
    for (_, _, a), (_, _, b) in zip(replayed, from_camera):
        assert np.array_equal(a, b)
    assert reader.lost_lines == sum(b.lost_before for b in live)


def test_slow_consumer_drops_are_counted_and_become_uninspected():
    st = sim_station(source__genicam__ring_blocks=2)
    seen: list[int] = []
    with GenICamSource(st) as src:
        def slow():
            for block in src:
                seen.append(block.lost_before)
                time.sleep(0.05)  # 20 blocks/s taken, 100 buffers/s arriving
                if len(seen) == 25:
                    return
                yield block

        stats = run_pipeline(slow(), st, None, lambda h: None, live=True)
        acq = src.stats
    assert acq.ring_full_drops > 0 and acq.lost_lines >= acq.ring_full_drops * LPB
    assert max(seen) >= LPB
    assert stats.lines_lost >= sum(seen[1:-1]) > 0  # the stitcher reports them as uninspected ("lost")


def test_starved_acquisition_thread_counts_frame_id_gaps():
    """Few GenTL buffers and an acquisition thread that cannot run: the producer skips frames."""
    st = sim_station(camera__line_rate_hz=25600, source__genicam__num_buffers=1,
                     source__genicam__ring_blocks=64)
    interval = sys.getswitchinterval()
    with GenICamSource(st) as src:
        take(src, 2)
        sys.setswitchinterval(0.05)  # this thread keeps the GIL for 50 ms at a time
        try:
            t_end = time.perf_counter() + 1.0
            while time.perf_counter() < t_end:
                pass
        finally:
            sys.setswitchinterval(interval)
        blocks = take(src, 10)
        gaps = src.stats.frame_id_gaps
    assert gaps > 0
    assert sum(b.lost_before for b in blocks) > 0 and src.stats.lost_lines >= gaps * LPB
    check_numbering(blocks)


def test_device_destroyed_mid_run_is_reopened_and_the_gap_counted():
    st = sim_station()
    with GenICamSource(st) as src:
        before = take(src, 5)
        old = src.image_acquirer
        with capture_logs() as logs:
            old.destroy()  # what an unplugged camera looks like to harvesters
            after = take(src, 15)
        assert src.image_acquirer is not old and src.stats.reconnects == 1
        lost = src.stats.lost_lines
    events = [e["event"] for e in logs]
    assert "camera lost" in events and "camera reconnected" in events
    lost_event = next(e for e in logs if e["event"] == "camera lost")
    assert lost_event["serial"] == "0" and lost_event["model"] == "Viky"
    blocks = before + after
    check_numbering(blocks)
    gap = max(b.lost_before for b in after)
    assert gap >= LPB and lost >= gap  # the stretch the device was away, estimated from the line rate


def _unplug_for_good(tmp_path: Path, **dotted: Any) -> tuple[Station, Any]:
    """A station on a copy of viky.cti, and an on_ready that unplugs its camera for good after 0.5 s."""
    cti = tmp_path / "viky-copy.cti"
    shutil.copy(Path(genicam.__file__).parent / "viky.cti", cti)
    st = sim_station(source__genicam__cti=str(cti), source__genicam__reconnect_retries=2, **dotted)

    def on_ready(source: GenICamSource) -> None:
        def unplug() -> None:
            cti.rename(tmp_path / "gone.cti")  # the producer finds no device any more
            source.image_acquirer.destroy()

        t = threading.Timer(0.5, unplug)
        t.daemon = True
        t.start()

    return st, on_ready


def test_device_that_does_not_come_back_ends_with_an_error_and_a_valid_recording(tmp_path):
    st, on_ready = _unplug_for_good(tmp_path)
    out = tmp_path / "cut.raw"
    with pytest.raises(CameraError) as e:
        record(st, out, seconds=30, on_ready=on_ready)
    msg = str(e.value)
    assert "not back after 2 reconnect attempt(s)" in msg and "Viky" in msg and "serial 0" in msg
    r = open_recording(out)
    assert r.n_lines > 0 and r.warnings == [] and r.n_lines % LPB == 0


def test_live_run_whose_camera_does_not_come_back_drains_and_writes_the_summary(tmp_path):
    st, on_ready = _unplug_for_good(tmp_path)
    with pytest.raises(CameraError, match="not back after 2"):
        run_live(st, tmp_path / "run", seconds=30, on_ready=on_ready)
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert "not back after 2" in s["camera_error"] and s["lines"] > 0 and s["acquisition"]["reconnects"] == 0


def test_record_cli_writes_a_valid_recording(tmp_path, capsys):
    out = tmp_path / "sub" / "viky.raw"
    assert main(["record", "--station", str(SIM), "--lines", "1000", "-o", str(out)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"recorded {out}: 1,000 lines, lost 0,") and line.endswith("lines/s")
    r = open_recording(out)
    assert r.n_lines == 1000 and r.line_range == (0, 1000) and r.header.station == "viky-sim"
    assert r.header.line_rate_hz == 2560 and r.header.extra["genicam"]["settings"]["Height"] == LPB


def test_run_cli_inspects_live_and_writes_the_summary(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--station", str(SIM), "--seconds", "2", "--out", str(out)]) == 0
    assert "tiles/s" in capsys.readouterr().out
    s = json.loads((out / "summary.json").read_text())
    assert s["camera"]["model"] == "Viky" and s["camera_error"] is None
    assert s["acquisition"]["frames"] >= 20 and s["lines"] == s["acquisition"]["lines"] > 0
    cpu = "OpenVINO:CPU" if openvino_available() else "CPUExecutionProvider"  # the fastest CPU runtime present
    assert s["tiles"] > 0 and s["provider"] == cpu


def _wait_for(cond: Any, timeout: float = 30.0) -> None:
    t_end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < t_end, "timed out"
        time.sleep(0.1)


@pytest.mark.parametrize("command, sig", [("record", signal.SIGTERM), ("run", signal.SIGINT)])
def test_a_signal_stops_cleanly_and_keeps_what_was_recorded(tmp_path, command, sig):
    raw, out = tmp_path / "sig.raw", tmp_path / "run"
    args = ["-o", str(raw)] if command == "record" else ["--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "edge_inspector.cli", command, "--station", str(SIM),
                             "--seconds", "120", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if command == "record":
            _wait_for(lambda: raw.is_file() and raw.stat().st_size > 2_000_000)  # a few blocks
        else:
            _wait_for(lambda: (out / "results.sqlite").is_file())
            time.sleep(1.5)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    if command == "record":
        r = open_recording(raw)
        assert r.warnings == [] and r.n_lines > 0
        assert f"recorded {raw}: {r.n_lines:,} lines" in stdout
    else:
        s = json.loads((out / "summary.json").read_text())
        assert s["lines"] > 0 and s["wall_s"] < 60 and "tiles/s" in stdout


def _error_of(st: Station) -> str:
    with pytest.raises(CameraError) as e:
        GenICamSource(st).close()
    return str(e.value)


@pytest.mark.parametrize("override, expected", [
    ({"camera__width": 5000, "tiling__tile": 512}, ["camera.width", "Width = 5000", "100..800"]),
    ({"source__genicam__features": {"BouncingBallSize": 99}}, ["BouncingBallSize = 99", "1..40"]),
    ({"source__genicam__features": {"ChunkSelector": "Sometimes"}},
     ["ChunkSelector = 'Sometimes'", "one of NrBounces, Scan3dData"]),
    ({"camera__pixel_format": "BayerRG8"}, ["PixelFormat = 'BayerRG8'", "one of RGBa8, Mono8"]),
    ({"source__genicam__features": {"AcquisitionMode": "SingleFrame"}},
     ["AcquisitionMode = 'SingleFrame'", "read-only (its value is 'Continuous')"]),
    ({"source__genicam__required": ["AcquisitionLineRate"]}, ["lacks required feature(s) AcquisitionLineRate"]),
])
def test_rejected_settings_name_node_value_and_what_is_allowed(override, expected):
    msg = _error_of(sim_station(**override))
    for text in expected:
        assert text in msg


def test_missing_optional_feature_is_a_warning_and_selected_nodes_are_named_by_selector():
    features = {"ExposureTime": 120.0, "BouncingBallSize": 30, "ChunkSelector": "Scan3dData", "ChunkEnable": False}
    st = sim_station(source__genicam__features=features)
    with capture_logs() as logs, GenICamSource(st) as src:
        assert src.applied["BouncingBallSize"] == 30 and "ExposureTime" not in src.applied
        assert src.applied["ChunkEnable[Scan3dData]"] is False
    warning = next(e for e in logs if e["event"].startswith("camera feature missing"))
    assert warning["node"] == "ExposureTime" and warning["log_level"] == "warning"


def test_missing_producer_unknown_device_and_pixel_format(tmp_path, capsys):
    msg = _error_of(sim_station(source__genicam__cti="producers/missing.cti"))
    assert str(SIM.parent / "producers" / "missing.cti") in msg
    for selector in ("no-such-camera", 7):
        msg = _error_of(sim_station(source__genicam__device=selector))
        assert repr(selector) in msg or f"index {selector}" in msg
        for serial, colour in enumerate(("red", "green", "blue")):
            assert f"{serial}: Machine Vision Games Ltd. Viky, serial {serial}" in msg and colour in msg
    msg = _error_of(sim_station(camera__pixel_format="YUV422_8"))
    assert "YUV422_8" in msg and "Mono8, Mono10, Mono12" in msg
    station = tmp_path / "bad.toml"
    station.write_text(SIM.read_text().replace('cti = "viky"', 'cti = "missing.cti"'))
    assert main(["record", "--station", str(station), "--seconds", "1", "-o", str(tmp_path / "x.raw")]) == 2
    assert f"GenTL producer file not found: {tmp_path / 'missing.cti'}" in capsys.readouterr().err


def test_busy_device():
    """The same device opened twice in one Harvester: GenTL says the resource is in use."""
    st = sim_station()
    producer = producer_path(st)
    h = open_harvester(producer)
    try:
        device = list_devices(h, producer)[0]
        ia = create_acquirer(h, device)
        with pytest.raises(CameraError) as e:
            create_acquirer(h, device)
        assert "is busy" in str(e.value) and "serial 0" in str(e.value)
        ia.destroy()
    finally:
        h.reset()
    # A second source in this process: viky lists no devices to a second Harvester.
    with GenICamSource(st):
        assert "no devices found" in _error_of(sim_station(source__genicam__device=1))


def test_stop_ends_the_stream_after_the_blocks_already_acquired():
    st = sim_station()
    with GenICamSource(st) as src:
        take(src, 3)
        src.stop()
        rest = take(src, 1000)
        assert len(rest) <= st.source.genicam.ring_blocks
        assert list(src) == []


def test_the_8k_station_example_in_the_docs_is_valid():
    text = (ROOT / "docs" / "cameras.md").read_text()
    example = text.split("## A complete station for an 8K line-scan camera")[1].split("```toml")[1].split("```")[0]
    st = parse_station(tomllib.loads(example), ROOT / "docs" / "line-1.toml")
    g = st.source.genicam
    assert st.camera.width == 8192 and g.rate_node == "none" and g.max_fetch_timeouts == 0
    assert [t.selector for t in g.trigger] == ["FrameStart", "LineStart"] and g.encoder.divider == 4
