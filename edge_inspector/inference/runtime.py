"""Runtimes that execute a model's ONNX graph: ONNX Runtime (any provider) or OpenVINO on the CPU.

``open_session(cfg, path)`` walks ``[model] providers`` in order and opens the first one present:

- an ONNX Runtime execution provider (``CUDAExecutionProvider``, ``TensorrtExecutionProvider``, ...);
- ``OpenVINO``: the OpenVINO runtime reading the same .onnx file (CPU device);
- ``CPUExecutionProvider`` stands for *the CPU*: the fastest CPU runtime installed. That is OpenVINO
  when the ``openvino`` package imports (it ran the default model 1.4-1.7x faster than ONNX Runtime's
  CPU provider on 2 cores, docs/performance.md), else ONNX Runtime's CPU provider.
  ``[model] cpu_runtime = "onnxruntime"`` keeps ONNX Runtime; ``"openvino"`` insists on OpenVINO.

What really runs is logged (``model_session``) and reported as the model's provider (``OpenVINO:CPU``
or the ONNX Runtime provider name); a fallback is logged as ``provider_fallback`` and refused when
``require_provider`` is set. ``[model] cpu_precision``: OpenVINO runs in bf16 where the CPU has it
(AVX-512 BF16 / AMX: the demo ran 1.75x faster end to end with the same recall on three synthetic
recordings, though single uint8 scores move by up to 22 levels) and in f32 elsewhere; ``"f32"``
gives ONNX Runtime's scores (within one uint8 level). OpenVINO compiles one graph per input shape
(the station's strip shape is compiled during warm-up).

``[model] cpu_streams`` (OpenVINO on the CPU): that many tiles are inferred at once, the cores
shared between them (OpenVINO's throughput mode, one infer request per stream). The default, 2
where the process has 2 cores or more, ran the demo line 1.15x faster end to end than one tile on
both cores (median of 6 alternating bench pairs, docs/performance.md): on 2 cores one tile per
core wastes less time in synchronising the layers than two threads on one tile. The session
reports it as ``parallel`` and the pipeline runs that many strips side by side; a call with a
batch runs its tiles one per request and returns them in order. ONNX Runtime: one call at a time.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import onnxruntime as ort
import structlog

from ..config import ModelCfg
from ..errors import ModelError

log = structlog.get_logger(__name__)

OPENVINO = "OpenVINO"
CPU = "CPUExecutionProvider"


class Session(Protocol):
    """The part of a runtime session a Model uses."""

    provider: str  # what really runs, e.g. "CPUExecutionProvider", "OpenVINO:CPU"
    providers: list[str]  # the runtime's own list, for the log
    input_name: str
    output_names: list[str]
    parallel: int  # calls that run side by side at full speed (OpenVINO CPU streams; 1 elsewhere)

    def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]: ...


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except Exception:  # noqa: BLE001 - missing, or a broken install: not available either way
        return False
    return True


class OrtSession:
    """ONNX Runtime, any execution provider."""

    def __init__(self, cfg: ModelCfg, path: Path, providers: list[str]) -> None:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if cfg.intra_op_threads:
            so.intra_op_num_threads = cfg.intra_op_threads
        so.log_severity_level = 3  # ONNX Runtime's own warnings go to stderr otherwise
        try:
            self.session = ort.InferenceSession(str(path), sess_options=so, providers=providers)
        except Exception as e:
            raise ModelError(f"ONNX Runtime cannot open the model: {e}", path=path) from None
        self.providers = list(self.session.get_providers())
        self.provider = self.providers[0]
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.parallel = 1

    def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return list(self.session.run(names, feeds))


class OpenVinoSession:
    """OpenVINO on the CPU, reading the same .onnx file; one compiled graph per input shape."""

    def __init__(self, cfg: ModelCfg, path: Path) -> None:
        import openvino as ov

        self._core = ov.Core()
        try:
            self._model = self._core.read_model(str(path))
        except Exception as e:  # noqa: BLE001 - OpenVINO's errors are plain RuntimeErrors
            raise ModelError(f"OpenVINO cannot read the model: {str(e).splitlines()[0]}", path=path) from None
        self._path = path
        self._config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": cfg.cpu_precision,
                                        "PERFORMANCE_HINT": "LATENCY"}
        self.streams = cpu_streams(cfg)
        self.parallel = self.streams
        if self.streams > 1:  # the cores shared between that many tiles at once
            self._config.update({"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": self.streams})
        if cfg.intra_op_threads:
            self._config["INFERENCE_NUM_THREADS"] = int(cfg.intra_op_threads)
        # OpenVINO keeps a tensor's ONNX names but may report another of them first: take the
        # graph's own input/output names, in order (OpenVINO keeps the order).
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
        graph = proto.graph
        if any(p.key == "edge_inspector.cpu_precision" and p.value == "f32" for p in proto.metadata_props):
            self._config["INFERENCE_PRECISION_HINT"] = "f32"  # the model needs it (novelty distances: docs/models.md)
        inits = {i.name for i in graph.initializer}
        self.input_name = [i.name for i in graph.input if i.name not in inits][0]
        self.output_names = [o.name for o in graph.output]
        self._ov_input = self._model.inputs[0].get_any_name()
        self.provider = f"{OPENVINO}:CPU"
        self.providers = [self.provider]
        # with streams a batch goes through as single tiles, side by side (a graph of fixed batch as it is)
        self._split = self.streams > 1 and self._model.inputs[0].get_partial_shape()[0].is_dynamic
        self._compiled: dict[tuple[int, ...], queue.SimpleQueue[Any]] = {}  # shape -> its free requests
        self._lock = threading.Lock()

    def _requests(self, shape: tuple[int, ...]) -> queue.SimpleQueue[Any]:
        with self._lock:
            pool = self._compiled.get(shape)
            if pool is None:
                pool = self._compiled[shape] = self._compile(shape)
            return pool

    def _compile(self, shape: tuple[int, ...]) -> queue.SimpleQueue[Any]:
        m = self._model.clone()
        m.reshape({self._ov_input: list(shape)})
        try:
            compiled = self._core.compile_model(m, "CPU", self._config)
        except Exception as e:  # noqa: BLE001 - OpenVINO's errors are plain RuntimeErrors
            if self._config.get("INFERENCE_PRECISION_HINT") != "f32":  # a CPU that refuses bf16: f32
                log.warning("openvino_precision_fallback", wanted=self._config["INFERENCE_PRECISION_HINT"],
                            using="f32", error=str(e).splitlines()[0])
                self._config["INFERENCE_PRECISION_HINT"] = "f32"
                return self._compile(shape)
            raise ModelError(f"OpenVINO cannot compile the model for input {shape}:"
                             f" {str(e).splitlines()[0]}", path=self._path) from None
        pool: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for _ in range(self.streams):
            pool.put(compiled.create_infer_request())
        return pool

    def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The outputs for one batch; thread-safe (each call takes free requests of its shape). With
        streams, the batch's tiles run side by side, one request each, and come back in order."""
        x = np.ascontiguousarray(feeds[self.input_name])
        if not self._split or len(x) == 1:
            pool = self._requests(tuple(x.shape))
            req = pool.get()
            try:
                outs = self._outputs(req.infer({0: x}), req)
            finally:
                pool.put(req)
        else:
            pool = self._requests((1, *x.shape[1:]))
            per_tile: list[list[np.ndarray]] = [[] for _ in range(len(x))]
            held: list[Any] = []  # requests this call took from the pool
            inflight: deque[tuple[int, Any]] = deque()
            try:
                for i in range(len(x)):
                    try:
                        req = pool.get_nowait()
                        held.append(req)
                    except queue.Empty:
                        if inflight:  # wait for this call's oldest tile and reuse its request
                            j, req = inflight.popleft()
                            req.wait()
                            per_tile[j] = self._outputs(req.results, req)
                        else:  # other callers hold every request: wait for one
                            req = pool.get()
                            held.append(req)
                    req.start_async({0: x[i : i + 1]})
                    inflight.append((i, req))
                while inflight:
                    j, req = inflight.popleft()
                    req.wait()
                    per_tile[j] = self._outputs(req.results, req)
            finally:
                for req in inflight:
                    req[1].wait()
                for req in held:
                    pool.put(req)
            outs = [np.concatenate(parts) for parts in zip(*per_tile)]
        by_name = dict(zip(self.output_names, outs))
        return [by_name[n] for n in names]

    @staticmethod
    def _outputs(res: Any, req: Any) -> list[np.ndarray]:
        return [np.asarray(res[o]).copy() for o in req.model_outputs]


