"""The switchable modules of the compact anchor-free detector (``detector.py``) and its CIoU loss.

- ``ResCBAM``: CBAM (channel attention from average- and max-pooled descriptors through a shared
  MLP, then spatial attention from a 7x7 convolution over the channel mean and max), added back
  to its input (residual).
- ``CrossScaleAttention``: over the neck's three levels (strides 8/16/32, same channels): every
  level gets the other levels resized to it, mixed by learned softmax weights; a small-object
  branch (dilated depthwise convolutions on the stride-8 level, resized to each level) and a
  global-context branch (pooled stride-32 features -> channel gate); out = F + alpha * attended,
  alpha a learned residual weight (starts at 0.1).
- ``SCConv``: self-calibrated convolution (Liu et al., CVPR 2020): half the channels through a
  plain 3x3 convolution, the other half calibrated by a gate from a 4x downsampled view.
- ``ProtoNet``: K learnable prototypes (the first half foreground, the rest background), cosine
  similarity of each cell's feature with each prototype, scaled by a learned temperature,
  softmax over the K; Mfore / Mback = the foreground / background shares; out =
  F * (1 + alpha * Mfore) - F * (beta * Mback), alpha and beta learned.
- ``ciou``: complete IoU of (x0, y0, x1, y1) boxes (Zheng et al., AAAI 2020), written here.

Torch only (the ``train`` extra).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def conv_bn(cin: int, cout: int, k: int = 1, s: int = 1, groups: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, dilation * (k // 2), dilation=dilation, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.SiLU(inplace=True))


def sep_conv(cin: int, cout: int, s: int = 1) -> nn.Sequential:
    """Depthwise 3x3 + pointwise 1x1 (the plain building block when a module is switched off)."""
    return nn.Sequential(conv_bn(cin, cin, 3, s, groups=cin), conv_bn(cin, cout, 1))


class ResCBAM(nn.Module):
    def __init__(self, c: int, reduction: int = 8) -> None:
        super().__init__()
        hidden = max(4, c // reduction)
        self.mlp = nn.Sequential(nn.Conv2d(c, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, c, 1))
        self.spatial = nn.Conv2d(2, 1, 7, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ca = torch.sigmoid(self.mlp(x.mean((2, 3), keepdim=True)) + self.mlp(x.amax((2, 3), keepdim=True)))
        y = x * ca
        sa = torch.sigmoid(self.spatial(torch.cat([y.mean(1, keepdim=True), y.amax(1, keepdim=True)], 1)))
        return x + y * sa


class CrossScaleAttention(nn.Module):
    def __init__(self, c: int, levels: int = 3) -> None:
        super().__init__()
        self.levels = levels
        self.mix = nn.Parameter(torch.zeros(levels, levels))  # level i's weights over the levels j
        self.small = nn.Sequential(conv_bn(c, c, 3, groups=c), conv_bn(c, c, 3, groups=c, dilation=2),
                                   nn.Conv2d(c, c, 1))
        self.context = nn.Sequential(nn.Conv2d(c, max(4, c // 4), 1), nn.ReLU(inplace=True),
                                     nn.Conv2d(max(4, c // 4), c, 1))
        self.fuse = nn.ModuleList([conv_bn(c, c, 1) for _ in range(levels)])
        self.alpha = nn.Parameter(torch.tensor(0.1))

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        w = torch.softmax(self.mix, 1)
        small = torch.sigmoid(self.small(feats[0]))  # where small objects are, at stride 8
        gate = torch.sigmoid(self.context(feats[-1].mean((2, 3), keepdim=True)))  # global context
        out = []
        for i, f in enumerate(feats):
            size = f.shape[-2:]
            mixed = sum(w[i, j] * (g if j == i else F.interpolate(g, size=size, mode="nearest"))
                        for j, g in enumerate(feats))
            s = small if i == 0 else F.interpolate(small, size=size, mode="bilinear", align_corners=False)
            att = self.fuse[i](mixed * gate) * (1.0 + s)
            out.append(f + self.alpha * att)
        return out


class SCConv(nn.Module):
    """Self-calibrated 3x3 convolution, ``cin`` -> ``cout`` channels."""

    def __init__(self, cin: int, cout: int, pool: int = 4) -> None:
        super().__init__()
        h = cin // 2
        self.h = h
        self.pool = pool
        self.k1 = conv_bn(cin - h, cin - h, 3)
        self.k2 = nn.Sequential(nn.Conv2d(h, h, 3, padding=1, bias=False), nn.BatchNorm2d(h))
        self.k3 = nn.Sequential(nn.Conv2d(h, h, 3, padding=1, bias=False), nn.BatchNorm2d(h))
        self.k4 = conv_bn(h, h, 3)
        self.out = conv_bn(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x[:, : x.shape[1] - self.h], x[:, x.shape[1] - self.h:]
        t = F.interpolate(self.k2(F.avg_pool2d(b, self.pool, ceil_mode=True)), size=b.shape[-2:], mode="nearest")
        b = self.k4(self.k3(b) * torch.sigmoid(b + t))
        return self.out(torch.cat([self.k1(a), b], 1))


class ProtoNet(nn.Module):
    def __init__(self, c: int, k: int = 8) -> None:
        super().__init__()
        if k < 2:
            raise ValueError(f"ProtoNet needs at least 2 prototypes (foreground and background), got {k}")
        self.k_fore = k // 2
        self.prototypes = nn.Parameter(torch.randn(k, c) * 0.1)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(10.0)))
        self.alpha = nn.Parameter(torch.tensor(0.5))
        self.beta = nn.Parameter(torch.tensor(0.1))

    def masks(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(Mfore, Mback), each (N, 1, H, W)."""
        f = F.normalize(x, dim=1)
        p = F.normalize(self.prototypes, dim=1)
        sim = torch.einsum("nchw,kc->nkhw", f, p) * self.log_temperature.exp()
        prob = torch.softmax(sim, 1)
        return prob[:, : self.k_fore].sum(1, keepdim=True), prob[:, self.k_fore:].sum(1, keepdim=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Attended features and Mfore (for the auxiliary foreground loss)."""
        fore, back = self.masks(x)
        return x * (1.0 + self.alpha * fore) - x * (self.beta * back), fore


def ciou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Complete IoU of matching rows of (k, 4) boxes x0, y0, x1, y1: IoU - centre distance^2 /
    enclosing diagonal^2 - alpha * v (aspect-ratio consistency)."""
    w1, h1 = (a[:, 2] - a[:, 0]).clamp(min=eps), (a[:, 3] - a[:, 1]).clamp(min=eps)
    w2, h2 = (b[:, 2] - b[:, 0]).clamp(min=eps), (b[:, 3] - b[:, 1]).clamp(min=eps)
    iw = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp(min=0)
    ih = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp(min=0)
    inter = iw * ih
    iou = inter / (w1 * h1 + w2 * h2 - inter + eps)
    cw = torch.maximum(a[:, 2], b[:, 2]) - torch.minimum(a[:, 0], b[:, 0])
    ch = torch.maximum(a[:, 3], b[:, 3]) - torch.minimum(a[:, 1], b[:, 1])
    diag = cw ** 2 + ch ** 2 + eps
    dist = ((a[:, 0] + a[:, 2] - b[:, 0] - b[:, 2]) ** 2 + (a[:, 1] + a[:, 3] - b[:, 1] - b[:, 3]) ** 2) / 4
    v = (4 / math.pi ** 2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1)) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + 1 + eps)
    return iou - dist / diag - alpha * v
