//! The composition root: `simgate serve` loads the config, opens the spool and the index,
//! starts the index writer, the forwarders, retention, the HTTP side and the DICOM listener,
//! handles signals (SIGTERM and Ctrl-C drain and stop; SIGHUP reloads), and stops them in
//! order. [`run`] takes already-bound listeners and a cancellation token, so a test can bind
//! port 0 and stop it at will.

mod reconcile;
mod retention;
mod safety_check;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, ConfigError, ReloadablePolicy};
use crate::error_chain;
use crate::metrics::Metrics;
use crate::naming::Naming;
use crate::scp::receive::ReceiveContext;
use crate::service::Service;
use crate::service::rules::{self, RulesLoadError};
use crate::spool::{Spool, SpoolError};
use crate::store::{self, IndexHandle, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {address}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the storage folder {path}")]
    Folder {
        path: PathBuf,
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
    Rules(#[from] RulesLoadError),
    #[error("cannot install signal handlers")]
    Signals(#[source] std::io::Error),
    #[error(transparent)]
    Control(#[from] crate::control::ControlError),
    #[error("another simgate is serving this storage folder (it holds {0})")]
    InUse(PathBuf),
    #[error("{key}: TLS")]
    Tls {
        /// The config table whose files these are.
        key: String,
        #[source]
        source: crate::tls::TlsError,
    },
    #[error("cannot start forwarding")]
    Forward(#[from] crate::forward::StartError),
}

/// Every socket simgate listens on, bound before anything else starts.
pub struct Listeners {
    pub dicom: TcpListener,
    pub dicom_tls: Option<crate::scp::TlsListener>,
    pub http: Option<TcpListener>,
    /// HTTPS: the web side's TLS configuration.
    pub http_tls: Option<Arc<rustls::ServerConfig>>,
}

/// The HTTP side's own runtime: its async workers and blocking threads (reads, health checks).
/// Nothing a web client does can occupy the threads the DICOM side runs on.
const HTTP_WORKERS: usize = 2;
const HTTP_BLOCKING_THREADS: usize = 8;

/// Runs the HTTP side on a runtime of its own, on its own threads; the receiver says when it
/// has stopped.
fn serve_http_apart(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    state: crate::http::AppState,
    shutdown: CancellationToken,
) -> std::io::Result<tokio::sync::oneshot::Receiver<()>> {
    let listener = listener.into_std()?;
    let (done, stopped) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(HTTP_WORKERS)
                .max_blocking_threads(HTTP_BLOCKING_THREADS)
                .thread_name("http-worker")
                .enable_all()
                .build();
            match runtime {
                Ok(runtime) => runtime.block_on(async move {
                    let served = match TcpListener::from_std(listener) {
                        Ok(listener) => crate::http::serve(listener, tls, state, shutdown).await,
                        Err(e) => Err(e),
                    };
                    if let Err(e) = served {
                        tracing::error!(cause = %error_chain(&e), "HTTP server stopped");
                    }
                }),
                Err(e) => tracing::error!(cause = %e, "cannot start the HTTP runtime"),
            }
            let _ = done.send(());
        })?;
    Ok(stopped)
}

/// Jobs in the index writer's queue; beyond this, receivers wait (backpressure).
const INDEX_QUEUE: usize = 1024;

/// Reads every certificate, key and CA the config names (the DICOM listener's and the web
/// side's server configurations, returned, and each destination's client one): `serve` at
/// start and `check-config` (the unit's ExecStartPre) refuse a file that cannot be used, with
/// its config table.
pub fn check_tls(config: &Config) -> Result<ServerTls, AppError> {
    let dicom = match &config.listener.tls {
        Some(t) => Some(
            crate::tls::server_config(&t.certificate, &t.private_key, t.client_ca.as_deref())
                .map_err(|source| AppError::Tls {
                    key: "listener.tls".into(),
                    source,
                })?,
        ),
        None => None,
    };
    let http = match &config.http.tls {
        Some(t) => Some(
            crate::tls::server_config(&t.certificate, &t.private_key, None).map_err(|source| {
                AppError::Tls {
                    key: "http.tls".into(),
                    source,
                }
            })?,
        ),
        None => None,
    };
    for destination in &config.destinations {
        crate::forward::scu::ClientTls::for_destination(destination).map_err(|source| {
            AppError::Tls {
                key: format!("destinations {:?} tls", destination.name),
                source,
            }
        })?;
    }
    Ok(ServerTls { dicom, http })
}

/// The server side of TLS, read from the config's files.
pub struct ServerTls {
    /// `[listener.tls]`'s.
    pub dicom: Option<Arc<rustls::ServerConfig>>,
    /// `[http.tls]`'s.
    pub http: Option<Arc<rustls::ServerConfig>>,
}

/// `simgate serve`: loads the config, binds, handles signals and runs until stopped.
pub async fn serve(config_path: PathBuf) -> Result<(), AppError> {
    let config = Arc::new(Config::load(&config_path)?);
    // Before anything touches the storage folder or the database: one gateway per folder.
    let _lock = lock_storage(&config.storage.dir)?;
    let bind = |address: SocketAddr| async move {
        TcpListener::bind(address)
            .await
            .map_err(|source| AppError::Bind { address, source })
    };
    // Certificates and keys are read now: a wrong path stops the start with its name.
    let ServerTls {
        dicom: dicom_tls_config,
        http: http_tls,
    } = check_tls(&config)?;
    let dicom_tls = match (&config.listener.tls, dicom_tls_config) {
        (Some(t), Some(tls)) => Some(crate::scp::TlsListener {
            config: tls,
            listener: bind(t.bind).await?,
        }),
        _ => None,
    };
    let listeners = Listeners {
        dicom: bind(config.listener.bind).await?,
        dicom_tls,
        http: match config.http.bind {
            Some(address) => Some(bind(address).await?),
            None => None,
        },
        http_tls,
    };
    let (policy_tx, policy) = watch::channel(Arc::new(config.reloadable_policy()));
    let naming = tokio::task::spawn_blocking({
        let config = Arc::clone(&config);
        move || load_naming(&config)
    })
    .await
    .map_err(|e| AppError::Thread(std::io::Error::other(e)))??;
    tracing::info!(
        standard_names = naming.nomenclature.len(),
        series_kinds = naming.rules.kinds().len(),
        "naming rules loaded"
    );
    let (naming_tx, naming) = watch::channel(Arc::new(naming));
    let (config_tx, config) = watch::channel(config);
    let shutdown = CancellationToken::new();
    spawn_signal_handlers(
        config_path,
        Reloadable {
            config: config_tx,
            policy: policy_tx,
            naming: naming_tx,
        },
        shutdown.clone(),
    )?;
    run(listeners, config, policy, naming, shutdown).await
}

/// Runs the gateway until `shutdown` is cancelled, then drains associations within the
/// configured deadline.
pub async fn run(
    listeners: Listeners,
    live_config: watch::Receiver<Arc<Config>>,
    policy: watch::Receiver<Arc<ReloadablePolicy>>,
    naming: watch::Receiver<Arc<Naming>>,
    shutdown: CancellationToken,
) -> Result<(), AppError> {
    // As it was at start: what only a restart changes is read from here.
    let config = Arc::clone(&live_config.borrow());
    let metrics = Arc::new(Metrics::default());
    std::fs::create_dir_all(&config.storage.dir).map_err(|source| AppError::Folder {
        path: config.storage.dir.clone(),
        source,
    })?;
    let control = crate::control::bind(&config.storage.dir).await?;
    let spool = Arc::new(Spool::open(&config.storage.dir, config.storage.durability)?);
    spool.measure_free_bytes()?;
    let database = config.storage.database_path();
    let store = store::open(&database, config.storage.durability)?;
    let (queue_changed_tx, queue_changed) = watch::channel(0u64);
    let (index, writer_thread) =
        IndexHandle::spawn(store, INDEX_QUEUE, queue_changed_tx).map_err(AppError::Thread)?;
    let service = Service::new(index.clone(), live_config, naming);
    reconcile::run(&spool, &index, &service, config.listener.ae_title.as_str()).await?;
    let tracker = TaskTracker::new();
    tracker.spawn(crate::control::serve(
        control,
        service.clone(),
        shutdown.clone(),
        tracker.clone(),
    ));

    crate::forward::start(crate::forward::Shared {
        config: &config,
        config_changes: service.config_changes(),
        index: &index,
        queue_changed: &queue_changed,
        shutdown: &shutdown,
        tracker: &tracker,
        metrics: &metrics,
        retry_requested: service.retry_requested(),
    })
    .await?;
    tracker.spawn(measure_free_space(Arc::clone(&spool), shutdown.clone()));
    tracker.spawn(flush_index(index.clone(), shutdown.clone()));
    tracker.spawn(retention::run(
        Arc::clone(&spool),
        index.clone(),
        config.storage.retention,
        shutdown.clone(),
    ));
    let reads = Arc::new(store::ReadPool::new(database));
    tracker.spawn(safety_check::run(
        service.clone(),
        Arc::clone(&reads),
        Arc::clone(&metrics),
        shutdown.clone(),
    ));
    let claims = Arc::new(crate::commitment::Claims::default());
    tracker.spawn(
        crate::commitment::reporter::Reporter {
            service: service.clone(),
            reads: Arc::clone(&reads),
            claims: Arc::clone(&claims),
            shutdown: shutdown.clone(),
        }
        .run(),
    );
    let Listeners {
        dicom: listener,
        dicom_tls,
        http: http_listener,
        http_tls,
    } = listeners;
    if let Some(http) = http_listener {
        let state = crate::http::AppState::new(
            service.clone(),
            Arc::clone(&reads),
            Arc::clone(&spool),
            Arc::clone(&metrics),
            policy.clone(),
        );
        let stop = shutdown.clone();
        let done = serve_http_apart(http, http_tls, state, stop).map_err(AppError::Thread)?;
        tracker.spawn(async move {
            let _ = done.await;
        });
    }
    drop(index);
    let local = listener.local_addr().map_err(|source| AppError::Bind {
        address: config.listener.bind,
        source,
    })?;
    // Tests and scripts wait for this line: everything is open by now.
    tracing::info!(
        address = %local,
        ae_title = %config.listener.ae_title,
        storage = %config.storage.dir.display(),
        durability = config.storage.durability.as_str(),
        "DICOM listener ready"
    );
    if let Some(t) = &dicom_tls {
        let address = t.listener.local_addr().map_err(|source| AppError::Bind {
            address: config.listener.bind,
            source,
        })?;
        tracing::info!(
            address = %address,
            client_certificates = config.listener.tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
            "DICOM TLS listener ready"
        );
    }
    // Both listeners are bound and the index is open: a `Type=notify` unit is started now.
    notify_systemd(&[sd_notify::NotifyState::Ready]);
    if let Some(every) = sd_notify::watchdog_enabled() {
        tracker.spawn(keep_watchdog(every / 2, shutdown.clone()));
    }
    let context = ReceiveContext {
        spool,
        service,
        metrics,
        policy,
        reads,
        claims,
    };
    crate::scp::listen(
        listener,
        dicom_tls,
        Arc::new(config.listener.clone()),
        context,
        shutdown,
        tracker.clone(),
    )
    .await;

    notify_systemd(&[sd_notify::NotifyState::Stopping]);
    tracing::info!(
        // Associations and the background tasks (forwarding, checks, retention) together.
        tasks = tracker.len(),
        deadline_s = config.listener.shutdown_deadline.as_secs(),
        "shutting down: no new associations; finishing the ones in progress"
    );
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
    // Every handle is gone: the writer finishes its last batch and stops.
    let _ = tokio::task::spawn_blocking(move || writer_thread.join()).await;
    tracing::info!("stopped");
    Ok(())
}

/// Keeps the spool's free-space figure fresh (every half second, on the blocking pool), so the
/// receive path checks the reserve without a statvfs of its own.
async fn measure_free_space(spool: Arc<Spool>, shutdown: CancellationToken) {
    let mut failing = false;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
        }
        let measurer = Arc::clone(&spool);
        match tokio::task::spawn_blocking(move || measurer.measure_free_bytes()).await {
            Ok(Ok(_)) => failing = false,
            Ok(Err(e)) if !failing => {
                failing = true;
                tracing::error!(cause = %error_chain(&e), "cannot measure free space");
            }
            _ => {}
        }
    }
}

/// Tells systemd (when it started simgate with `NOTIFY_SOCKET`) how the service is; nothing
/// without it.
fn notify_systemd(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(cause = %e, "cannot notify systemd");
    }
}

