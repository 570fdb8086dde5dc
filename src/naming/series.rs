//! The site's series naming conventions: named kinds (planning-ct, 4dct-phase, 4dct-average...),
//! each a pattern on Series Description with optional conditions on Image Type, SOP class and
//! Modality, tried in order. Rules come from TOML text (config/nomenclature/series-rules.toml).

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::text::similarity;

/// What the rules look at for one series.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeriesFacts {
    pub series_description: String,
    pub modality: String,
    pub sop_class_uid: String,
    /// Values of Image Type seen in the series (e.g. `ORIGINAL`, `AVE`, `MIP`).
    pub image_type: Vec<String>,
    /// Respiratory Motion Compensation Technique or Nominal Percentage of Respiratory Phase seen.
    pub respiratory_attributes: bool,
}

/// Modalities of objects that are recorded but not judged by name.
const NOT_JUDGED: &[&str] = &[
    "RTSTRUCT", "RTPLAN", "RTDOSE", "RTIMAGE", "RTRECORD", "REG", "SEG", "SR", "KO", "PR",
];

/// Whether a SOP class holds images the site's series conventions apply to: the standard calls
/// it an "Image Storage" class, other than a secondary capture. An unknown class (private, or
/// none given, as in `nomenclature check`) is judged.
fn is_image_class(sop_class_uid: &str) -> bool {
    if sop_class_uid.is_empty() {
        return true;
    }
    match crate::dicom::sop_classes::name(sop_class_uid) {
        Some(name) => name.contains("Image Storage") && !name.contains("Secondary Capture"),
        None => true,
    }
}

/// How one series was judged.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum SeriesVerdict {
    /// An RT object or other non-image series: recorded, not judged.
    NotJudged,
    /// The series matches this kind of the site's conventions.
    Conforming { kind: String },
    /// No kind matches; the nearest kinds by example names.
    Nonstandard { nearest_kinds: Vec<String> },
}

