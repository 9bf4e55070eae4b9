//! Store and forward against real stores: the spool, the writers and HTTP as the agent runs
//! them, fed by a test driver instead of the engine (the driver's lines are numbered, so what
//! must be in the store is known exactly), and the real `shopfloor run` binary killed with
//! SIGKILL.
//!
//! The outage test lasts a little over a minute by design (the issue asks for a 60 s outage);
//! everything else here takes seconds.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{Influx1, VictoriaMetrics};
use jiff::Timestamp;
use shopfloor::metrics::Metrics;
use shopfloor::shutdown::{self, Trigger};
use shopfloor::sink::config::InfluxOutput;
use shopfloor::sink::influx::InfluxWriter;
use shopfloor::sink::spool::{Limits, Spool};
use shopfloor::sink::{self, Output, WriterOptions};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The spool task and one writer per output, as `agent::start` wires them, without the engine.
struct Pipeline {
    records: flume::Sender<Vec<String>>,
    metrics: Metrics,
    trigger: Trigger,
    writers: JoinSet<()>,
    spool_thread: std::thread::JoinHandle<()>,
    dir: tempfile::TempDir,
}

impl Pipeline {
    /// `outputs` are `[[influx]]` tables in TOML. `fill` runs on the spool before the spool
    /// task takes it over (for tests that need exact appends).
    fn start(outputs: &[&str], limits: Limits, fill: impl FnOnce(&mut Spool)) -> Pipeline {
        Self::start_in(
            tempfile::tempdir().expect("temp dir"),
            outputs,
            limits,
            fill,
        )
    }

    /// [`Pipeline::start`] on the spool in `dir`, e.g. one that a stopped pipeline left.
    fn start_in(
        dir: tempfile::TempDir,
        outputs: &[&str],
        limits: Limits,
        fill: impl FnOnce(&mut Spool),
    ) -> Pipeline {
        let path = dir.path().join("spool.db");
        let configs: Vec<InfluxOutput> = outputs
            .iter()
            .map(|text| toml::from_str(text).expect("output config"))
            .collect();
        let names: Vec<String> = configs
            .iter()
            .map(|c| c.name.clone().expect("test outputs are named"))
            .collect();
        let mut spool = Spool::open(&path, limits, &names).expect("spool opens");
        fill(&mut spool);
        let metrics = Metrics::new();
        let (trigger, shutdown) = shutdown::channel();
        let (stats_tx, stats_rx) = watch::channel(spool.stats());
        // Room for 4096 steps of the driver's: it hands over a few lines at a time with
        // `try_send`, where the engine hands over batches of up to 1024 and waits for room.
        let (records, records_rx) = flume::bounded(4096);
        let spool_thread = sink::spawn_spool_task(
            spool,
            path.clone(),
            records_rx,
            stats_tx,
            metrics.clone(),
            Duration::from_secs(1),
        );
        let mut writers = JoinSet::new();
        for (cfg, name) in configs.iter().zip(&names) {
            let output = Output::Influx(InfluxWriter::new(name, cfg).expect("writer"));
            writers.spawn(sink::run_writer(
                output,
                path.clone(),
                cfg.writer_options(name, dir.path()),
                stats_rx.clone(),
                tokio::sync::watch::channel(Default::default()).0,
                metrics.clone(),
                shutdown.clone(),
            ));
        }
        Pipeline {
            records,
            metrics,
            trigger,
            writers,
            spool_thread,
            dir,
        }
    }

    fn dead_letter(&self, output: &str) -> String {
        std::fs::read_to_string(WriterOptions::new(output, self.dir.path()).dead_letter)
            .unwrap_or_default()
    }

    fn metric(&self, name: &str, label: Option<(&str, &str)>) -> u64 {
        self.metrics
            .read()
            .iter()
            .filter(|r| r.name == name)
            .filter(|r| {
                label.is_none_or(|(k, v)| r.labels.iter().any(|(lk, lv)| *lk == k && lv == v))
            })
            .map(|r| r.value)
            .sum()
    }

