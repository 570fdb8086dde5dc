//! Synthetic CT-simulator studies (CT slices, RT Structure Set, RT Plan, RT Dose) for tests and the benchmark.
//!
//! Everything here is deterministic: the same [`StudySpec`] (including its `seed`) always yields the
//! same UIDs, the same attribute values and the same pixel data, so a test can regenerate an
//! instance instead of storing fixtures. No real patient data is involved, and no file name is
//! derived from a UID or any other attribute value.

use std::fs;
use std::path::{Path, PathBuf};

use dicom_core::smallvec::smallvec;
use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::mem::InMemElement;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use sha2::{Digest, Sha256};

/// CT images are acquired 2.5 mm apart and 2.5 mm thick.
const SLICE_THICKNESS_MM: f64 = 2.5;
/// 500 mm display field of view over 512 columns, the usual planning-CT geometry.
const PIXEL_SPACING_MM: f64 = 500.0 / 512.0;
const MANUFACTURER: &str = "SIMGATE SYNTH";
const MANUFACTURER_MODEL_NAME: &str = "SYNTH CT SIM";
const STUDY_DATE: &str = "20250317";
const STUDY_TIME: &str = "083000";
/// The RT objects are "created" after the scan, as a planning system would.
const RT_CONTENT_TIME: &str = "141500";
/// RT Referenced Study Sequence items name the study by Detached Study Management, a retired SOP
/// class (hence the literal: the dictionary constant is deprecated), which is still what treatment
/// planning systems write and expect there.
const REFERENCED_STUDY_SOP_CLASS_UID: &str = "1.2.840.10008.3.1.2.3.1";
/// The RT Dose grid: frames x rows x columns of 32-bit values.
const DOSE_FRAMES: u32 = 10;
const DOSE_GRID_SIZE: u16 = 64;

/// One CT series of a synthetic study.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesSpec {
    /// Series Description (0008,103E); may be empty, as on many real planning series.
    pub description: String,
    /// Number of axial slices, one instance each.
    pub slices: u32,
    /// Image Type (0008,0008) values, e.g. `["ORIGINAL","PRIMARY","AXIAL"]` or
    /// `["DERIVED","SECONDARY","AXIAL","AVE"]`.
    pub image_type: Vec<String>,
    /// Series Number (0020,0011).
    pub series_number: u32,
}

/// What [`write_study`] produces: one patient, one study, its CT series and optionally RT objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StudySpec {
    pub patient_id: String,
    /// Patient's Name (0010,0010) in DICOM PN form, e.g. `SYNTH^PLANNING`.
    pub patient_name: String,
    pub study_description: String,
    pub station_name: String,
    pub rows: u16,
    pub columns: u16,
    /// Sent in this order; the first series is the one the RT objects reference.
    pub series: Vec<SeriesSpec>,
    /// Optional procedure code items (code value, scheme designator, meaning) put in Procedure Code Sequence (0008,1032).
    pub procedure_codes: Vec<(String, String, String)>,
    /// Also write an RT Structure Set, an RT Plan and an RT Dose that reference the first series' frame of reference / images.
    pub with_rt_objects: bool,
    /// Seed for deterministic UIDs and pixel values.
    pub seed: u64,
}

impl StudySpec {
    /// 100-slice (or n) planning CT, 512x512, description "CT SIM PLANNING", with RT objects.
    ///
    /// "CT SIM PLANNING" is the Study Description; the single series is described "PLANNING CT".
    pub fn planning_ct(slices: u32, seed: u64) -> Self {
        StudySpec {
            patient_id: format!("SYNTH{seed}"),
            patient_name: "SYNTH^PLANNING".to_owned(),
            study_description: "CT SIM PLANNING".to_owned(),
            station_name: "CTSIM01".to_owned(),
            rows: 512,
            columns: 512,
            series: vec![SeriesSpec {
                description: "PLANNING CT".to_owned(),
                slices,
                image_type: image_type(&["ORIGINAL", "PRIMARY", "AXIAL"]),
                series_number: 1,
            }],
            procedure_codes: Vec::new(),
            with_rt_objects: true,
            seed,
        }
    }

    /// A CT-simulator upload: planning CT (planning_slices) + `phases` 4D phase series named "4D 0%".."4D 90%" (phase_slices each) + "AVG" (image_type with AVE) + "MIP" series; no RT objects.
    ///
    /// Phase percentages are `100 * i / phases`, so 10 phases give 0%, 10%, ... 90%. AVG and MIP have
    /// `phase_slices` slices each. The Study Description is "4DCT LUNG SIM", a typical site name.
    pub fn ct_simulator_upload(
        planning_slices: u32,
        phases: u32,
        phase_slices: u32,
        seed: u64,
    ) -> Self {
        let mut spec = StudySpec::planning_ct(planning_slices, seed);
        spec.study_description = "4DCT LUNG SIM".to_owned();
        spec.with_rt_objects = false;
        for phase in 0..phases {
            let percent = u64::from(phase) * 100 / u64::from(phases);
            spec.series.push(SeriesSpec {
                description: format!("4D {percent}%"),
                slices: phase_slices,
                image_type: image_type(&["ORIGINAL", "PRIMARY", "AXIAL"]),
                series_number: 2 + phase,
            });
        }
        spec.series.push(SeriesSpec {
            description: "AVG".to_owned(),
            slices: phase_slices,
            image_type: image_type(&["DERIVED", "SECONDARY", "AXIAL", "AVE"]),
            series_number: 2 + phases,
        });
        spec.series.push(SeriesSpec {
            description: "MIP".to_owned(),
            slices: phase_slices,
            image_type: image_type(&["DERIVED", "SECONDARY", "AXIAL", "MIP"]),
            series_number: 3 + phases,
        });
        spec
    }

    /// Number of files [`write_study`] writes for this spec.
    pub fn instance_count(&self) -> usize {
        let ct: usize = self.series.iter().map(|s| s.slices as usize).sum();
        ct + if self.writes_rt_objects() { 3 } else { 0 }
    }

    /// RT objects need a first series with at least one image to reference.
    fn writes_rt_objects(&self) -> bool {
        self.with_rt_objects && self.series.first().is_some_and(|s| s.slices > 0)
    }
}

fn image_type(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| (*v).to_owned()).collect()
}

/// One Part-10 file written by [`write_study`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenFile {
    pub path: PathBuf,
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    pub series_instance_uid: String,
}

/// The files of one study, in sending order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenStudy {
    pub study_instance_uid: String,
    pub files: Vec<WrittenFile>,
}

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("cannot create output directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build the file meta information for {path}")]
    FileMeta {
        path: PathBuf,
        #[source]
        source: Box<dicom_object::WithMetaError>,
    },
    #[error("cannot write {path}")]
    WriteFile {
        path: PathBuf,
        #[source]
        source: Box<dicom_object::WriteError>,
    },
}

