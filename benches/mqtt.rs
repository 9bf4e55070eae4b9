//! Benchmark: MQTT messages per second from a real Mosquitto to line protocol, with the CPU
//! time and memory it takes. Not a test: it measures and prints, and asserts nothing.
//!
//! ```sh
//! cargo bench --bench mqtt                 # 200 000 messages
//! cargo bench --bench mqtt -- 500000       # another count
//! ```
//!
//! Method (results and machine in docs/BENCHMARKS.md, section "MQTT source"):
//! 1. Start Mosquitto (tests/common) with no limit on queued messages.
//! 2. A child process (this binary with `publish`) makes the agent's persistent session (the
//!    agent's client id subscribes and disconnects), then publishes N JSON messages of ten
//!    fields with QoS 1 to `bench/mNN/data` for ten machines, and exits once the broker has
//!    acknowledged all of them. The broker now holds them for the agent's session.
//! 3. This process runs the MQTT source (`source::mqtt::run`) and the engine (`on_event`, which
//!    writes the `signal` and `machine_state` lines) on one current-thread tokio runtime: one
//!    core does all of the agent's work. The clock runs from the start of the source until the
//!    engine has written N `signal` lines. CPU is user + system time of this process over that
//!    span (getrusage); memory is the peak resident set (VmHWM) of this process, which has not
//!    published anything itself.
//!
//! The broker runs in its own process on the other core; its CPU is not counted.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use shopfloor::engine::Engine;
use shopfloor::metrics::Metrics;
use shopfloor::model::SourceEvent;
use shopfloor::source::mqtt;

const MACHINES: usize = 10;
const CLIENT_ID: &str = "shopfloor-bench-agent";

fn config_text(port: u16) -> String {
    let mut text = String::from(
        "[site]\ncounty = \"yk\"\nsector = \"power_tools\"\nenterprise = \"bench\"\n\n",
    );
    for m in 0..MACHINES {
        text.push_str(&format!(
            "[[machine]]\nid = \"m{m:02}\"\nkind = \"lathe\"\ncnc = true\n\n"
        ));
    }
    text.push_str(&format!(
        r#"[[state_rules]]
rule = [
  {{ state = "alarm", when = [{{ signal = "alarm_code", op = "!=", value = 0 }}] }},
  {{ state = "running", when = [{{ signal = "run", op = "==", value = 1 }}] }},
]

[[mqtt]]
id = "bench"
address = "127.0.0.1:{port}"
client_id = "{CLIENT_ID}"

  [[mqtt.topic]]
  pattern = "bench/{{machine}}/data"
  timestamp = "ts"
  field = [
    {{ signal = "run", path = "state.run", type = "bool" }},
    {{ signal = "alarm_code", path = "state.alarm", type = "int" }},
    {{ signal = "parts", path = "counters.parts", type = "int" }},
    {{ signal = "spindle_rpm", path = "spindle.rpm" }},
    {{ signal = "spindle_load", path = "spindle.load" }},
    {{ signal = "feed", path = "axes.feed" }},
    {{ signal = "x_temp", path = "axes.temps[0]" }},
    {{ signal = "y_temp", path = "axes.temps[1]" }},
    {{ signal = "z_temp", path = "axes.temps[2]" }},
    {{ signal = "program", path = "nc.program", type = "string" }},
  ]
"#
    ));
    text
}

fn payload(i: u64, ts_ms: i64) -> String {
    format!(
        r#"{{"ts":{ts_ms},"state":{{"run":{},"alarm":{}}},"counters":{{"parts":{i}}},"spindle":{{"rpm":{}.5,"load":{}.25}},"axes":{{"feed":1200.0,"temps":[31.5,30.25,29.75]}},"nc":{{"program":"O{:04}"}}}}"#,
        !i.is_multiple_of(7),
        if i.is_multiple_of(50) { 1021 } else { 0 },
        8000 + i % 100,
        40 + i % 20,
        i % 10_000
    )
}

