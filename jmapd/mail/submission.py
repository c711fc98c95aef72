# -*- test-case-name: tests.mail.test_submission -*-
"""
The EmailSubmission data type (RFC 8621 section 7): EmailSubmission/get,
/changes, /query, /queryChanges and /set with onSuccessUpdateEmail and
onSuccessDestroyEmail.

Creating an EmailSubmission checks the Email, the Identity and the
envelope, then puts a copy of the message (without its Bcc header fields)
in the outgoing queue in the same transaction, so the send happens if and
only if the call commits, and goes on whatever later happens to the Email
or the EmailSubmission.  The queue service (L{jmapd.submission.queue})
relays it and writes deliveryStatus back here.

undoStatus is C{pending} while the message waits in the queue (for
C{submission-hold}, a FUTURERELEASE time or a retry) and nothing has been
relayed; a client cancels it then by setting C{canceled}.  Once the relay
accepted the message for a recipient, or the queue is done with it, it is
C{final}, and an undo is C{cannotUnsend}.
"""

from __future__ import annotations

from typing import Any

import orjson

from jmapd.mime.headers import as_addresses
from jmapd.protocol.arguments import Arguments, is_id
from jmapd.protocol.engine import Context, Registry, ResponseList
from jmapd.protocol.errors import MethodError, invalid_arguments, invalid_properties, set_error
from jmapd.protocol.standard import DataType, comparator_order, register_standard_methods
from jmapd.storage import emails, identities
from jmapd.storage import submissions as storage
from jmapd.submission import SUBMISSION, is_address, sending_enabled
from jmapd.submission.queue import enqueue_message
from jmapd.submission.relay import strip_bcc

PROPERTIES = (
    "id",
    "identityId",
    "emailId",
    "threadId",
    "envelope",
    "sendAt",
    "undoStatus",
    "deliveryStatus",
    "dsnBlobIds",
    "mdnBlobIds",
)

#: The smtpReply of a recipient the relay has not been asked about yet.
QUEUED_REPLY = "250 2.0.0 Queued for relaying"

_UNDO_STATUSES = frozenset({"pending", "final", "canceled"})


def _render(submission: storage.Submission) -> dict[str, Any]:
    return {
        "id": submission.id,
        "identityId": submission.identity_id,
        "emailId": submission.email_id,
        "threadId": submission.thread_id,
        "envelope": submission.envelope,
        "sendAt": emails.utc_date(submission.send_at),
        "undoStatus": submission.undo_status,
        "deliveryStatus": submission.delivery_status,
        "dsnBlobIds": submission.dsn_blob_ids,
        "mdnBlobIds": submission.mdn_blob_ids,
    }


# -- envelopes -------------------------------------------------------------------


def _check_address_object(value: Any, what: str) -> dict[str, Any]:
    if (
        not isinstance(value, dict)
        or not set(value) <= {"email", "parameters"}
        or not isinstance(value.get("email"), str)
        or not (
            value.get("parameters") is None
            or (
                isinstance(value["parameters"], dict)
                and all(v is None or isinstance(v, str) for v in value["parameters"].values())
            )
        )
    ):
        raise invalid_properties(
            f"{what} must be an Address object with 'email' (a String) and 'parameters' (an object or null)",
            "envelope",
        )
    return {"email": value["email"], "parameters": value.get("parameters")}


def check_envelope(value: Any) -> dict[str, Any]:
    """
    The shape of an Envelope (RFC 8621 section 7), checked.
    """
    if not isinstance(value, dict) or set(value) != {"mailFrom", "rcptTo"} or not isinstance(value["rcptTo"], list):
        raise invalid_properties("envelope must be an object with mailFrom and rcptTo (an array)", "envelope")
    return {
        "mailFrom": _check_address_object(value["mailFrom"], "envelope/mailFrom"),
        "rcptTo": [_check_address_object(item, "envelope/rcptTo") for item in value["rcptTo"]],
    }


def _header_fields(headers: list[dict[str, str]], name: str) -> list[list[dict[str, Any]]]:
    """
    The address lists of every header field C{name}, in order.
    """
    return [as_addresses(h["value"]) for h in headers if h["name"].lower() == name]


