"""
Tests for L{jmapd.storage.search}: the sort keys and search documents
derived at ingest, docids, keeping the full-text index in step with the
Emails, the backfill of Emails stored before migration 0005, the query
plans (no scan of the account for list views), and the benchmark script
that measures them.
"""

from __future__ import annotations

import os
from typing import Any

import orjson
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from bench import search_scale
from jmapd.mime.parse import parse_message
from jmapd.storage import emails, migrations, search
from jmapd.storage.database import Database
from jmapd.storage.engines.sqlite import SQLiteEngine
from jmapd.storage.search import (
    Comparator,
    HasKeyword,
    InMailbox,
    Operator,
    Query,
    Term,
    Text,
    ThreadKeyword,
)
from tests import pg
from tests.mail.test_email_support import MULTIPART, MailTestCase, message


class SortValueTests(SynchronousTestCase):
    def test_base_subject(self) -> None:
        """
        The base subject of RFC 5256 section 2.1: reply and forward
        prefixes, [blobs], "(fwd)" trailers and [Fwd: ...] wrappers go,
        repeatedly; white space collapses; case stays.
        """
        for subject, base in (
            ("Hello", "Hello"),
            ("Re: Hello", "Hello"),
            ("RE: re: Fwd: Hello", "Hello"),
            ("Re[2]: Hello", "Hello"),
            ("Re [list]: Hello", "Hello"),
            ("[list] Re: Hello", "Hello"),
            ("[list]", "[list]"),
            ("Hello (fwd)", "Hello"),
            ("Hello (FWD) (fwd)  ", "Hello"),
            ("[Fwd: Re: Hello]", "Hello"),
            ("  Fw:   Hello   world  ", "Hello world"),
            ("", ""),
            (None, ""),
        ):
            self.assertEqual(search.base_subject(subject), base, subject)

    def test_unicode_casemap(self) -> None:
        """
        i;unicode-casemap keys fold case and decompose accents, so "é"
        sorts with "e" and before "f".
        """
        self.assertEqual(search.unicode_casemap("abc"), search.unicode_casemap("ABC"))
        self.assertLess(search.unicode_casemap("émile"), search.unicode_casemap("Frank"))
        self.assertLess(search.unicode_casemap("Alice Archer"), search.unicode_casemap("alice@example.com"))

    def test_ascii_casemap(self) -> None:
        """
        i;ascii-casemap upper-cases ASCII letters only.
        """
        self.assertEqual(search.ascii_casemap("aZé"), "AZé")
        self.assertLess(search.ascii_casemap("zebra"), search.ascii_casemap("émile"))

    def test_ascii_numeric(self) -> None:
        """
        i;ascii-numeric compares leading numbers; strings without one come
        after every number and are equal to each other.
        """
        self.assertLess(search.ascii_numeric("9 lives"), search.ascii_numeric("10 tips"))
        self.assertLess(search.ascii_numeric("100"), search.ascii_numeric("abc"))
        self.assertEqual(search.ascii_numeric("abc"), search.ascii_numeric("xyz"))


class DocumentTests(SynchronousTestCase):
    def test_multipart(self) -> None:
        """
        The document has the decoded subject and addresses, the text body
        (not the HTML alternative twice) followed by the attached
        message's addresses, subject and body, attachment names and the
        header fields decoded and case-folded.
        """
        document = search.document_of(MULTIPART, parse_message(MULTIPART))
        self.assertEqual(document.subject, "Café plans")
        self.assertEqual(document.from_, "José jose@example.com")
        self.assertEqual(document.to, "a@example.com B. Person b@example.com c@example.com")
        self.assertEqual(document.cc, "d@example.com")
        self.assertEqual(document.body.split(), "Café at noon? inner@example.com Inner message Inside.".split())
        self.assertEqual(document.attachments, "plan.pdf")
        self.assertIn(["subject", "café plans"], document.headers)
        self.assertIn(["x-custom", "two"], document.headers)
        self.assertEqual((document.sort_from, document.sort_to, document.sort_subject), ("José", "a@example.com",
                                                                                          "Café plans"))

    def test_html_only(self) -> None:
        """
        An HTML body is indexed as the text a reader sees.
        """
        raw = b"Subject: x\r\nContent-Type: text/html\r\n\r\n<style>.a{}</style><p>Hello <b>there</b></p>"
        self.assertEqual(search.document_of(raw, parse_message(raw)).body, "Hello there")

    def test_text_attachment(self) -> None:
        """
        The content of text/* attachments is searched with the body.
        """
        raw = (
            b'Subject: x\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
            b"Content-Type: text/plain\r\n\r\nBody\r\n--b\r\n"
            b'Content-Type: text/csv; name="data.csv"\r\nContent-Disposition: attachment\r\n\r\nid,amount\r\n'
            b"--b--\r\n"
        )
        document = search.document_of(raw, parse_message(raw))
        self.assertIn("amount", document.body)
        self.assertEqual(document.attachments, "data.csv")

    def test_without_message(self) -> None:
        """
        Without the message octets the document has no body but the rest.
        """
        document = search.document_of(None, parse_message(MULTIPART))
        self.assertEqual((document.body, document.subject), ("", "Café plans"))


