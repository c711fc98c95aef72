# -*- test-case-name: tests.bench.test_corpus -*-
"""
A seeded, deterministic mail corpus for one account.

Benchmarks compare servers, and across runs, so every server must get the
same messages and the same seed must give the same bytes: everything here
comes from one L{random.Random}, MIME boundaries and Message-IDs included
(the stdlib's C{email.generator} draws boundaries from the global random
state, so the messages are written by hand).

The shape is what a mailbox looks like to a list view and a search: about
30 % of the messages reply to an earlier one (C{In-Reply-To} and
C{References}, so servers build threads), a mix of text/plain,
multipart/alternative with HTML and multipart/mixed with attachments,
dates spread over one year, and bodies drawn from a fixed vocabulary with
a Zipf-like frequency so that a text search for L{SEARCH_WORD} has hits
and the expected hits are known (L{CorpusMessage.words}).
"""

from __future__ import annotations

import base64
import random
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.header import Header
from email.utils import format_datetime

from attrs import frozen

__all__ = ["CorpusMessage", "SEARCH_WORD", "generate", "DEFAULT_SEED"]

DEFAULT_SEED = 8

#: The first message's date; the corpus spans the following year.
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
SPAN = timedelta(days=365)

#: The domain of every address: reserved for documentation (RFC 2606).
DOMAIN = "example.test"

#: The word the search workload looks for.  It is in L{VOCABULARY}, and no
#: other vocabulary word shares its stem, so a server that stems
#: ("milestones" -> "milestone") finds exactly the messages that contain it.
SEARCH_WORD = "milestone"

# No word here is another one with a suffix (no "report" next to "reports"), for
# the reason given at SEARCH_WORD.
VOCABULARY = tuple(
    """
    the of and to in is for that on with as this be are from at by it we an or will have
    project meeting team please review update attached draft next week thanks schedule
    budget customer release deadline proposal contract invoice agenda minutes question
    server database network deploy feature issue ticket design document summary plan
    quarter revenue forecast office travel conference hotel flight lunch dinner call
    morning afternoon tomorrow friday monday office kitchen garden bicycle weather rain
    coffee tea note idea version change approve sign feedback comment follow up soon
    board vendor supplier shipment order delivery payment account balance audit policy
    security password access login backup storage migration outage incident root cause
    hiring interview candidate offer salary benefit holiday vacation leave sick family
    launch marketing campaign website blog newsletter survey result chart table slide
    figure estimate cost price discount margin profit loss target goal milestone risk
    dependency blocker priority status green yellow red complete pending open closed
    """.split()
)
# Zipf-like weights: the n-th word is drawn with weight 1/(n+1)**0.9.
_WEIGHTS = tuple(1.0 / (n + 1) ** 0.9 for n in range(len(VOCABULARY)))

_FIRST = ("Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy",
          "Mallory", "Niaj", "Olivia", "Peggy", "Rupert", "Sybil", "Trent", "Victor", "Walter", "Zoë",
          "José", "Renée", "Søren", "Łukasz")
_LAST = ("Smith", "Jones", "Garcia", "Müller", "Rossi", "Dubois", "Kowalski", "Nakamura", "Okafor",
         "Larsen", "Silva", "Novak")

#: Where messages are filed, by mailbox role, and how often.
MAILBOX_ROLES = (("inbox", 0.8), ("archive", 0.1), ("sent", 0.1))


@frozen
class CorpusMessage:
    """
    One message of the corpus and what it is filed as.

    @ivar raw: the RFC 5322 message, CRLF line ends.
    @ivar received_at: the receivedAt to import it with (UTC, RFC 3339).
    @ivar role: the role of the mailbox it goes into.
    @ivar keywords: the keywords to import it with.
    @ivar first_line: the first line of its text, which any bodyValue
        of its text or HTML body contains.
    @ivar words: the lower-case words of its subject and text, for the
        expected answers of text searches.
    """

    index: int
    raw: bytes
    received_at: str
    role: str
    keywords: tuple[str, ...]
    subject: str
    first_line: str
    message_id: str
    in_reply_to: str | None
    has_attachment: bool
    words: frozenset[str]


