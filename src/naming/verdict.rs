//! The study verdict: is the study named according to the standardized nomenclature (HCPCS
//! G9318), or does it need a documented medical reason (G9319 until documented, G9320 after)?
//! With the findings, the nearest standard names, and the evidence that it was acquired for
//! radiation treatment planning.

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::nomenclature::{Nomenclature, Scheme, SchemeDesignators, Suggestion};
use super::series::{SeriesFacts, SeriesRules, SeriesVerdict};
use crate::dicom::CodeItem;

/// What the verdict looks at for one study: plain values, gathered by the caller.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StudyFacts {
    pub study_description: String,
    pub requested_procedure_description: String,
    /// Items of Procedure Code Sequence and Requested Procedure Code Sequence.
    pub codes: Vec<CodeItem>,
    pub station_names: Vec<String>,
    pub calling_ae_titles: Vec<String>,
    pub protocol_names: Vec<String>,
    pub series: Vec<SeriesFacts>,
    /// RT Structure Set, Plan, Dose or Registration objects share the study's frame of reference.
    pub rt_objects_on_frame_of_reference: Vec<String>,
}

impl StudyFacts {
    /// The modality the study's name is compared within: the first judged image modality.
    fn modality(&self) -> &str {
        self.series
            .iter()
            .map(|s| s.modality.as_str())
            .find(|m| matches!(*m, "CT" | "MR" | "PT" | "NM" | "US" | "CR" | "DX" | "XA"))
            .unwrap_or("CT")
    }
}

/// The site's policy around the rules.
#[derive(Debug, Clone)]
pub struct NamingPolicy {
    pub designators: SchemeDesignators,
    /// Whether nonstandard series names alone make a study need a reason.
    pub series_findings_need_reason: bool,
    pub ct_simulator_ae_titles: Vec<String>,
    pub ct_simulator_station_names: Vec<String>,
    /// Patterns on study, series, protocol and requested procedure names that say "planning".
    pub planning_patterns: Vec<Regex>,
    /// The reason code pre-selected for nonstandard rt_planning studies.
    pub rt_planning_reason_code: String,
    /// Standard names less similar than this (0..1) to the study's name are not suggested.
    pub suggestion_floor: f64,
}

/// Study status, as stored and reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StudyStatus {
    /// G9318: named according to the standardized nomenclature.
    Conforming,
    /// G9319: not named so, medical reason not (yet) documented.
    NeedsReason,
    /// G9320: not named so, medical reason documented.
    ReasonDocumented,
}

impl StudyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StudyStatus::Conforming => "conforming",
            StudyStatus::NeedsReason => "needs-reason",
            StudyStatus::ReasonDocumented => "reason-documented",
        }
    }

    pub fn parse(text: &str) -> Option<StudyStatus> {
        match text {
            "conforming" => Some(StudyStatus::Conforming),
            "needs-reason" => Some(StudyStatus::NeedsReason),
            "reason-documented" => Some(StudyStatus::ReasonDocumented),
            _ => None,
        }
    }

    pub fn hcpcs(self) -> &'static str {
        match self {
            StudyStatus::Conforming => "G9318",
            StudyStatus::NeedsReason => "G9319",
            StudyStatus::ReasonDocumented => "G9320",
        }
    }
}

/// How the study's name matched the standard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StandardMatch {
    pub scheme: Scheme,
    pub code: String,
    pub name: String,
    /// `procedure-code`, `requested-procedure-code` or `study-description`.
    pub by: &'static str,
}

/// One finding: a name that does not follow the standard or the site's conventions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// `study-name-nonstandard` or `series-name-nonstandard`.
    pub code: &'static str,
    /// The name judged.
    pub subject: String,
    pub detail: String,
}

/// Why a study is taken as acquired for radiation treatment planning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evidence {
    /// `ct-simulator-ae-title`, `ct-simulator-station`, `4d-phase-series`,
    /// `respiratory-attributes`, `planning-name`, `rt-objects-on-frame-of-reference`.
    pub kind: &'static str,
    pub detail: String,
}

