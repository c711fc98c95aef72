# -*- test-case-name: tests.mime.test_build -*-
"""
Build the message of an Email/set create (RFC 8621 section 4.6) from the
client's Email object, its bodyValues and the blobs it references.

The Email object sets header fields through convenience properties
(C{from}, C{subject}, C{sentAt}, ...) and C{header:{name}[:as{form}][:all]}
properties, and the body through either C{bodyStructure} or the flat
C{textBody}/C{htmlBody}/C{attachments}.  The RFC's constraints on these are
checked here and reported as L{BuildError}, naming the offending property
by its path (C{"bodyStructure/subParts/1/charset"}), so the caller can
answer invalidProperties, or blobNotFound when L{BuildError.not_found} is
not empty.

What we write: CRLF line endings; a generated Message-ID (at the given
host name) and Date when the client set none; MIME-Version 1.0; text from
bodyValues as UTF-8 in 7bit when it is plain ASCII with short lines,
otherwise quoted-printable (base64 for mostly non-ASCII text); blobs in
7bit when they are already safe, otherwise base64, except message/* blobs
which MIME forbids to encode and go as 7bit or 8bit; non-ASCII header text
as RFC 2047 encoded words, non-ASCII file names as RFC 2231 parameters
(with an RFC 2047 C{name} on Content-Type for older readers).  The flat
properties make the usual tree: multipart/alternative for text and HTML,
multipart/related around the HTML and the attachments it embeds by
Content-ID, multipart/mixed for the other attachments.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from urllib.parse import quote

from jmapd.mime.headers import form_allowed, parse_header_property

__all__ = ["BuildError", "build_message"]


class BuildError(Exception):
    """
    The Email object cannot be turned into a message.

    @ivar property: the path of the offending property (C{"textBody"},
        C{"bodyStructure/subParts/0/partId"}, C{"header:From:asAddresses"}).
    @ivar description: what is wrong, for the SetError description.
    @ivar not_found: the blobIds that do not exist; when not empty the
        error is a blobNotFound, not an invalidProperties.
    """

    def __init__(self, property: str, description: str, not_found: list[str] | None = None) -> None:
        super().__init__(f"{property}: {description}")
        self.property = property
        self.description = description
        self.not_found = list(not_found or [])


#: Convenience properties of the Email object: the header field and form
#: each stands for (RFC 8621 section 4.1.3).
CONVENIENCE = {
    "messageId": ("Message-ID", "MessageIds"),
    "inReplyTo": ("In-Reply-To", "MessageIds"),
    "references": ("References", "MessageIds"),
    "sender": ("Sender", "Addresses"),
    "from": ("From", "Addresses"),
    "to": ("To", "Addresses"),
    "cc": ("Cc", "Addresses"),
    "bcc": ("Bcc", "Addresses"),
    "replyTo": ("Reply-To", "Addresses"),
    "subject": ("Subject", "Text"),
    "sentAt": ("Date", "Date"),
}

#: EmailBodyPart properties a create may carry.
_PART_PROPERTIES = frozenset(
    "partId blobId size headers name type charset disposition cid language location subParts".split()
)

#: Part properties that stand for a Content-* header field.
_PART_FIELDS = {
    "type": "content-type",
    "charset": "content-type",
    "name": "content-type",
    "disposition": "content-disposition",
    "cid": "content-id",
    "language": "content-language",
    "location": "content-location",
}

_LINE = 78

#: A type/subtype: no white space, "/", ";" or control characters in
#: either half.
_MEDIA_TYPE = re.compile(r"[^\s/;\x00-\x1f\x7f]+/[^\s/;\x00-\x1f\x7f]+")


# ---------------------------------------------------------------------------
# Header values


#: Characters that must not reach a header field as they are: a CR or LF
#: would end the field (and start one of the client's choosing), a NUL is
#: not allowed in a message at all (RFC 5322 section 2.2).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _check_text(value: object, prop: str) -> str:
    if not isinstance(value, str):
        raise BuildError(prop, "expected a string")
    if "\x00" in value:
        raise BuildError(prop, "NUL is not allowed in a header field")
    return value


def _fold(name: str, tokens: list[str], separator: str) -> str:
    """
    Join C{tokens} with C{separator} (C{", "}, C{"; "} or C{" "}), folding
    before a token that would take the line past 78 characters.  The
    result starts with a space, to follow the colon.
    """
    out = ""
    line = len(name) + 1
    joiner = separator.rstrip(" ")
    for index, token in enumerate(tokens):
        piece = token + (joiner if index < len(tokens) - 1 else "")
        if index and line + 1 + len(piece) > _LINE:
            out += "\r\n "
            line = 1
        else:
            out += " "
            line += 1
        out += piece
        line += len(piece)
    return out


def _chunks(text: str, limit: int) -> list[str]:
    """
    C{text} cut into pieces of at most C{limit} UTF-8 octets, on character
    boundaries.
    """
    pieces: list[str] = []
    current: list[str] = []
    size = 0
    for char in text:
        length = len(char.encode("utf-8"))
        if current and size + length > limit:
            pieces.append("".join(current))
            current, size = [], 0
        current.append(char)
        size += length
    if current:
        pieces.append("".join(current))
    return pieces


def _encoded_words(text: str) -> list[str]:
    """
    C{text} as a list of RFC 2047 B-encoded UTF-8 words, each short enough
    for a folded line.
    """
    return [
        "=?UTF-8?B?" + base64.b64encode(piece.encode("utf-8")).decode("ascii") + "?="
        for piece in _chunks(text, 36)
    ]


def _needs_encoding(text: str) -> bool:
    return not text.isascii() or "=?" in text or any(ord(c) < 32 and c != "\t" for c in text)


def _render_text(name: str, value: object, prop: str) -> str:
    text = _check_text(value, prop).replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    if _needs_encoding(text):
        return _fold(name, _encoded_words(text), " ")
    return _fold(name, text.split(" "), " ") if text else ""


_ATOM_PHRASE = re.compile(r"^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~ ]*$")
_BARE_ADDRESS = re.compile(r'^[^\s<>(),;:"\\\[\]]+$')


def _render_phrase(name: str) -> str:
    if _needs_encoding(name):
        return " ".join(_encoded_words(name))
    if _ATOM_PHRASE.match(name) and name.strip() == name and "  " not in name:
        return name
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _render_address(address: object, prop: str) -> str:
    if not isinstance(address, dict):
        raise BuildError(prop, "expected an EmailAddress object")
    email = address.get("email")
    name = address.get("name")
    if not isinstance(email, str) or _CONTROL.search(email):
        raise BuildError(prop, "an EmailAddress needs an email string")
    if "<" in email or ">" in email:
        # It is written between angle brackets: a ">" would close them and
        # make one EmailAddress several addresses in the header field.
        raise BuildError(prop, f"not an email address: {email!r}")
    if name is not None and not isinstance(name, str):
        raise BuildError(prop, "an EmailAddress name is a string or null")
    if name:
        name = name.replace("\r", " ").replace("\n", " ")
        return f"{_render_phrase(name)} <{email}>"
    return email if _BARE_ADDRESS.match(email) else f"<{email}>"


def _address_tokens(value: object, prop: str) -> list[str]:
    if not isinstance(value, list):
        raise BuildError(prop, "expected a list of EmailAddress objects")
    return [_render_address(a, prop) for a in value]


def _render_addresses(name: str, value: object, prop: str) -> str:
    return _fold(name, _address_tokens(value, prop), ", ")


def _render_grouped(name: str, value: object, prop: str) -> str:
    if not isinstance(value, list):
        raise BuildError(prop, "expected a list of EmailAddressGroup objects")
    tokens: list[str] = []
    for group in value:
        if not isinstance(group, dict):
            raise BuildError(prop, "expected an EmailAddressGroup object")
        addresses = _address_tokens(group.get("addresses"), prop)
        group_name = group.get("name")
        if group_name is None:
            tokens.extend(addresses)
        elif not isinstance(group_name, str):
            raise BuildError(prop, "a group name is a string or null")
        else:
            tokens.append(f"{_render_phrase(group_name)}: {', '.join(addresses)};")
    return _fold(name, tokens, ", ")


def _bracketable(item: object) -> bool:
    """
    Whether C{item} can go between angle brackets as one message id or
    URL: a non-empty string without white space, brackets or control
    characters.
    """
    return (
        isinstance(item, str)
        and bool(item)
        and not any(c.isspace() or c in "<>" for c in item)
        and not _CONTROL.search(item)
    )


def _render_message_ids(name: str, value: object, prop: str) -> str:
    if not isinstance(value, list) or not value:
        raise BuildError(prop, "expected a non-empty list of message ids")
    for item in value:
        if not _bracketable(item):
            raise BuildError(prop, f"not a message id: {item!r}")
    return _fold(name, [f"<{item}>" for item in value], " ")


def _parse_date(value: object, prop: str) -> datetime:
    if not isinstance(value, str):
        raise BuildError(prop, "expected an RFC 3339 date-time string")
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise BuildError(prop, f"not an RFC 3339 date-time: {value!r}") from None
    if when.tzinfo is None or "T" not in value.upper():
        raise BuildError(prop, f"not an RFC 3339 date-time with an offset: {value!r}")
    return when


def _render_date(name: str, value: object, prop: str) -> str:
    return " " + format_datetime(_parse_date(value, prop))


def _render_urls(name: str, value: object, prop: str) -> str:
    if not isinstance(value, list) or not value:
        raise BuildError(prop, "expected a non-empty list of URLs")
    for item in value:
        if not _bracketable(item):
            raise BuildError(prop, f"not a URL: {item!r}")
    return _fold(name, [f"<{item}>" for item in value], ", ")


def _render_raw(name: str, value: object, prop: str) -> str:
    text = _check_text(value, prop)
    if re.search(r"\r(?!\n)|(?<!\r)\n|\r\n(?![ \t])", text):
        raise BuildError(prop, "a Raw value may only contain line breaks that fold")
    if re.search(r"\r\n[ \t]*(?:\r\n|$)", text):
        # A line of white space only (RFC 5322 section 3.2.2 forbids
        # making one): a parser may take it for the end of the header.
        raise BuildError(prop, "a Raw value may not fold into a line of white space only")
    return text


_RENDERERS: dict[str, Callable[[str, object, str], str]] = {
    "Raw": _render_raw,
    "Text": _render_text,
    "Addresses": _render_addresses,
    "GroupedAddresses": _render_grouped,
    "MessageIds": _render_message_ids,
    "Date": _render_date,
    "URLs": _render_urls,
}


def _header_fields(obj: dict, path: str, top_level: bool) -> tuple[list[tuple[str, str]], set[str]]:
    """
    The header fields C{obj} sets through convenience (top level only) and
    C{header:} properties, rendered, in property order; and the lowercase
    names of every field it mentions (also those set to null).
    """
    fields: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    for key, value in obj.items():
        prop = f"{path}{key}"
        if top_level and key in CONVENIENCE:
            name, form = CONVENIENCE[key]
            want_all = False
        elif key.startswith("header:"):
            parsed = parse_header_property(key)
            if parsed is None:
                raise BuildError(prop, "not a valid header:{name}[:as{form}][:all] property")
            name, form, want_all = parsed
            if not form_allowed(name, form):
                raise BuildError(prop, f"the {form} form is not allowed for {name}")
        else:
            continue
        lower = name.lower()
        if lower in seen:
            raise BuildError(prop, f"the {name} header field is also given by {seen[lower]}")
        seen[lower] = prop
        if top_level and lower.startswith("content-"):
            raise BuildError(prop, "Content-* header fields belong on a body part, not the Email")
        if lower == "content-transfer-encoding":
            raise BuildError(prop, "the server chooses the Content-Transfer-Encoding")
        if value is None:
            continue
        render = _RENDERERS[form]
        if want_all:
            if not isinstance(value, list):
                raise BuildError(prop, "an :all property takes a list of values")
            fields.extend((name, render(name, item, prop)) for item in value if item is not None)
        else:
            fields.append((name, render(name, value, prop)))
    return fields, set(seen)


# ---------------------------------------------------------------------------
# MIME parameters


#: A domain name as a Message-ID's right-hand side may be (RFC 5322 3.6.4
#: dot-atom-text, kept to what DNS names are): labels of letters, digits and
#: hyphens.
_DOMAIN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$")


def _message_id_domain(email: dict) -> str | None:
    """
    The domain of the Email's first From address, for the right-hand side
    of the Message-ID the server makes: RFC 5322 section 3.6.4 asks for a
    domain identifying the sender, and mail clients use the sender's
    domain (a host name such as the server's C{localhost} is what spam
    filters score against); L{None} when there is none that is a plain
    ASCII domain name.
    """
    senders = email.get("from")
    if not isinstance(senders, list) or not senders or not isinstance(senders[0], dict):
        return None
    address = senders[0].get("email")
    if not isinstance(address, str) or "@" not in address:
        return None
    domain = address.rpartition("@")[2]
    return domain.lower() if _DOMAIN.match(domain) else None


_TOKEN = re.compile(r"^[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+$")


def _param(name: str, value: str) -> str:
    if _TOKEN.match(value):
        return f"{name}={value}"
    return f'{name}="' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _filename_params(value: str) -> list[str]:
    """
    The filename parameter of Content-Disposition: plain when ASCII,
    otherwise RFC 2231 percent-encoded UTF-8, in continuations when long.
    """
    value = value.replace("\r", " ").replace("\n", " ")
    if value.isascii() and len(value) < 60:
        return [_param("filename", value)]
    encoded = quote(value.encode("utf-8"), safe="")
    pieces = [encoded[i : i + 60] for i in range(0, len(encoded), 60)]
    # Do not cut a %XX escape in two.
    for i in range(len(pieces) - 1):
        cut = pieces[i].rfind("%", len(pieces[i]) - 2)
        if cut >= 0:
            pieces[i + 1] = pieces[i][cut:] + pieces[i + 1]
            pieces[i] = pieces[i][:cut]
    if len(pieces) == 1:
        return [f"filename*=utf-8''{pieces[0]}"]
    first = [f"filename*0*=utf-8''{pieces[0]}"]
    return first + [f"filename*{i}*={piece}" for i, piece in enumerate(pieces[1:], 1)]


def _name_param(value: str) -> str:
    value = value.replace("\r", " ").replace("\n", " ")
    if value.isascii():
        return _param("name", value)
    return 'name="' + " ".join(_encoded_words(value)) + '"'


# ---------------------------------------------------------------------------
# Body parts


class _Leaf:
    def __init__(self, headers: list[tuple[str, str]], body: bytes) -> None:
        self.headers = headers
        self.body = body


class _Multipart:
    def __init__(self, headers: list[tuple[str, str]], parts: list) -> None:
        self.headers = headers
        self.parts = parts
        self.boundary = "=_" + secrets.token_hex(12)
        self.headers.insert(0, ("Content-Type", ""))

    def set_type(self, media_type: str, extra: list[str]) -> None:
        params = [media_type, _param("boundary", self.boundary)] + extra
        self.headers[0] = ("Content-Type", _fold("Content-Type", params, "; "))


def _line_safe(data: bytes) -> bool:
    """
    Whether C{data} can go as 7bit: ASCII without NUL or bare CR/LF, and
    no line over 998 octets.
    """
    if not data.isascii() or b"\x00" in data:
        return False
    if re.search(rb"\r(?!\n)|(?<!\r)\n", data):
        return False
    return all(len(line) <= 998 for line in data.split(b"\r\n"))


def _base64_body(data: bytes) -> bytes:
    encoded = base64.b64encode(data)
    return b"\r\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))


def _encode_text(text: str) -> tuple[str, bytes]:
    """
    The Content-Transfer-Encoding and octets for text from bodyValues.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    data = text.replace("\n", "\r\n").encode("utf-8")
    if _line_safe(data):
        return "7bit", data
    raw = text.encode("utf-8")
    non_ascii = sum(1 for octet in raw if octet > 127)
    if non_ascii * 3 > len(raw):
        return "base64", _base64_body(raw)
    return "quoted-printable", binascii.b2a_qp(raw, istext=True).replace(b"\n", b"\r\n")


