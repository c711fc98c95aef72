# -*- test-case-name: tests.util.test_tticache -*-
"""
A time-to-idle cache: an entry lives as long as it is used.

jmapd keeps a few small in-memory caches (ids, sharings, acl, recipients; see
the ``cache-tti-*`` and ``cache-size-ids`` configuration keys).  Each entry
expires when it has been neither read nor written for ``tti`` seconds, so hot
entries stay and cold ones leave on their own, and each cache is bounded by an
entry count and/or a byte budget, evicting the least recently used entry first.

A cache is an optimisation only.  ``tti == 0`` or a bound of 0 turns the cache
off completely (nothing is stored, every lookup misses), so every result must be
the same with caches off; the tests of the callers can rely on that.

The cache is used from the reactor thread and from worker threads, so every
operation holds a :class:`threading.Lock`.  The critical sections are short and
never call out to user code except ``invalidate_where``'s predicate.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

from twisted.internet.interfaces import IReactorTime

K = TypeVar("K")
V = TypeVar("V")

__all__ = ["TTICache"]


class _Entry(Generic[V]):
    """
    One cached value with its size in bytes and the time it was last touched
    (read or written).
    """

    __slots__ = ("size", "touched", "value")

    def __init__(self, value: V, size: int, touched: float) -> None:
        self.value = value
        self.size = size
        self.touched = touched


def _default_sizeof(key: object, value: object) -> int:
    """
    A shallow estimate of an entry's memory: enough for a budget when the
    caller does not know better.
    """
    return sys.getsizeof(key) + sys.getsizeof(value)


class TTICache(Generic[K, V]):
    """
    A thread-safe LRU cache whose entries expire after ``tti`` seconds idle.

    Entries are kept in an :class:`OrderedDict` in the order they were last
    touched, least recent first.  That one order serves both purposes: the
    least recently used entry (evicted when over a bound) and the most idle
    entries (expired first) are both at the front, so expiry on access only
    looks at the front and costs O(1) amortised.

    To keep that order true even if the clock steps backwards (wall-clock
    adjustments), the cache never lets its own notion of "now" go back: time
    stands still for it until the clock catches up.

    @ivar name: A name for logs and metrics.
    @ivar hits: How many ``get`` calls found a live entry.
    @ivar misses: How many ``get`` calls did not.
    """

    def __init__(
        self,
        clock: IReactorTime,
        tti: float,
        max_entries: int | None = None,
        max_bytes: int | None = None,
        sizeof: Callable[[K, V], int] | None = None,
        name: str = "cache",
    ) -> None:
        """
        @param clock: Where the time comes from (the reactor, or a
            L{twisted.internet.task.Clock} in tests).
        @param tti: Seconds an entry may stay unused before it expires; 0
            disables the cache.  C{math.inf} keeps entries until evicted.
        @param max_entries: At most this many entries; C{None} for no count
            bound, 0 disables the cache.
        @param max_bytes: At most this many bytes of entries as measured by
            C{sizeof}; C{None} for no byte bound, 0 disables the cache.
        @param sizeof: Measures one entry in bytes.  Defaults to
            C{sys.getsizeof(key) + sys.getsizeof(value)} when C{max_bytes} is
            given; without either, sizes are not measured at all.
        @param name: A name for logs and metrics.
        """
        if tti < 0:
            raise ValueError(f"{name}: tti must be >= 0, got {tti!r}")
        if max_entries is not None and max_entries < 0:
            raise ValueError(
                f"{name}: max_entries must be >= 0 or None, got {max_entries!r}"
            )
        if max_bytes is not None and max_bytes < 0:
            raise ValueError(
                f"{name}: max_bytes must be >= 0 or None, got {max_bytes!r}"
            )
        if sizeof is None and max_bytes is not None:
            sizeof = _default_sizeof
        self.name = name
        self.hits = 0
        self.misses = 0
        self._clock = clock
        self._tti = tti
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._sizeof = sizeof
        self._entries: OrderedDict[K, _Entry[V]] = OrderedDict()
        self._bytes = 0
        self._last_now = float("-inf")
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"<TTICache {self.name!r} tti={self._tti!r} entries={len(self._entries)}"
            f" bytes={self._bytes}>"
        )

    @property
    def enabled(self) -> bool:
        """
        Whether this cache stores anything at all.
        """
        return self._tti > 0 and self._max_entries != 0 and self._max_bytes != 0

    @property
    def bytes_used(self) -> int:
        """
        The summed size of the stored entries; 0 when sizes are not measured.
        """
        return self._bytes

    def get(self, key: K, default: V | None = None) -> V | None:
        """
        Return the value stored under C{key}, or C{default}.

        A hit counts as use: it restarts the entry's idle timer and makes it
        the most recently used.
        """
        with self._lock:
            now = self._now()
            self._expire_front(now)
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return default
            entry.touched = now
            self._entries.move_to_end(key)
            self.hits += 1
            return entry.value

    def set(self, key: K, value: V) -> None:
        """
        Store C{value} under C{key}, replacing any earlier value, then evict
        least recently used entries until the cache is within its bounds.

        An entry larger than C{max_bytes} on its own is not stored; any earlier
        value under C{key} is dropped all the same, since it is now stale.
        """
        if not self.enabled:
            return
        size = self._sizeof(key, value) if self._sizeof is not None else 0
        with self._lock:
            now = self._now()
            self._remove(key)
            self._expire_front(now)
            if self._max_bytes is not None and size > self._max_bytes:
                return
            self._entries[key] = _Entry(value, size, now)
            self._bytes += size
            self._evict_over_bounds()

    def pop(self, key: K) -> None:
        """
        Forget C{key}, if it is cached: the thing it describes has changed.
        """
        with self._lock:
            self._remove(key)

    def invalidate_where(self, predicate: Callable[[K, V], bool]) -> int:
        """
        Forget every live entry for which C{predicate(key, value)} is true,
        for invalidations that cannot name their keys (say, every entry of one
        account).  The predicate runs under the cache's lock, so it must not
        use this cache.

        @return: How many entries were dropped.
        """
        with self._lock:
            self._expire_front(self._now())
            doomed = [k for k, e in self._entries.items() if predicate(k, e.value)]
            for key in doomed:
                self._remove(key)
            return len(doomed)

    def clear(self) -> None:
        """
        Forget every entry.  The hit and miss counters are kept.
        """
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def expire(self) -> int:
        """
        Drop every entry that has been idle for C{tti} seconds or more.

        Access expires entries as it goes; this is for a periodic timer, so
        that memory held by a cache nobody reads is given back as well.

        @return: How many entries were dropped.
        """
        with self._lock:
            return self._expire_front(self._now())

    def __len__(self) -> int:
        """
        The number of live entries.
        """
        with self._lock:
            self._expire_front(self._now())
            return len(self._entries)

    def _now(self) -> float:
        """
        The clock's time, never earlier than a time already used (see the
        class docstring).  Call with the lock held.
        """
        now = max(self._clock.seconds(), self._last_now)
        self._last_now = now
        return now

    def _expire_front(self, now: float) -> int:
        """
        Drop idle-expired entries from the front of the LRU order, stopping
        at the first live one: entries behind it were touched later.  Call
        with the lock held.
        """
        entries = self._entries
        deadline = now - self._tti
        count = 0
        while entries:
            key, entry = next(iter(entries.items()))
            if entry.touched > deadline:
                break
            del entries[key]
            self._bytes -= entry.size
            count += 1
        return count

    def _evict_over_bounds(self) -> None:
        """
        Drop least recently used entries until both bounds hold.  Call with
        the lock held.
        """
        entries = self._entries
        max_entries = self._max_entries
        max_bytes = self._max_bytes
        while entries and (
            (max_entries is not None and len(entries) > max_entries)
            or (max_bytes is not None and self._bytes > max_bytes)
        ):
            _, entry = entries.popitem(last=False)
            self._bytes -= entry.size

    def _remove(self, key: K) -> None:
        """
        Drop C{key} if present.  Call with the lock held.
        """
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry.size
