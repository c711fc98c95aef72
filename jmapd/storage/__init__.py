"""
Storage: the database behind a small interface, and one module per group of
tables.  Nothing here imports the JMAP protocol or data type modules.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

from jmapd.storage.engines import SQLITE_FILE
from jmapd.storage.migrations import SchemaTooNew

#: The SQLite database file under db-path (jmapd-admin and tests name it).
DATABASE_FILE = SQLITE_FILE

log = Logger()


class DatabaseUnavailable(OSError):
    """
    The database db-url names cannot be used: the server cannot be
    reached, refuses the credentials, or has no such database.  An
    C{OSError}, so start-up and jmapd-admin report it like a missing file:
    one line naming the key, no traceback.
    """


def open_database(config: Any, run_in_thread: Callable[..., Any] | None = None) -> Any:
    """
    The database the configuration names (PostgreSQL at C{db-url}, or
    SQLite under C{db-path}), migrated to the current schema.

    @raise DatabaseUnavailable: PostgreSQL cannot be reached or refuses us.
    @raise jmapd.storage.migrations.SchemaTooNew: the schema is newer than
        this jmapd.
    """
    # Imported for what they register: new accounts get their default
    # Mailboxes and Identities whoever creates them (the server or
    # jmapd-admin).
    import jmapd.storage.identities  # noqa: F401
    import jmapd.storage.mailboxes  # noqa: F401
    from jmapd.storage.database import Database
    from jmapd.storage.engines import engine_from_config

    engine = engine_from_config(config)
    database = Database(engine, run_in_thread)
    if engine.name == "postgresql":
        _check_postgresql(database)
    try:
        database.migrate()
    except SchemaTooNew as error:
        if engine.name != "postgresql":
            raise
        from jmapd.storage.engines.postgres import redact

        raise SchemaTooNew(f"db-url {redact(engine.url)}: {error}") from None
    return database


def _check_postgresql(database: Any) -> None:
    """
    Connect once at start-up, so that a wrong db-url stops the server
    before it listens, with a message naming the key; log what we use.
    """
    import psycopg

    from jmapd.storage.engines.postgres import redact

    engine = database.engine
    where = redact(engine.url)
    try:
        conn = engine.connect()
    except psycopg.Error as error:
        reason = " ".join(str(error).split()) or type(error).__name__
        raise DatabaseUnavailable(f"db-url: cannot use the PostgreSQL database {where}: {reason}") from None
    try:
        facts = engine.describe(conn)
    finally:
        conn.close()
    log.info(
        "database: PostgreSQL {version}, database {database} ({url}), node {node}, {pool} connections",
        version=facts["version"],
        database=facts["database"],
        url=where,
        node=engine.node_id,
        pool=engine.pool_size,
    )
    if facts["collation"] not in ("C", "POSIX", "C.UTF-8", "C.utf8"):
        # Ids and names sort byte-wise on SQLite; a locale collation orders
        # them differently (and changes with the C library).
        log.warn(
            "database: {database} has collation {collation}; create it with LC_COLLATE 'C'"
            " (docs/operations.md) so that ordering matches SQLite's",
            database=facts["database"],
            collation=facts["collation"],
        )


def blob_directory(config: Any) -> str:
    return os.path.join(config.db_path, "blobs")
