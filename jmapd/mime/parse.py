# -*- test-case-name: tests.mime.test_parse -*-
"""
Parse a raw message once, at ingest, into a description from which
Email/get serves every property of RFC 8621 section 4.1 without reading the
message again, except for body values and part blobs, which read only the
octets of their part.

C{parse_message(raw)} returns a JSON-serialisable dict (a I{ParsedMessage})::

    {
      "size": int,                      # len(raw)
      "headers": [{"name": str, "value": str}, ...],   # top level, in order, Raw form
      "bodyStructure": <part>,
      "textBody": [partId, ...], "htmlBody": [partId, ...], "attachments": [partId, ...],
      "hasAttachment": bool,
      "preview": str,                   # at most 256 characters
      "subject": str|None, "sentAt": str|None,
      "messageId": [str]|None, "inReplyTo": [str]|None, "references": [str]|None,
      "sender", "from", "to", "cc", "bcc", "replyTo": [EmailAddress]|None,
    }

and a part is::

    {
      "partId": str|None,               # None for multipart/*
      "size": int,                      # octets after transfer decoding
      "headers": [{"name", "value"}],   # the part's own header fields
      "name": str|None, "type": str, "charset": str|None,
      "disposition": str|None, "cid": str|None,
      "language": [str]|None, "location": str|None,
      "subParts": [part]|None,          # list for multipart/*, else None
      "_offset": int,                   # where the part's body octets start in raw
      "_length": int,                   # how many body octets (still transfer-encoded)
      "_encoding": str,                 # Content-Transfer-Encoding, lowercase ("" if none)
    }

Part ids are IMAP section numbers ("1", "2", "2.1"): a message that is
not multipart has the single part "1"; the children of a multipart are
numbered from 1 under their parent's number.  message/rfc822 and
message/global parts are leaves: their content is not descended into
(Email/parse does that, on their blob).

Header values are the message octets decoded as UTF-8 with invalid
sequences replaced by U+FFFD and NUL dropped (see L{jmapd.mime.headers}).

The MIME structure is split here, on the octets, rather than by the stdlib
C{email} parser, because the stdlib parser does not say where a part's
octets are, and serving a body value or a part blob by offset is what
spares Email/get a re-parse.  Header parameters (Content-Type,
Content-Disposition, RFC 2231 continuations and charsets) are read as the
stdlib's C{email.message.Message} reads them, split in linear time.
Nothing here raises on malformed input: a multipart without a boundary, or
whose boundary never appears, becomes a text/plain leaf so its content is
still readable; a missing closing boundary ends the last part at the end of
its parent; a header block without the empty line after it ends at the
first line that is not a header field.
"""

from __future__ import annotations

import email.utils
import re
import unicodedata
from collections.abc import Callable
from typing import Any

from jmapd.mime.body import decode_part, decode_text
from jmapd.mime.headers import (
    as_addresses,
    as_date,
    as_message_ids,
    as_text,
    decode_encoded_words,
    strip_comments,
    unfold,
)
from jmapd.mime.html import html_to_text

__all__ = ["parse_message", "find_part", "parse_headers", "content_type_param", "PREVIEW_LENGTH"]

#: The longest preview RFC 8621 allows.
PREVIEW_LENGTH = 256

#: Deeper nesting than this, or more parts than _MAX_PARTS (in one
#: multipart or in all), is not split further: the rest is a leaf.  Real
#: mail never comes close.
_MAX_DEPTH = 64
_MAX_PARTS = 5000

_FIELD_NAME = re.compile(rb"^[!-9;-~]+$")


def _decode_header_octets(octets: bytes) -> str:
    return octets.decode("utf-8", "replace").replace("\x00", "")


