"""The run folder: every file name a replay or live run writes, and reading a run back.

Layout of an output folder (``out_dir``)::

    out_dir/
      results.sqlite        runs, hides, defects, uninspected (WAL; one transaction per hide); every run
      summary.json          this run's summary (written by ``store.ResultsWriter.finish``)
      hides/hide-0001.json  Hide.to_json() + run_id + station
      hides/hide-0001.png   hide map: picture, outline, defects by class, uninspected stretches
      marks.jsonl           every mark planned, sent, acknowledged (edge_inspector/dispatch.py)
      plc.jsonl             the soft-PLC's log of fired and missed marks (``--plc sim``)
      plc-state.json        the soft-PLC's RETAIN state (``--plc sim``)
      plc-sim-outbox.sqlite the mark outbox of a run against the soft-PLC
      runs/run-0003/        summary.json, hides/, marks.jsonl, plc.jsonl of earlier runs (live restarts)
      .lock                 held (flock) by the run writing here; holds its pid

Each run writes into its own place (edge_inspector/runfolder.py): replay refuses a used folder
unless ``--overwrite``; other runs move the earlier run's own files into ``runs/run-NNNN/``.

This module only names files and reads them (no pipeline, no PLC, no drawing), so offline
evaluation (edge_inspector/evaluation/) imports it without the station's runtime stack.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from .errors import InputError

DB_NAME = "results.sqlite"
SUMMARY_NAME = "summary.json"
HIDES_DIR = "hides"
MARKS_LOG = "marks.jsonl"
PLC_LOG = "plc.jsonl"
PLC_STATE = "plc-state.json"
SIM_OUTBOX = "plc-sim-outbox.sqlite"
ARCHIVE_DIR = "runs"
LOCK_NAME = ".lock"


def hide_stem(hide_id: int) -> str:
    return f"hide-{int(hide_id):04d}"


def _file_run_ids(out_dir: Path) -> list[int]:
    """Run ids named by summary.json and the hide records in ``out_dir``."""
    ids = []
    for p in [out_dir / SUMMARY_NAME, *sorted((out_dir / HIDES_DIR).glob("hide-*.json"))]:
        try:
            ids.append(int(json.loads(p.read_text(encoding="utf-8")).get("run_id", 0)))
        except (OSError, ValueError, TypeError, AttributeError):
            continue
    return ids


def next_run_id_from_files(out_dir: Path) -> int:
    """Run id without SQLite: one more than any run id in summary.json, hide records or runs/run-NNNN."""
    best = max(_file_run_ids(out_dir), default=0)
    for p in (out_dir / ARCHIVE_DIR).glob("run-*"):
        digits = p.name[4:].split("-")[0]
        if digits.isdigit():
            best = max(best, int(digits))
    return best + 1


def run_id_of_files(out_dir: Path) -> int | None:
    """The run the files in ``out_dir`` (summary.json, hides/) belong to, else the newest run in SQLite."""
    ids = _file_run_ids(Path(out_dir))
    if ids:
        return max(ids)
    db = Path(out_dir) / DB_NAME
    if db.is_file():
        try:
            conn = _open_ro(db)
            try:
                row = conn.execute("SELECT MAX(run_id) FROM runs").fetchone()
            finally:
                conn.close()
        except InputError:
            return None
        return int(row[0]) if row and row[0] is not None else None
    return None


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
    n = next_run_id_from_files(out_dir) - 1
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
