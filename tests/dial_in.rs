//! Dial-in DTUs against an emulated 4G DTU (`tests/dial_in/dtu.py`) that relays to a real,
//! independent Modbus RTU server (pymodbus) behind it.
//!
//! The emulator does what DTUs do to the stream: registration first and (here) before every
//! packet, heartbeats on their own timer and glued to the front and back of answers, and a
//! dropped 4G session every few seconds. The agent's listener and DTU tasks run as the agent
//! starts them; the test reads the events they send towards the engine. Timing checks are
//! about schedules with margins of hundreds of milliseconds.

mod common;
#[path = "support/python.rs"]
mod support_python;
use support_python::python;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use shopfloor::agent::config::Config;
use shopfloor::metrics::Metrics;
use shopfloor::model::{SourceEvent, Target, Value};
use shopfloor::shutdown;
use shopfloor::source::dial_in::{self, UnknownDtus};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

const IMEI: &str = "868626041234567";
const HEARTBEAT: &str = "www.usr.cn";

/// The emulated DTU; killed when dropped. Its stdout lines (`gone`/`back` with times) are
/// collected as they come.
struct Emulator {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    log: std::path::PathBuf,
}

impl Emulator {
    fn start(port: u16, extra: &[&str], dir: &std::path::Path) -> Emulator {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/dial_in/dtu.py");
        let log = dir.join("frames.log");
        let mut child = Command::new(python())
            .arg(script)
            .args(["--agent", &format!("127.0.0.1:{port}")])
            .args(["--registration", IMEI, "--heartbeat", HEARTBEAT])
            .args(["--log", &log.display().to_string()])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the DTU emulator");
        let stdout = child.stdout.take().expect("stdout");
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        if line.trim() != "ready" {
            let _ = child.kill();
            panic!("the DTU emulator did not start (is pymodbus installed? run scripts/test)");
        }
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in reader.lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Emulator { child, lines, log }
    }

    /// (gone, back) times of each outage the emulator made.
    fn outages(&self) -> Vec<(f64, f64)> {
        let lines = self.lines.lock().unwrap();
        let time = |prefix: &str, l: &str| l.strip_prefix(prefix).and_then(|t| t.parse().ok());
        let gone: Vec<f64> = lines.iter().filter_map(|l| time("gone ", l)).collect();
        let back: Vec<f64> = lines.iter().filter_map(|l| time("back ", l)).collect();
        gone.into_iter().zip(back).collect()
    }

    /// When the DTU relayed each request to the line (unix seconds).
    fn request_times(&self) -> Vec<f64> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(2)?.parse().ok())
            .collect()
    }

    /// The function codes of every request the DTU relayed to the line.
    fn function_codes(&self) -> Vec<u8> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').next()?.parse().ok())
            .collect()
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const SITE: &str = r#"
[site]
county = "yk"
sector = "doors"
enterprise = "e1"

[[machine]]
id = "press-1"
kind = "press"
cnc = false

[[machine]]
id = "press-2"
kind = "press"
cnc = false
"#;

/// One listener, one DTU with two devices behind it (see dtu.py for the registers).
fn config(every_packet: bool) -> Config {
    config_framed(every_packet, "rtu")
}

fn config_framed(every_packet: bool, framing: &str) -> Config {
    let text = config_text(every_packet, framing);
    shopfloor::agent::config::load_str(&text, "dial_in.toml").unwrap_or_else(|d| panic!("{d}"))
}

fn config_text(every_packet: bool, framing: &str) -> String {
    format!(
        r#"{SITE}
[[dial_in]]
id = "dtus"
listen = "127.0.0.1:0"
registration_timeout = "2s"
max_connects_per_minute = 1000

[[dial_in.dtu]]
id = "dtu-1"
imei = "{IMEI}"
heartbeat = "{HEARTBEAT}"
heartbeat_period = "700ms"
heartbeat_timeout = "3s"
identity_every_packet = {every_packet}
framing = "{framing}"
timeout = "1s"
inter_request_delay = "20ms"

[[dial_in.dtu.device]]
id = "press-1-box"
unit = 1
poll = "250ms"
machine = "press-1"
field = [
  {{ signal = "run", register = "holding", address = 0 }},
  {{ signal = "u16", register = "holding", address = 1 }},
  {{ signal = "i16", register = "holding", address = 2, type = "i16" }},
  {{ signal = "f32", register = "holding", address = 3, type = "f32" }},
  {{ signal = "u32", register = "holding", address = 5, type = "u32" }},
  {{ signal = "hz", register = "input", address = 0 }},
  {{ signal = "bit5", register = "input", address = 1, type = "bool", bit = 5 }},
  {{ signal = "coil0", register = "coil", address = 0 }},
  {{ signal = "coil1", register = "coil", address = 1 }},
  {{ signal = "coil2", register = "coil", address = 2 }},
]

[[dial_in.dtu.device]]
id = "press-2-box"
unit = 2
poll = "250ms"
machine = "press-2"
field = [
  {{ signal = "first", register = "holding", address = 0 }},
  {{ signal = "last", register = "holding", address = 49 }},
]
"#
    )
}

