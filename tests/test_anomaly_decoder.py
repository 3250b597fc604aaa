"""The anomaly decoder on anomalib-layout ONNX models built here: the map wins over an exported
``pred_mask``, maps smaller than the tile scale up, and a station names an older export's outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edge_inspector.cli import main
from edge_inspector.config import ModelCfg, load_station
from edge_inspector.errors import ModelError
from edge_inspector.inference import Model

from conftest import SMALL_STATION

n = helper.make_node


def export(path: Path, *, map_name: str = "anomaly_map", score_name: str = "pred_score",
           with_mask: bool = True, score_first: bool = False, mask_at: float = 0.9) -> Path:
    """anomalib's layout: input ``input`` float (B, 3, H, W) in 0..1; ``anomaly_map`` (B, 1, H/8, W/8)
    = darkness below mid grey x 2 (a black spot reads 1.0, grey 0.4 reads 0.2), ``pred_score`` (B,) its
    maximum, and (``with_mask``) ``pred_label`` / ``pred_mask`` at the export's own threshold ``mask_at``."""
    nodes = [
        n("ReduceMean", ["input"], ["grey"], axes=[1], keepdims=1),
        n("Sub", ["half", "grey"], ["dark"]),
        n("Relu", ["dark"], ["darkp"]),
        n("AveragePool", ["darkp"], ["pooled"], kernel_shape=[8, 8], strides=[8, 8]),
        n("Mul", ["pooled", "two"], [map_name]),
        n("ReduceMax", [map_name], [score_name], axes=[1, 2, 3], keepdims=0),
    ]
    inits = [onnx.numpy_helper.from_array(np.float32(0.5), "half"), onnx.numpy_helper.from_array(np.float32(2), "two"),
             onnx.numpy_helper.from_array(np.float32(mask_at), "cut")]
    outs = [helper.make_tensor_value_info(map_name, TensorProto.FLOAT, ["b", 1, "h8", "w8"]),
            helper.make_tensor_value_info(score_name, TensorProto.FLOAT, ["b"])]
    if with_mask:
        nodes += [n("GreaterOrEqual", [map_name, "cut"], ["pred_mask"]),
                  n("GreaterOrEqual", [score_name, "cut"], ["pred_label"])]
        outs += [helper.make_tensor_value_info("pred_mask", TensorProto.BOOL, ["b", 1, "h8", "w8"]),
                 helper.make_tensor_value_info("pred_label", TensorProto.BOOL, ["b"])]
    if score_first:
        outs = outs[1:2] + outs[:1] + outs[2:]
    g = helper.make_graph(nodes, "anomalib", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                             ["b", 3, "h", "w"])], outs, inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def load(path: Path, **kw) -> Model:
    m = Model.load(ModelCfg(path=str(path), decoder="anomaly", providers=["CPUExecutionProvider"], **kw))
    m.warmup(tile=64)
    return m


def tile_with_spot(level: int) -> np.ndarray:
    """A 128² mid-grey tile with a 16² spot of grey ``level`` at x 32..48, y 64..80 (8-px aligned)."""
    t = np.full((1, 128, 128, 3), 160, np.uint8)
    t[0, 64:80, 32:48] = level
    return t


def test_the_map_wins_over_the_exported_mask_so_the_station_threshold_acts(tmp_path) -> None:
    path = export(tmp_path / "anomalib.onnx")  # its own mask cuts at 0.9
    faint = tile_with_spot(51)  # map 2 x (0.5 - 0.2) = 0.6 on the spot: under the export's 0.9
    low = load(path, score_threshold=0.5)
    d = low.infer(faint)[0]
    assert len(d.score) == 1 and d.score[0] == pytest.approx(0.6, abs=0.01)
    # the 2 x 2 map cells upsampled: tile px, not map px
    assert d.xyxy[0] == pytest.approx([32, 64, 48, 80], abs=1)
    assert load(path, score_threshold=0.7).infer(faint)[0].score.size == 0  # the threshold moved, the result too
    dense = low.decoder.to_dense(low.run_maps(faint), raw=True).score
    assert dense.shape == (1, 128, 128) and dense[0, 72, 40] == pytest.approx(0.6, abs=0.01)


def test_a_model_with_only_a_mask_still_decodes(tmp_path) -> None:
    path = export(tmp_path / "mask.onnx", mask_at=0.5)
    m = load(path)
    maps = m.run_maps(tile_with_spot(0))
    assert maps.pred_mask is None and maps.anomaly_map is not None  # both exported: the map is read
    # the mask alone (an export cut down to pred_mask + pred_score)
    only = onnx.load(str(path))
    keep = [o for o in only.graph.output if o.name in ("pred_mask", "pred_score")]
    del only.graph.output[:]
    only.graph.output.extend(keep)
    onnx.save(only, str(tmp_path / "only-mask.onnx"))
    d = load(tmp_path / "only-mask.onnx").infer(tile_with_spot(0))[0]
    assert len(d.score) == 1 and d.xyxy[0] == pytest.approx([32, 64, 48, 80], abs=1)


def test_an_older_export_runs_when_the_station_names_its_outputs(recording, tmp_path) -> None:
    path = export(tmp_path / "old.onnx", map_name="output", score_name="onnx::Sigmoid_123", with_mask=False,
                  score_first=True)
    # unnamed, the decoder would take the first output (the score) as the map: refused at warm-up
    with pytest.raises(ModelError, match="onnx::Sigmoid_123"):
        load(path)
    m = load(path, outputs={"anomaly_map": "output", "pred_score": "onnx::Sigmoid_123"}, score_threshold=0.5)
    d = m.infer(tile_with_spot(0))[0]
    assert len(d.score) == 1 and d.score[0] == pytest.approx(1.0, abs=0.01)
    # a station file saying so runs through replay
    rec, _, _ = recording
    export(tmp_path / "old-export.onnx", map_name="output", score_name="onnx::Sigmoid_123", with_mask=False,
           score_first=True)
    st = tmp_path / "old.toml"
    st.write_text(SMALL_STATION.replace(
        'path = "builtin:baseline"', 'path = "old-export.onnx"\ndecoder = "anomaly"\nscore_threshold = 0.5\n'
        'outputs = {anomaly_map = "output", pred_score = "onnx::Sigmoid_123"}'))
    assert load_station(st).model.outputs == {"anomaly_map": "output", "pred_score": "onnx::Sigmoid_123"}
    out = tmp_path / "run"
    assert main(["replay", str(rec), "--station", str(st), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tiles"] > 0 and summary["hides"] == 2
    assert set(summary.get("defects_by_class", {})) <= {"anomaly"}


def test_bad_output_names_are_refused_naming_the_station_field(tmp_path, capsys) -> None:
    path = export(tmp_path / "m.onnx")
    with pytest.raises(ModelError, match=r"station \[model\] outputs.*'nope'"):
        load(path, outputs={"anomaly_map": "nope"})
    st = tmp_path / "bad.toml"
    st.write_text(SMALL_STATION.replace('path = "builtin:baseline"',
                                        'path = "m.onnx"\ndecoder = "anomaly"\noutputs = {heatmap = "anomaly_map"}'))
    assert main(["check-config", str(st)]) == 2
    cap = capsys.readouterr()
    err = cap.out + cap.err
    assert "outputs" in err and "heatmap" in err and "bad.toml" in err
