"""The station pipeline: source -> stitcher -> inference -> assembler -> results.

Threads and queues (ARCHITECTURE.md section 1):

    [source + stitcher thread] --q_tiles--> [inference thread] --q_dets--> [assembler: caller]

The stitcher writes tiles into a ring of preallocated strip slots; only slot numbers and small
messages travel through the queues. Inference releases a slot as soon as the model has read
it. The queues are bounded; the ring bounds the pixels in flight. In replay (``live=False``)
the stitcher waits for a free slot (lossless); live it drops strips and reports them.
"""

from __future__ import annotations

import queue
import resource
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import structlog

from .assemble import Assembler, Hooks, StripDetections
from .belt import BeltGeometry
from .config import Station
from .detections import Detections
from .hide import Hide
from .lines import LineBlock
from .probe import Probe
from .stitch import Stitcher, Strip, TileRing
from .tile import TileGrid

log = structlog.get_logger(__name__)

_END = object()


class TileModel(Protocol):
    class_names: list[str]
    provider: str

    def infer(self, tiles: np.ndarray) -> list[Detections]: ...


@dataclass
class RunStats:
    lines: int = 0
    lines_lost: int = 0
    strips: int = 0
    strips_dropped: int = 0
    tiles: int = 0
    hides: int = 0
    defects_by_class: dict[str, int] = field(default_factory=dict)
    defects_off_hide: int = 0
    detections_in_lost_lines: int = 0
    defects_at_hide_edge: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    provider: str = "none"
    infer_ms: list[float] = field(default_factory=list)  # per strip
    latency_ms: list[float] = field(default_factory=list)  # strip complete -> assembled
    stitch_s: float = 0.0  # time the stitcher thread spent working (not waiting for free slots)

    def as_dict(self) -> dict[str, Any]:
        def pct(v: list[float], q: float) -> float | None:
            return round(float(np.percentile(v, q)), 3) if v else None

        return {
            "lines": self.lines,
            "lines_lost": self.lines_lost,
            "strips": self.strips,
            "strips_dropped": self.strips_dropped,
            "tiles": self.tiles,
            "hides": self.hides,
            "defects": sum(self.defects_by_class.values()),
            "defects_by_class": dict(sorted(self.defects_by_class.items())),
            "defects_off_hide": self.defects_off_hide,
            "detections_in_lost_lines": self.detections_in_lost_lines,
            "defects_at_hide_edge": self.defects_at_hide_edge,
            "wall_s": round(self.wall_s, 3),
            "cpu_s": round(self.cpu_s, 3),
            "lines_per_s": round(self.lines / self.wall_s, 1) if self.wall_s else None,
            "tiles_per_s": round(self.tiles / self.wall_s, 2) if self.wall_s else None,
            "stitch_lines_per_s": round(self.lines / self.stitch_s, 1) if self.stitch_s else None,
            "infer_ms_per_strip_p50": pct(self.infer_ms, 50),
            "infer_ms_per_strip_p99": pct(self.infer_ms, 99),
            "latency_ms_p50": pct(self.latency_ms, 50),
            "latency_ms_p99": pct(self.latency_ms, 99),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "provider": self.provider,
        }


def load_flat_field(station: Station) -> tuple[np.ndarray, np.ndarray] | None:
    from .errors import ConfigError

    ff = station.tiling.flat_field
    if not ff:
        return None
    p = station.resolve(ff)
    try:
        with np.load(p) as z:
            gain, offset = np.asarray(z["gain"], np.float32), np.asarray(z["offset"], np.float32)
    except FileNotFoundError:
        raise ConfigError(p, [f"tiling.flat_field: file not found ({p})"]) from None
    except (KeyError, ValueError, OSError) as e:
        raise ConfigError(p, [f"tiling.flat_field: need arrays 'gain' and 'offset' in a .npz ({e})"]) from None
    w = station.camera.width
    for name, a in (("gain", gain), ("offset", offset)):
        if a.shape[0] != w:
            raise ConfigError(p, [f"tiling.flat_field: '{name}' has {a.shape[0]} columns, camera.width is {w}"])
    return gain, offset


def geometry_of(station: Station) -> BeltGeometry:
    table = None
    if station.camera.across_table:
        table = np.load(station.resolve(station.camera.across_table))
    return BeltGeometry(station.camera.mm_per_px, station.camera.mm_per_line, station.camera.width, table)