class DocidTests(MailTestCase):
    def test_order(self) -> None:
        """
        docids order Emails by receivedAt and, within a millisecond, by
        arrival; they are unique in the database.
        """
        def allocate(txn: Any) -> list[int]:
            found = []
            for received_at in (2000, 1000, 2000):
                docid = search.allocate_docid(txn, received_at)
                txn.execute("INSERT INTO emails (account_id, id, thread_id, blob_id, size, received_at, thread_subject,"
                            " has_attachment, preview, unread, addresses, headers, structure, docid)"
                            " VALUES (?, ?, 't', 'b', 1, ?, '', 0, '', 0, '{}', '[]', '{}', ?)",
                            (self.alice, f"M{docid}", received_at, docid))
                found.append(docid)
            return found

        late, early, late_again = self.run_sync(allocate)
        self.assertLess(early, late)
        self.assertEqual(late_again, late + 1)
        self.assertEqual(late - search.docid_base(2000), 0)

    def test_remembered_in_transaction(self) -> None:
        """
        Within one transaction, docids taken for an account are
        remembered: Emails of the same millisecond, of that account or
        of another one, get increasing docids, and the database's own
        Emails of that millisecond still come first.
        """
        bob = self.add_account("bob")

        def insert(txn: Any, account_id: str, docid: int) -> None:
            txn.execute("INSERT INTO emails (account_id, id, thread_id, blob_id, size, received_at, thread_subject,"
                        " has_attachment, preview, unread, addresses, headers, structure, docid)"
                        " VALUES (?, ?, 't', 'b', 1, 3000, '', 0, '', 0, '{}', '[]', '{}', ?)",
                        (account_id, f"M{docid}", docid))

        def earlier(txn: Any) -> int:
            docid = search.allocate_docid(txn, 3000)
            insert(txn, self.alice, docid)
            return docid

        def allocate(txn: Any) -> list[int]:
            found = []
            for account_id in (self.alice, bob, self.alice, self.alice, bob):
                docid = search.allocate_docid(txn, 3000, account_id)
                insert(txn, account_id, docid)
                found.append(docid)
            return found

        first = self.run_sync(earlier)
        found = self.run_sync(allocate)
        self.assertEqual(found, sorted(found))
        self.assertEqual(len(set(found)), len(found))
        self.assertGreater(found[0], first)

    def test_far_dates(self) -> None:
        """
        Dates far from 2000 share the first or last docid millisecond
        rather than overflow.
        """
        self.assertEqual(search.docid_base(10**15), search.docid_base(10**16))
        self.assertLess(search.docid_base(-(10**16)), search.docid_base(0))
        self.assertLess(search.docid_base(10**16), 2**63)


