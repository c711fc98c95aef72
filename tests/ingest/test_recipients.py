"""
Tests for L{jmapd.ingest.recipients}: addresses, aliases and the
recipients cache.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from jmapd.config import default_config
from jmapd.ingest import recipients
from jmapd.ingest.recipients import AliasError, RecipientResolver
from jmapd.storage import accounts, open_database
from jmapd.util.tticache import TTICache
from tests.ingest.test_delivery import ManualThreads


class StorageTests(SynchronousTestCase):
    """
    Aliases in the account_addresses table.
    """

    def setUp(self) -> None:
        self.database = open_database(default_config(db_path=os.path.abspath(self.mktemp())))
        self.addCleanup(self.database.close)
        self.alice = self.database.run_sync(
            accounts.add_account, "alice", None, ["alice@example.com"], write=True
        ).id
        self.bob = self.database.run_sync(accounts.add_account, "bob", None, ["bob@example.com"], write=True).id

    def write(self, fn: Any, *args: Any) -> Any:
        return self.database.run_sync(fn, *args, write=True)

    def test_lookupIgnoresCase(self) -> None:
        """
        An address is found whatever its case, with or without angle
        brackets; an unknown one is not.
        """
        for given in ("alice@example.com", "ALICE@Example.COM", "<Alice@example.com>"):
            self.assertEqual(self.database.run_sync(recipients.lookup_account, given), self.alice)
        self.assertIsNone(self.database.run_sync(recipients.lookup_account, "carol@example.com"))

    def test_addListRemove(self) -> None:
        """
        An alias is stored in lower case, listed, found, and removed.
        """
        self.assertEqual(self.write(recipients.add_alias, "alice", "Al@Example.com"), "al@example.com")
        self.write(recipients.add_alias, "alice", "a@example.net")
        self.assertEqual(
            self.database.run_sync(recipients.list_aliases, "alice"), ["al@example.com", "a@example.net"]
        )
        self.assertEqual(self.database.run_sync(recipients.lookup_account, "AL@example.com"), self.alice)
        self.write(recipients.remove_alias, "alice", "AL@example.com")
        self.assertEqual(self.database.run_sync(recipients.list_aliases, "alice"), ["a@example.net"])
        self.assertIsNone(self.database.run_sync(recipients.lookup_account, "al@example.com"))

    def test_addErrors(self) -> None:
        """
        An alias cannot be another account's address, one the account has,
        or be given to an account that does not exist.
        """
        self.assertRaises(accounts.AccountExists, self.write, recipients.add_alias, "alice", "bob@example.com")
        self.assertRaises(AliasError, self.write, recipients.add_alias, "alice", "Alice@example.com")
        self.assertRaises(accounts.AccountNotFound, self.write, recipients.add_alias, "carol", "c@example.com")

    def test_removeErrors(self) -> None:
        """
        Only an alias of the account can be removed: not a main address,
        not another account's alias.
        """
        self.write(recipients.add_alias, "bob", "b@example.com")
        self.assertRaises(AliasError, self.write, recipients.remove_alias, "alice", "alice@example.com")
        self.assertRaises(AliasError, self.write, recipients.remove_alias, "alice", "b@example.com")
        self.assertEqual(self.database.run_sync(recipients.lookup_account, "b@example.com"), self.bob)

    def test_versionCountsChanges(self) -> None:
        """
        Adding and removing an alias each bump addresses_version.
        """
        self.assertEqual(self.database.run_sync(recipients.addresses_version), 0)
        self.write(recipients.add_alias, "alice", "al@example.com")
        self.assertEqual(self.database.run_sync(recipients.addresses_version), 1)
        self.write(recipients.remove_alias, "alice", "al@example.com")
        self.assertEqual(self.database.run_sync(recipients.addresses_version), 2)


class ResolverTests(SynchronousTestCase):
    """
    L{RecipientResolver} with the cache on and off.
    """

    def setUp(self) -> None:
        self.threads = ManualThreads()
        self.database = open_database(default_config(db_path=os.path.abspath(self.mktemp())), self.threads.run)
        self.addCleanup(self.database.close)
        self.alice = self.database.run_sync(
            accounts.add_account, "alice", None, ["alice@example.com"], write=True
        ).id
        self.database.run_sync(accounts.add_account, "bob", None, ["bob@example.com"], write=True)
        self.clock = Clock()

    def resolver(self, tti: float) -> RecipientResolver:
        return RecipientResolver(self.database, TTICache(self.clock, tti, name="recipients"))

    def resolve(self, resolver: RecipientResolver, address: str) -> tuple[str | None, bool]:
        """
        Resolve, running the database job if there is one; return the
        result and whether the database was read.
        """
        results: list[str | None] = []
        resolver.resolve(address).addCallback(results.append)
        read = bool(self.threads.jobs)
        while self.threads.jobs:
            self.threads.step()
        return results[0], read

    def test_knownCached(self) -> None:
        """
        With the cache on, a known address is read once, then answered
        from the cache.
        """
        resolver = self.resolver(60)
        self.assertEqual(self.resolve(resolver, "alice@example.com"), (self.alice, True))
        self.assertEqual(self.resolve(resolver, "ALICE@example.com"), (self.alice, False))

    def test_unknownNotCached(self) -> None:
        """
        An unknown address is read every time, so an alias added in the
        meantime (by another process) is found at once.
        """
        resolver = self.resolver(60)
        self.assertEqual(self.resolve(resolver, "al@example.com"), (None, True))
        self.database.run_sync(recipients.add_alias, "alice", "al@example.com", write=True)
        self.assertEqual(self.resolve(resolver, "al@example.com"), (self.alice, True))

    def test_newVersionDropsEntries(self) -> None:
        """
        When the resolver learns of a newer addresses_version (from a
        lookup or a filing transaction), cached entries are read again.
        """
        resolver = self.resolver(60)
        self.resolve(resolver, "alice@example.com")
        self.database.run_sync(recipients.add_alias, "bob", "b@example.com", write=True)
        self.resolve(resolver, "b@example.com")
        self.assertEqual(self.resolve(resolver, "alice@example.com"), (self.alice, True))
        self.assertEqual(self.resolve(resolver, "alice@example.com"), (self.alice, False))

    def deliver(self, resolver: RecipientResolver, address: str) -> str | None:
        """
        What delivery does with an address: RCPT resolves it, then the
        filing transaction resolves it again and tells the resolver the
        address version (as L{jmapd.ingest.delivery.Deliverer} does).

        @return: the account the message is filed in, or C{None} when
            the recipient is refused (at RCPT or after DATA).
        """
        accepted, _ = self.resolve(resolver, address)
        if accepted is None:
            return None
        filed = self.database.run_sync(recipients.lookup_account, address)
        resolver.observe_version(self.database.run_sync(recipients.addresses_version))
        return filed

    def test_sameWithCacheOff(self) -> None:
        """
        Whatever happens to the addresses (changed by another process),
        delivery files every message in the same account, or refuses the
        same recipients, with the cache on as with it off.
        """
        on, off = self.resolver(60), self.resolver(0)
        steps: list[Any] = [
            ("alice@example.com",),
            ("al@example.com",),
            (recipients.add_alias, "alice", "al@example.com"),
            ("al@example.com",),
            ("alice@example.com",),
            (recipients.remove_alias, "alice", "al@example.com"),
            ("al@example.com",),
            ("al@example.com",),
            (recipients.add_alias, "bob", "al@example.com"),
            ("al@example.com",),
            ("bob@example.com",),
        ]
        answers: dict[str, list[str | None]] = {"on": [], "off": []}
        for step in steps:
            if callable(step[0]):
                self.database.run_sync(*step, write=True)
                continue
            for name, resolver in (("on", on), ("off", off)):
                answers[name].append(self.deliver(resolver, step[0]))
        self.assertEqual(answers["on"], answers["off"])
        bob = self.database.run_sync(recipients.lookup_account, "bob@example.com")
        self.assertEqual(answers["off"], [self.alice, None, self.alice, self.alice, None, None, bob, bob])
