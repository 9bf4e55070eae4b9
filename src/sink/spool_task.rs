//! The spool task: the store-and-forward stage's appending side. It takes what the engine (and
//! the device-health task, or `county ingest`'s subscriber) hands over on the spool queue and
//! appends it to the spool on a thread of its own, so SQLite never stalls an async worker.
//! When it falls behind, the queue fills and its senders wait ([`crate::queue`]).
//! It owns the appending connection, trims delivered rows, applies the age bound, syncs the
//! WAL and publishes the spool's figures (the `shopfloor_spool_*` series and a
//! [`SpoolStats`] watch that wakes the writers).
//!
//! Housekeeping never stalls an append: it runs on the same connection and thread, between two
//! append transactions, so the two never wait for each other; its deletes are short
//! `BEGIN IMMEDIATE` transactions that wait for a writer's acknowledgement (`busy_timeout`)
//! instead of failing with "database is locked"; and the sync is an `fdatasync` of the log,
//! which takes no lock at all (SQLite's own checkpoints, every few MiB of log, are `PASSIVE`:
//! they copy what they can without waiting for the writers' readers; see `sink::spool`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{error, info, warn};

use super::Chunk;
use super::spool::{self, Spool, SpoolStats};
use crate::metrics::Metrics;
use crate::queue::LossLog;

/// How often the spool task trims delivered rows, applies the age bound and publishes figures.
const HOUSEKEEPING: Duration = Duration::from_secs(1);

/// Chunks the spool task appends in one transaction at most (the engine's queue holds fewer;
/// `county ingest` hands over one message a chunk).
const APPEND_GROUP: usize = 256;

/// How often a loss at the spool is logged at most (with the count since the last line).
const LOSS_LOG_EVERY: Duration = Duration::from_secs(60);

/// Throttles registered by tests, by spool path: nanoseconds to pause per appended line.
static THROTTLES: Mutex<Vec<(PathBuf, Arc<AtomicU64>)>> = Mutex::new(Vec::new());

/// Test hook: makes the spool task of the spool at `path` pause `per_line` for every line it
/// appends, so a test can make the spool slower than its sources and watch the back-pressure
/// (`tests/backpressure.rs`). Keyed by path so that tests running side by side in one process
/// throttle only their own spool; a spool task looks its throttle up once, when it starts, and
/// a later call changes it (`Duration::ZERO` lifts it). Nothing calls it outside tests, and
/// then it costs the agent one lookup at start-up.
#[doc(hidden)]
pub fn throttle_for_tests(path: &Path, per_line: Duration) {
    let nanos = u64::try_from(per_line.as_nanos()).unwrap_or(u64::MAX);
    let mut throttles = THROTTLES.lock().unwrap_or_else(|p| p.into_inner());
    match throttles.iter().find(|(p, _)| p == path) {
        Some((_, t)) => t.store(nanos, Ordering::Relaxed),
        None => throttles.push((path.to_path_buf(), Arc::new(AtomicU64::new(nanos)))),
    }
}

fn throttle_of(path: &Path) -> Option<Arc<AtomicU64>> {
    let throttles = THROTTLES.lock().unwrap_or_else(|p| p.into_inner());
    throttles
        .iter()
        .find(|(p, _)| p == path)
        .map(|(_, t)| t.clone())
}

/// Free space on the spool's file system above which a full disk counts as over: room for
/// the reserve and a few rows.
const DISK_ROOM_AGAIN: u64 = spool::RESERVE_BYTES + 4 * spool::ROW_BYTES as u64;

