"""
Several jmapd nodes on one PostgreSQL database (issue #10): two real
services (C{makeService} twice, same database, same blob directory, each
on its own port of 127.0.0.1) talked to over real sockets, and a node run
as a real C{twistd} process that is killed mid-request.  PostgreSQL only:
skipped, saying why, where there is none (L{tests.pg}).
"""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import orjson
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, DeferredQueue, ensureDeferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from jmapd.auth.passwords import hash_password
from jmapd.config import default_config
from jmapd.ingest import recipients
from jmapd.ingest.service import LMTPService
from jmapd.push.hub import hub_for
from jmapd.service import makeService
from jmapd.storage import accounts, mailboxes
from tests import pg
from tests.push.support import open_event_stream, open_websocket, push_on, start_receiver
from tests.support import Server, basic

CORE = "urn:ietf:params:jmap:core"
MAIL = "urn:ietf:params:jmap:mail"
USING = [CORE, MAIL]


#: The source tree: twistd finds the jmapd plugin in its twisted/plugins.
_PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_TWISTD = "from twisted.scripts.twistd import run; run()"


def _email(mailbox_id: str, subject: str = "Hi") -> dict[str, Any]:
    return {
        "mailboxIds": {mailbox_id: True},
        "subject": subject,
        "bodyStructure": {"type": "text/plain", "partId": "1"},
        "bodyValues": {"1": {"value": f"{subject} body"}},
    }


def _pause(seconds: float) -> Deferred[None]:
    d: Deferred[None] = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


class NodesTestCase(pg.OnPostgreSQL, TestCase):
    """
    Node A and node B share a fresh database and one data directory.
    """

    timeout = 120

    async def start_nodes(self, **config: Any) -> tuple[Server, Server]:
        self.url = pg.database_url(self)
        self.data = os.path.abspath(self.mktemp())
        nodes = []
        for name in ("node-a", "node-b"):
            settings: dict[str, Any] = {
                "jmap_port": 0,
                "jmap_bind_addr": "127.0.0.1",
                "db_path": self.data,
                "db_url": self.url,
                "node_id": name,
                "worker_pool_size": 2,
                "lmtp_port": 0,
                **config,
            }
            service = makeService(default_config(**settings), reactor)
            events: DeferredQueue[str] = DeferredQueue()
            service.notifier.observers.append(events.put)
            service.startService()
            self.addCleanup(service.stopService)
            await service.web.listening
            while await events.get() != "caught up":
                pass
            nodes.append(Server(service))
        self.a, self.b = nodes
        self.alice = self.a.add_account("alice", ("alice@example.com",))
        self.inbox = self.a.env.database.run_sync(mailboxes.find_by_role, self.alice, "inbox")
        return self.a, self.b

    async def call(self, node: Server, name: str, arguments: dict[str, Any], auth: str = "alice") -> Any:
        response = await node.api([[name, {"accountId": self.alice, **arguments}, "c"]], using=USING, auth=auth)
        return response["methodResponses"][0]

    def pushing(self, node: Server) -> Any:
        """
        What the push test clients of L{tests.push.support} want of a test.
        """
        return SimpleNamespace(server=node, addCleanup=self.addCleanup)


