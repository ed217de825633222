"""Recipient addresses checked when a mail is queued, not discovered bad at send time.

SMTP carries a bare mailbox (RFC 5321 `Mailbox`: a dot-atom local part, `@`, a domain). Text
that is not one (`a b@x.example`, `ok@x.example <evil@y.example>`, an address with a line
break) would otherwise be sent to part of itself or put whole into a To header. An
internationalised domain is converted to its ASCII form with IDNA 2008 (the `idna` package),
which every server accepts; a local part outside ASCII would need SMTPUTF8 and is refused.
"""

from __future__ import annotations

import re

import idna

LOCAL_PART = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
CONTROL = re.compile(r"[\x00-\x20\x7f<>]")


class InvalidAddress(ValueError):
    """A recipient that is not a mailbox SMTP can carry: permanent, never retried."""

    def __init__(self, address: str, why: str) -> None:
        super().__init__(f"invalid address {address!r}: {why}")


def mailbox(address: str) -> str:
    """`address` as the mailbox to send to (the domain in ASCII), or InvalidAddress."""
    if CONTROL.search(address):
        raise InvalidAddress(address, "whitespace, a control character or an angle bracket "
                             "(one bare mailbox such as name@example.org is expected)")
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise InvalidAddress(address, "not of the form local-part@domain")
    if not LOCAL_PART.fullmatch(local) or len(local) > 64:
        raise InvalidAddress(address, "the part before @ is not a plain RFC 5321 local part"
                             + ("" if local.isascii() else " (non-ASCII needs SMTPUTF8)"))
    if not domain.isascii():
        try:
            domain = idna.encode(domain, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise InvalidAddress(address, f"the domain is not a valid IDN: {exc}") from None
    labels = domain.split(".")
    if not all(LABEL.fullmatch(label) for label in labels):
        raise InvalidAddress(address, "the domain is not a host name")
    mailbox_text = f"{local}@{domain}"
    if len(mailbox_text) > 254:
        raise InvalidAddress(address, "longer than 254 characters")
    return mailbox_text
