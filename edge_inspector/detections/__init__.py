"""Detections: the vectorised record every model family decodes to, and the operations on it.

- ``Detections`` (``record``): boxes, classes, scores, areas and outlines side by side.
- ``nms`` (``nms``): class-wise non-maximum suppression over boxes.
- ``rasterise`` (``raster``): detections per tile -> dense score and class maps.
"""

from __future__ import annotations

from .nms import nms
from .raster import rasterise
from .record import Detections

__all__ = ["Detections", "nms", "rasterise"]
