//! The web pages in a real browser, over HTTPS: headless Chromium, driven over WebDriver by
//! Debian's chromedriver, trusting a test CA (in an NSS database of its own, made with
//! certutil), signs in as a physician, documents the reason for a site-named 4D CT study on
//! its page and sees it leave the worklist and count as G9320 in the report. Screenshots of the
//! pages land in target/screenshots/ for a person to look at.
//!
//! Needs Debian's `chromium` and `chromium-driver` (scripts/test.sh installs them): without
//! them the test fails rather than skips.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, ensure};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use simgate_synth::{self as synth, StudySpec};
use tempfile::TempDir;

use crate::support::{App, DEADLINE, assert_success, free_port};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const WIDTH: u32 = 1400;
const HEIGHT: u32 = 1000;
const USER: &str = "curie";
const PASSWORD: &str = "correct horse battery";
const NOTE: &str = "Free-breathing 4D CT for ITV delineation";
/// How long one page may take to show what a step waits for.
const STEP: Duration = Duration::from_secs(20);

/// Debian's chromedriver on a free loopback port; killed when dropped, also when a test fails.
struct Chromedriver {
    child: Child,
    port: u16,
    log_path: PathBuf,
}

/// Fails (never skips) when the browser or its driver is not installed.
fn require_browser() {
    for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
        assert!(
            Path::new(path).exists(),
            "{path} is missing: the browser test needs Debian's {package} \
             (apt-get install chromium chromium-driver; scripts/test.sh installs both)"
        );
    }
}

