//! The instance table family: studies, series, procedure codes, instances and replacements,
//! as the receive path records them, and the spool-file bookkeeping of retention.

use rusqlite::{Connection, OptionalExtension, params};

use super::{Db, StoreError};
use crate::dicom::CodeItem;
use crate::scp::header::InstanceHeader;

/// Everything the index records about one stored instance.
#[derive(Debug, Clone)]
pub struct IndexedInstance {
    pub header: InstanceHeader,
    pub transfer_syntax_uid: String,
    pub calling_ae_title: String,
    pub called_ae_title: String,
    pub peer_address: String,
    /// RFC 3339 UTC.
    pub received_at: String,
    pub file_size: u64,
    pub file_path: String,
    pub content_hash: String,
}

/// What recording an instance did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordOutcome {
    /// A SOP Instance UID not seen before.
    New,
    /// The same SOP Instance UID with the same bytes: nothing changed.
    Identical,
    /// The same SOP Instance UID with different bytes: the index now points at the new file;
    /// the old file (this path) is no longer referenced.
    Replaced { old_file_path: String },
}

/// What recording an instance did, and what it brought for the study's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub outcome: RecordOutcome,
    /// Why the study's verdict must be computed again (a new study or series, new codes,
    /// respiratory attributes, a replacement); `None` when nothing the verdict reads changed.
    pub new_evidence: Option<String>,
    /// The study the instance is filed under: its series' study (which may not be the one
    /// the instance names; the safety check says so).
    pub filed_study: String,
}

impl Db<'_> {
    /// Records one instance: its study, series, codes and instance rows (a re-send with other
    /// bytes is a replacement, kept in `instance_replacements`). Says what new evidence for
    /// the study's verdict it brought.
    pub fn record_instance(&self, instance: &IndexedInstance) -> Result<Recorded, StoreError> {
        Ok(record(self.conn, instance)?)
    }

    /// Spool files that every destination has and that were received before the cutoff.
    pub fn expired_files(
        &self,
        received_before: &str,
        limit: usize,
    ) -> Result<Vec<ExpiredFile>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT i.sop_instance_uid, i.file_path FROM instances i
             WHERE i.file_deleted_at IS NULL AND i.received_at < ?1
               AND NOT EXISTS (SELECT 1 FROM forward_queue q
                               WHERE q.sop_instance_uid = i.sop_instance_uid
                                 AND q.state NOT IN ('sent', 'rejected'))
             LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![received_before, limit as i64], |r| {
            Ok(ExpiredFile {
                sop_instance_uid: r.get(0)?,
                file_path: r.get(1)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The spool files among these that no instance row points at.
    pub fn unindexed_files(&self, file_paths: &[String]) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT 1 FROM instances WHERE file_path = ?1")?;
        let mut unindexed = Vec::new();
        for path in file_paths {
            if stmt.query_row([path], |_| Ok(())).optional()?.is_none() {
                unindexed.push(path.clone());
            }
        }
        Ok(unindexed)
    }

    /// The spool file an instance's row points at, if the instance is indexed.
    pub fn instance_file(&self, sop_instance_uid: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT file_path FROM instances WHERE sop_instance_uid = ?1")?
            .query_row([sop_instance_uid], |r| r.get(0))
            .optional()?)
    }

    /// Retention removed the instance's spool file; its index rows stay.
    pub fn mark_file_deleted(&self, sop_instance_uid: &str, now: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE instances SET file_deleted_at = ?2 WHERE sop_instance_uid = ?1",
            params![sop_instance_uid, now],
        )?;
        Ok(())
    }
}

/// A spool file retention may delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredFile {
    pub sop_instance_uid: String,
    /// Relative to the storage folder.
    pub file_path: String,
}

