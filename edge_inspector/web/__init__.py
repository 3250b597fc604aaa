"""The operator's view in a browser: ``edge-inspector web RUN_DIR``, ``replay --web``, ``run --web``.

- ``app.py``: the Starlette app (pages, JSON endpoints, server-sent events, token guard, traffic count);
- ``history.py``: past runs from the run folder's ``results.sqlite`` (read-only);
- ``live.py``: the station's ZeroMQ events (docs/events.md) as small browser messages;
- ``server.py``: address and token rules, uvicorn in a thread;
- ``attach.py``: wiring for ``replay --web`` / ``run --web`` / ``web --events``;
- ``static/``: the pages (plain HTML, CSS and JavaScript; no build step, no external assets).

Routes and the JSON they return: docs/operator.md.
"""
