//! A streaming walk over the element headers of a received data set, before any of it reaches
//! dicom-object: it checks that every declared length fits in what actually arrived and copies
//! the small top-level elements (the "header": everything simgate indexes) into a bounded
//! buffer. Memory never depends on a declared length, only on bytes received.

use std::fmt;

use crate::dicom::transfer_syntax::Encoding;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tag(pub u16, pub u16);

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({:04X},{:04X})", self.0, self.1)
    }
}

const ITEM: Tag = Tag(0xFFFE, 0xE000);
const ITEM_DELIMITATION: Tag = Tag(0xFFFE, 0xE00D);
const SEQUENCE_DELIMITATION: Tag = Tag(0xFFFE, 0xE0DD);
const UNDEFINED_LENGTH: u32 = 0xFFFF_FFFF;

/// Why a data set was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    #[error("element {tag} declares {declared} bytes but only {remaining} remain")]
    LengthBeyondEnd {
        tag: Tag,
        declared: u64,
        remaining: u64,
    },
    #[error("the data set ends inside the header of an element")]
    TruncatedHeader,
    #[error("sequence or item opened by {tag} is never closed")]
    Unterminated { tag: Tag },
    #[error("{tag} found where {expected} was expected")]
    Unexpected { tag: Tag, expected: &'static str },
    #[error("element {tag} of VR {vr} declares {length} bytes, not a whole number of values")]
    PartialBinaryValue { tag: Tag, vr: String, length: u32 },
    #[error("sequences nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("element {tag} has odd length {length}")]
    OddLength { tag: Tag, length: u32 },
    #[error("the deflated data set cannot be inflated: {0}")]
    Inflate(String),
    #[error("the deflated data set inflates past {INFLATED_LIMIT} bytes")]
    InflatedTooLarge,
    #[error("the deflated data set ends before its last deflate block")]
    DeflateUnfinished,
}

/// A deflated data set may inflate to this much at most (a DICOM element is under 4 GiB).
const INFLATED_LIMIT: u64 = 4 * 1024 * 1024 * 1024;
/// Inflated bytes are walked in pieces of this size: memory stays bounded whatever the ratio.
const INFLATE_CHUNK: usize = 64 * 1024;

/// Nesting deeper than this is refused; real objects stay under ten.
pub const MAX_DEPTH: usize = 64;

/// Top-level values longer than this are not copied into the header.
const HEADER_VALUE_LIMIT: u64 = 64 * 1024;
/// The header buffer never grows past this.
const HEADER_LIMIT: usize = 1024 * 1024;

/// Top-level elements that can be large and that simgate does not index.
fn is_bulk(tag: Tag) -> bool {
    let Tag(group, element) = tag;
    group >= 0x7FE0
        || (group & 0xFF00 == 0x6000 && element == 0x3000) // overlay data
        || tag == Tag(0x3006, 0x0039) // ROI Contour Sequence
        || tag == Tag(0x5200, 0x9230) // Per-frame Functional Groups Sequence
        || tag == Tag(0x0042, 0x0011) // Encapsulated Document
        || tag == Tag(0x5400, 0x0100) // Waveform Sequence
}

#[derive(Debug, Clone, Copy)]
enum Frame {
    /// Inside an undefined-length sequence (or encapsulated pixel data): items or a delimiter.
    Sequence(Tag),
    /// Inside an undefined-length item: elements or an item delimiter.
    Item,
}

/// The streaming walk. Feed it every data set byte in order, then call [`finish`](Self::finish).
#[derive(Debug)]
pub struct DatasetScanner {
    encoding: Encoding,
    /// Bytes of an element header split across two chunks (at most 12).
    pending: Vec<u8>,
    /// Value bytes still to pass for the current element or item.
    skip: u64,
    /// The element or item whose value is being passed.
    skipping: Tag,
    /// How many bytes of that value have arrived.
    value_received: u64,
    stack: Vec<Frame>,
    header: Vec<u8>,
    /// Where the top-level element being copied starts in `header`, when it is being copied.
    capture_start: Option<usize>,
    consumed: u64,
    /// For a deflated transfer syntax: the raw deflate stream is inflated as it arrives and
    /// the inflated bytes are walked.
    inflater: Option<Box<flate2::Decompress>>,
}

