"""Hide maps: a PNG per hide with its picture, outline, defects by class and uninspected stretches.

``render_hide_map(hide, mm_per_px, mm_per_line)`` returns a BGR image; ``hide_map_frame`` gives the
geometry (camera px / lines -> map canvas px) that the drawing and tests share.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from .classes import class_color
from .hide import Hide


_TITLE_H = 62
_LEGEND_ROW_H = 26
_MIN_MARK_PX = 8  # defects smaller than this on the map get a marker circle
_MARK_RADIUS = 11
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_BACKGROUND = (46, 46, 46)  # BGR, belt-like dark grey
_HIDE_FILL = (112, 146, 178)  # BGR, leather tone for maps without a picture
_OUTLINE = (255, 255, 255)
_HATCH = (200, 200, 200)
_GRADE_COLORS = {
    "A": (60, 170, 60),
    "B": (40, 190, 190),
    "C": (30, 140, 240),
    "D": (40, 40, 210),
    "U": (140, 140, 140),
}


@dataclass(frozen=True, slots=True)
class HideMapFrame:
    """Where things land on a hide map: camera px/lines -> map canvas px.

    canvas x = (x - x0) * scale, canvas y = body_top + (line - line0) * scale, with belt mm
    turned into camera px by the linear ``mm_per_px`` / ``mm_per_line``.
    """

    x0: float  # camera column at the left edge of the map body
    line0: float  # camera line at the top edge of the map body
    scale: float  # canvas px per camera px (and per line)
    width: int  # body (and image) width
    body_h: int  # body height
    body_top: int  # title bar height
    mm_per_px: float
    mm_per_line: float

    def cam_to_canvas(self, x: np.ndarray, line: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cx = (np.asarray(x, np.float64) - self.x0) * self.scale
        cy = self.body_top + (np.asarray(line, np.float64) - self.line0) * self.scale
        return cx, cy

    def to_canvas(self, pts_belt_mm: np.ndarray) -> np.ndarray:
        """(K, 2) belt mm (across, along) -> (K, 2) float canvas px (x, y)."""
        p = np.asarray(pts_belt_mm, np.float64).reshape(-1, 2)
        cx, cy = self.cam_to_canvas(p[:, 0] / self.mm_per_px, p[:, 1] / self.mm_per_line)
        return np.stack([cx, cy], axis=1)

    def line_to_canvas_y(self, line: float) -> float:
        return self.body_top + (float(line) - self.line0) * self.scale


def _defect_pts_belt(d: Any) -> np.ndarray:
    """Outline of a defect in belt mm, or its box corners when it has no outline."""
    o = np.asarray(d.outline_belt_mm, np.float64).reshape(-1, 2)
    if len(o) >= 3:
        return o
    a0, b0, a1, b1 = (float(v) for v in d.bbox_belt_mm)
    return np.array([[a0, b0], [a1, b0], [a1, b1], [a0, b1]], np.float64)


def hide_map_frame(
    hide: Hide, mm_per_px: float, mm_per_line: float, *, max_height: int = 6000
) -> HideMapFrame:
    """Geometry of the hide map of ``hide`` (see ``HideMapFrame``)."""
    line0 = float(hide.first_line)
    n_lines = max(1.0, float(hide.last_line + 1 - hide.first_line))
    thumb = hide.thumbnail
    if thumb is not None and np.asarray(thumb).ndim >= 2 and min(thumb.shape[:2]) > 0:
        step = max(1, int(hide.thumb_step))
        th, tw = thumb.shape[:2]
        s_thumb = min(1600.0, max(1024.0, float(tw))) / tw
        if th * s_thumb > max_height:
            s_thumb = max_height / th
        width = max(1, int(round(tw * s_thumb)))
        body_h = max(1, int(round(th * s_thumb)))
        return HideMapFrame(
            x0=float(hide.thumb_x0), line0=line0, scale=s_thumb / step, width=width,
            body_h=body_h, body_top=_TITLE_H, mm_per_px=mm_per_px, mm_per_line=mm_per_line,
        )
    # No picture: frame the hide outline and the defects.
    pts = [np.asarray(hide.outline_belt_mm, np.float64).reshape(-1, 2)]
    pts += [_defect_pts_belt(d) for d in hide.defects]
    allp = np.concatenate(pts) if pts else np.zeros((0, 2))
    if len(allp):
        xs = allp[:, 0] / mm_per_px
        x_lo, x_hi = float(xs.min()), float(xs.max())
        ls = allp[:, 1] / mm_per_line
        line0 = min(line0, float(ls.min()))
        n_lines = max(n_lines, float(ls.max()) - line0)
    else:
        x_lo = float(hide.thumb_x0)
        x_hi = x_lo + 1024.0 * max(1, int(hide.thumb_step))
    span = max(x_hi - x_lo, 64.0)
    margin = 0.03 * span
    x0 = x_lo - margin
    span += 2 * margin
    width = 1280
    scale = width / span
    if n_lines * scale > max_height:
        scale = max_height / n_lines
        width = max(1, int(round(span * scale)))
    body_h = max(1, int(round(n_lines * scale)))
    return HideMapFrame(
        x0=x0, line0=line0, scale=scale, width=width, body_h=body_h, body_top=_TITLE_H,
        mm_per_px=mm_per_px, mm_per_line=mm_per_line,
    )


def _text(img: np.ndarray, s: str, org: tuple[int, int], color: tuple[int, int, int],
          scale: float = 0.45, thickness: int = 1) -> None:
    """Text on a dark box, readable on any background."""
    (tw, th), base = cv2.getTextSize(s, _FONT, scale, thickness)
    x, y = org
    cv2.rectangle(img, (x - 2, y - th - 3), (x + tw + 2, y + base), (20, 20, 20), -1)
    cv2.putText(img, s, org, _FONT, scale, color, thickness, cv2.LINE_AA)


def _thumb_bgr(thumb: np.ndarray) -> np.ndarray:
    t = np.asarray(thumb)
    if t.dtype != np.uint8:
        if t.dtype == np.uint16:
            # 12-bit (Mono12) or 16-bit samples: shift by the bits the picture really uses, so a
            # 12-bit hide is not drawn nearly black.
            shift = max(8, int(t.max()).bit_length() if t.size else 8) - 8
            t = (t >> shift).astype(np.uint8)
        else:
            t = np.clip(t, 0, 255).astype(np.uint8)
    if t.ndim == 2 or (t.ndim == 3 and t.shape[2] == 1):
        return cv2.cvtColor(t.reshape(t.shape[0], t.shape[1]), cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(np.ascontiguousarray(t[:, :, :3]), cv2.COLOR_RGB2BGR)


def _hatch(img: np.ndarray, y0: int, y1: int, color: tuple[int, int, int], spacing: int = 14) -> None:
    """Darken rows [y0, y1) and cross-hatch them across the whole width."""
    y0, y1 = max(0, y0), min(img.shape[0], y1)
    if y1 <= y0:
        return
    roi = img[y0:y1]  # a row slice of a C-contiguous image is contiguous: drawable in place
    roi[:] = (roi.astype(np.uint16) * 2 // 5).astype(np.uint8)
    h, w = roi.shape[:2]
    for k in range(-h, w + h, spacing):
        cv2.line(roi, (k, 0), (k + h, h), color, 1, cv2.LINE_AA)
        cv2.line(roi, (k + h, 0), (k, h), color, 1, cv2.LINE_AA)
    cv2.line(img, (0, y0), (w - 1, y0), color, 1)
    cv2.line(img, (0, y1 - 1), (w - 1, y1 - 1), color, 1)


def render_hide_map(hide: Hide, mm_per_px: float, mm_per_line: float) -> np.ndarray:
    """The hide map of ``hide`` as a BGR uint8 image (title bar, map body, legend)."""
    fr = hide_map_frame(hide, mm_per_px, mm_per_line)
    counts: dict[str, int] = {}
    for d in hide.defects:
        counts[d.class_name] = counts.get(d.class_name, 0) + 1

    # Legend layout first: it decides the image height.
    entries = [(name, class_color(name), f"{name} ({n})") for name, n in sorted(counts.items())]
    if hide.uninspected:
        entries.append(("uninspected", _HATCH, f"uninspected ({len(hide.uninspected)})"))
    rows: list[list[tuple[int, tuple[int, int, int], str]]] = [[]]
    x = 10
    for _, col, label in entries:
        tw = cv2.getTextSize(label, _FONT, 0.5, 1)[0][0] + 36
        if x + tw > fr.width - 10 and rows[-1]:
            rows.append([])
            x = 10
        rows[-1].append((x, col, label))
        x += tw
    legend_h = _LEGEND_ROW_H * max(1, len(rows)) + 8
    H = fr.body_top + fr.body_h + legend_h
    img = np.empty((H, fr.width, 3), np.uint8)
    img[:] = _BACKGROUND
    body = img[fr.body_top:fr.body_top + fr.body_h]

    # Background: the hide picture, or a plain fill of the hide outline.
    outline = np.asarray(hide.outline_belt_mm, np.float64).reshape(-1, 2)
    outline_c = np.round(fr.to_canvas(outline)).astype(np.int32) if len(outline) else None
    if hide.thumbnail is not None and np.asarray(hide.thumbnail).ndim >= 2 and min(hide.thumbnail.shape[:2]) > 0:
        bg = _thumb_bgr(hide.thumbnail)
        body[:] = cv2.resize(bg, (fr.width, fr.body_h), interpolation=cv2.INTER_AREA
                             if fr.width < bg.shape[1] else cv2.INTER_LINEAR)
    elif outline_c is not None and len(outline_c) >= 3:
        cv2.fillPoly(img, [outline_c.reshape(-1, 1, 2)], _HIDE_FILL, cv2.LINE_AA)
        img[:fr.body_top] = _BACKGROUND

    # Uninspected stretches, across the whole width.
    for u in hide.uninspected:
        y0 = int(np.floor(fr.line_to_canvas_y(u.first_line)))
        y1 = int(np.ceil(fr.line_to_canvas_y(u.end_line)))
        y0 = max(fr.body_top, y0)
        y1 = min(fr.body_top + fr.body_h, max(y1, y0 + 3))
        _hatch(img, y0, y1, _HATCH)
        label = f"NOT INSPECTED ({u.reason}) lines {u.first_line}-{u.end_line - 1}"
        ty = min(max(y0 + 16, fr.body_top + 14), fr.body_top + fr.body_h - 4)
        _text(img, label, (8, ty), (255, 255, 255), 0.5, 1)

    if outline_c is not None and len(outline_c) >= 2:
        cv2.polylines(img, [outline_c.reshape(-1, 1, 2)], True, _OUTLINE, 2, cv2.LINE_AA)

    # Defects: outline (or box) in the class colour, marker circle around tiny ones, label.
    for d in hide.defects:
        col = class_color(d.class_name)
        pc = fr.to_canvas(_defect_pts_belt(d))
        pi = np.round(pc).astype(np.int32)
        cv2.polylines(img, [pi.reshape(-1, 1, 2)], True, col, 2, cv2.LINE_AA)
        lo, hi = pc.min(axis=0), pc.max(axis=0)
        cx, cy = (int(round(v)) for v in (lo + hi) / 2)
        if max(hi - lo) < _MIN_MARK_PX:
            cv2.circle(img, (cx, cy), 2, col, -1)
            cv2.circle(img, (cx, cy), _MARK_RADIUS, col, 2, cv2.LINE_AA)
            lx, ly = cx + _MARK_RADIUS + 2, cy - _MARK_RADIUS
        else:
            lx, ly = int(lo[0]), int(lo[1]) - 4
        ly = max(ly, fr.body_top + 12)
        _text(img, d.class_name, (lx, ly), col, 0.4, 1)

    # Title bar.
    img[:fr.body_top] = (28, 28, 28)
    gcol = _GRADE_COLORS.get(hide.grade, (140, 140, 140))
    cv2.rectangle(img, (0, 0), (58, fr.body_top - 1), gcol, -1)
    cv2.putText(img, str(hide.grade), (12, 46), _FONT, 1.5, (255, 255, 255), 3, cv2.LINE_AA)
    title = (f"hide {hide.hide_id}   {hide.area_m2:.2f} m2   grade {hide.grade}"
             f"   inspected {100 * hide.inspected_fraction:.1f}%"
             f"   lines {hide.first_line}-{hide.last_line}")
    cv2.putText(img, title, (70, 24), _FONT, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
    sub = f"{len(hide.defects)} defects" + (
        ": " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) if counts else "")
    cv2.putText(img, sub, (70, 50), _FONT, 0.5, (220, 220, 220), 1, cv2.LINE_AA)

    # Legend.
    top = fr.body_top + fr.body_h
    img[top:] = (28, 28, 28)
    for r, row in enumerate(rows):
        y = top + 6 + r * _LEGEND_ROW_H
        for x, col, label in row:
            cv2.rectangle(img, (x, y + 3), (x + 18, y + 19), col, -1)
            cv2.putText(img, label, (x + 24, y + 17), _FONT, 0.5, (235, 235, 235), 1, cv2.LINE_AA)
    return img
