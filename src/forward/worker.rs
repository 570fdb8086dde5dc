//! One forwarder task per destination: takes due queue rows in arrival order, sends each with
//! the destination's [`Scu`], records what the [`policy`](super::policy) makes of the result,
//! and backs the whole destination off after a transient failure so order within a series
//! holds. Idle, it waits for the writer's signal, a poll, or the idle release.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::policy;
use super::scu::Scu;
use crate::config::ForwardConfig;
use crate::error_chain;
use crate::store::IndexHandle;
use crate::store::queue::{Attempt, QueueItem};

/// Rows taken from the queue at a time.
const BATCH: usize = 32;
/// Even when nothing wakes it, a forwarder looks at its queue this often (CLI retries).
const POLL: Duration = Duration::from_secs(1);
/// Pause between tries to record an outcome the database did not take.
const RECORD_RETRY: Duration = Duration::from_millis(500);

/// One forwarder, for one destination.
pub struct Forwarder {
    pub name: String,
    pub scu: Scu,
    pub settings: ForwardConfig,
    pub index: IndexHandle,
    pub queue_changed: watch::Receiver<u64>,
    pub shutdown: CancellationToken,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// A person asked for a retry: a backoff or probe pause ends at once.
    pub retry_requested: Arc<tokio::sync::Notify>,
}