impl DatasetScanner {
    pub fn new(encoding: Encoding) -> Self {
        Self {
            encoding,
            pending: Vec::with_capacity(12),
            skip: 0,
            skipping: Tag(0, 0),
            value_received: 0,
            stack: Vec::new(),
            header: Vec::with_capacity(8 * 1024),
            capture_start: None,
            consumed: 0,
            inflater: None,
        }
    }

    /// A walk of a data set in this transfer syntax, inflating it first when the syntax is a
    /// deflated one; `None` for a transfer syntax that is not known.
    pub fn for_transfer_syntax(uid: &str) -> Option<Self> {
        use dicom_encoding::TransferSyntaxIndex;
        dicom_transfer_syntax_registry::TransferSyntaxRegistry.get(uid)?;
        let mut scanner = Self::new(Encoding::of_transfer_syntax(uid)?);
        if crate::dicom::transfer_syntax::is_deflated(uid) {
            scanner.inflater = Some(Box::new(flate2::Decompress::new(false)));
        }
        Some(scanner)
    }

    pub fn bytes_seen(&self) -> u64 {
        self.consumed
    }

    /// Takes the next bytes of the data set, as received.
    pub fn feed(&mut self, input: &[u8]) -> Result<(), ScanError> {
        match self.inflater.take() {
            None => self.walk(input),
            Some(mut inflater) => {
                let result = self.inflate(&mut inflater, input, flate2::FlushDecompress::None);
                self.inflater = Some(inflater);
                result.map(|_| ())
            }
        }
    }

    /// Inflates `input` piece by piece and walks each piece.
    fn inflate(
        &mut self,
        inflater: &mut flate2::Decompress,
        mut input: &[u8],
        flush: flate2::FlushDecompress,
    ) -> Result<flate2::Status, ScanError> {
        let mut out = vec![0u8; INFLATE_CHUNK];
        loop {
            let (before_in, before_out) = (inflater.total_in(), inflater.total_out());
            let status = inflater
                .decompress(input, &mut out, flush)
                .map_err(|e| ScanError::Inflate(e.to_string()))?;
            let read = (inflater.total_in() - before_in) as usize;
            let produced = (inflater.total_out() - before_out) as usize;
            input = &input[read..];
            if inflater.total_out() > INFLATED_LIMIT {
                return Err(ScanError::InflatedTooLarge);
            }
            self.walk(&out[..produced])?;
            let stuck = read == 0 && produced == 0;
            if status == flate2::Status::StreamEnd
                || stuck
                || (input.is_empty() && produced < out.len())
            {
                return Ok(status);
            }
        }
    }

    fn walk(&mut self, mut input: &[u8]) -> Result<(), ScanError> {
        self.consumed += input.len() as u64;
        while !input.is_empty() {
            if self.skip > 0 {
                let n = (self.skip.min(input.len() as u64)) as usize;
                self.capture(&input[..n]);
                self.skip -= n as u64;
                self.value_received += n as u64;
                input = &input[n..];
                if self.skip == 0 {
                    self.value_done();
                }
                continue;
            }
            let needed = self.header_length_needed();
            if self.pending.len() < needed {
                let take = (needed - self.pending.len()).min(input.len());
                self.pending.extend_from_slice(&input[..take]);
                input = &input[take..];
                if self.pending.len() < needed || self.header_length_needed() > self.pending.len() {
                    continue;
                }
            }
            self.element_header()?;
        }
        Ok(())
    }

    /// Ends the walk: the data set must end on an element boundary with every sequence
    /// closed. Returns the copied header (top-level elements, in the data set's encoding).
    pub fn finish(mut self) -> Result<Vec<u8>, ScanError> {
        if let Some(mut inflater) = self.inflater.take() {
            let status = self.inflate(&mut inflater, &[], flate2::FlushDecompress::Finish)?;
            if status != flate2::Status::StreamEnd {
                return Err(ScanError::DeflateUnfinished);
            }
        }
        if self.skip > 0 {
            // The declared length ran past the end of the data set.
            return Err(ScanError::LengthBeyondEnd {
                tag: self.skipping,
                declared: self.skip + self.value_received,
                remaining: self.value_received,
            });
        }
        if !self.pending.is_empty() {
            return Err(ScanError::TruncatedHeader);
        }
        if let Some(frame) = self.stack.last() {
            let tag = match frame {
                Frame::Sequence(tag) => *tag,
                Frame::Item => ITEM,
            };
            return Err(ScanError::Unterminated { tag });
        }
        Ok(self.header)
    }

