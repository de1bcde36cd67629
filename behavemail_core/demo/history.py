"""Seven days of per-user API metrics for the demo, as OpenMetrics for promtool to backfill.

Two metric families, both labelled with ``user_id``:

- counter ``api_requests_total{user_id, method, endpoint, status, job}``, where status
  is the HTTP status code as a string;
- gauge ``api_quota_used_ratio{user_id, job}``, the share of the plan's monthly quota used.

Every series carries ``job="demo_history"`` so it never collides with the live traffic
generator's series, which Prometheus scrapes under another job. The numbers come from
a random generator seeded per user, so the same accounts, end time and seed give the
same history.
"""

from __future__ import annotations

import logging
import math
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from .accounts import Account
from .openmetrics import Series, write_openmetrics
from .personas import Persona, final_quota_ratio, uses_search

logger = logging.getLogger(__name__)

REQUESTS_METRIC = "api_requests_total"
QUOTA_METRIC = "api_quota_used_ratio"
HISTORY_JOB = "demo_history"
HISTORY_DAYS = 7
DEFAULT_STEP_SECONDS = 300
SEARCH_ENDPOINT = "/v2/search"

# (method, endpoint, share of a user's successful requests)
ROUTES = (
    ("POST", "/v1/messages", 0.35),
    ("GET", "/v1/messages", 0.20),
    ("POST", "/v1/events", 0.20),
    ("GET", "/v1/usage", 0.10),
    ("POST", "/v1/auth", 0.07),
    ("GET", SEARCH_ENDPOINT, 0.08),
)
# (method, endpoint, status, share of all requests) for the background error rate.
ERRORS = (
    ("POST", "/v1/messages", "429", 0.002),
    ("GET", "/v1/messages", "404", 0.001),
    ("POST", "/v1/events", "500", 0.0005),
)
HOUR = 3600.0


@dataclass(frozen=True)
class Timeline:
    """The sample timestamps of the history: ``start`` to ``end`` inclusive, every ``step`` seconds."""

    start: int
    end: int
    step: int

    @classmethod
    def ending_at(cls, end: datetime, step: int = DEFAULT_STEP_SECONDS, days: int = HISTORY_DAYS) -> Timeline:
        """Build the timeline of ``days`` days ending at ``end``, rounded down to a whole step."""
        if end.tzinfo is None:
            raise ValueError(f"end={end.isoformat()} has no time zone: pass an aware datetime, e.g. in UTC")
        last = int(end.timestamp()) // step * step
        return cls(start=last - days * 86400, end=last, step=step)

    @cached_property
    def times(self) -> np.ndarray:
        """All sample timestamps, Unix seconds."""
        return np.arange(self.start, self.end + 1, self.step, dtype=np.int64)

    def index_at(self, timestamp: float) -> int:
        """Return the index of the first sample at or after ``timestamp``, clipped to the timeline."""
        index = math.ceil((timestamp - self.start) / self.step)
        return min(max(index, 0), len(self.times) - 1)


@dataclass
class UserTraffic:
    """Requests per step of one user, by (method, endpoint, status), before summing into counters."""

    user_id: str
    counts: dict[tuple[str, str, str], np.ndarray]


def user_rng(seed: int, user_id: str, purpose: str) -> np.random.Generator:
    """Return a random generator that depends only on the seed, the user and the purpose."""
    return np.random.default_rng([seed, zlib.crc32(user_id.encode()), zlib.crc32(purpose.encode())])


def signup_timestamp(account: Account, seed: int) -> float:
    """Return the moment of the signup: the account's signup date at a seeded hour of the day (UTC)."""
    hour = user_rng(seed, account.user_id, "signup").uniform(1, 11)
    midnight = datetime.combine(account.signup_date, datetime.min.time(), tzinfo=timezone.utc)
    return midnight.timestamp() + hour * HOUR


