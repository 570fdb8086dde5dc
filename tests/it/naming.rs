//! Naming verdicts end to end: studies sent with storescu are judged as they arrive, a reason
//! is documented with the CLI, and the report counts them.

use serde_json::Value;
use simgate::synth::StudySpec;

use crate::support::{App, assert_success};

fn send(app: &App, spec: &StudySpec) -> String {
    app.send_study(spec)
}

fn json(app: &App, args: &[&str]) -> Value {
    let output = app.cli(args);
    assert_success(&output, &args.join(" "));
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn study<'a>(list: &'a Value, uid: &str) -> &'a Value {
    list["studies"]
        .as_array()
        .expect("studies")
        .iter()
        .find(|s| s["study_instance_uid"] == uid)
        .unwrap_or_else(|| panic!("{uid} not listed in {list:#}"))
}

#[test]
fn studies_are_judged_as_they_arrive_and_a_documented_reason_is_counted() {
    let app = App::spawn_configured("", "", "ct_simulator_ae_titles = [\"CTSIM\"]");

    // A study named by the standard: conforming (G9318).
    let mut standard = StudySpec::planning_ct(3, 101);
    standard.study_description = "CT Treatment Planning  Intermediate".into();
    standard.with_rt_objects = false;
    let standard_uid = send(&app, &standard);

    // A site-named 4D CT from the simulator: needs a reason (G9319), acquired for planning.
    let site = StudySpec::ct_simulator_upload(4, 10, 2, 102);
    assert_eq!(site.study_description, "4DCT LUNG SIM");
    let site_uid = send(&app, &site);

    let all = json(&app, &["studies", "--json"]);
    let conforming = study(&all, &standard_uid);
    assert_eq!(conforming["status"], "conforming");
    assert_eq!(conforming["hcpcs"], "G9318");

    let waiting = json(&app, &["studies", "--status", "needs-reason", "--json"]);
    assert_eq!(waiting["studies"].as_array().expect("list").len(), 1);
    let needs = study(&waiting, &site_uid);
    assert_eq!(needs["hcpcs"], "G9319");
    assert_eq!(needs["rt_planning"], true);
    let evidence: Vec<&str> = needs["evidence"]
        .as_array()
        .expect("evidence")
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        evidence,
        ["ct-simulator-ae-title", "4d-phase-series", "planning-name"],
        "{needs:#}"
    );
    assert_eq!(needs["findings"][0]["code"], "study-name-nonstandard");
    assert_eq!(
        needs["findings"].as_array().expect("findings").len(),
        1,
        "every series follows the conventions: {needs:#}"
    );
    assert_eq!(
        needs["suggestions"].as_array().expect("suggestions").len(),
        3
    );
    assert!(
        needs["suggestions"][0]["code"]
            .as_str()
            .unwrap_or("")
            .starts_with("RPID60"),
        "{needs:#}"
    );
    assert_eq!(needs["suggested_reason"], "rt-planning");
    assert!(needs["waiting_seconds"].is_u64());

    // The series carry their kinds.
    let detail = json(&app, &["study", &site_uid, "--json"]);
    let kinds: Vec<&str> = detail["series"]
        .as_array()
        .expect("series")
        .iter()
        .map(|s| s["kind"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(kinds[0], "planning-ct");
    assert_eq!(kinds.iter().filter(|k| **k == "4dct-phase").count(), 10);
    assert!(
        kinds.contains(&"4dct-average") && kinds.contains(&"4dct-mip"),
        "{kinds:?}"
    );

    // "other" needs a note; an unknown code is refused with the list.
    let refused = app.cli(&["reason", &site_uid, "--code", "other", "--by", "Dr Curie"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("needs a --note"));
    let refused = app.cli(&["reason", &site_uid, "--code", "because", "--by", "Dr Curie"]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("rt-planning"));

    let documented = json(
        &app,
        &[
            "reason",
            &site_uid,
            "--code",
            "rt-planning",
            "--by",
            "Dr Curie",
            "--json",
        ],
    );
    assert_eq!(documented["status"], "reason-documented");
    assert_eq!(documented["hcpcs"], "G9320");
    assert_eq!(
        json(&app, &["studies", "--status", "needs-reason", "--json"])["studies"]
            .as_array()
            .expect("list")
            .len(),
        0
    );

    let detail = json(&app, &["study", &site_uid, "--json"]);
    let naming = &detail["naming"];
    assert_eq!(naming["reasons"][0]["documented_by"], "Dr Curie");
    let history: Vec<&str> = naming["status_history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|h| h["to_status"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(history, ["needs-reason", "reason-documented"]);

    let day = &conforming["first_received_at"].as_str().expect("time")[..10];
    let report = json(&app, &["report", "--from", day, "--to", day, "--json"]);
    let total = report["rows"]
        .as_array()
        .expect("rows")
        .last()
        .expect("total")
        .clone();
    assert_eq!(
        (
            total["g9318"].as_u64(),
            total["g9319"].as_u64(),
            total["g9320"].as_u64()
        ),
        (Some(1), Some(0), Some(1))
    );
    // G9320 studies are denominator exceptions: 1 / (1 + 0).
    assert_eq!(total["conformance_rate"], 1.0);
    let by_physician = json(
        &app,
        &[
            "report",
            "--from",
            day,
            "--to",
            day,
            "--by",
            "physician",
            "--json",
        ],
    );
    assert!(
        by_physician["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .any(|r| r["group"] == "Dr Curie" && r["g9320"] == 1)
    );
    let csv = app.cli(&["report", "--from", day, "--to", day, "--csv"]);
    assert!(
        String::from_utf8_lossy(&csv.stdout)
            .starts_with("group,G9318,G9319,G9320,total,conformance_rate")
    );
}

#[test]
fn a_study_named_by_code_conforms_and_an_import_plus_recheck_changes_a_verdict() {
    let app = App::spawn();
    let mut coded = StudySpec::planning_ct(2, 201);
    coded.study_description = "LUNG SIM".into();
    coded.with_rt_objects = false;
    coded.procedure_codes = vec![(
        "RPID6008".into(),
        "RADLEX".into(),
        "CT Treatment Planning Complex".into(),
    )];
    let coded_uid = send(&app, &coded);
    let mut local = StudySpec::planning_ct(2, 202);
    local.study_description = "BREAST SIM LOCAL".into();
    local.with_rt_objects = false;
    let local_uid = send(&app, &local);

    let all = json(&app, &["studies", "--json"]);
    assert_eq!(study(&all, &coded_uid)["status"], "conforming");
    assert_eq!(study(&all, &local_uid)["status"], "needs-reason");

    // A site playbook release that names "BREAST SIM LOCAL" (fixture in the Core Playbook layout).
    let fixture = app.dir.path().join("site-playbook.csv");
    std::fs::write(
        &fixture,
        "RPID,LETTER_CODE,\"SHORT_NAME\",\"LONG_NAME\",MODALITY,PLAYBOOK_TYPE\n\
         RPID990001,XX,\"BREAST SIM LOCAL\",\"CT Breast Simulation Local\",CT,RADIOLOGY ORDERABLE\n",
    )
    .expect("fixture");
    let imported = app.cli(&["nomenclature", "import", fixture.to_str().expect("path")]);
    assert_success(&imported, "import");
    assert!(String::from_utf8_lossy(&imported.stdout).contains("1 standard names"));
    let again = app.cli(&["nomenclature", "import", fixture.to_str().expect("path")]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing changed"));
    let rechecked = app.cli(&["nomenclature", "recheck"]);
    assert_success(&rechecked, "recheck");
    assert!(
        String::from_utf8_lossy(&rechecked.stdout).contains("1 changed status"),
        "{}",
        String::from_utf8_lossy(&rechecked.stdout)
    );
    let all = json(&app, &["studies", "--json"]);
    assert_eq!(study(&all, &local_uid)["status"], "conforming");

    // The check command gives the receiver's verdict for plain values.
    let check = json(
        &app,
        &[
            "nomenclature",
            "check",
            "--study-description",
            "4DCT LUNG SIM",
            "--series-description",
            "Gated, 50.0%",
            "--json",
        ],
    );
    assert_eq!(check["status"], "needs-reason");
    assert_eq!(check["rt_planning"], true);
    assert_eq!(check["series"][0]["kind"], "4dct-phase");

    // The running gateway still judges new studies by the rules it loaded at start...
    let mut before = StudySpec::planning_ct(2, 203);
    before.study_description = "BREAST SIM LOCAL".into();
    before.with_rt_objects = false;
    let before_uid = send(&app, &before);
    // ... until SIGHUP makes it load the imported playbook too.
    app.signal("HUP");
    app.wait_for_log("configuration reloaded");
    let mut after = StudySpec::planning_ct(2, 204);
    after.study_description = "BREAST SIM LOCAL".into();
    after.with_rt_objects = false;
    let after_uid = send(&app, &after);
    let all = json(&app, &["studies", "--json"]);
    assert_eq!(study(&all, &before_uid)["status"], "needs-reason");
    assert_eq!(study(&all, &after_uid)["status"], "conforming");
}
