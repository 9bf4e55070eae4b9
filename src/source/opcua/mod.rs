//! OPC UA servers (`[[opcua]]`): CNC controllers (SINUMERIK, Heidenhain), S7-1200/1500 PLCs,
//! Beckhoff and most new machines. One task per server endpoint subscribes to (or polls) the
//! configured nodes and turns their values into [`Sample`](crate::model::Sample)s, like a Modbus
//! device's fields.
//!
//! # The stack: `async-opcua` 0.19, client only
//!
//! Chosen over writing a client (OPC UA binary encoding, secure channel, sessions and the
//! subscription state machine are far more than this source needs to own) and over the older
//! `opcua` crate (locka99/opcua, whose maintainers moved to this one). Figures from December
//! 2026, measured on the project's 2-core build machine:
//!
//! - **Licence**: MPL-2.0, file-level copyleft, the terms Shopfloor already accepts for
//!   `serialport`: used unmodified from crates.io it puts no terms on Shopfloor's code. Allowed
//!   per crate in `deny.toml` (seven crates: `async-opcua`, `-client`, `-core`, `-crypto`,
//!   `-macros`, `-nodes`, `-types`).
//! - **Maintenance**: FreeOpcUa/async-opcua, the continuation of locka99/opcua by its later
//!   maintainers; 0.19.0 is the newest release; 140 commits in 2025 and 56 in the first half of
//!   2026 (the newest read: 2026-06-19), three to five active committers, issues answered.
//! - **What it pulls in** (`features = ["client"]`, no defaults): 78 new packages in
//!   `Cargo.lock` (259 → 337), 71 of them built for a Linux gateway (`cargo tree -e
//!   normal,build`: 181 → 252 crates). Crypto is RustCrypto's (`rsa`, `aes`, `cbc`, `sha1`,
//!   `sha2`, `hmac`, `x509-cert`): **no OpenSSL, no aws-lc, no second rustls or ring**, so
//!   `cargo deny check licenses bans sources` passes with the seven MPL exceptions and nothing
//!   else; duplicate versions (warned, not refused) go from 3 to 8 (`base64`, `foldhash`,
//!   `getrandom`, `hashbrown`, `rand_core` are new ones).
//! - **Build time**: the 82 new compile units (crates and build scripts) take 46 s of compile
//!   time in a debug build (`cargo build --timings`: `async-opcua-types` 12.5 s,
//!   `async-opcua-client` 8.6 s, the rest under 1.5 s each); it also asks tokio for `full`,
//!   which rebuilds tokio and what depends on it once. `cargo build --lib` after adding it:
//!   63 s wall on the shared 2 cores, Shopfloor's own crate included (16 s).
//! - **What can be turned off**: everything except the client: `server`, `base-server`,
//!   `generated-address-space` (the large generated core namespace), `json`, `xml`,
//!   `discovery-server-registration` are off. What cannot: `tokio/full`, `serde_yaml` (the
//!   client's config file reader, unused here: the agent builds the client in code), `regex`
//!   (`async-opcua-nodes`), `chrono` (OPC UA's `DateTime`, converted to `jiff` at the edge).
//! - **Advisories to know**: `rsa` 0.9 has RUSTSEC-2023-0071 (the Marvin timing attack, no
//!   fixed release). The client uses its application private key only with a signing or
//!   encrypting security policy; an attacker would have to send the agent many crafted
//!   messages and time its answers from the plant network. It is accepted in `deny.toml` with
//!   that reason; on an untrusted network put the servers behind a VPN. `serde_yaml` is
//!   archived upstream (no advisory yet as far as known).
//!
//! # What this module does itself
//!
//! The parts that need no server are pure and tested without a socket: [`node_id`] parses the
//! node ids of the config in every standard text form; [`value`] maps the server's variants,
//! status codes and timestamps to [`Value`](crate::model::Value)s (types, arrays, the status
//! policy and the timestamp choice are documented there).
//!
//! # Data contract: `<signal>_quality`
//!
//! An Uncertain value is written, and marked: beside the signal's field, a string field
//! `<signal>_quality = "uncertain"` on the same `signal` line (the source sends it as one more
//! sample of the same target and timestamp). Absent means good: Good values add nothing, so
//! Modbus and MQTT lines, and OPC UA lines of healthy machines, do not change. Chosen over a
//! `quality` tag because a `signal` line carries every signal of a machine at one instant: a
//! tag would mark all of them for one uncertain value, and would move a machine's series to
//! another series key whenever one value's quality changed. `check` refuses a signal whose
//! name ends in `_quality` next to an OPC UA node of the same target, so the names cannot
//! clash. DESIGN.md's data-contract table gets the row `signal | … | <signal>_quality (string,
//! only "uncertain", absent when good)`; the wider change, a `quality` in
//! [`Sample`](crate::model::Sample) that the engine writes, is for the ground floor.

//! # Wiring into the agent
//!
//! `[[opcua]]` is a row of the section table (`src/agent/config.rs`, checked by
//! [`config::check_servers`], which also merges a `profile`'s groups first and reads each
//! group's `nodes_file`, a CSV tag list, with [`nodes_file`]); the agent starts
//! one [`client::run`] task per server; its events go through `queue::EVENTS_FROM_OPCUA`
//! (policy Block: a data change is the only copy of its value).
//!
//! # Liveness and time order
//!
//! The source stamps values with the server's timestamps (source, else server) and writes a
//! value once per change, so a value that held still for an hour keeps its hour-old timestamp.
//! A live session therefore sends [`SourceEvent::Alive`](crate::model::SourceEvent::Alive) for
//! its machines and meters as often as its fastest group publishes or polls (100 ms to 2 s),
//! and right after a session's first values (which carry the times they last changed): the
//! engine counts it as data for `offline_after`, so a machine goes offline as soon after its
//! server as a polled device's machine does, and no sooner. After an outage (a server
//! restart, a network cut) the new session's first values are often the ones already written
//! (same value, same timestamp: not written again), so no sample would bring the machine back:
//! the session's `Alive` does, and the engine takes the machine back, stamped then, in the
//! state its latest values imply (tests/opcua.rs
//! `a_machine_whose_values_stand_still_across_a_server_restart_comes_back_online`).
//! tests/plc_timeline.rs checks that
//! an OPC UA machine's states, parts and time model equal the same timeline's on Modbus.

pub mod client;
pub mod config;
pub mod node_id;
pub mod nodes_file;
pub mod probe;
pub mod subscription;
pub mod value;
