# -*- test-case-name: tests.submission -*-
"""
Sending mail: the SMTP relay client (L{jmapd.submission.relay}) and the
durable outgoing queue with the service that empties it
(L{jmapd.submission.queue}).

Everything that leaves the server goes through the queue: EmailSubmissions
(L{jmapd.mail.submission}) and messages the server makes itself, such as
vacation replies, which call L{jmapd.submission.relay.queue_message} inside
their own transaction.  Sending is on when C{smtp-relay-host} is set; then
the C{urn:ietf:params:jmap:submission} capability is advertised.

This package imports nothing of the JMAP protocol, so the queue can run in
any process that has the database.
"""

from __future__ import annotations

import re
from typing import Any

SUBMISSION = "urn:ietf:params:jmap:submission"


class SendingDisabled(Exception):
    """
    A message was queued although C{smtp-relay-host} is not set: it could
    never leave.
    """


def sending_enabled(config: Any) -> bool:
    """
    Whether this server relays mail (C{smtp-relay-host} is set).
    """
    return bool(getattr(config, "smtp_relay_host", None))


_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ADDRESS = re.compile(
    rf"{_ATOM}(?:\.{_ATOM})*@(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9.]+\]|\[IPv6:[0-9A-Fa-f:.]+\])"
)


def is_address(value: Any) -> bool:
    """
    Whether C{value} is an address jmapd can put in an SMTP envelope: an
    ASCII dot-atom local part, "@", and a domain or address literal
    (without SMTPUTF8, which the relay client does not speak), at most
    254 characters as RFC 5321 allows.
    """
    return isinstance(value, str) and len(value) <= 254 and _ADDRESS.fullmatch(value) is not None
