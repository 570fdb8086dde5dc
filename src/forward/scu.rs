//! The C-STORE SCU towards one destination, on dicom-ul: it opens an association proposing
//! what the queue holds, sends one stored instance at a time (the data set bytes unchanged,
//! streamed from the spool file in PDVs within the peer's maximum PDU; re-encoded to the other
//! little endian syntax only when the stored one was refused), reads the response, and keeps
//! the association for the next instance until released.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dicom_ul::Pdu;
use dicom_ul::association::client::ClientAssociationOptions;
use dicom_ul::association::{Association, AsyncClientAssociation};
use dicom_ul::pdu::{
    AssociationRJResult, PDataValue, PDataValueType, PresentationContextResultReason,
};
use tokio::net::TcpStream;

use super::policy::{Delivered, ForwardError};
use crate::config::{DestinationConfig, ForwardConfig};
use crate::dicom::dimse::{self, ResponseFields, command_field};
use crate::dicom::part10;
use crate::dicom::sop_classes::VERIFICATION;
use crate::dicom::transfer_syntax::{
    EXPLICIT_VR_BIG_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN, is_deflated,
};
use crate::dicom::uid::trim_uid;
use crate::store::queue::QueueItem;
use dicom_dictionary_std::uids;

/// One stored instance to send: what the C-STORE-RQ names and where its bytes are.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    pub sop_class_uid: &'a str,
    pub sop_instance_uid: &'a str,
    pub transfer_syntax_uid: &'a str,
    /// Relative to `storage.dir`.
    pub file_path: &'a str,
}

impl QueueItem {
    pub fn outgoing(&self) -> Outgoing<'_> {
        Outgoing {
            sop_class_uid: &self.sop_class_uid,
            sop_instance_uid: &self.sop_instance_uid,
            transfer_syntax_uid: &self.transfer_syntax_uid,
            file_path: &self.file_path,
        }
    }
}

/// Either side of an association, as far as sending an instance's PDVs goes: the forwarder's
/// and C-MOVE's client associations, and the server association a C-GET answers on.
pub trait Link {
    fn send_pdu(
        &mut self,
        pdu: &Pdu,
    ) -> impl std::future::Future<Output = Result<(), dicom_ul::association::Error>> + Send;
    fn receive_pdu(
        &mut self,
    ) -> impl std::future::Future<Output = Result<Pdu, dicom_ul::association::Error>> + Send;
    fn peer_max_pdu(&self) -> u32;
}

impl<S> Link for AsyncClientAssociation<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    async fn send_pdu(&mut self, pdu: &Pdu) -> Result<(), dicom_ul::association::Error> {
        self.send(pdu).await
    }
    async fn receive_pdu(&mut self) -> Result<Pdu, dicom_ul::association::Error> {
        self.receive().await
    }
    fn peer_max_pdu(&self) -> u32 {
        self.peer_max_pdu_length()
    }
}

impl<S> Link for dicom_ul::association::AsyncServerAssociation<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    async fn send_pdu(&mut self, pdu: &Pdu) -> Result<(), dicom_ul::association::Error> {
        self.send(pdu).await
    }
    async fn receive_pdu(&mut self) -> Result<Pdu, dicom_ul::association::Error> {
        self.receive().await
    }
    fn peer_max_pdu(&self) -> u32 {
        self.peer_max_pdu_length()
    }
}

/// An association to a destination, over plain TCP or TLS.
pub enum Client {
    Plain(Box<AsyncClientAssociation<TcpStream>>),
    Tls(Box<AsyncClientAssociation<dicom_ul::association::client::AsyncTlsStream>>),
}

impl Client {
    pub async fn send(&mut self, pdu: &Pdu) -> Result<(), dicom_ul::association::Error> {
        self.send_pdu(pdu).await
    }

    pub fn presentation_contexts(&self) -> &[dicom_ul::pdu::PresentationContextNegotiated] {
        match self {
            Client::Plain(a) => a.presentation_contexts(),
            Client::Tls(a) => a.presentation_contexts(),
        }
    }

    pub async fn release(self) -> Result<(), dicom_ul::association::Error> {
        match self {
            Client::Plain(a) => a.release().await,
            Client::Tls(a) => a.release().await,
        }
    }

    pub async fn abort(self) -> Result<(), dicom_ul::association::Error> {
        match self {
            Client::Plain(a) => a.abort().await,
            Client::Tls(a) => a.abort().await,
        }
    }
}

