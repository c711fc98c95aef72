# -*- test-case-name: tests.protocol.test_request -*-
"""
Parse and validate a JMAP Request object (RFC 8620 section 3.3) before any
method runs: JSON syntax, the shape of the object, known capabilities and
the size limits.  Everything wrong here is a request-level error.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import orjson
from attrs import frozen

from jmapd.protocol.errors import limit, not_json, not_request, unknown_capability

#: The deepest nesting orjson can write.  It reads up to 1024 levels, so
#: without a check a request nested between the two would run and then its
#: Response (Core/echo, or any method quoting an argument back) could not
#: be serialised: the client got a 500 after its methods had run.
MAX_DEPTH = 254


def check_depth(document: Any) -> None:
    """
    Reject a parsed JSON document nested deeper than L{MAX_DEPTH} levels.

    Serialising it is the exact test (orjson's own limit) and the cheapest
    one: it runs in C, about 3 ms per MB of request against some 50 ms per
    MB for parsing it.

    @raise RequestError: notJSON.
    """
    try:
        orjson.dumps(document)
    except TypeError:
        # After orjson.loads, the only thing orjson.dumps rejects is depth.
        raise not_json(f"the JSON is nested more than {MAX_DEPTH} levels deep") from None


@frozen
class Invocation:
    """
    One method call: C{[name, arguments, methodCallId]}.
    """

    name: str
    arguments: dict[str, Any]
    call_id: str


@frozen
class Request:
    using: frozenset[str]
    method_calls: tuple[Invocation, ...]
    created_ids: dict[str, str] | None


def parse_request(body: bytes, known_capabilities: Collection[str], max_calls: int) -> Request:
    """
    Turn a POST body into a L{Request}.

    @raise RequestError: notJSON (also for nesting deeper than
        L{MAX_DEPTH}), notRequest, unknownCapability or limit
        (maxCallsInRequest).
    """
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise not_json(f"the request body is not valid JSON: {e}") from None
    check_depth(document)
    if not isinstance(document, dict):
        raise not_request("the request must be a JSON object with 'using' and 'methodCalls'")
    # Other members are ignored: RFC 8620 section 3.3 says the server MUST
    # ignore properties of the Request it does not understand, which
    # future specifications may add.
    using = document.get("using")
    if not isinstance(using, list) or not all(isinstance(u, str) for u in using):
        raise not_request("'using' must be an array of capability strings")
    calls = document.get("methodCalls")
    if not isinstance(calls, list):
        raise not_request("'methodCalls' must be an array of [name, arguments, methodCallId]")
    created_ids = document.get("createdIds")
    if created_ids is not None and (
        not isinstance(created_ids, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in created_ids.items())
    ):
        raise not_request("'createdIds' must map creation ids to ids")
    invocations = []
    for position, call in enumerate(calls):
        if (
            not isinstance(call, list)
            or len(call) != 3
            or not isinstance(call[0], str)
            or not isinstance(call[1], dict)
            or not isinstance(call[2], str)
        ):
            raise not_request(
                f"methodCalls[{position}] must be [name (string), arguments (object), methodCallId (string)]"
            )
        invocations.append(Invocation(call[0], call[1], call[2]))
    missing = [u for u in using if u not in known_capabilities]
    if missing:
        raise unknown_capability(f"the server does not support the capabilities: {', '.join(missing)}")
    if len(invocations) > max_calls:
        raise limit(
            "maxCallsInRequest",
            f"the request has {len(invocations)} method calls; the limit is {max_calls}",
        )
    return Request(using=frozenset(using), method_calls=tuple(invocations), created_ids=created_ids)
