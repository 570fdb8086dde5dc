//! Table tests for the naming rules: one `check` helper, many rows.

use regex::Regex;

use super::playbook;
use super::*;
use crate::dicom::CodeItem;

fn naming(series_findings_need_reason: bool) -> Naming {
    let builtin = include_bytes!("../../config/nomenclature/standard-names.csv");
    let names = playbook::parse("standard-names.csv", builtin)
        .expect("built-in list")
        .names;
    let rules = SeriesRules::parse(include_str!("../../config/nomenclature/series-rules.toml"))
        .expect("rules");
    Naming {
        nomenclature: Nomenclature::new(names),
        rules,
        policy: NamingPolicy {
            designators: SchemeDesignators::default(),
            series_findings_need_reason,
            ct_simulator_ae_titles: vec!["CTSIM".into()],
            ct_simulator_station_names: vec!["CTSIM01".into()],
            planning_patterns: vec![
                Regex::new(r"(?i)\b(sim|ct ?sim|rt|rtp|plan|planning|radiotherapy|treatment|4d|4dct|gated|dibh)\b")
                    .expect("pattern"),
            ],
            rt_planning_reason_code: "rt-planning".into(),
            suggestion_floor: 0.3,
        },
    }
}

/// One row: a study with its series (`MODALITY|description|IMAGE\TYPE`), codes
/// (`VALUE^SCHEME;...`), and extra evidence (`station=..`, `ae=..`, `rt-objects`, `resp`,
/// `series-ok`); expected status, finding codes, rt_planning, and the first series' kind.
struct Case<'a> {
    study: &'a str,
    series: &'a [&'a str],
    codes: &'a str,
    extra: &'a str,
    status: &'a str,
    findings: &'a str,
    rt_planning: bool,
    first_kind: &'a str,
}

#[allow(clippy::too_many_arguments)] // one argument per column of the table
const fn case<'a>(
    study: &'a str,
    series: &'a [&'a str],
    codes: &'a str,
    extra: &'a str,
    status: &'a str,
    findings: &'a str,
    rt_planning: bool,
    first_kind: &'a str,
) -> Case<'a> {
    Case {
        study,
        series,
        codes,
        extra,
        status,
        findings,
        rt_planning,
        first_kind,
    }
}

fn facts(case: &Case<'_>) -> StudyFacts {
    let mut facts = StudyFacts {
        study_description: case.study.to_string(),
        ..StudyFacts::default()
    };
    for code in case.codes.split(';').filter(|c| !c.is_empty()) {
        let (value, scheme) = code.split_once('^').expect("VALUE^SCHEME");
        facts.codes.push(CodeItem {
            code_value: value.into(),
            coding_scheme_designator: scheme.into(),
            code_meaning: String::new(),
        });
    }
    for series in case.series {
        let mut parts = series.splitn(3, '|');
        let modality = parts.next().unwrap_or_default();
        let description = parts.next().unwrap_or_default();
        let image_type = parts.next().unwrap_or_default();
        facts.series.push(SeriesFacts {
            series_description: description.into(),
            modality: modality.into(),
            sop_class_uid: String::new(),
            image_type: image_type
                .split('\\')
                .filter(|v| !v.is_empty())
                .map(str::to_string)
                .collect(),
            respiratory_attributes: case.extra.contains("resp"),
        });
    }
    for item in case.extra.split_whitespace() {
        if let Some(station) = item.strip_prefix("station=") {
            facts.station_names.push(station.into());
        } else if let Some(ae) = item.strip_prefix("ae=") {
            facts.calling_ae_titles.push(ae.into());
        } else if item == "rt-objects" {
            facts
                .rt_objects_on_frame_of_reference
                .push("RTSTRUCT".into());
        }
    }
    facts
}

