-- PushSubscription (RFC 8620 section 7.2): the URLs the server POSTs
-- StateChange objects to.  A subscription belongs to the account that
-- created it (RFC 8620: to the credentials; see docs/push.md), and is
-- deleted with it.  verification_code is the code the server pushed;
-- nothing but that PushVerification is sent until verified is 1.
-- Rows are deleted (never kept as tombstones) when a subscription is
-- destroyed or expires, so the URL and keys do not outlive it.

CREATE TABLE push_subscriptions (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    device_client_id TEXT NOT NULL,
    url TEXT NOT NULL,
    keys_p256dh TEXT,                 -- URL-safe base64, as the client sent it
    keys_auth TEXT,
    verification_code TEXT NOT NULL,
    verified INTEGER NOT NULL DEFAULT 0,
    expires_at REAL NOT NULL,         -- seconds since the epoch
    types TEXT,                       -- JSON array of type names; NULL: all
    created_at REAL NOT NULL
);
CREATE INDEX push_subscriptions_account ON push_subscriptions (account_id);
CREATE INDEX push_subscriptions_expires ON push_subscriptions (expires_at);
