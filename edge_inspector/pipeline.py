"""The station pipeline: source -> stitcher -> inference -> assembler, as three threads.

Threads and queues (docs/architecture.md):

    [source + stitcher thread] --q_tiles--> [inference thread] --q_dets--> [assembler thread] -> on_hide

The stitcher writes tiles into a ring of preallocated strip slots; only slot numbers and small
messages travel through the queues. Inference releases a slot as soon as the model has read
it. The queues are bounded; the ring bounds the pixels in flight. In replay (``live=False``)
the stitcher waits for a free slot (lossless); live it drops strips and reports them. The
messages are those of edge_inspector/stream.py; each stage counts into its own counters, which
the probe reads. Grading, results and marks are the inspection run's (edge_inspector/run.py).
"""

from __future__ import annotations

import contextvars
import queue
import resource
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import structlog

from .assemble import Assembler
from .belt import BeltGeometry
from .config import Station
from .coverage import HideCoverage
from .detections import Detections
from .hide import Hide
from .lines import LineBlock
from .probe import Probe
from .stitch import Stitcher, TileRing
from .errors import ModelUnavailable
from .stream import AssemblyListener, InferenceCounters, LineClock, Strip, StripDetections, Uninspected
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
    strips_model_failed: int = 0  # strips the model could not run (its server down or slow): uninspected
    tiles_run: int = 0  # tiles the model ran on
    tiles_skipped: int = 0  # tiles of bare belt it did not run on (tiling.skip_belt_tiles)
    inference_workers: int = 1  # strips inferred side by side (OpenVINO CPU streams, [model] cpu_streams)
    model_server: dict[str, Any] | None = None  # [model] server: its URL and call/reconnect counters

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
            "strips_model_failed": self.strips_model_failed,
            "tiles_run": self.tiles_run,
            "tiles_skipped": self.tiles_skipped,
            "inference_workers": self.inference_workers,
            **({"model_server": self.model_server} if self.model_server is not None else {}),
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


