//! One association, after the listener accepted the TCP connection: negotiation, then PDUs
//! are reassembled into DIMSE messages (command PDVs until the last fragment, then data PDVs),
//! each message is handled and answered, and A-RELEASE or A-ABORT ends it: C-ECHO here,
//! C-STORE through [`receive`](super::receive), N-ACTION through
//! [`commitment`](super::commitment), C-FIND through [`find`](super::find), C-MOVE and C-GET
//! through [`retrieve`](super::retrieve). One log line per association at info level.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use dicom_ul::Pdu;
use dicom_ul::association::Association;
use dicom_ul::association::server::{
    AccessControl, AsyncServerAssociation, Negotiation as RoleNegotiation, ServerAssociationOptions,
};
use dicom_ul::pdu::{
    AssociationRJServiceUserReason, PDataValue, PDataValueType, PresentationContextNegotiated,
    PresentationContextResultReason, RequestorRoles, UserIdentity,
};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::receive::{
    InstanceReceiver, Origin, ReceiveContext, StoreRequest, StoreResult, check_reserve,
};
use crate::config::{AeTitle, ListenerConfig};
use crate::dicom::dimse::{Command, CommandError, Response, Status, command_field};
use crate::dicom::sop_classes::{self, VERIFICATION};
use crate::dicom::uid::{is_valid_uid, trim_uid};
use crate::store::instances::RecordOutcome;

/// Command sets are a few hundred bytes; anything this large is not one.
const MAX_COMMAND_SET: usize = 64 * 1024;

/// The data set of an N-ACTION or a query is read whole; beyond this it is refused.
pub const MAX_REQUEST_DATA_SET: usize = 8 * 1024 * 1024;

/// SCU/SCP role selection: a requestor may take the SCP role for storage classes (a C-GET
/// requester receives its C-STOREs that way); any other proposal is left unanswered, which
/// keeps the default roles.
#[derive(Debug, Clone, Copy, Default)]
pub struct Roles;

impl RoleNegotiation for Roles {
    fn negotiate_roles(
        &self,
        sop_class_uid: &str,
        scu_role: bool,
        scp_role: bool,
    ) -> Option<RequestorRoles> {
        let uid = trim_uid(sop_class_uid);
        sop_classes::is_storage(uid).then_some(RequestorRoles {
            scu: scu_role,
            scp: scp_role,
        })
    }
}

/// Checks the AE titles of an association request against the configuration.
#[derive(Debug, Clone)]
pub struct AeTitlePolicy {
    require_called_ae_title: bool,
    allowed_calling_ae_titles: BTreeSet<AeTitle>,
}

impl AccessControl for AeTitlePolicy {
    fn check_access(
        &self,
        this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user_identity: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        // The titles go in the log (the "association refused" line that follows has the
        // peer's address): they are what an operator adding a simulator needs to see.
        if self.require_called_ae_title && called_ae_title.trim() != this_ae_title.trim() {
            tracing::info!(
                called_ae_title = %printable(called_ae_title),
                calling_ae_title = %printable(calling_ae_title),
                listener_ae_title = %printable(this_ae_title),
                "called AE title is not listener.ae_title"
            );
            return Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized);
        }
        let allowed = self.allowed_calling_ae_titles.is_empty()
            || AeTitle::parse(calling_ae_title)
                .is_ok_and(|ae| self.allowed_calling_ae_titles.contains(&ae));
        if !allowed {
            tracing::info!(
                calling_ae_title = %printable(calling_ae_title),
                called_ae_title = %printable(called_ae_title),
                "calling AE title is not in listener.allowed_calling_ae_titles"
            );
            return Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized);
        }
        Ok(())
    }
}

/// Counts for the association's log line.
#[derive(Debug, Default)]
struct Tally {
    stored: u64,
    identical: u64,
    replaced: u64,
    failed: u64,
    echoes: u64,
    bytes: u64,
}

