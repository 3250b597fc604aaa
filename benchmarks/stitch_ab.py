"""The stitcher alone, old against new, beside a plain copy, interleaved in one process.

    PYTHONPATH=/tmp/oldpkg .venv/bin/python benchmarks/stitch_ab.py [rounds]

``/tmp/oldpkg/old_ei`` is a link to the ``edge_inspector`` folder of the code before (e.g. a
``git archive`` of it): its ``stitch.Stitcher`` runs beside this tree's, on the same line pool,
in alternating chunks of 40,000 lines (so a noisy machine slows both alike), and so does the plain
copy of the same blocks (``bench.plain_copy_lines_per_s``'s loop). Prints lines/s of each and the
ratios. Hide-presence samples and strip messages included; no assembler, no other threads.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

import old_ei.stitch as old_stitch  # type: ignore[import-not-found]
import old_ei.stream as old_stream  # type: ignore[import-not-found]
import old_ei.tile as old_tile  # type: ignore[import-not-found]
from edge_inspector.bench import cycled, line_pool
from edge_inspector.config import load_station
from edge_inspector.stitch import Stitcher, TileRing
from edge_inspector.stream import Strip
from edge_inspector.tile import TileGrid

CHUNK = 40_000


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    st = load_station(Path(__file__).resolve().parents[1] / "configs" / "stations" / "demo-8k.toml")
    cam, tl = st.camera, st.tiling
    pool = line_pool(st, 8192)
    block = st.source.block_lines
    grid = TileGrid(cam.width, tl.tile, tl.overlap)
    new_ring = TileRing(tl.ring_slots, lines=tl.tile, width=cam.width, channels=cam.channels, dtype=pool.dtype)
    old_grid = old_tile.TileGrid(cam.width, tl.tile, tl.overlap)
    old_ring = old_stitch.TileRing(tl.ring_slots, len(old_grid.x0s), tl.tile, cam.channels, pool.dtype)
    dst = np.empty((tl.ring_slots * tl.tile,) + pool.shape[1:], pool.dtype)
    dst.fill(0)

    def release(ring, strip_type):
        return lambda m: ring.release(m.slot) if isinstance(m, strip_type) else None

    new = Stitcher(grid, cam.channels, pool.dtype, new_ring, release(new_ring, Strip), sample_step=8)
    old = old_stitch.Stitcher(old_grid, cam.channels, pool.dtype, old_ring, release(old_ring, old_stream.Strip),
                              sample_step=8)
    offsets = {"old": 0, "new": 0}

    def feed(name: str, s, n: int) -> None:
        for b in cycled(pool, n, block):
            b.first_line += offsets[name]
            s.push(b)
        offsets[name] += n

    def copy(n: int) -> None:
        row = 0
        for b in cycled(pool, n, block):
            k = b.n_lines
            if row + k > len(dst):
                row = 0
            np.copyto(dst[row : row + k], b.lines)
            row += k

    runs = {"copy": copy, "old": lambda n: feed("old", old, n), "new": lambda n: feed("new", new, n)}
    for f in runs.values():  # warm: JIT, pages
        f(4 * tl.tile)
    spent = dict.fromkeys(runs, 0.0)
    for r in range(rounds):
        order = list(runs) if r % 2 == 0 else list(reversed(runs))
        for name in order:
            t0 = time.perf_counter()
            runs[name](CHUNK)
            spent[name] += time.perf_counter() - t0
    lps = {k: rounds * CHUNK / v for k, v in spent.items()}
    print(f"{rounds} rounds of {CHUNK:,} lines: plain copy {lps['copy']:,.0f} lines/s, old stitcher"
          f" {lps['old']:,.0f} ({lps['old'] / lps['copy']:.3f} of the copy), new stitcher {lps['new']:,.0f}"
          f" ({lps['new'] / lps['copy']:.3f} of the copy); new / old {lps['new'] / lps['old']:.2f}")


if __name__ == "__main__":
    main()
