"""The camera checks: camera_stream (line rate, lost lines, frame gaps) and encoder (belt travel per line)."""

from __future__ import annotations

import threading
import time
from typing import Any

from ..config import Station
from .result import CheckResult, failed, passed, skipped
from .session import Session, Stream

RATE_TOLERANCE = 0.05  # measured line rate vs the one set
ENCODER_TOLERANCE = 0.02  # belt travel per line vs camera.mm_per_line
_CAMERA_GRACE_S = 10.0  # the stream is cut this long after the planned end, whatever the camera does


# -- a) camera, b) encoder --------------------------------------------------------------------


def encoder_triggered(st: Station) -> bool:
    """Lines come from the belt encoder: a LineStart trigger that is on, an encoder module, or no rate node."""
    g = st.source.genicam
    line_trigger = any(tr.selector == "LineStart" and tr.mode == "On" for tr in g.trigger)
    return line_trigger or g.encoder is not None or g.rate_node == "none"


def check_camera(t: Session, seconds: float) -> CheckResult:
    """Stream ``seconds`` from the station's camera; line rate, lost lines, frame-id gaps, reconnects."""
    from ..camera import CameraError, GenICamSource

    name = "camera_stream"
    st, link = t.station, t.link
    if st.source.kind != "genicam":
        return skipped(name, f"source.kind is {st.source.kind!r}: no camera; give --cti PATH or a genicam station")
    stop = threading.Event()
    cutoff = threading.Timer(seconds + _CAMERA_GRACE_S, stop.set)
    cutoff.daemon = True
    first: tuple[float, int, float | None] | None = None
    last = first
    try:
        with GenICamSource(st, stop=stop) as src:
            cutoff.start()
            for b in src:
                point = (time.monotonic(), b.end_line, link.belt_mm() if link is not None else None)
                first = first or point
                last = point
                if point[0] - first[0] >= seconds:
                    break
            stats, rate_set, device = src.stats.as_dict(), src.line_rate_hz, src.device.as_dict()
    except CameraError as e:
        return failed(name, str(e))
    finally:
        cutoff.cancel()
    values: dict[str, Any] = {"device": device, **stats, "line_rate_hz_set": rate_set,
                              "line_rate_hz_configured": st.camera.line_rate_hz}
    if first is None or last is None or last[0] - first[0] <= 0:
        return failed(name, f"fewer than two buffers in {seconds + _CAMERA_GRACE_S:g} s: the camera does not stream"
                     " (triggers without pulses? belt stopped?)", **values)
    t.stream = Stream(first, last)
    measured = (last[1] - first[1]) / (last[0] - first[0])
    err = measured / rate_set - 1.0
    values.update(seconds=round(last[0] - first[0], 2), lines_per_s=round(measured, 1), rate_error_pct=round(100 * err, 2))
    return _camera_verdict(st, values, err)


def _camera_verdict(st: Station, v: dict[str, Any], err: float) -> CheckResult:
    name = "camera_stream"
    bad = [f"{k.replace('_', ' ')} {v[k]}" for k in ("lost_lines", "frame_id_gaps", "incomplete", "ring_full_drops",
                                                      "reconnects") if v.get(k)]
    encoder = encoder_triggered(st)
    if not encoder and abs(err) > RATE_TOLERANCE:
        bad.append(f"{v['lines_per_s']:,.0f} lines/s measured, {v['line_rate_hz_set']:,.0f} set"
                   f" ({v['rate_error_pct']:+.1f} %, tolerance {100 * RATE_TOLERANCE:g} %)")
    text = f"{v['lines']:,} lines in {v['seconds']:g} s = {v['lines_per_s']:,.0f} lines/s"
    if bad:
        return failed(name, f"{text}: " + "; ".join(bad), **v)
    if encoder:
        return passed(name, f"{text} (encoder-triggered: the rate follows the belt, see encoder); no lost lines,"
                     " no frame gaps", **v)
    return passed(name, f"{text} ({v['line_rate_hz_set']:,.0f} set, {v['rate_error_pct']:+.1f} %); no lost lines,"
                 " no frame gaps", **v)


def check_encoder(t: Session) -> CheckResult:
    """Encoder-triggered lines: belt travel per camera line (PLC encoder) against camera.mm_per_line."""
    name = "encoder"
    st, link, stream = t.station, t.link, t.stream
    if not encoder_triggered(st):
        return skipped(name, "lines are free-running (no LineStart trigger on, no [source.genicam.encoder],"
                     f" rate_node = {st.source.genicam.rate_node!r}): nothing to compare with the belt")
    if t.plc is None:
        return skipped(name, "no PLC configured: the belt encoder position comes from the PLC (give --plc)")
    if link is None or stream is None:
        return failed(name, "not run: " + ("the PLC is not reachable" if link is None else "the camera did not stream"))
    (_, l0, b0), (_, l1, b1) = stream.first, stream.last
    if b0 is None or b1 is None or l1 <= l0:
        return failed(name, "no belt position or no lines to compare", lines=l1 - l0)
    belt = b1 - b0
    if abs(belt) < 1.0:
        return failed(name, "the belt did not move during the camera check: run again with the belt at production"
                     " speed", lines=l1 - l0, belt_mm=round(belt, 1))
    per_line = belt / (l1 - l0)
    err = per_line / st.camera.mm_per_line - 1.0
    values = {"lines": l1 - l0, "belt_mm": round(belt, 1), "mm_per_line_measured": round(per_line, 5),
              "mm_per_line_configured": st.camera.mm_per_line, "error_pct": round(100 * err, 2)}
    if abs(err) > ENCODER_TOLERANCE:
        return failed(name, f"{per_line:.4f} mm of belt per line, camera.mm_per_line = {st.camera.mm_per_line:g}"
                     f" ({100 * err:+.1f} %, tolerance {100 * ENCODER_TOLERANCE:g} %): check EncoderDivider,"
                     " the encoder resolution and camera.mm_per_line", **values)
    return passed(name, f"{per_line:.4f} mm of belt per line ({100 * err:+.2f} % from camera.mm_per_line)", **values)
