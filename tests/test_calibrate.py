"""edge-inspector calibrate: a station's threshold from known-good leather, and its use in replay."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_inspector.calibrate import (
    apply_calibration,
    calibrate,
    calibration_path,
    write_calibration,
)
from edge_inspector.cli import main
from edge_inspector.config import load_station
from edge_inspector.errors import InputError
from edge_inspector.lines import LineBlock
from edge_inspector.recording import RecordingWriter, open_recording
from edge_inspector.synth import SynthConfig, write_recording

from conftest import SMALL_STATION


def good_recording(path: Path, seed: int = 5) -> Path:
    write_recording(path, SynthConfig(hides=2, seed=seed, width=1024, mm_per_px=1.5, mm_per_line=1.5,
                                      line_rate_hz=20000, defects_per_hide=(0, 0)))
    return path


def with_speckle(src: Path, dst: Path, n_per_block: int, seed: int = 1) -> Path:
    """A copy of ``src`` with small dark spots on the hides: good leather, but noisier."""
    rng = np.random.default_rng(seed)
    reader = open_recording(src)
    with RecordingWriter(dst, reader.header) as w:
        for b in reader.blocks():
            lines = np.array(b.lines)
            hide = np.abs(lines.astype(np.int16) - 40).mean(axis=2) > 40
            ys, xs = np.nonzero(hide)
            for k in rng.choice(len(ys), size=min(n_per_block, len(ys)), replace=False) if len(ys) else []:
                cv2.circle(lines, (int(xs[k]), int(ys[k])), 2, (0, 0, 0), -1)
            w.write(LineBlock(lines, b.first_line, b.encoder, b.timestamp_ns, b.lost_before))
    return dst


@pytest.fixture(scope="module")
def station_file(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cal")
    f = d / "small.toml"
    f.write_text(SMALL_STATION)
    return f


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    return good_recording(tmp_path_factory.mktemp("good") / "good.raw")


def test_calibrate_writes_the_threshold_for_the_budget_next_to_the_station(station_file, good, capsys) -> None:
    assert main(["calibrate", str(good), "--station", str(station_file), "--budget", "0.2"]) == 0
    out = capsys.readouterr().out
    cal = calibration_path(station_file)
    assert cal == station_file.with_name("small.calibration.json") and cal.is_file()
    rec = json.loads(cal.read_text())
    assert rec["model"]["path"] == "builtin:baseline" and len(rec["model"]["sha256"]) == 64
    assert rec["data"][0]["kind"] == "recording" and rec["leather_m2"] > 1.0
    assert rec["within_budget"] is True
    rows = {r["threshold"]: r["false_per_m2"] for r in rec["table"]}
    t = rec["threshold"]
    assert rows[t] <= 0.2
    # The lowest threshold within the budget: the next lower one is over it.
    lower = [v for k, v in rows.items() if k < t]
    assert lower and lower[-1] > 0.2
    assert f"threshold {t:g} written to {cal}" in out and "<- chosen" in out


def test_a_noisier_good_leather_moves_the_threshold_up(station_file, good, tmp_path) -> None:
    st = load_station(station_file)
    clean = calibrate(st, station_file, [good])
    noisy = calibrate(st, station_file, [with_speckle(good, tmp_path / "noisy.raw", n_per_block=12)])
    assert noisy["threshold"] > clean["threshold"]
    assert noisy["table"][0]["false_per_m2"] > clean["table"][0]["false_per_m2"]


def test_calibrate_on_a_folder_of_images_and_recall_on_defect_images(station_file, good, tmp_path) -> None:
    reader = open_recording(good)
    lines = np.concatenate([np.asarray(b.lines) for b in reader.blocks()])
    rows = np.nonzero((np.abs(lines.astype(np.int16) - 40).mean(axis=2) > 40).mean(axis=1) > 0.6)[0]
    hide_band = lines[rows[0] : rows[0] + 1200, 200:800]  # a stretch of good hide
    folder = tmp_path / "good-images"
    folder.mkdir()
    for i in range(3):
        crop = hide_band[i * 400 : (i + 1) * 400]
        cv2.imwrite(str(folder / f"g{i}.png"), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    defects = tmp_path / "defects"
    (defects / "images").mkdir(parents=True)
    (defects / "labels").mkdir()
    img = np.ascontiguousarray(hide_band[:400]).copy()
    cv2.circle(img, (200, 200), 12, (5, 5, 5), -1)  # a hole-like dark defect
    cv2.imwrite(str(defects / "images" / "d0.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    (defects / "labels" / "d0.txt").write_text("0 0.5 0.5 0.075 0.075\n")
    st = load_station(station_file)
    rec = calibrate(st, station_file, [folder], defects=defects, mm_per_px=1.5)
    assert rec["data"] == [{"kind": "images", "path": str(folder.resolve()), "images": 3, "mm_per_px": 1.5}]
    assert rec["leather_m2"] == pytest.approx(3 * 400 * 600 * 1.5 * 1.5 / 1e6, rel=0.02)
    assert rec["defects_labelled"] == 1
    recall = {r["threshold"]: r["recall"] for r in rec["table"]}
    assert recall[0.05] == 1.0 and recall[0.99] in (0.0, 1.0)


def test_replay_runs_at_the_calibrated_threshold_and_says_so(station_file, good, tmp_path) -> None:
    st = load_station(station_file)
    rec = calibrate(st, station_file, [good], budget=0.2)
    rec["threshold"] = 0.61  # any value: the test checks it is the one in force
    write_calibration(rec, station_file)
    applied, source = apply_calibration(load_station(station_file))
    assert applied.model.score_threshold == 0.61 and source["value"] == 0.61
    assert source["source"] == f"calibration {calibration_path(station_file)}"
    # Another model than the one calibrated: the model's default, and the summary says why.
    other, source = apply_calibration(load_station(station_file), "builtin:default")
    assert other.model.score_threshold is None and "for another model" in source["source"]
    # A threshold set in the station file wins.
    explicit = station_file.with_name("explicit.toml")
    explicit.write_text(SMALL_STATION.replace('path = "builtin:baseline"', 'path = "builtin:baseline"\nscore_threshold = 0.4'))
    _, source = apply_calibration(load_station(explicit))
    assert source == {"source": "station file", "value": 0.4}
    out = tmp_path / "run"
    assert main(["replay", str(good), "--station", str(station_file), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["threshold"]["value"] == 0.61 and summary["threshold"]["source"].startswith("calibration")
    calibration_path(station_file).unlink()


def test_bad_calibration_input_is_named(station_file, tmp_path) -> None:
    st = load_station(station_file)
    with pytest.raises(InputError, match="not found"):
        calibrate(st, station_file, [tmp_path / "missing.raw"])
    with pytest.raises(InputError, match="budget"):
        calibrate(st, station_file, [tmp_path], budget=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        calibrate(st, station_file, [tmp_path / "empty"])
    bad = calibration_path(station_file)
    bad.write_text('{"version": 1, "threshold": 7}')
    try:
        with pytest.raises(InputError, match="threshold must be a number in") as e:
            apply_calibration(load_station(station_file))
        assert str(bad) in str(e.value)
    finally:
        bad.unlink()


def test_good_leather_counts_defects_the_way_the_station_reports_them():
    """With a core-and-extent model, two sure cores joined by their extent are one false defect."""
    import numpy as np

    from edge_inspector.calibrate import THRESHOLDS, GoodLeather

    s = np.zeros((40, 60), np.float32)
    s[10:20, 5:45] = 0.5          # one extent ...
    s[12:17, 8:13] = 0.9          # ... holding two cores of 25 px
    s[12:17, 35:40] = 0.9
    s[30, 50] = 0.95              # a single sure pixel: no core of 4 px
    leather = np.ones(s.shape, bool)
    plain, station = GoodLeather(), GoodLeather(extent=0.4)
    plain.add(s, leather, 1.0, 4)
    station.add(s, leather, 1.0, 4)
    i = int(np.flatnonzero(np.isclose(THRESHOLDS, 0.8))[0])
    assert plain.false_blobs[i] == 2 and station.false_blobs[i] == 1
    k = int(np.flatnonzero(np.isclose(THRESHOLDS, 0.45))[0])  # below the extent level: one blob either way
    assert plain.false_blobs[k] == 1 and station.false_blobs[k] == 1
