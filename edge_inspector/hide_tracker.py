"""Hide tracking: which lines hold a hide, and each hide's outline, area and thumbnail.

Works on the stitcher's ``LineSamples`` (every ``step``-th pixel of every ``step``-th line).
A sample is *hide* when the mean over channels of |pixel - belt_level| exceeds ``threshold``.
A sampled line with at least ``min_px_per_line`` hide samples is a hide line. A hide starts
with a run of hide lines at least ``min_hide_lines`` long and ends after ``gap_lines`` lines
without hide. Its first and last lines are then widened to the neighbouring lines that still
hold any hide sample (the narrow tips of a hide). Hides follow each other along the belt (one hide across the belt at a time).

Lost lines (``lost``: the stitcher's ``Uninspected(..., "lost")``, or sampled rows that never
came) belong to the hide they fall in, and its extent covers them: a stretch inside a hide neither
ends it nor starts a new one; a hide seen right after lost lines may have started in them, so it
starts at the last row seen before them; a hide under the camera when lines are lost may have
ended in them, so it reaches to their end (also at the end of the stream). The rows of a lost
stretch are filled from the nearest row seen (the first half from the row before, the second
from the row after), so the area counts a lost stretch as the mean of its two edges; the
thumbnail shows it black. Rows in lost lines never confirm a hide.

Every confirmed hide is announced once in ``started`` (id, first line), also one that opens
and closes within one ``push``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import cv2
import numba
import numpy as np

from .belt import BeltGeometry, belt_to_hide_mm
from .config import HideDetection
from .hide import Hide
from .stream import LineSamples


@numba.njit(nogil=True, cache=True)
def hide_mask(samples, belt, threshold):  # pragma: no cover - jit
    """(n, w, c) samples -> (n, w) uint8 mask of hide samples and (n,) counts per row."""
    n, w, c = samples.shape
    mask = np.zeros((n, w), np.uint8)
    counts = np.zeros(n, np.int32)
    lim = threshold * c
    for i in range(n):
        cnt = 0
        for x in range(w):
            d = 0.0
            for ch in range(c):
                d += abs(float(samples[i, x, ch]) - belt[ch])
            if d > lim:
                mask[i, x] = 1
                cnt += 1
        counts[i] = cnt
    return mask, counts


@dataclass(slots=True)
class _Building:
    first_row_line: int  # line of the first sampled row of this hide
    rows_mask: list[np.ndarray] = field(default_factory=list)
    rows_img: list[np.ndarray] = field(default_factory=list)
    last_hide_line: int = 0  # line of the last sampled row with a hide line
    last_any_line: int = 0  # line of the last sampled row with any hide sample
    confirmed: bool = False
    seen_from: int = 0  # line from which rows were seen with hide (confirmation counts from here)


class HideTracker:
    """Turns LineSamples into Hide records (without defects; the assembler adds those)."""

    def __init__(self, cfg: HideDetection, geometry: BeltGeometry, channels: int) -> None:
        self.cfg = cfg
        self.geo = geometry
        belt = list(cfg.belt_level)
        if len(belt) == 1:
            belt = belt * channels
        self.belt = np.asarray(belt, np.float64)
        self._cur: _Building | None = None
        self._next_id = 1
        self._last_row_line: int | None = None
        self._step = max(1, cfg.subsample)
        # rows seen while no hide is open, to find the leading tip of the next hide
        self._recent: deque[tuple[int, np.ndarray, np.ndarray, int]] = deque(
            maxlen=max(2, cfg.gap_lines // max(1, cfg.subsample) + 2)
        )
        self.closed: list[Hide] = []  # hides whose last line is known, in order
        self.started: list[tuple[int, int]] = []  # (hide id, first line) of hides just confirmed
        self._lost: tuple[int, int] | None = None  # lost lines not followed by a sampled row yet
        # presence masks of the last few closed hides, for ``locate`` of late-finalised defects
        self._kept: deque[tuple[int, int, int, np.ndarray]] = deque(maxlen=4)

    @property
    def open_hide_first_line(self) -> int | None:
        """First line of the hide under the camera now (confirmed), if any."""
        if self._cur is not None and self._cur.confirmed:
            return self._cur.first_row_line
        return None

    def locate(self, line: float, x: float, margin_px: float) -> tuple[int | None, bool]:
        """Which hide holds pixel (x, line), and whether it lies ``margin_px`` inside its outline.

        Answers from the presence mask of the hide under the camera or of a recently closed
        one, so a defect can be marked before its hide is complete. Returns (hide id or None,
        interior). Rows not seen yet count as hide (they are at most a strip away).
        """
        cands: list[tuple[int, int, int, list[np.ndarray] | np.ndarray]] = []
        cur = self._cur
        if cur is not None and cur.confirmed and cur.rows_mask:
            cands.append((self._next_id, cur.first_row_line, self._step, cur.rows_mask))
        cands.extend(self._kept)
        for hid, first, step, rows in cands:
            r = int((line - first) // step)
            if r < 0 or r >= len(rows):
                continue
            c = int(x // step)
            w = len(rows[r])
            if not 0 <= c < w or not rows[r][c]:
                return None, False
            rad = int(np.ceil(margin_px / step))
            if rad <= 0:
                return hid, True
            r0, r1 = max(0, r - rad), min(len(rows), r + rad + 1)
            win = np.stack([rows[i] for i in range(r0, r1)])[:, max(0, c - rad) : c + rad + 1]
            if c - rad < 0 or c + rad >= w:
                return hid, False  # the hide reaches the edge of the camera's view
            yy, xx = np.mgrid[r0 - r : r1 - r, max(0, c - rad) - c : min(w, c + rad + 1) - c]
            disc = (yy * yy + xx * xx) * step * step <= margin_px * margin_px
            return hid, bool(win[disc].all())
        return None, False

    def lost(self, first_line: int, end_line: int) -> None:
        """Lines [first_line, end_line) will never arrive (before the samples that follow them)."""
        if self._lost is None:
            self._lost = (first_line, end_line)
        else:
            self._lost = (min(self._lost[0], first_line), max(self._lost[1], end_line))

    def take_started(self) -> list[tuple[int, int]]:
        """(hide id, first line) of every hide confirmed since the last call, in order."""
        out, self.started = self.started, []
        return out

    def push(self, ls: LineSamples) -> list[Hide]:
        """Feed samples; returns the hides that ended with them."""
        if len(ls.samples) == 0:
            return []
        mask, counts = hide_mask(ls.samples, self.belt, float(self.cfg.threshold))
        step = self._step = ls.step
        ended: list[Hide] = []
        for i in range(len(counts)):
            line = ls.first_line + i * step
            present = counts[i] >= self.cfg.min_px_per_line
            prev = self._last_row_line
            if self._lost is not None or (prev is not None and line - prev > step):
                self._after_gap(line, mask[i], ls.samples[i], bool(present))
            self._last_row_line = line
            cur = self._cur
            if cur is None:
                if present:
                    cur = self._cur = _Building(line, [mask[i]], [ls.samples[i]], line, line)
                    # walk back over the rows just before that still show some hide
                    self._walk_back(cur)
                    cur.seen_from = cur.first_row_line
                    self._recent.clear()
                else:
                    self._recent.append((line, mask[i], ls.samples[i], int(counts[i])))
                continue
            if counts[i] > 0:
                cur.last_any_line = line
            if present:
                cur.rows_mask.append(mask[i])
                cur.rows_img.append(ls.samples[i])
                cur.last_hide_line = line
                if not cur.confirmed and line - cur.seen_from + step >= self.cfg.min_hide_lines:
                    cur.confirmed = True
                    self.started.append((self._next_id, cur.first_row_line))
                continue
            # no hide on this row
            if line - cur.last_hide_line >= self.cfg.gap_lines:
                if cur.confirmed:
                    ended.append(self._close(cur, step))
                self._cur = None
                self._recent.append((line, mask[i], ls.samples[i], int(counts[i])))
            else:
                cur.rows_mask.append(mask[i])
                cur.rows_img.append(ls.samples[i])
        self.closed.extend(ended)
        return ended

    def _walk_back(self, cur: _Building) -> None:
        """Prepend the rows seen just before ``cur`` that still show some hide (its leading tip)."""
        step, prev = self._step, cur.first_row_line
        while self._recent and self._recent[-1][0] == prev - step and self._recent[-1][3] > 0:
            ln, m_row, img_row, _ = self._recent.pop()
            cur.rows_mask.insert(0, m_row)
            cur.rows_img.insert(0, img_row)
            cur.first_row_line = prev = ln

    def _missing_rows(self, end: int) -> range:
        """Sampled rows below ``end`` that never came: after the last row seen, or from the lost lines."""
        step, prev = self._step, self._last_row_line
        if prev is not None:
            return range(prev + step, end, step)
        g0 = self._lost[0] if self._lost is not None else end
        return range(-(-g0 // step) * step, end, step)

    @staticmethod
    def _fill(cur: _Building, n: int, before: np.ndarray, after: np.ndarray, img_like: np.ndarray) -> None:
        """Append ``n`` rows of lost lines: the first half as ``before``, the rest as ``after``; black pictures."""
        half = (n + 1) // 2
        for k in range(n):
            cur.rows_mask.append(before if k < half else after)
            cur.rows_img.append(np.zeros_like(img_like))

    def _after_gap(self, line: int, row_mask: np.ndarray, row_img: np.ndarray, present: bool) -> None:
        """Row ``line`` is the first seen after lost lines: give them to the hide they belong to."""
        missing = self._missing_rows(line)
        self._lost = None
        n = len(missing)
        cur = self._cur
        if cur is not None:  # a hide was under the camera: it goes on over the gap (or ended in it)
            self._fill(cur, n, cur.rows_mask[-1], row_mask, row_img)
            if n:
                cur.last_hide_line = cur.last_any_line = line - self._step
            return
        if not present:
            return  # lost lines between hides: the assembler keeps them as an uninspected stretch
        # A hide right after lost lines may have started in them: it starts at the last row seen
        # before them (with its leading tip, if any), and the lost rows are part of it.
        prev = self._last_row_line
        before = np.zeros_like(row_mask)
        if prev is not None and self._recent and self._recent[-1][0] == prev:
            ln, before, img, _ = self._recent.pop()
            cur = _Building(ln, [before], [img], ln, ln)
            self._walk_back(cur)
        else:
            first = missing[0] if n else line
            cur = _Building(first, [], [], first, first)
        self._recent.clear()
        self._fill(cur, n, before, row_mask, row_img)
        cur.seen_from = line  # rows in lost lines do not confirm a hide
        self._cur = cur

    def finish(self, step: int) -> list[Hide]:
        """End of stream: close the hide under the camera, if confirmed (over lines lost at the end)."""
        ended: list[Hide] = []
        cur = self._cur
        if cur is not None and self._lost is not None and cur.rows_mask:
            missing = self._missing_rows(self._lost[1])
            if len(missing):
                empty = np.zeros_like(cur.rows_mask[-1])
                self._fill(cur, len(missing), cur.rows_mask[-1], empty, cur.rows_img[-1])
                cur.last_hide_line = cur.last_any_line = missing[-1]
        self._lost = None
        if cur is not None and cur.confirmed:
            ended.append(self._close(cur, step))
        self._cur = None
        self.closed.extend(ended)
        return ended

    def _close(self, cur: _Building, step: int) -> Hide:
        cur.last_hide_line = max(cur.last_hide_line, cur.last_any_line)
        n_rows = (cur.last_hide_line - cur.first_row_line) // step + 1
        mask = np.stack(cur.rows_mask[:n_rows])
        img = np.stack(cur.rows_img[:n_rows])
        hid = self._next_id
        self._next_id += 1
        self._kept.append((hid, cur.first_row_line, step, mask))
        # Outline: the largest external contour of the cleaned-up mask, in sample coordinates.
        m = cv2.morphologyEx(mask * 255, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
        contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        if contours:
            cnt = max(contours, key=cv2.contourArea)
            cnt = cv2.approxPolyDP(cnt, 1.0, True).reshape(-1, 2).astype(np.float64)
        else:
            cnt = np.zeros((0, 2))
        # Sample (col, row) -> pixel frame: centre of the sampled pixel, line of the row.
        pts_px = np.stack([cnt[:, 0] * step + 0.5 * step, cur.first_row_line + cnt[:, 1] * step], 1) if len(cnt) else cnt
        outline_belt = self.geo.px_to_belt_mm(pts_px) if len(cnt) else np.zeros((0, 2))
        rows = np.flatnonzero(mask.any(axis=1))  # the first row may lie in lost lines (empty)
        first_cols = np.flatnonzero(mask[rows[0]]) if len(rows) else rows
        x_left = (first_cols[0] * step) if len(first_cols) else 0
        origin = (float(self.geo.across_mm(x_left)), float(self.geo.along_mm(cur.first_row_line)))
        area_m2 = float(mask.sum()) * step * step * self.geo.mm2_per_px() / 1e6
        cols = np.flatnonzero(mask.any(axis=0))
        c0 = max(0, int(cols[0]) - 4) if len(cols) else 0
        c1 = min(mask.shape[1], int(cols[-1]) + 5) if len(cols) else mask.shape[1]
        thumb = np.ascontiguousarray(img[:, c0:c1])
        if thumb.dtype != np.uint8:
            thumb = (thumb >> 8).astype(np.uint8)
        if thumb.shape[2] == 1:
            thumb = np.repeat(thumb, 3, axis=2)
        return Hide(
            hide_id=hid,
            first_line=cur.first_row_line,
            last_line=cur.last_hide_line + step - 1,
            origin_belt_mm=origin,
            outline_belt_mm=outline_belt,
            outline_hide_mm=belt_to_hide_mm(outline_belt, origin),
            area_m2=area_m2,
            thumbnail=thumb,
            thumb_step=step,
            thumb_x0=c0 * step,
        )
