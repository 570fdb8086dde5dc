//! Server-rendered pages (maud: every interpolated value is HTML-escaped), usable without
//! JavaScript: worklist, study page with the reason form, report with an inline SVG chart,
//! queue, login. Forms carry the session's CSRF token.

use axum::Form;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde::Deserialize;

use super::api::{self, HeldBody, ReportQuery, RetryBody, StudyFilter};
use super::auth::{Caller, SESSION_COOKIE};
use super::{AppState, HttpError, Request};
use crate::naming::StudyStatus;
use crate::service::ReasonRequest;
use crate::store::queue::QueueState;
use crate::store::safety::{SafetySummary, StudySafety};
use crate::store::studies::StudyRow;

const STYLE: &str = "
body{font-family:system-ui,sans-serif;margin:0;color:#1d2733;background:#f6f7f9}
header{background:#1f3a5f;color:#fff;padding:.6rem 1.2rem;display:flex;gap:1.2rem;align-items:center}
header a{color:#fff;text-decoration:none;font-weight:600}header .who{margin-left:auto;font-weight:400}
main{padding:1rem 1.2rem}h1{font-size:1.3rem;margin:.2rem 0 1rem}h2{font-size:1.05rem;margin:1.4rem 0 .5rem}
table{border-collapse:collapse;background:#fff;width:100%;font-size:.88rem}
th,td{border:1px solid #d8dde4;padding:.3rem .45rem;text-align:left;vertical-align:top}
th{background:#e9edf2}.num{text-align:right}.muted{color:#66707c}.warn{color:#a33}.ok{color:#276749}
.badge{display:inline-block;padding:.05rem .4rem;border-radius:.3rem;font-size:.8rem;background:#e2e8f0}
.needs-reason{background:#fde2e1}.reason-documented{background:#fef3c7}.conforming{background:#dcfce7}
form.filters{display:flex;gap:.6rem;flex-wrap:wrap;align-items:end;margin-bottom:1rem}
label{display:flex;flex-direction:column;font-size:.85rem;gap:.15rem}
input,select,textarea,button{font-size:1rem;font-family:inherit;padding:.3rem .45rem}button{cursor:pointer}
.badge{white-space:nowrap}ul.plain{margin:0;padding-left:1rem}ul.plain li{margin:.1rem 0}
.choices label{flex-direction:row;align-items:center;gap:.5rem;font-size:.95rem;padding:.3rem 0}
.choices input[type=radio]{width:1.1rem;height:1.1rem}
.legend span{display:inline-block;width:.8rem;height:.8rem;margin:0 .3rem 0 .9rem;vertical-align:middle}
.card{background:#fff;border:1px solid #d8dde4;padding:.8rem 1rem;margin-bottom:1rem}
.error{background:#fde2e1;border:1px solid #e53e3e;padding:.6rem;margin-bottom:1rem}
.done{background:#dcfce7;border:1px solid #38a169;padding:.6rem;margin-bottom:1rem}
.headline{font-size:1.05rem;margin:.2rem 0 .8rem}
.bulk{display:flex;gap:.6rem;align-items:end;flex-wrap:wrap;margin:.4rem 0 .6rem}
table.worklist{font-size:.84rem}table.worklist td{white-space:nowrap}table.worklist th,table.worklist td{padding:.25rem .3rem}
table.worklist td.clip{max-width:10rem;overflow:hidden;text-overflow:ellipsis}table.worklist td.reason{max-width:14rem}
table.worklist details[open] .detail{white-space:normal;max-width:32rem}
button.small{font-size:.8rem;padding:.1rem .4rem}
.safety{background:#fff4e5;border:2px solid #c05621;padding:.6rem 1rem;margin-bottom:1rem}
.safety h2{margin-top:.2rem;color:#9c4221}.held{background:#fed7aa}
form.decide{display:flex;gap:.4rem;align-items:center;flex-wrap:wrap}
";

fn page(title: &str, caller: Option<&Caller>, body: Markup) -> Html<String> {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · simgate" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    span { "simgate" }
                    a href="/worklist" { "Worklist" }
                    a href="/report" { "Report" }
                    a href="/queue" { "Queue" }
                    span.who {
                        @if let Some(c) = caller {
                            (c.name) " (" (c.role.as_str()) ")"
                            @if c.via_session {
                                form method="post" action="/logout" style="display:inline;margin-left:.6rem" {
                                    input type="hidden" name="csrf" value=(c.csrf.clone().unwrap_or_default());
                                    button type="submit" { "Sign out" }
                                }
                            }
                        } @else {
                            a href="/login" { "Sign in" }
                        }
                    }
                }
                main { (body) }
            }
        }
    };
    Html(markup.into_string())
}

/// Pages need a caller; without one the browser goes to the login page.
fn require(request: &Request, next: &str) -> Result<Caller, Redirect> {
    request
        .caller
        .clone()
        .ok_or_else(|| Redirect::to(&format!("/login?next={}", urlencode(next))))
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn error_page(caller: Option<&Caller>, error: HttpError) -> Response {
    let status = error.status();
    let body = html! { h1 { "Cannot do that" } div.error { (error.to_string()) } p { a href="/worklist" { "Back to the worklist" } } };
    (status, page("Error", caller, body)).into_response()
}

pub async fn home() -> Redirect {
    Redirect::to("/worklist")
}

#[derive(Debug, Default, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

/// The cookie that carries the login form's CSRF token (double submit: the form sends it
/// back as `login_csrf`), so another site cannot sign a browser in as someone else.
const LOGIN_COOKIE: &str = "simgate_login";

/// Where to go after signing in: a local path only. `//host`, `/\host` and `http://host`
/// are other hosts to a browser; each lands on `/` instead.
pub fn local_next(next: Option<&str>) -> String {
    let Some(next) = next.filter(|n| !n.is_empty()) else {
        return "/worklist".into();
    };
    let local = next.starts_with('/')
        && !next.starts_with("//")
        && !next.contains('\\')
        && !next.chars().any(char::is_control);
    if local { next.to_string() } else { "/".into() }
}

/// A cookie as simgate sets them: HttpOnly, SameSite=Strict, and Secure when browsers come
/// over HTTPS.
fn cookie(state: &AppState, name: &str, value: &str, path: &str, extra: &str) -> String {
    let secure = if state.config().http.https() {
        "; Secure"
    } else {
        ""
    };
    format!("{name}={value}; Path={path}; HttpOnly; SameSite=Strict{secure}{extra}")
}

pub async fn login_form(
    State(state): State<AppState>,
    Query(query): Query<LoginQuery>,
) -> Response {
    let token = super::auth::random_token();
    let cookie = cookie(&state, LOGIN_COOKIE, &token, "/login", "");
    (
        [(header::SET_COOKIE, cookie)],
        login_page(&local_next(query.next.as_deref()), "", None, &token),
    )
        .into_response()
}

fn login_page(next: &str, name: &str, problem: Option<&str>, csrf: &str) -> Html<String> {
    page(
        "Sign in",
        None,
        html! {
            h1 { "Sign in" }
            @if let Some(problem) = problem { div.error { (problem) } }
            form.card method="post" action="/login" style="max-width:22rem" {
                input type="hidden" name="next" value=(next);
                input type="hidden" name="login_csrf" value=(csrf);
                label { "User" input name="name" value=(name) autocomplete="username" required; }
                label { "Password" input name="password" type="password" autocomplete="current-password" required; }
                p { button type="submit" { "Sign in" } }
            }
        },
    )
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    name: String,
    password: String,
    next: Option<String>,
    #[serde(default)]
    login_csrf: String,
}

pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    // Only local paths: never redirect elsewhere after a login.
    let next = local_next(form.next.as_deref());
    let expected = super::auth::cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || expected != form.login_csrf {
        let token = super::auth::random_token();
        let cookie = cookie(&state, LOGIN_COOKIE, &token, "/login", "");
        return (
            StatusCode::FORBIDDEN,
            [(header::SET_COOKIE, cookie)],
            login_page(
                &next,
                &form.name,
                Some("The sign-in form was stale: please sign in again."),
                &token,
            ),
        )
            .into_response();
    }
    // argon2 runs on the password threads, never on the async workers.
    let session = match state
        .auth
        .login(&form.name, &form.password, Some(peer.ip()))
        .await
    {
        Ok(session) => session,
        Err(refusal) => {
            let error = HttpError::from(refusal);
            let mut response = (
                error.status(),
                login_page(
                    &next,
                    &form.name,
                    Some(&error.to_string()),
                    &form.login_csrf,
                ),
            )
                .into_response();
            if let Some(seconds) = error.retry_after() {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
            }
            return response;
        }
    };
    // Login names only as a short hash above debug: a password typed into the name box
    // must not land in the log.
    let user = super::auth::name_hash(&form.name);
    match session {
        Some(id) => {
            tracing::info!(%user, "signed in");
            let cookie = cookie(&state, SESSION_COOKIE, &id, "/", "");
            ([(header::SET_COOKIE, cookie)], Redirect::to(&next)).into_response()
        }
        None => {
            tracing::info!(%user, address = %peer.ip(), "sign-in refused");
            (
                StatusCode::UNAUTHORIZED,
                login_page(
                    &next,
                    &form.name,
                    Some("Unknown user or wrong password."),
                    &form.login_csrf,
                ),
            )
                .into_response()
        }
    }
}

/// Ends the session of the cookie, whatever the form carries: signing out must always work
/// (at worst another site signs someone out, which costs them a sign-in).
pub async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(id) = super::auth::cookie(&headers, SESSION_COOKIE) {
        state.auth.logout(&id);
    }
    let cookie = cookie(&state, SESSION_COOKIE, "", "/", "; Max-Age=0");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/login")).into_response()
}

/// A session form must carry the session's CSRF token.
fn check_csrf(caller: &Caller, token: &str) -> Result<(), HttpError> {
    match &caller.csrf {
        Some(expected) if caller.via_session && !token.is_empty() && expected == token => Ok(()),
        _ => Err(HttpError::Forbidden(
            "the form's CSRF token is missing or stale: reload the page and try again".into(),
        )),
    }
}

/// A DICOM person name for people: `FAMILY^GIVEN` reads "FAMILY, GIVEN".
fn person(name: &str) -> String {
    let parts: Vec<&str> = name
        .split('^')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    match parts.as_slice() {
        [] => String::new(),
        [family] => family.to_string(),
        [family, rest @ ..] => format!("{family}, {}", rest.join(" ")),
    }
}

/// A DICOM date (YYYYMMDD) as YYYY-MM-DD; anything else as received.
fn dicom_date(date: &str) -> String {
    if date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit()) {
        format!("{}-{}-{}", &date[..4], &date[4..6], &date[6..])
    } else {
        date.to_string()
    }
}

/// Findings in words.
fn finding_label(code: &str) -> &str {
    match code {
        "study-name-nonstandard" => "Study name is not a standard name",
        "series-name-nonstandard" => "Series name follows no site convention",
        other => other,
    }
}

/// How long a study has waited, in words.
fn waiting(waited: Option<std::time::Duration>) -> String {
    let Some(waited) = waited else {
        return String::new();
    };
    let minutes = waited.as_secs() / 60;
    match minutes {
        0..60 => format!("{minutes} min"),
        60..2880 => format!("{} h", minutes / 60),
        _ => format!("{} days", minutes / 1440),
    }
}

/// What the last bulk action did, carried in the worklist's URL after it.
#[derive(Debug, Default, Deserialize)]
pub struct Done {
    /// Studies documented.
    done: Option<usize>,
    /// Studies not documented (already conforming, unknown).
    skipped: Option<usize>,
    /// The reason code documented.
    #[serde(rename = "as")]
    as_code: Option<String>,
    /// Why nothing was done.
    problem: Option<String>,
}

/// The worklist's heading for a status filter.
fn worklist_heading(status: &str) -> &'static str {
    match status {
        "needs-reason" => "Studies that need a documented reason",
        "reason-documented" => "Studies with a documented reason",
        "conforming" => "Studies named per the standard",
        "safety" => "Studies with safety findings or held instances",
        _ => "All studies",
    }
}

pub async fn worklist(
    State(state): State<AppState>,
    request: Request,
    Query(filter): Query<StudyFilter>,
    Query(done): Query<Done>,
) -> Response {
    let caller = match require(&request, "/worklist") {
        Ok(caller) => caller,
        Err(redirect) => return redirect.into_response(),
    };
    let listing = match api::list_studies(&state, &filter, "needs-reason", false).await {
        Ok(listing) => listing,
        Err(e) => return error_page(Some(&caller), e),
    };
    let (safety, headline) = match state
        .read(|db| Ok((db.safety_summary()?, db.needs_reason_headline()?)))
        .await
    {
        Ok(read) => read,
        Err(e) => return error_page(Some(&caller), e),
    };
    let config = state.config();
    let zone = &config.http.time_zone;
    let reasons = &config.naming.reasons;
    let reason_label = |code: &str| {
        reasons
            .iter()
            .find(|r| r.code == code)
            .map(|r| r.label.clone())
            .unwrap_or_else(|| code.to_string())
    };
    let status = filter.status_or("needs-reason");
    let can_document = caller.can_document() && caller.via_session;
    let documentable: Vec<&StudyRow> = listing
        .studies
        .iter()
        .filter(|s| s.status == Some(StudyStatus::NeedsReason))
        .collect();
    let first = (listing.page - 1) * listing.per + 1;
    let last = (first + listing.studies.len()).saturating_sub(1);
    let sort_link = |key: &str, label: &str| {
        let active = filter.sort() == key;
        let order = if active && !filter.descending() {
            "desc"
        } else {
            "asc"
        };
        html! {
            a href={"/worklist?" (filter.url(&[("sort", key), ("order", order), ("page", "")]))} {
                (label) @if active { @if filter.descending() { " ▼" } @else { " ▲" } }
            }
        }
    };
    let text_input = |name: &str, label: &str, value: &Option<String>, placeholder: &str| {
        html! { label { (label) input name=(name) value=(value.clone().unwrap_or_default()) placeholder=(placeholder) size="11"; } }
    };
    let body = html! {
        h1 { (worklist_heading(&status)) }
        p.headline #headline {
            @match headline {
                (0, _) => { strong { "Nothing needs a reason." } }
                (n, oldest) => {
                    strong { (n) " need" @if n == 1 { "s" } " a reason" }
                    @if let Some(age) = oldest.as_deref().and_then(crate::clock::age) { ", oldest waiting " (age) }
                    @if status != "needs-reason" { " · " a href="/worklist?status=needs-reason" { "show them" } }
                }
            }
        }
        @if let Some(n) = done.done {
            div.done #done-banner {
                "Documented " (n) " stud" @if n == 1 { "y" } @else { "ies" }
                @if let Some(code) = &done.as_code { " as “" (reason_label(code)) "”" }
                "."
                @if let Some(skipped) = done.skipped.filter(|s| *s > 0) { " " (skipped) " not documented: named per the standard when judged again, or no longer known." }
            }
        }
        @if let Some(problem) = &done.problem { div.error { (problem) } }
        (safety_banner(&safety))
        form.filters method="get" action="/worklist" {
            label { "Status" select name="status" {
                @for (value, text) in [("needs-reason", "Needs a reason (G9319)"), ("reason-documented", "Reason documented (G9320)"), ("conforming", "Named per standard (G9318)"), ("safety", "Safety findings or held"), ("all", "All")] {
                    option value=(value) selected[status == value] { (text) }
                }
            } }
            (text_input("since", "Received from", &filter.since, "YYYY-MM-DD"))
            (text_input("until", "Received to", &filter.until, "YYYY-MM-DD"))
            (text_input("study_from", "Study date from", &filter.study_from, "YYYY-MM-DD"))
            (text_input("study_to", "Study date to", &filter.study_to, "YYYY-MM-DD"))
            (text_input("station", "Station", &filter.station, ""))
            label { "Search" input name="q" value=(filter.q.clone().unwrap_or_default()) placeholder="patient, accession, description, UID"; }
            label { "Per page" select name="per" {
                @for size in api::PAGE_SIZES { option value=(size) selected[listing.per == size] { (size) } }
            } }
            @if let Some(sort) = &filter.sort { input type="hidden" name="sort" value=(sort); }
            @if let Some(order) = &filter.order { input type="hidden" name="order" value=(order); }
            button type="submit" { "Filter" }
        }
        @if listing.studies.is_empty() {
            p.muted { "No studies match." }
        } @else {
            p.muted #showing {
                "Showing " (first) "–" (last) " of " (listing.total)
                @if listing.pages > 1 {
                    " · page " (listing.page) " of " (listing.pages) " "
                    @if listing.page > 1 { a href={"/worklist?" (filter.url(&[("page", &(listing.page - 1).to_string())]))} { "‹ previous" } " " }
                    @if listing.page < listing.pages { a href={"/worklist?" (filter.url(&[("page", &(listing.page + 1).to_string())]))} { "next ›" } }
                }
            }
            form #bulk method="post" action="/reasons" {
                input type="hidden" name="csrf" value=(caller.csrf.clone().unwrap_or_default());
                input type="hidden" name="back" value=(filter.url(&[]));
                @if can_document && !documentable.is_empty() {
                    div.bulk {
                        label { "Document as" select name="code" {
                            @for choice in reasons { option value=(choice.code) selected[choice.code == config.naming.rt_planning_reason] { (choice.label) } }
                        } }
                        label { "Note" input name="note" placeholder="required for “Other”" size="24"; }
                        button type="submit" name="scope" value="selected" { "Document selected" }
                        button type="submit" name="scope" value="page" { "Document all " (documentable.len()) " on this page" }
                        @for s in &documentable { input type="hidden" name="page_study" value=(s.study_instance_uid); }
                    }
                }
                table.worklist #worklist {
                    thead { tr {
                        th { @if can_document { span.muted { "✓" } } }
                        th { (sort_link("waiting", "Waiting")) } th { "Status" } th { "Safety" }
                        th { (sort_link("patient", "Patient")) } th { (sort_link("study-date", "Study date")) }
                        th { (sort_link("accession", "Accession")) } th { (sort_link("received", "Received")) br; span.muted { (zone.name()) } }
                        th { (sort_link("station", "Station")) } th { "Study description" } th { "Suggested reason" } th { "Details" }
                    } }
                    tbody {
                        @for s in &listing.studies {
                            tr {
                                td { @if can_document && s.status == Some(StudyStatus::NeedsReason) {
                                    input type="checkbox" name="study" value=(s.study_instance_uid) aria-label="select";
                                } }
                                td.num { (waiting(s.waiting())) }
                                td.clip title=(s.reason_code.as_deref().map(&reason_label).unwrap_or_default()) { (status_badge(s.status))
                                    @if let Some(code) = &s.reason_code { " " span.muted { (reason_label(code)) @if let Some(by) = &s.documented_by { ", " (by) } } }
                                }
                                td { (safety_cell(s.safety_findings, s.held_instances)) }
                                td.clip title=(person(&s.patient_name)) { bdi { (person(&s.patient_name)) } " " span.muted { bdi { (s.patient_id) } } }
                                td { (dicom_date(&s.study_date)) }
                                td { bdi { (s.accession_number) } }
                                td title=(zone.show(&s.first_received_at)) { (zone.show_short(&s.first_received_at)) }
                                td.clip { bdi { (s.station_names.join(", ")) } }
                                td.clip { a href={"/studies/" (s.study_instance_uid)} { @if s.study_description.is_empty() { "(empty)" } @else { bdi { (s.study_description) } } } }
                                @if s.status == Some(StudyStatus::NeedsReason) && !s.suggested_reason.is_empty() {
                                    td.clip.reason title=(reason_label(&s.suggested_reason)) {
                                        @if can_document { button.small type="submit" name="confirm" value=(s.study_instance_uid) { "Confirm" } " " }
                                        (reason_label(&s.suggested_reason))
                                    }
                                } @else { td {} }
                                td { details {
                                    summary { (s.series_count) " series" }
                                    div.detail {
                                        p { @for d in &s.series_descriptions { span.badge { bdi { (if d.is_empty() { "(empty)" } else { d.as_str() }) } } " " } }
                                        @for f in &s.items.findings { p.warn { (finding_label(&f.code)) ": " bdi { (f.subject) } br; span.muted { (f.detail) } } }
                                        @if !s.items.suggestions.is_empty() { p { "Nearest standard names: " @for g in &s.items.suggestions { span.badge { (g.code) " " (g.name) " " (format!("{:.2}", g.score)) } " " } } }
                                        @if s.rt_planning { p { "Treatment planning: " @for e in &s.items.evidence { span.badge { (e.kind.replace('-', " ")) ": " (e.detail) } " " } } }
                                    }
                                } }
                            }
                        }
                    }
                }
            }
        }
    };
    page("Worklist", Some(&caller), body).into_response()
}

/// The worklist's bulk form: documents the selected studies, all on the page, or one study's
/// suggested reason, then shows the worklist again with what was done.
pub async fn document_reasons(
    State(state): State<AppState>,
    request: Request,
    body: axum::body::Bytes,
) -> Response {
    let caller = match require(&request, "/worklist") {
        Ok(caller) => caller,
        Err(redirect) => return redirect.into_response(),
    };
    let form = BulkForm::parse(&body);
    if let Err(e) = check_csrf(&caller, &form.csrf) {
        return error_page(Some(&caller), e);
    }
    let author = match request.author() {
        Ok(author) => author,
        Err(e) => return error_page(Some(&caller), e),
    };
    let back = form.back_query();
    let (studies, code, note) = match &form.confirm {
        Some(uid) => {
            let lookup = uid.clone();
            let suggested = match state.read(move |db| db.study_naming(&lookup)).await {
                Ok(naming) => naming.map(|n| n.suggested_reason).unwrap_or_default(),
                Err(e) => return error_page(Some(&caller), e),
            };
            if suggested.is_empty() {
                return Redirect::to(&format!(
                    "/worklist?{back}&problem=that+study+has+no+suggested+reason"
                ))
                .into_response();
            }
            (vec![uid.clone()], suggested, String::new())
        }
        None => {
            let studies = if form.scope == "page" {
                form.page_studies.clone()
            } else {
                form.studies.clone()
            };
            (studies, form.code.clone(), form.note.clone())
        }
    };
    let request = crate::service::BulkReasonRequest {
        studies,
        code: code.clone(),
        note,
    };
    match state.service.document_reasons(&author, request).await {
        Ok(outcomes) => {
            let done = outcomes
                .iter()
                .filter(|o| o.outcome == crate::service::BulkResult::Documented)
                .count();
            let skipped = outcomes.len() - done;
            let mut url = form_urlencoded::Serializer::new(String::new());
            url.append_pair("done", &done.to_string());
            url.append_pair("skipped", &skipped.to_string());
            url.append_pair("as", &code);
            Redirect::to(&format!("/worklist?{back}&{}", url.finish())).into_response()
        }
        Err(e) if e.kind() == crate::service::ErrorKind::Invalid => {
            let mut url = form_urlencoded::Serializer::new(String::new());
            url.append_pair("problem", &e.to_string());
            Redirect::to(&format!("/worklist?{back}&{}", url.finish())).into_response()
        }
        Err(e) => error_page(Some(&caller), e.into()),
    }
}

/// The worklist form's fields; `study` and `page_study` repeat.
#[derive(Debug, Default)]
struct BulkForm {
    csrf: String,
    code: String,
    note: String,
    scope: String,
    confirm: Option<String>,
    studies: Vec<String>,
    page_studies: Vec<String>,
    back: String,
}

impl BulkForm {
    fn parse(body: &[u8]) -> BulkForm {
        let mut form = BulkForm::default();
        for (key, value) in form_urlencoded::parse(body) {
            let value = value.into_owned();
            match key.as_ref() {
                "csrf" => form.csrf = value,
                "code" => form.code = value,
                "note" => form.note = value,
                "scope" => form.scope = value,
                "confirm" => form.confirm = Some(value),
                "study" => form.studies.push(value),
                "page_study" => form.page_studies.push(value),
                "back" => form.back = value,
                _ => {}
            }
        }
        form
    }

    /// The worklist filters to go back to, re-encoded from the known keys only.
    fn back_query(&self) -> String {
        const KEYS: [&str; 12] = [
            "status",
            "since",
            "until",
            "study_from",
            "study_to",
            "station",
            "by",
            "q",
            "sort",
            "order",
            "page",
            "per",
        ];
        let mut url = form_urlencoded::Serializer::new(String::new());
        for (key, value) in form_urlencoded::parse(self.back.as_bytes()) {
            if KEYS.contains(&key.as_ref()) {
                url.append_pair(&key, &value);
            }
        }
        url.finish()
    }
}

/// What the study page says after its form was posted.
#[derive(Debug, Default, Deserialize)]
pub struct StudyQuery {
    /// Set after a reason was documented.
    documented: Option<String>,
}

/// The reason form as posted, with why it was refused: shown again with the choice kept.
struct Refused {
    code: String,
    note: String,
    problem: String,
}

pub async fn study(
    State(state): State<AppState>,
    request: Request,
    Path(uid): Path<String>,
    Query(query): Query<StudyQuery>,
) -> Response {
    let caller = match require(&request, &format!("/studies/{uid}")) {
        Ok(caller) => caller,
        Err(redirect) => return redirect.into_response(),
    };
    let documented = query.documented.is_some();
    study_page(&state, &caller, &uid, documented, None).await
}

async fn study_page(
    state: &AppState,
    caller: &Caller,
    uid: &str,
    documented: bool,
    refused: Option<Refused>,
) -> Response {
    let doc = match state.study_document(uid).await {
        Ok(doc) => doc,
        Err(e) => return error_page(Some(caller), e),
    };
    let lookup = uid.to_string();
    let next = match state.read(move |db| db.next_needing_reason(&lookup)).await {
        Ok(next) => next,
        Err(e) => return error_page(Some(caller), e),
    };
    let config = state.config();
    let zone = &config.http.time_zone;
    let study = &doc.detail.summary;
    let naming = doc.detail.naming.as_ref();
    let status = naming.map(|n| n.status);
    let suggested = naming.map(|n| n.suggested_reason.as_str()).unwrap_or("");
    let chosen = refused
        .as_ref()
        .map(|r| r.code.as_str())
        .unwrap_or(suggested);
    let reasons = &config.naming.reasons;
    let reason_label = |code: &str| {
        reasons
            .iter()
            .find(|r| r.code == code)
            .map(|r| r.label.clone())
            .unwrap_or_else(|| code.to_string())
    };
    let series_finding = |description: &str| {
        naming.and_then(|n| {
            n.items
                .findings
                .iter()
                .find(|f| f.code == "series-name-nonstandard" && f.subject == description)
                .map(|f| f.detail.clone())
        })
    };
    let next_link = html! {
        @if let Some(next) = &next { a #next-study href={"/studies/" (next)} { "Next study that needs a reason ›" } }
        @else { a href="/worklist" { "Nothing else needs a reason: back to the worklist" } }
    };
    let body = html! {
        h1 { "Study " bdi { (study.study_description) } }
        @if documented {
            div.done #done-banner {
                "Reason documented"
                @if let Some(r) = naming.and_then(|n| n.reasons.last()) { ": “" (reason_label(&r.reason_code)) "” by " (r.documented_by) }
                @if let Some(n) = naming { " · now " (n.hcpcs) " " (n.status.as_str()) }
                ". " (next_link)
            }
        }
        div.card {
            p { (status_badge(status)) }
            p { "Patient: " bdi { (person(&study.patient_name)) } " (" bdi { (study.patient_id) } ") · Study date: " (dicom_date(&study.study_date)) " · Accession: " bdi { (doc.detail.accession_number) } " · Station: " bdi { (study.station_names.join(", ")) } }
            p.muted { "Received " (zone.show(&study.first_received_at)) " · Study Instance UID " (study.study_instance_uid) }
            @if let Some(n) = naming {
                @if !n.standard_code.is_empty() {
                    p.ok { "Named per the standard: " (n.standard_code) " " (n.standard_name) " (by " (n.matched_by) ")" }
                }
                @for f in n.items.findings.iter().filter(|f| f.code == "study-name-nonstandard") {
                    div.warn #why {
                        p { strong { (finding_label(&f.code)) ": " } bdi { "“" (f.subject) "”" } }
                        p { "Why: " }
                        ul.plain {
                            li { "no code from the loaded nomenclatures in Procedure Code Sequence (0008,1032) or Requested Procedure Code Sequence (0032,1064)"
                                @if doc.detail.procedure_codes.is_empty() { " (the study has none)" }
                                @else { " (it has " @for (i, c) in doc.detail.procedure_codes.iter().enumerate() { @if i > 0 { ", " } bdi { (c.code_value) " " (c.coding_scheme_designator) } } ")" }
                            }
                            li { "Study Description " bdi { "“" (f.subject) "”" } ", normalised " bdi { "“" (crate::naming::text::normalize(&f.subject)) "”" } ", is equal to no standard name" }
                            @if let Some((_, more)) = f.detail.split_once("; ") { li { (more) } }
                        }
                    }
                }
                @if n.items.suggestions.is_empty() {
                    @if status == Some(StudyStatus::NeedsReason) { p.muted { "No standard name is similar enough to suggest (similarity below " (format!("{:.2}", config.naming.suggestion_floor)) ")." } }
                } @else {
                    p { "Nearest standard names (similarity 0–1): " @for g in &n.items.suggestions { span.badge { (g.code) " " (g.name) " · " (format!("{:.2}", g.score)) } " " } }
                }
                @if n.rt_planning {
                    p { "Acquired for radiation treatment planning: " @for e in &n.items.evidence { span.badge { (e.kind.replace('-', " ")) ": " (e.detail) } " " } }
                }
            }
        }
        @if matches!(status, Some(StudyStatus::NeedsReason | StudyStatus::ReasonDocumented)) {
            @if caller.can_document() && caller.via_session {
                form.card #reason-form method="post" action={"/studies/" (study.study_instance_uid) "/reasons"} {
                    h2 { @if status == Some(StudyStatus::ReasonDocumented) { "Document another medical reason" } @else { "Document the medical reason" } }
                    @if let Some(r) = &refused { div.error #form-problem { (r.problem) } }
                    input type="hidden" name="csrf" value=(caller.csrf.clone().unwrap_or_default());
                    div.choices {
                        @for choice in reasons {
                            label {
                                input type="radio" name="code" value=(choice.code) required checked[choice.code == chosen];
                                (choice.label) @if choice.code == suggested { " " span.badge { "suggested" } } @if choice.note_required { " " span.muted { "(needs a note)" } }
                            }
                        }
                    }
                    label style="max-width:40rem" { "Note (required for “Other”)" textarea name="note" rows="2" { (refused.as_ref().map(|r| r.note.as_str()).unwrap_or("")) } }
                    p { button type="submit" { "Document reason as " (caller.name) } " " (next_link) }
                }
            } @else {
                p.muted { "Sign in as a physician to document a reason." }
            }
        }
        (study_safety(&doc.safety, caller, &study.study_instance_uid, zone))
        h2 { "Series" }
        table #series {
            thead { tr { th { "#" } th { "Modality" } th { "Series description" } th { "Kind" } th.num { "Instances" } th { "Verdict" } } }
            tbody {
                @for s in &doc.detail.series {
                    tr {
                        td { (s.series_number.map(|n| n.to_string()).unwrap_or_default()) }
                        td { (s.modality) }
                        td { @if s.series_description.is_empty() { span.muted { "(empty)" } } @else { bdi { (s.series_description) } } }
                        td { (s.kind) }
                        td.num { (s.instance_count) }
                        td { (s.verdict.map(|v| v.as_str()).unwrap_or(""))
                            @if let Some(detail) = series_finding(&s.series_description).filter(|_| s.verdict.map(|v| v.as_str()) == Some("nonstandard")) { br; span.muted { (detail) } }
                        }
                    }
                }
            }
        }
        h2 { "Forwarding" }
        @if doc.forward.is_empty() { p.muted { "Not queued for any destination." } } @else {
            table { thead { tr { th { "Destination" } th { "State" } th.num { "Instances" } th { "Oldest queued" } th { "Last error" } th { "Sent as" } } }
                tbody { @for f in &doc.forward { tr { td { (f.destination) } td { (f.state.as_str()) } td.num { (f.instances) } td { (zone.show(&f.oldest_queued_at)) } td.warn { (f.last_error) } td { (f.sent_as) } } } } }
        }
        h2 { "Documented reasons" }
        @let documented_reasons = naming.map(|n| n.reasons.as_slice()).unwrap_or_default();
        @if documented_reasons.is_empty() { p.muted { "None yet." } } @else {
            table #reasons { thead { tr { th { "When" } th { "Who" } th { "Reason" } th { "Note" } } }
                tbody { @for r in documented_reasons { tr { td { (zone.show(&r.documented_at)) } td { (r.documented_by) } td { (reason_label(&r.reason_code)) } td { (r.note) } } } } }
        }
        h2 { "History" }
        table { thead { tr { th { "When" } th { "Change" } th { "Cause" } } }
            tbody { @for h in naming.map(|n| n.status_history.as_slice()).unwrap_or_default() { tr { td { (zone.show(&h.changed_at)) } td { (h.from_status.map(StudyStatus::as_str).unwrap_or("—")) " → " (h.to_status.as_str()) } td { (h.cause) } } } } }
        h2 { "Audit" }
        @if doc.audit.is_empty() { p.muted { "No changes made through the web pages, the API or the CLI." } } @else {
            table #audit { thead { tr { th { "When" } th { "Who" } th { "What" } th { "Detail" } th { "From" } } }
                tbody { @for a in &doc.audit { tr { td { (zone.show(&a.at)) } td { (a.user_name) } td { (a.action) } td { (a.detail) } td { (a.remote_address) } } } } }
        }
    };
    page("Study", Some(caller), body).into_response()
}

