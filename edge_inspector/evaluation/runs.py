"""Evaluation: compare a run's defects and hides with a synthetic recording's ground truth.

Inputs
    run_dir     an output folder of ``ResultsWriter`` (``load_run_hides``: the latest run).
    truth_path  ``<recording>.gt.json`` written by the synthetic generator (schema version 1).

Matching, all in the belt frame (mm), which is global: hide ids need not agree.

1. Each GT box and each predicted box (``bbox_belt_mm``) is expanded by ``tol_mm`` on every side.
   A GT defect and a prediction are *candidates* when their expanded boxes intersect.
2. Candidate pairs are taken in order of increasing centre distance; a pair is matched when
   neither side is matched yet (greedy one-to-one).
3. An unmatched prediction that is a candidate of some GT defect (every such GT defect is then
   already matched: greedy leaves no unmatched candidate pair) is a *duplicate*: a second piece of
   a defect already found, e.g. a fragmented scratch. Duplicates are reported separately and are
   neither true nor false positives. Every other unmatched prediction is a *false positive*.
4. Position error = distance between the box centres of a matched pair (mm).

Uninspected stretches: a GT defect whose line span (``bbox_px`` y0..y1) overlaps a stretch
[first_line, end_line) that the run reported as not inspected (the hide records' ``uninspected``,
and ``summary.json["uninspected"]`` when present) is counted under ``uninspected`` and left out
of recall; a prediction matched to it is still a true positive.

Figures
    recall    = matched inspected GT / inspected GT;  precision = TP / (TP + FP);  F1.
    class-aware recall (per GT class) = matched with the same class name / n, given only when the
    predicted class names overlap the GT names (a baseline model may say "dark"/"bright"); the
    confusion table (GT class -> predicted class of the match) is always given.
    false defects per m² of good leather = FP / (sum of GT hide areas - sum of GT defect areas).
    recall by size (``size_mm``): "<3 mm", "3-10 mm", ">10 mm".
    hides: GT and run hides are paired one-to-one by line-range overlap (largest overlap first);
    area error % = (run area - GT area) / GT area x 100.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import InputError
from ..runfiles import SUMMARY_NAME, load_run_hides

SIZE_BUCKETS: tuple[tuple[str, float, float], ...] = (
    ("<3 mm", -math.inf, 3.0),
    ("3-10 mm", 3.0, 10.0 + 1e-9),
    (">10 mm", 10.0 + 1e-9, math.inf),
)


# ---------------------------------------------------------------------------------------------
# Ground truth file


def _box4(v: list[float]) -> list[float]:
    if len(v) != 4:
        raise ValueError(f"expected 4 numbers [x0, y0, x1, y1], got {len(v)}")
    if not all(math.isfinite(x) for x in v):
        raise ValueError("box holds a non-finite number")
    return v


class TruthDefect(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    id: int
    class_name: str = Field(alias="class")
    hide_id: int | None = None
    size_mm: float
    bbox_px: list[float]
    bbox_belt_mm: list[float]
    area_mm2: float = 0.0

    @field_validator("bbox_px", "bbox_belt_mm")
    @classmethod
    def _box(cls, v: list[float]) -> list[float]:
        return _box4(v)


class TruthHide(BaseModel):
    model_config = ConfigDict(extra="allow")
    hide_id: int
    first_line: int
    last_line: int
    area_m2: float
    defects: list[TruthDefect] = Field(default_factory=list)


class Truth(BaseModel):
    model_config = ConfigDict(extra="allow")
    version: int
    recording: str | None = None
    mm_per_px: float | None = None
    mm_per_line: float | None = None
    hides: list[TruthHide]


def load_truth(path: Path) -> Truth:
    """Read and check a ground-truth file; ``InputError`` naming the file and field otherwise."""
    path = Path(path)
    if not path.is_file():
        raise InputError("ground-truth file not found", path=path,
                         hint="edge-inspector synth writes <recording>.gt.json next to the recording")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise InputError(f"not a text file: {e}", path=path) from None
    except json.JSONDecodeError as e:
        raise InputError(f"not valid JSON: {e.msg}", path=path,
                         where=f"line {e.lineno} column {e.colno}") from None
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror}", path=path) from None
    if not isinstance(data, dict):
        raise InputError("not a ground-truth object (expected {\"version\": 1, \"hides\": [...]})",
                         path=path)
    try:
        truth = Truth.model_validate(data)
    except ValidationError as e:
        probs = [f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()[:5]]
        more = f" (+{e.error_count() - 5} more)" if e.error_count() > 5 else ""
        raise InputError("not a valid ground-truth file: " + "; ".join(probs) + more,
                         path=path) from None
    if truth.version != 1:
        raise InputError(f"unsupported ground-truth version {truth.version}", path=path,
                         where="version", hint="this program reads version 1")
    return truth


# ---------------------------------------------------------------------------------------------
# Predictions from the run


def _load_predictions(run_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]],
                                              list[tuple[int, int]]]:
    """(hide records, predicted defects, uninspected line stretches) of the run's latest run."""
    recs = load_run_hides(run_dir)
    preds: list[dict[str, Any]] = []
    stretches: list[tuple[int, int]] = []
    for rec in recs:
        where = f"hide {rec.get('hide_id')}"
        try:
            for d in rec.get("defects", []):
                b = [float(v) for v in d["bbox_belt_mm"]]
                if len(b) != 4:
                    raise ValueError("bbox_belt_mm needs 4 numbers")
                preds.append({
                    "class": str(d["class"]), "score": float(d.get("score", 1.0)),
                    "bbox": b, "hide_id": rec.get("hide_id"), "id": d.get("id"),
                })
            for u in rec.get("uninspected", []):
                stretches.append((int(u["first_line"]), int(u["end_line"])))
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"garbled hide record: {e!r}", path=run_dir, where=where) from None
    summary = Path(run_dir) / SUMMARY_NAME
    if summary.is_file():
        try:
            s = json.loads(summary.read_text(encoding="utf-8"))
            for u in s.get("uninspected", []) if isinstance(s, dict) else []:
                stretches.append((int(u["first_line"]), int(u["end_line"])))
        except (OSError, ValueError, KeyError, TypeError):
            pass  # summary.json is optional here: the hide records carry the stretches
    return recs, preds, sorted(set(stretches))