/// Why simgate aborts an association: the peer broke the protocol, or the link failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum AbortReason {
    #[error("command set larger than {MAX_COMMAND_SET} bytes")]
    CommandTooLarge,
    #[error("invalid command set")]
    InvalidCommand(#[source] CommandError),
    #[error("data set fragment on another presentation context")]
    DataOnAnotherContext,
    #[error("data set fragment without a command")]
    DataWithoutCommand,
    #[error("command fragment in the middle of a data set")]
    CommandInsideDataSet,
    #[error("message on presentation context {0}, which was not accepted")]
    ContextNotAccepted(u8),
    #[error("C-ECHO-RQ announces a data set")]
    EchoWithDataSet,
    #[error("C-STORE-RQ without a data set")]
    StoreWithoutDataSet,
    #[error("command 0x{0:04X} needs a data set and announces none")]
    RequestWithoutDataSet(u16),
    #[error("data set of command 0x{0:04X} larger than {MAX_REQUEST_DATA_SET} bytes")]
    RequestDataSetTooLarge(u16),
    #[error("cannot send a data set: {0}")]
    SendData(String),
    #[error(
        "a second operation while one is answered (asynchronous operations are not negotiated)"
    )]
    SecondOperation,
    #[error("the peer aborted")]
    PeerAborted,
    #[error("unsupported DIMSE command 0x{0:04X}")]
    UnsupportedCommand(u16),
    #[error("unexpected PDU: {0}")]
    UnexpectedPdu(String),
    #[error("cannot send response")]
    Send(#[source] dicom_ul::association::Error),
    #[error(transparent)]
    Link(dicom_ul::association::Error),
}

/// How an association ended.
#[derive(Debug)]
enum Ending {
    Released,
    AbortedByPeer,
    AbortedByUs(AbortReason),
    Shutdown,
    ConnectionLost(String),
}

impl std::fmt::Display for Ending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ending::Released => f.write_str("released"),
            Ending::AbortedByPeer => f.write_str("aborted by peer"),
            Ending::AbortedByUs(why) => write!(f, "aborted: {}", crate::error_chain(why)),
            Ending::Shutdown => f.write_str("aborted: simgate is shutting down"),
            Ending::ConnectionLost(why) => write!(f, "connection lost: {why}"),
        }
    }
}

/// What an association request is negotiated against; built once per configuration (again
/// after SIGHUP changes the calling AE allow-list), shared by every association.
pub type Negotiation = ServerAssociationOptions<'static, AeTitlePolicy, Roles>;

/// The negotiation options: AE title checks, PDU size, timeouts, and every SOP class and
/// transfer syntax simgate accepts.
pub fn negotiation(
    listener: &ListenerConfig,
    allowed_calling_ae_titles: BTreeSet<AeTitle>,
) -> Negotiation {
    let mut options = ServerAssociationOptions::new()
        .ae_access_control(AeTitlePolicy {
            require_called_ae_title: listener.require_called_ae_title,
            allowed_calling_ae_titles,
        })
        .max_pdu_length(listener.max_pdu_length)
        .strict(true)
        .read_timeout(listener.idle_timeout)
        .write_timeout(listener.write_timeout)
        .ae_title(listener.ae_title.as_str().to_string())
        .with_negotiation(Roles);
    for uid in sop_classes::SERVICE_SOP_CLASSES {
        options = options.with_abstract_syntax(uid);
    }
    if listener.only_sop_classes.is_empty() {
        for uid in sop_classes::STORAGE_SOP_CLASSES {
            options = options.with_abstract_syntax(*uid);
        }
    }
    for uid in listener
        .extra_sop_classes
        .iter()
        .chain(&listener.only_sop_classes)
    {
        options = options.with_abstract_syntax(uid.clone());
    }
    for uid in sop_classes::accepted_transfer_syntaxes() {
        options = options.with_transfer_syntax(uid);
    }
    options
}

/// The byte stream under an association: plain TCP, or TLS over it.
pub trait Transport: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Transport for S {}

