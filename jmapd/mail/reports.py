# -*- test-case-name: tests.submission.test_reports -*-
"""
Delivery status notifications (DSNs, RFC 3464) and message disposition
notifications (MDNs, RFC 8098) that arrive for an account, recorded on the
EmailSubmission they report on (RFC 8621 section 7).

RFC 8621 says a server SHOULD set a recipient's C{delivered} to C{yes}
when a DSN for it has Action C{delivered}, to C{no} when it has Action
C{failed}, and that any other DSN (C{delayed}, C{relayed}, C{expanded})
SHOULD NOT change it; that C{displayed} SHOULD become C{yes} when an MDN
for the recipient has the disposition-type C{displayed}; and that
C{dsnBlobIds} and C{mdnBlobIds} list the blobs of the DSNs and MDNs
received for the submission, oldest first, each the whole message as
received.

Delivery (L{jmapd.ingest.delivery}) does it in two steps, as for the
vacation reply:

 - L{read_report}, when the message is prepared (outside the
   transaction, from the parse delivery made anyway, and only for a
   message whose top-level Content-Type is multipart/report): what the
   report says, or C{None} when it is not a report that can be used;
 - L{after_delivery}, in the filing transaction, after the report has
   become an Email of the account: the EmailSubmission it is about is
   updated, and its change recorded, so /changes and push report it.

Matching is strict, because a report changes what the user is told about
their own mail:

 - only the account that receives the report is searched, never another
   account's EmailSubmissions;
 - the report names the message by its Message-ID: a DSN in the header
   fields of the returned message (its text/rfc822-headers or
   message/rfc822 part), an MDN in its Original-Message-ID field (or,
   without one, in the returned header fields); that must be the own
   Message-ID of the Email an EmailSubmission sent (not a message that
   merely refers to it);
 - each per-recipient part of the report is the recipient of the
   EmailSubmission's deliveryStatus named by its Original-Recipient, else
   by its Final-Recipient (compared without regard to case); one naming
   neither is ignored;
 - a DSN must come from the null reverse-path: RFC 3461 section 6.2 says
   every DSN is sent with C{MAIL FROM:<>}, so a multipart/report from
   anyone else is an ordinary message.  MDNs are not held to it: RFC 8098
   asks for a null reverse-path too, but mail clients send MDNs through
   submission servers that often do not allow one;
 - a canceled EmailSubmission sent nothing and gets nothing.

A report that cannot be read, or matches nothing, changes nothing; the
message is filed all the same.
"""

from __future__ import annotations

import re
from typing import Any

from attrs import frozen
from twisted.logger import Logger

from jmapd.mime.body import decode_part
from jmapd.mime.headers import as_message_ids, strip_comments
from jmapd.mime.parse import content_type_param, parse_headers
from jmapd.storage import emails
from jmapd.storage import submissions as storage

log = Logger()

#: The report-type parameters (RFC 6522) read, and what they are.
DSN = "delivery-status"
MDN = "disposition-notification"

#: The media types of the machine-readable part of each kind of report
#: (RFC 3464, RFC 8098, and their internationalised forms of RFC 6533).
_STATUS_TYPES = {
    DSN: frozenset({"message/delivery-status", "message/global-delivery-status"}),
    MDN: frozenset({"message/disposition-notification", "message/global-disposition-notification"}),
}

#: The media types of the returned message, or of its header fields.
_RETURNED_TYPES = frozenset({"text/rfc822-headers", "message/rfc822", "message/global", "message/global-headers"})

#: How much of the machine-readable part is read: one block of a few
#: fields per recipient, and no submission has more recipients than
#: C{submission-max-recipients}.
_MAX_STATUS = 256 * 1024

#: What a DSN's Action says about C{delivered} (RFC 8621 section 7); the
#: other actions leave it as it is.
_DELIVERED = {"delivered": "yes", "failed": "no"}

_UNENCODED = frozenset({"", "7bit", "8bit", "binary"})

_SMTP_REPLY = re.compile(r"^([245]\d\d)[ -](?:([245]\.\d{1,3}\.\d{1,3})(?: |$))?")


@frozen
class RecipientReport:
    """
    One per-recipient part of a report.

    @ivar original_recipient: the Original-Recipient address, lower case.
    @ivar final_recipient: the Final-Recipient address, lower case.
    @ivar action: a DSN's Action, or an MDN's disposition-type, lower case.
    @ivar smtp_reply: a DSN's Diagnostic-Code of type smtp, as an
        smtpReply (RFC 8621 section 7), or C{None}.
    """

    original_recipient: str | None
    final_recipient: str | None
    action: str
    smtp_reply: str | None = None


