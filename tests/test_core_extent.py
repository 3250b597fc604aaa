"""Core-and-extent decoding (a defect is found by its sure core, reported with its extent), the
same rule in eval-model's pixel figures, the retune tool and the pasted-defect proxy dataset."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from edge_inspector.detections.raster import rasterise
from edge_inspector.evaluation.datasets import find_dataset
from edge_inspector.evaluation.pasted import build, free_crops
from edge_inspector.inference.components import core_extent_pixels
from edge_inspector.inference.decoders import DECODERS
from edge_inspector.train.retune import main as retune_main

SPEC = {"class_map": "class_map", "score_map": "score_map", "stride": 4, "components": "defect"}


def _maps() -> tuple[np.ndarray, np.ndarray]:
    """A (1, 32, 32) stride-4 class/score map pair: A = a 3x3 sure core inside a 7x7 extent;
    B = one sure cell in a 5x5 patch; C and D = two 3x3 cores joined by their extent."""
    cm = np.zeros((1, 32, 32), np.uint8)
    sm = np.zeros((1, 32, 32), np.uint8)
    cm[0, 2:9, 2:9], sm[0, 2:9, 2:9] = 1, 140      # A: extent 0.55
    sm[0, 4:7, 4:7] = 240                          # A: core 0.94
    cm[0, 20:25, 2:7], sm[0, 20:25, 2:7] = 2, 140  # B: extent
    sm[0, 22, 4] = 240                             # B: a single sure cell
    cm[0, 14:19, 14:28], sm[0, 14:19, 14:28] = 1, 140  # C-D: one extent
    sm[0, 15:18, 15:18] = 240
    sm[0, 15:18, 24:27] = 240
    return cm, sm


def _decoder(min_area_px: float, extent: float | None = 0.5, threshold: float = 0.9):
    spec = dict(SPEC) if extent is None else {**SPEC, "extent": extent}
    return DECODERS["segmentation"](class_names=["dark", "bright"], score_threshold=threshold,
                                    min_area_px=min_area_px, spec=spec)


def test_core_finds_extent_reports():
    cm, sm = _maps()
    d = _decoder(min_area_px=48).decode({"class_map": cm, "score_map": sm}, 1, (128, 128))[0]
    # A and the joined C-D are found (3x3-cell cores, ~80 px each at tile px), B's single sure cell
    # (a core of a px or two once upsampled) is not
    assert len(d) == 2
    a = int(np.argmin(d.xyxy[:, 0]))
    x0, y0, x1, y1 = d.xyxy[a]
    assert 4 <= x0 <= 10 and 4 <= y0 <= 10 and 26 <= x1 <= 34 and 26 <= y1 <= 34  # the 7x7-cell extent
    assert 400 < d.area_px[a] < 28 * 28 + 1  # far more than the 3x3-cell core (144 px)
    assert d.class_id[a] == 0 and d.score[a] == pytest.approx(240 / 255, rel=1e-5)
    joined = d.xyxy[1 - a]
    assert joined[2] - joined[0] > 40  # C and D are one defect
    # B's sure cell, upsampled, peaks at ~0.84 between pixel centres: a lower threshold and core area
    # let it in; the old decoding (no extent) reports B's whole class-map blob
    assert len(_decoder(min_area_px=1, threshold=0.8).decode({"class_map": cm, "score_map": sm}, 1, (128, 128))[0]) == 3
    old = _decoder(min_area_px=48, extent=None).decode({"class_map": cm, "score_map": sm}, 1, (128, 128))[0]
    assert len(old) == 3  # B included: its class-map blob covers 48 px and its peak reaches 0.9


def test_reported_pixels_match_the_decoder():
    """eval-model's pixel rule (on the stitched dense map) gives what the decoder reports."""
    cm, sm = _maps()
    dec = _decoder(min_area_px=48)
    maps = dec.to_maps({"class_map": cm, "score_map": sm}, 1, (128, 128))
    dense = dec.to_dense(maps).score[0]
    pix = dec.reported(dense)
    assert pix.shape == (128, 128)
    drawn, _ = rasterise(dec.to_detections(maps), (128, 128))
    # same components; outlines are simplified by ~1 px, so compare areas and the overlap
    n_pix = cv2.connectedComponents(pix.view(np.uint8))[0] - 1
    assert n_pix == 2
    inter = (pix & (drawn[0] > 0)).sum()
    assert inter / pix.sum() > 0.9 and inter / (drawn[0] > 0).sum() > 0.8
    np.testing.assert_array_equal(pix, core_extent_pixels(dense, 0.9, 0.5, 48))
    # without an extent the decoder's pixels are the score at or above the threshold
    plain = _decoder(min_area_px=48, extent=None)
    np.testing.assert_array_equal(plain.reported(dense), dense >= 0.9)


