//! The safety table family: what the identity check compares an arriving instance with, the
//! findings of both checks, the series geometry check state, and the queue rows the gate holds
//! (held, waiting for the series check, rejected) with their release and rejection.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::{Db, StoreError};
use crate::safety::geometry::Slice;
use crate::safety::identity::{Patient, Reference};
use crate::safety::{Finding, FindingCode};
use crate::scp::header::InstanceHeader;

/// What the index holds that an arriving instance is compared with (see
/// [`identity::Arrival`](crate::safety::identity::Arrival)).
#[derive(Debug, Clone, Default)]
pub struct ArrivalContext {
    pub study_patient: Option<Patient>,
    /// (study the series is filed under, its frame of reference).
    pub series: Option<(String, String)>,
    pub previous_patient: Option<Patient>,
    pub references: Vec<Reference>,
}

/// A series as the geometry check reads it.
#[derive(Debug, Clone)]
pub struct SeriesForCheck {
    pub series_instance_uid: String,
    pub study_instance_uid: String,
    pub modality: String,
    /// The series-rules kind, `""` when none matched.
    pub kind: String,
    pub series_description: String,
    /// A respiratory phase of a 4D CT (its kind, or the respiratory attributes).
    pub is_phase: bool,
    pub slices: Vec<Slice>,
}

/// A phase series of a study and whether its geometry check has run since its last instance.
#[derive(Debug, Clone)]
pub struct PhaseSeries {
    pub series_instance_uid: String,
    pub checked: bool,
}

/// One recorded finding.
#[derive(Debug, Clone, Serialize)]
pub struct SafetyFindingRow {
    pub code: FindingCode,
    pub series_instance_uid: String,
    /// Empty: about the whole series.
    pub sop_instance_uid: String,
    pub attribute: String,
    pub expected: String,
    pub found: String,
    pub detail: String,
    pub found_at: String,
}

/// A queue row the gate keeps back.
#[derive(Debug, Clone, Serialize)]
pub struct HeldRow {
    pub destination: String,
    pub sop_instance_uid: String,
    pub series_instance_uid: String,
    pub series_description: String,
    pub instance_number: Option<i64>,
    /// `held` or `waiting`.
    pub state: super::queue::QueueState,
    /// The finding codes it is held for (empty while waiting).
    pub held_for: Vec<String>,
    pub queued_at: String,
}

/// The geometry check state of one series.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesCheckRow {
    pub series_instance_uid: String,
    pub series_description: String,
    /// `pending` (not checked since the last instance), `passed`, `findings`, `skipped` or
    /// `not-checked` (stored before this version).
    pub geometry: String,
    pub checked_at: Option<String>,
}

/// The safety side of one study (`safety` in the study detail).
#[derive(Debug, Clone, Serialize, Default)]
pub struct StudySafety {
    pub findings: Vec<SafetyFindingRow>,
    pub held: Vec<HeldRow>,
    pub series_checks: Vec<SeriesCheckRow>,
}

/// One study of `GET /api/safety`: its findings and what is held.
#[derive(Debug, Clone, Serialize)]
pub struct SafetyStudy {
    pub study_instance_uid: String,
    pub patient_id: String,
    pub patient_name: String,
    pub study_date: String,
    pub study_description: String,
    pub held_instances: i64,
    pub waiting_instances: i64,
    pub findings: Vec<SafetyFindingRow>,
}

/// What the worklist's safety banner counts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SafetySummary {
    pub studies_with_findings: i64,
    pub held_instances: i64,
    pub studies_with_held: i64,
}

/// Which held rows a release or rejection acts on.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct HoldTarget {
    pub study_instance_uid: Option<String>,
    pub sop_instance_uid: Option<String>,
    pub destination: Option<String>,
}

/// References followed per RT object at most (the header keeps at most 4096 of each kind).
const MAX_REFERENCE_LOOKUPS: usize = 4096;

