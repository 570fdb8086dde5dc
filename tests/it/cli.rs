//! The `studies`, `study` and `check-config` commands on a gateway that received a study.

use std::path::PathBuf;

use simgate_synth::{self as synth, StudySpec};

use crate::support::{App, assert_success, text};

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

    // --since: the day received, today's finds it; a date not written YYYY-MM-DD (the DICOM
    // form, a day that does not exist) is refused rather than matching nothing.
    let today = app.cli(&["studies", "--json", "--since", &simgate::clock::today()]);
    assert_success(&today, "simgate studies --since today");
    assert!(
        text(&today).contains(&study.study_instance_uid),
        "{}",
        text(&today)
    );
    for bad in ["20261201", "2026-12-32", "yesterday"] {
        let refused = app.cli(&["studies", "--since", bad]);
        assert!(!refused.status.success(), "--since {bad}");
        assert!(text(&refused).contains("YYYY-MM-DD"), "{}", text(&refused));
    }

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
    // What it prints is itself a config, and resolves to the same values.
    let copy = tempfile::tempdir().expect("tempdir");
    let resolved = copy.path().join("resolved.toml");
    std::fs::write(&resolved, &output.stdout).expect("write");
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_simgate"))
        .args(["check-config", "--config"])
        .arg(&resolved)
        .output()
        .expect("run");
    assert_success(&again, "check-config on its own output");
    let values = |out: &[u8]| {
        String::from_utf8_lossy(out)
            .lines()
            .skip(1)
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(values(&again.stdout), values(&output.stdout));
}

fn simgate() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_simgate"));
    command.env_remove("SIMGATE_CONFIG");
    command
}

/// A config folder as an installation has it: `etc/simgate.toml`, storage in `../data`.
fn installed_config(extra: &str) -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(root.path().join("etc")).expect("etc");
    std::fs::write(
        root.path().join("etc/simgate.toml"),
        format!("[listener]\n[storage]\ndir = \"../data\"\n{extra}"),
    )
    .expect("config");
    root
}

#[test]
fn check_config_prints_absolute_paths_and_finds_the_config_through_simgate_config() {
    let root = installed_config("");
    let root_path = root.path().canonicalize().expect("canonical");
    // A relative --config from the folder above, and the same file through SIMGATE_CONFIG
    // from anywhere: both print the storage folder resolved, absolute, without "..".
    let relative = simgate()
        .current_dir(&root_path)
        .args(["check-config", "--config", "etc/simgate.toml"])
        .output()
        .expect("run");
    assert_success(&relative, "check-config --config etc/simgate.toml");
    let through_env = simgate()
        .current_dir("/")
        .env("SIMGATE_CONFIG", root_path.join("etc/simgate.toml"))
        .arg("check-config")
        .output()
        .expect("run");
    assert_success(&through_env, "check-config with SIMGATE_CONFIG");
    let expected = format!("dir = {:?}", root_path.join("data").display().to_string());
    for output in [&relative, &through_env] {
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains(&expected), "{expected} in:\n{text}");
        assert!(!text.contains(".."), "{text}");
        assert!(
            text.contains(&root_path.join("etc/simgate.toml").display().to_string()),
            "the file it read, absolute: {text}"
        );
    }
}