def parse_headers(raw: bytes, start: int, end: int) -> tuple[list[dict], int]:
    """
    Read the header block of the entity at C{raw[start:end]}.  Returns the
    header fields, C{{"name", "value"}} in order with values in Raw form,
    and the offset where the body starts (after the empty line, or at the
    first line that is neither a header field nor a continuation).  An mbox
    C{From } line at the very start is skipped.
    """
    headers: list[dict] = []
    # [name, value start, value end] for the field being read
    current: list | None = None
    pos = start
    body_start = end

    def finish() -> None:
        if current is not None:
            headers.append(
                {
                    "name": _decode_header_octets(current[0]),
                    "value": _decode_header_octets(raw[current[1] : current[2]]),
                }
            )

    while pos < end:
        newline = raw.find(b"\n", pos, end)
        line_end = end if newline < 0 else newline + 1
        content_end = line_end
        if raw[content_end - 1 : content_end] == b"\n":
            content_end -= 1
        if content_end > pos and raw[content_end - 1 : content_end] == b"\r":
            content_end -= 1
        if content_end == pos:
            body_start = line_end
            break
        first = raw[pos : pos + 1]
        if first in (b" ", b"\t") and current is not None:
            current[2] = content_end
            pos = line_end
            continue
        colon = raw.find(b":", pos, content_end)
        name = raw[pos:colon].rstrip(b" \t") if colon > pos else b""
        if not _FIELD_NAME.match(name):
            if pos == start and raw.startswith(b"From ", pos):
                pos = line_end
                continue
            body_start = pos
            break
        finish()
        current = [name, colon + 1, content_end]
        pos = line_end
    finish()
    return headers, body_start


def _safe_param(call: Callable[[], object]) -> str | None:
    """
    A parameter read by the stdlib, or L{None} when the stdlib cannot make
    sense of the header (it raises on some malformed RFC 2231
    continuations).
    """
    try:
        value = call()
    except Exception:  # noqa: BLE001 - any failure means "no usable parameter"
        return None
    if isinstance(value, tuple):
        value = value[2]
    return None if value is None else str(value)


#: What decides where a parameter ends: C{;} outside quotes, C{"}, and
#: C{\\"}, which the stdlib does not count as a quote.
_PARAM_SYNTAX = re.compile(r'\\"|"|;')


def _split_params(value: str) -> list[tuple[str, str]]:
    """
    C{value} split into C{(name, value)} pairs at the semicolons outside
    quotes, the type or disposition itself first with an empty value: what
    C{email.message._parseparam} and C{Message._get_params_preserve} make,
    in one pass.  The stdlib recounts the quotes from the start of the
    parameter at every semicolon, and copies the rest of the value after
    every parameter: a 100 KB Content-Type of one quote and semicolons
    took 24 seconds.
    """
    pieces = []
    start = 0
    quotes = 0
    for match in _PARAM_SYNTAX.finditer(value):
        token = match.group()
        if token == '"':
            quotes += 1
        elif token == ";" and quotes % 2 == 0:
            pieces.append(value[start : match.start()])
            start = match.end()
            quotes = 0
    pieces.append(value[start:])
    params = []
    for piece in pieces:
        name, equals, rest = piece.partition("=")
        if equals:
            params.append((name.strip().lower(), rest.strip()))
        else:
            params.append((piece.strip(), ""))
    return params


class _Params:
    """
    The parameters of a part's Content-Type and Content-Disposition,
    answered as C{email.message.Message}'s C{get_param}, C{get_filename}
    and C{get_boundary} answer (RFC 2231 continuations and charsets
    included), but each field split once and in linear time (see
    L{_split_params}).  Like the stdlib's, the getters may raise on a
    malformed RFC 2231 continuation.
    """

    def __init__(self, content_type: str | None, disposition: str | None) -> None:
        self._fields = {"content-type": content_type, "content-disposition": disposition}
        self._decoded: dict[str, list[tuple[str, Any]]] = {}

    def _params(self, header: str) -> list[tuple[str, Any]] | None:
        value = self._fields[header]
        if value is None:
            return None
        decoded = self._decoded.get(header)
        if decoded is None:
            decoded = self._decoded[header] = email.utils.decode_params(_split_params(value))
        return decoded

    def get_param(self, param: str, header: str = "content-type") -> Any:
        for name, value in self._params(header) or ():
            if name.lower() == param:
                if isinstance(value, tuple):
                    return value[0], value[1], email.utils.unquote(value[2])
                return email.utils.unquote(value)
        return None

    def get_filename(self) -> str | None:
        filename = self.get_param("filename", "content-disposition")
        if filename is None:
            filename = self.get_param("name")
        if filename is None:
            return None
        return str(email.utils.collapse_rfc2231_value(filename)).strip()

    def get_boundary(self) -> str | None:
        boundary = self.get_param("boundary")
        if boundary is None:
            return None
        return str(email.utils.collapse_rfc2231_value(boundary)).rstrip()


