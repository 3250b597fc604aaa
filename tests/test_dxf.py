"""Cutting-room export: replay writes one DXF per hide (mm, layers per class) and a grading report."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import ezdxf
import numpy as np
import pytest
from ezdxf.math import area as polygon_area

from edge_inspector.cli import main
from edge_inspector.config import Station
from edge_inspector.cutting import (LAYER_OUTLINE, LAYER_UNINSPECTED, defect_layer, grow_polygon, hide_dxf_bytes,
                                    uninspected_rects)

from conftest import SMALL_STATION


def _xy(e) -> np.ndarray:  # noqa: ANN001 - an ezdxf LWPOLYLINE
    return np.array([(p[0], p[1]) for p in e.get_points("xy")], np.float64)


@pytest.fixture(scope="module")
def run_dir(recording, tmp_path_factory) -> Path:
    rec, st, _ = recording
    out = tmp_path_factory.mktemp("dxf") / "run"
    assert main(["replay", str(rec), "--station", str(st), "--out", str(out)]) == 0
    return out


def test_each_hide_reads_back_at_true_size_with_defects_by_class(run_dir):
    recs = [json.loads(p.read_text()) for p in sorted((run_dir / "hides").glob("hide-*.json"))]
    assert len(recs) == 2 and sum(len(r["defects"]) for r in recs) > 0
    for r in recs:
        doc = ezdxf.readfile(run_dir / "hides" / f"hide-{r['hide_id']:04d}.dxf")
        assert doc.header["$INSUNITS"] == 4  # millimetres: nesting software imports at true size
        msp = doc.modelspace()
        outlines = msp.query(f'LWPOLYLINE[layer=="{LAYER_OUTLINE}"]')
        assert len(outlines) == 1 and outlines[0].closed
        pts = _xy(outlines[0])
        got_m2 = polygon_area([tuple(p) for p in pts]) / 1e6
        assert abs(got_m2 - r["area_m2"]) / r["area_m2"] < 0.005, (got_m2, r["area_m2"])
        x0, y0 = pts.min(axis=0)
        x1, y1 = pts.max(axis=0)
        by_class: dict[str, int] = {}
        for d in r["defects"]:
            by_class[d["class"]] = by_class.get(d["class"], 0) + 1
        for cls, n in by_class.items():
            polys = msp.query(f'LWPOLYLINE[layer=="{defect_layer(cls)}"]')
            assert len(polys) == n and all(p.closed for p in polys)
            for p in polys:
                q = _xy(p)
                assert len(q) >= 3
                assert (q[:, 0] >= x0).all() and (q[:, 0] <= x1).all(), cls
                assert (q[:, 1] >= y0).all() and (q[:, 1] <= y1).all(), cls
        texts = " | ".join(t.dxf.text for t in msp.query("TEXT"))
        assert f"GRADE {r['grade']}" in texts and f"AREA {r['area_m2']:.4f} m2" in texts


def test_grading_report_has_one_row_per_hide(run_dir):
    recs = {json.loads(p.read_text())["hide_id"]: json.loads(p.read_text())
            for p in (run_dir / "hides").glob("hide-*.json")}
    with open(run_dir / "grading.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(int(r["hide_id"]) for r in rows) == sorted(recs)
    for row in rows:
        r = recs[int(row["hide_id"])]
        assert row["grade"] == r["grade"] and float(row["area_m2"]) == pytest.approx(r["area_m2"])
        assert int(row["defects"]) == len(r["defects"])
        for cls, n in r["defect_counts"].items():
            assert int(row[f"n_{cls}"]) == n
    rep = json.loads((run_dir / "grading.json").read_text())
    assert rep["totals"]["hides"] == len(recs)
    assert rep["totals"]["defects"] == sum(len(r["defects"]) for r in recs.values())
    assert rep["totals"]["grades"] == json.loads((run_dir / "summary.json").read_text())["grades"]


def test_dropped_strips_are_hatched_on_the_uninspected_layer(recording, tmp_path):
    rec, _, _ = recording
    fast = tmp_path / "fast.toml"
    fast.write_text(SMALL_STATION.replace("line_rate_hz = 20000", "line_rate_hz = 2000000")
                    .replace("ring_slots = 3", "ring_slots = 2"))
    out = tmp_path / "rt"
    assert main(["replay", str(rec), "--station", str(fast), "--out", str(out), "--realtime"]) == 0
    seen = 0
    for p in sorted((out / "hides").glob("hide-*.json")):
        r = json.loads(p.read_text())
        rects = uninspected_rects(r)
        msp = ezdxf.readfile(p.with_suffix(".dxf")).modelspace()
        zones = msp.query(f'LWPOLYLINE[layer=="{LAYER_UNINSPECTED}"]')
        assert len(zones) == len(rects) and len(msp.query(f'HATCH[layer=="{LAYER_UNINSPECTED}"]')) == len(rects)
        outline = _xy(msp.query(f'LWPOLYLINE[layer=="{LAYER_OUTLINE}"]')[0])
        for z in zones:
            q = _xy(z)
            assert q[:, 1].min() >= outline[:, 1].min() - 0.01 and q[:, 1].max() <= outline[:, 1].max() + 0.01
        seen += len(rects)
    assert seen > 0, "the fast station should drop strips inside a hide"


@pytest.mark.parametrize("clockwise", [False, True])
def test_grow_polygon_moves_every_edge_outwards(clockwise):
    sq = np.array([[0, 0], [100, 0], [100, 50], [0, 50]], np.float64)
    if clockwise:
        sq = sq[::-1]
    g = grow_polygon(sq, 2.0)
    assert polygon_area([tuple(p) for p in g]) == pytest.approx(104 * 54)
    assert g.min(axis=0) == pytest.approx([-2, -2]) and g.max(axis=0) == pytest.approx([102, 52])


def test_outputs_dxf_defaults_on_and_a_record_without_outline_still_exports():
    assert Station().outputs.dxf is True
    doc_bytes = hide_dxf_bytes({"hide_id": 5, "grade": "U", "area_m2": 0.0, "defects": [], "uninspected": []})
    assert b"HIDE 5" in doc_bytes and b"GRADE U" in doc_bytes
