//! Durability claims, proven by killing the process or refusing space and then counting.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use simgate_synth::{self as synth, StudySpec};

use crate::support::{
    App, DEADLINE, assert_success, dataset_bytes, dcmtk, files_below, spawn_lines, text,
};

/// Kills simgate with SIGKILL in the middle of an upload, restarts it, and checks that every
/// instance storescu saw acknowledged is present, readable and indexed, and that no file under
/// a final name is half-written.
#[test]
fn instances_acknowledged_before_a_kill_survive_the_restart() {
    let mut app = App::spawn();
    let source = tempfile::tempdir().expect("tempdir");
    let mut spec = StudySpec::planning_ct(400, 42);
    spec.with_rt_objects = false;
    let study = synth::write_study(&spec, source.path()).expect("generate");
    let by_path: std::collections::HashMap<PathBuf, String> = study
        .files
        .iter()
        .map(|f| (f.path.clone(), f.sop_instance_uid.clone()))
        .collect();

    let mut cmd = dcmtk("storescu");
    cmd.args(["-v", "-aet", "CTSIM", "-aec", "SIMGATE", "127.0.0.1"])
        .arg(app.port.to_string())
        .args(study.files.iter().map(|f| &f.path));
    let (mut storescu, lines) = spawn_lines(cmd);

    // storescu -v prints "Sending file: PATH" then "Received Store Response (Success)" for
    // each instance, in order, on one association.
    let mut acknowledged = Vec::new();
    let mut current: Option<PathBuf> = None;
    let start = Instant::now();
    while acknowledged.len() < 60 {
        let line = lines.recv_timeout(DEADLINE).expect("storescu output");
        if let Some(path) = line.strip_prefix("I: Sending file: ") {
            current = Some(PathBuf::from(path));
        } else if line.contains("Received Store Response (Success)") {
            acknowledged.push(current.take().expect("a file was being sent"));
        }
        assert!(start.elapsed() < DEADLINE, "upload too slow to test");
    }
    app.kill9();
    // Whatever storescu printed after the kill was acknowledged before it too.
    let _ = storescu.wait();
    while let Ok(line) = lines.recv_timeout(Duration::from_millis(200)) {
        if let Some(path) = line.strip_prefix("I: Sending file: ") {
            current = Some(PathBuf::from(path));
        } else if line.contains("Received Store Response (Success)") {
            acknowledged.push(current.take().expect("a file was being sent"));
        }
    }
    assert!(
        acknowledged.len() < study.files.len(),
        "the kill came too late to prove anything"
    );

    // Before restarting: every file under a final name is complete (its name is the SHA-256
    // of its data set), whatever the kill interrupted.
    for file in files_below(&app.data_dir().join("spool")) {
        let hash = hex::encode(Sha256::digest(dataset_bytes(&file)));
        assert_eq!(
            file.file_stem().and_then(|s| s.to_str()),
            Some(hash.as_str()),
            "half-written {}",
            file.display()
        );
    }

    app.start();
    assert!(
        files_below(&app.data_dir().join("tmp")).is_empty(),
        "unfinished files are removed at start"
    );
    let db = app.db();
    for path in &acknowledged {
        let sop = &by_path[path];
        let stored: String = db
            .query_row(
                "SELECT file_path FROM instances WHERE sop_instance_uid = ?1",
                [sop],
                |r| r.get(0),
            )
            .unwrap_or_else(|e| panic!("acknowledged {sop} not indexed after restart: {e}"));
        let stored = app.data_dir().join(stored);
        dicom_object::open_file(&stored).expect("acknowledged file readable");
        assert_eq!(dataset_bytes(&stored), dataset_bytes(path));
    }
    // The rest can be sent again and everything ends up stored once.
    let all: Vec<PathBuf> = study.files.iter().map(|f| f.path.clone()).collect();
    assert_success(&app.storescu(&all), "re-send after restart");
    assert_eq!(
        app.count("SELECT count(*) FROM instances") as usize,
        study.files.len()
    );
    assert_eq!(
        files_below(&app.data_dir().join("spool")).len(),
        study.files.len()
    );
}

#[test]
fn free_space_below_the_reserve_refuses_with_a700_until_lowered_and_reloaded() {
    let mut app = App::spawn_with("", "reserve_free_bytes = \"1000 PiB\"");
    let source = tempfile::tempdir().expect("tempdir");
    let mut spec = StudySpec::planning_ct(2, 77);
    spec.with_rt_objects = false;
    let study = synth::write_study(&spec, source.path()).expect("generate");
    let paths: Vec<PathBuf> = study.files.iter().map(|f| f.path.clone()).collect();

    let refused = app.storescu_as("CTSIM", &paths, &["-v"]);
    let output = text(&refused);
    assert!(
        output.contains("0xa700") || output.contains("Refused: OutOfResources"),
        "storescu should report 0xA700: {output}"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM instances"),
        0,
        "nothing indexed"
    );
    assert!(
        files_below(&app.data_dir().join("spool")).is_empty(),
        "nothing stored"
    );
    assert!(app.log().contains("below the reserve"), "the log says why");

    app.edit_config(|c| {
        c.replace(
            "reserve_free_bytes = \"1000 PiB\"",
            "reserve_free_bytes = \"0 B\"",
        )
    });
    app.signal("HUP");
    app.wait_for_log("configuration reloaded");
    let accepted = app.storescu(&paths);
    assert_success(&accepted, "storescu after the reserve was lowered");
    assert!(
        !text(&accepted).to_lowercase().contains("a700"),
        "{}",
        text(&accepted)
    );
    assert_eq!(app.count("SELECT count(*) FROM instances"), 2);
    // Same process throughout.
    assert!(app.log().contains("DICOM listener ready"));
    let status = {
        app.signal("TERM");
        app.wait_exit()
    };
    assert!(
        status.success(),
        "SIGTERM ends simgate with exit 0, got {status}"
    );
}

#[test]
fn sigterm_during_an_upload_stops_cleanly_and_keeps_every_acknowledged_instance() {
    let mut app = App::spawn();
    let source = tempfile::tempdir().expect("tempdir");
    let mut spec = StudySpec::planning_ct(300, 8);
    spec.with_rt_objects = false;
    let study = synth::write_study(&spec, source.path()).expect("generate");
    let mut cmd = dcmtk("storescu");
    cmd.args(["-v", "-aet", "CTSIM", "-aec", "SIMGATE", "127.0.0.1"])
        .arg(app.port.to_string())
        .args(study.files.iter().map(|f| &f.path));
    let (mut storescu, lines) = spawn_lines(cmd);
    let mut acknowledged = 0usize;
    while acknowledged < 20 {
        let line = lines.recv_timeout(DEADLINE).expect("storescu output");
        if line.contains("Received Store Response (Success)") {
            acknowledged += 1;
        }
    }
    app.signal("TERM");
    let status = app.wait_exit();
    assert!(status.success(), "exit status {status}");
    let _ = storescu.wait();
    while let Ok(line) = lines.recv_timeout(Duration::from_millis(200)) {
        if line.contains("Received Store Response (Success)") {
            acknowledged += 1;
        }
    }
    let log = app.log();
    assert!(
        log.contains("shutting down") && log.contains("stopped"),
        "{log}"
    );
    app.start();
    let indexed = app.count("SELECT count(*) FROM instances") as usize;
    assert!(
        indexed >= acknowledged,
        "{indexed} indexed < {acknowledged} acknowledged"
    );
}
