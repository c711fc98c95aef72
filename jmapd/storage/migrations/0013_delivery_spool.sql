-- The delivery spool (lmtp-spool, jmapd/ingest/spool.py): a node keeps
-- received messages in a spool file of its own until they are filed.
--
-- The transaction that files a group of them records in delivery_spool
-- the sequence number of the last one, under the spool file's own id, so
-- that after a crash exactly those the spool holds after that number are
-- filed again.
--
-- A copy that cannot be filed once it was acknowledged (its account was
-- removed since RCPT, filing it fails) is kept in delivery_held, in the
-- same transaction, with the recipients it was not filed for (JSON
-- envelope) and why, until the operator deals with it (jmapd-admin spool).

CREATE TABLE delivery_spool (
    spool_id TEXT PRIMARY KEY,
    filed BIGINT NOT NULL
);

CREATE TABLE delivery_held (
    spool_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    queue_id TEXT NOT NULL,
    received REAL NOT NULL,
    envelope TEXT NOT NULL,
    message BLOB NOT NULL,
    reason TEXT NOT NULL,
    held_at REAL NOT NULL,
    PRIMARY KEY (spool_id, seq)
);
