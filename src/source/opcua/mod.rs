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

//! # Wiring into the agent (after the config restructuring)
//!
//! Not done in this folder, because the section table and start-up are being moved:
//!
//! - **Section table** (`src/agent/config.rs`): `[[opcua]]` → `Vec<config::OpcuaServer>`, an
//!   array section read with plain serde (no shared part to flatten). Known keys for the
//!   did-you-mean: `OpcuaServer` at `opcua`, `OpcuaGroup` at `opcua.group`, `OpcuaNode` at
//!   `opcua.group.node` (plus the `deadband` table's `absolute` / `percent`, and the secret's
//!   `env` / `file`).
//! - **Checks**: each server's [`config::OpcuaServer::check`] with a
//!   [`config::Register`] of the `[[machine]]` and `[[meter]]` ids; every
//!   [`config::ConfigProblem`]'s path is relative to `["opcua", i]`. The server `id`s join the
//!   Modbus device and MQTT broker ids in the one uniqueness check (they name devices in
//!   `DeviceUp`/`DeviceDown`), and [`config::OpcuaServer::signals`] joins the check that a
//!   signal keeps one type across devices.
//! - **Start-up** (`agent::run`, beside the Modbus and MQTT tasks, before `events_tx` is
//!   dropped): for each server,
//!   `tasks.spawn(opcua::client::run(server.clone(), data_dir.join("opcua/pki"),
//!   events_tx.clone(), metrics.clone(), shutdown.clone()))`.
//! - **Queue policy** (`src/queue.rs`): `EVENTS_FROM_OPCUA`, capacity `EVENT_QUEUE`,
//!   `WhenFull::Block` (a data change is not sent again), and
//!   `const _: () = crate::queue::EVENTS_FROM_OPCUA.sent_as(WhenFull::Block);` in
//!   [`client`]'s `send`.
//! - **Liveness and time order in the engine**: the engine takes a machine's last data as the
//!   newest sample timestamp and makes it offline after `offline_after` (default 10 s)
//!   without one. This source stamps values with the server's timestamps (source, else
//!   server), and writes a value once per change: a value that held still for an hour keeps
//!   its hour-old timestamp, whether subscribed or polled. So a machine whose OPC UA values
//!   hold still goes offline in the engine while its server is healthy, and a change that
//!   happened before the machine's newest sample reaches the engine out of time order. Both
//!   need the engine's side: proposed, a `SourceEvent::Alive { target, at }` the source sends
//!   for its targets on every Publish response and every Read (data or not), counted by the
//!   engine as data for `offline_after`, and the engine evaluating state rules at
//!   `max(sample time, last time)` per machine. Until then an OPC UA machine's states are not
//!   to be trusted; the `signal` lines are.

pub mod client;
pub mod config;
pub mod node_id;
pub mod probe;
pub mod value;