class PushAcrossNodesTests(NodesTestCase):
    def test_eventSource(self) -> Any:
        """
        An EventSource client of node B gets the StateChange of an
        Email/set committed on node A, with A's new Email state.
        """

        async def run() -> None:
            a, b = await self.start_nodes()
            stream = await open_event_stream(self.pushing(b))
            await stream.next()  # the position it starts from
            name, result, _ = await self.call(a, "Email/set", {"create": {"e": _email(self.inbox)}})
            self.assertEqual(name, "Email/set", result)
            while True:
                event = await stream.next()
                self.assertEqual(event["event"], "state")
                self.assertEqual(event["data"]["@type"], "StateChange")
                if event["data"]["changed"][self.alice].get("Email") == result["newState"]:
                    break

        return ensureDeferred(run())

    def test_webSocket(self) -> Any:
        """
        A WebSocket client of node B with push enabled gets the
        StateChange of a change made on node A.
        """

        async def run() -> None:
            a, b = await self.start_nodes()
            ws = await open_websocket(self.pushing(b))  # type: ignore[arg-type]
            ws.send({"@type": "WebSocketPushEnable", "dataTypes": ["Email"]})
            ws.send({"@type": "Request", "using": [CORE], "methodCalls": [["Core/echo", {}, "e"]]})
            await ws.next()
            await push_on(hub_for(b.env))
            name, result, _ = await self.call(a, "Email/set", {"create": {"e": _email(self.inbox)}})
            change = await ws.next()
            self.assertEqual(change["@type"], "StateChange")
            self.assertEqual(change["changed"], {self.alice: {"Email": result["newState"]}})

        return ensureDeferred(run())

    def test_pushSubscriptionOnOtherNode(self) -> Any:
        """
        A PushSubscription verified through node B is pushed the changes
        committed on node A: B's commit tells A's delivery (with the
        NOTIFY), instead of A learning of it at its next reload.
        """

        async def run() -> None:
            a, b = await self.start_nodes(push_allow_insecure=True, push_throttle=0.0)
            receiver, url = start_receiver(self)
            heard: DeferredQueue[str] = DeferredQueue()
            a.service.notifier.subscription_listeners.append(heard.put)
            response = await b.api(
                [["PushSubscription/set", {"create": {"s": {"deviceClientId": "d", "url": url}}}, "c"]]
            )
            subscription_id = response["methodResponses"][0][1]["created"]["s"]["id"]
            verification = await receiver.next_json()
            await b.api([["PushSubscription/set", {"update": {subscription_id: {
                "verificationCode": verification["verificationCode"]}}}, "c"]])
            self.assertEqual(await heard.get(), self.alice)
            name, result, _ = await self.call(a, "Email/set", {"create": {"e": _email(self.inbox)}})
            self.assertEqual(name, "Email/set", result)
            while True:
                pushed = await receiver.next_json()
                self.assertEqual(pushed["@type"], "StateChange")
                if pushed["changed"].get(self.alice, {}).get("Email") == result["newState"]:
                    break

        return ensureDeferred(run())

    def test_lmtpOnOtherNode(self) -> Any:
        """
        A message delivered by LMTP to node A is found by Email/query on
        node B, and B's push clients are told (with EmailDelivery).
        """

        async def run() -> None:
            a, b = await self.start_nodes()
            lmtp = LMTPService(a.env, reactor, port=0)
            lmtp.setServiceParent(a.service)
            port = (await lmtp.listening).getHost().port
            stream = await open_event_stream(self.pushing(b))
            await stream.next()

            def deliver() -> Any:
                client = smtplib.LMTP("127.0.0.1", port, timeout=30)
                try:
                    client.ehlo("mta.example.org")
                    return client.sendmail(
                        "bob@example.org", ["alice@example.com"],
                        b"From: bob@example.org\r\nTo: alice@example.com\r\nSubject: across\r\n\r\nHi\r\n",
                    )
                finally:
                    client.quit()

            self.assertEqual(await deferToThread(deliver), {})
            event = await stream.next()
            self.assertIn("EmailDelivery", event["data"]["changed"][self.alice])
            _, result, _ = await self.call(b, "Email/query", {"filter": {"subject": "across"}})
            self.assertEqual(len(result["ids"]), 1)

        return ensureDeferred(run())

    def test_concurrentWriters(self) -> Any:
        """
        Interleaved writes of one account on both nodes (keyword toggles
        of one Email and Mailbox creates, in one request each) all land:
        every modseq is taken once, each Email update starts from the
        state the previous one left and every keyword any of them added is
        there (no lost update), every Mailbox exists, /changes lists them
        all, and C{$flagged} has the value of the last commit.
        """

        async def run() -> None:
            a, b = await self.start_nodes(max_concurrent_requests=64)
            _, created, _ = await self.call(a, "Email/set", {"create": {"e": _email(self.inbox)}})
            email_id = created["created"]["e"]["id"]
            _, before, _ = await self.call(a, "Mailbox/get", {"ids": []})
            count = 12

            def request(node: Server, i: int) -> Any:
                return node.api(
                    [
                        ["Email/set", {"accountId": self.alice, "update": {
                            email_id: {"keywords/$flagged": True if i % 2 else None, f"keywords/k{i}": True}}}, "k"],
                        ["Mailbox/set", {"accountId": self.alice, "create": {"m": {"name": f"box {i}"}}}, "m"],
                    ],
                    using=USING,
                )

            calls = [request(a if i % 2 else b, i) for i in range(2 * count)]
            results = await DeferredList([ensureDeferred(c) for c in calls], consumeErrors=True)
            responses = []
            for ok, response in results:
                self.assertTrue(ok, response)
                responses.append(response["methodResponses"])
            email_sets = [r[0][1] for r in responses]
            mailbox_sets = [r[1][1] for r in responses]
            self.assertTrue(all(email_id in s["updated"] for s in email_sets), email_sets)
            self.assertTrue(all("m" in s["created"] for s in mailbox_sets), mailbox_sets)
            modseqs = [int(s["newState"]) for s in email_sets + mailbox_sets]
            self.assertEqual(len(set(modseqs)), len(modseqs), sorted(modseqs))
            chain = sorted((int(s["newState"]), int(s["oldState"])) for s in email_sets)
            for (previous, _), (_, old) in zip(chain, chain[1:], strict=False):
                self.assertEqual(old, previous, chain)
            last = max(range(len(email_sets)), key=lambda i: int(email_sets[i]["newState"]))
            _, got, _ = await self.call(b, "Email/get", {"ids": [email_id], "properties": ["keywords"]})
            keywords = got["list"][0]["keywords"]
            self.assertEqual(keywords.get("$flagged", False), bool(last % 2))
            self.assertEqual({k for k in keywords if k.startswith("k")}, {f"k{i}" for i in range(2 * count)})
            _, changes, _ = await self.call(b, "Mailbox/changes", {"sinceState": before["state"]})
            new_ids = {s["created"]["m"]["id"] for s in mailbox_sets}
            self.assertEqual(set(changes["created"]), new_ids)
            self.assertFalse(changes["hasMoreChanges"])
            _, everything, _ = await self.call(a, "Mailbox/get", {"ids": None, "properties": ["name"]})
            names = {m["name"] for m in everything["list"]}
            self.assertEqual(names & {f"box {i}" for i in range(2 * count)}, {f"box {i}" for i in range(2 * count)})

        return ensureDeferred(run())


