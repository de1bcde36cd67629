"""The scheduler process: cycles at a fixed cadence, plus the event endpoints.

scheduler.py only parses arguments and calls :func:`run`.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from datetime import datetime, timezone
from typing import Callable

from . import heartbeat
from .accounts import AccountDirectory
from .cycle import CycleReport, run_cycle
from .database import create_app_engine, session_factory, upgrade
from .delivery import create_backend
from .evaluation import Services
from .prometheus import PrometheusClient
from .settings import Settings

log = logging.getLogger(__name__)

# A cycle may start new rules for this many scheduler intervals; the rest wait for the next.
CYCLE_DEADLINE_INTERVALS = 3


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def build_services(settings: Settings, *, scheduler_id: str = "local",
                   should_stop: Callable[[], bool] = lambda: False) -> Services:
    engine = create_app_engine(settings.database_url)
    return Services(
        settings=settings,
        sessions=session_factory(engine),
        prometheus=PrometheusClient(settings.prometheus_url, headers=settings.prometheus_headers,
                                    timeout=settings.prometheus_timeout),
        accounts=AccountDirectory(settings.accounts_url, settings.accounts_query),
        backend=create_backend(settings),
        scheduler_id=scheduler_id,
        should_stop=should_stop,
    )


def next_deadline(started: float, interval: float, now: float) -> float:
    """Return the next tick after ``now`` on the grid started + k * interval.

    Ticks missed while a cycle ran long are skipped rather than run in a burst.
    """
    elapsed_ticks = int((now - started) // interval) + 1
    return started + elapsed_ticks * interval


class SchedulerProcess:
    """Runs evaluation cycles until stopped; SIGTERM and SIGINT stop it after the batch in flight."""

    def __init__(self, settings: Settings, *, dry_run: bool = False, clock: Callable[[], datetime] = utc_now,
                 serve_events: bool = True) -> None:
        self.settings = settings
        self.dry_run = dry_run
        self.clock = clock
        self.serve_events = serve_events
        self._stop = threading.Event()

    def stop(self, signum: int | None = None, _frame: object = None) -> None:
        if signum is not None:
            log.info("received %s: stopping after the batch in flight", signal.Signals(signum).name)
        self._stop.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    def run(self, *, once: bool) -> list[CycleReport]:
        if not self.dry_run:
            upgrade(self.settings.database_url)
        services = build_services(self.settings, should_stop=self._stop.is_set)
        if not self.dry_run:
            with services.sessions() as session:
                services.scheduler_id = heartbeat.register(session, self.clock())
        event_server = None
        if self.serve_events and not self.dry_run and not once:
            from .events import start_event_server
            event_server = start_event_server(self.settings, services.sessions)
            log.info("event endpoints listening on %s", event_server.url)
        log.info("scheduler started scheduler_id=%s backend=%s interval_s=%d once=%s dry_run=%s",
                 services.scheduler_id, services.backend.name, self.settings.scheduler_interval, once,
                 self.dry_run)
        reports: list[CycleReport] = []
        try:
            reports = self._loop(services, once=once)
        finally:
            if event_server is not None:
                event_server.shutdown()
            if not self.dry_run:
                with services.sessions() as session:
                    heartbeat.mark_stopped(session, services.scheduler_id, self.clock())
            services.backend.close()
            services.prometheus.close()
            services.accounts.close()
            log.info("scheduler stopped scheduler_id=%s", services.scheduler_id)
        return reports

    def _loop(self, services: Services, *, once: bool) -> list[CycleReport]:
        reports = []
        interval = max(1, self.settings.scheduler_interval)
        started = time.monotonic()
        while not self._stop.is_set():
            now = self.clock()
            try:
                reports.append(run_cycle(services, now, dry_run=self.dry_run,
                                         deadline=time.monotonic() + CYCLE_DEADLINE_INTERVALS * interval))
            except Exception:  # noqa: BLE001 - the loop survives and logs each error
                log.exception("cycle failed scheduler_id=%s", services.scheduler_id)
            if not self.dry_run:
                with services.sessions() as session:
                    heartbeat.beat(session, services.scheduler_id, self.clock(), cycle_finished=True)
            if once:
                break
            deadline = next_deadline(started, interval, time.monotonic())
            self._stop.wait(max(0.0, deadline - time.monotonic()))
        return reports
