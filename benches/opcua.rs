//! OPC UA subscription benchmark: N monitored items on one local OPC UA server, every one of
//! them changing once a second, subscribed to by the agent in its own process.
//!
//! ```sh
//! cargo bench --bench opcua                          # 10,000 and 100,000 items
//! cargo bench --bench opcua -- --items 100000 --seconds 60 --warmup 15
//! cargo bench --bench opcua -- --items 10000 --python   # the python asyncua server instead
//! cargo bench --bench opcua -- --items 100000 --write-config /tmp/ua   # the config only
//! ```
//!
//! Three processes share the machine:
//!
//! - the server: by default the benchmark's own (`benches/opcua/fast_server.rs`, this
//!   executable started again with `--serve-opcua`), which changes all N Int32 variables
//!   `ns=2;s=I0` … once a second at a few percent of a core, so that 100,000 changes a second
//!   are really made; with `--python`, python asyncua (`benches/opcua/server.py`, in the
//!   virtual environment the tests use, see tests/support/python.rs), an independent
//!   implementation that made 7,000–18,000 changes a second on this machine. Each
//!   writes a stats file with how many values it has changed;
//! - the agent, `shopfloor run` on a generated config: N/1000 lathes `m001` …, one `[[opcua]]`
//!   endpoint with one subscribed group of 1000 nodes per machine (`r0` … `r999`, type `int`,
//!   publishing interval 1 s; each group's nodes in a CSV file `nodes/m001.csv` …, its
//!   `nodes_file`), so the agent opens N/1000 subscriptions of 1000 items (its
//!   default `max_items_per_subscription`); its output is one `[[file]]`, through the spool,
//!   and its board is on (the default) so that its `/metrics` can be read;
//! - this process, which reads /proc and the files.
//!
//! Once every subscription is open and values reach the file, and a warm-up later, the agent's
//! and the server's CPU time (utime + stime from /proc) and resident memory (VmRSS every
//! second, VmHWM for the agent's peak) are measured over a window, with the values the server
//! wrote in that window (its stats file) and the values the agent delivered to its output in
//! that window: the fields of the `signal` lines appended to the file.
//!
//! This is a benchmark, not a test: `cargo test --all-targets` builds it and runs it without
//! `--bench`, and then it only says how to run it.

#[path = "support/process.rs"]
mod process;

#[path = "../tests/support/python.rs"]
mod support_python;

#[path = "../tests/common/mod.rs"]
mod common;

#[path = "opcua/fast_server.rs"]
mod fast_server;

use std::fmt::Write as _;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use process::{Proc, cpu_ticks, status_kb, ticks_per_second};

const PER_MACHINE: usize = 1000;

struct Options {
    items: Vec<usize>,
    warmup: Duration,
    seconds: u64,
    /// The python asyncua server instead of the benchmark's own (`--python`).
    python: bool,
}

fn options() -> Option<Options> {
    let args = process::bench_args()?;
    let value = |name: &str| process::number_arg(&args, name);
    let items = match value("--items") {
        Some(n) => vec![(n as usize).div_ceil(PER_MACHINE) * PER_MACHINE],
        None => vec![10_000, 100_000],
    };
    Some(Options {
        items,
        warmup: Duration::from_secs(value("--warmup").unwrap_or(15)),
        seconds: value("--seconds").unwrap_or(60),
        python: args.iter().any(|a| a == "--python"),
    })
}

/// The agent's config: N/1000 lathes, each one subscribed group of 1000 of the server's
/// variables, a file output and the board on `web_port`. Each group's nodes are a CSV tag
/// list beside the config (`nodes/m001.csv` …, as a commissioning engineer would import
/// them), written into `dir` here: 100,000 `[[opcua.group.node]]` tables would be 10 MB of
/// TOML whose parse alone takes some 350 MB.
fn config(dir: &Path, out: &Path, endpoint: &str, web_port: u16, items: usize) -> String {
    let machines = items / PER_MACHINE;
    let mut c = String::new();
    let _ = write!(
        c,
        "[site]\ncounty = \"bench\"\nsector = \"doors\"\nenterprise = \"bench\"\n\n\
         [agent]\ndata_dir = \"{}\"\noffline_after = \"10s\"\nheartbeat = \"60s\"\n\n\
         [[file]]\npath = \"{}\"\n\n\
         [web]\nlisten = \"127.0.0.1:{web_port}\"\n\n",
        dir.join("data").display(),
        out.display(),
    );
    for m in 1..=machines {
        let _ = write!(
            c,
            "[[machine]]\nid = \"m{m:03}\"\nkind = \"lathe\"\ncnc = true\n\n"
        );
    }
    let _ = write!(
        c,
        "[[opcua]]\nid = \"bench\"\nendpoint = \"{endpoint}\"\n\n"
    );
    std::fs::create_dir_all(dir.join("nodes")).expect("make the nodes directory");
    for m in 1..=machines {
        let _ = writeln!(
            c,
            "  [[opcua.group]]\n  publishing_interval = \"1s\"\n  nodes_file = \"nodes/m{m:03}.csv\""
        );
        let mut csv = String::from("node,signal,type,machine\n");
        for r in 0..PER_MACHINE {
            let i = (m - 1) * PER_MACHINE + r;
            let _ = writeln!(csv, "ns=2;s=I{i},r{r},int,m{m:03}");
        }
        std::fs::write(dir.join(format!("nodes/m{m:03}.csv")), csv).expect("write a nodes file");
    }
    c
}

