-- JMAP Core: accounts and their credentials, blobs, and the changelog
-- from which every state string and /changes response is computed.

CREATE TABLE accounts (
    id TEXT PRIMARY KEY,              -- the JMAP accountId
    name TEXT NOT NULL UNIQUE,        -- the login name (username in the Session)
    password_hash TEXT,               -- argon2; NULL: no password login
    created_at REAL NOT NULL,
    modseq BIGINT NOT NULL DEFAULT 0, -- the account's modification sequence
    auth_version BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE account_addresses (
    address TEXT PRIMARY KEY,         -- lower-cased e-mail address
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    is_alias INTEGER NOT NULL DEFAULT 0,
    position INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX account_addresses_account ON account_addresses (account_id);

CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    label TEXT NOT NULL DEFAULT '',
    token_hash TEXT NOT NULL UNIQUE,  -- sha256 of the secret; the secret is shown once
    created_at REAL NOT NULL
);
CREATE INDEX tokens_account ON tokens (account_id);

-- Which account may read which content-addressed blob.  expires_at is set
-- for uploads nothing references yet; NULL means referenced (kept).
CREATE TABLE blobs (
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    blob_id TEXT NOT NULL,
    size BIGINT NOT NULL,
    type TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,
    PRIMARY KEY (account_id, blob_id)
);
CREATE INDEX blobs_expires ON blobs (expires_at);
CREATE INDEX blobs_blob ON blobs (blob_id);

-- The state of each data type of an account: the modseq of its last change,
-- and the lowest state /changes can still answer from (raised by compaction).
CREATE TABLE states (
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    type TEXT NOT NULL,
    modseq BIGINT NOT NULL,
    min_modseq BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, type)
);

-- One row per object ever changed: when it was created, last changed
-- (modseq), last changed in a property other than counters (props_modseq),
-- and whether it is destroyed (a tombstone until compaction).
CREATE TABLE changelog (
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    type TEXT NOT NULL,
    object_id TEXT NOT NULL,
    created_modseq BIGINT NOT NULL,
    modseq BIGINT NOT NULL,
    props_modseq BIGINT NOT NULL,
    destroyed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, type, object_id)
);
CREATE INDEX changelog_modseq ON changelog (account_id, type, modseq);
CREATE INDEX changelog_tombstones ON changelog (account_id, destroyed, modseq);

CREATE TABLE server_settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
