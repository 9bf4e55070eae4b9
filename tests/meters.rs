//! DL/T 645 electricity meters and CJ/T 188 water meters on emulated buses: the emulator in
//! `tests/meters/bus.py` is written from the public standards and served over TCP the way a
//! serial server in transparent mode passes an RS-485 line on. Several meters share each bus,
//! each answering only its own address, so one bus shows a good meter beside a meter with a
//! broken checksum, one answering from the wrong address, one refusing every read and one that
//! stays silent. The emulator logs every request frame it receives: the frame log shows what
//! went to the wire.
//!
//! `tests/meters/pydlt645_meter.py` serves a meter with the `dlt645` package (PyPI, 3.2.0), an
//! implementation of DL/T 645-2007 that is not ours, for the common identifiers and the
//! commissioning probe.

#[path = "support/python.rs"]
mod support_python;
use support_python::python;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use jiff::Timestamp;
use shopfloor::agent::config::Config;
use shopfloor::engine::Engine;
use shopfloor::metrics::Metrics;
use shopfloor::model::{SourceEvent, Target, Value};
use shopfloor::shutdown;
use shopfloor::source::{cjt188, dlt645, meterbus};
use tokio::sync::mpsc;

/// A frame log of its own for each test (they run side by side).
fn temp_log(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("shopfloor-{name}-{}.log", std::process::id()))
}

/// A Python process serving meters; killed when dropped.
struct Emulator {
    child: Child,
    /// The ports it printed after `ready`.
    ports: Vec<u16>,
}

