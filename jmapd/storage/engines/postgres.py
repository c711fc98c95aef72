# -*- test-case-name: tests.storage.test_postgres -*-
"""
The PostgreSQL engine: one database shared by every jmapd node.

The storage modules are written in the SQL both engines share, with
C{?} placeholders; L{convert_sql} is the one place where the dialects
meet: placeholders become C{%s}, and in schema statements SQLite's type
names become PostgreSQL's (C{INTEGER} is 64 bits in SQLite, so it is
C{BIGINT}; C{REAL} is a double, not PostgreSQL's 4-byte C{REAL}; C{BLOB}
is C{BYTEA}).  What has no translation (SQLite's FTS5 tables) comes from
a migration file of its own, C{NNNN_name.postgresql.sql} (see
L{jmapd.storage.migrations}).

Transactions: a write transaction runs at READ COMMITTED and takes the
row lock of each account it changes (L{lock_account}) before it reads
what it is about to change, so two nodes writing one account queue on
that lock the way SQLite's C{BEGIN IMMEDIATE} queues every writer: each
statement after the lock sees what the other committed, so no count or
modseq is computed from a stale read.  A read transaction runs at
REPEATABLE READ, READ ONLY: every statement of one JMAP request sees the
same snapshot, as on SQLite.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import errors, pq
from psycopg.adapt import Dumper

#: Lock-free retries are not possible for these: the transaction is redone.
_TRANSIENT = (errors.SerializationFailure, errors.DeadlockDetected)

#: The key of the advisory lock held while migrations are applied, so that
#: nodes starting together apply each migration once.
_SCHEMA_LOCK = 0x6A6D6170  # "jmap"

_CONNECT_TIMEOUT = 10


class _BoolAsInteger(Dumper):
    """
    Python booleans as the integers 0 and 1, as SQLite stores them: the
    schema's flags are integer columns, and the storage code passes
    C{True} as readily as C{1}.
    """

    oid = psycopg.postgres.types["int8"].oid

    def dump(self, obj: Any) -> bytes:
        return b"1" if obj else b"0"


def redact(url: str) -> str:
    """
    The URL without its password, for messages and logs.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