    /// 8 bytes for implicit VR and for items; explicit VR needs 6 to know whether it is 8 or 12.
    fn header_length_needed(&self) -> usize {
        if !self.encoding.explicit_vr || self.pending.len() < 6 {
            return 8;
        }
        let group = self.encoding.u16(&self.pending[0..2]);
        if group == 0xFFFE {
            return 8;
        }
        if has_long_length(&self.pending[4..6]) {
            12
        } else {
            8
        }
    }

    fn element_header(&mut self) -> Result<(), ScanError> {
        let e = self.encoding;
        let p = std::mem::take(&mut self.pending);
        let tag = Tag(e.u16(&p[0..2]), e.u16(&p[2..4]));
        let explicit = e.explicit_vr && tag.0 != 0xFFFE;
        let (length, is_sq) = if explicit {
            let vr = [p[4], p[5]];
            let length = if p.len() == 12 {
                e.u32(&p[8..12])
            } else {
                u32::from(e.u16(&p[6..8]))
            };
            (length, &vr == b"SQ")
        } else {
            (e.u32(&p[4..8]), false)
        };
        let top_level = self.stack.is_empty();
        if top_level {
            let wanted = !is_bulk(tag)
                && if length == UNDEFINED_LENGTH {
                    // In implicit VR an undefined length always means a sequence.
                    is_sq || !e.explicit_vr
                } else {
                    u64::from(length) <= HEADER_VALUE_LIMIT
                };
            self.capture_start = wanted.then_some(self.header.len());
        }
        self.capture(&p);
        self.pending = p;
        self.pending.clear();

        match (tag, self.stack.last().copied()) {
            (ITEM, Some(Frame::Sequence(_))) => {
                if length == UNDEFINED_LENGTH {
                    self.push(Frame::Item)?;
                } else {
                    self.start_value(tag, length);
                }
            }
            (ITEM_DELIMITATION, Some(Frame::Item)) => {
                self.stack.pop();
            }
            (SEQUENCE_DELIMITATION, Some(Frame::Sequence(_))) => {
                self.stack.pop();
                self.value_done();
            }
            (_, Some(Frame::Sequence(_))) => {
                return Err(ScanError::Unexpected {
                    tag,
                    expected: "an item or a sequence delimiter",
                });
            }
            (ITEM | ITEM_DELIMITATION | SEQUENCE_DELIMITATION, _) => {
                return Err(ScanError::Unexpected {
                    tag,
                    expected: "a data element",
                });
            }
            _ => {
                if length == UNDEFINED_LENGTH {
                    self.push(Frame::Sequence(tag))?;
                } else if length % 2 == 1 && tag.0 != 0xFFFE {
                    return Err(ScanError::OddLength { tag, length });
                } else {
                    self.start_value(tag, length);
                }
            }
        }
        Ok(())
    }

    fn push(&mut self, frame: Frame) -> Result<(), ScanError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(ScanError::TooDeep);
        }
        self.stack.push(frame);
        Ok(())
    }

    fn start_value(&mut self, tag: Tag, length: u32) {
        self.skipping = tag;
        self.skip = u64::from(length);
        self.value_received = 0;
        if length == 0 {
            self.value_done();
        }
    }

    /// A value (or a whole undefined-length sequence) has been passed.
    fn value_done(&mut self) {
        if self.stack.is_empty() {
            self.capture_start = None;
        }
    }

    fn capture(&mut self, bytes: &[u8]) {
        let Some(start) = self.capture_start else {
            return;
        };
        if self.header.len() + bytes.len() > HEADER_LIMIT {
            // This element would overflow the header: drop it and copy no more of it.
            self.header.truncate(start);
            self.capture_start = None;
            return;
        }
        self.header.extend_from_slice(bytes);
    }
}

