//! Transfer syntaxes (PS3.5 10): the two uncompressed little endian ones by UID, and how a
//! transfer syntax encodes the data set.

pub const IMPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2";
pub const EXPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2.1";
pub const EXPLICIT_VR_BIG_ENDIAN: &str = "1.2.840.10008.1.2.2";

/// Whether the whole data set is deflated (RFC 1951) in this transfer syntax: Deflated
/// Explicit VR Little Endian, JPIP Referenced Deflate, JPIP HTJ2K Referenced Deflate.
pub fn is_deflated(uid: &str) -> bool {
    matches!(
        uid,
        "1.2.840.10008.1.2.1.99" | "1.2.840.10008.1.2.4.95" | "1.2.840.10008.1.2.4.205"
    )
}

/// How a transfer syntax encodes the data set: what a walk over element headers needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoding {
    pub explicit_vr: bool,
    pub big_endian: bool,
}

impl Encoding {
    pub const IMPLICIT_VR_LITTLE_ENDIAN: Encoding = Encoding {
        explicit_vr: false,
        big_endian: false,
    };
    pub const EXPLICIT_VR_LITTLE_ENDIAN: Encoding = Encoding {
        explicit_vr: true,
        big_endian: false,
    };

    /// The encoding of a data set in the given transfer syntax (for the deflated ones: of the
    /// data set once inflated, see [`is_deflated`]).
    pub fn of_transfer_syntax(uid: &str) -> Option<Encoding> {
        match uid {
            IMPLICIT_VR_LITTLE_ENDIAN => Some(Self::IMPLICIT_VR_LITTLE_ENDIAN),
            "1.2.840.10008.1.2.2" => Some(Encoding {
                explicit_vr: true,
                big_endian: true,
            }),
            // The deflated syntaxes are Explicit VR Little Endian once inflated.
            _ => Some(Self::EXPLICIT_VR_LITTLE_ENDIAN),
        }
    }

    pub fn u16(self, b: &[u8]) -> u16 {
        if self.big_endian {
            u16::from_be_bytes([b[0], b[1]])
        } else {
            u16::from_le_bytes([b[0], b[1]])
        }
    }

    pub fn u32(self, b: &[u8]) -> u32 {
        if self.big_endian {
            u32::from_be_bytes([b[0], b[1], b[2], b[3]])
        } else {
            u32::from_le_bytes([b[0], b[1], b[2], b[3]])
        }
    }
}
