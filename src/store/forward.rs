//! The SQL side of store-and-forward: queue rows written with each indexed instance, the
//! forwarders' reads and outcome updates, the queue views and actions of the CLI, and the
//! retention of spool files.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use super::StoreError;
use super::writer::IndexedInstance;
use crate::config::DestinationConfig;

/// Queues an instance for every destination that accepts it. A re-queued row (the instance was
/// replaced) becomes pending again with a new generation.
pub fn enqueue(
    conn: &Connection,
    destinations: &[DestinationConfig],
    instance: &IndexedInstance,
) -> rusqlite::Result<usize> {
    let h = &instance.header;
    let mut queued = 0;
    for destination in destinations {
        if !destination.accepts(&h.sop_class_uid, &h.modality, &instance.calling_ae_title) {
            continue;
        }
        queued += conn
            .prepare_cached(
                "INSERT INTO forward_queue (destination, sop_instance_uid, study_instance_uid, series_instance_uid,
                     state, queued_at)
                 VALUES (?1, ?2, ?3, ?4, 'pending', ?5)
                 ON CONFLICT (destination, sop_instance_uid) DO UPDATE SET
                     state = 'pending', generation = generation + 1, attempts = 0, next_attempt_at = NULL,
                     last_error = '', last_status = NULL, queued_at = excluded.queued_at, sent_at = NULL",
            )?
            .execute(params![
                destination.name,
                h.sop_instance_uid,
                h.study_instance_uid,
                h.series_instance_uid,
                instance.received_at
            ])?;
    }
    Ok(queued)
}

/// Rows a previous run left in flight go back to pending (delivery is at least once).
pub fn requeue_in_flight(conn: &Connection) -> Result<usize, StoreError> {
    Ok(conn.execute(
        "UPDATE forward_queue SET state = 'pending' WHERE state = 'in-flight'",
        [],
    )?)
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

/// The next due rows of a destination in arrival order, marked in flight.
pub fn take_due(
    conn: &Connection,
    destination: &str,
    now: &str,
    limit: usize,
) -> Result<Vec<QueueItem>, StoreError> {
    let items: Vec<QueueItem> = conn
        .prepare_cached(
            "SELECT q.id, q.generation, q.attempts, q.sop_instance_uid, q.series_instance_uid, i.sop_class_uid,
                    i.transfer_syntax_uid, i.file_path
             FROM forward_queue q JOIN instances i USING (sop_instance_uid)
             WHERE q.destination = ?1 AND q.state = 'pending' AND (q.next_attempt_at IS NULL OR q.next_attempt_at <= ?2)
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
    let mut mark = conn.prepare_cached(
        "UPDATE forward_queue SET state = 'in-flight' WHERE id = ?1 AND state = 'pending'",
    )?;
    for item in &items {
        mark.execute([item.id])?;
    }
    Ok(items)
}

/// Gives rows taken but not attempted back (the forwarder is stopping or backing off).
pub fn release(conn: &Connection, ids: &[i64]) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(
        "UPDATE forward_queue SET state = 'pending' WHERE id = ?1 AND state = 'in-flight'",
    )?;
    for id in ids {
        stmt.execute([id])?;
    }
    Ok(())
}

/// How one attempt ended.
#[derive(Debug, Clone)]
pub enum Attempt {
    Sent {
        status: u16,
        warning: String,
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

/// Records an attempt. A row re-queued meanwhile (newer generation) stays pending.
pub fn record_attempt(
    conn: &Connection,
    item: &QueueItem,
    attempt: &Attempt,
    now: &str,
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached(
        "UPDATE forward_queue SET state = ?3, attempts = attempts + 1, last_status = ?4, last_error = ?5,
             next_attempt_at = ?6, sent_at = ?7
         WHERE id = ?1 AND generation = ?2",
    )?;
    match attempt {
        Attempt::Sent { status, warning } => stmt.execute(params![
            item.id,
            item.generation,
            "sent",
            status,
            warning,
            None::<String>,
            now
        ])?,
        Attempt::Retry {
            status,
            error,
            next_attempt_at,
        } => stmt.execute(params![
            item.id,
            item.generation,
            "pending",
            status,
            error,
            next_attempt_at,
            None::<String>
        ])?,
        Attempt::Dead { status, error } => stmt.execute(params![
            item.id,
            item.generation,
            "dead",
            status,
            error,
            None::<String>,
            None::<String>
        ])?,
    };
    // A newer generation was queued while this one was in flight: send it again.
    conn.prepare_cached("UPDATE forward_queue SET state = 'pending' WHERE id = ?1 AND generation <> ?2 AND state = 'in-flight'")?
        .execute(params![item.id, item.generation])?;
    Ok(())
}

/// When the next pending row of a destination becomes due (None: nothing pending).
pub fn next_due(conn: &Connection, destination: &str) -> Result<Option<String>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT min(coalesce(next_attempt_at, '')) FROM forward_queue WHERE destination = ?1 AND state = 'pending'",
        )?
        .query_row([destination], |r| r.get::<_, Option<String>>(0))
        .optional()?
        .flatten())
}

/// Queue figures of one destination.
#[derive(Debug, Clone, Serialize, Default)]
pub struct DestinationQueue {
    pub destination: String,
    pub pending: i64,
    pub in_flight: i64,
    pub sent: i64,
    pub dead: i64,
    /// Queued time of the oldest row not yet sent (pending, in flight or dead).
    pub oldest_waiting_since: Option<String>,
    pub last_error: String,
}

