"""The test kit's fixtures (daemon.testing, loaded through the pytest11 entry point) and the
one import path plugin authors use (daemon.sdk)."""

from __future__ import annotations

from sqlalchemy import inspect

import daemon.sdk as sdk
from daemon.foundation.clock import FakeClock
from daemon.foundation.log import get_logger
from daemon.hookspecs import HOOKSPEC_VERSION, hookimpl
from daemon.runtime.systemd import Notifier
from tests.memremote import MemoryConnector


class MemoryPlugin:
    @hookimpl
    def register_connectors(self, register):
        register(MemoryConnector)


# The names of SDK 1.1, as released: the compatibility promise keeps every one of them while
# the major number stays 1.
SDK_1_1 = {
    "HOOKSPEC_VERSION",
    "SDK_VERSION",
    "AuthFailed",
    "Capabilities",
    "ClientConnector",
    "Clock",
    "Code",
    "Connector",
    "ConnectorConfig",
    "ConnectorContext",
    "ConnectorError",
    "DailyQuota",
    "FakeClock",
    "HttpSession",
    "MalformedResponse",
    "Page",
    "PushItem",
    "PushResult",
    "PushStatus",
    "RateLimited",
    "RateLimiter",
    "RemoteField",
    "RemoteRecord",
    "RetryPolicy",
    "SecretStr",
    "SystemClock",
    "Token",
    "TokenCache",
    "Unauthorized",
    "Unavailable",
    "hookimpl",
    "int_header",
    "interleave",
    "json_answer",
    "json_body",
    "json_cursor",
    "json_or_none",
    "make_client",
    "pages",
    "paginate",
    "prefetch",
    "register_secret",
    "request_with_retries",
    "reveal",
    "text_stream",
}


def test_sdk_exports_every_name_in_all() -> None:
    assert all(hasattr(sdk, name) for name in sdk.__all__)
    assert sdk.HOOKSPEC_VERSION == HOOKSPEC_VERSION


def test_sdk_keeps_every_name_of_its_major_version() -> None:
    assert sdk.SDK_VERSION.split(".")[0] == "1"
    assert set(sdk.__all__) >= SDK_1_1, sorted(SDK_1_1 - set(sdk.__all__))


def test_cs_plugin_manager_registers_for_one_test(cs_plugin_manager) -> None:
    plugin = cs_plugin_manager.register(MemoryPlugin())
    assert cs_plugin_manager.registry().connector("memory") is MemoryConnector
    cs_plugin_manager.unregister_all()
    assert not cs_plugin_manager.pm.is_registered(plugin)


def test_cs_hub_has_the_tables(cs_hub) -> None:
    assert "contact" in inspect(cs_hub).get_table_names()


def test_cs_logs_captures_json_lines(cs_logs) -> None:
    get_logger("kit").info("kit_event", contact_id="c1")
    (line,) = [line for line in cs_logs.lines if line["event"] == "kit_event"]
    assert line["contact_id"] == "c1" and "kit_event" in cs_logs.text


def test_cs_clock_is_a_fake_clock(cs_clock) -> None:
    assert isinstance(cs_clock, FakeClock)
    cs_clock.sleep(60)
    assert cs_clock.slept == 60


def test_cs_notify_socket_receives_sd_notify(cs_notify_socket) -> None:
    notifier = Notifier()
    assert notifier.ready("up")
    assert cs_notify_socket.messages(timeout=1.0) == [{"READY": "1", "STATUS": "up"}]
    notifier.close()
