//! Loads what the naming verdicts are judged against: the built-in standard names and the
//! series rules from their files, imported playbooks from the database, and the policy from
//! the config. The judging itself is in the pure [`crate::naming`] module.

use std::path::{Path, PathBuf};

use regex::Regex;
use rusqlite::Connection;
use sha2::{Digest, Sha256};

use crate::config::NamingConfig;
use crate::naming::playbook::{self, Playbook, PlaybookError};
use crate::naming::series::RulesError;
use crate::naming::{Naming, NamingPolicy, Nomenclature, SchemeDesignators, SeriesRules};
use crate::store::{self, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum RulesLoadError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Playbook(#[from] PlaybookError),
    #[error("{path}")]
    Rules {
        path: PathBuf,
        #[source]
        source: RulesError,
    },
    #[error("naming.planning_patterns: {0}")]
    Pattern(#[from] regex::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A nomenclature file read and parsed, with its identity.
#[derive(Debug)]
pub struct PlaybookFile {
    pub file_name: String,
    pub sha256: String,
    pub playbook: Playbook,
}

/// Reads and parses a RadLex or LOINC/RSNA playbook (or the built-in list).
pub fn read_playbook(path: &Path) -> Result<PlaybookFile, RulesLoadError> {
    let bytes = std::fs::read(path).map_err(|source| RulesLoadError::Read {
        path: path.to_path_buf(),
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

/// Builds the naming rules: built-in names, then imported ones (which win on the same code).
pub fn load(config: &NamingConfig, conn: &Connection) -> Result<Naming, RulesLoadError> {
    let builtin = read_playbook(&config.builtin_nomenclature)?;
    let imported = store::naming::imported_names(conn)?;
    let nomenclature = Nomenclature::new(builtin.playbook.names.into_iter().chain(imported));
    let rules_text =
        std::fs::read_to_string(&config.series_rules).map_err(|source| RulesLoadError::Read {
            path: config.series_rules.clone(),
            source,
        })?;
    let rules = SeriesRules::parse(&rules_text).map_err(|source| RulesLoadError::Rules {
        path: config.series_rules.clone(),
        source,
    })?;
    let planning_patterns = config
        .planning_patterns
        .iter()
        .map(|p| Regex::new(p))
        .collect::<Result<_, _>>()?;
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
        },
    })
}

/// Reads and parses the built-in list and the series rules, for `check-config`: returns the
/// number of standard names and of series kinds.
pub fn check_files(config: &NamingConfig) -> Result<(usize, usize), RulesLoadError> {
    let builtin = read_playbook(&config.builtin_nomenclature)?;
    let rules_text =
        std::fs::read_to_string(&config.series_rules).map_err(|source| RulesLoadError::Read {
            path: config.series_rules.clone(),
            source,
        })?;
    let rules = SeriesRules::parse(&rules_text).map_err(|source| RulesLoadError::Rules {
        path: config.series_rules.clone(),
        source,
    })?;
    Ok((builtin.playbook.names.len(), rules.kinds().len()))
}
