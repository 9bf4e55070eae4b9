//! Spool benchmarks (a plain binary, `harness = false`): append throughput, drain throughput
//! into a local VictoriaMetrics, and the agent's memory while a large backlog drains.
//!
//! ```sh
//! cargo bench --bench spool                      # all three, default sizes
//! cargo bench --bench spool -- append            # one of: append, drain, rss, trim
//! cargo bench --bench spool -- rss --mb 1024     # backlog size for rss (default 1024 MiB)
//! cargo bench --bench spool -- trim --secs 30    # append latency while trimming (default 20 s)
//! ```
//!
//! Every figure goes to standard output with the machine's load average, because the machine
//! may be shared with other builds while it runs. Method and results: docs/BENCHMARKS.md.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use shopfloor::metrics::Metrics;
use shopfloor::shutdown;
use shopfloor::sink::config::InfluxOutput;
use shopfloor::sink::influx::InfluxWriter;
use shopfloor::sink::spool::{Limits, Spool, SpoolStats, SyncPolicy};
use shopfloor::sink::{self, Output};
use tokio::sync::watch;

/// Lines per batch handed to the spool task: the engine's `BATCH_LINES`, which it hands over
/// full under load.
const STEP_LINES: usize = 1024;

/// A `signal` line as the engine writes it for one machine poll (about 190 bytes).
fn line(i: u64, start_ns: i128) -> String {
    format!(
        "signal,county=demo-county,sector=doors,enterprise=demo-enterprise,machine=cnc{:03},kind=machining_centre,cnc=true run=true,power={}i,spindle_rpm={}i,alarm_code=0i,parts={}i,mode=1i {}",
        i % 100,
        i % 7,
        1000 + i % 2000,
        i / 100,
        // Machine i % 100 polled every 10 ms: unique series and timestamp per line.
        start_ns + i128::from(i / 100) * 10_000_000
    )
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU seconds (user + system) this process has used.
fn cpu_seconds() -> f64 {
    let ticks: u64 = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name, which is in parentheses: utime is the 12th.
            let rest = s.rsplit_once(')')?.1.to_string();
            let fields: Vec<u64> = rest
                .split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|f| f.parse().ok())
                .collect();
            Some(fields.iter().sum())
        })
        .unwrap_or(0);
    // USER_HZ is 100 on every Linux the agent runs on.
    ticks as f64 / 100.0
}

fn file_size(path: &Path) -> u64 {
    let wal = format!("{}-wal", path.display());
    std::fs::metadata(path).map_or(0, |m| m.len()) + std::fs::metadata(wal).map_or(0, |m| m.len())
}

/// Appends `lines` through the spool task, as the engine hands them over, and returns lines/s.
fn append_through_task(path: &Path, lines: u64, sync: SyncPolicy) -> f64 {
    let limits = Limits {
        sync,
        ..Limits::bytes(u64::MAX)
    };
    let spool = Spool::open(path, limits, &["bench".to_string()]).expect("spool");
    let (stats_tx, stats_rx) = watch::channel(SpoolStats::default());
    let (tx, rx) = flume::bounded(sink::SPOOL_QUEUE);
    let thread = sink::spawn_spool_task(
        spool,
        path.to_path_buf(),
        rx,
        stats_tx,
        Metrics::new(),
        Duration::from_secs(1),
    );
    let start_ns = jiff::Timestamp::now().as_nanosecond();
    // Lines are formatted before the clock starts: the engine's cost is not the spool's.
    let steps: Vec<Vec<String>> = (0..lines / STEP_LINES as u64)
        .map(|s| {
            (0..STEP_LINES as u64)
                .map(|j| line(s * STEP_LINES as u64 + j, start_ns))
                .collect()
        })
        .collect();
    let t = Instant::now();
    for step in steps {
        tx.send(step).expect("spool task alive");
    }
    drop(tx);
    thread.join().expect("spool task");
    let elapsed = t.elapsed().as_secs_f64();
    // Whole steps only: the figure is for what was sent.
    let sent = lines / STEP_LINES as u64 * STEP_LINES as u64;
    assert_eq!(stats_rx.borrow().appended_lines, sent);
    sent as f64 / elapsed
}

/// Fills a spool directly (no timing) with about `lines` lines.
fn fill(path: &Path, lines: u64) -> SpoolStats {
    let mut spool = Spool::open(path, Limits::bytes(u64::MAX), &["vm".to_string()]).expect("spool");
    let start_ns = jiff::Timestamp::now().as_nanosecond() - 3_600_000_000_000;
    let group = 2560u64;
    let mut i = 0;
    while i < lines {
        let chunk: Vec<String> = (i..(i + group).min(lines))
            .map(|n| line(n, start_ns))
            .collect();
        spool
            .append(&[chunk], jiff::Timestamp::now().as_millisecond())
            .expect("append");
        i += group;
    }
    spool.stats()
}

