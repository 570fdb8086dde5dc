//! The SOP classes and transfer syntaxes simgate accepts as a storage SCP.

use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use super::transfer_syntax::Encoding;

pub const VERIFICATION: &str = "1.2.840.10008.1.1";

/// Storage SOP classes of a radiotherapy planning workflow (PS3.4 annex B.5), with names for
/// logs and `check-config`. Sites add more through `listener.extra_sop_classes`.
pub const STORAGE_SOP_CLASSES: &[(&str, &str)] = &[
    ("1.2.840.10008.5.1.4.1.1.2", "CT Image Storage"),
    ("1.2.840.10008.5.1.4.1.1.2.1", "Enhanced CT Image Storage"),
    (
        "1.2.840.10008.5.1.4.1.1.2.2",
        "Legacy Converted Enhanced CT Image Storage",
    ),
    ("1.2.840.10008.5.1.4.1.1.481.1", "RT Image Storage"),
    ("1.2.840.10008.5.1.4.1.1.481.2", "RT Dose Storage"),
    ("1.2.840.10008.5.1.4.1.1.481.3", "RT Structure Set Storage"),
    (
        "1.2.840.10008.5.1.4.1.1.481.4",
        "RT Beams Treatment Record Storage",
    ),
    ("1.2.840.10008.5.1.4.1.1.481.5", "RT Plan Storage"),
    (
        "1.2.840.10008.5.1.4.1.1.481.6",
        "RT Brachy Treatment Record Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.481.7",
        "RT Treatment Summary Record Storage",
    ),
    ("1.2.840.10008.5.1.4.1.1.481.8", "RT Ion Plan Storage"),
    (
        "1.2.840.10008.5.1.4.1.1.481.9",
        "RT Ion Beams Treatment Record Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.66.1",
        "Spatial Registration Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.66.3",
        "Deformable Spatial Registration Storage",
    ),
    ("1.2.840.10008.5.1.4.1.1.66.4", "Segmentation Storage"),
    ("1.2.840.10008.5.1.4.1.1.4", "MR Image Storage"),
    ("1.2.840.10008.5.1.4.1.1.4.1", "Enhanced MR Image Storage"),
    (
        "1.2.840.10008.5.1.4.1.1.4.4",
        "Legacy Converted Enhanced MR Image Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.128",
        "Positron Emission Tomography Image Storage",
    ),
    ("1.2.840.10008.5.1.4.1.1.130", "Enhanced PET Image Storage"),
    (
        "1.2.840.10008.5.1.4.1.1.128.1",
        "Legacy Converted Enhanced PET Image Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.7",
        "Secondary Capture Image Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.7.1",
        "Multi-frame Single Bit Secondary Capture Image Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.7.2",
        "Multi-frame Grayscale Byte Secondary Capture Image Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.7.3",
        "Multi-frame Grayscale Word Secondary Capture Image Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.7.4",
        "Multi-frame True Color Secondary Capture Image Storage",
    ),
];

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
    fn the_usual_transfer_syntaxes_are_accepted_and_deflate_is_not() {
        let accepted = accepted_transfer_syntaxes();
        for uid in [
            "1.2.840.10008.1.2",
            "1.2.840.10008.1.2.1",
            "1.2.840.10008.1.2.4.50",
            "1.2.840.10008.1.2.4.70",
            "1.2.840.10008.1.2.4.90",
            "1.2.840.10008.1.2.5",
        ] {
            assert!(accepted.contains(&uid), "{uid} not in {accepted:?}");
        }
        assert!(!accepted.contains(&"1.2.840.10008.1.2.1.99"));
    }

    #[test]
    fn every_listed_class_is_a_valid_uid() {
        for (uid, _) in STORAGE_SOP_CLASSES {
            assert!(crate::dicom::uid::is_valid_uid(uid), "{uid}");
        }
    }
}
