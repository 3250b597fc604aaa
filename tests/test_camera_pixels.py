"""Pixel formats -> pipeline lines: conversions, Bayer pattern naming, padded rows, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from edge_inspector.camera import CameraError
from edge_inspector.camera.pixels import LAYOUTS, buffer_lines, layout_for

RGB = (200, 100, 30)


def _convert(name: str, src: np.ndarray) -> np.ndarray:
    p = LAYOUTS[name]
    dst = np.zeros(src.shape[:2] + (p.channels,), p.dtype)
    p.convert(src, dst)
    return dst


def test_colour_formats_become_rgb():
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[..., :3] = RGB
    rgba[..., 3] = 255
    assert (_convert("RGBa8", rgba) == RGB).all()
    bgr = np.broadcast_to(np.array(RGB[::-1], np.uint8), (4, 6, 3)).copy()
    assert (_convert("BGR8", bgr) == RGB).all()


def test_mono12_keeps_its_values_as_uint16():
    src = np.arange(24, dtype=np.uint16).reshape(4, 6, 1) * 170  # up to 3910 < 4096
    out = _convert("Mono12", src)
    assert out.dtype == np.uint16 and (out == src).all()


@pytest.mark.parametrize("name, pattern", [
    ("BayerRG8", ("R", "G", "G", "B")),
    ("BayerGR8", ("G", "R", "B", "G")),
    ("BayerGB8", ("G", "B", "R", "G")),
    ("BayerBG8", ("B", "G", "G", "R")),
])
def test_bayer_patterns_demosaic_to_the_right_colour(name, pattern):
    """A flat colour seen through the GenICam mosaic (row 0: pattern[0:2], row 1: pattern[2:4])."""
    ch = {"R": 0, "G": 1, "B": 2}
    mosaic = np.zeros((8, 8), np.uint8)
    for i, c in enumerate(pattern):
        mosaic[i // 2 :: 2, i % 2 :: 2] = RGB[ch[c]]
    out = _convert(name, mosaic[:, :, None])
    assert out[2:-2, 2:-2].tolist() == np.full((4, 4, 3), RGB).tolist()


def test_padded_rows_are_skipped():
    lines = np.arange(3 * 5, dtype=np.uint8).reshape(3, 5)
    padded = np.concatenate([lines, np.full((3, 3), 99, np.uint8)], axis=1).ravel()
    assert (buffer_lines(padded, 3, 5, 1)[:, :, 0] == lines).all()


def test_unsupported_format_and_wrong_camera_section_name_the_fix():
    with pytest.raises(CameraError) as e:
        layout_for("YUV422_8", channels=3, dtype="uint8")
    assert "YUV422_8" in str(e.value) and "Mono8" in str(e.value) and "BayerRG8" in str(e.value)
    with pytest.raises(CameraError) as e:
        layout_for("Mono8", channels=3, dtype="uint8")
    assert "channels = 1" in str(e.value) and "camera.channels" in str(e.value)