/// Above the worklist: what the safety gate holds back, when it holds anything.
fn safety_banner(summary: &SafetySummary) -> Markup {
    html! {
        @if summary.held_instances > 0 || summary.studies_with_findings > 0 {
            div.safety #safety-banner {
                strong { "Safety gate: " }
                (summary.held_instances) " instance(s) of " (summary.studies_with_held) " study(ies) held, not sent; "
                (summary.studies_with_findings) " study(ies) with findings. "
                a href="/worklist?status=safety" { "Show them" }
            }
        }
    }
}

fn safety_cell(findings: i64, held: i64) -> Markup {
    html! {
        @if held > 0 { span.badge.held { (held) " held" } " " }
        @if findings > 0 { span.badge { (findings) " finding" @if findings != 1 { "s" } } }
    }
}

/// The study's findings, held instances (with release and reject for an admin) and the
/// geometry check of each series.
fn study_safety(
    safety: &StudySafety,
    caller: &Caller,
    study: &str,
    zone: &crate::clock::DisplayZone,
) -> Markup {
    let admin = caller.is_admin() && caller.via_session;
    let csrf = caller.csrf.clone().unwrap_or_default();
    let held: Vec<_> = safety
        .held
        .iter()
        .filter(|h| h.state == QueueState::Held)
        .collect();
    let waiting = safety.held.len() - held.len();
    html! {
        @if !safety.findings.is_empty() || !safety.held.is_empty() {
            div.safety #safety {
                h2 { "Safety gate" }
                @if !held.is_empty() { p { strong { (held.len()) " held: not sent until an admin releases them." } } }
                @if waiting > 0 { p { (waiting) " waiting for their series' geometry check." } }
                @if !safety.findings.is_empty() {
                    table #findings { thead { tr { th { "Finding" } th { "Attribute" } th { "Detail" } th { "Study has / expected" } th { "Found" } th { "Series" } th { "Instance" } } }
                        tbody { @for f in &safety.findings { tr {
                            td { span.badge { (f.code) } } td { (f.attribute) } td { (f.detail) }
                            td { bdi { (f.expected) } } td { bdi { (f.found) } }
                            td.muted { (f.series_instance_uid) } td.muted { (f.sop_instance_uid) }
                        } } }
                    }
                }
                @if !held.is_empty() {
                    h2 { "Held instances" }
                    @if admin && held.len() > 1 {
                        form.decide #decide-study method="post" action="/held" {
                            input type="hidden" name="csrf" value=(csrf);
                            input type="hidden" name="study" value=(study);
                            "All " (held.len()) " held instances of this study: "
                            input name="why" required placeholder="why (audited)" aria-label="why";
                            button type="submit" name="decision" value="release" { "Release all" }
                            button type="submit" name="decision" value="reject" { "Reject all" }
                        }
                    }
                    table #held { thead { tr { th { "Instance" } th { "Series" } th { "Destination" } th { "Held for" } th { "Since" } th {} } }
                        tbody { @for h in &held { tr {
                            td { (h.sop_instance_uid) @if let Some(n) = h.instance_number { span.muted { " #" (n) } } }
                            td { bdi { (h.series_description) } }
                            td { (h.destination) }
                            td { (h.held_for.join(", ")) }
                            td { (zone.show(&h.queued_at)) }
                            td { @if admin {
                                form.decide method="post" action="/held" {
                                    input type="hidden" name="csrf" value=(csrf);
                                    input type="hidden" name="study" value=(study);
                                    input type="hidden" name="instance" value=(h.sop_instance_uid);
                                    input type="hidden" name="destination" value=(h.destination);
                                    input name="why" required placeholder="why (audited)" aria-label="why";
                                    button type="submit" name="decision" value="release" { "Release" }
                                    button type="submit" name="decision" value="reject" { "Reject" }
                                }
                            } @else { span.muted { "an admin decides" } } }
                        } } }
                    }
                }
            }
        }
        @if !safety.series_checks.is_empty() {
            p.muted { "Geometry check: "
                @for c in &safety.series_checks { span.badge { bdi { (if c.series_description.is_empty() { "(empty)" } else { c.series_description.as_str() }) } ": " (c.geometry) } " " }
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct HeldForm {
    #[serde(default)]
    csrf: String,
    study: Option<String>,
    instance: Option<String>,
    destination: Option<String>,
    #[serde(default)]
    why: String,
    #[serde(default)]
    decision: String,
}

/// Release or reject held instances from the study page.
pub async fn decide_held(
    State(state): State<AppState>,
    request: Request,
    Form(form): Form<HeldForm>,
) -> Response {
    let back = match &form.study {
        Some(study) if crate::dicom::uid::is_valid_uid(study) => format!("/studies/{study}"),
        _ => "/queue".to_string(),
    };
    let caller = match require(&request, &back) {
        Ok(caller) => caller,
        Err(redirect) => return redirect.into_response(),
    };
    if let Err(e) = check_csrf(&caller, &form.csrf) {
        return error_page(Some(&caller), e);
    }
    let release = match form.decision.as_str() {
        "release" => true,
        "reject" => false,
        other => {
            return error_page(
                Some(&caller),
                HttpError::BadRequest(format!("decision {other:?}: release or reject")),
            );
        }
    };
    let author = match request.author() {
        Ok(author) => author,
        Err(e) => return error_page(Some(&caller), e),
    };
    let body = HeldBody {
        study: form.study,
        instance: form.instance,
        destination: form.destination,
        why: form.why,
    };
    match state
        .service
        .decide_held(&author, body.target(), release, &body.why)
        .await
    {
        Ok(_) => Redirect::to(&back).into_response(),
        Err(e) => error_page(Some(&caller), e.into()),
    }
}

/// The status as a coloured badge: `G9319 needs-reason`.
fn status_badge(status: Option<StudyStatus>) -> Markup {
    let text = status.map(StudyStatus::as_str).unwrap_or("");
    html! { span class={"badge " (text)} { (status.map(StudyStatus::hcpcs).unwrap_or("")) " " (text) } }
}

#[derive(Debug, Deserialize)]
pub struct ReasonForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    note: String,
}

pub async fn document_reason(
    State(state): State<AppState>,
    request: Request,
    Path(uid): Path<String>,
    Form(form): Form<ReasonForm>,
) -> Response {
    let caller = match require(&request, &format!("/studies/{uid}")) {
        Ok(caller) => caller,
        Err(redirect) => return redirect.into_response(),
    };
    if let Err(e) = check_csrf(&caller, &form.csrf) {
        return error_page(Some(&caller), e);
    }
    let author = match request.author() {
        Ok(author) => author,
        Err(e) => return error_page(Some(&caller), e),
    };
    let reason = ReasonRequest {
        study_instance_uid: uid.clone(),
        code: form.code.clone(),
        note: form.note.clone(),
    };
    match state.service.document_reason(&author, reason).await {
        Ok(_) => Redirect::to(&format!("/studies/{uid}?documented=1")).into_response(),
        // A choice the form can fix: the page again, the choice and the note kept.
        Err(e) if e.kind() == crate::service::ErrorKind::Invalid => {
            let refused = Refused {
                code: form.code,
                note: form.note,
                problem: e.to_string(),
            };
            let mut response = study_page(&state, &caller, &uid, false, Some(refused)).await;
            *response.status_mut() = StatusCode::BAD_REQUEST;
            response
        }
        Err(e) => error_page(Some(&caller), e.into()),
    }
}

/// The worklist URL of one group of the report (and one status, when given).
fn report_link(report: &api::Report, group: &str, status: &str) -> String {
    let (from_key, to_key) = if report.date == "study" {
        ("study_from", "study_to")
    } else {
        ("since", "until")
    };
    let (mut from, mut to) = (report.from.clone(), report.to.clone());
    let mut extra: Vec<(&str, String)> = Vec::new();
    if group != "total" {
        match report.by.as_str() {
            "station" if group != "(no station)" => extra.push(("station", group.to_string())),
            "physician" => extra.push(("by", group.to_string())),
            "month" if group.len() == 7 => {
                // The month within the report's days.
                let first = format!("{group}-01");
                let last = format!("{group}-31");
                from = from.max(first);
                to = to.min(last);
            }
            _ => {}
        }
    }
    let mut url = form_urlencoded::Serializer::new(String::new());
    url.append_pair("status", if status.is_empty() { "all" } else { status });
    url.append_pair(from_key, &from);
    url.append_pair(to_key, &to);
    for (key, value) in &extra {
        url.append_pair(key, value);
    }
    format!("/worklist?{}", url.finish())
}

/// Stacked bars per group (G9318 green, G9320 amber, G9319 red) with their numbers, inline SVG;
/// each bar links to the group's studies.
fn chart(report: &api::Report) -> Markup {
    let groups: Vec<_> = report.rows.iter().filter(|r| r.group != "total").collect();
    let max = groups.iter().map(|r| r.total).max().unwrap_or(0).max(1) as f64;
    let (bar, gap, height, top) = (44.0, 40.0, 160.0, 16.0);
    let width = (groups.len() as f64 * (bar + gap) + gap).max(240.0);
    let label = |text: &str| -> String {
        let chars: Vec<char> = text.chars().collect();
        if chars.len() > 11 {
            chars[..10].iter().collect::<String>() + "…"
        } else {
            text.to_string()
        }
    };
    html! {
        svg #chart width=(width) height=(top + height + 40.0) viewBox={"0 0 " (width) " " (top + height + 40.0)} role="img" aria-label="Studies per group by HCPCS code" {
            @for (i, r) in groups.iter().enumerate() {
                @let x = gap + i as f64 * (bar + gap);
                @let h18 = r.g9318 as f64 / max * height;
                @let h20 = r.g9320 as f64 / max * height;
                @let h19 = r.g9319 as f64 / max * height;
                @let base = top + height;
                a href=(report_link(report, &r.group, "")) {
                    title { (r.group) ": " (r.g9318) " G9318, " (r.g9319) " G9319, " (r.g9320) " G9320" }
                    rect x=(x) y=(base - h18) width=(bar) height=(h18) fill="#38a169" {}
                    rect x=(x) y=(base - h18 - h20) width=(bar) height=(h20) fill="#d69e2e" {}
                    rect x=(x) y=(base - h18 - h20 - h19) width=(bar) height=(h19) fill="#e53e3e" {}
                    @for (count, y0, h) in [(r.g9318, base - h18, h18), (r.g9320, base - h18 - h20, h20), (r.g9319, base - h18 - h20 - h19, h19)] {
                        @if count > 0 && h >= 12.0 { text x=(x + bar / 2.0) y=(y0 + h / 2.0 + 4.0) font-size="11" fill="#fff" text-anchor="middle" { (count) } }
                    }
                    text x=(x + bar / 2.0) y=(base - h18 - h20 - h19 - 3.0) font-size="11" text-anchor="middle" { (r.total) }
                }
                text x=(x + bar / 2.0) y=(base + 14.0) font-size="11" text-anchor="middle" { title { (r.group) } (label(&r.group)) }
                text x=(x + bar / 2.0) y=(base + 28.0) font-size="11" text-anchor="middle" { (r.conformance_rate.map(|rate| format!("{:.0}%", rate * 100.0)).unwrap_or_else(|| "n/a".into())) }
            }
        }
    }
}

