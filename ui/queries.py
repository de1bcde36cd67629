"""Cached reads from Prometheus and the accounts database for the screens.

Every rerun of a screen would otherwise ask Prometheus again, and the rule builder
reruns on each change. Results are kept for a short time per query and per settings
(``services.cache_key``). st.cache_data leaves arguments whose names start with an
underscore out of the cache key. Errors are not cached.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import streamlit as st

from behavemail_core import preview
from behavemail_core.metric_catalog import MetricInfo, metric_catalog
from behavemail_core.rules import RuleSpec
from behavemail_core.settings import Settings

from . import services

# Metric names, labels and columns change rarely; matches change every scrape.
DISCOVERY_TTL_SECONDS = 120
MATCHES_TTL_SECONDS = 30


def _key(settings: Settings) -> str:
    return services.cache_key(settings)


@st.cache_data(ttl=DISCOVERY_TTL_SECONDS, show_spinner=False)
def _metric_catalog(_settings: Settings, key: str) -> list[MetricInfo]:
    return metric_catalog(services.prometheus(_settings))


def metrics(settings: Settings) -> list[MetricInfo]:
    """List the metrics of Prometheus with type and help text."""
    return _metric_catalog(settings, _key(settings))


@st.cache_data(ttl=DISCOVERY_TTL_SECONDS, show_spinner=False)
def _label_names(_settings: Settings, key: str, metric: str) -> list[str]:
    return services.prometheus(_settings).label_names(metric)


def label_names(settings: Settings, metric: str) -> list[str]:
    """List the labels of a metric's series, without the user label (every series has it)."""
    return [name for name in _label_names(settings, _key(settings), metric) if name != settings.user_label]


@st.cache_data(ttl=DISCOVERY_TTL_SECONDS, show_spinner=False)
def _label_values(_settings: Settings, key: str, label: str, metric: str) -> list[str]:
    return services.prometheus(_settings).label_values(label, metric)


def label_values(settings: Settings, label: str, metric: str) -> list[str]:
    """List the values a label takes on a metric's series."""
    return _label_values(settings, _key(settings), label, metric)


@st.cache_data(ttl=DISCOVERY_TTL_SECONDS, show_spinner=False)
def _account_columns(_settings: Settings, key: str) -> list[str]:
    return services.accounts(_settings).columns()


def account_columns(settings: Settings) -> list[str]:
    """List the columns the accounts query returns."""
    return _account_columns(settings, _key(settings))


@st.cache_data(ttl=MATCHES_TTL_SECONDS, show_spinner=False)
def _current_matches(_settings: Settings, _spec: RuleSpec, key: str, promql: str,
                     audience_key: str) -> preview.CurrentMatches:
    return preview.current_matches(services.prometheus(_settings), services.accounts(_settings), promql,
                                   user_label=_settings.user_label, audience=_spec.audience,
                                   now=datetime.now(timezone.utc))


def current_matches(settings: Settings, spec: RuleSpec, promql: str) -> preview.CurrentMatches:
    """Return the users the rule matches now, with accounts and the audience verdict."""
    audience_key = json.dumps([item.to_dict() for item in spec.audience], sort_keys=True, default=str)
    return _current_matches(settings, spec, _key(settings), promql, audience_key)


@st.cache_data(ttl=MATCHES_TTL_SECONDS, show_spinner=False)
def _hit_counts(_settings: Settings, key: str, promql: str, range_seconds: int,
                check_interval_seconds: int) -> list[tuple[datetime, int]]:
    window = preview.time_range(datetime.now(timezone.utc), range_seconds, check_interval_seconds)
    return preview.hit_counts(services.prometheus(_settings), promql, window)


def hit_counts(settings: Settings, promql: str, range_seconds: int,
               check_interval_seconds: int) -> list[tuple[datetime, int]]:
    """Count the matching users at every check interval over the last ``range_seconds``."""
    return _hit_counts(settings, _key(settings), promql, range_seconds, check_interval_seconds)


@st.cache_data(ttl=MATCHES_TTL_SECONDS, show_spinner=False)
def _backtest(_settings: Settings, _spec: RuleSpec, key: str, spec_key: str, promql: str,
              range_seconds: int, rule_id: int | None) -> preview.Backtest:
    window = preview.time_range(datetime.now(timezone.utc), range_seconds, _spec.check_interval_seconds)
    return preview.backtest(services.prometheus(_settings), services.accounts(_settings), _spec, promql,
                            user_label=_settings.user_label, window=window, rule_id=rule_id)


def backtest(settings: Settings, spec: RuleSpec, promql: str, range_seconds: int,
             rule_id: int | None) -> preview.Backtest:
    """Replay the rule over the last ``range_seconds`` and count the emails it would have sent."""
    spec_key = json.dumps(spec.to_dict(), sort_keys=True, default=str)
    return _backtest(settings, spec, _key(settings), spec_key, promql, range_seconds, rule_id)


@st.cache_data(ttl=MATCHES_TTL_SECONDS, show_spinner=False)
def _count_matching(_settings: Settings, key: str, promql: str) -> int:
    return preview.count_matching(services.prometheus(_settings), promql)


def count_matching(settings: Settings, promql: str) -> int:
    """Return how many users a rule's query matches now."""
    return _count_matching(settings, _key(settings), promql)


@st.cache_data(ttl=15, show_spinner=False)
def _prometheus_version(_settings: Settings, key: str) -> str:
    info = services.prometheus(_settings).build_info()
    return str(info.get("version", "")) if isinstance(info, dict) else ""


def prometheus_version(settings: Settings) -> str:
    """Return the version Prometheus reports; raise PrometheusError when it is unreachable."""
    return _prometheus_version(settings, _key(settings))
