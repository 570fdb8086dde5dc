//! The `simgate` command: parses the command line and calls into the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// DICOM gateway for radiation oncology: receives CT-simulator images, stores each one durably
/// before acknowledging it, and indexes every study in SQLite.
#[derive(Debug, Parser)]
#[command(name = "simgate", version, propagate_version = true)]
struct Cli {
    /// Configuration file. Default: $SIMGATE_CONFIG, else config/simgate.toml when there is
    /// one in the working folder (a checkout), else /etc/simgate/simgate.toml (the package).
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Log lines as text (default) or JSON objects; overrides `log.format` of the config.
    #[arg(long, global = true, value_enum)]
    log_format: Option<simgate::config::LogFormat>,
    #[command(subcommand)]
    command: Command,
}

/// The configuration file: the one given (flag or `SIMGATE_CONFIG`), else the first that
/// exists of `config/simgate.toml` and `/etc/simgate/simgate.toml`.
fn config_path(given: Option<PathBuf>) -> PathBuf {
    // Read here rather than by clap, which refuses a variable set but empty as a missing
    // value of --config (that nobody typed).
    let from_env = std::env::var_os("SIMGATE_CONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    given.or(from_env).unwrap_or_else(|| {
        let checkout = PathBuf::from("config/simgate.toml");
        if checkout.exists() {
            checkout
        } else {
            PathBuf::from("/etc/simgate/simgate.toml")
        }
    })
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (DICOM listener, forwarders, web pages) until SIGTERM or Ctrl-C. SIGHUP
    /// applies the config's users, destinations, naming rules, allow-lists and
    /// reserve_free_bytes without a restart, and names the changed keys that need one.
    Serve,
    /// Validate a configuration file and print it fully resolved (defaults filled in).
    CheckConfig {
        /// Print nothing when it is valid (the exit code says it; for ExecStartPre).
        #[arg(long)]
        quiet: bool,
    },
    /// List received studies with their naming status (G9318 conforming, G9319 needs a
    /// reason, G9320 reason documented), oldest waiting first.
    Studies {
        /// Which studies: needs-reason, reason-documented, conforming, safety (with safety
        /// findings or held instances) or all.
        #[arg(long, default_value = "all")]
        status: String,
        /// Only studies first received on or after this date (YYYY-MM-DD).
        #[arg(long)]
        since: Option<String>,
        /// Print one JSON document instead of a table.
        #[arg(long, conflicts_with = "csv")]
        json: bool,
        /// Print CSV instead of a table.
        #[arg(long)]
        csv: bool,
    },
    /// Show one study and its series.
    Study {
        /// Study Instance UID.
        study_instance_uid: String,
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The standardized nomenclature: import playbooks, re-judge stored studies, try names.
    Nomenclature {
        #[command(subcommand)]
        command: NomenclatureCommand,
    },
    /// Document the medical reason a study is not named per the standard (append-only; the
    /// latest record supersedes).
    Reason {
        /// Study Instance UID.
        study_instance_uid: String,
        /// Reason code from naming.reasons (see config/simgate.toml), e.g. rt-planning.
        #[arg(long)]
        code: String,
        /// Free text; required for reasons marked note_required (e.g. other).
        #[arg(long, default_value = "")]
        note: String,
        /// Who documents it: a user of [[http.users]] who may document reasons (physician or
        /// admin). Default: the operating-system user, who must be such a user too.
        #[arg(long)]
        by: Option<String>,
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The forward queue: depth, oldest waiting, last error per destination and per study.
    Queue {
        #[command(subcommand)]
        action: Option<QueueCommand>,
        /// Only this destination (a name from [[destinations]]).
        #[arg(long)]
        destination: Option<String>,
        /// Only rows in this state (pending, in-flight, sent, dead, held, waiting, rejected)
        /// in the per-study list.
        #[arg(long)]
        state: Option<String>,
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Send a whole study to a destination again.
    Forward {
        /// Study Instance UID.
        #[arg(long)]
        study: String,
        /// A name from [[destinations]].
        #[arg(long)]
        destination: String,
    },
    /// Check the installation: config, storage folder (writable, free space), the index
    /// (integrity_check), the gateway process, each destination (C-ECHO), TLS certificate
    /// expiry, nomenclature sources. Exit code 1 when any check finds a problem.
    Doctor {
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Copy the storage folder into a new or empty folder: the index (SQLite online backup,
    /// one consistent moment) and every spool file, with manifest.json (sizes and SHA-256).
    /// Safe while the gateway runs and receives.
    Backup {
        /// A new or empty folder outside the storage folder.
        destination: PathBuf,
        /// Print the manifest as JSON instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Restore a backup into the config's storage folder, checking every file against the
    /// manifest. The folder must be empty (or --force: what is there is replaced) and no
    /// gateway may be running on it.
    Restore {
        /// A folder `simgate backup` made (it holds manifest.json).
        source: PathBuf,
        /// Replace what the storage folder holds.
        #[arg(long)]
        force: bool,
    },
    /// Web users: `simgate user add NAME --role physician` reads the password from standard
    /// input and prints the [[http.users]] entry (with an argon2 hash) to paste into the config.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Count G9318, G9319 and G9320 and the conformance rate for the studies of a range of
    /// days (their Study Date, or with --date received the day first received).
    Report {
        /// First day (YYYY-MM-DD), inclusive.
        #[arg(long)]
        from: String,
        /// Last day (YYYY-MM-DD), inclusive.
        #[arg(long)]
        to: String,
        /// Group by month, station or physician (who documented the reason).
        #[arg(long, default_value = "month")]
        by: String,
        /// Count each study on its Study Date (study) or on the day it was first received
        /// (received).
        #[arg(long, default_value = "study")]
        date: String,
        /// Print one JSON document instead of text.
        #[arg(long, conflicts_with = "csv")]
        json: bool,
        /// Print CSV instead of a table.
        #[arg(long)]
        csv: bool,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Print a [[http.users]] entry for NAME; the password is read from standard input.
    Add {
        /// The sign-in name (no colon, no spaces around it).
        name: String,
        /// viewer, physician (documents reasons) or admin (also queue actions).
        #[arg(long, default_value = "physician")]
        role: String,
        /// Also generate an API token (Authorization: Bearer TOKEN); printed once.
        #[arg(long)]
        api_token: bool,
    },
}

#[derive(Debug, Subcommand)]
enum QueueCommand {
    /// Queue instances again: those of one study (not yet sent), or every dead letter.
    Retry {
        /// The instances of this study (Study Instance UID) not yet sent.
        #[arg(long, required_unless_present = "dead", conflicts_with = "dead")]
        study: Option<String>,
        /// Every dead letter (instances a destination refused or that ran out of retries).
        #[arg(long)]
        dead: bool,
        /// Only this destination (a name from [[destinations]]).
        #[arg(long)]
        destination: Option<String>,
    },
    /// Send instances the safety gate holds (in their arrival order); audited with --why.
    Release {
        #[command(flatten)]
        held: HeldArgs,
    },
    /// Never send instances the safety gate holds; audited with --why.
    Reject {
        #[command(flatten)]
        held: HeldArgs,
    },
}

/// Which held instances, and why.
#[derive(Debug, clap::Args)]
struct HeldArgs {
    /// Every held instance of this study.
    #[arg(long, required_unless_present = "instance")]
    study: Option<String>,
    /// This instance (SOP Instance UID).
    #[arg(long)]
    instance: Option<String>,
    /// Only for this destination (a name from [[destinations]]).
    #[arg(long)]
    destination: Option<String>,
    /// Why (kept in the audit log).
    #[arg(long)]
    why: String,
}

#[derive(Debug, Subcommand)]
enum NomenclatureCommand {
    /// Import a RadLex Core Playbook CSV or a LOINC/RSNA Radiology Playbook CSV (format
    /// detected from the header). The same file again changes nothing; a newer release of
    /// the same playbook replaces the older.
    Import { file: PathBuf },
    /// List the built-in and imported nomenclature sources.
    Sources {
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Judge every stored study again (after an import or a rules change); documented
    /// reasons stay.
    Recheck,
    /// Show the verdict the receiver would give to these values.
    Check {
        #[arg(long, default_value = "")]
        study_description: String,
        /// A series description (CT); repeat for several series.
        #[arg(long)]
        series_description: Vec<String>,
        /// A procedure code as VALUE^SCHEME, e.g. RPID6008^RADLEX; repeatable.
        #[arg(long)]
        code: Vec<String>,
        /// Station Name (0008,1010).
        #[arg(long)]
        station: Option<String>,
        /// Calling AE title of the sender.
        #[arg(long)]
        calling_ae_title: Option<String>,
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn format(json: bool, csv: bool) -> simgate::cli::Format {
    match (json, csv) {
        (true, _) => simgate::cli::Format::Json,
        (_, true) => simgate::cli::Format::Csv,
        _ => simgate::cli::Format::Table,
    }
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    cli.config = Some(config_path(cli.config.take()));
    init_logging(cli.log_format, cli.config.as_deref());
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`simgate queue | head`): nothing left to say to anyone.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "simgate: {}",
                simgate::output::escape_lines(&format!("{e:#}"), 4)
            );
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The new user's password: asked twice without echo on a terminal, else one line of
/// standard input (scripts: `echo "$PASSWORD" | simgate user add NAME`).
fn read_new_password(name: &str) -> anyhow::Result<String> {
    use std::io::IsTerminal;
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut password = String::new();
        stdin.read_line(&mut password)?;
        return Ok(password.trim_end_matches(['\n', '\r']).to_string());
    }
    let first = simgate::output::prompt_hidden(&format!("Password for {name}: "))?;
    let again = simgate::output::prompt_hidden("The same password again: ")?;
    if first != again {
        anyhow::bail!("the two passwords differ; nothing printed");
    }
    Ok(first)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    use simgate::config::Config;
    use std::io::Write;
    let config = config_path(cli.config);
    // DICOM values reach the operator's terminal: escaped, never obeyed. Buffered: serde_json
    // and the tables write in small pieces, and a locked stdout flushes at every newline.
    let stdout = &mut simgate::output::TerminalWriter::new(std::io::BufWriter::new(
        std::io::stdout().lock(),
    ));
    match cli.command {
        Command::Serve => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(simgate::app::serve(config))?;
        }
        Command::CheckConfig { quiet } => {
            let resolved = Config::load(&config)?;
            let (names, kinds) = simgate::service::rules::check_files(&resolved.naming)?;
            simgate::app::check_tls(&resolved)?;
            if quiet {
                return Ok(());
            }
            writeln!(
                stdout,
                "# {} is valid; resolved values:",
                resolved.source.display()
            )?;
            writeln!(
                stdout,
                "# standard names: {names} ({}); series kinds: {kinds}",
                resolved
                    .naming
                    .builtin_nomenclature
                    .as_ref()
                    .map_or("built in".to_string(), |p| format!("from {}", p.display()))
            )?;
            write!(stdout, "{}", toml::to_string_pretty(&resolved)?)?;
        }
        Command::Studies {
            status,
            since,
            json,
            csv,
        } => {
            let naming_status = match status.as_str() {
                "all" | "safety" => None,
                other => Some(simgate::naming::StudyStatus::parse(other).ok_or_else(|| {
                    anyhow::anyhow!(
                        "--status {other:?}: use needs-reason, reason-documented, conforming, safety or all"
                    )
                })?),
            };
            if let Some(day) = since.as_deref().filter(|d| !simgate::clock::is_date(d)) {
                anyhow::bail!(
                    "--since {day:?}: write a date as YYYY-MM-DD (the day a study was first received)"
                );
            }
            simgate::cli::studies(
                &Config::load(&config)?,
                simgate::store::studies::StudyQuery {
                    status: naming_status,
                    since,
                    safety: status == "safety",
                    ..Default::default()
                },
                format(json, csv),
                stdout,
            )?;
        }
        Command::Nomenclature { command } => match command {
            NomenclatureCommand::Import { file } => {
                simgate::cli::nomenclature_import(&Config::load(&config)?, &file, stdout)?;
            }
            NomenclatureCommand::Sources { json } => {
                simgate::cli::nomenclature_sources(&Config::load(&config)?, json, stdout)?;
            }
            NomenclatureCommand::Recheck => {
                simgate::cli::nomenclature_recheck(&Config::load(&config)?, stdout)?;
            }
            NomenclatureCommand::Check {
                study_description,
                series_description,
                code,
                station,
                calling_ae_title,
                json,
            } => {
                let input = simgate::cli::CheckInput {
                    study_description,
                    series_descriptions: series_description,
                    codes: code,
                    station,
                    calling_ae_title,
                };
                simgate::cli::nomenclature_check(&Config::load(&config)?, &input, json, stdout)?;
            }
        },
        Command::Queue {
            action,
            destination,
            state,
            json,
        } => match action {
            None => simgate::cli::queue(
                &Config::load(&config)?,
                destination.as_deref(),
                state.as_deref(),
                json,
                stdout,
            )?,
            Some(QueueCommand::Retry {
                study,
                dead,
                destination,
            }) => simgate::cli::queue_retry(
                &Config::load(&config)?,
                simgate::service::RetryRequest {
                    study_instance_uid: study,
                    dead_only: dead,
                    destination,
                },
                stdout,
            )?,
            Some(QueueCommand::Release { held }) => decide_held(&config, held, true, stdout)?,
            Some(QueueCommand::Reject { held }) => decide_held(&config, held, false, stdout)?,
        },
        Command::Forward { study, destination } => {
            simgate::cli::forward_study(&Config::load(&config)?, &study, &destination, stdout)?
        }
        Command::User {
            command:
                UserCommand::Add {
                    name,
                    role,
                    api_token,
                },
        } => {
            if !["viewer", "physician", "admin"].contains(&role.as_str()) {
                anyhow::bail!("--role {role:?}: use viewer, physician or admin");
            }
            if let Some(problem) = simgate::config::user_name_problem(&name) {
                anyhow::bail!("{problem}");
            }
            let password = read_new_password(&name)?;
            if password.is_empty() {
                anyhow::bail!("no password given (a terminal, or one line on standard input)");
            }
            if password.chars().count() < 8 {
                anyhow::bail!("the password must have at least 8 characters");
            }
            let hash = simgate::http::auth::hash_secret(&password)?;
            writeln!(
                stdout,
                "[[http.users]]\nname = {name:?}\nrole = \"{role}\"\npassword_hash = \"{hash}\""
            )?;
            if api_token {
                let token = simgate::http::auth::random_token();
                let token_hash = simgate::http::auth::token_digest(&token);
                writeln!(stdout, "api_token_hash = \"{token_hash}\"")?;
                eprintln!("API token for {name} (shown once): {token}");
            }
        }
        Command::Reason {
            study_instance_uid,
            code,
            note,
            by,
            json,
        } => {
            let request = simgate::service::ReasonRequest {
                study_instance_uid,
                code,
                note,
            };
            simgate::cli::reason(
                &Config::load(&config)?,
                request,
                by.as_deref(),
                json,
                stdout,
            )?;
        }
        Command::Report {
            from,
            to,
            by,
            date,
            json,
            csv,
        } => {
            let grouping = simgate::naming::report::ReportGrouping::parse(&by)
                .ok_or_else(|| anyhow::anyhow!("--by {by:?}: use month, station or physician"))?;
            let dates = simgate::naming::report::ReportDate::parse(&date)
                .ok_or_else(|| anyhow::anyhow!("--date {date:?}: use study or received"))?;
            simgate::cli::report(
                &Config::load(&config)?,
                &from,
                &to,
                grouping,
                dates,
                format(json, csv),
                stdout,
            )?;
        }
        Command::Doctor { json } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let report = runtime.block_on(simgate::doctor::run(&config));
            if json {
                serde_json::to_writer_pretty(&mut *stdout, &report)?;
                writeln!(stdout)?;
            } else {
                let width = report
                    .checks
                    .iter()
                    .map(|c| c.check.len())
                    .max()
                    .unwrap_or(0);
                for check in &report.checks {
                    let state = match check.state {
                        simgate::doctor::State::Ok => "ok     ",
                        simgate::doctor::State::Warning => "warning",
                        simgate::doctor::State::Problem => "PROBLEM",
                    };
                    let took = check
                        .milliseconds
                        .map(|ms| format!(" ({ms} ms)"))
                        .unwrap_or_default();
                    // A detail of several lines (a parse error) goes on under its column.
                    let detail = simgate::output::escape_lines(&check.detail, width + 10);
                    writeln!(stdout, "{state}  {:<width$} {detail}{took}", check.check)?;
                }
            }
            stdout.flush()?;
            if !report.healthy() {
                anyhow::bail!("doctor found a problem (see above)");
            }
        }
        Command::Backup { destination, json } => {
            let manifest = simgate::backup::backup(&Config::load(&config)?, &destination)?;
            if json {
                serde_json::to_writer_pretty(&mut *stdout, &manifest)?;
                writeln!(stdout)?;
            } else {
                let bytes: u64 = manifest.files.iter().map(|f| f.bytes).sum();
                writeln!(
                    stdout,
                    "backed up the index ({} instances) and {} spool files ({} bytes) into {}",
                    manifest.indexed_instances,
                    manifest.files.len(),
                    bytes,
                    simgate::config::absolute(&destination).display()
                )?;
                if !manifest.missing.is_empty() {
                    writeln!(
                        stdout,
                        "{} files the index names were removed meanwhile (retention or a replacement); listed under \"missing\" in {}",
                        manifest.missing.len(),
                        simgate::backup::MANIFEST
                    )?;
                }
            }
        }
        Command::Restore { source, force } => {
            let loaded = Config::load(&config)?;
            let manifest = simgate::backup::restore(&loaded, &source, force)?;
            writeln!(
                stdout,
                "restored the index ({} instances, backed up {}) and {} spool files into {}; \
                 files the index lacks are indexed when the gateway starts",
                manifest.indexed_instances,
                manifest.created_at,
                manifest.files.len(),
                loaded.storage.dir.display()
            )?;
        }
        Command::Study {
            study_instance_uid,
            json,
        } => {
            simgate::cli::study(&Config::load(&config)?, &study_instance_uid, json, stdout)?;
        }
    }
    stdout.flush()?;
    Ok(())
}

/// Logs go to standard error, as `log` in the config says (when it can be read; the command
/// itself reports a config it cannot use); `RUST_LOG` overrides `log.level`, `--log-format`
/// `log.format`. Under systemd (`JOURNAL_STREAM` set) text lines carry no time: the journal
/// stamps each line itself.
fn init_logging(format: Option<simgate::config::LogFormat>, config: Option<&std::path::Path>) {
    use simgate::config::{Config, LogFormat};
    use tracing_subscriber::EnvFilter;
    let settings = config
        .and_then(|path| Config::load(path).ok())
        .map(|c| c.log)
        .unwrap_or_default();
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.level));
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false);
    match format.unwrap_or(settings.format) {
        // JSON escapes every value itself.
        LogFormat::Json => builder.json().with_writer(std::io::stderr).init(),
        // Values from the network are in log lines: escaped, so none can forge a line or drive
        // the terminal.
        LogFormat::Text if journal => builder
            .without_time()
            .with_writer(|| simgate::output::EscapingWriter(std::io::stderr()))
            .init(),
        LogFormat::Text => builder
            .with_writer(|| simgate::output::EscapingWriter(std::io::stderr()))
            .init(),
    }
}

fn decide_held(
    config: &std::path::Path,
    args: HeldArgs,
    release: bool,
    stdout: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    simgate::cli::decide_held(
        &simgate::config::Config::load(config)?,
        simgate::store::safety::HoldTarget {
            study_instance_uid: args.study,
            sop_instance_uid: args.instance,
            destination: args.destination,
        },
        release,
        &args.why,
        stdout,
    )
}
