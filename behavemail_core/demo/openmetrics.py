"""OpenMetrics text for ``promtool tsdb create-blocks-from openmetrics``.

promtool (checked with Prometheus 2.42) needs a ``# TYPE`` line per metric family,
each series' samples together and in time order, timestamps in seconds, and a final
``# EOF`` line. :func:`write_openmetrics` streams large histories to a file.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from io import StringIO
from typing import TextIO

METRIC_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_NAME_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
KINDS = ("counter", "gauge")


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
