"""The classical baseline defect model, written as an ONNX graph (no training, no torch).

``python -m edge_inspector.inference.baseline`` writes ``edge_inspector/models/baseline.onnx``
(committed; ``tests/test_inference.py`` checks it equals a fresh build).

What the graph does, per tile (all inside ONNX, so deployment cannot drift from this file):

1. uint8 NHWC RGB -> grey at half resolution in one ``ConvInteger`` (2x2 pixels x 3 channels,
   stride 2): no float copy of the full-resolution tile.
2. Local background: block means (8x8 at half res = 16 px = 6 mm), a 5x5 box over blocks, bilinear
   back up (~ 25 mm window), averaging hide pixels only (normalised convolution: belt beside the
   hide edge or seen through a hole does not count).  Made robust by one clipping pass: grey is
   clipped to background x (1 +- ``CLIP``) and averaged again, so a dark blot barely pulls the
   background down (no bright halo around it).
3. Relative contrast ``(grey - background) / background`` (illumination fall-off across the belt
   divides out), smoothed 3x3, divided by the tile's own grain level: the mean absolute contrast
   over inspected pixels (floored at ``SIGMA_FLOOR``).
4. Inspected pixels: blocks with a majority of pixels brighter than belt + ``HIDE_DELTA`` are
   hide; a closing (5 blocks) fills holes up to ~ 24 mm so they stay inside the hide; an erosion
   by 2 more blocks (~ 12 mm) keeps the mixed belt/leather pixels of the hide edge out, so the
   hide/belt edge never fires.  Belt pixels outside the hide never produce defects.
5. Outputs, both (N, H/2, W/2) uint8: ``class_map`` 0 = background, 1 = dark, 2 = bright for pixels
   with |contrast| >= ``MASK_Z`` grain units, and ``score_map`` = |contrast| / ``FULL_Z`` x 255.
   The decoder keeps a component when its peak score reaches the score threshold (metadata default
   0.3 = ``0.3 x FULL_Z`` grain units): hysteresis thresholding, tunable at run time above
   ``MASK_Z / FULL_Z``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .registry import BUILTIN_MODELS

BASELINE_PATH = BUILTIN_MODELS["baseline"]

NAME = "baseline"
VERSION = "1"
OPSET = 17
IR_VERSION = 8  # loadable by onnxruntime >= 1.14

STRIDE = 2
BELT_LEVEL = 40.0  # grey level of the belt
HIDE_DELTA = 25.0  # grey above belt level + this: hide pixel (leather is brighter than the belt)
BLOCK = 8  # half-res px per background block
BG_BOX = 5  # blocks in the background box
CLOSE_BLOCKS = 5  # closing kernel (blocks): fills holes up to ~ 4 blocks = 24 mm
ERODE_BLOCKS = 13  # erosion kernel (blocks) after the closing's dilation: 2 + 4 blocks of margin
CLIP = 0.1  # robust background: clip grey to bg x (1 +- CLIP) before the second pass
SMOOTH = 3  # box smoothing of the contrast (half-res px)
SIGMA_FLOOR = 0.01  # grain level floor (relative contrast), so clean leather is not over-amplified
MASK_Z = 4.5  # class map: |contrast| >= MASK_Z grain units
FULL_Z = 25.0  # score 1.0 at FULL_Z grain units
SCORE_THRESHOLD = 0.3  # default: component peak >= 7.5 grain units

# Grey = (38 R + 75 G + 15 B) / 128; weights < 128 keep ConvInteger on its fast u8s8 path.
_GREY_W = (38, 75, 15)


class _Graph:
    """Tiny helper to write an ONNX graph as a sequence of named ops."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def const(self, value: np.ndarray | float | list, dtype=np.float32, name: str | None = None) -> str:
        self._n += 1
        name = name or f"c{self._n}"
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], out: str | None = None, **attrs) -> str:
        self._n += 1
        out = out or f"{op_type.lower()}{self._n}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"n{self._n}_{op_type}", **attrs))
        return out

    def avg(self, x: str, k: int, s: int = 1, *, ceil: bool = False, pad: bool = True) -> str:
        p = k // 2 if pad and s == 1 else 0
        return self.op(
            "AveragePool", [x], kernel_shape=[k, k], strides=[s, s], pads=[p, p, p, p],
            count_include_pad=0, ceil_mode=int(ceil),
        )

    def maxpool(self, x: str, k: int) -> str:
        p = k // 2
        return self.op("MaxPool", [x], kernel_shape=[k, k], strides=[1, 1], pads=[p, p, p, p])

    def minpool(self, x: str, k: int) -> str:
        return self.op("Neg", [self.maxpool(self.op("Neg", [x]), k)])

    def resize(self, x: str, sizes: str, mode: str) -> str:
        extra = {"nearest_mode": "floor"} if mode == "nearest" else {}
        return self.op(
            "Resize", [x, "", "", sizes], mode=mode,
            coordinate_transformation_mode="half_pixel" if mode == "linear" else "asymmetric",
            **extra,
        )


