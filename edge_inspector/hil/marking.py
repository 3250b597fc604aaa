"""The marking_accuracy check: a test hide through the whole chain, marks against its ground truth.

With the soft-PLC a small synthetic recording is replayed at its belt speed; against real hardware
a physical test hide passes under the camera, its defects given in a truth file (``--truth``).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from ..config import Station, parse_station
from ..errors import InputError
from .result import NOT_REACHABLE, CheckResult, failed, passed, skipped
from .session import OUTBOX, HilOptions, Session

PLACEMENT_TOL_MM = 5.0  # fired position - commanded target (soft-PLC log)
MIN_MARKED_OF_FOUND = 0.8  # of the test defects the inspector detected: an ink mark within MARK_TOL_MM
MARK_TOL_MM = 10.0


# -- f) marking accuracy ----------------------------------------------------------------------


def check_marking(t: Session, opts: HilOptions, work: Path) -> CheckResult:
    """Soft-PLC: a synthetic hide replayed at its belt speed; otherwise the physical test hide of --truth."""
    name = "marking_accuracy"
    if t.plc is None:
        return skipped(name, "no PLC configured: nothing fires marks")
    if not t.plc_ok:
        return failed(name, NOT_REACHABLE)
    try:
        if t.test_hide is not None:
            return _test_hide_run(t, t.test_hide, opts.hide_timeout_s, work)
        if t.soft_plc is not None:
            return _synthetic_run(t, work)
    except InputError as e:  # the test geometry, a camera that fails, a results folder
        return failed(name, str(e))
    return skipped(name, "a real PLC fires real marks: run a physical test hide with known defects and give its truth"
                 " file with --truth (hil/README.md); not run")


def _synthetic_station(t: Session, outbox: Path) -> Station:
    """A small fast geometry (1024 px, 1.5 mm per px and line, baseline model) at the soft-PLC's belt speed.

    ``outbox``: the one the earlier checks used, so that mark sequences go on where they ended.
    """
    st, mm = t.station, 1.5
    assert t.soft_plc is not None
    speed = t.soft_plc.speed_mm_s
    return parse_station({
        "station": {"name": "hil-marking"},
        "camera": {"width": 1024, "channels": 3, "line_rate_hz": speed / mm, "mm_per_px": mm, "mm_per_line": mm},
        "tiling": {"tile": 512, "overlap": 64, "ring_slots": 3},
        "hide_detection": {"subsample": 4, "min_hide_lines": 32, "gap_lines": 32, "edge_margin_mm": 0},
        "model": {"path": "builtin:baseline", "providers": ["CPUExecutionProvider"]},
        "belt": {"speed_m_per_min": speed * 60.0 / 1000.0, "marker_distance_mm": st.belt.marker_distance_mm,
                 "processing_latency_s": 0.5, "margin_mm": 100},
        "plc": {"unit_id": st.plc.unit_id, "outbox": str(outbox)},
        "marking": {"reject_grades": []},  # rejects fire at the reject gate, far behind: not what is measured
        "outputs": {"hide_maps": False, "sqlite": False},
    })


def _synthetic_run(t: Session, work: Path) -> CheckResult:
    """Replay a one-hide synthetic recording with --realtime to the soft-PLC; evaluate where it fired."""
    from ..replay import replay
    from ..synth import SynthConfig, write_recording

    st = _synthetic_station(t, work / OUTBOX)
    rec = work / "test-hide.raw"
    write_recording(rec, SynthConfig(hides=1, seed=5, width=1024, mm_per_px=1.5, mm_per_line=1.5,
                                     line_rate_hz=st.camera.line_rate_hz, gap_lines=(150, 250)))
    run_dir = work / "marking"
    assert t.plc is not None
    since = time.time()
    _, summary = replay(rec, st, run_dir, realtime=True, plc=f"{t.plc[0]}:{t.plc[1]}", overwrite=True)
    _keep_fired(t, run_dir, since)
    return _marking_verdict(run_dir, Path(f"{rec}.gt.json"), summary, fired_log=True)


def _keep_fired(t: Session, run_dir: Path, since: float) -> None:
    """Wait until the soft-PLC fired (or missed) every mark the run planned; its log of the run -> run_dir/plc.jsonl."""
    from ..runfiles import MARKS_LOG, PLC_LOG

    assert t.soft_plc is not None
    planned = [r for r in map(json.loads, (run_dir / MARKS_LOG).read_text().splitlines()) if r.get("event") == "planned"]
    want = {int(r["seq"]) for r in planned}
    travel = max((r["deadline_belt_mm"] - r["belt_mm"] for r in planned), default=0.0)
    end = time.monotonic() + travel / max(t.soft_plc.speed_mm_s, 1.0) + 10.0
    while time.monotonic() < end:
        done = {int(e["seq"]) for e in t.soft_plc.events(since=since) if e.get("event") in ("fired", "missed")}
        if want <= done:
            break
        time.sleep(0.1)
    events = t.soft_plc.events(since=since)
    (run_dir / PLC_LOG).write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")


def _marking_verdict(run_dir: Path, truth: Path, summary: dict[str, Any], *, fired_log: bool) -> CheckResult:
    """Pass: the detected test defects carry ink marks, none late or missed; with a PLC log, fired where commanded.

    Detection recall is reported, not judged: it measures the model, not the station's marking chain.
    """
    from ..evaluation.runs import evaluate

    name = "marking_accuracy"
    rep = evaluate(run_dir, truth, tol_mm=5.0, mark_tol_mm=MARK_TOL_MM)
    mk = rep["marking"] or {}
    pe, pl = mk.get("position_error_mm", {}), mk.get("placement_error_mm", {})
    values = {
        "hides": summary.get("hides"), "gt_defects": mk.get("gt_defects_inspected"),
        "gt_defects_detected": rep["overall"]["found"], "detection_recall": rep["overall"]["recall"],
        "ink_marks": mk.get("ink_marks"),
        "gt_defects_marked": mk.get("gt_defects_marked"), "marked_fraction": mk.get("marked_fraction"),
        "position_error_mm_p50": pe.get("p50"), "position_error_mm_max": pe.get("max"),
        "placement_error_mm_p50": pl.get("p50"), "placement_error_mm_max": pl.get("max"),
        "late": mk.get("late_planned"), "missed_by_plc": mk.get("missed_by_plc"),
        "ink_marks_not_fired": mk.get("ink_marks_not_fired"), "source": mk.get("source"), "run_dir": str(run_dir),
    }
    problems = []
    if not values["ink_marks"]:
        problems.append("no ink marks")
    found, marked = values["gt_defects_detected"] or 0, values["gt_defects_marked"] or 0
    if not found or marked < MIN_MARKED_OF_FOUND * found:
        problems.append(f"{marked} of the {found} detected test defects marked (at least"
                        f" {100 * MIN_MARKED_OF_FOUND:g} % within {MARK_TOL_MM:g} mm)")
    for key in ("late", "missed_by_plc", "ink_marks_not_fired"):
        if values[key]:
            problems.append(f"{key.replace('_', ' ')}: {values[key]}")
    if fired_log and (pl.get("max") is None or pl["max"] > PLACEMENT_TOL_MM):
        problems.append(f"placement error (fired - commanded) max {pl.get('max')} mm > {PLACEMENT_TOL_MM:g} mm")
    text = (f"{marked} of {found} detected test defects marked ({values['gt_defects']} in the truth), mark"
            f" position error p50 {pe.get('p50')} mm; placement p50 {pl.get('p50')} / max {pl.get('max')} mm;"
            f" late {values['late']}, missed {values['missed_by_plc']}")
    if problems:
        return failed(name, "; ".join(problems) + f" ({text})", **values)
    return passed(name, text, **values)


def _test_hide_run(t: Session, spec: dict[str, Any], timeout_s: float, work: Path) -> CheckResult:
    """Live run until the physical test hide has passed; its truth (hide frame) aligned with the hide found."""
    from ..live import run_live

    stop = threading.Event()
    found: list[Any] = []

    def on_hide(h: Any) -> None:
        if h.area_m2 >= spec["min_area_m2"] and not found:
            found.append(h)
            stop.set()

    run_dir = work / "test-hide"
    assert t.plc is not None
    since = time.time()
    _, summary = run_live(t.station, run_dir, seconds=timeout_s, stop=stop, hide_callbacks=[on_hide],
                          plc=f"{t.plc[0]}:{t.plc[1]}")
    if not found:
        return failed("marking_accuracy", f"no hide of at least {spec['min_area_m2']:g} m² within {timeout_s:g} s:"
                     " put the test hide on the running belt after the start")
    if t.soft_plc is not None:
        _keep_fired(t, run_dir, since)
    truth = _belt_truth(spec, found[0], t.station, run_dir / "test-hide.gt.json")
    return _marking_verdict(run_dir, truth, summary, fired_log=t.soft_plc is not None)


def load_test_hide(path: Path) -> dict[str, Any]:
    """The truth of a physical test hide (hil/README.md): defects in the hide frame, mm."""
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
        defects = [{"class": str(d["class"]), "bbox_mm": [float(v) for v in d["bbox_mm"]]} for d in spec["defects"]]
        if not defects or any(len(d["bbox_mm"]) != 4 for d in defects):
            raise ValueError("defects: give at least one, each with bbox_mm = [x0, y0, x1, y1]")
        return {"defects": defects, "min_area_m2": float(spec.get("min_area_m2", 0.1)), "name": spec.get("name", "")}
    except FileNotFoundError:
        raise InputError("test hide truth file not found", path=path, where="--truth") from None
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"not a test hide truth file: {e}", path=path, where="--truth",
                         hint='{"defects": [{"class": "hole", "bbox_mm": [x0, y0, x1, y1]}], "min_area_m2": 0.5}'
                         ) from None


def _belt_truth(spec: dict[str, Any], hide: Any, st: Station, out: Path) -> Path:
    """Write the test hide's truth in the run's belt frame (the .gt.json schema): hide frame + the hide's corner."""
    ax, ay = (float(v) for v in hide.outline_belt_mm.min(axis=0)) if len(hide.outline_belt_mm) else hide.origin_belt_mm
    c = st.camera
    defects = []
    for i, d in enumerate(spec["defects"], 1):
        x0, y0, x1, y1 = d["bbox_mm"]
        b = [x0 + ax, y0 + ay, x1 + ax, y1 + ay]
        defects.append({"id": i, "class": d["class"], "hide_id": hide.hide_id, "size_mm": max(x1 - x0, y1 - y0),
                        "bbox_belt_mm": b, "bbox_px": [b[0] / c.mm_per_px, b[1] / c.mm_per_line,
                                                       b[2] / c.mm_per_px, b[3] / c.mm_per_line]})
    truth = {"version": 1, "recording": spec["name"] or "test hide", "mm_per_px": c.mm_per_px,
             "mm_per_line": c.mm_per_line, "hides": [{"hide_id": hide.hide_id, "first_line": hide.first_line,
                                                     "last_line": hide.last_line, "area_m2": hide.area_m2,
                                                     "defects": defects}]}
    out.write_text(json.dumps(truth, indent=1))
    return out
