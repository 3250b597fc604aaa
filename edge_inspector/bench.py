"""``edge-inspector bench``: the throughput figures of docs/architecture.md, as JSON.

The source is a pool of synthetic 8K lines held in memory and replayed with rising line
indices, so the figure measures the pipeline (stitching into the tile ring, hide tracking,
inference, assembly), not disk or the generator. ``--no-model`` skips inference.

Two ratios make the figures comparable across machines and loads (docs/performance.md):

- ``headroom``: end-to-end tiles/s over the tiles/s the station's line rate needs
  (``camera.line_rate_hz / (tile - overlap)`` strips per second x tile columns). Below 1 the
  station cannot hold its line; the demo asks for >= 1.5. The model runs only on tiles that hold
  hide (``tiling.skip_belt_tiles``, ``tiles_run`` / ``tiles_skipped``), so this is the headroom for
  the synthetic hides' coverage of the belt; ``model_only_headroom`` is the worst case, a belt
  covered with hide (every tile through the model).
- ``copy_ratio`` (``--no-model``): pipeline lines/s over a plain copy of the same blocks into a
  buffer the size of the tile ring, measured in the same run just before it.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from .config import Station
from .lines import LineBlock
from .pipeline import RunStats, TileModel
from .run import InspectionRun


def line_pool(station: Station, n_lines: int, seed: int = 3) -> np.ndarray:
    """``n_lines`` of a synthetic hide on the belt at the station's width and channels."""
    from .synth import SynthConfig, generate_blocks

    cam = station.camera
    cfg = SynthConfig(hides=1, seed=seed, width=cam.width, channels=cam.channels,
                      mm_per_px=cam.mm_per_px, mm_per_line=cam.mm_per_line, block_lines=512)
    pool = np.empty((n_lines, cam.width, cam.channels), np.dtype(cam.dtype))  # filled in place: no 2x peak
    got = 0
    for b in generate_blocks(cfg):
        k = min(b.n_lines, n_lines - got)
        rows = np.asarray(b.lines[:k]).reshape(k, cam.width, cam.channels)
        if cam.dtype == "uint16":
            pool[got : got + k] = rows.astype(np.uint16) << 8
        else:
            pool[got : got + k] = rows
        got += k
        if got >= n_lines:
            break
    return pool[:got]


def needed_tiles_per_s(station: Station) -> float:
    """Tiles per second the station's line rate produces: strips/s x tile columns."""
    from .tile import column_starts

    tl = station.tiling
    n_cols = len(column_starts(station.camera.width, tl.tile, tl.overlap))
    return station.camera.line_rate_hz / (tl.tile - tl.overlap) * n_cols


def plain_copy_lines_per_s(station: Station, pool: np.ndarray, lines: int, block: int) -> float:
    """Lines/s of a plain copy of the same blocks (``np.copyto``, one block after the other) into a
    destination the size of the tile ring, pages mapped beforehand: the bound for the stitcher."""
    tl = station.tiling
    # the ring: ring_slots strips of tile whole lines (stitch.TileRing)
    dst = np.empty((max(block, tl.ring_slots * tl.tile),) + pool.shape[1:], pool.dtype)
    dst.fill(0)
    row = 0
    t0 = time.perf_counter()
    for b in cycled(pool, lines, block):
        k = b.n_lines
        if row + k > len(dst):
            row = 0
        np.copyto(dst[row : row + k], b.lines)
        row += k
    return lines / (time.perf_counter() - t0)


def summary_line(res: dict[str, Any]) -> str:
    """The bench result in one line, for a person (the JSON is for scripts)."""
    head = res.get("headroom")
    verdict = "" if head is None else (" holds the line" if head >= 1.5 else
                                       " holds the line, little margin (< 1.5)" if head >= 1.0 else
                                       " CANNOT hold the line")
    parts = [f"bench {res['mode']}: {res['lines_per_s']:,.0f} lines/s, {res['tiles_per_s']} tiles/s end to end",
             f"line rate needs {res['needed_tiles_per_s']} tiles/s: headroom {head}{verdict}"]
    if "copy_ratio" in res:
        parts.append(f"{res['copy_ratio']} of a plain copy ({res['plain_copy_lines_per_s']:,.0f} lines/s)")
    if res.get("tiles_skipped"):
        parts.append(f"the model ran on {res['tiles_run']} of {res['tiles_run'] + res['tiles_skipped']} tiles"
                     " (the rest bare belt: tiling.skip_belt_tiles)")
    if "model_only_tiles_per_s" in res:
        parts.append(f"model alone {res['model_only_tiles_per_s']} tiles/s"
                     f" (headroom {res.get('model_only_headroom')} with hide on every tile)")
    parts.append(f"peak RSS {res['peak_rss_mb']:.0f} MB, {res['strips_dropped']} strips dropped,"
                 f" provider {res['provider']}"
                 + (f", {res['inference_workers']} strips side by side ([model] cpu_streams)"
                    if res.get("inference_workers", 1) > 1 else ""))
    return "; ".join(parts)


