//! Store-and-forward with DCMTK storescp as the planning-system stand-in.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use simgate_synth::{self as synth, StudySpec, WrittenStudy};

use crate::support::{App, DEADLINE, Storescp, assert_success, dataset_bytes, free_port};

fn destination(name: &str, ae: &str, port: u16) -> String {
    format!(
        "[[destinations]]\nname = \"{name}\"\nae_title = \"{ae}\"\naddress = \"127.0.0.1:{port}\"\n"
    )
}

/// A gateway forwarding to the given destinations, with quick retries.
fn gateway(destinations: &str, forward_extra: &str) -> App {
    let config_tail = format!(
        "[forward]\ninitial_backoff = \"100ms\"\nmax_backoff = \"500ms\"\nidle_release = \"2s\"\n{forward_extra}\n{destinations}"
    );
    App::spawn_configured(
        "",
        "",
        &format!("\n{config_tail}").replacen("[forward]", "[forward]", 1),
    )
}

fn generate(spec: &StudySpec) -> (tempfile::TempDir, WrittenStudy) {
    let dir = tempfile::tempdir().expect("tempdir");
    let study = synth::write_study(spec, dir.path()).expect("generate");
    (dir, study)
}

fn paths(study: &WrittenStudy) -> Vec<PathBuf> {
    study.files.iter().map(|f| f.path.clone()).collect()
}

fn queue(app: &App) -> Value {
    let output = app.cli(&["queue", "--json"]);
    assert_success(&output, "simgate queue --json");
    serde_json::from_slice(&output.stdout).expect("queue JSON")
}

