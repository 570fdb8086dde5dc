//! simgate: a DICOM gateway for radiation oncology. It receives instances from CT simulators
//! (C-ECHO, C-STORE SCP), stores each durably before acknowledging it, judges each study's
//! name against a standardized nomenclature, and forwards every instance unchanged to the
//! treatment planning system.
//!
//! The data path, in module order: [`scp`] (listener, association, receive) -> [`spool`]
//! (durable file) -> [`service`] (record the instance, its [`naming`] verdict and its queue
//! rows through [`store`]) -> response; then [`forward`] (queue -> destination). [`dicom`] is
//! the vocabulary both directions share; [`http`] and [`cli`] are front ends over [`service`]
//! and [`store`]; [`app`] puts it together. See ARCHITECTURE.md.

pub mod app;
pub mod backup;
pub mod cli;
pub mod clock;
pub mod commitment;
pub mod config;
pub mod control;
pub mod dicom;
pub mod doctor;
pub mod forward;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod naming;
pub mod output;
pub mod query;
pub mod safety;
pub mod scp;
pub mod service;
pub mod spool;
pub mod store;
pub mod tls;

/// An error and all its causes on one line, for logs and messages.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
