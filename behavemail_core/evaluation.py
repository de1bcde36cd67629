"""The evaluation of one rule, as a visible chain of stages.

evaluate -> look up accounts -> audience filter -> send policy -> claim send rows
-> render -> deliver -> record.

Send rows are claimed in the same transaction that reads the send history: a row
is inserted as pending, or with its final outcome when no email goes out. The
claim is committed before any provider is called, so a second run or a crash
never sends twice. A unique constraint on (rule, user, dedupe key) backs this up when several
schedulers share a PostgreSQL database.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable, Sequence

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from . import links
from .accounts import AccountDirectory
from .compiler import compile_condition
from .delivery.message import DeliveryBackend, DeliveryResult, OutgoingEmail
from .errors import BehavemailError, TemplateRenderError
from .models import (FAILED, HELD_OUT, PENDING, SENT, SUPPRESSED, Episode, Evaluation, Rule, Send,
                     Suppression, Template)
from .policy import (REASON_DUPLICATE_ADDRESS, REASON_HOLDOUT, PriorSends, decide_send_policy,
                     first_of_duplicates, in_holdout, normalize_address)
from .personalization import personalization_context
from .prometheus import PrometheusClient
from .rendering import TemplateSource, render_email
from .rule_store import spec_from_row
from .rules import ONCE_PER_EPISODE, RuleSpec
from .settings import Settings
from .audience import audience_mismatch

log = logging.getLogger(__name__)

# Emails handed to a backend at once. SendGrid takes 1,000 personalizations per
# request; file and SMTP batches stay small so a stop request waits for little.
BATCH_SIZES = {"sendgrid": 1000}
DEFAULT_BATCH_SIZE = 10
# Chunk for IN (...) lists of user ids in history queries.
ID_CHUNK = 5000


@dataclass
class Services:
    """The dependencies of an evaluation; tests inject their own instances."""

    settings: Settings
    sessions: sessionmaker[Session]
    prometheus: PrometheusClient
    accounts: AccountDirectory
    backend: DeliveryBackend
    scheduler_id: str = "local"
    should_stop: Callable[[], bool] = lambda: False


@dataclass
class Candidate:
    """A matched user on the way through the stages."""

    user_id: str
    value: float
    account: dict[str, Any] | None = None
    address: str | None = None
    outcome: str = PENDING
    reason: str | None = None
    error: str | None = None
    dedupe_key: str | None = None
    episode_id: int | None = None
    send_id: int | None = None


@dataclass
class RuleReport:
    """The counts of one rule's evaluation, as logged and stored on the evaluation row."""

    rule_id: int
    rule_name: str
    evaluation_id: int | None = None
    query: str = ""
    matched: int = 0
    triggered: int = 0
    sent: int = 0
    suppressed: int = 0
    failed: int = 0
    held_out: int = 0
    # Matched users not triggered: outside the audience, or held back by the send policy.
    skipped: int = 0
    outside_audience: int = 0
    duration_ms: int = 0
    error: str | None = None
    planned: list[dict[str, Any]] = field(default_factory=list)


def evaluate_rule(services: Services, rule_id: int, now: datetime, *, dry_run: bool = False) -> RuleReport:
    """Evaluate one rule at ``now`` and send its emails (or only plan them with dry_run)."""
    started = time.monotonic()
    with services.sessions() as session:
        rule = session.get(Rule, rule_id)
        if rule is None:
            raise BehavemailError(f"Rule {rule_id} does not exist")
        spec = spec_from_row(rule)
        template = rule.template
        report = RuleReport(rule_id=rule.id, rule_name=rule.name)
        template_source = (TemplateSource(subject=template.subject, html=template.html, text=template.text)
                           if template else None)

    if template_source is None:
        # Triggering now would fail every matched user's send; leaving them untriggered
        # lets them get the email once a template is chosen.
        report.error = (f"Rule {spec.name!r} has no email template, so nobody was triggered: "
                        "pick a template in the rule builder")
        log.error("rule evaluation skipped rule_id=%s rule=%r error=no template", rule_id, spec.name)
        if not dry_run:
            _record_failed_evaluation(services, report, now)
        return report

    try:
        compiled = compile_condition(spec.condition, user_label=services.settings.user_label,
                                     scrape_interval_seconds=services.settings.scrape_interval)
        report.query = compiled.promql
        values = _evaluate_query(services, compiled.promql, now)
        report.matched = len(values)
        accounts = services.accounts.lookup(values) if values else {}
    except BehavemailError as exc:
        report.error = str(exc)
        report.duration_ms = int((time.monotonic() - started) * 1000)
        log.error("rule evaluation failed rule_id=%s rule=%r error=%s", rule_id, spec.name, exc)
        if not dry_run:
            _record_failed_evaluation(services, report, now)
        return report

    candidates = _audience_stage(spec, values, accounts, now, report)
    if dry_run:
        _plan_dry_run(services, spec, rule_id, template_source, candidates, now, report)
    else:
        claimed = _claim_stage(services, rule_id, spec, candidates, now, report)
        _deliver_stage(services, rule_id, spec, template_source, claimed, now, report)
    report.duration_ms = int((time.monotonic() - started) * 1000)
    if not dry_run:
        _finish_evaluation(services, report, now)
    log.info("rule evaluated rule_id=%s rule=%r matched=%d triggered=%d sent=%d suppressed=%d "
             "failed=%d held_out=%d skipped=%d duration_ms=%d%s", rule_id, spec.name, report.matched,
             report.triggered, report.sent, report.suppressed, report.failed, report.held_out,
             report.skipped, report.duration_ms, " dry_run=true" if dry_run else "")
    return report


