//! The safety gate end to end: storescu as the simulator, storescp as the TPS, the web page
//! as the admin who releases or rejects a held instance.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use simgate_synth::{self as synth, StudySpec, WrittenStudy};

use crate::http::{client, sign_in, url, user};
use crate::support::{App, DEADLINE, Storescp, assert_success, dcmtk, free_port};

fn generate(slices: u32, seed: u64) -> (tempfile::TempDir, WrittenStudy) {
    let mut spec = StudySpec::planning_ct(slices, seed);
    spec.with_rt_objects = false;
    let dir = tempfile::tempdir().expect("tempdir");
    let study = synth::write_study(&spec, dir.path()).expect("generate");
    (dir, study)
}

fn paths(study: &WrittenStudy) -> Vec<PathBuf> {
    study.files.iter().map(|f| f.path.clone()).collect()
}

/// `[safety]` for a quick test and one destination, with `destination_extra` lines.
fn tables(tps_port: u16, quiet: &str, destination_extra: &str) -> String {
    format!(
        "[safety]\nseries_quiet_period = \"{quiet}\"\nmin_planning_slices = 10\n\
         [forward]\ninitial_backoff = \"100ms\"\nidle_release = \"1s\"\n\
         [[destinations]]\nname = \"tps\"\nae_title = \"TPS\"\naddress = \"127.0.0.1:{tps_port}\"\n{destination_extra}\n"
    )
}

