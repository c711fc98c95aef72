"""
Tests for L{jmapd.migrate}, C{jmapd-admin migrate --from-sqlite}: a real
SQLite installation, built through the server, copied into PostgreSQL and
served from there to the same client.

These need PostgreSQL (the target); without it they are skipped, except
the refusals that need none.
"""

from __future__ import annotations

import io
import os
import time
from typing import Any

from twisted.internet.defer import ensureDeferred
from twisted.trial.unittest import SynchronousTestCase

from jmapd import migrate
from jmapd.admin import main
from jmapd.blobs.store import FileBlobStore
from jmapd.storage import DATABASE_FILE, blob_directory, search
from tests import pg
from tests.support import ServerTestCase
from tests.web.test_blobs import download, uploaded

CORE = "urn:ietf:params:jmap:core"
MAIL = "urn:ietf:params:jmap:mail"
PRINCIPALS = "urn:ietf:params:jmap:principals"
USING = [CORE, MAIL, PRINCIPALS]

RAW = (
    b"From: Carol <carol@example.org>\r\nTo: alice@example.com\r\nSubject: Quarterly report\r\n"
    b"Message-ID: <q1@example.org>\r\n\r\nThe quarterly numbers are in.\r\n"
)


class _TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def admin(config_path: str, *argv: str, tty: bool = False) -> tuple[int, str, str]:
    """
    Run C{jmapd-admin --config FILE ARGV...} in-process; return the exit
    status, standard output and standard error.
    """
    out, err = io.StringIO(), (_TTY() if tty else io.StringIO())
    status = main(["--config", config_path, *argv], stdin=io.StringIO(), stdout=out, stderr=err, environ={})
    return status, out.getvalue(), err.getvalue()


def write_config(testcase: Any, **keys: str) -> str:
    directory = os.path.abspath(testcase.mktemp())
    os.makedirs(directory)
    path = os.path.join(directory, "jmapd.yaml")
    with open(path, "w", encoding="utf-8") as f:
        for key, value in keys.items():
            f.write(f"{key.replace('_', '-')}: {value}\n")
    return path


