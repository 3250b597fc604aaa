"""GenICamSource: a GenICam camera as an iterator of LineBlocks (docs/architecture.md sections 1 and 5).

::

    [ei-camera thread] poll the GenTL producer -> copy + convert the buffer's lines into a free
                       slot of a preallocated ring -> re-queue the buffer -> hand the slot on
    [consumer]         for block in source: ...   (block.lines is a view of its ring slot)

Loss policy: the acquisition thread never waits for the consumer. When every ring slot is taken
the buffer's lines are dropped (``ring_full_drops``). Global line index = frames since the start
x lines per buffer, counting frames that never arrived, so every missing line shows up as
``lost_before`` of the next delivered block: frame-id gaps (the producer ran out of buffers),
incomplete buffers, ring drops, short buffers, and the stretch a lost device was away
(estimated from the line rate x the time it was away; at least one buffer).

Device loss: a GenTL/harvesters error, a destroyed acquirer, a node read that fails after a
fetch timeout, or ``max_fetch_timeouts`` timeouts in a row. The source then destroys the
acquirer, re-reads the device list (``Harvester.update()``), opens the same device (same id and
serial), applies the settings again and restarts, pausing ``reconnect_backoff_s`` (doubling up to
``reconnect_backoff_max_s``) between attempts. After ``reconnect_retries`` failed attempts the
iterator raises CameraError once the blocks already acquired are consumed.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import structlog
from genicam import genapi, gentl
from harvesters.core import Buffer, Callback, ImageAcquirer

from ..config import FeatureValue, Station
from ..lines import LineBlock
from .errors import CameraError
from .features import apply_settings, find_node, planned_settings, rate_node_for, read_value
from .pixels import buffer_lines, layout_for
from .producer import DeviceIdentity, create_acquirer, list_devices, open_harvester, producer_path, select_device

log = structlog.get_logger(__name__)

POLL_S = 0.001
"""Pause between polls of an empty buffer queue. harvesters holds the GIL while it waits inside
the producer, so the source polls without waiting and sleeps in Python instead."""
_NO_WAIT_S = 1e-6  # try_fetch timeout: one poll of the producer's event queue


@dataclass
class AcquisitionStats:
    """Counters of a GenICamSource; every lost line is counted in ``lost_lines``."""

    frames: int = 0  # buffers fetched from the producer
    lines: int = 0  # lines handed to the consumer
    lost_lines: int = 0  # lines known to be missing (line index of the next buffer - lines)
    frame_id_gaps: int = 0  # buffers missing by frame id (the producer had no free buffer)
    incomplete: int = 0  # buffers the producer delivered incomplete or short
    ring_full_drops: int = 0  # buffers dropped because the consumer was behind
    reconnects: int = 0  # times the device was lost and opened again
    fetch_timeouts: int = 0  # fetch_timeout_s stretches without a buffer

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(slots=True)
class _Filled:
    slot: int
    n_lines: int
    first_line: int
    timestamp_ns: int
    lost_before: int


class _DeviceLost(Exception):
    """The acquirer cannot deliver any more; the reason is the message."""


class _CountIncomplete(Callback):
    """harvesters re-queues incomplete buffers itself and tells us through this callback."""

    def __init__(self, stats: AcquisitionStats) -> None:
        self.stats = stats

    def emit(self, context: object | None = None) -> None:
        self.stats.incomplete += 1


_END = _Filled(-1, 0, 0, 0, 0)


class GenICamSource:
    """Lines from the camera of ``station.source.genicam``: ``for block in GenICamSource(station)``.

    Opening configures the camera and starts streaming; CameraError when the producer, the device
    or a setting cannot be used. A yielded block's ``lines`` stay valid until the next block is
    requested (its ring slot is reused after that). ``stop()`` ends the stream after the blocks
    already acquired; ``close()`` also releases the camera. ``stop`` (an Event) may be shared with
    a signal handler.
    """

    def __init__(self, station: Station, *, stop: threading.Event | None = None) -> None:
        cam, g = station.camera, station.source.genicam
        if station.source.kind != "genicam":
            raise CameraError(f"source.kind is {station.source.kind!r}; live acquisition needs \"genicam\"",
                              where="source.kind", hint="see configs/stations/viky-sim.toml and docs/cameras.md")
        self.station = station
        self.layout = layout_for(cam.pixel_format, channels=cam.channels, dtype=cam.dtype)
        self.lines_per_buffer = g.lines_per_buffer
        self.producer = producer_path(station)
        self.stats = AcquisitionStats()
        self.applied: dict[str, FeatureValue] = {}
        """Node values the camera has after configuration (read back), in the order written."""
        self.line_rate_hz = cam.line_rate_hz
        """Line rate the camera was set to (read back), or the configured one when it is not set."""
        self._stop = stop or threading.Event()
        self._ring = np.zeros((g.ring_blocks, g.lines_per_buffer, cam.width, cam.channels), cam.dtype)
        self._free: queue.SimpleQueue[int] = queue.SimpleQueue()
        for i in range(g.ring_blocks):
            self._free.put(i)
        self._filled: queue.SimpleQueue[_Filled] = queue.SimpleQueue()
        self._held: int | None = None
        self._error: BaseException | None = None
        self._closed = False
        # line numbering (acquisition thread only)
        self._next_frame = 0
        self._delivered_end = 0
        self._last_frame_id: int | None = None
        self._outage_since: float | None = None
        self._last_buffer_t = time.monotonic()
        self._timeouts_in_row = 0
        self._h = open_harvester(self.producer)
        try:
            self.device: DeviceIdentity = select_device(list_devices(self._h, self.producer), g.device, self.producer)
            self._ia = self._connect()
        except BaseException:
            self._h.reset()
            raise
        log.info("camera streaming", **self.device.as_dict(), settings=self.applied, line_rate_hz=self.line_rate_hz)
        self._thread = threading.Thread(target=self._acquire, name="ei-camera", daemon=True)
        self._thread.start()

    # -- consumer side -------------------------------------------------------------------------

    def __iter__(self) -> GenICamSource:
        return self

    def __next__(self) -> LineBlock:
        if self._held is not None:
            self._free.put(self._held)
            self._held = None
        item = self._filled.get()
        if item is _END:
            self._filled.put(_END)  # every later call ends too
            if self._error is not None:
                raise self._error
            raise StopIteration
        self._held = item.slot
        lines = self._ring[item.slot, : item.n_lines]
        return LineBlock(lines, item.first_line, None, item.timestamp_ns, item.lost_before)

    @property
    def image_acquirer(self) -> ImageAcquirer:
        """The harvesters acquirer streaming now (a new one after each reconnect); for diagnostics."""
        return self._ia

    def stop(self) -> None:
        """Stop acquiring; the blocks already in the ring are still yielded, then the iterator ends."""
        self._stop.set()

    def close(self) -> None:
        """Stop, release the device and the producer. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._thread.join(timeout=10)
        self._destroy_acquirer()
        self._h.reset()

    def __enter__(self) -> GenICamSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- opening -------------------------------------------------------------------------------

    def _connect(self) -> ImageAcquirer:
        """Open the device, write the settings, check the geometry, start streaming."""
        st, g = self.station, self.station.source.genicam
        ia = create_acquirer(self._h, self.device)
        try:
            nm = ia.remote_device.node_map
            rate_node = rate_node_for(nm, st)
            rate_switch = rate_node is not None and find_node(nm, f"{rate_node}Enable") is not None
            self.applied = apply_settings(nm, planned_settings(st, rate_node, rate_switch), g.required)
            self._check_geometry(nm)
            if rate_node == "AcquisitionLineRate":
                self.line_rate_hz = float(read_value(find_node(nm, rate_node)))
            elif rate_node == "AcquisitionFrameRate":
                self.line_rate_hz = float(read_value(find_node(nm, rate_node))) * g.lines_per_buffer
            if g.num_buffers < ia.min_num_buffers:
                raise CameraError(f"num_buffers = {g.num_buffers}: the producer needs at least {ia.min_num_buffers}",
                                  where="source.genicam.num_buffers")
            ia.num_buffers = g.num_buffers
            ia.timeout_period_on_update_event_data_call = 0
            ia.add_callback(ImageAcquirer.Events.INCOMPLETE_BUFFER, _CountIncomplete(self.stats))
            ia.start()
        except (gentl.GenericException, genapi.GenericException) as e:
            ia.destroy()
            raise CameraError(f"cannot start streaming from {self.device.describe()}: {e}") from None
        except BaseException:
            ia.destroy()
            raise
        return ia

    def _check_geometry(self, node_map: Any) -> None:
        cam = self.station.camera
        got = tuple(read_value(find_node(node_map, name)) for name in ("Width", "Height", "PixelFormat"))
        want = (cam.width, self.lines_per_buffer, cam.pixel_format)
        if got != want:
            raise CameraError(
                f"the camera delivers Width {got[0]}, Height {got[1]}, PixelFormat {got[2]}; the station"
                f" needs {want[0]} px (camera.width), {want[1]} lines per buffer"
                f" (source.genicam.lines_per_buffer), {want[2]} (camera.pixel_format)",
                where="[camera]", hint="match the station file to what the camera can deliver",
            )

    def _destroy_acquirer(self) -> None:
        try:
            self._ia.destroy()
        except Exception as e:  # noqa: BLE001 - a lost device may fail to close; it is gone anyway
            log.debug("camera destroy failed", error=repr(e))

    # -- acquisition thread --------------------------------------------------------------------

    def _acquire(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    buffer = self._poll()
                    if buffer is None:
                        time.sleep(POLL_S)
                        continue
                    try:
                        self._take(buffer)
                    finally:
                        _requeue(buffer)  # back to the producer once the lines are copied out
                except _DeviceLost as e:
                    self._reconnect(str(e))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            self._error = e
        finally:
            self._filled.put(_END)

    def _poll(self) -> Buffer | None:
        """A filled buffer, or None; _DeviceLost when the device is gone."""
        ia = self._ia
        try:
            if not ia.is_valid():
                raise _DeviceLost("the image acquirer was destroyed")
            buffer = ia.try_fetch(timeout=_NO_WAIT_S)
        except _DeviceLost:
            raise
        except Exception as e:  # GenTL/GenApi errors, and harvesters internals of a dead acquirer
            raise _DeviceLost(f"{type(e).__name__}: {e}") from e
        now = time.monotonic()
        if buffer is not None:
            self._last_buffer_t = now
            self._timeouts_in_row = 0
            return buffer
        g = self.station.source.genicam
        if now - self._last_buffer_t >= g.fetch_timeout_s * (self._timeouts_in_row + 1):
            self._timeouts_in_row += 1
            self.stats.fetch_timeouts += 1
            waited = now - self._last_buffer_t
            log.info("camera fetch timeout", waited_s=round(waited, 2), in_row=self._timeouts_in_row)
            self._probe(ia)
            if g.max_fetch_timeouts and self._timeouts_in_row >= g.max_fetch_timeouts:
                raise _DeviceLost(f"no buffer for {waited:.1f} s ({self._timeouts_in_row} fetch timeouts)")
        return None

    @staticmethod
    def _probe(ia: ImageAcquirer) -> None:
        """Read Width from the device itself (not the cache): a device that does not answer is lost."""
        try:
            find_node(ia.remote_device.node_map, "Width").get_value(False, True)
        except Exception as e:  # noqa: BLE001 - any failure to talk to the device
            raise _DeviceLost(f"device does not answer ({type(e).__name__}: {e})") from e

    def _take(self, buffer: Buffer) -> None:
        """Number the buffer's lines and copy them into a free ring slot (or count them lost)."""
        lpb = self.lines_per_buffer
        self.stats.frames += 1
        frame_id = _frame_id(buffer)
        if self._outage_since is not None:
            period = lpb / self.line_rate_hz
            missed = max(1, round((time.monotonic() - self._outage_since) / period) - 1)
            self._next_frame += missed
            log.warning("camera lines missed while it was away (estimated)", lines=missed * lpb,
                        **self.device.as_dict())
            self._outage_since = None
        elif self._last_frame_id is not None and frame_id is not None:
            gap = frame_id - self._last_frame_id - 1
            if gap > 0:
                self.stats.frame_id_gaps += gap
                self._next_frame += gap
            elif gap < 0:
                log.warning("camera frame id went back; counting on", frame_id=frame_id, last=self._last_frame_id)
        self._last_frame_id = frame_id
        first_line = self._next_frame * lpb
        self._next_frame += 1
        try:
            self._deliver(buffer, first_line)
        finally:
            self.stats.lost_lines = self._next_frame * lpb - self.stats.lines

    def _deliver(self, buffer: Buffer, first_line: int) -> None:
        """Copy the buffer's lines into a free ring slot, or drop them when the ring is full."""
        comps = buffer.payload.components if buffer.payload is not None else []
        if not comps:
            self.stats.incomplete += 1
            return
        c, cam, lpb = comps[0], self.station.camera, self.lines_per_buffer
        if c.width != cam.width or c.data_format != cam.pixel_format:
            raise CameraError(
                f"the camera sent a {c.width} px {c.data_format} buffer; the station expects"
                f" {cam.width} px {cam.pixel_format}", where="[camera]",
            )
        n = min(int(c.height), lpb)
        if n < lpb:
            self.stats.incomplete += 1
        try:
            slot = self._free.get_nowait()
        except queue.Empty:
            self.stats.ring_full_drops += 1
            return
        self.layout.convert(buffer_lines(c.data, n, cam.width, self.layout.samples_per_pixel), self._ring[slot, :n])
        self._filled.put(_Filled(slot, n, first_line, time.time_ns(), first_line - self._delivered_end))
        self._delivered_end = first_line + n
        self.stats.lines += n

    def _reconnect(self, reason: str) -> None:
        """Re-open the lost device until it streams again; CameraError after reconnect_retries attempts."""
        g = self.station.source.genicam
        log.warning("camera lost", reason=reason, **self.device.as_dict(), frames=self.stats.frames)
        self._outage_since = self._last_buffer_t
        delay = g.reconnect_backoff_s
        attempt = 0
        while not self._stop.is_set():
            attempt += 1
            self._destroy_acquirer()
            try:
                self._h.update()
                self._ia = self._connect()
            except (CameraError, gentl.GenericException) as e:
                log.warning("camera reconnect failed", attempt=attempt, error=str(e), **self.device.as_dict())
                if g.reconnect_retries and attempt >= g.reconnect_retries:
                    raise CameraError(
                        f"camera {self.device.describe()} lost ({reason}) and not back after {attempt}"
                        f" reconnect attempt(s); last error: {e}",
                        where="source.genicam.device",
                        hint="check cable, power and network; source.genicam.reconnect_retries sets the attempts",
                    ) from None
                self._stop.wait(delay)
                delay = min(delay * 2, g.reconnect_backoff_max_s)
                continue
            self.stats.reconnects += 1
            self._last_frame_id = None
            self._last_buffer_t = time.monotonic()
            self._timeouts_in_row = 0
            log.warning("camera reconnected", attempt=attempt, **self.device.as_dict())
            return


def _requeue(buffer: Buffer) -> None:
    """Give the buffer back to the producer; _DeviceLost when the device went away meanwhile."""
    try:
        buffer.queue()
    except Exception as e:  # GenTL errors, and harvesters internals of a dead acquirer
        raise _DeviceLost(f"the buffer could not be re-queued ({type(e).__name__}: {e})") from e


def _frame_id(buffer: Buffer) -> int | None:
    """The producer's frame counter of the buffer, when it has one."""
    try:
        return int(buffer.module.frame_id)
    except gentl.GenericException:
        return None
