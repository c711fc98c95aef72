"""
Tests for rights on shared accounts (RFC 8621 section 2 myRights, RFC 9670):
every Mail method against every MailboxRights right, granted and not
granted, for a grantee; group grants; revocation while a client holds ids;
what /changes and /queryChanges tell a grantee (and never tell them);
cross-account copies; the Mail and Principal capabilities; the caches.

alice owns the account; bob is the grantee; carol shares nothing with
anyone.  Everything runs through the engine in process (one transaction
per request, as the API resource does), except the download test, which
needs the HTTP resource.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.defer import ensureDeferred
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from jmapd.config import default_config
from jmapd.mail import MAIL
from jmapd.mail.mailbox import RIGHTS
from jmapd.protocol.engine import CORE
from jmapd.service import build_registry
from jmapd.storage import mailboxes, principals
from tests import pg
from tests.protocol.test_engine import add_principal, make_environment, run_request
from tests.support import ServerTestCase

PRINCIPALS = "urn:ietf:params:jmap:principals"
USING = (CORE, MAIL, PRINCIPALS)


class SharedAccountCase(SynchronousTestCase):
    """
    A store with alice, bob and carol (each with the default Mailboxes),
    and helpers to share alice's Mailboxes and call methods as anyone.
    """

    config: dict[str, Any] = {}

    def setUp(self) -> None:
        self.env = make_environment(self, build_registry(), **self.config)
        self.env.clock.advance(1_700_000_000)
        self.users = {name: add_principal(self.env, name) for name in ("alice", "bob", "carol")}
        self.alice, self.bob, self.carol = (self.users[n].account_id for n in ("alice", "bob", "carol"))
        self.inbox = self.role("inbox")
        self.archive = self.role("archive")
        self.trash = self.role("trash")

    def role(self, role: str, who: str = "alice") -> str:
        found = self.env.database.run_sync(mailboxes.find_by_role, self.users[who].account_id, role)
        assert found is not None
        return str(found)

    # -- calling ------------------------------------------------------------

    def calls(self, who: str, calls: list[Any]) -> list[Any]:
        response = run_request(self.env, self.users[who], calls, USING)
        return response["methodResponses"]  # type: ignore[no-any-return]

    def call(self, who: str, name: str, arguments: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """
        One method call (on alice's account unless C{arguments} names
        another): the response name and arguments.
        """
        [[response_name, response, _]] = self.calls(who, [[name, {"accountId": self.alice, **arguments}, "c"]])[:1]
        return response_name, response

    def ok(self, who: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """
        L{call}, failing the test on an error response.
        """
        response_name, response = self.call(who, name, arguments)
        self.assertEqual(response_name, name, response)
        return response

    # -- alice's data ----------------------------------------------------------

    def share(self, mailbox_id: str, grants: dict[str, Any] | None) -> None:
        """
        Set a Mailbox's shareWith as alice: C{grants} maps Principal ids to
        the names of the rights to give.
        """
        value = None if grants is None else {p: dict.fromkeys(r, True) for p, r in grants.items()}
        result = self.ok("alice", "Mailbox/set", {"update": {mailbox_id: {"shareWith": value}}})
        self.assertIn(mailbox_id, result["updated"], result)

    def email(
        self, mailbox_id: str, subject: str = "Hello", keywords: dict[str, bool] | None = None
    ) -> dict[str, Any]:
        """
        Create an Email in alice's Mailbox, as alice; its id, blobId and
        threadId.
        """
        result = self.ok("alice", "Email/set", {"create": {"e": {
            "mailboxIds": {mailbox_id: True}, "subject": subject, "keywords": keywords or {},
            "from": [{"email": "alice@example.com"}],
            "bodyStructure": {"type": "text/plain", "partId": "1"},
            "bodyValues": {"1": {"value": f"{subject} body words"}},
        }}})
        self.assertIn("e", result["created"] or {}, result)
        return result["created"]["e"]  # type: ignore[no-any-return]

    def mailbox(self, name: str, parent_id: str | None = None) -> str:
        """
        Create a Mailbox in alice's account, as alice.
        """
        result = self.ok("alice", "Mailbox/set", {"create": {"m": {"name": name, "parentId": parent_id}}})
        return str(result["created"]["m"]["id"])

    def state(self, type_name: str, who: str = "bob") -> str:
        return str(self.ok(who, f"{type_name}/get", {"ids": []})["state"])

    def query_state(self, type_name: str, who: str = "bob", **arguments: Any) -> str:
        return str(self.ok(who, f"{type_name}/query", arguments)["queryState"])

    def changes(self, type_name: str, since: str, who: str = "bob") -> dict[str, Any]:
        return self.ok(who, f"{type_name}/changes", {"sinceState": since})

    def named(self, response: dict[str, Any]) -> set[str]:
        """
        Every id a /changes or /queryChanges response names.
        """
        found: set[str] = set()
        for key in ("created", "updated", "destroyed", "removed"):
            found.update(response.get(key) or ())
        found.update(a["id"] for a in response.get("added") or ())
        return found


# -- the matrix: one check per (right, method), run granted and not granted ----------

#: Each row: the right, the method it governs, the rights bob has on the
#: Mailboxes concerned besides it, and what is pinned with and without it.
#: The check method is C{check_<right>_<label>(granted)}.
MATRIX: list[tuple[str, str, str, str]] = [
    ("mayReadItems", "Mailbox_get",
     "Mailbox/get lists the Mailbox with mayReadItems true and its real counts",
     "Mailbox/get lists the Mailbox (bob has mayAddItems) with mayReadItems false and counts of 0"),
    ("mayReadItems", "Mailbox_query",
     "Mailbox/query finds a Mailbox shared with bob",
     "Mailbox/query never finds a Mailbox not shared with bob"),
    ("mayReadItems", "Mailbox_changes",
     "Mailbox/changes reports a rename of a Mailbox shared with bob as updated",
     "Mailbox/changes never names a Mailbox not shared with bob, even when it is renamed"),
    ("mayReadItems", "Mailbox_queryChanges",
     "Mailbox/queryChanges reports a renamed shared Mailbox as removed and added again",
     "Mailbox/queryChanges never names a renamed Mailbox not shared with bob"),
    ("mayReadItems", "Email_get",
     "Email/get returns an Email of the Mailbox",
     "Email/get answers notFound for an Email of a Mailbox bob may not read"),
    ("mayReadItems", "Email_query",
     "Email/query finds the Email and counts it in total",
     "Email/query neither finds nor counts an Email bob may not read"),
    ("mayReadItems", "Email_changes",
     "Email/changes reports a new Email of the Mailbox as created",
     "Email/changes never names an Email bob may not read"),
    ("mayReadItems", "Email_queryChanges",
     "Email/queryChanges adds a new Email of the Mailbox",
     "Email/queryChanges never names an Email bob may not read"),
    ("mayReadItems", "Thread_get",
     "Thread/get returns the Thread of a readable Email",
     "Thread/get answers notFound for a Thread with no Email bob may read"),
    ("mayReadItems", "Thread_changes",
     "Thread/changes reports the Thread of a new readable Email as created",
     "Thread/changes never names a Thread with no Email bob may read"),
    ("mayReadItems", "SearchSnippet_get",
     "SearchSnippet/get gives a snippet for a readable Email",
     "SearchSnippet/get answers notFound for an Email bob may not read"),
    ("mayReadItems", "Email_parse",
     "Email/parse parses the message blob of a readable Email",
     "Email/parse answers notFound for the blob of an Email bob may not read"),
    ("mayReadItems", "Blob_copy",
     "Blob/copy copies the message blob of a readable Email into bob's account",
     "Blob/copy refuses (notFound) the blob of an Email bob may not read"),
    ("mayReadItems", "Email_copy_out",
     "Email/copy copies a readable Email into bob's own account",
     "Email/copy answers notFound for an Email bob may not read"),
    ("mayAddItems", "Email_set_create",
     "Email/set creates an Email in the Mailbox",
     "Email/set refuses (forbidden) to create an Email in the Mailbox"),
    ("mayAddItems", "Email_set_mailboxIds_add",
     "Email/set adds an Email to a second Mailbox",
     "Email/set refuses (forbidden) to add an Email to a Mailbox without mayAddItems"),
    ("mayAddItems", "Email_import",
     "Email/import imports a readable message into the Mailbox",
     "Email/import refuses (forbidden) to import into the Mailbox"),
    ("mayAddItems", "Email_copy_in",
     "Email/copy copies one of bob's Emails into the shared Mailbox",
     "Email/copy refuses (forbidden) to copy into the shared Mailbox"),
    ("mayRemoveItems", "Email_set_mailboxIds_remove",
     "Email/set moves an Email out of the Mailbox",
     "Email/set refuses (forbidden) to take an Email out of the Mailbox"),
    ("mayRemoveItems", "Email_set_destroy",
     "Email/set destroys an Email of the Mailbox",
     "Email/set refuses (forbidden) to destroy an Email of the Mailbox"),
    ("mayRemoveItems", "Email_copy_destroy_original",
     "Email/copy with onSuccessDestroyOriginal destroys the original in the shared account",
     "Email/copy with onSuccessDestroyOriginal copies, but the original stays (forbidden)"),
    ("maySetSeen", "Email_set_seen",
     "Email/set sets $seen",
     "Email/set refuses (forbidden) to set $seen"),
    ("maySetSeen", "Email_set_create_seen",
     "Email/set creates an Email with $seen in the Mailbox",
     "Email/set refuses (forbidden) to create an Email with $seen"),
    ("maySetKeywords", "Email_set_keywords",
     "Email/set sets $flagged",
     "Email/set refuses (forbidden) to set $flagged (maySetSeen does not cover it)"),
    ("mayCreateChild", "Mailbox_set_create",
     "Mailbox/set creates a child of the Mailbox",
     "Mailbox/set refuses (forbidden) to create a child of the Mailbox"),
    ("mayRename", "Mailbox_set_rename",
     "Mailbox/set renames the Mailbox",
     "Mailbox/set refuses (forbidden) to rename the Mailbox"),
    ("mayDelete", "Mailbox_set_destroy",
     "Mailbox/set destroys the Mailbox",
     "Mailbox/set refuses (forbidden) to destroy the Mailbox"),
    ("maySubmit", "Mailbox_get",
     "Mailbox/get lists the Mailbox with maySubmit, which alone reads and adds nothing",
     "without any right, alice's account does not exist for bob (accountNotFound)"),
]


class RightsMatrixTests(SharedAccountCase):
    """
    Generated tests C{test_<right>_<method>_granted} and C{..._denied}:
    see L{MATRIX}.  In each, alice's Inbox (and, where a second Mailbox is
    needed, her Archive) is shared with bob with the listed base rights,
    plus the right under test or not.
    """

    def grant(self, granted: bool, right: str, *base: str, mailbox: str | None = None) -> None:
        rights = set(base) | ({right} if granted else set())
        self.share(mailbox or self.inbox, {self.bob: rights})

    # -- mayReadItems ----------------------------------------------------------

    def check_mayReadItems_Mailbox_get(self, granted: bool) -> None:
        self.email(self.inbox)
        self.grant(granted, "mayReadItems", "mayAddItems")
        [found] = self.ok("bob", "Mailbox/get", {})["list"]
        self.assertEqual(found["id"], self.inbox)
        self.assertEqual(found["myRights"]["mayReadItems"], granted)
        self.assertEqual(found["totalEmails"], 1 if granted else 0)

    def check_mayReadItems_Mailbox_query(self, granted: bool) -> None:
        self.share(self.inbox, {self.bob: {"mayReadItems"}})
        if granted:
            self.share(self.archive, {self.bob: {"mayReadItems"}})
        ids = self.ok("bob", "Mailbox/query", {})["ids"]
        self.assertEqual(set(ids), {self.inbox, self.archive} if granted else {self.inbox})

    def check_mayReadItems_Mailbox_changes(self, granted: bool) -> None:
        self.share(self.inbox, {self.bob: {"mayReadItems"}})
        if granted:
            self.share(self.archive, {self.bob: {"mayReadItems"}})
        since = self.state("Mailbox")
        self.ok("alice", "Mailbox/set", {"update": {self.archive: {"name": "Old mail"}}})
        changes = self.changes("Mailbox", since)
        if granted:
            self.assertEqual(changes["updated"], [self.archive])
        else:
            self.assertNotIn(self.archive, self.named(changes))

    def check_mayReadItems_Mailbox_queryChanges(self, granted: bool) -> None:
        self.share(self.inbox, {self.bob: {"mayReadItems"}})
        if granted:
            self.share(self.archive, {self.bob: {"mayReadItems"}})
        since = self.query_state("Mailbox")
        self.ok("alice", "Mailbox/set", {"update": {self.archive: {"name": "Old mail"}}})
        changes = self.ok("bob", "Mailbox/queryChanges", {"sinceQueryState": since})
        if granted:
            self.assertEqual(changes["removed"], [self.archive])
            self.assertEqual([a["id"] for a in changes["added"]], [self.archive])
        else:
            self.assertNotIn(self.archive, self.named(changes))

    def check_mayReadItems_Email_get(self, granted: bool) -> None:
        email = self.email(self.inbox)
        self.grant(granted, "mayReadItems", "mayAddItems")
        got = self.ok("bob", "Email/get", {"ids": [email["id"]], "properties": ["mailboxIds", "subject"]})
        if granted:
            self.assertEqual(got["list"], [{"id": email["id"], "mailboxIds": {self.inbox: True}, "subject": "Hello"}])
        else:
            self.assertEqual((got["list"], got["notFound"]), ([], [email["id"]]))

    def check_mayReadItems_Email_query(self, granted: bool) -> None:
        email = self.email(self.inbox)
        self.grant(granted, "mayReadItems", "mayAddItems")
        result = self.ok("bob", "Email/query", {"calculateTotal": True})
        self.assertEqual((result["ids"], result["total"]), ([email["id"]], 1) if granted else ([], 0))

    def check_mayReadItems_Email_changes(self, granted: bool) -> None:
        self.grant(granted, "mayReadItems", "mayAddItems")
        since = self.state("Email")
        email = self.email(self.inbox)
        changes = self.changes("Email", since)
        if granted:
            self.assertEqual(changes["created"], [email["id"]])
        else:
            self.assertEqual(self.named(changes), set())
            self.assertNotEqual(changes["newState"], since)

    def check_mayReadItems_Email_queryChanges(self, granted: bool) -> None:
        self.grant(granted, "mayReadItems", "mayAddItems")
        since = self.query_state("Email")
        email = self.email(self.inbox)
        changes = self.ok("bob", "Email/queryChanges", {"sinceQueryState": since})
        if granted:
            self.assertEqual(changes["added"], [{"id": email["id"], "index": 0}])
        else:
            self.assertEqual(self.named(changes), set())

    def check_mayReadItems_Thread_get(self, granted: bool) -> None:
        email = self.email(self.inbox)
        self.grant(granted, "mayReadItems", "mayAddItems")
        got = self.ok("bob", "Thread/get", {"ids": [email["threadId"]]})
        if granted:
            self.assertEqual(got["list"], [{"id": email["threadId"], "emailIds": [email["id"]]}])
        else:
            self.assertEqual(got["notFound"], [email["threadId"]])

    def check_mayReadItems_Thread_changes(self, granted: bool) -> None:
        self.grant(granted, "mayReadItems", "mayAddItems")
        since = self.state("Thread")
        email = self.email(self.inbox)
        changes = self.changes("Thread", since)
        if granted:
            self.assertEqual(changes["created"], [email["threadId"]])
        else:
            self.assertEqual(self.named(changes), set())

    def check_mayReadItems_SearchSnippet_get(self, granted: bool) -> None:
        email = self.email(self.inbox, "Budget")
        self.grant(granted, "mayReadItems", "mayAddItems")
        result = self.ok("bob", "SearchSnippet/get", {"emailIds": [email["id"]], "filter": {"text": "budget"}})
        if granted:
            self.assertEqual([s["emailId"] for s in result["list"]], [email["id"]])
        else:
            self.assertEqual((result["list"], result["notFound"]), ([], [email["id"]]))

    def check_mayReadItems_Email_parse(self, granted: bool) -> None:
        email = self.email(self.inbox)
        self.grant(granted, "mayReadItems", "mayAddItems")
        result = self.ok("bob", "Email/parse", {"blobIds": [email["blobId"]], "properties": ["subject"]})
        if granted:
            self.assertEqual(result["parsed"], {email["blobId"]: {"subject": "Hello"}})
        else:
            self.assertEqual((result["parsed"], result["notFound"]), (None, [email["blobId"]]))

    def check_mayReadItems_Blob_copy(self, granted: bool) -> None:
        email = self.email(self.inbox)
        self.grant(granted, "mayReadItems", "mayAddItems")
        result = self.ok("bob", "Blob/copy", {"fromAccountId": self.alice, "accountId": self.bob,
                                              "blobIds": [email["blobId"]]})
        if granted:
            self.assertEqual(result["copied"], {email["blobId"]: email["blobId"]})
        else:
            self.assertEqual(result["notCopied"][email["blobId"]]["type"], "notFound")

    def check_mayReadItems_Email_copy_out(self, granted: bool) -> None:
        email = self.email(self.inbox)
        self.grant(granted, "mayReadItems", "mayAddItems")
        result = self.ok("bob", "Email/copy", {"fromAccountId": self.alice, "accountId": self.bob, "create": {
            "c": {"id": email["id"], "mailboxIds": {self.role("inbox", "bob"): True}}}})
        if granted:
            self.assertIn("c", result["created"])
        else:
            self.assertEqual(result["notCreated"]["c"]["type"], "notFound")

    # -- mayAddItems -----------------------------------------------------------

    def check_mayAddItems_Email_set_create(self, granted: bool) -> None:
        self.grant(granted, "mayAddItems", "mayReadItems")
        result = self.ok("bob", "Email/set", {"create": {"e": {
            "mailboxIds": {self.inbox: True}, "subject": "From bob",
            "bodyStructure": {"type": "text/plain", "partId": "1"}, "bodyValues": {"1": {"value": "x"}}}}})
        if granted:
            self.assertIn("e", result["created"])
        else:
            self.assertEqual(result["notCreated"]["e"]["type"], "forbidden")

    def check_mayAddItems_Email_set_mailboxIds_add(self, granted: bool) -> None:
        email = self.email(self.inbox)
        self.share(self.inbox, {self.bob: {"mayReadItems"}})
        self.grant(granted, "mayAddItems", "mayReadItems", mailbox=self.archive)
        result = self.ok("bob", "Email/set", {"update": {email["id"]: {f"mailboxIds/{self.archive}": True}}})
        if granted:
            self.assertIn(email["id"], result["updated"])
        else:
            self.assertEqual(result["notUpdated"][email["id"]]["type"], "forbidden")

    def check_mayAddItems_Email_import(self, granted: bool) -> None:
        email = self.email(self.inbox)
        self.grant(granted, "mayAddItems", "mayReadItems")
        result = self.ok("bob", "Email/import", {"emails": {"i": {
            "blobId": email["blobId"], "mailboxIds": {self.inbox: True}}}})
        if granted:
            self.assertIn("i", result["created"])
        else:
            self.assertEqual(result["notCreated"]["i"]["type"], "forbidden")

    def check_mayAddItems_Email_copy_in(self, granted: bool) -> None:
        own = self.ok("bob", "Email/set", {"accountId": self.bob, "create": {"e": {
            "mailboxIds": {self.role("inbox", "bob"): True}, "subject": "Bob's",
            "bodyStructure": {"type": "text/plain", "partId": "1"}, "bodyValues": {"1": {"value": "x"}}}}})
        self.grant(granted, "mayAddItems", "mayReadItems")
        result = self.ok("bob", "Email/copy", {"fromAccountId": self.bob, "accountId": self.alice, "create": {
            "c": {"id": own["created"]["e"]["id"], "mailboxIds": {self.inbox: True}}}})
        if granted:
            self.assertIn("c", result["created"])
        else:
            self.assertEqual(result["notCreated"]["c"]["type"], "forbidden")

    # -- mayRemoveItems ----------------------------------------------------------

    def check_mayRemoveItems_Email_set_mailboxIds_remove(self, granted: bool) -> None:
        email = self.email(self.inbox)
        self.share(self.archive, {self.bob: {"mayReadItems", "mayAddItems"}})
        self.grant(granted, "mayRemoveItems", "mayReadItems")
        result = self.ok("bob", "Email/set", {"update": {email["id"]: {"mailboxIds": {self.archive: True}}}})
        if granted:
            self.assertIn(email["id"], result["updated"])
        else:
            self.assertEqual(result["notUpdated"][email["id"]]["type"], "forbidden")

    def check_mayRemoveItems_Email_set_destroy(self, granted: bool) -> None:
        email = self.email(self.inbox)
        self.grant(granted, "mayRemoveItems", "mayReadItems")
        result = self.ok("bob", "Email/set", {"destroy": [email["id"]]})
        if granted:
            self.assertEqual(result["destroyed"], [email["id"]])
        else:
            self.assertEqual(result["notDestroyed"][email["id"]]["type"], "forbidden")

    def check_mayRemoveItems_Email_copy_destroy_original(self, granted: bool) -> None:
        email = self.email(self.inbox)
        self.grant(granted, "mayRemoveItems", "mayReadItems")
        [copied, destroyed] = self.calls("bob", [["Email/copy", {
            "fromAccountId": self.alice, "accountId": self.bob, "onSuccessDestroyOriginal": True,
            "create": {"c": {"id": email["id"], "mailboxIds": {self.role("inbox", "bob"): True}}}}, "c"]])
        self.assertIn("c", copied[1]["created"])
        self.assertEqual(destroyed[0], "Email/set")
        if granted:
            self.assertEqual(destroyed[1]["destroyed"], [email["id"]])
        else:
            self.assertEqual(destroyed[1]["notDestroyed"][email["id"]]["type"], "forbidden")

    # -- maySetSeen, maySetKeywords --------------------------------------------

    def check_maySetSeen_Email_set_seen(self, granted: bool) -> None:
        email = self.email(self.inbox)
        self.grant(granted, "maySetSeen", "mayReadItems", "maySetKeywords")
        result = self.ok("bob", "Email/set", {"update": {email["id"]: {"keywords/$seen": True}}})
        if granted:
            self.assertIn(email["id"], result["updated"])
        else:
            self.assertEqual(result["notUpdated"][email["id"]]["type"], "forbidden")

    def check_maySetSeen_Email_set_create_seen(self, granted: bool) -> None:
        self.grant(granted, "maySetSeen", "mayReadItems", "mayAddItems")
        result = self.ok("bob", "Email/set", {"create": {"e": {
            "mailboxIds": {self.inbox: True}, "keywords": {"$seen": True},
            "bodyStructure": {"type": "text/plain", "partId": "1"}, "bodyValues": {"1": {"value": "x"}}}}})
        if granted:
            self.assertIn("e", result["created"])
        else:
            self.assertEqual(result["notCreated"]["e"]["type"], "forbidden")

    def check_maySetKeywords_Email_set_keywords(self, granted: bool) -> None:
        email = self.email(self.inbox)
        self.grant(granted, "maySetKeywords", "mayReadItems", "maySetSeen")
        result = self.ok("bob", "Email/set", {"update": {email["id"]: {"keywords/$flagged": True}}})
        if granted:
            self.assertIn(email["id"], result["updated"])
        else:
            self.assertEqual(result["notUpdated"][email["id"]]["type"], "forbidden")

    # -- Mailbox rights ------------------------------------------------------------

    def check_mayCreateChild_Mailbox_set_create(self, granted: bool) -> None:
        self.grant(granted, "mayCreateChild", "mayReadItems")
        result = self.ok("bob", "Mailbox/set", {"create": {"m": {"name": "Sub", "parentId": self.inbox}}})
        if granted:
            self.assertIn("m", result["created"])
        else:
            self.assertEqual(result["notCreated"]["m"]["type"], "forbidden")

    def check_mayRename_Mailbox_set_rename(self, granted: bool) -> None:
        self.grant(granted, "mayRename", "mayReadItems")
        result = self.ok("bob", "Mailbox/set", {"update": {self.inbox: {"name": "Renamed"}}})
        if granted:
            self.assertIn(self.inbox, result["updated"])
        else:
            self.assertEqual(result["notUpdated"][self.inbox]["type"], "forbidden")

    def check_mayDelete_Mailbox_set_destroy(self, granted: bool) -> None:
        projects = self.mailbox("Projects")
        self.grant(granted, "mayDelete", "mayReadItems", mailbox=projects)
        result = self.ok("bob", "Mailbox/set", {"destroy": [projects]})
        if granted:
            self.assertEqual(result["destroyed"], [projects])
        else:
            self.assertEqual(result["notDestroyed"][projects]["type"], "forbidden")

    def check_maySubmit_Mailbox_get(self, granted: bool) -> None:
        email = self.email(self.inbox)
        if granted:
            self.share(self.inbox, {self.bob: {"maySubmit"}})
            [found] = self.ok("bob", "Mailbox/get", {})["list"]
            self.assertEqual({r for r, v in found["myRights"].items() if v}, {"maySubmit"})
            self.assertEqual(self.ok("bob", "Email/get", {"ids": [email["id"]]})["notFound"], [email["id"]])
            self.assertEqual(self.ok("bob", "Email/query", {})["ids"], [])
        else:
            name, error = self.call("bob", "Mailbox/get", {})
            self.assertEqual((name, error["type"]), ("error", "accountNotFound"))


def _generate(cls: type[RightsMatrixTests]) -> None:
    """
    Add a test method per row of L{MATRIX} and outcome, each with a
    docstring saying what it pins.
    """
    for right, label, when_granted, when_denied in MATRIX:
        check = getattr(cls, f"check_{right}_{label}")
        for granted, text in ((True, when_granted), (False, when_denied)):
            def test(self: RightsMatrixTests, check: Any = check, granted: bool = granted) -> None:
                check(self, granted)

            outcome = "granted" if granted else "denied"
            test.__name__ = f"test_{right}_{label}_{outcome}"
            test.__doc__ = f"\n        {right} {'granted' if granted else 'not granted'}: {text}.\n        "
            setattr(cls, test.__name__, test)


_generate(RightsMatrixTests)


class MatrixCompletenessTests(SynchronousTestCase):
    """
    The matrix itself.
    """

    def test_every_right(self) -> None:
        """
        Every MailboxRights right has at least one row, and every row a
        check method.
        """
        self.assertEqual({row[0] for row in MATRIX}, set(RIGHTS))
        for right, label, _, _ in MATRIX:
            self.assertTrue(callable(getattr(RightsMatrixTests, f"check_{right}_{label}", None)), (right, label))


# -- what /changes and /queryChanges tell a grantee ---------------------------------


class DropBoxTests(SharedAccountCase):
    def test_counts_of_unreadable_mailbox_not_reported(self) -> None:
        """
        A Mailbox bob may add to but not read shows him zero counts, and
        Mailbox/changes does not report it updated when only its counts
        changed (that would tell him when mail arrives); a change of its
        own properties is reported.
        """
        self.share(self.inbox, {self.bob: ["mayAddItems"]})
        since = self.state("Mailbox")
        self.email(self.inbox, "arrives")
        response = self.changes("Mailbox", since)
        self.assertEqual((response["created"], response["updated"], response["destroyed"]), ([], [], []))
        self.ok("alice", "Mailbox/set", {"update": {self.inbox: {"sortOrder": 7}}})
        response = self.changes("Mailbox", since)
        self.assertEqual(response["updated"], [self.inbox])
        [mailbox] = self.ok("bob", "Mailbox/get", {"ids": [self.inbox]})["list"]
        self.assertEqual((mailbox["totalEmails"], mailbox["unreadEmails"]), (0, 0))

    def test_counts_of_readable_mailbox_reported(self) -> None:
        """
        With mayReadItems, a change of the counts alone is reported as an
        update, with updatedProperties naming the counts.
        """
        self.share(self.inbox, {self.bob: ["mayReadItems"]})
        since = self.state("Mailbox")
        self.email(self.inbox, "arrives")
        response = self.changes("Mailbox", since)
        self.assertEqual(response["updated"], [self.inbox])
        self.assertIn("totalEmails", response["updatedProperties"])


class SightTests(SharedAccountCase):
    """
    Email/changes, Thread/changes, Mailbox/changes and the /queryChanges
    of a shared account: what bob gains or loses sight of is reported
    (created, destroyed, removed), and nothing he could never see is named.
    """

    def states(self) -> dict[str, str]:
        return {
            "Email": self.state("Email"),
            "Thread": self.state("Thread"),
            "Mailbox": self.state("Mailbox"),
            "query": self.query_state("Email"),
        }

    def report(self, since: dict[str, str]) -> dict[str, dict[str, Any]]:
        return {
            "Email": self.changes("Email", since["Email"]),
            "Thread": self.changes("Thread", since["Thread"]),
            "Mailbox": self.changes("Mailbox", since["Mailbox"]),
            "query": self.ok("bob", "Email/queryChanges", {"sinceQueryState": since["query"]}),
        }

    def test_moved_out_of_sight_is_destroyed(self) -> None:
        """
        An Email bob could read that alice moves to a Mailbox he may not
        read is destroyed for him (Email, Thread) and removed from his
        queries; Email/get then answers notFound.
        """
        email = self.email(self.inbox)
        self.share(self.inbox, {self.bob: {"mayReadItems"}})
        since = self.states()
        self.ok("alice", "Email/set", {"update": {email["id"]: {"mailboxIds": {self.archive: True}}}})
        report = self.report(since)
        self.assertEqual(report["Email"]["destroyed"], [email["id"]])
        self.assertEqual(report["Thread"]["destroyed"], [email["threadId"]])
        self.assertEqual(report["query"]["removed"], [email["id"]])
        self.assertEqual(self.ok("bob", "Email/get", {"ids": [email["id"]]})["notFound"], [email["id"]])

    def test_destroyed_in_sight_is_destroyed(self) -> None:
        """
        An Email bob could read that alice destroys is destroyed for him,
        with its Thread.
        """
        email = self.email(self.inbox)
        self.share(self.inbox, {self.bob: {"mayReadItems"}})
        since = self.states()
        self.ok("alice", "Email/set", {"destroy": [email["id"]]})
        report = self.report(since)
        self.assertEqual(report["Email"]["destroyed"], [email["id"]])
        self.assertEqual(report["Thread"]["destroyed"], [email["threadId"]])
        self.assertEqual(report["query"]["removed"], [email["id"]])

    def test_private_changes_never_named(self) -> None:
        """
        Whatever alice does with Emails and Mailboxes bob may not see
        (flag, move between private Mailboxes, destroy, rename) never
        names one of their ids to him, in any /changes or /queryChanges.
        """
        self.share(self.inbox, {self.bob: {"mayReadItems"}})
        private = self.email(self.archive, "Private")
        gone = self.email(self.archive, "Gone")
        since = self.states()
        self.ok("alice", "Email/set", {
            "update": {private["id"]: {"keywords/$flagged": True, "mailboxIds": {self.trash: True}}},
            "destroy": [gone["id"]],
        })
        self.ok("alice", "Mailbox/set", {"update": {self.archive: {"name": "Secret"}}})
        report = self.report(since)
        hidden = {private["id"], gone["id"], private["threadId"], gone["threadId"], self.archive, self.trash}
        for name, response in report.items():
            self.assertEqual(self.named(response) & hidden, set(), name)

    def test_moved_into_sight_is_reported(self) -> None:
        """
        An Email alice moves from a private Mailbox into one bob may read
        is reported to him (updated), and its Thread as created.
        """
        email = self.email(self.archive)
        self.share(self.inbox, {self.bob: {"mayReadItems"}})
        since = self.states()
        self.ok("alice", "Email/set", {"update": {email["id"]: {"mailboxIds": {self.inbox: True}}}})
        report = self.report(since)
        self.assertIn(email["id"], report["Email"]["created"] + report["Email"]["updated"])
        self.assertIn(email["threadId"], report["Thread"]["created"] + report["Thread"]["updated"])
        self.assertEqual(report["query"]["added"], [{"id": email["id"], "index": 0}])

    def test_grant_brings_into_sight(self) -> None:
        """
        When alice shares another Mailbox with bob, the Mailbox is reported
        to him (updated: its shareWith changed), and the Emails and Threads
        already in it are created for him and added to his queries, though
        none of them changed.
        """
        self.share(self.inbox, {self.bob: {"mayReadItems"}})
        email = self.email(self.archive)
        since = self.states()
        self.share(self.archive, {self.bob: {"mayReadItems"}})
        report = self.report(since)
        self.assertEqual(report["Mailbox"]["created"] + report["Mailbox"]["updated"], [self.archive])
        self.assertEqual(report["Mailbox"]["destroyed"], [])
        self.assertEqual(report["Email"]["created"], [email["id"]])
        self.assertEqual(report["Thread"]["created"], [email["threadId"]])
        self.assertEqual(report["query"]["added"], [{"id": email["id"], "index": 0}])

    def test_revocation_while_holding_ids(self) -> None:
        """
        When alice stops sharing one of two Mailboxes, bob (who still has
        the other) sees the Mailbox, its Emails and Threads destroyed; for
        the ids he holds, get answers notFound and set notFound (never
        forbidden, which would say they exist).
        """
        self.share(self.inbox, {self.bob: {"mayReadItems"}})
        self.share(self.archive, {self.bob: set(RIGHTS)})
        email = self.email(self.archive)
        since = self.states()
        self.share(self.archive, None)
        report = self.report(since)
        self.assertEqual(report["Mailbox"]["destroyed"], [self.archive])
        self.assertEqual(report["Email"]["destroyed"], [email["id"]])
        self.assertEqual(report["Thread"]["destroyed"], [email["threadId"]])
        self.assertEqual(report["query"]["removed"], [email["id"]])
        self.assertEqual(self.ok("bob", "Email/get", {"ids": [email["id"]]})["notFound"], [email["id"]])
        self.assertEqual(self.ok("bob", "Thread/get", {"ids": [email["threadId"]]})["notFound"], [email["threadId"]])
        self.assertEqual(self.ok("bob", "Mailbox/get", {"ids": [self.archive]})["notFound"], [self.archive])
        result = self.ok("bob", "Email/set", {"update": {email["id"]: {"keywords/$seen": True}}})
        self.assertEqual(result["notUpdated"][email["id"]]["type"], "notFound")
        result = self.ok("bob", "Email/set", {"destroy": [email["id"]]})
        self.assertEqual(result["notDestroyed"][email["id"]]["type"], "notFound")
        result = self.ok("bob", "Mailbox/set", {"update": {self.archive: {"name": "x"}}})
        self.assertEqual(result["notUpdated"][self.archive]["type"], "notFound")
        result = self.ok("bob", "Mailbox/set", {"destroy": [self.archive]})
        self.assertEqual(result["notDestroyed"][self.archive]["type"], "notFound")

    def test_revoking_everything_hides_the_account(self) -> None:
        """
        With no right left, alice's account is gone for bob:
        accountNotFound for get and set alike.
        """
        email = self.email(self.inbox)
        self.share(self.inbox, {self.bob: {"mayReadItems", "maySetSeen"}})
        self.share(self.inbox, None)
        for name, arguments in (
            ("Email/get", {"ids": [email["id"]]}),
            ("Email/set", {"update": {email["id"]: {"keywords/$seen": True}}}),
        ):
            response_name, error = self.call("bob", name, arguments)
            self.assertEqual((response_name, error["type"]), ("error", "accountNotFound"), name)

    def test_shared_mailbox_destroyed(self) -> None:
        """
        A shared Mailbox alice destroys with its Emails is destroyed for
        bob, with the Emails that were in it.
        """
        self.share(self.inbox, {self.bob: {"mayReadItems"}})
        projects = self.mailbox("Projects")
        self.share(projects, {self.bob: {"mayReadItems"}})
        email = self.email(projects)
        since = self.states()
        self.ok("alice", "Mailbox/set", {"destroy": [projects], "onDestroyRemoveEmails": True})
        report = self.report(since)
        self.assertEqual(report["Mailbox"]["destroyed"], [projects])
        self.assertEqual(report["Email"]["destroyed"], [email["id"]])
        self.assertEqual(report["Thread"]["destroyed"], [email["threadId"]])

    def test_mailbox_ids_only_readable(self) -> None:
        """
        An Email's mailboxIds name only the Mailboxes bob may read: one he
        may only add to stays out (RFC 8621 section 2, mayReadItems), and
        a change he makes keeps it.
        """
        self.share(self.inbox, {self.bob: {"mayReadItems", "maySetSeen"}})
        self.share(self.archive, {self.bob: {"mayAddItems", "maySetSeen"}})
        email = self.email(self.inbox)
        self.ok("alice", "Email/set", {"update": {email["id"]: {f"mailboxIds/{self.archive}": True}}})
        got = self.ok("bob", "Email/get", {"ids": [email["id"]], "properties": ["mailboxIds"]})
        self.assertEqual(got["list"][0]["mailboxIds"], {self.inbox: True})
        self.ok("bob", "Email/set", {"update": {email["id"]: {"keywords/$seen": True}}})
        got = self.ok("alice", "Email/get", {"ids": [email["id"]], "properties": ["mailboxIds"]})
        self.assertEqual(got["list"][0]["mailboxIds"], {self.inbox: True, self.archive: True})

    def test_unshared_accounts_isolated(self) -> None:
        """
        carol, who has no grant, gets accountNotFound for every Mail
        method on alice's account (fromAccountNotFound copying from it),
        while bob has one.
        """
        self.share(self.inbox, {self.bob: {"mayReadItems"}})
        email = self.email(self.inbox)
        for name, arguments in (
            ("Mailbox/get", {}), ("Mailbox/query", {}), ("Mailbox/changes", {"sinceState": "0"}),
            ("Email/get", {"ids": [email["id"]]}), ("Email/query", {}), ("Email/changes", {"sinceState": "0"}),
            ("Thread/get", {"ids": [email["threadId"]]}), ("Thread/changes", {"sinceState": "0"}),
            ("SearchSnippet/get", {"emailIds": [email["id"]]}),
            ("Email/parse", {"blobIds": [email["blobId"]]}),
            ("Email/set", {"destroy": [email["id"]]}),
        ):
            response_name, error = self.call("carol", name, arguments)
            self.assertEqual((response_name, error["type"]), ("error", "accountNotFound"), name)
        response_name, error = self.call("carol", "Blob/copy", {
            "fromAccountId": self.alice, "accountId": self.carol, "blobIds": [email["blobId"]]})
        self.assertEqual((response_name, error["type"]), ("error", "fromAccountNotFound"))


class EveryMailboxRuleTests(SharedAccountCase):
    """
    RFC 8621 section 2: for an Email in several Mailboxes, $seen and other
    keywords may change only with maySetSeen / maySetKeywords on all of
    them.
    """

    def test_right_missing_on_one_mailbox(self) -> None:
        """
        With maySetSeen and maySetKeywords on Inbox but not on Archive, an
        Email in both keeps its keywords (forbidden); one in Inbox alone
        may change.
        """
        self.share(self.inbox, {self.bob: {"mayReadItems", "maySetSeen", "maySetKeywords"}})
        self.share(self.archive, {self.bob: {"mayReadItems"}})
        both = self.email(self.inbox)
        self.ok("alice", "Email/set", {"update": {both["id"]: {f"mailboxIds/{self.archive}": True}}})
        alone = self.email(self.inbox)
        for keyword in ("$seen", "$flagged"):
            result = self.ok("bob", "Email/set", {"update": {
                both["id"]: {f"keywords/{keyword}": True}, alone["id"]: {f"keywords/{keyword}": True}}})
            self.assertEqual(result["notUpdated"][both["id"]]["type"], "forbidden", keyword)
            self.assertIn(alone["id"], result["updated"], keyword)


class GroupTests(SharedAccountCase):
    """
    Rights given to a group reach its members, through nested groups too,
    and go when a member leaves.
    """

    def group(self, name: str, members: list[str]) -> str:
        return str(self.env.database.run_sync(principals.add_group, name, members, write=True))

    def test_group_grant_reaches_members(self) -> None:
        """
        A grant to a group lets its members read; someone outside the
        group still cannot see the account.
        """
        email = self.email(self.inbox)
        team = self.group("team", [self.bob])
        self.share(self.inbox, {team: {"mayReadItems"}})
        got = self.ok("bob", "Email/get", {"ids": [email["id"]], "properties": ["subject"]})
        self.assertEqual(got["list"], [{"id": email["id"], "subject": "Hello"}])
        response_name, error = self.call("carol", "Email/get", {"ids": [email["id"]]})
        self.assertEqual((response_name, error["type"]), ("error", "accountNotFound"))

    def test_nested_group(self) -> None:
        """
        A member of a group that is itself a member of the grantee group
        has its rights.
        """
        email = self.email(self.inbox)
        inner = self.group("inner", [self.bob])
        outer = self.group("outer", [inner])
        self.share(self.inbox, {outer: {"mayReadItems"}})
        self.assertEqual(
            [e["id"] for e in self.ok("bob", "Email/get", {"ids": [email["id"]]})["list"]], [email["id"]]
        )

    def test_group_and_own_rights_combine(self) -> None:
        """
        Rights from the user's own grant and from a group add up: read
        given directly, maySetSeen through the group, $seen may be set.
        """
        email = self.email(self.inbox)
        team = self.group("team", [self.bob])
        self.share(self.inbox, {self.bob: {"mayReadItems"}, team: {"maySetSeen"}})
        result = self.ok("bob", "Email/set", {"update": {email["id"]: {"keywords/$seen": True}}})
        self.assertIn(email["id"], result["updated"])

    def test_leaving_group_while_holding_ids(self) -> None:
        """
        When bob leaves the group that gave him a Mailbox, that Mailbox and
        its Emails are destroyed for him, and his ids answer notFound.
        """
        self.share(self.inbox, {self.bob: {"mayReadItems"}})
        team = self.group("team", [self.bob])
        self.share(self.archive, {team: {"mayReadItems", "maySetSeen"}})
        email = self.email(self.archive)
        since = {"Email": self.state("Email"), "Mailbox": self.state("Mailbox")}
        self.env.database.run_sync(principals.remove_group_members, "team", [self.bob], write=True)
        self.assertEqual(self.changes("Email", since["Email"])["destroyed"], [email["id"]])
        self.assertEqual(self.changes("Mailbox", since["Mailbox"])["destroyed"], [self.archive])
        self.assertEqual(self.ok("bob", "Email/get", {"ids": [email["id"]]})["notFound"], [email["id"]])
        result = self.ok("bob", "Email/set", {"update": {email["id"]: {"keywords/$seen": True}}})
        self.assertEqual(result["notUpdated"][email["id"]]["type"], "notFound")

    def test_joining_group_brings_into_sight(self) -> None:
        """
        When bob joins a group that may read a Mailbox, its Emails are
        created for him.
        """
        self.share(self.inbox, {self.bob: {"mayReadItems"}})
        team = self.group("team", [])
        self.share(self.archive, {team: {"mayReadItems"}})
        email = self.email(self.archive)
        since = self.state("Email")
        self.group("team", [self.bob])
        self.assertEqual(self.changes("Email", since)["created"], [email["id"]])

    def test_joining_and_leaving_nested_group(self) -> None:
        """
        bob joining or leaving a group that is a member of the grantee
        group (by jmapd-admin group add-member / remove-member) brings the
        Mailbox, its Emails and Threads into or out of his sight: his
        /changes and /queryChanges report them created (the Mailbox
        updated), then destroyed or removed, as when he joins or leaves the
        grantee group itself.
        """
        from jmapd import admin

        def members(group: str, add: bool) -> None:
            self.env.database.run_sync(admin._change_members, group, ["bob"], add, write=True)

        self.share(self.inbox, {self.bob: {"mayReadItems"}})
        inner = self.group("inner", [])
        outer = self.group("outer", [inner])
        self.share(self.archive, {outer: {"mayReadItems"}})
        email = self.email(self.archive)
        types = ("Mailbox", "Email", "Thread")
        for group in ("outer", "inner"):
            since = {t: self.state(t) for t in types}
            query_since = self.query_state("Email")
            members(group, True)
            # Recorded as updated in alice's changelog (its myRights
            # changed), so updated rather than created.
            mailbox_changes = self.changes("Mailbox", since["Mailbox"])
            self.assertEqual(mailbox_changes["created"] + mailbox_changes["updated"], [self.archive], group)
            self.assertEqual(self.changes("Email", since["Email"])["created"], [email["id"]], group)
            self.assertEqual(self.changes("Thread", since["Thread"])["created"], [email["threadId"]], group)
            added = self.ok("bob", "Email/queryChanges", {"sinceQueryState": query_since})["added"]
            self.assertEqual([a["id"] for a in added], [email["id"]], group)
            since = {t: self.state(t) for t in types}
            query_since = self.query_state("Email")
            members(group, False)
            self.assertEqual(self.changes("Mailbox", since["Mailbox"])["destroyed"], [self.archive], group)
            self.assertEqual(self.changes("Email", since["Email"])["destroyed"], [email["id"]], group)
            self.assertEqual(self.changes("Thread", since["Thread"])["destroyed"], [email["threadId"]], group)
            removed = self.ok("bob", "Email/queryChanges", {"sinceQueryState": query_since})["removed"]
            self.assertEqual(removed, [email["id"]], group)

    def test_joining_group_in_cycle(self) -> None:
        """
        Nothing refuses a cycle of groups (inner in outer, outer in inner):
        bob joining one of them still brings what is shared with the other
        into his sight, and the walk up the groups ends.
        """
        self.share(self.inbox, {self.bob: {"mayReadItems"}})
        inner = self.group("inner", [])
        outer = self.group("outer", [inner])
        self.group("inner", [outer])
        self.share(self.archive, {outer: {"mayReadItems"}})
        email = self.email(self.archive)
        since = self.state("Email")
        self.group("inner", [self.bob])
        self.assertEqual(self.changes("Email", since)["created"], [email["id"]])


    def test_removed_group_leaves_its_groups(self) -> None:
        """
        A removed group is no longer a member of the groups it was in: the
        other group's members are only those left (and bob, who had the
        outer group's grant only through the removed one, loses it).
        """
        self.email(self.archive)
        inner = self.group("inner", [self.bob])
        outer = self.group("outer", [inner, self.carol])
        self.share(self.archive, {outer: {"mayReadItems"}})
        self.env.database.run_sync(principals.remove_group, "inner", write=True)
        self.assertEqual(self.env.database.run_sync(principals.members_of, outer), [self.carol])
        response_name, error = self.call("bob", "Mailbox/get", {"ids": [self.archive]})
        self.assertEqual((response_name, error["type"]), ("error", "accountNotFound"))



class CrossAccountTests(SharedAccountCase):
    """
    Email/copy and Blob/copy between accounts honour both sides.
    """

    def carol_shares(self, rights: set[str]) -> dict[str, Any]:
        """
        carol's Inbox, with one Email, shared with bob.
        """
        inbox = self.role("inbox", "carol")
        created = self.ok("carol", "Email/set", {"accountId": self.carol, "create": {"e": {
            "mailboxIds": {inbox: True}, "subject": "Carol's",
            "bodyStructure": {"type": "text/plain", "partId": "1"}, "bodyValues": {"1": {"value": "x"}}}}})
        self.ok("carol", "Mailbox/set", {"accountId": self.carol, "update": {inbox: {
            "shareWith": {self.bob: dict.fromkeys(rights, True)}}}})
        return created["created"]["e"]  # type: ignore[no-any-return]

    def copy(self, email_id: str) -> dict[str, Any]:
        return self.ok("bob", "Email/copy", {"fromAccountId": self.carol, "accountId": self.alice, "create": {
            "c": {"id": email_id, "mailboxIds": {self.inbox: True}}}})

    def test_copy_between_two_shared_accounts(self) -> None:
        """
        bob may copy from carol's account (mayReadItems there) into
        alice's (mayAddItems there).
        """
        email = self.carol_shares({"mayReadItems"})
        self.share(self.inbox, {self.bob: {"mayReadItems", "mayAddItems"}})
        self.assertIn("c", self.copy(email["id"])["created"])

    def test_copy_needs_read_on_source(self) -> None:
        """
        Without mayReadItems on the source the Email is notFound, even
        with mayAddItems on the target.
        """
        email = self.carol_shares({"mayAddItems"})
        self.share(self.inbox, {self.bob: {"mayReadItems", "mayAddItems"}})
        self.assertEqual(self.copy(email["id"])["notCreated"]["c"]["type"], "notFound")

    def test_copy_needs_add_on_target(self) -> None:
        """
        Without mayAddItems on the target the copy is forbidden, even with
        mayReadItems on the source.
        """
        email = self.carol_shares({"mayReadItems"})
        self.share(self.inbox, {self.bob: {"mayReadItems"}})
        self.assertEqual(self.copy(email["id"])["notCreated"]["c"]["type"], "forbidden")

    def test_copy_from_unshared_account(self) -> None:
        """
        From an account that shares nothing with bob, Email/copy and
        Blob/copy answer fromAccountNotFound (RFC 8620 sections 5.4, 6.3).
        """
        email = self.email(self.inbox)
        response_name, error = self.call("bob", "Email/copy", {"fromAccountId": self.alice, "accountId": self.bob,
                                                                "create": {"c": {"id": email["id"]}}})
        self.assertEqual((response_name, error["type"]), ("error", "fromAccountNotFound"))
        response_name, error = self.call("bob", "Blob/copy", {"fromAccountId": self.alice, "accountId": self.bob,
                                                               "blobIds": [email["blobId"]]})
        self.assertEqual((response_name, error["type"]), ("error", "fromAccountNotFound"))


class CapabilityTests(SharedAccountCase):
    """
    The account capabilities of a shared account say what the grantee may
    do there.
    """

    def account_object(self, who: str, account_id: str) -> dict[str, Any]:
        got = self.ok(who, "Principal/get", {"accountId": self.users[who].account_id, "ids": [account_id]})
        return got["list"][0]["accounts"][account_id]  # type: ignore[no-any-return]

    def test_shared_account_capabilities(self) -> None:
        """
        In alice's account bob has the Mail and Principals capabilities
        but not submission; mayCreateTopLevelMailbox is false there (no
        MailboxRights grants the top level) and true in his own account;
        the account is neither personal nor read-only.
        """
        self.share(self.inbox, {self.bob: set(RIGHTS)})
        shared = self.account_object("bob", self.alice)
        self.assertEqual((shared["isPersonal"], shared["isReadOnly"]), (False, False))
        self.assertFalse(shared["accountCapabilities"][MAIL]["mayCreateTopLevelMailbox"])
        self.assertNotIn("urn:ietf:params:jmap:submission", shared["accountCapabilities"])
        own = self.account_object("bob", self.bob)
        self.assertTrue(own["accountCapabilities"][MAIL]["mayCreateTopLevelMailbox"])
        self.assertTrue(self.account_object("alice", self.alice)["accountCapabilities"][MAIL][
            "mayCreateTopLevelMailbox"])

    def test_top_level_create_forbidden(self) -> None:
        """
        With every right on alice's Inbox, bob still may not create a
        top-level Mailbox in her account.
        """
        self.share(self.inbox, {self.bob: set(RIGHTS)})
        result = self.ok("bob", "Mailbox/set", {"create": {"m": {"name": "Top", "parentId": None}}})
        self.assertEqual(result["notCreated"]["m"]["type"], "forbidden")


class PrincipalChangesTests(SharedAccountCase):
    """
    Principal/changes and Principal/queryChanges: a Principal's
    C{accounts} is what the user may use of it, so a grant that opens or
    closes an account is a change for the grantee, and for no one else.
    """

    def principal_changes(self, who: str, since: str) -> dict[str, Any]:
        return self.ok(who, "Principal/changes", {"accountId": self.users[who].account_id, "sinceState": since})

    def test_grant_changes_grantee_view_only(self) -> None:
        """
        When alice shares with bob, his Principal/changes reports alice's
        Principal updated (its accounts now list her account); carol's
        Principal state does not move.
        """
        bob_since = self.ok("bob", "Principal/get", {"accountId": self.bob, "ids": []})["state"]
        carol_since = self.ok("carol", "Principal/get", {"accountId": self.carol, "ids": []})["state"]
        self.share(self.inbox, {self.bob: {"mayReadItems"}})
        changes = self.principal_changes("bob", bob_since)
        self.assertIn(self.alice, changes["updated"])
        self.assertNotEqual(changes["newState"], bob_since)
        got = self.ok("bob", "Principal/get", {"accountId": self.bob, "ids": [self.alice]})
        self.assertEqual(list(got["list"][0]["accounts"]), [self.alice])
        carol = self.principal_changes("carol", carol_since)
        self.assertEqual((carol["newState"], carol["updated"]), (carol_since, []))
        # And back: revoking is a change for bob again.
        since = changes["newState"]
        self.share(self.inbox, None)
        self.assertIn(self.alice, self.principal_changes("bob", since)["updated"])
        got = self.ok("bob", "Principal/get", {"accountId": self.bob, "ids": [self.alice]})
        self.assertIsNone(got["list"][0]["accounts"])

    def test_directory_change(self) -> None:
        """
        A Principal's own change (carol's description) is reported to
        everyone as updated, and nothing else is.
        """
        since = self.ok("bob", "Principal/get", {"accountId": self.bob, "ids": []})["state"]
        result = self.ok("carol", "Principal/set", {"accountId": self.carol, "update": {
            self.carol: {"description": "On leave"}}})
        self.assertIn(self.carol, result["updated"])
        changes = self.principal_changes("bob", since)
        self.assertEqual((changes["created"], changes["updated"], changes["destroyed"]), ([], [self.carol], []))

    def test_query_changes_follow_grants(self) -> None:
        """
        Principal/queryChanges with an accountIds filter adds alice once
        she shares with bob, and removes her when she stops.
        """
        query = {"accountId": self.bob, "filter": {"accountIds": [self.alice]}}
        before = self.ok("bob", "Principal/query", query)
        self.assertEqual(before["ids"], [])
        self.share(self.inbox, {self.bob: {"mayReadItems"}})
        changes = self.ok("bob", "Principal/queryChanges", {**query, "sinceQueryState": before["queryState"]})
        self.assertEqual(changes["added"], [{"id": self.alice, "index": 0}])
        self.share(self.inbox, None)
        again = self.ok("bob", "Principal/queryChanges", {**query, "sinceQueryState": changes["newQueryState"]})
        self.assertIn(self.alice, again["removed"])
        self.assertEqual(again["added"], [])

    def test_unknown_state(self) -> None:
        """
        A state this server never gave out gets cannotCalculateChanges.
        """
        for since in ("x", "99999-abc"):
            response_name, error = self.call("bob", "Principal/changes", {"accountId": self.bob, "sinceState": since})
            self.assertEqual((response_name, error["type"]), ("error", "cannotCalculateChanges"), since)


class PrincipalTests(SharedAccountCase):
    """
    Principal/query (RFC 9670 section 2.4), a standard /query, and
    Principal/set (section 2.3).
    """

    def test_sort_collation(self) -> None:
        """
        A comparator's collation is one of the Core capability's
        collationAlgorithms, used as given; one the server does not
        recognise is unsupportedSort (RFC 8620 section 5.5), and a
        non-Boolean isAscending is invalidArguments.
        """
        everyone = [self.alice, self.bob, self.carol]
        for collation in ("i;ascii-casemap", "i;unicode-casemap"):
            result = self.ok("bob", "Principal/query", {"accountId": self.bob, "sort": [
                {"property": "name", "collation": collation, "isAscending": False}]})
            self.assertEqual(result["ids"], everyone[::-1], collation)
        for comparator, error in (
            ({"property": "name", "collation": "i;octet-unknown"}, "unsupportedSort"),
            ({"property": "name", "isAscending": "no"}, "invalidArguments"),
        ):
            name, result = self.call("bob", "Principal/query", {"accountId": self.bob, "sort": [comparator]})
            self.assertEqual((name, result.get("type")), ("error", error), comparator)

    def test_principal_change_logged(self) -> None:
        """
        A user's change of their own Principal's description or timeZone
        is logged with the Principal and the old and new values, as the
        audit trail RFC 9670 section 7.1 asks for (a description can be
        used to pass for someone else).
        """
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        result = self.ok("bob", "Principal/set", {"accountId": self.bob, "update": {
            self.bob: {"description": "Head of payroll", "timeZone": "Europe/Paris"}}})
        self.assertIn(self.bob, result["updated"], result)
        [event] = [e for e in events if e.get("principal_id") == self.bob]
        self.assertEqual(event["old"], {"description": None, "timeZone": None})
        self.assertEqual(event["new"], {"description": "Head of payroll", "timeZone": "Europe/Paris"})
        self.assertIn("Head of payroll", formatEvent(event))


class ShareNotificationTests(SharedAccountCase):
    """
    ShareNotifications (RFC 9670 section 3): made by the server when a
    user's rights on an object change, in the user's own account.
    """

    def notifications(self, who: str = "bob") -> list[dict[str, Any]]:
        got = self.ok(who, "ShareNotification/get", {"accountId": self.users[who].account_id, "ids": None})
        return got["list"]  # type: ignore[no-any-return]

    def test_update_forbidden(self) -> None:
        """
        Any update of a ShareNotification is forbidden (RFC 9670 section
        3.5), whatever the patch: an empty one, one that changes a
        property and one that repeats a value; an unknown id is notFound.
        """
        self.share(self.inbox, {self.bob: {"mayReadItems"}})
        [notification] = self.notifications()
        nid = notification["id"]
        for patch in ({}, {"name": "Other"}, {"objectType": "Mailbox"}):
            result = self.ok("bob", "ShareNotification/set", {"accountId": self.bob, "update": {nid: patch}})
            self.assertEqual(result["notUpdated"][nid]["type"], "forbidden", patch)
        result = self.ok("bob", "ShareNotification/set", {"accountId": self.bob, "update": {"nope": {}}})
        self.assertEqual(result["notUpdated"]["nope"]["type"], "notFound")
        result = self.ok("bob", "ShareNotification/set", {"accountId": self.bob, "create": {"n": {}}})
        self.assertEqual(result["notCreated"]["n"]["type"], "forbidden")

    def test_no_notification_for_group_grants(self) -> None:
        """
        A grant to a group, its change and its revocation make no
        ShareNotification for the group's members (RFC 9670 section 3:
        SHOULD NOT for permission changes to a group principal, even if
        the user is in the group); a grant to bob himself on the same
        Mailbox still makes one for him, with his rights before and after
        (the group's included), and none for carol.
        """
        team = self.env.database.run_sync(principals.add_group, "team", [self.bob, self.carol], write=True)
        self.share(self.inbox, {team: {"mayReadItems"}})
        self.share(self.inbox, {team: {"mayReadItems", "mayAddItems"}})
        self.share(self.inbox, None)
        self.assertEqual((self.notifications("bob"), self.notifications("carol")), ([], []))
        self.share(self.inbox, {team: {"mayReadItems"}})
        self.share(self.inbox, {team: {"mayReadItems"}, self.bob: {"maySetSeen"}})
        [notification] = self.notifications("bob")
        self.assertEqual(notification["oldRights"], {r: r == "mayReadItems" for r in RIGHTS})
        self.assertEqual(notification["newRights"], {r: r in ("mayReadItems", "maySetSeen") for r in RIGHTS})
        self.assertEqual(self.notifications("carol"), [])

    def test_subscribing_destroys_notifications(self) -> None:
        """
        When bob subscribes to a Mailbox shared with him, his
        notifications about it are destroyed (RFC 9670 section 3.1: the
        server SHOULD), and ShareNotification/changes reports them
        destroyed; those about another Mailbox stay, and unsubscribing
        and changing nothing else keeps them.
        """
        self.share(self.inbox, {self.bob: {"mayReadItems"}})
        self.share(self.archive, {self.bob: {"mayReadItems"}})
        notes = {n["objectId"]: n["id"] for n in self.notifications()}
        since = self.ok("bob", "ShareNotification/get", {"accountId": self.bob, "ids": []})["state"]
        result = self.ok("bob", "Mailbox/set", {"update": {self.inbox: {"isSubscribed": True}}})
        self.assertIn(self.inbox, result["updated"], result)
        self.assertEqual([n["objectId"] for n in self.notifications()], [self.archive])
        changes = self.ok("bob", "ShareNotification/changes", {"accountId": self.bob, "sinceState": since})
        self.assertEqual(changes["destroyed"], [notes[self.inbox]])
        self.ok("bob", "Mailbox/set", {"update": {self.archive: {"isSubscribed": False}}})
        self.assertEqual([n["objectId"] for n in self.notifications()], [self.archive])

    def test_owner_notifications_not_named_to_grantee(self) -> None:
        """
        In alice's account, where bob has no ShareNotifications, his
        ShareNotification/get, /changes and /queryChanges show nothing:
        not the ids of alice's own notifications (carol shared with her),
        nor, through the state, when she got one.
        """
        self.share(self.inbox, {self.bob: {"mayReadItems"}})
        before = self.ok("bob", "ShareNotification/get", {"ids": []})["state"]
        query_state = self.ok("bob", "ShareNotification/query", {})["queryState"]
        carol_inbox = self.role("inbox", "carol")
        result = self.ok("carol", "Mailbox/set", {"accountId": self.carol, "update": {
            carol_inbox: {"shareWith": {self.alice: {"mayReadItems": True}}}}})
        self.assertIn(carol_inbox, result["updated"], result)
        [mine] = self.notifications("alice")
        got = self.ok("bob", "ShareNotification/get", {"ids": None})
        self.assertEqual((got["list"], got["state"]), ([], before))
        for since in ("0", before):
            changes = self.ok("bob", "ShareNotification/changes", {"sinceState": since})
            self.assertNotIn(mine["id"], self.named(changes))
            self.assertEqual(changes["newState"], before)
        self.ok("alice", "ShareNotification/set", {"destroy": [mine["id"]]})
        changes = self.ok("bob", "ShareNotification/queryChanges", {"sinceQueryState": query_state})
        self.assertEqual((changes["removed"], changes["added"]), ([], []))
        self.assertEqual(changes["newQueryState"], query_state)

    def test_query_filters(self) -> None:
        """
        ShareNotification/query is a standard /query (RFC 8620 section
        5.5): FilterOperators combine its FilterConditions; after and
        before take any UTCDate, one with a fraction of a second too
        (RFC 8620 section 1.4); sorting by created takes a Boolean
        isAscending, and another value is invalidArguments.
        """
        self.share(self.inbox, {self.bob: {"mayReadItems"}})
        self.env.clock.advance(60)
        carol_inbox = self.role("inbox", "carol")
        self.ok("carol", "Mailbox/set", {"accountId": self.carol, "update": {
            carol_inbox: {"shareWith": {self.bob: {"mayReadItems": True}}}}})
        by_account = {n["objectAccountId"]: n["id"] for n in self.notifications()}
        created = {n["objectAccountId"]: n["created"] for n in self.notifications()}

        def query(**arguments: Any) -> list[str]:
            name, result = self.call("bob", "ShareNotification/query", {"accountId": self.bob, **arguments})
            self.assertEqual(name, "ShareNotification/query", result)
            return result["ids"]  # type: ignore[no-any-return]

        both = [by_account[self.alice], by_account[self.carol]]
        either = {"operator": "OR", "conditions": [
            {"objectAccountId": self.alice}, {"objectAccountId": self.carol}]}
        self.assertEqual(query(filter=either), both)
        self.assertEqual(query(filter={"operator": "NOT", "conditions": [{"objectAccountId": self.alice}]}),
                         [by_account[self.carol]])
        self.assertEqual(query(filter={"operator": "AND", "conditions": [
            {"objectType": "Mailbox"}, {"before": created[self.carol]}]}), [by_account[self.alice]])
        fraction = created[self.alice].replace("Z", ".5Z")
        self.assertEqual(query(filter={"after": fraction}), [by_account[self.carol]])
        self.assertEqual(query(sort=[{"property": "created", "isAscending": False}]), both[::-1])
        name, error = self.call("bob", "ShareNotification/query", {
            "accountId": self.bob, "sort": [{"property": "created", "isAscending": "no"}]})
        self.assertEqual((name, error["type"]), ("error", "invalidArguments"))


class CacheEquivalenceTests(SharedAccountCase):
    """
    The sharings and acl caches change nothing: a scripted sequence of
    grants, revocations, group changes and reads gives the same responses
    with the caches on (the defaults) as with them off.
    """

    def test_same_responses(self) -> None:
        """
        After each step of the script, every read bob makes answers the
        same through an environment with the caches on (kept across the
        steps, so a stale entry would show) as through one with
        cache-tti-sharings and cache-tti-acl 0 on the same database.
        """
        cached = self.env
        uncached = attrs.evolve(
            cached, config=default_config(db_path=cached.config.db_path, cache_tti_sharings=0, cache_tti_acl=0),
            caches={},
        )
        self.assertGreater(cached.config.cache_tti_acl, 0)
        self.assertGreater(cached.config.cache_tti_sharings, 0)
        email = self.email(self.inbox)
        archived = self.email(self.archive)
        reads = [
            ["Mailbox/get", {"accountId": self.alice}, "m"],
            ["Email/query", {"accountId": self.alice, "calculateTotal": True}, "q"],
            ["Email/get", {"accountId": self.alice, "ids": [email["id"], archived["id"]],
                           "properties": ["mailboxIds", "keywords"]}, "e"],
            ["Thread/get", {"accountId": self.alice, "ids": [email["threadId"], archived["threadId"]]}, "t"],
            ["Principal/get", {"accountId": self.bob, "ids": [self.alice]}, "p"],
        ]
        group = []

        def join() -> None:
            group.append(self.env.database.run_sync(principals.add_group, "team", [self.bob], write=True))

        script = [
            lambda: None,
            lambda: self.share(self.inbox, {self.bob: {"mayReadItems"}}),
            lambda: self.share(self.archive, {self.bob: {"mayReadItems", "maySetSeen"}}),
            lambda: self.share(self.archive, None),
            join,
            lambda: self.share(self.archive, {group[0]: {"mayReadItems"}}),
            lambda: self.env.database.run_sync(principals.remove_group_members, "team", [self.bob], write=True),
            lambda: self.share(self.inbox, None),
        ]
        for step, change in enumerate(script):
            change()
            results = []
            for env in (cached, uncached, cached):
                results.append(run_request(env, self.users["bob"], reads, USING)["methodResponses"])
            self.assertEqual(results[0], results[1], step)
            self.assertEqual(results[1], results[2], step)


class DownloadTests(ServerTestCase):
    """
    Over HTTP: a blob of a shared account downloads only when an Email bob
    may read is that message (or the part of one).
    """

    def test_download(self) -> Any:
        """
        The message of a readable Email, and a body part of it, download;
        the message of an Email in a Mailbox bob may not read answers 404,
        as a blob of an account that does not exist for him does.
        """
        async def run() -> None:
            server = await self.start_server(**pg.config_changes(self))
            alice = server.add_account("alice")
            bob_id = server.add_account("bob")
            server.add_account("carol")
            inbox = server.env.database.run_sync(mailboxes.find_by_role, alice, "inbox")
            archive = server.env.database.run_sync(mailboxes.find_by_role, alice, "archive")

            async def create(mailbox_id: str) -> dict[str, Any]:
                response = await server.api([["Email/set", {"accountId": alice, "create": {"e": {
                    "mailboxIds": {mailbox_id: True}, "subject": "s",
                    "bodyStructure": {"type": "text/plain", "partId": "1"},
                    "bodyValues": {"1": {"value": "hello"}}}}}, "c"]], using=list(USING))
                return response["methodResponses"][0][1]["created"]["e"]  # type: ignore[no-any-return]

            readable = await create(inbox)
            private = await create(archive)
            response = await server.api([["Mailbox/set", {"accountId": alice, "update": {inbox: {
                "shareWith": {bob_id: {"mayReadItems": True}}}}}, "c"]], using=list(USING))
            self.assertIn(inbox, response["methodResponses"][0][1]["updated"])
            got = await server.api([["Email/get", {"accountId": alice, "ids": [readable["id"]],
                                                   "properties": ["textBody"]}, "g"]], using=list(USING), auth="bob")
            part_blob = got["methodResponses"][0][1]["list"][0]["textBody"][0]["blobId"]
            for blob_id, code, who in (
                (readable["blobId"], 200, "bob"),
                (part_blob, 200, "bob"),
                (private["blobId"], 404, "bob"),
                (readable["blobId"], 404, "carol"),
            ):
                answer, body = await server.request("GET", f"/jmap/download/{alice}/{blob_id}/x", auth=who)
                self.assertEqual(answer.code, code, (blob_id, who))
                if code == 200:
                    self.assertIn(b"hello", body)

        return ensureDeferred(run())


# The matrix runs on SQLite only (a fresh PostgreSQL database per test would
# make it minutes); what the engines do differently (search, the sight log,
# group changes) runs on both through these.
pg.add_postgresql_variants(globals(), DropBoxTests, SightTests, GroupTests, PrincipalChangesTests, CacheEquivalenceTests)