class MigrateTests(ServerTestCase):
    """
    An installation made on SQLite through the API: two accounts, a
    Mailbox of alice's shared with bob, Emails with keywords, one changed
    and one destroyed since an old state, an upload imported as an Email
    (and indexed for search), and a push subscription.
    """

    async def call(self, server: Any, name: str, arguments: dict[str, Any], auth: str = "alice") -> Any:
        response = await server.api([[name, arguments, "c"]], using=USING, auth=auth)
        result_name, result, _ = response["methodResponses"][0]
        self.assertEqual(result_name, name, result)
        return result

    async def build(self) -> tuple[Any, dict[str, Any]]:
        """
        Start a server on SQLite and make the installation; return it and
        what the test needs to know of it.
        """
        server = await self.start_server()
        alice = server.add_account("alice", ("alice@example.com",))
        bob = server.add_account("bob", ("bob@example.com",))
        result = await self.call(server, "Mailbox/set", {"accountId": alice, "create": {"p": {"name": "Projects"}}})
        projects = result["created"]["p"]["id"]
        result = await self.call(server, "Mailbox/query", {"accountId": alice, "filter": {"role": "inbox"}})
        (inbox,) = result["ids"]
        old_state = (await self.call(server, "Email/get", {"accountId": alice, "ids": []}))["state"]

        def email(mailbox: str, subject: str, keywords: dict[str, bool]) -> dict[str, Any]:
            return {
                "mailboxIds": {mailbox: True}, "subject": subject, "keywords": keywords,
                "bodyStructure": {"type": "text/plain", "partId": "1"}, "bodyValues": {"1": {"value": subject}},
            }

        result = await self.call(server, "Email/set", {"accountId": alice, "create": {
            "e1": email(inbox, "First", {"$seen": True}),
            "e2": email(projects, "Second", {"$flagged": True}),
            "e3": email(inbox, "Third", {}),
        }})
        created = {key: value["id"] for key, value in result["created"].items()}
        await self.call(server, "Email/set", {
            "accountId": alice, "update": {created["e1"]: {"keywords/$flagged": True}}, "destroy": [created["e3"]],
        })
        blob_id = await uploaded(self, server, alice, RAW)
        imported = await self.call(server, "Email/import", {"accountId": alice, "emails": {
            "i": {"blobId": blob_id, "mailboxIds": {projects: True}, "keywords": {"$seen": True}}}})
        await self.call(server, "Mailbox/set", {
            "accountId": alice, "update": {projects: {"shareWith": {bob: {"mayReadItems": True}}}},
        })
        server.env.database.run_sync(
            lambda txn: txn.execute(
                "INSERT INTO push_subscriptions (id, account_id, device_client_id, url, verification_code,"
                " verified, expires_at, types, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                ("Psub1", alice, "phone", "https://push.example/x", "code", 1, time.time() + 86400, None, 0.0),
            ),
            write=True,
        )
        facts = {"alice": alice, "projects": projects, "old_state": old_state, "blob_id": blob_id}
        return server, {**facts, "imported": imported["created"]["i"]["id"]}

    async def snapshot(self, server: Any, facts: dict[str, Any]) -> dict[str, Any]:
        """
        What a client sees: alice's Mailboxes, Emails, Threads and their
        states, Email/changes from the old state, a full-text search,
        her push subscription; what bob sees of the shared Mailbox.
        """
        alice = facts["alice"]
        seen: dict[str, Any] = {}
        ids = sorted((await self.call(server, "Email/query", {"accountId": alice}))["ids"])
        for name, arguments in [
            ("Mailbox/get", {"accountId": alice}),
            ("Email/get", {"accountId": alice, "ids": ids, "properties": [
                "id", "threadId", "mailboxIds", "keywords", "subject", "blobId", "receivedAt", "size"]}),
            ("Thread/get", {"accountId": alice, "ids": None}),
            ("Email/changes", {"accountId": alice, "sinceState": facts["old_state"]}),
            ("Mailbox/changes", {"accountId": alice, "sinceState": "0"}),
            ("Email/query", {"accountId": alice, "filter": {"text": "quarterly"}}),
            ("PushSubscription/get", {}),
        ]:
            result = await self.call(server, name, arguments)
            result.pop("accountId", None)
            seen[name] = result
        # /get without ids lists in no particular order.
        seen["Thread/get"]["list"].sort(key=lambda t: t["id"])
        seen["Mailbox/get"]["list"].sort(key=lambda m: m["id"])
        seen["shared"] = await self.call(
            server, "Mailbox/get", {"accountId": alice, "ids": [facts["projects"]], "properties": ["name", "myRights"]},
            auth="bob",
        )
        return seen

    def test_migrate(self) -> Any:
        """
        After migrate into PostgreSQL with blob-store database, a server
        on PostgreSQL shows a client the same ids, the same state strings,
        the same answer to Email/changes from a state of before, the same
        search results and subscriptions, and the uploaded blob; the
        command printed matching per-table counts, and progress as plain
        lines.
        """

        async def run() -> None:
            url = pg.database_url(self)
            source, facts = await self.build()
            before = await self.snapshot(source, facts)
            target_path = os.path.abspath(self.mktemp())
            config = write_config(self, db_path=target_path, db_url=url, blob_store="database")
            status, out, err = admin(config, "migrate", "--from-sqlite", source.env.config.db_path)
            self.assertEqual(status, 0, err)
            lines = out.splitlines()
            self.assertEqual(lines[0].split(), ["table", "sqlite", "postgresql"])
            counts = {line.split()[0]: line.split()[1:] for line in lines[1:-1]}
            self.assertEqual(counts["accounts"], ["2", "2"])
            self.assertEqual(counts["(blobs)"][0], counts["(blobs)"][1])
            self.assertGreaterEqual(int(counts["(blobs)"][0]), 1)
            for table in ("emails", "email_keywords", "changelog", "states", "push_subscriptions",
                          "mailbox_acl", "principals", "email_search", "email_fts", "server_settings"):
                self.assertIn(table, counts)
                self.assertEqual(counts[table][0], counts[table][1], table)
            self.assertEqual(counts["email_fts"][0], "3")
            self.assertEqual(lines[-1], "migrated 2 accounts; the counts match")
            self.assertIn("migrate blobs: 100%", err)
            self.assertIn("migrate rows: 100%", err)
            self.assertNotIn("\r", err)

            target = await self.start_server(db_url=url, blob_store="database", db_path=target_path)
            self.assertEqual(target.env.database.engine.name, "postgresql")
            after = await self.snapshot(target, facts)
            for key in before:
                self.assertEqual(after[key], before[key], key)
            self.assertEqual(sorted(after), sorted(before))
            self.assertEqual(len(after["Email/changes"]["created"]), 3)
            self.assertEqual(len(after["Email/query"]["ids"]), 1)
            response, body = await download(target, facts["alice"], facts["blob_id"])
            self.assertEqual((response.code, body), (200, RAW))
            self.assertFalse(os.path.exists(blob_directory(target.env.config)))

        return ensureDeferred(run())

    def test_filesAndRefusal(self) -> Any:
        """
        With blob-store files and another db-path, the blob files are
        copied there (PATH may name the SQLite file itself; a terminal
        gets a progress bar); an Email SQLite had not indexed yet is
        indexed on the way and found by a search; a second migrate into
        the now non-empty database is refused, saying why.
        """

        async def run() -> None:
            url = pg.database_url(self)
            source, facts = await self.build()
            source.env.database.run_sync(search.remove_email, facts["alice"], facts["imported"], write=True)
            target_path = os.path.abspath(self.mktemp())
            config = write_config(self, db_path=target_path, db_url=url)
            sqlite = os.path.join(source.env.config.db_path, DATABASE_FILE)
            status, out, err = admin(config, "migrate", "--from-sqlite", sqlite, tty=True)
            self.assertEqual(status, 0, err)
            self.assertIn("\r[", err)
            self.assertIn("search: indexed 1 Emails the SQLite database had not indexed yet", err)
            fts = [line.split() for line in out.splitlines() if line.startswith("email_fts ")]
            self.assertEqual(fts, [["email_fts", "2", "3"]])
            copied = FileBlobStore(os.path.join(target_path, "blobs")).path(facts["blob_id"])
            with open(copied, "rb") as f:
                self.assertEqual(f.read(), RAW)

            status, out, err = admin(config, "migrate", "--from-sqlite", sqlite)
            self.assertEqual(status, 1)
            self.assertEqual(out, "")
            self.assertIn("already has 2 accounts", err)
            self.assertIn("empty database only", err)
            target = await self.start_server(db_url=url, db_path=target_path)
            response, body = await download(target, facts["alice"], facts["blob_id"])
            self.assertEqual((response.code, body), (200, RAW))
            found = await self.call(target, "Email/query", {"accountId": facts["alice"], "filter": {"text": "quarterly"}})
            self.assertEqual(found["ids"], [facts["imported"]])

        return ensureDeferred(run())

    def test_blobsInPlace(self) -> Any:
        """
        With blob-store files and the old db-path, the blob files are
        where they must be already: none is copied, the command says so,
        and the new server serves them.
        """

        async def run() -> None:
            url = pg.database_url(self)
            source, facts = await self.build()
            data = source.env.config.db_path
            config = write_config(self, db_path=data, db_url=url)
            status, out, err = admin(config, "migrate", "--from-sqlite", data)
            self.assertEqual(status, 0, err)
            self.assertIn(f"blobs: 4 already in place in {os.path.join(data, 'blobs')}", out + err)
            target = await self.start_server(db_url=url, db_path=data)
            response, body = await download(target, facts["alice"], facts["blob_id"])
            self.assertEqual((response.code, body), (200, RAW))

        return ensureDeferred(run())

    def test_stagedBlobsCopied(self) -> Any:
        """
        A delivered message still staged in the SQLite database (not yet
        moved to its file: jmapd.blobs.writeback) is copied too; with
        blob-store files it becomes a file under the new db-path.
        """

        async def run() -> None:
            url = pg.database_url(self)
            source, facts = await self.build()
            self.patch(source.service, "move_blobs", lambda: None)
            staged = b"Subject: staged\r\n\r\nNot moved yet.\r\n"
            blob_id = source.env.database.run_sync(lambda txn: source.env.blobs.write_in(txn, staged), write=True)
            self.assertFalse(source.env.blobs.files.exists(blob_id))
            target_path = os.path.abspath(self.mktemp())
            config = write_config(self, db_path=target_path, db_url=url)
            status, out, err = admin(config, "migrate", "--from-sqlite", source.env.config.db_path)
            self.assertEqual(status, 0, err)
            self.assertIn("blobs in the SQLite database: 1 copied", out + err)
            with open(FileBlobStore(os.path.join(target_path, "blobs")).path(blob_id), "rb") as f:
                self.assertEqual(f.read(), staged)

        return ensureDeferred(run())

    def test_countsChecked(self) -> Any:
        """
        The counts are read back from both databases: rows that did not
        arrive fail the command, naming the table.
        """

        async def run() -> None:
            url = pg.database_url(self)
            source, _ = await self.build()
            copy_table = migrate._copy_table

            def lossy(source_txn, target_txn, table, select, columns, advance):  # type: ignore[no-untyped-def]
                if table == "email_keywords":
                    return 0
                return copy_table(source_txn, target_txn, table, select, columns, advance)

            self.patch(migrate, "_copy_table", lossy)
            config = write_config(
                self, db_path=os.path.abspath(self.mktemp()), db_url=url, blob_store="database"
            )
            status, out, err = admin(config, "migrate", "--from-sqlite", source.env.config.db_path)
            self.assertEqual(status, 1)
            self.assertIn("MISMATCH", err)
            self.assertIn("the counts differ for email_keywords:", err)

        return ensureDeferred(run())


