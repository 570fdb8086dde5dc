//! Identity checks as an instance arrives: does it belong to the patient its study, its series
//! and its earlier copy say? Each disagreement is a [`Finding`]; an empty value on either side
//! is not one (Patient ID, Name, Birth Date and Sex are type 2: present, possibly empty).

use super::{Finding, FindingCode};

/// The patient attributes compared within a study.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Patient {
    pub id: String,
    pub name: String,
    pub birth_date: String,
    pub sex: String,
}

/// The series as the index already has it.
#[derive(Debug, Clone, Copy)]
pub struct KnownSeries<'a> {
    /// The study the series is filed under.
    pub study_instance_uid: &'a str,
    pub frame_of_reference_uid: &'a str,
}

/// What an RT object references, found in the index with the patient it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// "image" or "frame of reference".
    pub what: &'static str,
    pub uid: String,
    /// Patient ID of the study holding the referenced instance or frame of reference.
    pub patient_id: String,
}

/// Everything the identity check compares for one arriving instance.
#[derive(Debug, Clone, Copy)]
pub struct Arrival<'a> {
    pub sop_instance_uid: &'a str,
    /// The Study Instance UID the instance itself carries.
    pub study_instance_uid: &'a str,
    pub frame_of_reference_uid: &'a str,
    pub patient: &'a Patient,
    /// The study's patient as its earlier instances gave it; `None` for a new study.
    pub study_patient: Option<&'a Patient>,
    /// `None` for a new series.
    pub series: Option<KnownSeries<'a>>,
    /// The patient of the stored copy of this SOP Instance UID, when it is a re-send.
    pub previous_patient: Option<&'a Patient>,
    /// For an RT Structure Set, Plan or Dose: what it references that the index holds.
    pub references: &'a [Reference],
}

/// The findings of one arriving instance, in a stable order.
pub fn check_arrival(arrival: &Arrival<'_>) -> Vec<Finding> {
    let mut findings = Vec::new();
    if let Some(study) = arrival.study_patient {
        compare_patients(arrival, study, "the study's", &mut findings);
    }
    if let Some(previous) = arrival.previous_patient {
        compare_patients(
            arrival,
            previous,
            "the earlier copy of this instance's",
            &mut findings,
        );
    }
    if let Some(series) = arrival.series {
        if series.study_instance_uid != arrival.study_instance_uid {
            findings.push(Finding {
                code: FindingCode::SeriesStudyConflict,
                attribute: "Study Instance UID".into(),
                expected: series.study_instance_uid.into(),
                found: arrival.study_instance_uid.into(),
                phi: false,
                detail: format!(
                    "the series belongs to study {}; this instance names study {}",
                    series.study_instance_uid, arrival.study_instance_uid
                ),
                sop_instance_uid: arrival.sop_instance_uid.into(),
            });
        }
        if !series.frame_of_reference_uid.is_empty()
            && !arrival.frame_of_reference_uid.is_empty()
            && series.frame_of_reference_uid != arrival.frame_of_reference_uid
        {
            findings.push(Finding {
                code: FindingCode::FrameOfReferenceConflict,
                attribute: "Frame of Reference UID".into(),
                expected: series.frame_of_reference_uid.into(),
                found: arrival.frame_of_reference_uid.into(),
                phi: false,
                detail: format!(
                    "the series has frame of reference {}; this instance has {}",
                    series.frame_of_reference_uid, arrival.frame_of_reference_uid
                ),
                sop_instance_uid: arrival.sop_instance_uid.into(),
            });
        }
    }
    // One finding per kind of reference and other patient, however many it references.
    let mut conflicts: Vec<(&Reference, usize)> = Vec::new();
    for reference in arrival.references {
        if !differs(&reference.patient_id, &arrival.patient.id, normalise_text) {
            continue;
        }
        match conflicts
            .iter_mut()
            .find(|(r, _)| r.what == reference.what && r.patient_id == reference.patient_id)
        {
            Some((_, count)) => *count += 1,
            None => conflicts.push((reference, 1)),
        }
    }
    for (reference, count) in conflicts {
        let detail = if count == 1 {
            format!(
                "references {} {} of another patient",
                reference.what, reference.uid
            )
        } else {
            format!(
                "references {count} {} of another patient (the first: {})",
                plural(reference.what),
                reference.uid
            )
        };
        findings.push(Finding {
            code: FindingCode::RtReferenceConflict,
            attribute: "Patient ID".into(),
            expected: arrival.patient.id.clone(),
            found: reference.patient_id.clone(),
            phi: true,
            detail,
            sop_instance_uid: arrival.sop_instance_uid.into(),
        });
    }
    findings
}

/// How an attribute's values are made comparable.
type Normalise = fn(&str) -> String;

fn compare_patients(
    arrival: &Arrival<'_>,
    known: &Patient,
    whose: &str,
    findings: &mut Vec<Finding>,
) {
    let own = arrival.patient;
    let attributes: [(&str, &str, &str, Normalise); 4] = [
        ("Patient ID", &known.id, &own.id, normalise_text),
        ("Patient's Name", &known.name, &own.name, normalise_name),
        (
            "Patient's Birth Date",
            &known.birth_date,
            &own.birth_date,
            normalise_text,
        ),
        ("Patient's Sex", &known.sex, &own.sex, normalise_upper),
    ];
    for (attribute, expected, found, normalise) in attributes {
        if differs(expected, found, normalise) {
            findings.push(Finding {
                code: FindingCode::IdentityMismatch,
                attribute: attribute.into(),
                expected: expected.into(),
                found: found.into(),
                phi: true,
                detail: format!("{attribute} differs from {whose}"),
                sop_instance_uid: arrival.sop_instance_uid.into(),
            });
        }
    }
}

fn plural(what: &str) -> String {
    match what {
        "frame of reference" => "frames of reference".into(),
        other => format!("{other}s"),
    }
}

/// Both values are given and differ once normalised.
fn differs(a: &str, b: &str, normalise: Normalise) -> bool {
    let (a, b) = (normalise(a), normalise(b));
    !a.is_empty() && !b.is_empty() && a != b
}

fn normalise_text(value: &str) -> String {
    value.trim_matches([' ', '\0']).to_string()
}

fn normalise_upper(value: &str) -> String {
    normalise_text(value).to_uppercase()
}

/// PN: letter case, padding and empty trailing components do not make another person
/// ("DOE^JOHN^^" is "Doe^John"). The alphabetic group is compared; ideographic and phonetic
/// groups (after "=") only when there is no alphabetic one, since senders differ in writing them.
fn normalise_name(value: &str) -> String {
    let value = normalise_text(value);
    let groups: Vec<&str> = value.split('=').collect();
    let group = groups
        .iter()
        .find(|g| !g.trim().is_empty())
        .copied()
        .unwrap_or("");
    group
        .split('^')
        .map(|component| component.trim().to_uppercase())
        .collect::<Vec<_>>()
        .join("^")
        .trim_end_matches('^')
        .to_string()
}
