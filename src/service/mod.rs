//! The write operations of simgate, one function each, called by every front end: the DICOM
//! receive path records instances, the web pages, the API and the CLI document reasons, retry
//! and re-send the queue and import playbooks. Validation, the permission check and the audit
//! entry live here, inside the operation, so no front end can skip them; front ends translate
//! their input and the errors, nothing more. Every write runs on the index writer thread, in a
//! savepoint of its batch transaction.

pub mod rules;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::{Config, DestinationConfig, ForwardWhen, ReasonChoice, Role};
use crate::dicom::uid::is_valid_uid;
use crate::naming::{Naming, StudyStatus};
use crate::safety::geometry::{self, Phase, SeriesGeometry};
use crate::safety::identity::{self, Arrival, KnownSeries, Patient};
use crate::safety::{Finding, FindingCode};
use crate::store::audit::AuditEntry;
use crate::store::commitment::NewCommitment;
use crate::store::instances::{IndexedInstance, RecordOutcome};
use crate::store::queue::Entry;
use crate::store::safety::HoldTarget;
use crate::store::verdicts::{ImportOutcome, NewSource};
use crate::store::{Db, IndexHandle, StoreError};

/// Studies judged per writer job by a recheck.
const RECHECK_CHUNK: usize = 50;

/// Longest note accepted with a documented reason.
pub const MAX_NOTE_CHARS: usize = 2000;

/// Why an operation was refused or failed. Each front end maps [`ServiceError::kind`] to its
/// own way of saying it (an HTTP status, a CLI exit).
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("unknown reason code {code:?}; use one of {known}")]
    UnknownReason { code: String, known: String },
    #[error("reason {label:?} needs a note")]
    NoteRequired { label: String },
    #[error("the note is longer than {MAX_NOTE_CHARS} characters")]
    NoteTooLong,
    #[error("{0:?} is not a valid Study Instance UID")]
    InvalidStudyUid(String),
    #[error("no study with Study Instance UID {0}")]
    UnknownStudy(String),
    #[error("no destination {name:?}; configured: {known}")]
    UnknownDestination { name: String, known: String },
    #[error("say what to retry: a study or the dead letters")]
    NothingToRetry,
    #[error("{0:?} is not a valid SOP Instance UID")]
    InvalidInstanceUid(String),
    #[error("say why: releasing or rejecting a held instance is audited with a reason")]
    WhyRequired,
    #[error("say which held instances: a study or an instance")]
    NothingHeldNamed,
    #[error("nothing is held there (already released or rejected?)")]
    NothingHeld,
    #[error("select at least one study")]
    NoStudies,
    #[error("{0} studies in one request: at most {MAX_BULK_STUDIES}")]
    TooManyStudies(usize),
    #[error("{user} is a {role}: {action} needs {needed}")]
    NotPermitted {
        user: String,
        role: &'static str,
        action: &'static str,
        needed: &'static str,
    },
    #[error(
        "{0:?} is not a user in [[http.users]]: reasons are documented by configured users \
         (add one with `simgate user add`)"
    )]
    UnknownUser(String),
    #[error(
        "you are the operating-system user {0}, who is not a user in [[http.users]]: say who \
         documents it with --by NAME"
    )]
    UnknownOsUser(String),
    #[error("cannot load the naming rules")]
    Rules(#[from] rules::RulesLoadError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What kind of failure, for the front ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// The request itself is wrong: say so, change nothing.
    Invalid,
    NotFound,
    Forbidden,
    /// Something broke inside (the database): log it.
    Internal,
}

impl ServiceError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ServiceError::UnknownReason { .. }
            | ServiceError::NoteRequired { .. }
            | ServiceError::NoteTooLong
            | ServiceError::InvalidStudyUid(_)
            | ServiceError::UnknownDestination { .. }
            | ServiceError::NothingToRetry
            | ServiceError::InvalidInstanceUid(_)
            | ServiceError::WhyRequired
            | ServiceError::NothingHeldNamed
            | ServiceError::NoStudies
            | ServiceError::TooManyStudies(_) => ErrorKind::Invalid,
            ServiceError::UnknownStudy(_) | ServiceError::NothingHeld => ErrorKind::NotFound,
            ServiceError::NotPermitted { .. }
            | ServiceError::UnknownUser(_)
            | ServiceError::UnknownOsUser(_) => ErrorKind::Forbidden,
            ServiceError::Rules(_) | ServiceError::Store(_) => ErrorKind::Internal,
        }
    }
}

