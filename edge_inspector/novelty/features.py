"""Patch features of good leather: the shipped ImageNet extractor behind the station's input.

``effnet_lite0_s8s16.onnx`` (``edge_inspector/models/``, made once by
``python -m edge_inspector.train.export_features``; origin and licence in docs/models.md) maps a
float32 NCHW 0..255 RGB image to ``embedding`` (B, 152, H/8, W/8): EfficientNet-Lite0 features of
stride 8 and 16, each averaged over 3x3 neighbours. ``input_nodes`` puts the station's input in
front of it: uint8 NHWC -> NCHW -> one convolution that averages ``downscale`` x ``downscale``
pixels (for speed on 2048² tiles), repeats a grey camera's channel into R, G, B and normalises
-> the extractor. learn-good runs exactly
these nodes (``FeatureExtractor``) to collect good patches, and ``graph.build_model`` appends the
distance head to the same nodes, so learning and inspection see the same features.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FEATURES_ONNX = Path(__file__).resolve().parent.parent / "models" / "effnet_lite0_s8s16.onnx"
EMBED_DIM = 152
FEATURE_STRIDE = 8  # embedding cell in (downscaled) input px
OPSET = 17
INPUT = "image"
EMBEDDING = "embedding"
NORMALIZED = "normalized"  # float NCHW RGB, downscaled, (px - NORM_MEAN) / NORM_SCALE (the hide mask reads it)
TILE_F = "in/f"  # float (B, 1, H, W x C): the tile's rows as read, px values 0..255 (the hide mask reads it)
NORM_MEAN = 127.0  # the TensorFlow Lite models' input normalisation
NORM_SCALE = 128.0
PREFIX = "fx/"  # names of the extractor's nodes and weights inside a built model


def cell_px(downscale: int) -> int:
    """Tile px per anomaly-map cell."""
    return FEATURE_STRIDE * downscale


def _normalization(fx: onnx.ModelProto) -> tuple[set[str], str]:
    """The extractor's own ``(image - NORM_MEAN) / NORM_SCALE`` at its input: the nodes that make it
    (to drop: ``input_nodes`` folds it into the downscale) and the tensor they produce."""
    ex_in = fx.graph.input[0].name
    consts = {nd.output[0]: nd for nd in fx.graph.node if nd.op_type == "Constant"}
    init = {t.name: t for t in fx.graph.initializer}

    def scalar(name: str) -> float | None:
        if name in consts:
            return float(numpy_helper.to_array(consts[name].attribute[0].t).reshape(-1)[0])
        if name in init:
            return float(numpy_helper.to_array(init[name]).reshape(-1)[0])
        return None

    sub = next((nd for nd in fx.graph.node if nd.op_type == "Sub" and nd.input[0] == ex_in), None)
    div = next((nd for nd in fx.graph.node if sub is not None and nd.op_type == "Div" and nd.input[0] == sub.output[0]),
               None)
    if sub is None or div is None or scalar(sub.input[1]) != NORM_MEAN or scalar(div.input[1]) != NORM_SCALE:
        raise ValueError(f"{FEATURES_ONNX.name}: no (image - {NORM_MEAN:g}) / {NORM_SCALE:g} at its input"
                         " (re-export it with python -m edge_inspector.train.export_features)")
    drop = {sub.name, div.name} | {consts[i].name for i in (sub.input[1], div.input[1]) if i in consts}
    return drop, div.output[0]


def input_nodes(channels: int, downscale: int) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], onnx.ValueInfoProto]:
    """uint8 NHWC ``image`` -> ``NORMALIZED`` -> ``EMBEDDING``: nodes, initializers, the graph input.

    One convolution reads the station's tile as it comes (NHWC, no transpose: rows of W x C
    interleaved values) and does three jobs at once: the ``downscale`` x ``downscale`` average, a
    grey camera's channel repeated into R, G, B, and the extractor's own normalisation (its first
    nodes, dropped). Cast -> Transpose -> AveragePool took 86 ms of a 2048² tile in OpenVINO (a
    blocked reorder of 48 MB); the same result to float rounding (docs/performance.md).
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if downscale < 1:
        raise ValueError(f"downscale must be >= 1, got {downscale}")
    fx = onnx.load(str(FEATURES_ONNX))
    drop, norm_out = _normalization(fx)
    # the NHWC tile read as one-channel rows of W x C interleaved values (a free Reshape): a kernel
    # of downscale rows x (downscale x C) values, stride the same, averages each channel's px
    w = np.zeros((3, 1, downscale, downscale * channels), np.float32)  # out R, G, B <- interleaved row values
    for c in range(3):
        w[c, 0, :, (c if channels == 3 else 0)::channels] = 1.0 / (downscale * downscale * NORM_SCALE)
    b = np.full(3, -NORM_MEAN / NORM_SCALE, np.float32)
    nodes = [
        helper.make_node("Reshape", [INPUT, "in/rows"], ["in/r3"]),  # (B, H, W x C)
        helper.make_node("Unsqueeze", ["in/r3", "in/ax1"], ["in/r4"]),  # (B, 1, H, W x C)
        helper.make_node("Cast", ["in/r4"], [TILE_F], to=TensorProto.FLOAT),
        helper.make_node("Conv", [TILE_F, "in/w", "in/b"], [NORMALIZED], kernel_shape=[downscale, downscale * channels],
                         strides=[downscale, downscale * channels]),
    ]
    inits = [numpy_helper.from_array(w, "in/w"), numpy_helper.from_array(b, "in/b"),
             numpy_helper.from_array(np.array([0, 0, -1], np.int64), "in/rows"),
             numpy_helper.from_array(np.array([1], np.int64), "in/ax1")]

    def ren(name: str) -> str:
        if name == norm_out:
            return NORMALIZED
        if name == fx.graph.output[0].name:
            return EMBEDDING
        return PREFIX + name if name else name

    for n in fx.graph.node:
        if n.name in drop:
            continue
        m = onnx.NodeProto()
        m.CopyFrom(n)
        m.name = PREFIX + n.name
        m.input[:] = [ren(i) for i in n.input]
        m.output[:] = [ren(o) for o in n.output]
        nodes.append(m)
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
