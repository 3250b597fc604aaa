"""Inference: the baseline ONNX model, the decoders, Model.load and provider selection.

No mocks: every model here is a real ONNX graph (built with onnx.helper) run in onnxruntime.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from structlog.testing import capture_logs

from edge_inspector.config import ModelCfg
from edge_inspector.detections import Detections
from edge_inspector.errors import ModelError
from edge_inspector.inference import BUILTIN_MODELS, DECODERS, DEFAULT_MODEL, Model, build_baseline
from edge_inspector.inference.baseline import BASELINE_PATH
from edge_inspector.inference.runtime import openvino_available

CPU = ["CPUExecutionProvider"]


# ------------------------------------------------------------------ synthetic leather


def leather(h: int = 1024, w: int = 1024, seed: int = 0, falloff: float = 0.2,
            base=(150, 105, 70), grain: float = 1.0) -> np.ndarray:
    """RGB leather: grain at three scales, pores, sensor noise, illumination fall-off across."""
    rng = np.random.default_rng(seed)

    def noise(hh: int, ww: int, sigma: float) -> np.ndarray:
        n = cv2.GaussianBlur(rng.standard_normal((hh, ww)).astype(np.float32), (0, 0), sigma)
        return n / n.std()

    coarse = cv2.resize(noise(h // 8, w // 8, 3.0), (w, h), interpolation=cv2.INTER_LINEAR)
    tex = 1 + grain * (0.05 * noise(h, w, 1.0) + 0.03 * noise(h, w, 4.0) + 0.03 * coarse)
    tex[rng.random((h, w)) < 0.01] *= 0.85  # pores
    illum = 1 - falloff * np.linspace(0, 1, w, dtype=np.float32)[None, :]
    img = np.asarray(base, np.float32)[None, None, :] * (tex * illum)[..., None]
    img += rng.normal(0, 2, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def belt_right_of(img: np.ndarray, seed: int = 0) -> np.ndarray:
    """Belt (~40 grey) right of a wavy hide edge around x = 600."""
    rng = np.random.default_rng(seed)
    h, w = img.shape[:2]
    out = img.copy()
    edge = (600 + 60 * np.sin(np.arange(h) / 90.0) + 20 * np.sin(np.arange(h) / 17.0)).astype(int)
    belt = np.clip(rng.normal(40, 3, img.shape), 0, 255).astype(np.uint8)
    cols = np.arange(w)[None, :]
    on_belt = cols >= edge[:, None]
    out[on_belt] = belt[on_belt]
    return out


@pytest.fixture(scope="module")
def baseline() -> Model:
    # ONNX Runtime's CPU provider as the reference runtime (tests/test_runtime.py compares OpenVINO to it)
    return Model.load(ModelCfg(path="builtin:baseline", providers=CPU, cpu_runtime="onnxruntime"))


# ------------------------------------------------------------------ baseline model


def test_committed_baseline_equals_fresh_build():
    fresh = build_baseline()
    committed = onnx.load(str(BASELINE_PATH))
    assert BASELINE_PATH.stat().st_size < 1_000_000
    assert [n.op_type for n in committed.graph.node] == [n.op_type for n in fresh.graph.node], (
        "edge_inspector/models/baseline.onnx is stale: run python -m edge_inspector.inference.baseline")
    assert {p.key: p.value for p in committed.metadata_props} == {p.key: p.value for p in fresh.metadata_props}
    fi = {i.name: numpy_helper.to_array(i) for i in fresh.graph.initializer}
    for i in committed.graph.initializer:
        np.testing.assert_array_equal(numpy_helper.to_array(i), fi[i.name])
    assert [(n.name, [str(a) for a in n.attribute]) for n in committed.graph.node] == [
        (n.name, [str(a) for a in n.attribute]) for n in fresh.graph.node]


def test_baseline_metadata_contract(baseline: Model):
    props = {p.key: p.value for p in build_baseline().metadata_props}
    assert props["edge_inspector.kind"] == "segmentation"
    assert json.loads(props["edge_inspector.classes"]) == ["dark", "bright"]
    inp = json.loads(props["edge_inspector.input"])
    assert inp["layout"] == "NHWC" and inp["dtype"] == "uint8" and inp["channels"] == 3
    assert json.loads(props["edge_inspector.output"])["stride"] == 2
    assert props["edge_inspector.mm_per_px"] == "0.37"
    assert float(props["edge_inspector.score_threshold"]) == 0.3
    assert baseline.kind == "segmentation" and baseline.class_names == ["dark", "bright"]
    assert baseline.input_channels == 3 and baseline.input_size is None
    assert baseline.score_threshold == 0.3 and baseline.provider == "CPUExecutionProvider"
    # small outputs: two uint8 maps at half resolution
    raw = baseline.run_raw(leather(256, 320, seed=1)[None])
    assert raw["class_map"].shape == (1, 128, 160) and raw["class_map"].dtype == np.uint8
    assert raw["score_map"].shape == (1, 128, 160) and raw["score_map"].dtype == np.uint8


def test_default_model_is_the_pretrained_encoder_unet_and_every_builtin_loads():
    m = Model.load(ModelCfg(path="builtin:default", providers=CPU))
    assert DEFAULT_MODEL == "lite0-attention-unet" and m.path == BUILTIN_MODELS["lite0-attention-unet"]
    assert m.metadata["edge_inspector.name"] == "lite0-attention-unet" and m.kind == "segmentation"
    # chosen on the real val photos (best recall at <= 0.5 false blobs per photo), core and extent
    assert m.score_threshold == 0.84 and m.min_area_px == 32 and m.decoder.extent == 0.4
    assert json.loads(m.metadata["edge_inspector.training"])["config"]["encoder"] == "lite0"
    assert Model.load(ModelCfg(path="builtin:baseline", providers=CPU)).path == BASELINE_PATH
    for name in BUILTIN_MODELS:
        b = Model.load(ModelCfg(path=f"builtin:{name}", providers=CPU))
        b.check_fits(512, 3, name)
        assert len(b.infer(leather(256, 256, seed=0)[None])) == 1
    learned = Model.load(ModelCfg(path="builtin:attention-unet", providers=CPU))
    assert learned.kind == "segmentation" and learned.metadata["edge_inspector.name"] == "attention-unet"
    # 0.75 with cores of 32 px and extents down to 0.4: the lowest threshold with <= 0.5 false
    # blobs per real val photo (docs/models.md)
    assert learned.score_threshold == 0.75 and learned.min_area_px == 32 and learned.decoder.extent == 0.4
    assert learned.decoder.spec.get("components") == "defect"
    assert "hole" in learned.class_names and "Hole" not in learned.class_names  # synonyms folded
    # the station's setting wins over the model's default
    assert Model.load(ModelCfg(path="builtin:attention-unet", providers=CPU, min_area_px=6)).min_area_px == 6


@pytest.mark.parametrize("seed,grain,falloff", [(0, 1.0, 0.2), (1, 1.5, 0.25), (2, 0.5, 0.15)])
def test_baseline_quiet_on_plain_leather(baseline: Model, seed, grain, falloff):
    d = baseline.infer(leather(seed=seed, grain=grain, falloff=falloff)[None])[0]
    assert len(d) == 0, d.xyxy


@pytest.mark.parametrize("seed", [3, 4])
def test_baseline_quiet_on_hide_belt_border(baseline: Model, seed):
    img = belt_right_of(leather(seed=seed), seed=seed)
    raw = baseline.run_raw(img[None])
    assert len(baseline.decoder.decode(raw, 1, img.shape[:2])[0]) == 0
    # belt pixels never carry a score
    assert raw["score_map"][0, :, 400:].max() == 0


def _center(d: Detections, i: int) -> np.ndarray:
    x0, y0, x1, y1 = d.xyxy[i]
    return np.array([(x0 + x1) / 2, (y0 + y1) / 2])


def test_baseline_finds_dots_and_a_hole_where_they_are(baseline: Model):
    img = leather(seed=5)
    drawn = {  # (x, y, radius, colour, class)
        "dark dot": (200, 300, 4, (60, 40, 28), "dark"),    # 3 mm
        "bright dot": (600, 300, 4, (230, 180, 140), "bright"),
        "hole": (400, 700, 11, (40, 40, 40), "dark"),       # 8 mm, belt shows through
    }
    for x, y, r, colour, _ in drawn.values():
        cv2.circle(img, (x, y), r, colour, -1)
    two = np.stack([img, leather(seed=6)])  # a batch: one tile with defects, one clean
    dets = baseline.infer(two)
    assert len(dets) == 2 and len(dets[1]) == 0
    d = dets[0]
    assert len(d) == 3, d.xyxy
    assert d.polygons is not None
    for name, (x, y, r, _, cls) in drawn.items():
        dist = [np.hypot(*(_center(d, i) - (x + 0.5, y + 0.5))) for i in range(len(d))]
        i = int(np.argmin(dist))
        assert dist[i] <= 3, (name, d.xyxy[i])
        assert baseline.class_names[d.class_id[i]] == cls, name
        x0, y0, x1, y1 = d.xyxy[i]
        assert abs(x0 - (x - r)) <= 5 and abs(x1 - (x + r + 1)) <= 5, (name, d.xyxy[i])
        assert abs(y0 - (y - r)) <= 5 and abs(y1 - (y + r + 1)) <= 5, (name, d.xyxy[i])
        assert 0.3 <= d.score[i] <= 1.0
        true_area = np.pi * (r + 0.5) ** 2
        assert 0.5 * true_area <= d.area_px[i] <= 3.0 * true_area, (name, d.area_px[i])
        poly = d.polygons[i]
        assert poly.ndim == 2 and poly.shape[1] == 2 and len(poly) >= 3
        assert (poly.min(0) >= d.xyxy[i, :2] - 1).all() and (poly.max(0) <= d.xyxy[i, 2:] + 1).all()


def test_baseline_finds_a_hole_near_the_border_but_not_the_border(baseline: Model):
    img = belt_right_of(leather(seed=8), seed=8)
    cv2.circle(img, (300, 500), 12, (40, 40, 40), -1)
    d = baseline.infer(img[None])[0]
    assert len(d) == 1, d.xyxy
    assert np.hypot(*(_center(d, 0) - (300.5, 500.5))) <= 3


# ------------------------------------------------------------------ segmentation decoder


def _seg(score_threshold=0.3, min_area_px=6, stride=2):
    return DECODERS["segmentation"](
        class_names=["dark", "bright"], score_threshold=score_threshold, min_area_px=min_area_px,
        spec={"class_map": "class_map", "score_map": "score_map", "stride": stride},
    )


def test_segmentation_decoder_class_map():
    cm = np.zeros((2, 64, 80), np.uint8)
    sm = np.zeros_like(cm)
    cm[0, 10:14, 20:25] = 1        # dark, 4x5 map px
    sm[0, 10:14, 20:25] = 100
    cm[0, 40:43, 60:62] = 2        # bright, 3x2
    sm[0, 40:43, 60:62] = 200
    cm[0, 50, 5] = 1               # 1 map px = 4 tile px < min_area 6
    sm[0, 50, 5] = 255
    cm[0, 30:33, 30:33] = 1        # weak: peak below the threshold (hysteresis)
    sm[0, 30:33, 30:33] = 50
    dets = _seg().decode({"class_map": cm, "score_map": sm}, 2, (128, 160))
    assert len(dets) == 2 and len(dets[1]) == 0
    d = dets[0]
    order = np.argsort(d.class_id)
    np.testing.assert_array_equal(d.class_id[order], [0, 1])
    np.testing.assert_allclose(d.xyxy[order], [[40, 20, 50, 28], [120, 80, 124, 86]])
    np.testing.assert_allclose(d.area_px[order], [20 * 4, 6 * 4])
    np.testing.assert_allclose(d.score[order], [100 / 255, 200 / 255], rtol=1e-6)
    p = d.polygons[order[0]]
    assert p.min(0).tolist() == [41.0, 21.0] and p.max(0).tolist() == [49.0, 27.0]
    # min_area filter and a higher threshold
    assert len(_seg(min_area_px=0).decode({"class_map": cm, "score_map": sm}, 2, (128, 160))[0]) == 3
    assert len(_seg(min_area_px=0, score_threshold=0.0).decode({"class_map": cm, "score_map": sm}, 2, (128, 160))[0]) == 4
    strong = _seg(score_threshold=0.5).decode({"class_map": cm, "score_map": sm}, 2, (128, 160))[0]
    assert strong.class_id.tolist() == [1]


def test_segmentation_decoder_defect_components_take_the_majority_class():
    """``components: defect`` in the output spec: one defect whose pixels disagree on the class
    stays one detection, with its majority class; per-class components would split it in two."""
    cm = np.zeros((1, 32, 40), np.uint8)
    sm = np.zeros_like(cm)
    cm[0, 4:8, 4:10] = 1     # 24 px class 0 ...
    cm[0, 4:8, 10:12] = 2    # ... touching 8 px class 1: one defect, majority class 0
    sm[0, 4:8, 4:12] = 120
    sm[0, 6, 11] = 250       # the peak sits on the minority class
    cm[0, 20:22, 30:33] = 2  # a separate weak blob: below the threshold
    sm[0, 20:22, 30:33] = 60
    spec = {"class_map": "class_map", "score_map": "score_map", "stride": 2}
    by_defect = DECODERS["segmentation"](class_names=["dark", "bright"], score_threshold=0.3, min_area_px=0,
                                         spec={**spec, "components": "defect"})
    d = by_defect.decode({"class_map": cm, "score_map": sm}, 1, (64, 80))[0]
    assert len(d) == 1 and d.class_id.tolist() == [0]
    np.testing.assert_allclose(d.xyxy, [[8, 8, 24, 16]])
    np.testing.assert_allclose(d.score, [250 / 255], rtol=1e-6)
    np.testing.assert_allclose(d.area_px, [32 * 4])
    assert d.polygons is not None and len(d.polygons) == 1
    per_class = _seg(min_area_px=0).decode({"class_map": cm, "score_map": sm}, 1, (64, 80))[0]
    assert sorted(per_class.class_id.tolist()) == [0, 1]
    # "large": a big component needs only the lower threshold; a small one still the full one
    cm[0, 12:20, 4:20] = 1   # 128 map px = 512 tile px, peak 0.4
    sm[0, 12:20, 4:20] = 102
    cm[0, 26:28, 4:6] = 1    # 4 map px, peak 0.4
    sm[0, 26:28, 4:6] = 102
    lg = DECODERS["segmentation"](class_names=["dark", "bright"], score_threshold=0.9, min_area_px=0,
                                  spec={**spec, "components": "defect", "large": {"area_px": 400, "threshold": 0.35}})
    d = lg.decode({"class_map": cm, "score_map": sm}, 1, (64, 80))[0]
    assert sorted(d.area_px.tolist()) == [32 * 4, 128 * 4]  # the 4 px blob and the weak 3x2 blob stay out
    with pytest.raises(ValueError, match="area_px"):
        DECODERS["segmentation"](class_names=["a"], spec={**spec, "components": "defect", "large": {"area": 1}})


def test_segmentation_decoder_class_map_without_score_or_stride():
    cm = np.zeros((1, 32, 32), np.uint8)
    cm[0, 4:8, 4:6] = 2
    dec = DECODERS["segmentation"](class_names=["dark", "bright"], score_threshold=0.5, min_area_px=0)
    d = dec.decode({"class_map": cm}, 1, (128, 128))[0]  # stride 4 from the shapes
    np.testing.assert_allclose(d.xyxy, [[16, 16, 24, 32]])
    assert d.class_id.tolist() == [1] and d.score.tolist() == [1.0] and d.area_px.tolist() == [128.0]


def test_segmentation_decoder_logits_and_single_channel():
    logits = np.full((1, 3, 16, 16), -5.0, np.float32)
    logits[:, 0] = 5.0                       # background everywhere...
    logits[0, 2, 2:5, 3:7] = 10.0            # ...but class 2 (index 1 without background)
    dec = DECODERS["segmentation"](class_names=["cut", "hole"], score_threshold=0.5, min_area_px=0)
    d = dec.decode({"logits": logits}, 1, (64, 64))[0]
    assert d.class_id.tolist() == [1]
    np.testing.assert_allclose(d.xyxy, [[12, 8, 28, 20]])
    assert d.score[0] > 0.99 and d.area_px[0] == 12 * 16
    prob = np.zeros((2, 1, 16, 16), np.float32)
    prob[1, 0, 8:10, 8:10] = 0.9
    prob[1, 0, 0, 0] = 0.2
    d = DECODERS["segmentation"](class_names=["defect"], score_threshold=0.5).decode({"p": prob}, 2, (32, 32))
    assert len(d[0]) == 0 and len(d[1]) == 1
    np.testing.assert_allclose(d[1].xyxy, [[16, 16, 20, 20]])
    assert d[1].score[0] == pytest.approx(0.9)


# ------------------------------------------------------------------ yolo, anomaly, classification


def _yolo_tensor() -> np.ndarray:
    """(1, 4+2, 4 anchors): two overlapping class-0 boxes, one class-1 box, one weak box."""
    t = np.zeros((1, 6, 4), np.float32)
    t[0, :4, 0] = [100, 100, 40, 40]; t[0, 4, 0] = 0.9
    t[0, :4, 1] = [104, 102, 40, 40]; t[0, 4, 1] = 0.8    # overlaps anchor 0 -> suppressed
    t[0, :4, 2] = [300, 200, 20, 60]; t[0, 5, 2] = 0.7
    t[0, :4, 3] = [500, 500, 20, 20]; t[0, 4, 3] = 0.1    # below the threshold
    return t


def test_yolo_decoder_nms_keeps_one_of_two_overlapping():
    dec = DECODERS["yolo"](class_names=["hole", "cut"], score_threshold=0.25, min_area_px=6)
    for t in (_yolo_tensor(), _yolo_tensor().transpose(0, 2, 1).copy()):  # both layouts
        d = dec.decode({"output0": t}, 1, (640, 640))[0]
        order = np.argsort(-d.score)
        assert d.class_id[order].tolist() == [0, 1]
        np.testing.assert_allclose(d.xyxy[order], [[80, 80, 120, 120], [290, 170, 310, 230]])
        np.testing.assert_allclose(d.score[order], [0.9, 0.7])
        np.testing.assert_allclose(d.area_px[order], [1600, 1200])


def test_anomaly_decoder():
    amap = np.zeros((2, 1, 32, 32), np.float32)
    amap[0, 0, 10:12, 20:24] = 0.8
    amap[0, 0, 0:2, 0:2] = 0.3
    dec = DECODERS["anomaly"](class_names=["anomaly"], score_threshold=0.5, min_area_px=0)
    d = dec.decode({"anomaly_map": amap, "pred_score": np.array([0.8, 0.1], np.float32)}, 2, (256, 256))
    assert len(d[1]) == 0 and len(d[0]) == 1
    np.testing.assert_allclose(d[0].xyxy, [[160, 80, 192, 96]])
    assert d[0].class_id.tolist() == [0] and d[0].score[0] == pytest.approx(0.8)
    assert d[0].area_px[0] == 8 * 64
    only_score = dec.decode({"pred_score": np.array([[0.9], [0.2]], np.float32)}, 2, (256, 256))
    np.testing.assert_allclose(only_score[0].xyxy, [[0, 0, 256, 256]]) and len(only_score[1]) == 0


def test_classification_decoder():
    dec = DECODERS["classification"](class_names=["good", "hole"], score_threshold=0.5)
    d = dec.decode({"logits": np.array([[3.0, -1.0], [-2.0, 2.0]], np.float32)}, 2, (64, 64))
    assert len(d[0]) == 0 and d[1].class_id.tolist() == [1]
    np.testing.assert_allclose(d[1].xyxy, [[0, 0, 64, 64]])


# ------------------------------------------------------------------ foreign models end to end


def _save(tmp_path: Path, name: str, nodes, inputs, outputs, inits=(), props=None) -> Path:
    g = helper.make_graph(nodes, name, inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    if props:
        helper.set_model_props(m, props)
    p = tmp_path / f"{name}.onnx"
    onnx.save(m, str(p))
    return p


def _yolo_onnx(tmp_path: Path, props=None) -> Path:
    """A 'yolo export': float NCHW input, output = the fixed tensor + 0 x mean(input)."""
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["m"], keepdims=0),
        helper.make_node("Mul", ["m", "zero"], ["z"]),
        helper.make_node("Add", ["boxes", "z"], ["output0"]),
    ]
    inits = [numpy_helper.from_array(_yolo_tensor(), "boxes"),
             numpy_helper.from_array(np.array(0, np.float32), "zero")]
    return _save(
        tmp_path, "yolo", nodes,
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 640, 640])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 6, 4])], inits,
        props if props is not None else {"names": "{0: 'hole', 1: 'cut'}"},
    )


def test_foreign_yolo_model_runs_with_decoder_from_station(tmp_path):
    p = _yolo_onnx(tmp_path)
    m = Model.load(ModelCfg(path=str(p), decoder="yolo", providers=CPU, score_threshold=0.25))
    assert m.class_names == ["hole", "cut"] and m.kind == "detection"
    assert m.input_size == (640, 640) and m.input_channels == 3 and m.fixed_batch == 1
    dets = m.infer(np.zeros((2, 640, 640, 3), np.uint8))  # fixed batch 1: two calls
    assert [len(d) for d in dets] == [2, 2]
    m.check_fits(640, 3)
    with pytest.raises(ModelError) as e:
        m.check_fits(2048, 3, "station.toml")
    assert "tiling.tile" in str(e.value) and "640" in str(e.value) and "station.toml" in str(e.value)


def test_foreign_anomaly_model(tmp_path):
    """anomaly_map = the input's first channel at half resolution (scaled 0..1)."""
    nodes = [
        helper.make_node("Slice", ["input", "s0", "s1", "ax"], ["c0"]),
        helper.make_node("AveragePool", ["c0"], ["anomaly_map"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("ReduceMax", ["anomaly_map"], ["pred_score"], keepdims=0),
    ]
    inits = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
             (("s0", [0]), ("s1", [1]), ("ax", [1]))]
    p = _save(
        tmp_path, "anomalib", nodes,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("pred_score", TensorProto.FLOAT, None)], inits,
    )
    m = Model.load(ModelCfg(path=str(p), decoder="anomaly", providers=CPU, min_area_px=0))
    assert m.class_names == ["anomaly"] and m.score_threshold == 0.5
    tile = np.zeros((1, 64, 64, 3), np.uint8)
    tile[0, 20:30, 40:44, 0] = 255
    d = m.infer(tile)[0]
    np.testing.assert_allclose(d.xyxy, [[40, 20, 44, 30]])
    assert d.score[0] == pytest.approx(1.0)


