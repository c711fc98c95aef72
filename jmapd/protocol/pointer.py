# -*- test-case-name: tests.protocol.test_pointer -*-
"""
JSON Pointer (RFC 6901) with the JMAP extension of RFC 8620 section 3.7: a
C{*} token maps the rest of the path over every item of an array and
flattens arrays of arrays, so C{/list/*/id} is the list of ids.
"""

from __future__ import annotations

import re
from typing import Any

# RFC 6901 section 4: an array index is "0" or digits without a leading
# zero, in ASCII (str.isdigit would also accept "²" or Arabic-Indic digits).
_INDEX = re.compile(r"0|[1-9][0-9]*")
# "~" may only start the escapes "~0" and "~1".
_BAD_ESCAPE = re.compile(r"~(?![01])")


class PointerError(Exception):
    """
    The path is malformed or does not lead to a value.
    """


def split(path: str) -> list[str]:
    """
    The unescaped tokens of a pointer; C{""} is the whole document.
    """
    if path == "":
        return []
    if not path.startswith("/"):
        raise PointerError(f"a JSON Pointer starts with '/': {path!r}")
    if _BAD_ESCAPE.search(path):
        raise PointerError(f"'~' must be followed by '0' or '1' in a JSON Pointer: {path!r}")
    return [token.replace("~1", "/").replace("~0", "~") for token in path[1:].split("/")]


def evaluate(document: Any, path: str) -> Any:
    """
    The value at C{path} in C{document}.

    @raise PointerError: a token names nothing.
    """
    return _walk(document, split(path), path)


def _walk(value: Any, tokens: list[str], path: str) -> Any:
    for index, token in enumerate(tokens):
        if isinstance(value, list):
            if token == "*":
                rest = tokens[index + 1 :]
                out: list[Any] = []
                for item in value:
                    result = _walk(item, rest, path)
                    if isinstance(result, list):
                        out.extend(result)
                    else:
                        out.append(result)
                return out
            if not _INDEX.fullmatch(token):
                raise PointerError(f"{path}: {token!r} is not an array index")
            position = int(token)
            if position >= len(value):
                raise PointerError(f"{path}: index {position} is past the end of the array")
            value = value[position]
        elif isinstance(value, dict):
            if token not in value:
                raise PointerError(f"{path}: no member {token!r}")
            value = value[token]
        else:
            raise PointerError(f"{path}: cannot descend into a {type(value).__name__}")
    return value
