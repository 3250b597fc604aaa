"""Hides on a belt -> LineBlocks: ``SynthStream``, ``generate_blocks``, ``write_recording``.

Planning (where the hides lie along the belt; each hide's outline, colour and defects; the ground
truth) happens when a stream is made.  Pixels are rendered lazily in chunks of ``RENDER_LINES``
aligned to the global line index and cut into LineBlocks of ``block_lines``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from os import PathLike
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..lines import LineBlock
from .config import RENDER_LINES, SynthConfig
from .hide import Hide, plan_hide
from .texture import Belt, HideRender
from .truth import class_masks, hide_masks, hide_truth, recording_truth, write_truth


class SynthStream:
    """Iterator of LineBlocks for one synthetic recording; ``truth`` is known from the start.

    Planning (hide outlines, defect shapes and positions, the ground truth) happens in the
    constructor; pixels are rendered lazily, chunk by chunk, as the iterator advances.
    """

    def __init__(self, cfg: SynthConfig, recording: str = "synthetic") -> None:
        problems = cfg.problems()
        if problems:
            raise ValueError("invalid SynthConfig: " + "; ".join(problems))
        self.cfg = cfg
        self.width = cfg.width
        self.channels = cfg.channels
        self.belt = Belt(cfg)
        self.belt_level = self.belt.level
        self.floor = float(self.belt_level.mean()) + cfg.hide_min_contrast
        self.hides: list[Hide] = []
        self.n_lines = 0
        self._plan()
        self.truth = recording_truth(cfg, recording, self.n_lines, self.hides)
        self._it: Iterator[LineBlock] | None = None

    # -- planning

    def _plan(self) -> None:
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, 1])
        cursor = int(rng.integers(cfg.gap_lines[0], cfg.gap_lines[1] + 1))
        class_cycle: list[str] = []
        next_id = 1
        for k in range(cfg.hides):
            hide, mask, next_id = plan_hide(cfg, k, cursor, class_cycle, next_id)
            hide.truth = hide_truth(hide, mask, cfg.mm_per_px, cfg.mm_per_line)
            self.hides.append(hide)
            cursor += hide.n_lines + int(rng.integers(cfg.gap_lines[0], cfg.gap_lines[1] + 1))
        self.n_lines = cursor if cfg.hides else int(rng.integers(cfg.gap_lines[0], cfg.gap_lines[1] + 1))

    # -- ground truth

    def hide_masks(self) -> Iterator[tuple[int, np.ndarray]]:
        """(hide_id, (n_lines, width) uint8) hide maps: 0 belt, 1 hide, 2 hole (belt shows).

        Rows are the hide's lines first_line..last_line, columns the full camera width.
        """
        return hide_masks(self.hides, self.width)

    def class_masks(self) -> Iterator[tuple[int, np.ndarray]]:
        """(hide_id, (n_lines, width) uint8) class-index maps: 0 none, i+1 = DEFECT_CLASSES[i].

        Rows are the hide's lines first_line..last_line, columns the full camera width.
        """
        return class_masks(self.hides, self.width)

    # -- rendering

    def __iter__(self) -> Iterator[LineBlock]:
        return self

    def __next__(self) -> LineBlock:
        if self._it is None:
            self._it = self._blocks()
        return next(self._it)

    def _blocks(self) -> Iterator[LineBlock]:
        bl = self.cfg.block_lines
        rate = self.cfg.line_rate_hz
        pending: list[np.ndarray] = []
        have = 0
        start = 0

        def block(lines: np.ndarray, first: int) -> LineBlock:
            return LineBlock(lines, first, first, int(round(first * 1e9 / rate)), 0)

        for c0, chunk in self.chunks():
            if not pending and len(chunk) == bl and c0 == start:
                start += bl
                yield block(chunk, c0)
                continue
            pending.append(chunk)
            have += len(chunk)
            while have >= bl:
                buf = np.concatenate(pending) if len(pending) > 1 else pending[0]
                yield block(np.ascontiguousarray(buf[:bl]), start)
                start += bl
                rest = buf[bl:]
                pending = [rest] if len(rest) else []
                have = len(rest)
        if have:
            buf = np.concatenate(pending) if len(pending) > 1 else pending[0]
            yield block(np.ascontiguousarray(buf), start)

    def chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        """(first_line, (n, width, channels) uint8) render chunks of RENDER_LINES lines."""
        state: dict[int, HideRender] = {}
        for c0 in range(0, self.n_lines, RENDER_LINES):
            c1 = min(self.n_lines, c0 + RENDER_LINES)
            planes = self.belt.planes(c0, c1)
            for hide in self.hides:
                if hide.end_line <= c0 or hide.first_line >= c1:
                    state.pop(hide.hide_id, None)
                    continue
                hr = state.get(hide.hide_id)
                if hr is None:
                    hr = state[hide.hide_id] = HideRender(
                        hide, self.cfg.seed, self.channels, self.floor, self.belt.fall)
                hr.render(planes, c0, c1)
            if self.channels == 1:
                yield c0, planes[0][:, :, None]
            else:
                yield c0, cv2.merge(planes)


def generate_blocks(cfg: SynthConfig, recording: str = "synthetic") -> SynthStream:
    """LineBlocks of a synthetic recording; the returned iterator's ``truth`` is the ground truth.

    Blocks have ``block_lines`` lines (the last may be shorter), ``encoder = first_line`` (the
    line trigger is the encoder) and timestamps from ``line_rate_hz``.
    """
    return SynthStream(cfg, recording)


def ground_truth(cfg: SynthConfig, recording: str = "synthetic") -> dict[str, Any]:
    """The ground truth of ``cfg`` without rendering any lines."""
    return SynthStream(cfg, recording).truth


def write_recording(
    out_path: str | PathLike[str],
    cfg: SynthConfig,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Write ``out_path`` (.raw), ``<out_path>.gt.json`` and, with cfg.masks, the class masks
    ``<out_path>.gt-masks/hide-NNNN.png``.  Returns the ground truth dict.

    ``progress(lines_done, lines_total)`` is called after every block.
    """
    from ..recording import RecordingHeader, RecordingWriter

    out = Path(out_path)
    stream = SynthStream(cfg, out.name)
    header = RecordingHeader(
        width=cfg.width,
        channels=cfg.channels,
        dtype="uint8",
        line_rate_hz=float(cfg.line_rate_hz),
        mm_per_px=float(cfg.mm_per_px),
        mm_per_line=float(cfg.mm_per_line),
        pixel_format="RGB8" if cfg.channels == 3 else "Mono8",
        camera={"vendor": "edge-inspector", "model": "synthetic", "serial": f"seed-{cfg.seed}"},
        station="synthetic",
        created=cfg.created,
        extra={"synthetic": {"generator": "edge_inspector.synth", "seed": int(cfg.seed),
                             "hides": int(cfg.hides), "truth": out.name + ".gt.json"}},
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    done = 0
    with RecordingWriter(out, header) as w:
        for block in stream:
            w.write(block)
            done += block.n_lines
            if progress is not None:
                progress(done, stream.n_lines)
    write_truth(out, stream.truth, stream.class_masks() if cfg.masks else None)
    return stream.truth
