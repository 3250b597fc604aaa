"""int8 variants of the shipped float models: static QDQ quantisation with ONNX Runtime.

    python -m edge_inspector.train.quantize edge_inspector/models/attention_unet.onnx \\
        edge_inspector/models/attention_unet_int8.onnx --real /work/shared/datasets/leather-defects-yolo

Weights int8 per output channel, activations uint8 per tensor (QDQ: QuantizeLinear/DequantizeLinear
pairs around each quantised operator, which ONNX Runtime and OpenVINO both fuse into int8 kernels).
Activation ranges: the 99.999th percentile of each tensor's values (``--method``; MinMax, the plain
range, lost one of 30 synthetic defects of the demo run; unet-int8 is made with MinMax, its Percentile
file failed the parity test) over calibration tiles of two kinds, half each:

- one synthetic hide at the demo station's scale (``synth``, seed 21: belt, hide, defects), 640 px tiles
  cut where the hide lies;
- real leather photos, ``<dataset>/train/images`` of the YOLO dataset (640 px, used whole).

The output keeps the float model's contract (``metadata_props``: same classes, decoder spec and
operating point); ``edge_inspector.name`` gets ``-int8`` and the description says how it was made.
Needs only onnx and onnxruntime (no torch); the runtime never imports this module.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx

CAL_SIZE = 640  # calibration tiles are 640 px square: the real photos' size, a multiple of 32


def synthetic_tiles(n: int, seed: int = 21, size: int = CAL_SIZE) -> Iterator[np.ndarray]:
    """``n`` tiles cut at random from synthetic 8K hides (demo scale), each (size, size, 3) uint8."""
    from ..synth import SynthConfig, generate_blocks

    rng = np.random.default_rng(seed)
    cfg = SynthConfig(hides=1, seed=seed, width=8192, channels=3, mm_per_px=0.37, mm_per_line=0.37,
                      block_lines=512)
    rows = np.concatenate([np.asarray(b.lines) for b in generate_blocks(cfg)])
    lum = rows[::16, ::16].mean(axis=(1, 2))
    on_hide = np.flatnonzero(lum > np.percentile(lum, 30)) * 16  # rows where a hide lies, mostly
    for _ in range(n):
        y = int(min(rng.choice(on_hide), len(rows) - size))
        x = int(rng.integers(0, rows.shape[1] - size))
        yield np.ascontiguousarray(rows[y : y + size, x : x + size])


def real_tiles(dataset: Path, n: int, seed: int = 22) -> Iterator[np.ndarray]:
    """``n`` real leather photos of ``dataset/train/images`` (RGB, resized to CAL_SIZE if needed)."""
    import cv2

    files = sorted((dataset / "train" / "images").glob("*.jpg"))
    if not files:
        raise SystemExit(f"quantize: no .jpg under {dataset / 'train' / 'images'}")
    rng = np.random.default_rng(seed)
    for i in rng.choice(len(files), size=min(n, len(files)), replace=False):
        img = cv2.imread(str(files[i]), cv2.IMREAD_COLOR)
        if img is None:
            raise SystemExit(f"quantize: cannot read {files[i]}")
        if img.shape[:2] != (CAL_SIZE, CAL_SIZE):
            img = cv2.resize(img, (CAL_SIZE, CAL_SIZE), interpolation=cv2.INTER_AREA)
        yield np.ascontiguousarray(img[:, :, ::-1])


class _Reader:
    """onnxruntime.quantization's CalibrationDataReader over a list of NHWC uint8 tiles."""

    def __init__(self, input_name: str, tiles: list[np.ndarray]) -> None:
        self._it = iter([{input_name: t[None]} for t in tiles])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:  # pragma: no cover - not used by MinMax calibration
        pass


