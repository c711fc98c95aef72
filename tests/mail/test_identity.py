"""
Tests for L{jmapd.mail.identity}: Identity/get, /changes and /set (RFC 8621
section 6), and the submission capability that carries them.
"""

from __future__ import annotations

from twisted.internet.defer import ensureDeferred

from jmapd.config import default_config
from jmapd.mail import identity
from jmapd.protocol.engine import CORE, Registry
from jmapd.storage import identities as identity_storage
from jmapd.submission import SUBMISSION
from tests import pg
from tests.submission.support import MAIL, SubmissionStoreTestCase, submission_registry
from tests.support import ServerTestCase


class IdentityGetTests(SubmissionStoreTestCase):
    """
    The default Identities follow the account's addresses.
    """

    def test_defaultIdentities(self) -> None:
        """
        Every address of an account has an Identity from the start, with
        the RFC's defaults and mayDelete false.
        """
        self.add_account("carol", ("carol@example.com", "c.smith@example.com"))
        found = sorted(self.identities("carol"), key=lambda i: i["email"])
        self.assertEqual([i["email"] for i in found], ["c.smith@example.com", "carol@example.com"])
        for item in found:
            self.assertEqual(
                {k: v for k, v in item.items() if k not in ("id", "email")},
                {
                    "name": "",
                    "replyTo": None,
                    "bcc": None,
                    "textSignature": "",
                    "htmlSignature": "",
                    "mayDelete": False,
                },
            )

    def test_aliasAddedLater(self) -> None:
        """
        An address added after the account (an alias from jmapd-admin) has
        its Identity from then on, and Identity/changes reports it created.
        """
        state = self.state("Identity")
        self.add_address("al@example.com")
        emails = sorted(i["email"] for i in self.identities())
        self.assertEqual(emails, ["al@example.com", "alice@example.com"])
        changes = self.changes("Identity", state)
        self.assertEqual(len(changes["created"]), 1)
        self.assertNotEqual(changes["newState"], state)

    def test_changesSeeNewAliasWithoutGet(self) -> None:
        """
        A client that only polls Identity/changes sees the Identity of a
        new address: it was created with the address.
        """
        state = self.state("Identity")
        self.add_address("al@example.com")
        changes = self.changes("Identity", state)
        [created] = changes["created"]
        self.assertEqual(self.call("Identity/get", {"ids": [created]})["list"][0]["email"], "al@example.com")

    def test_addressRemoved(self) -> None:
        """
        When the account loses an address, its Identities, the user's own
        included, are destroyed.
        """
        self.add_address("al@example.com")
        self.call("Identity/set", {"create": {"x": {"email": "al@example.com", "name": "Al"}}})
        state = self.state("Identity")
        self.remove_address("al@example.com")
        self.assertEqual([i["email"] for i in self.identities()], ["alice@example.com"])
        self.assertEqual(len(self.changes("Identity", state)["destroyed"]), 2)

    def test_readOnly(self) -> None:
        """
        Identity/get and /changes only read (no write transaction, no
        waiting behind mail delivery on SQLite): the Identities follow the
        addresses when those change.
        """
        methods = self.env.registry.methods
        self.assertFalse(methods["Identity/get"].write)
        self.assertFalse(methods["Identity/changes"].write)
        self.assertTrue(methods["Identity/set"].write)

    def test_syncAll(self) -> None:
        """
        sync_all brings in line the accounts whose addresses changed
        without their Identities (data from before jmapd kept them in
        line), and only those.
        """
        self.add_account("bob")
        alice = self.principals["alice"].account_id
        self.run_sync(
            lambda txn: txn.execute(
                "INSERT INTO account_addresses (address, account_id, is_alias, position) VALUES (?, ?, 1, 5)",
                ("old-alias@example.com", alice),
            )
        )
        self.assertEqual([i["email"] for i in self.identities()], ["alice@example.com"])
        self.assertEqual(self.run_sync(identity_storage.sync_all), 1)
        self.assertEqual(sorted(i["email"] for i in self.identities()), ["alice@example.com", "old-alias@example.com"])
        self.assertEqual(self.run_sync(identity_storage.sync_all), 0)

    def test_stableState(self) -> None:
        """
        Reading the Identities changes nothing when the addresses did not
        change: the state stays the same.
        """
        first = self.call("Identity/get", {"ids": None})
        second = self.call("Identity/get", {"ids": None})
        self.assertEqual(first, second)


