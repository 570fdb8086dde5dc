//! The forward queue table family: rows written with each indexed instance, the forwarders'
//! reads and outcome updates, and the queue views and actions of the CLI and the web side.

use rusqlite::params;
use serde::Serialize;

use super::instances::IndexedInstance;
use super::{Db, StoreError};

/// Where a queue row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueueState {
    Pending,
    InFlight,
    Sent,
    Dead,
    /// A safety finding this destination holds on: sent only when an admin releases it.
    Held,
    /// The destination takes a series once its geometry check passed (`forward_when`).
    Waiting,
    /// An admin rejected the held instance: never sent.
    Rejected,
}

impl QueueState {
    pub const ALL: [QueueState; 7] = [
        QueueState::Pending,
        QueueState::InFlight,
        QueueState::Sent,
        QueueState::Dead,
        QueueState::Held,
        QueueState::Waiting,
        QueueState::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            QueueState::Pending => "pending",
            QueueState::InFlight => "in-flight",
            QueueState::Sent => "sent",
            QueueState::Dead => "dead",
            QueueState::Held => "held",
            QueueState::Waiting => "waiting",
            QueueState::Rejected => "rejected",
        }
    }

    pub fn parse(text: &str) -> Option<QueueState> {
        QueueState::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl rusqlite::types::FromSql for QueueState {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        let text = value.as_str()?;
        QueueState::parse(text).ok_or_else(|| {
            rusqlite::types::FromSqlError::Other(format!("queue state {text:?}").into())
        })
    }
}

/// One instance to send.
#[derive(Debug, Clone)]
pub struct QueueItem {
    pub id: i64,
    pub generation: i64,
    pub attempts: i64,
    pub sop_instance_uid: String,
    pub series_instance_uid: String,
    pub sop_class_uid: String,
    pub transfer_syntax_uid: String,
    pub file_path: String,
}

/// How a new queue row starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Pending,
    /// Until the series' geometry check.
    Waiting,
    /// The instance carries findings the destination holds on (codes, comma-separated).
    Held {
        codes: String,
    },
}

impl Entry {
    fn state(&self) -> QueueState {
        match self {
            Entry::Pending => QueueState::Pending,
            Entry::Waiting => QueueState::Waiting,
            Entry::Held { .. } => QueueState::Held,
        }
    }

    fn held_for(&self) -> (&str, &str) {
        match self {
            Entry::Held { codes } => (codes, "instance"),
            _ => ("", ""),
        }
    }
}

/// How one attempt ended.
#[derive(Debug, Clone)]
pub enum Attempt {
    Sent {
        status: u16,
        warning: String,
        /// How it was sent when not byte for byte ("sent as X because ... refused Y").
        sent_as: String,
    },
    /// Try again at `next_attempt_at`.
    Retry {
        status: Option<u16>,
        error: String,
        next_attempt_at: String,
    },
    Dead {
        status: Option<u16>,
        error: String,
    },
}

/// Queue figures of one destination.
#[derive(Debug, Clone, Serialize, Default)]
pub struct DestinationQueue {
    pub destination: String,
    pub pending: i64,
    pub in_flight: i64,
    pub sent: i64,
    pub dead: i64,
    pub held: i64,
    pub waiting: i64,
    pub rejected: i64,
    /// Queued time of the oldest row not yet sent (pending, in flight or dead).
    pub oldest_waiting_since: Option<String>,
    pub last_error: String,
}

/// Queue rows of one state, per study and destination.
#[derive(Debug, Clone, Serialize)]
pub struct StudyQueue {
    pub destination: String,
    pub study_instance_uid: String,
    pub state: QueueState,
    pub instances: i64,
    pub oldest_queued_at: String,
    pub last_error: String,
    /// How instances were sent when not byte for byte (empty: all unchanged).
    pub sent_as: String,
    pub patient_name: String,
    pub study_description: String,
}

/// Instances waiting for one destination (pending or in flight), for /metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueDepth {
    pub destination: String,
    pub waiting: i64,
    pub oldest_queued_at: Option<String>,
}

