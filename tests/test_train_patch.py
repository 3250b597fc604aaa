"""Patch classifier training smoke test: a few steps of each family on a tiny YOLO set, the export,
and the station loading the file and running it on a tile of another size.

Runs when torch (the optional ``train`` extra) is installed; skipped with the reason otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("torch", reason="torch is not installed: pip install -e '.[train]' to run the patch training smoke test")

from edge_inspector.config import ModelCfg  # noqa: E402
from edge_inspector.inference.model import Model  # noqa: E402
from edge_inspector.train import patch as train_patch  # noqa: E402


def tiny_set(root: Path) -> Path:
    """train/ and val/ with 3 photos of 128 px each: grey leather, a dark 40 px blot boxed in two."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    (root / "data.yaml").write_text("names: [blot]\n")
    for split in ("train", "val"):
        (root / split / "images").mkdir(parents=True)
        (root / split / "labels").mkdir(parents=True)
        for i in range(3):
            img = np.clip(rng.normal(150, 10, (128, 128, 3)), 0, 255).astype(np.uint8)
            rows = ""
            if i < 2:
                img[40:80, 40:80] = 40
                rows = "0 0.46875 0.46875 0.3125 0.3125"
            cv2.imwrite(str(root / split / "images" / f"p{i}.png"), img)
            (root / split / "labels" / f"p{i}.txt").write_text(rows)
    return root


@pytest.mark.parametrize("family", ["mlp", "cnn"])
def test_patch_training_exports_a_station_model(tmp_path: Path, family: str) -> None:
    data = tiny_set(tmp_path / "set")
    out = tmp_path / family
    assert train_patch.main(["--family", family, "--data", str(data), "--out", str(out), "--steps", "3",
                             "--synthetic", "0"]) == 0
    info = json.loads((out / "results.json").read_text())
    assert info["steps"] == 3 and info["val"]["patches"] > 0
    m = Model.load(ModelCfg(path=str(out / "model.onnx"), providers=["CPUExecutionProvider"]))
    assert m.kind == "patch" and m.class_names == ["defect"] and m.decoder.stride == 32
    maps = m.run_maps(np.full((2, 128, 96, 3), 120, np.uint8))
    assert maps.anomaly_map.shape == (2, 4, 3)
    assert ((maps.anomaly_map >= 0) & (maps.anomaly_map <= 1)).all()
    assert 0.0 < m.score_threshold < 1.0
