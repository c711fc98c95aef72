# -*- test-case-name: tests.test_importexport -*-
"""
Bringing old mail in (C{jmapd-admin import}) and taking it out
(C{jmapd-admin export}): mbox files and Maildirs.

Import reads an mbox file or a Maildir and makes an Email of each message:

 - Maildir folders (Maildir++ C{.Sent}, C{.Lists.jmap}, or nested
   directories) become Mailboxes, created when missing; the Maildir
   itself is the Inbox.  An mbox file goes to the Mailbox named after the
   file (C{Sent.mbox} to Sent, C{inbox} to the Inbox).  C{--mailbox NAME}
   (C{/} between levels) puts everything under that Mailbox instead.
 - Maildir flags become keywords: S C{$seen}, R C{$answered}, F
   C{$flagged}, D C{$draft}, P C{$forwarded}, lower-case letters the
   keywords named in C{dovecot-keywords}.  T (trashed) messages are
   skipped: they are waiting to be expunged, and RFC 8621 section 4.1.1
   says a message with IMAP's C{\\Deleted} must not be visible through
   JMAP at all.  In mbox files the C{Status}, C{X-Status},
   C{X-Keywords} and C{X-Mozilla-Status} fields say the same (and are
   removed from the message, with UW-IMAP's and Dovecot's C{X-UID} and
   C{X-IMAPbase}: they belong to the mailbox file, not to the message).
   The first message of an mbox file is skipped when it is UW-IMAP's or
   Dovecot's "FOLDER INTERNAL DATA" (it has an C{X-IMAP} field).
 - Messages are stored with CRLF line endings.  The content hash of what
   is stored (which is its blob id) is recorded per account, so running
   the same import again adds nothing; a message the account has already
   (delivered, or imported into another Mailbox) is only added to the
   Mailbox.
 - A message without any header field is stored as it is and reported; a
   message over C{mail-max-size}, an empty one, or one that cannot be
   read is refused and reported.  Nothing is dropped silently.

Export writes the Emails of an account (or of one Mailbox) as an mboxrd
file: LF line endings, C{From } lines quoted with C{>}, keywords in
Status, X-Status and X-Keywords, so that importing the file again gives
the same messages and keywords.

This runs in C{jmapd-admin}, synchronously, next to a running server:
messages are filed in transactions of at most L{BATCH} messages, their
blobs written before each transaction starts, so the server's own writes
wait for the database lock only briefly.
"""

from __future__ import annotations

import base64
import os
import re
import time
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import IO, Any

from attrs import define, field, frozen

from jmapd.blobs.store import blob_id_of
from jmapd.mail.email import is_keyword
from jmapd.mime.parse import parse_message
from jmapd.storage import accounts, emails, imports, mailboxes

#: Most messages filed in one transaction.
BATCH = 200
#: ... and most octets.
BATCH_BYTES = 16 << 20

_FLAG_KEYWORDS = {"S": "$seen", "R": "$answered", "F": "$flagged", "D": "$draft", "P": "$forwarded"}
_STATUS_FIELDS = (
    b"status",
    b"x-status",
    b"x-keywords",
    b"x-mozilla-status",
    b"x-mozilla-status2",
    # UW-IMAP's and Dovecot's UIDs.
    b"x-uid",
    b"x-imapbase",
    b"x-imap",
)
_MAILDIR_PARTS = ("cur", "new", "tmp")
_MBOX_SUFFIXES = (".mbox", ".mbx", ".mbs")


class ImportFailed(Exception):
    """
    The import or export cannot be done (the path is neither an mbox file
    nor a Maildir, there is no such Mailbox, ...).
    """


class Interrupted(KeyboardInterrupt):
    """
    An import was interrupted (Ctrl-C).  What was filed stays (each batch
    is its own transaction, and the same import run again skips it), so
    the operator is told what that was: C{summary}.
    """

    def __init__(self, summary: Summary) -> None:
        super().__init__(summary)
        self.summary = summary


@frozen
class Item:
    """
    One message read from an mbox file or a Maildir.

    @ivar folder: the Mailbox path under the import's target, C{()} for
        the target itself.
    @ivar where: where it came from, for the report.
    @ivar data: its octets as found.
    @ivar keywords: from flags or status fields.
    @ivar received_at: milliseconds, from the mbox C{From } line or the
        Maildir file; C{None} when unknown.
    @ivar skip: a reason not to import it at all (T flag), or C{None}.
    @ivar position: how far the reader is, in the units of its total.
    """

    folder: tuple[str, ...]
    where: str
    data: bytes
    keywords: frozenset[str] = frozenset()
    received_at: int | None = None
    skip: str | None = None
    position: int = 0


