-- The findings, suggestions and evidence of each verdict as rows rather than JSON text, so the
-- index returns typed values and JSON exists only at the API edge. Existing verdicts move over.

CREATE TABLE study_findings (
    study_instance_uid TEXT NOT NULL REFERENCES studies (study_instance_uid),
    position           INTEGER NOT NULL,
    code               TEXT NOT NULL,
    subject            TEXT NOT NULL,
    detail             TEXT NOT NULL,
    PRIMARY KEY (study_instance_uid, position)
) STRICT, WITHOUT ROWID;

CREATE TABLE study_suggestions (
    study_instance_uid TEXT NOT NULL REFERENCES studies (study_instance_uid),
    position           INTEGER NOT NULL,
    scheme             TEXT NOT NULL,
    code               TEXT NOT NULL,
    name               TEXT NOT NULL,
    score              REAL NOT NULL,
    PRIMARY KEY (study_instance_uid, position)
) STRICT, WITHOUT ROWID;

CREATE TABLE study_evidence (
    study_instance_uid TEXT NOT NULL REFERENCES studies (study_instance_uid),
    position           INTEGER NOT NULL,
    kind               TEXT NOT NULL,
    detail             TEXT NOT NULL,
    PRIMARY KEY (study_instance_uid, position)
) STRICT, WITHOUT ROWID;

INSERT INTO study_findings
SELECT v.study_instance_uid, CAST(j.key AS INTEGER), coalesce(json_extract(j.value, '$.code'), ''),
       coalesce(json_extract(j.value, '$.subject'), ''), coalesce(json_extract(j.value, '$.detail'), '')
FROM study_verdicts v, json_each(v.findings) j;

INSERT INTO study_suggestions
SELECT v.study_instance_uid, CAST(j.key AS INTEGER), coalesce(json_extract(j.value, '$.scheme'), ''),
       coalesce(json_extract(j.value, '$.code'), ''), coalesce(json_extract(j.value, '$.name'), ''),
       coalesce(json_extract(j.value, '$.score'), 0.0)
FROM study_verdicts v, json_each(v.suggestions) j;

INSERT INTO study_evidence
SELECT v.study_instance_uid, CAST(j.key AS INTEGER), coalesce(json_extract(j.value, '$.kind'), ''),
       coalesce(json_extract(j.value, '$.detail'), '')
FROM study_verdicts v, json_each(v.evidence) j;

ALTER TABLE study_verdicts DROP COLUMN findings;
ALTER TABLE study_verdicts DROP COLUMN suggestions;
ALTER TABLE study_verdicts DROP COLUMN evidence;
