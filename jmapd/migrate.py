# -*- test-case-name: tests.test_migrate -*-
"""
C{jmapd-admin migrate --from-sqlite PATH}: move an installation from SQLite
to PostgreSQL without its clients noticing.

Every table of the SQLite database is copied, row by row and value by
value, into the (migrated, empty) PostgreSQL database of C{db-url}: ids,
modseqs (the state strings clients hold), the changelog and the server's
counters stay what they were, so a client resumes with C{/changes} from
the state it last saw.  The tables are found in the two databases, not
listed here, so a table a later schema adds is copied too; a table or
column of SQLite that PostgreSQL lacks stops the migration rather than
being left behind.  Only the full-text index differs between the engines
(FTS5 against a C{tsvector} table, see migration 0005): its rows are
translated, and Emails SQLite had not indexed yet are indexed on the way.

Blobs go first, each checked against its content-addressed id: into the
PostgreSQL database for C{blob-store: database}, or, for C{files}, into
the configured db-path unless they are already there.  Blobs the SQLite
database itself holds (delivered messages not yet moved to their files,
L{jmapd.blobs.writeback}, or all of them with C{blob-store: database})
are copied the same way.  The tables then
go in one PostgreSQL transaction, read from one SQLite snapshot, so a
failed migration leaves the target as empty as it found it and can be
run again.  At the end the rows of each table, and the blobs, are counted
on both sides from fresh transactions; any difference fails the command.
"""

from __future__ import annotations

import graphlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from attrs import frozen

from jmapd.blobs.database import DatabaseBlobStore, open_blob_store
from jmapd.blobs.store import is_blob_id
from jmapd.blobs.writeback import WriteBackBlobStore
from jmapd.importexport import Progress
from jmapd.storage import DATABASE_FILE, open_database, search
from jmapd.storage.database import Database
from jmapd.storage.engines.sqlite import SQLiteEngine

#: Rows read from SQLite and written to PostgreSQL at a time.
BATCH = 1000

#: Tables not copied as rows: the schema version (each database has its
#: own migrations applied) and the database blob store (blobs are copied
#: as blobs).
_NOT_COPIED = frozenset({"schema_version", "blob_data", "blob_chunks"})

#: The SQLite FTS5 index and how its columns map to PostgreSQL's table of
#: the same name (source expression, target column).
_FTS_TABLE = "email_fts"
_FTS_COLUMNS = (
    ("rowid", "docid"),
    ("account", "account_id"),
    ("subject", "subject"),
    ("from_addr", "from_addr"),
    ("to_addr", "to_addr"),
    ("cc_addr", "cc_addr"),
    ("bcc_addr", "bcc_addr"),
    ("body", "body"),
    ("attachments", "attachments"),
)

#: Tables whose text comes from message content, where PostgreSQL's
#: index drops NUL characters (which its text cannot hold) as it does at
#: ingest (L{jmapd.storage.engines.postgres_search}).
_INDEX_TABLES = frozenset({_FTS_TABLE, "email_search"})


class MigrationFailed(Exception):
    """
    The migration cannot be done or did not copy everything; the message
    says what, in an operator's words.
    """


@frozen
class Count:
    """
    The rows of one table (or the blobs) on each side, read back after
    the copy.  C{expected} is what the target should hold: the source's
    count, plus the Emails indexed during the migration for the index.
    """

    name: str
    source: int
    target: int
    expected: int

    @property
    def matches(self) -> bool:
        return self.target == self.expected


@frozen
class Result:
    counts: list[Count]
    accounts: int
    indexed: int
    blobs_copied: int
    missing_blobs: int

    def lines(self) -> list[str]:
        """
        The counts as a table, for standard output.
        """
        width = max([len(c.name) for c in self.counts] + [len("table")])
        lines = [f"{'table':<{width}}  {'sqlite':>10}  {'postgresql':>10}"]
        for c in self.counts:
            mark = "" if c.matches else f"  MISMATCH (expected {c.expected})"
            lines.append(f"{c.name:<{width}}  {c.source:>10}  {c.target:>10}{mark}")
        return lines


def sqlite_file(path: str) -> str:
    """
    The SQLite database of an installation: C{path} itself, or the
    database file in the db-path directory C{path}.

    @raise MigrationFailed: there is none.
    """
    candidate = os.path.join(path, DATABASE_FILE) if os.path.isdir(path) else path
    if not os.path.isfile(candidate):
        raise MigrationFailed(
            f"--from-sqlite {path}: no SQLite database there (give the old db-path directory,"
            f" which holds {DATABASE_FILE}, or that file)"
        )
    return os.path.abspath(candidate)