/// Runs the spool's appending side on its own thread until the engine's sender is dropped.
/// Each wake-up appends everything queued in one transaction; once a second it trims delivered
/// rows and applies the age bound, and every `sync_interval` it syncs the WAL to disk.
///
/// A full disk is reported loudly: an error when it starts, `shopfloor_spool_disk_full` at 1
/// until the file system has room again, and every line that could not be appended in
/// `shopfloor_spool_lost_lines_total`, logged as [`LossLog`] says (once a minute with the
/// count, and the total when appends succeed again and at shutdown).
pub fn spawn_spool_task<C: Chunk>(
    mut spool: Spool,
    path: PathBuf,
    records: flume::Receiver<C>,
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
    let mut losses = LossLog::new(
        "records lost: the spool could not append them (disk full with nothing left to drop, or a database error)",
        LOSS_LOG_EVERY,
    );
    let mut failing = false;
    let throttle = throttle_of(&path);
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let publish = spool_gauges(&metrics, path);
    publish(spool.stats(), true);
    stats.send_replace(spool.stats());
    std::thread::spawn(move || {
        let mut last_housekeeping = Instant::now();
        let mut last_sync = Instant::now();
        // The figures at the last sync: an idle spool (nothing appended, trimmed or expired
        // since) has nothing to sync, and its wake-up costs no disk sync.
        let mut synced = spool.stats();
        // With `sync = "full"` SQLite syncs every commit itself.
        let sync_due = spool.limits().sync == spool::SyncPolicy::Normal;
        // Housekeeping that fails (a busy or full disk) fails at every round.
        let mut housekeeping_log = crate::metrics::RateLimited::new(Duration::from_secs(60));
        let wake = HOUSEKEEPING.min(sync_interval.max(Duration::from_millis(10)));
        loop {
            let first = match records.recv_timeout(wake) {
                Ok(batch) => Some(batch),
                Err(flume::RecvTimeoutError::Timeout) => None,
                Err(flume::RecvTimeoutError::Disconnected) => break,
            };
            if let Some(first) = first {
                let mut chunks = vec![first];
                while chunks.len() < APPEND_GROUP {
                    match records.try_recv() {
                        Ok(batch) => chunks.push(batch),
                        Err(_) => break,
                    }
                }
                let lines = chunks.iter().map(|c| c.as_ref().len()).sum::<usize>() as u64;
                if let Some(per_line) = throttle.as_ref().map(|t| t.load(Ordering::Relaxed)) {
                    std::thread::sleep(Duration::from_nanos(per_line.saturating_mul(lines)));
                }
                let now_ms = jiff::Timestamp::now().as_millisecond();
                let committed = match spool.append(&chunks, now_ms) {
                    Ok(dropped) => {
                        if dropped > 0 && disk_full.swap(1, Ordering::Relaxed) == 0 {
                            error!(dir = %dir.display(), "the spool's disk is full: the oldest records are dropped to make room for new ones; free space there");
                        }
                        if std::mem::take(&mut failing) {
                            losses.recovered();
                        }
                        true
                    }
                    Err(e) => {
                        lost.fetch_add(lines, Ordering::Relaxed);
                        if e.is_disk_full() {
                            disk_full.store(1, Ordering::Relaxed);
                        }
                        if !std::mem::replace(&mut failing, true) {
                            if e.is_disk_full() {
                                error!(error = %e, dir = %dir.display(), "the spool's disk is full and nothing is left to drop: records are lost until there is room; free space there");
                            } else {
                                error!(error = %e, "cannot append to the spool: records are lost");
                            }
                        }
                        losses.lost(lines);
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
                spool.disk_has_room();
                info!(dir = %dir.display(), "the spool's disk has room again");
            }
            if housekeeping {
                if let Err(e) = spool.trim()
                    && let Some(unlogged) = housekeeping_log.due(Instant::now())
                {
                    warn!(error = %e, unlogged, "cannot trim the spool (retried every second, logged at most once a minute; `unlogged` failures since the last line)");
                }
                if let Err(e) = spool.expire(jiff::Timestamp::now().as_millisecond())
                    && let Some(unlogged) = housekeeping_log.due(Instant::now())
                {
                    warn!(error = %e, unlogged, "cannot apply the spool's max_age (retried every second, logged at most once a minute; `unlogged` failures since the last line)");
                }
                last_housekeeping = Instant::now();
            }
            if sync_due && last_sync.elapsed() >= sync_interval && spool.stats() != synced {
                match spool.sync_log() {
                    Ok(()) => synced = spool.stats(),
                    Err(e) => {
                        if let Some(unlogged) = housekeeping_log.due(Instant::now()) {
                            warn!(error = %e, unlogged, "cannot sync the spool (retried, logged at most once a minute; `unlogged` failures since the last line)");
                        }
                    }
                }
                last_sync = Instant::now();
            }
            publish(spool.stats(), housekeeping);
            // The writers wake on a change only: an idle second wakes none of them.
            let now = spool.stats();
            stats.send_if_modified(|s| std::mem::replace(s, now) != now);
        }
        let _ = spool.trim();
        let _ = spool.checkpoint();
        publish(spool.stats(), true);
        stats.send_replace(spool.stats());
        // Every loss of the run is in the log before the agent stops (issue 22).
        losses.finish();
        spool.finish();
    })
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