fn record(tx: &Connection, instance: &IndexedInstance) -> rusqlite::Result<Recorded> {
    let h = &instance.header;
    // A series belongs to one study: an instance naming another study is filed under the
    // series' study (the safety check records the conflict); the instance row keeps its own.
    let filed_study: String = tx
        .prepare_cached("SELECT study_instance_uid FROM series WHERE series_instance_uid = ?1")?
        .query_row([&h.series_instance_uid], |r| r.get(0))
        .optional()?
        .unwrap_or_else(|| h.study_instance_uid.clone());
    let previous: Option<(String, String)> = tx
        .prepare_cached(
            "SELECT content_hash, file_path FROM instances WHERE sop_instance_uid = ?1",
        )?
        .query_row([&h.sop_instance_uid], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    if let Some((hash, _)) = &previous
        && *hash == instance.content_hash
    {
        // The re-send put the file back if retention had removed it.
        tx.prepare_cached(
            "UPDATE instances SET file_deleted_at = NULL WHERE sop_instance_uid = ?1 AND file_deleted_at IS NOT NULL",
        )?
        .execute([&h.sop_instance_uid])?;
        return Ok(Recorded {
            outcome: RecordOutcome::Identical,
            new_evidence: None,
            filed_study,
        });
    }
    let study_known = tx
        .prepare_cached("SELECT 1 FROM studies WHERE study_instance_uid = ?1")?
        .query_row([&filed_study], |_| Ok(()))
        .optional()?
        .is_some();
    let series_respiratory: Option<bool> = tx
        .prepare_cached("SELECT respiratory_attributes FROM series WHERE series_instance_uid = ?1")?
        .query_row([&h.series_instance_uid], |r| Ok(r.get::<_, i64>(0)? != 0))
        .optional()?;
    let mut new_evidence = match (study_known, series_respiratory) {
        (false, _) => Some("first instance of the study".to_string()),
        (true, None) => Some(format!("new series {:?}", h.series_description)),
        (true, Some(false)) if h.respiratory_attributes => {
            Some("respiratory attributes".to_string())
        }
        _ => None,
    };

    tx.prepare_cached(
        "INSERT INTO studies (study_instance_uid, patient_id, patient_name, accession_number,
             study_date, study_time, study_description, requested_procedure_description,
             first_received_at, last_received_at, patient_birth_date, patient_sex, study_id,
             referring_physician_name)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT (study_instance_uid) DO UPDATE SET
             last_received_at = excluded.last_received_at,
             patient_id = coalesce(nullif(patient_id, ''), excluded.patient_id),
             patient_name = coalesce(nullif(patient_name, ''), excluded.patient_name),
             accession_number = coalesce(nullif(accession_number, ''), excluded.accession_number),
             study_date = coalesce(nullif(study_date, ''), excluded.study_date),
             study_time = coalesce(nullif(study_time, ''), excluded.study_time),
             study_description = coalesce(nullif(study_description, ''), excluded.study_description),
             requested_procedure_description = coalesce(nullif(requested_procedure_description, ''),
                 excluded.requested_procedure_description),
             patient_birth_date = coalesce(nullif(patient_birth_date, ''), excluded.patient_birth_date),
             patient_sex = coalesce(nullif(patient_sex, ''), excluded.patient_sex),
             study_id = coalesce(nullif(study_id, ''), excluded.study_id),
             referring_physician_name = coalesce(nullif(referring_physician_name, ''),
                 excluded.referring_physician_name)",
    )?
    .execute(params![
        filed_study,
        h.patient_id,
        h.patient_name,
        h.accession_number,
        h.study_date,
        h.study_time,
        h.study_description,
        h.requested_procedure_description,
        instance.received_at,
        h.patient_birth_date,
        h.patient_sex,
        h.study_id,
        h.referring_physician_name,
    ])?;
    let new_codes = insert_codes(tx, &filed_study, "procedure", &h.procedure_codes)?
        + insert_codes(
            tx,
            &filed_study,
            "requested_procedure",
            &h.requested_procedure_codes,
        )?;
    // A code that arrives with a later instance of a known series may make the study
    // conforming: it is evidence too.
    if new_codes > 0 {
        new_evidence.get_or_insert_with(|| "new procedure codes".to_string());
    }

    tx.prepare_cached(
        "INSERT INTO series (series_instance_uid, study_instance_uid, modality, series_number,
             series_description, protocol_name, station_name, manufacturer, manufacturer_model_name,
             frame_of_reference_uid, first_received_at, last_received_at, respiratory_attributes,
             series_date, series_time)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11, ?12, ?13, ?14)
         ON CONFLICT (series_instance_uid) DO UPDATE SET
             last_received_at = excluded.last_received_at,
             respiratory_attributes = max(respiratory_attributes, excluded.respiratory_attributes),
             series_description = coalesce(nullif(series_description, ''), excluded.series_description),
             protocol_name = coalesce(nullif(protocol_name, ''), excluded.protocol_name),
             station_name = coalesce(nullif(station_name, ''), excluded.station_name),
             series_date = coalesce(nullif(series_date, ''), excluded.series_date),
             series_time = coalesce(nullif(series_time, ''), excluded.series_time)",
    )?
    .execute(params![
        h.series_instance_uid,
        filed_study,
        h.modality,
        h.series_number,
        h.series_description,
        h.protocol_name,
        h.station_name,
        h.manufacturer,
        h.manufacturer_model_name,
        h.frame_of_reference_uid,
        instance.received_at,
        h.respiratory_attributes,
        h.series_date,
        h.series_time,
    ])?;
    // Apart from the upsert, and only when they change, so the indexes on these columns are
    // not rewritten by every instance: the series' frame of reference once known, and "not
    // checked since its last instance" for the safety check.
    if !h.frame_of_reference_uid.is_empty() {
        tx.prepare_cached(
            "UPDATE series SET frame_of_reference_uid = ?2
             WHERE series_instance_uid = ?1 AND frame_of_reference_uid = ''",
        )?
        .execute(params![h.series_instance_uid, h.frame_of_reference_uid])?;
    }
    tx.prepare_cached(
        "UPDATE series SET geometry_checked_at = NULL
         WHERE series_instance_uid = ?1 AND geometry_checked_at IS NOT NULL",
    )?
    .execute([&h.series_instance_uid])?;

    let image_type = h.image_type.join("\\");
    let position = h
        .image_position_patient
        .map(|v| decimals(&v))
        .unwrap_or_default();
    let orientation = h
        .image_orientation_patient
        .map(|v| decimals(&v))
        .unwrap_or_default();
    let pixel_spacing = h.pixel_spacing.map(|v| decimals(&v)).unwrap_or_default();
    tx.prepare_cached(
        "INSERT INTO instances (sop_instance_uid, series_instance_uid, sop_class_uid, instance_number,
             image_type, image_position_patient, frame_of_reference_uid, image_comments,
             transfer_syntax_uid, calling_ae_title, called_ae_title, peer_address, received_at,
             file_size, file_path, content_hash, study_instance_uid, patient_id, patient_name,
             patient_birth_date, patient_sex, image_orientation_patient, pixel_spacing, rows,
             columns, slice_thickness, gantry_tilt, number_of_frames)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
             ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28)
         ON CONFLICT (sop_instance_uid) DO UPDATE SET
             series_instance_uid = excluded.series_instance_uid,
             sop_class_uid = excluded.sop_class_uid,
             instance_number = excluded.instance_number,
             image_type = excluded.image_type,
             image_position_patient = excluded.image_position_patient,
             frame_of_reference_uid = excluded.frame_of_reference_uid,
             image_comments = excluded.image_comments,
             transfer_syntax_uid = excluded.transfer_syntax_uid,
             calling_ae_title = excluded.calling_ae_title,
             called_ae_title = excluded.called_ae_title,
             peer_address = excluded.peer_address,
             received_at = excluded.received_at,
             file_size = excluded.file_size,
             file_path = excluded.file_path,
             content_hash = excluded.content_hash,
             study_instance_uid = excluded.study_instance_uid,
             patient_id = excluded.patient_id,
             patient_name = excluded.patient_name,
             patient_birth_date = excluded.patient_birth_date,
             patient_sex = excluded.patient_sex,
             image_orientation_patient = excluded.image_orientation_patient,
             pixel_spacing = excluded.pixel_spacing,
             rows = excluded.rows,
             columns = excluded.columns,
             slice_thickness = excluded.slice_thickness,
             gantry_tilt = excluded.gantry_tilt,
             number_of_frames = excluded.number_of_frames,
             file_deleted_at = NULL",
    )?
    .execute(params![
        h.sop_instance_uid,
        h.series_instance_uid,
        h.sop_class_uid,
        h.instance_number,
        image_type,
        position,
        h.frame_of_reference_uid,
        h.image_comments,
        instance.transfer_syntax_uid,
        instance.calling_ae_title,
        instance.called_ae_title,
        instance.peer_address,
        instance.received_at,
        instance.file_size as i64,
        instance.file_path,
        instance.content_hash,
        h.study_instance_uid,
        h.patient_id,
        h.patient_name,
        h.patient_birth_date,
        h.patient_sex,
        orientation,
        pixel_spacing,
        h.rows,
        h.columns,
        h.slice_thickness,
        h.gantry_tilt,
        h.number_of_frames,
    ])?;

    let outcome = match previous {
        None => RecordOutcome::New,
        Some((old_hash, old_file_path)) => {
            tx.prepare_cached(
                "INSERT INTO instance_replacements (sop_instance_uid, replaced_at, old_content_hash,
                     new_content_hash, calling_ae_title, peer_address)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                h.sop_instance_uid,
                instance.received_at,
                old_hash,
                instance.content_hash,
                instance.calling_ae_title,
                instance.peer_address,
            ])?;
            // A replaced instance may carry different names: judge the study again.
            new_evidence.get_or_insert_with(|| "instance replaced".to_string());
            RecordOutcome::Replaced { old_file_path }
        }
    };
    Ok(Recorded {
        outcome,
        new_evidence,
        filed_study,
    })
}

