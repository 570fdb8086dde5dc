//! `simgate doctor`: what an administrator checks first, in one command: the config, the
//! storage folder (writable, free space against the reserve), the index (`integrity_check`),
//! the gateway process, each destination (C-ECHO, timed), the TLS certificates' expiry and
//! the nomenclature sources loaded. Each check says ok, warning or problem; any problem makes
//! the exit code non-zero.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::config::Config;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Ok,
    Warning,
    Problem,
}

#[derive(Debug, Serialize)]
pub struct Check {
    /// Stable names: config, storage, free-space, database, gateway, destination:NAME,
    /// certificate:KEY, nomenclature.
    pub check: String,
    pub state: State,
    pub detail: String,
    /// How long it took, where that is the point (C-ECHO).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub milliseconds: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub config: PathBuf,
    pub checks: Vec<Check>,
}

impl Report {
    pub fn healthy(&self) -> bool {
        self.checks.iter().all(|c| c.state != State::Problem)
    }

    fn add(&mut self, check: impl Into<String>, state: State, detail: impl Into<String>) {
        self.checks.push(Check {
            check: check.into(),
            state,
            detail: detail.into(),
            milliseconds: None,
        });
    }
}

/// A certificate expiring sooner than this is a warning.
const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);

/// Runs every check; a config that does not load is the only check then.
pub async fn run(config_path: &Path) -> Report {
    let mut report = Report {
        config: crate::config::absolute(config_path),
        checks: Vec::new(),
    };
    let config = match Config::load(config_path) {
        Ok(config) => config,
        Err(e) => {
            report.add("config", State::Problem, crate::error_chain(&e));
            return report;
        }
    };
    // What check-config reads beside the file itself: the lists and rules it names.
    if let Err(e) = crate::service::rules::check_files(&config.naming) {
        report.add("config", State::Problem, crate::error_chain(&e));
        return report;
    }
    report.add(
        "config",
        State::Ok,
        format!("{} is valid", config.source.display()),
    );
    let blocking = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || local_checks(&config)).await
    };
    match blocking {
        Ok(checks) => report.checks.extend(checks),
        Err(e) => report.add(
            "storage",
            State::Problem,
            format!("the checks did not finish: {e}"),
        ),
    }
    for destination in &config.destinations {
        report.checks.push(echo(&config, destination).await);
    }
    report
}

/// The checks that read files and SQLite (blocking).
fn local_checks(config: &Config) -> Vec<Check> {
    let mut report = Report {
        config: PathBuf::new(),
        checks: Vec::new(),
    };
    let storage = &config.storage.dir;
    match crate::spool::probe_write_in(storage, &format!("doctor-{}.probe", std::process::id())) {
        Ok(()) => report.add(
            "storage",
            State::Ok,
            format!(
                "{} takes writes (written, flushed, removed)",
                storage.display()
            ),
        ),
        Err(e) => report.add("storage", State::Problem, crate::error_chain(&e)),
    }
    match crate::spool::free_bytes_in(storage) {
        Ok(free) => {
            let reserve = config.storage.reserve_free_bytes;
            let (state, verdict) = if free < reserve {
                (
                    State::Problem,
                    "below the reserve: instances are refused with 0xA700",
                )
            } else if free < reserve.saturating_mul(2) {
                (State::Warning, "less than twice the reserve")
            } else {
                (State::Ok, "above the reserve")
            };
            report.add(
                "free-space",
                state,
                format!("{} free, reserve {}: {verdict}", size(free), size(reserve)),
            );
        }
        Err(e) => report.add("free-space", State::Problem, crate::error_chain(&e)),
    }
    database(config, &mut report);
    gateway(storage, &mut report);
    certificates(config, &mut report);
    nomenclature(config, &mut report);
    report.checks
}

/// A size in the unit that suits it (100.0 MiB, 45.7 GiB, 2.0 TiB), as the config writes one.
fn size(bytes: u64) -> String {
    bytesize::ByteSize::b(bytes).display().iec().to_string()
}

fn database(config: &Config, report: &mut Report) {
    use rusqlite::{Connection, OpenFlags};
    let path = config.storage.database_path();
    if !path.exists() {
        report.add(
            "database",
            State::Warning,
            format!(
                "no index at {} yet: `simgate serve` creates it",
                path.display()
            ),
        );
        return;
    }
    let checked =
        Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).and_then(|conn| {
            conn.busy_timeout(Duration::from_secs(5))?;
            let result: Vec<String> = conn
                .prepare("PRAGMA integrity_check")?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            let instances: i64 =
                conn.query_row("SELECT count(*) FROM instances", [], |r| r.get(0))?;
            let studies: i64 = conn.query_row("SELECT count(*) FROM studies", [], |r| r.get(0))?;
            Ok((result, instances, studies))
        });
    match checked {
        Ok((result, instances, studies)) if result == ["ok"] => report.add(
            "database",
            State::Ok,
            format!(
                "{}: integrity_check ok; {studies} studies, {instances} instances",
                path.display()
            ),
        ),
        Ok((result, ..)) => report.add(
            "database",
            State::Problem,
            format!("{}: integrity_check: {}", path.display(), result.join("; ")),
        ),
        Err(e) => report.add(
            "database",
            State::Problem,
            format!("{}: {e}", path.display()),
        ),
    }
}