# ---------------------------------------------------------------------------------------------
# Matching


def _expand(b: np.ndarray, tol: float) -> np.ndarray:
    """(N, 4) boxes (a0, b0, a1, b1), normalised so that a0 <= a1, b0 <= b1, grown by tol."""
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lo = np.minimum(b[:, :2], b[:, 2:]) - tol
    hi = np.maximum(b[:, :2], b[:, 2:]) + tol
    return np.concatenate([lo, hi], axis=1)


def match_boxes(gt: np.ndarray, pred: np.ndarray, tol_mm: float
                ) -> tuple[list[tuple[int, int, float]], np.ndarray, np.ndarray]:
    """Greedy one-to-one matching of belt-mm boxes (see the module docstring).

    Returns (pairs [(gt index, pred index, centre distance mm)], candidate matrix (G, P) bool,
    pred_matched (P,) bool).
    """
    gt = np.asarray(gt, np.float64).reshape(-1, 4)
    pred = np.asarray(pred, np.float64).reshape(-1, 4)
    G, P = len(gt), len(pred)
    if G == 0 or P == 0:
        return [], np.zeros((G, P), bool), np.zeros(P, bool)
    eg, ep = _expand(gt, tol_mm), _expand(pred, tol_mm)
    cand = (
        (eg[:, None, 0] <= ep[None, :, 2]) & (ep[None, :, 0] <= eg[:, None, 2])
        & (eg[:, None, 1] <= ep[None, :, 3]) & (ep[None, :, 1] <= eg[:, None, 3])
    )
    cg = 0.5 * (gt[:, :2] + gt[:, 2:])
    cp = 0.5 * (pred[:, :2] + pred[:, 2:])
    dist = np.linalg.norm(cg[:, None, :] - cp[None, :, :], axis=2)
    gi, pi = np.nonzero(cand)
    order = np.lexsort((pi, gi, dist[gi, pi]))
    g_used = np.zeros(G, bool)
    p_used = np.zeros(P, bool)
    pairs: list[tuple[int, int, float]] = []
    for k in order:
        g, p = int(gi[k]), int(pi[k])
        if g_used[g] or p_used[p]:
            continue
        g_used[g] = p_used[p] = True
        pairs.append((g, p, float(dist[g, p])))
    return pairs, cand, p_used


def _overlaps_any(y0: float, y1: float, stretches: list[tuple[int, int]]) -> bool:
    lo, hi = min(y0, y1), max(y0, y1)
    return any(lo < e and hi > f for f, e in stretches)


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 4) if b > 0 else None


def _pct(vals: list[float], q: float) -> float | None:
    return round(float(np.percentile(vals, q)), 3) if vals else None


