"""Built-in models: the one table of the models shipped in ``edge_inspector/models/`` (docs/models.md).

A station addresses them as ``builtin:<name>`` in ``model.path``; ``builtin:default`` is
``DEFAULT_MODEL``. Adding a built-in model is one row in ``BUILTINS`` (and its file).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelError

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


@dataclass(frozen=True, slots=True)
class BuiltinModel:
    """One shipped model: its ``builtin:`` name, file in ``MODELS_DIR`` and what it is."""

    name: str
    file: str
    description: str

    @property
    def path(self) -> Path:
        return MODELS_DIR / self.file


BUILTINS: tuple[BuiltinModel, ...] = (
    BuiltinModel("baseline", "baseline.onnx",
                 "classical, brightness only (python -m edge_inspector.inference.baseline)"),
    BuiltinModel("lite0-attention-unet", "lite0_attention_unet.onnx",
                 "Attention U-Net on an ImageNet-pretrained EfficientNet-Lite0 encoder (the default, real leather)"),
    BuiltinModel("attention-unet", "attention_unet.onnx", "learned (edge_inspector/train), own small encoder;"
                 " the default until 2026-12-02 and the synthetic demo's model"),
    BuiltinModel("attention-unet-fp16", "attention_unet_fp16.onnx", "the same in float16, for GPUs"),
    BuiltinModel("unet", "unet.onnx", "plain U-Net trained the same way, for comparison"),
    # int8 static QDQ of the two rows above (python -m edge_inspector.train.quantize; docs/performance.md)
    BuiltinModel("attention-unet-int8", "attention_unet_int8.onnx",
                 "attention-unet in int8 (static QDQ, per channel, calibrated on synthetic and real tiles)"),
    BuiltinModel("unet-int8", "unet_int8.onnx", "unet in int8, made the same way (MinMax calibration)"),
    BuiltinModel("lite0-attention-unet-int8", "lite0_attention_unet_int8.onnx",
                 "lite0-attention-unet (the default) in int8, made the same way (Percentile calibration)"),
    # patch classifiers (python -m edge_inspector.train.patch; docs/models.md "Patch classifiers")
    BuiltinModel("patch-mlp", "patch_mlp.onnx", "edge features (Sobel edge pixels, 5 x 5 block statistics) + MLP"
                 " per 32 px patch"),
    BuiltinModel("patch-cnn", "patch_cnn.onnx", "small AlexNet-style fully convolutional patch classifier"),
    # detector (python -m edge_inspector.train.detector; docs/models.md "builtin:detector")
    BuiltinModel("detector", "detector.onnx", "compact anchor-free detector on a pretrained EfficientNet-Lite0"
                 " backbone with SCConv (the ablation's best on val); ultralytics layout"),
)

# name -> file, in table order (a view of BUILTINS)
BUILTIN_MODELS: dict[str, Path] = {m.name: m.path for m in BUILTINS}

# The station default ("builtin:default"): the Attention U-Net on a pretrained EfficientNet-Lite0
# encoder, the best on real leather (docs/models.md); builtin:attention-unet (the default until
# 2026-12-02, better on the synthetic demo's leather) and builtin:baseline stay selectable.
DEFAULT_MODEL = "lite0-attention-unet"


def builtin_path(path: str) -> Path:
    """``builtin:<name>`` -> the shipped file; ``builtin:default`` -> ``DEFAULT_MODEL``."""
    name = path.split(":", 1)[1]
    if name == "default":
        name = DEFAULT_MODEL
    if name not in BUILTIN_MODELS:
        raise ModelError(
            f"unknown built-in model {name!r}", path=path, where="model.path",
            hint="use builtin:default, " + ", ".join(f"builtin:{n}" for n in BUILTIN_MODELS)
            + " or the path of an .onnx file",
        )
    return BUILTIN_MODELS[name]
