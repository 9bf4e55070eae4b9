//! The writer loop: one task per output drains the spool from its own cursor into its store,
//! in batches, bisecting what the store rejects and backing off when it fails (the answer table
//! is in the module docs of [`crate::sink`]).
//!
//! Every spool call runs on the blocking pool, and each trip there costs some four wake-ups (a
//! pool thread woken, then the worker woken back); at 1,000 messages a second the writer's six
//! or seven trips a second were a visible share of the agent's (issue 21). So a cycle at a low
//! rate makes two spool calls, three trips with the file output's own write:
//!
//! 1. wait, before reading: once the last read took everything that was waiting (the batch
//!    had no `more`), whatever waits now was appended since, and the spool task's count of
//!    appended lines tells how much at most. With none appended the writer sleeps until the
//!    spool task appends (or a second passes); then until the flush interval since the
//!    previous request is over, or a batch's worth of lines was appended;
//! 2. read the batch (`next_batch`), once;
//! 3. deliver it (the file output makes its own trip to write and sync);
//! 4. acknowledge it, reading the backlog gauges after the acknowledgement in the same trip.
//!
//! The count of appended lines may include lines the last read already had, so it can end the
//! wait early, never late; a read that comes early finds a batch that is not full, which waits
//! out the flush interval (or enough lines) and is read again. While a backlog drains (batches
//! with `more`) there is no wait, and the backlog is read with the acknowledgement at most once
//! a second, since counting it reads every row past the cursor. During a long flush interval,
//! after a failed spool call and through a retry's back-off it is read once a second on its
//! own, so the gauges keep moving (an outage's backlog is seen growing every second).

use std::collections::VecDeque;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{error, info, warn};

use super::spool::{self, SpoolError, SpoolReader, SpoolStats};
use super::status::OutputStatus;
use super::{Output, SendError, WriterOptions, file};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

