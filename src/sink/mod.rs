//! Northbound sinks: records go to the disk spool first, and one writer per output drains the
//! spool to its store from its own cursor.
//!
//! ```text
//! engine ──(spool queue)──> spool task ──> spool.db ──> writer "influx" ──> store
//!                                                   ├─> writer "file"   ──> records.lp
//!                                                   └─> writer "uplink" ──> county broker
//! ```
//!
//! The stage, file by file:
//!
//! | file | what |
//! |---|---|
//! | `stage.rs` | [`start`]: the spool, its task and one writer per output, as the agent and `county ingest` both start them; [`StartError`] |
//! | `spool_task.rs` | the spool task: appends what the queue hands over, trims, expires, syncs, publishes the spool's figures |
//! | `spool.rs` | the spool itself: SQLite, one cursor per output, the byte and age bounds |
//! | `writer.rs` | the writer loop: batches from its cursor, the answers below, back-off, dead letters |
//! | `status.rs` | each output's delivery state (delivering, backlog, failing and why) for the board |
//! | `influx.rs`, `file.rs`, `uplink.rs` | the outputs: each turns a batch into a request and its answer into a [`SendError`] |
//!
//! The engine hands records over in batches and waits for room when the queue is full, so a
//! slow spool holds the sources back instead of losing records (the queue's policy, with every
//! other bounded channel's, is in [`crate::queue`]; how the engine waits is in `engine::run`). The spool task owns the
//! appending connection; every writer has its own reading connection. Delivery is
//! at least once: a batch is acknowledged only after the store said 2xx (or its bad lines were
//! moved to the dead-letter file), and a resent batch overwrites itself in the store (same
//! measurement, tags and timestamp). An HTTP store gets two requests at once while a backlog
//! drains (`writer::IN_FLIGHT`); they may land in either order, and their batch is
//! acknowledged only after both.
//!
//! What a writer does with each answer:
//!
//! | answer | action |
//! |---|---|
//! | 2xx | the lines are delivered |
//! | 400 and other 4xx not below | the batch is bisected and resent in halves until the line(s) the store rejects stand alone; those go to `dead-letter-<output>.lp` with the store's message, the rest is delivered. InfluxDB 1.x answers 400 "partial write" having stored the good lines; resending them overwrites them with themselves |
//! | 401, 403, 404 | a configuration error (token, credentials, org, bucket, database): logged as an error on every attempt, the data is kept and retried with back-off |
//! | 413 | the batch is split in halves until the store takes it; later batches use the size that worked |
//! | 429, 503 | retried after the store's Retry-After, or with back-off |
//! | other 5xx, timeouts, network errors | retried with exponential back-off and jitter, up to `retry_max` |
//!
//! After a failed attempt the writer reads its batch from the spool again, so rows the spool
//! dropped meanwhile (at its byte or age bound) are not delivered after being counted as lost.

pub mod config;
pub mod file;
pub mod influx;
pub mod spool;
mod spool_task;
mod stage;
pub mod status;
pub mod uplink;
mod writer;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use spool_task::spawn_spool_task;
#[doc(hidden)]
pub use spool_task::throttle_for_tests;
pub use stage::{Stage, StartError, Tasks, create_data_dir, start, stores};
pub use writer::run_writer;

/// Batches of records waiting between the engine and the spool task. At the bound the engine
/// waits for room (see `engine::run` and [`crate::queue`]).
pub const SPOOL_QUEUE: usize = crate::queue::SPOOL_QUEUE;

/// What the spool task appends: a batch of the engine's lines (a `Vec<String>`), or lines whose
/// sender must know when they are on disk (`county ingest` acknowledges a message to its broker
/// only then).
pub trait Chunk: AsRef<[String]> + Send + 'static {
    /// The spool queue this kind of chunk waits in: its capacity (a row of [`crate::queue`]).
    const QUEUE: crate::queue::Queue;

    /// Called once the append transaction holding the chunk committed (`true`) or failed.
    fn appended(self, committed: bool)
    where
        Self: Sized,
    {
        let _ = committed;
    }
}

/// The engine's batches (and the device-health task's lines).
impl Chunk for Vec<String> {
    const QUEUE: crate::queue::Queue = crate::queue::RECORDS_FROM_ENGINE;
}