# ------------------------------------------------------------------ Model.load errors


def test_load_missing_file(tmp_path):
    p = tmp_path / "nope.onnx"
    with pytest.raises(ModelError) as e:
        Model.load(ModelCfg(path=str(p), providers=CPU))
    assert str(p) in str(e.value) and "not found" in str(e.value) and "model.path" in str(e.value)


def test_load_resolves_relative_paths(tmp_path):
    _yolo_onnx(tmp_path)
    m = Model.load(ModelCfg(path="yolo.onnx", decoder="yolo", providers=CPU),
                   resolve=lambda rel: tmp_path / rel)
    assert m.path == tmp_path / "yolo.onnx"


def test_load_unknown_builtin():
    with pytest.raises(ModelError) as e:
        Model.load(ModelCfg(path="builtin:nope", providers=CPU))
    assert "nope" in str(e.value) and "builtin:baseline" in str(e.value)


def test_load_garbage_bytes(tmp_path):
    p = tmp_path / "garbage.onnx"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ModelError) as e:
        Model.load(ModelCfg(path=str(p), providers=CPU))
    assert str(p) in str(e.value) and "not an ONNX model" in str(e.value)


def test_load_without_metadata_needs_decoder(tmp_path):
    p = _yolo_onnx(tmp_path, props={})
    with pytest.raises(ModelError) as e:
        Model.load(ModelCfg(path=str(p), providers=CPU))
    msg = str(e.value)
    assert str(p) in msg and "model.decoder" in msg and "edge_inspector.kind" in msg


