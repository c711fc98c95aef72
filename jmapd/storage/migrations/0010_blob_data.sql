-- The content of blobs, for blob-store: database (jmapd.blobs.database):
-- raw messages and uploads in the database itself, so that nodes sharing
-- a PostgreSQL database need no shared file system.  With the default
-- blob-store (files under db-path) both tables stay empty.
--
-- A blob is stored under its content-addressed blob id (as a file would
-- be named) as one row of blob_data, written in the same transaction as
-- its chunks: a blob with a blob_data row is complete.  Its content is cut
-- into rows of blob_chunks of at most 1 MiB, so that reading a large blob
-- never needs it whole in memory; seq counts from 0.  Chunks are written
-- before the content's hash is known (a streamed upload) under a key that
-- is not a blob id, and renamed in that transaction; so there is no
-- foreign key between the two tables.

CREATE TABLE blob_data (
    blob_id TEXT PRIMARY KEY,
    size BIGINT NOT NULL,
    chunks INTEGER NOT NULL
);

CREATE TABLE blob_chunks (
    blob_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (blob_id, seq)
);
