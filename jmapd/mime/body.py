# -*- test-case-name: tests.mime.test_body -*-
"""
The content of a leaf body part: transfer decoding (RFC 2045 section 6)
and the EmailBodyValue of RFC 8621 section 4.1.4 (charset decoding, line
ending normalisation, truncation).

Both work from the raw message octets and the part description made by
L{jmapd.mime.parse.parse_message} (its C{_offset}, C{_length} and
C{_encoding}), so serving a body value reads the part's octets and nothing
else.
"""

from __future__ import annotations

import binascii
import re

from jmapd.mime.headers import decode_replacing, text_codec

__all__ = ["decode_part", "decode_transfer", "decode_text", "body_value"]

_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")


def _decode_base64(data: bytes) -> bytes:
    """
    Base64 without failing: characters outside the alphabet (line breaks,
    stray punctuation) are skipped, decoding stops at the first padding, and
    a dangling final character is dropped.
    """
    try:
        # The common case: the stdlib skips line breaks and other
        # characters outside the alphabet, and stops at the padding.
        return binascii.a2b_base64(data)
    except binascii.Error:
        pass
    padding = data.find(b"=")
    if padding >= 0:
        data = data[:padding]
    data = _NOT_BASE64.sub(b"", data)
    if len(data) % 4 == 1:
        data = data[:-1]
    data += b"=" * (-len(data) % 4)
    try:
        return binascii.a2b_base64(data)
    except binascii.Error:
        return b""


def decode_transfer(data: bytes, encoding: str) -> bytes:
    """
    Undo Content-Transfer-Encoding C{encoding} (lowercase).  Unknown
    encodings are treated as no encoding, as RFC 8621 says for blobIds.
    """
    if encoding == "base64":
        return _decode_base64(data)
    if encoding == "quoted-printable":
        return binascii.a2b_qp(data)
    return data


def decode_part(raw: bytes, part: dict) -> bytes:
    """
    The transfer-decoded octets of leaf part C{part} of message C{raw}.
    """
    start = part["_offset"]
    return decode_transfer(raw[start : start + part["_length"]], part["_encoding"])


_KNOWN_ENCODINGS = frozenset(["7bit", "8bit", "binary", "base64", "quoted-printable", ""])

#: Charsets whose labels lie often: decode them as their superset.
_SUPERSETS = {"iso8859-1": "cp1252", "ascii": "utf-8"}


def decode_text(data: bytes, charset: str | None) -> tuple[str, bool]:
    """
    Decode C{data} as text in MIME charset C{charset}; returns the text and
    whether there was an encoding problem (unknown charset, or octets that
    are malformed in it, replaced by U+FFFD).

    Heuristics, as RFC 8621 allows: text labelled US-ASCII is decoded as
    UTF-8 (8-bit octets in "us-ascii" text are almost always UTF-8, and
    ASCII is a subset), ISO-8859-1 as Windows-1252 (what the senders meant,
    as HTML5 also assumes); no charset at all is UTF-8.  An unknown charset
    is decoded as UTF-8 and flagged.
    """
    if charset is None:
        codec: str | None = "utf-8"
    else:
        codec = text_codec(charset)
    if codec is None:
        return data.decode("utf-8", "replace"), True
    superset = _SUPERSETS.get(codec)
    if superset is not None:
        try:
            return data.decode(superset), False
        except UnicodeDecodeError:
            if codec == "iso8859-1":
                return data.decode("iso8859-1"), False
    try:
        return data.decode(codec), False
    except UnicodeDecodeError:
        return decode_replacing(data, codec), True
    except Exception:  # noqa: BLE001 - some codecs raise other errors on bad input
        return data.decode("utf-8", "replace"), True


def _truncate(value: str, max_bytes: int, html: bool) -> str:
    """
    C{value} cut to at most C{max_bytes} UTF-8 octets on a character
    boundary and, for HTML, not inside a tag.
    """
    cut = value.encode("utf-8")[:max_bytes].decode("utf-8", "ignore")
    if html:
        opened = cut.rfind("<")
        if opened > cut.rfind(">"):
            cut = cut[:opened]
    return cut


def body_value(raw: bytes, part: dict, max_bytes: int = 0) -> dict:
    """
    The EmailBodyValue of leaf part C{part}: C{{"value", "isEncodingProblem",
    "isTruncated"}}.  The value is decoded by transfer encoding and charset,
    CRLF becomes LF, and if C{max_bytes} is positive it is truncated to at
    most that many UTF-8 octets (RFC 8621 section 4.2, maxBodyValueBytes).
    An unknown transfer encoding counts as an encoding problem.
    """
    value, problem = decode_text(decode_part(raw, part), part.get("charset"))
    if part.get("_encoding", "") not in _KNOWN_ENCODINGS:
        problem = True
    value = value.replace("\r\n", "\n")
    truncated = False
    if max_bytes > 0 and len(value) * 4 > max_bytes and len(value.encode("utf-8")) > max_bytes:
        value = _truncate(value, max_bytes, part.get("type") == "text/html")
        truncated = True
    return {"value": value, "isEncodingProblem": problem, "isTruncated": truncated}
