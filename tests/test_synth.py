"""Synthetic hides: determinism, ground truth against the rendered pixels, belt/hide levels, sizes."""

from __future__ import annotations

import hashlib
import importlib.util
import json

import cv2
import numpy as np
import pytest

from edge_inspector.classes import DEFECT_CLASSES
from edge_inspector.config import HideDetection
from edge_inspector.synth import (
    RENDER_LINES,
    SynthConfig,
    generate_blocks,
    ground_truth,
    make_defect,
    write_recording,
)

# Small hides on a 1024 px belt (379 mm): fast, but the defects keep their true sizes.
SMALL = dict(width=1024, hide_length_mm=(280.0, 420.0), hide_width_mm=(220.0, 290.0),
             defects_per_hide=(9, 12))
HD = HideDetection()
BELT = np.array(HD.belt_level, np.float32)

# Drawn size ranges in mm (largest extent) per class; measured sizes may differ by pixel rounding.
SIZE_MM = {
    "hole": (2, 12), "cut": (10, 80), "scratch": (20, 150), "black_dot": (1, 4),
    "white_dot": (1, 4), "color_streak": (50, 300), "wrinkle": (50, 300), "tick_bite": (1, 40),
    "brand": (30, 80),
}


def _cfg(**kw) -> SynthConfig:
    args = dict(SMALL, hides=3, seed=3)
    args.update(kw)
    return SynthConfig(**args)


def _render(cfg: SynthConfig):
    stream = generate_blocks(cfg)
    blocks = list(stream)
    return stream, blocks, np.concatenate([b.lines for b in blocks])


@pytest.fixture(scope="module")
def rendered():
    return _render(_cfg())


def _digest(blocks) -> str:
    h = hashlib.sha256()
    for b in blocks:
        h.update(np.ascontiguousarray(b.lines).tobytes())
    return h.hexdigest()


def test_same_seed_same_bytes_and_truth_other_seed_differs(rendered):
    stream, blocks, _ = rendered
    again, blocks2, _ = _render(_cfg())
    assert _digest(blocks2) == _digest(blocks)
    assert json.dumps(again.truth) == json.dumps(stream.truth)
    # The pixels do not depend on how lines are cut into blocks.
    _, blocks3, _ = _render(_cfg(block_lines=300))
    assert [len(b.lines) for b in blocks3][:2] == [300, 300]
    assert _digest(blocks3) == _digest(blocks)
    other, blocks4, _ = _render(_cfg(seed=4))
    assert _digest(blocks4) != _digest(blocks)
    assert json.dumps(other.truth) != json.dumps(stream.truth)
    assert ground_truth(_cfg()) == stream.truth


def test_blocks_are_contiguous_encoder_triggered_lines(rendered):
    stream, blocks, img = rendered
    cfg = stream.cfg
    assert img.shape == (stream.n_lines, cfg.width, 3) and img.dtype == np.uint8
    assert stream.truth["n_lines"] == stream.n_lines
    expect = 0
    for b in blocks:
        assert b.first_line == expect and b.encoder == b.first_line and b.lost_before == 0
        assert b.timestamp_ns == round(b.first_line * 1e9 / cfg.line_rate_hz)
        assert b.lines.shape[1:] == (cfg.width, 3) and 0 < b.n_lines <= cfg.block_lines
        expect = b.end_line
    assert expect == stream.n_lines
    assert all(b.n_lines == cfg.block_lines for b in blocks[:-1])