class IdentitySetTests(SubmissionStoreTestCase):
    """
    Identity/set create, update and destroy.
    """

    def test_create(self) -> None:
        """
        A user may add an Identity for an address of the account; it can
        be deleted, and what was not given has its default.
        """
        response = self.call(
            "Identity/set",
            {
                "create": {
                    "work": {
                        "email": "alice@example.com",
                        "name": "Alice at Work",
                        "replyTo": [{"name": None, "email": "team@example.com"}],
                        "textSignature": "-- \nAlice",
                    }
                }
            },
        )
        created = response["created"]["work"]
        self.assertEqual(
            {k: v for k, v in created.items() if k != "id"},
            {"bcc": None, "htmlSignature": "", "mayDelete": True},
        )
        [found] = self.call("Identity/get", {"ids": [created["id"]]})["list"]
        self.assertEqual(found["name"], "Alice at Work")
        self.assertEqual(found["replyTo"], [{"name": None, "email": "team@example.com"}])
        self.assertEqual(found["textSignature"], "-- \nAlice")
        destroyed = self.call("Identity/set", {"destroy": [created["id"]]})
        self.assertEqual(destroyed["destroyed"], [created["id"]])

    def test_createIsCaseInsensitive(self) -> None:
        """
        The address is compared without regard to case, and kept as given.
        """
        response = self.call("Identity/set", {"create": {"x": {"email": "Alice@Example.COM"}}})
        [found] = self.call("Identity/get", {"ids": [response["created"]["x"]["id"]]})["list"]
        self.assertEqual(found["email"], "Alice@Example.COM")

    def test_forbiddenFrom(self) -> None:
        """
        An Identity for an address the account does not have, or for a
        whole domain, is forbiddenFrom.
        """
        self.add_account("bob")
        response = self.call(
            "Identity/set",
            {"create": {"a": {"email": "bob@example.com"}, "b": {"email": "*@example.com"}, "c": {"email": "x"}}},
        )
        self.assertEqual({k: v["type"] for k, v in response["notCreated"].items()},
                         {"a": "forbiddenFrom", "b": "forbiddenFrom", "c": "forbiddenFrom"})
        self.assertIsNone(response["created"])

    def test_invalidProperties(self) -> None:
        """
        Values of the wrong type, malformed EmailAddress lists, a missing
        email and server-set properties are invalidProperties naming them.
        """
        cases = {
            "name": {"email": "alice@example.com", "name": None},
            "bcc": {"email": "alice@example.com", "bcc": [{"email": "not an address"}]},
            "replyTo": {"email": "alice@example.com", "replyTo": {"email": "a@example.com"}},
            "email": {"name": "x"},
            "mayDelete": {"email": "alice@example.com", "mayDelete": True},
        }
        response = self.call("Identity/set", {"create": cases})
        for name in cases:
            error = response["notCreated"][name]
            self.assertEqual(error["type"], "invalidProperties", name)
            self.assertEqual(error["properties"], [name])

    def test_update(self) -> None:
        """
        Every property but id, email and mayDelete can be changed.
        """
        identity_id = self.identity_for("alice@example.com")
        state = self.state("Identity")
        response = self.call(
            "Identity/set",
            {"update": {identity_id: {"name": "Alice", "bcc": [{"name": "Me", "email": "archive@example.com"}],
                                      "htmlSignature": "<b>A</b>"}}},
        )
        self.assertEqual(response["updated"], {identity_id: None})
        [found] = self.call("Identity/get", {"ids": [identity_id]})["list"]
        self.assertEqual(
            (found["name"], found["bcc"], found["htmlSignature"]),
            ("Alice", [{"name": "Me", "email": "archive@example.com"}], "<b>A</b>"),
        )
        self.assertEqual(self.changes("Identity", state)["updated"], [identity_id])

    def test_emailImmutable(self) -> None:
        """
        email cannot be changed, nor mayDelete.
        """
        identity_id = self.identity_for("alice@example.com")
        response = self.call(
            "Identity/set",
            {"update": {identity_id: {"email": "other@example.com", "mayDelete": True}}},
        )
        error = response["notUpdated"][identity_id]
        self.assertEqual(error["type"], "invalidProperties")
        self.assertEqual(sorted(error["properties"]), ["email", "mayDelete"])

    def test_defaultCannotBeDestroyed(self) -> None:
        """
        The Identity of one of the account's addresses has mayDelete false,
        and destroying it is forbidden.
        """
        identity_id = self.identity_for("alice@example.com")
        response = self.call("Identity/set", {"destroy": [identity_id]})
        self.assertEqual(response["notDestroyed"][identity_id]["type"], "forbidden")
        self.assertEqual(len(self.identities()), 1)

    def test_otherAccountsIdentity(self) -> None:
        """
        Another account's Identity is not found.
        """
        self.add_account("bob")
        bobs = self.identity_for("bob@example.com", who="bob")
        response = self.call("Identity/set", {"update": {bobs: {"name": "x"}}})
        self.assertEqual(response["notUpdated"][bobs]["type"], "notFound")
        response = self.call("Identity/set", {"destroy": [bobs]})
        self.assertEqual(response["notDestroyed"][bobs]["type"], "notFound")
        self.assertEqual(self.call("Identity/get", {"ids": [bobs]})["notFound"], [bobs])


