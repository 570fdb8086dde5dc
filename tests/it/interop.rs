//! Clinical interoperability: what a CT simulator sends besides images, and forwarding that
//! keeps every byte, against DCMTK peers.

use std::collections::HashMap;
use std::path::PathBuf;

use serde_json::Value;
use simgate_synth::{self as synth, StudySpec};

use crate::support::{App, ReferenceScp, Storescp, assert_success, dataset_bytes, dcmtk};

fn stored_files(app: &App) -> HashMap<String, PathBuf> {
    app.db()
        .prepare("SELECT sop_instance_uid, file_path FROM instances")
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get::<_, String>(1)?)))
        .expect("query")
        .map(|row| {
            let (uid, path) = row.expect("row");
            (uid, app.data_dir().join(path))
        })
        .collect()
}

fn forwarding_to(port: u16, forward_extra: &str) -> String {
    format!(
        "[forward]\ninitial_backoff = \"100ms\"\nmax_backoff = \"500ms\"\nidle_release = \"1s\"\n{forward_extra}\n\
         [[destinations]]\nname = \"tps\"\nae_title = \"TPS\"\naddress = \"127.0.0.1:{port}\"\n"
    )
}

#[test]
fn a_mixed_simulator_batch_is_stored_byte_identical_forwarded_and_leaves_the_verdict_alone() {
    let tps = Storescp::start("TPS");
    let app = App::spawn_configured("", "", &forwarding_to(tps.port, ""));
    let source = tempfile::tempdir().expect("tempdir");
    let mut spec = StudySpec::planning_ct(3, 501);
    spec.study_description = "CT Treatment Planning  Intermediate".into();
    spec.with_rt_objects = false;
    let study = synth::write_study(&spec, source.path()).expect("generate");
    let companions = synth::write_companions(&spec, source.path()).expect("companions");
    let mut paths: Vec<PathBuf> = study
        .files
        .iter()
        .chain(&companions)
        .map(|f| f.path.clone())
        .collect();
    paths.sort();
    assert_eq!(paths.len(), 8);

    // One association, as a simulator sends: nothing may be refused.
    assert_success(&app.storescu(&paths), "storescu with the companions");
    let sent = ReferenceScp::start().received(&paths, &[]);
    assert_eq!(sent.len(), 8);
    let stored = stored_files(&app);
    for file in study.files.iter().chain(&companions) {
        let path = stored
            .get(&file.sop_instance_uid)
            .unwrap_or_else(|| panic!("{} not stored", file.path.display()));
        assert_eq!(
            dataset_bytes(path),
            sent[&file.sop_instance_uid],
            "{} stored differently from what storescp received",
            file.path.display()
        );
    }
    tps.wait_for(8);
    let delivered = tps.datasets();
    for file in study.files.iter().chain(&companions) {
        assert_eq!(
            delivered.get(&file.sop_instance_uid),
            Some(&sent[&file.sop_instance_uid]),
            "{} did not reach the TPS byte for byte",
            file.path.display()
        );
    }

    let output = app.cli(&["studies", "--json"]);
    assert_success(&output, "studies");
    let list: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let row = &list["studies"][0];
    assert_eq!(row["status"], "conforming", "{row:#}");
    assert_eq!(row["findings"].as_array().map(Vec::len), Some(0), "{row:#}");
    let detail: Value = serde_json::from_slice(
        &app.cli(&["study", &study.study_instance_uid, "--json"])
            .stdout,
    )
    .expect("JSON");
    let judged: Vec<(&str, &str)> = detail["series"]
        .as_array()
        .expect("series")
        .iter()
        .map(|s| {
            (
                s["series_description"].as_str().unwrap_or(""),
                s["verdict"].as_str().unwrap_or(""),
            )
        })
        .collect();
    let companions_named = [
        "Dose Report",
        "Patient Protocol",
        "Exam Protocol PDF",
        "Dose Info",
        "Raw data",
    ];
    for (description, verdict) in &judged {
        if companions_named.contains(description) {
            assert_eq!(*verdict, "not-judged", "{judged:?}");
        } else {
            assert_eq!(*verdict, "conforming", "{judged:?}");
        }
    }
}

