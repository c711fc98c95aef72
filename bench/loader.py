# -*- test-case-name: tests.bench.test_loader -*-
"""
Load the corpus into a target's account through JMAP: upload each
message (RFC 8620 section 6.1) and Email/import them in batches (RFC 8621
section 4.8), which every JMAP mail server supports; LMTP ingest is
measured by its own workload.

The time this takes is the import throughput the report shows
(messages/s through upload + Email/import).  When several targets are
loaded, they take turns one chunk at a time (A, B, A, B) so that noise on
the machine hits them alike, as for the other workloads.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import orjson
from attrs import define, field

from bench.corpus import MAILBOX_ROLES, CorpusMessage
from bench.http import Connection
from bench.targets import CORE, MAIL, Session, TargetError
from bench.workloads import Loaded

__all__ = ["Loader", "ensure_mailboxes"]

_NAMES = {"inbox": "Inbox", "archive": "Archive", "sent": "Sent"}


async def ensure_mailboxes(session: Session) -> dict[str, str]:
    """
    The id of a mailbox for each role the corpus files messages under,
    creating those that are missing; the account must hold no Email yet.
    """
    responses = await session.api([["Mailbox/get", {"accountId": session.account_id, "ids": None}, "0"]])
    name, result, _ = responses[0]
    if name == "error":
        raise TargetError(f"{session.name}: Mailbox/get failed: {result}")
    boxes = result["list"]
    total = sum(box.get("totalEmails") or 0 for box in boxes)
    if total:
        raise TargetError(f"{session.name}: the account already holds {total} Emails; benchmarks need an empty one")
    roles = {box["role"]: box["id"] for box in boxes if box.get("role")}
    missing = [role for role, _ in MAILBOX_ROLES if role not in roles]
    if missing:
        create = {role: {"name": _NAMES[role], "role": role} for role in missing}
        responses = await session.api([["Mailbox/set", {"accountId": session.account_id, "create": create}, "0"]])
        name, result, _ = responses[0]
        if name == "error" or result.get("notCreated"):
            raise TargetError(f"{session.name}: cannot create mailboxes {missing}: {result}")
        for role in missing:
            roles[role] = result["created"][role]["id"]
    return {role: roles[role] for role, _ in MAILBOX_ROLES}


@define
class Loader:
    """
    Loads chunks of the corpus into one target over C{connections}
    parallel connections, C{batch} messages per Email/import.
    """

    session: Session
    mailboxes: dict[str, str]
    messages: Sequence[CorpusMessage]
    connections: int = 4
    batch: int = 10
    email_ids: list[str | None] = field(init=False)
    seconds: float = 0.0
    loaded: int = 0

    def __attrs_post_init__(self) -> None:
        self.email_ids = [None] * len(self.messages)

    @property
    def rate(self) -> float:
        return self.loaded / self.seconds if self.seconds else 0.0

    async def load(self, indices: range) -> None:
        """
        Import the messages with these indices.
        """
        batches = [list(indices[i:i + self.batch]) for i in range(0, len(indices), self.batch)]
        queue: asyncio.Queue[list[int]] = asyncio.Queue()
        for batch in batches:
            queue.put_nowait(batch)
        started = time.perf_counter()
        await asyncio.gather(*(self._worker(queue) for _ in range(min(self.connections, len(batches)))))
        self.seconds += time.perf_counter() - started
        self.loaded += len(indices)

    async def _worker(self, queue: asyncio.Queue[list[int]]) -> None:
        session = self.session
        connection = await Connection.open(session.host, session.port)
        try:
            while not queue.empty():
                batch = queue.get_nowait()
                emails = {}
                for index in batch:
                    message = self.messages[index]
                    response = await connection.request(session.upload_request(message.raw))
                    if response.status not in (200, 201):
                        raise TargetError(f"{session.name}: upload answered {response.status}: {response.body[:300]!r}")
                    emails[f"m{index}"] = {
                        "blobId": orjson.loads(response.body)["blobId"],
                        "mailboxIds": {self.mailboxes[message.role]: True},
                        "keywords": {keyword: True for keyword in message.keywords},
                        "receivedAt": message.received_at,
                    }
                body = orjson.dumps({"using": [CORE, MAIL], "methodCalls": [
                    ["Email/import", {"accountId": session.account_id, "emails": emails}, "0"]]})
                response = await connection.request(session.api_request(body))
                self._record(batch, response)
        finally:
            connection.close()

    def _record(self, batch: list[int], response: Any) -> None:
        name = self.session.name
        if response.status != 200:
            raise TargetError(f"{name}: Email/import answered {response.status}: {response.body[:300]!r}")
        method, result, _ = orjson.loads(response.body)["methodResponses"][0]
        if method != "Email/import":
            raise TargetError(f"{name}: Email/import failed: {str(result)[:300]}")
        if result.get("notCreated"):
            raise TargetError(f"{name}: Email/import notCreated: {str(result['notCreated'])[:300]}")
        created = result.get("created") or {}
        for index in batch:
            entry = created.get(f"m{index}")
            if not isinstance(entry, dict) or not entry.get("id"):
                raise TargetError(f"{name}: Email/import did not create message {index}")
            self.email_ids[index] = entry["id"]

    def result(self) -> Loaded:
        if any(email_id is None for email_id in self.email_ids):
            raise TargetError(f"{self.session.name}: not every message was loaded")
        return Loaded(self.session.account_id, self.mailboxes, self.messages,
                      [str(email_id) for email_id in self.email_ids])
