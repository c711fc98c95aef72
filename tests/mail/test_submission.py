"""
Tests for L{jmapd.mail.submission}: EmailSubmission/get, /changes, /query,
/queryChanges and /set (RFC 8621 section 7) against the store, with the
outgoing queue read directly (no relay runs here; see
tests.submission.test_sending for messages that really leave).
"""

from __future__ import annotations

from typing import Any

import attrs

from jmapd.storage import submissions as storage
from tests.submission.support import SubmissionStoreTestCase


class SubmissionTestCase(SubmissionStoreTestCase):
    """
    Drafts made with Email/set, and the queue as the database holds it.
    """

    config: dict[str, Any] = {"smtp_relay_host": "relay.invalid", "submission_max_recipients": 3}

    def draft(self, **fields: Any) -> str:
        """
        Create an Email in Drafts and return its id; C{fields} are Email
        properties (from defaults to alice, to to bob).
        """
        obj: dict[str, Any] = {
            "mailboxIds": {self.mailbox("drafts"): True},
            "keywords": {"$draft": True},
            "from": [{"name": "Alice", "email": "alice@example.com"}],
            "to": [{"name": "Bob", "email": "bob@example.org"}],
            "subject": "Hello",
            "bodyValues": {"b": {"value": "Hi Bob."}},
            "textBody": [{"partId": "b", "type": "text/plain"}],
        }
        obj.update(fields)
        obj = {k: v for k, v in obj.items() if v is not None}
        response = self.call("Email/set", {"create": {"d": obj}})
        self.assertIsNone(response["notCreated"], response)
        return str(response["created"]["d"]["id"])

    def submit(self, email_id: str, **fields: Any) -> dict[str, Any]:
        """
        EmailSubmission/set create; returns the response.
        """
        obj = {"identityId": self.identity_for("alice@example.com"), "emailId": email_id, **fields}
        return self.call("EmailSubmission/set", {"create": {"s": obj}})

    def created(self, email_id: str, **fields: Any) -> dict[str, Any]:
        response = self.submit(email_id, **fields)
        self.assertIsNone(response["notCreated"], response)
        return response["created"]["s"]  # type: ignore[no-any-return]

    def refused(self, email_id: str, **fields: Any) -> dict[str, Any]:
        response = self.submit(email_id, **fields)
        self.assertIsNone(response["created"], response)
        return response["notCreated"]["s"]  # type: ignore[no-any-return]

    def queued(self) -> list[storage.QueuedMessage]:
        def read(txn: Any) -> list[storage.QueuedMessage]:
            ids = [row[0] for row in txn.fetchall("SELECT id FROM outgoing_queue ORDER BY created_at, id")]
            return [storage.get_queued(txn, queue_id) for queue_id in ids]

        return self.run_sync(read, write=False)  # type: ignore[no-any-return]

    def release_time(self, queue_id: str) -> float:
        return float(
            self.run_sync(
                lambda txn: txn.fetchvalue("SELECT next_attempt_at FROM outgoing_queue WHERE id = ?", (queue_id,)),
                write=False,
            )
        )


