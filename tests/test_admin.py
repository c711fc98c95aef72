"""
Tests for L{jmapd.admin}, the C{jmapd-admin} command, run in-process.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.defer import ensureDeferred
from twisted.trial.unittest import SynchronousTestCase

from jmapd.admin import main
from jmapd.auth.passwords import verify_password
from jmapd.config import load_config
from jmapd.storage import DATABASE_FILE, accounts, open_database
from jmapd.storage.engines import SQLITE_FILE
from tests.support import ServerTestCase


class AdminTestCase(SynchronousTestCase):
    """
    Run C{jmapd-admin} against a configuration file in a fresh temporary
    directory whose database lives in C{data/} next to it.
    """

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.config_path = self.write_config("db-path: data\n")

    def write_config(self, text: str) -> str:
        path = os.path.join(self.directory, "jmapd.yaml")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def admin(
        self,
        *argv: str,
        stdin: str = "",
        config: bool = True,
        environ: Mapping[str, str] | None = None,
    ) -> tuple[int, str, str]:
        """
        Run C{jmapd-admin --config FILE ARGV...} with C{stdin} as standard
        input and no ambient environment.

        @return: the exit status, standard output and standard error.
        """
        out, err = io.StringIO(), io.StringIO()
        args = ["--config", self.config_path, *argv] if config else list(argv)
        status = main(
            args,
            stdin=io.StringIO(stdin),
            stdout=out,
            stderr=err,
            environ=environ if environ is not None else {},
        )
        self.assertNotIn("Traceback", err.getvalue())
        return status, out.getvalue(), err.getvalue()

    def succeed(self, *argv: str, stdin: str = "") -> str:
        """
        Run a command that must succeed; return its standard output.
        """
        status, out, err = self.admin(*argv, stdin=stdin)
        self.assertEqual((status, err), (0, ""), f"jmapd-admin {' '.join(argv)}")
        return out

    def refused(self, *argv: str, stdin: str = "", status: int = 1) -> str:
        """
        Run a command that must fail with C{status} and print nothing on
        standard output; return its one-line error without the prefix (for a
        usage error, status 2, argparse's usage and error lines).
        """
        actual, out, err = self.admin(*argv, stdin=stdin)
        self.assertEqual((actual, out), (status, ""))
        if status == 2:
            self.assertRegex(err, r"^usage: jmapd-admin.*\njmapd-admin[a-z ]*: error: ")
            return err
        self.assertTrue(err.startswith("jmapd-admin: "), err)
        self.assertEqual(err.count("\n"), 1, err)
        return err.removeprefix("jmapd-admin: ")

    def query(self, fn: Callable[..., Any], *args: Any) -> Any:
        """
        Run C{fn(txn, *args)} on the database the commands use.
        """
        database = open_database(load_config(self.config_path, {}))
        try:
            return database.run_sync(fn, *args)
        finally:
            database.close()

    def account(self, name: str) -> accounts.Account:
        account = self.query(accounts.get_account_by_name, name)
        self.assertIsNotNone(account)
        assert account is not None
        return account


class AccountTests(AdminTestCase):
    """
    C{jmapd-admin account ...}.
    """

    def test_addAndList(self) -> None:
        """
        C{account add} creates the account, says so with its id, and
        C{account list} shows it as name, id and addresses, tab separated.
        """
        out = self.succeed("account", "add", "alice", "--email", "alice@example.com")
        alice = self.account("alice")
        self.assertEqual(out, f"account alice created (id {alice.id})\n")
        self.succeed("account", "add", "bob")
        bob = self.account("bob")
        self.assertEqual(
            self.succeed("account", "list"),
            f"alice\t{alice.id}\talice@example.com\nbob\t{bob.id}\t\n",
        )

    def test_addWithoutPassword(self) -> None:
        """
        Without C{--password-stdin} the account has no password (it logs in
        with tokens only) and standard input is not read.
        """
        self.succeed("account", "add", "alice", stdin="ignored\n")
        self.assertIsNone(self.account("alice").password_hash)

    def test_addWithPassword(self) -> None:
        """
        C{--password-stdin} takes the first line of standard input, without
        its line ending, as the password.
        """
        self.succeed("account", "add", "alice", "--password-stdin", stdin=" s3cret \nnext\n")
        stored = self.account("alice").password_hash
        self.assertTrue(verify_password(stored, " s3cret "))
        self.assertFalse(verify_password(stored, " s3cret \n"))

    def test_addSeveralAddresses(self) -> None:
        """
        Every C{--email} becomes an address of the account, in order, stored
        in lower case.
        """
        self.succeed(
            "account", "add", "alice",
            "--email", "alice@example.com",
            "--email", "Alice.Smith@Example.org",
            "--email", "a@localhost",
        )
        self.assertEqual(
            self.account("alice").addresses,
            ("alice@example.com", "alice.smith@example.org", "a@localhost"),
        )
        self.assertTrue(
            self.succeed("account", "list").endswith(
                "\talice@example.com,alice.smith@example.org,a@localhost\n"
            )
        )

    def test_duplicateName(self) -> None:
        """
        A name that is taken is refused with exit status 1, and the existing
        account is left as it was.
        """
        self.succeed("account", "add", "alice", "--email", "alice@example.com")
        before = self.account("alice")
        message = self.refused("account", "add", "alice", "--email", "other@example.com")
        self.assertIn("'alice'", message)
        self.assertEqual(self.account("alice"), before)

    def test_duplicateAddress(self) -> None:
        """
        An address owned by another account, in any case, is refused with
        exit status 1 and no account is created.
        """
        self.succeed("account", "add", "alice", "--email", "alice@example.com")
        message = self.refused("account", "add", "bob", "--email", "ALICE@example.com")
        self.assertIn("alice@example.com", message.lower())
        self.assertIsNone(self.query(accounts.get_account_by_name, "bob"))

    def test_addressGivenTwice(self) -> None:
        """
        The same address twice on one command line is refused.
        """
        message = self.refused(
            "account", "add", "bob", "--email", "b@example.com", "--email", "B@example.com"
        )
        self.assertIn("twice", message)

    def test_badName(self) -> None:
        """
        A name that is empty, too long, or has spaces or other characters
        than letters, digits and C{. _ - @} is refused before the database
        is even created.
        """
        for name in ["", "with space", "a" * 65, "tab\there", "sla/sh", "ünï"]:
            message = self.refused("account", "add", name)
            self.assertIn("invalid account name", message)
        self.assertFalse(os.path.exists(os.path.join(self.directory, "data")))
        self.succeed("account", "add", "a" * 64)
        self.succeed("account", "add", "Jo.Doe_2-x@example.com")

    def test_badAddress(self) -> None:
        """
        An address that does not look like local@domain is refused.
        """
        for address in ["alice", "@example.com", "alice@", "a@b@c", "a b@example.com",
                        "alice@exa mple.com", "alice@-example.com"]:
            message = self.refused("account", "add", "alice", "--email", address)
            self.assertIn("invalid address", message)
        self.assertIsNone(self.query(accounts.get_account_by_name, "alice"))

    def test_emptyPasswordRefused(self) -> None:
        """
        With C{--password-stdin}, an empty first line or empty input is
        refused and no account is created.
        """
        for stdin in ["", "\n", "\r\nsecond line\n"]:
            message = self.refused("account", "add", "alice", "--password-stdin", stdin=stdin)
            self.assertIn("password is empty", message)
        self.assertIsNone(self.query(accounts.get_account_by_name, "alice"))

    def test_passwd(self) -> None:
        """
        C{account passwd} replaces the stored hash: the new password
        verifies and the old one no longer does.
        """
        self.succeed("account", "add", "alice", "--password-stdin", stdin="old password\n")
        self.assertEqual(
            self.succeed("account", "passwd", "alice", "--password-stdin", stdin="new password\n"),
            "password of account alice changed\n",
        )
        stored = self.account("alice").password_hash
        self.assertTrue(verify_password(stored, "new password"))
        self.assertFalse(verify_password(stored, "old password"))

    def test_passwdUnknownAccount(self) -> None:
        """
        C{account passwd} of an unknown account fails with exit status 1.
        """
        self.assertEqual(
            self.refused("account", "passwd", "nobody", "--password-stdin", stdin="pw\n"),
            "no account named 'nobody'\n",
        )

    def test_passwdEmptyRefused(self) -> None:
        """
        C{account passwd} refuses an empty password and keeps the old one.
        """
        self.succeed("account", "add", "alice", "--password-stdin", stdin="old\n")
        self.refused("account", "passwd", "alice", "--password-stdin", stdin="\n")
        self.assertTrue(verify_password(self.account("alice").password_hash, "old"))

    def test_passwdNeedsPasswordStdin(self) -> None:
        """
        C{account passwd} without C{--password-stdin} is a usage error.
        """
        self.refused("account", "passwd", "alice", status=2)

    def test_removeNeedsYes(self) -> None:
        """
        C{account remove} without C{--yes} refuses, says to add it, and
        keeps the account.
        """
        self.succeed("account", "add", "alice")
        message = self.refused("account", "remove", "alice")
        self.assertIn("--yes", message)
        self.account("alice")

    def test_remove(self) -> None:
        """
        C{account remove --yes} removes the account, its addresses and its
        tokens, so the name and address can be used again.
        """
        self.succeed("account", "add", "alice", "--email", "alice@example.com")
        alice = self.account("alice")
        secret = self.admin("token", "create", "alice")[1].strip()
        self.assertEqual(
            self.succeed("account", "remove", "alice", "--yes"),
            f"account alice removed (id {alice.id})\n",
        )
        self.assertIsNone(self.query(accounts.get_account_by_name, "alice"))
        self.assertIsNone(self.query(accounts.find_token, secret))
        self.assertEqual(self.succeed("account", "list"), "")
        self.succeed("account", "add", "alice2", "--email", "alice@example.com")

    def test_removeUnknown(self) -> None:
        """
        Removing an unknown account fails with exit status 1.
        """
        self.assertEqual(
            self.refused("account", "remove", "nobody", "--yes"), "no account named 'nobody'\n"
        )


class TokenTests(AdminTestCase):
    """
    C{jmapd-admin token ...}.
    """

    def setUp(self) -> None:
        super().setUp()
        self.succeed("account", "add", "alice")

    def create(self, *options: str) -> tuple[str, str]:
        """
        Create a token for alice; return its secret and its stderr note.
        """
        status, out, err = self.admin("token", "create", "alice", *options)
        self.assertEqual(status, 0)
        return out, err

    def test_createPrintsSecretOnly(self) -> None:
        """
        C{token create} prints the secret as the only line of standard
        output; the database knows it by its hash, and the note on standard
        error names the token id.
        """
        out, err = self.create("--label", "backup script")
        self.assertEqual(out.count("\n"), 1)
        secret = out.removesuffix("\n")
        self.assertGreaterEqual(len(secret), 43)
        found = self.query(accounts.find_token, secret)
        self.assertIsNotNone(found)
        token, account = found
        self.assertEqual((account.name, token.label), ("alice", "backup script"))
        self.assertEqual(err, f"token {token.id} for alice: keep it, it is not shown again\n")
        self.assertNotIn(secret, err)

    def test_createSecretsDiffer(self) -> None:
        """
        Every token gets its own secret.
        """
        self.assertNotEqual(self.create()[0], self.create()[0])

    def test_createUnknownAccount(self) -> None:
        """
        A token for an unknown account fails with exit status 1, printing
        no secret.
        """
        self.assertEqual(
            self.refused("token", "create", "nobody"), "no account named 'nobody'\n"
        )

    def test_list(self) -> None:
        """
        C{token list} shows each token of the account as id, label and
        creation time (ISO 8601, UTC), tab separated, oldest first.
        """
        self.create("--label", "phone")
        self.create()
        tokens = self.query(accounts.list_tokens, "alice")
        lines = self.succeed("token", "list", "alice").splitlines()
        self.assertEqual(len(lines), 2)
        for line, token in zip(lines, tokens, strict=True):
            token_id, label, created = line.split("\t")
            self.assertEqual((token_id, label), (token.id, token.label))
            self.assertRegex(created, r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        self.assertEqual(lines[0].split("\t")[1], "phone")

    def test_listUnknownAccount(self) -> None:
        """
        C{token list} of an unknown account fails with exit status 1.
        """
        self.refused("token", "list", "nobody")

    def test_revoke(self) -> None:
        """
        C{token revoke} deletes the token: its secret no longer finds it,
        and the account's other tokens remain.
        """
        secret = self.create()[0].strip()
        other = self.create()[0].strip()
        token, _ = self.query(accounts.find_token, secret)
        self.assertEqual(
            self.succeed("token", "revoke", token.id), f"token {token.id} revoked\n"
        )
        self.assertIsNone(self.query(accounts.find_token, secret))
        self.assertIsNotNone(self.query(accounts.find_token, other))

    def test_revokeUnknown(self) -> None:
        """
        Revoking an id that names no token fails with exit status 1.
        """
        self.assertIn("tnosuchtoken", self.refused("token", "revoke", "tnosuchtoken"))


class DemoTests(AdminTestCase):
    """
    C{jmapd-admin demo}, which C{make run} calls before starting the server.
    """

    def test_createsOnceThenExists(self) -> None:
        """
        The first run creates the data directory, the database and the demo
        account with a random password it prints once; later runs leave the
        account alone and say it exists.
        """
        out = self.succeed("demo")
        self.assertTrue(
            os.path.exists(os.path.join(self.directory, "data", DATABASE_FILE))
        )
        prefix, suffix = "demo account: user demo, password ", " (shown once)\n"
        self.assertTrue(out.startswith(prefix) and out.endswith(suffix), out)
        password = out.removeprefix(prefix).removesuffix(suffix)
        demo = self.account("demo")
        self.assertEqual(demo.addresses, ("demo@localhost",))
        self.assertTrue(verify_password(demo.password_hash, password))

        self.assertEqual(self.succeed("demo"), "demo account exists\n")
        self.assertEqual(self.account("demo"), demo)


class CommandLineTests(AdminTestCase):
    """
    The configuration and the command line around the commands.
    """

    def test_badConfig(self) -> None:
        """
        A configuration error fails with exit status 1 and the text of the
        error, which names the key.
        """
        self.write_config("db-path: data\njmap-port: abc\n")
        status, out, err = self.admin("account", "list")
        self.assertEqual((status, out), (1, ""))
        self.assertTrue(err.startswith("jmapd-admin: configuration errors in "), err)
        self.assertIn("jmap-port", err)
        self.assertIn("'abc'", err)

    def test_missingConfigFile(self) -> None:
        """
        A configuration file that cannot be read fails with exit status 1.
        """
        self.config_path = os.path.join(self.directory, "missing.yaml")
        status, out, err = self.admin("account", "list")
        self.assertEqual((status, out), (1, ""))
        self.assertIn("cannot read the configuration file", err)

    def test_newerSchema(self) -> None:
        """
        A database written by a newer jmapd is refused with a plain message
        saying so (exit status 1), not as an unexpected error.
        """
        self.assertEqual(self.admin("account", "list")[0], 0)
        path = os.path.join(self.directory, "data", SQLITE_FILE)
        conn = sqlite3.connect(path)
        with conn:
            conn.execute("INSERT INTO schema_version (version) VALUES (9999)")
        conn.close()
        status, out, err = self.admin("account", "list")
        self.assertEqual((status, out), (1, ""))
        self.assertIn("9999", err)
        self.assertNotIn("unexpected error", err)

    def test_missingConfig(self) -> None:
        """
        Without C{--config} and without C{JMAPD_CONFIG} the command is a
        usage error (status 2) that says what is missing.
        """
        status, out, err = self.admin("account", "list", config=False)
        self.assertEqual((status, out), (2, ""))
        self.assertIn("--config", err)
        self.assertIn("JMAPD_CONFIG", err)

    def test_configFromEnvironment(self) -> None:
        """
        C{JMAPD_CONFIG} names the configuration file when C{--config} is not
        given, and is not mistaken for a configuration key.
        """
        status, _, err = self.admin(
            "account", "add", "alice", config=False, environ={"JMAPD_CONFIG": self.config_path}
        )
        self.assertEqual((status, err), (0, ""))
        self.account("alice")

    def test_setOverride(self) -> None:
        """
        C{--set key=value} overrides the file, as it does for the server.
        """
        status, _, err = self.admin(
            "--set", "db-path=other", "account", "add", "alice"
        )
        self.assertEqual((status, err), (0, ""))
        self.assertTrue(os.path.exists(os.path.join(self.directory, "other", DATABASE_FILE)))
        status, _, err = self.admin("--set", "no-such-key=1", "account", "list")
        self.assertEqual(status, 1)
        self.assertIn("no-such-key", err)

    def test_usageErrors(self) -> None:
        """
        A missing or unknown command or argument is a usage error with
        status 2 from argparse, written to the given standard error.
        """
        for argv in [(), ("account",), ("frobnicate",), ("account", "add"),
                     ("account", "add", "alice", "--bogus")]:
            self.refused(*argv, status=2)

    def test_help(self) -> None:
        """
        C{--help} writes to the given standard output and exits 0.
        """
        status, out, err = self.admin("--help", config=False)
        self.assertEqual((status, err), (0, ""))
        self.assertIn("jmapd-admin", out)


class AliasTests(AdminTestCase):
    """
    C{jmapd-admin account alias ...}.
    """

    def setUp(self) -> None:
        super().setUp()
        self.succeed("account", "add", "alice", "--email", "alice@example.com")
        self.succeed("account", "add", "bob", "--email", "bob@example.com")

    def test_addListRemove(self) -> None:
        """
        An alias is added (stored in lower case), listed one per line,
        delivers to the account, and is removed.
        """
        from jmapd.ingest import recipients

        self.assertEqual(
            self.succeed("account", "alias", "add", "alice", "Al@Example.com"),
            "alias al@example.com added to account alice\n",
        )
        self.succeed("account", "alias", "add", "alice", "a@example.net")
        self.assertEqual(self.succeed("account", "alias", "list", "alice"), "al@example.com\na@example.net\n")
        self.assertEqual(self.query(recipients.lookup_account, "AL@example.com"), self.account("alice").id)
        self.assertEqual(
            self.succeed("account", "alias", "remove", "alice", "al@example.com"),
            "alias al@example.com removed from account alice\n",
        )
        self.assertEqual(self.succeed("account", "alias", "list", "alice"), "a@example.net\n")
        self.assertEqual(self.succeed("account", "alias", "list", "bob"), "")

    def test_changesBumpVersion(self) -> None:
        """
        Each alias change counts in addresses_version, which a running
        server's recipients cache checks.
        """
        from jmapd.ingest import recipients

        self.succeed("account", "alias", "add", "alice", "al@example.com")
        self.succeed("account", "alias", "remove", "alice", "al@example.com")
        self.assertEqual(self.query(recipients.addresses_version), 2)

    def test_errors(self) -> None:
        """
        Another account's address, an address the account has, a bad
        address, an unknown account, removing a main address or a missing
        alias: each is one line and status 1.
        """
        self.assertIn("belongs to another account", self.refused("account", "alias", "add", "alice", "bob@example.com"))
        self.assertIn("already an address", self.refused("account", "alias", "add", "alice", "ALICE@example.com"))
        self.assertIn("invalid address", self.refused("account", "alias", "add", "alice", "not an address"))
        self.assertEqual(
            self.refused("account", "alias", "add", "carol", "c@example.com"), "no account named 'carol'\n"
        )
        self.assertIn("not an alias", self.refused("account", "alias", "remove", "alice", "alice@example.com"))
        self.assertIn("has no alias", self.refused("account", "alias", "remove", "alice", "x@example.com"))
        self.assertEqual(self.refused("account", "alias", "list", "carol"), "no account named 'carol'\n")


class ImportExportCommandTests(AdminTestCase):
    """
    C{jmapd-admin import} and C{jmapd-admin export}.
    """

    MBOX = (
        b"From bob@example.org Mon Oct  2 10:00:00 2023\n"
        b"From: bob@example.org\nSubject: one\n\nHello.\n\n"
        b"From bob@example.org Mon Oct  2 11:00:00 2023\n"
        b"From: bob@example.org\nSubject: two\nStatus: RO\n\n>From me.\n\n"
    )

    def test_importTwiceThenExport(self) -> None:
        """
        import prints the summary (progress goes to standard error, as
        plain lines off a terminal); a second run imports nothing; export
        writes the messages back.
        """
        self.succeed("account", "add", "alice")
        path = os.path.join(self.directory, "old.mbox")
        with open(path, "wb") as f:
            f.write(self.MBOX)
        status, out, err = self.admin("import", "alice", path, "--mailbox", "Old mail")
        self.assertEqual(status, 0)
        self.assertEqual(out, "imported 2, added to another Mailbox 0, skipped 0, refused 0\ncreated Mailbox Old mail\n")
        self.assertTrue(err.startswith("import: 100%  2 messages"), err)
        status, out, _ = self.admin("import", "alice", path, "--mailbox", "Old mail")
        self.assertEqual(
            out.splitlines(),
            ["imported 0, added to another Mailbox 0, skipped 2, refused 0", "skipped 2: imported before"],
        )
        target = os.path.join(self.directory, "out.mbox")
        self.assertEqual(
            self.succeed("export", "alice", "--mbox", target, "--mailbox", "Old mail"),
            f"exported 2 messages to {target}\n",
        )
        with open(target, "rb") as f:
            exported = f.read()
        self.assertIn(b"Subject: two\nStatus: RO\n\n>From me.\n", exported)

    def test_importRefusedFails(self) -> None:
        """
        An import that refused a message prints the summary naming it, as
        always, and then fails (status 1, one line on standard error), so
        that a script does not go on as if everything had been imported;
        the other messages are imported.
        """
        self.succeed("account", "add", "alice")
        path = os.path.join(self.directory, "old.mbox")
        with open(path, "wb") as f:
            f.write(self.MBOX + b"From bob@example.org Mon Oct  2 12:00:00 2023\n\n")
        status, out, err = self.admin("import", "alice", path)
        self.assertEqual(status, 1)
        self.assertEqual(out.splitlines()[0], "imported 2, added to another Mailbox 0, skipped 0, refused 1")
        self.assertIn("refused: old.mbox message 3", out)
        self.assertEqual(
            err.splitlines()[-1],
            "jmapd-admin: 1 message was refused (listed above); the others were imported",
        )

    def test_importInterrupted(self) -> None:
        """
        An import interrupted (Ctrl-C) still prints the summary of what
        it filed, says on standard error that running it again imports
        the rest, and exits with status 130.
        """
        from jmapd import importexport

        self.succeed("account", "add", "alice")
        path = os.path.join(self.directory, "old.mbox")
        with open(path, "wb") as f:
            f.write(self.MBOX)
        self.patch(importexport, "BATCH", 1)
        source = importexport.source

        def stopped(path: str, target: Any) -> Any:
            items, total = source(path, target)

            def first() -> Any:
                yield next(items)
                raise KeyboardInterrupt()

            return first(), total

        self.patch(importexport, "source", stopped)
        status, out, err = self.admin("import", "alice", path)
        self.assertEqual(status, 130)
        self.assertEqual(out.splitlines()[0], "imported 1, added to another Mailbox 0, skipped 0, refused 0")
        self.assertEqual(
            err.splitlines()[-1],
            "jmapd-admin: interrupted: what was imported stays; run the same import again to import the rest",
        )

    def test_errors(self) -> None:
        """
        An unknown account, a path that is neither an mbox file nor a
        Maildir, and an unknown Mailbox to export are one-line errors.
        """
        self.succeed("account", "add", "alice")
        self.assertEqual(self.refused("import", "carol", self.config_path), "no account named 'carol'\n")
        self.assertIn("not an mbox file", self.refused("import", "alice", self.config_path))
        self.assertIn("no such file or directory", self.refused("import", "alice", "/nonexistent/x"))
        self.assertIn(
            "has no Mailbox 'Nope'",
            self.refused("export", "alice", "--mbox", os.path.join(self.directory, "x"), "--mailbox", "Nope"),
        )
        self.refused("export", "alice", status=2)


class GroupTests(AdminTestCase):
    """
    C{jmapd-admin group ...}: groups of accounts, Principals of type group.
    """

    def setUp(self) -> None:
        super().setUp()
        for name in ("alice", "bob", "carol"):
            self.succeed("account", "add", name)

    def principal_state(self) -> tuple[int, int]:
        """
        The Principal state and the acl counter.
        """
        from jmapd.storage import principals

        return self.query(lambda txn: (principals.principal_state(txn), principals.acl_version(txn)))

    def test_add_members_list(self) -> None:
        """
        C{group add} creates the group with its members and prints its id;
        C{group members} lists the member accounts one per line, C{group
        list} the groups as name, id and number of members.
        """
        out = self.succeed("group", "add", "staff", "bob", "alice")
        from jmapd.storage import principals

        group_id = self.query(principals.group_by_name, "staff")
        self.assertEqual(out, f"group staff created (id {group_id})\n")
        self.assertEqual(self.succeed("group", "members", "staff"), "alice\nbob\n")
        self.succeed("group", "add", "empty")
        empty_id = self.query(principals.group_by_name, "empty")
        self.assertEqual(self.succeed("group", "list"), f"empty\t{empty_id}\t0\nstaff\t{group_id}\t2\n")
        (record,) = self.query(principals.get_principals, [group_id])
        self.assertEqual((record.type, record.name), ("group", "staff"))

    def test_change_members(self) -> None:
        """
        C{group add-member} and C{group remove-member} change the members;
        each change raises the Principal state and the acl counter, and
        moves the SharedAccounts state of the accounts concerned.
        """
        from jmapd.storage import changelog, principals

        self.succeed("group", "add", "staff", "alice")
        before = self.principal_state()
        carol = self.account("carol").id
        shared_before = self.query(changelog.get_modseq, carol, principals.SHARED_ACCOUNTS)
        self.assertEqual(self.succeed("group", "add-member", "staff", "bob", "carol"), "added bob, carol to group staff\n")
        self.assertEqual(self.succeed("group", "members", "staff"), "alice\nbob\ncarol\n")
        after = self.principal_state()
        self.assertGreater(after[0], before[0])
        self.assertGreater(after[1], before[1])
        self.assertGreater(self.query(changelog.get_modseq, carol, principals.SHARED_ACCOUNTS), shared_before)
        self.assertEqual(self.succeed("group", "remove-member", "staff", "alice"), "removed alice from group staff\n")
        self.assertEqual(self.succeed("group", "members", "staff"), "bob\ncarol\n")
        final = self.principal_state()
        self.assertGreater(final[0], after[0])
        self.assertGreater(final[1], after[1])

    def test_remove(self) -> None:
        """
        C{group remove} destroys the group: it is no longer listed, and its
        Principal is reported destroyed by Principal/changes.
        """
        from jmapd.storage import principals

        self.succeed("group", "add", "staff", "alice")
        group_id = self.query(principals.group_by_name, "staff")
        state = self.principal_state()[0]
        self.assertEqual(self.succeed("group", "remove", "staff"), f"group staff removed (id {group_id})\n")
        self.assertEqual(self.succeed("group", "list"), "")
        self.assertEqual(self.query(principals.changes_since, state), ([], [], [group_id]))

    def test_errors(self) -> None:
        """
        An unknown member, a group that exists, an unknown group, adding a
        member twice and removing a non-member are one-line errors with
        status 1 that change nothing; a missing member is a usage error.
        """
        self.succeed("group", "add", "staff", "alice")
        before = self.principal_state()
        self.assertEqual(self.refused("group", "add", "other", "alice", "zed"), "no account named 'zed'\n")
        self.assertEqual(self.refused("group", "add", "staff"), "a group named 'staff' exists\n")
        self.assertEqual(self.refused("group", "remove", "nope"), "no group named 'nope'\n")
        self.assertEqual(self.refused("group", "members", "nope"), "no group named 'nope'\n")
        self.assertEqual(self.refused("group", "add-member", "nope", "bob"), "no group named 'nope'\n")
        self.assertEqual(self.refused("group", "add-member", "staff", "zed"), "no account named 'zed'\n")
        self.assertEqual(
            self.refused("group", "add-member", "staff", "bob", "alice"), "'alice' is a member of group 'staff' already\n"
        )
        self.assertEqual(
            self.refused("group", "remove-member", "staff", "bob"), "'bob' is not a member of group 'staff'\n"
        )
        self.assertIn("is not a group name", self.refused("group", "add", " staff"))
        self.assertEqual(self.succeed("group", "members", "staff"), "alice\n")
        self.assertEqual(self.succeed("group", "list").count("\n"), 1)
        self.assertEqual(self.principal_state(), before)
        status, out, err = self.admin("group", "add-member", "staff")
        self.assertEqual((status, out), (2, ""))
        self.assertIn("the following arguments are required: MEMBER", err)


class GroupRightsTests(ServerTestCase):
    """
    Groups made with C{jmapd-admin} while the server runs, seen through
    JMAP: a member has the rights given to the group, at once.
    """

    USING = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail", "urn:ietf:params:jmap:principals"]

    def admin(self, *argv: str) -> str:
        """
        Run C{jmapd-admin} on the server's database; its standard output.
        """
        out, err = io.StringIO(), io.StringIO()
        status = main(["--config", self.config_path, *argv], stdout=out, stderr=err, environ={})
        self.assertEqual((status, err.getvalue()), (0, ""))
        return out.getvalue()

    async def call(self, name: str, arguments: dict[str, Any], auth: str) -> Any:
        response = await self.server.api([[name, arguments, "c"]], using=self.USING, auth=auth)
        return response["methodResponses"][0]

    async def start(self) -> tuple[str, str]:
        """
        Start the server with accounts alice and bob, and a configuration
        file for C{jmapd-admin} on its database; alice's id and Inbox.
        """
        from jmapd.storage import mailboxes

        data = os.path.abspath(self.mktemp())
        self.server = await self.start_server(db_path=data)
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.config_path = os.path.join(directory, "jmapd.yaml")
        with open(self.config_path, "w", encoding="utf-8") as f:
            f.write(f"db-path: {data}\n")
        alice = self.server.add_account("alice")
        self.server.add_account("bob")
        return alice, self.server.env.database.run_sync(mailboxes.find_by_role, alice, "inbox")

    async def share(self, alice: str, inbox: str, grants: dict[str, Any] | None) -> None:
        name, result, _ = await self.call(
            "Mailbox/set", {"accountId": alice, "update": {inbox: {"shareWith": grants}}}, "alice"
        )
        self.assertEqual(result["updated"], {inbox: None}, result)

    async def subscribed(self, alice: str, inbox: str) -> tuple[bool, bool]:
        """
        bob's isSubscribed on alice's Inbox, and whether his Session lists
        her account.
        """
        name, result, _ = await self.call("Mailbox/get", {"accountId": alice, "ids": [inbox]}, "bob")
        self.assertEqual(name, "Mailbox/get", result)
        _, body = await self.server.request("GET", "/.well-known/jmap", auth="bob")
        return result["list"][0]["isSubscribed"], alice in json.loads(body)["accounts"]

    def test_member_gets_group_rights(self) -> None:
        """
        After C{group add staff bob} and a grant to the group, bob reads the
        shared Mailbox with the group's rights; after C{group
        remove-member staff bob} he no longer sees the account, and after
        C{group add-member} he does again.
        """
        from jmapd.storage import principals

        async def run() -> None:
            alice, inbox = await self.start()
            self.admin("group", "add", "staff", "bob")
            group = self.server.env.database.run_sync(principals.group_by_name, "staff")
            name, result, _ = await self.call(
                "Mailbox/set",
                {"accountId": alice, "update": {inbox: {"shareWith": {group: {"mayReadItems": True, "mayAddItems": True}}}}},
                "alice",
            )
            self.assertEqual(result["updated"], {inbox: None}, result)
            name, result, _ = await self.call("Mailbox/get", {"accountId": alice, "ids": [inbox]}, "bob")
            self.assertEqual(name, "Mailbox/get", result)
            rights = {right for right, given in result["list"][0]["myRights"].items() if given}
            self.assertEqual(rights, {"mayReadItems", "mayAddItems"})
            self.admin("group", "remove-member", "staff", "bob")
            name, result, _ = await self.call("Mailbox/get", {"accountId": alice, "ids": [inbox]}, "bob")
            self.assertEqual((name, result["type"]), ("error", "accountNotFound"))
            self.admin("group", "add-member", "staff", "bob")
            name, result, _ = await self.call("Mailbox/get", {"accountId": alice, "ids": [inbox]}, "bob")
            self.assertEqual([m["id"] for m in result["list"]], [inbox])

        return ensureDeferred(run())

    def test_member_removed_loses_subscription(self) -> None:
        """
        bob subscribed to a Mailbox shared with the group C{staff} only:
        C{group remove-member staff bob} takes his subscription with his
        rights, so after C{group add-member staff bob} the Mailbox is not
        subscribed and his Session does not list alice's account (RFC 8621
        section 2: isSubscribed SHOULD default to false in a shared
        account).  Likewise after C{group remove staff} and a new grant.
        """
        from jmapd.storage import principals

        async def run() -> None:
            alice, inbox = await self.start()
            self.admin("group", "add", "staff", "bob")
            group = self.server.env.database.run_sync(principals.group_by_name, "staff")
            await self.share(alice, inbox, {group: {"mayReadItems": True}})
            name, result, _ = await self.call(
                "Mailbox/set", {"accountId": alice, "update": {inbox: {"isSubscribed": True}}}, "bob"
            )
            self.assertEqual(result["updated"], {inbox: None}, result)
            self.assertEqual(await self.subscribed(alice, inbox), (True, True))
            self.admin("group", "remove-member", "staff", "bob")
            self.admin("group", "add-member", "staff", "bob")
            self.assertEqual(await self.subscribed(alice, inbox), (False, False))
            name, result, _ = await self.call(
                "Mailbox/set", {"accountId": alice, "update": {inbox: {"isSubscribed": True}}}, "bob"
            )
            self.assertEqual(result["updated"], {inbox: None}, result)
            self.admin("group", "remove", "staff")
            self.admin("group", "add", "staff", "bob")
            group = self.server.env.database.run_sync(principals.group_by_name, "staff")
            await self.share(alice, inbox, {group: {"mayReadItems": True}})
            self.assertEqual(await self.subscribed(alice, inbox), (False, False))

        return ensureDeferred(run())


class SpoolCommandTests(AdminTestCase):
    """
    C{jmapd-admin spool held} and C{jmapd-admin spool drop}: the messages the
    delivery spool acknowledged and could not file (lmtp-spool) are shown
    to the operator, can be written out for C{import}, and removed once
    dealt with.
    """

    def hold(self, queue_id: str, message: bytes, recipients: tuple[tuple[str, str], ...], reason: str) -> None:
        """
        Hold C{message} as the spool's filing does for a copy it cannot file.
        """
        from jmapd.ingest.delivery import Envelope
        from jmapd.storage import spoolmark

        envelope = Envelope("bob@example.org", recipients).to_bytes().decode("utf-8")
        held = spoolmark.HeldMessage("spool-1", 7, queue_id, 1_700_000_000.0, envelope, message, reason, 1_700_000_100.0)
        database = open_database(load_config(self.config_path, {}))
        try:
            database.run_sync(spoolmark.hold, held, write=True)
        finally:
            database.close()

    def test_heldListedWrittenAndDropped(self) -> None:
        """
        A held message is listed with its queue id, when it was held, its
        sender, the recipients it was not filed for and why; C{--mbox}
        writes it to a file that C{import} reads; C{drop} removes it, and
        it is no longer listed.
        """
        self.succeed("account", "add", "alice")
        self.hold(
            "18b.1",
            b"From: bob@example.org\r\nSubject: held one\r\n\r\nHello.\r\n",
            (("alice@example.com", "gone-account"),),
            "550 5.1.1 <alice@example.com>: no such mailbox",
        )
        out = self.succeed("spool", "held")
        self.assertEqual(
            out,
            "18b.1\theld 2023-11-14 22:15:00\tfrom <bob@example.org>\tto alice@example.com\n"
            "\t550 5.1.1 <alice@example.com>: no such mailbox\n"
            "1 held messages\n",
        )
        mbox = os.path.join(self.directory, "held.mbox")
        out = self.succeed("spool", "held", "--mbox", mbox)
        self.assertTrue(out.endswith(f"1 held messages written to {mbox}\n"), out)
        status, out, _ = self.admin("import", "alice", mbox)
        self.assertEqual(status, 0)
        self.assertTrue(out.startswith("imported 1,"), out)
        self.assertEqual(self.succeed("spool", "drop", "18b.1"), "held message 18b.1 dropped\n")
        self.assertEqual(self.succeed("spool", "held"), "0 held messages\n")

    def test_dropUnknown(self) -> None:
        """
        Dropping a queue id that is not held is an error naming it.
        """
        self.assertEqual(self.succeed("spool", "held"), "0 held messages\n")
        self.assertEqual(self.refused("spool", "drop", "7.1"), "no held message 7.1\n")
