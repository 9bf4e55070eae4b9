//! Shopfloor against a third-party S7 PLC: python-snap7's pure-Python S7 server
//! (`tests/s7/server.py`), an independent implementation of ISO-on-TCP, COTP and S7comm,
//! serving DB, M, I, Q, T and C areas whose bytes are written there by hand.
//!
//! `scripts/test` installs python-snap7 into the test venv (`~/.cache/shopfloor/venv`); point
//! `SHOPFLOOR_TEST_PYTHON` at another interpreter that has it to use that one.

#[path = "support/python.rs"]
mod support_python;

#[path = "support/recorder.rs"]
mod support_recorder;
use support_recorder::Recorder;

use std::collections::BTreeMap;
use std::process::{Child, Command};
use std::time::Duration;

use shopfloor::agent::config::Config;
use shopfloor::metrics::Metrics;
use shopfloor::model::{SourceEvent, Target, Value};
use shopfloor::shutdown;
use shopfloor::source::modbus::health;
use shopfloor::source::s7::{self, frame};
use tokio::sync::mpsc;

/// The snap7 server process; killed when dropped.
struct Snap7 {
    child: Child,
    port: u16,
}

impl Snap7 {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/s7/server.py");
        let child = support_python::start_ready(script, &[port.to_string()], "the snap7 server");
        Snap7 { child, port }
    }

    fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Snap7 {
    fn drop(&mut self) {
        self.kill();
    }
}

const SITE: &str = r#"
[site]
county = "yk"
sector = "doors"
enterprise = "e1"

[[machine]]
id = "press1"
kind = "press"
cnc = false

[[machine]]
id = "press2"
kind = "press"
cnc = false
"#;

/// One field of every type and area the server holds (see server.py for the bytes), and one
/// in a DB the server does not have.
const EVERY_TYPE: &str = r#"field = [
  { signal = "x0", address = "DB10.DBX0.0" },
  { signal = "x1", address = "DB10.DBX0.1" },
  { signal = "x3", address = "DB10.DBX0.3" },
  { signal = "byte", address = "DB10.DBB1" },
  { signal = "int", address = "DB10.DBW2" },
  { signal = "word", address = "DB10.DBW4", type = "word" },
  { signal = "dint", address = "DB10.DBD6" },
  { signal = "dword", address = "DB10.DBD10", type = "dword" },
  { signal = "real", address = "DB10.DBD14", type = "real" },
  { signal = "lreal", address = "DB10.DBB18", type = "lreal" },
  { signal = "string", address = "DB10.DBB26", type = "string", length = 10 },
  { signal = "wstring", address = "DB10.DBB38", type = "wstring", length = 4 },
  { signal = "s5time", address = "DB10.DBW50", type = "s5time" },
  { signal = "time", address = "DB10.DBD52", type = "time" },
  { signal = "char", address = "DB10.DBB56", type = "char" },
  { signal = "sint", address = "DB10.DBB57", type = "sint" },
  { signal = "uint", address = "DB10.DBW58", type = "uint" },
  { signal = "udint", address = "DB10.DBD60", type = "udint" },
  { signal = "lint", address = "DB10.DBB64", type = "lint" },
  { signal = "ulint", address = "DB10.DBB72", type = "ulint" },
  { signal = "scaled", address = "DB10.DBW2", type = "int", scale = 0.1, offset = 1000.0 },
  { signal = "v10_2", address = "V10.2" },
  { signal = "vw20", address = "VW20" },
  { signal = "vd200", address = "VD200", type = "real" },
  { signal = "m0_1", address = "M0.1" },
  { signal = "mw20", address = "MW20" },
  { signal = "md24", address = "MD24" },
  { signal = "i0_1", address = "I0.1" },
  { signal = "iw2", address = "IW2", type = "word" },
  { signal = "q1_0", address = "Q1.0" },
  { signal = "qw4", address = "QW4" },
  { signal = "t5", address = "T5" },
  { signal = "c3", address = "C3" },
  { signal = "missing", address = "DB99.DBW0" },
]
"#;

fn load(text: &str) -> Config {
    shopfloor::agent::config::load_str(&format!("{SITE}{text}"), "s7.toml")
        .unwrap_or_else(|d| panic!("{d}"))
}

