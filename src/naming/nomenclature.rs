//! The standardized nomenclature in memory: RadLex Playbook procedures (RPID codes) and
//! LOINC/RSNA Radiology Playbook terms (LOINC numbers), indexed by code and by normalised name.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::text::{normalize, similarity};

/// Which standard a name belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// The loaded nomenclature; built once, then only read. Every source's entries are kept: the
/// same code from two playbooks (a RadLex procedure and its LOINC/RSNA twin) matches by either
/// source's names, and importing one source never shadows what another gives.
#[derive(Debug, Clone, Default)]
pub struct Nomenclature {
    /// Every entry of every source, in load order.
    entries: Vec<StandardName>,
    /// The entry a code resolves to: the last loaded with that code (a site's own list first,
    /// then imports, so an imported release names the code).
    by_code: HashMap<(Scheme, String), usize>,
    /// Normalised long and short names of every entry.
    by_name: HashMap<String, usize>,
    /// Distinct codes.
    codes: usize,
}

impl Nomenclature {
    pub fn new(entries: impl IntoIterator<Item = StandardName>) -> Self {
        let mut nomenclature = Nomenclature::default();
        for entry in entries {
            let index = nomenclature.entries.len();
            let key = (entry.scheme, entry.code.to_ascii_uppercase());
            if nomenclature.by_code.insert(key, index).is_none() {
                nomenclature.codes += 1;
            }
            for text in [&entry.long_name, &entry.short_name] {
                let name = normalize(text);
                if !name.is_empty() {
                    nomenclature.by_name.entry(name).or_insert(index);
                }
            }
            nomenclature.entries.push(entry);
        }
        nomenclature
    }

    /// How many distinct codes are loaded.
    pub fn len(&self) -> usize {
        self.codes
    }

    pub fn is_empty(&self) -> bool {
        self.codes == 0
    }

    pub fn by_code(&self, scheme: Scheme, code: &str) -> Option<&StandardName> {
        self.by_code
            .get(&(scheme, code.trim().to_ascii_uppercase()))
            .map(|&i| &self.entries[i])
    }

    /// The standard name equal to `text` after normalisation (long or short name).
    pub fn by_name(&self, text: &str) -> Option<&StandardName> {
        self.by_name
            .get(&normalize(text))
            .map(|&i| &self.entries[i])
    }

    /// The `k` standard names most similar to `text`; names of `modality` rank first, then
    /// the names `preferred` picks (treatment-planning names for a planning study).
    pub fn nearest(
        &self,
        text: &str,
        modality: &str,
        preferred: impl Fn(&StandardName) -> bool,
        k: usize,
        floor: f64,
    ) -> Vec<Suggestion> {
        if text.trim().is_empty() && modality.is_empty() {
            return Vec::new();
        }
        // One score per code: the best of every source's names for it.
        let mut best: HashMap<(Scheme, String), ((bool, bool), f64)> = HashMap::new();
        for name in &self.entries {
            let score = similarity(text, &name.long_name).max(similarity(text, &name.short_name));
            let same_modality =
                !modality.is_empty() && name.modality.eq_ignore_ascii_case(modality);
            let rank = (same_modality, preferred(name));
            let slot = best
                .entry((name.scheme, name.code.to_ascii_uppercase()))
                .or_insert((rank, score));
            *slot = (slot.0.max(rank), slot.1.max(score));
        }
        let mut scored: Vec<((bool, bool), f64, &StandardName)> = best
            .into_iter()
            .filter_map(|(key, (rank, score))| {
                let entry = &self.entries[*self.by_code.get(&key)?];
                Some((rank, score, entry))
            })
            .collect();
        scored.sort_by(|a, b| {
            b.0.cmp(&a.0)
                .then(b.1.total_cmp(&a.1))
                .then(a.2.code.cmp(&b.2.code))
        });
        scored
            .into_iter()
            .filter(|(_, score, _)| *score >= floor)
            .take(k)
            .map(|(_, score, name)| Suggestion {
                scheme: name.scheme,
                code: name.code.clone(),
                name: name.long_name.clone(),
                score: (score * 1000.0).round() / 1000.0,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::naming::playbook;

    const RADLEX: &[u8] = b"RPID,LETTER_CODE,\"SHORT_NAME\",\"LONG_NAME\",MODALITY,PLAYBOOK_TYPE\n\
        RPID16,CTCH,\"CT CHEST WO\",\"CT Chest wo IV Contrast\",CT,RADIOLOGY ORDERABLE\n";
    // The LOINC/RSNA twin of RPID16 carries another long name and no short name.
    const LOINC: &[u8] = b"\"LoincNumber\",\"LongCommonName\",\"PartNumber\",\"PartTypeName\",\"PartName\",\"PartSequenceOrder\",\"RID\",\"PreferredName\",\"RPID\",\"LongName\"\n\
        \"29252-4\",\"CT Chest WO contrast\",\"LP1\",\"Rad.Modality.Modality Type\",\"CT\",\"A\",\"RID10321\",\"CT\",\"RPID16\",\"CT Chest without IV Contrast\"\n";

    #[test]
    fn a_second_source_never_shadows_the_names_of_the_first() {
        let radlex = playbook::parse("radlex.csv", RADLEX).expect("radlex");
        let loinc = playbook::parse("loinc.csv", LOINC).expect("loinc");
        for order in [[&radlex, &loinc], [&loinc, &radlex]] {
            let nomenclature =
                Nomenclature::new(order.iter().flat_map(|p| p.names.iter().cloned()));
            for name in [
                "CT CHEST WO",
                "CT Chest wo IV Contrast",
                "CT Chest without IV Contrast",
                "CT Chest WO contrast",
            ] {
                assert!(
                    nomenclature.by_name(name).is_some(),
                    "{name:?} no longer matches"
                );
            }
            assert!(nomenclature.by_code(Scheme::Radlex, "RPID16").is_some());
            assert!(nomenclature.by_code(Scheme::Loinc, "29252-4").is_some());
            assert_eq!(nomenclature.len(), 2, "two codes, whatever the sources");
            let nearest = nomenclature.nearest("chest ct", "CT", |_| false, 5, 0.0);
            assert_eq!(nearest.len(), 2, "one suggestion per code: {nearest:?}");
        }
    }
}
