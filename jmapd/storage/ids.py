"""
Identifiers for new objects.

JMAP Ids (RFC 8620 section 1.2) are 1 to 255 characters of the URL-safe
base64 alphabet; the RFC recommends they not start with a dash or a digit,
so every id here starts with a letter that names its kind, followed by
random characters (never reused, never guessable).
"""

from __future__ import annotations

import base64
import os


def new_id(prefix: str, length: int = 12) -> str:
    """
    A fresh random id such as C{"a7k2x..."} for C{prefix="a"}: C{length}
    lower-case base32 characters (5 random bits each) from one read of the
    operating system's random source.
    """
    raw = os.urandom((length * 5 + 7) // 8)
    return prefix + base64.b32encode(raw).decode("ascii").lower().rstrip("=")[:length]
