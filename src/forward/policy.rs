//! The forwarding policy: which failures are worth retrying soon, how long to back off, and
//! what one attempt means for its queue row (sent, retry, or dead letter).

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::config::ForwardConfig;
use crate::dicom::dimse::Status;
use crate::store::StoreError;
use crate::store::queue::Attempt;

/// Why one send failed.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("cannot connect to {address}")]
    Connect {
        address: String,
        #[source]
        source: Box<dicom_ul::association::Error>,
    },
    #[error("association rejected ({transient}): {detail}", transient = if *.transient { "transient" } else { "permanent" })]
    Rejected { transient: bool, detail: String },
    #[error(
        "no accepted presentation context for SOP class {sop_class_uid} in {transfer_syntax_uid}"
    )]
    NoPresentationContext {
        sop_class_uid: String,
        transfer_syntax_uid: String,
    },
    #[error("network failure")]
    Network(#[source] Box<dicom_ul::association::Error>),
    #[error("no response within {0:?}")]
    Timeout(Duration),
    #[error("the peer aborted the association")]
    Aborted,
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("status 0x{:04X}{}", .status.0, .comment.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Refused {
        status: Status,
        comment: Option<String>,
    },
    #[error("cannot read the stored file {path}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot convert the data set to {0}")]
    Convert(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ForwardError {
    /// Worth retrying soon with the same destination (connection trouble, 0xA7xx, transient
    /// rejection); otherwise the instance itself is refused (0x0122, 0xA9xx, 0xCxxx...).
    pub fn is_transient(&self) -> bool {
        match self {
            ForwardError::Connect { .. }
            | ForwardError::Network(_)
            | ForwardError::Timeout(_)
            | ForwardError::Aborted
            | ForwardError::Protocol(_)
            | ForwardError::Store(_) => true,
            ForwardError::Rejected { transient, .. } => *transient,
            ForwardError::Refused { status, .. } => status.0 & 0xFF00 == 0xA700,
            ForwardError::NoPresentationContext { .. }
            | ForwardError::File { .. }
            | ForwardError::Convert(_) => false,
        }
    }

    /// The destination cannot be reached at all (no connection, a dropped one, silence, an
    /// abort): probe it with C-ECHO until it answers, rather than back off for minutes.
    /// Destinations that answer with failures back off exponentially instead.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            ForwardError::Connect { .. }
                | ForwardError::Network(_)
                | ForwardError::Timeout(_)
                | ForwardError::Aborted
        )
    }

    /// After this failure the open association cannot carry the next instance (the peer may
    /// be in the middle of a data set): it is aborted. A refusal or a missing context leaves it
    /// in order.
    pub fn breaks_association(&self) -> bool {
        !matches!(
            self,
            ForwardError::Refused { .. }
                | ForwardError::NoPresentationContext { .. }
                | ForwardError::Rejected { .. }
                | ForwardError::Connect { .. }
        )
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            ForwardError::Refused { status, .. } => Some(status.0),
            _ => None,
        }
    }
}

/// What the destination answered to an instance it took: success, or a warning (0xBxxx)
/// with its comment; and how it was sent when not in its stored transfer syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub status: Status,
    pub comment: Option<String>,
    /// "sent as X because the destination refused Y"; `None`: the stored bytes, unchanged.
    pub sent_as: Option<String>,
}

/// The queue row's fate after one attempt that was made `attempts_before` times already.
/// A transient failure keeps the row first in line (the whole destination backs off); a
/// permanent one is retried after a backoff, then dead-lettered at `max_attempts`.
pub fn attempt_outcome(
    result: &Result<Delivered, ForwardError>,
    attempts_before: i64,
    settings: &ForwardConfig,
    now: &str,
) -> Attempt {
    match result {
        Ok(Delivered {
            status,
            comment,
            sent_as,
        }) => Attempt::Sent {
            status: status.0,
            warning: if status.is_success() {
                String::new()
            } else {
                format!(
                    "warning {status}{}",
                    comment
                        .as_deref()
                        .map(|c| format!(" ({c})"))
                        .unwrap_or_default()
                )
            },
            sent_as: sent_as.clone().unwrap_or_default(),
        },
        Err(e) if e.is_transient() => Attempt::Retry {
            status: e.status(),
            error: crate::error_chain(e),
            next_attempt_at: now.to_string(),
        },
        Err(e) if attempts_before + 1 >= i64::from(settings.max_attempts) => Attempt::Dead {
            status: e.status(),
            error: crate::error_chain(e),
        },
        Err(e) => Attempt::Retry {
            status: e.status(),
            error: crate::error_chain(e),
            next_attempt_at: crate::clock::rfc3339_after(backoff(settings, attempts_before as u32)),
        },
    }
}

