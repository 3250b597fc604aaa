"""int8 variants of the shipped models (edge_inspector/train/quantize.py) against their float model.

Tolerance on a fixed tile pair of a synthetic hide (test_runtime.hide_tiles: seed 3, 512 px, at the
station's scale): defect scores within 0.005 on average and 0.03 at the 99th percentile (8 uint8
levels), the defect mask at the model's threshold overlapping the float one by IoU >= 0.7, the same
number of detections per tile (+-1), each found again within 8 px. Measured (ONNX Runtime,
2026-12-02): attention-unet mean 0.0009, p99 0.010, IoU 0.93; unet mean 0.0015, p99 0.016, IoU 0.79;
lite0-attention-unet (the default) mean 0.0021, p99 0.020, IoU 0.81 (OpenVINO f32: 0.0024, 0.022, 0.77).
"""

from __future__ import annotations

import numpy as np
import pytest
from test_runtime import hide_tiles

from edge_inspector.config import ModelCfg
from edge_inspector.evaluation.model_eval import tile_maps
from edge_inspector.inference import Model
from edge_inspector.inference.registry import BUILTIN_MODELS
from edge_inspector.inference.runtime import openvino_available

CPU = ["CPUExecutionProvider"]
RUNTIMES = ["onnxruntime"] + (["openvino"] if openvino_available() else [])


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("name", ["attention-unet", "unet", "lite0-attention-unet"])
def test_int8_model_matches_its_float_model_on_a_fixed_tile(name: str, runtime: str) -> None:
    assert BUILTIN_MODELS[f"{name}-int8"].is_file()
    # the reference: the float model in f32 (OpenVINO's bf16 default would move the reference itself)
    f = Model.load(ModelCfg(path=f"builtin:{name}", providers=CPU, cpu_runtime=runtime, cpu_precision="f32"))
    q = Model.load(ModelCfg(path=f"builtin:{name}-int8", providers=CPU, cpu_runtime=runtime, cpu_precision="f32"))
    assert q.class_names == f.class_names and q.score_threshold == f.score_threshold  # the same contract
    tiles = hide_tiles(2, 512)
    a, b = tile_maps(f, tiles), tile_maps(q, tiles)
    d = np.abs(a.score - b.score)
    assert d.mean() <= 0.005 and np.percentile(d, 99) <= 0.03
    ma, mb = a.score >= f.score_threshold, b.score >= f.score_threshold
    assert ma.sum() > 20  # the tiles hold defects
    assert (ma & mb).sum() / (ma | mb).sum() >= 0.7
    da, db = f.infer(tiles), q.infer(tiles)
    assert sum(len(x) for x in da) >= 1
    for x, y in zip(da, db):
        assert abs(len(x) - len(y)) <= 1
        if len(x) and len(y):
            cx, cy = (x.xyxy[:, :2] + x.xyxy[:, 2:]) / 2, (y.xyxy[:, :2] + y.xyxy[:, 2:]) / 2
            dist = np.linalg.norm(cx[:, None] - cy[None], axis=2)
            assert (dist.min(axis=1) <= 8).sum() >= len(x) - 1
