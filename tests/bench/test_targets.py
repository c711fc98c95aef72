"""
Tests for L{bench.targets}: how a target is named on the command line.
"""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from bench.targets import TargetSpec, parse_target


class ParseTargetTests(TestCase):
    def test_target(self) -> None:
        """
        NAME=URL,USER,PASSWORD names all four; the password may hold commas.
        """
        self.assertEqual(parse_target("cyrus=http://127.0.0.1:18080/.well-known/jmap,alice,se,cret"),
                         TargetSpec("cyrus", "http://127.0.0.1:18080/.well-known/jmap", "alice", "se,cret"))

    def test_incomplete(self) -> None:
        """
        A missing name, user or password is an error.
        """
        for text in ["http://h/,u,p", "=http://h/,u,p", "x=http://h/,u", "x=http://h/,,p"]:
            self.assertRaises(ValueError, parse_target, text)

    def test_https(self) -> None:
        """
        The load client speaks plain HTTP only, and says so.
        """
        error = self.assertRaises(ValueError, parse_target, "x=https://h/,u,p")
        self.assertIn("http://", str(error))
