"""Inference: ONNX defect models -> ``Detections`` per tile, in two stages.

- ``Model.load(cfg)``: open a model (``builtin:<name>`` or an .onnx file), read its contract
  (``ModelContract``) from ``metadata_props``, choose the execution provider; ``model.infer(tiles)``.
- ``InputFeed`` (``feed``): the camera's tiles -> the model's input (mono into 3 channels, 12/16-bit
  samples into uint8 or float), chosen once by ``Model.for_station`` / ``check_fits``.
- ``model.run_maps(tiles)``: the first stage, raw outputs -> the family's named maps
  (``SegmentationMaps``, ``AnomalyMaps``, ``Boxes``, ``TileScores``).
- ``DECODERS``: per model family (segmentation, yolo/detection, anomaly, classification) the
  first stage and the second, maps -> ``Detections`` (or ``DenseMaps`` at tile px for eval-model).
- ``BUILTINS`` / ``BUILTIN_MODELS``: the built-in models (``registry``), ``DEFAULT_MODEL``.
- ``build_baseline()``: the classical baseline model as an ONNX graph
  (``python -m edge_inspector.inference.baseline`` writes ``edge_inspector/models/baseline.onnx``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .baseline import build_baseline
    from .contract import InputSpec, ModelContract
    from .decoders import DECODERS, Decoder
    from .feed import InputFeed
    from .maps import AnomalyMaps, Boxes, DenseMaps, Maps, SegmentationMaps, TileScores
    from .model import Model
    from .registry import BUILTIN_MODELS, BUILTINS, DEFAULT_MODEL

__all__ = [
    "AnomalyMaps", "BUILTINS", "BUILTIN_MODELS", "Boxes", "DECODERS", "DEFAULT_MODEL", "Decoder", "DenseMaps",
    "InputFeed", "InputSpec", "Maps", "Model", "ModelContract", "SegmentationMaps", "TileScores", "build_baseline",
]

# Imported on first use (PEP 562), so that ``python -m edge_inspector.inference.baseline``
# runs the module without it being imported twice.
_WHERE = {
    "build_baseline": "baseline",
    "InputSpec": "contract", "ModelContract": "contract",
    "DECODERS": "decoders", "Decoder": "decoders",
    "InputFeed": "feed",
    "AnomalyMaps": "maps", "Boxes": "maps", "DenseMaps": "maps", "Maps": "maps", "SegmentationMaps": "maps",
    "TileScores": "maps",
    "Model": "model",
    "BUILTINS": "registry", "BUILTIN_MODELS": "registry", "DEFAULT_MODEL": "registry",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        from importlib import import_module

        return getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
