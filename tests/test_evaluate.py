"""Evaluation against ground truth: matching, duplicates, false positives per m², uninspected
stretches, size buckets, hides, the text report and bad input. Real run folders (ResultsWriter)
and real truth files in tmp_path."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_inspector.defect import Defect
from edge_inspector.errors import InputError
from edge_inspector.evaluation.runs import evaluate, format_report, match_boxes
from edge_inspector.hide import Hide, UninspectedRegion
from edge_inspector.store import ResultsWriter

MM = 0.5  # mm per px and per line in these tests


def gt_defect(did: int, cls: str, box_mm: tuple[float, float, float, float], hide_id: int = 1,
              size_mm: float | None = None) -> dict[str, Any]:
    a0, b0, a1, b1 = box_mm
    return {
        "id": did, "class": cls, "hide_id": hide_id,
        "size_mm": size_mm if size_mm is not None else max(a1 - a0, b1 - b0),
        "bbox_px": [a0 / MM, b0 / MM, a1 / MM, b1 / MM],
        "bbox_belt_mm": [a0, b0, a1, b1], "bbox_hide_mm": [a0, b0, a1, b1],
        "center_belt_mm": [(a0 + a1) / 2, (b0 + b1) / 2],
        "outline_belt_mm": [[a0, b0], [a1, b0], [a1, b1], [a0, b1]],
        "outline_hide_mm": [[a0, b0], [a1, b0], [a1, b1], [a0, b1]],
        "area_mm2": (a1 - a0) * (b1 - b0),
    }


def gt_hide(hid: int, first: int, last: int, area_m2: float, defects: list[dict]) -> dict:
    return {
        "hide_id": hid, "first_line": first, "last_line": last,
        "origin_belt_mm": [0.0, first * MM], "area_m2": area_m2,
        "outline_belt_mm": [[0, first * MM], [1000, first * MM], [1000, last * MM]],
        "defects": defects,
    }


def write_truth(path: Path, hides: list[dict]) -> Path:
    classes = sorted({d["class"] for h in hides for d in h["defects"]})
    path.write_text(json.dumps({
        "version": 1, "recording": "t.raw", "seed": 1, "width": 4096, "channels": 3,
        "mm_per_px": MM, "mm_per_line": MM, "n_lines": 20000, "classes": classes, "hides": hides,
    }))
    return path


def pred(did: int, cls: str, box_mm: tuple[float, float, float, float], hide_id: int = 1,
         score: float = 0.8) -> Defect:
    a0, b0, a1, b1 = box_mm
    return Defect(
        defect_id=did, hide_id=hide_id, class_name=cls, score=score,
        bbox_px=(a0 / MM, b0 / MM, a1 / MM, b1 / MM), outline_px=np.zeros((0, 2)),
        area_px=(a1 - a0) * (b1 - b0) / MM**2, bbox_belt_mm=box_mm, bbox_hide_mm=box_mm,
        area_mm2=(a1 - a0) * (b1 - b0),
    )


def write_run(out: Path, hides: list[Hide]) -> Path:
    with ResultsWriter(out, station_name="t", run_info={}, hide_maps=False, mm_per_px=MM,
                       mm_per_line=MM) as w:
        for h in hides:
            w.write_hide(h)
        w.finish({})
    return out


def run_hide(hid: int, first: int, last: int, area_m2: float, defects: list[Defect],
             uninspected: list[UninspectedRegion] | None = None) -> Hide:
    return Hide(hide_id=hid, first_line=first, last_line=last, area_m2=area_m2,
                defects=defects, uninspected=uninspected or [])


GT_THREE = [
    gt_defect(1, "hole", (100, 1000, 102, 1002)),  # 2 mm
    gt_defect(2, "scratch", (300, 1200, 308, 1203)),  # 8 mm
    gt_defect(3, "cut", (500, 1500, 530, 1510)),  # 30 mm
]


def test_perfect_match(tmp_path: Path) -> None:
    truth = write_truth(tmp_path / "t.gt.json", [gt_hide(1, 1800, 3999, 2.0, GT_THREE)])
    run = write_run(tmp_path / "run", [run_hide(7, 1800, 3999, 2.0, [
        pred(i + 1, d["class"], tuple(d["bbox_belt_mm"])) for i, d in enumerate(GT_THREE)])])
    r = evaluate(run, truth)
    o = r["overall"]
    assert (o["gt_defects"], o["predictions"], o["found"], o["tp"], o["fp"], o["duplicates"]) == (
        3, 3, 3, 3, 0, 0)
    assert o["recall"] == 1.0 and o["precision"] == 1.0 and o["f1"] == 1.0
    assert o["class_aware"] is True
    assert r["position_error_mm"] == {"n": 3, "p50": 0.0, "p95": 0.0, "max": 0.0}
    assert r["false_defects"]["fp"] == 0 and r["false_defects"]["per_m2"] == 0.0
    for c in ("hole", "scratch", "cut"):
        assert r["per_gt_class"][c] == {"n": 1, "found": 1, "same_class": 1, "recall": 1.0,
                                        "class_recall": 1.0}
        assert r["per_pred_class"][c]["precision"] == 1.0
    assert r["confusion"] == {"cut": {"cut": 1}, "hole": {"hole": 1}, "scratch": {"scratch": 1}}
    h = r["hides"]
    assert (h["n_gt"], h["n_run"], h["found"], h["missed_gt_hide_ids"]) == (1, 1, 1, [])
    assert h["pairs"][0]["gt_hide_id"] == 1 and h["pairs"][0]["run_hide_id"] == 7
    assert h["pairs"][0]["area_error_pct"] == 0.0
    assert r["missed"] == [] and r["run_id"] == 1
    json.dumps(r)  # JSON-serialisable


def test_miss_false_positive_per_m2_and_position_error(tmp_path: Path) -> None:
    truth = write_truth(tmp_path / "t.gt.json", [gt_hide(1, 1800, 3999, 2.0, GT_THREE)])
    hole = GT_THREE[0]["bbox_belt_mm"]
    cut = GT_THREE[2]["bbox_belt_mm"]
    preds = [
        pred(1, "hole", (hole[0] + 3, hole[1] + 4, hole[2] + 3, hole[3] + 4)),  # 5 mm off
        pred(2, "cut", tuple(cut)),
        pred(3, "cut", (800, 3000, 810, 3010)),  # nothing there: false positive
    ]  # the scratch is missed
    run = write_run(tmp_path / "run", [run_hide(1, 1800, 3999, 2.0, preds)])
    r = evaluate(run, truth)
    o = r["overall"]
    assert (o["found"], o["tp"], o["fp"], o["duplicates"]) == (2, 2, 1, 0)
    assert o["recall"] == pytest.approx(2 / 3, abs=1e-4)
    assert o["precision"] == pytest.approx(2 / 3, abs=1e-4)
    assert r["position_error_mm"]["max"] == pytest.approx(5.0)
    assert r["position_error_mm"]["p50"] == pytest.approx(2.5)
    gt_area_m2 = sum(d["area_mm2"] for d in GT_THREE) / 1e6
    assert r["false_defects"]["good_leather_m2"] == pytest.approx(2.0 - gt_area_m2, abs=1e-4)
    assert r["false_defects"]["per_m2"] == pytest.approx(1 / (2.0 - gt_area_m2), abs=1e-4)
    assert r["per_gt_class"]["scratch"]["recall"] == 0.0
    assert r["per_pred_class"]["cut"] == {"n": 2, "tp": 1, "fp": 1, "duplicates": 0,
                                          "precision": 0.5}
    assert [m["id"] for m in r["missed"]] == [2]


def test_tolerance_expands_both_boxes(tmp_path: Path) -> None:
    truth = write_truth(tmp_path / "t.gt.json", [gt_hide(1, 0, 9999, 1.0, [
        gt_defect(1, "hole", (100, 100, 104, 104))])])
    # 8 mm gap across: boxes grown by 5 mm each meet (10 >= 8); grown by 3 mm each do not.
    run = write_run(tmp_path / "run", [run_hide(1, 0, 9999, 1.0, [
        pred(1, "hole", (112, 100, 116, 104))])])
    assert evaluate(run, truth)["overall"]["tp"] == 1
    assert evaluate(run, truth)["position_error_mm"]["p50"] == pytest.approx(12.0)
    r = evaluate(run, truth, tol_mm=3.0)
    assert r["overall"]["tp"] == 0 and r["overall"]["fp"] == 1 and r["overall"]["recall"] == 0.0


def test_greedy_one_to_one_by_centre_distance() -> None:
    gt = np.array([[0, 0, 2, 2], [6, 0, 8, 2]], float)
    pr = np.array([[5, 0, 7, 2], [1, 0, 3, 2]], float)  # each close to the other GT's neighbour
    pairs, cand, matched = match_boxes(gt, pr, 5.0)
    assert cand.all() and matched.all()
    assert sorted((g, p) for g, p, _ in pairs) == [(0, 1), (1, 0)]
    assert [d for _, _, d in pairs] == [1.0, 1.0]


def test_fragmented_defect_gives_duplicates_not_false_positives(tmp_path: Path) -> None:
    scratch = gt_defect(1, "scratch", (200, 1000, 204, 1120))  # 120 mm long
    truth = write_truth(tmp_path / "t.gt.json", [gt_hide(1, 0, 9999, 1.5, [scratch])])
    frags = [pred(i + 1, "scratch", (200, 1000 + 40 * i, 204, 1030 + 40 * i)) for i in range(3)]
    run = write_run(tmp_path / "run", [run_hide(1, 0, 9999, 1.5, frags)])
    r = evaluate(run, truth)
    o = r["overall"]
    assert (o["tp"], o["duplicates"], o["fp"]) == (1, 2, 0)
    assert o["recall"] == 1.0 and o["precision"] == 1.0
    assert r["false_defects"]["per_m2"] == 0.0
    assert r["per_pred_class"]["scratch"]["duplicates"] == 2
    # The middle fragment is closest to the scratch centre: it is the match.
    assert r["position_error_mm"]["max"] == pytest.approx(5.0)


def test_gt_defects_in_uninspected_stretches_are_not_misses(tmp_path: Path) -> None:
    inside = gt_defect(2, "hole", (300, 2100, 303, 2103))  # lines 4200..4206
    truth = write_truth(tmp_path / "t.gt.json", [gt_hide(1, 0, 9999, 2.0, [
        gt_defect(1, "hole", (100, 1000, 103, 1003)), inside])])
    run = write_run(tmp_path / "run", [run_hide(1, 0, 9999, 2.0, [
        pred(1, "hole", (100, 1000, 103, 1003))],
        uninspected=[UninspectedRegion(4000, 4600, "dropped", (2000.0, 2300.0))])])
    r = evaluate(run, truth)
    assert r["overall"]["gt_defects"] == 2 and r["overall"]["gt_inspected"] == 1
    assert r["overall"]["recall"] == 1.0 and r["missed"] == []
    assert r["uninspected"] == {"stretches": [[4000, 4600]], "gt_defects": 1, "found_anyway": 0,
                                "gt_ids": [2]}
    assert r["per_gt_class"]["hole"]["n"] == 1
    assert "in uninspected stretches 1" in format_report(r)


def test_recall_by_size_bucket(tmp_path: Path) -> None:
    gts = [
        gt_defect(1, "black_dot", (100, 100, 102, 102), size_mm=2.0),
        gt_defect(2, "black_dot", (200, 100, 202.9, 102), size_mm=2.9),
        gt_defect(3, "hole", (300, 100, 303, 103), size_mm=3.0),
        gt_defect(4, "hole", (400, 100, 410, 110), size_mm=10.0),
        gt_defect(5, "cut", (500, 100, 540, 110), size_mm=40.0),
    ]
    truth = write_truth(tmp_path / "t.gt.json", [gt_hide(1, 0, 9999, 3.0, gts)])
    found = [gts[0], gts[2], gts[4]]  # one small, one medium, the large one
    run = write_run(tmp_path / "run", [run_hide(1, 0, 9999, 3.0, [
        pred(i + 1, d["class"], tuple(d["bbox_belt_mm"])) for i, d in enumerate(found)])])
    b = evaluate(run, truth)["by_size"]
    assert b == {
        "<3 mm": {"n": 2, "found": 1, "recall": 0.5},
        "3-10 mm": {"n": 2, "found": 1, "recall": 0.5},
        ">10 mm": {"n": 1, "found": 1, "recall": 1.0},
    }


def test_other_class_names_and_hide_matching(tmp_path: Path) -> None:
    truth = write_truth(tmp_path / "t.gt.json", [
        gt_hide(1, 1800, 3999, 2.0, GT_THREE),
        gt_hide(2, 6000, 8999, 1.0, [gt_defect(9, "white_dot", (50, 3500, 53, 3503), hide_id=2)]),
    ])
    preds = [pred(1, "dark", tuple(GT_THREE[0]["bbox_belt_mm"])),
             pred(2, "bright", tuple(GT_THREE[1]["bbox_belt_mm"])),
             pred(3, "dark", tuple(GT_THREE[2]["bbox_belt_mm"]))]
    run = write_run(tmp_path / "run", [run_hide(1, 1790, 4010, 2.2, preds)])  # hide 2 not seen
    r = evaluate(run, truth)
    assert r["overall"]["class_aware"] is False
    assert r["overall"]["recall"] == 0.75 and r["overall"]["precision"] == 1.0
    assert r["per_gt_class"]["hole"] == {"n": 1, "found": 1, "recall": 1.0, "class_recall": None}
    assert r["per_gt_class"]["white_dot"]["recall"] == 0.0
    assert r["confusion"] == {"cut": {"dark": 1}, "hole": {"dark": 1}, "scratch": {"bright": 1}}
    assert r["per_pred_class"]["dark"]["precision"] == 1.0
    h = r["hides"]
    assert (h["n_gt"], h["n_run"], h["found"]) == (2, 1, 1)
    assert h["missed_gt_hide_ids"] == [2] and h["extra_run_hide_ids"] == []
    assert h["pairs"][0]["area_error_pct"] == pytest.approx(10.0)
    text = format_report(r)
    assert "GT class -> predicted class" in text and "dark" in text and "missed [2]" in text
    assert math.isclose(r["overall"]["f1"], round(2 * 0.75 / 1.75, 4))


def test_format_report_is_a_fixed_width_table(tmp_path: Path) -> None:
    truth = write_truth(tmp_path / "t.gt.json", [gt_hide(1, 1800, 3999, 2.0, GT_THREE)])
    run = write_run(tmp_path / "run", [run_hide(1, 1800, 3999, 2.0, [
        pred(1, "hole", tuple(GT_THREE[0]["bbox_belt_mm"])), pred(2, "cut", (900, 3000, 905, 3005))])])
    text = format_report(evaluate(run, truth))
    lines = text.splitlines()
    assert any(ln.startswith("Defects   GT 3") for ln in lines)
    assert "recall 0.333   precision 0.500" in text
    assert "false defects per m2 of good leather 0.500" in text
    hdr = next(ln for ln in lines if ln.startswith("GT class"))
    hole = next(ln for ln in lines if ln.startswith("hole "))
    assert len(hole) == len(hdr)  # columns line up
    assert hole.split() == ["hole", "1", "1", "1.000", "1.000"]
    assert next(ln for ln in lines if ln.startswith("cut ") and "0.000" in ln).split()[:4] == [
        "cut", "1", "0", "0.000"]
    assert any(ln.split()[:1] == ["<3"] for ln in lines)


def test_bad_input_names_the_file(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", [run_hide(1, 0, 99, 1.0, [])])
    missing = tmp_path / "missing.gt.json"
    with pytest.raises(InputError, match="not found") as e:
        evaluate(run, missing)
    assert str(missing) in str(e.value)
    garbled = tmp_path / "garbled.gt.json"
    garbled.write_text('{"version": 1, "hides": [')
    with pytest.raises(InputError, match="not valid JSON") as e:
        evaluate(run, garbled)
    assert str(garbled) in str(e.value) and "line 1" in str(e.value)
    wrong = tmp_path / "wrong.gt.json"
    hide = gt_hide(1, 0, 99, 1.0, [gt_defect(1, "hole", (0, 0, 1, 1))])
    del hide["defects"][0]["bbox_belt_mm"]
    write_truth(wrong, [hide])
    with pytest.raises(InputError, match=r"hides\.0\.defects\.0\.bbox_belt_mm") as e:
        evaluate(run, wrong)
    assert str(wrong) in str(e.value)
    v2 = tmp_path / "v2.gt.json"
    v2.write_text(json.dumps({"version": 2, "hides": []}))
    with pytest.raises(InputError, match="version 2"):
        evaluate(run, v2)
    truth = write_truth(tmp_path / "ok.gt.json", [])
    with pytest.raises(InputError, match="run folder not found") as e:
        evaluate(tmp_path / "no-run", truth)
    assert "no-run" in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no results found"):
        evaluate(tmp_path / "empty", truth)
    # An empty truth and an empty run: nothing to find, nothing found.
    r = evaluate(run, truth)
    assert r["overall"]["recall"] is None and r["overall"]["precision"] is None
    assert "recall -" in format_report(r)


def test_offline_evaluation_does_not_import_the_station_runtime() -> None:
    """Evaluating a run folder needs neither the stitcher, the dispatch/PLC stack nor numba."""
    code = (
        "import sys, json\n"
        "import edge_inspector.evaluation.runs, edge_inspector.evaluation.marks\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = set(json.loads(out))
    heavy = {"edge_inspector.stitch", "edge_inspector.dispatch", "edge_inspector.pipeline",
             "edge_inspector.plc.link", "numba", "onnxruntime", "pymodbus"}
    assert "edge_inspector.runfiles" in loaded
    assert not heavy & loaded, sorted(heavy & loaded)
