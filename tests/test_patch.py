"""Patch classifiers: the edge-feature graph against its numpy reference, the patch decoder on a tiny
patch model built here, patch labels, and eval-model / compare-models on a tiny YOLO dataset."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edge_inspector.cli import main
from edge_inspector.config import ModelCfg
from edge_inspector.inference import Model
from edge_inspector.inference.decoders import PatchDecoder
from edge_inspector.patch.features import BLOCK_FEATURES, PatchSettings, block_features, features_model
from edge_inspector.patch.graph import PATCH_SCORES, add_metadata, fold_standardisation, mlp_model
from edge_inspector.patch.labels import AMBIGUOUS, DEFECT, GOOD, cell_labels

SET = PatchSettings(stride=16, blocks=3, report_px=32, sobel_threshold=0.04, steepness=150.0)


def leather(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Grain-like texture (smoothed noise) in brown tones, uint8 (h, w, 3)."""
    rng = np.random.default_rng(seed)
    g = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 1.5)
    g = 150 + 12 * g / (g.std() + 1e-6)
    return np.clip(np.stack([g, g * 0.8, g * 0.6], -1), 0, 255).astype(np.uint8)


def run(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in s.get_outputs()], s.run(None, {"image": x})))


def test_feature_graph_matches_numpy_reference() -> None:
    imgs = np.stack([leather(96, 128, 1), leather(96, 128, 2)])
    cv2.circle(imgs[0], (40, 30), 9, (20, 15, 10), -1)  # a dark blot: edges and a grey drop
    cv2.line(imgs[1], (5, 80), (120, 60), (240, 230, 220), 2)  # a bright scratch
    ref = block_features(imgs, SET)
    got = run(features_model(SET), imgs)[BLOCK_FEATURES]
    assert got.shape == ref.shape == (2, 6, 6, 8)
    np.testing.assert_allclose(got, ref, atol=2e-3)
    # the features see the defects: more edge pixels and a darker mean in the blot's block
    assert ref[0, 0, 1, 2] > ref[0, 0, 5, 7] + 0.05 and ref[0, 1, 1, 2] < ref[0, 1, 5, 7] - 0.05
    # the relative features: minus the tile's mean
    np.testing.assert_allclose(ref[:, 3:], ref[:, :3] - ref[:, :3].mean(axis=(2, 3), keepdims=True), atol=1e-6)


def dark_patch_model(path: Path, threshold: float = 0.5) -> Path:
    """A patch model by hand on the feature graph: the centre block's mean grey below 0.35 is a defect
    (w1 picks the grey mean of the centre block, the standardisation folded in; the hidden unit is
    Relu((0.35 - mean) / 0.02), the output sigmoid(hidden - 4))."""
    w1 = np.zeros((1, 6, SET.blocks, SET.blocks), np.float32)
    c = SET.blocks // 2
    w1[0, 1, c, c] = -1.0
    w1, b1 = fold_standardisation(w1, np.zeros(1, np.float32), np.zeros(6, np.float32),
                                  np.array([1.0, 0.02, 1.0, 1.0, 1.0, 1.0], np.float32))
    b1 = b1 + np.float32(0.35 / 0.02)  # logit = (0.35 - mean) / 0.02: steep around 0.35
    m = mlp_model(SET, w1, b1, np.ones((1, 1, 1, 1), np.float32), np.full(1, -4.0, np.float32),
                  threshold=threshold, info={"test": True})
    onnx.save(m, path)
    return path