def quantize(src: Path, dst: Path, *, dataset: Path | None, n_synthetic: int = 24, n_real: int = 24,
             method: str = "Percentile") -> dict[str, int]:
    """Write the int8 QDQ variant of ``src`` to ``dst``; the number of calibration tiles by kind."""
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = onnx.load(str(src))
    inits = {i.name for i in model.graph.initializer}
    input_name = [i.name for i in model.graph.input if i.name not in inits][0]
    tiles = list(synthetic_tiles(n_synthetic))
    n_syn = len(tiles)
    if dataset is not None and n_real:
        tiles += list(real_tiles(dataset, n_real))
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        except Exception:  # noqa: BLE001 - pre-processing is an optimisation: quantise the original then
            shutil.copy(src, pre)
        out = Path(tmp) / "int8.onnx"
        quantize_static(
            str(pre), str(out), _Reader(input_name, tiles), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=getattr(CalibrationMethod, method),
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )
        q = onnx.load(str(out))
    meta = {p.key: p.value for p in model.metadata_props}
    name = meta.get("edge_inspector.name", src.stem)
    meta["edge_inspector.name"] = f"{name}-int8"
    meta["edge_inspector.description"] = (
        f"int8 (static QDQ, weights per channel, activations per tensor, {method} calibration on {n_syn}"
        f" synthetic and {len(tiles) - n_syn} real {CAL_SIZE}px tiles; edge_inspector/train/quantize.py)"
        f" of: {meta.get('edge_inspector.description', name)}")
    del q.metadata_props[:]
    for k, v in meta.items():
        q.metadata_props.add(key=k, value=v)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(q, str(dst))
    return {"synthetic": n_syn, "real": len(tiles) - n_syn}


def fp16_storage(src: Path, dst: Path, min_elements: int = 1024) -> int:
    """Write ``src`` with its large float32 weights stored as float16, each behind a Cast back to
    float32: half the file, the same float32 arithmetic (ONNX Runtime and OpenVINO fold the casts
    at load), weights rounded to 11 significant bits. Returns the number of weights converted."""
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    g = model.graph
    keep, casts, n = [], [], 0
    for t in g.initializer:
        if t.data_type != onnx.TensorProto.FLOAT or int(np.prod(t.dims)) < min_elements:
            keep.append(t)
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name + "__fp16")
        keep.append(half)
        casts.append(helper.make_node("Cast", [half.name], [t.name], to=onnx.TensorProto.FLOAT,
                                      name=t.name + "__cast"))
        n += 1
    del g.initializer[:]
    g.initializer.extend(keep)
    nodes = casts + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    meta = {p.key: p.value for p in model.metadata_props}
    meta["edge_inspector.description"] = (meta.get("edge_inspector.description", "") +
                                          " Weights stored as float16 (computed in float32).")
    del model.metadata_props[:]
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(model)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
    return n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edge_inspector.train.quantize", description=__doc__.splitlines()[0])
    p.add_argument("src", type=Path, help="float ONNX model")
    p.add_argument("dst", type=Path, help="int8 ONNX model to write")
    p.add_argument("--real", type=Path, default=None, help="YOLO dataset folder with train/images (real photos)")
    p.add_argument("--synthetic", type=int, default=24, help="synthetic calibration tiles (default 24)")
    p.add_argument("--n-real", type=int, default=24, help="real calibration photos (default 24)")
    p.add_argument("--method", choices=["MinMax", "Entropy", "Percentile"], default="Percentile",
                   help="activation ranges: Percentile (99.999 %%, the shipped files), MinMax or Entropy")
    p.add_argument("--fp16-weights", action="store_true",
                   help="no int8: store the float weights as float16 (half the file, float32 arithmetic)")
    a = p.parse_args(argv)
    if a.fp16_weights:
        n = fp16_storage(a.src, a.dst)
        print(f"{a.dst}: {n} weight tensors of {a.src} stored as float16")
        return 0
    got = quantize(a.src, a.dst, dataset=a.real, n_synthetic=a.synthetic, n_real=a.n_real, method=a.method)
    print(f"{a.dst}: int8 QDQ from {a.src}, calibrated on {got['synthetic']} synthetic + {got['real']} real tiles")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