def _blob_files(directory: str) -> Iterator[tuple[str, str]]:
    """
    C{(blob id, path)} of each blob file under a file store's root, in id
    order (its temporary directory left out).
    """
    found: list[tuple[str, str]] = []
    for root, dirs, files in os.walk(directory):
        if root == directory:
            dirs[:] = [d for d in dirs if d != "tmp"]
        found.extend((name, os.path.join(root, name)) for name in files if is_blob_id(name))
    yield from sorted(found)


# -- the two schemas ---------------------------------------------------------------------


def _source_tables(txn: Any) -> dict[str, list[str]]:
    """
    The tables of the SQLite database to copy, with their columns (the
    FTS5 table with its source expressions; its shadow tables left out).
    """
    rows = txn.fetchall("SELECT name, sql FROM sqlite_master WHERE type = 'table' ORDER BY name")
    virtual = [name for name, sql in rows if (sql or "").upper().startswith("CREATE VIRTUAL TABLE")]
    tables: dict[str, list[str]] = {}
    for name, _ in rows:
        if name.startswith("sqlite_") or name in _NOT_COPIED:
            continue
        if any(name.startswith(v + "_") for v in virtual):
            continue
        if name in virtual:
            if name != _FTS_TABLE:
                raise MigrationFailed(f"the SQLite database has a virtual table {name!r} this jmapd does not know")
            tables[name] = [source for source, _ in _FTS_COLUMNS]
            continue
        tables[name] = [row[1] for row in txn.fetchall(f'PRAGMA table_info("{name}")')]
    return tables


def _target_tables(txn: Any) -> dict[str, list[str]]:
    """
    The tables of the PostgreSQL database, with their columns that take
    values (generated ones left out).
    """
    rows = txn.fetchall(
        "SELECT c.table_name, c.column_name FROM information_schema.columns c"
        " JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name"
        " WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE' AND c.is_generated = 'NEVER'"
        " ORDER BY c.table_name, c.ordinal_position"
    )
    tables: dict[str, list[str]] = {}
    for table, column in rows:
        if table not in _NOT_COPIED:
            tables.setdefault(table, []).append(column)
    return tables


def _target_order(txn: Any, tables: Iterable[str]) -> list[str]:
    """
    C{tables} in an order in which each comes after the tables its
    foreign keys refer to.
    """
    rows = txn.fetchall(
        "SELECT child.relname, parent.relname FROM pg_constraint c"
        " JOIN pg_class child ON child.oid = c.conrelid"
        " JOIN pg_class parent ON parent.oid = c.confrelid"
        " JOIN pg_namespace n ON n.oid = child.relnamespace"
        " WHERE c.contype = 'f' AND n.nspname = current_schema()"
    )
    wanted = set(tables)
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for table in sorted(wanted):
        sorter.add(table)
    for child, parent in rows:
        if child in wanted and parent in wanted and child != parent:
            sorter.add(child, parent)
    return list(sorter.static_order())


@frozen
class _Plan:
    """
    What to copy: per table, the source's select list and the target's
    columns, in the target's foreign-key order.
    """

    tables: list[tuple[str, list[str], list[str]]]


def _plan(source: dict[str, list[str]], target: dict[str, list[str]], order: Sequence[str]) -> _Plan:
    problems = []
    tables = []
    for table in order:
        if table not in source:
            continue
        if table == _FTS_TABLE:
            tables.append((table, [s for s, _ in _FTS_COLUMNS], [t for _, t in _FTS_COLUMNS]))
            continue
        lost = [column for column in source[table] if column not in target[table]]
        if lost:
            problems.append(f"columns {', '.join(lost)} of table {table}")
        columns = [column for column in source[table] if column in target[table]]
        tables.append((table, columns, columns))
    for table in sorted(set(source) - set(target)):
        problems.append(f"table {table}")
    if problems:
        raise MigrationFailed(
            "the PostgreSQL database has no place for "
            + "; ".join(problems)
            + ": is it from another jmapd version than the SQLite database?"
        )
    return _Plan(tables)


# -- copying -----------------------------------------------------------------------------


