"""
Tests for L{bench.workloads}: every workload accepts a right answer and
rejects wrong ones (a fast error must never count as a result), and an
unimplemented method is recognised as a reason to skip.
"""

from __future__ import annotations

import copy
from typing import Any

from twisted.trial.unittest import TestCase

from bench.corpus import SEARCH_WORD, generate
from bench.workloads import (
    LIST_LIMIT,
    Changes,
    CoreEcho,
    EmailGet50,
    ListView,
    Loaded,
    MailboxGet,
    ReadMessage,
    Search,
    WriteFlags,
    WrongAnswer,
    unsupported,
)

MAILBOXES = {"inbox": "mb-inbox", "archive": "mb-archive", "sent": "mb-sent"}


def loaded(count: int = 200) -> Loaded:
    messages = list(generate(count, seed=1))
    return Loaded("acc", dict(MAILBOXES), messages, [f"e{m.index}" for m in messages])


def item(state: Loaded, email_id: str) -> dict[str, Any]:
    """
    The list-view Email a correct server returns for C{email_id}.
    """
    m = state.by_id[email_id]
    return {"id": email_id, "threadId": f"t{m.index}", "mailboxIds": {MAILBOXES[m.role]: True},
            "keywords": {k: True for k in m.keywords}, "from": [{"name": "X", "email": "x@example.test"}],
            "to": [{"name": "Bench", "email": "bench@example.test"}], "subject": m.subject,
            "receivedAt": m.received_at, "size": len(m.raw), "preview": "...", "hasAttachment": m.has_attachment}


def answer(*responses: Any) -> dict[str, Any]:
    return {"methodResponses": list(responses), "sessionState": "s"}


