//! Reading nomenclature files: the RadLex Core Playbook CSV, the LOINC/RSNA Radiology Playbook
//! CSV, and simgate's own built-in list. The format is detected from the header; anything else is
//! refused with the file and line. Parsing works on bytes already read: no I/O here.

use std::collections::BTreeMap;

use super::nomenclature::{Scheme, StandardName};

/// Which kind of file was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PlaybookFormat {
    RadlexCore,
    LoincRsna,
    Builtin,
}

impl PlaybookFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            PlaybookFormat::RadlexCore => "radlex-core-playbook",
            PlaybookFormat::LoincRsna => "loinc-rsna-radiology-playbook",
            PlaybookFormat::Builtin => "simgate-builtin",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{file}, line {line}: {problem}")]
pub struct PlaybookError {
    pub file: String,
    pub line: u64,
    pub problem: String,
}

/// A parsed file.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Playbook {
    pub format: PlaybookFormat,
    pub names: Vec<StandardName>,
    /// Data rows read (a LOINC playbook has several rows per term).
    pub rows: usize,
}

pub fn parse(file: &str, bytes: &[u8]) -> Result<Playbook, PlaybookError> {
    let error = |line: u64, problem: String| PlaybookError {
        file: file.to_string(),
        line,
        problem,
    };
    let text = std::str::from_utf8(bytes)
        .map(|t| t.trim_start_matches('\u{feff}'))
        .map_err(|e| error(line_of(bytes, e.valid_up_to()), "not UTF-8 text".into()))?;
    // Comment lines (built-in list) come before the header.
    let skipped = text.lines().take_while(|l| l.starts_with('#')).count();
    let body: String = text.lines().skip(skipped).collect::<Vec<_>>().join("\n");
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(body.as_bytes());
    let header_line = skipped as u64 + 1;
    let headers = reader
        .headers()
        .map_err(|e| error(header_line, format!("cannot read the header: {e}")))?
        .clone();
    let column = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let format = if column("RPID") == Some(0)
        && column("LONG_NAME").is_some()
        && column("SHORT_NAME").is_some()
    {
        PlaybookFormat::RadlexCore
    } else if column("LoincNumber").is_some() && column("LongCommonName").is_some() {
        PlaybookFormat::LoincRsna
    } else if column("scheme") == Some(0)
        && column("code").is_some()
        && column("long_name").is_some()
    {
        PlaybookFormat::Builtin
    } else {
        return Err(error(
            header_line,
            "not a RadLex Core Playbook (RPID,...,SHORT_NAME,LONG_NAME,...) nor a LOINC/RSNA Radiology Playbook \
             (LoincNumber,LongCommonName,...) CSV header"
                .into(),
        ));
    };

    let mut names = Vec::new();
    let mut loinc: BTreeMap<String, LoincTerm> = BTreeMap::new();
    let mut rows = 0usize;
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map(|p| p.line() + skipped as u64).unwrap_or(0);
            error(line, format!("malformed CSV: {e}"))
        })?;
        let line = record
            .position()
            .map(|p| p.line() + skipped as u64)
            .unwrap_or(0);
        if record.iter().all(str::is_empty) {
            continue;
        }
        rows += 1;
        let get = |name: &str| {
            column(name)
                .and_then(|i| record.get(i))
                .unwrap_or("")
                .trim()
                .to_string()
        };
        match format {
            PlaybookFormat::RadlexCore => {
                let code = get("RPID");
                if !is_rpid(&code) {
                    return Err(error(line, format!("{code:?} is not an RPID code")));
                }
                names.push(StandardName {
                    scheme: Scheme::Radlex,
                    code,
                    long_name: get("LONG_NAME"),
                    short_name: get("SHORT_NAME"),
                    modality: get("MODALITY"),
                });
            }
            PlaybookFormat::LoincRsna => {
                let number = get("LoincNumber");
                if !is_loinc(&number) {
                    return Err(error(line, format!("{number:?} is not a LOINC number")));
                }
                let term = loinc.entry(number).or_default();
                term.long_name = get("LongCommonName");
                if get("PartTypeName").eq_ignore_ascii_case("Rad.Modality.Modality Type")
                    && term.modality.is_empty()
                {
                    term.modality = get("PartName");
                }
                let rpid = get("RPID");
                if is_rpid(&rpid) {
                    term.radlex = Some((rpid, get("LongName")));
                }
            }
            PlaybookFormat::Builtin => {
                let scheme = Scheme::parse(&get("scheme")).ok_or_else(|| {
                    error(
                        line,
                        format!("scheme {:?} is neither radlex nor loinc", get("scheme")),
                    )
                })?;
                let code = get("code");
                let valid = match scheme {
                    Scheme::Radlex => is_rpid(&code),
                    Scheme::Loinc => is_loinc(&code),
                };
                if !valid {
                    return Err(error(
                        line,
                        format!("{code:?} is not a {} code", scheme.as_str()),
                    ));
                }
                names.push(StandardName {
                    scheme,
                    code,
                    long_name: get("long_name"),
                    short_name: get("short_name"),
                    modality: get("modality"),
                });
            }
        }
    }
    for (number, term) in loinc {
        if let Some((rpid, long_name)) = &term.radlex {
            names.push(StandardName {
                scheme: Scheme::Radlex,
                code: rpid.clone(),
                long_name: long_name.clone(),
                short_name: String::new(),
                modality: term.modality.clone(),
            });
        }
        names.push(StandardName {
            scheme: Scheme::Loinc,
            code: number,
            long_name: term.long_name,
            short_name: String::new(),
            modality: term.modality,
        });
    }
    if names.is_empty() {
        return Err(error(header_line, "no procedures after the header".into()));
    }
    Ok(Playbook {
        format,
        names,
        rows,
    })
}

