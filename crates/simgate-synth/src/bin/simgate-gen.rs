//! `simgate-gen`: writes synthetic CT-simulator studies (`simgate_synth`) for tests and the benchmark.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use simgate_synth::{StudySpec, WrittenStudy, write_study};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Write synthetic CT-simulator studies as DICOM Part-10 files"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// A 512x512 planning CT with an RT Structure Set, RT Plan and RT Dose referencing it.
    PlanningStudy {
        /// Output directory (created if missing).
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 100)]
        slices: u32,
        /// Same seed, same UIDs and pixels.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// What a CT simulator sends after a 4D scan: planning CT, phase series 0%..90%, AVG and MIP.
    CtSimUpload {
        /// Output directory (created if missing).
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 200)]
        planning_slices: u32,
        #[arg(long, default_value_t = 10)]
        phases: u32,
        /// Slices of each phase series, and of the AVG and MIP series.
        #[arg(long, default_value_t = 100)]
        phase_slices: u32,
        /// Same seed, same UIDs and pixels.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

fn main() -> Result<()> {
    let (spec, out) = match Cli::parse().command {
        Command::PlanningStudy { out, slices, seed } => (StudySpec::planning_ct(slices, seed), out),
        Command::CtSimUpload {
            out,
            planning_slices,
            phases,
            phase_slices,
            seed,
        } => (
            StudySpec::ct_simulator_upload(planning_slices, phases, phase_slices, seed),
            out,
        ),
    };
    let study = write_study(&spec, &out)
        .with_context(|| format!("cannot write the study into {}", out.display()))?;
    let bytes = total_bytes(&study)?;
    println!(
        "wrote {} files, {bytes} bytes, to {} (Study Instance UID {})",
        study.files.len(),
        out.display(),
        study.study_instance_uid
    );
    Ok(())
}

fn total_bytes(study: &WrittenStudy) -> Result<u64> {
    study.files.iter().map(|file| file_size(&file.path)).sum()
}

fn file_size(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("cannot stat {}", path.display()))?
        .len())
}
