"""A model run by a shared Triton Inference Server: ``[model] server = "grpc://host:port"``.

``RemoteSession`` is a runtime session (``runtime.Session``) whose ``run`` sends the model's input
(uint8 NHWC tiles for the built-in models) to the server and returns the raw outputs by name, so
the station's decoders work unchanged. The model file is still read locally for its contract;
the server must serve the same file: it is served as ``serving.served_name(sha256)`` and a station
whose file has another hash is refused at start with one line (docs/serving.md).

On the same host (127.0.0.1, localhost, ::1) the tiles go through Triton's system shared memory
(one region per session, grown to the largest batch); the outputs come back over gRPC.

Failures: a server that cannot be reached at start is a ModelError naming the URL (exit 2). A call
that fails later is retried, reconnecting (each reconnect counted), until ``wait_s`` has passed
(``[model] server_wait_s`` in replay; 0 on a live station, whose camera cannot wait); then the call
raises ``ModelUnavailable`` and the pipeline reports the strip as uninspected (pipeline.py).
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from ..config import parse_server_url
from ..errors import ModelError, ModelUnavailable
from .serving import file_sha256, served_name

log = structlog.get_logger(__name__)

LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]"}


class RemoteSession:
    """Runs the model on a Triton server (module docstring)."""

    def __init__(self, url: str, path: Path, *, wait_s: float = 30.0, call_timeout_s: float = 60.0,
                 shared_memory: bool | None = None) -> None:
        try:
            import tritonclient.grpc as grpcclient  # noqa: F401
        except ImportError:
            raise ModelError("[model] server needs tritonclient", path=path, where="model.server",
                             hint="pip install 'edge-inspector[serve]'") from None
        host, port = parse_server_url(url)
        self.url = url
        self._target = f"{host}:{port}"
        self.path = path
        self.wait_s = wait_s
        self.call_timeout_s = call_timeout_s
        self.sha256 = file_sha256(path)
        self.model_name = served_name(self.sha256)
        self.shared_memory = host in LOCAL_HOSTS if shared_memory is None else shared_memory
        self.reconnects = 0  # reconnected after a failed call
        self.reconnect_attempts = 0
        self.failed_calls = 0
        self._lock = threading.Lock()
        self._client: Any = None
        self._shm: tuple[str, Any, int] | None = None  # (region name, handle, bytes)
        self._connect(first=True)
        ref = weakref.ref(self)
        atexit.register(lambda: (r := ref()) is not None and r.close())  # the region is unlinked at exit
        self.provider = f"Triton:{url}"
        self.providers = [self.provider]
        self.parallel = 1  # one call at a time (the server batches)

    # ------------------------------------------------------------------ connection

    def _connect(self, *, first: bool = False) -> None:
        import tritonclient.grpc as grpcclient

        self._close_client()
        self._client = grpcclient.InferenceServerClient(url=self._target)
        try:
            live = self._client.is_server_live(client_timeout=10)
            ready = self._client.is_model_ready(self.model_name, client_timeout=10)
        except Exception as e:  # noqa: BLE001 - grpc/triton errors
            if first:
                raise ModelError(f"inference server {self.url} not reachable: {_first_line(e)}", path=self.path,
                                 where="model.server", hint="start it: edge-inspector serve-model --model ...") from None
            raise
        if not first and not (live and ready):  # a server restarting: retried until wait_s
            raise ConnectionError(f"inference server {self.url} not ready")
        if not live:
            raise ModelError(f"inference server {self.url} is not live", path=self.path, where="model.server")
        if not ready:
            raise ModelError(f"inference server {self.url} does not serve this model file (served as {self.model_name},"
                             f" sha256 {self.sha256[:16]}...)", path=self.path, where="model.server",
                             hint="serve the same file: edge-inspector serve-model --model <this file>")
        meta = self._client.get_model_metadata(self.model_name, as_json=True)
        cfg = self._client.get_model_config(self.model_name, as_json=True).get("config", {})
        self.input_name = meta["inputs"][0]["name"]
        self.output_names = [o["name"] for o in meta["outputs"]]
        self.max_batch = int(cfg.get("max_batch_size") or 0) or 1
        if self.shared_memory:
            self._shm = None  # regions are registered again on the next call (a restarted server forgot them)
        if first:
            log.info("model_server", url=self.url, model=self.model_name, max_batch=self.max_batch,
                     shared_memory=self.shared_memory)

    def _close_client(self) -> None:
        if self._client is None:
            return
        try:
            self._client.close()
        except Exception:  # noqa: BLE001 - closing a dead channel
            pass
        self._client = None

    def _region(self, nbytes: int) -> str:
        """The name of a registered system shared memory region of at least ``nbytes``."""
        import tritonclient.utils.shared_memory as shm

        if self._shm is not None and self._shm[2] >= nbytes:
            return self._shm[0]
        self._free_region()
        name = f"ei_{os.getpid()}_{id(self):x}"
        handle = shm.create_shared_memory_region(name, "/" + name, nbytes)
        self._client.register_system_shared_memory(name, "/" + name, nbytes)
        self._shm = (name, handle, nbytes)
        return name

    def _free_region(self) -> None:
        if self._shm is None:
            return
        import tritonclient.utils.shared_memory as shm

        name, handle, _ = self._shm
        self._shm = None
        try:
            if self._client is not None:
                self._client.unregister_system_shared_memory(name)
        except Exception:  # noqa: BLE001 - the server is gone
            pass
        shm.destroy_shared_memory_region(handle)

    # ------------------------------------------------------------------ inference

    def run(self, names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        x = np.ascontiguousarray(feeds[self.input_name])
        with self._lock:
            parts = [self._call(names, x[i : i + self.max_batch]) for i in range(0, max(len(x), 1), self.max_batch)]
        return [np.concatenate([p[k] for p in parts]) if len(parts) > 1 else parts[0][k] for k in range(len(names))]

    def _call(self, names: list[str], x: np.ndarray) -> list[np.ndarray]:
        """One call, retried with reconnects (each attempt counted) until ``wait_s`` has passed; at least
        one reconnect is tried. ModelUnavailable after that."""
        deadline = time.monotonic() + self.wait_s
        tries = 0
        while True:
            try:
                return self._infer(names, x)
            except ModelError:
                raise
            except Exception as e:  # noqa: BLE001 - grpc/triton errors: the server is down or slow
                self.failed_calls += 1
                err = _first_line(e)
            tries += 1
            if tries > 1 and time.monotonic() >= deadline:
                raise ModelUnavailable(f"inference server {self.url}: {err}")
            log.warning("model_server_error", url=self.url, error=err, wait_s=self.wait_s)
            while True:  # reconnect: once at least, then until the deadline
                self.reconnect_attempts += 1
                try:
                    self._connect()
                    self.reconnects += 1
                    log.info("model_server_reconnected", url=self.url, reconnects=self.reconnects)
                    break
                except ModelError:
                    raise
                except Exception as e:  # noqa: BLE001
                    err = _first_line(e)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ModelUnavailable(f"inference server {self.url}: {err}")
                time.sleep(min(0.5, left))

    def counters(self) -> dict[str, Any]:
        """For the run summary: the server, failed calls, reconnect attempts and reconnects."""
        return {"url": self.url, "model": self.model_name, "shared_memory": self.shared_memory,
                "failed_calls": self.failed_calls, "reconnect_attempts": self.reconnect_attempts,
                "reconnects": self.reconnects}

    def _infer(self, names: list[str], x: np.ndarray) -> list[np.ndarray]:
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import np_to_triton_dtype

        if self._client is None:
            self._connect()
        inp = grpcclient.InferInput(self.input_name, list(x.shape), np_to_triton_dtype(x.dtype))
        if self.shared_memory:
            import tritonclient.utils.shared_memory as shm

            region = self._region(x.nbytes)
            shm.set_shared_memory_region(self._shm[1], [x])  # type: ignore[index]
            inp.set_shared_memory(region, x.nbytes)
        else:
            inp.set_data_from_numpy(x)
        outs = [grpcclient.InferRequestedOutput(n) for n in names]
        res = self._client.infer(self.model_name, [inp], outputs=outs, client_timeout=self.call_timeout_s)
        return [res.as_numpy(n) for n in names]

    def close(self) -> None:
        with self._lock:
            self._free_region()
            self._close_client()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"
