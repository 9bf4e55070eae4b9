//! Mitsubishi MELSEC PLCs (FX5U/FX5UC/FX5UJ, Q, L, iQ-R) over the MC protocol (SLMP) in 3E
//! and 4E binary frames, read only.
//!
//! The protocol is written here rather than taken from a crate: no maintained Rust MC client
//! exists, and the part the agent needs (batch read and random read) is small. The pieces
//! follow the S7 source's shape: [`address`] parses what the engineer writes in GX Works,
//! [`frame`] builds and checks the wire frames without I/O, [`decode`] turns words into
//! values. On top of these: [`config`] (`[[melsec]]`), [`plan`] (batch and random reads),
//! [`client`] (the device task) and [`probe`] (`shopfloor probe melsec://…`).

pub mod address;
pub mod client;
pub mod config;
pub mod decode;
pub mod frame;
pub mod plan;
pub mod probe;