pub async fn report(
    State(state): State<AppState>,
    request: Request,
    Query(query): Query<ReportQuery>,
) -> Response {
    let caller = match require(&request, "/report") {
        Ok(caller) => caller,
        Err(redirect) => return redirect.into_response(),
    };
    let report = match api::report_rows(&state, &query).await {
        Ok(result) => result,
        Err(e) => return error_page(Some(&caller), e),
    };
    let (from, to, by) = (&report.from, &report.to, &report.by);
    let csv_query = format!("from={from}&to={to}&by={by}&date={}", report.date);
    let count = |r: &crate::naming::report::ReportRow, n: u64, status: &str| {
        html! { @if n == 0 { "0" } @else { a href=(report_link(&report, &r.group, status)) { (n) } } }
    };
    let body = html! {
        h1 { "Naming report: G9318 / G9319 / G9320" }
        form.filters method="get" action="/report" {
            label { "From" input name="from" value=(from) placeholder="YYYY-MM-DD" size="11"; }
            label { "To" input name="to" value=(to) placeholder="YYYY-MM-DD" size="11"; }
            label { "Count on" select name="date" {
                option value="study" selected[report.date == "study"] { "Study Date" }
                option value="received" selected[report.date == "received"] { "day received" }
            } }
            label { "Group by" select name="by" { @for g in ["month", "station", "physician"] { option value=(g) selected[by == g] { (g) } } } }
            button type="submit" { "Show" }
            a href={"/report.csv?" (csv_query)} { "Download CSV" }
        }
        div.card {
            (chart(&report))
            p.legend.muted {
                span style="background:#38a169" {} "G9318 named per standard"
                span style="background:#d69e2e" {} "G9320 reason documented"
                span style="background:#e53e3e" {} "G9319 reason missing"
            }
            p.muted { "Conformance: G9318 / (G9318 + G9319). Studies with a documented reason (G9320) are exceptions and leave the denominator, as in the quality measure that defined the codes. Click a bar or a count for its studies." }
        }
        table #report {
            thead { tr { th { (match by.as_str() { "station" => "Station", "physician" => "Documented by", _ => "Month" }) } th.num { "G9318" } th.num { "G9319" } th.num { "G9320" } th.num { "Total" } th.num { "Conformance" } } }
            tbody { @for r in &report.rows { tr style=(if r.group == "total" { "font-weight:600" } else { "" }) {
                td { (r.group) }
                td.num { (count(r, r.g9318, "conforming")) } td.num { (count(r, r.g9319, "needs-reason")) } td.num { (count(r, r.g9320, "reason-documented")) }
                td.num { (count(r, r.total, "")) }
                td.num { (r.conformance_rate.map(|rate| format!("{:.1}%", rate * 100.0)).unwrap_or_else(|| "n/a".into())) }
            } } }
        }
        @if by == "physician" { p.muted { "Studies without a documented reason count in the total only." } }
        h2 { "Root causes: names to fix at the simulator" }
        p.muted { "The most frequent nonstandard study and series names, by where they come from. Fixing the protocol on the simulator once ends documenting reasons for it. " a href={"/report/root-causes.csv?" (csv_query)} { "Download CSV" } }
        @if report.root_causes.is_empty() { p.muted { "No nonstandard names in these days." } } @else {
            table #root-causes {
                thead { tr { th { "Kind" } th { "Name" } th.num { "Studies" } th { "Station" } th { "Protocol" } th { "Calling AE" } th { "Nearest standard name / kinds" } } }
                tbody { @for c in &report.root_causes { tr {
                    td { (c.kind) } td { bdi { (c.name) } } td.num { (c.count) } td { bdi { (c.station) } } td { bdi { (c.protocol) } } td { (c.calling_ae_title) } td { (c.nearest) }
                } } }
            }
        }
    };
    page("Report", Some(&caller), body).into_response()
}

