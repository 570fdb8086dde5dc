//! DIMSE command sets (PS3.7 section 9 and annex E): decoding requests, encoding responses,
//! and the status codes simgate answers with. Command sets are always Implicit VR Little
//! Endian group 0000 elements, small enough to handle by hand with strict length checks.

use std::fmt;

use super::uid::uid_text;

/// Command Field values (0000,0100) simgate handles.
pub mod command_field {
    pub const C_STORE_RQ: u16 = 0x0001;
    pub const C_STORE_RSP: u16 = 0x8001;
    pub const C_GET_RQ: u16 = 0x0010;
    pub const C_GET_RSP: u16 = 0x8010;
    pub const C_FIND_RQ: u16 = 0x0020;
    pub const C_FIND_RSP: u16 = 0x8020;
    pub const C_MOVE_RQ: u16 = 0x0021;
    pub const C_MOVE_RSP: u16 = 0x8021;
    pub const C_ECHO_RQ: u16 = 0x0030;
    pub const C_ECHO_RSP: u16 = 0x8030;
    pub const N_EVENT_REPORT_RQ: u16 = 0x0100;
    pub const N_EVENT_REPORT_RSP: u16 = 0x8100;
    pub const N_ACTION_RQ: u16 = 0x0130;
    pub const N_ACTION_RSP: u16 = 0x8130;
    pub const C_CANCEL_RQ: u16 = 0x0FFF;

    /// Responses have the high bit set.
    pub fn is_response(field: u16) -> bool {
        field & 0x8000 != 0
    }
}

/// (0000,0800) value simgate sends when a data set follows (PS3.7: anything but 0x0101).
pub const DATA_SET_PRESENT: u16 = 0x0102;

/// (0000,0800) value meaning "no data set follows".
pub const NO_DATA_SET: u16 = 0x0101;

/// DIMSE status codes (PS3.7 annex C, PS3.4 B.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u16);

impl Status {
    pub const SUCCESS: Status = Status(0x0000);
    /// Pending: a match or a sub-operation follows (C-FIND, C-MOVE, C-GET).
    pub const PENDING: Status = Status(0xFF00);
    /// Cancelled by C-CANCEL.
    pub const CANCEL: Status = Status(0xFE00);
    /// Warning: sub-operations complete, one or more failed (C-MOVE, C-GET).
    pub const SUB_OPERATIONS_FAILED: Status = Status(0xB000);
    /// Failed: unable to process (N-ACTION processing failure; C-FIND/MOVE/GET 0xC0xx).
    pub const PROCESSING_FAILURE: Status = Status(0x0110);
    /// N-ACTION: no such action type.
    pub const NO_SUCH_ACTION: Status = Status(0x0123);
    /// N-ACTION: the Requested SOP Instance is not the one the SOP class knows.
    pub const NO_SUCH_SOP_INSTANCE: Status = Status(0x0112);
    /// N-ACTION: a required attribute is missing.
    pub const MISSING_ATTRIBUTE: Status = Status(0x0120);
    /// N-services: out of resources (the database cannot be written now).
    pub const RESOURCE_LIMITATION: Status = Status(0x0213);
    /// C-MOVE: the Move Destination is not a known AE.
    pub const MOVE_DESTINATION_UNKNOWN: Status = Status(0xA801);
    /// C-FIND/C-MOVE/C-GET: identifier does not match SOP class.
    pub const IDENTIFIER_DOES_NOT_MATCH: Status = Status(0xA900);
    /// C-FIND/C-MOVE/C-GET: unable to process.
    pub const UNABLE_TO_PROCESS: Status = Status(0xC000);
    /// Refused: SOP class not supported.
    pub const SOP_CLASS_NOT_SUPPORTED: Status = Status(0x0122);
    /// Refused: out of resources (storage or database failure, disk below reserve).
    pub const OUT_OF_RESOURCES: Status = Status(0xA700);
    /// Error: data set does not match SOP class.
    pub const DATA_SET_DOES_NOT_MATCH_SOP_CLASS: Status = Status(0xA900);
    /// Error: cannot understand (unparseable data set, missing identifying attributes).
    pub const CANNOT_UNDERSTAND: Status = Status(0xC000);
    /// Error: cannot understand; the data set's identifiers are invalid.
    pub const INVALID_IDENTIFIERS: Status = Status(0xC001);