class CreateTests(SubmissionTestCase):
    """
    Creating an EmailSubmission queues the message.
    """

    def test_create(self) -> None:
        """
        The envelope is derived from the Email (MAIL FROM the From address,
        RCPT TO the deduplicated To, Cc and Bcc addresses); the message is
        queued without its Bcc header; undoStatus is pending and every
        recipient's deliveryStatus says queued.
        """
        email_id = self.draft(
            to=[{"email": "bob@example.org"}],
            cc=[{"email": "carol@example.org"}, {"email": "BOB@example.org"}],
            bcc=[{"email": "secret@example.net"}],
        )
        created = self.created(email_id)
        self.assertEqual(
            created["envelope"],
            {
                "mailFrom": {"email": "alice@example.com", "parameters": None},
                "rcptTo": [
                    {"email": "bob@example.org", "parameters": None},
                    {"email": "carol@example.org", "parameters": None},
                    {"email": "secret@example.net", "parameters": None},
                ],
            },
        )
        self.assertEqual(created["undoStatus"], "pending")
        self.assertEqual(created["sendAt"], "2023-11-14T22:13:20Z")
        self.assertEqual(
            created["deliveryStatus"]["carol@example.org"],
            {"smtpReply": "250 2.0.0 Queued for relaying", "delivered": "queued", "displayed": "unknown"},
        )
        [queued] = self.queued()
        self.assertEqual(queued.submission_id, created["id"])
        self.assertEqual(queued.mail_from, "alice@example.com")
        self.assertEqual(queued.recipients, ["bob@example.org", "carol@example.org", "secret@example.net"])
        self.assertNotIn(b"secret@example.net", queued.message)
        self.assertNotIn(b"\nBcc:", queued.message)
        self.assertIn(b"Subject: Hello", queued.message)
        [got] = self.call("EmailSubmission/get", {"ids": [created["id"]]})["list"]
        self.assertEqual(got["emailId"], email_id)
        self.assertEqual(got["threadId"], created["threadId"])
        self.assertEqual(got["identityId"], self.identity_for("alice@example.com"))
        self.assertEqual((got["dsnBlobIds"], got["mdnBlobIds"]), ([], []))

    def test_givenEnvelope(self) -> None:
        """
        A given envelope is used as it is: the message goes to its rcptTo,
        not to the header addresses.
        """
        self.add_address("alias@example.com")
        email_id = self.draft()
        envelope = {
            "mailFrom": {"email": "alias@example.com", "parameters": None},
            "rcptTo": [{"email": "dave@example.net", "parameters": None}],
        }
        created = self.created(email_id, envelope=envelope)
        self.assertNotIn("envelope", created)
        [queued] = self.queued()
        self.assertEqual((queued.mail_from, queued.recipients), ("alias@example.com", ["dave@example.net"]))

    def test_mailFromFromIdentity(self) -> None:
        """
        When the From address is not the Identity's, the envelope's
        mailFrom is the Identity's email (RFC 8621 section 7).
        """
        self.add_address("alias@example.com")
        email_id = self.draft(**{"from": [{"email": "alias@example.com"}]})
        created = self.created(email_id)
        self.assertEqual(created["envelope"]["mailFrom"]["email"], "alice@example.com")

    def test_holdFor(self) -> None:
        """
        FUTURERELEASE HOLDFOR delays the send: sendAt is that much later,
        and so is the time the queue releases the message.
        """
        email_id = self.draft()
        envelope = {
            "mailFrom": {"email": "alice@example.com", "parameters": {"HOLDFOR": "600"}},
            "rcptTo": [{"email": "bob@example.org", "parameters": None}],
        }
        created = self.created(email_id, envelope=envelope)
        self.assertEqual(created["sendAt"], "2023-11-14T22:23:20Z")
        [queued] = self.queued()
        self.assertEqual(self.release_time(queued.id), self.env.clock.seconds() + 600)

    def test_holdUntilBeyondMaximum(self) -> None:
        """
        A delay beyond maxDelayedSend, and parameters jmapd cannot pass on,
        are invalidProperties on the envelope.
        """
        email_id = self.draft()
        for parameters in ({"HOLDUNTIL": "2030-01-01T00:00:00Z"}, {"HOLDFOR": "soon"}, {"RET": "HDRS"}):
            envelope = {
                "mailFrom": {"email": "alice@example.com", "parameters": parameters},
                "rcptTo": [{"email": "bob@example.org", "parameters": None}],
            }
            error = self.refused(email_id, envelope=envelope)
            self.assertEqual((error["type"], error["properties"]), ("invalidProperties", ["envelope"]), parameters)
        self.assertEqual(self.queued(), [])

    def test_submissionHold(self) -> None:
        """
        submission-hold keeps the message in the queue for that long
        after creation; sendAt stays the creation time.
        """
        self.env.config = attrs.evolve(self.env.config, submission_hold=30.0)
        created = self.created(self.draft())
        self.assertEqual(created["sendAt"], "2023-11-14T22:13:20Z")
        [queued] = self.queued()
        self.assertEqual(self.release_time(queued.id), self.env.clock.seconds() + 30)

    def test_holdForShorterThanSubmissionHold(self) -> None:
        """
        With FUTURERELEASE, sendAt is the time the message is released
        (RFC 8621 section 7): a HOLDFOR shorter than submission-hold
        gives the end of the hold, not the time asked for.
        """
        self.env.config = attrs.evolve(self.env.config, submission_hold=30.0)
        envelope = {
            "mailFrom": {"email": "alice@example.com", "parameters": {"HOLDFOR": "10"}},
            "rcptTo": [{"email": "bob@example.org", "parameters": None}],
        }
        created = self.created(self.draft(), envelope=envelope)
        self.assertEqual(created["sendAt"], "2023-11-14T22:13:50Z")
        [queued] = self.queued()
        self.assertEqual(self.release_time(queued.id), self.env.clock.seconds() + 30)

    def test_creationReferences(self) -> None:
        """
        emailId may name an Email created earlier in the same request.
        """
        identity_id = self.identity_for("alice@example.com")
        draft = {
            "mailboxIds": {self.mailbox("drafts"): True},
            "from": [{"email": "alice@example.com"}],
            "to": [{"email": "bob@example.org"}],
            "subject": "x",
        }
        responses = self.calls(
            [
                ["Email/set", {"accountId": self.alice, "create": {"e": draft}}, "0"],
                [
                    "EmailSubmission/set",
                    {"accountId": self.alice, "create": {"s": {"identityId": identity_id, "emailId": "#e"}}},
                    "1",
                ],
            ]
        )
        self.assertEqual(responses[1][0], "EmailSubmission/set")
        self.assertIn("s", responses[1][1]["created"])


