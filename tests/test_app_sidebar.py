"""The sidebar under AppTest: the scheduler's heartbeat and Prometheus's status."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from behavemail_core.database import create_app_engine, session_factory
from behavemail_core.models import SchedulerInstance
from tests.support.prometheus import free_port

APP = str(Path(__file__).resolve().parent.parent / "app.py")
TIMEOUT_SECONDS = 60


def add_scheduler(app_env: dict[str, str], last_cycle_at: datetime) -> None:
    engine = create_app_engine(app_env["BEHAVEMAIL_DATABASE_URL"])
    with session_factory(engine).begin() as session:
        session.add(SchedulerInstance(id="test-scheduler", hostname="test-host", pid=1,
                                      last_cycle_at=last_cycle_at))
    engine.dispose()


def sidebar_texts(app_env: dict[str, str]) -> tuple[list[str], list[str], list[str]]:
    app = AppTest.from_file(APP, default_timeout=TIMEOUT_SECONDS)
    app.run()
    assert not app.exception, app.exception
    return ([item.value for item in app.sidebar.success], [item.value for item in app.sidebar.warning],
            [item.value for item in app.sidebar.error])


def test_no_scheduler_yet(app_env) -> None:
    success, warning, _ = sidebar_texts(app_env)
    assert warning == ["Scheduler: no evaluation cycle recorded yet. Start it with `python scheduler.py`."]
    assert success[-1].startswith("Prometheus 2.")


def test_recent_heartbeat(app_env) -> None:
    add_scheduler(app_env, datetime.now(timezone.utc) - timedelta(minutes=2))
    success, warning, _ = sidebar_texts(app_env)
    assert success[0] == "Scheduler: last cycle 2 minutes ago"
    assert warning == []


def test_stale_heartbeat(app_env) -> None:
    # The default interval is 60 s, so three intervals plus a minute is 4 minutes.
    add_scheduler(app_env, datetime.now(timezone.utc) - timedelta(hours=3))
    _, warning, _ = sidebar_texts(app_env)
    assert warning == ["Scheduler: last cycle 3 hours ago. It may have stopped: check the scheduler "
                       "process and its log."]


def test_prometheus_down(app_env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BEHAVEMAIL_PROMETHEUS_URL", f"http://127.0.0.1:{free_port()}")
    _, _, error = sidebar_texts(app_env)
    assert error[0].startswith("Prometheus: not reachable. Cannot connect to Prometheus at http://127.0.0.1:")
