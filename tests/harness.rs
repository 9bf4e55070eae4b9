//! Proves that the integration-test harness (tests/common) starts real services that work,
//! restarts them, stops them, and explains itself when a service does not start. If these fail,
//! every other integration test's failure is suspect, so read these first.

mod common;

use std::time::Duration;

use common::{Influx1, Mosquitto, VictoriaMetrics, free_port, http_client, mqtt_connack};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn victoria_metrics_accepts_v2_line_protocol_and_answers_queries() {
    let vm = VictoriaMetrics::start().await;

    // The way the agent writes: InfluxDB v2 write API, bucket and org that VM ignores.
    let response = http_client()
        .post(format!("{}/api/v2/write?bucket=b&org=o", vm.url()))
        .body("press,enterprise=e1,machine=p1 spindle_rpm=1500.5,parts=7i\n")
        .send()
        .await
        .expect("VictoriaMetrics answers a write");
    assert_eq!(response.status().as_u16(), 204);

    // Measurement `press`, field `spindle_rpm` → metric `press_spindle_rpm`; tags → labels.
    let samples = vm
        .wait_for_query("press_spindle_rpm", |s| !s.is_empty())
        .await;
    assert_eq!(samples.len(), 1, "{samples:?}");
    assert_eq!(samples[0].metric(), "press_spindle_rpm");
    assert_eq!(samples[0].label("machine"), Some("p1"));
    assert_eq!(samples[0].label("enterprise"), Some("e1"));
    assert_eq!(samples[0].value, 1500.5);

    let parts = vm.query_instant("press_parts").await;
    assert_eq!(parts.len(), 1, "{parts:?}");
    assert_eq!(parts[0].value, 7.0);
}

#[tokio::test]
async fn victoria_metrics_keeps_points_with_old_timestamps() {
    // Window totals are stamped with the window's start, and fixtures use fixed dates: the
    // harness's -retentionPeriod must keep them (the default, one month, drops them silently).
    let vm = VictoriaMetrics::start().await;
    vm.write_lines("fleet,enterprise=e1 networking_rate=0.55 1500000000000000000\n")
        .await;

    let series = vm
        .wait_for_export(r#"{__name__="fleet_networking_rate"}"#, |s| !s.is_empty())
        .await;
    assert_eq!(series.len(), 1, "{series:?}");
    assert_eq!(series[0].timestamps_ms, vec![1_500_000_000_000]);
    assert_eq!(series[0].values, vec![0.55]);

    let at_write_time = vm
        .query_instant_at("fleet_networking_rate", 1_500_000_000.0)
        .await;
    assert_eq!(at_write_time.len(), 1, "{at_write_time:?}");
    assert_eq!(at_write_time[0].value, 0.55);
}

#[tokio::test]
async fn influx1_accepts_v1_writes_and_answers_influxql() {
    let influx = Influx1::start().await;
    influx.create_db("shopfloor").await;

    let response = http_client()
        .post(format!("{}/write?db=shopfloor", influx.url()))
        .body("press,machine=p1 spindle_rpm=1500.5,parts=7i 1700000000000000000\n")
        .send()
        .await
        .expect("InfluxDB answers a write");
    assert_eq!(response.status().as_u16(), 204);

    let rows = influx
        .query_rows(
            "shopfloor",
            "SELECT spindle_rpm, parts FROM press GROUP BY machine",
        )
        .await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["time"], "2023-11-14T22:13:20Z");
    assert_eq!(rows[0]["machine"], "p1");
    assert_eq!(rows[0]["spindle_rpm"], 1500.5);
    assert_eq!(rows[0]["parts"], 7);
}

#[tokio::test]
async fn influx1_rejects_a_batch_whose_field_changes_type() {
    // DESIGN.md: "an integer field never becomes a float: InfluxDB rejects the whole batch".
    // The harness must run a server that really does this, or type tests prove nothing.
    let influx = Influx1::start().await;
    influx.create_db("shopfloor").await;
    influx
        .write_lines("shopfloor", "press,machine=p1 parts=7i 1\n")
        .await;

    let response = http_client()
        .post(format!("{}/write?db=shopfloor", influx.url()))
        .body("press,machine=p2 other=1 2\npress,machine=p1 parts=8.0 3\n")
        .send()
        .await
        .expect("InfluxDB answers a write");
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("field type conflict"), "{body}");
}

