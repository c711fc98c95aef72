"""
Tests for L{jmapd.protocol.caching}: the ids cache never changes a result.
"""

from __future__ import annotations

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from jmapd import mail
from jmapd.mail import MAIL
from jmapd.protocol.caching import cached_ids
from jmapd.protocol.engine import CORE, Context, Registry
from jmapd.storage import changelog, mailboxes
from jmapd.util.tticache import TTICache
from tests import pg
from tests.protocol.test_engine import add_principal, make_environment, run_request

MESSAGE = (
    b"From: Ann <ann@example.org>\r\nTo: bob@example.org\r\nSubject: hello\r\n"
    b"Message-ID: <m1@example.org>\r\nDate: Mon, 2 Jan 2023 10:00:00 +0000\r\n\r\nHi Bob.\r\n"
)


class CachedIdsTests(SynchronousTestCase):
    def setUp(self) -> None:
        registry = Registry()
        mail.register(registry)
        self.env = make_environment(self, registry)
        self.clock = task.Clock()
        self.env.caches["ids"] = TTICache(self.clock, 60, max_bytes=1 << 20, name="ids")
        self.alice = add_principal(self.env, "alice")
        self.calls = 0

    def compute(self) -> frozenset[str]:
        self.calls += 1
        return frozenset({f"value{self.calls}"})

    def read(self, txn, key="k"):
        ctx = Context(txn, self.env, self.alice, frozenset(), {})
        return cached_ids(ctx, self.alice.account_id, ("Mailbox",), key, self.compute)

    def test_hit_at_same_state(self) -> None:
        """
        At an unchanged state the second read is served from the cache.
        """
        first = self.env.database.run_sync(self.read)
        second = self.env.database.run_sync(self.read)
        self.assertEqual((first, second, self.calls), (frozenset({"value1"}),) * 2 + (1,))

    def test_new_state_recomputes(self) -> None:
        """
        A change of the type's state, even one made through another
        connection (another process), makes the next read compute again.
        """
        self.env.database.run_sync(self.read)
        self.env.database.run_sync(
            changelog.touch_state, self.alice.account_id, "Mailbox", write=True
        )
        self.assertEqual(self.env.database.run_sync(self.read), frozenset({"value2"}))

    def test_uncommitted_changes_not_stored(self) -> None:
        """
        A value computed in a transaction that changed the account is not
        stored: a rollback could give its state to different data.
        """

        def change_then_read(txn):
            changelog.touch_state(txn, self.alice.account_id, "Mailbox")
            return self.read(txn)

        self.env.database.run_sync(change_then_read, write=True)
        self.env.database.run_sync(self.read)
        self.assertEqual(self.calls, 2)

    def test_disabled_cache_always_computes(self) -> None:
        """
        With cache-tti-ids 0 the cache stores nothing and every read
        computes.
        """
        self.env.caches["ids"] = TTICache(self.clock, 0, name="ids")
        self.env.database.run_sync(self.read)
        self.env.database.run_sync(self.read)
        self.assertEqual(self.calls, 2)


class SameResultsTests(SynchronousTestCase):
    """
    A scripted session gives the same responses with the ids cache on and
    off.
    """

    def script(self, cache_tti: float) -> list:
        registry = Registry()
        mail.register(registry)
        env = make_environment(self, registry)
        env.caches["ids"] = TTICache(task.Clock(), cache_tti, max_bytes=1 << 20, name="ids")
        alice = add_principal(env, "alice")
        blob_id = env.blobs.put(MESSAGE)
        from jmapd.storage import blobs

        env.database.run_sync(blobs.add_blob, alice.account_id, blob_id, len(MESSAGE), "message/rfc822", 0.0, None,
                              write=True)
        inbox = env.database.run_sync(mailboxes.find_by_role, alice.account_id, "inbox")
        using = (CORE, MAIL)
        outcomes = []

        def run(calls):
            response = run_request(env, alice, calls, using=using)
            outcomes.append([(name, sorted(args) if isinstance(args, dict) else args) for name, args, _ in
                             response["methodResponses"]])
            return response

        def imported(mailbox_ids):
            return run([["Email/import", {"accountId": alice.account_id, "emails": {
                "e": {"blobId": blob_id, "mailboxIds": mailbox_ids}}}, "0"]])

        for _ in range(2):
            imported({inbox: True})
            imported({"nosuchmailbox": True})
        created = run([["Mailbox/set", {"accountId": alice.account_id, "create": {"m": {"name": "Later"}}}, "0"]])
        later = created["methodResponses"][0][1]["created"]["m"]["id"]
        response = imported({later: True})
        outcomes.append(sorted(response["methodResponses"][0][1].get("created") or {}))
        # A Mailbox destroyed behind the server's back (another process):
        # the cache must not keep accepting it.
        env.database.run_sync(mailboxes.destroy_mailbox, alice.account_id, later, True, write=True)
        response = imported({later: True})
        outcomes.append(sorted(response["methodResponses"][0][1].get("notCreated") or {}))
        return outcomes

    def test_same_outcomes(self) -> None:
        """
        Imports into existing, unknown, new and just-destroyed Mailboxes
        succeed and fail alike whether or not the ids cache is enabled.
        """
        self.assertEqual(self.script(3600), self.script(0))


# The same tests on PostgreSQL (see tests/pg.py).
pg.add_postgresql_variants(globals(), CachedIdsTests, SameResultsTests)
