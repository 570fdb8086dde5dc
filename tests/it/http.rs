//! The JSON API, pages' escaping, CSRF, /metrics and /healthz, with a real HTTP client against
//! a spawned gateway.

use std::process::{Command, Stdio};

use reqwest::StatusCode;
use reqwest::blocking::Client;
use serde_json::{Value, json};
use simgate_synth::StudySpec;

use crate::support::{App, assert_success};

pub(crate) const PASSWORD: &str = "correct horse battery";

/// Runs `simgate user add` with the test password on stdin; returns (stdout, stderr).
fn user_add(args: &[&str]) -> (String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_simgate"))
        .args(["user", "add"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("simgate user add");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .expect("write");
    let output = child.wait_with_output().expect("wait");
    assert_success(&output, "simgate user add");
    (
        String::from_utf8(output.stdout).expect("utf-8"),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A `[[http.users]]` block made by `simgate user add`.
pub(crate) fn user(name: &str, role: &str) -> String {
    user_add(&[name, "--role", role]).0
}

fn gateway() -> App {
    let users = format!(
        "{}{}{}",
        user("curie", "physician"),
        user("watson", "viewer"),
        user("root", "admin")
    );
    App::spawn_full("", "", "", &users)
}

pub(crate) fn client() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

pub(crate) fn url(app: &App, path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", app.http_port)
}

fn send(app: &App, spec: &StudySpec) -> String {
    app.send_study(spec)
}

fn site_study(seed: u64) -> StudySpec {
    StudySpec::ct_simulator_upload(3, 2, 2, seed)
}

#[test]
fn the_api_lists_details_and_documents_reasons_with_the_right_refusals() {
    let app = gateway();
    let uid = send(&app, &site_study(401));
    let http = client();

    // Without credentials: 401 with a JSON error body.
    let response = http.get(url(&app, "/api/studies")).send().expect("request");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.json::<Value>().expect("json")["error"].is_string());

    // List and detail.
    let list: Value = http
        .get(url(&app, "/api/studies?status=needs-reason"))
        .basic_auth("watson", Some(PASSWORD))
        .send()
        .expect("request")
        .json()
        .expect("json");
    assert_eq!(list["studies"].as_array().expect("studies").len(), 1);
    assert_eq!(list["studies"][0]["study_instance_uid"], uid.as_str());
    let filtered: Value = http
        .get(url(&app, "/api/studies?q=no-such-patient"))
        .basic_auth("watson", Some(PASSWORD))
        .send()
        .expect("request")
        .json()
        .expect("json");
    assert_eq!(filtered["studies"].as_array().expect("studies").len(), 0);
    let detail: Value = http
        .get(url(&app, &format!("/api/studies/{uid}")))
        .basic_auth("watson", Some(PASSWORD))
        .send()
        .expect("request")
        .json()
        .expect("json");
    assert_eq!(detail["naming"]["status"], "needs-reason");
    assert_eq!(detail["series"].as_array().expect("series").len(), 5);
    assert!(
        detail["naming"]["suggestions"]
            .as_array()
            .is_some_and(|s| s.len() <= 3)
    );

    // 404 for an unknown UID, 400 for a malformed one and for bad parameters.
    let missing = http
        .get(url(&app, "/api/studies/1.2.3.4.5.6"))
        .basic_auth("watson", Some(PASSWORD))
        .send()
        .expect("request");
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert!(
        missing.json::<Value>().expect("json")["error"]
            .as_str()
            .unwrap_or("")
            .contains("1.2.3.4.5.6")
    );
    let malformed = http
        .get(url(&app, "/api/studies/..%2F..%2Fetc"))
        .basic_auth("watson", Some(PASSWORD))
        .send()
        .expect("request");
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    let bad_date = http
        .get(url(&app, "/api/studies?since=yesterday"))
        .basic_auth("watson", Some(PASSWORD))
        .send()
        .expect("request");
    assert_eq!(bad_date.status(), StatusCode::BAD_REQUEST);
    assert!(
        bad_date.json::<Value>().expect("json")["error"]
            .as_str()
            .unwrap_or("")
            .contains("since")
    );

    // A viewer may not document a reason.
    let reasons = url(&app, &format!("/api/studies/{uid}/reasons"));
    let refused = http
        .post(&reasons)
        .basic_auth("watson", Some(PASSWORD))
        .json(&json!({"code": "rt-planning"}))
        .send()
        .expect("request");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    // Bad input: unknown code, missing note for "other", an author field in the body.
    for body in [
        json!({"code": "because"}),
        json!({"code": "other"}),
        json!({"code": "rt-planning", "documented_by": "someone else"}),
    ] {
        let response = http
            .post(&reasons)
            .basic_auth("curie", Some(PASSWORD))
            .json(&body)
            .send()
            .expect("request");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        assert!(response.json::<Value>().expect("json")["error"].is_string());
    }
    let wrong_password = http
        .post(&reasons)
        .basic_auth("curie", Some("guess"))
        .json(&json!({"code": "rt-planning"}))
        .send()
        .expect("request");
    assert_eq!(wrong_password.status(), StatusCode::UNAUTHORIZED);

    // A physician documents it: the author is the authenticated user.
    let created = http
        .post(&reasons)
        .basic_auth("curie", Some(PASSWORD))
        .json(&json!({"code": "rt-planning", "note": "4D planning CT per protocol"}))
        .send()
        .expect("request");
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(
        created.json::<Value>().expect("json")["status"],
        "reason-documented"
    );
    let detail: Value = http
        .get(url(&app, &format!("/api/studies/{uid}")))
        .basic_auth("curie", Some(PASSWORD))
        .send()
        .expect("request")
        .json()
        .expect("json");
    assert_eq!(detail["naming"]["reasons"][0]["documented_by"], "curie");
    assert_eq!(detail["audit"][0]["user_name"], "curie");
    assert_eq!(detail["audit"][0]["action"], "document-reason");
    assert!(
        detail["audit"][0]["remote_address"]
            .as_str()
            .unwrap_or("")
            .starts_with("127.0.0.1:")
    );

    // Report and queue.
    let report: Value = http
        .get(url(&app, "/api/report?date=received"))
        .basic_auth("watson", Some(PASSWORD))
        .send()
        .expect("request")
        .json()
        .expect("json");
    let total = report["rows"]
        .as_array()
        .expect("rows")
        .last()
        .expect("total")
        .clone();
    assert_eq!(total["g9320"], 1);
    let queue = http
        .post(url(&app, "/api/queue/retry"))
        .basic_auth("curie", Some(PASSWORD))
        .json(&json!({"dead": true}))
        .send()
        .expect("request");
    assert_eq!(
        queue.status(),
        StatusCode::FORBIDDEN,
        "only admins act on the queue"
    );
    let queue = http
        .post(url(&app, "/api/queue/retry"))
        .basic_auth("root", Some(PASSWORD))
        .json(&json!({"dead": true}))
        .send()
        .expect("request");
    assert_eq!(queue.status(), StatusCode::OK);
}

/// Fetches the login form as a browser would: its CSRF cookie and the same token in the form.
fn login_form(app: &App, http: &Client) -> (String, String) {
    let form = http.get(url(app, "/login")).send().expect("login form");
    let cookie = form.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .split(';')
        .next()
        .expect("pair")
        .to_string();
    let body = form.text().expect("page");
    let marker = "name=\"login_csrf\" value=\"";
    let start = body.find(marker).expect("a login_csrf field") + marker.len();
    let token = body[start..].split('"').next().expect("value").to_string();
    (cookie, token)
}

/// Posts the login form (fetched first) with this name, password and next.
fn login_attempt(
    app: &App,
    http: &Client,
    name: &str,
    password: &str,
    next: &str,
) -> reqwest::blocking::Response {
    let (cookie, token) = login_form(app, http);
    http.post(url(app, "/login"))
        .header("cookie", cookie)
        .form(&[
            ("name", name),
            ("password", password),
            ("next", next),
            ("login_csrf", &token),
        ])
        .send()
        .expect("login")
}

/// Signs in through the login form and returns the session cookie.
pub(crate) fn sign_in(app: &App, http: &Client, name: &str) -> String {
    let response = login_attempt(app, http, name, PASSWORD, "/worklist");
    assert_eq!(response.status(), StatusCode::SEE_OTHER, "login of {name}");
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    cookie.split(';').next().expect("pair").to_string()
}

#[test]
fn forms_need_the_session_csrf_token() {
    let app = gateway();
    let uid = send(&app, &site_study(402));
    let http = client();
    let cookie = sign_in(&app, &http, "curie");
    let action = url(&app, &format!("/studies/{uid}/reasons"));

    let without = http
        .post(&action)
        .header("cookie", &cookie)
        .form(&[("code", "rt-planning")])
        .send()
        .expect("post");
    assert_eq!(without.status(), StatusCode::FORBIDDEN);
    let forged = http
        .post(&action)
        .header("cookie", &cookie)
        .form(&[("code", "rt-planning"), ("csrf", "0000")])
        .send()
        .expect("post");
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    // A session may not use the JSON API's POST either (no CSRF there).
    let api = http
        .post(url(&app, &format!("/api/studies/{uid}/reasons")))
        .header("cookie", &cookie)
        .json(&json!({"code": "rt-planning"}))
        .send()
        .expect("post");
    assert_eq!(api.status(), StatusCode::FORBIDDEN);

    // With the token from the page, it works.
    let page = http
        .get(url(&app, &format!("/studies/{uid}")))
        .header("cookie", &cookie)
        .send()
        .expect("page")
        .text()
        .expect("text");
    let token = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("csrf token in the page")
        .to_string();
    let ok = http
        .post(&action)
        .header("cookie", &cookie)
        .form(&[("code", "rt-planning"), ("csrf", token.as_str())])
        .send()
        .expect("post");
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    let detail: Value = http
        .get(url(&app, &format!("/api/studies/{uid}")))
        .basic_auth("curie", Some(PASSWORD))
        .send()
        .expect("get")
        .json()
        .expect("json");
    assert_eq!(detail["naming"]["status"], "reason-documented");

    // Pages redirect to the login without a session.
    let redirected = http.get(url(&app, "/worklist")).send().expect("get");
    assert_eq!(redirected.status(), StatusCode::SEE_OTHER);
    assert!(
        redirected.headers()["location"]
            .to_str()
            .unwrap_or("")
            .starts_with("/login")
    );
}

#[test]
fn hostile_values_render_escaped() {
    let app = gateway();
    let mut spec = site_study(403);
    spec.study_description = "<script>alert(1)</script> \"quoted\" 'single' & Ünïcödé 胸部".into();
    spec.patient_name = "O'Brien^<img src=x onerror=alert(2)>".into();
    spec.station_name = "\"><svg onload=alert(3)>".chars().take(16).collect();
    spec.series[0].description = format!("{}<b>bold</b>", "LONG ".repeat(12));
    let uid = send(&app, &spec);
    let http = client();
    let cookie = sign_in(&app, &http, "watson");
    for path in ["/worklist".to_string(), format!("/studies/{uid}")] {
        let page = http
            .get(url(&app, &path))
            .header("cookie", &cookie)
            .send()
            .expect("page")
            .text()
            .expect("text");
        for raw in [
            "<script>alert(1)",
            "<img src=x",
            "<svg onload",
            "<b>bold</b>",
        ] {
            assert!(!page.contains(raw), "{path} contains {raw:?} unescaped");
        }
        assert!(
            page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{path} lacks the escaped description"
        );
        assert!(
            page.contains("Ünïcödé 胸部"),
            "{path} lost the non-ASCII text"
        );
    }
}

#[test]
fn metrics_parse_as_prometheus_text_and_match_what_was_sent() {
    let app = gateway();
    let mut spec = StudySpec::planning_ct(6, 404);
    spec.with_rt_objects = false;
    send(&app, &spec);
    assert_success(&app.echoscu(), "echoscu");
    let refused = app.echoscu_as("CTSIM", "WRONG");
    assert!(!refused.status.success());
    let text = client()
        .get(url(&app, "/metrics"))
        .send()
        .expect("metrics")
        .text()
        .expect("text");

    let mut values = std::collections::HashMap::new();
    let mut typed = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            typed.insert(parts.next().expect("name").to_string());
            assert!(
                matches!(parts.next(), Some("counter" | "gauge" | "histogram")),
                "{line}"
            );
            continue;
        }
        if line.starts_with("# HELP ") || line.is_empty() {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let name = series.split('{').next().expect("name");
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad name: {line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "bad labels: {line}"
            );
        }
        let family = name
            .trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        assert!(
            typed.contains(name) || typed.contains(family),
            "{name} has no TYPE line"
        );
        values.insert(series.to_string(), value);
    }
    assert_eq!(
        values["simgate_instances_received_total{outcome=\"stored\"}"],
        6.0
    );
    assert_eq!(
        values["simgate_associations_total"], 2.0,
        "storescu and echoscu"
    );
    assert_eq!(values["simgate_echoes_total"], 1.0);
    assert_eq!(values["simgate_store_seconds_count"], 6.0);
    assert_eq!(values["simgate_store_seconds_bucket{le=\"+Inf\"}"], 6.0);
    assert!(values["simgate_received_bytes_total"] > 6.0 * 512.0 * 512.0 * 2.0);
    assert!(
        values
            .keys()
            .any(|k| k.starts_with("simgate_rejections_total{cause=\"association-rejected")),
        "{text}"
    );
    assert_eq!(values["simgate_studies{status=\"needs-reason\"}"], 1.0);

    let health: Value = client()
        .get(url(&app, "/healthz"))
        .send()
        .expect("healthz")
        .json()
        .expect("json");
    assert_eq!(health["status"], "ok");
    let openapi: Value = client()
        .get(url(&app, "/api/openapi.json"))
        .send()
        .expect("openapi")
        .json()
        .expect("json");
    assert!(openapi["paths"]["/api/studies/{study_uid}/reasons"]["post"].is_object());
}

#[test]
fn without_users_the_pages_are_read_only() {
    let app = App::spawn();
    let uid = send(&app, &site_study(405));
    let http = client();
    let page = http.get(url(&app, "/worklist")).send().expect("page");
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().expect("text").contains(&uid));
    let refused = http
        .post(url(&app, &format!("/api/studies/{uid}/reasons")))
        .json(&json!({"code": "rt-planning"}))
        .send()
        .expect("post");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
}