#[test]
fn a_missing_file_named_by_the_config_is_reported_with_its_key_and_absolute_path() {
    let root = installed_config("[naming]\nseries_rules = \"rules/series.toml\"\n");
    let root_path = root.path().canonicalize().expect("canonical");
    let output = simgate()
        .current_dir(&root_path)
        .args(["check-config", "--config", "etc/simgate.toml"])
        .output()
        .expect("run");
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    let path = root_path.join("etc/rules/series.toml");
    assert!(
        err.contains("naming.series_rules") && err.contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn check_config_refuses_tls_files_that_cannot_be_read() {
    // ExecStartPre runs check-config: a missing certificate must stop it there, not pass it
    // and fail the start in a restart loop.
    let root = installed_config("");
    let config = root.path().join("etc/simgate.toml");
    let text_of = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text_of.replace(
            "[listener]\n",
            "[listener]\n[listener.tls]\nbind = \"127.0.0.1:0\"\ncertificate = \"tls/simgate.crt\"\nprivate_key = \"tls/simgate.key\"\n",
        ),
    )
    .expect("config");
    let output = simgate()
        .args(["check-config", "--quiet", "--config"])
        .arg(&config)
        .output()
        .expect("run");
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    let missing = root
        .path()
        .canonicalize()
        .expect("root")
        .join("etc/tls/simgate.crt");
    assert!(
        err.contains("listener.tls") && err.contains(&missing.display().to_string()),
        "{err}"
    );
}

#[test]
fn a_config_syntax_error_is_shown_once_on_its_own_lines_with_the_caret() {
    let root = installed_config("");
    std::fs::write(
        root.path().join("etc/simgate.toml"),
        "[listener]\nport = \"eleven\"\n[storage]\ndir = \"../data\"\n",
    )
    .expect("config");
    let output = simgate()
        .current_dir(root.path())
        .args(["check-config", "--config", "etc/simgate.toml"])
        .output()
        .expect("run");
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        err.matches("TOML parse error").count(),
        1,
        "said once: {err}"
    );
    assert!(!err.contains("\\n"), "real lines, not escaped ones: {err}");
    // The offending line, then a caret under the value, each on a line of its own, indented
    // under the "simgate:" line.
    let lines: Vec<&str> = err.lines().collect();
    assert!(lines[0].starts_with("simgate: config file "), "{err}");
    assert!(
        lines.iter().any(|l| l.contains("| port = \"eleven\"")),
        "{err}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.trim_start().starts_with("| ") && l.contains('^')),
        "{err}"
    );
    assert!(lines[1..].iter().all(|l| l.starts_with("    ")), "{err}");

    // The same for the series rules the config names; and doctor, which reads them too, finds
    // the problem check-config finds.
    let root = installed_config("[naming]\nseries_rules = \"series.toml\"\n");
    std::fs::write(root.path().join("etc/series.toml"), "[[kind]]\nname = \n").expect("rules");
    for command in ["check-config", "doctor"] {
        let output = simgate()
            .current_dir(root.path())
            .args([command, "--config", "etc/simgate.toml"])
            .output()
            .expect("run");
        assert!(!output.status.success(), "{command}");
        let said = text(&output);
        assert_eq!(
            said.matches("TOML parse error").count(),
            1,
            "{command}: {said}"
        );
        assert!(said.contains("naming.series_rules"), "{command}: {said}");
    }
}

#[test]
fn a_config_without_nomenclature_files_uses_the_built_in_ones() {
    // Copying only simgate.toml elsewhere must work: the shipped lists are compiled in.
    let root = tempfile::tempdir().expect("tempdir");
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/config/simgate.toml");
    let copy = root.path().join("simgate.toml");
    std::fs::copy(shipped, &copy).expect("copy");
    let output = simgate()
        .arg("check-config")
        .arg("--config")
        .arg(&copy)
        .output()
        .expect("run");
    assert_success(&output, "check-config on a lone copy of the shipped config");
}

#[test]
fn a_closed_standard_output_ends_the_command_quietly() {
    let root = installed_config("");
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let output = simgate()
        .args(["check-config", "--config"])
        .arg(root.path().join("etc/simgate.toml"))
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stderr), "", "nothing said");
}

#[test]
fn user_add_on_a_terminal_asks_twice_without_echo() {
    // `script` gives simgate a terminal; the input comes only once it is waiting, so what
    // the terminal would echo is what simgate's settings make of it.
    let typed = "(sleep 1; printf 'correct horse\\n'; sleep 1; printf 'correct horse\\n') | \
         script -qec 'SIMGATE_CONFIG=/nonexistent {bin} user add alice --role viewer' /dev/null";
    let output = std::process::Command::new("sh")
        .arg("-c")
        .arg(typed.replace("{bin}", env!("CARGO_BIN_EXE_simgate")))
        .output()
        .expect("run script");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("Password for alice:"), "{text}");
    assert!(text.contains("The same password again:"), "{text}");
    assert!(text.contains("name = \"alice\""), "{text}");
    assert!(text.contains("password_hash = \"$argon2id$"), "{text}");
    assert!(
        !text.contains("correct horse"),
        "the password was echoed: {text}"
    );

    let differing = "(sleep 1; printf 'correct horse\\n'; sleep 1; printf 'wrong horse!\\n') | \
         script -qec '{bin} user add alice' /dev/null";
    let output = std::process::Command::new("sh")
        .arg("-c")
        .arg(differing.replace("{bin}", env!("CARGO_BIN_EXE_simgate")))
        .output()
        .expect("run script");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("the two passwords differ"), "{text}");
    assert!(!text.contains("password_hash"), "{text}");
}

