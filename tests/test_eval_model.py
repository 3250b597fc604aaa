"""eval-model: datasets, tiling, dense maps (tile_maps), metrics and the command, on tiny datasets in tmp dirs.

No mocks: every model is a real ONNX graph (onnx.helper) run in onnxruntime, every dataset real
files. The real leather dataset is not used here (docs/models.md has its figures).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_inspector.cli import main
from edge_inspector.config import ModelCfg
from edge_inspector.evaluation.datasets import find_dataset, read_names
from edge_inspector.evaluation.metrics import BINS, PixelStats, aupro_hist, auroc, auroc_hist, score_bins
from edge_inspector.evaluation.model_eval import evaluate_model, score_image, tile_maps
from edge_inspector.inference import Model

CPU = ["CPUExecutionProvider"]


# ------------------------------------------------------------------ tiny ONNX models


def _save(path: Path, nodes: list, inputs: list, outputs: list, inits: list, props: dict[str, str]) -> Path:
    graph = helper.make_graph(nodes, "m", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if props:
        helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _c(name: str, value, dtype=np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype), name)


def seg_props(classes: list[str], stride: int) -> dict[str, str]:
    return {
        "edge_inspector.kind": "segmentation",
        "edge_inspector.classes": json.dumps(classes),
        "edge_inspector.input": json.dumps({"layout": "NHWC", "dtype": "uint8", "channels": 3, "size": [None, None]}),
        "edge_inspector.output": json.dumps({"class_map": "class_map", "score_map": "score_map", "stride": stride}),
        "edge_inspector.score_threshold": "0.5",
    }


def dark_model(path: Path, *, stride: int = 1, blank: bool = False, classes: tuple[str, ...] = ("dark",)) -> Path:
    """Marks dark pixels: score = clip((100 - grey) / 40, 0, 1); ``stride`` 4 = the trained-model
    contract (uint8 score_map and class_map at a quarter resolution); ``blank`` scores nothing."""
    nodes = [
        helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["f"], ["grey"], axes=[3], keepdims=0),
    ]
    g = "grey"
    if stride > 1:
        nodes += [
            helper.make_node("Unsqueeze", ["grey", "ax1"], ["g4"]),
            helper.make_node("AveragePool", ["g4"], ["p4"], kernel_shape=[stride, stride], strides=[stride, stride]),
            helper.make_node("Squeeze", ["p4", "ax1"], ["gs"]),
        ]
        g = "gs"
    nodes += [
        helper.make_node("Sub", ["hundred", g], ["d"]),
        helper.make_node("Div", ["d", "forty"], ["q"]),
        helper.make_node("Mul", ["q", "gain"], ["qg"]),
        helper.make_node("Clip", ["qg", "zero", "one"], ["score"]),
        helper.make_node("GreaterOrEqual", ["score", "half"], ["on"]),
        helper.make_node("Cast", ["on"], ["class_map"], to=TensorProto.UINT8),
    ]
    if stride > 1:
        nodes += [
            helper.make_node("Mul", ["score", "u8scale"], ["s255"]),
            helper.make_node("Add", ["s255", "half"], ["s255r"]),
            helper.make_node("Cast", ["s255r"], ["score_map"], to=TensorProto.UINT8),
        ]
        score_type = TensorProto.UINT8
    else:
        nodes.append(helper.make_node("Identity", ["score"], ["score_map"]))
        score_type = TensorProto.FLOAT
    inits = [_c("hundred", 100.0), _c("forty", 40.0), _c("gain", 0.0 if blank else 1.0), _c("zero", 0.0),
             _c("one", 1.0), _c("half", 0.5), _c("u8scale", 255.0), _c("ax1", [1], np.int64)]
    return _save(
        path, nodes,
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", "H", "W", 3])],
        [helper.make_tensor_value_info("class_map", TensorProto.UINT8, ["N", "h", "w"]),
         helper.make_tensor_value_info("score_map", score_type, ["N", "h", "w"])],
        inits, seg_props(list(classes), stride),
    )


def anomaly_model(path: Path, props: dict[str, str] | None = None) -> Path:
    """anomalib-style export: float NCHW input in 0..1, raw ``anomaly_map`` = 40 x (1 - mean)."""
    nodes = [
        helper.make_node("ReduceMean", ["input"], ["m"], axes=[1], keepdims=1),
        helper.make_node("Sub", ["one", "m"], ["inv"]),
        helper.make_node("Mul", ["inv", "forty"], ["anomaly_map"]),
        helper.make_node("ReduceMax", ["anomaly_map"], ["pred_score"], axes=[1, 2, 3], keepdims=0),
    ]
    return _save(
        path, nodes,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, ["N", 1, "H", "W"]),
         helper.make_tensor_value_info("pred_score", TensorProto.FLOAT, ["N"])],
        [_c("one", 1.0), _c("forty", 40.0)], props or {},
    )


def box_model(path: Path) -> Path:
    """An ultralytics-shaped detector that always finds one box: cx 50, cy 40, w 20, h 10, score 0.9."""
    nodes = [
        helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["f"], ["m"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Unsqueeze", ["m", "ax12"], ["m3"]),
        helper.make_node("Mul", ["m3", "zero"], ["z"]),
        helper.make_node("Add", ["z", "box"], ["output0"]),
    ]
    props = {
        "edge_inspector.kind": "detection",
        "edge_inspector.classes": json.dumps(["hole"]),
        "edge_inspector.input": json.dumps({"layout": "NHWC", "dtype": "uint8", "channels": 3, "size": [None, None]}),
        "edge_inspector.score_threshold": "0.5",
    }
    box = np.array([50, 40, 20, 10, 0.9], np.float32).reshape(1, 5, 1)
    return _save(
        path, nodes,
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", "H", "W", 3])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["N", 5, 1])],
        [_c("ax12", [1, 2], np.int64), _c("zero", 0.0), _c("box", box)], props,
    )


def load(path: Path, **kw) -> Model:
    return Model.load(ModelCfg(path=str(path), providers=CPU, **kw))


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    return {
        "dark": dark_model(d / "dark.onnx"),
        "dark4": dark_model(d / "dark4.onnx", stride=4),
        "blank": dark_model(d / "blank.onnx", blank=True),
        "hole": dark_model(d / "hole.onnx", classes=("hole", "scratch")),
        "anomaly": anomaly_model(d / "anomaly.onnx"),
        "box": box_model(d / "box.onnx"),
    }


# ------------------------------------------------------------------ tiny datasets


def leather(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(150, 6, (h, w, 3)), 0, 255).astype(np.uint8)


def blob(img: np.ndarray, centre: tuple[int, int], r: int) -> np.ndarray:
    """Draw a dark disc (RGB 30) on ``img``; returns its mask (bool)."""
    mask = np.zeros(img.shape[:2], np.uint8)
    cv2.circle(mask, centre, r, 255, -1)
    img[mask > 0] = 30
    return mask > 0


def write_png(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img[..., ::-1] if img.ndim == 3 else img)


@pytest.fixture(scope="module")
def mvtec(tmp_path_factory) -> Path:
    """6 test images 256x256: 2 good, 4 with a dark blob (and its 0/255 mask)."""
    root = tmp_path_factory.mktemp("mvtec")
    write_png(root / "train" / "good" / "000.png", leather(256, 256, 99))
    for i in range(2):
        write_png(root / "test" / "good" / f"{i:03d}.png", leather(256, 256, i))
    for i, (c, r) in enumerate([((60, 70), 25), ((180, 120), 18), ((128, 200), 30), ((90, 180), 12)]):
        img = leather(256, 256, 10 + i)
        m = blob(img, c, r)
        write_png(root / "test" / "blob" / f"{i:03d}.png", img)
        write_png(root / "ground_truth" / "blob" / f"{i:03d}_mask.png", m.astype(np.uint8) * 255)
    return root


def _boxes_mask(lines: list[str], hw: tuple[int, int]) -> np.ndarray:
    m = np.zeros(hw, bool)
    for line in lines:
        _, cx, cy, w, h = (float(v) for v in line.split())
        y0, y1 = round((cy - h / 2) * hw[0]), round((cy + h / 2) * hw[0])
        m[y0:y1, round((cx - w / 2) * hw[1]) : round((cx + w / 2) * hw[1])] = True
    return m


def yolo_dataset(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """val/, all 320x320 (classes 0 hole, 1 scratch), boxes on whole pixels:
    a: box 1 (hole) around a blob (found), box 2 (scratch) empty (missed), a blob outside (false);
    b: empty label file; c: no label file;
    d: a 32 px box (hole) half covered by a big blob mostly outside it (found by coverage), a
       128 px box (scratch) holding a small blob (found: the blob lies inside), a 32 px box (hole)
       grazed by a blob (< 10 % covered: missed; the blob touches it: not false).
    Returns per image (drawn blob mask, box mask)."""
    labels = {"a": ["0 0.25 0.25 0.2 0.2", "1 0.75 0.25 0.2 0.2"], "b": [],
              "d": ["0 0.2 0.2 0.1 0.1", "1 0.75 0.75 0.4 0.4", "0 0.2 0.8 0.1 0.1"]}
    blobs = {"a": [((80, 80), 20), ((240, 240), 10)], "d": [((104, 64), 40), ((240, 240), 8), ((108, 256), 30)]}
    (root / "val" / "labels").mkdir(parents=True)
    out = {}
    for i, name in enumerate("abcd"):
        img = leather(320, 320, i)
        drawn = np.zeros((320, 320), bool)
        for c, r in blobs.get(name, []):
            drawn |= blob(img, c, r)
        write_png(root / "val" / "images" / f"{name}.png", img)
        if name in labels:
            (root / "val" / "labels" / f"{name}.txt").write_text("".join(f"{ln}\n" for ln in labels[name]))
        out[name] = drawn, _boxes_mask(labels.get(name, []), (320, 320))
    (root / "data.yaml").write_text("path: .\nval: val/images\nnc: 2\nnames: ['hole', 'scratch']\n")
    return out


# ------------------------------------------------------------------ metrics


def test_auroc_hand_computed():
    assert auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    # ties count 1/2: positives 0.5, 0.9 vs negatives 0.5, 0.2 -> (0.5 + 1 + 1 + 1) / 4
    s, y = np.array([0.5, 0.5, 0.2, 0.9]), np.array([1, 0, 0, 1], bool)
    assert auroc(s, y) == pytest.approx(0.875)
    pos = np.bincount(score_bins(s[y].astype(np.float32)), minlength=BINS)
    neg = np.bincount(score_bins(s[~y].astype(np.float32)), minlength=BINS)
    assert auroc_hist(pos, neg) == pytest.approx(0.875)
    assert auroc(s, np.ones(4, bool)) is None


def test_aupro_known_case():
    """Regions A (4 px, all 0.9) and B (4 px: two 0.9, two 0.2); 92 normal px: 5 at 0.5, rest 0.1.
    PRO is 0.75 up to FPR 5/92, then 1.0: AUPRO = (0.75 f + (0.3 - f)) / 0.3."""
    score = np.full((10, 10), 0.1, np.float32)
    gt = np.zeros((10, 10), bool)
    gt[0:2, 0:2] = True
    score[0:2, 0:2] = 0.9
    gt[5, 2:6] = True
    score[5, 2:4], score[5, 4:6] = 0.9, 0.2
    score[9, 0:5] = 0.5
    st = PixelStats(threshold=0.5)
    st.add(score, gt)
    f = 5 / 92
    assert st.regions == 2
    assert aupro_hist(st.neg, st.pro, st.regions) == pytest.approx((0.75 * f + (0.3 - f)) / 0.3)
    # a perfect score map: 1.0; no regions: undefined
    assert aupro_hist(st.neg, st.pro * 0 + np.bincount([BINS - 1], minlength=BINS) * 2, 2) == pytest.approx(1.0)
    assert aupro_hist(st.neg, st.pro, 0) is None


def test_dice_pooled_vs_mean():
    st = PixelStats(threshold=0.5)
    z = np.zeros((20, 20), np.float32)
    gt1 = np.zeros((20, 20), bool)
    gt1[:10, :10] = True  # 100 px, found exactly: Dice 1
    st.add(np.where(gt1, 1.0, 0.0).astype(np.float32), gt1)
    gt2 = np.zeros((20, 20), bool)
    gt2[:15, :] = True  # 300 px, 100 of them found: Dice 200 / 400
    st.add(np.where(gt1, 1.0, 0.0).astype(np.float32), gt2)
    st.add(z, np.zeros((20, 20), bool))  # neither mask: skipped
    fp = z.copy()
    fp[0, :10] = 1.0  # a good image with 10 false px: Dice 0, counted
    st.add(fp, np.zeros((20, 20), bool))
    r = st.pixel("ground truth")
    assert r["dice_pooled"] == pytest.approx(2 * 200 / (210 + 400))
    assert r["iou_pooled"] == pytest.approx(200 / (210 + 400 - 200))
    assert r["dice_mean"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert r["images_in_mean"] == 3 and r["images_both_empty"] == 1
    im = st.image()
    assert (im["tp"], im["fp"], im["fn"], im["tn"]) == (2, 1, 0, 1) and im["f1"] == pytest.approx(0.8)


def test_read_names_yaml_forms(tmp_path: Path):
    p = tmp_path / "data.yaml"
    for text in ("names: ['a b', 'c']\n", "names:\n  - a b\n  - c\nnc: 2\n", "names:\n  0: a b\n  1: 'c'\n",
                 "names: {0: a b, 1: c}\n"):
        p.write_text(text)
        assert read_names(p) == ["a b", "c"], text


# ------------------------------------------------------------------ dense maps (tile_maps) and tiling


@pytest.mark.parametrize("name,hw,tiles", [("dark", (500, 700), 12), ("dark4", (500, 700), 12),
                                           ("dark", (100, 152), 1)])
def test_tiled_equals_whole_image_for_pointwise_model(models, name, hw, tiles):
    """700x500 image, tile 256 (overlap 64): stitched maps = the model on the whole image; an image
    smaller than the tile is padded and cropped back."""
    m = load(models[name])
    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
    score, cls, n_tiles, _ = score_image(m, img, 256, 64, batch=3)
    whole_s, whole_c = tile_maps(m, img[None])
    assert n_tiles == tiles and score.shape == hw
    if name == "dark4":  # bilinear upsampling of a strided score: equal up to interpolation at tile seams
        assert np.mean(np.abs(score - whole_s[0]) < 1e-6) > 0.97
    else:
        np.testing.assert_array_equal(score, whole_s[0])
    np.testing.assert_array_equal(cls, whole_c[0])
    assert 0 < score.mean() < 1


def test_tiles_at_station_origins_combine_by_max(models):
    """The box model finds a box at tile px (40..60, 35..45) in every tile: the stitched map is the
    union of one box per tile origin (300x200, tile 128, overlap 100: every 28 px, last one aligned
    to the far edge), overlapping tiles combined by max."""
    score, cls, n_tiles, _ = score_image(load(models["box"]), np.zeros((200, 300, 3), np.uint8), 128, 100)
    want = np.zeros((200, 300), np.float32)
    for y in (0, 28, 56, 72):
        for x in (0, 28, 56, 84, 112, 140, 168, 172):
            want[y + 35 : y + 45, x + 40 : x + 60] = 0.9
    assert n_tiles == 32
    np.testing.assert_allclose(score, want)
    np.testing.assert_array_equal(cls, (want > 0).astype(np.int32))


def test_maps_stride4_scores_bilinear_classes_nearest(models):
    m = load(models["dark4"])
    img = leather(64, 96, 0)
    blob(img, (40, 30), 9)
    score, cls = tile_maps(m, img[None])
    raw = m.run_raw(img[None])
    assert score.shape == cls.shape == (1, 64, 96) and score.dtype == np.float32
    up = cv2.resize(raw["score_map"][0].astype(np.float32) / 255, (96, 64), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(score[0], up, atol=1e-6)
    np.testing.assert_array_equal(cls[0], np.repeat(np.repeat(raw["class_map"][0], 4, 0), 4, 1))


def test_maps_anomaly_scaling(models, tmp_path: Path):
    img = leather(32, 32, 0)
    x = 40 * (1 - img.astype(np.float32).mean(2) / 255)
    m = load(models["anomaly"], decoder="anomaly")
    raw, cls = tile_maps(m, img[None], raw=True)
    assert cls is None and raw.shape == (1, 32, 32)
    np.testing.assert_allclose(raw[0], x, rtol=1e-5)
    np.testing.assert_allclose(tile_maps(m, img[None], anomaly_range=(10.0, 30.0))[0][0], np.clip((x - 10) / 20, 0, 1),
                               atol=1e-5)
    assert tile_maps(m, img[None])[0].max() == 1.0  # raw values above 1: clipped
    # anomalib normalisation stats in the metadata: (x - threshold) / (max - min) + 0.5
    props = {"edge_inspector.kind": "anomaly", "edge_inspector.classes": '["anomaly"]',
             "edge_inspector.input": json.dumps({"layout": "NCHW", "dtype": "float32", "channels": 3}),
             "edge_inspector.output": json.dumps({"min": 0, "max": 40, "threshold": 20})}
    mm = load(anomaly_model(tmp_path / "meta.onnx", props))
    np.testing.assert_allclose(tile_maps(mm, img[None])[0][0], np.clip((x - 20) / 40 + 0.5, 0, 1), atol=1e-5)


def test_maps_detection_boxes_rasterised(models):
    m = load(models["box"])
    score, cls = tile_maps(m, np.zeros((2, 64, 96, 3), np.uint8))
    want = np.zeros((64, 96), np.float32)
    want[35:45, 40:60] = 0.9
    np.testing.assert_allclose(score[1], want)
    np.testing.assert_array_equal(cls[0], (want > 0).astype(np.int32))


# ------------------------------------------------------------------ evaluation


def test_mvtec_metrics_follow_the_model(models, mvtec):
    ds = find_dataset(mvtec)
    assert ds.layout == "mvtec" and len(ds.samples) == 6
    good = evaluate_model(load(models["dark"]), ds)
    p, im = good["pixel"], good["image"]
    assert p["mask"] == "ground truth" and p["gt_regions"] == 4
    assert p["dice_pooled"] > 0.99 and p["iou_pooled"] > 0.99 and p["dice_mean"] > 0.99
    assert p["images_in_mean"] == 4 and p["images_both_empty"] == 2
    assert p["auroc"] > 0.99 and p["aupro_30"] > 0.99
    assert im["auroc"] == 1.0 and im["f1"] == 1.0
    assert good["per_type"]["good"]["flagged"] == 0 and good["per_type"]["blob"]["flagged"] == 4
    assert good["tiling"]["tile"] == [256] and good["tiling"]["tiles"] == 6

    blank = evaluate_model(load(models["blank"]), ds)
    p, im = blank["pixel"], blank["image"]
    assert p["dice_pooled"] == 0.0 and p["dice_mean"] == 0.0
    assert p["auroc"] == pytest.approx(0.5) and im["auroc"] == pytest.approx(0.5)
    assert p["aupro_30"] == pytest.approx(0.15)  # the diagonal: 0.3^2 / 2 / 0.3
    assert im["f1"] == 0.0 and im["fn"] == 4


def test_mvtec_stride4_trained_model_contract(models, mvtec):
    r = evaluate_model(load(models["dark4"]), find_dataset(mvtec), tile=128)
    assert r["tiling"]["tile"] == [128] and r["tiling"]["overlap"] == [32] and r["tiling"]["tiles"] == 6 * 9
    assert 0.85 < r["pixel"]["dice_pooled"] < 1.0 and r["pixel"]["auroc"] > 0.98
    assert r["image"]["auroc"] == 1.0


def test_yolo_box_recall_and_false_blobs(models, tmp_path: Path):
    drawn = yolo_dataset(tmp_path)
    ds = find_dataset(tmp_path)
    assert ds.layout == "yolo" and ds.split == "val" and ds.names == ["hole", "scratch"]
    r = evaluate_model(load(models["hole"]), ds)
    b = r["boxes"]
    assert (b["n"], b["found"], b["recall"]) == (5, 3, 0.6)
    assert b["per_class"]["hole"] == {"n": 3, "found": 2, "recall": 2 / 3, "found_same_class": 2}
    assert b["per_class"]["scratch"] == {"n": 2, "found": 1, "recall": 0.5, "found_same_class": 0}
    assert b["class_aware"]
    assert (b["blobs"], b["false_blobs"]) == (5, 1) and b["false_blobs_per_image"] == pytest.approx(1 / 4)
    p = r["pixel"]
    assert p["mask"] == "box-mask (weak)"
    inter = sum(int((pm & gm).sum()) for pm, gm in drawn.values())
    pred, gt = (sum(int(m.sum()) for m in ms) for ms in zip(*drawn.values()))
    assert (p["gt_px"], p["pred_px"]) == (gt, pred)
    assert p["dice_pooled"] == pytest.approx(2 * inter / (pred + gt))
    assert r["image"]["auroc"] == 1.0 and r["image"]["f1"] == 1.0 and r["dataset"]["defective_images"] == 2


def test_cli_baseline_and_anomaly_json(models, tmp_path: Path, capsys):
    yolo_dataset(tmp_path / "y")
    out = tmp_path / "r.json"
    assert main(["eval-model", "--model", "builtin:baseline", str(tmp_path / "y"), "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["model"]["kind"] == "segmentation" and r["model"]["threshold"] == 0.3
    assert r["dataset"]["images"] == 4 and r["boxes"]["n"] == 5 and r["timing"]["ms_per_tile"] > 0
    assert "box-mask (weak)" in capsys.readouterr().out

    st = tmp_path / "st.toml"
    st.write_text(f'[model]\npath = "{models["anomaly"]}"\ndecoder = "anomaly"\nproviders = ["CPUExecutionProvider"]\n')
    mv = tmp_path / "mv"
    (mv / "train" / "good").mkdir(parents=True)
    img = leather(96, 96, 4)
    m = blob(img, (40, 50), 12)
    write_png(mv / "test" / "hole" / "000.png", img)
    write_png(mv / "ground_truth" / "hole" / "000_mask.png", m.astype(np.uint8) * 255)
    write_png(mv / "test" / "good" / "000.png", leather(96, 96, 5))
    assert main(["eval-model", "--station", str(st), str(mv), "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["model"]["kind"] == "anomaly" and r["model"]["anomaly_scaling"].startswith("min-max")
    assert r["pixel"]["auroc"] > 0.99 and r["pixel"]["dice_pooled"] > 0.95 and r["image"]["auroc"] == 1.0


# ------------------------------------------------------------------ bad input: exit 2, the file named


def _err(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err


def test_bad_inputs_exit_2_naming_the_file(models, tmp_path: Path, capsys):
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "x.png").write_bytes(b"")
    err = _err(capsys, ["eval-model", "--model", str(models["dark"]), str(tmp_path / "nothing")])
    assert str(tmp_path / "nothing") in err and "not a dataset" in err

    y = tmp_path / "y"
    yolo_dataset(y)
    (y / "val" / "labels" / "b.txt").write_text("1 0.5 0.5 0.1 0.1\n0 0.5 0.5 0.2\n")
    err = _err(capsys, ["eval-model", "--model", str(models["dark"]), str(y)])
    assert f"{y / 'val' / 'labels' / 'b.txt'}: line 2:" in err and "cx cy w h" in err
    (y / "val" / "labels" / "b.txt").write_text("5 0.5 0.5 0.1 0.1\n")
    err = _err(capsys, ["eval-model", "--model", str(models["dark"]), str(y)])
    assert "b.txt: line 1:" in err and "class 5" in err

    (y / "val" / "labels" / "b.txt").write_text("")
    (y / "val" / "images" / "broken.jpg").write_bytes(b"not a jpeg")
    err = _err(capsys, ["eval-model", "--model", str(models["dark"]), str(y)])
    assert str(y / "val" / "images" / "broken.jpg") in err and "cannot read the image" in err

    err = _err(capsys, ["eval-model", "--model", str(tmp_path / "missing.onnx"), str(y)])
    assert "missing.onnx" in err and "model file not found" in err
    err = _err(capsys, ["eval-model", "--model", str(models["dark"]), str(y), "--split", "test"])
    assert "YOLO layout (test/images/" in err
    err = _err(capsys, ["eval-model", "--model", str(models["dark"]), str(y), "--layout", "mvtec"])
    assert "MVTec AD layout" in err


def test_mvtec_missing_mask_named(models, mvtec, tmp_path: Path, capsys):
    root = tmp_path / "mv"
    (root / "train" / "good").mkdir(parents=True)
    write_png(root / "test" / "cut" / "007.png", leather(64, 64, 0))
    err = _err(capsys, ["eval-model", "--model", str(models["dark"]), str(root)])
    assert str(root / "ground_truth" / "cut" / "007_mask.png") in err