/// Who does a write, as the audit log records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Author {
    /// A configured user's name.
    pub user_name: String,
    pub role: Role,
    /// The web client's address, or `cli (os user NAME)` for a command.
    pub from: String,
}

/// The operating-system user running this command: the name the user database gives the
/// process's real user ID (not `$USER`, which the caller sets as it likes, or leaves unset
/// under `sudo -u`, cron and systemd), with the ID itself when no name is known.
pub fn os_user() -> OsUser {
    let uid = rustix::process::getuid().as_raw();
    let name = std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| user_of_uid(&passwd, uid));
    OsUser { uid, name }
}

/// The name `/etc/passwd` gives `uid`.
fn user_of_uid(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id: u32 = fields.nth(1)?.parse().ok()?;
        (id == uid && !name.is_empty()).then(|| name.to_string())
    })
}

/// An operating-system user, as the audit log names them.
#[derive(Debug, Clone)]
pub struct OsUser {
    pub uid: u32,
    pub name: Option<String>,
}

impl std::fmt::Display for OsUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{name} (uid {})", self.uid),
            None => write!(f, "uid {}", self.uid),
        }
    }
}

impl Author {
    /// The author of a reason documented with the CLI: the user `--by` names, or else the
    /// operating-system user, who must be one of the configured users. Free text is refused.
    pub fn for_cli(config: &Config, by: Option<&str>) -> Result<Author, ServiceError> {
        let os_user = os_user();
        let name = match by.map(str::trim) {
            Some(name) => name.to_string(),
            None => os_user
                .name
                .clone()
                .ok_or_else(|| ServiceError::UnknownOsUser(os_user.to_string()))?,
        };
        let user = config
            .http
            .users
            .iter()
            .find(|u| u.name == name)
            .ok_or_else(|| match by {
                Some(_) => ServiceError::UnknownUser(name.clone()),
                None => ServiceError::UnknownOsUser(os_user.to_string()),
            })?;
        Ok(Author {
            user_name: user.name.clone(),
            role: user.role,
            from: format!("cli (os user {os_user})"),
        })
    }

    /// The operator of a CLI queue action or import: whoever can read the config and write
    /// the database on this machine already administers simgate; the audit log names them by
    /// their operating-system user.
    pub fn operator() -> Author {
        let os_user = os_user();
        Author {
            user_name: format!("os user {os_user}"),
            role: Role::Admin,
            from: "cli".into(),
        }
    }

    fn audit(&self, action: &str, study: Option<&str>, detail: String, at: &str) -> AuditEntry {
        AuditEntry {
            at: at.to_string(),
            user_name: self.user_name.clone(),
            action: action.to_string(),
            study_instance_uid: study.map(str::to_string),
            detail,
            remote_address: self.from.clone(),
        }
    }

    fn require(
        &self,
        allowed: bool,
        action: &'static str,
        needed: &'static str,
    ) -> Result<(), ServiceError> {
        if allowed {
            Ok(())
        } else {
            Err(ServiceError::NotPermitted {
                user: self.user_name.clone(),
                role: self.role.as_str(),
                action,
                needed,
            })
        }
    }
}

/// A reason to document, as a front end received it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReasonRequest {
    pub study_instance_uid: String,
    pub code: String,
    pub note: String,
}

/// A documented reason, as recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReasonRecorded {
    pub study_instance_uid: String,
    pub reason_code: String,
    pub reason_label: String,
    pub note: String,
    pub documented_by: String,
    pub documented_at: String,
    pub status: StudyStatus,
}

/// Reasons for several studies at once (the worklist's bulk action, `POST /api/reasons`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BulkReasonRequest {
    pub studies: Vec<String>,
    pub code: String,
    #[serde(default)]
    pub note: String,
}

/// Studies one bulk request may name at most.
pub const MAX_BULK_STUDIES: usize = 500;
/// Studies documented per writer job, so arriving instances wait for one chunk at most.
const BULK_CHUNK: usize = 50;

/// What came of one study of a bulk request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BulkOutcome {
    pub study_instance_uid: String,
    pub outcome: BulkResult,
    /// The study's status afterwards (absent when unknown).
    pub status: Option<StudyStatus>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BulkResult {
    Documented,
    /// Judged again before documenting, it is named per the standard: nothing to document.
    AlreadyConforming,
    Unknown,
    InvalidUid,
}

