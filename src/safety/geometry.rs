//! The geometry check of an image series: slice gaps, duplicates, uneven
//! spacing, mixed orientation or pixel spacing, gantry tilt, too few slices,
//! and the comparison of the respiratory phases of a 4D CT.
//!
//! Pure functions over header values: no I/O, no clock. Every value that is
//! missing or not finite is treated as absent, so nothing here panics on data.

use std::collections::BTreeMap;

use super::{Finding, FindingCode, Tolerances};

/// The header values of one image instance the geometry check reads (no pixel data).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Slice {
    /// SOP Instance UID, to name the instance a finding is about.
    pub sop_instance_uid: String,
    /// Instance Number, quoted in messages when known.
    pub instance_number: Option<i64>,
    /// Image Position (Patient), mm.
    pub position: Option<[f64; 3]>,
    /// Image Orientation (Patient): row then column direction cosines.
    pub orientation: Option<[f64; 6]>,
    /// Pixel Spacing (row spacing, column spacing), mm.
    pub pixel_spacing: Option<[f64; 2]>,
    /// Rows.
    pub rows: Option<u32>,
    /// Columns.
    pub columns: Option<u32>,
    /// Slice Thickness, mm.
    pub slice_thickness: Option<f64>,
    /// Gantry/Detector Tilt (0018,1120), degrees.
    pub gantry_tilt: Option<f64>,
    /// Image Type values, e.g. `ORIGINAL\PRIMARY\AXIAL` as three strings.
    pub image_type: Vec<String>,
    /// Number of Frames; more than 1 means a multi-frame instance.
    pub frames: Option<u32>,
}

/// One image series as the check sees it.
pub struct SeriesGeometry<'a> {
    /// Modality of the series, e.g. "CT", "MR".
    pub modality: &'a str,
    /// The series-rules kind ("planning-ct", "4dct-phase", "scout", "4dct-average", "4dct-mip", ...), None when no kind matched.
    pub kind: Option<&'a str>,
    /// The instances of the series, in any order.
    pub slices: &'a [Slice],
}

/// Outcome of checking one series.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesCheck {
    /// The problems found (at most ten per code).
    pub findings: Vec<Finding>,
    /// Slice positions along the normal, sorted ascending (empty when skipped, or when the
    /// orientation is mixed so that positions along one normal mean nothing); what the 4D phase
    /// comparison uses.
    pub positions: Vec<f64>,
    /// Why the series was not checked (e.g. "a single image", "a localizer", "multi-frame", "no Image Position/Orientation (Patient)"); None when checked.
    pub skipped: Option<&'static str>,
}

/// One checked respiratory phase series of a 4D CT.
pub struct Phase<'a> {
    /// Series Instance UID of the phase series.
    pub series_instance_uid: &'a str,
    /// Series Description, used to name the phase in messages.
    pub label: &'a str,
    /// Slice positions along the normal, sorted ascending ([`SeriesCheck::positions`]).
    pub positions: &'a [f64],
}

/// Skip reason: fewer than two slices.
const SKIP_SINGLE: &str = "a single image";
/// Skip reason: a scout / localizer series.
const SKIP_LOCALIZER: &str = "a localizer";
/// Skip reason: multi-frame instances.
const SKIP_MULTI_FRAME: &str = "multi-frame";
/// Skip reason: some slice lacks a usable position or orientation.
const SKIP_NO_GEOMETRY: &str = "no Image Position/Orientation (Patient)";
/// Skip reason: the row and column cosines of the first slice give no normal.
const SKIP_BAD_ORIENTATION: &str = "an invalid Image Orientation (Patient)";

/// At most this many findings of one code per series; the last one then summarises the rest.
const MAX_FINDINGS_PER_CODE: usize = 10;

/// Attribute name of Image Position (Patient).
const POSITION: &str = "Image Position (Patient)";
/// Attribute name of Image Orientation (Patient).
const ORIENTATION: &str = "Image Orientation (Patient)";
/// Attribute name used for slice counts.
const SLICE_COUNT: &str = "Number of slices";

/// Checks the geometry of one image series (see the module documentation for what is checked).
#[must_use]
pub fn check_series(series: &SeriesGeometry<'_>, tolerances: &Tolerances) -> SeriesCheck {
    if let Some(reason) = skip_reason(series) {
        return skipped(reason);
    }
    let Some(placed) = geometry_of(series.slices) else {
        return skipped(SKIP_NO_GEOMETRY);
    };
    let Some(normal) = placed
        .first()
        .and_then(|first| slice_normal(&first.orientation))
    else {
        return skipped(SKIP_BAD_ORIENTATION);
    };
    let mut findings = Vec::new();
    let orientation_mixed = orientation_finding(series.slices, &placed, tolerances);
    let mixed = orientation_mixed.is_some();
    findings.extend(orientation_mixed);
    findings.extend(mixed_value_findings(series.slices, tolerances));
    findings.extend(tilt_tag_finding(series.slices, tolerances));
    findings.extend(axial_finding(series.modality, normal, tolerances));
    let mut positions = Vec::new();
    if !mixed {
        let sorted = sort_along(series.slices, &placed, normal);
        let label = position_label(normal);
        findings.extend(spacing_findings(&sorted, label, tolerances));
        positions = sorted.iter().map(|s| s.distance).collect();
    }
    findings.extend(too_few_finding(series, tolerances));
    SeriesCheck {
        findings: cap_per_code(findings),
        positions,
        skipped: None,
    }
}

