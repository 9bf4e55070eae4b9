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
//! at least once: a batch is acknowledged only after the store said 2xx (or its bad lines were
//! moved to the dead-letter file), and a resent batch overwrites itself in the store (same
//! measurement, tags and timestamp).
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
pub mod line_protocol;
pub mod spool;
pub mod uplink;

use std::collections::VecDeque;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use influx::SendError;
use spool::{Spool, SpoolError, SpoolReader, SpoolStats};

/// Records waiting between the engine and the spool task, in engine steps. At the bound the
/// engine drops the step's records and counts them (see `engine::run`).
pub const SPOOL_QUEUE: usize = 4096;

/// How often the spool task trims delivered rows, applies the age bound and publishes figures.
const HOUSEKEEPING: Duration = Duration::from_secs(1);

/// Engine steps the spool task appends in one transaction at most.
const APPEND_GROUP: usize = 256;

/// What the spool task appends: the lines of one engine step (a `Vec<String>`), or lines whose
/// sender must know when they are on disk (`county ingest` acknowledges a message to its broker
/// only then).
pub trait Chunk: AsRef<[String]> + Send + 'static {
    /// Called once the append transaction holding the chunk committed (`true`) or failed.
    fn appended(self, committed: bool)
    where
        Self: Sized,
    {
        let _ = committed;
    }
}

impl Chunk for Vec<String> {}

/// Free space on the spool's file system above which a full disk counts as over: room for
/// the reserve and a few rows.
const DISK_ROOM_AGAIN: u64 = spool::RESERVE_BYTES + 4 * spool::ROW_BYTES as u64;

/// Runs the spool's appending side on its own thread until the engine's sender is dropped.
/// Each wake-up appends everything queued in one transaction; once a second it trims delivered
/// rows and applies the age bound, and every `sync_interval` it syncs the WAL to disk.
///
/// A full disk is reported loudly: an error when it starts (and once a minute while records
/// are being lost), `shopfloor_spool_disk_full` at 1 until the file system has room again, and
/// every line that could not be appended in `shopfloor_spool_lost_lines_total`.
pub fn spawn_spool_task<C: Chunk>(
    mut spool: Spool,
    path: PathBuf,
    records: std_mpsc::Receiver<C>,
    stats: watch::Sender<SpoolStats>,
    metrics: Metrics,
    sync_interval: Duration,
) -> std::thread::JoinHandle<()> {
    let disk_full = metrics.gauge(
        "shopfloor_spool_disk_full",
        "1 while the spool's disk is full (oldest records are dropped to make room), else 0.",
        &[],
    );
    let lost = metrics.counter(
        "shopfloor_spool_lost_lines_total",
        "Records that could not be appended to the spool (disk full with nothing left to drop, or a database error).",
        &[],
    );
    let mut failures = AppendFailures::default();
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let publish = spool_gauges(&metrics, path);
    publish(spool.stats(), true);
    stats.send_replace(spool.stats());
    std::thread::spawn(move || {
        let mut last_housekeeping = Instant::now();
        let mut last_sync = Instant::now();
        let wake = HOUSEKEEPING.min(sync_interval.max(Duration::from_millis(10)));
        loop {
            let first = match records.recv_timeout(wake) {
                Ok(batch) => Some(batch),
                Err(std_mpsc::RecvTimeoutError::Timeout) => None,
                Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
            };
            if let Some(first) = first {
                let mut chunks = vec![first];
                while chunks.len() < APPEND_GROUP {
                    match records.try_recv() {
                        Ok(batch) => chunks.push(batch),
                        Err(_) => break,
                    }
                }
                let now_ms = jiff::Timestamp::now().as_millisecond();
                let committed = match spool.append(&chunks, now_ms) {
                    Ok(0) => true,
                    Ok(_) => {
                        if disk_full.swap(1, Ordering::Relaxed) == 0 {
                            error!(dir = %dir.display(), "the spool's disk is full: the oldest records are dropped to make room for new ones; free space there");
                        }
                        true
                    }
                    Err(e) => {
                        let lines = chunks.iter().map(|c| c.as_ref().len()).sum::<usize>() as u64;
                        lost.fetch_add(lines, Ordering::Relaxed);
                        if e.is_disk_full() {
                            disk_full.store(1, Ordering::Relaxed);
                        }
                        failures.report(&e, lines, &dir);
                        false
                    }
                };
                for chunk in chunks {
                    chunk.appended(committed);
                }
            }
            let housekeeping = last_housekeeping.elapsed() >= HOUSEKEEPING;
            if housekeeping
                && disk_full.load(Ordering::Relaxed) == 1
                && free_bytes(&dir).is_some_and(|free| free >= DISK_ROOM_AGAIN)
            {
                disk_full.store(0, Ordering::Relaxed);
                failures = AppendFailures::default();
                spool.disk_has_room();
                info!(dir = %dir.display(), "the spool's disk has room again");
            }
            if housekeeping {
                if let Err(e) = spool.trim() {
                    warn!(error = %e, "cannot trim the spool");
                }
                if let Err(e) = spool.expire(jiff::Timestamp::now().as_millisecond()) {
                    warn!(error = %e, "cannot apply the spool's max_age");
                }
                last_housekeeping = Instant::now();
            }
            if last_sync.elapsed() >= sync_interval {
                if let Err(e) = spool.checkpoint() {
                    warn!(error = %e, "cannot sync the spool");
                }
                last_sync = Instant::now();
            }
            publish(spool.stats(), housekeeping);
            stats.send_replace(spool.stats());
        }
        let _ = spool.trim();
        let _ = spool.checkpoint();
        publish(spool.stats(), true);
        stats.send_replace(spool.stats());
    })
}