/// What every signal must read (dtu.py's registers, worked out there by hand).
fn expected() -> BTreeMap<(String, String), Value> {
    let p1 = |s: &str, v: Value| (("press-1".to_string(), s.to_string()), v);
    let p2 = |s: &str, v: Value| (("press-2".to_string(), s.to_string()), v);
    [
        p1("run", Value::Int(1)),
        p1("u16", Value::Int(1234)),
        p1("i16", Value::Int(-200)),
        p1("f32", Value::Float(230.5)),
        p1("u32", Value::Int(123_456)),
        p1("hz", Value::Int(500)),
        p1("bit5", Value::Bool(true)),
        p1("coil0", Value::Bool(true)),
        p1("coil1", Value::Bool(false)),
        p1("coil2", Value::Bool(true)),
        // Unit 2: holding a = 100 + a.
        p2("first", Value::Int(100)),
        p2("last", Value::Int(149)),
    ]
    .into_iter()
    .collect()
}

/// A running listener with its DTU tasks.
struct Agent {
    port: u16,
    trigger: shutdown::Trigger,
    task: tokio::task::JoinHandle<()>,
    events: mpsc::Receiver<SourceEvent>,
    metrics: Metrics,
    unknown: UnknownDtus,
}

impl Agent {
    fn start(cfg: &Config) -> Agent {
        let listener = cfg.dial_in[0].clone();
        let bound = dial_in::listen::bind(&listener).expect("bind");
        let port = bound.local_addr().expect("address").port();
        let (trigger, stop) = shutdown::channel();
        let (tx, events) = mpsc::channel(100_000);
        let metrics = Metrics::new();
        let unknown = UnknownDtus::default();
        let task = tokio::spawn(dial_in::listen::run(
            listener,
            bound,
            unknown.clone(),
            tx,
            metrics.clone(),
            stop,
        ));
        Agent {
            port,
            trigger,
            task,
            events,
            metrics,
            unknown,
        }
    }

    async fn stop(mut self) -> (Vec<SourceEvent>, Metrics, UnknownDtus) {
        self.trigger.fire();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
        let mut events = Vec::new();
        while let Ok(e) = self.events.try_recv() {
            events.push(e);
        }
        (events, self.metrics, self.unknown)
    }
}

fn metric(metrics: &Metrics, name: &str, label: (&str, &str)) -> u64 {
    metrics
        .read()
        .iter()
        .filter(|r| r.name == name && r.labels.iter().any(|(k, v)| *k == label.0 && v == label.1))
        .map(|r| r.value)
        .sum()
}

/// Every sample of `events` by (machine, signal), in order.
fn samples(events: &[SourceEvent]) -> BTreeMap<(String, String), Vec<(Timestamp, Value)>> {
    let mut out: BTreeMap<(String, String), Vec<(Timestamp, Value)>> = BTreeMap::new();
    for e in events {
        if let SourceEvent::Samples(samples) = e {
            for s in samples {
                let Target::Machine(m) = &s.target else {
                    panic!("a meter sample: {s:?}");
                };
                out.entry((m.to_string(), s.signal.to_string()))
                    .or_default()
                    .push((s.at, s.value.clone()));
            }
        }
    }
    out
}