/// Compares the phase series of one study: returns (`series_instance_uid`, finding) for each phase whose slice count, or (same count) slice positions, differ from the most common one. Fewer than 2 phases: nothing.
#[must_use]
pub fn check_phases(phases: &[Phase<'_>], tolerances: &Tolerances) -> Vec<(String, Finding)> {
    let phases: Vec<&Phase<'_>> = phases.iter().filter(|p| !p.positions.is_empty()).collect();
    if phases.len() < 2 {
        return Vec::new();
    }
    let common = common_count(&phases);
    let with_common = phases
        .iter()
        .filter(|p| p.positions.len() == common)
        .count();
    let Some(reference) = phases.iter().find(|p| p.positions.len() == common) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for phase in &phases {
        let finding = if phase.positions.len() != common {
            Some(phase_count_finding(phase, common, with_common))
        } else if positions_differ(phase.positions, reference.positions, tolerances) {
            Some(phase_position_finding(phase, reference))
        } else {
            None
        };
        if let Some(finding) = finding {
            out.push((phase.series_instance_uid.to_string(), finding));
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Skipping

/// A checked-nothing outcome with its reason.
fn skipped(reason: &'static str) -> SeriesCheck {
    SeriesCheck {
        findings: Vec::new(),
        positions: Vec::new(),
        skipped: Some(reason),
    }
}

/// Why the series cannot be checked for geometry, before looking at positions.
fn skip_reason(series: &SeriesGeometry<'_>) -> Option<&'static str> {
    if series.slices.len() < 2 {
        Some(SKIP_SINGLE)
    } else if series.kind == Some("scout") || series.slices.iter().any(is_localizer) {
        Some(SKIP_LOCALIZER)
    } else if series
        .slices
        .iter()
        .any(|s| s.frames.is_some_and(|f| f > 1))
    {
        Some(SKIP_MULTI_FRAME)
    } else {
        None
    }
}

/// Whether the slice's Image Type says LOCALIZER.
fn is_localizer(slice: &Slice) -> bool {
    slice
        .image_type
        .iter()
        .any(|v| v.trim().eq_ignore_ascii_case("LOCALIZER"))
}

/// Whether the modality is CT.
fn is_ct(modality: &str) -> bool {
    modality.trim().eq_ignore_ascii_case("CT")
}

// ---------------------------------------------------------------------------
// Vectors

/// Position and orientation of one slice, both present and finite.
struct Placed {
    position: [f64; 3],
    orientation: [f64; 6],
}

/// The positions and orientations of all slices, None when any is missing or not finite.
fn geometry_of(slices: &[Slice]) -> Option<Vec<Placed>> {
    slices
        .iter()
        .map(|s| {
            let position = s.position.filter(|p| all_finite(p))?;
            let orientation = s.orientation.filter(|o| all_finite(o))?;
            Some(Placed {
                position,
                orientation,
            })
        })
        .collect()
}

/// Whether every value is finite.
fn all_finite(values: &[f64]) -> bool {
    values.iter().all(|v| v.is_finite())
}

/// Cross product.
fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

/// Dot product.
fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

/// The unit slice normal (row × column cosines), signed so that its largest component is
/// positive (an axial normal then points to +z, so distances equal z for head- and feet-first
/// alike); None when the cosines are degenerate.
fn slice_normal(orientation: &[f64; 6]) -> Option<[f64; 3]> {
    let row = [orientation[0], orientation[1], orientation[2]];
    let column = [orientation[3], orientation[4], orientation[5]];
    let n = cross(row, column);
    let length = dot(n, n).sqrt();
    if !length.is_finite() || length < 1e-6 {
        return None;
    }
    let largest = n
        .into_iter()
        .max_by(|a, b| a.abs().total_cmp(&b.abs()))
        .unwrap_or(1.0);
    let sign = if largest < 0.0 { -1.0 } else { 1.0 };
    Some(n.map(|c| sign * c / length))
}

/// "z" for (near) axial slices, else "d" (distance along the normal).
fn position_label(normal: [f64; 3]) -> &'static str {
    if normal[2].abs() >= 0.99 { "z" } else { "d" }
}

/// Angle of the normal from the patient's z axis, degrees.
fn angle_from_z(normal: [f64; 3]) -> f64 {
    normal[2].abs().min(1.0).acos().to_degrees()
}

// ---------------------------------------------------------------------------
// Formatting

/// At least one decimal, more where the value has them (up to three): "6.0", "1.25",
/// "-120.625"; without a negative zero ("-0.0" becomes "0.0").
fn fmt1(value: f64) -> String {
    let text = format!("{value:.3}");
    let trimmed = text.trim_end_matches('0');
    let text = if trimmed.ends_with('.') {
        format!("{trimmed}0")
    } else {
        trimmed.to_string()
    };
    no_negative_zero(text)
}

/// Two decimals, without a negative zero.
fn fmt2(value: f64) -> String {
    no_negative_zero(format!("{value:.2}"))
}

/// Up to four decimals with trailing zeros trimmed ("1", "0.977", "0.9659").
fn fmt_trim(value: f64) -> String {
    let text = format!("{value:.4}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        &text
    };
    no_negative_zero(text.to_string())
}

/// Drops the sign of a number that printed as zero.
fn no_negative_zero(text: String) -> String {
    let digits = text.trim_start_matches('-');
    if text.starts_with('-') && digits.chars().all(|c| c == '0' || c == '.') {
        digits.to_string()
    } else {
        text
    }
}

/// Values joined DICOM style: "1\0\0\0\1\0".
fn fmt_multi(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| fmt_trim(*v))
        .collect::<Vec<_>>()
        .join("\\")
}

/// "z = -120.0".
fn fmt_position(label: &str, distance: f64) -> String {
    format!("{label} = {}", fmt1(distance))
}

/// "slices have", or "slices has" after "1 of N".
fn slices_have(count: usize) -> &'static str {
    if count == 1 {
        "slices has"
    } else {
        "slices have"
    }
}

/// A finding that is not about patient data.
fn finding(
    code: FindingCode,
    attribute: &str,
    expected: String,
    found: String,
    detail: String,
) -> Finding {
    Finding {
        code,
        attribute: attribute.to_string(),
        expected,
        found,
        phi: false,
        detail,
        sop_instance_uid: String::new(),
    }
}

/// The UID of the slice at `index` when exactly one slice is concerned, else empty.
fn uid_if_single(slices: &[Slice], indices: &[usize]) -> String {
    match indices {
        [only] => slices
            .get(*only)
            .map(|s| s.sop_instance_uid.clone())
            .unwrap_or_default(),
        _ => String::new(),
    }
}

// ---------------------------------------------------------------------------
// Orientation, pixel spacing, tilt

/// orientation-mixed: slices whose cosines differ from the first slice's.
fn orientation_finding(
    slices: &[Slice],
    placed: &[Placed],
    tolerances: &Tolerances,
) -> Option<Finding> {
    let first = placed.first()?.orientation;
    let differs = |o: &[f64; 6]| {
        o.iter()
            .zip(first.iter())
            .any(|(a, b)| (a - b).abs() > tolerances.orientation_tolerance)
    };
    let others: Vec<usize> = (0..placed.len())
        .filter(|&i| differs(&placed[i].orientation))
        .collect();
    let found = placed.get(*others.first()?)?.orientation;
    let detail = format!(
        "{} of {} {} another {ORIENTATION}",
        others.len(),
        placed.len(),
        slices_have(others.len())
    );
    let mut f = finding(
        FindingCode::OrientationMixed,
        ORIENTATION,
        fmt_multi(&first),
        fmt_multi(&found),
        detail,
    );
    f.sop_instance_uid = uid_if_single(slices, &others);
    Some(f)
}

/// A group of (nearly) equal values: the first value seen and the slices holding one.
struct Group<const N: usize> {
    value: [f64; N],
    members: Vec<usize>,
}

/// Groups the present values: a value joins the first group whose value it is within `tolerance` of.
fn group_values<const N: usize>(values: &[(usize, [f64; N])], tolerance: f64) -> Vec<Group<N>> {
    let mut groups: Vec<Group<N>> = Vec::new();
    for (index, value) in values {
        let near = |g: &&mut Group<N>| {
            g.value
                .iter()
                .zip(value.iter())
                .all(|(a, b)| (a - b).abs() <= tolerance)
        };
        match groups.iter_mut().find(near) {
            Some(group) => group.members.push(*index),
            None => groups.push(Group {
                value: *value,
                members: vec![*index],
            }),
        }
    }
    groups
}

/// Index of the largest group (the first on ties).
fn largest_group<const N: usize>(groups: &[Group<N>], skip: Option<usize>) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, group) in groups.iter().enumerate() {
        if Some(i) == skip {
            continue;
        }
        if best.is_none_or(|b| group.members.len() > groups[b].members.len()) {
            best = Some(i);
        }
    }
    best
}

