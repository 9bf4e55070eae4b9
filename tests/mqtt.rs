//! The MQTT source against a real Mosquitto: plain TCP with both protocol versions, TLS with
//! certificates made for the test, a broker restart in mid-stream with a persistent session,
//! and bad payloads among good ones.
//!
//! The agent runs in-process with a `[[file]]` output; a test publishes with its own rumqttc
//! client and reads the line-protocol file, which is what the store would receive.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::{Mosquitto, eventually};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use shopfloor::common::mqtt::{FAST_CEILING, MIN_BACKOFF};
use shopfloor::{agent, metrics::Metrics, shutdown};

const WAIT: Duration = Duration::from_secs(20);
/// How long a backlog of thousands of messages may take to go through broker and agent.
const DRAIN: Duration = Duration::from_secs(60);

fn agent_config(data: &Path, broker: &str) -> String {
    format!(
        r#"
[site]
county = "yk"
sector = "power_tools"
enterprise = "e1"

[agent]
data_dir = "{data}"

# Tests run side by side: no board on the shared default port.
[web]
enabled = false

[[machine]]
id = "cnc01"
kind = "lathe"
cnc = true

[[machine]]
id = "cnc02"
kind = "lathe"
cnc = true

{broker}

  [[mqtt.topic]]
  pattern = "plant/{{machine}}/data"
  timestamp = "ts"
  field = [
    {{ signal = "spindle_rpm", path = "spindle.rpm" }},
    {{ signal = "seq", type = "int" }},
  ]

[[file]]
path = "{data}/records.lp"
"#,
        data = data.display()
    )
}

/// A running agent and what a test needs to watch it.
struct Agent {
    trigger: shutdown::Trigger,
    running: Option<agent::Running>,
    records: PathBuf,
    metrics: Metrics,
}

impl Agent {
    fn start(data: &Path, broker: &str) -> Agent {
        shopfloor::install_crypto_provider();
        let text = agent_config(data, broker);
        let cfg = shopfloor::agent::config::load_str(&text, "test.toml")
            .unwrap_or_else(|d| panic!("{d}\n{text}"));
        let (trigger, shutdown) = shutdown::channel();
        let running = agent::start(&cfg, shutdown).expect("agent starts");
        Agent {
            trigger,
            metrics: running.metrics.clone(),
            running: Some(running),
            records: data.join("records.lp"),
        }
    }

    async fn stop(&mut self) {
        self.trigger.fire();
        if let Some(running) = self.running.take() {
            running.finished().await;
        }
    }

    fn records(&self) -> String {
        std::fs::read_to_string(&self.records).unwrap_or_default()
    }

    /// The `seq` values written for a machine, in file order.
    fn seqs(&self, machine: &str) -> Vec<i64> {
        self.records()
            .lines()
            .filter(|l| l.starts_with("signal,") && l.contains(&format!("machine={machine},")))
            .filter_map(|l| {
                let at = l.find("seq=")? + 4;
                let end = at + l[at..].find('i')?;
                l[at..end].parse().ok()
            })
            .collect()
    }

    async fn wait_for_seqs(&self, machine: &str, wanted: &[i64]) {
        eventually(&format!("seq {wanted:?} of {machine}"), WAIT, || async {
            let seqs = self.seqs(machine);
            if wanted.iter().all(|w| seqs.contains(w)) {
                Ok(())
            } else {
                Err(format!("have {seqs:?}"))
            }
        })
        .await
    }

    /// Waits until the agent has counted `n` connection errors (failed attempts and lost
    /// connections).
    async fn wait_for_connection_errors(&self, n: u64) {
        let errors = || self.counter("shopfloor_mqtt_connection_errors_total", "");
        eventually(&format!("{n} connection errors"), WAIT, || async {
            (errors() >= n)
                .then_some(())
                .ok_or_else(|| format!("{} errors", errors()))
        })
        .await
    }

    fn counter(&self, name: &str, kind: &str) -> u64 {
        self.metrics
            .read()
            .iter()
            .filter(|r| r.name == name)
            .filter(|r| kind.is_empty() || r.labels.contains(&("kind", kind.to_string())))
            .map(|r| r.value)
            .sum()
    }
}

