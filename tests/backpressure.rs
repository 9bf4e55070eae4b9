//! Back-pressure from the spool to the MQTT broker (issue 21), against a real Mosquitto and a
//! real store: when the spool is slower than the sources, nothing is dropped inside the agent
//! and every message arrives in the store exactly once; a record is dropped only at a
//! documented bound (here the spool's `max_bytes`), and then it is counted and reported.
//!
//! The spool is made slow with `sink::throttle_for_tests`, a pause per appended line that only
//! the spool of the test's own data directory gets.
//!
//! The agent runs in-process (`agent::start`) with its real engine, spool task and writers.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::{Mosquitto, VictoriaMetrics, eventually};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use shopfloor::{agent, metrics::Metrics, shutdown};

const WAIT: Duration = Duration::from_secs(60);

fn agent_config(data: &Path, broker_port: u16, extra: &str) -> String {
    format!(
        r#"
[site]
county = "yk"
sector = "power_tools"
enterprise = "e1"

[agent]
data_dir = "{data}"

[[machine]]
id = "cnc01"
kind = "lathe"
cnc = true

[[mqtt]]
id = "burst"
address = "127.0.0.1:{broker_port}"
client_id = "agent-burst"

  [[mqtt.topic]]
  pattern = "plant/{{machine}}/data"
  timestamp = "ts"
  field = [
    {{ signal = "seq", type = "int" }},
  ]

{extra}
"#,
        data = data.display()
    )
}

fn metric(metrics: &Metrics, name: &str, label: Option<(&str, &str)>) -> u64 {
    metrics
        .read()
        .iter()
        .filter(|r| r.name == name)
        .filter(|r| label.is_none_or(|(k, v)| r.labels.iter().any(|(lk, lv)| *lk == k && lv == v)))
        .map(|r| r.value)
        .sum()
}