/// Negotiates (after the TLS handshake, with `tls`) and serves one association to its end.
pub async fn serve(
    socket: TcpStream,
    peer: SocketAddr,
    negotiation: Arc<Negotiation>,
    tls: bool,
    context: ReceiveContext,
    request_timeout: std::time::Duration,
    shutdown: CancellationToken,
) {
    let started = Instant::now();
    let timed_out = |context: &ReceiveContext| {
        context.metrics.rejection("association-request-timeout");
        tracing::info!(%peer, timeout_s = request_timeout.as_secs(), "association request not complete in time: closed");
    };
    if tls {
        let established =
            tokio::time::timeout(request_timeout, negotiation.establish_tls_async(socket));
        match established.await {
            Err(_) => timed_out(&context),
            Ok(Ok(association)) => run(association, peer, context, shutdown, started, "tls").await,
            Ok(Err(e)) => refused(&context, peer, &e),
        }
    } else {
        let established =
            tokio::time::timeout(request_timeout, negotiation.establish_async(socket));
        match established.await {
            Err(_) => timed_out(&context),
            Ok(Ok(association)) => {
                run(association, peer, context, shutdown, started, "plain").await
            }
            Ok(Err(e)) => refused(&context, peer, &e),
        }
    }
}

/// Logs why an association (or its TLS handshake) did not come about.
fn refused(context: &ReceiveContext, peer: SocketAddr, e: &dicom_ul::association::Error) {
    let cause = match e {
        dicom_ul::association::Error::Rejected { association_rj, .. } => {
            format!("association-rejected: {}", association_rj.source)
        }
        dicom_ul::association::Error::TlsHandshake { .. } => "tls-handshake".to_string(),
        _ => "association-setup-failed".to_string(),
    };
    context.metrics.rejection(&cause);
    if matches!(e, dicom_ul::association::Error::TlsHandshake { .. }) {
        tracing::warn!(%peer, cause = %crate::error_chain(e), "TLS handshake failed on the TLS DICOM port (a plain DICOM client there? an untrusted certificate?)");
    } else {
        tracing::info!(%peer, cause = %crate::error_chain(e), "association refused");
    }
}

/// Serves an established association to its end.
async fn run<S: Transport>(
    association: AsyncServerAssociation<S>,
    peer: SocketAddr,
    context: ReceiveContext,
    shutdown: CancellationToken,
    started: Instant,
    transport: &'static str,
) {
    if let Some(problem) = context_id_problem(association.presentation_contexts()) {
        context.metrics.rejection("presentation-context-id");
        tracing::warn!(%peer, calling_ae_title = %printable(association.peer_ae_title()), %problem, "association aborted: presentation context IDs break PS3.8 9.3.2.2");
        let _ = association.abort().await;
        return;
    }
    context.metrics.association();
    let origin = Arc::new(Origin {
        calling_ae_title: association.peer_ae_title().trim().to_string(),
        called_ae_title: association.called_ae_title().trim().to_string(),
        peer,
    });
    let accepted = association
        .presentation_contexts()
        .iter()
        .filter(|pc| pc.reason == PresentationContextResultReason::Acceptance)
        .count();
    if accepted == 0 {
        // The peer will find nothing to send on: say what it asked for.
        let asked: Vec<String> = association
            .presentation_contexts()
            .iter()
            .map(|pc| {
                let uid = trim_uid(&pc.abstract_syntax);
                match sop_classes::name(uid) {
                    Some(name) => format!("{uid} ({name})"),
                    None => uid.to_string(),
                }
            })
            .collect();
        context
            .metrics
            .rejection("no-accepted-presentation-context");
        tracing::warn!(%peer, calling_ae_title = %origin.calling_ae_title, asked = %asked.join(", "), "no proposed presentation context is accepted");
    }
    tracing::debug!(%peer, calling_ae_title = %origin.calling_ae_title, accepted, transport, "association established");

    let mut session = Session {
        association,
        origin: Arc::clone(&origin),
        context,
        tally: Tally::default(),
        next_message_id: 1,
        awaiting_reports: Vec::new(),
    };
    let ending = session.run(&shutdown).await;
    // A report this association did not see answered goes on a new association.
    for (_, request_id) in session.awaiting_reports.drain(..) {
        session.context.claims.release(request_id);
    }
    let tally = &session.tally;
    let elapsed = started.elapsed();
    tracing::info!(
        %peer,
        calling_ae_title = %origin.calling_ae_title,
        called_ae_title = %origin.called_ae_title,
        stored = tally.stored,
        identical = tally.identical,
        replaced = tally.replaced,
        failed = tally.failed,
        echoes = tally.echoes,
        bytes = tally.bytes,
        duration_ms = elapsed.as_millis() as u64,
        outcome = %ending,
        "association ended"
    );
    match ending {
        Ending::AbortedByUs(_) | Ending::Shutdown => {
            let _ = session.association.abort().await;
        }
        Ending::Released | Ending::AbortedByPeer | Ending::ConnectionLost(_) => {}
    }
}

