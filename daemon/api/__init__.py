"""The daemon's HTTP face: a REST API over the hub (FastAPI on uvicorn).

One router module per resource (:mod:`~daemon.api.contacts`, :mod:`~daemon.api.fields`), all
assembled by :func:`~daemon.api.app.create_app`; :mod:`~daemon.api.server` runs it inside the
daemon or alone. This layer sits between the runtime (which starts it) and the engine.
"""
