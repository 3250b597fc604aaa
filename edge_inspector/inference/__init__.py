"""Inference: ONNX defect models -> ``Detections`` per tile.

- ``Model.load(cfg)``: open a model (``builtin:default``, ``builtin:baseline`` or an .onnx file),
  read its contract from ``metadata_props``, choose the execution provider; ``model.infer(tiles)``.
- ``DECODERS``: raw outputs -> ``Detections`` per model family (segmentation, yolo/detection,
  anomaly, classification).
- ``build_baseline()``: the classical baseline model as an ONNX graph
  (``python -m edge_inspector.inference.baseline`` writes ``edge_inspector/models/baseline.onnx``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .baseline import build_baseline
    from .decoders import DECODERS, Decoder
    from .model import BUILTIN_MODELS, DEFAULT_MODEL, Model

__all__ = ["BUILTIN_MODELS", "DECODERS", "DEFAULT_MODEL", "Decoder", "Model", "build_baseline"]

# Imported on first use (PEP 562), so that ``python -m edge_inspector.inference.baseline``
# runs the module without it being imported twice.
_WHERE = {
    "build_baseline": "baseline", "DECODERS": "decoders", "Decoder": "decoders",
    "BUILTIN_MODELS": "model", "DEFAULT_MODEL": "model", "Model": "model",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        from importlib import import_module

        return getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
