#!/usr/bin/env python3
"""The detector ablation table: one row per training run of ``python -m edge_inspector.train.detector``.

    .venv/bin/python benchmarks/detector_ablation.py RUNS_DIR [--rounds 3] [--threads 2]

Each ``RUNS_DIR/<config>/`` holds the run's ``model.onnx`` (the checkpoint chosen on val mAP50) and
its ``log.jsonl``. Printed per config: the modules switched on, val mAP50 / mAP50-95 of the chosen
checkpoint (from the log: ``evaluate_model`` on the val split, as ``edge-inspector eval-model``),
parameters (the ONNX initializers), GMAC per 2048² tile (``compare.graph_macs``), and the model
alone on one 2048² tile (the station's runtime on the CPU, ``--threads`` threads), timed in rounds
that alternate between the configs so that the machine's load hits all alike; the tiles/s are
also given as a ratio to the first config's.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnx

from edge_inspector.config import ModelCfg
from edge_inspector.evaluation.compare import graph_macs
from edge_inspector.inference import Model

TILE = 2048


def chosen(log: Path) -> dict:
    """The val figures of the best-mAP50 eval in a run's log."""
    best: dict = {}
    for line in log.read_text().splitlines():
        d = json.loads(line)
        v = d.get("val")
        if v and v.get("map50") is not None and v["map50"] > best.get("map50", -1.0):
            best = {**v, "step": d["step"]}
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", type=Path)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    runs = sorted(p for p in args.runs.iterdir() if (p / "model.onnx").is_file())
    runs.sort(key=lambda p: (p.name != "baseline", p.name != "all", p.name))
    rows = []
    models = {}
    x = np.clip(np.random.default_rng(0).normal(140, 12, (1, TILE, TILE, 3)), 0, 255).astype(np.uint8)
    for p in runs:
        path = p / "model.onnx"
        m = onnx.load(str(path))
        meta = {q.key: q.value for q in m.metadata_props}
        params = sum(int(np.prod(t.dims)) for t in m.graph.initializer)
        macs, _ = graph_macs(path, TILE)
        modules = json.loads(meta.get("edge_inspector.training", "{}")).get("modules", {})
        rows.append({"config": p.name, "modules": "+".join(k for k, on in modules.items() if on) or "none",
                     **chosen(p / "log.jsonl"), "params": params, "gmac": None if macs is None else macs / 1e9})
        models[p.name] = Model.load(ModelCfg(path=str(path), providers=["CPUExecutionProvider"],
                                             intra_op_threads=args.threads))
        models[p.name].run_maps(x)  # warm-up
    spent = {k: 0.0 for k in models}
    for _ in range(args.rounds):
        for k, m in models.items():
            t0 = time.perf_counter()
            m.run_maps(x)
            spent[k] += time.perf_counter() - t0
    ref = args.rounds / spent[rows[0]["config"]]
    print(f"| config | modules | val mAP50 | val mAP50-95 | chosen step | params | GMAC / 2048² tile | tiles/s "
          f"({args.threads} threads, {models[rows[0]['config']].provider}) | vs {rows[0]['config']} |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        tps = args.rounds / spent[r["config"]]
        print(f"| {r['config']} | {r['modules']} | {r.get('map50', float('nan')):.3f} | {r.get('map50_95', float('nan')):.3f}"
              f" | {r.get('step', '-')} | {r['params'] / 1e6:.2f} M | {r['gmac']:.1f} | {tps:.2f} | {tps / ref:.2f} |")


if __name__ == "__main__":
    main()
