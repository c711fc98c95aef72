"""
Tests for L{jmapd.importexport}: mbox and Maildir import, mbox export.
"""

from __future__ import annotations

import io
import os
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from jmapd import importexport
from jmapd.blobs.store import FileBlobStore
from jmapd.config import default_config
from jmapd.importexport import ImportFailed, Progress, export_mbox, import_path, read_mbox
from jmapd.storage import accounts, blob_directory, emails, mailboxes, open_database


def msg(subject: str, body: str = "Hello.", extra: str = "") -> bytes:
    """
    A message with LF line endings, as mbox files and Maildirs hold them.
    """
    return (
        f"From: Bob <bob@example.org>\nTo: alice@example.com\nSubject: {subject}\n"
        f"Date: Mon, 02 Oct 2023 10:00:00 +0000\nMessage-ID: <{subject.replace(' ', '.')}@example.org>\n"
        f"{extra}\n{body}\n"
    ).encode()


def mbox(*messages: bytes) -> bytes:
    out = b""
    for message in messages:
        out += b"From bob@example.org Mon Oct  2 10:00:00 2023\n"
        for line in message.split(b"\n")[:-1]:
            if line.startswith(b"From ") or line.startswith(b">From "):
                line = b">" + line
            out += line + b"\n"
        out += b"\n"
    return out


class ImportTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.config = default_config(db_path=os.path.join(self.directory, "data"))
        self.database = open_database(self.config)
        self.addCleanup(self.database.close)
        self.blobs = FileBlobStore(blob_directory(self.config))
        self.alice = self.database.run_sync(accounts.add_account, "alice", None, ["alice@example.com"], write=True).id

    def write(self, name: str, data: bytes) -> str:
        path = os.path.join(self.directory, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def run_import(self, path: str, mailbox: str | None = None, account: str = "alice") -> importexport.Summary:
        return import_path(self.database, self.blobs, self.config, account, path, mailbox)

    def emails(self, account_id: str | None = None) -> list[dict[str, Any]]:
        """
        Every Email of the account: subject, keywords, Mailbox names and
        the stored message, by subject.
        """
        account_id = account_id or self.alice

        def read(txn: Any) -> list[dict[str, Any]]:
            rows = emails.get_rows(txn, account_id, None, ["subject", "blob_id", "received_at"])
            ids = [row["id"] for row in rows]
            keywords = emails.get_keywords(txn, account_id, ids)
            member_of = emails.get_mailbox_ids(txn, account_id, ids)
            names = {m.id: m.name for m in mailboxes.get_mailboxes(txn, account_id)}
            return [
                {
                    "subject": row["subject"],
                    "keywords": sorted(keywords[row["id"]]),
                    "mailboxes": sorted(names[m] for m in member_of[row["id"]]),
                    "raw": self.blobs.read(row["blob_id"]),
                    "receivedAt": row["received_at"],
                }
                for row in rows
            ]

        return sorted(self.database.run_sync(read), key=lambda e: e["subject"] or "")


class MboxTests(ImportTestCase):
    """
    mbox files in and out.
    """

    def test_import(self) -> None:
        """
        Each message of an mbox file becomes an Email in the Mailbox named
        after the file (created), stored with CRLF line endings, a quoted
        ">From " line unquoted, receivedAt from the From line.
        """
        path = self.write("Lists.mbox", mbox(msg("one", body="From the start\n>From quoted"), msg("two")))
        summary = self.run_import(path)
        self.assertEqual((summary.imported, summary.skipped, summary.refused), (2, [], []))
        self.assertEqual(summary.mailboxes_created, ["Lists"])
        found = self.emails()
        self.assertEqual([e["subject"] for e in found], ["one", "two"])
        self.assertEqual(found[0]["mailboxes"], ["Lists"])
        self.assertEqual(found[0]["raw"], msg("one", body="From the start\n>From quoted").replace(b"\n", b"\r\n"))
        self.assertEqual(found[0]["receivedAt"], 1696240800000)

    def test_unquotedFromInBody(self) -> None:
        """
        A body line starting "From " that an mboxo writer left unquoted
        does not start a message unless it is a From line with a date (as
        mutt reads mbox files): the message keeps that line and is not
        split in two.  Google Takeout's From lines, with the zone before
        the year, do start messages.
        """
        body = "Hi,\n\nFrom now on I will be careful.\nBob"
        data = mbox(msg("one"), msg("two")).replace(b"\n\nHello.\n\nFrom bob", f"\n\n{body}\n\nFrom bob".encode(), 1)
        data += b"From 1779123456789012345@xxx Fri Sep 01 08:51:24 +0000 2023\n" + msg("three") + b"\n"
        summary = self.run_import(self.write("inbox", data))
        self.assertEqual((summary.imported, summary.raw), (3, []))
        found = self.emails()
        self.assertEqual([e["subject"] for e in found], ["one", "three", "two"])
        self.assertEqual(found[0]["raw"], msg("one", body=body).replace(b"\n", b"\r\n"))
        self.assertEqual(found[1]["receivedAt"], 1693558284000)

    def test_inboxAndMailboxOption(self) -> None:
        """
        A file named inbox goes to the Inbox; --mailbox puts everything in
        the named Mailbox, created with its parents.
        """
        self.run_import(self.write("inbox", mbox(msg("one"))))
        self.run_import(self.write("other.mbox", mbox(msg("two"))), mailbox="Archive/2023")
        found = {e["subject"]: e["mailboxes"] for e in self.emails()}
        self.assertEqual(found, {"one": ["Inbox"], "two": ["2023"]})

        def parent_name(txn: Any) -> str:
            every = {m.id: m for m in mailboxes.get_mailboxes(txn, self.alice)}
            (year,) = [m for m in every.values() if m.name == "2023"]
            return every[year.parent_id].name

        self.assertEqual(self.database.run_sync(parent_name), "Archive")

    def test_mailboxNamesNetUnicode(self) -> None:
        """
        A Mailbox name is Net-Unicode (RFC 8621 section 2): a file name in
        NFD (as macOS writes them) makes a Mailbox named in NFC, the same
        Mailbox as the NFC name; a name with a control character is
        refused, its messages not filed.
        """
        self.run_import(self.write("Cafe\u0301.mbox", mbox(msg("one"))))
        self.run_import(self.write("Caf\u00e9.mbox", mbox(msg("two"))))
        found = {e["subject"]: e["mailboxes"] for e in self.emails()}
        self.assertEqual(found, {"one": ["Caf\u00e9"], "two": ["Caf\u00e9"]})
        summary = self.run_import(self.write("bad\x07name.mbox", mbox(msg("three"))))
        self.assertEqual(summary.imported, 0)
        self.assertIn("control characters", summary.refused[0][1])

    def test_rerunImportsNothing(self) -> None:
        """
        Importing the same file again adds nothing and says why.
        """
        path = self.write("inbox", mbox(msg("one"), msg("two")))
        self.run_import(path)
        summary = self.run_import(path)
        self.assertEqual((summary.imported, summary.added), (0, 0))
        self.assertEqual([reason for _, reason in summary.skipped], ["imported before"] * 2)
        self.assertEqual(len(self.emails()), 2)

    def test_statusKeywords(self) -> None:
        """
        Status, X-Status and X-Keywords become keywords and are removed
        from the message; a message marked deleted (X-Status D) is skipped.
        """
        path = self.write(
            "inbox",
            mbox(
                msg("read", extra="Status: RO\nX-Status: AF\nX-Keywords: $Label1 work\n"),
                msg("new", extra="Status: O\n"),
                msg("deleted", extra="X-Status: D\n"),
            ),
        )
        summary = self.run_import(path)
        self.assertEqual(summary.imported, 2)
        self.assertEqual([reason for _, reason in summary.skipped], ["marked deleted"])
        found = {e["subject"]: e for e in self.emails()}
        self.assertEqual(found["read"]["keywords"], ["$answered", "$flagged", "$label1", "$seen", "work"])
        self.assertEqual(found["new"]["keywords"], [])
        self.assertNotIn(b"Status:", found["read"]["raw"])
        self.assertNotIn(b"X-Keywords", found["read"]["raw"])

    def test_folderInternalData(self) -> None:
        """
        The first message of an mbox file that UW-IMAP or Dovecot wrote
        may be their "DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA"
        pseudo-message (it has an X-IMAP field): it is skipped, not
        imported.  Their X-UID and X-IMAPbase fields belong to the mailbox
        file, as Status does, and are removed from the messages.
        """
        pseudo = (
            b"From: Mail System Internal Data <MAILER-DAEMON@example.org>\n"
            b"Subject: DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA\n"
            b"X-IMAP: 1696240800 0000000002\n\nThis text is part of the internal format of your mail folder.\n"
        )
        path = self.write(
            "inbox", mbox(pseudo, msg("one", extra="X-UID: 1\nStatus: RO\n"), msg("two", extra="X-IMAPbase: 1 2\n"))
        )
        summary = self.run_import(path)
        self.assertEqual(summary.imported, 2)
        self.assertEqual(
            summary.skipped, [("inbox message 1 (line 1)", "the mail folder's internal data (X-IMAP), not a message")]
        )
        found = self.emails()
        self.assertEqual([e["subject"] for e in found], ["one", "two"])
        self.assertEqual(found[0]["raw"], msg("one").replace(b"\n", b"\r\n"))
        self.assertEqual(found[0]["keywords"], ["$seen"])
        self.assertEqual(found[1]["raw"], msg("two").replace(b"\n", b"\r\n"))

    def test_unparseableStoredRaw(self) -> None:
        """
        A message without any header field is stored as it is and reported;
        an empty one and one over mail-max-size are refused and reported.
        """
        self.config = default_config(db_path=self.config.db_path, mail_max_size=2000)
        path = self.write("inbox", mbox(b"just some text\nno headers at all\n", b"\n", msg("big", body="x" * 3000),
                                        msg("fine")))
        summary = self.run_import(path)
        self.assertEqual(summary.imported, 2)
        self.assertEqual(len(summary.raw), 1)
        self.assertIn("message 1", summary.raw[0][0])
        self.assertEqual([reason.split(";")[0] for _, reason in summary.refused],
                         ["the message is empty", "the message is 3140 octets"])
        raw = [e["raw"] for e in self.emails() if e["subject"] is None]
        self.assertEqual(raw, [b"just some text\r\nno headers at all\r\n"])
        lines = summary.lines()
        self.assertEqual(lines[0], "imported 2, added to another Mailbox 0, skipped 0, refused 2")
        self.assertTrue(any(line.startswith("stored as is: inbox message 1") for line in lines))
        self.assertTrue(any(line.startswith("refused: inbox message 3") for line in lines))

    def test_interrupted(self) -> None:
        """
        An import interrupted (Ctrl-C) raises L{importexport.Interrupted}
        with the summary of the messages filed so far; running it again
        imports the rest and skips those.
        """
        self.patch(importexport, "BATCH", 2)
        path = self.write("inbox", mbox(msg("one"), msg("two"), msg("three")))

        def stopped() -> Any:
            for number, item in enumerate(read_mbox(path)):
                if number == 2:
                    raise KeyboardInterrupt()
                yield item

        importer = importexport.Importer(self.database, self.blobs, self.config, self.alice, None)
        error = self.assertRaises(importexport.Interrupted, importer.run, stopped())
        self.assertEqual((error.summary.imported, error.summary.skipped), (2, []))
        summary = self.run_import(path)
        self.assertEqual((summary.imported, len(summary.skipped)), (1, 2))
        self.assertEqual(len(self.emails()), 3)

    def test_notAnMbox(self) -> None:
        """
        A file that does not start with a From line is refused as a whole.
        """
        path = self.write("notes.txt", b"hello\nworld\n")
        self.assertRaises(ImportFailed, self.run_import, path)

    def test_notAFile(self) -> None:
        """
        A path that is there but is neither a file nor a directory (a
        named pipe, a device) is refused as such, not as missing.
        """
        fifo = os.path.join(self.directory, "pipe")
        os.mkfifo(fifo)
        error = self.assertRaises(ImportFailed, self.run_import, fifo)
        self.assertEqual(str(error), f"{fifo} is neither an mbox file nor a Maildir directory")
        error = self.assertRaises(ImportFailed, self.run_import, fifo + "-missing")
        self.assertEqual(str(error), f"{fifo}-missing: no such file or directory")

    def test_unknownAccount(self) -> None:
        """
        Importing into an account that does not exist fails.
        """
        path = self.write("inbox", mbox(msg("one")))
        self.assertRaises(accounts.AccountNotFound, self.run_import, path, account="nobody")

    def test_roundTrip(self) -> None:
        """
        Exported mbox, imported into another account, gives the same
        messages (octet for octet) with the same keywords and receivedAt.
        """
        original = mbox(
            msg("one", body="From here\n>From there\n>>From everywhere"),
            msg("two", extra="Status: RO\nX-Status: F\nX-Keywords: $forwarded\n"),
        )
        self.run_import(self.write("inbox", original))
        out = os.path.join(self.directory, "out.mbox")
        self.assertEqual(export_mbox(self.database, self.blobs, "alice", out), 2)
        bob = self.database.run_sync(accounts.add_account, "bob", None, [], write=True).id
        self.run_import(out, account="bob", mailbox="Inbox")
        mine = [{k: v for k, v in e.items() if k != "mailboxes"} for e in self.emails()]
        theirs = [{k: v for k, v in e.items() if k != "mailboxes"} for e in self.emails(bob)]
        self.assertEqual(mine, theirs)
        self.assertEqual(theirs[1]["keywords"], ["$flagged", "$forwarded", "$seen"])

    def test_exportRereadable(self) -> None:
        """
        An export read back gives each stored message with LF line
        endings, "From " lines quoted and unquoted again.
        """
        self.run_import(self.write("inbox", mbox(msg("one", body="From me"))))
        out = os.path.join(self.directory, "out.mbox")
        export_mbox(self.database, self.blobs, "alice", out)
        with open(out, "rb") as f:
            text = f.read()
        self.assertTrue(text.startswith(b"From MAILER-DAEMON Mon Oct 02 10:00:00 2023\n"))
        self.assertIn(b"\n>From me\n", text)
        (item,) = list(read_mbox(out))
        self.assertEqual(item.data, msg("one", body="From me").replace(b"\n", b"\r\n"))

    def test_exportOneMailbox(self) -> None:
        """
        --mailbox exports that Mailbox only; an unknown one is an error.
        """
        self.run_import(self.write("inbox", mbox(msg("one"))))
        self.run_import(self.write("Work.mbox", mbox(msg("two"))))
        out = os.path.join(self.directory, "work.mbox")
        self.assertEqual(export_mbox(self.database, self.blobs, "alice", out, mailbox="Work"), 1)
        self.assertEqual([item.data.split(b"Subject: ")[1][:3] for item in read_mbox(out)], [b"two"])
        self.assertRaises(ImportFailed, export_mbox, self.database, self.blobs, "alice", out, "Nope")

    def test_exportCannotWrite(self) -> None:
        """
        An mbox file that cannot be written (its directory is missing, or
        it is a directory) is an error naming the file asked for, not the
        temporary file beside it, and leaves no temporary file behind.
        """
        self.run_import(self.write("inbox", mbox(msg("one"))))
        missing = os.path.join(self.directory, "missing", "out.mbox")
        error = self.assertRaises(ImportFailed, export_mbox, self.database, self.blobs, "alice", missing)
        self.assertEqual(str(error), f"cannot write {missing}: No such file or directory")
        folder = os.path.join(self.directory, "folder")
        os.makedirs(folder)
        error = self.assertRaises(ImportFailed, export_mbox, self.database, self.blobs, "alice", folder)
        self.assertEqual(str(error), f"cannot write {folder}: it is a directory")
        self.assertFalse(os.path.exists(folder + ".tmp"))


class MaildirTests(ImportTestCase):
    """
    Maildir folders and flags.
    """

    def maildir(self) -> str:
        root = os.path.join(self.directory, "Maildir")
        for folder in ("", ".Sent", ".Lists.jmap", ".Caf&AOk-"):
            for part in ("cur", "new", "tmp"):
                os.makedirs(os.path.join(root, folder, part), exist_ok=True)
        self.write("Maildir/new/1700000000.M1P1.host", msg("new one"))
        self.write("Maildir/cur/1700000001.M2P1.host:2,SF", msg("seen flagged"))
        self.write("Maildir/cur/1700000002.M3P1.host:2,RSa", msg("answered"))
        self.write("Maildir/cur/1700000003.M4P1.host:2,ST", msg("trashed"))
        self.write("Maildir/dovecot-keywords", b"0 $Important\n")
        self.write("Maildir/.Sent/cur/1700000004.M5P1.host:2,S", msg("sent"))
        self.write("Maildir/.Lists.jmap/cur/1700000005.M6P1.host:2,D", msg("draft"))
        self.write("Maildir/.Caf&AOk-/new/1700000006.M7P1.host", msg("cafe"))
        return root

    def test_import(self) -> None:
        """
        The Maildir is the Inbox, its folders Mailboxes (Maildir++ dots
        nest, modified UTF-7 names decoded), flags keywords (S R F D, and
        Dovecot's letters), receivedAt from the file name; T is skipped.
        """
        summary = self.run_import(self.maildir())
        self.assertEqual(summary.imported, 6)
        self.assertEqual([reason for _, reason in summary.skipped], ["flagged T (trashed)"])
        found = {e["subject"]: (e["mailboxes"], e["keywords"]) for e in self.emails()}
        self.assertEqual(
            found,
            {
                "new one": (["Inbox"], []),
                "seen flagged": (["Inbox"], ["$flagged", "$seen"]),
                "answered": (["Inbox"], ["$answered", "$important", "$seen"]),
                "sent": (["Sent"], ["$seen"]),
                "draft": (["jmap"], ["$draft"]),
                "cafe": (["Café"], []),
            },
        )
        times = {e["subject"]: e["receivedAt"] for e in self.emails()}
        self.assertEqual(times["sent"], 1700000004000)

        def parent_of_jmap(txn: Any) -> str:
            every = {m.id: m for m in mailboxes.get_mailboxes(txn, self.alice)}
            (jmap,) = [m for m in every.values() if m.name == "jmap"]
            return every[jmap.parent_id].name

        self.assertEqual(self.database.run_sync(parent_of_jmap), "Lists")

    def test_unreadableFolder(self) -> None:
        """
        A Maildir++ folder the importer may not enter (its cur/ and new/
        cannot even be seen) stops the import before anything is filed,
        with an error naming it, instead of being passed over as "not a
        folder" and its messages left behind without a word.  (The test
        runs as root, which may enter any directory: the file system's
        answer for one folder is what is replaced.)
        """
        root = self.maildir()
        folder = os.path.join(root, ".Sent")
        access = os.access
        self.patch(os, "access", lambda path, mode: path != folder and access(path, mode))
        error = self.assertRaises(ImportFailed, self.run_import, root)
        self.assertEqual(str(error), f"{folder}: cannot read this folder (permission denied)")
        self.assertEqual(self.emails(), [])

    def test_createdNamesAsTheyAre(self) -> None:
        """
        The summary names a created Mailbox by the names of the Mailboxes
        on its way as they are: a Maildir++ folder under INBOX is created
        under the account's Inbox, and said to be "Inbox/Sub", not
        "INBOX/Sub".
        """
        root = self.maildir()
        os.makedirs(os.path.join(root, ".INBOX.Sub", "cur"))
        os.makedirs(os.path.join(root, ".INBOX.Sub", "new"))
        self.write("Maildir/.INBOX.Sub/cur/1700000007.M8P1.host:2,S", msg("under inbox"))
        summary = self.run_import(root)
        self.assertIn("Inbox/Sub", summary.mailboxes_created)
        self.assertNotIn("INBOX/Sub", summary.mailboxes_created)

    def test_rerunImportsNothing(self) -> None:
        """
        A second import of the same Maildir adds nothing.
        """
        root = self.maildir()
        self.run_import(root)
        summary = self.run_import(root)
        self.assertEqual((summary.imported, summary.added), (0, 0))
        self.assertEqual(len(self.emails()), 6)

    def test_copyInTwoFolders(self) -> None:
        """
        The same message in two folders is one Email in both Mailboxes.
        """
        root = self.maildir()
        self.write("Maildir/.Sent/cur/1700000009.M9P1.host:2,S", msg("new one"))
        summary = self.run_import(root)
        self.assertEqual((summary.imported, summary.added), (6, 1))
        found = {e["subject"]: e["mailboxes"] for e in self.emails()}
        self.assertEqual(found["new one"], ["Inbox", "Sent"])

    def test_notAMaildir(self) -> None:
        """
        A directory without cur/ and new/ is refused as a whole.
        """
        os.makedirs(os.path.join(self.directory, "empty"))
        self.assertRaises(ImportFailed, self.run_import, os.path.join(self.directory, "empty"))


class ProgressTests(SynchronousTestCase):
    """
    The progress display.
    """

    def test_plainLines(self) -> None:
        """
        Off a terminal, a plain line with percentage, count, rate and ETA
        is written at most every interval, and once at the end.
        """
        now = [100.0]
        out = io.StringIO()
        progress = Progress(out, 1000, tty=False, clock=lambda: now[0], interval=5)
        now[0] = 102.0
        progress.update(100, 50)
        now[0] = 110.0
        progress.update(500, 250)
        progress.done(1000, 500)
        self.assertEqual(
            out.getvalue().splitlines(),
            [
                "import:  50%  250 messages  25 msg/s  ETA 0:00:10",
                "import: 100%  500 messages  50 msg/s  ETA 0:00:00",
            ],
        )

    def test_terminalBar(self) -> None:
        """
        On a terminal, a bar is redrawn in place with carriage returns and
        ended with a newline.
        """
        now = [0.0]
        out = io.StringIO()
        progress = Progress(out, 4, tty=True, clock=lambda: now[0], width=4)
        now[0] = 1.0
        progress.update(2, 2)
        progress.done(4, 4)
        self.assertEqual(
            out.getvalue(),
            "\r[##--]  50%  2 messages  2 msg/s  ETA 0:00:01 \r[####] 100%  4 messages  4 msg/s  ETA 0:00:00 \n",
        )