impl Link for Client {
    async fn send_pdu(&mut self, pdu: &Pdu) -> Result<(), dicom_ul::association::Error> {
        match self {
            Client::Plain(a) => a.send(pdu).await,
            Client::Tls(a) => a.send(pdu).await,
        }
    }
    async fn receive_pdu(&mut self) -> Result<Pdu, dicom_ul::association::Error> {
        match self {
            Client::Plain(a) => a.receive().await,
            Client::Tls(a) => a.receive().await,
        }
    }
    fn peer_max_pdu(&self) -> u32 {
        match self {
            Client::Plain(a) => a.peer_max_pdu_length(),
            Client::Tls(a) => a.peer_max_pdu_length(),
        }
    }
}

/// TLS towards a destination: the client configuration and the name its certificate must
/// carry (the host of its address).
#[derive(Clone)]
pub struct ClientTls {
    pub config: Arc<rustls::ClientConfig>,
    pub server_name: String,
}

impl ClientTls {
    /// For a destination with `tls`, reading its CA (and simgate's certificate) now.
    pub fn for_destination(
        destination: &DestinationConfig,
    ) -> Result<Option<ClientTls>, crate::tls::TlsError> {
        let Some(tls) = &destination.tls else {
            return Ok(None);
        };
        let identity = tls
            .identity
            .as_ref()
            .map(|(certificate, key)| (certificate.as_path(), key.as_path()));
        let host = destination
            .address
            .rsplit_once(':')
            .map_or(destination.address.as_str(), |(host, _)| host)
            .trim_start_matches('[')
            .trim_end_matches(']');
        Ok(Some(ClientTls {
            config: crate::tls::client_config(&tls.ca, identity)?,
            server_name: host.to_string(),
        }))
    }
}

/// An open association and what it accepted.
struct Open {
    association: Client,
    /// (abstract syntax, transfer syntax, presentation context id)
    accepted: Vec<(String, String, u8)>,
    /// The (abstract syntax, transfer syntax) pairs this association proposed exactly.
    proposed: BTreeSet<(String, String)>,
    next_message_id: u16,
}

/// The sending side of one destination, with its association while one is open.
pub struct Scu {
    destination: DestinationConfig,
    settings: ForwardConfig,
    storage_dir: PathBuf,
    tls: Option<ClientTls>,
    open: Option<Open>,
    /// Every (SOP class, transfer syntax) seen in the queue, proposed exactly as stored; the
    /// most recently seen last.
    known: Vec<(String, String)>,
}

impl Scu {
    pub fn new(
        destination: DestinationConfig,
        settings: ForwardConfig,
        storage_dir: PathBuf,
        tls: Option<ClientTls>,
    ) -> Scu {
        Scu {
            destination,
            settings,
            storage_dir,
            tls,
            open: None,
            known: Vec::new(),
        }
    }

