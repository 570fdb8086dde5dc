//! `simgate doctor` against a running gateway with real destinations (one up, one down) and
//! real certificates made by the test.

use serde_json::Value;

use crate::support::{App, Pki, Storescp, assert_success, free_port, text};

fn doctor(app: &App) -> (bool, Value) {
    let output = app.cli(&["doctor", "--json"]);
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("doctor --json: {e}: {}", text(&output)));
    (output.status.success(), report)
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no {name} check: {report}"))
}

#[test]
fn doctor_reports_storage_index_destinations_and_certificates_with_its_exit_code() {
    let pki = Pki::make();
    let tps = Storescp::start("TPS");
    let down = free_port();
    let tables = format!(
        "\n[listener.tls]\nbind = \"127.0.0.1:0\"\ncertificate = {:?}\nprivate_key = {:?}\n\
         [[destinations]]\nname = \"tps\"\nae_title = \"TPS\"\naddress = \"127.0.0.1:{}\"\n\
         [[destinations]]\nname = \"archive\"\nae_title = \"ARCHIVE\"\naddress = \"127.0.0.1:{down}\"\n",
        pki.path("server.crt"),
        pki.path("server.key"),
        tps.port
    );
    let mut app = App::spawn_configured("", "", &tables);

    let (healthy, report) = doctor(&app);
    assert!(
        !healthy,
        "a destination that does not answer is a problem: {report}"
    );
    for ok in [
        "config",
        "storage",
        "free-space",
        "database",
        "gateway",
        "destination:tps",
        "nomenclature",
    ] {
        assert_eq!(check(&report, ok)["state"], "ok", "{ok}: {report}");
    }
    assert!(
        check(&report, "database")["detail"]
            .as_str()
            .expect("detail")
            .contains("integrity_check ok")
    );
    assert!(
        check(&report, "destination:tps")["milliseconds"].is_u64(),
        "{report}"
    );
    let archive = check(&report, "destination:archive");
    assert_eq!(archive["state"], "problem", "{report}");
    assert!(
        archive["detail"]
            .as_str()
            .expect("detail")
            .contains(&format!("127.0.0.1:{down}"))
    );
    // The test's certificates are valid for two days: a warning, with the date.
    let certificate = check(&report, "certificate:listener.tls.certificate");
    assert_eq!(certificate["state"], "warning", "{report}");
    assert!(
        certificate["detail"]
            .as_str()
            .expect("detail")
            .contains("expires"),
        "{report}"
    );

    let plain = app.cli(&["doctor"]);
    assert!(!plain.status.success());
    assert!(
        text(&plain)
            .lines()
            .any(|l| l.starts_with("PROBLEM") && l.contains("destination:archive")),
        "{}",
        text(&plain)
    );

    // Without the unreachable destination, warnings alone leave the exit code at 0.
    app.edit_config(|c| {
        c[..c
            .find("[[destinations]]\nname = \"archive\"")
            .expect("archive")]
            .to_string()
    });
    let (healthy, report) = doctor(&app);
    assert!(healthy, "{report}");
    assert_success(&app.cli(&["doctor"]), "doctor with warnings only");

    // A stopped gateway is a warning; free space below the reserve is a problem.
    app.signal("TERM");
    assert!(app.wait_exit().success());
    let (healthy, report) = doctor(&app);
    assert!(healthy, "{report}");
    assert_eq!(check(&report, "gateway")["state"], "warning");
    app.edit_config(|c| {
        c.replace(
            "reserve_free_bytes = \"0 B\"",
            "reserve_free_bytes = \"1000 PiB\"",
        )
    });
    let (healthy, report) = doctor(&app);
    assert!(!healthy);
    assert_eq!(check(&report, "free-space")["state"], "problem", "{report}");

    app.edit_config(|c| c.replace("idle_timeout = \"20s\"", "idle_timeout = \"soon\""));
    let (healthy, report) = doctor(&app);
    assert!(!healthy);
    let config = check(&report, "config");
    assert_eq!(config["state"], "problem");
    assert!(
        config["detail"]
            .as_str()
            .expect("detail")
            .contains("listener.idle_timeout"),
        "{report}"
    );
}
