-- Storage Commitment requests (PS3.4 Annex J): kept until their N-EVENT-REPORT is answered,
-- so a report survives a restart.
CREATE TABLE commitment_requests (
    id               INTEGER PRIMARY KEY,
    transaction_uid  TEXT NOT NULL,
    calling_ae_title TEXT NOT NULL,
    peer_address     TEXT NOT NULL,
    received_at      TEXT NOT NULL,
    state            TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'reported')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT NOT NULL,             -- RFC 3339
    last_error       TEXT NOT NULL DEFAULT '',
    reported_at      TEXT
) STRICT;

CREATE INDEX commitment_requests_pending ON commitment_requests (state, next_attempt_at);

CREATE TABLE commitment_items (
    request_id       INTEGER NOT NULL REFERENCES commitment_requests (id),
    position         INTEGER NOT NULL,
    sop_class_uid    TEXT NOT NULL,
    sop_instance_uid TEXT NOT NULL,
    PRIMARY KEY (request_id, position)
) STRICT;

-- Attributes C-FIND matches on besides those already indexed.
ALTER TABLE studies ADD COLUMN patient_birth_date TEXT NOT NULL DEFAULT '';
ALTER TABLE studies ADD COLUMN patient_sex TEXT NOT NULL DEFAULT '';
ALTER TABLE studies ADD COLUMN study_id TEXT NOT NULL DEFAULT '';
ALTER TABLE studies ADD COLUMN referring_physician_name TEXT NOT NULL DEFAULT '';
ALTER TABLE series ADD COLUMN series_date TEXT NOT NULL DEFAULT '';
ALTER TABLE series ADD COLUMN series_time TEXT NOT NULL DEFAULT '';
CREATE INDEX studies_patient_id ON studies (patient_id);
