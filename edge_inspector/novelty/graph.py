"""The learned novelty model as one ONNX file, written with onnx.helper (no torch).

    image uint8 (B, H, W, C) ─▶ features.input_nodes ─▶ embedding (B, 152, h, w)   h = H / cell
        ─▶ distance head ─▶ d (B, 1, h, w) ─▶ x 0.5 / d_threshold, clip 0..1 ─▶ [x leather] ─▶ anomaly_map
                                                                                 └▶ max ─▶ pred_score (B,)

Distance heads:

- ``knn``: distance to the nearest patch of the memory bank (m, 152), all in the bank's centred
  coordinates (x - mu, m - mu): |x - m|² = |x - mu|² + min over m of (|m - mu|² - 2 (x - mu).(m - mu)),
  the minimum by a 1x1 convolution (weights -2 (m - mu), bias |m - mu|²) and ReduceMin. Centring
  keeps the cancellation small (|x - mu|² is ~60 % of |x|² on leather; in float32 the distance is
  within 4e-5 of float64 on 8K tiles, where the threshold is ~40). It replaced an ArgMin, Gather
  and subtraction (the same distance; OpenVINO's ArgMin over 1024 channels alone took 62 ms of a
  2048² tile). It runs in the
  station's ``cpu_precision`` (bf16 where the CPU has it: the map moves by 0.002 on average);
  gauss models pin f32 (``cpu_precision`` below). Cost per cell 152 x m multiply-adds:
  size the bank for the speed the line needs (docs/models.md).
- ``gauss``: Mahalanobis distance to one Gaussian of all good patches: x - mean, a 1x1
  convolution with the whitening W, then the root of the sum of squares (152 x 152 per cell).

The map is scaled so that the threshold learn-good chose is 0.5 (1.0 = twice that distance),
so ``edge_inspector.score_threshold`` = 0.5 and ``calibrate`` can move it on the same scale.
``leather`` (optional, models learned from recordings): the station's hide detection in the
graph (mean |pixel - belt_level| > threshold per cell, on 4 x 4 px averages),
holes up to ``fill_cells`` cells closed, then eroded by ``margin_cells`` cells, so the belt and the hide outline (not in the memory bank:
learn-good learns hide pixels only) do not light up, while a hole in a hide does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .features import EMBED_DIM, EMBEDDING, TILE_F, cell_px, input_nodes, make_model

ANOMALY_MAP = "anomaly_map"
PRED_SCORE = "pred_score"
THRESHOLD = 0.5  # the learned threshold on the map's scale


@dataclass
class LeatherMask:
    """The station's hide detection, as the graph applies it on the cell grid."""

    belt_level: list[float]
    threshold: float
    fill_cells: int = 3
    margin_cells: int = 1


@dataclass
class Head:
    """A distance head: ``kind`` knn (``bank``) or gauss (``w``, ``b``)."""

    kind: str
    bank: np.ndarray | None = None
    w: np.ndarray | None = None
    b: np.ndarray | None = None

    def distance(self, x: np.ndarray) -> np.ndarray:
        """The numpy reference of the head on (n, D) features."""
        from .bank import gauss_distance, knn_distance

        if self.kind == "knn":
            return knn_distance(x, self.bank)  # type: ignore[arg-type]
        return gauss_distance(x, self.w, self.b)  # type: ignore[arg-type]


@dataclass
class ModelSpec:
    """Everything ``build_model`` writes besides the head."""

    channels: int
    downscale: int
    d_threshold: float  # raw distance that becomes THRESHOLD
    mm_per_px: float
    min_area_px: float
    mask: LeatherMask | None = None
    info: dict[str, Any] = field(default_factory=dict)  # goes into the output spec


def _init(name: str, a: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(a), name)


