//! The JSON API, `/healthz`, `/metrics` and `/api/openapi.json`, and the two writes the pages
//! share with it (documenting a reason, retrying the queue), each audited.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AppState, HttpError, Request, date_param, study_param};
use crate::naming::StudyStatus;
use crate::store::audit::{self, AuditEntry};
use crate::store::forward as queue_store;
use crate::store::naming::{self as naming_store, ReportGrouping, StudyListing};

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

pub async fn list_studies(
    state: &AppState,
    filter: &StudyFilter,
    default_status: &str,
) -> Result<Vec<StudyListing>, HttpError> {
    let status_text = filter
        .status
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or(default_status);
    let status = match status_text {
        "all" => None,
        other => Some(StudyStatus::parse(other).ok_or_else(|| {
            HttpError::BadRequest(format!(
                "status {other:?}: use needs-reason, reason-documented, conforming or all"
            ))
        })?),
    };
    let since = match filter.since.as_deref().filter(|s| !s.is_empty()) {
        Some(since) => Some(date_param("since", since)?),
        None => None,
    };
    let mut studies = state
        .read(move |conn| naming_store::list_by_status(conn, status, since.as_deref()))
        .await?;
    if let Some(station) = filter.station.as_deref().filter(|s| !s.is_empty()) {
        studies.retain(|s| {
            s.station_names
                .iter()
                .any(|n| n.eq_ignore_ascii_case(station))
        });
    }
    if let Some(q) = filter.q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
        let q = q.to_lowercase();
        studies.retain(|s| {
            [
                &s.patient_name,
                &s.patient_id,
                &s.study_description,
                &s.study_instance_uid,
            ]
            .iter()
            .any(|field| field.to_lowercase().contains(&q))
                || s.series_descriptions
                    .iter()
                    .any(|d| d.to_lowercase().contains(&q))
        });
    }
    Ok(studies)
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

/// Everything about one study: detail, naming, forward state, audit.
pub async fn study_document(state: &AppState, uid: &str) -> Result<Value, HttpError> {
    let uid = study_param(uid)?;
    let lookup = uid.clone();
    let (detail, forward, audit) = state
        .read(move |conn| {
            Ok((
                crate::store::study_detail(conn, &lookup)?,
                queue_store::study_state(conn, &lookup)?,
                audit::entries(conn, Some(&lookup), 100)?,
            ))
        })
        .await?;
    let detail = detail
        .ok_or_else(|| HttpError::NotFound(format!("no study with Study Instance UID {uid}")))?;
    let mut value =
        serde_json::to_value(&detail).map_err(|e| HttpError::Internal(e.to_string()))?;
    value["forward"] = serde_json::to_value(forward).unwrap_or_default();
    value["audit"] = serde_json::to_value(audit).unwrap_or_default();
    Ok(value)
}

