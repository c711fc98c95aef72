"""
Tests for L{jmapd.mime.body}: transfer decoding and EmailBodyValue.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from jmapd.mime.body import body_value, decode_part, decode_text


def leaf(
    raw: bytes, encoding: str = "", charset: str | None = "utf-8", media_type: str = "text/plain"
) -> dict:
    """
    A part description covering all of C{raw}.
    """
    return {
        "_offset": 0,
        "_length": len(raw),
        "_encoding": encoding,
        "charset": charset,
        "type": media_type,
    }


class DecodePartTests(SynchronousTestCase):
    def test_offsets(self):
        """
        Only the octets between _offset and _offset + _length are read.
        """
        raw = b"headerBODYtrailer"
        part = {"_offset": 6, "_length": 4, "_encoding": "7bit"}
        self.assertEqual(decode_part(raw, part), b"BODY")

    def test_identity_encodings(self):
        """
        7bit, 8bit, binary, none and unknown encodings leave octets as they
        are.
        """
        for encoding in ["7bit", "8bit", "binary", "", "x-uuencode"]:
            self.assertEqual(decode_part(b"a\r\n\xff", leaf(b"a\r\n\xff", encoding)), b"a\r\n\xff")

    def test_base64(self):
        """
        Base64 is decoded, line breaks and all.
        """
        raw = b"SGVs\r\nbG8="
        self.assertEqual(decode_part(raw, leaf(raw, "base64")), b"Hello")

    def test_bad_base64(self):
        """
        Garbage characters are skipped, missing padding is supplied, a
        dangling character is dropped, and data after padding is ignored.
        """
        for raw, expected in [
            (b"SGV*sbG8", b"Hello"),
            (b"SGVsbG8", b"Hello"),
            (b"SGVsbG8hA", b"Hello!"),
            (b"SGk=trailing", b"Hi"),
            (b"", b""),
        ]:
            self.assertEqual(decode_part(raw, leaf(raw, "base64")), expected, raw)

    def test_quoted_printable(self):
        """
        Quoted-printable: =XX octets and soft line breaks, CRLF or LF.
        """
        raw = b"caf=C3=A9 =\r\nau=\nlait\r\nx"
        self.assertEqual(decode_part(raw, leaf(raw, "quoted-printable")), "café aulait\r\nx".encode())


class DecodeTextTests(SynchronousTestCase):
    def test_charsets(self):
        """
        Known charsets decode without a problem; ISO-8859-1 is read as
        Windows-1252; text labelled US-ASCII that is UTF-8 is read as UTF-8.
        """
        self.assertEqual(decode_text(b"caf\xe9", "ISO-8859-1"), ("café", False))
        self.assertEqual(decode_text(b"\x80", "iso-8859-1"), ("€", False))
        self.assertEqual(decode_text("café".encode(), "us-ascii"), ("café", False))
        self.assertEqual(decode_text("日本".encode("shift_jis"), "Shift_JIS"), ("日本", False))

    def test_problems(self):
        """
        Malformed octets and unknown charsets are encoding problems; the
        text is still returned, with U+FFFD for what could not be decoded.
        """
        self.assertEqual(decode_text(b"a\xffb", "utf-8"), ("a\ufffdb", True))
        self.assertEqual(decode_text(b"a\xffb", "us-ascii"), ("a\ufffdb", True))
        self.assertEqual(decode_text("café".encode(), "x-unknown"), ("café", True))
        self.assertEqual(decode_text(b"abc", "base64"), ("abc", True))

    def test_codec_that_cannot_replace(self):
        """
        Malformed octets in a charset whose codec refuses the C{replace}
        error handler (idna) are decoded as UTF-8 and flagged, instead of
        raising out of the parser (a body value, a preview).
        """
        self.assertEqual(decode_text(b"a\xffb", "idna"), ("a\ufffdb", True))


class BodyValueTests(SynchronousTestCase):
    def test_crlf_to_lf(self):
        """
        CRLF becomes LF.
        """
        raw = b"a\r\nb\r\n"
        self.assertEqual(
            body_value(raw, leaf(raw)),
            {"value": "a\nb\n", "isEncodingProblem": False, "isTruncated": False},
        )

    def test_encoding_problem_flags(self):
        """
        isEncodingProblem is set for an unknown charset and for an unknown
        transfer encoding.
        """
        raw = b"text"
        self.assertTrue(body_value(raw, leaf(raw, charset="x-nope"))["isEncodingProblem"])
        self.assertTrue(body_value(raw, leaf(raw, encoding="x-weird"))["isEncodingProblem"])
        self.assertFalse(body_value(raw, leaf(raw, encoding="8bit"))["isEncodingProblem"])

    def test_truncation_on_character_boundary(self):
        """
        Truncation keeps at most max_bytes UTF-8 octets and never splits a
        character.
        """
        raw = "aé€".encode()  # 1 + 2 + 3 octets
        for limit, expected in [(1, "a"), (2, "a"), (3, "aé"), (5, "aé"), (6, "aé€")]:
            value = body_value(raw, leaf(raw), limit)
            self.assertEqual(value["value"], expected, limit)
            self.assertEqual(value["isTruncated"], limit < 6, limit)

    def test_no_limit(self):
        """
        max_bytes 0 means no truncation.
        """
        raw = b"x" * 1000
        self.assertEqual(body_value(raw, leaf(raw), 0)["value"], "x" * 1000)

    def test_html_not_cut_inside_tag(self):
        """
        HTML is not truncated inside a tag.
        """
        raw = b'<p>Hi <a href="https://example.com">x</a></p>'
        value = body_value(raw, leaf(raw, media_type="text/html"), 20)
        self.assertEqual(value, {"value": "<p>Hi ", "isEncodingProblem": False, "isTruncated": True})
        plain = body_value(raw, leaf(raw), 20)
        self.assertEqual(plain["value"], '<p>Hi <a href="https')

    def test_transfer_and_charset_together(self):
        """
        A base64 ISO-8859-1 part decodes through both layers.
        """
        raw = b"Y2Fm6Q=="
        self.assertEqual(body_value(raw, leaf(raw, "base64", "iso-8859-1"))["value"], "café")
