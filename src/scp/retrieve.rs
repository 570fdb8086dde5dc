//! C-MOVE and C-GET SCP, Patient Root and Study Root. The identifier's unique keys name
//! what to send; the index lists those instances; each is one sub-operation, a C-STORE of
//! the stored bytes (to the move destination on an association of its own, or back on this
//! association for C-GET, where the requester took the SCP role). A pending response after
//! each sub-operation carries the counts; C-CANCEL stops before the next one. An instance
//! whose spool file retention removed is a failed sub-operation, said in the Error Comment.

use std::time::Instant;

use dicom_core::VR;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_ul::association::Association;

use super::Message;
use super::association::{AbortReason, Session, Transport};
use crate::config::{AeTitle, Config, DestinationConfig};
use crate::dicom::dataset;
use crate::dicom::dimse::{MoveOriginator, Response, Status, SubOperations, command_field};
use crate::dicom::sop_classes::{
    PATIENT_ROOT_GET, PATIENT_ROOT_MOVE, STUDY_ROOT_GET, STUDY_ROOT_MOVE,
};
use crate::error_chain;
use crate::forward::scu::{self, Outgoing, Payload, Scu};
use crate::store::query::RetrieveItem;

/// Sub-operation counts are 16-bit: one retrieve sends at most this many instances.
const MAX_RETRIEVE: usize = u16::MAX as usize;

/// Refused: out of resources, unable to calculate the number of matches.
const TOO_MANY_MATCHES: Status = Status(0xA701);

/// How one sub-operation ended.
enum SubOutcome {
    Completed,
    Warning,
    Failed(String),
}

/// Where the sub-operations go.
enum Target {
    Move(Box<Scu>),
    Get,
}

impl<S: Transport> Session<S> {
    pub(super) async fn retrieve(&mut self, message: Message) -> Result<(), AbortReason> {
        let is_get = message.command.command_field == command_field::C_GET_RQ;
        let response_field = if is_get {
            command_field::C_GET_RSP
        } else {
            command_field::C_MOVE_RSP
        };
        let operation = if is_get { "C-GET" } else { "C-MOVE" };
        let message_id = message.command.message_id;
        let pc = message.presentation_context_id;
        let sop_class = message.abstract_syntax.clone();
        let answer = |status: Status, counts: Option<SubOperations>, data_set: bool| Response {
            command_field: response_field,
            message_id_being_responded_to: message_id,
            affected_sop_class_uid: "",
            status,
            data_set,
            sub_operations: counts,
            ..Default::default()
        };
        let prepared = self.prepare_retrieve(&message, is_get).await;
        let (items, mut target) = match prepared {
            Ok(ready) => ready,
            Err((status, comment)) => {
                tracing::warn!(peer = %self.origin.peer, calling_ae_title = %self.origin.calling_ae_title, %status, reason = %comment, "{operation} refused");
                let response = Response {
                    affected_sop_class_uid: &sop_class,
                    error_comment: Some(&comment),
                    ..answer(status, None, false)
                };
                return self.send_command(pc, response.encode()).await;
            }
        };
        let started = Instant::now();
        let originator = MoveOriginator {
            ae_title: self.origin.calling_ae_title.clone(),
            message_id,
        };
        let storage_dir = self.context.service.config().storage.dir.clone();
        let mut counts = SubOperations {
            remaining: items.len() as u16,
            ..SubOperations::default()
        };
        let mut failed_uids = Vec::new();
        let (mut removed, mut held) = (0usize, 0usize);
        let mut first_failure: Option<String> = None;
        let mut cancelled = false;
        for (index, item) in items.iter().enumerate() {
            if cancelled || self.cancel_requested(message_id).await? {
                cancelled = true;
                break;
            }
            let outcome = if item.file_deleted {
                removed += 1;
                SubOutcome::Failed("spool file removed by retention".into())
            } else if item.held {
                held += 1;
                SubOutcome::Failed("held by the safety gate".into())
            } else {
                match &mut target {
                    Target::Move(scu) => move_one(scu, item, &originator).await,
                    Target::Get => {
                        self.get_one(item, &originator, &storage_dir, &mut cancelled)
                            .await?
                    }
                }
            };
            counts.remaining -= 1;
            match outcome {
                SubOutcome::Completed => counts.completed += 1,
                SubOutcome::Warning => counts.warning += 1,
                SubOutcome::Failed(why) => {
                    counts.failed += 1;
                    failed_uids.push(item.sop_instance_uid.clone());
                    tracing::debug!(sop_instance_uid = %item.sop_instance_uid, reason = %why, "{operation} sub-operation failed");
                    first_failure.get_or_insert(why);
                }
            }
            if index + 1 < items.len() {
                let response = Response {
                    affected_sop_class_uid: &sop_class,
                    ..answer(Status::PENDING, Some(counts), false)
                };
                self.send_command(pc, response.encode()).await?;
            }
        }
        if let Target::Move(scu) = &mut target {
            scu.release().await;
        }
        let status = if cancelled {
            Status::CANCEL
        } else if counts.failed > 0 || counts.warning > 0 {
            Status::SUB_OPERATIONS_FAILED
        } else {
            Status::SUCCESS
        };
        let comment = match (removed, held) {
            (0, 0) => first_failure.clone(),
            (removed, 0) => Some(format!(
                "{removed} instance(s) no longer held: retention removed the files"
            )),
            (0, held) => Some(format!(
                "{held} instance(s) held by the safety gate (an admin releases or rejects them)"
            )),
            (removed, held) => Some(format!(
                "{removed} instance(s) removed by retention, {held} held by the safety gate"
            )),
        };
        tracing::info!(
            peer = %self.origin.peer,
            calling_ae_title = %self.origin.calling_ae_title,
            completed = counts.completed,
            failed = counts.failed,
            warning = counts.warning,
            not_sent = counts.remaining,
            cancelled,
            duration_ms = started.elapsed().as_millis() as u64,
            reason = first_failure.as_deref().unwrap_or(""),
            "{operation} ended"
        );
        // The Failed SOP Instance UID List goes with a final status other than success.
        let failed_list = if failed_uids.is_empty() {
            None
        } else {
            let object = InMemDicomObject::from_element_iter([dataset::element(
                tags::FAILED_SOP_INSTANCE_UID_LIST,
                VR::UI,
                &failed_uids.join("\\"),
            )]);
            dataset::encode(&object, &message.transfer_syntax).ok()
        };
        let response = Response {
            affected_sop_class_uid: &sop_class,
            error_comment: comment.as_deref(),
            ..answer(status, Some(counts), failed_list.is_some())
        };
        self.send_command(pc, response.encode()).await?;
        if let Some(data) = failed_list {
            self.send_data_set(pc, &data).await?;
        }
        Ok(())
    }

