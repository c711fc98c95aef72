# -*- test-case-name: tests.web.test_api -*-
"""
End-to-end tests of the API resource (RFC 8620 section 3) over real HTTP:
request-level errors as problem documents, method-level errors, result
references, created ids and the request limits.
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

import orjson
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import globalLogPublisher

from jmapd.auth.passwords import hash_password
from jmapd.protocol.engine import CORE, Capability
from jmapd.protocol.errors import MethodError
from jmapd.service import build_registry
from jmapd.storage import accounts
from tests import pg
from tests.support import ServerTestCase

PROBLEM_JSON = b"application/problem+json"
ERROR = "urn:ietf:params:jmap:error:"
TEST_CAPABILITY = "urn:example:jmapd-test"


def content_type(response: Any) -> bytes:
    return b",".join(response.headers.getRawHeaders(b"content-type", []))


def assert_problem(
    test: Any, response: Any, body: bytes, status: int, type: str | None = None
) -> dict[str, Any]:
    """
    Assert an RFC 7807 problem answer with C{status} (and C{type}, which
    may be a JMAP error name); return the problem document.
    """
    test.assertEqual(response.code, status, body)
    test.assertEqual(content_type(response), PROBLEM_JSON)
    problem = orjson.loads(body)
    test.assertEqual(problem["status"], status)
    test.assertIsInstance(problem["detail"], str)
    if type is not None:
        test.assertEqual(problem["type"], type if ":" in type else ERROR + type)
    return problem  # type: ignore[no-any-return]


def registry_with_test_methods() -> Any:
    """
    The server's registry plus methods that exist only for these tests.
    """
    registry = build_registry()
    registry.add_capability(Capability(TEST_CAPABILITY, lambda env: {}, lambda env, txn, account_id: {}))

    @registry.method("Test/list", CORE)
    def test_list(ctx: Any, arguments: dict[str, Any]) -> dict[str, Any]:
        return {"list": [{"id": "a"}, {"id": "b"}], "nested": [{"ids": ["c", "d"]}, {"ids": ["e"]}]}

    @registry.method("Test/fail", CORE)
    def test_fail(ctx: Any, arguments: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("secret-internal-detail")

    @registry.method("Test/writeThenFail", CORE, write=True)
    def write_then_fail(ctx: Any, arguments: dict[str, Any]) -> dict[str, Any]:
        accounts.ensure_setting(ctx.txn, "test-setting", lambda: "written")
        raise MethodError("forbidden", "refused after writing")

    @registry.method("Test/create", CORE)
    def test_create(ctx: Any, arguments: dict[str, Any]) -> dict[str, Any]:
        ctx.created_ids[arguments["creationId"]] = arguments["id"]
        return {}

    @registry.method("Test/resolve", CORE)
    def test_resolve(ctx: Any, arguments: dict[str, Any]) -> dict[str, Any]:
        return {"id": ctx.resolve_id(arguments["ref"])}

    @registry.method("Test/needsCapability", TEST_CAPABILITY)
    def needs_capability(ctx: Any, arguments: dict[str, Any]) -> dict[str, Any]:
        return {}

    return registry


def post(server: Any, document: Any, auth: str = "alice") -> Any:
    body = document if isinstance(document, bytes) else orjson.dumps(document)
    return server.request("POST", "/jmap/", body, {b"content-type": [b"application/json"]}, auth=auth)


class RequestErrorTests(ServerTestCase):
    """
    A Request that cannot be processed at all is answered with a problem
    document whose type is the JMAP request-level error (section 3.6.1).
    """

    def test_not_json(self) -> Any:
        """
        A body that is not JSON is a 400 notJSON problem.
        """

        async def run() -> None:
            server = await self.start_server()
            server.add_account("alice")
            response, body = await post(server, b'{"using": [')
            assert_problem(self, response, body, 400, "notJSON")

        return ensureDeferred(run())

    def test_not_an_object(self) -> Any:
        """
        JSON that is not an object is a 400 notRequest problem.
        """

        async def run() -> None:
            server = await self.start_server()
            server.add_account("alice")
            response, body = await post(server, [CORE])
            assert_problem(self, response, body, 400, "notRequest")

        return ensureDeferred(run())

    def test_method_calls_wrong_shape(self) -> Any:
        """
        methodCalls that is not an array of [name, arguments, id] triples is
        a notRequest problem.
        """

        async def run() -> None:
            server = await self.start_server()
            server.add_account("alice")
            for calls in ({"a": 1}, [["Core/echo", {}]], [["Core/echo", [], "c0"]], [["Core/echo", {}, 1]]):
                response, body = await post(server, {"using": [CORE], "methodCalls": calls})
                assert_problem(self, response, body, 400, "notRequest")

        return ensureDeferred(run())

    def test_nested_too_deep(self) -> Any:
        """
        Core/echo of arguments nested 300 levels deep (JSON orjson reads but
        cannot write back) is a notJSON problem, not a 500 with a traceback
        in the log.
        """

        async def run() -> None:
            server = await self.start_server()
            server.add_account("alice")
            deep = b"[" * 300 + b"]" * 300
            document = b'{"using":["' + CORE.encode() + b'"],"methodCalls":[["Core/echo",{"a":' + deep + b'},"c0"]]}'
            response, body = await post(server, document)
            assert_problem(self, response, body, 400, "notJSON")

        return ensureDeferred(run())

    def test_using_not_a_list(self) -> Any:
        """
        using that is not an array of strings is a notRequest problem.
        """

        async def run() -> None:
            server = await self.start_server()
            server.add_account("alice")
            for using in (CORE, [1], None):
                response, body = await post(server, {"using": using, "methodCalls": []})
                assert_problem(self, response, body, 400, "notRequest")

        return ensureDeferred(run())

    def test_unknown_capability(self) -> Any:
        """
        A capability the server does not implement in using is an
        unknownCapability problem naming it.
        """

        async def run() -> None:
            server = await self.start_server()
            server.add_account("alice")
            response, body = await post(
                server, {"using": [CORE, "urn:example:nope"], "methodCalls": [["Core/echo", {}, "c0"]]}
            )
            problem = assert_problem(self, response, body, 400, "unknownCapability")
            self.assertIn("urn:example:nope", problem["detail"])

        return ensureDeferred(run())

    def test_max_size_request(self) -> Any:
        """
        A request of exactly maxSizeRequest bytes is processed; one byte
        more is a limit problem with limit maxSizeRequest.
        """

        async def run() -> None:
            server = await self.start_server(max_size_request=1000)
            server.add_account("alice")
            document = orjson.dumps({"using": [CORE], "methodCalls": [["Core/echo", {}, "c0"]]})
            at_limit = document + b" " * (1000 - len(document))
            response, body = await post(server, at_limit)
            self.assertEqual(response.code, 200, body)
            response, body = await post(server, at_limit + b" ")
            problem = assert_problem(self, response, body, 400, "limit")
            self.assertEqual(problem["limit"], "maxSizeRequest")

        return ensureDeferred(run())

    def test_max_calls_in_request(self) -> Any:
        """
        maxCallsInRequest method calls are processed; one more is a limit
        problem with limit maxCallsInRequest.
        """

        async def run() -> None:
            server = await self.start_server(max_calls_in_request=3)
            server.add_account("alice")
            calls = [["Core/echo", {}, f"c{i}"] for i in range(3)]
            response = await server.api(calls)
            self.assertEqual(len(response["methodResponses"]), 3)
            calls.append(["Core/echo", {}, "c3"])
            response, body = await post(server, {"using": [CORE], "methodCalls": calls})
            problem = assert_problem(self, response, body, 400, "limit")
            self.assertEqual(problem["limit"], "maxCallsInRequest")

        return ensureDeferred(run())

    def test_max_concurrent_requests(self) -> Any:
        """
        While an account has maxConcurrentRequests requests running, another
        one is refused with a limit problem (maxConcurrentRequests); other
        accounts are not affected, and once the running request ends the
        account may send again.
        """
        registry = registry_with_test_methods()
        entered: Deferred[None] = Deferred()
        release = threading.Event()

        @registry.method("Test/block", CORE)
        def block(ctx: Any, arguments: dict[str, Any]) -> dict[str, Any]:
            reactor.callFromThread(entered.callback, None)
            release.wait(30)
            return {}

        async def run() -> None:
            server = await self.start_server(registry=registry, max_concurrent_requests=1)
            self.addCleanup(release.set)
            server.add_account("alice")
            server.add_account("bob")
            blocked = ensureDeferred(server.api([["Test/block", {}, "c0"]]))
            await entered
            response, body = await post(server, {"using": [CORE], "methodCalls": [["Core/echo", {}, "c0"]]})
            problem = assert_problem(self, response, body, 400, "limit")
            self.assertEqual(problem["limit"], "maxConcurrentRequests")
            other = await server.api([["Core/echo", {"who": "bob"}, "c0"]], auth="bob")
            self.assertEqual(other["methodResponses"], [["Core/echo", {"who": "bob"}, "c0"]])
            release.set()
            done = await blocked
            self.assertEqual(done["methodResponses"], [["Test/block", {}, "c0"]])
            again = await server.api([["Core/echo", {}, "c1"]])
            self.assertEqual(again["methodResponses"], [["Core/echo", {}, "c1"]])

        return ensureDeferred(run())


class HTTPTests(ServerTestCase):
    """
    HTTP-level answers outside JMAP: methods and paths the server does not
    serve.
    """

    def test_get_api(self) -> Any:
        """
        GET on the API URL is 405 with an Allow header naming POST, as a
        problem document.
        """

        async def run() -> None:
            server = await self.start_server()
            server.add_account("alice")
            response, body = await server.request("GET", "/jmap/")
            assert_problem(self, response, body, 405)
            allowed = b",".join(response.headers.getRawHeaders(b"allow", []))
            self.assertIn(b"POST", allowed)
            self.assertNotIn(b"GET", allowed)

        return ensureDeferred(run())

    def test_unknown_paths(self) -> Any:
        """
        Paths the server does not serve are 404 problem documents, whatever
        part of the tree they are under.
        """

        async def run() -> None:
            server = await self.start_server()
            server.add_account("alice")
            for method, path in (
                ("GET", "/nope"),
                ("GET", "/"),
                ("GET", "/jmap/nope"),
                ("POST", "/jmap//nope"),
                ("GET", "/.well-known"),
                ("GET", "/.well-known/"),
                ("GET", "/.well-known/nope"),
                ("GET", "/.well-known/jmap/nope"),
                ("POST", "/jmap/upload/"),
                ("GET", "/jmap/download/"),
            ):
                response, body = await server.request(method, path)
                assert_problem(self, response, body, 404)

        return ensureDeferred(run())

    def test_api_without_slash(self) -> Any:
        """
        /jmap (without the trailing slash) is the API too.
        """

        async def run() -> None:
            server = await self.start_server()
            server.add_account("alice")
            body = orjson.dumps({"using": [CORE], "methodCalls": [["Core/echo", {"x": 1}, "c0"]]})
            response, content = await server.request("POST", "/jmap", body)
            self.assertEqual(response.code, 200, content)
            self.assertEqual(orjson.loads(content)["methodResponses"], [["Core/echo", {"x": 1}, "c0"]])

        return ensureDeferred(run())


class MethodTests(ServerTestCase):
    """
    Method calls and method-level errors (section 3.6.2).
    """

    def test_echo(self) -> Any:
        """
        Core/echo returns its arguments unchanged under its method call id,
        as application/json.
        """

        async def run() -> None:
            server = await self.start_server()
            server.add_account("alice")
            arguments = {"hello": True, "high": 5, "list": [1, "two", None], "nested": {"a": {}}}
            response, body = await post(
                server, {"using": [CORE], "methodCalls": [["Core/echo", arguments, "c1"]]}
            )
            self.assertEqual(response.code, 200)
            self.assertEqual(content_type(response), b"application/json")
            decoded = orjson.loads(body)
            self.assertEqual(decoded["methodResponses"], [["Core/echo", arguments, "c1"]])
            self.assertIsInstance(decoded["sessionState"], str)

        return ensureDeferred(run())

    def test_unknown_method(self) -> Any:
        """
        A method the server does not know is an unknownMethod error
        response; the calls around it still run.
        """

        async def run() -> None:
            server = await self.start_server()
            server.add_account("alice")
            response = await server.api(
                [["Core/echo", {}, "c0"], ["Nope/get", {}, "c1"], ["Core/echo", {"after": 1}, "c2"]]
            )
            responses = response["methodResponses"]
            self.assertEqual(responses[0], ["Core/echo", {}, "c0"])
            self.assertEqual(responses[1][0], "error")
            self.assertEqual(responses[1][1]["type"], "unknownMethod")
            self.assertEqual(responses[1][2], "c1")
            self.assertEqual(responses[2], ["Core/echo", {"after": 1}, "c2"])

        return ensureDeferred(run())

    def test_method_capability_not_used(self) -> Any:
        """
        A known method whose capability is not in using is an unknownMethod
        error; with the capability in using it runs.
        """

        async def run() -> None:
            server = await self.start_server(registry=registry_with_test_methods())
            server.add_account("alice")
            response = await server.api([["Test/needsCapability", {}, "c0"]])
            [[name, arguments, call_id]] = response["methodResponses"]
            self.assertEqual((name, arguments["type"], call_id), ("error", "unknownMethod", "c0"))
            response = await server.api([["Test/needsCapability", {}, "c0"]], using=[CORE, TEST_CAPABILITY])
            self.assertEqual(response["methodResponses"], [["Test/needsCapability", {}, "c0"]])

        return ensureDeferred(run())

    def test_invalid_arguments(self) -> Any:
        """
        Arguments of the wrong type are an invalidArguments error.
        """

        async def run() -> None:
            server = await self.start_server()
            alice = server.add_account("alice")
            bob = server.add_account("bob")
            response = await server.api(
                [["Blob/copy", {"fromAccountId": alice, "accountId": bob, "blobIds": "not-a-list"}, "c0"]]
            )
            [[name, arguments, call_id]] = response["methodResponses"]
            self.assertEqual((name, arguments["type"], call_id), ("error", "invalidArguments", "c0"))
            self.assertIn("blobIds", arguments["description"])

        return ensureDeferred(run())

    def test_account_not_found(self) -> Any:
        """
        Blob/copy to another user's account (not shared with the caller) is
        accountNotFound, the same as for an account that does not exist;
        from such an account it is fromAccountNotFound (RFC 8620 section
        6.3).
        """

        async def run() -> None:
            server = await self.start_server()
            alice = server.add_account("alice")
            bob = server.add_account("bob")
            response = await server.api(
                [
                    ["Blob/copy", {"fromAccountId": alice, "accountId": bob, "blobIds": []}, "c0"],
                    ["Blob/copy", {"fromAccountId": alice, "accountId": "Anope", "blobIds": []}, "c1"],
                    ["Blob/copy", {"fromAccountId": bob, "accountId": alice, "blobIds": []}, "c2"],
                ]
            )
            self.assertEqual(
                [(name, arguments["type"]) for name, arguments, _call_id in response["methodResponses"]],
                [("error", "accountNotFound"), ("error", "accountNotFound"), ("error", "fromAccountNotFound")],
            )

        return ensureDeferred(run())

    def test_server_fail(self) -> Any:
        """
        A method that raises is a serverFail error whose description holds
        an error id, the same id the server logs with the traceback; the
        response holds neither the traceback nor the exception's text, and
        the following calls still run.
        """
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)

        async def run() -> None:
            server = await self.start_server(registry=registry_with_test_methods())
            server.add_account("alice")
            response, body = await post(
                server,
                {"using": [CORE], "methodCalls": [["Test/fail", {}, "c0"], ["Core/echo", {}, "c1"]]},
            )
            self.assertEqual(response.code, 200)
            self.assertNotIn(b"secret-internal-detail", body)
            self.assertNotIn(b"Traceback", body)
            responses = orjson.loads(body)["methodResponses"]
            self.assertEqual(responses[0][0], "error")
            self.assertEqual(responses[0][1]["type"], "serverFail")
            self.assertEqual(responses[0][2], "c0")
            self.assertEqual(responses[1], ["Core/echo", {}, "c1"])
            logged = [e for e in events if e.get("error_id") and e.get("method") == "Test/fail"]
            self.assertEqual(len(logged), 1)
            self.assertIn(logged[0]["error_id"], responses[0][1]["description"])
            self.assertIn("secret-internal-detail", logged[0]["traceback"])

        return ensureDeferred(run())

    def test_failed_method_leaves_no_trace(self) -> Any:
        """
        What a method wrote before failing is rolled back; the error is its
        response.
        """

        async def run() -> None:
            server = await self.start_server(registry=registry_with_test_methods())
            server.add_account("alice")
            response = await server.api([["Test/writeThenFail", {}, "c0"]])
            [[name, arguments, _]] = response["methodResponses"]
            self.assertEqual((name, arguments["type"]), ("error", "forbidden"))
            self.assertIsNone(server.env.database.run_sync(accounts.get_setting, "test-setting"))

        return ensureDeferred(run())


class ResultReferenceTests(ServerTestCase):
    """
    Result references (section 3.7) between the calls of one request.
    """

    def reference(self, path: str, result_of: str = "c0", name: str = "Test/list") -> dict[str, str]:
        return {"resultOf": result_of, "name": name, "path": path}

    async def call_with(self, server: Any, arguments: dict[str, Any]) -> list[Any]:
        response = await server.api([["Test/list", {}, "c0"], ["Core/echo", arguments, "c1"]])
        return response["methodResponses"][1]  # type: ignore[no-any-return]

    def test_wildcard_path(self) -> Any:
        """
        A path with * maps over an array (and flattens arrays of arrays):
        /list/*/id is the list of ids; the reference is replaced by the
        plain argument.
        """

        async def run() -> None:
            server = await self.start_server(registry=registry_with_test_methods())
            server.add_account("alice")
            reply = await self.call_with(
                server, {"#ids": self.reference("/list/*/id"), "#all": self.reference("/nested/*/ids")}
            )
            self.assertEqual(reply, ["Core/echo", {"ids": ["a", "b"], "all": ["c", "d", "e"]}, "c1"])

        return ensureDeferred(run())

    def test_plain_path(self) -> Any:
        """
        A path without * picks one value.
        """

        async def run() -> None:
            server = await self.start_server(registry=registry_with_test_methods())
            server.add_account("alice")
            reply = await self.call_with(server, {"#first": self.reference("/list/1/id")})
            self.assertEqual(reply, ["Core/echo", {"first": "b"}, "c1"])

        return ensureDeferred(run())

    def test_bad_references(self) -> Any:
        """
        A path that leads nowhere, an unknown resultOf, a name that does not
        match the referenced response, or a malformed ResultReference is
        invalidResultReference.
        """

        async def run() -> None:
            server = await self.start_server(registry=registry_with_test_methods())
            server.add_account("alice")
            for reference in (
                self.reference("/nope"),
                self.reference("/list/7/id"),
                self.reference("list"),
                self.reference("/list/*/id", result_of="c9"),
                self.reference("/list/*/id", name="Core/echo"),
                {"resultOf": "c0", "path": "/list"},
                "c0",
            ):
                name, arguments, call_id = await self.call_with(server, {"#ids": reference})
                self.assertEqual(
                    (name, arguments["type"], call_id), ("error", "invalidResultReference", "c1")
                )

        return ensureDeferred(run())

    def test_reference_to_later_call(self) -> Any:
        """
        A reference can only point at responses already made: resultOf of a
        later call is invalidResultReference.
        """

        async def run() -> None:
            server = await self.start_server(registry=registry_with_test_methods())
            server.add_account("alice")
            response = await server.api(
                [
                    ["Core/echo", {"#ids": self.reference("/list", result_of="c1")}, "c0"],
                    ["Test/list", {}, "c1"],
                ]
            )
            name, arguments, _ = response["methodResponses"][0]
            self.assertEqual((name, arguments["type"]), ("error", "invalidResultReference"))

        return ensureDeferred(run())

    def test_both_forms(self) -> Any:
        """
        An argument given both plainly and as a reference (x and #x) is
        invalidArguments.
        """

        async def run() -> None:
            server = await self.start_server(registry=registry_with_test_methods())
            server.add_account("alice")
            name, arguments, _ = await self.call_with(
                server, {"ids": ["z"], "#ids": self.reference("/list/*/id")}
            )
            self.assertEqual((name, arguments["type"]), ("error", "invalidArguments"))

        return ensureDeferred(run())