impl Emulator {
    fn start(script: &str, args: &[String]) -> Self {
        let path = format!("{}/tests/meters/{script}", env!("CARGO_MANIFEST_DIR"));
        let mut child = Command::new(python())
            .arg(&path)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the meter emulator");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let mut words = line.split_whitespace();
        if words.next() != Some("ready") {
            let _ = child.kill();
            panic!("{script} did not start (for the dlt645 package: run scripts/test)");
        }
        let ports = words.filter_map(|w| w.parse().ok()).collect();
        Emulator { child, ports }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The site and its main electricity meter, accounted by forward active energy.
const SITE: &str = r#"[site]
county = "wuyi"
sector = "doors"
enterprise = "e1"

[[meter]]
id = "main"
carrier = "electricity"
signal = "energy_active_import_kwh"
"#;

fn config(dlt: u16, cjt: u16) -> Config {
    let text = format!(
        r#"
{SITE}
[[meter]]
id = "old"
carrier = "electricity"

[[meter]]
id = "noisy"
carrier = "electricity"

[[meter]]
id = "stranger"
carrier = "electricity"

[[meter]]
id = "refuser"
carrier = "electricity"

[[meter]]
id = "mute"
carrier = "electricity"

[[meter]]
id = "water-main"
carrier = "water"
signal = "volume_m3"

[[meter]]
id = "hot-water"
carrier = "water"

[[meter]]
id = "water-mute"
carrier = "water"

[[dlt645]]
id = "board"
tcp = "127.0.0.1:{dlt}"
poll = "300ms"
timeout = "400ms"
delay = "5ms"

  [[dlt645.meter]]
  address = "000000000001"
  meter = "main"
  readings = ["energy_active_combined_kwh", "energy_active_import_kwh", "energy_active_export_kwh",
              "voltage_a_v", "current_a_a", "power_active_kw", "power_active_b_kw",
              "power_factor", "frequency_hz"]
    [[dlt645.meter.identifier]]
    id = "02800008"
    signal = "clock_battery_v"
    format = "XX.XX"

  [[dlt645.meter]]
  address = "2"
  meter = "old"
  edition = "1997"
  readings = ["energy_active_import_kwh", "B611"]

  [[dlt645.meter]]
  address = "3"
  meter = "noisy"

  [[dlt645.meter]]
  address = "4"
  meter = "stranger"

  [[dlt645.meter]]
  address = "5"
  meter = "refuser"
  readings = ["energy_active_import_kwh", "voltage_a_v"]

  [[dlt645.meter]]
  address = "6"
  meter = "mute"

[[cjt188]]
id = "water"
tcp = "127.0.0.1:{cjt}"
poll = "300ms"
timeout = "400ms"
delay = "5ms"

  [[cjt188.meter]]
  address = "11"
  type = "cold_water"
  meter = "water-main"

  [[cjt188.meter]]
  address = "12"
  type = "hot_water"
  meter = "hot-water"
  readings = ["volume_m3", "valve", "battery_low"]

  [[cjt188.meter]]
  address = "13"
  type = "cold_water"
  meter = "water-mute"
"#
    );
    shopfloor::agent::config::load_str(&text, "meters.toml").unwrap_or_else(|d| panic!("{d}"))
}

/// Everything the buses told the engine, by meter.
#[derive(Default)]
struct Heard {
    /// Each poll's values, in order.
    samples: HashMap<String, Vec<HashMap<String, Value>>>,
    down: HashMap<String, String>,
    degraded: HashMap<String, String>,
    /// The events in order, for the engine.
    events: Vec<SourceEvent>,
}

impl Heard {
    fn take(&mut self, event: SourceEvent) {
        match &event {
            SourceEvent::Samples(samples) => {
                let Target::Meter(id) = &samples[0].target else {
                    panic!("a meter bus delivered a machine's sample")
                };
                let poll = samples
                    .iter()
                    .map(|s| (s.signal.to_string(), s.value.clone()))
                    .collect();
                self.samples.entry(id.to_string()).or_default().push(poll);
            }
            SourceEvent::DeviceDown { device, reason, .. } => {
                self.down.insert(device.to_string(), reason.clone());
            }
            SourceEvent::DeviceDegraded {
                device,
                reason: Some(reason),
                ..
            } => {
                self.degraded.insert(device.to_string(), reason.clone());
            }
            _ => {}
        }
        self.events.push(event);
    }

    fn polls(&self, meter: &str) -> usize {
        self.samples.get(meter).map_or(0, Vec::len)
    }

    fn first(&self, meter: &str) -> &HashMap<String, Value> {
        &self.samples[meter][0]
    }
}

fn float(poll: &HashMap<String, Value>, signal: &str) -> f64 {
    match poll.get(signal) {
        Some(Value::Float(x)) => *x,
        other => panic!("{signal}: {other:?} in {poll:?}"),
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// Runs the config's buses until `done` says every meter has been heard from as the test
/// needs, at most 20 s.
async fn listen(config: &Config, done: impl Fn(&Heard) -> bool) -> (Heard, Metrics) {
    let metrics = Metrics::new();
    let (trigger, shutdown) = shutdown::channel();
    let (tx, mut rx) = mpsc::channel(1024);
    let mut tasks = Vec::new();
    for bus in &config.dlt645 {
        tasks.push(tokio::spawn(meterbus::run(
            "dlt645",
            bus.id.clone(),
            bus.bus.clone(),
            dlt645::bus::meters(bus),
            tx.clone(),
            metrics.clone(),
            shutdown.clone(),
        )));
    }
    for bus in &config.cjt188 {
        tasks.push(tokio::spawn(meterbus::run(
            "cjt188",
            bus.id.clone(),
            bus.bus.clone(),
            cjt188::bus::meters(bus),
            tx.clone(),
            metrics.clone(),
            shutdown.clone(),
        )));
    }
    drop(tx);
    let mut heard = Heard::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !done(&heard) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(event)) => heard.take(event),
            _ => break,
        }
    }
    trigger.fire();
    for t in tasks {
        let _ = t.await;
    }
    (heard, metrics)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meters_on_emulated_buses_are_read_checked_and_accounted() {
    let log = temp_log("meters");
    let bus = Emulator::start("bus.py", &[log.display().to_string()]);
    let (dlt, cjt) = (bus.ports[0], bus.ports[1]);
    let config = config(dlt, cjt);
    // Three polls of the good meters, each faulty meter marked.
    let (heard, metrics) = listen(&config, |h| {
        ["main", "old", "water-main", "hot-water"]
            .iter()
            .all(|m| h.polls(m) >= 3)
            && ["noisy", "stranger", "mute", "water-mute"]
                .iter()
                .all(|m| h.down.contains_key(*m))
            && h.degraded.contains_key("refuser")
    })
    .await;

    // Every identifier decoded with its decimals and sign, in its unit (the signal's suffix).
    let main = heard.first("main");
    for (signal, want) in [
        // 67 45 23 01 → 12345.67 kWh (XXXXXX.XX).
        ("energy_active_combined_kwh", 12345.67),
        ("energy_active_import_kwh", 1000.00),
        // Two frames: 09 21, then the follow-up (0x12) 43 00 → 00 43 21 09 → 4321.09 kWh.
        ("energy_active_export_kwh", 4321.09),
        ("voltage_a_v", 220.1),
        ("current_a_a", 5.123),
        ("power_active_kw", 3.3456),
        // Sign bit set: 45 23 81 → −1.2345 kW (exporting on phase B).
        ("power_active_b_kw", -1.2345),
        ("power_factor", 0.95),
        ("frequency_hz", 50.0),
        // A raw identifier with its configured format XX.XX.
        ("clock_battery_v", 3.65),
    ] {
        assert!(close(float(main, signal), want), "{signal}: {main:?}");
    }
    let old = heard.first("old");
    assert!(
        close(float(old, "energy_active_import_kwh"), 777.77),
        "{old:?}"
    );
    assert!(close(float(old, "voltage_a_v"), 220.0), "{old:?}");
    let water = heard.first("water-main");
    assert!(close(float(water, "volume_m3"), 1234.56), "{water:?}");
    assert!(
        close(float(water, "volume_settlement_m3"), 1200.0),
        "{water:?}"
    );
    assert_eq!(water.get("valve"), Some(&Value::Text("open".into())));
    assert_eq!(water.get("battery_low"), Some(&Value::Bool(false)));
    // Unit code 0x29, litres: 5000.00 L = 5 m³; ST1 0x05: valve closed (01), battery low (D2).
    let hot = heard.first("hot-water");
    assert!(close(float(hot, "volume_m3"), 5.0), "{hot:?}");
    assert_eq!(hot.get("valve"), Some(&Value::Text("closed".into())));
    assert_eq!(hot.get("battery_low"), Some(&Value::Bool(true)));
    assert!(
        !hot.contains_key("volume_settlement_m3"),
        "not in its readings"
    );

    // Each faulty meter is marked with its reason.
    let reason = |m: &str| heard.down.get(m).cloned().unwrap_or_default();
    assert!(reason("noisy").contains("checksum"), "{}", reason("noisy"));
    assert!(
        reason("stranger").contains("000000000099 answered where 000000000004 was asked"),
        "{}",
        reason("stranger")
    );
    assert!(
        reason("mute").contains("silent meter"),
        "{}",
        reason("mute")
    );
    assert!(
        reason("water-mute").contains("silent meter"),
        "{}",
        reason("water-mute")
    );
    let refused = &heard.degraded["refuser"];
    assert!(
        refused.contains("every reading is refused") && refused.contains("no such data"),
        "{refused}"
    );
    for good in ["main", "old", "water-main", "hot-water"] {
        assert!(!heard.down.contains_key(good), "{good}: {:?}", heard.down);
    }
    // The health counts each fault under its kind.
    let errors = |device: &str, kind: &str| {
        metrics
            .read()
            .iter()
            .filter(|r| r.name == shopfloor::source::modbus::health::ERRORS)
            .filter(|r| r.labels.iter().any(|(k, v)| *k == "device" && v == device))
            .filter(|r| r.labels.iter().any(|(k, v)| *k == "kind" && v == kind))
            .map(|r| r.value)
            .sum::<u64>()
    };
    assert!(errors("noisy", "protocol") >= 1);
    assert!(errors("stranger", "protocol") >= 1);
    assert!(errors("mute", "timeout") >= 1);
    assert!(errors("refuser", "exception") >= 2);
    // Degraded, with DL/T 645's error byte 0x02 (no such data) as the health's exception code.
    let code = metrics
        .read()
        .iter()
        .find(|r| {
            r.name == shopfloor::source::modbus::health::EXCEPTION_CODE
                && r.labels
                    .iter()
                    .any(|(k, v)| *k == "device" && v == "refuser")
        })
        .map(|r| r.value);
    assert_eq!(code, Some(2));

    // Only read commands went to the wire: DL/T 645 read data (0x11), read follow-up (0x12),
    // the 1997 read (0x01); CJ/T 188 read data (0x01).
    let cjt: Vec<String> = std::fs::read_to_string(&log)
        .expect("frame log")
        .lines()
        .filter(|l| l.starts_with("cjt188 "))
        .map(|l| l.split(' ').nth(1).unwrap_or_default().to_string())
        .collect();
    assert!(!cjt.is_empty() && cjt.iter().all(|c| c == "01"), "{cjt:?}");
    let controls = controls_in(&log, &["11", "12", "01"]);
    assert_eq!(controls, ["01", "11", "12"], "each read command was used");

    // The energy and water accounting takes the meters' counters. Only the first three polls
    // of each go to the engine, so the figures are the emulator's steps:
    //   electricity: 1000.00 → 1010.00 → 1020.00 kWh = 20.00 kWh,
    //                × 0.1229 kgce/kWh (GB/T 2589-2020, calorific value) = 2.458 kgce
    //                = 0.002458 tce;
    //   water:       1234.56 → 1236.06 → 1237.56 m³ = 3.00 m³ (= 3 t).
    let mut engine = Engine::new(&config, Timestamp::now());
    let mut out = Vec::new();
    let mut taken: HashMap<String, usize> = HashMap::new();
    for event in heard.events {
        if let SourceEvent::Samples(s) = &event
            && let Target::Meter(id) = &s[0].target
        {
            let n = taken.entry(id.to_string()).or_default();
            *n += 1;
            if *n > 3 {
                continue;
            }
        }
        engine.on_event(event, &mut out);
    }
    out.clear();
    engine.flush(Timestamp::now(), &mut out);
    let day = |meter: &str| {
        out.iter()
            .find(|l| {
                l.starts_with("energy,")
                    && l.contains(&format!(",meter={meter},"))
                    && l.contains("window=1d")
            })
            .unwrap_or_else(|| panic!("no daily energy line for {meter}: {out:#?}"))
            .clone()
    };
    let field = |line: &str, name: &str| -> f64 {
        let fields = line.split(' ').nth(1).expect("fields");
        fields
            .split(',')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} in {line}"))
            .parse()
            .expect("a number")
    };
    let main = day("main");
    assert!((field(&main, "quantity") - 20.0).abs() < 1e-6, "{main}");
    assert!((field(&main, "tce") - 0.002458).abs() < 1e-9, "{main}");
    let water = day("water-main");
    assert!((field(&water, "quantity") - 3.0).abs() < 1e-6, "{water}");
    let _ = std::fs::remove_file(&log);
}

/// Every request in a frame log, checked against the read commands allowed; returns the
/// control codes seen.
fn controls_in(log: &std::path::Path, allowed: &[&str]) -> Vec<String> {
    let frames = std::fs::read_to_string(log).expect("frame log");
    let mut seen: Vec<String> = Vec::new();
    for line in frames.lines() {
        let control = line.split(' ').nth(1).unwrap_or_default().to_string();
        assert!(allowed.contains(&control.as_str()), "not a read: {line}");
        if !seen.contains(&control) {
            seen.push(control);
        }
    }
    seen.sort();
    seen
}

/// The `dlt645` package (PyPI 3.2.0) serves the meter: its own BCD encoder and framing, not
/// ours. The agent reads the common identifiers from it, and the commissioning probe finds
/// its address with the broadcast address read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_independent_dlt645_meter_is_read_and_its_address_found() {
    let log = temp_log("pydlt645");
    let meter = Emulator::start("pydlt645_meter.py", &[log.display().to_string()]);
    let port = meter.ports[0];
    let text = format!(
        r#"
{SITE}
[[dlt645]]
id = "board"
tcp = "127.0.0.1:{port}"
poll = "300ms"
timeout = "1s"
delay = "5ms"

  [[dlt645.meter]]
  address = "000012345678"
  meter = "main"
  readings = ["energy_active_combined_kwh", "energy_active_import_kwh", "energy_active_export_kwh",
              "voltage_a_v", "voltage_b_v", "current_a_a", "power_active_kw", "power_factor"]
"#
    );
    let config =
        shopfloor::agent::config::load_str(&text, "meters.toml").unwrap_or_else(|d| panic!("{d}"));
    let (heard, _) = listen(&config, |h| h.polls("main") >= 1).await;
    assert!(heard.down.is_empty(), "{:?}", heard.down);
    let main = heard.first("main");
    // The values pydlt645_meter.py sets through the package's API.
    for (signal, want) in [
        ("energy_active_combined_kwh", 2345.67),
        ("energy_active_import_kwh", 1234.56),
        ("energy_active_export_kwh", 12.34),
        ("voltage_a_v", 221.3),
        ("voltage_b_v", 219.8),
        ("current_a_a", 12.345),
        // The package sets the sign bit for a negative power: 09 21 83 → −3.2109 kW.
        ("power_active_kw", -3.2109),
        ("power_factor", 0.912),
    ] {
        assert!(close(float(main, signal), want), "{signal}: {main:?}");
    }

