//! The Part-10 layout of the files simgate stores (PS3.10 7.1): a 128-byte preamble, `DICM`,
//! the file meta information (group 0002), then the data set bytes exactly as received.
//! Receive writes the head with [`PartTenMeta::encode`]; forward finds the data set again
//! with [`dataset_offset`]. No I/O here.

use dicom_object::meta::FileMetaTableBuilder;

/// simgate's Implementation Class UID (a UUID-derived 2.25 root) and version, in every meta header.
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.148712617542390174935125618224936720101";
pub const IMPLEMENTATION_VERSION_NAME: &str = concat!("SIMGATE_", env!("CARGO_PKG_VERSION"));

/// Bytes before the meta group's elements: preamble, `DICM`, and (0002,0000) with its length.
pub const HEAD_LENGTH: usize = 144;

#[derive(Debug, thiserror::Error)]
pub enum Part10Error {
    #[error("cannot build the file meta information")]
    Meta(#[source] Box<dicom_object::meta::Error>),
    #[error("not a Part-10 file as simgate writes them")]
    NotPart10,
    #[error("cannot read the file meta information")]
    ReadMeta(#[source] Box<dicom_object::meta::Error>),
}

/// What the file meta information of a stored file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMeta {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub transfer_syntax_uid: String,
    pub source_ae_title: String,
    /// Where the data set starts.
    pub dataset_offset: u64,
}

/// Reads the meta group of a stored file from its first bytes (at least up to the data set).
pub fn read_meta(head: &[u8]) -> Result<StoredMeta, Part10Error> {
    let offset = dataset_offset(head).ok_or(Part10Error::NotPart10)?;
    let meta_bytes = head
        .get(128..offset as usize)
        .ok_or(Part10Error::NotPart10)?;
    let meta = dicom_object::meta::FileMetaTable::from_reader(meta_bytes)
        .map_err(|e| Part10Error::ReadMeta(Box::new(e)))?;
    Ok(StoredMeta {
        sop_class_uid: meta.media_storage_sop_class_uid().to_string(),
        sop_instance_uid: meta.media_storage_sop_instance_uid().to_string(),
        transfer_syntax_uid: meta.transfer_syntax().to_string(),
        source_ae_title: meta
            .source_application_entity_title
            .as_deref()
            .unwrap_or("")
            .trim_end_matches(['\0', ' '])
            .to_string(),
        dataset_offset: offset,
    })
}

/// What goes into the file meta information (group 0002) of a stored instance.
#[derive(Debug, Clone)]
pub struct PartTenMeta<'a> {
    pub sop_class_uid: &'a str,
    pub sop_instance_uid: &'a str,
    pub transfer_syntax_uid: &'a str,
    pub source_ae_title: &'a str,
}

impl PartTenMeta<'_> {
    /// The 128-byte preamble, `DICM` and the meta group, ready to precede the data set.
    pub fn encode(&self) -> Result<Vec<u8>, Part10Error> {
        let meta = FileMetaTableBuilder::new()
            .media_storage_sop_class_uid(self.sop_class_uid)
            .media_storage_sop_instance_uid(self.sop_instance_uid)
            .transfer_syntax(self.transfer_syntax_uid)
            .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
            .implementation_version_name(IMPLEMENTATION_VERSION_NAME)
            .source_application_entity_title(self.source_ae_title)
            .build()
            .map_err(|e| Part10Error::Meta(Box::new(e)))?;
        let mut out = Vec::with_capacity(400);
        out.extend_from_slice(&[0u8; 128]);
        out.extend_from_slice(b"DICM");
        meta.write(&mut out)
            .map_err(|e| Part10Error::Meta(Box::new(e)))?;
        Ok(out)
    }
}

/// Where the data set starts in a Part-10 file simgate wrote, from its first
/// [`HEAD_LENGTH`] bytes: after the preamble, `DICM` and the meta group, whose length
/// (0002,0000) comes first. `None` when the head is not of that shape.
pub fn dataset_offset(head: &[u8]) -> Option<u64> {
    if head.len() < HEAD_LENGTH
        || &head[128..132] != b"DICM"
        || head[132..138] != [0x02, 0x00, 0x00, 0x00, b'U', b'L']
    {
        return None;
    }
    let group_length = u32::from_le_bytes([head[140], head[141], head[142], head[143]]);
    Some(HEAD_LENGTH as u64 + u64::from(group_length))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_set_is_found_after_the_meta_group_that_encode_wrote() {
        let head = PartTenMeta {
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2",
            sop_instance_uid: "1.2.3.4",
            transfer_syntax_uid: "1.2.840.10008.1.2.1",
            source_ae_title: "CTSIM",
        }
        .encode()
        .expect("encode");
        assert_eq!(dataset_offset(&head), Some(head.len() as u64));
        let meta = read_meta(&head).expect("meta");
        assert_eq!(meta.sop_instance_uid, "1.2.3.4");
        assert_eq!(meta.transfer_syntax_uid, "1.2.840.10008.1.2.1");
        assert_eq!(meta.source_ae_title, "CTSIM");
        assert_eq!(dataset_offset(&head[..100]), None);
        let mut not_part10 = head.clone();
        not_part10[128] = b'X';
        assert_eq!(dataset_offset(&not_part10), None);
    }
}