/// Each signal was read at least `times` times, every time with its register's value.
fn every_signal_read_as_its_register(events: &[SourceEvent], times: usize) {
    let got = samples(events);
    for (key, value) in expected() {
        let seen = got
            .get(&key)
            .unwrap_or_else(|| panic!("{key:?} never read"));
        assert!(seen.len() >= times, "{key:?} read {} times", seen.len());
        assert!(seen.iter().all(|(_, v)| *v == value), "{key:?}: {seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_through_a_reconnecting_dtu_equal_the_registers_once_each_and_outages_match() {
    let dir = tempfile::tempdir().expect("temp dir");
    let agent = Agent::start(&config(true));
    // Registration before every packet; heartbeats every 0.7 s and around answers; the 4G
    // session drops every 3 s for 1.5 s.
    let dtu = Emulator::start(
        agent.port,
        &["--every-packet", "--reconnect-every", "3", "--away", "1.5"],
        dir.path(),
    );
    tokio::time::sleep(Duration::from_secs(11)).await;
    let outages = dtu.outages();
    let (events, metrics, unknown) = agent.stop().await;

    let got = samples(&events);
    let want = expected();
    for (key, value) in &want {
        let seen = got.get(key).unwrap_or_else(|| panic!("{key:?} never read"));
        // 11 s at 250 ms, less the outages: dozens of polls each.
        assert!(seen.len() >= 15, "{key:?} read {} times", seen.len());
        for (at, v) in seen {
            assert_eq!(v, value, "{key:?} at {at}");
        }
        // Nothing duplicated: each poll's value once, at a later time than the last.
        assert!(
            seen.windows(2).all(|w| w[0].0 < w[1].0),
            "{key:?} has a sample twice"
        );
    }
    assert_eq!(got.len(), want.len(), "{:?}", got.keys());

    // Each outage: the device is down from when the DTU went until it was back, within one
    // poll (250 ms) and a request in flight, plus 350 ms for a busy machine.
    assert!(outages.len() >= 2, "{outages:?}");
    let health: Vec<(bool, f64)> = events
        .iter()
        .filter_map(|e| match e {
            SourceEvent::DeviceUp { device, at } if &**device == "press-1-box" => {
                Some((true, at.as_millisecond() as f64 / 1000.0))
            }
            SourceEvent::DeviceDown { device, at, .. } if &**device == "press-1-box" => {
                Some((false, at.as_millisecond() as f64 / 1000.0))
            }
            _ => None,
        })
        .collect();
    for (gone, back) in &outages {
        let down = health
            .iter()
            .find(|(up, at)| !up && (at - gone).abs() < 0.6)
            .unwrap_or_else(|| panic!("no DeviceDown near {gone}: {health:?}"))
            .1;
        let Some(up) = health
            .iter()
            .find(|(up, at)| *up && *at > down)
            .map(|h| h.1)
        else {
            continue; // the test ended during this outage
        };
        let real = back - gone;
        let seen = up - down;
        eprintln!("outage: DTU gone {real:.3} s, device down {seen:.3} s");
        assert!(
            (seen - real).abs() <= 0.6,
            "down for {seen:.3} s, the DTU was gone {real:.3} s"
        );
    }
    assert!(
        metric(
            &metrics,
            "shopfloor_dial_in_heartbeats_total",
            ("dtu", "dtu-1")
        ) >= 5
    );
    assert!(
        metric(
            &metrics,
            "shopfloor_dial_in_connections_total",
            ("dtu", "dtu-1")
        ) >= 3
    );
    assert!(unknown.list().is_empty(), "{:?}", unknown.list());

    // Read-only on the wire: the DTU relayed read requests and nothing else.
    let codes = dtu.function_codes();
    assert!(codes.len() > 50, "{} requests", codes.len());
    assert!(
        codes.iter().all(|c| (1..=4).contains(c)),
        "function codes on the wire: {codes:?}"
    );
}

/// One line of the agent's file output, read with InfluxDB's own parser.
struct Stored {
    measurement: String,
    machine: String,
    fields: BTreeMap<String, Value>,
    /// Seconds since the epoch.
    at: f64,
}

fn stored(path: &std::path::Path) -> Vec<Stored> {
    use influxdb_line_protocol::{FieldValue, parse_lines};
    let text = std::fs::read_to_string(path).unwrap_or_default();
    parse_lines(&text)
        .map(|l| {
            let l = l.unwrap_or_else(|e| panic!("a stored line does not parse: {e}"));
            let machine = l
                .series
                .tag_set
                .iter()
                .flatten()
                .find(|(k, _)| k.as_str() == "machine")
                .map(|(_, v)| v.to_string())
                .unwrap_or_default();
            let fields = l
                .field_set
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        FieldValue::I64(n) => Value::Int(*n),
                        FieldValue::U64(n) => Value::Int(*n as i64),
                        FieldValue::F64(n) => Value::Float(*n),
                        FieldValue::Boolean(b) => Value::Bool(*b),
                        FieldValue::String(s) => Value::Text(s.to_string()),
                    };
                    (k.to_string(), v)
                })
                .collect();
            Stored {
                measurement: l.series.measurement.to_string(),
                machine,
                fields,
                at: l.timestamp.expect("stored lines carry their time") as f64 / 1e9,
            }
        })
        .collect()
}

