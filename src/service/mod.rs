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

use crate::config::{Config, DestinationConfig, ReasonChoice, Role};
use crate::dicom::uid::is_valid_uid;
use crate::naming::{Naming, StudyStatus};
use crate::store::audit::AuditEntry;
use crate::store::commitment::NewCommitment;
use crate::store::instances::{IndexedInstance, RecordOutcome};
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
            | ServiceError::NothingToRetry => ErrorKind::Invalid,
            ServiceError::UnknownStudy(_) => ErrorKind::NotFound,
            ServiceError::NotPermitted { .. } | ServiceError::UnknownUser(_) => {
                ErrorKind::Forbidden
            }
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

fn os_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

impl Author {
    /// The author of a reason documented with the CLI: the user `--by` names, or else the
    /// operating-system user, who must be one of the configured users. Free text is refused.
    pub fn for_cli(config: &Config, by: Option<&str>) -> Result<Author, ServiceError> {
        let os_user = os_user();
        let name = by.map(str::trim).unwrap_or(&os_user);
        let user = config
            .http
            .users
            .iter()
            .find(|u| u.name == name)
            .ok_or_else(|| ServiceError::UnknownUser(name.to_string()))?;
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
    config: Arc<Config>,
    naming: watch::Receiver<Arc<Naming>>,
}

impl Service {
    pub fn new(
        index: IndexHandle,
        config: Arc<Config>,
        naming: watch::Receiver<Arc<Naming>>,
    ) -> Service {
        Service {
            index,
            config,
            naming,
        }
    }

    /// The naming rules in force (SIGHUP may replace them).
    pub fn naming(&self) -> Arc<Naming> {
        Arc::clone(&self.naming.borrow())
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// Records a stored instance, its study's verdict when it brings new evidence, and its
    /// queue rows, in one savepoint: an acknowledged instance can never miss either.
    pub async fn record_instance(
        &self,
        instance: IndexedInstance,
    ) -> Result<RecordOutcome, StoreError> {
        let naming = self.naming();
        let config = Arc::clone(&self.config);
        self.index
            .execute(move |db| record_instance(db, &naming, &config.destinations, &instance))
            .await
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
        let note = request.note.trim().to_string();
        if choice.note_required && note.is_empty() {
            return Err(ServiceError::NoteRequired {
                label: choice.label,
            });
        }
        if note.chars().count() > MAX_NOTE_CHARS {
            return Err(ServiceError::NoteTooLong);
        }
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
                Ok(count)
            })
            .await
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
        let config = Arc::clone(&self.config);
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

    fn reason_choice(&self, code: &str) -> Result<&ReasonChoice, ServiceError> {
        self.config
            .naming
            .reason(code)
            .ok_or_else(|| ServiceError::UnknownReason {
                code: code.to_string(),
                known: self
                    .config
                    .naming
                    .reasons
                    .iter()
                    .map(|r| r.code.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    fn destination(&self, name: &str) -> Result<&DestinationConfig, ServiceError> {
        self.config
            .destinations
            .iter()
            .find(|d| d.name == name)
            .ok_or_else(|| ServiceError::UnknownDestination {
                name: name.to_string(),
                known: match self.config.destinations.as_slice() {
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

fn valid_study_uid(uid: &str) -> Result<String, ServiceError> {
    let uid = uid.trim();
    if is_valid_uid(uid) {
        Ok(uid.to_string())
    } else {
        Err(ServiceError::InvalidStudyUid(uid.to_string()))
    }
}

/// The instance, its verdict and its queue rows; see [`Service::record_instance`].
fn record_instance(
    db: &Db<'_>,
    naming: &Naming,
    destinations: &[DestinationConfig],
    instance: &IndexedInstance,
) -> Result<RecordOutcome, StoreError> {
    let recorded = db.record_instance(instance)?;
    if let Some(cause) = &recorded.new_evidence {
        judge_study(
            db,
            naming,
            &instance.header.study_instance_uid,
            cause,
            &instance.received_at,
        )?;
    }
    if recorded.outcome != RecordOutcome::Identical {
        let routes = crate::forward::routing::destinations_for(
            destinations,
            &instance.header,
            &instance.calling_ae_title,
        );
        db.enqueue(&routes, instance)?;
    }
    Ok(recorded.outcome)
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
