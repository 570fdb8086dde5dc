//! The JSON API, `/healthz`, `/metrics` and `/api/openapi.json`: the only place of the HTTP
//! side that speaks JSON. The query and form parsing that the pages share with it lives here
//! too (`StudyFilter`, `ReportQuery`), so both read the same parameters the same way.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{AppState, HttpError, Request, date_param};
use crate::metrics::Gauges;
use crate::naming::StudyStatus;
use crate::naming::report::{self, ReportGrouping, ReportRow};
use crate::service::{BulkReasonRequest, ReasonRequest, RetryRequest};
use crate::store::safety::HoldTarget;
use crate::store::studies::{StudyQuery, StudyRow, StudySort};

/// Filters, sorting and paging of the worklist and `GET /api/studies`, as URL parameters.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct StudyFilter {
    /// needs-reason (default for the worklist), reason-documented, conforming, safety or all.
    pub status: Option<String>,
    /// YYYY-MM-DD: first received on or after.
    pub since: Option<String>,
    /// YYYY-MM-DD: first received on or before.
    pub until: Option<String>,
    /// YYYY-MM-DD: Study Date on or after.
    pub study_from: Option<String>,
    /// YYYY-MM-DD: Study Date on or before.
    pub study_to: Option<String>,
    /// Station Name, exact (case-insensitive).
    pub station: Option<String>,
    /// Who documented the latest reason.
    pub by: Option<String>,
    /// Free text in patient, accession number, descriptions or UID.
    pub q: Option<String>,
    /// waiting (default), study-date, patient, station, received, accession.
    pub sort: Option<String>,
    /// asc (default) or desc.
    pub order: Option<String>,
    /// Page number from 1.
    pub page: Option<String>,
    /// Rows per page: 25, 50 (default) or 100.
    pub per: Option<String>,
}

/// Rows per page the worklist offers.
pub const PAGE_SIZES: [usize; 3] = [25, 50, 100];
/// Sort keys of the worklist, with their labels.
pub const SORTS: [(&str, &str); 6] = [
    ("waiting", "Waiting"),
    ("study-date", "Study date"),
    ("patient", "Patient"),
    ("station", "Station"),
    ("received", "Received"),
    ("accession", "Accession"),
];