def test_extent_out_of_range_is_refused():
    with pytest.raises(ValueError, match="extent"):
        _decoder(min_area_px=4, extent=1.5)
    with pytest.raises(ValueError, match="extent"):
        DECODERS["segmentation"](class_names=["a"], spec={**SPEC, "extent": "low"})


def test_retune_rewrites_the_operating_point(tmp_path: Path, capsys):
    from onnx import TensorProto, helper
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    m = helper.make_model(g)
    for k, v in (("edge_inspector.output", json.dumps({**SPEC, "large": {"area_px": 1, "threshold": 0.1}})),
                 ("edge_inspector.score_threshold", "0.8")):
        p = m.metadata_props.add()
        p.key, p.value = k, v
    path = tmp_path / "m.onnx"
    onnx.save(m, str(path))
    assert retune_main([str(path), "--threshold", "0.7", "--extent", "0.4", "--no-large", "--min-area-px", "16"]) == 0
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    out = json.loads(meta["edge_inspector.output"])
    assert out["extent"] == 0.4 and "large" not in out and out["stride"] == 4
    assert meta["edge_inspector.score_threshold"] == "0.7" and meta["edge_inspector.min_area_px"] == "16.0"
    assert retune_main([str(path), "--extent", "2"]) == 2
    assert "extent" in capsys.readouterr().err


def _yolo(root: Path) -> None:
    rng = np.random.default_rng(3)
    (root / "val" / "images").mkdir(parents=True)
    (root / "val" / "labels").mkdir(parents=True)
    for i in range(6):
        img = (rng.normal(150, 6, (320, 320, 3))).clip(0, 255).astype(np.uint8)
        cv2.imwrite(str(root / "val" / "images" / f"p{i}.png"), img)
        # a labelled box in the top-left quarter: crops must stay off it
        (root / "val" / "labels" / f"p{i}.txt").write_text("0 0.15 0.15 0.2 0.2\n")


def test_pasted_proxy_dataset(tmp_path: Path):
    _yolo(tmp_path / "y")
    img = np.zeros((320, 320, 3), np.uint8)
    spots = free_crops(img, np.array([[16.0, 16.0, 80.0, 80.0]]), 128, 16)
    assert spots and all(y >= 88 or x >= 88 for y, x in spots)  # MARGIN px off the box
    counts = build(tmp_path / "y", "val", tmp_path / "pv", size=128, per_photo=3, train_photos=2, seed=1)
    assert counts["train/good"] == 6
    ds = find_dataset(tmp_path / "pv", "mvtec", "test")
    defective = [s for s in ds.samples if s.group != "good"]
    assert defective and len(ds.samples) == 12
    for s in defective:
        mask = cv2.imread(str(s.mask), cv2.IMREAD_GRAYSCALE)
        assert mask.shape == (128, 128) and mask.max() == 255 and mask.mean() < 255 * 0.5
        pasted = cv2.imread(str(s.image)).astype(np.int16)
        on = mask > 0
        # the pasted pixels differ from the clean texture around them
        assert abs(pasted[on].mean() - pasted[~on].mean()) > 5 or pasted[on].std() > 20
    again = build(tmp_path / "y", "val", tmp_path / "pv2", size=128, per_photo=3, train_photos=2, seed=1)
    assert again == counts  # deterministic for a seed