def cycled(pool: np.ndarray, total: int, block: int) -> Iterator[LineBlock]:
    line = 0
    n = len(pool)
    while line < total:
        k = min(block, total - line)
        start = line % n
        if start + k > n:
            k = n - start
        yield LineBlock(pool[start : start + k], first_line=line, encoder=line, timestamp_ns=0)
        line += k


def measured_run(station: Station, model: TileModel | None, blocks: Iterable[LineBlock]) -> RunStats:
    """An inspection run without results or marks: the pipeline's figures."""
    with InspectionRun(station, model) as run:
        run.start(blocks)
        return run.join()


def bench(station: Station, *, lines: int, no_model: bool, model_path: str | None = None,
          pool_lines: int = 8192, block_lines: int | None = None) -> dict[str, Any]:
    pool = line_pool(station, pool_lines)
    block = block_lines or station.source.block_lines
    out: dict[str, Any] = {
        "mode": "no-model" if no_model else "model",
        "width": station.camera.width,
        "channels": station.camera.channels,
        "tile": station.tiling.tile,
        "overlap": station.tiling.overlap,
        "block_lines": block,
        "cpu_count": os.cpu_count(),
        "line_rate_hz": station.camera.line_rate_hz,
        "needed_tiles_per_s": round(needed_tiles_per_s(station), 2),
    }
    model = None
    if not no_model:
        from .inference import Model

        mcfg = station.model if model_path is None else station.model.model_copy(update={"path": model_path})
        model = Model.load(mcfg, resolve=station.resolve)
        model.fit_station(station)  # tile, channels, sample type and bit depth of the camera
        from .inference.model import station_batch

        model.warmup(*station_batch(station, model.provider, model.fixed_batch))
        # The model alone on one strip's worth of tiles, repeated.
        t = station.tiling.tile
        from .tile import column_starts

        n_cols = len(column_starts(station.camera.width, t, station.tiling.overlap))
        batch = np.ascontiguousarray(
            np.stack([pool[:t, x : x + t] for x in column_starts(station.camera.width, t, station.tiling.overlap)])
        ) if len(pool) >= t else None
        if batch is not None:
            step = station_batch(station, model.provider, model.fixed_batch)[1]  # as the pipeline calls it

            def strip() -> None:
                for i in range(0, n_cols, step):
                    model.infer(batch[i : i + step])

            strip()
            # as many strips side by side as the pipeline runs (Model.parallel: OpenVINO CPU streams)
            reps, t0 = [0] * model.parallel, time.perf_counter()

            def worker(k: int) -> None:
                while time.perf_counter() - t0 < 3.0 or reps[k] < 2:
                    strip()
                    reps[k] += 1

            threads = [threading.Thread(target=worker, args=(k,)) for k in range(model.parallel)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            dt = time.perf_counter() - t0
            out["model_only_tiles_per_s"] = round(sum(reps) * n_cols / dt, 2)
            out["model_parallel"] = model.parallel
        batch = None  # the strip of the model-alone figure (63 MB for 8K RGB) is not part of a run
        out["model"] = str(model.path)
        out["batch"] = station_batch(station, model.provider, model.fixed_batch)[1]
    # warm-up run (numba JIT, caches), then the measured run
    measured_run(station, model, cycled(pool, min(lines, 4 * station.tiling.tile), block))
    gc.collect()  # the warm-up run's ring goes before the measured run builds its own
    if no_model:
        plain_copy_lines_per_s(station, pool, min(lines, len(pool)), block)  # warm (pages, caches)
        out["plain_copy_lines_per_s"] = round(plain_copy_lines_per_s(station, pool, lines, block), 1)
    stats = measured_run(station, model, cycled(pool, lines, block))
    d = stats.as_dict()
    out.update({k: d[k] for k in (
        "lines", "tiles", "wall_s", "cpu_s", "lines_per_s", "tiles_per_s", "stitch_lines_per_s",
        "infer_ms_per_strip_p50", "infer_ms_per_strip_p99", "latency_ms_p50", "latency_ms_p99",
        "peak_rss_mb", "provider", "strips_dropped", "lines_lost", "hides", "tiles_run", "tiles_skipped",
        "inference_workers")})
    out["cpu_cores_used"] = round(stats.cpu_s / stats.wall_s, 2) if stats.wall_s else None
    tps = out["tiles_per_s"]
    out["headroom"] = round(tps / out["needed_tiles_per_s"], 2) if tps else None
    if "model_only_tiles_per_s" in out:
        out["model_only_headroom"] = round(out["model_only_tiles_per_s"] / out["needed_tiles_per_s"], 2)
    if no_model:
        lps = out["lines_per_s"]
        out["copy_ratio"] = round(lps / out["plain_copy_lines_per_s"], 3) if lps else None
    return out
