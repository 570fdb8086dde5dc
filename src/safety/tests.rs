//! The identity table: one arriving instance against what the index holds, and the finding
//! codes (with a word of each detail) it must give. The geometry tables live beside
//! `geometry`.

use super::identity::{Arrival, KnownSeries, Patient, Reference, check_arrival};
use super::{FindingCode, FindingCode::*};

fn patient(id: &str, name: &str, birth_date: &str, sex: &str) -> Patient {
    Patient {
        id: id.into(),
        name: name.into(),
        birth_date: birth_date.into(),
        sex: sex.into(),
    }
}

struct Row {
    name: &'static str,
    patient: Patient,
    study: Option<Patient>,
    /// (study the series is filed under, its frame of reference)
    series: Option<(&'static str, &'static str)>,
    claimed_study: &'static str,
    frame_of_reference: &'static str,
    previous: Option<Patient>,
    references: Vec<Reference>,
    expected: &'static [FindingCode],
    detail_contains: &'static str,
}

fn row(name: &'static str) -> Row {
    Row {
        name,
        patient: patient("PAT1", "DOE^JANE", "19600101", "F"),
        study: Some(patient("PAT1", "DOE^JANE", "19600101", "F")),
        series: Some(("1.2.3", "1.2.3.9")),
        claimed_study: "1.2.3",
        frame_of_reference: "1.2.3.9",
        previous: None,
        references: Vec::new(),
        expected: &[],
        detail_contains: "",
    }
}

fn reference(what: &'static str, uid: &str, patient_id: &str) -> Reference {
    Reference {
        what,
        uid: uid.into(),
        patient_id: patient_id.into(),
    }
}

fn check(row: &Row) {
    let findings = check_arrival(&Arrival {
        sop_instance_uid: "1.2.3.4.5",
        study_instance_uid: row.claimed_study,
        frame_of_reference_uid: row.frame_of_reference,
        patient: &row.patient,
        study_patient: row.study.as_ref(),
        series: row.series.map(|(study, frame)| KnownSeries {
            study_instance_uid: study,
            frame_of_reference_uid: frame,
        }),
        previous_patient: row.previous.as_ref(),
        references: &row.references,
    });
    let codes: Vec<FindingCode> = findings.iter().map(|f| f.code).collect();
    assert_eq!(codes, row.expected, "{}: {findings:#?}", row.name);
    assert!(
        findings
            .iter()
            .any(|f| f.detail.contains(row.detail_contains))
            || findings.is_empty(),
        "{}: no detail holds {:?}: {findings:#?}",
        row.name,
        row.detail_contains
    );
    for finding in &findings {
        assert_eq!(finding.sop_instance_uid, "1.2.3.4.5", "{}", row.name);
        if finding.phi {
            assert!(
                !finding.detail.contains(&finding.found) || finding.found.is_empty(),
                "{}: patient data in the detail {:?}",
                row.name,
                finding.detail
            );
        }
    }
}