/// Waits for a pipeline's tasks, then for its spool task, which finishes what it was handed
/// once the senders are gone (the agent's and `county ingest`'s shutdown).
pub async fn stopped(
    mut tasks: tokio::task::JoinSet<()>,
    spool_thread: std::thread::JoinHandle<()>,
) {
    while tasks.join_next().await.is_some() {}
    let _ = tokio::task::spawn_blocking(move || spool_thread.join()).await;
}

/// Failed appends, logged at the first and then at most once a minute with the count since.
#[derive(Default)]
struct AppendFailures {
    last_logged: Option<Instant>,
    lines_since: u64,
}

impl AppendFailures {
    fn report(&mut self, e: &SpoolError, lines: u64, dir: &Path) {
        self.lines_since += lines;
        if self
            .last_logged
            .is_some_and(|t| t.elapsed() < Duration::from_secs(60))
        {
            return;
        }
        let lost_lines = std::mem::take(&mut self.lines_since);
        if e.is_disk_full() {
            error!(error = %e, lost_lines, dir = %dir.display(), "the spool's disk is full and nothing is left to drop: records lost; free space there");
        } else {
            error!(error = %e, lost_lines, "cannot append to the spool: records lost");
        }
        self.last_logged = Some(Instant::now());
    }
}

/// Bytes available to the agent on the file system holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string and `stat` is large enough for the result,
    // which is read only when statvfs reports success.
    let stat = unsafe {
        if libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) != 0 {
            return None;
        }
        stat.assume_init()
    };
    // The C types are 32 bits on some gateways' targets and 64 on others.
    #[allow(clippy::useless_conversion)]
    let free = u64::from(stat.f_bavail).saturating_mul(u64::from(stat.f_frsize));
    Some(free)
}