/// Presentation context IDs are odd integers, each used once (PS3.8 9.3.2.2); what is wrong,
/// if anything.
fn context_id_problem(contexts: &[PresentationContextNegotiated]) -> Option<String> {
    let mut seen = BTreeSet::new();
    for pc in contexts {
        if pc.id % 2 == 0 {
            return Some(format!("presentation context ID {} is even", pc.id));
        }
        if !seen.insert(pc.id) {
            return Some(format!("presentation context ID {} is used twice", pc.id));
        }
    }
    None
}

/// An AE title from the wire, for a log line: control characters shown escaped.
fn printable(text: &str) -> String {
    text.trim().escape_debug().to_string()
}

/// What the association is doing between PDUs.
enum Incoming {
    /// Waiting for (more of) a command set.
    Command(Vec<u8>),
    /// Collecting the data set of an N-ACTION, C-FIND, C-MOVE or C-GET.
    Request {
        presentation_context_id: u8,
        command: Command,
        data: Vec<u8>,
    },
    /// Receiving the data set of a C-STORE.
    Store {
        presentation_context_id: u8,
        message_id: u16,
        request: StoreRequest,
        receiver: Box<InstanceReceiver>,
    },
    /// Draining the data set of a C-STORE that is refused already.
    Discard {
        presentation_context_id: u8,
        message_id: u16,
        request: StoreRequest,
        status: Status,
        comment: String,
        bytes: u64,
    },
}

pub(super) struct Session<S: Transport> {
    pub(super) association: AsyncServerAssociation<S>,
    pub(super) origin: Arc<Origin>,
    pub(super) context: ReceiveContext,
    tally: Tally,
    /// For the requests simgate sends on this association (N-EVENT-REPORT, C-GET's C-STOREs).
    pub(super) next_message_id: u16,
    /// (message ID, commitment request id) of N-EVENT-REPORTs sent here, not yet answered.
    pub(super) awaiting_reports: Vec<(u16, i64)>,
}

impl<S: Transport> Session<S> {
    async fn run(&mut self, shutdown: &CancellationToken) -> Ending {
        let mut incoming = Incoming::Command(Vec::new());
        loop {
            let idle = matches!(&incoming, Incoming::Command(buffer) if buffer.is_empty());
            let pdu = tokio::select! {
                biased;
                // Between messages a shutdown ends the association; an instance in progress
                // is finished first (the server's shutdown deadline bounds that).
                () = shutdown.cancelled(), if idle => return Ending::Shutdown,
                pdu = self.association.receive() => pdu,
            };
            let values = match pdu {
                Ok(Pdu::PData { data }) => data,
                Ok(Pdu::ReleaseRQ) => {
                    if !idle {
                        tracing::warn!(peer = %self.origin.peer, "release requested in the middle of a message");
                    }
                    return match self.association.send(&Pdu::ReleaseRP).await {
                        Ok(()) => Ending::Released,
                        Err(e) => Ending::ConnectionLost(e.to_string()),
                    };
                }
                Ok(Pdu::AbortRQ { .. }) => return Ending::AbortedByPeer,
                Ok(other) => {
                    return Ending::AbortedByUs(AbortReason::UnexpectedPdu(
                        other.short_description().to_string(),
                    ));
                }
                Err(e) => {
                    return match e {
                        dicom_ul::association::Error::ConnectionClosed { .. } => {
                            Ending::ConnectionLost(crate::error_chain(&e))
                        }
                        // Malformed or oversized PDUs, and the idle timeout: an A-ABORT tells
                        // the peer, as the ARTIM expiry would (PS3.8 9.1.5).
                        _ => Ending::AbortedByUs(AbortReason::Link(e)),
                    };
                }
            };
            for value in values {
                incoming = match self.handle_value(incoming, value).await {
                    Ok(next) => next,
                    Err(AbortReason::PeerAborted) => return Ending::AbortedByPeer,
                    Err(why) => return Ending::AbortedByUs(why),
                };
            }
        }
    }

