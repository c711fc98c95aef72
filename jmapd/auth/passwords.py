# -*- test-case-name: tests.auth.test_checkers -*-
"""
Password hashing with argon2 (argon2-cffi's recommended parameters).

Hashing and verifying cost tens of milliseconds by design, so they run in
worker threads, and the web layer remembers a verified Authorization header
for a short while instead of verifying it on every request.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """
    Whether C{password} matches; C{False} (never an exception) for a
    missing or damaged hash.
    """
    if not password_hash:
        return False
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
