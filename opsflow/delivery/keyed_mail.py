"""Mails to receivers who gave an OpenPGP key: the body goes encrypted to that key, or the
mail does not go at all.

Both mails opsflow writes to a receiver (tip notifications, expiry reminders) pass here, so
neither can queue a keyed receiver's text in plaintext. A key that cannot encrypt makes the
mail `failed` with the reason and no body: it is never sent or retried, shows in
`opsflow mail status`, and the notification sweep tells OPS.
"""

from __future__ import annotations

from contextlib import ExitStack
from datetime import datetime

from opsflow.delivery import openpgp
from opsflow.delivery.records import MailStatus


class ReceiverKeys(ExitStack):
    """The receivers' keys of one batch, each imported and checked once; their keyrings are
    removed when the `with` block ends."""

    def __init__(self) -> None:
        super().__init__()
        self._checked: dict[str, openpgp.Recipient | openpgp.KeyUnusable] = {}

    def get(self, public_key: str) -> openpgp.Recipient:
        """The checked key; KeyUnusable (the same every time in a batch) if it cannot encrypt."""
        if public_key not in self._checked:
            try:
                self._checked[public_key] = self.enter_context(
                    openpgp.recipient(public_key))
            except openpgp.KeyUnusable as exc:
                self._checked[public_key] = exc
        found = self._checked[public_key]
        if isinstance(found, openpgp.KeyUnusable):
            raise found
        return found

    def seal(self, mail: dict[str, object], body: str, public_key: str | None, *,
             now: datetime) -> dict[str, object]:
        """`mail` (outbox columns) with `body`: as it is for a receiver without a key,
        encrypted to the key of one with a key, or no body and `failed` when that key cannot
        encrypt."""
        if not public_key:
            return {**mail, "body": body}
        try:
            return {**mail, "body": self.get(public_key).encrypt_text(body)}
        except (openpgp.KeyUnusable, openpgp.EncryptionFailed) as exc:
            return {**mail, "body": None, "status": MailStatus.FAILED, "digest": False,
                    "next_attempt_at": now, "last_error": f"not sent: {exc}"}
