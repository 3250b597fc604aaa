"""edge-inspector: station software for automated leather-hide inspection.

Follow one tile from the camera to the results:
``lines`` (LineBlock) -> ``recording`` / ``synth`` (sources) -> ``stitch`` (tiles in a ring)
-> ``inference`` (ONNX model -> ``detections.Detections``) -> ``assemble`` (belt mm, merged
``defect.Defect``, ``hide.Hide``) -> ``results`` (JSON, PNG hide maps, SQLite).
"""

__version__ = "0.1.0"
