"""The base of a plugin's wire client: the seams it is built with and the sessions it opens.

Every platform client (HubSpot, Salesforce, Slate, Ethos) is built with the three seams that
:class:`~daemon.kit.connector.ClientConnector` keeps, ``clock``, ``retry`` and ``transport``,
and opens one or more :class:`~daemon.kit.http.HttpSession` over them. :class:`PlatformClient`
holds that once, so that:

- every session a client opens runs on the client's clock, retry policy and transport (a
  test's fake clock and mock transport reach every request, token grants included);
- every credential the client is given is registered as a secret before its first request,
  so no log line or error shows it;
- :meth:`PlatformClient.close` closes each connection pool the client opened, once, however
  many sessions share it.

A client declares its own options and takes the seams as ``**seams: Unpack[ClientSeams]``::

    class AcmeClient(PlatformClient):
        def __init__(self, *, base_url: str, token: str, **seams: Unpack[ClientSeams]) -> None:
            super().__init__(secrets=(token,), **seams)
            self.session = self.open_session(self.open_pool(base_url))
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypedDict

import httpx

from daemon.foundation.clock import Clock, SystemClock
from daemon.foundation.log import register_secret
from daemon.kit.http import HttpSession, RetryPolicy, make_client


class ClientSeams(TypedDict, total=False):
    """The keyword arguments every platform client takes and hands to :class:`PlatformClient`:
    ``clock`` (``None``: the system clock), ``retry`` (``None``: the session's default policy)
    and ``transport`` (an ``httpx`` transport, e.g. a mock; ``None``: the network)."""

    clock: Clock | None
    retry: RetryPolicy | None
    transport: httpx.BaseTransport | None


class PlatformClient:
    """Base of a plugin's client for its platform. See the module docstring.

    ``secrets`` are the credentials from config (``None`` and empty ones are skipped); they
    are registered as secrets at once. :attr:`clock` is the client's clock, for token expiry,
    pacing and waits.
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        secrets: Iterable[str | None] = (),
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        self.retry = retry
        self.transport = transport
        for secret in secrets:
            if secret:
                register_secret(secret)
        self._pools: list[httpx.Client] = []

    def open_pool(self, base_url: str = "", **options: Any) -> httpx.Client:
        """A connection pool on the client's transport (:func:`~daemon.kit.http.make_client`
        with ``options``: ``auth``, ``timeout``, ``headers`` …), closed by :meth:`close`."""
        pool = make_client(base_url, transport=self.transport, **options)
        self._pools.append(pool)
        return pool

    def open_session(self, pool: httpx.Client, **options: Any) -> HttpSession:
        """An :class:`~daemon.kit.http.HttpSession` over ``pool`` with the client's clock and
        retry policy; ``options`` are the session's own (``limiter``, ``quota``,
        ``on_response``, ``classify``). Sessions may share a pool."""
        return HttpSession(pool, clock=self.clock, retry=self.retry, **options)

    def close(self) -> None:
        """Close every connection pool this client opened."""
        for pool in self._pools:
            pool.close()