/// Re-encodes `files` with dcmconv (`+ti` Implicit, `+te` Explicit, `+tb` Big Endian).
fn converted(files: &[PathBuf], option: &str, dir: &std::path::Path) -> Vec<PathBuf> {
    files
        .iter()
        .map(|file| {
            let out = dir.join(file.file_name().expect("name"));
            let status = dcmtk("dcmconv")
                .arg(option)
                .arg(file)
                .arg(&out)
                .status()
                .expect("dcmconv");
            assert!(status.success(), "dcmconv {option}");
            out
        })
        .collect()
}

#[test]
fn instances_reach_the_tps_in_their_stored_syntax_and_a_conversion_is_recorded() {
    let source = tempfile::tempdir().expect("tempdir");
    let mut spec = StudySpec::planning_ct(10, 511);
    spec.with_rt_objects = false;
    let study = synth::write_study(&spec, source.path()).expect("generate");
    let mut paths: Vec<PathBuf> = study.files.iter().map(|f| f.path.clone()).collect();
    paths.sort();
    let implicit_dir = tempfile::tempdir().expect("tempdir");
    let implicit = converted(&paths[5..], "+ti", implicit_dir.path());
    let explicit = &paths[..5];

    // A TPS that takes every syntax: each instance arrives exactly as it was stored.
    let tps = Storescp::start("TPS");
    let app = App::spawn_configured("", "", &forwarding_to(tps.port, ""));
    assert_success(&app.storescu_as("CTSIM", explicit, &["-R"]), "Explicit VR");
    tps.wait_for(5);
    assert_success(
        &app.storescu_as("CTSIM", &implicit, &["-xi"]),
        "Implicit VR",
    );
    tps.wait_for(10);
    let stored = stored_files(&app);
    let delivered = tps.datasets();
    for (uid, path) in &stored {
        assert_eq!(
            delivered.get(uid),
            Some(&dataset_bytes(path)),
            "{uid} was not forwarded byte for byte"
        );
    }
    for path in &implicit {
        assert_eq!(
            crate::support::transfer_syntax(
                &tps.files()
                    .into_iter()
                    .find(|f| {
                        f.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.ends_with(&uid_of(path)))
                    })
                    .expect("delivered")
            ),
            "1.2.840.10008.1.2",
            "an Implicit VR instance arrived re-encoded"
        );
    }
    // A Big Endian and a JPEG Lossless instance of another series, each in its own syntax.
    let mut other = StudySpec::planning_ct(2, 512);
    other.with_rt_objects = false;
    let other_dir = tempfile::tempdir().expect("tempdir");
    let others = synth::write_study(&other, other_dir.path()).expect("generate");
    let big_endian = converted(&[others.files[0].path.clone()], "+tb", implicit_dir.path());
    let jpeg = other_dir.path().join("jpeg.dcm");
    let status = dcmtk("dcmcjpeg")
        .arg(&others.files[1].path)
        .arg(&jpeg)
        .status()
        .expect("dcmcjpeg");
    assert!(status.success());
    assert_success(
        &app.storescu_as("CTSIM", &big_endian, &["-xb"]),
        "Big Endian",
    );
    assert_success(
        &app.storescu_as("CTSIM", std::slice::from_ref(&jpeg), &["-xs"]),
        "JPEG Lossless",
    );
    tps.wait_for(12);
    let stored = stored_files(&app);
    let delivered = tps.datasets();
    for (file, syntax) in [
        (&big_endian[0], "1.2.840.10008.1.2.2"),
        (&jpeg, "1.2.840.10008.1.2.4.70"),
    ] {
        let uid = uid_of(file);
        assert_eq!(crate::support::transfer_syntax(&stored[&uid]), syntax);
        assert_eq!(
            delivered.get(&uid),
            Some(&dataset_bytes(&stored[&uid])),
            "{syntax} not forwarded byte for byte"
        );
    }
    let none_converted: i64 = app.count("SELECT count(*) FROM forward_queue WHERE sent_as <> ''");
    assert_eq!(none_converted, 0);

    // A TPS that takes only Implicit VR: the Explicit ones are converted, and the row says so.
    let implicit_only = tempfile::tempdir().expect("tempdir");
    let profile = implicit_only.path().join("implicit.cfg");
    std::fs::write(
        &profile,
        "[[TransferSyntaxes]]\n[ImplicitOnly]\nTransferSyntax1 = LittleEndianImplicit\n\n\
         [[PresentationContexts]]\n[CT]\nPresentationContext1 = CTImageStorage\\ImplicitOnly\n\n\
         [[Profiles]]\n[Implicit]\nPresentationContexts = CT\n",
    )
    .expect("profile");
    let strict = Storescp::start_on(
        "STRICT",
        crate::support::free_port(),
        &["-xf", profile.to_str().expect("path"), "Implicit"],
    );
    let second = App::spawn_configured(
        "",
        "",
        &forwarding_to(strict.port, "").replace("\"TPS\"", "\"STRICT\""),
    );
    assert_success(
        &second.storescu_as("CTSIM", explicit, &["-R"]),
        "Explicit VR",
    );
    strict.wait_for(5);
    let notes: Vec<String> = second
        .db()
        .prepare("SELECT sent_as FROM forward_queue")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(notes.len(), 5);
    for note in &notes {
        assert!(
            note.contains("sent as Implicit VR Little Endian")
                && note.contains("refused Explicit VR Little Endian"),
            "{note:?}"
        );
    }
    let queue = second.cli(&["queue"]);
    assert!(
        crate::support::text(&queue).contains("sent as Implicit VR Little Endian"),
        "{}",
        crate::support::text(&queue)
    );
}

