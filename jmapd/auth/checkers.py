# -*- test-case-name: tests.auth.test_checkers -*-
"""
twisted.cred checkers for the two ways a JMAP client authenticates: HTTP
Basic (account name and password, checked against the argon2 hash) and
Bearer tokens (created with C{jmapd-admin token create}).

Both look the account up in the database in a worker thread and answer
with the account id, its name, its auth version and the name of the
credential that was checked (L{jmapd.storage.accounts.password_credential}
or L{jmapd.storage.accounts.token_credential}: a PushSubscription belongs
to the credential that created it, RFC 8620 section 7.2) as the avatar
id; the realm turns it into a L{jmapd.protocol.engine.Principal}.
"""

from __future__ import annotations

from typing import Any

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.cred.portal import IRealm, Portal
from twisted.internet.defer import Deferred
from zope.interface import Interface, implementer

from jmapd.auth.passwords import verify_password
from jmapd.storage import accounts


class IBearerToken(Interface):
    """
    Credentials that are one opaque secret (RFC 6750).
    """


@implementer(IBearerToken)
class BearerToken:
    def __init__(self, token: str) -> None:
        self.token = token


class IPrincipal(Interface):
    """
    The avatar interface: an authenticated JMAP principal.
    """


@implementer(ICredentialsChecker)
class PasswordChecker:
    """
    Check an account name and password against the stored argon2 hash.
    The avatar id is C{(account id, name, auth version, credential)}, the
    credential being the password of its current version.
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, database: Any) -> None:
        self._database = database

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        """
        Read the account in one short transaction, then verify the
        password (tens of milliseconds of argon2) in a worker thread with
        no transaction open.
        """
        name = credentials.username.decode("utf-8", "replace")
        password = credentials.password.decode("utf-8", "replace")

        def verify(account: Any) -> Any:
            if account is None:
                # Spend the same time as for a real account, so response
                # times do not tell which account names exist.
                verify_password(_DUMMY_HASH, password)
                raise UnauthorizedLogin("unknown account or wrong password")
            if not verify_password(account.password_hash, password):
                raise UnauthorizedLogin("unknown account or wrong password")
            return (account.id, account.name, account.auth_version, account.password_credential)

        d = self._database.run_interaction(accounts.get_account_by_name, name)
        d.addCallback(lambda account: self._database.run_in_thread(verify, account))
        return d


@implementer(ICredentialsChecker)
class TokenChecker:
    """
    Check a Bearer token against the stored token hashes.
    """

    credentialInterfaces = (IBearerToken,)

    def __init__(self, database: Any) -> None:
        self._database = database

    def requestAvatarId(self, credentials: Any) -> Deferred[Any]:
        def check(txn: Any) -> Any:
            found = accounts.find_token(txn, credentials.token)
            if found is None:
                raise UnauthorizedLogin("unknown or revoked token")
            token, account = found
            return (account.id, account.name, account.auth_version, accounts.token_credential(token.id))

        return self._database.run_interaction(check)


@implementer(IRealm)
class PrincipalRealm:
    """
    Turn an avatar id into the L{jmapd.protocol.engine.Principal} the
    engine works for (and keep the auth version, so a cached login can be
    checked against a password change).
    """

    def requestAvatar(self, avatarId: Any, mind: Any, *interfaces: Any) -> Any:
        from jmapd.protocol.engine import Principal

        if IPrincipal not in interfaces:
            raise NotImplementedError("only IPrincipal avatars")
        account_id, name, auth_version, credential = avatarId
        principal = Principal(account_id=account_id, name=name, credential=credential)
        return IPrincipal, (principal, auth_version), lambda: None


def make_portal(database: Any) -> Portal:
    return Portal(PrincipalRealm(), [PasswordChecker(database), TokenChecker(database)])


# A valid argon2 hash of a random string, used to spend the verification
# time for unknown account names.
_DUMMY_HASH = (
    "$argon2id$v=19$m=65536,t=3,p=4$P8IcBOPv0K/yVVYOqCfUlA$"
    "yYsudF502l92kuGHhpD1BzK0ht4QrC1kcBE2hih4B54"
)