/// A machine's stored state changes: (time in s, state), repeats (heartbeats) left out.
fn state_changes(lines: &[Stored], machine: &str) -> Vec<(f64, String)> {
    let mut rows: Vec<(f64, String)> = lines
        .iter()
        .filter(|l| l.measurement == "machine_state" && l.machine == machine)
        .filter_map(|l| match l.fields.get("state") {
            Some(Value::Text(state)) => Some((l.at, state.clone())),
            _ => None,
        })
        .collect();
    rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    rows.dedup_by(|b, a| a.1 == b.1);
    rows
}

/// The agent, whole (engine and file output), with a DTU that goes away for measured times:
/// twice it closes its connection, once it falls silent for longer than `heartbeat_timeout`
/// (the agent gives it up), once for less (it comes back on a new connection while the agent
/// still holds the old one). `offline_after` is a minute, so only the DTU's lost link can
/// make a machine offline within the test: each stored offline stretch must last as long as
/// the DTU was gone, within one poll (500 ms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_behind_a_dtu_is_offline_exactly_while_the_dtu_is_gone() {
    const POLL_S: f64 = 0.5;
    let dir = tempfile::tempdir().expect("temp dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let out = dir.path().join("out.lp");
    let text = config_text(false, "rtu")
        .replace("poll = \"250ms\"", "poll = \"500ms\"")
        .replace("timeout = \"1s\"", "timeout = \"500ms\"")
        .replace(
            "heartbeat_timeout = \"3s\"",
            "heartbeat_timeout = \"2500ms\"",
        )
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))
        + &format!(
            r#"
[agent]
data_dir = "{data}"
offline_after = "60s"
heartbeat = "60s"

[web]
enabled = false

[[file]]
path = "{out}"
"#,
            data = dir.path().join("data").display(),
            out = out.display()
        );
    let cfg = shopfloor::agent::config::load_str(&text, "dial_in.toml")
        .unwrap_or_else(|d| panic!("{d}\n{text}"));
    let (trigger, stop) = shutdown::channel();
    let running = shopfloor::agent::start(&cfg, stop).expect("agent starts");
    // Up 4 s, then: closed 3 s; silent 3.5 s (past heartbeat_timeout, 2.5 s); silent 1.5 s
    // (a request times out after 0.5 s, then the DTU is back before its heartbeat_timeout);
    // closed 3 s; then it stays.
    let dtu = Emulator::start(
        port,
        &[
            "--schedule",
            "4:3:close,4:3.5:silent,4:1.5:silent,4:3:close",
        ],
        dir.path(),
    );
    tokio::time::sleep(Duration::from_secs(32)).await;
    let outages = dtu.outages();
    trigger.fire();
    running.finished().await;
    drop(dtu);
    let lines = stored(&out);
    assert_eq!(outages.len(), 4, "the emulator's outages: {outages:?}");

    for machine in ["press-1", "press-2"] {
        let changes = state_changes(&lines, machine);
        // Offline stretches after the first data: (from, to).
        let first_up = changes
            .iter()
            .position(|(_, s)| s != "offline")
            .unwrap_or_else(|| panic!("{machine} never came online: {changes:?}"));
        let stretches: Vec<(f64, f64)> = changes[first_up..]
            .windows(2)
            .filter(|w| w[0].1 == "offline")
            .map(|w| (w[0].0, w[1].0))
            .collect();
        assert_eq!(
            stretches.len(),
            outages.len(),
            "{machine}: offline stretches {stretches:?}, the DTU's outages {outages:?}"
        );
        for ((gone, back), (from, to)) in outages.iter().zip(&stretches) {
            let real = back - gone;
            let seen = to - from;
            eprintln!(
                "{machine}: DTU gone {real:.3} s, offline {seen:.3} s (from {:+.3} s, to {:+.3} s)",
                from - gone,
                to - back
            );
            assert!(
                (seen - real).abs() <= POLL_S,
                "{machine}: offline {seen:.3} s, the DTU was gone {real:.3} s"
            );
        }
    }

    // Every stored value is the device's register, each poll's once.
    let want = expected();
    let mut seen: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    for l in lines.iter().filter(|l| l.measurement == "signal") {
        for (signal, value) in &l.fields {
            let key = (l.machine.clone(), signal.clone());
            let Some(expected) = want.get(&key) else {
                panic!("an unexpected signal: {key:?}");
            };
            assert_eq!(value, expected, "{key:?} at {}", l.at);
            seen.entry(key).or_default().push(l.at);
        }
    }
    assert_eq!(seen.len(), want.len(), "{:?}", seen.keys());
    for (key, times) in &seen {
        // 32 s at 500 ms less 11 s of outages: about 40 polls.
        assert!(times.len() >= 20, "{key:?} stored {} times", times.len());
        let mut sorted = times.clone();
        sorted.sort_by(f64::total_cmp);
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            times.len(),
            "{key:?} stored twice at one time"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dtu_that_converts_to_modbus_tcp_is_read_with_mbap_through_its_heartbeats() {
    let dir = tempfile::tempdir().expect("temp dir");
    let agent = Agent::start(&config_framed(false, "tcp"));
    let dtu = Emulator::start(agent.port, &["--tcp"], dir.path());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (events, metrics, _) = agent.stop().await;
    every_signal_read_as_its_register(&events, 5);
    assert!(
        metric(
            &metrics,
            "shopfloor_dial_in_heartbeats_total",
            ("dtu", "dtu-1")
        ) >= 2
    );
    let codes = dtu.function_codes();
    assert!(!codes.is_empty() && codes.iter().all(|c| (1..=4).contains(c)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dtu_known_by_a_registration_pattern_is_read() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The emulator sends its IMEI; the config knows only its shape: 8686 and eleven digits.
    let text = config_text(false, "rtu").replace(
        &format!("imei = \"{IMEI}\""),
        "registration_regex = \"^8686[0-9]{11}\"",
    );
    let cfg =
        shopfloor::agent::config::load_str(&text, "dial_in.toml").unwrap_or_else(|d| panic!("{d}"));
    let agent = Agent::start(&cfg);
    let _dtu = Emulator::start(agent.port, &[], dir.path());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (events, _, unknown) = agent.stop().await;
    every_signal_read_as_its_register(&events, 5);
    assert!(unknown.list().is_empty(), "{:?}", unknown.list());
}

/// What a connection flood did, as the flooder saw it.
struct Flooded {
    /// Connections begun.
    attempts: u64,
    /// Connections the agent's kernel accepted (the handshake completed).
    connected: u64,
    /// The attempts that failed, by why.
    failed: BTreeMap<String, u64>,
    seconds: f64,
}

/// Floods `127.0.0.1:port` with connections from `source` for `length`: `threads` threads of
/// their own (so the flood does not wait on the agent's runtime), each running `loops`
/// connection loops at once. Each connection is dropped as soon as it is made, with a reset
/// (no TIME_WAIT to run the source's ports out).
fn flood(source: &str, port: u16, length: Duration, threads: usize, loops: usize) -> Flooded {
    let source: std::net::SocketAddr = format!("{source}:0").parse().expect("address");
    let target: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let started = std::time::Instant::now();
    let until = started + length;
    let threads: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the flood");
                runtime.block_on(async move {
                    let loops: Vec<_> = (0..loops)
                        .map(|_| {
                            tokio::spawn(async move {
                                let (mut attempts, mut connected) = (0u64, 0u64);
                                let mut failed = BTreeMap::new();
                                while std::time::Instant::now() < until {
                                    attempts += 1;
                                    let made = async {
                                        let socket = tokio::net::TcpSocket::new_v4()
                                            .map_err(|e| format!("socket: {e}"))?;
                                        socket.set_zero_linger().map_err(|e| e.to_string())?;
                                        socket.bind(source).map_err(|e| format!("bind: {e}"))?;
                                        let connect = socket.connect(target);
                                        tokio::time::timeout(Duration::from_millis(500), connect)
                                            .await
                                            .map_err(|_| "timeout".to_string())?
                                            .map_err(|e| format!("connect: {e}"))
                                    };
                                    match made.await {
                                        Ok(_) => connected += 1,
                                        Err(e) => {
                                            *failed.entry(e).or_insert(0u64) += 1;
                                            tokio::task::yield_now().await
                                        }
                                    }
                                }
                                (attempts, connected, failed)
                            })
                        })
                        .collect();
                    let mut sum = (0, 0, BTreeMap::new());
                    for l in loops {
                        let Ok((a, c, f)) = l.await else { continue };
                        sum.0 += a;
                        sum.1 += c;
                        for (e, n) in f {
                            *sum.2.entry(e).or_insert(0) += n;
                        }
                    }
                    sum
                })
            })
        })
        .collect();
    let (mut attempts, mut connected, mut failed) = (0, 0, BTreeMap::new());
    for t in threads {
        let (a, c, f) = t.join().expect("a flood thread");
        attempts += a;
        connected += c;
        for (e, n) in f {
            *failed.entry(e).or_insert(0) += n;
        }
    }
    Flooded {
        attempts,
        connected,
        failed,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// The agent's log lines, for the test that counts them.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Unknown registrations, garbage, a slow-loris and a flood of connections from one address
/// (the issue: 10,000 attempts a second): the refusals are counted by reason and account for
/// every connection the flood made, the bounds hold (the peaks in the metrics), one log line
/// says what happened, and the real DTU's requests keep coming at the rate they came before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peers_cost_a_bounded_little_and_the_real_dtu_keeps_its_schedule() {
    // The WARN lines of the whole test binary; this test's listener has its own id.
    let log = Captured::default();
    let writer = log.clone();
    let logging = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init()
        .is_ok();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cfg = config(false);
    cfg.dial_in[0].id = "flooded".into();
    cfg.dial_in[0].max_connects_per_minute = 30;
    cfg.dial_in[0].max_unregistered = 8;
    // 127.0.0.0–127.0.0.7: the DTU and the peers below, but not 127.0.0.9.
    cfg.dial_in[0].allow = vec!["127.0.0.0/29".into()];
    let agent = Agent::start(&cfg);
    let port = agent.port;
    // The real DTU comes from 127.0.0.1; the hostile peers from 127.0.0.2, another address.
    let dtu = Emulator::start(port, &[], dir.path());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let hostile = move |ip: &'static str| async move {
        let socket = tokio::net::TcpSocket::new_v4().ok()?;
        socket.bind(format!("{ip}:0").parse().ok()?).ok()?;
        socket
            .connect(format!("127.0.0.1:{port}").parse().ok()?)
            .await
            .ok()
    };
    let started = Timestamp::now();
    // The real IMEI from outside `allow`.
    if let Some(mut s) = hostile("127.0.0.9").await {
        let _ = s.write_all(IMEI.as_bytes()).await;
    }
    // An unknown registration and garbage.
    for bytes in [
        &b"869999999999999"[..],
        b"\x00\xff\x13\x37GET / HTTP/1.1\r\n",
    ] {
        if let Some(mut s) = hostile("127.0.0.2").await {
            let _ = s.write_all(bytes).await;
        }
    }
    // A slow-loris: the first bytes of the real IMEI, one a second. It is in before the flood
    // fills the half-open bound.
    let mut slow = hostile("127.0.0.3").await.expect("the slow-loris connects");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let loris = tokio::spawn(async move {
        for b in IMEI.as_bytes().iter().take(5) {
            slow.write_all(&[*b]).await.ok()?;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        Some(())
    });
    // The flood from 127.0.0.4: 2 threads of 128 connection loops, for 4 s. On a loaded
    // 2-core machine with a debug build this makes 10,000–14,000 attempts a second (a few
    // hundred while the listener's accept backlog was the standard library's 128); the rate
    // is printed, not asserted.
    let flooded = tokio::task::spawn_blocking(move || {
        flood("127.0.0.4", port, Duration::from_secs(4), 2, 128)
    })
    .await
    .expect("flood");
    let flood_ended = Timestamp::now();
    let _ = loris.await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ended = Timestamp::now();
    let (events, metrics, unknown) = agent.stop().await;
    let times = dtu.request_times();
    drop(dtu);

    let refused = |reason: &str| metric(&metrics, dial_in::REFUSED, ("reason", reason));
    let listener = |name: &str| metric(&metrics, name, ("listener", "flooded"));
    eprintln!(
        "flood: {} attempts in {:.1} s ({:.0} a second), {} connections made ({:.0} a second); \
         refused: connect_rate {}, closed {}, unregistered {}, unknown_registration {}, \
         registration_timeout {}; peaks: {} open, {} unregistered; failed attempts: {:?}",
        flooded.attempts,
        flooded.seconds,
        flooded.attempts as f64 / flooded.seconds,
        flooded.connected,
        flooded.connected as f64 / flooded.seconds,
        refused("connect_rate"),
        refused("closed"),
        refused("unregistered"),
        refused("unknown_registration"),
        refused("registration_timeout"),
        listener("shopfloor_dial_in_connections_peak"),
        listener("shopfloor_dial_in_unregistered_peak"),
        flooded.failed,
    );
    assert!(
        flooded.connected > 1000,
        "only {} connections made",
        flooded.connected
    );
    // Every connection the flood made is counted, by reason: 30 a minute from one address
    // pass the rate (and are closed having sent nothing, or find the half-open bound full),
    // the rest are refused at once.
    let accounted = refused("connect_rate") + refused("closed") + refused("unregistered");
    assert!(
        refused("closed") + refused("unregistered") <= 30,
        "more than 30 a minute passed the rate"
    );
    // (A connection the client gave up on at its 500 ms timeout may still have reached the
    // agent: those may be counted too.)
    let timed_out = flooded.failed.get("timeout").copied().unwrap_or(0);
    assert!(
        accounted <= flooded.connected + timed_out
            && accounted + flooded.connected / 100 >= flooded.connected,
        "{accounted} refusals counted for the flood's {} connections",
        flooded.connected
    );
    // The bounds held: the DTU and the hostile connections never held more slots than allowed.
    assert!(listener("shopfloor_dial_in_connections_peak") <= 1100);
    assert!(listener("shopfloor_dial_in_unregistered_peak") <= 8);
    assert!(refused("unknown_registration") >= 2);
    assert_eq!(refused("not_allowed"), 1);
    // The slow-loris never finished its registration within 2 s.
    assert!(refused("registration_timeout") >= 1);
    let list = unknown.list();
    assert!(
        list.iter().any(|u| u.first_bytes_ascii == "869999999999999"
            && u.first_bytes_hex.starts_with("38 36 39")),
        "{list:?}"
    );
    // One log line for all of it: refusals are logged at most once a minute per listener.
    if logging {
        let text = String::from_utf8_lossy(&log.0.lock().unwrap()).to_string();
        let lines: Vec<&str> = text.lines().filter(|l| l.contains("flooded")).collect();
        eprintln!("the listener's WARN lines:\n{}", lines.join("\n"));
        assert_eq!(lines.len(), 1, "{lines:#?}");
    }
    // The real DTU kept its 250 ms schedule all along: at least 3 polls a second.
    let got = samples(&events);
    let during: Vec<&(Timestamp, Value)> = got[&("press-1".to_string(), "run".to_string())]
        .iter()
        .filter(|(at, _)| *at >= started && *at <= ended)
        .collect();
    let seconds = ended.duration_since(started).as_secs_f64();
    assert!(
        during.len() as f64 >= seconds * 3.0,
        "{} polls in {seconds:.1} s",
        during.len()
    );
    assert!(during.iter().all(|(_, v)| *v == Value::Int(1)));
    // And on the DTU's side: the requests it relayed during the flood came as often as in
    // the 2 s before it, less a quarter for a machine the flood keeps busy.
    let rate = |from: Timestamp, to: Timestamp| {
        let (from, to) = (
            from.as_millisecond() as f64 / 1e3,
            to.as_millisecond() as f64 / 1e3,
        );
        times.iter().filter(|t| **t >= from && **t < to).count() as f64 / (to - from)
    };
    let before = rate(started - jiff::SignedDuration::from_secs(2), started);
    let flooding = rate(started, flood_ended);
    eprintln!(
        "requests through the DTU: {before:.1} a second before the flood, {flooding:.1} during it"
    );
    assert!(
        before >= 8.0,
        "{before:.1} requests a second before the flood"
    );
    assert!(
        flooding >= before * 0.75,
        "{flooding:.1} requests a second during the flood, {before:.1} before"
    );
}

