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
    /// Run the gateway: the DICOM listener (C-ECHO, C-STORE) until SIGTERM or Ctrl-C.
    /// SIGHUP re-reads allowed_calling_ae_titles, allowed_peer_addresses and reserve_free_bytes.
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
    /// List received studies, most recent first.
    Studies {
        #[arg(long, short, default_value = "config/simgate.toml")]
        config: PathBuf,
        /// Print one JSON document instead of a table.
        #[arg(long)]
        json: bool,
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("simgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    use simgate::config::Config;
    let stdout = &mut std::io::stdout().lock();
    match cli.command {
        Command::Serve { config } => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(simgate::server::serve(config))?;
        }
        Command::CheckConfig { config } => {
            let resolved = Config::load(&config)?;
            println!("# {} is valid; resolved values:", config.display());
            print!("{}", toml::to_string_pretty(&resolved)?);
        }
        Command::Studies { config, json } => {
            simgate::cli::studies(&Config::load(&config)?, json, stdout)?;
        }
        Command::Study {
            study_instance_uid,
            config,
            json,
        } => {
            simgate::cli::study(&Config::load(&config)?, &study_instance_uid, json, stdout)?;
        }
    }
    Ok(())
}

/// Logs go to stderr; `RUST_LOG` overrides the default (`info`).
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}