class SetErrorTests(SubmissionTestCase):
    """
    Every reason RFC 8621 gives for refusing a submission.
    """

    def test_forbiddenFrom(self) -> None:
        """
        An Email whose From address the account does not have is
        forbiddenFrom, and nothing is queued.
        """
        email_id = self.draft(**{"from": [{"email": "ceo@example.com"}]})
        self.assertEqual(self.refused(email_id)["type"], "forbiddenFrom")
        self.assertEqual(self.queued(), [])

    def test_forbiddenFromSender(self) -> None:
        """
        A Sender header field the account does not have is forbiddenFrom
        too.
        """
        email_id = self.draft(sender=[{"email": "ceo@example.com"}])
        self.assertEqual(self.refused(email_id)["type"], "forbiddenFrom")

    def test_forbiddenMailFrom(self) -> None:
        """
        An envelope mailFrom the account does not have (or the null
        reverse-path) is forbiddenMailFrom.
        """
        email_id = self.draft()
        for address in ("ceo@example.com", ""):
            envelope = {
                "mailFrom": {"email": address, "parameters": None},
                "rcptTo": [{"email": "bob@example.org", "parameters": None}],
            }
            self.assertEqual(self.refused(email_id, envelope=envelope)["type"], "forbiddenMailFrom", address)

    def test_forbiddenToSend(self) -> None:
        """
        An account that has lost all its addresses may not send at all.
        """
        email_id = self.draft()
        identity_id = self.identity_for("alice@example.com")
        self.remove_address("alice@example.com")
        response = self.call("EmailSubmission/set", {"create": {"s": {"identityId": identity_id, "emailId": email_id}}})
        self.assertEqual(response["notCreated"]["s"]["type"], "forbiddenToSend")
        self.assertTrue(response["notCreated"]["s"]["description"])

    def test_invalidEmail(self) -> None:
        """
        An Email without a From header field, or with several From
        addresses and no Sender, is invalidEmail naming the property.
        """
        no_from = self.draft(**{"from": None})
        error = self.refused(no_from)
        self.assertEqual((error["type"], error["properties"]), ("invalidEmail", ["from"]))
        two = self.draft(**{"from": [{"email": "alice@example.com"}, {"email": "alice2@example.com"}]})
        error = self.refused(two)
        self.assertEqual(error["type"], "invalidEmail")
        self.assertIn("sender", error["properties"])

    def test_noRecipients(self) -> None:
        """
        A derived envelope without recipients (no To, Cc or Bcc), or a
        given one with an empty rcptTo, is noRecipients.
        """
        email_id = self.draft(to=None)
        self.assertEqual(self.refused(email_id)["type"], "noRecipients")
        envelope = {"mailFrom": {"email": "alice@example.com", "parameters": None}, "rcptTo": []}
        self.assertEqual(self.refused(self.draft(), envelope=envelope)["type"], "noRecipients")

    def test_invalidRecipients(self) -> None:
        """
        Recipients that are not addresses mail can be sent to are listed
        in invalidRecipients.
        """
        envelope = {
            "mailFrom": {"email": "alice@example.com", "parameters": None},
            "rcptTo": [
                {"email": "bob@example.org", "parameters": None},
                {"email": "not an address", "parameters": None},
                {"email": "jos\u00e9@example.org", "parameters": None},
            ],
        }
        error = self.refused(self.draft(), envelope=envelope)
        self.assertEqual(error["type"], "invalidRecipients")
        self.assertEqual(error["invalidRecipients"], ["not an address", "jos\u00e9@example.org"])

    def test_tooManyRecipients(self) -> None:
        """
        More recipients than submission-max-recipients is
        tooManyRecipients with maxRecipients.
        """
        email_id = self.draft(to=[{"email": f"r{i}@example.org"} for i in range(4)])
        error = self.refused(email_id)
        self.assertEqual((error["type"], error["maxRecipients"]), ("tooManyRecipients", 3))

    def test_tooLarge(self) -> None:
        """
        A message larger than mail-max-size is tooLarge with maxSize.
        """
        email_id = self.draft()
        self.env.config = attrs.evolve(self.env.config, mail_max_size=100)
        error = self.refused(email_id)
        self.assertEqual((error["type"], error["maxSize"]), ("tooLarge", 100))

    def test_unknownEmailOrIdentity(self) -> None:
        """
        An emailId or identityId that is not found is invalidProperties
        naming it.
        """
        email_id = self.draft()
        error = self.refused("e-missing")
        self.assertEqual((error["type"], error["properties"]), ("invalidProperties", ["emailId"]))
        error = self.refused(email_id, identityId="i-missing")
        self.assertEqual((error["type"], error["properties"]), ("invalidProperties", ["identityId"]))

    def test_serverSetProperties(self) -> None:
        """
        Server-set properties cannot be given at creation, nor an
        undoStatus other than pending.
        """
        email_id = self.draft()
        for fields in ({"deliveryStatus": {}}, {"sendAt": "2023-11-14T22:13:20Z"}, {"undoStatus": "final"}):
            self.assertEqual(self.refused(email_id, **fields)["type"], "invalidProperties", fields)


