"""
Tests for L{jmapd.protocol.patch.apply_patch}: the PatchObject rules of
RFC 8620 section 5.3.
"""

from twisted.trial.unittest import SynchronousTestCase

from jmapd.protocol.errors import SetErrorException
from jmapd.protocol.patch import apply_patch


class ApplyPatchTests(SynchronousTestCase):
    def assertInvalidPatch(self, current, patch):
        """
        The patch is rejected with the invalidPatch SetError.
        """
        error = self.assertRaises(SetErrorException, apply_patch, current, patch)
        self.assertEqual(error.error.type, "invalidPatch")
        return error.error

    def test_replace_top_level(self):
        """
        A top-level path replaces the property, and is reported touched.
        """
        new, touched = apply_patch({"a": 1, "b": 2}, {"a": 5})
        self.assertEqual(new, {"a": 5, "b": 2})
        self.assertEqual(touched, {"a"})

    def test_null_top_level(self):
        """
        null at the top level is kept as null: the data type decides what
        the default is.
        """
        new, touched = apply_patch({"a": 1}, {"a": None})
        self.assertEqual(new, {"a": None})
        self.assertEqual(touched, {"a"})

    def test_nested_set_and_remove(self):
        """
        'tags/x' adds a key to a map and 'tags/y': null removes one; the
        current object is not modified.
        """
        current = {"tags": {"y": True, "z": True}}
        new, touched = apply_patch(current, {"tags/x": True, "tags/y": None})
        self.assertEqual(new, {"tags": {"x": True, "z": True}})
        self.assertEqual(touched, {"tags"})
        self.assertEqual(current, {"tags": {"y": True, "z": True}})

    def test_remove_missing_key(self):
        """
        Removing a key that is not there is a no-op.
        """
        new, _ = apply_patch({"tags": {}}, {"tags/nope": None})
        self.assertEqual(new, {"tags": {}})

    def test_deep_path_copies(self):
        """
        A deep path changes a copy, never the nested objects of the
        current value.
        """
        current = {"a": {"b": {"c": 1}}}
        new, _ = apply_patch(current, {"a/b/c": 2})
        self.assertEqual(new, {"a": {"b": {"c": 2}}})
        self.assertEqual(current, {"a": {"b": {"c": 1}}})

    def test_escaped_key(self):
        """
        '~1' and '~0' in a path name keys with '/' and '~'.
        """
        new, _ = apply_patch({"m": {}}, {"m/a~1b~0": 1})
        self.assertEqual(new, {"m": {"a/b~": 1}})

    def test_whole_object_is_a_patch(self):
        """
        An entire object is a valid PatchObject.
        """
        current = {"id": "x", "title": "t", "tags": {"a": True}}
        new, touched = apply_patch(current, {"id": "x", "title": "u", "tags": {}})
        self.assertEqual(new, {"id": "x", "title": "u", "tags": {}})
        self.assertEqual(touched, {"id", "title", "tags"})

    def test_prefix_paths(self):
        """
        A path that is the prefix of another is invalidPatch.
        """
        self.assertInvalidPatch({"alerts": {"1": {"offset": 1}}}, {"alerts": {}, "alerts/1/offset": 2})

    def test_prefix_paths_not_adjacent_when_sorted(self):
        """
        The prefix rule holds even when another path sorts between the two
        ('a-b' sorts between 'a' and 'a/b').
        """
        self.assertInvalidPatch({"a": {"b": 1}, "a-b": 1}, {"a": {}, "a-b": 2, "a/b": 3})

    def test_same_prefix_text_is_not_prefix_path(self):
        """
        'ab' is not a prefix path of 'a'; both may be patched.
        """
        new, _ = apply_patch({"a": {}, "ab": 1}, {"a/x": 1, "ab": 2})
        self.assertEqual(new, {"a": {"x": 1}, "ab": 2})

    def test_descend_into_non_object(self):
        """
        Descending through a string, null or missing property is
        invalidPatch naming the top-level property.
        """
        for current in ({"a": "text"}, {"a": None}, {}):
            error = self.assertInvalidPatch(current, {"a/b": 1})
            self.assertEqual(error.properties, ("a",))

    def test_intermediate_must_exist(self):
        """
        Every part before the last must already exist.
        """
        self.assertInvalidPatch({"a": {}}, {"a/b/c": 1})

    def test_inside_array(self):
        """
        A path into an array is invalidPatch: arrays are replaced whole.
        """
        self.assertInvalidPatch({"a": [1, 2]}, {"a/0": 5})
        self.assertInvalidPatch({"a": {"b": [1]}}, {"a/b/0": 5})

    def test_empty_paths(self):
        """
        An empty path or an empty token is invalidPatch.
        """
        for path in ("", "a//b", "a/", "/a"):
            self.assertInvalidPatch({"a": {"b": {}}}, {path: 1})
