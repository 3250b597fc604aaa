"""The model path's one extra copy: a tile copied out of its strip slot into the model's batch.

    .venv/bin/python benchmarks/tile_copy_ratio.py [station.toml]

Loads the station's model (warmed up), fills one strip slot (tile whole lines of the bench's
synthetic pool) and, tile after tile, alternates the model on a contiguous tile made beforehand
with ``Strip.tiles`` (the copy the pipeline does) followed by the model. Prints the copy's time
per tile and its ratio to the model's.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from edge_inspector.bench import line_pool
from edge_inspector.config import load_station
from edge_inspector.inference import Model
from edge_inspector.inference.model import station_batch
from edge_inspector.stream import Strip
from edge_inspector.tile import column_starts


def main() -> None:
    root = Path(__file__).resolve().parents[1]
    st = load_station(Path(sys.argv[1]) if len(sys.argv) > 1 else root / "configs" / "stations" / "demo-8k.toml")
    t = st.tiling.tile
    m = Model.load(st.model, resolve=st.resolve)
    m.fit_station(st)
    m.warmup(*station_batch(st, m.provider, m.fixed_batch))
    slot = np.ascontiguousarray(line_pool(st, t)[:t])
    x0s = column_starts(st.camera.width, t, st.tiling.overlap)
    strip = Strip(0, 0, t, x0s, slot, 0)
    ready = strip.tiles()  # what the old ring slot held: the tiles already contiguous
    buf = np.empty((1,) + ready.shape[1:], ready.dtype)
    buf.fill(0)
    model_ready = copy_s = model_copied = 0.0
    n = 0
    for _ in range(4):
        for c in range(len(x0s)):
            t0 = time.perf_counter()
            m.infer(ready[c : c + 1])
            t1 = time.perf_counter()
            batch = strip.tiles(c, c + 1, out=buf)
            t2 = time.perf_counter()
            m.infer(batch)
            t3 = time.perf_counter()
            model_ready += t1 - t0
            copy_s += t2 - t1
            model_copied += t3 - t2
            n += 1
    print(f"{m.provider}, {n} tiles of {t}²: model on a contiguous tile {model_ready / n * 1e3:.1f} ms; tile copied"
          f" out of the strip slot {copy_s / n * 1e3:.2f} ms + model {model_copied / n * 1e3:.1f} ms; copy / model"
          f" {copy_s / model_copied:.3f}; (copy + model) / model on a ready tile"
          f" {(copy_s + model_copied) / model_ready:.3f}")


if __name__ == "__main__":
    main()
