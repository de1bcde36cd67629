"""Demo personas: how each fictional user behaves, and which starter rule that should trigger.

Personas are a pure function of the user ids and the seed, so the accounts file, the
metric history and the live traffic generator agree on them without storing them.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Sequence


class Persona(enum.Enum):
    """A behavior pattern in the demo data; the value is a short name for logs and docs."""

    STALLED_AFTER_SIGNUP = "stalled_after_signup"
    ERROR_SPIKE = "error_spike"
    GONE_QUIET = "gone_quiet"
    QUOTA_HIGH = "quota_high"
    SEARCH_NEVER_TRIED = "search_never_tried"
    NEW = "new"
    DORMANT = "dormant"
    HEALTHY = "healthy"


# How many users get each persona, in assignment order; HEALTHY takes the rest.
PERSONA_COUNTS = {
    Persona.STALLED_AFTER_SIGNUP: 10,
    Persona.ERROR_SPIKE: 12,
    Persona.GONE_QUIET: 14,
    Persona.QUOTA_HIGH: 9,
    Persona.SEARCH_NEVER_TRIED: 15,
    Persona.NEW: 8,
    Persona.DORMANT: 5,
}

DESCRIPTIONS = {
    Persona.STALLED_AFTER_SIGNUP: "signed up 4 to 6 days ago, made a few requests (mostly 401) "
    "early on and a last one 50 to 70 hours ago, nothing since",
    Persona.ERROR_SPIKE: "steady traffic plus a burst of 401 responses in the last 18 hours: "
    "over 100 responses with status 4xx and a 4xx share above 15 % in 24 hours",
    Persona.GONE_QUIET: "signed up over 30 days ago, steady traffic that stopped 84 to 140 hours ago",
    Persona.QUOTA_HIGH: "steady traffic, api_quota_used_ratio climbing to 0.82 to 1.15",
    Persona.SEARCH_NEVER_TRIED: "on the pro or enterprise plan, steady traffic that never calls /v2/search",
    Persona.NEW: "signed up 1 to 6 days ago and has used the API steadily since",
    Persona.DORMANT: "has an account but never called the API",
    Persona.HEALTHY: "steady traffic, few errors, quota below 0.7",
}


def assign_personas(user_ids: Sequence[str], seed: int) -> dict[str, Persona]:
    """Assign a persona to every user id, the same way for the same ids and seed."""
    shuffled = sorted(user_ids)
    random.Random(f"personas:{seed}").shuffle(shuffled)
    personas: dict[str, Persona] = {}
    position = 0
    for persona, count in PERSONA_COUNTS.items():
        for user_id in shuffled[position : position + count]:
            personas[user_id] = persona
        position += count
    for user_id in shuffled[position:]:
        personas[user_id] = Persona.HEALTHY
    return personas


# Pro and enterprise customers all call /v2/search, except the SEARCH_NEVER_TRIED persona.
# On the other plans a few do, so about a third of all active users have tried it.
SEARCH_PLANS = ("pro", "enterprise")
SEARCH_SHARE_ON_OTHER_PLANS = 0.15


def uses_search(user_id: str, persona: Persona, plan: str, seed: int) -> bool:
    """Return whether a user calls /v2/search at all."""
    if persona in (Persona.SEARCH_NEVER_TRIED, Persona.DORMANT):
        return False
    if plan in SEARCH_PLANS:
        return True
    return random.Random(f"search:{seed}:{user_id}").random() < SEARCH_SHARE_ON_OTHER_PLANS


def users_by_persona(personas: dict[str, Persona]) -> dict[Persona, list[str]]:
    """Group user ids by persona, each list sorted, every persona present."""
    groups: dict[Persona, list[str]] = {persona: [] for persona in Persona}
    for user_id, persona in sorted(personas.items()):
        groups[persona].append(user_id)
    return groups


def final_quota_ratio(user_id: str, persona: Persona, seed: int) -> float:
    """Return the api_quota_used_ratio a user has at the end of the history."""
    rng = random.Random(f"quota:{seed}:{user_id}")
    if persona is Persona.QUOTA_HIGH:
        return round(rng.uniform(0.82, 1.15), 3)
    if persona in (Persona.DORMANT, Persona.STALLED_AFTER_SIGNUP):
        return round(rng.uniform(0.0, 0.02), 3)
    return round(rng.uniform(0.05, 0.7), 3)