/// pixel-spacing-mixed for one attribute: the slices whose value differs from the most common one.
fn mixed_finding<const N: usize>(
    slices: &[Slice],
    attribute: &str,
    values: &[(usize, [f64; N])],
    tolerance: f64,
    show: fn(&[f64; N]) -> String,
) -> Option<Finding> {
    let groups = group_values(values, tolerance);
    let common = largest_group(&groups, None)?;
    let other = largest_group(&groups, Some(common))?;
    let others: Vec<usize> = groups
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != common)
        .flat_map(|(_, g)| g.members.iter().copied())
        .collect();
    let (expected, found) = (show(&groups[common].value), show(&groups[other].value));
    let what = if groups.len() == 2 {
        format!("{attribute} {found}")
    } else {
        format!("another {attribute} (e.g. {found})")
    };
    let detail = format!(
        "{} of {} {} {what}, the others {expected}",
        others.len(),
        values.len(),
        slices_have(others.len())
    );
    let mut f = finding(
        FindingCode::PixelSpacingMixed,
        attribute,
        expected,
        found,
        detail,
    );
    f.sop_instance_uid = uid_if_single(slices, &others);
    Some(f)
}

/// pixel-spacing-mixed for Pixel Spacing, Rows/Columns and Slice Thickness.
fn mixed_value_findings(slices: &[Slice], tolerances: &Tolerances) -> Vec<Finding> {
    let spacing: Vec<(usize, [f64; 2])> = present(slices, |s| s.pixel_spacing);
    let size: Vec<(usize, [f64; 2])> = present(slices, |s| {
        Some([f64::from(s.rows?), f64::from(s.columns?)])
    });
    let thickness: Vec<(usize, [f64; 1])> = present(slices, |s| s.slice_thickness.map(|t| [t]));
    let tolerance = tolerances.pixel_spacing_tolerance_mm;
    [
        mixed_finding(slices, "Pixel Spacing", &spacing, tolerance, |v| {
            fmt_multi(v)
        }),
        mixed_finding(slices, "Rows/Columns", &size, 0.0, |v| {
            format!("{}x{}", v[0], v[1])
        }),
        mixed_finding(slices, "Slice Thickness", &thickness, tolerance, |v| {
            fmt_multi(v)
        }),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The finite values `get` finds, with the index of their slice.
fn present<const N: usize>(
    slices: &[Slice],
    get: impl Fn(&Slice) -> Option<[f64; N]>,
) -> Vec<(usize, [f64; N])> {
    slices
        .iter()
        .enumerate()
        .filter_map(|(i, s)| get(s).filter(|v| all_finite(v)).map(|v| (i, v)))
        .collect()
}

/// gantry-tilt (a): the Gantry/Detector Tilt tag beyond tolerance (the largest one is reported).
fn tilt_tag_finding(slices: &[Slice], tolerances: &Tolerances) -> Option<Finding> {
    let limit = tolerances.tilt_tolerance_degrees;
    let tilted: Vec<(usize, f64)> = slices
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            s.gantry_tilt
                .filter(|t| t.is_finite() && t.abs() > limit)
                .map(|t| (i, t))
        })
        .collect();
    let largest = tilted
        .iter()
        .map(|(_, t)| *t)
        .max_by(|a, b| a.abs().total_cmp(&b.abs()))?;
    let detail = format!(
        "Gantry/Detector Tilt {}° (tolerance {}°)",
        fmt1(largest),
        fmt1(limit)
    );
    let mut f = finding(
        FindingCode::GantryTilt,
        "Gantry/Detector Tilt",
        fmt1(0.0),
        fmt1(largest),
        detail,
    );
    let indices: Vec<usize> = tilted.iter().map(|(i, _)| *i).collect();
    f.sop_instance_uid = uid_if_single(slices, &indices);
    Some(f)
}

/// gantry-tilt (b): a CT whose slice normal leans away from the patient's z axis.
fn axial_finding(modality: &str, normal: [f64; 3], tolerances: &Tolerances) -> Option<Finding> {
    let angle = angle_from_z(normal);
    if !is_ct(modality) || angle <= tolerances.tilt_tolerance_degrees {
        return None;
    }
    let detail = format!(
        "slices are not axial: the slice normal is {}° from the patient's z axis",
        fmt1(angle)
    );
    Some(finding(
        FindingCode::GantryTilt,
        ORIENTATION,
        fmt1(0.0),
        fmt1(angle),
        detail,
    ))
}

// ---------------------------------------------------------------------------
// Spacing along the normal

/// A slice with its distance along the normal.
struct Sorted<'s> {
    distance: f64,
    slice: &'s Slice,
}

/// The slices sorted by distance along the normal (ties by Instance Number, then arrival).
fn sort_along<'s>(slices: &'s [Slice], placed: &[Placed], normal: [f64; 3]) -> Vec<Sorted<'s>> {
    let mut sorted: Vec<Sorted<'s>> = slices
        .iter()
        .zip(placed)
        .map(|(slice, p)| Sorted {
            distance: dot(p.position, normal),
            slice,
        })
        .collect();
    sorted.sort_by(|a, b| {
        a.distance
            .total_cmp(&b.distance)
            .then(a.slice.instance_number.cmp(&b.slice.instance_number))
    });
    sorted
}

