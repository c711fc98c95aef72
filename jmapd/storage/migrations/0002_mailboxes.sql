-- JMAP Mail: Mailboxes (RFC 8621 section 2).
--
-- The four counts are maintained incrementally by the code that adds,
-- removes or changes Emails (jmapd.storage.mailboxes.adjust_counts); they
-- are never recounted from the Emails.  Sibling names and roles must be
-- unique in the final state of a Mailbox/set but may clash in between (a
-- swap of two names or roles is one valid /set), so the code checks them,
-- not a unique index.

CREATE TABLE mailboxes (
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    name TEXT NOT NULL,
    parent_id TEXT,                      -- NULL: a top-level Mailbox
    role TEXT,                           -- lower-case IMAP mailbox attribute, or NULL
    sort_order INTEGER NOT NULL DEFAULT 0,
    is_subscribed INTEGER NOT NULL DEFAULT 1,
    total_emails BIGINT NOT NULL DEFAULT 0,
    unread_emails BIGINT NOT NULL DEFAULT 0,
    total_threads BIGINT NOT NULL DEFAULT 0,
    unread_threads BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, id)
);
CREATE INDEX mailboxes_parent ON mailboxes (account_id, parent_id);
CREATE INDEX mailboxes_role ON mailboxes (account_id, role);