/// A test's own publishing client, its event loop driven by a task of its own.
async fn publisher(port: u16) -> AsyncClient {
    let mut options = MqttOptions::new(
        format!("test-publisher-{}", common::free_port()),
        common::HOST,
        port,
    );
    options.set_max_packet_size(4 << 20, 4 << 20);
    let (client, mut events) = AsyncClient::new(options, 100);
    tokio::spawn(async move {
        loop {
            if events.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    client
}

fn json(seq: i64) -> String {
    let ts = jiff::Timestamp::now().as_millisecond();
    format!(r#"{{"ts": {ts}, "spindle": {{"rpm": 8000}}, "seq": {seq}}}"#)
}

async fn publish(client: &AsyncClient, machine: &str, payload: impl Into<Vec<u8>>) {
    client
        .publish(
            format!("plant/{machine}/data"),
            QoS::AtLeastOnce,
            false,
            payload,
        )
        .await
        .expect("queue a publish");
}

/// Waits until the broker has acknowledged the agent's subscription, so that what is published
/// next is delivered to it.
async fn wait_subscribed(broker: &Mosquitto, client_id: &str) {
    let suback = format!("Sending SUBACK to {client_id}");
    eventually("the agent's subscription", WAIT, || async {
        broker
            .log()
            .contains(&suback)
            .then_some(())
            .ok_or_else(|| "no SUBACK yet".to_string())
    })
    .await;
}

/// The broker's log since its last (re)start.
fn log_since_start(broker: &Mosquitto) -> String {
    let log = broker.log();
    let at = log.rfind("=== harness: starting").unwrap_or(0);
    log[at..].to_string()
}

fn broker_section(port: u16, id: &str, extra: &str) -> String {
    format!(
        "[[mqtt]]\nid = \"{id}\"\naddress = \"127.0.0.1:{port}\"\nclient_id = \"agent-{id}\"\n{extra}\n"
    )
}

#[tokio::test]
async fn json_messages_arrive_over_plain_tcp_with_mqtt_3_and_5() {
    let broker = Mosquitto::start().await;
    for (protocol, machine) in [("3.1.1", "cnc01"), ("5", "cnc02")] {
        let data = tempfile::tempdir().expect("temp dir");
        let id = format!("plain-v{}", &protocol[..1]);
        let section = broker_section(broker.port(), &id, &format!("protocol = \"{protocol}\""));
        let mut agent = Agent::start(data.path(), &section);
        wait_subscribed(&broker, &format!("agent-{id}")).await;
        let client = publisher(broker.port()).await;
        for seq in 1..=3 {
            publish(&client, machine, json(seq)).await;
        }
        agent.wait_for_seqs(machine, &[1, 2, 3]).await;
        // The machine delivered data, so it left `offline`.
        eventually("a state change", WAIT, || async {
            let r = agent.records();
            r.lines()
                .any(|l| {
                    l.starts_with("machine_state,")
                        && l.contains(&format!("machine={machine},"))
                        && l.contains("previous=\"offline\"")
                })
                .then_some(())
                .ok_or_else(|| r.clone())
        })
        .await;
        agent.stop().await;
        assert_eq!(agent.counter("shopfloor_mqtt_bad_messages_total", ""), 0);
    }
}

#[tokio::test]
async fn with_a_broker_window_of_1000_and_a_long_linger_every_message_arrives_once() {
    // The agent told that the broker lets 1000 messages through unacknowledged reads in rounds
    // of up to 800 messages or 300 ms. A trickle of 200 messages, 2 ms apart, makes it pause
    // (each wait for the socket is one for new messages); each arrives exactly once.
    let broker = Mosquitto::start_with_config(&["max_inflight_messages 1000"]).await;
    let data = tempfile::tempdir().expect("temp dir");
    let section = broker_section(
        broker.port(),
        "linger",
        "inflight_window = 1000\nlinger = \"300ms\"",
    );
    let mut agent = Agent::start(data.path(), &section);
    wait_subscribed(&broker, "agent-linger").await;
    let client = publisher(broker.port()).await;
    let all: Vec<i64> = (1..=200).collect();
    for seq in &all {
        publish(&client, "cnc01", json(*seq)).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    agent.wait_for_seqs("cnc01", &all).await;
    agent.stop().await;
    let mut seqs = agent.seqs("cnc01");
    seqs.sort_unstable();
    assert_eq!(seqs, all, "every message once");
    assert_eq!(agent.counter("shopfloor_mqtt_bad_messages_total", ""), 0);
}

/// Publishes `count` messages of `machine`, `gap` apart, and returns their sequence numbers.
async fn trickle(client: &AsyncClient, machine: &str, count: i64, gap: Duration) -> Vec<i64> {
    let all: Vec<i64> = (1..=count).collect();
    for seq in &all {
        publish(client, machine, json(*seq)).await;
        tokio::time::sleep(gap).await;
    }
    all
}

/// Runs an agent with the default `[[mqtt]]` settings against `broker`, publishes 1,500
/// messages 2 ms apart, checks that every one arrives once, and returns the broker window the
/// agent showed before and after (`shopfloor_mqtt_inflight_window`).
async fn window_over_a_trickle(broker: &Mosquitto, id: &str) -> (u64, u64) {
    let data = tempfile::tempdir().expect("temp dir");
    let section = broker_section(broker.port(), id, "");
    let mut agent = Agent::start(data.path(), &section);
    wait_subscribed(broker, &format!("agent-{id}")).await;
    let before = agent.counter("shopfloor_mqtt_inflight_window", "");
    let client = publisher(broker.port()).await;
    let all = trickle(&client, "cnc01", 1500, Duration::from_millis(2)).await;
    agent.wait_for_seqs("cnc01", &all).await;
    let after = agent.counter("shopfloor_mqtt_inflight_window", "");
    agent.stop().await;
    let mut seqs = agent.seqs("cnc01");
    seqs.sort_unstable();
    assert_eq!(seqs, all, "every message once");
    (before, after)
}

#[tokio::test]
async fn against_mosquittos_default_window_rounds_and_probes_lose_and_double_nothing() {
    // Mosquitto's default window is 20 unacknowledged messages and its queue 1000. The
    // agent's rounds aim at 16, and every ninth round waits twice as long to see whether the
    // broker lets more through: it sends 20, holds the rest until the round is acknowledged,
    // then sends what it held. Nothing is lost or doubled, and the window shown is at least 20.
    let broker = Mosquitto::start().await;
    let (_, shown) = window_over_a_trickle(&broker, "probe").await;
    assert!(shown >= 20, "the window shown is {shown}");
    assert!(
        !broker.log().contains("dropped"),
        "the broker dropped messages: {}",
        broker.log()
    );
}

#[tokio::test]
async fn with_the_default_window_against_a_broker_of_1000_the_agent_learns_more_room() {
    // The agent starts from Mosquitto's default of 20; this broker lets 1000 through. Every
    // ninth round near its target waits twice as long, the broker sends all that came
    // meanwhile, and the window shown rises with it.
    let broker = Mosquitto::start_with_config(&["max_inflight_messages 1000"]).await;
    let (before, after) = window_over_a_trickle(&broker, "grow").await;
    assert_eq!(before, 20);
    assert!(after > 20, "the window shown is {after}, still the default");
}

#[tokio::test]
async fn oversized_and_malformed_payloads_are_counted_and_do_not_stop_the_flow() {
    let broker = Mosquitto::start().await;
    let data = tempfile::tempdir().expect("temp dir");
    let section = broker_section(broker.port(), "bad", "max_packet_size = 4096");
    let mut agent = Agent::start(data.path(), &section);
    wait_subscribed(&broker, "agent-bad").await;
    let client = publisher(broker.port()).await;
    publish(&client, "cnc01", json(1)).await;
    publish(&client, "cnc01", "{\"seq\": ").await;
    // 5000 bytes of padding: over max_packet_size (4096), under the client's 1 MiB ceiling.
    publish(
        &client,
        "cnc01",
        format!(r#"{{"seq": 99, "pad": "{}"}}"#, "x".repeat(5000)),
    )
    .await;
    publish(&client, "cnc01", r#"{"seq": "many"}"#).await;
    publish(&client, "cnc01", json(2)).await;
    agent.wait_for_seqs("cnc01", &[1, 2]).await;
    assert!(
        !agent.seqs("cnc01").contains(&99),
        "the oversized message was used"
    );
    let bad = |kind: &str| agent.counter("shopfloor_mqtt_bad_messages_total", kind);
    assert_eq!(bad("malformed"), 1);
    assert_eq!(bad("oversized"), 1);
    // `{"seq": "many"}`: seq has the wrong type, spindle.rpm is missing.
    assert_eq!(bad("wrong_type"), 1);
    agent.stop().await;
}

#[tokio::test]
async fn a_broker_restart_loses_nothing_with_a_persistent_session() {
    let mut broker = Mosquitto::start().await;
    let data = tempfile::tempdir().expect("temp dir");
    let section = broker_section(broker.port(), "restart", "max_backoff = \"30s\"");
    let mut agent = Agent::start(data.path(), &section);
    wait_subscribed(&broker, "agent-restart").await;
    let client = publisher(broker.port()).await;
    for seq in 1..=3 {
        publish(&client, "cnc01", json(seq)).await;
    }
    agent.wait_for_seqs("cnc01", &[1, 2, 3]).await;

    // Stop the broker (SIGTERM: it saves the sessions): the agent loses the connection and
    // fails a few attempts. Then start the broker and publish at once: whether these reach the
    // agent's session before or after it is back (within about two seconds), none is lost.
    broker.stop().await;
    // The lost connection and three failed attempts.
    agent.wait_for_connection_errors(4).await;
    broker.restart().await;
    let late = publisher(broker.port()).await;
    for seq in 4..=6 {
        publish(&late, "cnc01", json(seq)).await;
    }
    agent.wait_for_seqs("cnc01", &[4, 5, 6]).await;
    // And what is published after the reconnection arrives as usual.
    publish(&late, "cnc01", json(7)).await;
    agent.wait_for_seqs("cnc01", &[7]).await;
    agent.stop().await;

    // The agent itself away for a moment (a clean stop keeps the session): what is published
    // meanwhile is delivered when it comes back with the same client id.
    publish(&late, "cnc01", json(8)).await;
    publish(&late, "cnc01", json(9)).await;
    eventually("seq 8 and 9 at the broker", WAIT, || async {
        (log_since_start(&broker)
            .matches("Received PUBLISH from test-publisher")
            .count()
            >= 6)
            .then_some(())
            .ok_or_else(|| "not yet".to_string())
    })
    .await;
    let mut again = Agent::start(data.path(), &section);
    again.wait_for_seqs("cnc01", &[8, 9]).await;
    again.stop().await;
    // Every message of the three phases arrived.
    let mut seqs = again.seqs("cnc01");
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs, (1..=9).collect::<Vec<_>>());
}

#[tokio::test]
async fn tls_with_a_client_certificate_made_for_the_test() {
    let certs = tempfile::tempdir().expect("temp dir");
    common::make_certificates(certs.path());
    let tls_port = common::free_port();
    let p = |f: &str| certs.path().join(f).display().to_string();
    let listener = format!("listener {tls_port} 127.0.0.1");
    let (cafile, certfile, keyfile) = (
        format!("cafile {}", p("ca.pem")),
        format!("certfile {}", p("server.pem")),
        format!("keyfile {}", p("server.key")),
    );
    let broker = Mosquitto::start_with_config(&[
        &listener,
        &cafile,
        &certfile,
        &keyfile,
        "require_certificate true",
    ])
    .await;
    let data = tempfile::tempdir().expect("temp dir");
    let section = format!(
        "[[mqtt]]\nid = \"tls\"\naddress = \"127.0.0.1:{tls_port}\"\nclient_id = \"agent-tls\"\n\
         tls = {{ ca_file = \"{}\", cert_file = \"{}\", key_file = \"{}\" }}\n",
        p("ca.pem"),
        p("client.pem"),
        p("client.key")
    );
    let mut agent = Agent::start(data.path(), &section);
    wait_subscribed(&broker, "agent-tls").await;
    // The test publishes on the plain listener; the agent reads over TLS.
    let client = publisher(broker.port()).await;
    publish(&client, "cnc02", json(42)).await;
    agent.wait_for_seqs("cnc02", &[42]).await;
    agent.stop().await;

    // Without the client certificate the broker refuses the handshake, and the agent says so
    // instead of pretending to be up.
    let data = tempfile::tempdir().expect("temp dir");
    let section = format!(
        "[[mqtt]]\nid = \"tls-anon\"\naddress = \"127.0.0.1:{tls_port}\"\n\
         tls = {{ ca_file = \"{}\" }}\n",
        p("ca.pem")
    );
    // It is refused more than once (it kept trying), and no attempt ever counted as a
    // connection: counted, not sampled after a fixed sleep, which on a loaded machine could end
    // before the first attempt.
    let mut anonymous = Agent::start(data.path(), &section);
    anonymous.wait_for_connection_errors(2).await;
    assert_eq!(
        anonymous.counter("shopfloor_mqtt_connections_total", ""),
        0,
        "connected without a client certificate"
    );
    anonymous.stop().await;
}

/// The queue settings of the shipped plant broker (`deploy/compose/mosquitto.conf`).
fn shipped_queue_settings() -> Vec<String> {
    let conf = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/compose/mosquitto.conf"),
    )
    .expect("deploy/compose/mosquitto.conf");
    let lines: Vec<String> = conf
        .lines()
        .filter(|l| {
            [
                "max_queued_messages ",
                "max_queued_bytes ",
                "autosave_interval ",
            ]
            .iter()
            .any(|k| l.starts_with(k))
        })
        .map(String::from)
        .collect();
    assert_eq!(lines.len(), 3, "the shipped queue settings: {lines:?}");
    lines
}

/// The MQTT source's log (DEBUG and up) of the whole test binary: what the agent decided, such
/// as the wait it chose before its next connection attempt (`retry_in`). Installed once; the
/// lines of each broker carry its id (`mqtt{broker=…}`).
fn mqtt_log() -> Arc<Mutex<Vec<u8>>> {
    #[derive(Clone)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Sink(log.clone());
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_env_filter("shopfloor::source::mqtt=debug")
            .with_writer(move || sink.clone())
            .try_init()
            .expect("no other log subscriber in this test binary");
        log
    })
    .clone()
}

/// The waits before the next connection attempt that the agent chose for broker `id`, in
/// order: the `retry_in` of its "broker connection lost" and "broker still unreachable" lines.
fn retry_waits(log: &Mutex<Vec<u8>>, id: &str) -> Vec<Duration> {
    let log = log.lock().unwrap_or_else(|p| p.into_inner());
    let span = format!("mqtt{{broker={id}}}");
    String::from_utf8_lossy(&log)
        .lines()
        .filter(|l| l.contains(&span))
        .filter_map(|l| {
            let at = l.find("retry_in=")? + "retry_in=".len();
            let text = l[at..].split_whitespace().next()?;
            // `Duration`'s Debug form: `1.873s`, `750ms`, `999.9µs`, `0ns`.
            let (number, unit) = text.split_at(text.find(char::is_alphabetic)?);
            let number: f64 = number.parse().ok()?;
            let seconds = match unit {
                "s" => number,
                "ms" => number / 1e3,
                "µs" => number / 1e6,
                "ns" => number / 1e9,
                _ => return None,
            };
            Some(Duration::from_secs_f64(seconds))
        })
        .collect()
}

/// A broker down for 20 s while the plant publishes 100 messages a second with QoS 1: the
/// publisher's client holds its messages meanwhile and sends its whole backlog (2,000) when the
/// broker is back, plus 100 a second. Mosquitto's default queue (1,000 messages per session)
/// cannot hold that backlog for any client that is not connected the instant the broker is
/// back, so the test runs the shipped settings; with them every acknowledged message arrives.
///
/// The agent is back within about two seconds of the broker: throughout the outage it waits at
/// most `FAST_CEILING` (2 s) between two attempts (before the fix its back-off had grown to
/// 16 s by the time the broker was back), and once reconnected its back-off starts afresh for
/// the next outage. Both are asserted on the waits the agent chose, as it logs them, not on a
/// stopwatch: a bound on the time from the broker's restart to the agent's reconnection
/// measures the machine's load as much as the agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_20_s_broker_outage_at_100_messages_a_second_every_acknowledged_message_arrives() {
    let log = mqtt_log();
    let settings = shipped_queue_settings();
    let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
    let mut broker = Mosquitto::start_with_config(&settings).await;
    let data = tempfile::tempdir().expect("temp dir");
    let section = broker_section(broker.port(), "outage", "");
    let mut agent = Agent::start(data.path(), &section);
    wait_subscribed(&broker, "agent-outage").await;

    // The publisher: QoS 1 at 100 a second, counting the broker's acknowledgements. Its session
    // is persistent, as that of a plant publisher that keeps QoS 1 across a broker restart must
    // be: on a new (clean) session rumqttc drops the messages it held when the connection broke
    // (sent and not acknowledged, or still in its queue). On a loaded machine that was one to
    // four messages at the broker's stop: they never reached the broker, and the test waited
    // for their acknowledgements until it gave up.
    let mut options = MqttOptions::new("test-publisher-outage", common::HOST, broker.port());
    options.set_inflight(1000);
    options.set_clean_session(false);
    let (client, mut events) = AsyncClient::new(options, 10_000);
    let acked = Arc::new(AtomicU64::new(0));
    let counted = acked.clone();
    tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    let total: i64 = 4000;
    let publishing = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        for seq in 1..=total {
            tick.tick().await;
            publish(&client, "cnc01", json(seq)).await;
        }
        client
    });

    // Five seconds in, the broker goes away for 20 s.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let connections = || agent.counter("shopfloor_mqtt_connections_total", "");
    let before = connections();
    broker.stop().await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    broker.restart().await;
    eventually("the agent reconnected", WAIT, || async {
        (connections() > before)
            .then_some(())
            .ok_or_else(|| "not yet".to_string())
    })
    .await;
    // Every wait the agent chose between two attempts during the outage, from the lost
    // connection on. Twenty seconds hold at least three (1 s, 2 s, 2 s, …); a back-off that
    // doubled would have chosen 4 s for the third.
    let waits = retry_waits(&log, "outage");
    eprintln!("the agent's waits between attempts: {waits:?}");
    assert!(waits.len() >= 3, "the agent's waits: {waits:?}");
    assert!(
        waits.iter().all(|w| *w <= FAST_CEILING),
        "the agent waited more than {FAST_CEILING:?} between attempts during a 20 s outage: {waits:?}"
    );

    let _client = publishing.await.expect("publisher");
    eventually("every message acknowledged", DRAIN, || async {
        let n = acked.load(Ordering::Relaxed);
        (n >= total as u64)
            .then_some(())
            .ok_or_else(|| format!("{n} acknowledged"))
    })
    .await;
    eventually("every message at the agent", DRAIN, || async {
        let mut seqs = agent.seqs("cnc01");
        seqs.sort_unstable();
        seqs.dedup();
        let missing: Vec<i64> = (1..=total)
            .filter(|s| seqs.binary_search(s).is_err())
            .collect();
        missing.is_empty().then_some(()).ok_or_else(|| {
            format!(
                "{} missing, first {:?}",
                missing.len(),
                &missing[..missing.len().min(10)]
            )
        })
    })
    .await;
    assert!(
        !broker.log().contains("Outgoing messages are being dropped"),
        "the broker dropped messages for the agent"
    );

    // The connection delivered messages, so the back-off starts afresh: the first wait of the
    // next outage is at most MIN_BACKOFF (1 s) again. Without the reset it would be the first
    // outage's last (2 s, less the jitter: at least 1.5 s).
    let seen = retry_waits(&log, "outage").len();
    broker.stop().await;
    let first = eventually("the first wait of a second outage", WAIT, || async {
        retry_waits(&log, "outage")
            .get(seen)
            .copied()
            .ok_or_else(|| "none yet".to_string())
    })
    .await;
    assert!(
        first <= MIN_BACKOFF,
        "the back-off was not reset by a connection that delivered messages: the second \
         outage began with a wait of {first:?}"
    );
    agent.stop().await;
}

