"""Export a trained SegNet to ONNX with the model contract (docs/architecture.md section 7).

Input ``image``: uint8 NHWC, any size that is a multiple of 32 (normalisation inside the graph).
Outputs at 1/4 resolution, both uint8 (a 2048x2048 tile gives 2 x 256 KB):
``score_map`` = sigmoid(defect logit / ``SCORE_TEMPERATURE``) x 255; ``class_map`` = 0 where the
probability (T = 1) is below ``CLASS_FLOOR``, else 1 + the most likely class. The station's
segmentation decoder takes connected components of the class map's defect pixels (whatever their
class; ``"components": "defect"``), keeps those whose peak score reaches
``edge_inspector.score_threshold`` and that cover ``edge_inspector.min_area_px``, and gives each
its majority class.
``fp16=True`` writes a variant whose weights and arithmetic are float16 (for GPUs; the uint8
input and outputs stay the same).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from .net import SegNet

STRIDE = 4
SCORE_TEMPERATURE = 2.0
CLASS_FLOOR = 0.25  # class map holds candidates from this probability on
# The operating point on real leather (docs/models.md, "Threshold on real leather"): a defect is
# found by its core, >= MIN_AREA_PX px at or above SCORE_THRESHOLD, and reported with its extent,
# the pixels at or above EXTENT connected to it (core-and-extent decoding, inference.components).
# Chosen on the real val photos: the lowest threshold with <= 0.5 false blobs per photo.
# ``python -m edge_inspector.train.retune`` sets these on an exported file without retraining.
SCORE_THRESHOLD = 0.75
EXTENT = 0.4
MIN_AREA_PX = 32  # two output cells: a lone 4x4 px cell is grain more often than a defect (docs/models.md)


class Deployed(nn.Module):
    """The exported graph: the input normalisation folded into the first convolution
    (``SegNet.folded_first_conv``), sigmoid, uint8 score and class maps."""

    def __init__(self, net: SegNet) -> None:
        super().__init__()
        self.net = net
        self.first = net.folded_first_conv()
        self.lite = None
        if getattr(net, "kind", "") == "lite0":
            from .encoder import DeployedLite
            self.lite = DeployedLite(net)  # type: ignore[arg-type]

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.lite is not None:
            d, c = self.lite.logits(image)
        else:
            x = image.permute(0, 3, 1, 2).to(self.first.weight.dtype)
            d, c = self.net.body(self.net.stem[1:](self.first(x)))
        logit = d[:, 0].float()
        p = torch.sigmoid(logit)
        # the score is the probability at temperature SCORE_TEMPERATURE: the trained model is so sure
        # of itself that at T = 1 true defects and the firmest grain spots share the top uint8 levels
        score = torch.round(torch.sigmoid(logit / SCORE_TEMPERATURE) * 255.0).to(torch.uint8)
        cls = (torch.argmax(c, dim=1) + 1).to(torch.uint8)
        class_map = torch.where(p >= CLASS_FLOOR, cls, torch.zeros_like(cls))
        return class_map, score


def describe(net: nn.Module) -> str:
    if getattr(net, "kind", "") == "lite0":
        return (f"Attention U-Net decoder (channels {list(net.channels)}) over an ImageNet-pretrained "
                "EfficientNet-Lite0 encoder (stem + stages 1-5 on the tile downscaled 2x) and a light "
                "full-resolution stride-4/8 path; defect mask and class head; trained on synthetic hides, "
                "real leather texture with pasted defects and real labelled defects (boxes as weak labels), "
                "checkpoint and threshold chosen on real val photos. See docs/models.md.")
    kind = "Attention U-Net" if net.attention else "U-Net"
    return (f"{kind} (depthwise-separable, stride-4 stem, channels {list(net.channels)}), defect mask "
            "(BCE + Dice) and class head; trained on synthetic hides, real leather texture with pasted "
            "defects and real labelled defects (boxes as weak labels). See docs/models.md.")


def metadata(net: SegNet, class_names: list[str], name: str, info: dict,
             threshold: float | None = None) -> dict[str, str]:
    return {
        "edge_inspector.kind": "segmentation",
        "edge_inspector.name": name,
        "edge_inspector.version": "1",
        "edge_inspector.description": describe(net),
        "edge_inspector.classes": json.dumps(class_names),
        "edge_inspector.input": json.dumps(
            {"layout": "NHWC", "dtype": "uint8", "channels": 3, "size": [None, None], "color": "RGB", "multiple": 32}
        ),
        "edge_inspector.output": json.dumps({"class_map": "class_map", "score_map": "score_map", "stride": STRIDE,
                                             "components": "defect", "extent": EXTENT}),
        "edge_inspector.mm_per_px": "0.37",
        "edge_inspector.score_threshold": str(SCORE_THRESHOLD if threshold is None else threshold),
        "edge_inspector.min_area_px": str(MIN_AREA_PX),
        "edge_inspector.training": json.dumps(info),
    }


def export(net: SegNet, class_names: list[str], path: Path, *, name: str, info: dict, fp16: bool = False,
           sample: int = 256, threshold: float | None = None) -> Path:
    """Write ``path`` (ONNX, opset 17, dynamic batch and size) with the contract metadata."""
    net = net.eval()
    model = Deployed(net.float()).eval()  # fold in float32, then convert
    if fp16:
        model = model.half()
    x = torch.zeros(1, sample, sample, 3, dtype=torch.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter: stable output
        torch.onnx.export(
            model, x, str(path), input_names=["image"], output_names=["class_map", "score_map"],
            opset_version=17, dynamo=False,
            dynamic_axes={"image": {0: "n", 1: "h", 2: "w"}, "class_map": {0: "n", 1: "h4", 2: "w4"},
                          "score_map": {0: "n", 1: "h4", 2: "w4"}},
        )
    if fp16:
        net.float()
    m = onnx.load(str(path))
    for k, v in metadata(net, class_names, name, info, threshold).items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    m.producer_name = "edge_inspector.train"
    onnx.save(m, str(path))
    return path