def _sender_addresses(headers: list[dict[str, str]]) -> tuple[list[str], str | None]:
    """
    The From (and Sender) addresses of a message, and the address the
    envelope's mailFrom derives from (RFC 8621 section 7: the Sender, else
    the From).

    @raise SetErrorException: invalidEmail when the message has no single
        From header field or the field the envelope derives from does not
        hold exactly one address.
    """
    froms = _header_fields(headers, "from")
    senders = _header_fields(headers, "sender")
    if len(froms) != 1 or not froms[0]:
        raise set_error(
            "invalidEmail", "the Email needs exactly one From header field with an address", ["from"]
        )
    if len(senders) > 1 or (senders and len(senders[0]) != 1):
        raise set_error("invalidEmail", "the Email's Sender header field must hold exactly one address", ["sender"])
    if not senders and len(froms[0]) != 1:
        raise set_error(
            "invalidEmail", "an Email with several From addresses needs a Sender header field", ["from", "sender"]
        )
    source = senders[0][0]["email"] if senders else froms[0][0]["email"]
    shown = [a["email"] for a in froms[0]] + ([senders[0][0]["email"]] if senders else [])
    return shown, source


def _recipients(headers: list[dict[str, str]]) -> list[str]:
    """
    The deduplicated To, Cc and Bcc addresses (case-insensitively; the
    first spelling is kept).
    """
    found: dict[str, str] = {}
    for name in ("to", "cc", "bcc"):
        for field in _header_fields(headers, name):
            for address in field:
                email = address.get("email") or ""
                found.setdefault(email.lower(), email)
    return list(found.values())


def _future_release(parameters: dict[str, Any] | None, now_ms: int, max_delay: float) -> int | None:
    """
    The release time (ms) asked for by FUTURERELEASE (RFC 4865) parameters
    of the mailFrom, or C{None} when FUTURERELEASE is not used; other
    parameters than HOLDFOR, HOLDUNTIL and SIZE cannot be passed on to the
    relay and are refused.
    """
    parameters = parameters or {}
    unknown = sorted(k for k in parameters if k.upper() not in ("HOLDFOR", "HOLDUNTIL", "SIZE"))
    if unknown:
        raise invalid_properties(f"unsupported mailFrom parameters: {', '.join(unknown)}", "envelope")
    by_name = {k.upper(): v for k, v in parameters.items()}
    if "HOLDFOR" in by_name and "HOLDUNTIL" in by_name:
        raise invalid_properties("HOLDFOR and HOLDUNTIL cannot both be given", "envelope")
    if "HOLDFOR" in by_name:
        value = by_name["HOLDFOR"]
        if not isinstance(value, str) or not value.isascii() or not value.isdigit():
            raise invalid_properties("HOLDFOR must be a number of seconds", "envelope")
        send_at = now_ms + int(value) * 1000
    elif "HOLDUNTIL" in by_name:
        parsed = emails.parse_date_ms(by_name["HOLDUNTIL"])
        if parsed is None:
            raise invalid_properties("HOLDUNTIL must be a date-time such as 2026-01-01T10:00:00Z", "envelope")
        send_at = max(parsed, now_ms)
    else:
        return None
    if send_at - now_ms > max_delay * 1000:
        raise invalid_properties(
            f"the send may be delayed by at most {int(max_delay)} seconds (maxDelayedSend)", "envelope"
        )
    return send_at


# -- the data type -------------------------------------------------------------------


