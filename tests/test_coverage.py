"""The model runs only on tiles that hold hide (edge_inspector/coverage.py, tiling.skip_belt_tiles):
the decision per tile, and a replay that reports the same defects with it as without it."""

from __future__ import annotations

import json

import numpy as np

from edge_inspector.cli import main
from edge_inspector.config import HideDetection
from edge_inspector.coverage import HideCoverage
from edge_inspector.stream import Strip
from edge_inspector.tile import column_starts


def strip_with_hide(cols: tuple[int, int], width: int = 1536, tile: int = 512, valid: int = 512) -> Strip:
    px = np.empty((tile, width, 3), np.uint8)
    px[:] = (38, 40, 42)  # the belt (hide_detection.belt_level)
    px[100:300, cols[0] : cols[1]] = (150, 110, 80)  # leather
    return Strip(0, 0, valid, column_starts(width, tile, 64), px, 0)


def test_a_tile_runs_when_hide_lies_in_it_or_within_the_overlap_of_it() -> None:
    cov = HideCoverage(HideDetection(subsample=4), channels=3, pad_px=64)
    s = strip_with_hide((1300, 1400))
    starts = s.x0s
    assert len(starts) >= 3
    want = [x0 - 64 < 1400 and x0 + 512 + 64 > 1300 for x0 in starts]
    assert list(cov.active(s)) == want and any(want) and not all(want)
    # bare belt: nothing runs; hide everywhere: everything runs
    assert not cov.active(strip_with_hide((0, 0))).any()
    assert cov.active(strip_with_hide((0, 1536))).all()
    # hide only in rows past the strip's valid lines (the repeated last row is belt) does not count
    assert not cov.active(strip_with_hide((1300, 1400), valid=64)).any()
    # a mono camera with one belt level
    mono = Strip(0, 0, 512, starts, strip_with_hide((1300, 1400)).pixels[..., :1].copy(), 0)
    assert list(HideCoverage(HideDetection(belt_level=[38.0], subsample=4), 1, 64).active(mono)) == want


def test_replay_reports_the_same_defects_with_and_without_skipping_bare_belt(recording, tmp_path, capsys) -> None:
    rec, st, _ = recording
    off = tmp_path / "off.toml"
    off.write_text(st.read_text().replace("ring_slots = 3", "ring_slots = 3\nskip_belt_tiles = false"))
    runs = {}
    for name, station in (("on", st), ("off", off)):
        assert main(["replay", str(rec), "--station", str(station), "--out", str(tmp_path / name)]) == 0
        runs[name] = json.loads((tmp_path / name / "summary.json").read_text())
    on, base = runs["on"], runs["off"]
    assert base["tiles_skipped"] == 0 and base["tiles_run"] == base["tiles"]
    assert on["tiles_skipped"] > 0 and on["tiles_run"] + on["tiles_skipped"] == on["tiles"]
    assert on["defects"] == base["defects"] and sum(on["defects_by_class"].values()) > 0
    assert on["defects_by_class"] == base["defects_by_class"]
    hides = {}
    for name in runs:
        hides[name] = [json.loads(p.read_text())["defects"] for p in sorted((tmp_path / name / "hides").glob("*.json"))]
    assert hides["on"] == hides["off"]
