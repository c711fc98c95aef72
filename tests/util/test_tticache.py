# -*- test-case-name: tests.util.test_tticache -*-
"""
Tests for L{jmapd.util.tticache}.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from jmapd.util.tticache import TTICache


def _cache(
    clock: Clock,
    tti: float = 60,
    max_entries: int | None = None,
    max_bytes: int | None = None,
    sizeof: Callable[[str, str], int] | None = None,
) -> TTICache[str, str]:
    """
    A cache of strings for the tests.
    """
    return TTICache(clock, tti, max_entries, max_bytes, sizeof)


class ExpiryTests(SynchronousTestCase):
    """
    Entries expire after C{tti} seconds without a read or a write.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.cache = _cache(self.clock, tti=60)

    def test_liveJustBeforeTTI(self) -> None:
        """
        An entry idle for less than C{tti} seconds is still there.
        """
        self.cache.set("k", "v")
        self.clock.advance(59.999)
        self.assertEqual(self.cache.get("k"), "v")

    def test_expiresAtExactlyTTI(self) -> None:
        """
        An entry idle for exactly C{tti} seconds has expired.
        """
        self.cache.set("k", "v")
        self.clock.advance(60)
        self.assertIsNone(self.cache.get("k"))
        self.assertEqual(len(self.cache), 0)

    def test_readRefreshes(self) -> None:
        """
        A hit restarts the idle timer: it is time to idle, not time to live.
        """
        self.cache.set("k", "v")
        self.clock.advance(50)
        self.assertEqual(self.cache.get("k"), "v")
        self.clock.advance(50)
        self.assertEqual(self.cache.get("k"), "v")
        self.clock.advance(60)
        self.assertIsNone(self.cache.get("k"))

    def test_writeRefreshes(self) -> None:
        """
        Setting a key again restarts its idle timer and keeps the new value.
        """
        self.cache.set("k", "v1")
        self.clock.advance(50)
        self.cache.set("k", "v2")
        self.clock.advance(50)
        self.assertEqual(self.cache.get("k"), "v2")

    def test_missDoesNotRefresh(self) -> None:
        """
        Reading other keys does not keep an entry alive.
        """
        self.cache.set("k", "v")
        self.clock.advance(30)
        self.cache.get("other")
        self.clock.advance(30)
        self.assertIsNone(self.cache.get("k"))

    def test_accessRemovesExpiredEntries(self) -> None:
        """
        Any access drops idle-expired entries, not only the key it asks for,
        so an unread entry does not hold memory forever.
        """
        self.cache.set("a", "1")
        self.cache.set("b", "2")
        self.clock.advance(30)
        self.cache.set("c", "3")
        self.clock.advance(30)
        self.cache.get("c")
        self.assertEqual(len(self.cache), 1)
        self.assertEqual(self.cache.get("c"), "3")

    def test_expireCounts(self) -> None:
        """
        L{TTICache.expire} drops exactly the idle-expired entries and
        returns how many it dropped.
        """
        self.cache.set("a", "1")
        self.cache.set("b", "2")
        self.clock.advance(30)
        self.cache.set("c", "3")
        self.assertEqual(self.cache.expire(), 0)
        self.clock.advance(30)
        self.assertEqual(self.cache.expire(), 2)
        self.assertEqual(self.cache.expire(), 0)
        self.assertEqual(self.cache.get("c"), "3")

    def test_expireReleasesBytes(self) -> None:
        """
        Expired entries no longer count towards L{TTICache.bytes_used}.
        """
        cache = _cache(self.clock, max_bytes=1000, sizeof=lambda k, v: 10)
        cache.set("a", "1")
        self.assertEqual(cache.bytes_used, 10)
        self.clock.advance(60)
        self.assertEqual(cache.expire(), 1)
        self.assertEqual(cache.bytes_used, 0)

    def test_clockSteppingBack(self) -> None:
        """
        If the clock steps backwards, entries are not expired early and
        expiry by idleness resumes once the clock passes its old time.
        """
        self.clock.advance(1000)
        self.cache.set("a", "1")
        self.clock.rightNow = 500
        self.cache.set("b", "2")
        self.clock.rightNow = 1059
        self.assertEqual(self.cache.expire(), 0)
        self.clock.rightNow = 1060
        self.assertEqual(self.cache.expire(), 2)

    def test_infiniteTTI(self) -> None:
        """
        C{tti=math.inf} keeps entries until they are evicted or invalidated.
        """
        cache = _cache(self.clock, tti=float("inf"))
        cache.set("k", "v")
        self.clock.advance(10**9)
        self.assertEqual(cache.get("k"), "v")


