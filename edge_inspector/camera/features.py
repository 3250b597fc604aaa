"""Camera settings: the station file's GenICam section written to the device's node map.

``planned_settings`` turns a station into an ordered list of node writes; ``apply_settings``
writes them, reads back what the camera accepted, and stops at the first value the camera
rejects with a CameraError naming the node, the value and what the node allows (min/max/inc or
the enumeration entries). A node the camera lacks is a warning, or an error when it is listed in
``source.genicam.required`` (Width, Height and PixelFormat are always required).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import structlog
from genicam import genapi

from ..config import FeatureValue, Station
from .errors import CameraError

log = structlog.get_logger(__name__)

ALWAYS_REQUIRED = ("Width", "Height", "PixelFormat")


@dataclass(frozen=True, slots=True)
class Setting:
    """One node write: ``node = value``, from station field ``field``."""

    node: str
    value: FeatureValue
    field: str


def planned_settings(station: Station, rate_node: str | None, rate_switch: bool = False) -> list[Setting]:
    """Node writes for ``station`` in the order they are applied.

    ``rate_node`` is the node that carries the line rate (see ``rate_node_for``): on
    AcquisitionFrameRate the configured line rate becomes a frame rate of line_rate / lines per buffer.
    ``rate_switch``: the camera has ``<rate_node>Enable`` (e.g. AcquisitionLineRateEnable), set to
    true first, as cameras ignore or refuse the rate without it.
    """
    cam, g = station.camera, station.source.genicam
    out = [
        Setting("Width", cam.width, "camera.width"),
        Setting("Height", g.lines_per_buffer, "source.genicam.lines_per_buffer"),
        Setting("PixelFormat", cam.pixel_format, "camera.pixel_format"),
    ]
    if rate_node is not None and rate_switch:
        out.append(Setting(f"{rate_node}Enable", True, "source.genicam.rate_node"))
    if rate_node == "AcquisitionLineRate":
        out.append(Setting(rate_node, cam.line_rate_hz, "camera.line_rate_hz"))
    elif rate_node == "AcquisitionFrameRate":
        out.append(Setting(rate_node, cam.line_rate_hz / g.lines_per_buffer,
                           "camera.line_rate_hz / source.genicam.lines_per_buffer"))
    for i, t in enumerate(g.trigger):
        f = f"source.genicam.trigger[{i}]"
        out += [Setting("TriggerSelector", t.selector, f"{f}.selector"), Setting("TriggerMode", t.mode, f"{f}.mode")]
        if t.source is not None:
            out.append(Setting("TriggerSource", t.source, f"{f}.source"))
        if t.activation is not None:
            out.append(Setting("TriggerActivation", t.activation, f"{f}.activation"))
    if g.encoder is not None:
        names = {"selector": "EncoderSelector", "source_a": "EncoderSourceA", "source_b": "EncoderSourceB",
                 "mode": "EncoderMode", "divider": "EncoderDivider", "output_mode": "EncoderOutputMode"}
        for key, node in names.items():
            v = getattr(g.encoder, key)
            if v is not None:
                out.append(Setting(node, v, f"source.genicam.encoder.{key}"))
    out += [Setting(k, v, f"source.genicam.flat_field.{k}") for k, v in g.flat_field.items()]
    out += [Setting(k, v, f"source.genicam.features.{k}") for k, v in g.features.items()]
    return out


def rate_node_for(node_map: Any, station: Station) -> str | None:
    """The node that will carry the line rate, or None (``rate_node = "none"`` or the camera has neither)."""
    choice = station.source.genicam.rate_node
    if choice == "none":
        return None
    if choice != "auto":
        return choice
    for name in ("AcquisitionLineRate", "AcquisitionFrameRate"):
        if find_node(node_map, name) is not None:
            return name
    log.warning("camera has neither AcquisitionLineRate nor AcquisitionFrameRate; line rate left as it is")
    return None


def find_node(node_map: Any, name: str) -> Any | None:
    """The node ``name``, or None when the camera does not implement it or it is not available now."""
    try:
        node = node_map.get_node(name)
    except genapi.LogicalErrorException:
        return None
    if node.get_access_mode() in (genapi.EAccessMode.NI, genapi.EAccessMode.NA):
        return None
    return node


def allowed_values(node: Any) -> str:
    """What a node accepts, read from the node: range and increment, or enumeration entries."""
    try:
        if isinstance(node, genapi.IEnumeration):
            return "one of " + ", ".join(node.symbolics)
        if isinstance(node, genapi.IInteger):
            return f"an integer in {node.min}..{node.max}" + (f" in steps of {node.inc}" if node.inc != 1 else "")
        if isinstance(node, genapi.IFloat):
            unit = f" {node.unit}" if getattr(node, "unit", "") else ""
            inc = f" in steps of {node.inc:g}" if node.has_inc() else ""
            return f"a number in {node.min:g}..{node.max:g}{unit}{inc}"
        if isinstance(node, genapi.IBoolean):
            return "true or false"
        if isinstance(node, genapi.ICommand):
            return "true (execute the command)"
        if isinstance(node, genapi.IString):
            return "a string"
    except genapi.GenericException as e:
        return f"unknown ({e})"
    return f"a {type(node).__name__} node, which cannot be set from a station file"


def read_value(node: Any) -> FeatureValue:
    """The node's current value as a station-file value (enumerations as their entry name)."""
    if isinstance(node, genapi.ICommand):
        return True
    if isinstance(node, genapi.IEnumeration):
        return str(node.value)
    return node.value


