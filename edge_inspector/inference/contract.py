"""The model contract: what an ONNX model promises, read once from its file (docs/models.md).

``ModelContract.read(path, decoder)`` opens the model (graph only, no weights), finds its graph
input and parses the ``edge_inspector.*`` keys of ``metadata_props``: ``kind``, ``classes``,
``input`` (layout, dtype, channels, size), ``output`` (the decoder's output spec),
``score_threshold``, ``min_area_px`` and ``mm_per_px``. A ``ModelError`` names the key that is
wrong.

Models without ``edge_inspector.*`` metadata (an ultralytics or anomalib export, plain
segmentation logits) get their contract from the station's decoder (``model.decoder``) and the
graph input's shape; ultralytics ``names`` give the classes, and an ultralytics export with
``task`` = detect and ``names`` gets the yolo decoder without one.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import onnx

from ..errors import ModelError
from .decoders import DECODERS, KIND_DECODER

META = "edge_inspector."
KINDS = tuple(KIND_DECODER)
_DECODER_CHOICES = " | ".join(sorted(DECODERS))


@dataclass(frozen=True, slots=True)
class InputSpec:
    """What the model's input wants."""

    layout: str  # "NHWC" | "NCHW"
    dtype: str  # numpy dtype name; how camera samples become it: feed.InputFeed
    channels: int | None  # None: not fixed
    size: tuple[int, int] | None  # (h, w); None: dynamic
    batch: int | None  # fixed batch of the graph; None: dynamic
    resize: str | None = None  # "letterbox" | "stretch" | "none" from edge_inspector.input; None: not said


@dataclass(frozen=True, slots=True)
class ModelContract:
    """The typed contract of one model file."""

    kind: str  # segmentation | detection | anomaly | classification
    decoder: str  # name in DECODERS (the kind's, unless the station names one)
    classes: tuple[str, ...]
    input: InputSpec
    output: Mapping[str, Any]  # edge_inspector.output ({} for foreign models)
    score_threshold: float | None  # the model's default, if it gives one
    min_area_px: float | None  # the model's default, if it gives one
    mm_per_px: float | None  # the resolution it was trained at (informational, not checked)
    metadata: Mapping[str, str] = field(default_factory=dict)  # all metadata_props
    outputs: tuple[str, ...] = ()  # the graph's output names, in order

    @classmethod
    def read(cls, path: Path, decoder: str = "auto") -> "ModelContract":
        """The contract of the ONNX file at ``path``; ``decoder`` = the station's ``model.decoder``."""
        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as e:  # protobuf DecodeError, RuntimeError, ...
            raise ModelError(f"not an ONNX model ({type(e).__name__}: {e})", path=path) from None
        if not len(proto.graph.node) or not len(proto.graph.input) or not len(proto.graph.output):
            raise ModelError("not an ONNX model (no graph, inputs or outputs)", path=path)
        props = {p.key: p.value for p in proto.metadata_props}
        initializers = {i.name for i in proto.graph.initializer}
        graph_input = next((i for i in proto.graph.input if i.name not in initializers), None)
        if graph_input is None:
            raise ModelError("not an ONNX model (no graph input)", path=path)
        contract = cls.parse(props, graph_input, path, decoder)
        return replace(contract, outputs=tuple(o.name for o in proto.graph.output))

    @classmethod
    def parse(cls, props: dict[str, str], graph_input: onnx.ValueInfoProto, path: Path,
              decoder: str = "auto") -> "ModelContract":
        """The contract from ``metadata_props`` and the graph input (``path`` for the errors)."""
        dims = [d.dim_value if d.HasField("dim_value") else None
                for d in graph_input.type.tensor_type.shape.dim]
        elem = graph_input.type.tensor_type.elem_type
        graph_dtype = onnx.helper.tensor_dtype_to_np_dtype(elem).name if elem else "float32"
        batch = dims[0] if dims and dims[0] else None
        if any(k.startswith(META) for k in props):
            kind, decoder_name, class_names, layout, dtype, channels, size, out_spec = _from_metadata(
                props, path, decoder, graph_dtype)
            resize = _resize_meta(props, path)
            channels, size = _check_graph_input(graph_input.name, dims, graph_dtype if elem else None,
                                                layout, dtype, channels, size, path)
        else:
            kind, decoder_name, class_names, layout, channels, size = _foreign(props, path, decoder, dims,
                                                                              graph_input.name)
            dtype, out_spec, resize = graph_dtype, {}, None
        size_t = (int(size[0]), int(size[1])) if all(isinstance(s, int) and s > 0 for s in size) else None
        return cls(
            kind=kind, decoder=decoder_name, classes=tuple(class_names),
            input=InputSpec(layout=layout, dtype=dtype, channels=channels, size=size_t, batch=batch, resize=resize),
            output=MappingProxyType(dict(out_spec)),
            score_threshold=_float_meta(props, META + "score_threshold", path),
            min_area_px=_float_meta(props, META + "min_area_px", path),
            mm_per_px=_number_or_none(props.get(META + "mm_per_px")),
            metadata=MappingProxyType(dict(props)),
        )


