"""Results store: per hide a JSON record, a PNG hide map and rows in SQLite; a run summary.

Layout of an output folder (``out_dir``)::

    out_dir/
      results.sqlite        runs, hides, defects, uninspected (WAL; one transaction per hide)
      summary.json          the latest run's summary (written by ``ResultsWriter.finish``)
      hides/hide-0001.json  Hide.to_json() + run_id + station (latest run that wrote hide 1)
      hides/hide-0001.png   hide map: picture, outline, defects by class, uninspected stretches

Every file is written atomically (temporary file in the same folder, fsync, ``os.replace``), so a
reader or a crash never sees half a file. SQLite rows of a hide are committed in one transaction
right after its files, so a crash keeps every hide already written. Re-running into the same
folder appends a new run (``runs.run_id``); earlier runs stay intact in SQLite, where the full hide
record (``hides.record``) is kept. The JSON/PNG files of a hide id are replaced by the latest run
that wrote that id; ``load_run_hides`` returns only the records of the chosen (default: latest) run.

Grading (``grade_hide``): defect area share = sum of defect ``area_mm2`` / hide area; A below
``grading.grade_a``, B below ``grade_b``, C below ``grade_c``, else D; "U" (ungraded) when less
than ``grading.min_inspected`` of the hide was inspected or its area is unknown.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np
import structlog

from .classes import class_color
from .config import Grading, Station
from .errors import InputError
from .hide import Hide

log = structlog.get_logger(__name__)

SCHEMA_VERSION = 1
DB_NAME = "results.sqlite"
SUMMARY_NAME = "summary.json"
HIDES_DIR = "hides"


# ---------------------------------------------------------------------------------------------
# Grading


def defect_area_share(hide: Hide) -> float:
    """Sum of defect areas (mm²) over the hide area (mm²); inf when the hide has no area."""
    hide_mm2 = float(hide.area_m2) * 1e6
    defect_mm2 = float(sum(max(0.0, float(d.area_mm2)) for d in hide.defects))
    if hide_mm2 <= 0.0:
        return float("inf") if defect_mm2 > 0 else 0.0
    return defect_mm2 / hide_mm2


def grade_hide(hide: Hide, grading: Grading) -> str:
    """Grade A/B/C/D by defect area share, "U" when too little of the hide was inspected."""
    if float(hide.inspected_fraction) < grading.min_inspected or float(hide.area_m2) <= 0.0:
        return "U"
    share = defect_area_share(hide)
    if share < grading.grade_a:
        return "A"
    if share < grading.grade_b:
        return "B"
    if share < grading.grade_c:
        return "C"
    return "D"


# ---------------------------------------------------------------------------------------------
# Small helpers


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=1, default=_json_default) + "\n").encode())


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), default=_json_default)


def hide_stem(hide_id: int) -> str:
    return f"hide-{int(hide_id):04d}"


# ---------------------------------------------------------------------------------------------
# Hide map


_TITLE_H = 62
_LEGEND_ROW_H = 26
_MIN_MARK_PX = 8  # defects smaller than this on the map get a marker circle
_MARK_RADIUS = 11
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_BACKGROUND = (46, 46, 46)  # BGR, belt-like dark grey
_HIDE_FILL = (112, 146, 178)  # BGR, leather tone for maps without a picture
_OUTLINE = (255, 255, 255)
_HATCH = (200, 200, 200)
_GRADE_COLORS = {
    "A": (60, 170, 60),
    "B": (40, 190, 190),
    "C": (30, 140, 240),
    "D": (40, 40, 210),
    "U": (140, 140, 140),
}


@dataclass(frozen=True, slots=True)
class HideMapFrame:
    """Where things land on a hide map: camera px/lines -> map canvas px.

    canvas x = (x - x0) * scale, canvas y = body_top + (line - line0) * scale, with belt mm
    turned into camera px by the linear ``mm_per_px`` / ``mm_per_line``.
    """

    x0: float  # camera column at the left edge of the map body
    line0: float  # camera line at the top edge of the map body
    scale: float  # canvas px per camera px (and per line)
    width: int  # body (and image) width
    body_h: int  # body height
    body_top: int  # title bar height
    mm_per_px: float
    mm_per_line: float

    def cam_to_canvas(self, x: np.ndarray, line: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cx = (np.asarray(x, np.float64) - self.x0) * self.scale
        cy = self.body_top + (np.asarray(line, np.float64) - self.line0) * self.scale
        return cx, cy

    def to_canvas(self, pts_belt_mm: np.ndarray) -> np.ndarray:
        """(K, 2) belt mm (across, along) -> (K, 2) float canvas px (x, y)."""
        p = np.asarray(pts_belt_mm, np.float64).reshape(-1, 2)
        cx, cy = self.cam_to_canvas(p[:, 0] / self.mm_per_px, p[:, 1] / self.mm_per_line)
        return np.stack([cx, cy], axis=1)

    def line_to_canvas_y(self, line: float) -> float:
        return self.body_top + (float(line) - self.line0) * self.scale


def _defect_pts_belt(d: Any) -> np.ndarray:
    """Outline of a defect in belt mm, or its box corners when it has no outline."""
    o = np.asarray(d.outline_belt_mm, np.float64).reshape(-1, 2)
    if len(o) >= 3:
        return o
    a0, b0, a1, b1 = (float(v) for v in d.bbox_belt_mm)
    return np.array([[a0, b0], [a1, b0], [a1, b1], [a0, b1]], np.float64)


def hide_map_frame(
    hide: Hide, mm_per_px: float, mm_per_line: float, *, max_height: int = 6000
) -> HideMapFrame:
    """Geometry of the hide map of ``hide`` (see ``HideMapFrame``)."""
    line0 = float(hide.first_line)
    n_lines = max(1.0, float(hide.last_line + 1 - hide.first_line))
    thumb = hide.thumbnail
    if thumb is not None and np.asarray(thumb).ndim >= 2 and min(thumb.shape[:2]) > 0:
        step = max(1, int(hide.thumb_step))
        th, tw = thumb.shape[:2]
        s_thumb = min(1600.0, max(1024.0, float(tw))) / tw
        if th * s_thumb > max_height:
            s_thumb = max_height / th
        width = max(1, int(round(tw * s_thumb)))
        body_h = max(1, int(round(th * s_thumb)))
        return HideMapFrame(
            x0=float(hide.thumb_x0), line0=line0, scale=s_thumb / step, width=width,
            body_h=body_h, body_top=_TITLE_H, mm_per_px=mm_per_px, mm_per_line=mm_per_line,
        )
    # No picture: frame the hide outline and the defects.
    pts = [np.asarray(hide.outline_belt_mm, np.float64).reshape(-1, 2)]
    pts += [_defect_pts_belt(d) for d in hide.defects]
    allp = np.concatenate(pts) if pts else np.zeros((0, 2))
    if len(allp):
        xs = allp[:, 0] / mm_per_px
        x_lo, x_hi = float(xs.min()), float(xs.max())
        ls = allp[:, 1] / mm_per_line
        line0 = min(line0, float(ls.min()))
        n_lines = max(n_lines, float(ls.max()) - line0)
    else:
        x_lo = float(hide.thumb_x0)
        x_hi = x_lo + 1024.0 * max(1, int(hide.thumb_step))
    span = max(x_hi - x_lo, 64.0)
    margin = 0.03 * span
    x0 = x_lo - margin
    span += 2 * margin
    width = 1280
    scale = width / span
    if n_lines * scale > max_height:
        scale = max_height / n_lines
        width = max(1, int(round(span * scale)))
    body_h = max(1, int(round(n_lines * scale)))
    return HideMapFrame(
        x0=x0, line0=line0, scale=scale, width=width, body_h=body_h, body_top=_TITLE_H,
        mm_per_px=mm_per_px, mm_per_line=mm_per_line,
    )


def _text(img: np.ndarray, s: str, org: tuple[int, int], color: tuple[int, int, int],
          scale: float = 0.45, thickness: int = 1) -> None:
    """Text on a dark box, readable on any background."""
    (tw, th), base = cv2.getTextSize(s, _FONT, scale, thickness)
    x, y = org
    cv2.rectangle(img, (x - 2, y - th - 3), (x + tw + 2, y + base), (20, 20, 20), -1)
    cv2.putText(img, s, org, _FONT, scale, color, thickness, cv2.LINE_AA)


def _thumb_bgr(thumb: np.ndarray) -> np.ndarray:
    t = np.asarray(thumb)
    if t.dtype != np.uint8:
        t = (t >> 8).astype(np.uint8) if t.dtype == np.uint16 else np.clip(t, 0, 255).astype(np.uint8)
    if t.ndim == 2 or (t.ndim == 3 and t.shape[2] == 1):
        return cv2.cvtColor(t.reshape(t.shape[0], t.shape[1]), cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(np.ascontiguousarray(t[:, :, :3]), cv2.COLOR_RGB2BGR)


def _hatch(img: np.ndarray, y0: int, y1: int, color: tuple[int, int, int], spacing: int = 14) -> None:
    """Darken rows [y0, y1) and cross-hatch them across the whole width."""
    y0, y1 = max(0, y0), min(img.shape[0], y1)
    if y1 <= y0:
        return
    roi = img[y0:y1]  # a row slice of a C-contiguous image is contiguous: drawable in place
    roi[:] = (roi.astype(np.uint16) * 2 // 5).astype(np.uint8)
    h, w = roi.shape[:2]
    for k in range(-h, w + h, spacing):
        cv2.line(roi, (k, 0), (k + h, h), color, 1, cv2.LINE_AA)
        cv2.line(roi, (k + h, 0), (k, h), color, 1, cv2.LINE_AA)
    cv2.line(img, (0, y0), (w - 1, y0), color, 1)
    cv2.line(img, (0, y1 - 1), (w - 1, y1 - 1), color, 1)


def render_hide_map(hide: Hide, mm_per_px: float, mm_per_line: float) -> np.ndarray:
    """The hide map of ``hide`` as a BGR uint8 image (title bar, map body, legend)."""
    fr = hide_map_frame(hide, mm_per_px, mm_per_line)
    counts: dict[str, int] = {}
    for d in hide.defects:
        counts[d.class_name] = counts.get(d.class_name, 0) + 1

    # Legend layout first: it decides the image height.
    entries = [(name, class_color(name), f"{name} ({n})") for name, n in sorted(counts.items())]
    if hide.uninspected:
        entries.append(("uninspected", _HATCH, f"uninspected ({len(hide.uninspected)})"))
    rows: list[list[tuple[int, tuple[int, int, int], str]]] = [[]]
    x = 10
    for _, col, label in entries:
        tw = cv2.getTextSize(label, _FONT, 0.5, 1)[0][0] + 36
        if x + tw > fr.width - 10 and rows[-1]:
            rows.append([])
            x = 10
        rows[-1].append((x, col, label))
        x += tw
    legend_h = _LEGEND_ROW_H * max(1, len(rows)) + 8
    H = fr.body_top + fr.body_h + legend_h
    img = np.empty((H, fr.width, 3), np.uint8)
    img[:] = _BACKGROUND
    body = img[fr.body_top:fr.body_top + fr.body_h]

    # Background: the hide picture, or a plain fill of the hide outline.
    outline = np.asarray(hide.outline_belt_mm, np.float64).reshape(-1, 2)
    outline_c = np.round(fr.to_canvas(outline)).astype(np.int32) if len(outline) else None
    if hide.thumbnail is not None and np.asarray(hide.thumbnail).ndim >= 2 and min(hide.thumbnail.shape[:2]) > 0:
        bg = _thumb_bgr(hide.thumbnail)
        body[:] = cv2.resize(bg, (fr.width, fr.body_h), interpolation=cv2.INTER_AREA
                             if fr.width < bg.shape[1] else cv2.INTER_LINEAR)
    elif outline_c is not None and len(outline_c) >= 3:
        cv2.fillPoly(img, [outline_c.reshape(-1, 1, 2)], _HIDE_FILL, cv2.LINE_AA)
        img[:fr.body_top] = _BACKGROUND

    # Uninspected stretches, across the whole width.
    for u in hide.uninspected:
        y0 = int(np.floor(fr.line_to_canvas_y(u.first_line)))
        y1 = int(np.ceil(fr.line_to_canvas_y(u.end_line)))
        y0 = max(fr.body_top, y0)
        y1 = min(fr.body_top + fr.body_h, max(y1, y0 + 3))
        _hatch(img, y0, y1, _HATCH)
        label = f"NOT INSPECTED ({u.reason}) lines {u.first_line}-{u.end_line - 1}"
        ty = min(max(y0 + 16, fr.body_top + 14), fr.body_top + fr.body_h - 4)
        _text(img, label, (8, ty), (255, 255, 255), 0.5, 1)

    if outline_c is not None and len(outline_c) >= 2:
        cv2.polylines(img, [outline_c.reshape(-1, 1, 2)], True, _OUTLINE, 2, cv2.LINE_AA)

    # Defects: outline (or box) in the class colour, marker circle around tiny ones, label.
    for d in hide.defects:
        col = class_color(d.class_name)
        pc = fr.to_canvas(_defect_pts_belt(d))
        pi = np.round(pc).astype(np.int32)
        cv2.polylines(img, [pi.reshape(-1, 1, 2)], True, col, 2, cv2.LINE_AA)
        lo, hi = pc.min(axis=0), pc.max(axis=0)
        cx, cy = (int(round(v)) for v in (lo + hi) / 2)
        if max(hi - lo) < _MIN_MARK_PX:
            cv2.circle(img, (cx, cy), 2, col, -1)
            cv2.circle(img, (cx, cy), _MARK_RADIUS, col, 2, cv2.LINE_AA)
            lx, ly = cx + _MARK_RADIUS + 2, cy - _MARK_RADIUS
        else:
            lx, ly = int(lo[0]), int(lo[1]) - 4
        ly = max(ly, fr.body_top + 12)
        _text(img, d.class_name, (lx, ly), col, 0.4, 1)

    # Title bar.
    img[:fr.body_top] = (28, 28, 28)
    gcol = _GRADE_COLORS.get(hide.grade, (140, 140, 140))
    cv2.rectangle(img, (0, 0), (58, fr.body_top - 1), gcol, -1)
    cv2.putText(img, str(hide.grade), (12, 46), _FONT, 1.5, (255, 255, 255), 3, cv2.LINE_AA)
    title = (f"hide {hide.hide_id}   {hide.area_m2:.2f} m2   grade {hide.grade}"
             f"   inspected {100 * hide.inspected_fraction:.1f}%"
             f"   lines {hide.first_line}-{hide.last_line}")
    cv2.putText(img, title, (70, 24), _FONT, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
    sub = f"{len(hide.defects)} defects" + (
        ": " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) if counts else "")
    cv2.putText(img, sub, (70, 50), _FONT, 0.5, (220, 220, 220), 1, cv2.LINE_AA)

    # Legend.
    top = fr.body_top + fr.body_h
    img[top:] = (28, 28, 28)
    for r, row in enumerate(rows):
        y = top + 6 + r * _LEGEND_ROW_H
        for x, col, label in row:
            cv2.rectangle(img, (x, y + 3), (x + 18, y + 19), col, -1)
            cv2.putText(img, label, (x + 24, y + 17), _FONT, 0.5, (235, 235, 235), 1, cv2.LINE_AA)
    return img


# ---------------------------------------------------------------------------------------------
# SQLite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id       INTEGER PRIMARY KEY AUTOINCREMENT,
    station      TEXT NOT NULL,
    started_utc  TEXT NOT NULL,
    ended_utc    TEXT,
    status       TEXT NOT NULL,            -- running | finished | incomplete | aborted
    mm_per_px    REAL,
    mm_per_line  REAL,
    run_info     TEXT,                     -- JSON
    summary      TEXT,                     -- JSON, from finish()
    n_hides      INTEGER NOT NULL DEFAULT 0,
    n_defects    INTEGER NOT NULL DEFAULT 0,
    n_uninspected INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS hides (
    id           INTEGER PRIMARY KEY,
    run_id       INTEGER NOT NULL REFERENCES runs(run_id),
    hide_id      INTEGER NOT NULL,
    first_line   INTEGER NOT NULL,
    last_line    INTEGER NOT NULL,
    n_lines      INTEGER NOT NULL,
    origin_across_mm REAL,
    origin_along_mm  REAL,
    area_m2      REAL,
    inspected_fraction REAL,
    grade        TEXT,
    n_defects    INTEGER,
    outline_belt_mm TEXT,                  -- JSON [[across, along], ...]
    outline_hide_mm TEXT,                  -- JSON [[x, y], ...]
    json_path    TEXT,
    map_path     TEXT,
    record       TEXT,                     -- the full JSON record of the hide
    written_utc  TEXT,
    UNIQUE (run_id, hide_id)
);
CREATE TABLE IF NOT EXISTS defects (
    id           INTEGER PRIMARY KEY,
    run_id       INTEGER NOT NULL REFERENCES runs(run_id),
    hide_id      INTEGER NOT NULL,
    defect_id    INTEGER NOT NULL,
    class        TEXT NOT NULL,
    score        REAL,
    belt_across0_mm REAL, belt_along0_mm REAL, belt_across1_mm REAL, belt_along1_mm REAL,
    belt_center_across_mm REAL, belt_center_along_mm REAL,
    hide_x0_mm REAL, hide_y0_mm REAL, hide_x1_mm REAL, hide_y1_mm REAL,
    hide_center_x_mm REAL, hide_center_y_mm REAL,
    area_mm2     REAL,
    area_px      REAL,
    first_line   INTEGER,
    last_line    INTEGER,
    n_tiles      INTEGER,
    outline_belt_mm TEXT
);
CREATE TABLE IF NOT EXISTS uninspected (
    id           INTEGER PRIMARY KEY,
    run_id       INTEGER NOT NULL REFERENCES runs(run_id),
    hide_id      INTEGER,
    first_line   INTEGER NOT NULL,
    end_line     INTEGER NOT NULL,         -- exclusive
    reason       TEXT,
    along0_mm    REAL,
    along1_mm    REAL
);
CREATE INDEX IF NOT EXISTS hides_run ON hides(run_id, hide_id);
CREATE INDEX IF NOT EXISTS defects_run ON defects(run_id, hide_id);
CREATE INDEX IF NOT EXISTS uninspected_run ON uninspected(run_id, hide_id);
"""


