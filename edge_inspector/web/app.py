"""The web application (Starlette): pages, JSON endpoints, the live event stream (docs/operator.md).

Pages: ``/live`` (the station now), ``/history`` (hides by time, filters), ``/hide?run=R&hide=H``
(zoomable map, defect table). JSON: ``/api/runs``, ``/api/hides``, ``/api/runs/{run}/hides/{id}``,
``/api/runs/{run}/grading.json``, ``/api/live``, ``/api/traffic``; files: hide thumbnails and maps,
per-hide DXF, grading CSV; ``/api/live/events``: server-sent events (edge_inspector/web/live.py).
``{run}`` may be ``latest``.

``Guard`` wraps the app: with a token, every request must carry it (``Authorization: Bearer``, the
``ei_token`` cookie, or ``?token=`` once, which sets the cookie); it counts every byte sent to
browsers by kind (``/api/traffic``), the figure behind "thumbnails and vectors, not raw tiles".
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (FileResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response,
                                 StreamingResponse)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..classes import CLASS_COLORS_BGR
from ..cutting import grading_csv
from .history import BadQuery, NotFound, RunFolder
from .live import LiveFeed

STATIC = Path(__file__).with_name("static")
KEEPALIVE_S = 15.0

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Traffic:
    """Bytes sent to browsers since the server started, by kind (events, thumbnails, api, pages)."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.bytes: dict[str, int] = {}
        self.requests: dict[str, int] = {}

    @staticmethod
    def kind(path: str) -> str:
        if path == "/api/live/events":
            return "events"
        if path.endswith((".jpg", ".png")):
            return "images"
        if path.endswith((".dxf", ".csv")):
            return "files"
        return "api" if path.startswith("/api/") else "pages"

    def add(self, kind: str, n: int) -> None:
        self.bytes[kind] = self.bytes.get(kind, 0) + n

    def as_dict(self) -> dict[str, Any]:
        s = max(1e-6, time.monotonic() - self.started)
        total = sum(self.bytes.values())
        return {"seconds": round(s, 1), "bytes": dict(sorted(self.bytes.items())), "bytes_total": total,
                "bytes_per_s": round(total / s, 1), "requests": dict(sorted(self.requests.items()))}


class Guard:
    """Token check and traffic count around the app (see the module docstring)."""

    def __init__(self, app: ASGIApp, token: str | None, traffic: Traffic) -> None:
        self.app, self.token, self.traffic = app, token, traffic

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        set_cookie = False
        if self.token:
            given, set_cookie = self._given(scope)
            if given is None or not hmac.compare_digest(given.encode(), self.token.encode()):
                await PlainTextResponse("401: this station's web view needs its token: open the address with"
                                        " ?token=TOKEN once, or send 'Authorization: Bearer TOKEN'\n",
                                        status_code=401)(scope, receive, send)
                return
        kind = Traffic.kind(scope["path"])
        self.traffic.requests[kind] = self.traffic.requests.get(kind, 0) + 1

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.traffic.add(kind, 200 + sum(len(k) + len(v) + 4 for k, v in message.get("headers", [])))
                if set_cookie:
                    message.setdefault("headers", [])
                    message["headers"] = [*message["headers"], (
                        b"set-cookie", f"ei_token={self.token}; Path=/; HttpOnly; SameSite=Strict".encode())]
            elif message["type"] == "http.response.body":
                self.traffic.add(kind, len(message.get("body", b"")))
            await send(message)

        await self.app(scope, receive, counting_send)

    @staticmethod
    def _given(scope: Scope) -> tuple[str | None, bool]:
        headers = {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])}
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip(), False
        q = parse_qs(scope.get("query_string", b"").decode()).get("token")
        if q:
            return q[0], True
        cookie = SimpleCookie(headers.get("cookie", ""))
        if "ei_token" in cookie:
            return cookie["ei_token"].value, False
        return None, False