#[derive(Debug, Default)]
struct LoincTerm {
    long_name: String,
    modality: String,
    radlex: Option<(String, String)>,
}

fn is_rpid(code: &str) -> bool {
    code.strip_prefix("RPID")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn is_loinc(code: &str) -> bool {
    match code.split_once('-') {
        Some((number, check)) => {
            !number.is_empty()
                && number.bytes().all(|b| b.is_ascii_digit())
                && check.len() == 1
                && check.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

fn line_of(bytes: &[u8], offset: usize) -> u64 {
    bytes[..offset].iter().filter(|&&b| b == b'\n').count() as u64 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const CORE: &str = "RPID,LETTER_CODE,\"SHORT_NAME\",\"LONG_NAME\",MODALITY,PLAYBOOK_TYPE,POPULATION,BODY_REGION,RIDS\n\
        RPID16,CTCHU,\"CT Chest wo\",\"CT Chest wo IV Contrast\",CT,RADIOLOGY ORDERABLE, ,CHEST,RID10321|0\n\
        RPID3,CTABU,\"CT Abd wo\",\"CT Abdomen wo  IV Contrast\",CT,RADIOLOGY ORDERABLE, ,ABDOMEN,RID10321\n\
        RPID9001,XXQC,\"CT Head, Neck\",\"CT Head, Neck w IV Contrast\",CT,RADIOLOGY ORDERABLE, , ,\n";

    const LOINC: &str = "\"LoincNumber\",\"LongCommonName\",\"PartNumber\",\"PartTypeName\",\"PartName\",\"PartSequenceOrder\",\"RID\",\"PreferredName\",\"RPID\",\"LongName\"\n\
        \"24627-2\"    ,\"CT Chest\"    ,\"LP1\",\"Rad.Anatomic Location.Region Imaged\",\"Chest\",\"A\",\"RID1243\",\"chest\",\"\",\"\"\n\
        \"24627-2\"    ,\"CT Chest\"    ,\"LP2\",\"Rad.Modality.Modality Type\",\"CT\",\"A\",\"RID10321\",\"CT\",\"\",\"\"\n\
        \"29252-4\",\"CT Chest WO contrast\",\"LP2\",\"Rad.Modality.Modality Type\",\"CT\",\"A\",\"RID10321\",\"CT\",\"RPID16\",\"CT Chest wo IV Contrast\"\n\
        \"29252-4\",\"CT Chest WO contrast\",\"LP3\",\"Rad.Pharmaceutical.Route\",\"IV\",\"A\",\"\",\"\",\"RPID16\",\"CT Chest wo IV Contrast\"\n";

    #[test]
    fn a_radlex_core_playbook_is_read_with_quoted_commas_and_blank_cells() {
        let playbook = parse("core.csv", CORE.as_bytes()).expect("parse");
        assert_eq!(playbook.format, PlaybookFormat::RadlexCore);
        assert_eq!(playbook.rows, 3);
        assert_eq!(
            playbook.names[1].long_name, "CT Abdomen wo  IV Contrast",
            "runs of spaces are kept"
        );
        assert_eq!(playbook.names[2].short_name, "CT Head, Neck");
        assert_eq!(playbook.names[0].modality, "CT");
    }

    #[test]
    fn a_loinc_playbook_is_grouped_by_loinc_number_with_padded_cells_trimmed() {
        let playbook = parse("LoincRsnaRadiologyPlaybook.csv", LOINC.as_bytes()).expect("parse");
        assert_eq!(playbook.format, PlaybookFormat::LoincRsna);
        assert_eq!(playbook.rows, 4);
        let loinc: Vec<_> = playbook
            .names
            .iter()
            .filter(|n| n.scheme == Scheme::Loinc)
            .collect();
        assert_eq!(loinc.len(), 2);
        assert_eq!(loinc[0].code, "24627-2");
        assert_eq!(loinc[0].long_name, "CT Chest");
        assert_eq!(loinc[0].modality, "CT");
        let twin: Vec<_> = playbook
            .names
            .iter()
            .filter(|n| n.scheme == Scheme::Radlex)
            .collect();
        assert_eq!(twin.len(), 1, "the RadLex twin of 29252-4");
        assert_eq!(twin[0].code, "RPID16");
    }

    #[test]
    fn anything_else_is_refused_with_file_and_line() {
        let err = parse("notes.csv", b"name,value\nx,1\n").expect_err("wrong header");
        assert_eq!((err.file.as_str(), err.line), ("notes.csv", 1));
        let err = parse(
            "core.csv",
            format!("{CORE}RPIDX,A,\"b\",\"c\",CT\n").as_bytes(),
        )
        .expect_err("bad code");
        assert_eq!(err.line, 5, "{err}");
        let err = parse(
            "core.csv",
            b"RPID,LETTER_CODE,\"SHORT_NAME\",\"LONG_NAME\"\n",
        )
        .expect_err("empty");
        assert!(err.problem.contains("no procedures"), "{err}");
        let err = parse("bin.csv", &[0xff, 0xfe, 0x00]).expect_err("binary");
        assert!(err.problem.contains("UTF-8"), "{err}");
        let err = parse(
            "loinc.csv",
            b"\"LoincNumber\",\"LongCommonName\"\n\"24627\",\"CT Chest\"\n",
        )
        .expect_err("bad number");
        assert_eq!(err.line, 2);
    }

    #[test]
    fn the_shipped_built_in_list_parses() {
        let builtin = parse(
            "standard-names.csv",
            include_bytes!("../../config/nomenclature/standard-names.csv"),
        )
        .expect("parse");
        assert_eq!(builtin.format, PlaybookFormat::Builtin);
        for code in [
            "RPID6008", "RPID6009", "RPID6010", "RPID16", "24627-2", "29252-4",
        ] {
            assert!(
                builtin.names.iter().any(|n| n.code == code),
                "{code} missing"
            );
        }
    }
}