    let report = dlt645::probe::probe(&config.dlt645[0].bus, None)
        .await
        .unwrap_or_else(|f| panic!("{f}"));
    assert!(report.contains("meter address 000012345678"), "{report}");
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("energy_active_import_kwh") && l.contains("1234.56  kWh")),
        "{report}"
    );
    // Read data (0x11) and, from the probe, the broadcast address read (0x13); nothing else.
    assert_eq!(controls_in(&log, &["11", "13"]), ["11", "13"]);
    let _ = std::fs::remove_file(&log);
}

/// Commissioning on the emulated buses with one meter each: the probes find the DL/T 645
/// meter's address with the broadcast address read (0x13) and the CJ/T 188 meter's type and
/// address with read address (0x03), then read their values; nothing but reads on the wire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probes_find_a_lone_meters_address_and_read_it() {
    let log = temp_log("probe");
    let emulator = Emulator::start("bus.py", &[log.display().to_string(), "--one".into()]);
    let (dlt, cjt) = (emulator.ports[0], emulator.ports[1]);
    let bus = |port: u16| meterbus::config::Bus {
        tcp: Some(format!("127.0.0.1:{port}")),
        timeout: Duration::from_secs(1),
        delay: Duration::from_millis(5),
        ..meterbus::config::Bus::default()
    };
    let report = dlt645::probe::probe(&bus(dlt), None)
        .await
        .unwrap_or_else(|f| panic!("{f}"));
    assert!(report.contains("meter address 000000000001"), "{report}");
    // 67 45 23 01: 12345.67 kWh, the sign bit clear.
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("energy_active_combined_kwh") && l.contains("12345.67  kWh")),
        "{report}"
    );
    let report = cjt188::probe::probe(&bus(cjt), cjt188::frame::DiOrder::AsWritten)
        .await
        .unwrap_or_else(|f| panic!("{f}"));
    assert!(
        report.contains("meter address 00000000000011, cold water meter"),
        "{report}"
    );
    assert!(
        report.contains("volume_m3              1234.56"),
        "{report}"
    );
    assert!(
        report.contains("valve                  \"open\""),
        "{report}"
    );
    let frames = std::fs::read_to_string(&log).expect("frame log");
    let controls: Vec<&str> = frames.lines().collect();
    assert!(controls.contains(&"dlt645 13 aaaaaaaaaaaa"), "{frames}");
    assert!(controls.contains(&"cjt188 03 aaaaaaaaaaaaaa"), "{frames}");
    for line in controls {
        let control = line.split(' ').nth(1).unwrap_or_default();
        let allowed: &[&str] = if line.starts_with("dlt645") {
            &["11", "12", "13"]
        } else {
            &["01", "03"]
        };
        assert!(allowed.contains(&control), "not a read: {line}");
    }
    let _ = std::fs::remove_file(&log);
}