def open_db(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) a results database in WAL mode with the current schema."""
    try:
        conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None,
                               check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.executescript(_SCHEMA)
        if conn.execute("PRAGMA user_version").fetchone()[0] == 0:
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    except sqlite3.DatabaseError as e:
        raise InputError(f"not a usable results database: {e}", path=path,
                         hint="move it away or choose another output folder") from None
    return conn


# ---------------------------------------------------------------------------------------------
# Writer


def run_summary(model: Any, station: Station, writer: "ResultsWriter", stats: Any, marks: dict[str, Any]
                ) -> dict[str, Any]:
    """The part of summary.json that replay and the live run share: model, grades, counters, marks."""
    return {
        "model": str(model.path),
        "model_kind": model.kind,
        "classes": list(model.class_names),
        "station": station.station.name,
        "grades": writer.grades,
        **stats.as_dict(),
        "marks": marks,
    }


def hide_handler(
    grading: Grading, writer: "ResultsWriter", extra: Sequence[Callable[[Hide], None]] = (),
) -> Callable[[Hide], None]:
    """``on_hide`` for run_pipeline: grade the hide, write it, then hand it to each of ``extra`` (marking)."""

    def on_hide(h: Hide) -> None:
        h.grade = grade_hide(h, grading)
        writer.write_hide(h)
        for callback in extra:
            callback(h)
        log.info("hide", hide_id=h.hide_id, lines=[h.first_line, h.last_line], area_m2=round(h.area_m2, 3),
                 defects=len(h.defects), grade=h.grade)

    return on_hide


class ResultsWriter:
    """Writes one run's results into ``out_dir`` (see the module docstring). A context manager.

    ``write_hide`` may be called from any one thread at a time (calls are serialised by a lock).
    """

    @classmethod
    def for_station(cls, out_dir: Path, station: Station, run_info: dict[str, Any]) -> "ResultsWriter":
        """A writer with the station's output switches and geometry."""
        return cls(
            out_dir, station_name=station.station.name, run_info=run_info,
            hide_maps=station.outputs.hide_maps, sqlite=station.outputs.sqlite,
            mm_per_px=station.camera.mm_per_px, mm_per_line=station.camera.mm_per_line,
        )

    def __init__(
        self,
        out_dir: Path,
        *,
        station_name: str,
        run_info: dict[str, Any],
        hide_maps: bool = True,
        sqlite: bool = True,
        mm_per_px: float,
        mm_per_line: float,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.hides_dir = self.out_dir / HIDES_DIR
        self.station_name = station_name
        self.run_info = dict(run_info)
        self.hide_maps = hide_maps
        self.mm_per_px = float(mm_per_px)
        self.mm_per_line = float(mm_per_line)
        self.started_utc = _utc_now()
        self.finished = False
        self._lock = threading.Lock()
        self._per_hide: dict[int, tuple[int, int, str]] = {}  # hide id -> defects, uninspected, grade
        try:
            self.hides_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"cannot create the output folder: {e.strerror}", path=self.out_dir) from None
        self.db_path = self.out_dir / DB_NAME
        self._conn: sqlite3.Connection | None = open_db(self.db_path) if sqlite else None
        if self._conn is not None:
            cur = self._conn.execute(
                "INSERT INTO runs (station, started_utc, status, mm_per_px, mm_per_line, run_info)"
                " VALUES (?, ?, 'running', ?, ?, ?)",
                (station_name, self.started_utc, self.mm_per_px, self.mm_per_line, _dumps(self.run_info)),
            )
            self.run_id = int(cur.lastrowid or 0)
        else:
            self.run_id = _next_run_id_from_files(self.out_dir)
        log.info("results.run_started", run_id=self.run_id, out_dir=str(self.out_dir))

    # -- counters of this run
    @property
    def n_hides(self) -> int:
        return len(self._per_hide)

    @property
    def n_defects(self) -> int:
        return sum(v[0] for v in self._per_hide.values())

    @property
    def n_uninspected(self) -> int:
        return sum(v[1] for v in self._per_hide.values())

    @property
    def grades(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for _, _, g in self._per_hide.values():
            out[g] = out.get(g, 0) + 1
        return dict(sorted(out.items()))

    # -- context manager
    def __enter__(self) -> "ResultsWriter":
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close(aborted=et is not None)

    # -- per hide
    def hide_record(self, hide: Hide) -> dict[str, Any]:
        """The JSON record of a hide: ``Hide.to_json()`` plus run id and station."""
        rec = hide.to_json()
        rec["run_id"] = self.run_id
        rec["station"] = self.station_name
        return rec

    def write_hide(self, hide: Hide) -> dict[str, Any]:
        """Write the JSON record, the hide map and the SQLite rows of ``hide``; returns the record."""
        with self._lock:
            if self.finished:
                raise RuntimeError("ResultsWriter.write_hide after finish()/close()")
            t0 = time.perf_counter()
            stem = hide_stem(hide.hide_id)
            rec = self.hide_record(hide)
            json_path = self.hides_dir / f"{stem}.json"
            map_path = self.hides_dir / f"{stem}.png" if self.hide_maps else None
            if map_path is not None:
                img = render_hide_map(hide, self.mm_per_px, self.mm_per_line)
                ok, buf = cv2.imencode(".png", img)
                if not ok:  # pragma: no cover - OpenCV always encodes a uint8 BGR image
                    raise RuntimeError(f"PNG encoding failed for {map_path}")
                atomic_write_bytes(map_path, buf.tobytes())
            atomic_write_json(json_path, rec)
            if self._conn is not None:
                self._insert_hide(hide, rec, json_path, map_path)
            # A hide written twice in a run (an update) replaces its earlier counts.
            self._per_hide[int(hide.hide_id)] = (len(hide.defects), len(hide.uninspected), hide.grade)
            log.info("results.hide_written", run_id=self.run_id, hide_id=hide.hide_id,
                     grade=hide.grade, defects=len(hide.defects),
                     ms=round(1000 * (time.perf_counter() - t0), 1))
            return rec

    def _insert_hide(self, hide: Hide, rec: dict[str, Any], json_path: Path,
                     map_path: Path | None) -> None:
        c = self._conn
        assert c is not None
        rid, hid = self.run_id, int(hide.hide_id)
        c.execute("BEGIN IMMEDIATE")
        try:
            for t in ("defects", "uninspected", "hides"):  # a hide written twice: keep the last
                c.execute(f"DELETE FROM {t} WHERE run_id=? AND hide_id=?", (rid, hid))
            c.execute(
                "INSERT INTO hides (run_id, hide_id, first_line, last_line, n_lines,"
                " origin_across_mm, origin_along_mm, area_m2, inspected_fraction, grade, n_defects,"
                " outline_belt_mm, outline_hide_mm, json_path, map_path, record, written_utc)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (rid, hid, int(hide.first_line), int(hide.last_line), int(hide.n_lines),
                 float(hide.origin_belt_mm[0]), float(hide.origin_belt_mm[1]),
                 float(hide.area_m2), float(hide.inspected_fraction), hide.grade,
                 len(hide.defects), _dumps(rec["outline_belt_mm"]), _dumps(rec["outline_hide_mm"]),
                 str(json_path.relative_to(self.out_dir)),
                 str(map_path.relative_to(self.out_dir)) if map_path is not None else None,
                 _dumps(rec), _utc_now()),
            )
            rows = []
            for d in hide.defects:
                b = [float(v) for v in d.bbox_belt_mm]
                h = [float(v) for v in d.bbox_hide_mm]
                fl, ll = d.lines
                rows.append((
                    rid, hid, int(d.defect_id), d.class_name, float(d.score), *b,
                    0.5 * (b[0] + b[2]), 0.5 * (b[1] + b[3]), *h,
                    0.5 * (h[0] + h[2]), 0.5 * (h[1] + h[3]),
                    float(d.area_mm2), float(d.area_px), fl, ll, int(d.n_tiles),
                    _dumps(np.round(np.asarray(d.outline_belt_mm, np.float64).reshape(-1, 2), 2)),
                ))
            c.executemany(
                "INSERT INTO defects (run_id, hide_id, defect_id, class, score,"
                " belt_across0_mm, belt_along0_mm, belt_across1_mm, belt_along1_mm,"
                " belt_center_across_mm, belt_center_along_mm,"
                " hide_x0_mm, hide_y0_mm, hide_x1_mm, hide_y1_mm, hide_center_x_mm, hide_center_y_mm,"
                " area_mm2, area_px, first_line, last_line, n_tiles, outline_belt_mm)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                rows,
            )
            c.executemany(
                "INSERT INTO uninspected (run_id, hide_id, first_line, end_line, reason,"
                " along0_mm, along1_mm) VALUES (?,?,?,?,?,?,?)",
                [(rid, hid, int(u.first_line), int(u.end_line), u.reason,
                  float(u.along_mm[0]), float(u.along_mm[1])) for u in hide.uninspected],
            )
            c.execute(
                "UPDATE runs SET n_hides=(SELECT COUNT(*) FROM hides WHERE run_id=?),"
                " n_defects=(SELECT COUNT(*) FROM defects WHERE run_id=?),"
                " n_uninspected=(SELECT COUNT(*) FROM uninspected WHERE run_id=?) WHERE run_id=?",
                (rid, rid, rid, rid),
            )
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    # -- end of run
    def finish(self, summary: dict[str, Any]) -> dict[str, Any]:
        """Write summary.json and close the run row (ended time, counters). Returns the summary."""
        with self._lock:
            if self.finished:
                raise RuntimeError("ResultsWriter.finish called twice")
            ended = _utc_now()
            out = dict(summary)
            out["run_id"] = self.run_id
            out["results"] = {
                "station": self.station_name,
                "started_utc": self.started_utc,
                "ended_utc": ended,
                "hides": self.n_hides,
                "defects": self.n_defects,
                "uninspected_regions": self.n_uninspected,
                "grades": self.grades,
            }
            atomic_write_json(self.out_dir / SUMMARY_NAME, out)
            self._end_run("finished", ended, out)
            self.finished = True
            log.info("results.run_finished", run_id=self.run_id, hides=self.n_hides,
                     defects=self.n_defects)
            return out

    def close(self, *, aborted: bool = False) -> None:
        """Close the database; a run closed without ``finish`` is marked incomplete/aborted."""
        with self._lock:
            if not self.finished:
                self._end_run("aborted" if aborted else "incomplete", _utc_now(), None)
                self.finished = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _end_run(self, status: str, ended: str, summary: dict[str, Any] | None) -> None:
        if self._conn is None:
            return
        self._conn.execute(
            "UPDATE runs SET ended_utc=?, status=?, summary=?, n_hides=?, n_defects=?,"
            " n_uninspected=? WHERE run_id=?",
            (ended, status, _dumps(summary) if summary is not None else None,
             self.n_hides, self.n_defects, self.n_uninspected, self.run_id),
        )


