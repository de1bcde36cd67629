"""Code editors (streamlit-ace) for PromQL and template HTML, and metric-name completion.

Every editor runs with ``auto_update=True``: streamlit-ace 0.1.1 then sends the text
to the app 200 ms after the last keystroke. Without it the text reaches the app only
when the operator clicks the editor's own Apply button (or presses Ctrl+Enter), and
a Save click would silently store the old text.

A Save clicked within those 200 ms arrives before the last keystrokes do. The
screens therefore save in two steps: the click only records the request, and the
save waits EDITOR_SETTLE_SECONDS (:func:`wait_for_editor_updates`). An editor update
arriving in that time interrupts the run, and the next run saves with the newest
text. Text that arrives even later differs from the saved version, so the screens
show "unsaved changes": an edit is never lost without notice.
"""

from __future__ import annotations

import json
import time
from typing import Sequence

import streamlit as st
from streamlit_ace import st_ace

from behavemail_core.metric_catalog import MetricInfo

# The title Streamlit gives the iframe of every streamlit-ace editor (component "streamlit_ace").
ACE_IFRAME_TITLE = "streamlit_ace.streamlit_ace"
# streamlit-ace's 200 ms debounce, plus time for the update to reach the server.
EDITOR_SETTLE_SECONDS = 0.5


def code_editor(value: str, *, key: str, language: str, readonly: bool = False,
                min_lines: int = 8, placeholder: str = "") -> str:
    """Show an Ace editor and return its current text.

    ``value`` is only the initial text: the editor keeps what the operator types
    until ``key`` changes, which resets it to ``value``.
    """
    text = st_ace(value=value, key=key, language=language, theme="chrome", auto_update=True,
                  readonly=readonly, min_lines=min_lines, max_lines=40, font_size=14, tab_size=2,
                  wrap=True, placeholder=placeholder)
    return value if text is None else str(text)


def wait_for_editor_updates() -> None:
    """Give a debounced editor update time to arrive before saving.

    Streamlit stops a run at its next element when a rerun request is waiting, so
    an update that arrives during the pause ends this run here, and the rerun (which
    still has the pending save) reads the newest text.
    """
    with st.spinner("Saving…"):
        time.sleep(EDITOR_SETTLE_SECONDS)
    st.empty()


def enable_metric_completion(metrics: Sequence[MetricInfo]) -> None:
    """Offer metric names as completions in every Ace editor on the screen.

    streamlit-ace 0.1.1 turns on Ace's live autocompletion but takes no custom word
    list, so this invisible component adds an Ace completer inside each editor's
    iframe. It can, because both iframes come from the app's own origin (st.iframe
    gives an HTML string same-origin access).
    NOTE: this depends on streamlit-ace exposing ``window.ace`` in its iframe, and on
    the iframe title above. The browser test that types a metric prefix fails when
    either changes.
    """
    words = [{"name": metric.name, "type": metric.type} for metric in metrics]
    script = _COMPLETION_SCRIPT.replace("__WORDS__", json.dumps(words).replace("<", "\\u003c"))
    st.iframe(script, height=1, alt="Metric name completion")


_COMPLETION_SCRIPT = """
<script>
const words = __WORDS__;
function install(frame) {
  let win;
  try { win = frame.contentWindow; } catch (error) { return; }
  if (!win || !win.ace) { return; }
  win.behavemailMetricWords = words;
  if (win.behavemailCompleterInstalled) { return; }
  const tools = win.ace.require("ace/ext/language_tools");
  if (!tools) { return; }
  tools.addCompleter({
    identifierRegexps: [/[a-zA-Z_0-9:]/],
    getCompletions: function (editor, session, pos, prefix, callback) {
      if (!prefix) { callback(null, []); return; }
      callback(null, (win.behavemailMetricWords || []).map(function (word) {
        return {caption: word.name, value: word.name, meta: word.type, score: 1000};
      }));
    }
  });
  win.behavemailCompleterInstalled = true;
}
// Editors appear and are replaced as the screen reruns, so look for new ones every second.
setInterval(function () {
  window.parent.document.querySelectorAll('iframe[title="ACE_TITLE"]').forEach(install);
}, 1000);
</script>
""".replace("ACE_TITLE", ACE_IFRAME_TITLE)


def preview_frame(html: str, *, width: int, height: int = 640) -> None:
    """Show an email's HTML in a sandboxed iframe of ``width`` pixels.

    st.iframe runs its HTML with scripts and same-origin access, so it only gets this
    wrapper. The email goes into an inner iframe with an empty sandbox attribute, so
    the email's own HTML runs no script and cannot reach the app.
    """
    # Centering with auto margins (not flexbox) keeps a preview wider than the column
    # scrollable from its left edge. "<" is escaped so that a "</script>" inside the
    # email cannot end this script element.
    source = json.dumps(html).replace("<", "\\u003c")
    document = f"""
<div style="overflow-x:auto;background:#f3f4f6;padding:8px 0;">
  <iframe id="email" sandbox="" title="Email preview"
          style="display:block;margin:0 auto;width:{width}px;height:{height - 24}px;border:1px solid #d1d5db;background:#fff;"></iframe>
</div>
<script>document.getElementById("email").srcdoc = {source};</script>
"""
    st.iframe(document, height=height, alt="Email preview")
