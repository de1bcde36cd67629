"""The exception tree of Behavemail.

Library errors (httpx, smtplib, SQLAlchemy, the sendgrid package) are mapped to
these types at the module boundary that calls the library, with ``raise ... from``.
Every message names the value involved and what to do next.
"""

from __future__ import annotations


class BehavemailError(Exception):
    """Base class of every error Behavemail raises on purpose."""


class ConfigurationError(BehavemailError):
    """A setting is missing or malformed."""


class PrometheusError(BehavemailError):
    """Prometheus could not be reached or rejected a query."""

    def __init__(self, message: str, *, query: str | None = None,
                 error_type: str | None = None, url: str | None = None) -> None:
        super().__init__(message)
        self.query = query
        self.error_type = error_type
        self.url = url


class PrometheusUnavailableError(PrometheusError):
    """The Prometheus HTTP API could not be reached or failed (connection refused, timeout, 5xx)."""


class PromQLError(PrometheusError):
    """Prometheus rejected a query (errorType bad_data, execution, ...)."""


class RuleValidationError(BehavemailError):
    """A rule definition is invalid. The message names the field and the reason."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class TemplateRenderError(BehavemailError):
    """A template failed to compile or to render for one account."""

    def __init__(self, message: str, *, line: int | None = None,
                 variable: str | None = None) -> None:
        super().__init__(message)
        self.line = line
        self.variable = variable


class AccountLookupError(BehavemailError):
    """The accounts database could not be queried."""


class DeliveryError(BehavemailError):
    """A delivery backend failed. ``retryable`` is True when trying again can help."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class ConcurrentEditError(BehavemailError):
    """Someone else saved the same record since it was loaded."""


class TokenError(BehavemailError):
    """A tracking or unsubscribe token is malformed or its signature does not match."""
