# -*- test-case-name: tests.mail -*-
"""
JMAP Mail (RFC 8621): one module per data type (mailbox, thread, email,
...), registered here under the C{urn:ietf:params:jmap:mail} capability.
"""

from __future__ import annotations

from typing import Any

from jmapd.protocol.engine import Capability, Registry

MAIL = "urn:ietf:params:jmap:mail"

#: The Email/query sort properties (RFC 8621 section 4.4.2).
EMAIL_QUERY_SORT_OPTIONS = (
    "receivedAt",
    "size",
    "from",
    "to",
    "subject",
    "sentAt",
    "hasKeyword",
    "allInThreadHaveKeyword",
    "someInThreadHaveKeyword",
)


def mail_account_capability(env: Any, txn: Any, account_id: str) -> dict[str, Any]:
    """
    The Mail capability of an account (RFC 8621 section 1.3.1), from the
    configuration.
    """
    config = env.config
    return {
        "maxMailboxesPerEmail": config.mail_max_mailboxes_per_email,
        "maxMailboxDepth": config.mailbox_max_depth,
        "maxSizeMailboxName": config.mailbox_name_max_len,
        "maxSizeAttachmentsPerEmail": config.mail_attachments_max_size,
        "emailQuerySortOptions": list(EMAIL_QUERY_SORT_OPTIONS),
        "mayCreateTopLevelMailbox": True,
    }


def mail_account_capability_for(env: Any, txn: Any, account_id: str, principal: Any) -> dict[str, Any]:
    """
    The Mail capability of an account as C{principal} sees it: in someone
    else's account they may create Mailboxes only under one whose myRights
    has mayCreateChild, never at the top level (RFC 8621 section 1.3.1:
    this is about what the user may do; no MailboxRights grants the top
    level of another account).
    """
    value = mail_account_capability(env, txn, account_id)
    value["mayCreateTopLevelMailbox"] = account_id == principal.account_id
    return value


def register(registry: Registry) -> None:
    """
    Add the Mail capability and every Mail data type to the registry.
    """
    from jmapd.mail import email, mailbox, thread, vacation

    registry.add_capability(
        Capability(MAIL, lambda env: {}, mail_account_capability, account_for=mail_account_capability_for)
    )
    mailbox.register(registry)
    email.register(registry)
    thread.register(registry)
    vacation.register(registry)
    from jmapd.sharing import principal

    principal.register(registry)
