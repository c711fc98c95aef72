# -*- test-case-name: tests.protocol.test_caching -*-
"""
The ids cache: id sets and lists derived from an account's data, kept
between requests in the time-to-idle cache named C{ids} (sized by
C{cache-size-ids}, idle time C{cache-tti-ids}).

An entry is keyed by the states (modseqs) of the types it was computed
from, read in the same transaction as the data, so it can never be stale:
any change, by this process or another one sharing the database, moves a
state and so the key.  Values computed while the current transaction has
uncommitted changes for the account are not stored, since a rollback could
later give the same state to different data.  With the cache disabled
every call computes, and results are the same.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from jmapd.storage import changelog

T = TypeVar("T")


def cached_ids(
    ctx: Any, account_id: str, type_names: Sequence[str], key: Any, compute: Callable[[], T]
) -> T:
    """
    C{compute()}, or what it returned before at the same states of
    C{type_names} in C{account_id}.

    @param key: what distinguishes this value among the account's entries
        (hashable).
    """
    cache = ctx.env.caches.get("ids")
    if cache is None or not cache.enabled:
        return compute()
    txn = ctx.txn
    uncommitted = account_id in txn.__dict__.get("changed_states", {})
    if uncommitted:
        return compute()
    states = tuple(changelog.get_modseq(txn, account_id, name) for name in type_names)
    full_key = (account_id, key, states)
    hit = cache.get(full_key)
    if hit is not None:
        return hit  # type: ignore[no-any-return]
    value = compute()
    cache.set(full_key, value)
    return value