def run_pipeline(
    blocks: Iterable[LineBlock],
    station: Station,
    model: TileModel | None,
    on_hide: Callable[[Hide], None],
    *,
    live: bool = False,
    progress: Callable[[int], None] | None = None,
    class_names: list[str] | None = None,
    stop: threading.Event | None = None,
    hooks: Hooks | None = None,
    probe: Probe | None = None,
) -> RunStats:
    """Run blocks through the whole pipeline; ``on_hide`` receives every finished Hide.

    ``model=None`` runs the pipeline without inference (every strip has no detections):
    the figure for ``bench --no-model``. ``hooks`` receive early events for marking
    (final defects, hide starts, uninspected stretches) in the caller's thread. ``probe`` is
    filled in with the stages, for live metrics and the watchdog (edge_inspector/probe.py).
    """
    stop = stop or threading.Event()
    cam, tl = station.camera, station.tiling
    dtype = np.dtype(cam.dtype)
    grid = TileGrid(cam.width, tl.tile, tl.overlap)
    ring = TileRing(tl.ring_slots, len(grid.x0s), tl.tile, cam.channels, dtype)
    q_tiles: queue.Queue[object] = queue.Queue(maxsize=256)
    q_dets: queue.Queue[object] = queue.Queue(maxsize=256)
    errors: list[BaseException] = []
    stats = RunStats(provider=model.provider if model is not None else "none")
    geo = geometry_of(station)
    names = class_names or (model.class_names if model is not None else [])
    asm = Assembler(station, geo, list(names), on_hide, hooks=hooks)
    stitcher = Stitcher(
        grid, cam.channels, dtype, ring, q_tiles.put, live=live,
        sample_step=station.hide_detection.subsample, flat_field=load_flat_field(station), stop=stop,
    )
    batch = station.model.batch
    probe = probe if probe is not None else Probe()
    probe.stitcher, probe.ring, probe.q_tiles, probe.q_dets, probe.assembler = stitcher, ring, q_tiles, q_dets, asm
    probe.provider = stats.provider
    probe.running = True

    def put(q: queue.Queue[object], item: object) -> None:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    stitcher.emit = lambda m: put(q_tiles, m)

    def source_thread() -> None:
        busy = 0.0
        try:
            it = iter(blocks)
            while not stop.is_set():
                try:
                    blk = next(it)
                except StopIteration:
                    break
                probe.last_block_ns = time.monotonic_ns()
                t0 = time.perf_counter()
                stitcher.push(blk)
                busy += time.perf_counter() - t0
                if progress is not None:
                    progress(blk.end_line)
            t0 = time.perf_counter()
            stitcher.flush()
            busy += time.perf_counter() - t0
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            errors.append(e)
            stop.set()
        finally:
            stats.stitch_s = max(0.0, busy - ring.wait_s)  # work only, not waiting for slots
            put(q_tiles, _END)

    def infer_thread() -> None:
        try:
            while True:
                msg = q_tiles.get()
                if msg is _END:
                    break
                if isinstance(msg, Strip):
                    t0 = time.monotonic_ns()
                    if model is None:
                        dets = [Detections.empty() for _ in msg.x0s]
                    else:
                        n = msg.pixels.shape[0]
                        step = batch or n
                        dets = []
                        for i in range(0, n, step):
                            dets.extend(model.infer(msg.pixels[i : i + step]))
                    t1 = time.monotonic_ns()
                    ring.release(msg.slot)
                    stats.infer_ms.append((t1 - t0) / 1e6)
                    probe.infer_ms_last = (t1 - t0) / 1e6
                    probe.last_infer_ns = t1
                    probe.strips_inferred += 1
                    msg = StripDetections(
                        msg.index, msg.first_line, msg.valid_lines, msg.x0s, dets, msg.lost,
                        msg.t_complete_ns, t0, t1,
                    )
                put(q_dets, msg)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
            stop.set()
        finally:
            put(q_dets, _END)

    t_start = time.perf_counter()
    cpu0 = time.process_time()
    threads = [
        threading.Thread(target=source_thread, name="ei-source", daemon=True),
        threading.Thread(target=infer_thread, name="ei-infer", daemon=True),
    ]
    for t in threads:
        t.start()
    try:
        while True:
            try:
                msg = q_dets.get(timeout=0.2)
            except queue.Empty:
                if errors:
                    break
                continue
            if msg is _END:
                break
            asm.handle(msg)
        if not errors:
            asm.finish()
    except BaseException as e:
        errors.append(e)
        stop.set()
    finally:
        stop.set() if errors else None
        for t in threads:
            t.join(timeout=10)
    probe.running = False
    stats.wall_s = time.perf_counter() - t_start
    stats.cpu_s = time.process_time() - cpu0
    stats.lines = stitcher.lines_in
    stats.lines_lost = stitcher.lines_lost
    stats.strips = stitcher.strips_out
    stats.strips_dropped = stitcher.strips_dropped
    stats.tiles = stitcher.tiles_out
    stats.hides = asm.hides_done
    stats.defects_by_class = dict(asm.defects_by_class)
    stats.defects_off_hide = asm.off_hide
    stats.detections_in_lost_lines = asm.suppressed_lost
    stats.defects_at_hide_edge = asm.suppressed_edge
    stats.latency_ms = [v / 1e6 for v in asm.latencies_ns]
    stats.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    if errors:
        raise errors[0]
    return stats
