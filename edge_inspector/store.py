"""Results storage: per hide a JSON record, a PNG hide map and rows in SQLite; the run summary.

File names and the folder layout are in edge_inspector/runfiles.py. Every file is written
atomically (temporary file in the same folder, fsync, ``os.replace``), so a reader or a crash never
sees half a file. SQLite rows of a hide are committed in one transaction right after its files, so a
crash keeps every hide already written. Each run writes into its own place (runfolder.py): a writer
holds the folder's lock while open, marks a run it finds still ``running`` as ``crashed`` (its process
died), and moves the earlier run's own files (summary.json, hides/, marks.jsonl, plc.jsonl) into
``runs/run-NNNN/`` before writing. Re-running into the same folder appends a new run
(``runs.run_id``) to ``results.sqlite``; earlier runs stay intact there, where the full hide record
(``hides.record``) is kept and ``json_path``/``map_path`` follow the moved files;
``runfiles.load_run_hides`` returns only the records of the chosen (default: latest) run.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

import cv2
import numpy as np
import structlog

from .config import Station
from .errors import InputError
from .hide import Hide
from .hidemap import render_hide_map
from .runfiles import DB_NAME, HIDES_DIR, SUMMARY_NAME, next_run_id_from_files, hide_stem
from .runfolder import FolderLock, archive_earlier_run

log = structlog.get_logger(__name__)

SCHEMA_VERSION = 1


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


_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id       INTEGER PRIMARY KEY AUTOINCREMENT,
    station      TEXT NOT NULL,
    started_utc  TEXT NOT NULL,
    ended_utc    TEXT,
    status       TEXT NOT NULL,            -- running | finished | incomplete | aborted | crashed
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


def mark_crashed_runs(out_dir: Path) -> list[int]:
    """Runs in ``out_dir``'s results.sqlite still ``running``: their process ended without closing
    them (SIGKILL, power cut). Marks them ``crashed``; their ids. Call with the folder's lock held."""
    db = Path(out_dir) / DB_NAME
    if not db.is_file():
        return []
    conn = open_db(db)
    try:
        ids = [int(r[0]) for r in conn.execute("SELECT run_id FROM runs WHERE status='running' ORDER BY run_id")]
        if ids:
            conn.execute("UPDATE runs SET status='crashed' WHERE status='running'")
            log.warning("runs found running at start-up marked crashed: their process ended without closing them",
                        out_dir=str(out_dir), runs=ids)
    finally:
        conn.close()
    return ids


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
        self.db_path = self.out_dir / DB_NAME
        self._conn: sqlite3.Connection | None = None
        self._folder_lock = FolderLock(self.out_dir)
        self._folder_lock.acquire()  # one run writes here at a time (InputError naming the other)
        try:
            mark_crashed_runs(self.out_dir)
            moved = archive_earlier_run(self.out_dir)
            try:
                self.hides_dir.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise InputError(f"cannot create the output folder: {e.strerror}", path=self.out_dir) from None
            self._conn = open_db(self.db_path) if sqlite else None
            if self._conn is not None:
                if moved is not None:  # the moved run's rows point at its files' new place
                    prefix = f"{moved[0].relative_to(self.out_dir).as_posix()}/"
                    self._conn.execute(
                        "UPDATE hides SET json_path = ? || json_path, map_path = CASE WHEN map_path IS NULL"
                        " THEN NULL ELSE ? || map_path END WHERE run_id = ? AND json_path NOT LIKE 'runs/%'",
                        (prefix, prefix, moved[1]),
                    )
                cur = self._conn.execute(
                    "INSERT INTO runs (station, started_utc, status, mm_per_px, mm_per_line, run_info)"
                    " VALUES (?, ?, 'running', ?, ?, ?)",
                    (station_name, self.started_utc, self.mm_per_px, self.mm_per_line, _dumps(self.run_info)),
                )
                self.run_id = int(cur.lastrowid or 0)
            else:
                self.run_id = next_run_id_from_files(self.out_dir)
        except BaseException:
            if self._conn is not None:
                self._conn.close()
            self._folder_lock.release()
            raise
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
            self._folder_lock.release()

    def _end_run(self, status: str, ended: str, summary: dict[str, Any] | None) -> None:
        if self._conn is None:
            return
        self._conn.execute(
            "UPDATE runs SET ended_utc=?, status=?, summary=?, n_hides=?, n_defects=?,"
            " n_uninspected=? WHERE run_id=?",
            (ended, status, _dumps(summary) if summary is not None else None,
             self.n_hides, self.n_defects, self.n_uninspected, self.run_id),
        )