class UndoTests(SubmissionTestCase):
    """
    undoStatus: canceling a pending submission, and what cannot be undone.
    """

    def cancel(self, submission_id: str) -> dict[str, Any]:
        return self.call("EmailSubmission/set", {"update": {submission_id: {"undoStatus": "canceled"}}})

    def test_cancel(self) -> None:
        """
        A pending submission is canceled: its message leaves the queue,
        undoStatus is canceled, and /changes reports the update.  The
        recipients' deliveryStatus becomes delivered "no", which /set
        reports in updated since the client did not ask for it (RFC 8620
        section 5.3).
        """
        created = self.created(self.draft())
        state = self.state("EmailSubmission")
        response = self.cancel(created["id"])
        self.assertEqual(
            response["updated"],
            {
                created["id"]: {
                    "deliveryStatus": {
                        "bob@example.org": {
                            "smtpReply": "250 2.0.0 Queued for relaying",
                            "delivered": "no",
                            "displayed": "unknown",
                        }
                    }
                }
            },
        )
        self.assertEqual(self.queued(), [])
        [got] = self.call("EmailSubmission/get", {"ids": [created["id"]]})["list"]
        self.assertEqual(got["undoStatus"], "canceled")
        self.assertEqual(got["deliveryStatus"]["bob@example.org"]["delivered"], "no")
        self.assertEqual(self.changes("EmailSubmission", state)["updated"], [created["id"]])

    def test_cannotUnsendWhileRelaying(self) -> None:
        """
        A message a sender has claimed (it is being relayed) cannot be
        unsent.
        """
        created = self.created(self.draft())
        now = self.env.clock.seconds()
        self.run_sync(storage.claim_due, now, 60.0, 10)
        error = self.cancel(created["id"])["notUpdated"][created["id"]]
        self.assertEqual(error["type"], "cannotUnsend")
        self.assertEqual(len(self.queued()), 1)

    def test_cannotUnsendFinal(self) -> None:
        """
        A submission whose undoStatus is final cannot be canceled.
        """
        created = self.created(self.draft())
        self.run_sync(storage.set_status, self.alice, created["id"], "final")
        error = self.cancel(created["id"])["notUpdated"][created["id"]]
        self.assertEqual(error["type"], "cannotUnsend")

    def test_otherUpdates(self) -> None:
        """
        undoStatus can only become canceled, and the other properties
        cannot change.
        """
        created = self.created(self.draft())
        other = self.draft()
        response = self.call(
            "EmailSubmission/set",
            {"update": {created["id"]: {"undoStatus": "final"}}},
        )
        self.assertEqual(response["notUpdated"][created["id"]]["type"], "invalidProperties")
        response = self.call("EmailSubmission/set", {"update": {created["id"]: {"emailId": other}}})
        self.assertEqual(response["notUpdated"][created["id"]]["properties"], ["emailId"])

    def test_destroyKeepsDelivery(self) -> None:
        """
        Destroying an EmailSubmission forgets it but does not stop its
        message.
        """
        created = self.created(self.draft())
        response = self.call("EmailSubmission/set", {"destroy": [created["id"]]})
        self.assertEqual(response["destroyed"], [created["id"]])
        self.assertEqual(len(self.queued()), 1)
        self.assertEqual(self.call("EmailSubmission/get", {"ids": [created["id"]]})["notFound"], [created["id"]])


