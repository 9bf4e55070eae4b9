//! Modbus fault handling and isolation, against the simulator (in process, on loopback ports).
//!
//! The simulator can be told at any moment to stop answering, answer late, refuse or hang up
//! (`Simulator::set_faults`), so each test sets up the fault a real workshop would have and
//! checks what the agent does about it. Timing assertions here are about schedules (a poll
//! every 250 ms, a timeout of 1 s) with margins of hundreds of milliseconds, wide enough for a
//! busy 2-core machine and far narrower than what a missing isolation would cause.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use shopfloor::agent::config::Config;
use shopfloor::metrics::Metrics;
use shopfloor::model::{SourceEvent, State, Target, Value};
use shopfloor::sim::{self, Fault, FaultKind, Framing, SimOptions, Simulator};
use shopfloor::source::modbus::{self, health};
use shopfloor::{agent, shutdown};
use tokio::sync::mpsc;

#[path = "support/recorder.rs"]
mod support_recorder;
use support_recorder::Recorder;

const SITE: &str = r#"
[site]
county = "yk"
sector = "doors"
enterprise = "e1"

[agent]
offline_after = "2s"
heartbeat = "60s"

# Tests run in parallel: no board on a fixed port.
[web]
enabled = false

[[state_rules]]
default = "idle"
rule = [{ state = "running", when = [{ signal = "run", op = "==", value = 1 }] }]
"#;

async fn simulator(
    listeners: usize,
    framing: Framing,
    faults: Vec<Fault>,
) -> (Simulator, shutdown::Trigger) {
    let (trigger, stop) = shutdown::channel();
    let options = SimOptions {
        bind: "127.0.0.1:0".parse().expect("address"),
        seed: 11,
        machines: 4,
        listeners,
        framing,
        faults,
        ..SimOptions::default()
    };
    let sim = sim::start(&options, stop, None)
        .await
        .expect("simulator starts");
    (sim, trigger)
}

fn machines(n: usize) -> String {
    (1..=n)
        .map(|i| format!("[[machine]]\nid = \"cnc{i:02}\"\nkind = \"lathe\"\ncnc = true\n"))
        .collect()
}

fn load(text: &str) -> Config {
    shopfloor::agent::config::load_str(text, "test.toml").unwrap_or_else(|d| panic!("{d}\n{text}"))
}

/// Runs the Modbus connections of `cfg` (without engine or outputs) for `run_for` and returns
/// every event they sent, with the metrics they kept.
async fn poll_for(cfg: &Config, run_for: Duration) -> (Vec<SourceEvent>, Metrics) {
    let (trigger, stop) = shutdown::channel();
    let (tx, mut rx) = mpsc::channel(100_000);
    let metrics = Metrics::new();
    let mut tasks = Vec::new();
    for connection in modbus::connections(cfg) {
        tasks.push(tokio::spawn(modbus::run_connection(
            connection,
            tx.clone(),
            metrics.clone(),
            stop.clone(),
        )));
    }
    drop(tx);
    tokio::time::sleep(run_for).await;
    trigger.fire();
    for t in tasks {
        t.await.expect("connection task");
    }
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    (events, metrics)
}

/// Starts the whole agent on `text`, writing to a file in `dir`.
fn start_agent(text: &str, dir: &std::path::Path) -> (agent::Running, shutdown::Trigger) {
    let text = format!(
        "{text}[[file]]\npath = \"{}\"\n",
        dir.join("out.lp").display()
    );
    let mut cfg = load(&text);
    cfg.agent.data_dir = dir.to_path_buf();
    let (trigger, stop) = shutdown::channel();
    (agent::start(&cfg, stop).expect("agent starts"), trigger)
}