def _write(node: Any, value: FeatureValue) -> None:
    if isinstance(node, genapi.ICommand):
        if value is not True:
            raise ValueError("a command node takes true")
        node.execute()
    elif isinstance(node, genapi.IInteger):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("not an integer")
        node.value = value
    elif isinstance(node, genapi.IFloat):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("not a number")
        node.value = float(value)
    elif isinstance(node, genapi.IBoolean):
        if not isinstance(value, bool):
            raise ValueError("not true/false")
        node.value = value
    elif isinstance(node, genapi.IEnumeration | genapi.IString):
        if not isinstance(value, str):
            raise ValueError("not a string")
        node.value = value
    else:
        raise ValueError("not settable")


def apply_settings(node_map: Any, settings: list[Setting], required: list[str]) -> dict[str, FeatureValue]:
    """Write ``settings`` in order; return the values the camera has afterwards, by node name
    (``Node[selector value]`` for a node behind a selector, e.g. ``TriggerMode[LineStart]``).

    CameraError for a missing required node (all of them at once) or a rejected value (the first).
    """
    must = set(ALWAYS_REQUIRED) | set(required)
    missing = sorted({s.node for s in settings if s.node in must and find_node(node_map, s.node) is None}
                     | {r for r in required if find_node(node_map, r) is None})
    if missing:
        raise CameraError(
            f"the camera lacks required feature(s) {', '.join(missing)}",
            where="source.genicam.required",
            hint="check the node names in the camera's documentation, or remove them from required",
        )
    applied: dict[str, FeatureValue] = {}
    for s in settings:
        node = find_node(node_map, s.node)
        if node is None:
            log.warning("camera feature missing; setting skipped", node=s.node, value=s.value, field=s.field)
            continue
        try:
            if isinstance(node, genapi.ICommand) or read_value(node) != s.value:
                _write(node, s.value)
        except (genapi.GenericException, ValueError, TypeError) as e:
            mode = node.get_access_mode()
            why = (f"nothing, the node is read-only (its value is {read_value(node)!r})"
                   if mode == genapi.EAccessMode.RO else allowed_values(node))
            raise CameraError(
                f"{s.node} = {s.value!r} not accepted by the camera ({_short(e)}); allowed: {why}",
                where=s.field,
            ) from None
        key = _key(node_map, node, s.node)
        applied[key] = read_value(node)
        if not isinstance(node, genapi.ICommand) and not _same(applied[key], s.value):
            log.warning("camera adjusted a value", node=key, requested=s.value, applied=applied[key], field=s.field)
    return applied


def _key(node_map: Any, node: Any, name: str) -> str:
    """``name``, qualified by the values of the selectors it depends on: TriggerMode[LineStart]."""
    try:
        values = [str(read_value(node_map.get_node(sel.node.name))) for sel in node.node.selecting_features]
    except genapi.GenericException:  # a selector that cannot be read: the plain name
        return name
    return f"{name}[{','.join(values)}]" if values else name


def _same(a: FeatureValue, b: FeatureValue) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(b)))
    return a == b


def _short(e: Exception) -> str:
    """GenApi messages end with the exception name, C++ file and line; keep the part a user can read."""
    text = re.split(r" : \w+Exception thrown", str(e))[0].strip()
    return text or type(e).__name__