/// `shopfloor dtu listen --poll 1:0:2` with the emulated DTU pointed at it: the installer sees
/// the registration (hex and text, and which configured DTU it is), the heartbeat with its
/// period, and the two holding registers read through the DTU; only function code 3 went out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtu_listen_shows_the_registration_the_heartbeat_period_and_a_read_only_poll() {
    use shopfloor::source::dial_in::commission;
    let dir = tempfile::tempdir().expect("temp dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let options = commission::ListenOptions {
        port,
        dtus: commission::known(&config(false).dial_in),
        poll: Some(commission::parse_poll("1:0:2").expect("a poll")),
        framing: shopfloor::source::dial_in::stream::Framing::Rtu,
    };
    let (tx, mut lines) = mpsc::unbounded_channel();
    let listening = tokio::spawn(commission::listen(options, tx));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dtu = Emulator::start(port, &[], dir.path());
    tokio::time::sleep(Duration::from_secs(3)).await;
    listening.abort();
    let mut shown = Vec::new();
    while let Ok(line) = lines.try_recv() {
        shown.push(line);
    }
    let text = shown.join("\n");
    eprintln!("{text}");
    // The IMEI as hex and text, named.
    assert!(
        shown.iter().any(|l| l.contains(
            "first bytes: 38 36 38 36 32 36 30 34 31 32 33 34 35 36 37 \"868626041234567\" → dtu-1"
        )),
        "{text}"
    );
    // Holding 0 and 1 of unit 1: 1 and 1234 (dtu.py).
    assert!(
        shown
            .iter()
            .any(|l| l.ends_with("poll unit 1 holding 0..1: 1 1234")),
        "{text}"
    );
    // The heartbeat every 0.7 s, shown with its period.
    let periods: Vec<f64> = shown
        .iter()
        .filter_map(|l| {
            let rest = l.split("(heartbeat of dtu-1), ").nth(1)?;
            rest.strip_suffix(" s after the last")?.parse().ok()
        })
        .collect();
    assert!(!periods.is_empty(), "{text}");
    assert!(
        periods.iter().all(|p| (0.5..=1.0).contains(p)),
        "{periods:?}"
    );
    let codes = dtu.function_codes();
    assert!(
        !codes.is_empty() && codes.iter().all(|c| *c == 3),
        "{codes:?}"
    );
}

