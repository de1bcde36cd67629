"""Shared parts of the operator app: services, sign-in, session state, widgets and error display.

Pages import from here and from behavemail_core; behavemail_core never imports this
package or Streamlit.
"""
