"""What the API reads of a request before a route sees it: bounded in size, in time and in kind.

- A body over :data:`MAX_BODY_BYTES` is ``413 api-body-too-large``: at once when its
  ``Content-Length`` says so, else as soon as the bytes read pass the bound (a chunked body),
  so no body is ever held in memory past it. The largest legitimate body, a batch of 1,000
  records, is well under it.
- A body still arriving :data:`BODY_SECONDS` after its first read is ``408
  api-body-too-large``. uvicorn times out an idle keep-alive connection, never a request whose
  body trickles in a byte at a time, which would hold a worker thread for as long as the
  client likes (slowloris).
- A NUL in the path or the query string is ``400 api-invalid-request``. PostgreSQL text cannot
  hold one, so it would reach the database as a search or an id and come back as a 500. A NUL
  inside a JSON body is the incoming rules' to refuse (``control-character-in-value``).

The refusals raise Starlette's ``HTTPException`` from ``receive``: FastAPI passes it through
its body parsing, and :mod:`daemon.api.errors` turns it into the one error shape.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.exceptions import HTTPException

from daemon.api.errors import error_json
from daemon.foundation.dictionary import Code

MAX_BODY_BYTES = 4 * 1024 * 1024
"""The largest body read. A batch of 1,000 full records with custom fields is about 1 MiB."""
BODY_SECONDS = 60.0
"""How long a body may take from its first read to its last byte."""
TOO_LARGE = f"the body is over {MAX_BODY_BYTES // (1024 * 1024)} MiB; send fewer records"
TOO_SLOW = "the body took too long to arrive; send it at once"
NUL_IN_URL = "the path or the query holds a NUL character"


def _has_nul(scope: dict[str, Any]) -> bool:
    raw = (scope.get("raw_path") or b"") + b"?" + (scope.get("query_string") or b"")
    return b"\x00" in raw or b"%00" in raw or "\x00" in scope.get("path", "")


class RequestLimits:
    """The ASGI middleware that holds every request to the bounds above."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if _has_nul(scope):
            await self._refuse(scope, send, 400, Code.API_INVALID_REQUEST, NUL_IN_URL)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
            # Refused before a byte of it is read; the connection closes with the answer.
            await self._refuse(scope, send, 413, Code.API_BODY_TOO_LARGE, TOO_LARGE)
            return
        await self.app(scope, _BoundedBody(receive), send)

    @staticmethod
    async def _refuse(
        scope: dict[str, Any], send: Any, status: int, code: Code, message: str
    ) -> None:
        scope.setdefault("state", {})["error_code"] = str(code)  # for the access line
        await error_json(status, code, message, headers={"Connection": "close"})(
            scope, _no_body, send
        )


async def _no_body() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


class _BoundedBody:
    """``receive`` that counts the body's bytes and times it; past the body it is the
    server's own ``receive`` again (a route may wait on it for the client leaving)."""

    def __init__(self, receive: Any) -> None:
        self.receive = receive
        self.read = 0
        self.done = False
        self.deadline: float | None = None

    async def __call__(self) -> dict[str, Any]:
        if self.done:
            return await self.receive()  # type: ignore[no-any-return]
        loop = asyncio.get_running_loop()
        if self.deadline is None:
            self.deadline = loop.time() + BODY_SECONDS
        try:
            message: dict[str, Any] = await asyncio.wait_for(
                self.receive(), max(0.0, self.deadline - loop.time())
            )
        except TimeoutError:
            raise HTTPException(408, TOO_SLOW) from None
        if message["type"] != "http.request":
            self.done = True
            return message
        self.read += len(message.get("body", b""))
        if self.read > MAX_BODY_BYTES:
            raise HTTPException(413, TOO_LARGE)
        self.done = not message.get("more_body", False)
        return message