class _Builder:
    def __init__(self, body_values: dict, read_blob: Callable[[str], bytes | None]) -> None:
        self.body_values = body_values
        self.read_blob = read_blob
        self.missing: list[str] = []
        self.used_part_ids: set[str] = set()

    def part(self, spec: object, path: str, default_type: str, default_disposition: str | None = None):
        """
        The MIME entity for EmailBodyPart C{spec} at property path C{path}.
        """
        if not isinstance(spec, dict):
            raise BuildError(path.rstrip("/"), "expected an EmailBodyPart object")
        for key in spec:
            if key not in _PART_PROPERTIES and not key.startswith("header:"):
                raise BuildError(path + key, "not an EmailBodyPart property")
        if "headers" in spec:
            raise BuildError(path + "headers", "set each header field as its own property")
        explicit, named = _header_fields(spec, path, top_level=False)
        for key, field in _PART_FIELDS.items():
            if spec.get(key) is not None and field in named:
                raise BuildError(path + key, f"the {field} header field is also given as a header: property")

        media_type = spec.get("type")
        if media_type is not None and (
            # fullmatch, not "$", which also matches before a final "\n".
            not isinstance(media_type, str) or not _MEDIA_TYPE.fullmatch(media_type)
        ):
            raise BuildError(path + "type", "expected a type/subtype string")
        media_type = (media_type or default_type).lower()
        for key in ("name", "charset", "disposition", "cid", "location"):
            value = spec.get(key)
            if value is not None and (not isinstance(value, str) or _CONTROL.search(value)):
                raise BuildError(path + key, "expected a single-line string")
        language = spec.get("language")
        if language is not None and (
            not isinstance(language, list)
            or not all(isinstance(t, str) and t.strip() and not _CONTROL.search(t) for t in language)
        ):
            raise BuildError(path + "language", "expected a list of language tags")

        if media_type.startswith("multipart/"):
            for key in ("partId", "blobId", "charset"):
                if spec.get(key) is not None:
                    raise BuildError(path + key, "not allowed on a multipart part")
            subparts = spec.get("subParts")
            if not isinstance(subparts, list) or not subparts:
                raise BuildError(path + "subParts", "a multipart part needs a list of subParts")
            child_default = "message/rfc822" if media_type == "multipart/digest" else "text/plain"
            children = [
                self.part(child, f"{path}subParts/{i}/", child_default) for i, child in enumerate(subparts)
            ]
            node = _Multipart([], children)
            node.set_type(media_type, [])
            content_headers = node.headers
            self._content_headers(spec, content_headers, named, default_disposition)
            return _with_headers(node, content_headers, explicit)

        if spec.get("subParts") is not None:
            raise BuildError(path + "subParts", "only multipart parts have subParts")
        part_id, blob_id = spec.get("partId"), spec.get("blobId")
        if part_id is not None and blob_id is not None:
            raise BuildError(path + "partId", "give a partId or a blobId, not both")
        if part_id is not None:
            if spec.get("charset") is not None:
                raise BuildError(path + "charset", "not allowed with a partId; the server picks the charset")
            if spec.get("size") is not None:
                raise BuildError(path + "size", "not allowed with a partId")
            text = self._body_value(part_id, path + "partId")
            encoding, body = _encode_text(text)
            charset = "utf-8" if media_type.startswith("text/") else None
        elif blob_id is not None:
            if not isinstance(blob_id, str):
                raise BuildError(path + "blobId", "expected a blobId string")
            data = self.read_blob(blob_id)
            if data is None:
                self.missing.append(blob_id)
                data = b""
            charset = spec.get("charset")
            if media_type.startswith("message/"):
                encoding, body = ("7bit" if data.isascii() else "8bit"), data
            elif _line_safe(data):
                encoding, body = "7bit", data
            else:
                encoding, body = "base64", _base64_body(data)
        else:
            raise BuildError(path + "partId", "a body part needs a partId or a blobId")

        headers: list[tuple[str, str]] = []
        if "content-type" not in named:
            params = [media_type]
            if charset:
                params.append(_param("charset", charset))
            if spec.get("name"):
                params.append(_name_param(spec["name"]))
            headers.append(("Content-Type", _fold("Content-Type", params, "; ")))
        headers.append(("Content-Transfer-Encoding", " " + encoding))
        self._content_headers(spec, headers, named, default_disposition)
        return _with_headers(_Leaf([], body), headers, explicit)

    def _content_headers(self, spec, headers, named, default_disposition) -> None:
        """
        Add the Content-Disposition, Content-ID, Content-Language and
        Content-Location fields C{spec}'s properties stand for.  A
        C{header:Content-Disposition} the client gave (in C{named}) is
        written as it is, and the server's default disposition yields to
        it, so the part does not get the field twice.
        """
        disposition = spec.get("disposition") or default_disposition
        if disposition and "content-disposition" not in named:
            params = [disposition.lower()]
            if spec.get("name"):
                params.extend(_filename_params(spec["name"]))
            headers.append(("Content-Disposition", _fold("Content-Disposition", params, "; ")))
        if spec.get("cid"):
            headers.append(("Content-ID", f" <{spec['cid'].strip('<>')}>"))
        if spec.get("language"):
            headers.append(
                ("Content-Language", _fold("Content-Language", [t.strip() for t in spec["language"]], ", "))
            )
        if spec.get("location"):
            headers.append(("Content-Location", " " + spec["location"]))

    def _body_value(self, part_id: object, prop: str) -> str:
        if not isinstance(part_id, str):
            raise BuildError(prop, "expected a partId string")
        if not isinstance(self.body_values, dict) or part_id not in self.body_values:
            raise BuildError(prop, f"partId {part_id!r} is not in bodyValues")
        if part_id in self.used_part_ids:
            raise BuildError(prop, f"partId {part_id!r} is used twice")
        self.used_part_ids.add(part_id)
        value = self.body_values[part_id]
        where = f"bodyValues/{part_id}"
        if not isinstance(value, dict) or not isinstance(value.get("value"), str):
            raise BuildError(where, "expected an EmailBodyValue with a string value")
        for flag in ("isEncodingProblem", "isTruncated"):
            if value.get(flag) not in (None, False):
                raise BuildError(f"{where}/{flag}", "must be false or omitted")
        return value["value"]


