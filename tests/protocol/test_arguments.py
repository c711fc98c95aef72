"""
Tests for L{jmapd.protocol.arguments}: argument types of RFC 8620
section 1 and the invalidArguments errors they raise.
"""

from twisted.trial.unittest import SynchronousTestCase

from jmapd.protocol.arguments import MAX_UNSIGNED, Arguments, is_id, is_int, is_unsigned_int
from jmapd.protocol.errors import MethodError


class PredicateTests(SynchronousTestCase):
    def test_is_id(self):
        """
        An Id is 1 to 255 characters of the URL-safe base64 alphabet.
        """
        for good in ("a", "A-z_09", "x" * 255):
            self.assertTrue(is_id(good), good)
        for bad in ("", "x" * 256, "a b", "a/b", "a=", "é", 5, None, "#a"):
            self.assertFalse(is_id(bad), bad)

    def test_is_id_trailing_newline(self):
        """
        A trailing newline makes a string no Id ("$" in a regular
        expression would let it through).
        """
        self.assertFalse(is_id("abc\n"))

    def test_is_unsigned_int(self):
        """
        UnsignedInt is 0 to 2^53-1; booleans and floats are not integers.
        """
        self.assertTrue(is_unsigned_int(0))
        self.assertTrue(is_unsigned_int(MAX_UNSIGNED))
        for bad in (-1, MAX_UNSIGNED + 1, True, 1.0, "1"):
            self.assertFalse(is_unsigned_int(bad), bad)

    def test_is_int(self):
        """
        Int is -(2^53-1) to 2^53-1.
        """
        self.assertTrue(is_int(-MAX_UNSIGNED))
        self.assertFalse(is_int(-MAX_UNSIGNED - 1))
        self.assertFalse(is_int(False))


class ArgumentsTests(SynchronousTestCase):
    def assertInvalid(self, fn, *args, **kwargs):
        error = self.assertRaises(MethodError, fn, *args, **kwargs)
        self.assertEqual(error.type, "invalidArguments")
        return error

    def test_required_id(self):
        """
        A required argument that is missing is invalidArguments naming it.
        """
        error = self.assertInvalid(Arguments({}, "Foo/get").id, "accountId")
        self.assertIn("accountId", error.description)
        self.assertIn("Foo/get", error.description)

    def test_id_wrong_type(self):
        """
        A value of the wrong type is invalidArguments naming the argument.
        """
        error = self.assertInvalid(Arguments({"accountId": 5}, "Foo/get").id, "accountId")
        self.assertIn("accountId", error.description)

    def test_optional_nullable_id(self):
        """
        An optional nullable Id gives the default when missing or null.
        """
        self.assertEqual(Arguments({}, "m").id("anchor", required=False, nullable=True, default="d"), "d")
        self.assertIsNone(Arguments({"anchor": None}, "m").id("anchor", required=False, nullable=True))
        self.assertInvalid(Arguments({"anchor": None}, "m").id, "anchor", required=False)

    def test_unsigned_int_positive(self):
        """
        With positive=True, 0 is rejected (maxChanges must be > 0).
        """
        self.assertEqual(Arguments({"n": 1}, "m").unsigned_int("n", positive=True), 1)
        self.assertInvalid(Arguments({"n": 0}, "m").unsigned_int, "n", positive=True)
        self.assertInvalid(Arguments({"n": -1}, "m").unsigned_int, "n")
        self.assertEqual(Arguments({"n": 0}, "m").unsigned_int("n"), 0)

    def test_int(self):
        """
        Int accepts negative values and gives the default for null.
        """
        self.assertEqual(Arguments({"p": -3}, "m").int("p"), -3)
        self.assertEqual(Arguments({"p": None}, "m").int("p", 7), 7)
        self.assertInvalid(Arguments({"p": 1.5}, "m").int, "p")

    def test_boolean(self):
        """
        Booleans must be true or false, never 0 or 1.
        """
        self.assertTrue(Arguments({"b": True}, "m").boolean("b"))
        self.assertInvalid(Arguments({"b": 1}, "m").boolean, "b")
        self.assertInvalid(Arguments({"b": None}, "m").boolean, "b")

    def test_id_list(self):
        """
        An Id[] may hold '#creationId' references unless they are
        disallowed; other entries must be Ids.
        """
        self.assertEqual(Arguments({"ids": ["a", "#c"]}, "m").id_list("ids"), ["a", "#c"])
        self.assertInvalid(Arguments({"ids": ["#c"]}, "m").id_list, "ids", allow_creation_refs=False)
        self.assertInvalid(Arguments({"ids": ["a b"]}, "m").id_list, "ids")
        self.assertInvalid(Arguments({"ids": "a"}, "m").id_list, "ids")
        self.assertIsNone(Arguments({"ids": None}, "m").id_list("ids"))

    def test_string_list(self):
        """
        A String[] rejects non-string items.
        """
        self.assertEqual(Arguments({"p": ["a"]}, "m").string_list("p"), ["a"])
        self.assertInvalid(Arguments({"p": ["a", 1]}, "m").string_list, "p")

    def test_object_values(self):
        """
        An object argument can check each value.
        """
        args = Arguments({"o": {"a": 1, "b": "x"}}, "m")
        self.assertInvalid(args.object, "o", values=lambda v: isinstance(v, int))

    def test_done_rejects_unknown(self):
        """
        done() rejects arguments the method never read, naming them.
        """
        args = Arguments({"accountId": "a", "bogus": 1, "other": 2}, "Foo/get")
        args.id("accountId")
        error = self.assertInvalid(args.done)
        self.assertIn("bogus", error.description)
        self.assertIn("other", error.description)
        args.done(ignore=["bogus", "other"])

    def test_long_value_shortened(self):
        """
        The description shows a long wrong value shortened.
        """
        error = self.assertInvalid(Arguments({"a": "x" * 500}, "m").int, "a")
        self.assertLess(len(error.description), 200)
