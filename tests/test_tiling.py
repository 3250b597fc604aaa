"""Tiling geometry and the stitcher: exact pixels, overlaps, right edge, partial strips, loss."""

from __future__ import annotations

import numpy as np
import pytest

from edge_inspector.lines import LineBlock
from edge_inspector.stitch import Stitcher, TileRing
from edge_inspector.stream import LineSamples, Strip, Uninspected
from edge_inspector.tile import TileGrid, column_starts


def test_column_starts_8k_default():
    xs = column_starts(8192, 2048, 128)
    assert xs == [0, 1920, 3840, 5760, 6144]
    assert xs[-1] + 2048 == 8192  # last tile right-aligned


@pytest.mark.parametrize("width,tile,overlap", [(1000, 256, 32), (2048, 2048, 128), (800, 256, 0), (513, 256, 1)])
def test_columns_cover_the_line_with_overlap(width, tile, overlap):
    xs = column_starts(width, tile, overlap)
    covered = np.zeros(width, int)
    for x in xs:
        covered[x : x + tile] += 1
    assert covered.min() >= 1 and xs[-1] + tile == width
    for a, b in zip(xs, xs[1:]):
        assert b - a <= tile - overlap  # neighbours overlap by at least `overlap`


def test_column_starts_rejects_impossible_geometry():
    with pytest.raises(ValueError):
        column_starts(1000, 2048, 128)
    with pytest.raises(ValueError):
        column_starts(4096, 256, 256)


def test_strips_touching():
    g = TileGrid(1000, 256, 32, origin_line=100)
    assert list(g.strips_touching(100, 101)) == [0]
    # line 100+224 is the first line of strip 1 and still in strip 0's overlap
    assert list(g.strips_touching(324, 325)) == [0, 1]
    assert list(g.strips_touching(356, 357)) == [1]
    assert list(g.strips_touching(100, 1000)) == [0, 1, 2, 3, 4]


def _run(lines: np.ndarray, block_sizes, tile=256, overlap=32, slots=64, live=False, gaps=None, ff=None):
    width, ch = lines.shape[1], lines.shape[2]
    grid = TileGrid(width, tile, overlap)
    ring = TileRing(slots, lines=tile, width=width, channels=ch, dtype=lines.dtype)
    out: list[object] = []
    strips: list[tuple[Strip, np.ndarray]] = []

    def emit(m):
        if isinstance(m, Strip):
            strips.append((m, m.tiles()))  # the batch a model is fed
            if not live:
                ring.release(m.slot)
        out.append(m)

    s = Stitcher(grid, ch, lines.dtype, ring, emit, live=live, sample_step=4, flat_field=ff)
    pos = 0
    line = 0
    for i, n in enumerate(block_sizes):
        skip = (gaps or {}).get(i, 0)
        line += skip
        s.push(LineBlock(lines[pos : pos + n], first_line=line, lost_before=skip))
        pos += n
        line += n
    s.flush()
    return s, strips, out


def test_stitcher_tiles_are_exact_copies_with_overlap_and_partial_last_strip():
    rng = np.random.default_rng(1)
    lines = rng.integers(0, 255, (1000, 700, 3), dtype=np.uint8)
    s, strips, out = _run(lines, [77] * 12 + [76], tile=256, overlap=32)
    xs = column_starts(700, 256, 32)
    assert [st.index for st, _ in strips] == list(range(len(strips)))
    for st, px in strips:
        a = st.first_line
        assert a == st.index * 224
        valid = min(1000 - a, 256)
        assert st.valid_lines == valid
        for c, x0 in enumerate(xs):
            np.testing.assert_array_equal(px[c, :valid], lines[a : a + valid, x0 : x0 + 256])
            if valid < 256:  # partial last strip: the last line is repeated, no stale pixels
                np.testing.assert_array_equal(px[c, valid:], np.broadcast_to(lines[a + valid - 1, x0 : x0 + 256], (256 - valid, 256, 3)))
    # every line of the recording is in some strip
    assert strips[-1][0].first_line + strips[-1][0].valid_lines == 1000
    assert s.tiles_out == len(strips) * len(xs)
    samples = [m for m in out if isinstance(m, LineSamples)]
    got = np.concatenate([m.samples for m in samples])
    np.testing.assert_array_equal(got, lines[::4, ::4])


