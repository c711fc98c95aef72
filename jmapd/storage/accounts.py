# -*- test-case-name: tests.storage.test_accounts -*-
"""
Accounts, their addresses and their API tokens.

Every function takes a transaction as its first argument and runs inside
it; none of them knows about JMAP, except that the credentials they
revoke take with them the PushSubscriptions made with them (RFC 8620
section 7.2), in the same transaction.

A credential, the password of an account or one of its tokens, is named
by a string that never names another one: C{password:N} for the
password of version N (L{Account.password_version}, which moves on every
L{set_password}), C{token:ID} for a token.  A PushSubscription records
the credential that created it.
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
    #: Moves whenever the password is set (L{password_credential}).
    password_version: int = 0

    @property
    def password_credential(self) -> str:
        """
        The name of the account's current password as a credential.
        """
        return password_credential(self.password_version)


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
    return Account(
        id=row[0], name=row[1], password_hash=row[2], auth_version=row[3], addresses=addresses,
        password_version=row[4],
    )


_ACCOUNT_COLUMNS = "id, name, password_hash, auth_version, password_version"


def password_credential(version: int) -> str:
    """
    The credential name of an account's password of version C{version}.
    """
    return f"password:{version}"


def token_credential(token_id: str) -> str:
    """
    The credential name of the token C{token_id}.
    """
    return f"token:{token_id}"


def valid_credential_sql(credential: str, account_id: str) -> str:
    """
    An SQL condition: the credential named by the expression C{credential}
    can still authenticate as the account C{account_id} (an expression
    too): it is the account's current password, or one of its tokens.
    """
    return (
        f"(EXISTS (SELECT 1 FROM accounts ca WHERE ca.id = {account_id} AND ca.password_hash IS NOT NULL"
        f" AND {credential} = 'password:' || ca.password_version)"
        f" OR EXISTS (SELECT 1 FROM tokens ct WHERE ct.account_id = {account_id}"
        f" AND {credential} = 'token:' || ct.id))"
    )


def credential_is_valid(txn: Any, account_id: str, credential: str) -> bool:
    """
    Whether C{credential} can still authenticate as the account.
    """
    row = txn.fetchone(
        "SELECT 1 FROM (SELECT CAST(? AS TEXT) AS credential, CAST(? AS TEXT) AS account_id) c"
        f" WHERE {valid_credential_sql('c.credential', 'c.account_id')}",
        (credential, account_id),
    )
    return row is not None


def destroy_push_subscriptions(txn: Any, account_id: str) -> list[str]:
    """
    Destroy the account's PushSubscriptions whose credential no longer
    authenticates (RFC 8620 section 7.2: should the credentials be revoked
    the push subscription MUST be destroyed); the rows go, URL and keys
    with them.  Called in the transaction that revokes the credential.

    @return: the ids of the destroyed subscriptions.
    """
    rows = txn.fetchall(
        "SELECT id FROM push_subscriptions WHERE account_id = ?"
        f" AND NOT {valid_credential_sql('credential', 'account_id')}",
        (account_id,),
    )
    destroyed = [row[0] for row in rows]
    for subscription_id in destroyed:
        txn.execute("DELETE FROM push_subscriptions WHERE id = ?", (subscription_id,))
    return destroyed


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


def set_password(txn: Any, name: str, password_hash: str | None) -> list[str]:
    """
    Replace the password hash; the auth version changes, so cached
    verifications of the old password stop working at once.  The old
    password is a credential revoked: its version changes and the
    PushSubscriptions made with it are destroyed.

    @return: the ids of the destroyed PushSubscriptions.
    """
    txn.execute(
        "UPDATE accounts SET password_hash = ?, auth_version = auth_version + 1,"
        " password_version = password_version + 1 WHERE name = ?",
        (password_hash, name),
    )
    if txn.rowcount == 0:
        raise AccountNotFound(name)
    account_id = txn.fetchvalue("SELECT id FROM accounts WHERE name = ?", (name,))
    return destroy_push_subscriptions(txn, account_id)


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
    cached verification of it is dropped, and the PushSubscriptions made
    with it are destroyed.
    """
    row = txn.fetchone("SELECT account_id FROM tokens WHERE id = ?", (token_id,))
    if row is None:
        return False
    txn.execute("DELETE FROM tokens WHERE id = ?", (token_id,))
    txn.execute("UPDATE accounts SET auth_version = auth_version + 1 WHERE id = ?", (row[0],))
    destroy_push_subscriptions(txn, row[0])
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
