"""
Tests for L{jmapd.protocol.engine}: running the method calls of a Request
in one transaction, result references, creation ids and method-level
errors (RFC 8620 sections 3.4 to 3.7).
"""

import os

import orjson
from twisted.internet import task
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from jmapd.blobs.store import FileBlobStore
from jmapd.config import default_config
from jmapd.environment import Environment
from jmapd.protocol import core, engine
from jmapd.protocol.engine import CORE, AccountAccess, Capability, Principal, Registry, ResponseList, execute
from jmapd.protocol.errors import MethodError
from jmapd.protocol.request import parse_request
from jmapd.storage import accounts
from jmapd.storage.database import Database
from tests import pg

TEST = "urn:test:engine"


def make_environment(testcase, registry=None, **config):
    """
    An Environment on a fresh migrated database (a SQLite file, or for a
    C{...OnPostgreSQL} test case a PostgreSQL database, see L{tests.pg})
    and blob directory, with a L{task.Clock}; Core is registered.
    """
    directory = os.path.abspath(testcase.mktemp())
    os.makedirs(directory)
    database = Database(pg.make_engine(testcase, directory))
    database.migrate()
    testcase.addCleanup(database.close)
    if registry is None:
        registry = Registry()
    core.register(registry)
    return Environment(
        config=default_config(db_path=directory, **config),
        registry=registry,
        database=database,
        blobs=FileBlobStore(os.path.join(directory, "blobs")),
        clock=task.Clock(),
    )


def add_principal(env, name):
    """
    Create an account and return the Principal for it.
    """
    account = env.database.run_sync(accounts.add_account, name, None, write=True)
    return Principal(account.id, name)


def run_request(env, principal, calls, using=(CORE,), created_ids=None):
    """
    Parse and execute a request in one write transaction, as the API
    resource does, and return the Response object.
    """
    document = {"using": list(using), "methodCalls": calls}
    if created_ids is not None:
        document["createdIds"] = created_ids
    request = parse_request(orjson.dumps(document), env.registry.capabilities, env.config.max_calls_in_request)
    return env.database.run_sync(lambda txn: execute(txn, env, principal, request, "s1"), write=True)


def engine_registry():
    """
    A registry with methods that write, fail and check accounts.
    """
    registry = Registry()
    registry.add_capability(Capability(TEST, lambda env: {}, lambda env, txn, account_id: {}))
    registry.add_capability(Capability("urn:test:other", lambda env: {}))

    def insert(ctx, arguments):
        ctx.txn.execute("INSERT INTO t (x) VALUES (?)", (arguments["x"],))
        if arguments.get("fail") == "method":
            raise MethodError("forbidden", "no", extra="kept")
        if arguments.get("fail") == "crash":
            raise RuntimeError("secret detail")
        return {"x": arguments["x"], "list": arguments.get("list", [])}

    def account(ctx, arguments):
        access = ctx.account(arguments.get("accountId"), arguments.get("capability", TEST), arguments.get("write", False))
        return {"accountId": access.account_id}

    def create(ctx, arguments):
        ctx.created_ids[arguments["cid"]] = arguments["id"]
        return {"id": arguments["id"], "resolved": ctx.resolve_id("#" + arguments["cid"])}

    def resolve(ctx, arguments):
        return {"id": ctx.resolve_id(arguments["id"])}

    def two(ctx, arguments):
        return ResponseList([("Test/two", {"n": 1}), ("Test/implicit", {"n": 2})])

    registry.add_method("Test/insert", TEST, insert, write=True)
    registry.add_method("Test/account", TEST, account)
    registry.add_method("Test/create", TEST, create, write=True)
    registry.add_method("Test/resolve", TEST, resolve)
    registry.add_method("Test/two", TEST, two)
    registry.add_method("Other/method", "urn:test:other", lambda ctx, arguments: {})
    return registry