@define
class Summary:
    """
    What an import did.  C{imported} counts stored messages, C{raw}
    included; C{added} messages were in the account already and were put
    in one more Mailbox.
    """

    imported: int = 0
    added: int = 0
    skipped: list[tuple[str, str]] = field(factory=list)
    refused: list[tuple[str, str]] = field(factory=list)
    raw: list[tuple[str, str]] = field(factory=list)
    mailboxes_created: list[str] = field(factory=list)

    @property
    def seen(self) -> int:
        return self.imported + self.added + len(self.skipped) + len(self.refused)

    def lines(self) -> list[str]:
        """
        The report printed at the end: the counts, then each refused
        message, each message stored raw, and the skip reasons counted.
        """
        out = [
            f"imported {self.imported}, added to another Mailbox {self.added},"
            f" skipped {len(self.skipped)}, refused {len(self.refused)}"
        ]
        for name in self.mailboxes_created:
            out.append(f"created Mailbox {name}")
        for where, reason in self.refused:
            out.append(f"refused: {where}: {reason}")
        for where, reason in self.raw:
            out.append(f"stored as is: {where}: {reason}")
        reasons: dict[str, int] = {}
        for _, reason in self.skipped:
            reasons[reason] = reasons.get(reason, 0) + 1
        for reason, count in sorted(reasons.items()):
            out.append(f"skipped {count}: {reason}")
        return out


# -- message octets ------------------------------------------------------------------


def to_crlf(lines: Sequence[bytes]) -> bytes:
    """
    Lines (without their endings) as a message with CRLF line endings.
    """
    return b"".join(line + b"\r\n" for line in lines)


def split_lines(data: bytes) -> list[bytes]:
    """
    The lines of C{data}, LF or CRLF terminated, without their endings.
    """
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [line[:-1] if line.endswith(b"\r") else line for line in lines]


def _header_end(lines: Sequence[bytes]) -> int:
    for index, line in enumerate(lines):
        if line == b"":
            return index
    return len(lines)


def take_status_fields(lines: list[bytes]) -> tuple[list[bytes], dict[bytes, list[bytes]]]:
    """
    Remove the mailbox-status fields (Status, X-Status, X-Keywords,
    X-Mozilla-Status, and the UIDs in X-UID, X-IMAPbase, X-IMAP) from the
    header of a message.

    @return: the lines without them, and their values by lower-case name.
    """
    end = _header_end(lines)
    kept: list[bytes] = []
    found: dict[bytes, list[bytes]] = {}
    current: list[bytes] | None = None
    for line in lines[:end]:
        if line[:1] in (b" ", b"\t") and current is not None:
            current.append(line)
            continue
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() in _STATUS_FIELDS:
            current = found.setdefault(name.strip().lower(), [])
            current.append(value.strip())
        else:
            current = None
            kept.append(line)
    return kept + lines[end:], found


def status_keywords(found: dict[bytes, list[bytes]]) -> tuple[set[str], bool]:
    """
    The keywords mbox status fields stand for, and whether they mark the
    message deleted.
    """
    keywords: set[str] = set()
    deleted = False
    for value in found.get(b"status", ()):
        if b"R" in value:
            keywords.add("$seen")
    for value in found.get(b"x-status", ()):
        letters = value.decode("ascii", "replace")
        for letter, keyword in (("A", "$answered"), ("F", "$flagged"), ("T", "$draft")):
            if letter in letters:
                keywords.add(keyword)
        if "D" in letters:
            deleted = True
    for value in found.get(b"x-keywords", ()):
        for word in re.split(r"[\s,]+", value.decode("utf-8", "replace")):
            if word and is_keyword(word):
                keywords.add(word.lower())
    for value in found.get(b"x-mozilla-status", ()):
        try:
            flags = int(value.split()[0], 16) if value.split() else 0
        except ValueError:
            continue
        for bit, keyword in ((0x1, "$seen"), (0x2, "$answered"), (0x4, "$flagged"), (0x1000, "$forwarded")):
            if flags & bit:
                keywords.add(keyword)
        if flags & 0x8:
            deleted = True
    return keywords, deleted


# -- mbox ------------------------------------------------------------------------


def _from_line_date(line: bytes) -> int | None:
    """
    The date of an mbox C{From } line (C{From sender Thu Nov 25 23:32:22
    2026}) in milliseconds, UTC unless it says otherwise; C{None} when it
    has none.
    """
    words = line.decode("ascii", "replace").split()
    if len(words) < 3:
        return None
    for start in range(2, len(words)):
        try:
            when = parsedate_to_datetime(" ".join(words[start:]))
        except (TypeError, ValueError, IndexError):
            continue
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return int(when.timestamp() * 1000)
    return None


