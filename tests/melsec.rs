//! Shopfloor against an independent MC protocol (SLMP) server: `virtual-plc` 0.3.0 from PyPI,
//! a Mitsubishi MC protocol PLC simulator, started by each test as `python -m virtual_plc`.
//!
//! Why this one: its source was read before it was chosen. It parses and answers 3E and 4E
//! binary frames as the MC reference lays them out (subheader, route echoed, request data
//! length checked against the bytes received, end code, little-endian data), takes the device
//! codes of the reference's Q/L device code list (the same bytes as pymcprotocol's table, an
//! implementation of its own), serves batch read 0401 in word units (subcommand 0000, 16
//! points a word for bit devices) and bit units (0001, two points a byte, high nibble first)
//! and random read 0403 (word points, then double-word points, low word first), and refuses
//! with end codes: 0xC056 past a device's limit (`--limit`), 0xC051 past the point limit
//! (`--max-points`), 0xC059 for a command it does not take. Where it is stricter than a PLC
//! (a bit device read in word units must start at a multiple of 16) the agent's planner does
//! that anyway. Where it is looser (one point limit for words and bits, 4096 by default; no
//! limit of 192 random-read points) the tests set `--max-points 960`, the words limit, or do
//! not rely on it. Its fault plan (`--fault-plan`) makes a server answer with an end code or
//! hang up, and its verbose log (`-v`) prints the command and subcommand of every request it
//! received: the frame log of the read-only test.
//!
//! The values are loaded with `--init` as raw words and bits, worked out by hand below.
//! X/Y numbering is the client's business (binary frames carry the number), so an FX5 and a
//! Q device read the same server: `X17` is point 15 on the one and point 0x17 on the other.
//!
//! `scripts/test` installs virtual-plc into the test venv; `SHOPFLOOR_TEST_PYTHON` points at
//! another interpreter that has it.

#[path = "support/python.rs"]
mod support_python;
use support_python::python;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shopfloor::agent::config::Config;
use shopfloor::metrics::Metrics;
use shopfloor::model::{SourceEvent, Target, Value};
use shopfloor::shutdown;
use shopfloor::source::melsec;
use shopfloor::source::modbus::health;
use tokio::sync::mpsc;

