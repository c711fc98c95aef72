"""
Identifiers for new objects.

JMAP Ids (RFC 8620 section 1.2) are 1 to 255 characters of the URL-safe
base64 alphabet; the RFC recommends they not start with a dash or a digit,
so every id here starts with a letter that names its kind, followed by
random characters (never reused, never guessable).
"""

from __future__ import annotations

import secrets

_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def new_id(prefix: str, length: int = 12) -> str:
    """
    A fresh random id such as C{"a7k2x..."} for C{prefix="a"}.
    """
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))
