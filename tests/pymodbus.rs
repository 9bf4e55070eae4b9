//! Shopfloor against a third-party Modbus server: pymodbus, serving the register maps in
//! `tests/pymodbus/server.py` on Modbus TCP and RTU over TCP.
//!
//! Our own simulator shares its idea of the protocol with our client, so a misreading of the
//! specification could hide on both sides; pymodbus is an independent implementation, and
//! the values it serves are written as raw registers worked out by hand.
//!
//! `scripts/test` installs pymodbus into a virtual environment outside the repository
//! (`$XDG_CACHE_HOME/shopfloor/venv`, by default `~/.cache/shopfloor/venv`); point
//! `SHOPFLOOR_TEST_PYTHON` at another interpreter that has pymodbus to use that one.

#[path = "support/python.rs"]
mod support_python;
use support_python::python;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use shopfloor::agent::config::Config;
use shopfloor::metrics::Metrics;
use shopfloor::model::{SourceEvent, Target, Value};
use shopfloor::shutdown;
use shopfloor::source::modbus::{self, health};
use tokio::sync::mpsc;

/// The pymodbus server process; killed when dropped.
struct PyModbus {
    child: Child,
    tcp: String,
    rtu: String,
}

impl PyModbus {
    fn start() -> Self {
        let port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port()
        };
        let (tcp, rtu) = (port(), port());
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pymodbus/server.py");
        let mut child = Command::new(python())
            .args([script, &tcp.to_string(), &rtu.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the pymodbus server");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        if line.trim() != "ready" {
            let _ = child.kill();
            panic!("the pymodbus server did not start (is pymodbus installed? run scripts/test)");
        }
        PyModbus {
            child,
            tcp: format!("127.0.0.1:{tcp}"),
            rtu: format!("127.0.0.1:{rtu}"),
        }
    }
}

impl Drop for PyModbus {
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
id = "m-tcp"
kind = "lathe"
cnc = true

[[machine]]
id = "m-rtu"
kind = "lathe"
cnc = true

[[meter]]
id = "em340"
carrier = "electricity"

[[meter]]
id = "sdm630"
carrier = "electricity"
"#;

/// Unit 1's map, one field of every type (see server.py for the raw registers).
const EVERY_TYPE: &str = r#"field = [
  { signal = "u16", register = "holding", address = 0 },
  { signal = "i16", register = "holding", address = 1, type = "i16" },
  { signal = "f32", register = "holding", address = 2, type = "f32" },
  { signal = "u32_cdab", register = "holding", address = 4, type = "u32", order = "CDAB" },
  { signal = "f64", register = "holding", address = 6, type = "f64" },
  { signal = "name", register = "holding", address = 10, type = "string", length = 4 },
  { signal = "bit0", register = "holding", address = 14, type = "bool", bit = 0 },
  { signal = "bit5", register = "holding", address = 14, type = "bool", bit = 5 },
  { signal = "bit1", register = "holding", address = 14, type = "bool", bit = 1 },
  { signal = "i32", register = "holding", address = 15, type = "i32" },
  { signal = "hz", register = "input", address = 0, type = "f32" },
  { signal = "coil0", register = "coil", address = 0 },
  { signal = "coil1", register = "coil", address = 1 },
  { signal = "coil2", register = "coil", address = 2 },
  { signal = "di1", register = "discrete", address = 1 },
  { signal = "missing", register = "holding", address = 40 },
]
"#;

fn config(server: &PyModbus) -> Config {
    let text = format!(
        r#"{SITE}
[[modbus]]
id = "tcp-1"
address = "{tcp}"
unit = 1
poll = "200ms"
machine = "m-tcp"
max_gap = 4
{EVERY_TYPE}
[[modbus]]
id = "rtu-1"
address = "{rtu}"
transport = "rtu_over_tcp"
unit = 1
poll = "200ms"
machine = "m-rtu"
max_gap = 4
{EVERY_TYPE}
[[modbus]]
id = "tcp-em340"
address = "{tcp}"
unit = 2
poll = "200ms"
profile = "carlo-gavazzi-em340"
meter = "em340"

[[modbus]]
id = "rtu-sdm630"
address = "{rtu}"
transport = "rtu_over_tcp"
unit = 3
poll = "200ms"
profile = "eastron-sdm630"
meter = "sdm630"
"#,
        tcp = server.tcp,
        rtu = server.rtu
    );
    shopfloor::agent::config::load_str(&text, "pymodbus.toml").unwrap_or_else(|d| panic!("{d}"))
}