/// What became of one write request, and so what the writer does next. Every output answers
/// with one: the HTTP status of a store, an I/O error of a file, an MQTT reason code of the
/// county's broker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Network error, timeout, 5xx, 429: keep the batch and try again later.
    #[error("{reason}")]
    Retry {
        reason: String,
        /// The server's Retry-After, when it sent one.
        after: Option<Duration>,
    },
    /// 400 and other 4xx: the store will never take this batch as it is.
    #[error("store rejected the batch ({status}): {message}")]
    Rejected { status: u16, message: String },
    /// 413: the batch is too large for the store; send it in smaller pieces.
    #[error("batch too large for the store (413)")]
    TooLarge,
    /// 401, 403, 404: wrong token, credentials, org, bucket or database. The data is kept
    /// until someone fixes the configuration.
    #[error(
        "store refused the write ({status}): {message}; check url, credentials, org/bucket or database"
    )]
    Config { status: u16, message: String },
    /// A broker refused a message (the uplink's MQTT 5 reason code): like `Config`, the data
    /// is kept until someone fixes the account or the ACL.
    #[error("{0}")]
    Refused(String),
}

/// A place records are delivered to.
#[derive(Debug)]
pub enum Output {
    Influx(influx::InfluxWriter),
    File(file::FileWriter),
    Uplink(uplink::UplinkWriter),
}

impl Output {
    pub fn name(&self) -> &str {
        match self {
            Output::Influx(w) => w.name(),
            Output::File(w) => w.name(),
            Output::Uplink(w) => w.name(),
        }
    }

    /// `influx`, `file` or `uplink`: what the board says the output is.
    pub fn kind(&self) -> &'static str {
        match self {
            Output::Influx(_) => "influx",
            Output::File(_) => "file",
            Output::Uplink(_) => "uplink",
        }
    }

    /// Requests this output may have in flight at once: two for an HTTP store, whose writes
    /// of distinct points commute; one for a file (appends must not interleave) and for the
    /// uplink (its messages go in order).
    fn in_flight(&self) -> usize {
        match self {
            Output::Influx(_) => writer::IN_FLIGHT,
            Output::File(_) | Output::Uplink(_) => 1,
        }
    }

    async fn send(&self, body: &[u8]) -> Result<(), SendError> {
        match self {
            Output::Influx(w) => w.send(body).await,
            Output::File(w) => w.send(body).await,
            Output::Uplink(w) => w.send(body).await,
        }
    }
}
/// How one writer batches and retries (`[[influx]]` keys of the same names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterOptions {
    /// Lines per request at most.
    pub batch_lines: usize,
    /// Bytes of line protocol per request at most (before compression); a longer line goes
    /// alone.
    pub batch_bytes: usize,
    /// A batch with fewer lines waits until this long after the previous request.
    pub flush_interval: Duration,
    /// The longest back-off between retries.
    pub retry_max: Duration,
    /// Where rejected lines go.
    pub dead_letter: PathBuf,
    /// The dead-letter file's bound (`file::append_dead_letter`).
    pub dead_letter_max_bytes: u64,
}

impl WriterOptions {
    /// The defaults of `[[influx]]`, with the dead-letter file in `dir`.
    pub fn new(output: &str, dir: &Path) -> Self {
        WriterOptions {
            batch_lines: 5000,
            batch_bytes: BATCH_BYTES,
            flush_interval: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            dead_letter: dir.join(format!("dead-letter-{output}.lp")),
            dead_letter_max_bytes: DEAD_LETTER_MAX_BYTES,
        }
    }
}

/// The default bound of a write request's body before compression: 4 MiB. Under what every
/// store takes (InfluxDB 1.x 25 MB, InfluxDB 3 10 MiB, VictoriaMetrics 32 MB), above what the
/// default 5000 lines of a few hundred bytes make, and it bounds the writer's memory when lines
/// are long (5000 lines of 1,000 fields would be some 50 MB a request).
pub const BATCH_BYTES: usize = 4 << 20;

/// The default bound of a dead-letter file: 16 MiB, some 50 000 rejected lines, so the file
/// and its previous generation take at most 32 MiB of a gateway's disk.
pub const DEAD_LETTER_MAX_BYTES: u64 = 16 << 20;
