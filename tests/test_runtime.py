"""Runtimes: OpenVINO on the CPU when installed (same ONNX file, same decoders), ONNX Runtime otherwise."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from edge_inspector.config import ModelCfg
from edge_inspector.errors import ModelError
from edge_inspector.evaluation.model_eval import tile_maps
from edge_inspector.inference import Model
from edge_inspector.inference.runtime import openvino_available

needs_openvino = pytest.mark.skipif(not openvino_available(), reason="the openvino package is not installed")
CPU = ["CPUExecutionProvider"]


def leather(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.clip(rng.normal(120, 12, (h, w, 3)), 0, 255).astype(np.uint8)
    img[h // 3 : h // 3 + 9, w // 2 : w // 2 + 9] = 20  # a dark defect
    img[2 * h // 3 : 2 * h // 3 + 4, w // 4 : w // 4 + 60] = 230  # a bright scratch
    return img


def hide_tiles(n: int = 4, size: int = 512) -> np.ndarray:
    """Tiles of a synthetic hide at the station's scale (0.37 mm/px), defects included."""
    from edge_inspector.synth import SynthConfig, generate_blocks

    lines = np.concatenate([np.asarray(b.lines) for b in generate_blocks(
        SynthConfig(hides=1, seed=3, width=1024, defects_per_hide=(8, 8)))])
    rows = np.nonzero((np.abs(lines.astype(np.int16) - 40).mean(axis=2) > 40).mean(axis=1) > 0.5)[0]
    y0 = int(rows[len(rows) // 4])
    return np.stack([lines[y0 + i * size : y0 + (i + 1) * size, 256 : 256 + size] for i in range(n)])


@needs_openvino
@pytest.mark.parametrize("name", ["baseline", "default", "unet"])
def test_openvino_gives_the_same_maps_and_detections_as_onnx_runtime(name: str) -> None:
    ort_m = Model.load(ModelCfg(path=f"builtin:{name}", providers=CPU, cpu_runtime="onnxruntime"))
    ov_m = Model.load(ModelCfg(path=f"builtin:{name}", providers=CPU, cpu_precision="f32"))
    assert ort_m.provider == "CPUExecutionProvider" and ov_m.provider == "OpenVINO:CPU"
    tiles = np.stack([leather(512, 512, 1), leather(512, 512, 2)])
    a, b = tile_maps(ort_m, tiles), tile_maps(ov_m, tiles)
    # f32 on both: scores within one uint8 level (1/255), on all but a handful of pixels
    diff = np.abs(a.score - b.score)
    assert diff.max() <= 2 / 255 + 1e-6 and (diff > 1 / 255 + 1e-6).mean() < 1e-4
    da, db = ort_m.infer(tiles), ov_m.infer(tiles)
    assert [len(d) for d in da] == [len(d) for d in db]
    for x, y in zip(da, db):
        assert np.array_equal(x.class_id, y.class_id)
        assert np.allclose(x.xyxy, y.xyxy, atol=4.0)


@needs_openvino
def test_openvino_bf16_finds_the_same_defects() -> None:
    """The default CPU precision (bf16 where the CPU has it) may move single scores, not the defects."""
    ref = Model.load(ModelCfg(path="builtin:default", providers=CPU, cpu_runtime="onnxruntime"))
    bf = Model.load(ModelCfg(path="builtin:default", providers=CPU, cpu_precision="bf16"))
    tiles = hide_tiles()
    a, b = ref.infer(tiles), bf.infer(tiles)
    assert sum(len(x) for x in a) >= 3  # the tiles do hold defects
    for x, y in zip(a, b):
        assert abs(len(x) - len(y)) <= 1
        if len(x) and len(y):
            cx, cy = (x.xyxy[:, :2] + x.xyxy[:, 2:]) / 2, (y.xyxy[:, :2] + y.xyxy[:, 2:]) / 2
            d = np.linalg.norm(cx[:, None] - cy[None], axis=2)
            assert (d.min(axis=1) <= 8).sum() >= len(x) - 1  # each defect found again within 8 px


@needs_openvino
def test_openvino_named_in_providers_and_the_onnx_runtime_choice() -> None:
    assert Model.load(ModelCfg(path="builtin:baseline", providers=["OpenVINO"])).provider == "OpenVINO:CPU"
    m = Model.load(ModelCfg(path="builtin:baseline", providers=["OpenVINO", "CPUExecutionProvider"],
                            cpu_runtime="onnxruntime"))
    assert m.provider == "CPUExecutionProvider"  # cpu_runtime = "onnxruntime" keeps OpenVINO out
    # a new input shape compiles once more and still runs
    m = Model.load(ModelCfg(path="builtin:baseline", providers=CPU))
    assert [len(d) for d in m.infer(leather(256, 256, 3)[None])] == [len(d) for d in
                                                                     m.infer(leather(256, 256, 3)[None])]
    assert len(m.infer(np.stack([leather(320, 320, 4)] * 3))) == 3


def test_without_the_openvino_package_onnx_runtime_runs_and_the_fallback_is_logged(tmp_path: Path) -> None:
    """A real failed import of openvino (a blocking module first on the path), not a mock."""
    block = tmp_path / "block"
    block.mkdir()
    (block / "openvino.py").write_text("raise ImportError('openvino blocked for this test')\n")
    code = textwrap.dedent("""
        import json, sys
        from structlog.testing import capture_logs
        from edge_inspector.config import ModelCfg
        from edge_inspector.errors import ModelError
        from edge_inspector.inference import Model
        with capture_logs() as logs:
            m = Model.load(ModelCfg(path="builtin:baseline", providers=["OpenVINO", "CPUExecutionProvider"]))
        try:
            Model.load(ModelCfg(path="builtin:baseline", cpu_runtime="openvino"))
            refused = ""
        except ModelError as e:
            refused = str(e)
        print(json.dumps({"provider": m.provider, "events": [e["event"] for e in logs],
                          "unavailable": [e.get("provider") for e in logs if e["event"] == "provider_unavailable"],
                          "refused": refused}))
    """)
    import json
    import os

    env = {**os.environ, "PYTHONPATH": f"{block}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["provider"] == "CPUExecutionProvider"
    assert r["unavailable"] == ["OpenVINO"]
    assert "model.cpu_runtime" in r["refused"] and "openvino package is not installed" in r["refused"]


def test_require_provider_refuses_a_missing_openvino_fallback(tmp_path: Path) -> None:
    if openvino_available():
        with pytest.raises(ModelError, match="CUDAExecutionProvider"):
            Model.load(ModelCfg(path="builtin:baseline", providers=["CUDAExecutionProvider", "OpenVINO"],
                                require_provider=True))
    m = Model.load(ModelCfg(path="builtin:baseline", providers=CPU, require_provider=True))
    assert m.provider in ("OpenVINO:CPU", "CPUExecutionProvider")


@needs_openvino
def test_openvino_streams_run_a_batch_side_by_side_and_calls_from_two_threads_in_parallel() -> None:
    """cpu_streams = 2: a batch goes through as single tiles on two requests and comes back in
    order; two threads calling at once each get their own tiles' outputs (the pipeline's workers)."""
    import threading

    one = Model.load(ModelCfg(path="builtin:default", providers=CPU, cpu_precision="f32", cpu_streams=1))
    two = Model.load(ModelCfg(path="builtin:default", providers=CPU, cpu_precision="f32", cpu_streams=2))
    assert (one.parallel, two.parallel) == (1, 2)
    tiles = np.stack([leather(256, 256, s) for s in range(5)])
    tiles[3] = 200  # one tile unlike the others: a mix-up of the order would show
    a, b = tile_maps(one, tiles), tile_maps(two, tiles)
    assert np.abs(a.score - b.score).max() <= 2 / 255 + 1e-6
    assert np.array_equal(a.class_map, b.class_map) or (a.class_map != b.class_map).mean() < 1e-4
    got: dict[int, np.ndarray] = {}

    def call(k: int) -> None:
        for _ in range(3):
            got[k] = tile_maps(two, tiles[k : k + 1]).score[0]

    threads = [threading.Thread(target=call, args=(k,)) for k in (0, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in (0, 3):
        assert np.abs(got[k] - a.score[k]).max() <= 2 / 255 + 1e-6


def test_onnx_runtime_runs_one_call_at_a_time() -> None:
    m = Model.load(ModelCfg(path="builtin:baseline", providers=CPU, cpu_runtime="onnxruntime", cpu_streams=2))
    assert m.provider == "CPUExecutionProvider" and m.parallel == 1