    /// Moves the message state forward by one PDV; `Err` aborts the association.
    async fn handle_value(
        &mut self,
        incoming: Incoming,
        value: PDataValue,
    ) -> Result<Incoming, AbortReason> {
        match (incoming, value.value_type) {
            (Incoming::Command(mut buffer), PDataValueType::Command) => {
                if buffer.len() + value.data.len() > MAX_COMMAND_SET {
                    return Err(AbortReason::CommandTooLarge);
                }
                buffer.extend_from_slice(&value.data);
                if !value.is_last {
                    return Ok(Incoming::Command(buffer));
                }
                let command = Command::decode(&buffer).map_err(AbortReason::InvalidCommand)?;
                self.handle_command(value.presentation_context_id, command)
                    .await
            }
            (
                Incoming::Store {
                    presentation_context_id,
                    message_id,
                    request,
                    mut receiver,
                },
                PDataValueType::Data,
            ) => {
                if value.presentation_context_id != presentation_context_id {
                    return Err(AbortReason::DataOnAnotherContext);
                }
                receiver.feed(value.data).await;
                if !value.is_last {
                    return Ok(Incoming::Store {
                        presentation_context_id,
                        message_id,
                        request,
                        receiver,
                    });
                }
                let result = receiver.finish().await;
                self.respond_store(presentation_context_id, message_id, &request, &result)
                    .await?;
                Ok(Incoming::Command(Vec::new()))
            }
            (
                Incoming::Discard {
                    presentation_context_id,
                    message_id,
                    request,
                    status,
                    comment,
                    bytes,
                },
                PDataValueType::Data,
            ) => {
                if value.presentation_context_id != presentation_context_id {
                    return Err(AbortReason::DataOnAnotherContext);
                }
                let bytes = bytes + value.data.len() as u64;
                if !value.is_last {
                    return Ok(Incoming::Discard {
                        presentation_context_id,
                        message_id,
                        request,
                        status,
                        comment,
                        bytes,
                    });
                }
                let result = StoreResult {
                    status,
                    error_comment: Some(comment),
                    outcome: None,
                    data_set_bytes: bytes,
                };
                self.respond_store(presentation_context_id, message_id, &request, &result)
                    .await?;
                Ok(Incoming::Command(Vec::new()))
            }
            (
                Incoming::Request {
                    presentation_context_id,
                    command,
                    mut data,
                },
                PDataValueType::Data,
            ) => {
                if value.presentation_context_id != presentation_context_id {
                    return Err(AbortReason::DataOnAnotherContext);
                }
                if data.len() + value.data.len() > MAX_REQUEST_DATA_SET {
                    return Err(AbortReason::RequestDataSetTooLarge(command.command_field));
                }
                data.extend_from_slice(&value.data);
                if !value.is_last {
                    return Ok(Incoming::Request {
                        presentation_context_id,
                        command,
                        data,
                    });
                }
                self.handle_request(presentation_context_id, command, data)
                    .await?;
                Ok(Incoming::Command(Vec::new()))
            }
            (Incoming::Command(_), PDataValueType::Data) => Err(AbortReason::DataWithoutCommand),
            (_, PDataValueType::Command) => Err(AbortReason::CommandInsideDataSet),
        }
    }

