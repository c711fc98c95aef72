"""
Tests for L{jmapd.protocol.core}: the Core capability object, Core/echo
and Blob/copy (RFC 8620 sections 2, 4 and 6.3).
"""

from twisted.trial.unittest import SynchronousTestCase

from jmapd.protocol.core import COLLATIONS, core_capability
from jmapd.protocol.engine import AccountAccess
from jmapd.storage import blobs as blob_storage
from tests import pg
from tests.protocol.test_engine import add_principal, make_environment, run_request


class CoreCapabilityTests(SynchronousTestCase):
    def test_limits_from_config(self):
        """
        Every limit in the Core capability comes from the configuration.
        """
        env = make_environment(
            self, max_calls_in_request=7, max_objects_in_get=11, max_objects_in_set=13
        )
        capability = core_capability(env)
        self.assertEqual(capability["maxCallsInRequest"], 7)
        self.assertEqual(capability["maxObjectsInGet"], 11)
        self.assertEqual(capability["maxObjectsInSet"], 13)
        self.assertEqual(capability["maxSizeUpload"], env.config.max_size_upload)
        self.assertEqual(capability["maxSizeRequest"], env.config.max_size_request)
        self.assertEqual(capability["maxConcurrentUpload"], env.config.max_concurrent_uploads)
        self.assertEqual(capability["maxConcurrentRequests"], env.config.max_concurrent_requests)
        self.assertEqual(capability["collationAlgorithms"], list(COLLATIONS))


class EchoTests(SynchronousTestCase):
    def test_echo(self):
        """
        Core/echo answers with its arguments unchanged.
        """
        env = make_environment(self)
        alice = add_principal(env, "alice")
        arguments = {"hello": True, "high": 5, "nested": {"list": [1, "two", None]}}
        response = run_request(env, alice, [["Core/echo", arguments, "b3ff"]])
        self.assertEqual(response["methodResponses"], [["Core/echo", arguments, "b3ff"]])


class BlobCopyTests(SynchronousTestCase):
    def setUp(self):
        self.env = make_environment(self, blob_temp_ttl=60.0)
        self.env.clock.advance(1000)
        self.alice = add_principal(self.env, "alice")
        self.bob = add_principal(self.env, "bob")
        self.carol = add_principal(self.env, "carol")

        def lookup(env, txn, principal):
            if principal.account_id == self.alice.account_id:
                yield AccountAccess(self.bob.account_id, "bob", False, False, frozenset())
                yield AccountAccess(self.carol.account_id, "carol", False, True, frozenset())

        self.env.registry.account_lookups.append(lookup)
        self.env.database.run_sync(
            blob_storage.add_blob, self.alice.account_id, "bkept", 3, "text/plain", 0.0, None, write=True
        )
        self.env.database.run_sync(
            blob_storage.add_blob, self.alice.account_id, "btemp", 4, "image/png", 0.0, 2000.0, write=True
        )

    def blob_copy(self, **arguments):
        arguments.setdefault("fromAccountId", self.alice.account_id)
        arguments.setdefault("accountId", self.bob.account_id)
        response = run_request(self.env, self.alice, [["Blob/copy", arguments, "c0"]])
        return response["methodResponses"][0]

    def blob(self, account_id, blob_id):
        return self.env.database.run_sync(blob_storage.get_blob, account_id, blob_id)

    def test_copy(self):
        """
        Copied blobs become readable in the destination with the upload
        lifetime (nothing there references them yet, so a copy never
        becomes a permanent blob by itself); an unknown one is the
        notFound SetError (RFC 8620 section 6.3).
        """
        name, response, _ = self.blob_copy(blobIds=["bkept", "btemp", "bnone"])
        self.assertEqual(name, "Blob/copy")
        self.assertEqual(response["copied"], {"bkept": "bkept", "btemp": "btemp"})
        self.assertEqual(response["notCopied"]["bnone"]["type"], "notFound")
        self.assertEqual(response["fromAccountId"], self.alice.account_id)
        self.assertEqual(response["accountId"], self.bob.account_id)
        kept = self.blob(self.bob.account_id, "bkept")
        self.assertEqual((kept.size, kept.type, kept.expires_at), (3, "text/plain", 1060.0))
        self.assertEqual(self.blob(self.bob.account_id, "btemp").expires_at, 1060.0)

    def test_nothing_copied(self):
        """
        With nothing copied, copied is null.
        """
        _, response, _ = self.blob_copy(blobIds=["bnone"])
        self.assertIsNone(response["copied"])
        _, response, _ = self.blob_copy(blobIds=[])
        self.assertIsNone(response["copied"])
        self.assertIsNone(response["notCopied"])

    def test_same_account(self):
        """
        Copying into the same account is invalidArguments.
        """
        _, response, _ = self.blob_copy(accountId=self.alice.account_id, blobIds=["bkept"])
        self.assertEqual(response["type"], "invalidArguments")

    def test_accounts_checked(self):
        """
        An unknown source is fromAccountNotFound (RFC 8620 section 6.3),
        an unknown destination accountNotFound; a read-only destination is
        accountReadOnly, and nothing is copied.
        """
        _, response, _ = self.blob_copy(fromAccountId="nope", blobIds=["bkept"])
        self.assertEqual(response["type"], "fromAccountNotFound")
        _, response, _ = self.blob_copy(accountId="nope", blobIds=["bkept"])
        self.assertEqual(response["type"], "accountNotFound")
        _, response, _ = self.blob_copy(accountId=self.carol.account_id, blobIds=["bkept"])
        self.assertEqual(response["type"], "accountReadOnly")
        self.assertIsNone(self.blob(self.carol.account_id, "bkept"))

    def test_arguments(self):
        """
        blobIds is required, and creation-id references are not blob ids.
        """
        self.assertEqual(self.blob_copy()[1]["type"], "invalidArguments")
        self.assertEqual(self.blob_copy(blobIds=["#ref"])[1]["type"], "invalidArguments")
        self.assertEqual(self.blob_copy(blobIds=None)[1]["type"], "invalidArguments")

    def test_not_other_accounts_blobs(self):
        """
        Alice cannot copy a blob only bob can read, naming bob's blob from
        her own account.
        """
        self.env.database.run_sync(
            blob_storage.add_blob, self.bob.account_id, "bbob", 1, "t", 0.0, None, write=True
        )
        _, response, _ = self.blob_copy(blobIds=["bbob"])
        self.assertEqual(response["notCopied"]["bbob"]["type"], "notFound")

    def test_core_capability_not_in_using(self):
        """
        Without Core in 'using', Blob/copy is unknownMethod.
        """
        response = run_request(
            self.env, self.alice,
            [["Blob/copy", {"fromAccountId": self.alice.account_id, "accountId": self.bob.account_id,
                            "blobIds": []}, "c0"]],
            using=(),
        )
        self.assertEqual(response["methodResponses"][0][1]["type"], "unknownMethod")


# The same tests on PostgreSQL (see tests/pg.py).
pg.add_postgresql_variants(globals(), BlobCopyTests, CoreCapabilityTests, EchoTests)
