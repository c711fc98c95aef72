# -*- test-case-name: tests.protocol.test_engine -*-
"""
The errors of RFC 8620: request-level problems (section 3.6.1), method-level
errors (section 3.6.2) and SetErrors (section 5.3).
"""

from __future__ import annotations

from typing import Any

from attrs import field, frozen

ERROR_PREFIX = "urn:ietf:params:jmap:error:"


class RequestError(Exception):
    """
    The whole request is rejected: answered as an RFC 7807 problem
    (C{application/problem+json}) with C{type}, C{status} and C{detail}.
    """

    def __init__(self, type: str, status: int, detail: str, limit: str | None = None) -> None:
        super().__init__(detail)
        self.type = type if ":" in type else ERROR_PREFIX + type
        self.status = status
        self.detail = detail
        self.limit = limit

    def problem(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.type, "status": self.status, "detail": self.detail}
        if self.limit is not None:
            body["limit"] = self.limit
        return body


def not_json(detail: str) -> RequestError:
    return RequestError("notJSON", 400, detail)


def not_request(detail: str) -> RequestError:
    return RequestError("notRequest", 400, detail)


def unknown_capability(detail: str) -> RequestError:
    return RequestError("unknownCapability", 400, detail)


def limit(name: str, detail: str) -> RequestError:
    return RequestError("limit", 400, detail, limit=name)


class MethodError(Exception):
    """
    A method call failed: answered as an C{error} invocation whose
    arguments are C{type}, C{description} and any extra fields.
    """

    def __init__(self, type: str, description: str | None = None, **extra: Any) -> None:
        super().__init__(description or type)
        self.type = type
        self.description = description
        self.extra = extra

    def arguments(self) -> dict[str, Any]:
        args: dict[str, Any] = {"type": self.type}
        if self.description is not None:
            args["description"] = self.description
        args.update(self.extra)
        return args


def invalid_arguments(description: str) -> MethodError:
    return MethodError("invalidArguments", description)


@frozen
class SetError:
    """
    Why one object of a /set (or /copy, /import) was not created, updated
    or destroyed.
    """

    type: str
    description: str | None = None
    properties: tuple[str, ...] | None = None
    extra: dict[str, Any] = field(factory=dict)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.type}
        if self.description is not None:
            body["description"] = self.description
        if self.properties is not None:
            body["properties"] = list(self.properties)
        body.update(self.extra)
        return body


class SetErrorException(Exception):
    """
    Raised by a data type's create/update/destroy to reject one object;
    the standard /set turns it into that object's SetError.
    """

    def __init__(self, error: SetError) -> None:
        super().__init__(error.description or error.type)
        self.error = error


def set_error(type: str, description: str | None = None, properties: Any = None, **extra: Any) -> SetErrorException:
    return SetErrorException(
        SetError(
            type=type,
            description=description,
            properties=tuple(properties) if properties is not None else None,
            extra=extra,
        )
    )


def invalid_properties(description: str, *properties: str) -> SetErrorException:
    return set_error("invalidProperties", description, properties)