def _bucket(size_mm: float) -> str:
    for name, lo, hi in SIZE_BUCKETS:
        if lo <= size_mm < hi:
            return name
    return SIZE_BUCKETS[-1][0]


# ---------------------------------------------------------------------------------------------
# Hides


def _match_hides(truth: Truth, recs: list[dict[str, Any]]) -> dict[str, Any]:
    cands: list[tuple[int, int, int]] = []
    for i, gh in enumerate(truth.hides):
        for j, r in enumerate(recs):
            try:
                f, l_ = int(r["first_line"]), int(r["last_line"])
            except (KeyError, TypeError, ValueError):
                continue
            ov = min(gh.last_line, l_) - max(gh.first_line, f) + 1
            if ov > 0:
                cands.append((ov, i, j))
    cands.sort(key=lambda t: (-t[0], t[1], t[2]))
    gi_used: set[int] = set()
    rj_used: set[int] = set()
    rows: list[dict[str, Any]] = []
    for ov, i, j in cands:
        if i in gi_used or j in rj_used:
            continue
        gi_used.add(i)
        rj_used.add(j)
        gh, r = truth.hides[i], recs[j]
        ra = float(r.get("area_m2", 0.0))
        rows.append({
            "gt_hide_id": gh.hide_id, "run_hide_id": r.get("hide_id"),
            "gt_lines": [gh.first_line, gh.last_line],
            "run_lines": [int(r["first_line"]), int(r["last_line"])],
            "overlap_lines": ov,
            "gt_area_m2": round(gh.area_m2, 4), "run_area_m2": round(ra, 4),
            "area_error_pct": round(100.0 * (ra - gh.area_m2) / gh.area_m2, 2)
            if gh.area_m2 > 0 else None,
            "grade": r.get("grade"),
            "inspected_fraction": r.get("inspected_fraction"),
        })
    rows.sort(key=lambda x: x["gt_hide_id"])
    errs = [abs(x["area_error_pct"]) for x in rows if x["area_error_pct"] is not None]
    return {
        "n_gt": len(truth.hides),
        "n_run": len(recs),
        "found": len(rows),
        "missed_gt_hide_ids": [h.hide_id for i, h in enumerate(truth.hides) if i not in gi_used],
        "extra_run_hide_ids": [r.get("hide_id") for j, r in enumerate(recs) if j not in rj_used],
        "area_error_pct_mean_abs": round(float(np.mean(errs)), 2) if errs else None,
        "area_error_pct_max_abs": round(float(np.max(errs)), 2) if errs else None,
        "pairs": rows,
    }


# ---------------------------------------------------------------------------------------------
# Report