/// The spool's gauges, and a function that sets them from the figures (and, when asked, from
/// the file's size on disk, which costs two `stat` calls).
fn spool_gauges(metrics: &Metrics, path: PathBuf) -> impl Fn(SpoolStats, bool) + Send + 'static {
    let bytes = metrics.gauge(
        "shopfloor_spool_bytes",
        "Bytes of records (line protocol) waiting in the spool.",
        &[],
    );
    let file_bytes = metrics.gauge(
        "shopfloor_spool_file_bytes",
        "Size of the spool file and its write-ahead log on disk.",
        &[],
    );
    let lines = metrics.gauge(
        "shopfloor_spool_lines",
        "Records (lines) waiting in the spool.",
        &[],
    );
    let help = "Records deleted before every output had them, since the spool was created: \
                reason=\"full\" at max_bytes, reason=\"age\" at max_age.";
    let dropped = metrics.gauge("shopfloor_spool_dropped_lines", help, &[("reason", "full")]);
    let expired = metrics.gauge("shopfloor_spool_dropped_lines", help, &[("reason", "age")]);
    let appended = metrics.counter(
        "shopfloor_spool_appended_lines_total",
        "Records appended to the spool since the agent started.",
        &[],
    );
    let oldest = metrics.gauge(
        "shopfloor_spool_oldest_age_seconds",
        "Age of the oldest record waiting in the spool.",
        &[],
    );
    move |s: SpoolStats, with_file: bool| {
        bytes.store(s.bytes, Ordering::Relaxed);
        lines.store(s.lines, Ordering::Relaxed);
        dropped.store(
            s.dropped_lines.saturating_sub(s.expired_lines),
            Ordering::Relaxed,
        );
        expired.store(s.expired_lines, Ordering::Relaxed);
        appended.store(s.appended_lines, Ordering::Relaxed);
        let now = jiff::Timestamp::now().as_millisecond();
        let age = s.oldest_ms.map_or(0, |ms| (now - ms).max(0) / 1000);
        oldest.store(age as u64, Ordering::Relaxed);
        if with_file {
            let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
            let mut wal = path.clone().into_os_string();
            wal.push("-wal");
            file_bytes.store(size(&path) + size(Path::new(&wal)), Ordering::Relaxed);
        }
    }
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

    async fn send(&self, body: &[u8]) -> Result<(), SendError> {
        match self {
            Output::Influx(w) => w.send(body).await,
            Output::File(w) => w.send(body).await,
            Output::Uplink(w) => w.send(body).await,
        }
    }
}

/// The stores of an `[[influx]]` and `[[file]]` list, named and with their writer options (the
/// agent's outputs, and `county ingest`'s).
pub fn stores(
    influx: &[crate::config::InfluxOutput],
    files: &[crate::config::FileOutput],
    data_dir: &Path,
) -> Result<Vec<(Output, WriterOptions)>, influx::InfluxError> {
    use crate::config::default_output_name;
    let mut outputs = Vec::new();
    for (n, cfg) in influx.iter().enumerate() {
        let name = cfg
            .name
            .clone()
            .unwrap_or_else(|| default_output_name("influx", n));
        let options = cfg.writer_options(&name, data_dir);
        outputs.push((
            Output::Influx(influx::InfluxWriter::new(&name, cfg)?),
            options,
        ));
    }
    for (n, cfg) in files.iter().enumerate() {
        let name = cfg
            .name
            .clone()
            .unwrap_or_else(|| default_output_name("file", n));
        let options = WriterOptions::new(&name, data_dir);
        outputs.push((
            Output::File(file::FileWriter::new(&name, &cfg.path)),
            options,
        ));
    }
    Ok(outputs)
}

/// How one writer batches and retries (`[[influx]]` keys of the same names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterOptions {
    /// Lines per request at most.
    pub batch_lines: usize,
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
            flush_interval: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            dead_letter: dir.join(format!("dead-letter-{output}.lp")),
            dead_letter_max_bytes: DEAD_LETTER_MAX_BYTES,
        }
    }
}

/// The default bound of a dead-letter file: 16 MiB, some 50 000 rejected lines, so the file
/// and its previous generation take at most 32 MiB of a gateway's disk.
pub const DEAD_LETTER_MAX_BYTES: u64 = 16 << 20;

/// The per-output counters.
struct WriterMetrics {
    sent: Arc<AtomicU64>,
    dead: Arc<AtomicU64>,
    dead_deleted: Arc<AtomicU64>,
    last_success: Arc<AtomicU64>,
    metrics: Metrics,
    name: String,
}

