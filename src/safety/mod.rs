//! The safety gate: checks that a series reaching the treatment planning system is the
//! patient's and is geometrically whole. Pure, like `naming`: plain values in, findings out,
//! no I/O, no clock.
//!
//! - [`identity`]: as each instance arrives, against what the index already holds of its
//!   study, series and earlier copy (patient attributes, study and frame of reference of the
//!   series, what an RT object references).
//! - [`geometry`]: once a series is quiet, its slices from Image Position/Orientation
//!   (Patient) and the image grid attributes; the phases of a 4D CT against each other.
//!
//! What a destination does with a finding (hold it, or wait for the series check) is the
//! queue's business (`store::safety`, `forward`); here a finding is data.

pub mod geometry;
pub mod identity;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

/// Stable finding codes (API, `--json`, config `hold_on`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingCode {
    IdentityMismatch,
    SeriesStudyConflict,
    FrameOfReferenceConflict,
    RtReferenceConflict,
    SliceGap,
    SliceDuplicate,
    SliceSpacingUneven,
    OrientationMixed,
    PixelSpacingMixed,
    GantryTilt,
    TooFewSlices,
    PhaseCountMismatch,
}

impl FindingCode {
    pub const ALL: [FindingCode; 12] = [
        FindingCode::IdentityMismatch,
        FindingCode::SeriesStudyConflict,
        FindingCode::FrameOfReferenceConflict,
        FindingCode::RtReferenceConflict,
        FindingCode::SliceGap,
        FindingCode::SliceDuplicate,
        FindingCode::SliceSpacingUneven,
        FindingCode::OrientationMixed,
        FindingCode::PixelSpacingMixed,
        FindingCode::GantryTilt,
        FindingCode::TooFewSlices,
        FindingCode::PhaseCountMismatch,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FindingCode::IdentityMismatch => "identity-mismatch",
            FindingCode::SeriesStudyConflict => "series-study-conflict",
            FindingCode::FrameOfReferenceConflict => "frame-of-reference-conflict",
            FindingCode::RtReferenceConflict => "rt-reference-conflict",
            FindingCode::SliceGap => "slice-gap",
            FindingCode::SliceDuplicate => "slice-duplicate",
            FindingCode::SliceSpacingUneven => "slice-spacing-uneven",
            FindingCode::OrientationMixed => "orientation-mixed",
            FindingCode::PixelSpacingMixed => "pixel-spacing-mixed",
            FindingCode::GantryTilt => "gantry-tilt",
            FindingCode::TooFewSlices => "too-few-slices",
            FindingCode::PhaseCountMismatch => "phase-count-mismatch",
        }
    }

    pub fn parse(text: &str) -> Option<FindingCode> {
        FindingCode::ALL.into_iter().find(|c| c.as_str() == text)
    }

    /// Found by the geometry check of a quiet series (not as an instance arrives).
    pub fn is_geometry(self) -> bool {
        self >= FindingCode::SliceGap
    }
}

impl std::fmt::Display for FindingCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem found; `detail` is a sentence with numbers and never holds patient data.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub code: FindingCode,
    /// The attribute concerned, e.g. "Image Position (Patient)", "Pixel Spacing", "Patient ID".
    pub attribute: String,
    /// What was expected (the study's value, the median spacing...); may be empty.
    pub expected: String,
    /// What was found; may be empty.
    pub found: String,
    /// Whether `expected`/`found` are patient data (masked in logs).
    pub phi: bool,
    pub detail: String,
    /// The instance the finding is about, when it is about one (SOP Instance UID), else empty.
    pub sop_instance_uid: String,
}

impl Finding {
    /// A value for a log line: patient data is replaced by its length.
    pub fn loggable(&self, value: &str) -> String {
        if self.phi {
            format!("({} characters)", value.chars().count())
        } else {
            value.to_string()
        }
    }
}

/// Tolerances of the geometry checks (config table `[safety]`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tolerances {
    /// Two slices closer than this along the normal are duplicates (mm).
    pub duplicate_mm: f64,
    /// A step larger than this factor times the median spacing is a gap.
    pub gap_factor: f64,
    /// A step differing from the median spacing by more than this is uneven (mm).
    pub spacing_tolerance_mm: f64,
    /// Direction cosines differing by more than this are another orientation.
    pub orientation_tolerance: f64,
    /// Pixel Spacing / Slice Thickness values differing by more than this are mixed (mm).
    pub pixel_spacing_tolerance_mm: f64,
    /// Gantry/Detector Tilt, or the slice normal's angle from the patient's z axis, beyond
    /// this is a tilt (degrees).
    pub tilt_tolerance_degrees: f64,
    /// A planning CT with fewer slices than this is incomplete.
    pub min_planning_slices: usize,
}

impl Default for Tolerances {
    fn default() -> Self {
        Tolerances {
            duplicate_mm: 0.01,
            gap_factor: 1.5,
            spacing_tolerance_mm: 0.1,
            orientation_tolerance: 0.001,
            pixel_spacing_tolerance_mm: 0.001,
            tilt_tolerance_degrees: 0.5,
            min_planning_slices: 40,
        }
    }
}
