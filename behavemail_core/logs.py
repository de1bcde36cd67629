"""Logging set-up shared by the scheduler and the command line."""

from __future__ import annotations

import logging


def configure_logging(level: str = "INFO") -> None:
    """Log to stderr as 'time level logger message'; key=value context is in the message."""
    logging.basicConfig(level=level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # httpx logs every request at INFO, which repeats our own per-query line.
    logging.getLogger("httpx").setLevel(logging.WARNING)