class Pipeline:
    """The three pipeline threads for one stream of blocks: built once, then ``start``/``stop``/``join``.

    ``on_hide`` receives every finished Hide, in the assembler thread. ``model=None`` runs the
    pipeline without inference (every strip has no detections): the figure for ``bench
    --no-model``. ``listener`` (stream.AssemblyListener, e.g. the mark planner) hears of final
    defects, hide starts and uninspected stretches early, in the assembler thread; ``clock`` is
    the run's line clock, advanced by the assembler. ``probe`` gets the stages' counters and
    queues, for live metrics and the watchdog (edge_inspector/probe.py).
    """

    def __init__(
        self,
        station: Station,
        model: TileModel | None,
        on_hide: Callable[[Hide], None],
        *,
        live: bool = False,
        progress: Callable[[int], None] | None = None,
        class_names: list[str] | None = None,
        listener: AssemblyListener | None = None,
        clock: LineClock | None = None,
        probe: Probe | None = None,
    ) -> None:
        self._abort = threading.Event()  # a stage failed: every thread ends without the drain
        self._end = threading.Event()  # stop(): the source ends, the rest drains
        cam, tl = station.camera, station.tiling
        dtype = np.dtype(cam.dtype)
        grid = TileGrid(cam.width, tl.tile, tl.overlap)
        self.model = model
        if model is not None:
            from .inference.model import station_batch

            # 0 = auto: the graph's fixed batch, else 1 on the CPU, a strip on a GPU
            self.batch = station_batch(station, model.provider, getattr(model, "fixed_batch", None))[1]
        else:
            self.batch = 0
        server = getattr(model, "session", None)
        if live and hasattr(server, "wait_s"):  # a camera cannot wait for a model server (docs/serving.md)
            server.wait_s = 0.0
        self.progress = progress
        self.ring = TileRing(tl.ring_slots, lines=tl.tile, width=cam.width, channels=cam.channels, dtype=dtype)
        self.q_tiles: queue.Queue[object] = queue.Queue(maxsize=256)
        self.q_dets: queue.Queue[object] = queue.Queue(maxsize=256)
        names = class_names or (model.class_names if model is not None else [])
        self.assembler = Assembler(station, geometry_of(station), list(names), on_hide, listener=listener, clock=clock)
        self.stitcher = Stitcher(
            grid, cam.channels, dtype, self.ring, lambda m: self._put(self.q_tiles, m), live=live,
            sample_step=station.hide_detection.subsample, flat_field=load_flat_field(station), stop=self._abort,
        )
        self.inference = InferenceCounters()
        self.coverage = (HideCoverage(station.hide_detection, cam.channels, tl.overlap)
                         if model is not None and tl.skip_belt_tiles else None)
        self.stats = RunStats(provider=model.provider if model is not None else "none")
        self.probe = probe if probe is not None else Probe()
        self.probe.attach(self.stitcher.counters, self.inference, self.assembler.counters, self.ring,
                          self.q_tiles, self.q_dets, self.stats.provider)
        # inference workers: as many as the runtime runs calls side by side; messages keep their order
        self.workers = max(1, int(getattr(model, "parallel", 1))) if model is not None else 1
        self._take_lock = threading.Lock()
        self._turn = threading.Lock()
        self._ready: dict[int, object] = {}  # done, waiting for an earlier strip
        self._taken = self._emitted = self._workers_live = 0
        self._taken_end = False
        self._errors: list[BaseException] = []
        self._threads: list[threading.Thread] = []
        self._assembler_thread: threading.Thread | None = None
        self._t0 = (0.0, 0.0)  # perf_counter and process_time at start

    # -- control ------------------------------------------------------------------------------
    def start(self, blocks: Iterable[LineBlock]) -> None:
        """Start the threads; the source thread pulls ``blocks`` until they end or ``stop()``."""
        if self._assembler_thread is not None:
            raise RuntimeError("Pipeline.start called twice")
        self.probe.running = True
        self._t0 = (time.perf_counter(), time.process_time())
        self._threads = [
            threading.Thread(target=self._source, args=(blocks,), name="ei-source", daemon=True),
            *(threading.Thread(target=self._infer, name="ei-infer" + (f"-{k + 1}" if k else ""), daemon=True)
              for k in range(self.workers)),
        ]
        self._workers_live = self.workers
        for t in self._threads:
            t.start()
        ctx = contextvars.copy_context()  # the caller's bound log fields go with the assembler
        self._assembler_thread = threading.Thread(target=ctx.run, args=(self._assemble,), name="ei-assemble",
                                                  daemon=True)
        self._assembler_thread.start()

    def stop(self) -> None:
        """End the source after the block in hand; strips in flight are still inspected and open hides
        finished (the drain). A source that blocks waiting for lines (a camera) needs its own stop."""
        self._end.set()

    def join(self) -> RunStats:
        """Wait for the drain to end; the run's figures. An error of any stage is raised here."""
        t = self._assembler_thread
        if t is None:
            raise RuntimeError("Pipeline.join before start")
        try:
            while t.is_alive():
                t.join(0.2)
        except BaseException as e:  # Ctrl-C while waiting: stop without the drain
            self._errors.append(e)
            self._abort.set()
            t.join(timeout=10)
        if self._errors:
            raise self._errors[0]
        return self.stats

    # -- threads ------------------------------------------------------------------------------
    def _put(self, q: queue.Queue[object], item: object) -> None:
        while not self._abort.is_set():
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _source(self, blocks: Iterable[LineBlock]) -> None:
        abort, stitcher = self._abort, self.stitcher
        busy = 0.0
        try:
            it = iter(blocks)
            while not abort.is_set() and not self._end.is_set():
                try:
                    blk = next(it)
                except StopIteration:
                    break
                t0 = time.perf_counter()
                stitcher.push(blk)
                busy += time.perf_counter() - t0
                if self.progress is not None:
                    self.progress(blk.end_line)
            t0 = time.perf_counter()
            stitcher.flush()
            busy += time.perf_counter() - t0
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            self._errors.append(e)
            abort.set()
        finally:
            self.stats.stitch_s = max(0.0, busy - self.ring.wait_s)  # work only, not waiting for slots
            self._put(self.q_tiles, _END)

    def _infer(self) -> None:
        """One inference worker. A runtime that runs calls side by side (OpenVINO CPU streams,
        ``Model.parallel``) gets that many workers: each takes the next strip in turn and runs it;
        what leaves the stage leaves in the order it came (``_take`` / ``_done``), so the assembler
        sees strips and samples in line order as with one worker."""
        model = self.model
        batch: np.ndarray | None = None  # the model's contiguous input, reused: tiles are copied out of the slot
        try:
            while (got := self._take()) is not None:
                seq, msg, run = got
                t0 = time.monotonic_ns()
                if model is None:
                    result: list[Detections] | ModelUnavailable = [Detections.empty() for _ in msg.x0s]
                else:
                    cols = len(msg.x0s)
                    step = self.batch or cols
                    if batch is None or batch.shape[1:] != (msg.tile, msg.tile) + msg.pixels.shape[2:]:
                        batch = np.empty((step, msg.tile, msg.tile) + msg.pixels.shape[2:], msg.pixels.dtype)
                        batch.fill(0)  # map its pages once, not on every strip
                    dets = [Detections.empty() for _ in range(cols)]  # bare belt: nothing to report
                    result = dets
                    try:
                        for i in range(0, len(run), step):
                            part = run[i : i + step]
                            for c, d in zip(part, model.infer(msg.pick(part, batch))):
                                dets[c] = d
                    except ModelUnavailable as e:  # the strip is reported, the run goes on
                        result = e
                self._done(seq, (msg, result, run, t0, time.monotonic_ns()))
        except BaseException as e:  # noqa: BLE001
            self._errors.append(e)
            self._abort.set()
        finally:
            with self._turn:
                self._workers_live -= 1
                last = self._workers_live == 0
            if last:
                self._put(self.q_dets, _END)

    def _take(self) -> tuple[int, Strip, list[int]] | None:
        """The next strip of the tile queue with its turn number and the tile columns to run (the
        hide coverage, decided in line order); messages before it are handed on in their turn.
        None at the end or on abort."""
        while True:
            with self._take_lock:
                if self._taken_end:
                    return None
                try:  # a failed stage sets _abort and may not get _END through: look at it often
                    msg = self.q_tiles.get(timeout=0.1)
                except queue.Empty:
                    if self._abort.is_set():
                        return None
                    continue
                seq = self._taken
                self._taken += 1
                if not isinstance(msg, Strip):
                    self._taken_end = msg is _END
                    self._done(seq, msg)
                    continue
                run: list[int] = []
                if self.model is not None:
                    run = (list(range(len(msg.x0s))) if self.coverage is None
                           else [int(i) for i in np.flatnonzero(self.coverage.active(msg))])
                return seq, msg, run

    def _done(self, seq: int, item: object) -> None:
        """Item ``seq`` is ready; hand on every ready item whose turn has come: a strip's slot freed,
        its counters, its detections (or its uninspected lines); other messages as they are."""
        with self._turn:
            self._ready[seq] = item
            while self._emitted in self._ready:
                out = self._ready.pop(self._emitted)
                self._emitted += 1
                if not isinstance(out, tuple):
                    if out is not _END:
                        self._put(self.q_dets, out)
                    continue
                msg, result, run, t0, t1 = out
                if isinstance(result, ModelUnavailable):
                    self.ring.release(msg.slot)
                    self._model_failed(msg, result)
                    continue
                n = self.inference
                if self.model is not None:
                    n.tiles_run += len(run)
                    n.tiles_skipped += len(msg.x0s) - len(run)
                self.ring.release(msg.slot)
                n.ms_last = (t1 - t0) / 1e6
                n.ms.append(n.ms_last)
                n.last_ns = t1
                n.strips += 1
                self._put(self.q_dets, StripDetections(
                    msg.index, msg.first_line, msg.valid_lines, msg.x0s, result, msg.lost,
                    msg.t_complete_ns, t0, t1,
                ))

    def _model_failed(self, strip: Strip, e: ModelUnavailable) -> None:
        """A strip the model could not run: uninspected lines (reason "model"), counted; an alarm."""
        n = self.inference
        n.model_failed += 1
        n.strips += 1  # through the model stage: not pending (probe, watchdog)
        n.last_ns = time.monotonic_ns()
        log.error("alarm", code="model_unavailable", strip=strip.index, first_line=strip.first_line,
                  strips_failed=n.model_failed, error=str(e))
        self._put(self.q_dets, Uninspected(strip.first_line, strip.first_line + strip.valid_lines, "model"))

    def _assemble(self) -> None:
        asm, errors = self.assembler, self._errors
        try:
            while not errors:
                try:
                    msg = self.q_dets.get(timeout=0.2)
                except queue.Empty:
                    continue
                if msg is _END:
                    break
                asm.handle(msg)  # type: ignore[arg-type]  # the queue holds stream messages and _END
            if not errors:
                asm.finish()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
        finally:
            if errors:
                self._abort.set()
            for t in self._threads:
                t.join(timeout=10)
            self.probe.running = False
            self._fill_stats()

    def _fill_stats(self) -> None:
        stats, s, a = self.stats, self.stitcher.counters, self.assembler.counters
        stats.wall_s = time.perf_counter() - self._t0[0]
        stats.cpu_s = time.process_time() - self._t0[1]
        stats.lines = s.lines_in
        stats.lines_lost = s.lines_lost
        stats.strips = s.strips_out
        stats.strips_dropped = s.strips_dropped
        stats.tiles = s.tiles_out
        stats.hides = a.hides
        stats.defects_by_class = dict(a.defects_by_class)
        stats.defects_off_hide = a.off_hide
        stats.detections_in_lost_lines = a.suppressed_lost
        stats.defects_at_hide_edge = a.suppressed_edge
        stats.infer_ms = list(self.inference.ms)
        stats.latency_ms = [v / 1e6 for v in a.latencies_ns]
        stats.strips_model_failed = self.inference.model_failed
        stats.tiles_run, stats.tiles_skipped = self.inference.tiles_run, self.inference.tiles_skipped
        stats.inference_workers = self.workers
        server = getattr(self.model, "session", None)
        if hasattr(server, "counters"):
            stats.model_server = server.counters()
        stats.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_pipeline(
    blocks: Iterable[LineBlock],
    station: Station,
    model: TileModel | None,
    on_hide: Callable[[Hide], None],
    *,
    live: bool = False,
    progress: Callable[[int], None] | None = None,
    class_names: list[str] | None = None,
    probe: Probe | None = None,
) -> RunStats:
    """Run ``blocks`` through a Pipeline until they end and the drain is done; the run's figures."""
    pipeline = Pipeline(station, model, on_hide, live=live, progress=progress, class_names=class_names, probe=probe)
    pipeline.start(blocks)
    return pipeline.join()