impl Chromedriver {
    /// `home` is the browser's HOME: Chromium reads the CAs it trusts from
    /// `home/.pki/nssdb`.
    fn start(log_dir: &Path, home: &Path) -> Chromedriver {
        require_browser();
        let port = free_port();
        let log_path = log_dir.join("chromedriver.log");
        let child = Command::new(CHROMEDRIVER)
            .env("HOME", home)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log_path.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER}: {e}"));
        let mut driver = Chromedriver {
            child,
            port,
            log_path,
        };
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = driver.child.try_wait() {
                panic!(
                    "chromedriver exited ({status}) before listening on port {port}; log:\n{}",
                    driver.log()
                );
            }
            assert!(
                start.elapsed() < DEADLINE,
                "chromedriver did not listen on port {port} within {DEADLINE:?}; log:\n{}",
                driver.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        driver
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        // /shutdown quits the browsers of open sessions too (a failed test leaves one open);
        // a kill is the fallback.
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let _ = stream.write_all(
                b"GET /shutdown HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
            );
            let _ = stream.read(&mut [0u8; 512]);
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A HOME whose NSS database trusts `ca` for TLS servers (certutil, from libnss3-tools;
/// scripts/test.sh installs it).
fn trusting_home(ca: &str) -> TempDir {
    let home = TempDir::new().expect("home tempdir");
    let nssdb = home.path().join(".pki/nssdb");
    std::fs::create_dir_all(&nssdb).expect("nssdb folder");
    let database = format!("sql:{}", nssdb.display());
    for args in [
        vec!["-N", "-d", &database, "--empty-password"],
        vec![
            "-A",
            "-d",
            &database,
            "-n",
            "simgate test CA",
            "-t",
            "C,,",
            "-i",
            ca,
        ],
    ] {
        let output = Command::new("certutil")
            .args(&args)
            .output()
            .expect("certutil (apt-get install libnss3-tools)");
        assert_success(&output, &format!("certutil {}", args.join(" ")));
    }
    home
}

/// The `[[http.users]]` entry that `simgate user add` prints for a physician.
fn physician_entry() -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_simgate"))
        .args(["user", "add", USER, "--role", "physician"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn simgate user add");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .expect("write the password");
    let output = child.wait_with_output().expect("simgate user add");
    assert_success(&output, "simgate user add");
    let entry = String::from_utf8(output.stdout).expect("UTF-8 entry");
    assert!(entry.contains("password_hash = \"$argon2"), "{entry}");
    entry
}

fn screenshot_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).expect("create target/screenshots");
    dir
}

/// A screenshot of the whole page: the window grows until the viewport holds the page.
async fn save_screenshot(client: &Client, name: &str) -> anyhow::Result<PathBuf> {
    let sizes = client
        .execute(
            "window.scrollTo(0, 0); \
             return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight];",
            vec![],
        )
        .await
        .context("page height")?;
    let number = |i: usize| {
        sizes[i]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0)
    };
    let (page, frame) = (number(0), number(1));
    client
        .set_window_size(WIDTH, (page + frame).clamp(HEIGHT, 6000))
        .await?;
    let png = client.screenshot().await;
    client.set_window_size(WIDTH, HEIGHT).await?;
    let path = screenshot_dir().join(name);
    std::fs::write(&path, png.context("screenshot")?)
        .with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

/// Waits (bounded) until the element at `css` exists and its text contains every one of `needles`.
async fn wait_for_text(client: &Client, css: &str, needles: &[&str]) -> anyhow::Result<String> {
    let start = Instant::now();
    loop {
        let text = match client.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if needles.iter().all(|n| text.contains(n)) {
            return Ok(text);
        }
        if start.elapsed() > STEP {
            let url = client.current_url().await.map(|u| u.to_string());
            return Err(anyhow!(
                "{css:?} did not show {needles:?} within {STEP:?} on {url:?}; it shows {text:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The cells' texts of each body row of a table.
async fn rows(client: &Client, table: &str) -> anyhow::Result<Vec<Vec<String>>> {
    let mut rows = Vec::new();
    for row in client
        .find_all(Locator::Css(&format!("{table} tbody tr")))
        .await?
    {
        let mut cells = Vec::new();
        for cell in row.find_all(Locator::Css("td")).await? {
            cells.push(cell.text().await?.trim().to_string());
        }
        rows.push(cells);
    }
    Ok(rows)
}

/// Signs in as the physician; the login page sends the browser on to the worklist.
async fn sign_in(client: &Client, base: &str) -> anyhow::Result<()> {
    client.goto(&format!("{base}/login")).await?;
    let form = client
        .wait()
        .at_most(STEP)
        .for_element(Locator::Css("form[action='/login']"))
        .await
        .context("the login form")?;
    form.find(Locator::Css("input[name='name']"))
        .await?
        .send_keys(USER)
        .await?;
    form.find(Locator::Css("input[name='password']"))
        .await?
        .send_keys(PASSWORD)
        .await?;
    form.find(Locator::Css("button[type='submit']"))
        .await?
        .click()
        .await?;

    // The worklist lists the study, signed in as the physician.
    wait_for_text(client, "header .who", &[USER, "physician"]).await?;
    let cookies = client.get_all_cookies().await?;
    let session = cookies
        .iter()
        .find(|c| c.name() == "simgate_session")
        .context("the session cookie")?;
    ensure!(
        session.secure() == Some(true) && session.http_only() == Some(true),
        "over HTTPS the session cookie is Secure and HttpOnly: {session:?}"
    );
    let url = client.current_url().await?;
    ensure!(
        url.path() == "/worklist",
        "after sign-in the browser is at {url}"
    );
    Ok(())
}

async fn document_a_reason(
    client: &Client,
    base: &str,
    uid: &str,
    screenshots: &mut Vec<PathBuf>,
) -> anyhow::Result<()> {
    sign_in(client, base).await?;
    let listed = rows(client, "table#worklist").await?;
    ensure!(listed.len() == 1, "one study needs a reason: {listed:?}");
    ensure!(
        listed[0].iter().any(|c| c.contains("G9319 needs-reason")),
        "{listed:?}"
    );
    let link = client
        .find(Locator::Css(&format!(
            "table#worklist a[href='/studies/{uid}']"
        )))
        .await
        .context("the study's link on the worklist")?;
    ensure!(link.text().await? == "4DCT LUNG SIM");
    screenshots.push(save_screenshot(client, "worklist.png").await?);

    // The study page: needs a reason, with the suggested one pre-selected.
    link.click().await?;
    let form = client
        .wait()
        .at_most(STEP)
        .for_element(Locator::Css("form#reason-form"))
        .await
        .context("the reason form on the study page")?;
    let url = client.current_url().await?;
    ensure!(url.path() == format!("/studies/{uid}"), "at {url}");
    wait_for_text(client, "main .card .badge", &["G9319", "needs-reason"]).await?;
    let suggested = form
        .find(Locator::Css(
            "input[type='radio'][name='code'][value='rt-planning']",
        ))
        .await
        .context("the rt-planning choice")?;
    ensure!(
        suggested.is_selected().await?,
        "the suggested reason is not pre-selected"
    );
    let checked = form
        .find_all(Locator::Css("input[type='radio'][name='code']:checked"))
        .await?;
    ensure!(checked.len() == 1, "{} choices checked", checked.len());
    let csrf = form
        .find(Locator::Css("input[type='hidden'][name='csrf']"))
        .await?;
    ensure!(
        csrf.attr("value").await?.is_some_and(|v| v.len() == 64),
        "the form carries the session's CSRF token"
    );
    ensure!(
        client
            .find_all(Locator::Css("table#reasons"))
            .await?
            .is_empty(),
        "no reason documented yet"
    );
    form.find(Locator::Css("textarea[name='note']"))
        .await?
        .send_keys(NOTE)
        .await?;
    screenshots.push(save_screenshot(client, "study.png").await?);

    // Submitting brings the browser back to the study page, which lists the reason.
    form.find(Locator::Css("button[type='submit']"))
        .await?
        .click()
        .await?;
    wait_for_text(client, "main .card .badge", &["G9320", "reason-documented"]).await?;
    let url = client.current_url().await?;
    ensure!(url.path() == format!("/studies/{uid}"), "at {url}");
    let reasons = rows(client, "table#reasons").await?;
    ensure!(reasons.len() == 1, "{reasons:?}");
    let [_when, who, reason, note] = reasons[0].as_slice() else {
        return Err(anyhow!("reason row {:?}", reasons[0]));
    };
    ensure!(who == USER, "documented by {who:?}");
    ensure!(
        reason.starts_with("CT acquired for radiation treatment planning"),
        "reason {reason:?}"
    );
    ensure!(note == NOTE, "note {note:?}");

    // The worklist is empty now.
    client.goto(&format!("{base}/worklist")).await?;
    wait_for_text(client, "main", &["No studies match."]).await?;
    ensure!(
        client
            .find_all(Locator::Css("table#worklist"))
            .await?
            .is_empty()
    );

    // The report counts one G9320 (and nothing else) in its total row, with the chart.
    client.goto(&format!("{base}/report?date=received")).await?;
    client
        .wait()
        .at_most(STEP)
        .for_element(Locator::Css("table#report"))
        .await
        .context("the report table")?;
    client
        .find(Locator::Css("svg#chart"))
        .await
        .context("the report chart")?;
    let report = rows(client, "table#report").await?;
    let total = report
        .iter()
        .find(|r| r.first().is_some_and(|g| g == "total"))
        .ok_or_else(|| anyhow!("no total row in {report:?}"))?;
    ensure!(
        total[1..5] == ["0", "0", "1", "1"],
        "total row (G9318, G9319, G9320, Total) {total:?}"
    );
    screenshots.push(save_screenshot(client, "report.png").await?);
    Ok(())
}

/// A headless Chromium session from the driver, with its own profile folder.
async fn browser(driver: &Chromedriver, profile: &Path) -> anyhow::Result<Client> {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                format!("--window-size={WIDTH},{HEIGHT}"),
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    ClientBuilder::native()
        .capabilities(capabilities)
        .connect(&driver.url())
        .await
        .context("a Chromium session from chromedriver")
}

/// The config table of a gateway serving HTTPS with the PKI's server certificate, the
/// physician signed up.
fn https(pki: &crate::support::Pki) -> String {
    format!(
        "{}\n[http.tls]\ncertificate = {:?}\nprivate_key = {:?}\n",
        physician_entry(),
        pki.path("server.crt"),
        pki.path("server.key")
    )
}

/// Runs `steps` in a fresh Chromium that trusts the PKI's CA, against `app`'s HTTPS side
/// (`steps` gets the client and the base URL). On failure: a screenshot named `failure_png`,
/// and a panic with the error and the tails of simgate's and chromedriver's logs.
fn in_browser(
    app: &App,
    pki: &crate::support::Pki,
    failure_png: &str,
    steps: impl AsyncFnOnce(&Client, &str) -> anyhow::Result<()>,
) {
    let _ = std::fs::remove_file(screenshot_dir().join(failure_png));
    // The profile folder outlives the browser: the driver (declared later) is dropped first.
    let profile = TempDir::new().expect("profile tempdir");
    let home = trusting_home(&pki.path("ca.crt"));
    let driver = Chromedriver::start(app.dir.path(), home.path());
    let base = format!("https://127.0.0.1:{}", app.http_port);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let outcome: anyhow::Result<()> = runtime.block_on(async {
        let client = browser(&driver, profile.path()).await?;
        let done = steps(&client, &base).await;
        if done.is_err() {
            let _ = save_screenshot(&client, failure_png).await;
        }
        let closed = client.close().await.context("closing the browser");
        done.and(closed)
    });
    if let Err(e) = outcome {
        let log = app.log();
        let lines: Vec<&str> = log.lines().collect();
        panic!(
            "{e:#}\n(screenshot of the failure in {}; simgate log (tail):\n{}\nchromedriver log (tail):\n{})",
            screenshot_dir().join(failure_png).display(),
            lines[lines.len().saturating_sub(60)..].join("\n"),
            driver.log()
        );
    }
}

#[test]
fn a_physician_documents_a_reason_in_the_browser() {
    require_browser();
    let pki = crate::support::Pki::make();
    let app = App::spawn_full("", "", "ct_simulator_ae_titles = [\"CTSIM\"]", &https(&pki));
    let source = tempfile::tempdir().expect("tempdir");
    let study = synth::write_study(
        &StudySpec::ct_simulator_upload(4, 10, 2, 301),
        source.path(),
    )
    .expect("generate");
    let paths: Vec<PathBuf> = study.files.iter().map(|f| f.path.clone()).collect();
    assert_success(&app.storescu(&paths), "storescu");
    let uid = study.study_instance_uid;

    let mut screenshots = Vec::new();
    in_browser(&app, &pki, "failure.png", async |client, base| {
        document_a_reason(client, base, &uid, &mut screenshots).await
    });
    assert_eq!(screenshots.len(), 3, "{screenshots:?}");
}

/// Screenshots of the viewport at the two sizes people use, named `<page>-<width>.png`.
async fn screens(client: &Client, name: &str, shots: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for (width, height) in [(1366, 768), (1920, 1080)] {
        client.set_window_size(width, height).await?;
        let png = client.screenshot().await.context("screenshot")?;
        let path = screenshot_dir().join(format!("{name}-{width}.png"));
        std::fs::write(&path, png).with_context(|| format!("write {}", path.display()))?;
        shots.push(path);
    }
    client.set_window_size(1366, 768).await?;
    Ok(())
}

async fn click(client: &Client, css: &str) -> anyhow::Result<()> {
    client
        .wait()
        .at_most(STEP)
        .for_element(Locator::Css(css))
        .await
        .with_context(|| format!("{css} on the page"))?
        .click()
        .await?;
    Ok(())
}

/// Sixty studies waiting on a Monday morning: all of the first page in one action, nine
/// selected, the last one confirmed from its row; the headline goes to zero and the report
/// links back to them.
async fn clear_the_worklist(
    client: &Client,
    base: &str,
    shots: &mut Vec<PathBuf>,
) -> anyhow::Result<()> {
    sign_in(client, base).await?;
    client.set_window_size(1366, 768).await?;
    client.goto(&format!("{base}/worklist")).await?;
    wait_for_text(client, "#headline", &["60 need a reason", "oldest waiting"]).await?;
    wait_for_text(client, "#showing", &["Showing 1–50 of 60", "page 1 of 2"]).await?;
    // One line per study, and the table fits a 1366 px screen.
    let fit = client
        .execute(
            "const row = document.querySelector('table#worklist tbody tr');\
             return [row.getBoundingClientRect().height, document.querySelector('table#worklist').getBoundingClientRect().width, window.innerWidth];",
            vec![],
        )
        .await?;
    let number = |i: usize| fit[i].as_f64().unwrap_or(f64::MAX);
    ensure!(number(0) < 40.0, "a worklist row is {} px tall", number(0));
    ensure!(
        number(1) <= number(2),
        "the worklist is {} px wide in a {} px window",
        number(1),
        number(2)
    );
    screens(client, "worklist", shots).await?;

    // Everything on the first page, in one action.
    click(client, "button[name='scope'][value='page']").await?;
    wait_for_text(
        client,
        "#done-banner",
        &["Documented 50 studies", "treatment planning"],
    )
    .await?;
    wait_for_text(client, "#headline", &["10 need a reason"]).await?;

    // Nine of the ten left, selected one by one.
    let boxes = client
        .find_all(Locator::Css(
            "table#worklist input[type='checkbox'][name='study']",
        ))
        .await?;
    ensure!(boxes.len() == 10, "{} rows to select", boxes.len());
    for checkbox in boxes.iter().take(9) {
        checkbox.click().await?;
    }
    click(client, "button[name='scope'][value='selected']").await?;
    wait_for_text(client, "#done-banner", &["Documented 9 studies"]).await?;
    wait_for_text(client, "#headline", &["1 needs a reason"]).await?;

    // The last one: its suggested reason confirmed from the row.
    click(client, "table#worklist button[name='confirm']").await?;
    wait_for_text(client, "#done-banner", &["Documented 1 study"]).await?;
    wait_for_text(client, "#headline", &["Nothing needs a reason."]).await?;
    screens(client, "worklist-cleared", shots).await?;

    // A study page, the report (counts on the day received) and its link back to the list.
    client
        .goto(&format!("{base}/worklist?status=reason-documented"))
        .await?;
    click(client, "table#worklist td.clip a[href^='/studies/']").await?;
    wait_for_text(client, "main .card .badge", &["G9320"]).await?;
    screens(client, "study", shots).await?;
    client
        .goto(&format!("{base}/report?date=received&by=station"))
        .await?;
    let report = rows(client, "table#report").await?;
    let total = report
        .iter()
        .find(|r| r.first().is_some_and(|g| g == "total"))
        .ok_or_else(|| anyhow!("no total row in {report:?}"))?;
    ensure!(total[1..5] == ["0", "0", "60", "60"], "total row {total:?}");
    ensure!(
        !client
            .find_all(Locator::Css("svg#chart a text"))
            .await?
            .is_empty(),
        "the bars carry their numbers"
    );
    screens(client, "report", shots).await?;
    click(client, "table#report tbody tr:last-child td:nth-child(4) a").await?;
    wait_for_text(client, "h1", &["Studies with a documented reason"]).await?;
    wait_for_text(client, "#showing", &["of 60"]).await?;
    client.goto(&format!("{base}/queue")).await?;
    wait_for_text(client, "table#queue", &["tps", "60"]).await?;
    screens(client, "queue", shots).await?;
    Ok(())
}

#[test]
fn sixty_studies_are_cleared_from_the_worklist_in_three_actions() {
    require_browser();
    let pki = crate::support::Pki::make();
    // A TPS that is down, so the queue page has something to show.
    let tables = format!(
        "ct_simulator_ae_titles = [\"CTSIM\"]\n[[destinations]]\nname = \"tps\"\nae_title = \"TPS\"\naddress = \"127.0.0.1:{}\"\n",
        free_port()
    );
    let app = App::spawn_full("", "", &tables, &https(&pki));
    let source = tempfile::tempdir().expect("tempdir");
    let mut paths = Vec::new();
    for seed in 0..60u64 {
        let mut spec = StudySpec::planning_ct(1, 7000 + seed);
        spec.study_description = "4DCT LUNG SIM".into();
        spec.station_name = if seed % 3 == 0 { "CTSIM02" } else { "CTSIM01" }.into();
        spec.with_rt_objects = false;
        spec.rows = 32;
        spec.columns = 32;
        let written =
            synth::write_study(&spec, &source.path().join(seed.to_string())).expect("generate");
        paths.extend(written.files.into_iter().map(|f| f.path));
    }
    assert_success(&app.storescu(&paths), "storescu");
    assert_eq!(
        app.count("SELECT count(*) FROM study_verdicts WHERE status = 'needs-reason'"),
        60
    );

    let mut shots = Vec::new();
    in_browser(&app, &pki, "failure-monday.png", async |client, base| {
        clear_the_worklist(client, base, &mut shots).await
    });
    assert_eq!(shots.len(), 10, "{shots:?}");
    assert_eq!(app.count("SELECT count(*) FROM study_reasons"), 60);
    assert_eq!(
        app.count("SELECT count(*) FROM audit_log WHERE action = 'document-reason'"),
        60
    );
}
