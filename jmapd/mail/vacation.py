# -*- test-case-name: tests.mail.test_vacation -*-
"""
The VacationResponse data type (RFC 8621 section 8) and the auto-reply it
sends when mail is delivered.

There is one VacationResponse per account, with the id C{"singleton"}:
/get returns it, /set updates it, and it can be neither created nor
destroyed.

Delivery (L{jmapd.ingest.delivery}) calls L{after_delivery} in the
transaction that files each message.  RFC 8621 requires following RFC 3834,
which exists because automatic replies that answer mailing lists, bounces
or each other cause mail loops and floods.  So a reply goes out only when
every one of these holds:

 - the VacationResponse is enabled and the message arrived on or after
   fromDate and before toDate;
 - the envelope sender is not null (C{<>}: bounces, other auto-replies)
   and does not look like a robot (mailer-daemon, owner-*, *-request,
   noreply, ...; RFC 3834 section 5.2);
 - the message has no C{Auto-Submitted} other than C{no}, no C{Precedence}
   of bulk, list or junk, no C{List-*} field and no
   C{X-Auto-Response-Suppress} asking for none (RFC 3834 section 2);
 - one of the account's addresses is in To, Cc or Bcc (or their Resent-
   forms): mail that reached the account through a list or a Bcc is not
   answered (RFC 3834 section 2, personal responses);
 - the sender is not the account itself, and has not had a reply from the
   account in the last C{vacation-reply-interval}.

The reply is queued through the SMTP relay (L{jmapd.submission.relay}) in
the same transaction, to the envelope sender, from the null reverse-path,
with C{Auto-Submitted: auto-replied}, C{In-Reply-To} and C{References}
(RFC 3834 section 3).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid
from typing import Any

from twisted.logger import Logger

from jmapd.mime.headers import as_addresses, as_text
from jmapd.mime.html import html_to_text
from jmapd.protocol.engine import Capability, Context, Registry
from jmapd.protocol.errors import invalid_properties, set_error
from jmapd.protocol.standard import DataType, register_standard_methods
from jmapd.storage import emails
from jmapd.storage import vacation as storage
from jmapd.storage.vacation import SINGLETON, Vacation

log = Logger()

VACATION_RESPONSE = "urn:ietf:params:jmap:vacationresponse"

#: How replies are written: CRLF and, for non-ASCII or long lines,
#: quoted-printable or base64 rather than 8bit.  The relay client does not
#: ask for 8BITMIME (RFC 6152), so 8-bit octets or a line over 998 octets
#: (RFC 5322 section 2.1.1) must not reach it.
_REPLY_POLICY = SMTP.clone(cte_type="7bit")

#: Used when the VacationResponse has neither textBody nor htmlBody.
DEFAULT_BODY = "I am away and will read your message when I am back.\n"

_RECIPIENT_FIELDS = frozenset({"to", "cc", "bcc", "resent-to", "resent-cc", "resent-bcc"})

#: Local parts of senders that are programs, not people.
_ROBOT = re.compile(
    r"(?:mailer-daemon|listserv|majordomo|owner-.*|.*-request|.*-owner|.*bounces?(?:[+-].*)?"
    r"|no-?reply(?:[+-].*)?|do-?not-?reply(?:[+-].*)?)",
    re.IGNORECASE,
)


# -- the data type ---------------------------------------------------------------


def _utc_date(ms: int | None) -> str | None:
    return None if ms is None else emails.utc_date(ms)


def _to_json(vacation: Vacation) -> dict[str, Any]:
    # The dates from the milliseconds, not as the client wrote them: RFC
    # 8620 section 1.4 wants a UTCDate without a zero fraction (".000Z").
    return {
        "id": SINGLETON,
        "isEnabled": vacation.is_enabled,
        "fromDate": _utc_date(vacation.from_ms),
        "toDate": _utc_date(vacation.to_ms),
        "subject": vacation.subject,
        "textBody": vacation.text_body,
        "htmlBody": vacation.html_body,
    }


def _date(new: dict[str, Any], name: str) -> tuple[str | None, int | None]:
    """
    The UTCDate C{new[name]} in its normal form (a zero fraction, which
    JavaScript's toISOString writes, left out as RFC 8620 section 1.4
    requires) and in milliseconds.
    """
    value = new.get(name)
    if value is None:
        return None, None
    ms = emails.parse_date_ms(value, utc_only=True)
    if ms is None:
        raise invalid_properties(f"{name} must be a UTCDate such as 2024-07-01T00:00:00Z, or null", name)
    return emails.utc_date(ms), ms


def _string(new: dict[str, Any], name: str) -> str | None:
    value = new.get(name)
    if value is not None and not isinstance(value, str):
        raise invalid_properties(f"{name} must be a string or null", name)
    return value


class VacationResponseType(DataType):
    name = storage.TYPE_NAME
    capability = VACATION_RESPONSE
    properties = ("id", "isEnabled", "fromDate", "toDate", "subject", "textBody", "htmlBody")
    methods = ("get", "set")

    def count(self, ctx: Context, account_id: str) -> int:
        return 1

    def fetch(
        self, ctx: Context, account_id: str, ids: list[str] | None, properties: frozenset[str], extra: dict[str, Any]
    ) -> list[dict[str, Any]]:
        if ids is not None and SINGLETON not in ids:
            return []
        return [_to_json(storage.get_vacation(ctx.txn, account_id))]

    def check_create(self, obj: Any) -> dict[str, Any]:
        """
        Refuse every create, whatever it holds: the account already has
        its one VacationResponse, and RFC 8620 section 5.3 has the
        C{singleton} SetError for exactly this.
        """
        raise set_error("singleton", "an account has exactly one VacationResponse, the singleton; update it")

    def update(
        self,
        ctx: Context,
        account_id: str,
        object_id: str,
        current: dict[str, Any],
        new: dict[str, Any],
        touched: set[str],
        extra: dict[str, Any],
    ) -> dict[str, Any] | None:
        if not isinstance(new.get("isEnabled"), bool):
            raise invalid_properties("isEnabled must be true or false", "isEnabled")
        from_date, from_ms = _date(new, "fromDate")
        to_date, to_ms = _date(new, "toDate")
        vacation = Vacation(
            is_enabled=new["isEnabled"],
            from_date=from_date,
            from_ms=from_ms,
            to_date=to_date,
            to_ms=to_ms,
            subject=_string(new, "subject"),
            text_body=_string(new, "textBody"),
            html_body=_string(new, "htmlBody"),
        )
        storage.set_vacation(ctx.txn, account_id, vacation)
        # A date stored in another form than the client sent is a change
        # the patch did not ask for, which RFC 8620 section 5.3 says
        # "updated" reports.
        normalised = {"fromDate": from_date, "toDate": to_date}
        changed = {name: value for name, value in normalised.items() if value != new.get(name)}
        return changed or None

    def destroy(self, ctx: Context, account_id: str, object_id: str, extra: dict[str, Any]) -> None:
        raise set_error("singleton", "the VacationResponse cannot be destroyed; set isEnabled to false instead")


VACATION_RESPONSE_TYPE = VacationResponseType()


def register(registry: Registry) -> None:
    """
    Add the urn:ietf:params:jmap:vacationresponse capability (session and
    account, both empty objects as RFC 8621 section 1.3.3 says) with
    VacationResponse/get and /set.
    """
    registry.add_capability(Capability(VACATION_RESPONSE, lambda env: {}, lambda env, txn, account_id: {}))
    register_standard_methods(registry, VACATION_RESPONSE_TYPE)


# -- the auto-reply --------------------------------------------------------------

#: C{queue(txn, env, account_id, mail_from, rcpt_to, raw) -> queue id}.
Queue = Callable[[Any, Any, str, str, list[str], bytes], str]


def _relay_queue(env: Any) -> Queue | None:
    """
    The relay's queue when sending is enabled, else C{None}.
    """
    from jmapd.submission import relay, sending_enabled

    if not sending_enabled(env.config):
        return None
    return relay.queue_message  # type: ignore[no-any-return]


def _fields(parsed: dict[str, Any]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for header in parsed.get("headers") or ():
        found.setdefault(header["name"].lower(), []).append(header["value"])
    return found


def _robot(address: str) -> bool:
    local = address.rpartition("@")[0] or address
    return bool(_ROBOT.fullmatch(local))


def why_not(fields: dict[str, list[str]], sender: str) -> str | None:
    """
    Why a message with these header fields (lower-case names) from this
    envelope sender must not get an automatic reply (RFC 3834), or
    C{None} when it may.
    """
    if not sender:
        return "null sender"
    if _robot(sender):
        return "sender is a program"
    for value in fields.get("auto-submitted", ()):
        if as_text(value).strip().split(";")[0].strip().lower() != "no":
            return "Auto-Submitted"
    for value in fields.get("precedence", ()):
        if as_text(value).strip().lower() in ("bulk", "list", "junk"):
            return "Precedence"
    # Any List-* field, not only the ones of RFC 2369 and RFC 2919 that
    # RFC 3834 names: list software adds others (List-Unsubscribe-Post of
    # RFC 8058, List-Software, ...), and each marks list mail as well.
    if any(name.startswith("list-") for name in fields):
        return "mailing list"
    for value in fields.get("x-auto-response-suppress", ()):
        words = {word.strip().lower() for word in as_text(value).split(",")}
        if words & {"all", "oof", "autoreply"}:
            return "X-Auto-Response-Suppress"
    return None


def _account_addresses(txn: Any, account_id: str) -> list[str]:
    return [
        row[0]
        for row in txn.fetchall(
            "SELECT address FROM account_addresses WHERE account_id = ? ORDER BY is_alias, position", (account_id,)
        )
    ]


def _addressed_as(fields: dict[str, list[str]], own: list[str]) -> str | None:
    """
    The first of the account's addresses that the message names as a
    recipient, or C{None}.
    """
    named: set[str] = set()
    for name in _RECIPIENT_FIELDS:
        for value in fields.get(name, ()):
            for found in as_addresses(value):
                if found.get("email"):
                    named.add(found["email"].lower())
    for address in own:
        if address in named:
            return address
    return None


def build_reply(
    vacation: Vacation, from_address: str, to_address: str, parsed: dict[str, Any], now: float
) -> bytes:
    """
    The auto-reply message (RFC 3834 section 3): the VacationResponse's
    subject (else "Auto: " and the original subject) and body, threaded to
    the original with In-Reply-To and References.
    """
    message = EmailMessage(policy=_REPLY_POLICY)
    message["From"] = from_address
    message["To"] = to_address
    subject = vacation.subject
    if subject is None:
        subject = "Auto: " + ((parsed.get("subject") or "").strip() or "(no subject)")
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime.fromtimestamp(now, UTC))
    domain = from_address.rpartition("@")[2] or "localhost"
    message["Message-ID"] = make_msgid(domain=domain)
    original = parsed.get("messageId") or []
    if original:
        message["In-Reply-To"] = f"<{original[0]}>"
        references = list(parsed.get("references") or [])
        in_reply_to = parsed.get("inReplyTo") or []
        if not references and len(in_reply_to) == 1:
            # The parent's parent, as RFC 5322 section 3.6.4 says for a
            # parent without References.
            references = list(in_reply_to)
        if original[0] not in references:
            references.append(original[0])
        message["References"] = " ".join(f"<{ref}>" for ref in references)
    message["Auto-Submitted"] = "auto-replied"
    message["X-Auto-Response-Suppress"] = "All"
    text, html = vacation.text_body, vacation.html_body
    if text is None and html is not None:
        text = html_to_text(html)
    if text is None:
        text = DEFAULT_BODY
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    return message.as_bytes()


def after_delivery(
    txn: Any,
    env: Any,
    account_id: str,
    mail_from: str,
    parsed: dict[str, Any],
    now: float,
    queue: Queue | None = None,
) -> str | None:
    """
    Send the account's vacation response to the sender of a message just
    filed, if RFC 3834 and the VacationResponse allow (see the module
    docstring); runs in the filing transaction.

    @param mail_from: the envelope sender (C{""} for C{<>}).
    @param queue: where the reply goes; the relay's queue by default.
    @return: the queue id of the reply, or C{None} when none was sent.
    """
    vacation = storage.get_vacation(txn, account_id)
    if not vacation.is_active(int(now * 1000)):
        return None
    # The reply goes to the envelope sender as given: its local part may be
    # case-sensitive (RFC 5321 section 2.4).  It is compared and
    # remembered in lower case.
    return_path = mail_from.strip()
    sender = return_path.lower()
    fields = _fields(parsed)
    reason = why_not(fields, sender)
    own = _account_addresses(txn, account_id)
    if reason is None and sender in own:
        reason = "sender is the account"
    addressed_as = _addressed_as(fields, own) if reason is None else None
    if reason is None and addressed_as is None:
        reason = "the account is not in To, Cc or Bcc"
    if reason is None:
        last = storage.last_reply(txn, account_id, sender)
        if last is not None and now - last < env.config.vacation_reply_interval:
            reason = "already answered"
    if reason is not None:
        log.debug("no vacation reply from {account} to {sender}: {reason}", account=account_id, sender=sender,
                  reason=reason)
        return None
    if queue is None:
        queue = _relay_queue(env)
        if queue is None:
            log.warn("vacation reply from {account} to {sender} not sent: smtp-relay-host is not set",
                     account=account_id, sender=sender)
            return None
    assert addressed_as is not None
    raw = build_reply(vacation, addressed_as, return_path, parsed, now)
    queue_id = queue(txn, env, account_id, "", [return_path], raw)
    storage.record_reply(txn, account_id, sender, now)
    log.info("vacation reply from {account} to {sender} queued as {queue_id}", account=account_id, sender=sender,
             queue_id=queue_id)
    return queue_id