_QUOTED_FROM = re.compile(rb"^>+From ")

#: A C{From } line that starts a message: a sender, then a date with its
#: day and month names, day and time (C{From bob Mon Oct  2 10:00:00
#: 2023}; Google Takeout puts the zone before the year).  As mutt reads
#: mbox files: a body line an mboxo writer left unquoted (C{From now on
#: ...}) has no such date, and stays in its message instead of cutting
#: it in two.
_FROM_LINE = re.compile(
    rb"^From \S.*? (Mon|Tue|Wed|Thu|Fri|Sat|Sun),? +"
    rb"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) +[0-9]{1,2} +[0-9]{1,2}:[0-9]{2}",
    re.IGNORECASE,
)


def read_mbox(path: str, folder: tuple[str, ...] = ()) -> Iterator[Item]:
    """
    The messages of an mbox file (mboxrd: C{>From } lines lose one C{>};
    mboxo and mboxcl files read the same way).  Each message ends at the
    next C{From } line with a date (L{_FROM_LINE}); the empty line before
    it is the separator.  Positions are file offsets.
    """
    name = os.path.basename(path)
    with open(path, "rb") as f:
        lines: list[bytes] = []
        from_line: bytes | None = None
        start_line = 0
        number = 0
        offset = 0

        def finish() -> Item:
            body = lines[:-1] if lines and lines[-1] == b"" else lines
            body, found = take_status_fields(list(body))
            keywords, deleted = status_keywords(found)
            skip = "marked deleted" if deleted else None
            if number == 1 and b"x-imap" in found:
                # UW-IMAP's and Dovecot's "DON'T DELETE THIS MESSAGE --
                # FOLDER INTERNAL DATA", holding the folder's UIDs.
                skip = "the mail folder's internal data (X-IMAP), not a message"
            return Item(
                folder=folder,
                where=f"{name} message {number} (line {start_line})",
                data=to_crlf(body),
                keywords=frozenset(keywords),
                received_at=_from_line_date(from_line or b""),
                skip=skip,
                position=offset,
            )

        for line_number, raw_line in enumerate(f, 1):
            offset += len(raw_line)
            line = raw_line.rstrip(b"\n")
            if line.endswith(b"\r"):
                line = line[:-1]
            if line.startswith(b"From ") and (from_line is None or _FROM_LINE.match(line)):
                if from_line is not None:
                    yield finish()
                elif any(lines):
                    raise ImportFailed(f"{path} is not an mbox file: it does not start with a 'From ' line")
                from_line = line
                lines = []
                number += 1
                start_line = line_number
                continue
            if from_line is None:
                if line.strip():
                    raise ImportFailed(f"{path} is not an mbox file: it does not start with a 'From ' line")
                continue
            if _QUOTED_FROM.match(line):
                line = line[1:]
            lines.append(line)
        if from_line is not None:
            yield finish()


def write_mbox(out: IO[bytes], message: bytes, received_at: int, keywords: Sequence[str]) -> None:
    """
    Append one message to an mboxrd file (see the module docstring).
    """
    when = datetime.fromtimestamp(received_at / 1000, UTC)
    out.write(b"From MAILER-DAEMON " + when.strftime("%a %b %d %H:%M:%S %Y").encode("ascii") + b"\n")
    lines = split_lines(message)
    end = _header_end(lines)
    have = set(keywords)
    status = b"Status: RO" if "$seen" in have else b"Status: O"
    x_status = "".join(
        letter for letter, keyword in (("A", "$answered"), ("F", "$flagged"), ("T", "$draft")) if keyword in have
    )
    others = sorted(have - {"$seen", "$answered", "$flagged", "$draft"})
    added = [status]
    if x_status:
        added.append(b"X-Status: " + x_status.encode("ascii"))
    if others:
        added.append(b"X-Keywords: " + " ".join(others).encode("utf-8"))
    lines = lines[:end] + added + lines[end:]
    for line in lines:
        if line.startswith(b"From ") or _QUOTED_FROM.match(line):
            out.write(b">")
        out.write(line + b"\n")
    out.write(b"\n")


# -- Maildir -------------------------------------------------------------------------


def _decode_utf7(name: str) -> str:
    """
    A folder name in IMAP's modified UTF-7 (RFC 3501 section 5.1.3), as
    Maildir++ stores them, decoded; a name that is not valid stays as is.
    """

    def decode(match: re.Match[str]) -> str:
        text = match.group(1)
        if not text:
            return "&"
        padded = text.replace(",", "/") + "=" * (-len(text) % 4)
        try:
            return base64.b64decode(padded).decode("utf-16-be")
        except (ValueError, UnicodeDecodeError):
            return match.group(0)

    return re.sub(r"&([A-Za-z0-9+,]*)-", decode, name)


