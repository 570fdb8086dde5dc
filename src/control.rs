//! The local control socket: while the gateway runs, the CLI's writes go through it, so they
//! run on the gateway's writer thread and never compete with the receive path for SQLite's
//! write lock. A Unix socket in the storage folder (mode 0600: the gateway's user and root),
//! one JSON request and one JSON response per connection; the kernel's peer credentials are
//! recorded in the audit entry. Without a gateway, the CLI runs the same [`execute`] on a
//! writer thread of its own.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error_chain;
use crate::service::rules::PlaybookFile;
use crate::service::{
    Author, ErrorKind, ReasonRecorded, ReasonRequest, RetryRequest, Service, ServiceError,
};
use crate::store::safety::HoldTarget;
use crate::store::verdicts::ImportOutcome;

/// The socket's name in the storage folder.
pub const SOCKET_NAME: &str = "simgate.sock";
/// A request larger than this is refused (a LOINC/RSNA playbook is a few MiB of names).
const MAX_REQUEST: u64 = 64 * 1024 * 1024;
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the CLI waits for an answer (a recheck of every study can take a while).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(600);

/// A write the CLI asks for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "operation", rename_all = "kebab-case")]
pub enum Request {
    DocumentReason {
        author: Author,
        reason: ReasonRequest,
    },
    Retry {
        author: Author,
        retry: RetryRequest,
    },
    ForwardStudy {
        author: Author,
        study_instance_uid: String,
        destination: String,
    },
    ImportPlaybook {
        author: Author,
        file: PlaybookFile,
    },
    Recheck {
        author: Author,
    },
    DecideHeld {
        author: Author,
        target: HoldTarget,
        release: bool,
        why: String,
    },
}

/// What came of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Response {
    Reason { recorded: ReasonRecorded },
    Queued { instances: usize },
    Imported { import: ImportOutcome },
    Rechecked { studies: usize, changed: usize },
    Decided { instances: Vec<String> },
    Refused { kind: ErrorKind, message: String },
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot use the control socket {path}")]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("another simgate is serving this storage folder (its control socket {0} answers)")]
    InUse(PathBuf),
    #[error("the gateway's answer is not understood")]
    Answer(#[source] serde_json::Error),
    #[error("the gateway did not answer within {0:?}")]
    Timeout(Duration),
}

/// Runs one request on `service`: the gateway does it for the socket, the CLI for itself.
pub async fn execute(service: &Service, request: Request) -> Response {
    let result = match request {
        Request::DocumentReason { author, reason } => service
            .document_reason(&author, reason)
            .await
            .map(|recorded| Response::Reason { recorded }),
        Request::Retry { author, retry } => service
            .retry(&author, retry)
            .await
            .map(|instances| Response::Queued { instances }),
        Request::ForwardStudy {
            author,
            study_instance_uid,
            destination,
        } => service
            .forward_study(&author, &study_instance_uid, &destination)
            .await
            .map(|instances| Response::Queued { instances }),
        Request::ImportPlaybook { author, file } => service
            .import_playbook(&author, file)
            .await
            .map(|import| Response::Imported { import }),
        Request::Recheck { author } => service
            .recheck_all(&author)
            .await
            .map(|(studies, changed)| Response::Rechecked { studies, changed }),
        Request::DecideHeld {
            author,
            target,
            release,
            why,
        } => service
            .decide_held(&author, target, release, &why)
            .await
            .map(|instances| Response::Decided { instances }),
    };
    result.unwrap_or_else(|e: ServiceError| Response::Refused {
        kind: e.kind(),
        message: if e.kind() == ErrorKind::Internal {
            error_chain(&e)
        } else {
            e.to_string()
        },
    })
}

/// Binds the control socket in `storage_dir`. A socket that answers belongs to another
/// gateway on the same folder: refused. A stale one (left by a killed gateway) is replaced.
pub async fn bind(storage_dir: &Path) -> Result<UnixListener, ControlError> {
    let path = storage_dir.join(SOCKET_NAME);
    if path.exists() {
        match UnixStream::connect(&path).await {
            Ok(_) => return Err(ControlError::InUse(path)),
            // Nobody listens: left by a gateway that was killed.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                let _ = std::fs::remove_file(&path);
            }
            Err(source) => return Err(ControlError::Socket { path, source }),
        }
    }
    let socket_error = |source| ControlError::Socket {
        path: path.clone(),
        source,
    };
    let listener = UnixListener::bind(&path).map_err(socket_error)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(socket_error)?;
    Ok(listener)
}

