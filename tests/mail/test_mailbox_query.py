"""
Tests for Mailbox/query and Mailbox/queryChanges (RFC 8621 sections 2.3
and 2.4) in L{jmapd.mail.mailbox}.
"""

from __future__ import annotations

from typing import Any

from tests import pg
from tests.mail.test_email_support import MailTestCase, message


class MailboxQueryTestCase(MailTestCase):
    """
    The default Mailboxes (Inbox 10, Drafts 20, Sent 30, Archive 40, Junk
    50, Trash 60, all with roles) and a tree without roles:

        Projects (5)
          alpha (2)
          Beta (1, not subscribed)
            zeta (0)
          Éclair (3)
    """

    def setUp(self) -> None:
        super().setUp()
        created = self.call("Mailbox/set", {"create": {
            "projects": {"name": "Projects", "sortOrder": 5},
            "alpha": {"name": "alpha", "parentId": "#projects", "sortOrder": 2},
            "beta": {"name": "Beta", "parentId": "#projects", "sortOrder": 1, "isSubscribed": False},
            "zeta": {"name": "zeta", "parentId": "#beta", "sortOrder": 0},
            "eclair": {"name": "Éclair", "parentId": "#projects", "sortOrder": 3},
        }})["created"]
        self.ids = {key: value["id"] for key, value in created.items()}
        for role in ("inbox", "drafts", "sent", "archive", "junk", "trash"):
            self.ids[role] = self.mailbox(role)
        self.names = {mailbox_id: key for key, mailbox_id in self.ids.items()}

    def query(self, filter: Any = None, sort: Any = None, **arguments: Any) -> list[str]:
        response = self.call("Mailbox/query", {"filter": filter, "sort": sort, **arguments})
        return [self.names[mailbox_id] for mailbox_id in response["ids"]]


ROLES_BY_ORDER = ["inbox", "drafts", "sent", "archive", "junk", "trash"]


class FilterTests(MailboxQueryTestCase):
    def test_no_filter(self) -> None:
        """
        Without a filter every Mailbox is found; without a sort they come
        by sortOrder, then name.
        """
        self.assertEqual(
            self.query(), ["zeta", "beta", "alpha", "eclair", "projects"] + ROLES_BY_ORDER
        )

    def test_parent_id(self) -> None:
        """
        parentId matches exactly; null finds the top-level Mailboxes.
        """
        self.assertEqual(self.query({"parentId": self.ids["projects"]}), ["beta", "alpha", "eclair"])
        self.assertEqual(self.query({"parentId": None}), ["projects"] + ROLES_BY_ORDER)

    def test_name(self) -> None:
        """
        name finds Mailboxes whose name contains the text, ignoring case.
        """
        self.assertEqual(self.query({"name": "ETA"}), ["zeta", "beta"])
        self.assertEqual(self.query({"name": "éclair"}), ["eclair"])
        self.assertEqual(self.query({"name": "nothing"}), [])

    def test_role(self) -> None:
        """
        role matches exactly; null finds the Mailboxes without a role.
        """
        self.assertEqual(self.query({"role": "inbox"}), ["inbox"])
        self.assertEqual(self.query({"role": None}), ["zeta", "beta", "alpha", "eclair", "projects"])

    def test_has_any_role(self) -> None:
        """
        hasAnyRole true finds Mailboxes with a role, false those without.
        """
        self.assertEqual(self.query({"hasAnyRole": True}), ROLES_BY_ORDER)
        self.assertEqual(self.query({"hasAnyRole": False}), ["zeta", "beta", "alpha", "eclair", "projects"])

    def test_is_subscribed(self) -> None:
        """
        isSubscribed matches the property.
        """
        self.assertEqual(self.query({"isSubscribed": False}), ["beta"])
        self.assertEqual(len(self.query({"isSubscribed": True})), 10)

    def test_operators(self) -> None:
        """
        Conditions combine with AND, OR and NOT, and several properties of
        one condition must all match.
        """
        self.assertEqual(
            self.query({"operator": "OR", "conditions": [{"role": "junk"}, {"name": "alp"}]}), ["alpha", "junk"]
        )
        self.assertEqual(
            self.query({"operator": "NOT", "conditions": [{"hasAnyRole": True}, {"parentId": None}]}),
            ["zeta", "beta", "alpha", "eclair"],
        )
        self.assertEqual(self.query({"parentId": self.ids["projects"], "isSubscribed": True}), ["alpha", "eclair"])

    def test_filter_as_tree(self) -> None:
        """
        With filterAsTree a Mailbox is found only if its ancestors are too:
        zeta is subscribed but its parent Beta is not.
        """
        self.assertEqual(
            self.query({"isSubscribed": True, "hasAnyRole": False}),
            ["zeta", "alpha", "eclair", "projects"],
        )
        self.assertEqual(
            self.query({"isSubscribed": True, "hasAnyRole": False}, filterAsTree=True),
            ["alpha", "eclair", "projects"],
        )


