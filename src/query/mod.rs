//! Query/Retrieve matching (PS3.4 C.2.2.2): what a C-FIND, C-MOVE or C-GET identifier asks
//! (level, unique keys, matching keys, return keys), whether an index row matches, and the
//! identifier each match is answered with. Pure: the rows come from
//! [`store::query`](crate::store::query).
//!
//! Matching, per key:
//! - empty value or `*`: universal, everything matches and the value is returned;
//! - UI: list of UIDs (`\`-separated), exact;
//! - DA, TM, DT: single value or range (`a-b`, `-b`, `a-`);
//! - other text: single value, or wildcard with `*` and `?`; person names (PN) ignore case;
//! - a multi-valued attribute (Modalities in Study) matches when one of its values does;
//! - a row with no value for a key with a non-universal value does not match.
//!
//! Keys the index does not hold are returned empty and do not narrow the matches.

use dicom_core::{Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use crate::dicom::dataset;
use crate::dicom::dimse::Status;
use crate::dicom::sop_classes::{
    PATIENT_ROOT_FIND, PATIENT_ROOT_GET, PATIENT_ROOT_MOVE, STUDY_ROOT_FIND, STUDY_ROOT_GET,
    STUDY_ROOT_MOVE,
};
use crate::store::query::{Level, Row, UniqueKeys};

/// Patient Root or Study Root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    PatientRoot,
    StudyRoot,
}

impl Model {
    /// The information model of a FIND, MOVE or GET SOP class.
    pub fn of_sop_class(uid: &str) -> Option<Model> {
        if [PATIENT_ROOT_FIND, PATIENT_ROOT_MOVE, PATIENT_ROOT_GET].contains(&uid) {
            Some(Model::PatientRoot)
        } else if [STUDY_ROOT_FIND, STUDY_ROOT_MOVE, STUDY_ROOT_GET].contains(&uid) {
            Some(Model::StudyRoot)
        } else {
            None
        }
    }
}

/// One key of an identifier: its tag, VR and value as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub tag: Tag,
    pub vr: VR,
    pub value: String,
}

/// A parsed identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub model: Model,
    pub level: Level,
    pub keys: Vec<Key>,
    pub unique: UniqueKeys,
}

type Refusal = (Status, String);

fn refuse(status: Status, text: impl Into<String>) -> Refusal {
    (status, text.into())
}

fn tag_u32(tag: Tag) -> u32 {
    (u32::from(tag.group()) << 16) | u32::from(tag.element())
}

/// The unique key of a level.
fn unique_tag(level: Level) -> Tag {
    match level {
        Level::Patient => tags::PATIENT_ID,
        Level::Study => tags::STUDY_INSTANCE_UID,
        Level::Series => tags::SERIES_INSTANCE_UID,
        Level::Image => tags::SOP_INSTANCE_UID,
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Patient => "PATIENT",
        Level::Study => "STUDY",
        Level::Series => "SERIES",
        Level::Image => "IMAGE",
    }
}

/// A `\`-separated UID list, or `None` when universal.
fn uid_list(value: &str) -> Option<Vec<String>> {
    let values: Vec<String> = value
        .split('\\')
        .map(|v| v.trim_matches(|c: char| c == '\0' || c == ' ').to_string())
        .filter(|v| !v.is_empty())
        .collect();
    (!values.is_empty() && value != "*").then_some(values)
}