/// Serves the control socket until `shutdown`; each connection on `tracker`.
pub async fn serve(
    listener: UnixListener,
    service: Service,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::error!(cause = %e, "control socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let service = service.clone();
        tracker.spawn(async move {
            if let Err(e) = answer(stream, &service).await {
                tracing::warn!(cause = %error_chain(&e), "control socket: request not answered");
            }
        });
    }
    // The socket file stays: the next gateway finds nobody listening and replaces it. (The
    // storage folder's lock, held by `app::serve`, is what keeps a second gateway out.)
}

async fn answer(stream: UnixStream, service: &Service) -> Result<(), std::io::Error> {
    let uid = stream.peer_cred().map(|c| c.uid()).ok();
    let (reader, mut writer) = stream.into_split();
    let mut line = Vec::new();
    let mut reader = BufReader::new(reader.take(MAX_REQUEST));
    tokio::time::timeout(REQUEST_TIMEOUT, reader.read_until(b'\n', &mut line))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request timed out"))??;
    // Besides the socket's mode: only the gateway's own user and root are served.
    let own = rustix::process::geteuid().as_raw();
    let allowed = uid.is_some_and(|uid| uid == own || uid == 0);
    let response = match serde_json::from_slice::<Request>(&line) {
        Ok(_) if !allowed => Response::Refused {
            kind: ErrorKind::Forbidden,
            message: format!(
                "the control socket serves uid {own} and root only, not {}",
                uid.map(|u| u.to_string())
                    .unwrap_or_else(|| "an unknown uid".into())
            ),
        },
        Ok(request) => execute(service, with_peer(request, uid)).await,
        Err(e) => Response::Refused {
            kind: ErrorKind::Invalid,
            message: format!("not a control request: {e}"),
        },
    };
    let mut bytes = serde_json::to_vec(&response).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    writer.write_all(&bytes).await?;
    writer.shutdown().await
}

/// The audit entry says where a CLI request came from, as the kernel tells it.
fn with_peer(request: Request, uid: Option<u32>) -> Request {
    let mark = |mut author: Author| {
        if let Some(uid) = uid {
            author.from = format!("{} via the control socket, uid {uid}", author.from);
        }
        author
    };
    match request {
        Request::DocumentReason { author, reason } => Request::DocumentReason {
            author: mark(author),
            reason,
        },
        Request::Retry { author, retry } => Request::Retry {
            author: mark(author),
            retry,
        },
        Request::ForwardStudy {
            author,
            study_instance_uid,
            destination,
        } => Request::ForwardStudy {
            author: mark(author),
            study_instance_uid,
            destination,
        },
        Request::ImportPlaybook { author, file } => Request::ImportPlaybook {
            author: mark(author),
            file,
        },
        Request::Recheck { author } => Request::Recheck {
            author: mark(author),
        },
        Request::DecideHeld {
            author,
            target,
            release,
            why,
        } => Request::DecideHeld {
            author: mark(author),
            target,
            release,
            why,
        },
    }
}

/// Sends `request` to the gateway serving `storage_dir`; `Ok(None)` when none is running
/// (no socket, or nobody answers at it).
pub async fn call(storage_dir: &Path, request: &Request) -> Result<Option<Response>, ControlError> {
    let path = storage_dir.join(SOCKET_NAME);
    let stream = match UnixStream::connect(&path).await {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(source) => return Err(ControlError::Socket { path, source }),
    };
    let socket_error = |source| ControlError::Socket {
        path: path.clone(),
        source,
    };
    let (reader, mut writer) = stream.into_split();
    let mut bytes = serde_json::to_vec(request).map_err(ControlError::Answer)?;
    bytes.push(b'\n');
    writer.write_all(&bytes).await.map_err(socket_error)?;
    let mut answer = Vec::new();
    tokio::time::timeout(
        RESPONSE_TIMEOUT,
        BufReader::new(reader).read_until(b'\n', &mut answer),
    )
    .await
    .map_err(|_| ControlError::Timeout(RESPONSE_TIMEOUT))?
    .map_err(socket_error)?;
    serde_json::from_slice(&answer)
        .map(Some)
        .map_err(ControlError::Answer)
}
