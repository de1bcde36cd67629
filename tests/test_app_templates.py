"""The Templates screen under AppTest: starters, checks, preview, test send, save and conflicts.

AppTest cannot type into the Ace editor, so the HTML body is set through the
screen's state, which the editor starts from. The subject is a plain text input.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from streamlit.testing.v1 import AppTest

from behavemail_core.database import create_app_engine, session_factory
from behavemail_core.models import Template
from behavemail_core.template_store import TemplateSpec, find_template, save_template
from ui.state import TemplatesState

APP = str(Path(__file__).resolve().parent.parent / "app.py")
TIMEOUT_SECONDS = 60


def open_templates() -> AppTest:
    app = AppTest.from_file(APP, default_timeout=TIMEOUT_SECONDS)
    app.run()
    app.switch_page("pages/templates.py").run()
    assert not app.exception, app.exception
    return app


def state_of(app: AppTest) -> TemplatesState:
    return app.session_state["templates.state"]


def field_key(app: AppTest, name: str) -> str:
    return f"templates.{state_of(app).generation}.{name}"


def sessions(app_env: dict[str, str]):
    return session_factory(create_app_engine(app_env["BEHAVEMAIL_DATABASE_URL"]))


def copy_starter(app: AppTest, name: str) -> None:
    app.selectbox(key="templates.starter").set_value(name).run()
    app.button(key="templates.copy_starter").click().run()
    assert not app.exception, app.exception


def preview_for(app: AppTest, user_id: str) -> None:
    app.text_input(key="templates.preview.typed_user").input(user_id).run()
    assert not app.exception, app.exception


def subject_shown(app: AppTest) -> str:
    return next(item.value for item in app.markdown if item.value.startswith("**Subject:**"))


def test_starter_copy_previews_and_saves(app_env) -> None:
    app = open_templates()
    copy_starter(app, "4xx spike")
    preview_for(app, "u001")
    assert subject_shown(app) == "**Subject:** Ada, your requests are failing with client errors"
    assert app.text_input(key=field_key(app, "name")).value == "4xx spike"
    variables = next(item.value for item in app.markdown if item.value.startswith("**Variables:**"))
    assert "`{{ plan }}`" in variables
    assert "`{{ unsubscribe_url }}`" in variables

    app.button(key="templates.save").click().run()
    assert not app.exception, app.exception
    assert app.success[0].value == "Saved the template '4xx spike' (version 1)."
    with sessions(app_env)() as session:
        saved = find_template(session, "4xx spike")
    assert saved is not None
    assert saved.subject == "{{ first_name }}, your requests are failing with client errors"


def test_unknown_variable_blocks_save(app_env) -> None:
    app = open_templates()
    copy_starter(app, "Try search")
    app.text_input(key=field_key(app, "subject")).input("Hi {{ first_name }}, {{ shoe_size }}").run()
    errors = [item.value for item in app.error]
    assert errors == ["**subject, line 1:** 'shoe_size' is not a column of the accounts query: add it to the "
                      "query, or give it a default with {{ shoe_size | default('') }}"]
    assert app.button(key="templates.save").proto.disabled


def test_syntax_error_in_html_names_line(app_env) -> None:
    app = open_templates()
    state = state_of(app)
    state.subject, state.html = "Hi", "<p>one</p>\n<p>{% if plan %}two</p>"
    state.generation += 1
    app.run()
    assert [item.value for item in app.error] == [
        "**html, line 2:** Syntax error: Unexpected end of template. Jinja was looking for the following tags: "
        "'elif' or 'else' or 'endif'. The innermost block that needs to be closed is 'if'."]


def test_test_email_goes_to_outbox(app_env) -> None:
    app = open_templates()
    copy_starter(app, "Quota nearly used")
    preview_for(app, "u003")
    app.text_input(key="templates.test_address").input("pm@example.com").run()
    app.button(key="templates.send_test").click().run()
    assert not app.exception, app.exception
    assert app.success[0].value == "Sent a test email to pm@example.com through the outbox backend."
    files = list(Path(app_env["BEHAVEMAIL_OUTBOX_DIR"]).glob("*.eml"))
    assert len(files) == 1
    assert b"Subject: [Test] Alan, you have used 4200 % of your quota" in files[0].read_bytes()


def test_test_email_rejects_bad_address(app_env) -> None:
    app = open_templates()
    copy_starter(app, "Try search")
    preview_for(app, "u001")
    app.text_input(key="templates.test_address").input("not an address").run()
    app.button(key="templates.send_test").click().run()
    assert app.error[0].value == ("'not an address' is not a valid email address: type one address, "
                                  "e.g. you@example.com")


def test_unknown_user_id_warns(app_env) -> None:
    app = open_templates()
    copy_starter(app, "Try search")
    preview_for(app, "u404")
    assert app.warning[0].value == ("No account with user id 'u404' in the accounts database: check the id.")


def test_second_template_save_is_refused(app_env) -> None:
    with sessions(app_env)() as session:
        template_id = save_template(session, TemplateSpec("Welcome", "Hi", "<p>Hi</p>"), actor="test").id
    app = open_templates()
    app.selectbox(key=f"templates.picker.{state_of(app).picker_generation}").set_value(template_id).run()
    with sessions(app_env)() as session:
        save_template(session, TemplateSpec("Welcome", "Hello", "<p>Hi</p>"), actor="someone else",
                      template_id=template_id, expected_version=1)
    app.text_input(key=field_key(app, "subject")).input("Hey").run()
    app.button(key="templates.save").click().run()
    assert any("was changed by someone else since you opened it (your version 1, now 2)" in item.value
               for item in app.error)
    with sessions(app_env)() as session:
        subjects = list(session.scalars(select(Template.subject)))
    assert subjects == ["Hello"]
