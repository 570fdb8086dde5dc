-- The safety gate: each instance's own identity and geometry attributes, the findings of the
-- identity and geometry checks, the series check state, and queue rows that are held, wait
-- for their series' check, or were rejected.

-- What the instance itself says (the series row keeps the study it is filed under).
ALTER TABLE instances ADD COLUMN study_instance_uid TEXT NOT NULL DEFAULT '';
ALTER TABLE instances ADD COLUMN patient_id TEXT NOT NULL DEFAULT '';
ALTER TABLE instances ADD COLUMN patient_name TEXT NOT NULL DEFAULT '';
ALTER TABLE instances ADD COLUMN patient_birth_date TEXT NOT NULL DEFAULT '';
ALTER TABLE instances ADD COLUMN patient_sex TEXT NOT NULL DEFAULT '';
-- Geometry, as received: backslash-separated decimals, empty when absent.
ALTER TABLE instances ADD COLUMN image_orientation_patient TEXT NOT NULL DEFAULT '';
ALTER TABLE instances ADD COLUMN pixel_spacing TEXT NOT NULL DEFAULT '';
ALTER TABLE instances ADD COLUMN rows INTEGER;
ALTER TABLE instances ADD COLUMN columns INTEGER;
ALTER TABLE instances ADD COLUMN slice_thickness REAL;
ALTER TABLE instances ADD COLUMN gantry_tilt REAL;
ALTER TABLE instances ADD COLUMN number_of_frames INTEGER;

UPDATE instances SET study_instance_uid = (
    SELECT s.study_instance_uid FROM series s WHERE s.series_instance_uid = instances.series_instance_uid);
UPDATE instances SET (patient_id, patient_name, patient_birth_date, patient_sex) = (
    SELECT st.patient_id, st.patient_name, st.patient_birth_date, st.patient_sex
    FROM series s JOIN studies st USING (study_instance_uid)
    WHERE s.series_instance_uid = instances.series_instance_uid);

-- NULL: instances arrived since the last geometry check; due once the series is quiet.
-- Series stored before this version count as checked (no geometry was kept for them).
ALTER TABLE series ADD COLUMN geometry_checked_at TEXT;
ALTER TABLE series ADD COLUMN geometry TEXT NOT NULL DEFAULT ''
    CHECK (geometry IN ('', 'passed', 'findings', 'skipped', 'not-checked'));
UPDATE series SET geometry_checked_at = last_received_at, geometry = 'not-checked';
-- On a column the per-instance series update never sets, so receiving does not rewrite it.
CREATE INDEX series_geometry_due ON series (series_instance_uid) WHERE geometry_checked_at IS NULL;

CREATE TABLE safety_findings (
    id                  INTEGER PRIMARY KEY,
    study_instance_uid  TEXT NOT NULL,   -- the study the series is filed under
    series_instance_uid TEXT NOT NULL,
    sop_instance_uid    TEXT NOT NULL DEFAULT '',  -- empty: about the whole series
    code                TEXT NOT NULL,
    attribute           TEXT NOT NULL,
    expected            TEXT NOT NULL,
    found               TEXT NOT NULL,
    phi                 INTEGER NOT NULL,
    detail              TEXT NOT NULL,
    found_at            TEXT NOT NULL
) STRICT;

CREATE INDEX safety_findings_study ON safety_findings (study_instance_uid);
CREATE INDEX safety_findings_series ON safety_findings (series_instance_uid, code);

-- The queue gains three states: held (a finding the destination holds on; an admin releases
-- or rejects it), waiting (the destination takes a series once its geometry check passed) and
-- rejected (never sent). A CHECK constraint cannot be altered: the table is rebuilt.
CREATE TABLE forward_queue_new (
    id                  INTEGER PRIMARY KEY,
    destination         TEXT NOT NULL,
    sop_instance_uid    TEXT NOT NULL REFERENCES instances (sop_instance_uid),
    study_instance_uid  TEXT NOT NULL,
    series_instance_uid TEXT NOT NULL,
    state               TEXT NOT NULL CHECK (state IN
                            ('pending', 'in-flight', 'sent', 'dead', 'held', 'waiting', 'rejected')),
    generation          INTEGER NOT NULL DEFAULT 0,
    attempts            INTEGER NOT NULL DEFAULT 0,
    next_attempt_at     TEXT,
    last_error          TEXT NOT NULL DEFAULT '',
    last_status         INTEGER,
    queued_at           TEXT NOT NULL,
    sent_at             TEXT,
    sent_as             TEXT NOT NULL DEFAULT '',
    -- Why a row is held: the finding codes, comma-separated.
    held_for            TEXT NOT NULL DEFAULT '',
    -- Whether the hold came from the instance's own findings or its series' check.
    held_by             TEXT NOT NULL DEFAULT '' CHECK (held_by IN ('', 'instance', 'series')),
    UNIQUE (destination, sop_instance_uid)
) STRICT;

INSERT INTO forward_queue_new (id, destination, sop_instance_uid, study_instance_uid,
    series_instance_uid, state, generation, attempts, next_attempt_at, last_error, last_status,
    queued_at, sent_at, sent_as)
SELECT id, destination, sop_instance_uid, study_instance_uid, series_instance_uid, state,
    generation, attempts, next_attempt_at, last_error, last_status, queued_at, sent_at, sent_as
FROM forward_queue;

DROP TABLE forward_queue;
ALTER TABLE forward_queue_new RENAME TO forward_queue;
CREATE INDEX forward_queue_work ON forward_queue (destination, state, id);
CREATE INDEX forward_queue_study ON forward_queue (study_instance_uid);
CREATE INDEX forward_queue_series ON forward_queue (series_instance_uid, state);

-- What an RT object's frame of reference belongs to. (The per-instance series update leaves
-- frame_of_reference_uid alone once set, so receiving does not rewrite this index.)
CREATE INDEX series_frame_of_reference ON series (frame_of_reference_uid);
