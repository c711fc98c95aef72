"""
Tests for L{jmapd.protocol.request.parse_request}: the request-level
errors of RFC 8620 section 3.6.1.
"""

import orjson
from twisted.trial.unittest import SynchronousTestCase

from jmapd.protocol.errors import ERROR_PREFIX, RequestError
from jmapd.protocol.request import Invocation, parse_request

CORE = "urn:ietf:params:jmap:core"
MAIL = "urn:ietf:params:jmap:mail"
KNOWN = {CORE, MAIL}


def body(document):
    return orjson.dumps(document)


class ParseRequestTests(SynchronousTestCase):
    def assertRequestError(self, raw, type, status=400, max_calls=16):
        """
        Parsing C{raw} fails with the request-level error C{type}.
        """
        error = self.assertRaises(RequestError, parse_request, raw, KNOWN, max_calls)
        self.assertEqual(error.type, ERROR_PREFIX + type)
        self.assertEqual(error.status, status)
        return error

    def test_valid(self):
        """
        A valid request becomes a Request with its invocations in order.
        """
        request = parse_request(
            body(
                {
                    "using": [CORE],
                    "methodCalls": [["Core/echo", {"a": 1}, "c0"], ["Core/echo", {}, "c1"]],
                }
            ),
            KNOWN,
            16,
        )
        self.assertEqual(request.using, frozenset({CORE}))
        self.assertEqual(
            request.method_calls, (Invocation("Core/echo", {"a": 1}, "c0"), Invocation("Core/echo", {}, "c1"))
        )
        self.assertIsNone(request.created_ids)

    def test_created_ids(self):
        """
        A createdIds map is kept.
        """
        request = parse_request(
            body({"using": [], "methodCalls": [], "createdIds": {"k": "id1"}}), KNOWN, 16
        )
        self.assertEqual(request.created_ids, {"k": "id1"})

    def test_not_json(self):
        """
        A body that is not JSON is notJSON; the problem has type, status
        and detail.
        """
        error = self.assertRequestError(b"{not json", "notJSON")
        problem = error.problem()
        self.assertEqual(problem["type"], ERROR_PREFIX + "notJSON")
        self.assertEqual(problem["status"], 400)
        self.assertIn("detail", problem)
        self.assertNotIn("limit", problem)

    def test_nesting_deeper_than_orjson_writes(self):
        """
        A request nested 254 levels deep parses; one level more is notJSON
        naming the limit (orjson reads 1024 levels but writes only 254, so
        the Response echoing it could not be sent).
        """

        def nested(levels):
            inner = levels - 4
            return b'{"using":[],"methodCalls":[["Core/echo",{"a":' + b"[" * inner + b"]" * inner + b'},"c0"]]}'

        parse_request(nested(254), KNOWN, 16)
        error = self.assertRequestError(nested(255), "notJSON")
        self.assertIn("254", error.detail)

    def test_not_utf8(self):
        """
        Bytes that are not UTF-8 are notJSON.
        """
        self.assertRequestError(b'{"using": ["\xff"]}', "notJSON")

    def test_not_object(self):
        """
        JSON that is not an object is notRequest.
        """
        for document in ([], "text", 1, None):
            self.assertRequestError(body(document), "notRequest")

    def test_using_shapes(self):
        """
        'using' must be present and an array of strings.
        """
        for using in (None, "urn", [1], {"a": CORE}):
            document = {"methodCalls": []}
            if using is not None:
                document["using"] = using
            self.assertRequestError(body(document), "notRequest")

    def test_method_calls_shapes(self):
        """
        'methodCalls' must be present and an array.
        """
        self.assertRequestError(body({"using": []}), "notRequest")
        self.assertRequestError(body({"using": [], "methodCalls": {}}), "notRequest")

    def test_invocation_shapes(self):
        """
        Each invocation is [String, Object, String]: any other length or
        member type is notRequest.
        """
        for call in (
            ["Core/echo", {}],
            ["Core/echo", {}, "c0", "extra"],
            [1, {}, "c0"],
            ["Core/echo", [], "c0"],
            ["Core/echo", {}, 0],
            {"name": "Core/echo"},
        ):
            self.assertRequestError(body({"using": [CORE], "methodCalls": [call]}), "notRequest")

    def test_created_ids_shape(self):
        """
        'createdIds' must map strings to strings.
        """
        for created in ([], {"a": 1}, "x"):
            self.assertRequestError(
                body({"using": [], "methodCalls": [], "createdIds": created}), "notRequest"
            )

    def test_unknown_member(self):
        """
        A member the Request object does not define is ignored (RFC 8620
        section 3.3: the server MUST ignore properties it does not
        understand, so that future extensions stay compatible).
        """
        request = parse_request(
            body({"using": [CORE], "methodCalls": [["Core/echo", {}, "c0"]], "extra": {"x": 1}}), KNOWN, 16
        )
        self.assertEqual(request.method_calls, (Invocation("Core/echo", {}, "c0"),))
        self.assertIsNone(request.created_ids)

    def test_unknown_capability(self):
        """
        A capability the server does not know is unknownCapability, and
        the detail names it.
        """
        error = self.assertRequestError(
            body({"using": [CORE, "https://example.com/apis/foobar"], "methodCalls": []}),
            "unknownCapability",
        )
        self.assertIn("https://example.com/apis/foobar", error.detail)

    def test_max_calls_at_limit(self):
        """
        Exactly maxCallsInRequest calls are accepted.
        """
        calls = [["Core/echo", {}, f"c{i}"] for i in range(3)]
        request = parse_request(body({"using": [CORE], "methodCalls": calls}), KNOWN, 3)
        self.assertEqual(len(request.method_calls), 3)

    def test_max_calls_past_limit(self):
        """
        One call more than maxCallsInRequest is the limit error naming
        maxCallsInRequest.
        """
        calls = [["Core/echo", {}, f"c{i}"] for i in range(4)]
        error = self.assertRequestError(body({"using": [CORE], "methodCalls": calls}), "limit", max_calls=3)
        self.assertEqual(error.limit, "maxCallsInRequest")
        self.assertEqual(error.problem()["limit"], "maxCallsInRequest")
