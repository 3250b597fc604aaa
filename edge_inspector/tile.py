"""Tiling geometry: which camera lines and columns make up each 2048x2048 tile.

Tiles overlap their neighbours by ``overlap`` px in both directions. Columns start every
``tile - overlap`` px; the last column is aligned to the right image edge. Strips (rows of
tiles) start every ``tile - overlap`` lines from the first line of the stream.
"""

from __future__ import annotations

from dataclasses import dataclass


def column_starts(width: int, tile: int, overlap: int) -> list[int]:
    """x0 of every tile column across a line of ``width`` px (last one right-aligned)."""
    if tile > width:
        raise ValueError(f"tile {tile} wider than the line ({width} px)")
    if overlap >= tile:
        raise ValueError(f"overlap {overlap} must be smaller than the tile ({tile})")
    step = tile - overlap
    xs = list(range(0, width - tile + 1, step))
    if xs[-1] != width - tile:
        xs.append(width - tile)
    return xs


@dataclass(frozen=True, slots=True)
class TileGrid:
    width: int
    tile: int
    overlap: int
    origin_line: int = 0  # first line of strip 0

    @property
    def step(self) -> int:
        return self.tile - self.overlap

    @property
    def x0s(self) -> list[int]:
        return column_starts(self.width, self.tile, self.overlap)

    def strip_start(self, k: int) -> int:
        return self.origin_line + k * self.step

    def strip_end(self, k: int) -> int:
        return self.strip_start(k) + self.tile

    def strips_touching(self, a: int, b: int) -> range:
        """Strips k whose line range [start, start + tile) intersects lines [a, b)."""
        if b <= a:
            return range(0)
        rel_a, rel_b = a - self.origin_line, b - 1 - self.origin_line
        k0 = max(0, -(-(rel_a - self.tile + 1) // self.step))  # ceil((rel_a - tile + 1) / step)
        k1 = rel_b // self.step
        return range(k0, k1 + 1) if k1 >= k0 else range(0)
