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

    pub fn config(&self) -> &Config {
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
        let (detail, forward, audit) = self
            .read(move |db| {
                Ok((
                    db.study_detail(&lookup)?,
                    db.study_queue(&lookup)?,
                    db.audit_entries(Some(&lookup), 100)?,
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
}

/// Errors answered with a status and a JSON body `{"error": "..."}` (pages show the text).
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    BadRequest(String),
    #[error("sign in first")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("internal error: {0}")]
    Internal(String),
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
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = self.status();
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
        let remote = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.to_string())
            .unwrap_or_default();
        Ok(Request {
            caller: state.auth.caller(&parts.headers),
            remote,
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

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(pages::home))
        .route("/login", get(pages::login_form).post(pages::login))
        .route("/logout", post(pages::logout))
        .route("/worklist", get(pages::worklist))
        .route("/studies/{study_uid}", get(pages::study))
        .route("/studies/{study_uid}/reasons", post(pages::document_reason))
        .route("/report", get(pages::report))
        .route("/report.csv", get(pages::report_csv))
        .route("/queue", get(pages::queue))
        .route("/queue/retry", post(pages::queue_retry))
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
        .with_state(state)
}

/// Serves until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let address = listener.local_addr()?;
    tracing::info!(
        address = %address,
        users = state.config().http.users.len(),
        "HTTP listener ready"
    );
    if state.auth.open() {
        tracing::warn!("no [[http.users]] configured: the web pages are read-only");
    }
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await })
    .await
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