class IndexTests(MailTestCase):
    def find(self, text: str, who: str = "alice") -> list[str]:
        account_id = self.principals[who].account_id
        query = Query(Text("text", (Term(text),)))
        return self.run_sync(lambda txn: list(search.iter_ids(txn, account_id, query)), write=False)

    def rows(self) -> tuple[int, int]:
        def count(txn: Any) -> tuple[int, int]:
            return (txn.fetchvalue("SELECT count(*) FROM email_search"),
                    txn.fetchvalue("SELECT count(*) FROM email_fts"))

        return self.run_sync(count, write=False)

    def test_ingest_indexes(self) -> None:
        """
        An Email is searchable as soon as it is stored.
        """
        created = self.deliver(message("Quarterly report", "q@x", body="numbers"))
        self.assertEqual(self.find("quarterly"), [created.id])
        self.assertEqual(self.rows(), (1, 1))

    def test_destroy_removes(self) -> None:
        """
        Destroying an Email removes its index entries.
        """
        created = self.deliver(message("Quarterly report", "q@x"))
        self.call("Email/set", {"destroy": [created.id]})
        self.assertEqual(self.find("quarterly"), [])
        self.assertEqual(self.rows(), (0, 0))

    def test_mailbox_destroy_removes(self) -> None:
        """
        Emails destroyed with their Mailbox leave the index too.
        """
        extra = self.new_mailbox("Extra")
        self.deliver(message("Quarterly report", "q@x"), roles=(), mailbox_ids=[extra])
        self.call("Mailbox/set", {"destroy": [extra], "onDestroyRemoveEmails": True})
        self.assertEqual(self.rows(), (0, 0))

    def test_thread_merge_keeps_entries(self) -> None:
        """
        When a merge gives Emails new ids (those of the newer Thread), they
        are found under the new ids.
        """
        first = self.deliver(message("Topic", "a@x", body="apples"))
        second = self.deliver(message("Topic", "b@x", body="bananas"))
        self.deliver(message("Re: Topic", "c@x", references=["a@x", "b@x"], body="cherries"))
        found = self.find("apples") + self.find("bananas")
        self.assertEqual(found[0], first.id)
        self.assertNotIn(second.id, found)
        self.assertEqual(len(found), 2)
        self.assertEqual(len({self.thread_of(email_id) for email_id in found + self.find("cherries")}), 1)
        self.assertEqual(self.rows(), (3, 3))

    def copy(self, email_id: str, to: str) -> str:
        """
        Copy an Email of alice's into the Inbox of another account, as
        Email/copy does.
        """
        account_id = self.principals[to].account_id
        inbox = self.mailbox("inbox", to)

        def copy(txn: Any) -> str:
            loaded = emails.load_record(txn, self.alice, email_id)
            assert loaded is not None
            record, received_at, _, _ = loaded
            created = emails.insert_email(txn, account_id, record, [inbox], [], received_at)
            search.copy_email(txn, self.env.blobs, self.alice, email_id, account_id, created.id)
            return created.id

        return self.run_sync(copy)  # type: ignore[no-any-return]

    def test_copy_indexes(self) -> None:
        """
        A copy of an Email (Email/copy) gets the original's index entry, in
        its own account.
        """
        self.add_account("bob")
        created = self.deliver(message("Quarterly report", "q@x"))
        copy = self.copy(created.id, "bob")
        self.assertEqual(self.find("quarterly", "bob"), [copy])
        self.assertEqual(self.find("quarterly"), [created.id])
        self.assertEqual(self.rows(), (2, 2))

    def test_copy_of_unindexed(self) -> None:
        """
        A copy of an Email that has no index entry yet is indexed from its
        message.
        """
        self.add_account("bob")
        created = self.deliver(MULTIPART)
        self.run_sync(search.remove_email, self.alice, created.id)
        copy = self.copy(created.id, "bob")
        self.assertEqual(self.find("noon", "bob"), [copy])
        self.assertEqual(self.find("noon"), [])

    def test_backfill(self) -> None:
        """
        Emails without index entries (stored before migration 0005) are
        indexed by backfill, from their stored parse and message.
        """
        created = self.deliver(MULTIPART)

        def forget(txn: Any) -> None:
            txn.execute("DELETE FROM email_search")
            txn.execute("DELETE FROM email_fts")

        self.run_sync(forget)
        self.assertEqual(self.find("noon"), [])
        self.assertEqual(self.run_sync(search.backfill, self.env.blobs, 10), 1)
        self.assertEqual(self.find("noon"), [created.id])
        self.assertEqual(self.find("plan.pdf"), [created.id])
        self.assertEqual(self.run_sync(search.backfill, self.env.blobs, 10), 0)

    def test_same_docid_in_two_accounts(self) -> None:
        """
        On PostgreSQL a docid is unique only within its account (writers
        of different accounts allocate at once); Emails of two accounts
        with the same docid are each found, sorted, filtered and
        highlighted in their own account only.
        """
        if pg.engine_of(self) != pg.POSTGRESQL:
            raise SkipTest("a SQLite database has one writer: its docids are unique in the database")
        bob = self.add_account("bob")
        mine = self.deliver(message("Apples", "a@x", body="fruit salad"), received_at=5000).id
        theirs = self.deliver(message("Bananas", "b@x", body="fruit bowl"), received_at=5000, who="bob").id

        def share_docid(txn: Any) -> None:
            search.remove_email(txn, bob, theirs)
            docid = txn.fetchvalue("SELECT docid FROM emails WHERE account_id = ? AND id = ?", (self.alice, mine))
            txn.execute("UPDATE emails SET docid = ? WHERE account_id = ? AND id = ?", (docid, bob, theirs))
            txn.execute("UPDATE email_mailboxes SET docid = ? WHERE account_id = ? AND email_id = ?",
                        (docid, bob, theirs))
            self.assertEqual(search.backfill(txn, self.env.blobs), 1)

        self.run_sync(share_docid)
        self.assertEqual((self.find("fruit"), self.find("fruit", "bob")), ([mine], [theirs]))
        for who, expected in (("alice", mine), ("bob", theirs)):
            query = {"filter": {"header": ["Subject"]}, "sort": [{"property": "subject"}]}
            self.assertEqual(self.call("Email/query", query, who)["ids"], [expected])
            snippets = self.call("SearchSnippet/get", {"filter": {"body": "fruit"}, "emailIds": [expected]}, who)
            [snippet] = snippets["list"]
            self.assertIn("<mark>fruit</mark>", snippet["preview"])