#[test]
fn an_api_token_works_as_bearer_credentials() {
    let (entry, stderr) = user_add(&["robot", "--role", "viewer", "--api-token"]);
    let token = stderr
        .rsplit(": ")
        .next()
        .expect("token")
        .trim()
        .to_string();
    assert_eq!(token.len(), 64, "{token}");
    let app = App::spawn_full("", "", "", &entry);
    let http = client();
    let ok = http
        .get(url(&app, "/api/queue"))
        .bearer_auth(&token)
        .send()
        .expect("request");
    assert_eq!(ok.status(), StatusCode::OK);
    let wrong = http
        .get(url(&app, "/api/queue"))
        .bearer_auth("0".repeat(64))
        .send()
        .expect("request");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
}

#[test]
fn wrong_passwords_are_throttled_and_the_name_stays_out_of_the_log() {
    let app = App::spawn_full("", "", "", &user("curie", "physician"));
    let http = client();
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let response = login_attempt(&app, &http, "curie", "not-it", "/worklist");
        statuses.push(response.status());
    }
    assert_eq!(statuses[..4], [StatusCode::UNAUTHORIZED; 4], "{statuses:?}");
    assert!(
        statuses[4..]
            .iter()
            .all(|s| *s == StatusCode::TOO_MANY_REQUESTS),
        "after 4 failures every attempt waits: {statuses:?}"
    );
    // Throttled means not even the right password is checked until the wait is over.
    let right = login_attempt(&app, &http, "curie", PASSWORD, "/worklist");
    assert_eq!(right.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(right.headers().contains_key("retry-after"));
    let log = app.wait_for_log("throttling");
    assert_eq!(
        app.log().matches("throttling").count(),
        2,
        "once per burst, per user and per address: {log}"
    );
    assert!(
        !app.log().contains("curie"),
        "login names stay out of the log above debug"
    );
}

