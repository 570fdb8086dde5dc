//! The read models of studies: the worklist rows, one study in detail (series, codes, verdict,
//! reasons, history), and the facts the G-code report counts. Typed values; the API and the
//! `--json` printers serialise them with the field names the README documents.

use std::collections::HashMap;

use rusqlite::types::Value;
use rusqlite::{OptionalExtension, Row, params};
use serde::{Serialize, Serializer};

use super::{Db, StoreError, split_list};
use crate::naming::StudyStatus;
use crate::naming::report::{NameFact, ReportFact};

/// Which studies a list shows.
#[derive(Debug, Clone, Default)]
pub struct StudyQuery {
    /// `None`: every status (and studies without a verdict yet).
    pub status: Option<StudyStatus>,
    /// `YYYY-MM-DD` (or a full time): first received on or after.
    pub since: Option<String>,
    /// Station Name, exact, case-insensitive.
    pub station: Option<String>,
    /// Free text in patient name or ID, study or series descriptions, or the UID.
    pub text: Option<String>,
    /// Only studies with safety findings or held instances (any naming status).
    pub safety: bool,
    /// First received before this (`YYYY-MM-DD`: up to the end of the day before).
    pub until: Option<String>,
    /// Study Date (DA, `YYYYMMDD`) from and to, inclusive.
    pub study_date_from: Option<String>,
    pub study_date_to: Option<String>,
    /// Who documented the latest reason.
    pub documented_by: Option<String>,
}

/// The orders a study list can be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StudySort {
    /// Longest waiting for a reason first (then first received).
    Waiting,
    StudyDate,
    Patient,
    Station,
    Received,
    Accession,
}

impl StudySort {
    pub const ALL: [(StudySort, &'static str); 6] = [
        (StudySort::Waiting, "waiting"),
        (StudySort::StudyDate, "study-date"),
        (StudySort::Patient, "patient"),
        (StudySort::Station, "station"),
        (StudySort::Received, "received"),
        (StudySort::Accession, "accession"),
    ];

    pub fn parse(text: &str) -> Option<StudySort> {
        Self::ALL.iter().find(|(_, t)| *t == text).map(|(s, _)| *s)
    }

    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(s, _)| *s == self)
            .map_or("waiting", |(_, t)| t)
    }

    /// The SQL sort key (over `studies s` and `study_verdicts v`); fixed text, never input.
    fn order_by(self) -> &'static str {
        match self {
            StudySort::Waiting => "coalesce(v.needs_reason_since, s.first_received_at)",
            StudySort::StudyDate => "s.study_date",
            StudySort::Patient => "s.patient_name COLLATE NOCASE",
            StudySort::Station => {
                "(SELECT min(station_name) FROM series WHERE study_instance_uid = s.study_instance_uid
                    AND station_name <> '') COLLATE NOCASE"
            }
            StudySort::Received => "s.first_received_at",
            StudySort::Accession => "s.accession_number",
        }
    }
}