def _next_run_id_from_files(out_dir: Path) -> int:
    """Run id without SQLite: one more than any run id found in summary.json or hide records."""
    best = 0
    for p in [out_dir / SUMMARY_NAME, *sorted((out_dir / HIDES_DIR).glob("hide-*.json"))]:
        try:
            best = max(best, int(json.loads(p.read_text(encoding="utf-8")).get("run_id", 0)))
        except (OSError, ValueError, TypeError, AttributeError):
            continue
    return best + 1


# ---------------------------------------------------------------------------------------------
# Reading back


def latest_run_id(out_dir: Path) -> int | None:
    """The newest run id in ``out_dir`` (SQLite when present, else the JSON files)."""
    out_dir = Path(out_dir)
    db = out_dir / DB_NAME
    if db.is_file():
        conn = _open_ro(db)
        try:
            row = conn.execute("SELECT MAX(run_id) FROM runs").fetchone()
        finally:
            conn.close()
        return int(row[0]) if row and row[0] is not None else None
    n = _next_run_id_from_files(out_dir) - 1
    return n if n > 0 else None


def _open_ro(db: Path) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0)
        conn.execute("SELECT 1 FROM runs LIMIT 1").fetchall()
        return conn
    except sqlite3.DatabaseError as e:
        raise InputError(f"not a readable results database: {e}", path=db) from None