/// Drains the spool at `path` into `vm` with one writer; returns lines/s, RSS samples in KiB
/// taken every second, and this process's CPU seconds per million lines.
async fn drain(
    path: &Path,
    vm: &common::VictoriaMetrics,
    gzip: bool,
    lines: u64,
) -> (f64, Vec<u64>, f64) {
    let cfg: InfluxOutput = toml::from_str(&format!(
        "name = \"vm\"\nurl = \"{}\"\norg = \"o\"\nbucket = \"b\"\ngzip = {gzip}",
        vm.url()
    ))
    .expect("output config");
    let metrics = Metrics::new();
    let (trigger, shutdown) = shutdown::channel();
    let stats = Spool::open(path, Limits::bytes(u64::MAX), &["vm".to_string()])
        .expect("spool")
        .stats();
    let (_stats_tx, stats_rx) = watch::channel(stats);
    let dir = path.parent().expect("spool dir");
    let writer = tokio::spawn(sink::run_writer(
        Output::Influx(InfluxWriter::new("vm", &cfg).expect("writer")),
        path.to_path_buf(),
        cfg.writer_options("vm", dir),
        stats_rx,
        watch::channel(Default::default()).0,
        metrics.clone(),
        shutdown,
    ));
    let sent = metrics.counter("shopfloor_output_lines_total", "", &[("output", "vm")]);
    let t = Instant::now();
    let cpu = cpu_seconds();
    let mut samples = Vec::new();
    let mut last_sample = Instant::now();
    while sent.load(Ordering::Relaxed) < lines {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if last_sample.elapsed() >= Duration::from_secs(1) {
            samples.push(rss_kib());
            last_sample = Instant::now();
        }
    }
    let elapsed = t.elapsed().as_secs_f64();
    let cpu_per_million = (cpu_seconds() - cpu) * 1e6 / lines as f64;
    trigger.fire();
    let _ = writer.await;
    (lines as f64 / elapsed, samples, cpu_per_million)
}

fn bench_append() {
    let dir = tempfile::tempdir().expect("temp dir");
    let lines = 2_000_000;
    println!(
        "## append ({lines} lines of ~190 bytes in steps of {STEP_LINES}, through the spool task)"
    );
    let rate = append_through_task(&dir.path().join("normal.db"), lines, SyncPolicy::Normal);
    println!(
        "sync=normal: {rate:.0} lines/s, file {} MB (load {})",
        file_size(&dir.path().join("normal.db")) / 1_000_000,
        load()
    );
    let lines = 200_000;
    let rate = append_through_task(&dir.path().join("full.db"), lines, SyncPolicy::Full);
    println!(
        "sync=full ({lines} lines): {rate:.0} lines/s (load {})",
        load()
    );
}

async fn bench_drain() {
    let dir = tempfile::tempdir().expect("temp dir");
    let vm = common::VictoriaMetrics::start().await;
    for gzip in [true, false] {
        let path = dir.path().join(format!("drain-{gzip}.db"));
        let lines = 1_000_000;
        let stats = fill(&path, lines);
        let (rate, _, cpu) = drain(&path, &vm, gzip, lines).await;
        println!(
            "## drain gzip={gzip}: {lines} lines ({} MB) in batches of 5000: {rate:.0} lines/s, agent CPU {cpu:.1} s per million lines (load {})",
            stats.bytes / 1_000_000,
            load()
        );
    }
}

async fn bench_rss(mb: u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("backlog.db");
    let lines = mb * 1024 * 1024 / line(0, 0).len() as u64;
    let t = Instant::now();
    let stats = fill(&path, lines);
    println!(
        "## rss: backlog of {} lines, {} MiB of line protocol, spool file {} MiB, filled in {:.0} s",
        stats.lines,
        stats.bytes >> 20,
        file_size(&path) >> 20,
        t.elapsed().as_secs_f64()
    );
    let vm = common::VictoriaMetrics::start().await;
    let before = rss_kib();
    let (rate, samples, cpu) = drain(&path, &vm, true, stats.lines).await;
    // The first tenth is warm-up (page cache, HTTP connection, allocator arenas).
    let steady = &samples[samples.len() / 10..];
    let (min, max) = (
        steady.iter().copied().min().unwrap_or(0),
        steady.iter().copied().max().unwrap_or(0),
    );
    println!(
        "drained at {rate:.0} lines/s (agent CPU {cpu:.1} s per million lines); RSS before {} MiB, during drain (after the first tenth) {}–{} MiB, spread {:.1} % (load {})",
        before >> 10,
        min >> 10,
        max >> 10,
        if min > 0 {
            (max - min) as f64 * 100.0 / min as f64
        } else {
            0.0
        },
        load()
    );
    println!(
        "rss samples (MiB, 1/s): {:?}",
        samples.iter().map(|s| s >> 10).collect::<Vec<_>>()
    );
}