@frozen
class _Person:
    name: str
    address: str

    def header(self) -> str:
        try:
            self.name.encode("ascii")
            display = f'"{self.name}"'
        except UnicodeEncodeError:
            display = Header(self.name, "utf-8").encode()
        return f"{display} <{self.address}>"


def _people(rng: random.Random) -> list[_Person]:
    people: list[_Person] = []
    for first in _FIRST:
        last = rng.choice(_LAST)
        local = re.sub(r"[^a-z]", "", f"{first}.{last}".lower().encode("ascii", "ignore").decode()) or "x"
        people.append(_Person(f"{first} {last}", f"{local}{len(people)}@{DOMAIN}"))
    return people


def _words(rng: random.Random, count: int) -> list[str]:
    return rng.choices(VOCABULARY, weights=_WEIGHTS, k=count)


def _paragraphs(rng: random.Random) -> list[str]:
    paragraphs = []
    for _ in range(rng.randint(1, 6)):
        words = _words(rng, rng.randint(15, 80))
        words[0] = words[0].capitalize()
        paragraphs.append(" ".join(words) + ".")
    return paragraphs


def _wrap(text: str, width: int = 72) -> list[str]:
    lines: list[str] = []
    line = ""
    for word in text.split(" "):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    if line:
        lines.append(line)
    return lines


def _plain(paragraphs: list[str], signature: str) -> str:
    lines: list[str] = []
    for paragraph in paragraphs:
        lines.extend(_wrap(paragraph))
        lines.append("")
    lines.extend(["-- ", signature])
    return "\r\n".join(lines) + "\r\n"


def _html(paragraphs: list[str], signature: str) -> str:
    lines = ["<!DOCTYPE html>", "<html><head><meta charset=\"utf-8\"></head><body>"]
    for paragraph in paragraphs:
        lines.append("<p>")
        lines.extend(_wrap(paragraph))
        lines.append("</p>")
    lines.append(f"<p><i>{signature.encode('ascii', 'xmlcharrefreplace').decode()}</i></p>")
    lines.append("</body></html>")
    return "\r\n".join(lines) + "\r\n"


def _boundary(rng: random.Random) -> str:
    return f"=_b_{rng.getrandbits(128):032x}"


def _base64_lines(data: bytes) -> str:
    encoded = base64.b64encode(data).decode()
    return "\r\n".join(encoded[i:i + 76] for i in range(0, len(encoded), 76)) + "\r\n"


def _attachment(rng: random.Random) -> tuple[str, str]:
    """
    One attachment part (headers and body) without its boundary line.
    """
    if rng.random() < 0.5:
        size = rng.randint(2_000, 40_000)
        data = rng.randbytes(size)
        name = f"scan-{rng.randint(1000, 9999)}.pdf"
        return (f"Content-Type: application/pdf; name=\"{name}\"\r\n"
                f"Content-Disposition: attachment; filename=\"{name}\"\r\n"
                "Content-Transfer-Encoding: base64\r\n", _base64_lines(data))
    rows = ["id,amount,quantity"] + [
        f"{i},{rng.randint(1, 99999) / 100:.2f},{rng.randint(1, 500)}" for i in range(rng.randint(5, 200))
    ]
    name = f"export-{rng.randint(1000, 9999)}.csv"
    return (f"Content-Type: text/csv; charset=us-ascii; name=\"{name}\"\r\n"
            f"Content-Disposition: attachment; filename=\"{name}\"\r\n"
            "Content-Transfer-Encoding: 7bit\r\n", "\r\n".join(rows) + "\r\n")


def _multipart(subtype: str, boundary: str, parts: list[tuple[str, str]]) -> tuple[str, str]:
    body = ["This is a multi-part message in MIME format.\r\n"]
    for headers, content in parts:
        body.append(f"--{boundary}\r\n{headers}\r\n{content}")
    body.append(f"--{boundary}--\r\n")
    return f"Content-Type: multipart/{subtype}; boundary=\"{boundary}\"\r\n", "".join(body)