/// What the devices' tasks sent while they ran.
struct Run {
    events: Vec<(std::time::Instant, SourceEvent)>,
    metrics: Metrics,
}

impl Run {
    /// The last value of every (machine, signal).
    fn values(&self) -> BTreeMap<(String, String), Value> {
        let mut values = BTreeMap::new();
        for (_, e) in &self.events {
            if let SourceEvent::Samples(samples) = e {
                for s in samples {
                    let Target::Machine(m) = &s.target else {
                        continue;
                    };
                    values.insert((m.to_string(), s.signal.to_string()), s.value.clone());
                }
            }
        }
        values
    }
}

/// Runs every `[[s7]]` device of `cfg` for `run_for`, calling `meanwhile` after `after`.
async fn run(cfg: &Config, run_for: Duration, after: Duration, meanwhile: impl FnOnce()) -> Run {
    let (trigger, stop) = shutdown::channel();
    let (tx, mut rx) = mpsc::channel(100_000);
    let metrics = Metrics::new();
    let tasks: Vec<_> = cfg
        .s7
        .iter()
        .map(|d| {
            tokio::spawn(s7::run(
                d.clone(),
                tx.clone(),
                metrics.clone(),
                stop.clone(),
            ))
        })
        .collect();
    drop(tx);
    let collect = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(e) = rx.recv().await {
            events.push((std::time::Instant::now(), e));
        }
        events
    });
    tokio::time::sleep(after).await;
    meanwhile();
    tokio::time::sleep(run_for.saturating_sub(after)).await;
    trigger.fire();
    for t in tasks {
        t.await.expect("device task");
    }
    Run {
        events: collect.await.expect("collector"),
        metrics,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_and_area_reads_right_from_snap7() {
    let server = Snap7::start();
    let cfg = load(&format!(
        "[[s7]]\nid = \"plc\"\nhost = \"127.0.0.1\"\nport = {}\npoll = \"200ms\"\nmachine = \"press1\"\n{EVERY_TYPE}",
        server.port
    ));
    let r = run(&cfg, Duration::from_millis(1500), Duration::ZERO, || {}).await;
    let values = r.values();
    let get = |s: &str| values.get(&("press1".to_string(), s.to_string())).cloned();
    let want = [
        ("x0", Value::Bool(true)),
        ("x1", Value::Bool(false)),
        ("x3", Value::Bool(true)),
        ("byte", Value::Int(0xAB)),
        ("int", Value::Int(-1234)),
        ("word", Value::Int(0xBEEF)),
        ("dint", Value::Int(-123_456)),
        ("dword", Value::Int(0xDEAD_BEEF)),
        // 0x42F6E979 is the f32 nearest 123.456.
        ("real", Value::Float(f64::from(123.456f32))),
        ("lreal", Value::Float(-2.5)),
        ("string", Value::Text("PRESS-1".into())),
        ("wstring", Value::Text("机床".into())),
        // S5TIME 0x2123: time base 2 (1 s) × BCD 123 = 123 000 ms.
        ("s5time", Value::Int(123_000)),
        ("time", Value::Int(5000)),
        ("char", Value::Text("K".into())),
        ("sint", Value::Int(-5)),
        ("uint", Value::Int(65000)),
        ("udint", Value::Int(4_000_000_000)),
        ("lint", Value::Int(-7)),
        ("ulint", Value::Int(1 << 40)),
        // −1234 × 0.1 + 1000 = 876.6.
        ("v10_2", Value::Bool(true)),
        ("vw20", Value::Int(321)),
        ("vd200", Value::Float(50.5)),
        ("m0_1", Value::Bool(true)),
        ("mw20", Value::Int(777)),
        ("md24", Value::Int(100_000)),
        ("i0_1", Value::Bool(true)),
        ("iw2", Value::Int(4242)),
        ("q1_0", Value::Bool(true)),
        ("qw4", Value::Int(-1)),
        ("t5", Value::Int(123_000)),
        // C3 = BCD 042.
        ("c3", Value::Int(42)),
    ];
    for (signal, value) in want {
        assert_eq!(get(signal), Some(value), "{signal}");
    }
    // −1234 × 0.1 + 1000 = 876.6.
    assert!(
        matches!(get("scaled"), Some(Value::Float(x)) if (x - 876.6).abs() < 1e-9),
        "{:?}",
        get("scaled")
    );
    // DB99 does not exist: its item is refused (return code 0x0A), counted, and the rest read;
    // the PLC stays up.
    assert_eq!(get("missing"), None);
    assert!(health::errors_of_kind(&r.metrics, "exception") >= 2);
    assert!(
        !r.events
            .iter()
            .any(|(_, e)| matches!(e, SourceEvent::DeviceDown { .. })),
        "{:?}",
        r.events
    );
    assert!(
        r.events
            .iter()
            .any(|(_, e)| matches!(e, SourceEvent::DeviceUp { device, .. } if &**device == "plc"))
    );
    // The refused field is reported as failing, by name and in words, and counted for itself.
    let failing: Vec<_> = r
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            SourceEvent::FieldErrors { device, errors, .. } if &**device == "plc" => Some(errors),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(!failing.is_empty(), "{:?}", r.events);
    for e in &failing {
        assert_eq!(&*e.signal, "missing", "{e:?}");
        assert_eq!(e.kind, "exception", "{e:?}");
        assert!(e.error.contains("the PLC refuses DB99"), "{e:?}");
    }
    let counted = r
        .metrics
        .read()
        .into_iter()
        .filter(|m| m.name == "shopfloor_field_errors_total")
        .map(|m| (format!("{:?}", m.labels), m.value))
        .collect::<Vec<_>>();
    assert_eq!(counted.len(), 1, "{counted:?}");
    assert!(
        counted[0].0.contains("press1.missing") && counted[0].1 as usize == failing.len(),
        "{counted:?}"
    );
}

/// Splits what the agent sent on one connection into TPKTs.
fn tpkts(mut bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while bytes.len() >= 4 {
        let len = usize::from(u16::from_be_bytes([bytes[2], bytes[3]])).max(4);
        let (frame, rest) = bytes.split_at(len.min(bytes.len()));
        out.push(frame);
        bytes = rest;
    }
    out
}

/// The bytes each item of a Read Var request asks for (its count; 2 bytes an element for T
/// and C), from the request's parameter block.
fn requested_items(frame: &[u8]) -> Vec<usize> {
    // TPKT 4, COTP 3, S7 header 10, then function and item count.
    let param = &frame[17..];
    let n = usize::from(param[1]);
    (0..n)
        .map(|i| {
            let item = &param[2 + 12 * i..2 + 12 * (i + 1)];
            let count = usize::from(u16::from_be_bytes([item[4], item[5]]));
            if matches!(item[3], 0x1C | 0x1D) {
                2 * count
            } else {
                count
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_connect_setup_and_read_var_go_out_and_a_big_read_is_split_at_the_pdu() {
    let server = Snap7::start();
    let proxy = Recorder::start(server.addr()).await;
    // 250 DINTs back to back in DB20: 1000 bytes, more than any PDU carries, plus the
    // every-type map.
    let big: String = (0..250)
        .map(|n| {
            format!(
                "{{ signal = \"d{n}\", address = \"DB20.DBD{}\" }},\n",
                4 * n
            )
        })
        .collect();
    let every = EVERY_TYPE
        .trim_start_matches("field = [")
        .trim_end()
        .trim_end_matches(']');
    let cfg = load(&format!(
        "[[s7]]\nid = \"plc\"\nhost = \"127.0.0.1\"\nport = {}\npoll = \"300ms\"\nmachine = \"press1\"\nfield = [\n{big}{every}]\n",
        proxy.addr.port()
    ));
    let r = run(&cfg, Duration::from_millis(1500), Duration::ZERO, || {}).await;
    let values = r.values();
    for n in 0..250i64 {
        assert_eq!(
            values.get(&("press1".to_string(), format!("d{n}"))),
            Some(&Value::Int(7 * n)),
            "d{n}"
        );
    }
    let sent = proxy.sent();
    assert_eq!(sent.len(), 1, "one connection, kept");
    let frames = tpkts(&sent[0]);
    // The COTP connection request, then S7 jobs: Setup Communication once, then Read Var.
    assert_eq!(frames[0][5], 0xE0, "a COTP CR first: {:02X?}", frames[0]);
    let functions: Vec<Option<u8>> = frames[1..].iter().map(|f| frame::job_function(f)).collect();
    assert_eq!(functions[0], Some(frame::FN_SETUP));
    assert!(functions.len() > 2, "{functions:?}");
    assert!(
        functions[1..].iter().all(|f| *f == Some(frame::FN_READ)),
        "only Read Var after the set-up: {functions:?}"
    );
    // The agent asked for 960; snap7 grants 480, so no item may ask for more than
    // 480 − 12 (ack header) − 2 (function, count) − 4 (item header) = 462 bytes, and the
    // 1000-byte block is read in items of at most that: 460 (115 DINTs), 460, 80.
    let setup = frames[1];
    assert_eq!(&setup[setup.len() - 2..], &[0x03, 0xC0], "asked for 960");
    let mut sizes: Vec<usize> = Vec::new();
    for f in &frames[2..] {
        let items = requested_items(f);
        // Request: 12 + 12 per item; reply: 14 + 4 per item + data (even): both ≤ 480.
        assert!(12 + 12 * items.len() <= 480, "{items:?}");
        let reply: usize = 14 + items.iter().map(|n| 4 + n + n % 2).sum::<usize>();
        assert!(reply <= 480, "reply of {reply} bytes: {items:?}");
        sizes.extend(items);
    }
    assert!(sizes.iter().all(|n| *n <= 462), "{sizes:?}");
    assert!(
        sizes.contains(&460),
        "the block is cut at the PDU: {sizes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plc_that_drops_the_connection_is_down_with_its_reason_and_the_other_keeps_its_schedule()
{
    let mut dying = Snap7::start();
    let steady = Snap7::start();
    let cfg = load(&format!(
        r#"[[s7]]
id = "dying"
host = "127.0.0.1"
port = {}
poll = "200ms"
timeout = "500ms"
machine = "press1"
field = [{{ signal = "strokes", address = "DB10.DBD6" }}]

[[s7]]
id = "steady"
host = "127.0.0.1"
port = {}
poll = "200ms"
machine = "press2"
field = [{{ signal = "strokes", address = "DB10.DBD6" }}]
"#,
        dying.port, steady.port
    ));
    let started = std::time::Instant::now();
    let killed_after = Duration::from_millis(1000);
    let r = run(&cfg, Duration::from_millis(3000), killed_after, || {
        dying.kill()
    })
    .await;
    let killed = started + killed_after;
    let down: Vec<&String> = r
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            SourceEvent::DeviceDown { device, reason, .. } if &**device == "dying" => Some(reason),
            _ => None,
        })
        .collect();
    // Down when the connection broke, and again only when the reason changed (the
    // reconnection refused), not once a retry.
    assert!(!down.is_empty() && down.len() <= 2, "{down:?}");
    assert!(
        down[0].contains("the PLC closed the connection"),
        "the reason says what broke: {}",
        down[0]
    );
    if let Some(second) = down.get(1) {
        assert!(second.contains("cannot connect"), "{second}");
    }
    assert!(!r.events.iter().any(
        |(_, e)| matches!(e, SourceEvent::DeviceDown { device, .. } if &**device == "steady")
    ),);
    // The steady PLC polls every 200 ms while the other is dead: about 10 polls in the 2 s
    // after the kill (8 or more, allowing for a slow machine).
    let steady_after = r
        .events
        .iter()
        .filter(|(t, e)| {
            *t > killed
                && matches!(e, SourceEvent::Samples(s) if s.iter().any(|s| matches!(&s.target, Target::Machine(m) if &**m == "press2")))
        })
        .count();
    assert!(
        steady_after >= 8,
        "steady polls after the kill: {steady_after}"
    );
    // And the dead one delivered nothing after it went down.
    let dying_after = r
        .events
        .iter()
        .filter(|(t, e)| {
            *t > killed + Duration::from_millis(300)
                && matches!(e, SourceEvent::Samples(s) if s.iter().any(|s| matches!(&s.target, Target::Machine(m) if &**m == "press1")))
        })
        .count();
    assert_eq!(dying_after, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_press_line_profile_reads_an_s7_200_smart_block() {
    let server = Snap7::start();
    let cfg = load(&format!(
        "[[s7]]\nid = \"smart\"\nhost = \"127.0.0.1\"\nport = {}\npoll = \"200ms\"\nprofile = \"press-line-s7-200-smart\"\nmachine = \"press1\"\n",
        server.port
    ));
    let r = run(&cfg, Duration::from_millis(800), Duration::ZERO, || {}).await;
    let values = r.values();
    let get = |s: &str| values.get(&("press1".to_string(), s.to_string())).cloned();
    assert_eq!(get("run"), Some(Value::Bool(true)));
    assert_eq!(get("fault"), Some(Value::Bool(false)));
    assert_eq!(get("strokes"), Some(Value::Int(123_456)));
    assert_eq!(get("mode"), Some(Value::Int(3)));
}

#[test]
fn probe_reads_snap7_and_shows_the_words_as_every_type() {
    let server = Snap7::start();
    let out = Command::new(env!("CARGO_BIN_EXE_shopfloor"))
        .args([
            "probe",
            &format!("s7://127.0.0.1:{}?rack=0&slot=1", server.port),
            "DB10.DBW0",
            "--count",
            "20",
        ])
        .output()
        .expect("run shopfloor probe");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // DBW2 holds INT −1234 (0xFB2E); DBD14 the REAL 123.456.
    let row = |start: &str| {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(start))
            .unwrap_or_else(|| panic!("no {start} row in\n{stdout}"))
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let w2 = row("DB10.DBW2 ");
    assert_eq!(
        (w2[1].as_str(), w2[5].as_str()),
        ("0xFB2E", "-1234"),
        "{w2:?}"
    );
    assert_eq!(
        row("DB10.DBD14").last().map(String::as_str),
        Some("123.456")
    );
    assert!(
        stdout.contains("DB10.DBW38"),
        "20 words: DBW0 to DBW38\n{stdout}"
    );
    assert!(!stdout.contains("DB10.DBW40"), "{stdout}");
}

/// One second of a press's life: (run, fault, strokes, mode).
type Step = (bool, bool, i32, i16);

/// Three minutes of a press, second by second: 60 s running (a stroke every 2 s), 30 s in
/// fault, 20 s in inch mode (setup), 40 s switched to mode 0 (stopped), 30 s idle in
/// continuous mode with the ram at rest.
fn press_timeline() -> Vec<Step> {
    let mut steps = Vec::new();
    for s in 0..60 {
        steps.push((true, false, s / 2, 3));
    }
    for _ in 0..30 {
        steps.push((false, true, 30, 3));
    }
    for _ in 0..20 {
        steps.push((false, false, 30, 1));
    }
    for _ in 0..40 {
        steps.push((false, false, 30, 0));
    }
    for _ in 0..30 {
        steps.push((false, false, 30, 3));
    }
    steps
}

#[test]
fn an_s7_press_and_a_modbus_press_on_the_same_timeline_get_the_same_states_parts_and_time() {
    use jiff::{SignedDuration, Timestamp};
    use shopfloor::engine::Engine;
    use shopfloor::line_protocol::contract;
    use shopfloor::model::Sample;
    use shopfloor::source::modbus::{decode as mb_decode, plan as mb_plan};
    use std::sync::Arc;

    // The same press twice: press1 on an S7-200 SMART with the shipped profile, press2 behind
    // a Modbus box with the same signals in coils and holding registers.
    let site = SITE.replace(
        "cnc = false\n",
        "cnc = false\nparts_signal = \"strokes\"\nideal_cycle = \"2s\"\n",
    );
    let cfg = shopfloor::agent::config::load_str(
        &(site
            + r#"
[[state_rules]]
kinds = ["press"]
default = "idle"
rule = [
  { state = "stopped", when = [{ signal = "mode", op = "==", value = 0 }] },
  { state = "alarm", when = [{ signal = "fault", op = "==", value = 1 }] },
  { state = "setup", when = [{ signal = "mode", op = "==", value = 1 }] },
  { state = "running", when = [{ signal = "run", op = "==", value = 1 }] },
]

[[s7]]
id = "smart"
host = "127.0.0.1"
profile = "press-line-s7-200-smart"
machine = "press1"

[[modbus]]
id = "box"
address = "127.0.0.1:502"
machine = "press2"
field = [
  { signal = "run", register = "coil", address = 0 },
  { signal = "fault", register = "coil", address = 1 },
  { signal = "strokes", register = "holding", address = 0, type = "i32" },
  { signal = "mode", register = "holding", address = 2, type = "i16" },
]
"#),
        "s7.toml",
    )
    .unwrap_or_else(|d| panic!("{d}"));
    // The plans the two sources read by, and what each field's bytes or words decode to.
    let s7_device = &cfg.s7[0];
    let s7_jobs = &s7::plan::plan(s7_device, 240)[0].jobs;
    let mb_device = &cfg.modbus[0];
    let mb_requests = &mb_plan::plan(mb_device)[0].requests;
    let start: Timestamp = "2026-03-02T00:00:00Z".parse().unwrap();
    let mut engine = Engine::new(&cfg, start);
    let mut out = Vec::new();
    let sample = |machine: &str, signal: &str, value: Value, at: Timestamp| Sample {
        target: Target::Machine(Arc::from(machine)),
        signal: Arc::from(signal),
        value,
        at,
    };
    for (n, (run, fault, strokes, mode)) in press_timeline().into_iter().enumerate() {
        let at = start + SignedDuration::from_secs(n as i64);
        // The S7-200 SMART's V memory as the PLC holds it: V100.0 run, V100.1 fault, VD102
        // strokes, VW106 mode, big-endian.
        let mut v = vec![0u8; 256];
        v[100] = u8::from(run) | u8::from(fault) << 1;
        v[102..106].copy_from_slice(&strokes.to_be_bytes());
        v[106..108].copy_from_slice(&mode.to_be_bytes());
        let mut samples = Vec::new();
        for item in s7_jobs.iter().flat_map(|j| &j.items) {
            let data = &v[item.read.start as usize..][..usize::from(item.read.count)];
            for f in &item.fields {
                let field = &s7_device.fields[f.index];
                let value = s7::decode::decode(
                    field.s7_type(),
                    &data[f.offset..f.offset + f.len],
                    f.bit,
                    field.scale,
                    field.offset,
                )
                .unwrap();
                samples.push(sample("press1", &field.signal, value, at));
            }
        }
        // The Modbus box: coils 0–1, holding 0–2 (the i32 high word first).
        let coils = [u16::from(run), u16::from(fault)];
        let [h0, h1] = [(strokes >> 16) as u16, strokes as u16];
        let holding = [h0, h1, mode as u16];
        for r in mb_requests {
            let words: &[u16] = if r.kind.is_bit() { &coils } else { &holding };
            let words = &words[usize::from(r.start)..][..usize::from(r.count)];
            for f in &r.fields {
                let field = &mb_device.fields[f.index];
                let slice = &words[usize::from(f.offset)..][..usize::from(f.len)];
                let value = mb_decode::Codec::from(field).decode(slice).unwrap();
                samples.push(sample("press2", &field.signal, value, at));
            }
        }
        engine.on_event(SourceEvent::Samples(samples), &mut out);
        engine.tick(at, &mut out);
    }
    let end = start + SignedDuration::from_secs(180);
    engine.tick(end, &mut out);
    engine.flush(end, &mut out);
    // Every state and time-model line of press1, with its machine tag renamed, is press2's.
    let of = |machine: &str| -> Vec<String> {
        let tag = format!(",machine={machine}");
        let mut lines: Vec<String> = out
            .iter()
            .filter(|l| {
                l.starts_with(&format!("{},", contract::MEASUREMENT_MACHINE_STATE))
                    || l.starts_with(&format!("{},", contract::MEASUREMENT_MACHINE_TIME))
            })
            .filter(|l| l.split(' ').next().is_some_and(|k| k.contains(&tag)))
            .map(|l| l.replace(&tag, ",machine=PRESS"))
            .collect();
        lines.sort();
        lines
    };
    let (s7_lines, mb_lines) = (of("press1"), of("press2"));
    assert!(!s7_lines.is_empty(), "{out:#?}");
    assert_eq!(s7_lines, mb_lines);
    // And the time model is the timeline's: 60 s running, 30 s alarm, 20 s setup, 40 s
    // stopped, 30 s idle; 30 strokes (0 → 30) as parts.
    let hour = s7_lines
        .iter()
        .find(|l| l.starts_with(contract::MEASUREMENT_MACHINE_TIME) && l.contains("window=1h"))
        .unwrap_or_else(|| panic!("no hourly machine_time line in {s7_lines:#?}"));
    for (field, want) in [
        ("running_s", 60.0),
        ("alarm_s", 30.0),
        ("setup_s", 20.0),
        ("stopped_s", 40.0),
        ("idle_s", 30.0),
        ("parts_total", 30.0),
    ] {
        let got = hour
            .split(' ')
            .nth(1)
            .and_then(|fields| {
                fields
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(&format!("{field}=")))
            })
            .map(|v| v.trim_end_matches('i').parse::<f64>().unwrap());
        assert_eq!(got, Some(want), "{field} in {hour}");
    }
}

/// How the emulated PLC of [`refusing_plc`] refuses.
#[derive(Clone, Copy)]
enum Refusal {
    /// A disconnect request answers the COTP connection request: no connection resource for
    /// the TSAP (wrong rack, slot or TSAP).
    Tsap,
    /// Connected, PDU negotiated, then every Read Var is answered with error class 0x81, code
    /// 0x04: an S7-1200/1500 with PUT/GET access not permitted.
    PutGet,
    /// Takes the TCP connection and never answers.
    Silent,
    /// Answers the connection request with a TPKT header announcing 65 535 bytes: a hostile
    /// or broken peer, refused before anything is allocated for it.
    Garbage,
}

/// A PLC that refuses, written from the frame layouts of RFC 1006, ISO 8073 and S7comm's
/// ack-data header (snap7's server cannot be told to refuse): it answers each connection as
/// `refusal` says.
async fn refusing_plc(refusal: Refusal) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    async fn tpkt(s: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
        let mut head = [0u8; 4];
        s.read_exact(&mut head).await.ok()?;
        let mut frame = head.to_vec();
        frame.resize(usize::from(u16::from_be_bytes([head[2], head[3]])), 0);
        s.read_exact(&mut frame[4..]).await.ok()?;
        Some(frame)
    }
    /// An ack-data TPKT answering the job in `request` with `error`, `param` and no data.
    fn ack(request: &[u8], error: [u8; 2], param: &[u8]) -> Vec<u8> {
        let mut body = vec![0x02, 0xF0, 0x80, 0x32, 0x03, 0, 0, request[11], request[12]];
        body.extend((param.len() as u16).to_be_bytes());
        body.extend([0, 0, error[0], error[1]]);
        body.extend(param);
        let mut out = vec![3, 0];
        out.extend(((body.len() + 4) as u16).to_be_bytes());
        out.extend(body);
        out
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                if tpkt(&mut s).await.is_none() {
                    return;
                }
                if let Refusal::Garbage = refusal {
                    let _ = s.write_all(&[3, 0, 0xFF, 0xFF, 0xDE, 0xAD]).await;
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    return;
                }
                if let Refusal::Silent = refusal {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    return;
                }
                if let Refusal::Tsap = refusal {
                    // DR: length 6, code 0x80, dst ref, src ref, reason 0x81 (no resource).
                    let _ = s.write_all(&[3, 0, 0, 11, 6, 0x80, 0, 1, 0, 0, 0x81]).await;
                    return;
                }
                // CC, then Setup Communication granting 240 bytes.
                let _ = s.write_all(&[3, 0, 0, 11, 6, 0xD0, 0, 1, 0, 1, 0]).await;
                let Some(setup) = tpkt(&mut s).await else {
                    return;
                };
                let granted = ack(&setup, [0, 0], &[0xF0, 0, 0, 1, 0, 1, 0, 0xF0]);
                let _ = s.write_all(&granted).await;
                while let Some(read) = tpkt(&mut s).await {
                    let _ = s.write_all(&ack(&read, [0x81, 0x04], &[0x04, 0])).await;
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plc_that_refuses_is_down_with_what_to_change() {
    // Each with its words and the health error kind it is counted under.
    for (refusal, words, kind) in [
        (Refusal::Tsap, "check rack and slot", "connect"),
        (
            Refusal::PutGet,
            "Permit access with PUT/GET communication",
            "exception",
        ),
        (
            Refusal::Silent,
            "no answer to the ISO connection request within the timeout",
            "timeout",
        ),
        (
            Refusal::Garbage,
            "not an S7 answer: TPKT length 65535 (7–4096 expected)",
            "protocol",
        ),
    ] {
        let addr = refusing_plc(refusal).await;
        let cfg = load(&format!(
            "[[s7]]\nid = \"plc\"\nhost = \"127.0.0.1\"\nport = {}\npoll = \"200ms\"\ntimeout = \"300ms\"\nmachine = \"press1\"\nfield = [{{ signal = \"x\", address = \"DB1.DBW0\" }}]\n",
            addr.port()
        ));
        let r = run(&cfg, Duration::from_millis(700), Duration::ZERO, || {}).await;
        let down: Vec<&String> = r
            .events
            .iter()
            .filter_map(|(_, e)| match e {
                SourceEvent::DeviceDown { reason, .. } => Some(reason),
                _ => None,
            })
            .collect();
        assert_eq!(down.len(), 1, "{down:?}");
        assert!(down[0].contains(words), "{}", down[0]);
        assert!(r.values().is_empty());
        assert!(
            health::errors_of_kind(&r.metrics, kind) >= 1,
            "{words}: counted as {kind}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plc_that_refuses_every_item_is_up_but_degraded_with_the_reason() {
    let server = Snap7::start();
    let cfg = load(&format!(
        "[[s7]]\nid = \"plc\"\nhost = \"127.0.0.1\"\nport = {}\npoll = \"200ms\"\nmachine = \"press1\"\nfield = [{{ signal = \"x\", address = \"DB99.DBW0\" }}, {{ signal = \"y\", address = \"DB10.DBW200\" }}]\n",
        server.port
    ));
    let r = run(&cfg, Duration::from_millis(700), Duration::ZERO, || {}).await;
    let degraded: Vec<&String> = r
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            SourceEvent::DeviceDegraded {
                reason: Some(reason),
                ..
            } => Some(reason),
            _ => None,
        })
        .collect();
    // Once, with both reasons: DB99 does not exist (0x0A); DB10 is 80 bytes, so byte 200 is
    // out of range (0x05). Both name the optimized-block setting to check.
    assert_eq!(degraded.len(), 1, "{:?}", r.events);
    assert!(
        degraded[0].contains("DB99 does not exist"),
        "{}",
        degraded[0]
    );
    assert!(
        degraded[0].contains("address out of range in DB10"),
        "{}",
        degraded[0]
    );
    assert!(
        !r.events
            .iter()
            .any(|(_, e)| matches!(e, SourceEvent::DeviceDown { .. }))
    );
}

#[test]
fn check_plan_shows_the_s7_reads() {
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/config/s7.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_shopfloor"))
        .args(["check", "-c", sample, "--plan"])
        .output()
        .expect("run shopfloor check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    // press01's profile block V100–V107 and its own VW120 (12 bytes on): one item of 22 bytes.
    assert!(
        stdout.contains("s7 device press01-plc (192.168.2.31:102, TSAP 0100 to 0101"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Read Var, 1 item (22 bytes): DB1 bytes 100..121 (22 bytes, 5 fields)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("2 machines in the register (2 with a data source)"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_starts_s7_devices_and_their_signals_reach_the_store() {
    let server = Snap7::start();
    let data = tempfile::tempdir().expect("temp dir");
    let records = data.path().join("records.lp");
    let mut cfg = load(&format!(
        "[[s7]]\nid = \"smart\"\nhost = \"127.0.0.1\"\nport = {}\npoll = \"200ms\"\nprofile = \"press-line-s7-200-smart\"\nmachine = \"press1\"\n\n[[file]]\npath = \"{}\"\n",
        server.port,
        records.display()
    ));
    cfg.agent.data_dir = data.path().to_path_buf();
    cfg.web.enabled = false;
    let (trigger, stop) = shutdown::channel();
    let running = shopfloor::agent::start(&cfg, stop).expect("agent starts");
    // The profile's values as the signal line carries them: run true, fault false, 123456
    // strokes, mode 3.
    let want = "run=true,fault=false,strokes=123456i,mode=3i";
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let found = loop {
        let text = std::fs::read_to_string(&records).unwrap_or_default();
        if let Some(line) = text
            .lines()
            .find(|l| l.starts_with("signal,") && l.contains("machine=press1"))
        {
            break line.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no signal line for press1 in {}:\n{text}",
            records.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    trigger.fire();
    running.finished().await;
    assert!(found.contains(want), "{found}");
}