class ExecuteTests(SynchronousTestCase):
    def setUp(self):
        self.env = make_environment(self, engine_registry())
        self.env.database.run_sync(lambda txn: txn.execute("CREATE TABLE t (x INTEGER)"), write=True)
        self.alice = add_principal(self.env, "alice")
        self.bob = add_principal(self.env, "bob")

    def run_calls(self, calls, using=(CORE, TEST), **kwargs):
        return run_request(self.env, self.alice, calls, using, **kwargs)

    def values(self):
        return self.env.database.run_sync(lambda txn: [r[0] for r in txn.fetchall("SELECT x FROM t ORDER BY x")])

    def test_order_and_session_state(self):
        """
        Responses come in call order with their call ids, and the
        Response carries the session state given to execute.
        """
        response = self.run_calls(
            [["Core/echo", {"n": 1}, "a"], ["Test/insert", {"x": 5}, "b"], ["Core/echo", {"n": 2}, "c"]]
        )
        self.assertEqual(
            response["methodResponses"],
            [["Core/echo", {"n": 1}, "a"], ["Test/insert", {"x": 5, "list": []}, "b"], ["Core/echo", {"n": 2}, "c"]],
        )
        self.assertEqual(response["sessionState"], "s1")
        self.assertNotIn("createdIds", response)

    def test_method_error_rolls_back_only_that_call(self):
        """
        A call that fails with a method error leaves none of its writes,
        and the calls before and after it keep theirs.
        """
        response = self.run_calls(
            [
                ["Test/insert", {"x": 1}, "a"],
                ["Test/insert", {"x": 2, "fail": "method"}, "b"],
                ["Test/insert", {"x": 3}, "c"],
            ]
        )
        self.assertEqual(
            response["methodResponses"][1], ["error", {"type": "forbidden", "description": "no", "extra": "kept"}, "b"]
        )
        self.assertEqual(self.values(), [1, 3])

    def test_server_fail(self):
        """
        An unexpected exception is serverFail with an error id that is in
        the log; the response holds no traceback or exception text, and
        the call's writes are undone.
        """
        events = []
        self.patch(engine, "log", Logger(observer=events.append))
        response = self.run_calls([["Test/insert", {"x": 1, "fail": "crash"}, "a"], ["Test/insert", {"x": 2}, "b"]])
        name, arguments, call_id = response["methodResponses"][0]
        self.assertEqual((name, arguments["type"], call_id), ("error", "serverFail", "a"))
        self.assertNotIn("Traceback", arguments["description"])
        self.assertNotIn("secret detail", arguments["description"])
        (event,) = events
        self.assertIn(event["error_id"], arguments["description"])
        self.assertIn("secret detail", event["traceback"])
        self.assertEqual(self.values(), [2])

    def test_unknown_method(self):
        """
        A method the server does not know is unknownMethod; processing
        continues.
        """
        response = self.run_calls([["Nope/get", {}, "a"], ["Core/echo", {}, "b"]])
        self.assertEqual(response["methodResponses"][0][0], "error")
        self.assertEqual(response["methodResponses"][0][1]["type"], "unknownMethod")
        self.assertEqual(response["methodResponses"][1], ["Core/echo", {}, "b"])

    def test_capability_not_in_using(self):
        """
        A known method whose capability is not in 'using' is unknownMethod.
        """
        response = self.run_calls([["Test/insert", {"x": 1}, "a"]], using=(CORE,))
        self.assertEqual(response["methodResponses"][0][1]["type"], "unknownMethod")
        self.assertEqual(self.values(), [])

    def test_response_list(self):
        """
        A method returning a ResponseList adds every response under its
        call id.
        """
        response = self.run_calls([["Test/two", {}, "a"]])
        self.assertEqual(
            response["methodResponses"], [["Test/two", {"n": 1}, "a"], ["Test/implicit", {"n": 2}, "a"]]
        )

    def test_is_write(self):
        """
        A request needs a write transaction when any of its methods
        writes.
        """
        registry = self.env.registry
        read = parse_request(
            orjson.dumps({"using": [CORE], "methodCalls": [["Core/echo", {}, "a"], ["Nope", {}, "b"]]}),
            registry.capabilities, 16,
        )
        write = parse_request(
            orjson.dumps({"using": [CORE], "methodCalls": [["Core/echo", {}, "a"], ["Test/insert", {}, "b"]]}),
            registry.capabilities, 16,
        )
        self.assertFalse(registry.is_write(read))
        self.assertTrue(registry.is_write(write))


