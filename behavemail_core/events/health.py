"""GET /healthz: liveness of the event server plus the scheduler's newest cycle time."""

from __future__ import annotations

import logging

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from ..models import SchedulerInstance
from .context import EventContext
from .responses import Response, json_response

log = logging.getLogger(__name__)


def handle_health(context: EventContext) -> Response:
    """Report "ok" and the newest ``last_cycle_at`` of any scheduler (null before the first cycle).

    Returns 503 with status "database_unavailable" when the app database cannot be read.
    """
    try:
        with context.sessions() as session:
            last_cycle_at = session.scalar(select(func.max(SchedulerInstance.last_cycle_at)))
    except SQLAlchemyError as exc:
        log.error("health check failed to read scheduler_instances: %s", exc)
        return json_response(503, {"status": "database_unavailable", "last_cycle_at": None})
    shown = last_cycle_at.isoformat() if last_cycle_at is not None else None
    return json_response(200, {"status": "ok", "last_cycle_at": shown})
