"""Assembler: tile detections -> merged defects in belt and hide mm -> finished hides.

Messages arrive in line order from the stitcher (through inference): ``LineSamples`` feed the
hide tracker, ``Uninspected`` stretches are remembered, ``StripDetections`` carry the model's
per-tile ``Detections``. A physical defect seen by several tiles (overlaps, borders) is
reported once: parts of the same class merge when their boxes overlap by at least ``ios``
(intersection over the smaller box) or, coming from different tiles, touch within
``touch_px``. A defect is final once the next strip can no longer reach it; a hide is final
once its last line is known and every defect on it is final.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np
import structlog

from .belt import BeltGeometry, belt_to_hide_mm
from .config import Station
from .defect import Defect
from .hide import Hide, UninspectedRegion
from .hide_tracker import HideTracker
from .stream import (
    AssemblyCounters, AssemblyListener, AssemblyMessage, LineClock, LineSamples, StripDetections, Uninspected,
)

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class _Part:
    box: np.ndarray  # (4,) belt px x0, y0, x1, y1
    class_id: int
    score: float
    area: float
    poly: np.ndarray | None  # (K, 2) belt px
    tiles: frozenset[tuple[int, int]]  # (strip, column)
    members: list["_Part"] = field(default_factory=list)


def _ios_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over the smaller box, (len(a), len(b))."""
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    small = np.minimum(area_a[:, None], area_b[None, :])
    return inter / np.maximum(small, 1e-9)


def _gap_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Chebyshev gap between boxes (0 when they overlap or touch)."""
    gx = np.maximum(a[:, None, 0] - b[None, :, 2], b[None, :, 0] - a[:, None, 2])
    gy = np.maximum(a[:, None, 1] - b[None, :, 3], b[None, :, 1] - a[:, None, 3])
    return np.maximum(np.maximum(gx, gy), 0)


def merge_parts(parts: list[_Part], ios: float, touch_px: float) -> list[_Part]:
    """Union parts of the same class that overlap (IOS) or touch across tiles."""
    n = len(parts)
    if n <= 1:
        return parts
    boxes = np.stack([p.box for p in parts])
    cls = np.array([p.class_id for p in parts])
    same = cls[:, None] == cls[None, :]
    iosm = _ios_matrix(boxes, boxes)
    gap = _gap_matrix(boxes, boxes)
    if n < 400:
        cross_tile = np.array([[not (pi.tiles & pj.tiles) for pj in parts] for pi in parts])
    else:  # many parts (a noisy strip): compare each part's first tile, vectorised
        code = np.array([hash(min(p.tiles)) for p in parts])
        cross_tile = code[:, None] != code[None, :]
    link = same & ((iosm >= ios) | (cross_tile & (gap <= touch_px)))
    np.fill_diagonal(link, False)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(np.triu(link))):
        ri, rj = find(int(i)), find(int(j))
        if ri != rj:
            parent[rj] = ri
    groups: dict[int, list[_Part]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(parts[i])
    return [g[0] if len(g) == 1 else _union(g) for g in groups.values()]


def _leaves(p: _Part) -> list[_Part]:
    return p.members if p.members else [p]


def _union(group: list[_Part]) -> _Part:
    leaves = [leaf for p in group for leaf in _leaves(p)]
    box = np.array(
        [min(p.box[0] for p in leaves), min(p.box[1] for p in leaves),
         max(p.box[2] for p in leaves), max(p.box[3] for p in leaves)]
    )
    tiles = frozenset().union(*(p.tiles for p in leaves))
    return _Part(box, leaves[0].class_id, max(p.score for p in leaves), 0.0, None, tiles, leaves)


def _rasterise(leaves: list[_Part], box: np.ndarray) -> tuple[float, np.ndarray]:
    """Area (px) and outline (belt px) of the union of the parts' outlines."""
    x0, y0 = np.floor(box[0]), np.floor(box[1])
    w = int(np.ceil(box[2] - x0)) + 2
    h = int(np.ceil(box[3] - y0)) + 2
    scale = min(1.0, 1024.0 / max(w, h))
    mw, mh = max(1, int(w * scale) + 1), max(1, int(h * scale) + 1)
    m = np.zeros((mh, mw), np.uint8)
    for p in leaves:
        if p.poly is not None and len(p.poly) >= 3:
            pts = ((p.poly - [x0, y0]) * scale).round().astype(np.int32)
            cv2.fillPoly(m, [pts], 1)
        else:
            bx = ((p.box - [x0, y0, x0, y0]) * scale).round().astype(int)
            m[bx[1] : max(bx[3], bx[1] + 1), bx[0] : max(bx[2], bx[0] + 1)] = 1
    area = float(m.sum()) / (scale * scale)
    cs, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not cs:
        return area, np.array([[box[0], box[1]], [box[2], box[1]], [box[2], box[3]], [box[0], box[3]]])
    pts = np.concatenate([c.reshape(-1, 2) for c in cs]).astype(np.float64)
    hull = cv2.convexHull(pts.astype(np.float32)).reshape(-1, 2) if len(cs) > 1 else pts
    return area, hull / scale + [x0, y0]