# Stage 1: evaluate


def _evaluate_query(services: Services, promql: str, now: datetime) -> dict[str, float]:
    vector = services.prometheus.instant_query(promql, at=now)
    if vector.dropped_non_finite:
        log.info("ignored %d NaN or infinite values for query %r", vector.dropped_non_finite, promql)
    return vector.values_by_label(services.settings.user_label, query=promql)


# Stage 2: audience


def _audience_stage(spec: RuleSpec, values: dict[str, float], accounts: dict[str, dict[str, Any]],
                    now: datetime, report: RuleReport) -> list[Candidate]:
    candidates = []
    for user_id in sorted(values):
        account = accounts.get(user_id)
        candidate = Candidate(user_id=user_id, value=values[user_id], account=account)
        if account is not None and spec.audience:
            mismatch = audience_mismatch(spec.audience, account, now)
            if mismatch is not None:
                report.skipped += 1
                report.outside_audience += 1
                log.debug("outside audience rule=%r user_id=%r reason=%s", spec.name, user_id, mismatch)
                continue
        candidates.append(candidate)
    return candidates


# Stage 3: send policy and claim


def _claim_stage(services: Services, rule_id: int, spec: RuleSpec, candidates: list[Candidate],
                 now: datetime, report: RuleReport) -> list[Candidate]:
    """Decide every candidate's fate and write its send row, in one transaction."""
    with services.sessions() as session, session.begin():
        evaluation = Evaluation(rule_id=rule_id, evaluated_at=now, query=report.query,
                                scheduler_id=services.scheduler_id)
        session.add(evaluation)
        session.flush()
        report.evaluation_id = evaluation.id

        episodes = _update_episodes(session, rule_id, spec, candidates, now)
        prior = _prior_sends(session, rule_id, [c.user_id for c in candidates], episodes)
        triggered = []
        for candidate in candidates:
            candidate.episode_id = episodes.get(candidate.user_id)
            decision = decide_send_policy(spec.send_policy, prior.get(candidate.user_id, PriorSends()),
                                          now=now, episode_id=candidate.episode_id,
                                          cooldown_seconds=spec.cooldown_seconds)
            if not decision.trigger:
                report.skipped += 1
                continue
            candidate.dedupe_key = decision.dedupe_key
            triggered.append(candidate)

        _decide_outcomes(session, rule_id, spec, triggered)
        for candidate in triggered:
            send = _send_row(rule_id, evaluation.id, candidate, spec, now, services.scheduler_id)
            session.add(send)
            session.flush()
            candidate.send_id = send.id
            _count(report, candidate.outcome, pending_counts_as=None)
        report.triggered = len(triggered)
    return [c for c in triggered if c.outcome == PENDING]


def _update_episodes(session: Session, rule_id: int, spec: RuleSpec, candidates: list[Candidate],
                     now: datetime) -> dict[str, int]:
    """Open episodes for newly matching users, close those of users who stopped matching."""
    if spec.send_policy != ONCE_PER_EPISODE:
        return {}
    open_episodes = {e.user_id: e for e in session.scalars(
        select(Episode).where(Episode.rule_id == rule_id, Episode.ended_at.is_(None)))}
    matching = {c.user_id for c in candidates}
    for user_id, episode in open_episodes.items():
        if user_id not in matching:
            episode.ended_at = now
    result: dict[str, int] = {}
    for user_id in sorted(matching):
        episode = open_episodes.get(user_id)
        if episode is None:
            episode = Episode(rule_id=rule_id, user_id=user_id, started_at=now)
            session.add(episode)
            session.flush()
        result[user_id] = episode.id
    return result