def _seg_onnx(tmp_path: Path, props: dict[str, str], size=("H", "W")) -> Path:
    """A tiny model with the baseline's interface: class_map = score_map = channel 0 > 128."""
    nodes = [
        helper.make_node("Slice", ["image", "s0", "s1", "ax"], ["c0"]),
        helper.make_node("Squeeze", ["c0", "ax"], ["sq"]),
        helper.make_node("Identity", ["sq"], ["score_map"]),
        helper.make_node("Greater", ["sq", "thr"], ["hi"]),
        helper.make_node("Cast", ["hi"], ["class_map"], to=TensorProto.UINT8),
    ]
    inits = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
             (("s0", [0]), ("s1", [1]), ("ax", [3]))] + [numpy_helper.from_array(np.array(128, np.uint8), "thr")]
    return _save(
        tmp_path, "seg", nodes,
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", *size, 3])],
        [helper.make_tensor_value_info("class_map", TensorProto.UINT8, None),
         helper.make_tensor_value_info("score_map", TensorProto.UINT8, None)], inits, props,
    )


def _props(**over) -> dict[str, str]:
    p = {
        "edge_inspector.kind": "segmentation",
        "edge_inspector.classes": json.dumps(["defect"]),
        "edge_inspector.input": json.dumps({"layout": "NHWC", "dtype": "uint8", "channels": 3, "size": [None, None]}),
        "edge_inspector.output": json.dumps({"class_map": "class_map", "score_map": "score_map", "stride": 1}),
    }
    p.update(over)
    return {k: v for k, v in p.items() if v is not None}