fn check(case: &Case<'_>) {
    let naming = naming(!case.extra.contains("series-ok"));
    let verdict = naming.evaluate(&facts(case));
    let label = format!(
        "{:?} {:?} {:?} {:?}",
        case.study, case.series, case.codes, case.extra
    );
    assert_eq!(
        verdict.status.as_str(),
        case.status,
        "status of {label}: {verdict:#?}"
    );
    let findings: Vec<&str> = verdict.findings.iter().map(|f| f.code).collect();
    let expected: Vec<&str> = case.findings.split(',').filter(|f| !f.is_empty()).collect();
    assert_eq!(findings, expected, "findings of {label}");
    assert_eq!(
        verdict.rt_planning, case.rt_planning,
        "rt_planning of {label}: {:?}",
        verdict.evidence
    );
    if !case.first_kind.is_empty() {
        let kind = match &verdict.series[0] {
            SeriesVerdict::Conforming { kind } => kind.as_str(),
            SeriesVerdict::NotJudged => "not-judged",
            SeriesVerdict::Nonstandard { .. } => "nonstandard",
        };
        assert_eq!(kind, case.first_kind, "first series kind of {label}");
    }
    if verdict.status == StudyStatus::NeedsReason
        && verdict
            .findings
            .iter()
            .any(|f| f.code == "study-name-nonstandard")
    {
        assert!(
            verdict.suggestions.len() <= 3 && verdict.suggestions.iter().all(|s| s.score >= 0.3),
            "at most three suggestions, none below the floor, for {label}: {:?}",
            verdict.suggestions
        );
    }
    assert_eq!(
        verdict.suggested_reason.is_some(),
        verdict.status == StudyStatus::NeedsReason && verdict.rt_planning,
        "suggested reason of {label}"
    );
}

const CT: &[&str] = &["CT|Thorax 3.0 B31f|ORIGINAL\\PRIMARY\\AXIAL"];
const FOUR_D: &[&str] = &[
    "CT|CT SIM PLANNING|ORIGINAL\\PRIMARY\\AXIAL",
    "CT|4D 0%|",
    "CT|4D 50%|",
    "CT|AVG|DERIVED\\SECONDARY\\AXIAL\\AVE",
    "CT|MIP|DERIVED\\SECONDARY\\AXIAL\\MIP",
];
const N: &str = "needs-reason";
const C: &str = "conforming";
const S: &str = "study-name-nonstandard";
const SE: &str = "series-name-nonstandard";
const SS: &str = "study-name-nonstandard,series-name-nonstandard";

