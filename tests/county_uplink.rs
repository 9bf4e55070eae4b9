//! The county's uplink against a real Mosquitto running the shipped ACL
//! (`deploy/county/mosquitto.acl`) with password accounts, and a real InfluxDB 1.x as the
//! county's store: an enterprise can publish under its own topic only, and the agent → uplink
//! → broker → `county ingest` → store path loses nothing across a broker restart.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Influx1, Mosquitto, eventually};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use serde_json::Value;
use shopfloor::config::{self};
use shopfloor::county::ingest::{self, IngestConfig};
use shopfloor::line_protocol::contract::{MEASUREMENT_FLEET, MEASUREMENT_GREEN};
use shopfloor::sim::{self, Workshop};
use shopfloor::sink::config::Uplink;
use shopfloor::sink::uplink::UplinkWriter;
use shopfloor::{agent, metrics::Metrics, shutdown};

const ACL: &str = include_str!("../deploy/county/mosquitto.acl");
const CONF: &str = include_str!("../deploy/county/mosquitto.conf");
const DEMO: &str = include_str!("../config/demo.toml");
const WAIT: Duration = Duration::from_secs(30);

/// The accounts of the tests' county broker: the ingest's and two enterprises'.
const ACCOUNTS: [(&str, &str); 3] = [
    ("county-ingest", "ingest-pw"),
    ("e01", "e01-pw"),
    ("e02", "e02-pw"),
];

/// The county's broker as shipped: `deploy/county/mosquitto.conf` with its files in `dir`
/// (the ACL as shipped, a password file of [`ACCOUNTS`], certificates made for the test) and
/// its TLS listener on a free port. The harness's plain listener on loopback stands for the
/// shipped one for the ingest.
struct CountyBroker {
    mosquitto: Mosquitto,
    tls_port: u16,
    ca_file: std::path::PathBuf,
}

async fn county_broker(dir: &Path) -> CountyBroker {
    let acl = dir.join("mosquitto.acl");
    std::fs::write(&acl, ACL).expect("write the ACL");
    let passwd = dir.join("passwd");
    for (i, (user, password)) in ACCOUNTS.iter().enumerate() {
        let mut cmd = Command::new("mosquitto_passwd");
        if i == 0 {
            cmd.arg("-c");
        }
        let status = cmd
            .arg("-b")
            .arg(&passwd)
            .arg(user)
            .arg(password)
            .status()
            .expect("mosquitto_passwd (Debian package mosquitto) runs");
        assert!(status.success(), "mosquitto_passwd failed for {user}");
    }
    common::make_certificates(dir);
    let tls_port = common::free_port();
    let mut lines = Vec::new();
    for line in CONF.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let path = |p: &Path| p.display().to_string();
        let replaced = match line.split_once(' ').map_or(line, |(k, _)| k) {
            "password_file" => format!("password_file {}", path(&passwd)),
            "acl_file" => format!("acl_file {}", path(&acl)),
            "listener" if line.contains("8883") => format!("listener {tls_port} 127.0.0.1"),
            "certfile" => format!("certfile {}", path(&dir.join("server.pem"))),
            "keyfile" => format!("keyfile {}", path(&dir.join("server.key"))),
            // The harness's own: the plain listener, persistence in its temp dir; and
            // per_listener_settings, the default, must precede every listener.
            "listener" | "persistence" | "per_listener_settings" => continue,
            _ => line.to_string(),
        };
        lines.push(replaced);
    }
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    CountyBroker {
        mosquitto: Mosquitto::start_with_config(&lines).await,
        tls_port,
        ca_file: dir.join("ca.pem"),
    }
}

/// An MQTT 5 client of one account, with its event loop driven into a channel.
fn client(
    broker: &Mosquitto,
    id: &str,
    user: &str,
    password: &str,
) -> (AsyncClient, tokio::sync::mpsc::UnboundedReceiver<Packet>) {
    let mut options = MqttOptions::new(id, broker.host(), broker.port());
    options.set_credentials(user, password);
    let (client, mut events) = AsyncClient::new(options, 64);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(event) = events.poll().await {
            if let Event::Incoming(packet) = event
                && tx.send(packet).is_err()
            {
                break;
            }
        }
    });
    (client, rx)
}

