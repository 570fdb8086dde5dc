//! The receive path against DCMTK's echoscu and storescu.

use std::collections::HashMap;
use std::path::PathBuf;

use simgate_synth::{self as synth, StudySpec};

use crate::support::{
    App, ReferenceScp, assert_success, dataset_bytes, dcmtk, text, transfer_syntax,
};

#[test]
fn echoscu_succeeds() {
    let app = App::spawn();
    assert_success(&app.echoscu(), "echoscu");
    app.wait_for_log("echoes=1");
}

#[test]
fn calling_ae_outside_the_allow_list_is_rejected() {
    let app = App::spawn_with("allowed_calling_ae_titles = [\"CTSIM\"]", "");
    assert_success(
        &app.echoscu_as("CTSIM", "SIMGATE"),
        "echoscu from an allowed AE",
    );
    let refused = app.echoscu_as("INTRUDER", "SIMGATE");
    assert!(
        !refused.status.success(),
        "an unknown calling AE was accepted"
    );
    assert!(
        text(&refused).contains("Calling AE Title Not Recognized"),
        "echoscu should report the rejection reason: {}",
        text(&refused)
    );
    // The log names the refused title, which the operator adding a simulator needs.
    let line = app.wait_for_log("calling AE title is not in listener.allowed_calling_ae_titles");
    assert!(line.contains("INTRUDER"), "{line}");
}

#[test]
fn a_wrong_called_ae_title_is_rejected() {
    let app = App::spawn();
    let refused = app.echoscu_as("CTSIM", "NOTSIMGATE");
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("Called AE Title Not Recognized"),
        "{}",
        text(&refused)
    );
    let line = app.wait_for_log("called AE title is not listener.ae_title");
    assert!(
        line.contains("NOTSIMGATE") && line.contains("CTSIM"),
        "{line}"
    );
}

