"""Camera pixel formats -> pipeline lines: (n_lines, width, channels) uint8 or uint16.

Each supported GenICam ``PixelFormat`` has a ``PixelLayout``: how many samples per pixel the
buffer holds, what the pipeline gets (channels, dtype), and ``convert``, which writes one buffer
into a preallocated destination without allocating on the way (except Bayer demosaicing).

Mono10/Mono12/Mono16 are the unpacked formats (one uint16 per pixel, value range 0..1023,
0..4095, 0..65535); ``hide_detection.belt_level`` is in the same units. Bayer formats are
demosaiced per buffer by OpenCV (bilinear): the first and last line of each buffer see their
neighbours through border replication, so keep ``lines_per_buffer`` even (the mosaic phase).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from .errors import CameraError

Convert = Callable[[np.ndarray, np.ndarray], None]
"""convert(src, dst): src is the buffer as (n_lines, width, samples_per_pixel); dst (n_lines, width, channels)."""


def _copy(src: np.ndarray, dst: np.ndarray) -> None:
    np.copyto(dst, src)


def _bgr_to_rgb(src: np.ndarray, dst: np.ndarray) -> None:
    np.copyto(dst, src[:, :, ::-1])


def _drop_alpha(src: np.ndarray, dst: np.ndarray) -> None:
    np.copyto(dst, src[:, :, :3])


def _demosaic(code: int) -> Convert:
    def convert(src: np.ndarray, dst: np.ndarray) -> None:
        cv2.cvtColor(src[:, :, 0], code, dst=dst)

    return convert


@dataclass(frozen=True, slots=True)
class PixelLayout:
    """What one GenICam pixel format looks like in a buffer and in the pipeline."""

    name: str
    samples_per_pixel: int  # in the camera buffer
    channels: int  # in the pipeline (LineBlock.lines.shape[2])
    dtype: str  # "uint8" or "uint16", in both
    convert: Convert
    lines_format: str  # GenICam name of what the pipeline gets (and a recording stores)


# OpenCV names Bayer patterns after the second row: GenICam BayerRG8 (R G / G B) is COLOR_BayerBG2RGB.
_LAYOUTS = [
    PixelLayout("Mono8", 1, 1, "uint8", _copy, "Mono8"),
    PixelLayout("Mono10", 1, 1, "uint16", _copy, "Mono10"),
    PixelLayout("Mono12", 1, 1, "uint16", _copy, "Mono12"),
    PixelLayout("Mono16", 1, 1, "uint16", _copy, "Mono16"),
    PixelLayout("RGB8", 3, 3, "uint8", _copy, "RGB8"),
    PixelLayout("BGR8", 3, 3, "uint8", _bgr_to_rgb, "RGB8"),
    PixelLayout("RGBa8", 4, 3, "uint8", _drop_alpha, "RGB8"),
    PixelLayout("BayerRG8", 1, 3, "uint8", _demosaic(cv2.COLOR_BayerBG2RGB), "RGB8"),
    PixelLayout("BayerGR8", 1, 3, "uint8", _demosaic(cv2.COLOR_BayerGB2RGB), "RGB8"),
    PixelLayout("BayerGB8", 1, 3, "uint8", _demosaic(cv2.COLOR_BayerGR2RGB), "RGB8"),
    PixelLayout("BayerBG8", 1, 3, "uint8", _demosaic(cv2.COLOR_BayerRG2RGB), "RGB8"),
]
LAYOUTS: dict[str, PixelLayout] = {p.name: p for p in _LAYOUTS}
"""Supported pixel formats by GenICam name."""


def layout_for(pixel_format: str, *, channels: int, dtype: str) -> PixelLayout:
    """The layout of ``pixel_format``; CameraError when the pipeline cannot take it as ``[camera]`` says."""
    p = LAYOUTS.get(pixel_format)
    if p is None:
        raise CameraError(
            f"pixel format {pixel_format!r} is not supported; supported: {', '.join(LAYOUTS)}",
            where="camera.pixel_format",
        )
    if (p.channels, p.dtype) != (channels, dtype):
        raise CameraError(
            f"pixel format {pixel_format} gives {p.channels} channel(s) of {p.dtype}, but [camera] says"
            f" channels = {channels}, dtype = {dtype!r}",
            where="camera.channels / camera.dtype",
            hint=f"set channels = {p.channels} and dtype = {p.dtype!r}, or choose another pixel format",
        )
    return p


def buffer_lines(flat: np.ndarray, n_lines: int, width: int, samples_per_pixel: int) -> np.ndarray:
    """(n_lines, width, samples) view of a buffer's flat samples; skips row padding when present."""
    row = width * samples_per_pixel
    stride = flat.size // n_lines if n_lines else row
    if stride < row:
        raise CameraError(
            f"buffer holds {flat.size} samples, too few for {n_lines} lines x {width} px x {samples_per_pixel}"
        )
    return flat[: n_lines * stride].reshape(n_lines, stride)[:, :row].reshape(n_lines, width, samples_per_pixel)
