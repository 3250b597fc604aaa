"""The training loop: losses, batches from the three sources, validation, checkpoints.

Losses, all on the defect logit upsampled (bilinear, x4) to the patch:
- exact masks (synthetic hides, real texture with pasted defects): BCE + soft Dice on the
  defect/background mask (ignore pixels left out). Class imbalance: BCE weights positives by
  ``pos_weight`` and Dice is normalised by the defect area, so a 5-pixel dot counts.
- weak boxes (real labelled defects): pixels outside every box are background (BCE); inside a
  box a *box-projection* loss (after BoxInst) asks that every column and every row of the box's
  central 60 % hold defect, measured on 8x8 px cells (mean probability >= ``box_target``): the
  mask must span the box as a coherent blob or line, without being told which pixels are defect.
- cells: BCE at the output's 1/4 resolution against "any defect pixel in this 4x4 cell", so a
  1-3 mm dot gets a confident peak of its own.
- coherence: a total-variation term on the probability map discourages speckle.
- class: cross-entropy of the class head at 1/4 resolution on defect pixels (exact masks) and,
  for boxes, on box pixels weighted by the (detached) defect probability.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from .data import IGNORE, Sample, augment
from .net import SegNet, count_params, gflops_per_tile


@dataclass
class TrainConfig:
    steps: int = 3000
    batch: int = 12  # patches per step, split over the sources by ``mix``
    patch: int = 256
    lr: float = 3e-3
    weight_decay: float = 1e-4
    mix: tuple[float, float, float] = (0.4, 0.3, 0.3)  # synthetic, real texture + pasted, real boxes
    pos_weight: float = 2.0
    cell_weight: float = 1.0  # BCE on 4x4 px cells (any defect pixel = defect) at the output resolution
    box_weight: float = 1.0
    box_target: float = 0.5  # mean probability of an 8 px cell a box's projections must reach
    tv_weight: float = 0.5
    class_weight: float = 0.5
    attention: bool = True
    channels: tuple[int, int, int, int] = (32, 64, 128, 192)
    seed: int = 0
    threads: int = 0  # torch threads; 0 = torch's default
    val_every: int = 250
    init: str = ""  # checkpoint (best.pt) to start from: fine-tuning
    encoder: str = ""  # "lite0": pretrained EfficientNet-Lite0 encoder (train/encoder.py) instead of SegNet's own
    freeze: bool = True  # with an encoder: keep its pretrained weights and batch-norm statistics
    real_every: int = 0  # with real val photos: validate on them every this many steps (box recall; selects the checkpoint)
    ema: float = 0.0  # > 0: validate and keep an exponential moving average of the weights (decay per step)


def to_batch(samples: list[Sample]) -> dict[str, Any]:
    return {
        "image": torch.from_numpy(np.stack([s.image for s in samples])),
        "mask": torch.from_numpy(np.stack([s.mask for s in samples]).astype(np.int64)),
        "boxes": [torch.from_numpy(s.boxes) for s in samples],
    }


def upsample(logit: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(logit, size=(size, size), mode="bilinear", align_corners=False)


def losses(net: SegNet, batch: dict[str, Any], cfg: TrainConfig) -> dict[str, torch.Tensor]:
    img, mask = batch["image"], batch["mask"]
    d_logit, c_logit = net(img)
    d = upsample(d_logit, img.shape[1])[:, 0]  # (N, P, P)
    valid = mask != IGNORE
    pos = (mask > 0) & valid
    target = pos.float()
    w = torch.where(pos, cfg.pos_weight, 1.0) * valid.float()
    bce = (F.binary_cross_entropy_with_logits(d, target, reduction="none") * w).sum() / w.sum().clamp_min(1)
    p = torch.sigmoid(d) * valid.float()
    has = pos.flatten(1).any(1)
    inter = (p * target).flatten(1).sum(1)
    dice_i = 1 - (2 * inter + 1) / (p.flatten(1).sum(1) + target.flatten(1).sum(1) + 1)
    dice = dice_i[has].mean() if has.any() else d.sum() * 0
    # cells: "is there defect in this 4x4 px cell" at the output's own resolution, so that a
    # 1-3 mm dot (one or two cells) reaches a confident peak instead of a blurred, bilinear one
    pos4 = F.max_pool2d(pos.float()[:, None], 4)[:, 0]
    valid4 = -F.max_pool2d(-valid.float()[:, None], 4)[:, 0]  # every pixel of the cell labelled
    w4 = torch.where(pos4 > 0, cfg.pos_weight, 1.0) * valid4
    cell = (F.binary_cross_entropy_with_logits(d_logit[:, 0], pos4, reduction="none") * w4).sum() \
        / w4.sum().clamp_min(1)
    # weak boxes: every column and row of the box's central part holds some defect. Measured on
    # the probability averaged over 8x8 px cells, so scattered speckle cannot satisfy it: only a
    # coherent blob or line can.
    pq = torch.sigmoid(d_logit[:, 0])  # (N, P/4, P/4)
    cells = F.avg_pool2d(pq[:, None], 2)[:, 0]  # 8 px cells
    k = img.shape[1] / cells.shape[-1]
    proj_terms = []
    for i, boxes in enumerate(batch["boxes"]):
        for x0, y0, x1, y1, _ in boxes.tolist():
            cx0, cx1 = (x0 + 0.2 * (x1 - x0)) / k, (x1 - 0.2 * (x1 - x0)) / k
            cy0, cy1 = (y0 + 0.2 * (y1 - y0)) / k, (y1 - 0.2 * (y1 - y0)) / k
            r = cells[i, int(y0 / k):int(np.ceil(y1 / k)), int(x0 / k):int(np.ceil(x1 / k))]
            if r.numel() == 0:
                continue
            cols = r.amax(0)[max(0, int(cx0 - x0 / k)):max(1, int(np.ceil(cx1 - x0 / k)))]
            rows = r.amax(1)[max(0, int(cy0 - y0 / k)):max(1, int(np.ceil(cy1 - y0 / k)))]
            proj_terms.append(F.relu(cfg.box_target - torch.cat([cols, rows])).mean())
    box = torch.stack(proj_terms).mean() if proj_terms else d.sum() * 0
    # coherence: total variation of the probability at 1/4 resolution (no speckle)
    tv = (pq[:, 1:, :] - pq[:, :-1, :]).abs().mean() + (pq[:, :, 1:] - pq[:, :, :-1]).abs().mean()
    # classes at 1/4 resolution
    q = c_logit.shape[-1]
    m4 = F.interpolate(mask[:, None].float(), size=(q, q), mode="nearest")[:, 0].long()
    cls_target = torch.where((m4 > 0) & (m4 != IGNORE), m4 - 1, torch.full_like(m4, -100))
    weights = torch.zeros_like(m4, dtype=torch.float32)
    scale = q / img.shape[1]
    pd = torch.sigmoid(d_logit[:, 0]).detach()
    for i, boxes in enumerate(batch["boxes"]):
        for x0, y0, x1, y1, c in boxes.tolist():
            ys, xs = slice(int(y0 * scale), int(np.ceil(y1 * scale))), slice(int(x0 * scale), int(np.ceil(x1 * scale)))
            cls_target[i, ys, xs] = int(c)
            weights[i, ys, xs] = pd[i, ys, xs]
    weights = torch.where((m4 > 0) & (m4 != IGNORE), torch.ones_like(weights), weights)
    ce = F.cross_entropy(c_logit, cls_target.clamp_min(0), reduction="none")
    ce = (ce * weights * (cls_target >= 0)).sum() / weights.sum().clamp_min(1)
    total = bce + dice + cfg.cell_weight * cell + cfg.box_weight * box + cfg.class_weight * ce + cfg.tv_weight * tv
    return {"total": total, "bce": bce, "dice": dice, "cell": cell, "box": box, "class": ce, "tv": tv}


@torch.no_grad()
def validate(net: SegNet, val: list[Sample], thr: float = 0.5) -> dict[str, float]:
    """Pixel Dice and IoU (pooled over all defect pixels) on exact-mask samples, per source."""
    net.eval()
    out: dict[str, float] = {}
    for src, name in ((0, "synthetic"), (1, "real_texture")):
        ss = [s for s in val if s.source == src]
        if not ss:
            continue
        inter = union = psum = tsum = 0.0
        for k in range(0, len(ss), 16):
            b = to_batch(ss[k:k + 16])
            d, _ = net(b["image"])
            pred = upsample(d, b["image"].shape[1])[:, 0] > np.log(thr / (1 - thr))
            valid = b["mask"] != IGNORE
            t = (b["mask"] > 0) & valid
            pred = pred & valid
            inter += float((pred & t).sum())
            union += float((pred | t).sum())
            psum += float(pred.sum())
            tsum += float(t.sum())
        out[f"{name}_dice"] = round(2 * inter / max(1.0, psum + tsum), 4)
        out[f"{name}_iou"] = round(inter / max(1.0, union), 4)
    net.train()
    return out


REAL_THRESHOLDS = tuple(round(0.5 + 0.02 * i, 2) for i in range(25))  # 0.5 .. 0.98: the score is uint8 at T = 2
MAX_FALSE_BLOBS = 0.5  # per photo: the operating point a real-val selection aims at
# ... and at most this share of the photos' area outside every box flagged (a trained net: 1-3 %): a map that is one
# blob over the whole photo "finds" every box with no false blob (an early averaged net did)
MAX_OUTSIDE_FLAGGED = 0.05


@torch.no_grad()
def validate_real(net: Any, photos: list[tuple[np.ndarray, np.ndarray]], min_area_px: float = 32,
                  thresholds: tuple[float, ...] = REAL_THRESHOLDS) -> dict[str, Any]:
    """Box recall and false blobs per photo on real photos, with ``eval-model``'s rules (whole
    photo as one tile, score = the exported uint8 score at T = 2, bilinear to photo px, the
    station's core-and-extent defects at the exported ``EXTENT``), per
    threshold (recall, false blobs per photo, share of the area outside the boxes flagged);
    ``score``: the best recall with at most ``MAX_FALSE_BLOBS`` false blobs per photo and at most
    ``MAX_OUTSIDE_FLAGGED`` of the area outside the boxes flagged."""
    import cv2

    from ..evaluation.metrics import BoxStats
    from ..inference.components import core_extent_pixels
    from .export import EXTENT, SCORE_TEMPERATURE

    net.eval()
    stats = {t: BoxStats([], [], min_area_px) for t in thresholds}
    outside = {t: 0 for t in thresholds}  # flagged px outside every box
    outside_px = 0
    for k in range(0, len(photos), 4):
        part = photos[k:k + 4]
        hw = {p[0].shape[:2] for p in part}
        groups = [part] if len(hw) == 1 else [[p] for p in part]
        for g in groups:
            h, w = g[0][0].shape[:2]
            hp, wp = -(-h // 32) * 32, -(-w // 32) * 32
            x = np.stack([cv2.copyMakeBorder(p[0], 0, hp - h, 0, wp - w, cv2.BORDER_REFLECT_101) for p in g])
            d, _ = net(torch.from_numpy(x))
            sc = torch.round(torch.sigmoid(d[:, 0].float() / SCORE_TEMPERATURE) * 255).numpy() / 255.0
            for (img, boxes), s in zip(g, sc):
                s = cv2.resize(s.astype(np.float32), (s.shape[1] * 4, s.shape[0] * 4), interpolation=cv2.INTER_LINEAR)[:h, :w]
                px = np.stack([np.floor(boxes[:, 0]), np.floor(boxes[:, 1]), np.ceil(boxes[:, 2]), np.ceil(boxes[:, 3])],
                              1).clip(0, [w, h, w, h]).astype(np.int64) if len(boxes) else np.zeros((0, 4), np.int64)
                union = np.zeros((h, w), bool)
                for x0, y0, x1, y1 in px:
                    union[y0:y1, x0:x1] = True
                outside_px += int((~union).sum())
                for t, st in stats.items():
                    pred = core_extent_pixels(s, t, EXTENT, min_area_px)
                    st.add(pred, union, None, boxes[:, 4].astype(np.int64), px)
                    outside[t] += int((pred & ~union).sum())
    net.train()
    rows = {}
    for t, st in stats.items():
        r = st.report()
        rows[f"{t:g}"] = (round(r["recall"] or 0.0, 4), round(r["false_blobs_per_image"] or 0.0, 3),
                          round(outside[t] / max(outside_px, 1), 4))
    ok = [(rec, -float(t)) for t, (rec, fb, area) in rows.items()
          if fb <= MAX_FALSE_BLOBS and area <= MAX_OUTSIDE_FLAGGED]
    best = max(ok) if ok else (0.0, -1.0)
    return {"real_score": best[0], "real_threshold": -best[1], "real": rows}


class EmaWeights:
    """An exponential moving average of a net's weights and float buffers (``--ema``): fine-tuning
    on few real photos swings from step to step; the average is what is validated and kept."""

    def __init__(self, net: torch.nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.state = {k: v.detach().clone() for k, v in net.state_dict().items()}

    @torch.no_grad()
    def update(self, net: torch.nn.Module) -> None:
        for k, v in net.state_dict().items():
            if v.dtype.is_floating_point:
                self.state[k].mul_(self.decay).add_(v.detach(), alpha=1 - self.decay)
            else:
                self.state[k].copy_(v)

    def swap_in(self, net: torch.nn.Module) -> dict[str, torch.Tensor]:
        """Load the average into ``net``; returns the live weights to load back."""
        live = {k: v.detach().clone() for k, v in net.state_dict().items()}
        net.load_state_dict(self.state)
        return live


def make_net(cfg: TrainConfig, n_classes: int) -> Any:
    if cfg.encoder == "lite0":
        from .encoder import LiteSegNet
        return LiteSegNet(n_classes, cfg.channels, pretrained=True, freeze=cfg.freeze)
    if cfg.encoder:
        raise ValueError(f"unknown encoder {cfg.encoder!r} (known: lite0)")
    return SegNet(n_classes, cfg.channels, cfg.attention)


def train(cfg: TrainConfig, sources: list[Any], val: list[Sample], class_names: list[str], out: Path,
          log_every: int = 25, real_val: list[tuple[np.ndarray, np.ndarray]] | None = None) -> SegNet:
    """Train a SegNet; checkpoints and a JSON-lines log in ``out``; returns the best model (by val Dice)."""
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    net = make_net(cfg, len(class_names))
    if cfg.init:
        ck = torch.load(cfg.init, map_location="cpu", weights_only=False)
        if ck["info"]["classes"] != class_names:
            raise ValueError(f"{cfg.init}: trained for classes {ck['info']['classes']}, not {class_names}")
        net.load_state_dict(ck["state"], strict=not cfg.encoder)
    net.train()
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    counts = np.floor(np.array(cfg.mix) * cfg.batch).astype(int)
    counts[0] += cfg.batch - counts.sum()
    info = {"config": asdict(cfg), "classes": class_names, "params": count_params(net),
            "gflops_per_2048_tile": round(gflops_per_tile(net), 2)}
    (out / "config.json").write_text(json.dumps(info, indent=2))
    best, best_state = -1.0, None
    ema = EmaWeights(net, cfg.ema) if cfg.ema > 0 else None
    t0 = time.time()
    with open(out / "log.jsonl", "w") as logf:
        for step in range(1, cfg.steps + 1):
            samples = [augment(src.sample(rng, float(rng.uniform(0.7, 1.4))), rng)
                       for src, n in zip(sources, counts) for _ in range(n)]
            ls = losses(net, to_batch(samples), cfg)
            opt.zero_grad(set_to_none=True)
            ls["total"].backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
            opt.step()
            sched.step()
            if ema is not None:
                ema.update(net)
            rec: dict[str, Any] = {}
            if step % log_every == 0 or step == 1:
                rec = {"step": step, "s": round(time.time() - t0, 1), **{k: round(v.item(), 4) for k, v in ls.items()}}
            real_due = bool(real_val) and cfg.real_every and (step % cfg.real_every == 0 or step == cfg.steps)
            if step % cfg.val_every == 0 or step == cfg.steps or real_due:
                live = ema.swap_in(net) if ema is not None else None  # the averaged weights are judged
                v = validate(net, val)
                score = float(np.mean([x for k, x in v.items() if k.endswith("_dice")]))
                if real_due:
                    v = {**v, **validate_real(net, real_val or [])}
                    # real photos first (recall at <= 0.5 false blobs per photo), synthetic Dice breaks ties
                    score = v["real_score"] + 1e-3 * score
                elif real_val and cfg.real_every:
                    score = -1.0  # checkpoints are chosen on the real photos only
                rec = {"step": step, "s": round(time.time() - t0, 1), **rec, **v}
                if score > best:
                    best, best_state = score, {k: t.clone() for k, t in net.state_dict().items()}
                    torch.save({"state": best_state, "info": info, "step": step, "val": v}, out / "best.pt")
                if live is not None:
                    net.load_state_dict(live)
            if rec:
                logf.write(json.dumps(rec) + "\n")
                logf.flush()
                print(json.dumps(rec), flush=True)
    if best_state is not None:
        net.load_state_dict(best_state)
    return net.eval()