def test_samples_precede_the_strip_they_complete():
    lines = np.zeros((600, 300, 1), np.uint8)
    _, _, out = _run(lines, [100] * 6, tile=256, overlap=32)
    seen_until = 0
    for m in out:
        if isinstance(m, LineSamples):
            seen_until = m.first_line + len(m.samples) * m.step
        if isinstance(m, Strip):
            assert seen_until >= m.first_line + m.valid_lines - 4


def test_gap_is_reported_and_filled_by_repetition():
    rng = np.random.default_rng(2)
    lines = rng.integers(0, 255, (600, 300, 1), dtype=np.uint8)
    s, strips, out = _run(lines, [100] * 6, gaps={2: 50})
    unins = [m for m in out if isinstance(m, Uninspected)]
    assert [(u.first_line, u.end_line, u.reason) for u in unins] == [(200, 250, "lost")]
    assert s.lines_lost == 50
    st, px = strips[0]
    assert st.lost == [(200, 250)]
    np.testing.assert_array_equal(px[0, 200:250], np.broadcast_to(px[0, 199], (50, 256, 1)))
    np.testing.assert_array_equal(px[0, 250:256], lines[200:206, 0:256])  # lines after the gap land at their true rows


def test_gap_longer_than_a_strip_skips_strips():
    lines = np.ones((512, 300, 1), np.uint8)
    s, strips, out = _run(lines, [256, 256], gaps={1: 2000})
    idx = [st.index for st, _ in strips]
    # lines 0..255 -> strip 0 (and 1's overlap); lines 2256.. -> strips 10, 11
    assert idx[0] == 0 and all(i >= 9 for i in idx[2:])
    assert s.lines_lost == 2000


def test_live_drops_strips_when_the_ring_is_full():
    lines = np.zeros((2000, 300, 1), np.uint8)
    s, strips, out = _run(lines, [100] * 20, slots=2, live=True)
    dropped = [m for m in out if isinstance(m, Uninspected) and m.reason == "dropped"]
    assert s.strips_dropped == len(dropped) > 0
    assert len(strips) == 2  # nothing released: only the two slots were ever filled


