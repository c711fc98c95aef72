# -*- test-case-name: tests.mime.test_headers -*-
"""
The parsed forms of a header field value (RFC 8621 section 4.1.2).

Every function here takes the I{Raw} form of one header field: the text
after the colon up to, but excluding, the CRLF that ends the field, folding
line breaks included.  L{jmapd.mime.parse} produces that text from the
message octets by decoding them as UTF-8, replacing every octet run that is
not valid UTF-8 with U+FFFD and dropping NUL, which is exactly what the
RFC asks of the Raw form; so a message with 8-bit Latin-1 headers shows
U+FFFD where the RFC says it should, and the result is always valid JSON.

The forms are best effort: no input makes them raise.  A form that has a
failure value in the RFC (C{null} for MessageIds, Date and URLs) returns
L{None} when the value cannot be parsed; the address forms return what
they could make sense of.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import unicodedata
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_tz

__all__ = [
    "as_raw",
    "as_text",
    "as_addresses",
    "as_grouped_addresses",
    "as_message_ids",
    "as_date",
    "as_urls",
    "PARSED_FORMS",
    "parse_header_property",
    "form_allowed",
    "decode_encoded_words",
    "unfold",
    "strip_comments",
    "text_codec",
    "decode_replacing",
]


def unfold(value: str) -> str:
    """
    Remove the line breaks of folding (RFC 5322 section 2.2.3), and any
    stray line break, keeping the white space that followed them.
    """
    return value.replace("\r\n", "").replace("\n", "").replace("\r", "")


def text_codec(charset: str | None) -> str | None:
    """
    The Python codec name for a MIME charset, or L{None} if Python does not
    know it as a text encoding (C{charset="base64"} names a codec, but not
    one that makes text).  Charset names may carry an RFC 2231 language
    suffix (C{utf-8*en}), which is ignored.
    """
    if not charset:
        return None
    name = charset.split("*", 1)[0].strip().strip('"').lower()
    if not name:
        return None
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):
        return None
    if not getattr(info, "_is_text_encoding", True):
        return None
    return info.name


def decode_replacing(data: bytes, codec: str) -> str:
    """
    C{data} decoded with C{codec}, malformed octets replaced by U+FFFD.  A
    codec that cannot replace (idna refuses every error handler but
    strict) decodes as UTF-8 instead: a charset label alone must not make
    a message fail to parse.
    """
    try:
        return data.decode(codec, "replace")
    except Exception:  # noqa: BLE001 - any codec failure means "not in this charset"
        return data.decode("utf-8", "replace")


_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")


def _decode_q(text: str) -> bytes:
    """
    The octets of the text of a Q-encoded word (RFC 2047 section 4.2): C{_}
    is a space and C{=XX} an octet; a malformed C{=} stays as it is.
    """
    raw = text.replace("_", " ").encode("ascii", "replace")
    out = bytearray()
    i = 0
    while i < len(raw):
        c = raw[i]
        if c == 0x3D and _is_hex(raw[i + 1 : i + 3]):
            out.append(int(raw[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(c)
            i += 1
    return bytes(out)


def _is_hex(pair: bytes) -> bool:
    return len(pair) == 2 and all(c in b"0123456789abcdefABCDEF" for c in pair)


def _decode_b(text: str) -> bytes | None:
    """
    The octets of the text of a B-encoded word, tolerating missing padding;
    L{None} if it is not base64 at all.
    """
    data = text.strip("=")
    data += "=" * (-len(data) % 4)
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None


def _drop_controls(text: str) -> str:
    return "".join(c for c in text if c in "\t" or unicodedata.category(c) != "Cc")


def decode_encoded_words(text: str) -> str:
    """
    Decode the RFC 2047 encoded words of C{text}, following RFC 8621's
    rules for the Text form: only whole white-space-delimited words are
    decoded (an encoded word glued to other text violates RFC 2047's
    placement rules and must stay as it is), words in an unknown charset
    stay as they are, the white space between two adjacent encoded words
    disappears, and the octets of adjacent words in the same charset are
    joined before the charset is decoded, so a multi-octet character split
    across two words comes out whole.  Control characters from encoded
    words are dropped; undecodable octets become U+FFFD.
    """
    if "=?" not in text:
        return text
    # Items are either ("text", str) or ("word", codec, bytes).
    items: list[tuple] = []
    for chunk in re.split(r"(\s+)", text):
        if not chunk:
            continue
        match = _ENCODED_WORD.fullmatch(chunk)
        codec = text_codec(match.group(1)) if match else None
        if match is None or codec is None:
            items.append(("text", chunk))
            continue
        if match.group(2) in "bB":
            data = _decode_b(match.group(3))
            if data is None:
                items.append(("text", "\ufffd"))
                continue
        else:
            data = _decode_q(match.group(3))
        items.append(("word", codec, data))

    out: list[str] = []
    pending: tuple[str, bytearray] | None = None
    previous_word = False

    def flush() -> None:
        nonlocal pending
        if pending is not None:
            out.append(_drop_controls(decode_replacing(bytes(pending[1]), pending[0])))
            pending = None

    for index, item in enumerate(items):
        if item[0] == "word":
            if pending is not None and pending[0] == item[1]:
                pending[1].extend(item[2])
            else:
                flush()
                pending = (item[1], bytearray(item[2]))
            previous_word = True
            continue
        chunk = item[1]
        if previous_word and chunk.isspace() and index + 1 < len(items) and items[index + 1][0] == "word":
            continue
        flush()
        out.append(chunk)
        previous_word = False
    flush()
    return "".join(out)


def as_raw(raw: str) -> str:
    """
    The Raw form: the value as it is in the message.
    """
    return raw


def as_text(raw: str) -> str:
    """
    The Text form (RFC 8621 section 4.1.2.2): unfolded, the SP characters
    at the beginning removed, RFC 2047 encoded words decoded, in NFC.  Only
    leading SP goes: the RFC keeps other white space, trailing included,
    so a value set through the Text form reads back as it was set.
    """
    return unicodedata.normalize("NFC", decode_encoded_words(unfold(raw).lstrip(" ")))


# ---------------------------------------------------------------------------
# Addresses

_SPECIALS = '"()<>,:;'


def _tokenize(value: str) -> list[tuple[str, str, str]]:
    """
    Split an address list into (kind, text, source) tokens: kind C{"w"} for
    a run of ordinary characters, C{"q"} for a quoted string (text without
    the quotes, quoted pairs decoded), C{"c"} for a comment, or one of the
    characters C{<>,:;}.  Source is the token as written.  White space only
    separates tokens.  Unterminated quoted strings and comments end at the
    end of the value.
    """
    tokens = []
    i, n = 0, len(value)
    while i < n:
        c = value[i]
        if c.isspace():
            i += 1
        elif c == '"':
            j = i + 1
            text = []
            while j < n and value[j] != '"':
                if value[j] == "\\" and j + 1 < n:
                    j += 1
                text.append(value[j])
                j += 1
            tokens.append(("q", "".join(text), value[i : j + 1]))
            i = j + 1
        elif c == "(":
            depth, j = 1, i + 1
            text = []
            while j < n and depth:
                if value[j] == "\\" and j + 1 < n:
                    j += 1
                elif value[j] == "(":
                    depth += 1
                elif value[j] == ")":
                    depth -= 1
                    if not depth:
                        break
                text.append(value[j])
                j += 1
            tokens.append(("c", "".join(text), value[i : j + 1]))
            i = j + 1
        elif c in "<>,:;":
            tokens.append((c, c, c))
            i += 1
        elif c == ")":
            i += 1
        else:
            j = i
            while j < n and not value[j].isspace() and value[j] not in _SPECIALS:
                j += 1
            tokens.append(("w", value[i:j], value[i:j]))
            i = j
    return tokens


def _phrase(pieces: list[tuple[str, str]]) -> str | None:
    """
    A display name from its (kind, text) words and quoted strings: joined
    by single spaces, encoded words decoded, surrounding white space
    removed, NFC; L{None} if nothing is left.  Quoted strings (kind C{"q"})
    are not decoded: RFC 2047 section 5 forbids an encoded word inside
    one, and RFC 8621 section 4.1.2.2 says text that breaks its placement
    rules MUST NOT be decoded.
    """
    out: list[str] = []
    run: list[str] = []
    for kind, text in pieces:
        if kind == "q":
            if run:
                out.append(decode_encoded_words(" ".join(run)))
                run = []
            out.append(text)
        else:
            run.append(text)
    if run:
        out.append(decode_encoded_words(" ".join(run)))
    joined = " ".join(out).strip()
    return unicodedata.normalize("NFC", joined) if joined else None


class _AddressListParser:
    """
    A best-effort RFC 5322 address-list parser (section 3.4) that keeps
    groups.  It accepts what real messages contain: unquoted commas in
    display names become separate entries, missing angle brackets or
    semicolons are tolerated, and obsolete routes are dropped.
    """

    def __init__(self) -> None:
        self.groups: list[dict] = []
        self.group: dict | None = None
        self._reset()

    def _reset(self) -> None:
        self.words: list[tuple[str, str, str]] = []
        self.angle: str | None = None
        self.comment: str | None = None

    def _add(self, address: dict) -> None:
        if self.group is not None:
            self.group["addresses"].append(address)
        elif self.groups and self.groups[-1]["name"] is None and self.groups[-1].get("_open"):
            self.groups[-1]["addresses"].append(address)
        else:
            self.groups.append({"name": None, "addresses": [address], "_open": True})

    def end_mailbox(self) -> None:
        words = [w for w in self.words if w[0] in "wq"]
        if self.angle is not None:
            email = self.angle
            if ":" in email and email.startswith("@"):
                email = email.rsplit(":", 1)[1]
            name = _phrase([w[:2] for w in words])
            self._add({"name": name, "email": email})
        elif words:
            if len(words) > 1 and "@" in words[-1][2] and not words[-1][2].startswith("@"):
                name = _phrase([w[:2] for w in words[:-1]])
                email = words[-1][2]
            else:
                name = None
                email = "".join(w[2] for w in words)
            if name is None and self.comment:
                name = _phrase([("c", self.comment)])
            self._add({"name": name, "email": email})
        self._reset()

    def feed(self, tokens: list[tuple[str, str, str]]) -> list[dict]:
        i = 0
        while i < len(tokens):
            kind, text, source = tokens[i]
            if kind == "<":
                if self.angle is not None:
                    # A second angle address: the separating comma is missing.
                    self.end_mailbox()
                j = i + 1
                parts = []
                while j < len(tokens) and tokens[j][0] != ">":
                    if tokens[j][0] != "c":
                        parts.append(tokens[j][2])
                    j += 1
                self.angle = "".join(parts)
                i = j + 1
                continue
            if kind == ">":
                pass
            elif kind == ",":
                self.end_mailbox()
            elif kind == ":" and self.group is None and self.angle is None:
                name = _phrase([w[:2] for w in self.words if w[0] in "wq"])
                self._reset()
                self._close_open()
                self.group = {"name": name, "addresses": []}
                self.groups.append(self.group)
            elif kind == ":":
                self.words.append(("w", ":", ":"))
            elif kind == ";":
                self.end_mailbox()
                if self.group is not None:
                    self.group = None
            elif kind == "c":
                if self.comment is None and self.words and self.angle is None:
                    self.comment = text
            else:
                if self.angle is not None:
                    # Text after an angle address: the start of a new entry
                    # whose separating comma is missing.
                    self.end_mailbox()
                self.words.append((kind, text, source))
            i += 1
        self.end_mailbox()
        for group in self.groups:
            group.pop("_open", None)
        return self.groups

    def _close_open(self) -> None:
        if self.groups and self.groups[-1].get("_open"):
            self.groups[-1].pop("_open")


def as_grouped_addresses(raw: str) -> list[dict]:
    """
    The GroupedAddresses form (RFC 8621 section 4.1.2.4): a list of
    C{{"name": str|None, "addresses": [EmailAddress...]}}, consecutive
    addresses outside a group collected under a group named L{None}.
    """
    return _AddressListParser().feed(_tokenize(unfold(raw)))


def as_addresses(raw: str) -> list[dict]:
    """
    The Addresses form (RFC 8621 section 4.1.2.3): every mailbox of the
    address list as C{{"name": str|None, "email": str}}, groups flattened.
    """
    return [a for g in as_grouped_addresses(raw) for a in g["addresses"]]


# ---------------------------------------------------------------------------
# Message ids, dates, URLs


def strip_comments(value: str) -> str:
    """
    The value with its RFC 5322 comments replaced by a space (quoted
    strings are respected, so a parenthesis in quotes stays).
    """
    if "(" not in value:
        # No comment can start: the loop below would copy every character.
        return value
    out = []
    depth = 0
    quoted = False
    i = 0
    while i < len(value):
        c = value[i]
        if c == "\\" and (quoted or depth):
            if not depth:
                out.append(value[i : i + 2])
            i += 2
            continue
        if depth:
            if c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
                if not depth:
                    out.append(" ")
        elif c == '"':
            quoted = not quoted
            out.append(c)
        elif c == "(" and not quoted:
            depth = 1
        else:
            out.append(c)
        i += 1
    return "".join(out)


def as_message_ids(raw: str) -> list[str] | None:
    """
    The MessageIds form (RFC 8621 section 4.1.2.5): the msg-ids without
    angle brackets, comments and white space, or L{None} if the value holds
    none.  A single bare id-left@id-right without brackets, as some
    software writes, is accepted.
    """
    value = strip_comments(unfold(raw))
    ids = ["".join(found.split()) for found in re.findall(r"<([^<>]*)>", value)]
    ids = [i for i in ids if i]
    if ids:
        return ids
    bare = value.strip()
    if bare and "@" in bare and not any(c.isspace() or c in "<>" for c in bare):
        return [bare]
    return None


def _format_offset(offset: int) -> str:
    if offset == 0:
        return "Z"
    sign = "+" if offset > 0 else "-"
    minutes = abs(offset) // 60
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def as_date(raw: str) -> str | None:
    """
    The Date form (RFC 8621 section 4.1.2.6) as an RFC 3339 date-time that
    keeps the field's own UTC offset (C{Z} for a zero or unknown offset),
    or L{None} if the value is not a date.  Obsolete forms (two-digit years,
    named zones) are accepted; a leap second becomes :59.
    """
    value = " ".join(strip_comments(unfold(raw)).split())
    if not value:
        return None
    try:
        parsed = parsedate_tz(value)
    except (ValueError, IndexError, TypeError):
        return None
    if parsed is None:
        return None
    year, month, day, hour, minute, second = parsed[:6]
    offset = parsed[9] or 0
    try:
        when = datetime(year, month, day, hour, minute, min(second, 59))
        tz = timezone(timedelta(seconds=offset))
    except (ValueError, OverflowError):
        return None
    if not 1 <= when.year <= 9999:
        return None
    return when.replace(tzinfo=tz).strftime("%Y-%m-%dT%H:%M:%S") + _format_offset(offset)


def as_urls(raw: str) -> list[str] | None:
    """
    The URLs form (RFC 8621 section 4.1.2.7, RFC 2369): the URLs in angle
    brackets with white space removed, comments dropped; L{None} when there
    is none (e.g. C{List-Post: NO}).
    """
    value = strip_comments(unfold(raw))
    urls = ["".join(found.split()) for found in re.findall(r"<([^<>]*)>", value)]
    urls = [u for u in urls if u]
    return urls or None


PARSED_FORMS: dict[str, Callable[[str], object]] = {
    "Raw": as_raw,
    "Text": as_text,
    "Addresses": as_addresses,
    "GroupedAddresses": as_grouped_addresses,
    "MessageIds": as_message_ids,
    "Date": as_date,
    "URLs": as_urls,
}


# ---------------------------------------------------------------------------
# header:{name}[:as{form}][:all]


def _valid_field_name(name: str) -> bool:
    return bool(name) and all(33 <= ord(c) <= 126 and c != ":" for c in name)


def parse_header_property(name: str) -> tuple[str, str, bool] | None:
    """
    Split a C{header:{name}[:as{form}][:all]} property name (RFC 8621
    section 4.1.3) into the field name as the client wrote it, the form
    (C{"Raw"} when not given) and whether C{:all} was asked for; L{None} if
    the property is not of that shape or names an unknown form.
    """
    pieces = name.split(":")
    if len(pieces) < 2 or pieces[0] != "header" or not _valid_field_name(pieces[1]):
        return None
    field, rest = pieces[1], pieces[2:]
    form, want_all = "Raw", False
    if rest and rest[0].startswith("as"):
        form = rest.pop(0)[2:]
        if form not in PARSED_FORMS:
            return None
    if rest and rest[0] == "all":
        want_all = True
        rest.pop(0)
    if rest:
        return None
    return field, form, want_all


#: Header fields defined by RFC 5322 and RFC 2369, lowercased: only the
#: forms the RFC lists are allowed for them; any other field allows all.
_KNOWN_FIELDS = frozenset(
    """
    date from sender reply-to to cc bcc message-id in-reply-to references
    subject comments keywords resent-date resent-from resent-sender resent-to
    resent-cc resent-bcc resent-message-id return-path received
    list-help list-unsubscribe list-subscribe list-post list-owner list-archive
    """.split()
)

_ADDRESS_FIELDS = frozenset(
    """
    from sender reply-to to cc bcc resent-from resent-sender resent-reply-to
    resent-to resent-cc resent-bcc
    """.split()
)

_ALLOWED = {
    "Raw": None,
    "Text": frozenset(["subject", "comments", "keywords", "list-id"]),
    "Addresses": _ADDRESS_FIELDS,
    "GroupedAddresses": _ADDRESS_FIELDS,
    "MessageIds": frozenset(["message-id", "in-reply-to", "references", "resent-message-id"]),
    "Date": frozenset(["date", "resent-date"]),
    "URLs": frozenset(
        [
            "list-help",
            "list-unsubscribe",
            "list-subscribe",
            "list-post",
            "list-owner",
            "list-archive",
        ]
    ),
}


def form_allowed(header_name: str, form: str) -> bool:
    """
    Whether RFC 8621 section 4.1.2 lets header field C{header_name} be
    fetched or set in parsed form C{form}: Raw always; the other forms only
    for the fields each lists, plus any field that RFC 5322 and RFC 2369 do
    not define.
    """
    if form not in _ALLOWED:
        return False
    allowed = _ALLOWED[form]
    if allowed is None:
        return True
    lower = header_name.lower()
    return lower in allowed or (lower not in _KNOWN_FIELDS and lower not in _ADDRESS_FIELDS)
