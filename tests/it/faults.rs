//! Faults and contention: writes of other front ends during an upload, a full disk, a locked
//! database, a TPS that was down, an orphaned spool file, frozen storage. Each breaks
//! something real (a tmpfs, an ext4 image, a held SQLite lock, a stopped peer) and counts.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use simgate_synth::{self as synth, StudySpec, WrittenStudy};

use crate::http::{PASSWORD, user};
use crate::support::{App, DEADLINE, Mount, Storescp, assert_success, free_port, text};

fn generate(spec: &StudySpec) -> (tempfile::TempDir, WrittenStudy) {
    let dir = tempfile::tempdir().expect("tempdir");
    let study = synth::write_study(spec, dir.path()).expect("generate");
    (dir, study)
}

fn paths(study: &WrittenStudy) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = study.files.iter().map(|f| f.path.clone()).collect();
    paths.sort();
    paths
}

fn ct(slices: u32, seed: u64) -> StudySpec {
    let mut spec = StudySpec::planning_ct(slices, seed);
    spec.with_rt_objects = false;
    spec
}

/// `[forward]` with quick retries and one destination.
fn forwarding(port: u16, forward_extra: &str) -> String {
    format!(
        "[forward]\ninitial_backoff = \"100ms\"\nmax_backoff = \"500ms\"\nidle_release = \"1s\"\n{forward_extra}\n\
         [[destinations]]\nname = \"tps\"\nae_title = \"TPS\"\naddress = \"127.0.0.1:{port}\"\n"
    )
}

fn instances_of(app: &App, study: &str) -> i64 {
    app.count(&format!(
        "SELECT count(*) FROM instances i JOIN series s USING (series_instance_uid)
         WHERE s.study_instance_uid = '{study}'"
    ))
}

fn poll(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn cli_and_web_writes_during_an_upload_never_fail_a_c_store() {
    let users = user("curie", "physician");
    let app = App::spawn_full("", "", "", &users);
    // A study that needs a reason, for the writes to land on.
    let named = app.send_study(&StudySpec::ct_simulator_upload(2, 2, 1, 401));
    let (_dir, upload) = generate(&ct(400, 402));
    let files = paths(&upload);

    let (cli_ok, web_ok, sent) = std::thread::scope(|scope| {
        let sender = scope.spawn(|| app.storescu(&files));
        let cli = scope.spawn(|| {
            (0..50)
                .filter(|i| {
                    let note = format!("CLI reason {i}");
                    let output = app.cli(&[
                        "reason", &named, "--code", "other", "--note", &note, "--by", "curie",
                    ]);
                    if !output.status.success() {
                        eprintln!("CLI reason {i} failed: {}", text(&output));
                    }
                    output.status.success()
                })
                .count()
        });
        let web = scope.spawn(|| {
            let client = reqwest::blocking::Client::new();
            let url = format!(
                "http://127.0.0.1:{}/api/studies/{named}/reasons",
                app.http_port
            );
            (0..50)
                .filter(|i| {
                    let response = client
                        .post(&url)
                        .basic_auth("curie", Some(PASSWORD))
                        .json(&serde_json::json!({"code": "other", "note": format!("web reason {i}")}))
                        .send()
                        .expect("POST");
                    let created = response.status() == reqwest::StatusCode::CREATED;
                    if !created {
                        eprintln!("POST {i}: {}", response.status());
                    }
                    created
                })
                .count()
        });
        (
            cli.join().expect("cli"),
            web.join().expect("web"),
            sender.join().expect("storescu"),
        )
    });
    assert_success(&sent, "storescu during CLI and web writes");
    assert_eq!(
        instances_of(&app, &upload.study_instance_uid),
        400,
        "every instance of the upload is stored"
    );
    assert!(
        !app.log().contains("C-STORE refused"),
        "a C-STORE was refused:\n{}",
        app.log()
    );
    assert_eq!(
        (cli_ok, web_ok),
        (50, 50),
        "every CLI call and POST succeeds"
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM study_reasons WHERE study_instance_uid = '{named}'"
        )),
        100
    );
    assert_eq!(
        app.count("SELECT count(*) FROM audit_log WHERE action = 'document-reason'"),
        100
    );
    assert_eq!(
        app.count("SELECT count(*) FROM audit_log WHERE remote_address LIKE '%control socket%'"),
        50,
        "the CLI's writes went through the gateway's control socket"
    );
}

