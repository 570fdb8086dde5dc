//! The SOP classes and transfer syntaxes simgate accepts as a storage SCP.

use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use super::transfer_syntax::Encoding;

pub const VERIFICATION: &str = dicom_dictionary_std::uids::VERIFICATION;

/// Storage Commitment Push Model SOP Class and its well-known SOP Instance (PS3.4 J.3.5).
pub const STORAGE_COMMITMENT_PUSH_MODEL: &str =
    dicom_dictionary_std::uids::STORAGE_COMMITMENT_PUSH_MODEL;
pub const STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE: &str =
    dicom_dictionary_std::uids::STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE;

/// Query/Retrieve information models (PS3.4 C.6): FIND, MOVE and GET of each root.
pub const PATIENT_ROOT_FIND: &str =
    dicom_dictionary_std::uids::PATIENT_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_FIND;
pub const PATIENT_ROOT_MOVE: &str =
    dicom_dictionary_std::uids::PATIENT_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_MOVE;
pub const PATIENT_ROOT_GET: &str =
    dicom_dictionary_std::uids::PATIENT_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_GET;
pub const STUDY_ROOT_FIND: &str =
    dicom_dictionary_std::uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_FIND;
pub const STUDY_ROOT_MOVE: &str =
    dicom_dictionary_std::uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_MOVE;
pub const STUDY_ROOT_GET: &str =
    dicom_dictionary_std::uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_GET;

/// The service classes besides storage that the listener offers.
pub const SERVICE_SOP_CLASSES: [&str; 8] = [
    VERIFICATION,
    STORAGE_COMMITMENT_PUSH_MODEL,
    PATIENT_ROOT_FIND,
    PATIENT_ROOT_MOVE,
    PATIENT_ROOT_GET,
    STUDY_ROOT_FIND,
    STUDY_ROOT_MOVE,
    STUDY_ROOT_GET,
];

/// Is this one of the standard storage SOP classes?
pub fn is_storage(uid: &str) -> bool {
    STORAGE_SOP_CLASSES.contains(&uid)
}

/// Every current storage SOP class of the standard (generated from dicom-dictionary-std).
/// Sites add private ones through `listener.extra_sop_classes`; which classes go where is
/// each destination's filter, not the listener's.
pub use super::storage_classes::STORAGE_SOP_CLASSES;

/// The standard's name of a UID (`CT Image Storage`), for logs.
pub fn name(uid: &str) -> Option<&'static str> {
    use dicom_core::dictionary::{UidDictionary, UidDictionaryEntry};
    dicom_dictionary_std::StandardSopClassDictionary
        .by_uid(uid)
        .map(|entry| entry.name())
}

