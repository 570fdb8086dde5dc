//! `simgate backup` during an upload and `simgate restore` into another gateway's folder:
//! every instance acknowledged before the backup, and every documented reason, come back.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use simgate_synth::{self as synth, StudySpec};

use crate::support::{App, DEADLINE, assert_success, configured_user, dataset_bytes, dcmtk, text};

#[test]
fn a_backup_taken_during_an_upload_restores_every_acknowledged_instance_and_reason() {
    let app = App::spawn_full("", "", "", &configured_user("curie", "physician"));
    let source = tempfile::tempdir().expect("tempdir");
    let mut first = StudySpec::planning_ct(10, 491);
    first.with_rt_objects = false;
    first.study_description = "BREAST SIM LOCAL".into();
    let first = synth::write_study(&first, source.path().join("a").as_path()).expect("study a");
    let first_paths: Vec<PathBuf> = first.files.iter().map(|f| f.path.clone()).collect();
    assert_success(&app.storescu(&first_paths), "storescu, study a");
    let documented = app.cli(&[
        "reason",
        &first.study_instance_uid,
        "--code",
        "other",
        "--note",
        "site protocol, kept for the backup test",
        "--by",
        "curie",
    ]);
    assert_success(&documented, "simgate reason");

    // A second upload, still arriving while the backup runs.
    let mut second = StudySpec::planning_ct(300, 492);
    second.with_rt_objects = false;
    let second = synth::write_study(&second, source.path().join("b").as_path()).expect("study b");
    let mut upload = dcmtk("storescu")
        .args(["-aet", "CTSIM", "-aec", "SIMGATE", "127.0.0.1"])
        .arg(app.port.to_string())
        .args(second.files.iter().map(|f| &f.path))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("storescu, study b");
    let start = Instant::now();
    while app.count("SELECT count(*) FROM instances") < 40 {
        assert!(start.elapsed() < DEADLINE, "the upload did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Each of these was indexed before it was acknowledged: a lower bound of what was.
    let acknowledged_before = app.count("SELECT count(*) FROM instances");
    let backup_dir = tempfile::tempdir().expect("tempdir");
    let backup = backup_dir.path().join("simgate-backup");
    let made = app.cli(&["backup", backup.to_str().expect("path")]);
    assert_success(&made, "simgate backup");
    assert!(
        upload.wait().expect("storescu").success(),
        "the upload went on unharmed"
    );
    assert_eq!(app.count("SELECT count(*) FROM instances"), 310);
    assert!(
        text(&made).contains("backed up the index"),
        "{}",
        text(&made)
    );

    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(backup.join("manifest.json")).expect("manifest"))
            .expect("manifest JSON");
    let snapshot = manifest["indexed_instances"].as_i64().expect("count");
    assert!(
        (acknowledged_before..310).contains(&snapshot),
        "the index was copied mid-upload: {snapshot} instances, {acknowledged_before} before"
    );
    for file in manifest["files"].as_array().expect("files") {
        let bytes = std::fs::read(backup.join(file["path"].as_str().expect("path"))).expect("file");
        assert_eq!(
            hex::encode(Sha256::digest(&bytes)),
            file["sha256"].as_str().expect("sha")
        );
    }
    let again = app.cli(&["backup", backup.to_str().expect("path")]);
    assert!(
        !again.status.success(),
        "a backup never writes into a non-empty folder"
    );

    // Into another gateway's folder: refused while it runs, and while it holds anything.
    let mut other = App::spawn();
    let refused = other.cli(&["restore", backup.to_str().expect("path")]);
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("gateway is running"),
        "{}",
        text(&refused)
    );
    other.signal("TERM");
    assert!(other.wait_exit().success());
    let refused = other.cli(&["restore", backup.to_str().expect("path")]);
    assert!(text(&refused).contains("not empty"), "{}", text(&refused));
    let restored = other.cli(&["restore", backup.to_str().expect("path"), "--force"]);
    assert_success(&restored, "simgate restore --force");
    other.start();
    other.wait_for_log("spool reconciled");

    let instances = other.count("SELECT count(*) FROM instances");
    assert!(
        instances >= acknowledged_before,
        "{instances} restored, {acknowledged_before} acknowledged before the backup"
    );
    for file in &first.files {
        let stored: String = other
            .db()
            .query_row(
                "SELECT file_path FROM instances WHERE sop_instance_uid = ?1",
                [&file.sop_instance_uid],
                |r| r.get(0),
            )
            .expect("an instance of study a");
        assert_eq!(
            dataset_bytes(&other.data_dir().join(stored)),
            dataset_bytes(&file.path)
        );
    }
    // Every restored row has its file.
    let db = other.db();
    let mut rows = db
        .prepare("SELECT file_path FROM instances")
        .expect("prepare");
    for path in rows.query_map([], |r| r.get::<_, String>(0)).expect("rows") {
        let path = other.data_dir().join(path.expect("row"));
        assert!(path.exists(), "{} restored", path.display());
    }
    let study = other.cli(&["study", &first.study_instance_uid, "--json"]);
    assert_success(&study, "simgate study");
    let study: serde_json::Value = serde_json::from_slice(&study.stdout).expect("JSON");
    let reasons = study["naming"]["reasons"].as_array().expect("reasons");
    assert!(
        reasons
            .iter()
            .any(|r| r["note"] == "site protocol, kept for the backup test"
                && r["documented_by"] == "curie"),
        "{study}"
    );

    // A backup altered after it was made is refused, naming the file.
    other.signal("TERM");
    assert!(other.wait_exit().success());
    let altered = backup_dir.path().join("altered");
    assert!(
        std::process::Command::new("cp")
            .args(["-a"])
            .arg(&backup)
            .arg(&altered)
            .status()
            .expect("cp")
            .success()
    );
    let victim = altered.join(manifest["files"][0]["path"].as_str().expect("path"));
    let mut bytes = std::fs::read(&victim).expect("a backed-up file");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&victim, &bytes).expect("alter");
    let refused = other.cli(&["restore", altered.to_str().expect("path"), "--force"]);
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("not what the manifest says")
            && text(&refused).contains(victim.to_str().expect("path")),
        "{}",
        text(&refused)
    );
    // Checked before anything was replaced: the earlier restore is still there whole.
    other.start();
    assert_eq!(other.count("SELECT count(*) FROM instances"), instances);
}

