-- Naming verdicts (issue: standardized nomenclature, HCPCS G9318/G9319/G9320) and the
-- nomenclature sources they are judged against.

ALTER TABLE series ADD COLUMN respiratory_attributes INTEGER NOT NULL DEFAULT 0;
-- The series kind the site's conventions give it ('' when none), and the series verdict:
-- 'conforming', 'nonstandard' or 'not-judged'.
ALTER TABLE series ADD COLUMN kind TEXT NOT NULL DEFAULT '';
ALTER TABLE series ADD COLUMN verdict TEXT NOT NULL DEFAULT '';

-- One imported nomenclature file. A newer release of the same format replaces the older one.
CREATE TABLE nomenclature_sources (
    id          INTEGER PRIMARY KEY,
    format      TEXT NOT NULL,
    file_name   TEXT NOT NULL,
    sha256      TEXT NOT NULL UNIQUE,
    rows        INTEGER NOT NULL,
    names       INTEGER NOT NULL,
    imported_at TEXT NOT NULL
) STRICT;

CREATE TABLE nomenclature_names (
    source_id  INTEGER NOT NULL REFERENCES nomenclature_sources (id) ON DELETE CASCADE,
    scheme     TEXT NOT NULL CHECK (scheme IN ('radlex', 'loinc')),
    code       TEXT NOT NULL,
    long_name  TEXT NOT NULL,
    short_name TEXT NOT NULL,
    modality   TEXT NOT NULL,
    PRIMARY KEY (source_id, scheme, code)
) STRICT;

-- The current verdict of each study. JSON columns hold the findings, suggestions and evidence
-- exactly as `simgate nomenclature check --json` prints them.
CREATE TABLE study_verdicts (
    study_instance_uid TEXT PRIMARY KEY NOT NULL REFERENCES studies (study_instance_uid),
    status             TEXT NOT NULL CHECK (status IN ('conforming', 'needs-reason', 'reason-documented')),
    standard_scheme    TEXT NOT NULL DEFAULT '',
    standard_code      TEXT NOT NULL DEFAULT '',
    standard_name      TEXT NOT NULL DEFAULT '',
    matched_by         TEXT NOT NULL DEFAULT '',
    findings           TEXT NOT NULL DEFAULT '[]',
    suggestions        TEXT NOT NULL DEFAULT '[]',
    rt_planning        INTEGER NOT NULL DEFAULT 0,
    evidence           TEXT NOT NULL DEFAULT '[]',
    suggested_reason   TEXT NOT NULL DEFAULT '',
    -- When the rules first said this study needs a reason (the waiting time starts here).
    needs_reason_since TEXT,
    evaluated_at       TEXT NOT NULL
) STRICT;

CREATE INDEX study_verdicts_status ON study_verdicts (status);

-- Every change of status, with its cause.
CREATE TABLE study_status_history (
    study_instance_uid TEXT NOT NULL REFERENCES studies (study_instance_uid),
    changed_at         TEXT NOT NULL,
    from_status        TEXT,
    to_status          TEXT NOT NULL,
    cause              TEXT NOT NULL
) STRICT;

CREATE INDEX study_status_history_study ON study_status_history (study_instance_uid);

-- Documented medical reasons: append-only; the latest record supersedes, history stays.
CREATE TABLE study_reasons (
    id                 INTEGER PRIMARY KEY,
    study_instance_uid TEXT NOT NULL REFERENCES studies (study_instance_uid),
    reason_code        TEXT NOT NULL,
    note               TEXT NOT NULL DEFAULT '',
    documented_by      TEXT NOT NULL,
    documented_at      TEXT NOT NULL
) STRICT;

CREATE INDEX study_reasons_study ON study_reasons (study_instance_uid);

CREATE TRIGGER study_reasons_append_only_update BEFORE UPDATE ON study_reasons
BEGIN
    SELECT RAISE(ABORT, 'study_reasons is append-only');
END;

CREATE TRIGGER study_reasons_append_only_delete BEFORE DELETE ON study_reasons
BEGIN
    SELECT RAISE(ABORT, 'study_reasons is append-only');
END;