/// A DTU that speaks TLS (`tls_cert`, `tls_key` on the listener) is read through it; a peer
/// that speaks plain TCP to the TLS port is refused as `tls`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dtu_over_tls_is_read_and_a_plain_peer_on_the_tls_port_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    common::make_certificates(dir.path());
    let mut cfg = config(false);
    cfg.dial_in[0].tls_cert = Some(dir.path().join("server.pem"));
    cfg.dial_in[0].tls_key = Some(dir.path().join("server.key"));
    let agent = Agent::start(&cfg);
    let ca = dir.path().join("ca.pem").display().to_string();
    let _dtu = Emulator::start(agent.port, &["--tls-ca", &ca], dir.path());
    // The IMEI in plain text to the TLS port.
    let mut plain = tokio::net::TcpStream::connect(("127.0.0.1", agent.port))
        .await
        .expect("connect");
    plain.write_all(IMEI.as_bytes()).await.expect("send");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (events, metrics, _) = agent.stop().await;
    every_signal_read_as_its_register(&events, 5);
    assert_eq!(metric(&metrics, dial_in::REFUSED, ("reason", "tls")), 1);
}

/// `GET path` on the board with HTTP/1.0 (no `Host`, as the container's health check asks).
async fn board_get(addr: std::net::SocketAddr, path: &str) -> serde_json::Value {
    use tokio::io::AsyncReadExt;
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("board");
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .await
        .expect("request");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text).await;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_lists_a_dtus_devices_and_an_unknown_dtus_bytes_in_api_health() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut cfg = config(false);
    cfg.dial_in[0].listen.set_port(port);
    cfg.agent.data_dir = dir.path().to_path_buf();
    cfg.web.listen.set_port(0);
    let (trigger, stop) = shutdown::channel();
    let running = shopfloor::agent::start(&cfg, stop).expect("agent starts");
    let board = running.web_addr.expect("board enabled");
    let _dtu = Emulator::start(port, &[], dir.path());
    // An installer's new DTU the config does not know yet.
    let mut unknown = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    unknown.write_all(b"USR-G780 0042").await.expect("send");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let health = loop {
        let health = board_get(board, "/api/health").await;
        let up = |id: &str| {
            health["devices"]
                .as_array()
                .is_some_and(|d| d.iter().any(|d| d["id"] == id && d["status"] == "up"))
        };
        if up("press-1-box") && up("press-2-box") && health["unknown_dtus"][0].is_object() {
            break health;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not there after 10 s: {health}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let listed = &health["unknown_dtus"][0];
    assert_eq!(listed["listener"], "dtus");
    // "USR-G780 0042" in hex, ready for `registration_hex`.
    assert_eq!(
        listed["first_bytes_hex"],
        "55 53 52 2d 47 37 38 30 20 30 30 34 32"
    );
    assert_eq!(listed["first_bytes_ascii"], "USR-G780 0042");
    assert_eq!(listed["reason"], "unknown_registration");
    trigger.fire();
    running.finished().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_live_dtus_with_one_imei_are_logged_as_a_possible_clone_and_the_newer_wins() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first_dir = dir.path().join("first");
    let second_dir = dir.path().join("second");
    std::fs::create_dir_all(&first_dir).expect("dir");
    std::fs::create_dir_all(&second_dir).expect("dir");
    let agent = Agent::start(&config(false));
    let first = Emulator::start(agent.port, &[], &first_dir);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = first.function_codes().len();
    // A second device sends the same IMEI while the first is live (heartbeats every 0.7 s).
    let second = Emulator::start(agent.port, &[], &second_dir);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, metrics, _) = agent.stop().await;
    assert!(
        metric(
            &metrics,
            "shopfloor_dial_in_possible_clones_total",
            ("dtu", "dtu-1")
        ) >= 1,
        "no possible clone counted"
    );
    // The newer connection was polled.
    assert!(before > 0);
    assert!(
        !second.function_codes().is_empty(),
        "the newer DTU was never polled"
    );
}
