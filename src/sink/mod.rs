//! Northbound sinks: records go to the disk spool first, and one writer per output drains the
//! spool to its store from its own cursor.
//!
//! ```text
//! engine ──(bounded queue)──> spool task ──> spool.db ──> writer "influx" ──> store
//!                                                     └─> writer "file"   ──> records.lp
//! ```
//!
//! The engine hands records over with `try_send`, so it never waits for the disk. The spool
//! task owns the appending connection; every writer has its own reading connection. Delivery is
//! at least once: a batch is acknowledged only after the store said 2xx, and a resent batch
//! overwrites itself in the store (same measurement, tags and timestamp).

pub mod file;
pub mod influx;
pub mod line_protocol;
pub mod spool;

use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{error, info, warn};

use std::sync::atomic::Ordering;

use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use spool::{Spool, SpoolError, SpoolReader, SpoolStats};

/// Records waiting between the engine and the spool task, in engine steps. At the bound the
/// engine drops the step's records and counts them (see `engine::run`).
pub const SPOOL_QUEUE: usize = 4096;

/// How long a writer lets records gather after sending a batch that was not full.
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// The longest a writer waits before retrying a store that failed.
const MAX_RETRY: Duration = Duration::from_secs(60);

/// Runs the spool's appending side on its own thread until the engine's sender is dropped.
/// Each wake-up appends everything queued in one transaction, then trims delivered chunks.
pub fn spawn_spool_task(
    mut spool: Spool,
    records: std_mpsc::Receiver<Vec<String>>,
    stats: watch::Sender<SpoolStats>,
    metrics: Metrics,
) -> std::thread::JoinHandle<()> {
    let bytes = metrics.gauge(
        "shopfloor_spool_bytes",
        "Bytes of records waiting in the spool.",
        &[],
    );
    let lines = metrics.gauge(
        "shopfloor_spool_lines",
        "Records (lines) waiting in the spool.",
        &[],
    );
    let dropped = metrics.gauge(
        "shopfloor_spool_dropped_lines",
        "Records dropped because the spool was full, since the spool was created.",
        &[],
    );
    let oldest = metrics.gauge(
        "shopfloor_spool_oldest_age_seconds",
        "Age of the oldest record waiting in the spool.",
        &[],
    );
    let publish = move |s: SpoolStats| {
        bytes.store(s.bytes, Ordering::Relaxed);
        lines.store(s.lines, Ordering::Relaxed);
        dropped.store(s.dropped_lines, Ordering::Relaxed);
        let now = jiff::Timestamp::now().as_millisecond();
        let age = s.oldest_ms.map_or(0, |ms| (now - ms).max(0) / 1000);
        oldest.store(age as u64, Ordering::Relaxed);
        stats.send_replace(s);
    };
    std::thread::spawn(move || {
        let mut last_trim = std::time::Instant::now();
        loop {
            let first = match records.recv_timeout(Duration::from_secs(1)) {
                Ok(batch) => Some(batch),
                Err(std_mpsc::RecvTimeoutError::Timeout) => None,
                Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
            };
            if let Some(first) = first {
                let mut chunks = vec![first];
                while chunks.len() < 256 {
                    match records.try_recv() {
                        Ok(batch) => chunks.push(batch),
                        Err(_) => break,
                    }
                }
                let now_ms = jiff::Timestamp::now().as_millisecond();
                if let Err(e) = spool.append(&chunks, now_ms) {
                    error!(error = %e, lines = chunks.iter().map(Vec::len).sum::<usize>(), "cannot append to the spool: records lost");
                }
            }
            if last_trim.elapsed() >= Duration::from_secs(1) {
                if let Err(e) = spool.trim() {
                    warn!(error = %e, "cannot trim the spool");
                }
                last_trim = std::time::Instant::now();
            }
            publish(spool.stats());
        }
        let _ = spool.trim();
        publish(spool.stats());
    })
}

/// A place records are delivered to.
#[derive(Debug)]
pub enum Output {
    Influx(influx::InfluxWriter),
    File(file::FileWriter),
}

impl Output {
    pub fn name(&self) -> &str {
        match self {
            Output::Influx(w) => w.name(),
            Output::File(w) => w.name(),
        }
    }

    async fn send(&self, body: Vec<u8>) -> Result<(), influx::SendError> {
        match self {
            Output::Influx(w) => w.send(body).await,
            Output::File(w) => w.send(body).await,
        }
    }
}

