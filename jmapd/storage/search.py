# -*- test-case-name: tests.storage.test_search -*-
"""
Finding Emails: Email/query filters and sorts compiled to one SQL
statement, and the full-text index behind the text conditions.

L{jmapd.mail.query} checks what a client sent and hands this module a
filter tree (L{Operator} and the condition classes below) and a list of
L{Comparator}s; this module turns them into one C{SELECT} over the
indexed tables, so a query is never a Python filter over rows.

Every Email has a I{docid}: its receivedAt in milliseconds shifted left,
plus a sequence number for Emails received in the same millisecond
(L{allocate_docid}).  It is the receivedAt sort key of every plan (so the
order of equal receivedAts is the same whichever table a statement reads
first) and the rowid of the Email's full-text entry.  A statement reads
first (see L{statement}):

  - the full-text index, when the filter has a text condition at its top
    level: the index yields matches in docid order, so "text X, newest
    first, limit 50" reads about 50 matches however many there are;
  - else C{email_mailboxes}, for a top-level C{inMailbox}: its index
    (account, Mailbox, docid, Email) makes "the newest 50 Emails of a
    Mailbox" 50 index reads, whatever the size of the account;
  - else the account's Emails in docid order.

Every other condition is an indexed probe per row (keywords, Mailboxes,
Threads, the full-text index); C{collapseThreads} is applied while
reading the ordered rows, so a page of Threads reads only the rows it
needs.

The full-text index is one interface, L{FullTextIndex}, with one
implementation, L{FTS5Index} (SQLite FTS5).  Everything engine-specific
about text search (the table, the match syntax, highlighting) is behind
it, so a PostgreSQL engine can bring a tsvector implementation and keep
the rest of this module.  Emails are indexed when they are stored
(L{index_email}, called by ingest in the same transaction), dropped when
destroyed (L{remove_email}) and copied with L{copy_email}; Emails stored
before the index existed are indexed by L{backfill}.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import orjson
from attrs import frozen

from jmapd.mime.body import decode_part, decode_text
from jmapd.mime.headers import as_text
from jmapd.mime.html import html_to_text
from jmapd.mime.parse import parse_message
from jmapd.storage.sql import chunks as _chunks
from jmapd.storage.sql import marks as _marks

# -- the filter tree ---------------------------------------------------------


@frozen
class Operator:
    """
    A FilterOperator: C{AND}, C{OR} or C{NOT} of its conditions.  An
    C{AND} of nothing is true (the empty FilterCondition).
    """

    operator: str
    conditions: tuple[Any, ...]


@frozen
class InMailbox:
    mailbox_id: str


@frozen
class InMailboxOtherThan:
    mailbox_ids: tuple[str, ...]


@frozen
class ReceivedBefore:
    """receivedAt earlier than C{ms} (milliseconds since the epoch)."""

    ms: int


@frozen
class ReceivedAfter:
    """receivedAt at or after C{ms}."""

    ms: int


@frozen
class MinSize:
    size: int


@frozen
class MaxSize:
    size: int


@frozen
class HasKeyword:
    """hasKeyword (C{present}) or notKeyword; keywords are lower case."""

    keyword: str
    present: bool = True


@frozen
class ThreadKeyword:
    """allInThreadHaveKeyword, someInThreadHaveKeyword, noneInThreadHaveKeyword."""

    keyword: str
    quantifier: str  # "all", "some" or "none"


@frozen
class HasAttachment:
    value: bool


@frozen
class Term:
    """
    One search term: a word (matched as a prefix: "plan" finds "plans")
    or, for C{phrase}, the exact words of a quoted phrase.
    """

    text: str
    phrase: bool = False


@frozen
class Text:
    """
    The terms must all be found in C{field}: one of L{TEXT_FIELDS}.
    """

    field: str
    terms: tuple[Term, ...]


@frozen
class Header:
    """
    The Email has a header field C{name} (lower case) and, with C{value},
    one whose decoded value contains it (compared case-folded).
    """

    name: str
    value: str | None = None


#: The text conditions of RFC 8621 section 4.4.1 and what they search.
TEXT_FIELDS = ("text", "from", "to", "cc", "bcc", "subject", "body")


@frozen
class Comparator:
    """
    One sort key.  C{collation} is an RFC 4790 name (only string
    properties use it); C{keyword} is for the keyword sorts.
    """

    property: str
    ascending: bool = True
    collation: str = "i;unicode-casemap"
    keyword: str | None = None


#: Sort properties whose values are strings (C{collation} applies).
STRING_SORTS = frozenset({"from", "to", "subject"})

#: The order when the client gives no sort: newest first.
DEFAULT_SORT = (Comparator("receivedAt", ascending=False),)


@frozen
class Query:
    filter: Any
    sort: tuple[Comparator, ...] = ()
    collapse_threads: bool = False


# -- sort values -----------------------------------------------------------------

_TRAILER = re.compile(r"(?:\s|\(fwd\))+$", re.IGNORECASE)
_BLOB = r"\[[^\[\]]*\]\s*"
_LEADER = re.compile(rf"(?:(?:{_BLOB})*(?:re|fwd?)\s*(?:{_BLOB})?:|\s+)", re.IGNORECASE)
_LEADING_BLOB = re.compile(_BLOB)


def base_subject(subject: str | None) -> str:
    """
    The base subject of RFC 5256 section 2.1: white space collapsed,
    trailing "(fwd)", leading "Re:", "Fw:", "Fwd:" and "[blob]" prefixes
    and a "[Fwd: ...]" wrapper removed, repeatedly.
    """
    text = " ".join((subject or "").split())
    while True:
        text = _TRAILER.sub("", text)
        while True:
            before = text
            while True:
                match = _LEADER.match(text)
                if match is None or not match.end():
                    break
                text = text[match.end() :]
            match = _LEADING_BLOB.match(text)
            if match is not None and text[match.end() :]:
                text = text[match.end() :]
            if text == before:
                break
        if text[:5].lower() == "[fwd:" and text.endswith("]"):
            text = text[5:-1]
            continue
        return text.strip()


def unicode_casemap(text: str) -> str:
    """
    The i;unicode-casemap key of RFC 5051: each character titlecased (its
    simple mapping: a character whose titlecase is several is kept), then
    compatibility-decomposed (NFKD).  Keys compare by code point, which is
    the octet order of their UTF-8 the RFC asks for.
    """
    mapped = []
    for char in text:
        title = char.title()
        mapped.append(title if len(title) == 1 else char)
    return unicodedata.normalize("NFKD", "".join(mapped))


_ASCII_UPPER = {code: code - 32 for code in range(ord("a"), ord("z") + 1)}


def ascii_casemap(text: str) -> str:
    """
    The i;ascii-casemap key of RFC 4790: ASCII letters upper-cased, every
    other character unchanged.
    """
    return text.translate(_ASCII_UPPER)


_NUMBER = re.compile(r"[0-9]+")


def ascii_numeric(text: str) -> tuple[int, int]:
    """
    The i;ascii-numeric key of RFC 4790: the number the string starts
    with; strings that start with no digit come after every number.
    """
    match = _NUMBER.match(text)
    return (0, int(match.group())) if match else (1, 0)


def _first_address(addresses: Any) -> str:
    """
    The sort value of an address list (RFC 8621 section 4.4.2): the name
    of the first address, or its email if the name is empty, or "".
    """
    if not addresses:
        return ""
    first = addresses[0]
    return str(first.get("name") or first.get("email") or "")


# -- the search document -----------------------------------------------------------

#: At most this many characters of body text are indexed per message.
MAX_BODY_CHARS = 200_000

#: Attached messages whose text is searched as body text (RFC 8621 section
#: 4.4.1: text SHOULD look inside any part the server can turn into text,
#: and body may leave out only parts other than text/* and message/*), and
#: how deep within each other they are read.
_MESSAGE_TYPES = frozenset({"message/rfc822", "message/global"})
MAX_MESSAGE_DEPTH = 3


@frozen
class SearchDocument:
    """
    What is indexed about one message.
    """

    subject: str
    from_: str
    to: str
    cc: str
    bcc: str
    body: str
    attachments: str
    #: [lower-case name, case-folded decoded value] per header field.
    headers: list[list[str]]
    sort_from: str
    sort_to: str
    sort_subject: str


def _address_text(addresses: Any) -> str:
    return " ".join(
        f"{address.get('name') or ''} {address.get('email') or ''}".strip() for address in addresses or ()
    )


def _walk(part: dict[str, Any] | None) -> Iterator[dict[str, Any]]:
    if part is None:
        return
    yield part
    for sub in part.get("subParts") or ():
        yield from _walk(sub)


def _part_text(raw: bytes, part: dict[str, Any], depth: int) -> str:
    if "_offset" not in part:
        return ""
    if part.get("type") in _MESSAGE_TYPES:
        # An attached message reads as its addresses, subject, attachment
        # names and body.
        inner_raw = decode_part(raw, part)
        inner = document_of(inner_raw, parse_message(inner_raw), depth + 1)
        fields = (inner.from_, inner.to, inner.cc, inner.subject, inner.attachments, inner.body)
        return "\n".join(field for field in fields if field)
    text, _ = decode_text(decode_part(raw, part), part.get("charset"))
    if part.get("type") == "text/html":
        # alt and title are presented to the user: RFC 8621 section 4.4.1
        # says search SHOULD consider them.
        return html_to_text(text, attributes=True)
    return text


def document_of(raw: bytes | None, parsed: dict[str, Any], depth: int = 0) -> SearchDocument:
    """
    The search document of a message from its parse (as
    L{jmapd.mime.parse.parse_message} makes it, or the stored columns in
    the same shape): the text of its textBody parts, of text/*
    attachments (HTML as the text a reader sees, alt and title
    attributes included) and of attached messages (up to
    L{MAX_MESSAGE_DEPTH} within each other), attachment names,
    subject, addresses and decoded header fields.  Without C{raw} (the
    message is gone) the body is empty.
    """
    parts = {part["partId"]: part for part in _walk(parsed.get("bodyStructure")) if part.get("partId")}
    texts: list[str] = []
    length = 0
    names: list[str] = []
    chosen = list(parsed.get("textBody") or [])
    for part_id in parsed.get("attachments") or ():
        part = parts.get(part_id)
        if part is None:
            continue
        if part.get("name"):
            names.append(str(part["name"]))
        kind = str(part.get("type") or "")
        if kind.startswith("text/") or (kind in _MESSAGE_TYPES and depth < MAX_MESSAGE_DEPTH):
            chosen.append(part_id)
    if raw is not None:
        for part_id in dict.fromkeys(chosen):
            part = parts.get(part_id)
            if part is None or part.get("subParts") is not None or length >= MAX_BODY_CHARS:
                continue
            try:
                text = _part_text(raw, part, depth)[: MAX_BODY_CHARS - length]
            except Exception:  # noqa: BLE001 - a part we cannot read is not searched; the message is still stored
                continue
            texts.append(text)
            length += len(text)
    headers = []
    for header in parsed.get("headers") or ():
        try:
            value = as_text(header["value"])
        except Exception:  # noqa: BLE001 - a header we cannot decode is searched as it is
            value = header["value"]
        headers.append([header["name"].lower(), value.casefold()])
    subject = parsed.get("subject") or ""
    return SearchDocument(
        subject=subject,
        from_=_address_text(parsed.get("from")),
        to=_address_text(parsed.get("to")),
        cc=_address_text(parsed.get("cc")),
        bcc=_address_text(parsed.get("bcc")),
        body="\n".join(texts),
        attachments=" ".join(names),
        headers=headers,
        sort_from=_first_address(parsed.get("from")),
        sort_to=_first_address(parsed.get("to")),
        sort_subject=base_subject(subject),
    )


# -- the full-text index interface ---------------------------------------------------


class FullTextIndex(Protocol):
    """
    What Email search needs from a full-text index.  Each method runs in
    the caller's transaction.
    """

    def add(self, txn: Any, account_id: str, email_id: str, document: SearchDocument) -> None:
        """Index an Email (it has no entry yet)."""

    def remove(self, txn: Any, account_id: str, email_id: str) -> None:
        """Drop an Email's entry, before its row is deleted."""

    def copy(self, txn: Any, from_account_id: str, source_id: str, account_id: str, email_id: str) -> bool:
        """Give a new Email the entry of another one; C{False} if it has none."""

    def match(self, account_id: str, field: str, terms: Sequence[Term]) -> tuple[str, list[Any]]:
        """
        An SQL condition (with its parameters) true for the Emails
        (alias C{e}) of the account in which all C{terms} are found in
        C{field}.
        """
        ...

    def driver(self, account_id: str, texts: Sequence[Text]) -> tuple[str, str, list[Any], str]:
        """
        How a statement reads the Emails of the account that match all
        C{texts} from the index first: its FROM clause (naming the Email
        row C{e}, tables joined with CROSS JOIN and no ON, so that SQLite
        keeps the order), its WHERE condition with parameters, and the
        expression equal to C{e.docid} that the index yields in order
        without a sort.
        """
        ...

    def header(self, name: str, value: str | None) -> tuple[str, list[Any]]:
        """
        An SQL condition true for the Emails (C{e}) with a header field
        C{name} (lower case) whose value (decoded, case-folded) contains
        C{value} (already case-folded), or any value for C{None}.
        """
        ...

    def string_sort(self, value: str, key: str, collation: str) -> list[str]:
        """
        ORDER BY expressions for a string sort under an RFC 4790
        collation, from the expressions of its raw value and of its
        i;unicode-casemap key.
        """
        ...

    def highlight(
        self,
        txn: Any,
        account_id: str,
        email_ids: Sequence[str],
        subject_terms: Sequence[Term],
        body_terms: Sequence[Term],
        marks: tuple[str, str],
    ) -> dict[str, tuple[str | None, str | None]]:
        """
        For each Email where a term matches: its subject with the matches
        between C{marks} (or C{None} if none is in the subject) and a
        fragment of its body likewise (or C{None}).
        """
        ...


#: The FTS5 columns each text condition searches.
_FTS_COLUMNS = {
    "text": ("subject", "from_addr", "to_addr", "cc_addr", "bcc_addr", "body", "attachments"),
    "subject": ("subject",),
    "from": ("from_addr",),
    "to": ("to_addr",),
    "cc": ("cc_addr",),
    "bcc": ("bcc_addr",),
    "body": ("body",),
}

#: Column numbers in email_fts, for highlight() and snippet().
_FTS_SUBJECT = 1
_FTS_BODY = 6

#: Tokens per body fragment of a snippet.
_SNIPPET_TOKENS = 24


def _fts_string(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def fts_terms(terms: Sequence[Term], joiner: str = " AND ") -> str:
    """
    Terms as an FTS5 query: phrases exact, words as prefixes.
    """
    return joiner.join(_fts_string(t.text) if t.phrase else _fts_string(t.text) + "*" for t in terms)


class FTS5Index:
    """
    The full-text index in SQLite FTS5 (table C{email_fts}, rowid = the
    Email's docid, see migration 0005), with C{email_search} beside it for
    header fields and sort keys.
    """

    def add(self, txn: Any, account_id: str, email_id: str, document: SearchDocument) -> None:
        docid = txn.fetchvalue("SELECT docid FROM emails WHERE account_id = ? AND id = ?", (account_id, email_id))
        if docid is None:
            raise KeyError(email_id)
        self.add_many(txn, [(account_id, int(docid), document)])

    def add_many(self, txn: Any, documents: Sequence[tuple[str, int, SearchDocument]]) -> None:
        """
        Index Emails whose docids the caller knows (ingest allocated them
        in this transaction), given as C{(account id, docid, document)},
        without reading them back.
        """
        txn.executemany(
            "INSERT INTO email_search (docid, account_id, headers, sort_from, sort_to, sort_subject,"
            " key_from, key_to, key_subject) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    docid,
                    account_id,
                    orjson.dumps(document.headers).decode("utf-8"),
                    document.sort_from,
                    document.sort_to,
                    document.sort_subject,
                    unicode_casemap(document.sort_from),
                    unicode_casemap(document.sort_to),
                    unicode_casemap(document.sort_subject),
                )
                for account_id, docid, document in documents
            ],
        )
        txn.executemany(
            "INSERT INTO email_fts (rowid, account, subject, from_addr, to_addr, cc_addr, bcc_addr, body,"
            " attachments) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    docid,
                    account_id,
                    document.subject,
                    document.from_,
                    document.to,
                    document.cc,
                    document.bcc,
                    document.body,
                    document.attachments,
                )
                for account_id, docid, document in documents
            ],
        )

    def remove(self, txn: Any, account_id: str, email_id: str) -> None:
        docid = txn.fetchvalue("SELECT docid FROM emails WHERE account_id = ? AND id = ?", (account_id, email_id))
        if docid is None:
            return
        if txn.execute("DELETE FROM email_search WHERE docid = ?", (docid,)).rowcount:
            txn.execute("DELETE FROM email_fts WHERE rowid = ?", (docid,))

    def copy(self, txn: Any, from_account_id: str, source_id: str, account_id: str, email_id: str) -> bool:
        source = txn.fetchvalue(
            "SELECT s.docid FROM emails e JOIN email_search s ON s.docid = e.docid"
            " WHERE e.account_id = ? AND e.id = ?",
            (from_account_id, source_id),
        )
        docid = txn.fetchvalue("SELECT docid FROM emails WHERE account_id = ? AND id = ?", (account_id, email_id))
        if source is None or docid is None:
            return False
        txn.execute(
            "INSERT INTO email_search (docid, account_id, headers, sort_from, sort_to, sort_subject,"
            " key_from, key_to, key_subject) SELECT ?, ?, headers, sort_from, sort_to, sort_subject,"
            " key_from, key_to, key_subject FROM email_search WHERE docid = ?",
            (docid, account_id, source),
        )
        txn.execute(
            "INSERT INTO email_fts (rowid, account, subject, from_addr, to_addr, cc_addr, bcc_addr, body,"
            " attachments) SELECT ?, ?, subject, from_addr, to_addr, cc_addr, bcc_addr, body, attachments"
            " FROM email_fts WHERE rowid = ?",
            (docid, account_id, source),
        )
        return True

    def query(self, account_id: str, texts: Sequence[Text], joiner: str = " AND ") -> str:
        """
        The FTS5 query finding the Emails of the account that match every
        one of C{texts}.
        """
        groups = [f"{{{' '.join(_FTS_COLUMNS[t.field])}}} : ({fts_terms(t.terms, joiner)})" for t in texts]
        return f"account : {_fts_string(account_id)} AND " + " AND ".join(groups)

    def match(self, account_id: str, field: str, terms: Sequence[Term]) -> tuple[str, list[Any]]:
        return (
            "e.docid IN (SELECT rowid FROM email_fts WHERE email_fts MATCH ?)",
            [self.query(account_id, [Text(field, tuple(terms))])],
        )

    def driver(self, account_id: str, texts: Sequence[Text]) -> tuple[str, str, list[Any], str]:
        # FTS5 yields matches in rowid (= docid) order, either way, when the
        # statement orders by f.rowid (naming e.docid would make SQLite sort).
        return (
            "email_fts f CROSS JOIN emails e",
            "email_fts MATCH ? AND e.docid = f.rowid",
            [self.query(account_id, texts)],
            "f.rowid",
        )

    def header(self, name: str, value: str | None) -> tuple[str, list[Any]]:
        sql = (
            "EXISTS (SELECT 1 FROM email_search s, json_each(s.headers) h WHERE s.docid = e.docid"
            " AND json_extract(h.value, '$[0]') = ?"
        )
        if value is None:
            return sql + ")", [name]
        return sql + " AND instr(json_extract(h.value, '$[1]'), ?) > 0)", [name, value]

    def string_sort(self, value: str, key: str, collation: str) -> list[str]:
        if collation == "i;unicode-casemap":
            return [key]
        if collation == "i;ascii-casemap":
            # SQLite's upper() maps exactly the ASCII letters.
            return [f"upper({value})"]
        # i;ascii-numeric: strings without a leading number sort last.
        return [f"(CASE WHEN {value} GLOB '[0-9]*' THEN 0 ELSE 1 END)", f"CAST({value} AS INTEGER)"]

    def highlight(
        self,
        txn: Any,
        account_id: str,
        email_ids: Sequence[str],
        subject_terms: Sequence[Term],
        body_terms: Sequence[Term],
        marks: tuple[str, str],
    ) -> dict[str, tuple[str | None, str | None]]:
        groups = []
        if subject_terms:
            groups.append(f"{{subject}} : ({fts_terms(subject_terms, ' OR ')})")
        if body_terms:
            groups.append(f"{{body}} : ({fts_terms(body_terms, ' OR ')})")
        if not groups or not email_ids:
            return {}
        query = f"account : {_fts_string(account_id)} AND ({' OR '.join(groups)})"
        opened, closed = marks
        found: dict[str, tuple[str | None, str | None]] = {}
        for chunk in _chunks(list(email_ids)):
            rows = txn.fetchall(
                "SELECT e.id, highlight(email_fts, ?, ?, ?), snippet(email_fts, ?, ?, ?, ?, ?)"
                " FROM email_fts JOIN emails e ON e.docid = email_fts.rowid"
                f" WHERE email_fts MATCH ? AND e.account_id = ? AND e.id IN ({_marks(len(chunk))})",
                (
                    _FTS_SUBJECT,
                    opened,
                    closed,
                    _FTS_BODY,
                    opened,
                    closed,
                    "\u2026",
                    _SNIPPET_TOKENS,
                    query,
                    account_id,
                    *chunk,
                ),
            )
            for email_id, subject, fragment in rows:
                found[email_id] = (
                    subject if subject_terms and opened in (subject or "") else None,
                    fragment if body_terms and opened in (fragment or "") else None,
                )
        return found



_FTS5 = FTS5Index()


def full_text_index(txn: Any) -> FullTextIndex:
    """
    The full-text index of the transaction's engine: its
    C{full_text_index} attribute, FTS5 for SQLite.
    """
    index = getattr(txn.engine, "full_text_index", None)
    if index is not None:
        return index  # type: ignore[no-any-return]
    name = getattr(txn.engine, "name", "sqlite")
    if name != "sqlite":
        raise NotImplementedError(f"no full-text index for the {name} engine")
    return _FTS5


# -- keeping the index -------------------------------------------------------------------


def index_email(txn: Any, account_id: str, email_id: str, raw: bytes | None, parsed: dict[str, Any]) -> None:
    """
    Index a newly stored Email from its message and parse (ingest calls
    this in the transaction that stores it).
    """
    full_text_index(txn).add(txn, account_id, email_id, document_of(raw, parsed))


def index_document(txn: Any, account_id: str, email_id: str, docid: int, document: SearchDocument) -> None:
    """
    Index a newly stored Email whose search document was made before the
    transaction (L{document_of} is pure: delivery makes it in a worker
    thread, so the one transaction filing a group of messages only
    writes) and whose C{docid} the caller allocated.
    """
    index_documents(txn, [(account_id, email_id, docid, document)])


def index_documents(txn: Any, documents: Sequence[tuple[str, str, int, SearchDocument]]) -> None:
    """
    Index newly stored Emails, each given as C{(account id, Email id,
    docid, search document)} (see L{index_document}), with one statement
    per table for all of them where the index allows.
    """
    if not documents:
        return
    index = full_text_index(txn)
    if isinstance(index, FTS5Index):
        index.add_many(txn, [(account_id, docid, document) for account_id, _, docid, document in documents])
    else:
        for account_id, email_id, _, document in documents:
            index.add(txn, account_id, email_id, document)


def remove_email(txn: Any, account_id: str, email_id: str) -> None:
    """
    Drop an Email from the index; call before its row is deleted.
    """
    full_text_index(txn).remove(txn, account_id, email_id)


def copy_email(
    txn: Any, store: Any, from_account_id: str, source_id: str, account_id: str, email_id: str
) -> None:
    """
    Index a copy of an Email (Email/copy): the original's entry is
    duplicated; if it has none, the copy is indexed from its message.
    """
    if not full_text_index(txn).copy(txn, from_account_id, source_id, account_id, email_id):
        _index_stored(txn, store, account_id, email_id)


_STORED = "e.blob_id, e.subject, e.addresses, e.headers, e.structure"


def _index_stored(txn: Any, store: Any, account_id: str, email_id: str) -> bool:
    row = txn.fetchone(f"SELECT {_STORED} FROM emails e WHERE e.account_id = ? AND e.id = ?", (account_id, email_id))
    if row is None:
        return False
    _index_row(txn, store, account_id, email_id, row)
    return True


def _index_row(txn: Any, store: Any, account_id: str, email_id: str, row: Sequence[Any]) -> None:
    blob_id, subject, addresses, headers, structure = row
    parsed = {
        "subject": subject,
        **orjson.loads(addresses),
        "headers": orjson.loads(headers),
        **orjson.loads(structure),
    }
    try:
        raw = store.read(blob_id)
    except Exception:  # noqa: BLE001 - a missing message is indexed without its body
        raw = None
    index_email(txn, account_id, email_id, raw, parsed)


def backfill(txn: Any, store: Any, limit: int = 500) -> int:
    """
    Index up to C{limit} Emails that have no index entry (those stored
    before migration 0005), from their stored parse and message; return
    how many.  Run it until it returns 0.
    """
    rows = txn.fetchall(
        f"SELECT e.account_id, e.id, {_STORED} FROM emails e"
        " WHERE NOT EXISTS (SELECT 1 FROM email_search s WHERE s.docid = e.docid AND s.account_id = e.account_id)"
        " LIMIT ?",
        (limit,),
    )
    for row in rows:
        _index_row(txn, store, row[0], row[1], row[2:])
    return len(rows)


# -- docids ----------------------------------------------------------------------------

#: The docid of an Email is (receivedAt - DOCID_EPOCH_MS) << DOCID_SHIFT plus
#: a sequence number among the Emails received in the same millisecond.
DOCID_EPOCH_MS = 946_684_800_000  # 2000-01-01T00:00:00Z
DOCID_SHIFT = 18
_DOCID_RANGE = 1 << 44


def docid_base(received_at: int) -> int:
    """
    The smallest docid of an Email received at C{received_at} (ms); times
    more than 557 years from 2000 share the first or last millisecond.
    """
    offset = max(min(received_at - DOCID_EPOCH_MS, _DOCID_RANGE - 1), -_DOCID_RANGE)
    return offset << DOCID_SHIFT


def allocate_docid(txn: Any, received_at: int, account_id: str | None = None) -> int:
    """
    A docid for a new Email received at C{received_at}: unique in the
    database, ordered by receivedAt, later than every Email received in
    the same millisecond (ingest calls this in its write transaction, so
    two writers cannot take the same one).

    With C{account_id} (whose account the transaction has locked), the
    docids this transaction already took are remembered: the next Email
    of the same account and millisecond (a delivery group shares one
    receivedAt) takes the next number without a query.  Every Email of
    that millisecond the database held was seen by the first query for
    that account, and those of other accounts this transaction added are
    counted too, so the number is as unique and as late as a query's.
    """
    base = docid_base(received_at)
    end = base + (1 << DOCID_SHIFT)
    # {base: highest docid taken here}, {(account, base): the same, per account}
    taken: dict[Any, int] = txn.__dict__.setdefault("_docids_taken", {})
    cached = None if account_id is None else taken.get((account_id, base))
    if cached is not None:
        docid = max(cached, taken.get(base, cached)) + 1
    else:
        top = txn.fetchvalue("SELECT max(docid) FROM emails WHERE docid >= ? AND docid < ?", (base, end))
        docid = base if top is None else max(int(top), taken.get(base, base - 1)) + 1
    if docid >= end:
        # 2^18 Emails in one millisecond: borrow the next free number (their
        # order among the next millisecond's Emails is then by arrival).
        return int(txn.fetchvalue("SELECT max(docid) FROM emails")) + 1
    taken[base] = max(docid, taken.get(base, docid))
    if account_id is not None:
        taken[(account_id, base)] = docid
    return docid


# -- compiling queries ---------------------------------------------------------------------


#: Conditions that are always true or false, in SQL both engines run
#: (PostgreSQL does not take an integer for a boolean).
_TRUE = "1 = 1"
_FALSE = "1 = 0"

#: LIMIT for "no limit" with an OFFSET, on both engines (PostgreSQL
#: refuses SQLite's -1).
_NO_LIMIT = 2**63 - 1


class _Compiler:
    """
    Turns a filter tree and sort into SQL about the Email row C{e},
    collecting the parameters in the order the fragments are emitted.
    """

    def __init__(self, txn: Any, account_id: str) -> None:
        self.account_id = account_id
        self.index = full_text_index(txn)
        self.params: list[Any] = []

    def condition(self, node: Any) -> str:
        method = getattr(self, "_" + type(node).__name__)
        sql: str = method(node)
        return sql

    def _Operator(self, node: Operator) -> str:
        parts = [self.condition(c) for c in node.conditions]
        if node.operator == "AND":
            return "(" + " AND ".join(parts) + ")" if parts else _TRUE
        if node.operator == "OR":
            return "(" + " OR ".join(parts) + ")" if parts else _FALSE
        return "NOT (" + " OR ".join(parts) + ")" if parts else _TRUE

    def _InMailbox(self, node: InMailbox) -> str:
        self.params.append(node.mailbox_id)
        return (
            "EXISTS (SELECT 1 FROM email_mailboxes x WHERE x.account_id = e.account_id"
            " AND x.email_id = e.id AND x.mailbox_id = ?)"
        )

    def _InMailboxOtherThan(self, node: InMailboxOtherThan) -> str:
        if not node.mailbox_ids:
            return _TRUE
        self.params.extend(node.mailbox_ids)
        return (
            "EXISTS (SELECT 1 FROM email_mailboxes x WHERE x.account_id = e.account_id"
            f" AND x.email_id = e.id AND x.mailbox_id NOT IN ({_marks(len(node.mailbox_ids))}))"
        )

    def _value(self, sql: str, value: Any) -> str:
        self.params.append(value)
        return sql

    def _ReceivedBefore(self, node: ReceivedBefore) -> str:
        return self._value("e.received_at < ?", node.ms)

    def _ReceivedAfter(self, node: ReceivedAfter) -> str:
        return self._value("e.received_at >= ?", node.ms)

    def _MinSize(self, node: MinSize) -> str:
        return self._value("e.size >= ?", node.size)

    def _MaxSize(self, node: MaxSize) -> str:
        return self._value("e.size < ?", node.size)

    def _HasAttachment(self, node: HasAttachment) -> str:
        return self._value("e.has_attachment = ?", int(node.value))

    def _has_keyword(self, keyword: str) -> str:
        self.params.append(keyword)
        return (
            "EXISTS (SELECT 1 FROM email_keywords k WHERE k.account_id = e.account_id"
            " AND k.email_id = e.id AND k.keyword = ?)"
        )

    def _HasKeyword(self, node: HasKeyword) -> str:
        sql = self._has_keyword(node.keyword)
        return sql if node.present else "NOT " + sql

    def _some_in_thread(self, keyword: str) -> str:
        self.params.append(keyword)
        return (
            "EXISTS (SELECT 1 FROM emails t JOIN email_keywords k ON k.account_id = t.account_id"
            " AND k.email_id = t.id WHERE t.account_id = e.account_id AND t.thread_id = e.thread_id"
            " AND k.keyword = ?)"
        )

    def _all_in_thread(self, keyword: str) -> str:
        self.params.append(keyword)
        return (
            "NOT EXISTS (SELECT 1 FROM emails t WHERE t.account_id = e.account_id AND t.thread_id = e.thread_id"
            " AND NOT EXISTS (SELECT 1 FROM email_keywords k WHERE k.account_id = t.account_id"
            " AND k.email_id = t.id AND k.keyword = ?))"
        )

    def _ThreadKeyword(self, node: ThreadKeyword) -> str:
        if node.quantifier == "all":
            return self._all_in_thread(node.keyword)
        sql = self._some_in_thread(node.keyword)
        return sql if node.quantifier == "some" else "NOT " + sql

    def _Text(self, node: Text) -> str:
        if not node.terms:
            return _TRUE
        sql, params = self.index.match(self.account_id, node.field, node.terms)
        self.params.extend(params)
        return sql

    def _Header(self, node: Header) -> str:
        sql, params = self.index.header(node.name, None if node.value is None else node.value.casefold())
        self.params.extend(params)
        return sql

    # -- sorting -----------------------------------------------------------

    def sort_key(self, comparator: Comparator, docid: str) -> list[str]:
        """
        The ORDER BY expressions of one comparator (ascending).
        """
        name = comparator.property
        if name == "receivedAt":
            return [docid]
        if name == "size":
            return ["e.size"]
        if name == "sentAt":
            # Without a Date header first (ascending), on both engines:
            # PostgreSQL puts NULL after every value, SQLite before.
            return ["(e.sent_at_ms IS NOT NULL)", "e.sent_at_ms"]
        if name in STRING_SORTS:
            return self.index.string_sort(
                f"(SELECT s.sort_{name} FROM email_search s WHERE s.docid = e.docid AND s.account_id = e.account_id)",
                f"(SELECT s.key_{name} FROM email_search s WHERE s.docid = e.docid AND s.account_id = e.account_id)",
                comparator.collation,
            )
        keyword = comparator.keyword or ""
        if name == "hasKeyword":
            return [self._has_keyword(keyword)]
        if name == "someInThreadHaveKeyword":
            return [self._some_in_thread(keyword)]
        if name == "allInThreadHaveKeyword":
            return [self._all_in_thread(keyword)]
        raise ValueError(f"unknown sort property {name!r}")

    def order_by(self, sort: Sequence[Comparator], docid: str, id_column: str) -> str:
        terms: list[str] = []
        for comparator in sort:
            direction = "" if comparator.ascending else " DESC"
            terms.extend(expression + direction for expression in self.sort_key(comparator, docid))
            if comparator.property == "receivedAt":
                # docids are unique: nothing after them can break a tie.
                return ", ".join(terms)
        # The id breaks ties, in the direction of the last key so that an
        # index holding (key, id) is read in one direction.
        terms.append(id_column + ("" if sort[-1].ascending else " DESC"))
        return ", ".join(terms)


def _conjuncts(node: Any) -> tuple[Any, ...]:
    if node is None:
        return ()
    if isinstance(node, Operator) and node.operator == "AND":
        return node.conditions
    return (node,)


def statement(
    txn: Any, account_id: str, query: Query, columns: str = "ids", offset: int = 0, limit: int | None = None
) -> tuple[str, list[Any]]:
    """
    The SQL (and parameters) of a query: C{columns="ids"} selects (Email
    id, Thread id) in order, from row C{offset}, at most C{limit} rows;
    C{"count"} counts the matching Emails (or Threads with
    C{collapse_threads}).

    Which table the statement reads first (the plan is fixed here; the
    joins are CROSS JOINs, which SQLite does not reorder):

      - the full-text index, for text conditions at the top level of the
        filter: it yields matches newest first, so "text X, newest first,
        limit 50" reads about 50 matches however many there are;
      - else the Mailbox index, for an inMailbox at the top level:
        (account, Mailbox, docid, Email) in receivedAt order;
      - else the account's Emails in receivedAt order.

    The other conditions are indexed probes per row.
    """
    compiler = _Compiler(txn, account_id)
    sort = query.sort or DEFAULT_SORT
    conjuncts = _conjuncts(query.filter)
    texts = [c for c in conjuncts if isinstance(c, Text) and c.terms]
    mailboxes = [c for c in conjuncts if isinstance(c, InMailbox)]
    index_order = None
    if texts:
        source, condition, params, index_order = compiler.index.driver(account_id, texts)
        where = [condition, "e.account_id = ?"]
        compiler.params.extend([*params, account_id])
        rest = [c for c in conjuncts if not (isinstance(c, Text) and c.terms)]
        docid, id_column = "e.docid", "e.id"
    elif mailboxes:
        source = "email_mailboxes mb CROSS JOIN emails e"
        where = ["mb.account_id = ?", "mb.mailbox_id = ?", "e.account_id = mb.account_id", "e.id = mb.email_id"]
        compiler.params.extend([account_id, mailboxes[0].mailbox_id])
        rest = [c for c in conjuncts if c is not mailboxes[0]]
        docid, id_column = "mb.docid", "mb.email_id"
    else:
        source = "emails e"
        where = ["e.account_id = ?"]
        compiler.params.append(account_id)
        rest = list(conjuncts)
        docid, id_column = "e.docid", "e.id"
    where.extend(compiler.condition(c) for c in rest)
    if columns == "count":
        counted = "count(DISTINCT e.thread_id)" if query.collapse_threads else "count(*)"
        return f"SELECT {counted} FROM {source} WHERE {' AND '.join(where)}", compiler.params
    if index_order is not None and sort[0].property == "receivedAt":
        docid = index_order
    order = compiler.order_by(sort, docid, id_column)
    thread = "e.thread_id"
    if mailboxes and not texts and not rest and not query.collapse_threads and sort[0].property == "receivedAt":
        # The list view: the Mailbox index alone has everything.
        source, thread = "email_mailboxes mb", "NULL"
        where = where[:2]
    sql = f"SELECT {id_column}, {thread} FROM {source} WHERE {' AND '.join(where)} ORDER BY {order}"
    if limit is not None or offset:
        sql += " LIMIT ? OFFSET ?"
        compiler.params.extend([_NO_LIMIT if limit is None else limit, offset])
    return sql, compiler.params


def iter_ids(txn: Any, account_id: str, query: Query, offset: int = 0, limit: int | None = None) -> Iterator[str]:
    """
    The ids of the Emails a query finds, in order, from position
    C{offset}, at most C{limit}; with C{collapse_threads}, only the first
    Email of each Thread.  Rows are read as they are consumed; do not use
    the transaction for anything else until the iteration is over.
    """
    if limit is not None and limit <= 0:
        return
    if not query.collapse_threads:
        sql, params = statement(txn, account_id, query, offset=offset, limit=limit)
        cursor = txn.execute(sql, params)
        while True:
            rows = cursor.fetchmany(256)
            if not rows:
                return
            for row in rows:
                yield row[0]
    sql, params = statement(txn, account_id, query)
    cursor = txn.execute(sql, params)
    seen: set[str] = set()
    skipped = produced = 0
    while True:
        rows = cursor.fetchmany(256)
        if not rows:
            return
        for email_id, thread_id in rows:
            if thread_id in seen:
                continue
            seen.add(thread_id)
            if skipped < offset:
                skipped += 1
                continue
            yield email_id
            produced += 1
            if limit is not None and produced >= limit:
                return


def count(txn: Any, account_id: str, query: Query) -> int:
    """
    How many Emails (Threads, with C{collapse_threads}) a query finds.
    A filter of one inMailbox is answered from the Mailbox's counts.
    """
    conjuncts = _conjuncts(query.filter)
    if len(conjuncts) == 1 and isinstance(conjuncts[0], InMailbox):
        mailbox_id = conjuncts[0].mailbox_id
        row = txn.fetchone(
            "SELECT total_emails, total_threads FROM mailboxes WHERE account_id = ? AND id = ?",
            (account_id, mailbox_id),
        )
        if row is None:
            return 0
        return int(row[1] if query.collapse_threads else row[0])
    sql, params = statement(txn, account_id, query, columns="count")
    return int(txn.fetchvalue(sql, params, 0))


def explain(txn: Any, account_id: str, query: Query, offset: int = 0, limit: int | None = None) -> list[str]:
    """
    The plan SQLite chooses for a query (EXPLAIN QUERY PLAN details), for
    tests that hold queries to their indexes.
    """
    sql, params = statement(txn, account_id, query, offset=offset, limit=limit)
    return [str(row[-1]) for row in txn.fetchall("EXPLAIN QUERY PLAN " + sql, params)]


def highlight(
    txn: Any,
    account_id: str,
    email_ids: Sequence[str],
    subject_terms: Sequence[Term],
    body_terms: Sequence[Term],
    marks: tuple[str, str],
) -> dict[str, tuple[str | None, str | None]]:
    """
    Matches of the terms in the subjects and bodies of Emails (see
    L{FullTextIndex.highlight}), for SearchSnippet/get.
    """
    return full_text_index(txn).highlight(txn, account_id, email_ids, subject_terms, body_terms, marks)
