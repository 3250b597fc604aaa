#!/usr/bin/env python3
"""Models alone, side by side in one run: tiles/s of each as the station runs it (its CPU runtime,
one 2048² tile per call, ``Model.parallel`` calls at once), in alternating rounds, so that the
ratios hold on a noisy machine where absolute figures swing 2-3x.

    .venv/bin/python benchmarks/model_throughput.py --recording hides.raw [--rounds 3] MODEL [MODEL ...]

MODEL: an .onnx file or builtin:NAME. The tiles are the first 16 2048² tiles of the recording's
lines from line 2048 on (hides and belt, as a station sees them). Figures: docs/models.md
("Novelty (learn-good)", speed) and docs/performance.md.

Seen twice on 2026-12-03 (OpenVINO 2026.4.1, 4 models compiled in one process, 2 threads each):
the run hung with both threads inside ``InferRequest.infer`` (``tensor.data[:] = inputs`` in
OpenVINO's data dispatcher) and the machine idle; a run with one model, or with 7 models an hour
earlier, did not. Not reproduced in the station's pipeline (one model); not explained yet. Kill
it and give fewer models per run.
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np

from edge_inspector.config import ModelCfg
from edge_inspector.inference import Model
from edge_inspector.recording.reader import open_recording

TILE = 2048


def tiles_of(path: str, n: int = 16) -> np.ndarray:
    with open_recording(path) as r:
        width = r.header.width
        cols = width // TILE
        rows_needed = -(-n // cols) * TILE
        buf, got = [], 0
        for b in r.blocks():
            if b.first_line + b.n_lines <= TILE:
                continue
            buf.append(np.asarray(b.lines))
            got += b.n_lines
            if got >= rows_needed:
                break
    img = np.concatenate(buf)
    if img.shape[0] < TILE or cols < 1:
        raise SystemExit(f"{path}: too short or narrow for {TILE}² tiles")
    out = [img[y:y + TILE, x * TILE:(x + 1) * TILE] for y in range(0, img.shape[0] - TILE + 1, TILE) for x in range(cols)]
    return np.ascontiguousarray(np.stack(out[:n]))


def throughput(model: Model, tiles: np.ndarray, seconds: float) -> float:
    done = [0] * max(1, model.parallel)
    t0 = time.perf_counter()

    def worker(k: int) -> None:
        i = k
        while time.perf_counter() - t0 < seconds:
            model.run_raw(tiles[i % len(tiles)][None])
            done[k] += 1
            i += len(done)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(len(done))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+")
    p.add_argument("--recording", required=True)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=5.0)
    a = p.parse_args()
    tiles = tiles_of(a.recording)
    models = {m: Model.load(ModelCfg(path=m, providers=["CPUExecutionProvider"])) for m in a.models}
    for m in models.values():
        throughput(m, tiles, 1.0)  # warm-up: compiled shapes, arenas
    res: dict[str, list[float]] = {m: [] for m in models}
    for _ in range(a.rounds):
        for name, m in models.items():
            res[name].append(throughput(m, tiles, a.seconds))
    base = float(np.median(res[a.models[0]]))
    for name in a.models:
        med = float(np.median(res[name]))
        print(f"{name:40s} {' '.join(f'{v:6.2f}' for v in res[name])}  median {med:6.2f} tiles/s"
              f"  {med / base:.2f}x the first  ({models[name].provider}, {models[name].parallel} at once)")


if __name__ == "__main__":
    main()
