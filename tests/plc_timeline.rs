//! A PLC machine and a Modbus machine on the same timeline come out the same: one scripted
//! machine served four times, by the Modbus simulator (`sim::serve`), as a MELSEC PLC over the
//! MC protocol (`sim::serve_plc`, machine 1 in D0–D14), as a Siemens S7 PLC over
//! ISO-on-TCP (`sim::serve_plc`, machine 1 in DB1) and as an OPC UA server (python asyncua,
//! `tests/opcua/timeline.py`, the same script given on its command line), read by one agent
//! through `[[modbus]]`, `[[melsec]]`, `[[s7]]` and `[[opcua]]` into four machines of the same
//! kind, so the same state rules and the same part counter. The stored state changes, signal values, parts and time-model totals
//! of each PLC machine must agree with the Modbus machine's.
//!
//! The MELSEC PLC lays its words out as a MELSEC program does (the part count a double word,
//! low word first; text low byte first) and the device map says so the MELSEC way (`D4` as
//! `u32`, `D7` as a string). The S7 PLC lays them out as an S7 program does (word `W` at byte
//! `2W`, big-endian; the text a STRING[14] at byte 14) and the map says so the S7 way
//! (`DB1.DBD8` as `udint`, `DB1.DBB14` as a string). A mapping that got the word order or the
//! address of the count wrong would count 65,536 parts a part (or none) and fail the parts and
//! signal comparisons; one that got the text wrong fails the program comparison.
//!
//! The OPC UA server writes each value when it changes, with that time as its source
//! timestamp, and the agent subscribes (sampling 50 ms, publishing 100 ms).
//!
//! The devices poll every 200 ms, each on its own clock, so a change reaches each of them up to
//! a poll (plus a request's round trip) after it happened: times of one machine are within
//! [`TOLERANCE_S`] of the other's. Counts, codes and values are exact.

mod common;
#[path = "support/python.rs"]
mod support_python;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use influxdb_line_protocol::{FieldValue, parse_lines};
use jiff::{SignedDuration, Timestamp};
use shopfloor::model::State;
use shopfloor::sim::{self, ScriptedMachine, Workshop, plc::PlcProtocol};
use shopfloor::{agent, shutdown};

/// Two polls of 200 ms and a round trip: how far apart two machines' times may be.
const TOLERANCE_S: f64 = 0.5;

/// The script, from the moment the simulators start (both machines follow it):
///   running 4 s (cycle 2 s → 2 parts), alarm 2 s, running 4 s (2 more parts: 4), setup 2 s,
///   stopped 2 s, idle 2 s; 16 s in all, then no device answers.
fn script() -> ScriptedMachine {
    let s = |state, secs| (state, SignedDuration::from_secs(secs));
    ScriptedMachine {
        steps: vec![
            s(State::Running, 4),
            s(State::Alarm, 2),
            s(State::Running, 4),
            s(State::Setup, 2),
            s(State::Stopped, 2),
            s(State::Idle, 2),
        ],
        cycle_s: 2.0,
        spindle_rpm: 6000,
        alarm_code: 2041,
    }
}
const SCRIPT_S: i64 = 16;
/// The idle lead-in before the script in the test with an OPC UA machine (see there).
const LEAD_S: i64 = 10;

