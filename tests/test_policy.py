"""Send policy, control group and address decisions, table-driven."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from behavemail_core.policy import (PriorSends, decide_send_policy, first_of_duplicates, in_holdout,
                                    normalize_address)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
DAY = 86400


@pytest.mark.parametrize(("policy", "prior", "kwargs", "trigger", "reason", "key"), [
    # once ever: a first match triggers under the key "ever"
    ("once_ever", PriorSends(), {}, True, "first match ever", "ever"),
    # once ever: any earlier send blocks it
    ("once_ever", PriorSends(has_ever=True, last_created_at=NOW - timedelta(days=300)), {},
     False, "already_sent", None),
    # once per episode: a new episode triggers under its own key
    ("once_per_episode", PriorSends(has_ever=True), {"episode_id": 7}, True, "new episode", "episode:7"),
    # once per episode: a send in the same episode blocks it
    ("once_per_episode", PriorSends(has_ever=True, episode_already_sent=True), {"episode_id": 7},
     False, "same_episode", None),
    # cooldown: never sent before
    ("cooldown", PriorSends(), {"cooldown_seconds": 7 * DAY}, True, "cooldown elapsed",
     f"cooldown:{int(NOW.timestamp())}"),
    # cooldown: sent 6 days ago with a 7-day cooldown
    ("cooldown", PriorSends(has_ever=True, last_created_at=NOW - timedelta(days=6)),
     {"cooldown_seconds": 7 * DAY}, False, "cooldown", None),
    # cooldown: sent exactly 7 days ago, so it is due again
    ("cooldown", PriorSends(has_ever=True, last_created_at=NOW - timedelta(days=7)),
     {"cooldown_seconds": 7 * DAY}, True, "cooldown elapsed", f"cooldown:{int(NOW.timestamp())}"),
])
def test_send_policy(policy, prior, kwargs, trigger, reason, key) -> None:
    decision = decide_send_policy(policy, prior, now=NOW, **kwargs)

    assert decision.trigger is trigger
    assert decision.reason == reason
    assert decision.dedupe_key == key


def test_unknown_policy_raises() -> None:
    with pytest.raises(ValueError, match="unknown send policy 'weekly'"):
        decide_send_policy("weekly", PriorSends(), now=NOW)


def test_holdout_stable_and_near_share() -> None:
    users = [f"user-{i}" for i in range(10_000)]
    held = [u for u in users if in_holdout(3, u, 10)]

    assert [u for u in users if in_holdout(3, u, 10)] == held
    assert 900 <= len(held) <= 1100
    assert not any(in_holdout(3, u, 0) for u in users[:500])


def test_holdout_independent_between_rules() -> None:
    users = [f"user-{i}" for i in range(2_000)]
    rule_one = {u for u in users if in_holdout(1, u, 50)}
    rule_two = {u for u in users if in_holdout(2, u, 50)}

    assert rule_one != rule_two


@pytest.mark.parametrize(("raw", "expected"), [
    # mixed case is lower-cased so one suppression covers every spelling
    ("Ana.Lopez@Example.com", "ana.lopez@example.com"),
    # surrounding spaces are trimmed
    ("  bob@example.org ", "bob@example.org"),
    # a header injection attempt is not an address
    ("eve@example.com\r\nBcc: x@example.com", None),
    # two addresses in one field
    ("a@example.com, b@example.com", None),
    # no domain dot
    ("root@localhost", None),
    # empty
    ("", None),
    (None, None),
])
def test_normalize_address(raw, expected) -> None:
    assert normalize_address(raw) == expected


def test_duplicates_point_to_first_user() -> None:
    pairs = [("u1", "a@example.com"), ("u2", "b@example.com"), ("u3", "a@example.com")]

    assert first_of_duplicates(pairs) == {"u3": "u1"}
