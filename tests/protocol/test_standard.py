"""
Tests for L{jmapd.protocol.standard}: /get, /changes, /set, /copy, /query
and /queryChanges (RFC 8620 section 5), through L{execute}, on a small
test data type.
"""

import orjson
from twisted.trial.unittest import SynchronousTestCase

from jmapd.protocol.engine import CORE, AccountAccess, Capability
from jmapd.protocol.errors import MethodError, invalid_properties, set_error
from jmapd.protocol.standard import DataType, register_standard_methods, window
from jmapd.storage import changelog
from jmapd.storage.ids import new_id
from tests import pg
from tests.protocol.test_engine import add_principal, make_environment, run_request

NOTES = "urn:test:notes"

_COLUMNS = "id, title, body, tags, created"


class Note(DataType):
    """
    A note: a title, a body, a map of tags and a server-set creation time.
    A title of "reject" is refused after the row was written, to show that
    a rejected create leaves nothing behind.
    """

    name = "Note"
    capability = NOTES
    properties = ("id", "title", "body", "tags", "created")
    server_set = frozenset({"id", "created"})
    methods = ("get", "changes", "set", "copy", "query", "queryChanges")

    def _object(self, row):
        return {"id": row[0], "title": row[1], "body": row[2], "tags": orjson.loads(row[3]), "created": row[4]}

    def fetch(self, ctx, account_id, ids, properties, extra):
        if ids is None:
            rows = ctx.txn.fetchall(
                f"SELECT {_COLUMNS} FROM notes WHERE account_id = ? ORDER BY id", (account_id,)
            )
        else:
            rows = [
                row
                for object_id in ids
                for row in ctx.txn.fetchall(
                    f"SELECT {_COLUMNS} FROM notes WHERE account_id = ? AND id = ?", (account_id, object_id)
                )
            ]
        return [self._object(row) for row in rows]

    def _check(self, obj):
        if not isinstance(obj.get("title", ""), str):
            raise invalid_properties("title must be a String", "title")
        if not isinstance(obj.get("body", ""), str):
            raise invalid_properties("body must be a String", "body")
        tags = obj.get("tags") or {}
        if not isinstance(tags, dict) or not all(v is True for v in tags.values()):
            raise invalid_properties("tags must be a String[Boolean] of true values", "tags")
        return tags

    def _insert(self, ctx, account_id, title, body, tags):
        object_id = new_id("n")
        created = ctx.now
        ctx.txn.execute(
            "INSERT INTO notes (account_id, id, title, body, tags, created) VALUES (?, ?, ?, ?, ?, ?)",
            (account_id, object_id, title, body, orjson.dumps(tags).decode(), created),
        )
        changelog.record_change(ctx.txn, account_id, self.name, object_id, changelog.CREATED)
        if title == "reject":
            raise set_error("forbidden", "rejected after the insert")
        return {"id": object_id, "created": created}

    def create(self, ctx, account_id, obj, extra):
        tags = self._check(obj)
        return self._insert(ctx, account_id, obj.get("title", ""), obj.get("body", ""), tags)

    def update(self, ctx, account_id, object_id, current, new, touched, extra):
        tags = self._check(new)
        ctx.txn.execute(
            "UPDATE notes SET title = ?, body = ?, tags = ? WHERE account_id = ? AND id = ?",
            (new.get("title") or "", new.get("body") or "", orjson.dumps(tags).decode(), account_id, object_id),
        )
        changelog.record_change(ctx.txn, account_id, self.name, object_id, changelog.UPDATED)
        if new.get("title") == "reject":
            raise set_error("forbidden", "rejected after the update")
        return None

    def destroy(self, ctx, account_id, object_id, extra):
        ctx.txn.execute("DELETE FROM notes WHERE account_id = ? AND id = ?", (account_id, object_id))
        changelog.record_change(ctx.txn, account_id, self.name, object_id, changelog.DESTROYED)

    def query(self, ctx, account_id, filter, sort, extra):
        sql = "SELECT id FROM notes WHERE account_id = ?"
        params = [account_id]
        if filter and "title" in filter:
            sql += " AND title = ?"
            params.append(filter["title"])
        order = [s["property"] for s in sort] or ["id"]
        if any(p not in ("id", "title") for p in order):
            raise MethodError("unsupportedSort", ", ".join(order))
        sql += " ORDER BY " + ", ".join(order)
        return [row[0] for row in ctx.txn.fetchall(sql, params)]

    def copy(self, ctx, from_account_id, account_id, source, overrides):
        obj = {**source, **overrides}
        tags = self._check(obj)
        return self._insert(ctx, account_id, obj["title"], obj["body"], tags)


