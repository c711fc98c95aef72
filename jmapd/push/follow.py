# -*- test-case-name: tests.push.test_grantee_push -*-
"""
Which accounts a push channel follows, kept current while it is open.

A user's push channel (an EventSource response, a WebSocket with push
enabled, the PushSubscriptions of one user) reports the changes of the
accounts the Session lists for that user: their own, and each shared
account while they may see some of it and are subscribed to at least one
of its Mailboxes (RFC 9670 section 1.4).  That set changes while the
channel is open: a grant or revocation (Mailbox shareWith, directly or
through a group), a change of the user's isSubscribed, a change of a
group's members.

Each of these moves a state in the user's own account in the transaction
that makes it (a ShareNotification, or the L{SHARED_ACCOUNTS} pseudo-type),
so the notifier carries it to every node like any other change.  When a
L{Follower} sees such a state of its user's own account it reads the
account list again (one database hop), stops listening to the accounts
the user may no longer see, starts listening to the new ones and passes
on their current states, so that the client learns about them at once.

While that hop runs, the follower holds every account's changes and
decides about them once it knows the new set: nothing committed after a
revocation reaches the client, and nothing committed while a new account
was being read is lost.  An open channel costs no timer and no more than
the follower's few slots.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from twisted.logger import Logger

from jmapd.push.notifier import EMAIL_DELIVERY, account_modseqs, missed_states
from jmapd.storage import changelog
from jmapd.storage.principals import SHARED_ACCOUNTS

log = Logger()

__all__ = ["SHARED_ACCOUNTS", "TRIGGERS", "Follower", "followed_accounts"]

#: The types of the user's own account whose change may change which
#: accounts they see.
TRIGGERS = frozenset({"ShareNotification", SHARED_ACCOUNTS})

#: Pseudo-types left out of the states sent for a newly followed account:
#: its current Email state is no delivery.
_NOT_CURRENT = frozenset({EMAIL_DELIVERY})


def followed_accounts(env: Any, txn: Any, principal: Any) -> frozenset[str]:
    """
    The accounts whose changes the principal's push channels report: those
    the Session lists.
    """
    return frozenset(env.registry.accounts(env, txn, principal))


def snapshot(
    env: Any, txn: Any, principal: Any, last: Mapping[str, int] | None
) -> tuple[tuple[str, ...], dict[str, int], dict[str, dict[str, int]]]:
    """
    Where a push channel that opens now starts: the accounts it follows,
    their modseqs, and, given the position C{last} of an earlier channel
    (Last-Event-ID, pushState), the states that changed since in the
    accounts it still follows.
    """
    account_ids = tuple(sorted(followed_accounts(env, txn, principal)))
    position = account_modseqs(txn, account_ids)
    missed: dict[str, dict[str, int]] = {}
    if last is not None:
        missed = missed_states(txn, {a: m for a, m in last.items() if a in position})
    return account_ids, position, missed


def _accounts(txn: Any, env: Any, principal: Any) -> frozenset[str]:
    return followed_accounts(env, txn, principal)


def _read(txn: Any, env: Any, principal: Any, following: frozenset[str]) -> tuple[frozenset[str], dict[str, dict[str, int]]]:
    """
    The accounts to follow now, and the current states of those not
    followed yet.
    """
    accounts = followed_accounts(env, txn, principal)
    added = {}
    for account_id in sorted(accounts - following):
        states = changelog.get_states(txn, account_id)
        added[account_id] = {name: modseq for name, modseq in states.items() if name not in _NOT_CURRENT}
    return accounts, added


class Follower:
    """
    The accounts one push channel of one user follows, and the notifier
    subscriptions that go with them.

    Open it with L{hold} before the channel reads its first snapshot and
    L{start} with that snapshot's accounts; L{close} it when the channel
    goes.

    @ivar accounts: the followed accounts.
    """

    __slots__ = ("_env", "_notifier", "_principal", "_deliver", "_held", "_again", "_closed", "accounts")

    def __init__(
        self, env: Any, notifier: Any, principal: Any, deliver: Callable[[str, Mapping[str, int]], None]
    ) -> None:
        """
        @param principal: the user (a L{jmapd.protocol.engine.Principal}).
        @param deliver: C{deliver(account_id, states)}: the channel's
            intake, called with the changes of followed accounts only, and
            with the current states of each account it starts following.
        """
        self._env = env
        self._notifier = notifier
        self._principal = principal
        self._deliver = deliver
        self._held: list[tuple[str, Mapping[str, int]]] | None = None
        self._again = False
        self._closed = False
        self.accounts: frozenset[str] = frozenset()

    @property
    def own(self) -> str:
        return str(self._principal.account_id)

    # -- opening --

    def hold(self) -> None:
        """
        Hold the changes of every account until L{start} (call it before
        reading the snapshot, so no commit falls between the two).
        """
        if self._held is None:
            self._held = []
            self._notifier.subscribe(None, self._hold)

    def start(self, accounts: Iterable[str], position: Mapping[str, int]) -> None:
        """
        Follow C{accounts} (what the snapshot read), and pass on the held
        changes that are newer than C{position} (the snapshot's modseq of
        each account).
        """
        held = self._release()
        if self._closed:
            return
        self._follow(frozenset(accounts))
        trigger = False
        for account_id, states in held:
            newer = {name: modseq for name, modseq in states.items() if modseq > position.get(account_id, 0)}
            if not newer:
                continue
            if account_id in self.accounts:
                self._deliver(account_id, newer)
            trigger = trigger or (account_id == self.own and not TRIGGERS.isdisjoint(newer))
        if trigger:
            self.refresh()

    def open(self) -> Any:
        """
        Start following the accounts the user sees now (one database hop),
        for a channel that sends no snapshot of its own (the
        PushSubscriptions): only changes made from now on are passed on.

        @return: a Deferred that fires when the accounts are known.
        """
        self.hold()
        d = self._env.database.run_interaction(_accounts, self._env, self._principal)
        d.addCallback(self.start, {})
        d.addErrback(self._failed)
        return d

    # -- changes --

    def changed(self, account_id: str, states: Mapping[str, int]) -> None:
        """
        A notifier callback for the followed accounts.
        """
        trigger = account_id == self.own and not TRIGGERS.isdisjoint(states)
        if self._held is not None:
            # Held until the account list is known again.
            self._held.append((account_id, states))
            if trigger:
                self._again = True
            return
        if account_id in self.accounts:
            self._deliver(account_id, states)
        if trigger:
            self.refresh()

    def _hold(self, account_id: str, states: Mapping[str, int]) -> None:
        """
        A notifier callback for every account while holding: the changes of
        the accounts not followed (L{changed} holds the others), which may
        be followed once the account list is known.
        """
        if self._held is not None and account_id not in self.accounts:
            self._held.append((account_id, states))

    def _release(self) -> list[tuple[str, Mapping[str, int]]]:
        held, self._held = self._held, None
        if held is None:
            return []
        self._notifier.unsubscribe(None, self._hold)
        return held

    def _follow(self, accounts: frozenset[str]) -> None:
        for account_id in self.accounts - accounts:
            self._notifier.unsubscribe(account_id, self.changed)
        for account_id in accounts - self.accounts:
            self._notifier.subscribe(account_id, self.changed)
        self.accounts = accounts

    # -- reading the account list again --

    def refresh(self) -> None:
        """
        Read again which accounts to follow (one database hop), holding
        every change until then; one more hop follows if a trigger came
        in the meantime.
        """
        if self._closed:
            return
        if self._held is not None:
            self._again = True
            return
        self.hold()
        d = self._env.database.run_interaction(_read, self._env, self._principal, self.accounts)
        d.addCallback(self._refreshed)
        d.addErrback(self._failed)

    def _refreshed(self, result: tuple[frozenset[str], dict[str, dict[str, int]]]) -> None:
        if self._closed:
            return
        accounts, added = result
        held = self._release()
        before = self.accounts
        self._follow(accounts)
        if accounts != before:
            log.debug(
                "push for {user}: following {accounts}", user=self._principal.name, accounts=",".join(sorted(accounts))
            )
        for account_id, current in added.items():
            if current:
                self._deliver(account_id, current)
        for account_id, states in held:
            if account_id not in accounts:
                continue
            known = added.get(account_id, {})
            newer = {name: modseq for name, modseq in states.items() if modseq > known.get(name, 0)}
            if newer:
                self._deliver(account_id, newer)
        self._next()

    def _failed(self, failure: Any) -> None:
        log.failure("push for {user}: cannot read the accounts to follow", failure, user=self._principal.name)
        if self._closed:
            return
        # Only what is certainly the user's: their own account.
        held = self._release()
        self._follow(frozenset({self.own}))
        for account_id, states in held:
            if account_id == self.own:
                self._deliver(account_id, states)
        self._next()

    def _next(self) -> None:
        if self._again:
            self._again = False
            self.refresh()

    def close(self) -> None:
        """
        Follow nothing any more (the channel is gone).
        """
        self._closed = True
        self._release()
        self._follow(frozenset())