impl SeriesVerdict {
    pub fn kind(&self) -> Option<&str> {
        match self {
            SeriesVerdict::Conforming { kind } => Some(kind),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("series rules")]
    Syntax(#[from] toml::de::Error),
    #[error("series rules: kind `{kind}`: {field} is not a valid pattern")]
    Pattern {
        kind: String,
        field: &'static str,
        #[source]
        source: regex::Error,
    },
    #[error("series rules: kind `{0}` has neither a description pattern nor image_type_any")]
    Empty(String),
    #[error("series rules: no kinds defined")]
    NoKinds,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRules {
    kind: Vec<RawKind>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKind {
    name: String,
    #[serde(default)]
    label: String,
    /// Regular expression searched in Series Description.
    description: Option<String>,
    /// The kind also matches when Image Type holds any of these values.
    #[serde(default)]
    image_type_any: Vec<String>,
    /// The series must have one of these Image Type values (in addition to the above).
    #[serde(default)]
    requires_image_type_any: Vec<String>,
    /// The kind does not match when Series Description matches this.
    exclude: Option<String>,
    #[serde(default)]
    modalities: Vec<String>,
    #[serde(default)]
    sop_classes: Vec<String>,
    /// A 4D respiratory phase series (counts as rt_planning evidence).
    #[serde(default)]
    respiratory: bool,
    /// Example names, for suggesting the nearest kinds to a nonstandard series.
    #[serde(default)]
    examples: Vec<String>,
}

/// One compiled kind.
#[derive(Debug, Clone)]
pub struct SeriesKind {
    pub name: String,
    pub label: String,
    description: Option<Regex>,
    image_type_any: Vec<String>,
    requires_image_type_any: Vec<String>,
    exclude: Option<Regex>,
    modalities: Vec<String>,
    sop_classes: Vec<String>,
    pub respiratory: bool,
    examples: Vec<String>,
}

impl SeriesKind {
    fn matches(&self, facts: &SeriesFacts) -> bool {
        let has_type = |values: &[String]| {
            values.iter().any(|wanted| {
                facts
                    .image_type
                    .iter()
                    .any(|v| v.eq_ignore_ascii_case(wanted))
            })
        };
        if !self.modalities.is_empty()
            && !self
                .modalities
                .iter()
                .any(|m| m.eq_ignore_ascii_case(&facts.modality))
        {
            return false;
        }
        if !self.sop_classes.is_empty() && !self.sop_classes.contains(&facts.sop_class_uid) {
            return false;
        }
        if !self.requires_image_type_any.is_empty() && !has_type(&self.requires_image_type_any) {
            return false;
        }
        if self
            .exclude
            .as_ref()
            .is_some_and(|re| re.is_match(&facts.series_description))
        {
            return false;
        }
        let by_description = self
            .description
            .as_ref()
            .is_some_and(|re| re.is_match(&facts.series_description));
        by_description || has_type(&self.image_type_any)
    }
}

/// The ordered kinds.
#[derive(Debug, Clone)]
pub struct SeriesRules {
    kinds: Vec<SeriesKind>,
}

impl SeriesRules {
    pub fn parse(text: &str) -> Result<SeriesRules, RulesError> {
        let raw: RawRules = toml::from_str(text)?;
        if raw.kind.is_empty() {
            return Err(RulesError::NoKinds);
        }
        let compile = |kind: &str, field: &'static str, pattern: Option<String>| {
            pattern
                .map(|p| Regex::new(&p))
                .transpose()
                .map_err(|source| RulesError::Pattern {
                    kind: kind.to_string(),
                    field,
                    source,
                })
        };
        let kinds = raw
            .kind
            .into_iter()
            .map(|k| {
                if k.description.is_none() && k.image_type_any.is_empty() {
                    return Err(RulesError::Empty(k.name));
                }
                Ok(SeriesKind {
                    description: compile(&k.name, "description", k.description)?,
                    exclude: compile(&k.name, "exclude", k.exclude)?,
                    label: if k.label.is_empty() {
                        k.name.clone()
                    } else {
                        k.label
                    },
                    name: k.name,
                    image_type_any: k.image_type_any,
                    requires_image_type_any: k.requires_image_type_any,
                    modalities: k.modalities,
                    sop_classes: k.sop_classes,
                    respiratory: k.respiratory,
                    examples: k.examples,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(SeriesRules { kinds })
    }

    pub fn kinds(&self) -> &[SeriesKind] {
        &self.kinds
    }

    pub fn kind(&self, name: &str) -> Option<&SeriesKind> {
        self.kinds.iter().find(|k| k.name == name)
    }

    /// Judges one series by the first kind that matches. Only image series are judged: RT
    /// objects, structured reports (dose reports among them), documents, raw data, presentation
    /// states and secondary captures (dose screens, protocol pages) are recorded, not judged.
    pub fn judge(&self, facts: &SeriesFacts) -> SeriesVerdict {
        if NOT_JUDGED
            .iter()
            .any(|m| m.eq_ignore_ascii_case(&facts.modality))
            || !is_image_class(&facts.sop_class_uid)
        {
            return SeriesVerdict::NotJudged;
        }
        if let Some(kind) = self.kinds.iter().find(|k| k.matches(facts)) {
            return SeriesVerdict::Conforming {
                kind: kind.name.clone(),
            };
        }
        let mut scored: Vec<(f64, &str)> = self
            .kinds
            .iter()
            .map(|k| {
                let best = k
                    .examples
                    .iter()
                    .chain(std::iter::once(&k.label))
                    .map(|example| similarity(&facts.series_description, example))
                    .fold(0.0, f64::max);
                (best, k.name.as_str())
            })
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
        SeriesVerdict::Nonstandard {
            nearest_kinds: scored
                .into_iter()
                .take(3)
                .map(|(_, name)| name.to_string())
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_dictionary_std::uids;

    #[test]
    fn only_image_series_are_judged() {
        let rules = SeriesRules::parse(include_str!("../../config/nomenclature/series-rules.toml"))
            .expect("rules");
        let series = |modality: &str, class: &str, description: &str| SeriesFacts {
            series_description: description.into(),
            modality: modality.into(),
            sop_class_uid: class.into(),
            ..SeriesFacts::default()
        };
        for (modality, class, description) in [
            ("SR", uids::X_RAY_RADIATION_DOSE_SR_STORAGE, "Dose Report"),
            ("SR", uids::ENHANCED_SR_STORAGE, "Patient Protocol"),
            ("DOC", uids::ENCAPSULATED_PDF_STORAGE, "Exam protocol"),
            ("CT", uids::SECONDARY_CAPTURE_IMAGE_STORAGE, "Dose Info"),
            ("CT", uids::RAW_DATA_STORAGE, "Raw"),
            (
                "PR",
                uids::GRAYSCALE_SOFTCOPY_PRESENTATION_STATE_STORAGE,
                "GSPS",
            ),
        ] {
            assert_eq!(
                rules.judge(&series(modality, class, description)),
                SeriesVerdict::NotJudged,
                "{description}"
            );
        }
        for class in [uids::CT_IMAGE_STORAGE, uids::ENHANCED_CT_IMAGE_STORAGE, ""] {
            assert_ne!(
                rules.judge(&series("CT", class, "some local name")),
                SeriesVerdict::NotJudged,
                "{class:?}"
            );
        }
    }
}