/// Explicit VR elements with a 4-byte length: the long VRs of PS3.5 7.1.2, and any VR code
/// the standard does not define, which dicom-object reads as UN (found by fuzzing: reading an
/// unknown code with a 2-byte length let this walk and dicom-object disagree, and dicom-object
/// then allocated by a length nobody had checked).
fn has_long_length(vr: &[u8]) -> bool {
    const SHORT: [&[u8; 2]; 21] = [
        b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"PN",
        b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
    ];
    !SHORT.iter().any(|short| short.as_slice() == vr)
}

#[cfg(test)]
fn has_long_length_listed(vr: &[u8]) -> bool {
    matches!(
        vr,
        b"OB"
            | b"OD"
            | b"OF"
            | b"OL"
            | b"OV"
            | b"OW"
            | b"SQ"
            | b"SV"
            | b"UC"
            | b"UN"
            | b"UR"
            | b"UT"
            | b"UV"
    )
}

/// Checks a complete in-memory data set (the copied header) all the way down: every declared
/// length, at every nesting level, fits inside its container. Only after this passes is the
/// buffer handed to dicom-object, whose parser would otherwise trust the declared lengths.
pub fn check_nested_lengths(bytes: &[u8], encoding: Encoding) -> Result<(), ScanError> {
    check_elements(bytes, encoding, 0, false).map(|_| ())
}

/// Walks elements in `bytes`; in an undefined-length item, stops after the item delimiter and
/// returns how many bytes it used.
fn check_elements(
    bytes: &[u8],
    e: Encoding,
    depth: usize,
    in_undefined_item: bool,
) -> Result<usize, ScanError> {
    if depth > MAX_DEPTH {
        return Err(ScanError::TooDeep);
    }
    let mut at = 0usize;
    while at < bytes.len() {
        let (tag, length, vr_is_sq, header_len) = read_header(&bytes[at..], e)?;
        let declared_vr =
            (e.explicit_vr && tag.0 != 0xFFFE).then(|| [bytes[at + 4], bytes[at + 5]]);
        at += header_len;
        if length != UNDEFINED_LENGTH
            && let Some((vr, size)) = binary_value_size(tag, declared_vr)
            && length as usize % size != 0
        {
            return Err(ScanError::PartialBinaryValue { tag, vr, length });
        }
        if tag == ITEM_DELIMITATION && in_undefined_item {
            return Ok(at);
        }
        if tag.0 == 0xFFFE {
            return Err(ScanError::Unexpected {
                tag,
                expected: "a data element",
            });
        }
        let remaining = (bytes.len() - at) as u64;
        if length == UNDEFINED_LENGTH {
            at += check_items(&bytes[at..], e, depth + 1, None, tag)?;
        } else {
            if u64::from(length) > remaining {
                return Err(ScanError::LengthBeyondEnd {
                    tag,
                    declared: length.into(),
                    remaining,
                });
            }
            let value = &bytes[at..at + length as usize];
            if vr_is_sq || (!e.explicit_vr && implicit_vr_is_sequence(tag)) {
                check_items(value, e, depth + 1, Some(()), tag)?;
            }
            at += length as usize;
        }
    }
    if in_undefined_item {
        return Err(ScanError::Unterminated { tag: ITEM });
    }
    Ok(at)
}

/// Walks the items of a sequence. With `defined` the whole slice is the sequence value;
/// without, the sequence ends at its delimiter and the bytes used are returned.
fn check_items(
    bytes: &[u8],
    e: Encoding,
    depth: usize,
    defined: Option<()>,
    sequence: Tag,
) -> Result<usize, ScanError> {
    if depth > MAX_DEPTH {
        return Err(ScanError::TooDeep);
    }
    let mut at = 0usize;
    while at < bytes.len() {
        let (tag, length, _, header_len) = read_header(&bytes[at..], e)?;
        at += header_len;
        match tag {
            SEQUENCE_DELIMITATION if defined.is_none() => return Ok(at),
            ITEM if length == UNDEFINED_LENGTH => {
                at += check_elements(&bytes[at..], e, depth + 1, true)?;
            }
            ITEM => {
                let remaining = (bytes.len() - at) as u64;
                if u64::from(length) > remaining {
                    return Err(ScanError::LengthBeyondEnd {
                        tag,
                        declared: length.into(),
                        remaining,
                    });
                }
                // Items of encapsulated pixel data hold fragments, not data sets.
                if sequence.0 < 0x7FE0 {
                    check_elements(&bytes[at..at + length as usize], e, depth + 1, false)?;
                }
                at += length as usize;
            }
            _ => {
                return Err(ScanError::Unexpected {
                    tag,
                    expected: "an item",
                });
            }
        }
    }
    match defined {
        Some(()) => Ok(at),
        None => Err(ScanError::Unterminated { tag: sequence }),
    }
}