class OnSuccessTests(SubmissionTestCase):
    """
    The implicit Email/set of onSuccessUpdateEmail and onSuccessDestroyEmail.
    """

    def test_onSuccessUpdateEmail(self) -> None:
        """
        After a successful creation, the Email referenced by "#creationId"
        is patched (moved from Drafts to Sent, $draft removed, $seen set),
        and the Email/set response follows the EmailSubmission/set one
        with the same method call id.
        """
        email_id = self.draft()
        drafts, sent = self.mailbox("drafts"), self.mailbox("sent")
        arguments = {
            "accountId": self.alice,
            "create": {"s": {"identityId": self.identity_for("alice@example.com"), "emailId": email_id}},
            "onSuccessUpdateEmail": {
                "#s": {
                    f"mailboxIds/{drafts}": None,
                    f"mailboxIds/{sent}": True,
                    "keywords/$draft": None,
                    "keywords/$seen": True,
                }
            },
        }
        responses = self.calls([["EmailSubmission/set", arguments, "0"]])
        self.assertEqual([r[0] for r in responses], ["EmailSubmission/set", "Email/set"])
        self.assertEqual([r[2] for r in responses], ["0", "0"])
        self.assertEqual(responses[1][1]["updated"], {email_id: None})
        email = self.get_one(email_id, ["mailboxIds", "keywords"])
        self.assertEqual(email, {"id": email_id, "mailboxIds": {sent: True}, "keywords": {"$seen": True}})

    def test_onSuccessDestroyEmail(self) -> None:
        """
        onSuccessDestroyEmail destroys the Email once the submission is
        created; the message still goes out, and the submission keeps its
        emailId.
        """
        email_id = self.draft()
        arguments = {
            "accountId": self.alice,
            "create": {"s": {"identityId": self.identity_for("alice@example.com"), "emailId": email_id}},
            "onSuccessDestroyEmail": ["#s"],
        }
        responses = self.calls([["EmailSubmission/set", arguments, "0"]])
        self.assertEqual(responses[1][0], "Email/set")
        self.assertEqual(responses[1][1]["destroyed"], [email_id])
        self.assertEqual(len(self.queued()), 1)
        submission_id = responses[0][1]["created"]["s"]["id"]
        [got] = self.call("EmailSubmission/get", {"ids": [submission_id]})["list"]
        self.assertEqual(got["emailId"], email_id)

    def test_failedCreationIsNotFollowedUp(self) -> None:
        """
        A creation that failed does not patch its Email.
        """
        email_id = self.draft(to=None)
        arguments = {
            "accountId": self.alice,
            "create": {"s": {"identityId": self.identity_for("alice@example.com"), "emailId": email_id}},
            "onSuccessUpdateEmail": {"#s": {"keywords/$seen": True}},
        }
        responses = self.calls([["EmailSubmission/set", arguments, "0"]])
        self.assertEqual(responses[0][1]["notCreated"]["s"]["type"], "noRecipients")
        self.assertIsNone(responses[1][1]["updated"])
        self.assertEqual(self.get_one(email_id, ["keywords"])["keywords"], {"$draft": True})

    def test_onSuccessUpdateAfterCancel(self) -> None:
        """
        onSuccessUpdateEmail also follows a successful update (a cancel
        moving the Email back to Drafts).
        """
        email_id = self.draft(keywords={"$seen": True})
        submission_id = self.created(email_id)["id"]
        arguments = {
            "accountId": self.alice,
            "update": {submission_id: {"undoStatus": "canceled"}},
            "onSuccessUpdateEmail": {submission_id: {"keywords/$draft": True}},
        }
        responses = self.calls([["EmailSubmission/set", arguments, "0"]])
        self.assertEqual(responses[1][1]["updated"], {email_id: None})
        self.assertEqual(self.get_one(email_id, ["keywords"])["keywords"], {"$seen": True, "$draft": True})


