"""Fixtures shared by the whole test suite, one section per component."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tests.support.prometheus import PrometheusServer, start_prometheus

# --- Prometheus ---------------------------------------------------------------


@pytest.fixture(scope="session")
def prometheus_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., PrometheusServer]]:
    """Start private Prometheus servers on 127.0.0.1, each in its own temporary directory.

    Call it as ``prometheus_factory(openmetrics=None, scrape_targets=(), scrape_interval="15s")``.
    Every server it started is stopped when the session ends, and ``server.stop()``
    stops one earlier.
    """
    servers: list[PrometheusServer] = []

    def start(
        openmetrics: str | None = None,
        scrape_targets: Sequence[str] = (),
        scrape_interval: str = "15s",
        **options: object,
    ) -> PrometheusServer:
        server = start_prometheus(
            tmp_path_factory.mktemp("prometheus"),
            openmetrics,
            scrape_targets,
            scrape_interval,
            **options,
        )
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