@frozen
class Report:
    """
    What a DSN or MDN says about the message it reports on.

    @ivar kind: L{DSN} or L{MDN}.
    @ivar original_message_id: the Message-ID of the message reported on,
        without angle brackets.
    """

    kind: str
    original_message_id: str
    recipients: tuple[RecipientReport, ...]


# -- reading a report ----------------------------------------------------------


def read_report(raw: bytes, parsed: dict[str, Any], mail_from: str) -> Report | None:
    """
    What the report C{raw} says, from its parse; C{None} when it is not a
    DSN or MDN, or one that cannot be used (see the module docstring).
    Pure, for any thread; never raises on a malformed report.

    @param mail_from: the envelope sender it came from (C{""} for C{<>}).
    """
    try:
        return _read(raw, parsed, mail_from)
    except Exception:
        log.failure("cannot read a multipart/report; it is filed as an ordinary message")
        return None


def _read(raw: bytes, parsed: dict[str, Any], mail_from: str) -> Report | None:
    root = parsed["bodyStructure"]
    if root["type"] != "multipart/report":
        return None
    kind = _report_type(root["headers"])
    if kind not in _STATUS_TYPES:
        return None
    if kind == DSN and mail_from:
        log.info("a delivery-status report from <{mail_from}> is not a DSN (RFC 3461: DSNs come from <>);"
                 " filed as an ordinary message", mail_from=mail_from)
        return None
    children = root["subParts"] or []
    status = next((c for c in children if c["subParts"] is None and c["type"] in _STATUS_TYPES[kind]), None)
    if status is None:
        log.info("a {kind} report without its {kind} part; filed as an ordinary message", kind=kind)
        return None
    blocks = _field_blocks(decode_part(raw, status)[:_MAX_STATUS].decode("utf-8", "replace"))
    message_id = None
    if kind == MDN:
        fields: dict[str, str] = {}
        for block in blocks:
            for name, value in block.items():
                fields.setdefault(name, value)
        message_id = _first_id(fields.get("original-message-id"))
        blocks = [fields]
    if message_id is None:
        returned = next((c for c in children if c["subParts"] is None and c["type"] in _RETURNED_TYPES), None)
        message_id = None if returned is None else _returned_message_id(raw, returned)
    if message_id is None:
        log.info("a {kind} report that does not say which message it is about; filed as an ordinary message",
                 kind=kind)
        return None
    recipients = tuple(r for r in (_recipient(kind, block) for block in blocks) if r is not None)
    return Report(kind, message_id, recipients)


def _report_type(headers: list[dict[str, str]]) -> str | None:
    """
    The report-type parameter of the Content-Type (RFC 6522), lower case.
    """
    value = next((h["value"] for h in headers if h["name"].lower() == "content-type"), None)
    found = None if value is None else content_type_param(value, "report-type")
    return None if found is None else found.strip().lower()


def _field_blocks(text: str) -> list[dict[str, str]]:
    """
    The groups of fields of a message/delivery-status or
    message/disposition-notification body (RFC 3464 section 2.1): groups
    are separated by empty lines; each is a map of lower-case field names
    to unfolded values, the first field of a name winning.  Lines that
    are not fields are skipped.
    """
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    name: str | None = None
    for line in text.splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
                current = {}
            name = None
        elif line[0] in " \t":
            if name is not None:
                current[name] += " " + line.strip()
        else:
            head, colon, value = line.partition(":")
            head = head.strip().lower()
            if not colon or not head or any(c.isspace() for c in head) or head in current:
                name = None
                continue
            current[head] = value.strip()
            name = head
    if current:
        blocks.append(current)
    return blocks


def _first_id(value: str | None) -> str | None:
    ids = None if value is None else as_message_ids(value)
    return ids[0] if ids else None


def _returned_message_id(raw: bytes, part: dict[str, Any]) -> str | None:
    """
    The Message-ID in the header fields of the returned message (the last
    one, as the parse reads a message's own).
    """
    if part["_encoding"] in _UNENCODED:
        start = part["_offset"]
        headers, _ = parse_headers(raw, start, start + part["_length"])
    else:
        data = decode_part(raw, part)
        headers, _ = parse_headers(data, 0, len(data))
    values = [h["value"] for h in headers if h["name"].lower() == "message-id"]
    return _first_id(values[-1]) if values else None


def _address(value: str | None) -> str | None:
    """
    The address of an Original-Recipient or Final-Recipient field
    (C{rfc822; user@example.org}), lower case; C{None} for another
    address-type or no address.
    """
    if value is None:
        return None
    address_type, semicolon, address = strip_comments(value).partition(";")
    if not semicolon or address_type.strip().lower() not in ("rfc822", "utf-8"):
        return None
    address = address.strip().strip("<>").strip().lower()
    return address if "@" in address else None