#[test]
fn a_client_that_never_finishes_its_headers_is_closed() {
    use std::io::{Read, Write};
    let app = App::spawn_full("", "", "", "header_read_timeout = \"1s\"");
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", app.http_port)).expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .expect("partial headers");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    let started = std::time::Instant::now();
    let mut buffer = [0u8; 512];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("still open after {:?}: {e}", started.elapsed()),
        }
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let ok = client().get(url(&app, "/healthz")).send().expect("healthz");
    assert_eq!(ok.status(), StatusCode::OK);
}

#[test]
fn sign_in_lands_only_on_local_paths_and_needs_its_form() {
    let app = App::spawn_full("", "", "", &user("curie", "physician"));
    let http = client();
    for (next, lands) in [
        ("/\\evil.example/x", "/"),
        ("//evil.example/x", "/"),
        ("http://evil.example/x", "/"),
        ("/studies?x=1", "/studies?x=1"),
    ] {
        let response = login_attempt(&app, &http, "curie", PASSWORD, next);
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{next}");
        assert_eq!(response.headers()["location"], lands, "{next}");
    }
    // A login posted without the form's token (from another site) is refused.
    let forged = http
        .post(url(&app, "/login"))
        .form(&[("name", "curie"), ("password", PASSWORD), ("next", "/")])
        .send()
        .expect("login");
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    // Logout ends the session even without the form's CSRF token.
    let cookie = sign_in(&app, &http, "curie");
    let out = http
        .post(url(&app, "/logout"))
        .header("cookie", &cookie)
        .form(&[("csrf", "")])
        .send()
        .expect("logout");
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    let after = http
        .get(url(&app, "/api/queue"))
        .header("cookie", &cookie)
        .send()
        .expect("request");
    assert_eq!(
        after.status(),
        StatusCode::UNAUTHORIZED,
        "the session is gone"
    );
}