fn destination_queue(app: &App, name: &str) -> Value {
    queue(app)["destinations"]
        .as_array()
        .expect("destinations")
        .iter()
        .find(|d| d["destination"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Polls the queue until `check` holds for a destination.
fn wait_queue(app: &App, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let q = destination_queue(app, name);
        if check(&q) {
            return q;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{what}: queue of {name} is {q:#}\nlog:\n{}",
            app.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn drained(q: &Value, sent: u64) -> bool {
    q["pending"] == 0 && q["in_flight"] == 0 && q["dead"] == 0 && q["sent"].as_u64() == Some(sent)
}

/// The stored data set of each instance, by SOP Instance UID (what the simulator sent).
fn stored(app: &App) -> HashMap<String, Vec<u8>> {
    let db = app.db();
    let rows: Vec<(String, String)> = db
        .prepare("SELECT sop_instance_uid, file_path FROM instances")
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    rows.into_iter()
        .map(|(sop, path)| (sop, dataset_bytes(&app.data_dir().join(path))))
        .collect()
}

#[test]
fn a_planning_study_reaches_the_tps_byte_identical_and_in_order() {
    let tps = Storescp::start("TPS");
    let app = gateway(&destination("tps", "TPS", tps.port), "");
    let (_dir, study) = generate(&StudySpec::planning_ct(200, 301));
    assert_eq!(study.files.len(), 203);
    assert_success(&app.storescu(&paths(&study)), "storescu");
    let upload_ended = std::time::SystemTime::now();
    // Pipelined: the series started going out while it was still arriving.
    let first_at_tps = tps
        .files()
        .iter()
        .filter_map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .min()
        .expect("something arrived during the upload");
    assert!(
        first_at_tps < upload_ended,
        "nothing reached the TPS before the upload ended"
    );
    tps.wait_for(203);
    wait_queue(&app, "tps", "drain", |q| drained(q, 203));
    // One association carried everything, the RT objects after the CT series included (no
    // new association per new SOP class); another one only after the first was released idle
    // (a pause in a loaded upload). It is released once idle.
    app.wait_for_log("idle: releasing the association");
    let log = app.log();
    let associations = log.matches("requesting association").count();
    let last_request = log.rfind("requesting association").expect("an association");
    let idle_releases_before = log[..last_request]
        .matches("idle: releasing the association")
        .count();
    assert!(
        associations <= 1 + idle_releases_before,
        "{associations} associations for 203 instances, {idle_releases_before} idle releases between them"
    );

    let received = tps.datasets();
    let sent = stored(&app);
    assert_eq!(received.len(), 203);
    for file in &study.files {
        assert_eq!(
            received.get(&file.sop_instance_uid),
            sent.get(&file.sop_instance_uid),
            "{} differs at the TPS",
            file.path.display()
        );
    }
    // Arrival order within the series: storescp writes one file after the other, so the
    // modification times of the CT slices follow their instance numbers.
    let mut slices: Vec<(std::time::SystemTime, i64)> = tps
        .files()
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("CT."))
        })
        .map(|p| {
            let object = dicom_object::open_file(&p).expect("open");
            let number = object
                .element(dicom_dictionary_std::tags::INSTANCE_NUMBER)
                .expect("instance number")
                .to_int::<i64>()
                .expect("int");
            (
                std::fs::metadata(&p)
                    .and_then(|m| m.modified())
                    .expect("mtime"),
                number,
            )
        })
        .collect();
    slices.sort();
    let numbers: Vec<i64> = slices.iter().map(|(_, n)| *n).collect();
    assert_eq!(
        numbers,
        (1..=200).collect::<Vec<_>>(),
        "slices arrived out of order"
    );
    // Forwarding, its blocking threads included, ran below the receiving side's priority.
    let nice_of = |name: &str| -> Vec<i64> {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", app.pid())).expect("tasks");
        tasks
            .filter_map(|t| {
                let t = t.ok()?.path();
                let comm = std::fs::read_to_string(t.join("comm")).ok()?;
                let stat = std::fs::read_to_string(t.join("stat")).ok()?;
                // Field 19, counted after the parenthesised command name.
                let after_name = &stat[stat.rfind(')')? + 2..];
                (comm.trim() == name).then(|| after_name.split(' ').nth(16)?.parse().ok())?
            })
            .collect()
    };
    let forwarding = nice_of("forward");
    assert!(forwarding.len() >= 3, "forwarding threads: {forwarding:?}");
    assert!(forwarding.iter().all(|n| *n == 10), "{forwarding:?}");
    let receiving = nice_of("tokio-rt-worker");
    assert!(
        !receiving.is_empty() && receiving.iter().all(|n| *n == 0),
        "{receiving:?}"
    );
}

#[test]
fn a_tps_that_is_down_gets_everything_once_it_comes_up() {
    let port = free_port();
    let app = gateway(&destination("tps", "TPS", port), "");
    let mut spec = StudySpec::planning_ct(30, 302);
    spec.with_rt_objects = false;
    let (_dir, study) = generate(&spec);
    assert_success(
        &app.storescu(&paths(&study)),
        "storescu while the TPS is down",
    );
    app.wait_for_log("will retry");
    let waiting = destination_queue(&app, "tps");
    assert!(
        waiting["pending"].as_u64().unwrap_or(0) + waiting["in_flight"].as_u64().unwrap_or(0) > 0,
        "{waiting:#}"
    );
    assert!(
        waiting["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("connect"),
        "{waiting:#}"
    );

    let tps = Storescp::start_on("TPS", port, &[]);
    tps.wait_for(30);
    wait_queue(&app, "tps", "drain", |q| drained(q, 30));
    assert_eq!(tps.datasets().len(), 30);
}

#[test]
fn transient_faults_are_retried_and_delivered() {
    let port = free_port();
    let app = gateway(
        &destination("tps", "TPS", port),
        "response_timeout = \"1s\"",
    );
    let mut spec = StudySpec::planning_ct(5, 303);
    spec.with_rt_objects = false;
    let (_dir, study) = generate(&spec);

    // The TPS aborts every association after the C-STORE request.
    let aborting = Storescp::start_on("TPS", port, &["--abort-after"]);
    assert_success(&app.storescu(&paths(&study)), "storescu");
    app.wait_for_log_count("will retry", 2);
    aborting.stop();
    // Then it takes so long to answer that simgate's response timeout fires.
    let sleeping = Storescp::start_on("TPS", port, &["--sleep-during", "3"]);
    app.wait_for_log("no response within");
    sleeping.stop();
    // Then it works again: everything arrives.
    let tps = Storescp::start_on("TPS", port, &[]);
    tps.wait_for(5);
    let q = wait_queue(&app, "tps", "drain", |q| drained(q, 5));
    assert_eq!(q["dead"], 0, "transient faults never dead-letter");
}

#[test]
fn a_permanent_refusal_is_dead_lettered_and_queue_retry_delivers_once_fixed() {
    let port = free_port();
    let app = gateway(&destination("tps", "TPS", port), "max_attempts = 2");
    let mut spec = StudySpec::planning_ct(3, 304);
    spec.with_rt_objects = false;
    let (_dir, study) = generate(&spec);

    let refusing = Storescp::start_on("TPS", port, &["--refuse"]);
    assert_success(&app.storescu(&paths(&study)), "storescu");
    let q = wait_queue(&app, "tps", "dead letters", |q| q["dead"] == 3);
    assert!(
        q["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("rejected (permanent)"),
        "{q:#}"
    );
    let dead = app.cli(&["queue", "--state", "dead"]);
    assert!(String::from_utf8_lossy(&dead.stdout).contains(&study.study_instance_uid));
    refusing.stop();

    let tps = Storescp::start_on("TPS", port, &[]);
    let retried = app.cli(&["queue", "retry", "--dead"]);
    assert_success(&retried, "queue retry --dead");
    assert!(String::from_utf8_lossy(&retried.stdout).contains("Queued 3"));
    tps.wait_for(3);
    wait_queue(&app, "tps", "drain", |q| drained(q, 3));
}

#[test]
fn forwarding_resumes_after_a_kill_and_delivers_everything() {
    // A slow TPS (one second after each instance) so the kill lands mid-way.
    let port = free_port();
    let slow = Storescp::start_on("TPS", port, &["--sleep-after", "1"]);
    let mut app = gateway(&destination("tps", "TPS", port), "");
    let mut spec = StudySpec::planning_ct(20, 305);
    spec.with_rt_objects = false;
    let (_dir, study) = generate(&spec);
    assert_success(&app.storescu(&paths(&study)), "storescu");
    let start = Instant::now();
    while slow.files().len() < 2 {
        assert!(start.elapsed() < DEADLINE, "forwarding did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    app.kill9();
    let early = slow.datasets();
    slow.stop();
    assert!(early.len() < 20, "the kill came too late to prove anything");

    let tps = Storescp::start_on("TPS", port, &[]);
    app.start();
    wait_queue(&app, "tps", "drain after restart", |q| drained(q, 20));
    let mut received = tps.datasets();
    for (sop, bytes) in early {
        received.entry(sop).or_insert(bytes);
    }
    let sent = stored(&app);
    assert_eq!(received.len(), 20, "every instance reached the TPS");
    for file in &study.files {
        assert_eq!(
            received.get(&file.sop_instance_uid),
            sent.get(&file.sop_instance_uid)
        );
    }
}

#[test]
fn a_dead_destination_does_not_hold_up_the_other() {
    let tps = Storescp::start("TPS");
    let nowhere = free_port();
    let destinations = format!(
        "{}{}",
        destination("tps", "TPS", tps.port),
        destination("archive", "ARCHIVE", nowhere)
    );
    let app = gateway(&destinations, "");
    let mut spec = StudySpec::planning_ct(40, 306);
    spec.with_rt_objects = false;
    let (_dir, study) = generate(&spec);
    assert_success(&app.storescu(&paths(&study)), "storescu");
    tps.wait_for(40);
    wait_queue(&app, "tps", "drain", |q| drained(q, 40));
    let archive = destination_queue(&app, "archive");
    assert_eq!(archive["sent"], 0);
    assert_eq!(
        archive["pending"].as_u64().unwrap_or(0) + archive["in_flight"].as_u64().unwrap_or(0),
        40,
        "{archive:#}"
    );
    // Re-sending a study by hand works too.
    let output = app.cli(&[
        "forward",
        "--study",
        &study.study_instance_uid,
        "--destination",
        "tps",
    ]);
    assert_success(&output, "forward --study");
    wait_queue(&app, "tps", "re-sent", |q| drained(q, 40));
}

/// A DCMTK negotiation profile that accepts CT Image Storage only.
const CT_ONLY_PROFILE: &str = "\
[[TransferSyntaxes]]
[Uncompressed]
TransferSyntax1 = LocalEndianExplicit
TransferSyntax2 = LittleEndianImplicit

[[PresentationContexts]]
[CTOnly]
PresentationContext1 = CTImageStorage\\Uncompressed

[[Profiles]]
[CT]
PresentationContexts = CTOnly
";

#[test]
fn a_destination_that_refuses_a_sop_class_dead_letters_it_and_keeps_the_rest_flowing() {
    let port = free_port();
    let app = gateway(&destination("tps", "TPS", port), "max_attempts = 2");
    let profile = app.dir.path().join("ct-only.cfg");
    std::fs::write(&profile, CT_ONLY_PROFILE).expect("profile");
    let ct_only = Storescp::start_on("TPS", port, &["-xf", profile.to_str().expect("path"), "CT"]);
    let (_dir, study) = generate(&StudySpec::planning_ct(5, 307));
    assert_success(&app.storescu(&paths(&study)), "storescu");
    // The five CT slices arrive; RT Structure Set, Plan and Dose are refused for good.
    ct_only.wait_for(5);
    let q = wait_queue(&app, "tps", "dead letters", |q| {
        q["dead"] == 3 && q["sent"] == 5
    });
    assert!(
        q["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("no accepted presentation context"),
        "{q:#}"
    );
    ct_only.stop();

    // Fixed: the destination accepts everything now; the dead letters go on request.
    let tps = Storescp::start_on("TPS", port, &[]);
    assert_success(
        &app.cli(&["queue", "retry", "--dead", "--destination", "tps"]),
        "queue retry",
    );
    tps.wait_for(3);
    wait_queue(&app, "tps", "drain", |q| drained(q, 8));
}

#[test]
fn spool_files_are_deleted_after_retention_only_once_every_destination_has_them() {
    let tps = Storescp::start("TPS");
    let nowhere = free_port();
    let destinations = format!(
        "{}[[destinations]]\nname = \"archive\"\nae_title = \"ARCHIVE\"\naddress = \"127.0.0.1:{nowhere}\"\nmodalities = [\"RTSTRUCT\"]\n",
        destination("tps", "TPS", tps.port)
    );
    let app = App::spawn_configured(
        "",
        "retention = \"1s\"",
        &format!("[forward]\ninitial_backoff = \"100ms\"\nmax_backoff = \"500ms\"\n{destinations}"),
    );
    let (_dir, study) = generate(&StudySpec::planning_ct(4, 308));
    assert_success(&app.storescu(&paths(&study)), "storescu");
    tps.wait_for(7);
    // Six instances only go to the TPS, which has them: their files go after the retention.
    // The RT Structure Set also waits for the archive, which is down: its file stays.
    let start = Instant::now();
    loop {
        let deleted = app.count("SELECT count(*) FROM instances WHERE file_deleted_at IS NOT NULL");
        if deleted == 6 {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{deleted} files deleted\n{}",
            app.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let remaining = crate::support::files_below(&app.data_dir().join("spool"));
    assert_eq!(remaining.len(), 1, "{remaining:?}");
    let kept: String = app
        .db()
        .query_row(
            "SELECT sop_class_uid FROM instances WHERE file_deleted_at IS NULL",
            [],
            |r| r.get(0),
        )
        .expect("kept row");
    assert_eq!(kept, "1.2.840.10008.5.1.4.1.1.481.3");
    assert_eq!(
        app.count("SELECT count(*) FROM instances"),
        7,
        "index rows stay"
    );
}

/// A 128 MiB instance (an 8192 x 8192 16-bit slice, the size class of a large RT Dose or a
/// multi-frame object) is received, stored, indexed and forwarded without the gateway's memory
/// growing with it: data PDVs stream to the file, and the forwarder streams the file.
#[test]
fn a_large_instance_streams_through_with_bounded_memory() {
    let tps = Storescp::start("TPS");
    let app = gateway(&destination("tps", "TPS", tps.port), "");
    let mut spec = StudySpec::planning_ct(1, 309);
    spec.with_rt_objects = false;
    spec.rows = 8192;
    spec.columns = 8192;
    let (_dir, study) = generate(&spec);
    let size = std::fs::metadata(&study.files[0].path).expect("size").len();
    assert!(size > 128 * 1024 * 1024, "{size}");
    assert_success(&app.storescu(&paths(&study)), "storescu");
    tps.wait_for(1);
    wait_queue(&app, "tps", "drain", |q| drained(q, 1));
    let sent = stored(&app);
    let received = tps.datasets();
    assert_eq!(
        received.get(&study.files[0].sop_instance_uid),
        sent.get(&study.files[0].sop_instance_uid)
    );
    assert_eq!(
        sent[&study.files[0].sop_instance_uid],
        dataset_bytes(&study.files[0].path)
    );
    let peak = app.peak_rss_bytes();
    eprintln!(
        "peak memory {} MiB for a {} MiB instance",
        peak >> 20,
        size >> 20
    );
    assert!(
        peak < 64 * 1024 * 1024,
        "peak memory {} MiB for a {} MiB instance",
        peak >> 20,
        size >> 20
    );
}

#[test]
fn a_retry_asked_for_wakes_a_forwarder_that_waits_to_probe_again() {
    // Probes two minutes apart: longer than the test waits, so only the retry can wake it.
    let port = free_port();
    let app = gateway(
        &destination("tps", "TPS", port),
        "probe_interval = \"120s\"",
    );
    let mut spec = StudySpec::planning_ct(3, 306);
    spec.with_rt_objects = false;
    let (_dir, study) = generate(&spec);
    assert_success(
        &app.storescu(&paths(&study)),
        "storescu while the TPS is down",
    );
    app.wait_for_log("probing with C-ECHO");
    let tps = Storescp::start_on("TPS", port, &[]);
    let retry = app.cli(&["queue", "retry", "--study", &study.study_instance_uid]);
    assert_success(&retry, "simgate queue retry");
    tps.wait_for(3);
    wait_queue(&app, "tps", "drain", |q| drained(q, 3));
    assert!(
        app.log().contains("retry asked for: trying now"),
        "{}",
        app.log()
    );
}
