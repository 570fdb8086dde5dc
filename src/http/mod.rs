//! The HTTP side: a small server-rendered web application for the people who document reasons
//! and watch the queue, and a JSON API over the same data. Only this module knows HTTP.
//! Reads use the store's read pool on the blocking pool; every write is a [`Service`] call,
//! which validates it and writes its audit entry in the same transaction.

pub mod api;
pub mod auth;
pub mod pages;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::service::{Author, ErrorKind, Service, ServiceError};
use crate::spool::Spool;
use crate::store::audit::AuditEntry;
use crate::store::queue::StudyQueue;
use crate::store::safety::StudySafety;
use crate::store::studies::StudyDetail;
use crate::store::{Db, ReadPool, StoreError};

/// Everything a request handler may use.
#[derive(Clone)]
pub struct AppState {
    pub service: Service,
    pub reads: Arc<ReadPool>,
    pub spool: Arc<Spool>,
    pub metrics: Arc<Metrics>,
    pub auth: Arc<auth::Auth>,
    pub health: Arc<api::Health>,
    /// What SIGHUP reloads (the free-space reserve `/healthz` checks against).
    pub policy: tokio::sync::watch::Receiver<Arc<crate::config::ReloadablePolicy>>,
}

impl AppState {
    pub fn new(
        service: Service,
        reads: Arc<ReadPool>,
        spool: Arc<Spool>,
        metrics: Arc<Metrics>,
        policy: tokio::sync::watch::Receiver<Arc<crate::config::ReloadablePolicy>>,
    ) -> AppState {
        let config = service.config();
        let auth = Arc::new(auth::Auth::new(
            config.http.users.clone(),
            config.http.session_lifetime,
        ));
        // SIGHUP: new users sign in at once, removed ones are signed out.
        let mut changes = service.config_changes();
        let follower = Arc::clone(&auth);
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                let users = changes.borrow_and_update().http.users.clone();
                follower.replace_users(users);
            }
        });
        AppState {
            service,
            reads,
            spool,
            metrics,
            auth,
            health: Arc::default(),
            policy,
        }
    }

    /// The config in force now (SIGHUP may change users and destinations).
    pub fn config(&self) -> Arc<Config> {
        self.service.config()
    }

    /// Runs a read on a read-only connection, off the async workers.
    pub async fn read<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Db<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, HttpError> {
        Ok(self.reads.read(work).await?)
    }

    /// Everything about one study, for its page and `GET /api/studies/{uid}`.
    pub async fn study_document(&self, uid: &str) -> Result<StudyDocument, HttpError> {
        let uid = study_param(uid)?;
        let lookup = uid.clone();
        let (detail, forward, audit, safety) = self
            .read(move |db| {
                Ok((
                    db.study_detail(&lookup)?,
                    db.study_queue(&lookup)?,
                    db.audit_entries(Some(&lookup), 100)?,
                    db.study_safety(&lookup)?,
                ))
            })
            .await?;
        let detail = detail.ok_or_else(|| {
            HttpError::NotFound(format!("no study with Study Instance UID {uid}"))
        })?;
        Ok(StudyDocument {
            detail,
            forward,
            audit,
            safety,
        })
    }
}

/// One study with its forward state and audit entries.
#[derive(Debug, Clone, Serialize)]
pub struct StudyDocument {
    #[serde(flatten)]
    pub detail: StudyDetail,
    pub forward: Vec<StudyQueue>,
    pub audit: Vec<AuditEntry>,
    /// Findings of the identity and geometry checks, instances held or waiting, series checks.
    pub safety: StudySafety,
}

/// Errors answered with a status and a JSON body `{"error": "..."}` (pages show the text).
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    BadRequest(String),
    #[error("sign in first (or the user name, password or token given is not right)")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// Credentials not checked now: too many attempts (429) or too many at once (503).
    #[error("{0}")]
    Refused(auth::Refusal),
}

impl From<auth::Refusal> for HttpError {
    fn from(refusal: auth::Refusal) -> Self {
        HttpError::Refused(refusal)
    }
}

impl From<StoreError> for HttpError {
    fn from(e: StoreError) -> Self {
        HttpError::Internal(crate::error_chain(&e))
    }
}

impl From<ServiceError> for HttpError {
    fn from(e: ServiceError) -> Self {
        match e.kind() {
            ErrorKind::Invalid => HttpError::BadRequest(e.to_string()),
            ErrorKind::NotFound => HttpError::NotFound(e.to_string()),
            ErrorKind::Forbidden => HttpError::Forbidden(e.to_string()),
            ErrorKind::Internal => HttpError::Internal(crate::error_chain(&e)),
        }
    }
}

