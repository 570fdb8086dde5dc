//! The naming table family: imported nomenclature sources, the facts a study verdict is
//! computed from, verdicts with their findings, suggestions and evidence, the status history,
//! and documented reasons. The verdict itself is computed by the pure [`crate::naming`] module.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ValueRef};
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::{Db, StoreError};
use crate::dicom::CodeItem;
use crate::naming::{
    Scheme, SeriesFacts, SeriesVerdict, StandardName, StudyFacts, StudyStatus, Verdict,
};

impl FromSql for StudyStatus {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let text = value.as_str()?;
        StudyStatus::parse(text)
            .ok_or_else(|| FromSqlError::Other(format!("study status {text:?}").into()))
    }
}

/// What importing a nomenclature file did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum ImportOutcome {
    /// The same file (by SHA-256) is already imported: nothing changed.
    Unchanged { imported_at: String },
    /// Imported; older releases of the same format were replaced.
    Imported { replaced: Vec<String> },
}

/// A nomenclature file about to be imported.
#[derive(Debug, Clone, Copy)]
pub struct NewSource<'a> {
    /// `radlex-core-playbook`, `loinc-rsna-radiology-playbook`...
    pub format: &'a str,
    pub file_name: &'a str,
    pub sha256: &'a str,
    /// Data rows read from the file.
    pub rows: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct SourceRow {
    pub format: String,
    pub file_name: String,
    pub sha256: String,
    pub rows: i64,
    pub names: i64,
    pub imported_at: String,
}

