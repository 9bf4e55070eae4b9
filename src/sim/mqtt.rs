//! `shopfloor sim --mqtt HOST:PORT`: machines that publish their state to a broker, the two
//! ways workshops meet most often.
//!
//! - **IoT boxes** (`mq01`, `mq02`, …): one MQTT client per machine, as a box bolted to each
//!   controller would be. Every second a JSON document on `shopfloor/sim/<id>/data`:
//!
//!   ```json
//!   {"ts": 1714521600000, "state": {"run": 1, "power": true, "setup": 0, "mode": "AUTO"},
//!    "spindle": {"rpm": 8000}, "alarm": {"code": 0}, "counters": {"parts": 1234}}
//!   ```
//!
//!   Each box registers the Last Will `offline` on `shopfloor/sim/<id>/status` and publishes
//!   `online` there (retained) once connected; a box that vanishes is reported by the broker.
//! - **A Sparkplug B edge node** (`edge1` in group `shopfloor-sim`) with one device per machine
//!   (`sp01`, `sp02`, …): NBIRTH with `bdSeq` and the NDEATH as its will, a DBIRTH per device
//!   that gives every metric a name, a datatype and an alias, then DDATA every second that
//!   sends changed metrics by alias only, as Sparkplug asks.
//!
//! The machines follow a [`Workshop`] timeline like the Modbus simulator, so they run, idle,
//! go into alarm and stop. Every client's event loop is driven by a task of its own and the
//! publishing is done from another: rumqttc's requests go through a bounded channel that only
//! the event loop drains.

use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use rumqttc::{AsyncClient, EventLoop, LastWill, MqttOptions, QoS};
use tracing::{debug, info};

use super::workshop::Workshop;
use crate::queue::{SIM_MQTT_REQUESTS, WhenFull};
use crate::shutdown::Shutdown;
use crate::source::mqtt::sparkplug::{self, Metric, Payload, Raw, datatype};

// The publishing tasks wait for room (`publish().await`): they do not drive the event loop.
const _: () = SIM_MQTT_REQUESTS.sent_as(WhenFull::Block);

/// Topic prefix of the IoT boxes.
pub const JSON_PREFIX: &str = "shopfloor/sim";
/// Sparkplug group and edge node of the simulated edge node.
pub const SPARKPLUG_GROUP: &str = "shopfloor-sim";
pub const SPARKPLUG_NODE: &str = "edge1";

/// Options of the MQTT simulator.
#[derive(Debug, Clone)]
pub struct MqttSimOptions {
    /// `host:port` of the broker.
    pub broker: String,
    pub seed: u64,
    /// IoT boxes publishing JSON.
    pub json_machines: usize,
    /// Devices behind the Sparkplug edge node.
    pub sparkplug_devices: usize,
    pub pace: f64,
    /// Time between two messages of a machine.
    pub interval: Duration,
}

impl Default for MqttSimOptions {
    fn default() -> Self {
        MqttSimOptions {
            broker: "127.0.0.1:1883".into(),
            seed: 1,
            json_machines: 2,
            sparkplug_devices: 2,
            pace: 1.0,
            interval: Duration::from_secs(1),
        }
    }
}

/// The id of the n-th (0-based) JSON box and Sparkplug device.
pub fn json_machine_id(n: usize) -> String {
    format!("mq{:02}", n + 1)
}
pub fn sparkplug_device_id(n: usize) -> String {
    format!("sp{:02}", n + 1)
}

/// Why the simulator cannot start.
#[derive(Debug, thiserror::Error)]
#[error("broker address `{0}` is not host:port")]
pub struct BadAddress(String);

