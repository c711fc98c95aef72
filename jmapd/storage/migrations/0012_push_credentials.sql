-- RFC 8620 section 7.2: a PushSubscription is tied to the credentials
-- used to authenticate the request that created it; only those
-- credentials see it, and it is destroyed when they are revoked.
--
-- A credential is named by a string (jmapd.storage.accounts):
-- 'password:N' is the account's password of version N, 'token:ID' the
-- API token ID.  password_version moves (with auth_version, which also
-- moves when a token is revoked) whenever the password is set, so a
-- subscription made with an old password names a credential that no
-- longer exists.

ALTER TABLE accounts ADD COLUMN password_version BIGINT NOT NULL DEFAULT 0;

-- Subscriptions made before this migration did not record their
-- credential.  They are tied to the account's current password (version
-- 0, the value every account has now); the default exists only for them,
-- every INSERT names the credential.
ALTER TABLE push_subscriptions ADD COLUMN credential TEXT NOT NULL DEFAULT 'password:0';

-- An account without a password can only have made them with a token:
-- with exactly one token, that one.
UPDATE push_subscriptions
SET credential = 'token:' || (SELECT t.id FROM tokens t WHERE t.account_id = push_subscriptions.account_id)
WHERE account_id IN (
    SELECT a.id FROM accounts a
    WHERE a.password_hash IS NULL AND (SELECT count(*) FROM tokens t WHERE t.account_id = a.id) = 1
);

-- With several tokens (or none) nothing tells which one it was: such
-- subscriptions are destroyed (their URL and keys with them), and the
-- client creates them again.
DELETE FROM push_subscriptions
WHERE credential = 'password:0' AND account_id IN (SELECT id FROM accounts WHERE password_hash IS NULL);
