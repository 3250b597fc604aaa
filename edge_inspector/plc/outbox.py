"""The persistent outbox: marks wait here, numbered, until the PLC acknowledges them.

docs/architecture.md section 8: a mark is persisted (SQLite, WAL, ``synchronous=FULL``) *before*
it is sent, so it survives a restart of the inspector or of the PLC. ``PlcLink`` adds marks
from the pipeline thread and reads, acknowledges and renumbers them from its own thread.

Tables:
- ``meta``: schema tag, the highest sequence ever assigned (``last_seq``), the highest
  acknowledgement applied (``acked_upto``).
- ``pending``: unacknowledged marks (the whole Mark as JSON), by sequence.
- ``acked``: a compact history row per acknowledged mark (seq, key, action, belt position,
  hide, times) for the marks log; its keys keep de-duplicating after the acknowledgement.
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

SCHEMA = "edge-inspector-outbox/1"

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
    acked_at REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS acked_key ON acked (key) WHERE key != '';
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
            elif schema != SCHEMA:
                raise OutboxError(f"outbox schema {schema!r}, this program reads {SCHEMA!r}", path=self.path)

    def _tx(self) -> "_Transaction":
        return _Transaction(self._db)

    def _meta(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, name: str, value: int) -> None:
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
        q = "SELECT 1 FROM pending WHERE key = ? UNION ALL SELECT 1 FROM acked WHERE key = ? LIMIT 1"
        return self._db.execute(q, (key, key)).fetchone() is not None

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
                "INSERT INTO acked (seq, key, action, belt_mm, hide_id, added_at, acked_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (seq, key, Action(m["action"]).name.lower(), m["belt_mm"], m["hide_id"], added, now),
            )
        self._db.execute("DELETE FROM pending WHERE seq <= ?", (upto,))
        if upto > int(self._meta("acked_upto") or 0):
            self._set_meta("acked_upto", upto)
        return len(rows)

    def raise_seq_floor(self, n: int) -> int:
        """Make every pending and future sequence greater than ``n`` (order kept).

        For a PLC that has seen sequence ``n`` from an earlier outbox: pending marks numbered
        ``<= n`` are renumbered ``n + 1, n + 2, ...``. Returns how many were renumbered.
        """
        return self._run(self._raise_floor, n)

    def _raise_floor(self, n: int) -> int:
        low = self._db.execute("SELECT MIN(seq) FROM pending").fetchone()[0]
        renumbered = self._renumber(n + 1) if low is not None and low <= n else 0
        if n > int(self._meta("last_seq") or 0):
            self._set_meta("last_seq", n)
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
        return len(rows)

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
                "first_pending_seq": int(low or 0),
                "last_seq": int(self._meta("last_seq") or 0),
                "acked_upto": int(self._meta("acked_upto") or 0),
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