def _with_headers(node, content_headers, explicit):
    node.headers = content_headers + explicit
    return node


def _is_embedded(spec: dict) -> bool:
    return isinstance(spec, dict) and bool(spec.get("cid")) and spec.get("disposition") != "attachment"


def _flat_body(builder: _Builder, email: dict):
    """
    The MIME tree for textBody, htmlBody and attachments.
    """
    bodies = {}
    for key, media_type in (("textBody", "text/plain"), ("htmlBody", "text/html")):
        value = email.get(key)
        if value is None:
            continue
        if not isinstance(value, list) or len(value) != 1:
            raise BuildError(key, "must contain exactly one body part")
        spec = value[0]
        given = spec.get("type") if isinstance(spec, dict) else None
        # Media types compare case-insensitively (RFC 2045 section 5.1).
        if given is not None and (not isinstance(given, str) or given.lower() != media_type):
            raise BuildError(f"{key}/0/type", f"must be {media_type}")
        bodies[key] = builder.part(spec, f"{key}/0/", media_type)

    attachments = email.get("attachments") or []
    if not isinstance(attachments, list):
        raise BuildError("attachments", "expected a list of EmailBodyPart objects")
    embedded, others = [], []
    for index, spec in enumerate(attachments):
        path = f"attachments/{index}/"
        if "htmlBody" in bodies and _is_embedded(spec):
            embedded.append(builder.part(spec, path, "application/octet-stream", "inline"))
        else:
            default = None if _is_embedded(spec) else "attachment"
            others.append(builder.part(spec, path, "application/octet-stream", default))

    html = bodies.get("htmlBody")
    if html is not None and embedded:
        related = _Multipart([], [html] + embedded)
        related.set_type("multipart/related", [_param("type", "text/html")])
        html = related
    text = bodies.get("textBody")
    body: _Leaf | _Multipart | None
    if text is not None and html is not None:
        body = _Multipart([], [text, html])
        body.set_type("multipart/alternative", [])
    else:
        body = text or html
    if not others:
        if body is None:
            return _Leaf(
                [("Content-Type", " text/plain; charset=utf-8"), ("Content-Transfer-Encoding", " 7bit")], b""
            )
        return body
    mixed = _Multipart([], ([body] if body is not None else []) + others)
    mixed.set_type("multipart/mixed", [])
    return mixed