fn config(modbus: &str, mc_port: u16, s7_port: u16, ua_port: u16, dir: &Path) -> String {
    format!(
        r#"
[site]
county = "wuyi"
sector = "doors"
enterprise = "timeline"

[agent]
data_dir = "{data}"
offline_after = "3s"
heartbeat = "60s"
window_flush = "1s"

[web]
enabled = false

[[machine]]
id = "lathe-mb"
kind = "lathe"
cnc = true
parts_signal = "parts"
ideal_cycle = "2s"

[[machine]]
id = "lathe-mc"
kind = "lathe"
cnc = true
parts_signal = "parts"
ideal_cycle = "2s"

[[machine]]
id = "lathe-s7"
kind = "lathe"
cnc = true
parts_signal = "parts"
ideal_cycle = "2s"

[[machine]]
id = "lathe-ua"
kind = "lathe"
cnc = true
parts_signal = "parts"
ideal_cycle = "2s"

[[state_rules]]
kinds = ["lathe"]
default = "idle"
rule = [
  {{ state = "stopped", when = [{{ signal = "power", op = "==", value = 0 }}] }},
  {{ state = "alarm", when = [{{ signal = "alarm_code", op = "!=", value = 0 }}] }},
  {{ state = "running", when = [{{ signal = "run", op = "==", value = 1 }}] }},
  {{ state = "setup", when = [{{ signal = "mode", op = "==", value = 1 }}] }},
]

[[modbus]]
id = "box-mb"
address = "{modbus}"
unit = 1
poll = "200ms"
timeout = "500ms"
profile = "cnc-iot-box"
machine = "lathe-mb"

[[melsec]]
id = "plc-mc"
host = "127.0.0.1"
port = {mc_port}
family = "q"
poll = "200ms"
timeout = "500ms"
machine = "lathe-mc"
field = [
  {{ signal = "run", address = "D0" }},
  {{ signal = "power", address = "D1" }},
  {{ signal = "spindle_rpm", address = "D2" }},
  {{ signal = "alarm_code", address = "D3" }},
  {{ signal = "parts", address = "D4", type = "u32" }},
  {{ signal = "mode", address = "D6" }},
  {{ signal = "program", address = "D7", type = "string", length = 8 }},
]

[[s7]]
id = "plc-s7"
host = "127.0.0.1"
port = {s7_port}
rack = 0
slot = 1
poll = "200ms"
timeout = "500ms"
machine = "lathe-s7"
field = [
  {{ signal = "run", address = "DB1.DBW0", type = "word" }},
  {{ signal = "power", address = "DB1.DBW2", type = "word" }},
  {{ signal = "spindle_rpm", address = "DB1.DBW4", type = "word" }},
  {{ signal = "alarm_code", address = "DB1.DBW6", type = "word" }},
  {{ signal = "parts", address = "DB1.DBD8", type = "udint" }},
  {{ signal = "mode", address = "DB1.DBW12", type = "word" }},
  {{ signal = "program", address = "DB1.DBB14", type = "string", length = 14 }},
]

[[opcua]]
id = "cnc-ua"
endpoint = "opc.tcp://127.0.0.1:{ua_port}/"
machine = "lathe-ua"

  [[opcua.group]]
  publishing_interval = "100ms"
  sampling_interval = "50ms"
  [[opcua.group.node]]
  node = "nsu=urn:shopfloor:timeline;s=Run"
  signal = "run"
  type = "int"
  [[opcua.group.node]]
  node = "nsu=urn:shopfloor:timeline;s=Power"
  signal = "power"
  type = "int"
  [[opcua.group.node]]
  node = "nsu=urn:shopfloor:timeline;s=SpindleRpm"
  signal = "spindle_rpm"
  type = "int"
  [[opcua.group.node]]
  node = "nsu=urn:shopfloor:timeline;s=AlarmCode"
  signal = "alarm_code"
  type = "int"
  [[opcua.group.node]]
  node = "nsu=urn:shopfloor:timeline;s=Parts"
  signal = "parts"
  type = "int"
  [[opcua.group.node]]
  node = "nsu=urn:shopfloor:timeline;s=Mode"
  signal = "mode"
  type = "int"
  [[opcua.group.node]]
  node = "nsu=urn:shopfloor:timeline;s=Program"
  signal = "program"
  type = "string"

[[file]]
path = "{out}"
"#,
        data = dir.join("data").display(),
        out = dir.join("out.lp").display(),
    )
}

/// One stored line: measurement, tags, fields (numbers as f64, text as text), time.
#[derive(Debug, Clone)]
struct Line {
    measurement: String,
    tags: BTreeMap<String, String>,
    fields: BTreeMap<String, Field>,
    at_ns: i64,
}

#[derive(Debug, Clone, PartialEq)]
enum Field {
    Number(f64),
    Text(String),
}

