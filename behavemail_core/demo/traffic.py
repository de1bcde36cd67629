"""Live demo API traffic: ``python -m behavemail_core.demo.traffic --port PORT``.

Serves ``/metrics`` on 127.0.0.1 with the same metric names as the backfilled history
(``api_requests_total`` and ``api_quota_used_ratio``), for Prometheus to scrape under
its own job. A few users send steady traffic, every user's quota ratio is exposed, and
a fixed script of events changes some users' state during the first 15 minutes, so
rules start and stop matching while the demo runs:

====  ==========================================================================
 60 s  a healthy user starts a 10-minute burst of 401 responses (error spike)
120 s  a user whose key had gone quiet sends requests again
180 s  a user who stalled after signup sends successful requests
240 s  a user above 80 % quota drops to 35 % (a plan upgrade)
300 s  a healthy user's quota climbs to 95 % over 10 minutes
360 s  a user who never called /v2/search starts calling it
====  ==========================================================================

After the script, the steady traffic continues unchanged until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import enum
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics, start_http_server

from ..settings import DATA_DIR
from .accounts import SEED, Account, read_accounts_csv
from .history import ROUTES, SEARCH_ENDPOINT
from .personas import Persona, assign_personas, final_quota_ratio, users_by_persona, uses_search

logger = logging.getLogger("behavemail_core.demo.traffic")

TICK_SECONDS = 1.0
STEADY_HEALTHY_USERS = 10
BURST_SECONDS = 600.0
BURST_PER_SECOND = 2.0
QUOTA_CLIMB_SECONDS = 600.0


class EventKind(enum.Enum):
    """A change of one user's behavior in the live traffic script."""

    ERROR_BURST = "starts a burst of 401 responses"
    RETURNS_AFTER_QUIET = "sends requests again after days of silence"
    RETURNS_AFTER_STALL = "sends successful requests after stalling"
    QUOTA_DROPS = "drops to 35 % quota used"
    QUOTA_CLIMBS = "climbs to 95 % quota used"
    TRIES_SEARCH = "starts calling /v2/search"


# (simulated seconds after start, event, persona the user is taken from, position in that persona)
SCRIPT = (
    (60.0, EventKind.ERROR_BURST, Persona.HEALTHY, 0),
    (120.0, EventKind.RETURNS_AFTER_QUIET, Persona.GONE_QUIET, 0),
    (180.0, EventKind.RETURNS_AFTER_STALL, Persona.STALLED_AFTER_SIGNUP, 0),
    (240.0, EventKind.QUOTA_DROPS, Persona.QUOTA_HIGH, 0),
    (300.0, EventKind.QUOTA_CLIMBS, Persona.HEALTHY, 1),
    (360.0, EventKind.TRIES_SEARCH, Persona.SEARCH_NEVER_TRIED, 0),
)


@dataclass(frozen=True)
class ScriptedEvent:
    """One event of the script, bound to a user."""

    at_seconds: float
    kind: EventKind
    user_id: str


@dataclass
class LiveUser:
    """The current behavior of one user in the live traffic."""

    user_id: str
    requests_per_second: float = 0.0
    calls_search: bool = True
    burst_until: float | None = None
    quota_ratio: float = 0.0
    quota_start: float = 0.0
    quota_target: float | None = None
    quota_climb_began: float = 0.0


def build_script(personas: dict[str, Persona]) -> list[ScriptedEvent]:
    """Bind each scripted event to its user; events whose persona has too few users are left out."""
    groups = users_by_persona(personas)
    events = []
    for at_seconds, kind, persona, position in SCRIPT:
        members = groups[persona]
        if position < len(members):
            events.append(ScriptedEvent(at_seconds, kind, members[position]))
    return events


