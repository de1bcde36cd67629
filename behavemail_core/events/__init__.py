"""The scheduler's event endpoints: SendGrid Event Webhook, open pixel, click redirect, unsubscribe."""

from .server import EventServer, start_event_server

__all__ = ["EventServer", "start_event_server"]
