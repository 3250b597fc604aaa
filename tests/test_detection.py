"""Detection models (ultralytics layouts, resize to a fixed input, per-class thresholds) and the
detection metrics of eval-model (boxmap: stitching, NMS / merging, COCO AP), on tiny ONNX
"detectors" built here whose boxes are known exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_inspector.cli import main
from edge_inspector.config import ModelCfg
from edge_inspector.detections import Detections
from edge_inspector.errors import ModelError
from edge_inspector.evaluation.boxmap import average_precision, match, stitch
from edge_inspector.evaluation.datasets import find_dataset
from edge_inspector.evaluation.model_eval import evaluate_model
from edge_inspector.evaluation.model_report import format_report
from edge_inspector.inference import Model
from edge_inspector.inference.feed import Resize

CPU = ["CPUExecutionProvider"]
NAMES = "{0: 'hole', 1: 'cut'}"
# (cx, cy, w, h, score, class) in input px of a 64 x 64 input: A, C (class 0), B (class 1)
A, C, B = (16, 16, 16, 16, 0.9, 0), (48, 16, 16, 16, 0.8, 0), (16, 48, 16, 16, 0.7, 1)


def _rows(boxes) -> np.ndarray:
    """(1, 4 + 2, anchors): the ultralytics layout (cx, cy, w, h, class scores)."""
    t = np.zeros((1, 6, len(boxes)), np.float32)
    for k, (cx, cy, w, h, s, c) in enumerate(boxes):
        t[0, :4, k] = cx, cy, w, h
        t[0, 4 + c, k] = s
    return t


def _end2end(boxes) -> np.ndarray:
    t = np.zeros((1, 300, 6), np.float32)
    for k, (cx, cy, w, h, s, c) in enumerate(boxes):
        t[0, k] = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, s, c
    return t


def detector(path: Path, out: np.ndarray, hw=(64, 64), props=None, layout: str = "ultralytics") -> Path:
    """A float NCHW 'export' whose output = ``out`` with the scores (rows 4.. or column 4) times the
    brightest input value (0..1): a black tile detects nothing, a tile with a white pixel gives ``out``."""
    mask = np.zeros_like(out)
    if layout == "ultralytics":
        mask[:, 4:] = 1
    else:  # transposed: class scores in columns 4..; end-to-end: the score in column 4
        mask[..., 4:] = 1 if layout == "transposed" else 0
        mask[..., 4] = 1
    nodes = [helper.make_node("ReduceMax", ["images"], ["m"], keepdims=0),
             helper.make_node("Mul", ["mask", "m"], ["sm"]),
             helper.make_node("Sub", ["one", "mask"], ["keep"]),
             helper.make_node("Add", ["keep", "sm"], ["gain"]),
             helper.make_node("Mul", ["out", "gain"], ["output0"])]
    inits = [numpy_helper.from_array(out, "out"), numpy_helper.from_array(mask, "mask"),
             numpy_helper.from_array(np.ones_like(out), "one")]
    g = helper.make_graph(nodes, "det", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, *hw])],
                          [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(out.shape))], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    helper.set_model_props(m, {"names": NAMES, "task": "detect", "imgsz": str(list(hw)), "stride": "32",
                               **(props or {})})
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    return path


def load(path: Path, **kw) -> Model:
    return Model.load(ModelCfg(path=str(path), providers=CPU, cpu_runtime="onnxruntime", **kw))


def white(h=64, w=64) -> np.ndarray:
    t = np.zeros((1, h, w, 3), np.uint8)
    t[0, 0, 0] = 255
    return t


# ------------------------------------------------------------------ the decoder on the layouts


@pytest.mark.parametrize("layout", ["ultralytics", "transposed", "end2end"])
def test_ultralytics_layouts_decode_to_the_same_boxes(tmp_path, layout):
    boxes = [A, C, B, (18, 17, 16, 16, 0.6, 0), (40, 40, 8, 8, 0.1, 1)]  # a duplicate of A, a weak box
    out = {"ultralytics": _rows(boxes), "transposed": _rows(boxes).transpose(0, 2, 1).copy(),
           "end2end": _end2end([A, C, B, (40, 40, 8, 8, 0.1, 1)])}[layout]
    m = load(detector(tmp_path / "d.onnx", out, layout=layout), score_threshold=0.25)  # decoder: task = detect
    assert m.class_names == ["hole", "cut"] and m.kind == "detection" and m.input_size == (64, 64)
    m.check_fits(64, 3)
    m.warmup(64)
    d = m.infer(white())[0]
    o = np.argsort(-d.score)
    np.testing.assert_allclose(d.xyxy[o], [[8, 8, 24, 24], [40, 8, 56, 24], [8, 40, 24, 56]])
    np.testing.assert_allclose(d.score[o], [0.9, 0.8, 0.7], rtol=1e-6)
    assert d.class_id[o].tolist() == [0, 0, 1]
    assert len(m.infer(np.zeros((1, 64, 64, 3), np.uint8))[0]) == 0  # a black tile: scores 0


def test_class_thresholds_by_name(tmp_path):
    p = detector(tmp_path / "d.onnx", _rows([A, C, B]))
    d = load(p, score_threshold=0.25, class_thresholds={"hole": 0.85}).infer(white())[0]
    np.testing.assert_allclose(sorted(d.score), [0.7, 0.9], rtol=1e-6)  # hole at 0.8 is below its 0.85
    with pytest.raises(ModelError) as e:
        load(p, class_thresholds={"crack": 0.5})
    assert "class_thresholds" in str(e.value) and "'crack'" in str(e.value) and "'hole'" in str(e.value)


def test_resize_letterbox_and_stretch_map_boxes_back_to_tile_px(tmp_path):
    # input 32 high x 64 wide; a box over the input's middle 32 x 32 (where a letterboxed square tile lies)
    p = detector(tmp_path / "d.onnx", _rows([(32, 16, 32, 32, 0.9, 0)]), hw=(32, 64))
    m = load(p)
    with pytest.raises(ModelError) as e:
        m.check_fits(128, 3, "station.toml")
    assert "resize" in str(e.value) and "letterbox" in str(e.value) and "station.toml" in str(e.value)
    m = load(p, resize="letterbox")
    m.check_fits(128, 3)
    m.warmup(128)
    np.testing.assert_allclose(m.infer(np.full((1, 128, 128, 3), 255, np.uint8))[0].xyxy, [[0, 0, 128, 128]])
    lb = Resize.plan("letterbox", (128, 128), (32, 64))
    fed = lb(np.full((1, 128, 128, 3), 200, np.uint8))
    assert fed.shape == (1, 32, 64, 3) and (fed[0, :, :16] == 114).all() and (fed[0, :, 16:48] == 200).all()
    assert Resize.plan("letterbox", (128, 128), (32, 64), bits=12).grey == round(114 * 4095 / 255)
    m = load(p, resize="stretch")
    m.check_fits(128, 3)
    np.testing.assert_allclose(m.infer(np.full((1, 128, 128, 3), 255, np.uint8))[0].xyxy, [[32, 0, 96, 128]])  # x / 0.5, y / 0.25


# ------------------------------------------------------------------ stitching, NMS, merging, AP


def test_stitch_merges_a_defect_seen_by_two_tiles_and_drops_the_padding():
    left = Detections(np.array([[40, 10, 64, 20], [0, 30, 10, 40]], np.float32), np.array([0, 1], np.int32),
                      np.array([0.6, 0.5], np.float32), np.array([240, 100], np.float32))
    right = Detections(np.array([[0, 10, 20, 20], [8, 30, 20, 40], [60, 0, 64, 4]], np.float32),
                       np.array([0, 0, 0], np.int32), np.array([0.9, 0.4, 0.3], np.float32),
                       np.array([200, 120, 16], np.float32))
    d = stitch([left, right], [(0, 0), (0, 48)], (64, 100))  # right tile's last box lies in the padding
    o = np.argsort(-d.score)
    # the two parts of class 0 across the tile border merge (best score), class 1 beside them does not
    np.testing.assert_allclose(d.xyxy[o], [[40, 10, 68, 20], [0, 30, 10, 40], [56, 30, 68, 40]])
    np.testing.assert_allclose(d.score[o], [0.9, 0.5, 0.4])
    assert d.class_id[o].tolist() == [0, 1, 0]


def test_average_precision_known_values():
    gt = np.array([[0, 0, 10, 10], [20, 0, 30, 10]], float)
    pred = np.array([[0, 0, 10, 10], [50, 50, 60, 60], [20, 0, 30, 10], [0, 0, 10, 10]], float)
    score = np.array([0.9, 0.8, 0.7, 0.6])
    tp = match(pred, score, gt)
    assert tp[:, 0].tolist() == [True, False, True, False]  # the duplicate of box 1 is a false positive
    # TP, FP, TP over 2 boxes: precision 1 up to recall 0.5 (51 points), 2/3 beyond (50 points)
    assert average_precision(score, tp[:, 0], 2) == pytest.approx((51 + 50 * 2 / 3) / 101)
    assert average_precision(score[[2, 0]], np.array([True, True]), 2) == 1.0
    assert average_precision(np.array([0.9, 0.8]), np.array([False, True]), 1) == pytest.approx(0.5)
    assert average_precision(np.zeros(0), np.zeros(0, bool), 3) == 0.0
    assert average_precision(score, tp[:, 0], 0) is None


# ------------------------------------------------------------------ eval-model on a YOLO dataset


def yolo_set(root: Path, labels: list[str]) -> Path:
    """One 64 x 128 image (two 64 px tiles): a white pixel in the left tile, the right one black."""
    import cv2

    (root / "val" / "images").mkdir(parents=True)
    (root / "val" / "labels").mkdir(parents=True)
    img = np.zeros((64, 128, 3), np.uint8)
    img[0, 0] = 255
    cv2.imwrite(str(root / "val" / "images" / "a.png"), img)
    (root / "val" / "labels" / "a.txt").write_text("".join(f"{ln}\n" for ln in labels))
    (root / "data.yaml").write_text("names: ['Hole', 'cut']\n")
    return root


def _label(cx, cy, w, h, s, c) -> str:
    return f"{c} {cx / 128} {cy / 64} {w / 128} {h / 64}"


def test_eval_model_detection_ap_perfect_boxes(tmp_path):
    m = load(detector(tmp_path / "d.onnx", _rows([A, C, B])), score_threshold=0.25)
    r = evaluate_model(m, find_dataset(yolo_set(tmp_path / "ds", [_label(*A), _label(*C), _label(*B)])),
                       tile=64, overlap=0)
    d = r["detection"]
    assert r["tiling"]["tiles"] == 2 and d["class_aware"] and d["boxes_from"] == "detector boxes"
    assert d["map50"] == d["map50_95"] == d["map50_agnostic"] == d["map50_95_agnostic"] == 1.0
    assert (d["precision"], d["recall"], d["f1"], d["n_gt"]) == (1.0, 1.0, 1.0, 3)
    assert d["per_class"]["Hole"]["model_classes"] == ["hole"] and d["per_class"]["cut"]["ap50"] == 1.0
    assert "mAP50 1.000" in format_report(r)


def test_eval_model_detection_ap_false_positive_ranked_first(tmp_path):
    c_first = (48, 16, 16, 16, 0.95, 0)  # C unlabelled and scored above A
    m = load(detector(tmp_path / "d.onnx", _rows([A, c_first, B])), score_threshold=0.25)
    ds = yolo_set(tmp_path / "ds", [_label(*A), _label(*B)])
    d = evaluate_model(m, find_dataset(ds), tile=64, overlap=0)["detection"]
    # class-agnostic: FP, TP, TP over 2 boxes -> precision 2/3 at every recall
    assert d["map50_agnostic"] == pytest.approx(2 / 3) and d["map50_95_agnostic"] == pytest.approx(2 / 3)
    # hole: FP then TP over 1 box -> 0.5; cut: 1.0
    assert d["per_class"]["Hole"]["ap50"] == pytest.approx(0.5) and d["map50"] == pytest.approx(0.75)
    assert (d["tp"], d["fp"], d["fn"]) == (2, 1, 0) and d["f1"] == pytest.approx(0.8)
    # --threshold above the false positive's score... moves the operating point only
    d = evaluate_model(m, find_dataset(ds), tile=64, overlap=0, threshold=0.96)["detection"]
    assert (d["tp"], d["fp"], d["fn"]) == (0, 0, 2) and d["map50_agnostic"] == pytest.approx(2 / 3)
    out = tmp_path / "r.json"
    assert main(["eval-model", "--model", str(m.path), str(ds), "--tile", "64", "--overlap", "0",
                 "--json", str(out)]) == 0
    j = json.loads(out.read_text())["detection"]
    assert {"map50", "map50_95", "map50_agnostic", "per_class"} <= j.keys()


def test_the_shipped_detector_and_its_station_file() -> None:
    """builtin:detector (trained by python -m edge_inspector.train.detector) loads through its
    demo station file as a detection model with the dataset's 8 classes, and its boxes land in
    tile px inside the tile."""
    from pathlib import Path

    from edge_inspector.config import load_station

    st = load_station(Path(__file__).resolve().parents[1] / "configs" / "stations" / "demo-8k-detector.toml")
    assert st.model.path == "builtin:detector"
    m = Model.load(st.model.model_copy(update={"providers": ["CPUExecutionProvider"]}))
    assert m.kind == "detection" and m.decoder.name == "yolo" and len(m.class_names) == 8
    assert "Hole" in m.class_names and m.score_threshold == 0.25
    rng = np.random.default_rng(0)
    tile = np.clip(rng.normal(140, 10, (1, 256, 256, 3)), 0, 255).astype(np.uint8)
    tile[0, 100:140, 60:200] = 30  # a dark gash
    dets = m.decoder.ranking(0.01).decode(m.run_raw(tile), 1, (256, 256))[0]  # its scores here: < 0.1
    assert len(dets) > 0
    assert (dets.xyxy >= 0).all() and (dets.xyxy <= 256).all() and (dets.xyxy[:, 2:] > dets.xyxy[:, :2]).all()