def _serialize(node, out: bytearray) -> None:
    for name, value in node.headers:
        out += name.encode("ascii") + b":" + value.encode("utf-8") + b"\r\n"
    out += b"\r\n"
    if isinstance(node, _Leaf):
        out += node.body
        return
    boundary = node.boundary.encode("ascii")
    for child in node.parts:
        out += b"--" + boundary + b"\r\n"
        _serialize(child, out)
        out += b"\r\n"
    out += b"--" + boundary + b"--\r\n"


def build_message(
    email: dict,
    body_values: dict,
    read_blob: Callable[[str], bytes | None],
    now: datetime,
    hostname: str,
) -> bytes:
    """
    The octets of the message an Email/set create describes.

    @param email: the create object as the client sent it; properties that
        are not about the message (mailboxIds, keywords, receivedAt) are
        ignored here.
    @param body_values: its C{bodyValues} (partId -> EmailBodyValue).
    @param read_blob: returns the octets of a blob, or L{None} if the
        account has no such blob.
    @param now: the time for a generated Date (UTC if naive).
    @param hostname: the right-hand side of a generated Message-ID when
        the Email has no From address with a domain name to use instead
        (L{_message_id_domain}).
    @raise BuildError: the create violates RFC 8621 section 4.6, or
        references blobs that do not exist (C{not_found}).
    """
    if "headers" in email:
        raise BuildError("headers", "set each header field as its own property")
    fields, named = _header_fields(email, "", top_level=True)
    set_names = {name.lower() for name, _ in fields}

    flat = [key for key in ("textBody", "htmlBody", "attachments") if email.get(key) is not None]
    builder = _Builder(body_values if body_values is not None else {}, read_blob)
    structure = email.get("bodyStructure")
    if structure is not None:
        if flat:
            raise BuildError(flat[0], "not allowed together with bodyStructure")
        root = builder.part(structure, "bodyStructure/", "text/plain")
        for name, _ in root.headers:
            lower = name.lower()
            if lower in named and not lower.startswith("content-"):
                raise BuildError("bodyStructure", f"the {name} header field is already set on the Email")
        # The root's fields are the message's: a Date, Message-ID or
        # MIME-Version set there is "included" (RFC 8621 section 4.6), and
        # generating another would give the message two.
        set_names |= {name.lower() for name, _ in root.headers}
    else:
        root = _flat_body(builder, email)
    if builder.missing:
        missing = list(dict.fromkeys(builder.missing))
        raise BuildError("blobId", "blob not found: " + ", ".join(missing), not_found=missing)

    generated: list[tuple[str, str]] = []
    if "date" not in set_names:
        when = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
        generated.append(("Date", " " + format_datetime(when)))
    if "message-id" not in set_names:
        domain = _message_id_domain(email) or hostname
        generated.append(("Message-ID", f" <{uuid.uuid4().hex}@{domain}>"))
    trailer = [] if "mime-version" in set_names else [("MIME-Version", " 1.0")]
    root.headers = generated + fields + trailer + root.headers

    out = bytearray()
    _serialize(root, out)
    return bytes(out)