#[test]
fn a_full_disk_answers_a700_with_the_os_error_and_recovers_once_space_is_freed() {
    let Some(fs) = Mount::tmpfs(24) else {
        return;
    };
    let storage = fs.dir.join("data");
    let app = App::spawn_in(&storage, "");
    // Fill the file system but for about 3 MB.
    let filler = fs.dir.join("filler");
    let free = {
        let out = std::process::Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&fs.dir)
            .output()
            .expect("df");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse::<u64>().ok())
            .expect("free bytes")
    };
    std::fs::write(&filler, vec![0u8; (free - 3 * 1024 * 1024) as usize]).expect("filler");
    // 20 slices of about 512 KB: most do not fit.
    let (_dir, study) = generate(&ct(20, 411));
    let files = paths(&study);
    let _ = app.storescu(&files);
    let stored = instances_of(&app, &study.study_instance_uid);
    assert!(stored < 20, "all 20 instances fit in 3 MB?");
    let log = app.log();
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("C-STORE refused"))
        .collect();
    assert!(!refusals.is_empty(), "no refusal logged:\n{log}");
    for line in &refusals {
        assert!(line.contains("0xA700"), "not 0xA700: {line}");
        assert!(
            line.contains("No space left on device") || line.contains("disk is full"),
            "neither the OS's nor SQLite's words: {line}"
        );
    }
    assert!(
        refusals
            .iter()
            .any(|l| l.contains("No space left on device (os error 28)")),
        "no refusal carries the OS error:\n{}",
        refusals.join("\n")
    );
    let integrity: String = app
        .db()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(integrity, "ok");

    // Space again: the same upload goes through without a restart.
    std::fs::remove_file(&filler).expect("free the space");
    assert_success(&app.storescu(&files), "storescu once space is freed");
    assert_eq!(instances_of(&app, &study.study_instance_uid), 20);
}

/// InstanceNumber of each file storescp received, in arrival order (the files' times).
fn arrival_order(tps: &Storescp) -> Vec<i64> {
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = tps
        .files()
        .into_iter()
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .collect();
    files.sort();
    files
        .iter()
        .map(|(_, path)| {
            let object = dicom_object::open_file(path).expect("received file");
            object
                .element(dicom_dictionary_std::tags::INSTANCE_NUMBER)
                .expect("InstanceNumber")
                .to_int::<i64>()
                .expect("a number")
        })
        .collect()
}

#[test]
fn a_database_locked_during_forwarding_delays_delivery_but_loses_and_reorders_nothing() {
    // Each instance takes the TPS a second, so the lock falls in the middle of forwarding.
    let tps = Storescp::start_on("TPS", free_port(), &["--sleep-after", "1"]);
    let app = App::spawn_configured("", "", &forwarding(tps.port, ""));
    let (_dir, study) = generate(&ct(8, 421));
    assert_success(&app.storescu(&paths(&study)), "storescu");
    poll("the first delivery", DEADLINE, || !tps.files().is_empty());
    // Held longer than the writer's busy timeout: recording outcomes fails for a while.
    let lock = app.db();
    lock.execute_batch("BEGIN IMMEDIATE")
        .expect("take the write lock");
    std::thread::sleep(Duration::from_secs(7));
    lock.execute_batch("ROLLBACK").expect("release the lock");
    drop(lock);
    tps.wait_for(8);
    poll("every row recorded as sent", DEADLINE, || {
        app.count("SELECT count(*) FROM forward_queue WHERE state = 'sent'") == 8
    });
    assert_eq!(
        app.count("SELECT count(*) FROM forward_queue WHERE state <> 'sent'"),
        0
    );
    assert!(
        app.log().contains("cannot record a forward attempt"),
        "the lock never got in the way: the test proves nothing"
    );
    assert_eq!(arrival_order(&tps), (1..=8).collect::<Vec<_>>());
    assert_eq!(
        app.count("SELECT count(*) FROM forward_queue WHERE attempts <> 1"),
        0,
        "an instance was sent twice"
    );
}

