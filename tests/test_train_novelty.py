"""DRAEM and SSIM-AE smoke tests: a few steps on good leather made here, export with the contract,
parity between torch and ONNX Runtime, and the station's anomaly decoder reading the model.

Runs when torch (the optional ``train`` extra) is installed; skipped with the reason otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed: pip install -e '.[train]' to run the"
                            " DRAEM / SSIM-AE smoke tests")

from edge_inspector.config import ModelCfg, Station, load_station  # noqa: E402
from edge_inspector.inference.model import Model  # noqa: E402
from edge_inspector.synth import SynthConfig, write_recording  # noqa: E402
from edge_inspector.train import __main__ as train_cli  # noqa: E402
from edge_inspector.train import good  # noqa: E402

from conftest import SMALL_STATION  # noqa: E402


@pytest.fixture(scope="module")
def good_rec(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("goodrec")
    st = d / "small.toml"
    st.write_text(SMALL_STATION)
    rec = d / "good.raw"
    write_recording(rec, SynthConfig(hides=2, seed=5, width=1024, mm_per_px=1.5, mm_per_line=1.5,
                                     line_rate_hz=20000, defects_per_hide=(0, 0)))
    return rec, st


def test_synthetic_anomalies_paste_a_mask_and_leave_the_rest() -> None:
    rng = np.random.default_rng(0)
    clean = np.full((8, 64, 64, 3), 140, np.uint8)
    aug, mask = good.add_anomalies(clean, rng, p=1.0)
    assert aug.shape == (8, 64, 64, 3) and mask.shape == (8, 64, 64)
    assert (mask.reshape(8, -1).sum(1) >= 16).all()
    changed = np.abs(aug - clean / 255).max(-1) > 1e-4
    assert not changed[mask == 0].any() and changed[mask == 1].mean() > 0.5


@pytest.mark.parametrize("family", ["ssim-ae", "draem"])
def test_a_few_steps_export_with_the_contract_and_onnx_parity(family, good_rec, tmp_path) -> None:
    rec, st = good_rec
    out = tmp_path / family
    assert train_cli.main(["--family", family, "--good", str(rec), "--station", str(st), "--out", str(out),
                           "--steps", "3", "--batch", "2", "--patch", "64", "--threads", "2"]) == 0
    info = json.loads((out / "results.json").read_text())
    assert info["family"] == family and info["steps"] == 3
    assert info["threshold"]["raw"] > 0 and "held-out good leather" in info["threshold"]["source"]
    m = Model.load(ModelCfg(path=str(out / "model.onnx"), providers=["CPUExecutionProvider"],
                            cpu_runtime="onnxruntime"))
    assert (m.kind, m.class_names, m.input_layout, m.input_dtype) == ("anomaly", ["anomaly"], "NHWC", "uint8")
    assert m.score_threshold == 0.5 and m.min_area_px == good.MIN_AREA_PX
    # ONNX == torch on a leather tile
    from edge_inspector.train import draem, ssim_ae
    net = draem.Draem() if family == "draem" else ssim_ae.SsimAE()
    net.load_state_dict(torch.load(out / f"{family}.pt",
                                   weights_only=False)["state"])
    net.eval()
    data = good.GoodData.load([rec], load_station(st))
    tile = data.patches(np.random.default_rng(1), 2, 128)
    with torch.no_grad():
        ref = torch.clamp(net.raw(torch.from_numpy(tile)) * (0.5 / info["threshold"]["raw"]), 0, 1).numpy()
    maps = m.run_maps(tile)
    assert maps.anomaly_map.shape == (2, 16, 16)
    assert np.abs(maps.anomaly_map - ref[:, 0]).max() < 1e-4
    dets = m.infer(tile)
    assert len(dets) == 2


def test_bad_good_source_is_one_line_and_exit_2(tmp_path, capsys) -> None:
    assert train_cli.main(["--family", "draem", "--good", str(tmp_path / "missing.raw"), "--out", str(tmp_path)]) == 2
    assert "missing.raw" in capsys.readouterr().err
