//! The standardized nomenclature in memory: RadLex Playbook procedures (RPID codes) and
//! LOINC/RSNA Radiology Playbook terms (LOINC numbers), indexed by code and by normalised name.

use std::collections::HashMap;

use serde::Serialize;

use super::text::{normalize, similarity};

/// Which standard a name belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// RSNA RadLex Playbook: codes `RPID<n>`, coding scheme designator `RADLEX`.
    Radlex,
    /// LOINC/RSNA Radiology Playbook: LOINC numbers such as `24627-2`, designator `LN`.
    Loinc,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Radlex => "radlex",
            Scheme::Loinc => "loinc",
        }
    }

    pub fn parse(text: &str) -> Option<Scheme> {
        match text {
            "radlex" => Some(Scheme::Radlex),
            "loinc" => Some(Scheme::Loinc),
            _ => None,
        }
    }
}

/// One standard procedure name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StandardName {
    pub scheme: Scheme,
    /// `RPID16`, `24627-2`.
    pub code: String,
    pub long_name: String,
    /// The RadLex short name; LOINC terms have none.
    pub short_name: String,
    /// `CT`, `MR`... as the source gives it; may be empty.
    pub modality: String,
}

/// A suggested standard name with its similarity score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Suggestion {
    pub scheme: Scheme,
    pub code: String,
    pub name: String,
    pub score: f64,
}

/// Coding scheme designators accepted for each standard (configurable aliases).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemeDesignators {
    pub radlex: Vec<String>,
    pub loinc: Vec<String>,
}

impl Default for SchemeDesignators {
    fn default() -> Self {
        Self {
            radlex: vec!["RADLEX".into(), "RPID".into()],
            loinc: vec!["LN".into()],
        }
    }
}

impl SchemeDesignators {
    pub fn scheme_of(&self, designator: &str) -> Option<Scheme> {
        let designator = designator.trim();
        if self
            .radlex
            .iter()
            .any(|d| d.eq_ignore_ascii_case(designator))
        {
            Some(Scheme::Radlex)
        } else if self
            .loinc
            .iter()
            .any(|d| d.eq_ignore_ascii_case(designator))
        {
            Some(Scheme::Loinc)
        } else {
            None
        }
    }
}

/// The loaded nomenclature; built once, then only read.
#[derive(Debug, Clone, Default)]
pub struct Nomenclature {
    names: Vec<StandardName>,
    by_code: HashMap<(Scheme, String), usize>,
    by_name: HashMap<String, usize>,
}

impl Nomenclature {
    /// Later entries with the same code replace earlier ones (a newer release wins).
    pub fn new(entries: impl IntoIterator<Item = StandardName>) -> Self {
        let mut nomenclature = Nomenclature::default();
        for entry in entries {
            let key = (entry.scheme, entry.code.to_ascii_uppercase());
            let index = match nomenclature.by_code.get(&key) {
                Some(&index) => {
                    nomenclature.names[index] = entry;
                    index
                }
                None => {
                    nomenclature.names.push(entry);
                    nomenclature.names.len() - 1
                }
            };
            nomenclature.by_code.insert(key, index);
        }
        for (index, name) in nomenclature.names.iter().enumerate() {
            for text in [&name.long_name, &name.short_name] {
                let key = normalize(text);
                if !key.is_empty() {
                    nomenclature.by_name.entry(key).or_insert(index);
                }
            }
        }
        nomenclature
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn by_code(&self, scheme: Scheme, code: &str) -> Option<&StandardName> {
        self.by_code
            .get(&(scheme, code.trim().to_ascii_uppercase()))
            .map(|&i| &self.names[i])
    }

    /// The standard name equal to `text` after normalisation (long or short name).
    pub fn by_name(&self, text: &str) -> Option<&StandardName> {
        self.by_name.get(&normalize(text)).map(|&i| &self.names[i])
    }

    /// The `k` standard names most similar to `text`; names of `modality` rank first, then
    /// the names `preferred` picks (treatment-planning names for a planning study).
    pub fn nearest(
        &self,
        text: &str,
        modality: &str,
        preferred: impl Fn(&StandardName) -> bool,
        k: usize,
    ) -> Vec<Suggestion> {
        if text.trim().is_empty() && modality.is_empty() {
            return Vec::new();
        }
        let mut scored: Vec<((bool, bool), f64, usize)> = self
            .names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let score =
                    similarity(text, &name.long_name).max(similarity(text, &name.short_name));
                let same_modality =
                    !modality.is_empty() && name.modality.eq_ignore_ascii_case(modality);
                ((same_modality, preferred(name)), score, i)
            })
            .collect();
        scored.sort_by(|a, b| {
            b.0.cmp(&a.0)
                .then(b.1.total_cmp(&a.1))
                .then(self.names[a.2].code.cmp(&self.names[b.2].code))
        });
        scored
            .into_iter()
            .take(k)
            .map(|(_, score, i)| Suggestion {
                scheme: self.names[i].scheme,
                code: self.names[i].code.clone(),
                name: self.names[i].long_name.clone(),
                score: (score * 1000.0).round() / 1000.0,
            })
            .collect()
    }
}