impl Query {
    /// Reads an identifier of this information model. `retrieve` asks for the unique key
    /// of the level itself (C-MOVE and C-GET name what to send).
    pub fn parse(
        object: &InMemDicomObject,
        model: Model,
        retrieve: bool,
    ) -> Result<Query, Refusal> {
        let level = match dataset::text(object, tags::QUERY_RETRIEVE_LEVEL).as_str() {
            "PATIENT" => Level::Patient,
            "STUDY" => Level::Study,
            "SERIES" => Level::Series,
            "IMAGE" => Level::Image,
            "" => {
                return Err(refuse(
                    Status::IDENTIFIER_DOES_NOT_MATCH,
                    "Query/Retrieve Level (0008,0052) is missing",
                ));
            }
            other => {
                return Err(refuse(
                    Status::IDENTIFIER_DOES_NOT_MATCH,
                    format!(
                        "Query/Retrieve Level {other:?} is not PATIENT, STUDY, SERIES or IMAGE"
                    ),
                ));
            }
        };
        if model == Model::StudyRoot && level == Level::Patient {
            return Err(refuse(
                Status::IDENTIFIER_DOES_NOT_MATCH,
                "Study Root has no PATIENT level",
            ));
        }
        let mut keys = Vec::new();
        for element in object.iter() {
            let tag = element.header().tag;
            if tag == tags::QUERY_RETRIEVE_LEVEL
                || tag == tags::SPECIFIC_CHARACTER_SET
                || tag.group() == 0x0002
            {
                continue;
            }
            let vr = element.header().vr;
            let value = if vr == VR::SQ {
                String::new()
            } else {
                element
                    .to_str()
                    .map(|s| s.trim_matches(|c: char| c == '\0' || c == ' ').to_string())
                    .unwrap_or_default()
            };
            if vr != VR::UI && value.len() > MAX_PATTERN {
                return Err(refuse(
                    Status::IDENTIFIER_DOES_NOT_MATCH,
                    format!(
                        "the value of {} is longer than {MAX_PATTERN} characters",
                        tag_name(tag)
                    ),
                ));
            }
            keys.push(Key { tag, vr, value });
        }
        let value_of = |tag: Tag| {
            keys.iter()
                .find(|k| k.tag == tag)
                .map(|k| k.value.clone())
                .unwrap_or_default()
        };
        let patient_id = value_of(tags::PATIENT_ID);
        let unique = UniqueKeys {
            patient_id: (!patient_id.is_empty() && !has_wildcard(&patient_id))
                .then_some(patient_id),
            study_instance_uids: uid_list(&value_of(tags::STUDY_INSTANCE_UID)),
            series_instance_uids: uid_list(&value_of(tags::SERIES_INSTANCE_UID)),
            sop_instance_uids: uid_list(&value_of(tags::SOP_INSTANCE_UID)),
        };
        // Hierarchical queries name one entity of every level above (PS3.4 C.4.1.2.1): this
        // also keeps an IMAGE query from scanning every instance the gateway holds.
        let top = match model {
            Model::PatientRoot => Level::Patient,
            Model::StudyRoot => Level::Study,
        };
        let given = |l: Level| match l {
            Level::Patient => unique.patient_id.is_some(),
            Level::Study => unique.study_instance_uids.is_some(),
            Level::Series => unique.series_instance_uids.is_some(),
            Level::Image => unique.sop_instance_uids.is_some(),
        };
        for above in [Level::Patient, Level::Study, Level::Series] {
            if above >= top && above < level && !given(above) {
                return Err(refuse(
                    Status::IDENTIFIER_DOES_NOT_MATCH,
                    format!(
                        "a {} query needs {} of the {} level",
                        level_name(level),
                        tag_name(unique_tag(above)),
                        level_name(above)
                    ),
                ));
            }
        }
        if retrieve && !given(level) {
            return Err(refuse(
                Status::IDENTIFIER_DOES_NOT_MATCH,
                format!(
                    "a {} retrieve names {}",
                    level_name(level),
                    tag_name(unique_tag(level))
                ),
            ));
        }
        Ok(Query {
            model,
            level,
            keys,
            unique,
        })
    }

    /// Does an index row match every key the index holds?
    pub fn matches(&self, row: &Row) -> bool {
        self.keys.iter().all(|key| {
            match row.iter().find(|(tag, _)| *tag == tag_u32(key.tag)) {
                Some((_, value)) => matches_value(key.vr, &key.value, value),
                // Not held by the index: it cannot narrow the matches.
                None => true,
            }
        })
    }

    /// The identifier a match is answered with: every requested key with the row's value
    /// (empty when the index holds none), the level and where to retrieve from.
    pub fn answer(&self, row: &Row, retrieve_ae_title: &str) -> InMemDicomObject {
        let mut object = InMemDicomObject::new_empty();
        let mut non_ascii = false;
        object.put(dataset::element(
            tags::QUERY_RETRIEVE_LEVEL,
            VR::CS,
            level_name(self.level),
        ));
        object.put(dataset::element(
            tags::RETRIEVE_AE_TITLE,
            VR::AE,
            retrieve_ae_title,
        ));
        for key in &self.keys {
            if key.tag == tags::RETRIEVE_AE_TITLE {
                continue;
            }
            let value = row
                .iter()
                .find(|(tag, _)| *tag == tag_u32(key.tag))
                .map(|(_, v)| v.as_str())
                .unwrap_or("");
            non_ascii |= !value.is_ascii();
            if key.vr == VR::SQ {
                object.put(dataset::sequence(key.tag, Vec::new()));
            } else {
                object.put(dataset::element(key.tag, key.vr, value));
            }
        }
        if non_ascii {
            object.put(dataset::element(
                tags::SPECIFIC_CHARACTER_SET,
                VR::CS,
                "ISO_IR 192",
            ));
        }
        object
    }
}

fn tag_name(tag: Tag) -> String {
    use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
    dicom_dictionary_std::StandardDataDictionary
        .by_tag(tag)
        .map(|entry| format!("{} {tag}", entry.alias()))
        .unwrap_or_else(|| tag.to_string())
}

fn has_wildcard(value: &str) -> bool {
    value.contains(['*', '?'])
}

/// The longest key value matched with wildcards or ranges (DICOM's text VRs hold 64
/// characters; this leaves room for lists). Longer ones are refused by [`Query::parse`].
pub const MAX_PATTERN: usize = 1024;
/// Stored values longer than this are not matched against a wildcard pattern: matching costs
/// pattern length times value length.
pub const MAX_MATCHED_VALUE: usize = 64 * 1024;

