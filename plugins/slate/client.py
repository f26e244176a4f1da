"""Slate's wire protocol: the query web service (pull) and the upload dataset (push).

Retries, back-off, ``Retry-After`` and the mapping of 401/5xx to connector errors come from
:class:`daemon.sdk.HttpSession`; this module adds what is Slate's own:

- auth: the web service's user token in ``h``, or HTTP Basic with a service account (the
  only way to post to a source format);
- the query's JSON, ``{"row": [{...}, ...]}``, read as a **stream**: Slate does not page, so
  one answer may hold 100,000 rows; :class:`RowStream` hands them out one at a time while
  the body is still arriving, and memory holds one row plus one network chunk. A missing
  ``row`` is no rows and an object where the array belongs is one row (Slate's shape for
  0 and 1 rows is not documented), anything else is :class:`MalformedResponse`;
- the body is received at the network's pace, not the engine's: :func:`spooled` lands it in
  a temporary file from a background thread while the rows are parsed from that file, so a
  pull that commits slowly never leaves Slate's connection stalled (a server drops a
  connection it cannot write to for long);
- ``POST /manage/service/import?cmd=load&format=<guid>`` paced by a shared
  :class:`~daemon.sdk.RateLimiter` at Slate's 50 posts per 5 minutes.
"""

from __future__ import annotations

import codecs
import json
import os
import re
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Unpack

import httpx

from daemon.sdk import (
    AuthFailed,
    ClientSeams,
    MalformedResponse,
    PlatformClient,
    RateLimiter,
    Unavailable,
)

QUERY_PATH = "/manage/query/run"
IMPORT_PATH = "/manage/service/import"
UPLOAD_LIMIT = (50, 300.0)  # "The Upload Dataset rate limit is 50 posts in a 5 minute window."
COMPACT_AT = 1 << 16  # drop consumed text from the buffer once this much has piled up
READ_CHUNK = 1 << 16
_WHITESPACE = " \t\r\n"


class RowStream:
    """The rows of a ``{"row": [...]}`` document, parsed as its bytes arrive.

    Each array element is decoded by the C JSON decoder (``raw_decode``) once the buffer
    holds all of it; an element cut by a chunk boundary waits for the next chunk. Keys other
    than ``row`` are decoded and ignored. ``chunks_read`` counts the chunks consumed so far
    (a test can see rows come out before the body ends).
    """

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self._json = json.JSONDecoder()
        self._buf = ""
        self._pos = 0
        self._eof = False
        self.chunks_read = 0

    def _fill(self) -> bool:
        """Append the next chunk's text; ``False`` at the end of the body."""
        if self._eof:
            return False
        try:
            chunk = next(self._chunks, None)
            text = self._decoder.decode(chunk or b"", final=chunk is None)
        except UnicodeDecodeError as exc:
            raise MalformedResponse(f"Slate's answer is not UTF-8: {exc.reason}") from None
        if chunk is None:
            self._eof = True
        else:
            self.chunks_read += 1
        if self._pos > COMPACT_AT:
            self._buf, self._pos = self._buf[self._pos :], 0
        self._buf += text
        return chunk is not None or bool(text)

    def _peek(self) -> str | None:
        """The next non-blank character (not consumed), or ``None`` at the end."""
        while True:
            while self._pos < len(self._buf) and self._buf[self._pos] in _WHITESPACE:
                self._pos += 1
            if self._pos < len(self._buf):
                return self._buf[self._pos]
            if not self._fill():
                return None

    def _expect(self, chars: str, where: str) -> str:
        found = self._peek()
        if found is None or found not in chars:
            shown = "the end" if found is None else repr(found)
            raise MalformedResponse(f"Slate's answer is not JSON: {shown} {where}")
        self._pos += 1
        return found

    def _value(self) -> Any:
        """Decode the JSON value at the cursor, reading more chunks until it is whole."""
        self._peek()
        while True:
            try:
                value, end = self._json.raw_decode(self._buf, self._pos)
            except json.JSONDecodeError as exc:
                # Incomplete (cut by a chunk) or invalid: only the end of the body tells.
                if self._fill():
                    continue
                raise MalformedResponse(f"Slate's answer is not JSON: {exc.msg}") from None
            # A number or literal at the buffer's end may go on in the next chunk ("12" "34").
            partial = end == len(self._buf) and not isinstance(value, dict | list | str)
            if partial and self._fill():
                continue
            self._pos = end
            return value

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self._expect("{", "where the answer should start")
        if self._peek() == "}":
            self._pos += 1
        else:
            while True:
                key = self._value()
                if not isinstance(key, str):
                    raise MalformedResponse("Slate's answer is not JSON: a key is not a string")
                self._expect(":", f"after key {key!r}")
                if key == "row":
                    yield from self._rows()
                else:
                    self._value()
                if self._expect(",}", "between keys") == "}":
                    break
        if self._peek() is not None:
            raise MalformedResponse("Slate's answer is not JSON: text after the document")

    def _rows(self) -> Iterator[dict[str, Any]]:
        first = self._peek()
        if first == "[":
            self._pos += 1
            if self._peek() == "]":
                self._pos += 1
                return
            while True:
                yield _row(self._value())
                if self._expect(",]", "between rows") == "]":
                    return
        value = self._value()
        if value is not None:  # one row as an object; null as none
            yield _row(value)