/// Poll timestamps per machine, in order.
fn poll_times(events: &[SourceEvent]) -> BTreeMap<String, Vec<Timestamp>> {
    let mut out: BTreeMap<String, Vec<Timestamp>> = BTreeMap::new();
    for e in events {
        if let SourceEvent::Samples(samples) = e
            && let Some(s) = samples.first()
            && let Target::Machine(m) = &s.target
        {
            out.entry(m.to_string()).or_default().push(s.at);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_polls_are_spread_over_the_interval_and_keep_it() {
    // Four boxes polled every 400 ms, each on its own connection: box n (0-based, in config
    // order) first polls n/4 of the interval after the start (0, 100, 200, 300 ms), so their
    // results do not reach the engine in the same instant, and then every 400 ms.
    let (sim, _stop) = simulator(4, Framing::Tcp, vec![]).await;
    let mut text = format!("{SITE}{}", machines(4));
    for (i, addr) in sim.addrs.iter().enumerate() {
        let n = i + 1;
        text += &format!(
            "[[modbus]]\nid = \"box{n}\"\naddress = \"{addr}\"\nunit = {n}\npoll = \"400ms\"\ntimeout = \"1s\"\nprofile = \"cnc-iot-box\"\nmachine = \"cnc{n:02}\"\n"
        );
    }
    let cfg = load(&text);
    let (events, _) = poll_for(&cfg, Duration::from_millis(3000)).await;
    let times = poll_times(&events);
    let first: Vec<Timestamp> = ["cnc01", "cnc02", "cnc03", "cnc04"]
        .iter()
        .map(|m| times[*m][0])
        .collect();
    // In config order, each 100 ms after the one before; 40 ms of margin either way for a
    // busy machine, far from the 0 ms of polls that all start together.
    for w in first.windows(2) {
        let apart = w[1].duration_since(w[0]).as_millis();
        assert!((60..=140).contains(&apart), "first polls at {first:?}");
    }
    for (machine, t) in &times {
        // 3 s at 400 ms: 7 or 8 polls, less any a loaded machine loses.
        assert!(t.len() >= 6, "{machine}: only {} polls", t.len());
        // On the interval after the first: the mean gap is one period, no gap near two.
        let gaps: Vec<i64> = t
            .windows(2)
            .map(|w| w[1].duration_since(w[0]).as_millis() as i64)
            .collect();
        let mean = gaps.iter().sum::<i64>() / gaps.len() as i64;
        assert!(
            (380..=420).contains(&mean),
            "{machine}: polls {gaps:?} ms apart"
        );
        assert!(
            gaps.iter().all(|g| *g < 700),
            "{machine}: polls {gaps:?} ms apart"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_device_does_not_delay_the_others() {
    // Four IoT boxes, each on its own connection; box 3 never answers, and each of its
    // attempts costs a full 1 s timeout. The others poll every 250 ms.
    let (sim, _stop) = simulator(
        4,
        Framing::Tcp,
        vec![Fault {
            unit: Some(3),
            kind: FaultKind::NoReply,
            every: 1,
        }],
    )
    .await;
    let mut text = format!("{SITE}{}", machines(4));
    for (i, addr) in sim.addrs.iter().enumerate() {
        let n = i + 1;
        text += &format!(
            "[[modbus]]\nid = \"box{n}\"\naddress = \"{addr}\"\nunit = {n}\npoll = \"250ms\"\ntimeout = \"1s\"\nprofile = \"cnc-iot-box\"\nmachine = \"cnc{n:02}\"\n"
        );
    }
    let cfg = load(&text);
    let run_for = Duration::from_secs(4);
    let (events, metrics) = poll_for(&cfg, run_for).await;
    let times = poll_times(&events);
    assert!(!times.contains_key("cnc03"), "the dead box delivered data");
    for machine in ["cnc01", "cnc02", "cnc04"] {
        let t = &times[machine];
        // 4 s at 250 ms is 16 polls; allow a quarter to be lost to a loaded machine.
        assert!(t.len() >= 12, "{machine}: only {} polls in 4 s", t.len());
        let gaps: Vec<i64> = t
            .windows(2)
            .map(|w| w[1].duration_since(w[0]).as_millis() as i64)
            .collect();
        // On schedule: every gap one period (250 ms), never the dead box's 1 s timeout.
        let worst = gaps.iter().copied().max().unwrap_or(0);
        assert!(worst < 600, "{machine}: polls {gaps:?} ms apart");
    }
    // The dead box is down, with its timeouts counted and backed off (1 s timeouts with waits
    // of 0.5, 1, 2 s between them leave room for at most 4 attempts in 4 s).
    assert!(events.iter().any(|e| matches!(
        e,
        SourceEvent::DeviceDown { device, reason, .. }
            if &**device == "box3" && reason.contains("no answer")
    )));
    let lines = health::device_lines(&metrics, &[("county", "yk")], Timestamp::now());
    let box3 = lines
        .iter()
        .find(|l| l.contains("device=box3"))
        .expect("a health line for box3");
    assert!(box3.contains(" up=0i,polls=0i,"), "{box3}");
    let timeouts: i64 = box3
        .split(['=', ','])
        .skip_while(|p| *p != "errors_timeout")
        .nth(1)
        .and_then(|v| v.trim_end_matches('i').parse().ok())
        .expect("errors_timeout");
    assert!((1..=4).contains(&timeouts), "{box3}");
    let box1 = lines.iter().find(|l| l.contains("device=box1")).unwrap();
    assert!(box1.contains(" up=1i,"), "{box1}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exception_skips_only_the_fields_of_that_request() {
    let (sim, _stop) = simulator(1, Framing::Tcp, Vec::new()).await;
    // Holding 200 is past the simulator's 15 registers: that request gets "illegal address",
    // the request for 0–6 must still deliver.
    let text = format!(
        "{SITE}{}[[modbus]]\nid = \"box1\"\naddress = \"{}\"\nunit = 1\npoll = \"200ms\"\nmachine = \"cnc01\"\nmax_gap = 0\nfield = [\n  {{ signal = \"run\", register = \"holding\", address = 0 }},\n  {{ signal = \"spindle_rpm\", register = \"holding\", address = 2 }},\n  {{ signal = \"ghost\", register = \"holding\", address = 200 }},\n]\n",
        machines(1),
        sim.addr
    );
    let (events, metrics) = poll_for(&load(&text), Duration::from_millis(1500)).await;
    let mut signals = std::collections::BTreeSet::new();
    for e in &events {
        if let SourceEvent::Samples(s) = e {
            signals.extend(s.iter().map(|s| s.signal.to_string()));
        }
        assert!(
            !matches!(e, SourceEvent::DeviceDown { .. }),
            "an exception is an answer: {e:?}"
        );
    }
    assert_eq!(
        signals.into_iter().collect::<Vec<_>>(),
        vec!["run", "spindle_rpm"]
    );
    let count = |kind: &str| health::errors_of_kind(&metrics, kind);
    // 1.5 s at 200 ms: about 8 polls, each with one refused request.
    assert!(count("exception") >= 4, "{:?}", metrics.read());
    assert_eq!(count("timeout"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_reply_is_never_taken_for_the_next_request() {
    // Two units behind one RTU-over-TCP serial server, read in turn on one connection. Every
    // second answer of unit 1 comes 700 ms late, after its 300 ms timeout. RTU frames carry
    // no transaction id, so if the connection were kept, unit 1's late program name would sit
    // in the stream and be read as unit 2's next answer. Both units' map is the same shape,
    // so only the connection being replaced keeps unit 2's program name right.
    let (sim, _stop) = simulator(
        1,
        Framing::RtuOverTcp,
        vec![Fault {
            unit: Some(1),
            kind: FaultKind::Delay(Duration::from_millis(700)),
            every: 2,
        }],
    )
    .await;
    let recorder = Recorder::start(sim.addr).await;
    // Only `program` is read here: without the state rules on `run`, which would have nothing
    // to hold on (and which `check` refuses for that reason).
    let site = SITE.split("[[state_rules]]").next().unwrap_or(SITE);
    let mut text = format!("{site}{}", machines(2));
    for n in 1..=2 {
        text += &format!(
            "[[modbus]]\nid = \"box{n}\"\naddress = \"{}\"\ntransport = \"rtu_over_tcp\"\nunit = {n}\npoll = \"100ms\"\ntimeout = \"300ms\"\nmachine = \"cnc{n:02}\"\nfield = [{{ signal = \"program\", register = \"holding\", address = 7, type = \"string\", length = 8 }}]\n",
            recorder.addr
        );
    }
    let (events, metrics) = poll_for(&load(&text), Duration::from_secs(3)).await;
    let mut programs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in &events {
        if let SourceEvent::Samples(s) = e {
            for s in s {
                if let (Target::Machine(m), Value::Text(t)) = (&s.target, &s.value) {
                    programs.entry(m.to_string()).or_default().push(t.clone());
                }
            }
        }
    }
    let unit2 = &programs["cnc02"];
    assert!(unit2.len() >= 5, "unit 2 was read {} times", unit2.len());
    assert!(
        unit2.iter().all(|p| *p == sim.workshop.machines[1].program),
        "unit 2 read {unit2:?}; its program is {:?} (unit 1's is {:?})",
        sim.workshop.machines[1].program,
        sim.workshop.machines[0].program
    );
    // Unit 1 timed out, and each timeout cost the connection: more than one was opened.
    assert!(
        programs["cnc01"]
            .iter()
            .all(|p| *p == sim.workshop.machines[0].program)
    );
    assert!(
        recorder.connections() >= 2,
        "the connection was never replaced"
    );
    assert_eq!(
        health::errors_of_kind(&metrics, "protocol"),
        0,
        "a stale frame was read as an answer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_whose_device_stops_answering_goes_offline_after_offline_after() {
    let (sim, _stop) = simulator(2, Framing::Tcp, Vec::new()).await;
    let data = tempfile::tempdir().expect("temp dir");
    let mut text = format!("{SITE}{}", machines(2));
    for (i, addr) in sim.addrs.iter().enumerate() {
        let n = i + 1;
        text += &format!(
            "[[modbus]]\nid = \"box{n}\"\naddress = \"{addr}\"\nunit = {n}\npoll = \"250ms\"\ntimeout = \"300ms\"\nprofile = \"cnc-iot-box\"\nmachine = \"cnc{n:02}\"\n"
        );
    }
    let (running, trigger) = start_agent(&text, data.path());
    let mut snapshots = running.snapshots.clone();
    let state_of = |s: &shopfloor::engine::Snapshot, id: &str| {
        s.machines
            .iter()
            .find(|m| &*m.id == id)
            .map(|m| (m.state, m.since))
    };
    // Both machines deliver data first.
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            {
                let s = snapshots.borrow_and_update();
                if ["cnc01", "cnc02"]
                    .iter()
                    .all(|id| state_of(&s, id).is_some_and(|(st, _)| st != State::Offline))
                {
                    break;
                }
            }
            let _ = snapshots.changed().await;
        }
    })
    .await
    .expect("both machines come online");
    // Box 1 goes silent now.
    let silent_from = Timestamp::now();
    sim.set_faults(vec![Fault {
        unit: Some(1),
        kind: FaultKind::NoReply,
        every: 1,
    }]);
    let offline_since = tokio::time::timeout(Duration::from_secs(8), async {
        loop {
            {
                let s = snapshots.borrow_and_update();
                if let Some((State::Offline, since)) = state_of(&s, "cnc01") {
                    assert!(
                        state_of(&s, "cnc02").is_some_and(|(st, _)| st != State::Offline),
                        "the machine whose box answers went offline too"
                    );
                    break since;
                }
            }
            let _ = snapshots.changed().await;
        }
    })
    .await
    .expect("cnc01 goes offline");
    // The offline state is stamped at the last data (at most one 250 ms poll, plus a request,
    // before the fault) + offline_after (2 s): within [silent_from + 1.6 s, silent_from + 2 s].
    let after = offline_since.duration_since(silent_from);
    assert!(
        after >= SignedDuration::from_millis(1600) && after <= SignedDuration::from_millis(2000),
        "offline {after:?} after the box went silent; offline_after is 2 s"
    );
    trigger.fire();
    running.finished().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_sends_only_function_codes_1_to_4() {
    // Every byte the agent sends, on Modbus TCP and on RTU over TCP, through every kind of
    // fault (timeouts, exceptions, dropped connections make it reconnect and retry), is
    // recorded by a proxy and parsed frame by frame.
    let faults = vec![
        Fault {
            unit: None,
            kind: FaultKind::Drop,
            every: 7,
        },
        Fault {
            unit: None,
            kind: FaultKind::Exception(4),
            every: 5,
        },
        Fault {
            unit: Some(2),
            kind: FaultKind::NoReply,
            every: 3,
        },
    ];
    let (tcp_sim, _stop1) = simulator(1, Framing::Tcp, faults.clone()).await;
    let (rtu_sim, _stop2) = simulator(1, Framing::RtuOverTcp, faults).await;
    let tcp = Recorder::start(tcp_sim.addr).await;
    let rtu = Recorder::start(rtu_sim.addr).await;
    let data = tempfile::tempdir().expect("temp dir");
    let mut text = format!(
        "{SITE}{}\n[[meter]]\nid = \"main\"\ncarrier = \"electricity\"\n",
        machines(4)
    );
    for (n, addr, transport) in [
        (1, tcp.addr, "tcp"),
        (2, tcp.addr, "tcp"),
        (3, rtu.addr, "rtu_over_tcp"),
        (4, rtu.addr, "rtu_over_tcp"),
    ] {
        // Every table: coils and discrete inputs (fc 1, 2) beside the profile's holding
        // registers (fc 3); the meter adds input registers (fc 4).
        text += &format!(
            "[[modbus]]\nid = \"box{n}\"\naddress = \"{addr}\"\ntransport = \"{transport}\"\nunit = {n}\npoll = \"100ms\"\ntimeout = \"200ms\"\nprofile = \"cnc-iot-box\"\nmachine = \"cnc{n:02}\"\nfield = [\n  {{ signal = \"run_coil\", register = \"coil\", address = 0 }},\n  {{ signal = \"power_input\", register = \"discrete\", address = 1 }},\n]\n"
        );
    }
    for (addr, transport) in [(tcp.addr, "tcp"), (rtu.addr, "rtu_over_tcp")] {
        text += &format!(
            "[[modbus]]\nid = \"meter-{transport}\"\naddress = \"{addr}\"\ntransport = \"{transport}\"\nunit = 100\npoll = \"100ms\"\ntimeout = \"200ms\"\nfield = [{{ meter = \"main\", signal = \"kw_{transport}\", register = \"input\", address = 2, type = \"f32\" }}]\n"
        );
    }
    let (running, trigger) = start_agent(&text, data.path());
    tokio::time::sleep(Duration::from_secs(4)).await;
    trigger.fire();
    running.finished().await;

    let mut functions = BTreeMap::new();
    for bytes in tcp.sent() {
        for function in mbap_functions(&bytes) {
            *functions.entry(("tcp", function)).or_insert(0) += 1;
        }
    }
    for bytes in rtu.sent() {
        for function in rtu_functions(&bytes) {
            *functions.entry(("rtu", function)).or_insert(0) += 1;
        }
    }
    // All four reads were sent on both transports, and nothing else.
    let seen: Vec<(&str, u8)> = functions.keys().copied().collect();
    assert_eq!(
        seen,
        vec![
            ("rtu", 1),
            ("rtu", 2),
            ("rtu", 3),
            ("rtu", 4),
            ("tcp", 1),
            ("tcp", 2),
            ("tcp", 3),
            ("tcp", 4)
        ],
        "requests by transport and function code: {functions:?}"
    );
    // The faults made the agent reconnect many times.
    assert!(tcp.connections() >= 3 && rtu.connections() >= 3);
}

/// The function codes of the Modbus TCP requests in `bytes`; panics on anything that is not
/// a whole, well-formed request.
fn mbap_functions(mut bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        assert!(bytes.len() >= 8, "a truncated MBAP frame: {bytes:?}");
        let length = usize::from(u16::from_be_bytes([bytes[4], bytes[5]]));
        assert_eq!(&bytes[2..4], &[0, 0], "protocol id must be 0");
        let (frame, rest) = bytes.split_at(6 + length);
        // Unit, function, start (2), count (2): every read request has 6 bytes after MBAP.
        assert_eq!(frame.len(), 12, "not a read request: {frame:?}");
        out.push(frame[7]);
        bytes = rest;
    }
    out
}

/// The function codes of the RTU requests in `bytes`, each checked against its CRC.
fn rtu_functions(mut bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        // A read request is unit, function, start (2), count (2), CRC (2).
        assert!(bytes.len() >= 8, "a truncated RTU frame: {bytes:?}");
        let (frame, rest) = bytes.split_at(8);
        assert_eq!(
            sim::rtu::frame(frame[0], &frame[1..6]),
            frame,
            "not a read request with a good CRC"
        );
        out.push(frame[1]);
        bytes = rest;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_rtu_reads_two_units_through_a_pseudo_terminal() {
    use tokio_serial::SerialPort;
    // A pseudo-terminal pair stands in for an RS-485 adapter: the simulator speaks RTU on the
    // master side, and the agent opens the slave side by its path, as it would /dev/ttyUSB0,
    // with baud, parity and stop bits set through the serial port API.
    let (sim, _stop) = simulator(1, Framing::Tcp, Vec::new()).await;
    let (master, slave) = tokio_serial::SerialStream::pair().expect("a pseudo-terminal pair");
    let path = slave.name().expect("the slave has a path");
    // A master whose slave side is closed reads an error, so keep the slave open with a plain
    // descriptor, which holds no lock, and close the locked one: the agent opens the port
    // exclusively, as it should a real one.
    let keep_open = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(&path)
            .expect("open the slave side")
    };
    drop(slave);
    let (sim_stop_trigger, sim_stop) = shutdown::channel();
    sim.serve_rtu(master, sim_stop);
    let mut text = format!(
        "{SITE}{}[[modbus_serial]]\nid = \"line\"\nport = \"{path}\"\nbaud = 19200\nparity = \"even\"\n",
        machines(2)
    );
    for n in 1..=2 {
        text += &format!(
            "[[modbus]]\nid = \"box{n}\"\nserial = \"line\"\nunit = {n}\npoll = \"200ms\"\ntimeout = \"500ms\"\nprofile = \"cnc-iot-box\"\nmachine = \"cnc{n:02}\"\n"
        );
    }
    let cfg = load(&text);
    assert_eq!(modbus::connections(&cfg).len(), 1, "one bus, one owner");
    let (events, _) = poll_for(&cfg, Duration::from_secs(2)).await;
    sim_stop_trigger.fire();
    let mut programs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in &events {
        assert!(
            !matches!(e, SourceEvent::DeviceDown { .. }),
            "a unit went down: {e:?}"
        );
        if let SourceEvent::Samples(s) = e {
            for s in s {
                if let (Target::Machine(m), Value::Text(t)) = (&s.target, &s.value) {
                    programs.entry(m.to_string()).or_default().push(t.clone());
                }
            }
        }
    }
    for (i, machine) in ["cnc01", "cnc02"].iter().enumerate() {
        let read = programs.get(*machine).cloned().unwrap_or_default();
        // 2 s at 200 ms: about 10 polls per unit; a slow machine still gets more than 4.
        assert!(read.len() >= 4, "{machine} was read {} times", read.len());
        assert!(read.iter().all(|p| *p == sim.workshop.machines[i].program));
    }
    drop(keep_open);
}

/// Issue 20: after a 30 s outage, polling came back 30–60 s after the device did (the back-off
/// had doubled to a minute), and the machine counted that much more offline. Now a device is
/// retried at most 2 s apart for the first five minutes of an outage, so after a 10 s outage
/// (long enough for the old back-off to have reached 8 s) the machine is back within one retry
/// (2 s), one timed-out request (300 ms) and one poll (250 ms) of the device answering again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_back_from_a_ten_second_outage_is_read_again_within_seconds() {
    const OUTAGE: Duration = Duration::from_secs(10);
    let (sim, _stop) = simulator(1, Framing::Tcp, Vec::new()).await;
    let data = tempfile::tempdir().expect("temp dir");
    let text = format!(
        "{SITE}{}[[modbus]]\nid = \"box1\"\naddress = \"{}\"\nunit = 1\npoll = \"250ms\"\ntimeout = \"300ms\"\nprofile = \"cnc-iot-box\"\nmachine = \"cnc01\"\n",
        machines(1),
        sim.addrs[0]
    );
    let (running, trigger) = start_agent(&text, data.path());
    let mut snapshots = running.snapshots.clone();
    let state = |s: &shopfloor::engine::Snapshot| {
        s.machines
            .iter()
            .find(|m| &*m.id == "cnc01")
            .map(|m| (m.state, m.since))
    };
    let mut wait_for = async |offline: bool, within: Duration| {
        tokio::time::timeout(within, async {
            loop {
                {
                    let s = snapshots.borrow_and_update();
                    if let Some((st, since)) = state(&s)
                        && (st == State::Offline) == offline
                    {
                        return since;
                    }
                }
                let _ = snapshots.changed().await;
            }
        })
        .await
    };
    wait_for(false, Duration::from_secs(10))
        .await
        .expect("cnc01 comes online");
    sim.set_faults(vec![Fault {
        unit: None,
        kind: FaultKind::NoReply,
        every: 1,
    }]);
    let offline_since = wait_for(true, Duration::from_secs(8))
        .await
        .expect("cnc01 goes offline");
    tokio::time::sleep(OUTAGE.saturating_sub(Duration::from_secs(2))).await;
    sim.set_faults(Vec::new());
    let answering_again = Timestamp::now();
    let back_since = wait_for(false, Duration::from_secs(20))
        .await
        .expect("cnc01 comes back");
    let late = back_since.duration_since(answering_again);
    // 2 s between retries + a 300 ms request in flight + a 250 ms poll, and 450 ms of margin
    // for a busy machine. The old back-off (0.5, 1, 2, 4, 8 s …) was 7 s late here.
    assert!(
        late <= SignedDuration::from_secs(3),
        "cnc01 was back {late:?} after its device answered again"
    );
    // The offline interval is the outage less `offline_after` (2 s), plus that delay.
    let offline = back_since.duration_since(offline_since);
    assert!(
        offline <= SignedDuration::try_from(OUTAGE).unwrap() + SignedDuration::from_secs(2),
        "cnc01 offline for {offline:?} after a {OUTAGE:?} outage"
    );
    trigger.fire();
    running.finished().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inter_request_delay_keeps_a_pause_before_every_request_on_a_gateway() {
    // Two boxes behind one gateway address (one connection), polled every 100 ms. With
    // `inter_request_delay = "400ms"` every request waits 400 ms after the last answer. A
    // poll is stamped when it begins, before its pause, so two polls apart may be close, but
    // between a poll's stamp and the stamp two polls later there is always the next poll's
    // pause: its request goes out 400 ms after the first poll's answer at the earliest, and
    // the poll after it begins after that request is answered. Counting polls in a window
    // would say the same only on an idle machine (a late timer lengthens the window).
    let (sim, _stop) = simulator(1, Framing::Tcp, Vec::new()).await;
    let device = |n: usize, delay: &str| {
        format!(
            "[[modbus]]\nid = \"box{n}\"\naddress = \"{}\"\nunit = {n}\npoll = \"100ms\"\nprofile = \"cnc-iot-box\"\nmachine = \"cnc{n:02}\"\n{delay}",
            sim.addrs[0]
        )
    };
    let polls =
        |events: &[SourceEvent]| -> usize { poll_times(events).values().map(Vec::len).sum() };
    let paced = load(&format!(
        "{SITE}{}{}{}",
        machines(2),
        device(1, "inter_request_delay = \"400ms\"\n"),
        device(2, "inter_request_delay = \"400ms\"\n")
    ));
    let (events, _) = poll_for(&paced, Duration::from_secs(3)).await;
    let mut stamps: Vec<Timestamp> = poll_times(&events).into_values().flatten().collect();
    stamps.sort();
    assert!(
        stamps.len() >= 3,
        "{} polls in 3 s with 400 ms between requests",
        stamps.len()
    );
    for w in stamps.windows(3) {
        let apart = w[2].duration_since(w[0]);
        assert!(
            apart >= SignedDuration::from_millis(400),
            "polls stamped {} and {} are {apart:?} apart, with a 400 ms pause between them",
            w[0],
            w[2]
        );
    }
    let free = load(&format!(
        "{SITE}{}{}{}",
        machines(2),
        device(1, ""),
        device(2, "")
    ));
    let (events, _) = poll_for(&free, Duration::from_secs(3)).await;
    let free_polls = polls(&events);
    assert!(
        free_polls >= 30,
        "{free_polls} polls in 3 s without a delay"
    );
}