class CachesAcrossNodesTests(NodesTestCase):
    """
    What one node caches never outlives a change made on the other.
    """

    def test_revokedShare(self) -> Any:
        """
        bob reads alice's shared Inbox on node B (filling B's sharings
        and acl caches); once alice revokes the grant on node A, bob's
        next request on B no longer sees her account.
        """

        async def run() -> None:
            a, b = await self.start_nodes(cache_tti_sharings=300.0, cache_tti_acl=300.0)
            bob = a.add_account("bob")
            name, result, _ = await self.call(
                a, "Mailbox/set", {"update": {self.inbox: {"shareWith": {bob: {"mayReadItems": True}}}}}
            )
            self.assertIn(self.inbox, result["updated"], result)
            name, result, _ = await self.call(b, "Mailbox/get", {}, auth="bob")
            self.assertEqual([m["id"] for m in result["list"]], [self.inbox])
            await self.call(a, "Mailbox/set", {"update": {self.inbox: {"shareWith": {}}}})
            name, result, _ = await self.call(b, "Mailbox/get", {}, auth="bob")
            self.assertEqual((name, result["type"]), ("error", "accountNotFound"))

        return ensureDeferred(run())

    def test_changedPassword(self) -> Any:
        """
        A password changed on node A (or by jmapd-admin) is refused on
        node B at the next request, although B had verified and cached
        the old one; the new one works there.
        """

        async def run() -> None:
            a, b = await self.start_nodes()
            response, _ = await b.request("GET", "/.well-known/jmap")
            self.assertEqual(response.code, 200)
            new = "a new password"
            a.env.database.run_sync(accounts.set_password, "alice", hash_password(new), write=True)
            response, _ = await b.request("GET", "/.well-known/jmap")
            self.assertEqual(response.code, 401)
            response, _ = await b.request(
                "GET", "/.well-known/jmap", headers={b"authorization": [basic("alice", new)]}, auth=None
            )
            self.assertEqual(response.code, 200)

        return ensureDeferred(run())

    def test_aliasesForLMTP(self) -> Any:
        """
        An alias added on node A delivers through node B's LMTP at once,
        although B cached alice's address before; once it is removed on
        A, B's next delivery to it is refused (after DATA at worst), never
        filed.
        """

        async def run() -> None:
            a, b = await self.start_nodes(cache_tti_recipients=300.0)
            lmtp = LMTPService(b.env, reactor, port=0)
            lmtp.setServiceParent(b.service)
            port = (await lmtp.listening).getHost().port

            def deliver(to: str) -> Any:
                client = smtplib.LMTP("127.0.0.1", port, timeout=30)
                try:
                    client.ehlo("mta.example.org")
                    return client.sendmail(
                        "bob@example.org", [to], f"From: bob@example.org\r\nTo: {to}\r\nSubject: {to}\r\n\r\nHi\r\n"
                    )
                except smtplib.SMTPRecipientsRefused as refused:
                    return {to: refused.recipients[to][0]}
                except smtplib.SMTPDataError as refused:
                    return {to: refused.smtp_code}
                finally:
                    client.close()

            self.assertEqual(await deferToThread(deliver, "alice@example.com"), {})
            self.assertEqual(await deferToThread(deliver, "ally@example.com"), {"ally@example.com": 550})
            a.env.database.run_sync(recipients.add_alias, "alice", "ally@example.com", write=True)
            self.assertEqual(await deferToThread(deliver, "ally@example.com"), {})
            a.env.database.run_sync(recipients.remove_alias, "alice", "ally@example.com", write=True)
            refused = await deferToThread(deliver, "ally@example.com")
            self.assertEqual(refused.get("ally@example.com"), 550, refused)
            _, result, _ = await self.call(a, "Email/query", {"filter": {"subject": "ally@example.com"}})
            self.assertEqual(len(result["ids"]), 1)

        return ensureDeferred(run())


