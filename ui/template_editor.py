"""The template editor's parts: picker, starter templates, editors, problems, preview, actions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import streamlit as st

from behavemail_core.errors import BehavemailError
from behavemail_core.preview import compile_rule
from behavemail_core.rendering import (RenderedEmail, TemplateProblem, TemplateSource, available_variables,
                                       check_template)
from behavemail_core.rule_overview import RuleSummary
from behavemail_core.settings import Settings
from behavemail_core.template_preview import get_template, render_preview, send_test_email, starter_templates
from behavemail_core.template_store import TemplateSpec, list_templates, save_template, template_spec_from_dict

from . import auth, queries, services
from .editors import code_editor, preview_frame, wait_for_editor_updates
from .errors import error_box, show_error
from .state import Flash, TemplatesState, widget_key

NEW_TEMPLATE = 0
DESKTOP_WIDTH = 640
MOBILE_WIDTH = 375
DEFAULT_PREVIEW_VALUE = 42.0
MAX_CUSTOMER_CHOICES = 200


def _key(*parts: object) -> str:
    return widget_key(TemplatesState.PREFIX, *parts)


def template_names(settings: Settings) -> dict[int, str]:
    """Map the id of every saved template to its name."""
    with services.sessions(settings)() as session:
        return {template.id: template.name for template in list_templates(session)}


def template_picker(settings: Settings, state: TemplatesState, names: dict[int, str]) -> None:
    """Pick the template to open; opening one loads it into the editors."""
    if not state.opened:
        open_template(settings, state, None)
    options = [NEW_TEMPLATE, *names]
    current = state.template_id if state.template_id in names else NEW_TEMPLATE
    picked = st.selectbox("Open a template", options, index=options.index(current),
                          key=_key("picker", state.picker_generation),
                          format_func=lambda template_id: names.get(template_id, "New template"))
    if picked != current:
        open_template(settings, state, picked or None)


def open_template(settings: Settings, state: TemplatesState, template_id: int | None) -> None:
    """Load a saved template (or an empty one when ``template_id`` is None) into the editors."""
    if template_id is None:
        state.template_id, state.loaded_version, state.baseline = None, None, None
        state.name, state.subject, state.html, state.text = "", "", "", ""
    else:
        with services.sessions(settings)() as session:
            template = get_template(session, template_id)
            if template is None:
                raise BehavemailError(f"Template {template_id} does not exist any more: pick another one")
            state.template_id, state.loaded_version = template.id, template.version
            state.name, state.subject = template.name, template.subject
            state.html, state.text = template.html, template.text or ""
        state.baseline = state.contents()
    state.opened = True
    state.generation += 1


def starter_copier(state: TemplatesState, taken_names: set[str], disabled: bool) -> None:
    """Offer the starter templates to copy into the editors (as a copy when the name is taken)."""
    starters = {spec.name: spec for spec in starter_templates()}
    name_column, button_column = st.columns([3, 1], vertical_alignment="bottom")
    with name_column:
        chosen = st.selectbox("Start from a starter template", list(starters), key=_key("starter"),
                              disabled=disabled)
    with button_column:
        if st.button("Copy into the editor", key=_key("copy_starter"), disabled=disabled or chosen is None,
                     icon=":material/content_copy:"):
            starter = starters[chosen]
            if not state.name:
                state.name = starter.name if starter.name not in taken_names else f"{starter.name} (copy)"
            state.subject, state.html, state.text = starter.subject, starter.html, starter.text or ""
            state.generation += 1
            st.rerun()


def template_fields(state: TemplatesState, disabled: bool) -> None:
    """Show name, subject, HTML and text editors and write their contents into ``state``."""
    generation = state.generation
    state.name = st.text_input("Template name", value=state.name, key=_key(generation, "name"),
                               disabled=disabled)
    state.subject = st.text_input("Subject", value=state.subject, key=_key(generation, "subject"),
                                  disabled=disabled, placeholder="e.g. {{ first_name }}, your requests are failing")
    st.markdown("**HTML body** (Jinja2: `{{ first_name }}`, `{% if plan == 'free' %}…{% endif %}`)")
    state.html = code_editor(state.html, key=_key(generation, "html"), language="django", readonly=disabled,
                             min_lines=14)
    state.text = st.text_area("Plain-text part (optional: generated from the HTML when empty)",
                              value=state.text, key=_key(generation, "text"), disabled=disabled, height=140)


def variables_help(columns: list[str]) -> None:
    """List the variables a template may use."""
    names = available_variables(columns)
    st.markdown("**Variables:** " + ", ".join(f"`{{{{ {name} }}}}`" for name in names))
    st.caption("Account columns come from the accounts query; `value` is the rule's value for the "
               "customer (the count, the percentage or the gauge value).")


def source_of(state: TemplatesState) -> TemplateSource:
    return TemplateSource(subject=state.subject, html=state.html, text=state.text or None)


def template_problems(state: TemplatesState, columns: list[str]) -> list[TemplateProblem]:
    """Check the template and show every syntax error or unknown variable with its line."""
    problems = check_template(source_of(state), available_variables(columns))
    for problem in problems:
        where = f"{problem.part}, line {problem.line}" if problem.line else problem.part
        st.error(f"**{where}:** {problem.message}")
    return problems


@dataclass(frozen=True)
class PreviewCustomer:
    """The account a preview renders for, the rule's value and the rule's name."""

    account: dict[str, Any]
    value: float
    rule_name: str


def preview_customer(settings: Settings, state: TemplatesState, rules: list[RuleSummary]) -> PreviewCustomer | None:
    """Choose a real account: one of a rule's current matches, or any user id typed in."""
    usable = [summary for summary in rules if summary.spec is not None]
    rule_column, customer_column, id_column = st.columns(3)
    with rule_column:
        rule = _rule_picker(usable, state)
    matches = _matches_of(settings, rule)
    with customer_column:
        labels = {match.user_id: f"{match.user_id} · {match.email}" for match in matches}
        chosen = st.selectbox("Customer", list(labels), index=0 if labels else None, key=_key("preview", "user"),
                              format_func=labels.get, placeholder="Nobody matches this rule now")
    with id_column:
        typed = st.text_input("Or type a user id", key=_key("preview", "typed_user")).strip()

    user_id = typed or chosen
    if not user_id:
        st.info("Pick a customer who matches a rule, or type a user id, to preview the email.")
        return None
    default_value = next((match.value for match in matches if match.user_id == user_id), DEFAULT_PREVIEW_VALUE)
    value = st.number_input("Value for {{ value }}", value=float(default_value), key=_key("preview", "value", user_id))

    account = _account(settings, user_id)
    if account is None:
        return None
    return PreviewCustomer(account=account, value=value, rule_name=rule.name if rule else "Preview")