fn poll(what: &str, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn json_of(output: &std::process::Output, what: &str) -> Value {
    assert_success(output, what);
    serde_json::from_slice(&output.stdout).expect("JSON")
}

/// SOP Instance UIDs storescp received.
fn received(tps: &Storescp) -> Vec<String> {
    tps.datasets().into_keys().collect()
}

#[test]
fn a_planning_ct_with_a_missing_slice_gets_a_gap_finding_with_its_numbers() {
    let tps = Storescp::start_on("TPS", free_port(), &[]);
    let app = App::spawn_configured("", "", &tables(tps.port, "1s", ""));
    let (_dir, study) = generate(30, 1201);
    let mut files = paths(&study);
    // Slice 16 of 30 (index 15, z = 37.5) never reaches the gateway.
    files.remove(15);
    assert_success(&app.storescu(&files), "storescu");
    poll("the series check", || {
        app.count("SELECT count(*) FROM series WHERE geometry_checked_at IS NOT NULL") == 1
    });
    let detail: String = app
        .db()
        .query_row(
            "SELECT detail FROM safety_findings WHERE code = 'slice-gap'",
            [],
            |r| r.get(0),
        )
        .expect("one slice-gap finding");
    assert_eq!(
        detail,
        "gap of 5.0 mm between z = 35.0 and z = 40.0, expected 2.5 mm"
    );
    assert_eq!(app.count("SELECT count(*) FROM safety_findings"), 1);
    // A gap is not held by default: the rest flowed.
    tps.wait_for(29);
    assert!(app.log().contains("safety finding"));
    assert!(app.log().contains("code=slice-gap"));

    let studies = json_of(
        &app.cli(&["studies", "--status", "safety", "--json"]),
        "simgate studies --status safety",
    );
    let listed = studies["studies"].as_array().expect("studies");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["safety_findings"], 1);
    let detail = json_of(
        &app.cli(&["study", &study.study_instance_uid, "--json"]),
        "simgate study --json",
    );
    assert_eq!(detail["safety"]["findings"][0]["code"], "slice-gap");
    assert_eq!(detail["safety"]["series_checks"][0]["geometry"], "findings");

    let http = client();
    let api: Value = http
        .get(url(&app, "/api/safety"))
        .send()
        .expect("GET /api/safety")
        .json()
        .expect("JSON");
    assert_eq!(api["studies"][0]["findings"][0]["code"], "slice-gap");
    let metrics = http
        .get(url(&app, "/metrics"))
        .send()
        .expect("metrics")
        .text()
        .expect("text");
    assert!(
        metrics.contains("simgate_safety_findings_total{code=\"slice-gap\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("simgate_safety_findings_total{code=\"identity-mismatch\"} 0"));
}

/// Writes Patient ID `OTHER` into a copy of `file`, with DCMTK's dcmodify.
fn of_another_patient(file: &std::path::Path, dir: &std::path::Path) -> PathBuf {
    let copy = dir.join(file.file_name().expect("name"));
    std::fs::copy(file, &copy).expect("copy");
    let output = dcmtk("dcmodify")
        .args(["-nb", "-m", "(0010,0020)=OTHER"])
        .arg(&copy)
        .output()
        .expect("dcmodify");
    assert_success(&output, "dcmodify");
    copy
}

/// The csrf token of a page.
fn csrf(page: &str) -> String {
    page.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("csrf token in the page")
        .to_string()
}

#[test]
fn an_instance_of_another_patient_is_held_until_an_admin_releases_or_rejects_it() {
    let tps = Storescp::start_on("TPS", free_port(), &[]);
    let users = format!("{}{}", user("root", "admin"), user("curie", "physician"));
    let app = App::spawn_full("", "", &tables(tps.port, "30s", ""), &users);
    let (_dir, study) = generate(12, 1202);
    let modified = tempfile::tempdir().expect("tempdir");
    let mut files = paths(&study);
    files[3] = of_another_patient(&files[3], modified.path());
    files[7] = of_another_patient(&files[7], modified.path());
    let (released, rejected) = (
        study.files[3].sop_instance_uid.clone(),
        study.files[7].sop_instance_uid.clone(),
    );
    assert_success(&app.storescu(&files), "storescu");

    // The rest flows; the two wait, held.
    tps.wait_for(10);
    let queue = json_of(&app.cli(&["queue", "--json"]), "simgate queue --json");
    assert_eq!(queue["destinations"][0]["held"], 2, "{queue}");
    std::thread::sleep(Duration::from_secs(2));
    let got = received(&tps);
    assert_eq!(got.len(), 10);
    assert!(!got.contains(&released) && !got.contains(&rejected));
    let findings = app.count(
        "SELECT count(*) FROM safety_findings WHERE code = 'identity-mismatch' AND attribute = 'Patient ID'",
    );
    assert_eq!(findings, 2);
    let log = app.log();
    assert!(log.contains("code=identity-mismatch"), "{log}");
    assert!(!log.contains("OTHER"), "patient data in the log:\n{log}");

    let http = client();
    let study_page = format!("/studies/{}", study.study_instance_uid);
    // A physician sees what is held but cannot release it.
    let physician = sign_in(&app, &http, "curie");
    let page = http
        .get(url(&app, &study_page))
        .header("cookie", &physician)
        .send()
        .expect("study page")
        .text()
        .expect("text");
    assert!(page.contains("Held instances") && page.contains("an admin decides"));
    assert!(page.contains("Patient ID differs from the study"));
    let refused = http
        .post(url(&app, "/held"))
        .header("cookie", &physician)
        .form(&[
            ("csrf", csrf(&page).as_str()),
            ("study", &study.study_instance_uid),
            ("instance", &released),
            ("why", "looks fine"),
            ("decision", "release"),
        ])
        .send()
        .expect("post");
    assert_eq!(refused.status(), reqwest::StatusCode::FORBIDDEN);

    let admin = sign_in(&app, &http, "root");
    let page = http
        .get(url(&app, &study_page))
        .header("cookie", &admin)
        .send()
        .expect("study page")
        .text()
        .expect("text");
    assert!(page.contains(">Release<") && page.contains(">Reject<"));
    let token = csrf(&page);
    let decide = |instance: &str, decision: &str, why: &str| {
        http.post(url(&app, "/held"))
            .header("cookie", &admin)
            .form(&[
                ("csrf", token.as_str()),
                ("study", &study.study_instance_uid),
                ("instance", instance),
                ("destination", "tps"),
                ("why", why),
                ("decision", decision),
            ])
            .send()
            .expect("post")
    };
    let without_why = decide(&released, "release", " ");
    assert_eq!(without_why.status(), reqwest::StatusCode::BAD_REQUEST);
    assert_eq!(
        decide(
            &released,
            "release",
            "same patient, ID typed wrong at the console"
        )
        .status(),
        reqwest::StatusCode::SEE_OTHER
    );
    tps.wait_for(11);
    assert!(received(&tps).contains(&released));
    assert_eq!(
        decide(&rejected, "reject", "another patient's slice").status(),
        reqwest::StatusCode::SEE_OTHER
    );
    std::thread::sleep(Duration::from_secs(2));
    let got = received(&tps);
    assert_eq!(got.len(), 11);
    assert!(!got.contains(&rejected));
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM forward_queue WHERE sop_instance_uid = '{rejected}' AND state = 'rejected'"
        )),
        1
    );
    let audit: Vec<(String, String, String)> = {
        let db = app.db();
        let mut stmt = db
            .prepare(
                "SELECT user_name, action, detail FROM audit_log
                 WHERE action IN ('release-held', 'reject-held') ORDER BY id",
            )
            .expect("prepare");
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    };
    assert_eq!(audit.len(), 2, "{audit:?}");
    assert_eq!(audit[0].0, "root");
    assert_eq!(audit[0].1, "release-held");
    assert!(audit[0].2.contains(&released) && audit[0].2.contains("typed wrong"));
    assert_eq!(audit[1].1, "reject-held");
    assert!(audit[1].2.contains(&rejected) && audit[1].2.contains("another patient's slice"));
    // A C-MOVE does not go around the gate: the rejected instance is a failed sub-operation.
    let output = dcmtk("movescu")
        .args(["-S", "-aet", "TPS", "-aec", "SIMGATE", "-aem", "TPS", "-d"])
        .args(["-k", "QueryRetrieveLevel=STUDY"])
        .args([
            "-k",
            &format!("StudyInstanceUID={}", study.study_instance_uid),
        ])
        .arg("127.0.0.1")
        .arg(app.port.to_string())
        .output()
        .expect("movescu");
    let said = crate::support::text(&output);
    assert!(said.contains("held by the safety gate"), "{said}");
    assert!(said.contains("Failed Suboperations          : 1"), "{said}");
    assert!(!received(&tps).contains(&rejected));
    // Nothing is held any more: a second decision says so.
    assert_eq!(
        decide(&rejected, "release", "changed my mind").status(),
        reqwest::StatusCode::NOT_FOUND
    );
}