    /// Learns the (SOP class, transfer syntax) pairs of rows about to be sent, so the next
    /// association proposes each exactly as stored.
    pub fn expect<'a>(&mut self, items: impl IntoIterator<Item = Outgoing<'a>>) {
        for item in items {
            let pair = (
                item.sop_class_uid.to_string(),
                item.transfer_syntax_uid.to_string(),
            );
            self.known.retain(|known| *known != pair);
            self.known.push(pair);
        }
    }

    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// Releases the association, if one is open.
    pub async fn release(&mut self) {
        if let Some(open) = self.open.take() {
            let _ = open.association.release().await;
        }
    }

    /// Aborts the association, if one is open (after a failure mid-transfer).
    pub async fn abort(&mut self) {
        if let Some(open) = self.open.take() {
            let _ = open.association.abort().await;
        }
    }

    /// Is the destination there? A C-ECHO on an association of its own, released at once.
    pub async fn echo(&self) -> Result<(), ForwardError> {
        let d = &self.destination;
        let options = ClientAssociationOptions::new()
            .calling_ae_title(d.calling_ae_title.as_str().to_string())
            .called_ae_title(d.ae_title.as_str().to_string())
            .max_pdu_length(self.settings.max_pdu_length)
            .connection_timeout(self.settings.connect_timeout)
            .read_timeout(self.settings.connect_timeout)
            .write_timeout(self.settings.connect_timeout)
            .with_presentation_context(
                VERIFICATION.to_string(),
                vec![IMPLICIT_VR_LITTLE_ENDIAN.to_string()],
            );
        let mut association = establish(options, &d.address, self.tls.as_ref()).await?;
        let pc = association
            .presentation_contexts()
            .iter()
            .find(|pc| pc.reason == PresentationContextResultReason::Acceptance)
            .map(|pc| pc.id)
            .ok_or_else(|| ForwardError::NoPresentationContext {
                sop_class_uid: VERIFICATION.to_string(),
                transfer_syntax_uid: IMPLICIT_VR_LITTLE_ENDIAN.to_string(),
            })?;
        send_command(&mut association, pc, dimse::encode_echo_request(1)).await?;
        let timeout = self.settings.connect_timeout;
        let response = tokio::time::timeout(timeout, receive_response(&mut association, timeout))
            .await
            .map_err(|_| ForwardError::Timeout(timeout))??;
        let _ = association.release().await;
        if response.command_field == command_field::C_ECHO_RSP && response.status.is_success() {
            Ok(())
        } else {
            Err(ForwardError::Refused {
                status: response.status,
                comment: response.error_comment,
            })
        }
    }

    /// Sends one instance; returns the peer's success or warning status. A C-MOVE
    /// sub-operation names its originator.
    pub async fn send(
        &mut self,
        item: Outgoing<'_>,
        originator: Option<&dimse::MoveOriginator>,
    ) -> Result<Delivered, ForwardError> {
        let pair = (
            item.sop_class_uid.to_string(),
            item.transfer_syntax_uid.to_string(),
        );
        if !self.known.contains(&pair) {
            self.expect([item]);
        }
        let path = self.storage_dir.join(item.file_path);
        // The stored (class, syntax) must have been proposed on the open association; if it
        // was and the destination refused it, a conversion is the only way left. With nothing
        // usable, a fresh association asks again (the destination may have been reconfigured).
        let usable = self.open.as_ref().is_some_and(|o| {
            o.proposed.contains(&pair) && context_for(&o.accepted, item).is_some()
        });
        if !usable {
            self.release().await;
            self.open = Some(self.associate().await?);
        }
        let Some(o) = self.open.as_mut() else {
            return Err(ForwardError::Protocol("no association".into()));
        };
        let (pc, ts) =
            context_for(&o.accepted, item).ok_or_else(|| ForwardError::NoPresentationContext {
                sop_class_uid: item.sop_class_uid.to_string(),
                transfer_syntax_uid: item.transfer_syntax_uid.to_string(),
            })?;
        let converted_to = (ts != item.transfer_syntax_uid).then(|| ts.clone());
        // Everything that can fail without the peer is done before the command goes out, so a
        // missing file or a failed conversion never leaves the peer waiting for a data set.
        let payload = Payload::prepare(&path, item.transfer_syntax_uid, &ts).await?;
        let message_id = o.next_message_id;
        o.next_message_id = o.next_message_id.wrapping_add(1).max(1);
        send_store_request(
            &mut o.association,
            pc,
            message_id,
            item,
            originator,
            &path,
            payload,
            self.settings.max_pdu_length,
        )
        .await?;
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
            Ok(Delivered {
                status,
                comment: response.error_comment,
                sent_as: converted_to.map(|ts| {
                    format!(
                        "sent as {} because the destination refused {}",
                        transfer_syntax_name(&ts),
                        transfer_syntax_name(item.transfer_syntax_uid)
                    )
                }),
            })
        } else {
            Err(ForwardError::Refused {
                status,
                comment: response.error_comment,
            })
        }
    }

    async fn associate(&self) -> Result<Open, ForwardError> {
        let known = &self.known;
        let d = &self.destination;
        let mut options = ClientAssociationOptions::new()
            .calling_ae_title(d.calling_ae_title.as_str().to_string())
            .called_ae_title(d.ae_title.as_str().to_string())
            .max_pdu_length(self.settings.max_pdu_length)
            .connection_timeout(self.settings.connect_timeout)
            .read_timeout(self.settings.response_timeout)
            .write_timeout(self.settings.response_timeout);
        let (contexts, proposed) = proposal(known);
        for (sop_class, syntaxes) in contexts {
            options = options.with_presentation_context(sop_class, syntaxes);
        }
        let proposed_count = proposed.len();
        tracing::debug!(destination = %d.name, proposed = proposed_count, "requesting association");
        let association = establish(options, &d.address, self.tls.as_ref()).await?;
        let accepted = accepted_contexts(association.presentation_contexts());
        Ok(Open {
            association,
            accepted,
            proposed,
            next_message_id: 1,
        })
    }
}

