"""Patch classifiers (docs/models.md, "Patch classifiers"): a tile cut into a grid of patches, each
classified defective or good. ``features``: the edge-feature extractor (numpy reference and the same
as ONNX nodes); ``graph``: whole-model ONNX graphs and the contract metadata; ``labels``: patch
labels from boxes or masks (training and ``eval-model`` alike). Training: ``edge_inspector.train.patch``."""
