"""Patch features of good leather: the shipped ImageNet extractor behind the station's input.

``effnet_lite0_s8s16.onnx`` (``edge_inspector/models/``, made once by
``python -m edge_inspector.train.export_features``; origin and licence in docs/models.md) maps a
float32 NCHW 0..255 RGB image to ``embedding`` (B, 152, H/8, W/8): EfficientNet-Lite0 features of
stride 8 and 16, each averaged over 3x3 neighbours. ``input_nodes`` puts the station's input in
front of it: uint8 NHWC -> float NCHW (a grey camera's channel repeated three times) -> optional
``downscale`` (average pooling, for speed on 2048² tiles) -> the extractor. learn-good runs exactly
these nodes (``FeatureExtractor``) to collect good patches, and ``graph.build_model`` appends the
distance head to the same nodes, so learning and inspection see the same features.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

FEATURES_ONNX = Path(__file__).resolve().parent.parent / "models" / "effnet_lite0_s8s16.onnx"
EMBED_DIM = 152
FEATURE_STRIDE = 8  # embedding cell in (downscaled) input px
OPSET = 17
INPUT = "image"
EMBEDDING = "embedding"
PIXELS = "pixels"  # float NCHW 0..255 at tile resolution (the hide mask reads it)
PREFIX = "fx/"  # names of the extractor's nodes and weights inside a built model


def cell_px(downscale: int) -> int:
    """Tile px per anomaly-map cell."""
    return FEATURE_STRIDE * downscale


def input_nodes(channels: int, downscale: int) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], onnx.ValueInfoProto]:
    """uint8 NHWC ``image`` -> ``PIXELS`` -> ``EMBEDDING``: nodes, initializers, the graph input."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if downscale < 1:
        raise ValueError(f"downscale must be >= 1, got {downscale}")
    fx = onnx.load(str(FEATURES_ONNX))
    ex_in = fx.graph.input[0].name
    nodes = [
        helper.make_node("Cast", [INPUT], ["u8f"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["u8f"], [PIXELS], perm=[0, 3, 1, 2]),
    ]
    rgb = PIXELS
    if channels == 1:
        nodes.append(helper.make_node("Concat", [PIXELS, PIXELS, PIXELS], ["rgb"], axis=1))
        rgb = "rgb"
    if downscale > 1:
        nodes.append(helper.make_node("AveragePool", [rgb], ["small"], kernel_shape=[downscale, downscale],
                                      strides=[downscale, downscale]))
        rgb = "small"

    def ren(name: str) -> str:
        if name == ex_in:
            return rgb
        if name == fx.graph.output[0].name:
            return EMBEDDING
        return PREFIX + name if name else name

    for n in fx.graph.node:
        m = onnx.NodeProto()
        m.CopyFrom(n)
        m.name = PREFIX + n.name
        m.input[:] = [ren(i) for i in n.input]
        m.output[:] = [ren(o) for o in n.output]
        nodes.append(m)
    inits = []
    for t in fx.graph.initializer:
        u = onnx.TensorProto()
        u.CopyFrom(t)
        u.name = PREFIX + t.name
        inits.append(u)
    graph_in = helper.make_tensor_value_info(INPUT, TensorProto.UINT8, ["batch", "height", "width", channels])
    return nodes, inits, graph_in


def make_model(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="edge-inspector learn-good")
    model.ir_version = min(model.ir_version, 8)
    return model


def extractor_model(channels: int, downscale: int) -> onnx.ModelProto:
    """uint8 NHWC image -> ``embedding`` (B, EMBED_DIM, H / cell, W / cell)."""
    nodes, inits, graph_in = input_nodes(channels, downscale)
    out = helper.make_tensor_value_info(EMBEDDING, TensorProto.FLOAT, ["batch", EMBED_DIM, "h", "w"])
    return make_model(helper.make_graph(nodes, "features", [graph_in], [out], inits))


def session(model: onnx.ModelProto, threads: int = 0):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), sess_options=so, providers=["CPUExecutionProvider"])


class FeatureExtractor:
    """``embed(tiles)``: (B, H, W, C) uint8 -> (B, h, w, EMBED_DIM) float32 patch features."""

    def __init__(self, channels: int = 3, downscale: int = 2, threads: int = 0) -> None:
        self.channels = channels
        self.downscale = downscale
        self.cell = cell_px(downscale)
        self._sess = session(extractor_model(channels, downscale), threads)

    def embed(self, tiles: np.ndarray) -> np.ndarray:
        if tiles.ndim == 3:
            tiles = tiles[..., None]
        b, h, w, c = tiles.shape
        if h % (2 * self.cell) or w % (2 * self.cell):
            raise ValueError(f"tile {h}x{w} px: height and width must be multiples of {2 * self.cell}")
        e = self._sess.run([EMBEDDING], {INPUT: np.ascontiguousarray(tiles, np.uint8)})[0]
        return e.transpose(0, 2, 3, 1)
