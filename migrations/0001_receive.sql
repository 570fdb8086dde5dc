-- Received studies, series and instances: what the receive path indexes for each C-STORE.
-- Times are RFC 3339 UTC text; DICOM dates and times are kept as received (DA/TM text).

CREATE TABLE studies (
    study_instance_uid              TEXT PRIMARY KEY NOT NULL,
    patient_id                      TEXT NOT NULL DEFAULT '',
    patient_name                    TEXT NOT NULL DEFAULT '',
    accession_number                TEXT NOT NULL DEFAULT '',
    study_date                      TEXT NOT NULL DEFAULT '',
    study_time                      TEXT NOT NULL DEFAULT '',
    study_description               TEXT NOT NULL DEFAULT '',
    requested_procedure_description TEXT NOT NULL DEFAULT '',
    first_received_at               TEXT NOT NULL,
    last_received_at                TEXT NOT NULL
) STRICT;

CREATE INDEX studies_last_received_at ON studies (last_received_at);

-- Items of Procedure Code Sequence (0008,1032) and Requested Procedure Code Sequence (0032,1064).
CREATE TABLE study_procedure_codes (
    study_instance_uid       TEXT NOT NULL REFERENCES studies (study_instance_uid),
    sequence                 TEXT NOT NULL CHECK (sequence IN ('procedure', 'requested_procedure')),
    code_value               TEXT NOT NULL,
    coding_scheme_designator TEXT NOT NULL,
    code_meaning             TEXT NOT NULL,
    UNIQUE (study_instance_uid, sequence, code_value, coding_scheme_designator, code_meaning)
) STRICT;

CREATE TABLE series (
    series_instance_uid     TEXT PRIMARY KEY NOT NULL,
    study_instance_uid      TEXT NOT NULL REFERENCES studies (study_instance_uid),
    modality                TEXT NOT NULL DEFAULT '',
    series_number           INTEGER,
    series_description      TEXT NOT NULL DEFAULT '',
    protocol_name           TEXT NOT NULL DEFAULT '',
    station_name            TEXT NOT NULL DEFAULT '',
    manufacturer            TEXT NOT NULL DEFAULT '',
    manufacturer_model_name TEXT NOT NULL DEFAULT '',
    frame_of_reference_uid  TEXT NOT NULL DEFAULT '',
    first_received_at       TEXT NOT NULL,
    last_received_at        TEXT NOT NULL
) STRICT;

CREATE INDEX series_study ON series (study_instance_uid);

CREATE TABLE instances (
    sop_instance_uid       TEXT PRIMARY KEY NOT NULL,
    series_instance_uid    TEXT NOT NULL REFERENCES series (series_instance_uid),
    sop_class_uid          TEXT NOT NULL,
    instance_number        INTEGER,
    image_type             TEXT NOT NULL DEFAULT '',  -- values joined with a backslash, as in DICOM
    image_position_patient TEXT NOT NULL DEFAULT '',  -- x\y\z, empty when absent
    frame_of_reference_uid TEXT NOT NULL DEFAULT '',
    image_comments         TEXT NOT NULL DEFAULT '',
    transfer_syntax_uid    TEXT NOT NULL,
    calling_ae_title       TEXT NOT NULL,
    called_ae_title        TEXT NOT NULL,
    peer_address           TEXT NOT NULL,
    received_at            TEXT NOT NULL,
    file_size              INTEGER NOT NULL,
    file_path              TEXT NOT NULL,             -- relative to storage.dir
    content_hash           TEXT NOT NULL              -- SHA-256 of the data set bytes as received
) STRICT;

CREATE INDEX instances_series ON instances (series_instance_uid);

-- A re-sent SOP Instance UID whose bytes differ replaces the stored file; the replacement is kept here.
CREATE TABLE instance_replacements (
    sop_instance_uid  TEXT NOT NULL REFERENCES instances (sop_instance_uid),
    replaced_at       TEXT NOT NULL,
    old_content_hash  TEXT NOT NULL,
    new_content_hash  TEXT NOT NULL,
    calling_ae_title  TEXT NOT NULL,
    peer_address      TEXT NOT NULL
) STRICT;
