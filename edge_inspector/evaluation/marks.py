"""Marking accuracy: where the ink marks of a run landed, against the ground truth.

Inputs in the run folder (written by ``edge_inspector.dispatch``):
    marks.jsonl   the inspector's log: a ``run`` line (belt offset, distances, mm per line) and
                  one ``planned`` line per mark (PLC frame positions).
    plc.jsonl     the soft-PLC's log (``--plc sim``, or ``plc-sim --log``): one ``fired`` line per
                  action with the belt position where it fired, ``missed`` lines for marks that
                  arrived after their spot had passed the marker.

With ``plc.jsonl`` the marks are taken where the soft-PLC fired them: along = fired position -
marker distance - belt offset (back to the run's line frame, in which the ground truth lives).
Without it, the planned (commanded) positions are used and the report says so.

Figures (ink marks only; ``tol_mm`` defaults to 10 mm, about the size of an ink dot):
    GT defects marked   a GT defect is marked when an ink mark lies inside its belt-mm box grown
                        by tol_mm; defects in uninspected stretches are left out.
    position error      per marked GT defect, distance from the nearest such mark to the centre
                        of its box (p50 / p95 / max).
    marks on good leather   ink marks inside no grown GT box.
    late / missed       marks planned after their deadline; marks the PLC could not fire.
    placement error     fired position - commanded target, from the PLC log (timing of the link
                        and the PLC alone).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..runfiles import MARKS_LOG, PLC_LOG


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    out = []
    lines = path.read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            if n == len(lines):
                continue  # a torn last line (the writer was killed): skip it
            raise InputError(f"not a JSON line: {e.msg}", path=path, where=f"line {n}") from None
        if isinstance(rec, dict):
            out.append(rec)
    return out


def _pct(v: list[float], q: float) -> float | None:
    return round(float(np.percentile(v, q)), 2) if v else None


def _offset_at(frames: list[tuple[float, float]], t: float, default: float) -> float:
    """The belt offset in force at wall time ``t``: the latest run/frame line before it."""
    got = [o for ft, o in frames if ft <= t]
    return got[-1] if got else default


def evaluate_marks(
    run_dir: Path, gt_boxes: np.ndarray, inspected: list[bool], tol_mm: float = 10.0,
) -> dict[str, Any] | None:
    """Marking report for ``run_dir``, or None when the run has no marks log.

    ``gt_boxes``: (G, 4) belt-mm boxes (across0, along0, across1, along1) of the GT defects;
    ``inspected``: per GT defect, False when it lies in an uninspected stretch.
    """
    mpath = Path(run_dir) / MARKS_LOG
    if not mpath.is_file():
        return None
    recs = _read_jsonl(mpath)
    head = next((r for r in recs if r.get("event") == "run"), None)
    if head is None:
        raise InputError("no 'run' line with the belt offset", path=mpath)
    offset = float(head.get("belt_offset_mm", 0.0))
    # belt frames (docs/marking.md): a mark fired after a "frame" line is in that frame's offset
    frames = sorted((float(r.get("t", 0.0)), float(r["belt_offset_mm"])) for r in recs
                    if r.get("event") in ("run", "frame"))
    marker = float(head.get("marker_distance_mm", 0.0))
    planned = [r for r in recs if r.get("event") == "planned"]
    ink_planned = [r for r in planned if r.get("action") == "ink"]
    late = sum(1 for r in planned if r.get("late"))

    ppath = Path(run_dir) / PLC_LOG
    fired_source = ppath.is_file()
    placement: list[float] = []
    missed = 0
    if fired_source:
        ev = _read_jsonl(ppath)
        fired = [e for e in ev if e.get("event") == "fired"]
        missed = sum(1 for e in ev if e.get("event") == "missed")
        placement = [abs(float(e.get("error_mm", 0.0))) for e in fired]
        ink = [
            (float(e["fired_at_mm"]) - marker - _offset_at(frames, float(e.get("t", 0.0)), offset),
             float(e.get("across_mm", 0.0)))
            for e in fired if str(e.get("action", "")).lower() == "ink"
        ]
        ink_unfired = len(ink_planned) - len(ink)
    else:
        ink = [(float(r["belt_mm"]) - float(r.get("offset_mm", offset)), float(r.get("across_mm", 0.0)))
               for r in ink_planned]
        ink_unfired = 0

    gt = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    pts = np.asarray([(across, along) for along, across in ink], np.float64).reshape(-1, 2)  # box order
    lo = np.minimum(gt[:, :2], gt[:, 2:]) - tol_mm
    hi = np.maximum(gt[:, :2], gt[:, 2:]) + tol_mm
    inside = (
        (pts[None, :, 0] >= lo[:, None, 0]) & (pts[None, :, 0] <= hi[:, None, 0])
        & (pts[None, :, 1] >= lo[:, None, 1]) & (pts[None, :, 1] <= hi[:, None, 1])
    ) if len(gt) and len(pts) else np.zeros((len(gt), len(pts)), bool)
    centre = 0.5 * (gt[:, :2] + gt[:, 2:])
    errors: list[float] = []
    n_insp = 0
    marked = 0
    for g in range(len(gt)):
        if not inspected[g]:
            continue
        n_insp += 1
        hit = np.flatnonzero(inside[g])
        if len(hit):
            marked += 1
            errors.append(float(np.min(np.linalg.norm(pts[hit] - centre[g], axis=1))))
    on_good = int((~inside.any(axis=0)).sum()) if len(pts) else 0
    return {
        "source": "fired by the soft-PLC (plc.jsonl)" if fired_source else "planned positions (no PLC log)",
        "tol_mm": tol_mm,
        "belt_offset_mm": offset,
        "marks_planned": {a: sum(1 for r in planned if r.get("action") == a)
                          for a in sorted({str(r.get("action")) for r in planned})},
        "ink_marks": len(pts),
        "ink_marks_not_fired": ink_unfired,
        "gt_defects_inspected": n_insp,
        "gt_defects_marked": marked,
        "marked_fraction": round(marked / n_insp, 4) if n_insp else None,
        "position_error_mm": {"n": len(errors), "p50": _pct(errors, 50), "p95": _pct(errors, 95),
                              "max": round(max(errors), 2) if errors else None},
        "marks_on_good_leather": on_good,
        "late_planned": late,
        "missed_by_plc": missed,
        "placement_error_mm": {"n": len(placement), "p50": _pct(placement, 50),
                               "p95": _pct(placement, 95),
                               "max": round(max(placement), 2) if placement else None},
    }


def format_marks(m: dict[str, Any]) -> list[str]:
    pe, pl = m["position_error_mm"], m["placement_error_mm"]
    lines = [
        f"Marking ({m['source']}, tolerance {m['tol_mm']:g} mm)",
        f"  GT defects marked {m['gt_defects_marked']}/{m['gt_defects_inspected']}"
        f" ({m['marked_fraction']})   ink marks {m['ink_marks']}   on good leather"
        f" {m['marks_on_good_leather']}   late {m['late_planned']}   missed by PLC {m['missed_by_plc']}",
        f"  mark position error mm (mark -> GT defect centre)   p50 {pe['p50']}   p95 {pe['p95']}"
        f"   max {pe['max']}   (n {pe['n']})",
    ]
    if pl["n"]:
        lines.append(f"  placement error mm (fired - commanded)   p50 {pl['p50']}   p95 {pl['p95']}"
                     f"   max {pl['max']}   (n {pl['n']})")
    return lines
