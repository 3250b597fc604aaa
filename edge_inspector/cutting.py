"""Cutting-room export: one DXF per hide and a grading report per run (docs/operator.md).

A hide's DXF is in hide millimetres (``$INSUNITS`` = 4, mm), so nesting software imports it at
true size:

| layer | what |
| --- | --- |
| ``HIDE_OUTLINE`` | the hide's outline, one closed LWPOLYLINE |
| ``DEFECT_<CLASS>`` | each defect of that class as a closed LWPOLYLINE (its outline, else its box); one layer per class, coloured as on the hide map |
| ``UNINSPECTED`` | each stretch that was not inspected: a closed rectangle across the hide, hatched |
| ``INFO`` | TEXT: hide id, grade, area m², inspected share, defect count |

Coordinates: x = across from the hide's leftmost point on its leading edge (the hide frame,
docs/architecture.md section 4); y = ``length - along``, so the leading edge is at the top and the
drawing looks like the hide map and the web page (DXF's y axis points up, the map's down).

The grading report (``grading.csv`` and ``grading.json`` in the run folder) has one row per hide:
grade, area, inspected share, defect area share and the defect count of every class.

Everything here works on hide *records* (``Hide.to_json()`` + run id and station, as stored in
``results.sqlite``), so the run (``CuttingExport``, a subscriber of ``run.InspectionRun``) and the
web server (``edge-inspector web``) produce the same files.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import ezdxf
import numpy as np
from ezdxf.document import Drawing

from .classes import class_color
from .config import Station
from .hide import Hide
from .runfiles import HIDES_DIR, hide_stem
from .store import atomic_write_bytes

GRADING_CSV = "grading.csv"
GRADING_JSON = "grading.json"
LAYER_OUTLINE = "HIDE_OUTLINE"
LAYER_UNINSPECTED = "UNINSPECTED"
LAYER_INFO = "INFO"
TEXT_HEIGHT_MM = 25.0


def dxf_path(out_dir: Path, hide_id: int) -> Path:
    """``out_dir/hides/hide-NNNN.dxf``."""
    return Path(out_dir) / HIDES_DIR / f"{hide_stem(hide_id)}.dxf"


def defect_layer(class_name: str) -> str:
    """``DEFECT_<CLASS>``: upper case, characters DXF forbids in layer names replaced by ``_``."""
    return "DEFECT_" + re.sub(r"[^A-Za-z0-9_\-]", "_", str(class_name)).upper()


def _pts(v: Any) -> np.ndarray:
    a = np.asarray(v if v is not None else [], np.float64)
    return a.reshape(-1, 2) if a.size else np.zeros((0, 2))


def _defect_polygon(d: dict[str, Any]) -> np.ndarray:
    """A defect's outline in hide mm, or its box corners when it has no outline."""
    o = _pts(d.get("outline_hide_mm"))
    if len(o) >= 3:
        return o
    x0, y0, x1, y1 = (float(v) for v in d.get("bbox_hide_mm", (0, 0, 0, 0)))
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)


def grow_polygon(pts: np.ndarray, d: float, miter_limit: float = 2.0) -> np.ndarray:
    """``pts`` (a simple closed polygon, either orientation) moved ``d`` outwards (mitred corners).

    The hide outline runs through the centres of the boundary cells of the presence samples; the
    hide's area counts whole cells. Growing the outline by half a cell puts it on the cells' outer
    edge, where the leather ends (``outline_grow_mm``).
    """
    p = np.asarray(pts, np.float64).reshape(-1, 2)
    if d == 0 or len(p) < 3:
        return p
    x, y = p[:, 0], p[:, 1]
    ccw = 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y)) > 0
    e = np.roll(p, -1, axis=0) - p  # edge i: p[i] -> p[i+1]
    length = np.hypot(e[:, 0], e[:, 1])
    length[length == 0] = 1.0
    n = np.stack([e[:, 1], -e[:, 0]], 1) / length[:, None]  # right-hand normal: outwards when ccw
    if not ccw:
        n = -n
    n_prev = np.roll(n, 1, axis=0)  # the normal of the edge that ends at p[i]
    bis = n + n_prev
    cos_half = np.clip(np.sum(bis * n, axis=1) / np.maximum(np.hypot(bis[:, 0], bis[:, 1]), 1e-12), 1 / miter_limit, 1)
    norm = np.hypot(bis[:, 0], bis[:, 1])
    bis = np.where(norm[:, None] > 1e-12, bis / np.maximum(norm, 1e-12)[:, None], n)
    return p + bis * (d / cos_half)[:, None]