/// Decimals as DICOM writes a multi-valued DS: backslash-separated.
fn decimals(values: &[f64]) -> String {
    values
        .iter()
        .map(f64::to_string)
        .collect::<Vec<_>>()
        .join("\\")
}

/// Inserts code items not yet recorded; returns how many were new.
fn insert_codes(
    tx: &Connection,
    study: &str,
    sequence: &str,
    codes: &[CodeItem],
) -> rusqlite::Result<usize> {
    if codes.is_empty() {
        return Ok(0);
    }
    let mut added = 0;
    let mut stmt = tx.prepare_cached(
        "INSERT OR IGNORE INTO study_procedure_codes
             (study_instance_uid, sequence, code_value, coding_scheme_designator, code_meaning)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for code in codes {
        added += stmt.execute(params![
            study,
            sequence,
            code.code_value,
            code.coding_scheme_designator,
            code.code_meaning
        ])?;
    }
    Ok(added)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::Durability;

    pub(crate) fn instance(sop: &str, hash: &str) -> IndexedInstance {
        IndexedInstance {
            header: InstanceHeader {
                sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
                sop_instance_uid: sop.into(),
                study_instance_uid: "1.2.3".into(),
                series_instance_uid: "1.2.3.4".into(),
                study_description: "CT SIM".into(),
                procedure_codes: vec![CodeItem {
                    code_value: "RPID6010".into(),
                    coding_scheme_designator: "RADLEX".into(),
                    code_meaning: "CT Treatment Planning Simple".into(),
                }],
                ..InstanceHeader::default()
            },
            transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
            calling_ae_title: "CTSIM".into(),
            called_ae_title: "SIMGATE".into(),
            peer_address: "127.0.0.1:5000".into(),
            received_at: "2026-11-29T10:00:00Z".into(),
            file_size: 10,
            file_path: format!("spool/{}/{hash}.dcm", &hash[..2]),
            content_hash: hash.into(),
        }
    }

    fn count(store: &super::super::Store, sql: &str) -> i64 {
        store.conn.query_row(sql, [], |r| r.get(0)).expect("count")
    }

    #[test]
    fn new_identical_and_replaced_instances_are_told_apart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            super::super::open(&dir.path().join("simgate.db"), Durability::Os).expect("open");
        let db = store.db();
        let first = db
            .record_instance(&instance("1.2.3.4.1", "aa11"))
            .expect("record");
        assert_eq!(first.outcome, RecordOutcome::New);
        assert!(first.new_evidence.is_some(), "a new study is evidence");
        let again = db
            .record_instance(&instance("1.2.3.4.1", "aa11"))
            .expect("record");
        assert_eq!(again.outcome, RecordOutcome::Identical);
        assert_eq!(again.new_evidence, None);
        let replaced = db
            .record_instance(&instance("1.2.3.4.1", "bb22"))
            .expect("record");
        assert_eq!(
            replaced.outcome,
            RecordOutcome::Replaced {
                old_file_path: "spool/aa/aa11.dcm".into()
            }
        );
        assert_eq!(count(&store, "SELECT count(*) FROM instances"), 1);
        assert_eq!(
            count(&store, "SELECT count(*) FROM instance_replacements"),
            1
        );
        assert_eq!(
            count(&store, "SELECT count(*) FROM study_procedure_codes"),
            1,
            "the same code from every instance is kept once"
        );
    }

    #[test]
    fn each_series_counts_its_instances_through_resends_and_moves() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            super::super::open(&dir.path().join("simgate.db"), Durability::Os).expect("open");
        let db = store.db();
        for (sop, hash) in [
            ("1.2.3.4.1", "aa11"),
            ("1.2.3.4.2", "aa12"),
            ("1.2.3.4.3", "aa13"),
        ] {
            db.record_instance(&instance(sop, hash)).expect("record");
        }
        // Identical and changed re-sends do not count twice.
        db.record_instance(&instance("1.2.3.4.1", "aa11"))
            .expect("record");
        db.record_instance(&instance("1.2.3.4.2", "bb12"))
            .expect("record");
        // A re-send filed under another series of the study moves its count.
        let mut moved = instance("1.2.3.4.3", "cc13");
        moved.header.series_instance_uid = "1.2.3.5".into();
        db.record_instance(&moved).expect("record");
        let counted = |series: &str| -> (i64, i64) {
            store
                .conn
                .query_row(
                    "SELECT instance_count,
                            (SELECT count(*) FROM instances WHERE series_instance_uid = ?1)
                     FROM series WHERE series_instance_uid = ?1",
                    [series],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .expect("series")
        };
        assert_eq!(counted("1.2.3.4"), (2, 2));
        assert_eq!(counted("1.2.3.5"), (1, 1));
        let whole_list_from = |offset| {
            use crate::store::studies::{StudyQuery, StudySort};
            db.study_page(
                &StudyQuery::default(),
                StudySort::Waiting,
                false,
                offset,
                None,
            )
            .expect("page")
        };
        let (rows, _) = whole_list_from(0);
        assert_eq!(rows[0].instance_count, 3);
        assert_eq!(rows[0].series_count, 2);
        // Past the end of the whole list: no rows, and still the true total.
        let (rows, total) = whole_list_from(5);
        assert!(rows.is_empty());
        assert_eq!(total, 1);
    }

    #[test]
    fn a_code_arriving_with_a_later_instance_of_a_known_series_is_new_evidence() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            super::super::open(&dir.path().join("simgate.db"), Durability::Os).expect("open");
        let db = store.db();
        let mut without_code = instance("1.2.3.4.1", "aa11");
        without_code.header.procedure_codes.clear();
        db.record_instance(&without_code).expect("record");
        let same_series_no_code = {
            let mut i = instance("1.2.3.4.2", "bb22");
            i.header.procedure_codes.clear();
            i
        };
        assert_eq!(
            db.record_instance(&same_series_no_code)
                .expect("record")
                .new_evidence,
            None,
            "nothing new"
        );
        let with_code = db
            .record_instance(&instance("1.2.3.4.3", "cc33"))
            .expect("record");
        assert_eq!(
            with_code.new_evidence.as_deref(),
            Some("new procedure codes")
        );
    }

    #[test]
    fn a_replacement_of_a_retained_instance_is_not_marked_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store =
            super::super::open(&dir.path().join("simgate.db"), Durability::Os).expect("open");
        let db = store.db();
        db.record_instance(&instance("1.2.3.4.1", "aa11"))
            .expect("record");
        db.mark_file_deleted("1.2.3.4.1", "2026-12-01T00:00:00Z")
            .expect("retention");
        db.record_instance(&instance("1.2.3.4.1", "bb22"))
            .expect("replace");
        assert_eq!(
            count(
                &store,
                "SELECT count(*) FROM instances WHERE file_deleted_at IS NOT NULL"
            ),
            0
        );
    }
}
