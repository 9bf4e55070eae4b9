//! The polling benchmarks' common method (Modbus, MELSEC, S7): N simulated devices × M words,
//! each device on a port of its own, polled every second by the agent in its own process and
//! written to a local VictoriaMetrics.
//!
//! Three processes: the simulator (`shopfloor sim --listeners N`, plus the protocol's own
//! arguments), the agent (`shopfloor run` on a generated config), and VictoriaMetrics (started
//! by the integration-test harness). After a warm-up the agent's CPU time (utime + stime from
//! /proc) and resident memory (VmRSS, sampled every second; VmHWM for the peak) are measured
//! over a window, and the points VictoriaMetrics stored in that window are counted from its
//! own `vm_rows_inserted_total{type="influx"}`. A point is one field of one line: one word's
//! value, plus the few `machine_state` and `agent` fields.
//!
//! A bench file gives a [`Bench`]: how to start its simulator and what config to run.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common;
use crate::process::{self, Proc, cpu_ticks, status_kb, ticks_per_second};

const BIN: &str = env!("CARGO_BIN_EXE_shopfloor");

/// What a protocol's benchmark brings.
pub struct Bench {
    /// For the headline: `Modbus`, `MELSEC`, `S7`.
    pub protocol: &'static str,
    /// The bench's name, for `cargo bench --bench NAME`.
    pub name: &'static str,
    /// `shopfloor sim` arguments beyond `--bind` and `--listeners`, for N devices × M words.
    pub sim_args: fn(devices: usize, registers: u16) -> Vec<String>,
    /// The config's device tables, for N devices from `base_port` on, each device the machine
    /// `m{i:03}` ([`head`] has the rest) and using the profile `bench`.
    pub devices: fn(base_port: u16, devices: usize) -> String,
    /// `profiles/bench.toml`: M words as u16 fields `r0`, `r1`, …
    pub profile: fn(registers: u16) -> String,
}

struct Options {
    workloads: Vec<(usize, u16)>,
    warmup: Duration,
    seconds: u64,
}

fn options() -> Option<Options> {
    let args = process::bench_args()?;
    let value = |name: &str| process::number_arg(&args, name);
    let workloads = match (value("--devices"), value("--registers")) {
        (Some(n), Some(m)) => vec![(n as usize, m as u16)],
        _ => vec![(100, 100), (100, 1000)],
    };
    Some(Options {
        workloads,
        warmup: Duration::from_secs(value("--warmup").unwrap_or(15)),
        seconds: value("--seconds").unwrap_or(60),
    })
}

fn free_port_block(n: usize) -> u16 {
    // Ports from a base that the OS hands out as free, checked one by one.
    'outer: for _ in 0..50 {
        let base = common::free_port();
        if usize::from(base) + n > 65_000 {
            continue;
        }
        for p in base..base + n as u16 {
            if std::net::TcpListener::bind(("127.0.0.1", p)).is_err() {
                continue 'outer;
            }
        }
        return base;
    }
    panic!("no block of {n} free ports");
}

/// The simulator's arguments for a PLC benchmark: `protocol` (`melsec`, `s7`) serving its
/// first machine's words, M of them, on every port.
#[allow(dead_code)] // the Modbus benchmark has its own
pub fn plc_sim_args(protocol: &str, registers: u16) -> Vec<String> {
    vec![
        "--plc".into(),
        protocol.into(),
        "--machines".into(),
        "1".into(),
        "--registers".into(),
        registers.max(15).to_string(),
    ]
}

/// The config before the device tables: site, agent, the VictoriaMetrics output, no web
/// board, and N machines `m001`… (lathes, so they have states).
pub fn head(data_dir: &Path, vm: &str, devices: usize) -> String {
    let mut c = String::new();
    let _ = write!(
        c,
        "[site]\ncounty = \"bench\"\nsector = \"doors\"\nenterprise = \"bench\"\n\n\
         [agent]\ndata_dir = \"{}\"\noffline_after = \"10s\"\nheartbeat = \"60s\"\n\n\
         [[influx]]\nurl = \"{vm}\"\napi = \"v2\"\norg = \"bench\"\nbucket = \"bench\"\n\n\
         [web]\nenabled = false\n\n",
        data_dir.display()
    );
    for i in 1..=devices {
        let _ = write!(
            c,
            "[[machine]]\nid = \"m{i:03}\"\nkind = \"lathe\"\ncnc = true\n\n"
        );
    }
    c
}