/// Opens an association (over TLS with `tls`) with TCP_NODELAY, telling a rejection
/// (transient or permanent) from a connection that could not be made.
pub async fn establish(
    options: ClientAssociationOptions<'_>,
    address: &str,
    tls: Option<&ClientTls>,
) -> Result<Client, ForwardError> {
    let established = match tls {
        None => options
            .establish_async(address)
            .await
            .map(|mut association| {
                // DIMSE is request/response: Nagle would delay every command (DICOM-NOTES).
                let _ = association.inner_stream().set_nodelay(true);
                Client::Plain(Box::new(association))
            }),
        Some(tls) => options
            .tls_config(Arc::clone(&tls.config))
            .server_name(&tls.server_name)
            .establish_tls_async(address)
            .await
            .map(|mut association| {
                let _ = association.inner_stream().get_mut().0.set_nodelay(true);
                Client::Tls(Box::new(association))
            }),
    };
    match established {
        Ok(client) => Ok(client),
        Err(dicom_ul::association::Error::Rejected { association_rj, .. }) => {
            Err(ForwardError::Rejected {
                transient: association_rj.result == AssociationRJResult::Transient,
                detail: association_rj.source.to_string(),
            })
        }
        Err(e @ dicom_ul::association::Error::NoAcceptedPresentationContexts { .. }) => {
            Err(ForwardError::Rejected {
                transient: false,
                detail: e.to_string(),
            })
        }
        Err(source) => Err(ForwardError::Connect {
            address: address.to_string(),
            source: Box::new(source),
        }),
    }
}

/// The presentation contexts to propose, and the (class, syntax) pairs among them proposed
/// exactly. Each pair seen in the queue exactly as stored, the most recent first; then the
/// classes of a planning study ([`PLANNING_CLASSES`]) in both little endian syntaxes, one context
/// each, so the RT objects that follow a CT series go out on the same association instead of
/// one new association per new class; then, per known class, both little endian syntaxes in
/// one context, used only when the destination refuses the stored one (a conversion, recorded
/// on the queue row). At most [`MAX_CONTEXTS`] in all.
fn proposal(known: &[(String, String)]) -> (Vec<Context>, BTreeSet<(String, String)>) {
    let mut contexts = Vec::new();
    let mut proposed = BTreeSet::new();
    for (sop_class, ts) in known.iter().rev().take(MAX_EXACT_CONTEXTS) {
        contexts.push((sop_class.clone(), vec![ts.clone()]));
        proposed.insert((sop_class.clone(), ts.clone()));
    }
    let classes: BTreeSet<String> = proposed.iter().map(|(class, _)| class.clone()).collect();
    let fallbacks = classes.len();
    for class in PLANNING_CLASSES {
        for ts in [EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN] {
            let pair = (class.to_string(), ts.to_string());
            if contexts.len() + fallbacks < MAX_CONTEXTS && !proposed.contains(&pair) {
                contexts.push((pair.0.clone(), vec![pair.1.clone()]));
                proposed.insert(pair);
            }
        }
    }
    for class in classes {
        contexts.push((
            class,
            vec![
                EXPLICIT_VR_LITTLE_ENDIAN.to_string(),
                IMPLICIT_VR_LITTLE_ENDIAN.to_string(),
            ],
        ));
    }
    (contexts, proposed)
}

/// An abstract syntax and the transfer syntaxes proposed with it.
type Context = (String, Vec<String>);

/// What a CT simulator sends with a planning study, after the images: proposed on every
/// association besides what the queue holds.
pub const PLANNING_CLASSES: [&str; 6] = [
    uids::CT_IMAGE_STORAGE,
    uids::RT_STRUCTURE_SET_STORAGE,
    uids::RT_PLAN_STORAGE,
    uids::RT_DOSE_STORAGE,
    uids::RT_IMAGE_STORAGE,
    uids::SPATIAL_REGISTRATION_STORAGE,
];

/// PS3.8: at most 128 presentation contexts on one association (odd ids 1 to 255).
const MAX_CONTEXTS: usize = 128;

/// At most this many (class, syntax) pairs are proposed exactly on one association; each also
/// brings one little endian fallback context per class, within PS3.8's 128 contexts.
const MAX_EXACT_CONTEXTS: usize = 63;