def content_type_param(value: str, name: str) -> str | None:
    """
    The parameter C{name} (lower case) of the Content-Type field value
    C{value}, read as the parse reads a part's (in linear time, RFC 2231
    included), or L{None} when it has none or it cannot be read.
    """
    params = _Params(unfold(value), None)
    return _safe_param(lambda: params.get_param(name))


def _by_name(headers: list[dict]) -> dict[str, list[str]]:
    """
    The values of each header field, by lower-case name, in order: one
    pass over the fields however many of them are then looked up.
    """
    found: dict[str, list[str]] = {}
    for header in headers:
        found.setdefault(header["name"].lower(), []).append(header["value"])
    return found


def _first(fields: dict[str, list[str]], name: str) -> str | None:
    values = fields.get(name)
    return values[0] if values else None


def _last(fields: dict[str, list[str]], name: str) -> str | None:
    values = fields.get(name)
    return values[-1] if values else None


_MEDIA_TYPE = re.compile(r"^[^\s/;]+/[^\s/;]+$")


def _media_type(value: str) -> str | None:
    """
    The type/subtype of a Content-Type value, lowercase, with CFWS removed
    and parameters stripped; L{None} if it is not of that shape.
    """
    bare = "".join(strip_comments(unfold(value).split(";", 1)[0]).split()).lower()
    return bare if _MEDIA_TYPE.match(bare) else None


def _token(value: str | None) -> str | None:
    """
    The first token of a structured value (Content-Disposition,
    Content-Transfer-Encoding), lowercase, CFWS and parameters removed.
    """
    if value is None:
        return None
    bare = "".join(strip_comments(unfold(value).split(";", 1)[0]).split()).lower()
    return bare or None


def _cid(value: str | None) -> str | None:
    if value is None:
        return None
    ids = as_message_ids(value)
    if ids:
        return ids[0]
    bare = "".join(strip_comments(unfold(value)).split()).strip("<>")
    return bare or None


def _language(value: str | None) -> list[str] | None:
    if value is None:
        return None
    tags = [t.strip() for t in strip_comments(unfold(value)).split(",")]
    return [t for t in tags if t]


def _location(value: str | None) -> str | None:
    if value is None:
        return None
    return "".join(unfold(value).split()) or None


class _Walker:
    """
    Splits the MIME tree of one message, numbering the parts.
    """

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.count = 0

    def part(self, start: int, end: int, section: str, default_type: str, depth: int) -> dict:
        raw = self.raw
        self.count += 1
        headers, body_start = parse_headers(raw, start, end)
        fields = _by_name(headers)
        content_type = _first(fields, "content-type")
        disposition = _first(fields, "content-disposition")
        params = _Params(
            None if content_type is None else unfold(content_type),
            None if disposition is None else unfold(disposition),
        )

        media_type = _media_type(content_type) if content_type is not None else None
        if media_type is None:
            media_type = default_type if content_type is None else "text/plain"

        subparts = None
        if media_type.startswith("multipart/"):
            if depth < _MAX_DEPTH and self.count < _MAX_PARTS:
                subparts = self._children(params, media_type, body_start, end, section, depth)
            if subparts is None:
                # Unsplittable: serve the octets as text.
                media_type = "text/plain"

        charset = _safe_param(lambda: params.get_param("charset")) if content_type is not None else None
        if charset is not None:
            charset = charset.strip() or None
        if charset is None and media_type.startswith("text/"):
            charset = "us-ascii"

        name = _safe_param(params.get_filename)
        if name is not None:
            name = unicodedata.normalize("NFC", decode_encoded_words(name)).strip() or None

        encoding = _token(_first(fields, "content-transfer-encoding")) or ""
        part = {
            "partId": None if subparts is not None else (section or "1"),
            "size": 0,
            "headers": headers,
            "name": name,
            "type": media_type,
            "charset": charset,
            "disposition": _token(disposition),
            "cid": _cid(_first(fields, "content-id")),
            "language": _language(_first(fields, "content-language")),
            "location": _location(_first(fields, "content-location")),
            "subParts": subparts,
            "_offset": body_start,
            "_length": max(0, end - body_start),
            "_encoding": encoding if subparts is None else "",
        }
        if subparts is None:
            part["size"] = len(decode_part(raw, part))
        else:
            part["size"] = part["_length"]
        return part

    def _children(
        self,
        params: _Params,
        media_type: str,
        body_start: int,
        end: int,
        section: str,
        depth: int,
    ) -> list[dict] | None:
        raw = self.raw
        boundary = _safe_param(params.get_boundary)
        if not boundary:
            # Some software leaves the parameter out; the first line that
            # looks like a delimiter says what the boundary is.
            guess = re.compile(rb"^--([^\r\n]{1,70}?)[ \t]*\r?$", re.M).search(raw, body_start, end)
            if guess is None:
                return None
            boundary_octets = guess.group(1)
        else:
            boundary_octets = boundary.encode("utf-8", "replace")
        ranges: list[tuple[int, int]] = []
        current: int | None = None
        found = False
        # Each delimiter line is a part: without this bound, a megabyte of
        # "--b" lines was 250,000 parts and some 300 MB of part dicts.
        room = max(1, _MAX_PARTS - self.count)
        for line_start, after, closing in _delimiters(raw, boundary_octets, body_start, end):
            found = True
            content_end = line_start
            # The line break before a delimiter belongs to the delimiter.
            if raw[content_end - 2 : content_end] == b"\r\n":
                content_end -= 2
            elif raw[content_end - 1 : content_end] == b"\n":
                content_end -= 1
            if current is not None:
                ranges.append((current, max(current, content_end)))
            if closing:
                current = None
                break
            current = after
            if len(ranges) >= room:
                # The rest, delimiters and all, is the last part.
                break
        if not found:
            return None
        if current is not None:
            ranges.append((current, end))

        child_default = "message/rfc822" if media_type == "multipart/digest" else "text/plain"
        children = []
        for index, (child_start, child_end) in enumerate(ranges, 1):
            child_section = f"{section}.{index}" if section else str(index)
            children.append(self.part(child_start, child_end, child_section, child_default, depth + 1))
        return children


