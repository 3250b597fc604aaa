#!/usr/bin/env python3
"""How far a learned novelty model lifts each known defect above good leather, on an 8K recording
with synthetic truth (``edge-inspector synth`` writes ``REC.gt.json``): per model, the distance map
on 2048² tiles, each defect's peak (its box and one cell around), the good-leather cells (inside the
model's leather mask, 4 cells away from any defect) and how many peaks rise above the good 99th /
99.9th percentile and maximum; no threshold involved, so models with different memories compare.

    .venv/bin/python benchmarks/novelty_separation.py defects8k.raw model-a.onnx [model-b.onnx ...]

Used to choose learn-good's default bank (docs/models.md, "Novelty (learn-good)").
"""

from __future__ import annotations

import json
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper

from edge_inspector.recording.reader import open_recording

TILE = 2048


def main() -> None:
    import openvino as ov

    rec, paths = sys.argv[1], sys.argv[2:]
    gt = json.load(open(rec + ".gt.json"))
    with open_recording(rec) as r:
        img = np.concatenate([np.asarray(b.lines) for b in r.blocks()])
    height, width = (img.shape[0] // TILE) * TILE, (img.shape[1] // TILE) * TILE
    boxes = [d["bbox_px"] for h in gt["hides"] for d in h["defects"] if d["bbox_px"][3] < height]
    core = ov.Core()
    for path in paths:
        m = onnx.load(path)
        spec = json.loads({p.key: p.value for p in m.metadata_props}["edge_inspector.output"])
        cell = int(spec["stride"])
        m.graph.output.extend([helper.make_tensor_value_info("dist", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("leather", TensorProto.FLOAT, None)])
        req = core.compile_model(core.read_model(m.SerializeToString(), b""), "CPU",
                                 {"INFERENCE_PRECISION_HINT": "f32"}).create_infer_request()
        dist = np.zeros((height // cell, width // cell), np.float32)
        leather = np.zeros_like(dist)
        for y in range(0, height, TILE):
            for x in range(0, width, TILE):
                out = req.infer({0: np.ascontiguousarray(img[y:y + TILE, x:x + TILE][None])})
                sl = np.s_[y // cell:(y + TILE) // cell, x // cell:(x + TILE) // cell]
                dist[sl], leather[sl] = out["dist"][0, 0], out["leather"][0, 0]
        near = np.zeros_like(dist, bool)
        peaks = []
        for x0, l0, x1, l1 in boxes:
            r0, r1, c0, c1 = max(l0 // cell - 1, 0), l1 // cell + 2, max(x0 // cell - 1, 0), x1 // cell + 2
            peaks.append(float(dist[r0:r1, c0:c1].max()))
            near[max(r0 - 4, 0):r1 + 4, max(c0 - 4, 0):c1 + 4] = True
        good = dist[(leather > 0.5) & ~near]
        p = np.array(peaks)
        q99, q999 = np.quantile(good, [0.99, 0.999])
        auroc = float((p[:, None] > good[None, ::7]).mean())
        print(f"{path}: {len(p)} defects, {good.size} good cells; peak / good q99.9 median {np.median(p / q999):.3f};"
              f" peaks above the good q99 {int((p > q99).sum())}, q99.9 {int((p > q999).sum())},"
              f" max {int((p > good.max()).sum())}; peak-vs-good-cell AUROC {auroc:.4f}")


if __name__ == "__main__":
    main()