def outline_grow_mm(subsample: int, mm_per_px: float, mm_per_line: float) -> float:
    """Half a presence-sample cell (``hide_detection.subsample`` px/lines) in mm: see ``grow_polygon``."""
    return 0.25 * int(subsample) * (float(mm_per_px) + float(mm_per_line))


def uninspected_rects(rec: dict[str, Any]) -> list[tuple[float, float, float, float]]:
    """Uninspected stretches in hide mm ``(x0, y0, x1, y1)``: across the hide, clipped to its length."""
    outline = _pts(rec.get("outline_hide_mm"))
    if len(outline) == 0:
        return []
    x0, x1 = float(outline[:, 0].min()), float(outline[:, 0].max())
    y_len = float(outline[:, 1].max())
    along0 = float((rec.get("origin_belt_mm") or [0.0, 0.0])[1])
    out = []
    for u in rec.get("uninspected", []):
        a0, a1 = (float(v) - along0 for v in u.get("along_belt_mm", (0.0, 0.0)))
        a0, a1 = max(0.0, min(a0, a1)), min(y_len, max(a0, a1))
        if a1 > a0:
            out.append((x0, a0, x1, a1))
    return out


def hide_dxf(rec: dict[str, Any], grow_mm: float = 0.0) -> Drawing:
    """The DXF drawing of one hide record (see the module docstring for layers and axes).

    ``grow_mm``: move the outline this far outwards (``outline_grow_mm`` of the station).
    """
    doc = ezdxf.new("R2010", units=4)  # units=4: $INSUNITS = millimetres, $MEASUREMENT = metric
    msp = doc.modelspace()
    outline = grow_polygon(_pts(rec.get("outline_hide_mm")), grow_mm)
    y_top = float(outline[:, 1].max()) if len(outline) else 0.0

    def flip(p: np.ndarray) -> list[tuple[float, float]]:
        return [(float(x), y_top - float(y)) for x, y in p]

    doc.layers.add(LAYER_OUTLINE, color=7)
    doc.layers.add(LAYER_UNINSPECTED, color=8)
    doc.layers.add(LAYER_INFO, color=7)
    if len(outline) >= 3:
        msp.add_lwpolyline(flip(outline), close=True, dxfattribs={"layer": LAYER_OUTLINE})
    for d in rec.get("defects", []):
        layer = defect_layer(d.get("class", "defect"))
        if layer not in doc.layers:
            b, g, r = class_color(str(d.get("class", "defect")))
            doc.layers.add(layer).rgb = (r, g, b)
        msp.add_lwpolyline(flip(_defect_polygon(d)), close=True, dxfattribs={"layer": layer})
    for x0, y0, x1, y1 in uninspected_rects(rec):
        corners = flip(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]))
        msp.add_lwpolyline(corners, close=True, dxfattribs={"layer": LAYER_UNINSPECTED})
        hatch = msp.add_hatch(dxfattribs={"layer": LAYER_UNINSPECTED})
        hatch.set_pattern_fill("ANSI31", scale=20.0)
        hatch.paths.add_polyline_path(corners, is_closed=True)
    lines = [
        f"HIDE {int(rec.get('hide_id', 0))}" + (f"  RUN {rec['run_id']}" if "run_id" in rec else ""),
        f"GRADE {rec.get('grade', '?')}",
        f"AREA {float(rec.get('area_m2', 0.0)):.4f} m2",
        f"INSPECTED {100 * float(rec.get('inspected_fraction', 1.0)):.1f} %",
        f"DEFECTS {len(rec.get('defects', []))}",
    ]
    for i, text in enumerate(lines):
        t = msp.add_text(text, height=TEXT_HEIGHT_MM, dxfattribs={"layer": LAYER_INFO})
        t.set_placement((0.0, y_top + TEXT_HEIGHT_MM * (1.6 * (len(lines) - i))))
    return doc


def hide_dxf_bytes(rec: dict[str, Any], grow_mm: float = 0.0) -> bytes:
    """``hide_dxf(rec, grow_mm)`` as the bytes of a DXF file (UTF-8 text)."""
    buf = io.StringIO()
    hide_dxf(rec, grow_mm).write(buf)
    return buf.getvalue().encode("utf-8")


# -- grading report -------------------------------------------------------------------------------

_BASE_COLUMNS = ("run_id", "hide_id", "grade", "area_m2", "inspected_fraction", "defects",
                 "defect_area_mm2", "defect_area_share", "uninspected_regions", "first_line", "last_line")


