"""What the synthetic generator draws: ``SynthConfig`` (camera, belt, hides, defects)."""

from __future__ import annotations

from dataclasses import dataclass

RENDER_LINES = 512
"""Lines rendered at a time; chunks are aligned to multiples of this global line index."""


RGB_BELT_LEVEL = (38.0, 40.0, 42.0)


@dataclass(slots=True)
class SynthConfig:
    """What to generate.  Sizes in mm are true sizes on the belt.

    hides: number of hides; seed: everything random follows from it.
    width, channels (3 = RGB, 1 = mono), mm_per_px (across), mm_per_line (along), line_rate_hz:
    the camera.  block_lines: lines per LineBlock.  defects_per_hide: (min, max) inclusive.
    masks: also write per-hide class-index PNGs.  belt_level: belt grey per channel (one value
    or one per channel), as in the station's hide_detection.belt_level.
    hide_length_mm / hide_width_mm: (min, max) along / across; across is clipped to the belt
    with ``margin_mm`` on both sides.  gap_lines: (min, max) belt lines before, between and after
    hides.  falloff: illumination loss at the line ends (0.2 = 20 % darker at the edges).
    hide_min_contrast: every hide pixel's channel mean stays this far above the belt level.
    created: the header's creation time (fixed so that recordings are bit-identical).
    """

    hides: int = 3
    seed: int = 0
    width: int = 8192
    channels: int = 3
    mm_per_px: float = 0.37
    mm_per_line: float = 0.37
    line_rate_hz: float = 2700.0
    block_lines: int = 512
    defects_per_hide: tuple[int, int] = (3, 12)
    masks: bool = False
    belt_level: tuple[float, ...] = RGB_BELT_LEVEL
    hide_length_mm: tuple[float, float] = (1600.0, 2600.0)
    hide_width_mm: tuple[float, float] = (1500.0, 2800.0)
    gap_lines: tuple[int, int] = (300, 900)
    margin_mm: float = 40.0
    falloff: float = 0.2
    hide_min_contrast: float = 46.0
    created: str = "2000-01-01T00:00:00.000+00:00"

    def __post_init__(self) -> None:
        # A mono recording gets one belt grey (the mean of the RGB default) unless one is given.
        if self.channels == 1 and tuple(self.belt_level) == RGB_BELT_LEVEL:
            self.belt_level = (sum(RGB_BELT_LEVEL) / len(RGB_BELT_LEVEL),)

    def problems(self) -> list[str]:
        out = []
        if self.hides < 0:
            out.append(f"hides: {self.hides} must be >= 0")
        if self.channels not in (1, 3):
            out.append(f"channels: {self.channels} must be 1 or 3")
        if self.width < 64:
            out.append(f"width: {self.width} px is too narrow (>= 64)")
        if self.mm_per_px <= 0 or self.mm_per_line <= 0:
            out.append("mm_per_px and mm_per_line must be > 0")
        if self.block_lines <= 0:
            out.append(f"block_lines: {self.block_lines} must be > 0")
        lo, hi = self.defects_per_hide
        if not 0 <= lo <= hi:
            out.append(f"defects_per_hide: {self.defects_per_hide} must be (min, max), 0 <= min <= max")
        if len(self.belt_level) not in (1, self.channels):
            out.append(f"belt_level: {len(self.belt_level)} values for {self.channels} channels")
        if not 0 <= self.falloff < 0.6:
            out.append(f"falloff: {self.falloff} must be in [0, 0.6)")
        if self.gap_lines[0] < 1 or self.gap_lines[1] < self.gap_lines[0]:
            out.append(f"gap_lines: {self.gap_lines} must be (min, max) with min >= 1")
        belt_mm = self.width * self.mm_per_px - 2 * self.margin_mm
        if self.hides and belt_mm < 60:
            out.append(f"width: the belt ({self.width} px) leaves {belt_mm:.0f} mm for hides; need >= 60 mm")
        return out
