//! Sends the Storage Commitment reports that no open association carried: on a new
//! association to the requester (its AE title looked up in the config), proposing the Push
//! Model SOP class with simgate in the SCP role (SCU/SCP role selection), retried with the
//! forwarder's backoff until the requester answers with success. Requests are read from the
//! index, so a report due before a restart is sent after it.

use std::sync::Arc;
use std::time::Duration;

use dicom_ul::association::client::ClientAssociationOptions;
use dicom_ul::pdu::PresentationContextResultReason;
use tokio_util::sync::CancellationToken;

use super::{Claims, Report, decide};
use crate::config::{AeTitle, Config};
use crate::dicom::dataset;
use crate::dicom::dimse::{self, command_field};
use crate::dicom::sop_classes::{
    STORAGE_COMMITMENT_PUSH_MODEL, STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE,
};
use crate::dicom::transfer_syntax::{EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN};
use crate::dicom::uid::trim_uid;
use crate::error_chain;
use crate::forward::policy::backoff;
use crate::forward::scu::{establish, receive_response, send_command, send_data_set};
use crate::service::Service;
use crate::store::ReadPool;

/// How often due requests are looked for.
const POLL: Duration = Duration::from_secs(1);
/// How long an undecided request (instances not yet delivered) waits before it is judged again.
const UNDECIDED_RECHECK: Duration = Duration::from_secs(2);
/// Requests handled per poll.
const BATCH: usize = 20;

pub struct Reporter {
    pub service: Service,
    pub reads: Arc<ReadPool>,
    pub claims: Arc<Claims>,
    pub shutdown: CancellationToken,
}

impl Reporter {
    pub async fn run(self) {
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                () = tokio::time::sleep(POLL) => {}
            }
            if let Err(e) = self.once().await {
                tracing::warn!(cause = %error_chain(&*e), "storage commitment reports: will try again");
            }
        }
    }

    async fn once(&self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let now = crate::clock::now_rfc3339();
        let due = self
            .reads
            .read(move |db| db.due_commitments(&now, BATCH))
            .await?;
        let config = self.service.config();
        for id in due {
            if self.shutdown.is_cancelled() {
                return Ok(());
            }
            if self.claims.is_claimed(id) {
                continue;
            }
            let rule = config.storage_commitment.clone();
            let Some((request, report)) = self
                .reads
                .read(move |db| {
                    let Some(request) = db.pending_commitment(id)? else {
                        return Ok(None);
                    };
                    let report = decide(db, &request, &rule)?;
                    Ok(Some((request, report)))
                })
                .await?
            else {
                continue;
            };
            let Some(report) = report else {
                self.service
                    .defer_commitment(
                        id,
                        "waiting for delivery to the destinations".into(),
                        UNDECIDED_RECHECK,
                        false,
                    )
                    .await?;
                continue;
            };
            match send_report(&config, &request.calling_ae_title, &report).await {
                Ok(()) => {
                    self.service.commitment_reported(id).await?;
                    tracing::info!(
                        transaction_uid = %report.transaction_uid,
                        requester = %request.calling_ae_title,
                        committed = report.committed.len(),
                        failed = report.failed.len(),
                        "storage commitment reported on a new association"
                    );
                }
                Err(why) => {
                    let attempts = u32::try_from(request.attempts).unwrap_or(u32::MAX);
                    let delay = backoff(&config.forward, attempts);
                    tracing::warn!(
                        transaction_uid = %report.transaction_uid,
                        requester = %request.calling_ae_title,
                        attempt = attempts + 1,
                        retry_in_s = delay.as_secs(),
                        cause = %why,
                        "storage commitment report not delivered"
                    );
                    self.service.defer_commitment(id, why, delay, true).await?;
                }
            }
        }
        Ok(())
    }
}

/// Opens an association to the requester, sends the N-EVENT-REPORT and waits for its answer.
async fn send_report(config: &Config, requester: &str, report: &Report) -> Result<(), String> {
    let ae = AeTitle::parse(requester).map_err(|e| e.to_string())?;
    let address = config.address_of(&ae).ok_or_else(|| {
        format!(
            "no address for {requester}: add it to [[storage_commitment.requesters]] (ae_title, address)"
        )
    })?;
    let f = &config.forward;
    let options = ClientAssociationOptions::new()
        .calling_ae_title(config.listener.ae_title.as_str().to_string())
        .called_ae_title(ae.as_str().to_string())
        .max_pdu_length(f.max_pdu_length)
        .connection_timeout(f.connect_timeout)
        .read_timeout(f.response_timeout)
        .write_timeout(f.response_timeout)
        .with_presentation_context(
            STORAGE_COMMITMENT_PUSH_MODEL.to_string(),
            vec![
                EXPLICIT_VR_LITTLE_ENDIAN.to_string(),
                IMPLICIT_VR_LITTLE_ENDIAN.to_string(),
            ],
        )
        // simgate, the association requestor, acts as the SCP of the SOP class (PS3.4 J.3.3).
        .with_role_selection(STORAGE_COMMITMENT_PUSH_MODEL, false, true);
    let mut association = establish(options, address, None)
        .await
        .map_err(|e| error_chain(&e))?;
    let Some((pc, ts)) = association
        .presentation_contexts()
        .iter()
        .find(|pc| pc.reason == PresentationContextResultReason::Acceptance)
        .map(|pc| (pc.id, trim_uid(&pc.transfer_syntax).to_string()))
    else {
        let _ = association.abort().await;
        return Err(format!(
            "{requester} accepted no presentation context for Storage Commitment"
        ));
    };
    let data = dataset::encode(&report.to_object(config.listener.ae_title.as_str()), &ts)
        .map_err(|e| error_chain(&e))?;
    let command = dimse::encode_event_report_request(
        1,
        STORAGE_COMMITMENT_PUSH_MODEL,
        STORAGE_COMMITMENT_PUSH_MODEL_INSTANCE,
        report.event_type_id(),
    );
    let sent = async {
        send_command(&mut association, pc, command).await?;
        send_data_set(&mut association, pc, &data, f.max_pdu_length).await
    }
    .await
    .map_err(|e| error_chain(&e));
    if let Err(e) = sent {
        let _ = association.abort().await;
        return Err(e);
    }
    let response = receive_response(&mut association, f.response_timeout)
        .await
        .map_err(|e| error_chain(&e));
    let _ = association.release().await;
    let response = response?;
    if response.command_field != command_field::N_EVENT_REPORT_RSP {
        return Err(format!(
            "answered 0x{:04X} instead of N-EVENT-REPORT-RSP",
            response.command_field
        ));
    }
    if !response.status.is_success() {
        return Err(format!(
            "N-EVENT-REPORT answered with status {}{}",
            response.status,
            response
                .error_comment
                .map(|c| format!(": {c}"))
                .unwrap_or_default()
        ));
    }
    Ok(())
}
