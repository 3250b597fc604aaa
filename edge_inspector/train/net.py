"""Plain U-Net and Attention U-Net (Oktay et al. 2018) sized for 2048x2048 tiles on a CPU.

One definition serves both: ``SegNet(attention=False)`` is the plain U-Net, ``attention=True``
puts an additive attention gate on every skip connection. Sized for the station, not for a
benchmark: a stride-4 stem of two overlapping 3x3 stride-2 convolutions, depthwise-separable 3x3
blocks, few channels; the decoder ends at 1/4 resolution, where a 1-3 mm defect at
0.37 mm/px still covers one or two cells. Two heads: a defect logit (BCE + Dice) and class logits.

Input: uint8 NHWC (normalisation inside, as the model contract wants). Output of ``forward``:
defect logits (N, 1, H/4, W/4) and class logits (N, C, H/4, W/4).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

# Per-channel mean and spread of leather photographs and synthetic hides (RGB, 0..255).
MEAN = (128.0, 110.0, 95.0)
STD = (55.0, 50.0, 48.0)


def sep_block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """Depthwise 3x3 + pointwise 1x1, each with batch norm and ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU(inplace=True),
        nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class AttentionGate(nn.Module):
    """Additive attention gate: alpha = sigmoid(psi(relu(Wx x + Wg g))); returns x * alpha.

    ``g`` (the gating signal from the coarser decoder level) is upsampled to the skip's size
    first, so the gate weighs every skip position (Oktay et al. compute it at the coarse size and
    upsample alpha; at our channel counts the difference in cost is negligible).
    """

    def __init__(self, cx: int, cg: int, ci: int) -> None:
        super().__init__()
        self.wx = nn.Conv2d(cx, ci, 1, bias=False)
        self.wg = nn.Conv2d(cg, ci, 1, bias=True)
        self.psi = nn.Conv2d(ci, 1, 1, bias=True)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.psi(F.relu(self.wx(x) + self.wg(g))))


class SegNet(nn.Module):
    def __init__(self, n_classes: int, channels: tuple[int, int, int, int] = (24, 48, 96, 128),
                 attention: bool = True) -> None:
        super().__init__()
        c0, c1, c2, c3 = channels
        self.n_classes = n_classes
        self.attention = attention
        self.channels = channels
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)  # .half() follows
        self.register_buffer("inv_std", 1.0 / torch.tensor(STD).view(1, 3, 1, 1), persistent=False)
        # stride-4 stem in two overlapping 3x3 steps: a single 4x4/4 "patchify" layer aliases fine
        # periodic texture (belt weave, grain) into stripe artefacts at 1/4 resolution
        half = max(8, c0 // 2)
        self.stem = nn.Sequential(
            nn.Conv2d(3, half, 3, 2, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True),
            nn.Conv2d(half, c0, 3, 2, 1, bias=False), nn.BatchNorm2d(c0), nn.ReLU(inplace=True),
        )
        self.enc0 = sep_block(c0, c0)  # 1/4
        self.enc1 = nn.Sequential(sep_block(c0, c1, 2), sep_block(c1, c1))  # 1/8
        self.enc2 = nn.Sequential(sep_block(c1, c2, 2), sep_block(c2, c2))  # 1/16
        self.enc3 = nn.Sequential(sep_block(c2, c3, 2), sep_block(c3, c3))  # 1/32
        self.gates = nn.ModuleList([
            AttentionGate(c2, c3, max(8, c2 // 2)), AttentionGate(c1, c2, max(8, c1 // 2)),
            AttentionGate(c0, c1, max(8, c0 // 2)),
        ]) if attention else None
        self.dec2 = sep_block(c3 + c2, c2)
        self.dec1 = sep_block(c2 + c1, c1)
        self.dec0 = sep_block(c1 + c0, c0)
        self.defect_head = nn.Conv2d(c0, 1, 1)
        self.class_head = nn.Conv2d(c0, n_classes, 1)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """image: (N, H, W, 3) uint8, H and W multiples of 32."""
        x = (image.permute(0, 3, 1, 2).to(self.mean.dtype) - self.mean) * self.inv_std
        return self.body(self.stem(x))

    def folded_first_conv(self) -> nn.Conv2d:
        """The stem's first convolution with the input normalisation folded in (weights / std,
        bias -mean / std): it takes 0..255 pixels directly. For the export: at 2048² a separate
        subtract and multiply over the full-resolution input cost a quarter of the CPU time. Differs
        from ``stem[0](normalised)`` only in the 1 px zero-padding ring at the tile border."""
        c = self.stem[0]
        f = nn.Conv2d(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding, bias=True)
        w = c.weight.detach() * self.inv_std.view(1, 3, 1, 1)
        f.weight.data.copy_(w)
        f.bias.data.copy_(-(w * self.mean.view(1, 3, 1, 1)).sum((1, 2, 3)))
        return f.to(c.weight.dtype)

    def body(self, stem_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Everything after the stem: encoder, gated skips, decoder, heads."""
        s0 = self.enc0(stem_out)
        s1 = self.enc1(s0)
        s2 = self.enc2(s1)
        y = self.enc3(s2)
        for i, (skip, dec) in enumerate(((s2, self.dec2), (s1, self.dec1), (s0, self.dec0))):
            y = F.interpolate(y, size=skip.shape[-2:], mode="nearest")
            if self.gates is not None:
                skip = self.gates[i](skip, y)
            y = dec(torch.cat([y, skip], 1))
        return self.defect_head(y), self.class_head(y)


def count_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def gflops_per_tile(m: SegNet, tile: int = 2048) -> float:
    """Multiply-adds x 2 of convolutions for one tile (elementwise ops not counted)."""
    total = 0

    def hook(mod: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1] * (mod.in_channels // mod.groups)
            total += 2 * k * out.numel()

    hs = [mod.register_forward_hook(hook) for mod in m.modules() if isinstance(mod, nn.Conv2d)]
    with torch.no_grad():
        m.eval()(torch.zeros(1, 256, 256, 3, dtype=torch.uint8))
    for h in hs:
        h.remove()
    return total * (tile / 256) ** 2 / 1e9
