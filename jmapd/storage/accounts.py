# -*- test-case-name: tests.storage.test_accounts -*-
"""
Accounts, their addresses and their API tokens.

Every function takes a transaction as its first argument and runs inside
it; none of them knows about JMAP.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from typing import Any

from attrs import frozen

from jmapd.storage.ids import new_id


@frozen
class Account:
    """
    One account: the login name, its JMAP accountId and addresses.
    """

    id: str
    name: str
    password_hash: str | None
    auth_version: int
    addresses: tuple[str, ...] = ()


@frozen
class Token:
    id: str
    account_id: str
    label: str
    created_at: float


class AccountExists(Exception):
    """
    An account with this name, or an account owning this address, exists.
    """


class AccountNotFound(Exception):
    """
    No account has this name.
    """


# Hooks run inside the creating transaction for every new account, so that
# data types can give it what it needs from the start (the Mail issue adds
# the default mailboxes here).
account_created_hooks: list[Callable[[Any, str], None]] = []


def _row_to_account(txn: Any, row: Sequence[Any]) -> Account:
    addresses = tuple(
        r[0]
        for r in txn.fetchall(
            "SELECT address FROM account_addresses WHERE account_id = ? ORDER BY is_alias, position",
            (row[0],),
        )
    )
    return Account(id=row[0], name=row[1], password_hash=row[2], auth_version=row[3], addresses=addresses)


_ACCOUNT_COLUMNS = "id, name, password_hash, auth_version"


def add_account(
    txn: Any, name: str, password_hash: str | None, addresses: Sequence[str] = ()
) -> Account:
    """
    Create an account (and run L{account_created_hooks} in the same
    transaction).

    @raise AccountExists: the name or one of the addresses is taken.
    """
    if txn.fetchone("SELECT 1 FROM accounts WHERE name = ?", (name,)):
        raise AccountExists(f"an account named {name!r} exists")
    # Addresses are stored lower-cased; "A@x" and "a@x" are one address.
    addresses = list(dict.fromkeys(address.lower() for address in addresses))
    for address in addresses:
        owner = txn.fetchone("SELECT account_id FROM account_addresses WHERE address = ?", (address.lower(),))
        if owner:
            raise AccountExists(f"the address {address!r} belongs to another account")
    account_id = new_id("a")
    txn.execute(
        "INSERT INTO accounts (id, name, password_hash, created_at) VALUES (?, ?, ?, ?)",
        (account_id, name, password_hash, time.time()),
    )
    for position, address in enumerate(addresses):
        txn.execute(
            "INSERT INTO account_addresses (address, account_id, is_alias, position) VALUES (?, ?, 0, ?)",
            (address, account_id, position),
        )
    for hook in account_created_hooks:
        hook(txn, account_id)
    account = get_account_by_id(txn, account_id)
    assert account is not None
    return account


def get_account_by_name(txn: Any, name: str) -> Account | None:
    row = txn.fetchone(f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE name = ?", (name,))
    return None if row is None else _row_to_account(txn, row)


def get_account_by_id(txn: Any, account_id: str) -> Account | None:
    row = txn.fetchone(f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE id = ?", (account_id,))
    return None if row is None else _row_to_account(txn, row)


def list_accounts(txn: Any) -> list[Account]:
    rows = txn.fetchall(f"SELECT {_ACCOUNT_COLUMNS} FROM accounts ORDER BY name")
    return [_row_to_account(txn, row) for row in rows]


def set_password(txn: Any, name: str, password_hash: str | None) -> None:
    """
    Replace the password hash; the auth version changes, so cached
    verifications of the old password stop working at once.
    """
    txn.execute(
        "UPDATE accounts SET password_hash = ?, auth_version = auth_version + 1 WHERE name = ?",
        (password_hash, name),
    )
    if txn.rowcount == 0:
        raise AccountNotFound(name)


def remove_account(txn: Any, name: str) -> str:
    """
    Remove the account and everything it owns; returns its id.
    """
    account = get_account_by_name(txn, name)
    if account is None:
        raise AccountNotFound(name)
    # Changes held for it would otherwise be written after it is gone.
    txn.flush()
    txn.execute("DELETE FROM accounts WHERE id = ?", (account.id,))
    return account.id


def hash_token(secret: str) -> str:
    """
    Tokens are long random secrets, so a fast hash is enough to keep the
    stored form useless to a reader of the database.
    """
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def add_token(txn: Any, name: str, label: str, secret: str) -> Token:
    account = get_account_by_name(txn, name)
    if account is None:
        raise AccountNotFound(name)
    token = Token(id=new_id("t"), account_id=account.id, label=label, created_at=time.time())
    txn.execute(
        "INSERT INTO tokens (id, account_id, label, token_hash, created_at) VALUES (?, ?, ?, ?, ?)",
        (token.id, token.account_id, label, hash_token(secret), token.created_at),
    )
    return token


def find_token(txn: Any, secret: str) -> tuple[Token, Account] | None:
    row = txn.fetchone(
        "SELECT id, account_id, label, created_at FROM tokens WHERE token_hash = ?",
        (hash_token(secret),),
    )
    if row is None:
        return None
    account = get_account_by_id(txn, row[1])
    if account is None:
        return None
    return Token(id=row[0], account_id=row[1], label=row[2], created_at=row[3]), account


def list_tokens(txn: Any, name: str) -> list[Token]:
    account = get_account_by_name(txn, name)
    if account is None:
        raise AccountNotFound(name)
    rows = txn.fetchall(
        "SELECT id, account_id, label, created_at FROM tokens WHERE account_id = ? ORDER BY created_at",
        (account.id,),
    )
    return [Token(id=r[0], account_id=r[1], label=r[2], created_at=r[3]) for r in rows]


def revoke_token(txn: Any, token_id: str) -> bool:
    """
    Delete a token by its id; the auth version of its account changes so a
    cached verification of it is dropped.
    """
    row = txn.fetchone("SELECT account_id FROM tokens WHERE id = ?", (token_id,))
    if row is None:
        return False
    txn.execute("DELETE FROM tokens WHERE id = ?", (token_id,))
    txn.execute("UPDATE accounts SET auth_version = auth_version + 1 WHERE id = ?", (row[0],))
    return True


def auth_version(txn: Any, account_id: str) -> int | None:
    return txn.fetchvalue("SELECT auth_version FROM accounts WHERE id = ?", (account_id,))


def get_setting(txn: Any, name: str) -> str | None:
    return txn.fetchvalue("SELECT value FROM server_settings WHERE name = ?", (name,))


def ensure_setting(txn: Any, name: str, make: Callable[[], str]) -> str:
    """
    The value of a server setting, created with C{make()} the first time.
    """
    value = get_setting(txn, name)
    if value is None:
        value = make()
        txn.execute(
            f"INSERT INTO server_settings (name, value) VALUES (?, ?) {txn.engine.upsert_ignore()}",
            (name, value),
        )
        value = get_setting(txn, name)
    assert value is not None
    return value