def _recipient(kind: str, fields: dict[str, str]) -> RecipientReport | None:
    original = _address(fields.get("original-recipient"))
    final = _address(fields.get("final-recipient"))
    if original is None and final is None:
        return None  # the per-message fields of a DSN, or an MDN naming no one
    if kind == DSN:
        action = strip_comments(fields.get("action", "")).strip().lower()
        return RecipientReport(original, final, action, _smtp_reply(fields.get("diagnostic-code")))
    # Disposition: disposition-mode; disposition-type[/modifier,...]
    # (RFC 8098 section 3.2.6).
    _, _, disposition = strip_comments(fields.get("disposition", "")).partition(";")
    return RecipientReport(original, final, disposition.split("/", 1)[0].strip().lower())


def _smtp_reply(value: str | None) -> str | None:
    """
    A Diagnostic-Code of type smtp (RFC 3464 section 2.3.6) as RFC 8621
    section 7 writes an smtpReply: on one line, the prefix the lines of a
    multi-line reply share kept once, and C{NNN-} made C{NNN }.
    """
    if value is None:
        return None
    diagnostic_type, semicolon, text = value.partition(";")
    if not semicolon or diagnostic_type.strip().lower() != "smtp":
        return None
    text = " ".join(text.split())
    match = _SMTP_REPLY.match(text)
    if match is None:
        return None
    code, status = match.group(1), match.group(2)
    prefix = re.escape(code) + "[ -]" + (re.escape(status) + "(?: |$)" if status else "")
    rest = re.sub(" " + prefix, " ", text[match.end() :])
    head = f"{code} {status} " if status else f"{code} "
    return " ".join((head + rest).split())


# -- recording it --------------------------------------------------------------


def after_delivery(txn: Any, account_id: str, report: Report, blob_id: str) -> list[str]:
    """
    Record the report, just filed as the Email of blob C{blob_id}, on the
    account's EmailSubmissions it is about (see the module docstring);
    runs in the filing transaction.

    @return: the ids of the EmailSubmissions changed.
    """
    # Before reading what is changed (filing the report took it already).
    txn.lock_account(account_id)
    email_ids = emails.with_message_id(txn, account_id, report.original_message_id)
    candidates = [
        s
        for s in (storage.submissions_of_emails(txn, account_id, email_ids) if email_ids else [])
        if s.undo_status != "canceled" and s.delivery_status
    ]
    if len(candidates) > 1:
        # The same Email sent more than once: the Message-ID cannot tell
        # the sends apart, the recipients may.
        named = [s for s in candidates if any(_status_key(s, r) is not None for r in report.recipients)]
        candidates = named or candidates
    if not candidates:
        log.debug("{kind} about <{message_id}> for {account} matches no EmailSubmission", kind=report.kind,
                  message_id=report.original_message_id, account=account_id)
        return []
    changed = []
    for submission in candidates:
        assert submission.delivery_status is not None
        status = {address: dict(value) for address, value in submission.delivery_status.items()}
        for recipient in report.recipients:
            address = _status_key(submission, recipient)
            if address is None:
                continue
            entry = status[address]
            if report.kind == DSN:
                delivered = _DELIVERED.get(recipient.action)
                if delivered is None:
                    continue
                entry["delivered"] = delivered
                if recipient.smtp_reply is not None:
                    entry["smtpReply"] = recipient.smtp_reply
            elif recipient.action == "displayed":
                entry["displayed"] = "yes"
        blob_ids = submission.dsn_blob_ids if report.kind == DSN else submission.mdn_blob_ids
        new_blob_ids = blob_ids if blob_id in blob_ids else [*blob_ids, blob_id]
        if status == submission.delivery_status and new_blob_ids is blob_ids:
            continue  # nothing new: these very bytes were recorded before
        storage.set_status(
            txn,
            account_id,
            submission.id,
            delivery_status=status,
            dsn_blob_ids=new_blob_ids if report.kind == DSN else None,
            mdn_blob_ids=new_blob_ids if report.kind == MDN else None,
        )
        changed.append(submission.id)
        log.info("{kind} about <{message_id}> recorded on EmailSubmission {submission} of {account}",
                 kind=report.kind, message_id=report.original_message_id, submission=submission.id,
                 account=account_id)
    return changed


def _status_key(submission: storage.Submission, recipient: RecipientReport) -> str | None:
    """
    The recipient of the submission's deliveryStatus a per-recipient part
    is about: its Original-Recipient, else its Final-Recipient.
    """
    keys = {address.lower(): address for address in submission.delivery_status or {}}
    for address in (recipient.original_recipient, recipient.final_recipient):
        if address is not None and address in keys:
            return keys[address]
    return None