fn uid_of(path: &std::path::Path) -> String {
    let object = dicom_object::open_file(path).expect("file");
    object
        .meta()
        .media_storage_sop_instance_uid()
        .trim_end_matches('\0')
        .to_string()
}

#[test]
fn a_deflated_instance_is_walked_indexed_stored_as_received_and_forwarded_unchanged() {
    let tps = Storescp::start("TPS");
    let app = App::spawn_configured("", "", &forwarding_to(tps.port, ""));
    let source = tempfile::tempdir().expect("tempdir");
    let mut spec = StudySpec::planning_ct(1, 521);
    spec.with_rt_objects = false;
    let study = synth::write_study(&spec, source.path()).expect("generate");
    let out = tempfile::tempdir().expect("tempdir");
    let deflated = converted(&[study.files[0].path.clone()], "+td", out.path());
    assert_eq!(
        crate::support::transfer_syntax(&deflated[0]),
        "1.2.840.10008.1.2.1.99"
    );
    // -xd: propose Deflated Explicit VR Little Endian.
    assert_success(
        &app.storescu_as("CTSIM", &deflated, &["-xd"]),
        "storescu -xd",
    );
    let sent = ReferenceScp::start().received(&deflated, &["-xd"]);
    let uid = &study.files[0].sop_instance_uid;
    let stored = stored_files(&app);
    assert_eq!(
        crate::support::transfer_syntax(&stored[uid]),
        "1.2.840.10008.1.2.1.99"
    );
    assert_eq!(
        dataset_bytes(&stored[uid]),
        sent[uid],
        "not stored as received"
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM series WHERE study_instance_uid = '{}'",
            study.study_instance_uid
        )),
        1,
        "the inflated header was indexed"
    );
    tps.wait_for(1);
    assert_eq!(
        tps.datasets().get(uid),
        Some(&sent[uid]),
        "not forwarded unchanged"
    );
}

