//! Benchmark: messages per second that `shopfloor county ingest` takes from the county's
//! Mosquitto into its store, with one instance and with two sharing the subscription. Not a
//! test: it measures and prints, and asserts nothing.
//!
//! ```sh
//! cargo bench --bench county_ingest                      # 600 enterprises × 100 messages
//! cargo bench --bench county_ingest -- --per-enterprise 200
//! ```
//!
//! Method (results and machine in docs/BENCHMARKS.md, section "County ingest"), once for one
//! instance and once for two, each round on a fresh broker and store:
//! 1. Start Mosquitto (tests/common; no limit on queued messages) and VictoriaMetrics.
//! 2. Start the ingest instances (`shopfloor county ingest`, release build, their own
//!    processes, each with its own client id, one share group) so the broker has their
//!    persistent sessions and shared subscription, and stop them: the broker now queues each
//!    instance's share of whatever is published.
//! 3. 600 simulated enterprises (one MQTT 5 connection each, in this process) publish their
//!    uplink messages with QoS 1, alternately `fleet` (four window lines) and `green` (two),
//!    as the agent's uplink writes them, and wait for every acknowledgement.
//! 4. Start the instances again and time them from their start until their `/metrics` count
//!    every line as committed to their spools: messages per second is the backlog over that
//!    time, the rate an instance sustains while the broker feeds it as fast as it can. CPU is
//!    utime + stime of each instance over that span; memory its peak resident set (VmHWM).
//!
//! The publishers have finished before the clock starts, so they take no CPU from the
//! ingest. The broker and the store run on the same two cores; the broker's CPU over the drain
//! is shown beside the ingest's.

#[path = "support/process.rs"]
mod process;

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use process::{Proc, cpu_ticks, status_kb, ticks_per_second};
use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};

const BIN: &str = env!("CARGO_BIN_EXE_shopfloor");
const ENTERPRISES: usize = 600;
const SECTORS: [&str; 7] = [
    "doors",
    "cups",
    "cookware",
    "power_tools",
    "leisure",
    "castings",
    "other",
];

/// The pid of the process whose command line mentions `needle` (the broker, by its config's
/// path in its temp dir).
fn pid_of(needle: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.find_map(|entry| {
        let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        String::from_utf8_lossy(&cmdline)
            .contains(needle)
            .then_some(pid)
    })
}

/// The uplink payloads of enterprise `e`, message `n`: a `fleet` message of four window lines
/// or a `green` message of two, as an agent writes them.
fn payload(e: usize, n: usize) -> (String, String) {
    let sector = SECTORS[e % SECTORS.len()];
    let tags = format!("county=yk,sector={sector},enterprise=e{e:03}");
    let ts = 1_796_140_800_000_000_000i64 + n as i64 * 60_000_000_000;
    let topic = |m: &str| format!("shopfloor/yk/{sector}/e{e:03}/{m}");
    if n.is_multiple_of(2) {
        let mut body = String::new();
        for window in ["1h", "shift", "1d", "1mo"] {
            body.push_str(&format!(
                "fleet,{tags},window={window} machines_total=40i,machines_digital=30i,machines_cnc=28i,\
                 machines_networked=24i,networking_rate=0.6,networking_rate_digital=0.8,cnc_rate=0.7,\
                 cnc_running_s={}.5,cnc_planned_s=100800,cnc_utilisation=0.5 {ts}\n",
                n * 10
            ));
        }
        (topic("fleet"), body)
    } else {
        let mut body = String::new();
        for window in ["1d", "1mo"] {
            body.push_str(&format!(
                "green,{tags},window={window},va_method=parts,el_method=calorific energy_tce=1.25,\
                 electricity_kwh=10000,water_t=30,value_added_10k_cny=2.5,tce_per_10k_cny=0.5,\
                 value_added_per_tce=2,water_t_per_10k_cny=12 {ts}\n"
            ));
        }
        (topic("green"), body)
    }
}

/// One enterprise publishes its messages and waits for every acknowledgement.
async fn enterprise(port: u16, e: usize, messages: usize) -> usize {
    let mut options = MqttOptions::new(format!("bench-e{e:03}"), common::HOST, port);
    options
        .set_keep_alive(Duration::from_secs(60))
        .set_connection_timeout(30);
    let (client, mut events) = AsyncClient::new(options, messages + 10);
    // Six hundred connections at once on a loaded machine: connect first, retrying, so that
    // no publish is queued on a connection that then fails.
    let mut attempts = 0;
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => break,
            Ok(_) => {}
            Err(_) if attempts < 20 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => panic!("publisher e{e:03} cannot connect: {err}"),
        }
    }
    for n in 0..messages {
        let (topic, body) = payload(e, n);
        client
            .publish(topic, QoS::AtLeastOnce, false, body.into_bytes())
            .await
            .expect("queue a publish");
    }
    let mut acked = 0;
    let mut unheard = 0;
    while acked < messages {
        match events.poll().await {
            Ok(Event::Incoming(Packet::PubAck(a))) => {
                acked += 1;
                if a.reason != PubAckReason::Success {
                    unheard += 1;
                }
            }
            Ok(_) => {}
            Err(e) => panic!("publisher: {e}"),
        }
    }
    let _ = client.disconnect().await;
    unheard
}