def is_maildir(path: str) -> bool:
    return os.path.isdir(os.path.join(path, "cur")) and os.path.isdir(os.path.join(path, "new"))


def maildir_folders(path: str) -> list[tuple[tuple[str, ...], str]]:
    """
    Every folder of a Maildir as C{(Mailbox path, directory)}: the Maildir
    itself as C{()}, Maildir++ C{.A.B} folders as C{("A", "B")}, nested
    Maildirs by their directory names.
    """
    found: list[tuple[tuple[str, ...], str]] = []

    def visit(directory: str, prefix: tuple[str, ...]) -> None:
        if is_maildir(directory):
            found.append((prefix, directory))
        for entry in sorted(os.listdir(directory)):
            full = os.path.join(directory, entry)
            if entry in _MAILDIR_PARTS or not os.path.isdir(full):
                continue
            if entry.startswith("."):
                if entry in (".", ".."):
                    continue
                if not os.access(full, os.R_OK | os.X_OK):
                    # Its cur/ and new/ cannot even be seen: skipping it
                    # as "not a Maildir folder" would lose its messages
                    # without a word.
                    raise ImportFailed(f"{full}: cannot read this folder (permission denied)")
                if not is_maildir(full):
                    continue
                parts = tuple(_decode_utf7(part) for part in entry[1:].split(".") if part)
                if parts:
                    found.append((prefix + parts, full))
            else:
                visit(full, prefix + (_decode_utf7(entry),))

    visit(path, ())
    return found


def _dovecot_keywords(directory: str) -> dict[str, str]:
    """
    The keywords Dovecot's lower-case Maildir flags stand for
    (C{dovecot-keywords}: "0 $label1" lines), by letter.
    """
    found: dict[str, str] = {}
    try:
        with open(os.path.join(directory, "dovecot-keywords"), encoding="utf-8", errors="replace") as f:
            for line in f:
                number, _, keyword = line.strip().partition(" ")
                if number.isdigit() and int(number) < 26 and is_keyword(keyword):
                    found[chr(ord("a") + int(number))] = keyword.lower()
    except OSError:
        pass
    return found


def _maildir_files(directory: str) -> list[tuple[str, str]]:
    files = []
    for part in ("new", "cur"):
        sub = os.path.join(directory, part)
        for name in sorted(os.listdir(sub)):
            if not name.startswith("."):
                files.append((part, name))
    return files


def count_maildir(path: str) -> int:
    return sum(len(_maildir_files(directory)) for _, directory in maildir_folders(path))


def read_maildir(path: str) -> Iterator[Item]:
    """
    The messages of every folder of a Maildir, with keywords from their
    flags; positions count messages.
    """
    position = 0
    for folder, directory in maildir_folders(path):
        letters = _dovecot_keywords(directory)
        label = "/".join(folder) or "INBOX"
        for part, name in _maildir_files(directory):
            position += 1
            full = os.path.join(directory, part, name)
            where = f"{label}/{part}/{name}"
            flags = ""
            for separator in (":2,", "!2,"):
                if separator in name:
                    flags = name.split(separator, 1)[1]
            keywords = {_FLAG_KEYWORDS[f] for f in flags if f in _FLAG_KEYWORDS}
            keywords |= {letters[f] for f in flags if f in letters}
            stamp = name.split(".", 1)[0]
            received_at = int(stamp) * 1000 if stamp.isdigit() and len(stamp) >= 9 else None
            try:
                with open(full, "rb") as f:
                    data = f.read()
                if received_at is None:
                    received_at = int(os.path.getmtime(full) * 1000)
            except OSError as error:
                yield Item(folder, where, b"", skip=f"cannot read it: {error.strerror}", position=position)
                continue
            lines, found = take_status_fields(split_lines(data))
            more, deleted = status_keywords(found)
            yield Item(
                folder=folder,
                where=where,
                data=to_crlf(lines),
                keywords=frozenset(keywords | more),
                received_at=received_at,
                skip="flagged T (trashed)" if "T" in flags or deleted else None,
                position=position,
            )


# -- progress ----------------------------------------------------------------------------


