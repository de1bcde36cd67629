"""A private Prometheus for tests: OpenMetrics backfill files and a server on loopback.

Build history with :class:`Series` and :func:`render_openmetrics`, then hand the text
to :func:`start_prometheus`, which loads it with ``promtool tsdb create-blocks-from
openmetrics`` before the server starts. Keep every timestamp in the past, and query
at an explicit evaluation time inside the loaded range for exact results.
"""

from __future__ import annotations

import math
import re
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path
from typing import Any, TextIO

import httpx

METRIC_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
KINDS = ("counter", "gauge")

READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 10.0
LOG_TAIL_LINES = 30
PORT_ATTEMPTS = 3


@dataclass(frozen=True)
class Series:
    """One time series to backfill: metric name, labels, kind and (timestamp, value) samples.

    ``name`` is the name PromQL queries use. A counter's name must end in ``_total``,
    because OpenMetrics names the family without that suffix and its samples with it.
    Timestamps are Unix seconds.
    """

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    kind: str = "counter"
    samples: Sequence[tuple[float, float]] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"series {self.name!r} has kind {self.kind!r}: expected one of {KINDS}")
        if not METRIC_NAME_RE.match(self.name):
            raise ValueError(f"metric name {self.name!r} is invalid: expected [a-zA-Z_:][a-zA-Z0-9_:]*")
        if self.kind == "counter" and not self.name.endswith("_total"):
            raise ValueError(f"counter {self.name!r} must end in '_total', e.g. {self.name + '_total'!r}")
        for label in self.labels:
            if not LABEL_NAME_RE.match(label) or label.startswith("__"):
                raise ValueError(f"label name {label!r} of {self.name!r} is invalid: expected [a-zA-Z_][a-zA-Z0-9_]* not starting with '__'")

    @property
    def family(self) -> str:
        """The OpenMetrics metric family name: a counter's name without ``_total``."""
        if self.kind == "counter":
            return self.name[: -len("_total")]
        return self.name


def escape_label_value(value: str) -> str:
    """Escape a label value for OpenMetrics text: backslash, double quote and newline."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_number(value: float) -> str:
    """Format a sample value or timestamp the way OpenMetrics spells numbers."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _series_lines(series: Series) -> Iterable[str]:
    label_text = ",".join(f'{name}="{escape_label_value(str(value))}"' for name, value in series.labels.items())
    prefix = f"{series.name}{{{label_text}}}" if label_text else series.name
    previous_ts: float | None = None
    for ts, value in sorted(series.samples):
        if ts == previous_ts:
            raise ValueError(f"series {prefix} has two samples at timestamp {ts}: keep one per timestamp")
        previous_ts = ts
        yield f"{prefix} {format_number(value)} {format_number(ts)}\n"


def write_openmetrics(series: Iterable[Series], stream: TextIO) -> int:
    """Write series as OpenMetrics text to ``stream`` without holding them all in memory.

    The series of one metric family must come one after another, because OpenMetrics
    allows one ``# TYPE`` line per family. Returns the number of samples written.
    """
    finished_families: set[str] = set()
    current: Series | None = None
    count = 0
    for item in series:
        if current is None or item.family != current.family:
            if item.family in finished_families:
                raise ValueError(
                    f"metric family {item.family!r} appears in two separate runs: "
                    "pass the series of one family one after another, or use render_openmetrics()"
                )
            if current is not None:
                finished_families.add(current.family)
            stream.write(f"# TYPE {item.family} {item.kind}\n")
        elif item.kind != current.kind:
            raise ValueError(f"metric family {item.family!r} is both {current.kind} and {item.kind}")
        current = item
        for line in _series_lines(item):
            stream.write(line)
            count += 1
    stream.write("# EOF\n")
    return count


def render_openmetrics(series: Iterable[Series]) -> str:
    """Render series as one OpenMetrics text, grouping them by family in first-seen order."""
    by_family: dict[str, list[Series]] = {}
    for item in series:
        by_family.setdefault(item.family, []).append(item)
    buffer = StringIO()
    write_openmetrics((item for group in by_family.values() for item in group), buffer)
    return buffer.getvalue()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def backfill(openmetrics_path: Path, tsdb_dir: Path) -> None:
    """Load an OpenMetrics file into TSDB blocks under ``tsdb_dir`` with promtool."""
    tsdb_dir.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["promtool", "tsdb", "create-blocks-from", "openmetrics", "--quiet", str(openmetrics_path), str(tsdb_dir)],
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
    openmetrics: str | None = None,
    scrape_targets: Sequence[str] = (),
    scrape_interval: str = "15s",
    *,
    job_name: str = "scrape",
    retention: str = "3650d",
    ready_timeout: float = READY_TIMEOUT_SECONDS,
) -> PrometheusServer:
    """Start a Prometheus in ``workdir``, backfilled with ``openmetrics`` when given.

    The TSDB, configuration and log live under ``workdir``. Retention is long because
    Prometheus deletes blocks older than it, backfilled ones included.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    tsdb_dir = workdir / "tsdb"
    if openmetrics is not None:
        openmetrics_path = workdir / "backfill.om"
        openmetrics_path.write_text(openmetrics, encoding="utf-8")
        backfill(openmetrics_path, tsdb_dir)
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
