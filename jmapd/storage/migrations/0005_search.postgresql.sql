-- Migration 0005 (Email/query and full-text search) for PostgreSQL: the
-- same schema as 0005_search.sql, which explains each part; what has no
-- translation from SQLite is written for PostgreSQL here.  Keep the two
-- files one schema (tests.storage.test_postgres compares the tables and
-- columns both engines end up with).
--
-- A PostgreSQL database is always created at the current schema (jmapd
-- before this version had no PostgreSQL engine), so the numbering of
-- existing rows that 0005_search.sql does is left out: there are none.
--
-- docids: jmapd.storage.search.allocate_docid takes the next number
-- under the account's lock (PostgreSQLEngine.lock_account), which does not
-- stop a writer of another account from taking the same number at the
-- same time.  A docid is therefore unique only within its account here,
-- and the search tables are keyed by (account_id, docid).

-- 1. docid (jmapd.storage.search.docid_base).
ALTER TABLE emails ADD COLUMN docid BIGINT NOT NULL DEFAULT 0;
CREATE INDEX emails_order ON emails (account_id, docid, id, thread_id);
CREATE INDEX emails_docid ON emails (docid, account_id, id, thread_id);
DROP INDEX emails_received;
CREATE INDEX emails_thread_of ON emails (account_id, id, thread_id);

-- 2. List views.
ALTER TABLE email_mailboxes ADD COLUMN docid BIGINT NOT NULL DEFAULT 0;
CREATE INDEX email_mailboxes_order ON email_mailboxes (account_id, mailbox_id, docid, email_id);
DROP INDEX email_mailboxes_mailbox;

-- 3. Header fields and sort keys.
CREATE TABLE email_search (
    docid BIGINT NOT NULL,
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    headers TEXT NOT NULL,
    sort_from TEXT NOT NULL,
    sort_to TEXT NOT NULL,
    sort_subject TEXT NOT NULL,
    key_from TEXT NOT NULL,
    key_to TEXT NOT NULL,
    key_subject TEXT NOT NULL,
    PRIMARY KEY (account_id, docid)
);

-- 4. The full-text index.  The text search configuration jmapd_search
-- is 'simple' (cuts words and folds case, no stemming, no stop words, like
-- FTS5's unicode61 tokenizer) with accents removed first by the unaccent
-- dictionary, like remove_diacritics: "cafe" finds "Café".  unaccent is a
-- trusted extension (PostgreSQL 13 and later): the owner of the database
-- may create it without being a superuser.
CREATE EXTENSION IF NOT EXISTS unaccent;
CREATE TEXT SEARCH CONFIGURATION jmapd_search (COPY = pg_catalog.simple);
ALTER TEXT SEARCH CONFIGURATION jmapd_search
    ALTER MAPPING FOR asciiword, word, numword, asciihword, hword, numhword, hword_asciipart, hword_part, hword_numpart
    WITH unaccent, simple;

-- One row per Email, docid = the Email's docid: the text of the same
-- fields as SQLite's email_fts, and a tsvector of all of them under a GIN
-- index (jmapd.storage.engines.postgres_search).  ASCII punctuation (string.punctuation;
-- chr(59) is the semicolon, which would end the statement here) is
-- read as a space before the words are cut, as unicode61 does (the
-- default parser would keep "plan.pdf" or "a@example.com" as one word).
-- Rows go with their email_search row.
CREATE TABLE email_fts (
    docid BIGINT NOT NULL,
    account_id TEXT NOT NULL,
    subject TEXT NOT NULL DEFAULT '',
    from_addr TEXT NOT NULL DEFAULT '',
    to_addr TEXT NOT NULL DEFAULT '',
    cc_addr TEXT NOT NULL DEFAULT '',
    bcc_addr TEXT NOT NULL DEFAULT '',
    body TEXT NOT NULL DEFAULT '',
    attachments TEXT NOT NULL DEFAULT '',
    document TSVECTOR GENERATED ALWAYS AS (
        to_tsvector('jmapd_search'::regconfig, translate(
            subject || ' ' || from_addr || ' ' || to_addr || ' ' || cc_addr || ' '
            || bcc_addr || ' ' || body || ' ' || attachments,
            '!"#$%&''()*+,-./:<=>?@[\]^_`{|}~' || chr(59), '                                '))
    ) STORED,
    PRIMARY KEY (account_id, docid),
    FOREIGN KEY (account_id, docid) REFERENCES email_search (account_id, docid) ON DELETE CASCADE
);
CREATE INDEX email_fts_document ON email_fts USING GIN (document);