pub async fn report_csv(
    State(state): State<AppState>,
    request: Request,
    Query(query): Query<ReportQuery>,
) -> Response {
    report_download(&state, &request, &query, "report", |out, report| {
        crate::output::report_csv(out, &report.by, &report.rows)
    })
    .await
}

pub async fn root_causes_csv(
    State(state): State<AppState>,
    request: Request,
    Query(query): Query<ReportQuery>,
) -> Response {
    report_download(&state, &request, &query, "root-causes", |out, report| {
        crate::output::root_causes_csv(out, &report.root_causes)
    })
    .await
}

/// A CSV of the report asked for, as a download named after its days.
async fn report_download(
    state: &AppState,
    request: &Request,
    query: &ReportQuery,
    name: &str,
    write: impl FnOnce(&mut Vec<u8>, &api::Report) -> csv::Result<()>,
) -> Response {
    if let Err(redirect) = require(request, "/report") {
        return redirect.into_response();
    }
    let report = match api::report_rows(state, query).await {
        Ok(result) => result,
        Err(e) => return e.into_response(),
    };
    let mut csv = Vec::new();
    if let Err(e) = write(&mut csv, &report) {
        return HttpError::Internal(e.to_string()).into_response();
    }
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"simgate-{name}-{}-{}.csv\"",
                    report.from, report.to
                ),
            ),
        ],
        csv,
    )
        .into_response()
}