class CreatedIdsTests(ServerTestCase):
    """
    The createdIds of a Request (section 3.3) and of its Response.
    """

    def test_echoed_and_updated(self) -> Any:
        """
        createdIds given in the request are usable by the methods and come
        back in the response with the ids created during the request added.
        """

        async def run() -> None:
            server = await self.start_server(registry=registry_with_test_methods())
            server.add_account("alice")
            response = await server.api(
                [
                    ["Test/create", {"creationId": "new", "id": "M42"}, "c0"],
                    ["Test/resolve", {"ref": "#new"}, "c1"],
                    ["Test/resolve", {"ref": "#given"}, "c2"],
                    ["Test/resolve", {"ref": "#unknown"}, "c3"],
                ],
                created_ids={"given": "M1"},
            )
            self.assertEqual(response["createdIds"], {"given": "M1", "new": "M42"})
            self.assertEqual(
                [r[1] for r in response["methodResponses"][1:]], [{"id": "M42"}, {"id": "M1"}, {"id": None}]
            )

        return ensureDeferred(run())

    def test_empty_echoed(self) -> Any:
        """
        An empty createdIds in the request comes back (empty).
        """

        async def run() -> None:
            server = await self.start_server()
            server.add_account("alice")
            response = await server.api([["Core/echo", {}, "c0"]], created_ids={})
            self.assertEqual(response["createdIds"], {})

        return ensureDeferred(run())

    def test_absent(self) -> Any:
        """
        Without createdIds in the request, the response has none, even when
        a method created something.
        """

        async def run() -> None:
            server = await self.start_server(registry=registry_with_test_methods())
            server.add_account("alice")
            response = await server.api([["Test/create", {"creationId": "new", "id": "M42"}, "c0"]])
            self.assertNotIn("createdIds", response)

        return ensureDeferred(run())

    def test_invalid(self) -> Any:
        """
        createdIds that is not a map of strings is a notRequest problem.
        """

        async def run() -> None:
            server = await self.start_server()
            server.add_account("alice")
            response, body = await post(server, {"using": [CORE], "methodCalls": [], "createdIds": {"a": 1}})
            assert_problem(self, response, body, 400, "notRequest")

        return ensureDeferred(run())


