//! The commands of `simgate` besides `serve`: reads query the index and print a table, CSV
//! or one JSON document with stable field names; writes are [`Service`] calls, the same
//! operations the web side makes, run here on a writer thread of this process.

use std::io::Write;
use std::sync::Arc;

use tokio::sync::watch;

use crate::config::Config;
use crate::control::{self, Request, Response};
use crate::naming::StudyStatus;
use crate::naming::report::{self, ReportGrouping};
use crate::service::{Author, ReasonRequest, RetryRequest, Service, ServiceError};
use crate::store::queue::{DestinationQueue, QueueState};
use crate::store::safety::{HoldTarget, StudySafety};
use crate::store::studies::{EvidenceRow, FindingRow, StudyDetail, StudyQuery, SuggestionRow};
use crate::store::verdicts::ImportOutcome;
use crate::store::{self, IndexHandle, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error(transparent)]
    Rules(#[from] crate::service::rules::RulesLoadError),
    #[error("no study with Study Instance UID {0}")]
    UnknownStudy(String),
    #[error("cannot start the index writer")]
    Writer(#[source] std::io::Error),
    #[error(transparent)]
    Control(#[from] crate::control::ControlError),
    #[error("{0}")]
    Refused(String),
    #[error("cannot write output")]
    Output(#[from] std::io::Error),
    #[error("cannot encode JSON")]
    Json(#[from] serde_json::Error),
    #[error("cannot write CSV")]
    Csv(#[from] csv::Error),
}

/// Runs a write: through the running gateway's control socket when there is one (so the
/// receive path never waits for this command's lock), else on a writer thread of this
/// process, through the same [`control::execute`].
fn write(config: &Config, request: Request, create: bool) -> Result<Response, CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::Writer)?;
    if let Some(response) = runtime.block_on(control::call(&config.storage.dir, &request))? {
        return Ok(response);
    }
    let path = config.storage.database_path();
    let store = if create {
        store::open(&path, config.storage.durability)?
    } else {
        store::open_existing(&path)?
    };
    let naming = crate::service::rules::load(&config.naming, &store.db())?;
    let (index, writer) =
        IndexHandle::spawn(store, 16, watch::channel(0).0).map_err(CliError::Writer)?;
    let (_naming, naming_rules) = watch::channel(Arc::new(naming));
    let service = Service::new(
        index,
        watch::channel(Arc::new(config.clone())).1,
        naming_rules,
    );
    let response = runtime.block_on(control::execute(&service, request));
    drop(service);
    // Every handle is gone: the writer finishes and stops.
    let _ = writer.join();
    Ok(response)
}

/// The answer to a write, or why it was refused.
fn accepted(response: Response) -> Result<Response, CliError> {
    match response {
        Response::Refused { message, .. } => Err(CliError::Refused(message)),
        other => Ok(other),
    }
}

fn unexpected_or_refused(response: Response) -> CliError {
    match accepted(response) {
        Ok(other) => unexpected(&other),
        Err(refused) => refused,
    }
}

fn unexpected(response: &Response) -> CliError {
    CliError::Refused(format!("unexpected answer from the gateway: {response:?}"))
}

fn existing_store(config: &Config) -> Result<Store, StoreError> {
    store::open_existing(&config.storage.database_path())
}

/// Output format of listing commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Csv,
}

/// `simgate studies`: received studies with their naming status, oldest waiting first.
pub fn studies(
    config: &Config,
    query: StudyQuery,
    format: Format,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let studies = existing_store(config)?.db().studies(&query)?;
    match format {
        Format::Json => {
            /// A study row with how long it has waited, as `--json` prints it.
            #[derive(serde::Serialize)]
            struct Listed<'a> {
                #[serde(flatten)]
                row: &'a crate::store::studies::StudyRow,
                waiting_seconds: Option<u64>,
            }
            let rows: Vec<Listed<'_>> = studies
                .iter()
                .map(|row| Listed {
                    row,
                    waiting_seconds: row.waiting().map(|d| d.as_secs()),
                })
                .collect();
            #[derive(serde::Serialize)]
            struct Listing<'a> {
                studies: Vec<Listed<'a>>,
            }
            // Straight from the rows, without a JSON tree in between, and to the terminal in
            // one piece (its escaping looks at each write).
            out.write_all(&serde_json::to_vec_pretty(&Listing { studies: rows })?)?;
            writeln!(out)?;
        }
        Format::Csv => {
            let mut csv = csv::Writer::from_writer(&mut *out);
            csv.write_record([
                "study_instance_uid",
                "status",
                "hcpcs",
                "waiting_seconds",
                "patient_id",
                "patient_name",
                "study_date",
                "accession_number",
                "station_names",
                "study_description",
                "series_descriptions",
                "findings",
                "suggestions",
                "rt_planning",
                "evidence",
                "reason_code",
                "documented_by",
                "documented_at",
                "reason_note",
                "safety_findings",
                "held_instances",
            ])?;
            for s in &studies {
                crate::output::write_csv_row(
                    &mut csv,
                    [
                        s.study_instance_uid.clone(),
                        status_text(s.status).to_string(),
                        s.hcpcs.to_string(),
                        s.waiting()
                            .map(|d| d.as_secs().to_string())
                            .unwrap_or_default(),
                        s.patient_id.clone(),
                        s.patient_name.clone(),
                        s.study_date.clone(),
                        s.accession_number.clone(),
                        s.station_names.join("; "),
                        s.study_description.clone(),
                        s.series_descriptions.join("; "),
                        findings_text(&s.items.findings),
                        suggestions_text(&s.items.suggestions),
                        s.rt_planning.to_string(),
                        evidence_text(&s.items.evidence),
                        s.reason_code.clone().unwrap_or_default(),
                        s.documented_by.clone().unwrap_or_default(),
                        s.documented_at.clone().unwrap_or_default(),
                        s.reason_note.clone().unwrap_or_default(),
                        s.safety_findings.to_string(),
                        s.held_instances.to_string(),
                    ],
                )?;
            }
            csv.flush()?;
        }
        Format::Table => {
            if studies.is_empty() {
                writeln!(out, "No studies.")?;
                return Ok(());
            }
            writeln!(
                out,
                "{:<23}  {:<14}  {:>8}  {:<20}  {:<8}  {:<10}  {:<28}  {:<3}  {:<64}  FINDINGS / SUGGESTIONS",
                "STATUS",
                "SAFETY",
                "WAITING",
                "PATIENT",
                "DATE",
                "STATION",
                "STUDY DESCRIPTION",
                "RT",
                "STUDY INSTANCE UID"
            )?;
            for s in &studies {
                let findings = findings_text(&s.items.findings);
                let suggestions = suggestions_text(&s.items.suggestions);
                writeln!(
                    out,
                    "{:<23}  {:<14}  {:>8}  {:<20}  {:<8}  {:<10}  {:<28}  {:<3}  {:<64}  {}{}",
                    format!("{} {}", s.hcpcs, status_text(s.status)),
                    safety_text(s.safety_findings, s.held_instances),
                    s.waiting().map(human_duration).unwrap_or_default(),
                    clip(&patient(&s.patient_name, &s.patient_id), 20),
                    clip(&s.study_date, 8),
                    clip(&s.station_names.join(","), 10),
                    clip(&s.study_description, 28),
                    if s.rt_planning { "yes" } else { "" },
                    s.study_instance_uid,
                    findings,
                    if suggestions.is_empty() {
                        String::new()
                    } else {
                        format!(" -> {suggestions}")
                    },
                )?;
            }
        }
    }
    Ok(())
}