def _from_metadata(props: dict[str, str], path: Path, decoder: str, graph_dtype: str
                   ) -> tuple[str, str, list[str], str, str, Any, Any, dict[str, Any]]:
    """kind, decoder, classes, layout, dtype, channels, size, output spec of a model with metadata."""
    key = META + "kind"
    if key not in props:
        raise ModelError(f"metadata {key} is missing (one of {', '.join(KINDS)})", path=path)
    kind = props[key]
    if kind not in KIND_DECODER:
        raise ModelError(f"metadata {key} = {kind!r} is not a known kind (one of {', '.join(KINDS)})",
                         path=path)
    key = META + "classes"
    if key not in props:
        raise ModelError(f"metadata {key} is missing (a JSON list of class names)", path=path)
    class_names = _json_meta(props, key, path, list)
    if not all(isinstance(c, str) for c in class_names):
        raise ModelError(f"metadata {key} must list class names as strings", path=path)
    if not class_names:
        raise ModelError(f"metadata {key} is empty: list the class names the model's outputs index"
                         " (anomaly models: [\"anomaly\"])", path=path)
    dup = sorted({c for c in class_names if class_names.count(c) > 1})
    if dup:
        raise ModelError(f"metadata {key} names {', '.join(map(repr, dup))} more than once", path=path)
    key = META + "input"
    if key not in props:
        raise ModelError(f"metadata {key} is missing (JSON: layout, dtype, channels, size)", path=path)
    spec_in = _json_meta(props, key, path, dict)
    layout = spec_in.get("layout", "NHWC")
    if layout not in ("NHWC", "NCHW"):
        raise ModelError(f"metadata {key}: layout {layout!r} must be NHWC or NCHW", path=path)
    dtype = spec_in.get("dtype", graph_dtype)
    channels = spec_in.get("channels")
    size = spec_in.get("size") or [None, None]
    if (channels is not None and not isinstance(channels, int)) or not isinstance(size, list) or len(size) != 2:
        raise ModelError(f"metadata {key}: channels must be an integer and size [h, w]"
                         f" (null for dynamic), got {props[key]!r}", path=path)
    out_spec = _json_meta(props, META + "output", path, dict) if META + "output" in props else {}
    decoder_name = KIND_DECODER[kind] if decoder == "auto" else decoder
    return kind, decoder_name, class_names, layout, dtype, channels, size, out_spec


RESIZE_MODES = ("none", "letterbox", "stretch")


def _resize_meta(props: dict[str, str], path: Path) -> str | None:
    """``edge_inspector.input`` "resize" (letterbox | stretch | none), or None when not given."""
    mode = json.loads(props.get(META + "input", "{}") or "{}").get("resize")
    if mode is not None and mode not in RESIZE_MODES:
        raise ModelError(f"metadata {META}input: resize {mode!r} is not one of {', '.join(RESIZE_MODES)}", path=path)
    return mode


