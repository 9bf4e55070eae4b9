//! Benchmark of `shopfloor county report`: 600 enterprises × 365 days of `fleet` and `green`
//! day windows in a local InfluxDB 1.x, then the report over the whole year, timed.
//!
//! ```sh
//! cargo bench --bench county_report            # 600 enterprises, 365 days
//! cargo bench --bench county_report -- 100 30  # smaller
//! COUNTY_BENCH_PROFILE=1 cargo bench --bench county_report   # also other ways of asking
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
use shopfloor::county::labels::Lang;
use shopfloor::county::render::{self, Format};
use shopfloor::county::store::{Store, StoreOptions};
use shopfloor::county::targets::{Enterprise, Registry, Targets};
use shopfloor::county::{ReportRequest, report};
use shopfloor::model::Sector;

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
    // `cargo test --all-targets` (scripts/test) runs bench binaries without `--bench`; the
    // benchmark only runs under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "benches/county_report: run it with `cargo bench --bench county_report`; nothing to test"
        );
        return;
    }
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
    // The register of issue 15: the silent enterprises (one in fifty) declare their machines,
    // one in twenty joined half-way through the year, every third is a key enterprise with
    // systems and robots declared; one in ten has no water meter (no `water_t` on its lines).
    let joined = first
        .checked_add(jiff::Span::new().days(days as i64 / 2))
        .expect("date");
    let registry = Registry {
        enterprises: (0..enterprises)
            .map(|i| {
                let mut e = Enterprise::new(
                    format!("e{i:04}"),
                    format!("Enterprise {i}"),
                    Sector::ALL[i % 7],
                );
                let total = 5 + (i % 40) as u64;
                e.machines_total = Some(total);
                e.machines_digital = Some(total * (40 + (i % 50) as u64) / 100);
                e.machines_cnc = e.machines_digital;
                e.above_scale = i % 3 != 2;
                e.key_enterprise = i % 3 == 0;
                e.robots = Some((i % 7) as u64);
                e.erp = (i % 2 == 0).then_some(2020);
                e.mes = (i % 5 == 0).then_some(2021);
                if i % 11 == 0 {
                    e.digital_workshops = vec![2022];
                }
                if i % 20 == 7 {
                    e.joined = Some(joined);
                }
                e
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
            // Lines before an enterprise joined are written and left out by the report.
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
                "green,{tags},va_method=parts,el_method=calorific,window=1d energy_tce={tce:?},electricity_kwh={kwh:?}{},value_added_10k_cny={va:?},tce_per_10k_cny={:?}{},electricity_kgce_per_kwh=0.1229 {ns}",
                if i % 10 == 3 {
                    String::new()
                } else {
                    format!(",water_t={water:?}")
                },
                tce / va,
                if i % 10 == 3 {
                    String::new()
                } else {
                    format!(",water_t_per_10k_cny={:?}", water / va)
                },
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
    if std::env::var_os("COUNTY_BENCH_PROFILE").is_some() {
        profile(&influx.url(), &targets.county, first, last).await;
    }
    let influxd = child_pid("influxd");
    for run in 1..=3 {
        let cpu_before = (
            cpu_seconds("self"),
            influxd.map(|p| cpu_seconds(&p.to_string())),
        );
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
        let cpu_self = cpu_seconds("self") - cpu_before.0;
        let cpu_influxd = influxd
            .zip(cpu_before.1)
            .map_or(f64::NAN, |(p, before)| cpu_seconds(&p.to_string()) - before);
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
            "run {run}: query + aggregation {:.2} s wall, CPU {cpu_influxd:.2} s in influxd and {cpu_self:.2} s here ({} enterprises reporting, {} not reporting, {} machine-days); render: {}",
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

/// Where the time goes (`COUNTY_BENCH_PROFILE=1`): the InfluxDB CPU time of other ways of
/// asking for the same year, one query at a time.
async fn profile(url: &str, county: &str, first: Date, last: Date) {
    let Some(influxd) = child_pid("influxd") else {
        return;
    };
    let filter = format!(
        "WHERE \"county\" = '{county}' AND \"window\" = '1d' AND time >= '{first}T00:00:00+08:00' AND time < '{last}T23:59:59+08:00'"
    );
    let fields = "\"machines_total\", \"machines_digital\", \"machines_cnc\", \"machines_networked\", \"machines_digital_networked\", \"cnc_running_s\", \"cnc_planned_s\"";
    let sums = "SUM(\"machines_total\"), SUM(\"machines_digital\"), SUM(\"machines_cnc\"), SUM(\"machines_networked\"), SUM(\"machines_digital_networked\"), SUM(\"cnc_running_s\"), SUM(\"cnc_planned_s\"), COUNT(\"machines_total\")";
    let variants = [
        (
            "fleet raw, GROUP BY enterprise, sector",
            format!("SELECT {fields} FROM \"fleet\" {filter} GROUP BY \"enterprise\", \"sector\""),
            "10000",
        ),
        (
            "the same, chunk_size 100000",
            format!("SELECT {fields} FROM \"fleet\" {filter} GROUP BY \"enterprise\", \"sector\""),
            "100000",
        ),
        (
            "fleet raw, tags as columns, no GROUP BY (what the report asks)",
            format!("SELECT \"enterprise\", \"sector\", {fields} FROM \"fleet\" {filter}"),
            "10000",
        ),
        (
            "fleet raw, one field",
            format!(
                "SELECT \"machines_total\" FROM \"fleet\" {filter} GROUP BY \"enterprise\", \"sector\""
            ),
            "10000",
        ),
        (
            "fleet SUM per enterprise",
            format!("SELECT {sums} FROM \"fleet\" {filter} GROUP BY \"enterprise\", \"sector\""),
            "10000",
        ),
        (
            "fleet SUM per day for the county",
            format!("SELECT {sums} FROM \"fleet\" {filter} GROUP BY time(1d, 16h)"),
            "10000",
        ),
        (
            "green raw, GROUP BY its four tags",
            format!(
                "SELECT \"energy_tce\", \"electricity_kwh\", \"water_t\", \"value_added_10k_cny\" FROM \"green\" {filter} GROUP BY \"enterprise\", \"sector\", \"va_method\", \"el_method\""
            ),
            "10000",
        ),
    ];
    let client = reqwest::Client::new();
    for (what, q, chunk) in variants {
        let mut u = reqwest::Url::parse(&format!("{url}/query")).expect("url");
        u.query_pairs_mut()
            .append_pair("db", DB)
            .append_pair("q", &q)
            .append_pair("epoch", "s")
            .append_pair("chunked", "true")
            .append_pair("chunk_size", chunk);
        let cpu = cpu_seconds(&influxd.to_string());
        let t = Instant::now();
        let body = client
            .get(u)
            .send()
            .await
            .expect("query")
            .bytes()
            .await
            .expect("body");
        println!(
            "profile: {what}: {:.2} s wall, {:.2} s influxd CPU, {:.1} MB",
            t.elapsed().as_secs_f64(),
            cpu_seconds(&influxd.to_string()) - cpu,
            body.len() as f64 / 1e6
        );
    }
}

/// CPU time (user + system) of a process so far, from /proc/<pid>/stat: a measure of the
/// work done that the other processes on a shared machine do not inflate.
fn cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // After the command name in parentheses: field 3 (state) is index 0, utime and stime
    // (fields 14 and 15) are indices 11 and 12.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return f64::NAN;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

/// The pid of this process's child running `name` (the harness's influxd).
fn child_pid(name: &str) -> Option<u32> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let (head, rest) = stat.rsplit_once(')')?;
            let ppid = rest.split_whitespace().nth(1)?;
            (ppid == me && head.contains(name)).then_some(pid)
        })
}