def _head_nodes(head: Head) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """``EMBEDDING`` -> ``dist`` (B, 1, h, w)."""
    n = helper.make_node
    if head.kind == "knn":
        bank = np.asarray(head.bank, np.float32)
        mu = bank.mean(axis=0)
        mc = bank - mu  # centred: |x - mu|² stays small next to |x|², so the sum below cancels little
        inits = [_init("head/mu", mu[None, :, None, None]), _init("head/w", (-2.0 * mc)[:, :, None, None]),
                 _init("head/bb", np.einsum("ij,ij->i", mc, mc))]
        nodes = [  # |x - m|² = |x - mu|² + min over m of (|m - mu|² - 2 (x - mu).(m - mu))
            n("Sub", [EMBEDDING, "head/mu"], ["head/xc"]),
            n("Conv", ["head/xc", "head/w", "head/bb"], ["head/c"]),
            n("ReduceMin", ["head/c"], ["head/cmin"], axes=[1], keepdims=1),
            n("ReduceSumSquare", ["head/xc"], ["head/x2"], axes=[1], keepdims=1),
            n("Add", ["head/x2", "head/cmin"], ["head/d2"]),
            n("Relu", ["head/d2"], ["head/d2p"]),
            n("Sqrt", ["head/d2p"], ["dist"]),
        ]
    elif head.kind == "gauss":
        w = np.asarray(head.w, np.float32)
        mu = np.linalg.solve(w.astype(np.float64), -np.asarray(head.b, np.float64)).astype(np.float32)
        inits = [_init("head/w", w[:, :, None, None]), _init("head/mu", mu[None, :, None, None])]
        nodes = [  # W (x - mu), not W x + b: the subtraction first keeps bf16 runtimes exact enough
            n("Sub", [EMBEDDING, "head/mu"], ["head/xc"]),
            n("Conv", ["head/xc", "head/w"], ["head/z"]),
            n("ReduceSumSquare", ["head/z"], ["head/d2"], axes=[1], keepdims=1),
            n("Sqrt", ["head/d2"], ["dist"]),
        ]
    else:
        raise ValueError(f"unknown head {head.kind!r} (knn or gauss)")
    return nodes, inits


MASK_SAMPLES = 4  # the leather mask reads each cell as 4 x 4 averages of its px