/// Starts the publishers; they run until shutdown. The workshop's machines 0…J-1 are the JSON
/// boxes and J…J+S-1 the Sparkplug devices.
pub fn start(options: &MqttSimOptions, shutdown: Shutdown) -> Result<Arc<Workshop>, BadAddress> {
    let (host, port) = options
        .broker
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
        .ok_or_else(|| BadAddress(options.broker.clone()))?;
    let workshop = Arc::new(Workshop::generate(
        options.seed,
        options.json_machines + options.sparkplug_devices,
        Timestamp::now(),
        options.pace,
        SignedDuration::from_hours(24),
    ));
    for n in 0..options.json_machines {
        let id = json_machine_id(n);
        let mut o = MqttOptions::new(format!("shopfloor-sim-{id}"), host.clone(), port);
        o.set_keep_alive(Duration::from_secs(5))
            .set_last_will(LastWill::new(
                format!("{JSON_PREFIX}/{id}/status"),
                "offline",
                QoS::AtLeastOnce,
                true,
            ));
        let (client, events) = AsyncClient::new(o, SIM_MQTT_REQUESTS.capacity);
        tokio::spawn(drive(events, shutdown.clone()));
        tokio::spawn(json_box(
            client,
            id,
            n,
            workshop.clone(),
            options.interval,
            shutdown.clone(),
        ));
    }
    if options.sparkplug_devices > 0 {
        // bdSeq pairs the NDEATH with its NBIRTH; a new process is a new session.
        let bd_seq = (Timestamp::now().as_second() % 256) as u64;
        let mut o = MqttOptions::new(format!("shopfloor-sim-{SPARKPLUG_NODE}"), host, port);
        o.set_keep_alive(Duration::from_secs(5))
            .set_last_will(LastWill::new(
                format!("spBv1.0/{SPARKPLUG_GROUP}/NDEATH/{SPARKPLUG_NODE}"),
                sparkplug::encode(&Payload {
                    timestamp: Some(Timestamp::now().as_millisecond() as u64),
                    metrics: vec![bd_seq_metric(bd_seq)],
                    seq: None,
                }),
                QoS::AtLeastOnce,
                false,
            ));
        let (client, events) = AsyncClient::new(o, SIM_MQTT_REQUESTS.capacity);
        tokio::spawn(drive(events, shutdown.clone()));
        let devices = (0..options.sparkplug_devices)
            .map(|d| (sparkplug_device_id(d), options.json_machines + d))
            .collect();
        tokio::spawn(edge_node(
            client,
            bd_seq,
            devices,
            workshop.clone(),
            options.interval,
            shutdown,
        ));
    }
    info!(
        broker = %options.broker,
        json = options.json_machines,
        sparkplug = options.sparkplug_devices,
        "MQTT simulator publishing"
    );
    Ok(workshop)
}

/// Drives one client's event loop: connects, reconnects after a second, sends what the
/// publishing task queued. Never publishes itself.
async fn drive(mut events: EventLoop, mut shutdown: Shutdown) {
    loop {
        tokio::select! {
            polled = events.poll() => if let Err(e) = polled {
                debug!(error = %e, "simulator client: broker unreachable, retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.wait() => return,
                }
            },
            _ = shutdown.wait() => return,
        }
    }
}

/// The values the Modbus simulator would serve, by name.
struct Reading {
    run: bool,
    power: bool,
    rpm: u16,
    alarm: u16,
    parts: u32,
    setup: bool,
}

fn read(workshop: &Workshop, machine: usize, at: Timestamp) -> Option<Reading> {
    let r = workshop.machine_registers(machine, at)?;
    Some(Reading {
        run: r[0] == 1,
        power: r[1] == 1,
        rpm: r[2],
        alarm: r[3],
        parts: (u32::from(r[4]) << 16) | u32::from(r[5]),
        setup: r[6] == 1,
    })
}

async fn json_box(
    client: AsyncClient,
    id: String,
    machine: usize,
    workshop: Arc<Workshop>,
    interval: Duration,
    mut shutdown: Shutdown,
) {
    let status = format!("{JSON_PREFIX}/{id}/status");
    let data = format!("{JSON_PREFIX}/{id}/data");
    if client
        .publish(&status, QoS::AtLeastOnce, true, "online")
        .await
        .is_err()
    {
        return;
    }
    let mut ticker = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.wait() => return,
        }
        let now = Timestamp::now();
        let Some(r) = read(&workshop, machine, now) else {
            return;
        };
        let payload = format!(
            r#"{{"ts":{},"state":{{"run":{},"power":{},"setup":{},"mode":"{}"}},"spindle":{{"rpm":{}}},"alarm":{{"code":{}}},"counters":{{"parts":{}}}}}"#,
            now.as_millisecond(),
            u8::from(r.run),
            r.power,
            u8::from(r.setup),
            if r.setup { "SETUP" } else { "AUTO" },
            r.rpm,
            r.alarm,
            r.parts
        );
        if client
            .publish(&data, QoS::AtLeastOnce, false, payload)
            .await
            .is_err()
        {
            return;
        }
    }
}

