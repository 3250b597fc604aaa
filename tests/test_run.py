"""InspectionRun: one wiring of pipeline, grading, results and marks for replay, the live run and bench."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edge_inspector.config import load_station
from edge_inspector.hide import Hide
from edge_inspector.inference import Model
from edge_inspector.recording import open_recording
from edge_inspector.run import InspectionRun
from edge_inspector.runfiles import MARKS_LOG, hide_stem


def test_each_hide_is_graded_once_and_written_before_any_subscriber_sees_it(recording, tmp_path: Path) -> None:
    rec, st_path, _ = recording
    station = load_station(st_path)
    # Every hide with a defect is graded D, and D hides are rejected.
    station.grading = station.grading.model_copy(update={"grade_a": 0.0, "grade_b": 0.0, "grade_c": 0.0})
    station.marking = station.marking.model_copy(update={"reject_grades": ["D"]})
    model = Model.for_station(station)
    out = tmp_path / "run"
    seen: list[tuple[int, str, bool, int]] = []
    events: list[tuple[str, dict[str, Any]]] = []

    def subscriber(h: Hide) -> None:
        # The grade is in force and the hide record is already on disk when a subscriber runs;
        # the publisher ran before it too.
        written = (out / "hides" / f"{hide_stem(h.hide_id)}.json").is_file()
        seen.append((h.hide_id, h.grade, written, sum(1 for t, d in events if t == "hide" and d["hide_id"] == h.hide_id)))

    reader = open_recording(rec)
    with InspectionRun(station, model, out, run_info={"command": "test"}, source_id="t",
                       subscribers=[subscriber], publish=lambda t, d: events.append((t, d))) as run:
        run.start(reader.blocks(), first_line=reader.line_range[0])
        stats = run.join()
        summary = run.finish({"recording": str(rec)})

    assert stats.hides == 2 and len(seen) == 2
    assert all(written and published == 1 for _, _, written, published in seen)
    grades = {hid: g for hid, g, _, _ in seen}
    assert set(grades.values()) <= {"D", "A", "U"} and "D" in grades.values()
    # The graded value is the one stored and the one the reject rule used.
    for hid, g in grades.items():
        rec_json = json.loads((out / "hides" / f"{hide_stem(hid)}.json").read_text())
        assert rec_json["grade"] == g
    planned = [json.loads(x) for x in (out / MARKS_LOG).read_text().splitlines()]
    rejected = {m["hide_id"] for m in planned if m.get("action") == "reject_hide"}
    assert rejected == {hid for hid, g in grades.items() if g == "D"}
    assert summary["grades"] == {g: sum(1 for v in grades.values() if v == g) for g in set(grades.values())}
    assert [t for t, _ in events].count("hide") == 2


def test_a_run_without_output_folder_counts_hides_only(recording) -> None:
    rec, st_path, _ = recording
    station = load_station(st_path)
    reader = open_recording(rec)
    with InspectionRun(station, None) as run:
        run.start(reader.blocks())
        stats = run.join()
    assert stats.hides == 2 and stats.tiles > 0 and run.results is None and run.dispatch is None
