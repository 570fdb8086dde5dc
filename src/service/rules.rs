//! Loads what the naming verdicts are judged against: the built-in standard names and the
//! series rules from their files, imported playbooks from the database, and the policy from
//! the config. The judging itself is in the pure [`crate::naming`] module. Blocking: call it
//! where file and SQLite work may wait (the blocking pool, the CLI).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::config::NamingConfig;
use crate::naming::playbook::{self, Playbook, PlaybookError};
use crate::naming::series::RulesError;
use crate::naming::{Naming, NamingPolicy, Nomenclature, SchemeDesignators, SeriesRules};
use crate::store::{Db, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum RulesLoadError {
    #[error("{key}: cannot read {path}")]
    Read {
        /// The config key that names the file, or what asked for it.
        key: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Playbook(#[from] PlaybookError),
    #[error("naming.series_rules: {path}")]
    Rules {
        path: PathBuf,
        #[source]
        source: RulesError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A nomenclature file read and parsed, with its identity.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PlaybookFile {
    pub file_name: String,
    pub sha256: String,
    pub playbook: Playbook,
}

/// Reads and parses a RadLex or LOINC/RSNA playbook (or the built-in list).
pub fn read_playbook(key: &'static str, path: &Path) -> Result<PlaybookFile, RulesLoadError> {
    let bytes = std::fs::read(path).map_err(|source| RulesLoadError::Read {
        key,
        path: crate::config::absolute(path),
        source,
    })?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    let playbook = playbook::parse(&path.display().to_string(), &bytes)?;
    Ok(PlaybookFile {
        file_name,
        sha256: hex::encode(Sha256::digest(&bytes)),
        playbook,
    })
}

/// The shipped files, built in: used when the config names no file of its own.
const EMBEDDED_STANDARD_NAMES: &[u8] =
    include_bytes!("../../config/nomenclature/standard-names.csv");
const EMBEDDED_SERIES_RULES: &str = include_str!("../../config/nomenclature/series-rules.toml");

fn builtin_playbook(config: &NamingConfig) -> Result<Playbook, RulesLoadError> {
    match &config.builtin_nomenclature {
        Some(path) => Ok(read_playbook("naming.builtin_nomenclature", path)?.playbook),
        None => Ok(playbook::parse(
            "(built-in standard-names.csv)",
            EMBEDDED_STANDARD_NAMES,
        )?),
    }
}

fn series_rules(config: &NamingConfig) -> Result<SeriesRules, RulesLoadError> {
    let (path, text) = match &config.series_rules {
        Some(path) => (
            path.clone(),
            std::fs::read_to_string(path).map_err(|source| RulesLoadError::Read {
                key: "naming.series_rules",
                path: path.clone(),
                source,
            })?,
        ),
        None => (
            PathBuf::from("(built-in series-rules.toml)"),
            EMBEDDED_SERIES_RULES.to_string(),
        ),
    };
    SeriesRules::parse(&text).map_err(|source| RulesLoadError::Rules { path, source })
}

/// Builds the naming rules: built-in names, then imported ones; every source's names match.
pub fn load(config: &NamingConfig, db: &Db<'_>) -> Result<Naming, RulesLoadError> {
    let builtin = builtin_playbook(config)?;
    let imported = db.imported_names()?;
    let nomenclature = Nomenclature::new(builtin.names.into_iter().chain(imported));
    let rules = series_rules(config)?;
    let planning_patterns = config.planning_patterns.clone();
    Ok(Naming {
        nomenclature,
        rules,
        policy: NamingPolicy {
            designators: SchemeDesignators {
                radlex: config.radlex_scheme_designators.clone(),
                loinc: config.loinc_scheme_designators.clone(),
            },
            series_findings_need_reason: config.series_findings_need_reason,
            ct_simulator_ae_titles: config.ct_simulator_ae_titles.clone(),
            ct_simulator_station_names: config.ct_simulator_station_names.clone(),
            planning_patterns,
            rt_planning_reason_code: config.rt_planning_reason.clone(),
            suggestion_floor: config.suggestion_floor,
        },
    })
}

/// Reads and parses the built-in list and the series rules, for `check-config`: returns the
/// number of standard names and of series kinds.
pub fn check_files(config: &NamingConfig) -> Result<(usize, usize), RulesLoadError> {
    Ok((
        builtin_playbook(config)?.names.len(),
        series_rules(config)?.kinds().len(),
    ))
}