#[test]
fn pages_carry_security_headers_and_the_open_mode_checks_the_host() {
    let app = App::spawn();
    let http = client();
    let page = http.get(url(&app, "/worklist")).send().expect("worklist");
    assert_eq!(page.status(), StatusCode::OK);
    let headers = page.headers();
    assert!(
        headers["content-security-policy"]
            .to_str()
            .expect("csp")
            .contains("default-src 'none'")
    );
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["cache-control"], "no-store");
    let rebound = http
        .get(url(&app, "/worklist"))
        .header("host", "evil.example")
        .send()
        .expect("request");
    assert_eq!(rebound.status(), StatusCode::MISDIRECTED_REQUEST);
}

#[test]
fn report_and_study_csv_cells_cannot_start_a_formula() {
    let app = App::spawn();
    let mut spec = StudySpec::planning_ct(2, 71);
    spec.with_rt_objects = false;
    spec.rows = 64;
    spec.columns = 64;
    spec.study_description = "=HYPERLINK(\"http://evil.example\")".into();
    spec.station_name = "+CTSIM".into();
    send(&app, &spec);
    let cli = app.cli(&["studies", "--csv"]);
    assert_success(&cli, "simgate studies --csv");
    let text = String::from_utf8_lossy(&cli.stdout).into_owned();
    assert!(text.contains("'=HYPERLINK"), "{text}");
    assert!(
        !text.contains(",=HYPERLINK") && !text.contains(",\"=HYPERLINK"),
        "{text}"
    );
    let report = client()
        .get(url(&app, "/report.csv?by=station&date=received"))
        .send()
        .expect("report.csv");
    let body = report.text().expect("csv");
    assert!(body.contains("'+CTSIM"), "{body}");

    // The billing columns are there, and a hostile reason note is neutralised too.
    let header = text.lines().next().expect("header");
    for column in [
        "study_instance_uid",
        "hcpcs",
        "accession_number",
        "reason_code",
        "reason_note",
        "documented_by",
        "documented_at",
    ] {
        assert!(
            header.split(',').any(|c| c == column),
            "{column} in {header}"
        );
    }
    let uid = {
        let studies = app.cli(&["studies", "--json"]);
        let value: Value = serde_json::from_slice(&studies.stdout).expect("json");
        value["studies"][0]["study_instance_uid"]
            .as_str()
            .expect("uid")
            .to_string()
    };
    let reason = app.cli(&[
        "reason",
        &uid,
        "--code",
        "other",
        "--note",
        "@SUM(A1:A9)",
        "--by",
        "nobody",
    ]);
    // No configured user: the CLI refuses (and says so); document through the store instead.
    assert!(!reason.status.success());
    app.db()
        .execute(
            "INSERT INTO study_reasons (study_instance_uid, reason_code, note, documented_by, documented_at)
             VALUES (?1, 'other', '@SUM(A1:A9)', '-dr', '2026-12-01T08:00:00Z')",
            [&uid],
        )
        .expect("a hostile reason row");
    let cli = app.cli(&["studies", "--csv"]);
    let text = String::from_utf8_lossy(&cli.stdout).into_owned();
    assert!(
        text.contains("'@SUM(A1:A9)") && text.contains("'-dr"),
        "{text}"
    );
    assert!(!text.contains(",@SUM") && !text.contains(",-dr"), "{text}");

    // The root-cause table: the hostile name and station neutralised, the columns there.
    let causes = client()
        .get(url(&app, "/report/root-causes.csv?date=received"))
        .send()
        .expect("root-causes.csv")
        .text()
        .expect("csv");
    assert!(
        causes.starts_with("kind,name,studies,station,protocol,calling_ae_title,nearest"),
        "{causes}"
    );
    assert!(
        causes.contains("'=HYPERLINK") && causes.contains("'+CTSIM"),
        "{causes}"
    );
    assert!(
        !causes.contains(",=HYPERLINK") && !causes.contains(",+CTSIM"),
        "{causes}"
    );
}

