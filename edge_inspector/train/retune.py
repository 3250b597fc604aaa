"""Set a shipped model's operating point in its metadata, torch-free (no retraining)::

    python -m edge_inspector.train.retune edge_inspector/models/attention_unet.onnx \\
        --threshold 0.75 --extent 0.4 --no-large

``--threshold``: ``edge_inspector.score_threshold``; ``--extent``: the output spec's ``extent``
(core-and-extent decoding, ``inference.components``); ``--no-large``: drop the ``large`` rule;
``--min-area-px``: ``edge_inspector.min_area_px``. The graph is not touched; the file is
rewritten in place (atomically). How the shipped values were chosen: docs/models.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import onnx


def retune(path: Path, *, threshold: float | None = None, extent: float | None = None, no_large: bool = False,
           min_area_px: float | None = None) -> dict[str, str]:
    """Rewrite the metadata of ``path``; returns the new metadata."""
    m = onnx.load(str(path))
    meta = {p.key: p for p in m.metadata_props}
    if "edge_inspector.output" not in meta:
        raise ValueError(f"{path}: no edge_inspector.output metadata (not a model of this contract)")
    out = json.loads(meta["edge_inspector.output"].value)
    if extent is not None:
        if not 0.0 <= extent <= 1.0:
            raise ValueError(f"--extent must be within 0..1, got {extent}")
        out["extent"] = extent
    if no_large:
        out.pop("large", None)
    meta["edge_inspector.output"].value = json.dumps(out)
    for key, value in (("edge_inspector.score_threshold", threshold), ("edge_inspector.min_area_px", min_area_px)):
        if value is None:
            continue
        if key not in meta:
            meta[key] = m.metadata_props.add()
            meta[key].key = key
        meta[key].value = str(value)
    tmp = path.with_name(path.name + ".tmp")
    onnx.save(m, str(tmp))
    tmp.replace(path)
    return {p.key: p.value for p in m.metadata_props if p.key != "edge_inspector.training"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edge_inspector.train.retune", description=__doc__.split("::")[0])
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--threshold", type=float)
    ap.add_argument("--extent", type=float)
    ap.add_argument("--no-large", action="store_true")
    ap.add_argument("--min-area-px", type=float)
    a = ap.parse_args(argv)
    for p in a.models:
        try:
            meta = retune(p, threshold=a.threshold, extent=a.extent, no_large=a.no_large, min_area_px=a.min_area_px)
        except (OSError, ValueError, onnx.onnx_cpp2py_export.checker.ValidationError) as e:  # type: ignore[attr-defined]
            print(f"retune: {e}", file=sys.stderr)
            return 2
        print(f"{p}: threshold {meta.get('edge_inspector.score_threshold')}, output {meta['edge_inspector.output']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
