"""The input mapping: the camera's tiles -> what the model's input wants (docs/models.md).

Tiles reach the model as the stitcher holds them: (B, H, W, channels) of the camera's sample type
(``camera.dtype``: uint8, or uint16 for Mono10/12/16 and RGB16), with the flat-field correction
applied and nothing else. ``InputFeed.plan`` decides once, when the model is loaded for a
station, how each batch becomes the model's input, and refuses what cannot work with one line
naming the model file and the mismatch:

- **Channels**: as many as the model takes, as is; a 1-channel (mono) camera into a 3-channel
  model: the grey channel is repeated into all three (every built-in model takes 3); a model
  without a fixed channel count gets the camera's. A 3-channel camera into a 1-channel model,
  or any other count, is refused.
- **Sample type and bit depth**: ``bits`` = significant bits per sample, from the pixel format's
  name (``sample_bits``: Mono8/RGB8 8, Mono10 10, Mono12 12, Mono16/RGB16 16; the camera's
  ``camera.pixel_format`` live, the recording header's ``pixel_format`` in a replay), else the
  sample type's full width. A uint8 model gets ``value >> (bits - 8)`` (Mono12: >> 4, 16-bit:
  >> 8), clipped at 255 (a flat-field gain may lift a 12-bit value above 4095); a float model
  gets ``value / (2**bits - 1)`` (0..1 for every depth, no precision lost); a uint16 model takes
  uint16 samples as they are. Other input types (int8, int64, ...) are refused.
- **Layout**: NCHW models get the batch transposed.

The stitcher's flat-field correction and hide detection (``hide_detection.belt_level``,
``threshold``) work on the raw samples, before this mapping: their numbers are in the camera's
units (0..4095 for Mono12).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ModelError

MODEL_DTYPES = ("uint8", "uint16", "float16", "float32", "float64")
CAMERA_DTYPES = {"uint8": 8, "uint16": 16}  # sample type -> its width in bits


def stated_bits(pixel_format: str, dtype: str) -> int | None:
    """The bits per sample the pixel format's name states (Mono12 -> 12, RGB16 -> 16, BayerRG8 -> 8)
    when they fit the sample type ``dtype`` (8 for uint8, 9..16 for uint16); else None."""
    m = re.fullmatch(r"[A-Za-z]+?(\d+)", pixel_format or "")
    if m:
        n, full = int(m.group(1)), CAMERA_DTYPES[dtype]
        if (full == 8 and n == 8) or (full == 16 and 9 <= n <= 16):
            return n
    return None


def sample_bits(pixel_format: str, dtype: str) -> int:
    """Significant bits per sample: ``stated_bits``, else the full width of ``dtype`` (8 or 16)."""
    return stated_bits(pixel_format, dtype) or CAMERA_DTYPES[dtype]


@dataclass(frozen=True, slots=True)
class InputFeed:
    """How one camera batch becomes the model's input (see the module docstring)."""

    camera_channels: int
    camera_dtype: str  # "uint8" | "uint16"
    bits: int  # significant bits per camera sample
    model_channels: int  # what the model is fed
    model_dtype: str
    layout: str  # "NHWC" | "NCHW"

    @classmethod
    def plan(cls, *, model_channels: int | None, model_dtype: str, layout: str, channels: int,
             dtype: str, bits: int | None = None, path: str | Path | None = None,
             where: str = "camera.channels") -> "InputFeed":
        """The mapping from ``channels`` x ``dtype`` (``bits`` significant) samples to a model input
        of ``model_channels`` x ``model_dtype``; ModelError (naming ``path``) when there is none."""
        if dtype not in CAMERA_DTYPES:
            raise ModelError(f"camera samples of type {dtype!r} cannot be fed to a model (uint8 or uint16)",
                             path=path, where="camera.dtype")
        bits = bits or CAMERA_DTYPES[dtype]
        if model_dtype not in MODEL_DTYPES:
            raise ModelError(f"model input type {model_dtype} is not supported (one of {', '.join(MODEL_DTYPES)})",
                             path=path, where="edge_inspector.input dtype")
        if model_dtype == "uint16" and dtype != "uint16":
            raise ModelError("the model takes uint16 samples, the camera gives uint8", path=path,
                             where="camera.dtype", hint="use a uint8 or float model")
        fed = model_channels or channels
        if fed != channels and not (channels == 1 and fed == 3):
            raise ModelError(
                f"the model takes {fed} channel(s), the camera gives {channels}"
                + (" (a colour camera cannot feed a mono model)" if channels == 3 and fed == 1 else ""),
                path=path, where=where,
                hint=f"use a {channels}-channel model, or a camera with camera.channels = {fed}",
            )
        return cls(channels, dtype, bits, fed, model_dtype, layout)

    def describe(self) -> str:
        """One line for the log: what the mapping does."""
        steps = []
        if self.camera_channels != self.model_channels:
            steps.append(f"grey repeated into {self.model_channels} channels")
        if self.model_dtype == "uint8" and self.camera_dtype != "uint8":
            steps.append(f"{self.bits}-bit >> {self.bits - 8} to uint8")
        elif self.model_dtype.startswith("float"):
            steps.append(f"/ {2 ** self.bits - 1} to {self.model_dtype}")
        if self.layout == "NCHW":
            steps.append("NHWC -> NCHW")
        return (f"{self.camera_channels} x {self.camera_dtype} ({self.bits} bits) -> {self.model_channels} x"
                f" {self.model_dtype} {self.layout}: " + (", ".join(steps) or "as is"))

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        """The model input for a (B, H, W, C) camera batch (contiguous; the batch itself when
        nothing changes)."""
        if tiles.shape[-1] != self.camera_channels or tiles.dtype != np.dtype(self.camera_dtype):
            raise ValueError(f"the model is set up for {self.camera_channels}-channel {self.camera_dtype} tiles,"
                             f" got {tiles.shape[-1]}-channel {tiles.dtype}")
        x = tiles
        if self.model_dtype == "uint8" and x.dtype != np.uint8:
            x = np.minimum(x >> np.uint16(self.bits - 8), np.uint16(255)).astype(np.uint8)
        elif self.model_dtype.startswith("float"):
            x = x.astype(np.float32) * np.float32(1 / (2 ** self.bits - 1))  # float16 ends at 65504
            if self.model_dtype != "float32":
                x = x.astype(self.model_dtype)
        if self.model_channels != self.camera_channels:  # mono -> 3 channels
            x = np.repeat(x, self.model_channels, axis=3)
        if self.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        return x if x.flags.c_contiguous else np.ascontiguousarray(x)


