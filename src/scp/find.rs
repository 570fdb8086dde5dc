//! C-FIND SCP, Patient Root and Study Root: the identifier is matched against the index
//! (never a file), each match answered with a pending response and its identifier, then a
//! final status. A C-CANCEL between matches ends it with Cancel (0xFE00).

use super::Message;
use super::association::{AbortReason, Session, Transport};
use crate::dicom::dataset;
use crate::dicom::dimse::{Response, Status, command_field};
use crate::dicom::sop_classes::{PATIENT_ROOT_FIND, STUDY_ROOT_FIND};
use crate::error_chain;

/// Pending with a warning: some optional keys are not matched on (PS3.4 C.4.1.1.4).
const PENDING_UNSUPPORTED_KEYS: Status = Status(0xFF01);

impl<S: Transport> Session<S> {
    pub(super) async fn find(&mut self, message: Message) -> Result<(), AbortReason> {
        let message_id = message.command.message_id;
        let pc = message.presentation_context_id;
        let sop_class = message.abstract_syntax.clone();
        let outcome = self.find_matches(&message).await;
        let (matches, truncated, unsupported) = match outcome {
            Ok(found) => found,
            Err((status, comment)) => {
                tracing::warn!(peer = %self.origin.peer, calling_ae_title = %self.origin.calling_ae_title, %status, reason = %comment, "C-FIND refused");
                return self
                    .find_response(pc, message_id, &sop_class, status, Some(&comment), false)
                    .await;
            }
        };
        let pending = if unsupported {
            PENDING_UNSUPPORTED_KEYS
        } else {
            Status::PENDING
        };
        let mut sent = 0usize;
        for identifier in &matches {
            if self.cancel_requested(message_id).await? {
                tracing::info!(peer = %self.origin.peer, sent, "C-FIND cancelled");
                return self
                    .find_response(pc, message_id, &sop_class, Status::CANCEL, None, false)
                    .await;
            }
            self.find_response(pc, message_id, &sop_class, pending, None, true)
                .await?;
            self.send_data_set(pc, identifier).await?;
            sent += 1;
        }
        if truncated {
            let comment = format!("more than {} matches: narrow the query", matches.len());
            tracing::warn!(peer = %self.origin.peer, sent, "C-FIND stopped: {comment}");
            return self
                .find_response(
                    pc,
                    message_id,
                    &sop_class,
                    Status::OUT_OF_RESOURCES,
                    Some(&comment),
                    false,
                )
                .await;
        }
        self.find_response(pc, message_id, &sop_class, Status::SUCCESS, None, false)
            .await
    }

    /// The encoded identifiers of the matches (at most `max_matches`), whether more matched,
    /// and whether some keys are not matched on.
    async fn find_matches(
        &mut self,
        message: &Message,
    ) -> Result<(Vec<Vec<u8>>, bool, bool), (Status, String)> {
        let query = message.query([PATIENT_ROOT_FIND, STUDY_ROOT_FIND], false)?;
        // What was asked: patient attributes (group 0010) only at debug, as everywhere.
        let asked = |redact: bool| -> String {
            query
                .keys
                .iter()
                .filter(|k| !k.value.is_empty())
                .map(|k| {
                    if redact && k.tag.group() == 0x0010 {
                        format!("{}=(given)", k.tag)
                    } else {
                        format!("{}={}", k.tag, k.value)
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        tracing::info!(
            peer = %self.origin.peer,
            calling_ae_title = %self.origin.calling_ae_title,
            model = ?query.model,
            level = ?query.level,
            keys = %asked(true),
            "C-FIND"
        );
        tracing::debug!(keys = %asked(false), "C-FIND keys");
        let config = self.context.service.config();
        let max = config.query_retrieve.max_matches;
        let ae_title = config.listener.ae_title.as_str().to_string();
        let transfer_syntax = message.transfer_syntax.clone();
        self.context
            .reads
            .read(move |db| {
                let mut out = Vec::new();
                let mut truncated = false;
                let mut unsupported = false;
                let mut first = true;
                let mut failure = None;
                db.query_rows(query.level, &query.unique, |row| {
                    if first {
                        first = false;
                        unsupported = query.keys.iter().any(|k| {
                            let tag = (u32::from(k.tag.group()) << 16) | u32::from(k.tag.element());
                            k.tag != dicom_dictionary_std::tags::RETRIEVE_AE_TITLE
                                && !row.iter().any(|(t, _)| *t == tag)
                        });
                    }
                    if !query.matches(&row) {
                        return true;
                    }
                    if out.len() == max {
                        truncated = true;
                        return false;
                    }
                    match dataset::encode(&query.answer(&row, &ae_title), &transfer_syntax) {
                        Ok(bytes) => out.push(bytes),
                        Err(e) => {
                            failure = Some(error_chain(&e));
                            return false;
                        }
                    }
                    true
                })?;
                Ok(match failure {
                    Some(why) => Err(why),
                    None => Ok((out, truncated, unsupported)),
                })
            })
            .await
            .map_err(|e| (Status::UNABLE_TO_PROCESS, error_chain(&e)))?
            .map_err(|why| (Status::UNABLE_TO_PROCESS, why))
    }

    async fn find_response(
        &mut self,
        pc: u8,
        message_id: u16,
        sop_class: &str,
        status: Status,
        comment: Option<&str>,
        data_set: bool,
    ) -> Result<(), AbortReason> {
        let response = Response {
            command_field: command_field::C_FIND_RSP,
            message_id_being_responded_to: message_id,
            affected_sop_class_uid: sop_class,
            status,
            error_comment: comment,
            data_set,
            ..Default::default()
        };
        self.send_command(pc, response.encode()).await
    }
}