class RefusalTests(SynchronousTestCase):
    """
    What migrate refuses before it touches anything.
    """

    def test_needsDatabaseURL(self) -> None:
        """
        Without db-url there is nothing to migrate into.
        """
        config = write_config(self, db_path=os.path.abspath(self.mktemp()))
        status, out, err = admin(config, "migrate", "--from-sqlite", self.mktemp())
        self.assertEqual(status, 1)
        self.assertIn("set db-url", err)

    def test_noSQLiteDatabase(self) -> None:
        """
        A PATH with no SQLite database is refused, saying what PATH may be.
        """
        config = write_config(
            self, db_path=os.path.abspath(self.mktemp()), db_url="postgresql://nobody@127.0.0.1:1/none"
        )
        empty = os.path.abspath(self.mktemp())
        os.makedirs(empty)
        status, out, err = admin(config, "migrate", "--from-sqlite", empty)
        self.assertEqual(status, 1)
        self.assertIn(f"--from-sqlite {empty}: no SQLite database there", err)

    def test_databaseBlobStoreOnSQLite(self) -> None:
        """
        blob-store database without db-url keeps blobs in the SQLite
        database: jmapd-admin starts with it.
        """
        config = write_config(self, db_path=os.path.abspath(self.mktemp()), blob_store="database")
        status, out, err = admin(config, "account", "list")
        self.assertEqual((status, err), (0, ""))