/// A transfer syntax's name for people, or its UID.
pub fn transfer_syntax_name(uid: &str) -> String {
    use dicom_encoding::TransferSyntaxIndex;
    dicom_transfer_syntax_registry::TransferSyntaxRegistry
        .get(uid)
        .map(|ts| ts.name().to_string())
        .unwrap_or_else(|| uid.to_string())
}

/// The presentation context to send an item on, from (abstract syntax, transfer syntax, id)
/// triples: its own transfer syntax first, else an uncompressed alternative.
pub fn context_for(accepted: &[(String, String, u8)], item: Outgoing<'_>) -> Option<(u8, String)> {
    let same_class = || {
        accepted
            .iter()
            .filter(|(class, _, _)| *class == item.sop_class_uid)
    };
    if let Some((_, ts, pc)) = same_class().find(|(_, ts, _)| *ts == item.transfer_syntax_uid) {
        return Some((*pc, ts.clone()));
    }
    let uncompressed = [EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN];
    // Only a lossless re-encoding of the data set: never a pixel data codec.
    let convertible = uncompressed.contains(&item.transfer_syntax_uid)
        || is_deflated(item.transfer_syntax_uid)
        || item.transfer_syntax_uid == EXPLICIT_VR_BIG_ENDIAN;
    if convertible {
        return same_class()
            .find(|(_, ts, _)| uncompressed.contains(&ts.as_str()))
            .map(|(_, ts, pc)| (*pc, ts.clone()));
    }
    None
}

/// What goes out after the command: the stored data set, or its conversion.
pub enum Payload {
    /// The spool file, positioned at its data set, and the data set's length.
    Stored(std::fs::File, u64),
    Converted(Vec<u8>),
}

impl Payload {
    /// Opens the stored data set, or converts it when `send_as` is another syntax; done
    /// before any command goes out.
    pub async fn prepare(
        path: &Path,
        stored_as: &str,
        send_as: &str,
    ) -> Result<Payload, ForwardError> {
        if send_as == stored_as {
            let (file, total) = open_data_set(path).await?;
            Ok(Payload::Stored(file, total))
        } else {
            Ok(Payload::Converted(convert(path, stored_as, send_as).await?))
        }
    }
}

/// The accepted presentation contexts as (abstract syntax, transfer syntax, id), for
/// [`context_for`].
pub fn accepted_contexts(
    contexts: &[dicom_ul::pdu::PresentationContextNegotiated],
) -> Vec<(String, String, u8)> {
    contexts
        .iter()
        .filter(|pc| pc.reason == PresentationContextResultReason::Acceptance)
        .map(|pc| {
            (
                trim_uid(&pc.abstract_syntax).to_string(),
                trim_uid(&pc.transfer_syntax).to_string(),
                pc.id,
            )
        })
        .collect()
}

/// Sends a command set as one PDV (command sets are small).
pub async fn send_command<L: Link>(
    link: &mut L,
    pc: u8,
    command: Vec<u8>,
) -> Result<(), ForwardError> {
    link.send_pdu(&Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: pc,
            value_type: PDataValueType::Command,
            is_last: true,
            data: command,
        }],
    })
    .await
    .map_err(|e| ForwardError::Network(Box::new(e)))
}

/// Sends a small data set (an identifier, a report) as Data PDVs within the peer's maximum PDU.
pub async fn send_data_set<L: Link>(
    link: &mut L,
    pc: u8,
    data: &[u8],
    own_max_pdu: u32,
) -> Result<(), ForwardError> {
    send_chunks(link, pc, data, pdv_chunk(link.peer_max_pdu(), own_max_pdu)).await
}

/// The largest even PDV payload within the peer's maximum PDU length (0: no limit said).
fn pdv_chunk(peer_max_pdu: u32, own_max_pdu: u32) -> usize {
    let max_pdu = match peer_max_pdu {
        0 => own_max_pdu,
        n => n.min(own_max_pdu),
    };
    ((max_pdu.saturating_sub(6)) & !1).max(2) as usize
}

