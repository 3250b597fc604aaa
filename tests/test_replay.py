"""End to end: synthetic recording -> replay (CLI) -> results + eval; loss policy; bad input."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from edge_inspector.cli import main
from edge_inspector.evaluation.runs import evaluate
from edge_inspector.inference.runtime import openvino_available

from conftest import SMALL_STATION as STATION

def test_replay_writes_results_and_eval_matches_truth(recording, tmp_path, capsys):
    rec, st, truth = recording
    out = tmp_path / "run"
    assert main(["replay", str(rec), "--station", str(st), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "hides" in text and "tiles/s" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["lines"] == truth["n_lines"] and summary["lines_lost"] == 0
    assert summary["hides"] == len(truth["hides"])
    assert summary["strips_dropped"] == 0
    hides = sorted((out / "hides").glob("hide-*.json"))
    assert len(hides) == 2 and len(sorted((out / "hides").glob("hide-*.png"))) == 2
    for hj, gt in zip(hides, truth["hides"]):
        h = json.loads(hj.read_text())
        assert abs(h["first_line"] - gt["first_line"]) <= 8 and abs(h["last_line"] - gt["last_line"]) <= 8
        assert abs(h["area_m2"] - gt["area_m2"]) / gt["area_m2"] < 0.05
        np.testing.assert_allclose(h["origin_belt_mm"][1], gt["origin_belt_mm"][1], atol=8 * 1.5)
        for d in h["defects"]:
            # the hide frame is the belt frame shifted by the hide's origin
            bb, hb = d["bbox_belt_mm"], d["bbox_hide_mm"]
            assert abs(bb[0] - h["origin_belt_mm"][0] - hb[0]) < 0.01
            assert abs(bb[1] - h["origin_belt_mm"][1] - hb[1]) < 0.01
            assert h["first_line"] <= 0.5 * (d["lines"][0] + d["lines"][1]) <= h["last_line"]
    with sqlite3.connect(out / "results.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        n_db = db.execute("SELECT COUNT(*) FROM defects").fetchone()[0]
    assert n_db == summary["defects"]
    rep = evaluate(out, Path(str(rec) + ".gt.json"))
    assert rep["overall"]["recall"] is not None and rep["overall"]["recall"] > 0
    assert main(["eval", str(out)]) == 0
    assert "recall" in capsys.readouterr().out


def test_realtime_with_a_slow_consumer_reports_dropped_strips_as_uninspected(recording, tmp_path):
    """Live policy: a ring of 2 slots and a line rate far above what the model keeps up with."""
    rec, st, truth = recording
    fast = tmp_path / "fast.toml"
    fast.write_text(STATION.replace("line_rate_hz = 20000", "line_rate_hz = 2000000").replace("ring_slots = 3", "ring_slots = 2"))
    out = tmp_path / "rt"
    assert main(["replay", str(rec), "--station", str(fast), "--out", str(out), "--realtime"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["strips_dropped"] > 0
    unins = []
    for hj in sorted((out / "hides").glob("hide-*.json")):
        h = json.loads(hj.read_text())
        unins += h["uninspected"]
        if h["uninspected"]:
            assert h["inspected_fraction"] < 1.0
    assert unins and all(u["reason"] == "dropped" for u in unins)


def _corrupt_copy(rec: Path, tmp: Path) -> tuple[Path, int]:
    data = bytearray(rec.read_bytes())
    # the second block's payload: file header, block 1 header+payload, block 2 header
    from edge_inspector.recording import open_recording

    r = open_recording(rec)
    blocks = list(r.blocks())
    off = int(np.asarray(blocks[1].lines).__array_interface__["data"][0] - r.memmap.__array_interface__["data"][0])
    r.close()
    data[off + 100] ^= 0xFF
    bad = tmp / "bad.raw"
    bad.write_bytes(bytes(data))
    return bad, off - 64


def test_corrupt_recording_exits_2_with_byte_offset(recording, tmp_path, capsys):
    rec, st, _ = recording
    bad, block_off = _corrupt_copy(rec, tmp_path)
    assert main(["replay", str(bad), "--station", str(st), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and f"byte {block_off}" in err and "CRC" in err.upper()
    # with --skip-corrupt the block becomes lost lines and the run completes
    assert main(["replay", str(bad), "--station", str(st), "--out", str(tmp_path / "o2"), "--skip-corrupt"]) == 0
    s = json.loads((tmp_path / "o2" / "summary.json").read_text())
    assert s["lines_lost"] > 0


@pytest.mark.parametrize("case", ["missing_model", "garbage_model", "station_mismatch", "not_a_recording"])
def test_bad_input_exits_2_naming_the_file(recording, tmp_path, capsys, case):
    rec, st, _ = recording
    args = ["replay", str(rec), "--station", str(st), "--out", str(tmp_path / "o")]
    named = None
    if case == "missing_model":
        args += ["--model", str(tmp_path / "nope.onnx")]
        named = "nope.onnx"
    elif case == "garbage_model":
        g = tmp_path / "garbage.onnx"
        g.write_bytes(b"\x00not onnx" * 10)
        args += ["--model", str(g)]
        named = "garbage.onnx"
    elif case == "station_mismatch":
        other = tmp_path / "other.toml"
        other.write_text(STATION.replace("width = 1024", "width = 2048"))
        args[3] = str(other)
        named = "width"
    else:
        f = tmp_path / "dump.bin"
        f.write_bytes(b"\x01" * 5000)
        args[1] = str(f)
        named = "dump.bin"
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "error" in err and named in err


def test_headerless_dump_replays_with_explicit_geometry(recording, tmp_path):
    rec, st, truth = recording
    from edge_inspector.recording import open_recording

    r = open_recording(rec)
    dump = tmp_path / "dump.bin"
    with open(dump, "wb") as f:
        for b in r.blocks():
            f.write(np.ascontiguousarray(b.lines).tobytes())
    r.close()
    out = tmp_path / "hl"
    assert main(["replay", str(dump), "--station", str(st), "--out", str(out),
                 "--width", "1024", "--channels", "3", "--dtype", "uint8"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["lines"] == truth["n_lines"] and s["hides"] == 2


def test_synth_and_bench_commands(tmp_path, capsys):
    st = tmp_path / "small.toml"
    st.write_text(STATION)
    rec = tmp_path / "s.raw"
    assert main(["synth", "-o", str(rec), "--hides", "1", "--seed", "2", "--width", "1024"]) == 0
    assert rec.is_file() and Path(str(rec) + ".gt.json").is_file()
    capsys.readouterr()
    assert main(["bench", "--no-model", "--station", str(st), "--lines", "20000"]) == 0
    cap = capsys.readouterr()
    res = json.loads(cap.out)
    assert res["mode"] == "no-model" and res["lines"] == 20000 and res["lines_per_s"] > 0
    assert res["tiles"] > 0 and res["strips_dropped"] == 0 and res["provider"] == "none"
    # headroom: 20,000 lines/s over strips of 448 new lines, 3 tile columns of 512 in 1,024 px
    assert res["needed_tiles_per_s"] == round(20000 / 448 * 3, 2)
    assert res["headroom"] == round(res["tiles_per_s"] / res["needed_tiles_per_s"], 2) > 0
    # the pipeline beside a plain copy of the same blocks, measured in the same run
    assert res["plain_copy_lines_per_s"] > 0
    assert res["copy_ratio"] == round(res["lines_per_s"] / res["plain_copy_lines_per_s"], 3)
    assert f"headroom {res['headroom']}" in cap.err and f"{res['copy_ratio']} of a plain copy" in cap.err
    assert main(["bench", "--station", str(st), "--lines", "3000"]) == 0
    res = json.loads(capsys.readouterr().out)
    cpu = "OpenVINO:CPU" if openvino_available() else "CPUExecutionProvider"  # the fastest CPU runtime present
    assert res["mode"] == "model" and res["provider"] == cpu
    assert res["model_only_tiles_per_s"] > 0 and res["tiles"] > 0
    assert res["headroom"] == round(res["tiles_per_s"] / res["needed_tiles_per_s"], 2)
    assert res["model_only_headroom"] == round(res["model_only_tiles_per_s"] / res["needed_tiles_per_s"], 2)
    assert res["batch"] == 1  # model.batch = 0 (auto) is one tile per call on a CPU runtime
    assert "copy_ratio" not in res


@pytest.mark.skipif(not openvino_available(), reason="the openvino package is not installed")
def test_strips_inferred_side_by_side_give_the_defects_of_one_at_a_time(recording, tmp_path) -> None:
    """[model] cpu_streams = 2 (two inference workers, OpenVINO) against 1: the same defects in the
    same hides, every strip through the model once, in line order."""
    rec, st, _ = recording
    runs, hides = {}, {}
    for k in (1, 2):
        station = tmp_path / f"s{k}.toml"
        station.write_text(st.read_text().replace("[model]\n", f"[model]\ncpu_streams = {k}\n"))
        assert main(["replay", str(rec), "--station", str(station), "--out", str(tmp_path / f"r{k}")]) == 0
        runs[k] = json.loads((tmp_path / f"r{k}" / "summary.json").read_text())
        hides[k] = [json.loads(p.read_text())["defects"] for p in sorted((tmp_path / f"r{k}" / "hides").glob("*.json"))]
    assert runs[1]["inference_workers"] == 1 and runs[2]["inference_workers"] == 2
    assert runs[2]["strips"] == runs[1]["strips"] and runs[2]["tiles_run"] == runs[1]["tiles_run"]
    assert runs[2]["defects_by_class"] == runs[1]["defects_by_class"] and runs[1]["defects"] > 0
    assert hides[2] == hides[1] and len(hides[1]) == runs[1]["hides"]
