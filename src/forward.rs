//! Store-and-forward: one forwarder task per destination sends queued instances, in arrival
//! order, as a C-STORE SCU on dicom-ul. The stored data set bytes go out unchanged, chunked
//! into PDVs within the peer's maximum PDU; one association is reused for consecutive
//! instances and released after an idle period. Transient failures back the whole destination
//! off (so order within a series holds); permanent ones are retried up to `max_attempts` and
//! then dead-lettered with the last error kept.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use dicom_ul::Pdu;
use dicom_ul::association::client::ClientAssociationOptions;
use dicom_ul::association::{Association, AsyncClientAssociation};
use dicom_ul::pdu::{
    AssociationRJResult, PDataValue, PDataValueType, PresentationContextResultReason,
};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{DestinationConfig, ForwardConfig};
use crate::dimse::{self, ResponseFields, Status, command_field};
use crate::receive::{error_chain, now_rfc3339};
use crate::store::forward::{self as queue, Attempt, QueueItem};
use crate::store::{IndexHandle, StoreError};

const EXPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2.1";
const IMPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2";
/// Rows taken from the queue at a time.
const BATCH: usize = 32;
/// Even when nothing wakes it, a forwarder looks at its queue this often (CLI retries).
const POLL: Duration = Duration::from_secs(1);