/// The WHERE clause of a study query and its values: only the filters given, so the planner
/// sees plain conditions it can use indexes for.
fn page_filter(query: &StudyQuery) -> (String, Vec<Value>) {
    let mut clauses: Vec<String> = Vec::new();
    let mut args: Vec<Value> = Vec::new();
    let mut add = |clause: &str, value: Value, args: &mut Vec<Value>| {
        args.push(value);
        clauses.push(clause.replace("?", &format!("?{}", args.len())));
    };
    let text = |v: &str| Value::Text(v.to_string());
    if let Some(status) = query.status {
        add("v.status = ?", text(status.as_str()), &mut args);
    }
    if let Some(since) = &query.since {
        add("s.first_received_at >= ?", text(since), &mut args);
    }
    if let Some(until) = &query.until {
        add("s.first_received_at < ?", text(until), &mut args);
    }
    if let Some(from) = &query.study_date_from {
        add("s.study_date >= ?", text(from), &mut args);
    }
    if let Some(to) = &query.study_date_to {
        add("s.study_date <= ?", text(to), &mut args);
    }
    if let Some(by) = &query.documented_by {
        add(
            "(SELECT documented_by FROM study_reasons WHERE study_instance_uid = s.study_instance_uid
               ORDER BY id DESC LIMIT 1) = ?",
            text(by),
            &mut args,
        );
    }
    if let Some(station) = &query.station {
        add(
            "EXISTS (SELECT 1 FROM series se WHERE se.study_instance_uid = s.study_instance_uid
               AND se.station_name = ? COLLATE NOCASE)",
            text(station),
            &mut args,
        );
    }
    if let Some(needle) = &query.text {
        // LIKE is case-insensitive for ASCII; the needle's own % and _ match themselves.
        let escaped = needle
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        args.push(Value::Text(format!("%{escaped}%")));
        let n = args.len();
        clauses.push(format!(
            "(s.patient_name LIKE ?{n} ESCAPE '\\' OR s.patient_id LIKE ?{n} ESCAPE '\\'
              OR s.accession_number LIKE ?{n} ESCAPE '\\' OR s.study_description LIKE ?{n} ESCAPE '\\'
              OR s.study_instance_uid LIKE ?{n} ESCAPE '\\'
              OR EXISTS (SELECT 1 FROM series se WHERE se.study_instance_uid = s.study_instance_uid
                         AND se.series_description LIKE ?{n} ESCAPE '\\'))"
        ));
    }
    if query.safety {
        clauses.push(
            "(EXISTS (SELECT 1 FROM safety_findings f WHERE f.study_instance_uid = s.study_instance_uid)
              OR EXISTS (SELECT 1 FROM forward_queue q WHERE q.study_instance_uid = s.study_instance_uid
                         AND q.state = 'held'))"
                .into(),
        );
    }
    let filter = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    (filter, args)
}

/// A finding of the verdict: a name that follows neither the standard nor the conventions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FindingRow {
    /// `study-name-nonstandard` or `series-name-nonstandard`.
    pub code: String,
    pub subject: String,
    pub detail: String,
}

/// A standard name suggested for a nonstandard study name.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SuggestionRow {
    pub scheme: String,
    pub code: String,
    pub name: String,
    pub score: f64,
}

/// Why the study is taken as acquired for radiation treatment planning.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvidenceRow {
    pub kind: String,
    pub detail: String,
}

/// One row of the worklist, `simgate studies` and `GET /api/studies`.
#[derive(Debug, Clone, Serialize)]
pub struct StudyRow {
    pub study_instance_uid: String,
    /// `""` before the first verdict.
    #[serde(serialize_with = "empty_when_none")]
    pub status: Option<StudyStatus>,
    /// G9318, G9319 or G9320; `""` before the first verdict.
    pub hcpcs: &'static str,
    pub patient_id: String,
    pub patient_name: String,
    pub study_date: String,
    pub accession_number: String,
    pub study_description: String,
    pub station_names: Vec<String>,
    pub series_descriptions: Vec<String>,
    pub series_count: i64,
    pub instance_count: i64,
    pub first_received_at: String,
    pub last_received_at: String,
    pub needs_reason_since: Option<String>,
    #[serde(flatten)]
    pub items: VerdictItems,
    pub rt_planning: bool,
    pub suggested_reason: String,
    pub reason_code: Option<String>,
    /// The latest reason's note.
    pub reason_note: Option<String>,
    pub documented_by: Option<String>,
    pub documented_at: Option<String>,
    /// Safety findings of the study (identity and geometry checks).
    pub safety_findings: i64,
    /// Instances the safety gate holds for at least one destination.
    pub held_instances: i64,
}

impl StudyRow {
    /// How long the study has waited for a documented reason, while it needs one.
    pub fn waiting(&self) -> Option<std::time::Duration> {
        match self.status {
            Some(StudyStatus::NeedsReason) => {
                crate::clock::elapsed_since(self.needs_reason_since.as_deref()?)
            }
            _ => None,
        }
    }
}

/// The study-level fields of `simgate study` and `GET /api/studies/{uid}`.
#[derive(Debug, Clone, Serialize)]
pub struct StudySummary {
    pub study_instance_uid: String,
    pub patient_id: String,
    pub patient_name: String,
    pub study_date: String,
    pub study_description: String,
    pub station_names: Vec<String>,
    pub series_count: i64,
    pub instance_count: i64,
    pub first_received_at: String,
    pub last_received_at: String,
}

