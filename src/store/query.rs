//! Query/Retrieve reads: the index's rows at PATIENT, STUDY, SERIES and IMAGE level as
//! (attribute tag, value) pairs for C-FIND to match, and the instances a C-MOVE or C-GET
//! sends. Unique keys narrow the rows in SQL; every other key is matched by
//! [`query`](crate::query) on what comes back. No file is opened.

use rusqlite::params;

use super::{Db, StoreError};

/// Query/Retrieve levels (0008,0052).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Patient,
    Study,
    Series,
    Image,
}

/// Exact values of unique keys, each a list (UID list matching); `None`: any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UniqueKeys {
    pub patient_id: Option<String>,
    pub study_instance_uids: Option<Vec<String>>,
    pub series_instance_uids: Option<Vec<String>>,
    pub sop_instance_uids: Option<Vec<String>>,
}

/// One row: (tag as u32, value as text; empty when the index has none).
pub type Row = Vec<(u32, String)>;

/// One instance a retrieve sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrieveItem {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub transfer_syntax_uid: String,
    pub file_path: String,
    /// Retention removed the spool file.
    pub file_deleted: bool,
    /// The safety gate holds it for a destination, or an admin rejected it: not retrieved.
    pub held: bool,
}

// The SQL columns of each level, named by the tag they answer (hex, 8 digits).
const PATIENT_SQL: &str = r#"
SELECT s.patient_id AS "00100020", max(s.patient_name) AS "00100010",
       max(s.patient_birth_date) AS "00100030", max(s.patient_sex) AS "00100040",
       count(*) AS "00201200",
       (SELECT count(*) FROM series se JOIN studies s2 USING (study_instance_uid)
         WHERE s2.patient_id = s.patient_id) AS "00201202",
       (SELECT count(*) FROM instances i JOIN series se USING (series_instance_uid)
         JOIN studies s2 USING (study_instance_uid) WHERE s2.patient_id = s.patient_id) AS "00201204"
FROM studies s
WHERE (?1 IS NULL OR s.patient_id = ?1)
GROUP BY s.patient_id ORDER BY s.patient_id"#;

