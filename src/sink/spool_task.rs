//! The spool task: the store-and-forward stage's appending side. It takes what the engine (and
//! the device-health task, or `county ingest`'s subscriber) hands over on the spool queue and
//! appends it to the spool on a thread of its own, so no producer ever waits for the disk.
//! It owns the appending connection, trims delivered rows, applies the age bound, syncs the
//! WAL and publishes the spool's figures (the `shopfloor_spool_*` series and a
//! [`SpoolStats`] watch that wakes the writers).

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{error, info, warn};

use super::Chunk;
use super::spool::{self, Spool, SpoolError, SpoolStats};
use crate::metrics::Metrics;

/// How often the spool task trims delivered rows, applies the age bound and publishes figures.
const HOUSEKEEPING: Duration = Duration::from_secs(1);

/// Engine steps the spool task appends in one transaction at most.
const APPEND_GROUP: usize = 256;

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