impl WriterMetrics {
    fn new(metrics: &Metrics, name: &str) -> Self {
        let labels = [("output", name)];
        WriterMetrics {
            sent: metrics.counter(
                "shopfloor_output_lines_total",
                "Records delivered to an output.",
                &labels,
            ),
            dead: metrics.counter(
                "shopfloor_output_dead_letter_lines_total",
                "Records the store rejected, moved to the dead-letter file.",
                &labels,
            ),
            dead_deleted: metrics.counter(
                "shopfloor_output_dead_letter_deleted_lines_total",
                "Rejected records deleted with the dead-letter file's oldest generation at its bound.",
                &labels,
            ),
            last_success: metrics.gauge(
                "shopfloor_output_last_success_seconds",
                "Unix time of the output's last successful write request.",
                &labels,
            ),
            metrics: metrics.clone(),
            name: name.to_string(),
        }
    }

    fn error(&self, kind: &'static str) {
        self.metrics
            .counter(
                "shopfloor_output_errors_total",
                "Failed write requests, by kind: rejected (4xx), too_large (413), config (401, 403, 404), retry (network, timeout, 5xx, 429).",
                &[("output", self.name.as_str()), ("kind", kind)],
            )
            .fetch_add(1, Ordering::Relaxed);
    }
}

/// Keeps `shopfloor_output_sent_lines_last_minute` current: the send rate for the `agent` line
/// and for people, from a ring of one-second samples of the delivered-lines counter. A task of
/// its own, so that it keeps ticking while the writer sleeps in a back-off.
async fn track_send_rate(sent: Arc<AtomicU64>, gauge: Arc<AtomicU64>, mut shutdown: Shutdown) {
    let mut samples: VecDeque<u64> = VecDeque::with_capacity(61);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait() => break,
        }
        samples.push_back(sent.load(Ordering::Relaxed));
        if samples.len() > 61 {
            samples.pop_front();
        }
        let oldest = samples.front().copied().unwrap_or(0);
        let newest = samples.back().copied().unwrap_or(0);
        gauge.store(newest.saturating_sub(oldest), Ordering::Relaxed);
    }
}

/// What became of one batch.
enum Outcome {
    /// Every line is in the store or the dead-letter file: acknowledge it.
    Done,
    /// Try again after this long (the batch is read from the spool afresh).
    Retry(Duration),
    /// Shutdown came first; the batch stays in the spool.
    Stopped,
}

/// Part of a batch, sent as one request: a run of whole lines of the batch's body. Pieces are
/// ranges into the one body read from the spool rather than copies of it, so a batch of
/// 5000 lines (several megabytes at 100k values a second) is held once while it is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Piece {
    lines: usize,
    bytes: Range<usize>,
}

/// Splits `body[range]`, `\n`-terminated lines, into pieces of at most `max_lines` lines.
fn split_lines(body: &[u8], range: Range<usize>, max_lines: usize) -> Vec<Piece> {
    let max_lines = max_lines.max(1);
    let end = range.end.min(body.len());
    let mut pieces = Vec::new();
    let mut start = range.start.min(end);
    let mut lines = 0;
    for (i, byte) in body[..end].iter().enumerate().skip(start) {
        if *byte == b'\n' {
            lines += 1;
            if lines == max_lines {
                pieces.push(Piece {
                    lines,
                    bytes: start..i + 1,
                });
                start = i + 1;
                lines = 0;
            }
        }
    }
    if start < end {
        // A last line without `\n` (never written by the spool) still counts as a line.
        pieces.push(Piece {
            lines: lines + usize::from(body[end - 1] != b'\n'),
            bytes: start..end,
        });
    }
    pieces
}

/// Splits a piece of two or more lines in two halves, by lines.
fn halves(body: &[u8], piece: Piece) -> [Piece; 2] {
    let half = (piece.lines / 2).max(1);
    let mut parts = split_lines(body, piece.bytes.clone(), half).into_iter();
    let first = parts.next().unwrap_or(Piece {
        lines: 0,
        bytes: piece.bytes.start..piece.bytes.start,
    });
    let second = Piece {
        lines: parts.map(|p| p.lines).sum(),
        bytes: first.bytes.end..piece.bytes.end,
    };
    [first, second]
}