def notes_environment(testcase, **config):
    """
    An environment with Note registered; alice may also use bob's account
    (read-write) and carol's (read-only).
    """
    env = make_environment(testcase, **config)
    env.registry.add_capability(Capability(NOTES, lambda env: {}, lambda env, txn, account_id: {}))
    register_standard_methods(env.registry, Note())
    env.database.run_sync(
        lambda txn: txn.execute(
            "CREATE TABLE notes (account_id TEXT NOT NULL, id TEXT NOT NULL, title TEXT NOT NULL,"
            " body TEXT NOT NULL, tags TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY (account_id, id))"
        ),
        write=True,
    )
    return env


class NotesTestCase(SynchronousTestCase):
    def setUp(self):
        self.env = notes_environment(self, **self.config())
        self.env.clock.advance(1000)
        self.alice = add_principal(self.env, "alice")
        self.bob = add_principal(self.env, "bob")
        self.carol = add_principal(self.env, "carol")
        self.account = self.alice.account_id

        def lookup(env, txn, principal):
            if principal.account_id == self.alice.account_id:
                yield AccountAccess(self.bob.account_id, "bob", False, False, frozenset({NOTES}))
                yield AccountAccess(self.carol.account_id, "carol", False, True, frozenset({NOTES}))

        self.env.registry.account_lookups.append(lookup)

    def config(self):
        return {}

    def calls(self, calls, **kwargs):
        """
        Run method calls for alice; return the method responses.
        """
        return run_request(self.env, self.alice, calls, (CORE, NOTES), **kwargs)["methodResponses"]

    def call(self, name, **arguments):
        """
        Run one call (accountId defaults to alice's) and return its
        response name and arguments.
        """
        if name != "Note/copy":
            arguments.setdefault("accountId", self.account)
        ((response_name, response, call_id),) = self.calls([[name, arguments, "c0"]])
        self.assertEqual(call_id, "c0")
        return response_name, response

    def ok(self, name, **arguments):
        response_name, response = self.call(name, **arguments)
        self.assertEqual(response_name, name, response)
        return response

    def error(self, name, **arguments):
        response_name, response = self.call(name, **arguments)
        self.assertEqual(response_name, "error", response)
        return response["type"]

    def create(self, *titles, account=None, **fields):
        """
        Create notes with these titles; return their ids in order.
        """
        create = {f"k{i}": {"title": title, **fields} for i, title in enumerate(titles)}
        response = self.ok("Note/set", accountId=account or self.account, create=create)
        self.assertIsNone(response["notCreated"])
        return [response["created"][f"k{i}"]["id"] for i in range(len(titles))]

    def state(self, account=None):
        return self.ok("Note/get", accountId=account or self.account, ids=[])["state"]

    def rows(self):
        return self.env.database.run_sync(lambda txn: txn.fetchall("SELECT account_id, id, title FROM notes"))


class GetTests(NotesTestCase):
    def config(self):
        return {"max_objects_in_get": 4}

    def test_ids_null(self):
        """
        ids null returns every object with every property, and the state.
        """
        a, b = self.create("a", "b")
        response = self.ok("Note/get", ids=None)
        self.assertEqual(sorted(o["id"] for o in response["list"]), sorted([a, b]))
        self.assertEqual(set(response["list"][0]), set(Note.properties))
        self.assertEqual(response["notFound"], [])
        self.assertEqual(response["accountId"], self.account)
        self.assertEqual(response["state"], self.state())

    def test_ids_with_unknown(self):
        """
        Unknown ids are in notFound; found objects come in the order asked,
        each id once.
        """
        a, b = self.create("a", "b")
        response = self.ok("Note/get", ids=[b, "missing", a, b])
        self.assertEqual([o["id"] for o in response["list"]], [b, a])
        self.assertEqual(response["notFound"], ["missing"])

    def test_other_account_objects_not_found(self):
        """
        An id of another account's object is notFound here.
        """
        (other,) = self.create("b", account=self.bob.account_id)
        self.assertEqual(self.ok("Note/get", ids=[other])["notFound"], [other])

    def test_properties_filter(self):
        """
        Only the properties asked for are returned, plus id always.
        """
        (a,) = self.create("a")
        response = self.ok("Note/get", ids=[a], properties=["title"])
        self.assertEqual(response["list"], [{"id": a, "title": "a"}])

    def test_unknown_property(self):
        """
        An unknown property in 'properties' is invalidArguments.
        """
        self.assertEqual(self.error("Note/get", ids=[], properties=["title", "colour"]), "invalidArguments")

    def test_max_objects_at_limit(self):
        """
        Exactly maxObjectsInGet ids are accepted.
        """
        self.assertEqual(self.ok("Note/get", ids=["a", "b", "c", "d"])["notFound"], ["a", "b", "c", "d"])

    def test_max_objects_past_limit(self):
        """
        One id more than maxObjectsInGet is requestTooLarge.
        """
        self.assertEqual(self.error("Note/get", ids=["a", "b", "c", "d", "e"]), "requestTooLarge")

    def test_ids_null_past_limit(self):
        """
        ids null is requestTooLarge when the account holds more objects
        than maxObjectsInGet, and fine at the limit.
        """
        self.create("a", "b", "c", "d")
        self.assertEqual(len(self.ok("Note/get", ids=None)["list"]), 4)
        self.create("e")
        self.assertEqual(self.error("Note/get", ids=None), "requestTooLarge")

    def test_creation_id(self):
        """
        '#cid' in ids names the object created earlier in the request; an
        unknown '#cid' is notFound (listed once).
        """
        responses = self.calls(
            [
                ["Note/set", {"accountId": self.account, "create": {"n1": {"title": "new"}}}, "c0"],
                ["Note/get", {"accountId": self.account, "ids": ["#n1", "#zz", "#zz"], "properties": ["title"]}, "c1"],
            ]
        )
        created_id = responses[0][1]["created"]["n1"]["id"]
        self.assertEqual(responses[1][1]["list"], [{"id": created_id, "title": "new"}])
        self.assertEqual(responses[1][1]["notFound"], ["#zz"])

    def test_arguments(self):
        """
        A missing accountId, a bad ids value or an unknown argument is
        invalidArguments; an unknown account is accountNotFound.
        """
        self.assertEqual(self.error("Note/get", ids="x"), "invalidArguments")
        self.assertEqual(self.error("Note/get", ids=[], colour=1), "invalidArguments")
        self.assertEqual(self.error("Note/get", accountId="nope", ids=[]), "accountNotFound")
        responses = self.calls([["Note/get", {"ids": []}, "c0"]])
        self.assertEqual(responses[0][1]["type"], "invalidArguments")