class CapabilityTests(SubmissionStoreTestCase):
    """
    The submission capability of an account.
    """

    config = {"smtp_relay_host": "relay.invalid", "submission_max_delayed_send": 3600.0, "mail_max_size": 1000000}

    def test_accountCapability(self) -> None:
        """
        maxDelayedSend is submission-max-delayed-send in seconds, and the
        submissionExtensions are the ones jmapd implements: FUTURERELEASE
        and SIZE.
        """
        capability = self.env.registry.capabilities[SUBMISSION]
        self.assertEqual(
            capability.account(self.env, None, self.alice),
            {"maxDelayedSend": 3600, "submissionExtensions": {"FUTURERELEASE": ["3600"], "SIZE": ["1000000"]}},
        )
        self.assertEqual(capability.session(self.env), {})

    def test_noDelayedSend(self) -> None:
        """
        With submission-max-delayed-send 0, maxDelayedSend is 0 and
        FUTURERELEASE is not offered.
        """
        env = self.env
        env.config = default_config(smtp_relay_host="relay.invalid", submission_max_delayed_send=0)
        value = identity.submission_account_capability(env, None, self.alice)
        self.assertEqual(value["maxDelayedSend"], 0)
        self.assertNotIn("FUTURERELEASE", value["submissionExtensions"])

    def test_disabledWithoutRelay(self) -> None:
        """
        Without smtp-relay-host nothing is registered: no capability, no
        Identity or EmailSubmission method.
        """
        registry = Registry()
        config = default_config()
        identity.register(registry, config)
        from jmapd.mail import submission

        submission.register(registry, config)
        self.assertEqual(registry.capabilities, {})
        self.assertEqual(registry.methods, {})


class DisabledServerTests(ServerTestCase):
    """
    A server without smtp-relay-host, over HTTP.
    """

    def test_notAdvertised(self) -> None:
        """
        The Session does not list urn:ietf:params:jmap:submission, a
        request using it is refused, and Identity/get and
        EmailSubmission/get are unknownMethod.
        """

        async def go() -> None:
            config = default_config()
            server = await self.start_server(registry=submission_registry(config))
            server.add_account("alice", ("alice@example.com",))
            response, body = await server.request("GET", "/.well-known/jmap")
            self.assertNotIn(SUBMISSION.encode(), body)
            response, body = await server.request(
                "POST", "/jmap/", b'{"using": ["%s"], "methodCalls": []}' % SUBMISSION.encode()
            )
            self.assertEqual(response.code, 400)
            self.assertIn(b"unknownCapability", body)
            result = await server.api(
                [["Identity/get", {"accountId": "x"}, "0"], ["EmailSubmission/get", {"accountId": "x"}, "1"]],
                using=[CORE, MAIL],
            )
            self.assertEqual([r[1]["type"] for r in result["methodResponses"]], ["unknownMethod", "unknownMethod"])

        return ensureDeferred(go())


pg.add_postgresql_variants(globals(), IdentityGetTests, IdentitySetTests)