/// The state of one writer between batches.
struct Writer {
    output: Output,
    options: WriterOptions,
    /// Lines per request: `batch_lines`, less after a 413.
    piece_lines: usize,
    failures: u32,
    counters: WriterMetrics,
    span: tracing::Span,
}

impl Writer {
    /// Sends a batch in pieces, bisecting rejected pieces down to the lines at fault.
    async fn deliver(&mut self, body: &[u8], shutdown: &mut Shutdown) -> Outcome {
        let mut pieces: VecDeque<Piece> = split_lines(body, 0..body.len(), self.piece_lines).into();
        while let Some(piece) = pieces.pop_front() {
            if piece.lines == 0 {
                continue;
            }
            let result = tokio::select! {
                r = self.output.send(&body[piece.bytes.clone()]) => r,
                _ = shutdown.wait() => return Outcome::Stopped,
            };
            match result {
                Ok(()) => {
                    self.failures = 0;
                    self.counters
                        .sent
                        .fetch_add(piece.lines as u64, Ordering::Relaxed);
                    let now = jiff::Timestamp::now().as_second();
                    self.counters
                        .last_success
                        .store(now.max(0) as u64, Ordering::Relaxed);
                }
                Err(SendError::TooLarge) if piece.lines > 1 => {
                    self.counters.error("too_large");
                    self.piece_lines = (piece.lines / 2).max(1);
                    warn!(parent: &self.span, lines = piece.lines, next = self.piece_lines, "store says the request is too large: sending smaller ones");
                    // Everything not yet sent goes out in pieces of the new size. The pieces
                    // left are the rest of the body, in order, with nothing between them.
                    let end = pieces.back().map_or(piece.bytes.end, |p| p.bytes.end);
                    pieces = split_lines(body, piece.bytes.start..end, self.piece_lines).into();
                }
                Err(SendError::TooLarge) => {
                    self.counters.error("too_large");
                    self.dead_letter(
                        413,
                        "a single line is larger than the store accepts",
                        piece.lines,
                        &body[piece.bytes],
                    )
                    .await;
                }
                Err(SendError::Rejected { status, message }) if piece.lines > 1 => {
                    // Find the bad line(s): resend in halves; the good half goes through.
                    self.counters.error("rejected");
                    info!(parent: &self.span, status, %message, lines = piece.lines, "store rejected a batch: bisecting to find the bad lines");
                    let [a, b] = halves(body, piece);
                    pieces.push_front(b);
                    pieces.push_front(a);
                }
                Err(SendError::Rejected { status, message }) => {
                    self.counters.error("rejected");
                    self.dead_letter(status, &message, piece.lines, &body[piece.bytes])
                        .await;
                }
                Err(e) => {
                    let config = matches!(e, SendError::Config { .. } | SendError::Refused(_));
                    self.counters.error(if config { "config" } else { "retry" });
                    self.failures = self.failures.saturating_add(1);
                    let backoff = retry_delay(self.failures, &e, self.options.retry_max);
                    if config {
                        error!(parent: &self.span, error = %e, retry_in = ?backoff, "output misconfigured: data is kept in the spool");
                    } else {
                        warn!(parent: &self.span, error = %e, retry_in = ?backoff, "write failed: data is kept in the spool");
                    }
                    return Outcome::Retry(backoff);
                }
            }
        }
        Outcome::Done
    }

    /// Keeps rejected lines, with the store's reason, for a person to look at.
    async fn dead_letter(&self, status: u16, message: &str, lines: usize, body: &[u8]) {
        self.counters
            .dead
            .fetch_add(lines as u64, Ordering::Relaxed);
        let file = &self.options.dead_letter;
        error!(parent: &self.span, status, %message, lines, file = %file.display(), "store rejected a line: moved to the dead-letter file");
        let max = self.options.dead_letter_max_bytes;
        match file::append_dead_letter(file, max, status, message, body).await {
            Ok(0) => {}
            Ok(deleted) => {
                self.counters
                    .dead_deleted
                    .fetch_add(deleted, Ordering::Relaxed);
                warn!(parent: &self.span, deleted, max_bytes = max, file = %file::previous_dead_letter(file).display(), "dead-letter file at its bound: its oldest generation deleted");
            }
            Err(e) => {
                error!(parent: &self.span, error = %e, lines, "cannot write the dead-letter file: rejected lines lost");
            }
        }
    }
}

