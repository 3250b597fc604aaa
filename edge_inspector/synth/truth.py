"""Ground truth of a synthetic recording: the JSON (hides, defects, outlines, sizes) and masks.

Bounding boxes, outlines and areas come from the exact pixel masks the generator drew, in px and
in mm on the belt and on the hide.  The files: ``<recording>.gt.json`` and, optionally,
``<recording>.gt-masks/hide-NNNN.png`` class-index maps.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from ..classes import DEFECT_CLASSES
from .config import SynthConfig

if TYPE_CHECKING:
    from .hide import Hide

TRUTH_VERSION = 1


def _outline(mask: np.ndarray, eps: float = 0.0) -> np.ndarray:
    """Outer outline (K, 2) of a mask's pixels (pixel indices); several parts -> convex hull."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if len(contours) == 1:
        c = contours[0]
    else:
        c = cv2.convexHull(np.concatenate(contours, axis=0))
    if eps > 0 and len(c) > 8:
        c = cv2.approxPolyDP(c, eps, True)
    return c.reshape(-1, 2).astype(np.float64)


def _largest_extent_mm(mask: np.ndarray, ppx: float, ppl: float) -> float:
    """Largest distance between two points of the mask's pixels (pixel squares), in mm."""
    hull = cv2.convexHull(_outline(mask).astype(np.float32).reshape(-1, 1, 2)).reshape(-1, 2)
    corners = (hull[:, None, :] + np.array([[0, 0], [1, 0], [0, 1], [1, 1]], np.float32)[None])
    pts = corners.reshape(-1, 2).astype(np.float64) * np.array([ppx, ppl])
    pts = cv2.convexHull(pts.astype(np.float32).reshape(-1, 1, 2)).reshape(-1, 2).astype(np.float64)
    d = pts[:, None, :] - pts[None, :, :]
    return float(np.sqrt((d ** 2).sum(-1)).max())


def _r(v: float, nd: int = 3) -> float:
    return round(float(v), nd)


def _pts(a: np.ndarray, nd: int = 2) -> list[list[float]]:
    return [[round(float(x), nd), round(float(y), nd)] for x, y in np.asarray(a).reshape(-1, 2)]



def hide_truth(hide: Hide, mask: np.ndarray, ppx: float, ppl: float) -> dict[str, Any]:
    """One hide's ground truth: lines, origin, area, outline and its defects (px and mm)."""
    first = hide.first_line
    x_left = int(np.flatnonzero(mask[0])[0])
    origin = ((hide.x0 + x_left) * ppx, first * ppl)
    outline = _outline(mask, eps=1.5) + np.array([hide.x0 + 0.5, first + 0.5])
    outline_mm = outline * np.array([ppx, ppl])
    defects = []
    for d in hide.defects:
        ys, xs = np.nonzero(d.mask)
        bx0, by0 = d.x0 + int(xs.min()), d.y0 + int(ys.min())
        bx1, by1 = d.x0 + int(xs.max()) + 1, d.y0 + int(ys.max()) + 1
        bb = [bx0 * ppx, by0 * ppl, bx1 * ppx, by1 * ppl]
        ol = (_outline(d.mask, eps=0.5 if d.mask.size > 400 else 0.0)
              + np.array([d.x0 + 0.5, d.y0 + 0.5])) * np.array([ppx, ppl])
        defects.append({
            "id": d.id,
            "class": d.cls,
            "hide_id": hide.hide_id,
            "size_mm": _r(_largest_extent_mm(d.mask, ppx, ppl), 2),
            "bbox_px": [bx0, by0, bx1, by1],
            "bbox_belt_mm": [_r(v) for v in bb],
            "bbox_hide_mm": [_r(bb[0] - origin[0]), _r(bb[1] - origin[1]),
                             _r(bb[2] - origin[0]), _r(bb[3] - origin[1])],
            "center_belt_mm": [_r((bb[0] + bb[2]) / 2), _r((bb[1] + bb[3]) / 2)],
            "outline_belt_mm": _pts(ol),
            "outline_hide_mm": _pts(ol - np.array(origin)),
            "area_mm2": _r(int(d.mask.sum()) * ppx * ppl, 2),
        })
    return {
        "hide_id": hide.hide_id,
        "first_line": first,
        "last_line": first + hide.n_lines - 1,
        "origin_belt_mm": [_r(origin[0]), _r(origin[1])],
        "area_m2": _r(int(np.count_nonzero(mask)) * ppx * ppl / 1e6, 4),
        "outline_belt_mm": _pts(outline_mm),
        "defects": defects,
    }


def recording_truth(cfg: SynthConfig, recording: str, n_lines: int, hides: list[Hide]
                    ) -> dict[str, Any]:
    """The ground truth JSON object of a recording (hide truths already planned)."""
    return {
        "version": TRUTH_VERSION,
        "recording": recording,
        "seed": int(cfg.seed),
        "width": int(cfg.width),
        "channels": int(cfg.channels),
        "mm_per_px": float(cfg.mm_per_px),
        "mm_per_line": float(cfg.mm_per_line),
        "n_lines": int(n_lines),
        "classes": list(DEFECT_CLASSES),
        "hides": [h.truth for h in hides],
    }


def hide_masks(hides: list[Hide], width: int) -> Iterator[tuple[int, np.ndarray]]:
    """(hide_id, (n_lines, width) uint8) hide maps: 0 belt, 1 hide, 2 hole (belt shows).

    Rows are the hide's lines first_line..last_line, columns the full camera width.
    """
    for hide in hides:
        m = np.zeros((hide.n_lines, width), np.uint8)
        m[:, hide.x0:hide.x0 + hide.width] = hide.mask()
        yield hide.hide_id, m


def class_masks(hides: list[Hide], width: int) -> Iterator[tuple[int, np.ndarray]]:
    """(hide_id, (n_lines, width) uint8) class-index maps: 0 none, i+1 = DEFECT_CLASSES[i].

    Rows are the hide's lines first_line..last_line, columns the full camera width.
    """
    for hide in hides:
        m = np.zeros((hide.n_lines, width), np.uint8)
        for d in hide.defects:
            sub = m[d.y0 - hide.first_line:d.y0 - hide.first_line + d.h, d.x0:d.x0 + d.w]
            sub[d.mask] = DEFECT_CLASSES.index(d.cls) + 1
        yield hide.hide_id, m


def write_truth(out: Path, truth: dict[str, Any],
                class_maps: Iterable[tuple[int, np.ndarray]] | None = None) -> None:
    """Write ``<out>.gt.json`` (atomically) and, given ``class_maps``, the class masks
    ``<out>.gt-masks/hide-NNNN.png``."""
    gt_path = Path(str(out) + ".gt.json")
    tmp = gt_path.with_name(gt_path.name + ".tmp")
    tmp.write_text(json.dumps(truth, indent=1) + "\n")
    os.replace(tmp, gt_path)
    if class_maps is not None:
        mdir = Path(str(out) + ".gt-masks")
        mdir.mkdir(exist_ok=True)
        for hide_id, m in class_maps:
            if not cv2.imwrite(str(mdir / f"hide-{hide_id:04d}.png"), m):
                raise OSError(f"cannot write {mdir / f'hide-{hide_id:04d}.png'}")
