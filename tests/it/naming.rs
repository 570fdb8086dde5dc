//! Naming verdicts end to end: studies sent with storescu are judged as they arrive, a reason
//! is documented with the CLI, and the report counts them.

use serde_json::Value;
use simgate_synth::StudySpec;

use crate::support::{App, assert_success, configured_user, text};

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
    let app = App::spawn_full(
        "",
        "",
        "ct_simulator_ae_titles = [\"CTSIM\"]",
        &configured_user("Dr Curie", "physician"),
    );

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
    // "4DCT LUNG SIM" is like no standard name: what is suggested clears the floor (0.3).
    let suggestions = needs["suggestions"].as_array().expect("suggestions");
    assert!(
        suggestions.len() <= 3
            && suggestions
                .iter()
                .all(|s| s["score"].as_f64().is_some_and(|score| score >= 0.3)),
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
    let report = json(
        &app,
        &[
            "report", "--from", day, "--to", day, "--date", "received", "--json",
        ],
    );
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
            "--date",
            "received",
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
    let csv = app.cli(&[
        "report", "--from", day, "--to", day, "--date", "received", "--csv",
    ]);
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

#[test]
fn importing_the_loinc_playbook_after_radlex_keeps_every_radlex_name_matching() {
    let app = App::spawn();
    let radlex = app.dir.path().join("radlex.csv");
    std::fs::write(
        &radlex,
        "RPID,LETTER_CODE,\"SHORT_NAME\",\"LONG_NAME\",MODALITY,PLAYBOOK_TYPE\n\
         RPID990002,XX,\"CT SIM PELVIS LOCAL\",\"CT Pelvis Simulation Local\",CT,RADIOLOGY ORDERABLE\n",
    )
    .expect("radlex fixture");
    // The LOINC/RSNA playbook names the same RadLex procedure differently, without a short name.
    let loinc = app.dir.path().join("loinc.csv");
    std::fs::write(
        &loinc,
        "\"LoincNumber\",\"LongCommonName\",\"PartNumber\",\"PartTypeName\",\"PartName\",\"PartSequenceOrder\",\"RID\",\"PreferredName\",\"RPID\",\"LongName\"\n\
         \"99999-9\",\"CT Pelvis for simulation\",\"LP1\",\"Rad.Modality.Modality Type\",\"CT\",\"A\",\"RID1\",\"CT\",\"RPID990002\",\"CT Pelvis for radiotherapy simulation\"\n",
    )
    .expect("loinc fixture");
    let mut short_named = StudySpec::planning_ct(2, 211);
    short_named.study_description = "CT SIM PELVIS LOCAL".into();
    short_named.with_rt_objects = false;
    let mut long_named = StudySpec::planning_ct(2, 212);
    long_named.study_description = "CT Pelvis Simulation Local".into();
    long_named.with_rt_objects = false;
    let short_uid = send(&app, &short_named);
    let long_uid = send(&app, &long_named);

    for file in [&radlex, &loinc] {
        let imported = app.cli(&["nomenclature", "import", file.to_str().expect("path")]);
        assert_success(&imported, "import");
        let rechecked = app.cli(&["nomenclature", "recheck"]);
        assert_success(&rechecked, "recheck");
        let all = json(&app, &["studies", "--json"]);
        assert_eq!(
            study(&all, &short_uid)["status"],
            "conforming",
            "after importing {}",
            file.display()
        );
        assert_eq!(
            study(&all, &long_uid)["status"],
            "conforming",
            "after importing {}",
            file.display()
        );
    }
    // Both sources stay listed.
    let sources = json(&app, &["nomenclature", "sources", "--json"]);
    assert_eq!(sources["imported"].as_array().map(Vec::len), Some(2));
}

#[test]
fn a_procedure_code_arriving_with_a_later_instance_makes_the_study_conforming() {
    let app = App::spawn();
    let mut spec = StudySpec::planning_ct(3, 221);
    spec.study_description = "LUNG SIM LOCAL".into();
    spec.with_rt_objects = false;
    let dir = tempfile::tempdir().expect("tempdir");
    let study = simgate_synth::write_study(&spec, dir.path()).expect("generate");
    let mut files: Vec<std::path::PathBuf> = study.files.iter().map(|f| f.path.clone()).collect();
    files.sort();
    // The first slices come without a code; the last one carries the standard code.
    let last = files.pop().expect("a last slice");
    let sent = app.storescu(&files);
    assert_success(&sent, "storescu without codes");
    let all = json(&app, &["studies", "--json"]);
    assert_eq!(
        study_uid_status(&all, &study.study_instance_uid),
        "needs-reason"
    );
    let modified = crate::support::dcmtk("dcmodify")
        .args([
            "-nb",
            "-i",
            "(0008,1032)[0].(0008,0100)=RPID6008",
            "-i",
            "(0008,1032)[0].(0008,0102)=RADLEX",
            "-i",
            "(0008,1032)[0].(0008,0104)=CT Treatment Planning Complex",
        ])
        .arg(&last)
        .output()
        .expect("dcmodify");
    assert_success(&modified, "dcmodify");
    let sent = app.storescu(&[last]);
    assert_success(&sent, "storescu with the code");
    let all = json(&app, &["studies", "--json"]);
    assert_eq!(
        study_uid_status(&all, &study.study_instance_uid),
        "conforming",
        "the late code was not judged"
    );
}

fn study_uid_status(list: &Value, uid: &str) -> String {
    study(list, uid)["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_reason_from_the_cli_needs_a_configured_author_and_is_audited() {
    let users = format!(
        "{}{}",
        configured_user("Dr Curie", "physician"),
        configured_user("Watson", "viewer")
    );
    let app = App::spawn_full("", "", "", &users);
    let site = StudySpec::ct_simulator_upload(2, 2, 1, 231);
    let uid = send(&app, &site);
    let reasons = || app.count("SELECT count(*) FROM study_reasons");
    let audited = || app.count("SELECT count(*) FROM audit_log");

    let free_text = app.cli(&["reason", &uid, "--code", "rt-planning", "--by", "Dr Nobody"]);
    assert!(
        !free_text.status.success(),
        "a free-text author was accepted"
    );
    assert!(
        text(&free_text).contains("not a user"),
        "{}",
        text(&free_text)
    );
    let viewer = app.cli(&["reason", &uid, "--code", "rt-planning", "--by", "Watson"]);
    assert!(!viewer.status.success(), "a viewer documented a reason");
    assert!(
        text(&viewer).contains("needs a physician"),
        "{}",
        text(&viewer)
    );
    // Without --by the author is the operating-system user, who is not configured here.
    let os_user = app.cli(&["reason", &uid, "--code", "rt-planning"]);
    assert!(
        !os_user.status.success(),
        "an unconfigured OS user documented a reason"
    );
    assert_eq!(
        (reasons(), audited()),
        (0, 0),
        "a refused reason left a trace"
    );

    let documented = app.cli(&[
        "reason",
        &uid,
        "--code",
        "other",
        "--note",
        "fusion with the diagnostic MR",
        "--by",
        "Dr Curie",
    ]);
    assert_success(&documented, "reason by a configured physician");
    assert_eq!(reasons(), 1);
    let entry: (String, String, String, String) = app
        .db()
        .query_row(
            "SELECT user_name, action, study_instance_uid, remote_address FROM audit_log",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .expect("one audit entry");
    assert_eq!(
        (entry.0.as_str(), entry.1.as_str(), entry.2.as_str()),
        ("Dr Curie", "document-reason", uid.as_str())
    );
    assert!(entry.3.starts_with("cli"), "{entry:?}");
}

#[test]
fn a_sighup_reload_never_stalls_the_dicom_side() {
    // One async worker: reload work done on it would stall every association.
    let app = App::spawn_env("", "", "", "", &[("TOKIO_WORKER_THREADS", "1")]);
    let text_before = std::fs::read_to_string(&app.config_path).expect("config");
    // The config file becomes a FIFO: reading it blocks until the test writes to it.
    let fifo = app.dir.path().join("config.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    std::fs::rename(&fifo, &app.config_path).expect("swap the config for a FIFO");
    app.signal("HUP");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let echo = crate::support::dcmtk("echoscu")
        .args([
            "-ta",
            "5",
            "-td",
            "5",
            "-aet",
            "CTSIM",
            "-aec",
            "SIMGATE",
            "127.0.0.1",
        ])
        .arg(app.port.to_string())
        .output()
        .expect("echoscu");
    // Unblock the reload whatever happened, so the gateway can stop cleanly.
    std::fs::write(&app.config_path, &text_before).expect("feed the FIFO");
    assert_success(&echo, "C-ECHO while a reload waits on its config file");
    app.wait_for_log("configuration reloaded");
}
