"""Pacing requests to a platform: a sliding-window rate limiter and a daily quota.

Both are shared by every thread that talks to one platform account, and both wait or count
through the injectable clock. The limiter starts from the limit the connector declares and
listens to the platform: a connector feeds it the headers each response carries (HubSpot's
``X-HubSpot-RateLimit-Remaining`` / ``-Max`` / ``-Interval-Milliseconds``, for example), and
when the platform says fewer calls remain than the limiter thought, because another client
shares the account, the limiter spreads the calls that remain over the time left.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta

from daemon.foundation.clock import SYSTEM_CLOCK, Clock, check_cancel
from daemon.kit.connector import RateLimited

MIN_WAIT = 1e-6


class RateLimiter:
    """At most ``limit`` grants in any ``window_seconds``, shared safely between threads.

    ``acquire()`` blocks (on the clock) until a call may be made. ``on_grant`` is called under
    the lock with the monotonic time of each grant (for metrics and tests).
    """

    def __init__(
        self,
        limit: int,
        window_seconds: float,
        clock: Clock = SYSTEM_CLOCK,
        *,
        name: str = "",
        on_grant: Callable[[float], None] | None = None,
        margin_seconds: float = 0.0,
    ) -> None:
        if limit < 1 or window_seconds <= 0 or margin_seconds < 0:
            raise ValueError("a rate limit needs limit >= 1, a positive window and margin >= 0")
        self.name = name
        self._limit = limit
        self._window = float(window_seconds)
        self._clock = clock
        self._on_grant = on_grant
        # A call counts from when we grant it, but the platform counts it when it arrives,
        # a latency later; when latencies differ (concurrent calls, a loaded host), a slot we
        # think free may not be free there yet. The margin keeps each grant that much longer.
        self._margin = float(margin_seconds)
        self._lock = threading.Lock()
        self._grants: deque[float] = deque()
        self._paused_until = -math.inf
        # What the platform last said: `budget` calls left until `budget_until`, one per
        # `spacing` seconds so they are not all spent in one burst.
        self._budget: int | None = None
        self._budget_until = -math.inf
        self._spacing = 0.0
        self._last_grant = -math.inf

    @property
    def limit(self) -> int:
        """Grants allowed per window (the platform's figure once it has sent one)."""
        return self._limit

    @property
    def window_seconds(self) -> float:
        """The window's length in seconds."""
        return self._window

    def acquire(self, cancel: threading.Event | None = None) -> float:
        """Wait until a call may be made and count it; return the seconds waited.

        Raises :class:`daemon.foundation.clock.Cancelled` once ``cancel`` is set.
        """
        waited = 0.0
        while True:
            check_cancel(cancel)
            with self._lock:
                now = self._clock.monotonic()
                wait = self._wait(now)
                if wait <= 0:
                    self._grant(now)
                    return waited
            # At least a microsecond: a wait of one rounding error must still move the clock.
            wait = max(wait, MIN_WAIT)
            self._clock.sleep(wait, cancel)
            waited += wait

    def try_acquire(self) -> bool:
        """Count a call if one may be made right now; never waits."""
        with self._lock:
            now = self._clock.monotonic()
            if self._wait(now) > 0:
                return False
            self._grant(now)
            return True

    def pause(self, seconds: float) -> None:
        """Grant nothing for ``seconds`` (a 429's ``Retry-After``): every thread holds off."""
        with self._lock:
            until = self._clock.monotonic() + max(0.0, seconds)
            self._paused_until = max(self._paused_until, until)

    def update_from_headers(
        self,
        remaining: int | None,
        *,
        limit: int | None = None,
        window_seconds: float | None = None,
        reset_seconds: float | None = None,
    ) -> None:
        """Take in what the platform says about its own window.

        ``remaining`` calls are left in the platform's window. With ``reset_seconds`` the
        window is fixed and resets then: the calls left are spread evenly up to the reset.
        Without it the window is rolling (HubSpot's ten-secondly limit): the calls the
        platform counts and we do not (another client of the same account, or requests we
        granted that it has not yet let go of) are taken in as calls of our own, spread over
        the window, so they free up one by one as a rolling window frees them, rather than
        holding everything off for a whole window. ``limit`` and ``window_seconds`` replace
        the declared ones. The platform can only slow the limiter down, never speed it past
        its limit; a figure higher than one already in force is taken as stale and ignored.
        """
        with self._lock:
            if limit is not None and limit >= 1:
                self._limit = limit
            if window_seconds is not None and window_seconds > 0:
                self._window = float(window_seconds)
            if remaining is None:
                return
            now = self._clock.monotonic()
            self._prune(now)
            remaining = max(0, remaining)
            ours = self._limit - len(self._grants)
            if reset_seconds is None:
                self._add_unseen(min(ours - remaining, self._limit), now)
                return
            budget_active = self._budget is not None and now < self._budget_until
            if remaining >= ours or (budget_active and remaining >= (self._budget or 0)):
                return
            horizon = max(0.0, reset_seconds)
            self._budget = remaining
            self._budget_until = now + horizon
            self._spacing = horizon / remaining if remaining else 0.0

    def _add_unseen(self, count: int, now: float) -> None:
        """Count ``count`` calls the platform saw and we did not, as if made evenly over the
        last window (so they leave it evenly over the next). Called under the lock."""
        if count <= 0:
            return
        step = self._window / count
        unseen = [now - self._window + step * (i + 1) for i in range(count)]
        self._grants = deque(sorted([*self._grants, *unseen]))

    def available(self) -> int:
        """How many calls could be made right now without waiting."""
        with self._lock:
            now = self._clock.monotonic()
            self._prune(now)
            if now < self._paused_until:
                return 0
            free = self._limit - len(self._grants)
            if self._budget is not None and now < self._budget_until:
                free = min(free, self._budget)
            return max(0, free)

    def _prune(self, now: float) -> None:
        # ``grant + window <= now``, not ``grant <= now - window``: the two round differently
        # in floating point, and only the first agrees with the wait computed in _wait.
        while self._grants and self._grants[0] + self._window + self._margin <= now:
            self._grants.popleft()

    def _wait(self, now: float) -> float:
        """Seconds until a grant is possible (0: now). Called under the lock."""
        self._prune(now)
        waits = [self._paused_until - now]
        if len(self._grants) >= self._limit:
            # The window must drop enough old grants to get back under the limit.
            oldest_needed = self._grants[len(self._grants) - self._limit]
            waits.append(oldest_needed + self._window + self._margin - now)
        if self._budget is not None:
            if now >= self._budget_until:
                self._budget = None  # the platform's window has reset: our own limit rules
            elif self._budget <= 0:
                waits.append(self._budget_until - now)
            else:
                waits.append(self._last_grant + self._spacing - now)
        return max(waits)

    def _grant(self, now: float) -> None:
        self._grants.append(now)
        self._last_grant = now
        if self._budget is not None:
            self._budget -= 1
        if self._on_grant is not None:
            self._on_grant(now)


def next_utc_midnight(now: datetime) -> datetime:
    """The default reset of a daily quota: the next midnight, UTC."""
    tomorrow = now.astimezone(UTC).date() + timedelta(days=1)
    return datetime.combine(tomorrow, time(0), tzinfo=UTC)


class DailyQuota:
    """A daily API allowance, of which contactsync uses at most ``stop_at_share``.

    The share leaves room for the platform account's other integrations and people. Calls are
    counted with :meth:`spend`; :meth:`update` takes the platform's own count when it reports
    one (Salesforce's ``Sforce-Limit-Info: api-usage=25/15000``, HubSpot's daily headers).
    Past the share, :meth:`spend` and :meth:`check` raise :class:`RateLimited` with
    ``retry_after`` set to the time left until the quota resets (``resets_at``, by default the
    next UTC midnight). ``limit=None`` means no quota is known yet: nothing is enforced.
    """

    def __init__(
        self,
        limit: int | None = None,
        *,
        stop_at_share: float = 0.9,
        clock: Clock = SYSTEM_CLOCK,
        resets_at: Callable[[datetime], datetime] = next_utc_midnight,
        name: str = "",
    ) -> None:
        if not 0 < stop_at_share <= 1:
            raise ValueError("stop_at_share must be in (0, 1]")
        self.name = name
        self.stop_at_share = stop_at_share
        self._limit = limit
        self._used = 0
        self._clock = clock
        self._resets_at = resets_at
        self._lock = threading.Lock()
        self._period_end = resets_at(clock.now())

    @property
    def used(self) -> int:
        """Calls used in the current period, as far as we know."""
        with self._lock:
            self._roll()
            return self._used

    @property
    def limit(self) -> int | None:
        """The daily allowance, if known."""
        return self._limit

    @property
    def stop_at(self) -> int | None:
        """The number of used calls at which contactsync stops."""
        if self._limit is None:
            return None
        return math.floor(self._limit * self.stop_at_share)

    def update(self, used: int, limit: int | None = None) -> None:
        """The platform's own count, which includes every other client's calls."""
        with self._lock:
            self._roll()
            if limit is not None and limit > 0:
                self._limit = limit
            self._used = max(0, used)

    def spend(self, calls: int = 1) -> None:
        """Count ``calls`` about to be made; raise :class:`RateLimited` if that passes the share."""
        with self._lock:
            self._roll()
            self._refuse_if(self._used + calls)
            self._used += calls

    def check(self) -> None:
        """Raise :class:`RateLimited` if the share is already used up."""
        with self._lock:
            self._roll()
            self._refuse_if(self._used + 1)

    def _roll(self) -> None:
        now = self._clock.now()
        if now >= self._period_end:
            self._used = 0
            self._period_end = self._resets_at(now)

    def _refuse_if(self, would_use: int) -> None:
        stop_at = self.stop_at
        if stop_at is None or would_use <= stop_at:
            return
        retry_after = max(0.0, (self._period_end - self._clock.now()).total_seconds())
        prefix = f"{self.name}: " if self.name else ""
        raise RateLimited(
            f"{prefix}daily API quota: {self._used} of {self._limit} calls used; contactsync "
            f"stops at {self.stop_at_share:.0%} ({stop_at})",
            retry_after=retry_after,
        )
