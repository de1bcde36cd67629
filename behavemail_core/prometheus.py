"""A client for the Prometheus HTTP API (and compatible engines), built on httpx."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping

import httpx

from .errors import PrometheusError, PrometheusUnavailableError, PromQLError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    """One series of an instant vector: its labels and its value."""

    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True)
class InstantVector:
    """The result of an instant query; non-finite values (NaN, ±Inf) are left out."""

    samples: tuple[Sample, ...]
    dropped_non_finite: int = 0

    def values_by_label(self, label: str, query: str = "") -> dict[str, float]:
        """Map each value of ``label`` to its sample value; one series per value is required."""
        values: dict[str, float] = {}
        for sample in self.samples:
            if label not in sample.labels:
                raise PromQLError(
                    f"The query returns a series without the {label!r} label ({dict(sample.labels)}): "
                    f"aggregate it with sum by ({label}) (...)", query=query)
            key = sample.labels[label]
            if key in values:
                raise PromQLError(
                    f"The query returns more than one series for {label}={key!r}: "
                    f"aggregate it with sum by ({label}) (...) or max by ({label}) (...)", query=query)
            values[key] = sample.value
        return values


@dataclass(frozen=True)
class RangeSeries:
    labels: Mapping[str, str]
    points: tuple[tuple[float, float], ...]


def parse_sample_value(raw: str) -> float | None:
    """Parse a sample value; NaN, +Inf and -Inf become None (no data), never a number."""
    value = float(raw)
    return value if math.isfinite(value) else None


class PrometheusClient:
    """Instant and range queries plus metric, label and label-value discovery."""

    def __init__(self, base_url: str, *, headers: Mapping[str, str] | None = None,
                 timeout: float = 30.0, transport: httpx.BaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._http = httpx.Client(base_url=self.base_url, headers=dict(headers or {}),
                                  timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "PrometheusClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # Queries

    def instant_query(self, promql: str, at: datetime | float | None = None) -> InstantVector:
        params: dict[str, Any] = {"query": promql}
        if at is not None:
            params["time"] = _timestamp(at)
        data = self._call("POST", "/api/v1/query", form=params, query=promql)
        if data["resultType"] == "scalar":
            raise PromQLError(
                "The query returns a single number (a scalar), not one value per user: "
                "aggregate a metric by the user label instead", query=promql)
        if data["resultType"] != "vector":
            raise PromQLError(
                f"The query returns a {data['resultType']}, not an instant vector: "
                "remove the range selector [..] or wrap it in a function such as increase()", query=promql)
        samples, dropped = [], 0
        for item in data["result"]:
            value = parse_sample_value(item["value"][1])
            if value is None:
                dropped += 1
                continue
            samples.append(Sample(labels=item.get("metric", {}), value=value))
        return InstantVector(samples=tuple(samples), dropped_non_finite=dropped)

    def range_query(self, promql: str, start: datetime | float, end: datetime | float,
                    step_seconds: float) -> list[RangeSeries]:
        params = {"query": promql, "start": _timestamp(start), "end": _timestamp(end),
                  "step": f"{step_seconds:g}"}
        data = self._call("POST", "/api/v1/query_range", form=params, query=promql)
        series = []
        for item in data["result"]:
            points = []
            for ts, raw in item.get("values", []):
                value = parse_sample_value(raw)
                if value is not None:
                    points.append((float(ts), value))
            series.append(RangeSeries(labels=item.get("metric", {}), points=tuple(points)))
        return series

    # Discovery

    def metric_names(self) -> list[str]:
        return sorted(self._call("GET", "/api/v1/label/__name__/values"))

    def metric_metadata(self) -> dict[str, dict[str, str]]:
        """Map metric names to their type and help text (first entry of each)."""
        data = self._call("GET", "/api/v1/metadata")
        return {name: {"type": entries[0].get("type", ""), "help": entries[0].get("help", "")}
                for name, entries in data.items() if entries}

    def label_names(self, metric: str | None = None) -> list[str]:
        params = {"match[]": metric} if metric else None
        return sorted(n for n in self._call("GET", "/api/v1/labels", params=params) if n != "__name__")

    def label_values(self, label: str, metric: str | None = None) -> list[str]:
        params = {"match[]": metric} if metric else None
        return sorted(self._call("GET", f"/api/v1/label/{label}/values", params=params))

    def build_info(self) -> dict[str, Any]:
        return self._call("GET", "/api/v1/status/buildinfo")

    # Transport

    def _call(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
              form: Mapping[str, Any] | None = None, query: str | None = None) -> Any:
        url = f"{self.base_url}{path}"
        started = time.monotonic()
        try:
            response = self._http.request(method, path, params=params, data=form)
        except httpx.TimeoutException as exc:
            raise PrometheusUnavailableError(
                f"Prometheus at {self.base_url} did not answer within {self.timeout:g} s: check that it "
                "is healthy, simplify the query, or raise BEHAVEMAIL_PROMETHEUS_TIMEOUT",
                query=query, url=url) from exc
        except httpx.TransportError as exc:
            raise PrometheusUnavailableError(
                f"Cannot connect to Prometheus at {self.base_url} ({exc}): check that it is running "
                "and that BEHAVEMAIL_PROMETHEUS_URL points to it", query=query, url=url) from exc
        elapsed_ms = (time.monotonic() - started) * 1000
        log.debug("prometheus %s %s status=%s duration_ms=%.0f", method, path, response.status_code, elapsed_ms)
        return self._parse(response, query=query, url=url)

    def _parse(self, response: httpx.Response, *, query: str | None, url: str) -> Any:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or "status" not in body:
            kind = PrometheusUnavailableError if response.status_code >= 500 else PrometheusError
            raise kind(
                f"{url} returned HTTP {response.status_code} without a Prometheus API body: "
                "check that BEHAVEMAIL_PROMETHEUS_URL is the Prometheus base URL (no /graph or /api suffix)",
                query=query, url=url)
        if body["status"] != "success":
            error_type, error = body.get("errorType", "unknown"), body.get("error", "")
            if response.status_code >= 500 and error_type not in ("execution", "timeout", "bad_data"):
                raise PrometheusUnavailableError(
                    f"Prometheus at {self.base_url} failed ({error_type}): {error}",
                    query=query, error_type=error_type, url=url)
            raise PromQLError(f"Prometheus rejected the query ({error_type}): {error}",
                              query=query, error_type=error_type, url=url)
        for warning in body.get("warnings", []) or []:
            log.warning("prometheus warning for query %r: %s", query, warning)
        return body["data"]


def _timestamp(value: datetime | float) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: attach tzinfo=timezone.utc")
        return f"{value.timestamp():.3f}"
    return f"{float(value):.3f}"
