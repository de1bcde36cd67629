"""A private Prometheus for tests: OpenMetrics backfill files and a server on loopback.

Build history with :class:`Series` and :func:`render_openmetrics` (from
``behavemail_core.demo.openmetrics``, re-exported here), then hand the text
to :func:`start_prometheus`, which loads it with ``promtool tsdb create-blocks-from
openmetrics`` before the server starts. Keep every timestamp in the past, and query
at an explicit evaluation time inside the loaded range for exact results.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from behavemail_core.demo.openmetrics import (
    Series,
    escape_label_value,
    format_number,
    render_openmetrics,
    write_openmetrics,
)

__all__ = [
    "PrometheusServer",
    "Series",
    "backfill",
    "escape_label_value",
    "format_number",
    "free_port",
    "render_openmetrics",
    "start_prometheus",
    "write_openmetrics",
]

READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 10.0
LOG_TAIL_LINES = 30
PORT_ATTEMPTS = 3
# Long enough that a 31-day history backfills in one or two passes.
MAX_BLOCK_DURATION = "744h"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def backfill(openmetrics_path: Path, tsdb_dir: Path, max_block_duration: str = MAX_BLOCK_DURATION) -> None:
    """Load an OpenMetrics file into TSDB blocks under ``tsdb_dir`` with promtool.

    promtool reads the whole input once per block, so long blocks make multi-day
    histories load many times faster than its 2-hour default.
    """
    tsdb_dir.mkdir(parents=True, exist_ok=True)
    command = [
        "promtool", "tsdb", "create-blocks-from", "openmetrics", "--quiet",
        f"--max-block-duration={max_block_duration}", str(openmetrics_path), str(tsdb_dir),
    ]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"promtool failed to backfill {openmetrics_path} (exit {result.returncode}):\n"
            f"{result.stderr.strip() or result.stdout.strip()}"
        )


def write_config(path: Path, scrape_targets: Sequence[str], scrape_interval: str, job_name: str) -> None:
    """Write a Prometheus configuration that scrapes ``scrape_targets`` under one job."""
    lines = ["global:", f"  scrape_interval: {scrape_interval}", f"  evaluation_interval: {scrape_interval}"]
    if scrape_targets:
        targets = ", ".join(f'"{target}"' for target in scrape_targets)
        lines += ["scrape_configs:", f"  - job_name: {job_name}", "    static_configs:", f"      - targets: [{targets}]"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


class PrometheusServer:
    """A Prometheus process this test session started, listening on 127.0.0.1."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, workdir: Path, log_path: Path) -> None:
        self.process = process
        self.port = port
        self.workdir = workdir
        self.log_path = log_path

    @property
    def url(self) -> str:
        """Base URL of the HTTP API, without a trailing slash."""
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """Return the last lines of the server's log."""
        if not self.log_path.exists():
            return "(no log written)"
        return "\n".join(self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])

    def query(self, expr: str, at: float) -> list[dict[str, Any]]:
        """Run an instant query at evaluation time ``at`` (Unix seconds) and return its result list."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr, "time": format_number(at)}, timeout=30)
        body = response.json()
        if body.get("status") != "success":
            raise RuntimeError(f"query {expr!r} failed: {body.get('errorType')}: {body.get('error')}")
        return body["data"]["result"]

    def wait_ready(self, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        """Wait until ``/-/ready`` returns 200, raising with the log's tail on exit or timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"prometheus exited with code {self.process.returncode} before it was ready; "
                    f"last lines of {self.log_path}:\n{self.log_tail()}"
                )
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"prometheus on {self.url} was not ready after {timeout:.0f} s; last lines of {self.log_path}:\n{self.log_tail()}")

    def stop(self) -> None:
        """Terminate the process by its PID, and kill it if it has not exited within 10 s."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)

    def __enter__(self) -> PrometheusServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_prometheus(
    workdir: Path,
    openmetrics: str | Path | None = None,
    scrape_targets: Sequence[str] = (),
    scrape_interval: str = "15s",
    *,
    job_name: str = "scrape",
    retention: str = "3650d",
    max_block_duration: str = MAX_BLOCK_DURATION,
    ready_timeout: float = READY_TIMEOUT_SECONDS,
) -> PrometheusServer:
    """Start a Prometheus in ``workdir``, backfilled with ``openmetrics`` when given.

    ``openmetrics`` is either the text itself or the path of a file that contains it,
    which suits histories too large to hold in memory. The TSDB, configuration and log
    live under ``workdir``. Retention is long because Prometheus deletes blocks older
    than it, backfilled ones included.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    tsdb_dir = workdir / "tsdb"
    if isinstance(openmetrics, Path):
        backfill(openmetrics, tsdb_dir, max_block_duration)
    elif openmetrics is not None:
        openmetrics_path = workdir / "backfill.om"
        openmetrics_path.write_text(openmetrics, encoding="utf-8")
        backfill(openmetrics_path, tsdb_dir, max_block_duration)
    config_path = workdir / "prometheus.yml"
    write_config(config_path, scrape_targets, scrape_interval, job_name)

    log_path = workdir / "prometheus.log"
    for attempt in range(1, PORT_ATTEMPTS + 1):
        server = _spawn(config_path, tsdb_dir, retention, workdir, log_path)
        try:
            server.wait_ready(ready_timeout)
        except RuntimeError:
            # Another process may have bound the port between free_port() and Prometheus.
            port_taken = "address already in use" in server.log_tail()
            if attempt == PORT_ATTEMPTS or not port_taken:
                raise
            continue
        return server
    raise RuntimeError(f"prometheus found no free port in {PORT_ATTEMPTS} attempts")


def _spawn(config_path: Path, tsdb_dir: Path, retention: str, workdir: Path, log_path: Path) -> PrometheusServer:
    port = free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config_path}",
                f"--storage.tsdb.path={tsdb_dir}",
                f"--storage.tsdb.retention.time={retention}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return PrometheusServer(process, port, workdir, log_path)
