# -*- test-case-name: tests.mail.test_sharing -*-
"""
Sharing (RFC 9670): who may see which account, and with which rights on
which Mailbox.

A user's own account is theirs entirely.  Another account becomes
reachable when the user, or a group they are in, has rights on at least
one of its Mailboxes (Mailbox shareWith); the Session lists it (and push
reports its changes) only while the user is subscribed to at least one of
its Mailboxes (the Subscriptions section of RFC 9670).  Everything of such
an account the user has no right to stays invisible.  A subscription ends
with the user's last right on its Mailbox, so a later grant finds it
unsubscribed, as RFC 8621 section 2 says it SHOULD be by default (see
L{jmapd.storage.principals.drop_lost_subscriptions}).

Two time-to-idle caches keep this off the database on the hot path:
C{sharings} (a user's shared accounts and whether they subscribe to any of
their Mailboxes) and C{acl} (a user's rights on the Mailboxes of one
account).  Both key their entries with the C{acl} counter of
L{jmapd.storage.principals}, which every change of a grant, a group or a
subscription raises, read once per transaction: so a change by any process
takes effect on the next request, and a transaction that changed sharing
itself bypasses the caches (its counter value is not committed yet).

What a grantee's /changes and /queryChanges report comes from the
account's changelog filtered by what they can see now, plus the sight
log of L{jmapd.storage.principals} (which objects came into or went out
of their sight, and when): see L{hide_changes}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jmapd.protocol.engine import AccountAccess, Principal
from jmapd.protocol.errors import MethodError
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


def hide_changes(
    ctx: Any,
    arguments: dict[str, Any],
    response: dict[str, Any],
    type_name: str,
    visible_of: Callable[[list[str]], set[str]],
) -> dict[str, Any]:
    """
    A /changes response of a shared account as the user may have it: only
    what they can see now is created or updated; what they may have seen
    and cannot see any more is destroyed; and nothing they could never see
    is named at all.

    The changelog says what changed, not who could see it then, so the
    sight log (L{jmapd.storage.principals.record_sight}) says which objects
    came into or went out of the user's sight since the old state (an
    Email moved out of a Mailbox they may read, a grant taken, a group
    left).  An object they cannot see now is reported destroyed only when
    that log names it: it was, at some point since the old state, in a
    Mailbox shared with them (or one of their groups).  That is sound (an
    object they saw and lost is always in the log) and names no id from
    the rest of the account; it may name one they never fetched (shared,
    then gone, before they synced), which RFC 8620 section 5.2 allows.  An
    object that came into sight without changing itself (a grant given)
    is reported created, since the client may not have it.

    @param visible_of: the ids of these objects the user can see now.
    @raise MethodError: cannotCalculateChanges when what is to be reported
        is more than the maxChanges in force (the objects a grant brings
        into sight share one state, so the response cannot be split).
    """
    account_id = response["accountId"]
    if account_id == ctx.principal.account_id:
        return response
    since = int(response["oldState"])
    until = int(response["newState"])
    moved = principal_storage.sighted(
        ctx.txn, account_id, type_name, principal_ids(ctx.txn, ctx.principal.account_id), since, until
    )
    created, updated, destroyed = response["created"], response["updated"], response["destroyed"]
    listed = {*created, *updated}
    visible = visible_of(sorted(listed | moved))
    response["created"] = [i for i in created if i in visible] + sorted(
        i for i in moved if i in visible and i not in listed
    )
    response["updated"] = [i for i in updated if i in visible]
    response["destroyed"] = list(
        dict.fromkeys(i for i in (*destroyed, *updated, *sorted(moved)) if i in moved and i not in visible)
    )
    limit = int(ctx.config.changes_max_results)
    given = arguments.get("maxChanges")
    if isinstance(given, int) and not isinstance(given, bool) and given > 0:
        limit = min(limit, given)
    total = len(response["created"]) + len(response["updated"]) + len(response["destroyed"])
    if total > limit:
        raise MethodError("cannotCalculateChanges", f"{total} changes; maxChanges is {limit}")
    return response


def hide_removed(ctx: Any, account_id: str, type_name: str, since: int, until: int, touched: set[str]) -> set[str]:
    """
    For a /queryChanges of a shared account: the objects that may have
    come into or gone out of the user's sight after C{since} (see
    L{hide_changes}), which count as touched; C{touched} is extended with
    them.  The caller keeps in C{removed} only these and the ids the user
    can see now, so no id from the rest of the account is named.
    """
    moved = principal_storage.sighted(
        ctx.txn, account_id, type_name, principal_ids(ctx.txn, ctx.principal.account_id), since, until
    )
    touched |= moved
    return moved
