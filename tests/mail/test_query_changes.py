"""
Tests for Email/queryChanges (RFC 8621 section 4.5, RFC 8620 section 5.6)
in L{jmapd.mail.query}: applying the changes to an old result, as a
client does, must give the new result, for every kind of query and every
kind of change; and the errors.
"""

from __future__ import annotations

import random
from typing import Any

from jmapd.storage import changelog
from tests import pg
from tests.mail.test_email_support import MailTestCase, message


def splice(old: list[str], response: dict[str, Any], total: int) -> list[str]:
    """
    What a client holding all of C{old} has after applying a
    /queryChanges response (RFC 8620 section 5.6): removed ids spliced
    out, added ids spliced in lowest index first, cut to the new total.
    """
    removed = set(response["removed"])
    result = [email_id for email_id in old if email_id not in removed]
    for item in response["added"]:
        result.insert(item["index"], item["id"])
    return result[:total]


class QueryChangesTestCase(MailTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.inbox = self.mailbox("inbox")
        self.archive = self.mailbox("archive")
        self.counter = 0

    def new_message(self, subject: str, body: str, references: list[str] = (), **kwargs: Any) -> tuple[str, str]:
        """
        Deliver a message; return (Email id, Message-ID).
        """
        self.counter += 1
        msgid = f"m{self.counter}@example.com"
        raw = message(subject, msgid, references=list(references), body=body + "\r\n")
        return self.deliver(raw, **kwargs).id, msgid

    def result(self, arguments: dict[str, Any]) -> tuple[list[str], str]:
        response = self.call("Email/query", {**arguments, "limit": None})
        return response["ids"], response["queryState"]

    def changes(self, arguments: dict[str, Any], since: str, **extra: Any) -> dict[str, Any]:
        return self.call("Email/queryChanges", {**arguments, "sinceQueryState": since, **extra})

    def assertReplays(self, arguments: dict[str, Any], old: list[str], since: str) -> dict[str, Any]:
        """
        The changes since C{since} turn C{old} into the current result.
        """
        new, state = self.result(arguments)
        response = self.changes(arguments, since, calculateTotal=True)
        self.assertEqual(response["total"], len(new))
        self.assertEqual(response["newQueryState"], state)
        self.assertEqual(response["oldQueryState"], since)
        indexes = [item["index"] for item in response["added"]]
        self.assertEqual(indexes, sorted(indexes))
        self.assertEqual(splice(old, response, len(new)), new, (arguments, response))
        return response


#: Queries of every kind: mutable and immutable properties, Thread
#: conditions and sorts, collapsed Threads, text, several plans.
QUERIES: list[dict[str, Any]] = [
    {},
    {"filter": {"inMailbox": "INBOX"}, "sort": [{"property": "receivedAt", "isAscending": False}]},
    {"filter": {"inMailbox": "INBOX"}, "collapseThreads": True},
    {"filter": {"hasKeyword": "$seen"}, "sort": [{"property": "subject"}, {"property": "size"}]},
    {"filter": {"allInThreadHaveKeyword": "$seen"}},
    {"filter": {"noneInThreadHaveKeyword": "$flagged"}, "collapseThreads": True,
     "sort": [{"property": "size", "isAscending": False}]},
    {"filter": {"text": "alpha"}, "sort": [{"property": "receivedAt"}]},
    {"sort": [{"property": "someInThreadHaveKeyword", "keyword": "$flagged", "isAscending": False},
              {"property": "receivedAt"}]},
    {"filter": {"operator": "OR", "conditions": [{"inMailbox": "ARCHIVE"}, {"notKeyword": "$seen"}]}},
    {"filter": {"text": "beta"}, "collapseThreads": True},
    {"filter": {"minSize": 150}, "sort": [{"property": "from"}]},
    {"filter": {"operator": "NOT", "conditions": [{"someInThreadHaveKeyword": "$seen"}]},
     "sort": [{"property": "hasKeyword", "keyword": "$flagged"}, {"property": "receivedAt"}]},
]


class ReplayTests(QueryChangesTestCase):
    def resolve(self, query: dict[str, Any]) -> dict[str, Any]:
        text = repr(query).replace("INBOX", self.inbox).replace("ARCHIVE", self.archive)
        return eval(text)  # noqa: S307 - our own literal

    def random_step(self, rng: random.Random, msgids: list[str]) -> str:
        """
        Make one random change of the kinds that can move Emails in a
        query: keywords, Mailboxes, destroys, deliveries (some joining or
        merging Threads), a Mailbox destroyed with its Emails.
        """
        emails = self.call("Email/query", {"limit": None})["ids"]
        kind = rng.choice(["keyword", "keyword", "move", "destroy", "deliver", "deliver", "mailbox"])
        if kind == "deliver" or not emails:
            subject = rng.choice(["alpha", "Re: alpha", "beta", "gamma"])
            body = " ".join(rng.choice(["alpha", "beta", "delta", "filler " * 10]) for _ in range(3))
            references = rng.sample(msgids, min(len(msgids), rng.randint(0, 2)))
            keywords = rng.sample(["$seen", "$flagged"], rng.randint(0, 2))
            roles = [rng.choice(["inbox", "archive"])]
            _, msgid = self.new_message(subject, body, references, keywords=keywords, roles=roles)
            msgids.append(msgid)
            return kind
        target = rng.choice(emails)
        if kind == "keyword":
            keyword = rng.choice(["$seen", "$flagged"])
            self.call("Email/set", {"update": {target: {f"keywords/{keyword}": rng.choice([True, None])}}})
        elif kind == "move":
            choice = rng.choice([[self.inbox], [self.archive], [self.inbox, self.archive]])
            self.call("Email/set", {"update": {target: {"mailboxIds": dict.fromkeys(choice, True)}}})
        elif kind == "destroy":
            self.call("Email/set", {"destroy": [target]})
        else:
            extra = self.new_mailbox(f"extra{rng.random()}")
            self.call("Email/set", {"update": {target: {f"mailboxIds/{extra}": True}}})
            other = rng.choice(emails)
            self.call("Email/set", {"update": {other: {"mailboxIds": {extra: True}}}})
            self.call("Mailbox/set", {"destroy": [extra], "onDestroyRemoveEmails": True})
        return kind

    def replay(self, seed: int, steps: int) -> None:
        rng = random.Random(seed)
        msgids: list[str] = []
        for _ in range(6):
            self.random_step(rng, msgids) if msgids else None
            subject = rng.choice(["alpha", "beta"])
            _, msgid = self.new_message(subject, rng.choice(["alpha", "beta delta"]), roles=["inbox"])
            msgids.append(msgid)
        queries = [self.resolve(q) for q in QUERIES]
        history: list[list[tuple[list[str], str]]] = [[self.result(q)] for q in queries]
        kinds = set()
        for _ in range(steps):
            kinds.add(self.random_step(rng, msgids))
            for query, past in zip(queries, history, strict=True):
                old, since = past[-1]
                self.assertReplays(query, old, since)
                old, since = rng.choice(past)
                self.assertReplays(query, old, since)
                past.append(self.result(query))
        self.assertEqual(kinds, {"keyword", "move", "destroy", "deliver", "mailbox"})

    def test_replay_random_changes(self) -> None:
        """
        After random keyword changes, moves, destroys, deliveries (which
        join and merge Threads) and Mailbox destructions, applying
        Email/queryChanges to any earlier result of every kind of query
        gives the query's new result.
        """
        self.replay(seed=1, steps=28)

    def test_replay_random_changes_other_seed(self) -> None:
        """
        The same with another sequence of changes.
        """
        self.replay(seed=7, steps=28)


class ThreadTests(QueryChangesTestCase):
    def test_keyword_on_other_email_of_thread(self) -> None:
        """
        Setting a keyword on one Email changes whether the other Emails of
        its Thread match allInThreadHaveKeyword: they are reported too.
        """
        first, msgid = self.new_message("Topic", "one", keywords=["$seen"])
        second, _ = self.new_message("Re: Topic", "two", [msgid])
        query = {"filter": {"allInThreadHaveKeyword": "$seen"}}
        old, since = self.result(query)
        self.assertEqual(old, [])
        self.call("Email/set", {"update": {second: {"keywords/$seen": True}}})
        response = self.assertReplays(query, old, since)
        self.assertEqual({item["id"] for item in response["added"]}, {first, second})

    def test_destroyed_email_of_thread(self) -> None:
        """
        Destroying the only unread Email of a Thread makes the others match
        allInThreadHaveKeyword $seen, although they did not change.
        """
        first, msgid = self.new_message("Topic", "one", keywords=["$seen"])
        second, _ = self.new_message("Re: Topic", "two", [msgid])
        query = {"filter": {"allInThreadHaveKeyword": "$seen"}}
        old, since = self.result(query)
        self.call("Email/set", {"destroy": [second]})
        response = self.assertReplays(query, old, since)
        self.assertEqual(response["added"], [{"id": first, "index": 0}])

    def test_collapsed_thread_gets_newer_email(self) -> None:
        """
        With collapseThreads, a new Email that becomes its Thread's first
        replaces the one that stood for the Thread.
        """
        first, msgid = self.new_message("Topic", "one")
        other, _ = self.new_message("Other", "two")
        query = {"sort": [{"property": "receivedAt", "isAscending": False}], "collapseThreads": True}
        old, since = self.result(query)
        self.assertEqual(old, [other, first])
        newest, _ = self.new_message("Re: Topic", "three", [msgid])
        response = self.assertReplays(query, old, since)
        self.assertIn(first, response["removed"])
        self.assertEqual(self.result(query)[0], [newest, other])


class ArgumentTests(QueryChangesTestCase):
    def test_no_changes(self) -> None:
        """
        Nothing changed: nothing removed or added, the same state.
        """
        self.new_message("Topic", "one")
        query = {"filter": {"inMailbox": self.inbox}}
        old, since = self.result(query)
        response = self.changes(query, since)
        self.assertEqual((response["removed"], response["added"], response["newQueryState"]), ([], [], since))
        self.assertNotIn("total", response)

    def test_unrelated_update_of_immutable_query(self) -> None:
        """
        When the filter and sort use only immutable properties, a keyword
        change cannot move anything and is not reported.
        """
        email_id, _ = self.new_message("Topic", "alpha")
        query = {"filter": {"text": "alpha"}}
        old, since = self.result(query)
        self.call("Email/set", {"update": {email_id: {"keywords/$seen": True}}})
        response = self.changes(query, since)
        self.assertEqual((response["removed"], response["added"]), ([], []))
        self.assertNotEqual(response["newQueryState"], since)

    def test_max_changes(self) -> None:
        """
        More removed and added entries than maxChanges is tooManyChanges.
        """
        query = {"filter": {"inMailbox": self.inbox}}
        old, since = self.result(query)
        self.new_message("One", "one")
        self.new_message("Two", "two")
        error = self.call_error("Email/queryChanges", {**query, "sinceQueryState": since, "maxChanges": 1})
        self.assertEqual(error["type"], "tooManyChanges")
        response = self.changes(query, since, maxChanges=2)
        self.assertEqual(len(response["added"]), 2)

    def test_up_to_id_immutable(self) -> None:
        """
        For an immutable query, additions after upToId are left out.
        """
        first, _ = self.new_message("One", "alpha")
        second, _ = self.new_message("Two", "alpha")
        query = {"filter": {"text": "alpha"}, "sort": [{"property": "receivedAt"}]}
        old, since = self.result(query)
        self.new_message("Three", "alpha")
        response = self.changes(query, since, upToId=first)
        self.assertEqual(response["added"], [])
        response = self.changes(query, since)
        self.assertEqual(len(response["added"]), 1)
        self.assertEqual(response["added"][0]["index"], 2)

    def test_up_to_id_ignored_for_mutable(self) -> None:
        """
        For a query on a mutable property (inMailbox), upToId is ignored.
        """
        first, _ = self.new_message("One", "alpha")
        query = {"filter": {"inMailbox": self.inbox}, "sort": [{"property": "receivedAt"}]}
        old, since = self.result(query)
        self.new_message("Two", "alpha")
        response = self.changes(query, since, upToId=first)
        self.assertEqual(len(response["added"]), 1)

    def test_cannot_calculate(self) -> None:
        """
        A state that is not one this server gave, or a future one, is
        cannotCalculateChanges.
        """
        self.new_message("One", "one")
        for since in ("nonsense", "-1", "99999999", "1e3", "²"):
            error = self.call_error("Email/queryChanges", {"sinceQueryState": since})
            self.assertEqual(error["type"], "cannotCalculateChanges", since)

    def test_compacted_changelog(self) -> None:
        """
        A state older than the compacted part of the changelog is
        cannotCalculateChanges; the current one still works.
        """
        email_id, _ = self.new_message("One", "one")
        old, since = self.result({})
        self.call("Email/set", {"destroy": [email_id]})
        self.run_sync(changelog.compact, self.alice, 0)
        error = self.call_error("Email/queryChanges", {"sinceQueryState": since})
        self.assertEqual(error["type"], "cannotCalculateChanges")
        old, since = self.result({})
        self.assertEqual(self.changes({}, since)["removed"], [])

    def test_invalid_arguments(self) -> None:
        """
        sinceQueryState is required; filter and sort are checked as for
        Email/query.
        """
        self.assertEqual(self.call_error("Email/queryChanges", {})["type"], "invalidArguments")
        error = self.call_error("Email/queryChanges", {"sinceQueryState": "1", "filter": {"nope": 1}})
        self.assertEqual(error["type"], "unsupportedFilter")
        error = self.call_error("Email/queryChanges", {"sinceQueryState": "1", "sort": [{"property": "id"}]})
        self.assertEqual(error["type"], "unsupportedSort")
        error = self.call_error("Email/queryChanges", {"sinceQueryState": "1", "maxChanges": -1})
        self.assertEqual(error["type"], "invalidArguments")

    def test_max_changes_zero(self) -> None:
        """
        maxChanges is an UnsignedInt (RFC 8620 section 5.6; only /changes
        asks for a positive one): 0 is accepted, answers when nothing
        changed and is tooManyChanges when anything did.
        """
        query = {"filter": {"inMailbox": self.inbox}}
        old, since = self.result(query)
        response = self.changes(query, since, maxChanges=0)
        self.assertEqual((response["removed"], response["added"]), ([], []))
        self.new_message("One", "one")
        error = self.call_error("Email/queryChanges", {**query, "sinceQueryState": since, "maxChanges": 0})
        self.assertEqual(error["type"], "tooManyChanges")


pg.add_postgresql_variants(globals(), ArgumentTests, ReplayTests, ThreadTests)