pub async fn study(
    State(state): State<AppState>,
    request: Request,
    Path(uid): Path<String>,
) -> Result<Json<Value>, HttpError> {
    request.caller()?;
    Ok(Json(study_document(&state, &uid).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReasonBody {
    pub code: String,
    #[serde(default)]
    pub note: String,
}

/// Documents a reason as the caller (never a name from the body), audited in the same
/// transaction. Returns the new status.
pub async fn record_reason(
    state: &AppState,
    request: &Request,
    uid: &str,
    body: &ReasonBody,
) -> Result<StudyStatus, HttpError> {
    let caller = request.caller()?;
    if !caller.can_document() {
        return Err(HttpError::Forbidden(format!(
            "{} is a {}: documenting a reason needs a physician",
            caller.name,
            caller.role.as_str()
        )));
    }
    let uid = study_param(uid)?;
    let shown = uid.clone();
    let choice = state.config.naming.reason(&body.code).ok_or_else(|| {
        let codes: Vec<&str> = state
            .config
            .naming
            .reasons
            .iter()
            .map(|r| r.code.as_str())
            .collect();
        HttpError::BadRequest(format!(
            "unknown reason code {:?}; use one of {}",
            body.code,
            codes.join(", ")
        ))
    })?;
    let note = body.note.trim().to_string();
    if choice.note_required && note.is_empty() {
        return Err(HttpError::BadRequest(format!(
            "reason {:?} needs a note",
            choice.label
        )));
    }
    if note.chars().count() > 2000 {
        return Err(HttpError::BadRequest(
            "the note is longer than 2000 characters".into(),
        ));
    }
    let naming = std::sync::Arc::clone(&state.naming.borrow());
    let by = caller.name.clone();
    let code = body.code.clone();
    let remote = request.remote.clone();
    let now = crate::receive::now_rfc3339();
    let status = state
        .index
        .execute(move |conn| {
            let status =
                naming_store::document_reason_in(conn, &naming, &uid, &code, &note, &by, &now)?;
            if status.is_some() {
                audit::append(
                    conn,
                    &AuditEntry {
                        at: now.clone(),
                        user_name: by.clone(),
                        action: "document-reason".into(),
                        study_instance_uid: Some(uid.clone()),
                        detail: if note.is_empty() {
                            code.clone()
                        } else {
                            format!("{code}: {note}")
                        },
                        remote_address: remote,
                    },
                )?;
            }
            Ok(status)
        })
        .await?;
    status.ok_or_else(|| HttpError::NotFound(format!("no study with Study Instance UID {shown}")))
}

pub async fn document_reason(
    State(state): State<AppState>,
    request: Request,
    Path(uid): Path<String>,
    body: Result<Json<ReasonBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, HttpError> {
    let Json(body) = body.map_err(|e| HttpError::BadRequest(e.body_text()))?;
    if let Some(caller) = &request.caller
        && caller.via_session
    {
        // A browser session must prove the request comes from our own page.
        return Err(HttpError::Forbidden(
            "use the study page's form, or Basic/Bearer credentials, for the API".into(),
        ));
    }
    let status = record_reason(&state, &request, &uid, &body).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "study_instance_uid": uid, "status": status.as_str(), "hcpcs": status.hcpcs() })),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
pub struct ReportQuery {
    pub from: Option<String>,
    pub to: Option<String>,
    pub by: Option<String>,
}

pub async fn report_rows(
    state: &AppState,
    query: &ReportQuery,
) -> Result<(String, String, String, Vec<naming_store::ReportRow>), HttpError> {
    let from = date_param(
        "from",
        query.from.as_deref().unwrap_or(&super::days_ago(365)),
    )?;
    let to = date_param("to", query.to.as_deref().unwrap_or(&super::today()))?;
    let by = query.by.clone().unwrap_or_else(|| "month".into());
    let grouping = match by.as_str() {
        "month" => ReportGrouping::Month,
        "station" => ReportGrouping::Station,
        "physician" => ReportGrouping::Physician,
        other => {
            return Err(HttpError::BadRequest(format!(
                "by {other:?}: use month, station or physician"
            )));
        }
    };
    let (f, t) = (from.clone(), to.clone());
    let rows = state
        .read(move |conn| naming_store::report(conn, &f, &t, grouping))
        .await?;
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
        .read(|conn| {
            Ok((
                queue_store::summary(conn, None)?,
                queue_store::by_study(conn, None, None)?,
            ))
        })
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

/// Queues instances again (admin), audited.
pub async fn retry(
    state: &AppState,
    request: &Request,
    body: &RetryBody,
) -> Result<usize, HttpError> {
    let caller = request.caller()?;
    if !caller.is_admin() {
        return Err(HttpError::Forbidden(format!(
            "{} is a {}: queue actions need an admin",
            caller.name,
            caller.role.as_str()
        )));
    }
    let study = match body.study.as_deref().filter(|s| !s.is_empty()) {
        Some(uid) => Some(study_param(uid)?),
        None => None,
    };
    if study.is_none() && !body.dead {
        return Err(HttpError::BadRequest(
            "say what to retry: a study or the dead letters".into(),
        ));
    }
    let destination = body.destination.clone().filter(|d| !d.is_empty());
    if let Some(name) = &destination
        && !state.config.destinations.iter().any(|d| &d.name == name)
    {
        return Err(HttpError::BadRequest(format!("no destination {name:?}")));
    }
    let (by, remote, dead, now) = (
        caller.name.clone(),
        request.remote.clone(),
        body.dead,
        crate::receive::now_rfc3339(),
    );
    Ok(state
        .index
        .execute(move |conn| {
            let count = queue_store::retry(conn, study.as_deref(), dead, destination.as_deref())?;
            audit::append(
                conn,
                &AuditEntry {
                    at: now,
                    user_name: by,
                    action: "queue-retry".into(),
                    study_instance_uid: study.clone(),
                    detail: format!(
                        "{count} instances{}{}",
                        if dead { ", dead letters" } else { "" },
                        destination
                            .map(|d| format!(", destination {d}"))
                            .unwrap_or_default()
                    ),
                    remote_address: remote,
                },
            )?;
            Ok(count)
        })
        .await?)
}

pub async fn queue_retry(
    State(state): State<AppState>,
    request: Request,
    body: Result<Json<RetryBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, HttpError> {
    let Json(body) = body.map_err(|e| HttpError::BadRequest(e.body_text()))?;
    if request.caller.as_ref().is_some_and(|c| c.via_session) {
        return Err(HttpError::Forbidden(
            "use the queue page's form, or Basic/Bearer credentials, for the API".into(),
        ));
    }
    let count = retry(&state, &request, &body).await?;
    Ok(Json(json!({ "queued": count })))
}

/// Database and storage checked.
pub async fn healthz(State(state): State<AppState>) -> Response {
    let database = state
        .read(
            |conn| Ok(conn.query_row("SELECT count(*) FROM studies", [], |r| r.get::<_, i64>(0))?),
        )
        .await;
    let spool = std::sync::Arc::clone(&state.spool);
    let free = tokio::task::spawn_blocking(move || spool.free_bytes()).await;
    let reserve = state.config.storage.reserve_free_bytes;
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
        .read(|conn| {
            let statuses: Vec<(String, i64)> = conn
                .prepare("SELECT status, count(*) FROM study_verdicts GROUP BY status")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            Ok((queue_store::depth(conn)?, statuses))
        })
        .await?;
    use std::fmt::Write;
    let mut gauges = String::new();
    let label = crate::metrics::label;
    let _ = writeln!(
        gauges,
        "# HELP simgate_forward_queue_depth Instances waiting per destination."
    );
    let _ = writeln!(gauges, "# TYPE simgate_forward_queue_depth gauge");
    let now = std::time::SystemTime::now();
    let mut ages = String::new();
    for d in &state.config.destinations {
        let (count, oldest) = depth
            .iter()
            .find(|(name, _, _)| *name == d.name)
            .map(|(_, count, oldest)| (*count, oldest.clone()))
            .unwrap_or((0, None));
        let _ = writeln!(
            gauges,
            "simgate_forward_queue_depth{{destination=\"{}\"}} {count}",
            label(&d.name)
        );
        let age = oldest
            .and_then(|t| humantime::parse_rfc3339_weak(&t).ok())
            .and_then(|t| now.duration_since(t).ok())
            .map(|a| a.as_secs_f64())
            .unwrap_or(0.0);
        let _ = writeln!(
            ages,
            "simgate_forward_queue_oldest_age_seconds{{destination=\"{}\"}} {age}",
            label(&d.name)
        );
    }
    let _ = writeln!(
        gauges,
        "# HELP simgate_forward_queue_oldest_age_seconds Age of the oldest waiting instance per destination."
    );
    let _ = writeln!(
        gauges,
        "# TYPE simgate_forward_queue_oldest_age_seconds gauge"
    );
    gauges.push_str(&ages);
    let _ = writeln!(gauges, "# HELP simgate_studies Studies by naming status.");
    let _ = writeln!(gauges, "# TYPE simgate_studies gauge");
    for status in ["conforming", "needs-reason", "reason-documented"] {
        let count = statuses
            .iter()
            .find(|(s, _)| s == status)
            .map(|(_, c)| *c)
            .unwrap_or(0);
        let _ = writeln!(gauges, "simgate_studies{{status=\"{status}\"}} {count}");
    }
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
