-- Mail flow: the VacationResponse of each account, whom it has answered,
-- and which messages an import has already brought into an account.

-- The singleton VacationResponse (RFC 8621 section 8).  An account without
-- a row has the default one: disabled, every other property null.  Dates
-- are UTCDate strings as the client gave them, and milliseconds for the
-- comparison at delivery.
CREATE TABLE vacation_responses (
    account_id TEXT PRIMARY KEY REFERENCES accounts (id) ON DELETE CASCADE,
    is_enabled INTEGER NOT NULL DEFAULT 0,
    from_date TEXT,
    from_ms BIGINT,
    to_date TEXT,
    to_ms BIGINT,
    subject TEXT,
    text_body TEXT,
    html_body TEXT
);

-- When each sender last got an auto-reply from the account (seconds since
-- the epoch), so that it gets at most one per vacation-reply-interval
-- (RFC 3834 section 2).  Cleared when the VacationResponse changes.
CREATE TABLE vacation_replies (
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    sender TEXT NOT NULL,             -- lower-cased address
    replied_at REAL NOT NULL,
    PRIMARY KEY (account_id, sender)
);

-- Messages brought in by `jmapd-admin import`, by the SHA-256 of their
-- content (line endings normalised), so that an import can be run again
-- without duplicating anything.
CREATE TABLE imported_messages (
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    content_hash TEXT NOT NULL,
    email_id TEXT NOT NULL,
    PRIMARY KEY (account_id, content_hash)
);
