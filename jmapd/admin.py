# -*- test-case-name: tests.test_admin -*-
"""
C{jmapd-admin}: create and remove accounts and their aliases, set
passwords, issue API tokens, manage groups, import and export mail, from a
shell, on the same configuration and database as the server.

JMAP has no standard way to create an account, and an operator needs one
before the first client can log in; scripts need a token they can capture
from standard output.  So this is a small command line tool rather than an
API: it loads the configuration the way C{twistd jmapd} does, opens the
database under C{db-path} and runs each command as one write transaction.
SQLite runs in WAL mode and a write transaction waits for the write lock, so
it is safe to use while the server runs.

Every failure an operator can cause (a wrong configuration, an unknown
account, a name that is taken) ends with one line on standard error that
starts with C{jmapd-admin: } and exit status 1; a wrong command line exits
with status 2, as argparse does.  Never a traceback.

L{main} takes its streams and environment as arguments so that tests run it
in-process.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import secrets
import sqlite3
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import IO, Any, NoReturn

from attrs import define, field

from jmapd.auth.passwords import hash_password
from jmapd.config import ConfigError, load_config
from jmapd.storage import accounts, open_database
from jmapd.storage.database import Database

__all__ = ["main"]

PROG = "jmapd-admin"

CONFIG_VARIABLE = "JMAPD_CONFIG"

DEMO_ACCOUNT = "demo"
DEMO_ADDRESS = "demo@localhost"

# Login names travel in HTTP Basic credentials and in logs: plain ASCII,
# no spaces, nothing that needs quoting.
_ACCOUNT_NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}", re.ASCII)

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ADDRESS = re.compile(
    rf"[^@\s<>()\[\],;:\"\\]+@{_LABEL}(?:\.{_LABEL})*\.?", re.ASCII
)
_MAX_ADDRESS_LENGTH = 254


class AdminError(Exception):
    """
    A failure to report as one line on standard error, with exit status 1.
    """


class _UsageExit(Exception):
    """
    argparse asked to exit (a usage error, or after C{--help}).
    """

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


@define
class _Streams:
    stdin: IO[str]
    stdout: IO[str]
    stderr: IO[str]


class _Parser(argparse.ArgumentParser):
    """
    An argument parser that writes to the given streams and raises
    L{_UsageExit} instead of calling C{sys.exit}, so that L{main} returns a
    status to its caller.
    """

    def __init__(self, *args: Any, streams: _Streams, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.streams = streams

    def _print_message(self, message: str, file: Any = None) -> None:
        if message:
            stream = self.streams.stdout if file in (None, sys.stdout) else self.streams.stderr
            stream.write(message)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            self._print_message(message, sys.stderr)
        raise _UsageExit(status)

    def add_subparsers(self, **kwargs: Any) -> Any:
        kwargs.setdefault("parser_class", functools.partial(_Parser, streams=self.streams))
        return super().add_subparsers(**kwargs)


@define
class _Context:
    """
    What a command runs with: its arguments, its streams, and the database,
    opened on first use so that a command refused for its arguments does
    not create the data directory.
    """

    args: argparse.Namespace
    streams: _Streams
    config: Any
    _database: Database | None = field(default=None, init=False)

    @property
    def database(self) -> Database:
        if self._database is None:
            self._database = open_database(self.config)
        return self._database

    def write(self, fn: Callable[..., Any], *args: Any) -> Any:
        """
        Run C{fn(txn, *args)} in one write transaction.
        """
        return self.database.run_sync(fn, *args, write=True)

    def read(self, fn: Callable[..., Any], *args: Any) -> Any:
        """
        Run C{fn(txn, *args)} in one read transaction.
        """
        return self.database.run_sync(fn, *args, write=False)

    def out(self, line: str) -> None:
        self.streams.stdout.write(line + "\n")

    def note(self, line: str) -> None:
        self.streams.stderr.write(line + "\n")

    def close(self) -> None:
        if self._database is not None:
            self._database.close()
            self._database = None


# Checks and input.


def _check_name(name: str) -> str:
    if not _ACCOUNT_NAME.fullmatch(name):
        raise AdminError(
            f"invalid account name {name!r}: expected 1 to 64 letters, digits"
            " or . _ - @ (no spaces)"
        )
    return name


def _check_addresses(addresses: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    for address in addresses:
        if len(address) > _MAX_ADDRESS_LENGTH or not _ADDRESS.fullmatch(address):
            raise AdminError(
                f"invalid address {address!r}: expected local@domain,"
                " such as alice@example.com"
            )
        if address.lower() in seen:
            raise AdminError(f"the address {address!r} is given twice")
        seen.add(address.lower())
    return list(addresses)


def _read_password(context: _Context) -> str:
    """
    The first line of standard input, without its line ending; other
    white space is part of the password.
    """
    line = context.streams.stdin.readline()
    password = line.removesuffix("\n").removesuffix("\r")
    if not password:
        raise AdminError(
            "the password is empty: give it as the first line of standard input"
        )
    return password


def _iso_utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# Commands.  Passwords are hashed before the transaction starts: argon2 takes
# tens of milliseconds, and the server's writers wait for the write lock.


def _account_add(context: _Context) -> None:
    args = context.args
    name = _check_name(args.name)
    addresses = _check_addresses(args.email)
    password_hash = hash_password(_read_password(context)) if args.password_stdin else None
    account = context.write(accounts.add_account, name, password_hash, addresses)
    context.out(f"account {account.name} created (id {account.id})")


def _account_list(context: _Context) -> None:
    for account in context.read(accounts.list_accounts):
        context.out("\t".join([account.name, account.id, ",".join(account.addresses)]))


def _account_passwd(context: _Context) -> None:
    name = context.args.name
    password_hash = hash_password(_read_password(context))
    context.write(accounts.set_password, name, password_hash)
    context.out(f"password of account {name} changed")


def _account_remove(context: _Context) -> None:
    name = context.args.name
    if not context.args.yes:
        raise AdminError(
            f"not removing account {name}: this deletes its mail, tokens and"
            " everything else it owns; run again with --yes to confirm"
        )
    account_id = context.write(accounts.remove_account, name)
    context.out(f"account {name} removed (id {account_id})")


def _token_create(context: _Context) -> None:
    name = context.args.name
    secret = secrets.token_urlsafe(32)
    token = context.write(accounts.add_token, name, context.args.label, secret)
    context.out(secret)
    context.note(f"token {token.id} for {name}: keep it, it is not shown again")


def _token_list(context: _Context) -> None:
    for token in context.read(accounts.list_tokens, context.args.name):
        context.out("\t".join([token.id, token.label, _iso_utc(token.created_at)]))


def _token_revoke(context: _Context) -> None:
    token_id = context.args.token_id
    if not context.write(accounts.revoke_token, token_id):
        raise AdminError(f"no token with id {token_id!r}")
    context.out(f"token {token_id} revoked")


def _alias_add(context: _Context) -> None:
    from jmapd.ingest import recipients

    name = context.args.name
    (address,) = _check_addresses([context.args.address])
    alias = context.write(recipients.add_alias, name, address)
    context.out(f"alias {alias} added to account {name}")


def _alias_remove(context: _Context) -> None:
    from jmapd.ingest import recipients

    name = context.args.name
    alias = context.write(recipients.remove_alias, name, context.args.address)
    context.out(f"alias {alias} removed from account {name}")


def _alias_list(context: _Context) -> None:
    from jmapd.ingest import recipients

    for alias in context.read(recipients.list_aliases, context.args.name):
        context.out(alias)


# Groups: Principals of type group (RFC 9670), whose rights every member
# gets.  Each change raises the Principal state and the acl counter (so
# myRights and the sharing caches follow at once) and moves the
# SharedAccounts state of every member it concerns (so their open push
# channels read their accounts again when they next see a change).


def _check_group_name(name: str) -> str:
    if not name or len(name) > 255 or not name.isprintable() or name != name.strip():
        raise AdminError(f"{name!r} is not a group name: 1 to 255 printable characters, no spaces around")
    return name


def _group_id(txn: Any, name: str) -> str:
    from jmapd.storage import principals

    group_id = principals.group_by_name(txn, name)
    if group_id is None:
        raise AdminError(f"no group named {name!r}")
    return group_id


def _member_ids(txn: Any, names: Sequence[str]) -> list[str]:
    from jmapd.storage import principals

    found = []
    for name in dict.fromkeys(names):
        try:
            found.append(principals.individual_by_name(txn, name))
        except principals.NoSuchPrincipal:
            raise AdminError(f"no account named {name!r}") from None
    return found


def _current_members(txn: Any, group_id: str) -> set[str]:
    rows = txn.fetchall("SELECT member_id FROM principal_members WHERE group_id = ?", (group_id,))
    return {str(row[0]) for row in rows}


def _add_group(txn: Any, name: str, members: Sequence[str]) -> str:
    from jmapd.storage import principals

    if principals.group_by_name(txn, name) is not None:
        raise AdminError(f"a group named {name!r} exists")
    member_ids = _member_ids(txn, members)
    group_id = principals.add_group(txn, name, member_ids)
    principals.touch_shared_accounts(txn, member_ids)
    return group_id


def _change_members(txn: Any, name: str, members: Sequence[str], add: bool) -> None:
    from jmapd.storage import principals

    group_id = _group_id(txn, name)
    member_ids = _member_ids(txn, members)
    current = _current_members(txn, group_id)
    for member, member_id in zip(dict.fromkeys(members), member_ids, strict=True):
        if add and member_id in current:
            raise AdminError(f"{member!r} is a member of group {name!r} already")
        if not add and member_id not in current:
            raise AdminError(f"{member!r} is not a member of group {name!r}")
    if add:
        principals.add_group(txn, name, member_ids)
    else:
        principals.remove_group_members(txn, name, member_ids)
    principals.update_principal(txn, group_id)
    principals.touch_shared_accounts(txn, member_ids)


def _remove_group(txn: Any, name: str) -> str:
    from jmapd.storage import principals

    group_id = _group_id(txn, name)
    principals.touch_shared_accounts(txn, [group_id])
    principals.remove_group(txn, name)
    return group_id


def _group_members(txn: Any, name: str) -> list[str]:
    from jmapd.storage import principals

    _group_id(txn, name)
    return principals.group_members(txn, name)


def _group_add(context: _Context) -> None:
    name = _check_group_name(context.args.name)
    group_id = context.write(_add_group, name, context.args.members)
    context.out(f"group {name} created (id {group_id})")


def _group_remove(context: _Context) -> None:
    name = context.args.name
    group_id = context.write(_remove_group, name)
    context.out(f"group {name} removed (id {group_id})")


def _group_add_member(context: _Context) -> None:
    name = context.args.name
    context.write(_change_members, name, context.args.members, True)
    context.out(f"added {', '.join(dict.fromkeys(context.args.members))} to group {name}")


def _group_remove_member(context: _Context) -> None:
    name = context.args.name
    context.write(_change_members, name, context.args.members, False)
    context.out(f"removed {', '.join(dict.fromkeys(context.args.members))} from group {name}")


def _group_members_command(context: _Context) -> None:
    for member in context.read(_group_members, context.args.name):
        context.out(member)


def _group_list(context: _Context) -> None:
    from jmapd.storage import principals

    for name, group_id, count in context.read(principals.list_groups):
        context.out("\t".join([name, group_id, str(count)]))


def _blob_store(context: _Context) -> Any:
    from jmapd.blobs.database import open_blob_store

    # On SQLite it shares the metadata database (delivered messages are
    # staged there before they are moved to their files).
    return open_blob_store(context.config, context.database)


def _import(context: _Context) -> None:
    from jmapd import importexport

    args = context.args
    stream = context.streams.stderr
    tty = bool(getattr(stream, "isatty", lambda: False)())
    try:
        summary = importexport.import_path(
            context.database,
            _blob_store(context),
            context.config,
            args.account,
            args.path,
            args.mailbox,
            progress=lambda total: importexport.Progress(stream, total, tty),
        )
    except importexport.Interrupted as stop:
        # Ctrl-C: the batches filed stay, so say what they were and how
        # to go on, then exit with status 130 as for any interruption.
        for line in stop.summary.lines():
            context.out(line)
        stream.write(f"{PROG}: interrupted: what was imported stays; run the same import again to import the rest\n")
        raise KeyboardInterrupt from None
    for line in summary.lines():
        context.out(line)
    if summary.refused:
        # Not a success: a script that goes on to remove the source
        # (`import ... && rm old.mbox`) would lose the refused messages.
        count = len(summary.refused)
        raise AdminError(
            f"{count} message{'s were' if count != 1 else ' was'} refused (listed above); the others were imported"
        )


def _export(context: _Context) -> None:
    from jmapd import importexport

    args = context.args
    count = importexport.export_mbox(context.database, _blob_store(context), args.account, args.mbox, args.mailbox)
    context.out(f"exported {count} messages to {args.mbox}")


def _spool_held(context: _Context) -> None:
    from datetime import UTC, datetime

    from jmapd import importexport
    from jmapd.ingest.delivery import Envelope
    from jmapd.storage import spoolmark

    held = context.read(spoolmark.held_messages)
    for message in held:
        envelope = Envelope.from_bytes(message.envelope)
        when = datetime.fromtimestamp(message.held_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
        recipients = ", ".join(address for address, _ in envelope.recipients)
        context.out(f"{message.queue_id}\theld {when}\tfrom <{envelope.mail_from}>\tto {recipients}")
        context.out(f"\t{message.reason}")
    target = context.args.mbox
    if target is None:
        context.out(f"{len(held)} held messages")
        return
    importexport.write_mbox_file(target, ((message.message, int(message.received * 1000), []) for message in held))
    context.out(f"{len(held)} held messages written to {target}")


def _spool_drop(context: _Context) -> None:
    from jmapd.storage import spoolmark

    queue_ids = context.args.queue_id
    dropped = context.write(spoolmark.drop_held, queue_ids)
    for queue_id in dropped:
        context.out(f"held message {queue_id} dropped")
    missing = [queue_id for queue_id in queue_ids if queue_id not in dropped]
    if missing:
        raise AdminError("no held message " + ", ".join(missing))


def _migrate(context: _Context) -> None:
    from jmapd import importexport, migrate

    stream = context.streams.stderr
    tty = bool(getattr(stream, "isatty", lambda: False)())
    try:
        result = migrate.migrate_from_sqlite(
            context.config,
            context.args.from_sqlite,
            progress=lambda total, label, unit: importexport.Progress(stream, total, tty, label=label, unit=unit),
            note=context.note,
        )
    except migrate.MigrationFailed as error:
        raise AdminError(str(error)) from None
    for line in result.lines():
        context.out(line)
    context.out(f"migrated {result.accounts} accounts; the counts match")


def _ensure_demo(txn: Any, password_hash: str) -> bool:
    if accounts.get_account_by_name(txn, DEMO_ACCOUNT) is not None:
        return False
    accounts.add_account(txn, DEMO_ACCOUNT, password_hash, [DEMO_ADDRESS])
    return True


def _demo(context: _Context) -> None:
    password = secrets.token_urlsafe(12)
    if context.write(_ensure_demo, hash_password(password)):
        context.out(f"demo account: user {DEMO_ACCOUNT}, password {password} (shown once)")
    else:
        context.out("demo account exists")


# The command line.


def _parser(streams: _Streams) -> _Parser:
    parser = _Parser(
        prog=PROG,
        description="Manage the accounts and API tokens of a jmapd server.",
        streams=streams,
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help=f"the server's configuration file (default: ${CONFIG_VARIABLE})",
    )
    parser.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        dest="overrides",
        help="override a configuration key, as twistd jmapd --set does (repeatable)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    account = commands.add_parser("account", help="create, list, change and remove accounts")
    account_commands = account.add_subparsers(dest="action", metavar="ACTION", required=True)

    add = account_commands.add_parser("add", help="create an account")
    add.add_argument("name", metavar="NAME")
    add.add_argument(
        "--email",
        metavar="ADDR",
        action="append",
        default=[],
        help="an address of the account (repeatable; the first is the main one)",
    )
    add.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input"
        " (without it the account can log in with tokens only)",
    )
    add.set_defaults(run=_account_add)

    listing = account_commands.add_parser("list", help="list accounts: name, id, addresses")
    listing.set_defaults(run=_account_list)

    passwd = account_commands.add_parser("passwd", help="set an account's password")
    passwd.add_argument("name", metavar="NAME")
    passwd.add_argument(
        "--password-stdin",
        action="store_true",
        required=True,
        help="read the password from the first line of standard input",
    )
    passwd.set_defaults(run=_account_passwd)

    remove = account_commands.add_parser(
        "remove", help="remove an account and everything it owns"
    )
    remove.add_argument("name", metavar="NAME")
    remove.add_argument("--yes", action="store_true", help="confirm the removal")
    remove.set_defaults(run=_account_remove)

    alias = account_commands.add_parser("alias", help="add, remove and list an account's aliases")
    alias_commands = alias.add_subparsers(dest="alias_action", metavar="ACTION", required=True)
    alias_add = alias_commands.add_parser("add", help="deliver mail for another address to the account")
    alias_add.add_argument("name", metavar="NAME")
    alias_add.add_argument("address", metavar="ADDR")
    alias_add.set_defaults(run=_alias_add)
    alias_remove = alias_commands.add_parser("remove", help="remove an alias")
    alias_remove.add_argument("name", metavar="NAME")
    alias_remove.add_argument("address", metavar="ADDR")
    alias_remove.set_defaults(run=_alias_remove)
    alias_list = alias_commands.add_parser("list", help="list an account's aliases, one per line")
    alias_list.add_argument("name", metavar="NAME")
    alias_list.set_defaults(run=_alias_list)

    token = commands.add_parser("token", help="create, list and revoke API tokens")
    token_commands = token.add_subparsers(dest="action", metavar="ACTION", required=True)

    create = token_commands.add_parser(
        "create", help="create a token; its secret is the only line printed"
    )
    create.add_argument("name", metavar="NAME")
    create.add_argument("--label", default="", help="what the token is for")
    create.set_defaults(run=_token_create)

    tokens = token_commands.add_parser("list", help="list an account's tokens")
    tokens.add_argument("name", metavar="NAME")
    tokens.set_defaults(run=_token_list)

    revoke = token_commands.add_parser("revoke", help="revoke a token")
    revoke.add_argument("token_id", metavar="TOKENID")
    revoke.set_defaults(run=_token_revoke)

    group = commands.add_parser("group", help="create, change, list and remove groups of accounts")
    group_commands = group.add_subparsers(dest="action", metavar="ACTION", required=True)
    group_add = group_commands.add_parser("add", help="create a group with these member accounts")
    group_add.add_argument("name", metavar="NAME")
    group_add.add_argument("members", metavar="MEMBER", nargs="*", help="an account name")
    group_add.set_defaults(run=_group_add)
    group_remove = group_commands.add_parser("remove", help="remove a group and what was shared with it")
    group_remove.add_argument("name", metavar="NAME")
    group_remove.set_defaults(run=_group_remove)
    group_add_member = group_commands.add_parser("add-member", help="add accounts to a group")
    group_add_member.add_argument("name", metavar="NAME")
    group_add_member.add_argument("members", metavar="MEMBER", nargs="+", help="an account name")
    group_add_member.set_defaults(run=_group_add_member)
    group_remove_member = group_commands.add_parser("remove-member", help="remove accounts from a group")
    group_remove_member.add_argument("name", metavar="NAME")
    group_remove_member.add_argument("members", metavar="MEMBER", nargs="+", help="an account name")
    group_remove_member.set_defaults(run=_group_remove_member)
    group_members = group_commands.add_parser("members", help="list a group's members, one per line")
    group_members.add_argument("name", metavar="NAME")
    group_members.set_defaults(run=_group_members_command)
    group_list = group_commands.add_parser("list", help="list groups: name, id, number of members")
    group_list.set_defaults(run=_group_list)

    importing = commands.add_parser(
        "import", help="import an mbox file or a Maildir into an account (can be run again)"
    )
    importing.add_argument("account", metavar="ACCOUNT")
    importing.add_argument("path", metavar="PATH", help="an mbox file or a Maildir directory")
    importing.add_argument(
        "--mailbox", metavar="NAME", help="put everything under this Mailbox ('/' between levels)"
    )
    importing.set_defaults(run=_import)

    exporting = commands.add_parser("export", help="write an account's mail to an mbox file")
    exporting.add_argument("account", metavar="ACCOUNT")
    exporting.add_argument("--mbox", metavar="FILE", required=True, help="the mbox file to write")
    exporting.add_argument("--mailbox", metavar="NAME", help="only this Mailbox ('/' between levels)")
    exporting.set_defaults(run=_export)

    spool = commands.add_parser("spool", help="messages of the delivery spool that could not be filed (lmtp-spool)")
    spool_commands = spool.add_subparsers(dest="action", metavar="ACTION", required=True)
    held = spool_commands.add_parser(
        "held",
        help="list the held messages: queue id, when, sender, the recipients they were not filed for, why",
    )
    held.add_argument(
        "--mbox", metavar="FILE", help="also write them to this mbox file (for jmapd-admin import)"
    )
    held.set_defaults(run=_spool_held)
    drop = spool_commands.add_parser("drop", help="delete held messages once dealt with")
    drop.add_argument("queue_id", metavar="QUEUE_ID", nargs="+", help="a queue id from 'spool held'")
    drop.set_defaults(run=_spool_drop)

    migrating = commands.add_parser(
        "migrate",
        help="copy a SQLite installation into the PostgreSQL database of db-url (ids and states kept)",
        description="Copy every table and blob of an SQLite installation into the empty PostgreSQL"
        " database of db-url (blobs into the configured blob-store), keeping ids and state strings;"
        " the row counts of both sides are printed and must match. Stop jmapd first.",
    )
    migrating.add_argument(
        "--from-sqlite",
        metavar="PATH",
        required=True,
        help="the old installation: its db-path directory (holding jmapd.sqlite3 and blobs/),"
        " or its jmapd.sqlite3 file (the blobs are then read from blobs/ beside it)",
    )
    migrating.set_defaults(run=_migrate)

    demo = commands.add_parser(
        "demo", help="create the database and a demo account if missing (make run)"
    )
    demo.set_defaults(run=_demo)
    return parser


def _error_message(error: BaseException) -> str:
    """
    What an operator should read for C{error}, without C{jmapd-admin: }.
    """
    from jmapd.importexport import ImportFailed
    from jmapd.ingest.recipients import AliasError
    from jmapd.storage.migrations import DuplicateMigration, SchemaTooNew

    if isinstance(
        error, (AdminError, accounts.AccountExists, AliasError, ImportFailed, SchemaTooNew, DuplicateMigration)
    ):
        return str(error)
    if isinstance(error, accounts.AccountNotFound):
        return f"no account named {error.args[0]!r}"
    if isinstance(error, ConfigError):
        header, *problems = str(error).splitlines()
        return "\n".join([header, *("  " + problem for problem in problems)])
    if isinstance(error, OSError):
        where = f"{error.filename}: " if error.filename else ""
        return f"{where}{error.strerror or error}"
    if isinstance(error, sqlite3.Error):
        return f"database error: {error}"
    return f"unexpected error: {type(error).__name__}: {error}"


def main(
    argv: Sequence[str] | None = None,
    stdin: IO[str] | None = None,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> int:
    """
    Run C{jmapd-admin} with the arguments C{argv} (default C{sys.argv[1:]}).

    @param environ: the environment, for C{JMAPD_CONFIG} and the C{JMAPD_*}
        configuration overrides (default C{os.environ}).
    @return: the exit status: 0, 1 for a failure, 2 for a usage error.
    """
    streams = _Streams(
        stdin=stdin if stdin is not None else sys.stdin,
        stdout=stdout if stdout is not None else sys.stdout,
        stderr=stderr if stderr is not None else sys.stderr,
    )
    if environ is None:
        environ = os.environ
    parser = _parser(streams)
    try:
        args = parser.parse_args(argv)
        config_path = args.config or environ.get(CONFIG_VARIABLE)
        if not config_path:
            parser.error(f"--config FILE is required (or set {CONFIG_VARIABLE})")
    except _UsageExit as stop:
        return stop.status

    context: _Context | None = None
    try:
        # JMAPD_CONFIG names the file; it is not a configuration key.
        config_environ = {k: v for k, v in environ.items() if k != CONFIG_VARIABLE}
        config = load_config(config_path, config_environ, args.overrides)
        context = _Context(args=args, streams=streams, config=config)
        args.run(context)
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # noqa: BLE001 - an operator gets one line, never a traceback
        streams.stderr.write(f"{PROG}: {_error_message(error)}\n")
        return 1
    finally:
        if context is not None:
            context.close()
    return 0
