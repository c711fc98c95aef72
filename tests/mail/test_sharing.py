"""
Tests for sharing (RFC 9670): Principals, Mailbox shareWith and myRights,
shared accounts in the Session, enforcement on Mail methods, the caches and
ShareNotifications (L{jmapd.sharing}, L{jmapd.mail.mailbox}).
"""

import orjson
from twisted.internet.defer import ensureDeferred

from jmapd.mail.mailbox import RIGHTS
from jmapd.storage import mailboxes, principals
from tests import pg
from tests.support import ServerTestCase

CORE = "urn:ietf:params:jmap:core"
MAIL = "urn:ietf:params:jmap:mail"
PRINCIPALS = "urn:ietf:params:jmap:principals"
USING = [CORE, MAIL, PRINCIPALS]


class SharingTests(ServerTestCase):
    """
    alice owns an account; bob and carol are other users.
    """

    cache_tti = 300.0

    async def setup(self):
        self.server = await self.start_server(cache_tti_sharings=self.cache_tti, cache_tti_acl=self.cache_tti)
        self.alice = self.server.add_account("alice", ("alice@example.com",))
        self.bob = self.server.add_account("bob")
        self.carol = self.server.add_account("carol")
        self.inbox = self.server.env.database.run_sync(mailboxes.find_by_role, self.alice, "inbox")
        self.archive = self.server.env.database.run_sync(mailboxes.find_by_role, self.alice, "archive")

    async def call(self, name, arguments, auth="alice"):
        response = await self.server.api([[name, arguments, "c"]], using=USING, auth=auth)
        return response["methodResponses"][0]

    async def share(self, mailbox_id, grants):
        name, result, _ = await self.call(
            "Mailbox/set", {"accountId": self.alice, "update": {mailbox_id: {"shareWith": grants}}}
        )
        self.assertEqual(name, "Mailbox/set", result)
        self.assertIn(mailbox_id, result["updated"], result)

    async def add_email(self, mailbox_id, subject="Hi"):
        _, result, _ = await self.call("Email/set", {"accountId": self.alice, "create": {"e": {
            "mailboxIds": {mailbox_id: True}, "subject": subject,
            "bodyStructure": {"type": "text/plain", "partId": "1"}, "bodyValues": {"1": {"value": "x"}},
        }}})
        return result["created"]["e"]

    def test_isolation_without_grants(self):
        """
        Without any grant, another account stays unknown: accountNotFound
        for every method, and no download.
        """
        async def run():
            await self.setup()
            email = await self.add_email(self.inbox)
            name, result, _ = await self.call("Mailbox/get", {"accountId": self.alice}, auth="bob")
            self.assertEqual((name, result["type"]), ("error", "accountNotFound"))
            response, _ = await self.server.request(
                "GET", f"/jmap/download/{self.alice}/{email['blobId']}/x", auth="bob"
            )
            self.assertEqual(response.code, 404)
        return ensureDeferred(run())

    def test_read_grant(self):
        """
        With mayReadItems on Inbox, bob sees Inbox alone (the owner never
        in shareWith; shareWith hidden from him), its Emails only, may
        download their blobs, but may not change keywords or destroy.
        """
        async def run():
            await self.setup()
            inside = await self.add_email(self.inbox, "inside")
            outside = await self.add_email(self.archive, "outside")
            await self.share(self.inbox, {self.bob: {"mayReadItems": True}})
            _, result, _ = await self.call("Mailbox/get", {"accountId": self.alice}, auth="bob")
            self.assertEqual([m["id"] for m in result["list"]], [self.inbox])
            self.assertEqual({k for k, v in result["list"][0]["myRights"].items() if v}, {"mayReadItems"})
            self.assertIsNone(result["list"][0]["shareWith"])
            self.assertFalse(result["list"][0]["isSubscribed"])
            _, got, _ = await self.call(
                "Email/get", {"accountId": self.alice, "ids": [inside["id"], outside["id"]]}, auth="bob"
            )
            self.assertEqual([e["id"] for e in got["list"]], [inside["id"]])
            self.assertEqual(got["notFound"], [outside["id"]])
            _, threads, _ = await self.call(
                "Thread/get", {"accountId": self.alice, "ids": [outside["threadId"]]}, auth="bob"
            )
            self.assertEqual(threads["notFound"], [outside["threadId"]])
            ok, _ = await self.server.request("GET", f"/jmap/download/{self.alice}/{inside['blobId']}/x", auth="bob")
            self.assertEqual(ok.code, 200)
            no, _ = await self.server.request("GET", f"/jmap/download/{self.alice}/{outside['blobId']}/x", auth="bob")
            self.assertEqual(no.code, 404)
            _, result, _ = await self.call("Email/set", {
                "accountId": self.alice, "update": {inside["id"]: {"keywords/$seen": True}}}, auth="bob")
            self.assertEqual(result["notUpdated"][inside["id"]]["type"], "forbidden")
            _, result, _ = await self.call("Email/set", {
                "accountId": self.alice, "destroy": [inside["id"], outside["id"]]}, auth="bob")
            self.assertEqual(result["notDestroyed"][inside["id"]]["type"], "forbidden")
            self.assertEqual(result["notDestroyed"][outside["id"]]["type"], "notFound")
        return ensureDeferred(run())

    def test_grantee_blobs_in_shared_account(self):
        """
        A grantee with mayAddItems may put a message into the shared
        account (an upload there, or a Blob/copy from their own account)
        and Email/import it into the shared Mailbox; the blob is theirs to
        use there, and another grantee cannot read it; a user without any
        grant cannot upload to the account at all.
        """
        async def run():
            await self.setup()
            await self.share(self.inbox, {
                self.bob: {"mayReadItems": True, "mayAddItems": True}, self.carol: {"mayReadItems": True}})
            raw = b"From: bob@example.com\r\nSubject: from bob\r\n\r\nHello\r\n"
            response, body = await self.server.request(
                "POST", f"/jmap/upload/{self.alice}/", raw, auth="bob")
            self.assertEqual(response.code, 201, body)
            uploaded = orjson.loads(body)["blobId"]
            for other in ("carol", "alice"):
                got, _ = await self.server.request(
                    "GET", f"/jmap/download/{self.alice}/{uploaded}/x", auth=other)
                self.assertEqual(got.code, 404 if other == "carol" else 200, other)
            got, _ = await self.server.request("GET", f"/jmap/download/{self.alice}/{uploaded}/x", auth="bob")
            self.assertEqual(got.code, 200)
            name, result, _ = await self.call("Email/import", {"accountId": self.alice, "emails": {
                "m": {"blobId": uploaded, "mailboxIds": {self.inbox: True}}}}, auth="bob")
            self.assertEqual(name, "Email/import", result)
            self.assertIn("m", result["created"], result)
            # The same through Blob/copy from bob's own account.
            raw2 = raw.replace(b"from bob", b"copied by bob")
            response, body = await self.server.request("POST", f"/jmap/upload/{self.bob}/", raw2, auth="bob")
            own = orjson.loads(body)["blobId"]
            name, result, _ = await self.call("Blob/copy", {
                "fromAccountId": self.bob, "accountId": self.alice, "blobIds": [own]}, auth="bob")
            self.assertEqual(result["copied"], {own: own}, result)
            name, result, _ = await self.call("Email/import", {"accountId": self.alice, "emails": {
                "m": {"blobId": own, "mailboxIds": {self.inbox: True}}}}, auth="bob")
            self.assertIn("m", result["created"], result)
            _, result, _ = await self.call("Email/query", {
                "accountId": self.alice, "filter": {"inMailbox": self.inbox}}, auth="alice")
            self.assertEqual(len(result["ids"]), 2)
            dave = self.server.add_account("dave")
            self.assertTrue(dave)
            response, body = await self.server.request("POST", f"/jmap/upload/{self.alice}/", raw, auth="dave")
            self.assertEqual(response.code, 404, body)
        return ensureDeferred(run())

    def test_query_snippet_and_blob_copy_limited_to_readable(self):
        """
        In a shared account, Email/query (ids and total), Email/queryChanges,
        SearchSnippet/get and Blob/copy see only Emails in Mailboxes the
        grantee may read: the others stay invisible, never leaked.
        """
        async def run():
            await self.setup()
            inside = await self.add_email(self.inbox, "inside")
            outside = await self.add_email(self.archive, "outside")
            await self.share(self.inbox, {self.bob: {"mayReadItems": True}})
            _, result, _ = await self.call(
                "Email/query", {"accountId": self.alice, "calculateTotal": True}, auth="bob"
            )
            self.assertEqual((result["ids"], result["total"]), ([inside["id"]], 1))
            _, everything, _ = await self.call("Email/query", {"accountId": self.alice}, auth="alice")
            self.assertEqual(set(everything["ids"]), {inside["id"], outside["id"]})
            _, changes, _ = await self.call(
                "Email/queryChanges", {"accountId": self.alice, "sinceQueryState": "0"}, auth="bob"
            )
            self.assertNotIn(outside["id"], [a["id"] for a in changes.get("added", [])])
            _, snippets, _ = await self.call(
                "SearchSnippet/get",
                {"accountId": self.alice, "emailIds": [inside["id"], outside["id"]], "filter": {"text": "x"}},
                auth="bob",
            )
            self.assertEqual([s["emailId"] for s in snippets["list"]], [inside["id"]])
            self.assertEqual(snippets["notFound"], [outside["id"]])
            name, copied, _ = await self.call(
                "Blob/copy",
                {"fromAccountId": self.alice, "accountId": self.bob,
                 "blobIds": [inside["blobId"], outside["blobId"]]},
                auth="bob",
            )
            self.assertEqual(name, "Blob/copy", copied)
            self.assertEqual(list(copied["copied"]), [inside["blobId"]])
            self.assertEqual(list(copied["notCopied"]), [outside["blobId"]])
        return ensureDeferred(run())

    def test_rights_matrix(self):
        """
        Each write of Email/set is allowed exactly with its right: $seen
        with maySetSeen, other keywords with maySetKeywords, adding to a
        Mailbox with mayAddItems, removing with mayRemoveItems, destroying
        with mayRemoveItems.
        """
        async def run():
            await self.setup()
            cases = [
                ("maySetSeen", {"keywords/$seen": True}),
                ("maySetKeywords", {"keywords/$flagged": True}),
                ("mayAddItems", {f"mailboxIds/{self.archive}": True}),
                ("mayRemoveItems", {f"mailboxIds/{self.inbox}": None, f"mailboxIds/{self.archive}": True}),
            ]
            for right, patch in cases:
                for granted in (False, True):
                    email = await self.add_email(self.inbox)
                    rights = {"mayReadItems": True, right: granted}
                    if right == "mayAddItems":
                        # The right that counts is the target's.
                        await self.share(self.archive, {self.bob: rights})
                        rights = {"mayReadItems": True}
                    elif right == "mayRemoveItems":
                        await self.share(self.archive, {self.bob: {"mayReadItems": True, "mayAddItems": True}})
                    await self.share(self.inbox, {self.bob: rights})
                    _, result, _ = await self.call(
                        "Email/set", {"accountId": self.alice, "update": {email["id"]: patch}}, auth="bob"
                    )
                    if granted:
                        self.assertIn(email["id"], result["updated"] or {}, (right, result))
                    else:
                        self.assertEqual(result["notUpdated"][email["id"]]["type"], "forbidden", right)
                    await self.share(self.archive, None)
        return ensureDeferred(run())

    def test_group_grant_and_revocation(self):
        """
        A grant to a group reaches its members; revoking it takes effect on
        the next request, while the client still holds the ids.
        """
        async def run():
            await self.setup()
            email = await self.add_email(self.inbox)
            group = self.server.env.database.run_sync(principals.add_group, "team", [self.bob, self.carol], write=True)
            await self.share(self.inbox, {group: {"mayReadItems": True}})
            for who in ("bob", "carol"):
                _, got, _ = await self.call("Email/get", {"accountId": self.alice, "ids": [email["id"]]}, auth=who)
                self.assertEqual([e["id"] for e in got["list"]], [email["id"]])
            await self.share(self.inbox, None)
            name, got, _ = await self.call("Email/get", {"accountId": self.alice, "ids": [email["id"]]}, auth="bob")
            self.assertEqual((name, got["type"]), ("error", "accountNotFound"))
        return ensureDeferred(run())

    def test_session_lists_subscribed_only(self):
        """
        The Session lists a shared account (isPersonal false) only while the
        user is subscribed to one of its Mailboxes.
        """
        async def run():
            await self.setup()
            await self.share(self.inbox, {self.bob: {"mayReadItems": True}})
            response, body = await self.server.request("GET", "/.well-known/jmap", auth="bob")
            import orjson
            self.assertNotIn(self.alice, orjson.loads(body)["accounts"])
            _, result, _ = await self.call(
                "Mailbox/set", {"accountId": self.alice, "update": {self.inbox: {"isSubscribed": True}}}, auth="bob"
            )
            self.assertIn(self.inbox, result["updated"], result)
            response, body = await self.server.request("GET", "/.well-known/jmap", auth="bob")
            session = orjson.loads(body)
            account = session["accounts"][self.alice]
            self.assertFalse(account["isPersonal"])
            # RFC 9670: currentUserPrincipalId is the viewer's own Principal
            # in every account, and the owner capability is an account
            # capability only.
            self.assertEqual(account["accountCapabilities"][PRINCIPALS]["currentUserPrincipalId"], self.bob)
            self.assertNotIn("urn:ietf:params:jmap:principals:owner", session["capabilities"])
            self.assertIn("urn:ietf:params:jmap:principals:owner", account["accountCapabilities"])
            _, own, _ = await self.call("Mailbox/get", {"accountId": self.alice, "ids": [self.inbox]})
            self.assertTrue(own["list"][0]["isSubscribed"])
        return ensureDeferred(run())

    async def subscribe(self, mailbox_id, auth="bob"):
        _, result, _ = await self.call(
            "Mailbox/set", {"accountId": self.alice, "update": {mailbox_id: {"isSubscribed": True}}}, auth=auth
        )
        self.assertIn(mailbox_id, result["updated"], result)

    async def subscribed(self, mailbox_id, auth="bob"):
        """
        The user's isSubscribed on one of alice's Mailboxes, and whether
        their Session lists alice's account.
        """
        name, result, _ = await self.call("Mailbox/get", {"accountId": self.alice, "ids": [mailbox_id]}, auth=auth)
        self.assertEqual(name, "Mailbox/get", result)
        _, body = await self.server.request("GET", "/.well-known/jmap", auth=auth)
        return result["list"][0]["isSubscribed"], self.alice in orjson.loads(body)["accounts"]

    def test_share_again_after_revocation_unsubscribed(self):
        """
        Taking back bob's grant (or leaving him no right in it) takes his
        subscription with it: when alice shares the Mailbox with him
        again, it is not subscribed (RFC 8621 section 2: isSubscribed
        SHOULD default to false in a shared account) and his Session does
        not list her account (RFC 9670: only accounts he subscribes to
        some of) until he subscribes again.
        """
        async def run():
            await self.setup()
            await self.share(self.inbox, {self.bob: {"mayReadItems": True}})
            await self.subscribe(self.inbox)
            self.assertEqual(await self.subscribed(self.inbox), (True, True))
            await self.share(self.inbox, None)
            await self.share(self.inbox, {self.bob: {"mayReadItems": True}})
            self.assertEqual(await self.subscribed(self.inbox), (False, False))
            await self.subscribe(self.inbox)
            self.assertEqual(await self.subscribed(self.inbox), (True, True))
            # A grant of no rights takes the last one too.
            await self.share(self.inbox, {self.bob: {"mayReadItems": False}})
            await self.share(self.inbox, {self.bob: {"mayReadItems": True}})
            self.assertEqual(await self.subscribed(self.inbox), (False, False))
        return ensureDeferred(run())

    def test_share_again_after_group_grant_taken_back_unsubscribed(self):
        """
        The same when bob's only right came from a group and the group's
        grant is taken back, or the group destroyed: given again, to the
        group or directly, the Mailbox is not subscribed.
        """
        async def run():
            await self.setup()
            db = self.server.env.database
            group = db.run_sync(principals.add_group, "team", [self.bob], write=True)
            await self.share(self.inbox, {group: {"mayReadItems": True}})
            await self.subscribe(self.inbox)
            await self.share(self.inbox, None)
            await self.share(self.inbox, {group: {"mayReadItems": True}})
            self.assertEqual(await self.subscribed(self.inbox), (False, False))
            await self.subscribe(self.inbox)
            db.run_sync(principals.remove_group, "team", write=True)
            await self.share(self.inbox, {self.bob: {"mayReadItems": True}})
            self.assertEqual(await self.subscribed(self.inbox), (False, False))
        return ensureDeferred(run())

    def test_share_again_after_leaving_group_unsubscribed(self):
        """
        When bob leaves the group that gave him his only right, he is no
        longer subscribed; back in the group, the Mailbox is not
        subscribed.  Another subscription of his that the group was not
        needed for stays.
        """
        async def run():
            await self.setup()
            db = self.server.env.database
            group = db.run_sync(principals.add_group, "team", [self.bob], write=True)
            await self.share(self.inbox, {group: {"mayReadItems": True}})
            await self.share(self.archive, {group: {"mayReadItems": True}, self.bob: {"mayAddItems": True}})
            await self.subscribe(self.inbox)
            await self.subscribe(self.archive)
            db.run_sync(principals.remove_group_members, "team", [self.bob], write=True)
            self.assertEqual(await self.subscribed(self.archive), (True, True))
            db.run_sync(principals.add_group, "team", [self.bob], write=True)
            self.assertEqual(await self.subscribed(self.inbox), (False, True))
        return ensureDeferred(run())

    def test_fewer_rights_keep_subscription(self):
        """
        Taking some of bob's rights away keeps his subscription while he
        still has one (any right shows him the Mailbox): reading only,
        adding only, or through a group after his own grant is taken back.
        """
        async def run():
            await self.setup()
            group = self.server.env.database.run_sync(principals.add_group, "team", [self.bob], write=True)
            await self.share(self.inbox, {self.bob: dict.fromkeys(RIGHTS, True)})
            await self.subscribe(self.inbox)
            await self.share(self.inbox, {self.bob: {"mayReadItems": True}})
            self.assertEqual(await self.subscribed(self.inbox), (True, True))
            await self.share(self.inbox, {self.bob: {"mayAddItems": True}})
            self.assertEqual(await self.subscribed(self.inbox), (True, True))
            await self.share(self.inbox, {self.bob: {"mayReadItems": True}, group: {"mayReadItems": True}})
            await self.share(self.inbox, {group: {"mayReadItems": True}})
            self.assertEqual(await self.subscribed(self.inbox), (True, True))
        return ensureDeferred(run())

    def test_stale_subscription_not_revived(self):
        """
        A subscription left without any right (as an older jmapd kept them
        past a revocation) does not come back with a grant, directly or
        through a group bob joins.
        """
        async def run():
            await self.setup()
            db = self.server.env.database

            def stale(txn, mailbox_id):
                mailboxes.set_subscribed(txn, self.alice, mailbox_id, self.bob, True)

            db.run_sync(stale, self.inbox, write=True)
            await self.share(self.inbox, {self.bob: {"mayReadItems": True}})
            self.assertEqual(await self.subscribed(self.inbox), (False, False))
            group = db.run_sync(principals.add_group, "team", [], write=True)
            await self.share(self.archive, {group: {"mayReadItems": True}})
            db.run_sync(stale, self.archive, write=True)
            db.run_sync(principals.add_group, "team", [self.bob], write=True)
            self.assertEqual(await self.subscribed(self.archive), (False, False))
        return ensureDeferred(run())

    def test_only_owner_shares(self):
        """
        A sharee may not change shareWith, even with every right.
        """
        async def run():
            await self.setup()
            await self.share(self.inbox, {self.bob: dict.fromkeys(RIGHTS, True)})
            _, result, _ = await self.call("Mailbox/set", {"accountId": self.alice, "update": {
                self.inbox: {"shareWith": {self.carol: dict.fromkeys(RIGHTS, True)}}}}, auth="bob")
            self.assertEqual(result["notUpdated"][self.inbox]["type"], "forbidden")
            _, result, _ = await self.call("Mailbox/set", {"accountId": self.alice, "update": {
                self.inbox: {"shareWith": {self.alice: {"mayReadItems": True}}}}})
            self.assertEqual(result["notUpdated"][self.inbox]["type"], "invalidProperties")
        return ensureDeferred(run())

    def test_principals(self):
        """
        Principal/query finds individuals and groups by type, name, email
        and accountIds; Principal/set refuses a name change with forbidden;
        a Principal's accounts show what the user may use.
        """
        async def run():
            await self.setup()
            group = self.server.env.database.run_sync(principals.add_group, "team", [self.bob], write=True)
            _, result, _ = await self.call("Principal/query", {"accountId": self.bob, "filter": {"type": "group"}},
                                           auth="bob")
            self.assertEqual(result["ids"], [group])
            _, result, _ = await self.call("Principal/query", {"accountId": self.bob,
                                           "filter": {"email": "alice@example"}}, auth="bob")
            self.assertEqual(result["ids"], [self.alice])
            _, result, _ = await self.call("Principal/query", {"accountId": self.bob,
                                           "filter": {"accountIds": [self.bob]}}, auth="bob")
            self.assertEqual(result["ids"], [self.bob])
            _, result, _ = await self.call("Principal/set", {"accountId": self.bob, "update": {
                self.bob: {"name": "Alice"}}}, auth="bob")
            self.assertEqual(result["notUpdated"][self.bob]["type"], "forbidden")
            _, result, _ = await self.call("Principal/get", {"accountId": self.bob, "ids": [self.alice]}, auth="bob")
            self.assertIsNone(result["list"][0]["accounts"])
        return ensureDeferred(run())

    def test_share_notification(self):
        """
        A grant and its revocation each leave bob a ShareNotification with
        oldRights, newRights and changedBy; he may destroy it.
        """
        async def run():
            await self.setup()
            await self.share(self.inbox, {self.bob: {"mayReadItems": True}})
            await self.share(self.inbox, None)
            _, result, _ = await self.call("ShareNotification/query", {"accountId": self.bob}, auth="bob")
            self.assertEqual(len(result["ids"]), 2)
            _, got, _ = await self.call("ShareNotification/get", {"accountId": self.bob, "ids": result["ids"]},
                                        auth="bob")
            first, second = got["list"]
            self.assertIsNone(first["oldRights"])
            self.assertTrue(first["newRights"]["mayReadItems"])
            self.assertIsNone(second["newRights"])
            self.assertEqual(first["changedBy"]["principalId"], self.alice)
            _, done, _ = await self.call("ShareNotification/set", {"accountId": self.bob,
                                         "destroy": [first["id"]]}, auth="bob")
            self.assertEqual(done["destroyed"], [first["id"]])
        return ensureDeferred(run())


class SharingWithoutCachesTests(SharingTests):
    """
    The same tests with the sharings and acl caches off: results are the
    same.
    """

    cache_tti = 0.0


pg.add_postgresql_variants(globals(), SharingTests, SharingWithoutCachesTests)