def _text_part(subtype: str, text: str) -> tuple[str, str]:
    return (f"Content-Type: text/{subtype}; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n", text)


def _pick_role(rng: random.Random) -> str:
    value = rng.random()
    for role, share in MAILBOX_ROLES:
        if value < share:
            return role
        value -= share
    return MAILBOX_ROLES[0][0]


def generate(count: int, seed: int = DEFAULT_SEED) -> Iterator[CorpusMessage]:
    """
    The corpus: C{count} messages, oldest first, spread over one year
    whatever the count.
    """
    rng = random.Random(seed)
    people = _people(rng)
    owner = _Person("Bench User", f"bench@{DOMAIN}")
    # Sorted offsets: a reply's parent is always an earlier, older message.
    span = int(SPAN.total_seconds())
    offsets = sorted(rng.randrange(span) for _ in range(count))
    sent: list[tuple[str, str, str, _Person]] = []  # message id, references, subject, sender
    for index in range(count):
        date = EPOCH + timedelta(seconds=offsets[index])
        sender = rng.choice(people)
        recipients = [owner] + rng.sample(people, rng.randint(0, 2))
        message_id = f"<{index}.{rng.getrandbits(64):016x}@{DOMAIN}>"
        in_reply_to = None
        references = ""
        if sent and rng.random() < 0.3:
            # Replies go mostly to recent messages, as conversations do.
            parent_index = max(0, len(sent) - 1 - int(rng.expovariate(1 / 40)))
            parent_id, parent_refs, parent_subject, parent_sender = sent[parent_index]
            in_reply_to = parent_id
            references = f"{parent_refs} {parent_id}".strip()
            subject = parent_subject if parent_subject.startswith("Re: ") else f"Re: {parent_subject}"
            recipients = [owner, parent_sender] if parent_sender != sender else [owner]
        else:
            subject_words = _words(rng, rng.randint(2, 7))
            subject = " ".join(subject_words).capitalize()
        paragraphs = _paragraphs(rng)
        shape = rng.random()
        has_attachment = False
        if shape < 0.5:
            content_headers, content = _text_part("plain", _plain(paragraphs, sender.name))
        else:
            alternative = _multipart("alternative", _boundary(rng), [
                _text_part("plain", _plain(paragraphs, sender.name)),
                _text_part("html", _html(paragraphs, sender.name)),
            ])
            if shape < 0.85:
                content_headers, content = alternative
            else:
                has_attachment = True
                attachments = [_attachment(rng) for _ in range(rng.randint(1, 2))]
                content_headers, content = _multipart("mixed", _boundary(rng), [alternative, *attachments])
        headers = [
            f"From: {sender.header()}",
            f"To: {', '.join(person.header() for person in recipients)}",
            f"Subject: {subject}",
            f"Date: {format_datetime(date)}",
            f"Message-ID: {message_id}",
        ]
        if in_reply_to is not None:
            headers.append(f"In-Reply-To: {in_reply_to}")
            headers.append(f"References: {references}")
        headers.append("MIME-Version: 1.0")
        raw = ("\r\n".join(headers) + "\r\n" + content_headers + "\r\n" + content).encode("utf-8")
        keywords = []
        if rng.random() < 0.7:
            keywords.append("$seen")
        if rng.random() < 0.05:
            keywords.append("$flagged")
        words = frozenset(re.findall(r"[a-z]+", (subject + " " + " ".join(paragraphs)).lower()))
        sent.append((message_id, references, subject, sender))
        yield CorpusMessage(
            index=index,
            raw=raw,
            received_at=date.strftime("%Y-%m-%dT%H:%M:%SZ"),
            role=_pick_role(rng),
            keywords=tuple(keywords),
            subject=subject,
            first_line=_wrap(paragraphs[0])[0],
            message_id=message_id,
            in_reply_to=in_reply_to,
            has_attachment=has_attachment,
            words=words,
        )
