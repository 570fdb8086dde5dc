//! Integration tests: the real simgate binary against DCMTK peers and raw sockets on loopback.

mod backup;
mod browser;
mod cli;
mod commitment;
mod doctor;
mod durability;
mod faults;
mod forward;
mod http;
mod interop;
mod malformed;
mod naming;
mod query;
mod receive;
mod reload;
mod safety;
mod support;
mod systemd;
mod tls;