impl HttpError {
    /// The HTTP status of this error; internal errors are logged here, once.
    pub fn status(&self) -> StatusCode {
        match self {
            HttpError::BadRequest(_) => StatusCode::BAD_REQUEST,
            HttpError::Unauthorized => StatusCode::UNAUTHORIZED,
            HttpError::Forbidden(_) => StatusCode::FORBIDDEN,
            HttpError::NotFound(_) => StatusCode::NOT_FOUND,
            HttpError::Internal(why) => {
                tracing::error!(cause = %why, "HTTP request failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
            HttpError::Refused(auth::Refusal::Throttled(_)) => StatusCode::TOO_MANY_REQUESTS,
            HttpError::Refused(auth::Refusal::Busy) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Seconds a refused client should wait (Retry-After).
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            HttpError::Refused(auth::Refusal::Throttled(wait)) => Some(wait.as_secs().max(1)),
            HttpError::Refused(auth::Refusal::Busy) => Some(1),
            _ => None,
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = self.status();
        let retry_after = self.retry_after();
        let mut response = (
            status,
            axum::Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Basic realm=\"simgate\""),
            );
        }
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
        }
        response
    }
}

/// The caller of a request, and the peer address for the audit log.
pub struct Request {
    pub caller: Option<auth::Caller>,
    pub remote: String,
}

impl FromRequestParts<AppState> for Request {
    type Rejection = HttpError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        let caller = state
            .auth
            .caller(&parts.headers, peer.map(|p| p.ip()))
            .await?;
        Ok(Request {
            caller,
            remote: peer.map(|p| p.to_string()).unwrap_or_default(),
        })
    }
}

impl Request {
    pub fn caller(&self) -> Result<&auth::Caller, HttpError> {
        self.caller.as_ref().ok_or(HttpError::Unauthorized)
    }

    /// The caller as the author of a write, with the address the audit log records.
    pub fn author(&self) -> Result<Author, HttpError> {
        let caller = self.caller()?;
        Ok(Author {
            user_name: caller.name.clone(),
            role: caller.role,
            from: self.remote.clone(),
        })
    }
}

/// Headers on every answer: no framing, no sniffing, no referrer, no caching of pages with
/// patient data, and a policy that allows no script at all (the pages have none).
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let set = |headers: &mut header::HeaderMap, name: header::HeaderName, value: &'static str| {
        headers.insert(name, header::HeaderValue::from_static(value));
    };
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::REFERRER_POLICY, "no-referrer");
    set(headers, header::CACHE_CONTROL, "no-store");
    response
}

/// With no users configured anyone on loopback reads the pages: a request must then name
/// this server in its Host header, so a page elsewhere that rebinds its DNS name to
/// 127.0.0.1 gets nothing (421).
async fn check_host(
    axum::extract::State(allowed): axum::extract::State<Arc<Vec<String>>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if !allowed.is_empty() {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !allowed.iter().any(|a| a.eq_ignore_ascii_case(host)) {
            return (
                StatusCode::MISDIRECTED_REQUEST,
                "this server answers only requests for its own address",
            )
                .into_response();
        }
    }
    next.run(request).await
}

/// The Host values a request may carry when no users are configured (empty: any).
fn allowed_hosts(state: &AppState, address: SocketAddr) -> Vec<String> {
    if !state.auth.open() {
        return Vec::new();
    }
    let port = address.port();
    let mut hosts = vec![
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        address.to_string(),
    ];
    if port == 80 {
        hosts.extend(["127.0.0.1", "localhost", "[::1]"].map(String::from));
    }
    hosts
}

pub fn router(state: AppState, address: SocketAddr) -> Router {
    let hosts = Arc::new(allowed_hosts(&state, address));
    pages_and_api(state)
        .layer(axum::middleware::from_fn_with_state(hosts, check_host))
        .layer(axum::middleware::map_response(security_headers))
}

