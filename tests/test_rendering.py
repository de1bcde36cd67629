"""Rendering of templates: sandbox, escaping, errors, CSS inlining, text part, footer."""

from __future__ import annotations

import pytest

from behavemail_core.errors import TemplateRenderError
from behavemail_core.html_to_text import html_to_text
from behavemail_core.rendering import (
    BUILTIN_VARIABLES,
    TemplateSource,
    available_variables,
    check_template,
    render_email,
)

UNSUBSCRIBE_URL = "https://mail.example.com/u/tok3n"
POSTAL_ADDRESS = "Example API Inc., 1 Demo Street, Springfield"

RESPONSIVE_HTML = """<html>
<head>
<style>
p { color: #111111; }
@media (max-width: 600px) { p { font-size: 18px !important; } }
</style>
</head>
<body>
<p>Hello {{ first_name }},</p>
<p>You made {{ value }} failing requests. <a href="https://docs.example.com/errors">Read the guide</a>.</p>
<ul><li>Check your key</li><li>Retry with backoff</li></ul>
</body>
</html>"""


def render(html: str, context: dict | None = None, *, subject: str = "Hello",
           text: str | None = None):
    return render_email(
        TemplateSource(subject=subject, html=html, text=text),
        {"first_name": "Ada", "value": 12, "rule_name": "Failing requests", **(context or {})},
        unsubscribe_url=UNSUBSCRIBE_URL,
        postal_address=POSTAL_ADDRESS,
    )


def render_error(html: str, context: dict | None = None, *, subject: str = "Hello",
                 text: str | None = None) -> TemplateRenderError:
    with pytest.raises(TemplateRenderError) as caught:
        render(html, context, subject=subject, text=text)
    return caught.value


def test_html_part_escapes_script_in_first_name():
    email = render("<p>Hi {{ first_name }}</p>", {"first_name": "<script>alert(1)</script>"})

    assert "<script>" not in email.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in email.html


def test_subject_is_not_html_escaped():
    email = render("<p>x</p>", {"first_name": "Tom & <Jerry>"}, subject="Hi {{ first_name }}")

    assert email.subject == "Hi Tom & <Jerry>"


def test_text_part_is_not_html_escaped():
    email = render("<p>x</p>", {"first_name": "Tom & Jerry"}, text="Hi {{ first_name }}")

    assert email.text.startswith("Hi Tom & Jerry")


@pytest.mark.parametrize("subject_template, context, expected", [
    # CR and LF in an account value cannot start a second header line.
    ("Hi {{ first_name }}", {"first_name": "Ada\r\nBcc: x@example.com"}, "Hi Ada Bcc: x@example.com"),
    # Line breaks written in the template itself are collapsed too.
    ("Your usage\n   report", {}, "Your usage report"),
    # Tabs and leading or trailing whitespace go.
    ("\t {{ value }} errors \n", {}, "12 errors"),
])
def test_subject_collapses_whitespace(subject_template, context, expected):
    email = render("<p>x</p>", context, subject=subject_template)

    assert email.subject == expected


def test_unknown_field_error_names_variable_and_line():
    error = render_error("<p>Hi {{ first_name }}</p>\n\n\n<p>{{ company_size }}</p>")

    assert str(error) == (
        "Template 'html' line 4 uses 'company_size', which this account does not have: "
        "add it to the accounts query or give it a default with {{ company_size | default('') }}"
    )
    assert error.variable == "company_size"
    assert error.line == 4


def test_unknown_field_in_subject_names_part():
    error = render_error("<p>x</p>", subject="Hi {{ nickname }}")

    assert str(error).startswith("Template 'subject' line 1 uses 'nickname'")


def test_default_filter_covers_missing_field():
    email = render("<p>Size: {{ company_size | default('unknown') }}</p>")

    assert "Size: unknown" in email.html


def test_null_column_renders_empty():
    email = render("<p>Plan:{{ plan }}.</p>", {"plan": None})

    assert "Plan:." in email.html