#[test]
fn backups_live_outside_the_storage_folder_and_a_folder_doctor_touched_counts_as_empty() {
    let mut app = App::spawn();
    let mut spec = StudySpec::planning_ct(3, 493);
    spec.with_rt_objects = false;
    app.send_study(&spec);
    let data = app.data_dir();

    // Inside the storage folder: refused, nothing made.
    let inside = data.join("mybackup");
    let refused = app.cli(&["backup", inside.to_str().expect("path")]);
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("one inside the other"),
        "{}",
        text(&refused)
    );
    assert!(!inside.exists(), "no folder made");

    // A good backup, then a copy of it put inside the storage folder: a forced restore from
    // there would empty the folder it reads from. Refused, and the gateway's data untouched.
    let backup_dir = tempfile::tempdir().expect("tempdir");
    let backup = backup_dir.path().join("b");
    assert_success(
        &app.cli(&["backup", backup.to_str().expect("path")]),
        "backup",
    );
    let copied = data.join("copied-backup");
    let cp = std::process::Command::new("cp")
        .arg("-r")
        .arg(&backup)
        .arg(&copied)
        .status()
        .expect("cp");
    assert!(cp.success());
    app.signal("TERM");
    assert!(app.wait_exit().success());
    let refused = app.cli(&["restore", copied.to_str().expect("path"), "--force"]);
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("one inside the other"),
        "{}",
        text(&refused)
    );
    assert!(
        copied.join("manifest.json").exists(),
        "the copy is still there"
    );
    assert!(data.join("simgate.db").exists(), "the index is still there");
    app.start();
    assert_eq!(app.count("SELECT count(*) FROM instances"), 3);

    // A new gateway's folder that only `doctor` has looked at (it leaves `tmp/` behind) is
    // empty enough to restore into without --force.
    let fresh = tempfile::tempdir().expect("tempdir");
    let mut other = App::spawn_in(fresh.path(), "");
    other.signal("TERM");
    assert!(other.wait_exit().success());
    for entry in std::fs::read_dir(fresh.path()).expect("list") {
        let path = entry.expect("entry").path();
        if path.file_name().is_some_and(|n| n != "simgate.lock") {
            if path.is_dir() {
                std::fs::remove_dir_all(&path).expect("remove");
            } else {
                std::fs::remove_file(&path).expect("remove");
            }
        }
    }
    let _ = other.cli(&["doctor"]);
    let not_a_backup = other.cli(&["restore", data.to_str().expect("path")]);
    assert!(
        text(&not_a_backup).contains("is not a backup made by `simgate backup`"),
        "{}",
        text(&not_a_backup)
    );
    let restored = other.cli(&["restore", backup.to_str().expect("path")]);
    assert_success(&restored, "restore into a folder doctor touched");
    other.start();
    assert_eq!(other.count("SELECT count(*) FROM instances"), 3);
}