def evaluate(run_dir: Path, truth_path: Path, tol_mm: float = 5.0, mark_tol_mm: float = 10.0) -> dict[str, Any]:
    """Compare the latest run in ``run_dir`` with ``truth_path``; a JSON-serialisable report.

    When the run logged marks (marks.jsonl, and plc.jsonl from a soft-PLC), the report has a
    ``marking`` section (edge_inspector/evaluation/marks.py) with tolerance ``mark_tol_mm``.
    """
    from .marks import evaluate_marks

    run_dir, truth_path = Path(run_dir), Path(truth_path)
    if tol_mm < 0 or not math.isfinite(tol_mm):
        raise InputError(f"tolerance must be a finite number >= 0 mm, got {tol_mm}")
    truth = load_truth(truth_path)
    recs, preds, stretches = _load_predictions(run_dir)

    gts = [d for h in truth.hides for d in h.defects]
    gt_boxes = np.array([d.bbox_belt_mm for d in gts], np.float64).reshape(-1, 4)
    pr_boxes = np.array([p["bbox"] for p in preds], np.float64).reshape(-1, 4)
    pairs, cand, p_matched = match_boxes(gt_boxes, pr_boxes, tol_mm)
    g2p = {g: (p, dist) for g, p, dist in pairs}
    in_unins = [_overlaps_any(d.bbox_px[1], d.bbox_px[3], stretches) for d in gts]

    duplicate = np.zeros(len(preds), bool)
    if len(preds) and len(gts):
        duplicate = ~p_matched & cand.any(axis=0)
    fp = ~p_matched & ~duplicate

    gt_names = {d.class_name for d in gts}
    pred_names = {p["class"] for p in preds}
    class_aware = bool(gt_names & pred_names)

    # Per GT class, size buckets, confusion.
    per_gt: dict[str, dict[str, Any]] = {}
    buckets: dict[str, dict[str, Any]] = {name: {"n": 0, "found": 0} for name, _, _ in SIZE_BUCKETS}
    confusion: dict[str, dict[str, int]] = {}
    unins = {"n": 0, "found": 0, "ids": []}
    for g, d in enumerate(gts):
        found = g in g2p
        if found:
            pc = preds[g2p[g][0]]["class"]
            row = confusion.setdefault(d.class_name, {})
            row[pc] = row.get(pc, 0) + 1
        if in_unins[g]:
            unins["n"] += 1
            unins["found"] += int(found)
            unins["ids"].append(d.id)
            continue
        c = per_gt.setdefault(d.class_name, {"n": 0, "found": 0, "same_class": 0})
        c["n"] += 1
        c["found"] += int(found)
        if found and preds[g2p[g][0]]["class"] == d.class_name:
            c["same_class"] += 1
        b = buckets[_bucket(d.size_mm)]
        b["n"] += 1
        b["found"] += int(found)
    for c in per_gt.values():
        c["recall"] = _ratio(c["found"], c["n"])
        c["class_recall"] = _ratio(c["same_class"], c["n"]) if class_aware else None
        if not class_aware:
            del c["same_class"]
    for b in buckets.values():
        b["recall"] = _ratio(b["found"], b["n"])

    # Per predicted class.
    per_pred: dict[str, dict[str, Any]] = {}
    for k, p in enumerate(preds):
        c = per_pred.setdefault(p["class"], {"n": 0, "tp": 0, "fp": 0, "duplicates": 0})
        c["n"] += 1
        c["tp"] += int(p_matched[k])
        c["fp"] += int(fp[k])
        c["duplicates"] += int(duplicate[k])
    for c in per_pred.values():
        c["precision"] = _ratio(c["tp"], c["tp"] + c["fp"])

    n_insp = sum(1 for u in in_unins if not u)
    found_insp = sum(1 for g in range(len(gts)) if g in g2p and not in_unins[g])
    tp, n_fp, n_dup = int(p_matched.sum()), int(fp.sum()), int(duplicate.sum())
    recall = _ratio(found_insp, n_insp)
    precision = _ratio(tp, tp + n_fp)
    f1 = (round(2 * recall * precision / (recall + precision), 4)
          if recall is not None and precision is not None and recall + precision > 0 else None)
    dists = [dist for _, _, dist in pairs]

    hide_area = sum(h.area_m2 for h in truth.hides)
    defect_area = sum(d.area_mm2 for d in gts) / 1e6
    good_m2 = max(0.0, hide_area - defect_area)

    return {
        "run_dir": str(run_dir),
        "truth": str(truth_path),
        "recording": truth.recording,
        "run_id": recs[0].get("run_id") if recs else None,
        "tol_mm": tol_mm,
        "matching": "belt-mm boxes grown by tol_mm intersect; greedy one-to-one by centre "
                    "distance; extra predictions on a matched GT defect are duplicates",
        "overall": {
            "gt_defects": len(gts),
            "gt_inspected": n_insp,
            "predictions": len(preds),
            "found": found_insp,
            "tp": tp,
            "fp": n_fp,
            "duplicates": n_dup,
            "recall": recall,
            "precision": precision,
            "f1": f1,
            "class_aware": class_aware,
        },
        "position_error_mm": {
            "n": len(dists), "p50": _pct(dists, 50), "p95": _pct(dists, 95),
            "max": round(max(dists), 3) if dists else None,
        },
        "false_defects": {
            "fp": n_fp,
            "good_leather_m2": round(good_m2, 4),
            "per_m2": round(n_fp / good_m2, 4) if good_m2 > 0 else None,
        },
        "uninspected": {
            "stretches": [list(s) for s in stretches],
            "gt_defects": unins["n"],
            "found_anyway": unins["found"],
            "gt_ids": unins["ids"],
        },
        "per_gt_class": dict(sorted(per_gt.items())),
        "per_pred_class": dict(sorted(per_pred.items())),
        "confusion": {k: dict(sorted(v.items())) for k, v in sorted(confusion.items())},
        "by_size": buckets,
        "hides": _match_hides(truth, recs),
        "marking": evaluate_marks(run_dir, gt_boxes, [not u for u in in_unins], mark_tol_mm),
        "missed": [
            {"id": d.id, "class": d.class_name, "hide_id": d.hide_id, "size_mm": d.size_mm,
             "bbox_belt_mm": [round(v, 2) for v in d.bbox_belt_mm]}
            for g, d in enumerate(gts) if g not in g2p and not in_unins[g]
        ],
    }