/// The next packet that `pick` accepts, within [`WAIT`].
async fn next<T>(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Packet>,
    mut pick: impl FnMut(Packet) -> Option<T>,
) -> T {
    tokio::time::timeout(WAIT, async {
        loop {
            let packet = rx.recv().await.expect("the client's event loop stopped");
            if let Some(t) = pick(packet) {
                return t;
            }
        }
    })
    .await
    .expect("the expected packet did not come")
}

fn site(enterprise: &str) -> config::Site {
    toml::from_str(&format!(
        "county = \"yk\"\nsector = \"doors\"\nenterprise = \"{enterprise}\""
    ))
    .expect("site")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_acl_lets_an_enterprise_publish_under_its_own_topic_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let county = county_broker(dir.path()).await;
    let broker = &county.mosquitto;

    // The county's side reads everything under shopfloor/.
    let (reader, mut read) = client(broker, "reader", "county-ingest", "ingest-pw");
    reader
        .subscribe("shopfloor/#", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    next(&mut read, |p| matches!(p, Packet::SubAck(_)).then_some(())).await;

    // Enterprise e01 publishes under its own topic, then under e02's.
    let (e01, mut e01_events) = client(broker, "e01-agent", "e01", "e01-pw");
    let line = "fleet,county=yk,sector=doors,enterprise=e01 machines_total=1i 1\n";
    e01.publish(
        "shopfloor/yk/doors/e01/fleet",
        QoS::AtLeastOnce,
        false,
        line.as_bytes().to_vec(),
    )
    .await
    .expect("publish");
    let own = next(&mut e01_events, |p| match p {
        Packet::PubAck(a) => Some(a.reason),
        _ => None,
    })
    .await;
    assert_eq!(own, PubAckReason::Success);
    e01.publish(
        "shopfloor/yk/doors/e02/fleet",
        QoS::AtLeastOnce,
        false,
        b"fleet,county=yk,sector=doors,enterprise=e02 machines_total=99i 1\n".to_vec(),
    )
    .await
    .expect("publish");
    let foreign = next(&mut e01_events, |p| match p {
        Packet::PubAck(a) => Some(a.reason),
        _ => None,
    })
    .await;
    assert_eq!(foreign, PubAckReason::NotAuthorized);
    // A last message of e01's own marks the end: whatever the reader saw before it is all.
    e01.publish(
        "shopfloor/yk/doors/e01/green",
        QoS::AtLeastOnce,
        false,
        b"end".to_vec(),
    )
    .await
    .expect("publish");
    let mut seen = Vec::new();
    next(&mut read, |p| match p {
        Packet::Publish(p) => {
            let topic = String::from_utf8_lossy(&p.topic).into_owned();
            seen.push(topic.clone());
            (topic == "shopfloor/yk/doors/e01/green").then_some(())
        }
        _ => None,
    })
    .await;
    assert_eq!(
        seen,
        [
            "shopfloor/yk/doors/e01/fleet",
            "shopfloor/yk/doors/e01/green"
        ],
        "the reader must see e01's own messages and nothing under e02"
    );

    // An agent misconfigured to publish e02's figures with e01's account is refused, and
    // told so: its batch is not counted as delivered (the writer keeps it in the spool).
    let metrics = Metrics::new();
    let uplink: Uplink = toml::from_str(&format!(
        "address = \"127.0.0.1:{}\"\nusername = \"e01\"\npassword = {{ file = \"{}\" }}\ntimeout = \"10s\"\ntls = {{ ca_file = \"{}\" }}",
        county.tls_port,
        dir.path().join("e01-password").display(),
        county.ca_file.display()
    ))
    .expect("uplink");
    std::fs::write(dir.path().join("e01-password"), "e01-pw\n").expect("password file");
    let (writer, connection) =
        UplinkWriter::new(&uplink, &site("e02"), &metrics).expect("uplink writer");
    let (trigger, stop) = shutdown::channel();
    let task = tokio::spawn(connection.run(stop));
    let body = b"signal,machine=m1 x=1i 1\nfleet,county=yk,sector=doors,enterprise=e02 machines_total=5i 1\n";
    let refused = writer.send(body).await;
    match refused {
        Err(shopfloor::sink::SendError::Refused(message)) => {
            assert!(message.contains("NotAuthorized"), "{message}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(metrics.sum("shopfloor_uplink_refused_messages_total"), 1);
    assert_eq!(metrics.sum("shopfloor_uplink_lines_total"), 0);
    trigger.fire();
    task.await.expect("connection task");
}

/// A line-protocol line's series (measurement and tags), timestamp and numeric fields.
fn parse_line(line: &str) -> Option<(String, i64, BTreeMap<String, f64>)> {
    // Indicator lines have no strings or escaped spaces: split on the spaces.
    let mut parts = line.split(' ');
    let (series, fields, ts) = (parts.next()?, parts.next()?, parts.next()?);
    let fields = fields
        .split(',')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            let v = v.trim_end_matches('i').parse::<f64>().ok()?;
            Some((k.to_string(), v))
        })
        .collect();
    Some((series.to_string(), ts.parse().ok()?, fields))
}

/// The tags of a series key, `fleet,a=1,b=2` → {a: 1, b: 2}.
fn tags(series: &str) -> BTreeMap<String, String> {
    series
        .split(',')
        .skip(1)
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The value of the newest point of a counter in an in-process registry, by its `output`
/// label.
fn output_lines(metrics: &Metrics, output: &str) -> u64 {
    metrics
        .read()
        .iter()
        .filter(|r| {
            r.name == "shopfloor_output_lines_total"
                && r.labels.iter().any(|(k, v)| *k == "output" && v == output)
        })
        .map(|r| r.value)
        .sum()
}

/// A measurement's points in the county's store, by tags and timestamp (nanoseconds).
async fn stored(
    influx: &Influx1,
    measurement: &str,
) -> BTreeMap<(BTreeMap<String, String>, i64), BTreeMap<String, Value>> {
    let series = influx
        .query_series("county", &format!("SELECT * FROM {measurement} GROUP BY *"))
        .await;
    let mut points = BTreeMap::new();
    for s in series {
        for row in s.rows() {
            let time = row
                .get("time")
                .and_then(Value::as_str)
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .map(|t| t.as_nanosecond() as i64)
                .expect("time");
            let mut tags = s.tags.clone();
            tags.retain(|_, v| !v.is_empty());
            points.insert((tags, time), row);
        }
    }
    points
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_uplink_ingest_store_loses_nothing_across_a_broker_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut county = county_broker(dir.path()).await;
    let influx = Influx1::start().await;
    influx.create_db("county").await;
    std::fs::write(dir.path().join("ingest-password"), "ingest-pw\n").expect("password file");
    std::fs::write(dir.path().join("e01-password"), "e01-pw\n").expect("password file");

    // The county's side.
    let ingest_text = format!(
        r#"
[ingest]
county = "yk"
data_dir = "{data}/ingest"

[broker]
address = "{host}:{port}"
client_id = "county-ingest-1"
username = "county-ingest"
password = {{ file = "{data}/ingest-password" }}

[[influx]]
url = "{influx}"
api = "v1"
database = "county"
flush_interval = "100ms"
"#,
        data = dir.path().display(),
        host = county.mosquitto.host(),
        port = county.mosquitto.port(),
        influx = influx.url(),
    );
    let ingest_config = IngestConfig::load_str(&ingest_text, "ingest.toml").expect("ingest config");
    let (stop_ingest, ingest_shutdown) = shutdown::channel();
    let ingest = ingest::start(&ingest_config, ingest_shutdown)
        .await
        .expect("ingest starts");
    eventually("the ingest to connect", WAIT, || async {
        match ingest.metrics.sum("shopfloor_ingest_connected") {
            1 => Ok(()),
            n => Err(format!("connected = {n}")),
        }
    })
    .await;

    // The enterprise's side: the demo workshop, its records kept in a file beside the uplink.
    let (stop_agent, agent_shutdown) = shutdown::channel();
    let simulator = sim::serve(
        Workshop::generate(
            1,
            4,
            jiff::Timestamp::now(),
            1.0,
            jiff::SignedDuration::from_hours(1),
        ),
        "127.0.0.1:0".parse().expect("addr"),
        agent_shutdown.clone(),
        None,
    )
    .await
    .expect("simulator");
    let mut cfg =
        shopfloor::agent::config::load_str(DEMO, "config/demo.toml").expect("demo config");
    cfg.site = site("e01");
    for device in &mut cfg.modbus {
        device.address = Some(simulator.addr.to_string());
        device.poll = Duration::from_millis(200);
    }
    cfg.agent.data_dir = dir.path().join("agent");
    cfg.agent.window_flush = Duration::from_secs(1);
    cfg.web.enabled = false;
    cfg.file = vec![
        toml::from_str(&format!(
            "path = \"{}/agent/records.lp\"",
            dir.path().display()
        ))
        .expect("file output"),
    ];
    cfg.uplink = Some(
        toml::from_str(&format!(
            "address = \"127.0.0.1:{}\"\nusername = \"e01\"\npassword = {{ file = \"{}/e01-password\" }}\nflush_interval = \"100ms\"\nretry_max = \"1s\"\ntimeout = \"3s\"\ntls = {{ ca_file = \"{}\" }}",
            county.tls_port,
            dir.path().display(),
            county.ca_file.display()
        ))
        .expect("uplink"),
    );
    let running = agent::start(&cfg, agent_shutdown).expect("agent starts");
    let fleet_rows = || async {
        let rows = influx
            .query_rows("county", "SELECT count(machines_total) FROM fleet")
            .await;
        rows.first()
            .and_then(|r| r.get("count"))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    eventually(
        "the first fleet lines in the county's store",
        WAIT,
        || async {
            match fleet_rows().await {
                0 => Err("none yet".to_string()),
                _ => Ok(()),
            }
        },
    )
    .await;

    // The broker restarts; the agent goes on computing meanwhile and its uplink waits.
    county.mosquitto.stop().await;
    eventually("the uplink to notice", WAIT, || async {
        match running.metrics.sum("shopfloor_uplink_connected") {
            0 => Ok(()),
            n => Err(format!("connected = {n}")),
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    county.mosquitto.restart().await;
    eventually("the uplink to reconnect", WAIT, || async {
        match running.metrics.sum("shopfloor_uplink_connected") {
            1 => Ok(()),
            n => Err(format!("connected = {n}")),
        }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    // A moment when the uplink has passed exactly the lines the file has: those are what the
    // county's store must hold.
    let records = dir.path().join("agent/records.lp");
    let delivered = eventually("the uplink to catch up with the file", WAIT, || async {
        let (uplink, file) = (
            output_lines(&running.metrics, "uplink"),
            output_lines(&running.metrics, "file"),
        );
        let appended = running.spool_stats.borrow().appended_lines;
        if uplink == file && file == appended {
            let text = std::fs::read_to_string(&records).map_err(|e| e.to_string())?;
            Ok(text
                .lines()
                .take(file as usize)
                .map(str::to_string)
                .collect::<Vec<_>>())
        } else {
            Err(format!("uplink {uplink}, file {file}, appended {appended}"))
        }
    })
    .await;
    assert!(
        running.metrics.sum("shopfloor_uplink_messages_total") > 0,
        "the uplink published nothing"
    );

    // Every fleet and green point the agent wrote, as its last rewrite.
    let mut expected: BTreeMap<(String, i64), BTreeMap<String, f64>> = BTreeMap::new();
    for line in &delivered {
        if (line.starts_with("fleet,") || line.starts_with("green,"))
            && let Some((series, ts, fields)) = parse_line(line)
        {
            expected.insert((series, ts), fields);
        }
    }
    assert!(
        expected.keys().any(|(s, _)| s.starts_with("green,")),
        "no green lines to check"
    );
    eventually(
        "the county's store to hold every point as the agent last wrote it",
        WAIT,
        || async {
            let mut points = stored(&influx, MEASUREMENT_FLEET).await;
            points.extend(stored(&influx, MEASUREMENT_GREEN).await);
            for ((series, ts), fields) in &expected {
                let key = (tags(series), *ts);
                let Some(row) = points.get(&key) else {
                    return Err(format!("missing {series} at {ts}"));
                };
                for (field, want) in fields {
                    let got = row.get(field).and_then(Value::as_f64);
                    if got != Some(*want) {
                        return Err(format!(
                            "{series} at {ts}: {field} is {got:?}, the agent last wrote {want}"
                        ));
                    }
                }
            }
            Ok(())
        },
    )
    .await;
    // The outage was real on both sides: the ingest lost its connection and came back.
    let log = county.mosquitto.log();
    assert!(
        log.matches("as county-ingest-1 (p5").count() >= 2,
        "the ingest did not reconnect after the restart"
    );

    stop_agent.fire();
    running.finished().await;
    stop_ingest.fire();
    ingest.finished().await;
}

#[test]
fn the_sample_ingest_config_checks() {
    let output = Command::new(env!("CARGO_BIN_EXE_shopfloor"))
        .args([
            "county",
            "ingest",
            "--config",
            "config/county-ingest.toml",
            "--check",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("SHOPFLOOR_INGEST_PASSWORD", "sample")
        .output()
        .expect("shopfloor runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("$share/county-ingest/shopfloor/wuyi/+/+/+"),
        "{stdout}"
    );
}

#[test]
fn check_shows_the_uplink_topics_and_every_mistake_in_uplink() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        format!("{DEMO}\n[uplink]\naddress = \"county.example:8883\"\nusername = \"e01\"\n"),
    )
    .expect("write config");
    let check = |path: &Path| {
        Command::new(env!("CARGO_BIN_EXE_shopfloor"))
            .args(["check", "-c"])
            .arg(path)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("shopfloor runs")
    };
    let out = check(&good);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The demo config's own site.
    let site = shopfloor::agent::config::load_str(DEMO, "config/demo.toml")
        .expect("demo")
        .site;
    for m in [MEASUREMENT_FLEET, MEASUREMENT_GREEN] {
        let topic = format!(
            "shopfloor/{}/{}/{}/{m}",
            site.county,
            site.sector.as_str(),
            site.enterprise
        );
        assert!(stdout.contains(&format!("publish {topic}")), "{stdout}");
    }

    let demo_lines = DEMO.lines().count();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        format!(
            "{DEMO}\n[uplink]\naddress = \"no-port\"\nmeasurements = [\"fleet/#\"]\npassword = {{ env = \"SHOPFLOOR_TEST_UNSET_UPLINK\" }}\ntopic_prefx = \"x\"\n"
        ),
    )
    .expect("write config");
    let out = check(&bad);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    // [uplink] is on the line after the demo's last; its keys follow, one a line.
    let at = |n: usize| format!("bad.toml:{}:", demo_lines + 2 + n);
    for (line, what) in [
        (1, "`no-port` has no port: write `no-port:1883`"),
        (2, "wildcards"),
        (3, "a password needs `username`"),
        (4, "did you mean `topic_prefix`"),
    ] {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains(&at(line)) && l.contains(what)),
            "expected {what:?} at {}: {stderr}",
            at(line)
        );
    }
}