fn read_header(bytes: &[u8], e: Encoding) -> Result<(Tag, u32, bool, usize), ScanError> {
    let head = bytes.get(..8).ok_or(ScanError::TruncatedHeader)?;
    let tag = Tag(e.u16(&head[0..2]), e.u16(&head[2..4]));
    if !e.explicit_vr || tag.0 == 0xFFFE {
        return Ok((tag, e.u32(&head[4..8]), false, 8));
    }
    let vr = &head[4..6];
    if has_long_length(vr) {
        let long = bytes.get(8..12).ok_or(ScanError::TruncatedHeader)?;
        Ok((tag, e.u32(long), vr == b"SQ", 12))
    } else {
        Ok((tag, u32::from(e.u16(&head[6..8])), false, 8))
    }
}

/// The value size of a fixed-size binary VR (US, UL, FL, FD, AT...), from the declared VR or,
/// in implicit VR, the dictionary. dicom-object reads such a value as whole values and goes
/// on from there, so a length of 6 for a UL left it out of step with the declared lengths and
/// reading an unchecked one (found by fuzzing: ~800 MB allocated for a 1.5 KB instance).
fn binary_value_size(tag: Tag, declared: Option<[u8; 2]>) -> Option<(String, usize)> {
    use dicom_core::VR;
    use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
    if tag.0 == 0xFFFE {
        return None;
    }
    let vr = match declared {
        Some(code) => VR::from_binary(code)?,
        None => match dicom_dictionary_std::StandardDataDictionary
            .by_tag(dicom_core::Tag(tag.0, tag.1))?
            .vr()
        {
            VirtualVr::Exact(vr) => vr,
            _ => return None,
        },
    };
    let size = match vr {
        VR::US | VR::SS => 2,
        VR::UL | VR::SL | VR::FL | VR::AT => 4,
        VR::FD | VR::UV | VR::SV => 8,
        _ => return None,
    };
    Some((vr.to_string().to_string(), size))
}