def daily_cycle(times: np.ndarray, zone_name: str, at: datetime) -> np.ndarray:
    """Return a traffic multiplier between 0.4 (night) and 1.0 (afternoon) in the user's time zone."""
    offset = ZoneInfo(zone_name).utcoffset(at)
    offset_seconds = offset.total_seconds() if offset is not None else 0.0
    local_hour = ((times + offset_seconds) / HOUR) % 24
    return 0.4 + 0.6 * np.clip(np.sin(np.pi * (local_hour - 6) / 16), 0.0, 1.0)


def steady_traffic(
    account: Account, persona: Persona, timeline: Timeline, seed: int, active: np.ndarray
) -> UserTraffic:
    """Draw a steady user's requests: every route at a daily rhythm, plus background errors."""
    rng = user_rng(seed, account.user_id, "steady")
    times = timeline.times
    per_step = rng.uniform(20, 150) * timeline.step / HOUR
    expected = per_step * daily_cycle(times, account.timezone, datetime.fromtimestamp(timeline.end, timezone.utc))
    expected = expected * active

    searches = uses_search(account.user_id, persona, account.plan, seed)
    counts: dict[tuple[str, str, str], np.ndarray] = {}
    for method, endpoint, share in ROUTES:
        if endpoint == SEARCH_ENDPOINT and not searches:
            continue
        counts[(method, endpoint, "200")] = rng.poisson(expected * share)
    for method, endpoint, status, share in ERRORS:
        counts[(method, endpoint, status)] = rng.poisson(expected * share)

    if searches:
        _ensure_one_call(counts[("GET", SEARCH_ENDPOINT, "200")], active, rng)
    return UserTraffic(account.user_id, counts)


def _ensure_one_call(counts: np.ndarray, active: np.ndarray, rng: np.random.Generator) -> None:
    # A quiet night could leave a route at zero, which would put the user in the wrong persona.
    if counts.sum() == 0:
        active_steps = np.flatnonzero(active)
        counts[active_steps[rng.integers(len(active_steps))]] += 1


def error_burst(account: Account, timeline: Timeline, seed: int, steady: UserTraffic) -> np.ndarray:
    """Draw a burst of 401 responses that starts 6 to 18 hours before the end and lasts 6 to 16 hours."""
    rng = user_rng(seed, account.user_id, "burst")
    successful = sum(count.sum() for key, count in steady.counts.items() if key[2] == "200")
    hourly = successful / (HISTORY_DAYS * 24)
    burst_hourly = max(hourly * rng.uniform(0.8, 1.5), 40.0)
    finish = timeline.end - rng.uniform(0.25, 2.0) * HOUR
    begin = finish - rng.uniform(6.0, 16.0) * HOUR
    in_burst = (timeline.times >= begin) & (timeline.times < finish)
    return rng.poisson(in_burst * burst_hourly * timeline.step / HOUR)


def stalled_traffic(account: Account, timeline: Timeline, seed: int) -> UserTraffic:
    """Draw a user who tried the API right after signup, mostly with a wrong key, then stopped.

    The last attempt lies 50 to 70 hours before the end: silent for the last 48 hours,
    but not for the last 72, so this user never looks like a key that went quiet.
    """
    rng = user_rng(seed, account.user_id, "stalled")
    signup = signup_timestamp(account, seed)
    first_attempts = [("POST", "/v1/auth", "401"), ("POST", "/v1/auth", "401"), ("POST", "/v1/messages", "401")]
    if uses_search(account.user_id, Persona.STALLED_AFTER_SIGNUP, account.plan, seed):
        first_attempts.append(("GET", SEARCH_ENDPOINT, "401"))
    first_attempts += [("POST", "/v1/auth", "200")] * int(rng.integers(0, 2))
    first_attempts += [("GET", "/v1/usage", "403")] * int(rng.integers(0, 3))
    events = [(signup + rng.uniform(0, 6) * HOUR, route) for route in first_attempts]
    events.append((timeline.end - rng.uniform(50, 70) * HOUR, ("POST", "/v1/messages", "401")))

    counts: dict[tuple[str, str, str], np.ndarray] = {}
    for moment, route in events:
        series = counts.setdefault(route, np.zeros(len(timeline.times), dtype=np.int64))
        series[timeline.index_at(moment)] += 1
    return UserTraffic(account.user_id, counts)


