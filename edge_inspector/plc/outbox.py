"""The persistent outbox: marks wait here, numbered, until the PLC acknowledges them.

docs/architecture.md section 8: a mark is persisted (SQLite, WAL, ``synchronous=FULL``) *before*
it is sent, so it survives a restart of the inspector or of the PLC. ``PlcLink`` adds marks
from the pipeline thread and reads, acknowledges and renumbers them from its own thread.

The outbox belongs to a run (``claim``): marks another run left unacknowledged are closed as not
fired when a new run claims it, never sent by the new run. Marks of an old belt frame (the PLC
lost its memory, its encoder jumped, or the encoder was not known when they were planned) are
re-based or closed by ``rebase`` (docs/marking.md, "Belt frames").

Tables:
- ``meta``: schema tag, the highest sequence assigned (``last_seq``), the highest
  acknowledgement applied (``acked_upto``), the highest sequence written into the PLC's ring
  (``written_upto``), the run that owns the outbox (``run``).
- ``pending``: unacknowledged marks (the whole Mark as JSON), by sequence.
- ``acked``: a compact history row per acknowledged mark (seq, key, action, belt position,
  hide, deadline, times) for the marks log; its keys keep de-duplicating after the acknowledgement.
- ``closed``: marks closed without being sent (not fired), with the reason.

Sequence numbers are never reused once written into the PLC's ring; closing marks that were never
written renumbers the unsent ones after them, so the ring stays gap-free.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..mark import Action, Mark

SCHEMA = "edge-inspector-outbox/2"
_OLD_SCHEMAS = ("edge-inspector-outbox/1",)

_DDL = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pending (
    seq INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    mark TEXT NOT NULL,
    added_at REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS pending_key ON pending (key) WHERE key != '';
CREATE TABLE IF NOT EXISTS acked (
    id INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL,
    key TEXT NOT NULL,
    action TEXT NOT NULL,
    belt_mm REAL NOT NULL,
    hide_id INTEGER NOT NULL,
    added_at REAL NOT NULL,
    acked_at REAL NOT NULL,
    deadline_mm REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS acked_key ON acked (key) WHERE key != '';
CREATE TABLE IF NOT EXISTS closed (
    id INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL,
    key TEXT NOT NULL,
    run TEXT NOT NULL,
    reason TEXT NOT NULL,
    mark TEXT NOT NULL,
    closed_at REAL NOT NULL
);
"""


class OutboxError(InputError):
    """An outbox file that cannot be used: not an outbox, corrupt, or not writable."""


def _mark_to_json(m: Mark) -> str:
    d = dataclasses.asdict(m)
    d["action"] = int(m.action)
    return json.dumps(d)


def _mark_from_json(text: str, seq: int) -> Mark:
    d = json.loads(text)
    d["action"] = Action(d["action"])
    d["seq"] = seq
    return Mark(**d)