    /// Stops every task and hands back the directory with the spool.
    async fn stop(self) -> tempfile::TempDir {
        self.trigger.fire();
        drop(self.records);
        let mut writers = self.writers;
        while writers.join_next().await.is_some() {}
        let thread = self.spool_thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        self.dir
    }
}

fn vm_output(name: &str, vm: &VictoriaMetrics) -> String {
    // retry_max 2 s: after a minute's outage the writer must not sit out a 60 s back-off
    // before the test sees it recover. A site would keep the default.
    format!(
        "name = \"{name}\"\nurl = \"{}\"\norg = \"o\"\nbucket = \"b\"\nretry_max = \"2s\"",
        vm.url()
    )
}

fn influx_output(name: &str, influx: &Influx1, db: &str) -> String {
    format!(
        "name = \"{name}\"\nurl = \"{}\"\napi = \"v1\"\ndatabase = \"{db}\"\nretry_max = \"2s\"",
        influx.url()
    )
}

/// Values stored in VictoriaMetrics for a selector, summed over its series.
async fn vm_count(vm: &VictoriaMetrics, selector: &str, expected: usize) -> usize {
    let series = vm
        .wait_for_export(selector, |s| {
            s.iter().map(|x| x.values.len()).sum::<usize>() >= expected
        })
        .await;
    series.iter().map(|x| x.values.len()).sum()
}

async fn influx_count(influx: &Influx1, db: &str, query: &str, expected: i64) -> i64 {
    let rows = influx
        .wait_for_rows(db, query, |rows| {
            rows.first()
                .and_then(|r| r.get("count"))
                .and_then(|c| c.as_i64())
                .is_some_and(|c| c >= expected)
        })
        .await;
    rows[0]["count"].as_i64().unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sixty_second_outage_at_1000_points_per_second_loses_no_point() {
    // Deduplication: a batch resent after a failure overwrites itself, as in InfluxDB.
    let mut vm = VictoriaMetrics::start_with_args(&["-dedup.minScrapeInterval=1ms"]).await;
    let mut influx = Influx1::start().await;
    influx.create_db("outage").await;
    let pipeline = Pipeline::start(
        &[
            &vm_output("vm", &vm),
            &influx_output("influx", &influx, "outage"),
        ],
        Limits::bytes(1 << 30),
        |_| {},
    );

    // The driver: every 10 ms a step of 10 lines, as an engine step would hand them over.
    // Point i is in series s = i % 10, stamped start + i ms, so each series has a point every
    // 10 ms and no two points share a series and a timestamp.
    let start_ns = Timestamp::now().as_nanosecond();
    let records = pipeline.records.clone();
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let driver = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let mut n: u64 = 0;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop_rx.changed() => break,
            }
            let step: Vec<String> = (n..n + 10)
                .map(|i| {
                    format!(
                        "outage,s={} seq={i}i {}",
                        i % 10,
                        start_ns + i128::from(i) * 1_000_000
                    )
                })
                .collect();
            records.try_send(step).expect("the spool task keeps up");
            n += 10;
        }
        n
    });

    tokio::time::sleep(Duration::from_secs(3)).await;
    vm.stop().await;
    influx.stop().await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    vm.restart().await;
    influx.restart().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop_tx.send_replace(true);
    let sent = driver.await.expect("driver") as usize;
    // About 66 s at 1000 points a second.
    assert!(sent > 60_000, "the driver wrote only {sent} points");

    let in_vm = vm_count(&vm, "outage_seq", sent).await;
    let in_influx = influx_count(
        &influx,
        "outage",
        "SELECT COUNT(seq) FROM outage",
        sent as i64,
    )
    .await;
    assert_eq!(in_vm, sent, "VictoriaMetrics has every point, once");
    assert_eq!(in_influx, sent as i64, "InfluxDB has every point, once");
    assert_eq!(pipeline.metric("shopfloor_spool_dropped_lines", None), 0);
    assert!(pipeline.metric("shopfloor_output_errors_total", Some(("kind", "retry"))) > 0);
    assert_eq!(pipeline.dead_letter("vm"), "");
    assert_eq!(pipeline.dead_letter("influx"), "");
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_that_is_down_does_not_hold_back_another() {
    let vm = VictoriaMetrics::start_with_args(&["-dedup.minScrapeInterval=1ms"]).await;
    let mut influx = Influx1::start().await;
    influx.create_db("two").await;
    influx.stop().await;
    let pipeline = Pipeline::start(
        &[
            &vm_output("vm", &vm),
            &influx_output("influx", &influx, "two"),
        ],
        Limits::bytes(1 << 30),
        |_| {},
    );
    let t0 = Timestamp::now().as_nanosecond();
    for step in 0..20 {
        let lines: Vec<String> = (step * 50..step * 50 + 50)
            .map(|i| format!("two,s=a v={i}i {}", t0 + i128::from(i) * 1_000_000))
            .collect();
        pipeline.records.try_send(lines).expect("queue");
    }
    // VictoriaMetrics gets all 1000 while InfluxDB is down; the spool keeps them for InfluxDB.
    assert_eq!(vm_count(&vm, "two_v", 1000).await, 1000);
    assert_eq!(pipeline.metric("shopfloor_spool_lines", None), 1000);
    assert_eq!(
        pipeline.metric("shopfloor_output_lines_total", Some(("output", "influx"))),
        0
    );
    influx.restart().await;
    let stored = influx_count(&influx, "two", "SELECT COUNT(v) FROM two", 1000).await;
    assert_eq!(stored, 1000);
    // Once both have them, the spool lets them go (trimmed within a second or so).
    common::eventually("the spool trimmed", Duration::from_secs(10), || async {
        match pipeline.metric("shopfloor_spool_lines", None) {
            0 => Ok(()),
            n => Err(format!("{n} lines still waiting")),
        }
    })
    .await;
    pipeline.stop().await;
}

