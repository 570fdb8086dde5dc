//! Storage Commitment Push Model SCP (PS3.4 Annex J). A simulator asks, by N-ACTION, whether
//! simgate has taken responsibility for a list of instances; simgate records the request at
//! once (it survives restarts), answers the N-ACTION, and sends an N-EVENT-REPORT saying which
//! instances are committed and which failed, with a Failure Reason each. The report goes on
//! the requester's association when it is still open (the [`scp`](crate::scp) session sends it
//! there), otherwise [`reporter`] sends it on a new association, retried with backoff.
//!
//! "Committed" means durably stored and indexed (`committed_when = "stored"`), or also
//! delivered to the named destinations (`"delivered"`).

pub mod reporter;

use std::collections::HashSet;
use std::sync::Mutex;

use dicom_core::VR;
use dicom_core::value::PrimitiveValue;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use crate::config::{CommittedWhen, StorageCommitmentConfig};
use crate::dicom::dataset;
use crate::dicom::dimse::Status;
use crate::dicom::uid::is_valid_uid;
use crate::store::commitment::{HeldInstance, PendingCommitment};
use crate::store::{Db, StoreError};

/// Failure Reason (0008,1197) values (PS3.4 J.3.2.1.1.3 and PS3.7 C).
pub mod failure_reason {
    /// Processing failure: held once but no longer, or delivery to a destination failed.
    pub const PROCESSING_FAILURE: u16 = 0x0110;
    /// No such object instance: never received.
    pub const NO_SUCH_OBJECT_INSTANCE: u16 = 0x0112;
    /// Class/instance conflict: received under another SOP class.
    pub const CLASS_INSTANCE_CONFLICT: u16 = 0x0119;
}

/// Referenced SOP Sequence items one request may carry; a CT series of a few thousand
/// slices fits many times over.
pub const MAX_ITEMS: usize = 50_000;

/// What an N-ACTION-RQ's data set asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub transaction_uid: String,
    /// (Referenced SOP Class UID, Referenced SOP Instance UID)
    pub items: Vec<(String, String)>,
}

impl Request {
    /// Reads the Transaction UID and Referenced SOP Sequence; a status and comment when the
    /// request cannot be taken.
    pub fn from_object(object: &InMemDicomObject) -> Result<Request, (Status, String)> {
        let transaction_uid = dataset::text(object, tags::TRANSACTION_UID);
        if !is_valid_uid(&transaction_uid) {
            return Err((
                Status::MISSING_ATTRIBUTE,
                "Transaction UID (0008,1195) is missing or not a UID".into(),
            ));
        }
        let referenced = dataset::items(object, tags::REFERENCED_SOP_SEQUENCE);
        if referenced.is_empty() {
            return Err((
                Status::MISSING_ATTRIBUTE,
                "Referenced SOP Sequence (0008,1199) is missing or empty".into(),
            ));
        }
        if referenced.len() > MAX_ITEMS {
            return Err((
                Status::RESOURCE_LIMITATION,
                format!("more than {MAX_ITEMS} instances in one request"),
            ));
        }
        let items = referenced
            .iter()
            .map(|item| {
                (
                    dataset::text(item, tags::REFERENCED_SOP_CLASS_UID),
                    dataset::text(item, tags::REFERENCED_SOP_INSTANCE_UID),
                )
            })
            .collect();
        Ok(Request {
            transaction_uid,
            items,
        })
    }
}

/// The verdict on one referenced instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Committed,
    Failed(u16),
    /// Held, but not yet delivered where `committed_when = "delivered"` asks.
    Undecided,
}

/// Judges one referenced instance against what the index holds of it.
pub fn judge(
    sop_class_uid: &str,
    held: Option<&HeldInstance>,
    rule: &StorageCommitmentConfig,
) -> Outcome {
    let Some(held) = held else {
        return Outcome::Failed(failure_reason::NO_SUCH_OBJECT_INSTANCE);
    };
    if held.sop_class_uid != sop_class_uid {
        return Outcome::Failed(failure_reason::CLASS_INSTANCE_CONFLICT);
    }
    match rule.committed_when {
        CommittedWhen::Stored if held.file_deleted => {
            Outcome::Failed(failure_reason::PROCESSING_FAILURE)
        }
        CommittedWhen::Stored => Outcome::Committed,
        CommittedWhen::Delivered => {
            let relevant = held.deliveries.iter().filter(|(destination, _)| {
                rule.delivered_to.is_empty() || rule.delivered_to.contains(destination)
            });
            let mut outcome = Outcome::Committed;
            for (_, state) in relevant {
                match state.as_str() {
                    "sent" => {}
                    "dead" | "rejected" => {
                        return Outcome::Failed(failure_reason::PROCESSING_FAILURE);
                    }
                    _ => outcome = Outcome::Undecided,
                }
            }
            outcome
        }
    }
}

/// What one N-EVENT-REPORT says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub request_id: i64,
    pub transaction_uid: String,
    pub committed: Vec<(String, String)>,
    /// (class, instance, Failure Reason)
    pub failed: Vec<(String, String, u16)>,
}

impl Report {
    /// Event Type ID: 1 when every instance is committed, 2 when some failed.
    pub fn event_type_id(&self) -> u16 {
        if self.failed.is_empty() { 1 } else { 2 }
    }

