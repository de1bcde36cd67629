"""Tracking endpoints: the open pixel, the click redirect and unsubscribe.

When recording an open or a click fails, the error is logged and the GIF or the
redirect is still served, so the recipient sees no difference. Unsubscribing
differs: the page must not confirm an unsubscribe that was not stored, so a
database error there returns 503.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from html import escape

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from ..errors import TokenError
from ..links import iri_to_uri, token_hint, verify_click_token, verify_open_token, verify_unsubscribe_token
from ..models import Send, Suppression
from .context import EventContext
from .recording import UNSUBSCRIBED, IncomingEvent, make_dedupe_key, record_events, run_in_transaction
from .responses import Response, html_page, not_found_page, pixel_response, redirect_response

log = logging.getLogger(__name__)

SOURCE = "tracking"
ONE_CLICK_BODY = "List-Unsubscribe=One-Click"

# NOTE: a heuristic. Apple's Mail Privacy Protection proxy is widely reported to
# fetch images with the bare user agent "Mozilla/5.0"; security scanners and
# crawlers name themselves. Opens from these go to machine_opened_at.
MACHINE_USER_AGENTS = ("mozilla/5.0",)
MACHINE_USER_AGENT_WORDS = ("barracuda", "mimecast", "proofpoint", "crawler", "spider", "bot/")
# Browsers mark speculative loads with one of these headers (Chromium: Sec-Purpose
# and Purpose, Firefox: X-Moz); no person has looked at the email yet.
PREFETCH_HEADERS = ("Sec-Purpose", "Purpose", "X-Purpose", "X-Moz")
_MAX_USER_AGENT = 300


def is_machine_open(headers: Mapping[str, str]) -> bool:
    """Tell whether a pixel request comes from a proxy, scanner or prefetcher rather than a person."""
    user_agent = (headers.get("User-Agent") or "").strip().lower()
    if not user_agent or user_agent in MACHINE_USER_AGENTS:
        return True
    if any(word in user_agent for word in MACHINE_USER_AGENT_WORDS):
        return True
    for name in PREFETCH_HEADERS:
        purpose = (headers.get(name) or "").lower()
        if "prefetch" in purpose or "preview" in purpose:
            return True
    return False


def _tracking_event(event_type: str, send_id: int, occurred_at: datetime, *, url: str | None = None,
                    machine_open: bool = False, payload: dict | None = None,
                    detail: str | None = None) -> IncomingEvent:
    # Opens and clicks are keyed on their time to the microsecond, so each request
    # is an event of its own. An unsubscribe is keyed without a time: once per send.
    when = "" if event_type == "unsubscribe" else occurred_at.isoformat()
    return IncomingEvent(
        source=SOURCE,
        event_type=event_type,
        occurred_at=occurred_at,
        dedupe_key=make_dedupe_key(SOURCE, f"send:{send_id}", event_type, when, detail or url or ""),
        send_id=send_id,
        url=url,
        machine_open=machine_open,
        suppression_reason=UNSUBSCRIBED if event_type == "unsubscribe" else None,
        payload=payload,
    )


def _record_quietly(context: EventContext, event: IncomingEvent) -> None:
    """Record one event; log a database error instead of raising it."""
    try:
        result = run_in_transaction(
            context.sessions,
            lambda session: record_events(session, [event], received_at=context.clock(), keep_unmatched=False))
    except SQLAlchemyError as exc:
        log.error("failed to record %s of send %s: %s", event.event_type, event.send_id, exc)
        return
    if result.unmatched:
        log.warning("%s of send %s not recorded: no such send in the app database",
                    event.event_type, event.send_id)
        return
    log.info("recorded %s of send %s (machine_open=%s)", event.event_type, event.send_id,
             event.machine_open)


def handle_open(context: EventContext, token: str, headers: Mapping[str, str]) -> Response:
    """Record an open for a valid pixel token; return the transparent GIF in every case."""
    try:
        send_id = verify_open_token(context.secret_key, token)
    except TokenError as exc:
        log.info("open pixel with an invalid token: %s", exc)
        return pixel_response()
    user_agent = (headers.get("User-Agent") or "")[:_MAX_USER_AGENT]
    event = _tracking_event("open", send_id, context.clock(), machine_open=is_machine_open(headers),
                            payload={"user_agent": user_agent})
    _record_quietly(context, event)
    return pixel_response()


def handle_click(context: EventContext, token: str) -> Response:
    """Record a click and redirect to the URL inside the token; 404 for an invalid token."""
    try:
        send_id, target_url = verify_click_token(context.secret_key, token)
    except TokenError as exc:
        log.warning("click with an invalid token: %s", exc)
        return not_found_page()
    _record_quietly(context, _tracking_event("click", send_id, context.clock(), url=target_url))
    return redirect_response(iri_to_uri(target_url))


def _load_send(session: Session, send_id: int) -> Send | None:
    return session.get(Send, send_id)


def _mask_email(address: str) -> str:
    """Hide most of the local part, so a forwarded link does not show the full address."""
    local, at, domain = address.partition("@")
    if not at:
        return "your address"
    return f"{local[:1]}{'*' * max(len(local) - 1, 2)}@{domain}"


def show_unsubscribe_page(context: EventContext, token: str) -> Response:
    """Show the confirmation page; GET never unsubscribes, because link scanners follow links."""
    try:
        send_id = verify_unsubscribe_token(context.secret_key, token)
    except TokenError as exc:
        log.warning("unsubscribe page with an invalid token: %s", exc)
        return not_found_page()
    try:
        with context.sessions() as session:
            send = _load_send(session, send_id)
            already = send is not None and send.email is not None and session.scalar(
                select(Suppression.id).where(Suppression.email == send.email.strip().lower())) is not None
    except SQLAlchemyError as exc:
        log.error("failed to load send %s for its unsubscribe page: %s", send_id, exc)
        return _unavailable_page()
    if send is None or not send.email:
        log.warning("unsubscribe page for send %s, which has no stored address", send_id)
        return not_found_page("This unsubscribe link is no longer valid. Reply to the email to unsubscribe.")

    address = escape(_mask_email(send.email))
    if already:
        return html_page(200, "You are unsubscribed", f"<p>{address} no longer receives these emails.</p>")
    # The form has no action attribute, so it posts back to this page's own URL.
    form = (f"<p>Stop sending these emails to {address}?</p>\n"
            '<form method="post">\n'
            '<button type="submit" name="confirm" value="unsubscribe">Unsubscribe</button>\n'
            "</form>")
    return html_page(200, "Unsubscribe", form)


def handle_unsubscribe(context: EventContext, token: str, body: bytes) -> Response:
    """Suppress the send's address and record the unsubscribe (RFC 8058 one-click or the page's button).

    Repeating it changes nothing: the suppression and the event are stored once.
    """
    try:
        send_id = verify_unsubscribe_token(context.secret_key, token)
    except TokenError as exc:
        log.warning("unsubscribe with an invalid token: %s", exc)
        return not_found_page()
    method = "one_click" if ONE_CLICK_BODY.lower() in body.decode("latin-1").lower() else "form"

    def unsubscribe(session: Session) -> str | None:
        send = _load_send(session, send_id)
        if send is None or not send.email:
            return None
        now = context.clock()
        event = _tracking_event("unsubscribe", send_id, now, payload={"method": method})
        record_events(session, [event], received_at=now)
        return send.email

    try:
        email = run_in_transaction(context.sessions, unsubscribe)
    except SQLAlchemyError as exc:
        log.error("failed to unsubscribe send %s: %s", send_id, exc)
        return _unavailable_page()
    if email is None:
        log.warning("unsubscribe for send %s, which has no stored address", send_id)
        return not_found_page("This unsubscribe link is no longer valid. Reply to the email to unsubscribe.")

    log.info("unsubscribed the address of send %s (method=%s, token %s)", send_id, method, token_hint(token))
    return html_page(200, "You are unsubscribed",
                     f"<p>{escape(_mask_email(email))} no longer receives these emails.</p>")


def _unavailable_page() -> Response:
    return html_page(503, "Try again shortly",
                     "<p>Your request could not be saved just now. Please try again in a few minutes.</p>")