/// Matches one key value against one stored value (which may hold several, `\`-separated).
pub fn matches_value(vr: VR, pattern: &str, stored: &str) -> bool {
    if pattern.is_empty() || pattern == "*" {
        return true;
    }
    if stored.is_empty() {
        return false;
    }
    if vr != VR::UI && (pattern.len() > MAX_PATTERN || stored.len() > MAX_MATCHED_VALUE) {
        return false;
    }
    match vr {
        VR::UI => {
            let wanted: Vec<&str> = pattern.split('\\').map(str::trim).collect();
            stored.split('\\').any(|v| wanted.contains(&v.trim()))
        }
        VR::DA | VR::TM | VR::DT => stored.split('\\').any(|v| in_range(vr, pattern, v.trim())),
        VR::SQ => true,
        _ => stored.split('\\').any(|value| {
            let value = value.trim();
            if vr == VR::PN {
                wildcard(&pattern.to_lowercase(), &value.to_lowercase())
            } else {
                wildcard(pattern, value)
            }
        }),
    }
}

/// `*` any run of characters, `?` one character; everything else literally.
fn wildcard(pattern: &str, value: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let v: Vec<char> = value.chars().collect();
    // Iterative matching with backtracking to the last `*`: linear in practice, no recursion.
    let (mut pi, mut vi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while vi < v.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == v[vi]) {
            pi += 1;
            vi += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, vi));
            pi += 1;
        } else if let Some((star_p, star_v)) = star {
            pi = star_p + 1;
            vi = star_v + 1;
            star = Some((star_p, star_v + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Date, time and date-time matching: a single value or a range; times compare after
/// padding (`1015` is `101500`).
fn in_range(vr: VR, pattern: &str, value: &str) -> bool {
    let normal = |text: &str| -> String {
        let text = text.trim();
        match vr {
            VR::TM => {
                let text = text.replace(':', "");
                let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
                format!("{whole:0<6}.{fraction:0<6}")
            }
            VR::DA => text.replace('.', ""),
            _ => text.to_string(),
        }
    };
    let value = normal(value);
    match pattern.split_once('-') {
        // DT values may carry a "-hhmm" offset; ranges of DT are written with one '-' between.
        Some((low, high)) if vr != VR::DT || pattern.matches('-').count() == 1 => {
            let low_ok = low.trim().is_empty() || value >= normal(low);
            let high_ok = high.trim().is_empty() || {
                let high = normal(high);
                // A date-time range's end includes what it leaves unsaid ("-2026" is all of 2026).
                value <= high || (vr == VR::DT && value.starts_with(high.as_str()))
            };
            low_ok && high_ok
        }
        _ => {
            let single = normal(pattern);
            value == single || (vr == VR::DT && value.starts_with(single.as_str()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_single_values_and_case() {
        assert!(matches_value(VR::LO, "", "anything"));
        assert!(matches_value(VR::LO, "*", ""));
        assert!(matches_value(VR::LO, "PAT*", "PAT001"));
        assert!(matches_value(VR::LO, "PAT?01", "PAT001"));
        assert!(!matches_value(VR::LO, "PAT?01", "PAT0001"));
        assert!(
            !matches_value(VR::LO, "pat*", "PAT001"),
            "case matters outside PN"
        );
        assert!(matches_value(VR::PN, "doe^*", "DOE^JANE"));
        assert!(matches_value(VR::LO, "*SIM*", "CT SIM PELVIS"));
        assert!(!matches_value(VR::LO, "PAT001", "PAT0011"));
        assert!(
            !matches_value(VR::LO, "PAT*", ""),
            "no value never matches a value"
        );
        assert!(
            matches_value(VR::CS, "CT", "CT\\RTSTRUCT"),
            "one of several values"
        );
        assert!(matches_value(VR::LO, "a*b*c", "aXXbYYbZZc"));
    }

    #[test]
    fn uid_lists() {
        assert!(matches_value(VR::UI, "1.2.3\\1.2.4", "1.2.4"));
        assert!(!matches_value(VR::UI, "1.2.3\\1.2.4", "1.2.5"));
        assert_eq!(uid_list("1.2\\1.3"), Some(vec!["1.2".into(), "1.3".into()]));
        assert_eq!(uid_list(""), None);
    }

    #[test]
    fn date_and_time_ranges() {
        assert!(matches_value(VR::DA, "20260101-20260131", "20260115"));
        assert!(!matches_value(VR::DA, "20260101-20260131", "20260201"));
        assert!(matches_value(VR::DA, "-20260131", "20251231"));
        assert!(matches_value(VR::DA, "20260101-", "20261231"));
        assert!(matches_value(VR::DA, "20260115", "20260115"));
        assert!(!matches_value(VR::DA, "20260115", "20260116"));
        assert!(matches_value(VR::TM, "0800-1016", "101530"));
        assert!(matches_value(VR::TM, "0800-1015", "1015"));
        assert!(!matches_value(VR::TM, "0800-1015", "101600"));
        assert!(matches_value(VR::TM, "0800-", "093000.123"));
        assert!(!matches_value(VR::TM, "0800-", "075959"));
    }
}
