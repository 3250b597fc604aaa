"""Whole patch models as one ONNX graph each, and their contract metadata.

Both families take the station's uint8 NHWC tile (any size that is a multiple of the stride) and
emit ``PATCH_SCORES`` (N, 1, H / stride, W / stride): the probability that the patch centred on
each cell is defective. Contract: ``edge_inspector.kind = "patch"``, ``classes = ["defect"]``,
``edge_inspector.output`` = {"patch_scores": ..., "stride", "patch": PatchSettings, "family"};
the station's ``PatchDecoder`` (inference/decoders.py) turns the map into regions.

- edge-feature MLP (``mlp_model``): ``features.feature_nodes``, then per patch a
  ``blocks`` x ``blocks`` x 3 -> hidden -> 1 MLP written as convolutions over the block grid
  (edge-padded so that every cell has a patch); the feature standardisation is folded into the
  first layer.
- small CNN: exported from torch (``train/patch.py``), metadata added with ``add_metadata``.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from .features import BLOCK_FEATURES, FEATURES, PatchSettings, _init, feature_nodes, image_input, make_model

PATCH_SCORES = "patch_scores"
CLASSES = ["defect"]


def fold_standardisation(w1: np.ndarray, b1: np.ndarray, mean: np.ndarray, std: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Conv weights (hidden, F, k, k) and bias on (x - mean) / std per feature -> the same on x."""
    inv = (1.0 / std).astype(np.float32)[None, :, None, None]
    w = (w1 * inv).astype(np.float32)
    b = (b1 - (w * mean.astype(np.float32)[None, :, None, None]).sum(axis=(1, 2, 3))).astype(np.float32)
    return w, b


def mlp_model(s: PatchSettings, w1: np.ndarray, b1: np.ndarray, w2: np.ndarray, b2: np.ndarray,
              *, threshold: float, info: dict[str, Any]) -> onnx.ModelProto:
    """The edge-feature MLP: w1 (hidden, 3, blocks, blocks), b1 (hidden,) on raw block features
    (standardisation folded in), w2 (1, hidden, 1, 1), b2 (1,)."""
    if w1.shape[1:] != (len(FEATURES), s.blocks, s.blocks):
        raise ValueError(f"w1 must be (hidden, {len(FEATURES)}, {s.blocks}, {s.blocks}), got {w1.shape}")
    n = helper.make_node
    nodes, inits = feature_nodes(s)
    r = s.blocks // 2
    nodes += [
        n("Pad", [BLOCK_FEATURES, "m/pad"], ["m/feat_p"], mode="edge"),
        n("Conv", ["m/feat_p", "m/w1", "m/b1"], ["m/h"]),
        n("Relu", ["m/h"], ["m/hr"]),
        n("Conv", ["m/hr", "m/w2", "m/b2"], ["m/logit"]),
        n("Sigmoid", ["m/logit"], [PATCH_SCORES]),
    ]
    inits += [_init("m/pad", np.array([0, 0, r, r, 0, 0, r, r], np.int64)),
              _init("m/w1", w1.astype(np.float32)), _init("m/b1", b1.astype(np.float32)),
              _init("m/w2", w2.astype(np.float32)), _init("m/b2", b2.astype(np.float32))]
    out = helper.make_tensor_value_info(PATCH_SCORES, TensorProto.FLOAT, ["batch", 1, "gh", "gw"])
    model = make_model(helper.make_graph(nodes, "patch-mlp", [image_input()], [out], inits),
                       "edge-inspector patch-mlp")
    add_metadata(model, s, family="edge-mlp", threshold=threshold, info=info)
    onnx.checker.check_model(model)
    return model


def add_metadata(model: onnx.ModelProto, s: PatchSettings, *, family: str, threshold: float,
                 info: dict[str, Any], min_area_px: int | None = None) -> None:
    """The contract keys of a patch model (see the module doc)."""
    grid = s.spec() if family == "edge-mlp" else {"stride": s.stride, "report_px": s.report_px}  # no edge features
    spec = {PATCH_SCORES: PATCH_SCORES, "stride": s.stride, "family": family, "patch": grid}
    meta = {
        "kind": "patch",
        "classes": json.dumps(CLASSES),
        "input": json.dumps({"layout": "NHWC", "dtype": "uint8", "channels": 3, "size": None,
                             "color": "RGB", "multiple": s.stride}),
        "output": json.dumps(spec),
        "score_threshold": f"{threshold:.4g}",
        # one cell: a single patch is a defect (the station's squares are larger anyway; calibrate and
        # eval-model's dense view count the cells)
        "min_area_px": str(min_area_px if min_area_px is not None else s.stride ** 2),
        "mm_per_px": "0.37",
        # a steep sigmoid on the Sobel magnitude: bf16 would move edge pixels across the threshold
        "cpu_precision": "f32",
        "training": json.dumps(info),
    }
    del model.metadata_props[:]
    for k, v in meta.items():
        model.metadata_props.add(key=f"edge_inspector.{k}", value=v)