class Progress:
    """
    Progress of an import on a stream: a bar redrawn in place with the
    rate and the time left on a terminal, a plain line every
    C{interval} seconds otherwise.

    @param total: the amount of work in the reader's position units.
    @param clock: a monotonic C{() -> seconds}.
    @param label: what starts each plain line (the command).
    @param unit: what is counted, and its rate's unit (C{jmapd-admin
        migrate} counts rows and blobs).
    """

    def __init__(
        self,
        stream: IO[str],
        total: int,
        tty: bool,
        clock: Callable[[], float] = time.monotonic,
        interval: float = 5.0,
        width: int = 30,
        label: str = "import",
        unit: tuple[str, str] = ("messages", "msg/s"),
    ) -> None:
        self._stream = stream
        self._label = label
        self._unit = unit
        self._total = max(total, 0)
        self._tty = tty
        self._clock = clock
        self._interval = interval if not tty else 0.1
        self._width = width
        self._started = clock()
        self._last = self._started
        self._drawn = False

    @staticmethod
    def _duration(seconds: float) -> str:
        seconds = int(round(seconds))
        hours, rest = divmod(seconds, 3600)
        minutes, seconds = divmod(rest, 60)
        return f"{hours}:{minutes:02d}:{seconds:02d}"

    def text(self, position: int, messages: int, now: float) -> str:
        """
        One progress report: percentage, messages, messages per second
        and the estimated time left.
        """
        elapsed = max(now - self._started, 1e-9)
        rate = messages / elapsed
        fraction = min(position / self._total, 1.0) if self._total else 1.0
        eta = elapsed * (1 - fraction) / fraction if fraction > 0 else None
        left = self._duration(eta) if eta is not None else "?"
        return f"{fraction * 100:3.0f}%  {messages} {self._unit[0]}  {rate:.0f} {self._unit[1]}  ETA {left}"

    def update(self, position: int, messages: int, force: bool = False) -> None:
        now = self._clock()
        if not force and now - self._last < self._interval:
            return
        self._last = now
        text = self.text(position, messages, now)
        if self._tty:
            fraction = min(position / self._total, 1.0) if self._total else 1.0
            filled = int(fraction * self._width)
            bar = "#" * filled + "-" * (self._width - filled)
            self._stream.write(f"\r[{bar}] {text} ")
            self._drawn = True
        else:
            self._stream.write(f"{self._label}: {text}\n")
        self._stream.flush()

    def done(self, position: int, messages: int) -> None:
        self.update(position, messages, force=True)
        if self._tty and self._drawn:
            self._stream.write("\n")
            self._stream.flush()


# -- import ------------------------------------------------------------------------------


@frozen
class _Ready:
    """
    A message checked, parsed and written, ready to be filed.
    """

    item: Item
    raw: bytes
    blob_id: str
    parsed: dict[str, Any]
    received_at: int
    no_headers: bool


class _Written:
    """
    The blob store for a message whose bytes are already written (see
    L{jmapd.ingest.delivery}): C{put} writes only if they went missing
    since (L{jmapd.storage.emails.ingest} puts them back then).
    """

    def __init__(self, store: Any, blob_id: str) -> None:
        self._store = store
        self._blob_id = blob_id

    def put(self, data: bytes) -> str:
        if not self._store.exists(self._blob_id):
            return str(self._store.put(data))
        return self._blob_id

    def exists(self, blob_id: str) -> bool:
        return bool(self._store.exists(blob_id))


def _received_from_headers(parsed: dict[str, Any]) -> int | None:
    for header in parsed.get("headers") or ():
        if header["name"].lower() == "received":
            _, _, when = header["value"].rpartition(";")
            try:
                parsed_when = parsedate_to_datetime(" ".join(when.split()))
            except (TypeError, ValueError, IndexError):
                return None
            if parsed_when.tzinfo is None:
                return None
            return int(parsed_when.timestamp() * 1000)
    return None


