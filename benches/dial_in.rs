//! Dial-in benchmark: 1,000 4G DTUs connected to one `[[dial_in]]` listener at once, each with
//! 2 Modbus devices × 50 holding registers behind it, polled every 5 s over a link with 200 ms
//! of latency.
//!
//! ```sh
//! cargo bench --bench dial_in                                 # 1000 DTUs, 60 s window
//! cargo bench --bench dial_in -- --dtus 1000 --seconds 60 --warmup 20 --latency-ms 200
//! ```
//!
//! The DTU fleet runs in this process, one tokio task per DTU: it connects to the agent's
//! listener, sends its registration (an IMEI of its own), a heartbeat every 30 s, and answers
//! each RTU request for units 1 and 2 (function 3 or 4, CRC checked) `--latency-ms` after it
//! came, with register `a` = `a` and a correct CRC: a 4G round trip with the RS-485 line behind
//! it. A DTU whose connection is refused or dropped dials again after 1 s, as DTUs do (the
//! listener lets 64 unregistered connections wait at once, so 1,000 DTUs dialling in the same
//! second take a few rounds).
//!
//! The agent is `shopfloor run` in its own process on a generated config (1,000 DTUs, 2,000
//! press machines, one profile of 50 `u16` fields, a `[[file]]` output, the board on a free
//! port for `/metrics`). After a warm-up its CPU time (utime + stime from /proc) and resident
//! memory (VmRSS sampled every second, VmHWM for the peak) are measured over a window. The
//! schedule is measured on the DTUs' side, from the time each request arrived: the polls each
//! device got in the window against window ÷ 5 s, and the largest gap between two polls of one
//! device beyond 5 s (its lateness). The agent's own `shopfloor_polls_total` and
//! `shopfloor_poll_errors_total` over the window are printed beside them.
//!
//! 1,000 DTUs are 1,000 sockets in the agent and 1,000 here: the bench raises its open-file
//! limit (soft to hard) before it starts, and the agent inherits it.
//!
//! To see where the agent's memory goes, `SHOPFLOOR_BENCH_WRAP="heaptrack -o /tmp/agent"` runs
//! it under that command (see `benches/support/process.rs`).
//!
//! This is a benchmark, not a test: `cargo test --all-targets` builds it and runs it without
//! `--bench`, and then it only says how to run it.

#[path = "support/process.rs"]
#[allow(dead_code)]
mod process;

#[path = "../tests/common/mod.rs"]
mod common;

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use process::{cpu_ticks, status_kb, ticks_per_second};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const REGISTERS: u16 = 50;
const POLL: Duration = Duration::from_secs(5);
const HEARTBEAT: &[u8] = b"www.usr.cn";

struct Options {
    dtus: usize,
    warmup: Duration,
    seconds: u64,
    latency: Duration,
}

fn options() -> Option<Options> {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        return None;
    }
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some(Options {
        dtus: value("--dtus").unwrap_or(1000) as usize,
        warmup: Duration::from_secs(value("--warmup").unwrap_or(20)),
        seconds: value("--seconds").unwrap_or(60),
        latency: Duration::from_millis(value("--latency-ms").unwrap_or(200)),
    })
}

/// DTU `i`'s IMEI: 15 digits.
fn imei(i: usize) -> String {
    format!("86862604{i:07}")
}

