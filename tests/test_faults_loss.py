"""Fault injection, lost data and run folders (issue "marks never land in the wrong place and nothing
is lost silently", cases 4, 6, 13 and 16): every lost or skipped line is an uninspected region of
the hide it belongs to, every hide is announced, each run writes into its own place, and a recording
that cannot be read ends at once with one line."""

from __future__ import annotations

import json
import os
import sqlite3
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edge_inspector.assemble import Assembler
from edge_inspector.belt import BeltGeometry
from edge_inspector.cli import main
from edge_inspector.config import parse_station
from edge_inspector.lines import LineBlock
from edge_inspector.pipeline import Pipeline
from edge_inspector.recording import open_recording
from edge_inspector.stream import LineSamples, Uninspected

REPO = Path(__file__).resolve().parents[1]
W = 1000


# -------------------------------------------------------------------------------- helpers


def _station():
    return parse_station({
        "camera": {"width": W, "channels": 1, "mm_per_px": 0.5, "mm_per_line": 0.25, "line_rate_hz": 4000},
        "tiling": {"tile": 256, "overlap": 32},
        "hide_detection": {"belt_level": [40], "threshold": 28, "subsample": 4, "min_hide_lines": 16,
                           "gap_lines": 16, "min_px_per_line": 4},
        "belt": {"marker_distance_mm": 5000},
    })