impl Line {
    fn number(&self, key: &str) -> Option<f64> {
        match self.fields.get(key)? {
            Field::Number(v) => Some(*v),
            Field::Text(_) => None,
        }
    }
}

/// The file output's lines, read with InfluxDB's own parser.
fn stored(path: &Path) -> Vec<Line> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    parse_lines(&text)
        .map(|l| {
            let l = l.unwrap_or_else(|e| panic!("a stored line does not parse: {e}"));
            Line {
                measurement: l.series.measurement.to_string(),
                tags: l
                    .series
                    .tag_set
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                fields: l
                    .field_set
                    .iter()
                    .map(|(k, v)| {
                        let v = match v {
                            FieldValue::I64(n) => Field::Number(*n as f64),
                            FieldValue::U64(n) => Field::Number(*n as f64),
                            FieldValue::F64(n) => Field::Number(*n),
                            FieldValue::Boolean(b) => Field::Number(f64::from(u8::from(*b))),
                            FieldValue::String(s) => Field::Text(s.to_string()),
                        };
                        (k.to_string(), v)
                    })
                    .collect(),
                at_ns: l.timestamp.expect("stored lines carry their time"),
            }
        })
        .collect()
}

fn of<'a>(lines: &'a [Line], measurement: &str, machine: &str) -> Vec<&'a Line> {
    lines
        .iter()
        .filter(|l| {
            l.measurement == measurement
                && l.tags.get("machine").map(String::as_str) == Some(machine)
        })
        .collect()
}

/// The state changes of a machine: (time in s, code, previous code, previous_s), heartbeats
/// (which repeat the state) left out.
fn changes(lines: &[Line], machine: &str) -> Vec<(f64, f64, Option<f64>, Option<f64>)> {
    let mut out: Vec<(f64, f64, Option<f64>, Option<f64>)> = Vec::new();
    let mut rows = of(lines, "machine_state", machine);
    rows.sort_by_key(|l| l.at_ns);
    for l in rows {
        let code = l.number("code").expect("machine_state has a code");
        if out.last().is_some_and(|c| c.1 == code) {
            continue;
        }
        out.push((
            l.at_ns as f64 / 1e9,
            code,
            l.number("previous"),
            l.number("previous_s"),
        ));
    }
    out
}

/// The distinct values a signal took on a machine.
fn values(lines: &[Line], machine: &str, signal: &str) -> BTreeSet<String> {
    of(lines, "signal", machine)
        .iter()
        .filter_map(|l| l.fields.get(signal))
        .map(|v| match v {
            Field::Number(n) => n.to_string(),
            Field::Text(t) => t.clone(),
        })
        .collect()
}

