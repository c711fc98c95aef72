-- Email/query and full-text search (RFC 8621 section 4.4); see
-- jmapd.storage.search for how queries use these tables.
--
-- 1. docid: every Email gets a number that orders Emails by receivedAt
--    (the milliseconds since 2000-01-01 shifted left by 18 bits, plus a
--    sequence number for Emails received in the same millisecond), unique
--    in the database.  It is the receivedAt sort key of every query plan,
--    the rowid of the Email's full-text entry, and so lets the full-text
--    index hand out matches newest first without sorting them.  It stays
--    with the row when a thread merge gives an Email a new id.  Existing
--    Emails are numbered here (jmapd.storage.search.docid_base is the same
--    formula; ties in the order the rows were stored).
ALTER TABLE emails ADD COLUMN docid BIGINT NOT NULL DEFAULT 0;
UPDATE emails SET docid = numbered.docid FROM (
    SELECT rowid AS row_id,
        max(min(received_at - 946684800000, 17592186044415), -17592186044416) * 262144
        + ROW_NUMBER() OVER (PARTITION BY received_at ORDER BY rowid) - 1 AS docid
    FROM emails
) AS numbered WHERE numbered.row_id = emails.rowid;
CREATE INDEX emails_order ON emails (account_id, docid, id, thread_id);
CREATE INDEX emails_docid ON emails (docid, account_id, id, thread_id);
DROP INDEX emails_received;
-- The Thread of an Email without reading its (wide) row: collapseThreads
-- and the Thread conditions look it up for every row they read.
CREATE INDEX emails_thread_of ON emails (account_id, id, thread_id);

-- 2. List views: the Emails of a Mailbox newest first are read from an
--    index in order, never sorted from a scan.  docid is immutable, so it
--    is copied into email_mailboxes: "inMailbox X, sort receivedAt, limit
--    50" reads 50 entries of this index whatever the size of the account.
--    The older (account_id, mailbox_id) index is a prefix of it.
ALTER TABLE email_mailboxes ADD COLUMN docid BIGINT NOT NULL DEFAULT 0;
UPDATE email_mailboxes SET docid = (
    SELECT e.docid FROM emails e
    WHERE e.account_id = email_mailboxes.account_id AND e.id = email_mailboxes.email_id
);
CREATE INDEX email_mailboxes_order ON email_mailboxes (account_id, mailbox_id, docid, email_id);
DROP INDEX email_mailboxes_mailbox;

-- 3. What the header filter and the from/to/subject sorts need, derived
--    once when an Email is indexed: header fields as JSON [[lower-case
--    name, case-folded decoded value], ...]; sort_* the sort values of RFC
--    8621 section 4.4.2 (first name or address of From and To, RFC 5256
--    base subject), key_* the same under i;unicode-casemap (RFC 5051), so
--    ordering needs no collation function in the database.  An Email
--    without a row here is not indexed yet (stored before this migration;
--    jmapd.storage.search.backfill indexes it).
CREATE TABLE email_search (
    docid INTEGER PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    headers TEXT NOT NULL,
    sort_from TEXT NOT NULL,
    sort_to TEXT NOT NULL,
    sort_subject TEXT NOT NULL,
    key_from TEXT NOT NULL,
    key_to TEXT NOT NULL,
    key_subject TEXT NOT NULL
);

-- 4. The full-text index (SQLite FTS5), rowid = docid: unicode61 folds
--    case and, with remove_diacritics 2, accents ("cafe" finds "Café");
--    the prefix indexes make short prefix queries cheap.  The first column
--    holds the account id as a token, so a match is scoped to one account
--    inside the index.  Content is stored (a contentless table cannot
--    delete rows before SQLite 3.43), which also lets SearchSnippet/get
--    highlight matches without reading the message again.
CREATE VIRTUAL TABLE email_fts USING fts5 (
    account, subject, from_addr, to_addr, cc_addr, bcc_addr, body, attachments,
    tokenize = 'unicode61 remove_diacritics 2',
    prefix = '2 3'
);