/// Sends a 100-slice planning CT with RT Structure Set, Plan and Dose in one association and
/// checks every stored file and row. "What was sent" is what DCMTK's storescp, in
/// bit-preserving mode, receives from the same storescu: storescu re-encodes sequence lengths
/// while sending, so the source files themselves are not the reference for RT objects.
#[test]
fn a_planning_study_is_stored_byte_identical_and_indexed() {
    let app = App::spawn();
    let source = tempfile::tempdir().expect("tempdir");
    let spec = StudySpec::planning_ct(100, 7);
    let study = synth::write_study(&spec, source.path()).expect("generate");
    assert_eq!(study.files.len(), 103);
    let paths: Vec<PathBuf> = study.files.iter().map(|f| f.path.clone()).collect();
    let output = app.storescu(&paths);
    assert_success(&output, "storescu");
    app.wait_for_log("stored=103");
    let sent = ReferenceScp::start().received(&paths, &[]);
    assert_eq!(sent.len(), 103);

    let db = app.db();
    let stored: HashMap<String, (String, String, String)> = db
        .prepare(
            "SELECT sop_instance_uid, file_path, sop_class_uid, calling_ae_title FROM instances",
        )
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?))))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(stored.len(), 103);
    for file in &study.files {
        let (path, sop_class, calling) = stored
            .get(&file.sop_instance_uid)
            .expect("instance indexed");
        assert_eq!(sop_class, &file.sop_class_uid);
        assert_eq!(calling, "CTSIM");
        let stored_path = app.data_dir().join(path);
        assert_eq!(
            dataset_bytes(&stored_path),
            sent[&file.sop_instance_uid],
            "{} differs from what was sent",
            file.path.display()
        );
        if file.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2" {
            // CT slices have no sequences: storescu sends the file's data set unchanged.
            assert_eq!(dataset_bytes(&stored_path), dataset_bytes(&file.path));
        }
        // The stored file opens as a normal Part-10 file.
        dicom_object::open_file(&stored_path).expect("stored file re-opens");
    }

    let (description, patient_id, patient_name, study_date): (String, String, String, String) = db
        .query_row(
            "SELECT study_description, patient_id, patient_name, study_date FROM studies WHERE study_instance_uid = ?1",
            [&study.study_instance_uid],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .expect("study row");
    assert_eq!(description, spec.study_description);
    assert_eq!(patient_id, spec.patient_id);
    assert_eq!(patient_name, spec.patient_name);
    assert_eq!(study_date.len(), 8);
    let modalities: Vec<(String, i64)> = db
        .prepare(
            "SELECT se.modality, count(*) FROM instances i JOIN series se USING (series_instance_uid)
             GROUP BY se.modality ORDER BY se.modality",
        )
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(
        modalities,
        vec![
            ("CT".into(), 100),
            ("RTDOSE".into(), 1),
            ("RTPLAN".into(), 1),
            ("RTSTRUCT".into(), 1)
        ]
    );
    let (station, series_description, frame_of_reference): (String, String, String) = db
        .query_row(
            "SELECT station_name, series_description, frame_of_reference_uid FROM series WHERE modality = 'CT'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("CT series");
    assert_eq!(station, spec.station_name);
    assert_eq!(series_description, spec.series[0].description);
    assert!(!frame_of_reference.is_empty());
    // Image position, instance number and image type come from the header of each slice.
    let (positions, numbered, typed): (i64, i64, i64) = db
        .query_row(
            "SELECT count(DISTINCT image_position_patient), count(instance_number), count(*) FILTER (WHERE image_type LIKE 'ORIGINAL%')
             FROM instances WHERE sop_class_uid = '1.2.840.10008.5.1.4.1.1.2'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("instance fields");
    assert_eq!((positions, numbered, typed), (100, 100, 100));
    let hashes_and_sizes: i64 = db
        .query_row(
            "SELECT count(*) FROM instances WHERE length(content_hash) = 64 AND file_size > 0
             AND transfer_syntax_uid = '1.2.840.10008.1.2.1' AND peer_address LIKE '127.0.0.1:%'
             AND called_ae_title = 'SIMGATE' AND received_at LIKE '20%Z'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(hashes_and_sizes, 103);
}

#[test]
fn procedure_codes_are_indexed_per_study() {
    let app = App::spawn();
    let source = tempfile::tempdir().expect("tempdir");
    let mut spec = StudySpec::planning_ct(3, 11);
    spec.with_rt_objects = false;
    spec.procedure_codes = vec![
        (
            "RPID6010".into(),
            "RADLEX".into(),
            "CT Treatment Planning Simple".into(),
        ),
        ("24627-2".into(), "LN".into(), "CT Chest".into()),
    ];
    let study = synth::write_study(&spec, source.path()).expect("generate");
    let paths: Vec<PathBuf> = study.files.iter().map(|f| f.path.clone()).collect();
    assert_success(&app.storescu(&paths), "storescu");
    let codes: Vec<(String, String, String, String)> = app
        .db()
        .prepare(
            "SELECT sequence, code_value, coding_scheme_designator, code_meaning FROM study_procedure_codes ORDER BY code_value",
        )
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(
        codes,
        vec![
            (
                "procedure".into(),
                "24627-2".into(),
                "LN".into(),
                "CT Chest".into()
            ),
            (
                "procedure".into(),
                "RPID6010".into(),
                "RADLEX".into(),
                "CT Treatment Planning Simple".into()
            ),
        ]
    );
}

#[test]
fn a_jpeg_compressed_instance_is_stored_as_received() {
    let app = App::spawn();
    let source = tempfile::tempdir().expect("tempdir");
    let mut spec = StudySpec::planning_ct(1, 3);
    spec.with_rt_objects = false;
    let study = synth::write_study(&spec, source.path()).expect("generate");
    let compressed = source.path().join("jpeg.dcm");
    let output = dcmtk("dcmcjpeg")
        .arg(&study.files[0].path)
        .arg(&compressed)
        .output()
        .expect("dcmcjpeg");
    assert_success(&output, "dcmcjpeg");
    let sent_ts = transfer_syntax(&compressed);
    assert!(
        sent_ts.starts_with("1.2.840.10008.1.2.4."),
        "dcmcjpeg wrote {sent_ts}"
    );

    // -xs: propose JPEG lossless (the file's syntax) first, as a simulator sending compressed data does.
    assert_success(
        &app.storescu_as("CTSIM", std::slice::from_ref(&compressed), &["-xs"]),
        "storescu",
    );
    let (path, ts): (String, String) = app
        .db()
        .query_row(
            "SELECT file_path, transfer_syntax_uid FROM instances",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("row");
    assert_eq!(ts, sent_ts);
    let stored = app.data_dir().join(path);
    assert_eq!(transfer_syntax(&stored), sent_ts);
    assert_eq!(dataset_bytes(&stored), dataset_bytes(&compressed));
}

#[test]
fn four_storescu_processes_in_parallel_all_get_stored() {
    let app = App::spawn();
    let source = tempfile::tempdir().expect("tempdir");
    let spec = StudySpec::ct_simulator_upload(20, 2, 20, 5);
    let study = synth::write_study(&spec, source.path()).expect("generate");
    let total = study.files.len();
    let groups: Vec<Vec<PathBuf>> = (0..4)
        .map(|g| {
            study
                .files
                .iter()
                .skip(g)
                .step_by(4)
                .map(|f| f.path.clone())
                .collect()
        })
        .collect();
    let children: Vec<_> = groups
        .iter()
        .map(|files| {
            dcmtk("storescu")
                .args(["-aet", "CTSIM", "-aec", "SIMGATE", "127.0.0.1"])
                .arg(app.port.to_string())
                .args(files)
                .output()
        })
        .collect();
    for child in children {
        assert_success(&child.expect("storescu"), "parallel storescu");
    }
    assert_eq!(app.count("SELECT count(*) FROM instances") as usize, total);
    let files = crate::support::files_below(&app.data_dir().join("spool"));
    assert_eq!(files.len(), total);
}

#[test]
fn an_identical_resend_is_a_no_op_and_a_changed_one_replaces_the_file() {
    let app = App::spawn();
    let source = tempfile::tempdir().expect("tempdir");
    let mut spec = StudySpec::planning_ct(2, 21);
    spec.with_rt_objects = false;
    let study = synth::write_study(&spec, source.path()).expect("generate");
    let paths: Vec<PathBuf> = study.files.iter().map(|f| f.path.clone()).collect();
    assert_success(&app.storescu(&paths), "first send");
    assert_success(&app.storescu(&paths), "identical re-send");
    app.wait_for_log("identical=2");
    assert_eq!(app.count("SELECT count(*) FROM instances"), 2);
    assert_eq!(
        crate::support::files_below(&app.data_dir().join("spool")).len(),
        2
    );

    // Same SOP Instance UID, different content: the series description changed.
    let changed = source.path().join("changed.dcm");
    let output = dcmtk("dcmodify")
        .args(["-nb", "-m", "(0008,103E)=CHANGED"])
        .arg(&study.files[0].path)
        .output()
        .expect("dcmodify");
    assert_success(&output, "dcmodify");
    std::fs::copy(&study.files[0].path, &changed).expect("copy");
    assert_success(
        &app.storescu(std::slice::from_ref(&changed)),
        "changed re-send",
    );
    app.wait_for_log("replaced=1");
    assert_eq!(app.count("SELECT count(*) FROM instances"), 2);
    assert_eq!(app.count("SELECT count(*) FROM instance_replacements"), 1);
    let files = crate::support::files_below(&app.data_dir().join("spool"));
    assert_eq!(files.len(), 2, "the replaced file is removed: {files:?}");
    let path: String = app
        .db()
        .query_row(
            "SELECT file_path FROM instances WHERE sop_instance_uid = ?1",
            [&study.files[0].sop_instance_uid],
            |r| r.get(0),
        )
        .expect("row");
    assert_eq!(
        dataset_bytes(&app.data_dir().join(path)),
        dataset_bytes(&changed)
    );
}

/// One CT slice relabelled as `sop_class_uid` with dcmodify.
fn relabelled(source: &std::path::Path, sop_class_uid: &str) -> PathBuf {
    let mut spec = StudySpec::planning_ct(1, 9);
    spec.with_rt_objects = false;
    let study = synth::write_study(&spec, source).expect("generate");
    let output = dcmtk("dcmodify")
        .args(["-nb", "-m", &format!("(0008,0016)={sop_class_uid}")])
        .arg(&study.files[0].path)
        .output()
        .expect("dcmodify");
    assert_success(&output, "dcmodify");
    study.files[0].path.clone()
}

#[test]
fn an_unsupported_sop_class_is_refused_at_negotiation() {
    let app = App::spawn();
    let source = tempfile::tempdir().expect("tempdir");
    // A private storage class nobody configured.
    let file = relabelled(source.path(), "1.2.826.0.1.3680043.9999.1.1");
    let refused = app.storescu(&[file]);
    assert!(
        !refused.status.success(),
        "storescu should fail: {}",
        text(&refused)
    );
    assert_eq!(app.count("SELECT count(*) FROM instances"), 0);
    assert_success(&app.echoscu(), "echoscu after the refusal");
}

#[test]
fn every_standard_storage_class_is_accepted_unless_the_listener_is_restricted() {
    let source = tempfile::tempdir().expect("tempdir");
    // Ultrasound Image Storage: far from radiotherapy, but a standard storage class.
    let file = relabelled(source.path(), "1.2.840.10008.5.1.4.1.1.6.1");
    let open = App::spawn();
    assert_success(&open.storescu(std::slice::from_ref(&file)), "storescu");
    assert_eq!(open.count("SELECT count(*) FROM instances"), 1);
    let restricted = App::spawn_with("only_sop_classes = [\"1.2.840.10008.5.1.4.1.1.2\"]", "");
    assert!(!restricted.storescu(&[file]).status.success());
    assert_eq!(restricted.count("SELECT count(*) FROM instances"), 0);
}