/// slice-duplicate, slice-gap and slice-spacing-uneven over the sorted slices.
fn spacing_findings(sorted: &[Sorted<'_>], label: &str, tolerances: &Tolerances) -> Vec<Finding> {
    let steps: Vec<f64> = sorted
        .windows(2)
        .map(|w| w[1].distance - w[0].distance)
        .collect();
    let mut findings = duplicate_findings(sorted, &steps, label, tolerances);
    let Some(median) = median_step(&steps, tolerances) else {
        return findings;
    };
    findings.extend(gap_findings(sorted, &steps, median, label, tolerances));
    findings.extend(uneven_finding(&steps, median, tolerances));
    findings
}

/// Whether a step is a duplicate (two slices at one position).
fn is_duplicate(step: f64, tolerances: &Tolerances) -> bool {
    step <= tolerances.duplicate_mm
}

/// Whether a step is a gap (missing slices).
fn is_gap(step: f64, median: f64, tolerances: &Tolerances) -> bool {
    step > tolerances.gap_factor * median
}

/// slice-duplicate: one finding per pair of slices at the same position.
fn duplicate_findings(
    sorted: &[Sorted<'_>],
    steps: &[f64],
    label: &str,
    tolerances: &Tolerances,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        if !is_duplicate(*step, tolerances) {
            continue;
        }
        let (a, b) = (&sorted[i], &sorted[i + 1]);
        let instances = match (a.slice.instance_number, b.slice.instance_number) {
            (Some(x), Some(y)) => format!(" (instances {x} and {y})"),
            _ => String::new(),
        };
        let detail = format!(
            "two slices at {}{instances}",
            fmt_position(label, a.distance)
        );
        let mut f = finding(
            FindingCode::SliceDuplicate,
            POSITION,
            String::new(),
            String::new(),
            detail,
        );
        f.sop_instance_uid.clone_from(&b.slice.sop_instance_uid);
        findings.push(f);
    }
    findings
}

/// The median of the steps that are not duplicates; None when there are none.
fn median_step(steps: &[f64], tolerances: &Tolerances) -> Option<f64> {
    let mut kept: Vec<f64> = steps
        .iter()
        .copied()
        .filter(|s| !is_duplicate(*s, tolerances))
        .collect();
    kept.sort_by(f64::total_cmp);
    let middle = kept.len() / 2;
    match kept.len() {
        0 => None,
        n if n % 2 == 1 => kept.get(middle).copied(),
        _ => Some(f64::midpoint(kept[middle - 1], kept[middle])),
    }
}

/// slice-gap: one finding per step larger than `gap_factor` times the median.
fn gap_findings(
    sorted: &[Sorted<'_>],
    steps: &[f64],
    median: f64,
    label: &str,
    tolerances: &Tolerances,
) -> Vec<Finding> {
    let expected = format!("{} mm", fmt1(median));
    let mut findings = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        if !is_gap(*step, median, tolerances) {
            continue;
        }
        let (from, to) = (sorted[i].distance, sorted[i + 1].distance);
        let found = format!("{} mm", fmt1(*step));
        let detail = format!(
            "gap of {found} between {} and {}, expected {expected}",
            fmt_position(label, from),
            fmt_position(label, to)
        );
        findings.push(finding(
            FindingCode::SliceGap,
            POSITION,
            expected.clone(),
            found,
            detail,
        ));
    }
    findings
}

/// slice-spacing-uneven: one finding summarising the steps off the median (gaps and duplicates aside).
fn uneven_finding(steps: &[f64], median: f64, tolerances: &Tolerances) -> Option<Finding> {
    let uneven: Vec<f64> = steps
        .iter()
        .copied()
        .filter(|s| !is_duplicate(*s, tolerances) && !is_gap(*s, median, tolerances))
        .filter(|s| (s - median).abs() > tolerances.spacing_tolerance_mm)
        .collect();
    let low = uneven.iter().copied().min_by(f64::total_cmp)?;
    let high = uneven.iter().copied().max_by(f64::total_cmp).unwrap_or(low);
    let found = if fmt2(low) == fmt2(high) {
        format!("{} mm", fmt2(low))
    } else {
        format!("{} to {} mm", fmt2(low), fmt2(high))
    };
    let range = if uneven.len() == 1 {
        found.clone()
    } else {
        format!("from {found}")
    };
    let verb = if uneven.len() == 1 {
        "differs"
    } else {
        "differ"
    };
    let expected = format!("{} mm", fmt2(median));
    let detail = format!(
        "{} of {} spacings {verb} from {expected} by more than {} mm ({range})",
        uneven.len(),
        steps.len(),
        fmt2(tolerances.spacing_tolerance_mm)
    );
    Some(finding(
        FindingCode::SliceSpacingUneven,
        POSITION,
        expected,
        found,
        detail,
    ))
}

// ---------------------------------------------------------------------------
// Slice count and cap

/// too-few-slices: a planning CT (or an unclassified CT) with fewer slices than configured.
fn too_few_finding(series: &SeriesGeometry<'_>, tolerances: &Tolerances) -> Option<Finding> {
    let planning = matches!(series.kind, None | Some("planning-ct"));
    let count = series.slices.len();
    let minimum = tolerances.min_planning_slices;
    if !is_ct(series.modality) || !planning || count >= minimum {
        return None;
    }
    let detail = format!(
        "{count} slices, fewer than the {minimum} a planning CT needs ([safety] min_planning_slices)"
    );
    Some(finding(
        FindingCode::TooFewSlices,
        SLICE_COUNT,
        minimum.to_string(),
        count.to_string(),
        detail,
    ))
}

/// The plural noun of a code in a summary finding ("and 5 more gaps").
fn plural_noun(code: FindingCode) -> &'static str {
    match code {
        FindingCode::SliceGap => "gaps",
        FindingCode::SliceDuplicate => "duplicates",
        _ => "findings",
    }
}

/// Keeps at most [`MAX_FINDINGS_PER_CODE`] findings per code: when there are more, the last kept
/// one is replaced by a summary "and N more gaps".
fn cap_per_code(findings: Vec<Finding>) -> Vec<Finding> {
    let mut totals: BTreeMap<FindingCode, usize> = BTreeMap::new();
    for f in &findings {
        *totals.entry(f.code).or_default() += 1;
    }
    let mut seen: BTreeMap<FindingCode, usize> = BTreeMap::new();
    let mut kept = Vec::new();
    for f in findings {
        let total = totals.get(&f.code).copied().unwrap_or(0);
        let n = seen.entry(f.code).or_default();
        *n += 1;
        if total <= MAX_FINDINGS_PER_CODE || *n < MAX_FINDINGS_PER_CODE {
            kept.push(f);
        } else if *n == MAX_FINDINGS_PER_CODE {
            let rest = total - (MAX_FINDINGS_PER_CODE - 1);
            let detail = format!("and {rest} more {}", plural_noun(f.code));
            kept.push(finding(
                f.code,
                &f.attribute,
                String::new(),
                String::new(),
                detail,
            ));
        }
    }
    kept
}