/// "2 findings, 1 held" in a few characters.
fn safety_text(findings: i64, held: i64) -> String {
    match (findings, held) {
        (0, 0) => String::new(),
        (f, 0) => format!("{f} finding{}", if f == 1 { "" } else { "s" }),
        (f, h) => format!("{f}f {h} held"),
    }
}

fn status_text(status: Option<StudyStatus>) -> &'static str {
    status.map(StudyStatus::as_str).unwrap_or("")
}

fn human_duration(d: std::time::Duration) -> String {
    let minutes = d.as_secs() / 60;
    match minutes {
        0..60 => format!("{minutes}m"),
        60..1440 => format!("{}h{:02}m", minutes / 60, minutes % 60),
        _ => format!("{}d{:02}h", minutes / 1440, minutes / 60 % 24),
    }
}

/// `key: detail; key: detail`, or `key` alone where the detail is empty.
fn joined<'a>(items: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    items
        .map(|(key, detail)| {
            if detail.is_empty() {
                key.to_string()
            } else {
                format!("{key}: {detail}")
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn findings_text(findings: &[FindingRow]) -> String {
    joined(
        findings
            .iter()
            .map(|f| (f.code.as_str(), f.subject.as_str())),
    )
}

fn suggestions_text(suggestions: &[SuggestionRow]) -> String {
    joined(
        suggestions
            .iter()
            .map(|s| (s.code.as_str(), s.name.as_str())),
    )
}

fn evidence_text(evidence: &[EvidenceRow]) -> String {
    joined(
        evidence
            .iter()
            .map(|e| (e.kind.as_str(), e.detail.as_str())),
    )
}

/// "NAME (ID)", or whichever of the two is present.
fn patient(name: &str, id: &str) -> String {
    match (name.is_empty(), id.is_empty()) {
        (false, false) => format!("{name} ({id})"),
        (false, true) => name.to_string(),
        _ => id.to_string(),
    }
}

/// `text` escaped for the terminal (as the writer would), then cut to `width` characters:
/// escaping after padding would push the rest of the row out of its columns.
fn clip(text: &str, width: usize) -> String {
    let text = crate::output::escape(text);
    if text.chars().count() <= width {
        text.to_string()
    } else {
        let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

pub fn study(
    config: &Config,
    study_instance_uid: &str,
    json: bool,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let store = existing_store(config)?;
    let db = store.db();
    let detail = db
        .study_detail(study_instance_uid)?
        .ok_or_else(|| CliError::UnknownStudy(study_instance_uid.to_string()))?;
    let safety = db.study_safety(study_instance_uid)?;
    if json {
        let mut value = serde_json::to_value(&detail)?;
        value["safety"] = serde_json::to_value(&safety)?;
        serde_json::to_writer_pretty(&mut *out, &value)?;
        writeln!(out)?;
        return Ok(());
    }
    write_study_detail(out, &detail)?;
    write_study_naming(out, &detail, &config.http.time_zone)?;
    write_study_safety(out, &safety)?;
    Ok(())
}

/// The verdict, its findings and suggestions, the documented reasons and the status history.
fn write_study_naming(
    out: &mut impl Write,
    d: &StudyDetail,
    zone: &crate::clock::DisplayZone,
) -> std::io::Result<()> {
    writeln!(out)?;
    let Some(n) = &d.naming else {
        return writeln!(out, "Verdict              none yet");
    };
    writeln!(
        out,
        "Verdict              {} {}",
        n.hcpcs,
        n.status.as_str()
    )?;
    if !n.standard_code.is_empty() {
        writeln!(
            out,
            "Standard name        {} {} (by {})",
            n.standard_code, n.standard_name, n.matched_by
        )?;
    }
    for f in &n.items.findings {
        writeln!(
            out,
            "Finding              {}: {:?}: {}",
            f.code, f.subject, f.detail
        )?;
    }
    for g in &n.items.suggestions {
        writeln!(
            out,
            "Suggestion           {} {} ({:.2})",
            g.code, g.name, g.score
        )?;
    }
    if !n.suggested_reason.is_empty() {
        writeln!(out, "Suggested reason     {}", n.suggested_reason)?;
    }
    for e in &n.items.evidence {
        writeln!(out, "Planning evidence    {}: {}", e.kind, e.detail)?;
    }
    for r in &n.reasons {
        writeln!(
            out,
            "Reason               {} by {} at {}{}",
            r.reason_code,
            r.documented_by,
            zone.show(&r.documented_at),
            if r.note.is_empty() {
                String::new()
            } else {
                format!(": {}", r.note)
            }
        )?;
    }
    for h in &n.status_history {
        writeln!(
            out,
            "History              {}  {} -> {}  ({})",
            zone.show(&h.changed_at),
            h.from_status.map(StudyStatus::as_str).unwrap_or("-"),
            h.to_status.as_str(),
            h.cause
        )?;
    }
    Ok(())
}

fn write_study_safety(out: &mut impl Write, safety: &StudySafety) -> std::io::Result<()> {
    writeln!(out)?;
    let pending = safety
        .series_checks
        .iter()
        .filter(|c| c.geometry == "pending")
        .count();
    if safety.findings.is_empty() && pending > 0 {
        // "none" would claim a check that has not run (it waits for the series to go quiet).
        writeln!(
            out,
            "Safety findings      not checked yet ({pending} series waiting for the check)"
        )?;
    } else if safety.findings.is_empty() {
        writeln!(out, "Safety findings      none")?;
    }
    for f in &safety.findings {
        writeln!(
            out,
            "Safety finding       {}  {}  (series {}{})",
            f.code,
            f.detail,
            f.series_instance_uid,
            if f.sop_instance_uid.is_empty() {
                String::new()
            } else {
                format!(", instance {}", f.sop_instance_uid)
            }
        )?;
    }
    for h in &safety.held {
        writeln!(
            out,
            "{:<20} {}  for {}  {}",
            if h.state == QueueState::Held {
                "Held"
            } else {
                "Waiting for check"
            },
            h.sop_instance_uid,
            h.destination,
            h.held_for.join(", ")
        )?;
    }
    Ok(())
}

fn write_study_detail(out: &mut impl Write, d: &StudyDetail) -> std::io::Result<()> {
    let s = &d.summary;
    writeln!(out, "Study Instance UID   {}", s.study_instance_uid)?;
    writeln!(
        out,
        "Patient              {}",
        patient(&s.patient_name, &s.patient_id)
    )?;
    writeln!(
        out,
        "Study date/time      {} {}",
        s.study_date, d.study_time
    )?;
    writeln!(out, "Study description    {}", s.study_description)?;
    writeln!(out, "Accession number     {}", d.accession_number)?;
    writeln!(out, "Station              {}", s.station_names.join(", "))?;
    for code in &d.procedure_codes {
        writeln!(
            out,
            "Code ({:<19}) {} ^ {} ^ {}",
            code.sequence, code.code_value, code.coding_scheme_designator, code.code_meaning
        )?;
    }
    writeln!(
        out,
        "Received             {} .. {}",
        s.first_received_at, s.last_received_at
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "{:>6}  {:<8}  {:<32}  {:<24}  {:>9}  {:>12}  {:<14}  SERIES INSTANCE UID",
        "NUMBER", "MODALITY", "SERIES DESCRIPTION", "PROTOCOL", "INSTANCES", "BYTES", "KIND",
    )?;
    for series in &d.series {
        writeln!(
            out,
            "{:>6}  {:<8}  {:<32}  {:<24}  {:>9}  {:>12}  {:<14}  {}",
            series
                .series_number
                .map(|n| n.to_string())
                .unwrap_or_default(),
            clip(&series.modality, 8),
            clip(&series.series_description, 32),
            clip(&series.protocol_name, 24),
            series.instance_count,
            series.bytes,
            if series.kind.is_empty() {
                series.verdict.map(|v| v.as_str()).unwrap_or("")
            } else {
                series.kind.as_str()
            },
            series.series_instance_uid
        )?;
    }
    Ok(())
}

/// `simgate nomenclature import FILE`.
pub fn nomenclature_import(
    config: &Config,
    file: &std::path::Path,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let read = crate::service::rules::read_playbook("the file to import", file)?;
    let (file_name, format, rows, names) = (
        read.file_name.clone(),
        read.playbook.format,
        read.playbook.rows,
        read.playbook.names.len(),
    );
    let request = Request::ImportPlaybook {
        author: Author::operator(),
        file: read,
    };
    let outcome = match accepted(write(config, request, true)?)? {
        Response::Imported { import } => import,
        other => return Err(unexpected(&other).into()),
    };
    let elapsed = started.elapsed();
    match outcome {
        ImportOutcome::Unchanged { imported_at } => writeln!(
            out,
            "{file_name} is already imported (since {imported_at}, same SHA-256); nothing changed."
        )?,
        ImportOutcome::Imported { replaced } => {
            writeln!(
                out,
                "Imported {file_name} ({}): {rows} rows, {names} standard names, in {} ms.",
                format.as_str(),
                elapsed.as_millis()
            )?;
            if !replaced.is_empty() {
                writeln!(out, "Replaced the older release: {}.", replaced.join(", "))?;
            }
            writeln!(
                out,
                "Run `simgate nomenclature recheck` to judge stored studies again; a running gateway picks it up on SIGHUP."
            )?;
        }
    }
    Ok(())
}

/// `simgate nomenclature sources`.
pub fn nomenclature_sources(
    config: &Config,
    json: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let sources = existing_store(config)?.db().sources()?;
    if json {
        serde_json::to_writer_pretty(
            &mut *out,
            &serde_json::json!({
                "builtin": config.naming.builtin_nomenclature,
                "imported": sources,
            }),
        )?;
        writeln!(out)?;
        return Ok(());
    }
    match &config.naming.builtin_nomenclature {
        Some(path) => writeln!(out, "built-in: {}", path.display())?,
        None => writeln!(
            out,
            "built-in: the copy of config/nomenclature/standard-names.csv in simgate"
        )?,
    }
    for s in sources {
        writeln!(
            out,
            "{}  {}  {} names  {}  sha256 {}",
            s.format, s.file_name, s.names, s.imported_at, s.sha256
        )?;
    }
    Ok(())
}

/// `simgate nomenclature recheck`.
pub fn nomenclature_recheck(config: &Config, out: &mut impl Write) -> anyhow::Result<()> {
    let (studies, changed) = match accepted(write(
        config,
        Request::Recheck {
            author: Author::operator(),
        },
        true,
    )?)? {
        Response::Rechecked { studies, changed } => (studies, changed),
        other => return Err(unexpected(&other).into()),
    };
    writeln!(
        out,
        "Re-evaluated {studies} studies; {changed} changed status. Documented reasons are kept."
    )?;
    Ok(())
}

/// What `simgate nomenclature check` is asked about.
#[derive(Debug, Clone, Default)]
pub struct CheckInput {
    pub study_description: String,
    pub series_descriptions: Vec<String>,
    /// `VALUE^SCHEME`.
    pub codes: Vec<String>,
    pub station: Option<String>,
    pub calling_ae_title: Option<String>,
}

/// `simgate nomenclature check`: the receiver's verdict for the given values.
pub fn nomenclature_check(
    config: &Config,
    input: &CheckInput,
    json: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let store = store::open(&config.storage.database_path(), config.storage.durability)?;
    let naming = crate::service::rules::load(&config.naming, &store.db())?;
    let mut facts = crate::naming::StudyFacts {
        study_description: input.study_description.clone(),
        station_names: input.station.iter().cloned().collect(),
        calling_ae_titles: input.calling_ae_title.iter().cloned().collect(),
        ..Default::default()
    };
    for code in &input.codes {
        let (value, scheme) = code.split_once('^').ok_or_else(|| {
            anyhow::anyhow!("--code {code:?}: write VALUE^SCHEME, e.g. RPID16^RADLEX")
        })?;
        facts.codes.push(crate::dicom::CodeItem {
            code_value: value.trim().into(),
            coding_scheme_designator: scheme.trim().into(),
            code_meaning: String::new(),
        });
    }
    for description in &input.series_descriptions {
        facts.series.push(crate::naming::SeriesFacts {
            series_description: description.clone(),
            modality: "CT".into(),
            ..Default::default()
        });
    }
    let verdict = naming.evaluate(&facts);
    if json {
        serde_json::to_writer_pretty(&mut *out, &verdict)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(
        out,
        "status: {} ({})",
        verdict.status.as_str(),
        verdict.status.hcpcs()
    )?;
    if let Some(m) = &verdict.standard_match {
        writeln!(
            out,
            "standard name: {} {} \"{}\" (by {})",
            m.scheme.as_str(),
            m.code,
            m.name,
            m.by
        )?;
    }
    for finding in &verdict.findings {
        writeln!(
            out,
            "finding: {} {:?}: {}",
            finding.code, finding.subject, finding.detail
        )?;
    }
    for s in &verdict.suggestions {
        writeln!(
            out,
            "suggestion: {} \"{}\" (similarity {:.2})",
            s.code, s.name, s.score
        )?;
    }
    for (description, series) in input.series_descriptions.iter().zip(&verdict.series) {
        let verdict = match series {
            crate::naming::SeriesVerdict::Conforming { kind } => kind.clone(),
            crate::naming::SeriesVerdict::NotJudged => "not judged".into(),
            crate::naming::SeriesVerdict::Nonstandard { nearest_kinds } => {
                format!("nonstandard (nearest: {})", nearest_kinds.join(", "))
            }
        };
        writeln!(out, "series {description:?}: {verdict}")?;
    }
    writeln!(
        out,
        "rt_planning: {}",
        if verdict.rt_planning { "yes" } else { "no" }
    )?;
    for e in &verdict.evidence {
        writeln!(out, "evidence: {}: {}", e.kind, e.detail)?;
    }
    if let Some(reason) = &verdict.suggested_reason {
        let label = config
            .naming
            .reason(reason)
            .map(|r| r.label.as_str())
            .unwrap_or(reason);
        writeln!(
            out,
            "suggested reason (not documented until confirmed): {label}"
        )?;
    }
    Ok(())
}

/// `simgate reason STUDY_UID --code CODE [--note TEXT] [--by NAME]`: documented by a
/// configured user (`--by`, or the operating-system user), validated and audited as on the
/// web.
pub fn reason(
    config: &Config,
    request: ReasonRequest,
    by: Option<&str>,
    json: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let author = Author::for_cli(config, by)?;
    let note_required = config
        .naming
        .reason(&request.code)
        .filter(|choice| choice.note_required && request.note.trim().is_empty())
        .map(|choice| choice.label.clone());
    let response = write(
        config,
        Request::DocumentReason {
            author,
            reason: request,
        },
        false,
    )?;
    let recorded = match response {
        Response::Reason { recorded } => recorded,
        // Said as the command line spells it.
        Response::Refused { .. } if note_required.is_some() => {
            anyhow::bail!(
                "reason {:?} needs a --note",
                note_required.unwrap_or_default()
            )
        }
        other => return Err(unexpected_or_refused(other).into()),
    };
    if json {
        serde_json::to_writer_pretty(
            &mut *out,
            &serde_json::json!({
                "study_instance_uid": recorded.study_instance_uid,
                "reason_code": recorded.reason_code,
                "note": recorded.note,
                "documented_by": recorded.documented_by,
                "documented_at": recorded.documented_at,
                "status": recorded.status.as_str(),
                "hcpcs": recorded.status.hcpcs(),
            }),
        )?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "Documented \"{}\" for {} by {}; status is now {} ({}).",
            recorded.reason_label,
            recorded.study_instance_uid,
            recorded.documented_by,
            recorded.status.as_str(),
            recorded.status.hcpcs()
        )?;
    }
    Ok(())
}

/// `simgate report --from DATE --to DATE [--by month|station|physician] [--date study|received]`.
pub fn report(
    config: &Config,
    from: &str,
    to: &str,
    grouping: ReportGrouping,
    dates: report::ReportDate,
    format: Format,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    for (flag, date) in [("--from", from), ("--to", to)] {
        if !crate::clock::is_date(date) {
            anyhow::bail!("{flag} {date:?}: write a date as YYYY-MM-DD");
        }
    }
    if from > to {
        anyhow::bail!("--from {from} is after --to {to}: the range would hold no day");
    }
    let facts = existing_store(config)?.db().report_facts()?;
    let rows = report::report(facts, from, to, grouping, dates);
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(
                &mut *out,
                &serde_json::json!({ "from": from, "to": to, "date": dates.as_str(), "rows": rows }),
            )?;
            writeln!(out)?;
        }
        Format::Csv => {
            crate::output::report_csv(&mut *out, "group", &rows)?;
        }
        Format::Table => {
            let counted = match dates {
                report::ReportDate::Study => "with a Study Date",
                report::ReportDate::Received => "first received",
            };
            writeln!(out, "Studies {counted} {from} .. {to}")?;
            writeln!(
                out,
                "{:<28}  {:>6}  {:>6}  {:>6}  {:>6}  CONFORMANCE",
                "GROUP", "G9318", "G9319", "G9320", "TOTAL"
            )?;
            for r in &rows {
                writeln!(
                    out,
                    "{:<28}  {:>6}  {:>6}  {:>6}  {:>6}  {:>11}",
                    clip(&r.group, 28),
                    r.g9318,
                    r.g9319,
                    r.g9320,
                    r.total,
                    r.conformance_rate
                        .map(|rate| format!("{:.1}%", rate * 100.0))
                        .unwrap_or_else(|| "n/a".into())
                )?;
            }
        }
    }
    Ok(())
}

/// `simgate queue`: depth, oldest waiting and last error per destination, and per study.
pub fn queue(
    config: &Config,
    destination: Option<&str>,
    state: Option<&str>,
    json: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    if let Some(name) = destination {
        check_destination(config, name)?;
    }
    let state = match state {
        Some(text) => Some(QueueState::parse(text).ok_or_else(|| {
            anyhow::anyhow!(
                "--state {text:?}: use pending, in-flight, sent, dead, held, waiting or rejected"
            )
        })?),
        None => None,
    };
    let store = existing_store(config)?;
    let db = store.db();
    let mut summary = db.queue_summary(destination)?;
    // Configured destinations with nothing queued yet still show.
    for d in &config.destinations {
        if destination.is_none_or(|n| n == d.name)
            && !summary.iter().any(|s| s.destination == d.name)
        {
            summary.push(DestinationQueue {
                destination: d.name.clone(),
                ..Default::default()
            });
        }
    }
    let studies = db.queue_by_study(destination, state)?;
    if json {
        serde_json::to_writer_pretty(
            &mut *out,
            &serde_json::json!({ "destinations": summary, "studies": studies }),
        )?;
        writeln!(out)?;
        return Ok(());
    }
    if summary.is_empty() {
        writeln!(
            out,
            "No destinations configured: instances are received and logged only."
        )?;
    }
    writeln!(
        out,
        "{:<16}  {:>8}  {:>9}  {:>8}  {:>6}  {:>6}  {:>7}  {:>8}  {:<24}  LAST ERROR",
        "DESTINATION",
        "PENDING",
        "IN-FLIGHT",
        "SENT",
        "DEAD",
        "HELD",
        "WAITING",
        "REJECTED",
        "OLDEST WAITING SINCE"
    )?;
    for s in &summary {
        writeln!(
            out,
            "{:<16}  {:>8}  {:>9}  {:>8}  {:>6}  {:>6}  {:>7}  {:>8}  {:<24}  {}",
            s.destination,
            s.pending,
            s.in_flight,
            s.sent,
            s.dead,
            s.held,
            s.waiting,
            s.rejected,
            s.oldest_waiting_since.as_deref().unwrap_or("-"),
            clip(&s.last_error, 80)
        )?;
    }
    if !studies.is_empty() {
        writeln!(out)?;
        writeln!(
            out,
            "{:<16}  {:<64}  {:<9}  {:>9}  {:<24}  LAST ERROR / SENT AS",
            "DESTINATION", "STUDY INSTANCE UID", "STATE", "INSTANCES", "OLDEST QUEUED"
        )?;
        for s in &studies {
            writeln!(
                out,
                "{:<16}  {:<64}  {:<9}  {:>9}  {:<24}  {}",
                s.destination,
                s.study_instance_uid,
                s.state.as_str(),
                s.instances,
                s.oldest_queued_at,
                clip(
                    if s.last_error.is_empty() {
                        &s.sent_as
                    } else {
                        &s.last_error
                    },
                    80
                )
            )?;
        }
    }
    Ok(())
}

fn check_destination(config: &Config, name: &str) -> anyhow::Result<()> {
    if config.destinations.iter().any(|d| d.name == name) {
        return Ok(());
    }
    let names: Vec<&str> = config
        .destinations
        .iter()
        .map(|d| d.name.as_str())
        .collect();
    anyhow::bail!(
        "no destination {name:?}; configured: {}",
        if names.is_empty() {
            "none".into()
        } else {
            names.join(", ")
        }
    )
}

/// `simgate queue retry (--study UID | --dead) [--destination NAME]`.
pub fn queue_retry(
    config: &Config,
    request: RetryRequest,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let request = Request::Retry {
        author: Author::operator(),
        retry: request,
    };
    let count = match accepted(write(config, request, false)?)? {
        Response::Queued { instances } => instances,
        other => return Err(unexpected(&other).into()),
    };
    writeln!(
        out,
        "Queued {count} instances again; a running gateway sends them within a second."
    )?;
    Ok(())
}

/// `simgate queue release|reject (--study UID | --instance UID) --why TEXT`.
pub fn decide_held(
    config: &Config,
    target: HoldTarget,
    release: bool,
    why: &str,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let request = Request::DecideHeld {
        author: Author::operator(),
        target,
        release,
        why: why.to_string(),
    };
    let instances = match accepted(write(config, request, false)?)? {
        Response::Decided { instances } => instances,
        other => return Err(unexpected(&other).into()),
    };
    let verb = if release {
        "Released; a running gateway sends them within a second"
    } else {
        "Rejected; they are never sent"
    };
    writeln!(out, "{verb}: {} instance(s).", instances.len())?;
    for uid in instances {
        writeln!(out, "  {uid}")?;
    }
    Ok(())
}

/// `simgate forward --study UID --destination NAME`: send a whole study again.
pub fn forward_study(
    config: &Config,
    study: &str,
    destination: &str,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let request = Request::ForwardStudy {
        author: Author::operator(),
        study_instance_uid: study.to_string(),
        destination: destination.to_string(),
    };
    let count = match accepted(write(config, request, false)?)? {
        Response::Queued { instances } => instances,
        other => return Err(unexpected(&other).into()),
    };
    writeln!(
        out,
        "Queued {count} instances of {study} for {destination}."
    )?;
    Ok(())
}