/// What the last queue action did.
#[derive(Debug, Default, Deserialize)]
pub struct QueueDone {
    retried: Option<usize>,
}

pub async fn queue(
    State(state): State<AppState>,
    request: Request,
    Query(done): Query<QueueDone>,
) -> Response {
    let caller = match require(&request, "/queue") {
        Ok(caller) => caller,
        Err(redirect) => return redirect.into_response(),
    };
    let (summary, studies) = match state
        .read(|db| Ok((db.queue_summary(None)?, db.queue_by_study(None, None)?)))
        .await
    {
        Ok(result) => result,
        Err(e) => return error_page(Some(&caller), e),
    };
    let zone = &state.config().http.time_zone;
    let admin = caller.is_admin() && caller.via_session;
    let csrf = caller.csrf.clone().unwrap_or_default();
    let when_ago = |time: &str| {
        html! { (zone.show(time)) @if let Some(age) = crate::clock::age(time) { " " span.muted { "(" (age) " ago)" } } }
    };
    let body = html! {
        h1 { "Forward queue" }
        @if let Some(n) = done.retried {
            div.done #done-banner { (n) " instance(s) queued again; backoff reset: the forwarders try now." }
        }
        @if state.config().destinations.is_empty() { p.muted { "No destinations configured: instances are received and logged only." } }
        table #queue {
            thead { tr { th { "Destination" } th.num { "Pending" } th.num { "In flight" } th.num { "Sent" } th.num { "Dead" } th.num { "Held" } th.num { "Waiting for check" } th.num { "Rejected" } th { "Oldest waiting since" } th { "Last error" } } }
            tbody { @for d in &summary { tr {
                td { (d.destination) } td.num { (d.pending) } td.num { (d.in_flight) } td.num { (d.sent) } td.num { (d.dead) }
                td.num { (d.held) } td.num { (d.waiting) } td.num { (d.rejected) }
                td { @if let Some(t) = &d.oldest_waiting_since { (when_ago(t)) } } td.warn { (d.last_error) }
            } } }
        }
        @if admin && summary.iter().any(|d| d.dead > 0) {
            form method="post" action="/queue/retry" style="margin-top:.6rem" {
                input type="hidden" name="csrf" value=(csrf);
                input type="hidden" name="dead" value="true";
                button type="submit" { "Retry all dead letters" }
            }
        }
        h2 { "By study" }
        table {
            thead { tr { th { "Destination" } th { "Study" } th { "Patient" } th { "State" } th.num { "Instances" } th { "Oldest queued" } th { "Last error" } th { "Sent as" } @if admin { th {} } } }
            tbody { @for s in studies.iter().filter(|s| !matches!(s.state, QueueState::Sent | QueueState::Rejected)) { tr {
                td { (s.destination) }
                td { a href={"/studies/" (s.study_instance_uid)} { @if s.study_description.is_empty() { "(empty)" } @else { bdi { (s.study_description) } } } br; span.muted { (s.study_instance_uid) } }
                td { bdi { (person(&s.patient_name)) } }
                td { (s.state.as_str()) } td.num { (s.instances) } td { (when_ago(&s.oldest_queued_at)) } td.warn { (s.last_error) } td { (s.sent_as) }
                @if admin { td { @if s.state == QueueState::Held {
                    a href={"/studies/" (s.study_instance_uid) "#safety"} { "Release or reject on the study page" }
                } @else if matches!(s.state, QueueState::Pending | QueueState::Dead) { form method="post" action="/queue/retry" {
                    input type="hidden" name="csrf" value=(csrf);
                    input type="hidden" name="study" value=(s.study_instance_uid);
                    input type="hidden" name="destination" value=(s.destination);
                    button type="submit" { "Retry" }
                } } } }
            } } }
        }
    };
    page("Queue", Some(&caller), body).into_response()
}

#[derive(Debug, Deserialize)]
pub struct RetryForm {
    #[serde(default)]
    csrf: String,
    study: Option<String>,
    #[serde(default)]
    dead: Option<String>,
    destination: Option<String>,
}

pub async fn queue_retry(
    State(state): State<AppState>,
    request: Request,
    Form(form): Form<RetryForm>,
) -> Response {
    let caller = match require(&request, "/queue") {
        Ok(caller) => caller,
        Err(redirect) => return redirect.into_response(),
    };
    if let Err(e) = check_csrf(&caller, &form.csrf) {
        return error_page(Some(&caller), e);
    }
    let body = RetryBody {
        study: form.study,
        dead: form.dead.is_some_and(|d| d == "true"),
        destination: form.destination,
    };
    let author = match request.author() {
        Ok(author) => author,
        Err(e) => return error_page(Some(&caller), e),
    };
    match state.service.retry(&author, body.request()).await {
        Ok(count) => Redirect::to(&format!("/queue?retried={count}")).into_response(),
        Err(e) => error_page(Some(&caller), e.into()),
    }
}
