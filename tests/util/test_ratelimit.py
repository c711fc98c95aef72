# -*- test-case-name: tests.util.test_ratelimit -*-
"""
Tests for L{jmapd.util.ratelimit}.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from jmapd.util.ratelimit import RateLimiter


class LimitTests(SynchronousTestCase):
    """
    C{count} events per C{period}, refilled continuously.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.limiter = RateLimiter(self.clock, count=10, period=60)

    def test_allowsExactlyCount(self) -> None:
        """
        C{count} events in a burst are allowed; the next one is refused.
        """
        self.assertEqual([self.limiter.hit("ip") for _ in range(10)], [True] * 10)
        self.assertFalse(self.limiter.hit("ip"))

    def test_refusedNotCounted(self) -> None:
        """
        A refused event is not counted: a client that keeps trying still gets
        its next event as soon as one token has come back.
        """
        for _ in range(10):
            self.limiter.hit("ip")
        for _ in range(100):
            self.assertFalse(self.limiter.hit("ip"))
        self.clock.advance(6)
        self.assertTrue(self.limiter.hit("ip"))
        self.assertFalse(self.limiter.hit("ip"))

    def test_refillRate(self) -> None:
        """
        Tokens come back at C{count / period} per second: one every 6 seconds
        for 10 per minute, and not before.
        """
        for _ in range(10):
            self.limiter.hit("ip")
        self.clock.advance(5.999)
        self.assertFalse(self.limiter.hit("ip"))
        self.clock.advance(0.001)
        self.assertTrue(self.limiter.hit("ip"))
        self.clock.advance(18)
        self.assertEqual(
            [self.limiter.hit("ip") for _ in range(4)], [True] * 3 + [False]
        )

    def test_refillCapped(self) -> None:
        """
        A long idle time refills the bucket to C{count}, never beyond.
        """
        self.limiter.hit("ip")
        self.clock.advance(3600)
        self.assertEqual(
            [self.limiter.hit("ip") for _ in range(11)], [True] * 10 + [False]
        )

    def test_retryAfter(self) -> None:
        """
        L{RateLimiter.retry_after} is 0 while events are allowed, then the
        seconds until the next token; after waiting that long, an event is
        allowed.
        """
        self.assertEqual(self.limiter.retry_after("ip"), 0)
        for _ in range(10):
            self.limiter.hit("ip")
        self.assertEqual(self.limiter.retry_after("ip"), 6)
        self.clock.advance(2.5)
        self.assertAlmostEqual(self.limiter.retry_after("ip"), 3.5)
        self.clock.advance(3.5)
        self.assertEqual(self.limiter.retry_after("ip"), 0)
        self.assertTrue(self.limiter.hit("ip"))

    def test_retryAfterInexactRate(self) -> None:
        """
        With a rate that floats cannot represent exactly (100 per minute),
        waiting exactly L{RateLimiter.retry_after} is enough.
        """
        limiter = RateLimiter(self.clock, count=100, period=60)
        self.assertEqual(sum(limiter.hit("ip") for _ in range(101)), 100)
        for _ in range(50):
            delay = limiter.retry_after("ip")
            self.assertGreater(delay, 0)
            self.clock.advance(delay)
            self.assertTrue(limiter.hit("ip"))
            self.assertFalse(limiter.hit("ip"))

    def test_checkRecordsNothing(self) -> None:
        """
        L{RateLimiter.check} says whether one more event would be allowed
        without using a token.
        """
        for _ in range(9):
            self.limiter.hit("ip")
        for _ in range(5):
            self.assertTrue(self.limiter.check("ip"))
        self.assertTrue(self.limiter.hit("ip"))
        self.assertFalse(self.limiter.check("ip"))
        self.assertTrue(self.limiter.check("other"))
        self.assertEqual(len(self.limiter), 1)

    def test_reset(self) -> None:
        """
        L{RateLimiter.reset} gives a key a full bucket again; resetting an
        unknown key is harmless.
        """
        for _ in range(10):
            self.limiter.hit("ip")
        self.limiter.reset("ip")
        self.limiter.reset("unknown")
        self.assertEqual(
            [self.limiter.hit("ip") for _ in range(11)], [True] * 10 + [False]
        )

    def test_keysIndependent(self) -> None:
        """
        Each key has its own bucket.
        """
        for _ in range(10):
            self.limiter.hit("a")
        self.assertFalse(self.limiter.hit("a"))
        self.assertTrue(self.limiter.hit("b"))
        self.assertEqual(self.limiter.retry_after("b"), 0)


class MemoryTests(SynchronousTestCase):
    """
    The number of tracked keys stays bounded.
    """

    def test_maxKeys(self) -> None:
        """
        At C{max_keys}, a new key makes the limiter forget the key seen least
        recently, which then starts again from a full bucket.
        """
        clock = Clock()
        limiter = RateLimiter(clock, count=1, period=60, max_keys=3)
        for key in "abc":
            limiter.hit(key)
        limiter.hit("a")  # refused, but "a" was seen most recently
        limiter.hit("d")
        self.assertEqual(len(limiter), 3)
        self.assertTrue(limiter.hit("b"))
        self.assertFalse(limiter.hit("a"))
        self.assertFalse(limiter.hit("d"))

    def test_manyKeys(self) -> None:
        """
        However many keys arrive, at most C{max_keys} are tracked.
        """
        limiter = RateLimiter(Clock(), count=5, period=60, max_keys=100)
        for n in range(10_000):
            limiter.hit(f"10.0.{n // 256}.{n % 256}")
        self.assertEqual(len(limiter), 100)

    def test_expire(self) -> None:
        """
        L{RateLimiter.expire} forgets exactly the keys whose bucket is full
        again and returns how many.
        """
        clock = Clock()
        limiter = RateLimiter(clock, count=10, period=60)
        limiter.hit("one")
        limiter.hit("two")
        limiter.hit("two")
        self.assertEqual(limiter.expire(), 0)
        clock.advance(6)
        self.assertEqual(limiter.expire(), 1)
        self.assertEqual(len(limiter), 1)
        self.assertFalse(limiter.retry_after("two"))
        clock.advance(6)
        self.assertEqual(limiter.expire(), 1)
        self.assertEqual(len(limiter), 0)


class ConfigurationTests(SynchronousTestCase):
    """
    Special and invalid settings.
    """

    def test_zeroCountUnlimited(self) -> None:
        """
        C{count=0} means no limit: every event is allowed and nothing is
        tracked.
        """
        limiter = RateLimiter(Clock(), count=0, period=60)
        self.assertTrue(all(limiter.hit("ip") for _ in range(10_000)))
        self.assertTrue(limiter.check("ip"))
        self.assertEqual(limiter.retry_after("ip"), 0)
        self.assertEqual(len(limiter), 0)
        self.assertEqual(limiter.expire(), 0)

    def test_invalid(self) -> None:
        """
        A negative count, a non-positive period or C{max_keys} below 1 are
        rejected.
        """
        self.assertRaises(ValueError, RateLimiter, Clock(), -1, 60)
        self.assertRaises(ValueError, RateLimiter, Clock(), 10, 0)
        self.assertRaises(ValueError, RateLimiter, Clock(), 10, 60, max_keys=0)