def _prior_sends(session: Session, rule_id: int, user_ids: Sequence[str],
                 episodes: dict[str, int]) -> dict[str, PriorSends]:
    """Read the send history of these users for this rule with a few batched queries."""
    history: dict[str, PriorSends] = {}
    episode_keys = {f"episode:{episode_id}" for episode_id in episodes.values()}
    for chunk in _chunks(user_ids, ID_CHUNK):
        rows = session.execute(
            select(Send.user_id, func.max(Send.created_at))
            .where(Send.rule_id == rule_id, Send.user_id.in_(chunk))
            .group_by(Send.user_id))
        for user_id, last_created in rows:
            history[user_id] = PriorSends(has_ever=True, last_created_at=last_created)
        if episode_keys:
            sent_in_episode = set(session.scalars(
                select(Send.user_id).where(Send.rule_id == rule_id, Send.user_id.in_(chunk),
                                           Send.dedupe_key.in_(episode_keys))))
            for user_id in sent_in_episode:
                previous = history.get(user_id, PriorSends())
                history[user_id] = PriorSends(has_ever=previous.has_ever,
                                              last_created_at=previous.last_created_at,
                                              episode_already_sent=True)
    return history


def _decide_outcomes(session: Session, rule_id: int, spec: RuleSpec, triggered: list[Candidate]) -> None:
    """Settle who gets no email: no account, bad address, suppressed, duplicate, control group."""
    addresses = {}
    for candidate in triggered:
        if candidate.account is None:
            candidate.outcome = FAILED
            candidate.error = (f"No account found for user id {candidate.user_id!r} in the accounts database: "
                               "check BEHAVEMAIL_ACCOUNTS_QUERY or the user label")
            continue
        candidate.address = normalize_address(candidate.account.get("email"))
        if candidate.address is None:
            candidate.outcome = FAILED
            candidate.error = f"The account's email {candidate.account.get('email')!r} is not a valid address"
            continue
        addresses[candidate.user_id] = candidate.address

    suppressed = _suppressions(session, set(addresses.values()))
    duplicates = first_of_duplicates((c.user_id, c.address) for c in triggered
                                     if c.outcome == PENDING and c.address)
    for candidate in triggered:
        if candidate.outcome != PENDING:
            continue
        if candidate.address in suppressed:
            candidate.outcome, candidate.reason = SUPPRESSED, suppressed[candidate.address]
        elif candidate.user_id in duplicates:
            candidate.outcome = SUPPRESSED
            candidate.reason = f"{REASON_DUPLICATE_ADDRESS}: same address as user {duplicates[candidate.user_id]}"
        elif in_holdout(rule_id, candidate.user_id, spec.holdout_percent):
            candidate.outcome, candidate.reason = HELD_OUT, REASON_HOLDOUT


