"""Services shared by every session of the operator app: settings, database, Prometheus, accounts.

Engines and clients are made once per process with st.cache_resource and keyed by
the settings they come from, so a changed setting gets a new client, and tests with
different settings never share one. Nothing is created at import time.
"""

from __future__ import annotations

import logging

import streamlit as st
from sqlalchemy.orm import Session, sessionmaker

from behavemail_core.accounts import AccountDirectory
from behavemail_core.database import create_app_engine, session_factory, upgrade
from behavemail_core.delivery import create_backend
from behavemail_core.delivery.message import DeliveryBackend
from behavemail_core.logs import configure_logging
from behavemail_core.prometheus import PrometheusClient
from behavemail_core.settings import Settings, load_settings

log = logging.getLogger(__name__)


@st.cache_resource(show_spinner=False)
def configure_app_logging() -> None:
    """Configure logging once per process, like the scheduler does."""
    configure_logging("INFO")


def current_settings() -> Settings:
    """Load the settings on every run, so a changed .env applies without a restart.

    Raises ConfigurationError naming the bad variable.
    """
    return load_settings()


@st.cache_resource(show_spinner="Preparing the app database…")
def _sessions_for(database_url: str) -> sessionmaker[Session]:
    # Bring the schema up to date once per process, so a fresh database works at once.
    upgrade(database_url)
    return session_factory(create_app_engine(database_url))


def sessions(settings: Settings) -> sessionmaker[Session]:
    """Return the session factory of the app database."""
    return _sessions_for(settings.database_url)


@st.cache_resource(show_spinner=False)
def _prometheus_for(url: str, headers: tuple[tuple[str, str], ...], timeout: int) -> PrometheusClient:
    return PrometheusClient(url, headers=dict(headers), timeout=timeout)


def prometheus(settings: Settings) -> PrometheusClient:
    """Return the Prometheus client."""
    headers = tuple(sorted(settings.prometheus_headers.items()))
    return _prometheus_for(settings.prometheus_url, headers, settings.prometheus_timeout)


@st.cache_resource(show_spinner=False)
def _accounts_for(url: str, query: str) -> AccountDirectory:
    return AccountDirectory(url, query)


def accounts(settings: Settings) -> AccountDirectory:
    """Return the account directory; raise AccountLookupError when the query lacks :user_ids."""
    return _accounts_for(settings.accounts_url, settings.accounts_query)


def delivery_backend(settings: Settings) -> DeliveryBackend:
    """Create the configured delivery backend; the caller closes it after use."""
    return create_backend(settings)


def cache_key(settings: Settings) -> str:
    """Return a text that changes whenever a setting behind the cached query results changes.

    Cached functions take it as an argument, so results from one Prometheus or
    accounts database are never served for another.
    """
    return "|".join((settings.prometheus_url, repr(sorted(settings.prometheus_headers.items())),
                     settings.user_label, str(settings.scrape_interval), settings.accounts_url,
                     settings.accounts_query))