#[test]
fn a_tps_back_after_thirty_seconds_gets_its_first_instance_within_five() {
    let port = free_port();
    let app = App::spawn_configured("", "", &forwarding(port, "probe_interval = \"2s\""));
    let (_dir, study) = generate(&ct(5, 431));
    assert_success(
        &app.storescu(&paths(&study)),
        "storescu while the TPS is down",
    );
    app.wait_for_log("probing with C-ECHO");
    std::thread::sleep(Duration::from_secs(30));
    let tps = Storescp::start_on("TPS", port, &[]);
    let back = Instant::now();
    poll("the first delivery", DEADLINE, || !tps.files().is_empty());
    let first = back.elapsed();
    eprintln!(
        "first delivery {:.1} s after the TPS came back",
        first.as_secs_f64()
    );
    assert!(
        first < Duration::from_secs(8),
        "first delivery {first:?} after the TPS came back"
    );
    tps.wait_for(5);
}

#[test]
fn an_orphaned_spool_file_is_indexed_and_forwarded_at_start() {
    // A file as simgate writes it, taken from another gateway's spool.
    let source = App::spawn();
    let (_dir, study) = generate(&ct(3, 441));
    assert_success(&source.storescu(&paths(&study)), "storescu");
    let spooled: Vec<PathBuf> = crate::support::files_below(&source.data_dir().join("spool"));
    assert_eq!(spooled.len(), 3);

    let tps = Storescp::start("TPS");
    let mut app = App::spawn_configured("", "", &forwarding(tps.port, ""));
    app.signal("TERM");
    assert!(app.wait_exit().success());
    for file in &spooled {
        let relative = file
            .strip_prefix(source.data_dir())
            .expect("under the source's storage");
        let target = app.data_dir().join(relative);
        std::fs::create_dir_all(target.parent().expect("shard")).expect("shard");
        std::fs::copy(file, &target).expect("orphan");
    }
    // And one that is not what its name says: it must not be indexed.
    let corrupt = app
        .data_dir()
        .join("spool/00")
        .join(format!("{}.dcm", "0".repeat(64)));
    std::fs::create_dir_all(corrupt.parent().expect("shard")).expect("shard");
    std::fs::copy(&spooled[0], &corrupt).expect("corrupt copy");
    app.start();
    let line = app.wait_for_log("spool reconciled");
    assert!(line.contains("indexed=3"), "{line}");
    assert!(line.contains("quarantined=1"), "{line}");
    assert_eq!(instances_of(&app, &study.study_instance_uid), 3);
    tps.wait_for(3);
    assert!(
        app.data_dir()
            .join("quarantine")
            .join(corrupt.file_name().expect("name"))
            .exists()
    );
}

#[test]
fn index_rows_a_power_failure_takes_back_are_written_again_from_the_spool() {
    // An instance's index row commits without waiting for the disk (its spool file is the
    // flushed record), so a power failure can take back the last rows. Stronger than that:
    // the whole index goes back to before the upload, the spool files stay. Every
    // acknowledged instance must be indexed again at start, queued and delivered.
    let tps_port = free_port();
    let mut app = App::spawn_configured("", "", &forwarding(tps_port, ""));
    app.signal("TERM");
    assert!(app.wait_exit().success());
    let database = app.data_dir().join("simgate.db");
    let before_upload = app.data_dir().join("before-upload.db");
    std::fs::copy(&database, &before_upload).expect("copy of the index");
    assert!(
        !app.data_dir().join("simgate.db-wal").exists(),
        "a clean stop leaves the whole index in the database file"
    );

    app.start();
    let (_dir, study) = generate(&ct(20, 461));
    // The TPS is down: the rows stay queued, as they would be when the power goes.
    assert_success(&app.storescu(&paths(&study)), "storescu");
    assert_eq!(instances_of(&app, &study.study_instance_uid), 20);
    app.kill9();
    for log in ["simgate.db-wal", "simgate.db-shm"] {
        let _ = std::fs::remove_file(app.data_dir().join(log));
    }
    std::fs::rename(&before_upload, &database).expect("index as before the upload");
    assert_eq!(app.count("SELECT count(*) FROM instances"), 0);
    assert_eq!(app.count("SELECT count(*) FROM forward_queue"), 0);

    let tps = Storescp::start_on("TPS", tps_port, &[]);
    app.start();
    let line = app.wait_for_log("spool reconciled");
    assert!(line.contains("indexed=20"), "{line}");
    assert!(line.contains("quarantined=0"), "{line}");
    assert_eq!(instances_of(&app, &study.study_instance_uid), 20);
    tps.wait_for(20);
    let delivered = tps.datasets();
    for file in &study.files {
        assert_eq!(
            delivered.get(&file.sop_instance_uid),
            Some(&crate::support::dataset_bytes(&file.path)),
            "{} reached the TPS unchanged",
            file.sop_instance_uid
        );
    }
}