    pub(super) fn presentation_context(&self, id: u8) -> Option<&PresentationContextNegotiated> {
        self.association
            .presentation_contexts()
            .iter()
            .find(|pc| pc.id == id && pc.reason == PresentationContextResultReason::Acceptance)
    }

    async fn handle_command(
        &mut self,
        presentation_context_id: u8,
        command: Command,
    ) -> Result<Incoming, AbortReason> {
        let Some(context) = self.presentation_context(presentation_context_id) else {
            return Err(AbortReason::ContextNotAccepted(presentation_context_id));
        };
        let abstract_syntax = trim_uid(&context.abstract_syntax).to_string();
        let transfer_syntax_uid = trim_uid(&context.transfer_syntax).to_string();
        match command.command_field {
            command_field::C_ECHO_RQ => {
                if command.has_data_set() {
                    return Err(AbortReason::EchoWithDataSet);
                }
                self.tally.echoes += 1;
                self.context.metrics.echo();
                let response = Response {
                    command_field: command_field::C_ECHO_RSP,
                    message_id_being_responded_to: command.message_id,
                    affected_sop_class_uid: VERIFICATION,
                    affected_sop_instance_uid: None,
                    status: Status::SUCCESS,
                    error_comment: None,
                    ..Default::default()
                };
                self.send_command(presentation_context_id, response.encode())
                    .await?;
                Ok(Incoming::Command(Vec::new()))
            }
            command_field::C_STORE_RQ => {
                if !command.has_data_set() {
                    return Err(AbortReason::StoreWithoutDataSet);
                }
                let request = StoreRequest {
                    affected_sop_class_uid: command
                        .affected_sop_class_uid
                        .clone()
                        .unwrap_or_default(),
                    affected_sop_instance_uid: command
                        .affected_sop_instance_uid
                        .clone()
                        .unwrap_or_default(),
                    transfer_syntax_uid,
                };
                let refusal = if !is_valid_uid(&request.affected_sop_instance_uid) {
                    Some((
                        Status::INVALID_IDENTIFIERS,
                        "Affected SOP Instance UID is missing or not a valid UID".to_string(),
                    ))
                } else if request.affected_sop_class_uid != abstract_syntax {
                    Some((
                        Status::SOP_CLASS_NOT_SUPPORTED,
                        "Affected SOP Class UID differs from the presentation context".to_string(),
                    ))
                } else {
                    check_reserve(&self.context)
                };
                Ok(match refusal {
                    Some((status, comment)) => Incoming::Discard {
                        presentation_context_id,
                        message_id: command.message_id,
                        request,
                        status,
                        comment,
                        bytes: 0,
                    },
                    None => Incoming::Store {
                        presentation_context_id,
                        message_id: command.message_id,
                        receiver: Box::new(InstanceReceiver::new(
                            request.clone(),
                            Arc::clone(&self.origin),
                            self.context.clone(),
                        )),
                        request,
                    },
                })
            }
            command_field::N_ACTION_RQ
            | command_field::C_FIND_RQ
            | command_field::C_MOVE_RQ
            | command_field::C_GET_RQ => {
                if !command.has_data_set() {
                    return Err(AbortReason::RequestWithoutDataSet(command.command_field));
                }
                Ok(Incoming::Request {
                    presentation_context_id,
                    command,
                    data: Vec::new(),
                })
            }
            command_field::N_EVENT_REPORT_RSP => {
                self.report_answered(&command).await;
                Ok(Incoming::Command(Vec::new()))
            }
            command_field::C_CANCEL_RQ => {
                // Nothing is running: the operation it names has ended already.
                tracing::debug!(peer = %self.origin.peer, "C-CANCEL for an operation already complete");
                Ok(Incoming::Command(Vec::new()))
            }
            other => Err(AbortReason::UnsupportedCommand(other)),
        }
    }

