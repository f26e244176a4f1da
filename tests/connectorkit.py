"""What the connector unit tests share: a connector built from settings, and a whole pull."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from daemon.foundation.clock import Clock
from daemon.sdk import Connector, ConnectorContext, RemoteRecord

C = TypeVar("C", bound=Connector)


def build(
    cls: type[C],
    defaults: Mapping[str, Any],
    settings: Mapping[str, Any],
    context: ConnectorContext,
    clock: Clock,
    **options: Any,
) -> C:
    """``cls`` configured by ``defaults`` overridden by ``settings``, on ``clock``."""
    config = cls.Config.model_validate({**defaults, **settings})  # type: ignore[attr-defined]
    return cls(config, context, clock=clock, **options)  # type: ignore[call-arg]


def pull_counted(connector: Connector, cursor: str | None) -> tuple[list[RemoteRecord], str, int]:
    """Every record of one pull from ``cursor``, the last cursor a page gave (``cursor``
    when none did; there must be one) and how many pages the pull took."""
    records: list[RemoteRecord] = []
    final = cursor
    pages = 0
    for page in connector.pull(cursor):
        pages += 1
        records.extend(page.records)
        final = page.cursor or final
    assert final is not None
    return records, final, pages


def pull_all(connector: Connector, cursor: str | None) -> tuple[list[RemoteRecord], str]:
    """Every record of one pull from ``cursor``, and the last cursor a page gave."""
    records, final, _ = pull_counted(connector, cursor)
    return records, final
