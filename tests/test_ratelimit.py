"""The rate limiter and the daily quota, on a FakeClock: windows cost nothing to wait out."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.foundation.clock import Cancelled, FakeClock
from daemon.kit.connector import RateLimited
from daemon.kit.ratelimit import DailyQuota, RateLimiter


def assert_within_limit(grants: list[float], limit: int, window: float) -> None:
    """No window of ``window`` seconds (half-open, as the limiter counts) holds > ``limit``."""
    grants = sorted(grants)
    for i, start in enumerate(grants):
        inside = [g for g in grants[i:] if g < start + window]
        assert len(inside) <= limit, f"{len(inside)} grants in the window from {start}"


def test_the_first_calls_of_a_window_do_not_wait():
    clock = FakeClock()
    limiter = RateLimiter(5, 10, clock)
    for _ in range(5):
        assert limiter.acquire() == 0
    assert clock.sleeps == []
    assert limiter.available() == 0


def test_the_next_call_waits_for_the_window_to_slide():
    clock = FakeClock()
    limiter = RateLimiter(3, 10, clock)
    for _ in range(3):
        limiter.acquire()
        clock.advance(1)
    # Grants at 0, 1, 2; now 3: the one at 0 leaves the window at 10.
    assert limiter.acquire() == pytest.approx(7)
    assert clock.monotonic() == pytest.approx(10)


@settings(max_examples=40, deadline=None)
@given(
    limit=st.integers(1, 8),
    window=st.floats(0.5, 20),
    gaps=st.lists(st.floats(0, 5), min_size=1, max_size=60),
)
def test_never_more_than_limit_per_window(limit, window, gaps):
    clock = FakeClock()
    grants: list[float] = []
    limiter = RateLimiter(limit, window, clock, on_grant=grants.append)
    for gap in gaps:
        clock.advance(gap)
        limiter.acquire()
    assert len(grants) == len(gaps)
    assert_within_limit(grants, limit, window)


def test_threads_sharing_a_limiter_never_exceed_it():
    clock = FakeClock()
    grants: list[float] = []
    limiter = RateLimiter(4, 1.0, clock, on_grant=grants.append)

    def worker() -> None:
        for _ in range(25):
            limiter.acquire()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(grants) == 200
    assert_within_limit(grants, 4, 1.0)


def test_try_acquire_never_waits():
    clock = FakeClock()
    limiter = RateLimiter(2, 5, clock)
    assert limiter.try_acquire()
    assert limiter.try_acquire()
    assert not limiter.try_acquire()
    assert clock.sleeps == []


def test_platform_headers_slow_it_down():
    clock = FakeClock()
    grants: list[float] = []
    limiter = RateLimiter(100, 10, clock, on_grant=grants.append)
    limiter.acquire()
    # Another client shares the account: the platform says only 4 calls remain for 8 s.
    limiter.update_from_headers(4, reset_seconds=8)
    for _ in range(5):
        limiter.acquire()
    # The calls that remain are spread evenly up to the reset instead of spent in one burst;
    # after the reset the limiter's own limit rules again.
    assert grants == pytest.approx([0, 2, 4, 6, 8, 8])
    limiter.acquire()
    assert clock.monotonic() == pytest.approx(8)


def test_remaining_zero_waits_for_the_reset():
    clock = FakeClock()
    limiter = RateLimiter(100, 10, clock)
    limiter.update_from_headers(0, reset_seconds=3.5)
    limiter.acquire()
    assert clock.monotonic() == pytest.approx(3.5)


def test_a_platform_figure_above_ours_changes_nothing():
    clock = FakeClock()
    limiter = RateLimiter(10, 10, clock)
    for _ in range(5):
        limiter.acquire()
    limiter.update_from_headers(50, reset_seconds=10)  # stale or generous: ignored
    assert limiter.available() == 5


def test_headers_can_replace_the_declared_limit_and_window():
    clock = FakeClock()
    limiter = RateLimiter(100, 10, clock)
    limiter.update_from_headers(None, limit=2, window_seconds=1)
    assert (limiter.limit, limiter.window_seconds) == (2, 1)
    limiter.acquire()
    limiter.acquire()
    limiter.acquire()
    assert clock.monotonic() == pytest.approx(1)


def test_pause_holds_every_caller_off():
    clock = FakeClock()
    limiter = RateLimiter(100, 10, clock)
    limiter.pause(30)
    assert not limiter.try_acquire()
    limiter.acquire()
    assert clock.monotonic() == pytest.approx(30)


def test_acquire_is_cancellable():
    clock = FakeClock()
    limiter = RateLimiter(1, 60, clock)
    limiter.acquire()
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        limiter.acquire(cancel)


def test_bad_limits_are_refused():
    with pytest.raises(ValueError):
        RateLimiter(0, 10)
    with pytest.raises(ValueError):
        DailyQuota(100, stop_at_share=0)


# --- daily quota ------------------------------------------------------------------------------


def test_daily_quota_stops_at_its_share():
    clock = FakeClock(datetime(2025, 3, 1, 18, 0, tzinfo=UTC))
    quota = DailyQuota(100, stop_at_share=0.8, clock=clock)
    for _ in range(80):
        quota.spend()
    with pytest.raises(RateLimited) as info:
        quota.spend()
    assert info.value.code == "remote-rate-limited"
    assert info.value.retry_after == pytest.approx(6 * 3600)  # until the next UTC midnight
    assert "80%" in info.value.message
    assert quota.used == 80


def test_the_platforms_count_is_the_truth():
    clock = FakeClock()
    quota = DailyQuota(None, stop_at_share=0.5, clock=clock, name="salesforce")
    quota.spend()  # no limit known yet: nothing enforced
    quota.update(used=7450, limit=15000)  # Sforce-Limit-Info: api-usage=7450/15000
    quota.check()
    quota.update(used=7500)
    with pytest.raises(RateLimited, match="salesforce: daily API quota: 7500 of 15000"):
        quota.check()


def test_the_quota_resets_with_the_day():
    clock = FakeClock(datetime(2025, 3, 1, 23, 0, tzinfo=UTC))
    quota = DailyQuota(10, stop_at_share=1.0, clock=clock)
    for _ in range(10):
        quota.spend()
    with pytest.raises(RateLimited):
        quota.spend()
    clock.advance(3600)
    quota.spend()
    assert quota.used == 1


def test_a_custom_reset_time():
    clock = FakeClock(datetime(2025, 3, 1, 10, 0, tzinfo=UTC))
    quota = DailyQuota(
        1, stop_at_share=1.0, clock=clock, resets_at=lambda now: now + timedelta(hours=24)
    )
    quota.spend()
    with pytest.raises(RateLimited) as info:
        quota.spend()
    assert info.value.retry_after == pytest.approx(24 * 3600)


def test_a_rolling_window_frees_unseen_calls_one_by_one():
    clock = FakeClock()
    grants: list[float] = []
    limiter = RateLimiter(10, 10, clock, on_grant=grants.append)
    limiter.acquire()
    # The platform counts 5 more calls than we made (another client of the account): in a
    # rolling window they leave as they came, spread over it, not all after a full window.
    limiter.update_from_headers(4)
    assert limiter.available() == 4
    for _ in range(6):
        limiter.acquire()
    assert grants[:5] == [0, 0, 0, 0, 0]
    assert grants[5] == pytest.approx(2)  # the first unseen call leaves after 2 s, not 10
    assert grants[6] == pytest.approx(4)


def test_a_rolling_window_figure_at_or_above_ours_changes_nothing():
    clock = FakeClock()
    limiter = RateLimiter(10, 10, clock)
    for _ in range(3):
        limiter.acquire()
    limiter.update_from_headers(7)
    limiter.update_from_headers(9)
    assert limiter.available() == 7


def test_a_margin_keeps_each_grant_a_little_longer():
    clock = FakeClock()
    grants: list[float] = []
    limiter = RateLimiter(2, 10, clock, on_grant=grants.append, margin_seconds=0.25)
    for _ in range(3):
        limiter.acquire()
    # The platform counts the first call from its arrival, a latency after our grant: the
    # third call waits the window plus the margin, not the bare window.
    assert grants == pytest.approx([0, 0, 10.25])
    with pytest.raises(ValueError):
        RateLimiter(2, 10, margin_seconds=-1)