class ChangesTests(NotesTestCase):
    def config(self):
        return {"changes_max_results": 50}

    def test_exact(self):
        """
        /changes lists exactly what was created, updated and destroyed,
        and newState is the current state.
        """
        a, b, c = self.create("a", "b", "c")
        since = self.state()
        (d,) = self.create("d")
        self.ok("Note/set", update={a: {"title": "A"}}, destroy=[b])
        response = self.ok("Note/changes", sinceState=since)
        self.assertEqual(
            (response["created"], response["updated"], response["destroyed"]), ([d], [a], [b])
        )
        self.assertEqual(response["oldState"], since)
        self.assertEqual(response["newState"], self.state())
        self.assertFalse(response["hasMoreChanges"])

    def test_no_changes(self):
        """
        From the current state there is nothing, and newState equals
        oldState.
        """
        self.create("a")
        state = self.state()
        response = self.ok("Note/changes", sinceState=state)
        self.assertEqual((response["created"], response["updated"], response["destroyed"]), ([], [], []))
        self.assertEqual(response["newState"], state)

    def test_created_then_destroyed_omitted(self):
        """
        An object created and destroyed since the state is not reported.
        """
        since = self.state()
        (a,) = self.create("a")
        self.ok("Note/set", destroy=[a])
        response = self.ok("Note/changes", sinceState=since)
        self.assertEqual((response["created"], response["updated"], response["destroyed"]), ([], [], []))

    def test_paging(self):
        """
        maxChanges pages the changes: hasMoreChanges and an intermediate
        newState until the last page, which ends at the current state.
        """
        ids = self.create("a", "b", "c", "d", "e")
        state, seen, pages = "0", [], 0
        while True:
            response = self.ok("Note/changes", sinceState=state, maxChanges=2)
            pages += 1
            seen += response["created"]
            self.assertLessEqual(len(response["created"]), 2)
            state = response["newState"]
            if not response["hasMoreChanges"]:
                break
            self.assertNotEqual(state, self.state())
        self.assertEqual(pages, 3)
        self.assertEqual(seen, ids)
        self.assertEqual(state, self.state())

    def test_max_changes_capped_by_config(self):
        """
        maxChanges above changes-max-results is capped to it.
        """
        self.create(*[f"n{i}" for i in range(51)])
        response = self.ok("Note/changes", sinceState="0", maxChanges=1000)
        self.assertEqual(len(response["created"]), 50)
        self.assertTrue(response["hasMoreChanges"])

    def test_max_changes_zero(self):
        """
        maxChanges must be positive.
        """
        self.assertEqual(self.error("Note/changes", sinceState="0", maxChanges=0), "invalidArguments")

    def test_garbage_or_future_state(self):
        """
        A state the server never gave (garbage, non-ASCII digits, the
        future) is cannotCalculateChanges, never a crash.
        """
        self.create("a")
        future = str(int(self.state()) + 1)
        for state in ("garbage", "", "-1", "\u00b2", "\u0661", future, "1" * 40):
            self.assertEqual(self.error("Note/changes", sinceState=state), "cannotCalculateChanges", state)

    def test_after_compaction(self):
        """
        After compaction dropped a tombstone, states before it are
        cannotCalculateChanges, later ones still work.
        """
        a, b = self.create("a", "b")
        old = self.state()
        self.ok("Note/set", destroy=[a])
        self.ok("Note/set", destroy=[b])
        self.env.database.run_sync(changelog.compact, self.account, 1, write=True)
        self.assertEqual(self.error("Note/changes", sinceState=old), "cannotCalculateChanges")
        self.assertEqual(self.ok("Note/changes", sinceState=self.state())["destroyed"], [])


