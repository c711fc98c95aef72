"""
Tests for L{jmapd.mail.mailbox}: Mailbox/get, Mailbox/changes and
Mailbox/set through the JMAP engine on a real SQLite database, and the
Mail capability in the Session.
"""

from __future__ import annotations

from typing import Any

import orjson
from twisted.internet import task
from twisted.internet.defer import ensureDeferred
from twisted.trial.unittest import SynchronousTestCase

from jmapd import mail
from jmapd.config import default_config
from jmapd.environment import Environment
from jmapd.mail import MAIL, mailbox
from jmapd.protocol.engine import CORE, Principal, execute
from jmapd.protocol.request import parse_request
from jmapd.protocol.session import build_session
from jmapd.service import build_registry
from jmapd.storage import accounts, changelog, mailboxes
from tests import pg
from tests.storage.test_database import make_database
from tests.support import ServerTestCase

COUNTS = ["totalEmails", "unreadEmails", "totalThreads", "unreadThreads"]


def mail_registry() -> Any:
    registry = build_registry()
    mail.register(registry)
    return registry


class MailboxTestCase(SynchronousTestCase):
    """
    An account "alice" with the default Mailboxes, and L{call} to run
    method calls through the engine.
    """

    def setUp(self) -> None:
        self.registry = mail_registry()
        self.database = make_database(self)
        self.env = Environment(
            config=default_config(db_path=self.mktemp()),
            registry=self.registry,
            database=self.database,
            blobs=None,
            clock=task.Clock(),
        )
        self.account = self.database.run_sync(accounts.add_account, "alice", None, write=True).id
        self.principal = Principal(self.account, "alice")
        self.roles = {
            role: self.database.run_sync(mailboxes.find_by_role, self.account, role)
            for role in ("inbox", "drafts", "sent", "archive", "junk", "trash")
        }

    def configure(self, **changes: Any) -> None:
        self.env.config = default_config(db_path=self.mktemp(), **changes)

    def request(self, calls: list[Any], created_ids: dict[str, str] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"using": [CORE, MAIL], "methodCalls": calls}
        if created_ids is not None:
            body["createdIds"] = created_ids
        request = parse_request(orjson.dumps(body), self.registry.capabilities, 16)
        return self.database.run_sync(
            lambda txn: execute(txn, self.env, self.principal, request, "s"), write=True
        )

    def call(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """
        Run one method call with accountId set and return its response
        arguments (failing on an error response).
        """
        response = self.request([[name, {"accountId": self.account, **arguments}, "c"]])
        [[response_name, result, _]] = response["methodResponses"]
        self.assertEqual(response_name, name, result)
        return result  # type: ignore[no-any-return]

    def error(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        response = self.request([[name, {"accountId": self.account, **arguments}, "c"]])
        [[response_name, result, _]] = response["methodResponses"]
        self.assertEqual(response_name, "error", result)
        return result  # type: ignore[no-any-return]

    def get(self, ids: list[str] | None = None, properties: list[str] | None = None) -> dict[str, Any]:
        return {m["id"]: m for m in self.call("Mailbox/get", {"ids": ids, "properties": properties})["list"]}

    def set(self, **arguments: Any) -> dict[str, Any]:
        return self.call("Mailbox/set", arguments)

    def create(self, **properties: Any) -> str:
        result = self.set(create={"new": properties})
        self.assertIsNone(result["notCreated"], result["notCreated"])
        return str(result["created"]["new"]["id"])

    def state(self) -> str:
        return str(self.call("Mailbox/get", {"ids": []})["state"])

    def assertSetError(self, result: dict[str, Any], kind: str, key: str, type: str,
                       properties: list[str] | None = None) -> None:
        errors = result[kind] or {}
        self.assertIn(key, errors, result)
        self.assertEqual(errors[key]["type"], type, errors[key])
        if properties is not None:
            self.assertEqual(errors[key]["properties"], properties, errors[key])


class GetTests(MailboxTestCase):
    def test_get_all(self) -> None:
        """
        Mailbox/get with ids null returns every Mailbox with every property
        of RFC 8621 section 2.
        """
        found = self.get()
        self.assertEqual(set(found), set(self.roles.values()))
        inbox = found[self.roles["inbox"]]
        self.assertEqual(
            inbox,
            {
                "id": self.roles["inbox"],
                "name": "Inbox",
                "parentId": None,
                "role": "inbox",
                "sortOrder": 10,
                "totalEmails": 0,
                "unreadEmails": 0,
                "totalThreads": 0,
                "unreadThreads": 0,
                "myRights": dict.fromkeys(mailbox.RIGHTS, True),
                "isSubscribed": True,
                "shareWith": None,
            },
        )

    def test_get_by_ids(self) -> None:
        """
        Mailbox/get with ids returns those Mailboxes and lists unknown ids
        in notFound.
        """
        result = self.call("Mailbox/get", {"ids": [self.roles["sent"], "mnothere"]})
        self.assertEqual([m["id"] for m in result["list"]], [self.roles["sent"]])
        self.assertEqual(result["notFound"], ["mnothere"])

    def test_get_properties(self) -> None:
        """
        Mailbox/get with properties returns only those (and the id).
        """
        found = self.get([self.roles["inbox"]], ["name", "unreadEmails"])
        self.assertEqual(found[self.roles["inbox"]], {"id": self.roles["inbox"], "name": "Inbox", "unreadEmails": 0})

    def test_get_unknown_property(self) -> None:
        """
        Asking for a property Mailbox does not have is invalidArguments.
        """
        self.assertEqual(self.error("Mailbox/get", {"properties": ["colour"]})["type"], "invalidArguments")

    def test_counts_shown(self) -> None:
        """
        The counts kept by adjust_counts are what Mailbox/get returns.
        """
        inbox = self.roles["inbox"]
        self.database.run_sync(mailboxes.adjust_counts, self.account, {inbox: (7, 3, 5, 2)}, write=True)
        found = self.get([inbox], COUNTS)[inbox]
        self.assertEqual([found[p] for p in COUNTS], [7, 3, 5, 2])

    def test_other_account_not_found(self) -> None:
        """
        Another user's account is accountNotFound.
        """
        other = self.database.run_sync(accounts.add_account, "bob", None, write=True).id
        response = self.request([["Mailbox/get", {"accountId": other}, "c"]])
        self.assertEqual(response["methodResponses"][0][1]["type"], "accountNotFound")

    def test_needs_mail_capability(self) -> None:
        """
        Mailbox methods are unknownMethod unless the request uses the Mail
        capability.
        """
        request = parse_request(
            orjson.dumps({"using": [CORE], "methodCalls": [["Mailbox/get", {"accountId": self.account}, "c"]]}),
            self.registry.capabilities,
            16,
        )
        response = self.database.run_sync(lambda txn: execute(txn, self.env, self.principal, request, "s"))
        self.assertEqual(response["methodResponses"][0][1]["type"], "unknownMethod")


class RightsTests(MailboxTestCase):
    def test_owner_has_every_right(self) -> None:
        """
        The owner of an account has all nine MailboxRights on every
        Mailbox, and may create top-level Mailboxes.
        """
        for found in self.get().values():
            self.assertEqual(found["myRights"], dict.fromkeys(mailbox.RIGHTS, True))
        self.assertEqual(len(mailbox.RIGHTS), 9)

    def read_only(self) -> None:
        """
        Give alice only mayReadItems on her Mailboxes (as a Mailbox shared
        read-only will), keeping the account writable for the method.
        """
        self.patch(
            mailbox, "my_rights", lambda ctx, account_id, box: {r: r == "mayReadItems" for r in mailbox.RIGHTS}
        )

    def test_rights_of_read_only_shared_account(self) -> None:
        """
        In another account that shares one Mailbox with the user
        read-only, Mailbox/get shows that Mailbox alone, and its myRights
        allow reading only.
        """
        shared = self.database.run_sync(accounts.add_account, "shared", None, write=True).id
        inbox = self.database.run_sync(mailboxes.find_by_role, shared, "inbox")
        self.database.run_sync(
            mailboxes.set_share_with, shared, inbox, {self.account: {"mayReadItems"}}, write=True
        )
        response = self.request([["Mailbox/get", {"accountId": shared}, "c"]])
        listed = response["methodResponses"][0][1]["list"]
        self.assertEqual([m["id"] for m in listed], [inbox])
        self.assertEqual({k for k, v in listed[0]["myRights"].items() if v}, {"mayReadItems"})

    def test_forbidden(self) -> None:
        """
        Without mayCreateChild, mayRename or mayDelete, creating a child
        (or a top-level Mailbox), renaming or moving, and destroying are
        forbidden; changing isSubscribed needs no right.
        """
        self.read_only()
        inbox = self.roles["inbox"]
        result = self.set(
            create={"top": {"name": "Top"}, "child": {"name": "Child", "parentId": inbox}},
            update={inbox: {"name": "Renamed"}, self.roles["sent"]: {"parentId": inbox},
                    self.roles["junk"]: {"isSubscribed": False}},
            destroy=[self.roles["trash"]],
        )
        self.assertSetError(result, "notCreated", "top", "forbidden")
        self.assertSetError(result, "notCreated", "child", "forbidden")
        self.assertSetError(result, "notUpdated", inbox, "forbidden")
        self.assertSetError(result, "notUpdated", self.roles["sent"], "forbidden")
        self.assertSetError(result, "notDestroyed", self.roles["trash"], "forbidden")
        self.assertEqual(result["updated"], {self.roles["junk"]: None})
        self.assertEqual(self.get()[inbox]["name"], "Inbox")


class CreateTests(MailboxTestCase):
    def test_create(self) -> None:
        """
        A created Mailbox gets an id, zero counts, full rights and the
        defaults for what the client omitted, all in the created entry;
        Mailbox/get then shows it.
        """
        result = self.set(create={"a": {"name": "Projects"}})
        created = result["created"]["a"]
        self.assertEqual(
            {k: v for k, v in created.items() if k != "id"},
            {
                "parentId": None,
                "role": None,
                "sortOrder": 0,
                "isSubscribed": True,
                "totalEmails": 0,
                "unreadEmails": 0,
                "totalThreads": 0,
                "unreadThreads": 0,
                "myRights": dict.fromkeys(mailbox.RIGHTS, True),
                "shareWith": None,
            },
        )
        stored = self.get([created["id"]])[created["id"]]
        self.assertEqual(stored["name"], "Projects")
        self.assertNotEqual(result["oldState"], result["newState"])

    def test_create_with_properties(self) -> None:
        """
        Properties the client gives are stored and not repeated in the
        created entry.
        """
        result = self.set(create={"a": {"name": "Flag", "role": "flagged", "sortOrder": 7,
                                        "isSubscribed": False, "parentId": self.roles["inbox"]}})
        created = result["created"]["a"]
        self.assertNotIn("role", created)
        self.assertNotIn("sortOrder", created)
        stored = self.get([created["id"]])[created["id"]]
        self.assertEqual(
            (stored["role"], stored["sortOrder"], stored["isSubscribed"], stored["parentId"]),
            ("flagged", 7, False, self.roles["inbox"]),
        )

    def test_name_required(self) -> None:
        """
        A Mailbox without a name, or with an empty or non-String name, is
        invalidProperties naming 'name'.
        """
        result = self.set(create={"a": {}, "b": {"name": ""}, "c": {"name": 5}, "d": {"name": "x\x07"}})
        for key in "abcd":
            self.assertSetError(result, "notCreated", key, "invalidProperties", ["name"])

    def test_name_too_long(self) -> None:
        """
        A name longer than mailbox-name-max-len octets (maxSizeMailboxName,
        counted in UTF-8) is invalidProperties; one at the limit is fine.
        """
        self.configure(mailbox_name_max_len=100)
        result = self.set(
            create={"ok": {"name": "a" * 100}, "long": {"name": "a" * 101}, "wide": {"name": "é" * 51}}
        )
        self.assertIn("ok", result["created"])
        self.assertSetError(result, "notCreated", "long", "invalidProperties", ["name"])
        self.assertSetError(result, "notCreated", "wide", "invalidProperties", ["name"])

    def test_name_normalised(self) -> None:
        """
        A name is stored in Unicode NFC (Net-Unicode) and the created entry
        shows the stored name when it differs from what was sent.
        """
        result = self.set(create={"a": {"name": "Cafe\u0301"}, "b": {"name": "Plain"}})
        self.assertEqual(result["created"]["a"]["name"], "Caf\u00e9")
        self.assertNotIn("name", result["created"]["b"])

    def test_duplicate_sibling_name(self) -> None:
        """
        A name a sibling has already is invalidProperties; the same name
        under another parent, or differing in case, is fine.
        """
        result = self.set(
            create={
                "dup": {"name": "Inbox"},
                "child": {"name": "Inbox", "parentId": self.roles["inbox"]},
                "case": {"name": "INBOX"},
            }
        )
        self.assertSetError(result, "notCreated", "dup", "invalidProperties", ["name"])
        self.assertEqual(set(result["created"]), {"child", "case"})

    def test_duplicate_in_same_call(self) -> None:
        """
        Two creations with the same name under the same parent in one call:
        the first is created, the second rejected.
        """
        result = self.set(create={"one": {"name": "Same"}, "two": {"name": "Same"}})
        self.assertEqual(set(result["created"]), {"one"})
        self.assertSetError(result, "notCreated", "two", "invalidProperties", ["name"])

    def test_unknown_role(self) -> None:
        """
        A role that is not a special-use mailbox attribute (lower-case) is
        invalidProperties naming 'role'.
        """
        result = self.set(create={"a": {"name": "A", "role": "spam"}, "b": {"name": "B", "role": "Flagged"},
                                  "c": {"name": "C", "role": "noselect"}, "d": {"name": "D", "role": 1}})
        for key in "abcd":
            self.assertSetError(result, "notCreated", key, "invalidProperties", ["role"])

    def test_known_roles(self) -> None:
        """
        Every role not yet taken can be given to a new Mailbox.
        """
        free = sorted(mailbox.ROLES - set(self.roles))
        result = self.set(create={role: {"name": role, "role": role} for role in free})
        self.assertEqual(set(result["created"]), set(free))

    def test_second_role(self) -> None:
        """
        A second Mailbox with a role another has (say, a second inbox) is
        invalidProperties naming 'role'.
        """
        result = self.set(create={"a": {"name": "Inbox 2", "role": "inbox"}})
        self.assertSetError(result, "notCreated", "a", "invalidProperties", ["role"])

    def test_parent_not_found(self) -> None:
        """
        A parentId that is no Mailbox of the account, or an unknown
        creation id, is invalidProperties naming 'parentId'.
        """
        other = self.database.run_sync(accounts.add_account, "bob", None, write=True).id
        bobs_inbox = self.database.run_sync(mailboxes.find_by_role, other, "inbox")
        result = self.set(create={"a": {"name": "A", "parentId": "mnothere"},
                                  "b": {"name": "B", "parentId": "#nothere"},
                                  "c": {"name": "C", "parentId": bobs_inbox},
                                  "d": {"name": "D", "parentId": 12}})
        for key in "abcd":
            self.assertSetError(result, "notCreated", key, "invalidProperties", ["parentId"])

    def test_sort_order(self) -> None:
        """
        sortOrder must be an UnsignedInt below 2^31.
        """
        result = self.set(create={"neg": {"name": "A", "sortOrder": -1}, "big": {"name": "B", "sortOrder": 2**31},
                                  "str": {"name": "C", "sortOrder": "1"}, "ok": {"name": "D", "sortOrder": 2**31 - 1}})
        for key in ("neg", "big", "str"):
            self.assertSetError(result, "notCreated", key, "invalidProperties", ["sortOrder"])
        self.assertIn("ok", result["created"])

    def test_is_subscribed_boolean(self) -> None:
        """
        isSubscribed must be a Boolean.
        """
        result = self.set(create={"a": {"name": "A", "isSubscribed": 1}})
        self.assertSetError(result, "notCreated", "a", "invalidProperties", ["isSubscribed"])

    def test_server_set_properties(self) -> None:
        """
        Giving a server-set property (counts, myRights, id) or an unknown
        property at creation is invalidProperties.
        """
        result = self.set(create={"a": {"name": "A", "totalEmails": 0}, "b": {"name": "B", "myRights": {}},
                                  "c": {"name": "C", "colour": "red"}})
        self.assertSetError(result, "notCreated", "a", "invalidProperties", ["totalEmails"])
        self.assertSetError(result, "notCreated", "b", "invalidProperties", ["myRights"])
        self.assertSetError(result, "notCreated", "c", "invalidProperties", ["colour"])

    def test_depth(self) -> None:
        """
        Nesting deeper than mailbox-max-depth (a top-level Mailbox has
        depth 1) is invalidProperties naming 'parentId'.
        """
        self.configure(mailbox_max_depth=3)
        result = self.set(create={"one": {"name": "1"}, "two": {"name": "2", "parentId": "#one"},
                                  "three": {"name": "3", "parentId": "#two"},
                                  "four": {"name": "4", "parentId": "#three"}})
        self.assertEqual(set(result["created"]), {"one", "two", "three"})
        self.assertSetError(result, "notCreated", "four", "invalidProperties", ["parentId"])

    def test_over_quota(self) -> None:
        """
        Creating more Mailboxes than mailbox-max-total is overQuota.
        """
        self.configure(mailbox_max_total=7)
        result = self.set(create={"a": {"name": "A"}, "b": {"name": "B"}})
        self.assertEqual(set(result["created"]), {"a"})
        self.assertSetError(result, "notCreated", "b", "overQuota")

    def test_quota_counts_final_state(self) -> None:
        """
        A call that destroys one Mailbox and creates another at the limit
        is fine: the final state is within mailbox-max-total.
        """
        self.configure(mailbox_max_total=6)
        result = self.set(create={"a": {"name": "A"}}, destroy=[self.roles["junk"]])
        self.assertIn("a", result["created"])
        self.assertEqual(result["destroyed"], [self.roles["junk"]])

    def test_parent_reference_any_order(self) -> None:
        """
        Children may reference their parent by '#creationId' before the
        parent appears in the create map: the server creates parents first.
        """
        result = self.set(
            create={
                "grandchild": {"name": "C", "parentId": "#child"},
                "child": {"name": "B", "parentId": "#parent"},
                "parent": {"name": "A"},
            }
        )
        self.assertIsNone(result["notCreated"])
        created = {k: v["id"] for k, v in result["created"].items()}
        found = self.get(list(created.values()))
        self.assertIsNone(found[created["parent"]]["parentId"])
        self.assertEqual(found[created["child"]]["parentId"], created["parent"])
        self.assertEqual(found[created["grandchild"]]["parentId"], created["child"])
        self.assertEqual(result["created"]["child"]["parentId"], created["parent"])

    def test_reference_loop(self) -> None:
        """
        Creations referencing each other in a loop cannot be created: each
        is invalidProperties naming 'parentId'.
        """
        result = self.set(create={"a": {"name": "A", "parentId": "#b"}, "b": {"name": "B", "parentId": "#a"}})
        self.assertIsNone(result["created"])
        self.assertSetError(result, "notCreated", "a", "invalidProperties", ["parentId"])
        self.assertSetError(result, "notCreated", "b", "invalidProperties", ["parentId"])

    def test_reference_from_earlier_call(self) -> None:
        """
        A creation id from an earlier call of the request resolves too, and
        the request's createdIds map holds the new ids.
        """
        response = self.request(
            [
                ["Mailbox/set", {"accountId": self.account, "create": {"p": {"name": "P"}}}, "0"],
                ["Mailbox/set", {"accountId": self.account, "create": {"c": {"name": "C", "parentId": "#p"}}}, "1"],
            ],
            created_ids={},
        )
        parent = response["methodResponses"][0][1]["created"]["p"]["id"]
        child = response["methodResponses"][1][1]["created"]["c"]["id"]
        self.assertEqual(response["createdIds"], {"p": parent, "c": child})
        self.assertEqual(self.get([child])[child]["parentId"], parent)


class UpdateTests(MailboxTestCase):
    def test_rename(self) -> None:
        """
        Renaming a Mailbox stores the name, answers null for it in updated
        and changes the state.
        """
        inbox = self.roles["archive"]
        result = self.set(update={inbox: {"name": "Old stuff", "sortOrder": 99, "isSubscribed": False}})
        self.assertEqual(result["updated"], {inbox: None})
        found = self.get([inbox])[inbox]
        self.assertEqual((found["name"], found["sortOrder"], found["isSubscribed"]), ("Old stuff", 99, False))
        self.assertNotEqual(result["oldState"], result["newState"])

    def test_rename_to_sibling_name(self) -> None:
        """
        Renaming to a sibling's name is invalidProperties naming 'name'.
        """
        result = self.set(update={self.roles["sent"]: {"name": "Inbox"}})
        self.assertSetError(result, "notUpdated", self.roles["sent"], "invalidProperties", ["name"])

    def test_swap_names(self) -> None:
        """
        Two siblings may swap names in one call: only the final state must
        be valid (RFC 8620 section 5.3).
        """
        sent, drafts = self.roles["sent"], self.roles["drafts"]
        result = self.set(update={sent: {"name": "Drafts"}, drafts: {"name": "Sent"}})
        self.assertIsNone(result["notUpdated"])
        found = self.get([sent, drafts])
        self.assertEqual((found[sent]["name"], found[drafts]["name"]), ("Drafts", "Sent"))

    def test_swap_roles(self) -> None:
        """
        Roles may move between Mailboxes in one call when the final state
        has each role once.
        """
        junk, trash = self.roles["junk"], self.roles["trash"]
        result = self.set(update={junk: {"role": "trash"}, trash: {"role": "junk"}})
        self.assertIsNone(result["notUpdated"])
        self.assertEqual(self.database.run_sync(mailboxes.find_by_role, self.account, "trash"), junk)

    def test_second_role_rejected(self) -> None:
        """
        Giving a Mailbox a role another Mailbox keeps is invalidProperties
        naming 'role'; other updates of the call still apply.
        """
        result = self.set(update={self.roles["archive"]: {"role": "inbox"}, self.roles["junk"]: {"sortOrder": 1}})
        self.assertSetError(result, "notUpdated", self.roles["archive"], "invalidProperties", ["role"])
        self.assertEqual(result["updated"], {self.roles["junk"]: None})
        self.assertEqual(self.get([self.roles["junk"]])[self.roles["junk"]]["sortOrder"], 1)

    def test_remove_role(self) -> None:
        """
        A role can be removed (set to null).
        """
        result = self.set(update={self.roles["archive"]: {"role": None}})
        self.assertEqual(result["updated"], {self.roles["archive"]: None})
        self.assertIsNone(self.database.run_sync(mailboxes.find_by_role, self.account, "archive"))

    def test_cycle(self) -> None:
        """
        Making a Mailbox its own parent, or the child of its descendant, is
        invalidProperties naming 'parentId'.
        """
        a = self.create(name="A")
        b = self.create(name="B", parentId=a)
        result = self.set(update={a: {"parentId": b}})
        self.assertSetError(result, "notUpdated", a, "invalidProperties", ["parentId"])
        result = self.set(update={a: {"parentId": a}})
        self.assertSetError(result, "notUpdated", a, "invalidProperties", ["parentId"])
        self.assertIsNone(self.get([a])[a]["parentId"])

    def test_move_too_deep(self) -> None:
        """
        Moving a Mailbox with descendants is checked for the depth of its
        deepest descendant.
        """
        self.configure(mailbox_max_depth=3)
        a = self.create(name="A")
        b = self.create(name="B", parentId=a)
        c = self.create(name="C")
        result = self.set(update={c: {"parentId": b}})
        self.assertEqual(result["updated"], {c: None})
        result = self.set(update={a: {"parentId": self.roles["inbox"]}})
        self.assertSetError(result, "notUpdated", a, "invalidProperties", ["parentId"])

    def test_move(self) -> None:
        """
        A Mailbox can be moved under another and back to the top level.
        """
        a = self.create(name="A")
        self.assertEqual(self.set(update={a: {"parentId": self.roles["inbox"]}})["updated"], {a: None})
        self.assertEqual(self.get([a])[a]["parentId"], self.roles["inbox"])
        self.set(update={a: {"parentId": None}})
        self.assertIsNone(self.get([a])[a]["parentId"])

    def test_move_into_new_parent(self) -> None:
        """
        An update may reference a Mailbox created in the same call by
        '#creationId'; the updated entry shows the resolved parentId.
        """
        a = self.create(name="A")
        result = self.set(create={"p": {"name": "P"}}, update={a: {"parentId": "#p"}})
        parent = result["created"]["p"]["id"]
        self.assertEqual(result["updated"], {a: {"parentId": parent}})
        self.assertEqual(self.get([a])[a]["parentId"], parent)

    def test_invalid_values(self) -> None:
        """
        Invalid values in a patch are invalidProperties naming the
        property, and nothing of that update is stored.
        """
        sent = self.roles["sent"]
        for patch, prop in (
            ({"name": ""}, "name"),
            ({"name": None}, "name"),
            ({"sortOrder": -5}, "sortOrder"),
            ({"isSubscribed": "yes"}, "isSubscribed"),
            ({"role": "bogus"}, "role"),
            ({"parentId": "mnothere"}, "parentId"),
        ):
            result = self.set(update={sent: {"sortOrder": 3, **patch}})
            self.assertSetError(result, "notUpdated", sent, "invalidProperties", [prop])
        self.assertEqual(self.get([sent])[sent]["sortOrder"], 30)

    def test_server_set_unchanged_allowed(self) -> None:
        """
        A patch may repeat a server-set property's current value, but not
        change it.
        """
        inbox = self.roles["inbox"]
        result = self.set(update={inbox: {"totalEmails": 0, "myRights/mayDelete": True}})
        self.assertEqual(result["updated"], {inbox: None})
        result = self.set(update={inbox: {"totalEmails": 3}})
        self.assertSetError(result, "notUpdated", inbox, "invalidProperties", ["totalEmails"])

    def test_no_change_keeps_state(self) -> None:
        """
        An update setting the current values changes nothing and keeps the
        state.
        """
        result = self.set(update={self.roles["inbox"]: {"name": "Inbox", "sortOrder": 10}})
        self.assertEqual(result["updated"], {self.roles["inbox"]: None})
        self.assertEqual(result["oldState"], result["newState"])

    def test_not_found(self) -> None:
        """
        Updating an unknown Mailbox is notFound.
        """
        result = self.set(update={"mnothere": {"name": "X"}})
        self.assertSetError(result, "notUpdated", "mnothere", "notFound")

    def test_if_in_state(self) -> None:
        """
        ifInState other than the current state is stateMismatch and changes
        nothing.
        """
        error = self.error("Mailbox/set", {"ifInState": "1", "update": {self.roles["inbox"]: {"name": "X"}}})
        self.assertEqual(error["type"], "stateMismatch")
        result = self.set(ifInState=self.state(), update={self.roles["inbox"]: {"name": "X"}})
        self.assertEqual(result["updated"], {self.roles["inbox"]: None})


class DestroyTests(MailboxTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.hook_calls: list[Any] = []

        def hook(txn: Any, account_id: str, mailbox_id: str, remove_emails: bool) -> None:
            self.hook_calls.append((account_id, mailbox_id, remove_emails))
            if remove_emails:
                counts = mailboxes.get_counts(txn, account_id, mailbox_id)
                mailboxes.adjust_counts(txn, account_id, {mailbox_id: tuple(-c for c in counts)})

        self.patch(mailboxes, "mailbox_destroy_hooks", [hook])

    def fill(self, mailbox_id: str) -> None:
        self.database.run_sync(mailboxes.adjust_counts, self.account, {mailbox_id: (2, 1, 1, 1)}, write=True)

    def test_destroy(self) -> None:
        """
        Destroying an empty Mailbox removes it and calls the destroy hooks
        with onDestroyRemoveEmails (false by default).
        """
        junk = self.roles["junk"]
        result = self.set(destroy=[junk])
        self.assertEqual(result["destroyed"], [junk])
        self.assertEqual(self.call("Mailbox/get", {"ids": [junk]})["notFound"], [junk])
        self.assertEqual(self.hook_calls, [(self.account, junk, False)])

    def test_has_email(self) -> None:
        """
        A Mailbox with Emails (totalEmails > 0) is mailboxHasEmail unless
        onDestroyRemoveEmails is true; the hooks are not called then.
        """
        inbox = self.roles["inbox"]
        self.fill(inbox)
        result = self.set(destroy=[inbox])
        self.assertSetError(result, "notDestroyed", inbox, "mailboxHasEmail")
        self.assertEqual(self.hook_calls, [])
        self.assertIn(inbox, self.get([inbox]))

    def test_remove_emails(self) -> None:
        """
        With onDestroyRemoveEmails true, a Mailbox with Emails is destroyed
        and the hooks are told to remove its Emails.
        """
        inbox = self.roles["inbox"]
        self.fill(inbox)
        result = self.set(destroy=[inbox], onDestroyRemoveEmails=True)
        self.assertEqual(result["destroyed"], [inbox])
        self.assertEqual(self.hook_calls, [(self.account, inbox, True)])

    def test_remove_emails_must_be_boolean(self) -> None:
        """
        onDestroyRemoveEmails must be a Boolean.
        """
        error = self.error("Mailbox/set", {"destroy": [self.roles["junk"]], "onDestroyRemoveEmails": "yes"})
        self.assertEqual(error["type"], "invalidArguments")

    def test_has_child(self) -> None:
        """
        A Mailbox with a child is mailboxHasChild.
        """
        inbox = self.roles["inbox"]
        self.create(name="Child", parentId=inbox)
        result = self.set(destroy=[inbox])
        self.assertSetError(result, "notDestroyed", inbox, "mailboxHasChild")
        self.assertEqual(self.hook_calls, [])

    def test_parent_and_child_together(self) -> None:
        """
        A parent and its child can be destroyed in one call, in any order:
        the final state has no orphan.
        """
        parent = self.create(name="P")
        child = self.create(name="C", parentId=parent)
        result = self.set(destroy=[parent, child])
        self.assertIsNone(result["notDestroyed"])
        self.assertEqual(sorted(result["destroyed"]), sorted([parent, child]))

    def test_move_child_then_destroy(self) -> None:
        """
        Moving the only child away and destroying its parent in one call
        works.
        """
        parent = self.create(name="P")
        child = self.create(name="C", parentId=parent)
        result = self.set(update={child: {"parentId": None}}, destroy=[parent])
        self.assertEqual(result["destroyed"], [parent])
        self.assertEqual(result["updated"], {child: None})

    def test_child_created_under_destroyed(self) -> None:
        """
        When a call creates a child under a Mailbox it also destroys, the
        final state would be invalid: the call is applied one object at a
        time, so the child is created and the destroy is mailboxHasChild;
        hooks of the undone attempt leave no trace.
        """
        parent = self.create(name="P")
        result = self.set(create={"c": {"name": "C", "parentId": parent}}, destroy=[parent])
        self.assertIn("c", result["created"])
        self.assertSetError(result, "notDestroyed", parent, "mailboxHasChild")
        child = result["created"]["c"]["id"]
        self.assertEqual(self.get([child])[child]["parentId"], parent)
        changes = self.call("Mailbox/changes", {"sinceState": result["oldState"]})
        self.assertEqual((changes["created"], changes["destroyed"]), ([child], []))

    def test_replay_restores_creation_ids(self) -> None:
        """
        When a call is replayed one object at a time, creation ids of the
        undone attempt that the replay rejects are gone from createdIds.
        """
        response = self.request(
            [["Mailbox/set", {"accountId": self.account,
                              "create": {"one": {"name": "Same"}, "two": {"name": "Same"}}}, "0"]],
            created_ids={},
        )
        result = response["methodResponses"][0][1]
        self.assertSetError(result, "notCreated", "two", "invalidProperties", ["name"])
        self.assertEqual(response["createdIds"], {"one": result["created"]["one"]["id"]})

    def test_replay_forgets_undone_side_effects(self) -> None:
        """
        The undone attempt of a replayed call leaves no changed state to
        push and no after-commit callback: only what the replay did counts.
        """
        ran: list[str] = []

        def hook(txn: Any, account_id: str, mailbox_id: str, remove_emails: bool) -> None:
            changelog.touch_state(txn, account_id, "Email")
            txn.after_commit(lambda: ran.append(mailbox_id))

        self.patch(mailboxes, "mailbox_destroy_hooks", [hook])
        parent = self.create(name="P")
        body = {"using": [CORE, MAIL], "methodCalls": [["Mailbox/set", {
            "accountId": self.account, "create": {"c": {"name": "C", "parentId": parent}}, "destroy": [parent]}, "0"]]}
        request = parse_request(orjson.dumps(body), self.registry.capabilities, 16)

        def run(txn: Any) -> Any:
            response = execute(txn, self.env, self.principal, request, "s")
            return response, dict(txn.__dict__.get("changed_states", {}))

        response, changed = self.database.run_sync(run, write=True)
        self.assertSetError(response["methodResponses"][0][1], "notDestroyed", parent, "mailboxHasChild")
        self.assertEqual(set(changed[self.account]), {"Mailbox"})
        self.assertEqual(ran, [])

    def test_not_found(self) -> None:
        """
        Destroying an unknown Mailbox is notFound.
        """
        result = self.set(destroy=["mnothere"])
        self.assertSetError(result, "notDestroyed", "mnothere", "notFound")

    def test_update_and_destroy(self) -> None:
        """
        Updating a Mailbox that the same call destroys is willDestroy.
        """
        junk = self.roles["junk"]
        result = self.set(update={junk: {"name": "J"}}, destroy=[junk])
        self.assertSetError(result, "notUpdated", junk, "willDestroy")
        self.assertEqual(result["destroyed"], [junk])


class ChangesTests(MailboxTestCase):
    def changes(self, since: str) -> dict[str, Any]:
        return self.call("Mailbox/changes", {"sinceState": since})

    def test_created_updated_destroyed(self) -> None:
        """
        Mailbox/changes lists created, updated and destroyed Mailboxes since
        the state, with updatedProperties null when more than counts
        changed.
        """
        since = self.state()
        new = self.create(name="New")
        self.set(update={self.roles["sent"]: {"name": "Sent Items"}}, destroy=[self.roles["junk"]])
        changes = self.changes(since)
        self.assertEqual(changes["created"], [new])
        self.assertEqual(changes["updated"], [self.roles["sent"]])
        self.assertEqual(changes["destroyed"], [self.roles["junk"]])
        self.assertIsNone(changes["updatedProperties"])
        self.assertEqual(changes["newState"], self.state())
        self.assertFalse(changes["hasMoreChanges"])

    def test_counts_only(self) -> None:
        """
        When only counts changed since the state, updatedProperties names
        the four count properties.
        """
        since = self.state()
        inbox = self.roles["inbox"]
        self.database.run_sync(mailboxes.adjust_counts, self.account, {inbox: (1, 1, 1, 1)}, write=True)
        changes = self.changes(since)
        self.assertEqual(changes["updated"], [inbox])
        self.assertEqual(changes["updatedProperties"], COUNTS)

    def test_counts_and_properties(self) -> None:
        """
        When one Mailbox changed in counts and another in a property,
        updatedProperties is null.
        """
        since = self.state()
        self.database.run_sync(mailboxes.adjust_counts, self.account, {self.roles["inbox"]: (1, 0, 1, 0)}, write=True)
        self.set(update={self.roles["sent"]: {"sortOrder": 1}})
        self.assertIsNone(self.changes(since)["updatedProperties"])

    def test_counts_and_created(self) -> None:
        """
        A Mailbox created since the state is more than a count change:
        updatedProperties is null.
        """
        since = self.state()
        self.database.run_sync(mailboxes.adjust_counts, self.account, {self.roles["inbox"]: (1, 0, 1, 0)}, write=True)
        self.create(name="New")
        self.assertIsNone(self.changes(since)["updatedProperties"])

    def test_counts_after_property_change(self) -> None:
        """
        A property change before the state does not matter: counts changed
        after it give updatedProperties.
        """
        self.set(update={self.roles["sent"]: {"sortOrder": 1}})
        since = self.state()
        self.database.run_sync(mailboxes.adjust_counts, self.account, {self.roles["sent"]: (1, 0, 1, 0)}, write=True)
        self.assertEqual(self.changes(since)["updatedProperties"], COUNTS)

    def test_nothing_changed(self) -> None:
        """
        From the current state nothing changed: empty lists and
        updatedProperties null.
        """
        changes = self.changes(self.state())
        self.assertEqual((changes["created"], changes["updated"], changes["destroyed"]), ([], [], []))
        self.assertIsNone(changes["updatedProperties"])

    def test_back_reference(self) -> None:
        """
        updatedProperties can feed the properties of a Mailbox/get in the
        same request, as the RFC's example does.
        """
        since = self.state()
        inbox = self.roles["inbox"]
        self.database.run_sync(mailboxes.adjust_counts, self.account, {inbox: (4, 2, 3, 1)}, write=True)
        ref = {"resultOf": "0", "name": "Mailbox/changes"}
        response = self.request(
            [
                ["Mailbox/changes", {"accountId": self.account, "sinceState": since}, "0"],
                ["Mailbox/get", {"accountId": self.account, "#ids": {**ref, "path": "/updated"},
                                 "#properties": {**ref, "path": "/updatedProperties"}}, "1"],
            ]
        )
        self.assertEqual(
            response["methodResponses"][1][1]["list"],
            [{"id": inbox, "totalEmails": 4, "unreadEmails": 2, "totalThreads": 3, "unreadThreads": 1}],
        )

    def test_bad_state(self) -> None:
        """
        A sinceState that was never a state is cannotCalculateChanges.
        """
        self.assertEqual(self.error("Mailbox/changes", {"sinceState": "x"})["type"], "cannotCalculateChanges")

    def test_state_matches_changelog(self) -> None:
        """
        The Mailbox state is the account's Mailbox modseq.
        """
        modseq = self.database.run_sync(changelog.get_modseq, self.account, "Mailbox")
        self.assertEqual(self.state(), str(modseq))


class SessionTests(MailboxTestCase):
    def test_mail_capability(self) -> None:
        """
        The Session advertises urn:ietf:params:jmap:mail (an empty object)
        and, for the account, the Mail limits from the configuration.
        """
        self.configure(mailbox_max_depth=4, mailbox_name_max_len=200, mail_max_mailboxes_per_email=3)
        session = self.database.run_sync(lambda txn: build_session(self.env, txn, self.principal))
        self.assertEqual(session["capabilities"][MAIL], {})
        self.assertEqual(session["primaryAccounts"][MAIL], self.account)
        capability = session["accounts"][self.account]["accountCapabilities"][MAIL]
        self.assertEqual(capability["maxMailboxDepth"], 4)
        self.assertEqual(capability["maxSizeMailboxName"], 200)
        self.assertEqual(capability["maxMailboxesPerEmail"], 3)
        self.assertEqual(capability["maxSizeAttachmentsPerEmail"], self.env.config.mail_attachments_max_size)
        self.assertIs(capability["mayCreateTopLevelMailbox"], True)
        self.assertIn("receivedAt", capability["emailQuerySortOptions"])


class EndToEndTests(ServerTestCase):
    def test_over_http(self) -> Any:
        """
        Over real HTTP, a new account's Session has the Mail capability and
        Mailbox/set then Mailbox/get work in one request.
        """

        async def run() -> None:
            server = await self.start_server(registry=mail_registry())
            account = server.add_account("alice")
            response, body = await server.request("GET", "/.well-known/jmap")
            session = orjson.loads(body)
            self.assertIn(MAIL, session["accounts"][account]["accountCapabilities"])
            result = await server.api(
                [
                    ["Mailbox/set", {"accountId": account, "create": {"a": {"name": "A"}}}, "0"],
                    ["Mailbox/get", {"accountId": account, "ids": ["#a"], "properties": ["name"]}, "1"],
                ],
                using=[CORE, MAIL],
            )
            created = result["methodResponses"][0][1]["created"]["a"]["id"]
            self.assertEqual(result["methodResponses"][1][1]["list"], [{"id": created, "name": "A"}])
            get_all = await server.api([["Mailbox/get", {"accountId": account}, "2"]], using=[CORE, MAIL])
            self.assertEqual(len(get_all["methodResponses"][0][1]["list"]), 7)

        return ensureDeferred(run())


# The same tests on PostgreSQL (see tests/pg.py).
pg.add_postgresql_variants(globals(), ChangesTests, CreateTests, DestroyTests, EndToEndTests, GetTests, RightsTests, SessionTests, UpdateTests)