# A quoted literal or identifier, a placeholder, a percent sign, or a word.
_TOKEN = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|\?|%|[A-Za-z_][A-Za-z0-9_]*|[^'\"?%A-Za-z_]+")

#: Column types in schema statements: SQLite's name -> PostgreSQL's.
_TYPES = {"INTEGER": "BIGINT", "REAL": "DOUBLE PRECISION", "BLOB": "BYTEA"}

_SCHEMA = re.compile(r"^\s*(CREATE\s+TABLE|ALTER\s+TABLE)\b", re.IGNORECASE)


@functools.lru_cache(maxsize=4096)
def convert_sql(sql: str) -> str:
    """
    Shared SQL as PostgreSQL runs it: C{?} -> C{%s} (and every other
    C{%} -> C{%%}, which psycopg would read as a placeholder, quoted or
    not: run the result with parameters, if only C{()}); in C{CREATE
    TABLE} and C{ALTER TABLE}, the SQLite type names of L{_TYPES}.
    Quoted strings and identifiers are left as they are.
    """
    schema = _SCHEMA.match(sql) is not None
    out = []
    for token in _TOKEN.findall(sql):
        if token == "?":
            out.append("%s")
        elif "%" in token:
            # psycopg reads % as a placeholder even inside quotes.
            out.append(token.replace("%", "%%"))
        elif schema and token.upper() in _TYPES:
            out.append(_TYPES[token.upper()])
        else:
            out.append(token)
    return "".join(out)


class PostgreSQLEngine:
    """
    The few places where SQL and transactions differ, for PostgreSQL.

    @param url: a libpq connection URL (C{postgresql://user:pw@host:port/db});
        what it leaves out comes from the usual C{PG*} variables and
        C{~/.pgpass}.
    @param node_id: this node's name, given to the server as the
        connections' C{application_name} (seen in C{pg_stat_activity}).
    """

    name = "postgresql"
    paramstyle = "format"
    IntegrityError = psycopg.IntegrityError
    OperationalError = psycopg.OperationalError
    #: Connections are shared by the threads through a pool of this size
    #: (see L{jmapd.storage.database.Database}); None for one per thread.
    pool_size: int | None = None
    #: Called with the transaction, in its thread, just before the COMMIT
    #: of each write transaction that locked an account (every one that
    #: changed a state does): L{jmapd.push.pgnotify} sends its NOTIFY
    #: there, so the notification commits with the change or not at all.
    before_commit: Callable[[Any], None] | None = None

    def __init__(self, url: str, node_id: str = "", pool_size: int | None = None) -> None:
        self.url = url
        self.node_id = node_id
        self.pool_size = pool_size
        # The transaction running in each thread that locked an account:
        # commit() is given only the connection.
        self._writing = threading.local()

    def __repr__(self) -> str:
        return f"<PostgreSQLEngine {redact(self.url)}>"

    def connect(self) -> psycopg.Connection[Any]:
        """
        Open a connection in autocommit mode: L{begin} starts each
        transaction explicitly with the isolation level it needs.

        @raise psycopg.OperationalError: the server cannot be reached, or
            refuses the credentials.
        """
        application = f"jmapd {self.node_id}".strip()[:63]
        conn = psycopg.connect(
            self.url, autocommit=True, connect_timeout=_CONNECT_TIMEOUT, application_name=application
        )
        conn.adapters.register_dumper(bool, _BoolAsInteger)
        return conn

    def begin(self, conn: Any, write: bool) -> None:
        self._writing.txn = None
        if write:
            conn.execute("BEGIN ISOLATION LEVEL READ COMMITTED")
        else:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")

    def commit(self, conn: Any) -> None:
        txn, self._writing.txn = getattr(self._writing, "txn", None), None
        if txn is not None and txn.conn is conn and self.before_commit is not None:
            self.before_commit(txn)
        conn.execute("COMMIT")

    def rollback(self, conn: Any) -> None:
        self._writing.txn = None
        if conn.closed:
            return
        if conn.info.transaction_status != pq.TransactionStatus.IDLE:
            conn.execute("ROLLBACK")

    def convert_sql(self, sql: str) -> str:
        return convert_sql(sql)

    def upsert_ignore(self) -> str:
        return "ON CONFLICT DO NOTHING"

    @property
    def full_text_index(self) -> Any:
        """
        The Email full-text index on this engine (for
        L{jmapd.storage.search.full_text_index}).
        """
        from jmapd.storage.engines.postgres_search import TEXT_INDEX

        return TEXT_INDEX

    def lock_account(self, txn: Any, account_id: str) -> None:
        """
        Wait for, then hold until the end of the transaction, the lock
        every writer of the account takes: the mode of C{UPDATE accounts
        SET modseq = ...}, which inserts referring to the account (foreign
        keys) do not wait for.
        """
        txn.execute("SELECT 1 FROM accounts WHERE id = ? FOR NO KEY UPDATE", (account_id,))
        self._writing.txn = txn

    def lock_blob(self, txn: Any, blob_id: str) -> None:
        """
        Hold, until the end of the transaction, the lock that orders
        "this blob is now referenced" against "this unreferenced blob's
        bytes are deleted" (L{jmapd.storage.blobs}): a transaction-scoped
        advisory lock on the blob id's hash (a rare collision only makes
        two blobs wait for each other).
        """
        txn.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (blob_id,))

    def lock_schema(self, cursor: Any) -> None:
        """
        Serialise migrations between nodes that start at once (the lock
        goes with the transaction).
        """
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))

    def is_transient(self, error: BaseException) -> bool:
        """
        Whether the transaction failed only because of a concurrent one
        (a deadlock between accounts locked in different orders, or a
        serialisation failure) and may be run again.
        """
        return isinstance(error, _TRANSIENT)

    def is_broken(self, conn: Any) -> bool:
        """
        Whether the connection can no longer be used (the server went
        away), so the pool drops it instead of handing it out again.
        """
        return bool(conn.closed or getattr(conn, "broken", False))

    def describe(self, conn: Any) -> dict[str, Any]:
        """
        What start-up logs about the server and checks about the database.
        """
        row = conn.execute(
            "SELECT current_setting('server_version'), current_database(), datcollate"
            " FROM pg_database WHERE datname = current_database()"
        ).fetchone()
        return {"version": row[0], "database": row[1], "collation": row[2]}
