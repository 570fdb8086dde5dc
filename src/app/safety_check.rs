//! The series check: once a series has been quiet for `safety.series_quiet_period`, its
//! geometry is checked (`Service::check_quiet_series`) and what is found is logged and
//! counted. Looks every second on a read connection, and takes the writer only when a series
//! is due (an idle gateway commits nothing); at once again while series are due.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::error_chain;
use crate::metrics::Metrics;
use crate::service::Service;
use crate::store::ReadPool;

const POLL: Duration = Duration::from_secs(1);

pub async fn run(
    service: Service,
    reads: Arc<ReadPool>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let quiet = service.config().safety.series_quiet_period;
    loop {
        let mut due_more = false;
        let cutoff = crate::clock::rfc3339_before(quiet);
        let due = reads
            .read(move |db| db.series_due_for_check(&cutoff, 1))
            .await;
        match due {
            Ok(due) if due.is_empty() => {}
            Ok(_) => match service.check_quiet_series().await {
                Ok(checked) => {
                    due_more = !checked.is_empty();
                    for series in checked {
                        for (uid, finding) in &series.findings {
                            crate::service::report_findings(
                                &metrics,
                                &series.study_instance_uid,
                                uid,
                                std::slice::from_ref(finding),
                            );
                        }
                    }
                }
                Err(e) => tracing::error!(cause = %error_chain(&e), "series check failed"),
            },
            Err(e) => {
                tracing::error!(cause = %error_chain(&e), "series check: cannot read the index")
            }
        }
        let pause = if due_more { Duration::ZERO } else { POLL };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}
