"""Novelty detection learned from good leather alone (``edge-inspector learn-good``, docs/models.md).

- ``features``: the shipped ImageNet feature extractor (EfficientNet-Lite0, ONNX) behind the
  station's uint8 NHWC input;
- ``bank``: bounded memory of good patches (reservoir + greedy coreset) or one Gaussian;
- ``graph``: the distance head, scaling, leather mask and contract metadata, as one ONNX model;
- ``learn``: good images / recordings -> patches -> memory -> threshold from held-out good leather.

torch-free: numpy and onnxruntime only.
"""

from .learn import LearnOptions, LearnReport, format_report, learn_good

__all__ = ["LearnOptions", "LearnReport", "format_report", "learn_good"]
