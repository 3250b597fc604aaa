"""DRAEM, learned from good leather only (``edge-inspector train --family draem``).

Two sub-networks on the tile at half resolution (as ``ssim_ae``): the *reconstructive* one (the
``ssim_ae.AutoEncoder``) learns to give back good leather from leather with synthetic anomalies
pasted in (``good.add_anomalies``: Perlin-like masks, DRAEM's recipe; loss L2 + 1 - SSIM against
the clean patch); the *discriminative* one, a small U-Net, sees the tile and its reconstruction
side by side (6 channels) and segments the pasted anomalies (focal loss). The anomaly map is its
anomaly probability averaged to one value per 8 tile px; the threshold comes from held-out good
leather and the export carries the contract (``good``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import good
from .ssim_ae import AutoEncoder, _block, half


class Discriminator(nn.Module):
    """(N, 6, h, w) -> (N, 2, h, w) logits; a three-level U-Net (h, w multiples of 4)."""

    def __init__(self, c: tuple[int, int, int] = (24, 48, 96)) -> None:
        super().__init__()
        self.e0 = nn.Sequential(_block(6, c[0]), _block(c[0], c[0]))
        self.e1 = nn.Sequential(_block(c[0], c[1], 2), _block(c[1], c[1]))
        self.e2 = nn.Sequential(_block(c[1], c[2], 2), _block(c[2], c[2]))
        self.d1 = _block(c[2] + c[1], c[1])
        self.d0 = _block(c[1] + c[0], c[0])
        self.head = nn.Conv2d(c[0], 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.e0(x)
        b = self.e1(a)
        c = self.e2(b)
        b = self.d1(torch.cat([F.interpolate(c, scale_factor=2.0, mode="nearest"), b], 1))
        a = self.d0(torch.cat([F.interpolate(b, scale_factor=2.0, mode="nearest"), a], 1))
        return self.head(a)


class Draem(nn.Module):
    """The station's view: ``raw(tile)`` = p(anomaly) of the discriminative net at 1/8 of the tile."""

    kind = "draem"

    def __init__(self) -> None:
        super().__init__()
        self.rec = AutoEncoder()
        self.seg = Discriminator()

    def logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r = self.rec(x)
        return r, self.seg(torch.cat([x, r], 1))

    def raw(self, image: torch.Tensor) -> torch.Tensor:
        _, lg = self.logits(half(image))
        return F.avg_pool2d(torch.softmax(lg, 1)[:, 1:], good.MAP_STRIDE // 2)


def focal(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Focal loss of (N, 2, h, w) logits against a (N, h, w) 0/1 mask."""
    logp = F.log_softmax(logits, 1)
    t = target.long()
    lp = logp.gather(1, t[:, None])[:, 0]
    return (-(1 - lp.exp()) ** gamma * lp).mean()


def train(data: good.GoodData, out: Path, *, steps: int, batch: int = 16, patch: int = 256, lr: float = 2e-3,
          seed: int = 0, log=print) -> tuple[Draem, dict[str, Any]]:
    """Train both sub-networks together on ``data`` with synthetic anomalies; writes ``out/draem.pt``."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = Draem()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=max(steps, 1), pct_start=0.1)

    def step(i: int) -> dict[str, float]:
        net.train()
        clean = data.patches(rng, batch, patch)
        aug, mask = good.add_anomalies(clean, rng)
        x = half(torch.from_numpy(aug))
        y = half(torch.from_numpy(clean))
        m = (F.avg_pool2d(torch.from_numpy(mask)[:, None], 2)[:, 0] > 0.5).float()
        r, lg = net.logits(x)
        l_rec = F.mse_loss(r, y) + (1 - good.ssim_map(r, y)).mean()
        l_seg = focal(lg, m)
        loss = l_rec + l_seg
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        return {"rec": l_rec.item(), "seg": l_seg.item()}

    last = good.train_loop(step, steps, log=log)
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"state": net.state_dict(), "steps": steps}, out / "draem.pt")
    return net, {"family": "draem", "steps": steps, "batch": batch, "patch": patch, "lr": lr, "seed": seed,
                 "last_loss": last, "params": sum(p.numel() for p in net.parameters())}


DESCRIPTION = ("DRAEM learned from good leather only: reconstructive autoencoder + discriminative U-Net on the "
               "tile at half resolution, trained with synthetic Perlin-noise anomalies; anomaly map = the "
               "discriminator's anomaly probability per 8 tile px; threshold from held-out good leather. "
               "See docs/models.md.")
