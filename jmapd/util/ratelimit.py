# -*- test-case-name: tests.util.test_ratelimit -*-
"""
A per-key token-bucket rate limiter.

jmapd limits failed authentication attempts per client IP
(``rate-limit-auth``), requests per account (``rate-limit-authenticated``) and
requests per IP without credentials (``rate-limit-anonymous``).  Each is
"C{count} events per C{period} seconds".

A token bucket has no window edges to game: each key holds up to C{count}
tokens, an event spends one, and tokens come back continuously at
C{count / period} per second.  So a client may burst C{count} events at once,
and after that gets one event every C{period / count} seconds; and
L{RateLimiter.retry_after} is exact, which is what a Retry-After header needs.

Memory is bounded: at most C{max_keys} keys are tracked, and when a new key
arrives at the bound, the key seen least recently is forgotten (it would get a
full bucket back if it came again).  A bucket that has filled up again holds no
information, so L{RateLimiter.expire} forgets it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from twisted.internet.interfaces import IReactorTime

__all__ = ["RateLimiter"]

# Tolerance, in tokens, for float rounding: a client that waits exactly the
# Retry-After it was given must not be refused because the refill came to
# 0.9999999999 tokens.
_EPSILON = 1e-9


class _Bucket:
    """
    The tokens one key had at the last event recorded for it.
    """

    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, updated: float) -> None:
        self.tokens = tokens
        self.updated = updated


class RateLimiter:
    """
    Allow at most C{count} events per C{period} seconds for each key.

    Thread-safe: authentication may be checked from worker threads.
    """

    def __init__(
        self,
        clock: IReactorTime,
        count: int,
        period: float,
        max_keys: int = 100_000,
    ) -> None:
        """
        @param clock: Where the time comes from (the reactor, or a
            L{twisted.internet.task.Clock} in tests).
        @param count: Events allowed per C{period}, and the largest burst;
            0 means no limit at all.
        @param period: Seconds over which C{count} events are allowed.
        @param max_keys: At most this many keys are tracked at once.
        """
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count!r}")
        if count > 0 and not period > 0:
            raise ValueError(f"period must be > 0, got {period!r}")
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys!r}")
        self._clock = clock
        self._count = count
        self._period = period
        self._max_keys = max_keys
        # Least recently seen key first.
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """
        The number of keys being tracked (for metrics and tests).
        """
        return len(self._buckets)

    def hit(self, key: str) -> bool:
        """
        Record one event for C{key}.

        @return: C{True} if the event is allowed.  C{False} if it exceeds the
            limit; a refused event is not counted, so a client that keeps
            trying is not locked out for longer.
        """
        if self._count == 0:
            return True
        with self._lock:
            now = self._clock.seconds()
            bucket = self._buckets.get(key)
            tokens = self._tokens(bucket, now)
            if tokens < 1 - _EPSILON:
                if bucket is not None:
                    # Still an active key: keep it away from eviction.
                    self._buckets.move_to_end(key)
                return False
            tokens = max(tokens - 1, 0.0)
            if bucket is None:
                if len(self._buckets) >= self._max_keys:
                    self._buckets.popitem(last=False)
                self._buckets[key] = _Bucket(tokens, now)
            else:
                bucket.tokens = tokens
                # If the clock stepped back, refill from the later time.
                bucket.updated = max(now, bucket.updated)
                self._buckets.move_to_end(key)
            return True

    def check(self, key: str) -> bool:
        """
        Whether one more event for C{key} would be allowed now.  Records
        nothing.
        """
        return self.retry_after(key) == 0

    def retry_after(self, key: str) -> float:
        """
        Seconds until one more event for C{key} would be allowed: 0 if it is
        allowed now.  For the Retry-After header of a refused request.
        """
        if self._count == 0:
            return 0.0
        with self._lock:
            tokens = self._tokens(self._buckets.get(key), self._clock.seconds())
        if tokens >= 1 - _EPSILON:
            return 0.0
        return (1 - tokens) * self._period / self._count

    def reset(self, key: str) -> None:
        """
        Forget C{key}: its next events start from a full bucket (say, after a
        successful login).
        """
        with self._lock:
            self._buckets.pop(key, None)

    def expire(self) -> int:
        """
        Forget every key whose bucket has filled up again; they are back in
        the state of a key never seen.  For a periodic timer; it looks at
        every tracked key, which C{max_keys} bounds.

        @return: How many keys were forgotten.
        """
        with self._lock:
            now = self._clock.seconds()
            full = [
                key
                for key, bucket in self._buckets.items()
                if self._tokens(bucket, now) >= self._count
            ]
            for key in full:
                del self._buckets[key]
            return len(full)

    def _tokens(self, bucket: _Bucket | None, now: float) -> float:
        """
        The tokens C{bucket} holds at C{now}, refilled since its last event.
        """
        if bucket is None:
            return float(self._count)
        elapsed = max(now - bucket.updated, 0.0)
        return min(
            float(self._count),
            bucket.tokens + elapsed * self._count / self._period,
        )