def _mask_nodes(mask: LeatherMask, channels: int, cell: int) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """``features.TILE_F`` -> ``leather`` (B, 1, h, w) float 0 / 1.

    The station's hide rule (``hide_tracker``: mean over channels of |px - belt_level| >
    threshold), per cell on ``MASK_SAMPLES`` x ``MASK_SAMPLES`` averages of its px (a 16 px cell:
    averages of 4 x 4 px), made by one strided convolution of the float tile as the input stage
    reads it. On every px in NCHW this mask took ~9 % of the learned model's time on a 2048² tile;
    every 4th px sampled instead of averaged let one more hide-edge cell through on the good 8K
    recording and raised learn-good's threshold by 9 %, averages kept it (docs/performance.md)."""
    n = helper.make_node
    k = max(1, cell // MASK_SAMPLES)
    level = np.asarray(mask.belt_level, np.float32)
    level = level[:channels] if len(level) >= channels else np.full(channels, level.mean(), np.float32)
    w = np.zeros((channels, 1, k, k * channels), np.float32)  # out channel c <- its interleaved values
    for c in range(channels):
        w[c, 0, :, c::channels] = 1.0 / (k * k)
    inits = [_init("mask/w", w), _init("mask/level", level.reshape(1, channels, 1, 1)),
             _init("mask/thr", np.float32(mask.threshold)), _init("mask/one", np.float32(1.0))]
    nodes = [
        n("Conv", [TILE_F, "mask/w"], ["mask/avg"], kernel_shape=[k, k * channels], strides=[k, k * channels]),
        n("Sub", ["mask/avg", "mask/level"], ["mask/diff"]),
        n("Abs", ["mask/diff"], ["mask/abs"]),
        n("ReduceMean", ["mask/abs"], ["mask/mean"], axes=[1], keepdims=1),
        n("AveragePool", ["mask/mean"], ["mask/cellmean"], kernel_shape=[cell // k] * 2, strides=[cell // k] * 2),
        n("Greater", ["mask/cellmean", "mask/thr"], ["mask/hideb"]),
        n("Cast", ["mask/hideb"], ["mask/hide"], to=TensorProto.FLOAT),
    ]
    cur = "mask/hide"

    def pool(src: str, dst: str, r: int) -> None:
        nodes.append(n("MaxPool", [src], [dst], kernel_shape=[2 * r + 1] * 2, pads=[r] * 4, strides=[1, 1]))

    def erode(src: str, dst: str, r: int) -> None:  # 1 - maxpool(1 - x)
        nodes.append(n("Sub", ["mask/one", src], [dst + "/inv"]))
        pool(dst + "/inv", dst + "/invp", r)
        nodes.append(n("Sub", ["mask/one", dst + "/invp"], [dst]))

    if mask.fill_cells > 0:  # closing: holes up to ~2 x fill_cells cells count as hide
        pool(cur, "mask/dil", mask.fill_cells)
        erode("mask/dil", "mask/closed", mask.fill_cells)
        cur = "mask/closed"
    if mask.margin_cells > 0:
        erode(cur, "mask/eroded", mask.margin_cells)
        cur = "mask/eroded"
    nodes.append(n("Identity", [cur], ["leather"]))
    return nodes, inits


def build_model(head: Head, spec: ModelSpec) -> onnx.ModelProto:
    """The whole model: station input -> features -> distance -> ``anomaly_map``, ``pred_score``."""
    n = helper.make_node
    nodes, inits, graph_in = input_nodes(spec.channels, spec.downscale)
    hn, hi = _head_nodes(head)
    nodes += hn
    inits += hi
    inits.append(_init("scale", np.float32(THRESHOLD / spec.d_threshold)))
    nodes += [n("Mul", ["dist", "scale"], ["scaled"]), n("Clip", ["scaled", "zero", "one"], ["clipped"])]
    inits += [_init("zero", np.float32(0.0)), _init("one", np.float32(1.0))]
    last = "clipped"
    if spec.mask is not None:
        mn, mi = _mask_nodes(spec.mask, spec.channels, cell_px(spec.downscale))
        nodes += mn
        inits += mi
        nodes.append(n("Mul", [last, "leather"], ["masked"]))
        last = "masked"
    nodes += [n("Identity", [last], [ANOMALY_MAP]),
              n("ReduceMax", [ANOMALY_MAP], [PRED_SCORE], axes=[1, 2, 3], keepdims=0)]
    outs = [helper.make_tensor_value_info(ANOMALY_MAP, TensorProto.FLOAT, ["batch", 1, "h", "w"]),
            helper.make_tensor_value_info(PRED_SCORE, TensorProto.FLOAT, ["batch"])]
    model = make_model(helper.make_graph(nodes, f"learn-good-{head.kind}", [graph_in], outs, inits))
    out_spec = {"anomaly_map": ANOMALY_MAP, "pred_score": PRED_SCORE, "stride": cell_px(spec.downscale),
                "method": head.kind, "embedding_dim": EMBED_DIM, "downscale": spec.downscale,
                "distance_at_threshold": round(float(spec.d_threshold), 6),
                "leather_mask": None if spec.mask is None else spec.mask.__dict__, **spec.info}
    meta = {
        "kind": "anomaly",
        "classes": json.dumps(["anomaly"]),
        "input": json.dumps({"layout": "NHWC", "dtype": "uint8", "channels": spec.channels, "size": None}),
        "output": json.dumps(out_spec),
        "score_threshold": f"{THRESHOLD:g}",
        "min_area_px": f"{spec.min_area_px:g}",
        "mm_per_px": f"{spec.mm_per_px:g}",
    }
    if head.kind == "gauss":
        # OpenVINO in bf16 moves the features by ~0.4 %, the Mahalanobis map by 0.5 (the whitening
        # amplifies it); the runtime honours this over [model] cpu_precision (runtime.py). The
        # centred knn head takes the station's precision: in bf16 its map moved by 0.002 on
        # average, 0.015 at most, and the pixel proxy scored the same (docs/models.md)
        meta["cpu_precision"] = "f32"
    for k, v in meta.items():
        model.metadata_props.add(key=f"edge_inspector.{k}", value=v)
    onnx.checker.check_model(model)
    return model
