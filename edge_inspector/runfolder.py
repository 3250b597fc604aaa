"""Each run writes into its own place: the folder lock, the replay rule and the archive of earlier runs.

Rules (docs/architecture.md section 10; file names in runfiles.py):

- One run at a time writes into a folder: ``FolderLock`` holds ``flock(2)`` on ``.lock`` in it
  while the run is open (``store.ResultsWriter`` takes it; the kernel lets it go when the process
  dies, SIGKILL included). A second process gets one line naming the folder and the holder's pid.
- A run found ``running`` in ``results.sqlite`` while nobody holds the lock did not end: the next
  run that opens the folder marks it ``crashed`` (``store.mark_crashed_runs``).
- ``replay`` refuses a folder that holds an earlier run's results unless ``--overwrite``, which
  removes them first (``claim_for_replay``).
- The live run (``edge-inspector run``, restarted by systemd into the same state folder) and any
  other writer keep ``results.sqlite`` (every run's rows) and move the earlier run's own files
  (``summary.json``, ``hides/``, ``marks.jsonl``, ``plc.jsonl``) into ``runs/run-NNNN/`` before
  writing (``archive_earlier_run``), so hide files of two runs never mix.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import threading
from pathlib import Path
from types import TracebackType

import structlog

from .errors import InputError
from .runfiles import (
    ARCHIVE_DIR, DB_NAME, HIDES_DIR, LOCK_NAME, MARKS_LOG, PLC_LOG, PLC_STATE, SIM_OUTBOX, SUMMARY_NAME, run_id_of_files,
)

log = structlog.get_logger(__name__)

RUN_OWN_FILES = (SUMMARY_NAME, HIDES_DIR, MARKS_LOG, PLC_LOG)
"""What belongs to one run alone (moved to runs/run-NNNN/ when the next run starts)."""
RESULT_FILES = (DB_NAME, *RUN_OWN_FILES, PLC_STATE, SIM_OUTBOX, ARCHIVE_DIR)
"""Everything a run leaves in its folder (what makes a folder used, and what --overwrite removes)."""

_held: dict[str, list[int]] = {}  # lock file -> [fd, count]: a process may take its own lock again
_guard = threading.Lock()


class FolderLock:
    """Exclusive ``flock`` on ``folder/.lock`` while in use; re-entrant within one process."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._taken = False

    def acquire(self) -> None:
        if self._taken:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"cannot create the output folder: {e.strerror}", path=self.folder) from None
        key = str(self.path.resolve())
        with _guard:
            if key in _held:
                _held[key][1] += 1
                self._taken = True
                return
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise InputError(f"cannot create the run lock: {e.strerror}", path=self.path) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise InputError(f"another edge-inspector run (pid {holder}) writes into this folder",
                                     path=self.folder, hint="wait for it to end, or choose another --out folder") from None
                raise InputError(f"cannot lock the run folder: {e.strerror}", path=self.path,
                                 hint="results need a local file system with flock(2)") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            _held[key] = [fd, 1]
            self._taken = True

    def release(self) -> None:
        if not self._taken:
            return
        self._taken = False
        key = str(self.path.resolve())
        with _guard:
            entry = _held.get(key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] == 0:
                del _held[key]
                fcntl.flock(entry[0], fcntl.LOCK_UN)
                os.close(entry[0])

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def earlier_results(folder: Path) -> list[str]:
    """Names of the results an earlier run left in ``folder`` (empty: the folder is unused)."""
    folder = Path(folder)
    found = []
    for name in RESULT_FILES:
        p = folder / name
        if p.is_dir():
            if any(p.iterdir()):
                found.append(f"{name}/")
        elif p.exists():
            found.append(name)
    return found


def claim_for_replay(folder: Path, overwrite: bool) -> None:
    """A replay's folder must be unused: refuse one with earlier results, or (``overwrite``) remove them.

    Call with the folder's lock held. A run left ``running`` is marked crashed first.
    """
    from .store import mark_crashed_runs

    folder = Path(folder)
    try:
        mark_crashed_runs(folder)
    except InputError:  # an unreadable results.sqlite: refused or removed below like any result
        pass
    found = earlier_results(folder)
    if not found:
        return
    if not overwrite:
        raise InputError(f"holds the results of an earlier run ({', '.join(found)})", path=folder,
                         hint="choose a new --out folder, or add --overwrite to replace them")
    for name in RESULT_FILES:
        p = folder / name
        if p.is_dir():
            shutil.rmtree(p)
        for q in (p, Path(f"{p}-wal"), Path(f"{p}-shm")):
            if q.is_file() or q.is_symlink():
                q.unlink()
    log.warning("earlier results removed (--overwrite)", out_dir=str(folder), removed=found)


def archive_earlier_run(folder: Path) -> tuple[Path, int] | None:
    """Move the earlier run's own files into ``runs/run-NNNN/`` (NNNN: its run id); (that folder,
    the run id), or None when there were none.

    Call with the folder's lock held, before the new run writes anything. ``results.sqlite`` stays:
    it keeps every run (the moved hides' file paths are updated there by the caller).
    """
    folder = Path(folder)
    present = [n for n in RUN_OWN_FILES if (folder / n).exists()
               and not ((folder / n).is_dir() and not any((folder / n).iterdir()))]
    if not present:
        return None
    run_id = run_id_of_files(folder) or 0
    base = folder / ARCHIVE_DIR / f"run-{run_id:04d}"
    dest, k = base, 1
    while dest.exists():
        k += 1
        dest = base.with_name(f"{base.name}-{k}")
    dest.mkdir(parents=True)
    for n in present:
        os.replace(folder / n, dest / n)
    log.warning("files of the earlier run moved; this run writes its own", out_dir=str(folder),
                earlier_run=run_id, moved_to=str(dest), files=present)
    return dest, run_id
