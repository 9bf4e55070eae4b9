//! Shopfloor: an edge agent for metal-products workshops.
//!
//! The module tree follows the pipeline in DESIGN.md. On the ground floor, [`model`] holds the
//! shared vocabulary (values, samples, machine states, sectors) and [`line_protocol`] the format
//! and the names of every line written to the store. Above them, [`config`] describes the site,
//! [`source`] reads machines, [`engine`] turns samples into states and indicators, [`sink`]
//! carries records to the store through a disk spool, and [`sim`] simulates a workshop for the
//! demo and tests. [`agent`] wires them together for `shopfloor run` and `shopfloor demo`.
//! [`county`] is the county's side: every enterprise's indicators from the store against the
//! programme's targets.

pub mod agent;
pub mod common;
pub mod config;
pub mod county;
pub mod engine;
pub mod line_protocol;
pub mod metrics;
pub mod model;
pub mod queue;
pub mod shutdown;
pub mod sim;
pub mod sink;
pub mod source;
pub mod web;

/// rustls needs one process-wide crypto provider; Shopfloor uses ring (see Cargo.toml).
/// Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
