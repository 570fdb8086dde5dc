//! Small data sets that travel with DIMSE messages other than C-STORE: Storage Commitment's
//! N-ACTION and N-EVENT-REPORT, C-FIND/C-MOVE/C-GET identifiers and their answers. They are
//! bounded by the association (a few MiB at most) and read whole with dicom-object.

use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_object::mem::InMemElement;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use super::transfer_syntax::is_deflated;

/// Why a small data set could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum DataSetError {
    #[error("transfer syntax {0} is not supported for this message")]
    TransferSyntax(String),
    #[error("malformed data set")]
    Lengths(#[source] crate::scp::scan::ScanError),
    #[error("data set cannot be parsed")]
    Parse(#[source] Box<dicom_object::ReadError>),
    #[error("data set cannot be written")]
    Write(#[source] Box<dicom_object::WriteError>),
}

fn registry_entry(
    transfer_syntax_uid: &str,
) -> Result<&'static dicom_encoding::TransferSyntax, DataSetError> {
    if is_deflated(transfer_syntax_uid) {
        return Err(DataSetError::TransferSyntax(
            transfer_syntax_uid.to_string(),
        ));
    }
    TransferSyntaxRegistry
        .get(transfer_syntax_uid)
        .ok_or_else(|| DataSetError::TransferSyntax(transfer_syntax_uid.to_string()))
}

/// Reads a data set received on a presentation context of this transfer syntax. Every
/// declared length is checked against the bytes first (the receive path's length walk):
/// dicom-object allocates by declared lengths, so an 85-byte identifier could otherwise ask
/// it for a gigabyte (found by fuzzing).
pub fn parse(bytes: &[u8], transfer_syntax_uid: &str) -> Result<InMemDicomObject, DataSetError> {
    let ts = registry_entry(transfer_syntax_uid)?;
    let encoding = super::transfer_syntax::Encoding::of_transfer_syntax(transfer_syntax_uid)
        .ok_or_else(|| DataSetError::TransferSyntax(transfer_syntax_uid.to_string()))?;
    crate::scp::scan::check_nested_lengths(bytes, encoding).map_err(DataSetError::Lengths)?;
    InMemDicomObject::read_dataset_with_ts(bytes, ts).map_err(|e| DataSetError::Parse(Box::new(e)))
}

/// Writes a data set for a presentation context of this transfer syntax.
pub fn encode(
    object: &InMemDicomObject,
    transfer_syntax_uid: &str,
) -> Result<Vec<u8>, DataSetError> {
    let ts = registry_entry(transfer_syntax_uid)?;
    let mut out = Vec::new();
    object
        .write_dataset_with_ts(&mut out, ts)
        .map_err(|e| DataSetError::Write(Box::new(e)))?;
    Ok(out)
}

/// An element's text, trimmed of padding; empty when absent or not text. (`get`, not
/// `element_opt`: the latter builds an error, with a backtrace when `RUST_BACKTRACE` is set,
/// for every absent attribute.)
pub fn text(object: &InMemDicomObject, tag: Tag) -> String {
    object
        .get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|s| {
            s.trim_matches(|c: char| c == '\0' || c.is_whitespace())
                .to_string()
        })
        .unwrap_or_default()
}

/// A text element.
pub fn element(tag: Tag, vr: VR, value: &str) -> InMemElement {
    if value.is_empty() {
        DataElement::empty(tag, vr)
    } else {
        DataElement::new(tag, vr, PrimitiveValue::from(value))
    }
}

/// A sequence element.
pub fn sequence(tag: Tag, items: Vec<InMemDicomObject>) -> InMemElement {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

/// The items of a sequence element; empty when absent.
pub fn items(object: &InMemDicomObject, tag: Tag) -> Vec<InMemDicomObject> {
    object
        .get(tag)
        .and_then(|e| e.items().map(<[InMemDicomObject]>::to_vec))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_declared_length_beyond_the_bytes_is_refused_before_dicom_object_allocates() {
        // 85 bytes from the fuzzer whose Modalities in Study declares ~1.3 GB: dicom-object
        // resized a buffer to that before noticing the bytes were not there.
        let input = include_bytes!("../../fuzz/corpus/query/regression-huge-declared-length");
        let parsed = parse(
            &input[1..],
            super::super::transfer_syntax::EXPLICIT_VR_LITTLE_ENDIAN,
        );
        assert!(
            matches!(parsed, Err(DataSetError::Lengths(_))),
            "{parsed:?}"
        );
    }
}
