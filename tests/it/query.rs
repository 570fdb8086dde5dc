//! Query/Retrieve SCP: findscu (Study Root and Patient Root, every level, wildcards, date
//! ranges, UID lists), movescu to a storescp, getscu, C-CANCEL, and instances whose spool file
//! retention removed.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support::{App, Storescp, assert_success, dataset_bytes, dcmtk, free_port, text};

/// A study of `slices` small CT slices sent to the gateway; its written files.
fn send(
    app: &App,
    seed: u64,
    patient_id: &str,
    patient_name: &str,
    slices: u32,
) -> simgate_synth::WrittenStudy {
    let dir = tempfile::tempdir().expect("tempdir").keep();
    let mut spec = simgate_synth::StudySpec::planning_ct(slices, seed);
    spec.with_rt_objects = false;
    spec.rows = 64;
    spec.columns = 64;
    spec.patient_id = patient_id.into();
    spec.patient_name = patient_name.into();
    let study = simgate_synth::write_study(&spec, &dir).expect("generate");
    let paths: Vec<PathBuf> = study.files.iter().map(|f| f.path.clone()).collect();
    assert_success(&app.storescu(&paths), "storescu");
    study
}

/// Runs findscu (`-S` Study Root or `-P` Patient Root) with `-k` keys; the identifiers of the
/// matches, as dicom-object reads them.
fn find(app: &App, root: &str, keys: &[&str]) -> Vec<dicom_object::DefaultDicomObject> {
    let out = tempfile::tempdir().expect("tempdir");
    let mut cmd = dcmtk("findscu");
    cmd.args([root, "-aet", "TPS", "-aec", "SIMGATE", "-X", "-od"])
        .arg(out.path());
    for key in keys {
        cmd.args(["-k", key]);
    }
    let output = cmd
        .arg("127.0.0.1")
        .arg(app.port.to_string())
        .output()
        .expect("findscu");
    assert_success(&output, &format!("findscu {root} {keys:?}"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(out.path())
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| dicom_object::open_file(f).expect("a response identifier"))
        .collect()
}

fn value(object: &dicom_object::DefaultDicomObject, tag: dicom_core::Tag) -> String {
    object
        .element(tag)
        .ok()
        .and_then(|e| {
            e.to_str()
                .ok()
                .map(|s| s.trim_end_matches(['\0', ' ']).to_string())
        })
        .unwrap_or_default()
}

fn values(objects: &[dicom_object::DefaultDicomObject], tag: dicom_core::Tag) -> Vec<String> {
    let mut out: Vec<String> = objects.iter().map(|o| value(o, tag)).collect();
    out.sort();
    out
}

use dicom_dictionary_std::tags;

#[test]
fn findscu_study_root_and_patient_root_at_every_level() {
    let app = App::spawn();
    let a = send(&app, 601, "QR-A", "DOE^JANE", 3);
    let b = send(&app, 602, "QR-B", "ROE^RICHARD", 2);
    let series_a = a.files[0].series_instance_uid.clone();

    // Study Root, STUDY level: wildcard on the name (any case: PN), date range, UID list.
    let studies = find(
        &app,
        "-S",
        &[
            "QueryRetrieveLevel=STUDY",
            "PatientName=doe*",
            "StudyInstanceUID",
            "ModalitiesInStudy",
            "NumberOfStudyRelatedInstances",
        ],
    );
    assert_eq!(
        values(&studies, tags::STUDY_INSTANCE_UID),
        vec![a.study_instance_uid.clone()]
    );
    assert_eq!(value(&studies[0], tags::MODALITIES_IN_STUDY), "CT");
    assert_eq!(
        value(&studies[0], tags::NUMBER_OF_STUDY_RELATED_INSTANCES),
        "3"
    );
    assert_eq!(value(&studies[0], tags::RETRIEVE_AE_TITLE), "SIMGATE");
    let mut both = vec![a.study_instance_uid.clone(), b.study_instance_uid.clone()];
    both.sort();
    let in_range = find(
        &app,
        "-S",
        &[
            "QueryRetrieveLevel=STUDY",
            "StudyDate=20250301-20250331",
            "StudyInstanceUID",
        ],
    );
    assert_eq!(values(&in_range, tags::STUDY_INSTANCE_UID), both);
    let open_range = find(
        &app,
        "-S",
        &[
            "QueryRetrieveLevel=STUDY",
            "StudyDate=20250318-",
            "StudyInstanceUID",
        ],
    );
    assert!(open_range.is_empty(), "the studies are of 2025-03-17");
    let listed = find(
        &app,
        "-S",
        &[
            "QueryRetrieveLevel=STUDY",
            &format!("StudyInstanceUID={}\\{}", a.study_instance_uid, "1.2.3.4"),
            "PatientID",
        ],
    );
    assert_eq!(values(&listed, tags::PATIENT_ID), vec!["QR-A".to_string()]);
    let single_char = find(
        &app,
        "-S",
        &[
            "QueryRetrieveLevel=STUDY",
            "PatientID=QR-?",
            "StudyInstanceUID",
        ],
    );
    assert_eq!(single_char.len(), 2);

    // Study Root, SERIES and IMAGE levels under their parents.
    let series = find(
        &app,
        "-S",
        &[
            "QueryRetrieveLevel=SERIES",
            &format!("StudyInstanceUID={}", a.study_instance_uid),
            "SeriesInstanceUID",
            "Modality",
            "NumberOfSeriesRelatedInstances",
            "SeriesDescription",
        ],
    );
    assert_eq!(
        values(&series, tags::SERIES_INSTANCE_UID),
        vec![series_a.clone()]
    );
    assert_eq!(value(&series[0], tags::MODALITY), "CT");
    assert_eq!(
        value(&series[0], tags::NUMBER_OF_SERIES_RELATED_INSTANCES),
        "3"
    );
    assert_eq!(value(&series[0], tags::SERIES_DESCRIPTION), "PLANNING CT");
    let images = find(
        &app,
        "-S",
        &[
            "QueryRetrieveLevel=IMAGE",
            &format!("StudyInstanceUID={}", a.study_instance_uid),
            &format!("SeriesInstanceUID={series_a}"),
            "SOPInstanceUID",
            "InstanceNumber",
        ],
    );
    let mut expected: Vec<String> = a.files.iter().map(|f| f.sop_instance_uid.clone()).collect();
    expected.sort();
    assert_eq!(values(&images, tags::SOP_INSTANCE_UID), expected);
    let second = find(
        &app,
        "-S",
        &[
            "QueryRetrieveLevel=IMAGE",
            &format!("StudyInstanceUID={}", a.study_instance_uid),
            &format!("SeriesInstanceUID={series_a}"),
            "SOPInstanceUID",
            "InstanceNumber=2",
        ],
    );
    assert_eq!(second.len(), 1);

    // Patient Root: PATIENT, STUDY, SERIES, IMAGE.
    let patients = find(
        &app,
        "-P",
        &[
            "QueryRetrieveLevel=PATIENT",
            "PatientID=QR-*",
            "PatientName",
            "NumberOfPatientRelatedStudies",
        ],
    );
    assert_eq!(
        values(&patients, tags::PATIENT_NAME),
        vec!["DOE^JANE".to_string(), "ROE^RICHARD".to_string()]
    );
    assert_eq!(
        value(&patients[0], tags::NUMBER_OF_PATIENT_RELATED_STUDIES),
        "1"
    );
    let patient_studies = find(
        &app,
        "-P",
        &[
            "QueryRetrieveLevel=STUDY",
            "PatientID=QR-B",
            "StudyInstanceUID",
            "StudyDescription",
        ],
    );
    assert_eq!(
        values(&patient_studies, tags::STUDY_INSTANCE_UID),
        vec![b.study_instance_uid.clone()]
    );
    let patient_series = find(
        &app,
        "-P",
        &[
            "QueryRetrieveLevel=SERIES",
            "PatientID=QR-A",
            &format!("StudyInstanceUID={}", a.study_instance_uid),
            "SeriesInstanceUID",
        ],
    );
    assert_eq!(patient_series.len(), 1);
    let patient_images = find(
        &app,
        "-P",
        &[
            "QueryRetrieveLevel=IMAGE",
            "PatientID=QR-A",
            &format!("StudyInstanceUID={}", a.study_instance_uid),
            &format!("SeriesInstanceUID={series_a}"),
            "SOPInstanceUID",
        ],
    );
    assert_eq!(patient_images.len(), 3);

    // An unknown patient: no match, and success (findscu exits 0, checked in `find`).
    assert!(
        find(
            &app,
            "-P",
            &[
                "QueryRetrieveLevel=PATIENT",
                "PatientID=NOBODY",
                "PatientName"
            ]
        )
        .is_empty()
    );
    assert!(
        find(
            &app,
            "-S",
            &[
                "QueryRetrieveLevel=STUDY",
                "PatientName=NOBODY^*",
                "StudyInstanceUID"
            ]
        )
        .is_empty()
    );
    // What was asked is in the log.
    app.wait_for_log("C-FIND keys");
    let log = app.log();
    assert!(
        log.contains("(0010,0010)=doe*"),
        "the debug log says what was asked"
    );
    assert!(
        log.contains("keys=(0010,0010)=(given)"),
        "info lines leave the patient out: {log}"
    );
    assert!(log.contains("(0008,0020)=20250301-20250331"), "{log}");
}

/// The data set bytes of the files in a folder, by SOP Instance UID.
fn datasets_in(dir: &Path) -> std::collections::HashMap<String, Vec<u8>> {
    crate::support::files_below(dir)
        .into_iter()
        .map(|path| {
            let object = dicom_object::open_file(&path).expect("a received file");
            let uid = value(&object, tags::SOP_INSTANCE_UID);
            (uid, dataset_bytes(&path))
        })
        .collect()
}

fn sent_datasets(
    study: &simgate_synth::WrittenStudy,
) -> std::collections::HashMap<String, Vec<u8>> {
    study
        .files
        .iter()
        .map(|f| (f.sop_instance_uid.clone(), dataset_bytes(&f.path)))
        .collect()
}

fn movescu(app: &App, destination: &str, keys: &[&str], extra: &[&str]) -> Output {
    let mut cmd = dcmtk("movescu");
    cmd.args(["-S", "-aet", "TPS", "-aec", "SIMGATE", "-aem", destination])
        .args(extra);
    for key in keys {
        cmd.args(["-k", key]);
    }
    cmd.arg("127.0.0.1")
        .arg(app.port.to_string())
        .output()
        .expect("movescu")
}

#[test]
fn movescu_sends_a_study_to_a_configured_destination_byte_for_byte() {
    let tps_port = free_port();
    let tables = format!(
        "\n[[query_retrieve.move_destinations]]\nae_title = \"TPSQR\"\naddress = \"127.0.0.1:{tps_port}\"\n"
    );
    let app = App::spawn_configured("", "", &tables);
    let study = send(&app, 611, "QR-M", "MOVE^ME", 4);
    let tps = Storescp::start_on("TPSQR", tps_port, &[]);
    let keys = [
        "QueryRetrieveLevel=STUDY".to_string(),
        format!("StudyInstanceUID={}", study.study_instance_uid),
    ];
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let output = movescu(&app, "TPSQR", &keys, &["-v"]);
    assert_success(&output, "movescu");
    tps.wait_for(4);
    assert_eq!(
        datasets_in(tps.dir.path()),
        sent_datasets(&study),
        "moved byte for byte"
    );
    app.wait_for_log("C-MOVE ended");
    assert!(app.log().contains("completed=4"), "{}", app.log());

    // An AE title that is not configured: refused with 0xA801.
    let output = movescu(&app, "NOWHERE", &keys, &["-v"]);
    let said = text(&output);
    assert!(said.contains("MoveDestinationUnknown"), "{said}");

    // C-CANCEL after the first pending response: the move stops before the last instance.
    let many = send(&app, 612, "QR-C", "CANCEL^ME", 30);
    let keys = [
        "QueryRetrieveLevel=STUDY".to_string(),
        format!("StudyInstanceUID={}", many.study_instance_uid),
    ];
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let output = movescu(&app, "TPSQR", &keys, &["-d", "--cancel", "1"]);
    let said = text(&output);
    app.wait_for_log_count("C-MOVE ended", 2);
    assert!(
        app.log().contains("cancelled=true"),
        "{}\n{said}",
        app.log()
    );
}

#[test]
fn getscu_receives_a_series_on_its_own_association() {
    let app = App::spawn();
    let study = send(&app, 621, "QR-G", "GET^ME", 3);
    let out = tempfile::tempdir().expect("tempdir");
    let output = dcmtk("getscu")
        .args(["-S", "-aet", "TPS", "-aec", "SIMGATE", "-od"])
        .arg(out.path())
        .args(["-k", "QueryRetrieveLevel=SERIES"])
        .args([
            "-k",
            &format!("StudyInstanceUID={}", study.study_instance_uid),
        ])
        .args([
            "-k",
            &format!("SeriesInstanceUID={}", study.files[0].series_instance_uid),
        ])
        .arg("127.0.0.1")
        .arg(app.port.to_string())
        .output()
        .expect("getscu");
    assert_success(&output, "getscu");
    assert_eq!(
        datasets_in(out.path()),
        sent_datasets(&study),
        "got byte for byte"
    );
    app.wait_for_log("C-GET ended");
}

#[test]
fn instances_retention_removed_are_failed_sub_operations_with_a_reason() {
    let tps_port = free_port();
    let tables = format!(
        "\n[[query_retrieve.move_destinations]]\nae_title = \"TPSQR\"\naddress = \"127.0.0.1:{tps_port}\"\n"
    );
    let app = App::spawn_configured("", "retention = \"1s\"", &tables);
    let study = send(&app, 631, "QR-R", "GONE^AWAY", 2);
    let start = std::time::Instant::now();
    while app.count("SELECT count(*) FROM instances WHERE file_deleted_at IS NOT NULL") < 2 {
        assert!(
            start.elapsed() < crate::support::DEADLINE,
            "retention did not run"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _tps = Storescp::start_on("TPSQR", tps_port, &[]);
    let keys = [
        "QueryRetrieveLevel=STUDY".to_string(),
        format!("StudyInstanceUID={}", study.study_instance_uid),
    ];
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let output = movescu(&app, "TPSQR", &keys, &["-d"]);
    let said = text(&output);
    assert!(said.contains("retention removed the files"), "{said}");
    assert!(said.contains("Failed Suboperations          : 2"), "{said}");
    app.wait_for_log("C-MOVE ended");
    assert!(app.log().contains("failed=2"), "{}", app.log());
    // C-FIND still answers from the index, saying the files are gone.
    let images = find(
        &app,
        "-S",
        &[
            "QueryRetrieveLevel=IMAGE",
            &format!("StudyInstanceUID={}", study.study_instance_uid),
            &format!("SeriesInstanceUID={}", study.files[0].series_instance_uid),
            "SOPInstanceUID",
            "InstanceAvailability",
        ],
    );
    assert_eq!(
        values(&images, tags::INSTANCE_AVAILABILITY),
        vec!["UNAVAILABLE".to_string(); 2]
    );
}