class MigrationTests(SynchronousTestCase):
    def test_existing_emails(self) -> None:
        """
        Migration 0005 numbers the Emails already stored in receivedAt
        order (ties in storage order), copies the numbers into their
        Mailbox rows, and leaves them for backfill to index.
        """
        path = os.path.join(os.path.abspath(self.mktemp()), "jmapd.sqlite3")
        database = Database(SQLiteEngine(path))
        self.addCleanup(database.close)
        everything = migrations.migrations
        self.patch(migrations, "migrations", lambda *args: [m for m in everything(*args) if m[0] <= 4])
        database.migrate()
        raw = message("Old mail", "old@x", body="ancient words")
        record = emails.EmailRecord.from_parsed("bold", parse_message(raw))

        def old_rows(txn: Any) -> None:
            txn.execute("INSERT INTO accounts (id, name, created_at) VALUES ('a1', 'alice', 0)")
            for email_id, received_at in (("M1", 3000), ("M2", 1000), ("M3", 3000)):
                txn.execute(
                    "INSERT INTO emails (account_id, id, thread_id, blob_id, size, received_at, subject,"
                    " thread_subject, has_attachment, preview, unread, addresses, headers, structure)"
                    " VALUES ('a1', ?, 'T1', 'bold', 1, ?, ?, '', 0, '', 1, ?, ?, ?)",
                    (email_id, received_at, record.subject, orjson.dumps(record.addresses).decode(),
                     orjson.dumps(record.headers).decode(), orjson.dumps(record.structure).decode()),
                )
                txn.execute("INSERT INTO email_mailboxes (account_id, email_id, mailbox_id) VALUES ('a1', ?, 'mb')",
                            (email_id,))

        database.run_sync(old_rows, write=True)
        self.patch(migrations, "migrations", everything)
        database.migrate()
        docids = dict(database.run_sync(lambda txn: txn.fetchall("SELECT id, docid FROM emails")))
        self.assertLess(docids["M2"], docids["M1"])
        self.assertEqual(docids["M3"], docids["M1"] + 1)
        self.assertEqual(docids["M1"], search.docid_base(3000))
        copied = dict(database.run_sync(lambda txn: txn.fetchall("SELECT email_id, docid FROM email_mailboxes")))
        self.assertEqual(copied, docids)

        class Store:
            def read(self, blob_id: str) -> bytes:
                assert blob_id == "bold"
                return raw

        self.assertEqual(database.run_sync(search.backfill, Store(), 2, write=True), 2)
        self.assertEqual(database.run_sync(search.backfill, Store(), 2, write=True), 1)
        query = Query(Text("body", (Term("ancient"),)), (Comparator("receivedAt"),))
        found = database.run_sync(lambda txn: list(search.iter_ids(txn, "a1", query)))
        self.assertEqual(found, ["M2", "M1", "M3"])