def activity_mask(account: Account, persona: Persona, timeline: Timeline, seed: int) -> np.ndarray:
    """Return 1.0 for the steps at which a user sends traffic, 0.0 elsewhere."""
    times = timeline.times
    active = (times > signup_timestamp(account, seed)).astype(float)
    if persona is Persona.GONE_QUIET:
        stop = timeline.end - user_rng(seed, account.user_id, "quiet").uniform(84, 140) * HOUR
        active[times >= stop] = 0.0
    return active


def user_traffic(account: Account, persona: Persona, timeline: Timeline, seed: int) -> UserTraffic:
    """Draw one user's requests per step according to the persona."""
    if persona is Persona.DORMANT:
        return UserTraffic(account.user_id, {})
    if persona is Persona.STALLED_AFTER_SIGNUP:
        return stalled_traffic(account, timeline, seed)
    traffic = steady_traffic(account, persona, timeline, seed, activity_mask(account, persona, timeline, seed))
    if persona is Persona.ERROR_SPIKE:
        traffic.counts[("POST", "/v1/messages", "401")] = error_burst(account, timeline, seed, traffic)
    return traffic


def counter_series(traffic: UserTraffic, timeline: Timeline) -> Iterator[Series]:
    """Turn requests per step into counter series that start at 0 one step before their first request."""
    times = timeline.times.tolist()
    for (method, endpoint, status), counts in sorted(traffic.counts.items()):
        requested = np.flatnonzero(counts)
        if len(requested) == 0:
            continue
        first = max(int(requested[0]) - 1, 0)
        values = np.cumsum(counts[first:])
        values[0] = 0
        labels = {"user_id": traffic.user_id, "method": method, "endpoint": endpoint, "status": status, "job": HISTORY_JOB}
        yield Series(REQUESTS_METRIC, labels, "counter", list(zip(times[first:], values.tolist())))


def quota_series(account: Account, persona: Persona, timeline: Timeline, seed: int) -> Series:
    """Build a user's api_quota_used_ratio: a slow climb from signup that ends at the persona's ratio."""
    final = final_quota_ratio(account.user_id, persona, seed)
    rng = user_rng(seed, account.user_id, "quota")
    times = timeline.times
    first = timeline.index_at(signup_timestamp(account, seed))
    progress = (times[first:] - timeline.start) / (timeline.end - timeline.start)
    noise = rng.uniform(-0.01, 0.01, len(progress))
    noise[-1] = 0.0
    ratios = np.clip(final * (0.55 + 0.45 * progress) + noise, 0.0, None).round(4)
    labels = {"user_id": account.user_id, "job": HISTORY_JOB}
    return Series(QUOTA_METRIC, labels, "gauge", list(zip(times[first:].tolist(), ratios.tolist())))


def generate_history(
    accounts: Sequence[Account], personas: dict[str, Persona], timeline: Timeline, seed: int
) -> Iterator[Series]:
    """Yield every series of the history: all request counters first, then all quota gauges."""
    for account in accounts:
        yield from counter_series(user_traffic(account, personas[account.user_id], timeline, seed), timeline)
    for account in accounts:
        yield quota_series(account, personas[account.user_id], timeline, seed)


def write_history(
    path: Path, accounts: Sequence[Account], personas: dict[str, Persona], timeline: Timeline, seed: int
) -> int:
    """Write the history as an OpenMetrics file for promtool and return the number of samples."""
    began = time.monotonic()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as stream:
        samples = write_openmetrics(generate_history(accounts, personas, timeline, seed), stream)
    logger.info(
        "wrote %d samples from %s to %s to %s in %.1f s",
        samples,
        datetime.fromtimestamp(timeline.start, timezone.utc).isoformat(),
        datetime.fromtimestamp(timeline.end, timezone.utc).isoformat(),
        path,
        time.monotonic() - began,
    )
    return samples


def history_end(now: datetime, lag: timedelta = timedelta(minutes=5)) -> datetime:
    """Return the end of the history: ``lag`` before ``now``, so every sample lies in the past."""
    return now - lag
