//! The DICOM listener: accepts connections, applies the peer address allow-list and the
//! association limit, and runs each association as a task under one cancellation token and
//! task tracker. [`run`] takes an already-bound listener so tests can bind port 0.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use dicom_ul::Pdu;
use dicom_ul::pdu::{
    AssociationRJ, AssociationRJResult, AssociationRJServiceProviderPresentationReason,
    AssociationRJSource,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, ConfigError, ReloadablePolicy};
use crate::naming::Naming;
use crate::receive::{ReceiveContext, error_chain};
use crate::spool::{Spool, SpoolError};
use crate::store::{self, IndexHandle, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {address}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the storage folder")]
    Spool(#[from] SpoolError),
    #[error("cannot open the database")]
    Store(#[from] StoreError),
    #[error("cannot start the index writer")]
    Thread(#[source] std::io::Error),
    #[error("cannot load the naming rules")]
    Rules(#[from] crate::rules::RulesLoadError),
    #[error("cannot install signal handlers")]
    Signals(#[source] std::io::Error),
}

/// Requests in the index writer's queue; beyond this, receivers wait (backpressure).
const INDEX_QUEUE: usize = 1024;

/// Runs the gateway until `shutdown` is cancelled, then drains associations within the
/// configured deadline.
pub async fn run(
    listener: TcpListener,
    http_listener: Option<TcpListener>,
    config: Arc<Config>,
    policy: watch::Receiver<Arc<ReloadablePolicy>>,
    naming: watch::Receiver<Arc<Naming>>,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let naming_for_http = naming.clone();
    let spool = Arc::new(Spool::open(&config.storage.dir, config.storage.durability)?);
    let conn = store::open(&config.storage.database_path(), config.storage.durability)?;
    let (queue_changed_tx, queue_changed) = watch::channel(0u64);
    let (index, writer_thread) = IndexHandle::spawn(
        conn,
        INDEX_QUEUE,
        crate::store::WriterContext {
            naming: Some(naming),
            destinations: Arc::new(config.destinations.clone()),
            queue_changed: queue_changed_tx,
        },
    )
    .map_err(ServerError::Thread)?;
    let tracker = TaskTracker::new();
    crate::forward::start(
        &config.listener.extra_sop_classes,
        &config.destinations,
        &config.forward,
        &index,
        &config.storage.dir,
        &queue_changed,
        &shutdown,
        &tracker,
        &metrics,
    )
    .await?;
    tracker.spawn(retention(
        Arc::clone(&spool),
        index.clone(),
        config.storage.retention,
        shutdown.clone(),
    ));
    if let Some(http) = http_listener {
        let state = crate::http::AppState::new(
            Arc::clone(&config),
            index.clone(),
            Arc::clone(&spool),
            naming_for_http,
            Arc::clone(&metrics),
        );
        let stop = shutdown.clone();
        tracker.spawn(async move {
            if let Err(e) = crate::http::serve(http, state, stop).await {
                tracing::error!(cause = %error_chain(&e), "HTTP server stopped");
            }
        });
    }
    let context = ReceiveContext {
        spool,
        index,
        metrics: Arc::clone(&metrics),
        policy: policy.clone(),
    };
    let listener_config = Arc::new(config.listener.clone());
    let associations = Arc::new(Semaphore::new(config.listener.max_associations));
    let local = listener.local_addr().map_err(|source| ServerError::Bind {
        address: config.listener.bind,
        source,
    })?;
    // Tests and scripts wait for this line: everything is open by now.
    tracing::info!(
        address = %local,
        ae_title = %config.listener.ae_title,
        storage = %config.storage.dir.display(),
        durability = ?config.storage.durability,
        "DICOM listener ready"
    );

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
        let allowed_peers = &policy.borrow().allowed_peer_addresses;
        if !allowed_peers.is_empty() && !allowed_peers.contains(&peer.ip()) {
            metrics.rejection("peer-address");
            tracing::warn!(%peer, "connection from an address outside listener.allowed_peer_addresses closed");
            continue;
        }
        match Arc::clone(&associations).try_acquire_owned() {
            Ok(permit) => {
                let listener_config = Arc::clone(&listener_config);
                let context = context.clone();
                let shutdown = shutdown.clone();
                tracker.spawn(async move {
                    crate::association::serve(socket, peer, listener_config, context, shutdown)
                        .await;
                    drop(permit);
                });
            }
            Err(_) => {
                metrics.rejection("association-limit");
                tracing::warn!(%peer, limit = config.listener.max_associations, "association limit reached: rejecting");
                let timeout = config.listener.idle_timeout;
                tracker.spawn(async move {
                    if let Err(e) = tokio::time::timeout(timeout, reject_busy(socket)).await {
                        tracing::debug!(%peer, cause = %e, "busy rejection timed out");
                    }
                });
            }
        }
    }

    tracing::info!(
        associations = tracker.len(),
        deadline_s = config.listener.shutdown_deadline.as_secs(),
        "shutting down: no new associations; finishing the ones in progress"
    );
    drop(listener);
    tracker.close();
    if tokio::time::timeout(config.listener.shutdown_deadline, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            remaining = tracker.len(),
            "shutdown deadline passed; leaving unfinished associations"
        );
        return Ok(());
    }
    drop(context);
    // Every handle is gone: the writer finishes its last batch and stops.
    let _ = tokio::task::spawn_blocking(move || writer_thread.join()).await;
    tracing::info!("stopped");
    Ok(())
}

/// Deletes spool files that every destination has, once `storage.retention` has passed since
/// they were received; index rows stay. Sweeps every minute (more often for a short retention).
async fn retention(
    spool: Arc<Spool>,
    index: IndexHandle,
    keep: std::time::Duration,
    shutdown: CancellationToken,
) {
    let every = (keep / 2).clamp(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(60),
    );
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let cutoff =
            humantime::format_rfc3339_millis(std::time::SystemTime::now() - keep).to_string();
        let expired = match index
            .execute(move |conn| crate::store::forward::expired_files(conn, &cutoff, 1000))
            .await
        {
            Ok(expired) => expired,
            Err(e) => {
                tracing::error!(cause = %error_chain(&e), "retention: cannot list expired files");
                continue;
            }
        };
        for (sop_instance_uid, path) in expired {
            let remover = Arc::clone(&spool);
            let removed = tokio::task::spawn_blocking(move || remover.remove(&path)).await;
            match removed {
                Ok(Ok(())) => {
                    let now = crate::receive::now_rfc3339();
                    let _ = index
                        .execute(move |conn| {
                            crate::store::forward::mark_file_deleted(conn, &sop_instance_uid, &now)
                        })
                        .await;
                }
                Ok(Err(e)) => {
                    tracing::warn!(cause = %error_chain(&e), "retention: cannot remove a file")
                }
                Err(e) => tracing::warn!(cause = %e, "retention task failed"),
            }
        }
    }
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

/// `simgate serve`: loads the config, binds, handles signals (SIGTERM and Ctrl-C drain and
/// stop; SIGHUP re-reads the reloadable keys) and runs until stopped.
pub async fn serve(config_path: PathBuf) -> Result<(), ServerError> {
    let config = Arc::new(Config::load(&config_path)?);
    let listener = TcpListener::bind(config.listener.bind)
        .await
        .map_err(|source| ServerError::Bind {
            address: config.listener.bind,
            source,
        })?;
    let (policy_tx, policy) = watch::channel(Arc::new(config.reloadable_policy()));
    let naming = load_naming(&config)?;
    tracing::info!(
        standard_names = naming.nomenclature.len(),
        series_kinds = naming.rules.kinds().len(),
        "naming rules loaded"
    );
    let (naming_tx, naming) = watch::channel(Arc::new(naming));
    let shutdown = CancellationToken::new();
    spawn_signal_handlers(config_path, policy_tx, naming_tx, shutdown.clone())?;
    let http_listener = match config.http.bind {
        Some(address) => Some(
            TcpListener::bind(address)
                .await
                .map_err(|source| ServerError::Bind { address, source })?,
        ),
        None => None,
    };
    run(listener, http_listener, config, policy, naming, shutdown).await
}

/// Opens (and migrates) the database to read imported playbooks, then loads the rules.
fn load_naming(config: &Config) -> Result<Naming, ServerError> {
    let conn = store::open(&config.storage.database_path(), config.storage.durability)?;
    Ok(crate::rules::load(&config.naming, &conn)?)
}

fn spawn_signal_handlers(
    config_path: PathBuf,
    policy: watch::Sender<Arc<ReloadablePolicy>>,
    naming: watch::Sender<Arc<Naming>>,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).map_err(ServerError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(ServerError::Signals)?;
    let mut hangup = signal(SignalKind::hangup()).map_err(ServerError::Signals)?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = terminate.recv() => { tracing::info!("SIGTERM received"); shutdown.cancel(); }
                _ = interrupt.recv() => { tracing::info!("interrupt received"); shutdown.cancel(); }
                _ = hangup.recv() => reload(&config_path, &policy, &naming),
            }
        }
    });
    Ok(())
}

/// Re-reads the config file; only the reloadable keys take effect, the rest need a restart.
fn reload(
    config_path: &std::path::Path,
    policy: &watch::Sender<Arc<ReloadablePolicy>>,
    naming: &watch::Sender<Arc<Naming>>,
) {
    match Config::load(config_path) {
        Ok(config) => {
            let next = config.reloadable_policy();
            policy.send_replace(Arc::new(next.clone()));
            // Imported playbooks and edited rules take effect for new evidence from now on.
            match load_naming(&config) {
                Ok(rules) => {
                    naming.send_replace(Arc::new(rules));
                }
                Err(e) => {
                    tracing::error!(cause = %error_chain(&e), "naming rules not reloaded; keeping the previous ones")
                }
            }
            tracing::info!(
                reserve_free_bytes = next.reserve_free_bytes,
                allowed_calling_ae_titles = next.allowed_calling_ae_titles.len(),
                allowed_peer_addresses = next.allowed_peer_addresses.len(),
                "configuration reloaded"
            );
        }
        Err(e) => {
            tracing::error!(cause = %error_chain(&e), "configuration not reloaded; keeping the previous one")
        }
    }
}