class BoundTests(SynchronousTestCase):
    """
    Bounds on entries and bytes evict the least recently used entries.
    """

    def setUp(self) -> None:
        self.clock = Clock()

    def test_evictByEntries(self) -> None:
        """
        Over C{max_entries}, the least recently used entry is evicted, where a
        read counts as use.
        """
        cache = _cache(self.clock, max_entries=2)
        cache.set("a", "1")
        cache.set("b", "2")
        cache.get("a")
        cache.set("c", "3")
        self.assertEqual(len(cache), 2)
        self.assertIsNone(cache.get("b"))
        self.assertEqual(cache.get("a"), "1")
        self.assertEqual(cache.get("c"), "3")

    def test_replaceDoesNotEvict(self) -> None:
        """
        Setting an existing key at the bound replaces it without evicting
        another entry.
        """
        cache = _cache(self.clock, max_entries=2)
        cache.set("a", "1")
        cache.set("b", "2")
        cache.set("a", "3")
        self.assertEqual(cache.get("a"), "3")
        self.assertEqual(cache.get("b"), "2")

    def test_evictByBytes(self) -> None:
        """
        Over C{max_bytes} (as measured by C{sizeof}), least recently used
        entries are evicted until the rest fit.
        """
        cache: TTICache[str, str] = TTICache(
            self.clock, 60, max_bytes=10, sizeof=lambda k, v: len(v)
        )
        cache.set("a", "xxxx")
        cache.set("b", "xxxx")
        cache.get("a")
        cache.set("c", "xxxxx")
        self.assertEqual(cache.bytes_used, 9)
        self.assertIsNone(cache.get("b"))
        self.assertEqual(cache.get("a"), "xxxx")
        cache.set("d", "xxxxxxxxx")
        self.assertEqual(len(cache), 1)
        self.assertEqual(cache.bytes_used, 9)
        self.assertEqual(cache.get("d"), "xxxxxxxxx")

    def test_bytesFollowReplacement(self) -> None:
        """
        Replacing or popping an entry adjusts L{TTICache.bytes_used}.
        """
        cache: TTICache[str, str] = TTICache(
            self.clock, 60, max_bytes=100, sizeof=lambda k, v: len(v)
        )
        cache.set("a", "xxx")
        cache.set("a", "xxxxxxx")
        self.assertEqual(cache.bytes_used, 7)
        cache.pop("a")
        self.assertEqual(cache.bytes_used, 0)

    def test_oversizeNotStored(self) -> None:
        """
        An entry larger than C{max_bytes} on its own is not stored, evicts
        nothing, and drops the stale value previously stored under its key.
        """
        cache: TTICache[str, str] = TTICache(
            self.clock, 60, max_bytes=10, sizeof=lambda k, v: len(v)
        )
        cache.set("a", "small")
        cache.set("b", "small")
        cache.set("b", "x" * 11)
        self.assertIsNone(cache.get("b"))
        self.assertEqual(cache.get("a"), "small")
        self.assertEqual(cache.bytes_used, 5)

    def test_defaultSizeof(self) -> None:
        """
        With C{max_bytes} but no C{sizeof}, entries are measured as
        C{sys.getsizeof(key) + sys.getsizeof(value)}.
        """
        cache = _cache(self.clock, max_bytes=10_000)
        cache.set("key", "value")
        self.assertEqual(
            cache.bytes_used, sys.getsizeof("key") + sys.getsizeof("value")
        )

    def test_noBytesWithoutSizing(self) -> None:
        """
        Without C{max_bytes} or C{sizeof}, sizes are not measured.
        """
        cache = _cache(self.clock, max_entries=10)
        cache.set("key", "value")
        self.assertEqual(cache.bytes_used, 0)

    def test_bothBounds(self) -> None:
        """
        With both bounds, whichever is exceeded causes eviction.
        """
        cache: TTICache[str, str] = TTICache(
            self.clock, 60, max_entries=3, max_bytes=10, sizeof=lambda k, v: len(v)
        )
        for key in "abcd":
            cache.set(key, "x")
        self.assertEqual(len(cache), 3)
        cache.set("e", "x" * 9)
        self.assertEqual(len(cache), 2)
        self.assertEqual(cache.get("d"), "x")
        self.assertEqual(cache.get("e"), "x" * 9)