impl Db<'_> {
    /// Queues an instance, filed under `study`, for each destination with the state it starts
    /// in. A row queued again (the instance was replaced) starts again with a new generation.
    /// Returns how many rows were written.
    pub fn enqueue(
        &self,
        destinations: &[(&str, Entry)],
        instance: &IndexedInstance,
        study: &str,
    ) -> Result<usize, StoreError> {
        let h = &instance.header;
        let mut queued = 0;
        for (destination, entry) in destinations {
            let (held_for, held_by) = entry.held_for();
            queued += self
                .conn
                .prepare_cached(
                    "INSERT INTO forward_queue (destination, sop_instance_uid, study_instance_uid,
                         series_instance_uid, state, queued_at, held_for, held_by)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (destination, sop_instance_uid) DO UPDATE SET
                         state = excluded.state, generation = generation + 1, attempts = 0,
                         next_attempt_at = NULL, last_error = '', last_status = NULL,
                         queued_at = excluded.queued_at, sent_at = NULL, sent_as = '',
                         held_for = excluded.held_for, held_by = excluded.held_by",
                )?
                .execute(params![
                    destination,
                    h.sop_instance_uid,
                    study,
                    h.series_instance_uid,
                    entry.state().as_str(),
                    instance.received_at,
                    held_for,
                    held_by,
                ])?;
        }
        if queued > 0 {
            self.touch_queue();
        }
        Ok(queued)
    }

    /// Rows a previous run left in flight go back to pending (delivery is at least once).
    pub fn requeue_in_flight(&self) -> Result<usize, StoreError> {
        let requeued = self.conn.execute(
            "UPDATE forward_queue SET state = 'pending' WHERE state = 'in-flight'",
            [],
        )?;
        if requeued > 0 {
            self.touch_queue();
        }
        Ok(requeued)
    }

    /// Rows of one destination left in flight (its forwarder was stopped) go back to pending.
    pub fn requeue_in_flight_of(&self, destination: &str) -> Result<usize, StoreError> {
        let requeued = self.conn.execute(
            "UPDATE forward_queue SET state = 'pending' \
             WHERE state = 'in-flight' AND destination = ?1",
            [destination],
        )?;
        if requeued > 0 {
            self.touch_queue();
        }
        Ok(requeued)
    }

    /// The next due rows of a destination in arrival order, marked in flight.
    pub fn take_due(
        &self,
        destination: &str,
        now: &str,
        limit: usize,
    ) -> Result<Vec<QueueItem>, StoreError> {
        let items: Vec<QueueItem> = self
            .conn
            .prepare_cached(
                "SELECT q.id, q.generation, q.attempts, q.sop_instance_uid, q.series_instance_uid,
                        i.sop_class_uid, i.transfer_syntax_uid, i.file_path
                 FROM forward_queue q JOIN instances i USING (sop_instance_uid)
                 WHERE q.destination = ?1 AND q.state = 'pending'
                   AND (q.next_attempt_at IS NULL OR q.next_attempt_at <= ?2)
                 ORDER BY q.id LIMIT ?3",
            )?
            .query_map(params![destination, now, limit as i64], |r| {
                Ok(QueueItem {
                    id: r.get(0)?,
                    generation: r.get(1)?,
                    attempts: r.get(2)?,
                    sop_instance_uid: r.get(3)?,
                    series_instance_uid: r.get(4)?,
                    sop_class_uid: r.get(5)?,
                    transfer_syntax_uid: r.get(6)?,
                    file_path: r.get(7)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        let mut mark = self.conn.prepare_cached(
            "UPDATE forward_queue SET state = 'in-flight' WHERE id = ?1 AND state = 'pending'",
        )?;
        for item in &items {
            mark.execute([item.id])?;
        }
        Ok(items)
    }

    /// Gives rows taken but not attempted back (the forwarder is stopping or backing off).
    pub fn release(&self, ids: &[i64]) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "UPDATE forward_queue SET state = 'pending' WHERE id = ?1 AND state = 'in-flight'",
        )?;
        for id in ids {
            stmt.execute([id])?;
        }
        Ok(())
    }

    /// Records an attempt. A row re-queued meanwhile (newer generation) stays pending.
    pub fn record_attempt(
        &self,
        item: &QueueItem,
        attempt: &Attempt,
        now: &str,
    ) -> Result<(), StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "UPDATE forward_queue SET state = ?3, attempts = attempts + 1, last_status = ?4,
                 last_error = ?5, next_attempt_at = ?6, sent_at = ?7, sent_as = ?8
             WHERE id = ?1 AND generation = ?2",
        )?;
        let no_conversion = String::new();
        let (state, status, error, next_attempt_at, sent_at, sent_as) = match attempt {
            Attempt::Sent {
                status,
                warning,
                sent_as,
            } => (
                QueueState::Sent,
                Some(*status),
                warning,
                None,
                Some(now),
                sent_as,
            ),
            Attempt::Retry {
                status,
                error,
                next_attempt_at,
            } => (
                QueueState::Pending,
                *status,
                error,
                Some(next_attempt_at.as_str()),
                None,
                &no_conversion,
            ),
            Attempt::Dead { status, error } => {
                (QueueState::Dead, *status, error, None, None, &no_conversion)
            }
        };
        stmt.execute(params![
            item.id,
            item.generation,
            state.as_str(),
            status,
            error,
            next_attempt_at,
            sent_at,
            sent_as
        ])?;
        // A newer generation was queued while this one was in flight: send it again.
        self.conn
            .prepare_cached(
                "UPDATE forward_queue SET state = 'pending'
                 WHERE id = ?1 AND generation <> ?2 AND state = 'in-flight'",
            )?
            .execute(params![item.id, item.generation])?;
        Ok(())
    }

    /// Queue figures per destination (one, or all).
    pub fn queue_summary(
        &self,
        destination: Option<&str>,
    ) -> Result<Vec<DestinationQueue>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT destination,
                    count(*) FILTER (WHERE state = 'pending'), count(*) FILTER (WHERE state = 'in-flight'),
                    count(*) FILTER (WHERE state = 'sent'), count(*) FILTER (WHERE state = 'dead'),
                    count(*) FILTER (WHERE state = 'held'), count(*) FILTER (WHERE state = 'waiting'),
                    count(*) FILTER (WHERE state = 'rejected'),
                    min(queued_at) FILTER (WHERE state NOT IN ('sent', 'rejected')),
                    (SELECT last_error FROM forward_queue q2
                     WHERE q2.destination = q.destination AND last_error <> ''
                     ORDER BY coalesce(sent_at, next_attempt_at, queued_at) DESC LIMIT 1)
             FROM forward_queue q WHERE (?1 IS NULL OR destination = ?1)
             GROUP BY destination ORDER BY destination",
        )?;
        let rows = stmt.query_map([destination], |r| {
            Ok(DestinationQueue {
                destination: r.get(0)?,
                pending: r.get(1)?,
                in_flight: r.get(2)?,
                sent: r.get(3)?,
                dead: r.get(4)?,
                held: r.get(5)?,
                waiting: r.get(6)?,
                rejected: r.get(7)?,
                oldest_waiting_since: r.get(8)?,
                last_error: r.get::<_, Option<String>>(9)?.unwrap_or_default(),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Queue rows grouped by destination, study and state, oldest first.
    pub fn queue_by_study(
        &self,
        destination: Option<&str>,
        state: Option<QueueState>,
    ) -> Result<Vec<StudyQueue>, StoreError> {
        self.study_queue_rows(
            "SELECT q.destination, q.study_instance_uid, q.state, count(*), min(q.queued_at),
                    max(q.last_error), max(q.sent_as), coalesce(s.patient_name, ''),
                    coalesce(s.study_description, '')
             FROM forward_queue q LEFT JOIN studies s USING (study_instance_uid)
             WHERE (?1 IS NULL OR q.destination = ?1) AND (?2 IS NULL OR q.state = ?2)
             GROUP BY q.destination, q.study_instance_uid, q.state ORDER BY min(q.queued_at)",
            params![destination, state.map(QueueState::as_str)],
        )
    }

    /// Forward state of one study per destination and state.
    pub fn study_queue(&self, study: &str) -> Result<Vec<StudyQueue>, StoreError> {
        self.study_queue_rows(
            "SELECT q.destination, q.study_instance_uid, q.state, count(*), min(q.queued_at),
                    max(q.last_error), max(q.sent_as), coalesce(s.patient_name, ''),
                    coalesce(s.study_description, '')
             FROM forward_queue q LEFT JOIN studies s USING (study_instance_uid)
             WHERE q.study_instance_uid = ?1
             GROUP BY q.destination, q.state ORDER BY q.destination, q.state",
            [study],
        )
    }

    fn study_queue_rows(
        &self,
        sql: &str,
        args: impl rusqlite::Params,
    ) -> Result<Vec<StudyQueue>, StoreError> {
        let mut stmt = self.conn.prepare(sql)?;
        let rows = stmt.query_map(args, |r| {
            Ok(StudyQueue {
                destination: r.get(0)?,
                study_instance_uid: r.get(1)?,
                state: r.get(2)?,
                instances: r.get(3)?,
                oldest_queued_at: r.get(4)?,
                last_error: r.get(5)?,
                sent_as: r.get(6)?,
                patient_name: r.get(7)?,
                study_description: r.get(8)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Rows of a study (any state but sent) or all dead rows become pending now.
    pub fn retry(
        &self,
        study: Option<&str>,
        dead_only: bool,
        destination: Option<&str>,
    ) -> Result<usize, StoreError> {
        let count = self.conn.execute(
            "UPDATE forward_queue SET state = 'pending', attempts = 0, next_attempt_at = NULL,
                 generation = generation + 1
             WHERE state IN ('pending', 'dead') AND (?1 IS NULL OR study_instance_uid = ?1)
               AND (?2 = 0 OR state = 'dead') AND (?3 IS NULL OR destination = ?3)",
            params![study, dead_only, destination],
        )?;
        self.touch_queue();
        Ok(count)
    }

    /// Queues every stored instance of a study for a destination again; held, waiting and
    /// rejected rows stay as they are (a re-send does not go around the safety gate).
    pub fn forward_study(
        &self,
        study: &str,
        destination: &str,
        now: &str,
    ) -> Result<usize, StoreError> {
        let count = self.conn.execute(
            "INSERT INTO forward_queue (destination, sop_instance_uid, study_instance_uid,
                 series_instance_uid, state, queued_at)
             SELECT ?2, i.sop_instance_uid, se.study_instance_uid, i.series_instance_uid, 'pending', ?3
             FROM instances i JOIN series se USING (series_instance_uid)
             WHERE se.study_instance_uid = ?1 AND i.file_deleted_at IS NULL
             ORDER BY i.rowid
             ON CONFLICT (destination, sop_instance_uid) DO UPDATE SET
                 state = 'pending', generation = generation + 1, attempts = 0, next_attempt_at = NULL,
                 last_error = '', queued_at = excluded.queued_at, sent_at = NULL, sent_as = ''
             WHERE state NOT IN ('held', 'waiting', 'rejected')",
            params![study, destination, now],
        )?;
        self.touch_queue();
        Ok(count)
    }

    /// Instances waiting per destination and the oldest one's queued time, for /metrics.
    pub fn queue_depth(&self) -> Result<Vec<QueueDepth>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT destination, count(*) FILTER (WHERE state IN ('pending', 'in-flight')),
                    min(queued_at) FILTER (WHERE state IN ('pending', 'in-flight'))
             FROM forward_queue GROUP BY destination",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(QueueDepth {
                destination: r.get(0)?,
                waiting: r.get(1)?,
                oldest_queued_at: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