#[tokio::test]
async fn influx1_with_auth_rejects_requests_without_valid_credentials() {
    let influx = Influx1::start_with_auth("admin", "s3cret").await;
    assert_eq!(influx.credentials(), Some(("admin", "s3cret")));
    influx.create_db("shopfloor").await;

    let http = http_client();
    let write = |request: reqwest::RequestBuilder| async move {
        request
            .body("press,machine=p1 parts=1i 1\n")
            .send()
            .await
            .expect("InfluxDB answers a write")
            .status()
            .as_u16()
    };
    let url = format!("{}/write?db=shopfloor", influx.url());
    assert_eq!(write(http.post(&url)).await, 401);
    assert_eq!(
        write(http.post(&url).basic_auth("admin", Some("wrong"))).await,
        401
    );
    assert_eq!(
        write(http.post(&url).basic_auth("admin", Some("s3cret"))).await,
        204
    );

    let rows = influx
        .wait_for_rows("shopfloor", "SELECT parts FROM press", |r| r.len() == 1)
        .await;
    assert_eq!(rows[0]["parts"], 1);
}

#[tokio::test]
async fn mosquitto_accepts_mqtt_clients() {
    let broker = Mosquitto::start().await;
    assert_eq!(
        mqtt_connack(broker.port()).await,
        Some(0),
        "{}",
        broker.log()
    );
    let mut subscriber = MqttClient::connect(broker.port(), "subscriber").await;
    subscriber.subscribe("plant/#").await;
    let mut publisher = MqttClient::connect(broker.port(), "publisher").await;
    publisher.publish_qos1("plant/press/p1", b"42", false).await;
    assert_eq!(
        subscriber.next_publish().await,
        ("plant/press/p1".to_owned(), b"42".to_vec())
    );
}

#[tokio::test]
async fn mosquitto_restart_keeps_port_and_persistence() {
    let mut broker = Mosquitto::start().await;
    let port = broker.port();
    let mut publisher = MqttClient::connect(port, "publisher").await;
    publisher
        .publish_qos1("plant/press/p1/state", b"running", true)
        .await;

    broker.restart().await;

    assert_eq!(broker.port(), port);
    assert!(
        publisher.is_closed().await,
        "the old connection should have been closed by the restart"
    );
    // The retained message can only be there if the broker saved its persistence file on
    // SIGTERM and read it back from the same directory.
    let mut subscriber = MqttClient::connect(port, "subscriber").await;
    subscriber.subscribe("plant/#").await;
    assert_eq!(
        subscriber.next_publish().await,
        ("plant/press/p1/state".to_owned(), b"running".to_vec())
    );
    assert_eq!(broker.log().matches("=== harness: starting").count(), 2);
}

#[tokio::test]
async fn mosquitto_stopped_refuses_connections_until_restarted() {
    let mut broker = Mosquitto::start().await;
    broker.stop().await;
    assert_eq!(mqtt_connack(broker.port()).await, None);
    broker.restart().await;
    assert_eq!(mqtt_connack(broker.port()).await, Some(0));
}

#[tokio::test]
async fn mosquitto_extra_config_lines_take_effect() {
    let second_port = free_port();
    let listener = format!("listener {second_port} 127.0.0.1");
    let broker = Mosquitto::start_with_config(&[&listener, "allow_anonymous false"]).await;
    // Return code 5: not authorised. The broker is up on both listeners, and the appended
    // `allow_anonymous false` overrode the generated `allow_anonymous true`.
    assert_eq!(
        mqtt_connack(broker.port()).await,
        Some(5),
        "{}",
        broker.log()
    );
    assert_eq!(mqtt_connack(second_port).await, Some(5), "{}", broker.log());
}

#[tokio::test]
async fn dropping_a_handle_stops_its_process() {
    let broker = Mosquitto::start().await;
    let vm = VictoriaMetrics::start().await;
    let influx = Influx1::start().await;
    let (mqtt_port, vm_url, influx_url) = (broker.port(), vm.url(), influx.url());
    drop(broker);
    drop(vm);
    drop(influx);

    assert_eq!(mqtt_connack(mqtt_port).await, None);
    let http = http_client();
    for url in [format!("{vm_url}/health"), format!("{influx_url}/ping")] {
        assert!(
            http.get(&url).send().await.is_err(),
            "{url} still answers after its handle was dropped"
        );
    }
}

#[tokio::test]
async fn a_panicking_test_leaves_no_process_behind() {
    // Run a "test" that starts a broker and panics on a thread of its own, as the test runner
    // would, and check that the unwinding dropped the handle and so stopped the broker.
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    let outcome = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the inner test");
        runtime.block_on(async {
            let broker = Mosquitto::start().await;
            port_tx.send(broker.port()).expect("send the port");
            panic!("the inner test fails on purpose");
        })
    })
    .join();
    assert!(outcome.is_err(), "the inner test should have panicked");
    let port = port_rx.recv().expect("the inner test started a broker");
    assert_eq!(mqtt_connack(port).await, None);
}