def grading_row(rec: dict[str, Any]) -> dict[str, Any]:
    """One hide's row of the grading report (counts per class under ``n_<class>``)."""
    defects = rec.get("defects")
    if defects is not None:
        counts: dict[str, int] = {}
        for d in defects:
            counts[str(d.get("class"))] = counts.get(str(d.get("class")), 0) + 1
        defect_mm2 = sum(max(0.0, float(d.get("area_mm2", 0.0))) for d in defects)
    else:  # a record without its defect list (a "hide" event): counts only
        counts = dict(rec.get("defect_counts", {}))
        defect_mm2 = float(rec.get("defect_area_mm2", 0.0))
    area_mm2 = float(rec.get("area_m2", 0.0)) * 1e6
    row: dict[str, Any] = {
        "run_id": rec.get("run_id"),
        "hide_id": int(rec.get("hide_id", 0)),
        "grade": rec.get("grade"),
        "area_m2": round(float(rec.get("area_m2", 0.0)), 4),
        "inspected_fraction": round(float(rec.get("inspected_fraction", 1.0)), 4),
        "defects": sum(counts.values()),
        "defect_area_mm2": round(defect_mm2, 1),
        "defect_area_share": round(defect_mm2 / area_mm2, 6) if area_mm2 > 0 else None,
        "uninspected_regions": len(rec.get("uninspected", [])),
        "first_line": rec.get("first_line"),
        "last_line": rec.get("last_line"),
    }
    for c, n in sorted(counts.items()):
        row[f"n_{c}"] = n
    return row


def grading_report(recs: Iterable[dict[str, Any]], classes: Sequence[str] = ()) -> dict[str, Any]:
    """The grading report of a run's hide records: ``{"columns", "hides": [rows], "totals"}``."""
    return report_from_rows([grading_row(r) for r in recs], classes)


def report_from_rows(rows: list[dict[str, Any]], classes: Sequence[str] = ()) -> dict[str, Any]:
    """``grading_report`` from rows already made by ``grading_row``."""
    names = list(dict.fromkeys([*classes, *(k[2:] for r in rows for k in r if k.startswith("n_"))]))
    columns = [*_BASE_COLUMNS, *(f"n_{c}" for c in names)]
    for r in rows:
        for c in names:
            r.setdefault(f"n_{c}", 0)
    grades: dict[str, int] = {}
    for r in rows:
        grades[str(r["grade"])] = grades.get(str(r["grade"]), 0) + 1
    totals = {
        "hides": len(rows),
        "area_m2": round(sum(r["area_m2"] for r in rows), 4),
        "defects": sum(r["defects"] for r in rows),
        "grades": dict(sorted(grades.items())),
        "area_m2_by_grade": {g: round(sum(r["area_m2"] for r in rows if str(r["grade"]) == g), 4)
                             for g in sorted(grades)},
    }
    return {"columns": columns, "hides": rows, "totals": totals}


def grading_csv(report: dict[str, Any]) -> str:
    """The report's rows as CSV text (header = ``report["columns"]``)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=report["columns"], extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in report["hides"]:
        w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return buf.getvalue()


class CuttingExport:
    """A hide subscriber of ``run.InspectionRun`` (``[outputs] dxf = true``).

    Per graded hide: ``hides/hide-NNNN.dxf``; after each hide, ``grading.csv`` and ``grading.json``
    of this run are rewritten (atomically: a reader sees the previous report or the new one).
    """

    @classmethod
    def for_station(cls, out_dir: Path, run_id: int, station: Station, classes: Sequence[str] = ()) -> CuttingExport:
        """An exporter with the station's name and outline growth (``outline_grow_mm``)."""
        cam = station.camera
        grow = outline_grow_mm(station.hide_detection.subsample, cam.mm_per_px, cam.mm_per_line)
        return cls(out_dir, run_id, station.station.name, classes, grow_mm=grow)

    def __init__(self, out_dir: Path, run_id: int, station: str = "", classes: Sequence[str] = (), *,
                 grow_mm: float = 0.0) -> None:
        self.out_dir = Path(out_dir)
        self.run_id = int(run_id)
        self.station = station
        self.classes = list(classes)
        self.grow_mm = grow_mm
        self._rows: dict[int, dict[str, Any]] = {}

    def __call__(self, h: Hide) -> None:
        rec = {**h.to_json(), "run_id": self.run_id, "station": self.station}
        path = dxf_path(self.out_dir, h.hide_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, hide_dxf_bytes(rec, self.grow_mm))
        self._rows[int(h.hide_id)] = grading_row(rec)
        report = report_from_rows([dict(self._rows[k]) for k in sorted(self._rows)], self.classes)
        report["run_id"], report["station"] = self.run_id, self.station
        atomic_write_bytes(self.out_dir / GRADING_CSV, grading_csv(report).encode())
        atomic_write_bytes(self.out_dir / GRADING_JSON, (json.dumps(report, indent=1) + "\n").encode())