fn pages_and_api(state: AppState) -> Router {
    Router::new()
        .route("/", get(pages::home))
        .route("/login", get(pages::login_form).post(pages::login))
        .route("/logout", post(pages::logout))
        .route("/worklist", get(pages::worklist))
        .route("/studies/{study_uid}", get(pages::study))
        .route("/studies/{study_uid}/reasons", post(pages::document_reason))
        .route("/report", get(pages::report))
        .route("/report.csv", get(pages::report_csv))
        .route("/report/root-causes.csv", get(pages::root_causes_csv))
        .route("/queue", get(pages::queue))
        .route("/queue/retry", post(pages::queue_retry))
        .route("/held", post(pages::decide_held))
        .route("/reasons", post(pages::document_reasons))
        .route("/healthz", get(api::healthz))
        .route("/metrics", get(api::metrics))
        .route("/api/openapi.json", get(api::openapi))
        .route("/api/studies", get(api::studies))
        .route("/api/studies/{study_uid}", get(api::study))
        .route(
            "/api/studies/{study_uid}/reasons",
            post(api::document_reason),
        )
        .route("/api/report", get(api::report))
        .route("/api/queue", get(api::queue))
        .route("/api/queue/retry", post(api::queue_retry))
        .route("/api/safety", get(api::safety))
        .route("/api/reasons", post(api::document_reasons))
        .route("/api/held/release", post(api::release_held))
        .route("/api/held/reject", post(api::reject_held))
        .with_state(state)
}

/// Serves until `shutdown` is cancelled: HTTP/1.1 on hyper, with a bound on connections (the
/// excess is closed at once), a timeout for each request head (which also ends idle
/// keep-alive connections and slow-header clients) and one for each answer.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let address = listener.local_addr()?;
    let settings = state.config().http.clone();
    tracing::info!(
        address = %address,
        users = settings.users.len(),
        https = tls.is_some(),
        "HTTP listener ready"
    );
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    if state.auth.open() {
        tracing::warn!("no [[http.users]] configured: the web pages are read-only");
    }
    let app = router(state, address);
    let connections = Arc::new(tokio::sync::Semaphore::new(settings.max_connections));
    let tracker = tokio_util::task::TaskTracker::new();
    let mut refused = crate::logging::RateLimitedWarning::new(std::time::Duration::from_secs(10));
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::error!(cause = %e, "HTTP accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            if let Some(suppressed) = refused.ready() {
                tracing::warn!(%peer, limit = settings.max_connections, suppressed, "HTTP connection limit reached: closing new connections");
            }
            drop(stream);
            continue;
        };
        let app = app.clone();
        let request_timeout = settings.request_timeout;
        let header_read_timeout = settings.header_read_timeout;
        let stop = shutdown.clone();
        let acceptor = acceptor.clone();
        tracker.spawn(async move {
            match acceptor {
                None => {
                    serve_connection(
                        stream,
                        app,
                        peer,
                        header_read_timeout,
                        request_timeout,
                        stop,
                    )
                    .await
                }
                Some(acceptor) => {
                    // The handshake is bounded like a request head.
                    match tokio::time::timeout(header_read_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            serve_connection(
                                stream,
                                app,
                                peer,
                                header_read_timeout,
                                request_timeout,
                                stop,
                            )
                            .await
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, cause = %e, "HTTPS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "HTTPS handshake timed out"),
                    }
                }
            }
            drop(permit);
        });
    }
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// Serves one HTTP/1.1 connection (plain or TLS) until it ends or shutdown.
async fn serve_connection<I>(
    stream: I,
    app: Router,
    peer: SocketAddr,
    header_read_timeout: std::time::Duration,
    request_timeout: std::time::Duration,
    stop: CancellationToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use hyper_util::rt::{TokioIo, TokioTimer};
    use tower::ServiceExt;
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            let app = app.clone();
            async move {
                let answer = app.oneshot(request.map(axum::body::Body::new));
                match tokio::time::timeout(request_timeout, answer).await {
                    Ok(response) => response,
                    Err(_) => {
                        Ok((StatusCode::SERVICE_UNAVAILABLE, "request timed out").into_response())
                    }
                }
            }
        });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .serve_connection(TokioIo::new(stream), service);
    {
        {
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, cause = %e, "HTTP connection ended");
                    }
                }
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), connection).await;
                }
            }
        }
    }
}

/// Validates a YYYY-MM-DD date parameter.
pub fn date_param(name: &str, value: &str) -> Result<String, HttpError> {
    if crate::clock::is_date(value) {
        Ok(value.to_string())
    } else {
        Err(HttpError::BadRequest(format!(
            "{name}: {value:?} is not a date (YYYY-MM-DD)"
        )))
    }
}

/// Validates a Study Instance UID path parameter.
pub fn study_param(uid: &str) -> Result<String, HttpError> {
    if crate::dicom::uid::is_valid_uid(uid) {
        Ok(uid.to_string())
    } else {
        Err(HttpError::BadRequest(format!(
            "{uid:?} is not a valid Study Instance UID"
        )))
    }
}