/// One 2 MiB message (more than the client's usual 1 MiB read limit) among small ones, against
/// Mosquitto's default limits, with both protocol versions: it is counted as oversized and the
/// messages after it arrive. Under 3.1.1 the client used to reconnect every second forever (the
/// broker sends the message again on each connection) and nothing after it arrived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_read_limit_is_counted_and_the_flow_continues_with_mqtt_3_and_5() {
    let broker = Mosquitto::start().await;
    for protocol in ["3.1.1", "5"] {
        let data = tempfile::tempdir().expect("temp dir");
        let id = format!("huge-v{}", &protocol[..1]);
        let section = broker_section(broker.port(), &id, &format!("protocol = \"{protocol}\""));
        let mut agent = Agent::start(data.path(), &section);
        wait_subscribed(&broker, &format!("agent-{id}")).await;
        let client = publisher(broker.port()).await;
        publish(&client, "cnc01", json(1)).await;
        publish(
            &client,
            "cnc01",
            format!(r#"{{"seq": 99, "pad": "{}"}}"#, "x".repeat(2 << 20)),
        )
        .await;
        for seq in 2..=5 {
            publish(&client, "cnc01", json(seq)).await;
        }
        agent.wait_for_seqs("cnc01", &[1, 2, 3, 4, 5]).await;
        assert!(!agent.seqs("cnc01").contains(&99), "{protocol}: used");
        assert_eq!(
            agent.counter("shopfloor_mqtt_bad_messages_total", "oversized"),
            1,
            "{protocol}"
        );
        // And the connection settles: no reconnection loop.
        let connections = agent.counter("shopfloor_mqtt_connections_total", "");
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            agent.counter("shopfloor_mqtt_connections_total", ""),
            connections,
            "{protocol}: still reconnecting"
        );
        assert!(connections <= 2, "{protocol}: {connections} connections");
        agent.stop().await;
    }
}