_DELIMITER_TAIL = re.compile(rb"(--)?[ \t]*\r?(?:\n|$)")


def _delimiters(raw: bytes, boundary: bytes, start: int, end: int):
    """
    The delimiter lines of C{boundary} in C{raw[start:end]}: for each, the
    offset where the line starts, the offset after its line break, and
    whether it is the closing delimiter.  A delimiter is C{--boundary} at
    the start of a line, optionally C{--}, then only white space to the end
    of the line.  Found with C{bytes.find}, which is much faster than a
    multiline regular expression on a large message.
    """
    needle = b"--" + boundary
    pos = start
    while True:
        found = raw.find(needle, pos, end)
        if found < 0:
            return
        pos = found + len(needle)
        if found != start and raw[found - 1 : found] != b"\n":
            continue
        tail = _DELIMITER_TAIL.match(raw, pos, end)
        if tail is None:
            continue
        yield found, tail.end(), tail.group(1) is not None


def _is_inline_media(media_type: str) -> bool:
    return media_type.startswith(("image/", "audio/", "video/"))


def _parse_structure(
    parts: list[dict],
    multipart_type: str,
    in_alternative: bool,
    html_body: list | None,
    text_body: list | None,
    attachments: list,
) -> None:
    """
    The parseStructure algorithm of RFC 8621 section 4.1.4, as written
    there: it decomposes the tree into textBody, htmlBody and attachments.
    """
    text_length = len(text_body) if text_body is not None else -1
    html_length = len(html_body) if html_body is not None else -1

    for i, part in enumerate(parts):
        media_type = part["type"]
        is_multipart = media_type.startswith("multipart/")
        is_inline = (
            part["disposition"] != "attachment"
            and (media_type in ("text/plain", "text/html") or _is_inline_media(media_type))
            and (
                i == 0 or (multipart_type != "related" and (_is_inline_media(media_type) or not part["name"]))
            )
        )
        if is_multipart:
            sub_type = media_type.split("/", 1)[1]
            _parse_structure(
                part["subParts"],
                sub_type,
                in_alternative or sub_type == "alternative",
                html_body,
                text_body,
                attachments,
            )
        elif is_inline:
            if multipart_type == "alternative":
                # The RFC's code assumes both lists exist here; they do not
                # when an alternative is nested in a mixed inside another
                # alternative, and then the part belongs to neither.
                if media_type == "text/plain":
                    if text_body is not None:
                        text_body.append(part)
                elif media_type == "text/html":
                    if html_body is not None:
                        html_body.append(part)
                else:
                    attachments.append(part)
                continue
            elif in_alternative:
                if media_type == "text/plain":
                    html_body = None
                if media_type == "text/html":
                    text_body = None
            if text_body is not None:
                text_body.append(part)
            if html_body is not None:
                html_body.append(part)
            if (text_body is None or html_body is None) and _is_inline_media(media_type):
                attachments.append(part)
        else:
            attachments.append(part)

    if multipart_type == "alternative" and text_body is not None and html_body is not None:
        # Found HTML part only
        if text_length == len(text_body) and html_length != len(html_body):
            text_body.extend(html_body[html_length:])
        # Found plaintext part only
        if html_length == len(html_body) and text_length != len(text_body):
            html_body.extend(text_body[text_length:])