// ---------------------------------------------------------------------------
// 4D phases

/// The most common slice count among the phases (ties: the larger count).
fn common_count(phases: &[&Phase<'_>]) -> usize {
    let mut counts: BTreeMap<usize, usize> = BTreeMap::new();
    for phase in phases {
        *counts.entry(phase.positions.len()).or_default() += 1;
    }
    // BTreeMap iterates ascending, and max_by_key keeps the last maximum: the larger count on ties.
    counts
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map_or(0, |(count, _)| count)
}

/// Whether any position differs from the reference's by more than the spacing tolerance.
fn positions_differ(positions: &[f64], reference: &[f64], tolerances: &Tolerances) -> bool {
    positions.len() != reference.len()
        || positions.iter().zip(reference).any(|(a, b)| {
            let difference = (a - b).abs();
            difference.is_nan() || difference > tolerances.spacing_tolerance_mm
        })
}

/// How a phase is named in messages: its label, else its UID.
fn phase_name<'p>(phase: &'p Phase<'_>) -> &'p str {
    if phase.label.trim().is_empty() {
        phase.series_instance_uid
    } else {
        phase.label
    }
}

/// "z = -102.5 to 145.0".
fn fmt_range(positions: &[f64]) -> String {
    let first = positions.first().copied().unwrap_or(0.0);
    let last = positions.last().copied().unwrap_or(first);
    format!("{} to {}", fmt_position("z", first), fmt1(last))
}

/// phase-count-mismatch: a phase with another slice count than most.
fn phase_count_finding(phase: &Phase<'_>, common: usize, with_common: usize) -> Finding {
    let count = phase.positions.len();
    let others = if with_common == 1 {
        "the other phase".to_string()
    } else {
        format!("the other {with_common} phases")
    };
    let detail = format!(
        "phase \"{}\" has {count} slices, {others} {common}",
        phase_name(phase)
    );
    finding(
        FindingCode::PhaseCountMismatch,
        SLICE_COUNT,
        common.to_string(),
        count.to_string(),
        detail,
    )
}

/// phase-count-mismatch: a phase with the common count whose slices lie elsewhere.
fn phase_position_finding(phase: &Phase<'_>, reference: &Phase<'_>) -> Finding {
    let (expected, found) = (fmt_range(reference.positions), fmt_range(phase.positions));
    let detail = format!(
        "phase \"{}\" covers {found}, the other phases {expected}",
        phase_name(phase)
    );
    finding(
        FindingCode::PhaseCountMismatch,
        POSITION,
        expected,
        found,
        detail,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use FindingCode::*;

    // ---- builders --------------------------------------------------------

    /// Head first supine: rows along +x, columns along +y.
    const HFS: [f64; 6] = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0];
    /// Feet first supine: the normal points to -z.
    const FFS: [f64; 6] = [-1.0, 0.0, 0.0, 0.0, 1.0, 0.0];
    /// Head first prone.
    const HFP: [f64; 6] = [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0];
    /// Sagittal (MR).
    const SAGITTAL: [f64; 6] = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0];

    /// Cosines of slices tilted by `degrees` about the x axis.
    fn tilted(degrees: f64) -> [f64; 6] {
        let (sin, cos) = degrees.to_radians().sin_cos();
        [1.0, 0.0, 0.0, 0.0, cos, -sin]
    }

    /// `n` CT-like slices with `orientation`, `spacing` mm apart along its normal from `start`.
    fn along(n: usize, spacing: f64, start: [f64; 3], orientation: [f64; 6]) -> Vec<Slice> {
        let normal = slice_normal(&orientation).expect("test orientation");
        (0..n)
            .map(|i| {
                let d = i as f64 * spacing;
                Slice {
                    sop_instance_uid: format!("1.2.826.0.1.3680043.2.{}", i + 1),
                    instance_number: Some(i as i64 + 1),
                    position: Some([0, 1, 2].map(|k| start[k] + d * normal[k])),
                    orientation: Some(orientation),
                    pixel_spacing: Some([0.977, 0.977]),
                    rows: Some(512),
                    columns: Some(512),
                    slice_thickness: Some(spacing),
                    gantry_tilt: None,
                    image_type: vec!["ORIGINAL".into(), "PRIMARY".into(), "AXIAL".into()],
                    frames: None,
                }
            })
            .collect()
    }

    /// `n` head-first axial slices `spacing` mm apart from z = `start_z`.
    fn axial(n: usize, spacing: f64, start_z: f64) -> Vec<Slice> {
        along(n, spacing, [-250.0, -250.0, start_z], HFS)
    }

    /// The slices without those at `indices`.
    fn without(slices: Vec<Slice>, indices: &[usize]) -> Vec<Slice> {
        slices
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !indices.contains(i))
            .map(|(_, s)| s)
            .collect()
    }

    /// The slices with slice `index` changed by `change`.
    fn edit(mut slices: Vec<Slice>, index: usize, change: impl FnOnce(&mut Slice)) -> Vec<Slice> {
        change(&mut slices[index]);
        slices
    }

    /// The slices with every slice changed by `change`.
    fn edit_all(mut slices: Vec<Slice>, change: impl FnMut(&mut Slice)) -> Vec<Slice> {
        slices.iter_mut().for_each(change);
        slices
    }

    /// The slices plus copies (new UID and instance number) of those at `indices`.
    fn duplicate(mut slices: Vec<Slice>, indices: &[usize]) -> Vec<Slice> {
        for &i in indices {
            let mut copy = slices[i].clone();
            let number = slices.len() as i64 + 1;
            copy.instance_number = Some(number);
            copy.sop_instance_uid = format!("1.2.826.0.1.3680043.9.{number}");
            slices.push(copy);
        }
        slices
    }

    /// The slices in a fixed scrambled arrival order.
    fn shuffled(slices: Vec<Slice>) -> Vec<Slice> {
        let n = slices.len();
        (0..n).map(|i| slices[(i * 37 + 11) % n].clone()).collect()
    }

    /// The slices in reverse arrival order.
    fn reversed(mut slices: Vec<Slice>) -> Vec<Slice> {
        slices.reverse();
        slices
    }

    // ---- the series table ------------------------------------------------

    /// One row of the series table.
    struct Row {
        name: &'static str,
        modality: &'static str,
        kind: Option<&'static str>,
        slices: Vec<Slice>,
        codes: Vec<FindingCode>,
        detail: Option<&'static str>,
    }

    /// A planning-CT row expected clean, to be refined with the methods below.
    fn row(name: &'static str, slices: Vec<Slice>) -> Row {
        Row {
            name,
            modality: "CT",
            kind: Some("planning-ct"),
            slices,
            codes: Vec::new(),
            detail: None,
        }
    }

    impl Row {
        fn modality(mut self, modality: &'static str) -> Self {
            self.modality = modality;
            self
        }
        fn kind(mut self, kind: Option<&'static str>) -> Self {
            self.kind = kind;
            self
        }
        fn expect(mut self, codes: &[FindingCode]) -> Self {
            self.codes = codes.to_vec();
            self
        }
        fn detail(mut self, detail: &'static str) -> Self {
            self.detail = Some(detail);
            self
        }
    }

    /// Checks one series: the finding codes (as a multiset) must equal `expected_codes`, and
    /// `detail_contains` must occur in some finding's detail or in the skip reason.
    fn check(
        name: &str,
        series: &SeriesGeometry<'_>,
        expected_codes: &[FindingCode],
        detail_contains: Option<&str>,
    ) {
        let result = check_series(series, &Tolerances::default());
        let mut codes: Vec<FindingCode> = result.findings.iter().map(|f| f.code).collect();
        let mut expected = expected_codes.to_vec();
        codes.sort();
        expected.sort();
        assert_eq!(
            codes, expected,
            "{name}: codes; findings {:#?}",
            result.findings
        );
        if let Some(text) = detail_contains {
            let in_detail = result.findings.iter().any(|f| f.detail.contains(text));
            let in_skip = result.skipped.is_some_and(|s| s.contains(text));
            assert!(
                in_detail || in_skip,
                "{name}: no detail contains {text:?}: {result:#?}"
            );
        }
        assert!(
            result
                .findings
                .iter()
                .all(|f| !f.phi && !f.detail.is_empty()),
            "{name}: phi/detail"
        );
        if result.skipped.is_some() {
            assert!(
                result.findings.is_empty() && result.positions.is_empty(),
                "{name}: skipped yet {result:?}"
            );
        } else if !codes.contains(&OrientationMixed) {
            assert_eq!(
                result.positions.len(),
                series.slices.len(),
                "{name}: positions"
            );
            assert!(
                result.positions.windows(2).all(|w| w[0] <= w[1]),
                "{name}: positions sorted"
            );
        }
    }

    /// The table of series and what the check must find.
    fn series_rows() -> Vec<Row> {
        let tilt = |s: &mut Slice| s.gantry_tilt = Some(15.0);
        vec![
            // Clean series.
            row("clean 3 mm", axial(100, 3.0, -150.0)),
            row("clean 1 mm", axial(200, 1.0, -100.0)),
            row("clean 5 mm", axial(60, 5.0, -150.0)),
            row("3 slices of a breath-hold series", axial(3, 3.0, 0.0)).kind(Some("breath-hold")),
            row("feet first: normal -z", along(100, 3.0, [-250.0, -250.0, -150.0], FFS)),
            row("reversed arrival", reversed(axial(100, 3.0, -150.0))),
            row("shuffled arrival", shuffled(axial(100, 3.0, -150.0))),
            row(
                "float noise of 0.001 mm",
                edit_all(axial(100, 3.0, -150.0), {
                    let mut k = 0;
                    move |s| {
                        k += 1;
                        let jitter = ((k * 7) % 3) as f64 * 0.001 - 0.001;
                        s.position = s.position.map(|p| p.map(|c| c + jitter));
                    }
                }),
            ),
            row("Siemens-like: descending z from +200", reversed(axial(134, 3.0, 200.0 - 133.0 * 3.0))),
            row("Philips-like 2 mm", axial(150, 2.0, -149.0)),
            row("GE-like 1.25 mm with 0.625 offset", axial(240, 1.25, -150.625)),
            row("Varian/Canon-like HFP", along(100, 2.5, [250.0, 250.0, -120.0], HFP)),
            row("sagittal MR is not a tilt", along(30, 4.0, [-60.0, -120.0, 120.0], SAGITTAL))
                .modality("MR")
                .kind(None),
            row("oblique MR is not a tilt", along(30, 4.0, [-120.0, -120.0, -60.0], tilted(15.0)))
                .modality("MR")
                .kind(None),
            row("gantry tilt within tolerance", edit_all(axial(100, 3.0, -150.0), |s| s.gantry_tilt = Some(0.3))),
            row("pixel spacing within tolerance", edit(axial(100, 3.0, -150.0), 4, |s| s.pixel_spacing = Some([0.9775, 0.9775]))),
            row("missing pixel spacing is not compared", edit(axial(100, 3.0, -150.0), 4, |s| s.pixel_spacing = None)),
            // Spacing.
            row("gap: z = -117 removed", without(axial(100, 3.0, -150.0), &[11]))
                .expect(&[SliceGap])
                .detail("gap of 6.0 mm between z = -120.0 and z = -114.0, expected 3.0 mm"),
            row("gap feet first: shown in patient z", without(along(100, 3.0, [-250.0, -250.0, -150.0], FFS), &[11]))
                .expect(&[SliceGap])
                .detail("gap of 6.0 mm between z = -120.0 and z = -114.0, expected 3.0 mm"),
            row("gap in sagittal MR: distance along the normal", without(along(30, 4.0, [-60.0, -120.0, 120.0], SAGITTAL), &[10]))
                .modality("MR")
                .kind(None)
                .expect(&[SliceGap])
                .detail("gap of 8.0 mm between d = -24.0 and d = -16.0, expected 4.0 mm"),
            row("15 gaps capped at 10", without(axial(100, 3.0, -150.0), &[10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34, 36, 38]))
                .expect(&[SliceGap; 10])
                .detail("and 6 more gaps"),
            row("duplicate slice", duplicate(axial(100, 3.0, -150.0), &[10]))
                .expect(&[SliceDuplicate])
                .detail("two slices at z = -120.0 (instances 11 and 101)"),
            row(
                "duplicate without instance numbers",
                edit_all(duplicate(axial(100, 3.0, -150.0), &[10]), |s| s.instance_number = None),
            )
            .expect(&[SliceDuplicate])
            .detail("two slices at z = -120.0"),
            row("12 duplicates capped at 10", duplicate(axial(100, 3.0, -150.0), &[1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23]))
                .expect(&[SliceDuplicate; 10])
                .detail("and 3 more duplicates"),
            row("only duplicates: no spacing", duplicate(axial(1, 3.0, 0.0), &[0]))
                .kind(Some("4dct-mip"))
                .expect(&[SliceDuplicate]),
            row("one slice moved by 0.2 mm", edit(axial(100, 2.5, -102.5), 50, |s| s.position = s.position.map(|p| [p[0], p[1], p[2] + 0.2])))
                .expect(&[SliceSpacingUneven])
                .detail("2 of 99 spacings differ from 2.50 mm by more than 0.10 mm (from 2.30 to 2.70 mm)"),
            row("gap and duplicate together", duplicate(without(axial(100, 3.0, -150.0), &[40]), &[5]))
                .expect(&[SliceGap, SliceDuplicate]),
            // Orientation, pixel spacing, tilt.
            row("one oblique slice: orientation mixed, spacing not checked", without(edit(axial(100, 3.0, -150.0), 20, |s| s.orientation = Some(tilted(10.0))), &[50]))
                .expect(&[OrientationMixed])
                .detail("1 of 99 slices has another Image Orientation (Patient)"),
            row("mixed pixel spacing", edit(edit(axial(100, 3.0, -150.0), 3, |s| s.pixel_spacing = Some([0.5, 0.5])), 4, |s| s.pixel_spacing = Some([0.5, 0.5])))
                .expect(&[PixelSpacingMixed])
                .detail("2 of 100 slices have Pixel Spacing 0.5\\0.5, the others 0.977\\0.977"),
            row("mixed rows/columns", edit(axial(100, 3.0, -150.0), 7, |s| (s.rows, s.columns) = (Some(256), Some(256))))
                .expect(&[PixelSpacingMixed])
                .detail("1 of 100 slices has Rows/Columns 256x256, the others 512x512"),
            row("mixed slice thickness", edit_all(axial(100, 3.0, -150.0), |s| {
                if s.instance_number.is_some_and(|n| n > 97) {
                    s.slice_thickness = Some(5.0);
                }
            }))
            .expect(&[PixelSpacingMixed])
            .detail("3 of 100 slices have Slice Thickness 5, the others 3"),
            row("tilted CT: not axial", along(100, 3.0, [-250.0, -250.0, -150.0], tilted(15.0)))
                .expect(&[GantryTilt])
                .detail("slices are not axial: the slice normal is 15.0° from the patient's z axis"),
            row("gantry tilt tag only", edit_all(axial(100, 3.0, -150.0), tilt))
                .expect(&[GantryTilt])
                .detail("Gantry/Detector Tilt 15.0° (tolerance 0.5°)"),
            row("gantry tilt tag and tilted slices", edit_all(along(100, 3.0, [-250.0, -250.0, -150.0], tilted(15.0)), tilt))
                .expect(&[GantryTilt, GantryTilt]),
            // Slice count.
            row("too few slices for a planning CT", axial(23, 3.0, -33.0))
                .expect(&[TooFewSlices])
                .detail("23 slices, fewer than the 40 a planning CT needs ([safety] min_planning_slices)"),
            row("too few slices, no kind", axial(23, 3.0, -33.0)).kind(None).expect(&[TooFewSlices]),
            row("3 slices, no kind", axial(3, 3.0, 0.0)).kind(None).expect(&[TooFewSlices]).detail("3 slices"),
            row("no too-few for a 4D phase", axial(23, 3.0, -33.0)).kind(Some("4dct-phase")),
            row("no too-few for a 4D average", axial(23, 3.0, -33.0)).kind(Some("4dct-average")),
            row("no too-few for MR", axial(23, 3.0, -33.0)).modality("MR").kind(None),
            // Skipped.
            row("single slice", axial(1, 3.0, 0.0)).detail("a single image"),
            row("localizer by image type", edit_all(axial(3, 3.0, 0.0), |s| s.image_type = vec!["ORIGINAL".into(), "PRIMARY".into(), "LOCALIZER".into()]))
                .detail("a localizer"),
            row("localizer by kind", axial(3, 3.0, 0.0)).kind(Some("scout")).detail("a localizer"),
            row("multi-frame", edit(axial(2, 3.0, 0.0), 0, |s| s.frames = Some(120))).detail("multi-frame"),
            row("missing position", edit(axial(100, 3.0, -150.0), 5, |s| s.position = None))
                .detail("no Image Position/Orientation (Patient)"),
            row("missing orientation", edit(axial(100, 3.0, -150.0), 5, |s| s.orientation = None))
                .detail("no Image Position/Orientation (Patient)"),
            row("NaN position is missing", edit(axial(100, 3.0, -150.0), 5, |s| s.position = Some([0.0, 0.0, f64::NAN])))
                .detail("no Image Position/Orientation (Patient)"),
            row("degenerate orientation", edit_all(axial(100, 3.0, -150.0), |s| s.orientation = Some([0.0; 6])))
                .detail("an invalid Image Orientation (Patient)"),
        ]
    }

    #[test]
    fn series_table() {
        let rows = series_rows();
        assert!(rows.len() >= 24, "table too short: {}", rows.len());
        for r in &rows {
            let series = SeriesGeometry {
                modality: r.modality,
                kind: r.kind,
                slices: &r.slices,
            };
            check(r.name, &series, &r.codes, r.detail);
        }
    }

    #[test]
    fn findings_fields() {
        let slices = duplicate(without(axial(100, 3.0, -150.0), &[11]), &[40]);
        let series = SeriesGeometry {
            modality: "CT",
            kind: Some("planning-ct"),
            slices: &slices,
        };
        let result = check_series(&series, &Tolerances::default());
        let gap = result
            .findings
            .iter()
            .find(|f| f.code == SliceGap)
            .expect("a gap");
        assert_eq!(
            (
                gap.attribute.as_str(),
                gap.expected.as_str(),
                gap.found.as_str()
            ),
            (POSITION, "3.0 mm", "6.0 mm")
        );
        let dup = result
            .findings
            .iter()
            .find(|f| f.code == SliceDuplicate)
            .expect("a duplicate");
        assert_eq!(dup.sop_instance_uid, "1.2.826.0.1.3680043.9.100");
        let uneven = check_series(
            &SeriesGeometry {
                modality: "CT",
                kind: None,
                slices: &edit(axial(100, 2.5, -102.5), 50, |s| {
                    s.position = s.position.map(|p| [p[0], p[1], p[2] + 0.2])
                }),
            },
            &Tolerances::default(),
        );
        let f = &uneven.findings[0];
        assert_eq!(
            (f.expected.as_str(), f.found.as_str()),
            ("2.50 mm", "2.30 to 2.70 mm")
        );
        let oblique = edit(axial(100, 3.0, -150.0), 20, |s| {
            s.orientation = Some(tilted(10.0))
        });
        let mixed = check_series(
            &SeriesGeometry {
                modality: "CT",
                kind: None,
                slices: &oblique,
            },
            &Tolerances::default(),
        );
        assert_eq!(mixed.findings[0].expected, "1\\0\\0\\0\\1\\0");
        assert_eq!(mixed.findings[0].found, "1\\0\\0\\0\\0.9848\\-0.1736");
        assert_eq!(
            mixed.findings[0].sop_instance_uid,
            "1.2.826.0.1.3680043.2.21"
        );
        assert!(mixed.positions.is_empty());
    }

    // ---- the phase table -------------------------------------------------

    /// One row of the 4D phase table: (uid, label, positions) per phase, and the expected (uid, code).
    struct PhaseRow {
        name: &'static str,
        phases: Vec<(String, String, Vec<f64>)>,
        expected: Vec<(&'static str, FindingCode)>,
        detail: Option<&'static str>,
    }

    /// `n` positions `spacing` mm apart from `start`.
    fn positions(n: usize, spacing: f64, start: f64) -> Vec<f64> {
        (0..n).map(|i| start + i as f64 * spacing).collect()
    }

    /// Ten phases "4D 0%" .. "4D 90%" (uids "phase-0" .. "phase-9") of 100 slices 2.5 mm apart
    /// from -102.5; phase `k` is replaced by `change(k)` when that returns Some.
    fn ten_phases(change: impl Fn(usize) -> Option<Vec<f64>>) -> Vec<(String, String, Vec<f64>)> {
        (0..10)
            .map(|k| {
                let p = change(k).unwrap_or_else(|| positions(100, 2.5, -102.5));
                (format!("phase-{k}"), format!("4D {}%", k * 10), p)
            })
            .collect()
    }

    /// The phase table.
    fn phase_rows() -> Vec<PhaseRow> {
        let two = |a: Vec<f64>, b: Vec<f64>| {
            vec![
                ("phase-0".to_string(), "A".to_string(), a),
                ("phase-1".to_string(), "B".to_string(), b),
            ]
        };
        vec![
            PhaseRow {
                name: "10 equal phases",
                phases: ten_phases(|_| None),
                expected: vec![],
                detail: None,
            },
            PhaseRow {
                name: "one phase 98 of 100",
                phases: ten_phases(|k| (k == 5).then(|| positions(98, 2.5, -102.5))),
                expected: vec![("phase-5", PhaseCountMismatch)],
                detail: Some("phase \"4D 50%\" has 98 slices, the other 9 phases 100"),
            },
            PhaseRow {
                name: "two phases short",
                phases: ten_phases(|k| (k == 2 || k == 7).then(|| positions(99, 2.5, -102.5))),
                expected: vec![
                    ("phase-2", PhaseCountMismatch),
                    ("phase-7", PhaseCountMismatch),
                ],
                detail: Some("the other 8 phases 100"),
            },
            PhaseRow {
                name: "one phase shifted by 2.5 mm",
                phases: ten_phases(|k| (k == 5).then(|| positions(100, 2.5, -100.0))),
                expected: vec![("phase-5", PhaseCountMismatch)],
                detail: Some(
                    "phase \"4D 50%\" covers z = -100.0 to 147.5, the other phases z = -102.5 to 145.0",
                ),
            },
            PhaseRow {
                name: "shift within tolerance",
                phases: ten_phases(|k| (k == 5).then(|| positions(100, 2.5, -102.45))),
                expected: vec![],
                detail: None,
            },
            PhaseRow {
                name: "one phase only",
                phases: ten_phases(|_| None).into_iter().take(1).collect(),
                expected: vec![],
                detail: None,
            },
            PhaseRow {
                name: "no phases",
                phases: vec![],
                expected: vec![],
                detail: None,
            },
            PhaseRow {
                name: "tie: the larger count wins",
                phases: two(positions(100, 2.5, 0.0), positions(98, 2.5, 0.0)),
                expected: vec![("phase-1", PhaseCountMismatch)],
                detail: Some("phase \"B\" has 98 slices, the other phase 100"),
            },
            PhaseRow {
                name: "empty positions ignored",
                phases: ten_phases(|k| (k == 3).then(Vec::new)),
                expected: vec![],
                detail: None,
            },
            PhaseRow {
                name: "empty positions leave fewer than two phases",
                phases: two(positions(100, 2.5, 0.0), Vec::new()),
                expected: vec![],
                detail: None,
            },
        ]
    }

    #[test]
    fn phase_table() {
        let rows = phase_rows();
        assert!(rows.len() >= 6);
        for r in &rows {
            let phases: Vec<Phase<'_>> = r
                .phases
                .iter()
                .map(|(uid, label, p)| Phase {
                    series_instance_uid: uid,
                    label,
                    positions: p,
                })
                .collect();
            let found = check_phases(&phases, &Tolerances::default());
            let got: Vec<(&str, FindingCode)> = found
                .iter()
                .map(|(uid, f)| (uid.as_str(), f.code))
                .collect();
            assert_eq!(got, r.expected, "{}: {found:#?}", r.name);
            if let Some(text) = r.detail {
                assert!(
                    found.iter().any(|(_, f)| f.detail.contains(text)),
                    "{}: no {text:?} in {found:#?}",
                    r.name
                );
            }
        }
    }

    #[test]
    fn head_first_and_feet_first_phases_match() {
        let hfs = axial(100, 2.5, -102.5);
        let ffs = along(100, 2.5, [250.0, -250.0, -102.5], FFS);
        let a = check_series(
            &SeriesGeometry {
                modality: "CT",
                kind: Some("4dct-phase"),
                slices: &hfs,
            },
            &Tolerances::default(),
        );
        let b = check_series(
            &SeriesGeometry {
                modality: "CT",
                kind: Some("4dct-phase"),
                slices: &ffs,
            },
            &Tolerances::default(),
        );
        let phases = [
            Phase {
                series_instance_uid: "a",
                label: "4D 0%",
                positions: &a.positions,
            },
            Phase {
                series_instance_uid: "b",
                label: "4D 10%",
                positions: &b.positions,
            },
        ];
        assert!(check_phases(&phases, &Tolerances::default()).is_empty());
        assert_eq!(a.positions.first(), Some(&-102.5));
    }

    #[test]
    fn formatting() {
        assert_eq!(fmt1(-0.0004), "0.0");
        assert_eq!(fmt1(6.0), "6.0");
        assert_eq!(fmt1(1.25), "1.25");
        assert_eq!(fmt1(-120.625), "-120.625");
        assert_eq!(fmt1(15.0004), "15.0");
        assert_eq!(fmt_trim(-0.0), "0");
        assert_eq!(fmt_trim(0.97656), "0.9766");
        assert_eq!(fmt_multi(&HFS), "1\\0\\0\\0\\1\\0");
    }
}