/// Percentiles of a sorted list of durations, in milliseconds.
fn percentiles(sorted: &[Duration]) -> String {
    let at = |q: f64| {
        let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
        sorted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    format!(
        "p50 {:.2} ms, p90 {:.2}, p99 {:.2}, p99.9 {:.2}, max {:.2} ({} samples)",
        at(0.5),
        at(0.9),
        at(0.99),
        at(0.999),
        at(1.0),
        sorted.len()
    )
}

/// Append latency while delivered rows are trimmed (issue 21: "cannot trim the spool …
/// database is locked" at 50k messages a second). One thread does what the spool task does:
/// appends batches of 1024 lines (the engine's `BATCH_LINES`) as fast as it can and, once a
/// second between two appends, trims what was delivered, applies the age bound and syncs the
/// log (`Spool::sync_log`; SQLite checkpoints by itself), all on the one appending connection. A second thread is a writer that keeps up: it reads
/// batches of 5000 lines from its own connection and acknowledges each at once (a write to
/// the cursor table), the way `sink::run_writer` does after a 2xx. Every append's and every
/// housekeeping round's duration is recorded, and every error counted.
fn bench_trim(secs: u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("spool.db");
    let limits = Limits {
        max_age: Some(Duration::from_secs(3600)),
        ..Limits::bytes(u64::MAX)
    };
    let mut spool = Spool::open(&path, limits, &["bench".to_string()]).expect("spool");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (path, stop) = (path.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut reader =
                shopfloor::sink::spool::SpoolReader::open(&path, "bench").expect("reader");
            let (mut acks, mut errors, mut lines) = (0u64, 0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                match reader.next_batch(5000, usize::MAX) {
                    Ok(Some(batch)) => match reader.ack(batch.last_id) {
                        Ok(()) => {
                            acks += 1;
                            lines += batch.lines as u64;
                        }
                        Err(_) => errors += 1,
                    },
                    Ok(None) => std::thread::sleep(Duration::from_millis(1)),
                    Err(_) => errors += 1,
                }
            }
            (acks, errors, lines)
        })
    };
    let start_ns = jiff::Timestamp::now().as_nanosecond();
    let batch: Vec<String> = (0..1024).map(|i| line(i, start_ns)).collect();
    let mut appends = Vec::new();
    let mut housekeeping = Vec::new();
    let (mut append_errors, mut trim_errors) = (Vec::new(), Vec::new());
    let t = Instant::now();
    let mut last_housekeeping = Instant::now();
    while t.elapsed() < Duration::from_secs(secs) {
        let a = Instant::now();
        match spool.append(&[&batch[..]], jiff::Timestamp::now().as_millisecond()) {
            Ok(_) => appends.push(a.elapsed()),
            Err(e) => append_errors.push(e.to_string()),
        }
        if last_housekeeping.elapsed() >= Duration::from_secs(1) {
            let h = Instant::now();
            if let Err(e) = spool.trim() {
                trim_errors.push(format!("trim: {e}"));
            }
            if let Err(e) = spool.expire(jiff::Timestamp::now().as_millisecond()) {
                trim_errors.push(format!("expire: {e}"));
            }
            if let Err(e) = spool.sync_log() {
                trim_errors.push(format!("sync: {e}"));
            }
            housekeeping.push(h.elapsed());
            last_housekeeping = Instant::now();
        }
    }
    let elapsed = t.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let (acks, read_errors, read_lines) = reader.join().expect("reader");
    appends.sort_unstable();
    housekeeping.sort_unstable();
    let appended = appends.len() as u64 * 1024;
    println!(
        "trim: {secs} s, {appended} lines appended ({:.0} lines/s) in batches of 1024; the writer read and acknowledged {read_lines} lines in {acks} batches; load {}",
        appended as f64 / elapsed,
        load()
    );
    println!("trim: append latency {}", percentiles(&appends));
    println!(
        "trim: housekeeping (trim + expire + sync) {}",
        percentiles(&housekeeping)
    );
    println!(
        "trim: errors: {} appends, {} housekeeping, {} writer reads/acks; spool left {} lines",
        append_errors.len(),
        trim_errors.len(),
        read_errors,
        spool.stats().lines
    );
    for e in append_errors.iter().chain(&trim_errors).take(5) {
        println!("trim:   {e}");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes `--bench`; `cargo test --all-targets` (scripts/test) runs this
    // binary too, without it, and must not start a minutes-long benchmark in a debug build.
    if !args.iter().any(|a| a == "--bench") {
        println!("spool benchmarks: run with `cargo bench --bench spool`");
        return;
    }
    // `cargo bench` passes `--bench`; anything else selects a part.
    let wanted: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| ["append", "drain", "rss", "trim"].contains(a))
        .collect();
    let mb = args
        .iter()
        .position(|a| a == "--mb")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let run = |part: &str| wanted.is_empty() || wanted.contains(&part);
    shopfloor::install_crypto_provider();
    println!(
        "# spool benchmarks: {} cores, load {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load()
    );
    if run("append") {
        bench_append();
    }
    if run("trim") {
        let secs = args
            .iter()
            .position(|a| a == "--secs")
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(20);
        bench_trim(secs);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if run("drain") {
        runtime.block_on(bench_drain());
    }
    if run("rss") {
        runtime.block_on(bench_rss(mb));
    }
}