@pytest.mark.parametrize("key,value,needle", [
    ("edge_inspector.kind", "magic", "edge_inspector.kind"),
    ("edge_inspector.kind", None, "edge_inspector.kind"),
    ("edge_inspector.classes", "[not json", "edge_inspector.classes"),
    ("edge_inspector.classes", None, "edge_inspector.classes"),
    ("edge_inspector.input", '"NHWC"', "edge_inspector.input"),
    ("edge_inspector.score_threshold", "high", "edge_inspector.score_threshold"),
    ("edge_inspector.min_area_px", "big", "edge_inspector.min_area_px"),
    ("edge_inspector.output", json.dumps({"class_map": "class_map", "score_map": "score_map", "large": 5}),
     "edge_inspector.output"),
])
def test_load_bad_metadata_names_the_key(tmp_path, key, value, needle):
    p = _seg_onnx(tmp_path, _props(**{key: value}))
    with pytest.raises(ModelError) as e:
        Model.load(ModelCfg(path=str(p), providers=CPU))
    assert needle in str(e.value) and str(p) in str(e.value)


def test_contract_model_end_to_end_and_thresholds(tmp_path):
    p = _seg_onnx(tmp_path, _props(**{"edge_inspector.score_threshold": "0.6"}))
    m = Model.load(ModelCfg(path=str(p), providers=CPU, min_area_px=0))
    assert m.score_threshold == 0.6 and m.class_names == ["defect"]
    tiles = np.zeros((3, 32, 48, 3), np.uint8)
    tiles[1, 5:9, 10:20, 0] = 200
    tiles[2, 5:9, 10:20, 0] = 140  # 140/255 < 0.6: below the model's default threshold
    m.warmup()
    d = m.infer(tiles[:, :, :, :])
    assert [len(x) for x in d] == [0, 1, 0]
    np.testing.assert_allclose(d[1].xyxy, [[10, 5, 20, 9]])
    m2 = Model.load(ModelCfg(path=str(p), providers=CPU, min_area_px=0, score_threshold=0.5))
    assert m2.score_threshold == 0.5 and [len(x) for x in m2.infer(tiles)] == [0, 1, 1]