/// How a series' name was judged against the site's conventions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SeriesJudgement {
    Conforming,
    Nonstandard,
    /// RT objects and other non-image series: recorded, not judged.
    NotJudged,
}

impl SeriesJudgement {
    pub fn as_str(self) -> &'static str {
        match self {
            SeriesJudgement::Conforming => "conforming",
            SeriesJudgement::Nonstandard => "nonstandard",
            SeriesJudgement::NotJudged => "not-judged",
        }
    }

    fn parse(text: &str) -> Option<SeriesJudgement> {
        [
            SeriesJudgement::Conforming,
            SeriesJudgement::Nonstandard,
            SeriesJudgement::NotJudged,
        ]
        .into_iter()
        .find(|j| j.as_str() == text)
    }
}

/// One series of a study.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesRow {
    pub series_instance_uid: String,
    pub series_number: Option<i64>,
    pub modality: String,
    pub series_description: String,
    pub protocol_name: String,
    pub station_name: String,
    pub manufacturer: String,
    pub manufacturer_model_name: String,
    pub frame_of_reference_uid: String,
    pub instance_count: i64,
    pub bytes: i64,
    pub last_received_at: String,
    /// The series kind of the site's conventions, `""` when none.
    pub kind: String,
    /// `""` before any verdict.
    #[serde(serialize_with = "empty_when_none")]
    pub verdict: Option<SeriesJudgement>,
}

/// A procedure code recorded for a study.
#[derive(Debug, Clone, Serialize)]
pub struct CodeRow {
    /// `procedure` or `requested_procedure`.
    pub sequence: String,
    pub code_value: String,
    pub coding_scheme_designator: String,
    pub code_meaning: String,
}

/// One documented reason record.
#[derive(Debug, Clone, Serialize)]
pub struct ReasonRow {
    pub reason_code: String,
    pub note: String,
    pub documented_by: String,
    pub documented_at: String,
}

/// One change of a study's status.
#[derive(Debug, Clone, Serialize)]
pub struct StatusChange {
    pub changed_at: String,
    pub from_status: Option<StudyStatus>,
    pub to_status: StudyStatus,
    pub cause: String,
}

/// The naming side of one study: verdict, reasons and status history.
#[derive(Debug, Clone, Serialize)]
pub struct StudyNaming {
    pub status: StudyStatus,
    pub hcpcs: &'static str,
    pub standard_scheme: String,
    pub standard_code: String,
    pub standard_name: String,
    pub matched_by: String,
    #[serde(flatten)]
    pub items: VerdictItems,
    pub rt_planning: bool,
    pub suggested_reason: String,
    pub needs_reason_since: Option<String>,
    pub reasons: Vec<ReasonRow>,
    pub status_history: Vec<StatusChange>,
}

/// Everything about one study.
#[derive(Debug, Clone, Serialize)]
pub struct StudyDetail {
    #[serde(flatten)]
    pub summary: StudySummary,
    pub accession_number: String,
    pub study_time: String,
    pub requested_procedure_description: String,
    pub procedure_codes: Vec<CodeRow>,
    pub series: Vec<SeriesRow>,
    /// Absent before the first verdict.
    pub naming: Option<StudyNaming>,
}

/// The findings, suggestions and evidence of one study's verdict.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerdictItems {
    pub findings: Vec<FindingRow>,
    pub suggestions: Vec<SuggestionRow>,
    pub evidence: Vec<EvidenceRow>,
}

fn empty_when_none<S: Serializer, T: Serialize>(
    value: &Option<T>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => value.serialize(serializer),
        None => serializer.serialize_str(""),
    }
}

fn hcpcs(status: Option<StudyStatus>) -> &'static str {
    status.map(StudyStatus::hcpcs).unwrap_or("")
}