class CreatedIdsTests(SynchronousTestCase):
    def setUp(self):
        self.env = make_environment(self, engine_registry())
        self.alice = add_principal(self.env, "alice")

    def test_echoed_when_given(self):
        """
        createdIds is returned when the request had it, with the ids
        created by this request added.
        """
        response = run_request(
            self.env, self.alice, [["Test/create", {"cid": "k2", "id": "real2"}, "a"]], (CORE, TEST),
            created_ids={"k1": "real1"},
        )
        self.assertEqual(response["createdIds"], {"k1": "real1", "k2": "real2"})

    def test_not_returned_when_not_given(self):
        """
        Without createdIds in the request, the response has none even when
        objects were created.
        """
        response = run_request(self.env, self.alice, [["Test/create", {"cid": "k", "id": "r"}, "a"]], (CORE, TEST))
        self.assertNotIn("createdIds", response)

    def test_resolve_across_calls(self):
        """
        A creation id made by one call, or given in createdIds, resolves in
        later calls; an unknown one resolves to None; a plain id is itself.
        """
        response = run_request(
            self.env,
            self.alice,
            [
                ["Test/create", {"cid": "k", "id": "r"}, "a"],
                ["Test/resolve", {"id": "#k"}, "b"],
                ["Test/resolve", {"id": "#given"}, "c"],
                ["Test/resolve", {"id": "#unknown"}, "d"],
                ["Test/resolve", {"id": "plain"}, "e"],
            ],
            (CORE, TEST),
            created_ids={"given": "g1"},
        )
        self.assertEqual(
            [r[1]["id"] for r in response["methodResponses"][1:]], ["r", "g1", None, "plain"]
        )


class ResultReferenceTests(SynchronousTestCase):
    def setUp(self):
        self.env = make_environment(self, engine_registry())
        self.env.database.run_sync(lambda txn: txn.execute("CREATE TABLE t (x INTEGER)"), write=True)
        self.alice = add_principal(self.env, "alice")

    def echo_ref(self, reference, first=None):
        """
        Run Core/echo with {"list": ...} then Core/echo with '#value' as
        C{reference}; return the second response.
        """
        first = first if first is not None else {"list": [{"id": "a", "ids": ["x", "y"]}, {"id": "b", "ids": ["z"]}]}
        response = run_request(
            self.env, self.alice, [["Core/echo", first, "c0"], ["Core/echo", {"#value": reference}, "c1"]]
        )
        return response["methodResponses"][1]

    def test_resolved(self):
        """
        '#name' is replaced by the value the pointer names in the earlier
        response.
        """
        self.assertEqual(
            self.echo_ref({"resultOf": "c0", "name": "Core/echo", "path": "/list/0/id"}),
            ["Core/echo", {"value": "a"}, "c1"],
        )

    def test_star_flattened(self):
        """
        '*' maps over the array and flattens arrays of results.
        """
        self.assertEqual(
            self.echo_ref({"resultOf": "c0", "name": "Core/echo", "path": "/list/*/ids"})[1],
            {"value": ["x", "y", "z"]},
        )

    def assertInvalidReference(self, reference):
        name, arguments, call_id = self.echo_ref(reference)
        self.assertEqual((name, arguments["type"], call_id), ("error", "invalidResultReference", "c1"))

    def test_result_of_missing(self):
        """
        A resultOf that names no earlier call fails.
        """
        self.assertInvalidReference({"resultOf": "nope", "name": "Core/echo", "path": "/list"})

    def test_name_mismatch(self):
        """
        A response with the right call id but another name does not
        resolve.
        """
        self.assertInvalidReference({"resultOf": "c0", "name": "Foo/get", "path": "/list"})

    def test_bad_path(self):
        """
        A path that names nothing, or is malformed, fails.
        """
        self.assertInvalidReference({"resultOf": "c0", "name": "Core/echo", "path": "/nothing"})
        self.assertInvalidReference({"resultOf": "c0", "name": "Core/echo", "path": "list"})
        self.assertInvalidReference({"resultOf": "c0", "name": "Core/echo", "path": "/list/9"})

    def test_malformed_reference(self):
        """
        A '#name' value that is not a ResultReference fails.
        """
        for reference in ("text", {"resultOf": "c0", "name": "Core/echo"}, {"resultOf": "c0", "name": 1, "path": ""},
                          {"resultOf": "c0", "name": "Core/echo", "path": "", "extra": 1}):
            self.assertInvalidReference(reference)

    def test_both_forms(self):
        """
        'name' and '#name' together are invalidArguments.
        """
        response = run_request(
            self.env,
            self.alice,
            [
                ["Core/echo", {"a": 1}, "c0"],
                ["Core/echo", {"a": 1, "#a": {"resultOf": "c0", "name": "Core/echo", "path": "/a"}}, "c1"],
            ],
        )
        self.assertEqual(response["methodResponses"][1][1]["type"], "invalidArguments")

    def test_reference_to_error_not_resolved(self):
        """
        A reference to a call that failed does not resolve against the
        error response under the method's name.
        """
        response = run_request(
            self.env,
            self.alice,
            [
                ["Test/insert", {"x": 1, "fail": "method"}, "c0"],
                ["Core/echo", {"#v": {"resultOf": "c0", "name": "Test/insert", "path": "/x"}}, "c1"],
            ],
            (CORE, TEST),
        )
        self.assertEqual(response["methodResponses"][1][1]["type"], "invalidResultReference")

    def test_reference_does_not_run_method(self):
        """
        A method whose reference fails does not run (no writes).
        """
        run_request(
            self.env,
            self.alice,
            [["Test/insert", {"#x": {"resultOf": "zz", "name": "Core/echo", "path": "/x"}}, "c0"]],
            (CORE, TEST),
        )
        self.assertEqual(self.env.database.run_sync(lambda txn: txn.fetchvalue("SELECT count(*) FROM t")), 0)


