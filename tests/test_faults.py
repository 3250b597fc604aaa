"""Fault injection: broken station files and command lines end with every problem named, never a
traceback or a silent default (the faults listed in the issue "marks never land in the wrong place
and nothing is lost silently")."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from edge_inspector.cli import build_parser, main
from edge_inspector.config import load_station, ring_bytes
from edge_inspector.errors import ConfigError

GOOD = """
[camera]
width = 1024
channels = 3
line_rate_hz = 20000
mm_per_px = 1.5
mm_per_line = 1.5
[tiling]
tile = 512
overlap = 64
[belt]
speed_m_per_min = 60
marker_distance_mm = 3000
"""


def write(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    f = tmp_path / name
    f.write_text(text)
    return f


def problems_of(f: Path) -> list[str]:
    with pytest.raises(ConfigError) as ei:
        load_station(f)
    assert str(f) in str(ei.value)
    return ei.value.problems


def test_cross_field_problems_are_listed_beside_type_errors(tmp_path: Path, capsys) -> None:
    f = write(tmp_path, GOOD + """
[grading]
grade_a = 0.05
grade_b = 0.01
[events]
endpoint = "127.0.0.1:5556"
[hide_detection]
threshold = "high"
""")
    probs = problems_of(f)
    assert any(p.startswith("hide_detection.threshold") for p in probs)
    assert any(p.startswith("grading: the limits must rise") and "0.05, 0.01" in p for p in probs)
    assert any(p.startswith("events.endpoint") and "tcp://HOST:PORT" in p for p in probs)
    assert main(["check-config", str(f)]) == 2
    assert "3 problem(s)" in capsys.readouterr().out


def test_a_cross_field_check_does_not_blame_a_field_that_has_its_own_error(tmp_path: Path) -> None:
    # camera.width is garbage: the tile-wider-than-line check must not run on the default width.
    f = write(tmp_path, GOOD.replace("width = 1024", 'width = "wide"').replace("tile = 512", "tile = 4096"))
    probs = problems_of(f)
    assert any(p.startswith("camera.width") for p in probs)
    assert not any("wider than the line" in p for p in probs)


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_infinite_and_nan_numbers_are_refused(tmp_path: Path, value: str) -> None:
    f = write(tmp_path, GOOD.replace("line_rate_hz = 20000", f"line_rate_hz = {value}"))
    assert any(p.startswith("camera.line_rate_hz") for p in problems_of(f))


def test_a_tile_ring_larger_than_the_machine_is_refused_before_any_allocation(tmp_path: Path) -> None:
    f = write(tmp_path, GOOD.replace("overlap = 64", "overlap = 64\nring_slots = 100000000"))
    probs = problems_of(f)
    ring = [p for p in probs if p.startswith("tiling.ring_slots")]
    assert ring and "GiB" in ring[0] and "default is 4" in ring[0]
    # The default ring of the 8K demo is far below that limit.
    demo = load_station(Path(__file__).resolve().parents[1] / "configs" / "stations" / "demo-8k.toml")
    assert ring_bytes(demo) == 4 * 2048 * 8192 * 3  # 4 strips of 2,048 whole 8K RGB lines


def test_absurd_widths_are_refused(tmp_path: Path) -> None:
    f = write(tmp_path, GOOD.replace("width = 1024", "width = 2147483647"))
    assert any(p.startswith("camera.width") and "65536" in p for p in problems_of(f))


def test_an_empty_file_or_missing_camera_and_belt_sections_are_refused(tmp_path: Path) -> None:
    probs = problems_of(write(tmp_path, ""))
    assert any(p.startswith("[camera]: section missing") for p in probs)
    assert any(p.startswith("[belt]: section missing") for p in probs)
    probs = problems_of(write(tmp_path, GOOD.split("[belt]")[0], "nobelt.toml"))
    assert [p for p in probs if "section missing" in p] == [
        p for p in probs if p.startswith("[belt]: section missing")] and probs


def test_check_config_names_a_missing_model_and_a_misspelt_builtin(tmp_path: Path, capsys) -> None:
    typo = write(tmp_path, GOOD + '[model]\npath = "builtin:defualt"\n', "typo.toml")
    missing = write(tmp_path, GOOD + '[model]\npath = "models/nope.onnx"\n', "missing.toml")
    assert main(["check-config", str(typo), str(missing)]) == 2
    out = capsys.readouterr().out
    assert "model.path: no built-in model 'defualt'" in out and "builtin:default" in out
    assert f"model.path: file not found ({tmp_path / 'models' / 'nope.onnx'})" in out


def test_plc_sim_log_option_is_not_taken_for_a_global_option() -> None:
    a = build_parser().parse_args(["plc-sim", "--log", "plc.jsonl", "--port", "0"])
    assert a.cmd == "plc-sim" and a.log == "plc.jsonl"


def test_a_model_path_on_the_command_line_is_relative_to_the_current_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    a = build_parser().parse_args(["replay", "r.raw", "--station", "cfg/s.toml", "--model", "models/x.onnx"])
    assert a.model == os.path.join(str(tmp_path), "models", "x.onnx")
    a = build_parser().parse_args(["replay", "r.raw", "--model", "builtin:baseline"])
    assert a.model == "builtin:baseline"


def test_zeromq_any_port_endpoint_is_accepted(tmp_path: Path) -> None:
    st = load_station(write(tmp_path, GOOD + '[events]\nendpoint = "tcp://127.0.0.1:*"\n'))
    assert st.events.endpoint == "tcp://127.0.0.1:*"
    bad = write(tmp_path, GOOD + '[events]\nendpoint = "tcp://127.0.0.1:70000"\n', "bad.toml")
    assert any("out of range" in p for p in problems_of(bad))


def test_eval_model_station_needs_only_its_model_section(tmp_path: Path) -> None:
    f = write(tmp_path, '[model]\npath = "builtin:baseline"\n')
    assert load_station(f, required=()).model.path == "builtin:baseline"
    with pytest.raises(ConfigError, match="section missing"):
        load_station(f)


def test_a_recording_header_wider_than_any_camera_is_refused(tmp_path: Path) -> None:
    from edge_inspector.errors import RecordingError
    from edge_inspector.recording import open_recording

    dump = tmp_path / "dump.bin"
    dump.write_bytes(bytes(64))
    with pytest.raises(RecordingError, match="width") as ei:
        open_recording(dump, width=2147483647, channels=3, dtype="uint8")
    assert "65536" in str(ei.value)


def test_synth_mono_recording_gets_one_belt_level(tmp_path: Path) -> None:
    from edge_inspector.synth import SynthConfig, write_recording

    cfg = SynthConfig(hides=1, seed=3, width=512, channels=1, mm_per_px=1.5, mm_per_line=1.5)
    assert cfg.belt_level == (40.0,) and not cfg.problems()
    write_recording(tmp_path / "mono.raw", cfg)
    assert (tmp_path / "mono.raw").stat().st_size > 0


def test_a_12_bit_hide_map_thumbnail_is_not_drawn_black() -> None:
    from edge_inspector.hidemap import _thumb_bgr

    mono12 = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 64)  # 0..4032: a 12-bit ramp
    bgr = _thumb_bgr(mono12)
    assert bgr.dtype == np.uint8 and bgr.max() >= 250 and bgr[0, 0, 0] == 0
    rgb16 = np.full((4, 4, 3), 65535, np.uint16)
    assert _thumb_bgr(rgb16).min() == 255