class SetTests(NotesTestCase):
    def config(self):
        return {"max_objects_in_set": 3}

    def test_create(self):
        """
        A create returns the server-set properties, stores the object and
        moves the state from oldState to newState.
        """
        old = self.state()
        response = self.ok("Note/set", create={"k": {"title": "t", "tags": {"x": True}}})
        created = response["created"]["k"]
        self.assertEqual(created["created"], 1000.0)
        self.assertEqual(response["oldState"], old)
        self.assertEqual(response["newState"], self.state())
        self.assertNotEqual(response["newState"], old)
        for key in ("updated", "destroyed", "notCreated", "notUpdated", "notDestroyed"):
            self.assertIsNone(response[key], key)
        (got,) = self.ok("Note/get", ids=[created["id"]])["list"]
        self.assertEqual(got, {"id": created["id"], "title": "t", "body": "", "tags": {"x": True}, "created": 1000.0})

    def test_update_and_destroy(self):
        """
        Updates and destroys report their ids; the objects change or go.
        """
        a, b = self.create("a", "b")
        response = self.ok("Note/set", update={a: {"title": "A"}}, destroy=[b])
        self.assertEqual(response["updated"], {a: None})
        self.assertEqual(response["destroyed"], [b])
        self.assertEqual(self.ok("Note/get", ids=[a, b])["notFound"], [b])
        self.assertEqual(self.ok("Note/get", ids=[a])["list"][0]["title"], "A")

    def test_if_in_state(self):
        """
        ifInState must equal the current state: otherwise stateMismatch
        and nothing changes.
        """
        state = self.state()
        self.assertEqual(self.error("Note/set", ifInState="123", create={"k": {"title": "x"}}), "stateMismatch")
        self.assertEqual(self.rows(), [])
        self.ok("Note/set", ifInState=state, create={"k": {"title": "x"}})
        self.assertEqual(len(self.rows()), 1)

    def test_max_objects_at_limit(self):
        """
        maxObjectsInSet counts creates, updates and destroys together;
        exactly at the limit is accepted.
        """
        (a,) = self.create("a")
        response = self.ok("Note/set", create={"k": {}}, update={a: {"title": "b"}}, destroy=["missing"])
        self.assertEqual(list(response["created"]), ["k"])

    def test_max_objects_past_limit(self):
        """
        One more than maxObjectsInSet is requestTooLarge and nothing
        changes.
        """
        (a,) = self.create("a")
        self.assertEqual(
            self.error("Note/set", create={"k": {}, "l": {}}, update={a: {"title": "b"}}, destroy=["x"]),
            "requestTooLarge",
        )
        self.assertEqual(len(self.rows()), 1)

    def test_unknown_property_create(self):
        """
        An unknown property in a create is invalidProperties naming it.
        """
        response = self.ok("Note/set", create={"k": {"title": "t", "colour": 1, "size": 2}})
        self.assertEqual(
            response["notCreated"]["k"]["type"], "invalidProperties"
        )
        self.assertEqual(sorted(response["notCreated"]["k"]["properties"]), ["colour", "size"])
        self.assertEqual(self.rows(), [])

    def test_server_set_in_create(self):
        """
        A server-set property in a create is invalidProperties.
        """
        response = self.ok("Note/set", create={"k": {"title": "t", "created": 5}, "l": {"id": "x"}})
        self.assertEqual(response["notCreated"]["k"]["properties"], ["created"])
        self.assertEqual(response["notCreated"]["l"]["properties"], ["id"])

    def test_create_not_object(self):
        """
        A create value that is not an object is invalidProperties.
        """
        response = self.ok("Note/set", create={"k": "text"})
        self.assertEqual(response["notCreated"]["k"]["type"], "invalidProperties")

    def test_server_set_in_update(self):
        """
        A server-set property may be repeated with its current value; a
        different value is invalidProperties and the update is not applied.
        """
        (a,) = self.create("a")
        response = self.ok("Note/set", update={a: {"created": 1000.0, "id": a, "title": "b"}})
        self.assertEqual(response["updated"], {a: None})
        response = self.ok("Note/set", update={a: {"created": 1.0, "title": "c"}})
        self.assertEqual(response["notUpdated"][a]["type"], "invalidProperties")
        self.assertEqual(response["notUpdated"][a]["properties"], ["created"])
        self.assertEqual(self.ok("Note/get", ids=[a])["list"][0]["title"], "b")

    def test_unknown_property_update(self):
        """
        An unknown property in a patch is invalidProperties naming it.
        """
        (a,) = self.create("a")
        response = self.ok("Note/set", update={a: {"colour": 1}})
        self.assertEqual(response["notUpdated"][a]["type"], "invalidProperties")
        self.assertEqual(response["notUpdated"][a]["properties"], ["colour"])

    def test_every_invalid_property_named(self):
        """
        A create or an update with both an unknown property and one the
        client may not set gets one invalidProperties naming both kinds
        (RFC 8620 section 5.3: properties SHOULD list every invalid one),
        and its description says which is which.
        """
        response = self.ok("Note/set", create={"k": {"title": "t", "colour": 1, "created": 5}})
        error = response["notCreated"]["k"]
        self.assertEqual((error["type"], error["properties"]), ("invalidProperties", ["colour", "created"]))
        self.assertIn("unknown Note properties: colour", error["description"])
        self.assertIn("properties set by the server: created", error["description"])
        (a,) = self.create("a")
        response = self.ok("Note/set", update={a: {"colour": 1, "created": 1.0}})
        error = response["notUpdated"][a]
        self.assertEqual((error["type"], error["properties"]), ("invalidProperties", ["colour", "created"]))
        self.assertIn("properties that cannot be changed: created", error["description"])

    def test_patch_map(self):
        """
        'tags/x' adds one tag and 'tags/y': null removes one, leaving the
        rest.
        """
        (a,) = self.create("a", tags={"y": True, "z": True})
        self.ok("Note/set", update={a: {"tags/x": True, "tags/y": None}})
        self.assertEqual(self.ok("Note/get", ids=[a])["list"][0]["tags"], {"x": True, "z": True})

    def test_invalid_patch(self):
        """
        Prefix paths and paths through a non-object are invalidPatch.
        """
        (a,) = self.create("a", tags={"y": True})
        response = self.ok(
            "Note/set", update={a: {"tags": {}, "tags/x": True}}
        )
        self.assertEqual(response["notUpdated"][a]["type"], "invalidPatch")
        response = self.ok("Note/set", update={a: {"title/x": "y"}})
        self.assertEqual(response["notUpdated"][a]["type"], "invalidPatch")
        response = self.ok("Note/set", update={a: {"tags/y/z": True}})
        self.assertEqual(response["notUpdated"][a]["type"], "invalidPatch")

    def test_not_found(self):
        """
        Updating or destroying an unknown id, an unknown '#cid' or
        another account's object is notFound.
        """
        (other,) = self.create("b", account=self.bob.account_id)
        response = self.ok("Note/set", update={"missing": {"title": "x"}, "#zz": {}, other: {"title": "x"}})
        self.assertEqual({k: v["type"] for k, v in response["notUpdated"].items()},
                         {"missing": "notFound", "#zz": "notFound", other: "notFound"})
        response = self.ok("Note/set", destroy=["gone", "#yy", other])
        self.assertEqual({k: v["type"] for k, v in response["notDestroyed"].items()},
                         {"gone": "notFound", "#yy": "notFound", other: "notFound"})
        self.assertIsNone(response["destroyed"])

    def test_will_destroy(self):
        """
        Updating an object that the same call destroys is willDestroy, also
        when both name it by creation id.
        """
        (a,) = self.create("a")
        response = self.ok("Note/set", update={a: {"title": "x"}}, destroy=[a])
        self.assertEqual(response["notUpdated"][a]["type"], "willDestroy")
        self.assertEqual(response["destroyed"], [a])
        response = self.ok("Note/set", create={"n": {"title": "t"}}, update={"#n": {"title": "u"}}, destroy=["#n"])
        new_id = response["created"]["n"]["id"]
        self.assertEqual(response["notUpdated"][new_id]["type"], "willDestroy")
        self.assertEqual(response["destroyed"], [new_id])

    def test_destroy_twice(self):
        """
        An id listed twice in destroy is destroyed once and not also
        reported notDestroyed.
        """
        (a,) = self.create("a")
        response = self.ok("Note/set", destroy=[a, a])
        self.assertEqual(response["destroyed"], [a])
        self.assertIsNone(response["notDestroyed"])

    def test_creation_ids_in_later_calls(self):
        """
        An id created by one /set is usable as '#cid' in the update and
        destroy of later calls.
        """
        responses = self.calls(
            [
                ["Note/set", {"accountId": self.account, "create": {"n": {"title": "t"}}}, "c0"],
                ["Note/set", {"accountId": self.account, "update": {"#n": {"title": "u"}}}, "c1"],
                ["Note/get", {"accountId": self.account, "ids": ["#n"]}, "c2"],
                ["Note/set", {"accountId": self.account, "destroy": ["#n"]}, "c3"],
            ]
        )
        new_id = responses[0][1]["created"]["n"]["id"]
        self.assertEqual(responses[1][1]["updated"], {new_id: None})
        self.assertEqual(responses[2][1]["list"][0]["title"], "u")
        self.assertEqual(responses[3][1]["destroyed"], [new_id])

    def test_rejected_create_leaves_nothing(self):
        """
        A create rejected after it wrote its row leaves no row and no
        changelog entry; the other creates of the call stand.
        """
        state = self.state()
        response = self.ok("Note/set", create={"bad": {"title": "reject"}, "good": {"title": "fine"}})
        self.assertEqual(response["notCreated"]["bad"]["type"], "forbidden")
        self.assertEqual([row[2] for row in self.rows()], ["fine"])
        changes = self.ok("Note/changes", sinceState=state)
        self.assertEqual(changes["created"], [response["created"]["good"]["id"]])

    def test_rejected_update_leaves_nothing(self):
        """
        An update rejected after it wrote is undone entirely.
        """
        (a,) = self.create("a")
        state = self.state()
        response = self.ok("Note/set", update={a: {"title": "reject"}})
        self.assertEqual(response["notUpdated"][a]["type"], "forbidden")
        self.assertEqual([row[2] for row in self.rows()], ["a"])
        self.assertEqual(self.state(), state)

    def test_invalid_value(self):
        """
        A value the type refuses is that object's invalidProperties.
        """
        response = self.ok("Note/set", create={"k": {"title": 5}})
        self.assertEqual(response["notCreated"]["k"]["properties"], ["title"])

    def test_read_only_account(self):
        """
        /set on a read-only account is accountReadOnly.
        """
        self.assertEqual(self.error("Note/set", accountId=self.carol.account_id, create={}), "accountReadOnly")

    def test_arguments(self):
        """
        A patch that is not an object, or an unknown argument, fails the
        whole call with invalidArguments.
        """
        self.assertEqual(self.error("Note/set", update={"a": 5}), "invalidArguments")
        self.assertEqual(self.error("Note/set", create=[]), "invalidArguments")
        self.assertEqual(self.error("Note/set", remove=["a"]), "invalidArguments")

    def test_method_error_rolls_back_set(self):
        """
        When a /set fails as a whole (a later bad argument), none of its
        objects stay: here via a result reference that cannot resolve.
        """
        responses = self.calls(
            [
                ["Note/set", {"accountId": self.account, "create": {"n": {"title": "t"}}}, "c0"],
                ["Note/set", {"accountId": self.account, "#destroy": {"resultOf": "c0", "name": "Note/set",
                                                                      "path": "/nothing"}}, "c1"],
            ]
        )
        self.assertEqual(responses[1][1]["type"], "invalidResultReference")
        self.assertEqual(len(self.rows()), 1)