class Importer:
    """
    One import into one account (see the module docstring).

    @param database: the L{jmapd.storage.database.Database} (used with
        C{run_sync}).
    @param blobs: the blob store.
    @param config: the configuration (mail-max-size, Mailbox limits).
    @param target: the Mailbox path everything goes under (C{--mailbox}),
        or C{None}.
    """

    def __init__(self, database: Any, blobs: Any, config: Any, account_id: str, target: tuple[str, ...] | None,
                 now: Callable[[], float] = time.time) -> None:
        self._database = database
        self._blobs = blobs
        self._config = config
        self._account_id = account_id
        self._target = target
        self._now = now
        self._mailbox_ids: dict[tuple[str, ...], str | None] = {}
        self._this_run: set[str] = set()
        self.summary = Summary()

    def run(self, items: Iterator[Item], progress: Progress | None = None) -> Summary:
        """
        File C{items}.

        @raise Interrupted: on Ctrl-C, with the summary of what was filed.
        """
        batch: list[Item] = []
        size = 0
        position = 0
        try:
            for item in items:
                position = item.position
                batch.append(item)
                size += len(item.data)
                if len(batch) >= BATCH or size >= BATCH_BYTES:
                    self._batch(batch)
                    batch, size = [], 0
                    if progress is not None:
                        progress.update(position, self.summary.seen)
            if batch:
                self._batch(batch)
        except KeyboardInterrupt:
            if progress is not None:
                progress.done(position, self.summary.seen)
            raise Interrupted(self.summary) from None
        if progress is not None:
            progress.done(position, self.summary.seen)
        return self.summary

    def _batch(self, items: list[Item]) -> None:
        summary = self.summary
        ready: list[_Ready] = []
        candidates: list[Item] = []
        limit = self._config.mail_max_size
        for item in items:
            if item.skip is not None and not item.data:
                summary.refused.append((item.where, item.skip))
            elif item.skip is not None:
                summary.skipped.append((item.where, item.skip))
            elif not item.data.strip():
                summary.refused.append((item.where, "the message is empty"))
            elif len(item.data) > limit:
                summary.refused.append(
                    (item.where, f"the message is {len(item.data)} octets; mail-max-size is {limit}")
                )
            else:
                candidates.append(item)
        # Known content needs neither a parse nor a blob write.
        known = self._database.run_sync(self._known, [blob_id_of(item.data) for item in candidates])
        for item in candidates:
            blob_id = blob_id_of(item.data)
            if blob_id in known:
                ready.append(_Ready(item, item.data, blob_id, {}, 0, False))
                continue
            try:
                parsed = parse_message(item.data)
            except Exception as error:
                summary.refused.append((item.where, f"cannot be parsed: {type(error).__name__}: {error}"))
                continue
            received_at = item.received_at
            if received_at is None:
                received_at = _received_from_headers(parsed)
            if received_at is None and parsed.get("sentAt"):
                received_at = emails.parse_date_ms(parsed["sentAt"])
            if received_at is None:
                received_at = int(self._now() * 1000)
            self._blobs.put(item.data)
            ready.append(_Ready(item, item.data, blob_id, parsed, received_at, not parsed.get("headers")))
        if ready:
            self._database.run_sync(self._file, ready, write=True)

    def _known(self, txn: Any, blob_ids: list[str]) -> set[str]:
        return {
            blob_id
            for blob_id in set(blob_ids)
            if imports.find_imported(txn, self._account_id, blob_id) is not None
            or emails.find_blob_email(txn, self._account_id, blob_id) is not None
        }

    def _file(self, txn: Any, ready: list[_Ready]) -> None:
        summary = self.summary
        account_id = self._account_id
        now = self._now()
        created_names: list[str] = []
        counts = [0, 0]
        skipped: list[tuple[str, str]] = []
        refused: list[tuple[str, str]] = []
        raw: list[tuple[str, str]] = []
        for entry in ready:
            item = entry.item
            mailbox_id, problem = self._mailbox(txn, item.folder, created_names)
            if mailbox_id is None:
                refused.append((item.where, problem or "no Mailbox"))
                continue
            earlier = imports.find_imported(txn, account_id, entry.blob_id)
            if earlier is not None:
                existing = txn.fetchvalue("SELECT id FROM emails WHERE account_id = ? AND id = ?", (account_id, earlier))
                # A copy in another folder of this import joins that
                # Mailbox; what an earlier run imported stays as the user
                # left it.
                if existing is not None and entry.blob_id in self._this_run and self._add_to(txn, existing, mailbox_id):
                    counts[1] += 1
                else:
                    skipped.append((item.where, "imported before"))
                continue
            found = txn.fetchvalue(
                "SELECT id FROM emails WHERE account_id = ? AND blob_id = ? ORDER BY id LIMIT 1",
                (account_id, entry.blob_id),
            )
            if found is not None:
                imports.record_imported(txn, account_id, entry.blob_id, found)
                if self._add_to(txn, found, mailbox_id):
                    counts[1] += 1
                else:
                    skipped.append((item.where, "already in the account"))
                continue
            keywords = sorted(k.lower() for k in item.keywords)
            created = emails.ingest(
                txn, _Written(self._blobs, entry.blob_id), account_id, entry.raw, [mailbox_id], keywords, entry.received_at, now,
                parsed=entry.parsed,
            )
            imports.record_imported(txn, account_id, entry.blob_id, created.id)
            self._this_run.add(entry.blob_id)
            counts[0] += 1
            if entry.no_headers:
                raw.append((item.where, "no header fields: stored as it is"))
        # Only a committed transaction counts.
        summary.imported += counts[0]
        summary.added += counts[1]
        summary.skipped.extend(skipped)
        summary.refused.extend(refused)
        summary.raw.extend(raw)
        summary.mailboxes_created.extend(created_names)

    def _add_to(self, txn: Any, email_id: str, mailbox_id: str) -> bool:
        current = emails.get_mailbox_ids(txn, self._account_id, [email_id])[email_id]
        if mailbox_id in current:
            return False
        emails.update_email(txn, self._account_id, email_id, mailbox_ids=[*current, mailbox_id])
        return True

    def _mailbox(self, txn: Any, folder: tuple[str, ...], created: list[str]) -> tuple[str | None, str | None]:
        """
        The id of the Mailbox C{folder} goes to, created (with its
        parents) when missing; or C{None} and why not.
        """
        if self._target is not None:
            path = self._target + folder
        elif folder and folder[0].lower() == "inbox":
            path = ("INBOX",) + folder[1:]
        else:
            path = folder or ("INBOX",)
        # A Mailbox name is Net-Unicode, so NFC (RFC 8621 section 2), as
        # Mailbox/set stores it; file names need not be (macOS writes NFD).
        path = tuple(unicodedata.normalize("NFC", name) for name in path)
        if path in self._mailbox_ids:
            cached = self._mailbox_ids[path]
            if cached is not None and mailboxes.mailbox_exists(txn, self._account_id, cached):
                return cached, None
        parent: str | None = None
        # The names of the Mailboxes on the way, as they are (an existing
        # Inbox may be called "INBOX" or "Posteingang"), for the summary.
        names: list[str] = []
        for depth in range(1, len(path) + 1):
            name = path[depth - 1]
            every = mailboxes.get_mailboxes(txn, self._account_id)
            if depth == 1 and name.upper() == "INBOX" and self._target is None:
                mailbox_id = mailboxes.find_by_role(txn, self._account_id, "inbox")
                if mailbox_id is not None:
                    parent = mailbox_id
                    names.extend(m.name for m in every if m.id == mailbox_id)
                    continue
                name = "Inbox"
            siblings = [m for m in every if m.parent_id == parent]
            match = [m for m in siblings if m.name == name] or [m for m in siblings if m.name.lower() == name.lower()]
            if match:
                parent = match[0].id
                names.append(match[0].name)
                continue
            problem = self._cannot_create(txn, name, depth)
            if problem is not None:
                return None, problem
            role = "inbox" if depth == 1 and name == "Inbox" and self._target is None else None
            parent = mailboxes.add_mailbox(txn, self._account_id, name, parent_id=parent, role=role).id
            names.append(name)
            created.append("/".join(names))
        self._mailbox_ids[path] = parent
        return parent, None

    def _cannot_create(self, txn: Any, name: str, depth: int) -> str | None:
        config = self._config
        if not name.strip() or len(name.encode("utf-8")) > config.mailbox_name_max_len:
            return f"cannot create a Mailbox named {name!r} (empty, or longer than mailbox-name-max-len)"
        if any(unicodedata.category(c) == "Cc" for c in name):
            # Net-Unicode has no control characters (RFC 8621 section 2,
            # RFC 5198); Mailbox/set refuses them too.
            return f"cannot create a Mailbox named {name!r}: it has control characters"
        if depth > config.mailbox_max_depth:
            return f"cannot create Mailbox {name!r}: deeper than mailbox-max-depth ({config.mailbox_max_depth})"
        if mailboxes.count_mailboxes(txn, self._account_id) >= config.mailbox_max_total:
            return f"cannot create Mailbox {name!r}: the account has mailbox-max-total Mailboxes"
        return None