def cpu_streams(cfg: ModelCfg) -> int:
    """OpenVINO CPU streams of ``[model] cpu_streams``: the number, else (0 = auto) 2 where this
    process may use 2 cores or more, else 1."""
    if cfg.cpu_streams:
        return int(cfg.cpu_streams)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return 2 if cores >= 2 else 1


def open_session(cfg: ModelCfg, path: Path) -> Session:
    """The first runtime of ``cfg.providers`` that is present (module docstring); with ``[model] server``
    the shared inference server instead (remote.py, docs/serving.md)."""
    if cfg.server:
        from .remote import RemoteSession

        remote = RemoteSession(cfg.server, path, wait_s=cfg.server_wait_s)
        log.info("model_session", model=str(path), provider=remote.provider, served_as=remote.model_name)
        return remote
    available = ort.get_available_providers()
    wanted = list(cfg.providers) or [CPU]
    ov_ok = openvino_available() and cfg.cpu_runtime != "onnxruntime"
    if cfg.cpu_runtime == "openvino" and not ov_ok:
        raise ModelError("model.cpu_runtime = \"openvino\" but the openvino package is not installed",
                         path=path, where="model.cpu_runtime", hint="pip install openvino, or use \"auto\"")

    def present(p: str) -> bool:
        return ov_ok if p == OPENVINO else p in available

    usable = [p for p in wanted if present(p)]
    for p in wanted:
        if not present(p):
            log.warning("provider_unavailable", provider=p, available=[*available, *([OPENVINO] if ov_ok else [])],
                        model=str(path))
    if cfg.require_provider and wanted[0] not in usable:
        raise ModelError(
            f"execution provider {wanted[0]} is not available (available: {', '.join(available)}"
            f"{', ' + OPENVINO if ov_ok else ''})", path=path, where="model.providers",
            hint="install the matching onnxruntime build (or openvino), or set model.require_provider = false",
        )
    first = usable[0] if usable else CPU
    if not usable:
        log.warning("provider_fallback", wanted=wanted, using=CPU)
    use_ov = first == OPENVINO or (first == CPU and ov_ok)
    if use_ov:
        session: Session = OpenVinoSession(cfg, path)
    else:
        ort_list = [p for p in usable if p != OPENVINO] or [CPU]
        session = OrtSession(cfg, path, ort_list)
    if cfg.require_provider and not (session.provider == wanted[0] or
                                     (wanted[0] in (CPU, OPENVINO) and use_ov)):
        raise ModelError(f"runs on {session.provider}, not on {wanted[0]}", path=path, where="model.providers",
                         hint="model.require_provider = true refuses a fallback")
    if session.provider != wanted[0] and not (wanted[0] == CPU and use_ov):
        log.warning("provider_fallback", wanted=wanted[0], provider=session.provider, model=str(path))
    log.info("model_session", model=str(path), provider=session.provider, providers=session.providers)
    return session
