//! `simgate-fuzz`: mutation fuzzing of the parsers that read network and file input, on
//! stable Rust (no sanitizer runtime). Each target starts from its committed seed corpus
//! (`fuzz/corpus/<target>/`), mutates inputs (bit flips, interesting lengths, insertions,
//! deletions, duplications, splices, truncations) and runs them; a panic or an execution
//! slower than a second is a finding, saved to `fuzz/findings/` with the seed that makes
//! it again. Usage: `simgate-fuzz <target|all> --runs N [--seed S]`; `--write-seeds` makes
//! the corpora from simgate's own generator.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use sha2::{Digest, Sha256};

mod targets;

#[derive(Parser)]
struct Args {
    /// A target, or `all`.
    target: String,
    /// Executions per target.
    #[arg(long, default_value_t = 100_000)]
    runs: u64,
    /// Seed of the mutation generator (the same seed, the same inputs).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where the corpora and findings are (`fuzz/` of the repository by default).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Write the seed corpora and stop.
    #[arg(long)]
    write_seeds: bool,
    /// Run the target once on this file (a finding), with the panic shown.
    #[arg(long)]
    replay: Option<PathBuf>,
}

/// xorshift64*: fast, and the same sequence for the same seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const INTERESTING: [u32; 10] = [
    0,
    1,
    2,
    0x7F,
    0xFF,
    0xFFFF,
    0x8000_0000,
    0x7FFF_FFFF,
    0xFFFF_FFFE,
    0xFFFF_FFFF,
];

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        let len = input.len();
        match rng.below(9) {
            0 if len > 0 => {
                let at = rng.below(len);
                input[at] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let at = rng.below(len);
                input[at] = rng.next() as u8;
            }
            2 if len >= 4 => {
                // A length-like field: 2 or 4 bytes of an interesting value, either byte order.
                let at = rng.below(len - 3);
                let value = INTERESTING[rng.below(INTERESTING.len())];
                let bytes = if rng.below(2) == 0 {
                    value.to_le_bytes()
                } else {
                    value.to_be_bytes()
                };
                let width = if rng.below(2) == 0 { 2 } else { 4 };
                input[at..at + width].copy_from_slice(&bytes[..width]);
            }
            3 => {
                let at = rng.below(len + 1);
                let count = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..count).map(|_| rng.next() as u8).collect();
                input.splice(at..at, bytes);
            }
            4 if len > 0 => {
                let at = rng.below(len);
                let end = (at + 1 + rng.below(32)).min(len);
                input.drain(at..end);
            }
            5 if len > 0 => {
                let at = rng.below(len);
                let end = (at + 1 + rng.below(64)).min(len);
                let copy = input[at..end].to_vec();
                let to = rng.below(len + 1);
                input.splice(to..to, copy);
            }
            6 if !corpus.is_empty() => {
                let other = &corpus[rng.below(corpus.len())];
                if !other.is_empty() {
                    let from = rng.below(other.len());
                    let at = rng.below(len + 1);
                    input.truncate(at);
                    input.extend_from_slice(&other[from..]);
                }
            }
            7 if len > 0 => input.truncate(rng.below(len)),
            _ => {
                // Element tags of group 0000/0008/FFFE at a random place.
                if len >= 4 {
                    let at = rng.below(len - 3);
                    let tags: [[u8; 4]; 4] = [
                        [0xFE, 0xFF, 0x00, 0xE0],
                        [0xFE, 0xFF, 0xDD, 0xE0],
                        [0x08, 0x00, 0x05, 0x00],
                        [0x00, 0x00, 0x00, 0x01],
                    ];
                    input[at..at + 4].copy_from_slice(&tags[rng.below(tags.len())]);
                }
            }
        }
    }
    // Inputs stay small enough to run fast; the parsers' own limits are not what is tested.
    input.truncate(1 << 20);
}

fn load_corpus(dir: &Path) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .filter_map(|path| std::fs::read(path).ok())
        .collect()
}

/// What one target's run found.
struct Summary {
    executions: u64,
    findings: Vec<PathBuf>,
    elapsed: Duration,
}

fn fuzz(target: &targets::Target, dir: &Path, runs: u64, seed: u64) -> anyhow::Result<Summary> {
    let corpus = load_corpus(&dir.join("corpus").join(target.name));
    anyhow::ensure!(
        !corpus.is_empty(),
        "no seeds in {}: run with --write-seeds",
        dir.join("corpus").join(target.name).display()
    );
    let findings_dir = dir.join("findings");
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut findings = Vec::new();
    let started = Instant::now();
    // The seeds themselves first, unmutated.
    for execution in 0..runs {
        let mut input = corpus[(execution as usize) % corpus.len()].clone();
        if execution >= corpus.len() as u64 {
            mutate(&mut rng, &mut input, &corpus);
        }
        let begun = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| (target.run)(&input)));
        let slow = begun.elapsed() > Duration::from_secs(1);
        if outcome.is_err() || slow {
            std::fs::create_dir_all(&findings_dir)?;
            let name = format!(
                "{}-{}-{}",
                target.name,
                if slow { "slow" } else { "panic" },
                &hex::encode(Sha256::digest(&input))[..16]
            );
            let path = findings_dir.join(name);
            std::fs::write(&path, &input)?;
            eprintln!(
                "{}: finding at execution {execution} (seed {seed}): {}",
                target.name,
                path.display()
            );
            findings.push(path);
        }
    }
    Ok(Summary {
        executions: runs,
        findings,
        elapsed: started.elapsed(),
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = args
        .dir
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz"));
    if args.write_seeds {
        targets::write_seeds(&dir.join("corpus"))?;
        return Ok(());
    }
    if let Some(file) = &args.replay {
        let target = targets::TARGETS
            .iter()
            .find(|t| t.name == args.target)
            .ok_or_else(|| anyhow::anyhow!("unknown target {:?}", args.target))?;
        let input = std::fs::read(file)?;
        let started = Instant::now();
        (target.run)(&input);
        println!("{}: no panic, {:?}", file.display(), started.elapsed());
        return Ok(());
    }
    // Panics are findings, reported once each by `fuzz`; the default hook would print every one.
    std::panic::set_hook(Box::new(|_| {}));
    let chosen: Vec<&targets::Target> = targets::TARGETS
        .iter()
        .filter(|t| args.target == "all" || t.name == args.target)
        .collect();
    anyhow::ensure!(
        !chosen.is_empty(),
        "unknown target {:?}; known: all, {}",
        args.target,
        targets::TARGETS
            .iter()
            .map(|t| t.name)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut found = 0;
    for target in chosen {
        let summary = fuzz(target, &dir, args.runs, args.seed)?;
        println!(
            "{:<14} {:>9} executions  {:>6.1} s  {:>8.0}/s  findings {}",
            target.name,
            summary.executions,
            summary.elapsed.as_secs_f64(),
            summary.executions as f64 / summary.elapsed.as_secs_f64().max(1e-9),
            summary.findings.len()
        );
        found += summary.findings.len();
    }
    anyhow::ensure!(found == 0, "{found} findings (see fuzz/findings/)");
    Ok(())
}