def mailbox_path(name: str) -> tuple[str, ...]:
    """
    A C{--mailbox} argument (C{Archive/2020}) as a Mailbox path.
    """
    return tuple(part for part in name.split("/") if part)


def source(path: str, target: tuple[str, ...] | None) -> tuple[Iterator[Item], int]:
    """
    The messages at C{path} (a Maildir or an mbox file) and the total of
    their positions, for progress.

    @raise ImportFailed: it is neither.
    """
    if os.path.isdir(path):
        if not maildir_folders(path):
            raise ImportFailed(f"{path} is a directory but not a Maildir (no cur/ and new/ in it or its folders)")
        return read_maildir(path), count_maildir(path)
    if not os.path.isfile(path):
        if os.path.exists(path):
            raise ImportFailed(f"{path} is neither an mbox file nor a Maildir directory")
        raise ImportFailed(f"{path}: no such file or directory")
    folder: tuple[str, ...] = ()
    if target is None:
        stem = os.path.basename(path)
        for suffix in _MBOX_SUFFIXES:
            if stem.lower().endswith(suffix):
                stem = stem[: -len(suffix)]
        folder = (stem,) if stem and stem.lower() != "inbox" else ()
    return read_mbox(path, folder), os.path.getsize(path)


def import_path(
    database: Any,
    blobs: Any,
    config: Any,
    account_name: str,
    path: str,
    mailbox: str | None = None,
    progress: Callable[[int], Progress] | None = None,
    now: Callable[[], float] = time.time,
) -> Summary:
    """
    Import the mbox file or Maildir at C{path} into the account named
    C{account_name}.

    @param progress: C{progress(total) -> Progress}, or C{None} for none.
    @raise ImportFailed: the path or the account cannot be used.
    """
    account = database.run_sync(accounts.get_account_by_name, account_name)
    if account is None:
        raise accounts.AccountNotFound(account_name)
    target = mailbox_path(mailbox) if mailbox is not None else None
    if target == ():
        raise ImportFailed("--mailbox needs a Mailbox name")
    items, total = source(path, target)
    importer = Importer(database, blobs, config, account.id, target, now)
    return importer.run(items, progress(total) if progress is not None else None)