/// Every transfer syntax the registry knows whose data set simgate can walk: all of them but
/// the deflated ones. Compressed pixel data passes through unchanged; no codec is needed.
pub fn accepted_transfer_syntaxes() -> Vec<&'static str> {
    TransferSyntaxRegistry
        .iter()
        .map(|ts| ts.uid())
        .filter(|uid| Encoding::of_transfer_syntax(uid).is_some())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_usual_transfer_syntaxes_are_accepted_big_endian_and_deflate_included() {
        let accepted = accepted_transfer_syntaxes();
        for uid in [
            "1.2.840.10008.1.2",
            "1.2.840.10008.1.2.1",
            "1.2.840.10008.1.2.4.50",
            "1.2.840.10008.1.2.4.70",
            "1.2.840.10008.1.2.4.90",
            "1.2.840.10008.1.2.5",
            "1.2.840.10008.1.2.2",
            "1.2.840.10008.1.2.1.99",
        ] {
            assert!(accepted.contains(&uid), "{uid} not in {accepted:?}");
        }
    }

    #[test]
    fn every_listed_class_is_a_current_storage_class_of_the_dictionary() {
        use dicom_core::dictionary::{UidDictionary, UidDictionaryEntry};
        let dictionary = dicom_dictionary_std::StandardSopClassDictionary;
        let mut seen = std::collections::BTreeSet::new();
        for uid in STORAGE_SOP_CLASSES {
            assert!(crate::dicom::uid::is_valid_uid(uid), "{uid}");
            let entry = dictionary.by_uid(uid).expect("in the dictionary");
            assert!(entry.name().contains("Storage"), "{uid}: {}", entry.name());
            assert!(!entry.is_retired(), "{uid} is retired");
            assert!(seen.insert(*uid), "{uid} twice");
        }
        // What a CT simulator sends with a planning study.
        use dicom_dictionary_std::uids;
        for needed in [
            uids::CT_IMAGE_STORAGE,
            uids::ENHANCED_CT_IMAGE_STORAGE,
            uids::RT_STRUCTURE_SET_STORAGE,
            uids::RT_PLAN_STORAGE,
            uids::RT_DOSE_STORAGE,
            uids::X_RAY_RADIATION_DOSE_SR_STORAGE,
            uids::ENHANCED_SR_STORAGE,
            uids::COMPREHENSIVE_SR_STORAGE,
            uids::ENCAPSULATED_PDF_STORAGE,
            uids::SECONDARY_CAPTURE_IMAGE_STORAGE,
            uids::RAW_DATA_STORAGE,
            uids::GRAYSCALE_SOFTCOPY_PRESENTATION_STATE_STORAGE,
            uids::ULTRASOUND_IMAGE_STORAGE,
            uids::TWELVE_LEAD_ECG_WAVEFORM_STORAGE,
        ] {
            assert!(STORAGE_SOP_CLASSES.contains(&needed), "{needed} missing");
        }
        assert_eq!(name(uids::CT_IMAGE_STORAGE), Some("CT Image Storage"));
    }

    #[test]
    fn the_readme_says_what_is_accepted() {
        // Line breaks in the README are not significant.
        let readme = include_str!("../../README.md")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let count = format!("{} storage SOP classes", STORAGE_SOP_CLASSES.len());
        assert!(readme.contains(&count), "README.md must say {count:?}");
        for uid in SERVICE_SOP_CLASSES {
            let listed = format!("{} ({uid})", name(uid).expect("a standard class"));
            assert!(readme.contains(&listed), "README.md must list {listed}");
        }
        use dicom_encoding::TransferSyntaxIndex;
        for uid in accepted_transfer_syntaxes() {
            let name = TransferSyntaxRegistry
                .get(uid)
                .map(|ts| ts.name())
                .unwrap_or(uid);
            assert!(
                readme.contains(&format!("{name} ({uid})")),
                "README.md must list {name} ({uid})"
            );
        }
    }

    /// The SOP-class and transfer-syntax tables of docs/conformance-statement.md, from the
    /// code: `cargo test --lib print_conformance_tables -- --ignored --nocapture`.
    fn conformance_tables() -> (String, String, String) {
        use dicom_encoding::TransferSyntaxIndex;
        let service = SERVICE_SOP_CLASSES
            .iter()
            .map(|uid| format!("| {} | `{uid}` |\n", name(uid).unwrap_or(uid)))
            .collect();
        let mut storage: Vec<(&str, &str)> = STORAGE_SOP_CLASSES
            .iter()
            .map(|uid| (name(uid).unwrap_or(uid), *uid))
            .collect();
        storage.sort();
        let storage = storage
            .iter()
            .map(|(name, uid)| format!("| {name} | `{uid}` |\n"))
            .collect();
        let mut syntaxes = accepted_transfer_syntaxes();
        // The registry's order is not stable: by UID, component by component.
        syntaxes.sort_by_key(|uid| {
            uid.split('.')
                .map(|n| n.parse::<u64>().unwrap_or(0))
                .collect::<Vec<_>>()
        });
        let syntaxes = syntaxes
            .iter()
            .map(|uid| {
                let name = TransferSyntaxRegistry
                    .get(uid)
                    .map(|ts| ts.name())
                    .unwrap_or(uid);
                format!("| {name} | `{uid}` |\n")
            })
            .collect();
        (service, storage, syntaxes)
    }

    #[test]
    #[ignore = "prints the tables to paste into docs/conformance-statement.md"]
    fn print_conformance_tables() {
        let (service, storage, syntaxes) = conformance_tables();
        println!("{service}\n{storage}\n{syntaxes}");
    }

    /// The UIDs in backticks of the table rows between a `<!-- NAME -->` marker and the next
    /// blank line.
    fn table_uids(document: &str, marker: &str) -> Vec<String> {
        let start = document
            .find(&format!("<!-- {marker} -->"))
            .unwrap_or_else(|| panic!("no {marker} table"));
        document[start..]
            .lines()
            .skip(1)
            .take_while(|line| !line.trim().is_empty())
            .filter(|line| line.starts_with('|'))
            .filter_map(|line| line.split('`').nth(1).map(str::to_string))
            .collect()
    }

    #[test]
    fn the_conformance_statement_lists_what_the_code_negotiates() {
        let document = include_str!("../../docs/conformance-statement.md");
        let (service, storage, syntaxes) = conformance_tables();
        for (marker, expected) in [
            ("service-sop-classes", &service),
            ("storage-sop-classes", &storage),
            ("transfer-syntaxes", &syntaxes),
        ] {
            let listed = table_uids(document, marker);
            let wanted: Vec<String> = expected
                .lines()
                .filter_map(|line| line.split('`').nth(1).map(str::to_string))
                .collect();
            assert_eq!(
                listed, wanted,
                "docs/conformance-statement.md {marker}: regenerate the table with \
                 `cargo test --lib print_conformance_tables -- --ignored --nocapture`"
            );
        }
        // The forwarding SCU proposes these up front; the statement says so.
        for uid in crate::forward::scu::PLANNING_CLASSES {
            assert!(
                document.contains(&format!("`{uid}`")),
                "{uid} in the SCU section"
            );
        }
    }
}
