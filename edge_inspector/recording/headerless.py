"""Headerless raw dumps from camera tools: the geometry needed to read them as a recording."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import RecordingError
from .format import RecordingHeader, _dtype_name, _is_int

@dataclass(frozen=True, slots=True)
class HeaderlessGeometry:
    """How to read a raw dump without a file header: consecutive lines, nothing else.

    Lines are numbered from 0; blocks are ``block_lines`` lines long (the last may be shorter).
    """

    width: int
    channels: int
    dtype: str
    block_lines: int = 512
    mm_per_px: float = 0.37
    mm_per_line: float = 0.37
    line_rate_hz: float = 0.0

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "dtype", _dtype_name(self.dtype))
        except (TypeError, ValueError):
            raise RecordingError(
                f'headerless dtype must be "uint8" or "uint16", got {self.dtype!r}',
                where="--dtype",
            ) from None
        if not _is_int(self.block_lines) or self.block_lines <= 0:
            raise RecordingError(
                f"block_lines must be a positive integer, got {self.block_lines!r}"
            )

    def to_header(self, created: str = "") -> RecordingHeader:
        """The RecordingHeader this geometry stands for (``extra`` marks it headerless)."""
        try:
            return RecordingHeader(
                width=self.width, channels=self.channels, dtype=self.dtype,
                line_rate_hz=self.line_rate_hz, mm_per_px=self.mm_per_px,
                mm_per_line=self.mm_per_line, created=created, extra={"headerless": True},
            )
        except RecordingError as exc:
            raise RecordingError(exc.message, where=f"headerless geometry: {exc.where}") from None