class PlanTests(MailTestCase):
    """
    The plans SQLite chooses: list views read an index in order and stop,
    whatever the size of the account.
    """

    def plan(self, query: Query, limit: int | None = 50) -> list[str]:
        for n in range(3):
            self.deliver(message(f"Subject {n}", f"{n}@x"))
        plan = self.run_sync(lambda txn: search.explain(txn, self.alice, query, limit=limit), write=False)
        for line in plan:
            self.assertFalse(line.startswith("SCAN e ") or line == "SCAN e", plan)
            self.assertNotIn("SCAN email_mailboxes", line)
            self.assertNotIn("SCAN mb", line)
        return plan

    def test_list_view(self) -> None:
        """
        inMailbox sorted by receivedAt, newest first, reads the Mailbox's
        ordered index only: no scan, no sort.
        """
        query = Query(InMailbox(self.mailbox("inbox")), (Comparator("receivedAt", ascending=False),))
        plan = self.plan(query)
        self.assertEqual(plan, ["SEARCH mb USING COVERING INDEX email_mailboxes_order (account_id=? AND mailbox_id=?)"])

    def test_list_view_threads(self) -> None:
        """
        The same with collapseThreads (which needs the Thread) and a
        condition reads the index in order and looks each row up.
        """
        query = Query(
            Operator("AND", (InMailbox(self.mailbox("inbox")), HasKeyword("$seen", False))),
            (Comparator("receivedAt", ascending=False),),
            collapse_threads=True,
        )
        plan = self.plan(query, None)
        self.assertIn("email_mailboxes_order", plan[0])
        self.assertFalse(any("TEMP B-TREE" in line for line in plan), plan)

    def test_all_emails(self) -> None:
        """
        Without a filter the account's Emails are read in receivedAt order
        from an index.
        """
        plan = self.plan(Query(None))
        self.assertEqual(plan, ["SEARCH e USING COVERING INDEX emails_order (account_id=?)"])

    def test_text_search(self) -> None:
        """
        A text search newest first reads the full-text index in its own
        order (docid): no sort of the matches.
        """
        plan = self.plan(Query(Operator("AND", (Text("text", (Term("subject"),)), InMailbox("m1")))))
        self.assertTrue(plan[0].startswith("SCAN f VIRTUAL TABLE"), plan)
        self.assertIn("emails_docid", plan[1])
        self.assertFalse(any("TEMP B-TREE" in line for line in plan), plan)

    def test_thread_conditions(self) -> None:
        """
        Thread keyword conditions look up the Thread's Emails by index.
        """
        plan = self.plan(Query(ThreadKeyword("$seen", "all")))
        self.assertTrue(any("emails_thread" in line for line in plan), plan)

    def test_other_sort(self) -> None:
        """
        Other sorts sort the filtered rows (the Mailbox's, here), without
        scanning the account.
        """
        query = Query(InMailbox(self.mailbox("inbox")), (Comparator("subject"),))
        plan = self.plan(query)
        self.assertIn("email_mailboxes_order", plan[0])


class BenchmarkTests(SynchronousTestCase):
    def test_search_scale_runs(self) -> None:
        """
        bench.search_scale builds accounts, checks every answer is not an
        error, and prints one table row per workload.
        """
        lines: list[str] = []
        self.assertEqual(search_scale.main(["--sizes", "20,40", "--repeat", "3"], out=lines.append), 0)
        rows = [line for line in lines if line.startswith("| ") and "workload" not in line]
        self.assertEqual(len(rows), 5)
        self.assertTrue(rows[0].startswith("| list view |"))


# Not on PostgreSQL: SortValueTests and DocumentTests use no database; MigrationTests
# numbers Emails stored before migration 0005, which only SQLite databases can have;
# PlanTests reads SQLite's EXPLAIN QUERY PLAN; BenchmarkTests runs bench.search_scale,
# which builds SQLite stores.
pg.add_postgresql_variants(globals(), DocidTests, IndexTests)
