"""``edge-inspector bench``: the throughput figures of docs/architecture.md, as JSON.

The source is a pool of synthetic 8K lines held in memory and replayed with rising line
indices, so the figure measures the pipeline (stitching into the tile ring, hide tracking,
inference, assembly), not disk or the generator. ``--no-model`` skips inference.
"""

from __future__ import annotations

import os
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
    rows = []
    got = 0
    for b in generate_blocks(cfg):
        rows.append(np.array(b.lines))
        got += b.n_lines
        if got >= n_lines:
            break
    pool = np.concatenate(rows)[:n_lines]
    if cam.dtype == "uint16":
        pool = pool.astype(np.uint16) << 8
    return np.ascontiguousarray(pool)


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
    }
    model = None
    if not no_model:
        from .inference import Model

        mcfg = station.model if model_path is None else station.model.model_copy(update={"path": model_path})
        model = Model.load(mcfg, resolve=station.resolve)
        model.fit_station(station)  # tile, channels, sample type and bit depth of the camera
        from .inference.model import station_batch

        model.warmup(*station_batch(station))
        # The model alone on one strip's worth of tiles, repeated.
        t = station.tiling.tile
        from .tile import column_starts

        n_cols = len(column_starts(station.camera.width, t, station.tiling.overlap))
        batch = np.ascontiguousarray(
            np.stack([pool[:t, x : x + t] for x in column_starts(station.camera.width, t, station.tiling.overlap)])
        ) if len(pool) >= t else None
        if batch is not None:
            model.infer(batch)
            reps, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < 3.0 or reps < 2:
                model.infer(batch)
                reps += 1
            dt = time.perf_counter() - t0
            out["model_only_tiles_per_s"] = round(reps * n_cols / dt, 2)
        out["model"] = str(model.path)
    # warm-up run (numba JIT, caches), then the measured run
    measured_run(station, model, cycled(pool, min(lines, 4 * station.tiling.tile), block))
    stats = measured_run(station, model, cycled(pool, lines, block))
    d = stats.as_dict()
    out.update({k: d[k] for k in (
        "lines", "tiles", "wall_s", "cpu_s", "lines_per_s", "tiles_per_s", "stitch_lines_per_s",
        "infer_ms_per_strip_p50", "infer_ms_per_strip_p99", "latency_ms_p50", "latency_ms_p99",
        "peak_rss_mb", "provider", "strips_dropped", "lines_lost", "hides")})
    out["cpu_cores_used"] = round(stats.cpu_s / stats.wall_s, 2) if stats.wall_s else None
    return out
