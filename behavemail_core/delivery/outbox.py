"""The outbox backend: one .eml file per email in a folder, for demos and local testing."""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Sequence

from ..errors import DeliveryError
from .message import DeliveryResult, OutgoingEmail, Sender
from .mime import build_mime_message, message_id_domain_of

logger = logging.getLogger(__name__)


class OutboxBackend:
    """Write each email as an RFC 5322 .eml file into ``directory``.

    A file appears complete or not at all: it is written to a temporary file in
    the same folder and renamed with os.replace, which is atomic on one file system.
    """

    name = "outbox"

    def __init__(self, directory: str | os.PathLike[str], sender: Sender, *,
                 message_id_domain: str | None = None) -> None:
        self.directory = Path(directory)
        self._sender = sender
        self._message_id_domain = message_id_domain or message_id_domain_of(sender)

    def deliver(self, emails: Sequence[OutgoingEmail]) -> list[DeliveryResult]:
        results = [self._write(email) for email in emails]
        written = sum(result.accepted for result in results)
        logger.info("outbox wrote %d of %d emails to %s", written, len(emails), self.directory)
        return results

    def close(self) -> None:
        # The outbox keeps no file or connection open between batches.
        return None

    def _write(self, email: OutgoingEmail) -> DeliveryResult:
        try:
            message = build_mime_message(email, self._sender,
                                         message_id_domain=self._message_id_domain)
        except DeliveryError as exc:
            logger.warning("outbox skipped send_id=%s: %s", email.send_id, exc)
            return DeliveryResult(email.send_id, accepted=False, error=str(exc),
                                  retryable=exc.retryable)

        message_id = message["Message-ID"]
        path = self.directory / eml_filename(email.send_id, message_id)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            _write_atomically(path, message.as_bytes())
        except OSError as exc:
            logger.warning("outbox failed to write send_id=%s to %s: %s",
                           email.send_id, path, exc)
            return DeliveryResult(
                email.send_id, accepted=False, retryable=True,
                error=f"Failed to write {path}: {exc}. Check that BEHAVEMAIL_OUTBOX_DIR "
                      "is writable and the disk has space.",
            )
        return DeliveryResult(email.send_id, accepted=True, provider_message_id=message_id)


def eml_filename(send_id: int, message_id: str) -> str:
    """Return the file name for one email: the send id, then the Message-ID's local part."""
    local_part = message_id.strip("<>").rpartition("@")[0]
    safe_local_part = re.sub(r"[^A-Za-z0-9._-]", "_", local_part)
    return f"{send_id:08d}-{safe_local_part}.eml"


def _write_atomically(path: Path, data: bytes) -> None:
    descriptor, temporary_name = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary_name, path)
    except BaseException:
        # Leave no partial temporary file behind, whatever interrupted the write.
        Path(temporary_name).unlink(missing_ok=True)
        raise