class KilledNodeTests(NodesTestCase):
    def test_killedMidRequest(self) -> Any:
        """
        A node killed (SIGKILL) while it runs a large multi-method write
        leaves nothing of it: once its connection is gone, node B sees
        either every Email of the request or none (and in practice none:
        the kill comes while the transaction is open).
        """

        async def run() -> None:
            a, b = await self.start_nodes()
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            config = os.path.join(self.data, "killed.yaml")
            with open(config, "w", encoding="utf-8") as f:
                f.write(
                    f"jmap-bind-addr: 127.0.0.1\njmap-port: {port}\ndb-path: {self.data}\n"
                    f"db-url: {self.url}\nnode-id: killed\nlmtp-port: 0\nworker-pool-size: 2\n"
                )
            log = open(os.path.join(self.data, "killed.log"), "wb")
            self.addCleanup(log.close)
            process = subprocess.Popen(
                [sys.executable, "-c", _TWISTD, "-n", "--pidfile=", "jmapd", "--config", config],
                stdout=log, stderr=subprocess.STDOUT, cwd=_PROJECT,
                # Only the file configures it: JMAPD_* variables are configuration too.
                env={**{k: v for k, v in os.environ.items() if not k.startswith("JMAPD_")}, "PYTHONPATH": _PROJECT},
            )
            self.addCleanup(lambda: process.poll() is None and process.kill())
            base = f"http://127.0.0.1:{port}"
            while True:
                try:
                    response = await treq.get(
                        f"{base}/.well-known/jmap", headers={b"authorization": [basic("alice")]},
                        reactor=reactor, persistent=False,
                    )
                    await response.content()
                    break
                except Exception:
                    self.assertIsNone(process.poll(), "the twistd node exited")
                    await _pause(0.1)
            self.assertEqual(response.code, 200)
            count = 400
            body = {
                "using": USING,
                "methodCalls": [
                    ["Mailbox/set", {"accountId": self.alice, "create": {"m": {"name": "bulk"}}}, "0"],
                    *[
                        ["Email/set", {"accountId": self.alice, "create": {
                            f"e{i}": _email(self.inbox, f"bulk {i}") for i in range(j, j + 100)}}, str(j)]
                        for j in range(0, count, 100)
                    ],
                ],
            }
            request = treq.post(
                f"{base}/jmap/", data=orjson.dumps(body),
                headers={b"authorization": [basic("alice")], b"content-type": [b"application/json"]},
                reactor=reactor, persistent=False,
            )
            # The connection is lost when the node is killed.
            finished: list[Any] = []
            request.addCallback(treq.content).addErrback(lambda f: f.value).addCallback(finished.append)

            def writing(txn: Any) -> bool:
                return bool(txn.fetchvalue(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND application_name = 'jmapd killed'"
                    " AND backend_xid IS NOT NULL",
                ))

            while not await b.env.database.run_interaction(writing):
                self.assertEqual(finished, [], "the request finished before it could be killed")
                await _pause(0.005)
            os.kill(process.pid, signal.SIGKILL)
            await deferToThread(process.wait)

            def connected(txn: Any) -> int:
                return int(txn.fetchvalue(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND application_name LIKE 'jmapd killed%'"
                ))

            while await b.env.database.run_interaction(connected):
                await _pause(0.05)
            await request
            (outcome,) = finished
            _, result, _ = await self.call(b, "Email/query", {"filter": {"subject": "bulk"}, "calculateTotal": True})
            _, boxes, _ = await self.call(b, "Mailbox/query", {"filter": {"name": "bulk"}})
            self.assertIn((result["total"], len(boxes["ids"])), [(0, 0), (count, 1)])
            if result["total"] == 0:
                self.assertIsInstance(outcome, Exception, "a response came, yet nothing was stored")

        return ensureDeferred(run())