# -- export ----------------------------------------------------------------------------------


def find_mailbox(txn: Any, account_id: str, path: tuple[str, ...]) -> str | None:
    """
    The id of the Mailbox at C{path} (names from the top; C{INBOX} or
    C{Inbox} alone is the inbox role), or C{None}.
    """
    if len(path) == 1 and path[0].lower() == "inbox":
        inbox = mailboxes.find_by_role(txn, account_id, "inbox")
        if inbox is not None:
            return inbox
    every = mailboxes.get_mailboxes(txn, account_id)
    parent: str | None = None
    for name in path:
        name = unicodedata.normalize("NFC", name)
        match = [m for m in every if m.parent_id == parent and m.name == name]
        if not match:
            return None
        parent = match[0].id
    return parent


def export_mbox(
    database: Any, blobs: Any, account_name: str, out_path: str, mailbox: str | None = None
) -> int:
    """
    Write the Emails of the account (of one Mailbox with C{mailbox}),
    oldest first, to an mbox file at C{out_path}.

    @return: how many were written.
    @raise ImportFailed: no such Mailbox, or C{out_path} cannot be written.
    """

    def select(txn: Any) -> list[tuple[str, str, int]]:
        account = accounts.get_account_by_name(txn, account_name)
        if account is None:
            raise accounts.AccountNotFound(account_name)
        if mailbox is None:
            rows = txn.fetchall(
                "SELECT id, blob_id, received_at FROM emails WHERE account_id = ? ORDER BY received_at, id",
                (account.id,),
            )
        else:
            mailbox_id = find_mailbox(txn, account.id, mailbox_path(mailbox))
            if mailbox_id is None:
                raise ImportFailed(f"account {account_name} has no Mailbox {mailbox!r}")
            rows = txn.fetchall(
                "SELECT e.id, e.blob_id, e.received_at FROM emails e JOIN email_mailboxes m"
                " ON m.account_id = e.account_id AND m.email_id = e.id"
                " WHERE e.account_id = ? AND m.mailbox_id = ? ORDER BY e.received_at, e.id",
                (account.id, mailbox_id),
            )
        return [(account.id, row[0], row[1], int(row[2])) for row in rows]  # type: ignore[misc]

    rows: list[Any] = database.run_sync(select)

    def messages() -> Iterator[tuple[bytes, int, list[str]]]:
        for start in range(0, len(rows), BATCH):
            chunk = rows[start : start + BATCH]
            account_id = chunk[0][0]
            keywords = database.run_sync(emails.get_keywords, account_id, [row[1] for row in chunk])
            for _, email_id, blob_id, received_at in chunk:
                yield blobs.read(blob_id), received_at, sorted(keywords.get(email_id, {}))

    return write_mbox_file(out_path, messages())


def write_mbox_file(out_path: str, messages: Iterable[tuple[bytes, int, Sequence[str]]]) -> int:
    """
    Write C{messages} (each its bytes, when it was received in ms, its
    keywords) to the mbox file C{out_path}, durably.

    @return: how many were written.
    @raise ImportFailed: C{out_path} cannot be written.
    """
    if os.path.isdir(out_path):
        raise ImportFailed(f"cannot write {out_path}: it is a directory")
    written = 0
    # Written beside the file and renamed: a write that fails leaves
    # what was there before.  The operator named out_path, so an error
    # names it, and the temporary file goes.
    tmp = out_path + ".tmp"
    try:
        with open(tmp, "wb") as out:
            for message, received_at, keywords in messages:
                write_mbox(out, message, received_at, keywords)
                written += 1
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, out_path)
    except BaseException as error:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(error, OSError) and error.filename in (tmp, out_path):
            raise ImportFailed(f"cannot write {out_path}: {error.strerror}") from None
        raise
    return written