/// Drains the spool into one output until shutdown.
pub async fn run_writer(
    output: Output,
    spool_path: PathBuf,
    options: WriterOptions,
    mut appended: watch::Receiver<SpoolStats>,
    metrics: Metrics,
    mut shutdown: Shutdown,
) {
    let name = output.name().to_string();
    let span = tracing::info_span!("output", output = %name);
    let counters = WriterMetrics::new(&metrics, &name);
    let rate = metrics.gauge(
        "shopfloor_output_sent_lines_last_minute",
        "Records delivered to an output in the last 60 seconds: its send rate.",
        &[("output", name.as_str())],
    );
    tokio::spawn(track_send_rate(
        counters.sent.clone(),
        rate,
        shutdown.clone(),
    ));
    let reader = match open_reader(&spool_path, &name).await {
        Ok(r) => Arc::new(std::sync::Mutex::new(r)),
        Err(e) => {
            error!(parent: &span, error = %e, "cannot open the spool: this output sends nothing");
            return;
        }
    };
    let batch_lines = options.batch_lines.max(1);
    let flush_interval = options.flush_interval;
    let mut writer = Writer {
        output,
        piece_lines: batch_lines,
        options,
        failures: 0,
        counters,
        span: span.clone(),
    };
    // A first partial batch goes out at once.
    let mut last_send = Instant::now().checked_sub(flush_interval);
    loop {
        if shutdown.is_triggered() {
            break;
        }
        let batch = match next_batch(&reader, batch_lines).await {
            Ok(batch) => batch,
            Err(e) => {
                // A busy or full disk passes; the writer must outlive it.
                error!(parent: &span, error = %e, retry_in = ?SPOOL_RETRY, "spool read failed");
                tokio::select! {
                    _ = tokio::time::sleep(SPOOL_RETRY) => {}
                    _ = shutdown.wait() => break,
                }
                continue;
            }
        };
        let Some(batch) = batch else {
            // Nothing waiting: sleep until the spool task appends (or a second passes).
            tokio::select! {
                _ = appended.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.wait() => break,
            }
            continue;
        };
        // Batching by time: a batch that is not full waits out the flush interval since the
        // previous request, unless enough lines arrive meanwhile to fill it.
        if batch.lines < batch_lines
            && !batch.more
            && let Some(due) = last_send.map(|t| t + flush_interval)
            && Instant::now() < due
        {
            let wanted = appended.borrow().appended_lines + (batch_lines - batch.lines) as u64;
            let deadline = tokio::time::Instant::from_std(due);
            let fill = appended.wait_for(|s| s.appended_lines >= wanted);
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {}
                _ = fill => {}
                _ = shutdown.wait() => break,
            }
            continue;
        }
        let outcome = writer.deliver(&batch.body, &mut shutdown).await;
        last_send = Some(Instant::now());
        match outcome {
            Outcome::Done => {
                if let Err(e) = ack(&reader, batch.last_id).await {
                    // The cursor stays where it was: the batch is sent again (at least once)
                    // when the spool can be written again, e.g. once a full disk has room.
                    error!(parent: &span, error = %e, retry_in = ?SPOOL_RETRY, "spool ack failed: the batch will be sent again");
                    tokio::select! {
                        _ = tokio::time::sleep(SPOOL_RETRY) => {}
                        _ = shutdown.wait() => break,
                    }
                }
            }
            Outcome::Retry(wait) => {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.wait() => break,
                }
            }
            Outcome::Stopped => break,
        }
    }
    info!(parent: &span, "writer stopped");
}