    /// A complete N-ACTION, C-FIND, C-MOVE or C-GET request with its data set.
    async fn handle_request(
        &mut self,
        presentation_context_id: u8,
        command: Command,
        data: Vec<u8>,
    ) -> Result<(), AbortReason> {
        let Some(context) = self.presentation_context(presentation_context_id) else {
            return Err(AbortReason::ContextNotAccepted(presentation_context_id));
        };
        let abstract_syntax = trim_uid(&context.abstract_syntax).to_string();
        let transfer_syntax = trim_uid(&context.transfer_syntax).to_string();
        let message = super::Message {
            presentation_context_id,
            abstract_syntax,
            transfer_syntax,
            command,
            data,
        };
        match message.command.command_field {
            command_field::N_ACTION_RQ => self.storage_commitment(message).await,
            command_field::C_FIND_RQ => self.find(message).await,
            _ => self.retrieve(message).await,
        }
    }

    async fn respond_store(
        &mut self,
        presentation_context_id: u8,
        message_id: u16,
        request: &StoreRequest,
        result: &StoreResult,
    ) -> Result<(), AbortReason> {
        self.tally.bytes += result.data_set_bytes;
        use crate::metrics::InstanceOutcome;
        let outcome = match &result.outcome {
            Some(RecordOutcome::New) => {
                self.tally.stored += 1;
                InstanceOutcome::Stored
            }
            Some(RecordOutcome::Identical) => {
                self.tally.identical += 1;
                InstanceOutcome::Identical
            }
            Some(RecordOutcome::Replaced { .. }) => {
                self.tally.replaced += 1;
                InstanceOutcome::Replaced
            }
            None => {
                self.tally.failed += 1;
                self.context
                    .metrics
                    .rejection(&format!("c-store-status-{}", result.status));
                InstanceOutcome::Failed
            }
        };
        self.context
            .metrics
            .instance(outcome, result.data_set_bytes);
        if let Some(comment) = &result.error_comment {
            tracing::warn!(
                peer = %self.origin.peer,
                calling_ae_title = %self.origin.calling_ae_title,
                status = %result.status,
                reason = %comment,
                "C-STORE refused"
            );
        }
        tracing::debug!(
            sop_instance_uid = %request.affected_sop_instance_uid,
            status = %result.status,
            bytes = result.data_set_bytes,
            "C-STORE answered"
        );
        let response = Response {
            command_field: command_field::C_STORE_RSP,
            message_id_being_responded_to: message_id,
            affected_sop_class_uid: &request.affected_sop_class_uid,
            affected_sop_instance_uid: Some(&request.affected_sop_instance_uid),
            status: result.status,
            error_comment: result.error_comment.as_deref(),
            ..Default::default()
        };
        self.send_command(presentation_context_id, response.encode())
            .await
    }

    /// Sends a data set after its command, within the peer's maximum PDU.
    pub(super) async fn send_data_set(&mut self, pc: u8, data: &[u8]) -> Result<(), AbortReason> {
        let own = self.context.service.config().listener.max_pdu_length;
        crate::forward::scu::send_data_set(&mut self.association, pc, data, own)
            .await
            .map_err(|e| AbortReason::SendData(crate::error_chain(&e)))
    }

    /// While a C-FIND, C-MOVE or C-GET answers: has the peer sent a C-CANCEL for it? Reads
    /// only what has arrived already (never waits). Anything but a C-CANCEL of this
    /// operation breaks the protocol (one operation at a time) and aborts.
    pub(super) async fn cancel_requested(&mut self, message_id: u16) -> Result<bool, AbortReason> {
        let mut cancelled = false;
        loop {
            let pdu =
                match tokio::time::timeout(std::time::Duration::ZERO, self.association.receive())
                    .await
                {
                    Err(_) => return Ok(cancelled),
                    Ok(Ok(pdu)) => pdu,
                    Ok(Err(e)) => return Err(AbortReason::Link(e)),
                };
            cancelled |= self.read_cancel(pdu, message_id)?.is_some_and(|c| c);
        }
    }