/// Modbus RTU CRC-16 (polynomial 0xA001 reflected, initial 0xFFFF), low byte first on the wire.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc = 0xFFFFu16;
    for &b in bytes {
        crc ^= u16::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xA001
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// The answer to an 8-byte read request (unit, function 3/4, address, count, CRC) for units 1
/// and 2, register `a` holding `a`; `None` for anything else.
fn answer(req: &[u8; 8]) -> Option<Vec<u8>> {
    let (unit, function) = (req[0], req[1]);
    if !(unit == 1 || unit == 2) || !(function == 3 || function == 4) {
        return None;
    }
    if crc16(&req[..6]).to_le_bytes() != [req[6], req[7]] {
        return None;
    }
    let address = u16::from_be_bytes([req[2], req[3]]);
    let count = u16::from_be_bytes([req[4], req[5]]);
    if count == 0 || count > 125 {
        return None;
    }
    let mut out = vec![unit, function, (count * 2) as u8];
    for a in address..address.saturating_add(count) {
        out.extend_from_slice(&a.to_be_bytes());
    }
    out.extend_from_slice(&crc16(&out).to_le_bytes());
    Some(out)
}

/// When each of a DTU's two devices was asked (the time each request arrived).
type Polls = Arc<Mutex<[Vec<Instant>; 2]>>;

/// One DTU, for ever: dial in, register, heartbeat every 30 s, answer after `latency`; dial
/// again 1 s after the connection ends.
async fn dtu(port: u16, i: usize, latency: Duration, polls: Polls, connects: Arc<Mutex<u64>>) {
    loop {
        if let Ok(stream) = TcpStream::connect(("127.0.0.1", port)).await {
            *connects.lock().unwrap() += 1;
            let _ = stream.set_nodelay(true);
            session(stream, i, latency, &polls).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn session(stream: TcpStream, i: usize, latency: Duration, polls: &Polls) {
    let (mut rd, wr) = stream.into_split();
    let wr = Arc::new(tokio::sync::Mutex::new(wr));
    if wr.lock().await.write_all(imei(i).as_bytes()).await.is_err() {
        return;
    }
    let beat = wr.clone();
    let heartbeat = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        tick.tick().await;
        loop {
            tick.tick().await;
            if beat.lock().await.write_all(HEARTBEAT).await.is_err() {
                return;
            }
        }
    });
    let mut buf = Vec::with_capacity(64);
    let mut chunk = [0u8; 256];
    loop {
        let n = match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        // Requests are 8 bytes each; the agent sends one at a time.
        while buf.len() >= 8 {
            let req: [u8; 8] = buf[..8].try_into().expect("8 bytes");
            buf.drain(..8);
            let Some(reply) = answer(&req) else {
                buf.clear();
                break;
            };
            polls.lock().unwrap()[usize::from(req[0] - 1)].push(Instant::now());
            tokio::time::sleep(latency).await;
            if wr.lock().await.write_all(&reply).await.is_err() {
                heartbeat.abort();
                return;
            }
        }
    }
    heartbeat.abort();
}

fn config(dir: &std::path::Path, port: u16, web: u16, dtus: usize) -> String {
    let mut c = String::new();
    let _ = write!(
        c,
        "[site]\ncounty = \"bench\"\nsector = \"doors\"\nenterprise = \"bench\"\n\n\
         [agent]\ndata_dir = \"{}\"\noffline_after = \"30s\"\nheartbeat = \"60s\"\n\n\
         [[file]]\npath = \"{}\"\n\n\
         [web]\nlisten = \"127.0.0.1:{web}\"\n\n",
        dir.join("data").display(),
        dir.join("out.lp").display(),
    );
    for m in 1..=dtus * 2 {
        let _ = write!(
            c,
            "[[machine]]\nid = \"m{m:04}\"\nkind = \"press\"\ncnc = false\n\n"
        );
    }
    // All DTUs dial in from 127.0.0.1 here, as DTUs behind one carrier NAT would.
    let _ = write!(
        c,
        "[[dial_in]]\nid = \"dtus\"\nlisten = \"127.0.0.1:{port}\"\n\
         max_connections = {}\nmax_connects_per_minute = 100000\n\n",
        dtus + 100
    );
    for i in 1..=dtus {
        let _ = write!(
            c,
            "[[dial_in.dtu]]\nid = \"dtu{i:04}\"\nimei = \"{}\"\nheartbeat = \"www.usr.cn\"\n\
             heartbeat_period = \"30s\"\ntimeout = \"3s\"\n\n",
            imei(i)
        );
        for unit in 1..=2 {
            let _ = write!(
                c,
                "[[dial_in.dtu.device]]\nid = \"dtu{i:04}-{unit}\"\nunit = {unit}\npoll = \"5s\"\n\
                 profile = \"bench\"\nmachine = \"m{:04}\"\n\n",
                (i - 1) * 2 + unit
            );
        }
    }
    c
}

fn profile() -> String {
    let mut p = String::from("description = \"benchmark device\"\n");
    for r in 0..REGISTERS {
        let _ = write!(
            p,
            "[[field]]\nsignal = \"r{r}\"\nregister = \"holding\"\naddress = {r}\n"
        );
    }
    p
}

/// The sum of every sample of `metric` on the agent's `/metrics` (all label sets); `None`
/// when the page could not be fetched.
async fn metric_sum(http: &reqwest::Client, web: u16, metric: &str) -> Option<f64> {
    let url = format!("http://127.0.0.1:{web}/metrics");
    let text = http.get(url).send().await.ok()?.text().await.ok()?;
    Some(
        text.lines()
            .filter(|l| {
                l.strip_prefix(metric)
                    .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
            })
            .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .sum(),
    )
}

/// Raises this process's open-file limit to its hard limit (children inherit it).
fn raise_nofile() -> u64 {
    // SAFETY: getrlimit/setrlimit only read and write this process's limits.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur
    }
}

async fn run(opts: &Options) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (port, web) = (common::free_port(), common::free_port());
    let cfg = dir.path().join("bench.toml");
    std::fs::write(&cfg, config(dir.path(), port, web, opts.dtus)).expect("write config");
    std::fs::create_dir(dir.path().join("profiles")).expect("profiles dir");
    std::fs::write(dir.path().join("profiles/bench.toml"), profile()).expect("write profile");
    let agent = process::start_agent(&cfg);
    let pid = agent.0.id();
    let http = common::http_client();
    common::eventually("the agent's listener", Duration::from_secs(60), || async {
        TcpStream::connect(("127.0.0.1", port))
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    })
    .await;

    let connects: Arc<Mutex<u64>> = Arc::default();
    let polls: Vec<Polls> = (0..opts.dtus).map(|_| Arc::default()).collect();
    let fleet: Vec<_> = polls
        .iter()
        .enumerate()
        .map(|(i, p)| tokio::spawn(dtu(port, i + 1, opts.latency, p.clone(), connects.clone())))
        .collect();
    tokio::time::sleep(opts.warmup).await;

    let tick = ticks_per_second();
    let connected = metric_sum(&http, web, "shopfloor_dial_in_dtu_connected").await;
    let made0 = metric_sum(&http, web, "shopfloor_polls_total").await;
    let errors0 = metric_sum(&http, web, "shopfloor_poll_errors_total").await;
    let (cpu0, t0, connects0) = (cpu_ticks(pid), Instant::now(), *connects.lock().unwrap());
    let mut rss = Vec::new();
    for _ in 0..opts.seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        rss.push(status_kb(pid, "VmRSS:"));
    }
    let (cpu1, t1) = (cpu_ticks(pid), Instant::now());
    let elapsed = (t1 - t0).as_secs_f64();
    let peak = status_kb(pid, "VmHWM:");
    let reconnects = *connects.lock().unwrap() - connects0;
    let made1 = metric_sum(&http, web, "shopfloor_polls_total").await;
    let errors1 = metric_sum(&http, web, "shopfloor_poll_errors_total").await;
    let threads = status_kb(pid, "Threads:");
    let (anon, file) = (status_kb(pid, "RssAnon:"), status_kb(pid, "RssFile:"));
    drop(agent);
    for f in fleet {
        f.abort();
    }

    // The schedule, as the DTUs saw it: polls per device in [t0, t1), and the largest gap
    // between two polls of one device beyond 5 s (gaps that end in the window).
    let expected_each = (elapsed / POLL.as_secs_f64()).floor() as usize;
    let (mut got, mut short, mut late_max) = (0usize, 0usize, Duration::ZERO);
    for p in &polls {
        for device in p.lock().unwrap().iter() {
            let n = device.iter().filter(|t| **t >= t0 && **t < t1).count();
            got += n;
            if n < expected_each {
                short += 1;
            }
            for w in device.windows(2) {
                if w[1] >= t0 && w[1] < t1 {
                    late_max = late_max.max((w[1] - w[0]).saturating_sub(POLL));
                }
            }
        }
    }
    let devices = opts.dtus * 2;
    let fmt = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.0}"));
    println!(
        "DTUs connected at the window's start (agent's gauge): {}; DTU reconnects in the window: {reconnects}",
        fmt(connected)
    );
    println!(
        "agent: polls {} and poll errors {} in the window (shopfloor_polls_total, shopfloor_poll_errors_total); threads {threads}; \
         RSS at the end {:.1} MB anonymous (heap, stacks), {:.1} MB file-backed (code)",
        fmt(made1.zip(made0).map(|(a, b)| a - b)),
        fmt(errors1.zip(errors0).map(|(a, b)| a - b)),
        anon as f64 / 1024.0,
        file as f64 / 1024.0,
    );
    println!(
        "| DTUs × devices × registers | latency | polls seen / expected | devices short of {expected_each} polls | max lateness | agent CPU (% of one core) | agent RSS mean / peak (MB) |"
    );
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {} × 2 × {REGISTERS} | {} ms | {got} / {:.0} | {short} | {} ms | {:.1} | {:.1} / {:.1} |",
        opts.dtus,
        opts.latency.as_millis(),
        devices as f64 * elapsed / POLL.as_secs_f64(),
        late_max.as_millis(),
        (cpu1 - cpu0) as f64 / tick / elapsed * 100.0,
        rss.iter().sum::<u64>() as f64 / rss.len().max(1) as f64 / 1024.0,
        peak as f64 / 1024.0,
    );
}

fn main() {
    let Some(opts) = options() else {
        println!("benches/dial_in.rs is a benchmark: run it with `cargo bench --bench dial_in`");
        return;
    };
    let nofile = raise_nofile();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "dial-in benchmark: {} DTUs, warm-up {:?}, window {} s, open-file limit {nofile}; load average before: {}",
        opts.dtus,
        opts.warmup,
        opts.seconds,
        load.trim()
    );
    rt.block_on(run(&opts));
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average after: {}", load.trim());
}
