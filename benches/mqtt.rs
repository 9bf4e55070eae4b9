//! Benchmark: MQTT messages per second from a real Mosquitto to line protocol, with the CPU
//! time and memory it takes. Not a test: it measures and prints, and asserts nothing.
//!
//! ```sh
//! cargo bench --bench mqtt                 # 200 000 messages
//! cargo bench --bench mqtt -- 500000       # another count
//! cargo bench --bench mqtt -- rate 1000 60 # the whole agent at 1000 messages/s for 60 s
//! cargo bench --bench mqtt -- rate 0 60    # the idle agent's CPU per second
//! cargo bench --bench mqtt -- rate 1000 60 1000 100ms # with inflight_window and linger
//! cargo bench --bench mqtt -- rate 1000 60 20 100ms 20 # and the broker's window (default 1000)
//! ```
//!
//! `rate R S` measures the per-message cost of the whole agent at a steady rate (issue 21: it
//! rose at low rates): this process runs `agent::start` (MQTT source, engine, spool task and a
//! `[[file]]` writer, on a two-worker runtime like `shopfloor run`) while a child process
//! publishes R JSON messages of ten fields a second for S seconds, spread over each second in
//! 1 ms steps (QoS 1, ten machines). After a 2 s warm-up the CPU time of this process (getrusage:
//! every thread of the agent; not the publisher, not the broker) is taken over the remaining
//! span, and divided by the messages the source took in that span: CPU-ms per 1000 messages.
//! It also prints what was delivered to the file and what was dropped inside the agent. The
//! broker runs with an in-flight window of 1000 (`max_inflight_messages`; Mosquitto's default
//! of 20 caps delivery to one client near 9k/s here; `rate R S W L B` sets it to B) and
//! without its per-packet debug log.
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

/// The child of `rate`: publish `rate` messages a second for `seconds`, spread in 1 ms steps,
/// and wait for every acknowledgement.
///
/// It speaks MQTT 3.1.1 on a plain socket rather than through rumqttc: rumqttc writes and
/// flushes each publish on its own (one system call a message), which on this loaded machine
/// holds a publisher well under 100k/s and takes the agent's core. Here each 1 ms step's
/// publishes go out in one write, QoS 1 with packet ids 1..=65535 in turn, and at most
/// [`PUBLISH_WINDOW`] unacknowledged (the broker answers each with a PUBACK).
async fn publish_at_rate(port: u16, rate: u64, seconds: u64) {
    use std::sync::Arc;
    if rate == 0 {
        // `rate 0 S`: the idle agent's fixed cost over S seconds.
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        return;
    }
    use std::sync::atomic::{AtomicU64, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let stream = tokio::net::TcpStream::connect((common::HOST, port))
        .await
        .expect("connect to the broker");
    stream.set_nodelay(true).expect("nodelay");
    let (mut reader, mut writer) = stream.into_split();
    // CONNECT: protocol level 4, clean session, no keepalive (the run is short).
    let client_id = b"bench-rate-publisher";
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 0];
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id);
    let mut connect = vec![0x10];
    put_length(&mut connect, body.len());
    connect.extend_from_slice(&body);
    writer.write_all(&connect).await.expect("CONNECT");
    let mut connack = [0u8; 4];
    reader.read_exact(&mut connack).await.expect("CONNACK");
    assert_eq!(connack, [0x20, 2, 0, 0], "the broker refused the publisher");

    let total = rate * seconds;
    let acked = Arc::new(AtomicU64::new(0));
    let counter = acked.clone();
    // PUBACKs (and nothing else: no subscriptions, no keepalive) are four bytes each.
    let acks = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut bytes = 0u64;
        while bytes / 4 < total {
            let n = reader.read(&mut buf).await.expect("read PUBACKs");
            assert!(n > 0, "the broker closed the publisher's connection");
            bytes += n as u64;
            counter.store(bytes / 4, Ordering::Relaxed);
        }
    });
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let start = Instant::now();
    let mut sent = 0u64;
    let mut out = Vec::with_capacity(1 << 20);
    while sent < total {
        tick.tick().await;
        // As many as the rate says should have gone by now, within the window.
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64)
            .min(total)
            .min(acked.load(Ordering::Relaxed) + PUBLISH_WINDOW);
        out.clear();
        let ts = jiff::Timestamp::now().as_millisecond();
        while sent < due {
            let topic = format!("bench/m{:02}/data", sent as usize % MACHINES);
            let payload = payload(sent, ts);
            out.push(0x32);
            put_length(&mut out, 2 + topic.len() + 2 + payload.len());
            out.extend_from_slice(&(topic.len() as u16).to_be_bytes());
            out.extend_from_slice(topic.as_bytes());
            out.extend_from_slice(&((sent % 65_535) as u16 + 1).to_be_bytes());
            out.extend_from_slice(payload.as_bytes());
            sent += 1;
        }
        if !out.is_empty() {
            writer.write_all(&out).await.expect("PUBLISH");
        }
    }
    acks.await.expect("PUBACK reader");
    // DISCONNECT.
    let _ = writer.write_all(&[0xE0, 0]).await;
}

/// The most publishes the rate publisher leaves unacknowledged (packet ids are not reused
/// before their acknowledgement).
const PUBLISH_WINDOW: u64 = 30_000;

/// MQTT's variable-length "remaining length".
fn put_length(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n % 128) as u8;
        n /= 128;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// `rate R S`: see the module documentation.