fn given(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// One page of studies and where it sits in the whole list.
#[derive(Debug, Clone, Serialize)]
pub struct StudyPage {
    pub studies: Vec<StudyRow>,
    /// Studies matching the filters, on every page.
    pub total: usize,
    pub page: usize,
    pub per: usize,
    pub pages: usize,
}

impl StudyFilter {
    /// The status shown, `default_status` when none is given.
    pub fn status_or(&self, default_status: &str) -> String {
        given(&self.status).unwrap_or_else(|| default_status.to_string())
    }

    /// The store's query for these parameters; `default_status` when none is given.
    pub fn query(&self, default_status: &str) -> Result<StudyQuery, HttpError> {
        let chosen = self.status_or(default_status);
        let status = match chosen.as_str() {
            "all" | "safety" => None,
            other => Some(StudyStatus::parse(other).ok_or_else(|| {
                HttpError::BadRequest(format!(
                    "status {other:?}: use needs-reason, reason-documented, conforming, safety or all"
                ))
            })?),
        };
        let date = |name: &str, value: &Option<String>| -> Result<Option<String>, HttpError> {
            given(value).map(|v| date_param(name, &v)).transpose()
        };
        let (since, until) = (date("since", &self.since)?, date("until", &self.until)?);
        let (study_from, study_to) = (
            date("study_from", &self.study_from)?,
            date("study_to", &self.study_to)?,
        );
        for (name, from, to) in [
            ("received", &since, &until),
            ("study date", &study_from, &study_to),
        ] {
            if let (Some(from), Some(to)) = (from, to)
                && from > to
            {
                return Err(HttpError::BadRequest(format!(
                    "{name} range {from} .. {to} ends before it starts"
                )));
            }
        }
        Ok(StudyQuery {
            status,
            since,
            until: until.map(|day| crate::clock::day_after(&day)),
            study_date_from: study_from.map(|d| d.replace('-', "")),
            study_date_to: study_to.map(|d| d.replace('-', "")),
            station: given(&self.station),
            text: given(&self.q),
            safety: chosen == "safety",
            documented_by: given(&self.by),
        })
    }

    /// Rows per page (50 unless one of [`PAGE_SIZES`] is asked for).
    pub fn per(&self) -> usize {
        given(&self.per)
            .and_then(|p| p.parse().ok())
            .filter(|p| PAGE_SIZES.contains(p))
            .unwrap_or(50)
    }

    pub fn sort(&self) -> &str {
        let asked = self.sort.as_deref().unwrap_or("waiting");
        SORTS
            .iter()
            .map(|(key, _)| *key)
            .find(|key| *key == asked)
            .unwrap_or("waiting")
    }

    pub fn descending(&self) -> bool {
        self.order.as_deref() == Some("desc")
    }

    /// This filter as URL parameters, with some replaced (e.g. another page or sort).
    pub fn url(&self, changes: &[(&str, &str)]) -> String {
        let mut pairs: Vec<(String, String)> = [
            ("status", &self.status),
            ("since", &self.since),
            ("until", &self.until),
            ("study_from", &self.study_from),
            ("study_to", &self.study_to),
            ("station", &self.station),
            ("by", &self.by),
            ("q", &self.q),
            ("sort", &self.sort),
            ("order", &self.order),
            ("page", &self.page),
            ("per", &self.per),
        ]
        .into_iter()
        .filter_map(|(k, v)| given(v).map(|v| (k.to_string(), v)))
        .collect();
        for (key, value) in changes {
            pairs.retain(|(k, _)| k != key);
            if !value.is_empty() {
                pairs.push((key.to_string(), value.to_string()));
            }
        }
        let mut url = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &pairs {
            url.append_pair(k, v);
        }
        url.finish()
    }
}

/// One page of the studies `filter` asks for (sorted and cut in SQL); `whole` (the API
/// without `page` or `per`): every study on one page.
pub async fn list_studies(
    state: &AppState,
    filter: &StudyFilter,
    default_status: &str,
    whole: bool,
) -> Result<StudyPage, HttpError> {
    let query = filter.query(default_status)?;
    let sort = StudySort::parse(filter.sort()).unwrap_or(StudySort::Waiting);
    let descending = filter.descending();
    let per = filter.per();
    let asked = given(&filter.page)
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let (studies, total, page, per) = state
        .read(move |db| {
            if whole {
                let (rows, total) = db.study_page(&query, sort, descending, 0, None)?;
                return Ok((rows, total, 1, total.max(1)));
            }
            let (mut rows, total) =
                db.study_page(&query, sort, descending, (asked - 1) * per, Some(per))?;
            // Past the last page: the last page.
            let pages = total.div_ceil(per).max(1);
            let page = asked.min(pages);
            if page != asked {
                rows = db
                    .study_page(&query, sort, descending, (page - 1) * per, Some(per))?
                    .0;
            }
            Ok((rows, total, page, per))
        })
        .await?;
    Ok(StudyPage {
        studies,
        total,
        page,
        per,
        pages: total.div_ceil(per).max(1),
    })
}

pub async fn studies(
    State(state): State<AppState>,
    request: Request,
    Query(filter): Query<StudyFilter>,
) -> Result<Json<StudyPage>, HttpError> {
    request.caller()?;
    let whole = filter.page.is_none() && filter.per.is_none();
    // Serialized straight from the rows, without a JSON tree in between.
    Ok(Json(list_studies(&state, &filter, "all", whole).await?))
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

/// Documents one reason for several studies (physician); 201 with one result per study.
pub async fn document_reasons(
    State(state): State<AppState>,
    request: Request,
    body: Result<Json<BulkReasonRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, HttpError> {
    let Json(body) = body.map_err(|e| HttpError::BadRequest(e.body_text()))?;
    refuse_session(&request, "the worklist's form")?;
    let started = std::time::Instant::now();
    let count = body.studies.len();
    let results = state
        .service
        .document_reasons(&request.author()?, body)
        .await?;
    tracing::info!(
        studies = count,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "bulk reasons documented"
    );
    Ok((StatusCode::CREATED, Json(json!({ "results": results }))).into_response())
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
    /// study (Study Date, default) or received (the day first received).
    pub date: Option<String>,
}

/// A report as asked for, and its rows.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub from: String,
    pub to: String,
    pub by: String,
    pub date: &'static str,
    pub rows: Vec<ReportRow>,
    /// The most frequent nonstandard names by station, protocol and calling AE.
    pub root_causes: Vec<report::RootCause>,
}

/// Root causes the report lists at most.
pub const ROOT_CAUSES: usize = 25;

/// The report for these parameters; the last year by month, counted on Study Date, by
/// default. A range that ends before it starts is refused.
pub async fn report_rows(state: &AppState, query: &ReportQuery) -> Result<Report, HttpError> {
    let from = date_param(
        "from",
        query
            .from
            .as_deref()
            .unwrap_or(&crate::clock::days_ago(365)),
    )?;
    let to = date_param("to", query.to.as_deref().unwrap_or(&crate::clock::today()))?;
    if from > to {
        return Err(HttpError::BadRequest(format!(
            "from {from} is after to {to}: the range would hold no day"
        )));
    }
    let by = query.by.clone().unwrap_or_else(|| "month".into());
    let grouping = ReportGrouping::parse(&by).ok_or_else(|| {
        HttpError::BadRequest(format!("by {by:?}: use month, station or physician"))
    })?;
    let date_text = query.date.clone().unwrap_or_else(|| "study".into());
    let dates = report::ReportDate::parse(&date_text).ok_or_else(|| {
        HttpError::BadRequest(format!("date {date_text:?}: use study or received"))
    })?;
    let (facts, names) = state
        .read(|db| Ok((db.report_facts()?, db.name_facts()?)))
        .await?;
    Ok(Report {
        rows: report::report(facts, &from, &to, grouping, dates),
        root_causes: report::root_causes(names, &from, &to, dates, ROOT_CAUSES),
        from,
        to,
        by,
        date: dates.as_str(),
    })
}

pub async fn report(
    State(state): State<AppState>,
    request: Request,
    Query(query): Query<ReportQuery>,
) -> Result<Json<Value>, HttpError> {
    request.caller()?;
    Ok(Json(json!(report_rows(&state, &query).await?)))
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

/// Studies with safety findings or held instances, the latest first.
pub async fn safety(
    State(state): State<AppState>,
    request: Request,
) -> Result<Json<Value>, HttpError> {
    request.caller()?;
    let studies = state.read(|db| db.safety_studies(SAFETY_STUDIES)).await?;
    Ok(Json(json!({ "studies": studies })))
}

/// Studies `GET /api/safety` lists at most.
pub const SAFETY_STUDIES: usize = 500;

/// Which held instances to release or reject, and why.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeldBody {
    pub study: Option<String>,
    pub instance: Option<String>,
    pub destination: Option<String>,
    #[serde(default)]
    pub why: String,
}

impl HeldBody {
    pub fn target(&self) -> HoldTarget {
        let given = |v: &Option<String>| v.clone().filter(|v| !v.trim().is_empty());
        HoldTarget {
            study_instance_uid: given(&self.study),
            sop_instance_uid: given(&self.instance),
            destination: given(&self.destination),
        }
    }
}

pub async fn release_held(
    state: State<AppState>,
    request: Request,
    body: Result<Json<HeldBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, HttpError> {
    decide_held(state, request, body, true).await
}

pub async fn reject_held(
    state: State<AppState>,
    request: Request,
    body: Result<Json<HeldBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, HttpError> {
    decide_held(state, request, body, false).await
}

async fn decide_held(
    State(state): State<AppState>,
    request: Request,
    body: Result<Json<HeldBody>, axum::extract::rejection::JsonRejection>,
    release: bool,
) -> Result<Json<Value>, HttpError> {
    let Json(body) = body.map_err(|e| HttpError::BadRequest(e.body_text()))?;
    refuse_session(&request, "the study page's form")?;
    let uids = state
        .service
        .decide_held(&request.author()?, body.target(), release, &body.why)
        .await?;
    let key = if release { "released" } else { "rejected" };
    Ok(Json(json!({ key: uids })))
}

/// How long each health check may take; `/healthz` answers within about this long.
const HEALTH_TIMEOUT: Duration = Duration::from_millis(1500);

/// One health check at a time: a check still blocked (a frozen file system) is not started
/// again by every request, so a stalled storage cannot pile up blocked threads.
#[derive(Debug, Default)]
pub struct HealthCheck {
    running: AtomicBool,
}

impl HealthCheck {
    /// Runs `check` on the blocking pool, answering within [`HEALTH_TIMEOUT`].
    async fn run<T: Send + 'static>(
        self: &Arc<Self>,
        what: &str,
        check: impl FnOnce() -> Result<T, String> + Send + 'static,
    ) -> Result<T, String> {
        if self.running.swap(true, Ordering::AcqRel) {
            return Err(format!(
                "{what}: the previous check has not finished (stalled)"
            ));
        }
        let guard = Arc::clone(self);
        let task = tokio::task::spawn_blocking(move || {
            let result = check();
            guard.running.store(false, Ordering::Release);
            result
        });
        match tokio::time::timeout(HEALTH_TIMEOUT, task).await {
            Ok(Ok(result)) => result.map_err(|e| format!("{what}: {e}")),
            Ok(Err(e)) => Err(format!("{what}: {e}")),
            Err(_) => Err(format!("{what}: no answer within {HEALTH_TIMEOUT:?}")),
        }
    }
}

/// The checks behind `/healthz`.
#[derive(Debug, Default)]
pub struct Health {
    database: Arc<HealthCheck>,
    storage: Arc<HealthCheck>,
}

/// Database and storage checked, each within a bound: 200, or 503 with the cause.
pub async fn healthz(State(state): State<AppState>) -> Response {
    let reads = Arc::clone(&state.reads);
    let database = state.health.database.run("database", move || {
        reads
            .read_blocking(|db| db.study_count())
            .map_err(|e| crate::error_chain(&e))
    });
    let spool = Arc::clone(&state.spool);
    let storage = state.health.storage.run("storage", move || {
        spool.probe_write().map_err(|e| crate::error_chain(&e))?;
        spool.free_bytes().map_err(|e| crate::error_chain(&e))
    });
    let (database, storage) = tokio::join!(database, storage);
    let reserve = state.policy.borrow().reserve_free_bytes;
    let storage_problem = match &storage {
        Ok(free) if *free < reserve => Some(format!(
            "storage: free space {free} bytes is below the reserve of {reserve} bytes"
        )),
        Ok(_) => None,
        Err(e) => Some(e.clone()),
    };
    let ok = database.is_ok() && storage_problem.is_none();
    let body = json!({
        "status": if ok { "ok" } else { "failing" },
        "database": match &database { Ok(_) => "ok".to_string(), Err(e) => e.clone() },
        "storage": {
            "ok": storage_problem.is_none(),
            "problem": storage_problem,
            "free_bytes": storage.as_ref().ok(),
            "reserve_free_bytes": reserve,
        },
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