/// In implicit VR, whether a defined-length element is a sequence comes from the dictionary.
fn implicit_vr_is_sequence(tag: Tag) -> bool {
    use dicom_core::VR;
    use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
    dicom_dictionary_std::StandardDataDictionary
        .by_tag(dicom_core::Tag(tag.0, tag.1))
        .is_some_and(|entry| matches!(entry.vr(), VirtualVr::Exact(VR::SQ)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binary_value_of_a_partial_length_is_refused_before_dicom_object_reads_it() {
        // From the fuzzer: Implicit VR, a group length (UL) declaring 6 bytes; dicom-object read
        // 4, lost step with the declared lengths and allocated ~800 MB for the next "length".
        let input = include_bytes!("../../fuzz/corpus/scan/regression-ul-of-length-6");
        let outcome = check_nested_lengths(
            &input[2..],
            Encoding::of_transfer_syntax("1.2.840.10008.1.2").expect("ILE"),
        );
        assert!(
            matches!(
                outcome,
                Err(ScanError::PartialBinaryValue { length: 6, .. })
            ),
            "{outcome:?}"
        );
    }

    #[test]
    fn unknown_vr_codes_have_long_lengths_as_dicom_object_reads_them() {
        for vr in [b"OB", b"OW", b"SQ", b"UN", b"UT", b"UV"] {
            assert!(has_long_length(vr) && has_long_length_listed(vr));
        }
        for vr in [b"CS", b"UI", b"US", b"LO", b"DA"] {
            assert!(!has_long_length(vr) && !has_long_length_listed(vr));
        }
        assert!(has_long_length(b"T\xa5"), "an unknown code reads as UN");
    }

    const LE: Encoding = Encoding::EXPLICIT_VR_LITTLE_ENDIAN;

    fn short(tag: (u16, u16), vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&tag.0.to_le_bytes());
        out.extend_from_slice(&tag.1.to_le_bytes());
        out.extend_from_slice(vr);
        out.extend_from_slice(&(value.len() as u16).to_le_bytes());
        out.extend_from_slice(value);
        out
    }

    fn long(tag: (u16, u16), vr: &[u8; 2], length: u32, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&tag.0.to_le_bytes());
        out.extend_from_slice(&tag.1.to_le_bytes());
        out.extend_from_slice(vr);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&length.to_le_bytes());
        out.extend_from_slice(value);
        out
    }

    fn item(tag: Tag, length: u32) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&tag.0.to_le_bytes());
        out.extend_from_slice(&tag.1.to_le_bytes());
        out.extend_from_slice(&length.to_le_bytes());
        out
    }

    fn scan_in_chunks(bytes: &[u8], chunk: usize) -> Result<Vec<u8>, ScanError> {
        let mut scanner = DatasetScanner::new(LE);
        for piece in bytes.chunks(chunk) {
            scanner.feed(piece)?;
        }
        scanner.finish()
    }

    fn sample() -> Vec<u8> {
        let mut d = Vec::new();
        d.extend(short(
            (0x0008, 0x0016),
            b"UI",
            b"1.2.840.10008.5.1.4.1.1.2\0",
        ));
        d.extend(short((0x0008, 0x1030), b"LO", b"CT SIM"));
        // Procedure Code Sequence, undefined length, one undefined-length item.
        d.extend(long((0x0008, 0x1032), b"SQ", UNDEFINED_LENGTH, &[]));
        d.extend(item(ITEM, UNDEFINED_LENGTH));
        d.extend(short((0x0008, 0x0100), b"SH", b"RPID16"));
        d.extend(item(ITEM_DELIMITATION, 0));
        d.extend(item(SEQUENCE_DELIMITATION, 0));
        // A defined-length sequence with one defined-length item.
        let inner = short((0x0008, 0x1155), b"UI", b"1.2.3.4\0");
        let mut seq = item(ITEM, inner.len() as u32);
        seq.extend(&inner);
        d.extend(long((0x0008, 0x1140), b"SQ", seq.len() as u32, &seq));
        d.extend(short((0x0020, 0x000D), b"UI", b"1.2.3\0"));
        d
    }

    fn with_pixels(mut d: Vec<u8>, pixels: usize) -> Vec<u8> {
        d.extend(long(
            (0x7FE0, 0x0010),
            b"OW",
            pixels as u32,
            &vec![7u8; pixels],
        ));
        d
    }

    #[test]
    fn the_header_holds_the_small_elements_and_not_the_pixels() {
        let header_part = sample();
        let dataset = with_pixels(header_part.clone(), 4096);
        for chunk in [1, 3, 7, 64, 100_000] {
            let header = scan_in_chunks(&dataset, chunk).expect("scan");
            assert_eq!(header, header_part, "chunk size {chunk}");
        }
        check_nested_lengths(&header_part, LE).expect("nested lengths");
    }

    fn deflated(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut encoder =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(bytes).expect("deflate");
        encoder.finish().expect("deflate")
    }

    #[test]
    fn a_deflated_data_set_is_inflated_as_it_arrives_and_walked() {
        let header_part = sample();
        let dataset = with_pixels(header_part.clone(), 200_000);
        let raw = deflated(&dataset);
        for chunk in [1, 7, 1000, 100_000] {
            let mut scanner =
                DatasetScanner::for_transfer_syntax("1.2.840.10008.1.2.1.99").expect("known");
            for piece in raw.chunks(chunk) {
                scanner.feed(piece).expect("walk");
            }
            assert_eq!(
                scanner.finish().expect("finish"),
                header_part,
                "chunk {chunk}"
            );
        }
        // A stream cut short is refused, and so is one that is not deflate at all.
        let mut cut = DatasetScanner::for_transfer_syntax("1.2.840.10008.1.2.1.99").expect("known");
        cut.feed(&raw[..raw.len() / 2]).expect("first half");
        assert!(cut.finish().is_err());
        let mut garbage =
            DatasetScanner::for_transfer_syntax("1.2.840.10008.1.2.1.99").expect("known");
        let result = garbage
            .feed(&[0xFF; 64])
            .and_then(|()| garbage.finish().map(|_| ()));
        assert!(result.is_err());
    }

    #[test]
    fn a_declared_length_past_the_end_is_refused_without_allocating_it() {
        let mut d = short((0x0008, 0x0016), b"UI", b"1.2\0");
        d.extend(long((0x7FE0, 0x0010), b"OW", 0xFFFF_FFFE, &[1, 2, 3, 4]));
        let err = scan_in_chunks(&d, 5).expect_err("lying length");
        assert!(
            matches!(
                err,
                ScanError::LengthBeyondEnd {
                    tag: Tag(0x7FE0, 0x0010),
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn broken_structure_is_refused() {
        let cut = sample();
        assert_eq!(
            scan_in_chunks(&cut[..cut.len() - 3], 9),
            Err(ScanError::LengthBeyondEnd {
                tag: Tag(0x0020, 0x000D),
                declared: 6,
                remaining: 3
            })
        );
        let mut half_header = sample();
        half_header.extend_from_slice(&[0x08, 0x00, 0x30]);
        assert_eq!(
            scan_in_chunks(&half_header, 2),
            Err(ScanError::TruncatedHeader)
        );
        let mut open = long((0x0008, 0x1032), b"SQ", UNDEFINED_LENGTH, &[]);
        open.extend(item(ITEM, UNDEFINED_LENGTH));
        assert!(matches!(
            scan_in_chunks(&open, 4),
            Err(ScanError::Unterminated { .. })
        ));
        let stray = item(ITEM_DELIMITATION, 0);
        assert!(matches!(
            scan_in_chunks(&stray, 4),
            Err(ScanError::Unexpected { .. })
        ));
        let mut deep = Vec::new();
        for _ in 0..=MAX_DEPTH {
            deep.extend(long((0x0008, 0x1032), b"SQ", UNDEFINED_LENGTH, &[]));
            deep.extend(item(ITEM, UNDEFINED_LENGTH));
        }
        assert_eq!(scan_in_chunks(&deep, 64), Err(ScanError::TooDeep));
    }

    #[test]
    fn nested_lies_inside_a_small_top_level_sequence_are_caught_before_parsing() {
        // A 20-byte sequence whose item claims 4 GiB: fine for the streaming walk (it does not
        // look inside defined-length values), refused by the nested check.
        let mut seq = item(ITEM, 0xFFFF_FFF0);
        seq.extend(short((0x0008, 0x1155), b"UI", b"1.2\0"));
        let d = long((0x0008, 0x1140), b"SQ", seq.len() as u32, &seq);
        let header = scan_in_chunks(&d, 8).expect("top level is consistent");
        assert!(matches!(
            check_nested_lengths(&header, LE),
            Err(ScanError::LengthBeyondEnd { .. })
        ));
    }

    #[test]
    fn encapsulated_pixel_data_is_walked_to_its_delimiter() {
        let mut d = sample();
        d.extend(long((0x7FE0, 0x0010), b"OB", UNDEFINED_LENGTH, &[]));
        d.extend(item(ITEM, 0)); // basic offset table
        d.extend(item(ITEM, 6));
        d.extend([0xFF, 0xD8, 1, 2, 0xFF, 0xD9]);
        d.extend(item(SEQUENCE_DELIMITATION, 0));
        let header = scan_in_chunks(&d, 5).expect("scan");
        assert_eq!(header, sample());
    }

    #[test]
    fn implicit_vr_sequences_are_found_through_the_dictionary() {
        let e = Encoding::IMPLICIT_VR_LITTLE_ENDIAN;
        let element = |g: u16, el: u16, value: &[u8]| {
            let mut out = Vec::new();
            out.extend_from_slice(&g.to_le_bytes());
            out.extend_from_slice(&el.to_le_bytes());
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
            out.extend_from_slice(value);
            out
        };
        let mut seq = item(ITEM, 0x7FFF_FFFF);
        seq.extend(element(0x0008, 0x0100, b"RPID16"));
        let d = element(0x0008, 0x1032, &seq);
        let mut scanner = DatasetScanner::new(e);
        scanner.feed(&d).expect("feed");
        let header = scanner.finish().expect("finish");
        assert!(matches!(
            check_nested_lengths(&header, e),
            Err(ScanError::LengthBeyondEnd { .. })
        ));
    }
}