/// Starts `simgate serve` on `config` with `env`, returns its log once the listener is ready.
fn serve_log(config: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let log_path = config.with_extension("log");
    let mut child = simgate()
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
        .envs(env.iter().copied())
        .arg("serve")
        .arg("--config")
        .arg(config)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).expect("log"))
        .spawn()
        .expect("serve");
    let start = std::time::Instant::now();
    let log = loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if log.contains("DICOM listener ready") || start.elapsed() > crate::support::DEADLINE {
            break log;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    log
}

#[test]
fn logs_are_json_on_request_untimed_under_systemd_and_filtered_per_module() {
    let root = tempfile::tempdir().expect("tempdir");
    let config = root.path().join("simgate.toml");
    std::fs::write(
        &config,
        "[listener]\nbind = \"127.0.0.1:0\"\n[http]\nbind = \"127.0.0.1:0\"\n[storage]\n\
         dir = \"data\"\nreserve_free_bytes = \"0 B\"\n\
         [log]\nlevel = \"warn,simgate::app=info\"\n",
    )
    .expect("config");

    let json = serve_log(&config, &["--log-format", "json"], &[]);
    let ready = json
        .lines()
        .find(|l| l.contains("DICOM listener ready"))
        .unwrap_or_else(|| panic!("no ready line: {json}"));
    let event: serde_json::Value = serde_json::from_str(ready).expect("a JSON object per line");
    assert_eq!(event["level"], "INFO");
    assert_eq!(event["fields"]["message"], "DICOM listener ready");
    assert!(event["timestamp"].is_string(), "{event}");
    assert!(
        json.lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()),
        "{json}"
    );
    // log.level: simgate::app at info, the HTTP side (simgate::http) only from warn.
    assert!(!json.contains("HTTP listener ready"), "{json}");

    let config_text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        config_text.replace("warn,simgate::app=info", "info"),
    )
    .expect("edit");
    let journal = serve_log(&config, &[], &[("JOURNAL_STREAM", "8:12345")]);
    let ready = journal
        .lines()
        .find(|l| l.contains("DICOM listener ready"))
        .unwrap_or_else(|| panic!("no ready line: {journal}"));
    assert!(
        ready.starts_with(" INFO") || ready.starts_with("INFO"),
        "no time first: {ready}"
    );
    let plain = serve_log(&config, &[], &[]);
    let ready = plain
        .lines()
        .find(|l| l.contains("DICOM listener ready"))
        .expect("ready line");
    assert!(
        ready.starts_with("20"),
        "a time first without systemd: {ready}"
    );
    assert!(
        plain.contains("HTTP listener ready"),
        "at info the HTTP line comes before the DICOM one: {plain}"
    );
}

#[test]
fn a_missing_tls_certificate_is_reported_with_its_table_and_absolute_path() {
    let root = installed_config(
        "[listener.tls]\nbind = \"127.0.0.1:0\"\ncertificate = \"tls/none.crt\"\nprivate_key = \"tls/none.key\"\n",
    );
    let root_path = root.path().canonicalize().expect("canonical");
    let output = simgate()
        .current_dir(&root_path)
        .env_remove("RUST_LOG")
        .args(["serve", "--config", "etc/simgate.toml"])
        .output()
        .expect("run");
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    let path = root_path.join("etc/tls/none.crt");
    assert!(
        err.contains("listener.tls") && err.contains(&path.display().to_string()),
        "{err}"
    );
}

