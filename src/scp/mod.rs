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
use receive::ReceiveContext;

/// Accepts associations until `shutdown` is cancelled. Each runs on `tracker`, so the caller
/// can wait for the ones in progress.
pub async fn listen(
    listener: TcpListener,
    config: Arc<ListenerConfig>,
    context: ReceiveContext,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let mut policy = context.policy.clone();
    let mut negotiation = Arc::new(association::negotiation(
        &config,
        policy.borrow_and_update().allowed_calling_ae_titles.clone(),
    ));
    let associations = Arc::new(Semaphore::new(config.max_associations));
    loop {
        let (socket, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::error!(cause = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // DIMSE is request/response: Nagle would delay every response (DICOM-NOTES).
        if let Err(e) = socket.set_nodelay(true) {
            tracing::warn!(%peer, cause = %e, "cannot set TCP_NODELAY");
        }
        if policy.has_changed().unwrap_or(false) {
            negotiation = Arc::new(association::negotiation(
                &config,
                policy.borrow_and_update().allowed_calling_ae_titles.clone(),
            ));
        }
        if !peer_allowed(&context, peer) {
            context.metrics.rejection("peer-address");
            tracing::warn!(%peer, "connection from an address outside listener.allowed_peer_addresses closed");
            continue;
        }
        match Arc::clone(&associations).try_acquire_owned() {
            Ok(permit) => {
                let negotiation = Arc::clone(&negotiation);
                let context = context.clone();
                let shutdown = shutdown.clone();
                tracker.spawn(async move {
                    association::serve(socket, peer, negotiation, context, shutdown).await;
                    drop(permit);
                });
            }
            Err(_) => {
                context.metrics.rejection("association-limit");
                tracing::warn!(%peer, limit = config.max_associations, "association limit reached: rejecting");
                let timeout = config.idle_timeout;
                tracker.spawn(async move {
                    if let Err(e) = tokio::time::timeout(timeout, reject_busy(socket)).await {
                        tracing::debug!(%peer, cause = %e, "busy rejection timed out");
                    }
                });
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