/// Exponential back-off with jitter, or the server's Retry-After when it gave one.
fn retry_delay(failures: u32, error: &SendError, max: Duration) -> Duration {
    if let SendError::Retry {
        after: Some(after), ..
    } = error
    {
        // A store that asks for more than five back-off ceilings is not believed.
        return (*after).min(max.saturating_mul(5));
    }
    let base =
        Duration::from_millis(500).saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    let base = base.min(max);
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

/// A writer's reader, shared with the blocking pool one call at a time (the lock is never
/// contended); shared rather than moved in and out so a failed call does not lose it.
type SharedReader = Arc<std::sync::Mutex<SpoolReader>>;

/// How long a writer waits after a failed spool read or acknowledgement.
const SPOOL_RETRY: Duration = Duration::from_secs(1);

async fn next_batch(
    reader: &SharedReader,
    limit: usize,
) -> Result<Option<spool::Batch>, SpoolError> {
    let reader = reader.clone();
    blocking(move || {
        let mut reader = reader.lock().unwrap_or_else(|p| p.into_inner());
        reader.next_batch(limit)
    })
    .await
}

async fn ack(reader: &SharedReader, last_id: i64) -> Result<(), SpoolError> {
    let reader = reader.clone();
    blocking(move || {
        let mut reader = reader.lock().unwrap_or_else(|p| p.into_inner());
        reader.ack(last_id)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_splits_into_pieces_of_whole_lines() {
        let body = b"a 1\nb 2\nc 3\nd 4\ne 5\n";
        let pieces = split_lines(body, 0..body.len(), 2);
        let texts: Vec<&[u8]> = pieces.iter().map(|p| &body[p.bytes.clone()]).collect();
        assert_eq!(
            texts,
            [&b"a 1\nb 2\n"[..], &b"c 3\nd 4\n"[..], &b"e 5\n"[..]]
        );
        assert_eq!(
            pieces.iter().map(|p| p.lines).collect::<Vec<_>>(),
            [2, 2, 1]
        );
        // Five lines halve into two and three.
        let whole = Piece {
            lines: 5,
            bytes: 0..body.len(),
        };
        let [a, b] = halves(body, whole);
        assert_eq!((a.lines, b.lines), (2, 3));
        assert_eq!(&body[b.bytes.clone()], b"c 3\nd 4\ne 5\n");
        // The second of the first pieces halves into one line each, within its own bytes.
        let [c, d] = halves(body, pieces[1].clone());
        assert_eq!(
            (&body[c.bytes], &body[d.bytes]),
            (&b"c 3\n"[..], &b"d 4\n"[..])
        );
        // A piece from the middle of the body splits from where it starts.
        let tail = split_lines(body, 4..body.len(), 3);
        assert_eq!(tail.iter().map(|p| p.lines).collect::<Vec<_>>(), [3, 1]);
        assert_eq!(&body[tail[1].bytes.clone()], b"e 5\n");
        // A last line without its `\n` is still a line.
        let cut = &body[..body.len() - 1];
        let pieces = split_lines(cut, 0..cut.len(), 10);
        assert_eq!((pieces.len(), pieces[0].lines), (1, 5));
    }

    #[test]
    fn back_off_doubles_to_the_ceiling_with_at_most_a_quarter_of_jitter() {
        let err = SendError::Retry {
            reason: String::new(),
            after: None,
        };
        let max = Duration::from_secs(60);
        // 0.5 s, 1 s, 2 s, … 32 s, then the 60 s ceiling; each plus up to 25 %.
        for (failures, base_ms) in [
            (1, 500),
            (2, 1000),
            (3, 2000),
            (7, 32_000),
            (8, 60_000),
            (40, 60_000),
        ] {
            let d = retry_delay(failures, &err, max).as_millis() as u64;
            assert!(
                (base_ms..=base_ms + base_ms / 4).contains(&d),
                "failure {failures}: {d} ms"
            );
        }
        let busy = SendError::Retry {
            reason: String::new(),
            after: Some(Duration::from_secs(7)),
        };
        assert_eq!(retry_delay(1, &busy, max), Duration::from_secs(7));
    }
}