@pytest.mark.parametrize("expression", [
    # The classic escape to arbitrary classes through a string's type.
    "{{ ''.__class__.__mro__ }}",
    # The same through an account value.
    "{{ first_name.__class__ }}",
    # Function globals through a method of a Jinja global.
    "{{ cycler.__init__.__globals__ }}",
])
def test_sandbox_blocks_private_attributes(expression):
    error = render_error(f"<p>ok</p>\n{expression}")

    assert "line 2 is not allowed" in str(error)
    assert "unsafe" in str(error)


def test_syntax_error_names_line():
    error = render_error("<p>ok</p>\n\n<p>{{ first_name }</p>")

    assert str(error).startswith("Template 'html' line 3 has a syntax error")


def test_runtime_error_names_line():
    error = render_error("<p>ok</p>\n<p>{{ value / 0 }}</p>")

    assert str(error) == "Template 'html' line 2 failed to render: division by zero"


def test_media_query_survives_inlining():
    email = render(RESPONSIVE_HTML)

    assert "@media (max-width: 600px)" in email.html.replace(":600px", ": 600px")
    assert "font-size: 18px !important" in email.html.replace("font-size:18px", "font-size: 18px")


def test_style_rules_are_inlined():
    email = render(RESPONSIVE_HTML)

    assert '<p style="color: #111111;">Hello Ada,</p>' in email.html


def test_text_part_generated_from_html():
    email = render(RESPONSIVE_HTML)

    assert email.text.startswith("Hello Ada,\n\nYou made 12 failing requests.")
    assert "Read the guide (https://docs.example.com/errors)." in email.text
    assert "- Check your key\n- Retry with backoff" in email.text
    assert "color" not in email.text


def test_written_text_part_is_used():
    email = render(RESPONSIVE_HTML, text="Hi {{ first_name }}, see the docs.")

    assert email.text.startswith("Hi Ada, see the docs.\n")


def test_footer_added_to_html():
    email = render("<html><body><p>Hi</p></body></html>")

    footer_start = email.html.index("behavemail-footer")
    assert POSTAL_ADDRESS in email.html[footer_start:]
    assert f'href="{UNSUBSCRIBE_URL}"' in email.html[footer_start:]
    assert email.html.index("</body>") > footer_start


def test_footer_added_to_written_text():
    email = render("<p>Hi</p>", text="Hi {{ first_name }}")

    assert email.text.endswith(f"\n--\n{POSTAL_ADDRESS}\nUnsubscribe: {UNSUBSCRIBE_URL}\n")


def test_footer_added_to_generated_text():
    email = render("<p>Hi</p>")

    assert POSTAL_ADDRESS in email.text
    assert UNSUBSCRIBE_URL in email.text


def test_footer_skipped_when_template_shows_both():
    html = ('<p>Hi</p><p>{{ postal_address }} '
            '<a href="{{ unsubscribe_url }}">Stop these emails</a></p>')

    email = render(html)

    assert "behavemail-footer" not in email.html
    assert email.html.count(UNSUBSCRIBE_URL) == 1


def test_footer_adds_only_missing_postal_address():
    email = render('<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>')

    assert POSTAL_ADDRESS in email.html
    assert email.html.count(UNSUBSCRIBE_URL) == 1


def test_unsubscribe_url_with_query_counts_as_shown():
    url = "https://mail.example.com/u/tok?a=1&b=2"
    email = render_email(
        TemplateSource(subject="s", html='<a href="{{ unsubscribe_url }}">Unsubscribe</a>'),
        {}, unsubscribe_url=url, postal_address="",
    )

    assert email.html.count("/u/tok?a=1&amp;b=2") == 1


def test_available_variables_adds_builtins():
    names = available_variables(["user_id", "email", "first_name", "value"])

    assert names == ["user_id", "email", "first_name", "value", "rule_name",
                     "unsubscribe_url", "postal_address"]


def test_builtin_variables_render():
    email = render("<p>{{ rule_name }}: {{ value }} {{ postal_address }} {{ unsubscribe_url }}</p>")

    assert f"Failing requests: 12 {POSTAL_ADDRESS} {UNSUBSCRIBE_URL}" in email.html