    pub fn is_success(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:04X}", self.0)
    }
}

/// What went wrong reading a command set.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CommandError {
    #[error("command set truncated at byte {offset}")]
    Truncated { offset: usize },
    #[error(
        "command element ({group:04X},{element:04X}) declares {declared} bytes, {remaining} remain"
    )]
    LengthBeyondEnd {
        group: u16,
        element: u16,
        declared: u32,
        remaining: usize,
    },
    #[error("command element ({group:04X},{element:04X}) is outside group 0000")]
    NotCommandGroup { group: u16, element: u16 },
    #[error("command set lacks {0}")]
    Missing(&'static str),
}

/// The fields of a command set that simgate uses: requests (C-ECHO, C-STORE, C-FIND, C-MOVE,
/// C-GET, C-CANCEL, N-ACTION) and the responses it waits for on its own server associations
/// (N-EVENT-REPORT-RSP, C-STORE-RSP of a C-GET sub-operation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Command {
    pub command_field: u16,
    /// Message ID (0000,0110); 0 on a response.
    pub message_id: u16,
    pub affected_sop_class_uid: Option<String>,
    pub affected_sop_instance_uid: Option<String>,
    /// Requested SOP Class UID (0000,0003) and Instance UID (0000,1001): N-ACTION.
    pub requested_sop_class_uid: Option<String>,
    pub requested_sop_instance_uid: Option<String>,
    /// Action Type ID (0000,1008): N-ACTION.
    pub action_type_id: Option<u16>,
    /// Move Destination (0000,0600): C-MOVE.
    pub move_destination: Option<String>,
    /// Message ID Being Responded To (0000,0120): C-CANCEL and responses.
    pub message_id_being_responded_to: Option<u16>,
    /// Status (0000,0900): responses.
    pub status: Option<Status>,
    pub command_data_set_type: u16,
}

impl Command {
    pub fn has_data_set(&self) -> bool {
        self.command_data_set_type != NO_DATA_SET
    }

    /// Decodes an Implicit VR Little Endian command set, refusing any element whose declared
    /// length runs past the end of what was received.
    pub fn decode(bytes: &[u8]) -> Result<Command, CommandError> {
        let mut command = Command {
            command_data_set_type: NO_DATA_SET,
            ..Command::default()
        };
        let mut seen_field = false;
        let mut seen_message_id = false;
        for (element, value) in elements(bytes)? {
            match element {
                0x0002 => command.affected_sop_class_uid = Some(uid_text(value)),
                0x0003 => command.requested_sop_class_uid = Some(uid_text(value)),
                0x0120 => command.message_id_being_responded_to = read_us(value),
                0x0600 => {
                    command.move_destination =
                        Some(String::from_utf8_lossy(value).trim().to_string())
                }
                0x0900 => command.status = read_us(value).map(Status),
                0x1001 => command.requested_sop_instance_uid = Some(uid_text(value)),
                0x1008 => command.action_type_id = read_us(value),
                0x0100 => {
                    command.command_field =
                        read_us(value).ok_or(CommandError::Missing("a valid Command Field"))?;
                    seen_field = true;
                }
                0x0110 => {
                    command.message_id =
                        read_us(value).ok_or(CommandError::Missing("a valid Message ID"))?;
                    seen_message_id = true;
                }
                0x0800 => {
                    command.command_data_set_type = read_us(value)
                        .ok_or(CommandError::Missing("a valid Command Data Set Type"))?;
                }
                0x1000 => command.affected_sop_instance_uid = Some(uid_text(value)),
                _ => {}
            }
        }
        if !seen_field {
            return Err(CommandError::Missing("Command Field (0000,0100)"));
        }
        if command_field::is_response(command.command_field) {
            if command.message_id_being_responded_to.is_none() || command.status.is_none() {
                return Err(CommandError::Missing(
                    "Message ID Being Responded To and Status",
                ));
            }
        } else if command.command_field == command_field::C_CANCEL_RQ {
            if command.message_id_being_responded_to.is_none() {
                return Err(CommandError::Missing(
                    "Message ID Being Responded To (0000,0120)",
                ));
            }
        } else if !seen_message_id {
            return Err(CommandError::Missing("Message ID (0000,0110)"));
        }
        Ok(command)
    }
}