class Outbox:
    """Marks numbered 1, 2, 3, ... (never reused, also across restarts) until acknowledged.

    Thread safe: one connection, one lock. Every change is one transaction.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=5.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._open_schema()
        except sqlite3.DatabaseError as e:
            raise self._error(e) from None

    # -- opening -----------------------------------------------------------------------------
    def _error(self, e: sqlite3.Error) -> OutboxError:
        text = str(e)
        if "not a database" in text or "malformed" in text:
            return OutboxError("not an outbox (not an SQLite database, or corrupt)", path=self.path,
                               hint="move it away; a new outbox is created in its place")
        if "readonly" in text or "unable to open" in text or "disk I/O" in text:
            return OutboxError(f"cannot write the outbox ({text})", path=self.path,
                               hint="check that the folder exists and is writable by the service user")
        return OutboxError(f"outbox unusable: {text}", path=self.path)

    def _open_schema(self) -> None:
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and "meta" not in tables:
            raise OutboxError(f"not an outbox: an SQLite database with tables {sorted(tables)}", path=self.path,
                              hint="give plc.outbox a file of its own")
        with self._tx():
            for statement in _DDL.split(";"):
                self._db.execute(statement)
            schema = self._meta("schema")
            if schema is None:
                self._db.execute("INSERT INTO meta VALUES ('schema', ?), ('last_seq', '0'), ('acked_upto', '0')", (SCHEMA,))
            elif schema in _OLD_SCHEMAS:  # /1 -> /2: acked.deadline_mm, closed (created above), written_upto
                self._db.execute("ALTER TABLE acked ADD COLUMN deadline_mm REAL")
                self._db.execute("UPDATE meta SET value = ? WHERE name = 'schema'", (SCHEMA,))
            elif schema != SCHEMA:
                raise OutboxError(f"outbox schema {schema!r}, this program reads {SCHEMA!r}", path=self.path)
            for name in ("written_upto", "run"):
                self._db.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (name, "0" if name == "written_upto" else ""))

    def _tx(self) -> "_Transaction":
        return _Transaction(self._db)

    def _meta(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, name: str, value: int | str) -> None:
        self._db.execute("UPDATE meta SET value = ? WHERE name = ?", (str(value), name))

    def _run(self, fn: Any, *args: Any) -> Any:
        """Run ``fn`` under the lock in one transaction; SQLite errors name the file."""
        with self._lock:
            try:
                with self._tx():
                    return fn(*args)
            except sqlite3.DatabaseError as e:
                raise self._error(e) from None

    # -- the API ------------------------------------------------------------------------------
    def add(self, marks: list[Mark]) -> list[Mark]:
        """Number and persist ``marks`` (one transaction); copies with ``seq`` set are returned.

        A mark whose non-empty ``key`` is already in the outbox (pending or acknowledged), or
        earlier in ``marks``, is skipped and not returned.
        """
        return self._run(self._add, marks)

    def _add(self, marks: list[Mark]) -> list[Mark]:
        seq = int(self._meta("last_seq") or 0)
        now = time.time()
        out: list[Mark] = []
        for m in marks:
            if m.key and self._has_key(m.key):
                continue
            seq += 1
            m2 = dataclasses.replace(m, seq=seq, defect_ids=list(m.defect_ids))
            self._db.execute("INSERT INTO pending VALUES (?, ?, ?, ?)", (seq, m.key, _mark_to_json(m2), now))
            out.append(m2)
        self._set_meta("last_seq", seq)
        return out

    def _has_key(self, key: str) -> bool:
        q = ("SELECT 1 FROM pending WHERE key = ? UNION ALL SELECT 1 FROM acked WHERE key = ?"
             " UNION ALL SELECT 1 FROM closed WHERE key = ? LIMIT 1")
        return self._db.execute(q, (key, key, key)).fetchone() is not None

    def pending(self, after_seq: int = 0, limit: int | None = None) -> list[Mark]:
        """Unacknowledged marks with ``seq > after_seq``, in sequence order."""
        q = "SELECT seq, mark FROM pending WHERE seq > ? ORDER BY seq LIMIT ?"
        rows = self._run(lambda: self._db.execute(q, (after_seq, -1 if limit is None else limit)).fetchall())
        return [_mark_from_json(text, seq) for seq, text in rows]

    def ack(self, upto_seq: int) -> int:
        """Acknowledge every pending mark with ``seq <= upto_seq``; how many were pending."""
        return self._run(self._ack, upto_seq)

    def _ack(self, upto: int) -> int:
        rows = self._db.execute("SELECT seq, key, mark, added_at FROM pending WHERE seq <= ?", (upto,)).fetchall()
        now = time.time()
        for seq, key, text, added in rows:
            m = json.loads(text)
            self._db.execute(
                "INSERT INTO acked (seq, key, action, belt_mm, hide_id, added_at, acked_at, deadline_mm)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (seq, key, Action(m["action"]).name.lower(), m["belt_mm"], m["hide_id"], added, now,
                 m.get("deadline_belt_mm")),
            )
        self._db.execute("DELETE FROM pending WHERE seq <= ?", (upto,))
        if upto > int(self._meta("acked_upto") or 0):
            self._set_meta("acked_upto", upto)
        return len(rows)

    def raise_seq_floor(self, n: int) -> int:
        """Make every pending and future sequence greater than ``n`` (order kept).

        For a PLC that has seen sequence ``n`` from an earlier outbox: pending marks numbered
        ``<= n`` are renumbered ``n + 1, n + 2, ...``. Returns how many were renumbered.
        ``written_upto`` becomes at least ``n``.
        """
        return self._run(self._raise_floor, n)

    def _raise_floor(self, n: int) -> int:
        low = self._db.execute("SELECT MIN(seq) FROM pending").fetchone()[0]
        renumbered = self._renumber(n + 1) if low is not None and low <= n else 0
        if n > int(self._meta("last_seq") or 0):
            self._set_meta("last_seq", n)
        if n > int(self._meta("written_upto") or 0):
            self._set_meta("written_upto", n)
        return renumbered

    def renumber_pending(self, first_seq: int) -> int:
        """Renumber pending marks ``first_seq, first_seq + 1, ...`` (order kept), also downwards.

        For a PLC that lost its memory (acknowledges 0 again): numbering restarts after what
        it has. ``last_seq`` and ``acked_upto`` follow. Returns how many were renumbered.
        """
        return self._run(self._renumber, first_seq)

    def _renumber(self, first: int) -> int:
        rows = self._db.execute("SELECT seq FROM pending ORDER BY seq").fetchall()
        # Two passes through negative numbers: the primary key never collides midway.
        for i, (seq,) in enumerate(rows):
            self._db.execute("UPDATE pending SET seq = ? WHERE seq = ?", (-(first + i), seq))
        self._db.execute("UPDATE pending SET seq = -seq WHERE seq < 0")
        self._set_meta("last_seq", first + len(rows) - 1)
        self._set_meta("acked_upto", min(int(self._meta("acked_upto") or 0), first - 1))
        self._set_meta("written_upto", min(int(self._meta("written_upto") or 0), first - 1))
        return len(rows)

    # -- run ownership and belt frames (docs/marking.md, "Belt frames") -----------------------
    def claim(self, run_id: str) -> dict[str, int]:
        """Make ``run_id`` the owner; close every pending mark of another run as not fired.

        Returns the closed marks by reason: "earlier_run" (never written into the PLC's ring) and
        "earlier_run_in_ring" (written into the ring, not acknowledged: the PLC may still take
        them from there, in the frame they were written in). Numbering continues after what the
        PLC may have seen.
        """
        return self._run(self._claim, run_id)

    def _claim(self, run_id: str) -> dict[str, int]:
        written = int(self._meta("written_upto") or 0)
        closed: dict[str, int] = {}
        for seq, text in self._db.execute("SELECT seq, mark FROM pending ORDER BY seq").fetchall():
            if json.loads(text).get("run_id", "") != run_id:
                reason = "earlier_run_in_ring" if seq <= written else "earlier_run"
                self._close_row(seq, text, reason)
                closed[reason] = closed.get(reason, 0) + 1
        if closed:
            self._compact(written)
        self._set_meta("run", run_id)
        return closed

    def rebase(self, run_id: str, epoch: int, offset_mm: float, belt_now_mm: float | None) -> dict[str, Any]:
        """Move unsent marks of another frame into frame ``epoch`` (belt offset ``offset_mm``).

        Only marks above ``written_upto`` (never written into the PLC's ring in this frame) are
        touched. A mark of another run is closed ("earlier_run"); a mark whose re-based deadline
        is not ahead of ``belt_now_mm`` is closed ("passed": the belt carried its spot past the
        actuator before the PLC could be told); the rest get the new positions and frame. Gaps
        are closed by renumbering. Returns {"rebased": n, "closed": {reason: [closed marks]}}.
        """
        return self._run(self._rebase, run_id, epoch, offset_mm, belt_now_mm)

    def _rebase(self, run_id: str, epoch: int, offset_mm: float, belt_now_mm: float | None) -> dict[str, Any]:
        written = int(self._meta("written_upto") or 0)
        rows = self._db.execute("SELECT seq, mark FROM pending WHERE seq > ? ORDER BY seq", (written,)).fetchall()
        rebased, closed = 0, {}
        for seq, text in rows:
            m = json.loads(text)
            if m.get("epoch") is None or m["epoch"] == epoch:
                continue
            reason = ""
            if m.get("run_id", "") != run_id:
                reason = "earlier_run"
            else:
                delta = offset_mm - float(m.get("offset_mm", 0.0))
                m["belt_mm"] += delta
                m["deadline_belt_mm"] += delta
                m["epoch"], m["offset_mm"] = epoch, offset_mm
                if belt_now_mm is not None and m["deadline_belt_mm"] <= belt_now_mm:
                    reason = "passed"
            if reason:
                self._close_row(seq, json.dumps(m), reason)
                closed.setdefault(reason, []).append(_mark_from_json(json.dumps(m), seq))
            else:
                self._db.execute("UPDATE pending SET mark = ? WHERE seq = ?", (json.dumps(m), seq))
                rebased += 1
        if closed:
            self._compact(written)
        return {"rebased": rebased, "closed": closed}

    def close_pending(self, reason: str, *, run_id: str | None = None, not_epoch: int | None = None,
                      unsent_only: bool = False) -> list[Mark]:
        """Close pending marks as not fired with ``reason``; the closed marks.

        Filters: of ``run_id``; with an epoch other than ``not_epoch`` (marks without one are
        kept); ``unsent_only``: above ``written_upto``.
        """
        return self._run(self._close_pending, reason, run_id, not_epoch, unsent_only)

    def _close_pending(self, reason: str, run_id: str | None, not_epoch: int | None, unsent_only: bool) -> list[Mark]:
        out = []
        floor = int(self._meta("written_upto") or 0) if unsent_only else 0
        for seq, text in self._db.execute("SELECT seq, mark FROM pending WHERE seq > ? ORDER BY seq", (floor,)).fetchall():
            m = json.loads(text)
            if not_epoch is not None and (m.get("epoch") is None or m["epoch"] == not_epoch):
                continue
            if run_id is None or m.get("run_id", "") == run_id:
                self._close_row(seq, text, reason)
                out.append(_mark_from_json(text, seq))
        if out:
            self._compact(int(self._meta("written_upto") or 0))
        return out

    def _close_row(self, seq: int, text: str, reason: str) -> None:
        m = json.loads(text)
        self._db.execute("INSERT INTO closed (seq, key, run, reason, mark, closed_at) VALUES (?, ?, ?, ?, ?, ?)",
                         (seq, m.get("key", ""), m.get("run_id", ""), reason, text, time.time()))
        self._db.execute("DELETE FROM pending WHERE seq = ?", (seq,))

    def _compact(self, written: int) -> None:
        """Renumber the unsent marks (above ``written``) from written + 1 on, gap-free; last_seq follows."""
        rows = self._db.execute("SELECT seq FROM pending WHERE seq > ? ORDER BY seq", (written,)).fetchall()
        first = max(written, int(self._meta("acked_upto") or 0)) + 1
        for i, (seq,) in enumerate(rows):
            self._db.execute("UPDATE pending SET seq = ? WHERE seq = ?", (-(first + i), seq))
        self._db.execute("UPDATE pending SET seq = -seq WHERE seq < 0")
        top = self._db.execute("SELECT MAX(seq) FROM pending").fetchone()[0]
        self._set_meta("last_seq", max(int(top or 0), first - 1))

    def set_written(self, seq: int) -> None:
        """The PLC's ring holds every sequence up to ``seq`` (the link wrote LAST_WRITTEN_SEQ)."""
        self._run(self._set_meta, "written_upto", seq)

    @property
    def written_upto(self) -> int:
        return int(self._run(self._meta, "written_upto") or 0)

    def acked_since(self, t_wall: float, beyond_mm: float) -> int:
        """Marks acknowledged since ``t_wall`` (time.time()) whose deadline lies beyond ``beyond_mm``."""
        q = "SELECT COUNT(*) FROM acked WHERE acked_at >= ? AND deadline_mm > ?"
        return int(self._run(lambda: self._db.execute(q, (t_wall, beyond_mm)).fetchone()[0]))

    @property
    def next_seq(self) -> int:
        """The sequence the next added mark gets."""
        return int(self._run(self._meta, "last_seq") or 0) + 1

    @property
    def acked_upto(self) -> int:
        """The highest acknowledgement applied (0: never acknowledged)."""
        return int(self._run(self._meta, "acked_upto") or 0)

    def counts(self) -> dict[str, int]:
        def q() -> dict[str, int]:
            pending, low = self._db.execute("SELECT COUNT(*), MIN(seq) FROM pending").fetchone()
            return {
                "pending": int(pending),
                "acked": int(self._db.execute("SELECT COUNT(*) FROM acked").fetchone()[0]),
                "closed": int(self._db.execute("SELECT COUNT(*) FROM closed").fetchone()[0]),
                "first_pending_seq": int(low or 0),
                "last_seq": int(self._meta("last_seq") or 0),
                "acked_upto": int(self._meta("acked_upto") or 0),
                "written_upto": int(self._meta("written_upto") or 0),
            }

        return self._run(q)

    def history(self, limit: int = 100) -> list[dict[str, Any]]:
        """The most recently acknowledged marks, newest first (for the marks log)."""
        q = "SELECT seq, key, action, belt_mm, hide_id, added_at, acked_at FROM acked ORDER BY id DESC LIMIT ?"
        cols = ("seq", "key", "action", "belt_mm", "hide_id", "added_at", "acked_at")
        return [dict(zip(cols, row)) for row in self._run(lambda: self._db.execute(q, (limit,)).fetchall())]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "Outbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, ROLLBACK on error (the connection runs in autocommit mode)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
