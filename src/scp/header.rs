//! The header of a received instance: the attributes simgate indexes and judges, read with
//! dicom-object from the bounded, length-checked bytes that [`scan`](super::scan) copied.
//!
//! [`InstanceHeader`] is what the receive path hands to every later stage (index, naming,
//! forwarding): they never re-read the file.

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use serde::Serialize;

use super::scan;
use crate::dicom::CodeItem;
use crate::dicom::dataset::text;
use crate::dicom::transfer_syntax::{self, Encoding};
use crate::dicom::uid::is_valid_uid;

/// What simgate keeps of each instance's header. Missing attributes are empty strings (or
/// `None` for numbers), as DICOM type 2 attributes would be.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct InstanceHeader {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub patient_id: String,
    pub patient_name: String,
    pub patient_birth_date: String,
    pub patient_sex: String,
    pub study_id: String,
    pub referring_physician_name: String,
    pub series_date: String,
    pub series_time: String,
    pub accession_number: String,
    pub modality: String,
    pub study_date: String,
    pub study_time: String,
    pub study_description: String,
    pub series_description: String,
    pub protocol_name: String,
    pub station_name: String,
    pub manufacturer: String,
    pub manufacturer_model_name: String,
    pub requested_procedure_description: String,
    pub image_comments: String,
    pub procedure_codes: Vec<CodeItem>,
    pub requested_procedure_codes: Vec<CodeItem>,
    /// Values of Image Type, e.g. `["ORIGINAL", "PRIMARY", "AXIAL"]`.
    pub image_type: Vec<String>,
    pub series_number: Option<i64>,
    pub instance_number: Option<i64>,
    pub image_position_patient: Option<[f64; 3]>,
    /// Image Orientation (Patient): row then column direction cosines.
    pub image_orientation_patient: Option<[f64; 6]>,
    /// Pixel Spacing: row spacing, column spacing (mm).
    pub pixel_spacing: Option<[f64; 2]>,
    pub rows: Option<u32>,
    pub columns: Option<u32>,
    pub slice_thickness: Option<f64>,
    /// Gantry/Detector Tilt (0018,1120), degrees.
    pub gantry_tilt: Option<f64>,
    pub number_of_frames: Option<u32>,
    /// For an RT Structure Set, Plan or Dose: the SOP Instance UIDs it references (images,
    /// structure set, plan), a bounded number, found in its sequences.
    pub referenced_instance_uids: Vec<String>,
    /// For an RT object: every Frame of Reference UID it names (its own and referenced ones).
    pub referenced_frames_of_reference: Vec<String>,
    /// Frame of Reference UID; for an RT Structure Set, the first referenced frame of reference.
    pub frame_of_reference_uid: String,
    /// Respiratory Motion Compensation Technique (0018,9170) or Nominal Percentage of
    /// Respiratory Phase (0020,9245) is present (top level or in shared functional groups).
    pub respiratory_attributes: bool,
}

