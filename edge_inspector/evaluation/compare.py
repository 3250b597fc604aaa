"""``edge-inspector compare-models``: every model family side by side on the same data (docs/models.md).

Per model, with the model's own settings (threshold, min_area_px):

- real photos (``--data``, a YOLO-layout set, ``--split`` val): ``evaluate_model``'s box recall,
  false blobs per photo, the share of the photos' area outside every box that the model reports
  (a model that lights up whole photos has few false *blobs* but a large share), class-agnostic mAP50 of the decoded boxes (``detection``), the class-aware
  mAP50 where the model's classes are the dataset's, and the patch accuracy of patch models;
- pasted defects with exact masks (``--pasted``, an MVTec-layout folder such as the one
  ``python -m edge_inspector.evaluation.pasted`` builds): pixel AUROC and pooled Dice;
- a synthetic recording (``--recording`` + ``--station``): ``replay`` then ``eval`` against its
  ``.gt.json``: end-to-end recall and precision;
- cost: tiles/s of the model alone (``Model.run_maps``, ONNX Runtime) on one ``--tile-px`` tile of
  leather-like noise with 2 CPU threads (``--runs`` timed runs after a warm-up; printed, a figure
  of this machine at that moment), file size, and multiply-accumulates per tile counted from the
  graph (``graph_macs``).
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
from onnx import shape_inference

from ..config import ModelCfg
from ..errors import InputError
from ..inference.model import Model
from ..inference.registry import builtin_path
from .datasets import find_dataset
from .model_eval import evaluate_model

CPU = ["CPUExecutionProvider"]


def model_file(spec: str) -> Path:
    return builtin_path(spec) if spec.startswith("builtin:") else Path(spec)


MAC_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
POOL_OPS = ("AveragePool", "MaxPool", "LpPool")
MEASURE_PX = 512  # tile of the fallback that runs the graph when shape inference cannot size it


def _fix_input(m: onnx.ModelProto, tile: int) -> tuple[str, list[int]]:
    """Set the image input's free dims for one ``tile`` x ``tile`` tile (batch 1; NHWC when the last
    dim is 1 or 3, else NCHW; a fixed input size is kept); (input name, its shape)."""
    inits = {i.name for i in m.graph.initializer}
    inp = next(i for i in m.graph.input if i.name not in inits)
    dims = inp.type.tensor_type.shape.dim
    nhwc = len(dims) == 4 and dims[3].HasField("dim_value") and dims[3].dim_value in (1, 3)
    want = [1, tile, tile, dims[3].dim_value] if nhwc else [1, dims[1].dim_value or 3, tile, tile]
    for d, w in zip(dims, want):
        if not d.HasField("dim_value") or d.dim_value <= 0:
            d.Clear()
            d.dim_value = w
    return inp.name, [d.dim_value for d in dims]


def _count(m: onnx.ModelProto, shapes: dict[str, list[int]]) -> int | None:
    """MACs of ``MAC_OPS`` + window adds of ``POOL_OPS`` from known tensor shapes; None if one is unknown."""
    total = 0
    for node in m.graph.node:
        if node.op_type not in MAC_OPS + POOL_OPS:
            continue
        ins = [shapes.get(x) for x in node.input[:2]]
        out = shapes.get(node.output[0])
        need = ins[:1] if node.op_type in POOL_OPS else ins
        if not out or 0 in out or any(not s or 0 in s for s in need):
            return None
        if node.op_type in POOL_OPS:
            k = next(a.ints for a in node.attribute if a.name == "kernel_shape")
            total += int(np.prod(out)) * int(np.prod(k))
        elif node.op_type == "Conv":
            total += int(np.prod(out)) * int(np.prod(ins[1][1:]))  # type: ignore[index]
        elif node.op_type == "ConvTranspose":
            total += int(np.prod(ins[0])) * int(np.prod(ins[1][1:]))  # type: ignore[index]
        elif node.op_type == "MatMul":
            total += int(np.prod(out)) * int(ins[0][-1])  # type: ignore[index]
        else:
            trans_a = next((a.i for a in node.attribute if a.name == "transA"), 0)
            total += int(np.prod(out)) * int(ins[0][0 if trans_a else 1])  # type: ignore[index]
    return total


def _shapes(m: onnx.ModelProto) -> dict[str, list[int]]:
    shapes = {vi.name: [d.dim_value if d.HasField("dim_value") else 0 for d in vi.type.tensor_type.shape.dim]
              for vi in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output)}
    shapes.update({i.name: list(i.dims) for i in m.graph.initializer})
    return shapes


def graph_macs(path: Path, tile: int) -> tuple[int | None, str]:
    """(multiply-accumulates per ``tile`` x ``tile`` tile, how they were counted): Conv,
    ConvTranspose, MatMul and Gemm MACs plus the window adds of pooling, from ONNX shape inference;
    where that cannot size a tensor (shapes computed at run time, e.g. a Pad from the input's size),
    from the shapes of one ONNX Runtime run on a ``MEASURE_PX`` tile, scaled by the area (exact for
    fully convolutional graphs). (None, reason) when neither works."""
    m = onnx.load(str(path))
    _fix_input(m, tile)
    try:
        n = _count(m, _shapes(shape_inference.infer_shapes(m, data_prop=True)))
    except Exception:  # noqa: BLE001 - an op onnx cannot infer: try the run below
        n = None
    if n is not None:
        return n, "shape inference"
    import onnxruntime as ort

    m = onnx.load(str(path))
    name, shape = _fix_input(m, MEASURE_PX)
    fixed = shape[1] if shape[-1] in (1, 3) else shape[2]
    known = {o.name for o in m.graph.output} | {i.name for i in m.graph.input}
    # both operands (a MatMul of two activations; weights behind a Cast when stored as float16)
    wanted = {x for nd in m.graph.node if nd.op_type in MAC_OPS + POOL_OPS for x in (*nd.input[:2], nd.output[0])}
    inits = {i.name for i in m.graph.initializer}
    for x in sorted(wanted - known - inits):
        m.graph.output.append(onnx.ValueInfoProto(name=x))
    try:
        s = ort.InferenceSession(m.SerializeToString(), providers=CPU)
        dtype = np.uint8 if m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8 else np.float32
        outs = s.run(None, {name: np.full(shape, 128 if dtype == np.uint8 else 0.5, dtype)})
    except Exception as e:  # noqa: BLE001 - a graph ONNX Runtime cannot run this way: say so
        return None, f"not counted ({type(e).__name__})"
    shapes = {o.name: list(v.shape) for o, v in zip(s.get_outputs(), outs)}
    shapes.update({i.name: list(i.dims) for i in m.graph.initializer})
    shapes[name] = shape
    n = _count(m, shapes)
    if n is None:
        return None, "not counted"
    scale = (tile / MEASURE_PX) ** 2 if fixed == MEASURE_PX else 1.0
    return int(n * scale), f"measured at {MEASURE_PX} px, scaled by the area"


def tiles_per_s(spec: str, tile: int, runs: int, threads: int = 2) -> tuple[float, int]:
    """(tiles/s of ``Model.run_maps`` on one tile, the tile size used): the model's fixed input
    size when it has one, else ``tile`` rounded down to the model's stride multiple."""
    model = Model.load(ModelCfg(path=spec, providers=CPU, intra_op_threads=threads, cpu_runtime="onnxruntime"))
    t = int(model.input_size[0]) if model.input_size is not None else tile
    rng = np.random.default_rng(0)
    x = np.clip(rng.normal(140, 12, (1, t, t, model.input_channels or 3)), 0, 255).astype(np.uint8)
    model.run_maps(x)  # warm-up
    t0 = time.perf_counter()
    for _ in range(runs):
        model.run_maps(x)
    return runs / (time.perf_counter() - t0), t


def _family(model: Model) -> str:
    spec = model.decoder.spec
    name = model.metadata.get("edge_inspector.name")
    if name == "baseline":
        return "classical"
    if model.kind == "patch":
        return f"patch ({spec.get('family', '?')})"
    if model.kind == "anomaly":
        return f"novelty ({spec.get('method') or name or 'anomaly map'})"
    return f"{model.kind} ({name})" if name else model.kind


def synthetic_e2e(spec: str, recording: Path, station: Path) -> dict[str, Any]:
    """Replay ``recording`` with ``station`` and this model, then eval against its .gt.json (their
    printed reports are not shown; the station's ``[model]`` settings other than the path apply)."""
    from ..cli import main as cli

    with tempfile.TemporaryDirectory(prefix="compare-") as d, contextlib.redirect_stdout(io.StringIO()):
        out, rep = Path(d) / "run", Path(d) / "eval.json"
        code = cli(["replay", str(recording), "--station", str(station), "--model", spec, "--out", str(out)])
        if code:
            raise InputError(f"replay with {spec} ended with exit code {code}", path=recording)
        cli(["eval", str(out), "--truth", str(recording) + ".gt.json", "--json", str(rep)])
        o = json.loads(rep.read_text())["overall"]
    return {"recall": o["recall"], "precision": o["precision"], "found": o["found"], "gt": o["gt_defects"],
            "fp": o["fp"]}


def compare(models: list[str], data: Path, *, split: str | None = "val", pasted: Path | None = None,
            recording: Path | None = None, station: Path | None = None, tile_px: int = 2048, runs: int = 3,
            limit: int | None = None, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """One row per model (see the module doc); the report also names the data and settings."""
    if (recording is None) != (station is None):
        raise InputError("--recording and --station go together (the replay needs the station's geometry)")
    real = find_dataset(data, "yolo", split)
    proxy = find_dataset(pasted, "mvtec", None) if pasted is not None else None
    rows = []
    for spec in models:
        if progress:
            progress(spec)
        path = model_file(spec)
        model = Model.load(ModelCfg(path=spec, providers=CPU))
        r = evaluate_model(model, real, limit=limit)
        det = r.get("detection") or {}
        row: dict[str, Any] = {
            "name": spec if spec.startswith("builtin:") else path.name, "model": spec, "family": _family(model),
            "threshold": r["model"]["threshold"],
            "box_recall": r["boxes"]["recall"], "false_blobs_per_photo": r["boxes"]["false_blobs_per_image"],
            "map50_agnostic": det.get("map50_agnostic"), "map50": det.get("map50"),
            "good_area_flagged": _ratio(r["pixel"]["pred_px"] - r["pixel"]["inter_px"],
                                        r["pixel"]["px"] - r["pixel"]["gt_px"]),
            "patch_accuracy": (r.get("patch") or {}).get("accuracy"),
            "patch_auroc": (r.get("patch") or {}).get("auroc"),
            "patch_confusion": (r.get("patch") or {}).get("confusion"),
        }
        if proxy is not None:
            q = evaluate_model(Model.load(ModelCfg(path=spec, providers=CPU)), proxy, limit=limit)
            row["pixel_auroc_pasted"] = q["pixel"]["auroc"]
            row["dice_pasted"] = q["pixel"]["dice_pooled"]
        if recording is not None and station is not None:
            row["synthetic"] = synthetic_e2e(spec, recording, station)
        row["tiles_per_s"], row["timing_tile_px"] = tiles_per_s(spec, tile_px, runs)
        row["size_bytes"] = path.stat().st_size
        row["macs_per_tile"], row["macs_counted_by"] = graph_macs(path, row["timing_tile_px"])
        rows.append(row)
    return {
        "data": {"real": str(real.root), "split": real.split, "photos": len(real.samples),
                 "pasted": str(pasted) if pasted else None, "recording": str(recording) if recording else None,
                 "station": str(station) if station else None},
        "settings": {"tile_px": tile_px, "runs": runs, "threads": 2, "runtime": "onnxruntime CPU",
                     "thresholds": "each model's own"},
        "models": rows,
    }


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def _f(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def format_table(rep: dict[str, Any]) -> str:
    """The comparison as a Markdown table (what docs/models.md holds)."""
    rows = rep["models"]
    pasted = any("pixel_auroc_pasted" in r for r in rows)
    synth = any("synthetic" in r for r in rows)
    head = ["model", "family", "threshold", "box recall", "false blobs / photo", "area outside boxes flagged",
            "mAP50 (agnostic)", "patch accuracy / AUROC"]
    head += ["pixel AUROC / Dice (pasted)"] if pasted else []
    head += ["synthetic recall / precision"] if synth else []
    head += ["tiles/s (2 threads)", "size", "GMAC / tile"]
    L = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        cells = [r["name"], r["family"], _f(r["threshold"], ".2f"), _f(r["box_recall"]),
                 _f(r["false_blobs_per_photo"], ".2f"), _f(r["good_area_flagged"]), _f(r["map50_agnostic"], ".4f"),
                 "-" if r["patch_accuracy"] is None else f"{_f(r['patch_accuracy'])} / {_f(r['patch_auroc'])}"]
        if pasted:
            cells.append(f"{_f(r.get('pixel_auroc_pasted'))} / {_f(r.get('dice_pasted'))}")
        if synth:
            s = r.get("synthetic") or {}
            cells.append(f"{_f(s.get('recall'))} / {_f(s.get('precision'))}")
        macs = r["macs_per_tile"]
        cells += [f"{r['tiles_per_s']:.2f}", f"{r['size_bytes'] / 1024:.0f} KB",
                  "-" if macs is None else f"{macs / 1e9:.3g} ({r['timing_tile_px']} px)"]
        L.append("| " + " | ".join(cells) + " |")
    return "\n".join(L) + "\n"