class QueryTests(SubmissionTestCase):
    """
    EmailSubmission/query and /queryChanges.
    """

    def setUp(self) -> None:
        super().setUp()
        self.first_email = self.draft()
        self.first = self.created(self.first_email)["id"]
        self.env.clock.advance(10)
        self.second_email = self.draft()
        self.second = self.created(self.second_email)["id"]
        self.call("EmailSubmission/set", {"update": {self.second: {"undoStatus": "canceled"}}})

    def query(self, **arguments: Any) -> list[str]:
        return self.call("EmailSubmission/query", arguments)["ids"]  # type: ignore[no-any-return]

    def test_filters(self) -> None:
        """
        Every FilterCondition of RFC 8621 section 7.3, and operators.
        """
        self.assertEqual(self.query(filter={"emailIds": [self.first_email]}), [self.first])
        self.assertEqual(self.query(filter={"undoStatus": "canceled"}), [self.second])
        self.assertEqual(self.query(filter={"before": "2023-11-14T22:13:25Z"}), [self.first])
        self.assertEqual(self.query(filter={"after": "2023-11-14T22:13:25Z"}), [self.second])
        identity = self.identity_for("alice@example.com")
        self.assertEqual(sorted(self.query(filter={"identityIds": [identity]})), sorted([self.first, self.second]))
        self.assertEqual(self.query(filter={"threadIds": []}), [])
        self.assertEqual(
            self.query(filter={"operator": "NOT", "conditions": [{"undoStatus": "canceled"}]}), [self.first]
        )

    def test_sort(self) -> None:
        """
        Sorting by sentAt (the RFC's name for sendAt), both ways.
        """
        self.assertEqual(self.query(sort=[{"property": "sentAt"}]), [self.first, self.second])
        self.assertEqual(self.query(sort=[{"property": "sentAt", "isAscending": False}]), [self.second, self.first])

    def test_unsupported(self) -> None:
        """
        Unknown conditions and sort properties are unsupportedFilter and
        unsupportedSort.
        """
        error = self.call_error("EmailSubmission/query", {"filter": {"subject": "x"}})
        self.assertEqual(error["type"], "unsupportedFilter")
        error = self.call_error("EmailSubmission/query", {"sort": [{"property": "subject"}]})
        self.assertEqual(error["type"], "unsupportedSort")

    def test_unknownCollation(self) -> None:
        """
        A collation the server does not recognise is unsupportedSort (RFC
        8620 section 5.5), even for properties it does not apply to; a
        known one is accepted.
        """
        error = self.call_error("EmailSubmission/query", {"sort": [{"property": "sentAt", "collation": "i;bogus"}]})
        self.assertEqual(error["type"], "unsupportedSort")
        self.assertEqual(
            self.query(sort=[{"property": "emailId", "collation": "i;ascii-casemap"}]),
            self.query(sort=[{"property": "emailId"}]),
        )

    def test_queryChanges(self) -> None:
        """
        A submission whose undoStatus changes is removed and added again in
        /queryChanges.
        """
        state = self.call("EmailSubmission/query", {"filter": {"undoStatus": "pending"}})["queryState"]
        self.call("EmailSubmission/set", {"update": {self.first: {"undoStatus": "canceled"}}})
        changes = self.call(
            "EmailSubmission/queryChanges", {"filter": {"undoStatus": "pending"}, "sinceQueryState": state}
        )
        self.assertEqual(changes["removed"], [self.first])
        self.assertEqual(changes["added"], [])
