"""Assembler: merging across tile borders and overlaps, hide assignment, coordinates, loss."""

from __future__ import annotations

import numpy as np

from edge_inspector.assemble import Assembler, merge_parts, _Part
from edge_inspector.belt import BeltGeometry, belt_to_hide_mm
from edge_inspector.config import Station, parse_station
from edge_inspector.detections import Detections
from edge_inspector.stream import LineSamples, StripDetections, Uninspected
from edge_inspector.tile import column_starts

W, TILE, OV = 1000, 256, 32
STEP = TILE - OV


def _station() -> Station:
    return parse_station({
        "camera": {"width": W, "channels": 1, "mm_per_px": 0.5, "mm_per_line": 0.25, "line_rate_hz": 4000},
        "tiling": {"tile": TILE, "overlap": OV},
        "hide_detection": {"belt_level": [40], "threshold": 28, "subsample": 4, "min_hide_lines": 16,
                           "gap_lines": 16, "min_px_per_line": 4},
        "belt": {"marker_distance_mm": 5000},
    })


def _dets(boxes, cls=0, poly=False):
    b = np.array(boxes, np.float32).reshape(-1, 4)
    polys = None
    if poly:
        # outlines as cv2 contours give them: centres of the boundary pixels (inclusive)
        polys = [np.array([[x0, y0], [x1 - 1, y0], [x1 - 1, y1 - 1], [x0, y1 - 1]], np.float32) for x0, y0, x1, y1 in b]
    return Detections(b, np.full(len(b), cls, np.int32), np.full(len(b), 0.9, np.float32),
                      ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).astype(np.float32), polys)


