-- The delivery spool (lmtp-spool, jmapd/ingest/spool.py): each node keeps
-- received messages in a spool file of its own until they are filed.  The
-- transaction that files a group of them records here the sequence number
-- of the last one, so that after a crash the node files again exactly
-- those its spool holds after that number.  holds lists (JSON) the
-- copies up to that number that could not be filed and that the spool may
-- not have set aside yet: they are set aside at start before the filed
-- records are deleted.  node is the spool file's own id.

CREATE TABLE delivery_spool (
    node TEXT PRIMARY KEY,
    filed BIGINT NOT NULL,
    holds TEXT NOT NULL
);
