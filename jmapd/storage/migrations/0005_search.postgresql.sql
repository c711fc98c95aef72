-- Migration 0005 (Email/query and full-text search) for PostgreSQL: the
-- same schema as 0005_search.sql, which explains each part; what has no
-- translation from SQLite is written for PostgreSQL here.  Keep the two
-- files one schema (tests.storage.test_postgres compares the tables and
-- columns both engines end up with).
--
-- A PostgreSQL database is always created at the current schema (jmapd
-- before this version had no PostgreSQL engine), so the numbering of
-- existing rows that 0005_search.sql does is left out: there are none.

-- 1. docid (jmapd.storage.search.docid_base).
ALTER TABLE emails ADD COLUMN docid BIGINT NOT NULL DEFAULT 0;
CREATE INDEX emails_order ON emails (account_id, docid, id, thread_id);
CREATE INDEX emails_docid ON emails (docid, account_id, id, thread_id);
DROP INDEX emails_received;

-- 2. List views.
ALTER TABLE email_mailboxes ADD COLUMN docid BIGINT NOT NULL DEFAULT 0;
CREATE INDEX email_mailboxes_order ON email_mailboxes (account_id, mailbox_id, docid, email_id);
DROP INDEX email_mailboxes_mailbox;

-- 3. Header fields and sort keys.
CREATE TABLE email_search (
    docid BIGINT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    headers TEXT NOT NULL,
    sort_from TEXT NOT NULL,
    sort_to TEXT NOT NULL,
    sort_subject TEXT NOT NULL,
    key_from TEXT NOT NULL,
    key_to TEXT NOT NULL,
    key_subject TEXT NOT NULL
);

-- 4. The full-text index, docid = the Email's docid: the text of the same
-- fields as SQLite's email_fts, and a tsvector of all of them under a GIN
-- index (jmapd.storage.engines.postgres_search).  The 'simple' text
-- search configuration folds case and does not stem, like FTS5's
-- unicode61 tokenizer.  Rows go with their email_search row.
CREATE TABLE email_fts (
    docid BIGINT PRIMARY KEY REFERENCES email_search (docid) ON DELETE CASCADE,
    account_id TEXT NOT NULL,
    subject TEXT NOT NULL DEFAULT '',
    from_addr TEXT NOT NULL DEFAULT '',
    to_addr TEXT NOT NULL DEFAULT '',
    cc_addr TEXT NOT NULL DEFAULT '',
    bcc_addr TEXT NOT NULL DEFAULT '',
    body TEXT NOT NULL DEFAULT '',
    attachments TEXT NOT NULL DEFAULT '',
    document TSVECTOR GENERATED ALWAYS AS (
        to_tsvector('simple'::regconfig,
            subject || ' ' || from_addr || ' ' || to_addr || ' ' || cc_addr || ' '
            || bcc_addr || ' ' || body || ' ' || attachments)
    ) STORED
);
CREATE INDEX email_fts_document ON email_fts USING GIN (document);
CREATE INDEX email_fts_account ON email_fts (account_id, docid);
