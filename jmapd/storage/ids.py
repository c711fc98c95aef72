"""
Identifiers for new objects.

JMAP Ids (RFC 8620 section 1.2) are 1 to 255 characters of the URL-safe
base64 alphabet; the RFC recommends they not start with a dash or a digit,
so every id here starts with a letter that names its kind.

Most ids are random characters (L{new_id}).  Emails and Threads, made by
the thousand by mail delivery, get ids that begin with the time they were
made (L{ordered_id}): every index keyed by them (the Email and Thread
rows, their changelog rows, the Mailbox memberships and counters) then
grows at one end, so a transaction filing a group of messages writes one
page of each such index instead of one page per message at random places
(a fifth of the pages a delivery writes).  Their random part (40 bits)
keeps them unique and not guessable from one another.
"""

from __future__ import annotations

import base64
import os
import time

#: Lower-case base32 with the digits first (RFC 4648 "base32hex"): the
#: characters sort in the order of the values they stand for.
_SORTABLE = "0123456789abcdefghijklmnopqrstuv"

#: Ordered ids count milliseconds from 2020-01-01 UTC, in 9 characters
#: (45 bits: more than a thousand years).
_EPOCH_MS = 1_577_836_800_000
_TIME_CHARACTERS = 9


def new_id(prefix: str, length: int = 12) -> str:
    """
    A fresh random id such as C{"a7k2x..."} for C{prefix="a"}: C{length}
    lower-case base32 characters (5 random bits each) from one read of the
    operating system's random source.
    """
    raw = os.urandom((length * 5 + 7) // 8)
    return prefix + base64.b32encode(raw).decode("ascii").lower().rstrip("=")[:length]


def ordered_id(prefix: str, now: float | None = None) -> str:
    """
    A fresh id that sorts after the ids made before it (to the
    millisecond of C{now}, the clock's time by default): C{prefix}, the
    milliseconds since 2020 in 9 sortable base32 characters, then 8 random
    ones (40 bits).
    """
    milliseconds = max(0, int((time.time() if now is None else now) * 1000) - _EPOCH_MS)
    stamp = []
    for _ in range(_TIME_CHARACTERS):
        milliseconds, digit = divmod(milliseconds, 32)
        stamp.append(_SORTABLE[digit])
    random = base64.b32hexencode(os.urandom(5)).decode("ascii").lower()
    return prefix + "".join(reversed(stamp)) + random
