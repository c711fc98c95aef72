"""
Tests for L{jmapd.mime.headers}: the parsed forms of RFC 8621 section
4.1.2, the header:{name} property syntax and which forms each field
allows.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from jmapd.mime.headers import (
    PARSED_FORMS,
    as_addresses,
    as_date,
    as_grouped_addresses,
    as_message_ids,
    as_raw,
    as_text,
    as_urls,
    form_allowed,
    parse_header_property,
)

#: The address-list example of RFC 8621 sections 4.1.2.3 and 4.1.2.4.
RFC_ADDRESS_LIST = (
    ' "  James Smythe" <james@example.com>, Friends:\r\n'
    "  jane@example.com, =?UTF-8?Q?John_Sm=C3=AEth?=\r\n"
    "  <john@example.com>;"
)


class RawTests(SynchronousTestCase):
    def test_unchanged(self):
        """
        The Raw form is the value exactly, leading space and folding
        included.
        """
        self.assertEqual(as_raw(" a\r\n b "), " a\r\n b ")


class TextTests(SynchronousTestCase):
    def test_unfold_and_strip(self):
        """
        Folding line breaks are removed (the white space after them stays)
        and the SP characters at the beginning are removed; nothing else is
        stripped (RFC 8621 section 4.1.2.2, step 3): trailing white space
        and a leading tab stay.
        """
        self.assertEqual(as_text("  Hello\r\n world"), "Hello world")
        self.assertEqual(as_text(" Hello world \t"), "Hello world \t")
        self.assertEqual(as_text("\tHello"), "\tHello")

    def test_b_and_q_words(self):
        """
        B and Q encoded words are decoded; C{_} is a space in Q.
        """
        self.assertEqual(as_text(" =?utf-8?B?R3LDvMOfZQ==?="), "Grüße")
        self.assertEqual(as_text(" =?ISO-8859-1?Q?Andr=E9_Pirard?="), "André Pirard")

    def test_adjacent_words_joined(self):
        """
        White space between adjacent encoded words disappears, white space
        between an encoded word and plain text stays.
        """
        self.assertEqual(as_text(" =?utf-8?q?a?= =?utf-8?q?b?=\r\n =?utf-8?q?c?= d"), "abc d")

    def test_character_split_across_words(self):
        """
        A UTF-8 character split across two encoded words is decoded whole.
        """
        self.assertEqual(as_text(" =?utf-8?q?=C3?= =?utf-8?q?=A9t=C3=A9?="), "été")

    def test_placement_violation_not_decoded(self):
        """
        An encoded word glued to other text violates RFC 2047 and stays as
        it is.
        """
        self.assertEqual(as_text(" x=?utf-8?q?a?=y"), "x=?utf-8?q?a?=y")

    def test_unknown_charset_not_decoded(self):
        """
        An encoded word in an unknown charset stays as it is.
        """
        self.assertEqual(as_text(" =?x-nope?q?a?= b"), "=?x-nope?q?a?= b")

    def test_codec_that_cannot_replace(self):
        """
        An encoded word whose octets are malformed in a charset whose codec
        refuses the C{replace} error handler (idna) is decoded as UTF-8,
        instead of raising out of the parser: a Subject of
        C{=?idna?q?=FF?=} made every delivery of its message fail.
        """
        self.assertEqual(as_text(" =?idna?q?=FF?= end"), "\ufffd end")

    def test_bad_base64_replaced(self):
        """
        A B word that is not base64 becomes U+FFFD and decoding continues.
        """
        self.assertEqual(as_text(" =?utf-8?b?!!!?= end"), "\ufffd end")

    def test_controls_dropped(self):
        """
        NUL and control characters from encoded words are dropped.
        """
        self.assertEqual(as_text(" =?utf-8?q?a=00b=07c?="), "abc")

    def test_language_suffix(self):
        """
        An RFC 2231 language suffix on the charset is accepted.
        """
        self.assertEqual(as_text(" =?utf-8*en?q?hi?="), "hi")

    def test_nfc(self):
        """
        The result is in Normalization Form C.
        """
        self.assertEqual(as_text(" e\u0301"), "\u00e9")


class AddressesTests(SynchronousTestCase):
    def test_rfc_example(self):
        """
        The RFC's example parses to the RFC's answer.
        """
        self.assertEqual(
            as_addresses(RFC_ADDRESS_LIST),
            [
                {"name": "James Smythe", "email": "james@example.com"},
                {"name": None, "email": "jane@example.com"},
                {"name": "John Smîth", "email": "john@example.com"},
            ],
        )

    def test_grouped_rfc_example(self):
        """
        The GroupedAddresses form of the RFC's example.
        """
        self.assertEqual(
            as_grouped_addresses(RFC_ADDRESS_LIST),
            [
                {"name": None, "addresses": [{"name": "James Smythe", "email": "james@example.com"}]},
                {
                    "name": "Friends",
                    "addresses": [
                        {"name": None, "email": "jane@example.com"},
                        {"name": "John Smîth", "email": "john@example.com"},
                    ],
                },
            ],
        )

    def test_empty_group(self):
        """
        An empty group has no addresses; in Addresses form it vanishes.
        """
        self.assertEqual(
            as_grouped_addresses(" undisclosed-recipients:;"),
            [{"name": "undisclosed-recipients", "addresses": []}],
        )
        self.assertEqual(as_addresses(" undisclosed-recipients:;"), [])

    def test_mailboxes_after_group(self):
        """
        Mailboxes after a group are collected in a new unnamed group.
        """
        self.assertEqual(
            as_grouped_addresses(" a@x, G: b@x;, c@x, d@x"),
            [
                {"name": None, "addresses": [{"name": None, "email": "a@x"}]},
                {"name": "G", "addresses": [{"name": None, "email": "b@x"}]},
                {"name": None, "addresses": [{"name": None, "email": "c@x"}, {"name": None, "email": "d@x"}]},
            ],
        )

    def test_comment_as_name(self):
        """
        Without a display name, a comment after the addr-spec is the name;
        with one, comments are discarded.
        """
        self.assertEqual(as_addresses(" john@x (John)"), [{"name": "John", "email": "john@x"}])
        self.assertEqual(as_addresses(" Jo <john@x> (c)"), [{"name": "Jo", "email": "john@x"}])

    def test_quoted_pairs_and_commas(self):
        """
        Quoted strings may hold commas and quoted pairs.
        """
        self.assertEqual(as_addresses(' "Doe, \\"J\\"" <j@x>'), [{"name": 'Doe, "J"', "email": "j@x"}])

    def test_encoded_word_in_quoted_string(self):
        """
        An encoded word inside a quoted string is not decoded: RFC 2047
        section 5 does not allow one there, and RFC 8621 section 4.1.2.3
        decodes names by the Text form's rules, under which such text MUST
        NOT be decoded.  Encoded words outside the quotes still are.
        """
        self.assertEqual(
            as_addresses(' "=?utf-8?q?J=C3=B6rg?=" <j@x>'),
            [{"name": "=?utf-8?q?J=C3=B6rg?=", "email": "j@x"}],
        )
        self.assertEqual(
            as_addresses(' "Dr." =?utf-8?q?J=C3=B6rg?= <j@x>'),
            [{"name": "Dr. Jörg", "email": "j@x"}],
        )
        self.assertEqual(
            as_grouped_addresses(' "=?utf-8?q?T=C3=A9am?=": a@x;'),
            [{"name": "=?utf-8?q?T=C3=A9am?=", "addresses": [{"name": None, "email": "a@x"}]}],
        )

    def test_best_effort(self):
        """
        Broken lists still yield addresses: an unterminated angle address,
        a missing comma, a bare word without @, an empty value.
        """
        self.assertEqual(as_addresses(" A <a@x"), [{"name": "A", "email": "a@x"}])
        self.assertEqual(
            as_addresses(" <a@x> <b@x>"),
            [{"name": None, "email": "a@x"}, {"name": None, "email": "b@x"}],
        )
        self.assertEqual(as_addresses(" nobody"), [{"name": None, "email": "nobody"}])
        self.assertEqual(as_addresses(""), [])

    def test_route_dropped(self):
        """
        An obsolete source route in the angle address is dropped.
        """
        self.assertEqual(as_addresses(" <@relay:a@x>"), [{"name": None, "email": "a@x"}])


class MessageIdsTests(SynchronousTestCase):
    def test_list(self):
        """
        Ids lose their angle brackets, comments and folding.
        """
        self.assertEqual(as_message_ids(" <a@x> (comment)\r\n <b@y>"), ["a@x", "b@y"])

    def test_unparseable(self):
        """
        A value without msg-ids is null.
        """
        self.assertIsNone(as_message_ids(" not an id"))
        self.assertIsNone(as_message_ids(""))

    def test_bare_id(self):
        """
        A single id without brackets is accepted.
        """
        self.assertEqual(as_message_ids(" a@x"), ["a@x"])


class DateTests(SynchronousTestCase):
    def test_offset_kept(self):
        """
        The date keeps its own UTC offset.
        """
        self.assertEqual(as_date(" Tue, 2 Jan 2024 03:04:05 +0100"), "2024-01-02T03:04:05+01:00")
        self.assertEqual(as_date(" 2 Jan 2024 03:04:05 -0830 (x)"), "2024-01-02T03:04:05-08:30")

    def test_zero_and_obsolete(self):
        """
        A zero or unknown offset is Z; obsolete zone names and two-digit
        years are understood; seconds are optional.
        """
        self.assertEqual(as_date(" Tue, 2 Jan 2024 03:04:05 -0000"), "2024-01-02T03:04:05Z")
        self.assertEqual(as_date(" 2 Jan 24 03:04 EST"), "2024-01-02T03:04:00-05:00")

    def test_unparseable(self):
        """
        Nonsense and impossible dates are null.
        """
        self.assertIsNone(as_date(" yesterday"))
        self.assertIsNone(as_date(" 32 Jan 2024 10:00:00 +0000"))
        self.assertIsNone(as_date(""))


class URLsTests(SynchronousTestCase):
    def test_list(self):
        """
        URLs lose their brackets, comments and folding white space.
        """
        self.assertEqual(
            as_urls(" <mailto:a@x?subject=u>,\r\n <https://x/un\r\n sub> (web)"),
            ["mailto:a@x?subject=u", "https://x/unsub"],
        )

    def test_none(self):
        """
        A value without URLs (List-Post: NO) is null.
        """
        self.assertIsNone(as_urls(" NO (posting not allowed)"))


class PropertyTests(SynchronousTestCase):
    def test_forms(self):
        """
        header:{name}, :as{form} and :all parse in that order; the name
        keeps the client's capitalisation.
        """
        self.assertEqual(parse_header_property("header:From:asAddresses:all"), ("From", "Addresses", True))
        self.assertEqual(parse_header_property("header:x-foo"), ("x-foo", "Raw", False))
        self.assertEqual(parse_header_property("header:Subject:all"), ("Subject", "Raw", True))
        self.assertEqual(parse_header_property("header:Date:asDate"), ("Date", "Date", False))
        self.assertEqual(
            set(PARSED_FORMS), {"Raw", "Text", "Addresses", "GroupedAddresses", "MessageIds", "Date", "URLs"}
        )

    def test_malformed(self):
        """
        Unknown forms, wrong order, extra suffixes and bad names are
        rejected.
        """
        for name in [
            "header:From:asFoo",
            "header:From:all:asAddresses",
            "header:From:asText:all:x",
            "header:",
            "header:Fr om",
            "headers:From",
            "header:From:asaddresses",
        ]:
            self.assertIsNone(parse_header_property(name), name)

    def test_form_allowed(self):
        """
        Known fields allow only the forms the RFC lists for them; unknown
        fields allow every form; Raw is always allowed; names match case
        insensitively.
        """
        self.assertTrue(form_allowed("from", "Addresses"))
        self.assertTrue(form_allowed("Resent-Reply-To", "GroupedAddresses"))
        self.assertFalse(form_allowed("From", "Text"))
        self.assertFalse(form_allowed("Subject", "Addresses"))
        self.assertTrue(form_allowed("Subject", "Text"))
        self.assertTrue(form_allowed("List-Id", "Text"))
        self.assertFalse(form_allowed("Received", "Text"))
        self.assertTrue(form_allowed("References", "MessageIds"))
        self.assertFalse(form_allowed("Date", "MessageIds"))
        self.assertTrue(form_allowed("Resent-Date", "Date"))
        self.assertTrue(form_allowed("List-Unsubscribe", "URLs"))
        self.assertFalse(form_allowed("To", "URLs"))
        self.assertTrue(form_allowed("X-Anything", "URLs"))
        self.assertTrue(form_allowed("Received", "Raw"))
        self.assertFalse(form_allowed("X-Anything", "Nope"))