class EmailSubmissionType(DataType):
    name = storage.EMAIL_SUBMISSION
    capability = SUBMISSION
    properties = PROPERTIES
    server_set = frozenset({"id", "threadId", "sendAt", "deliveryStatus", "dsnBlobIds", "mdnBlobIds"})
    immutable = frozenset({"identityId", "emailId", "envelope"})
    methods = ("get", "changes", "set", "query", "queryChanges")

    def count(self, ctx: Context, account_id: str) -> int:
        return storage.count_submissions(ctx.txn, account_id)

    def fetch(
        self, ctx: Context, account_id: str, ids: list[str] | None, properties: frozenset[str], extra: dict[str, Any]
    ) -> list[dict[str, Any]]:
        return [_render(s) for s in storage.get_submissions(ctx.txn, account_id, ids)]

    # -- /set ----------------------------------------------------------------

    def set_arguments(self, args: Arguments) -> dict[str, Any]:
        on_update = args.object(
            "onSuccessUpdateEmail",
            values=lambda v: isinstance(v, dict),
            expected="a map of EmailSubmission ids to PatchObjects",
        )
        on_destroy = args.id_list("onSuccessDestroyEmail")
        return {"on_update": on_update, "on_destroy": on_destroy, "email_ids": {}}

    def do_set(self, ctx: Context, arguments: dict[str, Any]) -> Any:
        """
        The standard /set, then the implicit Email/set that
        onSuccessUpdateEmail and onSuccessDestroyEmail ask for, whose
        response follows.
        """
        args = Arguments(arguments, ctx.method)
        account_id = args.id("accountId")
        if_in_state = args.string("ifInState")
        create = args.object("create", expected="a map of creation ids to objects")
        update = args.object("update", values=lambda v: isinstance(v, dict), expected="a map of ids to PatchObjects")
        destroy = args.id_list("destroy")
        extra = self.set_arguments(args)
        args.done()
        for key in extra["on_update"] or {}:
            if not (is_id(key) or (key.startswith("#") and is_id(key[1:]))):
                raise invalid_arguments(f"onSuccessUpdateEmail: {key!r} is not an EmailSubmission id")
        response = self.run_set(ctx, account_id, if_in_state, create, update, destroy, extra)
        if not extra["on_update"] and not extra["on_destroy"]:
            return response
        succeeded: dict[str, str] = extra["email_ids"]
        email_update: dict[str, Any] = {}
        for key, patch in (extra["on_update"] or {}).items():
            submission_id = ctx.resolve_id(key)
            if submission_id in succeeded:
                email_update.setdefault(succeeded[submission_id], {}).update(patch)
        email_destroy: list[str] = []
        for key in extra["on_destroy"] or ():
            submission_id = ctx.resolve_id(key)
            if submission_id in succeeded and succeeded[submission_id] not in email_destroy:
                email_destroy.append(succeeded[submission_id])
        from jmapd.mail.email import EMAIL_TYPE

        responses = ResponseList([(ctx.method, response)])
        try:
            with ctx.txn.savepoint():
                email_response = EMAIL_TYPE.run_set(
                    ctx, account_id, None, None, email_update or None, email_destroy or None, {}
                )
        except MethodError as e:
            responses.append(("error", e.arguments()))
        else:
            responses.append(("Email/set", email_response))
        return responses

    def create(self, ctx: Context, account_id: str, obj: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
        txn = ctx.txn
        config = ctx.config
        if obj.get("undoStatus", "pending") != "pending":
            raise invalid_properties("undoStatus is pending when an EmailSubmission is created", "undoStatus")
        addresses = identities.account_addresses(txn, account_id)
        if not addresses:
            raise set_error("forbiddenToSend", "this account has no address to send from")
        owned = set(addresses)

        identity_id = obj.get("identityId")
        identity_id = ctx.resolve_id(identity_id) if isinstance(identity_id, str) else None
        found_identity = identities.get_identities(txn, account_id, [identity_id]) if identity_id else []
        if not found_identity:
            raise invalid_properties(f"no Identity {obj.get('identityId')!r}", "identityId")
        identity = found_identity[0]
        if identity.email.lower() not in owned:
            raise set_error("forbiddenFrom", f"this account can no longer send from {identity.email}")

        email_id = obj.get("emailId")
        email_id = ctx.resolve_id(email_id) if isinstance(email_id, str) else None
        rows = emails.get_rows(txn, account_id, [email_id], ["thread_id", "blob_id", "size", "headers"]) if email_id else []
        if email_id is None or not rows:
            raise invalid_properties(f"no Email {obj.get('emailId')!r}", "emailId")
        row = rows[0]
        max_size = config.mail_max_size
        if int(row["size"]) > max_size:
            raise set_error(
                "tooLarge", f"the message is {row['size']} octets; at most {max_size} can be sent", maxSize=max_size
            )
        headers = orjson.loads(row["headers"])
        shown, source = _sender_addresses(headers)
        forbidden = [address for address in shown if address.lower() not in owned]
        if forbidden:
            raise set_error(
                "forbiddenFrom", f"this account cannot send as {', '.join(forbidden)}", ["from"]
            )

        now_ms = int(ctx.now * 1000)
        envelope_given = obj.get("envelope") is not None
        if envelope_given:
            envelope = check_envelope(obj["envelope"])
            mail_from = envelope["mailFrom"]["email"]
            if mail_from.lower() not in owned:
                raise set_error(
                    "forbiddenMailFrom", f"this account cannot use {mail_from!r} as the envelope sender"
                )
            for rcpt in envelope["rcptTo"]:
                if rcpt["parameters"]:
                    raise invalid_properties(
                        f"RCPT TO parameters are not supported: {', '.join(sorted(rcpt['parameters']))}",
                        "envelope",
                    )
        else:
            mail_from = source if source is not None and source.lower() == identity.email.lower() else identity.email
            envelope = {
                "mailFrom": {"email": mail_from, "parameters": None},
                "rcptTo": [{"email": email, "parameters": None} for email in _recipients(headers)],
            }
        recipients: list[str] = []
        for rcpt in envelope["rcptTo"]:
            if rcpt["email"].lower() not in {r.lower() for r in recipients}:
                recipients.append(rcpt["email"])
        if not recipients:
            raise set_error("noRecipients", "the envelope has no recipients")
        invalid = [r for r in recipients if not is_address(r)]
        if invalid:
            raise set_error(
                "invalidRecipients", f"not addresses mail can be sent to: {', '.join(invalid)}", invalidRecipients=invalid
            )
        limit = config.submission_max_recipients
        if len(recipients) > limit:
            raise set_error(
                "tooManyRecipients", f"{len(recipients)} recipients; at most {limit} are allowed", maxRecipients=limit
            )
        parameters = envelope["mailFrom"]["parameters"]
        size = {k.upper(): v for k, v in (parameters or {}).items()}.get("SIZE")
        if size is not None and (not isinstance(size, str) or not size.isdigit() or int(size) > max_size):
            raise set_error("tooLarge", f"SIZE {size} is above the {max_size} octets that can be sent", maxSize=max_size)
        requested = _future_release(parameters, now_ms, config.submission_max_delayed_send)
        # RFC 8621 section 7: with FUTURERELEASE, sendAt MUST be the time
        # the server releases the message, which submission-hold may make
        # later than the time asked for; without it, the creation time.
        held_ms = now_ms + int(config.submission_hold * 1000)
        send_at = now_ms if requested is None else max(requested, held_ms)

        raw = ctx.env.blobs.read(row["blob_id"])
        delivery = {r: {"smtpReply": QUEUED_REPLY, "delivered": "queued", "displayed": "unknown"} for r in recipients}
        submission_id = storage.add_submission(
            txn, account_id, identity.id, email_id, row["thread_id"], envelope, send_at, "pending", delivery
        )
        release_at = max(send_at / 1000, ctx.now + config.submission_hold)
        enqueue_message(
            txn, ctx.env, account_id, submission_id, mail_from, recipients, strip_bcc(raw), ctx.now, release_at
        )
        extra["email_ids"][submission_id] = email_id
        created = {
            "id": submission_id,
            "threadId": row["thread_id"],
            "sendAt": emails.utc_date(send_at),
            "undoStatus": "pending",
            "deliveryStatus": delivery,
            "dsnBlobIds": [],
            "mdnBlobIds": [],
        }
        if not envelope_given:
            created["envelope"] = envelope
        return created

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
        wanted = new.get("undoStatus")
        if wanted not in _UNDO_STATUSES:
            raise invalid_properties("undoStatus must be pending, final or canceled", "undoStatus")
        changed = None
        if wanted != current["undoStatus"]:
            if wanted != "canceled":
                raise invalid_properties("undoStatus can only be changed to canceled", "undoStatus")
            changed = self._cancel(ctx, account_id, object_id, current)
        extra["email_ids"][object_id] = current["emailId"]
        return changed

    def _cancel(
        self, ctx: Context, account_id: str, object_id: str, current: dict[str, Any]
    ) -> dict[str, Any] | None:
        """
        Take a pending submission's message out of the queue.

        @return: the deliveryStatus when the cancel changed it (the
            recipients still queued are now not delivered), which /set
            reports in C{updated} (RFC 8620 section 5.3), or C{None}.
        """
        if current["undoStatus"] != "pending":
            raise set_error("cannotUnsend", f"the submission is {current['undoStatus']}; it cannot be canceled")
        queued = storage.queued_for_submission(ctx.txn, account_id, object_id)
        if queued is None:
            raise set_error("cannotUnsend", "the message has left the queue")
        queue_id, claimed_until = queued
        if claimed_until is not None and claimed_until > ctx.now:
            raise set_error("cannotUnsend", "the message is being relayed")
        storage.remove_queued(ctx.txn, queue_id)
        status = {
            address: {**value, "delivered": "no"} if value.get("delivered") == "queued" else value
            for address, value in (current["deliveryStatus"] or {}).items()
        }
        storage.set_status(ctx.txn, account_id, object_id, undo_status="canceled", delivery_status=status)
        return {"deliveryStatus": status} if status != current["deliveryStatus"] else None

    def destroy(self, ctx: Context, account_id: str, object_id: str, extra: dict[str, Any]) -> None:
        found = storage.get_submissions(ctx.txn, account_id, [object_id])
        if not found:
            raise set_error("notFound", f"no EmailSubmission {object_id!r}")
        storage.destroy_submission(ctx.txn, account_id, object_id)
        extra["email_ids"][object_id] = found[0].email_id

    # -- /query --------------------------------------------------------------

    def query(
        self, ctx: Context, account_id: str, filter: Any, sort: list[dict[str, Any]], extra: dict[str, Any]
    ) -> list[str]:
        where, params = _filter_sql(ctx, filter) if filter is not None else ("1 = 1", [])
        order = []
        for comparator in sort:
            unknown = set(comparator) - {"property", "isAscending", "collation"}
            if unknown:
                raise invalid_arguments(f"unknown Comparator properties: {', '.join(sorted(unknown))}")
            column = storage.SORT_COLUMNS.get(comparator["property"])
            if column is None:
                raise MethodError("unsupportedSort", f"EmailSubmissions cannot be sorted by {comparator['property']!r}")
            # Ids and dates ignore the collation, but one the server does
            # not know is still unsupportedSort (RFC 8620 section 5.5).
            ascending, _ = comparator_order(comparator)
            order.append((column, ascending))
        return storage.query_submissions(ctx.txn, account_id, where, params, order)


_ID_LIST_CONDITIONS = {"identityIds": "identity_id", "emailIds": "email_id", "threadIds": "thread_id"}


def _filter_sql(ctx: Context, filter: Any) -> tuple[str, list[Any]]:
    """
    The SQL condition of an EmailSubmission/query filter (RFC 8621 section
    7.3).
    """
    if not isinstance(filter, dict):
        raise invalid_arguments("a filter must be a FilterOperator or FilterCondition object")
    if "operator" in filter:
        operator = filter["operator"]
        conditions = filter.get("conditions")
        if set(filter) != {"operator", "conditions"} or operator not in ("AND", "OR", "NOT") or not isinstance(
            conditions, list
        ):
            raise invalid_arguments("a FilterOperator has operator AND, OR or NOT and an array of conditions")
        if not conditions:
            return ("1 = 1" if operator != "OR" else "1 = 0"), []
        parts, params = [], []
        for condition in conditions:
            sql, values = _filter_sql(ctx, condition)
            parts.append(f"({sql})")
            params.extend(values)
        if operator == "NOT":
            return f"NOT ({' OR '.join(parts)})", params
        return f" {operator} ".join(parts), params
    parts, params = [], []
    for name, value in filter.items():
        if name in _ID_LIST_CONDITIONS:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise invalid_arguments(f"{name} must be an array of Ids")
            ids = [ctx.resolve_id(v) or v for v in value]
            if not ids:
                parts.append("1 = 0")
                continue
            parts.append(f"{_ID_LIST_CONDITIONS[name]} IN ({', '.join('?' * len(ids))})")
            params.extend(ids)
        elif name == "undoStatus":
            if not isinstance(value, str):
                raise invalid_arguments("undoStatus must be a String")
            parts.append("undo_status = ?")
            params.append(value)
        elif name in ("before", "after"):
            ms = emails.parse_date_ms(value, utc_only=True)
            if ms is None:
                raise invalid_arguments(f"{name} must be a UTCDate")
            parts.append("send_at < ?" if name == "before" else "send_at >= ?")
            params.append(ms)
        else:
            raise MethodError("unsupportedFilter", f"unknown EmailSubmission filter condition {name!r}")
    return (" AND ".join(parts) or "1 = 1"), params


EMAIL_SUBMISSION_TYPE = EmailSubmissionType()


def register(registry: Registry, config: Any) -> None:
    """
    Add the submission capability and the EmailSubmission methods, when
    sending is on (C{smtp-relay-host} is set).
    """
    if not sending_enabled(config):
        return
    from jmapd.mail import identity

    identity.add_capability(registry)
    register_standard_methods(registry, EMAIL_SUBMISSION_TYPE)
