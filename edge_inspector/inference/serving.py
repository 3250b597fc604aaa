"""``edge-inspector serve-model``: a Triton Inference Server (pytriton) serving one station model.

The served model is the station's ONNX file run by the station's own runtime
(``runtime.open_session``: OpenVINO or ONNX Runtime on the CPU, an ONNX Runtime provider on a GPU)
behind a pytriton callable, with Triton's dynamic batching: requests of several stations that
arrive within ``max_queue_delay_us`` run as one batch. The input is the model's own input (uint8
NHWC tiles for the built-in models), the outputs are the graph's raw outputs by name, so each
station decodes them with its own contract (docs/serving.md).

The model is served under the name ``served_name(sha256 of the file)``: a station connects only to
a server that serves the very file it reads its contract from (``remote.RemoteSession``).

pytriton's Python backend stub embeds the ``libpython3.11.so`` it finds through the dynamic
linker, with the standard library of the interpreter that runs this command. When that
interpreter is not the system's (pyenv's 3.11.7 beside Debian's 3.11.2), the stub ran Debian's
library with pyenv's standard library and failed at start (``'_thread.RLock' object has no
attribute '_recursion_count'``). ``stub_library_env`` puts this interpreter's own shared library
first on ``LD_LIBRARY_PATH`` of the server, which fixes it for any shared-library build.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import sysconfig
import threading
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from ..config import ModelCfg
from ..errors import ModelError
from .registry import builtin_path

log = structlog.get_logger(__name__)

NAME_PREFIX = "ei_"  # served model name: ei_ + the first 16 hex digits of the file's sha256


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def served_name(sha256: str) -> str:
    """The Triton model name of a model file with this sha256."""
    return NAME_PREFIX + sha256[:16]


def model_file(spec: str) -> Path:
    path = builtin_path(spec) if spec.startswith("builtin:") else Path(spec)
    if not path.is_file():
        raise ModelError("model file not found", path=path, where="--model", hint="an .onnx file, or builtin:default")
    return path


def stub_library_env() -> str | None:
    """Put this interpreter's libpython first on LD_LIBRARY_PATH (module docstring); the folder, or None
    when the interpreter is not a shared-library build (then the system's libpython is used)."""
    libdir, lib = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("LDLIBRARY")
    if not sysconfig.get_config_var("Py_ENABLE_SHARED") or not libdir or not lib:
        return None
    if not (Path(libdir) / lib).exists():
        return None
    old = os.environ.get("LD_LIBRARY_PATH", "")
    if libdir not in old.split(":"):
        os.environ["LD_LIBRARY_PATH"] = libdir + (":" + old if old else "")
    return str(libdir)


_ONNX_DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32, 7: np.int64,
                9: np.bool_, 10: np.float16, 11: np.float64}


def graph_signature(path: Path) -> tuple[tuple[str, Any, tuple[int, ...]], list[tuple[str, Any, tuple[int, ...]]]]:
    """(input, outputs) as (name, numpy dtype, shape without the batch axis; -1 = any) from the ONNX graph."""
    import onnx

    g = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in g.initializer}

    def sig(v: Any) -> tuple[str, Any, tuple[int, ...]]:
        t = v.type.tensor_type
        dtype = _ONNX_DTYPES.get(t.elem_type)
        if dtype is None:
            raise ModelError(f"{v.name}: ONNX element type {t.elem_type} cannot be served", path=path)
        dims = tuple(int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in t.shape.dim)
        return v.name, dtype, dims[1:]  # the first axis is the batch

    inputs = [sig(i) for i in g.input if i.name not in inits]
    return inputs[0], [sig(o) for o in g.output]


def serve(spec: str, *, host: str = "127.0.0.1", port: int = 8001, max_batch: int = 16, queue_delay_us: int = 2000,
          cfg: ModelCfg | None = None, stop: threading.Event | None = None) -> None:
    """Serve the model file ``spec`` over gRPC at host:port until SIGTERM/SIGINT (or ``stop``)."""
    try:
        from pytriton.decorators import batch
        from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
        from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig
    except ImportError:
        raise ModelError("serve-model needs pytriton", hint="pip install 'edge-inspector[serve]'") from None
    from .model import cpu_provider
    from .runtime import open_session

    path = model_file(spec)
    sha = file_sha256(path)
    name = served_name(sha)
    (in_name, in_dtype, in_shape), outs = graph_signature(path)
    session = open_session(cfg or ModelCfg(path=str(path)), path)
    out_names = [o[0] for o in outs]
    libdir = stub_library_env()

    # on a CPU runtime one tile per run: the same tiles/s as a batch, a fifth of the memory, and one
    # compiled OpenVINO graph whatever batch the dynamic batcher forms (model.station_batch)
    step = 1 if cpu_provider(session.provider) else 0

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        x = inputs[in_name]
        if not step or len(x) <= step:
            res = session.run(out_names, {in_name: x})
        else:
            parts = [session.run(out_names, {in_name: x[i : i + step]}) for i in range(0, len(x), step)]
            res = [np.concatenate([p[k] for p in parts]) for k in range(len(out_names))]
        return {n: np.ascontiguousarray(r) for n, r in zip(out_names, res)}

    config = TritonConfig(grpc_address=host, grpc_port=port, allow_http=False, allow_metrics=False,
                          exit_on_error=True, log_verbose=0)
    done = stop or threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        done.set()

    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, on_signal)
    # pytriton restricts these gRPC endpoints to a token by default; stations need shared memory
    # (registering their tile region) and model metadata, not the repository (load/unload) API
    security = TritonSecurityConfig(restricted_endpoints=["model-repository", "statistics", "trace", "logging"])
    with Triton(config=config, security_config=security) as triton:
        triton.bind(
            model_name=name, infer_func=infer,
            inputs=[Tensor(name=in_name, dtype=in_dtype, shape=in_shape)],
            outputs=[Tensor(name=n, dtype=d, shape=s) for n, d, s in outs],
            config=ModelConfig(batching=True, max_batch_size=max_batch,
                               batcher=DynamicBatcher(max_queue_delay_microseconds=queue_delay_us)),
            strict=False,
        )
        triton.run()
        log.info("serve_model", url=f"grpc://{host}:{port}", model=str(path), name=name, sha256=sha,
                 provider=session.provider, max_batch=max_batch, queue_delay_us=queue_delay_us,
                 python=sys.version.split()[0], stub_libpython=libdir)
        print(f"edge-inspector serve-model: {path} as {name} at grpc://{host}:{port} ({session.provider});"
              " SIGTERM stops", flush=True)
        while not done.wait(0.5):
            if not triton.is_alive():
                raise ModelError("the Triton server ended", path=path, hint="see its log above")
    log.info("serve_model_stopped", name=name)
