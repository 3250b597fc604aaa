#!/usr/bin/env python3
"""Model alone, one run: ONNX Runtime CPU vs OpenVINO (f32, and bf16) on a strip of 5 2048² tiles,
alternating, as ratios (the machines here are noisy; absolute figures swing 2-3x).

    .venv/bin/python benchmarks/runtime_ratio.py [builtin:default | model.onnx]
"""
import sys, time, numpy as np
from edge_inspector.config import ModelCfg
from edge_inspector.inference import Model
name = sys.argv[1] if len(sys.argv) > 1 else "builtin:default"
x = np.random.default_rng(0).integers(0, 255, (5, 2048, 2048, 3), dtype=np.uint8)
ms = {"onnxruntime": Model.load(ModelCfg(path=name, providers=["CPUExecutionProvider"], cpu_runtime="onnxruntime")),
      "openvino-f32": Model.load(ModelCfg(path=name, providers=["CPUExecutionProvider"])),
      "openvino-bf16": Model.load(ModelCfg(path=name, providers=["CPUExecutionProvider"], cpu_precision="bf16"))}
for m in ms.values():
    m.run_raw(x); m.run_raw(x)
t = {k: 0.0 for k in ms}
R = 3
for r in range(R):
    for k, m in ms.items():
        t0 = time.perf_counter(); m.run_raw(x); t[k] += time.perf_counter() - t0
base = t["onnxruntime"]
for k in ms:
    print(f"{name} {k:14s} {5*R/t[k]:6.2f} tiles/s  ratio to onnxruntime {base/t[k]:.2f}")
