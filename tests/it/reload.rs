//! SIGHUP: users, destinations and naming rules take effect without a restart, while an
//! association stays open; keys that need a restart are named.

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::blocking::Client;
use simgate_synth::{self as synth, StudySpec};

use crate::http::{PASSWORD, user};
use crate::support::{App, Storescp, python_peer};

fn studies_as(app: &App, name: &str) -> StatusCode {
    Client::new()
        .get(format!("http://127.0.0.1:{}/api/studies", app.http_port))
        .basic_auth(name, Some(PASSWORD))
        .timeout(Duration::from_secs(30))
        .send()
        .expect("GET /api/studies")
        .status()
}

#[test]
fn sighup_adds_a_user_and_a_destination_in_use_at_once_while_an_association_stays_open() {
    let app = App::spawn_full("", "", "", &user("curie", "physician"));
    let source = tempfile::tempdir().expect("tempdir");
    let mut spec = StudySpec::planning_ct(2, 481);
    spec.with_rt_objects = false;
    let study = synth::write_study(&spec, source.path()).expect("generate");
    assert_eq!(studies_as(&app, "lovelace"), StatusCode::UNAUTHORIZED);

    // One association, kept open: the first slice before the reload, the second after it.
    let mut peer = python_peer("held_open_scu.py")
        .args(["127.0.0.1", &app.port.to_string(), "SIMGATE"])
        .args(study.files.iter().map(|f| &f.path))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("peer");
    let mut said = BufReader::new(peer.stdout.take().expect("stdout")).lines();
    let mut next_line = || said.next().expect("a line").expect("peer output");
    assert_eq!(next_line(), "stored 1 0x0000");

    let tps = Storescp::start("TPS");
    app.edit_config(|c| {
        let with_user = c.replacen("[listener]", &format!("{}\n[listener]", user("lovelace", "viewer")), 1);
        format!(
            "{}\n[[destinations]]\nname = \"tps\"\nae_title = \"TPS\"\naddress = \"127.0.0.1:{}\"\n",
            with_user.replace("idle_timeout = \"20s\"", "idle_timeout = \"25s\""),
            tps.port
        )
    });
    app.signal("HUP");
    let reloaded = app.wait_for_log("configuration reloaded");
    assert!(
        reloaded.contains("users=2") && reloaded.contains("destinations=1"),
        "{reloaded}"
    );
    let restart = app.wait_for_log("only after a restart");
    assert!(restart.contains("listener.idle_timeout"), "{restart}");
    assert!(
        !restart.contains("destinations") && !restart.contains("http.users"),
        "{restart}"
    );

    // The new user signs in; the old one still can.
    assert_eq!(studies_as(&app, "lovelace"), StatusCode::OK);
    assert_eq!(studies_as(&app, "curie"), StatusCode::OK);

    // The same association goes on; what arrives now goes to the new destination.
    let mut stdin = peer.stdin.take().expect("stdin");
    writeln!(stdin, "go").expect("tell the peer");
    assert_eq!(next_line(), "stored 2 0x0000");
    assert_eq!(next_line(), "released");
    assert!(peer.wait().expect("peer").success());
    let delivered = tps.wait_for(1);
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert!(
        tps.datasets()
            .contains_key(&study.files[1].sop_instance_uid),
        "the instance stored after the reload reached the new destination"
    );
    assert_eq!(app.count("SELECT count(*) FROM instances"), 2);
    // And the old user's sessions were left alone, the process never restarted.
    assert_eq!(app.log().matches("DICOM listener ready").count(), 1);

    // Removing the user signs them out at once; removing the destination stops its forwarder.
    app.edit_config(|c| {
        let user = c
            .find("[[http.users]]\nname = \"lovelace\"")
            .expect("the new user");
        let end = user + c[user..].find("[listener]").expect("listener after it");
        let c = format!("{}{}", &c[..user], &c[end..]);
        let at = c.find("[[destinations]]").expect("destination");
        c[..at].to_string()
    });
    app.signal("HUP");
    let reloaded = app.wait_for_log_count("configuration reloaded", 2);
    assert!(
        reloaded.contains("users=1") && reloaded.contains("destinations=0"),
        "{reloaded}"
    );
    app.wait_for_log("forwarder stopped");
    assert_eq!(studies_as(&app, "lovelace"), StatusCode::UNAUTHORIZED);
    assert_eq!(studies_as(&app, "curie"), StatusCode::OK);
}