/// Drains the spool into one output until shutdown.
pub async fn run_writer(
    output: Output,
    spool_path: PathBuf,
    batch_lines: usize,
    dead_letter_dir: PathBuf,
    mut appended: watch::Receiver<SpoolStats>,
    metrics: Metrics,
    mut shutdown: Shutdown,
) {
    let name = output.name().to_string();
    let labels = [("output", name.as_str())];
    let sent = metrics.counter(
        "shopfloor_output_lines_total",
        "Records delivered to an output.",
        &labels,
    );
    let dead = metrics.counter(
        "shopfloor_output_dead_letter_lines_total",
        "Records the store rejected, moved to the dead-letter file.",
        &labels,
    );
    let error_count = |kind: &'static str| {
        metrics
            .counter(
                "shopfloor_output_errors_total",
                "Failed write requests, by kind.",
                &[("output", name.as_str()), ("kind", kind)],
            )
            .fetch_add(1, Ordering::Relaxed);
    };
    let span = tracing::info_span!("output", output = %name);
    let mut reader = match open_reader(&spool_path, &name).await {
        Ok(r) => r,
        Err(e) => {
            error!(parent: &span, error = %e, "cannot open the spool: this output sends nothing");
            return;
        }
    };
    let mut failures: u32 = 0;
    let mut limit = batch_lines.max(1);
    loop {
        if shutdown.is_triggered() {
            break;
        }
        let (returned, batch) = match next_batch(reader, limit).await {
            Ok(pair) => pair,
            Err(e) => {
                error!(parent: &span, error = %e, "spool read failed");
                return;
            }
        };
        reader = returned;
        let Some(batch) = batch else {
            // Nothing waiting: sleep until the spool task appends (or a second passes).
            tokio::select! {
                _ = appended.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.wait() => break,
            }
            continue;
        };
        let lines = batch.lines;
        let result = output.send(batch.body.clone()).await;
        let wait = match result {
            Ok(()) => {
                failures = 0;
                limit = batch_lines.max(1);
                sent.fetch_add(lines as u64, Ordering::Relaxed);
                match ack(reader, batch.last_id).await {
                    Ok(r) => reader = r,
                    Err(e) => {
                        error!(parent: &span, error = %e, "spool ack failed");
                        return;
                    }
                }
                None
            }
            Err(influx::SendError::Rejected { status, message }) => {
                // The store will never take this batch; keep it for a person and move on.
                error_count("rejected");
                dead.fetch_add(lines as u64, Ordering::Relaxed);
                let file = dead_letter_dir.join(format!("dead-letter-{name}.lp"));
                error!(parent: &span, status, %message, lines, file = %file.display(), "batch rejected: moved to the dead-letter file");
                if let Err(e) = file::append_dead_letter(&file, status, &message, &batch.body).await
                {
                    error!(parent: &span, error = %e, "cannot write the dead-letter file");
                }
                match ack(reader, batch.last_id).await {
                    Ok(r) => reader = r,
                    Err(e) => {
                        error!(parent: &span, error = %e, "spool ack failed");
                        return;
                    }
                }
                None
            }
            Err(influx::SendError::TooLarge) if limit > 1 => {
                error_count("too_large");
                limit = (lines / 2).max(1);
                warn!(parent: &span, lines, next = limit, "store says the batch is too large: sending smaller batches");
                None
            }
            Err(e) => {
                error_count(match e {
                    influx::SendError::Config { .. } => "config",
                    _ => "retry",
                });
                failures = failures.saturating_add(1);
                let backoff = retry_delay(failures, &e);
                if matches!(e, influx::SendError::Config { .. }) {
                    error!(parent: &span, error = %e, retry_in = ?backoff, "output misconfigured: data is kept in the spool");
                } else {
                    warn!(parent: &span, error = %e, retry_in = ?backoff, "write failed: data is kept in the spool");
                }
                Some(backoff)
            }
        };
        if let Some(wait) = wait {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.wait() => break,
            }
        } else if lines < limit {
            // A partial batch: let records gather for a flush interval before the next request.
            tokio::select! {
                _ = tokio::time::sleep(FLUSH_INTERVAL) => {}
                _ = shutdown.wait() => break,
            }
        }
    }
    info!(parent: &span, "writer stopped");
}

/// Exponential back-off with jitter, or the server's Retry-After when it gave one.
fn retry_delay(failures: u32, error: &influx::SendError) -> Duration {
    if let influx::SendError::Retry {
        after: Some(after), ..
    } = error
    {
        return (*after).min(MAX_RETRY * 5);
    }
    let base = Duration::from_millis(500).saturating_mul(1u32 << failures.min(10));
    let base = base.min(MAX_RETRY);
    // Jitter of up to a quarter, so many gateways do not retry in step after an outage.
    let nanos = jiff::Timestamp::now().subsec_nanosecond().unsigned_abs();
    let jitter = base.mul_f64(f64::from(nanos % 1000) / 4000.0);
    base + jitter
}

/// Runs a spool call on the blocking pool: SQLite must not stall the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SpoolError> + Send + 'static,
) -> Result<T, SpoolError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(SpoolError::Task(e.to_string())))
}

async fn open_reader(path: &Path, name: &str) -> Result<SpoolReader, SpoolError> {
    let (path, name) = (path.to_path_buf(), name.to_string());
    blocking(move || SpoolReader::open(&path, &name)).await
}

async fn next_batch(
    mut reader: SpoolReader,
    limit: usize,
) -> Result<(SpoolReader, Option<spool::Batch>), SpoolError> {
    blocking(move || {
        let batch = reader.next_batch(limit)?;
        Ok((reader, batch))
    })
    .await
}

async fn ack(mut reader: SpoolReader, last_id: i64) -> Result<SpoolReader, SpoolError> {
    blocking(move || {
        reader.ack(last_id)?;
        Ok(reader)
    })
    .await
}