    /// Reads the identifier, finds the move destination and lists the instances to send.
    async fn prepare_retrieve(
        &mut self,
        message: &Message,
        is_get: bool,
    ) -> Result<(Vec<RetrieveItem>, Target), (Status, String)> {
        let classes = if is_get {
            [PATIENT_ROOT_GET, STUDY_ROOT_GET]
        } else {
            [PATIENT_ROOT_MOVE, STUDY_ROOT_MOVE]
        };
        let query = message.query(classes, true)?;
        let config = self.context.service.config();
        let target = if is_get {
            Target::Get
        } else {
            let named = message.command.move_destination.clone().unwrap_or_default();
            let destination = move_destination(&config, &named).ok_or_else(|| {
                (
                    Status::MOVE_DESTINATION_UNKNOWN,
                    format!("move destination {named:?} is not configured"),
                )
            })?;
            let tls = scu::ClientTls::for_destination(&destination).map_err(|e| {
                (
                    Status::UNABLE_TO_PROCESS,
                    format!("TLS towards {}: {}", destination.name, error_chain(&e)),
                )
            })?;
            Target::Move(Box::new(Scu::new(
                destination,
                config.forward.clone(),
                config.storage.dir.clone(),
                tls,
            )))
        };
        let unique = query.unique.clone();
        let items = self
            .context
            .reads
            .read(move |db| db.retrieve_items(&unique, MAX_RETRIEVE + 1))
            .await
            .map_err(|e| (Status::UNABLE_TO_PROCESS, error_chain(&e)))?;
        if items.len() > MAX_RETRIEVE {
            return Err((
                TOO_MANY_MATCHES,
                format!("more than {MAX_RETRIEVE} instances: retrieve less at once"),
            ));
        }
        tracing::info!(
            peer = %self.origin.peer,
            calling_ae_title = %self.origin.calling_ae_title,
            operation = if is_get { "C-GET" } else { "C-MOVE" },
            destination = message.command.move_destination.as_deref().unwrap_or(""),
            level = ?query.level,
            patient_id_given = query.unique.patient_id.is_some(),
            study_instance_uids = ?query.unique.study_instance_uids,
            series_instance_uids = ?query.unique.series_instance_uids,
            sop_instance_uids = query.unique.sop_instance_uids.as_ref().map_or(0, Vec::len),
            instances = items.len(),
            "retrieve requested"
        );
        Ok((items, target))
    }