/// The backoff after `failures` failures in a row, with jitter from the clock.
pub fn backoff(settings: &ForwardConfig, failures: u32) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    backoff_delay(settings, failures, f64::from(nanos % 1000) / 1000.0)
}

/// initial * multiplier^failures, capped at max, scaled by 0.8 ..= 1.2 (`jitter` in 0 ..= 1).
pub fn backoff_delay(settings: &ForwardConfig, failures: u32, jitter: f64) -> Duration {
    let base = settings.initial_backoff.as_secs_f64()
        * settings.backoff_multiplier.powi(failures.min(30) as i32);
    let capped = base.min(settings.max_backoff.as_secs_f64());
    Duration::from_secs_f64(capped * (0.8 + 0.4 * jitter.clamp(0.0, 1.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_is_capped_and_jittered() {
        let settings = ForwardConfig {
            initial_backoff: Duration::from_secs(2),
            backoff_multiplier: 2.0,
            max_backoff: Duration::from_secs(300),
            max_attempts: 5,
            idle_release: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(120),
            max_pdu_length: 131_072,
            probe_interval: Duration::from_secs(3),
        };
        let secs = |failures, jitter| backoff_delay(&settings, failures, jitter).as_secs_f64();
        assert_eq!(secs(0, 0.5), 2.0);
        assert_eq!(secs(3, 0.5), 16.0);
        assert_eq!(secs(20, 0.5), 300.0, "capped at max_backoff");
        assert_eq!(secs(1000, 0.5), 300.0, "no overflow");
        assert!((secs(3, 0.0) - 12.8).abs() < 1e-9, "-20%");
        assert!((secs(3, 1.0) - 19.2).abs() < 1e-9, "+20%");
    }

    #[test]
    fn transient_and_permanent_failures_are_told_apart() {
        let refused = |status| ForwardError::Refused {
            status: Status(status),
            comment: None,
        };
        assert!(refused(0xA700).is_transient());
        assert!(refused(0xA7FF).is_transient());
        for permanent in [0x0122, 0xA900, 0xC000, 0xC123] {
            assert!(!refused(permanent).is_transient(), "0x{permanent:04X}");
        }
        assert!(ForwardError::Timeout(Duration::from_secs(1)).is_transient());
        assert!(ForwardError::Aborted.is_transient());
        assert!(
            ForwardError::Rejected {
                transient: true,
                detail: String::new()
            }
            .is_transient()
        );
        assert!(
            !ForwardError::Rejected {
                transient: false,
                detail: String::new()
            }
            .is_transient()
        );
        assert!(
            !ForwardError::NoPresentationContext {
                sop_class_uid: "1.2".into(),
                transfer_syntax_uid: "1.2.840.10008.1.2.1".into()
            }
            .is_transient()
        );
    }

    #[test]
    fn an_attempt_is_sent_retried_or_dead_lettered() {
        let settings = ForwardConfig {
            initial_backoff: Duration::from_secs(2),
            backoff_multiplier: 2.0,
            max_backoff: Duration::from_secs(300),
            max_attempts: 3,
            idle_release: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            response_timeout: Duration::from_secs(120),
            max_pdu_length: 131_072,
            probe_interval: Duration::from_secs(3),
        };
        let now = "2000-01-01T00:00:00.000Z";
        let delivered = |status, comment: Option<&str>| {
            Ok(Delivered {
                status,
                comment: comment.map(str::to_string),
                sent_as: None,
            })
        };
        let sent = attempt_outcome(&delivered(Status::SUCCESS, None), 0, &settings, now);
        assert!(matches!(sent, Attempt::Sent { status: 0, ref warning, .. } if warning.is_empty()));
        let warned = attempt_outcome(
            &delivered(Status(0xB000), Some("coerced")),
            0,
            &settings,
            now,
        );
        assert!(matches!(warned, Attempt::Sent { ref warning, .. } if warning.contains("coerced")));
        let busy = Err(ForwardError::Refused {
            status: Status(0xA700),
            comment: None,
        });
        assert!(
            matches!(
                attempt_outcome(&busy, 10, &settings, now),
                Attempt::Retry { ref next_attempt_at, .. } if next_attempt_at == now
            ),
            "transient: stays first in line, never dead"
        );
        let refused = Err(ForwardError::Refused {
            status: Status(0x0122),
            comment: None,
        });
        assert!(matches!(
            attempt_outcome(&refused, 0, &settings, now),
            Attempt::Retry { ref next_attempt_at, .. } if next_attempt_at.as_str() > now
        ));
        assert!(matches!(
            attempt_outcome(&refused, 2, &settings, now),
            Attempt::Dead {
                status: Some(0x0122),
                ..
            }
        ));
    }
}
