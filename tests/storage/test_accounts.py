"""
Tests for L{jmapd.storage.accounts}: accounts, addresses, tokens and
server settings.
"""

from twisted.trial.unittest import SynchronousTestCase

from jmapd.storage import accounts
from jmapd.storage.accounts import AccountExists, AccountNotFound
from tests import pg
from tests.storage.test_database import make_database


class AccountTests(SynchronousTestCase):
    def setUp(self):
        self.database = make_database(self, account_hooks=False)


    def sync(self, fn, *args, write=True):
        return self.database.run_sync(fn, *args, write=write)

    def test_add_with_addresses(self):
        """
        An account gets an id, keeps its addresses lower-cased in order and
        starts at auth version 0.
        """
        account = self.sync(accounts.add_account, "alice", "hash", ["Alice@Example.com", "a2@example.com"])
        self.assertEqual(account.name, "alice")
        self.assertEqual(account.addresses, ("alice@example.com", "a2@example.com"))
        self.assertEqual(account.auth_version, 0)
        self.assertEqual(account.password_hash, "hash")
        self.assertEqual(self.sync(accounts.get_account_by_name, "alice"), account)
        self.assertEqual(self.sync(accounts.get_account_by_id, account.id), account)

    def test_duplicate_address_in_one_call(self):
        """
        The same address twice (in any case) is stored once.
        """
        account = self.sync(accounts.add_account, "alice", None, ["a@x.org", "A@X.org"])
        self.assertEqual(account.addresses, ("a@x.org",))

    def test_duplicate_name(self):
        """
        A second account with a taken name is AccountExists.
        """
        self.sync(accounts.add_account, "alice", None)
        self.assertRaises(AccountExists, self.sync, accounts.add_account, "alice", None)

    def test_duplicate_address(self):
        """
        An address another account owns (in any case) is AccountExists,
        and nothing of the new account is kept.
        """
        self.sync(accounts.add_account, "alice", None, ["a@x.org"])
        self.assertRaises(AccountExists, self.sync, accounts.add_account, "bob", None, ["A@x.org"])
        self.assertIsNone(self.sync(accounts.get_account_by_name, "bob"))

    def test_list(self):
        """
        Accounts are listed by name.
        """
        self.sync(accounts.add_account, "bob", None)
        self.sync(accounts.add_account, "alice", None)
        self.assertEqual([a.name for a in self.sync(accounts.list_accounts)], ["alice", "bob"])

    def test_set_password_bumps_auth_version(self):
        """
        Changing the password changes the hash and the auth version.
        """
        account = self.sync(accounts.add_account, "alice", "old")
        self.sync(accounts.set_password, "alice", "new")
        after = self.sync(accounts.get_account_by_name, "alice")
        self.assertEqual(after.password_hash, "new")
        self.assertEqual(after.auth_version, account.auth_version + 1)
        self.assertEqual(self.sync(accounts.auth_version, account.id), after.auth_version)

    def test_set_password_unknown(self):
        """
        Setting the password of an unknown account is AccountNotFound.
        """
        self.assertRaises(AccountNotFound, self.sync, accounts.set_password, "nobody", "x")

    def test_tokens(self):
        """
        A token is found by its secret (stored only hashed), listed for its
        account and gone once revoked; revoking bumps the auth version.
        """
        account = self.sync(accounts.add_account, "alice", None)
        token = self.sync(accounts.add_token, "alice", "laptop", "s3cret")
        stored = self.sync(lambda txn: txn.fetchvalue("SELECT token_hash FROM tokens"))
        self.assertNotIn("s3cret", stored)
        found_token, found_account = self.sync(accounts.find_token, "s3cret")
        self.assertEqual(found_token, token)
        self.assertEqual(found_account.id, account.id)
        self.assertIsNone(self.sync(accounts.find_token, "wrong"))
        self.assertEqual(self.sync(accounts.list_tokens, "alice"), [token])
        self.assertTrue(self.sync(accounts.revoke_token, token.id))
        self.assertIsNone(self.sync(accounts.find_token, "s3cret"))
        self.assertFalse(self.sync(accounts.revoke_token, token.id))
        self.assertEqual(self.sync(accounts.auth_version, account.id), 1)

    def test_token_unknown_account(self):
        """
        A token for an unknown account is AccountNotFound.
        """
        self.assertRaises(AccountNotFound, self.sync, accounts.add_token, "nobody", "l", "s")
        self.assertRaises(AccountNotFound, self.sync, accounts.list_tokens, "nobody")

    def test_remove_cascades(self):
        """
        Removing an account removes its addresses and tokens, so its
        address can be given to a new account.
        """
        account = self.sync(accounts.add_account, "alice", None, ["a@x.org"])
        self.sync(accounts.add_token, "alice", "l", "secret")
        self.assertEqual(self.sync(accounts.remove_account, "alice"), account.id)
        self.assertIsNone(self.sync(accounts.get_account_by_id, account.id))
        self.assertIsNone(self.sync(accounts.find_token, "secret"))
        self.assertEqual(self.sync(lambda txn: txn.fetchvalue("SELECT count(*) FROM account_addresses")), 0)
        self.assertEqual(self.sync(lambda txn: txn.fetchvalue("SELECT count(*) FROM tokens")), 0)
        self.sync(accounts.add_account, "bob", None, ["a@x.org"])
        self.assertRaises(AccountNotFound, self.sync, accounts.remove_account, "alice")

    def test_created_hooks_same_transaction(self):
        """
        account_created_hooks run in the creating transaction: what they
        write is there, and a hook that raises undoes the whole account.
        """
        seen = []

        def hook(txn, account_id):
            seen.append(account_id)
            txn.execute(
                "INSERT INTO server_settings (name, value) VALUES (?, ?)", (f"hook-{account_id}", "ran")
            )

        accounts.account_created_hooks.append(hook)
        self.addCleanup(accounts.account_created_hooks.remove, hook)
        account = self.sync(accounts.add_account, "alice", None)
        self.assertEqual(seen, [account.id])
        self.assertEqual(self.sync(accounts.get_setting, f"hook-{account.id}", write=False), "ran")

        def failing(txn, account_id):
            raise RuntimeError("no")

        accounts.account_created_hooks.append(failing)
        self.addCleanup(accounts.account_created_hooks.remove, failing)
        self.assertRaises(RuntimeError, self.sync, accounts.add_account, "bob", None)
        self.assertIsNone(self.sync(accounts.get_account_by_name, "bob"))
        self.assertEqual(self.sync(lambda txn: txn.fetchvalue("SELECT count(*) FROM server_settings")), 1)

    def test_ensure_setting(self):
        """
        ensure_setting makes the value once and then returns the stored
        one.
        """
        self.assertEqual(self.sync(accounts.ensure_setting, "k", lambda: "first"), "first")
        self.assertEqual(self.sync(accounts.ensure_setting, "k", lambda: "second"), "first")


# The same tests on PostgreSQL (see tests/pg.py).
pg.add_postgresql_variants(globals(), AccountTests)