def _check_graph_input(name: str, dims: list[int | None], graph_dtype: str | None, layout: str, dtype: str,
                       channels: int | None, size: list[Any], path: Path) -> tuple[int | None, list[Any]]:
    """ModelError when ``edge_inspector.input`` contradicts the graph input (type, rank, channels,
    fixed size); channels and size the metadata leaves open are taken from the graph."""
    key = META + "input"
    if graph_dtype is not None and dtype != graph_dtype:
        raise ModelError(f"metadata {key} says dtype {dtype}, but the graph input {name!r} is {graph_dtype}",
                         path=path, hint=f"set \"dtype\": \"{graph_dtype}\" and the layout the graph takes")
    if len(dims) != 4:
        raise ModelError(f"graph input {name!r} has {len(dims)} dimensions {dims}; the contract needs 4 ({layout})",
                         path=path, where=key)
    c_dim, hw = (dims[3], dims[1:3]) if layout == "NHWC" else (dims[1], dims[2:4])
    if c_dim is not None and channels is not None and c_dim != channels:
        raise ModelError(f"metadata {key} says {layout} with {channels} channel(s), but the graph input {name!r}"
                         f" has shape {dims}", path=path,
                         hint="fix layout and channels to match the graph")
    for got, said in zip(hw, size):
        if got is not None and said is not None and got != said:
            raise ModelError(f"metadata {key} says size {size}, but the graph input {name!r} has shape {dims}",
                             path=path)
    return (channels if channels is not None else c_dim,
            [s if s is not None else g for s, g in zip(size, hw)])


def _foreign(props: dict[str, str], path: Path, decoder: str, dims: list[int | None], input_name: str
             ) -> tuple[str, str, list[str], str, Any, Any]:
    """kind, decoder, classes, layout, channels, size of a model without edge_inspector.* metadata."""
    if decoder == "auto" and props.get("task") == "detect" and _ultralytics_names(props):
        decoder = "yolo"  # an ultralytics detection export says what it is
    if decoder == "auto":
        raise ModelError(
            "no edge_inspector.* metadata (edge_inspector.kind is missing), so the decoder is"
            " unknown", path=path,
            hint=f"set model.decoder in the station file ({_DECODER_CHOICES})",
        )
    kind = {"yolo": "detection"}.get(decoder, decoder)
    class_names = _ultralytics_names(props) or (["anomaly"] if kind == "anomaly" else ["defect"])
    # foreign exports: NCHW float (ultralytics, anomalib) unless the shape says NHWC
    if len(dims) == 4 and dims[3] in (1, 3) and dims[1] not in (1, 3):
        return kind, decoder, class_names, "NHWC", dims[3], dims[1:3]
    if len(dims) == 4:
        return kind, decoder, class_names, "NCHW", dims[1], dims[2:4]
    raise ModelError(f"input {input_name!r} has shape {dims}; expected 4 dimensions", path=path)


def _json_meta(props: dict[str, str], key: str, path: Path, kind: type) -> Any:
    try:
        value = json.loads(props[key])
    except json.JSONDecodeError as e:
        raise ModelError(f"metadata {key} is not valid JSON: {e}", path=path) from None
    if not isinstance(value, kind):
        raise ModelError(
            f"metadata {key} must be a JSON {'list' if kind is list else 'object'}, got {props[key]!r}",
            path=path,
        )
    return value


def _float_meta(props: dict[str, str], key: str, path: Path) -> float | None:
    if key not in props:
        return None
    try:
        return float(props[key])
    except ValueError:
        raise ModelError(f"metadata {key} must be a number, got {props[key]!r}", path=path) from None


def _number_or_none(text: str | None) -> float | None:
    try:
        return None if text is None else float(text)
    except ValueError:
        return None


def _ultralytics_names(props: dict[str, str]) -> list[str]:
    """ultralytics stores ``names`` as a Python dict literal: "{0: 'hole', 1: 'cut'}"."""
    try:
        names = ast.literal_eval(props.get("names", ""))
    except (ValueError, SyntaxError):
        return []
    if isinstance(names, dict):
        return [str(names[k]) for k in sorted(names)]
    if isinstance(names, (list, tuple)):
        return [str(n) for n in names]
    return []