def load_run_hides(out_dir: Path, run_id: int | None = None) -> list[dict[str, Any]]:
    """Hide records (``ResultsWriter.hide_record``) of one run, by hide id; default latest run.

    Reads ``results.sqlite`` when present (it keeps every run), else ``hides/*.json``.
    Raises ``InputError`` when ``out_dir`` holds no results.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise InputError("run folder not found", path=out_dir,
                         hint="give the --out folder of a replay or run")
    db = out_dir / DB_NAME
    if db.is_file():
        conn = _open_ro(db)
        try:
            if run_id is None:
                row = conn.execute("SELECT MAX(run_id) FROM runs").fetchone()
                if not row or row[0] is None:
                    return []
                run_id = int(row[0])
            rows = conn.execute(
                "SELECT record FROM hides WHERE run_id=? ORDER BY hide_id", (run_id,)
            ).fetchall()
        except sqlite3.DatabaseError as e:
            raise InputError(f"not a readable results database: {e}", path=db) from None
        finally:
            conn.close()
        try:
            return [json.loads(r[0]) for r in rows]
        except (TypeError, ValueError) as e:
            raise InputError(f"garbled hide record: {e}", path=db) from None
    files = sorted((out_dir / HIDES_DIR).glob("hide-*.json"))
    if not files and not (out_dir / SUMMARY_NAME).is_file():
        raise InputError("no results found (no results.sqlite, no hides/hide-*.json)",
                         path=out_dir, hint="give the --out folder of a replay or run")
    recs: list[dict[str, Any]] = []
    for p in files:
        try:
            rec = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise InputError(f"unreadable hide record: {e}", path=p) from None
        if not isinstance(rec, dict):
            raise InputError("hide record is not a JSON object", path=p)
        recs.append(rec)
    if run_id is None:
        run_id = latest_run_id(out_dir)
    if run_id is None:
        return recs
    return sorted((r for r in recs if int(r.get("run_id", 0)) == run_id),
                  key=lambda r: int(r.get("hide_id", 0)))