pub fn summary(
    conn: &Connection,
    destination: Option<&str>,
) -> Result<Vec<DestinationQueue>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT destination,
                count(*) FILTER (WHERE state = 'pending'), count(*) FILTER (WHERE state = 'in-flight'),
                count(*) FILTER (WHERE state = 'sent'), count(*) FILTER (WHERE state = 'dead'),
                min(queued_at) FILTER (WHERE state <> 'sent'),
                (SELECT last_error FROM forward_queue q2 WHERE q2.destination = q.destination AND last_error <> ''
                   ORDER BY coalesce(sent_at, next_attempt_at, queued_at) DESC LIMIT 1)
         FROM forward_queue q WHERE (?1 IS NULL OR destination = ?1) GROUP BY destination ORDER BY destination",
    )?;
    let rows = stmt.query_map([destination], |r| {
        Ok(DestinationQueue {
            destination: r.get(0)?,
            pending: r.get(1)?,
            in_flight: r.get(2)?,
            sent: r.get(3)?,
            dead: r.get(4)?,
            oldest_waiting_since: r.get(5)?,
            last_error: r.get::<_, Option<String>>(6)?.unwrap_or_default(),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Queue rows of one state, per study and destination.
#[derive(Debug, Clone, Serialize)]
pub struct StudyQueue {
    pub destination: String,
    pub study_instance_uid: String,
    pub state: String,
    pub instances: i64,
    pub oldest_queued_at: String,
    pub last_error: String,
}

pub fn by_study(
    conn: &Connection,
    destination: Option<&str>,
    state: Option<&str>,
) -> Result<Vec<StudyQueue>, StoreError> {
    study_queue_rows(
        conn,
        "SELECT destination, study_instance_uid, state, count(*), min(queued_at), max(last_error)
         FROM forward_queue WHERE (?1 IS NULL OR destination = ?1) AND (?2 IS NULL OR state = ?2)
         GROUP BY destination, study_instance_uid, state ORDER BY min(queued_at)",
        params![destination, state],
    )
}

fn study_queue_rows(
    conn: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
) -> Result<Vec<StudyQueue>, StoreError> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map(args, |r| {
        Ok(StudyQueue {
            destination: r.get(0)?,
            study_instance_uid: r.get(1)?,
            state: r.get(2)?,
            instances: r.get(3)?,
            oldest_queued_at: r.get(4)?,
            last_error: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// `queue retry`: rows of a study (any state but sent) or all dead rows become pending now.
pub fn retry(
    conn: &Connection,
    study: Option<&str>,
    dead_only: bool,
    destination: Option<&str>,
) -> Result<usize, StoreError> {
    Ok(conn.execute(
        "UPDATE forward_queue SET state = 'pending', attempts = 0, next_attempt_at = NULL, generation = generation + 1
         WHERE state IN ('pending', 'dead') AND (?1 IS NULL OR study_instance_uid = ?1)
           AND (?2 = 0 OR state = 'dead') AND (?3 IS NULL OR destination = ?3)",
        params![study, dead_only, destination],
    )?)
}

/// `forward --study UID --destination NAME`: queue every instance of a study again.
pub fn forward_study(
    conn: &Connection,
    study: &str,
    destination: &str,
    now: &str,
) -> Result<usize, StoreError> {
    Ok(conn.execute(
        "INSERT INTO forward_queue (destination, sop_instance_uid, study_instance_uid, series_instance_uid, state, queued_at)
         SELECT ?2, i.sop_instance_uid, se.study_instance_uid, i.series_instance_uid, 'pending', ?3
         FROM instances i JOIN series se USING (series_instance_uid)
         WHERE se.study_instance_uid = ?1 AND i.file_deleted_at IS NULL
         ORDER BY i.rowid
         ON CONFLICT (destination, sop_instance_uid) DO UPDATE SET
             state = 'pending', generation = generation + 1, attempts = 0, next_attempt_at = NULL,
             last_error = '', queued_at = excluded.queued_at, sent_at = NULL",
        params![study, destination, now],
    )?)
}

/// Spool files that every destination has and that are older than the cutoff.
pub fn expired_files(
    conn: &Connection,
    received_before: &str,
    limit: usize,
) -> Result<Vec<(String, String)>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT i.sop_instance_uid, i.file_path FROM instances i
         WHERE i.file_deleted_at IS NULL AND i.received_at < ?1
           AND NOT EXISTS (SELECT 1 FROM forward_queue q WHERE q.sop_instance_uid = i.sop_instance_uid AND q.state <> 'sent')
         LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![received_before, limit as i64], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn mark_file_deleted(
    conn: &Connection,
    sop_instance_uid: &str,
    now: &str,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE instances SET file_deleted_at = ?2 WHERE sop_instance_uid = ?1",
        params![sop_instance_uid, now],
    )?;
    Ok(())
}

/// Forward state of one study per destination and state.
pub fn study_state(conn: &Connection, study: &str) -> Result<Vec<StudyQueue>, StoreError> {
    study_queue_rows(
        conn,
        "SELECT destination, study_instance_uid, state, count(*), min(queued_at), max(last_error)
         FROM forward_queue WHERE study_instance_uid = ?1
         GROUP BY destination, state ORDER BY destination, state",
        [study],
    )
}

/// Queue depth and age of the oldest waiting row per destination, for /metrics.
pub fn depth(conn: &Connection) -> Result<Vec<(String, i64, Option<String>)>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT destination, count(*) FILTER (WHERE state IN ('pending', 'in-flight')),
                min(queued_at) FILTER (WHERE state IN ('pending', 'in-flight'))
         FROM forward_queue GROUP BY destination",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}