def test_truth_schema_and_geometry(rendered):
    stream, _, _ = rendered
    t = stream.truth
    cfg = stream.cfg
    assert set(t) == {"version", "recording", "seed", "width", "channels", "mm_per_px",
                      "mm_per_line", "n_lines", "classes", "hides"}
    assert t["version"] == 1 and t["seed"] == 3 and t["width"] == 1024 and t["channels"] == 3
    assert t["classes"] == list(DEFECT_CLASSES)
    assert [h["hide_id"] for h in t["hides"]] == [1, 2, 3]
    ids, prev_last, seen = [], 0, set()
    for h in t["hides"]:
        assert set(h) == {"hide_id", "first_line", "last_line", "origin_belt_mm", "area_m2",
                          "outline_belt_mm", "defects"}
        assert prev_last < h["first_line"] - cfg.gap_lines[0] + 1 <= h["last_line"]
        prev_last = h["last_line"]
        assert h["origin_belt_mm"][1] == pytest.approx(h["first_line"] * cfg.mm_per_line, abs=1e-3)
        ol = np.array(h["outline_belt_mm"])
        assert ol[:, 0].min() >= 0 and ol[:, 0].max() <= cfg.width * cfg.mm_per_px
        assert 0.03 < h["area_m2"] < 0.13  # ~(280-420 mm) x (220-290 mm), irregular outline
        assert len(h["defects"]) >= 3
        ox, oy = h["origin_belt_mm"]
        for d in h["defects"]:
            assert set(d) == {"id", "class", "hide_id", "size_mm", "bbox_px", "bbox_belt_mm",
                              "bbox_hide_mm", "center_belt_mm", "outline_belt_mm",
                              "outline_hide_mm", "area_mm2"}
            ids.append(d["id"])
            seen.add(d["class"])
            assert d["hide_id"] == h["hide_id"] and d["class"] in DEFECT_CLASSES
            x0, y0, x1, y1 = d["bbox_px"]
            assert 0 <= x0 < x1 <= cfg.width
            assert h["first_line"] <= y0 < y1 <= h["last_line"] + 1
            bb = d["bbox_belt_mm"]
            assert bb == pytest.approx([x0 * cfg.mm_per_px, y0 * cfg.mm_per_line,
                                        x1 * cfg.mm_per_px, y1 * cfg.mm_per_line], abs=2e-3)
            assert d["bbox_hide_mm"] == pytest.approx([bb[0] - ox, bb[1] - oy, bb[2] - ox, bb[3] - oy], abs=3e-3)
            assert d["center_belt_mm"] == pytest.approx([(bb[0] + bb[2]) / 2, (bb[1] + bb[3]) / 2], abs=3e-3)
            o = np.array(d["outline_belt_mm"])
            assert (o[:, 0] >= bb[0]).all() and (o[:, 0] <= bb[2]).all()
            assert (o[:, 1] >= bb[1]).all() and (o[:, 1] <= bb[3]).all()
            assert np.array(d["outline_hide_mm"]) == pytest.approx(o - [ox, oy], abs=0.02)
            assert 0 < d["area_mm2"] <= (bb[2] - bb[0]) * (bb[3] - bb[1]) + 1e-6
    assert ids == list(range(1, len(ids) + 1))
    # 27+ defects cycle through every class (the big ones may not fit these small hides).
    assert {"hole", "cut", "black_dot", "white_dot", "tick_bite", "brand"} <= seen


def _defect_masks(stream):
    """{defect id: (bool mask over its bbox)} from the class maps and the truth."""
    out = {}
    for (hid, cmap), h in zip(stream.class_masks(), stream.truth["hides"]):
        assert hid == h["hide_id"] and cmap.shape == (h["last_line"] - h["first_line"] + 1, stream.width)
        for d in h["defects"]:
            x0, y0, x1, y1 = d["bbox_px"]
            sub = cmap[y0 - h["first_line"]:y1 - h["first_line"], x0:x1]
            m = sub == DEFECT_CLASSES.index(d["class"]) + 1
            # The bbox is tight around the mask, and the area is the mask's.
            assert m[0].any() and m[-1].any() and m[:, 0].any() and m[:, -1].any()
            assert d["area_mm2"] == pytest.approx(m.sum() * stream.cfg.mm_per_px * stream.cfg.mm_per_line, abs=0.01)
            out[d["id"]] = m
    return out


def test_defect_pixels_differ_from_leather_and_holes_show_belt(rendered):
    stream, _, img = rendered
    masks = _defect_masks(stream)
    lum = img.astype(np.float32).mean(axis=2)
    visible, total = 0, 0
    for h in stream.truth["hides"]:
        for d in h["defects"]:
            x0, y0, x1, y1 = d["bbox_px"]
            m = masks[d["id"]]
            if d["class"] == "hole":
                px = img[y0:y1, x0:x1][m].astype(np.float32)
                assert np.abs(px - BELT).max() <= 10, "hole pixels must be belt"
                continue
            pad = 10
            ya, xa = max(0, y0 - pad), max(0, x0 - pad)
            reg = lum[ya:y1 + pad, xa:x1 + pad]
            full = np.zeros(reg.shape, np.uint8)
            full[y0 - ya:y1 - ya, x0 - xa:x1 - xa] = m
            near = cv2.dilate(full, np.ones((3, 3), np.uint8))
            ring = cv2.dilate(full, np.ones((15, 15), np.uint8)) & ~near & (reg > BELT.mean() + 28)
            assert ring.sum() > 20
            bg = float(np.median(reg[ring.astype(bool)]))
            diff = float(np.abs(reg[full.astype(bool)] - bg).mean())
            # Every defect changes its pixels; most stand out well above the grain (sd ~5-8).
            assert diff > 2.0, (d["class"], diff)
            need = 5.0 if d["class"] in ("color_streak", "wrinkle") else 12.0
            visible += diff > need
            total += 1
    assert visible >= 0.8 * total, (visible, total)


def test_belt_between_hides_and_hide_pixels_off_the_belt(rendered):
    stream, _, img = rendered
    t = stream.truth
    dev = np.abs(img.astype(np.float32) - BELT).mean(axis=2)
    in_hide = np.zeros(len(img), bool)
    for (hid, hm), h in zip(stream.hide_masks(), t["hides"]):
        f, l = h["first_line"], h["last_line"]
        in_hide[f:l + 1] = True
        d = dev[f:l + 1]
        assert (d[hm == 1] > 45).all(), "every hide pixel is clearly off the belt"
        belt_px = img[f:l + 1][hm != 1].astype(np.float32)
        assert np.abs(belt_px - BELT).max() <= 10, "belt (and holes) within +-10 of belt_level"
        per_line = (d > HD.threshold).sum(axis=1)
        assert (per_line > 0).all()  # first and last lines hold the hide's tips
        assert np.median(per_line) > 0.3 * (img.shape[1] * 0.2)
        assert hm[0].any() and hm[-1].any()
    belt = img[~in_hide].astype(np.float32)
    assert np.abs(belt - BELT).max() <= 10
    assert (dev[~in_hide] < HD.threshold).mean() == 1.0
    assert not in_hide[: stream.cfg.gap_lines[0]].any() and not in_hide[-stream.cfg.gap_lines[0]:].any()


