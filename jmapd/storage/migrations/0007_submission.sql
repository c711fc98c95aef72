-- Identity and EmailSubmission (RFC 8621 sections 6 and 7), and the
-- durable queue of messages waiting to leave through the SMTP relay.

-- is_default: made by the server for one of the account's addresses
-- (mayDelete is false; it goes when the address does).  reply_to and bcc
-- hold JSON EmailAddress[] or NULL.
CREATE TABLE identities (
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    email TEXT NOT NULL,
    reply_to TEXT,
    bcc TEXT,
    text_signature TEXT NOT NULL DEFAULT '',
    html_signature TEXT NOT NULL DEFAULT '',
    is_default INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, id)
);
CREATE INDEX identities_email ON identities (account_id, email);

-- send_at is milliseconds since the epoch; envelope, delivery_status and
-- the blob id lists are JSON.
CREATE TABLE email_submissions (
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    identity_id TEXT NOT NULL,
    email_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    envelope TEXT NOT NULL,
    send_at BIGINT NOT NULL,
    undo_status TEXT NOT NULL,
    delivery_status TEXT,
    dsn_blob_ids TEXT NOT NULL DEFAULT '[]',
    mdn_blob_ids TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (account_id, id)
);
CREATE INDEX email_submissions_send_at ON email_submissions (account_id, send_at, id);

-- One row per message still to be relayed: the octets as they will be
-- sent (Bcc removed), the envelope, and the recipients not yet accepted
-- or refused for good.  A row is claimed (claimed_until in the future)
-- while a sender works on it, so a second sender, or an undo, leaves it
-- alone; a claim left by a crashed process lapses.  submission_id names
-- the EmailSubmission to report to (NULL for messages the server makes
-- itself, such as vacation replies).  Times are seconds since the epoch.
CREATE TABLE outgoing_queue (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    submission_id TEXT,
    mail_from TEXT NOT NULL,
    recipients TEXT NOT NULL,
    message BLOB NOT NULL,
    created_at REAL NOT NULL,
    next_attempt_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    claimed_until REAL,
    last_reply TEXT
);
CREATE INDEX outgoing_queue_due ON outgoing_queue (next_attempt_at);
CREATE INDEX outgoing_queue_submission ON outgoing_queue (account_id, submission_id);