class QueryTests(NotesTestCase):
    def config(self):
        return {"query_max_results": 4}

    def setUp(self):
        super().setUp()
        self.ids = self.create("e", "c", "a", "d", "b")
        self.sorted = [self.ids[i] for i in (2, 4, 1, 3, 0)]

    def query(self, **arguments):
        return self.ok("Note/query", sort=[{"property": "title"}], **arguments)

    def test_sorted_and_capped(self):
        """
        Without a limit the result is capped at query-max-results; the
        response then says which limit applied.
        """
        response = self.query(calculateTotal=True)
        self.assertEqual(response["ids"], self.sorted[:4])
        self.assertEqual(response["position"], 0)
        self.assertEqual(response["total"], 5)
        self.assertEqual(response["queryState"], self.state())
        self.assertTrue(response["canCalculateChanges"])
        self.assertEqual(response["limit"], 4)

    def test_limit(self):
        """
        A limit below the maximum applies as given; one above it is capped
        and 'limit' tells the client.
        """
        response = self.query(limit=2)
        self.assertEqual(response["ids"], self.sorted[:2])
        self.assertNotIn("limit", response)
        response = self.query(limit=10)
        self.assertEqual(response["ids"], self.sorted[:4])
        self.assertEqual(response["limit"], 4)
        self.assertEqual(self.query(limit=0)["ids"], [])

    def test_no_total_unless_asked(self):
        """
        total is only computed when calculateTotal is true.
        """
        self.assertNotIn("total", self.query())

    def test_position(self):
        """
        A positive position skips that many; a negative one counts from
        the end (clamped to 0); one past the end gives no ids.
        """
        self.assertEqual(self.query(position=3)["ids"], self.sorted[3:])
        response = self.query(position=-2)
        self.assertEqual((response["ids"], response["position"]), (self.sorted[3:], 3))
        response = self.query(position=-10)
        self.assertEqual((response["ids"], response["position"]), (self.sorted[:4], 0))
        self.assertEqual(self.query(position=7)["ids"], [])

    def test_anchor(self):
        """
        anchor plus anchorOffset sets the position; a negative result is
        clamped to 0.
        """
        response = self.query(anchor=self.sorted[2], anchorOffset=-1, limit=2)
        self.assertEqual((response["ids"], response["position"]), (self.sorted[1:3], 1))
        response = self.query(anchor=self.sorted[1], anchorOffset=-5)
        self.assertEqual(response["position"], 0)
        response = self.query(anchor=self.sorted[4])
        self.assertEqual(response["ids"], self.sorted[4:])

    def test_anchor_not_found(self):
        """
        An anchor not in the results is anchorNotFound.
        """
        self.assertEqual(self.error("Note/query", anchor="nope"), "anchorNotFound")

    def test_filter_and_sort_shapes(self):
        """
        A filter that is not an object, or a sort that is not an array of
        Comparators, is invalidArguments.
        """
        self.assertEqual(self.error("Note/query", filter=[]), "invalidArguments")
        self.assertEqual(self.error("Note/query", sort={"property": "title"}), "invalidArguments")
        self.assertEqual(self.error("Note/query", sort=[{"isAscending": True}]), "invalidArguments")
        self.assertEqual(self.error("Note/queryChanges", sinceQueryState="0", sort="title"), "invalidArguments")

    def test_window(self):
        """
        window() on its own: the position reported is where the ids start;
        the limit is reported when it is not the one asked for (none, or
        above the maximum), not when it is.
        """
        self.assertEqual(window(["a", "b", "c"], 1, None, 0, 1, 10), {"position": 1, "ids": ["b"]})
        self.assertEqual(window(["a", "b", "c"], 5, None, 0, None, 10), {"limit": 10, "position": 3, "ids": []})
        self.assertEqual(window(["a", "b", "c"], 0, "c", 5, 20, 10), {"limit": 10, "position": 3, "ids": []})

    def test_query_changes(self):
        """
        /queryChanges reports changed objects as removed and, where they
        are in the results now, added at their new index; created objects
        are added; destroyed ones are removed.
        """
        old = self.query()["queryState"]
        e, c, a, d, b = self.ids
        (new,) = self.create("bb")
        self.ok("Note/set", update={e: {"title": "aa"}}, destroy=[d])
        response = self.ok(
            "Note/queryChanges", sinceQueryState=old, sort=[{"property": "title"}], calculateTotal=True
        )
        self.assertEqual(response["oldQueryState"], old)
        self.assertEqual(response["newQueryState"], self.state())
        self.assertEqual(sorted(response["removed"]), sorted([e, d]))
        # a, aa(e), b, bb(new), c
        self.assertEqual(response["added"], [{"id": e, "index": 1}, {"id": new, "index": 3}])
        self.assertEqual(response["total"], 5)

    def test_query_changes_up_to_id(self):
        """
        upToId is ignored, and additions after it are reported too: a
        Note's title can change, and RFC 8620 section 5.6 lets upToId cut
        the changes short only for a query on immutable properties (with a
        mutable one, the object it names may have moved, and the client's
        cache would miss what moved in front of it).
        """
        old = self.query()["queryState"]
        (first,) = self.create("0")
        (last,) = self.create("z")
        e, c, a, d, b = self.ids
        response = self.ok(
            "Note/queryChanges", sinceQueryState=old, sort=[{"property": "title"}], upToId=b
        )
        self.assertEqual(response["added"], [{"id": first, "index": 0}, {"id": last, "index": 6}])

    def test_query_changes_max_changes(self):
        """
        More changes than maxChanges is tooManyChanges.
        """
        old = self.query()["queryState"]
        self.create("x", "y")
        self.assertEqual(self.error("Note/queryChanges", sinceQueryState=old, maxChanges=1), "tooManyChanges")
        self.assertEqual(len(self.ok("Note/queryChanges", sinceQueryState=old, maxChanges=2)["added"]), 2)

    def test_query_changes_max_changes_zero(self):
        """
        maxChanges 0 is allowed in /queryChanges (an UnsignedInt, RFC 8620
        section 5.6; only /changes asks for a positive one): with no change
        the answer is empty, with any it is tooManyChanges.
        """
        old = self.query()["queryState"]
        response = self.ok("Note/queryChanges", sinceQueryState=old, maxChanges=0)
        self.assertEqual((response["removed"], response["added"]), ([], []))
        self.create("x")
        self.assertEqual(self.error("Note/queryChanges", sinceQueryState=old, maxChanges=0), "tooManyChanges")
        self.assertEqual(self.error("Note/queryChanges", sinceQueryState=old, maxChanges=-1), "invalidArguments")

    def test_query_changes_bad_state(self):
        """
        An unknown query state is cannotCalculateChanges.
        """
        for state in ("x", "999", "\u00b2"):
            self.assertEqual(self.error("Note/queryChanges", sinceQueryState=state), "cannotCalculateChanges")