@pytest.mark.parametrize("mm_per_line", [0.37, 0.5])
def test_defect_sizes_in_mm(mm_per_line):
    cfg = _cfg(hides=4, seed=11, mm_per_line=mm_per_line, hide_length_mm=(350.0, 450.0))
    t = ground_truth(cfg)
    px = max(cfg.mm_per_px, cfg.mm_per_line)
    n_dots = 0
    for h in t["hides"]:
        for d in h["defects"]:
            lo, hi = SIZE_MM[d["class"]]
            x0, y0, x1, y1 = d["bbox_px"]
            ext = max((x1 - x0) * cfg.mm_per_px, (y1 - y0) * cfg.mm_per_line)
            assert ext <= d["size_mm"] + 1e-6 <= hi * 1.03 + 2 * px, d
            if d["class"] in ("black_dot", "white_dot"):
                n_dots += 1
                assert lo - 2 * px <= ext <= hi + 2 * px, d
                assert d["size_mm"] >= lo - px
            elif d["class"] != "tick_bite":
                assert d["size_mm"] >= lo * 0.9 - 2 * px, d
    assert n_dots >= 4  # every hide has at least one small dot


def test_mono_and_bad_config():
    stream, blocks, img = _render(_cfg(hides=1, channels=1, belt_level=(40.0,), defects_per_hide=(3, 3)))
    assert img.shape[2] == 1 and stream.truth["channels"] == 1
    h = stream.truth["hides"][0]
    assert (np.abs(img[: h["first_line"]].astype(int) - 40) <= 10).all()
    with pytest.raises(ValueError, match="channels"):
        generate_blocks(SynthConfig(channels=2))
    assert RENDER_LINES > 0


def test_make_defect_draws_every_class_of_the_catalogue():
    """The public catalogue (training pastes these onto real leather): exact masks, zero outside."""
    rng = np.random.default_rng(3)
    base = np.array([176.0, 124.0, 88.0], np.float32)
    for cls in DEFECT_CLASSES:
        d = make_defect(cls, rng, 0.37, 0.37, base)
        assert d.cls == cls and d.mode in ("blend", "mul", "hole")
        assert d.mask.any() and d.mask.shape == d.s.shape == (d.h, d.w)
        assert not d.s[~d.mask].any()
    with pytest.raises(ValueError, match="unknown defect class"):
        make_defect("stain", rng, 0.37, 0.37, base)


@pytest.mark.skipif(importlib.util.find_spec("edge_inspector.recording") is None,
                    reason="edge_inspector.recording (RecordingWriter) is not in the tree yet")
def test_write_recording_readable(tmp_path, rendered):
    from edge_inspector.recording import open_recording

    stream, blocks, img = rendered
    out = tmp_path / "hides.raw"
    calls = []
    truth = write_recording(out, _cfg(masks=True), progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (stream.n_lines, stream.n_lines) and len(calls) == len(blocks)
    assert truth["recording"] == "hides.raw"
    assert json.loads((tmp_path / "hides.raw.gt.json").read_text()) == truth
    assert {k: v for k, v in truth.items() if k != "recording"} == {
        k: v for k, v in stream.truth.items() if k != "recording"}
    with open_recording(out) as rec:
        hd = rec.header
        assert (hd.width, hd.channels, hd.dtype, hd.pixel_format) == (1024, 3, "uint8", "RGB8")
        assert (hd.mm_per_px, hd.mm_per_line, hd.line_rate_hz) == (0.37, 0.37, 2700.0)
        assert rec.n_lines == stream.n_lines and rec.lost_lines == 0
        got = list(rec)
        assert [b.first_line for b in got] == [b.first_line for b in blocks]
        assert [b.encoder for b in got] == [b.first_line for b in blocks]
        assert np.array_equal(np.concatenate([b.lines for b in got]), img)
    for hid, cmap in stream.class_masks():
        png = cv2.imread(str(tmp_path / "hides.raw.gt-masks" / f"hide-{hid:04d}.png"), cv2.IMREAD_UNCHANGED)
        assert png is not None and png.dtype == np.uint8 and np.array_equal(png, cmap)
        assert set(np.unique(png)) <= set(range(len(DEFECT_CLASSES) + 1))
    # Bit-identical when written again.
    (tmp_path / "again").mkdir()
    write_recording(tmp_path / "again" / "hides.raw", _cfg())
    assert (tmp_path / "again" / "hides.raw").read_bytes() == out.read_bytes()
