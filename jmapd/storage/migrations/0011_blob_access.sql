-- Blobs a user put into an account that is not their own (an upload to,
-- or a Blob/copy into, an account shared with them), so that they can use
-- them there: Email/import into a shared Mailbox takes its blob from that
-- account.  Anyone else reads a shared account's blobs only through the
-- Emails they may read.  A row goes when the account's blobs row goes.

CREATE TABLE blob_access (
    account_id TEXT NOT NULL,
    blob_id TEXT NOT NULL,
    principal_id TEXT NOT NULL,
    PRIMARY KEY (account_id, blob_id, principal_id),
    FOREIGN KEY (account_id, blob_id) REFERENCES blobs (account_id, blob_id) ON DELETE CASCADE
);