#[test]
fn the_identity_table_holds() {
    let rows = vec![
        row("the same patient, series and frame of reference"),
        Row {
            study: None,
            series: None,
            ..row("the first instance of a new study")
        },
        Row {
            patient: patient("PAT2", "DOE^JANE", "19600101", "F"),
            expected: &[IdentityMismatch],
            detail_contains: "Patient ID differs from the study's",
            ..row("another Patient ID")
        },
        Row {
            patient: patient("PAT1", "ROE^RICHARD", "19600101", "F"),
            expected: &[IdentityMismatch],
            detail_contains: "Patient's Name",
            ..row("another Patient's Name")
        },
        Row {
            patient: patient("PAT1", "doe^jane^^", "19600101", "F"),
            ..row("the same name in other case and with empty components")
        },
        Row {
            patient: patient("PAT1", "DOE^JANE=ドウ^ジェーン", "19600101", "F"),
            ..row("an ideographic group the study did not have")
        },
        Row {
            patient: patient("PAT1", "DOE^JANE", "19610101", "F"),
            expected: &[IdentityMismatch],
            detail_contains: "Birth Date",
            ..row("another birth date")
        },
        Row {
            patient: patient("PAT1", "DOE^JANE", "19600101", "M"),
            expected: &[IdentityMismatch],
            detail_contains: "Sex",
            ..row("another sex")
        },
        Row {
            patient: patient("PAT1", "=ドウ^ジェーン", "19600101", "F"),
            expected: &[IdentityMismatch],
            ..row("an ideographic name only, against an alphabetic one")
        },
        Row {
            patient: patient("PAT1", "DOE^JANE", "", ""),
            ..row("empty type 2 attributes are no conflict")
        },
        Row {
            patient: patient(" PAT1 ", "DOE^JANE ", "19600101", "f"),
            ..row("padding and case of sex")
        },
        Row {
            patient: patient("PAT9", "ROE^RICHARD", "19700101", "M"),
            expected: &[
                IdentityMismatch,
                IdentityMismatch,
                IdentityMismatch,
                IdentityMismatch,
            ],
            ..row("every attribute of another patient")
        },
        Row {
            claimed_study: "1.2.4",
            expected: &[SeriesStudyConflict],
            detail_contains: "the series belongs to study 1.2.3; this instance names study 1.2.4",
            ..row("an instance of a known series naming another study")
        },
        Row {
            frame_of_reference: "1.2.3.10",
            expected: &[FrameOfReferenceConflict],
            detail_contains: "frame of reference 1.2.3.9",
            ..row("a second frame of reference in one series")
        },
        Row {
            series: Some(("1.2.3", "")),
            frame_of_reference: "1.2.3.10",
            ..row("a series without a frame of reference yet")
        },
        Row {
            previous: Some(patient("PAT0", "DOE^JANE", "19600101", "F")),
            expected: &[IdentityMismatch],
            detail_contains: "earlier copy of this instance",
            ..row("a re-sent SOP Instance UID with another patient")
        },
        Row {
            previous: Some(patient("PAT1", "DOE^JANE", "19600101", "F")),
            ..row("a re-send of the same patient")
        },
        Row {
            references: vec![reference("image", "1.2.3.7.1", "PAT1")],
            ..row("an RT Structure Set on the patient's own images")
        },
        Row {
            references: vec![reference("image", "1.2.3.7.1", "PAT2")],
            expected: &[RtReferenceConflict],
            detail_contains: "references image 1.2.3.7.1 of another patient",
            ..row("an RT Structure Set on another patient's image")
        },
        Row {
            references: (1..=120)
                .map(|n| reference("image", &format!("1.2.3.7.{n}"), "PAT2"))
                .collect(),
            expected: &[RtReferenceConflict],
            detail_contains: "references 120 images of another patient (the first: 1.2.3.7.1)",
            ..row("many images of another patient: one finding")
        },
        Row {
            references: vec![reference("frame of reference", "1.2.3.99", "PAT2")],
            expected: &[RtReferenceConflict],
            detail_contains: "frame of reference 1.2.3.99",
            ..row("an RT Plan on another patient's frame of reference")
        },
        Row {
            references: vec![
                reference("frame of reference", "1.2.3.99", "PAT2"),
                reference("image", "1.2.3.7.1", "PAT3"),
            ],
            expected: &[RtReferenceConflict, RtReferenceConflict],
            ..row("an RT Dose referencing two other patients")
        },
        Row {
            references: vec![reference("image", "1.2.3.7.1", "")],
            ..row("a referenced image without a Patient ID")
        },
        Row {
            patient: patient("PAT2", "DOE^JANE", "19600101", "F"),
            claimed_study: "1.2.4",
            references: vec![reference("image", "1.2.3.7.1", "PAT1")],
            expected: &[IdentityMismatch, SeriesStudyConflict, RtReferenceConflict],
            ..row("several findings in a stable order")
        },
    ];
    assert!(rows.len() >= 20);
    for row in &rows {
        check(row);
    }
}

#[test]
fn finding_codes_read_back_and_geometry_codes_are_told_apart() {
    for code in FindingCode::ALL {
        assert_eq!(FindingCode::parse(code.as_str()), Some(code));
    }
    assert!(!IdentityMismatch.is_geometry() && !RtReferenceConflict.is_geometry());
    assert!(SliceGap.is_geometry() && PhaseCountMismatch.is_geometry());
}
