//! The read-only commands behind `simgate studies` and `simgate study`: query the index and
//! print a table or one JSON document with stable field names.

use std::io::Write;

use crate::config::Config;
use crate::store::{self, StoreError, StudyDetail, StudySummary};

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no study with Study Instance UID {0}")]
    UnknownStudy(String),
    #[error("cannot write output")]
    Output(#[from] std::io::Error),
    #[error("cannot encode JSON")]
    Json(#[from] serde_json::Error),
}

pub fn studies(config: &Config, json: bool, out: &mut impl Write) -> Result<(), CliError> {
    let conn = store::open_existing(&config.storage.database_path())?;
    let studies = store::list_studies(&conn)?;
    if json {
        serde_json::to_writer_pretty(&mut *out, &serde_json::json!({ "studies": studies }))?;
        writeln!(out)?;
        return Ok(());
    }
    if studies.is_empty() {
        writeln!(out, "No studies received yet.")?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<40}  {:<20}  {:<8}  {:<30}  {:<12}  {:>6}  {:>9}  LAST RECEIVED",
        "STUDY INSTANCE UID", "PATIENT", "DATE", "DESCRIPTION", "STATION", "SERIES", "INSTANCES",
    )?;
    for s in &studies {
        write_study_row(out, s)?;
    }
    Ok(())
}

fn write_study_row(out: &mut impl Write, s: &StudySummary) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<40}  {:<20}  {:<8}  {:<30}  {:<12}  {:>6}  {:>9}  {}",
        clip(&s.study_instance_uid, 40),
        clip(&patient(s), 20),
        s.study_date,
        clip(&s.study_description, 30),
        clip(&s.station_names.join(","), 12),
        s.series_count,
        s.instance_count,
        s.last_received_at
    )
}

fn patient(s: &StudySummary) -> String {
    match (s.patient_name.is_empty(), s.patient_id.is_empty()) {
        (false, false) => format!("{} ({})", s.patient_name, s.patient_id),
        (false, true) => s.patient_name.clone(),
        _ => s.patient_id.clone(),
    }
}

fn clip(text: &str, width: usize) -> String {
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
    let conn = store::open_existing(&config.storage.database_path())?;
    let detail = store::study_detail(&conn, study_instance_uid)?
        .ok_or_else(|| CliError::UnknownStudy(study_instance_uid.to_string()))?;
    if json {
        serde_json::to_writer_pretty(&mut *out, &detail)?;
        writeln!(out)?;
        return Ok(());
    }
    write_study_detail(out, &detail)?;
    Ok(())
}

fn write_study_detail(out: &mut impl Write, d: &StudyDetail) -> std::io::Result<()> {
    let s = &d.summary;
    writeln!(out, "Study Instance UID   {}", s.study_instance_uid)?;
    writeln!(out, "Patient              {}", patient(s))?;
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
        "{:>6}  {:<8}  {:<32}  {:<24}  {:>9}  {:>12}  SERIES INSTANCE UID",
        "NUMBER", "MODALITY", "SERIES DESCRIPTION", "PROTOCOL", "INSTANCES", "BYTES",
    )?;
    for series in &d.series {
        writeln!(
            out,
            "{:>6}  {:<8}  {:<32}  {:<24}  {:>9}  {:>12}  {}",
            series
                .series_number
                .map(|n| n.to_string())
                .unwrap_or_default(),
            series.modality,
            clip(&series.series_description, 32),
            clip(&series.protocol_name, 24),
            series.instance_count,
            series.bytes,
            series.series_instance_uid
        )?;
    }
    Ok(())
}