/// Counts the fields of the `signal` lines appended to the output file, reading on from
/// where it stopped (only whole lines).
struct Delivered {
    path: PathBuf,
    offset: u64,
    fields: u64,
}

impl Delivered {
    fn update(&mut self) -> u64 {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return self.fields;
        };
        let mut buf = Vec::new();
        if f.seek(SeekFrom::Start(self.offset)).is_err() || f.read_to_end(&mut buf).is_err() {
            return self.fields;
        }
        let Some(end) = buf.iter().rposition(|&b| b == b'\n') else {
            return self.fields;
        };
        for line in buf[..end].split(|&b| b == b'\n') {
            if !line.starts_with(b"signal,") && !line.starts_with(b"signal ") {
                continue;
            }
            // measurement,tags fields timestamp: no spaces in this config's tags or values.
            if let Some(fields) = line.split(|&b| b == b' ').nth(1) {
                self.fields += 1 + fields.iter().filter(|&&b| b == b',').count() as u64;
            }
        }
        self.offset += end as u64 + 1;
        self.fields
    }
}

/// The values the server has written since it started (its stats file).
fn changes(stats: &Path) -> u64 {
    std::fs::read_to_string(stats)
        .unwrap_or_default()
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("changes="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn metric(http: &reqwest::Client, web_port: u16, series: &str) -> Option<f64> {
    let url = format!("http://127.0.0.1:{web_port}/metrics");
    process::scraped(http, &url, series).await
}

struct Figures {
    items: usize,
    changes_per_s: f64,
    delivered_per_s: f64,
    cpu_percent: f64,
    rss_mb_mean: f64,
    rss_mb_peak: f64,
    server_cpu_percent: f64,
    server_rss_mb: f64,
    dropped: f64,
    startup: Duration,
}

async fn run(items: usize, opts: &Options) -> Figures {
    let http = common::http_client();
    let dir = tempfile::tempdir().expect("temp dir");
    let stats = dir.path().join("server.stats");
    let port = common::free_port();
    let begun = Instant::now();
    let server = if opts.python {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/opcua/server.py");
        Proc(support_python::start_ready(
            script,
            &[
                port.to_string(),
                "--items".into(),
                items.to_string(),
                "--stats".into(),
                stats.display().to_string(),
            ],
            "the asyncua benchmark server",
        ))
    } else {
        start_fast_server(port, items, &stats)
    };
    let server_pid = server.0.id();
    let out = dir.path().join("out.lp");
    let web_port = common::free_port();
    let cfg = dir.path().join("bench.toml");
    let endpoint = format!("opc.tcp://127.0.0.1:{port}/");
    std::fs::write(&cfg, config(dir.path(), &out, &endpoint, web_port, items))
        .expect("write config");
    let agent = process::start_agent(&cfg);
    let pid = agent.0.id();
    let mut delivered = Delivered {
        path: out,
        offset: 0,
        fields: 0,
    };
    // Every subscription open and values arriving, then the warm-up.
    let subscriptions = (items / PER_MACHINE) as f64;
    let limit = Instant::now() + Duration::from_secs(600);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let open = metric(&http, web_port, "shopfloor_opcua_subscriptions").await;
        if open == Some(subscriptions) && delivered.update() > 0 {
            break;
        }
        assert!(
            Instant::now() < limit,
            "the agent did not open {subscriptions} subscriptions in 10 minutes ({open:?} open)"
        );
    }
    let startup = begun.elapsed();
    tokio::time::sleep(opts.warmup).await;

    let tick = ticks_per_second();
    let dropped0 = metric(&http, web_port, "shopfloor_opcua_changes_dropped_total").await;
    let (cpu0, server_cpu0, changes0, delivered0, t0) = (
        cpu_ticks(pid),
        cpu_ticks(server_pid),
        changes(&stats),
        delivered.update(),
        Instant::now(),
    );
    let (mut rss, mut server_rss) = (Vec::new(), Vec::new());
    for _ in 0..opts.seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        rss.push(status_kb(pid, "VmRSS:"));
        server_rss.push(status_kb(server_pid, "VmRSS:"));
        delivered.update();
    }
    let (cpu1, server_cpu1, changes1, delivered1) = (
        cpu_ticks(pid),
        cpu_ticks(server_pid),
        changes(&stats),
        delivered.update(),
    );
    let elapsed = t0.elapsed().as_secs_f64();
    let dropped1 = metric(&http, web_port, "shopfloor_opcua_changes_dropped_total").await;
    let peak = status_kb(pid, "VmHWM:");
    drop(agent);
    drop(server);
    let mean_mb = |v: &[u64]| v.iter().sum::<u64>() as f64 / v.len().max(1) as f64 / 1024.0;
    Figures {
        items,
        changes_per_s: (changes1 - changes0) as f64 / elapsed,
        delivered_per_s: (delivered1 - delivered0) as f64 / elapsed,
        cpu_percent: (cpu1 - cpu0) as f64 / tick / elapsed * 100.0,
        rss_mb_mean: mean_mb(&rss),
        rss_mb_peak: peak as f64 / 1024.0,
        server_cpu_percent: (server_cpu1 - server_cpu0) as f64 / tick / elapsed * 100.0,
        server_rss_mb: mean_mb(&server_rss),
        dropped: dropped1.unwrap_or(f64::NAN) - dropped0.unwrap_or(f64::NAN),
        startup,
    }
}

