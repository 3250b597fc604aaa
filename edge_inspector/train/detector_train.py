"""Training of the compact anchor-free detector (``detector.py``): data, loop, checkpoint choice.

``python -m edge_inspector.train.detector --data DIR --out DIR [--steps N] [--no-rescbam ...]``

Data: patches of the YOLO set's train split (its boxes, ``data.RealBoxPatches``) and, for a share
``--synth-share``, of synthetic hides (``data.SynthPatches``; boxes from the connected components
of the class masks; a synthetic class that is none of the set's classes, by ``classes.
canonical_class``, is ignored: no loss on the cells inside it), both through ``data.augment``.
Every ``--eval-every`` steps the net is exported and ``evaluation.evaluate_model`` runs the ONNX
file on the val split, as ``edge-inspector eval-model`` would; the checkpoint with the best val
mAP50 becomes ``OUT/model.onnx``. ``OUT/log.jsonl``: one JSON line per logged step and per eval.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from ..classes import DEFECT_CLASSES, canonical_class
from .data import RealBoxPatches, Sample, SynthPatches, augment, load_yolo_split, read_yolo_names
from .detector import MODULES, Detector, export, losses


def synth_boxes(mask: np.ndarray, names: list[str]) -> np.ndarray:
    """(B, 5) boxes of a synthetic class mask (0 = background, k = DEFECT_CLASSES[k - 1]); class
    index into ``names``, -1 for a class the set does not have (ignored by the loss)."""
    by_name = {canonical_class(n): i for i, n in enumerate(names)}
    rows = []
    for v in np.unique(mask):
        if v == 0 or v > len(DEFECT_CLASSES):
            continue
        k = by_name.get(canonical_class(DEFECT_CLASSES[v - 1]), -1)
        n, _, st, _ = cv2.connectedComponentsWithStats((mask == v).astype(np.uint8), connectivity=8)
        for x, y, w, h, _ in st[1:]:
            rows.append([x, y, x + w, y + h, k])
    return np.array(rows, np.float32).reshape(-1, 5)


class DetectionData:
    """Augmented (image, boxes) patches: real train photos and, for ``synth_share``, synthetic hides."""

    def __init__(self, root: Path, patch: int, synth_share: float, seed: int, synth_width: int = 2048) -> None:
        self.names = read_yolo_names(root)
        items = load_yolo_split(root, "train")
        if not items:
            raise ValueError(f"{root / 'train' / 'images'}: no images")
        self.real = RealBoxPatches(items, np.arange(len(self.names)), patch)
        self.synth = SynthPatches([seed + 1000], width=synth_width, hides=2, patch=patch) if synth_share > 0 else None
        self.synth_share = synth_share
        self.rng = np.random.default_rng(seed)

    def sample(self) -> Sample:
        if self.synth is not None and self.rng.random() < self.synth_share:
            s = self.synth.sample(self.rng)
            s = Sample(s.image, s.mask, synth_boxes(s.mask, self.names), s.source)
        else:
            s = self.real.sample(self.rng)
        return augment(s, self.rng)

    def batch(self, n: int) -> tuple[torch.Tensor, list[np.ndarray]]:
        ss = [self.sample() for _ in range(n)]
        boxes = []
        for s in ss:
            b = s.boxes
            keep = ((b[:, 2] - b[:, 0]) >= 1) & ((b[:, 3] - b[:, 1]) >= 1)
            boxes.append(b[keep])
        return torch.from_numpy(np.stack([s.image for s in ss])), boxes


def val_map50(net: Detector, names: list[str], root: Path, limit: int | None) -> dict[str, Any]:
    """Export to a temporary file and run ``evaluate_model`` on the val split (as eval-model)."""
    from ..config import ModelCfg
    from ..evaluation.datasets import find_dataset
    from ..evaluation.model_eval import evaluate_model
    from ..inference.model import Model

    with tempfile.TemporaryDirectory() as d:
        path = export(net, names, Path(d) / "val.onnx")
        model = Model.load(ModelCfg(path=str(path), providers=["CPUExecutionProvider"], cpu_runtime="onnxruntime"))
        rep = evaluate_model(model, find_dataset(root, split="val"), limit=limit)
    det = rep.get("detection") or {}
    return {"map50": det.get("map50"), "map50_95": det.get("map50_95"), "map50_agnostic": det.get("map50_agnostic"),
            "recall": det.get("recall"), "precision": det.get("precision")}


def train(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = DetectionData(Path(args.data), args.patch, args.synth_share, args.seed, args.synth_width)
    switches = {k: not getattr(args, f"no_{k}") for k in MODULES}
    net = Detector(len(data.names), width=args.width, pretrained=not args.no_pretrained,
                   finetune=args.finetune, **switches)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)
    info = {"steps": args.steps, "patch": args.patch, "batch": args.batch, "synth_share": args.synth_share,
            "modules": switches, "data": Path(args.data).name}
    best: dict[str, Any] = {"map50": -1.0, "step": None, "state": None}
    t0 = time.time()
    with (out / "log.jsonl").open("w") as log:
        net.train()
        for step in range(1, args.steps + 1):
            images, boxes = data.batch(args.batch)
            ls = losses(net(images), boxes)
            opt.zero_grad()
            ls["total"].backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            opt.step()
            sched.step()
            if step % 10 == 0 or step == 1:
                log.write(json.dumps({"step": step, "s": round(time.time() - t0, 1),
                                      **{k: round(float(v.detach()), 4) for k, v in ls.items()}}) + "\n")
                log.flush()
            if step % args.eval_every == 0 or step == args.steps:
                v = val_map50(net, data.names, Path(args.data), args.val_limit)
                log.write(json.dumps({"step": step, "val": v}) + "\n")
                log.flush()
                score = v["map50"] if v["map50"] is not None else -1.0
                if score > best["map50"] or best["state"] is None:
                    best = {"map50": score, "step": step,
                            "state": {k: t.detach().clone() for k, t in net.state_dict().items()}}
                net.train()
    net.load_state_dict(best["state"])
    info.update({"selected_step": best["step"], "val_map50": best["map50"]})
    export(net, data.names, out / "model.onnx", info=info)
    return info


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m edge_inspector.train.detector", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="YOLO-layout set (data.yaml, train/ and val/ images and labels)")
    p.add_argument("--out", required=True, help="folder for model.onnx and log.jsonl")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--patch", type=int, default=320, help="training patch side, a multiple of 32")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--width", type=int, default=64, help="neck and head channels")
    p.add_argument("--synth-share", type=float, default=0.25, help="share of synthetic-hide patches (0: none)")
    p.add_argument("--synth-width", type=int, default=2048, help="synthetic belt width in px (8192: the station's)")
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--val-limit", type=int, default=None, help="val images per eval (default: all)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--finetune", action="store_true", help="train the Lite0 backbone too (default: frozen)")
    p.add_argument("--no-pretrained", action="store_true", help="random backbone (tests; no ImageNet weights)")
    for k in MODULES:
        p.add_argument(f"--no-{k}", action="store_true", help=f"switch the {k} module off")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.patch % 32:
        raise SystemExit(f"--patch must be a multiple of 32, got {args.patch}")
    if not (Path(args.data) / "data.yaml").is_file():
        raise SystemExit(f"--data {args.data}: no data.yaml")
    info = train(args)
    print(json.dumps(info))
