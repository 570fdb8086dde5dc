//! The SQL side of naming verdicts: imported nomenclature sources, the facts a study verdict
//! is computed from, verdicts and their status history, documented reasons, worklists and
//! reports. The verdict itself is computed by the pure [`crate::naming`] module.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use super::StoreError;
use crate::header::CodeItem;
use crate::naming::{
    Naming, Scheme, SeriesFacts, SeriesVerdict, StandardName, StudyFacts, StudyStatus, Verdict,
};

/// What importing a nomenclature file did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum ImportOutcome {
    /// The same file (by SHA-256) is already imported: nothing changed.
    Unchanged { imported_at: String },
    /// Imported; older releases of the same format were replaced.
    Imported { replaced: Vec<String> },
}

/// Stores a parsed nomenclature file as a versioned source.
pub fn import_source(
    conn: &mut Connection,
    format: &str,
    file_name: &str,
    sha256: &str,
    rows: usize,
    names: &[StandardName],
    now: &str,
) -> Result<ImportOutcome, StoreError> {
    let tx = conn.transaction()?;
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
    tx.commit()?;
    Ok(ImportOutcome::Imported { replaced })
}

/// Every imported standard name, oldest source first.
pub fn imported_names(conn: &Connection) -> Result<Vec<StandardName>, StoreError> {
    let mut stmt = conn.prepare(
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

#[derive(Debug, Clone, Serialize)]
pub struct SourceRow {
    pub format: String,
    pub file_name: String,
    pub sha256: String,
    pub rows: i64,
    pub names: i64,
    pub imported_at: String,
}

pub fn sources(conn: &Connection) -> Result<Vec<SourceRow>, StoreError> {
    let mut stmt =
        conn.prepare("SELECT format, file_name, sha256, rows, names, imported_at FROM nomenclature_sources ORDER BY id")?;
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

/// Gathers what the verdict looks at for one study, from the index.
pub fn study_facts(
    conn: &Connection,
    study: &str,
) -> Result<(StudyFacts, Vec<String>), StoreError> {
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

/// The latest documented reason of a study, if any.
fn latest_reason(conn: &Connection, study: &str) -> rusqlite::Result<Option<(String, String)>> {
    conn.prepare_cached(
        "SELECT reason_code, documented_by FROM study_reasons WHERE study_instance_uid = ?1 ORDER BY id DESC LIMIT 1",
    )?
    .query_row([study], |r| Ok((r.get(0)?, r.get(1)?)))
    .optional()
}

/// Evaluates a study again from the index and records the verdict; a change of status goes to
/// the history with `cause`. Returns the final status.
pub fn refresh_verdict(
    conn: &Connection,
    naming: &Naming,
    study: &str,
    cause: &str,
    now: &str,
) -> Result<StudyStatus, StoreError> {
    let (facts, series_uids) = study_facts(conn, study)?;
    let verdict = naming.evaluate(&facts);
    record_verdict(conn, study, &verdict, &series_uids, cause, now)
}

fn record_verdict(
    conn: &Connection,
    study: &str,
    verdict: &Verdict,
    series_uids: &[String],
    cause: &str,
    now: &str,
) -> Result<StudyStatus, StoreError> {
    let documented = latest_reason(conn, study)?.is_some();
    let status = match verdict.status {
        StudyStatus::NeedsReason if documented => StudyStatus::ReasonDocumented,
        other => other,
    };
    let previous: Option<(String, Option<String>)> = conn
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
        "INSERT INTO study_verdicts (study_instance_uid, status, standard_scheme, standard_code, standard_name,
             matched_by, findings, suggestions, rt_planning, evidence, suggested_reason, needs_reason_since, evaluated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT (study_instance_uid) DO UPDATE SET
             status = excluded.status, standard_scheme = excluded.standard_scheme,
             standard_code = excluded.standard_code, standard_name = excluded.standard_name,
             matched_by = excluded.matched_by, findings = excluded.findings,
             suggestions = excluded.suggestions, rt_planning = excluded.rt_planning,
             evidence = excluded.evidence, suggested_reason = excluded.suggested_reason,
             needs_reason_since = excluded.needs_reason_since, evaluated_at = excluded.evaluated_at",
    )?
    .execute(params![
        study,
        status.as_str(),
        scheme,
        code,
        name,
        by,
        json(&verdict.findings),
        json(&verdict.suggestions),
        verdict.rt_planning,
        json(&verdict.evidence),
        verdict.suggested_reason.clone().unwrap_or_default(),
        needs_reason_since,
        now,
    ])?;
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
    if from.as_deref() != Some(status.as_str()) {
        conn.prepare_cached(
            "INSERT INTO study_status_history (study_instance_uid, changed_at, from_status, to_status, cause)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![study, now, from, status.as_str(), cause])?;
    }
    Ok(status)
}

/// The JSON columns: findings, suggestions and evidence serialise infallibly (plain data).
fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "[]".into())
}

/// Records a documented reason (append-only) and updates the study's status, in its own
/// transaction (CLI).
pub fn document_reason(
    conn: &mut Connection,
    naming: &Naming,
    study: &str,
    reason_code: &str,
    note: &str,
    documented_by: &str,
    now: &str,
) -> Result<Option<StudyStatus>, StoreError> {
    let tx = conn.transaction()?;
    let status = document_reason_in(&tx, naming, study, reason_code, note, documented_by, now)?;
    tx.commit()?;
    Ok(status)
}

/// The same inside a transaction the caller owns (the gateway's writer). `None`: no such study.
pub fn document_reason_in(
    conn: &Connection,
    naming: &Naming,
    study: &str,
    reason_code: &str,
    note: &str,
    documented_by: &str,
    now: &str,
) -> Result<Option<StudyStatus>, StoreError> {
    let exists: bool = conn
        .query_row(
            "SELECT 1 FROM studies WHERE study_instance_uid = ?1",
            [study],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    if !exists {
        return Ok(None);
    }
    conn.execute(
        "INSERT INTO study_reasons (study_instance_uid, reason_code, note, documented_by, documented_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![study, reason_code, note, documented_by, now],
    )?;
    let cause = format!("reason {reason_code} documented by {documented_by}");
    Ok(Some(refresh_verdict(conn, naming, study, &cause, now)?))
}

/// Every study UID, for `nomenclature recheck`.
pub fn study_uids(conn: &Connection) -> Result<Vec<String>, StoreError> {
    let mut stmt =
        conn.prepare("SELECT study_instance_uid FROM studies ORDER BY first_received_at")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Re-evaluates every stored study (after the nomenclature or the rules changed); documented
/// reasons stay. Returns (studies, studies whose status changed).
pub fn recheck_all(
    conn: &mut Connection,
    naming: &Naming,
    now: &str,
) -> Result<(usize, usize), StoreError> {
    let tx = conn.transaction()?;
    let uids = study_uids(&tx)?;
    let mut changed = 0;
    for uid in &uids {
        let before: Option<String> = tx
            .query_row(
                "SELECT status FROM study_verdicts WHERE study_instance_uid = ?1",
                [uid],
                |r| r.get(0),
            )
            .optional()?;
        let after = refresh_verdict(&tx, naming, uid, "nomenclature recheck", now)?;
        if before.as_deref() != Some(after.as_str()) {
            changed += 1;
        }
    }
    tx.commit()?;
    Ok((uids.len(), changed))
}

/// One row of the worklist / `simgate studies --status`.
#[derive(Debug, Clone, Serialize)]
pub struct StudyListing {
    pub study_instance_uid: String,
    pub status: String,
    pub hcpcs: String,
    pub patient_id: String,
    pub patient_name: String,
    pub study_date: String,
    pub study_description: String,
    pub station_names: Vec<String>,
    pub series_descriptions: Vec<String>,
    pub series_count: i64,
    pub instance_count: i64,
    pub first_received_at: String,
    pub last_received_at: String,
    pub needs_reason_since: Option<String>,
    pub findings: serde_json::Value,
    pub suggestions: serde_json::Value,
    pub rt_planning: bool,
    pub evidence: serde_json::Value,
    pub suggested_reason: String,
    pub reason_code: Option<String>,
    pub documented_by: Option<String>,
    pub documented_at: Option<String>,
}

/// Received studies with their verdicts, oldest waiting first; `status` None = all; `since`
/// filters on the first received time (RFC 3339 text comparison, so a date works).
pub fn list_by_status(
    conn: &Connection,
    status: Option<StudyStatus>,
    since: Option<&str>,
) -> Result<Vec<StudyListing>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT s.study_instance_uid, v.status, s.patient_id, s.patient_name, s.study_date, s.study_description,
                (SELECT group_concat(DISTINCT station_name) FROM series WHERE study_instance_uid = s.study_instance_uid AND station_name <> ''),
                (SELECT json_group_array(series_description) FROM (SELECT series_description FROM series
                    WHERE study_instance_uid = s.study_instance_uid ORDER BY series_number IS NULL, series_number, first_received_at)),
                s.first_received_at, v.needs_reason_since, coalesce(v.findings, '[]'), coalesce(v.suggestions, '[]'),
                coalesce(v.rt_planning, 0), coalesce(v.evidence, '[]'), coalesce(v.suggested_reason, ''),
                r.reason_code, r.documented_by, r.documented_at,
                (SELECT count(*) FROM series WHERE study_instance_uid = s.study_instance_uid),
                (SELECT count(*) FROM instances i JOIN series se USING (series_instance_uid)
                  WHERE se.study_instance_uid = s.study_instance_uid),
                s.last_received_at
         FROM studies s LEFT JOIN study_verdicts v USING (study_instance_uid)
         LEFT JOIN study_reasons r ON r.id = (SELECT max(id) FROM study_reasons WHERE study_instance_uid = s.study_instance_uid)
         WHERE (?1 IS NULL OR v.status = ?1) AND (?2 IS NULL OR s.first_received_at >= ?2)
         ORDER BY coalesce(v.needs_reason_since, s.first_received_at), s.study_instance_uid",
    )?;
    let parse = |text: String| serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    let rows = stmt.query_map(params![status.map(StudyStatus::as_str), since], |r| {
        let status: String = r.get::<_, Option<String>>(1)?.unwrap_or_default();
        let stations: Option<String> = r.get(6)?;
        let series: String = r.get(7)?;
        Ok(StudyListing {
            study_instance_uid: r.get(0)?,
            hcpcs: StudyStatus::parse(&status)
                .map(StudyStatus::hcpcs)
                .unwrap_or("")
                .to_string(),
            status,
            patient_id: r.get(2)?,
            patient_name: r.get(3)?,
            study_date: r.get(4)?,
            study_description: r.get(5)?,
            station_names: stations
                .map(|s| s.split(',').map(str::to_string).collect())
                .unwrap_or_default(),
            series_descriptions: serde_json::from_str(&series).unwrap_or_default(),
            series_count: r.get(18)?,
            instance_count: r.get(19)?,
            first_received_at: r.get(8)?,
            last_received_at: r.get(20)?,
            needs_reason_since: r.get(9)?,
            findings: parse(r.get(10)?),
            suggestions: parse(r.get(11)?),
            rt_planning: r.get::<_, i64>(12)? != 0,
            evidence: parse(r.get(13)?),
            suggested_reason: r.get(14)?,
            reason_code: r.get(15)?,
            documented_by: r.get(16)?,
            documented_at: r.get(17)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// How `simgate report` groups studies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportGrouping {
    Month,
    Station,
    Physician,
}

/// One group of the G-code report.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ReportRow {
    pub group: String,
    pub g9318: u64,
    pub g9319: u64,
    pub g9320: u64,
    pub total: u64,
    /// G9318 / (G9318 + G9319), 0..=1: studies with a documented reason (G9320) are
    /// denominator exceptions. `None` when there is no G9318 or G9319 study.
    pub conformance_rate: Option<f64>,
}

/// Counts G9318, G9319 and G9320 for studies first received in `from ..= to` (dates
/// `YYYY-MM-DD`), grouped; the last row is the total.
pub fn report(
    conn: &Connection,
    from: &str,
    to: &str,
    grouping: ReportGrouping,
) -> Result<Vec<ReportRow>, StoreError> {
    let listings = list_by_status(conn, None, None)?;
    let mut groups: BTreeMap<String, ReportRow> = BTreeMap::new();
    let mut total = ReportRow {
        group: "total".into(),
        ..ReportRow::default()
    };
    for study in listings {
        let day = &study.first_received_at[..study.first_received_at.len().min(10)];
        if day < from || day > to {
            continue;
        }
        let group = match grouping {
            ReportGrouping::Month => day[..day.len().min(7)].to_string(),
            ReportGrouping::Station => study
                .station_names
                .first()
                .cloned()
                .unwrap_or_else(|| "(no station)".into()),
            ReportGrouping::Physician => match &study.documented_by {
                Some(by) if study.status == "reason-documented" => by.clone(),
                _ => "(no reason documented)".into(),
            },
        };
        for row in [
            groups.entry(group.clone()).or_insert_with(|| ReportRow {
                group,
                ..ReportRow::default()
            }),
            &mut total,
        ] {
            match study.status.as_str() {
                "conforming" => row.g9318 += 1,
                "needs-reason" => row.g9319 += 1,
                _ => row.g9320 += 1,
            }
            row.total += 1;
        }
    }
    let mut rows: Vec<ReportRow> = groups.into_values().collect();
    rows.push(total);
    for row in &mut rows {
        let denominator = row.g9318 + row.g9319;
        row.conformance_rate = (denominator > 0)
            .then(|| (row.g9318 as f64 / denominator as f64 * 1000.0).round() / 1000.0);
    }
    Ok(rows)
}

/// One documented reason record.
#[derive(Debug, Clone, Serialize)]
pub struct ReasonRow {
    pub reason_code: String,
    pub note: String,
    pub documented_by: String,
    pub documented_at: String,
}

/// One change of status.
#[derive(Debug, Clone, Serialize)]
pub struct StatusChange {
    pub changed_at: String,
    pub from_status: Option<String>,
    pub to_status: String,
    pub cause: String,
}

/// The naming side of one study, for `simgate study` and the study page.
#[derive(Debug, Clone, Serialize)]
pub struct StudyNaming {
    pub status: String,
    pub hcpcs: String,
    pub standard_scheme: String,
    pub standard_code: String,
    pub standard_name: String,
    pub matched_by: String,
    pub findings: serde_json::Value,
    pub suggestions: serde_json::Value,
    pub rt_planning: bool,
    pub evidence: serde_json::Value,
    pub suggested_reason: String,
    pub needs_reason_since: Option<String>,
    pub reasons: Vec<ReasonRow>,
    pub status_history: Vec<StatusChange>,
}

pub fn study_naming(conn: &Connection, study: &str) -> Result<Option<StudyNaming>, StoreError> {
    let parse = |text: String| serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    let verdict = conn
        .query_row(
            "SELECT status, standard_scheme, standard_code, standard_name, matched_by, findings, suggestions,
                    rt_planning, evidence, suggested_reason, needs_reason_since
             FROM study_verdicts WHERE study_instance_uid = ?1",
            [study],
            |r| {
                let status: String = r.get(0)?;
                Ok(StudyNaming {
                    hcpcs: StudyStatus::parse(&status).map(StudyStatus::hcpcs).unwrap_or("").to_string(),
                    status,
                    standard_scheme: r.get(1)?,
                    standard_code: r.get(2)?,
                    standard_name: r.get(3)?,
                    matched_by: r.get(4)?,
                    findings: parse(r.get(5)?),
                    suggestions: parse(r.get(6)?),
                    rt_planning: r.get::<_, i64>(7)? != 0,
                    evidence: parse(r.get(8)?),
                    suggested_reason: r.get(9)?,
                    needs_reason_since: r.get(10)?,
                    reasons: Vec::new(),
                    status_history: Vec::new(),
                })
            },
        )
        .optional()?;
    let Some(mut naming) = verdict else {
        return Ok(None);
    };
    naming.reasons = conn
        .prepare("SELECT reason_code, note, documented_by, documented_at FROM study_reasons WHERE study_instance_uid = ?1 ORDER BY id")?
        .query_map([study], |r| {
            Ok(ReasonRow {
                reason_code: r.get(0)?,
                note: r.get(1)?,
                documented_by: r.get(2)?,
                documented_at: r.get(3)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    naming.status_history = conn
        .prepare(
            "SELECT changed_at, from_status, to_status, cause FROM study_status_history
             WHERE study_instance_uid = ?1 ORDER BY rowid",
        )?
        .query_map([study], |r| {
            Ok(StatusChange {
                changed_at: r.get(0)?,
                from_status: r.get(1)?,
                to_status: r.get(2)?,
                cause: r.get(3)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(Some(naming))
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
        let mut conn =
            super::super::open(&dir.path().join("simgate.db"), Durability::Os).expect("open");
        let v1 = [
            name("RPID16", "CT Chest wo IV Contrast"),
            name("RPID3", "CT Abdomen wo IV Contrast"),
        ];
        let first = import_source(
            &mut conn,
            "radlex-core-playbook",
            "v1.csv",
            "aaa",
            2,
            &v1,
            "t1",
        )
        .expect("import");
        assert_eq!(first, ImportOutcome::Imported { replaced: vec![] });
        let again = import_source(
            &mut conn,
            "radlex-core-playbook",
            "v1-copy.csv",
            "aaa",
            2,
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
        assert_eq!(imported_names(&conn).expect("names").len(), 2);

        let v2 = [name("RPID16", "CT Chest wo IV Contrast")];
        let newer = import_source(
            &mut conn,
            "radlex-core-playbook",
            "v2.csv",
            "bbb",
            1,
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
        assert_eq!(imported_names(&conn).expect("names").len(), 1);
        let sources = sources(&conn).expect("sources");
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
        import_source(
            &mut conn,
            "loinc-rsna-radiology-playbook",
            "loinc.csv",
            "ccc",
            3,
            &loinc,
            "t4",
        )
        .expect("import");
        assert_eq!(imported_names(&conn).expect("names").len(), 2);
    }

    #[test]
    fn documented_reasons_are_append_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn =
            super::super::open(&dir.path().join("simgate.db"), Durability::Os).expect("open");
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
