//! Benchmark of `shopfloor county report`: 600 enterprises × 365 days of `fleet` and `green`
//! day windows in a local InfluxDB 1.x, then the report over the whole year, timed.
//!
//! ```sh
//! cargo run --release --example county_report_bench            # 600 enterprises, 365 days
//! cargo run --release --example county_report_bench -- 100 30  # smaller
//! ```
//!
//! It starts its own `influxd` through the integration-test harness (tests/common), so it
//! needs what `scripts/test` installs. Figures go to docs/BENCHMARKS.md; the target is a
//! report in under 10 s. Not part of the test suite: a timing says nothing on a loaded CI
//! machine.

#[path = "../tests/common/mod.rs"]
mod common;

use std::fmt::Write as _;
use std::time::Instant;

use jiff::civil::{Date, date};
use shopfloor::config::Sector;
use shopfloor::county::render::{self, Format, Lang};
use shopfloor::county::store::{Store, StoreOptions};
use shopfloor::county::targets::{Enterprise, Registry, Targets};
use shopfloor::county::{ReportRequest, report};

const DB: &str = "county";
/// Lines per write request: InfluxDB 1.6 takes 25 MB per request by default.
const BATCH_LINES: usize = 40_000;

/// A small deterministic generator, so that every run loads the same data.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let enterprises = args.first().copied().unwrap_or(600);
    let days = args.get(1).copied().unwrap_or(365);
    shopfloor::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(bench(enterprises, days));
}

async fn bench(enterprises: usize, days: usize) {
    let targets_path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/targets.toml");
    let targets = Targets::load(std::path::Path::new(targets_path)).expect("sample targets");
    let tz = jiff::tz::TimeZone::get(&targets.timezone).expect("time zone");
    let first = date(2025, 1, 1);
    let last = first
        .checked_add(jiff::Span::new().days(days as i64 - 1))
        .expect("date");

    let influx = common::Influx1::start().await;
    influx.create_db(DB).await;
    let registry = Registry {
        enterprises: (0..enterprises)
            .map(|i| Enterprise {
                id: format!("e{i:04}"),
                name: format!("Enterprise {i}"),
                sector: Sector::ALL[i % 7],
            })
            .collect(),
    };

    let started = Instant::now();
    let mut rng = Lcg(7);
    let mut batch = String::new();
    let mut in_batch = 0;
    let mut lines = 0usize;
    let mut bytes = 0usize;
    let day_starts: Vec<(Date, i64)> = (0..days)
        .map(|d| {
            let day = first
                .checked_add(jiff::Span::new().days(d as i64))
                .expect("date");
            let ns = day
                .to_zoned_datetime(tz.clone())
                .expect("midnight")
                .timestamp()
                .as_nanosecond() as i64;
            (day, ns)
        })
        .collect();
    for (d, (_, ns)) in day_starts.iter().enumerate() {
        for e in &registry.enterprises {
            let i: usize = e.id[1..].parse().unwrap_or(0);
            // One enterprise in fifty is silent all year; the others miss a day in thirty.
            if i % 50 == 49 || rng.below(30) == 0 {
                continue;
            }
            let total = 5 + (i % 40) as u64;
            let cnc = total * (40 + (i % 50) as u64) / 100;
            let networked = rng.below(total + 1);
            let planned = 8.0 * 3600.0 * cnc as f64;
            let running = planned * (rng.below(100) as f64 / 100.0);
            let kwh = 500.0 + rng.below(5000) as f64;
            let tce = kwh * 0.000_122_9;
            let water = 5.0 + rng.below(50) as f64;
            let va = 1.0 + rng.below(300) as f64 / 100.0;
            let tags = format!(
                "county={},sector={},enterprise={}",
                targets.county,
                e.sector.as_str(),
                e.id
            );
            let _ = writeln!(
                batch,
                "fleet,{tags},window=1d machines_total={total}i,machines_digital={cnc}i,machines_cnc={cnc}i,machines_networked={networked}i,machines_digital_networked={}i,cnc_running_s={running:?},cnc_planned_s={planned:?},networking_rate={:?},cnc_rate={:?} {ns}",
                networked.min(cnc),
                networked as f64 / total as f64,
                cnc as f64 / total as f64,
            );
            let _ = writeln!(
                batch,
                "green,{tags},va_method=parts,el_method=calorific,window=1d energy_tce={tce:?},electricity_kwh={kwh:?},water_t={water:?},value_added_10k_cny={va:?},tce_per_10k_cny={:?},water_t_per_10k_cny={:?},electricity_kgce_per_kwh=0.1229 {ns}",
                tce / va,
                water / va,
            );
            in_batch += 2;
            if in_batch >= BATCH_LINES {
                lines += in_batch;
                bytes += batch.len();
                influx.write_lines(DB, &batch).await;
                batch.clear();
                in_batch = 0;
            }
        }
        if d % 30 == 29 {
            eprintln!("loaded {} of {days} days", d + 1);
        }
    }
    if in_batch > 0 {
        lines += in_batch;
        bytes += batch.len();
        influx.write_lines(DB, &batch).await;
    }
    let load = started.elapsed();
    println!(
        "loaded {lines} lines ({:.0} MB) for {enterprises} enterprises × {days} days in {:.1} s ({:.0} lines/s)",
        bytes as f64 / 1e6,
        load.as_secs_f64(),
        lines as f64 / load.as_secs_f64()
    );

    let store = Store::new(&StoreOptions {
        url: influx.url(),
        database: DB.to_string(),
        retention_policy: None,
        username: None,
        password: None,
        token: None,
        timeout: std::time::Duration::from_secs(600),
    })
    .expect("store");
    let request = ReportRequest {
        from: first,
        to: last,
        sector: None,
        county: None,
    };
    for run in 1..=3 {
        let started = Instant::now();
        let r = report(
            &store,
            &targets,
            &registry,
            &request,
            jiff::Timestamp::now(),
        )
        .await
        .expect("report");
        let read_and_sum = started.elapsed();
        let mut sizes = Vec::new();
        for format in [Format::Table, Format::Csv, Format::Json, Format::Html] {
            let t = Instant::now();
            let text = render::render(&r, format, Lang::Zh);
            sizes.push(format!(
                "{format:?} {:.0} ms / {:.1} MB",
                t.elapsed().as_secs_f64() * 1e3,
                text.len() as f64 / 1e6
            ));
        }
        let county = r.county_total.as_ref().expect("county total");
        println!(
            "run {run}: query + aggregation {:.2} s ({} enterprises reporting, {} not reporting, {} machine-days); render: {}",
            read_and_sum.as_secs_f64(),
            county.enterprises_reporting,
            r.not_reporting.len(),
            county.machine_days.machines_total,
            sizes.join(", ")
        );
    }
    if let Ok(status) = std::fs::read_to_string("/proc/self/status")
        && let Some(peak) = status.lines().find(|l| l.starts_with("VmHWM"))
    {
        println!(
            "peak memory of this process: {}",
            peak.trim_start_matches("VmHWM:").trim()
        );
    }
}