def _samples(first_line, n_rows, hide_cols, step=4):
    """Sampled rows: belt level 40, hide (value 150) in columns hide_cols (sample units)."""
    s = np.full((n_rows, W // step, 1), 40, np.uint8)
    s[:, hide_cols[0] : hide_cols[1]] = 150
    return LineSamples(first_line, step, s)


def test_merge_overlap_and_touching_across_tiles():
    def part(box, tiles, cls=0):
        return _Part(np.array(box, float), cls, 0.5, 10.0, None, frozenset(tiles))

    # same defect seen by two neighbouring tiles in their overlap -> one
    a = part([220, 10, 240, 20], {(0, 0)})
    b = part([222, 10, 241, 21], {(0, 1)})
    # a long scratch cut by the border: parts intersect only in the overlap band, low IOS
    c = part([100, 50, 256, 52], {(0, 0)})
    d = part([224, 50, 500, 52], {(0, 1)})
    # two separate defects in one tile, close but not overlapping -> stay two
    e = part([10, 100, 20, 110], {(0, 0)})
    f = part([21, 100, 30, 110], {(0, 0)})
    # different class, same place -> stay apart
    g = part([220, 10, 240, 20], {(0, 1)}, cls=1)
    out = merge_parts([a, b, c, d, e, f, g], ios=0.5, touch_px=3)
    boxes = sorted(tuple(p.box.tolist()) for p in out)
    assert (100.0, 50.0, 500.0, 52.0) in boxes
    assert (220.0, 10.0, 241.0, 21.0) in boxes
    assert (10.0, 100.0, 20.0, 110.0) in boxes and (21.0, 100.0, 30.0, 110.0) in boxes
    assert len(out) == 5


def _run_assembler(messages, st=None):
    st = st or _station()
    geo = BeltGeometry(st.camera.mm_per_px, st.camera.mm_per_line, W)
    hides = []
    asm = Assembler(st, geo, ["dark", "bright"], hides.append)
    for m in messages:
        asm.handle(m)
    asm.finish()
    return asm, hides


def test_defect_across_strip_and_column_borders_is_reported_once_in_mm():
    xs = column_starts(W, TILE, OV)
    # hide from line 40 to 600, columns 20..220 in samples (80..880 px)
    msgs = [_samples(0, 40 // 4, (0, 0)), _samples(40, (600 - 40) // 4, (20, 220)), _samples(600, 60, (0, 0))]
    # a defect at belt px x 200..260 (crosses column 0/1 border 224..256) and lines 210..240
    # (crosses strip 0/1 border: strip 1 starts at 224)
    gx0, gy0, gx1, gy1 = 200, 210, 260, 240
    def tile_part(s, c):
        x0, y0 = xs[c], s * STEP
        bx0, by0 = max(gx0, x0) - x0, max(gy0, y0) - y0
        bx1, by1 = min(gx1, x0 + TILE) - x0, min(gy1, y0 + TILE) - y0
        return [bx0, by0, bx1, by1]
    strips = []
    for s in range(4):
        dets = []
        for c in range(len(xs)):
            x0, y0 = xs[c], s * STEP
            if gx0 < x0 + TILE and gx1 > x0 and gy0 < y0 + TILE and gy1 > y0:
                dets.append(_dets([tile_part(s, c)], poly=True))
            else:
                dets.append(Detections.empty())
        strips.append(StripDetections(s, s * STEP, TILE, xs, dets))
    msgs = msgs[:2] + strips[:3] + [msgs[2], strips[3]]
    asm, hides = _run_assembler(msgs)
    assert len(hides) == 1
    h = hides[0]
    assert len(h.defects) == 1, [d.bbox_px for d in h.defects]
    d = h.defects[0]
    assert d.bbox_px == (200.0, 210.0, 260.0, 240.0)
    assert d.n_tiles == 4
    assert abs(d.area_px - 60 * 30) < 60 * 30 * 0.05
    # coordinates: across = x * 0.5 mm, along = line * 0.25 mm
    assert d.bbox_belt_mm == (100.0, 52.5, 130.0, 60.0)
    assert h.first_line == 40
    np.testing.assert_allclose(h.origin_belt_mm, (80 * 0.5, 40 * 0.25))
    np.testing.assert_allclose(d.bbox_hide_mm, (60.0, 42.5, 90.0, 50.0))
    assert d.hide_id == h.hide_id == 1


def test_hide_geometry_and_off_hide_defects():
    xs = column_starts(W, TILE, OV)
    msgs = [_samples(0, 100 // 4, (0, 0)), _samples(100, 300 // 4, (50, 150)), _samples(400, 100 // 4, (0, 0))]
    dets = [Detections.empty() for _ in xs]
    dets[0] = _dets([[10, 20, 14, 24]])  # line 20: before the hide -> off hide
    asm, hides = _run_assembler(msgs + [StripDetections(0, 0, TILE, xs, dets)] +
                                [StripDetections(k, k * STEP, TILE, xs, [Detections.empty() for _ in xs]) for k in (1, 2)])
    assert len(hides) == 1 and hides[0].defects == []
    assert asm.off_hide == 1
    h = hides[0]
    assert h.first_line == 100 and h.last_line == 399
    # 100 sampled columns x 4 px x 300 lines x 0.5 x 0.25 mm2
    assert abs(h.area_m2 - 400 * 300 * 0.125 / 1e6) / (400 * 300 * 0.125 / 1e6) < 0.05
    ob = h.outline_belt_mm
    assert ob[:, 0].min() >= 200 * 0.5 - 1 and ob[:, 0].max() <= 600 * 0.5 + 2


def test_lost_lines_become_uninspected_and_suppress_detections():
    xs = column_starts(W, TILE, OV)
    msgs = [_samples(0, 400 // 4, (50, 150)), Uninspected(100, 150, "lost"), _samples(400, 100 // 4, (0, 0))]
    dets = [Detections.empty() for _ in xs]
    dets[1] = _dets([[30, 110, 40, 120], [30, 60, 40, 70]])
    strips = [StripDetections(0, 0, TILE, xs, dets)] + [
        StripDetections(k, k * STEP, TILE, xs, [Detections.empty() for _ in xs]) for k in (1, 2)]
    asm, hides = _run_assembler(msgs[:2] + strips[:1] + msgs[2:] + strips[1:])
    assert len(hides) == 1
    h = hides[0]
    assert [(u.first_line, u.end_line, u.reason) for u in h.uninspected] == [(100, 150, "lost")]
    assert abs(h.inspected_fraction - (1 - 50 / 400)) < 1e-6
    assert len(h.defects) == 1 and asm.suppressed_lost == 1


def test_belt_geometry_table_and_hide_frame():
    geo = BeltGeometry(0.5, 0.25, 4, np.array([0.0, 0.4, 1.0, 1.5, 2.2]))
    np.testing.assert_allclose(geo.across_mm([0, 1, 2.5, 4]), [0, 0.4, 1.25, 2.2])
    lin = BeltGeometry(0.37, 0.37, 8192)
    np.testing.assert_allclose(lin.px_to_belt_mm(np.array([[100, 1000]])), [[37.0, 370.0]])
    np.testing.assert_allclose(belt_to_hide_mm(np.array([[50.0, 400.0]]), (10.0, 300.0)), [[40.0, 100.0]])


def test_defects_at_the_hide_edge_are_not_reported():
    xs = column_starts(W, TILE, OV)
    msgs = [_samples(0, 100 // 4, (0, 0)), _samples(100, 300 // 4, (50, 150)), _samples(400, 100 // 4, (0, 0))]
    dets = [Detections.empty() for _ in xs]
    # hide spans x 200..600 px (100..300 mm at 0.5 mm/px); edge margin 10 mm = 20 px
    dets[0] = _dets([[200, 240, 206, 246]])  # on the hide's left edge (column 0, x0 = 0)
    dets[1] = _dets([[176, 200, 182, 206]])  # mid-hide: x 400 (column 1, x0 = 224)
    strips = [StripDetections(0, 0, TILE, xs, dets)] + [
        StripDetections(k, k * STEP, TILE, xs, [Detections.empty() for _ in xs]) for k in (1, 2)]
    asm, hides = _run_assembler(msgs + strips)
    assert asm.suppressed_edge == 1
    assert [d.bbox_px[0] for d in hides[0].defects] == [400.0]
    st = _station().model_copy(deep=True)
    st.hide_detection = st.hide_detection.model_copy(update={"edge_margin_mm": 0.0})
    asm0, hides0 = _run_assembler(msgs + strips, st)
    assert asm0.suppressed_edge == 0 and any(d.bbox_px[0] == 200 for d in hides0[0].defects)