class DisabledTests(SynchronousTestCase):
    """
    A cache with C{tti} 0 or a bound of 0 is off: results are the same as
    with no cache.
    """

    def assertDisabled(self, cache: TTICache[str, str]) -> None:
        self.assertFalse(cache.enabled)
        cache.set("k", "v")
        self.assertIsNone(cache.get("k"))
        self.assertEqual(cache.get("k", "default"), "default")
        self.assertEqual(len(cache), 0)
        self.assertEqual(cache.bytes_used, 0)
        self.assertEqual(cache.hits, 0)

    def test_zeroTTI(self) -> None:
        """
        C{tti=0} disables the cache.
        """
        self.assertDisabled(TTICache(Clock(), 0, max_entries=10))

    def test_zeroEntries(self) -> None:
        """
        C{max_entries=0} disables the cache.
        """
        self.assertDisabled(TTICache(Clock(), 60, max_entries=0))

    def test_zeroBytes(self) -> None:
        """
        C{max_bytes=0} disables the cache.
        """
        self.assertDisabled(TTICache(Clock(), 60, max_bytes=0))

    def test_enabled(self) -> None:
        """
        A positive C{tti} with no bound, or positive bounds, is enabled.
        """
        self.assertTrue(TTICache(Clock(), 60).enabled)
        self.assertTrue(TTICache(Clock(), 60, max_entries=1, max_bytes=1).enabled)

    def test_negativeRejected(self) -> None:
        """
        Negative C{tti} or bounds are errors, not silently "off".
        """
        self.assertRaises(ValueError, TTICache, Clock(), -1)
        self.assertRaises(ValueError, TTICache, Clock(), 60, max_entries=-1)
        self.assertRaises(ValueError, TTICache, Clock(), 60, max_bytes=-1)


class InvalidationTests(SynchronousTestCase):
    """
    Entries can be dropped by key, by predicate, or all at once.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.cache: TTICache[tuple[str, str], int] = TTICache(
            self.clock, 60, max_bytes=1000, sizeof=lambda k, v: 10
        )
        self.cache.set(("acct1", "a"), 1)
        self.cache.set(("acct1", "b"), 2)
        self.cache.set(("acct2", "a"), 3)

    def test_pop(self) -> None:
        """
        L{TTICache.pop} drops one key and ignores a key that is absent.
        """
        self.cache.pop(("acct1", "a"))
        self.cache.pop(("nobody", "x"))
        self.assertIsNone(self.cache.get(("acct1", "a")))
        self.assertEqual(len(self.cache), 2)
        self.assertEqual(self.cache.bytes_used, 20)

    def test_invalidateWhere(self) -> None:
        """
        L{TTICache.invalidate_where} drops the entries whose key and value
        match and returns how many it dropped.
        """
        count = self.cache.invalidate_where(lambda k, v: k[0] == "acct1")
        self.assertEqual(count, 2)
        self.assertEqual(len(self.cache), 1)
        self.assertEqual(self.cache.get(("acct2", "a")), 3)
        self.assertEqual(self.cache.bytes_used, 10)
        self.assertEqual(self.cache.invalidate_where(lambda k, v: v == 3), 1)
        self.assertEqual(self.cache.invalidate_where(lambda k, v: True), 0)

    def test_invalidateWhereSkipsExpired(self) -> None:
        """
        L{TTICache.invalidate_where} counts only live entries: expired ones
        are gone already.
        """
        self.clock.advance(60)
        self.assertEqual(self.cache.invalidate_where(lambda k, v: True), 0)

    def test_clear(self) -> None:
        """
        L{TTICache.clear} drops every entry and keeps the counters.
        """
        self.cache.get(("acct1", "a"))
        self.cache.clear()
        self.assertEqual(len(self.cache), 0)
        self.assertEqual(self.cache.bytes_used, 0)
        self.assertIsNone(self.cache.get(("acct1", "a")))
        self.assertEqual((self.cache.hits, self.cache.misses), (1, 1))


class CounterTests(SynchronousTestCase):
    """
    Hits and misses are counted for metrics.
    """

    def test_hitsAndMisses(self) -> None:
        """
        A get that finds a live entry is a hit; one that finds nothing, or an
        expired entry, is a miss.
        """
        clock = Clock()
        cache = _cache(clock)
        cache.get("k")
        cache.set("k", "v")
        cache.get("k")
        cache.get("k")
        clock.advance(60)
        cache.get("k")
        self.assertEqual((cache.hits, cache.misses), (2, 2))

    def test_falsyValues(self) -> None:
        """
        Falsy values are cached and returned like any other, and count as
        hits.
        """
        cache: TTICache[str, object] = TTICache(Clock(), 60)
        cache.set("zero", 0)
        cache.set("empty", "")
        self.assertEqual(cache.get("zero", "default"), 0)
        self.assertEqual(cache.get("empty", "default"), "")
        self.assertEqual(cache.hits, 2)


class ThreadTests(SynchronousTestCase):
    """
    The cache may be used from several threads at once.
    """

    def test_concurrentUse(self) -> None:
        """
        Concurrent sets, gets and pops from several threads keep the entry
        bound and the byte count consistent.
        """
        cache: TTICache[int, int] = TTICache(
            Clock(), 60, max_entries=50, max_bytes=400, sizeof=lambda k, v: 8
        )

        def work(base: int) -> None:
            for i in range(2000):
                key = base + i % 97
                cache.set(key, i)
                cache.get(key - 1)
                if i % 7 == 0:
                    cache.pop(key)

        threads = [threading.Thread(target=work, args=(n * 1000,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.assertLessEqual(len(cache), 50)
        self.assertEqual(cache.bytes_used, 8 * len(cache))