def _f(v: Any, spec: str = ".3f", width: int = 8) -> str:
    if v is None:
        return f"{'-':>{width}}"
    if isinstance(v, float):
        return f"{v:>{width}{spec}}"
    return f"{v!s:>{width}}"


def format_report(report: dict[str, Any]) -> str:
    """A readable fixed-width text version of an ``evaluate`` report."""
    o, pe, fd, un, hd = (report["overall"], report["position_error_mm"], report["false_defects"],
                         report["uninspected"], report["hides"])
    L: list[str] = []
    L.append(f"Evaluation of {report['run_dir']} (run {report.get('run_id')})")
    L.append(f"  against {report['truth']}   tolerance {report['tol_mm']:g} mm")
    L.append("")
    L.append(f"Defects   GT {o['gt_defects']} (inspected {o['gt_inspected']}, in uninspected"
             f" stretches {un['gt_defects']}, {un['found_anyway']} of them found anyway)"
             f"   predictions {o['predictions']}")
    L.append(f"  recall {_f(o['recall'], '.3f', 0)}   precision {_f(o['precision'], '.3f', 0)}"
             f"   F1 {_f(o['f1'], '.3f', 0)}   TP {o['tp']}  FP {o['fp']}"
             f"  duplicates {o['duplicates']}")
    L.append(f"  position error mm   p50 {_f(pe['p50'], '.2f', 0)}   p95 {_f(pe['p95'], '.2f', 0)}"
             f"   max {_f(pe['max'], '.2f', 0)}   (n {pe['n']})")
    L.append(f"  false defects per m2 of good leather {_f(fd['per_m2'], '.3f', 0)}"
             f"   ({fd['fp']} over {fd['good_leather_m2']:.3f} m2)")
    L.append("")
    ca = o["class_aware"]
    L.append(f"{'GT class':<16}{'n':>6}{'found':>7}{'recall':>8}" + (f"{'class-recall':>14}" if ca else ""))
    for name, c in report["per_gt_class"].items():
        L.append(f"{name:<16}{c['n']:>6}{c['found']:>7}{_f(c['recall'])}"
                 + (f"{_f(c['class_recall'], '.3f', 14)}" if ca else ""))
    L.append("")
    L.append(f"{'pred class':<16}{'n':>6}{'TP':>6}{'FP':>6}{'dup':>6}{'precision':>11}")
    for name, c in report["per_pred_class"].items():
        L.append(f"{name:<16}{c['n']:>6}{c['tp']:>6}{c['fp']:>6}{c['duplicates']:>6}"
                 f"{_f(c['precision'], '.3f', 11)}")
    if report["confusion"] and not ca:
        L.append("")
        L.append("GT class -> predicted class of the match")
        for g, row in report["confusion"].items():
            L.append(f"  {g:<16}" + "  ".join(f"{p} {n}" for p, n in row.items()))
    L.append("")
    L.append(f"{'size':<16}{'n':>6}{'found':>7}{'recall':>8}")
    for name, b in report["by_size"].items():
        L.append(f"{name:<16}{b['n']:>6}{b['found']:>7}{_f(b['recall'])}")
    L.append("")
    L.append(f"Hides   GT {hd['n_gt']}   run {hd['n_run']}   found {hd['found']}"
             f"   missed {hd['missed_gt_hide_ids'] or '-'}   extra {hd['extra_run_hide_ids'] or '-'}"
             f"   |area error| mean {_f(hd['area_error_pct_mean_abs'], '.2f', 0)} %")
    if hd["pairs"]:
        L.append(f"{'GT':>4}{'run':>5}  {'GT lines':<17}{'run lines':<17}{'GT m2':>8}{'run m2':>8}"
                 f"{'err %':>8}{'grade':>6}")
        for r in hd["pairs"]:
            gl = f"{r['gt_lines'][0]}-{r['gt_lines'][1]}"
            rl = f"{r['run_lines'][0]}-{r['run_lines'][1]}"
            L.append(f"{r['gt_hide_id']:>4}{_f(r['run_hide_id'], '', 5)}  {gl:<17}{rl:<17}"
                     f"{r['gt_area_m2']:>8.3f}{r['run_area_m2']:>8.3f}"
                     f"{_f(r['area_error_pct'], '.2f')}{_f(r['grade'], '', 6)}")
    if report.get("marking"):
        from .marks import format_marks

        L.append("")
        L.extend(format_marks(report["marking"]))
    return "\n".join(L) + "\n"