class AccountTests(SynchronousTestCase):
    def setUp(self):
        self.env = make_environment(self, engine_registry())
        self.alice = add_principal(self.env, "alice")
        self.shared = add_principal(self.env, "shared")

        def lookup(env, txn, principal):
            if principal.account_id == self.alice.account_id:
                yield AccountAccess(self.shared.account_id, "shared", False, True, frozenset({"urn:test:other"}))

        self.env.registry.account_lookups.append(lookup)

    def check(self, **arguments):
        response = run_request(self.env, self.alice, [["Test/account", arguments, "c0"]], (CORE, TEST))
        return response["methodResponses"][0]

    def test_own_account(self):
        """
        The principal's own account supports every account capability.
        """
        self.assertEqual(self.check(accountId=self.alice.account_id, write=True)[1],
                         {"accountId": self.alice.account_id})

    def test_account_not_found(self):
        """
        An account the principal cannot see, or no accountId, is
        accountNotFound.
        """
        other = add_principal(self.env, "other")
        for account_id in (other.account_id, "nope", None, 5):
            self.assertEqual(self.check(accountId=account_id)[1]["type"], "accountNotFound")

    def test_not_supported(self):
        """
        A visible account without the method's capability is
        accountNotSupportedByMethod; Core always applies.
        """
        self.assertEqual(
            self.check(accountId=self.shared.account_id)[1]["type"], "accountNotSupportedByMethod"
        )
        self.assertEqual(self.check(accountId=self.shared.account_id, capability=CORE)[0], "Test/account")

    def test_read_only(self):
        """
        Writing to a read-only account is accountReadOnly.
        """
        self.assertEqual(
            self.check(accountId=self.shared.account_id, capability="urn:test:other", write=True)[1]["type"],
            "accountReadOnly",
        )

    def test_accounts_listed(self):
        """
        The registry lists the own account first-hand and the lookups'
        accounts; the own account is personal and writable.
        """
        found = self.env.database.run_sync(
            lambda txn: self.env.registry.accounts(self.env, txn, self.alice)
        )
        self.assertEqual(set(found), {self.alice.account_id, self.shared.account_id})
        own = found[self.alice.account_id]
        self.assertTrue(own.is_personal)
        self.assertFalse(own.is_read_only)
        self.assertEqual(own.capabilities, frozenset({TEST}))


# The same tests on PostgreSQL (see tests/pg.py).
pg.add_postgresql_variants(globals(), AccountTests, CreatedIdsTests, ExecuteTests, ResultReferenceTests)