@pytest.mark.parametrize("template, expected", [
    # A clean template has no problems.
    (TemplateSource("Hi {{ first_name }}", "<p>{{ value }}</p>"), []),
    # An unknown column in the HTML, reported on its first line.
    (TemplateSource("Hi", "<p>a</p>\n<p>{{ company }}</p>\n{{ company }}"),
     [("html", 2, "'company' is not a column")]),
    # An unknown column in the subject.
    (TemplateSource("Hi {{ nickname }}", "<p>a</p>"), [("subject", 1, "'nickname' is not a column")]),
    # A column used only with a default is fine.
    (TemplateSource("Hi", "{{ company | default('') }}"), []),
    # A column guarded by an `is defined` test is fine.
    (TemplateSource("Hi", "{% if company is defined %}{{ company }}{% endif %}"), []),
    # Loop variables and {% set %} names are not account columns.
    (TemplateSource("Hi", "{% for n in range(3) %}{{ n }}{% endfor %}{% set x = 1 %}{{ x }}"), []),
    # A syntax error in the written text part, with its line.
    (TemplateSource("Hi", "<p>a</p>", "ok\n{% for %}"), [("text", 2, "Syntax error")]),
    # Attributes that start with an underscore are rejected before saving.
    (TemplateSource("Hi", "{{ first_name.__class__ }}"), [("html", 1, "'__class__' is not allowed")]),
    # An empty subject.
    (TemplateSource("  ", "<p>a</p>"), [("subject", None, "The subject is empty")]),
])
def test_check_template_problems(template, expected):
    problems = check_template(template, available_variables(["first_name", "email"]))

    found = [(problem.part, problem.line, problem.message[:len(message)])
             for problem, (_, _, message) in zip(problems, expected)]
    assert len(problems) == len(expected)
    assert found == expected


def test_check_template_suggests_default():
    problems = check_template(TemplateSource("Hi", "{{ plan }}"), BUILTIN_VARIABLES)

    assert "{{ plan | default('') }}" in problems[0].message


def test_compiled_template_is_reused():
    from behavemail_core import rendering

    source = "<p>Cache check {{ first_name }}</p>"
    render(source)
    misses_before = rendering._compile.cache_info().misses

    render(source, {"first_name": "Grace"})

    assert rendering._compile.cache_info().misses == misses_before


@pytest.mark.parametrize("html, expected", [
    # Paragraphs become blocks separated by one blank line.
    ("<p>One</p><p>Two</p>", "One\n\nTwo\n"),
    # A link keeps its URL after its text.
    ('<p><a href="https://x.example/a?b=1&amp;c=2">Docs</a></p>', "Docs (https://x.example/a?b=1&c=2)\n"),
    # A link whose text is its URL is not repeated.
    ('<a href="https://x.example">https://x.example</a>', "https://x.example\n"),
    # An image link falls back to the URL.
    ('<a href="https://x.example"><img src="logo.png"></a>', "https://x.example\n"),
    # Numbered and bulleted lists.
    ("<ol><li>a</li><li>b</li></ol><ul><li>c</li></ul>", "1. a\n2. b\n\n- c\n"),
    # Scripts, styles and the head give no text.
    ("<head><title>T</title><style>p{}</style></head><script>x()</script><p>Body</p>", "Body\n"),
    # <br> breaks a line, entities are decoded and a no-break space stays.
    ("<p>a<br>b &amp; c&nbsp;d</p>", "a\nb & c\xa0d\n"),
    # Table rows become lines, cells are separated by a space.
    ("<table><tr><td>a</td><td>b</td></tr><tr><td>c</td></tr></table>", "a b\nc\n"),
    # Preformatted text keeps its indentation.
    ("<pre>  x\n    y</pre>", "  x\n    y\n"),
])
def test_html_to_text_cases(html, expected):
    assert html_to_text(html) == expected


def test_missing_private_attribute_is_not_allowed():
    error = render_error("{{ first_name.upper.__globals__ }}")

    assert str(error).startswith("Template 'html' line 1 is not allowed: it uses '__globals__'")