/// The verdict on a study as the naming rules see it (documentation of a reason is applied on
/// top by the store: a needs-reason study with a documented reason is reason-documented).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub status: StudyStatus,
    pub standard_match: Option<StandardMatch>,
    pub findings: Vec<Finding>,
    /// The three nearest standard names, when the study name is not standard.
    pub suggestions: Vec<Suggestion>,
    /// One verdict per series, in the order of `StudyFacts::series`.
    pub series: Vec<SeriesVerdict>,
    pub rt_planning: bool,
    pub evidence: Vec<Evidence>,
    /// Pre-selected reason code for a nonstandard rt_planning study; not documented until a
    /// person confirms it.
    pub suggested_reason: Option<String>,
}

/// Judges one study. Pure: no I/O, no clock.
pub fn evaluate(
    facts: &StudyFacts,
    nomenclature: &Nomenclature,
    rules: &SeriesRules,
    policy: &NamingPolicy,
) -> Verdict {
    let standard_match = match_codes(facts, nomenclature, &policy.designators).or_else(|| {
        nomenclature
            .by_name(&facts.study_description)
            .map(|name| StandardMatch {
                scheme: name.scheme,
                code: name.code.clone(),
                name: name.long_name.clone(),
                by: "study-description",
            })
    });

    let series: Vec<SeriesVerdict> = facts.series.iter().map(|s| rules.judge(s)).collect();
    let evidence = rt_planning_evidence(facts, rules, &series, policy);
    let rt_planning = !evidence.is_empty();

    let mut findings = Vec::new();
    let mut suggestions = Vec::new();
    if standard_match.is_none() {
        let detail = if facts.study_description.trim().is_empty() {
            "Study Description is empty and no procedure code is in the nomenclature".to_string()
        } else {
            "not a standard name, and no procedure code is in the nomenclature".to_string()
        };
        findings.push(Finding {
            code: "study-name-nonstandard",
            subject: facts.study_description.clone(),
            detail: with_code_detail(detail, facts, nomenclature, &policy.designators),
        });
        // A study acquired for treatment planning should most likely have been named as one.
        let planning = |name: &super::StandardName| {
            rt_planning && name.long_name.to_lowercase().contains("treatment planning")
        };
        suggestions = nomenclature.nearest(
            &facts.study_description,
            facts.modality(),
            planning,
            3,
            policy.suggestion_floor,
        );
    }

    let mut series_nonstandard = false;
    for (facts, verdict) in facts.series.iter().zip(&series) {
        if let SeriesVerdict::Nonstandard { nearest_kinds } = verdict {
            series_nonstandard = true;
            findings.push(Finding {
                code: "series-name-nonstandard",
                subject: facts.series_description.clone(),
                detail: format!(
                    "matches no series kind; nearest: {}",
                    nearest_kinds.join(", ")
                ),
            });
        }
    }

    let needs_reason =
        standard_match.is_none() || (series_nonstandard && policy.series_findings_need_reason);
    let status = if needs_reason {
        StudyStatus::NeedsReason
    } else {
        StudyStatus::Conforming
    };
    Verdict {
        status,
        standard_match,
        findings,
        suggestions,
        series,
        rt_planning,
        suggested_reason: (needs_reason && rt_planning)
            .then(|| policy.rt_planning_reason_code.clone()),
        evidence,
    }
}

fn match_codes(
    facts: &StudyFacts,
    nomenclature: &Nomenclature,
    designators: &SchemeDesignators,
) -> Option<StandardMatch> {
    facts.codes.iter().find_map(|item| {
        let scheme = designators.scheme_of(&item.coding_scheme_designator)?;
        let name = nomenclature.by_code(scheme, &item.code_value)?;
        Some(StandardMatch {
            scheme,
            code: name.code.clone(),
            name: name.long_name.clone(),
            by: "procedure-code",
        })
    })
}