/// `WatchdogSec=` in the unit: pings systemd from the async runtime the associations run on,
/// so a runtime that stops making progress gets the service restarted.
async fn keep_watchdog(every: std::time::Duration, shutdown: CancellationToken) {
    loop {
        notify_systemd(&[sd_notify::NotifyState::Watchdog]);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// How often relaxed index commits (instances recorded, forward outcomes) are made durable.
const INDEX_FLUSH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Bounds what a power failure can take from the index to the last second: syncs the WAL
/// when a relaxed commit happened since the last sync (nothing when idle), and once more at
/// shutdown.
async fn flush_index(index: IndexHandle, shutdown: CancellationToken) {
    let mut failing = false;
    loop {
        let stopping = tokio::select! {
            () = shutdown.cancelled() => true,
            () = tokio::time::sleep(INDEX_FLUSH_EVERY) => false,
        };
        match index.flush().await {
            Ok(_) => failing = false,
            Err(e) if !failing => {
                failing = true;
                tracing::error!(cause = %error_chain(&e), "cannot flush the index to disk");
            }
            Err(_) => {}
        }
        if stopping {
            return;
        }
    }
}

/// Takes the storage folder's lock file (`simgate.lock`, an exclusive `flock` held for the
/// life of the process; the kernel drops it when the process ends, however it ends).
fn lock_storage(dir: &Path) -> Result<std::fs::File, AppError> {
    match crate::spool::lock_storage(dir) {
        Ok(Some(file)) => Ok(file),
        Ok(None) => Err(AppError::InUse(dir.join(crate::spool::LOCK_FILE))),
        Err(source) => Err(AppError::Folder {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

/// Opens (and migrates) the database to read imported playbooks, then loads the rules.
/// Blocking: file and SQLite work.
fn load_naming(config: &Config) -> Result<Naming, AppError> {
    let store = store::open(&config.storage.database_path(), config.storage.durability)?;
    Ok(rules::load(&config.naming, &store.db())?)
}

/// What SIGHUP replaces.
struct Reloadable {
    config: watch::Sender<Arc<Config>>,
    policy: watch::Sender<Arc<ReloadablePolicy>>,
    naming: watch::Sender<Arc<Naming>>,
}

fn spawn_signal_handlers(
    config_path: PathBuf,
    reloadable: Reloadable,
    shutdown: CancellationToken,
) -> Result<(), AppError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).map_err(AppError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(AppError::Signals)?;
    let mut hangup = signal(SignalKind::hangup()).map_err(AppError::Signals)?;
    let config_path: Arc<Path> = Arc::from(config_path);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = terminate.recv() => { tracing::info!("SIGTERM received"); shutdown.cancel(); }
                _ = interrupt.recv() => { tracing::info!("interrupt received"); shutdown.cancel(); }
                _ = hangup.recv() => {
                    // Reading files and SQLite blocks: never on an async worker.
                    notify_systemd(&[sd_notify::NotifyState::Reloading]);
                    let path = Arc::clone(&config_path);
                    let current = Arc::clone(&reloadable.config.borrow());
                    match tokio::task::spawn_blocking(move || reload(&path, &current)).await {
                        Ok(Some(next)) => apply(&reloadable, next),
                        Ok(None) => {}
                        Err(e) => tracing::error!(cause = %e, "configuration reload failed"),
                    }
                    notify_systemd(&[sd_notify::NotifyState::Ready]);
                }
            }
        }
    });
    Ok(())
}

/// What a reload read: the config to put in force, the policy and naming rules from it
/// (`None`: the previous rules stay), and the changed keys that wait for a restart.
struct Reloaded {
    config: Config,
    policy: ReloadablePolicy,
    naming: Option<Arc<Naming>>,
    restart: Vec<String>,
}

fn apply(reloadable: &Reloadable, next: Reloaded) {
    let Reloaded {
        config,
        policy,
        naming,
        restart,
    } = next;
    let naming_rules = if naming.is_some() { "reloaded" } else { "kept" };
    let (users, destinations) = (config.http.users.len(), config.destinations.len());
    let (reserve_free_bytes, calling, peers) = (
        policy.reserve_free_bytes,
        policy.allowed_calling_ae_titles.len(),
        policy.allowed_peer_addresses.len(),
    );
    reloadable.policy.send_replace(Arc::new(policy));
    if let Some(naming) = naming {
        reloadable.naming.send_replace(naming);
    }
    // Users (the web side) and destinations (the forwarders) follow this.
    reloadable.config.send_replace(Arc::new(config));
    if !restart.is_empty() {
        tracing::warn!(
            keys = %restart.join(", "),
            "configuration changes that take effect only after a restart"
        );
    }
    // Tests wait for this line: the new values are in force by now.
    tracing::info!(
        reserve_free_bytes,
        allowed_calling_ae_titles = calling,
        allowed_peer_addresses = peers,
        naming_rules,
        users,
        destinations,
        "configuration reloaded"
    );
}

/// Re-reads the config file and the naming rules; only the reloadable keys take effect
/// ([`Config::reloaded`]), the rest need a restart. `None` when the config cannot be used.
fn reload(config_path: &Path, current: &Config) -> Option<Reloaded> {
    let next = match Config::load(config_path) {
        Ok(config) => config,
        Err(e) => {
            tracing::error!(cause = %error_chain(&e), "configuration not reloaded; keeping the previous one");
            return None;
        }
    };
    // Imported playbooks and edited rules take effect for new evidence from now on.
    let naming = match load_naming(&next) {
        Ok(naming) => Some(Arc::new(naming)),
        Err(e) => {
            tracing::error!(cause = %error_chain(&e), "naming rules not reloaded; keeping the previous ones");
            None
        }
    };
    let (mut config, restart) = current.reloaded(&next);
    if naming.is_none() {
        config.naming = current.naming.clone();
    }
    Some(Reloaded {
        policy: config.reloadable_policy(),
        config,
        naming,
        restart,
    })
}
