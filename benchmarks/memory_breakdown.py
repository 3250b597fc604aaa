"""Where the memory of `edge-inspector bench` goes: resident set after each step (docs/performance.md).

    .venv/bin/python benchmarks/memory_breakdown.py configs/stations/demo-8k.toml [auto|onnxruntime|openvino]

Prints VmRSS (now) and VmHWM (peak) after: imports, the bench's line pool, model load, warm-up,
the model alone on one strip, one inspection run (tile ring, queues, assembler)."""

from __future__ import annotations

import sys
import time


def rss() -> tuple[float, float]:
    got = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "VmHWM")):
                k, v = line.split(":")
                got[k] = int(v.split()[0]) / 1024
    return got["VmRSS"], got["VmHWM"]


def step(name: str, t0: list[float]) -> None:
    now, peak = rss()
    print(f"{name:<44} rss {now:7.0f} MB  peak {peak:7.0f} MB  ({time.perf_counter() - t0[0]:.1f} s)", flush=True)


def main() -> None:
    t0 = [time.perf_counter()]
    station_path = sys.argv[1] if len(sys.argv) > 1 else "configs/stations/demo-8k.toml"
    runtime = sys.argv[2] if len(sys.argv) > 2 else "auto"
    import numpy as np

    from edge_inspector.bench import cycled, line_pool, measured_run
    from edge_inspector.config import load_station
    from edge_inspector.inference import Model
    from edge_inspector.inference.model import station_batch
    from edge_inspector.tile import column_starts

    st = load_station(station_path)
    st = st.model_copy(update={"model": st.model.model_copy(update={"cpu_runtime": runtime})})
    step("imports (numpy, numba, onnxruntime, ...)", t0)
    pool = line_pool(st, 8192)
    step(f"line pool ({pool.nbytes / 2**20:.0f} MB)", t0)
    m = Model.load(st.model, resolve=st.resolve)
    m.fit_station(st)
    step(f"model loaded ({m.provider})", t0)
    tile, batch = station_batch(st, m.provider)
    m.warmup(tile, batch)
    step(f"warm-up, batch {batch}", t0)
    xs = column_starts(st.camera.width, tile, st.tiling.overlap)
    strip = np.ascontiguousarray(np.stack([pool[:tile, x : x + tile] for x in xs]))
    for i in range(0, len(xs), batch):
        m.infer(strip[i : i + batch])
    del strip
    step("model alone on one strip", t0)
    stats = measured_run(st, m, cycled(pool, 20_000, st.source.block_lines))
    step(f"inspection run, {st.tiling.ring_slots} ring slots ({stats.tiles} tiles)", t0)


if __name__ == "__main__":
    main()
