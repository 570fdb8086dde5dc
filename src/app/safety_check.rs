//! The series check: once a series has been quiet for `safety.series_quiet_period`, its
//! geometry is checked (`Service::check_quiet_series`) and what is found is logged and
//! counted. Looks every second; at once again while series are due.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::error_chain;
use crate::metrics::Metrics;
use crate::service::Service;

const POLL: Duration = Duration::from_secs(1);

pub async fn run(service: Service, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    loop {
        let mut due_more = false;
        match service.check_quiet_series().await {
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
        }
        let pause = if due_more { Duration::ZERO } else { POLL };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}
