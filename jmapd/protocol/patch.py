# -*- test-case-name: tests.protocol.test_patch -*-
"""
PatchObject (RFC 8620 section 5.3): an update given as JSON Pointer paths
(without the leading slash) to replace or, with C{null}, remove.
"""

from __future__ import annotations

import copy
from typing import Any

from jmapd.protocol.errors import SetErrorException, set_error


def _tokens(path: str) -> list[str]:
    return [token.replace("~1", "/").replace("~0", "~") for token in path.split("/")]


def apply_patch(current: dict[str, Any], patch: dict[str, Any]) -> tuple[dict[str, Any], set[str]]:
    """
    The object after C{patch}, and the top-level properties it touches.

    @raise SetErrorException: C{invalidPatch} when a path is empty, is the
        prefix of another path, or descends through something that is not
        an object.
    """
    # Compare whole tokens: sorting the raw strings does not put "a" next to
    # "a/b" when "a-b" (and "-" sorts before "/") is in the patch too.
    by_tokens = {tuple(_tokens(path)): path for path in patch}
    for path_tokens, path in by_tokens.items():
        for end in range(1, len(path_tokens)):
            prefix = by_tokens.get(path_tokens[:end])
            if prefix is not None:
                raise set_error("invalidPatch", f"the path {prefix!r} is a prefix of {path!r}")
    result = dict(current)
    touched: set[str] = set()
    copied: set[str] = set()
    for path, value in patch.items():
        tokens = _tokens(path)
        if not path or any(token == "" for token in tokens):
            raise set_error("invalidPatch", f"{path!r} is not a valid patch path")
        top = tokens[0]
        touched.add(top)
        if len(tokens) == 1:
            result[top] = value
            copied.add(top)
            continue
        if top not in result or not isinstance(result[top], dict):
            raise set_error("invalidPatch", f"{path!r}: {top!r} is not an object", properties=[top])
        if top not in copied:
            result[top] = copy.deepcopy(result[top])
            copied.add(top)
        target = result[top]
        for token in tokens[1:-1]:
            child = target.get(token)
            if not isinstance(child, dict):
                raise set_error("invalidPatch", f"{path!r}: {token!r} is not an object", properties=[top])
            target = child
        if value is None:
            target.pop(tokens[-1], None)
        else:
            target[tokens[-1]] = value
    return result, touched


__all__ = ["apply_patch", "SetErrorException"]