@dataclass
class TrafficSimulation:
    """The live traffic: users' state, the pending script and the metrics they update."""

    accounts: Sequence[Account]
    seed: int = SEED
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.personas = assign_personas([account.user_id for account in self.accounts], self.seed)
        self.rng = np.random.default_rng([self.seed, 1])
        self.requests = Counter(
            "api_requests", "API requests served, by user, method, endpoint and HTTP status.",
            ["user_id", "method", "endpoint", "status"], registry=self.registry,
        )
        self.quota = Gauge(
            "api_quota_used_ratio", "Share of the monthly request quota used, by user.",
            ["user_id"], registry=self.registry,
        )
        self.users = {account.user_id: LiveUser(account.user_id) for account in self.accounts}
        self.pending = build_script(self.personas)
        groups = users_by_persona(self.personas)
        steady = groups[Persona.HEALTHY][2 : 2 + STEADY_HEALTHY_USERS] + groups[Persona.NEW]
        for account in self.accounts:
            user = self.users[account.user_id]
            persona = self.personas[account.user_id]
            user.calls_search = uses_search(account.user_id, persona, account.plan, self.seed)
            user.quota_ratio = final_quota_ratio(account.user_id, persona, self.seed)
            self.quota.labels(account.user_id).set(user.quota_ratio)
        for user_id in steady:
            self._start_steady(self.users[user_id])

    def _start_steady(self, user: LiveUser) -> None:
        user.requests_per_second = float(self.rng.uniform(0.5, 2.0))
        # Create the series at zero, so Prometheus counts the first requests as an increase.
        for method, endpoint, _ in ROUTES:
            if endpoint != SEARCH_ENDPOINT or user.calls_search:
                self.requests.labels(user.user_id, method, endpoint, "200").inc(0)

    def apply(self, event: ScriptedEvent, now: float) -> None:
        """Apply the event's change to its user's behavior."""
        user = self.users[event.user_id]
        logger.info("scripted event at %.0f s: user_id=%s %s", event.at_seconds, user.user_id, event.kind.value)
        if event.kind is EventKind.ERROR_BURST:
            user.burst_until = now + BURST_SECONDS
            self.requests.labels(user.user_id, "POST", "/v1/messages", "401").inc(0)
        elif event.kind in (EventKind.RETURNS_AFTER_QUIET, EventKind.RETURNS_AFTER_STALL):
            self._start_steady(user)
        elif event.kind is EventKind.QUOTA_DROPS:
            user.quota_ratio = 0.35
        elif event.kind is EventKind.QUOTA_CLIMBS:
            user.quota_start, user.quota_target, user.quota_climb_began = user.quota_ratio, 0.95, now
        elif event.kind is EventKind.TRIES_SEARCH:
            user.calls_search = True
            self._start_steady(user)

    def step(self, now: float, elapsed: float) -> None:
        """Advance the simulation by ``elapsed`` simulated seconds ending at simulated time ``now``."""
        while self.pending and self.pending[0].at_seconds <= now:
            self.apply(self.pending.pop(0), now)
        for user in self.users.values():
            self._send_requests(user, now, elapsed)
            self._update_quota(user, now)

    def _send_requests(self, user: LiveUser, now: float, elapsed: float) -> None:
        if user.requests_per_second > 0:
            for method, endpoint, share in ROUTES:
                if endpoint == SEARCH_ENDPOINT and not user.calls_search:
                    continue
                count = int(self.rng.poisson(user.requests_per_second * share * elapsed))
                if count:
                    self.requests.labels(user.user_id, method, endpoint, "200").inc(count)
        if user.burst_until is not None and now <= user.burst_until:
            count = int(self.rng.poisson(BURST_PER_SECOND * elapsed))
            self.requests.labels(user.user_id, "POST", "/v1/messages", "401").inc(count)

    def _update_quota(self, user: LiveUser, now: float) -> None:
        if user.quota_target is not None:
            progress = min((now - user.quota_climb_began) / QUOTA_CLIMB_SECONDS, 1.0)
            user.quota_ratio = user.quota_start + (user.quota_target - user.quota_start) * progress
        self.quota.labels(user.user_id).set(round(user.quota_ratio, 4))


def run(simulation: TrafficSimulation, speed: float, duration: float | None, stop: threading.Event) -> None:
    """Step the simulation once a second until ``stop`` is set or ``duration`` real seconds pass."""
    began = time.monotonic()
    previous = 0.0
    while not stop.is_set():
        real_elapsed = time.monotonic() - began
        if duration is not None and real_elapsed >= duration:
            break
        now = real_elapsed * speed
        simulation.step(now, now - previous)
        previous = now
        stop.wait(TICK_SECONDS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m behavemail_core.demo.traffic",
        description="Serve live demo API metrics on 127.0.0.1 for Prometheus to scrape.",
    )
    parser.add_argument("--port", type=int, required=True, help="TCP port for /metrics on 127.0.0.1")
    parser.add_argument("--accounts", type=Path, default=DATA_DIR / "accounts.csv", help="accounts CSV to read users from")
    parser.add_argument("--seed", type=int, default=SEED, help="seed of the personas and of the traffic")
    parser.add_argument("--speed", type=float, default=1.0, help="run simulated time this many times faster than real time")
    parser.add_argument("--duration", type=float, default=None, help="exit after this many real seconds (default: run until stopped)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    if args.speed <= 0:
        raise SystemExit(f"--speed {args.speed} is invalid: expected a positive factor, e.g. 1 or 60")

    disable_created_metrics()
    simulation = TrafficSimulation(read_accounts_csv(args.accounts), args.seed)
    try:
        server, _ = start_http_server(args.port, addr="127.0.0.1", registry=simulation.registry)
    except OSError as exc:
        logger.error("failed to listen on 127.0.0.1:%d: %s; choose a free port with --port", args.port, exc)
        return 2

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda received, _frame: stop.set())
    logger.info(
        "serving /metrics on http://127.0.0.1:%d for %d users, %d scripted events, speed %g",
        args.port, len(simulation.users), len(simulation.pending), args.speed,
    )
    try:
        run(simulation, args.speed, args.duration, stop)
    finally:
        server.shutdown()
        server.server_close()
    logger.info("stopped serving on 127.0.0.1:%d", args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