/// Splits an Implicit VR Little Endian command set into (element, value) pairs of group 0000,
/// refusing any element whose declared length runs past the end of what was received.
fn elements(bytes: &[u8]) -> Result<Vec<(u16, &[u8])>, CommandError> {
    let mut out = Vec::with_capacity(12);
    let mut offset = 0usize;
    while offset < bytes.len() {
        let header = bytes
            .get(offset..offset + 8)
            .ok_or(CommandError::Truncated { offset })?;
        let group = u16::from_le_bytes([header[0], header[1]]);
        let element = u16::from_le_bytes([header[2], header[3]]);
        let declared = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        offset += 8;
        let remaining = bytes.len() - offset;
        if declared as usize > remaining {
            return Err(CommandError::LengthBeyondEnd {
                group,
                element,
                declared,
                remaining,
            });
        }
        if group != 0x0000 {
            return Err(CommandError::NotCommandGroup { group, element });
        }
        out.push((element, &bytes[offset..offset + declared as usize]));
        offset += declared as usize;
    }
    Ok(out)
}

fn read_us(value: &[u8]) -> Option<u16> {
    (value.len() == 2).then(|| u16::from_le_bytes([value[0], value[1]]))
}

/// Who asked for a C-STORE sub-operation: the C-MOVE or C-GET requester's AE title and
/// message ID, sent as Move Originator (0000,1030)/(0000,1031).
#[derive(Debug, Clone)]
pub struct MoveOriginator {
    pub ae_title: String,
    pub message_id: u16,
}

/// A C-STORE-RQ command set, as the forwarder (or a C-MOVE/C-GET sub-operation) sends it.
pub fn encode_store_request(
    message_id: u16,
    sop_class_uid: &str,
    sop_instance_uid: &str,
    originator: Option<&MoveOriginator>,
) -> Vec<u8> {
    let mut body = Vec::with_capacity(200);
    put_element(&mut body, 0x0002, &even_uid(sop_class_uid));
    put_element(&mut body, 0x0100, &command_field::C_STORE_RQ.to_le_bytes());
    put_element(&mut body, 0x0110, &message_id.to_le_bytes());
    put_element(&mut body, 0x0700, &0u16.to_le_bytes()); // priority: medium
    put_element(&mut body, 0x0800, &0u16.to_le_bytes()); // a data set follows
    put_element(&mut body, 0x1000, &even_uid(sop_instance_uid));
    if let Some(originator) = originator {
        put_element(&mut body, 0x1030, &even_text(&originator.ae_title, 16));
        put_element(&mut body, 0x1031, &originator.message_id.to_le_bytes());
    }
    with_group_length(body)
}

/// An N-EVENT-REPORT-RQ command set (Storage Commitment's report); its data set follows.
pub fn encode_event_report_request(
    message_id: u16,
    sop_class_uid: &str,
    sop_instance_uid: &str,
    event_type_id: u16,
) -> Vec<u8> {
    let mut body = Vec::with_capacity(160);
    put_element(&mut body, 0x0002, &even_uid(sop_class_uid));
    put_element(
        &mut body,
        0x0100,
        &command_field::N_EVENT_REPORT_RQ.to_le_bytes(),
    );
    put_element(&mut body, 0x0110, &message_id.to_le_bytes());
    put_element(&mut body, 0x0800, &DATA_SET_PRESENT.to_le_bytes());
    put_element(&mut body, 0x1000, &even_uid(sop_instance_uid));
    put_element(&mut body, 0x1002, &event_type_id.to_le_bytes());
    with_group_length(body)
}