def _embedded_ids(part: dict, found: set[str]) -> set[str]:
    """
    The partIds of parts that are the non-first children of a
    multipart/related and have a Content-ID: images an HTML body embeds,
    which RFC 8621 lets hasAttachment ignore.
    """
    subparts = part["subParts"]
    if subparts is None:
        return found
    for index, child in enumerate(subparts):
        if (
            part["type"] == "multipart/related"
            and index > 0
            and child["partId"] is not None
            and child["cid"] is not None
            and child["disposition"] != "attachment"
        ):
            found.add(child["partId"])
        _embedded_ids(child, found)
    return found


def _preview(raw: bytes, text_body: list[dict]) -> str:
    """
    Up to 256 characters of the text of the body parts, white space
    collapsed; quoted lines (C{>}) are skipped when something else is left.
    """
    pieces: list[str] = []
    length = 0
    for part in text_body:
        if part["type"] not in ("text/plain", "text/html"):
            continue
        text, _ = decode_text(decode_part(raw, part), part["charset"])
        if part["type"] == "text/html":
            text = html_to_text(text)
        elif ">" in text:
            unquoted = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith(">"))
            if unquoted.strip():
                text = unquoted
        text = " ".join(text.split())
        if text:
            pieces.append(text)
            length += len(text) + 1
        if length > PREVIEW_LENGTH:
            break
    return " ".join(pieces)[:PREVIEW_LENGTH].rstrip()


def _address_field(fields: dict[str, list[str]], name: str) -> list[dict] | None:
    value = _last(fields, name)
    return None if value is None else as_addresses(value)


def _ids_field(fields: dict[str, list[str]], name: str) -> list[str] | None:
    value = _last(fields, name)
    return None if value is None else as_message_ids(value)


def parse_message(raw: bytes) -> dict:
    """
    The ParsedMessage of C{raw} (see the module docstring).
    """
    root = _Walker(raw).part(0, len(raw), "", "text/plain", 0)
    headers = root["headers"]
    text_body: list[dict] = []
    html_body: list[dict] = []
    attachments: list[dict] = []
    _parse_structure([root], "mixed", False, html_body, text_body, attachments)
    embedded = _embedded_ids(root, set())
    fields = _by_name(headers)
    subject = _last(fields, "subject")
    date = _last(fields, "date")
    return {
        "size": len(raw),
        "headers": headers,
        "bodyStructure": root,
        "textBody": [p["partId"] for p in text_body],
        "htmlBody": [p["partId"] for p in html_body],
        "attachments": [p["partId"] for p in attachments],
        "hasAttachment": any(
            p["disposition"] != "inline" and p["partId"] not in embedded for p in attachments
        ),
        "preview": _preview(raw, text_body),
        "subject": None if subject is None else as_text(subject),
        "sentAt": None if date is None else as_date(date),
        "messageId": _ids_field(fields, "message-id"),
        "inReplyTo": _ids_field(fields, "in-reply-to"),
        "references": _ids_field(fields, "references"),
        "sender": _address_field(fields, "sender"),
        "from": _address_field(fields, "from"),
        "to": _address_field(fields, "to"),
        "cc": _address_field(fields, "cc"),
        "bcc": _address_field(fields, "bcc"),
        "replyTo": _address_field(fields, "reply-to"),
    }


def find_part(parsed: dict, part_id: str) -> dict | None:
    """
    The part of C{parsed} whose partId is C{part_id}, or L{None}.
    """
    stack = [parsed["bodyStructure"]]
    while stack:
        part = stack.pop()
        if part["partId"] == part_id:
            return part
        if part["subParts"]:
            stack.extend(reversed(part["subParts"]))
    return None