/// `shopfloor run` starts a task per bus and the engine reports each bus meter's health on
/// the board: up, down with the reason, degraded with the meter's error bits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_runs_the_buses_and_the_board_shows_each_meters_health() {
    let log = temp_log("agent-meters");
    let bus = Emulator::start("bus.py", &[log.display().to_string()]);
    let (dlt, cjt) = (bus.ports[0], bus.ports[1]);
    let data = tempfile::tempdir().expect("temp dir");
    let mut cfg = config(dlt, cjt);
    cfg.agent.data_dir = data.path().to_path_buf();
    cfg.web.enabled = false;
    let (trigger, shutdown) = shutdown::channel();
    let running = shopfloor::agent::start(&cfg, shutdown).expect("agent starts");
    let mut snapshots = running.snapshots.clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let seen = loop {
        let snap = snapshots.borrow_and_update().clone();
        let device = |id: &str| snap.devices.iter().find(|d| &*d.id == id).cloned();
        let ready = ["main", "water-main", "mute", "noisy", "refuser"]
            .iter()
            .all(|id| device(id).is_some_and(|d| d.since.is_some()))
            && device("refuser").is_some_and(|d| d.degraded.is_some());
        if ready || tokio::time::Instant::now() > deadline {
            break snap;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), snapshots.changed()).await;
    };
    trigger.fire();
    running.finished().await;
    let device = |id: &str| {
        seen.devices
            .iter()
            .find(|d| &*d.id == id)
            .cloned()
            .unwrap_or_else(|| panic!("no device {id} on the board: {:?}", seen.devices))
    };
    assert!(
        device("main").up && device("water-main").up,
        "{:?}",
        seen.devices
    );
    let mute = device("mute");
    assert!(
        !mute.up
            && mute
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("silent meter"))
    );
    let noisy = device("noisy");
    assert!(
        !noisy.up
            && noisy
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("checksum"))
    );
    let refuser = device("refuser");
    assert!(
        refuser.up
            && refuser
                .degraded
                .as_deref()
                .is_some_and(|r| r.contains("no such data")),
        "{refuser:?}"
    );
    let _ = std::fs::remove_file(&log);
}
