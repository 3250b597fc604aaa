"""LineBlock: the unit every line source (camera, recording, synthetic) produces."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_WIDTH = 65536
"""Most pixels per line any source, recording or station may have: twice the widest line-scan
sensors sold (32K). A larger width in a file header is corruption, not a camera."""


@dataclass(slots=True)
class LineBlock:
    """Consecutive camera lines.

    lines: (n_lines, width, channels) uint8 or uint16; may be a view into a memmap.
    first_line: global line index of lines[0], monotonic since acquisition start.
    encoder: encoder position at the first line, when known.
    timestamp_ns: capture time of the first line.
    lost_before: lines known to be missing right before this block (frame-id or file gaps);
        ``first_line`` already counts them, so ``first_line - lost_before`` is where the gap starts.
    """

    lines: np.ndarray
    first_line: int
    encoder: int | None = None
    timestamp_ns: int = 0
    lost_before: int = 0

    @property
    def n_lines(self) -> int:
        return int(self.lines.shape[0])

    @property
    def end_line(self) -> int:
        """One past the last line of the block."""
        return self.first_line + int(self.lines.shape[0])