fn bd_seq_metric(bd_seq: u64) -> Metric {
    Metric {
        name: Some("bdSeq".into()),
        datatype: datatype::INT64,
        value: Some(Raw::Long(bd_seq)),
        ..Metric::default()
    }
}

/// The metrics of a device, in alias order: (name, datatype, value).
fn device_metrics(r: &Reading) -> [(&'static str, u32, Raw); 6] {
    [
        ("Running", datatype::BOOLEAN, Raw::Bool(r.run)),
        ("Power", datatype::BOOLEAN, Raw::Bool(r.power)),
        ("Spindle/RPM", datatype::FLOAT, Raw::Float(f32::from(r.rpm))),
        ("Alarm/Code", datatype::INT32, Raw::Int(u32::from(r.alarm))),
        ("Parts", datatype::UINT32, Raw::Int(r.parts)),
        ("Setup", datatype::BOOLEAN, Raw::Bool(r.setup)),
    ]
}

async fn edge_node(
    client: AsyncClient,
    bd_seq: u64,
    devices: Vec<(String, usize)>,
    workshop: Arc<Workshop>,
    interval: Duration,
    mut shutdown: Shutdown,
) {
    let topic = |kind: &str, device: Option<&str>| match device {
        Some(d) => format!("spBv1.0/{SPARKPLUG_GROUP}/{kind}/{SPARKPLUG_NODE}/{d}"),
        None => format!("spBv1.0/{SPARKPLUG_GROUP}/{kind}/{SPARKPLUG_NODE}"),
    };
    let mut seq: u64 = 0;
    let mut next_seq = || {
        let s = seq;
        seq = (seq + 1) % 256;
        s
    };
    let publish = |topic: String, payload: Payload| {
        let client = client.clone();
        async move {
            client
                .publish(topic, QoS::AtLeastOnce, false, sparkplug::encode(&payload))
                .await
                .is_ok()
        }
    };
    let now_ms = || Timestamp::now().as_millisecond() as u64;
    let nbirth = Payload {
        timestamp: Some(now_ms()),
        metrics: vec![bd_seq_metric(bd_seq)],
        seq: Some(next_seq()),
    };
    if !publish(topic("NBIRTH", None), nbirth).await {
        return;
    }
    // Aliases are unique across the node: device d's metric m has alias 100·(d+1) + m. Every
    // DDATA carries all metrics (by alias): the agent takes silence for offline, so a device
    // that reported by exception only would need a long `offline_after`.
    // A real edge node publishes its births again when a host asks (an NCMD rebirth request);
    // the agent never asks, so the simulator repeats each DBIRTH every REBIRTH_EVERY messages
    // and an agent started after it learns the aliases within that time.
    const REBIRTH_EVERY: u64 = 30;
    let mut sent: u64 = 0;
    let mut ticker = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.wait() => return,
        }
        let now = Timestamp::now();
        for (d, (device, machine)) in devices.iter().enumerate() {
            let Some(r) = read(&workshop, *machine, now) else {
                continue;
            };
            let birth = sent.is_multiple_of(REBIRTH_EVERY);
            let metrics = device_metrics(&r)
                .into_iter()
                .enumerate()
                .map(|(m, (name, dt, v))| Metric {
                    name: birth.then(|| name.to_string()),
                    alias: Some(100 * (d as u64 + 1) + m as u64),
                    datatype: if birth { dt } else { 0 },
                    value: Some(v),
                    ..Metric::default()
                })
                .collect();
            let payload = Payload {
                timestamp: Some(now.as_millisecond() as u64),
                metrics,
                seq: Some(next_seq()),
            };
            let kind = if birth { "DBIRTH" } else { "DDATA" };
            if !publish(topic(kind, Some(device)), payload).await {
                return;
            }
        }
        sent += 1;
    }
}