/// The columns of a [`StudyRow`], over `studies s`, `study_verdicts v` and `study_reasons r`.
const STUDY_COLUMNS_SQL: &str = "
    SELECT s.study_instance_uid, v.status, s.patient_id, s.patient_name, s.study_date,
           s.study_description,
           (SELECT group_concat(DISTINCT station_name) FROM series
             WHERE study_instance_uid = s.study_instance_uid AND station_name <> ''),
           (SELECT group_concat(series_description, char(31)
                     ORDER BY series_number IS NULL, series_number, first_received_at)
              FROM series WHERE study_instance_uid = s.study_instance_uid),
           s.series_count, s.instance_count,
           s.first_received_at, s.last_received_at, v.needs_reason_since,
           coalesce(v.rt_planning, 0), coalesce(v.suggested_reason, ''),
           r.reason_code, r.documented_by, r.documented_at,
           (SELECT count(*) FROM safety_findings f WHERE f.study_instance_uid = s.study_instance_uid),
           (SELECT count(DISTINCT sop_instance_uid) FROM forward_queue q
             WHERE q.study_instance_uid = s.study_instance_uid AND q.state = 'held'),
           s.accession_number, r.note";

/// Every study, judged or not, with its verdict as `v`.
const STUDIES_WITH_VERDICTS_SQL: &str =
    "FROM studies s LEFT JOIN study_verdicts v USING (study_instance_uid)";

/// A study's latest documented reason, joined as `r`.
const LATEST_REASON_SQL: &str = "
    LEFT JOIN study_reasons r ON r.id = (SELECT max(id) FROM study_reasons
                                         WHERE study_instance_uid = s.study_instance_uid)";

/// Maps one row of [`STUDY_ROWS_SQL`]; the verdict's items are added after.
fn study_row(r: &Row<'_>) -> rusqlite::Result<StudyRow> {
    let status: Option<StudyStatus> = r.get(1)?;
    let series: Option<String> = r.get(7)?;
    let series_count: i64 = r.get(8)?;
    Ok(StudyRow {
        study_instance_uid: r.get(0)?,
        status,
        hcpcs: hcpcs(status),
        patient_id: r.get(2)?,
        patient_name: r.get(3)?,
        study_date: r.get(4)?,
        study_description: r.get(5)?,
        station_names: split_list(r.get(6)?),
        // Joined with the unit separator, which a description cannot contain; NULL: no series.
        series_descriptions: match series {
            Some(text) => text.split('\u{1f}').map(str::to_string).collect(),
            None => Vec::new(),
        },
        series_count,
        instance_count: r.get(9)?,
        first_received_at: r.get(10)?,
        last_received_at: r.get(11)?,
        needs_reason_since: r.get(12)?,
        items: VerdictItems::default(),
        rt_planning: r.get::<_, i64>(13)? != 0,
        suggested_reason: r.get(14)?,
        reason_code: r.get(15)?,
        documented_by: r.get(16)?,
        documented_at: r.get(17)?,
        safety_findings: r.get(18)?,
        held_instances: r.get(19)?,
        accession_number: r.get(20)?,
        reason_note: r.get(21)?,
    })
}