    /// The event information data set (PS3.4 J.3.3.1).
    pub fn to_object(&self, retrieve_ae_title: &str) -> InMemDicomObject {
        let referenced = |class: &str, instance: &str| {
            InMemDicomObject::from_element_iter([
                dataset::element(tags::REFERENCED_SOP_CLASS_UID, VR::UI, class),
                dataset::element(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, instance),
            ])
        };
        let mut object = InMemDicomObject::new_empty();
        object.put(dataset::element(
            tags::TRANSACTION_UID,
            VR::UI,
            &self.transaction_uid,
        ));
        if !self.committed.is_empty() {
            object.put(dataset::element(
                tags::RETRIEVE_AE_TITLE,
                VR::AE,
                retrieve_ae_title,
            ));
            object.put(dataset::sequence(
                tags::REFERENCED_SOP_SEQUENCE,
                self.committed
                    .iter()
                    .map(|(class, instance)| referenced(class, instance))
                    .collect(),
            ));
        }
        if !self.failed.is_empty() {
            object.put(dataset::sequence(
                tags::FAILED_SOP_SEQUENCE,
                self.failed
                    .iter()
                    .map(|(class, instance, reason)| {
                        let mut item = referenced(class, instance);
                        item.put(dicom_core::DataElement::new(
                            tags::FAILURE_REASON,
                            VR::US,
                            PrimitiveValue::from(*reason),
                        ));
                        item
                    })
                    .collect(),
            ));
        }
        object
    }
}

/// The report on a pending request, or `None` while some instance is undecided.
pub fn decide(
    db: &Db<'_>,
    request: &PendingCommitment,
    rule: &StorageCommitmentConfig,
) -> Result<Option<Report>, StoreError> {
    let mut report = Report {
        request_id: request.id,
        transaction_uid: request.transaction_uid.clone(),
        committed: Vec::new(),
        failed: Vec::new(),
    };
    for (class, instance) in &request.items {
        let held = db.held_instance(instance)?;
        match judge(class, held.as_ref(), rule) {
            Outcome::Committed => report.committed.push((class.clone(), instance.clone())),
            Outcome::Failed(reason) => {
                report
                    .failed
                    .push((class.clone(), instance.clone(), reason))
            }
            Outcome::Undecided => return Ok(None),
        }
    }
    Ok(Some(report))
}

/// Requests whose report a live association is delivering; the reporter leaves them alone.
#[derive(Debug, Default)]
pub struct Claims(Mutex<HashSet<i64>>);

impl Claims {
    pub fn claim(&self, id: i64) {
        if let Ok(mut claimed) = self.0.lock() {
            claimed.insert(id);
        }
    }

    pub fn release(&self, id: i64) {
        if let Ok(mut claimed) = self.0.lock() {
            claimed.remove(&id);
        }
    }

    pub fn is_claimed(&self, id: i64) -> bool {
        self.0.lock().is_ok_and(|claimed| claimed.contains(&id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(committed_when: CommittedWhen, delivered_to: &[&str]) -> StorageCommitmentConfig {
        StorageCommitmentConfig {
            committed_when,
            delivered_to: delivered_to.iter().map(|s| s.to_string()).collect(),
            requesters: Vec::new(),
        }
    }

    fn held(class: &str, deliveries: &[(&str, &str)]) -> HeldInstance {
        HeldInstance {
            sop_class_uid: class.into(),
            file_deleted: false,
            deliveries: deliveries
                .iter()
                .map(|(d, s)| (d.to_string(), s.to_string()))
                .collect(),
        }
    }

    #[test]
    fn instances_are_judged_by_what_the_index_holds() {
        let stored = rule(CommittedWhen::Stored, &[]);
        assert_eq!(
            judge("1.2", None, &stored),
            Outcome::Failed(failure_reason::NO_SUCH_OBJECT_INSTANCE)
        );
        assert_eq!(
            judge("1.2", Some(&held("1.3", &[])), &stored),
            Outcome::Failed(failure_reason::CLASS_INSTANCE_CONFLICT)
        );
        let pending = held("1.2", &[("tps", "pending"), ("pacs", "sent")]);
        assert_eq!(judge("1.2", Some(&pending), &stored), Outcome::Committed);
        let delivered = rule(CommittedWhen::Delivered, &[]);
        assert_eq!(judge("1.2", Some(&pending), &delivered), Outcome::Undecided);
        let to_pacs = rule(CommittedWhen::Delivered, &["pacs"]);
        assert_eq!(judge("1.2", Some(&pending), &to_pacs), Outcome::Committed);
        let dead = held("1.2", &[("tps", "dead")]);
        assert_eq!(
            judge("1.2", Some(&dead), &delivered),
            Outcome::Failed(failure_reason::PROCESSING_FAILURE)
        );
        let mut gone = held("1.2", &[]);
        gone.file_deleted = true;
        assert_eq!(
            judge("1.2", Some(&gone), &stored),
            Outcome::Failed(failure_reason::PROCESSING_FAILURE)
        );
    }

    #[test]
    fn a_request_needs_a_transaction_and_references() {
        let mut object = InMemDicomObject::new_empty();
        assert_eq!(
            Request::from_object(&object).map_err(|e| e.0),
            Err(Status::MISSING_ATTRIBUTE)
        );
        object.put(dataset::element(tags::TRANSACTION_UID, VR::UI, "1.2.3"));
        assert_eq!(
            Request::from_object(&object).map_err(|e| e.0),
            Err(Status::MISSING_ATTRIBUTE)
        );
        let report = Report {
            request_id: 1,
            transaction_uid: "1.2.3".into(),
            committed: vec![("1.2.840.10008.5.1.4.1.1.2".into(), "1.2.3.4".into())],
            failed: vec![],
        };
        let request = Request::from_object(&report.to_object("SIMGATE")).expect("request");
        assert_eq!(request.items, report.committed);
    }
}