fn with_group_length(body: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 12);
    put_element(&mut out, 0x0000, &(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// A C-ECHO-RQ command set (Verification), as the forwarder's probe sends it.
pub fn encode_echo_request(message_id: u16) -> Vec<u8> {
    let mut body = Vec::with_capacity(64);
    put_element(
        &mut body,
        0x0002,
        &even_uid(super::sop_classes::VERIFICATION),
    );
    put_element(&mut body, 0x0100, &command_field::C_ECHO_RQ.to_le_bytes());
    put_element(&mut body, 0x0110, &message_id.to_le_bytes());
    put_element(&mut body, 0x0800, &NO_DATA_SET.to_le_bytes());
    let mut out = Vec::with_capacity(body.len() + 12);
    put_element(&mut out, 0x0000, &(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// The fields of a response command set the forwarder checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseFields {
    pub command_field: u16,
    pub message_id_being_responded_to: u16,
    pub status: Status,
    pub error_comment: Option<String>,
}

impl ResponseFields {
    /// Decodes a response command set with the same length checks as requests; a response
    /// lacking its command field, message ID or status is refused.
    pub fn decode(bytes: &[u8]) -> Result<ResponseFields, CommandError> {
        let mut command_field = None;
        let mut responded_to = None;
        let mut status = None;
        let mut error_comment = None;
        for (element, value) in elements(bytes)? {
            match element {
                0x0100 => command_field = read_us(value),
                0x0120 => responded_to = read_us(value),
                0x0900 => status = read_us(value),
                0x0902 => error_comment = Some(String::from_utf8_lossy(value).trim().to_string()),
                _ => {}
            }
        }
        Ok(ResponseFields {
            command_field: command_field
                .ok_or(CommandError::Missing("Command Field (0000,0100)"))?,
            message_id_being_responded_to: responded_to.ok_or(CommandError::Missing(
                "Message ID Being Responded To (0000,0120)",
            ))?,
            status: Status(status.ok_or(CommandError::Missing("Status (0000,0900)"))?),
            error_comment,
        })
    }
}

/// Numbers of Remaining, Completed, Failed and Warning Sub-operations (0000,1020)-(0000,1023)
/// of a C-MOVE or C-GET response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubOperations {
    pub remaining: u16,
    pub completed: u16,
    pub failed: u16,
    pub warning: u16,
}

/// A response command set: C-STORE, C-ECHO, C-FIND, C-MOVE, C-GET, N-ACTION or
/// N-EVENT-REPORT.
#[derive(Debug, Clone, Default)]
pub struct Response<'a> {
    pub command_field: u16,
    pub message_id_being_responded_to: u16,
    pub affected_sop_class_uid: &'a str,
    pub affected_sop_instance_uid: Option<&'a str>,
    pub status: Status,
    /// Error Comment (0000,0902), LO: at most 64 characters, sent only on failures.
    pub error_comment: Option<&'a str>,
    /// A data set follows (a C-FIND match, a C-MOVE/C-GET failed-instance list).
    pub data_set: bool,
    /// Action Type ID (0000,1008) of an N-ACTION-RSP, or Event Type ID (0000,1002) of an
    /// N-EVENT-REPORT-RSP.
    pub type_id: Option<u16>,
    pub sub_operations: Option<SubOperations>,
}

impl Default for Status {
    fn default() -> Status {
        Status::SUCCESS
    }
}

impl Response<'_> {
    /// Encodes the command set in Implicit VR Little Endian with its group length first.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(160);
        put_element(&mut body, 0x0002, &even_uid(self.affected_sop_class_uid));
        put_element(&mut body, 0x0100, &self.command_field.to_le_bytes());
        put_element(
            &mut body,
            0x0120,
            &self.message_id_being_responded_to.to_le_bytes(),
        );
        let data_set_type = if self.data_set {
            DATA_SET_PRESENT
        } else {
            NO_DATA_SET
        };
        put_element(&mut body, 0x0800, &data_set_type.to_le_bytes());
        put_element(&mut body, 0x0900, &self.status.0.to_le_bytes());
        if let Some(comment) = self.error_comment.filter(|_| !self.status.is_success()) {
            put_element(&mut body, 0x0902, &even_text(comment, 64));
        }
        if let Some(uid) = self.affected_sop_instance_uid {
            put_element(&mut body, 0x1000, &even_uid(uid));
        }
        if let Some(type_id) = self.type_id {
            let element = if self.command_field == command_field::N_EVENT_REPORT_RSP {
                0x1002
            } else {
                0x1008
            };
            put_element(&mut body, element, &type_id.to_le_bytes());
        }
        if let Some(counts) = self.sub_operations {
            // Remaining is sent only while sub-operations are pending (PS3.4 C.4.2.1.6).
            if self.status == Status::PENDING || self.status == Status::CANCEL {
                put_element(&mut body, 0x1020, &counts.remaining.to_le_bytes());
            }
            put_element(&mut body, 0x1021, &counts.completed.to_le_bytes());
            put_element(&mut body, 0x1022, &counts.failed.to_le_bytes());
            put_element(&mut body, 0x1023, &counts.warning.to_le_bytes());
        }
        with_group_length(body)
    }
}

