"""Station config: shipped files validate; bad files list every problem with field and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_inspector.cli import main
from edge_inspector.config import load_station
from edge_inspector.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["demo-8k.toml", "template.toml"])
def test_shipped_station_files_are_valid(name):
    st = load_station(ROOT / "configs" / "stations" / name)
    assert st.camera.width == 8192 and st.tiling.tile == 2048 and st.tiling.overlap == 128


def test_every_problem_is_reported_at_once(tmp_path, capsys):
    f = tmp_path / "bad.toml"
    f.write_text("""
[camera]
width = "wide"
channels = 2
[tiling]
tile = 2048
overlap = -1
[modle]
path = "x.onnx"
[belt]
speed_m_per_min = 60
""")
    with pytest.raises(ConfigError) as ei:
        load_station(f)
    probs = ei.value.problems
    assert any(p.startswith("camera.width") for p in probs)
    assert any(p.startswith("camera.channels") for p in probs)
    assert any(p.startswith("tiling.overlap") for p in probs)
    assert any(p.startswith("modle") and "unknown field" in p for p in probs)
    assert str(f) in str(ei.value)
    assert main(["check-config", str(f)]) == 2
    out = capsys.readouterr().out
    assert "4 problem(s)" in out and "camera.width" in out


def test_impossible_geometry(tmp_path):
    f = tmp_path / "geo.toml"
    f.write_text("""
[camera]
width = 1024
[tiling]
tile = 2048
overlap = 2048
[belt]
speed_m_per_min = 60
marker_distance_mm = 500
""")
    with pytest.raises(ConfigError) as ei:
        load_station(f)
    text = "\n".join(ei.value.problems)
    assert "tiling.tile: 2048 px is wider than the line (camera.width = 1024)" in text
    assert "tiling.overlap: 2048 must be smaller than tiling.tile" in text
    assert "belt.marker_distance_mm: 500 mm is too short" in text and "must sit more than" in text


def test_not_toml_and_missing_file(tmp_path):
    f = tmp_path / "x.toml"
    f.write_text("[camera\nwidth=1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_station(f)
    with pytest.raises(ConfigError, match="file not found"):
        load_station(tmp_path / "nope.toml")