def test_patch_decoder_regions_are_unions_of_patch_squares(tmp_path: Path) -> None:
    model = Model.load(ModelCfg(path=str(dark_patch_model(tmp_path / "p.onnx")), providers=["CPUExecutionProvider"]))
    assert model.kind == "patch" and isinstance(model.decoder, PatchDecoder) and model.class_names == ["defect"]
    tile = leather(128, 128, 3)
    tile[32:48, 64:96] = 40  # two dark cells side by side: one region
    tile[96:112, 16:32] = 40  # one dark cell apart
    (dets,) = model.infer(tile[None])
    assert len(dets) == 2
    order = np.argsort(dets.xyxy[:, 0])
    # the squares of 32 px centred on the 16 px cells: cells (2, 1) and (2, 4..5)
    np.testing.assert_allclose(dets.xyxy[order[0]], [8, 88, 40, 120], atol=1)
    np.testing.assert_allclose(dets.xyxy[order[1]], [56, 24, 104, 56], atol=1)
    assert dets.score.min() > 0.9 and (dets.class_id == 0).all()
    # good leather: nothing
    assert len(model.infer(leather(128, 128, 4)[None])[0]) == 0
    # the dense view: each cell's probability over its block; reported = the union of squares
    dense = model.decoder.to_dense(model.run_maps(tile[None]))
    assert dense.score.shape == (1, 128, 128) and dense.class_map is None
    assert dense.score[0, 40, 70] > 0.9 and dense.score[0, 40, 60] < 0.1
    rep = model.decoder.reported(dense.score[0])
    assert rep[40, 60] and rep[30, 100] and not rep[70, 60]
    assert rep.sum() == 32 * 48 + 32 * 32


def test_patch_decoder_refuses_a_grid_that_does_not_fit() -> None:
    dec = PatchDecoder(class_names=["defect"], score_threshold=0.5, spec={"stride": 16, "patch": {"report_px": 32}})
    try:
        dec.check_outputs({"patch_scores": np.zeros((1, 1, 4, 4), np.float32)}, 1, (128, 128))
    except ValueError as e:
        assert "8 x 8" in str(e) and "patch_scores" in str(e)
    else:
        raise AssertionError("a 4 x 4 grid for a 128 px tile at stride 16 was accepted")


def test_cell_labels_from_boxes() -> None:
    lab = cell_labels(np.array([[20.0, 20, 26, 26], [0, 100, 128, 128]]), (128, 128), 16, 32)
    assert lab.shape == (8, 8)
    assert lab[1, 1] == DEFECT  # the small box lies inside the square of cell (1, 1)
    assert lab[4, 4] == GOOD
    assert lab[7, 3] == DEFECT and lab[6, 3] == DEFECT  # the wide box covers a quarter of cell 6's square
    assert (lab == AMBIGUOUS).any()  # squares the small box only touches


def yolo_set(root: Path) -> Path:
    """A tiny YOLO dataset: 4 photos of 128 px, dark blots labelled as boxes."""
    (root / "val" / "images").mkdir(parents=True)
    (root / "val" / "labels").mkdir(parents=True)
    (root / "data.yaml").write_text("names: [blot]\n")
    for i in range(4):
        img = leather(128, 128, 10 + i)
        rows = []
        if i < 3:
            y, x = 16 + 32 * i, 32 + 16 * i  # on the 16 px cell grid: one cell dark
            img[y:y + 16, x:x + 16] = 35
            rows.append(f"0 {(x + 8) / 128:.5f} {(y + 8) / 128:.5f} {16 / 128:.5f} {16 / 128:.5f}")
        cv2.imwrite(str(root / "val" / "images" / f"p{i}.png"), img[..., ::-1])
        (root / "val" / "labels" / f"p{i}.txt").write_text("\n".join(rows))
    return root