class WorkloadTestMixin:
    """
    Each subclass gives the workload and a right answer to its first
    request; C{wrong} lists ways to spoil that answer.
    """

    workload: Any
    state: Loaded
    context: Any = None

    def right(self, request: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def wrong(self) -> list[Any]:
        return []

    def setUp(self) -> None:
        self.state = loaded()

    def check(self, response: Any) -> None:
        request = self.workload.requests(self.state, self.context)[0]
        self.workload.check(self.state, self.context, request, response)

    def test_right_answer(self) -> None:
        """
        The right answer passes the check.
        """
        request = self.workload.requests(self.state, self.context)[0]
        self.check(self.right(request))

    def test_method_error(self) -> None:
        """
        A method error instead of the answer is a wrong answer.
        """
        self.assertRaises(WrongAnswer, self.check, answer(["error", {"type": "serverFail"}, "0"]))

    def test_not_a_response(self) -> None:
        """
        Something that is not a JMAP Response is a wrong answer.
        """
        self.assertRaises(WrongAnswer, self.check, {"type": "urn:ietf:params:jmap:error:limit"})

    def test_wrong_answers(self) -> None:
        """
        Each spoiled version of the right answer is rejected.
        """
        request = self.workload.requests(self.state, self.context)[0]
        for spoil in self.wrong():
            response = copy.deepcopy(self.right(request))
            spoil(response)
            self.assertRaises(WrongAnswer, self.workload.check, self.state, self.context, request, response)


def args(response: dict[str, Any], n: int = 0) -> dict[str, Any]:
    return response["methodResponses"][n][1]  # type: ignore[no-any-return]


class CoreEchoTests(WorkloadTestMixin, TestCase):
    workload = CoreEcho()

    def right(self, request: dict[str, Any]) -> dict[str, Any]:
        return answer(["Core/echo", copy.deepcopy(CoreEcho.ARGUMENTS), "0"])

    def wrong(self) -> list[Any]:
        return [
            lambda r: args(r).update(extra=1),
            lambda r: args(r).pop("text"),
            lambda r: r["methodResponses"][0].__setitem__(2, "1"),
            lambda r: r["methodResponses"][0].__setitem__(0, "Core/echoed"),
            lambda r: r["methodResponses"].clear(),
        ]


class MailboxGetTests(WorkloadTestMixin, TestCase):
    workload = MailboxGet()

    def right(self, request: dict[str, Any]) -> dict[str, Any]:
        inbox = sum(1 for m in self.state.messages if m.role == "inbox")
        boxes = [{"id": MAILBOXES[role], "role": role, "totalEmails": inbox if role == "inbox" else 0}
                 for role in MAILBOXES]
        return answer(["Mailbox/get", {"accountId": "acc", "state": "1", "list": boxes, "notFound": []}, "0"])

    def wrong(self) -> list[Any]:
        return [
            lambda r: args(r)["list"].pop(0),
            lambda r: args(r)["list"][0].update(totalEmails=3),
            lambda r: args(r)["list"][1].update(role=None),
        ]


class ListViewTests(WorkloadTestMixin, TestCase):
    workload = ListView()

    def right(self, request: dict[str, Any]) -> dict[str, Any]:
        inbox = [(m.received_at, f"e{m.index}") for m in self.state.messages if m.role == "inbox"]
        ids = [email_id for _, email_id in sorted(inbox, reverse=True)[:LIST_LIMIT]]
        return answer(["Email/query", {"accountId": "acc", "ids": ids, "position": 0, "queryState": "q",
                                       "canCalculateChanges": False}, "q"],
                      ["Email/get", {"accountId": "acc", "state": "1", "list": [item(self.state, i) for i in ids],
                                     "notFound": []}, "g"])

    def wrong(self) -> list[Any]:
        def ascending(r: Any) -> None:
            args(r)["ids"].reverse()

        def archived(r: Any) -> None:
            other = next(f"e{m.index}" for m in self.state.messages if m.role == "archive")
            args(r)["ids"][0] = other

        return [
            ascending,
            archived,
            lambda r: args(r)["ids"].pop(),
            lambda r: args(r, 1)["list"].pop(),
            lambda r: args(r, 1)["list"][0].update(subject="Wrong"),
            lambda r: args(r, 1)["list"][1].update(receivedAt="2030-01-01T00:00:00Z"),
            lambda r: args(r, 1)["list"][2].update(hasAttachment=not args(r, 1)["list"][2]["hasAttachment"]),
            lambda r: args(r, 1)["list"][3].pop("preview"),
            lambda r: args(r, 1)["list"][4].update(mailboxIds={"mb-sent": True}),
            lambda r: args(r, 1)["list"][5].update(**{"from": []}),
            lambda r: r["methodResponses"].pop(),
        ]


class EmailGet50Tests(WorkloadTestMixin, TestCase):
    workload = EmailGet50()

    def right(self, request: dict[str, Any]) -> dict[str, Any]:
        ids = request["methodCalls"][0][1]["ids"]
        return answer(["Email/get", {"accountId": "acc", "state": "1", "list": [item(self.state, i) for i in ids],
                                     "notFound": []}, "0"])

    def test_fifty(self) -> None:
        """
        The request asks for 50 distinct Emails.
        """
        ids = self.workload.requests(self.state, None)[0]["methodCalls"][0][1]["ids"]
        self.assertEqual(len(set(ids)), 50)

    def wrong(self) -> list[Any]:
        return [
            lambda r: args(r)["list"].pop(),
            lambda r: args(r).update(notFound=["e1"]),
            lambda r: args(r)["list"][0].update(id="e9999"),
            lambda r: args(r)["list"][0].update(size=0),
        ]


class ReadMessageTests(WorkloadTestMixin, TestCase):
    workload = ReadMessage()

    def right(self, request: dict[str, Any]) -> dict[str, Any]:
        (email_id,) = request["methodCalls"][0][1]["ids"]
        m = self.state.by_id[email_id]
        email = {"id": email_id, "subject": m.subject, "textBody": [{"partId": "1", "type": "text/plain"}],
                 "bodyValues": {"1": {"value": f"{m.first_line}\r\nmore text\r\n", "isTruncated": False}}}
        return answer(["Email/get", {"accountId": "acc", "state": "1", "list": [email], "notFound": []}, "0"])

    def test_many_messages(self) -> None:
        """
        The requests cycle over many messages, not one cached answer.
        """
        self.assertEqual(len(self.workload.requests(self.state, None)), 64)

    def wrong(self) -> list[Any]:
        return [
            lambda r: args(r)["list"][0].update(bodyValues={}),
            lambda r: args(r)["list"][0]["bodyValues"]["1"].update(value="other text"),
            lambda r: args(r)["list"][0].update(id="e7"),
            lambda r: args(r)["list"][0].update(textBody=[]),
            lambda r: args(r).update(list=[]),
        ]


class SearchTests(WorkloadTestMixin, TestCase):
    workload = Search()

    def hits(self) -> list[str]:
        return [f"e{m.index}" for m in self.state.messages if SEARCH_WORD in m.words]

    def right(self, request: dict[str, Any]) -> dict[str, Any]:
        return answer(["Email/query", {"accountId": "acc", "ids": self.hits()[:LIST_LIMIT], "position": 0,
                                       "queryState": "q", "canCalculateChanges": False}, "0"])

    def wrong(self) -> list[Any]:
        miss = next(f"e{m.index}" for m in self.state.messages if SEARCH_WORD not in m.words)
        return [
            lambda r: args(r)["ids"].__setitem__(0, miss),
            lambda r: args(r)["ids"].pop(),
            lambda r: args(r).update(ids=[]),
        ]


class WriteFlagsTests(WorkloadTestMixin, TestCase):
    workload = WriteFlags()

    def right(self, request: dict[str, Any]) -> dict[str, Any]:
        (email_id,) = request["methodCalls"][0][1]["update"]
        return answer(["Email/set", {"accountId": "acc", "oldState": "1", "newState": "2",
                                     "updated": {email_id: None}}, "0"])

    def test_toggles(self) -> None:
        """
        The requests set $seen on some messages and clear it again.
        """
        patches = [next(iter(r["methodCalls"][0][1]["update"].values())) for r in
                   self.workload.requests(self.state, None)]
        self.assertIn({"keywords/$seen": True}, patches)
        self.assertIn({"keywords/$seen": None}, patches)

    def wrong(self) -> list[Any]:
        return [
            lambda r: args(r).update(updated={}),
            lambda r: args(r).update(updated=None, notUpdated={"e0": {"type": "notFound"}}),
        ]


class ChangesTests(WorkloadTestMixin, TestCase):
    workload = Changes()
    context = {"since": "10", "changed": ["e1", "e2"]}

    def right(self, request: dict[str, Any]) -> dict[str, Any]:
        return answer(["Email/changes", {"accountId": "acc", "oldState": "10", "newState": "12",
                                         "hasMoreChanges": False, "created": [], "updated": ["e2", "e1"],
                                         "destroyed": []}, "0"])

    def wrong(self) -> list[Any]:
        return [
            lambda r: args(r).update(oldState="9"),
            lambda r: args(r).update(updated=["e1"]),
            lambda r: args(r).update(hasMoreChanges=True),
            lambda r: args(r).update(destroyed=["e3"]),
        ]


class UnsupportedTests(TestCase):
    def test_unknown_method(self) -> None:
        """
        unknownMethod for a call is a skip naming the method.
        """
        request = {"methodCalls": [["Email/query", {}, "q"], ["Email/get", {}, "g"]]}
        response = answer(["error", {"type": "unknownMethod"}, "q"], ["error", {"type": "invalidResultReference"}, "g"])
        self.assertEqual(unsupported(request, response), "Email/query not supported (unknownMethod)")

    def test_other_errors_are_not_skips(self) -> None:
        """
        Any other error is not a reason to skip (the check fails it).
        """
        request = {"methodCalls": [["Email/query", {}, "q"]]}
        self.assertIsNone(unsupported(request, answer(["error", {"type": "serverFail"}, "q"])))
        self.assertIsNone(unsupported(request, answer(["Email/query", {"ids": []}, "q"])))
