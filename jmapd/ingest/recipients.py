# -*- test-case-name: tests.ingest.test_recipients -*-
"""
Which account an address delivers to: its addresses and aliases
(C{account_addresses}, stored in lower case), compared case-insensitively.

LMTP asks at every RCPT, so the answers are kept in the recipients
time-to-idle cache (C{cache-tti-recipients}).  The cache is only allowed
to save a database read, never to change where mail goes:

 - Only addresses that exist are cached.  An unknown address is looked up
   every time, so an alias added a second ago (by C{jmapd-admin}, in
   another process) is found at once.
 - The filing transaction resolves every recipient again
   (L{lookup_account}) before it files anything, so an address removed or
   moved to another account after it was cached can never deliver to the
   wrong account: the recipient gets its 550 after DATA instead of at
   RCPT, and the mail lands where it would have with the cache off.
 - Every change of an address bumps C{addresses_version} in
   C{server_settings}; each entry remembers the version it was read under,
   and the resolver learns the current version from each lookup and each
   filing transaction (a read it makes anyway), dropping stale entries.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from jmapd.storage import accounts, identities

log = Logger()

#: The server setting counting changes of account addresses.
ADDRESSES_VERSION = "addresses_version"


class AliasError(Exception):
    """
    An alias cannot be added or removed (the message says why).
    """


def normalise(address: str) -> str:
    """
    The form addresses are stored and compared in: surrounding space and
    angle brackets removed, lower case.
    """
    text = address.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    return text.lower()


# -- storage ------------------------------------------------------------------


def lookup_account(txn: Any, address: str) -> str | None:
    """
    The id of the account owning C{address} (an address or an alias), or
    C{None}.
    """
    value = txn.fetchvalue("SELECT account_id FROM account_addresses WHERE address = ?", (normalise(address),))
    return None if value is None else str(value)


def addresses_version(txn: Any) -> int:
    """
    The counter of address changes (0 before the first one).
    """
    value = accounts.get_setting(txn, ADDRESSES_VERSION)
    if value is None or not re.fullmatch(r"[0-9]+", value):
        return 0
    return int(value)


def bump_addresses_version(txn: Any) -> int:
    """
    Count one change of account addresses, so that every resolver drops
    what it cached before; call it in the transaction that changes them.
    """
    version = addresses_version(txn) + 1
    txn.execute(
        "INSERT INTO server_settings (name, value) VALUES (?, ?)"
        " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        (ADDRESSES_VERSION, str(version)),
    )
    return version


def _account(txn: Any, name: str) -> accounts.Account:
    account = accounts.get_account_by_name(txn, name)
    if account is None:
        raise accounts.AccountNotFound(name)
    return account


def add_alias(txn: Any, name: str, address: str) -> str:
    """
    Give the account named C{name} the alias C{address}; mail to it is
    delivered to the account.

    @return: the alias as stored (lower case).
    @raise AccountNotFound: no such account.
    @raise AccountExists: another account owns the address.
    @raise AliasError: the account has the address already.
    """
    account = _account(txn, name)
    alias = normalise(address)
    owner = lookup_account(txn, alias)
    if owner == account.id:
        raise AliasError(f"{alias} is already an address of account {name}")
    if owner is not None:
        raise accounts.AccountExists(f"the address {alias!r} belongs to another account")
    position = txn.fetchvalue(
        "SELECT coalesce(max(position), -1) + 1 FROM account_addresses WHERE account_id = ?", (account.id,), 0
    )
    txn.execute(
        "INSERT INTO account_addresses (address, account_id, is_alias, position) VALUES (?, ?, 1, ?)",
        (alias, account.id, int(position)),
    )
    bump_addresses_version(txn)
    identities.sync_identities(txn, account.id)
    return alias


def remove_alias(txn: Any, name: str, address: str) -> str:
    """
    Take the alias C{address} from the account named C{name}; its main
    addresses (given at creation) are not aliases and stay.

    @raise AccountNotFound: no such account.
    @raise AliasError: the account has no such alias.
    """
    account = _account(txn, name)
    alias = normalise(address)
    row = txn.fetchone(
        "SELECT is_alias FROM account_addresses WHERE address = ? AND account_id = ?", (alias, account.id)
    )
    if row is None:
        raise AliasError(f"account {name} has no alias {alias}")
    if not row[0]:
        raise AliasError(f"{alias} is a main address of account {name}, not an alias")
    txn.execute("DELETE FROM account_addresses WHERE address = ?", (alias,))
    bump_addresses_version(txn)
    identities.sync_identities(txn, account.id)
    return alias


def list_aliases(txn: Any, name: str) -> list[str]:
    """
    The aliases of the account named C{name}, in the order they were added.
    """
    account = _account(txn, name)
    return [
        row[0]
        for row in txn.fetchall(
            "SELECT address FROM account_addresses WHERE account_id = ? AND is_alias = 1 ORDER BY position, address",
            (account.id,),
        )
    ]


# -- the resolver -------------------------------------------------------------


class RecipientResolver:
    """
    Address to account for LMTP's RCPT, through the recipients cache.

    @param database: the L{jmapd.storage.database.Database}.
    @param cache: a L{jmapd.util.tticache.TTICache} (disabled or not).
    """

    def __init__(self, database: Any, cache: Any) -> None:
        self._database = database
        self._cache = cache
        self.version = -1

    def resolve(self, address: str) -> Deferred[str | None]:
        """
        The id of the account C{address} delivers to, or C{None}.
        """
        key = normalise(address)
        entry = self._cache.get(key)
        if entry is not None and entry[1] == self.version:
            return succeed(entry[0])

        def read(txn: Any) -> tuple[str | None, int]:
            return lookup_account(txn, key), addresses_version(txn)

        def found(result: tuple[str | None, int]) -> str | None:
            account_id, version = result
            self.observe_version(version)
            if account_id is not None and version == self.version:
                self._cache.set(key, (account_id, version))
            return account_id

        return self._database.run_interaction(read).addCallback(found)

    def observe_version(self, version: int) -> None:
        """
        The addresses are at C{version} now: entries read under another
        version are stale.
        """
        if version > self.version:
            if self.version >= 0:
                self._cache.clear()
            self.version = version