/// The benchmark's own server (`fast_server`): this executable again, with `--serve-opcua`.
fn start_fast_server(port: u16, items: usize, stats: &Path) -> Proc {
    let exe = std::env::current_exe().expect("the benchmark's executable");
    let child = std::process::Command::new(exe)
        .arg("--serve-opcua")
        .arg(port.to_string())
        .arg(items.to_string())
        .arg(stats)
        .spawn()
        .expect("start the benchmark's OPC UA server");
    let limit = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < limit,
            "the benchmark's OPC UA server did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Proc(child)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--serve-opcua") {
        fast_server::serve(&args[i + 1..]);
        return;
    }
    let Some(opts) = options() else {
        println!("benches/opcua.rs is a benchmark: run it with `cargo bench --bench opcua`");
        return;
    };
    // `--write-config DIR`: only write the config of the largest workload (and its nodes
    // files) into DIR, for `shopfloor check -c DIR/bench.toml` under `/usr/bin/time -v`.
    if let Some(dir) = std::env::args()
        .skip_while(|a| a != "--write-config")
        .nth(1)
    {
        let dir = PathBuf::from(dir);
        let items = opts.items.iter().copied().max().unwrap_or(PER_MACHINE);
        std::fs::create_dir_all(&dir).expect("make the directory");
        let text = config(
            &dir,
            &dir.join("out.lp"),
            "opc.tcp://127.0.0.1:4840/",
            0,
            items,
        );
        std::fs::write(dir.join("bench.toml"), text).expect("write the config");
        println!("{}", dir.join("bench.toml").display());
        return;
    }
    let rt = process::runtime();
    let load = process::load_average();
    println!(
        "OPC UA benchmark: warm-up {:?}, window {} s; load average before: {}",
        opts.warmup, opts.seconds, load
    );
    println!(
        "| items | changes made/s (server) | delivered/s (agent's output) | agent CPU (% of one core) | agent RSS mean / peak (MB) | server CPU (% of one core) | server RSS (MB) | changes overflowed in the server's queues | start-up to first values |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for items in &opts.items {
        let f = rt.block_on(run(*items, &opts));
        println!(
            "| {} | {:.0} | {:.0} | {:.1} | {:.1} / {:.1} | {:.1} | {:.0} | {} | {:.0} s |",
            f.items,
            f.changes_per_s,
            f.delivered_per_s,
            f.cpu_percent,
            f.rss_mb_mean,
            f.rss_mb_peak,
            f.server_cpu_percent,
            f.server_rss_mb,
            f.dropped,
            f.startup.as_secs_f64(),
        );
        let load = process::load_average();
        println!("load average after {} items: {}", items, load);
    }
}
