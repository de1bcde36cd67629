"""The template context of one user: the account's fields, the rule's value and its name."""

from __future__ import annotations

from typing import Any, Mapping


def personalization_context(account: Mapping[str, Any], *, value: float | None,
                            rule_name: str) -> dict[str, Any]:
    """Build one user's template context.

    NULL columns are left out rather than passed as None, so a template that uses
    a field this account lacks fails for this user with an error naming the field
    (and ``{{ field | default('') }}`` makes the field optional).
    """
    context = {str(key): item for key, item in account.items() if item is not None}
    context["value"] = value
    context["rule_name"] = rule_name
    return context
