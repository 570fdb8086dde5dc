//! `simgate-seed`: fills a simgate index with many studies through the store's own code
//! (`Db::record_instance`, the naming verdict, `Db::record_verdict`, reasons), on the index
//! writer thread in its batches, for the query-latency benchmark. No spool files are written:
//! the rows point at files that do not exist, which the queries never open.
//!
//! A share of the studies is named per the standard, a share needs a reason, a share has one
//! documented; each study has a few series of slices, so instances outnumber studies as at a
//! real site.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use simgate::config::{Config, Durability};
use simgate::scp::header::InstanceHeader;
use simgate::store::instances::IndexedInstance;
use simgate::store::{self, IndexHandle, StoreError};

#[derive(Parser)]
struct Args {
    /// The storage folder to create (its simgate.db is filled).
    #[arg(long)]
    dir: PathBuf,
    #[arg(long, default_value_t = 100_000)]
    studies: u64,
    #[arg(long, default_value_t = 20)]
    instances_per_study: u64,
    /// Every Nth study needs a reason (the rest are named per the standard, but for the
    /// documented share).
    #[arg(long, default_value_t = 50)]
    needs_reason_every: u64,
    /// Every Nth study has a documented reason.
    #[arg(long, default_value_t = 200)]
    documented_every: u64,
}

/// Studies per writer job.
const CHUNK: u64 = 200;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.dir)?;
    // Seeded planning CTs have 10 slices: a minimum of 10 keeps them clean.
    let config_text = format!(
        "[listener]\nae_title = \"SIMGATE\"\nbind = \"127.0.0.1:0\"\n[storage]\ndir = {:?}\n\
         [safety]\nmin_planning_slices = 10\n",
        args.dir.display().to_string()
    );
    let config = Arc::new(Config::parse(&config_text, &args.dir.join("seed.toml"))?);
    let store = store::open(&config.storage.database_path(), Durability::Os)?;
    let naming = simgate::service::rules::load(&config.naming, &store.db())?;
    let naming = Arc::new(naming);
    let (changed, _) = tokio::sync::watch::channel(0u64);
    let (index, writer) = IndexHandle::spawn(store, 4, changed).context("index writer")?;
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let started = std::time::Instant::now();
    runtime.block_on(async {
        let mut next = 0;
        while next < args.studies {
            let end = (next + CHUNK).min(args.studies);
            let (config, naming, per, needs, documented) = (
                Arc::clone(&config),
                Arc::clone(&naming),
                args.instances_per_study,
                args.needs_reason_every,
                args.documented_every,
            );
            index
                .execute(move |db| {
                    for n in next..end {
                        seed_study(db, &config, &naming, n, per, needs, documented)?;
                    }
                    Ok::<_, StoreError>(())
                })
                .await?;
            next = end;
            if next % 10_000 == 0 {
                eprintln!(
                    "[seed] {next} studies, {:.0} s",
                    started.elapsed().as_secs_f64()
                );
            }
        }
        Ok::<_, StoreError>(())
    })?;
    drop(index);
    let _ = writer.join();
    eprintln!(
        "[seed] {} studies, {} instances in {:.0} s",
        args.studies,
        args.studies * args.instances_per_study,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn seed_study(
    db: &simgate::store::Db<'_>,
    config: &Config,
    naming: &simgate::naming::Naming,
    n: u64,
    instances: u64,
    needs_reason_every: u64,
    documented_every: u64,
) -> Result<(), StoreError> {
    let study = format!("2.25.{}", 1_000_000_000 + n);
    let nonstandard = n % needs_reason_every == 0 || n % documented_every == 0;
    let day = 1 + n % 28;
    let received_at = format!("2026-11-{day:02}T{:02}:{:02}:00.000Z", n % 24, n % 60);
    for i in 0..instances {
        let series = i / 10;
        let header = InstanceHeader {
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
            sop_instance_uid: format!("{study}.{series}.{i}"),
            study_instance_uid: study.clone(),
            series_instance_uid: format!("{study}.{series}"),
            patient_id: format!("P{:06}", n / 3),
            patient_name: format!("SEED^PATIENT{}", n / 3),
            accession_number: format!("A{n:08}"),
            modality: "CT".into(),
            study_date: format!("202611{day:02}"),
            study_description: if nonstandard {
                "4DCT LUNG SIM".into()
            } else {
                "CT Chest wo IV Contrast".into()
            },
            series_description: if series == 0 {
                "PLANNING CT".into()
            } else {
                "4D 50%".into()
            },
            station_name: format!("CTSIM0{}", n % 3),
            series_number: Some(series as i64 + 1),
            instance_number: Some(i as i64 + 1),
            image_position_patient: Some([0.0, 0.0, i as f64 * 2.5]),
            image_orientation_patient: Some([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
            frame_of_reference_uid: format!("{study}.9"),
            ..InstanceHeader::default()
        };
        let hash = format!("{:064x}", n * 1000 + i);
        db.record_instance(&IndexedInstance {
            header,
            transfer_syntax_uid: "1.2.840.10008.1.2.1".into(),
            calling_ae_title: "CTSIM".into(),
            called_ae_title: "SIMGATE".into(),
            peer_address: "seed".into(),
            received_at: received_at.clone(),
            file_size: 526_000,
            file_path: format!("spool/{}/{hash}.dcm", &hash[..2]),
            content_hash: hash,
        })?;
    }
    if n % documented_every == 0 {
        db.insert_reason(&study, "rt-planning", "", "seed", &received_at)?;
    }
    let (facts, series_uids) = db.study_facts(&study)?;
    let verdict = naming.evaluate(&facts);
    db.record_verdict(&study, &verdict, &series_uids, "seeded", &received_at)?;
    // Each series checked as the gateway checks it once quiet, so a gateway started on the
    // seeded index has no backlog of checks running beside the queries measured.
    for series in &series_uids {
        simgate::service::check_series(db, config, series, &received_at)?;
    }
    Ok(())
}