impl Db<'_> {
    /// What the index holds of an arriving instance's study, series, earlier copy and
    /// references, read before the instance is recorded.
    pub fn arrival_context(&self, h: &InstanceHeader) -> Result<ArrivalContext, StoreError> {
        let conn = self.conn;
        let series: Option<(String, String)> = conn
            .prepare_cached(
                "SELECT study_instance_uid, frame_of_reference_uid FROM series
                 WHERE series_instance_uid = ?1",
            )?
            .query_row([&h.series_instance_uid], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let filed_study = series
            .as_ref()
            .map_or(h.study_instance_uid.as_str(), |(study, _)| study.as_str());
        let patient = |r: &rusqlite::Row<'_>| {
            Ok(Patient {
                id: r.get(0)?,
                name: r.get(1)?,
                birth_date: r.get(2)?,
                sex: r.get(3)?,
            })
        };
        let study_patient = conn
            .prepare_cached(
                "SELECT patient_id, patient_name, patient_birth_date, patient_sex FROM studies
                 WHERE study_instance_uid = ?1",
            )?
            .query_row([filed_study], patient)
            .optional()?;
        let previous_patient = conn
            .prepare_cached(
                "SELECT patient_id, patient_name, patient_birth_date, patient_sex FROM instances
                 WHERE sop_instance_uid = ?1",
            )?
            .query_row([&h.sop_instance_uid], patient)
            .optional()?;
        let mut references = Vec::new();
        let mut by_instance =
            conn.prepare_cached("SELECT patient_id FROM instances WHERE sop_instance_uid = ?1")?;
        for uid in h
            .referenced_instance_uids
            .iter()
            .take(MAX_REFERENCE_LOOKUPS)
        {
            if let Some(patient_id) = by_instance
                .query_row([uid], |r| r.get::<_, String>(0))
                .optional()?
            {
                references.push(Reference {
                    what: "image",
                    uid: uid.clone(),
                    patient_id,
                });
            }
        }
        let mut by_frame = conn.prepare_cached(
            "SELECT DISTINCT st.patient_id FROM series se JOIN studies st USING (study_instance_uid)
             WHERE se.frame_of_reference_uid = ?1 AND se.series_instance_uid <> ?2 LIMIT 8",
        )?;
        for uid in h
            .referenced_frames_of_reference
            .iter()
            .take(MAX_REFERENCE_LOOKUPS)
        {
            let patients = by_frame
                .query_map(params![uid, h.series_instance_uid], |r| {
                    r.get::<_, String>(0)
                })?
                .collect::<Result<Vec<_>, _>>()?;
            references.extend(patients.into_iter().map(|patient_id| Reference {
                what: "frame of reference",
                uid: uid.clone(),
                patient_id,
            }));
        }
        Ok(ArrivalContext {
            study_patient,
            series,
            previous_patient,
            references,
        })
    }

    /// Records findings of one series (of the study it is filed under).
    pub fn insert_findings(
        &self,
        study: &str,
        series: &str,
        findings: &[Finding],
        now: &str,
    ) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO safety_findings (study_instance_uid, series_instance_uid, sop_instance_uid,
                 code, attribute, expected, found, phi, detail, found_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?;
        for f in findings {
            stmt.execute(params![
                study,
                series,
                f.sop_instance_uid,
                f.code.as_str(),
                f.attribute,
                f.expected,
                f.found,
                f.phi,
                f.detail,
                now
            ])?;
        }
        Ok(())
    }

    /// Series not checked since their last instance and quiet since `quiet_since`.
    pub fn series_due_for_check(
        &self,
        quiet_since: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT series_instance_uid FROM series
             WHERE geometry_checked_at IS NULL AND last_received_at <= ?1
             ORDER BY last_received_at LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![quiet_since, limit as i64], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A series and its slices' geometry attributes.
    pub fn series_for_check(&self, series: &str) -> Result<Option<SeriesForCheck>, StoreError> {
        let head = self
            .conn
            .prepare_cached(
                "SELECT study_instance_uid, modality, coalesce(kind, ''), series_description,
                        respiratory_attributes
                 FROM series WHERE series_instance_uid = ?1",
            )?
            .query_row([series], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)? != 0,
                ))
            })
            .optional()?;
        let Some((study, modality, kind, description, respiratory)) = head else {
            return Ok(None);
        };
        let slices = self
            .conn
            .prepare_cached(
                "SELECT sop_instance_uid, instance_number, image_position_patient,
                        image_orientation_patient, pixel_spacing, rows, columns, slice_thickness,
                        gantry_tilt, image_type, number_of_frames
                 FROM instances WHERE series_instance_uid = ?1 ORDER BY rowid",
            )?
            .query_map([series], |r| {
                Ok(Slice {
                    sop_instance_uid: r.get(0)?,
                    instance_number: r.get(1)?,
                    position: decimals(&r.get::<_, String>(2)?),
                    orientation: decimals(&r.get::<_, String>(3)?),
                    pixel_spacing: decimals(&r.get::<_, String>(4)?),
                    rows: r.get(5)?,
                    columns: r.get(6)?,
                    slice_thickness: r.get(7)?,
                    gantry_tilt: r.get(8)?,
                    image_type: super::split_values(&r.get::<_, String>(9)?),
                    frames: r.get(10)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(Some(SeriesForCheck {
            series_instance_uid: series.to_string(),
            study_instance_uid: study,
            is_phase: respiratory || kind == "4dct-phase",
            modality,
            kind,
            series_description: description,
            slices,
        }))
    }

    /// The respiratory phase series of a study.
    pub fn phase_series(&self, study: &str) -> Result<Vec<PhaseSeries>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT series_instance_uid, geometry_checked_at IS NOT NULL FROM series
             WHERE study_instance_uid = ?1 AND (kind = '4dct-phase' OR respiratory_attributes <> 0)
             ORDER BY series_number IS NULL, series_number, first_received_at",
        )?;
        let rows = stmt.query_map([study], |r| {
            Ok(PhaseSeries {
                series_instance_uid: r.get(0)?,
                checked: r.get(1)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Replaces a series' geometry findings (all but the phase comparison's) and marks the
    /// series checked.
    pub fn record_series_check(
        &self,
        study: &str,
        series: &str,
        findings: &[Finding],
        geometry: &str,
        now: &str,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "DELETE FROM safety_findings WHERE series_instance_uid = ?1
                   AND code IN ('slice-gap', 'slice-duplicate', 'slice-spacing-uneven',
                                'orientation-mixed', 'pixel-spacing-mixed', 'gantry-tilt',
                                'too-few-slices')",
            )?
            .execute([series])?;
        self.insert_findings(study, series, findings, now)?;
        self.conn
            .prepare_cached(
                "UPDATE series SET geometry_checked_at = ?2, geometry = ?3
                 WHERE series_instance_uid = ?1",
            )?
            .execute(params![series, now, geometry])?;
        Ok(())
    }

    /// Replaces the phase comparison's findings of a study.
    pub fn record_phase_check(
        &self,
        study: &str,
        findings: &[(String, Finding)],
        now: &str,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "DELETE FROM safety_findings
                 WHERE study_instance_uid = ?1 AND code = 'phase-count-mismatch'",
            )?
            .execute([study])?;
        for (series, finding) in findings {
            self.insert_findings(study, series, std::slice::from_ref(finding), now)?;
        }
        Ok(())
    }

    /// The geometry finding codes a series has now.
    pub fn series_geometry_codes(&self, series: &str) -> Result<Vec<FindingCode>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT DISTINCT code FROM safety_findings WHERE series_instance_uid = ?1",
        )?;
        let codes = stmt
            .query_map([series], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(codes
            .iter()
            .filter_map(|c| FindingCode::parse(c))
            .filter(|c| c.is_geometry())
            .collect())
    }

    /// After a series check, puts the series' rows for one destination where its rule says:
    /// `held` for the codes that hold them, `pending` (again) when nothing holds them. Rows the
    /// instance's own findings hold, and rows sent, dead or rejected, stay. Returns how many
    /// rows became pending.
    pub fn settle_series(
        &self,
        series: &str,
        destination: &str,
        holding: &[FindingCode],
    ) -> Result<usize, StoreError> {
        let held_for = holding
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let conn = self.conn;
        let freed = if holding.is_empty() {
            conn.prepare_cached(
                "UPDATE forward_queue SET state = 'pending', held_for = '', held_by = '',
                     next_attempt_at = NULL
                 WHERE series_instance_uid = ?1 AND destination = ?2
                   AND (state = 'waiting' OR (state = 'held' AND held_by = 'series'))",
            )?
            .execute(params![series, destination])?
        } else {
            conn.prepare_cached(
                "UPDATE forward_queue SET state = 'held', held_for = ?3, held_by = 'series'
                 WHERE series_instance_uid = ?1 AND destination = ?2
                   AND (state IN ('waiting', 'pending') OR (state = 'held' AND held_by = 'series'))",
            )?
            .execute(params![series, destination, held_for])?;
            0
        };
        if freed > 0 {
            self.touch_queue();
        }
        Ok(freed)
    }

    /// Held rows become pending (sent in their arrival order) or rejected (never sent).
    /// Returns the SOP Instance UIDs acted on.
    pub fn decide_held(
        &self,
        target: &HoldTarget,
        release: bool,
    ) -> Result<Vec<String>, StoreError> {
        let filter = "state = 'held' AND (?1 IS NULL OR study_instance_uid = ?1)
                      AND (?2 IS NULL OR sop_instance_uid = ?2) AND (?3 IS NULL OR destination = ?3)";
        let args = params![
            target.study_instance_uid,
            target.sop_instance_uid,
            target.destination
        ];
        let uids: Vec<String> = self
            .conn
            .prepare(&format!(
                "SELECT DISTINCT sop_instance_uid FROM forward_queue WHERE {filter} ORDER BY id"
            ))?
            .query_map(args, |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let set = if release {
            "state = 'pending', attempts = 0, next_attempt_at = NULL, generation = generation + 1,
             held_for = '', held_by = ''"
        } else {
            "state = 'rejected'"
        };
        self.conn.execute(
            &format!("UPDATE forward_queue SET {set} WHERE {filter}"),
            args,
        )?;
        if release && !uids.is_empty() {
            self.touch_queue();
        }
        Ok(uids)
    }

    /// Counts for the worklist's safety banner.
    pub fn safety_summary(&self) -> Result<SafetySummary, StoreError> {
        Ok(self.conn.query_row(
            "SELECT (SELECT count(DISTINCT study_instance_uid) FROM safety_findings),
                    count(DISTINCT sop_instance_uid), count(DISTINCT study_instance_uid)
             FROM forward_queue WHERE state = 'held'",
            [],
            |r| {
                Ok(SafetySummary {
                    studies_with_findings: r.get(0)?,
                    held_instances: r.get(1)?,
                    studies_with_held: r.get(2)?,
                })
            },
        )?)
    }

    /// The study an instance is filed under.
    pub fn instance_study(&self, sop_instance_uid: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT se.study_instance_uid FROM instances i JOIN series se USING (series_instance_uid)
                 WHERE i.sop_instance_uid = ?1",
            )?
            .query_row([sop_instance_uid], |r| r.get(0))
            .optional()?)
    }

    /// The safety side of one study.
    pub fn study_safety(&self, study: &str) -> Result<StudySafety, StoreError> {
        let findings = self.findings_where("f.study_instance_uid = ?1", [study])?;
        let held = self
            .conn
            .prepare(
                "SELECT q.destination, q.sop_instance_uid, q.series_instance_uid,
                        se.series_description, i.instance_number, q.state, q.held_for, q.queued_at
                 FROM forward_queue q JOIN instances i USING (sop_instance_uid)
                 JOIN series se ON se.series_instance_uid = q.series_instance_uid
                 WHERE q.study_instance_uid = ?1 AND q.state IN ('held', 'waiting')
                 ORDER BY q.id",
            )?
            .query_map([study], |r| {
                Ok(HeldRow {
                    destination: r.get(0)?,
                    sop_instance_uid: r.get(1)?,
                    series_instance_uid: r.get(2)?,
                    series_description: r.get(3)?,
                    instance_number: r.get(4)?,
                    state: r.get(5)?,
                    held_for: super::split_list(Some(r.get(6)?)),
                    queued_at: r.get(7)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        let series_checks = self
            .conn
            .prepare(
                "SELECT series_instance_uid, series_description,
                        CASE WHEN geometry_checked_at IS NULL THEN 'pending' ELSE geometry END,
                        geometry_checked_at
                 FROM series WHERE study_instance_uid = ?1
                 ORDER BY series_number IS NULL, series_number, first_received_at",
            )?
            .query_map([study], |r| {
                Ok(SeriesCheckRow {
                    series_instance_uid: r.get(0)?,
                    series_description: r.get(1)?,
                    geometry: r.get(2)?,
                    checked_at: r.get(3)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(StudySafety {
            findings,
            held,
            series_checks,
        })
    }

    /// Studies with findings or rows held or waiting, the latest first (at most `limit`).
    pub fn safety_studies(&self, limit: usize) -> Result<Vec<SafetyStudy>, StoreError> {
        let mut studies: Vec<SafetyStudy> = self
            .conn
            .prepare(
                "WITH flagged (study_instance_uid, at) AS (
                     SELECT study_instance_uid, max(found_at) FROM safety_findings
                     GROUP BY study_instance_uid
                     UNION ALL
                     SELECT study_instance_uid, max(queued_at) FROM forward_queue
                     WHERE state IN ('held', 'waiting') GROUP BY study_instance_uid)
                 SELECT s.study_instance_uid, s.patient_id, s.patient_name, s.study_date,
                        s.study_description,
                        (SELECT count(DISTINCT sop_instance_uid) FROM forward_queue q
                          WHERE q.study_instance_uid = s.study_instance_uid AND q.state = 'held'),
                        (SELECT count(DISTINCT sop_instance_uid) FROM forward_queue q
                          WHERE q.study_instance_uid = s.study_instance_uid AND q.state = 'waiting')
                 FROM (SELECT study_instance_uid, max(at) AS at FROM flagged
                       GROUP BY study_instance_uid) f
                 JOIN studies s USING (study_instance_uid)
                 ORDER BY f.at DESC LIMIT ?1",
            )?
            .query_map([limit as i64], |r| {
                Ok(SafetyStudy {
                    study_instance_uid: r.get(0)?,
                    patient_id: r.get(1)?,
                    patient_name: r.get(2)?,
                    study_date: r.get(3)?,
                    study_description: r.get(4)?,
                    held_instances: r.get(5)?,
                    waiting_instances: r.get(6)?,
                    findings: Vec::new(),
                })
            })?
            .collect::<Result<_, _>>()?;
        for study in &mut studies {
            study.findings =
                self.findings_where("f.study_instance_uid = ?1", [&study.study_instance_uid])?;
        }
        Ok(studies)
    }

    fn findings_where(
        &self,
        filter: &str,
        args: impl rusqlite::Params,
    ) -> Result<Vec<SafetyFindingRow>, StoreError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT f.code, f.series_instance_uid, f.sop_instance_uid, f.attribute, f.expected,
                    f.found, f.detail, f.found_at
             FROM safety_findings f WHERE {filter} ORDER BY f.id"
        ))?;
        let rows = stmt.query_map(args, |r| {
            let code: String = r.get(0)?;
            Ok(SafetyFindingRow {
                code: FindingCode::parse(&code).ok_or_else(|| {
                    rusqlite::Error::FromSqlConversionFailure(
                        0,
                        rusqlite::types::Type::Text,
                        format!("finding code {code:?}").into(),
                    )
                })?,
                series_instance_uid: r.get(1)?,
                sop_instance_uid: r.get(2)?,
                attribute: r.get(3)?,
                expected: r.get(4)?,
                found: r.get(5)?,
                detail: r.get(6)?,
                found_at: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// `N` backslash-separated decimals as the index keeps them; `None` unless exactly `N`.
fn decimals<const N: usize>(text: &str) -> Option<[f64; N]> {
    let values: Vec<f64> = text
        .split('\\')
        .map(|v| v.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .ok()?;
    values.try_into().ok()
}
