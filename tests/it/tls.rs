//! DICOM over TLS with DCMTK peers, with certificates made by the test: echoscu and storescu
//! `+tls` against simgate's TLS listener (with and without client certificates, mutual TLS
//! when `client_ca` is set), simgate forwarding over TLS to `storescp +tls`, and clear log
//! lines when a peer speaks the other protocol on a port.

use std::path::PathBuf;
use std::process::Output;

use crate::support::{App, Pki, Storescp, assert_success, dataset_bytes, dcmtk, free_port, text};

/// `[listener.tls]` for this PKI; with `mutual`, client certificates signed by its CA are required.
fn listener_tls(pki: &Pki, mutual: bool) -> String {
    let client_ca = if mutual {
        format!("client_ca = {:?}\n", pki.path("ca.crt"))
    } else {
        String::new()
    };
    format!(
        "[listener.tls]\nbind = \"127.0.0.1:0\"\ncertificate = {:?}\nprivate_key = {:?}\n{client_ca}",
        pki.path("server.crt"),
        pki.path("server.key")
    )
}

/// The `[naming]`-and-after tables carry the TLS listener (App appends them last).
fn spawn_tls(pki: &Pki, mutual: bool) -> App {
    App::spawn_configured("", "", &format!("\n{}", listener_tls(pki, mutual)))
}

/// echoscu over TLS: with a client certificate (`+tls key cert`) or without one (`+tla`).
fn echo_tls(pki: &Pki, port: u16, with_certificate: bool) -> Output {
    let mut cmd = dcmtk("echoscu");
    if with_certificate {
        cmd.args(["+tls", &pki.path("client.key"), &pki.path("client.crt")]);
    } else {
        cmd.arg("+tla");
    }
    cmd.args([
        "+cf",
        &pki.path("ca.crt"),
        "-aet",
        "CTSIM",
        "-aec",
        "SIMGATE",
        "127.0.0.1",
    ])
    .arg(port.to_string())
    .output()
    .expect("echoscu")
}

fn small_study(seed: u64) -> (tempfile::TempDir, simgate_synth::WrittenStudy) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spec = simgate_synth::StudySpec::planning_ct(3, seed);
    spec.with_rt_objects = false;
    spec.rows = 64;
    spec.columns = 64;
    let study = simgate_synth::write_study(&spec, dir.path()).expect("generate");
    (dir, study)
}

#[test]
fn dcmtk_talks_to_the_tls_listener_with_and_without_client_certificates() {
    let pki = Pki::make();
    let app = spawn_tls(&pki, false);
    let tls_port = app.tls_port.expect("a TLS port");
    assert_success(&echo_tls(&pki, tls_port, false), "echoscu +tla");
    assert_success(
        &echo_tls(&pki, tls_port, true),
        "echoscu +tls with a client certificate",
    );
    let (_dir, study) = small_study(801);
    let paths: Vec<PathBuf> = study.files.iter().map(|f| f.path.clone()).collect();
    let stored = dcmtk("storescu")
        .args([
            "+tls",
            &pki.path("client.key"),
            &pki.path("client.crt"),
            "+cf",
            &pki.path("ca.crt"),
        ])
        .args(["-aet", "CTSIM", "-aec", "SIMGATE", "127.0.0.1"])
        .arg(tls_port.to_string())
        .args(&paths)
        .output()
        .expect("storescu");
    assert_success(&stored, "storescu +tls");
    assert_eq!(app.count("SELECT count(*) FROM instances"), 3);
    // The plain listener keeps working beside it.
    assert_success(&app.echoscu(), "plain echoscu on the plain port");

    // A plain client on the TLS port and a TLS client on the plain port: refused, each with a
    // line that says what happened.
    let plain_on_tls = dcmtk("echoscu")
        .args(["-aet", "CTSIM", "-aec", "SIMGATE", "127.0.0.1"])
        .arg(tls_port.to_string())
        .output()
        .expect("echoscu");
    assert!(!plain_on_tls.status.success());
    app.wait_for_log("a plain DICOM association request on the TLS port");
    let tls_on_plain = echo_tls(&pki, app.port, false);
    assert!(!tls_on_plain.status.success());
    app.wait_for_log("a TLS handshake on the plain DICOM port");
}

#[test]
fn mutual_tls_requires_a_client_certificate_of_the_ca() {
    let pki = Pki::make();
    let app = spawn_tls(&pki, true);
    let tls_port = app.tls_port.expect("a TLS port");
    assert_success(
        &echo_tls(&pki, tls_port, true),
        "echoscu with the CA's client certificate",
    );
    let anonymous = echo_tls(&pki, tls_port, false);
    assert!(!anonymous.status.success(), "{}", text(&anonymous));
    app.wait_for_log("TLS handshake failed on the TLS DICOM port");
}

#[test]
fn forwarding_goes_over_tls_to_storescp_byte_for_byte() {
    let pki = Pki::make();
    let port = free_port();
    // storescp +tls asks for simgate's certificate and checks it against the CA.
    let tps = Storescp::start_on(
        "TPS",
        port,
        &[
            "+tls",
            &pki.path("server.key"),
            &pki.path("server.crt"),
            "+cf",
            &pki.path("ca.crt"),
        ],
    );
    let tables = format!(
        "\n[[destinations]]\nname = \"tps\"\nae_title = \"TPS\"\naddress = \"127.0.0.1:{port}\"\n\
         tls = {{ ca = {:?}, certificate = {:?}, private_key = {:?} }}\n",
        pki.path("ca.crt"),
        pki.path("client.crt"),
        pki.path("client.key")
    );
    let app = App::spawn_configured("", "", &tables);
    let (_dir, study) = small_study(802);
    let paths: Vec<PathBuf> = study.files.iter().map(|f| f.path.clone()).collect();
    assert_success(&app.storescu(&paths), "storescu");
    tps.wait_for(3);
    let received = tps.datasets();
    for file in &study.files {
        assert_eq!(
            received.get(&file.sop_instance_uid),
            Some(&dataset_bytes(&file.path)),
            "forwarded over TLS unchanged"
        );
    }
}