/// A virtual-plc process; killed when dropped. `log` collects its stderr (with `-v`, one
/// line per request).
struct VirtualPlc {
    child: Child,
    address: String,
    log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl VirtualPlc {
    /// Serves a Q-profile PLC with `memory` (virtual-plc's JSON snapshot: device → first
    /// point → values), the given extra options and, if any, a fault plan's steps.
    fn start(memory: &str, options: &[&str], faults: Option<&str>) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let init = dir.path().join("memory.json");
        std::fs::write(&init, memory).expect("write the memory file");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let port_text = port.to_string();
        let mut args: Vec<String> = [
            "-m",
            "virtual_plc",
            "--port",
            &port_text,
            "--profile",
            "Q",
            "--init",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(init.display().to_string());
        args.push("-v".into());
        args.extend(options.iter().map(|s| s.to_string()));
        if let Some(steps) = faults {
            let plan = dir.path().join("faults.json");
            std::fs::write(&plan, format!("{{\"steps\": {steps}}}")).expect("write the fault plan");
            args.push("--fault-plan".into());
            args.push(plan.display().to_string());
        }
        let mut child = Command::new(python())
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start virtual-plc");
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
        let mut line = String::new();
        let _ = stderr.read_line(&mut line);
        if !line.starts_with("listening on") {
            let _ = child.kill();
            panic!("virtual-plc did not start (is it installed? run scripts/test): {line}");
        }
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                if let Ok(mut log) = sink.lock() {
                    log.push(line);
                }
            }
        });
        VirtualPlc {
            child,
            address: format!("127.0.0.1:{port}"),
            log,
            _dir: dir,
        }
    }

    fn port(&self) -> &str {
        self.address.rsplit(':').next().unwrap_or_default()
    }

    /// (command, subcommand) of every request the server logged.
    fn commands(&self) -> Vec<(String, String)> {
        // The server logs a request before it answers; give the reading thread time to
        // take the last lines.
        std::thread::sleep(Duration::from_millis(200));
        self.log
            .lock()
            .map(|log| {
                log.iter()
                    .filter_map(|l| {
                        let command = l.split("command=").nth(1)?.split(' ').next()?;
                        let sub = l.split("sub=").nth(1)?.split(' ').next()?;
                        Some((command.to_string(), sub.to_string()))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for VirtualPlc {
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
id = "q"
kind = "press"
cnc = false

[[machine]]
id = "fx"
kind = "press"
cnc = false

[[machine]]
id = "other"
kind = "press"
cnc = false

[[machine]]
id = "degraded"
kind = "press"
cnc = false
"#;

/// The PLC's memory, raw. Word values by hand:
/// - D101 = −200 as i16: 65536 − 200 = 65336.
/// - D102–D103 = 230.5 as f32: 230.5 = 1.80078125 × 2⁷, exponent 127 + 7 = 0x86, mantissa
///   0.80078125 × 2²³ = 0x668000, so 0x4366_8000: low word 0x8000 = 32768 first, then
///   0x4366 = 17254.
/// - D104–D105 = 0x1234_5678 = 305419896: 0x5678 = 22136, then 0x1234 = 4660.
/// - D106–D107 = −2 as i32 = 0xFFFF_FFFE: 65534, 65535.
/// - D108–D111 = 1.0 as f64 = 0x3FF0_0000_0000_0000: 0, 0, 0, 0x3FF0 = 16368.
/// - D112–D115 = "PM-1000": 'P' 0x50 + 'M' 0x4D × 256 = 19792, '-' 0x2D + '1' 0x31 × 256 =
///   12589, '0' 0x30 + '0' × 256 = 12336, '0' = 48 (then a NUL).
/// - D116 = 0b10_0001 = 33: bits 0 and 5 set.
/// - D120 = 2301, read with scale 0.1.
/// - D124–D127 = −5 as i64: 65531, 65535, 65535, 65535.
const MEMORY: &str = r#"{
  "D": {"100": [1234, 65336, 32768, 17254, 22136, 4660, 65534, 65535, 0, 0, 0, 16368,
                19792, 12589, 12336, 48, 33], "120": [2301], "124": [65531, 65535, 65535, 65535],
        "1500": [7, 8]},
  "W": {"26": [777]},
  "R": {"0": [11]},
  "ZR": {"10000": [4242]},
  "TN": {"5": [300]},
  "CN": {"3": [42]},
  "SD": {"100": [5]},
  "SW": {"1": [6]},
  "M": {"10": [1, 0]},
  "L": {"5": [1]},
  "F": {"3": [1]},
  "V": {"2": [1]},
  "B": {"31": [1]},
  "SM": {"400": [1]},
  "SB": {"17": [1]},
  "X": {"15": [1]},
  "Y": {"32": [1]},
  "TS": {"5": [1], "9": [0]},
  "CS": {"3": [1]}
}"#;

/// One field of every device code and type, on a Q (hexadecimal X/Y).
const Q_FIELDS: &str = r#"field = [
  { signal = "u16", address = "D100" },
  { signal = "i16", address = "D101", type = "i16" },
  { signal = "f32", address = "D102", type = "f32" },
  { signal = "u32", address = "D104", type = "u32" },
  { signal = "i32", address = "D106", type = "i32" },
  { signal = "f64", address = "D108", type = "f64" },
  { signal = "name", address = "D112", type = "string", length = 4 },
  { signal = "bit0", address = "D116.0" },
  { signal = "bit5", address = "D116.5" },
  { signal = "bit1", address = "D116.1" },
  { signal = "scaled", address = "D120", scale = 0.1 },
  { signal = "i64", address = "D124", type = "i64" },
  { signal = "w", address = "W1A" },
  { signal = "r", address = "R0" },
  { signal = "zr", address = "ZR10000" },
  { signal = "tn", address = "TN5" },
  { signal = "cn", address = "CN3" },
  { signal = "sd", address = "SD100" },
  { signal = "sw", address = "SW1" },
  { signal = "m10", address = "M10" },
  { signal = "m11", address = "M11" },
  { signal = "l", address = "L5" },
  { signal = "f", address = "F3" },
  { signal = "v", address = "V2" },
  { signal = "b", address = "B1F" },
  { signal = "sm", address = "SM400" },
  { signal = "sb", address = "SB11" },
  { signal = "x_f", address = "XF" },
  { signal = "x_17", address = "X17" },
  { signal = "y", address = "Y20" },
  { signal = "ts5", address = "TS5" },
  { signal = "ts9", address = "TS9" },
  { signal = "cs", address = "CS3" },
  { signal = "missing", address = "D5000", type = "string", length = 3 },
]
"#;

/// The FX5's numbering of X and Y: octal. X17 is point 15, Y40 is point 32.
const FX_FIELDS: &str = r#"field = [
  { signal = "x_17", address = "X17" },
  { signal = "x_27", address = "X27" },
  { signal = "y", address = "Y40" },
  { signal = "u16", address = "D100" },
  { signal = "pair", address = "D1500", type = "u32" },
]
"#;

fn load(text: &str) -> Config {
    shopfloor::agent::config::load_str(&format!("{SITE}{text}"), "melsec.toml")
        .unwrap_or_else(|d| panic!("{d}"))
}

fn device(id: &str, server: &VirtualPlc, family: &str, extra: &str, fields: &str) -> String {
    format!(
        "\n[[melsec]]\nid = \"{id}\"\nhost = \"127.0.0.1\"\nport = {}\nfamily = \"{family}\"\npoll = \"200ms\"\ntimeout = \"500ms\"\nmachine = \"{id}\"\n{extra}{fields}",
        server.port()
    )
}

/// Runs every `[[melsec]]` device of `cfg` for `run_for`; the last value of every (target,
/// signal), every event, and the metrics.
async fn run(
    cfg: &Config,
    run_for: Duration,
) -> (BTreeMap<(String, String), Value>, Vec<SourceEvent>, Metrics) {
    let (trigger, stop) = shutdown::channel();
    let (tx, mut rx) = mpsc::channel(100_000);
    let metrics = Metrics::new();
    let tasks: Vec<_> = cfg
        .melsec
        .iter()
        .map(|d| {
            tokio::spawn(melsec::client::run(
                d.clone(),
                tx.clone(),
                metrics.clone(),
                stop.clone(),
            ))
        })
        .collect();
    drop(tx);
    tokio::time::sleep(run_for).await;
    trigger.fire();
    for t in tasks {
        t.await.expect("device task");
    }
    let mut values = BTreeMap::new();
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        if let SourceEvent::Samples(samples) = &e {
            for s in samples {
                let target = match &s.target {
                    Target::Machine(m) | Target::Meter(m) => m.to_string(),
                };
                values.insert((target, s.signal.to_string()), s.value.clone());
            }
        }
        events.push(e);
    }
    (values, events, metrics)
}

fn down_reasons(events: &[SourceEvent], id: &str) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            SourceEvent::DeviceDown { device, reason, .. } if &**device == id => {
                Some(reason.clone())
            }
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_device_code_and_type_reads_right_in_3e_and_4e_frames() {
    let server = VirtualPlc::start(MEMORY, &["--limit", "D:0-1999"], None);
    let cfg = load(&format!(
        "{}{}",
        device("q", &server, "q", "frame = \"4e\"\n", Q_FIELDS),
        device("fx", &server, "fx5", "", FX_FIELDS)
    ));
    let (values, events, metrics) = run(&cfg, Duration::from_secs(2)).await;
    let q = |signal: &str| values.get(&("q".to_string(), signal.to_string())).cloned();
    let int = |n: i64| Some(Value::Int(n));
    let yes = Some(Value::Bool(true));
    let no = Some(Value::Bool(false));
    assert_eq!(q("u16"), int(1234));
    assert_eq!(q("i16"), int(-200));
    assert_eq!(q("f32"), Some(Value::Float(230.5)));
    assert_eq!(q("u32"), int(305_419_896));
    assert_eq!(q("i32"), int(-2));
    assert_eq!(q("f64"), Some(Value::Float(1.0)));
    assert_eq!(q("name"), Some(Value::Text("PM-1000".into())));
    assert_eq!(
        (q("bit0"), q("bit5"), q("bit1")),
        (yes.clone(), yes.clone(), no.clone())
    );
    // 2301 × 0.1.
    match q("scaled") {
        Some(Value::Float(x)) => assert!((x - 230.1).abs() < 1e-9, "{x}"),
        other => panic!("scaled: {other:?}"),
    }
    assert_eq!(q("i64"), int(-5));
    assert_eq!(q("w"), int(777));
    assert_eq!(q("r"), int(11));
    assert_eq!(q("zr"), int(4242));
    assert_eq!(q("tn"), int(300));
    assert_eq!(q("cn"), int(42));
    assert_eq!(q("sd"), int(5));
    assert_eq!(q("sw"), int(6));
    assert_eq!((q("m10"), q("m11")), (yes.clone(), no.clone()));
    for bit in ["l", "f", "v", "b", "sm", "sb", "y", "ts5", "cs"] {
        assert_eq!(q(bit), yes, "{bit}");
    }
    assert_eq!(q("ts9"), no);
    // On a Q, X is hexadecimal: XF is point 15 (set), X17 is point 23 (clear).
    assert_eq!((q("x_f"), q("x_17")), (yes.clone(), no.clone()));
    // D5000 is past the server's last D (1999): that request is refused with 0xC056, its
    // field is missing (not zero), the others read, and the PLC is up, not degraded.
    assert_eq!(q("missing"), None);
    assert!(health::errors_of_kind(&metrics, "exception") >= 2);
    // The refused field is reported as failing, by name, as the device's machine's, and
    // counted for itself.
    let failing: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            SourceEvent::FieldErrors { device, errors, .. } if &**device == "q" => Some(errors),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(!failing.is_empty(), "{events:?}");
    for e in &failing {
        assert_eq!((&*e.signal, e.kind), ("missing", "exception"), "{e:?}");
        assert_eq!(e.target, Target::Machine("q".into()), "{e:?}");
        assert!(e.error.contains("end code 0xC056"), "{e:?}");
    }
    let counted: Vec<_> = metrics
        .read()
        .into_iter()
        .filter(|m| m.name == "shopfloor_field_errors_total")
        .map(|m| (format!("{:?}", m.labels), m.value))
        .collect();
    assert_eq!(counted.len(), 1, "{counted:?}");
    assert!(
        counted[0].0.contains("q.missing") && counted[0].1 as usize == failing.len(),
        "{counted:?}"
    );
    let fx = |signal: &str| values.get(&("fx".to_string(), signal.to_string())).cloned();
    // On an FX5, X is octal: X17 is point 15 (set), X27 point 23 (clear); Y40 is point 32.
    assert_eq!((fx("x_17"), fx("x_27"), fx("y")), (yes.clone(), no, yes));
    assert_eq!(fx("u16"), int(1234));
    // D1500 = 7, D1501 = 8: 8 × 65536 + 7 = 524295.
    assert_eq!(fx("pair"), int(524_295));
    assert!(
        !events.iter().any(|e| matches!(
            e,
            SourceEvent::DeviceDown { .. } | SourceEvent::DeviceDegraded { .. }
        )),
        "{events:?}"
    );
    // The Q device spoke 4E frames, the FX5 3E (the server logs each request's frame).
    let log = server.log.lock().map(|l| l.clone()).unwrap_or_default();
    for frame in ["4E binary command=", "3E binary command="] {
        assert!(log.iter().any(|l| l.starts_with(frame)), "{frame}: {log:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_batch_and_random_reads_go_out_on_the_wire() {
    let server = VirtualPlc::start(MEMORY, &[], None);
    let cfg = load(&device("q", &server, "q", "", Q_FIELDS));
    let (values, _, _) = run(&cfg, Duration::from_millis(1000)).await;
    assert!(!values.is_empty());
    let commands = server.commands();
    assert!(!commands.is_empty(), "the server logged no request");
    let allowed = [
        ("0401", "0000"), // batch read, word units
        ("0401", "0001"), // batch read, bit units (TS, CS)
        ("0403", "0000"), // random read
    ];
    for c in &commands {
        assert!(
            allowed.iter().any(|(cmd, sub)| c.0 == *cmd && c.1 == *sub),
            "a request that is not a read went out: {c:?}"
        );
    }
    // Each of the three was used: the map needs them all.
    for (cmd, sub) in allowed {
        assert!(
            commands.iter().any(|c| c.0 == cmd && c.1 == sub),
            "{cmd}/{sub} never sent: {commands:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_of_more_than_960_words_is_split_and_reads_right() {
    // D0 … D1990, every tenth word holds its own number: D(10 i) = i.
    let values: Vec<String> = (0..2000)
        .map(|n| {
            if n % 10 == 0 {
                (n / 10).to_string()
            } else {
                "0".into()
            }
        })
        .collect();
    let memory = format!("{{\"D\": {{\"0\": [{}]}}}}", values.join(", "));
    // The server refuses more than 960 points a request (0xC051), as a PLC does for words.
    let server = VirtualPlc::start(&memory, &["--max-points", "960"], None);
    let fields: Vec<String> = (0..200)
        .map(|i| format!("{{ signal = \"s{i}\", address = \"D{}\" }}", i * 10))
        .collect();
    let cfg = load(&device(
        "q",
        &server,
        "q",
        "max_gap = 16\n",
        &format!("field = [{}]\n", fields.join(", ")),
    ));
    let (got, events, _) = run(&cfg, Duration::from_millis(1000)).await;
    for i in 0..200 {
        assert_eq!(
            got.get(&("q".to_string(), format!("s{i}"))),
            Some(&Value::Int(i)),
            "s{i}"
        );
    }
    assert!(down_reasons(&events, "q").is_empty(), "{events:?}");
    // Three batch reads a poll (D0–D950, D960–D1910, D1920–D1990), none refused: one read of
    // all 1991 words would have been answered 0xC051.
    let commands = server.commands();
    assert!(commands.len() >= 3, "{commands:?}");
    assert!(commands.iter().all(|c| c.0 == "0401"), "{commands:?}");
    assert!(
        server
            .log
            .lock()
            .map(|l| l.iter().all(|l| !l.contains("end=C051")))
            .unwrap_or(false),
        "a request went past the point limit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_plc_and_a_hanging_up_plc_are_down_with_their_reason_a_refused_read_degrades_and_another_keeps_its_schedule()
 {
    let good = VirtualPlc::start(MEMORY, &[], None);
    // Every batch read is answered with end code 0xC059 (command not supported).
    let refusing = VirtualPlc::start(
        MEMORY,
        &[],
        Some(
            r#"[{"match": {"command": 1025}, "times": 1000000, "action": {"type": "bad_end_code", "code": 49241}}]"#,
        ),
    );
    // Every request is met by closing the connection.
    let dropping = VirtualPlc::start(
        MEMORY,
        &[],
        Some(r#"[{"match": {}, "times": 1000000, "action": {"type": "close_before_response"}}]"#),
    );
    // Every request is answered 0xC056 (out of range): the PLC answers, so it is up, but it
    // delivers nothing: degraded.
    let out_of_range = VirtualPlc::start(
        MEMORY,
        &[],
        Some(
            r#"[{"match": {}, "times": 1000000, "action": {"type": "bad_end_code", "code": 49238}}]"#,
        ),
    );
    let one = "field = [{ signal = \"u16\", address = \"D100\" }]\n";
    let cfg = load(&format!(
        "{}{}{}{}",
        device("q", &good, "q", "", one),
        device("fx", &refusing, "q", "", one),
        device("other", &dropping, "q", "", one),
        device("degraded", &out_of_range, "q", "", one),
    ));
    let (values, events, metrics) = run(&cfg, Duration::from_secs(2)).await;
    let refused = down_reasons(&events, "fx");
    assert_eq!(refused.len(), 1, "{events:?}");
    assert!(
        refused[0].contains("0xC059") && refused[0].contains("does not support this command"),
        "{refused:?}"
    );
    let dropped = down_reasons(&events, "other");
    assert_eq!(dropped.len(), 1, "{events:?}");
    assert!(dropped[0].contains("closed the connection"), "{dropped:?}");
    assert!(down_reasons(&events, "q").is_empty(), "{events:?}");
    assert!(down_reasons(&events, "degraded").is_empty(), "{events:?}");
    let degraded: Vec<&SourceEvent> = events
        .iter()
        .filter(
            |e| matches!(e, SourceEvent::DeviceDegraded { device, .. } if &**device == "degraded"),
        )
        .collect();
    assert!(
        matches!(degraded[..], [SourceEvent::DeviceDegraded { reason: Some(r), .. }] if r.contains("0xC056") && r.contains("device settings")),
        "{degraded:?}"
    );
    assert_eq!(
        values.get(&("degraded".to_string(), "u16".to_string())),
        None
    );
    assert_eq!(
        values.get(&("q".to_string(), "u16".to_string())),
        Some(&Value::Int(1234))
    );
    // The good PLC kept its 200 ms schedule for 2 s: about 10 polls (at least 8), while
    // the other two backed off (2, 4, 8 … polls).
    let metric = |name: &str, id: &str| {
        metrics
            .read()
            .iter()
            .find(|r| r.name == name && r.labels.iter().any(|(k, v)| *k == "device" && v == id))
            .map(|r| r.value)
    };
    let polls = |id: &str| metric(health::POLLS, id).unwrap_or(0);
    assert!(polls("q") >= 8, "{} polls", polls("q"));
    assert_eq!((polls("fx"), polls("other")), (0, 0));
    let up = |id: &str| metric(health::UP, id);
    assert_eq!(
        (up("q"), up("fx"), up("other"), up("degraded")),
        (Some(1), Some(0), Some(0), Some(1))
    );
    assert_eq!(metric(health::EXCEPTION_CODE, "degraded"), Some(0xC056));
    let sent = good.commands().len();
    assert!(sent >= 8, "{sent}");
}

#[test]
fn probe_reads_the_plc_and_shows_the_float_low_word_first() {
    let server = VirtualPlc::start(MEMORY, &[], None);
    let out = Command::new(env!("CARGO_BIN_EXE_shopfloor"))
        .args([
            "probe",
            &format!("melsec://{}", server.address),
            "D100",
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
    // D102–D103 hold 230.5 low word first: the f32 row of D102 reads 230.5 in the first
    // column (low word first, as GX Works stores it).
    let row = stdout
        .lines()
        .skip_while(|l| !l.starts_with("f32"))
        .find(|l| l.trim_start().starts_with("D102"))
        .expect("the f32 row of D102");
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells.get(1), Some(&"230.5"), "{stdout}");
    // D101 as i16 is −200.
    let row = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("D101"))
        .expect("the word row of D101");
    assert_eq!(row.split_whitespace().nth(4), Some("-200"), "{stdout}");
    // Only a batch read went out.
    assert_eq!(
        server.commands(),
        vec![("0401".to_string(), "0000".to_string())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbled_answer_is_a_protocol_error_and_the_plc_comes_back_after_back_off() {
    // The first three answers have their subheader's first byte flipped (D0 → D1); then the
    // server answers normally.
    let server = VirtualPlc::start(
        MEMORY,
        &[],
        Some(
            r#"[{"match": {}, "times": 3, "action": {"type": "corrupt_header", "offset": 0, "xor": 1}}]"#,
        ),
    );
    let one = "field = [{ signal = \"u16\", address = \"D100\" }]\n";
    let cfg = load(&device("q", &server, "q", "", one).replace("\"200ms\"", "\"100ms\""));
    // Back-off after failures 1, 2, 3: 2, 4, 8 polls of 100 ms = 1.4 s before the fourth try.
    let (values, events, metrics) = run(&cfg, Duration::from_millis(2500)).await;
    let reasons = down_reasons(&events, "q");
    assert_eq!(reasons.len(), 1, "{events:?}");
    assert!(
        reasons[0].contains("protocol error") && reasons[0].contains("subheader D1 00"),
        "{reasons:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, SourceEvent::DeviceUp { device, .. } if &**device == "q")),
        "{events:?}"
    );
    assert_eq!(
        values.get(&("q".to_string(), "u16".to_string())),
        Some(&Value::Int(1234))
    );
    assert_eq!(health::errors_of_kind(&metrics, "protocol"), 3);
}
