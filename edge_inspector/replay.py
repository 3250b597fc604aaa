"""Offline inspection of a recording: ``edge-inspector replay recording.raw``.

Replay is lossless by default (the stitcher waits for free tile slots). ``realtime=True``
feeds lines at the recorded line rate and then follows the live loss policy: strips that find
no free slot are dropped and reported as uninspected stretches.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import structlog

from .config import Station
from .errors import InputError
from .lines import LineBlock
from .pipeline import RunStats
from .recording import RecordingReader, open_recording
from .probe import Probe
from .run import InspectionRun, Publish

log = structlog.get_logger(__name__)


def station_for_recording(station: Station, reader: RecordingReader, station_given: bool, rec_path: Path) -> Station:
    """Check the recording against the station's camera; without a station file, adopt its geometry."""
    h = reader.header
    cam = station.camera
    if not station_given:
        upd = {"width": h.width, "channels": h.channels, "dtype": h.dtype, "mm_per_px": h.mm_per_px,
               "mm_per_line": h.mm_per_line}
        if h.line_rate_hz and h.line_rate_hz > 0:
            upd["line_rate_hz"] = h.line_rate_hz
        new = station.model_copy(deep=True)
        new.camera = cam.model_copy(update=upd)
        if new.tiling.tile > h.width:
            new.tiling = new.tiling.model_copy(update={"tile": h.width, "overlap": min(new.tiling.overlap, h.width // 4)})
        if h.channels != len(new.hide_detection.belt_level) and len(new.hide_detection.belt_level) != 1:
            lvl = sum(new.hide_detection.belt_level) / len(new.hide_detection.belt_level)
            new.hide_detection = new.hide_detection.model_copy(update={"belt_level": [lvl]})
        return Station.model_validate(new.model_dump())
    problems = []
    for key in ("width", "channels", "dtype"):
        if getattr(h, key) != getattr(cam, key):
            problems.append(f"{key} is {getattr(h, key)!r} in the recording but camera.{key} = {getattr(cam, key)!r} in the station file")
    if problems:
        raise InputError("; ".join(problems), path=rec_path, hint="replay with the station file it was recorded with, or without --station")
    return station


def paced(
    blocks: Iterator[LineBlock], line_rate_hz: float, on_start: Callable[[int], None] | None = None,
) -> Iterator[LineBlock]:
    """Yield blocks no faster than the recorded line rate; ``on_start(first_line)`` at line 0's time."""
    t0 = time.perf_counter()
    first: int | None = None
    for b in blocks:
        if first is None:
            first = b.first_line
            t0 = time.perf_counter()
            if on_start is not None:
                on_start(first)
        due = t0 + (b.end_line - first) / line_rate_hz
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        yield b


def replay(
    rec_path: Path,
    station: Station,
    out_dir: Path,
    *,
    station_given: bool = True,
    realtime: bool = False,
    model_path: str | None = None,
    verify_crc: bool = True,
    skip_corrupt: bool = False,
    headerless: dict[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
    plc: str | None = None,
    publish: Publish | None = None,  # events (edge_inspector/events.py), e.g. for replay --web
    probe: Probe | None = None,
) -> tuple[RunStats, dict[str, Any]]:
    """Inspect a recording; write results into ``out_dir``; return stats and the summary.

    ``plc``: "HOST:PORT" of a PLC, "sim" for a soft-PLC started for this run, or None for the
    station's ``[plc] host`` (empty: marks are planned and logged, not sent). A PLC's belt moves
    in real time, so a PLC needs ``realtime=True``.
    """
    from .calibrate import apply_calibration
    from .inference import Model

    if (plc or station.plc.host) and not realtime:
        raise InputError(
            "a PLC needs --realtime: its belt moves in real time, the replay must keep pace",
            where=f"--plc {plc or station.plc.host}", hint="add --realtime, or leave the PLC out",
        )

    hl = headerless or {}
    reader = open_recording(
        rec_path, verify_crc=verify_crc, skip_corrupt=skip_corrupt,
        on_warning=lambda w: log.warning("recording", file=str(rec_path), warning=w), **hl,
    )
    station = station_for_recording(station, reader, station_given, rec_path)
    station, threshold = apply_calibration(station, model_path)
    model = Model.for_station(station, model_path)
    first, end = reader.line_range
    total = max(1, end - first)
    run_info = {
        "command": "replay",
        "recording": str(Path(rec_path).resolve()),
        "model": str(model.path),
        "provider": model.provider,
        "realtime": realtime,
        "station": station.model_dump(mode="json"),
    }
    with InspectionRun(
        station, model, out_dir, run_info=run_info, plc=plc, live=realtime, publish=publish, probe=probe,
        source_id=f"{Path(rec_path).name}@{time.strftime('%Y%m%dT%H%M%S')}",
        progress=(lambda done: progress(done - first, total)) if progress else None,
    ) as run:
        blocks: Iterator[LineBlock] = reader.blocks()
        if realtime:  # line ``first`` is under the camera when pacing starts
            run.start(paced(blocks, station.camera.line_rate_hz, on_start=run.line_zero))
        else:
            run.start(blocks, first_line=first)
        stats = run.join()
        summary = run.finish({
            "recording": str(Path(rec_path).resolve()),
            "threshold": {**threshold, "value": model.score_threshold},
            "recording_warnings": list(reader.warnings),
        })
    return stats, summary


def format_summary(summary: dict[str, Any], out_dir: Path) -> str:
    """The closing table of ``edge-inspector replay``."""
    by = summary.get("defects_by_class", {})
    rows = [
        ("recording", Path(summary["recording"]).name),
        ("model", f"{Path(summary['model']).name} ({summary['model_kind']}) on {summary['provider']}"),
        *([("threshold", f"{summary['threshold']['value']:g} ({summary['threshold']['source']})")]
          if summary.get("threshold", {}).get("value") is not None else []),
        ("lines", f"{summary['lines']:,}   lost {summary['lines_lost']:,}"),
        ("strips / tiles", f"{summary['strips']} / {summary['tiles']}   dropped strips {summary['strips_dropped']}"),
        ("hides", f"{summary['hides']}   grades " + ", ".join(f"{k} {v}" for k, v in sorted(summary.get('grades', {}).items()))),
        ("defects", f"{summary['defects']}   off hide {summary['defects_off_hide']}"
                    f"   within edge margin {summary['defects_at_hide_edge']}"),
    ]
    rows += [(f"  {k}", str(v)) for k, v in sorted(by.items())]
    rows += [
        ("throughput", f"{summary['lines_per_s'] or 0:,.0f} lines/s   {summary['tiles_per_s'] or 0:.2f} tiles/s   ({summary['wall_s']:.2f} s)"),
        *_mark_rows(summary.get("marks")),
        ("latency p50/p99", f"{summary['latency_ms_p50']} / {summary['latency_ms_p99']} ms (strip complete -> assembled)"),
        ("results", f"{out_dir}/hides/*.json, *.png, results.sqlite, summary.json"),
    ]
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)


def _mark_rows(m: dict[str, Any] | None) -> list[tuple[str, str]]:
    """Summary rows for marks: planned, delivered, fired by the soft-PLC, placement error."""
    if not m:
        return []
    planned = m.get("planned", {})
    rows = [("marks planned", ", ".join(f"{k} {v}" for k, v in planned.items()) or "none")]
    rows.append(("  late / by cluster", f"{m.get('late', 0)} late   {m.get('defects_covered_by_cluster', 0)}"
                 " defects covered by a nearby mark"))
    if m.get("line_to_mark_ms_p50") is not None:
        rows.append(("  camera line -> mark", f"p50 {m['line_to_mark_ms_p50']} / p99 {m['line_to_mark_ms_p99']} ms"
                     " (at the line rate; the marker needs it within the marker distance)"))
    link = m.get("link")
    if link:
        rows.append(("  plc", f"{m.get('plc')}: acknowledged {link.get('marks_acked', 0)}"
                     f"   pending {link.get('pending', 0)}   reconnects {link.get('reconnects', 0)}"))
    pl = m.get("plc_log")
    if pl:
        rows.append(("  soft-plc fired", f"{pl['fired']} ("
                     + ", ".join(f"{k} {v}" for k, v in pl.get("fired_by_action", {}).items())
                     + f")   missed {pl['missed']}"))
        if pl.get("placement_error_mm_p50") is not None:
            rows.append(("  placement error", f"p50 {pl['placement_error_mm_p50']} / p95"
                         f" {pl['placement_error_mm_p95']} / max {pl['placement_error_mm_max']} mm"
                         " (fired - commanded)"))
    return rows
