"""Results store: JSON records, PNG hide maps, SQLite rows, run appending, crash safety, grades."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_inspector.classes import class_color
from edge_inspector.config import Grading
from edge_inspector.defect import Defect
from edge_inspector.errors import InputError
from edge_inspector.hide import Hide, UninspectedRegion
from edge_inspector.grading import grade_hide
from edge_inspector.hidemap import hide_map_frame, render_hide_map
from edge_inspector.runfiles import latest_run_id, load_run_hides
from edge_inspector.store import ResultsWriter

MM_PX = 0.37
MM_LINE = 0.4
REPO = Path(__file__).resolve().parents[1]


def make_defect(did: int, hide_id: int, cls: str, box_px: tuple[float, float, float, float],
                origin: tuple[float, float], score: float = 0.9, outline: bool = True) -> Defect:
    x0, y0, x1, y1 = box_px
    bb = (x0 * MM_PX, y0 * MM_LINE, x1 * MM_PX, y1 * MM_LINE)
    bh = (bb[0] - origin[0], bb[1] - origin[1], bb[2] - origin[0], bb[3] - origin[1])
    ob = (np.array([[bb[0], bb[1]], [bb[2], bb[1]], [bb[2], bb[3]], [bb[0], bb[3]]])
          if outline else np.zeros((0, 2)))
    oh = ob - np.asarray(origin) if outline else np.zeros((0, 2))
    opx = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)
    return Defect(
        defect_id=did, hide_id=hide_id, class_name=cls, score=score, bbox_px=box_px,
        outline_px=opx, area_px=(x1 - x0) * (y1 - y0), bbox_belt_mm=bb, outline_belt_mm=ob,
        bbox_hide_mm=bh, outline_hide_mm=oh, area_mm2=(bb[2] - bb[0]) * (bb[3] - bb[1]),
    )


def ellipse_px(cx: float, cy: float, rx: float, ry: float, n: int = 48) -> np.ndarray:
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(a), cy + ry * np.sin(a)], axis=1)


THUMB_RGB = (90, 100, 110)


def make_hides() -> tuple[Hide, Hide]:
    # Hide 1: lines 1000..4999, camera x 512..7680, a picture (thumbnail), an uninspected stretch.
    o1 = (512 * MM_PX, 1000 * MM_LINE)
    out1 = ellipse_px(4096, 3000, 3584, 2000) * [MM_PX, MM_LINE]
    thumb = np.empty((4000 // 8, 8192 // 8, 3), np.uint8)
    thumb[:] = THUMB_RGB
    h1 = Hide(
        hide_id=1, first_line=1000, last_line=4999, origin_belt_mm=o1,
        outline_belt_mm=out1, outline_hide_mm=out1 - np.asarray(o1), area_m2=1.85,
        defects=[
            make_defect(1, 1, "hole", (2000, 2000, 2160, 2120), o1, 0.95),
            make_defect(2, 1, "scratch", (4000, 3000, 4600, 3012), o1, 0.7, outline=False),
            make_defect(3, 1, "black_dot", (6000, 2500, 6005, 2504), o1, 0.6),  # tiny
        ],
        uninspected=[UninspectedRegion(4000, 4400, "dropped", (4000 * MM_LINE, 4400 * MM_LINE))],
        inspected_fraction=0.9, grade="B", thumbnail=thumb, thumb_step=8, thumb_x0=0,
    )
    # Hide 2: no picture.
    o2 = (1000 * MM_PX, 6000 * MM_LINE)
    out2 = ellipse_px(4000, 8000, 3000, 1900) * [MM_PX, MM_LINE]
    h2 = Hide(
        hide_id=2, first_line=6000, last_line=9999, origin_belt_mm=o2,
        outline_belt_mm=out2, outline_hide_mm=out2 - np.asarray(o2), area_m2=1.4,
        defects=[make_defect(1, 2, "cut", (3000, 7000, 3100, 7400), o2, 0.8)],
        inspected_fraction=1.0, grade="A",
    )
    return h1, h2


def writer(out: Path, **kw) -> ResultsWriter:
    return ResultsWriter(out, station_name="test-station", run_info={"recording": "x.raw"},
                         mm_per_px=MM_PX, mm_per_line=MM_LINE, **kw)


def class_pixels(img: np.ndarray, name: str, box: tuple[int, int, int, int]) -> int:
    x0, y0, x1, y1 = box
    roi = img[max(0, y0):y1, max(0, x0):x1]
    return int(np.all(roi == np.array(class_color(name), np.uint8), axis=2).sum())


def test_write_hides_json_png_sqlite(tmp_path: Path) -> None:
    h1, h2 = make_hides()
    with writer(tmp_path) as w:
        assert w.run_id == 1
        w.write_hide(h1)
        w.write_hide(h2)
        summary = w.finish({"lines": 10000, "tiles": 20})

    # JSON records: Hide.to_json() plus run id and station.
    for h in (h1, h2):
        rec = json.loads((tmp_path / "hides" / f"hide-{h.hide_id:04d}.json").read_text())
        assert rec.pop("run_id") == 1
        assert rec.pop("station") == "test-station"
        assert rec == json.loads(json.dumps(h.to_json()))
    assert not list((tmp_path / "hides").glob(".*tmp*"))  # no temporary files left

    # summary.json
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s == json.loads(json.dumps(summary))
    assert s["lines"] == 10000 and s["run_id"] == 1
    assert s["results"]["hides"] == 2 and s["results"]["defects"] == 4
    assert s["results"]["grades"] == {"A": 1, "B": 1}

    # PNG of hide 1: picture 1024 px wide -> map 1024 px wide, body 500 px high.
    img = cv2.imread(str(tmp_path / "hides" / "hide-0001.png"), cv2.IMREAD_COLOR)
    assert img is not None and img.shape[1] == 1024
    fr = hide_map_frame(h1, MM_PX, MM_LINE)
    assert fr.body_h == 500 and img.shape[0] > fr.body_top + fr.body_h
    # The background is the picture, converted RGB -> BGR.
    bg = np.array(THUMB_RGB[::-1], np.uint8)
    assert np.array_equal(img[fr.body_top + 20, 20], bg)
    # The hole: its outline in the hole colour where the defect is.
    hole = fr.to_canvas(np.array(h1.defects[0].bbox_belt_mm).reshape(2, 2))
    (x0, y0), (x1, y1) = np.floor(hole.min(0)).astype(int), np.ceil(hole.max(0)).astype(int)
    assert class_pixels(img, "hole", (x0 - 2, y0 - 2, x1 + 3, y1 + 3)) >= 20
    assert class_pixels(img, "hole", (0, fr.body_top, 1024, fr.body_top + 30)) == 0
    # The tiny black dot (5x4 camera px, < 1 map px) gets a marker circle in its colour.
    c = fr.to_canvas(np.array([h1.defects[2].center_belt_mm]))[0].round().astype(int)
    assert class_pixels(img, "black_dot", (c[0] - 14, c[1] - 14, c[0] + 15, c[1] + 15)) >= 30
    # The scratch (box only, no outline) is drawn too.
    sc = fr.to_canvas(np.array(h1.defects[1].bbox_belt_mm).reshape(2, 2))
    assert class_pixels(img, "scratch", (int(sc[0, 0]) - 2, int(sc[0, 1]) - 2,
                                         int(sc[1, 0]) + 3, int(sc[1, 1]) + 3)) >= 20
    # Uninspected stretch: darkened and hatched across the whole width.
    ya = int(np.ceil(fr.line_to_canvas_y(4000))) + 2
    yb = int(np.floor(fr.line_to_canvas_y(4400))) - 2
    band = img[ya:yb, 500:1000].astype(int)
    assert band.mean() < 0.8 * bg.mean()
    assert (band.max(axis=2) >= 150).sum() > 200  # hatch lines
    # Legend lists the classes present (in their colours) below the body.
    legend = img[fr.body_top + fr.body_h:]
    for name in ("hole", "scratch", "black_dot"):
        assert class_pixels(legend, name, (0, 0, legend.shape[1], legend.shape[0])) >= 100
    assert class_pixels(legend, "cut", (0, 0, legend.shape[1], legend.shape[0])) == 0

    # PNG of hide 2 (no picture): plain map, 1280 px wide, cut drawn in its colour.
    img2 = cv2.imread(str(tmp_path / "hides" / "hide-0002.png"), cv2.IMREAD_COLOR)
    fr2 = hide_map_frame(h2, MM_PX, MM_LINE)
    assert img2.shape[1] == fr2.width == 1280
    cut = fr2.to_canvas(np.array(h2.defects[0].bbox_belt_mm).reshape(2, 2))
    (x0, y0), (x1, y1) = np.floor(cut.min(0)).astype(int), np.ceil(cut.max(0)).astype(int)
    assert class_pixels(img2, "cut", (x0 - 2, y0 - 2, x1 + 3, y1 + 3)) >= 40
    assert np.array_equal(img2, render_hide_map(h2, MM_PX, MM_LINE))

    # SQLite: WAL, row counts and values.
    con = sqlite3.connect(tmp_path / "results.sqlite")
    con.row_factory = sqlite3.Row
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert [tuple(r) for r in con.execute(
        "SELECT (SELECT COUNT(*) FROM runs), (SELECT COUNT(*) FROM hides),"
        " (SELECT COUNT(*) FROM defects), (SELECT COUNT(*) FROM uninspected)")] == [(1, 2, 4, 1)]
    run = con.execute("SELECT * FROM runs").fetchone()
    assert run["status"] == "finished" and run["ended_utc"] and run["station"] == "test-station"
    assert (run["n_hides"], run["n_defects"], run["n_uninspected"]) == (2, 4, 1)
    assert json.loads(run["run_info"]) == {"recording": "x.raw"}
    assert json.loads(run["summary"])["tiles"] == 20
    hr = con.execute("SELECT * FROM hides WHERE hide_id=1").fetchone()
    assert (hr["run_id"], hr["first_line"], hr["last_line"], hr["n_lines"]) == (1, 1000, 4999, 4000)
    assert hr["grade"] == "B" and hr["area_m2"] == pytest.approx(1.85)
    assert hr["inspected_fraction"] == pytest.approx(0.9)
    assert hr["origin_across_mm"] == pytest.approx(512 * MM_PX)
    assert hr["origin_along_mm"] == pytest.approx(1000 * MM_LINE)
    assert json.loads(hr["outline_belt_mm"]) == h1.to_json()["outline_belt_mm"]
    assert hr["map_path"] == "hides/hide-0001.png" and hr["json_path"] == "hides/hide-0001.json"
    d = con.execute("SELECT * FROM defects WHERE hide_id=1 AND defect_id=1").fetchone()
    hole_d = h1.defects[0]
    assert d["class"] == "hole" and d["score"] == pytest.approx(0.95) and d["run_id"] == 1
    assert [d["belt_across0_mm"], d["belt_along0_mm"], d["belt_across1_mm"], d["belt_along1_mm"]] \
        == pytest.approx(list(hole_d.bbox_belt_mm))
    assert (d["belt_center_across_mm"], d["belt_center_along_mm"]) == pytest.approx(
        (2080 * MM_PX, 2060 * MM_LINE))
    assert (d["hide_center_x_mm"], d["hide_center_y_mm"]) == pytest.approx(
        (2080 * MM_PX - 512 * MM_PX, 2060 * MM_LINE - 1000 * MM_LINE))
    assert d["area_mm2"] == pytest.approx(160 * MM_PX * 120 * MM_LINE)
    assert (d["first_line"], d["last_line"]) == (2000, 2119)
    u = con.execute("SELECT * FROM uninspected").fetchone()
    assert (u["hide_id"], u["first_line"], u["end_line"], u["reason"]) == (1, 4000, 4400, "dropped")
    assert (u["along0_mm"], u["along1_mm"]) == pytest.approx((1600.0, 1760.0))
    con.close()


def test_second_run_appends_and_earlier_run_stays(tmp_path: Path) -> None:
    h1, h2 = make_hides()
    with writer(tmp_path) as w:
        w.write_hide(h1)
        w.write_hide(h2)
        w.finish({})
    h1.grade = "C"
    with writer(tmp_path) as w:
        assert w.run_id == 2
        w.write_hide(h1)
        w.finish({"second": True})

    latest = load_run_hides(tmp_path)
    assert [(r["run_id"], r["hide_id"], r["grade"]) for r in latest] == [(2, 1, "C")]
    first = load_run_hides(tmp_path, run_id=1)
    assert [(r["run_id"], r["hide_id"], r["grade"]) for r in first] == [(1, 1, "B"), (1, 2, "A")]
    assert latest_run_id(tmp_path) == 2
    con = sqlite3.connect(tmp_path / "results.sqlite")
    rows = con.execute("SELECT run_id, status, n_hides, n_defects FROM runs ORDER BY run_id").fetchall()
    assert rows == [(1, "finished", 2, 4), (2, "finished", 1, 3)]
    assert con.execute("SELECT COUNT(*) FROM defects WHERE run_id=1").fetchone()[0] == 4
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    assert json.loads((tmp_path / "summary.json").read_text())["second"] is True


def test_rewriting_a_hide_replaces_its_rows(tmp_path: Path) -> None:
    h1, _ = make_hides()
    with writer(tmp_path) as w:
        w.write_hide(h1)
        h1.defects = h1.defects[:1]
        w.write_hide(h1)
        s = w.finish({})
    assert s["results"]["hides"] == 1 and s["results"]["defects"] == 1
    con = sqlite3.connect(tmp_path / "results.sqlite")
    assert con.execute("SELECT COUNT(*) FROM hides").fetchone()[0] == 1
    assert con.execute("SELECT COUNT(*) FROM defects").fetchone()[0] == 1
    con.close()


def test_without_sqlite_and_maps_json_only_runs(tmp_path: Path) -> None:
    h1, h2 = make_hides()
    with writer(tmp_path, sqlite=False, hide_maps=False) as w:
        assert w.run_id == 1
        w.write_hide(h1)
        w.write_hide(h2)
        w.finish({})
    assert not (tmp_path / "results.sqlite").exists()
    assert not list((tmp_path / "hides").glob("*.png"))
    with writer(tmp_path, sqlite=False, hide_maps=False) as w:
        assert w.run_id == 2
        w.write_hide(h2)
        w.finish({})
    recs = load_run_hides(tmp_path)
    assert [(r["run_id"], r["hide_id"]) for r in recs] == [(2, 2)]


def test_crash_keeps_hides_already_written(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(REPO)!r})
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_results import make_hides, writer
        from pathlib import Path
        h1, h2 = make_hides()
        w = writer(Path({str(tmp_path)!r}))
        w.write_hide(h1)
        w.write_hide(h2)
        os._exit(3)  # power-cut style: no finish, no close, no flush
    """)
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert p.returncode == 3, p.stderr
    con = sqlite3.connect(tmp_path / "results.sqlite")
    assert con.execute("SELECT status, ended_utc FROM runs").fetchall() == [("running", None)]
    assert con.execute("SELECT COUNT(*) FROM hides").fetchone()[0] == 2
    assert con.execute("SELECT COUNT(*) FROM defects").fetchone()[0] == 4
    con.close()
    assert [r["hide_id"] for r in load_run_hides(tmp_path)] == [1, 2]
    # The next run in the same folder finds run 1 still "running" with nobody holding the folder's
    # lock: its process died, so it is marked crashed; its files move to runs/run-0001/.
    with writer(tmp_path) as w:
        assert w.run_id == 2
    con = sqlite3.connect(tmp_path / "results.sqlite")
    assert con.execute("SELECT run_id, status FROM runs ORDER BY run_id").fetchall() == [
        (1, "crashed"), (2, "incomplete")]
    assert con.execute("SELECT DISTINCT json_path LIKE 'runs/run-0001/hides/%' FROM hides").fetchall() == [(1,)]
    con.close()
    assert sorted(p.name for p in (tmp_path / "runs" / "run-0001" / "hides").glob("*.json")) == [
        "hide-0001.json", "hide-0002.json"]
    assert [r["hide_id"] for r in load_run_hides(tmp_path, run_id=1)] == [1, 2]


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="run folder not found"):
        load_run_hides(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no results found"):
        load_run_hides(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "results.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(InputError) as e:
        writer(bad)
    assert "results.sqlite" in str(e.value)
    with pytest.raises(InputError) as e:
        load_run_hides(bad)
    assert "results.sqlite" in str(e.value)


def _hide(area_m2: float, defect_mm2: list[float], inspected: float = 1.0) -> Hide:
    ds = [make_defect(i, 1, "hole", (0, 0, 1, 1), (0, 0)) for i in range(len(defect_mm2))]
    for d, a in zip(ds, defect_mm2):
        d.area_mm2 = a
    return Hide(hide_id=1, first_line=0, last_line=99, area_m2=area_m2, defects=ds,
                inspected_fraction=inspected)


@pytest.mark.parametrize(
    "area_m2, defects_mm2, inspected, grade",
    [
        (1.0, [], 1.0, "A"),
        (1.0, [999.0], 1.0, "A"),  # 0.0999 % < 0.1 %
        (1.0, [600.0, 400.0], 1.0, "B"),  # exactly 0.1 %: not below grade_a
        (1.0, [4999.0], 1.0, "B"),
        (1.0, [5000.0], 1.0, "C"),
        (2.0, [39_999.0], 1.0, "C"),
        (2.0, [40_000.0], 1.0, "D"),
        (1.0, [], 0.899, "U"),  # too little inspected, even without defects
        (1.0, [], 0.9, "A"),  # exactly min_inspected is enough
        (0.0, [], 1.0, "U"),  # no area: cannot grade
    ],
)
def test_grade_rules(area_m2: float, defects_mm2: list[float], inspected: float, grade: str) -> None:
    assert grade_hide(_hide(area_m2, defects_mm2, inspected), Grading()) == grade


def test_grade_uses_configured_thresholds() -> None:
    g = Grading(grade_a=0.01, grade_b=0.02, grade_c=0.03, min_inspected=0.5)
    assert grade_hide(_hide(1.0, [9_000.0], 0.6), g) == "A"
    assert grade_hide(_hide(1.0, [25_000.0], 0.6), g) == "C"
    assert grade_hide(_hide(1.0, [9_000.0], 0.4), g) == "U"