def _rows(n_rows: int, cols: tuple[int, int], step: int = 4) -> np.ndarray:
    """Sampled rows of belt (level 40) with hide (150) in sample columns cols."""
    s = np.full((n_rows, W // step, 1), 40, np.uint8)
    s[:, cols[0]:cols[1]] = 150
    return s


class _Listener:
    def __init__(self) -> None:
        self.starts: list[tuple[int, int]] = []

    def defects(self, found, now_line) -> None:  # noqa: ANN001 - AssemblyListener
        pass

    def hide_start(self, hide_id: int, first_line: int, now_line: float) -> None:
        self.starts.append((hide_id, first_line))

    def uninspected(self, u, now_line) -> None:  # noqa: ANN001
        pass


def _assemble(messages):
    st = _station()
    hides = []
    listener = _Listener()
    asm = Assembler(st, BeltGeometry(0.5, 0.25, W), ["dark"], hides.append, listener=listener)
    for m in messages:
        asm.handle(m)
    asm.finish()
    return hides, listener


def _block_offsets(rec: Path) -> list[int]:
    r = open_recording(rec)
    offs = [e.offset for e in r._entries]
    r.close()
    return offs


def _patched(rec: Path, out: Path, patches: list[tuple[int, bytes]]) -> Path:
    data = bytearray(rec.read_bytes())
    for off, b in patches:
        data[off:off + len(b)] = b
    out.write_bytes(bytes(data))
    return out


def _replay(rec: Path, st: Path, out: Path, *extra: str) -> tuple[dict, list[dict]]:
    assert main(["replay", str(rec), "--station", str(st), "--out", str(out), *extra]) == 0
    summary = json.loads((out / "summary.json").read_text())
    hides = [json.loads(p.read_text()) for p in sorted((out / "hides").glob("hide-*.json"))]
    return summary, hides


def _regions(h: dict) -> list[tuple[int, int, str]]:
    return [(u["first_line"], u["end_line"], u["reason"]) for u in h["uninspected"]]


# -------------------------------------------------------------------------------- case 6


def test_skip_corrupt_blocks_become_uninspected_regions_of_their_hides(recording, tmp_path: Path) -> None:
    """Blocks of 512 lines; hide 1 starts at about line 493 (its tip before block 1), hide 2 at
    about 2580, inside block 5. CRC errors in blocks 1, 2 and 5: neither hide may be recorded as
    fully inspected from the first line after the loss."""
    rec, st, truth = recording
    offs = _block_offsets(rec)
    data = rec.read_bytes()
    bad = _patched(rec, tmp_path / "crc.raw",
                   [(offs[b] + 64 + 100, bytes([data[offs[b] + 64 + 100] ^ 0xFF])) for b in (1, 2, 5)])
    summary, hides = _replay(bad, st, tmp_path / "run", "--skip-corrupt")
    assert summary["lines_lost"] == 3 * 512 and summary["hides"] == 2
    gt1, gt2 = truth["hides"]
    h1, h2 = hides
    # the extent covers the true start, the loss is a region of the hide, the fraction says so
    assert h1["first_line"] <= gt1["first_line"] + 8 and _regions(h1) == [(512, 1536, "lost")]
    assert h2["first_line"] <= gt2["first_line"] and _regions(h2) == [(2560, 3072, "lost")]
    for h, lost in ((h1, 1024), (h2, 512)):
        n = h["last_line"] - h["first_line"] + 1
        assert h["inspected_fraction"] == pytest.approx(1 - lost / n, abs=1e-4)
        assert h["grade"] == "U"  # below grading.min_inspected
    # the area counts the lost rows (the mean of their edges), not only the rows seen after them
    clean = {h["hide_id"]: h for h in _replay(rec, st, tmp_path / "clean")[1]}
    assert h2["area_m2"] > 0.85 * clean[2]["area_m2"]  # the old outcome: 0.69 (rows after 3072 only)
    assert h1["area_m2"] > 0.7 * clean[1]["area_m2"]  # the old outcome: 0.34


def test_bad_block_magic_with_skip_corrupt_loses_only_that_block(recording, tmp_path: Path) -> None:
    rec, st, truth = recording
    offs = _block_offsets(rec)
    bad = _patched(rec, tmp_path / "magic.raw", [(offs[5], b"XXXX")])
    summary, hides = _replay(bad, st, tmp_path / "run", "--skip-corrupt")
    assert summary["lines_lost"] == 512  # was 0: the rest of the file silently gone
    assert summary["lines"] == truth["n_lines"] - 512 and summary["hides"] == 2
    assert _regions(hides[1]) == [(2560, 3072, "lost")] and hides[1]["inspected_fraction"] < 1
    assert any(f"next block header at byte {offs[6]}" in w for w in summary["recording_warnings"])


def test_a_stored_lost_before_is_counted_and_is_a_region_of_the_hide(recording, tmp_path: Path) -> None:
    rec, st, _ = recording
    offs = _block_offsets(rec)
    # block 2 (lines 1024..1535, inside hide 1) says 100 lines were lost right before it
    bad = _patched(rec, tmp_path / "lost.raw", [(offs[2] + 32, struct.pack("<Q", 100))])
    r = open_recording(bad)
    assert r.lost_lines == 100
    r.close()
    summary, hides = _replay(bad, st, tmp_path / "run")
    assert summary["lines_lost"] == 100  # was 0
    h1 = hides[0]
    assert _regions(h1) == [(924, 1024, "lost")]
    assert h1["inspected_fraction"] == pytest.approx(1 - 100 / (h1["last_line"] - h1["first_line"] + 1), abs=1e-4)


def test_a_first_block_lost_before_is_counted_and_a_hide_seen_at_once_starts_in_it() -> None:
    """The stream's first block says 40 lines were lost before it, and a hide is under the camera."""
    st = _station()
    hides = []
    listener = _Listener()
    asm = Assembler(st, BeltGeometry(0.5, 0.25, W), ["dark"], hides.append, listener=listener)
    from edge_inspector.stitch import Stitcher, TileRing
    from edge_inspector.tile import TileGrid

    ring = TileRing(4, lines=256, width=W, channels=1, dtype=np.uint8)
    msgs = []
    stitcher = Stitcher(TileGrid(W, 256, 32), 1, np.uint8, ring, msgs.append, sample_step=4)
    lines = np.full((400, W, 1), 40, np.uint8)
    lines[:200, 200:600] = 150  # hide from the first line received to line 300
    stitcher.push(LineBlock(lines, 100, lost_before=40))
    stitcher.flush()
    assert stitcher.lines_lost == 40
    for m in msgs:
        if not hasattr(m, "pixels"):
            asm.handle(m)
    asm.finish()
    assert len(hides) == 1
    h = hides[0]
    assert h.first_line <= 60 and [(u.first_line, u.end_line) for u in h.uninspected] == [(60, 100)]
    assert h.inspected_fraction < 1 and listener.starts == [(1, h.first_line)]


def test_a_hide_under_the_camera_when_the_stream_ends_in_lost_lines_reaches_over_them() -> None:
    hides, _ = _assemble([LineSamples(0, 4, _rows(25, (0, 0))), LineSamples(100, 4, _rows(50, (50, 150))),
                          Uninspected(300, 500, "lost")])
    assert len(hides) == 1
    h = hides[0]
    assert h.first_line == 100 and h.last_line >= 499
    assert [(u.first_line, u.end_line) for u in h.uninspected] == [(300, 500)]
    assert h.inspected_fraction == pytest.approx(1 - 200 / h.n_lines)


def test_a_hide_continuing_over_lost_lines_counts_their_area_from_both_edges() -> None:
    # hide 100 sample columns wide before the loss, 50 after: of the 25 lost rows the first 13 count
    # as the row before, the other 12 as the row after
    hides, _ = _assemble([LineSamples(0, 4, _rows(25, (0, 0))), LineSamples(100, 4, _rows(50, (50, 150))),
                          Uninspected(300, 400, "lost"), LineSamples(400, 4, _rows(50, (50, 100))),
                          LineSamples(600, 4, _rows(25, (0, 0)))])
    assert len(hides) == 1
    h = hides[0]
    sample_mm2 = 4 * 0.5 * 4 * 0.25
    expect = (50 * 100 + 13 * 100 + 12 * 50 + 50 * 50) * sample_mm2 / 1e6
    assert h.area_m2 == pytest.approx(expect, rel=0.02)
    assert h.inspected_fraction == pytest.approx(1 - 100 / h.n_lines)


# -------------------------------------------------------------------------------- case 4


def test_hides_that_open_and_close_within_one_block_each_get_a_hide_start() -> None:
    # one LineSamples message (one block) holding two short hides, each confirmed and ended in it
    rows = np.concatenate([_rows(10, (0, 0)), _rows(8, (40, 90)), _rows(10, (0, 0)), _rows(6, (20, 60)),
                           _rows(10, (0, 0))])
    hides, listener = _assemble([LineSamples(0, 4, rows)])
    assert [h.hide_id for h in hides] == [1, 2]
    assert listener.starts == [(1, hides[0].first_line), (2, hides[1].first_line)]  # was: none


# -------------------------------------------------------------------------------- case 16


def test_a_fifo_as_recording_is_refused_up_front(tmp_path: Path) -> None:
    fifo = tmp_path / "rec.raw"
    os.mkfifo(fifo)
    # a subprocess, so that a regression blocks there and not the test session
    p = subprocess.run([sys.executable, "-m", "edge_inspector.cli", "replay", str(fifo), "--out",
                        str(tmp_path / "o")], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and str(fifo) in lines[0] and "FIFO" in lines[0]
    assert not (tmp_path / "o").exists()


def test_a_failing_source_ends_every_pipeline_thread_before_join_returns() -> None:
    """A CRC error in the source used to leave the inference thread waiting on its queue, and the
    assembler waited out a 10 s join for it (13 s to exit)."""

    def blocks():
        yield LineBlock(np.full((300, W, 1), 40, np.uint8), 0)
        raise RuntimeError("CRC-32 mismatch")

    pipeline = Pipeline(_station(), None, lambda h: None)
    pipeline.start(blocks())
    with pytest.raises(RuntimeError, match="CRC"):
        pipeline.join()
    assert [t.name for t in pipeline._threads if t.is_alive()] == []


# -------------------------------------------------------------------------------- case 13


def _runs(out: Path) -> list[tuple[int, str]]:
    con = sqlite3.connect(out / "results.sqlite")
    try:
        return con.execute("SELECT run_id, status FROM runs ORDER BY run_id").fetchall()
    finally:
        con.close()


def test_a_second_replay_into_a_used_folder_is_refused_and_overwrite_replaces_it(recording, tmp_path: Path,
                                                                                  capsys) -> None:
    rec, st, _ = recording
    out = tmp_path / "run"
    first, _ = _replay(rec, st, out)
    capsys.readouterr()
    assert main(["replay", str(rec), "--station", str(st), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(out) in err[0] and "earlier run" in err[0] and "--overwrite" in err[0]
    assert json.loads((out / "summary.json").read_text()) == first and _runs(out) == [(1, "finished")]
    # --overwrite: the earlier results go, the new run stands alone (no hide files of two runs)
    (out / "hides" / "hide-0099.json").write_text("{}")  # a stale file of some earlier run
    second, hides = _replay(rec, st, out, "--overwrite")
    assert _runs(out) == [(1, "finished")] and second["run_id"] == 1
    assert [h["hide_id"] for h in hides] == [1, 2]


def test_a_folder_another_run_writes_into_is_refused(recording, tmp_path: Path, capsys) -> None:
    rec, st, _ = recording
    out = tmp_path / "busy"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from edge_inspector.runfolder import "
         "FolderLock; FolderLock(Path(sys.argv[1])).acquire(); print('held', flush=True); time.sleep(120)", str(out)],
        stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert main(["replay", str(rec), "--station", str(st), "--out", str(out), "--overwrite"]) == 2
        err = capsys.readouterr().err
        assert f"pid {holder.pid}" in err and str(out) in err
        assert not (out / "results.sqlite").exists()
    finally:
        holder.kill()
        holder.wait()
    # the holder died (as with SIGKILL): the kernel let its lock go, the folder is free
    _replay(rec, st, out)


def test_a_killed_live_run_is_marked_crashed_and_the_restart_writes_its_own_files(tmp_path: Path) -> None:
    """The systemd unit restarts `edge-inspector run` into the same state folder after a crash."""
    station = tmp_path / "viky.toml"
    station.write_text((REPO / "configs" / "stations" / "viky-sim.toml").read_text() + "\n[events]\nenabled = false\n")
    out = tmp_path / "state"
    cmd = [sys.executable, "-m", "edge_inspector.cli", "run", "--station", str(station), "--out", str(out)]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    try:
        for _ in range(1200):  # until the first hide is written (a hang guard, not a time limit)
            if list((out / "hides").glob("hide-*.json")) or first.poll() is not None:
                break
            time.sleep(0.1)
        assert first.poll() is None and list((out / "hides").glob("hide-*.json"))
        first.kill()  # SIGKILL: no drain, no summary, the run row stays "running"
        first.wait()
    finally:
        first.kill()
    assert _runs(out) == [(1, "running")] and not (out / "summary.json").exists()
    killed_hides = sorted(p.name for p in (out / "hides").glob("hide-*.json"))
    r = subprocess.run([*cmd, "--seconds", "1.5"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert _runs(out) == [(1, "crashed"), (2, "finished")]
    # the killed run's files are kept in their own place; the folder holds only the new run's
    kept = out / "runs" / "run-0001"
    assert sorted(p.name for p in (kept / "hides").glob("hide-*.json")) == killed_hides
    assert json.loads((out / "summary.json").read_text())["run_id"] == 2
    assert {json.loads(p.read_text())["run_id"] for p in (out / "hides").glob("hide-*.json")} <= {2}
    con = sqlite3.connect(out / "results.sqlite")
    paths = con.execute("SELECT run_id, json_path FROM hides").fetchall()
    con.close()
    assert all((out / p).is_file() for _, p in paths)
    assert all(p.startswith("runs/run-0001/") == (rid == 1) for rid, p in paths)
