# -*- test-case-name: tests.protocol.test_arguments -*-
"""
Checking method arguments against the types of RFC 8620 section 1, so that
each method reads like its definition in the RFC and every mistake becomes
an C{invalidArguments} error that says which argument and why.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from jmapd.protocol.errors import invalid_arguments

_ID = re.compile(r"[A-Za-z0-9_-]{1,255}")
MAX_UNSIGNED = 2**53 - 1

_MISSING = object()


def is_id(value: Any) -> bool:
    # fullmatch: "$" would also accept a trailing newline.
    return isinstance(value, str) and bool(_ID.fullmatch(value))


def is_unsigned_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_UNSIGNED


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -MAX_UNSIGNED <= value <= MAX_UNSIGNED


class Arguments:
    """
    The arguments of one method call, read one by one; L{done} rejects any
    argument the method does not know.
    """

    def __init__(self, arguments: dict[str, Any], method: str) -> None:
        self._args = arguments
        self._method = method
        self._seen: set[str] = set()

    def _get(self, name: str, required: bool) -> Any:
        self._seen.add(name)
        if name not in self._args:
            if required:
                raise invalid_arguments(f"{self._method}: the argument '{name}' is required")
            return _MISSING
        return self._args[name]

    def _check(self, name: str, value: Any, ok: bool, expected: str) -> Any:
        if not ok:
            raise invalid_arguments(f"{self._method}: '{name}' must be {expected}, got {_show(value)}")
        return value

    def id(self, name: str, required: bool = True, nullable: bool = False, default: Any = None) -> Any:
        value = self._get(name, required)
        if value is _MISSING or (nullable and value is None):
            return default
        return self._check(name, value, is_id(value), "an Id")

    def string(self, name: str, required: bool = False, nullable: bool = True, default: Any = None) -> Any:
        value = self._get(name, required)
        if value is _MISSING or (nullable and value is None):
            return default
        return self._check(name, value, isinstance(value, str), "a String")

    def boolean(self, name: str, default: bool = False, nullable: bool = False) -> Any:
        value = self._get(name, False)
        if value is _MISSING or (nullable and value is None):
            return default
        return self._check(name, value, isinstance(value, bool), "a Boolean")

    def unsigned_int(self, name: str, default: Any = None, nullable: bool = True, positive: bool = False) -> Any:
        value = self._get(name, False)
        if value is _MISSING or (nullable and value is None):
            return default
        ok = is_unsigned_int(value) and (not positive or value > 0)
        return self._check(name, value, ok, "a positive integer" if positive else "an UnsignedInt")

    def int(self, name: str, default: Any = 0) -> Any:
        value = self._get(name, False)
        if value is _MISSING or value is None:
            return default
        return self._check(name, value, is_int(value), "an Int")

    def id_list(self, name: str, required: bool = False, nullable: bool = True, allow_creation_refs: bool = True) -> Any:
        """
        An C{Id[]}; entries may be C{#creationId} references, resolved by
        the caller.
        """
        value = self._get(name, required)
        if value is _MISSING or (nullable and value is None):
            return None
        ok = isinstance(value, list) and all(
            is_id(v) or (allow_creation_refs and isinstance(v, str) and v.startswith("#") and is_id(v[1:]))
            for v in value
        )
        return self._check(name, value, ok, "an array of Ids")

    def string_list(self, name: str, nullable: bool = True) -> Any:
        value = self._get(name, False)
        if value is _MISSING or (nullable and value is None):
            return None
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        return self._check(name, value, ok, "an array of Strings")

    def object(self, name: str, nullable: bool = True, values: Callable[[Any], bool] | None = None, expected: str = "an object") -> Any:
        value = self._get(name, False)
        if value is _MISSING or (nullable and value is None):
            return None
        ok = isinstance(value, dict) and (values is None or all(values(v) for v in value.values()))
        return self._check(name, value, ok, expected)

    def any(self, name: str, default: Any = None) -> Any:
        value = self._get(name, False)
        return default if value is _MISSING else value

    def done(self, ignore: Iterable[str] = ()) -> None:
        """
        Reject arguments the method does not define.
        """
        unknown = set(self._args) - self._seen - set(ignore)
        if unknown:
            raise invalid_arguments(f"{self._method}: unknown arguments: {', '.join(sorted(unknown))}")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