def spooled(chunks: Iterable[bytes], read_chunk: int = READ_CHUNK) -> Iterator[bytes]:
    """``chunks`` again, received into a temporary file by a background thread.

    The thread drains the network as fast as it delivers; the caller reads the file behind
    it at its own pace, ``read_chunk`` bytes at a time (memory stays bounded; the body's size
    goes to disk). An error while receiving is raised in the caller once it has read what
    arrived before it; a caller that stops early makes the thread stop at its next chunk
    (closing the response ends a thread waiting on the network).
    """
    # Closed by whichever of the two sides finishes last, so the thread never writes to a
    # closed descriptor (or to a file that reused its number).
    spool = tempfile.TemporaryFile(prefix="contactsync-slate-")  # noqa: SIM115
    fd = spool.fileno()
    ready = threading.Condition()
    state: dict[str, Any] = {"written": 0, "done": False, "error": None, "abandoned": False}

    def receive() -> None:
        try:
            for chunk in chunks:
                if state["abandoned"]:
                    break
                os.write(fd, chunk)
                with ready:
                    state["written"] += len(chunk)
                    ready.notify_all()
        except BaseException as exc:  # handed to the caller, in order
            state["error"] = exc
        finally:
            with ready:
                state["done"] = True
                ready.notify_all()
                if state["abandoned"]:
                    spool.close()

    thread = threading.Thread(target=receive, name="slate-spool", daemon=True)
    thread.start()
    offset = 0
    try:
        while True:
            with ready:
                while state["written"] <= offset and not state["done"]:
                    ready.wait()
                written, done, error = state["written"], state["done"], state["error"]
            if written > offset:
                data = os.pread(fd, min(read_chunk, written - offset), offset)
                offset += len(data)
                yield data
            elif done:
                if error is not None:
                    raise error
                return
    finally:
        with ready:
            state["abandoned"] = True
            if state["done"]:
                spool.close()


def _row(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedResponse(f"a Slate row is not an object: {type(value).__name__}")
    return value


class SlateClient(PlatformClient):
    """One Slate instance's query web service and upload dataset."""

    def __init__(
        self,
        *,
        base_url: str,
        query_id: str,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        format_id: str | None = None,
        upload_limit: tuple[int, float] = UPLOAD_LIMIT,
        timeout: float = 300.0,
        **seams: Unpack[ClientSeams],
    ) -> None:
        super().__init__(secrets=(token, password), **seams)
        self.query_id = query_id
        self.format_id = format_id
        self._token = token
        if not token and not (username and password):
            raise AuthFailed("Slate needs a user token, or username and password")
        auth = (username, password) if username and password else None
        # Slate may take minutes to run a big query: the read timeout is the query's.
        pool = self.open_pool(
            base_url.rstrip("/"), auth=auth, timeout=httpx.Timeout(timeout, connect=10.0)
        )
        self.session = self.open_session(pool)
        self.upload_limiter = RateLimiter(*upload_limit, self.clock, name="slate-upload")
        self.upload_session = self.open_session(pool, limiter=self.upload_limiter)
        self.has_basic = auth is not None

    def query(self, params: Mapping[str, str] | None = None) -> Iterator[dict[str, Any]]:
        """The query's rows, streamed; ``params`` are its custom parameters (``since``)."""
        query = {"id": self.query_id, "cmd": "service", "output": "json", **(params or {})}
        if self._token and not self.has_basic:
            query["h"] = self._token
        response = self.session.get(QUERY_PATH, params=query, stream=True)
        try:
            if response.status_code >= 300:
                response.read()
                raise MalformedResponse(
                    f"GET {QUERY_PATH}: HTTP {response.status_code}: {_text(response)}"
                )
            yield from RowStream(spooled(response.iter_bytes()))
        except httpx.DecodingError as exc:
            raise MalformedResponse(f"GET {QUERY_PATH}: undecodable answer: {exc}") from exc
        except httpx.TransportError as exc:  # the connection broke mid-body
            raise Unavailable(f"GET {QUERY_PATH}: the answer broke off: {exc}") from exc
        finally:
            response.close()

    def upload(self, body: bytes, content_type: str = "text/csv") -> None:
        """Post one file to the source format; accepted (200) means queued for import."""
        if not self.format_id:
            raise MalformedResponse("posting to Slate needs the source format's id (format_id)")
        if not self.has_basic:
            raise AuthFailed("posting to a Slate source format needs username and password")
        # Sending a file twice imports the same rows twice, which the source format matches
        # to the same people (by the hub id column): safe to repeat after a timeout.
        response = self.upload_session.post(
            IMPORT_PATH,
            params={"cmd": "load", "format": self.format_id},
            content=body,
            headers={"Content-Type": content_type},
            idempotent=True,
        )
        if response.status_code != 200:
            raise MalformedResponse(
                f"POST {IMPORT_PATH}: HTTP {response.status_code}: {_text(response)}"
            )


def _text(response: httpx.Response) -> str:
    """A short, tag-free excerpt of an error body (Slate answers errors in HTML)."""
    text = re.sub(r"<[^>]+>", " ", response.text)
    return " ".join(text.split())[:200] or response.reason_phrase