    /// One C-GET sub-operation: a C-STORE back to the requester on this association.
    async fn get_one(
        &mut self,
        item: &RetrieveItem,
        originator: &MoveOriginator,
        storage_dir: &std::path::Path,
        cancelled: &mut bool,
    ) -> Result<SubOutcome, AbortReason> {
        let outgoing = outgoing(item);
        // The contexts of this class on which the requester took the SCP role.
        let roles = self.association.requestor_roles_for(&item.sop_class_uid);
        let accepted = if roles.scp {
            scu::accepted_contexts(self.association.presentation_contexts())
        } else {
            Vec::new()
        };
        let Some((pc, ts)) = scu::context_for(&accepted, outgoing) else {
            return Ok(SubOutcome::Failed(format!(
                "no context for {} with the requester as SCP",
                item.sop_class_uid
            )));
        };
        let path = storage_dir.join(&item.file_path);
        let payload = match Payload::prepare(&path, &item.transfer_syntax_uid, &ts).await {
            Ok(payload) => payload,
            Err(e) => return Ok(SubOutcome::Failed(error_chain(&e))),
        };
        let store_id = self.take_message_id();
        let own = self.context.service.config().listener.max_pdu_length;
        scu::send_store_request(
            &mut self.association,
            pc,
            store_id,
            outgoing,
            Some(originator),
            &path,
            payload,
            own,
        )
        .await
        .map_err(|e| AbortReason::SendData(error_chain(&e)))?;
        let response = self
            .next_command_during(originator.message_id, cancelled)
            .await?;
        if response.command_field != command_field::C_STORE_RSP
            || response.message_id_being_responded_to != Some(store_id)
        {
            return Err(AbortReason::SecondOperation);
        }
        let status = response.status.unwrap_or(Status::PROCESSING_FAILURE);
        Ok(if status.is_success() {
            SubOutcome::Completed
        } else if status.0 & 0xF000 == 0xB000 {
            SubOutcome::Warning
        } else {
            SubOutcome::Failed(format!("the requester answered {status}"))
        })
    }
}

/// One C-MOVE sub-operation: a C-STORE to the move destination.
async fn move_one(scu: &mut Scu, item: &RetrieveItem, originator: &MoveOriginator) -> SubOutcome {
    match scu.send(outgoing(item), Some(originator)).await {
        Ok(delivered) if delivered.status.is_success() => SubOutcome::Completed,
        Ok(_) => SubOutcome::Warning,
        Err(e) => {
            if e.breaks_association() {
                scu.abort().await;
            }
            SubOutcome::Failed(error_chain(&e))
        }
    }
}

fn outgoing(item: &RetrieveItem) -> Outgoing<'_> {
    Outgoing {
        sop_class_uid: &item.sop_class_uid,
        sop_instance_uid: &item.sop_instance_uid,
        transfer_syntax_uid: &item.transfer_syntax_uid,
        file_path: &item.file_path,
    }
}

/// A move destination by AE title: a `[[destinations]]` entry, or a
/// `[[query_retrieve.move_destinations]]` one.
fn move_destination(config: &Config, ae_title: &str) -> Option<DestinationConfig> {
    let ae = AeTitle::parse(ae_title).ok()?;
    if let Some(destination) = config.destinations.iter().find(|d| d.ae_title == ae) {
        return Some(destination.clone());
    }
    config
        .query_retrieve
        .move_destinations
        .iter()
        .find(|m| m.ae_title == ae)
        .map(|m| DestinationConfig {
            name: format!("move:{}", m.ae_title),
            ae_title: m.ae_title.clone(),
            address: m.address.clone(),
            calling_ae_title: config.listener.ae_title.clone(),
            sop_classes: Vec::new(),
            modalities: Vec::new(),
            from_calling_ae_titles: Vec::new(),
            tls: None,
            hold_on: Vec::new(),
            forward_when: crate::config::ForwardWhen::Received,
        })
}
