//! Storage Commitment Push Model on the requester's association: the N-ACTION is recorded
//! and answered at once, and when the report can be made already (every instance judged) it
//! follows on the same association as an N-EVENT-REPORT. Its answer marks the request
//! reported; an association that ends before that leaves it to the
//! [`reporter`](crate::commitment::reporter), which uses a new association.

use std::time::Duration;

use super::Message;
use super::association::{AbortReason, Session, Transport};
use crate::commitment::{Request, decide};
use crate::dicom::dataset;
use crate::dicom::dimse::{self, Command, Response, Status, command_field};
use crate::dicom::sop_classes::{
    STORAGE_COMMITMENT_PUSH_MODEL, STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE,
};
use crate::error_chain;
use crate::store::commitment::NewCommitment;

/// A new request's report is left to this association for this long before the reporter
/// may take it (the association claims it within microseconds; this only closes the gap).
const GRACE: Duration = Duration::from_secs(1);

impl<S: Transport> Session<S> {
    pub(super) async fn storage_commitment(&mut self, message: Message) -> Result<(), AbortReason> {
        let command = &message.command;
        let answer = if message.abstract_syntax != STORAGE_COMMITMENT_PUSH_MODEL
            || command.requested_sop_class_uid.as_deref() != Some(STORAGE_COMMITMENT_PUSH_MODEL)
        {
            Err((
                Status::SOP_CLASS_NOT_SUPPORTED,
                "N-ACTION is answered for Storage Commitment Push Model only".to_string(),
            ))
        } else if command.requested_sop_instance_uid.as_deref()
            != Some(STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE)
        {
            Err((
                Status::NO_SUCH_SOP_INSTANCE,
                "Requested SOP Instance UID must be 1.2.840.10008.1.20.1.1".to_string(),
            ))
        } else if command.action_type_id != Some(1) {
            Err((
                Status::NO_SUCH_ACTION,
                "Action Type ID must be 1 (Request Storage Commitment)".to_string(),
            ))
        } else {
            match dataset::parse(&message.data, &message.transfer_syntax) {
                Err(e) => Err((Status::PROCESSING_FAILURE, error_chain(&e))),
                Ok(object) => Request::from_object(&object),
            }
        };
        let recorded = match answer {
            Err(refusal) => Err(refusal),
            Ok(request) => {
                let new = NewCommitment {
                    transaction_uid: request.transaction_uid.clone(),
                    calling_ae_title: self.origin.calling_ae_title.clone(),
                    peer_address: self.origin.peer.to_string(),
                    items: request.items.clone(),
                };
                match self.context.service.request_commitment(new, GRACE).await {
                    Ok(id) => {
                        self.context.claims.claim(id);
                        Ok((id, request))
                    }
                    Err(e) => Err((
                        Status::RESOURCE_LIMITATION,
                        format!("cannot record the request: {}", error_chain(&e)),
                    )),
                }
            }
        };
        let (status, comment) = match &recorded {
            Ok(_) => (Status::SUCCESS, None),
            Err((status, comment)) => (*status, Some(comment.as_str())),
        };
        match &recorded {
            Ok((_, request)) => tracing::info!(
                peer = %self.origin.peer,
                calling_ae_title = %self.origin.calling_ae_title,
                transaction_uid = %request.transaction_uid,
                instances = request.items.len(),
                "storage commitment requested"
            ),
            Err((status, comment)) => tracing::warn!(
                peer = %self.origin.peer,
                calling_ae_title = %self.origin.calling_ae_title,
                %status,
                reason = %comment,
                "storage commitment request refused"
            ),
        }
        let response = Response {
            command_field: command_field::N_ACTION_RSP,
            message_id_being_responded_to: command.message_id,
            affected_sop_class_uid: STORAGE_COMMITMENT_PUSH_MODEL,
            affected_sop_instance_uid: Some(STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE),
            status,
            error_comment: comment,
            type_id: Some(1),
            ..Default::default()
        };
        self.send_command(message.presentation_context_id, response.encode())
            .await?;
        if let Ok((id, _)) = recorded {
            self.report_here(id, &message).await?;
        }
        Ok(())
    }

    /// Sends the report on this association when it can be made now; otherwise leaves it to
    /// the reporter.
    async fn report_here(&mut self, id: i64, message: &Message) -> Result<(), AbortReason> {
        let rule = self.context.service.config().storage_commitment.clone();
        let report = self
            .context
            .reads
            .read(move |db| match db.pending_commitment(id)? {
                Some(request) => decide(db, &request, &rule),
                None => Ok(None),
            })
            .await;
        let report = match report {
            Ok(Some(report)) => report,
            Ok(None) => {
                self.context.claims.release(id);
                return Ok(());
            }
            Err(e) => {
                tracing::warn!(cause = %error_chain(&e), "storage commitment report deferred");
                self.context.claims.release(id);
                return Ok(());
            }
        };
        let ae_title = self.context.service.config().listener.ae_title.clone();
        let data = match dataset::encode(
            &report.to_object(ae_title.as_str()),
            &message.transfer_syntax,
        ) {
            Ok(data) => data,
            Err(e) => {
                tracing::warn!(cause = %error_chain(&e), "storage commitment report deferred");
                self.context.claims.release(id);
                return Ok(());
            }
        };
        let message_id = self.take_message_id();
        let command = dimse::encode_event_report_request(
            message_id,
            STORAGE_COMMITMENT_PUSH_MODEL,
            STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE,
            report.event_type_id(),
        );
        self.awaiting_reports.push((message_id, id));
        let pc = message.presentation_context_id;
        self.send_command(pc, command).await?;
        self.send_data_set(pc, &data).await?;
        tracing::info!(
            transaction_uid = %report.transaction_uid,
            committed = report.committed.len(),
            failed = report.failed.len(),
            "storage commitment report sent on the requester's association"
        );
        Ok(())
    }

    /// An N-EVENT-REPORT-RSP: the request is reported when the answer is success.
    pub(super) async fn report_answered(&mut self, command: &Command) {
        let Some(position) = self
            .awaiting_reports
            .iter()
            .position(|(message_id, _)| Some(*message_id) == command.message_id_being_responded_to)
        else {
            tracing::warn!(peer = %self.origin.peer, "N-EVENT-REPORT-RSP to no report sent here");
            return;
        };
        let (_, id) = self.awaiting_reports.remove(position);
        let status = command.status.unwrap_or(Status::PROCESSING_FAILURE);
        if status.is_success() {
            tracing::info!(peer = %self.origin.peer, "storage commitment reported on the requester's association");
            if let Err(e) = self.context.service.commitment_reported(id).await {
                tracing::warn!(cause = %error_chain(&e), "report answered, but not recorded: it will be sent again");
            }
        } else {
            tracing::warn!(peer = %self.origin.peer, %status, "storage commitment report refused by the requester; it will be sent again");
        }
        self.context.claims.release(id);
    }
}
