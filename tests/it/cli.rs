//! The `studies`, `study` and `check-config` commands on a gateway that received a study.

use std::path::PathBuf;

use simgate_synth::{self as synth, StudySpec};

use crate::support::{App, assert_success};

#[test]
fn studies_and_study_list_what_was_received_as_table_and_json() {
    let app = App::spawn();
    let source = tempfile::tempdir().expect("tempdir");
    let spec = StudySpec::planning_ct(5, 13);
    let study = synth::write_study(&spec, source.path()).expect("generate");
    let paths: Vec<PathBuf> = study.files.iter().map(|f| f.path.clone()).collect();
    assert_success(&app.storescu(&paths), "storescu");

    let output = app.cli(&["studies", "--json"]);
    assert_success(&output, "simgate studies --json");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let studies = json["studies"].as_array().expect("studies array");
    assert_eq!(studies.len(), 1);
    let s = &studies[0];
    assert_eq!(s["study_instance_uid"], study.study_instance_uid.as_str());
    assert_eq!(s["study_description"], spec.study_description.as_str());
    assert_eq!(s["patient_id"], spec.patient_id.as_str());
    assert_eq!(s["series_count"], 4);
    assert_eq!(s["instance_count"], 8);
    assert_eq!(s["station_names"][0], spec.station_name.as_str());

    let table = app.cli(&["studies"]);
    assert_success(&table, "simgate studies");
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains(&spec.study_description), "{table}");

    let output = app.cli(&["study", &study.study_instance_uid, "--json"]);
    assert_success(&output, "simgate study --json");
    let detail: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let series = detail["series"].as_array().expect("series");
    assert_eq!(series.len(), 4);
    assert_eq!(series[0]["modality"], "CT");
    assert_eq!(series[0]["instance_count"], 5);

    let unknown = app.cli(&["study", "1.2.3.999"]);
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr)
            .contains("no study with Study Instance UID 1.2.3.999")
    );
}

#[test]
fn check_config_prints_resolved_values_or_names_the_bad_key() {
    let app = App::spawn();
    let output = app.cli(&["check-config"]);
    assert_success(&output, "check-config");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("ae_title = \"SIMGATE\""), "{text}");
    assert!(text.contains("durability = \"fsync\""), "{text}");

    app.edit_config(|c| c.replace("idle_timeout = \"20s\"", "idle_timeout = \"soonish\""));
    let output = app.cli(&["check-config"]);
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("listener.idle_timeout") && err.contains("soonish"),
        "{err}"
    );
}

#[test]
fn the_shipped_config_passes_check_config() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/config/simgate.toml");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_simgate"))
        .args(["check-config", "--config", config])
        .output()
        .expect("run");
    assert_success(&output, "check-config on config/simgate.toml");
}
