"""edge-inspector learn-good: novelty models from good leather, and anomaly-map models through replay."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edge_inspector.cli import main
from edge_inspector.config import ModelCfg, Station, load_station
from edge_inspector.errors import InputError
from edge_inspector.inference import Model
from edge_inspector.inference.components import peak_extent, peak_extent_labels
from edge_inspector.novelty import LearnOptions, learn_good
from edge_inspector.novelty.bank import GaussianStats, Reservoir, greedy_coreset, knn_distance
from edge_inspector.novelty.features import FeatureExtractor
from edge_inspector.novelty.graph import THRESHOLD, Head, LeatherMask, ModelSpec, build_model
from edge_inspector.synth import SynthConfig, write_recording

from conftest import SMALL_STATION

ROOT = Path(__file__).resolve().parent.parent


def leather(seed: int, hw: int = 256) -> np.ndarray:
    """RGB leather-like texture: brown, grain at two scales."""
    rng = np.random.default_rng(seed)
    big = cv2.GaussianBlur(rng.standard_normal((hw, hw)).astype(np.float32), (0, 0), 6) * 40
    fine = cv2.GaussianBlur(rng.standard_normal((hw, hw)).astype(np.float32), (0, 0), 1.2) * 25
    g = (big + fine)[..., None] * np.array([1.0, 0.8, 0.6], np.float32)
    return np.clip(np.array([150, 105, 70], np.float32) + g, 0, 255).astype(np.uint8)


def with_defect(img: np.ndarray, xy: tuple[int, int] = (128, 100), r: int = 9) -> np.ndarray:
    out = img.copy()
    cv2.circle(out, xy, r, (40, 30, 25), -1)
    return out


def load(path: Path) -> Model:
    return Model.load(ModelCfg(path=str(path), providers=["CPUExecutionProvider"]))


@pytest.fixture(scope="module")
def good_folder(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("good")
    for i in range(4):
        cv2.imwrite(str(d / f"good-{i}.png"), cv2.cvtColor(leather(i), cv2.COLOR_RGB2BGR))
    return d


@pytest.fixture(scope="module", params=["knn", "gauss"])
def learned(request, good_folder, tmp_path_factory) -> tuple[str, Path, dict]:
    out = tmp_path_factory.mktemp("model") / f"novelty-{request.param}.onnx"
    rep = learn_good([good_folder], out, Station(), LearnOptions(method=request.param, bank=256))
    return request.param, out, rep.as_dict()


def test_learn_good_from_four_images_writes_a_model_with_the_contract(learned) -> None:
    method, path, rep = learned
    # fewer than KFOLD_UNITS images: 4 folds, each image held out once from a model of the other 3
    assert rep["units"] == 4 and rep["holdout_units"] == 4 and rep["patches"] == 4 * 16 * 16
    assert rep["patches_holdout"] == 4 * 16 * 16
    assert rep["threshold_source"].startswith("held-out good leather (4-fold") and rep["within_budget"] is True
    m = load(path)
    assert m.kind == "anomaly" and m.class_names == ["anomaly"] and m.decoder.name == "anomaly"
    assert (m.input_layout, m.input_dtype, m.input_channels, m.input_size) == ("NHWC", "uint8", 3, None)
    assert m.score_threshold == THRESHOLD and m.min_area_px == 64 and m.contract.mm_per_px == 0.37
    spec = dict(m.contract.output)
    assert spec["method"] == method and spec["stride"] == 16 and spec["learn_good"]["memory"] == (256 if method == "knn" else 152)
    assert m.output_names == ["anomaly_map", "pred_score"]
    assert spec["peak_extent"] == 0.8 and m.decoder.peak_extent == 0.8  # learn-good's default extent rule


def test_a_pasted_defect_is_found_and_good_leather_is_not(learned) -> None:
    _, path, _ = learned
    m = load(path)
    good, bad = leather(99), with_defect(leather(98))
    dets = m.infer(np.stack([good, bad]))
    assert len(dets[0].score) == 0
    assert len(dets[1].score) >= 1
    x0, y0, x1, y1 = dets[1].xyxy[int(np.argmax(dets[1].score))]
    assert x0 <= 128 <= x1 and y0 <= 100 <= y1  # the blob holds the defect
    raw = m.run_raw(np.stack([good, bad]))
    assert raw["anomaly_map"].shape == (2, 1, 16, 16) and raw["pred_score"].shape == (2,)
    assert raw["pred_score"][0] < THRESHOLD <= raw["pred_score"][1]
    np.testing.assert_allclose(raw["pred_score"], raw["anomaly_map"].max(axis=(1, 2, 3)))


def test_peak_extent_trims_each_defect_to_its_own_peak() -> None:
    yy, xx = np.mgrid[0:64, 0:96].astype(np.float32)
    strong = np.exp(-((yy - 20) ** 2 + (xx - 20) ** 2) / 120.0)  # peak 1.0
    weak = 0.56 * np.exp(-((yy - 40) ** 2 + (xx - 70) ** 2) / 120.0)  # peak 0.56, just over the threshold
    score = np.maximum(strong, weak)
    score[60, 2] = 0.9  # one sure pixel alone: under the area filter
    got = peak_extent(score, 0.5, 0.8, min_area_px=4)
    assert got[20, 20] and got[40, 70] and not got[60, 2]
    # the strong defect: down to 0.8 of its peak, not to the threshold; the weak one keeps its core
    np.testing.assert_array_equal(got[:32, :48], score[:32, :48] >= 0.8)
    np.testing.assert_array_equal(got[28:, 48:], score[28:, 48:] >= 0.5)
    assert (score[:32, :48] >= 0.5).sum() > 2 * got[:32, :48].sum()
    core = score >= 0.5
    core[60, 2] = False
    np.testing.assert_array_equal(peak_extent(score, 0.5, 0.0, 4), core)  # fraction 0: down to the threshold


def test_a_defect_trimmed_into_pieces_stays_one_defect() -> None:
    from edge_inspector.evaluation.metrics import BoxStats
    from edge_inspector.inference.components import peak_extent_detections

    yy, xx = np.mgrid[0:32, 0:64].astype(np.float32)
    two = np.maximum(np.exp(-((yy - 16) ** 2 + (xx - 16) ** 2) / 40.0), 0.95 * np.exp(-((yy - 16) ** 2 + (xx - 44) ** 2) / 40.0))
    score = np.where(np.abs(yy - 16) <= 4, np.maximum(two, 0.6), two)  # a ridge at 0.6 joins the two peaks
    lab = peak_extent_labels(score, 0.5, 0.8, 4)
    assert cv2.connectedComponents((lab > 0).view(np.uint8))[0] - 1 == 2  # two pieces ...
    assert set(np.unique(lab)) == {0, 1}  # ... of one defect
    dets = peak_extent_detections(score, 0.5, 0.8, 4 * 16 * 16, (16.0, 16.0))
    assert len(dets.score) == 1 and dets.score[0] == pytest.approx(1.0)
    assert dets.area_px[0] == pytest.approx((lab > 0).sum() * 256)
    x0, _, x1, _ = dets.xyxy[0]
    assert x0 <= 16 * 16 and x1 >= 44 * 16  # the box spans both pieces
    # fraction 0: the plain components of the threshold, box for box
    from edge_inspector.inference.components import components
    plain = components((score >= 0.5).view(np.uint8), score, scale_yx=(16.0, 16.0), score_threshold=0.5,
                       min_area_px=4 * 256, n_classes=1)
    zero = peak_extent_detections(score, 0.5, 0.0, 4 * 256, (16.0, 16.0))
    np.testing.assert_allclose(zero.xyxy, plain.xyxy)
    np.testing.assert_allclose(zero.area_px, plain.area_px)
    assert zero.area_px[0] > dets.area_px[0]
    stats = BoxStats(["x"], ["anomaly"], 4)
    stats.add(lab > 0, np.zeros(lab.shape, bool), None, np.zeros(0, np.int64), np.zeros((0, 4), np.int64), lab)
    assert (stats.blobs, stats.false_blobs) == (1, 1)
    stats.add(lab > 0, np.zeros(lab.shape, bool), None, np.zeros(0, np.int64), np.zeros((0, 4), np.int64))
    assert stats.blobs == 3  # without the labels, each piece is a blob


def test_a_learned_model_reports_a_defect_by_its_peak_and_the_station_can_turn_it_off(learned) -> None:
    _, path, _ = learned
    bad = with_defect(leather(98), r=14)
    trimmed, full = load(path), Model.load(ModelCfg(path=str(path), providers=["CPUExecutionProvider"], peak_extent=0))
    assert trimmed.decoder.peak_extent == 0.8 and full.decoder.peak_extent is None
    a, b = trimmed.infer(bad[None])[0], full.infer(bad[None])[0]
    assert len(a.score) >= 1 and len(b.score) >= 1 and a.score.max() == pytest.approx(b.score.max())
    assert a.area_px.sum() < b.area_px.sum()  # the same defect, drawn closer to its size
    score = full.decoder.to_dense(full.decoder.to_maps(full.run_raw(bad[None]), 1, bad.shape[:2])).score[0]
    inside = np.zeros(score.shape, bool)
    cv2.circle(inside.view(np.uint8), (128, 100), 14, 1, -1)
    pa, pb = trimmed.decoder.reported(score), full.decoder.reported(score)
    assert pa[100, 128] and pa.sum() < pb.sum() and (pa & ~pb).sum() == 0
    dice = [2 * (p & inside).sum() / (p.sum() + inside.sum()) for p in (pa, pb)]
    assert dice[0] > dice[1], dice


def test_eval_model_scores_the_trimmed_defects(learned, tmp_path) -> None:
    """MVTec layout made here: pooled Dice with the extent rule beats down-to-the-threshold."""
    from edge_inspector.evaluation.datasets import find_dataset
    from edge_inspector.evaluation.model_eval import evaluate_model

    _, path, _ = learned
    root = tmp_path / "mv"
    for sub in ("test/good", "test/spot", "ground_truth/spot"):
        (root / sub).mkdir(parents=True)
    for i in range(3):
        cv2.imwrite(str(root / "test/good" / f"{i}.png"), cv2.cvtColor(leather(200 + i), cv2.COLOR_RGB2BGR))
        xy = (60 + 60 * i, 90 + 30 * i)
        cv2.imwrite(str(root / "test/spot" / f"{i}.png"), cv2.cvtColor(with_defect(leather(300 + i), xy, 12), cv2.COLOR_RGB2BGR))
        gt = np.zeros((256, 256), np.uint8)
        cv2.circle(gt, xy, 12, 255, -1)
        cv2.imwrite(str(root / "ground_truth/spot" / f"{i}_mask.png"), gt)
    ds = find_dataset(root)
    on = evaluate_model(load(path), ds)
    off = evaluate_model(Model.load(ModelCfg(path=str(path), providers=["CPUExecutionProvider"], peak_extent=0)), ds)
    assert on["model"]["peak_extent"] == 0.8 and off["model"]["peak_extent"] is None
    assert on["pixel"]["auroc"] == off["pixel"]["auroc"]  # the scores are the same, only the extent differs
    assert on["pixel"]["pred_px"] < off["pixel"]["pred_px"]
    assert on["pixel"]["dice_pooled"] > off["pixel"]["dice_pooled"], (on["pixel"], off["pixel"])


def test_peak_extent_out_of_range_is_refused_naming_the_field(learned, tmp_path) -> None:
    _, path, _ = learned
    m = onnx.load(str(path))
    for p in m.metadata_props:
        if p.key == "edge_inspector.output":
            p.value = json.dumps({**json.loads(p.value), "peak_extent": 1.5})
    bad = tmp_path / "bad.onnx"
    onnx.save(m, str(bad))
    with pytest.raises(Exception, match="peak_extent"):
        load(bad)
    with pytest.raises(ValueError, match="peak_extent"):
        ModelCfg(path=str(path), peak_extent=1.0)


@pytest.mark.parametrize("kind", ["knn", "gauss"])
def test_the_onnx_distance_head_matches_the_numpy_reference(kind, tmp_path) -> None:
    fx = FeatureExtractor(3, 2)
    imgs = np.stack([leather(1, 128), with_defect(leather(2, 128), (64, 64), 6)])
    emb = fx.embed(imgs)  # (2, 8, 8, 152)
    x = emb.reshape(-1, emb.shape[-1])
    if kind == "knn":
        head = Head("knn", bank=x[greedy_coreset(x, 40)])
    else:
        g = GaussianStats(x.shape[1])
        g.add(x)
        w, b = g.whitening()
        head = Head("gauss", w=w, b=b)
    d = head.distance(x)
    d_thr = float(np.quantile(d, 0.8))
    p = tmp_path / "m.onnx"
    onnx.save(build_model(head, ModelSpec(3, 2, d_thr, 0.37, 64)), str(p))
    pinned = {pr.key: pr.value for pr in onnx.load(str(p)).metadata_props}.get("edge_inspector.cpu_precision")
    assert pinned == ("f32" if kind == "gauss" else None)  # knn takes the station's precision (graph.py)
    # the graph's arithmetic in f32 (bf16, where the CPU has it, is the station's choice for knn)
    got = Model.load(ModelCfg(path=str(p), providers=["CPUExecutionProvider"], cpu_precision="f32")).run_raw(imgs)
    got = got["anomaly_map"][:, 0]
    want = np.clip(d * THRESHOLD / d_thr, 0, 1).reshape(got.shape)
    # float32 |x|² - 2 x.m + |m|² loses a few ulps of |x|²: visible only under the root near 0
    np.testing.assert_allclose(got, want, atol=1e-2)
    far = want > 0.05
    np.testing.assert_allclose(got[far], want[far], rtol=1e-3)
    assert (want > THRESHOLD).any() and (want < THRESHOLD).any()  # a comparison on both sides of the threshold


def test_the_input_stage_is_the_extractor_on_the_averaged_tile() -> None:
    """One convolution averages 2x2 px, repeats a grey channel and normalises (features.input_nodes):
    the features must be those of the shipped extractor on the average-pooled float tile."""
    import onnxruntime as ort

    from edge_inspector.novelty.features import FEATURES_ONNX

    rng = np.random.default_rng(3)
    tile = leather(7, 128)[:64, :96].copy()
    tile[20:30, 40:60] = rng.integers(0, 256, (10, 20, 3), np.uint8)  # noise the pooling must average, not skip
    ex = ort.InferenceSession(str(FEATURES_ONNX), providers=["CPUExecutionProvider"])

    def reference(rgb: np.ndarray) -> np.ndarray:
        f = rgb.astype(np.float32).transpose(2, 0, 1)[None]
        pooled = f.reshape(1, 3, 32, 2, 48, 2).mean(axis=(3, 5))
        return ex.run(None, {"image": pooled})[0].transpose(0, 2, 3, 1)

    got = FeatureExtractor(3, 2).embed(tile[None])
    np.testing.assert_allclose(got, reference(tile), rtol=1e-4, atol=1e-4)
    grey = tile[..., 1:2]
    got = FeatureExtractor(1, 2).embed(grey[None])
    np.testing.assert_allclose(got, reference(np.repeat(grey, 3, axis=2)), rtol=1e-4, atol=1e-4)
    assert np.abs(got).max() > 0.1  # features, not zeros


@pytest.mark.parametrize("channels", [3, 1])
def test_the_leather_mask_in_the_graph_is_the_hide_rule_on_4x4_averages(channels) -> None:
    """graph._mask_nodes: per 16 px cell, the mean over its 4 x 4 averages (of 4 x 4 px each) of
    the mean over channels of |average - belt_level|, > threshold; belt and hide cells both."""
    import onnxruntime as ort

    rng = np.random.default_rng(4)
    level, thr = np.array([38.0, 40.0, 42.0])[:channels], 28.0
    cells = rng.uniform(0, 2.2 * thr, (8, 8)) * rng.choice([-1.0, 1.0], (8, 8))  # both sides of the threshold
    tile = level + np.kron(cells, np.ones((16, 16)))[..., None] + rng.normal(0, 6.0, (128, 128, channels))
    tile[:16, :16] = level + 3 * thr * (np.indices((16, 16)).sum(0) % 2)[..., None] - 1.5 * thr  # level -/+ 1.5 thr
    tile = np.clip(np.rint(tile), 0, 255).astype(np.uint8)
    x = np.zeros((4, 152), np.float32)
    model = build_model(Head("knn", bank=x), ModelSpec(channels, 2, 1.0, 0.37, 64, LeatherMask(list(level), thr, 0, 0)))
    model.graph.output.append(helper.make_tensor_value_info("leather", TensorProto.FLOAT, None))
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        ["leather"], {"image": tile[None]})[0][0, 0]
    avg = tile.astype(np.float64).reshape(32, 4, 32, 4, channels).mean(axis=(1, 3))
    per_cell = np.abs(avg - level).mean(axis=2).reshape(8, 4, 8, 4).mean(axis=(1, 3))
    clear = np.abs(per_cell - thr) > 1e-3
    assert got.shape == (8, 8) and 10 < (per_cell > thr).sum() < 54
    np.testing.assert_array_equal(got[clear] > 0.5, (per_cell > thr)[clear])
    # a fine checkerboard of hide colour on the belt averages out: belt, where every px reads hide
    every = np.abs(tile.astype(np.float64) - level).mean(axis=2).reshape(8, 16, 8, 16).mean(axis=(1, 3))
    assert got[0, 0] == 0.0 and every[0, 0] > thr


def test_memory_stays_bounded_and_the_coreset_covers_rare_patches() -> None:
    rng = np.random.default_rng(0)
    r = Reservoir(1000, 4)
    for _ in range(50):
        r.add(rng.standard_normal((997, 4)))
    assert r.n == 1000 and r.seen == 49_850 and r.data.shape == (1000, 4)
    common = rng.standard_normal((5000, 8)).astype(np.float32)
    rare = rng.standard_normal((5, 8)).astype(np.float32) + 20  # a rare good texture
    x = np.concatenate([common, rare])
    bank = x[greedy_coreset(x, 64)]
    assert knn_distance(rare, bank).max() < 5  # kept: a random sample of 64 would likely miss all 5
    assert knn_distance(x, bank).max() < knn_distance(x, x[:64]).max()


def test_learn_good_cli_and_bad_input(good_folder, tmp_path, capsys) -> None:
    out = tmp_path / "m.onnx"
    assert main(["learn-good", str(good_folder), "--out", str(out), "--bank", "64", "--method", "gauss"]) == 0
    text = capsys.readouterr().out
    assert "learn-good (gauss): 4 units" in text and f"wrote {out}" in text and out.is_file()
    # the learned model timed here against the line it is for (the default station: 2048 px tiles)
    speed = next(line for line in text.splitlines() if line.strip().startswith("speed"))
    tps, needed = float(speed.split()[1]), float(speed.split("needs ")[1].split()[0].rstrip(":"))
    assert tps > 0 and needed > 0 and "tiles/s of 2048 px here" in speed
    assert ("headroom" in speed) == (tps >= needed) and ("NOT enough" in speed) == (tps < needed)
    assert main(["learn-good", str(good_folder), "--out", str(out), "--method", "gauss", "--no-speed-check"]) == 0
    assert "speed" not in capsys.readouterr().out
    assert main(["learn-good", str(tmp_path / "missing"), "--out", str(tmp_path / "x.onnx")]) == 2
    assert "missing: not found" in capsys.readouterr().err and not (tmp_path / "x.onnx").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no images found"):
        learn_good([empty], tmp_path / "y.onnx", Station())


def test_yolo_boxes_of_good_photos_are_left_out(tmp_path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for i in range(2):
        img = leather(10 + i)
        if i == 0:
            img = with_defect(img, (64, 64), 20)
        cv2.imwrite(str(tmp_path / "images" / f"p{i}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    (tmp_path / "labels" / "p0.txt").write_text("0 0.25 0.25 0.2 0.2\n")
    rep = learn_good([tmp_path / "images"], tmp_path / "m.onnx", Station(), LearnOptions(holdout_every=2))
    # image 0: 16 x 16 cells less the box (51 px + one 16 px cell around it: cells 0..5 x 0..5);
    # two images, two folds: each held out once
    assert rep.patches == 2 * 16 * 16 - 36 and rep.units == 2 and rep.holdout_units == 2


# -- recordings, station files and replay ---------------------------------------------------------


@pytest.fixture(scope="module")
def small_station(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("station")
    f = d / "novelty-small.toml"
    f.write_text(SMALL_STATION.replace('path = "builtin:baseline"', 'path = "novelty-small.onnx"'))
    return f


def test_learn_good_from_a_recording_and_replay_with_the_station(small_station, recording, tmp_path_factory, capsys) -> None:
    good = tmp_path_factory.mktemp("goodrec") / "good.raw"
    write_recording(good, SynthConfig(hides=2, seed=5, width=1024, mm_per_px=1.5, mm_per_line=1.5,
                                      line_rate_hz=20000, defects_per_hide=(0, 0)))
    model = small_station.parent / "novelty-small.onnx"
    assert main(["learn-good", str(good), "--out", str(model), "--station", str(small_station), "--downscale", "1",
                 "--bank", "512"]) == 0
    capsys.readouterr()
    m = load(model)
    spec = dict(m.contract.output)
    assert spec["leather_mask"]["belt_level"] == [38.0, 40.0, 42.0] and spec["stride"] == 8
    # the belt is not leather: the map is 0 there, whatever the memory says
    belt = np.full((1, 512, 512, 3), (38, 40, 42), np.uint8)
    assert float(m.run_raw(belt)["pred_score"][0]) == 0.0
    runs = {}
    for name, rec in (("good", good), ("defects", recording[0])):
        out = small_station.parent / f"run-{name}"
        assert main(["replay", str(rec), "--station", str(small_station), "--out", str(out)]) == 0
        runs[name] = json.loads((out / "summary.json").read_text())
    capsys.readouterr()
    assert runs["good"]["hides"] == 2 and runs["defects"]["hides"] == 2
    assert runs["defects"]["defects"] > runs["good"]["defects"]
    assert main(["eval", str(small_station.parent / "run-defects")]) == 0
    assert "recall" in capsys.readouterr().out


def test_novelty_station_files_load_and_name_a_model_beside_them() -> None:
    files = sorted((ROOT / "configs" / "stations").glob("novelty-*.toml"))
    assert {f.name for f in files} >= {"novelty-knn.toml", "novelty-gauss.toml", "novelty-anomalib.toml"}
    for f in files:
        st = load_station(f)
        assert st.station.name == f.stem
        assert st.resolve(st.model.path).parent == f.parent
    assert load_station(ROOT / "configs" / "stations" / "novelty-anomalib.toml").model.decoder == "anomaly"


def anomalib_export(path: Path) -> Path:
    """A model laid out as anomalib exports it: input ``input`` float (B, 3, H, W) in 0..1, outputs
    ``anomaly_map`` (B, 1, H/8, W/8) and ``pred_score`` (B,); here local contrast of the grey level."""
    n = helper.make_node
    nodes = [
        n("ReduceMean", ["input"], ["grey"], axes=[1], keepdims=1),
        n("AveragePool", ["grey"], ["local"], kernel_shape=[33, 33], pads=[16] * 4, count_include_pad=0),
        n("Sub", ["grey", "local"], ["diff"]),
        n("Abs", ["diff"], ["contrast"]),
        n("AveragePool", ["contrast"], ["pooled"], kernel_shape=[8, 8], strides=[8, 8]),
        n("Mul", ["pooled", "gain"], ["anomaly_map"]),
        n("ReduceMax", ["anomaly_map"], ["pred_score"], axes=[1, 2, 3], keepdims=0),
    ]
    inits = [onnx.numpy_helper.from_array(np.float32(4.0), "gain")]
    g = helper.make_graph(nodes, "anomalib", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["b", 3, "h", "w"])],
                          [helper.make_tensor_value_info("anomaly_map", TensorProto.FLOAT, ["b", 1, "h8", "w8"]),
                           helper.make_tensor_value_info("pred_score", TensorProto.FLOAT, ["b"])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_an_anomalib_export_runs_through_replay(recording, tmp_path, capsys) -> None:
    rec, _, _ = recording
    anomalib_export(tmp_path / "anomalib-export.onnx")
    st = tmp_path / "anomalib.toml"
    st.write_text(SMALL_STATION.replace('path = "builtin:baseline"',
                                        'path = "anomalib-export.onnx"\ndecoder = "anomaly"\nscore_threshold = 0.5'))
    m = Model.load(load_station(st).model, resolve=load_station(st).resolve)
    assert (m.kind, m.input_layout, m.input_dtype, m.class_names) == ("anomaly", "NCHW", "float32", ["anomaly"])
    tile = np.full((1, 64, 64, 3), 150, np.uint8)
    tile[0, 16:32, 16:32] = 10  # a dark spot: contrast 0.55 x 4 on its cells, 0 on the flat rest
    d = m.infer(tile)[0]
    assert len(d.score) == 1 and d.score[0] > 1.0
    x0, y0, x1, y1 = d.xyxy[0]
    assert x0 <= 16 and y0 <= 16 and x1 >= 32 and y1 >= 32 and x1 - x0 <= 40
    out = tmp_path / "run"
    assert main(["replay", str(rec), "--station", str(st), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["hides"] == 2 and summary["tiles"] > 0
    assert summary["defects"] > 0 and set(summary.get("defects_by_class", {"anomaly": 1})) == {"anomaly"}


def test_fold_groups_hold_every_image_out_once_and_a_recording_every_kth_unit() -> None:
    from edge_inspector.novelty.learn import fold_groups

    assert fold_groups(4, 4, kfold=True) == ([0, 1, 2, 3], [0, 1, 2, 3])
    assert fold_groups(6, 4, kfold=True) == ([0, 1, 2, 3, 0, 1], [0, 1, 2, 3])
    assert fold_groups(3, 4, kfold=True) == ([0, 1, 2], [0, 1, 2])
    assert fold_groups(8, 4, kfold=False) == ([0, 0, 0, 1, 0, 0, 0, 1], [1])
    assert fold_groups(3, 4, kfold=False) == ([0, 0, 0], [])  # a short recording: nothing held out
    assert fold_groups(1, 4, kfold=True) == ([0], [])  # one image: the fallback quantile
    assert fold_groups(5, 0, kfold=True) == ([0] * 5, [])  # holdout_every 0: no held-out data