/// The per-output counters.
struct WriterMetrics {
    sent: Arc<AtomicU64>,
    dead: Arc<AtomicU64>,
    dead_deleted: Arc<AtomicU64>,
    last_success: Arc<AtomicU64>,
    backlog: Arc<AtomicU64>,
    oldest_age: Arc<AtomicU64>,
    failing: Arc<AtomicU64>,
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
            backlog: metrics.gauge(
                "shopfloor_output_backlog_lines",
                "Records an output has not delivered yet (read from its cursor in the spool).",
                &labels,
            ),
            oldest_age: metrics.gauge(
                "shopfloor_output_oldest_age_seconds",
                "Age of the oldest record an output has not delivered yet.",
                &labels,
            ),
            failing: metrics.gauge(
                "shopfloor_output_failing",
                "1 while an output's write requests fail (the data waits in the spool), else 0.",
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

/// Splits `body[range]`, `\n`-terminated lines, into pieces of at most `max_lines` lines and
/// `max_bytes` bytes; a line longer than `max_bytes` makes a piece of its own.
fn split_lines(body: &[u8], range: Range<usize>, max_lines: usize, max_bytes: usize) -> Vec<Piece> {
    let max_lines = max_lines.max(1);
    let end = range.end.min(body.len());
    let mut pieces = Vec::new();
    let mut start = range.start.min(end);
    // Whole lines in the piece being built, and where the last of them ends.
    let mut lines = 0;
    let mut last_end = start;
    for (i, byte) in body[..end].iter().enumerate().skip(start) {
        if *byte != b'\n' {
            continue;
        }
        if lines > 0 && i + 1 - start > max_bytes {
            // This line would take the piece past its bytes: the piece ends before it.
            pieces.push(Piece {
                lines,
                bytes: start..last_end,
            });
            start = last_end;
            lines = 0;
        }
        lines += 1;
        last_end = i + 1;
        if lines == max_lines {
            pieces.push(Piece {
                lines,
                bytes: start..last_end,
            });
            start = last_end;
            lines = 0;
        }
    }
    if start < end {
        // A last line without `\n` (never written by the spool) still counts as a line.
        let partial = body[end - 1] != b'\n';
        if partial && lines > 0 && end - start > max_bytes {
            pieces.push(Piece {
                lines,
                bytes: start..last_end,
            });
            start = last_end;
            lines = 0;
        }
        pieces.push(Piece {
            lines: lines + usize::from(partial),
            bytes: start..end,
        });
    }
    pieces
}

/// Splits a piece of two or more lines in two halves, by lines.
fn halves(body: &[u8], piece: Piece) -> [Piece; 2] {
    let half = (piece.lines / 2).max(1);
    let mut parts = split_lines(body, piece.bytes.clone(), half, usize::MAX).into_iter();
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
    /// Whether the store has taken a request of `piece_lines` since the last 413: until it
    /// has, requests go one at a time, so a store that refuses the size answers one 413 per
    /// halving, not two.
    fits: bool,
    failures: u32,
    counters: WriterMetrics,
    span: tracing::Span,
    /// The "store rejected a line" log line, at most once a minute with the count since.
    rejected_log: crate::metrics::RateLimited,
    /// The "write failed" line: the same failure at most once a minute.
    failed_log: crate::metrics::RateLimited,
    last_failure: String,
    /// What the board and `/api/health` show of this output.
    status: watch::Sender<OutputStatus>,
    /// Since when requests fail, while they do.
    outage: Option<Instant>,
    /// After an outage, until the backlog is delivered: how long it lasted, when delivery
    /// resumed (and in Unix ms) and the delivered-lines counter then.
    draining: Option<(Duration, Instant, i64, u64)>,
    /// When the backlog was last read from the spool.
    backlog_read: Option<Instant>,
}

/// How often a writer reads its backlog from the spool at most.
const BACKLOG_EVERY: Duration = Duration::from_secs(1);

/// Requests in flight per output while a backlog drains: two, so the store ingests one
/// request while the next is compressed and sent (issue 21: the drain into a local
/// VictoriaMetrics waited on the store's ingestion of each request in turn). A batch read
/// from the spool then holds up to this many requests' worth of lines, and it is acknowledged
/// in the spool only once the store has acknowledged every one of its pieces.
pub const IN_FLIGHT: usize = 2;

/// What the writer does after one piece's answer.
enum Next {
    /// Go on with the pieces left (after putting these in front of them, in order).
    Continue(Vec<Piece>),
    /// The batch ends here with this outcome.
    End(Outcome),
}

impl Writer {
    /// Sends a batch in pieces, two at a time while they succeed, bisecting rejected pieces
    /// down to the lines at fault. The two requests of a pair may reach the store in either
    /// order (a time-series store keys points by series and timestamp, not arrival); the
    /// batch is acknowledged only after both, so nothing leaves the spool unacknowledged.
    async fn deliver(&mut self, body: &[u8], shutdown: &mut Shutdown) -> Outcome {
        let mut pieces: VecDeque<Piece> = split_lines(
            body,
            0..body.len(),
            self.piece_lines,
            self.options.batch_bytes,
        )
        .into();
        while let Some(first) = pieces.pop_front() {
            if first.lines == 0 {
                continue;
            }
            // A second request only while the store answers: after a failed request or a
            // 413 the pieces go one at a time until one succeeds.
            let second = match pieces.front() {
                Some(p)
                    if self.output.in_flight() > 1
                        && self.failures == 0
                        && self.fits
                        && p.lines > 0 =>
                {
                    pieces.pop_front()
                }
                _ => None,
            };
            let output = &self.output;
            let (a, b) = tokio::select! {
                r = async {
                    match &second {
                        Some(second) => {
                            let (a, b) = tokio::join!(
                                output.send(&body[first.bytes.clone()]),
                                output.send(&body[second.bytes.clone()]),
                            );
                            (a, Some(b))
                        }
                        None => (output.send(&body[first.bytes.clone()]).await, None),
                    }
                } => r,
                _ = shutdown.wait() => return Outcome::Stopped,
            };
            let piece_lines = self.piece_lines;
            let mut front = match self.answered(body, first, a).await {
                Next::Continue(front) => front,
                Next::End(outcome) => return outcome,
            };
            if let (Some(second), Some(b)) = (second, b) {
                match self.answered(body, second, b).await {
                    Next::Continue(more) => front.extend(more),
                    Next::End(outcome) => return outcome,
                }
            }
            if self.piece_lines != piece_lines
                && let (Some(from), Some(to)) = (pieces.front(), pieces.back())
            {
                // A 413: everything not yet sent goes out in pieces of the new size. The
                // pieces left are the rest of the body, in order, with nothing between them.
                let rest = from.bytes.start..to.bytes.end;
                pieces = split_lines(body, rest, self.piece_lines, self.options.batch_bytes).into();
            }
            for piece in front.into_iter().rev() {
                pieces.push_front(piece);
            }
        }
        Outcome::Done
    }

    /// A request succeeded: the output is no longer failing. The first success after an
    /// outage is logged with how long it lasted and how much waits.
    fn succeeded(&mut self) {
        if let Some(since) = self.outage.take() {
            let down = since.elapsed();
            let waiting = self.status.borrow().backlog_lines;
            info!(parent: &self.span, outage_s = secs(down), lines_waiting = waiting, "delivery resumed: sending what waited in the spool, oldest first");
            self.draining = Some((
                down,
                Instant::now(),
                jiff::Timestamp::now().as_millisecond(),
                self.counters.sent.load(Ordering::Relaxed),
            ));
            self.counters.failing.store(0, Ordering::Relaxed);
        }
        let now = jiff::Timestamp::now().as_millisecond();
        self.status.send_if_modified(|s| {
            let changed = s.failing.is_some();
            s.failing = None;
            s.failing_since_ms = None;
            s.last_success_ms = Some(now);
            changed
        });
    }

    /// A request failed and the batch waits for the next attempt.
    fn failed(&mut self, e: &SendError) {
        if self.outage.is_none() {
            self.outage = Some(Instant::now());
            self.counters.failing.store(1, Ordering::Relaxed);
        }
        // An outage during a drain: the drain is logged after the next resumption.
        self.draining = None;
        let now = jiff::Timestamp::now().as_millisecond();
        let reason = e.to_string();
        self.status.send_modify(|s| {
            s.failing = Some(reason);
            s.failing_since_ms.get_or_insert(now);
        });
    }

    /// Whether the backlog was last read a second ago or more (or never).
    fn backlog_due(&self) -> bool {
        self.backlog_read
            .is_none_or(|t| t.elapsed() >= BACKLOG_EVERY)
    }

    /// Waits before the next read, after a read that took everything that was waiting
    /// (`seen`: the spool task's count of appended lines just before it) and its delivery.
    /// While nothing was appended since, nothing waits: sleeps until the spool task appends
    /// (or a second passes, then reads anyway). Then, until the flush interval since the
    /// previous request is over (`due`) or a batch's worth of lines was appended since. The
    /// read may already have held some lines counted after `seen`, so the count can only end
    /// the wait early (the read then finds a partial batch and waits on), never late. Through
    /// a flush interval longer than a second the backlog is still read every second. `false`
    /// on shutdown.
    async fn wait_to_read(
        &mut self,
        reader: &SharedReader,
        appended: &mut watch::Receiver<SpoolStats>,
        shutdown: &mut Shutdown,
        seen: u64,
        due: Option<Instant>,
    ) -> bool {
        if appended.borrow().appended_lines <= seen {
            tokio::select! {
                Ok(_) = appended.wait_for(|s| s.appended_lines > seen) => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.wait() => return false,
            }
        }
        let Some(due) = due else {
            return true;
        };
        let wanted = seen + self.options.batch_lines.max(1) as u64;
        loop {
            if Instant::now() >= due || appended.borrow().appended_lines >= wanted {
                return true;
            }
            self.read_backlog(reader, false).await;
            let until = self
                .backlog_read
                .map_or(due, |t| due.min(t + BACKLOG_EVERY));
            tokio::select! {
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(until)) => {}
                Ok(_) = appended.wait_for(|s| s.appended_lines >= wanted) => {}
                _ = shutdown.wait() => return false,
            }
        }
    }

    /// Reads this output's backlog from the spool (at most once a second unless `now`) and
    /// publishes it.
    async fn read_backlog(&mut self, reader: &SharedReader, now: bool) {
        if !now && !self.backlog_due() {
            return;
        }
        self.backlog_read = Some(Instant::now());
        let reader = reader.clone();
        let backlog = blocking(move || {
            let mut reader = reader.lock().unwrap_or_else(|p| p.into_inner());
            reader.backlog()
        })
        .await;
        let Ok((lines, oldest_ms)) = backlog else {
            return; // a busy spool: the figures are read again at the next call
        };
        self.publish_backlog(lines, oldest_ms);
    }

    /// Publishes the backlog just read (by [`Writer::read_backlog`] or with an
    /// acknowledgement); when it is empty after an outage, logs how much was drained.
    fn publish_backlog(&mut self, lines: u64, oldest_ms: Option<i64>) {
        self.caught_up(lines, oldest_ms);
        let now_ms = jiff::Timestamp::now().as_millisecond();
        self.counters.backlog.store(lines, Ordering::Relaxed);
        self.counters.oldest_age.store(
            oldest_ms.map_or(0, |ms| ((now_ms - ms).max(0) / 1000) as u64),
            Ordering::Relaxed,
        );
        self.status.send_if_modified(|s| {
            let changed = (s.backlog_lines, s.oldest_ms) != (lines, oldest_ms);
            s.backlog_lines = lines;
            s.oldest_ms = oldest_ms;
            changed
        });
    }

    /// After an outage: once every line that waited when delivery resumed is delivered (what
    /// waits now, if anything, came after), one log line with what was drained.
    fn caught_up(&mut self, waiting: u64, oldest_ms: Option<i64>) {
        let Some((_, _, resumed_ms, _)) = self.draining else {
            return;
        };
        if self.outage.is_some() || (waiting > 0 && oldest_ms.is_some_and(|ms| ms < resumed_ms)) {
            return;
        }
        if let Some((down, resumed, _, sent_before)) = self.draining.take() {
            let drained = self
                .counters
                .sent
                .load(Ordering::Relaxed)
                .saturating_sub(sent_before);
            info!(parent: &self.span, lines_drained = drained, drain_s = secs(resumed.elapsed()), outage_s = secs(down), "backlog drained after an outage: the output is delivering as it comes again");
        }
    }

    /// Counts one piece's answer and says what follows: pieces to send again first (halves of
    /// a rejected piece, smaller pieces after a 413), or the end of the batch.
    async fn answered(&mut self, body: &[u8], piece: Piece, result: Result<(), SendError>) -> Next {
        match result {
            Ok(()) => {
                self.succeeded();
                self.failures = 0;
                // The next outage's first failure is news again.
                self.last_failure.clear();
                self.fits = true;
                self.counters
                    .sent
                    .fetch_add(piece.lines as u64, Ordering::Relaxed);
                let now = jiff::Timestamp::now().as_second();
                self.counters
                    .last_success
                    .store(now.max(0) as u64, Ordering::Relaxed);
                Next::Continue(Vec::new())
            }
            Err(SendError::TooLarge) if piece.lines > 1 => {
                self.counters.error("too_large");
                self.piece_lines = (piece.lines / 2).max(1);
                self.fits = false;
                warn!(parent: &self.span, lines = piece.lines, next = self.piece_lines, "store says the request is too large: sending smaller ones");
                Next::Continue(split_lines(
                    body,
                    piece.bytes,
                    self.piece_lines,
                    self.options.batch_bytes,
                ))
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
                Next::Continue(Vec::new())
            }
            Err(SendError::Rejected { status, message }) if piece.lines > 1 => {
                // Find the bad line(s): resend in halves; the good half goes through.
                self.counters.error("rejected");
                info!(parent: &self.span, status, %message, lines = piece.lines, "store rejected a batch: bisecting to find the bad lines");
                Next::Continue(halves(body, piece).into())
            }
            Err(SendError::Rejected { status, message }) => {
                self.counters.error("rejected");
                self.dead_letter(status, &message, piece.lines, &body[piece.bytes])
                    .await;
                Next::Continue(Vec::new())
            }
            Err(e) => {
                let config = matches!(e, SendError::Config { .. } | SendError::Refused(_));
                self.counters.error(if config { "config" } else { "retry" });
                self.failed(&e);
                self.failures = self.failures.saturating_add(1);
                let backoff = retry_delay(self.failures, &e, self.options.retry_max);
                // The same failure again (a store down for an hour) is logged at most once a
                // minute; a different one at once.
                let text = e.to_string();
                let due = self.failed_log.due(std::time::Instant::now());
                if due.is_some() || text != self.last_failure {
                    let unlogged = due.unwrap_or(0);
                    if config {
                        error!(parent: &self.span, error = %text, retry_in = ?backoff, unlogged, "output misconfigured: data is kept in the spool");
                    } else {
                        warn!(parent: &self.span, error = %text, retry_in = ?backoff, unlogged, "write failed: data is kept in the spool (the same failure is logged at most once a minute; `unlogged` since the last line)");
                    }
                    self.last_failure = text;
                }
                Next::End(Outcome::Retry(backoff))
            }
        }
    }

    /// Keeps rejected lines, with the store's reason, for a person to look at.
    async fn dead_letter(&mut self, status: u16, message: &str, lines: usize, body: &[u8]) {
        self.counters
            .dead
            .fetch_add(lines as u64, Ordering::Relaxed);
        let file = &self.options.dead_letter;
        if let Some(unlogged) = self.rejected_log.due(std::time::Instant::now()) {
            error!(parent: &self.span, status, %message, lines, unlogged, file = %file.display(), "store rejected a line: moved to the dead-letter file (logged at most once a minute; `unlogged` rejections since the last line, all counted in shopfloor_output_dead_letter_lines_total)");
        }
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
    status: watch::Sender<OutputStatus>,
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
    // With two requests in flight a batch holds two requests' worth of lines; it is
    // acknowledged once the store has taken both.
    let in_flight = output.in_flight();
    let flush_interval = options.flush_interval;
    let mut writer = Writer {
        output,
        piece_lines: batch_lines,
        fits: true,
        options,
        failures: 0,
        rejected_log: crate::metrics::RateLimited::new(Duration::from_secs(60)),
        failed_log: crate::metrics::RateLimited::new(Duration::from_secs(60)),
        last_failure: String::new(),
        counters,
        span: span.clone(),
        status,
        outage: None,
        draining: None,
        backlog_read: None,
    };
    // A first partial batch goes out at once.
    let mut last_send = Instant::now().checked_sub(flush_interval);
    // A spool that cannot be read or acknowledged (a busy or full disk) fails every second.
    let mut spool_log = crate::metrics::RateLimited::new(Duration::from_secs(60));
    // Set when the last read took everything that was waiting and that is delivered and
    // acknowledged (or there was nothing): the spool task's count of appended lines taken just
    // before that read. Whatever waits now was appended since.
    let mut read_all: Option<u64> = None;
    'batches: loop {
        if shutdown.is_triggered() {
            break;
        }
        if let Some(seen) = read_all.take() {
            let due = last_send.map(|t| t + flush_interval);
            let waited = writer
                .wait_to_read(&reader, &mut appended, &mut shutdown, seen, due)
                .await;
            if !waited {
                break;
            }
        }
        let seen = appended.borrow().appended_lines;
        let batch_bytes = writer.options.batch_bytes.max(1);
        let batch = match next_batch(
            &reader,
            batch_lines * in_flight,
            batch_bytes.saturating_mul(in_flight),
        )
        .await
        {
            Ok(batch) => batch,
            Err(e) => {
                // A busy or full disk passes; the writer must outlive it.
                if let Some(unlogged) = spool_log.due(std::time::Instant::now()) {
                    error!(parent: &span, error = %e, retry_in = ?SPOOL_RETRY, unlogged, "spool read failed (logged at most once a minute; `unlogged` failures since the last line)");
                }
                tokio::select! {
                    _ = tokio::time::sleep(SPOOL_RETRY) => {}
                    _ = shutdown.wait() => break,
                }
                writer.read_backlog(&reader, false).await;
                continue;
            }
        };
        let Some(batch) = batch else {
            if writer.status.borrow().backlog_lines > 0 || writer.draining.is_some() {
                writer.read_backlog(&reader, true).await;
            }
            // Nothing waiting: the next turn sleeps until the spool task appends.
            read_all = Some(seen);
            continue;
        };
        // Batching by time, for a read that came early (see `wait_to_read`): a batch that is
        // not full waits out the flush interval since the previous request, unless enough
        // lines arrive meanwhile to fill it, and is read again.
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
                Ok(_) = fill => {}
                _ = shutdown.wait() => break,
            }
            continue;
        }
        let outcome = writer.deliver(&batch.body, &mut shutdown).await;
        last_send = Some(Instant::now());
        match outcome {
            Outcome::Done => {
                // The backlog is read in the same trip to the blocking pool: after a batch
                // that took everything it is only what came during the send (a few rows, cheap
                // to count); while a backlog drains, once a second (counting reads every row
                // past the cursor).
                let with_backlog = !batch.more || writer.backlog_due();
                if with_backlog {
                    writer.backlog_read = Some(Instant::now());
                }
                match ack(&reader, batch.last_id, with_backlog).await {
                    Ok(backlog) => {
                        if let Some((lines, oldest_ms)) = backlog {
                            writer.publish_backlog(lines, oldest_ms);
                        }
                        if !batch.more {
                            read_all = Some(seen);
                        }
                    }
                    Err(e) => {
                        // The cursor stays where it was: the batch is sent again (at least
                        // once) when the spool can be written again, e.g. once a full disk
                        // has room.
                        if let Some(unlogged) = spool_log.due(std::time::Instant::now()) {
                            error!(parent: &span, error = %e, retry_in = ?SPOOL_RETRY, unlogged, "spool ack failed: the batch will be sent again (logged at most once a minute; `unlogged` failures since the last line)");
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(SPOOL_RETRY) => {}
                            _ = shutdown.wait() => break,
                        }
                    }
                }
            }
            Outcome::Retry(wait) => {
                // The backlog grows meanwhile: it is read again every second of the wait.
                let until = tokio::time::Instant::now() + wait;
                loop {
                    writer.read_backlog(&reader, false).await;
                    let step = until
                        .saturating_duration_since(tokio::time::Instant::now())
                        .min(BACKLOG_EVERY);
                    if step.is_zero() {
                        break;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(step) => {}
                        _ = shutdown.wait() => break 'batches,
                    }
                }
            }
            Outcome::Stopped => break,
        }
    }
    info!(parent: &span, "writer stopped");
}

