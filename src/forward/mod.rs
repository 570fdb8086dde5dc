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

use crate::config::{Config, DestinationConfig};
use crate::metrics::Metrics;
use crate::store::{IndexHandle, StoreError};

/// What every forwarder shares.
pub struct Shared<'a> {
    pub config: &'a Config,
    /// The config in force: SIGHUP may add, change or remove destinations.
    pub config_changes: watch::Receiver<Arc<Config>>,
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
    #[error("destination {destination}: TLS (destinations.tls)")]
    Tls {
        destination: String,
        #[source]
        source: crate::tls::TlsError,
    },
    #[error("cannot start the forwarding threads")]
    Thread(#[source] std::io::Error),
}

/// How much lower than the receiving side forwarding is scheduled (a nice value added to its
/// threads'): on a busy machine the CPU goes to answering C-STOREs first, and forwarding
/// catches up in the gaps (weight 110 against 1024 when both want the same core).
const FORWARD_NICE: i32 = 10;

/// Puts rows a previous run left in flight back in the queue, then starts one forwarder per
/// destination, on a runtime of its own whose threads run at a lower priority
/// ([`FORWARD_NICE`]), and follows SIGHUP's changes to the destinations; the tracker waits
/// for them to stop.
pub async fn start(shared: Shared<'_>) -> Result<(), StartError> {
    let requeued = shared.index.execute(|db| db.requeue_in_flight()).await?;
    if requeued > 0 {
        tracing::info!(
            requeued,
            "forward rows left in flight by an earlier run are queued again"
        );
    }
    let (runtime, stopped) = run_apart(shared.shutdown.clone())
        .await
        .map_err(StartError::Thread)?;
    let mut forwarders = Forwarders {
        runtime,
        running: Vec::new(),
        settings: shared.config.forward.clone(),
        storage_dir: shared.config.storage.dir.clone(),
        index: shared.index.clone(),
        queue_changed: shared.queue_changed.clone(),
        shutdown: shared.shutdown.clone(),
        metrics: Arc::clone(shared.metrics),
        retry_requested: Arc::clone(shared.retry_requested),
    };
    for destination in &shared.config.destinations {
        forwarders.start(destination.clone())?;
    }
    let mut changes = shared.config_changes;
    let shutdown = shared.shutdown.clone();
    shared.tracker.spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                changed = changes.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let destinations = changes.borrow_and_update().destinations.clone();
                    forwarders.follow(&destinations).await;
                }
            }
        }
        let _ = stopped.await;
    });
    Ok(())
}

/// The running forwarders, one per destination, on the forwarding runtime.
struct Forwarders {
    runtime: tokio::runtime::Handle,
    running: Vec<Running>,
    settings: crate::config::ForwardConfig,
    storage_dir: std::path::PathBuf,
    index: IndexHandle,
    queue_changed: watch::Receiver<u64>,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
    retry_requested: Arc<tokio::sync::Notify>,
}

struct Running {
    destination: DestinationConfig,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Forwarders {
    fn start(&mut self, destination: DestinationConfig) -> Result<(), StartError> {
        tracing::info!(destination = %destination.name, ae_title = %destination.ae_title, address = %destination.address, "forwarding");
        let stop = self.shutdown.child_token();
        let forwarder = worker::Forwarder {
            name: destination.name.clone(),
            scu: scu::Scu::new(
                destination.clone(),
                self.settings.clone(),
                self.storage_dir.clone(),
                scu::ClientTls::for_destination(&destination).map_err(|source| {
                    StartError::Tls {
                        destination: destination.name.clone(),
                        source,
                    }
                })?,
            ),
            settings: self.settings.clone(),
            index: self.index.clone(),
            queue_changed: self.queue_changed.clone(),
            shutdown: stop.clone(),
            metrics: Arc::clone(&self.metrics),
            retry_requested: Arc::clone(&self.retry_requested),
        };
        let task = self.runtime.spawn(forwarder.run());
        self.running.push(Running {
            destination,
            stop,
            task,
        });
        Ok(())
    }

    /// Makes the running forwarders match `destinations`: a removed or changed destination's
    /// forwarder finishes the instance it is sending and stops, its rows in flight go back to
    /// the queue; a new or changed one starts. The others go on undisturbed.
    async fn follow(&mut self, destinations: &[DestinationConfig]) {
        let (kept, gone): (Vec<Running>, Vec<Running>) = std::mem::take(&mut self.running)
            .into_iter()
            .partition(|r| destinations.contains(&r.destination));
        self.running = kept;
        for running in gone {
            let name = running.destination.name.clone();
            running.stop.cancel();
            let _ = running.task.await;
            let requeue = name.clone();
            match self
                .index
                .execute(move |db| db.requeue_in_flight_of(&requeue))
                .await
            {
                Ok(_) => {
                    tracing::info!(destination = %name, "forwarder stopped: the destination was changed or removed")
                }
                Err(e) => {
                    tracing::error!(destination = %name, cause = %crate::error_chain(&e), "cannot queue a stopped forwarder's rows again")
                }
            }
        }
        for destination in destinations {
            if self.running.iter().any(|r| &r.destination == destination) {
                continue;
            }
            let name = destination.name.clone();
            if let Err(e) = self.start(destination.clone()) {
                tracing::error!(destination = %name, cause = %crate::error_chain(&e), "cannot start forwarding to a reloaded destination");
            }
        }
    }
}

/// Starts the forwarding runtime on its own thread, each of its threads at a lower priority;
/// returns its handle and a receiver told once it has stopped (after `shutdown`, when every
/// forwarder on it has ended). The runtime is built, and dropped, on its own thread (a
/// runtime cannot be dropped on an async one).
async fn run_apart(
    shutdown: CancellationToken,
) -> std::io::Result<(tokio::runtime::Handle, tokio::sync::oneshot::Receiver<()>)> {
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
                    let _ = ready.send(Ok(runtime.handle().clone()));
                    runtime
                }
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            };
            runtime.block_on(shutdown.cancelled());
            // Every forwarder has a child of `shutdown`: they finish their instance and end.
            runtime.shutdown_timeout(FORWARD_STOP);
            let _ = done.send(());
        })?;
    match started.await {
        Ok(Ok(handle)) => Ok((handle, stopped)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(std::io::Error::other("the forwarding thread ended at once")),
    }
}

/// How long the forwarders have to finish the instance they are sending at shutdown.
const FORWARD_STOP: std::time::Duration = std::time::Duration::from_secs(30);

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
