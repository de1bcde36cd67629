"""Scheduler instances: registration, heartbeat, and recovery of sends a dead one left behind."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from .models import FAILED, PENDING, SchedulerInstance, Send

log = logging.getLogger(__name__)

INTERRUPTED_ERROR = ("The scheduler stopped (crash or kill) while this email was being delivered. "
                     "It may or may not have gone out, so it is not sent again to avoid a duplicate.")


def register(session: Session, now: datetime) -> str:
    """Record this process as a scheduler instance and return its id."""
    instance_id = uuid.uuid4().hex
    session.add(SchedulerInstance(id=instance_id, hostname=socket.gethostname(), pid=os.getpid(),
                                  started_at=now, last_seen_at=now))
    session.commit()
    log.info("scheduler registered scheduler_id=%s pid=%d", instance_id, os.getpid())
    return instance_id


def beat(session: Session, instance_id: str, now: datetime, *, cycle_finished: bool = False) -> None:
    values = {"last_seen_at": now}
    if cycle_finished:
        values["last_cycle_at"] = now
    session.execute(update(SchedulerInstance).where(SchedulerInstance.id == instance_id).values(**values))
    session.commit()


def mark_stopped(session: Session, instance_id: str, now: datetime) -> None:
    session.execute(update(SchedulerInstance).where(SchedulerInstance.id == instance_id)
                    .values(stopped_at=now, last_seen_at=now))
    session.commit()


def is_dead(instance: SchedulerInstance, now: datetime, stale_after: timedelta) -> bool:
    """Return True when the instance stopped, its process is gone, or its heartbeat is stale."""
    if instance.stopped_at is not None:
        return True
    if instance.hostname == socket.gethostname() and not _pid_alive(instance.pid):
        return True
    return now - instance.last_seen_at > stale_after


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_interrupted_sends(session: Session, own_id: str, now: datetime, stale_after: timedelta) -> int:
    """Settle the pending sends a dead scheduler left behind; return how many.

    A pending row whose attempt was counted may have reached the provider without
    the result being recorded: sending again could deliver twice, so it ends as
    failed with the reason. A row never handed to a provider (attempts = 0) is
    deleted, so the next evaluation triggers that user again.
    """
    owners = set(session.scalars(select(Send.claimed_by).where(Send.status == PENDING).distinct()))
    owners.discard(own_id)
    dead = []
    for owner in owners:
        instance = session.get(SchedulerInstance, owner) if owner else None
        if instance is None or is_dead(instance, now, stale_after):
            dead.append(owner)
    recovered = 0
    for owner in dead:
        failed = session.execute(
            update(Send).where(Send.status == PENDING, Send.claimed_by == owner, Send.attempts > 0)
            .values(status=FAILED, retryable=False, error=INTERRUPTED_ERROR)).rowcount or 0
        released = session.execute(
            delete(Send).where(Send.status == PENDING, Send.claimed_by == owner, Send.attempts == 0)
        ).rowcount or 0
        recovered += failed + released
        log.warning("recovered sends of a stopped scheduler scheduler_id=%s failed=%d released=%d",
                    owner, failed, released)
    session.commit()
    return recovered


def latest_cycle_at(session: Session) -> datetime | None:
    """Return the newest finished cycle of any scheduler (for /healthz and the app's sidebar)."""
    return session.scalar(select(SchedulerInstance.last_cycle_at)
                          .where(SchedulerInstance.last_cycle_at.is_not(None))
                          .order_by(SchedulerInstance.last_cycle_at.desc()).limit(1))