def test_eval_model_reports_patch_accuracy(tmp_path: Path) -> None:
    data = yolo_set(tmp_path / "set")
    m = dark_patch_model(tmp_path / "p.onnx")
    out = tmp_path / "r.json"
    assert main(["eval-model", "--model", str(m), str(data), "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    p = r["patch"]
    assert p["stride"] == 16 and p["report_px"] == 32
    cm = np.array(p["confusion"])  # rows truth (good, defect), columns predicted
    # each blot fills one 16 px cell; the 32 px squares of its 8 neighbours hold half of it, so 9
    # patches per blot are defective; the hand-made model sees the centre cell only: 3 of 27 found
    assert cm.tolist() == [[p["patches"] - 27, 0], [24, 3]] and p["patches"] > 200
    assert p["accuracy"] == (p["patches"] - 24) / p["patches"] and p["recall"] == 3 / 27 and p["precision"] == 1.0
    assert r["boxes"]["recall"] == 1.0 and r["boxes"]["false_blobs"] == 0


def constant_patch_model(path: Path, value: float) -> Path:
    """A second family for compare-models: every patch scores ``value`` (a graph without features)."""
    n = helper.make_node
    nodes = [n("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
             n("Transpose", ["f"], ["t"], perm=[0, 3, 1, 2]),
             n("AveragePool", ["t"], ["p"], kernel_shape=[16, 16], strides=[16, 16]),
             n("Conv", ["p", "w", "b"], ["l"]), n("Sigmoid", ["l"], [PATCH_SCORES])]
    v = float(np.log(value / (1 - value)))
    inits = [numpy_helper.from_array(np.zeros((1, 3, 1, 1), np.float32), "w"),
             numpy_helper.from_array(np.array([v], np.float32), "b")]
    g = helper.make_graph(nodes, "const", [helper.make_tensor_value_info("image", TensorProto.UINT8, ["n", "h", "w", 3])],
                          [helper.make_tensor_value_info(PATCH_SCORES, TensorProto.FLOAT, ["n", 1, "gh", "gw"])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    add_metadata(m, SET, family="constant", threshold=0.5, info={})
    onnx.save(m, path)
    return path


def test_compare_models_table(tmp_path: Path, capsys) -> None:
    data = yolo_set(tmp_path / "set")
    a = dark_patch_model(tmp_path / "dark.onnx")
    b = constant_patch_model(tmp_path / "const.onnx", 0.9)
    out = tmp_path / "cmp.json"
    assert main(["compare-models", "--data", str(data), "--json", str(out), "--tile-px", "256", "--runs", "1",
                 str(a), str(b)]) == 0
    text = capsys.readouterr().out
    assert "| dark.onnx |" in text and "| const.onnx |" in text and "box recall" in text
    rows = {r["name"]: r for r in json.loads(out.read_text())["models"]}
    assert rows["dark.onnx"]["box_recall"] == 1.0 and rows["dark.onnx"]["false_blobs_per_photo"] == 0
    assert rows["const.onnx"]["false_blobs_per_photo"] > 0  # everything flagged: one blob over the photo
    assert rows["dark.onnx"]["patch_accuracy"] > rows["const.onnx"]["patch_accuracy"]
    # the constant model reports every pixel; the dark one only the squares around the blots
    assert rows["const.onnx"]["good_area_flagged"] == 1.0 and rows["dark.onnx"]["good_area_flagged"] < 0.05
    # MACs counted from the graph: the constant model's 16 x 16 average pool (window adds per output)
    # and its 1x1 conv from 3 channels, on the 16 px grid of a 256 px tile
    grid = (256 // 16) ** 2
    assert rows["const.onnx"]["macs_per_tile"] == 3 * grid * 16 * 16 + 3 * grid
    assert rows["const.onnx"]["macs_counted_by"] == "shape inference"
    assert rows["dark.onnx"]["macs_per_tile"] > rows["const.onnx"]["macs_per_tile"]
    assert rows["dark.onnx"]["size_bytes"] == a.stat().st_size and rows["dark.onnx"]["tiles_per_s"] > 0


def test_macs_of_a_graph_shape_inference_cannot_size(tmp_path: Path) -> None:
    """Pads known only at run time (from the pixels): the count runs the graph on a small tile and
    scales by the area; a 1 x 1 conv from 3 to 4 channels costs 12 MACs per pixel."""
    from edge_inspector.evaluation.compare import graph_macs

    n = helper.make_node
    nodes = [n("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
             n("Transpose", ["f"], ["x"], perm=[0, 3, 1, 2]),
             n("ReduceMin", ["x"], ["lo"], keepdims=0),
             n("Mul", ["lo", "zero"], ["z"]),
             n("Cast", ["z"], ["zi"], to=TensorProto.INT64),
             n("Expand", ["zi", "eight"], ["pads"]),
             n("Pad", ["x", "pads"], ["xp"]),
             n("Conv", ["xp", "w"], ["y"])]
    inits = [numpy_helper.from_array(np.float32(0), "zero"), numpy_helper.from_array(np.array([8], np.int64), "eight"),
             numpy_helper.from_array(np.ones((4, 3, 1, 1), np.float32), "w")]
    g = helper.make_graph(nodes, "runtime-pads", [helper.make_tensor_value_info("image", TensorProto.UINT8, ["n", "h", "w", 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, tmp_path / "g.onnx")
    assert graph_macs(tmp_path / "g.onnx", 1024) == (12 * 1024 * 1024, "measured at 512 px, scaled by the area")
