"""The metrics an operator can pick in the rule builder, with their type and help text.

Prometheus stores metadata (type and help) only for metrics it scrapes itself, so
for backfilled or remote-written metrics the metadata API returns nothing. Those metrics
are still listed, by name, with a type guessed from the naming conventions.
"""

from __future__ import annotations

from dataclasses import dataclass

from .prometheus import PrometheusClient

COUNTER = "counter"
GAUGE = "gauge"
UNKNOWN = "unknown"
# Suffixes that Prometheus naming conventions reserve for counters and summary or histogram parts.
COUNTER_SUFFIXES = ("_total", "_count", "_sum", "_bucket")


@dataclass(frozen=True)
class MetricInfo:
    """A metric name with its type (counter, gauge, ...) and help text, empty when unknown."""

    name: str
    type: str
    help: str = ""

    @property
    def is_counter(self) -> bool:
        return self.type in (COUNTER, "histogram", "summary")


def guess_type(name: str) -> str:
    """Guess a metric's type from its name: counter for the counter suffixes, else unknown."""
    return COUNTER if name.endswith(COUNTER_SUFFIXES) else UNKNOWN


def metric_catalog(client: PrometheusClient) -> list[MetricInfo]:
    """List every metric name Prometheus has, sorted, with metadata where it exists.

    Metadata is keyed by the family name, which for an OpenMetrics counter lacks
    the ``_total`` suffix, so both spellings are looked up.
    """
    metadata = client.metric_metadata()
    catalog = []
    for name in client.metric_names():
        entry = metadata.get(name) or metadata.get(name.removesuffix("_total"))
        if entry:
            catalog.append(MetricInfo(name=name, type=entry.get("type") or guess_type(name),
                                      help=entry.get("help", "")))
        else:
            catalog.append(MetricInfo(name=name, type=guess_type(name)))
    return catalog