/// Says why a code that looks standard did not count (wrong scheme designator, unknown code).
fn with_code_detail(
    mut detail: String,
    facts: &StudyFacts,
    nomenclature: &Nomenclature,
    designators: &SchemeDesignators,
) -> String {
    for item in &facts.codes {
        let known_elsewhere = [Scheme::Radlex, Scheme::Loinc]
            .into_iter()
            .find(|scheme| nomenclature.by_code(*scheme, &item.code_value).is_some());
        match (
            designators.scheme_of(&item.coding_scheme_designator),
            known_elsewhere,
        ) {
            (Some(given), Some(actual)) if given != actual => detail.push_str(&format!(
                "; code {} has designator {:?}, which does not name {}",
                item.code_value,
                item.coding_scheme_designator,
                actual.as_str()
            )),
            (None, Some(actual)) => detail.push_str(&format!(
                "; code {} has designator {:?}, which does not name {}",
                item.code_value,
                item.coding_scheme_designator,
                actual.as_str()
            )),
            (Some(given), None) => detail.push_str(&format!(
                "; code {} is not in the loaded {} nomenclature",
                item.code_value,
                given.as_str()
            )),
            _ => {}
        }
    }
    detail
}

fn rt_planning_evidence(
    facts: &StudyFacts,
    rules: &SeriesRules,
    series: &[SeriesVerdict],
    policy: &NamingPolicy,
) -> Vec<Evidence> {
    let mut evidence = Vec::new();
    for ae in &facts.calling_ae_titles {
        if policy
            .ct_simulator_ae_titles
            .iter()
            .any(|sim| sim.eq_ignore_ascii_case(ae.trim()))
        {
            evidence.push(Evidence {
                kind: "ct-simulator-ae-title",
                detail: ae.clone(),
            });
        }
    }
    for station in &facts.station_names {
        if policy
            .ct_simulator_station_names
            .iter()
            .any(|sim| sim.eq_ignore_ascii_case(station.trim()))
        {
            evidence.push(Evidence {
                kind: "ct-simulator-station",
                detail: station.clone(),
            });
        }
    }
    let phases: Vec<&str> = facts
        .series
        .iter()
        .zip(series)
        .filter(|(_, verdict)| {
            verdict
                .kind()
                .and_then(|k| rules.kind(k))
                .is_some_and(|k| k.respiratory)
        })
        .map(|(facts, _)| facts.series_description.as_str())
        .collect();
    if !phases.is_empty() {
        evidence.push(Evidence {
            kind: "4d-phase-series",
            detail: format!(
                "{} phase series ({})",
                phases.len(),
                phases
                    .iter()
                    .take(3)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    if facts.series.iter().any(|s| s.respiratory_attributes) {
        evidence.push(Evidence {
            kind: "respiratory-attributes",
            detail: "Respiratory Motion Compensation Technique or Nominal Percentage of Respiratory Phase present".into(),
        });
    }
    let names = std::iter::once(&facts.study_description)
        .chain(std::iter::once(&facts.requested_procedure_description))
        .chain(facts.protocol_names.iter())
        .chain(facts.series.iter().map(|s| &s.series_description));
    let mut planning_names: Vec<&str> = Vec::new();
    for name in names {
        if !name.is_empty()
            && policy.planning_patterns.iter().any(|re| re.is_match(name))
            && !planning_names.contains(&name.as_str())
        {
            planning_names.push(name);
        }
    }
    if !planning_names.is_empty() {
        evidence.push(Evidence {
            kind: "planning-name",
            detail: planning_names
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    if !facts.rt_objects_on_frame_of_reference.is_empty() {
        evidence.push(Evidence {
            kind: "rt-objects-on-frame-of-reference",
            detail: facts.rt_objects_on_frame_of_reference.join(", "),
        });
    }
    evidence
}