/// Writes one Part-10 file per instance into `dir` (Explicit VR Little Endian), in sending order; file names like `0001_CT_<n>.dcm` (never derived from UIDs).
///
/// The exact name is `<order>_<modality>_<series number>_<instance number>.dcm`, e.g.
/// `0001_CT_001_0001.dcm`, zero-padded so that sorting the names gives the sending order: all CT
/// series in spec order, then RTSTRUCT, RTPLAN, RTDOSE. `dir` is created if missing; files of the
/// same name are overwritten.
pub fn write_study(spec: &StudySpec, dir: &Path) -> Result<WrittenStudy, SynthError> {
    fs::create_dir_all(dir).map_err(|source| SynthError::CreateDir {
        path: dir.to_owned(),
        source,
    })?;
    let uids = StudyUids::new(spec.seed);
    let order_width = spec.instance_count().to_string().len().max(4);
    let mut files = Vec::with_capacity(spec.instance_count());
    let mut write =
        |object: InMemDicomObject, modality: &str, series_number: u32, instance: u32| {
            let order = files.len() + 1;
            let file_name =
                format!("{order:0order_width$}_{modality}_{series_number:03}_{instance:04}.dcm");
            files.push(write_part10(object, &dir.join(file_name))?);
            Ok::<(), SynthError>(())
        };

    for (series_index, series) in spec.series.iter().enumerate() {
        for slice in 0..series.slices {
            let (object, _) = ct_instance(spec, series_index, slice);
            write(object, "CT", series.series_number, slice + 1)?;
        }
    }
    if spec.writes_rt_objects() {
        for kind in RtKind::ALL {
            let object = match kind {
                RtKind::StructureSet => rt_structure_set(spec, &uids),
                RtKind::Plan => rt_plan(spec, &uids),
                RtKind::Dose => rt_dose(spec, &uids),
            };
            write(object, kind.modality(), kind.series_number(spec), 1)?;
        }
    }
    Ok(WrittenStudy {
        study_instance_uid: uids.study(),
        files,
    })
}

/// What a CT simulator sends besides the images of a study: an X-Ray Radiation Dose SR, an
/// Enhanced SR (protocol), an Encapsulated PDF, a Secondary Capture dose screen and a Raw Data
/// object, all of the same patient and study as `spec`. Written after the study's files (their
/// names sort after them), one file each.
pub fn write_companions(spec: &StudySpec, dir: &Path) -> Result<Vec<WrittenFile>, SynthError> {
    let uids = StudyUids::new(spec.seed);
    let companions: [(&str, &str, &str, u32); 5] = [
        (
            uids::X_RAY_RADIATION_DOSE_SR_STORAGE,
            "SR",
            "Dose Report",
            900,
        ),
        (uids::ENHANCED_SR_STORAGE, "SR", "Patient Protocol", 901),
        (
            uids::ENCAPSULATED_PDF_STORAGE,
            "DOC",
            "Exam Protocol PDF",
            902,
        ),
        (
            uids::SECONDARY_CAPTURE_IMAGE_STORAGE,
            "CT",
            "Dose Info",
            903,
        ),
        (uids::RAW_DATA_STORAGE, "CT", "Raw data", 904),
    ];
    let mut files = Vec::new();
    for (index, (sop_class_uid, modality, description, series_number)) in
        companions.into_iter().enumerate()
    {
        let mut obj = InMemDicomObject::new_empty();
        put_sop_common(
            &mut obj,
            sop_class_uid,
            &uids.uid(&format!("companion-instance/{index}")),
        );
        put_patient_and_study(&mut obj, spec, &uids);
        put_equipment(&mut obj, spec);
        obj.put(text(tags::MODALITY, VR::CS, modality));
        obj.put(text(
            tags::SERIES_INSTANCE_UID,
            VR::UI,
            &uids.uid(&format!("companion-series/{index}")),
        ));
        obj.put(int_string(tags::SERIES_NUMBER, i64::from(series_number)));
        obj.put(text(tags::SERIES_DESCRIPTION, VR::LO, description));
        obj.put(int_string(tags::INSTANCE_NUMBER, 1));
        match sop_class_uid {
            uids::X_RAY_RADIATION_DOSE_SR_STORAGE | uids::ENHANCED_SR_STORAGE => {
                obj.put(text(tags::VALUE_TYPE, VR::CS, "CONTAINER"));
                obj.put(text(tags::COMPLETION_FLAG, VR::CS, "COMPLETE"));
                obj.put(text(tags::VERIFICATION_FLAG, VR::CS, "UNVERIFIED"));
                obj.put(text(tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE"));
                obj.put(sequence(
                    tags::CONCEPT_NAME_CODE_SEQUENCE,
                    vec![InMemDicomObject::from_element_iter([
                        text(tags::CODE_VALUE, VR::SH, "113701"),
                        text(tags::CODING_SCHEME_DESIGNATOR, VR::SH, "DCM"),
                        text(tags::CODE_MEANING, VR::LO, "X-Ray Radiation Dose Report"),
                    ])],
                ));
            }
            uids::ENCAPSULATED_PDF_STORAGE => {
                let pdf = b"%PDF-1.4\n% simgate synthetic protocol page\n%%EOF\n".to_vec();
                obj.put(text(tags::DOCUMENT_TITLE, VR::ST, "Exam protocol"));
                obj.put(text(
                    tags::MIME_TYPE_OF_ENCAPSULATED_DOCUMENT,
                    VR::LO,
                    "application/pdf",
                ));
                obj.put(text(tags::BURNED_IN_ANNOTATION, VR::CS, "YES"));
                obj.put(DataElement::new(
                    tags::ENCAPSULATED_DOCUMENT,
                    VR::OB,
                    PrimitiveValue::from(pdf),
                ));
            }
            uids::SECONDARY_CAPTURE_IMAGE_STORAGE => {
                obj.put(text(tags::CONVERSION_TYPE, VR::CS, "WSD"));
                obj.put(unsigned_short(tags::SAMPLES_PER_PIXEL, 1));
                obj.put(text(
                    tags::PHOTOMETRIC_INTERPRETATION,
                    VR::CS,
                    "MONOCHROME2",
                ));
                obj.put(unsigned_short(tags::ROWS, 16));
                obj.put(unsigned_short(tags::COLUMNS, 16));
                obj.put(unsigned_short(tags::BITS_ALLOCATED, 8));
                obj.put(unsigned_short(tags::BITS_STORED, 8));
                obj.put(unsigned_short(tags::HIGH_BIT, 7));
                obj.put(unsigned_short(tags::PIXEL_REPRESENTATION, 0));
                let pixels: Vec<u8> = (0..256u32).map(|i| (i * 7 % 251) as u8).collect();
                obj.put(DataElement::new(
                    tags::PIXEL_DATA,
                    VR::OB,
                    PrimitiveValue::from(pixels),
                ));
            }
            _ => {}
        }
        let path = dir.join(format!("9{index:03}_{modality}_{series_number}.dcm"));
        files.push(write_part10(obj, &path)?);
    }
    Ok(files)
}

/// Builds one CT image instance in memory (for tests that need a single object), returns the InMemDicomObject (dataset only) and its SOP Instance UID.
///
/// `slice` counts from 0; the Instance Number is `slice + 1`.
///
/// # Panics
/// If `series_index` is not an index of `spec.series`.
pub fn ct_instance(
    spec: &StudySpec,
    series_index: usize,
    slice: u32,
) -> (InMemDicomObject, String) {
    let series = &spec.series[series_index];
    let uids = StudyUids::new(spec.seed);
    let sop_instance_uid = uids.ct_instance(series_index, slice);
    let z = slice_z(slice);
    let (x0, y0) = image_origin(spec.rows, spec.columns, PIXEL_SPACING_MM);

    let mut obj = InMemDicomObject::new_empty();
    put_sop_common(&mut obj, uids::CT_IMAGE_STORAGE, &sop_instance_uid);
    obj.put(strs(tags::IMAGE_TYPE, VR::CS, &series.image_type));
    put_patient_and_study(&mut obj, spec, &uids);
    put_equipment(&mut obj, spec);
    obj.put(text(tags::MODALITY, VR::CS, "CT"));
    obj.put(text(
        tags::SERIES_INSTANCE_UID,
        VR::UI,
        &uids.ct_series(series_index),
    ));
    obj.put(int_string(
        tags::SERIES_NUMBER,
        i64::from(series.series_number),
    ));
    obj.put(text(tags::SERIES_DESCRIPTION, VR::LO, &series.description));
    obj.put(text(tags::SERIES_DATE, VR::DA, STUDY_DATE));
    obj.put(text(tags::SERIES_TIME, VR::TM, STUDY_TIME));
    obj.put(text(tags::PROTOCOL_NAME, VR::LO, &spec.study_description));
    obj.put(text(tags::PATIENT_POSITION, VR::CS, "HFS"));
    put_frame_of_reference(&mut obj, &uids);

    // General Image and CT Image modules.
    obj.put(int_string(tags::INSTANCE_NUMBER, i64::from(slice) + 1));
    obj.put(int_string(tags::ACQUISITION_NUMBER, 1));
    obj.put(text(tags::CONTENT_DATE, VR::DA, STUDY_DATE));
    obj.put(text(tags::CONTENT_TIME, VR::TM, STUDY_TIME));
    obj.put(decimal_strings(tags::KVP, &[120.0]));
    obj.put(decimal_strings(
        tags::SLICE_THICKNESS,
        &[SLICE_THICKNESS_MM],
    ));
    obj.put(decimal_strings(tags::IMAGE_POSITION_PATIENT, &[x0, y0, z]));
    obj.put(decimal_strings(
        tags::IMAGE_ORIENTATION_PATIENT,
        &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
    ));
    obj.put(decimal_strings(tags::SLICE_LOCATION, &[z]));
    obj.put(decimal_strings(
        tags::PIXEL_SPACING,
        &[PIXEL_SPACING_MM, PIXEL_SPACING_MM],
    ));
    obj.put(decimal_strings(tags::RESCALE_INTERCEPT, &[-1024.0]));
    obj.put(decimal_strings(tags::RESCALE_SLOPE, &[1.0]));
    obj.put(text(tags::RESCALE_TYPE, VR::LO, "HU"));
    obj.put(decimal_strings(tags::WINDOW_CENTER, &[40.0]));
    obj.put(decimal_strings(tags::WINDOW_WIDTH, &[400.0]));

    // Image Pixel module: 12 bits stored in 16, unsigned.
    obj.put(unsigned_short(tags::SAMPLES_PER_PIXEL, 1));
    obj.put(text(
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        "MONOCHROME2",
    ));
    obj.put(unsigned_short(tags::ROWS, spec.rows));
    obj.put(unsigned_short(tags::COLUMNS, spec.columns));
    obj.put(unsigned_short(tags::BITS_ALLOCATED, 16));
    obj.put(unsigned_short(tags::BITS_STORED, 12));
    obj.put(unsigned_short(tags::HIGH_BIT, 11));
    obj.put(unsigned_short(tags::PIXEL_REPRESENTATION, 0));
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::from(ct_pixel_data(spec.rows, spec.columns, slice, spec.seed)),
    ));
    (obj, sop_instance_uid)
}

