//! Counters of the running gateway and every line of the Prometheus text exposition format
//! served at `/metrics`. Counting is lock-free (atomics) on the hot path; gauges that live in
//! the database (queue depth, studies by status) are read at scrape time and handed in as
//! [`Gauges`].

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::config::DestinationConfig;
use crate::naming::StudyStatus;
use crate::safety::FindingCode;
use crate::store::queue::QueueDepth;

/// Upper bounds (seconds) of the store-latency histogram buckets.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Debug, Default)]
pub struct Metrics {
    associations: AtomicU64,
    instances_stored: AtomicU64,
    instances_identical: AtomicU64,
    instances_replaced: AtomicU64,
    instances_failed: AtomicU64,
    bytes_received: AtomicU64,
    echoes: AtomicU64,
    /// Rejections by cause (calling AE, called AE, peer address, busy, C-STORE status...).
    rejections: Mutex<BTreeMap<String, u64>>,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_micros: AtomicU64,
    /// Forward outcomes by (destination, outcome).
    forward_outcomes: Mutex<BTreeMap<(String, String), u64>>,
    /// Safety findings by code, in [`FindingCode::ALL`] order.
    safety_findings: [AtomicU64; FindingCode::ALL.len()],
}

/// How one instance ended, for counting.
#[derive(Debug, Clone, Copy)]
pub enum InstanceOutcome {
    Stored,
    Identical,
    Replaced,
    Failed,
}

impl Metrics {
    pub fn association(&self) {
        self.associations.fetch_add(1, Ordering::Relaxed);
    }

    pub fn echo(&self) {
        self.echoes.fetch_add(1, Ordering::Relaxed);
    }

    pub fn rejection(&self, cause: &str) {
        let mut map = self
            .rejections
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *map.entry(cause.to_string()).or_default() += 1;
    }

    pub fn instance(&self, outcome: InstanceOutcome, bytes: u64) {
        let counter = match outcome {
            InstanceOutcome::Stored => &self.instances_stored,
            InstanceOutcome::Identical => &self.instances_identical,
            InstanceOutcome::Replaced => &self.instances_replaced,
            InstanceOutcome::Failed => &self.instances_failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.bytes_received.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Time from the last data PDV to the durable, indexed instance.
    pub fn store_latency(&self, latency: Duration) {
        let seconds = latency.as_secs_f64();
        for (bucket, bound) in self.latency_buckets.iter().zip(LATENCY_BUCKETS) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_micros
            .fetch_add(latency.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn safety_finding(&self, code: FindingCode) {
        if let Some(index) = FindingCode::ALL.iter().position(|c| *c == code) {
            self.safety_findings[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn forward_outcome(&self, destination: &str, outcome: &str) {
        let mut map = self
            .forward_outcomes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *map.entry((destination.to_string(), outcome.to_string()))
            .or_default() += 1;
    }

    /// The counters in Prometheus text format, followed by `gauges` (already formatted lines).
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::with_capacity(4096);
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP simgate_associations_total Associations established."
        );
        let _ = writeln!(out, "# TYPE simgate_associations_total counter");
        let _ = writeln!(
            out,
            "simgate_associations_total {}",
            load(&self.associations)
        );
        let _ = writeln!(out, "# HELP simgate_echoes_total C-ECHO requests answered.");
        let _ = writeln!(out, "# TYPE simgate_echoes_total counter");
        let _ = writeln!(out, "simgate_echoes_total {}", load(&self.echoes));
        let _ = writeln!(
            out,
            "# HELP simgate_safety_findings_total Safety findings (identity and geometry checks) by code."
        );
        let _ = writeln!(out, "# TYPE simgate_safety_findings_total counter");
        for (code, counter) in FindingCode::ALL.iter().zip(&self.safety_findings) {
            let _ = writeln!(
                out,
                "simgate_safety_findings_total{{code=\"{code}\"}} {}",
                load(counter)
            );
        }
        let _ = writeln!(
            out,
            "# HELP simgate_instances_received_total C-STORE requests by outcome."
        );
        let _ = writeln!(out, "# TYPE simgate_instances_received_total counter");
        for (outcome, counter) in [
            ("stored", &self.instances_stored),
            ("identical", &self.instances_identical),
            ("replaced", &self.instances_replaced),
            ("failed", &self.instances_failed),
        ] {
            let _ = writeln!(
                out,
                "simgate_instances_received_total{{outcome=\"{outcome}\"}} {}",
                load(counter)
            );
        }
        let _ = writeln!(
            out,
            "# HELP simgate_received_bytes_total Data set bytes received."
        );
        let _ = writeln!(out, "# TYPE simgate_received_bytes_total counter");
        let _ = writeln!(
            out,
            "simgate_received_bytes_total {}",
            load(&self.bytes_received)
        );
        let _ = writeln!(
            out,
            "# HELP simgate_rejections_total Refused associations and instances by cause."
        );
        let _ = writeln!(out, "# TYPE simgate_rejections_total counter");
        for (cause, count) in self
            .rejections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "simgate_rejections_total{{cause=\"{}\"}} {count}",
                label(cause)
            );
        }
        let _ = writeln!(
            out,
            "# HELP simgate_store_seconds Time from the last data PDV to the instance stored and indexed."
        );
        let _ = writeln!(out, "# TYPE simgate_store_seconds histogram");
        for (bucket, bound) in self.latency_buckets.iter().zip(LATENCY_BUCKETS) {
            let _ = writeln!(
                out,
                "simgate_store_seconds_bucket{{le=\"{bound}\"}} {}",
                load(bucket)
            );
        }
        let count = load(&self.latency_count);
        let _ = writeln!(out, "simgate_store_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "simgate_store_seconds_sum {}",
            load(&self.latency_sum_micros) as f64 / 1e6
        );
        let _ = writeln!(out, "simgate_store_seconds_count {count}");
        let _ = writeln!(
            out,
            "# HELP simgate_forward_outcomes_total Forward attempts by destination and outcome."
        );
        let _ = writeln!(out, "# TYPE simgate_forward_outcomes_total counter");
        for ((destination, outcome), count) in self
            .forward_outcomes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "simgate_forward_outcomes_total{{destination=\"{}\",outcome=\"{}\"}} {count}",
                label(destination),
                label(outcome)
            );
        }
        gauges.render(&mut out);
        out
    }
}

/// Figures read from the database at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    /// Per configured destination: instances waiting, and the oldest one's age in seconds.
    pub queues: Vec<(String, i64, f64)>,
    /// Studies per naming status (every status listed, zero included).
    pub studies: Vec<(StudyStatus, i64)>,
}