    /// Reads the next command from the peer during an operation (waiting for it): a
    /// C-STORE-RSP of a C-GET sub-operation, or a C-CANCEL of the operation (`Ok(None)`
    /// after noting it in `cancelled`).
    pub(super) async fn next_command_during(
        &mut self,
        operation_message_id: u16,
        cancelled: &mut bool,
    ) -> Result<Command, AbortReason> {
        let mut buffer = Vec::new();
        loop {
            let pdu = self
                .association
                .receive()
                .await
                .map_err(AbortReason::Link)?;
            let values = match pdu {
                Pdu::PData { data } => data,
                Pdu::AbortRQ { .. } => return Err(AbortReason::PeerAborted),
                other => {
                    return Err(AbortReason::UnexpectedPdu(
                        other.short_description().to_string(),
                    ));
                }
            };
            for value in values {
                if value.value_type != PDataValueType::Command {
                    return Err(AbortReason::DataWithoutCommand);
                }
                if buffer.len() + value.data.len() > MAX_COMMAND_SET {
                    return Err(AbortReason::CommandTooLarge);
                }
                buffer.extend_from_slice(&value.data);
                if !value.is_last {
                    continue;
                }
                let command = Command::decode(&buffer).map_err(AbortReason::InvalidCommand)?;
                buffer.clear();
                if command.command_field == command_field::C_CANCEL_RQ
                    && command.message_id_being_responded_to == Some(operation_message_id)
                {
                    *cancelled = true;
                    continue;
                }
                return Ok(command);
            }
        }
    }

    /// A PDU read during an operation: `Some(true)` for a C-CANCEL of it.
    fn read_cancel(&mut self, pdu: Pdu, message_id: u16) -> Result<Option<bool>, AbortReason> {
        let values = match pdu {
            Pdu::PData { data } => data,
            Pdu::AbortRQ { .. } => return Err(AbortReason::PeerAborted),
            other => {
                return Err(AbortReason::UnexpectedPdu(
                    other.short_description().to_string(),
                ));
            }
        };
        let mut cancelled = None;
        for value in values {
            // A C-CANCEL is one small command PDV; anything else is a second operation.
            if value.value_type != PDataValueType::Command || !value.is_last {
                return Err(AbortReason::SecondOperation);
            }
            let command = Command::decode(&value.data).map_err(AbortReason::InvalidCommand)?;
            if command.command_field != command_field::C_CANCEL_RQ {
                return Err(AbortReason::SecondOperation);
            }
            cancelled = Some(command.message_id_being_responded_to == Some(message_id));
        }
        Ok(cancelled)
    }

    /// A message ID for a request simgate sends on this association.
    pub(super) fn take_message_id(&mut self) -> u16 {
        let id = self.next_message_id;
        self.next_message_id = self.next_message_id.wrapping_add(1).max(1);
        id
    }

    pub(super) async fn send_command(
        &mut self,
        presentation_context_id: u8,
        data: Vec<u8>,
    ) -> Result<(), AbortReason> {
        let pdu = Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id,
                value_type: PDataValueType::Command,
                is_last: true,
                data,
            }],
        };
        self.association.send(&pdu).await.map_err(AbortReason::Send)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(id: u8) -> PresentationContextNegotiated {
        PresentationContextNegotiated {
            id,
            reason: PresentationContextResultReason::Acceptance,
            transfer_syntax: "1.2.840.10008.1.2".into(),
            abstract_syntax: VERIFICATION.into(),
        }
    }

    #[test]
    fn presentation_context_ids_must_be_odd_and_unique() {
        assert_eq!(
            context_id_problem(&[context(1), context(3), context(255)]),
            None
        );
        assert!(
            context_id_problem(&[context(1), context(2)]).is_some_and(|p| p.contains("2 is even"))
        );
        assert!(
            context_id_problem(&[context(1), context(3), context(1)])
                .is_some_and(|p| p.contains("1 is used twice"))
        );
    }
}