/// Which queue rows to send again.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RetryRequest {
    pub study_instance_uid: Option<String>,
    pub dead_only: bool,
    pub destination: Option<String>,
}

/// The write side of simgate, shared by every front end of one process.
#[derive(Debug, Clone)]
pub struct Service {
    index: IndexHandle,
    /// The config in force: SIGHUP replaces users, destinations and naming rules in it.
    config: watch::Receiver<Arc<Config>>,
    naming: watch::Receiver<Arc<Naming>>,
    /// Wakes forwarders that back off when a retry is asked for.
    retry_requested: Arc<tokio::sync::Notify>,
}

impl Service {
    pub fn new(
        index: IndexHandle,
        config: watch::Receiver<Arc<Config>>,
        naming: watch::Receiver<Arc<Naming>>,
    ) -> Service {
        Service {
            index,
            config,
            naming,
            retry_requested: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// What forwarders listen to for a retry asked for by a person.
    pub fn retry_requested(&self) -> &Arc<tokio::sync::Notify> {
        &self.retry_requested
    }

    /// The naming rules in force (SIGHUP may replace them).
    pub fn naming(&self) -> Arc<Naming> {
        Arc::clone(&self.naming.borrow())
    }

    /// The config in force now.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.config.borrow())
    }

    /// Changes as SIGHUP makes them.
    pub fn config_changes(&self) -> watch::Receiver<Arc<Config>> {
        self.config.clone()
    }

    /// Records a stored instance, its identity findings, its study's verdict when it brings
    /// new evidence, and its queue rows (held where a finding says so), in one savepoint: an
    /// acknowledged instance can never miss either.
    ///
    /// The commit is relaxed (it does not wait for the disk): the spool file, flushed before
    /// this is called, is the durable record of the instance, and a row a power failure takes
    /// back (at most the last second's, see [`IndexHandle::flush`]) is written again from it
    /// by the start-up reconciliation. Acting on a replacement outside the index (removing
    /// the old file) waits for a flush.
    pub async fn record_instance(
        &self,
        instance: IndexedInstance,
    ) -> Result<InstanceRecorded, StoreError> {
        let naming = self.naming();
        let config = self.config();
        self.index
            .execute_relaxed(move |db| {
                record_instance(db, &naming, &config.destinations, &instance)
            })
            .await
    }

    /// Returns once every index commit so far is on disk; see [`IndexHandle::flush`].
    pub async fn flush_index(&self) -> Result<bool, StoreError> {
        self.index.flush().await
    }

    /// Documents the medical reason a study is not named per the standard (append-only),
    /// judges the study again and writes the audit entry, in one savepoint.
    pub async fn document_reason(
        &self,
        author: &Author,
        request: ReasonRequest,
    ) -> Result<ReasonRecorded, ServiceError> {
        author.require(
            author.role.may_document_reasons(),
            "documenting a reason",
            "a physician",
        )?;
        let study = valid_study_uid(&request.study_instance_uid)?;
        let choice = self.reason_choice(&request.code)?.clone();
        let note = checked_note(&choice, &request.note)?;
        let naming = self.naming();
        let author = author.clone();
        self.index
            .execute(move |db| {
                let now = crate::clock::now_rfc3339();
                if !db.insert_reason(&study, &choice.code, &note, &author.user_name, &now)? {
                    return Err(ServiceError::UnknownStudy(study));
                }
                let cause = format!("reason {} documented by {}", choice.code, author.user_name);
                let status = judge_study(db, &naming, &study, &cause, &now)?;
                let detail = if note.is_empty() {
                    choice.code.clone()
                } else {
                    format!("{}: {note}", choice.code)
                };
                db.append_audit(&author.audit("document-reason", Some(&study), detail, &now))?;
                Ok(ReasonRecorded {
                    study_instance_uid: study,
                    reason_code: choice.code,
                    reason_label: choice.label,
                    note,
                    documented_by: author.user_name,
                    documented_at: now,
                    status,
                })
            })
            .await
    }

    /// Documents one reason for each named study: each study is judged again first (a study
    /// now named per the standard is left alone), then gets its reason record, its new
    /// verdict and its audit entry, as [`document_reason`](Self::document_reason) would.
    pub async fn document_reasons(
        &self,
        author: &Author,
        request: BulkReasonRequest,
    ) -> Result<Vec<BulkOutcome>, ServiceError> {
        author.require(
            author.role.may_document_reasons(),
            "documenting a reason",
            "a physician",
        )?;
        if request.studies.is_empty() {
            return Err(ServiceError::NoStudies);
        }
        if request.studies.len() > MAX_BULK_STUDIES {
            return Err(ServiceError::TooManyStudies(request.studies.len()));
        }
        let choice = self.reason_choice(&request.code)?.clone();
        let note = checked_note(&choice, &request.note)?;
        let mut outcomes = Vec::with_capacity(request.studies.len());
        for chunk in request.studies.chunks(BULK_CHUNK) {
            let (naming, author, choice, note) =
                (self.naming(), author.clone(), choice.clone(), note.clone());
            let chunk = chunk.to_vec();
            let done = self
                .index
                .execute(move |db| {
                    let now = crate::clock::now_rfc3339();
                    chunk
                        .iter()
                        .map(|uid| document_one(db, &naming, &author, &choice, &note, uid, &now))
                        .collect::<Result<Vec<_>, StoreError>>()
                })
                .await?;
            outcomes.extend(done);
        }
        Ok(outcomes)
    }

    /// Queues instances again: those of one study not yet sent, or every dead letter; audited.
    pub async fn retry(
        &self,
        author: &Author,
        request: RetryRequest,
    ) -> Result<usize, ServiceError> {
        author.require(author.role.may_act_on_queue(), "a queue action", "an admin")?;
        let study = request
            .study_instance_uid
            .as_deref()
            .map(valid_study_uid)
            .transpose()?;
        if study.is_none() && !request.dead_only {
            return Err(ServiceError::NothingToRetry);
        }
        if let Some(name) = &request.destination {
            self.destination(name)?;
        }
        let author = author.clone();
        self.index
            .execute(move |db| {
                let now = crate::clock::now_rfc3339();
                let destination = request.destination.as_deref();
                let count = db.retry(study.as_deref(), request.dead_only, destination)?;
                let detail = format!(
                    "{count} instances{}{}",
                    if request.dead_only {
                        ", dead letters"
                    } else {
                        ""
                    },
                    destination
                        .map(|d| format!(", destination {d}"))
                        .unwrap_or_default()
                );
                db.append_audit(&author.audit("queue-retry", study.as_deref(), detail, &now))?;
                Ok::<_, ServiceError>(count)
            })
            .await
            .inspect(|_| self.retry_requested.notify_waiters())
    }

    /// Queues every stored instance of a study for a destination again; audited.
    pub async fn forward_study(
        &self,
        author: &Author,
        study: &str,
        destination: &str,
    ) -> Result<usize, ServiceError> {
        author.require(author.role.may_act_on_queue(), "a queue action", "an admin")?;
        let study = valid_study_uid(study)?;
        let destination = self.destination(destination)?.name.clone();
        let author = author.clone();
        self.index
            .execute(move |db| {
                let now = crate::clock::now_rfc3339();
                let count = db.forward_study(&study, &destination, &now)?;
                if count == 0 {
                    return Err(ServiceError::UnknownStudy(study));
                }
                let detail = format!("{count} instances, destination {destination}");
                db.append_audit(&author.audit("forward-study", Some(&study), detail, &now))?;
                Ok(count)
            })
            .await
    }

    /// Imports a parsed playbook file as a versioned source; audited when it changed anything.
    pub async fn import_playbook(
        &self,
        author: &Author,
        file: rules::PlaybookFile,
    ) -> Result<ImportOutcome, ServiceError> {
        author.require(
            author.role.may_act_on_queue(),
            "importing a nomenclature",
            "an admin",
        )?;
        let author = author.clone();
        self.index
            .execute(move |db| {
                let now = crate::clock::now_rfc3339();
                let source = NewSource {
                    format: file.playbook.format.as_str(),
                    file_name: &file.file_name,
                    sha256: &file.sha256,
                    rows: file.playbook.rows,
                };
                let outcome = db.import_source(&source, &file.playbook.names, &now)?;
                if matches!(outcome, ImportOutcome::Imported { .. }) {
                    let detail = format!(
                        "{} ({}), {} names, sha256 {}",
                        file.file_name,
                        source.format,
                        file.playbook.names.len(),
                        file.sha256
                    );
                    db.append_audit(&author.audit("import-nomenclature", None, detail, &now))?;
                }
                Ok(outcome)
            })
            .await
    }

    /// Judges every stored study again with the rules as the files and the database hold
    /// them now (after an import or a rules change); documented reasons stay. The rules in
    /// force for new instances change only on SIGHUP. Returns (studies, studies whose status
    /// changed).
    ///
    /// The studies are judged in small jobs, so instances arriving meanwhile wait for one chunk
    /// at most, never for the whole recheck.
    pub async fn recheck_all(&self, author: &Author) -> Result<(usize, usize), ServiceError> {
        author.require(
            author.role.may_act_on_queue(),
            "re-judging every study",
            "an admin",
        )?;
        let config = self.config();
        let (naming, uids) = self
            .index
            .execute(move |db| {
                let naming = rules::load(&config.naming, db)?;
                Ok::<_, ServiceError>((Arc::new(naming), db.study_uids()?))
            })
            .await?;
        let now = crate::clock::now_rfc3339();
        let mut changed = 0;
        for chunk in uids.chunks(RECHECK_CHUNK) {
            let (naming, chunk, now) = (Arc::clone(&naming), chunk.to_vec(), now.clone());
            changed += self
                .index
                .execute(move |db| {
                    let mut changed = 0;
                    for uid in &chunk {
                        let before = db.study_status(uid)?;
                        let after = judge_study(db, &naming, uid, "nomenclature recheck", &now)?;
                        if before != Some(after) {
                            changed += 1;
                        }
                    }
                    Ok::<_, ServiceError>(changed)
                })
                .await?;
        }
        let (studies, author) = (uids.len(), author.clone());
        self.index
            .execute(move |db| {
                let detail = format!("{studies} studies judged again, {changed} changed status");
                db.append_audit(&author.audit("nomenclature-recheck", None, detail, &now))
            })
            .await?;
        Ok((studies, changed))
    }

    /// Checks the geometry of series quiet for `safety.series_quiet_period` since their last
    /// instance (a few per writer job), records the findings, and settles each destination's
    /// rows of the series: held for the codes it holds on, or pending. Returns what it found.
    pub async fn check_quiet_series(&self) -> Result<Vec<SeriesChecked>, StoreError> {
        let config = self.config();
        // Relaxed: a check lost in a power failure is done again (the series stays due).
        self.index
            .execute_relaxed(move |db| {
                let cutoff = crate::clock::rfc3339_before(config.safety.series_quiet_period);
                let now = crate::clock::now_rfc3339();
                db.series_due_for_check(&cutoff, SERIES_PER_CHECK)?
                    .iter()
                    .map(|series| check_series(db, &config, series, &now))
                    .collect()
            })
            .await
    }

    /// Releases (sent, in arrival order) or rejects (never sent) held instances; audited with
    /// who and why.
    pub async fn decide_held(
        &self,
        author: &Author,
        target: HoldTarget,
        release: bool,
        why: &str,
    ) -> Result<Vec<String>, ServiceError> {
        author.require(
            author.role.may_act_on_queue(),
            "releasing or rejecting held instances",
            "an admin",
        )?;
        let why = why.trim().to_string();
        if why.is_empty() {
            return Err(ServiceError::WhyRequired);
        }
        if why.chars().count() > MAX_NOTE_CHARS {
            return Err(ServiceError::NoteTooLong);
        }
        let target = HoldTarget {
            study_instance_uid: target
                .study_instance_uid
                .as_deref()
                .map(valid_study_uid)
                .transpose()?,
            sop_instance_uid: target
                .sop_instance_uid
                .as_deref()
                .map(valid_instance_uid)
                .transpose()?,
            destination: match target.destination {
                Some(name) => Some(self.destination(&name)?.name.clone()),
                None => None,
            },
        };
        if target.study_instance_uid.is_none() && target.sop_instance_uid.is_none() {
            return Err(ServiceError::NothingHeldNamed);
        }
        let author = author.clone();
        self.index
            .execute(move |db| {
                let now = crate::clock::now_rfc3339();
                let uids = db.decide_held(&target, release)?;
                if uids.is_empty() {
                    return Err(ServiceError::NothingHeld);
                }
                let action = if release {
                    "release-held"
                } else {
                    "reject-held"
                };
                for uid in &uids {
                    let detail = format!(
                        "{uid}{}: {why}",
                        target
                            .destination
                            .as_deref()
                            .map(|d| format!(", destination {d}"))
                            .unwrap_or_default()
                    );
                    let study = db.instance_study(uid)?;
                    db.append_audit(&author.audit(action, study.as_deref(), detail, &now))?;
                }
                Ok(uids)
            })
            .await
    }

    /// Records a Storage Commitment request; its report is due after `grace` (the requester's
    /// association gets the first chance to carry it).
    pub async fn request_commitment(
        &self,
        request: NewCommitment,
        grace: std::time::Duration,
    ) -> Result<i64, StoreError> {
        self.index
            .execute(move |db| {
                let now = crate::clock::now_rfc3339();
                db.insert_commitment(&request, &now, &crate::clock::rfc3339_after(grace))
            })
            .await
    }

    /// The requester answered the report with success.
    pub async fn commitment_reported(&self, id: i64) -> Result<(), StoreError> {
        self.index
            .execute(move |db| db.mark_commitment_reported(id, &crate::clock::now_rfc3339()))
            .await
    }

    /// The report is not decided yet (`counts` false) or could not be delivered.
    pub async fn defer_commitment(
        &self,
        id: i64,
        error: String,
        delay: std::time::Duration,
        counts: bool,
    ) -> Result<(), StoreError> {
        self.index
            .execute(move |db| {
                db.defer_commitment(id, &error, &crate::clock::rfc3339_after(delay), counts)
            })
            .await
    }

    fn reason_choice(&self, code: &str) -> Result<ReasonChoice, ServiceError> {
        let config = self.config();
        config
            .naming
            .reason(code)
            .cloned()
            .ok_or_else(|| ServiceError::UnknownReason {
                code: code.to_string(),
                known: config
                    .naming
                    .reasons
                    .iter()
                    .map(|r| r.code.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    fn destination(&self, name: &str) -> Result<DestinationConfig, ServiceError> {
        let config = self.config();
        config
            .destinations
            .iter()
            .find(|d| d.name == name)
            .cloned()
            .ok_or_else(|| ServiceError::UnknownDestination {
                name: name.to_string(),
                known: match config.destinations.as_slice() {
                    [] => "none".into(),
                    all => all
                        .iter()
                        .map(|d| d.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                },
            })
    }
}

/// The note of a reason, trimmed: required for some reasons, never longer than the limit.
fn checked_note(choice: &ReasonChoice, note: &str) -> Result<String, ServiceError> {
    let note = note.trim().to_string();
    if choice.note_required && note.is_empty() {
        return Err(ServiceError::NoteRequired {
            label: choice.label.clone(),
        });
    }
    if note.chars().count() > MAX_NOTE_CHARS {
        return Err(ServiceError::NoteTooLong);
    }
    Ok(note)
}

fn valid_instance_uid(uid: &str) -> Result<String, ServiceError> {
    let uid = uid.trim();
    if is_valid_uid(uid) {
        Ok(uid.to_string())
    } else {
        Err(ServiceError::InvalidInstanceUid(uid.to_string()))
    }
}

fn valid_study_uid(uid: &str) -> Result<String, ServiceError> {
    let uid = uid.trim();
    if is_valid_uid(uid) {
        Ok(uid.to_string())
    } else {
        Err(ServiceError::InvalidStudyUid(uid.to_string()))
    }
}

/// One study of a bulk request; see [`Service::document_reasons`].
fn document_one(
    db: &Db<'_>,
    naming: &Naming,
    author: &Author,
    choice: &ReasonChoice,
    note: &str,
    uid: &str,
    now: &str,
) -> Result<BulkOutcome, StoreError> {
    let outcome = |outcome, status| BulkOutcome {
        study_instance_uid: uid.to_string(),
        outcome,
        status,
    };
    let Ok(study) = valid_study_uid(uid) else {
        return Ok(outcome(BulkResult::InvalidUid, None));
    };
    if !db.study_exists(&study)? {
        return Ok(outcome(BulkResult::Unknown, None));
    }
    let before = judge_study(db, naming, &study, "judged again before a reason", now)?;
    if before == StudyStatus::Conforming {
        return Ok(outcome(BulkResult::AlreadyConforming, Some(before)));
    }
    db.insert_reason(&study, &choice.code, note, &author.user_name, now)?;
    let cause = format!("reason {} documented by {}", choice.code, author.user_name);
    let status = judge_study(db, naming, &study, &cause, now)?;
    let detail = if note.is_empty() {
        choice.code.clone()
    } else {
        format!("{}: {note}", choice.code)
    };
    db.append_audit(&author.audit("document-reason", Some(&study), detail, now))?;
    Ok(outcome(BulkResult::Documented, Some(status)))
}

/// What recording an instance did.
#[derive(Debug, Clone)]
pub struct InstanceRecorded {
    pub outcome: RecordOutcome,
    /// The study it is filed under (its series' study).
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    /// Its identity findings (none for an identical re-send).
    pub findings: Vec<Finding>,
    /// Destinations that hold it because of them.
    pub held_for: Vec<String>,
}

/// The instance, its identity findings, its verdict and its queue rows; see
/// [`Service::record_instance`].
fn record_instance(
    db: &Db<'_>,
    naming: &Naming,
    destinations: &[DestinationConfig],
    instance: &IndexedInstance,
) -> Result<InstanceRecorded, StoreError> {
    let h = &instance.header;
    let context = db.arrival_context(h)?;
    let recorded = db.record_instance(instance)?;
    let study = recorded.filed_study;
    if let Some(cause) = &recorded.new_evidence {
        judge_study(db, naming, &study, cause, &instance.received_at)?;
    }
    let mut done = InstanceRecorded {
        outcome: recorded.outcome,
        study_instance_uid: study,
        series_instance_uid: h.series_instance_uid.clone(),
        findings: Vec::new(),
        held_for: Vec::new(),
    };
    if done.outcome == RecordOutcome::Identical {
        return Ok(done);
    }
    let patient = Patient {
        id: h.patient_id.clone(),
        name: h.patient_name.clone(),
        birth_date: h.patient_birth_date.clone(),
        sex: h.patient_sex.clone(),
    };
    done.findings = identity::check_arrival(&Arrival {
        sop_instance_uid: &h.sop_instance_uid,
        study_instance_uid: &h.study_instance_uid,
        frame_of_reference_uid: &h.frame_of_reference_uid,
        patient: &patient,
        study_patient: context.study_patient.as_ref(),
        series: context
            .series
            .as_ref()
            .map(|(study, frame_of_reference)| KnownSeries {
                study_instance_uid: study,
                frame_of_reference_uid: frame_of_reference,
            }),
        previous_patient: context.previous_patient.as_ref(),
        references: &context.references,
    });
    db.insert_findings(
        &done.study_instance_uid,
        &h.series_instance_uid,
        &done.findings,
        &instance.received_at,
    )?;
    let mut entries = Vec::new();
    for destination in
        crate::forward::routing::destinations_for(destinations, h, &instance.calling_ae_title)
    {
        let holding: Vec<&str> = done
            .findings
            .iter()
            .map(|f| f.code)
            .filter(|code| destination.hold_on.contains(code))
            .map(FindingCode::as_str)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let entry = if !holding.is_empty() {
            done.held_for.push(destination.name.clone());
            Entry::Held {
                codes: holding.join(","),
            }
        } else if destination.forward_when == ForwardWhen::SeriesChecked {
            Entry::Waiting
        } else {
            Entry::Pending
        };
        entries.push((destination.name.as_str(), entry));
    }
    db.enqueue(&entries, instance, &done.study_instance_uid)?;
    Ok(done)
}

/// Series checked per writer job.
const SERIES_PER_CHECK: usize = 8;

/// What one series check found (with the phase comparison it led to).
#[derive(Debug, Clone)]
pub struct SeriesChecked {
    pub study_instance_uid: String,
    /// (series, finding), the checked series' own first.
    pub findings: Vec<(String, Finding)>,
}

/// Checks one quiet series, compares the study's phases when it is one, records both, and
/// settles the queue rows of every series whose findings may have changed. Public for the
/// query benchmark's seeder, which checks its series as the gateway would.
pub fn check_series(
    db: &Db<'_>,
    config: &Config,
    series: &str,
    now: &str,
) -> Result<SeriesChecked, StoreError> {
    let tolerances = &config.safety.tolerances;
    let Some(for_check) = db.series_for_check(series)? else {
        return Ok(SeriesChecked {
            study_instance_uid: String::new(),
            findings: Vec::new(),
        });
    };
    let study = for_check.study_instance_uid.clone();
    let check = geometry_of(&for_check, tolerances);
    let state = match (&check.skipped, check.findings.is_empty()) {
        (Some(_), _) => "skipped",
        (None, true) => "passed",
        (None, false) => "findings",
    };
    db.record_series_check(&study, series, &check.findings, state, now)?;
    let mut findings: Vec<(String, Finding)> = check
        .findings
        .into_iter()
        .map(|f| (series.to_string(), f))
        .collect();
    let mut settle = vec![series.to_string()];
    if for_check.is_phase {
        let phases = db.phase_series(&study)?;
        if phases.iter().all(|p| p.checked) {
            let mut checked = Vec::new();
            for phase in &phases {
                if let Some(s) = db.series_for_check(&phase.series_instance_uid)? {
                    let positions = geometry_of(&s, tolerances).positions;
                    checked.push((s, positions));
                }
            }
            let compared: Vec<Phase<'_>> = checked
                .iter()
                .map(|(s, positions)| Phase {
                    series_instance_uid: &s.series_instance_uid,
                    label: &s.series_description,
                    positions,
                })
                .collect();
            let mismatches = geometry::check_phases(&compared, tolerances);
            db.record_phase_check(&study, &mismatches, now)?;
            findings.extend(mismatches);
            settle = phases.into_iter().map(|p| p.series_instance_uid).collect();
        }
    }
    for uid in &settle {
        let codes = db.series_geometry_codes(uid)?;
        for destination in &config.destinations {
            let holding: Vec<FindingCode> = match destination.forward_when {
                ForwardWhen::SeriesChecked => codes.clone(),
                ForwardWhen::Received => codes
                    .iter()
                    .copied()
                    .filter(|c| destination.hold_on.contains(c))
                    .collect(),
            };
            db.settle_series(uid, &destination.name, &holding)?;
        }
    }
    Ok(SeriesChecked {
        study_instance_uid: study,
        findings,
    })
}

fn geometry_of(
    series: &crate::store::safety::SeriesForCheck,
    tolerances: &crate::safety::Tolerances,
) -> geometry::SeriesCheck {
    geometry::check_series(
        &SeriesGeometry {
            modality: &series.modality,
            kind: (!series.kind.is_empty()).then_some(series.kind.as_str()),
            slices: &series.slices,
        },
        tolerances,
    )
}

/// Logs each finding (WARN, patient data masked) and counts it, for the receive path and the
/// series check.
pub fn report_findings(
    metrics: &crate::metrics::Metrics,
    study: &str,
    series: &str,
    findings: &[Finding],
) {
    for finding in findings {
        metrics.safety_finding(finding.code);
        tracing::warn!(
            code = %finding.code,
            study_instance_uid = %study,
            series_instance_uid = %series,
            sop_instance_uid = %finding.sop_instance_uid,
            attribute = %finding.attribute,
            expected = %finding.loggable(&finding.expected),
            found = %finding.loggable(&finding.found),
            detail = %finding.detail,
            "safety finding"
        );
    }
}

/// Computes a study's verdict from what the index holds and records it; returns the status.
fn judge_study(
    db: &Db<'_>,
    naming: &Naming,
    study: &str,
    cause: &str,
    now: &str,
) -> Result<StudyStatus, StoreError> {
    let (facts, series_uids) = db.study_facts(study)?;
    let verdict = naming.evaluate(&facts);
    db.record_verdict(study, &verdict, &series_uids, cause, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uid_is_named_by_the_user_database() {
        // That the CLI uses it rather than $USER:
        // cli::a_reason_without_by_is_documented_by_the_process_s_user_whatever_user_says.
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      # a comment\n\
                      simgate:x:998:998::/var/lib/simgate:/usr/sbin/nologin\n";
        assert_eq!(user_of_uid(passwd, 0).as_deref(), Some("root"));
        assert_eq!(user_of_uid(passwd, 998).as_deref(), Some("simgate"));
        assert_eq!(user_of_uid(passwd, 1000), None);
        let nameless = OsUser {
            uid: 1000,
            name: None,
        };
        assert_eq!(nameless.to_string(), "uid 1000");
    }
}