def _rule_picker(rules: list[RuleSummary], state: TemplatesState) -> RuleSummary | None:
    # The first rule that sends this template is the likeliest source of customers.
    default = next((i for i, summary in enumerate(rules) if summary.template == state.name), 0)
    names = [summary.name for summary in rules]
    name = st.selectbox("Customers matching rule", names, index=default if names else None,
                        key=_key("preview", "rule"), placeholder="No rules yet")
    return next((summary for summary in rules if summary.name == name), None)


def _account(settings: Settings, user_id: str) -> dict[str, Any] | None:
    try:
        account = services.accounts(settings).lookup([user_id]).get(user_id)
    except BehavemailError as exc:
        show_error(exc)
        return None
    if account is None:
        st.warning(f"No account with user id {user_id!r} in the accounts database: check the id.")
    return account


def _matches_of(settings: Settings, summary: RuleSummary | None) -> list:
    if summary is None or summary.spec is None:
        return []
    try:
        promql = compile_rule(summary.spec, user_label=settings.user_label,
                              scrape_interval_seconds=settings.scrape_interval).promql
        with st.spinner(f"Finding customers who match {summary.name!r}…"):
            return list(queries.current_matches(settings, summary.spec, promql).in_audience)[:MAX_CUSTOMER_CHOICES]
    except BehavemailError as exc:
        st.caption(f"The rule's current matches are not available: {exc}")
        return []


def rendered_preview(settings: Settings, state: TemplatesState, customer: PreviewCustomer) -> RenderedEmail | None:
    """Render the template for the chosen customer and show subject, HTML at two widths, and text."""
    try:
        rendered = render_preview(source_of(state), customer.account, value=customer.value,
                                  rule_name=customer.rule_name, settings=settings)
    except BehavemailError as exc:
        show_error(exc)
        return None
    st.markdown(f"**Subject:** {rendered.subject}")
    desktop, mobile, text = st.tabs(["Desktop", "Mobile", "Plain text"])
    with desktop:
        preview_frame(rendered.html, width=DESKTOP_WIDTH)
    with mobile:
        preview_frame(rendered.html, width=MOBILE_WIDTH)
    with text:
        st.code(rendered.text, language=None, wrap_lines=True)
    return rendered


def is_dirty(state: TemplatesState) -> bool:
    return state.baseline != state.contents()


def save_area(settings: Settings, state: TemplatesState, problems: list[TemplateProblem]) -> None:
    """Show the unsaved-changes notice and Save, which stays off while the template has problems."""
    if state.baseline is None:
        st.caption("This template is not saved yet.")
    elif is_dirty(state):
        st.warning("Unsaved changes: the editors differ from the saved template. Save to keep them.")
    if problems:
        st.caption("Fix the problems above to save this template.")
    if st.button("Save template", type="primary", key=_key("save"), disabled=bool(problems),
                 icon=":material/save:"):
        state.save_requested = True
    if not state.save_requested:
        return
    wait_for_editor_updates()
    state.save_requested = False
    if not problems:
        with error_box():
            _save(settings, state)


def _save(settings: Settings, state: TemplatesState) -> None:
    spec = template_spec_from_dict(TemplateSpec(name=state.name.strip(), subject=state.subject, html=state.html,
                                                text=state.text or None).to_dict())
    with services.sessions(settings)() as session:
        template = save_template(session, spec, actor=auth.current_actor(), template_id=state.template_id,
                                 expected_version=state.loaded_version)
        template_id, version = template.id, template.version
    if state.template_id != template_id:
        state.picker_generation += 1
    state.template_id, state.loaded_version = template_id, version
    state.name = spec.name
    state.baseline = state.contents()
    state.flash = Flash("success", f"Saved the template {spec.name!r} (version {version}).")
    st.rerun()


def test_send_area(settings: Settings, rendered: RenderedEmail) -> None:
    """Send the previewed email to an address the operator types, through the configured backend."""
    address_column, button_column = st.columns([3, 2], vertical_alignment="bottom")
    with address_column:
        address = st.text_input("Send a test email to", key=_key("test_address"), placeholder="you@example.com")
    with button_column:
        clicked = st.button("Send test email", key=_key("send_test"), icon=":material/send:")
    if not clicked:
        return
    with error_box(), st.spinner(f"Sending through the {settings.email_backend} backend…"):
        backend = services.delivery_backend(settings)
        try:
            send_test_email(backend, rendered, to_address=address, settings=settings)
        finally:
            backend.close()
        st.success(f"Sent a test email to {address.strip()} through the {settings.email_backend} backend.")