/// The Python of the venv `scripts/test.sh` makes (`SIMGATE_PYTHON` overrides), if pydicom
/// is importable there.
fn python_with_pydicom() -> Option<PathBuf> {
    let python = std::env::var_os("SIMGATE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/pyenv/bin/python")
        });
    let ok = std::process::Command::new(&python)
        .args(["-c", "import pydicom"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(python)
}

fn tag_text(object: &dicom_object::DefaultDicomObject, tag: dicom_core::Tag) -> Option<String> {
    let text = object.element(tag).ok()?.to_str().ok()?;
    let text = text.trim_end_matches(['\0', ' ']).to_string();
    (!text.is_empty()).then_some(text)
}

#[test]
fn pydicom_samples_that_storescp_accepts_are_stored_byte_for_byte() {
    let Some(python) = python_with_pydicom() else {
        eprintln!("SKIPPED: pydicom is not installed (scripts/test.sh makes target/pyenv)");
        return;
    };
    let listing = std::process::Command::new(&python)
        .args([
            "-c",
            "import pydicom.data as d\nfor f in sorted(d.get_testdata_files()): print(f)",
        ])
        .output()
        .expect("pydicom file list");
    let files: Vec<PathBuf> = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .collect();
    assert!(files.len() > 50, "pydicom lists only {} files", files.len());
    let reference = ReferenceScp::start();
    let app = App::spawn();
    let (mut accepted_by_storescp, mut checked) = (0, 0);
    let mut refused = Vec::new();
    for file in &files {
        let before: std::collections::HashSet<PathBuf> = reference.files().into_iter().collect();
        let output = dcmtk("storescu")
            .args(["-R", "-aet", "CTSIM", "-aec", "REFERENCE", "127.0.0.1"])
            .arg(reference.port.to_string())
            .arg(file)
            .output()
            .expect("storescu");
        let new: Vec<PathBuf> = reference
            .files()
            .into_iter()
            .filter(|f| !before.contains(f))
            .collect();
        if !output.status.success() || new.len() != 1 {
            continue;
        }
        let received = std::fs::read(&new[0]).expect("received");
        std::fs::remove_file(&new[0]).expect("clear for the next file");
        accepted_by_storescp += 1;
        let Ok(object) = dicom_object::from_reader(&received[128..]) else {
            continue;
        };
        use dicom_dictionary_std::tags;
        let (Some(_), Some(_), Some(sop)) = (
            tag_text(&object, tags::STUDY_INSTANCE_UID),
            tag_text(&object, tags::SERIES_INSTANCE_UID),
            tag_text(&object, tags::SOP_INSTANCE_UID),
        ) else {
            continue;
        };
        checked += 1;
        let sent = app.storescu_as("CTSIM", std::slice::from_ref(file), &["-R"]);
        let stored: Option<String> = app
            .db()
            .query_row(
                "SELECT file_path FROM instances WHERE sop_instance_uid = ?1",
                [&sop],
                |r| r.get(0),
            )
            .ok();
        match stored {
            Some(path)
                if sent.status.success()
                    && dataset_bytes(&app.data_dir().join(&path))
                        == crate::support::dataset_of(&received) => {}
            other => refused.push(format!(
                "{}: stored {other:?}; {}",
                file.display(),
                crate::support::text(&sent).lines().last().unwrap_or("")
            )),
        }
    }
    eprintln!(
        "pydicom samples: {} files, {accepted_by_storescp} accepted by storescp, {checked} with \
         Study/Series/SOP Instance UIDs, {} of those refused or changed by simgate",
        files.len(),
        refused.len()
    );
    assert!(checked > 40, "only {checked} files were compared");
    assert!(
        refused.is_empty(),
        "simgate refused or changed:\n{}",
        refused.join("\n")
    );
}
