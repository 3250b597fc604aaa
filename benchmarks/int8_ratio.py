#!/usr/bin/env python3
"""Model alone, one run: a float model and its int8 variant on ONNX Runtime CPU and OpenVINO, one
2048² tile per call as the pipeline calls them on the CPU, alternating, as ratios to ONNX Runtime
float (the machines here are noisy; absolute figures swing 2-3x).

    .venv/bin/python benchmarks/int8_ratio.py [attention-unet | unet]
"""
import sys
import time

import numpy as np

from edge_inspector.config import ModelCfg
from edge_inspector.inference import Model

name = sys.argv[1] if len(sys.argv) > 1 else "attention-unet"
x = np.random.default_rng(0).integers(0, 255, (5, 1, 2048, 2048, 3), dtype=np.uint8)
CPU = ["CPUExecutionProvider"]
ms = {}
for variant in (name, f"{name}-int8"):
    ms[f"{variant} onnxruntime"] = Model.load(ModelCfg(path=f"builtin:{variant}", providers=CPU,
                                                        cpu_runtime="onnxruntime"))
    for prec in ("f32", "bf16"):
        ms[f"{variant} openvino-{prec}"] = Model.load(ModelCfg(path=f"builtin:{variant}", providers=CPU,
                                                              cpu_runtime="openvino", cpu_precision=prec))
for m in ms.values():
    m.run_raw(x[0])
    m.run_raw(x[1])
t = {k: 0.0 for k in ms}
R = 3
for _ in range(R):
    for k, m in ms.items():
        t0 = time.perf_counter()
        for tile in x:
            m.run_raw(tile)
        t[k] += time.perf_counter() - t0
base = t[f"{name} onnxruntime"]
for k in ms:
    print(f"{k:34s} {5 * R / t[k]:6.2f} tiles/s  ratio to {name} onnxruntime {base / t[k]:.2f}")