fn run_at_rate(rate: u64, seconds: u64, tuning: &str, broker_window: u64) {
    shopfloor::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        // The broker as one would run it for such rates: no debug log (the harness logs every
        // packet, four lines a message, which alone holds Mosquitto far below 50k/s) and an
        // in-flight window of 1000 instead of the default 20 unacknowledged QoS 1 messages per
        // client, which caps delivery to the agent at about one window per round trip (some
        // 9k/s on this machine). The queue is large, not unlimited: with `max_queued_messages 0`
        // Mosquitto 2.0.11 queued every new message while any was unacknowledged and released
        // the queue only on the next PUBACK, so a round's pause brought one message (seen with
        // strace in issue 21's sixth round). Subscriptions stay logged: the wait below looks for
        // the agent's.
        let inflight = format!("max_inflight_messages {broker_window}");
        let broker = common::Mosquitto::start_with_config(&[
            "max_queued_messages 1000000",
            &inflight,
            "log_type none",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "log_type subscribe",
        ])
        .await;
        let data = tempfile::tempdir().expect("temp dir");
        let mut text = config_text(broker.port()).replacen(
            &format!("client_id = \"{CLIENT_ID}\"\n"),
            &format!("client_id = \"{CLIENT_ID}\"\n{tuning}"),
            1,
        );
        text.push_str(&format!(
            "\n[agent]\ndata_dir = \"{d}\"\n\n[web]\nenabled = false\n\n[[file]]\npath = \"{d}/records.lp\"\n",
            d = data.path().display()
        ));
        let cfg = shopfloor::agent::config::load_str(&text, "bench.toml").unwrap_or_else(|d| panic!("{d}"));
        let (trigger, shutdown) = shopfloor::shutdown::channel();
        let running = shopfloor::agent::start(&cfg, shutdown).expect("agent starts");
        let metrics = running.metrics.clone();
        // The agent's subscription is in place before anything is published.
        let subscribed = format!("{CLIENT_ID} 1 bench/+/data");
        while !broker.log().contains(&subscribed) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut child = std::process::Command::new(std::env::current_exe().expect("exe"))
            .args([
                "publish-rate",
                &broker.port().to_string(),
                &rate.to_string(),
                &seconds.to_string(),
            ])
            .spawn()
            .expect("run the publisher");
        let received = || metrics.sum("shopfloor_mqtt_messages_total");
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (cpu0, msgs0, t0) = (cpu_seconds(), received(), Instant::now());
        let load0 = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        // Until the publisher is done (it waits for its acknowledgements).
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .expect("join")
            .expect("publisher");
        assert!(status.success(), "publisher failed");
        let (cpu1, msgs1, wall) = (cpu_seconds(), received(), t0.elapsed().as_secs_f64());
        let load1 = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let msgs = msgs1 - msgs0;
        let cpu_ms = (cpu1 - cpu0) * 1000.0;
        // Let the last records reach the file.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let delivered = metrics.sum("shopfloor_output_lines_total");
        let appended = metrics.sum("shopfloor_spool_appended_lines_total");
        let dropped = metrics.sum(shopfloor::engine::RECORDS_DROPPED)
            + metrics.sum("shopfloor_spool_lost_lines_total");
        let spool_dropped: u64 = metrics
            .read()
            .iter()
            .filter(|r| r.name == "shopfloor_spool_dropped_lines")
            .map(|r| r.value)
            .sum();
        println!(
            "rate {rate}/s for {seconds} s: {total} published, {received} received by the source",
            total = rate * seconds,
            received = msgs1
        );
        println!(
            "measured span {wall:.1} s: {msgs} messages, agent CPU {cpu_ms:.0} ms → {:.2} CPU-ms per 1000 messages ({:.1} % of one core)",
            cpu_ms / (msgs as f64 / 1000.0),
            cpu_ms / 10.0 / wall
        );
        println!(
            "agent CPU per second of the span: {:.2} ms",
            cpu_ms / wall
        );
        println!(
            "lines appended to the spool {appended}, delivered to the file {delivered}; dropped inside the agent {dropped}, dropped by the spool {spool_dropped}"
        );
        println!(
            "broker window shown to the agent (shopfloor_mqtt_inflight_window): {}",
            metrics.sum("shopfloor_mqtt_inflight_window")
        );
        println!(
            "load average at the start: {}; at the end: {}",
            load0.trim(),
            load1.trim()
        );
        trigger.fire();
        running.finished().await;
    });
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
    if args.first().map(String::as_str) == Some("publish-rate") {
        let port = args[1].parse().expect("port");
        let rate = args[2].parse().expect("rate");
        let seconds = args[3].parse().expect("seconds");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(publish_at_rate(port, rate, seconds));
        return;
    }
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
    if let Some(at) = args.iter().position(|a| a == "rate") {
        let number = |i: usize, default: u64| {
            args.get(at + i)
                .and_then(|a| a.parse().ok())
                .unwrap_or(default)
        };
        // `rate R S W L`: the agent told the broker's window (`inflight_window = W`, the
        // benchmark's broker has 1000) and `linger = "L"`, for longer rounds at low rates.
        let tuning = match (args.get(at + 3), args.get(at + 4)) {
            (Some(w), Some(l)) => format!("inflight_window = {w}\nlinger = \"{l}\"\n"),
            _ => String::new(),
        };
        // `rate R S W L B`: the broker's window B instead of 1000 (Mosquitto's default is 20,
        // what a gateway on a default broker gets).
        run_at_rate(number(1, 1000), number(2, 60), &tuning, number(5, 1000));
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