#[rustfmt::skip]
const CASES: &[Case<'static>] = &[
    // Standard long names, in other cases and spacing (the release's own double spaces too).
    case("CT Chest wo IV Contrast", CT, "", "", C, "", false, "planning-ct"),
    case("ct chest wo iv contrast", CT, "", "", C, "", false, ""),
    case("  CT   Chest wo IV   Contrast ", CT, "", "", C, "", false, ""),
    case("CT Abdomen wo  IV Contrast", CT, "", "", C, "", false, ""),
    case("CT Abdomen wo IV Contrast", CT, "", "", C, "", false, ""),
    case("CT ABDOMEN WO IV CONTRAST", CT, "", "", C, "", false, ""),
    case("CT Treatment Planning  Intermediate", CT, "", "", C, "", true, ""),
    case("CT Treatment Planning Intermediate", CT, "", "", C, "", true, ""),
    case("CT Treatment Planning Complex", CT, "", "", C, "", true, ""),
    case("ct treatment planning simple", CT, "", "", C, "", true, ""),
    case("CT\tTreatment\tPlanning\tSimple", CT, "", "", C, "", true, ""),
    case("CT Head w and wo IV Contrast", CT, "", "", C, "", false, ""),
    case("CT Abdomen/Pelvis wo IV Contrast", CT, "", "", C, "", false, ""),
    // Short names.
    case("CT Chest wo", CT, "", "", C, "", false, ""),
    case("CT Abd w/wo", CT, "", "", C, "", false, ""),
    case("CT Head w", CT, "", "", C, "", false, ""),
    case("CT Abd/Pelv wo", CT, "", "", C, "", false, ""),
    case("ct abd/pelv w", CT, "", "", C, "", false, ""),
    // LOINC long common names.
    case("CT Chest", CT, "", "", C, "", false, ""),
    case("CT CHEST WO CONTRAST", CT, "", "", C, "", false, ""),
    // Codes with right and wrong scheme designators.
    case("4DCT LUNG SIM", FOUR_D, "RPID6008^RADLEX", "", C, "", true, "planning-ct"),
    case("4DCT LUNG SIM", FOUR_D, "RPID6008^RPID", "", C, "", true, ""),
    case("4DCT LUNG SIM", FOUR_D, "RPID6008^radlex", "", C, "", true, ""),
    case("4DCT LUNG SIM", FOUR_D, "rpid6008^RADLEX", "", C, "", true, ""),
    case("4DCT LUNG SIM", FOUR_D, "RPID6008^LN", "", N, S, true, ""),
    case("4DCT LUNG SIM", FOUR_D, "RPID6008^99LOCAL", "", N, S, true, ""),
    case("LOCAL CHEST", CT, "24627-2^LN", "", C, "", false, ""),
    case("LOCAL CHEST", CT, "29252-4^LN", "", C, "", false, ""),
    case("LOCAL CHEST", CT, "24627-2^RADLEX", "", N, S, false, ""),
    case("LOCAL CHEST", CT, "24627-2^LOINC", "", N, S, false, ""),
    case("LOCAL CHEST", CT, "RPID99999^RADLEX", "", N, S, false, ""),
    case("LOCAL CHEST", CT, "99999-9^LN", "", N, S, false, ""),
    case("LOCAL CHEST", CT, "CHEST01^99ORG;RPID16^RADLEX", "", C, "", false, ""),
    case("", CT, "RPID16^RADLEX", "", C, "", false, ""),
    // Site names.
    case("4DCT LUNG SIM", FOUR_D, "", "", N, S, true, "planning-ct"),
    case("CHEST^RT PLANNING", CT, "", "", N, S, true, ""),
    case("CHEST CT", CT, "", "", N, S, false, ""),
    case("CT Chest w/o contrast", CT, "", "", N, S, false, ""),
    case("Thorax^01_ThoraxRoutine (Adult)", CT, "", "", N, S, false, ""),
    case("BRAIN SIM", CT, "", "", N, S, true, ""),
    case("PELVIS PLANNING CT", CT, "", "", N, S, true, ""),
    case("Lung 4D", CT, "", "", N, S, true, ""),
    case("Breast DIBH", &["CT|DIBH|"], "", "", N, S, true, "breath-hold"),
    case("CT Chest wo IV Contrast.", CT, "", "", N, S, false, ""),
    case("CT-Chest wo IV Contrast", CT, "", "", N, S, false, ""),
    case("RT SIM HEAD NECK", CT, "", "", N, S, true, ""),
    // Empty, missing, non-ASCII, very long.
    case("", CT, "", "", N, S, false, ""),
    case("   ", CT, "", "", N, S, false, ""),
    case("Thorax Planung ÄÖÜ", CT, "", "", N, S, false, ""),
    case("胸部CT", CT, "", "", N, S, false, ""),
    case("CT Chest wo IV Contrast CT Chest wo IV Contrast CT Chest wo IV Contrast CT Chest wo IV Contrast CT Chest", CT, "", "", N, S, false, ""),
    // Series kinds: 4D phases as vendors write them.
    case("CT Chest", &["CT|4D 0%|"], "", "", C, "", true, "4dct-phase"),
    case("CT Chest", &["CT|50.0%|"], "", "", C, "", true, "4dct-phase"),
    case("CT Chest", &["CT|Gated, 50.0%|"], "", "", C, "", true, "4dct-phase"),
    case("CT Chest", &["CT|Gated, 50.0%, iDose (3)|"], "", "", C, "", true, "4dct-phase"),
    case("CT Chest", &["CT|0%|"], "", "", C, "", true, "4dct-phase"),
    case("CT Chest", &["CT|16%|"], "", "", C, "", true, "4dct-phase"),
    case("CT Chest", &["CT|33%|"], "", "", C, "", true, "4dct-phase"),
    case("CT Chest", &["CT|Thorax  3.0  B31f  50% Ex|"], "", "", C, "", true, "4dct-phase"),
    case("CT Chest", &["CT|Thorax  3.0  B31f  100% In|"], "", "", C, "", true, "4dct-phase"),
    case("CT Chest", &["CT|80% Ex - 100% In|"], "", "", C, "", true, "4dct-phase"),
    case("CT Chest", &["CT|Respiratory Motion 50%|"], "", "", C, "", true, "4dct-phase"),
    case("CT Chest", &["CT|T=50%|"], "", "", C, "", true, "4dct-phase"),
    case("CT Chest", &["CT|Phase 5|"], "", "", C, "", true, "4dct-phase"),
    // Traps: a percentage that is not a respiratory phase.
    case("CT Chest", &["CT|30%ASIR|"], "", "", N, SE, false, "nonstandard"),
    case("CT Chest", &["CT|CHEST 30%ASIR|"], "", "", C, "", false, "planning-ct"),
    case("CT Chest", &["CT|Cardiac 55%|"], "", "", N, SE, false, "nonstandard"),
    // Averages, MIP, MinIP.
    case("CT Chest", &["CT|AVG|"], "", "", C, "", false, "4dct-average"),
    case("CT Chest", &["CT|Ave-IP(3) 4D|"], "", "", C, "", true, "4dct-average"),
    case("CT Chest", &["CT|AIP|"], "", "", C, "", false, "4dct-average"),
    case("CT Chest", &["CT|Average CT|"], "", "", C, "", false, "4dct-average"),
    case("CT Chest", &["CT|Thorax 3.0|DERIVED\\SECONDARY\\AXIAL\\AVE"], "", "", C, "", false, "4dct-average"),
    case("CT Chest", &["CT|MIP|"], "", "", C, "", false, "4dct-mip"),
    case("CT Chest", &["CT|t-MaxIP|"], "", "", C, "", false, "4dct-mip"),
    case("CT Chest", &["CT|MIP(10) 0%-90%|"], "", "", C, "", false, "4dct-mip"),
    case("CT Chest", &["CT|Min() 0%-90%|"], "", "", C, "", false, "4dct-minip"),
    case("CT Chest", &["CT|t-MinIP|"], "", "", C, "", false, "4dct-minip"),
    case("CT Chest", &["CT|MinIP|"], "", "", C, "", false, "4dct-minip"),
    // Other kinds.
    case("CT Chest", &["CT|DIBH|"], "", "", C, "", true, "breath-hold"),
    case("CT Chest", &["CT|Insp|"], "", "", C, "", false, "breath-hold"),
    case("CT Chest", &["CT|Exp|"], "", "", C, "", false, "breath-hold"),
    case("CT Chest", &["CT|CBCT|"], "", "", C, "", false, "cbct"),
    case("CT Chest", &["CT|Topogram 0.6 T20f|"], "", "", C, "", false, "scout"),
    case("CT Chest", &["CT|Scout|"], "", "", C, "", false, "scout"),
    case("CT Chest", &["CT|CT SIM PLANNING|"], "", "", C, "", true, "planning-ct"),
    case("CT Chest", &["CT|HEAD 2.5mm STD|"], "", "", C, "", false, "planning-ct"),
    case("CT Chest", &["CT|Free breathing|"], "", "", C, "", false, "planning-ct"),
    // Nonstandard and empty series names; the switch that decides whether they need a reason.
    case("CT Chest", &["CT||"], "", "", N, SE, false, "nonstandard"),
    case("CT Chest", &["CT||"], "", "series-ok", C, SE, false, "nonstandard"),
    case("CT Chest", &["CT|Recon 2|"], "", "", N, SE, false, "nonstandard"),
    case("LOCAL", &["CT|Recon 2|"], "", "", N, SS, false, "nonstandard"),
    // RT objects are recorded, not judged.
    case("CT Chest", &["RTSTRUCT||"], "", "", C, "", false, "not-judged"),
    case("CT Chest", &["RTPLAN|Plan 1|", "RTDOSE||", "REG||"], "", "", C, "", true, "not-judged"),
    // Other evidence of radiation treatment planning.
    case("CT Chest wo IV Contrast", CT, "", "station=CTSIM01", C, "", true, ""),
    case("CT Chest wo IV Contrast", CT, "", "station=ctsim01", C, "", true, ""),
    case("CT Chest wo IV Contrast", CT, "", "ae=CTSIM", C, "", true, ""),
    case("CT Chest wo IV Contrast", CT, "", "ae=DIAGNOSTIC", C, "", false, ""),
    case("CT Chest wo IV Contrast", CT, "", "rt-objects", C, "", true, ""),
    case("CT Chest wo IV Contrast", CT, "", "resp", C, "", true, ""),
    case("LUNG", CT, "", "station=CTSIM01", N, S, true, ""),
    case("LUNG", CT, "", "rt-objects", N, S, true, ""),
];

