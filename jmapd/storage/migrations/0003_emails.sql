-- JMAP Mail: Emails, Threads, keywords, Mailbox membership, the message-id
-- index used for threading, and the per (Mailbox, Thread) counters from
-- which the Mailbox counts are kept exact without scanning.

-- One row per Thread; created_seq orders Threads by age (the modseq of the
-- change that created it), so a merge keeps the oldest id.
CREATE TABLE threads (
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    created_seq BIGINT NOT NULL,
    emails INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, id)
);

-- What Email/get needs for list views, parsed once at ingest.  Times are
-- milliseconds since the epoch (UTC); JSON columns hold orjson text.
CREATE TABLE emails (
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    blob_id TEXT NOT NULL,
    size BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    sent_at TEXT,                     -- the Date header as a JMAP Date, or NULL
    sent_at_ms BIGINT,                -- the same instant, for sorting
    subject TEXT,
    thread_subject TEXT NOT NULL,     -- the subject normalised for threading
    has_attachment INTEGER NOT NULL,
    preview TEXT NOT NULL,
    unread INTEGER NOT NULL,          -- neither $seen nor $draft
    message_id TEXT,                  -- JSON String[] or NULL
    in_reply_to TEXT,
    refs TEXT,
    addresses TEXT NOT NULL,          -- JSON {sender, from, to, cc, bcc, replyTo}
    headers TEXT NOT NULL,            -- JSON EmailHeader[] (Raw values)
    structure TEXT NOT NULL,          -- JSON {bodyStructure, textBody, htmlBody, attachments}
    PRIMARY KEY (account_id, id)
);
CREATE INDEX emails_thread ON emails (account_id, thread_id, received_at, id);
CREATE INDEX emails_blob ON emails (account_id, blob_id);
CREATE INDEX emails_received ON emails (account_id, received_at, id);

CREATE TABLE email_keywords (
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    email_id TEXT NOT NULL,
    keyword TEXT NOT NULL,            -- lower case
    PRIMARY KEY (account_id, email_id, keyword)
);
CREATE INDEX email_keywords_keyword ON email_keywords (account_id, keyword);

CREATE TABLE email_mailboxes (
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    email_id TEXT NOT NULL,
    mailbox_id TEXT NOT NULL,
    PRIMARY KEY (account_id, email_id, mailbox_id)
);
CREATE INDEX email_mailboxes_mailbox ON email_mailboxes (account_id, mailbox_id);

-- Every message id an Email carries (Message-ID, In-Reply-To, References).
CREATE TABLE email_message_ids (
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    msgid TEXT NOT NULL,
    email_id TEXT NOT NULL,
    PRIMARY KEY (account_id, msgid, email_id)
);
CREATE INDEX email_message_ids_email ON email_message_ids (account_id, email_id);

-- How many Emails of a Thread are in a Mailbox, and how many of those are
-- unread; a Mailbox's totalThreads and unreadThreads are its rows with a
-- non-zero count.  Rows at zero are deleted.
CREATE TABLE mailbox_threads (
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    mailbox_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    emails INTEGER NOT NULL,
    unread INTEGER NOT NULL,
    PRIMARY KEY (account_id, mailbox_id, thread_id)
);
CREATE INDEX mailbox_threads_thread ON mailbox_threads (account_id, thread_id);
