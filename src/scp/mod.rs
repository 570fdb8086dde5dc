//! The DICOM side, as an SCP: the listener accepts connections, applies the peer address
//! allow-list and the association limit, and runs each [`association`] as a task; an
//! association hands each C-STORE to [`receive`], which walks the data set as it arrives
//! ([`scan`]), reads its [`header`], makes it durable and records it. Storage Commitment's
//! N-ACTION goes to [`commitment`], C-FIND to [`find`], C-MOVE and C-GET to [`retrieve`].

pub mod association;
mod commitment;
mod find;
pub mod header;
pub mod receive;
mod retrieve;
pub mod scan;

/// A complete request other than C-STORE, with its data set (small, read whole).
pub(crate) struct Message {
    pub presentation_context_id: u8,
    pub abstract_syntax: String,
    pub transfer_syntax: String,
    pub command: crate::dicom::dimse::Command,
    pub data: Vec<u8>,
}

impl Message {
    /// The C-FIND, C-MOVE or C-GET identifier, on a context of one of `classes` (the
    /// operation's FIND, MOVE or GET classes) whose Affected SOP Class UID is the context's.
    pub fn query(
        &self,
        classes: [&str; 2],
        retrieve: bool,
    ) -> Result<crate::query::Query, (crate::dicom::dimse::Status, String)> {
        use crate::dicom::dimse::Status;
        let model = crate::query::Model::of_sop_class(&self.abstract_syntax)
            .filter(|_| {
                classes.contains(&self.abstract_syntax.as_str())
                    && self.command.affected_sop_class_uid.as_deref()
                        == Some(self.abstract_syntax.as_str())
            })
            .ok_or_else(|| {
                (
                    Status::SOP_CLASS_NOT_SUPPORTED,
                    format!(
                        "{} is not a Patient Root or Study Root context for this operation",
                        self.abstract_syntax
                    ),
                )
            })?;
        let object = crate::dicom::dataset::parse(&self.data, &self.transfer_syntax)
            .map_err(|e| (Status::UNABLE_TO_PROCESS, crate::error_chain(&e)))?;
        crate::query::Query::parse(&object, model, retrieve)
    }
}

use std::net::SocketAddr;
use std::sync::Arc;

