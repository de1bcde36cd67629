"""Pure decisions of the send path, each returning a reason rather than a bare bool.

Nothing here touches the database or the network, so every decision is table-tested.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.headerregistry import Address
from typing import Iterable, Mapping

from .rules import COOLDOWN, ONCE_EVER, ONCE_PER_EPISODE

# Reasons stored on send rows and in logs.
REASON_ALREADY_SENT = "already_sent"
REASON_SAME_EPISODE = "same_episode"
REASON_COOLDOWN = "cooldown"
REASON_UNSUBSCRIBED = "unsubscribed"
REASON_BOUNCED = "bounced"
REASON_SPAM_REPORT = "spam_report"
REASON_MANUAL = "manual"
REASON_DUPLICATE_ADDRESS = "duplicate_address"
REASON_HOLDOUT = "control_group"


@dataclass(frozen=True)
class PolicyDecision:
    """Whether the send policy lets a user be triggered now, with the reason and the dedupe key."""

    trigger: bool
    reason: str
    dedupe_key: str | None = None


@dataclass(frozen=True)
class PriorSends:
    """The send history of one rule and one user, as the send policy needs it."""

    has_ever: bool = False
    last_created_at: datetime | None = None
    episode_already_sent: bool = False


def decide_send_policy(policy: str, prior: PriorSends, *, now: datetime,
                       episode_id: int | None = None, cooldown_seconds: int | None = None) -> PolicyDecision:
    """Apply the rule's send policy to one matched user."""
    if policy == ONCE_EVER:
        if prior.has_ever:
            return PolicyDecision(False, REASON_ALREADY_SENT)
        return PolicyDecision(True, "first match ever", "ever")
    if policy == ONCE_PER_EPISODE:
        if episode_id is None:
            raise ValueError("once_per_episode needs the user's open episode")
        if prior.episode_already_sent:
            return PolicyDecision(False, REASON_SAME_EPISODE)
        return PolicyDecision(True, "new episode", f"episode:{episode_id}")
    if policy == COOLDOWN:
        if not cooldown_seconds:
            raise ValueError("cooldown policy needs cooldown_seconds")
        if prior.last_created_at is not None and now - prior.last_created_at < timedelta(seconds=cooldown_seconds):
            return PolicyDecision(False, REASON_COOLDOWN)
        return PolicyDecision(True, "cooldown elapsed", f"cooldown:{int(now.timestamp())}")
    raise ValueError(f"unknown send policy {policy!r}")


def in_holdout(rule_id: int, user_id: str, holdout_percent: float) -> bool:
    """Return True when the user belongs to the rule's control group.

    The choice hashes rule and user, so it is stable across evaluations and
    processes and independent between rules.
    """
    if holdout_percent <= 0:
        return False
    digest = hashlib.sha256(f"{rule_id}\x00{user_id}".encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") / 2**64 * 100
    return bucket < holdout_percent


def normalize_address(email: str | None) -> str | None:
    """Return the lower-cased address, or None when it is not a single valid address."""
    if not email:
        return None
    candidate = str(email).strip()
    if any(c in candidate for c in "\r\n,;<> ") or candidate.count("@") != 1:
        return None
    try:
        Address(addr_spec=candidate)
    except (ValueError, IndexError):
        return None
    local, domain = candidate.rsplit("@", 1)
    if not local or "." not in domain:
        return None
    return candidate.lower()


def suppression_reason(address: str, suppressed: Mapping[str, str]) -> str | None:
    """Return the suppression reason for an address (already lower-cased), if any."""
    return suppressed.get(address)


def first_of_duplicates(addresses: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Map each user whose address repeats an earlier user's to that earlier user.

    ``addresses`` are (user_id, lower-cased address) pairs in a stable order.
    """
    owner: dict[str, str] = {}
    duplicates: dict[str, str] = {}
    for user_id, address in addresses:
        if address in owner:
            duplicates[user_id] = owner[address]
        else:
            owner[address] = user_id
    return duplicates
