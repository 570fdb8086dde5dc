//! Storage Commitment Push Model: pynetdicom as the CT simulator's SCU, the report on the
//! same association, on a new one, for unknown instances, and across a kill -9.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Stdio};

use crate::support::{
    App, DEADLINE, Storescp, assert_success, free_port, python_peer, spawn_lines,
};

/// A small study written to `dir`: its files and the (class:uid) arguments for the peer.
fn small_study(dir: &std::path::Path, seed: u64) -> (Vec<PathBuf>, Vec<String>) {
    let mut spec = simgate_synth::StudySpec::planning_ct(3, seed);
    spec.with_rt_objects = false;
    spec.rows = 64;
    spec.columns = 64;
    let study = simgate_synth::write_study(&spec, dir).expect("generate");
    let paths = study.files.iter().map(|f| f.path.clone()).collect();
    let instances = study
        .files
        .iter()
        .map(|f| format!("{}:{}", f.sop_class_uid, f.sop_instance_uid))
        .collect();
    (paths, instances)
}

/// A small study sent to the gateway; (class:uid) arguments for the peer script.
fn send_small_study(app: &App, seed: u64) -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let (paths, instances) = small_study(dir.path(), seed);
    assert_success(&app.storescu(&paths), "storescu");
    instances
}

fn report(output: &std::process::Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap_or("");
    serde_json::from_str(last).unwrap_or_else(|_| {
        panic!(
            "no report from the peer:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// The peer's next output line that starts with one of `prefixes` (its log lines skipped).
fn next_line(lines: &std::sync::mpsc::Receiver<String>, prefixes: &[&str]) -> String {
    next_line_or(lines, prefixes, String::new)
}

/// As [`next_line`]; a timeout also shows `context()` (simgate's log).
fn next_line_or(
    lines: &std::sync::mpsc::Receiver<String>,
    prefixes: &[&str],
    context: impl Fn() -> String,
) -> String {
    let start = std::time::Instant::now();
    loop {
        let left = DEADLINE.saturating_sub(start.elapsed());
        let line = lines.recv_timeout(left).unwrap_or_else(|_| {
            panic!(
                "no line starting with {prefixes:?} from the peer; simgate's log:\n{}",
                context()
            )
        });
        if prefixes.iter().any(|p| line.starts_with(p)) {
            return line;
        }
    }
}

const UNKNOWN: &str = "1.2.840.10008.5.1.4.1.1.2:2.25.999999999999999999999";

#[test]
fn the_report_comes_on_the_same_association_and_names_an_unknown_instance_as_failed() {
    let app = App::spawn();
    let mut instances = send_small_study(&app, 501);
    instances.push(UNKNOWN.to_string());
    let output = python_peer("commitment_scu.py")
        .args(["--mode", "same", "--port", &app.port.to_string()])
        .args(&instances)
        .output()
        .expect("run the peer");
    let report = report(&output);
    assert!(output.status.success(), "{report}");
    assert_eq!(report["association"], "same", "{report}");
    assert_eq!(report["event_type"], 2, "some failed: event type 2");
    assert_eq!(
        report["committed"].as_array().map(Vec::len),
        Some(3),
        "{report}"
    );
    assert_eq!(
        report["failed"],
        serde_json::json!([["2.25.999999999999999999999", 0x0112]]),
        "unknown instance: no such object instance"
    );
    assert_eq!(report["retrieve_ae_title"], "SIMGATE");
    app.wait_for_log("storage commitment reported on the requester's association");
    assert_eq!(
        app.count("SELECT count(*) FROM commitment_requests WHERE state = 'reported'"),
        1
    );
}

/// Starts the peer in `new` mode on a port of the OS's choosing; returns it, its output
/// lines and that port. The peer waits for simgate's port on its standard input.
fn start_requester(
    instances: &[String],
    wait_s: u32,
) -> (Child, std::sync::mpsc::Receiver<String>, u16) {
    let mut peer = python_peer("commitment_scu.py");
    peer.args(["--mode", "new", "--wait", &wait_s.to_string()])
        .args(instances)
        .stdin(Stdio::piped());
    let (child, lines) = spawn_lines(peer);
    let listening = next_line(&lines, &["listening"]);
    let port = listening
        .trim_start_matches("listening ")
        .parse()
        .expect("the peer's port");
    (child, lines, port)
}

fn requester_table(port: u16) -> String {
    format!(
        "\n[[storage_commitment.requesters]]\nae_title = \"CTSIM\"\naddress = \"127.0.0.1:{port}\"\n"
    )
}

/// Tells the waiting peer simgate's port: it sends the N-ACTION then.
fn go(child: &mut Child, port: u16) {
    let stdin = child.stdin.as_mut().expect("the peer's stdin");
    writeln!(stdin, "{port}").expect("write the port");
    stdin.flush().expect("flush");
}

#[test]
fn the_report_comes_on_a_new_association_when_the_requester_released() {
    // The peer listens first (on a port of the OS's choosing, which goes into simgate's
    // config), then names the instances of a study generated beforehand.
    let dir = tempfile::tempdir().expect("tempdir");
    let (paths, instances) = small_study(dir.path(), 502);
    let (mut child, lines, listen) = start_requester(&instances, 60);
    let app = App::spawn_configured("", "", &requester_table(listen));
    assert_success(&app.storescu(&paths), "storescu");
    go(&mut child, app.port);
    let report: serde_json::Value =
        serde_json::from_str(&next_line_or(&lines, &["{"], || app.log())).expect("json");
    assert!(child.wait().expect("peer").success(), "{report}");
    assert_eq!(report["association"], "new", "{report}");
    assert_eq!(report["event_type"], 1, "all committed: event type 1");
    assert_eq!(report["committed"].as_array().map(Vec::len), Some(3));
    app.wait_for_log("storage commitment reported on a new association");
}

#[test]
fn a_report_due_when_the_gateway_is_killed_arrives_after_the_restart() {
    // Committed only once delivered to the TPS, which is down: the report cannot be made
    // before the kill.
    let dir = tempfile::tempdir().expect("tempdir");
    let (paths, instances) = small_study(dir.path(), 503);
    let (mut child, lines, listen) = start_requester(&instances, 90);
    let tps_port = free_port();
    let tables = format!(
        "\n[storage_commitment]\ncommitted_when = \"delivered\"\n{requester}\
         [forward]\ninitial_backoff = \"200ms\"\nmax_backoff = \"1s\"\nprobe_interval = \"300ms\"\nmax_attempts = 1000\n\
         [[destinations]]\nname = \"tps\"\nae_title = \"TPS\"\naddress = \"127.0.0.1:{tps_port}\"\n",
        requester = requester_table(listen)
    );
    let mut app = App::spawn_configured("", "", &tables);
    assert_success(&app.storescu(&paths), "storescu");
    go(&mut child, app.port);
    let requested = next_line(&lines, &["requested", "{"]);
    assert!(requested.starts_with("requested"), "{requested}");
    app.wait_for_log("storage commitment requested");
    assert_eq!(
        app.count("SELECT count(*) FROM commitment_requests WHERE state = 'pending'"),
        1
    );
    app.kill9();
    let tps = Storescp::start_on("TPS", tps_port, &[]);
    app.start();
    tps.wait_for(3);
    let line = next_line(&lines, &["{"]);
    let report: serde_json::Value = serde_json::from_str(&line).expect("json");
    assert_eq!(report["association"], "new", "{report}");
    assert_eq!(report["event_type"], 1, "{report}");
    assert_eq!(report["committed"].as_array().map(Vec::len), Some(3));
    assert!(child.wait().expect("peer").success());
    assert_eq!(
        app.count("SELECT count(*) FROM commitment_requests WHERE state = 'reported'"),
        1
    );
}