impl Db<'_> {
    /// Received studies with their verdicts, oldest waiting first.
    pub fn studies(&self, query: &StudyQuery) -> Result<Vec<StudyRow>, StoreError> {
        Ok(self
            .study_page(query, StudySort::Waiting, false, 0, None)?
            .0)
    }

    /// The studies `query` matches in `sort` order, `limit` of them (all: `None`) from
    /// `offset`, and how many match in all. Two steps, so the columns computed per study
    /// (counts, stations, series names, verdict items) are computed for the page only: the
    /// matching UIDs in order first, with only the filters' and the sort's columns, then the
    /// rows of those.
    pub fn study_page(
        &self,
        query: &StudyQuery,
        sort: StudySort,
        descending: bool,
        offset: usize,
        limit: Option<usize>,
    ) -> Result<(Vec<StudyRow>, usize), StoreError> {
        let (filter, args) = page_filter(query);
        // With a status the verdicts drive the search (their status index); without one every
        // study is listed, judged or not.
        let join = if query.status.is_some() {
            "JOIN"
        } else {
            "LEFT JOIN"
        };
        let direction = if descending { "DESC" } else { "ASC" };
        let order = format!(
            "ORDER BY {key} {direction}, s.study_instance_uid {direction}",
            key = sort.order_by()
        );
        let verdicts = format!("studies s {join} study_verdicts v USING (study_instance_uid)");
        let Some(limit) = limit else {
            // The whole list: one pass, the columns computed for every row anyway.
            let rows = self
                .conn
                .prepare(&format!(
                    "{STUDY_COLUMNS_SQL} FROM {verdicts} {LATEST_REASON_SQL} {filter} {order}"
                ))?
                .query_map(rusqlite::params_from_iter(&args), study_row)?
                .collect::<Result<Vec<_>, _>>()?;
            let total = rows.len();
            let rows = rows.into_iter().skip(offset).collect();
            return Ok((self.with_verdict_items(rows)?, total));
        };
        let from = format!("FROM {verdicts} {filter}");
        let mut page_args = args.clone();
        page_args.push(Value::Integer(limit as i64));
        page_args.push(Value::Integer(offset as i64));
        let (uids, rowids): (Vec<String>, Vec<i64>) = self
            .conn
            .prepare(&format!(
                "SELECT s.study_instance_uid, s.rowid {from} {order} LIMIT ?{l} OFFSET ?{o}",
                l = page_args.len() - 1,
                o = page_args.len(),
            ))?
            .query_map(rusqlite::params_from_iter(&page_args), |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .unzip();
        // A page that starts at the top and is not full is the whole list: no count needed.
        let total = if offset == 0 && uids.len() < limit {
            uids.len() as i64
        } else {
            self.conn.query_row(
                &format!("SELECT count(*) {from}"),
                rusqlite::params_from_iter(&args),
                |r| r.get(0),
            )?
        };
        // The rows of the page by rowid: one table lookup each instead of the UID's index and
        // then the table (studies are never deleted and the index is never vacuumed, so a
        // study's rowid does not change between the two steps).
        let rowid_list = format!(
            "[{}]",
            rowids
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",")
        );
        let mut rows: HashMap<String, StudyRow> = self
            .conn
            .prepare(&format!(
                "{STUDY_COLUMNS_SQL} {STUDIES_WITH_VERDICTS_SQL} {LATEST_REASON_SQL}
                 WHERE s.rowid IN (SELECT value FROM json_each(?1))"
            ))?
            .query_map([&rowid_list], study_row)?
            .map(|row| row.map(|r| (r.study_instance_uid.clone(), r)))
            .collect::<Result<_, _>>()?;
        let in_order = uids.iter().filter_map(|uid| rows.remove(uid)).collect();
        Ok((self.with_verdict_items(in_order)?, total as usize))
    }

    /// The rows with their verdicts' findings, suggestions and evidence.
    fn with_verdict_items(&self, rows: Vec<StudyRow>) -> Result<Vec<StudyRow>, StoreError> {
        let uids: Vec<&str> = rows.iter().map(|r| r.study_instance_uid.as_str()).collect();
        let mut items = self.verdict_items_of(&super::json_array(&uids))?;
        Ok(rows
            .into_iter()
            .map(|mut row| {
                if let Some(items) = items.remove(&row.study_instance_uid) {
                    row.items = items;
                }
                row
            })
            .collect())
    }

    /// One study with its series, codes and naming; `None` when no such study is stored.
    pub fn study_detail(&self, study: &str) -> Result<Option<StudyDetail>, StoreError> {
        let conn = self.conn;
        let row = conn
            .query_row(
                &format!(
                    "{STUDY_COLUMNS_SQL} {STUDIES_WITH_VERDICTS_SQL} {LATEST_REASON_SQL}
                     WHERE s.study_instance_uid = ?1"
                ),
                [study],
                study_row,
            )
            .optional()?;
        let Some(row) = row else {
            return Ok(None);
        };
        let summary = StudySummary {
            study_instance_uid: row.study_instance_uid,
            patient_id: row.patient_id,
            patient_name: row.patient_name,
            study_date: row.study_date,
            study_description: row.study_description,
            station_names: row.station_names,
            series_count: row.series_count,
            instance_count: row.instance_count,
            first_received_at: row.first_received_at,
            last_received_at: row.last_received_at,
        };
        let (accession_number, study_time, requested_procedure_description) = conn.query_row(
            "SELECT accession_number, study_time, requested_procedure_description FROM studies
             WHERE study_instance_uid = ?1",
            [study],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )?;
        let procedure_codes = conn
            .prepare(
                "SELECT sequence, code_value, coding_scheme_designator, code_meaning
                 FROM study_procedure_codes WHERE study_instance_uid = ?1 ORDER BY rowid",
            )?
            .query_map([study], |row| {
                Ok(CodeRow {
                    sequence: row.get(0)?,
                    code_value: row.get(1)?,
                    coding_scheme_designator: row.get(2)?,
                    code_meaning: row.get(3)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        let series = conn
            .prepare(
                "SELECT se.series_instance_uid, se.series_number, se.modality, se.series_description,
                        se.protocol_name, se.station_name, se.manufacturer, se.manufacturer_model_name,
                        se.frame_of_reference_uid, count(i.sop_instance_uid),
                        coalesce(sum(i.file_size), 0), se.last_received_at, se.kind, se.verdict
                 FROM series se LEFT JOIN instances i USING (series_instance_uid)
                 WHERE se.study_instance_uid = ?1
                 GROUP BY se.series_instance_uid
                 ORDER BY se.series_number IS NULL, se.series_number, se.first_received_at",
            )?
            .query_map(params![study], |row| {
                Ok(SeriesRow {
                    series_instance_uid: row.get(0)?,
                    series_number: row.get(1)?,
                    modality: row.get(2)?,
                    series_description: row.get(3)?,
                    protocol_name: row.get(4)?,
                    station_name: row.get(5)?,
                    manufacturer: row.get(6)?,
                    manufacturer_model_name: row.get(7)?,
                    frame_of_reference_uid: row.get(8)?,
                    instance_count: row.get(9)?,
                    bytes: row.get(10)?,
                    last_received_at: row.get(11)?,
                    kind: row.get(12)?,
                    verdict: SeriesJudgement::parse(&row.get::<_, String>(13)?),
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(Some(StudyDetail {
            summary,
            accession_number,
            study_time,
            requested_procedure_description,
            procedure_codes,
            series,
            naming: self.study_naming(study)?,
        }))
    }

    pub fn study_naming(&self, study: &str) -> Result<Option<StudyNaming>, StoreError> {
        let conn = self.conn;
        let verdict = conn
            .query_row(
                "SELECT status, standard_scheme, standard_code, standard_name, matched_by,
                        rt_planning, suggested_reason, needs_reason_since
                 FROM study_verdicts WHERE study_instance_uid = ?1",
                [study],
                |r| {
                    let status: StudyStatus = r.get(0)?;
                    Ok(StudyNaming {
                        status,
                        hcpcs: status.hcpcs(),
                        standard_scheme: r.get(1)?,
                        standard_code: r.get(2)?,
                        standard_name: r.get(3)?,
                        matched_by: r.get(4)?,
                        items: VerdictItems::default(),
                        rt_planning: r.get::<_, i64>(5)? != 0,
                        suggested_reason: r.get(6)?,
                        needs_reason_since: r.get(7)?,
                        reasons: Vec::new(),
                        status_history: Vec::new(),
                    })
                },
            )
            .optional()?;
        let Some(mut naming) = verdict else {
            return Ok(None);
        };
        naming.items = self
            .verdict_items(Some(study))?
            .remove(study)
            .unwrap_or_default();
        naming.reasons = conn
            .prepare(
                "SELECT reason_code, note, documented_by, documented_at FROM study_reasons
                 WHERE study_instance_uid = ?1 ORDER BY id",
            )?
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

    /// Findings, suggestions and evidence of one study's verdict, or of every study's.
    /// The verdict items of one study.
    fn verdict_items(
        &self,
        study: Option<&str>,
    ) -> Result<HashMap<String, VerdictItems>, StoreError> {
        let one: Vec<String> = study.into_iter().map(str::to_string).collect();
        self.verdict_items_of(&super::json_array(&one))
    }

    /// The verdict items of the studies in `list` (a JSON array of UIDs).
    fn verdict_items_of(&self, list: &str) -> Result<HashMap<String, VerdictItems>, StoreError> {
        let study = list;
        let mut items: HashMap<String, VerdictItems> = HashMap::new();
        let mut stmt = self.conn.prepare_cached(
            "SELECT study_instance_uid, code, subject, detail FROM study_findings
             WHERE study_instance_uid IN (SELECT value FROM json_each(?1))
             ORDER BY study_instance_uid, position",
        )?;
        let mut rows = stmt.query([study])?;
        while let Some(r) = rows.next()? {
            items
                .entry(r.get(0)?)
                .or_default()
                .findings
                .push(FindingRow {
                    code: r.get(1)?,
                    subject: r.get(2)?,
                    detail: r.get(3)?,
                });
        }
        let mut stmt = self.conn.prepare_cached(
            "SELECT study_instance_uid, scheme, code, name, score FROM study_suggestions
             WHERE study_instance_uid IN (SELECT value FROM json_each(?1))
             ORDER BY study_instance_uid, position",
        )?;
        let mut rows = stmt.query([study])?;
        while let Some(r) = rows.next()? {
            items
                .entry(r.get(0)?)
                .or_default()
                .suggestions
                .push(SuggestionRow {
                    scheme: r.get(1)?,
                    code: r.get(2)?,
                    name: r.get(3)?,
                    score: r.get(4)?,
                });
        }
        let mut stmt = self.conn.prepare_cached(
            "SELECT study_instance_uid, kind, detail FROM study_evidence
             WHERE study_instance_uid IN (SELECT value FROM json_each(?1))
             ORDER BY study_instance_uid, position",
        )?;
        let mut rows = stmt.query([study])?;
        while let Some(r) = rows.next()? {
            items
                .entry(r.get(0)?)
                .or_default()
                .evidence
                .push(EvidenceRow {
                    kind: r.get(1)?,
                    detail: r.get(2)?,
                });
        }
        Ok(items)
    }

    /// How many studies the index holds (also: the database answers).
    pub fn study_count(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM studies", [], |r| r.get(0))?)
    }

    /// What the G-code report counts, for every study with a verdict.
    pub fn report_facts(&self) -> Result<Vec<ReportFact>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT s.first_received_at, v.status,
                    (SELECT station_name FROM series WHERE study_instance_uid = s.study_instance_uid
                       AND station_name <> '' ORDER BY first_received_at LIMIT 1),
                    (SELECT documented_by FROM study_reasons WHERE study_instance_uid = s.study_instance_uid
                       ORDER BY id DESC LIMIT 1),
                    s.study_date
             FROM studies s JOIN study_verdicts v USING (study_instance_uid)",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(ReportFact {
                first_received_at: r.get(0)?,
                status: r.get(1)?,
                station_name: r.get(2)?,
                documented_by: r.get(3)?,
                study_date: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every nonstandard study and series name of the current verdicts, with the station,
    /// protocol and calling AE title it came from, for the root-cause table.
    pub fn name_facts(&self) -> Result<Vec<NameFact>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT f.code, f.subject, f.detail,
                    coalesce((SELECT station_name FROM series WHERE study_instance_uid = s.study_instance_uid
                       AND station_name <> '' ORDER BY first_received_at LIMIT 1), ''),
                    coalesce((SELECT protocol_name FROM series WHERE study_instance_uid = s.study_instance_uid
                       AND protocol_name <> '' ORDER BY first_received_at LIMIT 1), ''),
                    coalesce((SELECT i.calling_ae_title FROM series se JOIN instances i USING (series_instance_uid)
                       WHERE se.study_instance_uid = s.study_instance_uid LIMIT 1), ''),
                    coalesce((SELECT name FROM study_suggestions g WHERE g.study_instance_uid = s.study_instance_uid
                       ORDER BY position LIMIT 1), ''),
                    s.first_received_at, s.study_date
             FROM study_findings f JOIN studies s USING (study_instance_uid)
             WHERE f.code IN ('study-name-nonstandard', 'series-name-nonstandard')",
        )?;
        let rows = stmt.query_map([], |r| {
            let code: String = r.get(0)?;
            let detail: String = r.get(2)?;
            let study = code == "study-name-nonstandard";
            Ok(NameFact {
                kind: if study { "study" } else { "series" },
                name: r.get(1)?,
                station: r.get(3)?,
                protocol: r.get(4)?,
                calling_ae_title: r.get(5)?,
                nearest: if study {
                    r.get(6)?
                } else {
                    detail
                        .split_once("nearest: ")
                        .map(|(_, kinds)| kinds.to_string())
                        .unwrap_or_default()
                },
                first_received_at: r.get(7)?,
                study_date: r.get(8)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