def create_app(run_dir: Path, feed: LiveFeed | None = None, *, token: str | None = None) -> ASGIApp:
    """The ASGI app for ``run_dir`` (history) and, when given, the live ``feed``."""
    folder = RunFolder(run_dir)
    traffic = Traffic()

    def page(name: str) -> Callable[[Request], Awaitable[Response]]:
        async def handler(request: Request) -> Response:
            return FileResponse(STATIC / name, media_type="text/html")
        return handler

    async def index(request: Request) -> Response:
        return RedirectResponse("/live" if feed is not None else "/history")

    async def api_info(request: Request) -> Response:
        return JSONResponse({"run_dir": str(folder.path.resolve()), "live": feed is not None,
                             "endpoint": feed.endpoint if feed is not None else None})

    async def api_runs(request: Request) -> Response:
        return JSONResponse({"runs": await asyncio.to_thread(folder.runs)})

    async def api_hides(request: Request) -> Response:
        return JSONResponse(await asyncio.to_thread(folder.hides, dict(request.query_params)))

    async def api_hide(request: Request) -> Response:
        p = request.path_params
        return JSONResponse(await asyncio.to_thread(folder.hide, p["run"], int(p["hide"])))

    async def api_thumb(request: Request) -> Response:
        p = request.path_params
        w = int(request.query_params.get("w", "480") or 480)
        data = await asyncio.to_thread(folder.thumbnail, p["run"], int(p["hide"]), w)
        return Response(data, media_type="image/jpeg", headers={"cache-control": "max-age=60"})

    async def api_map(request: Request) -> Response:
        p = request.path_params
        rid = folder.run_id(p["run"])
        png = folder.map_path(rid, int(p["hide"]))
        if png is None:
            raise NotFound(f"no hide map of run {rid} hide {p['hide']}")
        return FileResponse(png, media_type="image/png")

    async def api_dxf(request: Request) -> Response:
        p = request.path_params
        data = await asyncio.to_thread(folder.dxf, p["run"], int(p["hide"]))
        name = f"run{folder.run_id(p['run'])}-hide-{int(p['hide']):04d}.dxf"
        return Response(data, media_type="image/vnd.dxf",
                        headers={"content-disposition": f'attachment; filename="{name}"'})

    async def api_grading(request: Request) -> Response:
        if request.path_params["fmt"] not in ("csv", "json"):
            raise NotFound("grading.csv or grading.json")
        rep = await asyncio.to_thread(folder.grading, request.path_params["run"])
        if request.path_params["fmt"] == "csv":
            return Response(grading_csv(rep), media_type="text/csv", headers={
                "content-disposition": f'attachment; filename="run{rep["run_id"]}-grading.csv"'})
        return JSONResponse(rep)

    async def api_live(request: Request) -> Response:
        if feed is None:
            raise NotFound("no live station: this server shows a run folder (start it with replay/run --web,"
                           " or edge-inspector web RUN_DIR --events ENDPOINT)")
        return JSONResponse(feed.snapshot())

    async def api_events(request: Request) -> Response:
        if feed is None:
            raise NotFound("no live station")
        return StreamingResponse(_sse(request, feed), media_type="text/event-stream",
                                 headers={"cache-control": "no-store", "x-accel-buffering": "no"})

    async def api_classes(request: Request) -> Response:
        return JSONResponse({"colors": {n: "#%02x%02x%02x" % (r, g, b) for n, (b, g, r) in CLASS_COLORS_BGR.items()}})

    async def api_traffic(request: Request) -> Response:
        out = traffic.as_dict()
        if feed is not None:
            out["live_pages"] = feed.n_clients
            out["messages_dropped_for_slow_pages"] = feed.dropped
        return JSONResponse(out)

    async def not_found(request: Request, exc: Exception) -> Response:
        return JSONResponse({"error": str(exc)}, status_code=404)

    async def bad_query(request: Request, exc: Exception) -> Response:
        return JSONResponse({"error": str(exc)}, status_code=400)

    routes = [
        Route("/", index),
        Route("/live", page("live.html")),
        Route("/history", page("history.html")),
        Route("/hide", page("hide.html")),
        Route("/api", api_info),
        Route("/api/runs", api_runs),
        Route("/api/hides", api_hides),
        Route("/api/runs/{run}/hides/{hide:int}", api_hide),
        Route("/api/runs/{run}/hides/{hide:int}.dxf", api_dxf),
        Route("/api/runs/{run}/hides/{hide:int}/thumb.jpg", api_thumb),
        Route("/api/runs/{run}/hides/{hide:int}/map.png", api_map),
        Route("/api/runs/{run}/grading.{fmt:str}", api_grading),
        Route("/api/live", api_live),
        Route("/api/live/events", api_events),
        Route("/api/traffic", api_traffic),
        Route("/api/classes", api_classes),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={NotFound: not_found, BadQuery: bad_query})
    return Guard(app, token, traffic)


async def _sse(request: Request, feed: LiveFeed) -> AsyncIterator[bytes]:
    """Server-sent events: the snapshot, then every live message; a comment line keeps proxies open."""
    q = feed.connect()
    try:
        yield f"data: {json.dumps(feed.snapshot(), separators=(',', ':'))}\n\n".encode()
        while True:
            try:
                text = await asyncio.wait_for(q.get(), timeout=KEEPALIVE_S)
            except TimeoutError:
                if await request.is_disconnected():
                    return
                yield b": keep-alive\n\n"
                continue
            yield f"data: {text}\n\n".encode()
    finally:
        feed.disconnect(q)
