-- Every write made through the web pages or the API: who, when, what, from where. Append-only.
CREATE TABLE audit_log (
    id                 INTEGER PRIMARY KEY,
    at                 TEXT NOT NULL,
    user_name          TEXT NOT NULL,
    action             TEXT NOT NULL,
    study_instance_uid TEXT,
    detail             TEXT NOT NULL DEFAULT '',
    remote_address     TEXT NOT NULL
) STRICT;

CREATE INDEX audit_log_study ON audit_log (study_instance_uid);

CREATE TRIGGER audit_log_append_only_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

CREATE TRIGGER audit_log_append_only_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;
