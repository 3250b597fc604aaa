"""Past runs for the web view: read-only queries on a run folder's ``results.sqlite``.

The station writes the database while the web server reads it (WAL: readers never block the
writer). Every request opens its own read-only connection, so a long-running server sees new hides
at once and never holds a lock. Hide records are ``ResultsWriter.hide_record`` (edge_inspector/store.py).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import cv2

from ..cutting import grading_report, hide_dxf_bytes, outline_grow_mm
from ..errors import InputError
from ..runfiles import DB_NAME, HIDES_DIR, hide_stem

MAX_LIMIT = 1000


class NotFound(LookupError):
    """A run or hide that the folder does not hold (HTTP 404)."""


class BadQuery(ValueError):
    """A query parameter that cannot be used (HTTP 400); the message names it."""


class RunFolder:
    """One run folder (``--out`` of replay/run): runs, hides, defects, maps, DXF, grading."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.db = self.path / DB_NAME
        self._thumbs: OrderedDict[tuple[str, float, int], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def check(self) -> None:
        """InputError unless the folder exists (the database may come later: a run starting now)."""
        if not self.path.is_dir():
            raise InputError("run folder not found", path=self.path, hint="give the --out folder of a replay or run")

    def _connect(self) -> sqlite3.Connection | None:
        if not self.db.is_file():
            return None
        try:
            conn = sqlite3.connect(f"{self.db.resolve().as_uri()}?mode=ro", uri=True, timeout=10.0)
            conn.row_factory = sqlite3.Row
            return conn
        except sqlite3.DatabaseError as e:  # pragma: no cover - a file that is not a database
            raise InputError(f"not a readable results database: {e}", path=self.db) from None

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        conn = self._connect()
        if conn is None:
            return []
        try:
            return conn.execute(sql, args).fetchall()
        except sqlite3.OperationalError as e:
            if "no such table" in str(e):  # created, schema not yet written
                return []
            raise
        finally:
            conn.close()

    # -- runs ---------------------------------------------------------------------------------
    def runs(self) -> list[dict[str, Any]]:
        """Every run, newest first: id, station, times, status, counts, grades."""
        out = []
        for r in self._query("SELECT run_id, station, started_utc, ended_utc, status, n_hides, n_defects,"
                             " n_uninspected, mm_per_px, mm_per_line FROM runs ORDER BY run_id DESC"):
            d = dict(r)
            d["grades"] = {g["grade"]: g["n"] for g in self._query(
                "SELECT grade, COUNT(*) AS n FROM hides WHERE run_id=? GROUP BY grade ORDER BY grade", (r["run_id"],))}
            out.append(d)
        return out

    def run_id(self, run: str | int) -> int:
        """``run`` as a run id; "latest" = the newest run. NotFound when there is none."""
        if str(run) == "latest":
            rows = self._query("SELECT MAX(run_id) AS m FROM runs")
            if not rows or rows[0]["m"] is None:
                raise NotFound("no run yet")
            return int(rows[0]["m"])
        try:
            return int(run)
        except ValueError:
            raise BadQuery(f"run: expected a run id or 'latest', got {run!r}") from None

    def _run_station(self, run_id: int) -> dict[str, Any]:
        rows = self._query("SELECT run_info FROM runs WHERE run_id=?", (run_id,))
        if not rows:
            raise NotFound(f"run {run_id} not found")
        try:
            return dict(json.loads(rows[0]["run_info"] or "{}").get("station") or {})
        except ValueError:
            return {}

    # -- hides --------------------------------------------------------------------------------
    def hides(self, params: dict[str, str]) -> dict[str, Any]:
        """Hides by time (newest first) with grade, area, defect counts; filtered (docs/operator.md)."""
        where, args = [], []
        if params.get("run"):
            where.append("h.run_id=?")
            args.append(self.run_id(params["run"]))
        if params.get("grade"):
            grades = [g.strip().upper() for g in params["grade"].split(",") if g.strip()]
            where.append(f"h.grade IN ({','.join('?' * len(grades))})")
            args += grades
        if params.get("class"):
            where.append("EXISTS (SELECT 1 FROM defects d WHERE d.run_id=h.run_id AND d.hide_id=h.hide_id"
                         " AND d.class=?)")
            args.append(params["class"])
        for key, op in (("min_area", ">="), ("max_area", "<=")):
            if params.get(key):
                where.append(f"h.area_m2 {op} ?")
                args.append(_number(params, key))
        for key, op in (("since", ">="), ("until", "<=")):
            if params.get(key):
                where.append(f"h.written_utc {op} ?")
                args.append(params[key])
        if params.get("min_defects"):
            where.append("h.n_defects >= ?")
            args.append(_number(params, "min_defects"))
        limit = int(min(MAX_LIMIT, max(1, _number(params, "limit", 200))))
        offset = int(max(0, _number(params, "offset", 0)))
        cond = (" WHERE " + " AND ".join(where)) if where else ""
        total = self._query(f"SELECT COUNT(*) AS n FROM hides h{cond}", tuple(args))
        rows = self._query(
            "SELECT h.run_id, h.hide_id, h.written_utc, h.grade, h.area_m2, h.inspected_fraction, h.n_defects,"
            " h.first_line, h.last_line, json_extract(h.record, '$.defect_counts') AS counts,"
            " json_array_length(json_extract(h.record, '$.uninspected')) AS n_uninspected"
            f" FROM hides h{cond} ORDER BY h.written_utc DESC, h.run_id DESC, h.hide_id DESC LIMIT ? OFFSET ?",
            (*args, limit, offset))
        hides = []
        for r in rows:
            d = dict(r)
            d["defect_counts"] = json.loads(d.pop("counts") or "{}")
            hides.append(d)
        classes = [r["class"] for r in self._query("SELECT DISTINCT class FROM defects ORDER BY class")]
        return {"total": total[0]["n"] if total else 0, "limit": limit, "offset": offset, "hides": hides,
                "classes": classes}

    def hide(self, run: str | int, hide_id: int) -> dict[str, Any]:
        """The full record of one hide (outline, defects, uninspected) plus its links."""
        rid = self.run_id(run)
        rows = self._query("SELECT record, written_utc FROM hides WHERE run_id=? AND hide_id=?", (rid, hide_id))
        if not rows:
            raise NotFound(f"run {rid} has no hide {hide_id}")
        rec = json.loads(rows[0]["record"])
        rec["written_utc"] = rows[0]["written_utc"]
        rec["map_available"] = self.map_path(rid, hide_id) is not None
        base = f"/api/runs/{rid}/hides/{hide_id}"
        rec["links"] = {"map": f"{base}/map.png", "thumb": f"{base}/thumb.jpg", "dxf": f"{base}.dxf",
                        "page": f"/hide?run={rid}&hide={hide_id}"}
        return rec

    def map_path(self, run_id: int, hide_id: int) -> Path | None:
        """The hide map PNG, when the file in the folder is this run's (a later run replaces it)."""
        stem = self.path / HIDES_DIR / hide_stem(hide_id)
        png, js = stem.with_suffix(".png"), stem.with_suffix(".json")
        try:
            if png.is_file() and int(json.loads(js.read_text(encoding="utf-8")).get("run_id", -1)) == run_id:
                return png
        except (OSError, ValueError):
            return None
        return None

    def thumbnail(self, run: str | int, hide_id: int, width: int = 480) -> bytes:
        """The hide map scaled to ``width`` px as JPEG (cached): what the browser gets instead of pixels."""
        rid = self.run_id(run)
        png = self.map_path(rid, hide_id)
        if png is None:
            raise NotFound(f"no hide map of run {rid} hide {hide_id} in {self.path / HIDES_DIR}")
        width = int(min(1600, max(64, width)))
        key = (str(png), png.stat().st_mtime, width)
        with self._lock:
            if key in self._thumbs:
                self._thumbs.move_to_end(key)
                return self._thumbs[key]
        img = cv2.imread(str(png), cv2.IMREAD_COLOR)
        if img is None:
            raise NotFound(f"unreadable hide map {png}")
        if img.shape[1] > width:
            img = cv2.resize(img, (width, max(1, round(img.shape[0] * width / img.shape[1]))),
                             interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])
        data = buf.tobytes() if ok else b""
        with self._lock:
            self._thumbs[key] = data
            while len(self._thumbs) > 256:
                self._thumbs.popitem(last=False)
        return data

    def dxf(self, run: str | int, hide_id: int) -> bytes:
        """The cutting-room DXF of one hide (edge_inspector/cutting.py), from its stored record."""
        rid = self.run_id(run)
        rec = self.hide(rid, hide_id)
        st = self._run_station(rid)
        cam, det = st.get("camera", {}), st.get("hide_detection", {})
        grow = outline_grow_mm(det["subsample"], cam["mm_per_px"], cam["mm_per_line"]) if cam and det else 0.0
        return hide_dxf_bytes(rec, grow)

    def grading(self, run: str | int) -> dict[str, Any]:
        """The grading report of one run (edge_inspector/cutting.py)."""
        rid = self.run_id(run)
        self._run_station(rid)  # NotFound for an unknown run
        recs = [json.loads(r["record"]) for r in
                self._query("SELECT record FROM hides WHERE run_id=? ORDER BY hide_id", (rid,))]
        return {"run_id": rid, **grading_report(recs)}


def _number(params: dict[str, str], key: str, default: float | None = None) -> float:
    raw = params.get(key)
    if raw in (None, ""):
        if default is None:
            raise BadQuery(f"{key}: a number is needed")
        return default
    try:
        return float(raw)
    except ValueError:
        raise BadQuery(f"{key}: expected a number, got {raw!r}") from None