/// Attaches the file meta group and writes `object` as a Part-10 file at `path`.
fn write_part10(object: InMemDicomObject, path: &Path) -> Result<WrittenFile, SynthError> {
    let read_uid = |tag: Tag| {
        object
            .element(tag)
            .ok()
            .and_then(|e| e.to_str().ok())
            .map(|uid| uid.trim_end_matches(['\0', ' ']).to_owned())
            .unwrap_or_default()
    };
    let sop_instance_uid = read_uid(tags::SOP_INSTANCE_UID);
    let sop_class_uid = read_uid(tags::SOP_CLASS_UID);
    let series_instance_uid = read_uid(tags::SERIES_INSTANCE_UID);

    let file_object = object
        .with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
        .map_err(|source| SynthError::FileMeta {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
    file_object
        .write_to_file(path)
        .map_err(|source| SynthError::WriteFile {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
    Ok(WrittenFile {
        path: path.to_owned(),
        sop_instance_uid,
        sop_class_uid,
        series_instance_uid,
    })
}

// ---------------------------------------------------------------------------------------------
// UIDs

/// Deterministic UIDs of one study, all of the form `2.25.<decimal>`.
///
/// `2.25` is the root for UIDs made from a 128-bit number (ISO/IEC 9834-8). The number here is
/// the first 128 bits of SHA-256 over the seed and the role of the UID, so UIDs are stable across
/// runs, distinct between roles and seeds, and never need a registered organisation root.
struct StudyUids {
    seed: u64,
}

impl StudyUids {
    fn new(seed: u64) -> Self {
        StudyUids { seed }
    }

    fn study(&self) -> String {
        self.uid("study")
    }

    fn frame_of_reference(&self) -> String {
        self.uid("frame-of-reference")
    }

    fn ct_series(&self, series_index: usize) -> String {
        self.uid(&format!("ct-series/{series_index}"))
    }

    fn ct_instance(&self, series_index: usize, slice: u32) -> String {
        self.uid(&format!("ct-instance/{series_index}/{slice}"))
    }

    fn rt_series(&self, kind: RtKind) -> String {
        self.uid(&format!("rt-series/{}", kind.modality()))
    }

    fn rt_instance(&self, kind: RtKind) -> String {
        self.uid(&format!("rt-instance/{}", kind.modality()))
    }

    fn uid(&self, role: &str) -> String {
        let digest = Sha256::digest(format!("simgate-synth/{}/{role}", self.seed));
        let mut first_128_bits = [0u8; 16];
        first_128_bits.copy_from_slice(&digest[..16]);
        // A decimal rendering never has a leading zero; at most 39 digits, so 44 characters.
        format!("2.25.{}", u128::from_be_bytes(first_128_bits))
    }
}

// ---------------------------------------------------------------------------------------------
// Geometry and pixel data

/// Patient z of a slice: the stack advances by one slice thickness per slice.
fn slice_z(slice: u32) -> f64 {
    f64::from(slice) * SLICE_THICKNESS_MM
}

/// Patient x, y of the first pixel's centre, placing the image centre on the z axis.
fn image_origin(rows: u16, columns: u16, spacing: f64) -> (f64, f64) {
    let x0 = -(f64::from(columns) - 1.0) / 2.0 * spacing;
    let y0 = -(f64::from(rows) - 1.0) / 2.0 * spacing;
    (x0, y0)
}

/// Half-axes in mm of the elliptical "body" drawn in every slice (and outlined by the BODY ROI).
fn body_half_axes(rows: u16, columns: u16) -> (f64, f64) {
    (
        0.4 * f64::from(columns) * PIXEL_SPACING_MM,
        0.3 * f64::from(rows) * PIXEL_SPACING_MM,
    )
}

/// 16-bit little-endian CT pixels: an elliptical water-like body with a fine texture that moves
/// from slice to slice, over near-zero air. Values stay within 12 bits.
///
/// Cheap on purpose (integer work per pixel, the ellipse solved once per row): the benchmark
/// generates 1400 slices of 512x512.
fn ct_pixel_data(rows: u16, columns: u16, slice: u32, seed: u64) -> Vec<u8> {
    let (half_width, half_height) = body_half_axes(rows, columns);
    let (half_width_px, half_height_px) = (
        half_width / PIXEL_SPACING_MM,
        half_height / PIXEL_SPACING_MM,
    );
    let (rows, columns) = (usize::from(rows), usize::from(columns));
    let centre_x = columns as f64 / 2.0;
    let centre_y = rows as f64 / 2.0;
    // Only the low bits matter: they shift the texture per slice and per seed.
    let phase = (slice as usize).wrapping_mul(7).wrapping_add(seed as usize);

    let mut bytes = vec![0u8; rows * columns * 2];
    for (y, row) in bytes.chunks_exact_mut(columns * 2).enumerate() {
        let dy = (y as f64 + 0.5 - centre_y) / half_height_px;
        let half_span = if dy.abs() < 1.0 {
            half_width_px * (1.0 - dy * dy).sqrt()
        } else {
            0.0
        };
        let body_start = (centre_x - half_span).max(0.0) as usize;
        let body_end = ((centre_x + half_span) as usize).min(columns);
        for (x, pixel) in row.chunks_exact_mut(2).enumerate() {
            let value: u16 = if x >= body_start && x < body_end {
                // Around 1024 (0 HU after the rescale intercept), +-32.
                (992 + ((x + 3 * y + phase) & 0x3F)) as u16
            } else {
                ((x ^ y ^ phase) & 0x0F) as u16
            };
            pixel.copy_from_slice(&value.to_le_bytes());
        }
    }
    bytes
}

// ---------------------------------------------------------------------------------------------
// RT objects

/// The three RT objects written after the CT series, each in its own series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RtKind {
    StructureSet,
    Plan,
    Dose,
}

impl RtKind {
    const ALL: [RtKind; 3] = [RtKind::StructureSet, RtKind::Plan, RtKind::Dose];

    fn modality(self) -> &'static str {
        match self {
            RtKind::StructureSet => "RTSTRUCT",
            RtKind::Plan => "RTPLAN",
            RtKind::Dose => "RTDOSE",
        }
    }

    fn sop_class_uid(self) -> &'static str {
        match self {
            RtKind::StructureSet => uids::RT_STRUCTURE_SET_STORAGE,
            RtKind::Plan => uids::RT_PLAN_STORAGE,
            RtKind::Dose => uids::RT_DOSE_STORAGE,
        }
    }

    /// RT series are numbered after the highest CT series number, in sending order.
    fn series_number(self, spec: &StudySpec) -> u32 {
        let highest_ct_series_number = spec.series.iter().map(|s| s.series_number).max();
        let offset = match self {
            RtKind::StructureSet => 1,
            RtKind::Plan => 2,
            RtKind::Dose => 3,
        };
        highest_ct_series_number.unwrap_or(0) + offset
    }
}

/// RT Structure Set with one BODY ROI, contoured on up to three middle slices of the first series.
fn rt_structure_set(spec: &StudySpec, uids: &StudyUids) -> InMemDicomObject {
    let first_series = &spec.series[0];
    let ct_image_reference =
        |slice: u32| referenced_sop(uids::CT_IMAGE_STORAGE, &uids.ct_instance(0, slice));

    let rt_referenced_series = InMemDicomObject::from_element_iter([
        text(tags::SERIES_INSTANCE_UID, VR::UI, &uids.ct_series(0)),
        sequence(
            tags::CONTOUR_IMAGE_SEQUENCE,
            (0..first_series.slices).map(ct_image_reference).collect(),
        ),
    ]);
    let rt_referenced_study = InMemDicomObject::from_element_iter([
        text(
            tags::REFERENCED_SOP_CLASS_UID,
            VR::UI,
            REFERENCED_STUDY_SOP_CLASS_UID,
        ),
        text(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, &uids.study()),
        sequence(
            tags::RT_REFERENCED_SERIES_SEQUENCE,
            vec![rt_referenced_series],
        ),
    ]);
    let referenced_frame_of_reference = InMemDicomObject::from_element_iter([
        text(
            tags::FRAME_OF_REFERENCE_UID,
            VR::UI,
            &uids.frame_of_reference(),
        ),
        sequence(
            tags::RT_REFERENCED_STUDY_SEQUENCE,
            vec![rt_referenced_study],
        ),
    ]);

    let structure_set_roi = InMemDicomObject::from_element_iter([
        int_string(tags::ROI_NUMBER, 1),
        text(
            tags::REFERENCED_FRAME_OF_REFERENCE_UID,
            VR::UI,
            &uids.frame_of_reference(),
        ),
        text(tags::ROI_NAME, VR::LO, "BODY"),
        text(tags::ROI_GENERATION_ALGORITHM, VR::CS, "MANUAL"),
    ]);

    // An octagon inscribed in the body ellipse, on the middle slice and its neighbours.
    let (half_width, half_height) = body_half_axes(spec.rows, spec.columns);
    let middle = first_series.slices / 2;
    let contoured_slices = [middle.saturating_sub(1), middle, middle + 1]
        .into_iter()
        .filter(|&s| s < first_series.slices)
        .collect::<std::collections::BTreeSet<u32>>();
    let contours = contoured_slices
        .into_iter()
        .map(|slice| {
            let z = slice_z(slice);
            let points: Vec<f64> = (0..8)
                .flat_map(|k| {
                    let angle = f64::from(k) * std::f64::consts::FRAC_PI_4;
                    // Rounded to 0.01 mm, as planning systems write them (and cos(90°) is not 0).
                    let round = |mm: f64| (mm * 100.0).round() / 100.0;
                    [
                        round(half_width * angle.cos()),
                        round(half_height * angle.sin()),
                        z,
                    ]
                })
                .collect();
            InMemDicomObject::from_element_iter([
                sequence(
                    tags::CONTOUR_IMAGE_SEQUENCE,
                    vec![ct_image_reference(slice)],
                ),
                text(tags::CONTOUR_GEOMETRIC_TYPE, VR::CS, "CLOSED_PLANAR"),
                int_string(tags::NUMBER_OF_CONTOUR_POINTS, 8),
                decimal_strings(tags::CONTOUR_DATA, &points),
            ])
        })
        .collect();
    let roi_contour = InMemDicomObject::from_element_iter([
        strs(tags::ROI_DISPLAY_COLOR, VR::IS, &["0", "255", "0"]),
        sequence(tags::CONTOUR_SEQUENCE, contours),
        int_string(tags::REFERENCED_ROI_NUMBER, 1),
    ]);
    let roi_observation = InMemDicomObject::from_element_iter([
        int_string(tags::OBSERVATION_NUMBER, 1),
        int_string(tags::REFERENCED_ROI_NUMBER, 1),
        text(tags::RTROI_INTERPRETED_TYPE, VR::CS, "EXTERNAL"),
        empty(tags::ROI_INTERPRETER, VR::PN),
    ]);

    let mut obj = rt_object_base(spec, uids, RtKind::StructureSet);
    obj.put(text(tags::STRUCTURE_SET_LABEL, VR::SH, "SYNTH BODY"));
    obj.put(text(tags::STRUCTURE_SET_DATE, VR::DA, STUDY_DATE));
    obj.put(text(tags::STRUCTURE_SET_TIME, VR::TM, RT_CONTENT_TIME));
    obj.put(sequence(
        tags::REFERENCED_FRAME_OF_REFERENCE_SEQUENCE,
        vec![referenced_frame_of_reference],
    ));
    obj.put(sequence(
        tags::STRUCTURE_SET_ROI_SEQUENCE,
        vec![structure_set_roi],
    ));
    obj.put(sequence(tags::ROI_CONTOUR_SEQUENCE, vec![roi_contour]));
    obj.put(sequence(
        tags::RTROI_OBSERVATIONS_SEQUENCE,
        vec![roi_observation],
    ));
    obj
}

/// RT Plan with one static 6 MV photon beam (two control points) on the structure set.
fn rt_plan(spec: &StudySpec, uids: &StudyUids) -> InMemDicomObject {
    let isocentre = [0.0, 0.0, slice_z(spec.series[0].slices / 2)];
    let jaws = |device: &str| {
        InMemDicomObject::from_element_iter([
            text(tags::RT_BEAM_LIMITING_DEVICE_TYPE, VR::CS, device),
            decimal_strings(tags::LEAF_JAW_POSITIONS, &[-50.0, 50.0]),
        ])
    };
    let control_point = |index: i64, cumulative_weight: f64| {
        let mut item = InMemDicomObject::from_element_iter([
            int_string(tags::CONTROL_POINT_INDEX, index),
            decimal_strings(tags::CUMULATIVE_METERSET_WEIGHT, &[cumulative_weight]),
        ]);
        // The first control point carries the full machine state; later ones only what changes.
        if index == 0 {
            for element in [
                decimal_strings(tags::NOMINAL_BEAM_ENERGY, &[6.0]),
                sequence(
                    tags::BEAM_LIMITING_DEVICE_POSITION_SEQUENCE,
                    vec![jaws("ASYMX"), jaws("ASYMY")],
                ),
                decimal_strings(tags::GANTRY_ANGLE, &[0.0]),
                text(tags::GANTRY_ROTATION_DIRECTION, VR::CS, "NONE"),
                decimal_strings(tags::BEAM_LIMITING_DEVICE_ANGLE, &[0.0]),
                text(
                    tags::BEAM_LIMITING_DEVICE_ROTATION_DIRECTION,
                    VR::CS,
                    "NONE",
                ),
                decimal_strings(tags::PATIENT_SUPPORT_ANGLE, &[0.0]),
                text(tags::PATIENT_SUPPORT_ROTATION_DIRECTION, VR::CS, "NONE"),
                decimal_strings(tags::TABLE_TOP_ECCENTRIC_ANGLE, &[0.0]),
                text(tags::TABLE_TOP_ECCENTRIC_ROTATION_DIRECTION, VR::CS, "NONE"),
                decimal_strings(tags::ISOCENTER_POSITION, &isocentre),
            ] {
                item.put(element);
            }
        }
        item
    };
    let jaw_device = |device: &str| {
        InMemDicomObject::from_element_iter([
            text(tags::RT_BEAM_LIMITING_DEVICE_TYPE, VR::CS, device),
            int_string(tags::NUMBER_OF_LEAF_JAW_PAIRS, 1),
        ])
    };
    let beam = InMemDicomObject::from_element_iter([
        text(tags::TREATMENT_MACHINE_NAME, VR::SH, "SYNTHLINAC"),
        text(tags::PRIMARY_DOSIMETER_UNIT, VR::CS, "MU"),
        decimal_strings(tags::SOURCE_AXIS_DISTANCE, &[1000.0]),
        sequence(
            tags::BEAM_LIMITING_DEVICE_SEQUENCE,
            vec![jaw_device("ASYMX"), jaw_device("ASYMY")],
        ),
        int_string(tags::BEAM_NUMBER, 1),
        text(tags::BEAM_NAME, VR::LO, "AP"),
        text(tags::BEAM_TYPE, VR::CS, "STATIC"),
        text(tags::RADIATION_TYPE, VR::CS, "PHOTON"),
        text(tags::TREATMENT_DELIVERY_TYPE, VR::CS, "TREATMENT"),
        int_string(tags::NUMBER_OF_WEDGES, 0),
        int_string(tags::NUMBER_OF_COMPENSATORS, 0),
        int_string(tags::NUMBER_OF_BOLI, 0),
        int_string(tags::NUMBER_OF_BLOCKS, 0),
        decimal_strings(tags::FINAL_CUMULATIVE_METERSET_WEIGHT, &[1.0]),
        int_string(tags::NUMBER_OF_CONTROL_POINTS, 2),
        sequence(
            tags::CONTROL_POINT_SEQUENCE,
            vec![control_point(0, 0.0), control_point(1, 1.0)],
        ),
        int_string(tags::REFERENCED_PATIENT_SETUP_NUMBER, 1),
    ]);
    let fraction_group = InMemDicomObject::from_element_iter([
        int_string(tags::FRACTION_GROUP_NUMBER, 1),
        int_string(tags::NUMBER_OF_FRACTIONS_PLANNED, 30),
        int_string(tags::NUMBER_OF_BEAMS, 1),
        int_string(tags::NUMBER_OF_BRACHY_APPLICATION_SETUPS, 0),
        sequence(
            tags::REFERENCED_BEAM_SEQUENCE,
            vec![InMemDicomObject::from_element_iter([
                decimal_strings(tags::BEAM_METERSET, &[200.0]),
                int_string(tags::REFERENCED_BEAM_NUMBER, 1),
            ])],
        ),
    ]);
    let patient_setup = InMemDicomObject::from_element_iter([
        text(tags::PATIENT_POSITION, VR::CS, "HFS"),
        int_string(tags::PATIENT_SETUP_NUMBER, 1),
    ]);

    let mut obj = rt_object_base(spec, uids, RtKind::Plan);
    put_frame_of_reference(&mut obj, uids);
    obj.put(text(tags::RT_PLAN_LABEL, VR::SH, "SYNTH PLAN"));
    obj.put(text(tags::RT_PLAN_DATE, VR::DA, STUDY_DATE));
    obj.put(text(tags::RT_PLAN_TIME, VR::TM, RT_CONTENT_TIME));
    obj.put(text(tags::PLAN_INTENT, VR::CS, "CURATIVE"));
    obj.put(text(tags::RT_PLAN_GEOMETRY, VR::CS, "PATIENT"));
    obj.put(sequence(
        tags::REFERENCED_STRUCTURE_SET_SEQUENCE,
        vec![referenced_sop(
            uids::RT_STRUCTURE_SET_STORAGE,
            &uids.rt_instance(RtKind::StructureSet),
        )],
    ));
    obj.put(sequence(
        tags::FRACTION_GROUP_SEQUENCE,
        vec![fraction_group],
    ));
    obj.put(sequence(tags::BEAM_SEQUENCE, vec![beam]));
    obj.put(sequence(tags::PATIENT_SETUP_SEQUENCE, vec![patient_setup]));
    obj
}

/// RT Dose: a 10 x 64 x 64 grid of 32-bit values covering the first series, peaked at its centre.
fn rt_dose(spec: &StudySpec, uids: &StudyUids) -> InMemDicomObject {
    let grid = usize::from(DOSE_GRID_SIZE);
    let spacing = f64::from(spec.columns) * PIXEL_SPACING_MM / f64::from(DOSE_GRID_SIZE);
    let (x0, y0) = image_origin(DOSE_GRID_SIZE, DOSE_GRID_SIZE, spacing);
    // Spread the frames over the CT stack (but never closer than the CT slices).
    let frame_spacing =
        SLICE_THICKNESS_MM * f64::from((spec.series[0].slices.saturating_sub(1) / 9).max(1));
    let frame_offsets: Vec<f64> = (0..DOSE_FRAMES)
        .map(|f| f64::from(f) * frame_spacing)
        .collect();

    // Dose falls off quadratically from the grid centre; a cheap stand-in for a real distribution.
    let mut pixels = Vec::with_capacity(DOSE_FRAMES as usize * grid * grid * 4);
    let centre = grid as i64 / 2;
    let centre_frame = i64::from(DOSE_FRAMES) / 2;
    for frame in 0..i64::from(DOSE_FRAMES) {
        for y in 0..grid as i64 {
            for x in 0..grid as i64 {
                let distance_squared =
                    (x - centre).pow(2) + (y - centre).pow(2) + 16 * (frame - centre_frame).pow(2);
                let dose = (1024 - distance_squared).max(0) as u32 * 64;
                pixels.extend_from_slice(&dose.to_le_bytes());
            }
        }
    }

    let mut obj = rt_object_base(spec, uids, RtKind::Dose);
    put_frame_of_reference(&mut obj, uids);
    obj.put(text(tags::CONTENT_DATE, VR::DA, STUDY_DATE));
    obj.put(text(tags::CONTENT_TIME, VR::TM, RT_CONTENT_TIME));
    obj.put(empty(tags::SLICE_THICKNESS, VR::DS));
    obj.put(decimal_strings(
        tags::IMAGE_POSITION_PATIENT,
        &[x0, y0, slice_z(0)],
    ));
    obj.put(decimal_strings(
        tags::IMAGE_ORIENTATION_PATIENT,
        &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
    ));
    obj.put(int_string(tags::NUMBER_OF_FRAMES, i64::from(DOSE_FRAMES)));
    obj.put(DataElement::new(
        tags::FRAME_INCREMENT_POINTER,
        VR::AT,
        PrimitiveValue::Tags(smallvec![tags::GRID_FRAME_OFFSET_VECTOR]),
    ));
    obj.put(unsigned_short(tags::SAMPLES_PER_PIXEL, 1));
    obj.put(text(
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        "MONOCHROME2",
    ));
    obj.put(unsigned_short(tags::ROWS, DOSE_GRID_SIZE));
    obj.put(unsigned_short(tags::COLUMNS, DOSE_GRID_SIZE));
    obj.put(decimal_strings(tags::PIXEL_SPACING, &[spacing, spacing]));
    obj.put(unsigned_short(tags::BITS_ALLOCATED, 32));
    obj.put(unsigned_short(tags::BITS_STORED, 32));
    obj.put(unsigned_short(tags::HIGH_BIT, 31));
    obj.put(unsigned_short(tags::PIXEL_REPRESENTATION, 0));
    obj.put(text(tags::DOSE_UNITS, VR::CS, "GY"));
    obj.put(text(tags::DOSE_TYPE, VR::CS, "PHYSICAL"));
    obj.put(text(tags::DOSE_SUMMATION_TYPE, VR::CS, "PLAN"));
    obj.put(decimal_strings(
        tags::GRID_FRAME_OFFSET_VECTOR,
        &frame_offsets,
    ));
    obj.put(decimal_strings(tags::DOSE_GRID_SCALING, &[0.0001]));
    obj.put(sequence(
        tags::REFERENCED_RT_PLAN_SEQUENCE,
        vec![referenced_sop(
            uids::RT_PLAN_STORAGE,
            &uids.rt_instance(RtKind::Plan),
        )],
    ));
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::from(pixels),
    ));
    obj
}