#[test]
fn user_add_refuses_names_that_cannot_sign_in_and_an_empty_password() {
    let add = |name: &str, input: &str| {
        let mut child = simgate()
            .args(["user", "add", name])
            .env("SIMGATE_CONFIG", "/nonexistent")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write");
        child.wait_with_output().expect("wait")
    };
    for (name, why) in [("", "empty"), ("ops:night", "colon"), (" bob", "spaces")] {
        let output = add(name, "correct horse\n");
        assert!(!output.status.success(), "{name:?}");
        assert!(text(&output).contains(why), "{name:?}: {}", text(&output));
        assert!(output.stdout.is_empty(), "no entry printed for {name:?}");
    }
    let output = add("bob", "");
    assert!(!output.status.success());
    assert!(
        text(&output).contains("no password given"),
        "{}",
        text(&output)
    );
    let output = add("bob", "correct horse\n");
    assert_success(&output, "user add bob");
}

#[test]
fn a_reason_without_by_is_documented_by_the_process_s_user_whatever_user_says() {
    let me = std::process::Command::new("id")
        .arg("-un")
        .output()
        .expect("id");
    let me = String::from_utf8_lossy(&me.stdout).trim().to_string();
    assert_ne!(me, "curie");
    let users = format!(
        "{}{}",
        crate::support::configured_user(&me, "physician"),
        crate::support::configured_user("curie", "physician")
    );
    let app = App::spawn_full("", "", "", &users);
    let mut spec = StudySpec::planning_ct(2, 494);
    spec.with_rt_objects = false;
    spec.study_description = "BREAST SIM LOCAL".into();
    let study = app.send_study(&spec);
    // $USER names someone else: the audit must not take its word.
    let output = simgate()
        .args([
            "reason", &study, "--code", "other", "--note", "who am I", "--config",
        ])
        .arg(&app.config_path)
        .env("USER", "curie")
        .env_remove("LOGNAME")
        .output()
        .expect("run");
    assert_success(&output, "simgate reason without --by");
    let detail = app.cli(&["study", &study, "--json"]);
    let detail: serde_json::Value = serde_json::from_slice(&detail.stdout).expect("JSON");
    assert_eq!(
        detail["naming"]["reasons"][0]["documented_by"], me,
        "{detail}"
    );
}

#[test]
fn the_studies_table_keeps_its_columns_with_escaped_values_and_the_longest_status() {
    let app = App::spawn_full(
        "",
        "",
        "",
        &crate::support::configured_user("curie", "physician"),
    );
    let mut spec = StudySpec::planning_ct(2, 495);
    spec.with_rt_objects = false;
    spec.study_description = "Evil \u{1b}[31mRED".into();
    let hostile = app.send_study(&spec);
    let mut spec = StudySpec::planning_ct(2, 496);
    spec.with_rt_objects = false;
    spec.study_description = "BREAST SIM LOCAL".into();
    let documented = app.send_study(&spec);
    assert_success(
        &app.cli(&[
            "reason",
            &documented,
            "--code",
            "other",
            "--note",
            "n",
            "--by",
            "curie",
        ]),
        "reason",
    );
    let table = app.cli(&["studies"]);
    assert_success(&table, "studies");
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    let column = |line: &str, needle: &str| {
        line.find(needle)
            .map(|byte| line[..byte].chars().count())
            .unwrap_or_else(|| panic!("{needle} in {line}"))
    };
    let mut lines = table.lines();
    let header = lines.next().expect("header");
    let uid_column = column(header, "STUDY INSTANCE UID");
    for (uid, line) in [&hostile, &documented].iter().map(|uid| {
        (
            uid,
            table
                .lines()
                .find(|l| l.contains(uid.as_str()))
                .expect("row"),
        )
    }) {
        assert_eq!(column(line, uid), uid_column, "{table}");
        assert!(!line.contains('\u{1b}'), "escaped: {line}");
    }
    assert!(table.contains("G9320 reason-documented"), "{table}");
}

#[test]
fn a_study_whose_series_wait_for_the_safety_check_says_so_not_none() {
    let storage = tempfile::tempdir().expect("tempdir");
    let app = App::spawn_in(storage.path(), "[safety]\nseries_quiet_period = \"1h\"\n");
    let mut spec = StudySpec::planning_ct(2, 497);
    spec.with_rt_objects = false;
    let study = app.send_study(&spec);
    let detail = app.cli(&["study", &study]);
    assert_success(&detail, "simgate study");
    let detail = text(&detail);
    assert!(detail.contains("not checked yet"), "{detail}");
    assert!(!detail.contains("Safety findings      none"), "{detail}");
}
