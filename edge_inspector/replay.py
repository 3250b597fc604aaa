"""Offline inspection of a recording: ``edge-inspector replay recording.raw``.

Replay is lossless by default (the stitcher waits for free tile slots). ``realtime=True``
feeds lines at the recorded line rate and then follows the live loss policy: strips that find
no free slot are dropped and reported as uninspected stretches. Each replay writes into its own
folder: one holding an earlier run's results is refused unless ``overwrite`` (runfolder.py).
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
from .runfolder import FolderLock, claim_for_replay

log = structlog.get_logger(__name__)


def station_for_recording(station: Station, reader: RecordingReader, station_given: bool, rec_path: Path) -> Station:
    """The station to replay ``reader``'s recording with.

    With a station file (``station_given``): its camera must match the recording's width, channels,
    sample type and bit depth, else an InputError names both; the station's copy then takes the
    recording's ``pixel_format`` (where the bit depth of the lines comes from, see
    inference/feed.py), except for a headerless dump, which has none: the station's counts.
    Without one: the built-in defaults with the recording's geometry, built
    and validated in one go (a 1024 px mono recording gets a 1024 px tile and one belt level);
    the default ``hide_detection`` numbers are 8-bit levels and are scaled to the recording's
    bit depth (x 16 for Mono12, x 256 for 16-bit), since hide detection reads the raw samples.
    A recording the pipeline cannot take (2 or 4 channels) is refused with one line.
    """
    from pydantic import ValidationError

    from .inference.feed import sample_bits, stated_bits

    h = reader.header
    cam = station.camera
    if h.channels not in (1, 3):
        raise InputError(
            f"{h.channels} channels ({h.pixel_format or h.dtype}): the pipeline takes 1 (mono) or 3 (RGB)",
            path=rec_path, where="header key 'channels'",
            hint="convert the recording, or record with camera.channels = 1 or 3",
        )
    bits = sample_bits(h.pixel_format, h.dtype)
    if station_given:
        problems = []
        for key in ("width", "channels", "dtype"):
            if getattr(h, key) != getattr(cam, key):
                problems.append(f"{key} is {getattr(h, key)!r} in the recording but camera.{key} ="
                                f" {getattr(cam, key)!r} in the station file")
        headerless = bool(h.extra.get("headerless"))  # no pixel format of its own: the station's counts
        cam_bits = stated_bits(cam.pixel_format, cam.dtype)
        if not problems and not headerless and cam_bits is not None and cam_bits != bits:
            problems.append(f"the recording holds {h.pixel_format} ({bits}-bit) lines but camera.pixel_format ="
                            f" {cam.pixel_format!r} ({cam_bits}-bit) in the station file")
        if problems:
            raise InputError("; ".join(problems), path=rec_path,
                             hint="replay with the station file it was recorded with, or without --station")
        if h.pixel_format and h.pixel_format != cam.pixel_format and not headerless:
            return station.model_copy(update={"camera": cam.model_copy(update={"pixel_format": h.pixel_format})})
        return station
    data = station.model_dump()
    data["camera"].update(width=h.width, channels=h.channels, dtype=h.dtype, mm_per_px=h.mm_per_px,
                          mm_per_line=h.mm_per_line, pixel_format=h.pixel_format or cam.pixel_format)
    if h.line_rate_hz and h.line_rate_hz > 0:
        data["camera"]["line_rate_hz"] = h.line_rate_hz
    tiling = data["tiling"]
    if tiling["tile"] > h.width:
        tiling.update(tile=h.width, overlap=min(tiling["overlap"], h.width // 4))
    hd = data["hide_detection"]
    level = [float(v) for v in hd["belt_level"]]
    if len(level) not in (1, h.channels):
        level = [sum(level) / len(level)]
    scale = 2 ** (bits - 8)  # the defaults are 8-bit levels
    hd.update(belt_level=[v * scale for v in level], threshold=hd["threshold"] * scale)
    try:
        new = Station.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        raise InputError(f"the built-in station does not fit this recording: {err['msg']}", path=rec_path,
                         where=".".join(map(str, err["loc"])) or None,
                         hint="give a station file with --station") from None
    new._path = station._path
    return new


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
    overwrite: bool = False,
    publish: Publish | None = None,  # events (edge_inspector/events.py), e.g. for replay --web
    probe: Probe | None = None,
) -> tuple[RunStats, dict[str, Any]]:
    """Inspect a recording; write results into ``out_dir``; return stats and the summary.

    ``out_dir`` must not hold an earlier run's results (InputError), unless ``overwrite``: then
    they are removed first. Another run writing there is refused as well.

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
    with FolderLock(Path(out_dir)):  # held until the run is closed: nobody else writes here meanwhile
        claim_for_replay(Path(out_dir), overwrite)
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
        ("strips / tiles", f"{summary['strips']} / {summary['tiles']}   dropped strips {summary['strips_dropped']}"
         + (f"   model ran on {summary['tiles_run']}, bare belt skipped {summary['tiles_skipped']}"
            if summary.get("tiles_skipped") else "")),
        *([("model server", "{url}: {f} strips uninspected (server down or slow), {c} failed calls, {r} reconnects"
             " ({a} attempts)".format(f=summary.get("strips_model_failed", 0), c=ms["failed_calls"],
                                       r=ms["reconnects"], a=ms["reconnect_attempts"], url=ms["url"]))]
          if (ms := summary.get("model_server")) else []),
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
    if m.get("not_fired_total") or m.get("earlier_run_closed"):  # docs/marking.md, "Belt frames"
        rows.append(("  NOT FIRED", f"{m.get('not_fired_total', 0)} ("
                     + ", ".join(f"{k} {v}" for k, v in m.get("not_fired", {}).items()) + ")"
                     + "".join(f"   earlier run's {k} {v}" for k, v in m.get("earlier_run_closed", {}).items())))
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