use dicom_ul::Pdu;
use dicom_ul::pdu::{
    AssociationRJ, AssociationRJResult, AssociationRJServiceProviderPresentationReason,
    AssociationRJSource,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ListenerConfig;
use crate::logging::RateLimitedWarning;
use receive::ReceiveContext;

/// Accepts associations until `shutdown` is cancelled. Each runs on `tracker`, so the caller
/// can wait for the ones in progress.
pub async fn listen(
    listener: TcpListener,
    tls: Option<TlsListener>,
    config: Arc<ListenerConfig>,
    context: ReceiveContext,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let mut policy = context.policy.clone();
    let build = |allowed: std::collections::BTreeSet<crate::config::AeTitle>| {
        let plain = association::negotiation(&config, allowed);
        let secure = tls
            .as_ref()
            .map(|t| Arc::new(plain.clone().tls_config(Arc::clone(&t.config))));
        (Arc::new(plain), secure)
    };
    let (mut negotiation, mut tls_negotiation) =
        build(policy.borrow_and_update().allowed_calling_ae_titles.clone());
    let slots = Arc::new(Slots {
        associations: Arc::new(Semaphore::new(config.max_associations)),
        per_address: std::sync::Mutex::new(std::collections::HashMap::new()),
        limit_warning: std::sync::Mutex::new(RateLimitedWarning::new(WARN_EVERY)),
        silent_warning: std::sync::Mutex::new(RateLimitedWarning::new(WARN_EVERY)),
    });
    // Connections that have not sent their A-ASSOCIATE-RQ yet: bounded, and they hold no
    // association slot, so silent sockets cannot lock simulators out.
    let pending = Arc::new(Semaphore::new(
        config.max_associations.saturating_mul(PENDING_PER_SLOT),
    ));
    let mut pending_warning = RateLimitedWarning::new(WARN_EVERY);
    loop {
        let tls_accept = async {
            match &tls {
                Some(t) => t.listener.accept().await,
                None => std::future::pending().await,
            }
        };
        let (accepted, secure) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => (accepted, false),
            accepted = tls_accept => (accepted, true),
        };
        let (socket, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                tracing::error!(cause = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        // DIMSE is request/response: Nagle would delay every response (DICOM-NOTES).
        if let Err(e) = socket.set_nodelay(true) {
            tracing::warn!(%peer, cause = %e, "cannot set TCP_NODELAY");
        }
        if policy.has_changed().unwrap_or(false) {
            (negotiation, tls_negotiation) =
                build(policy.borrow_and_update().allowed_calling_ae_titles.clone());
        }
        if !peer_allowed(&context, peer) {
            context.metrics.rejection("peer-address");
            tracing::warn!(%peer, "connection from an address outside listener.allowed_peer_addresses closed");
            continue;
        }
        let Ok(waiting) = Arc::clone(&pending).try_acquire_owned() else {
            context.metrics.rejection("pending-connection-limit");
            if let Some(suppressed) = pending_warning.ready() {
                tracing::warn!(%peer, suppressed, "too many connections waiting for their association request: closing new ones");
            }
            continue;
        };
        let negotiation = match (&tls_negotiation, secure) {
            (Some(tls_negotiation), true) => Arc::clone(tls_negotiation),
            _ => Arc::clone(&negotiation),
        };
        let context = context.clone();
        let shutdown = shutdown.clone();
        let slots = Arc::clone(&slots);
        let config = Arc::clone(&config);
        tracker.spawn(async move {
            // The first bytes of the A-ASSOCIATE-RQ, within the request timeout.
            let mut first = [0u8; 1];
            let arrived = tokio::select! {
                () = shutdown.cancelled() => return,
                peeked = tokio::time::timeout(config.association_request_timeout, socket.peek(&mut first)) => peeked,
            };
            match arrived {
                // A TLS ClientHello (0x16) on the plain port, an A-ASSOCIATE-RQ (0x01) on the
                // TLS one: the peer is configured for the other port.
                Ok(Ok(n)) if n > 0 && !secure && first[0] == 0x16 => {
                    context.metrics.rejection("tls-on-plain-port");
                    tracing::warn!(%peer, "a TLS handshake on the plain DICOM port (listener.bind): the peer should use the TLS port (listener.tls.bind)");
                    return;
                }
                Ok(Ok(n)) if n > 0 && secure && first[0] == 0x01 => {
                    context.metrics.rejection("plain-on-tls-port");
                    tracing::warn!(%peer, "a plain DICOM association request on the TLS port (listener.tls.bind): the peer should use TLS, or the plain port (listener.bind)");
                    return;
                }
                Ok(Ok(n)) if n > 0 => {}
                Ok(_) => return, // closed, or a read error: nothing to answer
                Err(_) => {
                    context.metrics.rejection("association-request-timeout");
                    if let Some(suppressed) = slots.silent_warning.lock().ok().and_then(|mut w| w.ready()) {
                        tracing::warn!(%peer, suppressed, timeout_s = config.association_request_timeout.as_secs(), "connection sent no association request in time: closed");
                    }
                    return;
                }
            }
            drop(waiting);
            match slots.take(peer.ip(), config.max_associations_per_address) {
                Ok(slot) => {
                    association::serve(socket, peer, negotiation, secure, context, config.association_request_timeout, shutdown).await;
                    drop(slot);
                }
                Err(limit) => {
                    context.metrics.rejection("association-limit");
                    if let Some(suppressed) = slots.limit_warning.lock().ok().and_then(|mut w| w.ready()) {
                        tracing::warn!(%peer, %limit, suppressed, "association limit reached: rejecting");
                    }
                    let timeout = config.association_request_timeout;
                    if let Err(e) = tokio::time::timeout(timeout, reject_busy(socket)).await {
                        tracing::debug!(%peer, cause = %e, "busy rejection timed out");
                    }
                }
            }
        });
    }
}

/// The TLS listener beside the plain one, and its configuration.
pub struct TlsListener {
    pub listener: TcpListener,
    pub config: Arc<rustls::ServerConfig>,
}

/// Connections waiting for their A-ASSOCIATE-RQ, per association slot.
const PENDING_PER_SLOT: usize = 8;
/// A repeated warning (limits, silent connections) is written at most this often.
const WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Association slots: the global limit and the per-address count, taken once a connection has
/// sent its association request.
struct Slots {
    associations: Arc<Semaphore>,
    per_address: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
    limit_warning: std::sync::Mutex<RateLimitedWarning>,
    silent_warning: std::sync::Mutex<RateLimitedWarning>,
}

/// A held association slot; dropping it gives it back.
struct Slot {
    slots: Arc<Slots>,
    address: std::net::IpAddr,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Slots {
    /// A slot for this address, or which limit stands in the way.
    fn take(
        self: &Arc<Self>,
        address: std::net::IpAddr,
        per_address: usize,
    ) -> Result<Slot, String> {
        let mut counts = self.per_address.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(address).or_insert(0);
        if *count >= per_address {
            return Err(format!(
                "{per_address} per address (listener.max_associations_per_address)"
            ));
        }
        let permit = Arc::clone(&self.associations)
            .try_acquire_owned()
            .map_err(|_| "listener.max_associations".to_string())?;
        *count += 1;
        Ok(Slot {
            slots: Arc::clone(self),
            address,
            _permit: permit,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self
            .slots
            .per_address
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.address);
            }
        }
    }
}

fn peer_allowed(context: &ReceiveContext, peer: SocketAddr) -> bool {
    let policy = context.policy.borrow();
    policy.allowed_peer_addresses.is_empty() || policy.allowed_peer_addresses.contains(&peer.ip())
}

/// Answers an association request with A-ASSOCIATE-RJ (transient, local limit exceeded),
/// as DCMTK does when it has no room, so the peer retries later instead of seeing a reset.
async fn reject_busy(mut socket: TcpStream) {
    let mut head = [0u8; 6];
    if socket.read_exact(&mut head).await.is_err() || head[0] != 0x01 {
        return;
    }
    let length = u32::from_be_bytes([head[2], head[3], head[4], head[5]]) as u64;
    // An A-ASSOCIATE-RQ is a few KiB; read it (bounded) so the peer sees our answer.
    let mut rest = (&mut socket).take(length.min(64 * 1024));
    if tokio::io::copy(&mut rest, &mut tokio::io::sink())
        .await
        .is_err()
    {
        return;
    }
    let rejection = Pdu::AssociationRJ(AssociationRJ {
        result: AssociationRJResult::Transient,
        source: AssociationRJSource::ServiceProviderPresentation(
            AssociationRJServiceProviderPresentationReason::LocalLimitExceeded,
        ),
    });
    let mut bytes = Vec::new();
    if dicom_ul::write_pdu(&mut bytes, &rejection).is_ok() {
        let _ = socket.write_all(&bytes).await;
        let _ = socket.shutdown().await;
    }
}