/// A duration in seconds, to a tenth, for the log.
fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 10.0).round() / 10.0
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
    // Jitter of up to a quarter, so many gateways do not retry in step after an outage. It is
    // taken off, never added: `retry_max` is the longest wait, as the README says.
    let nanos = jiff::Timestamp::now().subsec_nanosecond().unsigned_abs();
    let jitter = base.mul_f64(f64::from(nanos % 1000) / 4000.0);
    base - jitter
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
    lines: usize,
    bytes: usize,
) -> Result<Option<spool::Batch>, SpoolError> {
    let reader = reader.clone();
    blocking(move || {
        let mut reader = reader.lock().unwrap_or_else(|p| p.into_inner());
        reader.next_batch(lines, bytes)
    })
    .await
}

/// Acknowledges a delivered batch and, with `backlog`, reads the output's backlog after it
/// in the same call on the blocking pool: its lines and oldest append time, or `None` when
/// not asked for or when it could not be read (it is read again at the next chance).
async fn ack(
    reader: &SharedReader,
    last_id: i64,
    backlog: bool,
) -> Result<Option<(u64, Option<i64>)>, SpoolError> {
    let reader = reader.clone();
    blocking(move || {
        let mut reader = reader.lock().unwrap_or_else(|p| p.into_inner());
        reader.ack(last_id)?;
        Ok(if backlog { reader.backlog().ok() } else { None })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_bounded_by_bytes_and_a_line_too_long_goes_alone() {
        // Lines of 4, 4, 12 and 4 bytes, at most 10 bytes a piece: "a 1\nb 2\n" (8), then
        // the 12-byte line alone (it cannot be split, and waiting for nothing helps no one),
        // then "d 4\n".
        let body = b"a 1\nb 2\ncccccc 333\nd 4\n";
        let pieces = split_lines(body, 0..body.len(), 100, 10);
        let texts: Vec<&[u8]> = pieces.iter().map(|p| &body[p.bytes.clone()]).collect();
        assert_eq!(
            texts,
            [&b"a 1\nb 2\n"[..], &b"cccccc 333\n"[..], &b"d 4\n"[..]]
        );
        assert_eq!(
            pieces.iter().map(|p| p.lines).collect::<Vec<_>>(),
            [2, 1, 1]
        );
        // Both bounds at once: 2 lines or 10 bytes, whichever comes first.
        let body = b"a 1\nb 2\nc 3\nd 4\ne 5\n";
        let pieces = split_lines(body, 0..body.len(), 2, 7);
        assert_eq!(
            pieces.iter().map(|p| p.lines).collect::<Vec<_>>(),
            [1, 1, 1, 1, 1]
        );
        // A last line without its `\n` that would overflow the piece goes alone too.
        let cut = b"a 1\nb 2\nc 33333";
        let pieces = split_lines(cut, 0..cut.len(), 100, 10);
        assert_eq!(
            pieces
                .iter()
                .map(|p| (p.lines, p.bytes.clone()))
                .collect::<Vec<_>>(),
            [(2, 0..8), (1, 8..15)]
        );
    }

    #[test]
    fn a_body_splits_into_pieces_of_whole_lines() {
        let body = b"a 1\nb 2\nc 3\nd 4\ne 5\n";
        let pieces = split_lines(body, 0..body.len(), 2, usize::MAX);
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
        let tail = split_lines(body, 4..body.len(), 3, usize::MAX);
        assert_eq!(tail.iter().map(|p| p.lines).collect::<Vec<_>>(), [3, 1]);
        assert_eq!(&body[tail[1].bytes.clone()], b"e 5\n");
        // A last line without its `\n` is still a line.
        let cut = &body[..body.len() - 1];
        let pieces = split_lines(cut, 0..cut.len(), 10, usize::MAX);
        assert_eq!((pieces.len(), pieces[0].lines), (1, 5));
    }

    #[test]
    fn back_off_doubles_to_the_ceiling_less_at_most_a_quarter_of_jitter() {
        let err = SendError::Retry {
            reason: String::new(),
            after: None,
        };
        let max = Duration::from_secs(60);
        // 0.5 s, 1 s, 2 s, … 32 s, then the 60 s ceiling; each less up to 25 %, so no wait is
        // ever longer than `retry_max` (waits of 62–74 s were seen with the jitter on top).
        for (failures, base_ms) in [
            (1, 500),
            (2, 1000),
            (3, 2000),
            (7, 32_000),
            (8, 60_000),
            (40, 60_000),
        ] {
            // Many draws, since the jitter comes from the clock's nanoseconds.
            for _ in 0..200 {
                let d = retry_delay(failures, &err, max).as_millis() as u64;
                assert!(
                    (base_ms - base_ms / 4..=base_ms).contains(&d),
                    "failure {failures}: {d} ms"
                );
            }
        }
        let busy = SendError::Retry {
            reason: String::new(),
            after: Some(Duration::from_secs(7)),
        };
        assert_eq!(retry_delay(1, &busy, max), Duration::from_secs(7));
    }
}
