# -*- test-case-name: tests.mail.test_sharing -*-
"""
Sharing (RFC 9670): who may see which account, and with which rights on
which Mailbox.

A user's own account is theirs entirely.  Another account becomes
reachable when the user, or a group they are in, has rights on at least
one of its Mailboxes (Mailbox shareWith); the Session lists it (and push
reports its changes) only while the user is subscribed to at least one of
its Mailboxes (the Subscriptions section of RFC 9670).  Everything of such
an account the user has no right to stays invisible.

Two time-to-idle caches keep this off the database on the hot path:
C{sharings} (a user's shared accounts and whether they subscribe to any of
their Mailboxes) and C{acl} (a user's rights on the Mailboxes of one
account).  Both key their entries with the C{acl} counter of
L{jmapd.storage.principals}, which every change of a grant, a group or a
subscription raises, read once per transaction: so a change by any process
takes effect on the next request, and a transaction that changed sharing
itself bypasses the caches (its counter value is not committed yet).
"""

from __future__ import annotations

from typing import Any

from jmapd.protocol.engine import AccountAccess, Principal
from jmapd.storage import mailboxes as mailbox_storage
from jmapd.storage import principals as principal_storage
from jmapd.util.tticache import TTICache

PRINCIPALS = "urn:ietf:params:jmap:principals"
OWNER = "urn:ietf:params:jmap:principals:owner"
MAIL = "urn:ietf:params:jmap:mail"

#: The capabilities of an account shared with a user: its Mail, and the
#: Principals (the directory is the same from every account).
SHARED_CAPABILITIES = frozenset({MAIL, PRINCIPALS, OWNER})

#: Entries per cache at most.
CACHE_ENTRIES = 10000


def cache(env: Any, name: str) -> TTICache[Any, Any]:
    """
    The environment's C{sharings} or C{acl} cache, made from the
    C{cache-tti-*} setting when the service did not make it.
    """
    found = env.caches.get(name)
    if found is None:
        tti = float(getattr(env.config, f"cache_tti_{name}", 0) or 0)
        found = env.caches.setdefault(name, TTICache(env.clock, tti, max_entries=CACHE_ENTRIES, name=name))
    return found


def _version(txn: Any) -> int | None:
    """
    The C{acl} counter as this transaction sees it, read once; C{None}
    when this transaction changed sharing (nothing it computes may be
    cached: it is not committed).
    """
    state = txn.__dict__
    if state.get("sharing_dirty"):
        return None
    version = state.get("acl_version")
    if version is None:
        version = state["acl_version"] = principal_storage.acl_version(txn)
    return int(version)


def _cached(env: Any, txn: Any, name: str, key: tuple[Any, ...], compute: Any) -> Any:
    version = _version(txn)
    if version is None:
        return compute()
    store = cache(env, name)
    full_key = (*key, version)
    found = store.get(full_key)
    if found is None:
        found = compute()
        store.set(full_key, found)
    return found


def principal_ids(txn: Any, user_id: str) -> tuple[str, ...]:
    """
    The user's Principal id and those of the groups they are in.
    """
    return (user_id, *principal_storage.groups_of(txn, user_id))


def sharings(env: Any, txn: Any, user_id: str) -> dict[str, bool]:
    """
    The accounts shared with the user, each with whether the user is
    subscribed to at least one of its Mailbox (the sharings cache).
    """

    def compute() -> dict[str, bool]:
        granted = mailbox_storage.grants_for(txn, principal_ids(txn, user_id))
        subscribed = mailbox_storage.subscriptions(txn, user_id)
        result = {}
        for account_id, mailboxes in granted.items():
            if account_id == user_id:
                continue
            visible = {m for m, rights in mailboxes.items() if rights}
            if visible:
                result[account_id] = bool(visible & subscribed.get(account_id, set()))
        return result

    return dict(_cached(env, txn, "sharings", (user_id,), compute))


def mailbox_rights(env: Any, txn: Any, user_id: str, account_id: str) -> dict[str, frozenset[str]] | None:
    """
    The user's rights on each Mailbox of the account they were given any
    on (the acl cache); C{None} for their own account, where they may do
    everything.
    """
    if account_id == user_id:
        return None

    def compute() -> dict[str, frozenset[str]]:
        granted = mailbox_storage.grants_for(txn, principal_ids(txn, user_id), account_id)
        return {m: r for m, r in granted.get(account_id, {}).items() if r}

    return dict(_cached(env, txn, "acl", (user_id, account_id), compute))


def ctx_rights(ctx: Any, account_id: str) -> dict[str, frozenset[str]] | None:
    """
    L{mailbox_rights} for the principal of a method call.
    """
    return mailbox_rights(ctx.env, ctx.txn, ctx.principal.account_id, account_id)


def readable(ctx: Any, account_id: str) -> frozenset[str] | None:
    """
    The Mailboxes whose Emails the principal may read (mayReadItems);
    C{None} when all of them (their own account).
    """
    rights = ctx_rights(ctx, account_id)
    if rights is None:
        return None
    return frozenset(m for m, r in rights.items() if "mayReadItems" in r)


def shared_accounts(env: Any, txn: Any, principal: Principal) -> list[AccountAccess]:
    """
    The account lookup of the registry: every account shared with the
    principal, listed (in the Session, for push) only while subscribed.
    """
    found = []
    for account_id, subscribed in sorted(sharings(env, txn, principal.account_id).items()):
        name = txn.fetchvalue("SELECT name FROM accounts WHERE id = ?", (account_id,))
        if name is None:
            continue
        found.append(AccountAccess(account_id, str(name), False, False, SHARED_CAPABILITIES, listed=subscribed))
    return found


def mark_dirty(txn: Any) -> None:
    """
    This transaction changed sharing: bypass the caches until it ends.
    """
    txn.__dict__["sharing_dirty"] = True
    txn.__dict__.pop("acl_version", None)


def hide_changes(response: dict[str, Any], visible: Any) -> dict[str, Any]:
    """
    A /changes response as a user who sees only the ids in C{visible}
    (C{None}: everything) may have it: what they cannot see is left out,
    and what they can no longer see is reported destroyed (they may have
    seen it before).
    """
    if visible is None:
        return response
    gone = [i for i in response["updated"] if i not in visible]
    response["created"] = [i for i in response["created"] if i in visible]
    response["updated"] = [i for i in response["updated"] if i in visible]
    response["destroyed"] = [*response["destroyed"], *gone]
    return response