fn put_element(out: &mut Vec<u8>, element: u16, value: &[u8]) {
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&element.to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
}

fn even_uid(uid: &str) -> Vec<u8> {
    let mut bytes = uid.as_bytes().to_vec();
    if bytes.len() % 2 == 1 {
        bytes.push(0);
    }
    bytes
}

/// LO text: default repertoire only (error comments are ours, but may quote peer input),
/// no backslash, cut to `max` characters, padded with a space to even length.
fn even_text(text: &str, max: usize) -> Vec<u8> {
    let mut bytes: Vec<u8> = text
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '\\' || c == ' ' {
                c as u8
            } else {
                b'?'
            }
        })
        .take(max)
        .collect();
    if bytes.len() % 2 == 1 {
        bytes.push(b' ');
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_dictionary_std::tags;
    use dicom_object::InMemDicomObject;

    fn store_rq(message_id: u16) -> Vec<u8> {
        let mut body = Vec::new();
        put_element(&mut body, 0x0002, &even_uid("1.2.840.10008.5.1.4.1.1.2"));
        put_element(&mut body, 0x0100, &command_field::C_STORE_RQ.to_le_bytes());
        put_element(&mut body, 0x0110, &message_id.to_le_bytes());
        put_element(&mut body, 0x0700, &0u16.to_le_bytes());
        put_element(&mut body, 0x0800, &0u16.to_le_bytes());
        put_element(&mut body, 0x1000, &even_uid("1.2.3.4.5"));
        let mut out = Vec::new();
        put_element(&mut out, 0x0000, &(body.len() as u32).to_le_bytes());
        out.extend(body);
        out
    }

    #[test]
    fn a_store_request_decodes() {
        let command = Command::decode(&store_rq(7)).expect("decode");
        assert_eq!(command.command_field, command_field::C_STORE_RQ);
        assert_eq!(command.message_id, 7);
        assert_eq!(
            command.affected_sop_class_uid.as_deref(),
            Some("1.2.840.10008.5.1.4.1.1.2")
        );
        assert_eq!(
            command.affected_sop_instance_uid.as_deref(),
            Some("1.2.3.4.5")
        );
        assert!(command.has_data_set());
    }

    #[test]
    fn lying_lengths_and_truncation_are_refused() {
        let mut bytes = store_rq(1);
        // The last element is (0000,1000) with its 10-byte value "1.2.3.4.5\0".
        let last = bytes.len() - 18;
        bytes[last + 4..last + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Command::decode(&bytes),
            Err(CommandError::LengthBeyondEnd { .. })
        ));
        let bytes = store_rq(1);
        assert!(matches!(
            Command::decode(&bytes[..bytes.len() - 3]),
            Err(CommandError::LengthBeyondEnd { .. })
        ));
        assert!(matches!(
            Command::decode(&bytes[..5]),
            Err(CommandError::Truncated { .. })
        ));
        assert_eq!(
            Command::decode(&[]),
            Err(CommandError::Missing("Command Field (0000,0100)"))
        );
    }

    #[test]
    fn responses_read_back_through_dicom_object() {
        let response = Response {
            command_field: command_field::C_STORE_RSP,
            message_id_being_responded_to: 513,
            affected_sop_class_uid: "1.2.840.10008.5.1.4.1.1.2",
            affected_sop_instance_uid: Some("1.2.3"),
            status: Status::OUT_OF_RESOURCES,
            error_comment: Some("disk below reserve\\ é"),
            ..Default::default()
        };
        let bytes = response.encode();
        let ts = dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN.erased();
        let object = InMemDicomObject::read_dataset_with_ts(&bytes[..], &ts).expect("parse");
        let us = |tag| {
            object
                .element(tag)
                .expect("element")
                .to_int::<u16>()
                .expect("us")
        };
        let text = |tag| {
            object
                .element(tag)
                .expect("element")
                .to_str()
                .expect("str")
                .trim_end_matches(['\0', ' '])
                .to_string()
        };
        assert_eq!(us(tags::COMMAND_FIELD), 0x8001);
        assert_eq!(us(tags::MESSAGE_ID_BEING_RESPONDED_TO), 513);
        assert_eq!(us(tags::STATUS), 0xA700);
        assert_eq!(us(tags::COMMAND_DATA_SET_TYPE), NO_DATA_SET);
        assert_eq!(text(tags::AFFECTED_SOP_INSTANCE_UID), "1.2.3");
        assert_eq!(text(tags::ERROR_COMMENT), "disk below reserve? ?");
        let group_length = object
            .element(tags::COMMAND_GROUP_LENGTH)
            .expect("gl")
            .to_int::<u32>()
            .expect("ul");
        assert_eq!(group_length as usize, bytes.len() - 12);
    }

    #[test]
    fn a_store_request_round_trips_and_responses_decode_defensively() {
        let request = Command::decode(&encode_store_request(
            77,
            "1.2.840.10008.5.1.4.1.1.2",
            "1.2.3",
            None,
        ))
        .expect("decode");
        assert_eq!(request.command_field, command_field::C_STORE_RQ);
        assert_eq!(request.message_id, 77);
        assert!(request.has_data_set());
        let response = Response {
            command_field: command_field::C_STORE_RSP,
            message_id_being_responded_to: 77,
            affected_sop_class_uid: "1.2.840.10008.5.1.4.1.1.2",
            affected_sop_instance_uid: Some("1.2.3"),
            status: Status(0xB007),
            error_comment: Some("coerced"),
            ..Default::default()
        }
        .encode();
        let fields = ResponseFields::decode(&response).expect("decode");
        assert_eq!(fields.status, Status(0xB007));
        assert_eq!(fields.message_id_being_responded_to, 77);
        assert_eq!(fields.error_comment.as_deref(), Some("coerced"));
        assert!(ResponseFields::decode(&response[..response.len() - 2]).is_err());
        assert!(
            ResponseFields::decode(&store_rq(1)).is_err(),
            "a request is not a response"
        );
    }

    #[test]
    fn an_echo_request_decodes_as_one_without_a_data_set() {
        let command = Command::decode(&encode_echo_request(7)).expect("decode");
        assert_eq!(command.command_field, command_field::C_ECHO_RQ);
        assert_eq!(command.message_id, 7);
        assert!(!command.has_data_set());
        assert_eq!(
            command.affected_sop_class_uid.as_deref(),
            Some(crate::dicom::sop_classes::VERIFICATION)
        );
    }
}
