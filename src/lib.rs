//! simgate: a DICOM gateway for radiation oncology. It receives instances from CT simulators
//! (C-ECHO, C-STORE SCP), stores each durably before acknowledging it, and indexes it in SQLite.
//!
//! The data path, in module order: [`server`] (listener) -> [`association`] (PDUs to DIMSE
//! messages) -> [`dimse`] (command sets) -> [`receive`] (one C-STORE: [`scan`], [`header`],
//! [`spool`], [`store`]) -> response. See ARCHITECTURE.md.

pub mod association;
pub mod cli;
pub mod config;
pub mod dimse;
pub mod forward;
pub mod header;
pub mod http;
pub mod metrics;
pub mod naming;
pub mod receive;
pub mod rules;
pub mod scan;
pub mod server;
pub mod sop_classes;
pub mod spool;
pub mod store;
pub mod synth;
