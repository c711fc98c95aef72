# -*- test-case-name: tests.storage.test_database -*-
"""
Versioned schema migrations, applied in order at start-up.

Each migration is a file C{NNNN_name.sql} next to this module, written in
the SQL both engines share; the engine's C{convert_sql} handles the few
differences (placeholders, type names).  A migration that needs what one
engine alone has (SQLite's FTS5, PostgreSQL's tsvector) has, beside the
shared file, a file C{NNNN_name.ENGINE.sql} (ENGINE being the engine's
C{name}, such as C{postgresql}) that that engine runs instead: the two
are one version, with one meaning, written twice.

The version is kept in C{schema_version}; a database from a newer jmapd (a
version above the highest known one) is refused instead of being used with
the wrong schema.  Each migration runs in its own transaction, holding the
engine's schema lock, so nodes starting together apply it once.
"""

from __future__ import annotations

import os
import re
from typing import Any

_MIGRATION = re.compile(r"^(\d{4})_[a-z0-9_]+(?:\.(?P<engine>[a-z0-9]+))?\.sql$")


class DuplicateMigration(Exception):
    """
    Two migration files have the same number for the same engine (two
    branches picked the same next number); one of them must be renumbered.
    """


class SchemaTooNew(Exception):
    """
    The database was written by a newer jmapd than this one.
    """


def migrations(engine_name: str | None = None, directory: str | None = None) -> list[tuple[int, str]]:
    """
    The known migrations as C{(version, sql)}, lowest first: the shared
    files, each replaced by its C{.ENGINE.sql} variant for C{engine_name}
    where there is one.

    @param directory: where the files are (this package's directory).
    @raise DuplicateMigration: two files claim one version.
    """
    here = directory or os.path.dirname(os.path.abspath(__file__))
    shared: dict[int, tuple[str, str]] = {}
    variants: dict[int, tuple[str, str]] = {}
    for name in sorted(os.listdir(here)):
        match = _MIGRATION.match(name)
        if not match:
            continue
        engine = match.group("engine")
        if engine is not None and engine != engine_name:
            continue
        table = shared if engine is None else variants
        version = int(match.group(1))
        if version in table:
            raise DuplicateMigration(f"two migrations are numbered {version:04d}: {table[version][0]} and {name}")
        with open(os.path.join(here, name), encoding="utf-8") as f:
            table[version] = (name, f.read())
    shared.update(variants)
    return sorted((version, sql) for version, (_name, sql) in shared.items())


def _statements(sql: str) -> list[str]:
    # Comments run to the end of the line; our SQL has no "--" in strings.
    lines = [line.split("--", 1)[0] for line in sql.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def _applied(engine: Any, cursor: Any) -> set[int]:
    cursor.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    cursor.execute("SELECT version FROM schema_version")
    return {int(row[0]) for row in cursor.fetchall()}


def apply_migrations(engine: Any, conn: Any) -> int:
    """
    Apply every known migration the database has not had, lowest first,
    each in its own transaction, and return the resulting version.  A
    migration merged later with a lower number than one already applied
    (branches landing out of order) is still applied.

    @raise SchemaTooNew: the database has a version this jmapd does not know.
    """
    cursor = conn.cursor()
    known = migrations(getattr(engine, "name", None))
    highest = known[-1][0] if known else 0
    while True:
        engine.begin(conn, True)
        try:
            # The version is read under the lock: another node may just
            # have applied the migration this one was about to.
            engine.lock_schema(cursor)
            applied = _applied(engine, cursor)
            current = max(applied, default=0)
            if current > highest:
                raise SchemaTooNew(
                    f"the database schema is version {current}, but this jmapd knows "
                    f"versions up to {highest}: upgrade jmapd"
                )
            pending = [(version, sql) for version, sql in known if version not in applied]
            if pending:
                version, sql = pending[0]
                for statement in _statements(sql):
                    cursor.execute(engine.convert_sql(statement), ())
                cursor.execute(engine.convert_sql("INSERT INTO schema_version (version) VALUES (?)"), (version,))
            engine.commit(conn)
        except BaseException:
            engine.rollback(conn)
            raise
        if not pending:
            return current