/// The write requests VictoriaMetrics has had on its InfluxDB endpoints (`/api/v2/write`
/// counts as `/influx/write`), read from its own `/metrics` once they show `rows` rows
/// inserted (the page lags the writes by up to a few seconds).
async fn vm_write_requests(vm: &VictoriaMetrics, rows: u64) -> u64 {
    let http = common::http_client();
    let url = format!("{}/metrics", vm.url());
    let what = format!("VictoriaMetrics /metrics to show {rows} rows inserted");
    common::eventually(&what, Duration::from_secs(30), || async {
        let text = common::get_text(&http, &url).await?;
        let counter = |prefix: &str| -> Option<u64> {
            let line = text.lines().find(|l| l.starts_with(prefix))?;
            line.rsplit(' ').next()?.parse().ok()
        };
        match (
            counter("vm_rows_inserted_total{type=\"influx\"}"),
            counter("vm_http_requests_total{path=\"/influx/write\""),
        ) {
            (Some(inserted), Some(requests)) if inserted >= rows => Ok(requests),
            (inserted, requests) => Err(format!("rows {inserted:?}, requests {requests:?}")),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_batch_waits_for_the_flush_interval_and_a_full_one_goes_at_once() {
    let vm = VictoriaMetrics::start().await;
    let t0 = Timestamp::now().as_nanosecond();
    let step = |from: u64, n: u64| -> Vec<String> {
        (from..from + n)
            .map(|i| format!("flush,s=a v={i}i {}", t0 + i128::from(i) * 1_000_000))
            .collect()
    };
    // Batches of 100 lines, and an interval no test outlasts: a batch that is not full waits
    // for it, so whatever arrives meanwhile goes because a batch filled up.
    let output = format!(
        "{}\nbatch_lines = 100\nflush_interval = \"1h\"",
        vm_output("vm", &vm)
    );
    let pipeline = Pipeline::start(&[&output], Limits::bytes(1 << 30), |_| {});
    // The first batch goes at once, however small: 30 lines in one request.
    pipeline.records.try_send(step(0, 30)).expect("queue");
    assert_eq!(vm_count(&vm, "flush_v", 30).await, 30);
    assert_eq!(vm_write_requests(&vm, 30).await, 1);
    // 60 lines in three steps are fewer than a batch: once they are in the spool, they wait.
    for from in [30, 50, 70] {
        pipeline.records.try_send(step(from, 20)).expect("queue");
    }
    common::eventually("90 lines in the spool", Duration::from_secs(10), || async {
        match pipeline.metric("shopfloor_spool_appended_lines_total", None) {
            90 => Ok(()),
            n => Err(format!("{n} appended")),
        }
    })
    .await;
    // A writer that did not wait would have sent them within this second.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sent = pipeline.metric("shopfloor_output_lines_total", Some(("output", "vm")));
    assert_eq!(
        sent, 30,
        "fewer lines than a batch wait for the flush interval"
    );
    // With the 40 of a fourth step 100 lines wait, a full batch, which goes at once and in one
    // request: 2 in all.
    pipeline.records.try_send(step(90, 40)).expect("queue");
    assert_eq!(vm_count(&vm, "flush_v", 130).await, 130);
    assert_eq!(vm_write_requests(&vm, 130).await, 2);
    pipeline.stop().await;

    // With an interval of a second, a batch that is not full goes once the interval is over:
    // 10 lines at once (the first batch of this writer), then 10 more a second later.
    let output = format!(
        "{}\nbatch_lines = 100\nflush_interval = \"1s\"",
        vm_output("vm", &vm)
    );
    let pipeline = Pipeline::start(&[&output], Limits::bytes(1 << 30), |_| {});
    pipeline.records.try_send(step(130, 10)).expect("queue");
    assert_eq!(vm_count(&vm, "flush_v", 140).await, 140);
    pipeline.records.try_send(step(140, 10)).expect("queue");
    assert_eq!(vm_count(&vm, "flush_v", 150).await, 150);
    assert_eq!(vm_write_requests(&vm, 150).await, 4);
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_line_goes_to_the_dead_letter_file_and_the_rest_is_stored() {
    let influx = Influx1::start().await;
    influx.create_db("poison").await;
    let pipeline = Pipeline::start(
        &[&influx_output("influx", &influx, "poison")],
        Limits::bytes(1 << 30),
        |_| {},
    );
    // 1000 good lines with an integer field `v`; among them, at 300, a line that does not
    // parse, and at 700 a line whose `v` is a string (a type conflict: InfluxDB 1.x answers
    // 400 "partial write" for the whole batch). All in one step, so one request carries them.
    let t0 = Timestamp::now().as_nanosecond();
    let mut lines: Vec<String> = (0..1000)
        .map(|i| format!("poison,s=a v={i}i {}", t0 + i128::from(i)))
        .collect();
    lines[300] = "poison,s=a v= 1".to_string();
    lines[700] = format!("poison,s=a v=\"seven hundred\" {}", t0 + 700);
    pipeline.records.try_send(lines).expect("queue");
    // 998 good lines.
    let stored = influx_count(&influx, "poison", "SELECT COUNT(v) FROM poison", 998).await;
    assert_eq!(stored, 998);
    // The writer goes on with later lines.
    let later = format!("poison,s=b v=1i {}", t0 + 5000);
    pipeline.records.try_send(vec![later]).expect("queue");
    let after = influx_count(
        &influx,
        "poison",
        "SELECT COUNT(v) FROM poison WHERE s = 'b'",
        1,
    )
    .await;
    assert_eq!(after, 1);
    // Exactly the two bad lines, each with the store's reason.
    let dead = pipeline.dead_letter("influx");
    let kept: Vec<&str> = dead.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(kept, ["poison,s=a v= 1", lines_700(t0).as_str()], "{dead}");
    let reasons: Vec<&str> = dead.lines().filter(|l| l.starts_with('#')).collect();
    assert_eq!(reasons.len(), 2, "{dead}");
    assert!(
        reasons.iter().all(|r| r.contains("rejected with 400")),
        "{dead}"
    );
    assert!(dead.contains("unable to parse"), "{dead}");
    assert!(dead.contains("field type conflict"), "{dead}");
    assert_eq!(
        pipeline.metric("shopfloor_output_dead_letter_lines_total", None),
        2
    );
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_rejects_everything_keeps_the_dead_letter_files_within_their_bound() {
    let influx = Influx1::start().await;
    influx.create_db("refusing").await;
    // A store that refuses every line from now on: `v` is an integer in the database, and
    // every line the agent sends has a string `v` (a field type conflict, answered 400).
    let t0 = Timestamp::now().as_nanosecond();
    influx
        .write_lines("refusing", &format!("refusing,s=a v=1i {t0}"))
        .await;
    let max = 4096;
    let output = format!(
        "{}\ndead_letter_max_bytes = {max}",
        influx_output("influx", &influx, "refusing")
    );
    let pipeline = Pipeline::start(&[&output], Limits::bytes(1 << 30), |_| {});
    // 60 lines, each rejected on its own once the batch is split down to single lines; each
    // goes to the file with a `#` line holding Influx's message, some 300 bytes an entry, so
    // the 4096-byte bound is passed several times.
    let total = 60;
    let lines: Vec<String> = (0..total)
        .map(|i| format!("refusing,s=a v=\"r{i}\" {}", t0 + 1 + i128::from(i)))
        .collect();
    pipeline.records.try_send(lines.clone()).expect("queue");
    common::eventually(
        "every line dead-lettered",
        Duration::from_secs(30),
        || async {
            let dead = pipeline.metric("shopfloor_output_dead_letter_lines_total", None);
            if dead == total as u64 {
                Ok(())
            } else {
                Err(format!("{dead} of {total} dead-lettered"))
            }
        },
    )
    .await;
    let file = WriterOptions::new("influx", pipeline.dir.path()).dead_letter;
    let previous = sink::file::previous_dead_letter(&file);
    let records = |path: &Path| -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_string)
            .collect()
    };
    let (current, older) = (records(&file), records(&previous));
    let deleted = pipeline.metric("shopfloor_output_dead_letter_deleted_lines_total", None);
    // Every rejected line is in one of the two files or counted as deleted, none twice.
    assert_eq!(
        current.len() as u64 + older.len() as u64 + deleted,
        total as u64,
        "current {current:?}, previous {older:?}, deleted {deleted}"
    );
    assert!(deleted > 0, "the bound was never reached");
    // What is kept is the newest: the last line sent is in the current file, and the kept
    // lines are the last ones sent, in order.
    let kept: Vec<String> = older.iter().chain(&current).cloned().collect();
    assert_eq!(kept, lines[lines.len() - kept.len()..], "kept {kept:?}");
    for path in [&file, &previous] {
        let size = std::fs::metadata(path).expect("dead-letter file").len();
        assert!(size <= max, "{} is {size} bytes", path.display());
    }
    pipeline.stop().await;
}

fn lines_700(t0: i128) -> String {
    format!("poison,s=a v=\"seven hundred\" {}", t0 + 700)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn victoria_metrics_skips_a_poison_line_and_stores_the_rest() {
    // VictoriaMetrics logs and skips a line it cannot parse and answers 204 for the request,
    // so nothing reaches the dead-letter file; what matters is that the rest is stored.
    let vm = VictoriaMetrics::start().await;
    let pipeline = Pipeline::start(&[&vm_output("vm", &vm)], Limits::bytes(1 << 30), |_| {});
    let t0 = Timestamp::now().as_nanosecond();
    let mut lines: Vec<String> = (0..1000)
        .map(|i| format!("poison,s=a v={i}i {}", t0 + i128::from(i) * 1_000_000))
        .collect();
    lines[300] = "poison,s=a v= 1".to_string();
    pipeline.records.try_send(lines).expect("queue");
    assert_eq!(vm_count(&vm, "poison_v", 999).await, 999);
    assert!(vm.log().contains("cannot unmarshal InfluxDB line"));
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_cap_the_oldest_are_dropped_counted_and_never_delivered() {
    let mut vm = VictoriaMetrics::start().await;
    // The store is down while the spool fills, so the writer is failing and retrying.
    vm.stop().await;
    // Every line is 36 bytes: `cap seq=1NNNNNi ` (16) + a 19-digit timestamp + `\n`. A step of
    // 10 lines is one 360-byte row; a 3600-byte cap keeps 10 rows. 25 steps: the oldest 15
    // (150 lines, seq 100000–100149) are dropped, the newest 100 (100150–100249) stay.
    let t0 = Timestamp::now().as_nanosecond();
    let step = |k: i128| -> Vec<String> {
        (k * 10..k * 10 + 10)
            .map(|i| format!("cap seq={}i {}", 100_000 + i, t0 + i * 1_000_000))
            .collect()
    };
    // The first 5 steps are in the spool before the writer starts; it reads them as its first
    // batch and fails to send it.
    let pipeline = Pipeline::start(&[&vm_output("vm", &vm)], Limits::bytes(3600), |spool| {
        for k in 0..5 {
            spool.append(&[step(k)], 0).expect("append");
        }
    });
    common::eventually("a failed write", Duration::from_secs(10), || async {
        match pipeline.metric("shopfloor_output_errors_total", Some(("kind", "retry"))) {
            0 => Err("no failure yet".to_string()),
            _ => Ok(()),
        }
    })
    .await;
    // The other 20 arrive one by one through the spool task (one row each), and the cap drops
    // the rows the writer holds in its failed batch.
    for k in 5..25 {
        pipeline.records.try_send(step(k)).expect("queue");
        let appended = 10 * (k as u64 + 1);
        common::eventually("the append", Duration::from_secs(10), || async {
            match pipeline.metric("shopfloor_spool_appended_lines_total", None) {
                n if n >= appended => Ok(()),
                n => Err(format!("{n} lines appended")),
            }
        })
        .await;
    }
    assert_eq!(
        pipeline.metric("shopfloor_spool_dropped_lines", Some(("reason", "full"))),
        150
    );
    assert_eq!(pipeline.metric("shopfloor_spool_lines", None), 100);
    vm.restart().await;
    let series = vm
        .wait_for_export("cap_seq", |s| {
            s.iter().map(|x| x.values.len()).sum::<usize>() >= 100
        })
        .await;
    let seqs: BTreeSet<u64> = series
        .iter()
        .flat_map(|s| s.values.iter().map(|v| *v as u64))
        .collect();
    let expected: BTreeSet<u64> = (100_150..100_250).collect();
    assert_eq!(
        seqs, expected,
        "exactly the newest 100, none of the dropped"
    );
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_too_large_for_the_store_is_split_until_it_fits() {
    // The store takes bodies of at most 8000 bytes. 1000 lines of 36 bytes (36 000 bytes) in
    // one step make one batch; halving gives 500 lines (18 000 bytes), 250 (9000), then 125
    // (4500), which fit, and the rest of the batch goes in pieces of 125 too. InfluxDB 1.6
    // applies the limit to the body as sent, so gzip is off here to keep the sizes plain.
    let influx = Influx1::start_with_max_body_size(8000).await;
    influx.create_db("big").await;
    let pipeline = Pipeline::start(
        &[&format!(
            "{}\ngzip = false",
            influx_output("influx", &influx, "big")
        )],
        Limits::bytes(1 << 30),
        |_| {},
    );
    let t0: i128 = 1_700_000_000_000_000_000;
    let lines: Vec<String> = (0..1000)
        .map(|i| format!("big,s=a v={:04}i {}", i, t0 + i128::from(i)))
        .collect();
    assert_eq!(lines[0].len() + 1, 36);
    pipeline.records.try_send(lines).expect("queue");
    let stored = influx_count(&influx, "big", "SELECT COUNT(v) FROM big", 1000).await;
    assert_eq!(stored, 1000);
    // 36 000, 18 000 and 9000 bytes are refused: three 413s, then eight pieces of 125 lines.
    assert_eq!(
        pipeline.metric("shopfloor_output_errors_total", Some(("kind", "too_large"))),
        3
    );
    assert_eq!(pipeline.dead_letter("influx"), "");
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misconfigured_output_keeps_its_data_until_the_configuration_is_fixed() {
    let influx = Influx1::start_with_auth("admin", "right").await;
    influx.create_db("auth").await;
    let output = |password: &str| {
        format!(
            "{}\nusername = \"admin\"\npassword = {{ env = \"SHOPFLOOR_TEST_AUTH_{password}\" }}",
            influx_output("influx", &influx, "auth")
        )
    };
    // SAFETY: only this test reads these variables, and it sets them before any reader.
    unsafe {
        std::env::set_var("SHOPFLOOR_TEST_AUTH_wrong", "wrong");
        std::env::set_var("SHOPFLOOR_TEST_AUTH_right", "right");
    }
    let pipeline = Pipeline::start(&[&output("wrong")], Limits::bytes(1 << 30), |_| {});
    let t0 = Timestamp::now().as_nanosecond();
    let lines: Vec<String> = (0..100)
        .map(|i| format!("auth,s=a v={i}i {}", t0 + i128::from(i)))
        .collect();
    pipeline.records.try_send(lines).expect("queue");
    // 401: a configuration error, retried; the lines stay in the spool, none is dead-lettered.
    common::eventually("a configuration error", Duration::from_secs(10), || async {
        match pipeline.metric("shopfloor_output_errors_total", Some(("kind", "config"))) {
            n if n >= 2 => Ok(()),
            n => Err(format!("{n} configuration errors")),
        }
    })
    .await;
    assert_eq!(pipeline.metric("shopfloor_spool_lines", None), 100);
    assert_eq!(pipeline.dead_letter("influx"), "");
    // The engineer fixes the password and restarts: everything arrives.
    let dir = pipeline.stop().await;
    let pipeline = Pipeline::start_in(dir, &[&output("right")], Limits::bytes(1 << 30), |_| {});
    let stored = influx_count(&influx, "auth", "SELECT COUNT(v) FROM auth", 100).await;
    assert_eq!(stored, 100);
    pipeline.stop().await;
}

// ---------------------------------------------------------------------------------------------
// SIGKILL of the real binary
// ---------------------------------------------------------------------------------------------

const BIN: &str = env!("CARGO_BIN_EXE_shopfloor");
const DEMO: &str = include_str!("../config/demo.toml");

/// The demo config polling the simulator at `sim` every 100 ms, writing to VictoriaMetrics.
fn agent_config(sim: std::net::SocketAddr, data_dir: &Path, vm: &VictoriaMetrics) -> String {
    let body = DEMO
        .split("[[file]]")
        .next()
        .expect("the demo config has a body");
    let body = body
        .replace("127.0.0.1:5020", &sim.to_string())
        .replace("poll = \"1s\"", "poll = \"100ms\"")
        .replace(
            "data_dir = \"data/demo\"",
            &format!("data_dir = \"{}\"", data_dir.display()),
        );
    format!("{body}\n[[influx]]\n{}\n", vm_output("vm", vm))
}

/// `shopfloor run` with its log in `log`.
fn spawn_agent(config: &Path, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("agent log");
    Command::new(BIN)
        .args(["run", "-c"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log handle"))
        .stderr(log)
        .spawn()
        .expect("start shopfloor run")
}

/// Every (machine, timestamp in ms) of a `signal` line with `spindle_rpm` the agent left
/// undelivered in its spool: read with SQLite, as an engineer on site would.
fn undelivered_rpm_points(spool: &Path) -> BTreeSet<(String, i64)> {
    let conn = rusqlite::Connection::open(spool).expect("open the spool");
    let acked: i64 = conn
        .query_row("SELECT acked FROM cursor WHERE output = 'vm'", [], |r| {
            r.get(0)
        })
        .expect("the output's cursor");
    let mut stmt = conn
        .prepare("SELECT body FROM chunk WHERE id > ?1 ORDER BY id")
        .expect("query");
    let bodies: Vec<Vec<u8>> = stmt
        .query_map([acked], |r| r.get(0))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("bodies");
    let mut points = BTreeSet::new();
    for body in bodies {
        for line in String::from_utf8_lossy(&body).lines() {
            if !line.starts_with("signal,") || !line.contains("spindle_rpm=") {
                continue;
            }
            let machine = line
                .split(',')
                .find_map(|kv| kv.strip_prefix("machine="))
                .map(str::to_string);
            let ns: Option<i128> = line.rsplit(' ').next().and_then(|t| t.parse().ok());
            if let (Some(machine), Some(ns)) = (machine, ns) {
                points.insert((machine, (ns / 1_000_000) as i64));
            }
        }
    }
    points
}

fn kill9(child: &mut Child) {
    // SAFETY: kill(2) on our own child's pid; the child has not been waited for yet.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
    assert_eq!(rc, 0, "kill -9 failed");
    let _ = child.wait();
}

fn sigterm(child: &mut Child) {
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_killed_with_sigkill_loses_no_point_it_had_spooled() {
    let mut vm = VictoriaMetrics::start_with_args(&["-dedup.minScrapeInterval=1ms"]).await;
    let (_sim_trigger, sim_shutdown) = shutdown::channel();
    let options = shopfloor::sim::SimOptions {
        bind: "127.0.0.1:0".parse().expect("address"),
        seed: 3,
        ..Default::default()
    };
    let simulator = shopfloor::sim::start(&options, sim_shutdown, None)
        .await
        .expect("simulator");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, agent_config(simulator.addr, dir.path(), &vm)).expect("config");
    let log = dir.path().join("agent.log");
    let spool = dir.path().join("spool.db");
    let agent_log = || std::fs::read_to_string(&log).unwrap_or_default();

    // Run, delivering; then the store goes away and a backlog builds up in the spool.
    let mut agent = spawn_agent(&config, &log);
    vm.wait_for_export(r#"signal_spindle_rpm{machine="cnc01"}"#, |s| {
        s.first().is_some_and(|x| x.values.len() >= 10)
    })
    .await;
    vm.stop().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    kill9(&mut agent);
    let killed_ms = Timestamp::now().as_millisecond();
    let waiting = undelivered_rpm_points(&spool);
    // 4 machines polled every 100 ms for about 3 s: roughly 120 points must be waiting.
    assert!(
        waiting.len() >= 40,
        "only {} points waiting in the spool after the kill\n{}",
        waiting.len(),
        agent_log()
    );

    // Store back, agent restarted: it sends what was left first.
    vm.restart().await;
    let mut agent = spawn_agent(&config, &log);
    let restarted_ms = Timestamp::now().as_millisecond();
    vm.wait_for_export(r#"signal_spindle_rpm{machine="cnc04"}"#, |s| {
        s.first()
            .is_some_and(|x| x.timestamps_ms.iter().any(|t| *t > restarted_ms + 1000))
    })
    .await;
    sigterm(&mut agent);

    let series = vm.export_series("signal_spindle_rpm").await;
    let stored: BTreeMap<String, Vec<i64>> = series
        .iter()
        .map(|s| {
            let machine = s.labels.get("machine").cloned().unwrap_or_default();
            let mut ts = s.timestamps_ms.clone();
            ts.sort_unstable();
            (machine, ts)
        })
        .collect();
    // Every point that was on disk at the kill is in the store.
    let missing: Vec<&(String, i64)> = waiting
        .iter()
        .filter(|(m, t)| stored.get(m).is_none_or(|ts| ts.binary_search(t).is_err()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} spooled points missing, e.g. {:?}\n{}",
        missing.len(),
        waiting.len(),
        &missing[..missing.len().min(5)],
        agent_log()
    );
    // And before the kill, no hole: polls every 100 ms, so no gap between stored points is
    // longer than 900 ms up to the last second before the kill (records younger than that
    // may still have been in memory, in the engine's batch of up to a second: lost ones are
    // the newest, so they shorten the list and leave no hole inside it). A lost request would leave a hole of a whole flush
    // interval (1 s, about ten polls); 900 ms leaves room for slow polls on a busy machine.
    for (machine, ts) in &stored {
        let before: Vec<i64> = ts
            .iter()
            .copied()
            .filter(|t| *t < killed_ms - 1000)
            .collect();
        assert!(
            before.len() >= 30,
            "{machine}: {} points before the kill",
            before.len()
        );
        for pair in before.windows(2) {
            assert!(
                pair[1] - pair[0] <= 900,
                "{machine}: no point between {} and {} ms\n{}",
                pair[0],
                pair[1],
                agent_log()
            );
        }
    }
}
