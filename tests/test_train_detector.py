"""The compact anchor-free detector (train/detector.py): modules on and off, CIoU, assignment, a few
training steps through the CLI on a tiny YOLO set, ONNX parity, and the station's YoloDecoder.

Runs when torch (the optional ``train`` extra) is installed; skipped with the reason otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed: pip install -e '.[train]' to run the detector tests")
pytest.importorskip("efficientnet_lite_pytorch", reason="efficientnet-lite-pytorch (train extra) is not installed")

from edge_inspector.config import ModelCfg  # noqa: E402
from edge_inspector.inference.decoders import YoloDecoder  # noqa: E402
from edge_inspector.inference.model import Model  # noqa: E402
from edge_inspector.train.detector import (MODULES, DeployedDetector, Detector, assign, export,  # noqa: E402
                                           losses, main)
from edge_inspector.train.detector_parts import ciou  # noqa: E402
from edge_inspector.train.detector_train import synth_boxes  # noqa: E402

NAMES = ["Hole", "Scratch"]


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
            (root / split / "labels" / f"{i}.txt").write_text(f"0 {(60 + 10 * i) / 160:.4f} {70 / 160:.4f} 0.12 0.12\n")


def _net(on: bool) -> Detector:
    torch.manual_seed(0)
    return Detector(len(NAMES), width=16, pretrained=False, **{k: on for k in MODULES})


@pytest.mark.parametrize("on", [True, False])
def test_modules_switch_and_train(on):
    net = _net(on).train()
    assert (net.csa is not None) == on and (net.proto is not None) == on
    names = {type(m).__name__ for m in net.modules()}
    for cls in ("ResCBAM", "CrossScaleAttention", "SCConv", "ProtoNet"):
        assert (cls in names) == on, cls
    x = torch.randint(0, 256, (2, 96, 128, 3), dtype=torch.uint8)
    gt = [np.array([[10, 12, 14, 15, 1], [40, 30, 90, 70, 0]], np.float32), np.zeros((0, 5), np.float32)]
    out = net(x)
    a = (12 * 16) + (6 * 8) + (3 * 4)
    assert out["cls"].shape == (2, a, 2) and out["dist"].shape == (2, a, 4)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=3e-3)
    first = None
    for _ in range(20):  # the CIoU loss on one fixed batch goes down (the class target, the IoU, goes up)
        ls = losses(net(x), gt)
        assert torch.isfinite(ls["total"])
        assert ("proto" in ls) == on
        opt.zero_grad()
        ls["total"].backward()
        opt.step()
        first = first if first is not None else float(ls["box"].detach())
    assert float(ls["box"].detach()) < 0.9 * first
    if on:
        assert net.proto.prototypes.grad is not None and net.csa.alpha.grad is not None
    assert all(p.grad is None for p in net.backbone.parameters())  # frozen by default


def test_ciou_values():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]])
    b = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 0.0, 3.0, 2.0], [3.0, 3.0, 4.0, 5.0]])
    c = ciou(a, b)
    assert c[0] == pytest.approx(1.0, abs=1e-5)
    assert c[1] == pytest.approx(1 / 3 - 1 / 13, abs=1e-5)  # IoU 2/6; centre 1 px apart, enclosing 3x2
    assert c[2] < 0  # disjoint, far apart and of another aspect ratio


def test_assignment_small_boxes_and_ignored_classes():
    net = _net(False)
    out = net(torch.zeros(1, 64, 64, 3, dtype=torch.uint8))
    gt = np.array([[20, 20, 23, 23, 0], [40, 0, 64, 30, -1]], np.float32)  # a 3 px pinhole; an ignored box
    owner, pos = assign(out["points"], out["strides"], gt)
    assert (owner[pos] == 0).all() and pos.sum() >= 1  # the pinhole has a cell
    ignored = owner == -2
    assert ignored.any()
    assert ((out["points"][ignored, 0] > 40 - 1e-6) | (out["strides"][ignored] > 8)).all()
    mask = np.zeros((32, 32), np.uint8)
    mask[2:5, 3:9] = 1  # hole -> Hole
    mask[20:30, 20:22] = 4  # black_dot: no such class in the set
    b = synth_boxes(mask, NAMES)
    assert sorted(b.tolist()) == [[3, 2, 9, 5, 0], [20, 20, 22, 30, -1]]


def test_cli_export_parity_and_station_decoder(tmp_path):
    data = tmp_path / "data"
    _tiny_yolo(data)
    out = tmp_path / "run"
    main(["--data", str(data), "--out", str(out), "--steps", "3", "--batch", "2", "--patch", "64", "--width", "16",
          "--eval-every", "2", "--no-pretrained", "--synth-share", "0.5", "--synth-width", "1024", "--threads", "1",
          "--no-scconv"])
    lines = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    evals = [x for x in lines if "val" in x]
    assert [x["step"] for x in evals] == [2, 3] and "map50" in evals[0]["val"]
    model = Model.load(ModelCfg(path=str(out / "model.onnx"), providers=["CPUExecutionProvider"],
                                cpu_runtime="onnxruntime"))
    assert isinstance(model.decoder, YoloDecoder) and list(model.class_names) == NAMES
    training = json.loads(model.contract.metadata["edge_inspector.training"])
    assert training["modules"]["scconv"] is False and training["selected_step"] in (2, 3)

    # parity: the torch graph and ONNX Runtime on a size the export never saw, batch of 2
    net = _net(True).eval()
    path = export(net, NAMES, tmp_path / "parity.onnx")
    x = np.random.default_rng(1).integers(0, 256, (2, 96, 160, 3), dtype=np.uint8)
    with torch.no_grad():
        ref = DeployedDetector(net)(torch.from_numpy(x)).numpy()
    m = Model.load(ModelCfg(path=str(path), providers=["CPUExecutionProvider"], cpu_runtime="onnxruntime",
                            score_threshold=0.0, min_area_px=0))
    raw = m.run_raw(x)["output0"]
    assert raw.shape == ref.shape == (2, 4 + len(NAMES), 12 * 20 + 6 * 10 + 3 * 5)
    np.testing.assert_allclose(raw, ref, atol=1e-4, rtol=1e-4)

    # the station's decoder: its best detection is the torch output's best cell, box and class
    dets = m.infer(x)
    for i, d in enumerate(dets):
        assert len(d) >= 1
        k = int(np.argmax(ref[i, 4:].max(0)))
        cx, cy, w, h = ref[i, :4, k]
        want = np.clip([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 0, [160, 96, 160, 96])
        top = int(np.argmax(d.score))
        assert d.score[top] == pytest.approx(ref[i, 4:, k].max(), abs=1e-4)
        assert int(d.class_id[top]) == int(np.argmax(ref[i, 4:, k]))
        np.testing.assert_allclose(d.xyxy[top], want, atol=1e-2)
