"""Email rendering: Jinja2 templates in a sandbox, CSS inlining and a plain-text part.

Templates come from marketers and are untrusted code, so they run in Jinja2's
``SandboxedEnvironment``. The HTML part is autoescaped; the subject and the text
part are rendered without escaping because they are not HTML. Undefined variables
raise instead of rendering as empty text, so a template that names a column the
accounts query does not return fails loudly on the first account.

Every rendered email ends with a visible footer that contains the sender's postal
address and the unsubscribe link, unless the template already shows both.

CSS from <style> elements is inlined. Rules inside @media stay in a <style>
element, and they need ``!important`` to override the inlined styles.
"""

from __future__ import annotations

import functools
import re
import traceback
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping

import css_inline
from jinja2 import (
    StrictUndefined, Template, TemplateError, TemplateSyntaxError, Undefined, meta, nodes,
)
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment
from jinja2.utils import missing
from markupsafe import escape

from .errors import TemplateRenderError
from .html_to_text import html_to_text

# Variables every template may use besides the account's columns.
BUILTIN_VARIABLES = ("value", "rule_name", "unsubscribe_url", "postal_address")

# Filters and tests that make a missing variable safe to use.
_DEFAULT_FILTERS = frozenset({"default", "d"})
_DEFINED_TESTS = frozenset({"defined", "undefined"})


@dataclass(frozen=True)
class TemplateSource:
    """The source text of one email template.

    ``text`` is None (or blank) when the text part is generated from the HTML.
    """

    subject: str
    html: str
    text: str | None = None


@dataclass(frozen=True)
class RenderedEmail:
    """One template rendered for one account: final subject, HTML with inlined CSS, and text."""

    subject: str
    html: str
    text: str


@dataclass(frozen=True)
class TemplateProblem:
    """A problem found in a template before saving it.

    ``part`` is "subject", "html" or "text". ``line`` is 1-based, or None when the
    problem concerns the whole part.
    """

    part: str
    line: int | None
    message: str


class _MissingVariableError(UndefinedError):
    """An undefined variable or attribute used by a template, with its name for the message."""

    def __init__(self, message: str, *, name: str | None, is_top_level: bool) -> None:
        super().__init__(message)
        self.name = name
        self.is_top_level = is_top_level


class _StrictUndefined(StrictUndefined):
    """StrictUndefined that reports which name was missing.

    The sandbox also returns undefined objects for unsafe attributes, with
    SecurityError as their exception, and those keep raising SecurityError.
    """

    __slots__ = ()

    def _fail_with_undefined_error(self, *args: Any, **kwargs: Any) -> Any:
        if self._undefined_exception is not UndefinedError:
            return super()._fail_with_undefined_error(*args, **kwargs)
        raise _MissingVariableError(
            self._undefined_message,
            name=None if self._undefined_name is None else str(self._undefined_name),
            is_top_level=self._undefined_obj is missing,
        )


# Jinja binds the operator methods (__str__, __iter__, __add__ ...) to the base
# class's _fail_with_undefined_error when the class is defined, so overriding the
# method alone changes nothing: point every such alias at the override.
for _attribute in dir(StrictUndefined):
    if getattr(StrictUndefined, _attribute) is Undefined._fail_with_undefined_error:
        setattr(_StrictUndefined, _attribute, _StrictUndefined._fail_with_undefined_error)


def _finalize(value: Any) -> Any:
    # NULL columns from the accounts database print as nothing, not as "None".
    return "" if value is None else value


_HTML_ENVIRONMENT = SandboxedEnvironment(
    autoescape=True, undefined=_StrictUndefined, finalize=_finalize,
)
_TEXT_ENVIRONMENT = SandboxedEnvironment(
    autoescape=False, undefined=_StrictUndefined, finalize=_finalize,
)

# keep_at_rules moves @media and other at-rules into a <style> element, because
# they cannot be inlined. Remote stylesheets are not fetched while sending: a
# <link> element stays as it is.
_CSS_INLINER = css_inline.CSSInliner(
    keep_at_rules=True, keep_link_tags=True, load_remote_stylesheets=False,
)


def available_variables(account_columns: Iterable[str]) -> list[str]:
    """List the variables a template may use: the account's columns, then the built-ins."""
    names = dict.fromkeys(str(column) for column in account_columns)
    names.update(dict.fromkeys(BUILTIN_VARIABLES))
    return list(names)