/// Why a header could not be read; each becomes a 0xC000-range status with this text.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("malformed data set")]
    Structure(#[from] scan::ScanError),
    #[error("transfer syntax {0} is not known")]
    UnknownTransferSyntax(String),
    #[error("data set cannot be parsed")]
    Parse(#[source] dicom_object::ReadError),
    #[error("data set lacks {0}")]
    Missing(&'static str),
    #[error("{attribute} {value:?} is not a valid UID")]
    InvalidUid {
        attribute: &'static str,
        value: String,
    },
}

impl InstanceHeader {
    /// Parses header bytes copied by [`scan::DatasetScanner`] in the given transfer syntax.
    pub fn parse(header_bytes: &[u8], transfer_syntax_uid: &str) -> Result<Self, HeaderError> {
        let encoding = Encoding::of_transfer_syntax(transfer_syntax_uid)
            .ok_or_else(|| HeaderError::UnknownTransferSyntax(transfer_syntax_uid.to_string()))?;
        scan::check_nested_lengths(header_bytes, encoding)?;
        // A deflated data set's header was copied after inflation: Explicit VR Little Endian.
        let parse_as = if transfer_syntax::is_deflated(transfer_syntax_uid) {
            transfer_syntax::EXPLICIT_VR_LITTLE_ENDIAN
        } else {
            transfer_syntax_uid
        };
        let ts = TransferSyntaxRegistry
            .get(parse_as)
            .ok_or_else(|| HeaderError::UnknownTransferSyntax(transfer_syntax_uid.to_string()))?;
        let object =
            InMemDicomObject::read_dataset_with_ts(header_bytes, ts).map_err(HeaderError::Parse)?;
        Self::from_object(&object)
    }

    pub fn from_object(object: &InMemDicomObject) -> Result<Self, HeaderError> {
        let header = InstanceHeader {
            sop_class_uid: text(object, tags::SOP_CLASS_UID),
            sop_instance_uid: text(object, tags::SOP_INSTANCE_UID),
            study_instance_uid: text(object, tags::STUDY_INSTANCE_UID),
            series_instance_uid: text(object, tags::SERIES_INSTANCE_UID),
            patient_id: text(object, tags::PATIENT_ID),
            patient_name: text(object, tags::PATIENT_NAME),
            patient_birth_date: text(object, tags::PATIENT_BIRTH_DATE),
            patient_sex: text(object, tags::PATIENT_SEX),
            study_id: text(object, tags::STUDY_ID),
            referring_physician_name: text(object, tags::REFERRING_PHYSICIAN_NAME),
            series_date: text(object, tags::SERIES_DATE),
            series_time: text(object, tags::SERIES_TIME),
            accession_number: text(object, tags::ACCESSION_NUMBER),
            modality: text(object, tags::MODALITY),
            study_date: text(object, tags::STUDY_DATE),
            study_time: text(object, tags::STUDY_TIME),
            study_description: text(object, tags::STUDY_DESCRIPTION),
            series_description: text(object, tags::SERIES_DESCRIPTION),
            protocol_name: text(object, tags::PROTOCOL_NAME),
            station_name: text(object, tags::STATION_NAME),
            manufacturer: text(object, tags::MANUFACTURER),
            manufacturer_model_name: text(object, tags::MANUFACTURER_MODEL_NAME),
            requested_procedure_description: text(object, tags::REQUESTED_PROCEDURE_DESCRIPTION),
            image_comments: text(object, tags::IMAGE_COMMENTS),
            procedure_codes: codes(object, tags::PROCEDURE_CODE_SEQUENCE),
            requested_procedure_codes: codes(object, tags::REQUESTED_PROCEDURE_CODE_SEQUENCE),
            image_type: multi_text(object, tags::IMAGE_TYPE),
            series_number: integer(object, tags::SERIES_NUMBER),
            instance_number: integer(object, tags::INSTANCE_NUMBER),
            image_position_patient: floats(object, tags::IMAGE_POSITION_PATIENT),
            image_orientation_patient: floats(object, tags::IMAGE_ORIENTATION_PATIENT),
            pixel_spacing: floats(object, tags::PIXEL_SPACING),
            rows: integer(object, tags::ROWS).and_then(|v| u32::try_from(v).ok()),
            columns: integer(object, tags::COLUMNS).and_then(|v| u32::try_from(v).ok()),
            slice_thickness: float(object, tags::SLICE_THICKNESS),
            gantry_tilt: float(object, tags::GANTRY_DETECTOR_TILT),
            number_of_frames: integer(object, tags::NUMBER_OF_FRAMES)
                .and_then(|v| u32::try_from(v).ok()),
            referenced_instance_uids: Vec::new(),
            referenced_frames_of_reference: Vec::new(),
            frame_of_reference_uid: frame_of_reference(object),
            respiratory_attributes: has_respiratory_attributes(object, 0),
        };
        let mut header = header;
        if is_rt_object(&header.modality) {
            let mut references = References::default();
            references.collect(object, 0);
            header.referenced_instance_uids = references.instances;
            header.referenced_frames_of_reference = references.frames_of_reference;
        }
        for (attribute, value) in [
            ("SOP Class UID (0008,0016)", &header.sop_class_uid),
            ("SOP Instance UID (0008,0018)", &header.sop_instance_uid),
            ("Study Instance UID (0020,000D)", &header.study_instance_uid),
            (
                "Series Instance UID (0020,000E)",
                &header.series_instance_uid,
            ),
        ] {
            if value.is_empty() {
                return Err(HeaderError::Missing(attribute));
            }
            if !is_valid_uid(value) {
                return Err(HeaderError::InvalidUid {
                    attribute,
                    value: value.chars().take(80).collect(),
                });
            }
        }
        Ok(header)
    }
}

fn multi_text(object: &InMemDicomObject, tag: Tag) -> Vec<String> {
    object
        .get(tag)
        .and_then(|e| e.to_multi_str().ok())
        .map(|values| values.iter().map(|v| v.trim().to_string()).collect())
        .unwrap_or_default()
}

fn integer(object: &InMemDicomObject, tag: Tag) -> Option<i64> {
    object.get(tag)?.to_int::<i64>().ok()
}

/// A multi-valued decimal attribute with exactly `N` finite values.
fn floats<const N: usize>(object: &InMemDicomObject, tag: Tag) -> Option<[f64; N]> {
    let values = object.get(tag)?.to_multi_float64().ok()?;
    let values: [f64; N] = values.as_slice().try_into().ok()?;
    values.iter().all(|v| v.is_finite()).then_some(values)
}

fn float(object: &InMemDicomObject, tag: Tag) -> Option<f64> {
    floats::<1>(object, tag).map(|[v]| v)
}

/// Modalities whose references the identity check follows.
fn is_rt_object(modality: &str) -> bool {
    matches!(modality.trim(), "RTSTRUCT" | "RTPLAN" | "RTDOSE")
}

/// References an RT object holds: at most this many of each kind are kept.
const MAX_REFERENCES: usize = 4096;
/// Sequences deeper than this are not searched (a structure set's contour images sit at 5).
const MAX_REFERENCE_DEPTH: usize = 8;

/// Referenced SOP Instance UIDs and Frame of Reference UIDs anywhere in an RT object's
/// sequences, deduplicated, in the order found.
#[derive(Default)]
struct References {
    instances: Vec<String>,
    frames_of_reference: Vec<String>,
    seen: std::collections::HashSet<String>,
}

impl References {
    fn collect(&mut self, object: &InMemDicomObject, depth: usize) {
        for (tag, list) in [
            (tags::REFERENCED_SOP_INSTANCE_UID, 0),
            (tags::FRAME_OF_REFERENCE_UID, 1),
        ] {
            let uid = text(object, tag);
            let list = if list == 0 {
                &mut self.instances
            } else {
                &mut self.frames_of_reference
            };
            if !uid.is_empty() && list.len() < MAX_REFERENCES && self.seen.insert(uid.clone()) {
                list.push(uid);
            }
        }
        if depth >= MAX_REFERENCE_DEPTH {
            return;
        }
        for element in object.iter() {
            for item in element.items().into_iter().flatten() {
                self.collect(item, depth + 1);
            }
        }
    }
}

fn frame_of_reference(object: &InMemDicomObject) -> String {
    let own = text(object, tags::FRAME_OF_REFERENCE_UID);
    if !own.is_empty() {
        return own;
    }
    object
        .get(tags::REFERENCED_FRAME_OF_REFERENCE_SEQUENCE)
        .and_then(|e| e.items())
        .and_then(|items| items.first())
        .map(|item| text(item, tags::FRAME_OF_REFERENCE_UID))
        .unwrap_or_default()
}

/// Looks for the respiratory attributes at the top level and inside sequences (functional
/// groups), a few levels deep.
fn has_respiratory_attributes(object: &InMemDicomObject, depth: usize) -> bool {
    let present = |tag| object.get(tag).is_some();
    if present(tags::RESPIRATORY_MOTION_COMPENSATION_TECHNIQUE)
        || present(tags::NOMINAL_PERCENTAGE_OF_RESPIRATORY_PHASE)
    {
        return true;
    }
    depth < 3
        && object
            .iter()
            .filter_map(|element| element.items())
            .flatten()
            .any(|item| has_respiratory_attributes(item, depth + 1))
}

fn codes(object: &InMemDicomObject, tag: Tag) -> Vec<CodeItem> {
    let Some(items) = object.get(tag).and_then(|e| e.items()) else {
        return Vec::new();
    };
    items
        .iter()
        .map(|item| CodeItem {
            code_value: text(item, tags::CODE_VALUE),
            coding_scheme_designator: text(item, tags::CODING_SCHEME_DESIGNATOR),
            code_meaning: text(item, tags::CODE_MEANING),
        })
        .filter(|code| !code.code_value.is_empty())
        .collect()
}
