-- Where the sight of a user other than an account's owner may have
-- changed (RFC 9670, RFC 8621 section 2 myRights): an Email left or joined
-- a Mailbox someone else may read, a grant was given or taken, a group
-- gained or lost a member, a shared Mailbox was destroyed.  One row per
-- object and principal (a user, or a group its members inherit from), with
-- the state of the object's type right after the change.
--
-- Mailbox/changes, Thread/changes, Email/changes and the /queryChanges of
-- a shared account read it to report what the grantee gained and lost
-- sight of, and nothing of what they could never see: without it, the
-- changelog alone cannot tell an Email that moved out of a shared Mailbox
-- (which the grantee must see destroyed) from one that was never in one
-- (whose id they must not learn).
CREATE TABLE sharing_sight (
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    principal_id TEXT NOT NULL,
    type TEXT NOT NULL,
    object_id TEXT NOT NULL,
    modseq BIGINT NOT NULL
);
CREATE INDEX sharing_sight_lookup ON sharing_sight (account_id, type, modseq, principal_id);