class Assembler:
    """Consumes messages in line order; calls ``on_hide`` for each finished Hide.

    ``listener`` (stream.AssemblyListener, e.g. the mark planner) hears of final defects, hide
    starts and uninspected stretches early, before their hide is complete. ``clock`` is the run's
    line clock: the assembler advances it with each strip and passes its reading with each event.
    ``counters`` (stream.AssemblyCounters) are read by the probe.
    """

    def __init__(
        self,
        station: Station,
        geometry: BeltGeometry,
        class_names: list[str],
        on_hide: Callable[[Hide], None],
        on_defect: Callable[[Defect], None] | None = None,
        sample_step: int | None = None,
        listener: AssemblyListener | None = None,
        clock: LineClock | None = None,
    ) -> None:
        self.st = station
        self.geo = geometry
        self.class_names = class_names
        self.on_hide = on_hide
        self.on_defect = on_defect
        self.step = sample_step or station.hide_detection.subsample
        self.tracker = HideTracker(station.hide_detection, geometry, station.camera.channels)
        self.grid_step = station.tiling.tile - station.tiling.overlap
        self.overlap = station.tiling.overlap
        self.pending: list[_Part] = []
        self.final: list[Defect] = []  # defects waiting for their hide to finish
        self.uninspected: list[Uninspected] = []
        self.hides_waiting: list[Hide] = []
        self._next_defect = 1
        self.counters = AssemblyCounters()
        self.listener = listener
        self.clock = clock if clock is not None else LineClock(station.camera.line_rate_hz)
        margin_mm = station.hide_detection.edge_margin_mm
        self._margin_px = margin_mm / min(station.camera.mm_per_px, station.camera.mm_per_line)

    @property
    def off_hide(self) -> int:
        return self.counters.off_hide

    @property
    def suppressed_lost(self) -> int:
        return self.counters.suppressed_lost

    @property
    def suppressed_edge(self) -> int:
        return self.counters.suppressed_edge

    # -- message entry points --------------------------------------------------------------
    def handle(self, msg: AssemblyMessage) -> None:
        if isinstance(msg, LineSamples):
            self.tracker.push(msg)
            # every hide confirmed by these samples, also one that already ended within them
            for hide_id, first in self.tracker.take_started():
                if self.listener is not None:
                    self.listener.hide_start(hide_id, first, self.clock.now())
            self._release_hides()
        elif isinstance(msg, Uninspected):
            if msg.reason == "lost":  # no samples for these lines: the hide tracker must know
                self.tracker.lost(msg.first_line, msg.end_line)
            self.uninspected.append(msg)
            log.warning("uninspected", first_line=msg.first_line, end_line=msg.end_line, reason=msg.reason)
            if self.listener is not None:
                self.listener.uninspected(msg, self.clock.now())
        elif isinstance(msg, StripDetections):
            self._strip(msg)
        else:
            raise TypeError(f"unexpected message {type(msg).__name__}")

    def finish(self) -> None:
        """End of stream: every pending defect and open hide becomes final."""
        self.tracker.finish(self.step)
        self._finalise(self.pending)
        self.pending = []
        self.counters.done_line = 1 << 62
        self._release_hides()

    # -- strips -----------------------------------------------------------------------------
    def _strip(self, sd: StripDetections) -> None:
        parts: list[_Part] = []
        lost = [(u.first_line, u.end_line) for u in self.uninspected] + list(sd.lost)
        for c, (x0, dets) in enumerate(zip(sd.x0s, sd.detections)):
            if not len(dets):
                continue
            keep = dets.xyxy[:, 1] < sd.valid_lines
            d = dets.filter(keep).offset(x0, sd.first_line)
            for i in range(len(d)):
                box = d.xyxy[i]
                cy = 0.5 * (box[1] + box[3])
                if any(a <= cy < b for a, b in lost):
                    self.counters.suppressed_lost += 1
                    continue
                poly = d.polygons[i] if d.polygons is not None else None
                parts.append(
                    _Part(box, int(d.class_id[i]), float(d.score[i]), float(d.area_px[i]), poly,
                          frozenset({(sd.index, c)}))
                )
        merged = merge_parts(self.pending + parts, self.st.merge.ios, self.st.merge.touch_px)
        next_start = sd.first_line + self.grid_step
        reach = next_start - self.st.merge.touch_px
        done = [p for p in merged if p.box[3] < reach]
        self.pending = [p for p in merged if p.box[3] >= reach]
        n = self.counters
        n.done_line = max(n.done_line, sd.first_line + min(sd.valid_lines, self.grid_step))
        if sd.t_complete_ns:
            self.clock.advance(sd.first_line + sd.valid_lines, sd.t_complete_ns)
        self._finalise(done)
        self._release_hides()
        if sd.t_complete_ns:
            n.latencies_ns.append(time.monotonic_ns() - sd.t_complete_ns)

    def _finalise(self, parts: list[_Part]) -> None:
        to_mark: list[Defect] = []
        for p in parts:
            leaves = _leaves(p)
            if len(leaves) == 1:
                area = p.area
                outline = p.poly if p.poly is not None and len(p.poly) >= 3 else np.array(
                    [[p.box[0], p.box[1]], [p.box[2], p.box[1]], [p.box[2], p.box[3]], [p.box[0], p.box[3]]]
                )
            else:
                area, outline = _rasterise(leaves, p.box)
            name = self.class_names[p.class_id] if 0 <= p.class_id < len(self.class_names) else str(p.class_id)
            box = tuple(float(v) for v in p.box)
            d = Defect(
                defect_id=0,
                hide_id=None,
                class_name=name,
                score=p.score,
                bbox_px=box,  # type: ignore[arg-type]
                outline_px=np.asarray(outline, np.float64),
                area_px=area,
                n_tiles=len(p.tiles),
            )
            b0 = self.geo.px_to_belt_mm(np.array([[box[0], box[1]], [box[2], box[3]]]))
            d.bbox_belt_mm = (float(b0[0, 0]), float(b0[0, 1]), float(b0[1, 0]), float(b0[1, 1]))
            d.outline_belt_mm = self.geo.px_to_belt_mm(d.outline_px)
            d.area_mm2 = area * self.geo.mm2_per_px()
            self.final.append(d)
            if self.listener is not None:
                cx, cy = 0.5 * (box[0] + box[2]), 0.5 * (box[1] + box[3])
                hid, interior = self.tracker.locate(cy, cx, self._margin_px)
                if hid is not None and interior:
                    d.hide_id = hid
                    to_mark.append(d)
        if to_mark and self.listener is not None:
            self.listener.defects(to_mark, self.clock.now())

    # -- hides ------------------------------------------------------------------------------
    def _release_hides(self) -> None:
        """Attach final defects to closed hides and hand out the hides that are complete."""
        closed = self.tracker.closed
        self.tracker.closed = []
        self.hides_waiting.extend(closed)
        pending_top = min((p.box[1] for p in self.pending), default=float("inf"))
        while self.hides_waiting:
            h = self.hides_waiting[0]
            if self.counters.done_line <= h.last_line or pending_top <= h.last_line:
                break
            self.hides_waiting.pop(0)
            self._complete_hide(h)
        # Defects that lie before the next hide (or any hide) can never be assigned: drop them.
        horizon = self.hides_waiting[0].first_line if self.hides_waiting else self.tracker.open_hide_first_line
        if horizon is None:
            horizon = self.counters.done_line - self.st.hide_detection.gap_lines - self.st.tiling.tile
        keep: list[Defect] = []
        for d in self.final:
            cy = 0.5 * (d.bbox_px[1] + d.bbox_px[3])
            if cy < horizon:
                self.counters.off_hide += 1
            else:
                keep.append(d)
        self.final = keep

    def _complete_hide(self, h: Hide) -> None:
        mine: list[Defect] = []
        rest: list[Defect] = []
        for d in self.final:
            cy = 0.5 * (d.bbox_px[1] + d.bbox_px[3])
            (mine if h.first_line <= cy <= h.last_line else rest).append(d)
        margin = self.st.hide_detection.edge_margin_mm
        if margin > 0 and len(h.outline_belt_mm) >= 3 and mine:
            contour = np.asarray(h.outline_belt_mm, np.float32).reshape(-1, 1, 2)
            keep = []
            for d in mine:
                dist = cv2.pointPolygonTest(contour, tuple(float(v) for v in d.center_belt_mm), True)
                if dist < margin:  # negative: outside the outline
                    self.counters.suppressed_edge += 1
                else:
                    keep.append(d)
            mine = keep
        # defects between the previous hide and this one were off hide
        self.counters.off_hide += sum(1 for d in rest if 0.5 * (d.bbox_px[1] + d.bbox_px[3]) < h.first_line)
        self.final = [d for d in rest if 0.5 * (d.bbox_px[1] + d.bbox_px[3]) > h.last_line]
        for d in sorted(mine, key=lambda d: (d.bbox_px[1], d.bbox_px[0])):
            d.hide_id = h.hide_id
            d.defect_id = self._next_defect
            self._next_defect += 1
            hb = belt_to_hide_mm(np.array(d.bbox_belt_mm).reshape(2, 2), h.origin_belt_mm)
            d.bbox_hide_mm = (float(hb[0, 0]), float(hb[0, 1]), float(hb[1, 0]), float(hb[1, 1]))
            d.outline_hide_mm = belt_to_hide_mm(d.outline_belt_mm, h.origin_belt_mm)
            by_class = self.counters.defects_by_class
            by_class[d.class_name] = by_class.get(d.class_name, 0) + 1
            if self.on_defect is not None:
                self.on_defect(d)
        h.defects = sorted(mine, key=lambda d: d.defect_id)
        # uninspected stretches within the hide; lines in several stretches count once
        spans: list[tuple[int, int]] = []
        for u in self.uninspected:
            a, b = max(u.first_line, h.first_line), min(u.end_line, h.last_line + 1)
            if b > a:
                spans.append((a, b))
                h.uninspected.append(
                    UninspectedRegion(a, b, u.reason, (float(self.geo.along_mm(a)), float(self.geo.along_mm(b))))
                )
        lost_lines, end = 0, h.first_line
        for a, b in sorted(spans):
            a = max(a, end)
            if b > a:
                lost_lines += b - a
                end = b
        h.inspected_fraction = max(0.0, 1.0 - lost_lines / max(1, h.n_lines))
        self.uninspected = [u for u in self.uninspected if u.end_line > h.last_line]
        self.counters.hides += 1
        self.on_hide(h)