# The same tests on PostgreSQL (see tests/pg.py).
pg.add_postgresql_variants(globals(), CreatedIdsTests, HTTPTests, MethodTests, RequestErrorTests, ResultReferenceTests)


class TransactionFreeTests(ServerTestCase):
    """
    Requests made only of methods that read no stored data (Core/echo) skip
    the database transaction while nothing has been committed since the
    account's last one, and never answer differently because of it.
    """

    async def counted(self) -> tuple[Any, list[int]]:
        server = await self.start_server()
        self.account_id = server.add_account("alice")
        database = server.env.database
        transactions = [0]
        run_interaction = database.run_interaction

        def counting(*args: Any, **kwargs: Any) -> Any:
            transactions[0] += 1
            return run_interaction(*args, **kwargs)

        self.patch(database, "run_interaction", counting)
        return server, transactions

    def test_echo_without_transaction(self) -> Any:
        """
        After one Core/echo ran in a transaction, further ones with nothing
        committed in between run none, and still carry the Session state
        the Session resource reports.
        """

        async def run() -> None:
            server, transactions = await self.counted()
            first = await server.api([["Core/echo", {"n": 1}, "c1"]])
            base = transactions[0]
            for n in range(3):
                response = await server.api([["Core/echo", {"n": n}, "c1"]])
                self.assertEqual(response["methodResponses"], [["Core/echo", {"n": n}, "c1"]])
                self.assertEqual(response["sessionState"], first["sessionState"])
            self.assertEqual(transactions[0], base)
            _, body = await server.request("GET", "/.well-known/jmap")
            self.assertEqual(orjson.loads(body)["state"], first["sessionState"])

        return ensureDeferred(run())

    def test_commit_elsewhere(self) -> Any:
        """
        A commit by another connection (another process, here a plain
        sqlite3 connection changing the password as jmapd-admin would)
        sends the next Core/echo through a transaction again, and the old
        password is refused at once.
        """

        async def run() -> None:
            server, transactions = await self.counted()
            await server.api([["Core/echo", {}, "c1"]])
            base = transactions[0]
            await server.api([["Core/echo", {}, "c1"]])
            self.assertEqual(transactions[0], base)
            other = sqlite3.connect(server.env.database.engine.path, isolation_level=None)
            self.addCleanup(other.close)
            other.execute(
                "UPDATE accounts SET password_hash = ?, auth_version = auth_version + 1 WHERE name = 'alice'",
                (hash_password("another password"),),
            )
            response, body = await server.request(
                "POST", "/jmap/", orjson.dumps({"using": [CORE], "methodCalls": [["Core/echo", {}, "c1"]]})
            )
            self.assertEqual(response.code, 401, body)

        return ensureDeferred(run())

    def test_own_write_revalidates(self) -> Any:
        """
        A request that changed data moves the counter: the next Core/echo
        runs in a transaction again, so its Session state is the one after
        the change (a new Mailbox does not change it; a new account shared
        would).
        """

        async def run() -> None:
            server, transactions = await self.counted()
            await server.api([["Core/echo", {}, "c1"]])
            base = transactions[0]
            await server.api(
                [["Mailbox/set", {"accountId": self.account_id, "create": {"m": {"name": "New"}}}, "c1"]],
                using=[CORE, "urn:ietf:params:jmap:mail"],
            )
            self.assertEqual(transactions[0], base + 1)
            await server.api([["Core/echo", {}, "c1"]])
            self.assertEqual(transactions[0], base + 2)
            await server.api([["Core/echo", {}, "c1"]])
            self.assertEqual(transactions[0], base + 2)

        return ensureDeferred(run())

    def test_mixed_request_uses_transaction(self) -> Any:
        """
        A request with Core/echo and a method that reads data always runs
        in a transaction.
        """

        async def run() -> None:
            server, transactions = await self.counted()
            await server.api([["Core/echo", {}, "c1"]])
            base = transactions[0]
            for _ in range(2):
                response = await server.api(
                    [["Core/echo", {}, "c1"], ["Mailbox/get", {"accountId": self.account_id, "ids": []}, "c2"]],
                    using=[CORE, "urn:ietf:params:jmap:mail"],
                )
                self.assertEqual(response["methodResponses"][1][0], "Mailbox/get")
            self.assertEqual(transactions[0], base + 2)

        return ensureDeferred(run())