#[tokio::test]
#[should_panic(expected = "Unknown configuration variable \"no_such_option\"")]
async fn a_service_that_fails_to_start_is_reported_with_its_log() {
    let _broker = Mosquitto::start_with_config(&["no_such_option true"]).await;
}

/// Just enough of an MQTT 3.1.1 client to test the broker the harness runs, so the harness
/// does not depend on the MQTT crate the agent will pick.
struct MqttClient {
    stream: TcpStream,
    next_packet_id: u16,
}

const MQTT_TIMEOUT: Duration = Duration::from_secs(5);

impl MqttClient {
    async fn connect(port: u16, client_id: &str) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the broker on port {port}: {e}"));
        let mut client = MqttClient {
            stream,
            next_packet_id: 1,
        };
        let mut body = Vec::new();
        put_str(&mut body, "MQTT");
        body.extend_from_slice(&[4, 0x02, 0, 30]); // 3.1.1, clean session, keep alive 30 s
        put_str(&mut body, client_id);
        client.send(0x10, &body).await;
        let (header, body) = client.read_packet().await;
        assert_eq!((header, body), (0x20, vec![0, 0]), "CONNACK accepted");
        client
    }

    async fn publish_qos1(&mut self, topic: &str, payload: &[u8], retain: bool) {
        let id = self.packet_id();
        let mut body = Vec::new();
        put_str(&mut body, topic);
        body.extend_from_slice(&id.to_be_bytes());
        body.extend_from_slice(payload);
        self.send(0x32 | u8::from(retain), &body).await;
        let (header, body) = self.read_packet().await;
        assert_eq!((header, body), (0x40, id.to_be_bytes().to_vec()), "PUBACK");
    }

    async fn subscribe(&mut self, filter: &str) {
        let id = self.packet_id();
        let mut body = id.to_be_bytes().to_vec();
        put_str(&mut body, filter);
        body.push(0); // QoS 0
        self.send(0x82, &body).await;
        let (header, body) = self.read_packet().await;
        let mut expected = id.to_be_bytes().to_vec();
        expected.push(0);
        assert_eq!((header, body), (0x90, expected), "SUBACK granting QoS 0");
    }

    /// The next PUBLISH from the broker as (topic, payload).
    async fn next_publish(&mut self) -> (String, Vec<u8>) {
        let (header, body) = self.read_packet().await;
        assert_eq!(
            header & 0xF0,
            0x30,
            "expected a PUBLISH, got header {header:#x}"
        );
        let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
        let topic = String::from_utf8(body[2..2 + topic_len].to_vec()).expect("UTF-8 topic");
        let qos = (header >> 1) & 3;
        let payload_start = 2 + topic_len + if qos > 0 { 2 } else { 0 };
        (topic, body[payload_start..].to_vec())
    }

    /// Whether the broker has closed this connection (read returns end of file or an error).
    async fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(MQTT_TIMEOUT, self.stream.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    fn packet_id(&mut self) -> u16 {
        let id = self.next_packet_id;
        self.next_packet_id += 1;
        id
    }

    async fn send(&mut self, header: u8, body: &[u8]) {
        let mut packet = vec![header];
        let mut len = body.len();
        loop {
            // Remaining length: 7 bits per byte, high bit set when more bytes follow.
            let mut byte = (len % 128) as u8;
            len /= 128;
            if len > 0 {
                byte |= 0x80;
            }
            packet.push(byte);
            if len == 0 {
                break;
            }
        }
        packet.extend_from_slice(body);
        self.stream
            .write_all(&packet)
            .await
            .expect("write to the broker");
    }

    async fn read_packet(&mut self) -> (u8, Vec<u8>) {
        tokio::time::timeout(MQTT_TIMEOUT, async {
            let header = self.stream.read_u8().await.expect("packet header");
            let mut len = 0usize;
            let mut shift = 0;
            loop {
                let byte = self.stream.read_u8().await.expect("remaining length");
                len |= usize::from(byte & 0x7F) << shift;
                shift += 7;
                if byte & 0x80 == 0 {
                    break;
                }
            }
            let mut body = vec![0u8; len];
            self.stream
                .read_exact(&mut body)
                .await
                .expect("packet body");
            (header, body)
        })
        .await
        .expect("the broker answered within 5 s")
    }
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    let len = u16::try_from(s.len()).expect("MQTT strings are under 64 KiB");
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(s.as_bytes());
}