fn ingest_config(dir: &Path, broker: u16, vm: &str, id: &str, metrics_port: u16) -> String {
    format!(
        r#"[ingest]
county = "yk"
share_group = "bench"
data_dir = "{data}/{id}"
metrics_listen = "127.0.0.1:{metrics_port}"

[broker]
address = "127.0.0.1:{broker}"
client_id = "{id}"

[spool]
max_bytes = 4294967296

[[influx]]
url = "{vm}"
org = "county"
bucket = "county"
"#,
        data = dir.display()
    )
}

async fn committed_lines(http: &reqwest::Client, port: u16) -> u64 {
    let url = format!("http://127.0.0.1:{port}/metrics");
    process::scraped(http, &url, "shopfloor_ingest_lines_total")
        .await
        .map_or(0, |v| v as u64)
}

struct Figures {
    instances: usize,
    messages: usize,
    publish_s: f64,
    drain_s: f64,
    cpu_percent: Vec<f64>,
    rss_mb: Vec<f64>,
    broker_cpu_percent: f64,
}

async fn round(instances: usize, per_enterprise: usize) -> Figures {
    let http = common::http_client();
    let broker = common::Mosquitto::start_with_config(&["max_queued_messages 0"]).await;
    let vm = common::VictoriaMetrics::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let ids: Vec<(String, u16)> = (0..instances)
        .map(|i| (format!("bench-ingest-{i}"), common::free_port()))
        .collect();
    let start = |id: &str, metrics_port: u16| {
        let path = dir.path().join(format!("{id}.toml"));
        std::fs::write(
            &path,
            ingest_config(dir.path(), broker.port(), &vm.url(), id, metrics_port),
        )
        .expect("write the ingest config");
        Proc(
            Command::new(BIN)
                .args(["county", "ingest", "--config"])
                .arg(&path)
                .env("SHOPFLOOR_LOG", "warn")
                .stdout(Stdio::null())
                .spawn()
                .expect("start shopfloor county ingest"),
        )
    };

    // The sessions and the shared subscription, then the instances go away.
    let first: Vec<Proc> = ids.iter().map(|(id, port)| start(id, *port)).collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    for p in first {
        p.stop();
    }

    // The backlog.
    let t = Instant::now();
    let publishers: Vec<_> = (0..ENTERPRISES)
        .map(|e| tokio::spawn(enterprise(broker.port(), e, per_enterprise)))
        .collect();
    let mut unheard = 0;
    for p in publishers {
        unheard += p.await.expect("publisher");
    }
    let publish_s = t.elapsed().as_secs_f64();
    assert_eq!(
        unheard, 0,
        "the broker had no subscriber for some messages: the ingest's sessions were not kept"
    );
    let messages = ENTERPRISES * per_enterprise;
    // Fleet messages have four lines, green two; they alternate, fleet first.
    let lines = ENTERPRISES * (per_enterprise.div_ceil(2) * 4 + per_enterprise / 2 * 2);

    // The drain.
    let t = Instant::now();
    let running: Vec<Proc> = ids.iter().map(|(id, port)| start(id, *port)).collect();
    let pids: Vec<u32> = running.iter().map(|p| p.0.id()).collect();
    let ticks_before: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect();
    let broker_pid = pid_of(&broker.dir().display().to_string());
    let broker_before = broker_pid.map_or(0, cpu_ticks);
    loop {
        let mut done = 0;
        for (_, port) in &ids {
            done += committed_lines(&http, *port).await;
        }
        if done >= lines as u64 {
            break;
        }
        if t.elapsed() > Duration::from_secs(600) {
            panic!("only {done} of {lines} lines committed after 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain_s = t.elapsed().as_secs_f64();
    let tck = ticks_per_second();
    let cpu_percent = pids
        .iter()
        .zip(&ticks_before)
        .map(|(p, b)| (cpu_ticks(*p) - b) as f64 / tck / drain_s * 100.0)
        .collect();
    let rss_mb = pids
        .iter()
        .map(|p| status_kb(*p, "VmHWM:") as f64 / 1024.0)
        .collect();
    let broker_cpu_percent =
        broker_pid.map_or(0, |p| cpu_ticks(p) - broker_before) as f64 / tck / drain_s * 100.0;
    drop(running);
    Figures {
        instances,
        messages,
        publish_s,
        drain_s,
        cpu_percent,
        rss_mb,
        broker_cpu_percent,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        println!(
            "benches/county_ingest.rs is a benchmark: run it with `cargo bench --bench county_ingest`"
        );
        return;
    }
    let per_enterprise = args
        .iter()
        .position(|a| a == "--per-enterprise")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(100usize);
    shopfloor::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "County ingest benchmark: {ENTERPRISES} enterprises × {per_enterprise} messages; load average before: {}",
        load.trim()
    );
    println!(
        "| instances | messages | publish (s) | drain (s) | messages/s | CPU per instance (% of one core) | peak RSS per instance (MB) | Mosquitto CPU |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for instances in [1, 2] {
        let f = rt.block_on(round(instances, per_enterprise));
        let list = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.1}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.0} | {} | {} | {:.0} % |",
            f.instances,
            f.messages,
            f.publish_s,
            f.drain_s,
            f.messages as f64 / f.drain_s,
            list(&f.cpu_percent),
            list(&f.rss_mb),
            f.broker_cpu_percent
        );
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average after: {}", load.trim());
}