RESIZE_MODES = ("none", "letterbox", "stretch")
LETTERBOX_GREY = 114  # ultralytics' letterbox padding (8-bit units)


@dataclass(frozen=True, slots=True)
class Resize:
    """A tile brought to a detection model's fixed input size, and its boxes back to tile px.

    ``letterbox`` (ultralytics' own preprocessing): scaled by r = min(in_h / tile_h, in_w / tile_w),
    keeping the aspect, centred, the rest grey (114 in 8-bit units, ``grey``); ``stretch``: each
    axis scaled to the input. Bilinear (cv2.INTER_LINEAR, as ultralytics) on the camera samples,
    before the input mapping (``InputFeed``). Boxes: x_tile = (x_input - left) / r.
    """

    mode: str  # "letterbox" | "stretch"
    tile_hw: tuple[int, int]
    input_hw: tuple[int, int]
    grey: int = LETTERBOX_GREY  # padding in camera units (114 scaled to the camera's bit depth)

    @classmethod
    def plan(cls, mode: str, tile_hw: tuple[int, int], input_hw: tuple[int, int], bits: int = 8) -> "Resize":
        return cls(mode, tuple(tile_hw), tuple(input_hw),  # type: ignore[arg-type]
                   round(LETTERBOX_GREY * (2 ** bits - 1) / 255))

    def geometry(self) -> tuple[float, float, int, int, int, int]:
        """(scale x, scale y, left, top, scaled w, scaled h): input px per tile px, and where the tile lies."""
        (th, tw), (ih, iw) = self.tile_hw, self.input_hw
        if self.mode == "stretch":
            return iw / tw, ih / th, 0, 0, iw, ih
        r = min(ih / th, iw / tw)
        nw, nh = round(tw * r), round(th * r)
        return r, r, round((iw - nw) / 2 - 0.1), round((ih - nh) / 2 - 0.1), nw, nh

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        """(B, tile_h, tile_w, C) camera samples -> (B, in_h, in_w, C), same type."""
        import cv2

        _, _, left, top, nw, nh = self.geometry()
        (ih, iw), c = self.input_hw, tiles.shape[-1]
        out = np.full((len(tiles), ih, iw, c), self.grey, tiles.dtype)
        for o, t in zip(out, tiles):
            o[top : top + nh, left : left + nw] = cv2.resize(t, (nw, nh), interpolation=cv2.INTER_LINEAR
                                                             ).reshape(nh, nw, c)
        return out

    def to_tile(self, xyxy: np.ndarray) -> np.ndarray:
        """(k, 4) x0 y0 x1 y1 in input px -> tile px."""
        sx, sy, left, top, _, _ = self.geometry()
        return ((xyxy - np.array([left, top, left, top], np.float32))
                / np.array([sx, sy, sx, sy], np.float32)).astype(np.float32)

    def describe(self) -> str:
        (th, tw), (ih, iw) = self.tile_hw, self.input_hw
        return f"{self.mode} {tw}x{th} -> {iw}x{ih}"
