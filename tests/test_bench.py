"""bench's ratios and the inference batch rule (the figures themselves are benchmarks, not tests)."""

from __future__ import annotations

import numpy as np

from edge_inspector.bench import line_pool, needed_tiles_per_s, plain_copy_lines_per_s, summary_line
from edge_inspector.config import Station
from edge_inspector.inference.model import cpu_provider, station_batch
from edge_inspector.lines import LineBlock
from edge_inspector.stitch import Stitcher, TileRing
from edge_inspector.stream import LineSamples
from edge_inspector.tile import TileGrid


def _station(**model) -> Station:
    return Station.model_validate({"camera": {"width": 8192, "channels": 3, "line_rate_hz": 2700},
                                   "tiling": {"tile": 2048, "overlap": 128, "ring_slots": 2}, "model": model})


def test_needed_tiles_per_s_is_the_demo_line():
    # 2,700 lines/s, a strip every 1,920 lines, 5 columns of 2048 in 8,192 px: 7.03 tiles/s
    assert round(needed_tiles_per_s(_station()), 2) == 7.03


def test_batch_auto_is_one_tile_on_the_cpu_a_strip_elsewhere():
    st = _station()
    assert station_batch(st, "OpenVINO:CPU") == (2048, 1)
    assert station_batch(st, "CPUExecutionProvider") == (2048, 1)
    assert station_batch(st, "CUDAExecutionProvider") == (2048, 5)
    assert station_batch(st) == (2048, 5)
    assert station_batch(_station(batch=3), "OpenVINO:CPU") == (2048, 3)  # a station's own batch wins
    assert station_batch(st, "OpenVINO:CPU", fixed=4) == (2048, 4)  # a graph with a fixed batch: that one
    assert station_batch(_station(batch=3), "OpenVINO:CPU", fixed=4) == (2048, 3)
    assert cpu_provider("OpenVINO:CPU") and not cpu_provider("TensorrtExecutionProvider")


def test_line_pool_and_plain_copy():
    st = _station()
    pool = line_pool(st, 700)
    assert pool.shape == (700, 8192, 3) and pool.dtype == np.uint8 and pool.any()
    assert plain_copy_lines_per_s(st, pool, 3000, 512) > 0


def test_summary_line_says_whether_the_line_holds():
    res = {"mode": "model", "lines_per_s": 5000.0, "tiles_per_s": 6.0, "needed_tiles_per_s": 7.03,
           "headroom": 0.85, "peak_rss_mb": 900.0, "strips_dropped": 0, "provider": "OpenVINO:CPU"}
    assert "headroom 0.85 CANNOT hold the line" in summary_line(res)
    assert "holds the line;" in summary_line({**res, "headroom": 1.6})


def test_samples_are_every_nth_pixel_of_every_nth_line():
    rng = np.random.default_rng(0)
    got: list[LineSamples] = []
    grid = TileGrid(1021, 512, 64)  # a width that is not a multiple of the step
    ring = TileRing(2, lines=512, width=1021, channels=3, dtype=np.uint8)
    assert ring.buffers.flags.c_contiguous and ring.free_slots == 2

    def emit(m):
        if isinstance(m, LineSamples):
            got.append(m)
        elif hasattr(m, "slot"):
            ring.release(m.slot)

    lines = rng.integers(0, 255, (300, 1021, 3), dtype=np.uint8)
    s = Stitcher(grid, 3, np.uint8, ring, emit, sample_step=8)
    s.push(LineBlock(lines[:5], first_line=3, encoder=0, timestamp_ns=0))
    s.push(LineBlock(lines[5:300], first_line=8, encoder=0, timestamp_ns=0))
    assert [m.first_line for m in got] == [8]  # the first block (lines 3-7) holds no multiple of 8
    np.testing.assert_array_equal(got[0].samples, lines[5:300:8, ::8])
    assert got[0].samples.shape == (37, 128, 3)