#[test]
fn with_forward_when_series_checked_a_series_with_a_gap_is_held_and_a_clean_one_sent_after_the_quiet_period()
 {
    let tps = Storescp::start_on("TPS", free_port(), &[]);
    let app = App::spawn_configured(
        "",
        "",
        &tables(tps.port, "3s", "forward_when = \"series-checked\""),
    );
    let (_clean_dir, clean) = generate(12, 1203);
    let (_gap_dir, gapped) = generate(12, 1204);
    let mut files = paths(&clean);
    let mut gapped_files = paths(&gapped);
    gapped_files.remove(5);
    files.extend(gapped_files);
    let sent = std::time::Instant::now();
    assert_success(&app.storescu(&files), "storescu");
    assert!(
        sent.elapsed() < Duration::from_secs(3),
        "the upload took longer than the quiet period: nothing can be said about waiting"
    );
    assert_eq!(tps.files().len(), 0, "sent before the series check");
    assert_eq!(
        app.count("SELECT count(*) FROM forward_queue WHERE state = 'waiting'"),
        23
    );
    tps.wait_for(12);
    poll("the gapped series held", || {
        app.count(
            "SELECT count(*) FROM forward_queue WHERE state = 'held' AND held_for = 'slice-gap'",
        ) == 11
    });
    std::thread::sleep(Duration::from_secs(1));
    let got = received(&tps);
    assert_eq!(got.len(), 12);
    assert!(
        clean
            .files
            .iter()
            .all(|f| got.contains(&f.sop_instance_uid))
    );
    assert!(started_after(&tps, sent + Duration::from_secs(3)));

    // The physicist accepts the gap (outside the treated region): the CLI releases the series.
    let output = app.cli(&[
        "queue",
        "release",
        "--study",
        &gapped.study_instance_uid,
        "--why",
        "gap outside the treated region",
    ]);
    assert_success(&output, "simgate queue release");
    assert!(crate::support::text(&output).contains("11 instance(s)"));
    tps.wait_for(23);
    assert_eq!(
        app.count(
            "SELECT count(*) FROM audit_log WHERE action = 'release-held' AND detail LIKE '%gap outside%'"
        ),
        11
    );
}

/// Every file storescp holds was written at or after `at` (the clock of this process).
fn started_after(tps: &Storescp, at: std::time::Instant) -> bool {
    let elapsed = at.elapsed();
    let threshold = std::time::SystemTime::now() - elapsed;
    tps.files().iter().all(|p| {
        std::fs::metadata(p)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t >= threshold - Duration::from_millis(50))
    })
}
