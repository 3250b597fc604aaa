"""SSIM autoencoder, learned from good leather only (``edge-inspector train --family ssim-ae``).

The network sees the tile at half resolution (2x2 average inside the graph, like learn-good's
default downscale): a convolutional autoencoder squeezes 128 x 128 px patches through a narrow
stride-16 bottleneck and is trained to reconstruct good leather (loss 1 - SSIM + L1). Leather it
never saw reconstructs badly: the anomaly map is 1 - local SSIM (7 x 7 window, channels averaged)
between input and reconstruction, averaged to one value per 8 tile px. The threshold comes from
held-out good leather (``good.threshold_from_good``); the export carries the contract (``good``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import good


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.1, True))


class AutoEncoder(nn.Module):
    """(N, 3, h, w) 0..1 -> reconstruction, h and w multiples of 16; ``latent`` channels at 1/16."""

    def __init__(self, channels: tuple[int, ...] = (32, 64, 96, 128), latent: int = 32) -> None:
        super().__init__()
        enc, c = [], 3
        for k in channels:
            enc.append(_block(c, k, 2))
            c = k
        self.enc = nn.Sequential(*enc, nn.Conv2d(c, latent, 1))
        dec, c = [_block(latent, channels[-1])], channels[-1]
        for k in reversed(channels[:-1]):
            dec += [nn.Upsample(scale_factor=2, mode="nearest"), _block(c, k)]
            c = k
        dec += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, 3, 3, 1, 1)]
        self.dec = nn.Sequential(*dec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.dec(self.enc(x)))


def half(image: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC (or float 0..1 NHWC) -> float NCHW 0..1 at half resolution."""
    x = image.permute(0, 3, 1, 2).float()
    if image.dtype == torch.uint8:
        x = x / 255.0
    return F.avg_pool2d(x, 2)


class SsimAE(nn.Module):
    """The station's view: ``raw(tile)`` = 1 - SSIM(x, AE(x)) at 1/8 of the tile."""

    kind = "ssim-ae"

    def __init__(self, **kw: Any) -> None:
        super().__init__()
        self.ae = AutoEncoder(**kw)

    def raw(self, image: torch.Tensor) -> torch.Tensor:
        x = half(image)
        return F.avg_pool2d(1 - good.ssim_map(x, self.ae(x)), good.MAP_STRIDE // 2)


def train(data: good.GoodData, out: Path, *, steps: int, batch: int = 16, patch: int = 256, lr: float = 2e-3,
          seed: int = 0, log=print) -> tuple[SsimAE, dict[str, Any]]:
    """Train on good patches of ``data``; writes ``out/ssim-ae.pt``; returns the net and its info."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = SsimAE()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=max(steps, 1), pct_start=0.1)

    def step(i: int) -> dict[str, float]:
        net.train()
        x = half(torch.from_numpy(data.patches(rng, batch, patch)))
        r = net.ae(x)
        loss_ssim = (1 - good.ssim_map(x, r)).mean()
        loss_l1 = (x - r).abs().mean()
        loss = loss_ssim + loss_l1
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        return {"ssim": loss_ssim.item(), "l1": loss_l1.item()}

    last = good.train_loop(step, steps, log=log)
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"state": net.state_dict(), "steps": steps}, out / "ssim-ae.pt")
    return net, {"family": "ssim-ae", "steps": steps, "batch": batch, "patch": patch, "lr": lr, "seed": seed,
                 "last_loss": last, "params": sum(p.numel() for p in net.parameters())}


DESCRIPTION = ("SSIM autoencoder learned from good leather only: tile at half resolution, convolutional "
               "autoencoder with a stride-16 bottleneck, anomaly map = 1 - local SSIM between the tile and its "
               "reconstruction, per 8 tile px; threshold from held-out good leather. See docs/models.md.")
