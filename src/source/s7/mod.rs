//! Siemens S7 PLCs (S7-200 SMART, S7-300/400, S7-1200, S7-1500, LOGO!) over ISO-on-TCP,
//! read only.
//!
//! The protocol is written here rather than taken from a crate: no maintained Rust S7 client
//! exists, and the part the agent needs (connect, negotiate the PDU, Read Var) is small. The
//! pieces follow the Modbus source's shape: [`address`] parses what the engineer writes,
//! [`frame`] builds and checks the wire frames without I/O, [`decode`] turns bytes into values.
//! The device actor, request planner and config section come on top of these.

pub mod address;
pub mod config;
pub mod decode;
pub mod frame;
pub mod plan;
