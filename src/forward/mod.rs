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
    #[error("cannot start the forwarding threads")]
    Thread(#[source] std::io::Error),
}

/// How much lower than the receiving side forwarding is scheduled (a nice value added to its
/// threads'): on a busy machine the CPU goes to answering C-STOREs first, and forwarding
/// catches up in the gaps (weight 110 against 1024 when both want the same core).
const FORWARD_NICE: i32 = 10;

/// Puts rows a previous run left in flight back in the queue, then starts one forwarder per
/// destination, on a runtime of its own whose threads run at a lower priority
/// ([`FORWARD_NICE`]); the tracker waits for them to stop.
pub async fn start(shared: Shared<'_>) -> Result<(), StartError> {
    let requeued = shared.index.execute(|db| db.requeue_in_flight()).await?;
    if requeued > 0 {
        tracing::info!(
            requeued,
            "forward rows left in flight by an earlier run are queued again"
        );
    }
    let config = shared.config;
    let mut forwarders = Vec::new();
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
        forwarders.push(forwarder);
    }
    if forwarders.is_empty() {
        return Ok(());
    }
    let stopped = run_apart(forwarders).await.map_err(StartError::Thread)?;
    shared.tracker.spawn(async move {
        let _ = stopped.await;
    });
    Ok(())
}

/// Runs the forwarders on their own runtime and threads, each thread at a lower priority;
/// the receiver says when all have stopped. The runtime is built, and dropped, on its own
/// thread (a runtime cannot be dropped on an async one).
async fn run_apart(
    forwarders: Vec<worker::Forwarder>,
) -> std::io::Result<tokio::sync::oneshot::Receiver<()>> {
    let (ready, started) = tokio::sync::oneshot::channel();
    let (done, stopped) = tokio::sync::oneshot::channel();
    // Absolute, from this thread's: a thread a niced one starts inherits its nice value, and
    // adding to that would push the blocking pool's threads to 19.
    let nice = rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap_or(0)
        + FORWARD_NICE;
    std::thread::Builder::new()
        .name("forward".into())
        .spawn(move || {
            lower_priority(nice);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(FORWARD_WORKERS)
                .thread_name("forward")
                .on_thread_start(move || lower_priority(nice))
                .enable_all()
                .build();
            let runtime = match runtime {
                Ok(runtime) => {
                    let _ = ready.send(Ok(()));
                    runtime
                }
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            };
            runtime.block_on(async move {
                let mut running = tokio::task::JoinSet::new();
                for forwarder in forwarders {
                    running.spawn(forwarder.run());
                }
                while running.join_next().await.is_some() {}
            });
            let _ = done.send(());
        })?;
    match started.await {
        Ok(Ok(())) => Ok(stopped),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(std::io::Error::other("the forwarding thread ended at once")),
    }
}

/// Worker threads of the forwarding runtime (sending is mostly waiting on the network).
const FORWARD_WORKERS: usize = 2;

/// Sets the calling thread's nice value (Linux: a nice value is per thread). Without it
/// forwarding still works, at the receivers' priority.
fn lower_priority(nice: i32) {
    let thread = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(thread), nice) {
        tracing::debug!(cause = %e, "cannot lower the priority of a forwarding thread");
    }
}