#[test]
fn a_file_cut_short_under_its_final_name_is_quarantined_and_the_resend_is_stored() {
    // A file under its final name whose content is cut short (copied in half, or written by
    // a file system that lost its tail), with no index row: it must neither be indexed nor
    // stand in for the instance when the sender sends it again.
    let source = App::spawn();
    let (_dir, study) = generate(&ct(1, 451));
    assert_success(&source.storescu(&paths(&study)), "storescu");
    let spooled: Vec<PathBuf> = crate::support::files_below(&source.data_dir().join("spool"));
    assert_eq!(spooled.len(), 1);
    let bytes = std::fs::read(&spooled[0]).expect("stored file");

    let mut app = App::spawn();
    app.signal("TERM");
    assert!(app.wait_exit().success());
    let relative = spooled[0]
        .strip_prefix(source.data_dir())
        .expect("under the source's storage");
    let cut = app.data_dir().join(relative);
    std::fs::create_dir_all(cut.parent().expect("shard")).expect("shard");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("cut copy");
    app.start();
    let line = app.wait_for_log("spool reconciled");
    assert!(line.contains("quarantined=1"), "{line}");
    assert!(line.contains("indexed=0"), "{line}");
    assert!(!cut.exists(), "the cut file left its final name");
    // The sender, never answered, sends again: stored whole under that name.
    assert_success(&app.storescu(&paths(&study)), "the re-send");
    assert_eq!(instances_of(&app, &study.study_instance_uid), 1);
    assert_eq!(std::fs::read(&cut).expect("stored again"), bytes);
}

#[test]
fn healthz_answers_within_two_seconds_when_the_storage_is_frozen() {
    let Some(fs) = Mount::ext4(64) else {
        return;
    };
    let app = App::spawn_in(&fs.dir.join("data"), "");
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let url = format!("http://127.0.0.1:{}/healthz", app.http_port);
    assert_eq!(client.get(&url).send().expect("healthz").status(), 200);
    fs.freeze();
    let asked = Instant::now();
    let response = client.get(&url).send();
    let took = asked.elapsed();
    fs.thaw();
    let response = response.expect("an answer while frozen");
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().expect("JSON");
    assert!(
        body["storage"]["problem"]
            .as_str()
            .unwrap_or("")
            .contains("storage"),
        "{body:#}"
    );
    assert!(took < Duration::from_millis(2500), "healthz took {took:?}");
    // Thawed, it recovers (the stalled probe finishes first).
    poll("healthz ok again", DEADLINE, || {
        client.get(&url).send().is_ok_and(|r| r.status() == 200)
    });
}

#[test]
fn a_second_gateway_on_the_same_storage_folder_refuses_to_start() {
    let app = App::spawn();
    let second = std::process::Command::new(env!("CARGO_BIN_EXE_simgate"))
        .args(["serve", "--config"])
        .arg(&app.config_path)
        .output()
        .expect("second simgate");
    assert!(!second.status.success(), "a second gateway started");
    assert!(
        text(&second).contains("another simgate is serving this storage folder"),
        "{}",
        text(&second)
    );
    assert_success(&app.echoscu(), "the first one keeps serving");
}
