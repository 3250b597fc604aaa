"""Train the patch classifiers (the ``train`` extra: torch, imported lazily) and export them.

    python -m edge_inspector.train.patch --family mlp|cnn --data YOLO_DIR --out DIR [--steps N] [--install]

Data: the train photos of a YOLO-layout set, whole (640 px), patch labels on the model's own grid
(``patch.labels``: defective when a box covers a quarter of the patch's square or of itself, good when
no box touches it, else not trained on), plus patches of rendered synthetic hides (``SynthPatches``,
narrow hides, seeds 101-102) labelled from their exact masks by the same rule. Augmentation: flips
and 90-degree turns (exact on the feature grid: the Sobel magnitude and block means turn with it),
and for the CNN a per-channel gain. Selection on the val photos: the checkpoint with the best patch
AUROC, the threshold with the best patch accuracy there (written into the model).

- ``mlp``: the published edge-feature MLP (Canny + 5 x 5 block features -> 50 neurons); the features
  are fixed (``patch.features``), computed once in numpy, the MLP trained on the feature grids.
- ``cnn``: a small AlexNet-style fully convolutional net (stride-4 stem, three pooled 3 x 3 stages,
  two 3 x 3 convolutions at stride 32, a 1 x 1 head): one output per 32 px cell.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..evaluation.metrics import auroc
from ..patch.features import PatchSettings, block_features
from ..patch.graph import CLASSES, PATCH_SCORES, add_metadata, fold_standardisation, mlp_model
from ..patch.labels import AMBIGUOUS, cell_labels, mask_boxes
from .data import SynthPatches, load_yolo_split

SETTINGS = PatchSettings()  # stride 32, 5 x 5 blocks (160 px context), 64 px squares
MODELS = Path(__file__).resolve().parent.parent / "models"
INSTALL = {"mlp": "patch_mlp.onnx", "cnn": "patch_cnn.onnx"}


def load_items(root: Path, split: str, s: PatchSettings) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(image cropped to a multiple of the stride, cell labels)] of a YOLO split."""
    out = []
    for img, boxes in load_yolo_split(root, split):
        h, w = (d // s.stride * s.stride for d in img.shape[:2])
        out.append((np.ascontiguousarray(img[:h, :w]), cell_labels(boxes, (h, w), s.stride, s.report_px)))
    return out


def synth_items(n: int, s: PatchSettings, seed: int, patch: int = 320) -> list[tuple[np.ndarray, np.ndarray]]:
    sp = SynthPatches([101, 102], width=2048, hides=2, patch=patch)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        smp = sp.sample(rng)
        out.append((smp.image, cell_labels(mask_boxes(smp.mask), smp.image.shape[:2], s.stride, s.report_px)))
    return out


def turn(x: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """Rotate the last two axes by k x 90 degrees (and flip): the same for grids and their labels."""
    x = np.rot90(x, k, axes=(-2, -1))
    return np.ascontiguousarray(x[..., ::-1] if flip else x)


def patch_report(prob: np.ndarray, lab: np.ndarray) -> dict[str, Any]:
    """AUROC and the accuracy-best threshold over labelled patches."""
    keep = lab != AMBIGUOUS
    p, y = prob[keep], lab[keep] == 1
    best = max(((float(np.mean((p >= t) == y)), float(t)) for t in np.linspace(0.05, 0.95, 91)))
    return {"auroc": auroc(p, y), "accuracy": best[0], "threshold": best[1], "patches": int(keep.sum()),
            "defective": int(y.sum())}


def train_mlp(train: list, val: list, s: PatchSettings, steps: int, seed: int, lr: float = 3e-3,
              hidden: int = 50) -> tuple[Any, dict[str, Any]]:
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    feats = [(block_features(img[None], s)[0], lab) for img, lab in train]
    nf = feats[0][0].shape[0]
    allf = np.concatenate([f.reshape(nf, -1) for f, _ in feats], 1)
    mean, std = allf.mean(1), allf.std(1) + 1e-6
    vfeat = [(block_features(img[None], s)[0], lab) for img, lab in val]
    r = s.blocks // 2
    net = torch.nn.Sequential(torch.nn.Conv2d(nf, hidden, s.blocks), torch.nn.ReLU(), torch.nn.Conv2d(hidden, 1, 1))
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-4)
    labs = np.concatenate([lab.ravel() for _, lab in feats])
    pos_w = float((labs == 0).sum() / max((labs == 1).sum(), 1))
    rng = np.random.default_rng(seed)
    tm, ts = torch.tensor(mean)[None, :, None, None], torch.tensor(std)[None, :, None, None]

    def forward(f: np.ndarray) -> "torch.Tensor":
        x = (torch.from_numpy(f) - tm) / ts
        return net(F.pad(x, (r, r, r, r), mode="replicate"))[:, 0]

    def evaluate() -> dict[str, Any]:
        with torch.no_grad():
            probs = [torch.sigmoid(forward(f[None]))[0].numpy() for f, _ in vfeat]
        return patch_report(np.concatenate([p.ravel() for p in probs]), np.concatenate([l.ravel() for _, l in vfeat]))

    best: tuple[float, dict, dict] = (-1.0, {}, {})
    for step in range(1, steps + 1):
        loss = torch.zeros(())
        for i in rng.integers(len(feats), size=16):
            f, lab = feats[i]
            k, fl = int(rng.integers(4)), bool(rng.integers(2))
            f, lab = turn(f, k, fl), turn(lab, k, fl)
            y = torch.from_numpy(lab.astype(np.float32))[None]
            w = torch.from_numpy(np.where(lab == AMBIGUOUS, 0.0, np.where(lab == 1, pos_w, 1.0)).astype(np.float32))[None]
            loss = loss + F.binary_cross_entropy_with_logits(forward(f[None]), y.clamp(0, 1), weight=w) / 16
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == steps:
            rep = evaluate()
            print(json.dumps({"step": step, "loss": round(float(loss.detach()), 4), **rep}), flush=True)
            if (rep["auroc"] or 0) > best[0]:
                best = (rep["auroc"] or 0, {k: v.clone() for k, v in net.state_dict().items()}, rep)
    net.load_state_dict(best[1])
    w1, b1 = fold_standardisation(net[0].weight.detach().numpy(), net[0].bias.detach().numpy(), mean, std)
    info = {"family": "edge-mlp", "hidden": hidden, "steps": steps, "val": best[2]}
    model = mlp_model(s, w1, b1, net[2].weight.detach().numpy(), net[2].bias.detach().numpy(),
                      threshold=best[2]["threshold"], info=info)
    return model, info


def cnn_net():
    import torch
    from torch import nn

    class PatchCNN(nn.Module):
        """AlexNet-style, fully convolutional: stride-4 stem, pooled stages to stride 32, 1 x 1 head."""

        def __init__(self) -> None:
            super().__init__()
            c = (16, 32, 48, 64)

            def block(i: int, o: int, k: int, stride: int = 1) -> list[nn.Module]:
                return [nn.Conv2d(i, o, k, stride=stride, padding=(k - 1) // 2 if stride == 1 else 0, bias=False),
                        nn.BatchNorm2d(o), nn.ReLU()]

            self.body = nn.Sequential(
                *block(3, c[0], 4, 4), nn.MaxPool2d(2),
                *block(c[0], c[1], 3), nn.MaxPool2d(2),
                *block(c[1], c[2], 3), nn.MaxPool2d(2),
                *block(c[2], c[3], 3), *block(c[3], c[3], 3),
                nn.Dropout2d(0.2), nn.Conv2d(c[3], 1, 1),
            )

        def forward(self, x: "torch.Tensor") -> "torch.Tensor":  # float NCHW in 0..1 -> logits (N, 1, h, w)
            return self.body((x - 0.5) / 0.25)

    class Deployed(nn.Module):
        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, image: "torch.Tensor") -> "torch.Tensor":  # uint8 NHWC -> patch probabilities
            return torch.sigmoid(self.net(image.permute(0, 3, 1, 2).float() / 255.0))

    return PatchCNN(), Deployed


def train_cnn(train: list, val: list, s: PatchSettings, steps: int, seed: int, lr: float = 1e-3,
              crop: int = 320) -> tuple[Any, dict[str, Any]]:
    import onnx
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    net, Deployed = cnn_net()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    labs = np.concatenate([lab.ravel() for _, lab in train])
    pos_w = float((labs == 0).sum() / max((labs == 1).sum(), 1))
    rng = np.random.default_rng(seed)
    g = min(crop // s.stride, *(min(lab.shape) for _, lab in train))  # crops fit the smallest image

    def batch(n: int) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for i in rng.integers(len(train), size=n):
            img, lab = train[i]
            gy = int(rng.integers(0, lab.shape[0] - g + 1))
            gx = int(rng.integers(0, lab.shape[1] - g + 1))
            im = img[gy * s.stride:(gy + g) * s.stride, gx * s.stride:(gx + g) * s.stride]
            lb = lab[gy:gy + g, gx:gx + g]
            k, fl = int(rng.integers(4)), bool(rng.integers(2))
            im = turn(im.transpose(2, 0, 1), k, fl)
            gain = rng.uniform(0.8, 1.2, (3, 1, 1)) * rng.uniform(0.75, 1.25)
            xs.append(np.clip(im * gain, 0, 255) / 255.0)
            ys.append(turn(lb, k, fl))
        return np.stack(xs).astype(np.float32), np.stack(ys)

    def evaluate() -> dict[str, Any]:
        net.eval()
        with torch.no_grad():
            probs = [torch.sigmoid(net(torch.from_numpy(img.transpose(2, 0, 1)[None].astype(np.float32) / 255)))[0, 0].numpy()
                     for img, _ in val]
        net.train()
        return patch_report(np.concatenate([p.ravel() for p in probs]), np.concatenate([l.ravel() for _, l in val]))

    best: tuple[float, dict, dict] = (-1.0, {}, {})
    for step in range(1, steps + 1):
        x, y = batch(12)
        w = np.where(y == AMBIGUOUS, 0.0, np.where(y == 1, pos_w, 1.0)).astype(np.float32)
        out = net(torch.from_numpy(x))[:, 0]
        loss = F.binary_cross_entropy_with_logits(out, torch.from_numpy(y.astype(np.float32)).clamp(0, 1),
                                                  weight=torch.from_numpy(w))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps:
            rep = evaluate()
            print(json.dumps({"step": step, "loss": round(float(loss.detach()), 4), **rep}), flush=True)
            if (rep["auroc"] or 0) > best[0]:
                best = (rep["auroc"] or 0, {k: v.clone() for k, v in net.state_dict().items()}, rep)
    net.load_state_dict(best[1])
    net.eval()
    tmp = Path(f"/tmp/patch-cnn-{seed}-{time.time_ns()}.onnx")
    with torch.no_grad():
        torch.onnx.export(Deployed(net).eval(), torch.zeros(1, 256, 256, 3, dtype=torch.uint8), str(tmp),
                          input_names=["image"], output_names=[PATCH_SCORES], opset_version=17, dynamo=False,
                          dynamic_axes={"image": {0: "n", 1: "h", 2: "w"}, PATCH_SCORES: {0: "n", 2: "gh", 3: "gw"}})
    model = onnx.load(str(tmp))
    tmp.unlink()
    n_params = sum(p.numel() for p in net.parameters())
    info = {"family": "cnn", "parameters": int(n_params), "steps": steps, "crop": crop, "val": best[2]}
    add_metadata(model, s, family="cnn", threshold=best[2]["threshold"], info=info)
    onnx.checker.check_model(model)
    return model, info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edge_inspector.train.patch", description=__doc__.split("\n")[0])
    ap.add_argument("--family", choices=("mlp", "cnn"), required=True)
    ap.add_argument("--data", type=Path, required=True, help="YOLO-layout set with train/ and val/ splits")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--synthetic", type=int, default=300, help="synthetic hide patches of 320 px (0: none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, help="learning rate (default: mlp 3e-3, cnn 1e-3)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--install", action="store_true", help=f"copy the model over edge_inspector/models/ ({INSTALL})")
    a = ap.parse_args(argv)
    import onnx
    import torch

    torch.set_num_threads(a.threads)
    t0 = time.time()
    s = SETTINGS
    train = load_items(a.data, "train", s)
    val = load_items(a.data, "val", s)
    if a.synthetic:
        train += synth_items(a.synthetic, s, a.seed)
    print(f"{len(train)} training images/patches, {len(val)} val photos ({time.time() - t0:.0f} s)", flush=True)
    fn = train_mlp if a.family == "mlp" else train_cnn
    model, info = fn(train, val, s, a.steps, a.seed, a.lr or (3e-3 if a.family == "mlp" else 1e-3))
    info["lr"] = a.lr or (3e-3 if a.family == "mlp" else 1e-3)
    info.update({"data": str(a.data), "synthetic_patches": a.synthetic, "seconds": round(time.time() - t0, 1)})
    a.out.mkdir(parents=True, exist_ok=True)
    onnx.save(model, a.out / "model.onnx")
    (a.out / "results.json").write_text(json.dumps(info, indent=2))
    print(json.dumps(info), flush=True)
    if a.install:
        shutil.copyfile(a.out / "model.onnx", MODELS / INSTALL[a.family])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