/// Publishes `count` messages (seq 1..=count, each with its own millisecond timestamp) as fast
/// as the broker acknowledges them, and waits for every acknowledgement.
async fn publish_burst(port: u16, count: u64, t0_ms: i64) {
    let mut options = MqttOptions::new(
        format!("burst-publisher-{}", common::free_port()),
        common::HOST,
        port,
    );
    options.set_inflight(200);
    let (client, mut events) = AsyncClient::new(options, 1000);
    let sender = tokio::spawn(async move {
        for seq in 1..=count {
            let ts = t0_ms + seq as i64;
            client
                .publish(
                    "plant/cnc01/data",
                    QoS::AtLeastOnce,
                    false,
                    format!(r#"{{"ts": {ts}, "seq": {seq}}}"#),
                )
                .await
                .expect("queue a publish");
        }
        client
    });
    let mut acked = 0;
    while acked < count {
        match tokio::time::timeout(WAIT, events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("publisher: {e}"),
            Err(_) => panic!("publisher: {acked} of {count} acknowledged"),
        }
    }
    let client = sender.await.expect("sender");
    let _ = client.disconnect().await;
}

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

/// 20 000 messages published as fast as Mosquitto takes them, into a spool throttled to 500
/// lines a second until the engine has waited for it, then to some 4 000 a second: for several
/// seconds the spool is the slowest stage. The engine waits for it, the MQTT source stops
/// reading, the broker keeps the messages, and every one arrives in VictoriaMetrics exactly
/// once; nothing is dropped or lost anywhere in the agent.
///
/// The spool starts that slow so that the engine waits for it however loaded the machine is:
/// with 4 000 lines a second from the start, a debug build starved by other processes read the
/// burst more slowly than the spool wrote it, the engine never waited, and the test failed for
/// not having exercised back-pressure.
///
/// Before issue 21 the engine handed each message to a queue of 4096 with `try_send` and
/// dropped what did not fit: this burst lost thousands of records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt_burst_faster_than_the_spool_arrives_in_the_store_exactly_once() {
    const COUNT: u64 = 20_000;
    // The broker keeps every message for the agent's session while the agent is not reading:
    // the condition under which the agent promises not to lose a message.
    let broker = Mosquitto::start_with_config(&["max_queued_messages 0"]).await;
    let vm = VictoriaMetrics::start().await;
    let data = tempfile::tempdir().expect("temp dir");
    let spool = data.path().join("spool.db");
    shopfloor::sink::throttle_for_tests(&spool, Duration::from_millis(2));
    let output = format!(
        "[web]\nenabled = false\n\n[[influx]]\nname = \"vm\"\nurl = \"{}\"\norg = \"o\"\nbucket = \"b\"\n",
        vm.url()
    );
    let text = agent_config(data.path(), broker.port(), &output);
    let cfg = shopfloor::agent::config::load_str(&text, "test.toml")
        .unwrap_or_else(|d| panic!("{d}\n{text}"));
    let (trigger, shutdown) = shutdown::channel();
    let running = agent::start(&cfg, shutdown).expect("agent starts");
    let metrics = running.metrics.clone();
    wait_subscribed(&broker, "agent-burst").await;

    // A minute back, so the 20 000 milliseconds of timestamps stay in the past and well within
    // the source's max_timestamp_skew.
    let t0_ms = jiff::Timestamp::now().as_millisecond() - 60_000;
    let publishing = tokio::spawn(publish_burst(broker.port(), COUNT, t0_ms));
    // The spool really is the slow stage: the engine waits for it.
    let waits = || metric(&metrics, shopfloor::engine::SPOOL_WAITS, None);
    eventually("the engine waiting for the spool", WAIT, || async {
        (waits() > 0).then_some(()).ok_or_else(|| {
            format!(
                "it never waited; MQTT messages read {}",
                metric(&metrics, "shopfloor_mqtt_messages_total", None)
            )
        })
    })
    .await;
    shopfloor::sink::throttle_for_tests(&spool, Duration::from_micros(250));
    publishing.await.expect("publisher");

    let values: Vec<u64> = eventually("every seq in VictoriaMetrics", WAIT, || async {
        vm.flush().await;
        let values: Vec<u64> = vm
            .export_series(r#"signal_seq{machine="cnc01"}"#)
            .await
            .iter()
            .flat_map(|s| s.values.iter().map(|v| *v as u64))
            .collect();
        if values.len() as u64 >= COUNT {
            Ok(values)
        } else {
            let have: BTreeSet<u64> = values.iter().copied().collect();
            let missing: Vec<u64> = (1..=COUNT).filter(|s| !have.contains(s)).take(10).collect();
            // Every counter that can explain a gap: a gap with all the drop counters at 0 is
            // a stall, a gap with spool drops is a bound (a full disk lowers the spool's byte
            // bound). Where the missing ones stopped: messages the source read, lines the
            // spool took (the signal lines plus state, agent and window lines), lines still in
            // the spool, lines the writer sent.
            Err(format!(
                "{} values; first missing {missing:?}; dropped in the engine {}, \
                 dropped by the spool {}, lost by the spool {}; MQTT messages read {}, \
                 acknowledgements not queued {}, connections {}; spool appended {}, \
                 still in the spool {}; lines sent {}",
                values.len(),
                metric(&metrics, shopfloor::engine::RECORDS_DROPPED, None),
                metric(&metrics, "shopfloor_spool_dropped_lines", None),
                metric(&metrics, "shopfloor_spool_lost_lines_total", None),
                metric(&metrics, "shopfloor_mqtt_messages_total", None),
                metric(&metrics, "shopfloor_mqtt_ack_failures_total", None),
                metric(&metrics, "shopfloor_mqtt_connections_total", None),
                metric(&metrics, "shopfloor_spool_appended_lines_total", None),
                metric(&metrics, "shopfloor_spool_lines", None),
                metric(&metrics, "shopfloor_output_lines_total", None),
            ))
        }
    })
    .await;
    let distinct: BTreeSet<u64> = values.iter().copied().collect();
    assert_eq!(
        distinct,
        (1..=COUNT).collect::<BTreeSet<u64>>(),
        "every message is in the store"
    );
    assert_eq!(values.len() as u64, COUNT, "and none twice");
    // One connection: no message was delivered twice by a reconnection.
    assert_eq!(
        metric(&metrics, "shopfloor_mqtt_connections_total", None),
        1
    );
    for (name, label) in [
        (shopfloor::engine::RECORDS_DROPPED, None),
        ("shopfloor_spool_dropped_lines", Some(("reason", "full"))),
        ("shopfloor_spool_lost_lines_total", None),
        ("shopfloor_mqtt_bad_messages_total", None),
    ] {
        assert_eq!(metric(&metrics, name, label), 0, "{name}");
    }
    trigger.fire();
    running.finished().await;
    assert!(
        !broker.log().contains("Outgoing messages are being dropped"),
        "the broker dropped messages"
    );
}

/// At the spool's byte bound, with the store down, the oldest records are dropped: counted in
/// `/metrics` and shown on the board's `/api/health`, and what is appended is exactly what is
/// kept plus what was dropped. Nothing is dropped anywhere else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_spool_cap_drops_are_counted_and_reported_on_the_board_and_in_metrics() {
    const COUNT: u64 = 5_000;
    let broker = Mosquitto::start_with_config(&["max_queued_messages 0"]).await;
    let data = tempfile::tempdir().expect("temp dir");
    // Nothing listens on the store's port: the writer fails and retries, the spool fills.
    let store_port = common::free_port();
    let extra = format!(
        "[web]\nlisten = \"127.0.0.1:0\"\n\n[spool]\nmax_bytes = 200000\n\n\
         [[influx]]\nname = \"down\"\nurl = \"http://127.0.0.1:{store_port}\"\norg = \"o\"\nbucket = \"b\"\n"
    );
    let text = agent_config(data.path(), broker.port(), &extra);
    let cfg = shopfloor::agent::config::load_str(&text, "test.toml")
        .unwrap_or_else(|d| panic!("{d}\n{text}"));
    let (trigger, shutdown) = shutdown::channel();
    let running = agent::start(&cfg, shutdown).expect("agent starts");
    let metrics = running.metrics.clone();
    // The board's port is the system's choice: a port found free and bound later can be
    // taken in between by another test's peer.
    let board = running.web_addr.expect("board enabled");
    wait_subscribed(&broker, "agent-burst").await;

    let t0_ms = jiff::Timestamp::now().as_millisecond() - 60_000;
    publish_burst(broker.port(), COUNT, t0_ms).await;
    let appended = || metric(&metrics, "shopfloor_spool_appended_lines_total", None);
    // Every message became a `signal` line in the spool (plus the state lines).
    eventually("every message appended", WAIT, || async {
        match appended() {
            n if n > COUNT => Ok(()),
            n => Err(format!("{n} lines appended")),
        }
    })
    .await;

    let http = common::http_client();
    let health = eventually("the board's health", WAIT, || async {
        let h = common::get_json(&http, &format!("http://{board}/api/health")).await?;
        let dropped = h["spool_dropped_lines"].as_u64().unwrap_or(0);
        let waiting = h["spool_lines"].as_u64().unwrap_or(0);
        // The spool publishes its figures after each append: wait for the last one.
        if dropped > 0 && dropped + waiting == appended() {
            Ok(h)
        } else {
            Err(format!("{h}"))
        }
    })
    .await;
    let dropped = health["spool_dropped_lines"].as_u64().unwrap_or(0);
    assert!(dropped > COUNT / 2, "{health}");
    assert_eq!(
        metric(
            &metrics,
            "shopfloor_spool_dropped_lines",
            Some(("reason", "full"))
        ),
        dropped,
        "/metrics and the board agree"
    );
    let text = http
        .get(format!("http://{board}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("body");
    assert!(
        text.contains(&format!(
            "shopfloor_spool_dropped_lines{{reason=\"full\"}} {dropped}"
        )),
        "{text}"
    );
    // Dropped only at the bound: nowhere else.
    for field in [
        "records_dropped",
        "source_events_dropped",
        "spool_lost_lines",
    ] {
        assert_eq!(health[field].as_u64(), Some(0), "{field}: {health}");
    }
    trigger.fire();
    running.finished().await;
}