async fn rows_inserted(http: &reqwest::Client, vm: &str) -> f64 {
    let url = format!("{vm}/metrics");
    // 0 until VictoriaMetrics has taken its first line (or while it cannot be reached).
    process::scraped(http, &url, "vm_rows_inserted_total{type=\"influx\"}")
        .await
        .unwrap_or(0.0)
}

struct Figures {
    devices: usize,
    registers: u16,
    points_per_s: f64,
    cpu_percent: f64,
    rss_mb_mean: f64,
    rss_mb_peak: f64,
}

async fn run(bench: &Bench, devices: usize, registers: u16, opts: &Options) -> Figures {
    let vm = common::VictoriaMetrics::start_with_args(&["-dedup.minScrapeInterval=1ms"]).await;
    let http = common::http_client();
    let dir = tempfile::tempdir().expect("temp dir");
    let base = free_port_block(devices);
    let _sim = Proc(
        Command::new(BIN)
            .args([
                "sim",
                "--bind",
                &format!("127.0.0.1:{base}"),
                "--listeners",
                &devices.to_string(),
            ])
            .args((bench.sim_args)(devices, registers))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the simulator"),
    );
    let cfg = dir.path().join("bench.toml");
    let config =
        head(&dir.path().join("data"), &vm.url(), devices) + &(bench.devices)(base, devices);
    std::fs::write(&cfg, config).expect("write config");
    std::fs::create_dir(dir.path().join("profiles")).expect("profiles dir");
    std::fs::write(
        dir.path().join("profiles/bench.toml"),
        (bench.profile)(registers),
    )
    .expect("write profile");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let agent = process::start_agent(&cfg);
    let pid = agent.0.id();
    tokio::time::sleep(opts.warmup).await;

    let tick = ticks_per_second();
    let (cpu0, rows0, t0) = (
        cpu_ticks(pid),
        rows_inserted(&http, &vm.url()).await,
        Instant::now(),
    );
    let mut rss = Vec::new();
    for _ in 0..opts.seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        rss.push(status_kb(pid, "VmRSS:"));
    }
    let (cpu1, rows1) = (cpu_ticks(pid), rows_inserted(&http, &vm.url()).await);
    let elapsed = t0.elapsed().as_secs_f64();
    let peak = status_kb(pid, "VmHWM:");
    drop(agent);
    Figures {
        devices,
        registers,
        points_per_s: (rows1 - rows0) / elapsed,
        cpu_percent: (cpu1 - cpu0) as f64 / tick / elapsed * 100.0,
        rss_mb_mean: rss.iter().sum::<u64>() as f64 / rss.len().max(1) as f64 / 1024.0,
        rss_mb_peak: peak as f64 / 1024.0,
    }
}

/// The bench's `main`: runs the workloads the arguments ask for (`--devices N --registers M`,
/// else 100 × 100 and 100 × 1000) and prints one table row each, with the load average before
/// and after.
pub fn main(bench: &Bench) {
    let Some(opts) = options() else {
        println!(
            "benches/{0}.rs is a benchmark: run it with `cargo bench --bench {0}`",
            bench.name
        );
        return;
    };
    let rt = process::runtime();
    let load = process::load_average();
    println!(
        "{} benchmark: warm-up {:?}, window {} s; load average before: {}",
        bench.protocol, opts.warmup, opts.seconds, load
    );
    println!(
        "| devices × registers | expected points/s | delivered points/s | agent CPU (% of one core) | agent RSS mean / peak (MB) |"
    );
    println!("|---|---|---|---|---|");
    for (devices, registers) in &opts.workloads {
        let f = rt.block_on(run(bench, *devices, *registers, &opts));
        println!(
            "| {} × {} | {} | {:.0} | {:.1} | {:.1} / {:.1} |",
            f.devices,
            f.registers,
            f.devices * usize::from(f.registers),
            f.points_per_s,
            f.cpu_percent,
            f.rss_mb_mean,
            f.rss_mb_peak
        );
    }
    let load = process::load_average();
    println!("load average after: {}", load);
}
