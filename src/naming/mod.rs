//! Naming verdicts: whether a study is named according to the standardized nomenclature
//! (RadLex Playbook, LOINC/RSNA Radiology Playbook) and whether each series follows the
//! site's conventions, with findings, suggestions and radiation-treatment-planning evidence.
//!
//! This module does no I/O: rules and nomenclature arrive as values, facts as plain data, and
//! a nonstandard name is a finding in the returned verdict, not an error.

pub mod nomenclature;
pub mod playbook;
pub mod report;
pub mod series;
pub mod text;
pub mod verdict;

pub use nomenclature::{Nomenclature, Scheme, SchemeDesignators, StandardName, Suggestion};
pub use series::{SeriesFacts, SeriesRules, SeriesVerdict};
pub use verdict::{Evidence, Finding, NamingPolicy, StudyFacts, StudyStatus, Verdict, evaluate};

/// Everything the verdict needs, loaded once and shared.
#[derive(Debug, Clone)]
pub struct Naming {
    pub nomenclature: Nomenclature,
    pub rules: SeriesRules,
    pub policy: NamingPolicy,
}

impl Naming {
    pub fn evaluate(&self, facts: &StudyFacts) -> Verdict {
        evaluate(facts, &self.nomenclature, &self.rules, &self.policy)
    }
}

#[cfg(test)]
mod tests;
