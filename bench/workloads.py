# -*- test-case-name: tests.bench.test_workloads -*-
"""
The workloads: each one JMAP request shape, and a check of every answer.

A benchmark that counts fast errors measures nothing, so each workload
knows what the right answer is (from the corpus it loaded, see
L{Loaded}) and L{Workload.check} raises L{WrongAnswer} for anything else.
A target that does not implement a method (C{unknownMethod}, or a
request-level C{unknownCapability}) is not a failure but a skip with that
reason (L{unsupported}), so workloads for methods a server lacks today
light up by themselves once it has them.

Adding a workload: subclass L{Workload}, give it a C{name}, C{using},
C{requests} and C{check} (and C{setup} when it needs data made first), and
add it to L{WORKLOADS}.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any, ClassVar

from attrs import define, field

from bench.corpus import SEARCH_WORD, CorpusMessage
from bench.targets import CORE, MAIL, Session

__all__ = ["Loaded", "Workload", "WrongAnswer", "WORKLOADS", "unsupported", "by_name"]

#: The properties of a list view (a mail client's message list).
LIST_PROPERTIES = ("id", "threadId", "mailboxIds", "keywords", "from", "to", "subject", "receivedAt", "size",
                   "preview", "hasAttachment")

LIST_LIMIT = 50


class WrongAnswer(Exception):
    """
    The target answered, but not correctly.
    """


@define
class Loaded:
    """
    A target's account after the corpus was loaded: what the checks
    compare answers with.

    @ivar mailboxes: mailbox id by role.
    @ivar email_ids: the Email id of each corpus message, by index.
    """

    account_id: str
    mailboxes: dict[str, str]
    messages: Sequence[CorpusMessage]
    email_ids: list[str]
    by_id: dict[str, CorpusMessage] = field(init=False)
    #: Expected answers, computed once: the checks run on every response,
    #: in the load client, whose CPU time the servers would otherwise lose.
    _memo: dict[str, Any] = field(init=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        self.by_id = {email_id: message for email_id, message in zip(self.email_ids, self.messages, strict=True)}

    def newest_inbox_dates(self) -> list[str]:
        """
        The receivedAt of the LIST_LIMIT newest Inbox messages, newest first.
        """
        if "newest" not in self._memo:
            dates = sorted((m.received_at for m in self.messages if m.role == "inbox"), reverse=True)
            self._memo["newest"] = dates[:LIST_LIMIT]
        return self._memo["newest"]  # type: ignore[no-any-return]

    def inbox_count(self) -> int:
        if "inbox" not in self._memo:
            self._memo["inbox"] = sum(1 for m in self.messages if m.role == "inbox")
        return self._memo["inbox"]  # type: ignore[no-any-return]

    def hits(self, word: str) -> set[str]:
        """
        The ids of the Emails whose subject or text has C{word}.
        """
        key = f"hits:{word}"
        if key not in self._memo:
            self._memo[key] = {email_id for email_id, m in self.by_id.items() if word in m.words}
        return self._memo[key]  # type: ignore[no-any-return]

    def ids_in(self, role: str) -> list[str]:
        return [email_id for email_id, message in zip(self.email_ids, self.messages, strict=True)
                if message.role == role]

    def spread(self, count: int) -> list[str]:
        """
        C{count} Email ids spread evenly over the corpus (old and new).
        """
        count = min(count, len(self.email_ids))
        step = len(self.email_ids) / count if count else 1
        return [self.email_ids[int(i * step)] for i in range(count)]


def unsupported(request: dict[str, Any], response: dict[str, Any]) -> str | None:
    """
    If C{response} says a method of C{request} is not implemented, the
    reason to skip with, else C{None}.
    """
    names = {call_id: name for name, _, call_id in request.get("methodCalls", [])}
    for name, arguments, call_id in response.get("methodResponses", []):
        if name == "error" and isinstance(arguments, dict) and arguments.get("type") == "unknownMethod":
            return f"{names.get(call_id, '?')} not supported (unknownMethod)"
    return None


def method_responses(response: Any, names: Sequence[str]) -> list[dict[str, Any]]:
    """
    The arguments of the method responses, which must be exactly
    C{names} in order; a method error is a L{WrongAnswer} naming its type.
    """
    if not isinstance(response, dict) or not isinstance(response.get("methodResponses"), list):
        raise WrongAnswer(f"not a JMAP Response: {str(response)[:200]}")
    responses = response["methodResponses"]
    for entry in responses:
        if isinstance(entry, list) and len(entry) == 3 and entry[0] == "error":
            raise WrongAnswer(f"method error {entry[1].get('type')}: {str(entry[1])[:200]}")
    got = [entry[0] if isinstance(entry, list) and entry else None for entry in responses]
    if got != list(names):
        raise WrongAnswer(f"expected responses {list(names)}, got {got}")
    arguments = [entry[1] for entry in responses]
    if not all(isinstance(a, dict) for a in arguments):
        raise WrongAnswer("method response arguments are not objects")
    return arguments


def _expect(condition: object, message: str) -> None:
    if not condition:
        raise WrongAnswer(message)


class Workload:
    """
    One request shape.  C{requests} returns the request bodies the load
    connections cycle through (one for most workloads; several where each
    request must touch another message).
    """

    name: ClassVar[str]
    needs_mail: ClassVar[bool] = True
    using: ClassVar[tuple[str, ...]] = (CORE, MAIL)
    #: Whether running it changes the account (so it runs after the rest).
    writes: ClassVar[bool] = False

    async def setup(self, session: Session, loaded: Loaded | None) -> Any:
        """
        Make what the requests need on the target; the result is passed
        to C{requests} and C{check} as C{context}.
        """
        return None

    def requests(self, loaded: Loaded | None, context: Any) -> list[dict[str, Any]]:
        raise NotImplementedError

    def check(self, loaded: Loaded | None, context: Any, request: dict[str, Any], response: Any) -> None:
        raise NotImplementedError

    def request(self, calls: list[Any]) -> dict[str, Any]:
        return {"using": list(self.using), "methodCalls": calls}


class CoreEcho(Workload):
    name = "core_echo"
    needs_mail = False
    using = (CORE,)

    ARGUMENTS: ClassVar[dict[str, Any]] = {"hello": True, "numbers": [1, 2, 3], "text": "benchmark"}

    def requests(self, loaded: Loaded | None, context: Any) -> list[dict[str, Any]]:
        return [self.request([["Core/echo", self.ARGUMENTS, "0"]])]

    def check(self, loaded: Loaded | None, context: Any, request: dict[str, Any], response: Any) -> None:
        (echoed,) = method_responses(response, ["Core/echo"])
        _expect(echoed == self.ARGUMENTS, f"Core/echo answered {echoed!r}")
        _expect(response["methodResponses"][0][2] == "0", "wrong method call id")


class MailboxGet(Workload):
    name = "mailbox_get"

    def requests(self, loaded: Loaded | None, context: Any) -> list[dict[str, Any]]:
        assert loaded is not None
        return [self.request([["Mailbox/get", {"accountId": loaded.account_id, "ids": None}, "0"]])]

    def check(self, loaded: Loaded | None, context: Any, request: dict[str, Any], response: Any) -> None:
        assert loaded is not None
        (got,) = method_responses(response, ["Mailbox/get"])
        boxes = {box.get("id"): box for box in got.get("list", []) if isinstance(box, dict)}
        for role, mailbox_id in loaded.mailboxes.items():
            _expect(mailbox_id in boxes, f"Mailbox/get lacks the {role} mailbox {mailbox_id}")
            _expect(boxes[mailbox_id].get("role") == role, f"mailbox {mailbox_id} lost its role {role}")
        inbox = boxes[loaded.mailboxes["inbox"]]
        expected = loaded.inbox_count()
        _expect(inbox.get("totalEmails") == expected,
                f"Inbox totalEmails is {inbox.get('totalEmails')}, expected {expected}")


def _check_list_item(loaded: Loaded, item: Any) -> None:
    """
    One Email of a list view against the corpus message it was imported
    from (keywords are not compared: write_flags changes them).
    """
    _expect(isinstance(item, dict), "an Email is not an object")
    message = loaded.by_id.get(item.get("id"))
    _expect(message is not None, f"unknown Email id {item.get('id')!r}")
    assert message is not None
    missing = [p for p in LIST_PROPERTIES if p not in item]
    _expect(not missing, f"Email {item['id']} lacks {missing}")
    _expect(isinstance(item["threadId"], str) and item["threadId"], "threadId is not a string")
    _expect(isinstance(item["mailboxIds"], dict) and loaded.mailboxes[message.role] in item["mailboxIds"],
            f"Email {item['id']} is not in its {message.role} mailbox")
    _expect(isinstance(item["keywords"], dict), "keywords is not an object")
    _expect(item["subject"] == message.subject, f"subject {item['subject']!r} != {message.subject!r}")
    _expect(str(item["receivedAt"])[:19] == message.received_at[:19],
            f"receivedAt {item['receivedAt']} != {message.received_at}")
    _expect(isinstance(item["size"], int) and item["size"] > 0, "size is not a positive integer")
    _expect(isinstance(item["preview"], str), "preview is not a string")
    _expect(item["hasAttachment"] is message.has_attachment,
            f"hasAttachment {item['hasAttachment']} for Email {item['id']}")
    senders = item["from"]
    _expect(isinstance(senders, list) and len(senders) == 1 and "@" in str(senders[0].get("email")),
            f"from is {senders!r}")
    _expect(isinstance(item["to"], list) and item["to"], "to is empty")


class ListView(Workload):
    name = "list_view"

    def requests(self, loaded: Loaded | None, context: Any) -> list[dict[str, Any]]:
        assert loaded is not None
        return [self.request([
            ["Email/query", {"accountId": loaded.account_id, "filter": {"inMailbox": loaded.mailboxes["inbox"]},
                             "sort": [{"property": "receivedAt", "isAscending": False}], "limit": LIST_LIMIT},
             "q"],
            ["Email/get", {"accountId": loaded.account_id, "#ids": {"resultOf": "q", "name": "Email/query",
                                                                    "path": "/ids"},
                           "properties": list(LIST_PROPERTIES)}, "g"],
        ])]

    def check(self, loaded: Loaded | None, context: Any, request: dict[str, Any], response: Any) -> None:
        assert loaded is not None
        query, got = method_responses(response, ["Email/query", "Email/get"])
        ids: Any = query.get("ids")
        _expect(isinstance(ids, list), "Email/query has no ids")
        expected = loaded.newest_inbox_dates()
        _expect(len(ids) == len(expected), f"Email/query returned {len(ids)} ids, expected {len(expected)}")
        _expect(len(set(ids)) == len(ids), "Email/query returned an id twice")
        dates = []
        for email_id in ids:
            message = loaded.by_id.get(email_id)
            _expect(message is not None and message.role == "inbox", f"{email_id} is not an Inbox Email")
            assert message is not None
            dates.append(message.received_at)
        _expect(dates == expected, "Email/query ids are not the newest Inbox Emails, newest first")
        listed: Any = got.get("list")
        _expect(isinstance(listed, list) and [item.get("id") for item in listed if isinstance(item, dict)]
                and {item.get("id") for item in listed} == set(ids), "Email/get did not return the queried ids")
        for item in listed:
            _check_list_item(loaded, item)


class EmailGet50(Workload):
    name = "email_get_50"

    def requests(self, loaded: Loaded | None, context: Any) -> list[dict[str, Any]]:
        assert loaded is not None
        return [self.request([["Email/get", {"accountId": loaded.account_id, "ids": loaded.spread(50),
                                             "properties": list(LIST_PROPERTIES)}, "0"]])]

    def check(self, loaded: Loaded | None, context: Any, request: dict[str, Any], response: Any) -> None:
        assert loaded is not None
        (got,) = method_responses(response, ["Email/get"])
        wanted = request["methodCalls"][0][1]["ids"]
        listed: Any = got.get("list")
        _expect(isinstance(listed, list) and len(listed) == len(wanted), "Email/get returned too few Emails")
        _expect({item.get("id") for item in listed} == set(wanted), "Email/get returned other ids")
        _expect(not got.get("notFound"), f"Email/get notFound {got.get('notFound')}")
        for item in listed:
            _check_list_item(loaded, item)


class ReadMessage(Workload):
    name = "read_message"

    def requests(self, loaded: Loaded | None, context: Any) -> list[dict[str, Any]]:
        assert loaded is not None
        return [self.request([["Email/get", {"accountId": loaded.account_id, "ids": [email_id],
                                             "fetchAllBodyValues": True}, "0"]])
                for email_id in loaded.spread(64)]

    def check(self, loaded: Loaded | None, context: Any, request: dict[str, Any], response: Any) -> None:
        assert loaded is not None
        (got,) = method_responses(response, ["Email/get"])
        (wanted,) = request["methodCalls"][0][1]["ids"]
        listed: Any = got.get("list")
        _expect(isinstance(listed, list) and len(listed) == 1 and listed[0].get("id") == wanted,
                f"Email/get did not return {wanted}")
        email = listed[0]
        message = loaded.by_id[wanted]
        values: Any = email.get("bodyValues")
        _expect(isinstance(values, dict) and values, "no bodyValues")
        _expect(isinstance(email.get("textBody"), list) and email["textBody"], "no textBody")
        texts = [" ".join(str(v.get("value", "")).split()) for v in values.values() if isinstance(v, dict)]
        _expect(any(message.first_line in text for text in texts),
                f"no bodyValue of {wanted} contains {message.first_line!r}")
        _expect(email.get("subject") == message.subject, "wrong subject")


class Search(Workload):
    name = "search"

    def requests(self, loaded: Loaded | None, context: Any) -> list[dict[str, Any]]:
        assert loaded is not None
        return [self.request([["Email/query", {
            "accountId": loaded.account_id, "filter": {"text": SEARCH_WORD},
            "sort": [{"property": "receivedAt", "isAscending": False}], "limit": LIST_LIMIT}, "0"]])]

    def check(self, loaded: Loaded | None, context: Any, request: dict[str, Any], response: Any) -> None:
        assert loaded is not None
        (query,) = method_responses(response, ["Email/query"])
        ids: Any = query.get("ids")
        _expect(isinstance(ids, list), "Email/query has no ids")
        hits = loaded.hits(SEARCH_WORD)
        _expect(len(ids) == min(LIST_LIMIT, len(hits)), f"{len(ids)} hits, expected {min(LIST_LIMIT, len(hits))}")
        wrong = [email_id for email_id in ids if email_id not in hits]
        _expect(not wrong, f"Emails without {SEARCH_WORD!r} found: {wrong[:3]}")


class WriteFlags(Workload):
    """
    Toggle $seen: each request sets or clears it on one of 64 messages,
    so that (almost) every request is a real change.
    """

    name = "write_flags"
    writes = True

    def requests(self, loaded: Loaded | None, context: Any) -> list[dict[str, Any]]:
        assert loaded is not None
        ids = loaded.spread(64)
        return [self.request([["Email/set", {"accountId": loaded.account_id, "update": {
            email_id: {"keywords/$seen": True if turn == 0 else None}}}, "0"]])
            for turn in (0, 1) for email_id in ids]

    def check(self, loaded: Loaded | None, context: Any, request: dict[str, Any], response: Any) -> None:
        (result,) = method_responses(response, ["Email/set"])
        (email_id,) = request["methodCalls"][0][1]["update"]
        _expect(not result.get("notUpdated"), f"notUpdated: {result.get('notUpdated')}")
        _expect(isinstance(result.get("updated"), dict) and email_id in result["updated"],
                f"{email_id} not in updated")


#: How many Emails the changes workload changes after the state it asks
#: changes since.
CHANGED = 10


class Changes(Workload):
    """
    Email/changes from a recent state: the state before CHANGED Emails got a
    new keyword in setup.  Every request asks for the same changes.
    """

    name = "changes"

    async def setup(self, session: Session, loaded: Loaded | None) -> Any:
        assert loaded is not None
        (get,) = await session.api([["Email/get", {"accountId": loaded.account_id, "ids": []}, "0"]])
        if get[0] == "error":
            return {"error": get[1]}
        since = get[1]["state"]
        changed = loaded.spread(CHANGED)
        # A keyword no Email has yet: a server need not report an update
        # that changed nothing (setting $flagged where it was set already).
        keyword = f"bench{secrets.token_hex(4)}"
        update = {email_id: {f"keywords/{keyword}": True} for email_id in changed}
        (result,) = await session.api([["Email/set", {"accountId": loaded.account_id, "update": update}, "0"]])
        if result[0] == "error" or result[1].get("notUpdated"):
            return {"error": result[1]}
        return {"since": since, "changed": changed}

    def requests(self, loaded: Loaded | None, context: Any) -> list[dict[str, Any]]:
        assert loaded is not None
        if "error" in context:
            # The probe shows the setup's error (or unknownMethod).
            return [self.request([["Email/changes", {"accountId": loaded.account_id, "sinceState": ""}, "0"]])]
        return [self.request([["Email/changes", {"accountId": loaded.account_id, "sinceState": context["since"],
                                                 "maxChanges": 1000}, "0"]])]

    def check(self, loaded: Loaded | None, context: Any, request: dict[str, Any], response: Any) -> None:
        _expect("error" not in context, f"setup failed: {context.get('error')}")
        (changes,) = method_responses(response, ["Email/changes"])
        _expect(changes.get("oldState") == context["since"], f"oldState {changes.get('oldState')}")
        _expect(changes.get("hasMoreChanges") is False, "hasMoreChanges is not false")
        reported = set(changes.get("created") or []) | set(changes.get("updated") or [])
        missing = set(context["changed"]) - reported
        _expect(not missing, f"changes lack {sorted(missing)[:3]}")
        _expect(not changes.get("destroyed"), "destroyed Emails reported")
        _expect(isinstance(changes.get("newState"), str), "no newState")


WORKLOADS: tuple[Workload, ...] = (
    CoreEcho(), MailboxGet(), ListView(), EmailGet50(), ReadMessage(), Search(), Changes(), WriteFlags(),
)


def by_name(names: Sequence[str] | None) -> list[Workload]:
    if not names:
        return list(WORKLOADS)
    known = {w.name: w for w in WORKLOADS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown workloads {unknown}; known: {sorted(known)}")
    return [known[n] for n in names]
