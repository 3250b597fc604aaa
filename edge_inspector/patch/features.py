"""Edge features of a tile, per block (the published leather work's Canny + block histograms, as ONNX ops).

Canny is no ONNX op; the "edge pixels" here are its core: grey = mean of R, G, B in 0..1; Sobel
gradients (3 x 3, divided by 8, edge-replicated border) and their magnitude; edge = a steep sigmoid
``sigmoid(steepness * (magnitude - threshold))`` (1 on an edge, 0 off it). Per square block of
``block`` px (AveragePool): the edge density (share of edge pixels), the mean grey and the grey
standard deviation, and the same three minus their mean over the tile (photos and hides differ in
brightness and grain far more than a defect differs from its leather): ``FEATURES`` = 6 numbers
per block, (N, 6, H / block, W / block).

A patch is ``blocks`` x ``blocks`` blocks centred on one block (its cell): the MLP sees the
features of those blocks (a ``blocks`` x ``blocks`` convolution over the block grid, edge-padded),
so the patch grid has the block's stride. ``block_features`` is the numpy reference;
``feature_nodes`` builds the same in ONNX (tests/test_patch.py checks one against the other).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FEATURES = ("edge_density", "grey_mean", "grey_std", "edge_density_rel", "grey_mean_rel", "grey_std_rel")
INPUT = "image"
BLOCK_FEATURES = "block_features"
VAR_EPS = 1e-6
SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32) / 8.0


@dataclass(frozen=True, slots=True)
class PatchSettings:
    """The patch grid and the edge feature's settings (``edge_inspector.output`` -> ``patch``).

    ``stride``: px between patch centres = the block size; ``blocks``: blocks per patch side (the
    classifier's context is ``blocks * stride`` px); ``report_px``: the square reported (and
    labelled) per patch, centred on its cell; ``sobel_threshold`` (grey units 0..1 per px) and
    ``steepness``: the edge pixel's sigmoid."""

    stride: int = 32
    blocks: int = 5
    report_px: int = 64
    sobel_threshold: float = 0.04
    steepness: float = 150.0

    def __post_init__(self) -> None:
        if self.stride < 2 or self.blocks < 1 or self.blocks % 2 == 0:
            raise ValueError(f"patch settings: stride >= 2 and an odd number of blocks, got {self}")
        if self.report_px < self.stride or (self.report_px - self.stride) % 2:
            raise ValueError(f"patch settings: report_px ({self.report_px}) must be the stride ({self.stride})"
                             " or more, by an even number of px")

    @property
    def context_px(self) -> int:
        return self.blocks * self.stride

    def spec(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_spec(cls, d: dict[str, Any]) -> "PatchSettings":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


def grey(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, H, W) float32 grey in 0..1."""
    return images.astype(np.float32).sum(-1) * np.float32(1.0 / (3 * 255))


def edge_pixels(g: np.ndarray, s: PatchSettings) -> np.ndarray:
    """(N, H, W) grey -> (N, H, W) edge pixels in 0..1 (Sobel magnitude through a steep sigmoid)."""
    p = np.pad(g, ((0, 0), (1, 1), (1, 1)), mode="edge")
    h, w = g.shape[1:]
    gx = np.zeros_like(g)
    gy = np.zeros_like(g)
    for dy in range(3):
        for dx in range(3):
            win = p[:, dy:dy + h, dx:dx + w]
            gx += SOBEL_X[dy, dx] * win
            gy += SOBEL_X.T[dy, dx] * win
    mag = np.sqrt(gx * gx + gy * gy)
    return (1.0 / (1.0 + np.exp(-np.float32(s.steepness) * (mag - np.float32(s.sobel_threshold))))).astype(np.float32)


def _pool(x: np.ndarray, b: int) -> np.ndarray:
    n, h, w = x.shape
    return x.reshape(n, h // b, b, w // b, b).mean(axis=(2, 4), dtype=np.float64).astype(np.float32)


def block_features(images: np.ndarray, s: PatchSettings) -> np.ndarray:
    """Numpy reference: (N, H, W, 3) uint8 -> (N, 3, H / stride, W / stride) float32 (``FEATURES``)."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (N, H, W, 3), got {images.shape}")
    if images.shape[1] % s.stride or images.shape[2] % s.stride:
        raise ValueError(f"image size {images.shape[1:3]} is not a multiple of the patch stride {s.stride}")
    g = grey(images)
    e = edge_pixels(g, s)
    mean = _pool(g, s.stride)
    var = np.maximum(_pool(g * g, s.stride) - mean * mean, 0.0)
    f = np.stack([_pool(e, s.stride), mean, np.sqrt(var + np.float32(VAR_EPS))], 1)
    return np.concatenate([f, f - f.mean(axis=(2, 3), keepdims=True, dtype=np.float64).astype(np.float32)], 1)