def test_flat_field_fused_into_copy():
    lines = np.full((300, 300, 1), 100, np.uint8)
    gain = np.linspace(0.5, 2.0, 300, dtype=np.float32)
    offset = np.full(300, 10.0, np.float32)
    _, strips, _ = _run(lines, [150, 150], ff=(gain, offset))
    st, px = strips[0]
    x0 = column_starts(300, 256, 32)[1]
    expect = np.clip(100 * gain + 10 + 0.5, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(px[0, 0, :, 0], expect[:256])
    np.testing.assert_array_equal(px[1, 5, :, 0], expect[x0 : x0 + 256])


def test_a_slot_holds_the_strip_lines_whole_and_tiles_are_views_of_it():
    rng = np.random.default_rng(4)
    lines = rng.integers(0, 255, (600, 1000, 3), dtype=np.uint8)
    grid = TileGrid(1000, 256, 32)
    ring = TileRing(8, lines=256, width=1000, channels=3, dtype=np.uint8)
    got: list[Strip] = []
    s = Stitcher(grid, 3, np.uint8, ring, lambda m: got.append(m) if isinstance(m, Strip) else None)
    s.push(LineBlock(lines[:300], first_line=0))
    s.push(LineBlock(lines[300:], first_line=300))
    st = got[1]  # strip 1: lines 224..479, its first 32 lines are strip 0's overlap
    assert st.pixels.shape == (256, 1000, 3) and st.tile == 256
    assert np.shares_memory(st.pixels, ring.buffers[st.slot])
    np.testing.assert_array_equal(st.pixels, lines[224:480])  # whole camera rows, one per line
    x0s = column_starts(1000, 256, 32)
    assert st.x0s == x0s == [0, 224, 448, 672, 744]  # the last column is right-aligned, off the step
    for c, x0 in enumerate(x0s):
        view = st.tile_view(c)
        assert np.shares_memory(view, st.pixels) and view.shape == (256, 256, 3)
        np.testing.assert_array_equal(view, lines[224:480, x0 : x0 + 256])
    # the model's batch: copied into a buffer it reuses, a part of a strip at a time
    buf = np.full((2, 256, 256, 3), 7, np.uint8)
    batch = st.tiles(2, 4, out=buf)
    assert batch.base is buf and batch.flags.c_contiguous and len(batch) == 2
    np.testing.assert_array_equal(batch[1], lines[224:480, x0s[3] : x0s[3] + 256])
    assert len(st.tiles(4, 99, out=buf)) == 1  # the last column alone (end past the row is clipped)
    with pytest.raises(ValueError, match="cannot hold"):
        st.tiles(0, 3, out=buf)


def test_stitcher_refuses_a_ring_of_another_shape():
    ring = TileRing(2, lines=256, width=600, channels=3, dtype=np.uint8)
    with pytest.raises(ValueError, match=r"\(tile, width, channels\) = \(256, 700, 3\)"):
        Stitcher(TileGrid(700, 256, 32), 3, np.uint8, ring, lambda m: None)


class _RecordingModel:
    """A TileModel that keeps a copy of every batch it is fed (the pipeline reuses its batch buffer)."""

    class_names = ["dark"]
    provider = "test"

    def __init__(self) -> None:
        self.calls: list[np.ndarray] = []

    def infer(self, tiles: np.ndarray):
        from edge_inspector.detections import Detections

        assert tiles.flags.c_contiguous  # what a runtime binds as its input without a copy of its own
        self.calls.append(tiles.copy())
        return [Detections.empty() for _ in range(len(tiles))]


def test_the_pipeline_feeds_the_model_each_tile_cut_at_its_x0_in_batches_of_the_station(tmp_path):
    from conftest import SMALL_STATION

    from edge_inspector.config import load_station
    from edge_inspector.pipeline import run_pipeline

    p = tmp_path / "small.toml"
    p.write_text(SMALL_STATION.replace('path = "builtin:baseline"', 'path = "builtin:baseline"\nbatch = 2'))
    st = load_station(p)
    lines = np.random.default_rng(5).integers(0, 255, (960, 1024, 3), dtype=np.uint8)
    model = _RecordingModel()
    blocks = [LineBlock(lines[i : i + 96], first_line=i) for i in range(0, 960, 96)]
    stats = run_pipeline(blocks, st, model, lambda h: None)
    x0s = column_starts(1024, 512, 64)
    assert x0s == [0, 448, 512] and stats.strips == 3  # strips at lines 0, 448, 896 (the last one partial)
    assert [len(c) for c in model.calls] == [2, 1] * 3  # 3 columns in calls of 2: the last call is shorter
    tiles = np.concatenate(model.calls)
    for k in range(3):
        a = k * 448
        valid = min(512, 960 - a)
        for c, x0 in enumerate(x0s):
            t = tiles[k * 3 + c]
            np.testing.assert_array_equal(t[:valid], lines[a : a + valid, x0 : x0 + 512])
            np.testing.assert_array_equal(t[valid:], np.broadcast_to(lines[a + valid - 1, x0 : x0 + 512],
                                                                     (512 - valid, 512, 3)))


@pytest.mark.parametrize("channels, dtype", [(1, np.uint8), (2, np.uint8), (3, np.uint16), (4, np.uint8)])
def test_samples_of_every_channel_count(channels, dtype):
    # RGB and mono have their own loops in the gather kernel, other counts the generic one
    lines = np.random.default_rng(channels).integers(0, 4000, (300, 1000, channels)).astype(dtype)
    _, strips, out = _run(lines, [100, 100, 100], tile=256, overlap=32)
    got = np.concatenate([m.samples for m in out if isinstance(m, LineSamples)])
    np.testing.assert_array_equal(got, lines[::4, ::4])
    assert got.dtype == dtype and len(strips) == 2
