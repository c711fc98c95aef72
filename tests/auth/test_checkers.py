"""
Tests for L{jmapd.auth.checkers} and L{jmapd.auth.passwords}: the
twisted.cred checkers for Basic and Bearer authentication.
"""

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from jmapd.auth.checkers import (
    _DUMMY_HASH,
    BearerToken,
    IPrincipal,
    PasswordChecker,
    PrincipalRealm,
    TokenChecker,
    make_portal,
)
from jmapd.auth.passwords import hash_password, verify_password
from jmapd.protocol.engine import Principal
from jmapd.storage import accounts
from tests.storage.test_database import make_database

PASSWORD = "correct horse"
# argon2 is slow on purpose: hash once for the module.
_HASH = hash_password(PASSWORD)


def inline(fn, *args):
    return defer.maybeDeferred(fn, *args)


class PasswordTests(SynchronousTestCase):
    def test_verify(self):
        """
        The right password verifies, a wrong one does not.
        """
        self.assertTrue(verify_password(_HASH, PASSWORD))
        self.assertFalse(verify_password(_HASH, "wrong"))

    def test_damaged_or_missing_hash(self):
        """
        A missing or damaged hash is a failed verification, not an
        exception.
        """
        self.assertFalse(verify_password(None, PASSWORD))
        self.assertFalse(verify_password("", PASSWORD))
        self.assertFalse(verify_password("$argon2id$garbage", PASSWORD))

    def test_dummy_hash_is_valid(self):
        """
        The hash used to spend time on unknown names is an argon2 hash with
        the parameters real hashes get, so verifying it costs the same.
        """
        from argon2 import PasswordHasher

        self.assertFalse(PasswordHasher().check_needs_rehash(_DUMMY_HASH))


class CheckerTests(SynchronousTestCase):
    def setUp(self):
        self.database = make_database(self, inline)
        self.account = self.database.run_sync(accounts.add_account, "alice", _HASH, write=True)
        self.database.run_sync(accounts.add_token, "alice", "laptop", "tok-secret", write=True)

    def test_password_accepted(self):
        """
        The right password gives (account id, name, auth version,
        credential): the password of its current version.
        """
        d = PasswordChecker(self.database).requestAvatarId(UsernamePassword(b"alice", PASSWORD.encode()))
        self.assertEqual(self.successResultOf(d), (self.account.id, "alice", 0, "password:0"))

    def test_password_wrong(self):
        """
        A wrong password is UnauthorizedLogin.
        """
        d = PasswordChecker(self.database).requestAvatarId(UsernamePassword(b"alice", b"nope"))
        self.failureResultOf(d, UnauthorizedLogin)

    def test_password_unknown_account(self):
        """
        An unknown account name is the same UnauthorizedLogin.
        """
        d = PasswordChecker(self.database).requestAvatarId(UsernamePassword(b"mallory", PASSWORD.encode()))
        self.failureResultOf(d, UnauthorizedLogin)

    def test_password_none(self):
        """
        An account without a password cannot log in with one.
        """
        self.database.run_sync(accounts.add_account, "bob", None, write=True)
        d = PasswordChecker(self.database).requestAvatarId(UsernamePassword(b"bob", b""))
        self.failureResultOf(d, UnauthorizedLogin)

    def test_auth_version_follows_password_change(self):
        """
        After a password change the avatar id carries the new auth version
        and names a new credential (the password's new version), and the
        old password is refused.
        """
        self.database.run_sync(accounts.set_password, "alice", hash_password("new"), write=True)
        checker = PasswordChecker(self.database)
        self.failureResultOf(
            checker.requestAvatarId(UsernamePassword(b"alice", PASSWORD.encode())), UnauthorizedLogin
        )
        d = checker.requestAvatarId(UsernamePassword(b"alice", b"new"))
        self.assertEqual(self.successResultOf(d), (self.account.id, "alice", 1, "password:1"))

    def test_token_accepted(self):
        """
        A known token gives its account, and the token as the credential.
        """
        (token,) = self.database.run_sync(accounts.list_tokens, "alice")
        d = TokenChecker(self.database).requestAvatarId(BearerToken("tok-secret"))
        self.assertEqual(self.successResultOf(d), (self.account.id, "alice", 0, f"token:{token.id}"))

    def test_token_unknown_or_revoked(self):
        """
        An unknown or revoked token is UnauthorizedLogin.
        """
        checker = TokenChecker(self.database)
        self.failureResultOf(checker.requestAvatarId(BearerToken("other")), UnauthorizedLogin)
        (token,) = self.database.run_sync(accounts.list_tokens, "alice")
        self.database.run_sync(accounts.revoke_token, token.id, write=True)
        self.failureResultOf(checker.requestAvatarId(BearerToken("tok-secret")), UnauthorizedLogin)

    def test_portal(self):
        """
        The portal routes both credential kinds to a Principal avatar naming
        the credential, with the auth version.
        """
        portal = make_portal(self.database)
        (token,) = self.database.run_sync(accounts.list_tokens, "alice")
        for credentials, credential in (
            (UsernamePassword(b"alice", PASSWORD.encode()), "password:0"),
            (BearerToken("tok-secret"), f"token:{token.id}"),
        ):
            interface, avatar, logout = self.successResultOf(portal.login(credentials, None, IPrincipal))
            self.assertIs(interface, IPrincipal)
            self.assertEqual(avatar, (Principal(self.account.id, "alice", credential), 0))
            logout()

    def test_realm_rejects_other_interfaces(self):
        """
        The realm only makes IPrincipal avatars.
        """
        from zope.interface import Interface

        class IOther(Interface):
            pass

        self.assertRaises(
            NotImplementedError, PrincipalRealm().requestAvatar, ("a", "alice", 0, "password:0"), None, IOther
        )
