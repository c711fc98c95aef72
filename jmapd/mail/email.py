# -*- test-case-name: tests.mail.test_email_get -*-
"""
The Email data type (RFC 8621 section 4): Email/get, /changes, /set,
/copy, /import and /parse.

Email/get answers list properties from the columns written at ingest (see
L{jmapd.storage.emails}); header fields in any form come from the stored
header list; only C{bodyValues} reads the message bytes.  The same
rendering serves Email/parse, whose Emails come from a fresh parse of a
blob instead of the database.

Body parts have blob ids of their own, derived from the message's:
C{<message blobId>_<partId with "." as "-">}.  L{resolve_blob} turns such
an id (or a plain one) into the octets an account may read, which is what
downloads, Blob/copy, Email/import, Email/parse of attached messages and
attachments of new Emails need.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import partial
from typing import Any
from urllib.parse import urlparse

import orjson
from attrs import frozen

from jmapd import sharing
from jmapd.mail import MAIL
from jmapd.mime.body import body_value, decode_part
from jmapd.mime.build import BuildError, build_message
from jmapd.mime.headers import PARSED_FORMS, form_allowed, parse_header_property
from jmapd.mime.parse import parse_message
from jmapd.protocol.arguments import Arguments, is_id
from jmapd.protocol.caching import cached_ids
from jmapd.protocol.engine import Context, Registry
from jmapd.protocol.errors import (
    MethodError,
    SetErrorException,
    invalid_arguments,
    invalid_properties,
    set_error,
)
from jmapd.protocol.patch import apply_patch
from jmapd.protocol.standard import DataType, register_standard_methods
from jmapd.storage import blobs as blob_storage
from jmapd.storage import changelog, emails, mailboxes, search
from jmapd.storage import principals as principal_storage

#: Every Email property (RFC 8621 section 4.1); header:* come on top.
PROPERTIES = (
    "id",
    "blobId",
    "threadId",
    "mailboxIds",
    "keywords",
    "size",
    "receivedAt",
    "headers",
    "messageId",
    "inReplyTo",
    "references",
    "sender",
    "from",
    "to",
    "cc",
    "bcc",
    "replyTo",
    "subject",
    "sentAt",
    "bodyStructure",
    "bodyValues",
    "textBody",
    "htmlBody",
    "attachments",
    "hasAttachment",
    "preview",
)

#: Email/get's properties when the client gives none (section 4.2).
DEFAULT_PROPERTIES = (
    "id",
    "blobId",
    "threadId",
    "mailboxIds",
    "keywords",
    "size",
    "receivedAt",
    "messageId",
    "inReplyTo",
    "references",
    "sender",
    "from",
    "to",
    "cc",
    "bcc",
    "replyTo",
    "subject",
    "sentAt",
    "hasAttachment",
    "preview",
    "bodyValues",
    "textBody",
    "htmlBody",
    "attachments",
)

#: Email/parse's default properties (section 4.9): Email/get's, without the
#: ones only a stored Email has.
PARSE_DEFAULT_PROPERTIES = tuple(
    name
    for name in DEFAULT_PROPERTIES
    if name not in ("id", "blobId", "threadId", "mailboxIds", "keywords", "size", "receivedAt")
)

#: Every EmailBodyPart property; header:* come on top.
BODY_PROPERTIES = (
    "partId",
    "blobId",
    "size",
    "headers",
    "name",
    "type",
    "charset",
    "disposition",
    "cid",
    "language",
    "location",
    "subParts",
)

#: The default bodyProperties (section 4.2).  bodyStructure also gets
#: subParts by default: without them the structure is not a tree.
DEFAULT_BODY_PROPERTIES = (
    "partId",
    "blobId",
    "size",
    "name",
    "type",
    "charset",
    "disposition",
    "cid",
    "language",
    "location",
)

#: Metadata that Email/parse reports as null (section 4.9).
_PARSE_NULL = frozenset({"id", "mailboxIds", "keywords", "receivedAt", "threadId"})

#: Properties a client may change after creation.
MUTABLE = frozenset({"mailboxIds", "keywords"})

_ADDRESS_PROPERTIES = ("sender", "from", "to", "cc", "bcc", "replyTo")

#: The email table columns each property needs.
_COLUMNS_FOR: dict[str, tuple[str, ...]] = {
    "blobId": ("blob_id",),
    "threadId": ("thread_id",),
    "size": ("size",),
    "receivedAt": ("received_at",),
    "sentAt": ("sent_at",),
    "subject": ("subject",),
    "hasAttachment": ("has_attachment",),
    "preview": ("preview",),
    "messageId": ("message_id",),
    "inReplyTo": ("in_reply_to",),
    "references": ("refs",),
    "headers": ("headers",),
    "bodyStructure": ("structure", "blob_id"),
    "textBody": ("structure", "blob_id"),
    "htmlBody": ("structure", "blob_id"),
    "attachments": ("structure", "blob_id"),
    "bodyValues": ("structure", "blob_id"),
    **{name: ("addresses",) for name in _ADDRESS_PROPERTIES},
}

# RFC 8621 section 4.1.1: %x21-%x7e without ( ) { ] % * " \
_KEYWORD = re.compile(r'[\x21-\x7e]{1,255}')
_KEYWORD_FORBIDDEN = frozenset('(){]%*"\\')


# -- blob ids of body parts ----------------------------------------------------


def part_blob_id(blob_id: str, part_id: str) -> str:
    """
    The blob id of a leaf part of the message C{blob_id}.
    """
    return f"{blob_id}_{part_id.replace('.', '-')}"


def _walk(part: dict[str, Any] | None) -> Iterable[dict[str, Any]]:
    if part is None:
        return
    yield part
    for sub in part.get("subParts") or ():
        yield from _walk(sub)


def _parts_by_id(structure: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {part["partId"]: part for part in _walk(structure.get("bodyStructure")) if part.get("partId") is not None}


def resolve_blob(txn: Any, env: Any, account_id: str, blob_id: str) -> bytes | None:
    """
    The octets of C{blob_id} as the account may read them: a blob it has
    (uploaded, or the message of one of its Emails), or a body part of
    such a message (C{<blobId>_<partId>}, any depth: parts of an attached
    message are parts of the part's blob), transfer-decoded.  C{None}
    when there is no such blob or the account may not read it.

    Runs in a worker thread (it reads files).
    """
    if not is_id(blob_id):
        return None
    container_id, separator, part = blob_id.rpartition("_")
    if not separator:
        if blob_storage.get_blob(txn, account_id, blob_id) is None or not env.blobs.exists(blob_id):
            return None
        data: bytes = env.blobs.read(blob_id)
        return data
    if not part:
        return None
    container = resolve_blob(txn, env, account_id, container_id)
    if container is None:
        return None
    structure = None
    if "_" not in container_id:
        structure = emails.find_blob_email(txn, account_id, container_id)
    if structure is None:
        try:
            structure = emails.structure_of(parse_message(container))
        except Exception:
            return None
    found = _parts_by_id(structure).get(part.replace("-", "."))
    if found is None or found.get("subParts") is not None or "_offset" not in found:
        return None
    return decode_part(container, found)


def may_read_blob(ctx: Context, account_id: str, blob_id: str) -> bool:
    """
    The blob check of sharing: a blob of someone else's account (or a part
    of it) is readable when an Email in a Mailbox with mayReadItems for
    the principal is that message.
    """
    allowed = sharing.readable(ctx, account_id)
    if allowed is None:
        return True
    return bool(emails.blob_mailbox_ids(ctx.txn, account_id, blob_id.split("_", 1)[0]) & allowed)


def resolve_for(ctx: Context, account_id: str, blob_id: str) -> bytes | None:
    """
    L{resolve_blob} for the principal of a method call: C{None} also for a
    blob of a shared account they may not read.
    """
    if not ctx.env.registry.may_read_blob(ctx, account_id, blob_id):
        return None
    return resolve_blob(ctx.txn, ctx.env, account_id, blob_id)


def check_may_add(ctx: Context, account_id: str, mailbox_ids: Iterable[str], keywords: Iterable[str]) -> None:
    """
    In a shared account: adding an Email to a Mailbox needs mayAddItems
    there, and giving it keywords maySetSeen ($seen) or maySetKeywords on
    every one of its Mailboxes (RFC 8621 section 2: "for all of the
    Mailboxes").

    @raise SetErrorException: forbidden.
    """
    rights = sharing.ctx_rights(ctx, account_id)
    if rights is None:
        return
    mailbox_ids = list(mailbox_ids)
    for mailbox_id in mailbox_ids:
        if "mayAddItems" not in rights.get(mailbox_id, frozenset()):
            raise set_error("forbidden", f"you may not add Emails to Mailbox {mailbox_id}", ["mailboxIds"])
    keywords = set(keywords)
    if "$seen" in keywords and not _on_all(rights, mailbox_ids, "maySetSeen"):
        raise set_error("forbidden", "you may not set $seen here", ["keywords"])
    if keywords - {"$seen"} and not _on_all(rights, mailbox_ids, "maySetKeywords"):
        raise set_error("forbidden", "you may not set keywords here", ["keywords"])


def _on_all(rights: dict[str, frozenset[str]], mailbox_ids: Iterable[str], right: str) -> bool:
    return all(right in rights.get(m, frozenset()) for m in mailbox_ids)


def check_may_change(
    ctx: Context,
    account_id: str,
    old_mailboxes: Iterable[str],
    new_mailboxes: Iterable[str] | None,
    old_keywords: Iterable[str],
    new_keywords: Iterable[str] | None,
) -> None:
    """
    In a shared account: a change of an Email's Mailboxes needs
    mayAddItems on each Mailbox it joins and mayRemoveItems on each it
    leaves; a change of $seen needs maySetSeen, of other keywords
    maySetKeywords, on every Mailbox it is in (RFC 8621 section 2; before
    and after a move, so a move cannot dodge the rule).

    @raise SetErrorException: forbidden.
    """
    rights = sharing.ctx_rights(ctx, account_id)
    if rights is None:
        return
    old_set = set(old_mailboxes)
    if new_mailboxes is not None:
        new_set = set(new_mailboxes)
        for mailbox_id in sorted(new_set - old_set):
            if "mayAddItems" not in rights.get(mailbox_id, frozenset()):
                raise set_error("forbidden", f"you may not add Emails to Mailbox {mailbox_id}", ["mailboxIds"])
        for mailbox_id in sorted(old_set - new_set):
            if "mayRemoveItems" not in rights.get(mailbox_id, frozenset()):
                raise set_error(
                    "forbidden", f"you may not remove Emails from Mailbox {mailbox_id}", ["mailboxIds"]
                )
    if new_keywords is not None:
        changed = set(old_keywords) ^ set(new_keywords)
        every = old_set | set(new_mailboxes or ())
        if "$seen" in changed and not _on_all(rights, every, "maySetSeen"):
            raise set_error("forbidden", "you may not change $seen of this Email", ["keywords"])
        if changed - {"$seen"} and not _on_all(rights, every, "maySetKeywords"):
            raise set_error("forbidden", "you may not change the keywords of this Email", ["keywords"])


def record_sight(
    txn: Any,
    account_id: str,
    email_ids: Iterable[str],
    mailbox_ids: Iterable[str],
    thread_ids: Iterable[str] | None = None,
    readers: set[str] | None = None,
) -> None:
    """
    These Emails (just) joined or left these Mailboxes, or were destroyed
    out of them: whoever may read one of those Mailboxes may have gained
    or lost sight of the Emails and of their Threads (see
    L{jmapd.sharing.hide_changes}).  A move does not change the Thread
    itself, so the Thread state is moved for the grantees to look.

    @param readers: who may read those Mailboxes, when the caller knows.
    """
    email_ids = list(email_ids)
    if readers is None:
        readers = principal_storage.grantees(txn, account_id, mailbox_ids, principal_storage.READ)
    if not readers or not email_ids:
        return
    if thread_ids is None:
        thread_ids = {row["thread_id"] for row in emails.get_rows(txn, account_id, email_ids, ["thread_id"])}
    principal_storage.record_sight(
        txn, account_id, emails.EMAIL, readers, email_ids, changelog.get_modseq(txn, account_id, emails.EMAIL)
    )
    principal_storage.record_sight(
        txn, account_id, emails.THREAD, readers, thread_ids, changelog.touch_state(txn, account_id, emails.THREAD)
    )


# -- checking what clients send ------------------------------------------------


def is_keyword(value: Any) -> bool:
    """
    Whether C{value} is a keyword as RFC 8621 section 4.1.1 defines one.
    """
    return (
        isinstance(value, str)
        and bool(_KEYWORD.fullmatch(value))
        and not (_KEYWORD_FORBIDDEN & set(value))
    )


def check_keywords(ctx: Context, value: Any) -> list[str]:
    """
    The keywords of a C{keywords} value, lower case.

    @raise SetErrorException: invalidProperties or tooManyKeywords.
    """
    if value is None:
        value = {}
    if not isinstance(value, dict) or not all(v is True for v in value.values()):
        raise invalid_properties("keywords must be a map of keywords to true", "keywords")
    bad = [k for k in value if not is_keyword(k)]
    if bad:
        raise invalid_properties(f"not valid keywords: {', '.join(sorted(map(repr, bad)))}", "keywords")
    keywords = sorted({k.lower() for k in value})
    limit = ctx.config.mail_max_keywords_per_email
    if len(keywords) > limit:
        raise set_error("tooManyKeywords", f"{len(keywords)} keywords; at most {limit} are allowed", ["keywords"])
    return keywords


def check_mailbox_ids(ctx: Context, account_id: str, value: Any) -> list[str]:
    """
    The Mailbox ids of a C{mailboxIds} value, C{#creationId}s resolved and
    each checked to exist.

    @raise SetErrorException: invalidProperties or tooManyMailboxes.
    """
    if not isinstance(value, dict) or not all(v is True for v in value.values()):
        raise invalid_properties("mailboxIds must be a map of Mailbox ids to true", "mailboxIds")
    if not value:
        raise invalid_properties("an Email must be in at least one Mailbox", "mailboxIds")
    existing = cached_ids(
        ctx, account_id, (mailboxes.TYPE_NAME,), "mailbox-ids",
        lambda: frozenset(mailboxes.mailbox_ids(ctx.txn, account_id)),
    )
    resolved = []
    for given in value:
        mailbox_id = ctx.resolve_id(given) if isinstance(given, str) else None
        if mailbox_id is None or mailbox_id not in existing:
            raise invalid_properties(f"no Mailbox {given!r}", "mailboxIds")
        resolved.append(mailbox_id)
    found = sorted(set(resolved))
    limit = ctx.config.mail_max_mailboxes_per_email
    if len(found) > limit:
        raise set_error(
            "tooManyMailboxes", f"{len(found)} Mailboxes; an Email may be in at most {limit}", ["mailboxIds"]
        )
    return found


def check_received_at(value: Any, default: int) -> int:
    if value is None:
        return default
    ms = emails.parse_date_ms(value, utc_only=True)
    if ms is None:
        raise invalid_properties(f"receivedAt must be a UTCDate, got {value!r}", "receivedAt")
    return ms


def _header_property(name: str) -> tuple[str, str, bool] | None:
    """
    The (field, form, all) of a header:* property whose form is allowed
    for its field, else C{None}.
    """
    parsed = parse_header_property(name)
    if parsed is None or not form_allowed(parsed[0], parsed[1]):
        return None
    return parsed


def is_email_property(name: str) -> bool:
    return name in PROPERTIES or (name.startswith("header:") and _header_property(name) is not None)


def is_body_property(name: str) -> bool:
    return name in BODY_PROPERTIES or (name.startswith("header:") and _header_property(name) is not None)


# -- rendering -------------------------------------------------------------------


@frozen
class BodyOptions:
    """
    How body parts and values are shown: the /get and /parse arguments.
    """

    body_properties: tuple[str, ...] | None = None
    fetch_text: bool = False
    fetch_html: bool = False
    fetch_all: bool = False
    max_bytes: int = 0


def read_body_options(args: Arguments) -> dict[str, Any]:
    """
    The body arguments of Email/get and Email/parse, checked.
    """
    body_properties = args.string_list("bodyProperties")
    options = BodyOptions(
        body_properties=None if body_properties is None else tuple(body_properties),
        fetch_text=args.boolean("fetchTextBodyValues"),
        fetch_html=args.boolean("fetchHTMLBodyValues"),
        fetch_all=args.boolean("fetchAllBodyValues"),
        max_bytes=args.unsigned_int("maxBodyValueBytes", 0, nullable=False),
    )
    if body_properties is not None:
        unknown = [p for p in body_properties if not is_body_property(p)]
        if unknown:
            raise invalid_arguments(f"unknown or not allowed EmailBodyPart properties: {', '.join(unknown)}")
    return {"body": options}


def header_value(headers: list[dict[str, str]], name: str) -> Any:
    """
    The value of property C{name} (C{header:Field[:asForm][:all]}) from a
    header list with Raw values.
    """
    parsed = _header_property(name)
    assert parsed is not None
    field, form, want_all = parsed
    convert: Callable[[str], Any] = PARSED_FORMS[form]
    lower = field.lower()
    values = [convert(h["value"]) for h in headers if h["name"].lower() == lower]
    if want_all:
        return values
    return values[-1] if values else None


def render_part(part: dict[str, Any], properties: Iterable[str], blob_id: str | None) -> dict[str, Any]:
    """
    An EmailBodyPart with the given properties (stored private keys
    such as offsets never leave).
    """
    properties = tuple(properties)
    is_multipart = part.get("subParts") is not None
    out: dict[str, Any] = {}
    for name in properties:
        if name == "blobId":
            part_id = part.get("partId")
            out[name] = None if is_multipart or part_id is None or blob_id is None else part_blob_id(blob_id, part_id)
        elif name == "subParts":
            if is_multipart:
                out[name] = [render_part(sub, properties, blob_id) for sub in part["subParts"]]
            else:
                out[name] = None
        elif name == "headers":
            out[name] = [{"name": h["name"], "value": h["value"]} for h in part.get("headers") or ()]
        elif name.startswith("header:"):
            out[name] = header_value(part.get("headers") or [], name)
        else:
            out[name] = part.get(name)
    return out


def render_email(
    values: dict[str, Any],
    wanted: Iterable[str],
    headers: Callable[[], list[dict[str, str]]],
    structure: Callable[[], dict[str, Any]],
    raw: Callable[[], bytes],
    blob_id: str | None,
    options: BodyOptions,
) -> dict[str, Any]:
    """
    An Email object with the properties C{wanted}: plain ones from
    C{values}, header fields from C{headers()}, body properties from
    C{structure()}, body values from the message C{raw()} (each called
    only when needed).
    """
    out: dict[str, Any] = {}
    parts: dict[str, dict[str, Any]] | None = None
    body_properties = options.body_properties
    for name in wanted:
        if name in values:
            out[name] = values[name]
        elif name == "headers":
            out[name] = [{"name": h["name"], "value": h["value"]} for h in headers()]
        elif name.startswith("header:"):
            out[name] = header_value(headers(), name)
        elif name == "bodyStructure":
            root = structure()["bodyStructure"]
            props = body_properties if body_properties is not None else DEFAULT_BODY_PROPERTIES + ("subParts",)
            out[name] = None if root is None else render_part(root, props, blob_id)
        elif name in ("textBody", "htmlBody", "attachments"):
            if parts is None:
                parts = _parts_by_id(structure())
            props = body_properties if body_properties is not None else DEFAULT_BODY_PROPERTIES
            out[name] = [render_part(parts[p], props, blob_id) for p in structure()[name] if p in parts]
        elif name == "bodyValues":
            if parts is None:
                parts = _parts_by_id(structure())
            out[name] = _body_values(structure(), parts, raw, options)
    return out


def _body_values(
    structure: dict[str, Any], parts: dict[str, dict[str, Any]], raw: Callable[[], bytes], options: BodyOptions
) -> dict[str, Any]:
    chosen: list[str] = []
    if options.fetch_all:
        chosen.extend(parts)
    else:
        if options.fetch_text:
            chosen.extend(structure["textBody"])
        if options.fetch_html:
            chosen.extend(structure["htmlBody"])
    values: dict[str, Any] = {}
    for part_id in dict.fromkeys(chosen):
        part = parts.get(part_id)
        if part is None or part.get("subParts") is not None or not str(part.get("type", "")).startswith("text/"):
            continue
        values[part_id] = body_value(raw(), part, options.max_bytes)
    return values


def _cached(load: Callable[[], Any]) -> Callable[[], Any]:
    box: list[Any] = []

    def get() -> Any:
        if not box:
            box.append(load())
        return box[0]

    return get


def _constant(value: Any) -> Any:
    return value


def _loads(text: Any) -> Any:
    return None if text is None else orjson.loads(text)


# -- the data type -------------------------------------------------------------


class EmailType(DataType):
    name = "Email"
    capability = MAIL
    properties = PROPERTIES
    server_set = frozenset({"id", "blobId", "threadId", "size", "hasAttachment", "preview"})
    immutable = frozenset(PROPERTIES) - MUTABLE - {"id"}
    methods = ("get", "changes", "set", "copy")

    # -- /get ------------------------------------------------------------

    def is_property(self, name: str) -> bool:
        return is_email_property(name)

    def do_get(self, ctx: Context, arguments: dict[str, Any]) -> dict[str, Any]:
        if arguments.get("properties") is None:
            # Not every property: the RFC's default list (section 4.2).
            arguments = {**arguments, "properties": list(DEFAULT_PROPERTIES)}
        return super().do_get(ctx, arguments)

    def get_arguments(self, args: Arguments) -> dict[str, Any]:
        return read_body_options(args)

    def count(self, ctx: Context, account_id: str) -> int:
        if account_id != ctx.principal.account_id:
            return len(self.fetch(ctx, account_id, None, frozenset({"id"}), {}))
        return emails.count_emails(ctx.txn, account_id)

    def do_changes(self, ctx: Context, arguments: dict[str, Any]) -> dict[str, Any]:
        """
        In a shared account, only Emails the user may read; one that went
        out of reach is reported destroyed, and no other
        (L{jmapd.sharing.hide_changes}).
        """
        response = super().do_changes(ctx, arguments)
        account_id = response["accountId"]
        return sharing.hide_changes(
            ctx, arguments, response, self.name, partial(self.visible_ids, ctx, account_id)
        )

    def visible_ids(self, ctx: Context, account_id: str, ids: list[str]) -> set[str]:
        """
        Which of these Emails exist and the principal may read.
        """
        return {e["id"] for e in self.fetch(ctx, account_id, ids, frozenset({"id"}), {})}

    def fetch(
        self, ctx: Context, account_id: str, ids: list[str] | None, properties: frozenset[str], extra: dict[str, Any]
    ) -> list[dict[str, Any]]:
        options: BodyOptions = extra.get("body") or BodyOptions()
        columns: set[str] = set()
        for name in properties:
            columns.update(_COLUMNS_FOR.get(name, ("headers",) if name.startswith("header:") else ()))
        rows = emails.get_rows(ctx.txn, account_id, ids, sorted(columns))
        found_ids = [row["id"] for row in rows]
        rights = sharing.ctx_rights(ctx, account_id)
        if rights is not None:
            # Someone else's account: only Emails in a Mailbox they may
            # read, showing only those Mailboxes (RFC 8621 section 2:
            # mayReadItems is what lets a Mailbox be in mailboxIds).
            readable = {m for m, r in rights.items() if "mayReadItems" in r}
            every = emails.get_mailbox_ids(ctx.txn, account_id, found_ids)
            rows = [row for row in rows if readable & set(every[row["id"]])]
            found_ids = [row["id"] for row in rows]
            mailbox_ids = {i: {m: True for m in every[i] if m in readable} for i in found_ids}
        elif "mailboxIds" in properties:
            mailbox_ids = emails.get_mailbox_ids(ctx.txn, account_id, found_ids)
        else:
            mailbox_ids = {}
        keywords = emails.get_keywords(ctx.txn, account_id, found_ids) if "keywords" in properties else {}
        result = []
        for row in rows:
            values = _row_values(row, properties)
            if "mailboxIds" in properties:
                values["mailboxIds"] = mailbox_ids[row["id"]]
            if "keywords" in properties:
                values["keywords"] = keywords[row["id"]]
            blob_id = row.get("blob_id")
            obj = render_email(
                values,
                properties,
                _cached(partial(_loads, row.get("headers"))),
                _cached(partial(_loads, row.get("structure"))),
                _cached(partial(ctx.env.blobs.read, blob_id)),
                blob_id,
                options,
            )
            obj["id"] = row["id"]
            result.append(obj)
        return result

    # -- /set --------------------------------------------------------------

    def create(self, ctx: Context, account_id: str, obj: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
        return create_email(ctx, account_id, obj).to_json()

    def _update_one(
        self, ctx: Context, account_id: str, object_id: str, patch: dict[str, Any], extra: dict[str, Any]
    ) -> dict[str, Any] | None:
        # Only mailboxIds and keywords may change: read just those instead
        # of the whole Email the generic version fetches.
        if not self.fetch(ctx, account_id, [object_id], frozenset({"id"}), {}):
            raise set_error("notFound", f"no Email {object_id!r}")
        current = {
            "mailboxIds": emails.get_mailbox_ids(ctx.txn, account_id, [object_id])[object_id],
            "keywords": emails.get_keywords(ctx.txn, account_id, [object_id])[object_id],
        }
        normalised: dict[str, Any] = {}
        for path, value in patch.items():
            top, slash, rest = path.partition("/") if isinstance(path, str) else ("", "", "")
            if top not in MUTABLE:
                known = top if is_email_property(top) else path
                raise invalid_properties(f"{known!r} cannot be changed", known)
            if slash and top == "keywords":
                path = f"keywords/{rest.lower()}"
                if value is not None and value is not True:
                    raise invalid_properties("a keyword's value must be true (or null to remove it)", "keywords")
                if not is_keyword(rest):
                    raise invalid_properties(f"{rest!r} is not a valid keyword", "keywords")
            elif slash and top == "mailboxIds":
                resolved = ctx.resolve_id(rest) if rest else None
                if value is not None and value is not True:
                    raise invalid_properties("a Mailbox id's value must be true (or null)", "mailboxIds")
                if resolved is None:
                    raise invalid_properties(f"no Mailbox {rest!r}", "mailboxIds")
                path = f"mailboxIds/{resolved}"
            normalised[path] = value
        new, touched = apply_patch(current, normalised)
        keywords = check_keywords(ctx, new["keywords"]) if "keywords" in touched else None
        mailbox_ids = check_mailbox_ids(ctx, account_id, new["mailboxIds"]) if "mailboxIds" in touched else None
        stored = set(current["mailboxIds"])
        if account_id != ctx.principal.account_id:
            stored = set(emails.get_mailbox_ids(ctx.txn, account_id, [object_id])[object_id])
            if mailbox_ids is not None:
                # Mailboxes the sharee cannot see stay as they are.
                hidden = stored - set(current["mailboxIds"])
                mailbox_ids = sorted(set(mailbox_ids) | hidden)
            check_may_change(ctx, account_id, stored, mailbox_ids, current["keywords"], keywords)
        emails.update_email(ctx.txn, account_id, object_id, mailbox_ids=mailbox_ids, keywords=keywords)
        if mailbox_ids is not None:
            record_sight(ctx.txn, account_id, [object_id], stored ^ set(mailbox_ids))
        return None

    def destroy(self, ctx: Context, account_id: str, object_id: str, extra: dict[str, Any]) -> None:
        rights = sharing.ctx_rights(ctx, account_id)
        member_of = emails.get_mailbox_ids(ctx.txn, account_id, [object_id])[object_id]
        if rights is not None:
            for mailbox_id in member_of:
                if "mayRemoveItems" not in rights.get(mailbox_id, frozenset()):
                    raise set_error("forbidden", f"you may not remove Email {object_id} from its Mailboxes")
        readers = principal_storage.grantees(ctx.txn, account_id, member_of, principal_storage.READ)
        threads = (
            {row["thread_id"] for row in emails.get_rows(ctx.txn, account_id, [object_id], ["thread_id"])}
            if readers
            else set()
        )
        if not emails.destroy_email(ctx.txn, account_id, object_id, ctx.now, ctx.config.blob_temp_ttl):
            raise set_error("notFound", f"no Email {object_id!r}")
        record_sight(ctx.txn, account_id, [object_id], member_of, threads, readers)

    # -- /copy ---------------------------------------------------------------

    def copy(
        self, ctx: Context, from_account_id: str, account_id: str, source: dict[str, Any], overrides: dict[str, Any]
    ) -> dict[str, Any]:
        fixed = sorted(set(overrides) - {"mailboxIds", "keywords", "receivedAt"})
        if fixed:
            raise invalid_properties(
                f"only mailboxIds, keywords and receivedAt may be set on a copy: {', '.join(fixed)}", *fixed
            )
        loaded = emails.load_record(ctx.txn, from_account_id, source["id"])
        if loaded is None:
            raise set_error("notFound", f"no Email {source['id']!r} in {from_account_id}")
        record, received_at, source_mailboxes, source_keywords = loaded
        mailbox_ids = check_mailbox_ids(ctx, account_id, overrides.get("mailboxIds", source_mailboxes))
        keywords = check_keywords(ctx, overrides.get("keywords", source_keywords))
        received_at = check_received_at(overrides.get("receivedAt"), received_at)
        check_may_add(ctx, account_id, mailbox_ids, keywords)
        blob_storage.add_blob(
            ctx.txn, account_id, record.blob_id, record.size, "message/rfc822", ctx.now, None
        )
        created = emails.insert_email(ctx.txn, account_id, record, mailbox_ids, keywords, received_at)
        search.copy_email(ctx.txn, ctx.env.blobs, from_account_id, source["id"], account_id, created.id)
        return created.to_json()


def _row_values(row: dict[str, Any], properties: frozenset[str]) -> dict[str, Any]:
    """
    The plain (column) properties of an Email row.
    """
    values: dict[str, Any] = {}
    if "blobId" in properties:
        values["blobId"] = row["blob_id"]
    if "threadId" in properties:
        values["threadId"] = row["thread_id"]
    if "size" in properties:
        values["size"] = int(row["size"])
    if "receivedAt" in properties:
        values["receivedAt"] = emails.utc_date(row["received_at"])
    if "sentAt" in properties:
        values["sentAt"] = row["sent_at"]
    if "subject" in properties:
        values["subject"] = row["subject"]
    if "hasAttachment" in properties:
        values["hasAttachment"] = bool(row["has_attachment"])
    if "preview" in properties:
        values["preview"] = row["preview"]
    if "messageId" in properties:
        values["messageId"] = _loads(row["message_id"])
    if "inReplyTo" in properties:
        values["inReplyTo"] = _loads(row["in_reply_to"])
    if "references" in properties:
        values["references"] = _loads(row["refs"])
    if any(name in properties for name in _ADDRESS_PROPERTIES):
        addresses = _loads(row["addresses"])
        for name in _ADDRESS_PROPERTIES:
            if name in properties:
                values[name] = addresses.get(name)
    return values


def _parsed_values(parsed: dict[str, Any], blob_id: str, wanted: Iterable[str]) -> dict[str, Any]:
    """
    The plain properties of an Email/parse result.
    """
    values: dict[str, Any] = {}
    for name in wanted:
        if name in _PARSE_NULL:
            values[name] = None
        elif name == "blobId":
            values[name] = blob_id
        elif name == "size":
            values[name] = int(parsed["size"])
        elif name == "hasAttachment":
            values[name] = bool(parsed.get("hasAttachment"))
        elif name == "preview":
            values[name] = parsed.get("preview") or ""
        elif name in ("messageId", "inReplyTo", "references", "subject", "sentAt") + _ADDRESS_PROPERTIES:
            values[name] = parsed.get(name)
    return values


# -- Email/set create ----------------------------------------------------------------


def _hostname(config: Any) -> str:
    url = getattr(config, "jmap_url", None)
    host = urlparse(url).hostname if url else None
    return host or "localhost"


def _part_blob_ids(obj: dict[str, Any]) -> list[str]:
    """
    Every blobId an Email to create refers to in its body parts.
    """
    found: list[str] = []

    def visit(part: Any) -> None:
        if not isinstance(part, dict):
            return
        blob_id = part.get("blobId")
        if isinstance(blob_id, str):
            found.append(blob_id)
        for sub in part.get("subParts") or ():
            visit(sub)

    visit(obj.get("bodyStructure"))
    for name in ("textBody", "htmlBody", "attachments"):
        value = obj.get(name)
        if isinstance(value, list):
            for part in value:
                visit(part)
    return list(dict.fromkeys(found))


def create_email(ctx: Context, account_id: str, obj: dict[str, Any]) -> emails.Created:
    """
    Email/set create: build the message from the Email object (RFC 8621
    section 4.6), store it and make it an Email.
    """
    if "headers" in obj:
        raise invalid_properties("set each header field as its own property, not 'headers'", "headers")
    if "mailboxIds" not in obj:
        raise invalid_properties("mailboxIds is required", "mailboxIds")
    mailbox_ids = check_mailbox_ids(ctx, account_id, obj["mailboxIds"])
    keywords = check_keywords(ctx, obj.get("keywords"))
    check_may_add(ctx, account_id, mailbox_ids, keywords)
    now = ctx.now
    received_at = check_received_at(obj.get("receivedAt"), int(now * 1000))
    blob_ids = _part_blob_ids(obj)
    contents: dict[str, bytes] = {}
    missing = []
    for blob_id in blob_ids:
        data = resolve_for(ctx, account_id, blob_id)
        if data is None:
            missing.append(blob_id)
        else:
            contents[blob_id] = data
    if missing:
        raise set_error("blobNotFound", f"no blob {', '.join(missing)}", notFound=missing)
    attached = sum(len(data) for data in contents.values())
    limit = ctx.config.mail_attachments_max_size
    if attached > limit:
        raise set_error("tooLarge", f"the attachments are {attached} octets; at most {limit} are allowed")
    message = {k: v for k, v in obj.items() if k not in ("mailboxIds", "keywords", "receivedAt", "bodyValues")}
    body_values = obj.get("bodyValues") or {}
    if not isinstance(body_values, dict):
        raise invalid_properties("bodyValues must be a map of partIds to EmailBodyValues", "bodyValues")
    try:
        raw = build_message(
            message, body_values, contents.get, datetime.fromtimestamp(now, UTC), _hostname(ctx.config)
        )
    except BuildError as e:
        if e.not_found:
            raise set_error("blobNotFound", e.description, notFound=e.not_found) from None
        raise invalid_properties(e.description, e.property) from None
    limit = ctx.config.mail_max_size
    if len(raw) > limit:
        raise set_error("tooLarge", f"the message is {len(raw)} octets; at most {limit} are allowed")
    return emails.ingest(ctx.txn, ctx.env.blobs, account_id, raw, mailbox_ids, keywords, received_at, now)


# -- Email/import ----------------------------------------------------------------------

_IMPORT_PROPERTIES = frozenset({"blobId", "mailboxIds", "keywords", "receivedAt"})


def _received_from_headers(headers: list[dict[str, str]]) -> int | None:
    """
    The time of the most recent Received header field (the first one),
    in milliseconds, or C{None}.
    """
    for header in headers:
        if header["name"].lower() == "received":
            _, _, when = header["value"].rpartition(";")
            try:
                parsed = parsedate_to_datetime(" ".join(when.split()))
            except (TypeError, ValueError, IndexError):
                return None
            if parsed is None:
                return None
            if parsed.tzinfo is None:
                return None
            return int(parsed.timestamp() * 1000)
    return None


def email_import(ctx: Context, arguments: dict[str, Any]) -> dict[str, Any]:
    """
    Email/import (RFC 8621 section 4.8): make Emails of uploaded messages.
    """
    args = Arguments(arguments, ctx.method)
    account_id = args.id("accountId")
    if_in_state = args.string("ifInState")
    items = args.object("emails", nullable=False, expected="a map of creation ids to EmailImport objects")
    args.done()
    if items is None:
        raise invalid_arguments("Email/import: 'emails' is required")
    ctx.account(account_id, MAIL, write=True)
    limit = ctx.config.mail_import_max_items
    if len(items) > limit:
        raise MethodError("requestTooLarge", f"{len(items)} Emails to import; at most {limit} per call")
    old_state = EMAIL_TYPE.check_state(ctx, account_id, if_in_state)
    created: dict[str, Any] = {}
    not_created: dict[str, Any] = {}
    for creation_id, item in items.items():
        try:
            with ctx.txn.savepoint():
                result = _import_one(ctx, account_id, item)
        except SetErrorException as e:
            not_created[creation_id] = e.error.to_json()
        else:
            created[creation_id] = result.to_json()
            ctx.created_ids[creation_id] = result.id
    return {
        "accountId": account_id,
        "oldState": old_state,
        "newState": EMAIL_TYPE.state(ctx, account_id),
        "created": created or None,
        "notCreated": not_created or None,
    }


def _import_one(ctx: Context, account_id: str, item: Any) -> emails.Created:
    if not isinstance(item, dict):
        raise invalid_properties("an EmailImport must be an object")
    unknown = sorted(set(item) - _IMPORT_PROPERTIES)
    if unknown:
        raise invalid_properties(f"unknown EmailImport properties: {', '.join(unknown)}", *unknown)
    blob_id = item.get("blobId")
    if not isinstance(blob_id, str) or not is_id(blob_id):
        raise invalid_properties("blobId must be the id of an uploaded blob", "blobId")
    mailbox_ids = check_mailbox_ids(ctx, account_id, item.get("mailboxIds"))
    keywords = check_keywords(ctx, item.get("keywords"))
    check_may_add(ctx, account_id, mailbox_ids, keywords)
    raw = resolve_for(ctx, account_id, blob_id)
    if raw is None:
        # RFC 8621 section 4.8: an id that is not found is invalidProperties.
        raise invalid_properties(f"no blob {blob_id!r}", "blobId")
    limit = ctx.config.mail_max_size
    if len(raw) > limit:
        raise set_error("tooLarge", f"the message is {len(raw)} octets; at most {limit} are allowed")
    parsed = _parse(raw)
    if parsed is None:
        raise set_error("invalidEmail", f"the blob {blob_id!r} is not a message")
    default = _received_from_headers(parsed.get("headers") or [])
    received_at = check_received_at(item.get("receivedAt"), default if default is not None else int(ctx.now * 1000))
    return emails.ingest(
        ctx.txn, ctx.env.blobs, account_id, raw, mailbox_ids, keywords, received_at, ctx.now, parsed=parsed
    )


def _parse(raw: bytes) -> dict[str, Any] | None:
    """
    The parse of a message, or C{None} when the octets are not one (the
    parser found no header field at all, or gave up).
    """
    try:
        parsed = parse_message(raw)
    except Exception:
        return None
    if not parsed.get("headers"):
        return None
    return parsed


# -- Email/parse ----------------------------------------------------------------------------


def email_parse(ctx: Context, arguments: dict[str, Any]) -> dict[str, Any]:
    """
    Email/parse (RFC 8621 section 4.9): Email objects for messages that are
    blobs (uploads, or attached messages of Emails), without storing them.
    """
    args = Arguments(arguments, ctx.method)
    account_id = args.id("accountId")
    blob_ids = args.id_list("blobIds", required=True, nullable=False, allow_creation_refs=False)
    properties = args.string_list("properties")
    extra = read_body_options(args)
    args.done()
    ctx.account(account_id, MAIL)
    limit = ctx.config.mail_parse_max_items
    if len(blob_ids) > limit:
        raise MethodError("requestTooLarge", f"{len(blob_ids)} blobs to parse; at most {limit} per call")
    if properties is None:
        wanted: tuple[str, ...] = PARSE_DEFAULT_PROPERTIES
    else:
        unknown = [p for p in properties if not is_email_property(p)]
        if unknown:
            raise invalid_arguments(f"unknown Email properties: {', '.join(unknown)}")
        wanted = tuple(dict.fromkeys(properties))
    options: BodyOptions = extra["body"]
    parsed_emails: dict[str, Any] = {}
    not_parsable: list[str] = []
    not_found: list[str] = []
    for blob_id in dict.fromkeys(blob_ids):
        raw = resolve_for(ctx, account_id, blob_id)
        if raw is None:
            not_found.append(blob_id)
            continue
        parsed = _parse(raw)
        if parsed is None:
            not_parsable.append(blob_id)
            continue
        structure = emails.structure_of(parsed)
        parsed_emails[blob_id] = render_email(
            _parsed_values(parsed, blob_id, wanted),
            wanted,
            partial(_constant, parsed.get("headers") or []),
            partial(_constant, structure),
            partial(_constant, raw),
            blob_id,
            options,
        )
    return {
        "accountId": account_id,
        "parsed": parsed_emails or None,
        "notParsable": not_parsable or None,
        "notFound": not_found or None,
    }


# -- Mailbox destruction -------------------------------------------------------------------


def _mailbox_destroyed(txn: Any, account_id: str, mailbox_id: str, remove_emails: bool) -> None:
    """
    Before a Mailbox is destroyed (Mailbox/set checked that it may be, and
    with Emails only under onDestroyRemoveEmails): its Emails go with it,
    unless they are in another Mailbox too.
    """
    # Its readers lose sight of what it held (unless it is elsewhere too).
    readers = principal_storage.grantees(txn, account_id, [mailbox_id], principal_storage.READ)
    principal_storage.record_mailbox_contents_sight(txn, account_id, [mailbox_id], readers)
    emails.remove_mailbox(txn, account_id, mailbox_id, time.time(), RELEASED_BLOB_TTL)


#: How long an account keeps a blob whose last Email went with a destroyed
#: Mailbox.  The destroy hook gets neither the clock nor the configuration,
#: so this is blob-temp-ttl's default rather than the configured value.
RELEASED_BLOB_TTL = 3600.0


EMAIL_TYPE = EmailType()


def register(registry: Registry) -> None:
    """
    Add Email/get, /changes, /set, /copy, /import, /parse, /query and
    /queryChanges, and SearchSnippet/get.
    """
    from jmapd.mail import query, snippet

    register_standard_methods(registry, EMAIL_TYPE)
    query.register(registry)
    snippet.register(registry)
    registry.add_method("Email/import", MAIL, email_import, write=True)
    registry.add_method("Email/parse", MAIL, email_parse)
    if resolve_blob not in registry.blob_resolvers:
        registry.blob_resolvers.append(resolve_blob)
    if may_read_blob not in registry.blob_access_checks:
        registry.blob_access_checks.append(may_read_blob)
    if _mailbox_destroyed not in mailboxes.mailbox_destroy_hooks:
        mailboxes.mailbox_destroy_hooks.append(_mailbox_destroyed)


__all__ = ["EmailType", "register", "resolve_blob", "part_blob_id"]
