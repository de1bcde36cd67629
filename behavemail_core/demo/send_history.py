"""Thirty days of sends, delivery events and goal results for the demo's dashboard.

The five starter rules (imported from data/starter_rules.yaml beforehand) get an
evaluation every five minutes and a history of triggered users. Sent emails have
SendGrid-style delivery events: delivered, machine and human opens, clicks, bounces,
unsubscribes and spam reports. Held-out users are chosen by ``policy.in_holdout``
like the scheduler does. A few sends fail, and suppressions apply to later sends.
Goal results are set where the goal window has closed, and sent users reach the goal
more often than held-out ones.

Each rule skips the users of the demo persona it is meant to match live, so the
history never stops the running demo from emailing them. Everything is drawn from
one seeded random generator, so the same database, ``now`` and seed give the same
history. A marker in the audit log makes a second run a no-op.

Run ``python -m behavemail_core.demo.send_history`` after the rules import.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session, sessionmaker

from .. import links
from ..compiler import compile_condition
from ..database import create_app_engine, session_factory, upgrade
from ..errors import BehavemailError, TemplateRenderError
from ..logs import configure_logging
from ..models import (FAILED, HELD_OUT, SENT, SUPPRESSED, AuditEntry, DeliveryEvent, Episode, Evaluation, Rule,
                      Send, Suppression)
from ..personalization import personalization_context
from ..policy import REASON_HOLDOUT, in_holdout
from ..rendering import TemplateSource, render_email
from ..rule_store import spec_from_row
from ..rules import COOLDOWN, ONCE_EVER, ONCE_PER_EPISODE
from ..settings import DATA_DIR, Settings, load_settings
from .accounts import Account, generate_accounts, read_accounts_csv, shift_signup_dates
from .personas import Persona, assign_personas
from .traffic import build_script
from .accounts import SEED as ACCOUNTS_SEED

log = logging.getLogger(__name__)

DEFAULT_SEED = 30
DEFAULT_DAYS = 30
MARKER_ACTION = "demo.seed_history"
CYCLE_SECONDS = 300
ACCOUNTS_CSV = DATA_DIR / "accounts.csv"
# A user matched by a once-per-episode rule is not triggered again for this long,
# the usual length of one episode in the demo.
EPISODE_SECONDS = 3 * 86400
WEEKEND_FACTOR = 0.6


@dataclass(frozen=True)
class RuleProfile:
    """Behavior of one starter rule in the history: volume, eligible users and rates."""

    rule_name: str
    persona: Persona
    sends_per_day: float
    goal_rate_sent: float
    goal_rate_held_out: float
    open_rate: float
    click_rate: float  # share of human opens
    value_range: tuple[float, float]
    integer_value: bool = True
    plans: tuple[str, ...] | None = None
    # Days since signup at the time of the send, inclusive. None means no limit.
    min_account_days: int | None = None
    max_account_days: int | None = None
    # Usual number of users matching besides those triggered, per evaluation.
    matched_range: tuple[int, int] = (0, 3)


PROFILES = (
    RuleProfile("Integration stalled after signup", Persona.STALLED_AFTER_SIGNUP, 1.5, 0.55, 0.30,
                open_rate=0.62, click_rate=0.35, value_range=(3, 40), min_account_days=2, max_account_days=7,
                matched_range=(0, 1)),
    RuleProfile("Spike of 4xx errors", Persona.ERROR_SPIKE, 5.0, 0.92, 0.80,
                open_rate=0.55, click_rate=0.30, value_range=(55, 420), matched_range=(1, 4)),
    RuleProfile("Key gone quiet", Persona.GONE_QUIET, 4.0, 0.36, 0.17,
                open_rate=0.38, click_rate=0.18, value_range=(300, 9000), min_account_days=31,
                matched_range=(2, 7)),
    RuleProfile("Quota above 80 %", Persona.QUOTA_HIGH, 2.5, 0.97, 0.97,
                open_rate=0.66, click_rate=0.28, value_range=(0.81, 1.12), integer_value=False,
                matched_range=(3, 6)),
    RuleProfile("New search endpoint never tried", Persona.SEARCH_NEVER_TRIED, 2.5, 0.95, 0.85,
                open_rate=0.44, click_rate=0.22, value_range=(400, 25000), plans=("pro", "enterprise"),
                matched_range=(20, 35)),
)

# Rates of delivery outcomes, the same for every rule.
FAILURE_RATE = 0.012
BOUNCE_RATE = 0.02
MACHINE_OPEN_RATE = 0.12
UNSUBSCRIBE_RATE = 0.03  # share of human opens
SPAM_REPORT_RATE = 0.004
FAILURE_ERRORS = (
    ("SendGrid answered HTTP 503 (service unavailable): try again later", True),
    ("SMTP 451 4.3.0 temporary failure on the relay: try again later", True),
    ("SendGrid rejected the request with HTTP 400: the address does not accept mail", False),
)


@dataclass
class PlannedEvent:
    event_type: str
    at: datetime
    url: str | None = None
    machine_open: bool = False


@dataclass
class PlannedSend:
    """One triggered user in the history, with its outcome, events and goal result."""

    rule: Rule
    profile: RuleProfile
    account: Account
    at: datetime
    value: float
    status: str = SENT
    reason: str | None = None
    error: str | None = None
    retryable: bool | None = None
    events: list[PlannedEvent] = field(default_factory=list)
    goal_reached: bool | None = None
    goal_measured_at: datetime | None = None
    episode_end: datetime | None = None
    send_id: int | None = None


@dataclass(frozen=True)
class SeedReport:
    """Counts of the rows :func:`seed_history` wrote, or ``skipped`` when the history was there already."""

    skipped: bool
    sends: int = 0
    delivery_events: int = 0
    evaluations: int = 0
    suppressions: int = 0


def seed_history(sessions: sessionmaker[Session], now: datetime, days: int = DEFAULT_DAYS,
                 seed: int = DEFAULT_SEED, *, settings: Settings | None = None,
                 accounts_csv: Path = ACCOUNTS_CSV) -> SeedReport:
    """Write ``days`` days of demo history before ``now`` in one transaction, unless already seeded.

    ``settings`` provides the public URL, secret key and postal address of the
    rendered emails' unsubscribe links and footers; without it, placeholders are used.
    Raises BehavemailError when a starter rule is missing.
    """
    rng = random.Random(seed)
    now = now.astimezone(timezone.utc)
    accounts = load_accounts(accounts_csv, now.date())
    personas = assign_personas([account.user_id for account in accounts], ACCOUNTS_SEED)

    with sessions.begin() as session:
        if session.scalar(select(AuditEntry.id).where(AuditEntry.action == MARKER_ACTION).limit(1)) is not None:
            log.info("demo history already seeded, nothing to do")
            return SeedReport(skipped=True)
        rules = starter_rules(session)
        planned = []
        for profile in PROFILES:
            rule = rules[profile.rule_name]
            eligible = eligible_accounts(profile, accounts, personas)
            planned.extend(plan_triggers(profile, rule, eligible, now, days, rng))
        planned.sort(key=lambda item: (item.at, item.rule.id, item.account.user_id))
        suppressions = decide_outcomes(planned, now, rng)

        evaluation_ids = _write_evaluations(session, rules, planned, now, days, rng, settings)
        events = _write_sends(session, planned, evaluation_ids, settings)
        _write_suppressions(session, suppressions)
        session.add(AuditEntry(at=now, actor="demo", action=MARKER_ACTION, entity="database",
                               detail={"days": days, "seed": seed, "sends": len(planned)}))
        report = SeedReport(skipped=False, sends=len(planned), delivery_events=events,
                            evaluations=len(evaluation_ids), suppressions=len(suppressions))
    log.info("demo history seeded days=%d sends=%d delivery_events=%d evaluations=%d suppressions=%d",
             days, report.sends, report.delivery_events, report.evaluations, report.suppressions)
    return report


def load_accounts(path: Path, today: date) -> list[Account]:
    """Read the demo accounts (or generate the same ones when the CSV is missing), signups moved to ``today``."""
    accounts = read_accounts_csv(path) if path.is_file() else generate_accounts()
    return shift_signup_dates(accounts, today)


def starter_rules(session: Session) -> dict[str, Rule]:
    """Return the starter rules by name; raise BehavemailError naming the first one missing."""
    rules = {}
    for profile in PROFILES:
        rule = session.scalar(select(Rule).where(Rule.name == profile.rule_name, Rule.deleted_at.is_(None)))
        if rule is None:
            raise BehavemailError(
                f"Starter rule {profile.rule_name!r} not found in the app database: import the starter rules "
                "first with python -m behavemail_core rules import data/starter_rules.yaml")
        rules[profile.rule_name] = rule
    return rules


def eligible_accounts(profile: RuleProfile, accounts: Sequence[Account],
                      personas: dict[str, Persona]) -> list[Account]:
    """Return the accounts a rule may trigger in the history, by user id.

    Users of the persona the rule matches live, users who never call the API, and the
    users whose behavior the live traffic generator changes are left out, so a past
    email never holds back the live demo's emails under the rule's send policy.
    """
    left_out = {profile.persona, Persona.DORMANT}
    scripted = {event.user_id for event in build_script(personas)}
    return sorted((account for account in accounts
                   if personas.get(account.user_id) not in left_out
                   and account.user_id not in scripted
                   and (profile.plans is None or account.plan in profile.plans)),
                  key=lambda account: account.user_id)


def plan_triggers(profile: RuleProfile, rule: Rule, eligible: Sequence[Account], now: datetime, days: int,
                  rng: random.Random) -> list[PlannedSend]:
    """Draw the triggered users of one rule day by day, following the rule's send policy."""
    planned: list[PlannedSend] = []
    last_sent: dict[str, datetime] = {}
    first_day = now.date() - timedelta(days=days)
    for offset in range(days + 1):
        day = first_day + timedelta(days=offset)
        expected = profile.sends_per_day * (WEEKEND_FACTOR if day.weekday() >= 5 else 1.0)
        for _ in range(_poisson(rng, expected)):
            at = _cycle_time(day, rng)
            if not now - timedelta(days=days) <= at < now - timedelta(seconds=CYCLE_SECONDS):
                continue
            candidates = [account for account in eligible
                          if _account_fits(profile, account, at) and _policy_allows(rule, last_sent, account, at)]
            if not candidates:
                continue
            account = rng.choice(candidates)
            last_sent[account.user_id] = at
            planned.append(PlannedSend(rule=rule, profile=profile, account=account, at=at,
                                       value=_draw_value(profile, rng)))
    return planned