def render_email(template: TemplateSource, context: Mapping[str, Any], *,
                 unsubscribe_url: str, postal_address: str) -> RenderedEmail:
    """Render ``template`` for one account and add the footer, inlined CSS and text part.

    ``context`` contains the account's columns, ``value`` and ``rule_name``, and
    ``unsubscribe_url`` and ``postal_address`` are added to it. Compiled templates
    are cached by source text, so rendering a batch compiles each template once.
    Raises TemplateRenderError naming the part, the line and, for an undefined
    variable, its name.
    """
    variables = {**context, "unsubscribe_url": unsubscribe_url, "postal_address": postal_address}

    subject = _render_part("subject", template.subject, variables)
    subject = collapse_whitespace(subject)

    body = _render_part("html", template.html, variables)
    body = add_html_footer(body, unsubscribe_url=unsubscribe_url, postal_address=postal_address)
    html = _inline_css(body)

    if template.text is not None and template.text.strip():
        text = _render_part("text", template.text, variables)
    else:
        text = html_to_text(html)
    text = add_text_footer(text, unsubscribe_url=unsubscribe_url, postal_address=postal_address)
    return RenderedEmail(subject=subject, html=html, text=text)


def collapse_whitespace(value: str) -> str:
    """Replace every run of whitespace, CR and LF included, by one space and strip the ends."""
    return re.sub(r"\s+", " ", value).strip()


def add_html_footer(html: str, *, unsubscribe_url: str, postal_address: str) -> str:
    """Add the postal address and the unsubscribe link where the HTML does not show them yet.

    The footer goes before ``</body>`` when there is one, else at the end.
    """
    lines = []
    if postal_address and not _contains_html(html, postal_address):
        lines.append(f'<p style="margin:0">{escape(postal_address)}</p>')
    if not _contains_html(html, unsubscribe_url):
        lines.append(
            f'<p style="margin:0"><a href="{escape(unsubscribe_url)}" '
            'style="color:#6b7280">Unsubscribe from these emails</a></p>'
        )
    if not lines:
        return html
    footer = (
        '<div class="behavemail-footer" '
        'style="margin-top:24px;font-size:12px;line-height:1.5;color:#6b7280">'
        + "".join(lines) + "</div>"
    )
    body_end = html.lower().rfind("</body>")
    if body_end == -1:
        return html + footer
    return html[:body_end] + footer + html[body_end:]


def add_text_footer(text: str, *, unsubscribe_url: str, postal_address: str) -> str:
    """Add the postal address and the unsubscribe URL where the text does not show them yet."""
    lines = []
    if postal_address and postal_address not in text:
        lines.append(postal_address)
    if unsubscribe_url not in text:
        lines.append(f"Unsubscribe: {unsubscribe_url}")
    if not lines:
        return text
    return text.rstrip("\n") + "\n\n--\n" + "\n".join(lines) + "\n"


def _contains_html(html: str, value: str) -> bool:
    return value in html or str(escape(value)) in html


def _inline_css(html: str) -> str:
    try:
        return _CSS_INLINER.inline(html)
    except css_inline.InlineError as exc:
        raise TemplateRenderError(
            f"Template 'html' has CSS that could not be inlined: {exc}: fix the <style> element"
        ) from exc


def _render_part(part: str, source: str, variables: Mapping[str, Any]) -> str:
    compiled = _compile(part, source)
    try:
        return compiled.render(variables)
    except _MissingVariableError as exc:
        raise _missing_variable_error(part, exc) from exc
    except SecurityError as exc:
        line = _template_line(exc)
        raise TemplateRenderError(
            f"{_where(part, line)} is not allowed: {exc} Templates may use account fields, "
            "filters and tests, but no attributes that start with an underscore.",
            line=line,
        ) from exc
    # The errors a template expression can raise while rendering: Jinja's own,
    # and Python's from filters and operators (a division by zero, int('abc')).
    except (TemplateError, TypeError, ValueError, ArithmeticError, LookupError,
            AttributeError) as exc:
        line = _template_line(exc)
        raise TemplateRenderError(
            f"{_where(part, line)} failed to render: {exc}", line=line,
        ) from exc


@functools.lru_cache(maxsize=256)
def _compile(part: str, source: str) -> Template:
    # lru_cache keeps only successful results, so a template with a syntax error
    # is parsed again on every call.
    environment = _HTML_ENVIRONMENT if part == "html" else _TEXT_ENVIRONMENT
    try:
        return environment.from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateRenderError(
            f"{_where(part, exc.lineno)} has a syntax error: {exc.message}", line=exc.lineno,
        ) from exc