/// The machine's day window as last written (the file keeps every rewrite, in order).
fn day<'a>(lines: &'a [Line], machine: &str) -> &'a Line {
    of(lines, "machine_time", machine)
        .into_iter()
        .rfind(|l| l.tags.get("window").map(String::as_str) == Some("1d"))
        .unwrap_or_else(|| panic!("no machine_time window=1d line for {machine}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn melsec_s7_and_opcua_machines_have_the_states_parts_and_time_model_of_the_same_modbus_machine()
 {
    // `RUST_LOG=shopfloor=debug` shows the sources' story in a failing run's output.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().expect("temp dir");
    let (trigger, stop) = shutdown::channel();
    // The script starts with the simulators, so every device answers from its first poll. It
    // begins idle for LEAD_S: an OPC UA session takes longer to open than a poll (more so on a
    // loaded machine), and a machine must see the script's first change live.
    let mut script = script();
    script
        .steps
        .insert(0, (State::Idle, SignedDuration::from_secs(LEAD_S)));
    let mut ua = OpcuaTimeline::start(&script);
    let start = Timestamp::now();
    let end = start + SignedDuration::from_secs(LEAD_S + SCRIPT_S);
    let modbus = sim::serve(
        Workshop::scripted(start, end, vec![script.clone()]),
        "127.0.0.1:0".parse().expect("address"),
        stop.clone(),
        None,
    )
    .await
    .expect("Modbus simulator");
    let plc = |protocol| {
        sim::serve_plc(
            Workshop::scripted(start, end, vec![script.clone()]),
            "127.0.0.1:0".parse().expect("address"),
            protocol,
            stop.clone(),
        )
    };
    let mc = plc(PlcProtocol::Melsec).await.expect("MC simulator");
    let s7 = plc(PlcProtocol::S7).await.expect("S7 simulator");
    ua.begin(start);

    let text = config(
        &modbus.addr.to_string(),
        mc.addr.port(),
        s7.addr.port(),
        ua.port,
        dir.path(),
    );
    let cfg = shopfloor::agent::config::load_str(&text, "timeline.toml")
        .unwrap_or_else(|d| panic!("{d}\n{text}"));
    let running = agent::start(&cfg, stop).expect("agent starts");

    // The script, then offline_after (3 s), then a window flush and a write.
    let out = dir.path().join("out.lp");
    common::eventually(
        "all four machines offline",
        Duration::from_secs(40 + LEAD_S as u64),
        || {
            let out = out.clone();
            async move {
                let lines = stored(&out);
                let offline = State::Offline.code() as f64;
                let all = ["lathe-mb", "lathe-mc", "lathe-s7", "lathe-ua"]
                    .iter()
                    .all(|m| changes(&lines, m).iter().skip(1).any(|c| c.1 == offline));
                if all {
                    Ok(())
                } else {
                    Err(format!(
                        "Modbus {:?}; MC {:?}; S7 {:?}; OPC UA {:?}",
                        changes(&lines, "lathe-mb"),
                        changes(&lines, "lathe-mc"),
                        changes(&lines, "lathe-s7"),
                        changes(&lines, "lathe-ua")
                    ))
                }
            }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    trigger.fire();
    running.finished().await;
    let lines = stored(&out);
    like_modbus(&lines, "lathe-mc", "MC");
    like_modbus(&lines, "lathe-s7", "S7");
    like_modbus(&lines, "lathe-ua", "OPC UA");
}

/// `tests/opcua/timeline.py` playing the script; killed when dropped.
struct OpcuaTimeline {
    child: Child,
    port: u16,
}

impl OpcuaTimeline {
    fn start(script: &ScriptedMachine) -> OpcuaTimeline {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let steps: Vec<String> = script
            .steps
            .iter()
            .map(|(state, length)| {
                let name = match state {
                    State::Running => "running",
                    State::Alarm => "alarm",
                    State::Setup => "setup",
                    State::Stopped => "stopped",
                    State::Idle => "idle",
                    other => panic!("the OPC UA timeline has no {other:?}"),
                };
                format!("{name}:{}", length.as_secs_f64())
            })
            .collect();
        let mut child = Command::new(support_python::python())
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/opcua/timeline.py"
            ))
            .arg(port.to_string())
            .args(["--steps", &steps.join(",")])
            .args(["--cycle", &script.cycle_s.to_string()])
            .args(["--rpm", &script.spindle_rpm.to_string()])
            .args(["--alarm", &script.alarm_code.to_string()])
            .args(["--program", "O1001 PART-01"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the asyncua timeline server");
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
        if line.trim() != "ready" {
            let _ = child.kill();
            panic!(
                "the asyncua timeline server did not start (is asyncua installed? run scripts/test)"
            );
        }
        OpcuaTimeline { child, port }
    }

    /// Starts the script at `start`.
    fn begin(&mut self, start: Timestamp) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{}", start.as_millisecond() as f64 / 1000.0).expect("tell the start");
        stdin.flush().expect("tell the start");
    }
}

impl Drop for OpcuaTimeline {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The PLC machine `plc` (its protocol `name`, for messages) has the Modbus machine's state
/// changes, signal values and day window, and those follow the script.
fn like_modbus(lines: &[Line], plc: &str, name: &str) {
    // State changes: the same codes in the same order, at the same times, each closing the
    // same previous state after the same time in it.
    let (mb, mc) = (changes(lines, "lathe-mb"), changes(lines, plc));
    let codes =
        |c: &[(f64, f64, Option<f64>, Option<f64>)]| c.iter().map(|c| c.1).collect::<Vec<_>>();
    assert_eq!(
        codes(&mb),
        codes(&mc),
        "state sequence\nModbus: {mb:?}\n{name}: {mc:?}"
    );
    // Running, alarm, running, setup, stopped, idle, offline: the script and its end.
    let want: Vec<f64> = [
        State::Running,
        State::Alarm,
        State::Running,
        State::Setup,
        State::Stopped,
        State::Idle,
        State::Offline,
    ]
    .iter()
    .map(|s| s.code() as f64)
    .collect();
    assert!(
        codes(&mb).ends_with(&want),
        "the Modbus machine did not follow the script: {mb:?}"
    );
    for (a, b) in mb.iter().zip(&mc) {
        assert!(
            (a.0 - b.0).abs() <= TOLERANCE_S,
            "change to {} at {} (Modbus) and {} ({name})",
            a.1,
            a.0,
            b.0
        );
        assert_eq!(a.2, b.2, "{name}: previous state of the change to {}", a.1);
        if let (Some(x), Some(y)) = (a.3, b.3) {
            assert!(
                (x - y).abs() <= TOLERANCE_S,
                "previous_s of the change to {}: {x} (Modbus) and {y} ({name})",
                a.1
            );
        } else {
            assert_eq!(
                a.3.is_some(),
                b.3.is_some(),
                "{name}: previous_s of {}",
                a.1
            );
        }
    }

    // Signal values: the same part counts (0 to 4), alarm code, speed and program text.
    for signal in [
        "parts",
        "alarm_code",
        "spindle_rpm",
        "program",
        "run",
        "mode",
    ] {
        assert_eq!(
            values(lines, "lathe-mb", signal),
            values(lines, plc, signal),
            "{name}: values of `{signal}`"
        );
    }
    let parts: BTreeSet<String> = (0..=4).map(|n| n.to_string()).collect();
    assert_eq!(values(lines, plc, "parts"), parts, "{name}");
    assert_eq!(
        values(lines, plc, "program"),
        BTreeSet::from(["O1001 PART-01".to_string()]),
        "{name}"
    );

    // The time model of the day: parts exact, state seconds within the tolerance.
    let (a, b) = (day(lines, "lathe-mb"), day(lines, plc));
    for key in ["parts_total", "parts_good"] {
        assert_eq!(a.number(key), b.number(key), "{name}: {key}");
    }
    // 2 parts in each 4 s run at a 2 s cycle: 4.
    assert_eq!(b.number("parts_total"), Some(4.0), "{name}");
    same(
        name,
        a,
        b,
        &[
            "planned_s",
            "running_s",
            "setup_s",
            "idle_s",
            "alarm_s",
            "stopped_s",
            "offline_s",
        ],
        TOLERANCE_S,
    );
    // Running 4 + 4 s; alarm, setup and stopped 2 s each.
    for (key, want) in [
        ("running_s", 8.0),
        ("alarm_s", 2.0),
        ("setup_s", 2.0),
        ("stopped_s", 2.0),
    ] {
        let got = b.number(key).unwrap_or_else(|| panic!("{key} stored"));
        assert!(
            (got - want).abs() <= TOLERANCE_S,
            "{name} {key}: {got}, script {want}"
        );
    }
    // Availability (running over planned) and OEE follow from the fields compared above: the
    // tolerance over ~20 planned seconds.
    same(name, a, b, &["availability", "oee"], 0.05);
}

/// Each of `keys` is stored for both machines' windows or for neither, and within `tolerance`:
/// the Modbus machine's `mb` and the `name` PLC machine's `plc`.
fn same(name: &str, mb: &Line, plc: &Line, keys: &[&str], tolerance: f64) {
    for key in keys {
        let (x, y) = (mb.number(key), plc.number(key));
        assert_eq!(
            x.is_some(),
            y.is_some(),
            "{key} stored for the Modbus or the {name} machine only"
        );
        if let (Some(x), Some(y)) = (x, y) {
            assert!(
                (x - y).abs() <= tolerance,
                "{key}: {x} (Modbus) and {y} ({name})"
            );
        }
    }
}
