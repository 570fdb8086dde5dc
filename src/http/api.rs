//! The JSON API, `/healthz`, `/metrics` and `/api/openapi.json`: the only place of the HTTP
//! side that speaks JSON. The query and form parsing that the pages share with it lives here
//! too (`StudyFilter`, `ReportQuery`), so both read the same parameters the same way.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AppState, HttpError, Request, date_param};
use crate::metrics::Gauges;
use crate::naming::StudyStatus;
use crate::naming::report::{self, ReportGrouping, ReportRow};
use crate::service::{ReasonRequest, RetryRequest};
use crate::store::studies::{StudyQuery, StudyRow};

/// Filters of the worklist and `GET /api/studies`.
#[derive(Debug, Default, Deserialize)]
pub struct StudyFilter {
    /// needs-reason (default for the worklist), reason-documented, conforming or all.
    pub status: Option<String>,
    /// YYYY-MM-DD: first received on or after.
    pub since: Option<String>,
    /// Station Name, exact (case-insensitive).
    pub station: Option<String>,
    /// Free text in patient, descriptions or UID.
    pub q: Option<String>,
}

impl StudyFilter {
    /// The store's query for these parameters; `default_status` when none is given.
    pub fn query(&self, default_status: &str) -> Result<StudyQuery, HttpError> {
        let given = |value: &Option<String>| {
            value
                .as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let status = match given(&self.status).as_deref().unwrap_or(default_status) {
            "all" => None,
            other => Some(StudyStatus::parse(other).ok_or_else(|| {
                HttpError::BadRequest(format!(
                    "status {other:?}: use needs-reason, reason-documented, conforming or all"
                ))
            })?),
        };
        let since = match given(&self.since) {
            Some(since) => Some(date_param("since", &since)?),
            None => None,
        };
        Ok(StudyQuery {
            status,
            since,
            station: given(&self.station),
            text: given(&self.q),
        })
    }
}

pub async fn list_studies(
    state: &AppState,
    filter: &StudyFilter,
    default_status: &str,
) -> Result<Vec<StudyRow>, HttpError> {
    let query = filter.query(default_status)?;
    state.read(move |db| db.studies(&query)).await
}

pub async fn studies(
    State(state): State<AppState>,
    request: Request,
    Query(filter): Query<StudyFilter>,
) -> Result<Json<Value>, HttpError> {
    request.caller()?;
    let studies = list_studies(&state, &filter, "all").await?;
    Ok(Json(json!({ "studies": studies })))
}

pub async fn study(
    State(state): State<AppState>,
    request: Request,
    Path(uid): Path<String>,
) -> Result<Response, HttpError> {
    request.caller()?;
    Ok(Json(state.study_document(&uid).await?).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    pub code: String,
    #[serde(default)]
    pub note: String,
}

pub async fn document_reason(
    State(state): State<AppState>,
    request: Request,
    Path(uid): Path<String>,
    body: Result<Json<ReasonBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, HttpError> {
    let Json(body) = body.map_err(|e| HttpError::BadRequest(e.body_text()))?;
    refuse_session(&request, "the study page's form")?;
    let recorded = state
        .service
        .document_reason(
            &request.author()?,
            ReasonRequest {
                study_instance_uid: uid,
                code: body.code,
                note: body.note,
            },
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "study_instance_uid": recorded.study_instance_uid,
            "status": recorded.status.as_str(),
            "hcpcs": recorded.status.hcpcs(),
        })),
    )
        .into_response())
}

/// A browser session must prove a write comes from our own page (its form carries the CSRF
/// token); the API takes Basic or Bearer credentials only.
fn refuse_session(request: &Request, form: &str) -> Result<(), HttpError> {
    if request.caller.as_ref().is_some_and(|c| c.via_session) {
        return Err(HttpError::Forbidden(format!(
            "use {form}, or Basic/Bearer credentials, for the API"
        )));
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
pub struct ReportQuery {
    pub from: Option<String>,
    pub to: Option<String>,
    pub by: Option<String>,
}

/// The report for these parameters: (from, to, by, rows); the last year by month by default.
pub async fn report_rows(
    state: &AppState,
    query: &ReportQuery,
) -> Result<(String, String, String, Vec<ReportRow>), HttpError> {
    let from = date_param(
        "from",
        query
            .from
            .as_deref()
            .unwrap_or(&crate::clock::days_ago(365)),
    )?;
    let to = date_param("to", query.to.as_deref().unwrap_or(&crate::clock::today()))?;
    let by = query.by.clone().unwrap_or_else(|| "month".into());
    let grouping = ReportGrouping::parse(&by).ok_or_else(|| {
        HttpError::BadRequest(format!("by {by:?}: use month, station or physician"))
    })?;
    let facts = state.read(|db| db.report_facts()).await?;
    let rows = report::report(facts, &from, &to, grouping);
    Ok((from, to, by, rows))
}

pub async fn report(
    State(state): State<AppState>,
    request: Request,
    Query(query): Query<ReportQuery>,
) -> Result<Json<Value>, HttpError> {
    request.caller()?;
    let (from, to, by, rows) = report_rows(&state, &query).await?;
    Ok(Json(
        json!({ "from": from, "to": to, "by": by, "rows": rows }),
    ))
}

pub async fn queue(
    State(state): State<AppState>,
    request: Request,
) -> Result<Json<Value>, HttpError> {
    request.caller()?;
    let (summary, studies) = state
        .read(|db| Ok((db.queue_summary(None)?, db.queue_by_study(None, None)?)))
        .await?;
    Ok(Json(json!({ "destinations": summary, "studies": studies })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryBody {
    pub study: Option<String>,
    #[serde(default)]
    pub dead: bool,
    pub destination: Option<String>,
}

impl RetryBody {
    pub fn request(self) -> RetryRequest {
        RetryRequest {
            study_instance_uid: self.study.filter(|s| !s.is_empty()),
            dead_only: self.dead,
            destination: self.destination.filter(|d| !d.is_empty()),
        }
    }
}

pub async fn queue_retry(
    State(state): State<AppState>,
    request: Request,
    body: Result<Json<RetryBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, HttpError> {
    let Json(body) = body.map_err(|e| HttpError::BadRequest(e.body_text()))?;
    refuse_session(&request, "the queue page's form")?;
    let count = state
        .service
        .retry(&request.author()?, body.request())
        .await?;
    Ok(Json(json!({ "queued": count })))
}

/// Database and storage checked.
pub async fn healthz(State(state): State<AppState>) -> Response {
    let database = state.read(|db| db.study_count()).await;
    let spool = std::sync::Arc::clone(&state.spool);
    let free = tokio::task::spawn_blocking(move || spool.free_bytes()).await;
    let reserve = state.config().storage.reserve_free_bytes;
    let (storage_ok, free_bytes) = match free {
        Ok(Ok(free)) => (free >= reserve, Some(free)),
        _ => (false, None),
    };
    let ok = database.is_ok() && storage_ok;
    let body = json!({
        "status": if ok { "ok" } else { "failing" },
        "database": match &database { Ok(_) => "ok".to_string(), Err(e) => e.to_string() },
        "storage": { "ok": storage_ok, "free_bytes": free_bytes, "reserve_free_bytes": reserve },
    });
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> Result<Response, HttpError> {
    let (depth, statuses) = state
        .read(|db| Ok((db.queue_depth()?, db.status_counts()?)))
        .await?;
    let gauges = Gauges::new(&state.config().destinations, &depth, &statuses);
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(&gauges),
    )
        .into_response())
}

pub async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response()
}