def decide_outcomes(planned: Sequence[PlannedSend], now: datetime, rng: random.Random) -> dict[str, dict[str, Any]]:
    """Settle every planned send's outcome, events and goal in time order; return the suppressions.

    An address suppressed by an earlier bounce, unsubscribe or spam report is
    suppressed for every later send, as the scheduler does.
    """
    suppressions: dict[str, dict[str, Any]] = {}
    for item in planned:
        address = item.account.email.lower()
        suppression = suppressions.get(address)
        if suppression is not None and suppression["created_at"] < item.at:
            item.status, item.reason = SUPPRESSED, suppression["reason"]
        elif in_holdout(item.rule.id, item.account.user_id, item.rule.holdout_percent or 0.0):
            item.status, item.reason = HELD_OUT, REASON_HOLDOUT
        elif rng.random() < FAILURE_RATE:
            item.status = FAILED
            item.error, item.retryable = rng.choice(FAILURE_ERRORS)
        else:
            item.events = _draw_events(item, now, rng)
        if item.rule.send_policy == ONCE_PER_EPISODE:
            item.episode_end = min(item.at + timedelta(seconds=rng.randint(EPISODE_SECONDS // 3, EPISODE_SECONDS)),
                                   now)
        _draw_goal_time(item, now, rng)
        for event in item.events:
            reason = {"bounce": "bounced", "unsubscribe": "unsubscribed", "spamreport": "spam_report"}.get(
                event.event_type)
            if reason is not None and address not in suppressions:
                suppressions[address] = {"email": address, "reason": reason, "source": f"sendgrid:{event.event_type}",
                                         "created_at": event.at, "planned": item}
    assign_goal_results(planned, rng)
    return suppressions


def assign_goal_results(planned: Sequence[PlannedSend], rng: random.Random) -> None:
    """Mark the measured sends of each rule and group as reached, in the proportion of its rate.

    Exact proportions instead of one coin flip per send keep small control groups from
    drifting above the sent group by chance: the sent group's count is rounded and
    the control group's is rounded down.
    """
    groups: dict[tuple[int, str], list[PlannedSend]] = {}
    for item in planned:
        if item.goal_measured_at is not None:
            groups.setdefault((item.rule.id, item.status), []).append(item)
    for (_, status), members in sorted(groups.items(), key=lambda entry: entry[0]):
        profile = members[0].profile
        if status == SENT:
            reached = round(profile.goal_rate_sent * len(members))
        else:
            reached = math.floor(profile.goal_rate_held_out * len(members))
        chosen = set(rng.sample(range(len(members)), reached))
        for index, item in enumerate(members):
            item.goal_reached = index in chosen


# Drawing


def _poisson(rng: random.Random, mean: float) -> int:
    """Draw from a Poisson distribution (Knuth's method, fine for small means)."""
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def _cycle_time(day: date, rng: random.Random) -> datetime:
    start = datetime.combine(day, datetime.min.time(), timezone.utc)
    cycle = rng.randrange(86400 // CYCLE_SECONDS)
    return start + timedelta(seconds=cycle * CYCLE_SECONDS)


def _account_fits(profile: RuleProfile, account: Account, at: datetime) -> bool:
    age_days = (at.date() - account.signup_date).days
    if age_days < 0:
        return False
    if profile.min_account_days is not None and age_days < profile.min_account_days:
        return False
    return profile.max_account_days is None or age_days <= profile.max_account_days


def _policy_allows(rule: Rule, last_sent: dict[str, datetime], account: Account, at: datetime) -> bool:
    previous = last_sent.get(account.user_id)
    if previous is None:
        return True
    if rule.send_policy == ONCE_EVER:
        return False
    if rule.send_policy == COOLDOWN:
        return (at - previous).total_seconds() >= (rule.cooldown_seconds or 0)
    return (at - previous).total_seconds() >= EPISODE_SECONDS


def _draw_value(profile: RuleProfile, rng: random.Random) -> float:
    low, high = profile.value_range
    if profile.integer_value:
        return float(rng.randint(int(low), int(high)))
    return round(rng.uniform(low, high), 3)


def _draw_events(item: PlannedSend, now: datetime, rng: random.Random) -> list[PlannedEvent]:
    """Draw SendGrid-style events of one sent email; events after ``now`` are left out."""
    sent = item.at + timedelta(seconds=rng.randint(2, 20))
    if rng.random() < BOUNCE_RATE:
        return _before(now, [PlannedEvent("bounce", sent + timedelta(seconds=rng.randint(5, 90)))])
    events = [PlannedEvent("delivered", sent + timedelta(seconds=rng.randint(3, 45)))]
    if rng.random() < MACHINE_OPEN_RATE:
        events.append(PlannedEvent("open", sent + timedelta(seconds=rng.randint(40, 240)), machine_open=True))
    if rng.random() < item.profile.open_rate:
        # Open delays are log-normal around two hours and capped at three days.
        opened = sent + timedelta(seconds=min(3 * 86400, rng.lognormvariate(math.log(2 * 3600), 1.2)))
        events.append(PlannedEvent("open", opened))
        if rng.random() < item.profile.click_rate:
            events.append(PlannedEvent("click", opened + timedelta(seconds=rng.randint(8, 600)),
                                       url=_first_link(item.rule)))
        if rng.random() < UNSUBSCRIBE_RATE:
            events.append(PlannedEvent("unsubscribe", opened + timedelta(seconds=rng.randint(20, 400))))
    if rng.random() < SPAM_REPORT_RATE:
        events.append(PlannedEvent("spamreport", sent + timedelta(hours=rng.randint(1, 30))))
    return _before(now, events)


def _before(now: datetime, events: list[PlannedEvent]) -> list[PlannedEvent]:
    return sorted((event for event in events if event.at < now), key=lambda event: event.at)


def _draw_goal_time(item: PlannedSend, now: datetime, rng: random.Random) -> None:
    """Set when the goal was measured, for sent and held-out users whose goal window has closed."""
    if item.status not in (SENT, HELD_OUT):
        return
    due = item.at + timedelta(seconds=item.rule.goal_window_seconds)
    measured = due + timedelta(seconds=rng.randint(30, CYCLE_SECONDS))
    if measured <= now:
        item.goal_measured_at = measured


def _first_link(rule: Rule) -> str | None:
    html = rule.template.html if rule.template else ""
    start = html.find('href="')
    if start < 0:
        return None
    return html[start + len('href="'):html.find('"', start + len('href="'))]


# Writing


def _write_evaluations(session: Session, rules: dict[str, Rule], planned: Sequence[PlannedSend], now: datetime,
                       days: int, rng: random.Random, settings: Settings | None) -> dict[tuple[int, datetime], int]:
    """Insert one evaluation per rule and five-minute cycle; return their ids by rule and time."""
    outcomes: dict[tuple[int, datetime], list[PlannedSend]] = {}
    for item in planned:
        outcomes.setdefault((item.rule.id, item.at), []).append(item)

    first = _cycle_floor(now - timedelta(days=days)) + timedelta(seconds=CYCLE_SECONDS)
    cycles = int((_cycle_floor(now) - first).total_seconds() // CYCLE_SECONDS)
    rows, keys = [], []
    for profile in PROFILES:
        rule = rules[profile.rule_name]
        query = _rule_query(rule, settings)
        for index in range(cycles):
            at = first + timedelta(seconds=index * CYCLE_SECONDS)
            items = outcomes.get((rule.id, at), [])
            rows.append(_evaluation_row(rule.id, at, query, items, rng.randint(*profile.matched_range), rng))
            keys.append((rule.id, at))
    ids = session.scalars(insert(Evaluation).returning(Evaluation.id, sort_by_parameter_order=True), rows).all()
    return dict(zip(keys, ids))


def _evaluation_row(rule_id: int, at: datetime, query: str, items: Sequence[PlannedSend], skipped: int,
                    rng: random.Random) -> dict[str, Any]:
    statuses = [item.status for item in items]
    duration_ms = rng.randint(15, 90) + 40 * len(items)
    return {"rule_id": rule_id, "evaluated_at": at, "finished_at": at + timedelta(milliseconds=duration_ms),
            "query": query, "matched": len(items) + skipped, "triggered": len(items),
            "sent": statuses.count(SENT), "suppressed": statuses.count(SUPPRESSED),
            "failed": statuses.count(FAILED), "held_out": statuses.count(HELD_OUT), "skipped": skipped,
            "duration_ms": duration_ms, "scheduler_id": "demo-history"}


def _rule_query(rule: Rule, settings: Settings | None) -> str:
    spec = spec_from_row(rule)
    user_label = settings.user_label if settings else "user_id"
    scrape_interval = settings.scrape_interval if settings else 60
    return compile_condition(spec.condition, user_label=user_label, scrape_interval_seconds=scrape_interval).promql


def _write_sends(session: Session, planned: Sequence[PlannedSend], evaluation_ids: dict[tuple[int, datetime], int],
                 settings: Settings | None) -> int:
    """Insert the sends (with their episodes and rendered emails) and their delivery events."""
    event_rows = []
    for item in planned:
        episode_id = _episode_id(session, item)
        send = Send(rule_id=item.rule.id, evaluation_id=evaluation_ids.get((item.rule.id, item.at)),
                    episode_id=episode_id, user_id=item.account.user_id, dedupe_key=_dedupe_key(item, episode_id),
                    email=item.account.email, status=item.status, reason=item.reason, error=item.error,
                    retryable=item.retryable, value=item.value, created_at=item.at, claimed_by="demo-history",
                    goal_reached=item.goal_reached, goal_measured_at=item.goal_measured_at)
        if item.status in (SENT, HELD_OUT):
            send.goal_due_at = item.at + timedelta(seconds=item.rule.goal_window_seconds)
        session.add(send)
        session.flush()
        if item.status == SENT:
            _fill_sent(send, item, settings)
        for event in item.events:
            event_rows.append(_event_row(send, event))
        item.send_id = send.id
    if event_rows:
        session.execute(insert(DeliveryEvent), event_rows)
    return len(event_rows)


def _episode_id(session: Session, item: PlannedSend) -> int | None:
    if item.episode_end is None:
        return None
    episode = Episode(rule_id=item.rule.id, user_id=item.account.user_id, started_at=item.at,
                      ended_at=item.episode_end)
    session.add(episode)
    session.flush()
    return episode.id


def _dedupe_key(item: PlannedSend, episode_id: int | None) -> str:
    if item.rule.send_policy == ONCE_EVER:
        return "ever"
    if episode_id is not None:
        return f"episode:{episode_id}"
    return f"cooldown:{int(item.at.timestamp())}"


def _fill_sent(send: Send, item: PlannedSend, settings: Settings | None) -> None:
    """Render the email, mark it sent through SendGrid and copy the first time of each event."""
    send.backend = "sendgrid"
    send.attempts = 1
    send.sent_at = item.at
    send.provider_message_id = hashlib.sha256(f"demo-message:{send.id}".encode()).hexdigest()[:22]
    _render(send, item, settings)
    for event in item.events:
        column = _first_seen_column(event)
        if column is not None and getattr(send, column) is None:
            setattr(send, column, event.at)


def _first_seen_column(event: PlannedEvent) -> str | None:
    if event.event_type == "open":
        return "machine_opened_at" if event.machine_open else "opened_at"
    return {"delivered": "delivered_at", "click": "clicked_at", "bounce": "bounced_at",
            "unsubscribe": "unsubscribed_at", "spamreport": "spam_reported_at"}.get(event.event_type)


def _render(send: Send, item: PlannedSend, settings: Settings | None) -> None:
    template = item.rule.template
    if template is None:
        return
    public_url = settings.public_url if settings else "http://127.0.0.1:8502"
    secret_key = settings.secret_key if settings else "demo-history-placeholder-key"
    postal_address = settings.postal_address if settings else "Example API Inc., 1 Demo Street, Springfield"
    account = {**item.account.__dict__, "signup_date": item.account.signup_date.isoformat()}
    context = personalization_context(account, value=item.value, rule_name=item.rule.name)
    try:
        rendered = render_email(TemplateSource(subject=template.subject, html=template.html, text=template.text),
                                context, unsubscribe_url=links.unsubscribe_url(public_url, secret_key, send.id),
                                postal_address=postal_address)
    except TemplateRenderError as exc:
        send.status, send.error, send.retryable, send.sent_at = FAILED, str(exc), False, None
        send.goal_due_at = send.goal_reached = send.goal_measured_at = None
        item.status = FAILED
        item.events.clear()
        return
    send.subject, send.html, send.text = rendered.subject, rendered.html, rendered.text


def _event_row(send: Send, event: PlannedEvent) -> dict[str, Any]:
    timestamp = int(event.at.timestamp())
    sg_event_id = hashlib.sha256(f"demo-event:{send.id}:{event.event_type}:{timestamp}".encode()).hexdigest()[:22]
    payload = {"event": event.event_type, "email": send.email, "timestamp": timestamp,
               "sg_event_id": sg_event_id, "sg_message_id": send.provider_message_id, "send_id": str(send.id)}
    if event.machine_open:
        payload["sg_machine_open"] = True
    if event.url:
        payload["url"] = event.url
    return {"send_id": send.id, "source": "sendgrid", "event_type": event.event_type, "occurred_at": event.at,
            "received_at": event.at + timedelta(seconds=5), "dedupe_key": hashlib.sha256(
                f"demo-history\x1f{send.id}\x1f{event.event_type}\x1f{timestamp}".encode()).hexdigest(),
            "sg_event_id": sg_event_id, "email": send.email, "url": event.url, "machine_open": event.machine_open,
            "payload": payload}


def _write_suppressions(session: Session, suppressions: dict[str, dict[str, Any]]) -> None:
    rows = []
    for address in sorted(suppressions):
        entry = suppressions[address]
        rows.append({"email": address, "reason": entry["reason"], "source": entry["source"],
                     "send_id": entry["planned"].send_id, "created_at": entry["created_at"]})
    existing = set(session.scalars(select(Suppression.email).where(Suppression.email.in_(sorted(suppressions)))))
    rows = [row for row in rows if row["email"] not in existing]
    if rows:
        session.execute(insert(Suppression), rows)


def _cycle_floor(at: datetime) -> datetime:
    timestamp = int(at.timestamp()) // CYCLE_SECONDS * CYCLE_SECONDS
    return datetime.fromtimestamp(timestamp, timezone.utc)


# Command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m behavemail_core.demo.send_history",
                                     description="Seed the app database with 30 days of demo sends and events.")
    parser.add_argument("--days", type=int, default=DEFAULT_DAYS, help="days of history before now (default 30)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the random generator")
    parser.add_argument("--accounts", type=Path, default=ACCOUNTS_CSV, help="demo accounts CSV to read")
    args = parser.parse_args(argv)
    configure_logging("INFO")
    if not 1 <= args.days <= 365:
        parser.error(f"--days {args.days} is out of range: expected 1 to 365")

    try:
        settings = load_settings()
        upgrade(settings.database_url)
        engine = create_app_engine(settings.database_url)
        report = seed_history(session_factory(engine), datetime.now(timezone.utc), args.days, args.seed,
                              settings=settings, accounts_csv=args.accounts)
        engine.dispose()
    except BehavemailError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if report.skipped:
        print("The demo history is already in the app database; nothing was written.")
    else:
        print(f"Seeded {args.days} days of demo history: {report.sends} sends, {report.delivery_events} "
              f"delivery events, {report.evaluations} evaluations, {report.suppressions} suppressions.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
