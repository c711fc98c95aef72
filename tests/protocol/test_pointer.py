"""
Tests for L{jmapd.protocol.pointer}: RFC 6901 JSON Pointer with the C{*}
token of RFC 8620 section 3.7.
"""

from twisted.trial.unittest import SynchronousTestCase

from jmapd.protocol.pointer import PointerError, evaluate, split


class SplitTests(SynchronousTestCase):
    def test_empty_is_whole_document(self):
        """
        The empty pointer has no tokens, so it names the whole document.
        """
        self.assertEqual(split(""), [])
        document = {"a": 1}
        self.assertIs(evaluate(document, ""), document)

    def test_must_start_with_slash(self):
        """
        A non-empty pointer that does not start with '/' is malformed.
        """
        self.assertRaises(PointerError, split, "a/b")

    def test_escapes(self):
        """
        '~1' unescapes to '/' and '~0' to '~', in that order, so '~01'
        is the two characters '~1' and not '/'.
        """
        self.assertEqual(split("/a~1b/c~0d/~01"), ["a/b", "c~d", "~1"])

    def test_bad_escape(self):
        """
        A '~' not followed by '0' or '1' is not a valid pointer (RFC 6901
        section 3).
        """
        for path in ("/a~", "/a~2", "/~/x"):
            self.assertRaises(PointerError, split, path)

    def test_empty_token(self):
        """
        '/' names the member whose name is the empty string.
        """
        self.assertEqual(evaluate({"": 5}, "/"), 5)


class EvaluateTests(SynchronousTestCase):
    def test_members(self):
        """
        Tokens walk object members, with escaped names.
        """
        document = {"a/b": {"c~d": [10, 20]}}
        self.assertEqual(evaluate(document, "/a~1b/c~0d/1"), 20)

    def test_missing_member(self):
        """
        A member that does not exist is an error, not null.
        """
        self.assertRaises(PointerError, evaluate, {"a": 1}, "/b")

    def test_array_index(self):
        """
        Decimal indexes address array items; '0' is valid.
        """
        self.assertEqual(evaluate({"x": ["p", "q"]}, "/x/0"), "p")

    def test_array_index_leading_zero(self):
        """
        '01' is not an array index (RFC 6901 section 4).
        """
        self.assertRaises(PointerError, evaluate, [1, 2], "/01")

    def test_array_index_dash(self):
        """
        '-' (the element after the last) never names a value.
        """
        self.assertRaises(PointerError, evaluate, [1, 2], "/-")

    def test_array_index_non_ascii_digits(self):
        """
        Only ASCII digits form an index: '²' or Arabic-Indic '١' are
        rejected rather than crashing or reading item 1.
        """
        self.assertRaises(PointerError, evaluate, [1, 2, 3], "/\u00b2")
        self.assertRaises(PointerError, evaluate, [1, 2, 3], "/\u0661")

    def test_array_index_negative_or_past_end(self):
        """
        '-1' and an index past the end are errors.
        """
        self.assertRaises(PointerError, evaluate, [1, 2], "/-1")
        self.assertRaises(PointerError, evaluate, [1, 2], "/2")

    def test_descend_into_scalar(self):
        """
        A token after a string or number is an error.
        """
        self.assertRaises(PointerError, evaluate, {"a": "text"}, "/a/0")
        self.assertRaises(PointerError, evaluate, {"a": None}, "/a/b")

    def test_star_maps(self):
        """
        '*' applies the rest of the path to each item of an array.
        """
        document = {"list": [{"id": "a"}, {"id": "b"}]}
        self.assertEqual(evaluate(document, "/list/*/id"), ["a", "b"])

    def test_star_flattens_one_level(self):
        """
        When the rest of the path yields arrays, their items are added to
        the output (flattened from an array of arrays); arrays deeper than
        that are kept as they are.
        """
        document = {
            "list": [
                {"ids": ["a", "b"]},
                {"ids": ["c"]},
                {"ids": [["d", "e"]]},
            ]
        }
        self.assertEqual(evaluate(document, "/list/*/ids"), ["a", "b", "c", ["d", "e"]])

    def test_star_at_end(self):
        """
        A final '*' over an array of arrays flattens them.
        """
        self.assertEqual(evaluate([[1, 2], [3], 4], "/*"), [1, 2, 3, 4])

    def test_nested_stars(self):
        """
        Two '*' tokens map over both levels.
        """
        document = {"threads": [{"emails": [{"id": "e1"}, {"id": "e2"}]}, {"emails": [{"id": "e3"}]}]}
        self.assertEqual(evaluate(document, "/threads/*/emails/*/id"), ["e1", "e2", "e3"])

    def test_star_on_empty_array(self):
        """
        '*' over an empty array is an empty array.
        """
        self.assertEqual(evaluate({"list": []}, "/list/*/id"), [])

    def test_star_item_without_member(self):
        """
        When one item lacks the member, the whole evaluation fails.
        """
        self.assertRaises(PointerError, evaluate, {"list": [{"id": "a"}, {}]}, "/list/*/id")

    def test_star_is_a_member_name_in_objects(self):
        """
        On an object, '*' is an ordinary member name.
        """
        self.assertEqual(evaluate({"*": 1}, "/*"), 1)
        self.assertRaises(PointerError, evaluate, {"a": 1}, "/*")