/// Whether a gateway holds the storage folder's lock (it is running).
fn gateway(storage: &Path, report: &mut Report) {
    let shown = storage.display();
    match crate::spool::storage_in_use(storage) {
        Some(true) => report.add(
            "gateway",
            State::Ok,
            format!("a gateway is running on {shown}"),
        ),
        Some(false) => report.add(
            "gateway",
            State::Warning,
            format!("no gateway is running on {shown}"),
        ),
        None => report.add(
            "gateway",
            State::Warning,
            format!("no gateway has run on {shown}"),
        ),
    }
}

fn certificates(config: &Config, report: &mut Report) {
    let mut files: Vec<(String, &Path)> = Vec::new();
    if let Some(t) = &config.listener.tls {
        files.push(("listener.tls.certificate".into(), &t.certificate));
        if let Some(ca) = &t.client_ca {
            files.push(("listener.tls.client_ca".into(), ca));
        }
    }
    if let Some(t) = &config.http.tls {
        files.push(("http.tls.certificate".into(), &t.certificate));
    }
    for d in &config.destinations {
        if let Some(t) = &d.tls {
            files.push((format!("destinations.{}.tls.ca", d.name), &t.ca));
            if let Some((certificate, _)) = &t.identity {
                files.push((
                    format!("destinations.{}.tls.certificate", d.name),
                    certificate,
                ));
            }
        }
    }
    for (key, path) in files {
        let check = format!("certificate:{key}");
        match earliest_expiry(path) {
            Ok(expiry) => {
                let left = expiry.duration_since(SystemTime::now());
                let when = humantime::format_rfc3339_seconds(expiry);
                match left {
                    Err(_) => report.add(
                        check,
                        State::Problem,
                        format!("{}: expired {when}", path.display()),
                    ),
                    Ok(left) if left < EXPIRY_WARNING => report.add(
                        check,
                        State::Warning,
                        format!(
                            "{}: expires {when}, in {} days",
                            path.display(),
                            left.as_secs() / 86_400
                        ),
                    ),
                    Ok(left) => report.add(
                        check,
                        State::Ok,
                        format!(
                            "{}: expires {when}, in {} days",
                            path.display(),
                            left.as_secs() / 86_400
                        ),
                    ),
                }
            }
            Err(e) => report.add(check, State::Problem, format!("{}: {e}", path.display())),
        }
    }
}

/// The soonest notAfter of the certificates in a PEM file.
fn earliest_expiry(path: &Path) -> Result<SystemTime, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    use x509_cert::der::Decode;
    let mut earliest: Option<SystemTime> = None;
    for der in CertificateDer::pem_file_iter(path).map_err(|e| e.to_string())? {
        let der = der.map_err(|e| e.to_string())?;
        let certificate =
            x509_cert::Certificate::from_der(der.as_ref()).map_err(|e| e.to_string())?;
        let not_after = std::time::UNIX_EPOCH
            + certificate
                .tbs_certificate()
                .validity()
                .not_after
                .to_unix_duration();
        earliest = Some(earliest.map_or(not_after, |e| e.min(not_after)));
    }
    earliest.ok_or_else(|| "no certificate in it".to_string())
}

fn nomenclature(config: &Config, report: &mut Report) {
    match crate::service::rules::check_files(&config.naming) {
        Ok((names, kinds)) => {
            let source = config
                .naming
                .builtin_nomenclature
                .as_ref()
                .map_or("built in".to_string(), |p| p.display().to_string());
            let imported = imported_sources(config);
            report.add(
                "nomenclature",
                State::Ok,
                format!(
                    "{names} standard names ({source}), {kinds} series kinds; imported: {imported}"
                ),
            );
        }
        Err(e) => report.add("nomenclature", State::Problem, crate::error_chain(&e)),
    }
}

fn imported_sources(config: &Config) -> String {
    use rusqlite::{Connection, OpenFlags};
    let path = config.storage.database_path();
    let listed = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(crate::store::StoreError::from)
        .and_then(|conn| crate::store::Db::new(&conn).sources());
    match listed {
        Ok(sources) if sources.is_empty() => "none".into(),
        Ok(sources) => sources
            .iter()
            .map(|s| format!("{} ({} names)", s.file_name, s.names))
            .collect::<Vec<_>>()
            .join(", "),
        Err(_) => "unknown (no index)".into(),
    }
}

async fn echo(config: &Config, destination: &crate::config::DestinationConfig) -> Check {
    let check = format!("destination:{}", destination.name);
    let what = format!(
        "C-ECHO to {} at {}",
        destination.ae_title.as_str(),
        destination.address
    );
    let tls = match crate::forward::scu::ClientTls::for_destination(destination) {
        Ok(tls) => tls,
        Err(e) => {
            return Check {
                check,
                state: State::Problem,
                detail: format!("{what}: {}", crate::error_chain(&e)),
                milliseconds: None,
            };
        }
    };
    let scu = crate::forward::scu::Scu::new(
        destination.clone(),
        config.forward.clone(),
        config.storage.dir.clone(),
        tls,
    );
    let started = Instant::now();
    let answered = scu.echo().await;
    let milliseconds = Some(started.elapsed().as_millis() as u64);
    match answered {
        Ok(()) => Check {
            check,
            state: State::Ok,
            detail: format!("{what}: success"),
            milliseconds,
        },
        Err(e) => Check {
            check,
            state: State::Problem,
            detail: format!("{what}: {}", crate::error_chain(&e)),
            milliseconds,
        },
    }
}