class CopyTests(NotesTestCase):
    def copy(self, **arguments):
        arguments.setdefault("fromAccountId", self.bob.account_id)
        arguments.setdefault("accountId", self.account)
        return self.calls([["Note/copy", arguments, "c0"]])

    def test_copy(self):
        """
        /copy creates the object in the destination with overrides applied
        and the server-set properties new; the original stays.
        """
        (original,) = self.create("orig", account=self.bob.account_id, tags={"t": True})
        self.env.clock.advance(5)
        old = self.state()
        ((name, response, _),) = self.copy(create={"k": {"id": original, "title": "copied"}})
        self.assertEqual(name, "Note/copy")
        created = response["created"]["k"]
        self.assertNotEqual(created["id"], original)
        self.assertEqual(created["created"], 1005.0)
        self.assertEqual((response["oldState"], response["newState"]), (old, self.state()))
        (got,) = self.ok("Note/get", ids=[created["id"]])["list"]
        self.assertEqual((got["title"], got["tags"]), ("copied", {"t": True}))
        self.assertEqual(self.ok("Note/get", accountId=self.bob.account_id, ids=[original])["notFound"], [])

    def test_destroy_original(self):
        """
        onSuccessDestroyOriginal adds an implicit Note/set response after
        the Note/copy one, under the same call id, destroying the
        originals that were copied (and only those).
        """
        (original,) = self.create("orig", account=self.bob.account_id)
        responses = self.copy(
            create={"k": {"id": original}, "bad": {"id": "missing"}}, onSuccessDestroyOriginal=True
        )
        self.assertEqual([(r[0], r[2]) for r in responses], [("Note/copy", "c0"), ("Note/set", "c0")])
        self.assertEqual(responses[0][1]["notCreated"]["bad"]["type"], "notFound")
        self.assertEqual(responses[1][1]["destroyed"], [original])
        self.assertEqual(responses[1][1]["accountId"], self.bob.account_id)
        self.assertEqual(self.ok("Note/get", accountId=self.bob.account_id, ids=[original])["notFound"], [original])

    def test_destroy_from_if_in_state(self):
        """
        destroyFromIfInState guards the implicit /set: a mismatch is an
        error response after the copy, and the copy stands.
        """
        (original,) = self.create("orig", account=self.bob.account_id)
        responses = self.copy(
            create={"k": {"id": original}}, onSuccessDestroyOriginal=True, destroyFromIfInState="77"
        )
        self.assertEqual(responses[0][0], "Note/copy")
        self.assertEqual(responses[1][0:1] + [responses[1][1]["type"]], ["error", "stateMismatch"])
        self.assertEqual(len(self.rows()), 2)

    def test_if_from_in_state(self):
        """
        ifFromInState and ifInState must match their account's state.
        """
        (original,) = self.create("orig", account=self.bob.account_id)
        ((_, response, _),) = self.copy(create={"k": {"id": original}}, ifFromInState="77")
        self.assertEqual(response["type"], "stateMismatch")
        ((_, response, _),) = self.copy(create={"k": {"id": original}}, ifInState="77")
        self.assertEqual(response["type"], "stateMismatch")

    def test_bad_overrides(self):
        """
        Unknown or server-set properties in a copy are invalidProperties.
        """
        (original,) = self.create("orig", account=self.bob.account_id)
        ((_, response, _),) = self.copy(create={"k": {"id": original, "colour": 1}, "l": {"id": original, "created": 3}})
        self.assertEqual(response["notCreated"]["k"]["properties"], ["colour"])
        self.assertEqual(response["notCreated"]["l"]["properties"], ["created"])

    def test_same_account(self):
        """
        fromAccountId and accountId must differ.
        """
        ((_, response, _),) = self.copy(fromAccountId=self.account, create={})
        self.assertEqual(response["type"], "invalidArguments")

    def test_read_only_destination(self):
        """
        Copying into a read-only account is accountReadOnly.
        """
        ((_, response, _),) = self.copy(accountId=self.carol.account_id, create={})
        self.assertEqual(response["type"], "accountReadOnly")

    def test_from_account_errors(self):
        """
        A fromAccountId that names no account the user may use is
        fromAccountNotFound, and one without the data type's capability
        fromAccountNotSupportedByMethod (RFC 8620 section 5.4), not the
        errors for accountId, so the client knows which account is wrong.
        """
        dave = add_principal(self.env, "dave")

        def lookup(env, txn, principal):
            yield AccountAccess(dave.account_id, "dave", False, False, frozenset())

        self.env.registry.account_lookups.append(lookup)
        ((_, response, _),) = self.copy(fromAccountId="nope", create={})
        self.assertEqual(response["type"], "fromAccountNotFound")
        ((_, response, _),) = self.copy(fromAccountId=dave.account_id, create={})
        self.assertEqual(response["type"], "fromAccountNotSupportedByMethod")
        ((_, response, _),) = self.copy(accountId="nope", create={})
        self.assertEqual(response["type"], "accountNotFound")

    def test_creation_id_usable_later(self):
        """
        The creation id of a copy resolves in later calls.
        """
        (original,) = self.create("orig", account=self.bob.account_id)
        responses = self.calls(
            [
                ["Note/copy", {"fromAccountId": self.bob.account_id, "accountId": self.account,
                               "create": {"k": {"id": original}}}, "c0"],
                ["Note/get", {"accountId": self.account, "ids": ["#k"], "properties": ["title"]}, "c1"],
            ]
        )
        self.assertEqual(responses[1][1]["list"], [{"id": responses[0][1]["created"]["k"]["id"], "title": "orig"}])


# The same tests on PostgreSQL (see tests/pg.py).
pg.add_postgresql_variants(globals(), ChangesTests, CopyTests, GetTests, QueryTests, SetTests)