class SortTests(MailboxQueryTestCase):
    def test_sort_order(self) -> None:
        """
        sortOrder sorts numerically, both ways; ties (none here) by id.
        """
        self.assertEqual(
            self.query({"hasAnyRole": False}, [{"property": "sortOrder", "isAscending": False}]),
            ["projects", "eclair", "alpha", "beta", "zeta"],
        )

    def test_name(self) -> None:
        """
        name sorts with i;unicode-casemap by default: case and accents do
        not push "alpha", "zeta" or "Éclair" to the end.
        """
        self.assertEqual(
            self.query({"hasAnyRole": False}, [{"property": "name"}]),
            ["alpha", "beta", "eclair", "projects", "zeta"],
        )
        self.assertEqual(
            self.query({"hasAnyRole": False}, [{"property": "name", "isAscending": False}]),
            ["zeta", "projects", "eclair", "beta", "alpha"],
        )

    def test_name_ascii_casemap(self) -> None:
        """
        Under i;ascii-casemap only ASCII letters fold: "Éclair" sorts last.
        """
        self.assertEqual(
            self.query({"hasAnyRole": False}, [{"property": "name", "collation": "i;ascii-casemap"}]),
            ["alpha", "beta", "projects", "zeta", "eclair"],
        )

    def test_sort_as_tree(self) -> None:
        """
        With sortAsTree every Mailbox follows its parent, and siblings are
        sorted by the comparators.
        """
        self.assertEqual(
            self.query({"hasAnyRole": False}, [{"property": "name"}], sortAsTree=True),
            ["projects", "alpha", "beta", "zeta", "eclair"],
        )
        self.assertEqual(
            self.query(None, [{"property": "sortOrder"}], sortAsTree=True),
            ["projects", "beta", "zeta", "alpha", "eclair"] + ROLES_BY_ORDER,
        )

    def test_sort_as_tree_filtered(self) -> None:
        """
        A Mailbox whose parent is filtered out is placed by its nearest
        ancestor that shares a parent with the other Mailbox: "Projects"
        (no "a") is not found, but its children sort where it would, between
        Trash and Drafts.
        """
        self.assertEqual(
            self.query({"name": "a"}, [{"property": "name", "isAscending": False}], sortAsTree=True),
            ["trash", "eclair", "beta", "zeta", "alpha", "drafts", "archive"],
        )


class WindowAndErrorTests(MailboxQueryTestCase):
    def test_window(self) -> None:
        """
        position, anchor, limit and calculateTotal work as for every /query.
        """
        response = self.call("Mailbox/query", {"position": -2, "calculateTotal": True})
        self.assertEqual([self.names[i] for i in response["ids"]], ["junk", "trash"])
        self.assertEqual((response["position"], response["total"]), (9, 11))
        response = self.call("Mailbox/query", {"anchor": self.ids["inbox"], "anchorOffset": -1, "limit": 2})
        self.assertEqual([self.names[i] for i in response["ids"]], ["projects", "inbox"])
        self.assertTrue(response["canCalculateChanges"])

    def test_errors(self) -> None:
        """
        Unknown conditions and operators are unsupportedFilter, unknown sort
        properties and collations unsupportedSort, bad values
        invalidArguments, and a missing anchor anchorNotFound.
        """
        for arguments, kind in (
            ({"filter": {"totalEmails": 1}}, "unsupportedFilter"),
            ({"filter": {"operator": "XOR", "conditions": []}}, "unsupportedFilter"),
            ({"sort": [{"property": "totalEmails"}]}, "unsupportedSort"),
            ({"sort": [{"property": "name", "collation": "i;octet"}]}, "unsupportedSort"),
            ({"filter": {"name": 5}}, "invalidArguments"),
            ({"filter": {"hasAnyRole": "yes"}}, "invalidArguments"),
            ({"filter": {"parentId": 5}}, "invalidArguments"),
            ({"sort": [{"property": "name", "isAscending": 1}]}, "invalidArguments"),
            ({"sortAsTree": "yes"}, "invalidArguments"),
            ({"anchor": "mnosuch"}, "anchorNotFound"),
        ):
            self.assertEqual(self.call_error("Mailbox/query", arguments)["type"], kind, arguments)


def splice(old: list[str], response: dict[str, Any], total: int) -> list[str]:
    removed = set(response["removed"])
    result = [x for x in old if x not in removed]
    for item in response["added"]:
        result.insert(item["index"], item["id"])
    return result[:total]


