-- Store-and-forward: one queue row per instance and destination, written in the same
-- transaction that indexes the instance.

CREATE TABLE forward_queue (
    id                  INTEGER PRIMARY KEY,      -- arrival order; sending order per destination
    destination         TEXT NOT NULL,
    sop_instance_uid    TEXT NOT NULL REFERENCES instances (sop_instance_uid),
    study_instance_uid  TEXT NOT NULL,
    series_instance_uid TEXT NOT NULL,
    state               TEXT NOT NULL CHECK (state IN ('pending', 'in-flight', 'sent', 'dead')),
    -- Bumped when the instance is replaced or queued again, so a send of an older version in
    -- flight at that moment does not mark the newer one sent.
    generation          INTEGER NOT NULL DEFAULT 0,
    attempts            INTEGER NOT NULL DEFAULT 0,
    next_attempt_at     TEXT,                     -- RFC 3339; NULL = now
    last_error          TEXT NOT NULL DEFAULT '',
    last_status         INTEGER,                  -- last DIMSE status received, if any
    queued_at           TEXT NOT NULL,
    sent_at             TEXT,
    UNIQUE (destination, sop_instance_uid)
) STRICT;

CREATE INDEX forward_queue_work ON forward_queue (destination, state, id);
CREATE INDEX forward_queue_study ON forward_queue (study_instance_uid);

-- Set when retention removed the spool file; the index rows stay.
ALTER TABLE instances ADD COLUMN file_deleted_at TEXT;
