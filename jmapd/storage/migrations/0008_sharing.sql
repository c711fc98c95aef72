-- Sharing (RFC 9670) and shared Mailboxes (RFC 8621 section 2).
--
-- Every account has an individual Principal whose id is the account id;
-- groups are Principals of their own with members.  Principals are one
-- directory for the whole server, so their changes have a counter of
-- their own (sharing_counters 'principal') rather than an account's
-- changelog.  The 'acl' counter goes up with every change of who may see
-- what (a grant, a group's members, a subscription): the sharings and acl
-- caches key their entries with it, so any process sees a change on the
-- next request.

CREATE TABLE principals (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,                 -- individual | group
    name TEXT NOT NULL,
    description TEXT,
    time_zone TEXT,
    account_id TEXT REFERENCES accounts (id) ON DELETE CASCADE,  -- NULL for groups
    created_modseq BIGINT NOT NULL,
    modseq BIGINT NOT NULL,
    destroyed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX principals_modseq ON principals (modseq);

CREATE TABLE principal_members (
    group_id TEXT NOT NULL REFERENCES principals (id) ON DELETE CASCADE,
    member_id TEXT NOT NULL REFERENCES principals (id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, member_id)
);
CREATE INDEX principal_members_member ON principal_members (member_id);

CREATE TABLE sharing_counters (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO sharing_counters (name, value) VALUES ('principal', 1);
INSERT INTO sharing_counters (name, value) VALUES ('acl', 1);

INSERT INTO principals (id, type, name, account_id, created_modseq, modseq)
    SELECT id, 'individual', name, id, 1, 1 FROM accounts;

-- Mailbox shareWith: the rights (comma-separated MailboxRights names that
-- are true) a principal other than the owner has on a Mailbox.
CREATE TABLE mailbox_acl (
    account_id TEXT NOT NULL,
    mailbox_id TEXT NOT NULL,
    principal_id TEXT NOT NULL REFERENCES principals (id) ON DELETE CASCADE,
    rights TEXT NOT NULL,
    PRIMARY KEY (account_id, mailbox_id, principal_id),
    FOREIGN KEY (account_id, mailbox_id) REFERENCES mailboxes (account_id, id) ON DELETE CASCADE
);
CREATE INDEX mailbox_acl_principal ON mailbox_acl (principal_id, account_id);

-- isSubscribed of a shared Mailbox for a user other than the owner (the
-- owner's is mailboxes.is_subscribed): a row means subscribed.
CREATE TABLE mailbox_subscriptions (
    account_id TEXT NOT NULL,
    mailbox_id TEXT NOT NULL,
    principal_id TEXT NOT NULL REFERENCES principals (id) ON DELETE CASCADE,
    PRIMARY KEY (account_id, mailbox_id, principal_id),
    FOREIGN KEY (account_id, mailbox_id) REFERENCES mailboxes (account_id, id) ON DELETE CASCADE
);
CREATE INDEX mailbox_subscriptions_principal ON mailbox_subscriptions (principal_id, account_id);

-- ShareNotifications, in the grantee's own account (its changelog type
-- ShareNotification gives their states).
CREATE TABLE share_notifications (
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    id TEXT NOT NULL,
    created REAL NOT NULL,
    changed_by TEXT NOT NULL,           -- JSON Person
    object_type TEXT NOT NULL,
    object_account_id TEXT NOT NULL,
    object_id TEXT NOT NULL,
    name TEXT NOT NULL,
    old_rights TEXT,                    -- JSON or NULL
    new_rights TEXT,                    -- JSON or NULL
    PRIMARY KEY (account_id, id)
);