/// Sends a C-STORE-RQ command and its data set (streamed within the peer's maximum PDU);
/// the response is the caller's to read.
#[allow(clippy::too_many_arguments)]
pub async fn send_store_request<L: Link>(
    link: &mut L,
    pc: u8,
    message_id: u16,
    item: Outgoing<'_>,
    originator: Option<&dimse::MoveOriginator>,
    path: &Path,
    payload: Payload,
    own_max_pdu: u32,
) -> Result<(), ForwardError> {
    let command = dimse::encode_store_request(
        message_id,
        item.sop_class_uid,
        item.sop_instance_uid,
        originator,
    );
    send_command(link, pc, command).await?;
    let chunk = pdv_chunk(link.peer_max_pdu(), own_max_pdu);
    match payload {
        Payload::Stored(file, total) => send_file_data(link, pc, path, (file, total), chunk).await,
        Payload::Converted(converted) => send_chunks(link, pc, &converted, chunk).await,
    }
}

/// Opens a stored file at its data set (checking its head) before anything is sent.
async fn open_data_set(path: &Path) -> Result<(std::fs::File, u64), ForwardError> {
    use std::io::{Read, Seek, SeekFrom};
    let file_error = |source| ForwardError::File {
        path: path.to_path_buf(),
        source,
    };
    let owned = path.to_path_buf();
    tokio::task::spawn_blocking(move || -> std::io::Result<(std::fs::File, u64)> {
        let mut file = std::fs::File::open(&owned)?;
        let mut head = [0u8; part10::HEAD_LENGTH];
        file.read_exact(&mut head)?;
        let offset = part10::dataset_offset(&head).ok_or_else(|| {
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
    .map_err(file_error)
}

/// Streams an opened stored data set as Data PDVs, one chunk in memory at a time.
async fn send_file_data<L: Link>(
    association: &mut L,
    pc: u8,
    path: &Path,
    (mut file, total): (std::fs::File, u64),
    chunk: usize,
) -> Result<(), ForwardError> {
    use std::io::Read;
    let file_error = |source| ForwardError::File {
        path: path.to_path_buf(),
        source,
    };
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
            .send_pdu(&Pdu::PData {
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

async fn send_chunks<L: Link>(
    association: &mut L,
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
            .send_pdu(&Pdu::PData {
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
pub async fn receive_response<L: Link>(
    association: &mut L,
    timeout: Duration,
) -> Result<ResponseFields, ForwardError> {
    let mut command = Vec::new();
    loop {
        match association.receive_pdu().await {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(class: &str, ts: &str) -> (String, String) {
        (class.to_string(), ts.to_string())
    }

    #[test]
    fn a_planning_study_needs_one_association_and_the_stored_syntax_stays_exact() {
        // A CT series stored as JPEG Lossless is known; RT objects have not been seen yet.
        let jpeg = "1.2.840.10008.1.2.4.70";
        let (contexts, proposed) = proposal(&[pair(uids::CT_IMAGE_STORAGE, jpeg)]);
        for class in PLANNING_CLASSES {
            for ts in [EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN] {
                assert!(proposed.contains(&pair(class, ts)), "{class} {ts}");
                assert!(contexts.contains(&(class.to_string(), vec![ts.to_string()])));
            }
        }
        assert!(contexts.contains(&(uids::CT_IMAGE_STORAGE.to_string(), vec![jpeg.to_string()])));
        // One context of two syntaxes, the conversion fallback, for the known class only.
        let mixed: Vec<_> = contexts.iter().filter(|(_, ts)| ts.len() > 1).collect();
        assert_eq!(mixed.len(), 1);
        assert_eq!(mixed[0].0, uids::CT_IMAGE_STORAGE);
        assert_eq!(contexts.len(), 1 + 2 * PLANNING_CLASSES.len() + 1);
    }

    #[test]
    fn never_more_than_128_contexts() {
        let known: Vec<_> = (0..200)
            .map(|i| pair(&format!("1.2.3.{i}"), EXPLICIT_VR_LITTLE_ENDIAN))
            .collect();
        let (contexts, proposed) = proposal(&known);
        assert!(contexts.len() <= MAX_CONTEXTS, "{}", contexts.len());
        // The most recent pairs are the ones proposed.
        assert!(proposed.contains(&pair("1.2.3.199", EXPLICIT_VR_LITTLE_ENDIAN)));
        assert!(!proposed.contains(&pair("1.2.3.0", EXPLICIT_VR_LITTLE_ENDIAN)));
        for (class, _) in &contexts {
            assert!(
                contexts
                    .iter()
                    .filter(|(c, ts)| c == class && ts.len() == 1)
                    .count()
                    >= 1,
                "{class} has a fallback without an exact context"
            );
        }
    }
}