class QueryChangesTests(MailboxQueryTestCase):
    def result(self, arguments: dict[str, Any]) -> tuple[list[str], str]:
        response = self.call("Mailbox/query", arguments)
        return response["ids"], response["queryState"]

    def assertReplays(self, arguments: dict[str, Any], old: list[str], since: str) -> dict[str, Any]:
        new, state = self.result(arguments)
        response = self.call("Mailbox/queryChanges", {**arguments, "sinceQueryState": since, "calculateTotal": True})
        self.assertEqual((response["newQueryState"], response["total"]), (state, len(new)))
        self.assertEqual(splice(old, response, len(new)), new)
        return response

    def test_counts_do_not_change_query_state(self) -> None:
        """
        Delivering an Email changes a Mailbox's counts (and its state) but
        not the queryState: no query looks at counts.
        """
        old, since = self.result({})
        mailbox_state = self.state("Mailbox")
        self.deliver(message())
        self.assertNotEqual(self.state("Mailbox"), mailbox_state)
        self.assertEqual(self.result({})[1], since)
        response = self.call("Mailbox/queryChanges", {"sinceQueryState": since})
        self.assertEqual((response["removed"], response["added"]), ([], []))

    def test_changes_replay(self) -> None:
        """
        After renames, moves, creations and destructions, applying
        Mailbox/queryChanges to the old result gives the new one, for flat
        and tree queries.
        """
        queries = [
            {},
            {"sort": [{"property": "name"}]},
            {"filter": {"hasAnyRole": False}, "sort": [{"property": "name"}], "sortAsTree": True},
            {"filter": {"isSubscribed": True}, "filterAsTree": True, "sortAsTree": True},
            {"filter": {"parentId": self.ids["projects"]}},
        ]
        changes = [
            {"update": {self.ids["alpha"]: {"name": "omega"}}},
            {"update": {self.ids["projects"]: {"name": "AAA projects"}}},
            {"update": {self.ids["zeta"]: {"parentId": self.ids["projects"]}}},
            {"update": {self.ids["beta"]: {"isSubscribed": True}}},
            {"create": {"new": {"name": "new", "parentId": self.ids["beta"]}}},
            {"destroy": [self.ids["eclair"]]},
            {"update": {self.ids["inbox"]: {"sortOrder": 99}}},
        ]
        history = [[self.result(q)] for q in queries]
        for change in changes:
            self.call("Mailbox/set", change)
            for query, past in zip(queries, history, strict=True):
                for old, since in (past[-1], past[0]):
                    self.assertReplays(query, old, since)
                past.append(self.result(query))

    def test_tree_change_reports_descendants(self) -> None:
        """
        Renaming a parent moves its children in a sortAsTree result: they
        are reported although they did not change.
        """
        query = {"filter": {"hasAnyRole": False}, "sort": [{"property": "name"}], "sortAsTree": True}
        old, since = self.result(query)
        self.call("Mailbox/set", {"create": {"z": {"name": "Zzz"}}})
        self.call("Mailbox/set", {"update": {self.ids["projects"]: {"parentId": None, "name": "Zzzz"}}})
        response = self.assertReplays(query, old, since)
        self.assertIn(self.ids["alpha"], response["removed"])

    def test_filter_as_tree_subtree_leaves(self) -> None:
        """
        With filterAsTree, a parent that stops matching takes its unchanged
        children out of the results too: removed names them (RFC 8620
        section 5.6: every Foo that was in the old results and is not in
        the new), so a client that did not ask for the total, and so
        cannot truncate, still gets the new result by splicing.
        """
        query = {"filter": {"isSubscribed": True}, "filterAsTree": True}
        old, since = self.result(query)
        self.assertIn(self.ids["alpha"], old)
        self.call("Mailbox/set", {"update": {self.ids["projects"]: {"isSubscribed": False}}})
        new, _ = self.result(query)
        response = self.call("Mailbox/queryChanges", {**query, "sinceQueryState": since})
        self.assertNotIn("total", response)
        self.assertTrue({self.ids["alpha"], self.ids["eclair"]} <= set(response["removed"]), response)
        self.assertEqual(splice(old, response, len(old) + len(response["added"])), new)

    def test_errors(self) -> None:
        """
        Unknown or future states are cannotCalculateChanges; more changes
        than maxChanges is tooManyChanges.
        """
        old, since = self.result({})
        self.call("Mailbox/set", {"update": {self.ids["alpha"]: {"name": "omega"}}})
        for state in ("x", "999999"):
            error = self.call_error("Mailbox/queryChanges", {"sinceQueryState": state})
            self.assertEqual(error["type"], "cannotCalculateChanges")
        error = self.call_error("Mailbox/queryChanges", {"sinceQueryState": since, "maxChanges": 1})
        self.assertEqual(error["type"], "tooManyChanges")


pg.add_postgresql_variants(globals(), FilterTests, QueryChangesTests, SortTests, WindowAndErrorTests)