impl Db<'_> {
    /// Stores a parsed nomenclature file as a versioned source; the same file (by SHA-256)
    /// again changes nothing, a newer file of the same format replaces the older.
    pub fn import_source(
        &self,
        source: &NewSource<'_>,
        names: &[StandardName],
        now: &str,
    ) -> Result<ImportOutcome, StoreError> {
        let NewSource {
            format,
            file_name,
            sha256,
            rows,
        } = *source;
        let tx = self.conn;
        if let Some(imported_at) = tx
            .query_row(
                "SELECT imported_at FROM nomenclature_sources WHERE sha256 = ?1",
                [sha256],
                |r| r.get(0),
            )
            .optional()?
        {
            return Ok(ImportOutcome::Unchanged { imported_at });
        }
        let replaced: Vec<String> = tx
            .prepare("SELECT file_name FROM nomenclature_sources WHERE format = ?1 ORDER BY id")?
            .query_map([format], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        tx.execute(
        "DELETE FROM nomenclature_names WHERE source_id IN (SELECT id FROM nomenclature_sources WHERE format = ?1)",
        [format],
    )?;
        tx.execute(
            "DELETE FROM nomenclature_sources WHERE format = ?1",
            [format],
        )?;
        tx.execute(
            "INSERT INTO nomenclature_sources (format, file_name, sha256, rows, names, imported_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                format,
                file_name,
                sha256,
                rows as i64,
                names.len() as i64,
                now
            ],
        )?;
        let source_id = tx.last_insert_rowid();
        {
            let mut insert = tx.prepare(
            "INSERT OR REPLACE INTO nomenclature_names (source_id, scheme, code, long_name, short_name, modality)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
            for name in names {
                insert.execute(params![
                    source_id,
                    name.scheme.as_str(),
                    name.code,
                    name.long_name,
                    name.short_name,
                    name.modality
                ])?;
            }
        }
        Ok(ImportOutcome::Imported { replaced })
    }

    /// Every imported standard name, oldest source first.
    pub fn imported_names(&self) -> Result<Vec<StandardName>, StoreError> {
        let mut stmt = self.conn.prepare(
        "SELECT scheme, code, long_name, short_name, modality FROM nomenclature_names ORDER BY source_id, rowid",
    )?;
        let rows = stmt.query_map([], |r| {
            let scheme: String = r.get(0)?;
            Ok(StandardName {
                scheme: Scheme::parse(&scheme).unwrap_or(Scheme::Radlex),
                code: r.get(1)?,
                long_name: r.get(2)?,
                short_name: r.get(3)?,
                modality: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The imported nomenclature files, oldest first.
    pub fn sources(&self) -> Result<Vec<SourceRow>, StoreError> {
        let mut stmt =
        self.conn.prepare("SELECT format, file_name, sha256, rows, names, imported_at FROM nomenclature_sources ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            Ok(SourceRow {
                format: r.get(0)?,
                file_name: r.get(1)?,
                sha256: r.get(2)?,
                rows: r.get(3)?,
                names: r.get(4)?,
                imported_at: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Gathers what the verdict looks at for one study; also the series UIDs in the order of
    /// `StudyFacts::series`.
    pub fn study_facts(&self, study: &str) -> Result<(StudyFacts, Vec<String>), StoreError> {
        let conn = self.conn;
        let (study_description, requested_procedure_description): (String, String) = conn.query_row(
        "SELECT study_description, requested_procedure_description FROM studies WHERE study_instance_uid = ?1",
        [study],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
        let codes = conn
        .prepare_cached(
            "SELECT code_value, coding_scheme_designator, code_meaning FROM study_procedure_codes
             WHERE study_instance_uid = ?1 ORDER BY sequence, rowid",
        )?
        .query_map([study], |r| {
            Ok(CodeItem {
                code_value: r.get(0)?,
                coding_scheme_designator: r.get(1)?,
                code_meaning: r.get(2)?,
            })
        })?
        .collect::<Result<_, _>>()?;
        let mut series_uids = Vec::new();
        let mut series = Vec::new();
        let mut stations = Vec::new();
        let mut protocols = Vec::new();
        let mut image_frames = Vec::new();
        let mut rt_frames: Vec<(String, String)> = Vec::new();
        {
            let mut stmt = conn.prepare_cached(
            "SELECT se.series_instance_uid, se.series_description, se.modality, se.station_name, se.protocol_name,
                    se.frame_of_reference_uid, se.respiratory_attributes,
                    (SELECT sop_class_uid FROM instances WHERE series_instance_uid = se.series_instance_uid LIMIT 1),
                    (SELECT group_concat(DISTINCT image_type) FROM instances WHERE series_instance_uid = se.series_instance_uid)
             FROM series se WHERE se.study_instance_uid = ?1
             ORDER BY se.series_number IS NULL, se.series_number, se.first_received_at",
        )?;
            let mut rows = stmt.query([study])?;
            while let Some(r) = rows.next()? {
                let uid: String = r.get(0)?;
                let modality: String = r.get(2)?;
                let station: String = r.get(3)?;
                let protocol: String = r.get(4)?;
                let frame: String = r.get(5)?;
                let image_types: Option<String> = r.get(8)?;
                let mut image_type: Vec<String> = image_types
                    .unwrap_or_default()
                    .split([',', '\\'])
                    .filter(|v| !v.is_empty())
                    .map(str::to_string)
                    .collect();
                image_type.sort();
                image_type.dedup();
                if !station.is_empty() && !stations.contains(&station) {
                    stations.push(station);
                }
                if !protocol.is_empty() && !protocols.contains(&protocol) {
                    protocols.push(protocol);
                }
                if matches!(modality.as_str(), "RTSTRUCT" | "RTPLAN" | "RTDOSE" | "REG") {
                    rt_frames.push((modality.clone(), frame));
                } else if !frame.is_empty() {
                    image_frames.push(frame);
                }
                series.push(SeriesFacts {
                    series_description: r.get(1)?,
                    modality,
                    sop_class_uid: r.get::<_, Option<String>>(7)?.unwrap_or_default(),
                    image_type,
                    respiratory_attributes: r.get::<_, i64>(6)? != 0,
                });
                series_uids.push(uid);
            }
        }
        let calling_ae_titles = conn
        .prepare_cached(
            "SELECT DISTINCT i.calling_ae_title FROM instances i JOIN series se USING (series_instance_uid)
             WHERE se.study_instance_uid = ?1",
        )?
        .query_map([study], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
        let mut rt_objects_on_frame_of_reference: Vec<String> = rt_frames
            .into_iter()
            .filter(|(_, frame)| !frame.is_empty() && image_frames.contains(frame))
            .map(|(modality, _)| modality)
            .collect();
        rt_objects_on_frame_of_reference.dedup();
        let facts = StudyFacts {
            study_description,
            requested_procedure_description,
            codes,
            station_names: stations,
            calling_ae_titles,
            protocol_names: protocols,
            series,
            rt_objects_on_frame_of_reference,
        };
        Ok((facts, series_uids))
    }

    /// Records a verdict: the study's status (a documented reason turns needs-reason into
    /// reason-documented), its findings, suggestions and evidence, each series' kind, and a
    /// history row when the status changed. Returns the status recorded.
    pub fn record_verdict(
        &self,
        study: &str,
        verdict: &Verdict,
        series_uids: &[String],
        cause: &str,
        now: &str,
    ) -> Result<StudyStatus, StoreError> {
        let conn = self.conn;
        let documented = self.latest_reason_code(study)?.is_some();
        let status = match verdict.status {
            StudyStatus::NeedsReason if documented => StudyStatus::ReasonDocumented,
            other => other,
        };
        let previous: Option<(StudyStatus, Option<String>)> = conn
            .prepare_cached(
                "SELECT status, needs_reason_since FROM study_verdicts WHERE study_instance_uid = ?1",
            )?
            .query_row([study], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let needs_reason_since = match (&previous, verdict.status) {
            (Some((_, Some(since))), StudyStatus::NeedsReason) => Some(since.clone()),
            (_, StudyStatus::NeedsReason) => Some(now.to_string()),
            _ => None,
        };
        let (scheme, code, name, by) = match &verdict.standard_match {
            Some(m) => (m.scheme.as_str(), m.code.as_str(), m.name.as_str(), m.by),
            None => ("", "", "", ""),
        };
        conn.prepare_cached(
            "INSERT INTO study_verdicts (study_instance_uid, status, standard_scheme, standard_code,
                 standard_name, matched_by, rt_planning, suggested_reason, needs_reason_since, evaluated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT (study_instance_uid) DO UPDATE SET
                 status = excluded.status, standard_scheme = excluded.standard_scheme,
                 standard_code = excluded.standard_code, standard_name = excluded.standard_name,
                 matched_by = excluded.matched_by, rt_planning = excluded.rt_planning,
                 suggested_reason = excluded.suggested_reason,
                 needs_reason_since = excluded.needs_reason_since, evaluated_at = excluded.evaluated_at",
        )?
        .execute(params![
            study,
            status.as_str(),
            scheme,
            code,
            name,
            by,
            verdict.rt_planning,
            verdict.suggested_reason.clone().unwrap_or_default(),
            needs_reason_since,
            now,
        ])?;
        for table in ["study_findings", "study_suggestions", "study_evidence"] {
            conn.prepare_cached(&format!(
                "DELETE FROM {table} WHERE study_instance_uid = ?1"
            ))?
            .execute([study])?;
        }
        let mut finding = conn.prepare_cached(
            "INSERT INTO study_findings (study_instance_uid, position, code, subject, detail)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for (position, f) in verdict.findings.iter().enumerate() {
            finding.execute(params![study, position as i64, f.code, f.subject, f.detail])?;
        }
        let mut suggestion = conn.prepare_cached(
            "INSERT INTO study_suggestions (study_instance_uid, position, scheme, code, name, score)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for (position, s) in verdict.suggestions.iter().enumerate() {
            suggestion.execute(params![
                study,
                position as i64,
                s.scheme.as_str(),
                s.code,
                s.name,
                s.score
            ])?;
        }
        let mut evidence = conn.prepare_cached(
            "INSERT INTO study_evidence (study_instance_uid, position, kind, detail)
             VALUES (?1, ?2, ?3, ?4)",
        )?;
        for (position, e) in verdict.evidence.iter().enumerate() {
            evidence.execute(params![study, position as i64, e.kind, e.detail])?;
        }
        let mut update_series = conn.prepare_cached(
            "UPDATE series SET kind = ?2, verdict = ?3 WHERE series_instance_uid = ?1",
        )?;
        for (uid, series) in series_uids.iter().zip(&verdict.series) {
            let (kind, label) = match series {
                SeriesVerdict::Conforming { kind } => (kind.as_str(), "conforming"),
                SeriesVerdict::Nonstandard { .. } => ("", "nonstandard"),
                SeriesVerdict::NotJudged => ("", "not-judged"),
            };
            update_series.execute(params![uid, kind, label])?;
        }
        let from = previous.map(|(status, _)| status);
        if from != Some(status) {
            conn.prepare_cached(
                "INSERT INTO study_status_history (study_instance_uid, changed_at, from_status, to_status, cause)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![study, now, from.map(StudyStatus::as_str), status.as_str(), cause])?;
        }
        Ok(status)
    }

    /// Appends a documented reason (the table refuses updates and deletes). `false`: no such
    /// study, nothing written.
    pub fn insert_reason(
        &self,
        study: &str,
        reason_code: &str,
        note: &str,
        documented_by: &str,
        now: &str,
    ) -> Result<bool, StoreError> {
        if !self.study_exists(study)? {
            return Ok(false);
        }
        self.conn.execute(
            "INSERT INTO study_reasons (study_instance_uid, reason_code, note, documented_by, documented_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![study, reason_code, note, documented_by, now],
        )?;
        Ok(true)
    }

    pub fn study_exists(&self, study: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM studies WHERE study_instance_uid = ?1")?
            .query_row([study], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// The code of the latest documented reason of a study, if any.
    fn latest_reason_code(&self, study: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT reason_code FROM study_reasons WHERE study_instance_uid = ?1 ORDER BY id DESC LIMIT 1",
            )?
            .query_row([study], |r| r.get(0))
            .optional()?)
    }

    /// The recorded status of a study; `None` before its first verdict.
    pub fn study_status(&self, study: &str) -> Result<Option<StudyStatus>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT status FROM study_verdicts WHERE study_instance_uid = ?1")?
            .query_row([study], |r| r.get(0))
            .optional()?)
    }

    /// Every study UID, first received first.
    pub fn study_uids(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT study_instance_uid FROM studies ORDER BY first_received_at")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// How many studies have each status.
    /// How many studies need a reason, and since when the oldest of them has waited.
    pub fn needs_reason_headline(&self) -> Result<(i64, Option<String>), StoreError> {
        Ok(self.conn.query_row(
            "SELECT count(*), min(needs_reason_since) FROM study_verdicts WHERE status = 'needs-reason'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?)
    }

    /// The study that has waited longest for a reason, other than `except`.
    pub fn next_needing_reason(&self, except: &str) -> Result<Option<String>, StoreError> {
        use rusqlite::OptionalExtension;
        Ok(self
            .conn
            .query_row(
                "SELECT study_instance_uid FROM study_verdicts
                 WHERE status = 'needs-reason' AND study_instance_uid <> ?1
                 ORDER BY needs_reason_since, study_instance_uid LIMIT 1",
                [except],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn status_counts(&self) -> Result<Vec<(StudyStatus, i64)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT status, count(*) FROM study_verdicts GROUP BY status")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Durability;

    fn name(code: &str, long_name: &str) -> StandardName {
        StandardName {
            scheme: Scheme::Radlex,
            code: code.into(),
            long_name: long_name.into(),
            short_name: String::new(),
            modality: "CT".into(),
        }
    }

    #[test]
    fn the_same_file_again_changes_nothing_and_a_newer_release_replaces_the_older() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            super::super::open(&dir.path().join("simgate.db"), Durability::Os).expect("open");
        let db = store.db();
        let v1 = [
            name("RPID16", "CT Chest wo IV Contrast"),
            name("RPID3", "CT Abdomen wo IV Contrast"),
        ];
        let first = db
            .import_source(
                &NewSource {
                    format: "radlex-core-playbook",
                    file_name: "v1.csv",
                    sha256: "aaa",
                    rows: 2,
                },
                &v1,
                "t1",
            )
            .expect("import");
        assert_eq!(first, ImportOutcome::Imported { replaced: vec![] });
        let again = db
            .import_source(
                &NewSource {
                    format: "radlex-core-playbook",
                    file_name: "v1-copy.csv",
                    sha256: "aaa",
                    rows: 2,
                },
                &v1,
                "t2",
            )
            .expect("import");
        assert_eq!(
            again,
            ImportOutcome::Unchanged {
                imported_at: "t1".into()
            }
        );
        assert_eq!(db.imported_names().expect("names").len(), 2);

        let v2 = [name("RPID16", "CT Chest wo IV Contrast")];
        let newer = db
            .import_source(
                &NewSource {
                    format: "radlex-core-playbook",
                    file_name: "v2.csv",
                    sha256: "bbb",
                    rows: 1,
                },
                &v2,
                "t3",
            )
            .expect("import");
        assert_eq!(
            newer,
            ImportOutcome::Imported {
                replaced: vec!["v1.csv".into()]
            }
        );
        assert_eq!(db.imported_names().expect("names").len(), 1);
        let sources = db.sources().expect("sources");
        assert_eq!(sources.len(), 1);
        assert_eq!(
            (sources[0].file_name.as_str(), sources[0].sha256.as_str()),
            ("v2.csv", "bbb")
        );

        // Another playbook is another source: both stay.
        let loinc = [StandardName {
            scheme: Scheme::Loinc,
            code: "24627-2".into(),
            long_name: "CT Chest".into(),
            short_name: String::new(),
            modality: "CT".into(),
        }];
        db.import_source(
            &NewSource {
                format: "loinc-rsna-radiology-playbook",
                file_name: "loinc.csv",
                sha256: "ccc",
                rows: 3,
            },
            &loinc,
            "t4",
        )
        .expect("import");
        assert_eq!(db.imported_names().expect("names").len(), 2);
    }

    #[test]
    fn documented_reasons_are_append_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            super::super::open(&dir.path().join("simgate.db"), Durability::Os).expect("open");
        let conn = &store.conn;
        conn.execute(
            "INSERT INTO studies (study_instance_uid, first_received_at, last_received_at) VALUES ('1.2', 't', 't')",
            [],
        )
        .expect("study");
        conn.execute(
            "INSERT INTO study_reasons (study_instance_uid, reason_code, documented_by, documented_at)
             VALUES ('1.2', 'rt-planning', 'dr a', 't')",
            [],
        )
        .expect("insert");
        let update = conn.execute("UPDATE study_reasons SET reason_code = 'other'", []);
        assert!(update.is_err(), "an update went through");
        let delete = conn.execute("DELETE FROM study_reasons", []);
        assert!(delete.is_err(), "a delete went through");
    }
}