/// The modules every RT object shares: SOP Common, Patient, General Study, RT Series, Equipment.
fn rt_object_base(spec: &StudySpec, uids: &StudyUids, kind: RtKind) -> InMemDicomObject {
    let modality = kind.modality();
    let mut obj = InMemDicomObject::new_empty();
    put_sop_common(&mut obj, kind.sop_class_uid(), &uids.rt_instance(kind));
    put_patient_and_study(&mut obj, spec, uids);
    put_equipment(&mut obj, spec);
    obj.put(text(tags::MODALITY, VR::CS, modality));
    obj.put(text(
        tags::SERIES_INSTANCE_UID,
        VR::UI,
        &uids.rt_series(kind),
    ));
    obj.put(int_string(
        tags::SERIES_NUMBER,
        i64::from(kind.series_number(spec)),
    ));
    obj.put(text(
        tags::SERIES_DESCRIPTION,
        VR::LO,
        &format!("SYNTH {modality}"),
    ));
    obj.put(empty(tags::OPERATORS_NAME, VR::PN));
    obj.put(int_string(tags::INSTANCE_NUMBER, 1));
    obj
}

// ---------------------------------------------------------------------------------------------
// Modules shared by CT and RT objects

fn put_sop_common(obj: &mut InMemDicomObject, sop_class_uid: &str, sop_instance_uid: &str) {
    // ISO_IR 192 (UTF-8) so that any patient name in the spec encodes as written.
    obj.put(text(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192"));
    obj.put(text(tags::SOP_CLASS_UID, VR::UI, sop_class_uid));
    obj.put(text(tags::SOP_INSTANCE_UID, VR::UI, sop_instance_uid));
}

fn put_patient_and_study(obj: &mut InMemDicomObject, spec: &StudySpec, uids: &StudyUids) {
    obj.put(text(tags::PATIENT_NAME, VR::PN, &spec.patient_name));
    obj.put(text(tags::PATIENT_ID, VR::LO, &spec.patient_id));
    obj.put(text(tags::PATIENT_BIRTH_DATE, VR::DA, "19580412"));
    obj.put(text(
        tags::PATIENT_SEX,
        VR::CS,
        if spec.seed % 2 == 0 { "F" } else { "M" },
    ));
    obj.put(text(tags::STUDY_INSTANCE_UID, VR::UI, &uids.study()));
    obj.put(text(tags::STUDY_DATE, VR::DA, STUDY_DATE));
    obj.put(text(tags::STUDY_TIME, VR::TM, STUDY_TIME));
    obj.put(text(tags::STUDY_ID, VR::SH, "1"));
    // Accession Number is SH (16 characters at most): keep ten digits of the seed.
    obj.put(text(
        tags::ACCESSION_NUMBER,
        VR::SH,
        &format!("A{:010}", spec.seed % 10_000_000_000),
    ));
    obj.put(empty(tags::REFERRING_PHYSICIAN_NAME, VR::PN));
    obj.put(text(
        tags::STUDY_DESCRIPTION,
        VR::LO,
        &spec.study_description,
    ));
    if !spec.procedure_codes.is_empty() {
        let items = spec
            .procedure_codes
            .iter()
            .map(|(code_value, coding_scheme_designator, code_meaning)| {
                InMemDicomObject::from_element_iter([
                    text(tags::CODE_VALUE, VR::SH, code_value),
                    text(
                        tags::CODING_SCHEME_DESIGNATOR,
                        VR::SH,
                        coding_scheme_designator,
                    ),
                    text(tags::CODE_MEANING, VR::LO, code_meaning),
                ])
            })
            .collect();
        obj.put(sequence(tags::PROCEDURE_CODE_SEQUENCE, items));
    }
}

fn put_equipment(obj: &mut InMemDicomObject, spec: &StudySpec) {
    obj.put(text(tags::MANUFACTURER, VR::LO, MANUFACTURER));
    obj.put(text(
        tags::MANUFACTURER_MODEL_NAME,
        VR::LO,
        MANUFACTURER_MODEL_NAME,
    ));
    obj.put(text(tags::STATION_NAME, VR::SH, &spec.station_name));
}

fn put_frame_of_reference(obj: &mut InMemDicomObject, uids: &StudyUids) {
    obj.put(text(
        tags::FRAME_OF_REFERENCE_UID,
        VR::UI,
        &uids.frame_of_reference(),
    ));
    obj.put(empty(tags::POSITION_REFERENCE_INDICATOR, VR::LO));
}

// ---------------------------------------------------------------------------------------------
// Element constructors

fn text(tag: Tag, vr: VR, value: &str) -> InMemElement {
    DataElement::new(tag, vr, PrimitiveValue::from(value))
}

fn strs<S: AsRef<str>>(tag: Tag, vr: VR, values: &[S]) -> InMemElement {
    DataElement::new(
        tag,
        vr,
        PrimitiveValue::Strs(values.iter().map(|v| v.as_ref().to_owned()).collect()),
    )
}

fn empty(tag: Tag, vr: VR) -> InMemElement {
    DataElement::new(tag, vr, PrimitiveValue::Empty)
}

fn unsigned_short(tag: Tag, value: u16) -> InMemElement {
    DataElement::new(tag, VR::US, PrimitiveValue::U16(smallvec![value]))
}

fn int_string(tag: Tag, value: i64) -> InMemElement {
    DataElement::new(tag, VR::IS, PrimitiveValue::from(value.to_string()))
}

/// DS values are text of at most 16 characters; written here rather than left to the encoder so
/// that no value ever exceeds that limit.
fn decimal_strings(tag: Tag, values: &[f64]) -> InMemElement {
    let texts: Vec<String> = values.iter().map(|&v| decimal_string(v)).collect();
    strs(tag, VR::DS, &texts)
}

fn decimal_string(value: f64) -> String {
    let shortest = format!("{value}");
    if shortest.len() <= 16 {
        return shortest;
    }
    (0..=10)
        .rev()
        .map(|precision| format!("{value:.precision$}"))
        .find(|s| s.len() <= 16)
        .unwrap_or_else(|| format!("{value:.3e}"))
}

fn sequence(tag: Tag, items: Vec<InMemDicomObject>) -> InMemElement {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

fn referenced_sop(sop_class_uid: &str, sop_instance_uid: &str) -> InMemDicomObject {
    InMemDicomObject::from_element_iter([
        text(tags::REFERENCED_SOP_CLASS_UID, VR::UI, sop_class_uid),
        text(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, sop_instance_uid),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::error::Error;

    type TestResult = Result<(), Box<dyn Error>>;

    fn small_spec() -> StudySpec {
        let mut spec = StudySpec::planning_ct(4, 7);
        spec.rows = 32;
        spec.columns = 32;
        spec.procedure_codes = vec![(
            "RPID6008".to_owned(),
            "RADLEX".to_owned(),
            "CT Treatment Planning Complex".to_owned(),
        )];
        spec
    }

    fn string_of(obj: &InMemDicomObject, tag: Tag) -> Result<String, Box<dyn Error>> {
        Ok(obj
            .element(tag)?
            .to_str()?
            .trim_end_matches(['\0', ' '])
            .to_owned())
    }

    fn is_valid_uid(uid: &str) -> bool {
        uid.len() <= 64
            && uid.split('.').all(|component| {
                !component.is_empty()
                    && component.bytes().all(|b| b.is_ascii_digit())
                    && (component == "0" || !component.starts_with('0'))
            })
    }

    #[test]
    fn uids_are_valid_dicom_uids_and_unique_across_roles_and_seeds() {
        let mut seen = HashSet::new();
        for seed in [0, 1, 2, u64::MAX] {
            let uids = StudyUids::new(seed);
            let mut all = vec![uids.study(), uids.frame_of_reference()];
            for series_index in 0..13 {
                all.push(uids.ct_series(series_index));
                all.extend((0..200).map(|slice| uids.ct_instance(series_index, slice)));
            }
            for kind in RtKind::ALL {
                all.push(uids.rt_series(kind));
                all.push(uids.rt_instance(kind));
            }
            for uid in all {
                assert!(is_valid_uid(&uid), "invalid UID {uid}");
                assert!(seen.insert(uid.clone()), "duplicate UID {uid}");
            }
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_instance() -> TestResult {
        let spec = small_spec();
        let (first, first_uid) = ct_instance(&spec, 0, 2);
        let (second, second_uid) = ct_instance(&spec, 0, 2);
        assert_eq!(first_uid, second_uid);
        // Compare encodings: sequences of undefined length never compare equal as values.
        assert_eq!(encode(&first)?, encode(&second)?);
        Ok(())
    }

    fn encode(obj: &InMemDicomObject) -> Result<Vec<u8>, Box<dyn Error>> {
        let explicit_vr_le =
            dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased();
        let mut bytes = Vec::new();
        obj.write_dataset_with_ts(&mut bytes, &explicit_vr_le)?;
        Ok(bytes)
    }

    #[test]
    fn decimal_strings_never_exceed_sixteen_characters() {
        for value in [
            0.0,
            -249.51171875,
            1.0 / 3.0,
            123_456.789_012_345,
            -0.0001,
            1e-9,
        ] {
            let text = decimal_string(value);
            assert!(text.len() <= 16, "{value} -> {text}");
            let parsed: f64 = text.parse().unwrap_or(f64::NAN);
            assert!((parsed - value).abs() < 1e-3, "{value} -> {text}");
        }
    }

    #[test]
    fn ct_pixels_are_twelve_bit_and_not_blank() -> TestResult {
        let spec = StudySpec::planning_ct(3, 1);
        let (obj, _) = ct_instance(&spec, 0, 1);
        let bytes = obj.element(tags::PIXEL_DATA)?.to_bytes()?;
        assert_eq!(bytes.len(), 512 * 512 * 2);
        let values: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|p| u16::from_le_bytes([p[0], p[1]]))
            .collect();
        assert!(values.iter().all(|&v| v < 4096));
        assert!(values.iter().any(|&v| v > 900), "no body in the image");
        let (other_slice, _) = ct_instance(&spec, 0, 2);
        assert_ne!(
            obj.element(tags::PIXEL_DATA)?.to_bytes()?,
            other_slice.element(tags::PIXEL_DATA)?.to_bytes()?,
            "slices should differ"
        );
        Ok(())
    }

    #[test]
    fn ct_simulator_upload_has_planning_phases_avg_and_mip() {
        let spec = StudySpec::ct_simulator_upload(200, 10, 100, 3);
        let descriptions: Vec<&str> = spec.series.iter().map(|s| s.description.as_str()).collect();
        assert_eq!(descriptions[1], "4D 0%");
        assert_eq!(descriptions[10], "4D 90%");
        assert_eq!(&descriptions[11..], ["AVG", "MIP"]);
        assert!(spec.series[11].image_type.iter().any(|v| v == "AVE"));
        assert_eq!(spec.instance_count(), 1400);
        assert!(!spec.with_rt_objects);
        let numbers: HashSet<u32> = spec.series.iter().map(|s| s.series_number).collect();
        assert_eq!(
            numbers.len(),
            spec.series.len(),
            "series numbers must differ"
        );
    }

    #[test]
    fn write_study_writes_one_file_per_slice_and_three_rt_objects() -> TestResult {
        let dir = tempfile::tempdir()?;
        let mut spec = small_spec();
        spec.series.push(SeriesSpec {
            description: "AVG".to_owned(),
            slices: 2,
            image_type: image_type(&["DERIVED", "SECONDARY", "AXIAL", "AVE"]),
            series_number: 5,
        });
        let study = write_study(&spec, dir.path())?;
        assert_eq!(study.files.len(), 4 + 2 + 3);
        assert_eq!(study.files.len(), spec.instance_count());
        assert_eq!(fs::read_dir(dir.path())?.count(), study.files.len());

        let classes: Vec<&str> = study
            .files
            .iter()
            .map(|f| f.sop_class_uid.as_str())
            .collect();
        assert_eq!(classes[..6], [uids::CT_IMAGE_STORAGE; 6]);
        assert_eq!(
            classes[6..],
            [
                uids::RT_STRUCTURE_SET_STORAGE,
                uids::RT_PLAN_STORAGE,
                uids::RT_DOSE_STORAGE
            ]
        );
        // Names sort in sending order and carry no UID.
        let names: Vec<String> = study
            .files
            .iter()
            .map(|f| {
                f.path
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(names[0], "0001_CT_001_0001.dcm");
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(sorted, names);
        for (file, name) in study.files.iter().zip(&names) {
            assert!(!name.contains(&file.sop_instance_uid));
        }
        let instance_uids: HashSet<&str> = study
            .files
            .iter()
            .map(|f| f.sop_instance_uid.as_str())
            .collect();
        assert_eq!(instance_uids.len(), study.files.len());
        Ok(())
    }

    #[test]
    fn written_files_reopen_with_the_expected_attributes() -> TestResult {
        let dir = tempfile::tempdir()?;
        let spec = small_spec();
        let study = write_study(&spec, dir.path())?;

        for file in &study.files {
            let obj = dicom_object::open_file(&file.path)?;
            assert_eq!(
                obj.meta().transfer_syntax(),
                uids::EXPLICIT_VR_LITTLE_ENDIAN
            );
            assert_eq!(
                string_of(&obj, tags::SOP_INSTANCE_UID)?,
                file.sop_instance_uid
            );
            assert_eq!(string_of(&obj, tags::SOP_CLASS_UID)?, file.sop_class_uid);
            assert_eq!(
                string_of(&obj, tags::SERIES_INSTANCE_UID)?,
                file.series_instance_uid
            );
            assert_eq!(
                string_of(&obj, tags::STUDY_INSTANCE_UID)?,
                study.study_instance_uid
            );
            assert_eq!(string_of(&obj, tags::PATIENT_ID)?, "SYNTH7");
            assert_eq!(string_of(&obj, tags::STUDY_DESCRIPTION)?, "CT SIM PLANNING");
            assert_eq!(string_of(&obj, tags::SPECIFIC_CHARACTER_SET)?, "ISO_IR 192");
            let code = &obj
                .element(tags::PROCEDURE_CODE_SEQUENCE)?
                .items()
                .unwrap_or(&[])[0];
            assert_eq!(string_of(code, tags::CODE_VALUE)?, "RPID6008");
            assert_eq!(string_of(code, tags::CODING_SCHEME_DESIGNATOR)?, "RADLEX");
        }

        let first_ct = dicom_object::open_file(&study.files[0].path)?;
        assert_eq!(string_of(&first_ct, tags::MODALITY)?, "CT");
        assert_eq!(
            string_of(&first_ct, tags::IMAGE_TYPE)?,
            "ORIGINAL\\PRIMARY\\AXIAL"
        );
        assert_eq!(first_ct.element(tags::ROWS)?.to_int::<u16>()?, 32);
        assert_eq!(first_ct.element(tags::BITS_STORED)?.to_int::<u16>()?, 12);
        assert_eq!(
            first_ct.element(tags::PIXEL_DATA)?.to_bytes()?.len(),
            32 * 32 * 2
        );
        let second_ct = dicom_object::open_file(&study.files[1].path)?;
        assert_eq!(
            string_of(&second_ct, tags::IMAGE_POSITION_PATIENT)?
                .rsplit('\\')
                .next(),
            Some("2.5")
        );

        let modalities: Vec<String> = study.files[4..]
            .iter()
            .map(|f| -> Result<String, Box<dyn Error>> {
                let obj = dicom_object::open_file(&f.path)?;
                string_of(&obj, tags::MODALITY)
            })
            .collect::<Result<_, _>>()?;
        assert_eq!(modalities, ["RTSTRUCT", "RTPLAN", "RTDOSE"]);
        Ok(())
    }

    #[test]
    fn rt_objects_reference_the_first_series_and_each_other() -> TestResult {
        let dir = tempfile::tempdir()?;
        let spec = small_spec();
        let study = write_study(&spec, dir.path())?;
        let ct_uids: Vec<&str> = study.files[..4]
            .iter()
            .map(|f| f.sop_instance_uid.as_str())
            .collect();
        let first_ct = dicom_object::open_file(&study.files[0].path)?;
        let frame_of_reference_uid = string_of(&first_ct, tags::FRAME_OF_REFERENCE_UID)?;

        let structure_set = dicom_object::open_file(&study.files[4].path)?;
        let first_item =
            |obj: &InMemDicomObject, tag| -> Result<InMemDicomObject, Box<dyn Error>> {
                obj.element(tag)?
                    .items()
                    .and_then(|items| items.first().cloned())
                    .ok_or_else(|| format!("{tag} has no item").into())
            };
        let frame = first_item(&structure_set, tags::REFERENCED_FRAME_OF_REFERENCE_SEQUENCE)?;
        assert_eq!(
            string_of(&frame, tags::FRAME_OF_REFERENCE_UID)?,
            frame_of_reference_uid
        );
        let rt_study = first_item(&frame, tags::RT_REFERENCED_STUDY_SEQUENCE)?;
        assert_eq!(
            string_of(&rt_study, tags::REFERENCED_SOP_INSTANCE_UID)?,
            study.study_instance_uid
        );
        let rt_series = first_item(&rt_study, tags::RT_REFERENCED_SERIES_SEQUENCE)?;
        assert_eq!(
            string_of(&rt_series, tags::SERIES_INSTANCE_UID)?,
            study.files[0].series_instance_uid
        );
        let contour_images: Vec<String> = rt_series
            .element(tags::CONTOUR_IMAGE_SEQUENCE)?
            .items()
            .unwrap_or(&[])
            .iter()
            .map(|item| string_of(item, tags::REFERENCED_SOP_INSTANCE_UID))
            .collect::<Result<_, _>>()?;
        assert_eq!(contour_images, ct_uids);
        let roi = first_item(&structure_set, tags::STRUCTURE_SET_ROI_SEQUENCE)?;
        assert_eq!(string_of(&roi, tags::ROI_NAME)?, "BODY");

        let plan = dicom_object::open_file(&study.files[5].path)?;
        let referenced_structure_set = first_item(&plan, tags::REFERENCED_STRUCTURE_SET_SEQUENCE)?;
        assert_eq!(
            string_of(&referenced_structure_set, tags::REFERENCED_SOP_INSTANCE_UID)?,
            study.files[4].sop_instance_uid
        );
        assert_eq!(
            string_of(&plan, tags::FRAME_OF_REFERENCE_UID)?,
            frame_of_reference_uid
        );

        let dose = dicom_object::open_file(&study.files[6].path)?;
        let referenced_plan = first_item(&dose, tags::REFERENCED_RT_PLAN_SEQUENCE)?;
        assert_eq!(
            string_of(&referenced_plan, tags::REFERENCED_SOP_INSTANCE_UID)?,
            study.files[5].sop_instance_uid
        );
        assert_eq!(
            string_of(&dose, tags::FRAME_OF_REFERENCE_UID)?,
            frame_of_reference_uid
        );
        assert_eq!(
            dose.element(tags::PIXEL_DATA)?.to_bytes()?.len(),
            10 * 64 * 64 * 4
        );
        Ok(())
    }
}