def _missing_variable_error(part: str, exc: _MissingVariableError) -> TemplateRenderError:
    line = _template_line(exc)
    where = _where(part, line)
    if exc.name and exc.name.startswith("_"):
        message = (
            f"{where} is not allowed: it uses {exc.name!r}, and templates may not use "
            "attributes that start with an underscore."
        )
    elif exc.is_top_level and exc.name:
        message = (
            f"{where} uses {exc.name!r}, which this account does not have: add it to the "
            f"accounts query or give it a default with {{{{ {exc.name} | default('') }}}}"
        )
    else:
        message = (
            f"{where} uses a missing attribute: {exc.message}. Check the name, or give it "
            "a default with | default('')"
        )
    return TemplateRenderError(message, line=line, variable=exc.name)


def _where(part: str, line: int | None) -> str:
    return f"Template {part!r} line {line}" if line else f"Template {part!r}"


def _template_line(exc: BaseException) -> int | None:
    """Find the template line an exception was raised on.

    Jinja rewrites tracebacks so that frames of template code carry the template's
    filename and line numbers. Templates compiled from a string have the filename
    "<template>", and the innermost such frame is the line that failed.
    """
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == "<template>":
            line = frame.lineno
    return line


def check_template(template: TemplateSource,
                   available_variables: Iterable[str]) -> list[TemplateProblem]:
    """List syntax errors, unknown variables and unsafe attributes in every part.

    A variable counts as known when it is in ``available_variables``, is a Jinja
    global (``range``, ``namespace`` ...), or is only used with ``| default(...)``
    or in an ``is defined`` test. The template editor shows these before saving.
    """
    known = set(available_variables)
    problems: list[TemplateProblem] = []
    if not template.subject.strip():
        problems.append(TemplateProblem("subject", None, "The subject is empty: write a subject line."))
    if not template.html.strip():
        problems.append(TemplateProblem("html", None, "The HTML part is empty: write the email body."))
    parts = [("subject", template.subject), ("html", template.html)]
    if template.text is not None and template.text.strip():
        parts.append(("text", template.text))
    for part, source in parts:
        problems.extend(_check_part(part, source, known))
    return problems


def _check_part(part: str, source: str, known: set[str]) -> list[TemplateProblem]:
    environment = _HTML_ENVIRONMENT if part == "html" else _TEXT_ENVIRONMENT
    try:
        tree = environment.parse(source)
    except TemplateSyntaxError as exc:
        return [TemplateProblem(part, exc.lineno, f"Syntax error: {exc.message}")]

    problems = []
    undeclared = meta.find_undeclared_variables(tree) - known - set(environment.globals)
    guarded = _guarded_names(tree)
    for name in sorted(undeclared):
        lines = _unguarded_lines(tree, name, guarded)
        if not lines:
            continue
        problems.append(TemplateProblem(
            part, lines[0],
            f"{name!r} is not a column of the accounts query: add it to the query, or give "
            f"it a default with {{{{ {name} | default('') }}}}",
        ))
    for attribute, line in _underscore_attributes(tree):
        problems.append(TemplateProblem(
            part, line,
            f"{attribute!r} is not allowed: templates may not use attributes that start "
            "with an underscore.",
        ))
    return sorted(problems, key=lambda problem: problem.line or 0)


def _walk(node: nodes.Node, parent: nodes.Node | None = None
          ) -> Iterator[tuple[nodes.Node, nodes.Node | None]]:
    yield node, parent
    for child in node.iter_child_nodes():
        yield from _walk(child, node)


def _guarded_names(tree: nodes.Template) -> set[str]:
    """Names that the template tests with ``is defined`` or ``is undefined`` anywhere."""
    return {
        node.node.name
        for node, _ in _walk(tree)
        if isinstance(node, nodes.Test) and node.name in _DEFINED_TESTS
        and isinstance(node.node, nodes.Name)
    }


def _unguarded_lines(tree: nodes.Template, name: str, guarded: set[str]) -> list[int]:
    """Lines that load ``name`` outside a ``default`` filter, or [] when a test guards it."""
    if name in guarded:
        return []
    lines = []
    for node, parent in _walk(tree):
        if not (isinstance(node, nodes.Name) and node.name == name and node.ctx == "load"):
            continue
        if (isinstance(parent, nodes.Filter) and parent.name in _DEFAULT_FILTERS
                and parent.node is node):
            continue
        lines.append(node.lineno)
    return sorted(lines)


def _underscore_attributes(tree: nodes.Template) -> list[tuple[str, int]]:
    found = []
    for node, _ in _walk(tree):
        if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
            found.append((node.attr, node.lineno))
        elif (isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const)
              and isinstance(node.arg.value, str) and node.arg.value.startswith("_")):
            found.append((node.arg.value, node.lineno))
    return found