impl Forwarder {
    pub async fn run(mut self) {
        let name = self.name.clone();
        let mut transient_failures = 0u32;
        // When the association last carried an instance: the idle release counts from here.
        let mut last_send = tokio::time::Instant::now();
        while !self.shutdown.is_cancelled() {
            let destination = name.clone();
            let items = match self
                .index
                .execute_relaxed(move |db| {
                    db.take_due(&destination, &crate::clock::now_rfc3339(), BATCH)
                })
                .await
            {
                Ok(items) => items,
                Err(e) => {
                    tracing::error!(destination = %name, cause = %error_chain(&e), "cannot read the forward queue");
                    self.pause(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if items.is_empty() {
                self.idle(last_send + self.settings.idle_release).await;
                continue;
            }
            self.scu.expect(items.iter().map(QueueItem::outgoing));
            let mut remaining: Vec<i64> = items.iter().map(|i| i.id).collect();
            for item in &items {
                remaining.retain(|id| *id != item.id);
                let result = self.scu.send(item.outgoing(), None).await;
                last_send = tokio::time::Instant::now();
                let now = crate::clock::now_rfc3339();
                let attempt = policy::attempt_outcome(&result, item.attempts, &self.settings, &now);
                self.log_attempt(&item.sop_instance_uid, &attempt);
                if !self.record(item, attempt, now).await {
                    break; // shutting down; the row is queued again at the next start
                }
                match &result {
                    Ok(_) => transient_failures = 0,
                    Err(e) if e.is_transient() => {
                        self.scu.abort().await;
                        self.release_rows(std::mem::take(&mut remaining)).await;
                        if e.is_unreachable() {
                            self.wait_until_reachable().await;
                            transient_failures = 0;
                        } else {
                            let delay = policy::backoff(&self.settings, transient_failures);
                            transient_failures = transient_failures.saturating_add(1);
                            self.pause(delay).await;
                        }
                        break;
                    }
                    Err(e) if e.breaks_association() => self.scu.abort().await,
                    Err(_) => {}
                }
                if self.shutdown.is_cancelled() {
                    break;
                }
            }
            self.release_rows(remaining).await;
        }
        self.scu.release().await;
        tracing::debug!(destination = %name, "forwarder stopped");
    }

    fn log_attempt(&self, sop_instance_uid: &str, attempt: &Attempt) {
        let name = &self.name;
        let outcome = match attempt {
            Attempt::Sent {
                warning, sent_as, ..
            } if warning.is_empty() => {
                if sent_as.is_empty() {
                    tracing::debug!(destination = %name, %sop_instance_uid, "forwarded");
                } else {
                    tracing::info!(destination = %name, %sop_instance_uid, %sent_as, "forwarded, converted");
                }
                "sent"
            }
            Attempt::Sent { warning, .. } => {
                tracing::debug!(destination = %name, %sop_instance_uid, %warning, "forwarded with a warning");
                "sent-with-warning"
            }
            Attempt::Retry { error, .. } => {
                tracing::warn!(destination = %name, %sop_instance_uid, cause = %error, "forward failed; will retry");
                "retry"
            }
            Attempt::Dead { error, .. } => {
                tracing::error!(destination = %name, %sop_instance_uid, cause = %error, "forward failed for good: dead-lettered");
                "dead"
            }
        };
        self.metrics.forward_outcome(name, outcome);
    }

    /// Records an attempt's outcome, trying again until the database takes it: the row must
    /// not stay in flight, and the next row must not go out before this one is settled (order
    /// within a series). False when the gateway stops first.
    async fn record(&self, item: &QueueItem, attempt: Attempt, now: String) -> bool {
        let mut failures = 0u32;
        loop {
            let (record, attempt, now) = (item.clone(), attempt.clone(), now.clone());
            match self
                .index
                .execute_relaxed(move |db| db.record_attempt(&record, &attempt, &now))
                .await
            {
                Ok(()) => {
                    if failures > 0 {
                        tracing::info!(destination = %self.name, failures, "forward attempt recorded after all");
                    }
                    return true;
                }
                Err(e) => {
                    if failures == 0 {
                        tracing::error!(destination = %self.name, cause = %error_chain(&e), "cannot record a forward attempt; trying again");
                    }
                    failures += 1;
                }
            }
            if self.shutdown.is_cancelled() {
                return false;
            }
            self.pause(RECORD_RETRY).await;
        }
    }

    /// Gives rows taken but not attempted back to the queue, trying again until it is done.
    async fn release_rows(&self, ids: Vec<i64>) {
        if ids.is_empty() {
            return;
        }
        let mut failures = 0u32;
        loop {
            let ids = ids.clone();
            match self.index.execute_relaxed(move |db| db.release(&ids)).await {
                Ok(()) => return,
                Err(e) if failures == 0 => {
                    tracing::error!(destination = %self.name, cause = %error_chain(&e), "cannot give forward rows back; trying again");
                }
                Err(_) => {}
            }
            failures += 1;
            if self.shutdown.is_cancelled() {
                return;
            }
            self.pause(RECORD_RETRY).await;
        }
    }

    /// The destination is unreachable: a C-ECHO every `probe_interval` until it answers.
    async fn wait_until_reachable(&self) {
        let started = tokio::time::Instant::now();
        tracing::warn!(destination = %self.name, every_s = self.settings.probe_interval.as_secs_f64(), "destination unreachable: probing with C-ECHO");
        while !self.shutdown.is_cancelled() {
            self.pause(self.settings.probe_interval).await;
            match self.scu.echo().await {
                Ok(()) => {
                    tracing::info!(destination = %self.name, after_s = started.elapsed().as_secs(), "destination answers C-ECHO again: resuming");
                    return;
                }
                // It answers, if not to C-ECHO (a rejection, no Verification context, a
                // failure status): reachable; sending decides the rest.
                Err(e) if !e.is_unreachable() => {
                    tracing::info!(destination = %self.name, after_s = started.elapsed().as_secs(), answer = %error_chain(&e), "destination answers again: resuming");
                    return;
                }
                Err(e) => {
                    tracing::debug!(destination = %self.name, cause = %error_chain(&e), "probe failed")
                }
            }
        }
    }

    /// Waits `delay`, or less when the gateway stops or a person asks for a retry.
    async fn pause(&self, delay: Duration) {
        tokio::select! {
            () = self.shutdown.cancelled() => {}
            () = self.retry_requested.notified() => {
                tracing::info!(destination = %self.name, "retry asked for: trying now");
            }
            () = tokio::time::sleep(delay) => {}
        }
    }

    /// Nothing due: wait for new rows, the next poll, or the idle release.
    async fn idle(&mut self, release_at: tokio::time::Instant) {
        let idle_release = tokio::time::sleep_until(release_at);
        tokio::pin!(idle_release);
        let poll = tokio::time::sleep(POLL);
        tokio::pin!(poll);
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                changed = self.queue_changed.changed() => {
                    if changed.is_err() {
                        // The writer is gone (shutting down): look again at the next poll.
                        poll.as_mut().await;
                    }
                    return;
                }
                () = &mut poll => return,
                () = &mut idle_release, if self.scu.is_open() => {
                    tracing::debug!(destination = %self.name, "idle: releasing the association");
                    self.scu.release().await;
                }
            }
        }
    }
}