/// Why one send failed.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("cannot connect to {address}")]
    Connect {
        address: String,
        #[source]
        source: Box<dicom_ul::association::Error>,
    },
    #[error("association rejected ({transient}): {detail}", transient = if *.transient { "transient" } else { "permanent" })]
    Rejected { transient: bool, detail: String },
    #[error(
        "no accepted presentation context for SOP class {sop_class_uid} in {transfer_syntax_uid}"
    )]
    NoPresentationContext {
        sop_class_uid: String,
        transfer_syntax_uid: String,
    },
    #[error("network failure")]
    Network(#[source] Box<dicom_ul::association::Error>),
    #[error("no response within {0:?}")]
    Timeout(Duration),
    #[error("the peer aborted the association")]
    Aborted,
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("status 0x{:04X}{}", .status.0, .comment.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Refused {
        status: Status,
        comment: Option<String>,
    },
    #[error("cannot read the stored file {path}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot convert the data set to {0}")]
    Convert(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ForwardError {
    /// Worth retrying soon with the same destination (connection trouble, 0xA7xx, transient
    /// rejection); otherwise the instance itself is refused (0x0122, 0xA9xx, 0xCxxx...).
    pub fn is_transient(&self) -> bool {
        match self {
            ForwardError::Connect { .. }
            | ForwardError::Network(_)
            | ForwardError::Timeout(_)
            | ForwardError::Aborted
            | ForwardError::Protocol(_)
            | ForwardError::Store(_) => true,
            ForwardError::Rejected { transient, .. } => *transient,
            ForwardError::Refused { status, .. } => status.0 & 0xFF00 == 0xA700,
            ForwardError::NoPresentationContext { .. }
            | ForwardError::File { .. }
            | ForwardError::Convert(_) => false,
        }
    }

    fn status(&self) -> Option<u16> {
        match self {
            ForwardError::Refused { status, .. } => Some(status.0),
            _ => None,
        }
    }
}

/// One forwarder, for one destination.
pub struct Forwarder {
    pub destination: DestinationConfig,
    pub settings: ForwardConfig,
    pub index: IndexHandle,
    pub storage_dir: PathBuf,
    pub queue_changed: watch::Receiver<u64>,
    pub shutdown: CancellationToken,
    /// `listener.extra_sop_classes`, proposed along with the built-in storage classes.
    pub extra_sop_classes: Vec<String>,
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
}

/// An open association and what it accepted.
struct Open {
    association: AsyncClientAssociation<TcpStream>,
    /// (abstract syntax, transfer syntax, presentation context id)
    accepted: Vec<(String, String, u8)>,
    next_message_id: u16,
}

impl Forwarder {
    pub async fn run(mut self) {
        let name = self.destination.name.clone();
        let mut open: Option<Open> = None;
        let mut known: BTreeSet<(String, String)> = BTreeSet::new();
        let mut transient_failures = 0u32;
        // When the association last carried an instance: the idle release counts from here.
        let mut last_send = tokio::time::Instant::now();
        loop {
            if self.shutdown.is_cancelled() {
                break;
            }
            let destination = name.clone();
            let items = match self
                .index
                .execute(move |conn| queue::take_due(conn, &destination, &now_rfc3339(), BATCH))
                .await
            {
                Ok(items) => items,
                Err(e) => {
                    tracing::error!(destination = %name, cause = %error_chain(&e), "cannot read the forward queue");
                    self.pause(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if items.is_empty() {
                self.idle(&mut open, last_send + self.settings.idle_release)
                    .await;
                continue;
            }
            for item in &items {
                known.insert((item.sop_class_uid.clone(), item.transfer_syntax_uid.clone()));
            }
            let mut remaining: Vec<i64> = items.iter().map(|i| i.id).collect();
            for item in &items {
                remaining.retain(|id| *id != item.id);
                let result = self.send(&mut open, &known, item).await;
                last_send = tokio::time::Instant::now();
                let now = now_rfc3339();
                let attempt = match &result {
                    Ok((status, comment)) => {
                        transient_failures = 0;
                        let warning = if status.is_success() {
                            String::new()
                        } else {
                            format!(
                                "warning {status}{}",
                                comment
                                    .as_deref()
                                    .map(|c| format!(" ({c})"))
                                    .unwrap_or_default()
                            )
                        };
                        Attempt::Sent {
                            status: status.0,
                            warning,
                        }
                    }
                    Err(e) if e.is_transient() => {
                        // Back the whole destination off; the item stays first in line.
                        Attempt::Retry {
                            status: e.status(),
                            error: error_chain(e),
                            next_attempt_at: now.clone(),
                        }
                    }
                    Err(e) if item.attempts + 1 >= i64::from(self.settings.max_attempts) => {
                        Attempt::Dead {
                            status: e.status(),
                            error: error_chain(e),
                        }
                    }
                    Err(e) => Attempt::Retry {
                        status: e.status(),
                        error: error_chain(e),
                        next_attempt_at: rfc3339_after(self.backoff(item.attempts as u32)),
                    },
                };
                let outcome = match &attempt {
                    Attempt::Sent { warning, .. } if warning.is_empty() => "sent",
                    Attempt::Sent { .. } => "sent-with-warning",
                    Attempt::Retry { .. } => "retry",
                    Attempt::Dead { .. } => "dead",
                };
                self.metrics.forward_outcome(&name, outcome);
                match &attempt {
                    Attempt::Sent { .. } => {
                        tracing::debug!(destination = %name, sop_instance_uid = %item.sop_instance_uid, "forwarded")
                    }
                    Attempt::Retry { error, .. } => {
                        tracing::warn!(destination = %name, sop_instance_uid = %item.sop_instance_uid, cause = %error, "forward failed; will retry")
                    }
                    Attempt::Dead { error, .. } => {
                        tracing::error!(destination = %name, sop_instance_uid = %item.sop_instance_uid, cause = %error, "forward failed for good: dead-lettered")
                    }
                }
                let record = item.clone();
                if let Err(e) = self
                    .index
                    .execute(move |conn| queue::record_attempt(conn, &record, &attempt, &now))
                    .await
                {
                    tracing::error!(destination = %name, cause = %error_chain(&e), "cannot record a forward attempt");
                }
                if let Err(e) = &result
                    && e.is_transient()
                {
                    if let Some(open) = open.take() {
                        let _ = open.association.abort().await;
                    }
                    let ids = std::mem::take(&mut remaining);
                    let _ = self
                        .index
                        .execute(move |conn| queue::release(conn, &ids))
                        .await;
                    let delay = self.backoff(transient_failures);
                    transient_failures = transient_failures.saturating_add(1);
                    self.pause(delay).await;
                    break;
                }
                if self.shutdown.is_cancelled() {
                    break;
                }
            }
            if !remaining.is_empty() {
                let ids = std::mem::take(&mut remaining);
                let _ = self
                    .index
                    .execute(move |conn| queue::release(conn, &ids))
                    .await;
            }
        }
        if let Some(open) = open.take() {
            let _ = open.association.release().await;
        }
        tracing::debug!(destination = %name, "forwarder stopped");
    }

    /// Exponential backoff with jitter: initial * multiplier^n, capped, +-20%.
    fn backoff(&self, failures: u32) -> Duration {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        backoff_delay(&self.settings, failures, f64::from(nanos % 1000) / 1000.0)
    }

    async fn pause(&self, delay: Duration) {
        tokio::select! {
            () = self.shutdown.cancelled() => {}
            () = tokio::time::sleep(delay) => {}
        }
    }

    /// Nothing due: wait for new rows, the next due time, or the idle release.
    async fn idle(&mut self, open: &mut Option<Open>, release_at: tokio::time::Instant) {
        let idle_release = tokio::time::sleep_until(release_at);
        tokio::pin!(idle_release);
        let poll = tokio::time::sleep(POLL);
        tokio::pin!(poll);
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                changed = self.queue_changed.changed() => {
                    if changed.is_err() {
                        // The writer is gone (shutting down): look again at the next poll.
                        poll.as_mut().await;
                    }
                    return;
                }
                () = &mut poll => return,
                () = &mut idle_release, if open.is_some() => {
                    if let Some(open) = open.take() {
                        tracing::debug!(destination = %self.destination.name, "idle: releasing the association");
                        let _ = open.association.release().await;
                    }
                }
            }
        }
    }

    /// Sends one instance; returns the peer's success or warning status.
    async fn send(
        &self,
        open: &mut Option<Open>,
        known: &BTreeSet<(String, String)>,
        item: &QueueItem,
    ) -> Result<(Status, Option<String>), ForwardError> {
        let path = self.storage_dir.join(&item.file_path);
        let needs_new = match open {
            Some(o) => context_for(&o.accepted, item).is_none(),
            None => true,
        };
        if needs_new {
            if let Some(previous) = open.take() {
                let _ = previous.association.release().await;
            }
            *open = Some(self.associate(known).await?);
        }
        let o = open.as_mut().expect("association open");
        let (pc, ts) =
            context_for(&o.accepted, item).ok_or_else(|| ForwardError::NoPresentationContext {
                sop_class_uid: item.sop_class_uid.clone(),
                transfer_syntax_uid: item.transfer_syntax_uid.clone(),
            })?;
        let message_id = o.next_message_id;
        o.next_message_id = o.next_message_id.wrapping_add(1).max(1);
        let command =
            dimse::encode_store_request(message_id, &item.sop_class_uid, &item.sop_instance_uid);
        o.association
            .send(&Pdu::PData {
                data: vec![PDataValue {
                    presentation_context_id: pc,
                    value_type: PDataValueType::Command,
                    is_last: true,
                    data: command,
                }],
            })
            .await
            .map_err(|e| ForwardError::Network(Box::new(e)))?;
        let max_pdu = match o.association.peer_max_pdu_length() {
            0 => self.settings.max_pdu_length,
            n => n.min(self.settings.max_pdu_length),
        };
        let chunk = ((max_pdu.saturating_sub(6)) & !1).max(2) as usize;
        if ts == item.transfer_syntax_uid {
            send_file_data(&mut o.association, pc, &path, chunk).await?;
        } else {
            let converted = convert(&path, &item.transfer_syntax_uid, &ts).await?;
            send_chunks(&mut o.association, pc, &converted, chunk).await?;
        }
        let timeout = self.settings.response_timeout;
        let response = tokio::time::timeout(timeout, receive_response(&mut o.association, timeout))
            .await
            .map_err(|_| ForwardError::Timeout(timeout))??;
        if response.command_field != command_field::C_STORE_RSP
            || response.message_id_being_responded_to != message_id
        {
            return Err(ForwardError::Protocol(format!(
                "response 0x{:04X} to message {} while waiting for C-STORE-RSP to {message_id}",
                response.command_field, response.message_id_being_responded_to
            )));
        }
        let status = response.status;
        // Success and warnings (0xB000, 0xB006, 0xB007 and the other 0xBxxx) are delivered.
        if status.is_success() || status.0 & 0xF000 == 0xB000 {
            Ok((status, response.error_comment))
        } else {
            Err(ForwardError::Refused {
                status,
                comment: response.error_comment,
            })
        }
    }

    async fn associate(&self, known: &BTreeSet<(String, String)>) -> Result<Open, ForwardError> {
        let d = &self.destination;
        let mut options = ClientAssociationOptions::new()
            .calling_ae_title(d.calling_ae_title.as_str().to_string())
            .called_ae_title(d.ae_title.as_str().to_string())
            .max_pdu_length(self.settings.max_pdu_length)
            .connection_timeout(self.settings.connect_timeout)
            .read_timeout(self.settings.response_timeout)
            .write_timeout(self.settings.response_timeout);
        // Each (SOP class, transfer syntax) seen in the queue, as stored; then every storage
        // class with both little endian syntaxes, so a new class rarely needs a new
        // association (an uncompressed instance is converted only if its own syntax is refused).
        let mut proposed = 0;
        for (sop_class, ts) in known.iter().rev().take(60) {
            options = options.with_presentation_context(sop_class.clone(), vec![ts.clone()]);
            proposed += 1;
        }
        let classes: BTreeSet<String> = crate::sop_classes::STORAGE_SOP_CLASSES
            .iter()
            .map(|(uid, _)| uid.to_string())
            .chain(self.extra_sop_classes.iter().cloned())
            .chain(known.iter().map(|(class, _)| class.clone()))
            .collect();
        for class in classes.into_iter().take(127 - proposed) {
            options = options.with_presentation_context(
                class,
                vec![
                    EXPLICIT_VR_LITTLE_ENDIAN.to_string(),
                    IMPLICIT_VR_LITTLE_ENDIAN.to_string(),
                ],
            );
            proposed += 1;
        }
        tracing::debug!(destination = %d.name, proposed, "requesting association");
        let address = d.address.clone();
        let mut association = match options.establish_async(address.as_str()).await {
            Ok(association) => association,
            Err(dicom_ul::association::Error::Rejected { association_rj, .. }) => {
                return Err(ForwardError::Rejected {
                    transient: association_rj.result == AssociationRJResult::Transient,
                    detail: association_rj.source.to_string(),
                });
            }
            Err(e @ dicom_ul::association::Error::NoAcceptedPresentationContexts { .. }) => {
                return Err(ForwardError::Rejected {
                    transient: false,
                    detail: e.to_string(),
                });
            }
            Err(source) => {
                return Err(ForwardError::Connect {
                    address,
                    source: Box::new(source),
                });
            }
        };
        // DIMSE is request/response: Nagle would delay every command (DICOM-NOTES).
        let _ = association.inner_stream().set_nodelay(true);
        let accepted = association
            .presentation_contexts()
            .iter()
            .filter(|pc| pc.reason == PresentationContextResultReason::Acceptance)
            .map(|pc| {
                (
                    pc.abstract_syntax.trim_end_matches('\0').to_string(),
                    pc.transfer_syntax.trim_end_matches('\0').to_string(),
                    pc.id,
                )
            })
            .collect();
        Ok(Open {
            association,
            accepted,
            next_message_id: 1,
        })
    }
}

/// initial * multiplier^failures, capped at max, scaled by 0.8 ..= 1.2 (`jitter` in 0 ..= 1).
fn backoff_delay(settings: &ForwardConfig, failures: u32, jitter: f64) -> Duration {
    let base = settings.initial_backoff.as_secs_f64()
        * settings.backoff_multiplier.powi(failures.min(30) as i32);
    let capped = base.min(settings.max_backoff.as_secs_f64());
    Duration::from_secs_f64(capped * (0.8 + 0.4 * jitter.clamp(0.0, 1.0)))
}

/// The presentation context to send an item on: its own transfer syntax first, else an
/// uncompressed alternative.
fn context_for(accepted: &[(String, String, u8)], item: &QueueItem) -> Option<(u8, String)> {
    let same_class = || {
        accepted
            .iter()
            .filter(|(class, _, _)| *class == item.sop_class_uid)
    };
    if let Some((_, ts, pc)) = same_class().find(|(_, ts, _)| *ts == item.transfer_syntax_uid) {
        return Some((*pc, ts.clone()));
    }
    let uncompressed = [EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN];
    if uncompressed.contains(&item.transfer_syntax_uid.as_str()) {
        return same_class()
            .find(|(_, ts, _)| uncompressed.contains(&ts.as_str()))
            .map(|(_, ts, pc)| (*pc, ts.clone()));
    }
    None
}

/// Where the data set starts in a Part-10 file simgate wrote: after the preamble, `DICM` and
/// the meta group, whose length (0002,0000) comes first.
fn dataset_offset(head: &[u8]) -> Option<u64> {
    if head.len() < 144
        || &head[128..132] != b"DICM"
        || head[132..138] != [0x02, 0x00, 0x00, 0x00, b'U', b'L']
    {
        return None;
    }
    let group_length = u32::from_le_bytes([head[140], head[141], head[142], head[143]]);
    Some(144 + u64::from(group_length))
}

/// Streams the stored data set from disk as Data PDVs, one chunk in memory at a time.
async fn send_file_data(
    association: &mut AsyncClientAssociation<TcpStream>,
    pc: u8,
    path: &Path,
    chunk: usize,
) -> Result<(), ForwardError> {
    use std::io::{Read, Seek, SeekFrom};
    let file_error = |source| ForwardError::File {
        path: path.to_path_buf(),
        source,
    };
    let owned = path.to_path_buf();
    let (mut file, total) =
        tokio::task::spawn_blocking(move || -> std::io::Result<(std::fs::File, u64)> {
            let mut file = std::fs::File::open(&owned)?;
            let mut head = [0u8; 144];
            file.read_exact(&mut head)?;
            let offset = dataset_offset(&head).ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "not a Part-10 file from simgate",
                )
            })?;
            let length = file.metadata()?.len();
            file.seek(SeekFrom::Start(offset))?;
            Ok((file, length.saturating_sub(offset)))
        })
        .await
        .map_err(|e| file_error(std::io::Error::other(e.to_string())))?
        .map_err(file_error)?;
    let mut sent = 0u64;
    loop {
        let want = chunk.min((total - sent) as usize);
        let (returned, data) =
            tokio::task::spawn_blocking(move || -> std::io::Result<(std::fs::File, Vec<u8>)> {
                let mut data = vec![0u8; want];
                file.read_exact(&mut data)?;
                Ok((file, data))
            })
            .await
            .map_err(|e| file_error(std::io::Error::other(e.to_string())))?
            .map_err(file_error)?;
        file = returned;
        sent += data.len() as u64;
        let is_last = sent >= total;
        association
            .send(&Pdu::PData {
                data: vec![PDataValue {
                    presentation_context_id: pc,
                    value_type: PDataValueType::Data,
                    is_last,
                    data,
                }],
            })
            .await
            .map_err(|e| ForwardError::Network(Box::new(e)))?;
        if is_last {
            return Ok(());
        }
    }
}

async fn send_chunks(
    association: &mut AsyncClientAssociation<TcpStream>,
    pc: u8,
    dataset: &[u8],
    chunk: usize,
) -> Result<(), ForwardError> {
    let pieces: Vec<&[u8]> = if dataset.is_empty() {
        vec![&[][..]]
    } else {
        dataset.chunks(chunk).collect()
    };
    let last = pieces.len() - 1;
    for (i, piece) in pieces.into_iter().enumerate() {
        association
            .send(&Pdu::PData {
                data: vec![PDataValue {
                    presentation_context_id: pc,
                    value_type: PDataValueType::Data,
                    is_last: i == last,
                    data: piece.to_vec(),
                }],
            })
            .await
            .map_err(|e| ForwardError::Network(Box::new(e)))?;
    }
    Ok(())
}

/// Re-encodes an uncompressed data set into the other little endian syntax (only when the
/// destination refused the stored one).
async fn convert(path: &Path, from: &str, to: &str) -> Result<Vec<u8>, ForwardError> {
    use dicom_encoding::TransferSyntaxIndex;
    use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
    let owned = path.to_path_buf();
    let (from, to) = (from.to_string(), to.to_string());
    tokio::task::spawn_blocking(move || {
        let object = dicom_object::open_file(&owned)
            .map_err(|e| ForwardError::Convert(format!("{to}: {e}")))?;
        let target = TransferSyntaxRegistry
            .get(&to)
            .ok_or_else(|| ForwardError::Convert(format!("{to} is unknown")))?;
        let mut out = Vec::new();
        object
            .write_dataset_with_ts(&mut out, target)
            .map_err(|e| ForwardError::Convert(format!("{from} -> {to}: {e}")))?;
        Ok(out)
    })
    .await
    .map_err(|e| ForwardError::Convert(e.to_string()))?
}

/// Reads PDUs until a complete command set arrives; data PDVs are ignored.
async fn receive_response(
    association: &mut AsyncClientAssociation<TcpStream>,
    timeout: Duration,
) -> Result<ResponseFields, ForwardError> {
    let mut command = Vec::new();
    loop {
        match association.receive().await {
            Ok(Pdu::PData { data }) => {
                for value in data {
                    if value.value_type != PDataValueType::Command {
                        continue;
                    }
                    if command.len() + value.data.len() > 64 * 1024 {
                        return Err(ForwardError::Protocol(
                            "response command set larger than 64 KiB".into(),
                        ));
                    }
                    command.extend_from_slice(&value.data);
                    if value.is_last {
                        return ResponseFields::decode(&command)
                            .map_err(|e| ForwardError::Protocol(format!("invalid response: {e}")));
                    }
                }
            }
            Ok(Pdu::AbortRQ { .. }) => return Err(ForwardError::Aborted),
            Ok(Pdu::ReleaseRQ) => {
                return Err(ForwardError::Protocol(
                    "the peer asked to release mid-transfer".into(),
                ));
            }
            Ok(other) => {
                return Err(ForwardError::Protocol(format!(
                    "unexpected {}",
                    other.short_description()
                )));
            }
            Err(dicom_ul::association::Error::Timeout { .. }) => {
                return Err(ForwardError::Timeout(timeout));
            }
            Err(e) => return Err(ForwardError::Network(Box::new(e))),
        }
    }
}

fn rfc3339_after(delay: Duration) -> String {
    humantime::format_rfc3339_millis(SystemTime::now() + delay).to_string()
}

/// Starts one forwarder per destination, and puts rows a previous run left in flight back.
#[allow(clippy::too_many_arguments)] // the server's shared pieces, handed over once
pub async fn start(
    extra_sop_classes: &[String],
    destinations: &[DestinationConfig],
    settings: &ForwardConfig,
    index: &IndexHandle,
    storage_dir: &Path,
    queue_changed: &watch::Receiver<u64>,
    shutdown: &CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
    metrics: &std::sync::Arc<crate::metrics::Metrics>,
) -> Result<(), StoreError> {
    let requeued = index.execute(queue::requeue_in_flight).await?;
    if requeued > 0 {
        tracing::info!(
            requeued,
            "forward rows left in flight by an earlier run are queued again"
        );
    }
    for destination in destinations {
        tracing::info!(destination = %destination.name, ae_title = %destination.ae_title, address = %destination.address, "forwarding");
        let forwarder = Forwarder {
            destination: destination.clone(),
            settings: settings.clone(),
            index: index.clone(),
            storage_dir: storage_dir.to_path_buf(),
            queue_changed: queue_changed.clone(),
            shutdown: shutdown.clone(),
            extra_sop_classes: extra_sop_classes.to_vec(),
            metrics: std::sync::Arc::clone(metrics),
        };
        tracker.spawn(forwarder.run());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_is_capped_and_jittered() {
        let settings = ForwardConfig {
            initial_backoff: Duration::from_secs(2),
            backoff_multiplier: 2.0,
            max_backoff: Duration::from_secs(300),
            max_attempts: 5,
            idle_release: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(120),
            max_pdu_length: 131_072,
        };
        let secs = |failures, jitter| backoff_delay(&settings, failures, jitter).as_secs_f64();
        assert_eq!(secs(0, 0.5), 2.0);
        assert_eq!(secs(3, 0.5), 16.0);
        assert_eq!(secs(20, 0.5), 300.0, "capped at max_backoff");
        assert_eq!(secs(1000, 0.5), 300.0, "no overflow");
        assert!((secs(3, 0.0) - 12.8).abs() < 1e-9, "-20%");
        assert!((secs(3, 1.0) - 19.2).abs() < 1e-9, "+20%");
    }

    #[test]
    fn transient_and_permanent_failures_are_told_apart() {
        let refused = |status| ForwardError::Refused {
            status: Status(status),
            comment: None,
        };
        assert!(refused(0xA700).is_transient());
        assert!(refused(0xA7FF).is_transient());
        for permanent in [0x0122, 0xA900, 0xC000, 0xC123] {
            assert!(!refused(permanent).is_transient(), "0x{permanent:04X}");
        }
        assert!(ForwardError::Timeout(Duration::from_secs(1)).is_transient());
        assert!(ForwardError::Aborted.is_transient());
        assert!(
            ForwardError::Rejected {
                transient: true,
                detail: String::new()
            }
            .is_transient()
        );
        assert!(
            !ForwardError::Rejected {
                transient: false,
                detail: String::new()
            }
            .is_transient()
        );
        assert!(
            !ForwardError::NoPresentationContext {
                sop_class_uid: "1.2".into(),
                transfer_syntax_uid: "1.2.840.10008.1.2.1".into()
            }
            .is_transient()
        );
    }
}