def metadata() -> dict[str, str]:
    return {
        "edge_inspector.kind": "segmentation",
        "edge_inspector.name": NAME,
        "edge_inspector.version": VERSION,
        "edge_inspector.description": (
            "Classical baseline: grey at half resolution, robust local background (~25 mm), "
            "relative contrast in units of the tile's grain level, dark and bright deviations "
            "inside the hide (hide border and belt masked out; holes stay inside the hide)."
        ),
        "edge_inspector.classes": json.dumps(["dark", "bright"]),
        "edge_inspector.input": json.dumps(
            {"layout": "NHWC", "dtype": "uint8", "channels": 3, "size": [None, None], "color": "RGB"}
        ),
        "edge_inspector.output": json.dumps(
            {"class_map": "class_map", "score_map": "score_map", "stride": STRIDE}
        ),
        "edge_inspector.mm_per_px": "0.37",
        "edge_inspector.score_threshold": str(SCORE_THRESHOLD),
        "edge_inspector.mask_score": str(MASK_Z / FULL_Z),
        "edge_inspector.belt_level": str(BELT_LEVEL),
    }


def build_baseline() -> onnx.ModelProto:
    """The baseline model as an ONNX ModelProto (deterministic: same bytes on every build)."""
    g = _Graph()
    # 1. grey at half resolution straight from uint8 NHWC: (N,H,W,3) -> (N,1,H,3W) -> ConvInteger.
    rows = g.op("Reshape", ["image", g.const([0, 0, -1], np.int64, "shape_rows")])
    plane = g.op("Unsqueeze", [rows, g.const([1], np.int64, "axis1")])
    w = np.array([[list(_GREY_W) * 2] * 2], np.uint8)[None]  # (1,1,2,6)
    gi = g.op(
        "ConvInteger", [plane, g.const(w, np.uint8, "grey_weights")],
        kernel_shape=[2, 6], strides=[STRIDE, 3 * STRIDE],
    )
    grey = g.op("Mul", [g.op("Cast", [gi], to=TensorProto.FLOAT), g.const(1.0 / (128 * 4))], "grey")
    size = g.op("Shape", [grey], "half_size")

    # 2. robust local background over hide pixels only (normalised convolution): belt beside
    #    the hide edge and belt seen through a hole do not pull it down.
    hide_px = g.op("Cast", [g.op("Greater", [grey, g.const(BELT_LEVEL + HIDE_DELTA)])], to=TensorProto.FLOAT)
    hide_blocks = g.avg(hide_px, BLOCK, BLOCK, ceil=True)  # fraction of hide pixels per block
    w_box = g.op("Max", [g.avg(hide_blocks, BG_BOX), g.const(1e-3)])

    def background(values: str) -> str:
        box = g.avg(g.avg(g.op("Mul", [values, hide_px]), BLOCK, BLOCK, ceil=True), BG_BOX)
        return g.resize(g.op("Div", [box, w_box]), size, "linear")

    bg0 = background(grey)
    lo = g.op("Mul", [bg0, g.const(1.0 - CLIP)])
    hi = g.op("Mul", [bg0, g.const(1.0 + CLIP)])
    bg = background(g.op("Min", [g.op("Max", [grey, lo]), hi]))

    # 3. relative contrast.
    denom = g.op("Max", [bg, g.const(16.0)])
    rel = g.op("Div", [g.op("Sub", [grey, bg]), denom], "rel_contrast")

    # 4. inspected pixels: hide blocks, closed (holes stay in), eroded away from the border.
    hide_f = g.op("Cast", [g.op("Greater", [hide_blocks, g.const(0.5)])], to=TensorProto.FLOAT)
    inspect_blocks = g.minpool(g.maxpool(hide_f, CLOSE_BLOCKS), ERODE_BLOCKS)
    inspect = g.resize(inspect_blocks, size, "nearest")
    axes = g.const([2, 3], np.int64, "axes_hw")
    cnt = g.op("Max", [g.op("ReduceSum", [inspect, axes], keepdims=1), g.const(1.0)], "inspected_px")

    def in_grain_units(c: str) -> str:
        """Contrast / the tile's grain level (mean |contrast| over inspected pixels, floored)."""
        num = g.op("ReduceSum", [g.op("Mul", [g.op("Abs", [c]), inspect]), axes], keepdims=1)
        sigma = g.op("Max", [g.op("Div", [num, cnt]), g.const(SIGMA_FLOOR)])
        return g.op("Div", [c, sigma])

    # two scales: as is (thin cuts, 1 mm dots) and 3x3 smoothed (larger blots); keep the stronger.
    z1 = in_grain_units(rel)
    if SMOOTH > 1:
        z3 = in_grain_units(g.avg(rel, SMOOTH))
        z1 = g.op("Where", [g.op("Greater", [g.op("Abs", [z3]), g.op("Abs", [z1])]), z3, z1])
    z = g.op("Mul", [z1, inspect], "contrast")

    # 5. outputs.
    score = g.op("Clip", [g.op("Mul", [g.op("Abs", [z]), g.const(255.0 / FULL_Z)]), g.const(0.0), g.const(255.0)])
    score_u8 = g.op("Cast", [g.op("Add", [score, g.const(0.5)])], to=TensorProto.UINT8)
    u8 = lambda v: g.const(v, np.uint8)  # noqa: E731
    cls = g.op(
        "Where", [g.op("Less", [z, g.const(-MASK_Z)]), u8(1),
                  g.op("Where", [g.op("Greater", [z, g.const(MASK_Z)]), u8(2), u8(0)])],
    )
    g.op("Squeeze", [cls, "axis1"], "class_map")
    g.op("Squeeze", [score_u8, "axis1"], "score_map")

    graph = helper.make_graph(
        g.nodes, NAME,
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", "H", "W", 3])],
        [
            helper.make_tensor_value_info("class_map", TensorProto.UINT8, ["N", "h", "w"]),
            helper.make_tensor_value_info("score_map", TensorProto.UINT8, ["N", "h", "w"]),
        ],
        g.inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="edge_inspector.inference.baseline", producer_version=VERSION,
        doc_string=metadata()["edge_inspector.description"],
    )
    model.ir_version = IR_VERSION
    helper.set_model_props(model, metadata())
    onnx.checker.check_model(model)
    return model


def baseline_bytes() -> bytes:
    return build_baseline().SerializeToString(deterministic=True)


def write_baseline(path: Path = BASELINE_PATH) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(baseline_bytes())
    return path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = write_baseline(Path(args[0]) if args else BASELINE_PATH)
    print(f"wrote {out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