/// The child: make the agent's session, then publish `count` messages and wait for every
/// acknowledgement.
async fn publish(port: u16, count: u64) {
    let mut session = MqttOptions::new(CLIENT_ID, common::HOST, port);
    session.set_clean_session(false);
    let (client, mut events) = AsyncClient::new(session, 10);
    client
        .subscribe("bench/+/data", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = events.poll().await.expect("session") {
            break;
        }
    }
    client.disconnect().await.expect("disconnect");
    while events.poll().await.is_ok() {}

    let mut options = MqttOptions::new("bench-publisher", common::HOST, port);
    options.set_inflight(1000);
    let (client, mut events) = AsyncClient::new(options, 1000);
    let sender = tokio::spawn(async move {
        let ts = jiff::Timestamp::now().as_millisecond();
        for i in 0..count {
            let topic = format!("bench/m{:02}/data", i as usize % MACHINES);
            client
                .publish(topic, QoS::AtLeastOnce, false, payload(i, ts))
                .await
                .expect("publish");
        }
        client
    });
    let mut acked = 0;
    while acked < count {
        match events.poll().await {
            Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
            Ok(Event::Outgoing(Outgoing::Publish(_))) | Ok(_) => {}
            Err(e) => panic!("publisher: {e}"),
        }
    }
    let _ = sender.await;
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct we pass and has no other preconditions.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("publish") {
        let port = args[1].parse().expect("port");
        let count = args[2].parse().expect("count");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(publish(port, count));
        return;
    }
    // `cargo test --all-targets` (scripts/test) runs bench binaries without `--bench`; the
    // benchmark only runs under `cargo bench`.
    if !args.iter().any(|a| a == "--bench") {
        println!("benches/mqtt: run it with `cargo bench --bench mqtt`; nothing to test");
        return;
    }
    let count: u64 = args.iter().find_map(|a| a.parse().ok()).unwrap_or(200_000);
    shopfloor::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        // Queue everything for the agent's session; the in-flight window stays at Mosquitto's
        // default of 20 unacknowledged messages, as on a broker in the field.
        let broker = common::Mosquitto::start_with_config(&["max_queued_messages 0"]).await;
        let started = Instant::now();
        let status = std::process::Command::new(std::env::current_exe().expect("exe"))
            .args(["publish", &broker.port().to_string(), &count.to_string()])
            .status()
            .expect("run the publisher");
        assert!(status.success(), "publisher failed");
        println!(
            "published {count} messages in {:.1} s (not part of the figure)",
            started.elapsed().as_secs_f64()
        );

        let cfg = shopfloor::agent::config::load_str(&config_text(broker.port()), "bench.toml")
            .unwrap_or_else(|d| panic!("{d}"));
        let metrics = Metrics::new();
        let (machines, _) = cfg.register_ids();
        let source = mqtt::prepare(
            &cfg.mqtt[0],
            &cfg.site,
            machines,
            HashSet::new(),
            metrics.clone(),
        )
        .expect("prepare");
        let mut engine = Engine::new(&cfg, jiff::Timestamp::now());
        let (tx, mut rx) = tokio::sync::mpsc::channel(shopfloor::agent::EVENT_QUEUE);
        let (trigger, shutdown) = shopfloor::shutdown::channel();
        let rss_before = status_kib("VmRSS:");
        let cpu_before = cpu_seconds();
        let t0 = Instant::now();
        let task = tokio::spawn(mqtt::run(source, tx, metrics.clone(), shutdown));
        let mut out: Vec<String> = Vec::with_capacity(64);
        let (mut signal_lines, mut other_lines, mut bytes) = (0u64, 0u64, 0u64);
        let mut last = t0;
        while signal_lines < count {
            // Mosquitto 2.0.11 has been seen to hand the session a few per cent fewer messages
            // than it acknowledged to the publisher (its log shows every one it sent reaching
            // the agent); the clock then stops at the last message that came.
            let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(3), rx.recv()).await
            else {
                println!("the broker sent no more after {signal_lines} messages");
                break;
            };
            last = Instant::now();
            if matches!(event, SourceEvent::Samples(_)) {
                signal_lines += 1;
            }
            engine.on_event(event, &mut out);
            for line in out.drain(..) {
                bytes += line.len() as u64 + 1;
                if !line.starts_with("signal,") {
                    other_lines += 1;
                }
            }
        }
        let elapsed = last.duration_since(t0).as_secs_f64();
        let cpu = cpu_seconds() - cpu_before;
        let count = signal_lines;
        trigger.fire();
        let _ = task.await;
        let bad = metrics.sum("shopfloor_mqtt_bad_messages_total");
        println!(
            "{count} messages → {signal_lines} signal lines + {other_lines} state lines, {:.1} MB of line protocol, {bad} bad",
            bytes as f64 / 1e6
        );
        println!(
            "wall {elapsed:.2} s → {:.0} messages/s; CPU {cpu:.2} s → {:.0} messages per CPU-second ({:.0} % of one core)",
            count as f64 / elapsed,
            count as f64 / cpu,
            cpu / elapsed * 100.0
        );
        println!(
            "RSS {} KiB before the source started, {} KiB at the end, peak (VmHWM) {} KiB",
            rss_before,
            status_kib("VmRSS:"),
            status_kib("VmHWM:")
        );
    });
}
