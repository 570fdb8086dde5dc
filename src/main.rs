//! The `simgate` command: parses the command line and calls into the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// DICOM gateway for radiation oncology: receives CT-simulator images, stores each one durably
/// before acknowledging it, and indexes every study in SQLite.
#[derive(Debug, Parser)]
#[command(name = "simgate", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (DICOM listener, forwarders, web pages) until SIGTERM or Ctrl-C. SIGHUP
    /// re-reads the allow-lists, reserve_free_bytes and the naming rules.
    Serve {
        /// Configuration file (see config/simgate.toml).
        #[arg(long, short, default_value = "config/simgate.toml")]
        config: PathBuf,
    },
    /// Validate a configuration file and print it fully resolved (defaults filled in).
    CheckConfig {
        #[arg(long, short, default_value = "config/simgate.toml")]
        config: PathBuf,
    },
    /// List received studies with their naming status (G9318 conforming, G9319 needs a
    /// reason, G9320 reason documented), oldest waiting first.
    Studies {
        #[arg(long, short, default_value = "config/simgate.toml")]
        config: PathBuf,
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
        #[arg(long, short, default_value = "config/simgate.toml")]
        config: PathBuf,
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
        #[arg(long, short, default_value = "config/simgate.toml")]
        config: PathBuf,
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
        #[arg(long, short, default_value = "config/simgate.toml")]
        config: PathBuf,
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Send a whole study to a destination again.
    Forward {
        #[arg(long)]
        study: String,
        #[arg(long)]
        destination: String,
        #[arg(long, short, default_value = "config/simgate.toml")]
        config: PathBuf,
    },
    /// Web users: `simgate user add NAME --role physician` reads the password from standard
    /// input and prints the [[http.users]] entry (with an argon2 hash) to paste into the config.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Count G9318, G9319 and G9320 and the conformance rate for studies first received
    /// between two dates.
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
        #[arg(long, short, default_value = "config/simgate.toml")]
        config: PathBuf,
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
        #[arg(long, required_unless_present = "dead", conflicts_with = "dead")]
        study: Option<String>,
        #[arg(long)]
        dead: bool,
        /// Only this destination (a name from [[destinations]]).
        #[arg(long)]
        destination: Option<String>,
        #[arg(long, short, default_value = "config/simgate.toml")]
        config: PathBuf,
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
    #[arg(long, short, default_value = "config/simgate.toml")]
    config: PathBuf,
}

#[derive(Debug, Subcommand)]
enum NomenclatureCommand {
    /// Import a RadLex Core Playbook CSV or a LOINC/RSNA Radiology Playbook CSV (format
    /// detected from the header). The same file again changes nothing; a newer release of
    /// the same playbook replaces the older.
    Import {
        file: PathBuf,
        #[arg(long, short, default_value = "config/simgate.toml")]
        config: PathBuf,
    },
    /// List the built-in and imported nomenclature sources.
    Sources {
        #[arg(long, short, default_value = "config/simgate.toml")]
        config: PathBuf,
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Judge every stored study again (after an import or a rules change); documented
    /// reasons stay.
    Recheck {
        #[arg(long, short, default_value = "config/simgate.toml")]
        config: PathBuf,
    },
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
        #[arg(long, short, default_value = "config/simgate.toml")]
        config: PathBuf,
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
    let cli = Cli::parse();
    init_logging();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("simgate: {}", simgate::output::escape(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    use simgate::config::Config;
    // DICOM values reach the operator's terminal: escaped, never obeyed. Buffered: serde_json
    // and the tables write in small pieces, and a locked stdout flushes at every newline.
    let stdout = &mut simgate::output::TerminalWriter::new(std::io::BufWriter::new(
        std::io::stdout().lock(),
    ));
    match cli.command {
        Command::Serve { config } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(simgate::app::serve(config))?;
        }
        Command::CheckConfig { config } => {
            let resolved = Config::load(&config)?;
            let (names, kinds) = simgate::service::rules::check_files(&resolved.naming)?;
            println!("# {} is valid; resolved values:", config.display());
            println!("# built-in standard names: {names}; series kinds: {kinds}");
            print!("{}", toml::to_string_pretty(&resolved)?);
        }
        Command::Studies {
            config,
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
            NomenclatureCommand::Import { file, config } => {
                simgate::cli::nomenclature_import(&Config::load(&config)?, &file, stdout)?;
            }
            NomenclatureCommand::Sources { config, json } => {
                simgate::cli::nomenclature_sources(&Config::load(&config)?, json, stdout)?;
            }
            NomenclatureCommand::Recheck { config } => {
                simgate::cli::nomenclature_recheck(&Config::load(&config)?, stdout)?;
            }
            NomenclatureCommand::Check {
                study_description,
                series_description,
                code,
                station,
                calling_ae_title,
                config,
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
            config,
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
                config,
            }) => simgate::cli::queue_retry(
                &Config::load(&config)?,
                simgate::service::RetryRequest {
                    study_instance_uid: study,
                    dead_only: dead,
                    destination,
                },
                stdout,
            )?,
            Some(QueueCommand::Release { held }) => decide_held(held, true, stdout)?,
            Some(QueueCommand::Reject { held }) => decide_held(held, false, stdout)?,
        },
        Command::Forward {
            study,
            destination,
            config,
        } => simgate::cli::forward_study(&Config::load(&config)?, &study, &destination, stdout)?,
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
            let mut password = String::new();
            std::io::stdin().read_line(&mut password)?;
            let password = password.trim_end_matches(['\n', '\r']);
            if password.chars().count() < 8 {
                anyhow::bail!(
                    "the password (read from standard input) must have at least 8 characters"
                );
            }
            let hash = simgate::http::auth::hash_secret(password)?;
            println!(
                "[[http.users]]\nname = {name:?}\nrole = \"{role}\"\npassword_hash = \"{hash}\""
            );
            if api_token {
                let token = simgate::http::auth::random_token();
                let token_hash = simgate::http::auth::token_digest(&token);
                println!("api_token_hash = \"{token_hash}\"");
                eprintln!("API token for {name} (shown once): {token}");
            }
        }
        Command::Reason {
            study_instance_uid,
            code,
            note,
            by,
            config,
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
            config,
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
        Command::Study {
            study_instance_uid,
            config,
            json,
        } => {
            simgate::cli::study(&Config::load(&config)?, &study_instance_uid, json, stdout)?;
        }
    }
    use std::io::Write;
    stdout.flush()?;
    Ok(())
}

/// Logs go to stderr; `RUST_LOG` overrides the default (`info`).
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Values from the network are in log lines: escaped, so none can forge a line or drive
        // the terminal.
        .with_writer(|| simgate::output::EscapingWriter(std::io::stderr()))
        .with_ansi(false)
        .init();
}

fn decide_held(
    args: HeldArgs,
    release: bool,
    stdout: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    simgate::cli::decide_held(
        &simgate::config::Config::load(&args.config)?,
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
