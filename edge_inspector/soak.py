"""``edge-inspector soak``: a long live run against the soft-PLC, as a benchmark (docs/performance.md).

The live station (``run``: camera -> pipeline -> marks) with ``--plc sim`` for ``--seconds``
(at least 5 minutes for the figures in docs/performance.md), sampling the resident memory of
the inspector and of its soft-PLC child every ``--sample-s``. The report: marks planned, fired,
missed, late and not fired (by reason), placement error p50/p95/max (fired - commanded, from the
soft-PLC's log), PLC link reconnects and errors, and memory over time with its growth per
minute. It is a benchmark command, not a test: nothing is asserted, the figures are printed and
written to ``OUT/soak.json``::

    edge-inspector soak --station configs/stations/viky-sim.toml --seconds 300 --out out/soak
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from .config import Station
from .probe import Probe

_PAGE_KB = 4


def rss_mb(pid: int | str = "self") -> float | None:
    """Resident memory of process ``pid`` (MB, from /proc); None when it is gone or unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def _growth_mb_per_min(series: list[tuple[float, float | None]]) -> float | None:
    """Least-squares slope of memory over time, after the first fifth (start-up) of the run."""
    pts = [(t, m) for t, m in series if m is not None]
    pts = pts[len(pts) // 5 :]
    if len(pts) < 3:
        return None
    n = len(pts)
    mt, mm = sum(t for t, _ in pts) / n, sum(m for _, m in pts) / n
    den = sum((t - mt) ** 2 for t, _ in pts)
    return round(60 * sum((t - mt) * (m - mm) for t, m in pts) / den, 3) if den else None


def soak(station: Station, out_dir: Path, *, seconds: float, sample_s: float = 10.0,
         model_path: str | None = None) -> dict[str, Any]:
    """The live run with a soft-PLC for ``seconds``; the report (also written to ``out_dir/soak.json``)."""
    from .live import run_live

    probe = Probe()
    stop = threading.Event()
    result: dict[str, Any] = {}
    samples: list[dict[str, Any]] = []

    def go() -> None:
        try:
            result["stats"], result["summary"] = run_live(station, out_dir, seconds=seconds, model_path=model_path,
                                                           stop=stop, plc="sim", probe=probe)
        except BaseException as e:  # noqa: BLE001 - reported by the caller
            result["error"] = e

    t0 = time.monotonic()
    runner = threading.Thread(target=go, name="soak-run", daemon=True)
    runner.start()
    try:
        while runner.is_alive():
            d = probe.dispatch
            sim = d.sim if d is not None else None
            marks = probe.marks().get("marks", {})
            samples.append({
                "t_s": round(time.monotonic() - t0, 1),
                "inspector_rss_mb": rss_mb(),
                "softplc_rss_mb": rss_mb(sim.proc.pid) if sim is not None else None,
                "lines": probe.stitch.lines_in,
                "marks_planned": sum(marks.get("planned", {}).values()),
            })
            runner.join(sample_s)
    except KeyboardInterrupt:
        stop.set()
        runner.join()
    if "error" in result:
        raise result["error"]
    return _report(station, out_dir, seconds, result["summary"], samples)


def _report(station: Station, out_dir: Path, seconds: float, summary: dict[str, Any],
            samples: list[dict[str, Any]]) -> dict[str, Any]:
    m = summary["marks"]
    pl, link = m.get("plc_log", {}), m.get("link", {})
    rep = {
        "station": station.station.name,
        "seconds": seconds,
        "lines": summary["lines"],
        "lines_lost": summary["lines_lost"],
        "strips_dropped": summary["strips_dropped"],
        "hides": summary["hides"],
        "marks_planned": sum(m.get("planned", {}).values()),
        "marks_per_s": round(sum(m.get("planned", {}).values()) / seconds, 1) if seconds else None,
        "planned_by_action": m.get("planned", {}),
        "fired": pl.get("fired"),
        "missed_by_plc": pl.get("missed"),
        "late": m.get("late"),
        "not_fired": m.get("not_fired", {}),
        "not_fired_total": m.get("not_fired_total", 0),
        "placement_error_mm_p50": pl.get("placement_error_mm_p50"),
        "placement_error_mm_p95": pl.get("placement_error_mm_p95"),
        "placement_error_mm_max": pl.get("placement_error_mm_max"),
        "plc_reconnects": link.get("reconnects"),
        "plc_errors": link.get("errors", {}),
        "line_to_mark_ms_p99": m.get("line_to_mark_ms_p99"),
        "inspector_rss_mb_growth_per_min": _growth_mb_per_min([(s["t_s"], s["inspector_rss_mb"]) for s in samples]),
        "softplc_rss_mb_growth_per_min": _growth_mb_per_min([(s["t_s"], s["softplc_rss_mb"]) for s in samples]),
        "memory": samples,
    }
    (Path(out_dir) / "soak.json").write_text(json.dumps(rep, indent=2) + "\n")
    return rep


def format_report(rep: dict[str, Any]) -> str:
    """The soak figures as a table, memory every sample."""
    rows = [
        ("station / seconds", f"{rep['station']} / {rep['seconds']:g}"),
        ("lines", f"{rep['lines']:,}   lost {rep['lines_lost']:,}   strips dropped {rep['strips_dropped']}"),
        ("marks planned", f"{rep['marks_planned']:,} ({rep['marks_per_s']}/s)   "
                          + ", ".join(f"{k} {v}" for k, v in rep["planned_by_action"].items())),
        ("fired / missed / late", f"{rep['fired']} / {rep['missed_by_plc']} / {rep['late']}"),
        ("not fired", f"{rep['not_fired_total']} " + json.dumps(rep["not_fired"])),
        ("placement error", f"p50 {rep['placement_error_mm_p50']} / p95 {rep['placement_error_mm_p95']}"
                            f" / max {rep['placement_error_mm_max']} mm (fired - commanded)"),
        ("plc", f"reconnects {rep['plc_reconnects']}   errors {json.dumps(rep['plc_errors'])}"),
        ("memory growth", f"inspector {rep['inspector_rss_mb_growth_per_min']} MB/min,"
                          f" soft-PLC {rep['softplc_rss_mb_growth_per_min']} MB/min"),
    ]
    w = max(len(k) for k, _ in rows)
    out = [f"{k:<{w}}  {v}" for k, v in rows]
    out.append("memory (t s: inspector MB, soft-PLC MB):  " + "  ".join(
        f"{s['t_s']:.0f}: {s['inspector_rss_mb']}, {s['softplc_rss_mb']}" for s in rep["memory"]))
    return "\n".join(out)