def _suppressions(session: Session, addresses: set[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for chunk in _chunks(sorted(addresses), ID_CHUNK):
        for email, reason in session.execute(
                select(Suppression.email, Suppression.reason).where(Suppression.email.in_(chunk))):
            found[email] = reason
    return found


def _send_row(rule_id: int, evaluation_id: int, candidate: Candidate, spec: RuleSpec, now: datetime,
              scheduler_id: str) -> Send:
    goal_due = now + timedelta(seconds=spec.goal_window_seconds) if candidate.outcome == HELD_OUT else None
    return Send(rule_id=rule_id, evaluation_id=evaluation_id, episode_id=candidate.episode_id,
                user_id=candidate.user_id, dedupe_key=candidate.dedupe_key,
                email=candidate.account.get("email") if candidate.account else None,
                status=candidate.outcome, reason=candidate.reason, error=candidate.error,
                retryable=False if candidate.outcome == FAILED else None,
                value=candidate.value, created_at=now, claimed_by=scheduler_id, goal_due_at=goal_due)


# Stages 4 and 5: render and deliver


def _deliver_stage(services: Services, rule_id: int, spec: RuleSpec, template: TemplateSource | None,
                   claimed: list[Candidate], now: datetime, report: RuleReport) -> None:
    if not claimed:
        return
    batch_size = BATCH_SIZES.get(services.backend.name, DEFAULT_BATCH_SIZE)
    for batch in _chunks(claimed, batch_size):
        if services.should_stop():
            _release(services, claimed[claimed.index(batch[0]):], report)
            return
        emails, render_failures = _render_batch(services, spec, template, batch)
        _record_render_failures(services, render_failures, report)
        if not emails:
            continue
        _mark_in_flight(services, emails)
        attempt_started = time.monotonic()
        results = services.backend.deliver(emails)
        accepted = sum(r.accepted for r in results)
        log.log(logging.INFO if accepted == len(emails) else logging.WARNING,
                "batch delivered rule_id=%s backend=%s emails=%d accepted=%d failed=%d duration_ms=%.0f",
                rule_id, services.backend.name, len(emails), accepted, len(emails) - accepted,
                (time.monotonic() - attempt_started) * 1000)
        _record_results(services, emails, results, spec, now, report)


def _render_batch(services: Services, spec: RuleSpec, template: TemplateSource | None,
                  batch: list[Candidate]) -> tuple[list[OutgoingEmail], list[tuple[Candidate, str]]]:
    settings = services.settings
    emails, failures = [], []
    for candidate in batch:
        assert candidate.send_id is not None and candidate.account is not None
        if template is None:
            failures.append((candidate, f"Rule {spec.name!r} has no template: pick one in the rule builder"))
            continue
        unsubscribe = links.unsubscribe_url(settings.public_url, settings.secret_key, candidate.send_id)
        context = personalization_context(candidate.account, value=candidate.value, rule_name=spec.name)
        try:
            rendered = render_email(template, context, unsubscribe_url=unsubscribe,
                                    postal_address=settings.postal_address)
        except TemplateRenderError as exc:
            log.warning("render failed rule=%r send_id=%s user_id=%r error=%s", spec.name,
                        candidate.send_id, candidate.user_id, exc)
            failures.append((candidate, str(exc)))
            continue
        html = rendered.html
        if settings.tracking and services.backend.name != "sendgrid":
            html = links.apply_tracking(html, send_id=candidate.send_id, public_url=settings.public_url,
                                        secret_key=settings.secret_key)
        emails.append(OutgoingEmail(
            send_id=candidate.send_id, to_address=str(candidate.account["email"]).strip(),
            to_name=_display_name(candidate.account), subject=rendered.subject, html=html,
            text=rendered.text, unsubscribe_url=unsubscribe))
    return emails, failures


def _mark_in_flight(services: Services, emails: list[OutgoingEmail]) -> None:
    """Count the attempt before the provider is called.

    After a crash, a pending row with attempts = 0 was never handed to a provider
    and can be released; one with attempts > 0 may have gone out.
    """
    with services.sessions() as session, session.begin():
        session.execute(update(Send).where(Send.id.in_([e.send_id for e in emails]))
                        .values(attempts=Send.attempts + 1))


def _display_name(account: dict[str, Any]) -> str:
    parts = [str(account.get(k) or "").strip() for k in ("first_name", "last_name")]
    return " ".join(p for p in parts if p)


def _record_render_failures(services: Services, failures: list[tuple[Candidate, str]],
                            report: RuleReport) -> None:
    if not failures:
        return
    with services.sessions() as session, session.begin():
        for candidate, error in failures:
            session.execute(update(Send).where(Send.id == candidate.send_id)
                            .values(status=FAILED, error=error, retryable=False))
            report.failed += 1


def _record_results(services: Services, emails: list[OutgoingEmail], results: list[DeliveryResult],
                    spec: RuleSpec, now: datetime, report: RuleReport) -> None:
    by_id = {email.send_id: email for email in emails}
    seen = set()
    goal_due = now + timedelta(seconds=spec.goal_window_seconds)
    with services.sessions() as session, session.begin():
        for result in results:
            email = by_id.get(result.send_id)
            if email is None or result.send_id in seen:
                continue
            seen.add(result.send_id)
            values: dict[str, Any] = {"backend": services.backend.name, "subject": email.subject,
                                      "html": email.html, "text": email.text}
            if result.accepted:
                values.update(status=SENT, sent_at=now, provider_message_id=result.provider_message_id,
                              goal_due_at=goal_due)
                report.sent += 1
            else:
                values.update(status=FAILED, error=result.error, retryable=result.retryable)
                report.failed += 1
                log.error("delivery failed send_id=%s backend=%s retryable=%s error=%s", result.send_id,
                          services.backend.name, result.retryable, result.error)
            session.execute(update(Send).where(Send.id == result.send_id).values(**values))
        for send_id in set(by_id) - seen:
            # A backend must return one result per email; a missing one is recorded, not lost.
            session.execute(update(Send).where(Send.id == send_id).values(
                status=FAILED, retryable=False,
                error=f"The {services.backend.name} backend returned no result for this email"))
            report.failed += 1


def _release(services: Services, rest: list[Candidate], report: RuleReport) -> None:
    """Delete the claims of emails not attempted because the scheduler is stopping.

    No provider has seen them, so removing the rows is safe: the next evaluation
    triggers these users again instead of leaving them without an email.
    """
    with services.sessions() as session, session.begin():
        for candidate in rest:
            session.execute(delete(Send).where(Send.id == candidate.send_id, Send.status == PENDING))
    report.triggered -= len(rest)
    log.warning("scheduler stopping: released %d emails of rule_id=%s for the next evaluation",
                len(rest), report.rule_id)


# Dry run


def _plan_dry_run(services: Services, spec: RuleSpec, rule_id: int, template: TemplateSource | None,
                  candidates: list[Candidate], now: datetime, report: RuleReport) -> None:
    """Fill ``report.planned`` with who would get what, writing nothing."""
    with services.sessions() as session:
        open_episodes = {}
        if spec.send_policy == ONCE_PER_EPISODE:
            open_episodes = {e.user_id: e.id for e in session.scalars(
                select(Episode).where(Episode.rule_id == rule_id, Episode.ended_at.is_(None)))}
        prior = _prior_sends(session, rule_id, [c.user_id for c in candidates], open_episodes)
        triggered = []
        for candidate in candidates:
            episode_id = open_episodes.get(candidate.user_id, -1)
            decision = decide_send_policy(spec.send_policy, prior.get(candidate.user_id, PriorSends()), now=now,
                                          episode_id=episode_id, cooldown_seconds=spec.cooldown_seconds)
            if decision.trigger:
                triggered.append(candidate)
            else:
                report.skipped += 1
        _decide_outcomes(session, rule_id, spec, triggered)
    report.triggered = len(triggered)
    for candidate in triggered:
        subject = ""
        if candidate.outcome == PENDING and template is not None and candidate.account is not None:
            try:
                context = personalization_context(candidate.account, value=candidate.value,
                                                  rule_name=spec.name)
                subject = render_email(template, context, unsubscribe_url="", postal_address="").subject
            except TemplateRenderError as exc:
                candidate.outcome, candidate.error = FAILED, str(exc)
        _count(report, candidate.outcome, pending_counts_as=SENT)
        report.planned.append({"rule": spec.name, "user_id": candidate.user_id,
                               "email": (candidate.account or {}).get("email"), "subject": subject,
                               "outcome": "would send" if candidate.outcome == PENDING else candidate.outcome,
                               "reason": candidate.reason or candidate.error or ""})


# Bookkeeping


def _count(report: RuleReport, outcome: str, *, pending_counts_as: str | None) -> None:
    outcome = pending_counts_as if outcome == PENDING else outcome
    if outcome == SENT:
        report.sent += 1
    elif outcome == SUPPRESSED:
        report.suppressed += 1
    elif outcome == FAILED:
        report.failed += 1
    elif outcome == HELD_OUT:
        report.held_out += 1


def _finish_evaluation(services: Services, report: RuleReport, now: datetime) -> None:
    with services.sessions() as session, session.begin():
        session.execute(update(Evaluation).where(Evaluation.id == report.evaluation_id).values(
            finished_at=now + timedelta(milliseconds=report.duration_ms), matched=report.matched,
            triggered=report.triggered, sent=report.sent, suppressed=report.suppressed,
            failed=report.failed, held_out=report.held_out, skipped=report.skipped,
            duration_ms=report.duration_ms))


def _record_failed_evaluation(services: Services, report: RuleReport, now: datetime) -> None:
    with services.sessions() as session, session.begin():
        evaluation = Evaluation(rule_id=report.rule_id, evaluated_at=now, query=report.query,
                                error=report.error, duration_ms=report.duration_ms,
                                scheduler_id=services.scheduler_id)
        session.add(evaluation)
        session.flush()
        report.evaluation_id = evaluation.id


def _chunks(items: Sequence[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])