/// The last value of every (target, signal) after polling for `run_for`.
async fn read_all(
    cfg: &Config,
    run_for: Duration,
) -> (BTreeMap<(String, String), Value>, Vec<SourceEvent>, Metrics) {
    let (trigger, stop) = shutdown::channel();
    let (tx, mut rx) = mpsc::channel(100_000);
    let metrics = Metrics::new();
    let connections = modbus::connections(cfg);
    // Two units on the TCP link, two on the RTU link: one connection each.
    assert_eq!(connections.len(), 2);
    let tasks: Vec<_> = connections
        .into_iter()
        .map(|c| {
            tokio::spawn(modbus::run_connection(
                c,
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
        t.await.expect("connection task");
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

fn float(v: Option<&Value>) -> f64 {
    match v {
        Some(Value::Float(x)) => *x,
        other => panic!("expected a float, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_reads_right_from_pymodbus_over_tcp_and_rtu_over_tcp() {
    let server = PyModbus::start();
    let (values, events, metrics) = read_all(&config(&server), Duration::from_secs(2)).await;
    for machine in ["m-tcp", "m-rtu"] {
        let get = |signal: &str| values.get(&(machine.to_string(), signal.to_string()));
        assert_eq!(get("u16"), Some(&Value::Int(1234)), "{machine}");
        assert_eq!(get("i16"), Some(&Value::Int(-200)), "{machine}");
        assert_eq!(get("f32"), Some(&Value::Float(230.5)), "{machine}");
        assert_eq!(get("u32_cdab"), Some(&Value::Int(305_419_896)), "{machine}");
        assert_eq!(get("f64"), Some(&Value::Float(1.0)), "{machine}");
        assert_eq!(
            get("name"),
            Some(&Value::Text("PM-1000".into())),
            "{machine}"
        );
        assert_eq!(get("bit0"), Some(&Value::Bool(true)), "{machine}");
        assert_eq!(get("bit5"), Some(&Value::Bool(true)), "{machine}");
        assert_eq!(get("bit1"), Some(&Value::Bool(false)), "{machine}");
        assert_eq!(get("i32"), Some(&Value::Int(-2)), "{machine}");
        // 49.98 as f32 is 0x4247EB85 = 49.979999542236328125.
        assert_eq!(
            get("hz"),
            Some(&Value::Float(f64::from(49.98f32))),
            "{machine}"
        );
        assert_eq!(get("coil0"), Some(&Value::Bool(true)), "{machine}");
        assert_eq!(get("coil1"), Some(&Value::Bool(false)), "{machine}");
        assert_eq!(get("coil2"), Some(&Value::Bool(true)), "{machine}");
        assert_eq!(get("di1"), Some(&Value::Bool(true)), "{machine}");
        // Holding 40 is not defined on the server: that request is refused, the rest read.
        assert_eq!(get("missing"), None, "{machine}");
    }
    // The meter profiles, each on a connection shared with unit 1.
    let em = |s: &str| float(values.get(&("em340".to_string(), s.to_string())));
    assert!((em("voltage_l1_v") - 230.1).abs() < 1e-9); // 2301 × 0.1
    assert!((em("power_kw") + 12.5).abs() < 1e-9); // −125000 × 0.0001
    assert!((em("power_factor") - 0.9).abs() < 1e-9); // 900 × 0.001
    assert!((em("frequency_hz") - 50.0).abs() < 1e-9); // 500 × 0.1
    assert!((em("energy_kwh") - 12345.6).abs() < 1e-9); // 123456 × 0.1
    let sdm = |s: &str| float(values.get(&("sdm630".to_string(), s.to_string())));
    assert_eq!(sdm("voltage_l1_v"), 230.5);
    assert!((sdm("power_kw") - 8.0).abs() < 1e-12); // 8000 W × 0.001
    assert_eq!(sdm("energy_kwh"), 1234.5);
    // Nobody went down, and the refused request was counted as an exception each poll.
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, SourceEvent::DeviceDown { .. })),
        "{events:?}"
    );
    let exceptions = health::errors_of_kind(&metrics, "exception");
    assert!(exceptions >= 2, "exceptions counted: {exceptions}");
}

#[test]
fn probe_reads_pymodbus_and_shows_the_float_in_its_byte_order() {
    let server = PyModbus::start();
    let out = Command::new(env!("CARGO_BIN_EXE_shopfloor"))
        .args([
            "probe",
            "--address",
            &server.rtu,
            "--rtu-over-tcp",
            "--unit",
            "1",
            "--start",
            "4",
            "--count",
            "2",
        ])
        .output()
        .expect("run shopfloor probe");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Holding 4–5 hold 0x12345678 low word first: the u32 row of address 4 reads
    // 305419896 in the CDAB column (the second).
    let row = stdout
        .lines()
        .skip_while(|l| !l.starts_with("u32"))
        .nth(2)
        .expect("the u32 row");
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells.first(), Some(&"4"), "{stdout}");
    assert_eq!(cells.get(2), Some(&"305419896"), "{stdout}");
}