#[test]
fn sixty_reasons_in_one_api_request_each_with_its_reason_and_audit_row() {
    let app = gateway();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut files = Vec::new();
    let mut uids = Vec::new();
    for seed in 0..60u64 {
        let mut spec = StudySpec::planning_ct(1, 8000 + seed);
        spec.with_rt_objects = false;
        spec.rows = 32;
        spec.columns = 32;
        spec.study_description = "LUNG SIM LOCAL".into();
        let written = simgate_synth::write_study(&spec, &dir.path().join(seed.to_string()))
            .expect("generate");
        uids.push(written.study_instance_uid.clone());
        files.extend(written.files.into_iter().map(|f| f.path));
    }
    let mut standard = StudySpec::planning_ct(1, 8100);
    standard.with_rt_objects = false;
    standard.rows = 32;
    standard.columns = 32;
    standard.study_description = "CT Treatment Planning  Intermediate".into();
    let standard =
        simgate_synth::write_study(&standard, &dir.path().join("standard")).expect("generate");
    files.extend(standard.files.iter().map(|f| f.path.clone()));
    assert_success(&app.storescu(&files), "storescu");
    let http = client();
    let post = |who: &str, body: Value| {
        http.post(url(&app, "/api/reasons"))
            .basic_auth(who, Some(PASSWORD))
            .json(&body)
            .send()
            .expect("POST /api/reasons")
    };
    // Paged and sorted as asked, the filters kept.
    let page: Value = http
        .get(url(
            &app,
            "/api/studies?status=needs-reason&sort=accession&order=desc&per=25&page=2",
        ))
        .basic_auth("watson", Some(PASSWORD))
        .send()
        .expect("GET /api/studies")
        .json()
        .expect("json");
    assert_eq!(
        (page["total"].as_u64(), page["pages"].as_u64()),
        (Some(60), Some(3))
    );
    let accessions: Vec<&str> = page["studies"]
        .as_array()
        .expect("studies")
        .iter()
        .map(|s| s["accession_number"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(accessions.len(), 25);
    assert!(
        accessions.windows(2).all(|w| w[0] >= w[1]),
        "{accessions:?}"
    );
    assert_eq!(accessions[0], "A0000008034", "page 2 of a descending sort");
    // The study page refuses "other" without a note and shows the form again, choice kept.
    let cookie = sign_in(&app, &http, "curie");
    let study_page = http
        .get(url(&app, &format!("/studies/{}", uids[0])))
        .header("cookie", &cookie)
        .send()
        .expect("page")
        .text()
        .expect("text");
    let token = study_page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("csrf")
        .to_string();
    let refused = http
        .post(url(&app, &format!("/studies/{}/reasons", uids[0])))
        .header("cookie", &cookie)
        .form(&[("csrf", token.as_str()), ("code", "other"), ("note", " ")])
        .send()
        .expect("post");
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let again = refused.text().expect("text");
    assert!(
        again.contains("id=\"form-problem\"") && again.contains("needs a note"),
        "{again}"
    );
    assert!(
        again.contains("value=\"other\" required checked"),
        "the choice is kept"
    );
    // A viewer may not; "other" needs a note; more than 500 studies are refused.
    assert_eq!(
        post("watson", json!({"studies": uids, "code": "rt-planning"})).status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        post("curie", json!({"studies": uids, "code": "other"})).status(),
        StatusCode::BAD_REQUEST
    );
    let many: Vec<String> = (0..501).map(|i| format!("1.2.3.{i}")).collect();
    assert_eq!(
        post("curie", json!({"studies": many, "code": "rt-planning"})).status(),
        StatusCode::BAD_REQUEST
    );
    let mut asked = uids.clone();
    asked.push("1.2.3.4.5.6.7".into());
    asked.push("not a uid".into());
    asked.push(standard.study_instance_uid.clone());
    let started = std::time::Instant::now();
    let response = post(
        "curie",
        json!({"studies": asked, "code": "rt-planning", "note": "4D"}),
    );
    let elapsed = started.elapsed();
    assert_eq!(response.status(), StatusCode::CREATED);
    let results: Value = response.json().expect("json");
    let results = results["results"].as_array().expect("results");
    assert_eq!(results.len(), 63);
    assert!(
        results[..60]
            .iter()
            .all(|r| r["outcome"] == "documented" && r["status"] == "reason-documented")
    );
    assert_eq!(results[60]["outcome"], "unknown");
    assert_eq!(results[61]["outcome"], "invalid-uid");
    assert_eq!(results[62]["outcome"], "already-conforming");
    assert_eq!(app.count("SELECT count(*) FROM study_reasons"), 60);
    assert_eq!(
        app.count("SELECT count(*) FROM audit_log WHERE action = 'document-reason' AND user_name = 'curie'"),
        60
    );
    // The server's own figure for the note (not asserted: speed is the benchmark's business).
    let log = app.wait_for_log("bulk reasons documented");
    let server_ms = log
        .lines()
        .find(|l| l.contains("bulk reasons documented"))
        .and_then(|l| l.split("elapsed_ms=").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or("?")
        .to_string();
    eprintln!(
        "bulk: 60 studies documented in {server_ms} ms server-side, {} ms round trip",
        elapsed.as_millis()
    );
}