def test_check_fits_channels(baseline: Model, tmp_path):
    baseline.check_fits(2048, 3)
    # a mono camera feeds a 3-channel model: the grey channel repeated (tests/test_faults_formats.py)
    baseline.check_fits(2048, 1, tmp_path / "station.toml")
    assert baseline.feed is not None and baseline.feed.model_channels == 3
    with pytest.raises(ModelError) as e:
        baseline.check_fits(2048, 4, tmp_path / "station.toml")
    msg = str(e.value)
    assert "the model takes 3 channel(s), the camera gives 4" in msg
    assert "station.toml" in msg and str(baseline.path) in msg


def test_check_fits_fixed_size(tmp_path):
    p = _seg_onnx(tmp_path, _props(**{"edge_inspector.input": json.dumps(
        {"layout": "NHWC", "dtype": "uint8", "channels": 3, "size": [256, 256]})}), size=(256, 256))
    m = Model.load(ModelCfg(path=str(p), providers=CPU))
    assert m.input_size == (256, 256)
    m.check_fits(256, 3)
    with pytest.raises(ModelError) as e:
        m.check_fits(2048, 3, "station.toml")
    assert "model input size 256x256 does not fit tiling.tile = 2048" in str(e.value)


# ------------------------------------------------------------------ execution providers


def test_provider_fallback_is_logged():
    with capture_logs() as logs:
        m = Model.load(ModelCfg(path="builtin:baseline",
                                providers=["CUDAExecutionProvider", "CPUExecutionProvider"]))
    running = ort.get_available_providers()
    if "CUDAExecutionProvider" in running:
        pytest.skip("CUDA is available here; the fallback case needs a CPU-only machine")
    cpu = "OpenVINO:CPU" if openvino_available() else "CPUExecutionProvider"  # the fastest CPU runtime present
    assert m.provider == cpu
    events = {e["event"]: e for e in logs}
    assert events["provider_unavailable"]["provider"] == "CUDAExecutionProvider"
    assert events["model_session"]["provider"] == cpu


def test_require_provider_refuses_fallback():
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA is available here")
    with pytest.raises(ModelError) as e:
        Model.load(ModelCfg(path="builtin:baseline", require_provider=True,
                            providers=["CUDAExecutionProvider", "CPUExecutionProvider"]))
    assert "CUDAExecutionProvider" in str(e.value) and "model.providers" in str(e.value)