impl Gauges {
    /// From the index's figures; destinations with nothing queued show zero.
    pub fn new(
        destinations: &[DestinationConfig],
        depth: &[QueueDepth],
        statuses: &[(StudyStatus, i64)],
    ) -> Gauges {
        let queues = destinations
            .iter()
            .map(|d| {
                let row = depth.iter().find(|q| q.destination == d.name);
                let age = row
                    .and_then(|q| q.oldest_queued_at.as_deref())
                    .and_then(crate::clock::elapsed_since)
                    .map(|a| a.as_secs_f64())
                    .unwrap_or(0.0);
                (d.name.clone(), row.map(|q| q.waiting).unwrap_or(0), age)
            })
            .collect();
        let studies = [
            StudyStatus::Conforming,
            StudyStatus::NeedsReason,
            StudyStatus::ReasonDocumented,
        ]
        .into_iter()
        .map(|status| {
            let count = statuses
                .iter()
                .find(|(s, _)| *s == status)
                .map(|(_, c)| *c)
                .unwrap_or(0);
            (status, count)
        })
        .collect();
        Gauges { queues, studies }
    }

    fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP simgate_forward_queue_depth Instances waiting per destination."
        );
        let _ = writeln!(out, "# TYPE simgate_forward_queue_depth gauge");
        for (destination, waiting, _) in &self.queues {
            let _ = writeln!(
                out,
                "simgate_forward_queue_depth{{destination=\"{}\"}} {waiting}",
                label(destination)
            );
        }
        let _ = writeln!(
            out,
            "# HELP simgate_forward_queue_oldest_age_seconds Age of the oldest waiting instance per destination."
        );
        let _ = writeln!(out, "# TYPE simgate_forward_queue_oldest_age_seconds gauge");
        for (destination, _, age) in &self.queues {
            let _ = writeln!(
                out,
                "simgate_forward_queue_oldest_age_seconds{{destination=\"{}\"}} {age}",
                label(destination)
            );
        }
        let _ = writeln!(out, "# HELP simgate_studies Studies by naming status.");
        let _ = writeln!(out, "# TYPE simgate_studies gauge");
        for (status, count) in &self.studies {
            let _ = writeln!(
                out,
                "simgate_studies{{status=\"{}\"}} {count}",
                status.as_str()
            );
        }
    }
}

/// Escapes a label value (backslash, quote, newline).
pub fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