#[test]
fn the_naming_table_holds() {
    assert!(CASES.len() >= 80, "{} cases", CASES.len());
    for case in CASES {
        check(case);
    }
}

#[test]
fn suggestions_are_the_nearest_names_of_the_same_modality() {
    let naming = naming(true);
    let verdict = naming.evaluate(&facts(&case(
        "CHEST CT WITHOUT CONTRAST",
        CT,
        "",
        "",
        N,
        S,
        false,
        "",
    )));
    let codes: Vec<&str> = verdict
        .suggestions
        .iter()
        .map(|s| s.code.as_str())
        .collect();
    assert!(
        codes.contains(&"RPID16") || codes.contains(&"29252-4"),
        "{codes:?}"
    );
    // A planning study named close to a planning name gets it first.
    let verdict = naming.evaluate(&facts(&case(
        "CT PLANNING LUNG",
        FOUR_D,
        "",
        "",
        N,
        S,
        true,
        "",
    )));
    assert!(
        verdict
            .suggestions
            .first()
            .is_some_and(|s| s.code.starts_with("RPID60")),
        "a treatment-planning name first among {:?}",
        verdict.suggestions
    );
    // A name like no standard one gets no suggestion rather than unrelated ones.
    let verdict = naming.evaluate(&facts(&case(
        "4DCT LUNG SIM",
        FOUR_D,
        "",
        "",
        N,
        S,
        true,
        "",
    )));
    assert!(
        verdict.suggestions.iter().all(|s| s.score >= 0.3),
        "below the floor: {:?}",
        verdict.suggestions
    );
    assert_eq!(verdict.suggested_reason.as_deref(), Some("rt-planning"));
    let kinds: Vec<&str> = verdict.evidence.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, ["4d-phase-series", "planning-name"]);
}

#[test]
fn a_wrong_scheme_designator_is_explained() {
    let naming = naming(true);
    let verdict = naming.evaluate(&facts(&case("LOCAL", CT, "RPID16^LN", "", N, S, false, "")));
    assert!(
        verdict.findings[0].detail.contains("RPID16"),
        "{:?}",
        verdict.findings
    );
}

#[test]
fn broken_rules_are_refused_with_the_kind_named() {
    let err =
        SeriesRules::parse("[[kind]]\nname = \"x\"\ndescription = \"(\"\n").expect_err("bad regex");
    assert!(err.to_string().contains("`x`"), "{err}");
    assert!(SeriesRules::parse("[[kind]]\nname = \"y\"\n").is_err());
}