def _clean(row: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(v.replace("\x00", "") if isinstance(v, str) else v for v in row)


def _copy_table(
    source_txn: Any,
    target_txn: Any,
    table: str,
    select: Sequence[str],
    columns: Sequence[str],
    advance: Callable[[int], None],
) -> int:
    """
    Copy every row of C{table} with PostgreSQL's C{COPY}, a batch at a
    time; return how many.
    """
    import psycopg

    cursor = source_txn.execute(f'SELECT {", ".join(select)} FROM "{table}"')
    names = ", ".join(f'"{c}"' for c in columns)
    clean = table in _INDEX_TABLES
    copied = 0
    try:
        with target_txn.conn.cursor() as out, out.copy(f'COPY "{table}" ({names}) FROM STDIN') as copy:
            while True:
                rows = cursor.fetchmany(BATCH)
                if not rows:
                    break
                for row in rows:
                    copy.write_row(_clean(row) if clean else row)
                copied += len(rows)
                advance(len(rows))
    except psycopg.Error as error:
        # A value PostgreSQL cannot hold (a NUL character in a text, say).
        reason = " ".join(str(error).split())
        raise MigrationFailed(f"copying table {table} into PostgreSQL failed: {reason}") from None
    return copied


def _count(txn: Any, table: str) -> int:
    return int(txn.fetchvalue(f'SELECT count(*) FROM "{table}"'))


def _present(store: Any, blob_ids: Sequence[str]) -> int:
    """
    How many of C{blob_ids} C{store} holds (read back from the store).
    """
    if isinstance(store, DatabaseBlobStore):

        def count(txn: Any, batch: list[str]) -> int:
            marks = ", ".join("?" for _ in batch)
            return int(txn.fetchvalue(f"SELECT count(*) FROM blob_data WHERE blob_id IN ({marks})", batch))

        return sum(
            store.database.run_sync(count, list(blob_ids[start : start + BATCH]))
            for start in range(0, len(blob_ids), BATCH)
        )
    return sum(1 for blob_id in blob_ids if store.exists(blob_id))


def _referenced_blobs(txn: Any) -> list[str]:
    """
    The blobs the metadata refers to: messages of Emails, and uploads.
    """
    rows = txn.fetchall("SELECT blob_id FROM emails UNION SELECT blob_id FROM blobs")
    return [str(row[0]) for row in rows]


def _refuse_non_empty(txn: Any, where: str) -> None:
    accounts = _count(txn, "accounts")
    principals = _count(txn, "principals")
    if accounts or principals:
        raise MigrationFailed(
            f"the PostgreSQL database {where} (db-url) already has {accounts} accounts and"
            f" {principals} principals; migrate copies into an empty database only, so that"
            " nothing in it is mixed with or overwritten by the SQLite data: create a new"
            " database for db-url (docs/operations.md)"
        )


def migrate_from_sqlite(
    config: Any,
    path: str,
    progress: Callable[[int, str, tuple[str, str]], Progress],
    note: Callable[[str], None] = lambda line: None,
) -> Result:
    """
    Copy the SQLite installation at C{path} into the PostgreSQL database
    of C{config} (see the module docstring).

    @param progress: C{progress(total, label, unit)} -> a
        L{jmapd.importexport.Progress} for one phase (blobs, then rows).
    @param note: called with a line for each step, for the operator.
    @raise MigrationFailed: the migration was refused, failed, or its
        counts differ.
    """
    from jmapd.storage.engines.postgres import redact

    if not config.db_url:
        raise MigrationFailed("migrate copies into PostgreSQL: set db-url in the configuration (or --set db-url=URL)")
    where = redact(config.db_url)
    source_path = sqlite_file(path)
    source_blob_dir = os.path.join(os.path.dirname(source_path), "blobs")
    source = Database(SQLiteEngine(source_path))
    target = open_database(config)
    store = None
    try:
        version = source.migrate()
        note(f"source: {source_path} (schema version {version}), blobs in {source_blob_dir}")
        note(f"target: {where}, blob-store {config.blob_store}")
        target.run_sync(_refuse_non_empty, where)
        store = open_blob_store(config)
        blob_ids, copied = _copy_blobs(config, store, source_blob_dir, progress, note)
        staged_ids, staged_copied = _copy_staged_blobs(source, store, note)
        blob_ids += staged_ids
        copied += staged_copied
        indexed = target.run_sync(_copy_tables, source, store, progress, note, where, write=True)
        counts = _verify(source, target, store, blob_ids, indexed)
        accounts = target.run_sync(lambda txn: _count(txn, "accounts"))
        referenced = target.run_sync(_referenced_blobs)
        missing = len(referenced) - _present(store, referenced)
    finally:
        source.close()
        target.close()
        if store is not None and hasattr(store, "close"):
            store.close()
    if missing:
        note(
            f"warning: {missing} blobs that Emails or uploads refer to were missing from the"
            " SQLite installation already (see the blob counts of the old server's logs)"
        )
    result = Result(counts, accounts, indexed, copied, missing)
    wrong = [c.name for c in counts if not c.matches]
    if wrong:
        raise MigrationFailed(
            "\n".join(result.lines())
            + f"\nthe counts differ for {', '.join(wrong)}: the PostgreSQL database is not a complete copy"
        )
    return result


def _copy_blobs(
    config: Any,
    store: Any,
    directory: str,
    progress: Callable[[int, str, tuple[str, str]], Progress],
    note: Callable[[str], None],
) -> tuple[list[str], int]:
    """
    Put every blob file of the old installation into C{store}; return the
    blob ids and how many were copied (the others were there already).

    @raise MigrationFailed: a file's content does not have its name's id.
    """
    files = list(_blob_files(directory)) if os.path.isdir(directory) else []
    blob_ids = [blob_id for blob_id, _ in files]
    file_store = store.files if isinstance(store, WriteBackBlobStore) else None
    if file_store is not None and os.path.realpath(file_store.root) == os.path.realpath(directory):
        note(f"blobs: {len(files)} already in place in {directory}")
        return blob_ids, 0
    total = sum(os.path.getsize(p) for _, p in files)
    bar = progress(total, "migrate blobs", ("blobs", "blobs/s"))
    done = copied = 0
    corrupt = []
    for count, (blob_id, file_path) in enumerate(files, 1):
        if not store.exists(blob_id):
            with open(file_path, "rb") as f:
                stored = store.put_file(f)
            if stored != blob_id:
                store.delete(stored)
                corrupt.append(file_path)
            else:
                copied += 1
        done += os.path.getsize(file_path)
        bar.update(done, count)
    bar.done(done, len(files))
    if corrupt:
        raise MigrationFailed(
            f"{len(corrupt)} blob files do not hold the content their names say (damaged?),"
            f" such as {corrupt[0]}; nothing else was copied"
        )
    note(f"blobs: {copied} copied, {len(files) - copied} already there")
    return blob_ids, copied


def _copy_staged_blobs(source: Database, store: Any, note: Callable[[str], None]) -> tuple[list[str], int]:
    """
    Put every blob the old installation keeps in its database into
    C{store}: delivered messages staged for their files
    (L{jmapd.blobs.writeback}), or every blob of C{blob-store: database};
    return their ids and how many were copied.
    """
    staged = DatabaseBlobStore(source)
    blob_ids = source.run_sync(
        lambda txn: [row[0] for row in txn.fetchall("SELECT blob_id FROM blob_data ORDER BY blob_id")]
    )
    copied = 0
    for blob_id in blob_ids:
        if not store.exists(blob_id):
            store.put(staged.read(blob_id))
            copied += 1
    if blob_ids:
        note(f"blobs in the SQLite database: {copied} copied, {len(blob_ids) - copied} already there")
    return blob_ids, copied


def _copy_tables(
    txn: Any,
    source: Database,
    store: Any,
    progress: Callable[[int, str, tuple[str, str]], Progress],
    note: Callable[[str], None],
    where: str,
) -> int:
    """
    In the target's transaction C{txn}: copy every table from one read
    transaction of the source; index the Emails SQLite had not; return
    how many those were.
    """
    # Whoever else uses the target (a node started too early, a second
    # migrate) waits, and the check is made again under the lock.
    txn.execute("LOCK TABLE accounts IN EXCLUSIVE MODE")
    _refuse_non_empty(txn, where)
    target_tables = _target_tables(txn)

    def copy_all(source_txn: Any) -> None:
        plan = _plan(_source_tables(source_txn), target_tables, _target_order(txn, target_tables))
        total = sum(_count(source_txn, table) for table, _, _ in plan.tables)
        bar = progress(total, "migrate rows", ("rows", "rows/s"))
        # What migrating the schema put there (counters, settings) gives
        # way to the source's values.
        for table, _, _ in reversed(plan.tables):
            txn.execute(f'DELETE FROM "{table}"')
        done = 0

        def advance(rows: int) -> None:
            nonlocal done
            done += rows
            bar.update(done, done)

        for table, select, columns in plan.tables:
            _copy_table(source_txn, txn, table, select, columns, advance)
        bar.done(done, done)

    source.run_sync(copy_all)
    indexed = 0
    while True:
        batch = search.backfill(txn, store)
        if not batch:
            break
        indexed += batch
    if indexed:
        note(f"search: indexed {indexed} Emails the SQLite database had not indexed yet")
    return indexed


def _verify(source: Database, target: Database, store: Any, blob_ids: Sequence[str], indexed: int) -> list[Count]:
    """
    Count the rows of every copied table, and the blobs, on both sides,
    each side in a new transaction.
    """
    tables = source.run_sync(lambda txn: sorted(_source_tables(txn)))

    def count_all(txn: Any) -> dict[str, int]:
        return {table: _count(txn, table) for table in tables}

    before = source.run_sync(count_all)
    after = target.run_sync(count_all)
    counts = []
    for table in tables:
        expected = before[table] + (indexed if table in _INDEX_TABLES else 0)
        counts.append(Count(table, before[table], after[table], expected))
    present = _present(store, blob_ids)
    counts.append(Count("(blobs)", len(blob_ids), present, len(blob_ids)))
    return counts