const STUDY_SQL: &str = r#"
SELECT s.study_instance_uid AS "0020000D", s.patient_id AS "00100020",
       s.patient_name AS "00100010", s.patient_birth_date AS "00100030",
       s.patient_sex AS "00100040", s.study_date AS "00080020", s.study_time AS "00080030",
       s.accession_number AS "00080050", s.study_description AS "00081030",
       s.study_id AS "00200010", s.referring_physician_name AS "00080090",
       (SELECT replace(group_concat(DISTINCT se.modality), ',', '\') FROM series se
         WHERE se.study_instance_uid = s.study_instance_uid) AS "00080061",
       (SELECT replace(group_concat(DISTINCT i.sop_class_uid), ',', '\') FROM instances i
         JOIN series se USING (series_instance_uid)
         WHERE se.study_instance_uid = s.study_instance_uid) AS "00080062",
       (SELECT count(*) FROM series se
         WHERE se.study_instance_uid = s.study_instance_uid) AS "00201206",
       (SELECT count(*) FROM instances i JOIN series se USING (series_instance_uid)
         WHERE se.study_instance_uid = s.study_instance_uid) AS "00201208"
FROM studies s
WHERE (?1 IS NULL OR s.patient_id = ?1)
  AND (?2 IS NULL OR s.study_instance_uid IN (SELECT value FROM json_each(?2)))
ORDER BY s.study_date, s.study_time, s.study_instance_uid"#;

const SERIES_SQL: &str = r#"
SELECT se.series_instance_uid AS "0020000E", se.study_instance_uid AS "0020000D",
       s.patient_id AS "00100020", se.modality AS "00080060", se.series_number AS "00200011",
       se.series_description AS "0008103E", se.series_date AS "00080021",
       se.series_time AS "00080031", se.protocol_name AS "00181030",
       se.station_name AS "00081010", se.manufacturer AS "00080070",
       se.frame_of_reference_uid AS "00200052",
       (SELECT count(*) FROM instances i
         WHERE i.series_instance_uid = se.series_instance_uid) AS "00201209"
FROM series se JOIN studies s USING (study_instance_uid)
WHERE (?1 IS NULL OR s.patient_id = ?1)
  AND (?2 IS NULL OR se.study_instance_uid IN (SELECT value FROM json_each(?2)))
  AND (?3 IS NULL OR se.series_instance_uid IN (SELECT value FROM json_each(?3)))
ORDER BY se.study_instance_uid, se.series_number, se.series_instance_uid"#;

const IMAGE_SQL: &str = r#"
SELECT i.sop_instance_uid AS "00080018", i.sop_class_uid AS "00080016",
       i.series_instance_uid AS "0020000E", se.study_instance_uid AS "0020000D",
       s.patient_id AS "00100020", i.instance_number AS "00200013",
       i.image_type AS "00080008", i.image_comments AS "00204000",
       CASE WHEN i.file_deleted_at IS NULL THEN 'ONLINE' ELSE 'UNAVAILABLE' END AS "00080056"
FROM instances i JOIN series se USING (series_instance_uid)
  JOIN studies s USING (study_instance_uid)
WHERE (?1 IS NULL OR s.patient_id = ?1)
  AND (?2 IS NULL OR se.study_instance_uid IN (SELECT value FROM json_each(?2)))
  AND (?3 IS NULL OR i.series_instance_uid IN (SELECT value FROM json_each(?3)))
  AND (?4 IS NULL OR i.sop_instance_uid IN (SELECT value FROM json_each(?4)))
ORDER BY i.series_instance_uid, i.instance_number, i.sop_instance_uid"#;

const RETRIEVE_SQL: &str = r#"
SELECT i.sop_class_uid, i.sop_instance_uid, i.transfer_syntax_uid, i.file_path,
       i.file_deleted_at IS NOT NULL,
       EXISTS (SELECT 1 FROM forward_queue q WHERE q.sop_instance_uid = i.sop_instance_uid
               AND q.state IN ('held', 'rejected'))
FROM instances i JOIN series se USING (series_instance_uid)
  JOIN studies s USING (study_instance_uid)
WHERE (?1 IS NULL OR s.patient_id = ?1)
  AND (?2 IS NULL OR se.study_instance_uid IN (SELECT value FROM json_each(?2)))
  AND (?3 IS NULL OR i.series_instance_uid IN (SELECT value FROM json_each(?3)))
  AND (?4 IS NULL OR i.sop_instance_uid IN (SELECT value FROM json_each(?4)))
ORDER BY se.study_instance_uid, se.series_number, i.series_instance_uid, i.instance_number,
         i.sop_instance_uid
LIMIT ?5"#;

fn json_list(values: &Option<Vec<String>>) -> Option<String> {
    values.as_deref().map(super::json_array)
}

impl Db<'_> {
    /// Every row at `level` that the unique keys allow, each attribute the index answers
    /// there named by its tag; `visit` sees them in order and returns false to stop.
    pub fn query_rows(
        &self,
        level: Level,
        keys: &UniqueKeys,
        mut visit: impl FnMut(Row) -> bool,
    ) -> Result<(), StoreError> {
        let sql = match level {
            Level::Patient => PATIENT_SQL,
            Level::Study => STUDY_SQL,
            Level::Series => SERIES_SQL,
            Level::Image => IMAGE_SQL,
        };
        let mut stmt = self.conn.prepare_cached(sql)?;
        let tags: Vec<u32> = stmt
            .column_names()
            .map(|name| u32::from_str_radix(name, 16).unwrap_or(0))
            .collect();
        let (studies, series, instances) = (
            json_list(&keys.study_instance_uids),
            json_list(&keys.series_instance_uids),
            json_list(&keys.sop_instance_uids),
        );
        let mut rows = match level {
            Level::Patient => stmt.query(params![keys.patient_id])?,
            Level::Study => stmt.query(params![keys.patient_id, studies])?,
            Level::Series => stmt.query(params![keys.patient_id, studies, series])?,
            Level::Image => stmt.query(params![keys.patient_id, studies, series, instances])?,
        };
        while let Some(row) = rows.next()? {
            let mut values = Vec::with_capacity(tags.len());
            for (index, tag) in tags.iter().enumerate() {
                let value = match row.get_ref(index)? {
                    rusqlite::types::ValueRef::Null => String::new(),
                    rusqlite::types::ValueRef::Integer(n) => n.to_string(),
                    rusqlite::types::ValueRef::Real(x) => x.to_string(),
                    rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                        String::from_utf8_lossy(t).into_owned()
                    }
                };
                values.push((*tag, value));
            }
            if !visit(values) {
                break;
            }
        }
        Ok(())
    }

    /// The instances a retrieve with these unique keys sends, at most `limit`.
    pub fn retrieve_items(
        &self,
        keys: &UniqueKeys,
        limit: usize,
    ) -> Result<Vec<RetrieveItem>, StoreError> {
        let mut stmt = self.conn.prepare_cached(RETRIEVE_SQL)?;
        let rows = stmt.query_map(
            params![
                keys.patient_id,
                json_list(&keys.study_instance_uids),
                json_list(&keys.series_instance_uids),
                json_list(&keys.sop_instance_uids),
                limit as i64
            ],
            |r| {
                Ok(RetrieveItem {
                    sop_class_uid: r.get(0)?,
                    sop_instance_uid: r.get(1)?,
                    transfer_syntax_uid: r.get(2)?,
                    file_path: r.get(3)?,
                    file_deleted: r.get(4)?,
                    held: r.get(5)?,
                })
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