def _init(name: str, a: Any) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(a), name)


def feature_nodes(s: PatchSettings) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """ONNX nodes: uint8 NHWC ``INPUT`` -> ``BLOCK_FEATURES`` (N, 3, H / stride, W / stride) float."""
    n = helper.make_node
    b = s.stride
    sobel = np.stack([SOBEL_X, SOBEL_X.T])[:, None]  # (2, 1, 3, 3)
    nodes = [
        n("Cast", [INPUT], ["f/u8"], to=TensorProto.FLOAT),
        n("Transpose", ["f/u8"], ["f/rgb"], perm=[0, 3, 1, 2]),
        n("Conv", ["f/rgb", "f/w_grey"], ["f/grey"]),
        n("Pad", ["f/grey", "f/pad1"], ["f/grey_p"], mode="edge"),
        n("Conv", ["f/grey_p", "f/w_sobel"], ["f/grad"]),
        n("Mul", ["f/grad", "f/grad"], ["f/grad2"]),
        n("ReduceSum", ["f/grad2", "f/axis1"], ["f/mag2"], keepdims=1),
        n("Sqrt", ["f/mag2"], ["f/mag"]),
        n("Sub", ["f/mag", "f/thr"], ["f/over"]),
        n("Mul", ["f/over", "f/steep"], ["f/logit"]),
        n("Sigmoid", ["f/logit"], ["f/edge"]),
        n("Mul", ["f/grey", "f/grey"], ["f/grey2"]),
        n("Concat", ["f/edge", "f/grey", "f/grey2"], ["f/px"], axis=1),
        n("AveragePool", ["f/px"], ["f/blk"], kernel_shape=[b, b], strides=[b, b]),
        n("Split", ["f/blk", "f/split"], ["f/e", "f/m", "f/m2"], axis=1),
        n("Mul", ["f/m", "f/m"], ["f/mm"]),
        n("Sub", ["f/m2", "f/mm"], ["f/var0"]),
        n("Relu", ["f/var0"], ["f/var"]),
        n("Add", ["f/var", "f/eps"], ["f/var_e"]),
        n("Sqrt", ["f/var_e"], ["f/std"]),
        n("Concat", ["f/e", "f/m", "f/std"], ["f/abs"], axis=1),
        n("ReduceMean", ["f/abs"], ["f/tile_mean"], axes=[2, 3], keepdims=1),
        n("Sub", ["f/abs", "f/tile_mean"], ["f/rel"]),
        n("Concat", ["f/abs", "f/rel"], [BLOCK_FEATURES], axis=1),
    ]
    inits = [
        _init("f/w_grey", np.full((1, 3, 1, 1), 1.0 / (3 * 255), np.float32)),
        _init("f/pad1", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)),
        _init("f/w_sobel", sobel.astype(np.float32)),
        _init("f/axis1", np.array([1], np.int64)),
        _init("f/thr", np.float32(s.sobel_threshold)),
        _init("f/steep", np.float32(s.steepness)),
        _init("f/split", np.array([1, 1, 1], np.int64)),
        _init("f/eps", np.float32(VAR_EPS)),
    ]
    return nodes, inits


def image_input(channels: int = 3) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(INPUT, TensorProto.UINT8, ["batch", "h", "w", channels])


OPSET = 17


def make_model(graph: onnx.GraphProto, producer: str) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name=producer)
    model.ir_version = min(model.ir_version, 8)
    return model


def features_model(s: PatchSettings) -> onnx.ModelProto:
    """The extractor alone: uint8 NHWC image -> ``BLOCK_FEATURES`` (what the test compares)."""
    nodes, inits = feature_nodes(s)
    out = helper.make_tensor_value_info(BLOCK_FEATURES, TensorProto.FLOAT, ["batch", len(FEATURES), "gh", "gw"])
    return make_model(helper.make_graph(nodes, "patch-features", [image_input()], [out], inits),
                      "edge-inspector patch features")


def settings_json(s: PatchSettings) -> str:
    return json.dumps(s.spec())
