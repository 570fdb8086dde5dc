//! Store-and-forward: every stored instance goes, byte for byte, to each destination whose
//! filters it passes ([`routing`], decided when it is indexed), through the durable queue.
//! One [`worker`] per destination sends queued rows in arrival order with its [`scu`] and
//! records what the [`policy`] makes of each attempt.

pub mod policy;
pub mod routing;
pub mod scu;
pub mod worker;

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::{IndexHandle, StoreError};

/// What every forwarder shares.
pub struct Shared<'a> {
    pub config: &'a Config,
    pub index: &'a IndexHandle,
    pub queue_changed: &'a watch::Receiver<u64>,
    pub shutdown: &'a CancellationToken,
    pub tracker: &'a TaskTracker,
    pub metrics: &'a Arc<Metrics>,
    /// Notified when a person asks for a retry: a forwarder backing off tries at once.
    pub retry_requested: &'a Arc<tokio::sync::Notify>,
}

/// Why forwarding could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("TLS towards a destination")]
    Tls(#[from] crate::tls::TlsError),
}

/// Puts rows a previous run left in flight back in the queue, then starts one forwarder per
/// destination.
pub async fn start(shared: Shared<'_>) -> Result<(), StartError> {
    let requeued = shared.index.execute(|db| db.requeue_in_flight()).await?;
    if requeued > 0 {
        tracing::info!(
            requeued,
            "forward rows left in flight by an earlier run are queued again"
        );
    }
    let config = shared.config;
    for destination in &config.destinations {
        tracing::info!(destination = %destination.name, ae_title = %destination.ae_title, address = %destination.address, "forwarding");
        let forwarder = worker::Forwarder {
            name: destination.name.clone(),
            scu: scu::Scu::new(
                destination.clone(),
                config.forward.clone(),
                config.storage.dir.clone(),
                scu::ClientTls::for_destination(destination)?,
            ),
            settings: config.forward.clone(),
            index: shared.index.clone(),
            queue_changed: shared.queue_changed.clone(),
            shutdown: shared.shutdown.clone(),
            metrics: Arc::clone(shared.metrics),
            retry_requested: Arc::clone(shared.retry_requested),
        };
        shared.tracker.spawn(forwarder.run());
    }
    Ok(())
}
