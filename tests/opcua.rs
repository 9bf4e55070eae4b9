//! Shopfloor's OPC UA source against a third-party server: python asyncua
//! (`tests/opcua/server.py`), an implementation independent of the Rust stack the agent uses.
//!
//! `scripts/test` installs asyncua (pinned) into the same virtual environment as pymodbus
//! (`$XDG_CACHE_HOME/shopfloor/venv`, by default `~/.cache/shopfloor/venv`); point
//! `SHOPFLOOR_TEST_PYTHON` at another interpreter that has asyncua to use that one.

#[path = "support/python.rs"]
mod support_python;
use support_python::python;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use shopfloor::metrics::Metrics;
use shopfloor::model::{SourceEvent, Target, Value};
use shopfloor::shutdown;
use shopfloor::source::opcua::client;
use shopfloor::source::opcua::config::OpcuaServer;
use tokio::sync::mpsc;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The asyncua server process; killed when dropped.
struct UaServer {
    child: Child,
    port: u16,
}

impl UaServer {
    fn start(port: u16, args: &[&str]) -> UaServer {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/opcua/server.py");
        let mut child = Command::new(python())
            .arg(script)
            .arg(port.to_string())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the asyncua server");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        if line.trim() != "ready" {
            let _ = child.kill();
            panic!("the asyncua server did not start (is asyncua installed? run scripts/test)");
        }
        UaServer { child, port }
    }

    fn endpoint(&self) -> String {
        format!("opc.tcp://127.0.0.1:{}/", self.port)
    }
}

impl Drop for UaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn server_config(text: &str) -> OpcuaServer {
    #[derive(serde::Deserialize)]
    struct Doc {
        opcua: Vec<OpcuaServer>,
    }
    let doc: Doc = toml::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    doc.opcua.into_iter().next().expect("one [[opcua]]")
}

/// What the source sent, in order.
#[derive(Default)]
struct Seen {
    /// (target, signal) → every (value, timestamp), in arrival order.
    values: BTreeMap<(String, String), Vec<(Value, Timestamp)>>,
    /// "up" / "down: reason", with when they arrived.
    health: Vec<(String, Instant)>,
    /// `Alive` events: a live session says its machines are still heard.
    alive: usize,
}

impl Seen {
    fn take(&mut self, event: SourceEvent) {
        match event {
            SourceEvent::Samples(samples) => {
                for s in samples {
                    let t = match &s.target {
                        Target::Machine(m) => format!("machine {m}"),
                        Target::Meter(m) => format!("meter {m}"),
                    };
                    self.values
                        .entry((t, s.signal.to_string()))
                        .or_default()
                        .push((s.value, s.at));
                }
            }
            SourceEvent::DeviceUp { .. } => self.health.push(("up".into(), Instant::now())),
            SourceEvent::DeviceDown { reason, .. } => self
                .health
                .push((format!("down: {reason}"), Instant::now())),
            SourceEvent::Offline { .. } => {}
            SourceEvent::Alive { .. } => self.alive += 1,
            SourceEvent::DeviceDegraded { .. }
            | SourceEvent::Outlet(_)
            | SourceEvent::FieldErrors { .. } => {}
        }
    }

    fn last(&self, machine: &str, signal: &str) -> Option<&Value> {
        self.values
            .get(&(format!("machine {machine}"), signal.to_string()))
            .and_then(|v| v.last())
            .map(|(v, _)| v)
    }

    fn count(&self, machine: &str, signal: &str) -> usize {
        self.values
            .get(&(format!("machine {machine}"), signal.to_string()))
            .map_or(0, Vec::len)
    }
}

/// Receives events into `seen` until `done` says so or `limit` passes.
async fn watch(
    rx: &mut mpsc::Receiver<SourceEvent>,
    seen: &mut Seen,
    limit: Duration,
    done: impl Fn(&Seen) -> bool,
) -> bool {
    let end = tokio::time::Instant::now() + limit;
    while !done(seen) {
        match tokio::time::timeout_at(end, rx.recv()).await {
            Ok(Some(e)) => seen.take(e),
            _ => return done(seen),
        }
    }
    true
}

/// Every built-in type's node as (node name, signal, type, expected value).
fn every_type() -> Vec<(&'static str, &'static str, &'static str, Option<u32>, Value)> {
    let date_ms = "2026-12-06T08:30:15Z"
        .parse::<Timestamp>()
        .unwrap()
        .as_millisecond();
    vec![
        ("Boolean", "boolean", "bool", None, Value::Bool(true)),
        ("SByte", "sbyte", "int", None, Value::Int(-5)),
        ("Byte", "byte", "int", None, Value::Int(200)),
        ("Int16", "int16", "int", None, Value::Int(-1234)),
        ("UInt16", "uint16", "int", None, Value::Int(54321)),
        ("Int32", "int32", "int", None, Value::Int(-123456)),
        ("UInt32", "uint32", "int", None, Value::Int(3_000_000_000)),
        (
            "Int64",
            "int64",
            "int",
            None,
            Value::Int(-9_000_000_000_000_000),
        ),
        ("UInt64", "uint64", "int", None, Value::Int(i64::MAX)),
        ("Float", "float", "float", None, Value::Float(1.5)),
        ("Double", "double", "float", None, Value::Float(2.25)),
        (
            "String",
            "string",
            "string",
            None,
            Value::Text("运行 AUTO".into()),
        ),
        ("DateTime", "datetime_ms", "int", None, Value::Int(date_ms)),
        (
            "DateTime",
            "datetime_text",
            "string",
            None,
            Value::Text("2026-12-06T08:30:15Z".into()),
        ),
        (
            "LocalizedText",
            "text",
            "string",
            None,
            Value::Text("Ready".into()),
        ),
        ("Int32Array", "array_1", "int", Some(1), Value::Int(20)),
        ("Int32Array", "array_2", "int", Some(2), Value::Int(30)),
        ("Uncertain", "uncertain", "float", None, Value::Float(7.5)),
    ]
}

fn nodes_toml(machine: &str) -> String {
    let mut out = String::new();
    for (node, signal, ty, index, _) in every_type() {
        out.push_str(&format!(
            "  [[opcua.group.node]]\n  node = \"nsu=urn:shopfloor:test;s={node}\"\n  \
             signal = \"{signal}\"\n  type = \"{ty}\"\n  machine = \"{machine}\"\n"
        ));
        if let Some(i) = index {
            out.push_str(&format!("  index = {i}\n"));
        }
    }
    out.push_str(&format!(
        "  [[opcua.group.node]]\n  node = \"ns=2;s=Bad\"\n  signal = \"bad\"\n  machine = \"{machine}\"\n"
    ));
    out
}

/// Receives until every built-in type's signal arrived for each of `machines` (30 s at most)
/// and `more` after that, stops the source, and asserts that all arrived.
async fn every_type_arrives(
    machines: &[&str],
    mut rx: mpsc::Receiver<SourceEvent>,
    trigger: shutdown::Trigger,
    task: tokio::task::JoinHandle<()>,
    more: Duration,
) -> Seen {
    let mut seen = Seen::default();
    let all = every_type();
    let complete = watch(&mut rx, &mut seen, Duration::from_secs(30), |s| {
        machines.iter().all(|m| {
            all.iter()
                .all(|(_, signal, ..)| s.last(m, signal).is_some())
        })
    })
    .await;
    watch(&mut rx, &mut seen, more, |_| false).await;
    trigger.fire();
    let _ = task.await;
    assert!(
        complete,
        "not every signal arrived in 30 s; health: {:?}; have: {:?}",
        seen.health,
        seen.values.keys().collect::<Vec<_>>()
    );
    seen
}

/// `RUST_LOG=shopfloor=debug,opcua=info` shows the client's story in a failing test's output.
fn log_to_test_output() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn start(
    server: OpcuaServer,
    pki: &Path,
) -> (
    mpsc::Receiver<SourceEvent>,
    Metrics,
    shutdown::Trigger,
    tokio::task::JoinHandle<()>,
) {
    log_to_test_output();
    let (tx, rx) = mpsc::channel(100_000);
    let metrics = Metrics::new();
    let (trigger, stop) = shutdown::channel();
    let task = tokio::spawn(client::run(
        &server,
        pki.to_path_buf(),
        tx,
        metrics.clone(),
        stop,
    ));
    (rx, metrics, trigger, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_built_in_type_reads_the_same_subscribed_and_polled() {
    let server = UaServer::start(free_port(), &[]);
    let dir = tempfile::tempdir().unwrap();
    let config = server_config(&format!(
        "[[opcua]]\nid = \"asyncua\"\nendpoint = \"{}\"\n\n  [[opcua.group]]\n  publishing_interval = \"200ms\"\n{}\n  [[opcua.group]]\n  mode = \"poll\"\n  poll = \"300ms\"\n{}",
        server.endpoint(),
        nodes_toml("sub"),
        nodes_toml("poll"),
    ));
    let (rx, metrics, trigger, task) = start(config, dir.path());
    let all = every_type();
    // A second more: a few more polls and publications of values that do not change.
    let seen =
        every_type_arrives(&["sub", "poll"], rx, trigger, task, Duration::from_secs(1)).await;
    for m in ["sub", "poll"] {
        for (node, signal, _, _, want) in &all {
            assert_eq!(seen.last(m, signal), Some(want), "{m}: {node} as {signal}");
        }
        // Uncertain: written, and marked.
        assert_eq!(
            seen.last(m, "uncertain_quality"),
            Some(&Value::Text("uncertain".into()))
        );
        assert_eq!(seen.last(m, "int32_quality"), None);
        // Bad: never written.
        assert_eq!(seen.count(m, "bad"), 0);
    }
    // Subscribed and polled values carry the same (source) timestamps.
    for (_, signal, ..) in &all {
        let at = |m: &str| seen.values[&(format!("machine {m}"), signal.to_string())][0].1;
        assert_eq!(at("sub"), at("poll"), "{signal}");
    }
    // A polled value that did not change is not written again (same point, same timestamp).
    assert_eq!(seen.count("poll", "int32"), 1, "repeats are dropped");
    // Values that stand still send nothing, but the live session says its machines are still
    // heard, so the engine does not take them for silent after `offline_after`.
    assert!(seen.alive >= 1, "no Alive from a live session");
    assert!(metrics.sum("shopfloor_opcua_duplicate_values_total") >= 1);
    assert!(metrics.sum("shopfloor_opcua_bad_values_total") >= 2);
    assert_eq!(seen.health.first().map(|h| h.0.as_str()), Some("up"));
}

/// The same nodes as [`nodes_toml`], as the rows of a nodes file (CSV), every node id quoted.
fn nodes_csv(machine: &str) -> String {
    let mut out = String::from("node,type,signal,index,machine\n");
    for (node, signal, ty, index, _) in every_type() {
        let index = index.map(|i| i.to_string()).unwrap_or_default();
        out.push_str(&format!(
            "\"nsu=urn:shopfloor:test;s={node}\",{ty},{signal},{index},{machine}\n"
        ));
    }
    out.push_str(&format!("ns=2;s=Bad,,bad,,{machine}\n"));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_mapped_by_a_csv_file_read_the_same_values_as_nodes_mapped_by_toml() {
    let server = UaServer::start(free_port(), &[]);
    let dir = tempfile::tempdir().unwrap();
    // A whole agent config, read as `shopfloor run` reads it: the CSV file is found beside it.
    std::fs::create_dir(dir.path().join("tags")).unwrap();
    std::fs::write(dir.path().join("tags/every-type.csv"), nodes_csv("csv")).unwrap();
    let text = format!(
        "[site]\ncounty = \"t\"\nsector = \"doors\"\nenterprise = \"e\"\n\
         [[machine]]\nid = \"toml\"\nkind = \"lathe\"\ncnc = true\n\
         [[machine]]\nid = \"csv\"\nkind = \"lathe\"\ncnc = true\n\
         [[opcua]]\nid = \"asyncua\"\nendpoint = \"{}\"\n\n\
         [[opcua.group]]\npublishing_interval = \"200ms\"\n{}\n\
         [[opcua.group]]\npublishing_interval = \"200ms\"\nnodes_file = \"tags/every-type.csv\"\n",
        server.endpoint(),
        nodes_toml("toml"),
    );
    let path = dir.path().join("shopfloor.toml");
    std::fs::write(&path, text).unwrap();
    let mut cfg = shopfloor::agent::config::load(&path).unwrap_or_else(|d| panic!("{d}"));
    let config = cfg.opcua.remove(0);
    let all = every_type();
    assert_eq!(
        config.groups[1].nodes.len(),
        all.len() + 1,
        "every row a node"
    );
    let (rx, _metrics, trigger, task) = start(config, &dir.path().join("pki"));
    let seen = every_type_arrives(&["toml", "csv"], rx, trigger, task, Duration::ZERO).await;
    for (node, signal, _, _, want) in &all {
        assert_eq!(
            seen.last("csv", signal),
            Some(want),
            "csv: {node} as {signal}"
        );
        assert_eq!(
            seen.last("csv", signal),
            seen.last("toml", signal),
            "{node} as {signal}"
        );
        let at = |m: &str| seen.values[&(format!("machine {m}"), signal.to_string())][0].1;
        assert_eq!(at("csv"), at("toml"), "{signal}: the same source timestamp");
    }
    assert_eq!(
        seen.last("csv", "uncertain_quality"),
        Some(&Value::Text("uncertain".into()))
    );
    assert_eq!(seen.count("csv", "bad"), 0, "a Bad value is not written");
}

/// `shopfloor run` with a group's nodes in a CSV file: a row added to the file is read on the
/// next reload (SIGHUP), like a change of the config itself.
#[test]
fn a_reload_reads_the_nodes_file_again() {
    let server = UaServer::start(free_port(), &[]);
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("nodes.csv");
    std::fs::write(&csv, "node,signal,type\nns=2;s=Int32,int32,int\n").unwrap();
    let out = dir.path().join("out.lp");
    let path = dir.path().join("shopfloor.toml");
    std::fs::write(
        &path,
        format!(
            "[site]\ncounty = \"t\"\nsector = \"doors\"\nenterprise = \"e\"\n\
             [agent]\ndata_dir = \"{}\"\n\
             [[file]]\npath = \"{}\"\n\
             [web]\nlisten = \"127.0.0.1:{}\"\n\
             [[machine]]\nid = \"m\"\nkind = \"lathe\"\ncnc = true\n\
             [[opcua]]\nid = \"asyncua\"\nendpoint = \"{}\"\nmachine = \"m\"\n\
             [[opcua.group]]\npublishing_interval = \"200ms\"\nnodes_file = \"nodes.csv\"\n",
            dir.path().join("data").display(),
            out.display(),
            free_port(),
            server.endpoint(),
        ),
    )
    .unwrap();
    struct Agent(Child);
    impl Drop for Agent {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let agent = Agent(
        Command::new(env!("CARGO_BIN_EXE_shopfloor"))
            .args(["run", "-c"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start shopfloor run"),
    );
    let written = |field: &str| {
        let end = Instant::now() + Duration::from_secs(30);
        while Instant::now() < end {
            if std::fs::read_to_string(&out).is_ok_and(|t| t.contains(field)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    };
    assert!(
        written("int32=-123456i"),
        "the file's first node was not read"
    );
    assert!(!written_now(&out, "double="));
    std::fs::write(
        &csv,
        "node,signal,type\nns=2;s=Int32,int32,int\nns=2;s=Double,double,float\n",
    )
    .unwrap();
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(agent.0.id() as i32, libc::SIGHUP) };
    assert!(
        written("double=2.25"),
        "the row added was not read after SIGHUP"
    );
}

fn written_now(out: &Path, field: &str) -> bool {
    std::fs::read_to_string(out).is_ok_and(|t| t.contains(field))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_sees_only_session_subscription_and_read_services() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("services.txt");
    let server = UaServer::start(free_port(), &["--services", log.to_str().unwrap()]);
    let config = server_config(&format!(
        "[[opcua]]\nid = \"asyncua\"\nendpoint = \"{}\"\nmachine = \"m\"\n\n  [[opcua.group]]\n  publishing_interval = \"100ms\"\n  [[opcua.group.node]]\n  node = \"ns=2;s=Counter\"\n  signal = \"counter\"\n  type = \"int\"\n  [[opcua.group]]\n  mode = \"poll\"\n  poll = \"100ms\"\n  [[opcua.group.node]]\n  node = \"ns=2;s=Counter\"\n  signal = \"counter_polled\"\n  type = \"int\"\n",
        server.endpoint(),
    ));
    let (mut rx, _metrics, trigger, task) = start(config, dir.path());
    let mut seen = Seen::default();
    let ok = watch(&mut rx, &mut seen, Duration::from_secs(30), |s| {
        s.count("m", "counter") >= 5 && s.count("m", "counter_polled") >= 5
    })
    .await;
    trigger.fire();
    let _ = task.await;
    // The session is closed from a task of its own; give it a moment to reach the server.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(ok, "values did not arrive; health: {:?}", seen.health);
    let text = std::fs::read_to_string(&log).unwrap();
    let services: BTreeSet<&str> = text.lines().collect();
    let allowed = [
        "GetEndpointsRequest",
        "CreateSessionRequest",
        "ActivateSessionRequest",
        "CloseSessionRequest",
        "ReadRequest",
        "BrowseRequest",
        "BrowseNextRequest",
        "TranslateBrowsePathsToNodeIdsRequest",
        "CreateSubscriptionRequest",
        "ModifySubscriptionRequest",
        "DeleteSubscriptionsRequest",
        "TransferSubscriptionsRequest",
        "CreateMonitoredItemsRequest",
        "DeleteMonitoredItemsRequest",
        "PublishRequest",
        "RepublishRequest",
        "CloseSecureChannelRequest",
    ];
    let other: Vec<&&str> = services.iter().filter(|s| !allowed.contains(s)).collect();
    assert!(
        other.is_empty(),
        "the client called {other:?}; all it called: {services:?}"
    );
    for needed in [
        "CreateSessionRequest",
        "ReadRequest",
        "CreateSubscriptionRequest",
        "CreateMonitoredItemsRequest",
        "PublishRequest",
    ] {
        assert!(
            services.contains(needed),
            "{needed} not seen in {services:?}"
        );
    }
}

/// Subscribes to the server's `Counter` (one more every 200 ms) every 100 ms (queue size 10,
/// so that no count is sampled away), the server
/// started with `args`, until `n` values arrived: (what was seen, the metrics, the services
/// the server received).
async fn count_up(args: &[&str], n: usize) -> (Seen, Metrics, BTreeSet<String>) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("services.txt");
    let mut all = vec!["--services", log.to_str().unwrap()];
    all.extend_from_slice(args);
    let server = UaServer::start(free_port(), &all);
    let config = server_config(&format!(
        "[[opcua]]\nid = \"asyncua\"\nendpoint = \"{}\"\nmachine = \"m\"\n\n  [[opcua.group]]\n  publishing_interval = \"100ms\"\n  queue_size = 10\n  [[opcua.group.node]]\n  node = \"ns=2;s=Counter\"\n  signal = \"counter\"\n  type = \"int\"\n",
        server.endpoint(),
    ));
    let (mut rx, metrics, trigger, task) = start(config, dir.path());
    let mut seen = Seen::default();
    let ok = watch(&mut rx, &mut seen, Duration::from_secs(30), |s| {
        s.count("m", "counter") >= n
    })
    .await;
    trigger.fire();
    let _ = task.await;
    assert!(ok, "values did not arrive; health: {:?}", seen.health);
    let services = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    (seen, metrics, services)
}

/// The counter's values as seen, in arrival order.
fn counts(seen: &Seen) -> Vec<i64> {
    seen.values[&("machine m".to_string(), "counter".to_string())]
        .iter()
        .map(|(v, _)| match v {
            Value::Int(i) => *i,
            other => panic!("{other:?}"),
        })
        .collect()
}

/// The server loses every third data message on the way (the client sees the sequence number
/// skip one) and keeps it: the source asks for it with Republish, and every count arrives, in
/// order, none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_lost_on_the_way_is_asked_for_again_and_delivered_in_order() {
    let (seen, metrics, services) = count_up(&["--lose", "3"], 15).await;
    let counts = counts(&seen);
    for pair in counts.windows(2) {
        assert_eq!(
            pair[1],
            pair[0] + 1,
            "a count missing or out of order: {counts:?}"
        );
    }
    assert!(
        services.contains("RepublishRequest"),
        "no Republish: {services:?}"
    );
    assert_eq!(metrics.sum("shopfloor_opcua_notifications_lost_total"), 0);
    assert_eq!(seen.health.len(), 1, "{:?}", seen.health);
}

/// The same, but the server no longer has the lost messages: they are counted as lost, the
/// counts they held are missing, and the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_server_no_longer_has_is_counted_lost_and_the_session_goes_on() {
    let (seen, metrics, services) = count_up(&["--lose", "3", "--forget"], 10).await;
    let counts = counts(&seen);
    assert!(
        counts.windows(2).any(|p| p[1] > p[0] + 1),
        "no count missing: {counts:?}"
    );
    assert!(counts.windows(2).all(|p| p[1] > p[0]), "{counts:?}");
    assert!(services.contains("RepublishRequest"), "{services:?}");
    assert!(metrics.sum("shopfloor_opcua_notifications_lost_total") >= 1);
    assert_eq!(seen.health.len(), 1, "{:?}", seen.health);
}

/// A server that holds one Publish request at a time answers the second with
/// BadTooManyPublishRequests: the source keeps one outstanding from then on and the session
/// goes on, every count in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_holds_fewer_publish_requests_gets_fewer_and_the_session_goes_on() {
    let (seen, _metrics, _services) = count_up(&["--publish-limit", "1"], 15).await;
    let counts = counts(&seen);
    for pair in counts.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "{counts:?}");
    }
    assert_eq!(seen.health.len(), 1, "{:?}", seen.health);
}

/// The server ends the subscription (a StatusChangeNotification BadTimeout, as when it
/// expires, then it is gone): the session ends, the server is reported down with that reason,
/// and a new session subscribes again; the static value is not written twice and the counter
/// only goes forward.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_the_server_ends_is_made_anew_without_duplicates() {
    let server = UaServer::start(free_port(), &["--expire-after", "2"]);
    let dir = tempfile::tempdir().unwrap();
    let config = server_config(&format!(
        "[[opcua]]\nid = \"asyncua\"\nendpoint = \"{}\"\nmachine = \"m\"\n\n  [[opcua.group]]\n  publishing_interval = \"100ms\"\n  [[opcua.group.node]]\n  node = \"ns=2;s=Counter\"\n  signal = \"counter\"\n  type = \"int\"\n  [[opcua.group.node]]\n  node = \"ns=2;s=Int32\"\n  signal = \"int32\"\n  type = \"int\"\n",
        server.endpoint(),
    ));
    let (mut rx, _metrics, trigger, task) = start(config, dir.path());
    let mut seen = Seen::default();
    let ok = watch(&mut rx, &mut seen, Duration::from_secs(30), |s| {
        let ups = s.health.iter().filter(|h| h.0 == "up").count();
        ups >= 2 && s.count("m", "counter") >= 20
    })
    .await;
    trigger.fire();
    let _ = task.await;
    drop(server);
    assert!(
        ok,
        "no second session with values; health: {:?}",
        seen.health
    );
    let down: Vec<&String> = seen
        .health
        .iter()
        .map(|h| &h.0)
        .filter(|h| h.starts_with("down"))
        .collect();
    assert!(
        down.first()
            .is_some_and(|d| d.contains("ended subscription") && d.contains("BadTimeout")),
        "{:?}",
        seen.health
    );
    assert_eq!(
        seen.count("m", "int32"),
        1,
        "the static value written twice"
    );
    let counter = &seen.values[&("machine m".to_string(), "counter".to_string())];
    for pair in counter.windows(2) {
        assert!(pair[0].1 < pair[1].1, "{:?} then {:?}", pair[0], pair[1]);
    }
}

/// Reads the server's `Item0..Item{n-1}` as machine `m`'s `item<i>` in one group (`group`: the
/// group's settings) until all arrived or `limit` passed: (all arrived and each has its value,
/// what was seen, the metrics).
async fn read_items(
    server: &UaServer,
    group: &str,
    n: i64,
    limit: Duration,
) -> (bool, Seen, Metrics) {
    let dir = tempfile::tempdir().unwrap();
    let mut text = format!(
        "[[opcua]]\nid = \"asyncua\"\nendpoint = \"{}\"\nmachine = \"m\"\n\n  [[opcua.group]]\n{group}",
        server.endpoint()
    );
    for i in 0..n {
        text.push_str(&format!(
            "  [[opcua.group.node]]\n  node = \"ns=2;s=Item{i}\"\n  signal = \"item{i}\"\n  type = \"int\"\n"
        ));
    }
    let (mut rx, metrics, trigger, task) = start(server_config(&text), dir.path());
    let mut seen = Seen::default();
    let ok = watch(&mut rx, &mut seen, limit, |s| {
        (0..n).all(|i| s.last("m", &format!("item{i}")).is_some())
    })
    .await;
    trigger.fire();
    let _ = task.await;
    let right = (0..n).all(|i| seen.last("m", &format!("item{i}")) == Some(&Value::Int(i)));
    (ok && right, seen, metrics)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_100_items_per_subscription_gets_several_subscriptions() {
    let server = UaServer::start(
        free_port(),
        &["--items", "250", "--per-subscription", "100"],
    );
    let (ok, seen, metrics) = read_items(
        &server,
        "  publishing_interval = \"200ms\"\n",
        250,
        Duration::from_secs(30),
    )
    .await;
    assert!(
        ok,
        "not every item arrived with its value; health: {:?}",
        seen.health
    );
    // The gauge stays at what the session opened (the task has ended, the metric stays).
    assert_eq!(
        metrics.sum("shopfloor_opcua_subscriptions"),
        3,
        "250 items at 100 a subscription"
    );
}

/// The asyncua server says MaxNodesPerRead 10000; the client decodes at most 1000 values in an
/// answer. A polled group of 1,200 nodes is read in batches the client can decode, not in one
/// Read whose answer would drop the connection on every poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polled_group_larger_than_the_client_decodes_at_once_is_read_in_batches() {
    let server = UaServer::start(free_port(), &["--items", "1200"]);
    let (ok, seen, _) = read_items(
        &server,
        "  mode = \"poll\"\n  poll = \"500ms\"\n",
        1200,
        Duration::from_secs(60),
    )
    .await;
    assert!(
        ok,
        "not every item arrived with its value; health: {:?}",
        seen.health
    );
    assert!(
        !seen.health.iter().any(|h| h.0.starts_with("down")),
        "{:?}",
        seen.health
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_recovers_within_10_s_without_duplicates() {
    let port = free_port();
    let stamp = (Timestamp::now().as_second() - 60).to_string();
    let mut server = UaServer::start(port, &["--stamp", &stamp]);
    let dir = tempfile::tempdir().unwrap();
    let config = server_config(&format!(
        "[[opcua]]\nid = \"asyncua\"\nendpoint = \"{}\"\nmachine = \"m\"\nrequest_timeout = \"2s\"\n\n  [[opcua.group]]\n  publishing_interval = \"100ms\"\n  [[opcua.group.node]]\n  node = \"ns=2;s=Counter\"\n  signal = \"counter\"\n  type = \"int\"\n  [[opcua.group.node]]\n  node = \"ns=2;s=Int32\"\n  signal = \"int32\"\n  type = \"int\"\n  [[opcua.group]]\n  mode = \"poll\"\n  poll = \"200ms\"\n  [[opcua.group.node]]\n  node = \"ns=2;s=Double\"\n  signal = \"double\"\n",
        server.endpoint(),
    ));
    let (mut rx, _metrics, trigger, task) = start(config, dir.path());
    let mut seen = Seen::default();
    assert!(
        watch(&mut rx, &mut seen, Duration::from_secs(30), |s| s
            .count("m", "counter")
            >= 3)
        .await,
        "no values before the restart; health: {:?}",
        seen.health
    );
    drop(server);
    assert!(
        watch(&mut rx, &mut seen, Duration::from_secs(30), |s| s
            .health
            .iter()
            .any(|h| h.0.starts_with("down")))
        .await,
        "the server's loss was not reported; health: {:?}",
        seen.health
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    server = UaServer::start(port, &["--stamp", &stamp]);
    let restarted = Instant::now();
    let before = seen.count("m", "counter");
    assert!(
        watch(&mut rx, &mut seen, Duration::from_secs(10), |s| s
            .count("m", "counter")
            >= before + 3)
        .await,
        "no values within 10 s of the restart; health: {:?}",
        seen.health
    );
    let recovered = restarted.elapsed();
    trigger.fire();
    let _ = task.await;
    drop(server);
    assert!(recovered < Duration::from_secs(10), "{recovered:?}");
    // Static values keep their timestamps across the restart: written once.
    assert_eq!(
        seen.count("m", "int32"),
        1,
        "{:?}",
        seen.values.get(&("machine m".into(), "int32".into()))
    );
    assert_eq!(seen.count("m", "double"), 1);
    // The counter's timestamps only go forward, through the restart.
    let counter = &seen.values[&("machine m".to_string(), "counter".to_string())];
    for pair in counter.windows(2) {
        assert!(pair[0].1 < pair[1].1, "{:?} then {:?}", pair[0], pair[1]);
    }
    let health: Vec<&str> = seen
        .health
        .iter()
        .map(|h| h.0.split(':').next().unwrap_or(""))
        .collect();
    assert_eq!(health.first(), Some(&"up"));
    assert_eq!(health.last(), Some(&"up"), "{:?}", seen.health);
    assert!(health.contains(&"down"));
}

/// The state changes stored for machine `m` in a line-protocol file: (state, time), a
/// heartbeat (which repeats the state) left out.
fn stored_states(path: &Path) -> Vec<(String, Timestamp)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out: Vec<(String, Timestamp)> = Vec::new();
    let mut lines: Vec<(String, Timestamp)> = text
        .lines()
        .filter(|l| l.starts_with("machine_state,") && l.contains(",machine=m,"))
        .filter_map(|l| {
            let state = l.split("state=\"").nth(1)?.split('"').next()?.to_string();
            let ns: i128 = l.rsplit(' ').next()?.parse().ok()?;
            Some((state, Timestamp::from_nanosecond(ns).ok()?))
        })
        .collect();
    lines.sort_by_key(|l| l.1);
    for l in lines {
        if out.last().is_none_or(|o| o.0 != l.0) {
            out.push(l);
        }
    }
    out
}

/// Waits until the states stored in `out` satisfy `done`; panics after `limit`.
async fn stored_until(
    out: &Path,
    what: &str,
    limit: Duration,
    done: impl Fn(&[(String, Timestamp)]) -> bool,
) -> Vec<(String, Timestamp)> {
    let end = Instant::now() + limit;
    loop {
        let states = stored_states(out);
        if done(&states) {
            return states;
        }
        if Instant::now() > end {
            panic!("{what} within {limit:?}; stored states: {states:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The server goes away and comes back serving the same values with the same timestamps (a
/// restart of a controller whose values did not change meanwhile): nothing new is written,
/// and yet the machine must not stay offline. The agent (engine and file output included)
/// stores it offline `offline_after` after the server went, then back in the state its values
/// imply (running), stamped when the source heard the server again and within 10 s of its
/// return, and writes the unchanged value once in all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_whose_values_stand_still_across_a_server_restart_comes_back_online() {
    log_to_test_output();
    let port = free_port();
    let stamp = (Timestamp::now().as_second() - 60).to_string();
    let mut server = UaServer::start(port, &["--stamp", &stamp]);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.lp");
    let text = format!(
        r#"
[site]
county = "wuyi"
sector = "doors"
enterprise = "restart"

[agent]
data_dir = "{data}"
offline_after = "3s"
heartbeat = "60s"

[web]
enabled = false

[[machine]]
id = "m"
kind = "lathe"
cnc = true

[[state_rules]]
kinds = ["lathe"]
default = "idle"
rule = [{{ state = "running", when = [{{ signal = "int32", op = "==", value = -123456 }}] }}]

[[opcua]]
id = "asyncua"
endpoint = "{endpoint}"
machine = "m"
request_timeout = "2s"

  [[opcua.group]]
  publishing_interval = "100ms"
  [[opcua.group.node]]
  node = "ns=2;s=Int32"
  signal = "int32"
  type = "int"

[[file]]
path = "{out}"
"#,
        data = dir.path().join("data").display(),
        endpoint = server.endpoint(),
        out = out.display(),
    );
    let config_path = dir.path().join("agent.toml");
    let cfg = shopfloor::agent::config::load_str(&text, &config_path.display().to_string())
        .unwrap_or_else(|d| panic!("{d}\n{text}"));
    let (trigger, stop) = shutdown::channel();
    let running = shopfloor::agent::start(&cfg, stop).expect("agent starts");
    stored_until(&out, "machine m running", Duration::from_secs(30), |s| {
        s.last().is_some_and(|l| l.0 == "running")
    })
    .await;
    drop(server);
    stored_until(
        &out,
        "machine m offline after its server went",
        Duration::from_secs(30),
        |s| s.last().is_some_and(|l| l.0 == "offline"),
    )
    .await;
    let returned = Timestamp::now();
    server = UaServer::start(port, &["--stamp", &stamp]);
    let states = stored_until(
        &out,
        "machine m running again after its server returned",
        Duration::from_secs(10),
        |s| s.len() >= 3 && s.last().is_some_and(|l| l.0 == "running"),
    )
    .await;
    trigger.fire();
    running.finished().await;
    drop(server);
    let names: Vec<&str> = states.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(
        names[names.len() - 3..],
        ["running", "offline", "running"],
        "{states:?}"
    );
    let back = states.last().expect("a state").1;
    assert!(
        back >= returned && back.duration_since(returned) < jiff::SignedDuration::from_secs(10),
        "back at {back}, the server returned at {returned}"
    );
    // The unchanged value is written once, before the restart; the return writes no sample.
    let written = std::fs::read_to_string(&out)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("signal,") && l.contains("int32="))
        .count();
    assert_eq!(
        written,
        1,
        "{}",
        std::fs::read_to_string(&out).unwrap_or_default()
    );
}

/// A secured connection is refused while the server's certificate is untrusted (the device goes
/// down); once the rejected certificate is moved to `trusted/`, as the error says to, values
/// arrive. Returns whether machine `m`'s `int32` arrived after trusting.
async fn refused_then_trusted(
    rx: &mut mpsc::Receiver<SourceEvent>,
    seen: &mut Seen,
    pki: &Path,
    what: &str,
) -> bool {
    assert!(
        watch(rx, seen, Duration::from_secs(30), |s| s
            .health
            .iter()
            .any(|h| h.0.starts_with("down")))
        .await,
        "{what}: {:?}",
        seen.health
    );
    std::fs::create_dir_all(pki.join("trusted")).unwrap();
    for cert in std::fs::read_dir(pki.join("rejected")).unwrap().flatten() {
        std::fs::rename(cert.path(), pki.join("trusted").join(cert.file_name())).unwrap();
    }
    watch(rx, seen, Duration::from_secs(30), |s| {
        s.last("m", "int32").is_some()
    })
    .await
}

fn secure_config(endpoint: &str, pki: &Path, password_file: &Path) -> OpcuaServer {
    secure_config_with(endpoint, pki, password_file, "basic256sha256")
}

fn secure_config_with(
    endpoint: &str,
    pki: &Path,
    password_file: &Path,
    policy: &str,
) -> OpcuaServer {
    server_config(&format!(
        "[[opcua]]\nid = \"secure\"\nendpoint = \"{endpoint}\"\nsecurity_policy = \"{policy}\"\nsecurity_mode = \"sign_and_encrypt\"\nusername = \"operator\"\npassword = {{ file = \"{}\" }}\npki_dir = \"{}\"\nmachine = \"m\"\n\n  [[opcua.group]]\n  [[opcua.group.node]]\n  node = \"ns=2;s=Int32\"\n  signal = \"int32\"\n  type = \"int\"\n",
        password_file.display(),
        pki.display()
    ))
}

/// The documented way to trust a server: the agent is refused, keeps the certificate in
/// `rejected/`, the engineer moves it to `trusted/`, the agent connects at its next attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic256sha256_sign_and_encrypt_with_a_user_and_password_once_the_server_is_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let server_dir = dir.path().join("server");
    let server = UaServer::start(free_port(), &["--secure", server_dir.to_str().unwrap()]);
    let pki = dir.path().join("pki");
    let password = dir.path().join("password");
    std::fs::write(&password, "s3cret\n").unwrap();
    let (mut rx, _m, trigger, task) =
        start(secure_config(&server.endpoint(), &pki, &password), &pki);
    let mut seen = Seen::default();
    let refused = watch(&mut rx, &mut seen, Duration::from_secs(30), |s| {
        s.health.iter().any(|h| h.0.starts_with("down"))
    })
    .await;
    assert!(refused, "no down report; health: {:?}", seen.health);
    std::fs::create_dir_all(pki.join("trusted")).unwrap();
    for cert in std::fs::read_dir(pki.join("rejected")).unwrap().flatten() {
        std::fs::rename(cert.path(), pki.join("trusted").join(cert.file_name())).unwrap();
    }
    let ok = watch(&mut rx, &mut seen, Duration::from_secs(30), |s| {
        s.last("m", "int32").is_some()
    })
    .await;
    trigger.fire();
    let _ = task.await;
    assert!(
        ok,
        "no value over a secure channel; health: {:?}",
        seen.health
    );
    assert_eq!(seen.last("m", "int32"), Some(&Value::Int(-123456)));
    assert_eq!(seen.health.last().map(|h| h.0.as_str()), Some("up"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_server_certificate_is_reported_with_how_to_trust_it() {
    let dir = tempfile::tempdir().unwrap();
    let server_dir = dir.path().join("server");
    let server = UaServer::start(free_port(), &["--secure", server_dir.to_str().unwrap()]);
    let pki = dir.path().join("pki");
    let password = dir.path().join("password");
    std::fs::write(&password, "s3cret").unwrap();
    let (mut rx, _m, trigger, task) =
        start(secure_config(&server.endpoint(), &pki, &password), &pki);
    let mut seen = Seen::default();
    let ok = watch(&mut rx, &mut seen, Duration::from_secs(30), |s| {
        s.health.iter().any(|h| h.0.starts_with("down"))
    })
    .await;
    trigger.fire();
    let _ = task.await;
    assert!(ok, "no down report; health: {:?}", seen.health);
    let reason = &seen
        .health
        .iter()
        .find(|h| h.0.starts_with("down"))
        .unwrap()
        .0;
    assert!(reason.contains("not trusted"), "{reason}");
    assert!(
        reason.contains(&pki.join("trusted").display().to_string()),
        "{reason}"
    );
    assert_eq!(seen.last("m", "int32"), None);
    let rejected: Vec<_> = std::fs::read_dir(pki.join("rejected"))
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert_eq!(
        rejected.len(),
        1,
        "the server's certificate is kept in rejected/"
    );
}

/// The two newer policies, each trusted the documented way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aes128_and_aes256_policies_sign_and_encrypt() {
    for (server_policy, policy) in [
        ("Aes128Sha256RsaOaep", "aes128_sha256_rsaoaep"),
        ("Aes256Sha256RsaPss", "aes256_sha256_rsapss"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let server_dir = dir.path().join("server");
        let server = UaServer::start(
            free_port(),
            &[
                "--secure",
                server_dir.to_str().unwrap(),
                "--policy",
                server_policy,
            ],
        );
        let pki = dir.path().join("pki");
        let password = dir.path().join("password");
        std::fs::write(&password, "s3cret").unwrap();
        let config = secure_config_with(&server.endpoint(), &pki, &password, policy);
        let (mut rx, _m, trigger, task) = start(config, &pki);
        let mut seen = Seen::default();
        // Refused first (untrusted), then trusted the documented way.
        let ok = refused_then_trusted(&mut rx, &mut seen, &pki, policy).await;
        trigger.fire();
        let _ = task.await;
        assert!(ok, "{policy}: no value; health: {:?}", seen.health);
        assert_eq!(
            seen.last("m", "int32"),
            Some(&Value::Int(-123456)),
            "{policy}"
        );
    }
}

/// An X.509 user certificate as the identity (made in the test by the server script), on a
/// Basic256Sha256 SignAndEncrypt channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_x509_user_certificate_logs_in() {
    let dir = tempfile::tempdir().unwrap();
    let server_dir = dir.path().join("server");
    let user_dir = dir.path().join("user");
    let server = UaServer::start(
        free_port(),
        &[
            "--secure",
            server_dir.to_str().unwrap(),
            "--user-cert",
            user_dir.to_str().unwrap(),
        ],
    );
    let pki = dir.path().join("pki");
    let config = server_config(&format!(
        "[[opcua]]\nid = \"secure\"\nendpoint = \"{}\"\nsecurity_policy = \"basic256sha256\"\nsecurity_mode = \"sign_and_encrypt\"\nuser_certificate = \"{}\"\nuser_private_key = \"{}\"\npki_dir = \"{}\"\nmachine = \"m\"\n\n  [[opcua.group]]\n  [[opcua.group.node]]\n  node = \"ns=2;s=Int32\"\n  signal = \"int32\"\n  type = \"int\"\n",
        server.endpoint(),
        user_dir.join("user_cert.der").display(),
        user_dir.join("user_key.pem").display(),
        pki.display()
    ));
    let (mut rx, _m, trigger, task) = start(config, &pki);
    let mut seen = Seen::default();
    let ok = refused_then_trusted(&mut rx, &mut seen, &pki, "user certificate").await;
    trigger.fire();
    let _ = task.await;
    assert!(
        ok,
        "no value with a user certificate; health: {:?}",
        seen.health
    );
}

/// The agent's application instance certificate made in the test (by the server script, which
/// refuses sessions from any other client certificate) and given as `client_certificate` and
/// `client_private_key`, on a Basic256Sha256 SignAndEncrypt channel with a user and password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_made_in_the_test_is_the_one_the_agent_shows() {
    let dir = tempfile::tempdir().unwrap();
    let server_dir = dir.path().join("server");
    let client_dir = dir.path().join("client");
    let server = UaServer::start(
        free_port(),
        &[
            "--secure",
            server_dir.to_str().unwrap(),
            "--client-cert",
            client_dir.to_str().unwrap(),
        ],
    );
    let pki = dir.path().join("pki");
    let password = dir.path().join("password");
    std::fs::write(&password, "s3cret").unwrap();
    let config = server_config(&format!(
        "[[opcua]]\nid = \"secure\"\nendpoint = \"{}\"\nsecurity_policy = \"basic256sha256\"\nsecurity_mode = \"sign_and_encrypt\"\nusername = \"operator\"\npassword = {{ file = \"{}\" }}\nclient_certificate = \"{}\"\nclient_private_key = \"{}\"\npki_dir = \"{}\"\nmachine = \"m\"\n\n  [[opcua.group]]\n  [[opcua.group.node]]\n  node = \"ns=2;s=Int32\"\n  signal = \"int32\"\n  type = \"int\"\n",
        server.endpoint(),
        password.display(),
        client_dir.join("client_cert.der").display(),
        client_dir.join("client_key.pem").display(),
        pki.display()
    ));
    let (mut rx, _m, trigger, task) = start(config, &pki);
    let mut seen = Seen::default();
    let ok = refused_then_trusted(&mut rx, &mut seen, &pki, "client certificate").await;
    trigger.fire();
    let _ = task.await;
    assert!(
        ok,
        "no value with the client certificate made in the test; health: {:?}",
        seen.health
    );
    assert_eq!(seen.last("m", "int32"), Some(&Value::Int(-123456)));
    // The agent made no certificate of its own.
    assert!(!pki.join("own").join("cert.der").exists());
}

/// `shopfloor probe ARGS…` with `SHOPFLOOR_OPCUA_PASSWORD` set to `password`: (exit ok,
/// stdout, stderr).
fn probe(args: &[&str], password: Option<&str>) -> (bool, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shopfloor"));
    command.arg("probe").args(args).env_remove("SHOPFLOOR_LOG");
    match password {
        Some(p) => command.env("SHOPFLOOR_OPCUA_PASSWORD", p),
        None => command.env_remove("SHOPFLOOR_OPCUA_PASSWORD"),
    };
    let out = command.output().expect("run shopfloor probe");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn probe_with_node_ids_prints_each_value_and_the_type_to_map_it_with() {
    let server = UaServer::start(free_port(), &[]);
    let (ok, out, err) = probe(
        &[
            &server.endpoint(),
            "ns=2;s=Int32",
            "nsu=urn:shopfloor:test;s=Double",
            "ns=2;s=Int32Array",
            "ns=2;s=Bad",
        ],
        None,
    );
    assert!(ok, "{out}\n{err}");
    // What the server offers, its namespace table and its read limit come first.
    assert!(out.contains("None / None  users: Anonymous"), "{out}");
    assert!(out.contains("    2  urn:shopfloor:test\n"), "{out}");
    assert!(out.contains("MaxNodesPerRead: "), "{out}");
    let node = |id: &str| -> String {
        let start = out
            .find(&format!("\n{id}\n"))
            .unwrap_or_else(|| panic!("no {id} in {out}"));
        let rest = &out[start + 1..];
        rest[..rest.find("\n\n").unwrap_or(rest.len())].to_string()
    };
    let int32 = node("ns=2;s=Int32");
    for line in [
        "  node id:     nsu=urn:shopfloor:test;s=Int32",
        "  status:      Good",
        "  variant:     Int32",
        "  value:       -123456",
        "  data type:   i=6 (Int32)",
        "  config:      node = \"nsu=urn:shopfloor:test;s=Int32\"  type = \"int\"",
    ] {
        assert!(int32.contains(line), "`{line}` not in\n{int32}");
    }
    // The static values carry the server's start time as their source timestamp.
    assert!(int32.contains("  source time: 20"), "{int32}");
    let double = node("nsu=urn:shopfloor:test;s=Double");
    assert!(double.contains("  value:       2.25"), "{double}");
    assert!(double.contains("type = \"float\""), "{double}");
    let array = node("ns=2;s=Int32Array");
    assert!(array.contains("  variant:     Int32[3]"), "{array}");
    assert!(array.contains("  value:       [10, 20, 30]"), "{array}");
    assert!(array.contains("index = 0…2"), "{array}");
    let bad = node("ns=2;s=Bad");
    assert!(bad.contains("  status:      BadSensorFailure"), "{bad}");
    assert!(bad.contains("no value to map"), "{bad}");
    assert!(!bad.contains("type = "), "{bad}");
}

#[test]
fn probe_without_node_ids_lists_the_objects_with_the_ids_to_copy_into_the_config() {
    let server = UaServer::start(free_port(), &[]);
    let (ok, out, err) = probe(&[&server.endpoint()], None);
    assert!(ok, "{out}\n{err}");
    let line = |path: &str| -> &str {
        out.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(path))
            .unwrap_or_else(|| panic!("no {path} in {out}"))
    };
    assert!(
        out.contains("Objects (i=85), 2 levels down, at most 200 nodes"),
        "{out}"
    );
    // Level 1: the test server's object; level 2: its variables, with data type, access level,
    // value and the type to map it with.
    let machine = line("Machine");
    assert!(machine.starts_with("  Object "), "{machine}");
    assert!(
        machine.ends_with(" nsu=urn:shopfloor:test;s=Machine"),
        "{machine}"
    );
    let float = line("Machine/Float");
    assert!(float.starts_with("    Variable "), "{float}");
    assert!(
        float.ends_with(" nsu=urn:shopfloor:test;s=Float  Float  read  1.5  type = \"float\""),
        "{float}"
    );
    // The one node the server lets clients write says so.
    assert!(
        line("Machine/Double").contains("  Double  read/write  2.25  "),
        "{out}"
    );
    let text = line("Machine/String");
    assert!(
        text.contains("String  read  \"运行 AUTO\"  type = \"string\""),
        "{text}"
    );
    let counter = line("Machine/Counter");
    assert!(
        counter.contains(" nsu=urn:shopfloor:test;s=Counter  UInt32  read  "),
        "{counter}"
    );
    assert!(counter.ends_with("type = \"int\""), "{counter}");
    assert!(
        line("Machine/Bad").ends_with("  Double  read  BadSensorFailure"),
        "{out}"
    );
}

/// Browsing from a node given by `--from`, one level down, on a server that hands out at most
/// 40 references per Browse: the probe follows the continuation points with BrowseNext until
/// all 250 items (and the other variables) are listed, each with its browse path, data type,
/// access level and value; `--limit` cuts the listing and says so.
#[test]
fn probe_browses_from_a_start_node_to_a_depth_following_continuation_points() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("services.txt");
    let server = UaServer::start(
        free_port(),
        &[
            "--items",
            "250",
            "--browse-page",
            "40",
            "--services",
            log.to_str().unwrap(),
        ],
    );
    let (ok, out, err) = probe(
        &[
            &server.endpoint(),
            "--from",
            "nsu=urn:shopfloor:test;s=Machine",
            "--depth",
            "1",
            "--limit",
            "1000",
        ],
        None,
    );
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains(
            "Machine (nsu=urn:shopfloor:test;s=Machine), 1 level down, at most 1000 nodes:"
        ),
        "{out}"
    );
    let variables: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("  Variable  "))
        .collect();
    // 250 items, 14 scalars, the array, Uncertain, Bad and Counter.
    assert_eq!(variables.len(), 250 + 14 + 4, "{out}");
    for i in [0, 39, 40, 199, 249] {
        let want = format!(
            "  Variable  Item{i:<20} nsu=urn:shopfloor:test;s=Item{i}  UInt16  read  {i}  type = \"int\""
        );
        assert!(variables.contains(&want.as_str()), "no `{want}` in\n{out}");
    }
    assert!(!out.contains("(more than"), "{out}");
    let services = std::fs::read_to_string(&log).unwrap();
    assert!(
        services
            .lines()
            .filter(|l| *l == "BrowseNextRequest")
            .count()
            >= 6,
        "268 references at 40 a page take 6 BrowseNext: {services}"
    );
    // Cut at 100: said, and the continuation point released.
    let (ok, out, err) = probe(
        &[
            &server.endpoint(),
            "--node",
            "ns=2;s=Machine",
            "--depth",
            "3",
            "--limit",
            "100",
        ],
        None,
    );
    assert!(ok, "{out}\n{err}");
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("  Variable  "))
            .count(),
        100,
        "{out}"
    );
    assert!(
        out.contains("  … (more than 100: browse further down with --from NODE, or raise --limit)"),
        "{out}"
    );
}

/// Writes `section` into a config with the site, the machine `m1` and a data directory, and
/// runs `shopfloor check --plan` on it: (exit ok, stdout, stderr).
fn check_section(dir: &Path, section: &str) -> (bool, String, String) {
    let data = dir.join("data");
    let path = dir.join("shopfloor.toml");
    std::fs::write(
        &path,
        format!(
            "[site]\ncounty = \"wuyi\"\nsector = \"power_tools\"\nenterprise = \"e-probe\"\nname = \"probe\"\n\n\
             [agent]\ndata_dir = \"{}\"\n\n[[machine]]\nid = \"m1\"\nname = \"Machine 1\"\nkind = \"machining_centre\"\ncnc = true\n\n{section}",
            data.display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_shopfloor"))
        .args(["check", "--plan", "-c"])
        .arg(&path)
        .env_remove("SHOPFLOOR_LOG")
        .env("SHOPFLOOR_OPCUA_PASSWORD", "s3cret")
        .output()
        .expect("run shopfloor check");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The section after the probe's listing, from its comment on.
fn printed_section(out: &str) -> &str {
    let at = out
        .find("# A ready [[opcua]] section")
        .unwrap_or_else(|| panic!("no section in\n{out}"));
    &out[at..]
}

/// `--section m1` prints an `[[opcua]]` section for the nodes read, or for the variables
/// browsed, that `shopfloor check` accepts as it is and with which the source reads the values
/// the probe showed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_prints_a_ready_section_that_check_accepts_and_the_source_reads() {
    let server = UaServer::start(free_port(), &[]);
    let dir = tempfile::tempdir().unwrap();
    // Nodes read by id.
    let (ok, out, err) = probe(
        &[
            &server.endpoint(),
            "ns=2;s=Int32",
            "nsu=urn:shopfloor:test;s=Double",
            "ns=2;s=Int32Array",
            "ns=2;s=String",
            "ns=2;s=Bad",
            "--section",
            "m1",
        ],
        None,
    );
    assert!(ok, "{out}\n{err}");
    let section = printed_section(&out).to_string();
    for text in [
        "[[opcua]]\nid = \"opcua-127-0-0-1\"\n",
        &format!("endpoint = \"{}\"\n", server.endpoint()),
        "machine = \"m1\"\n",
        "  node = \"nsu=urn:shopfloor:test;s=Int32\"\n  signal = \"int32\"\n  type = \"int\"\n",
        "  node = \"nsu=urn:shopfloor:test;s=Double\"\n  signal = \"double\"\n  type = \"float\"\n",
        "  node = \"nsu=urn:shopfloor:test;s=Int32Array\"\n  index = 2\n  signal = \"int32_array_2\"\n  type = \"int\"\n",
        "  node = \"nsu=urn:shopfloor:test;s=String\"\n  signal = \"string\"\n  type = \"string\"\n",
        // Bad now, but its data type says what it will be.
        "  node = \"nsu=urn:shopfloor:test;s=Bad\"\n  signal = \"bad\"\n  type = \"float\"\n",
    ] {
        assert!(section.contains(text), "`{text}` not in\n{section}");
    }
    let (ok, plan, err) = check_section(dir.path(), &section);
    assert!(ok, "check refused the probe's section:\n{err}\n{section}");
    assert!(plan.contains("int32_array_2"), "{plan}");
    // The source, given the section, reads what the probe showed.
    let (mut rx, _m, trigger, task) = start(server_config(&section), &dir.path().join("pki"));
    let mut seen = Seen::default();
    let ok = watch(&mut rx, &mut seen, Duration::from_secs(30), |s| {
        s.last("m1", "int32").is_some()
            && s.last("m1", "int32_array_2").is_some()
            && s.last("m1", "string").is_some()
    })
    .await;
    trigger.fire();
    let _ = task.await;
    assert!(ok, "health: {:?}", seen.health);
    assert_eq!(seen.last("m1", "int32"), Some(&Value::Int(-123456)));
    assert_eq!(seen.last("m1", "int32_array_2"), Some(&Value::Int(30)));
    assert_eq!(seen.last("m1", "double"), Some(&Value::Float(2.25)));
    assert_eq!(
        seen.last("m1", "string"),
        Some(&Value::Text("运行 AUTO".into()))
    );

    // Variables browsed: every one gets a node, named after its browse name.
    let (ok, out, err) = probe(
        &[
            &server.endpoint(),
            "--from",
            "ns=2;s=Machine",
            "--depth",
            "1",
            "--section",
            "m1",
        ],
        None,
    );
    assert!(ok, "{out}\n{err}");
    let section = printed_section(&out);
    for signal in [
        "boolean",
        "sbyte",
        "uint64",
        "date_time",
        "localized_text",
        "int32_array_0",
        "uncertain",
        "counter",
    ] {
        assert!(
            section.contains(&format!("  signal = \"{signal}\"\n")),
            "no {signal} in\n{section}"
        );
    }
    let (ok, _, err) = check_section(dir.path(), section);
    assert!(ok, "check refused the probe's section:\n{err}\n{section}");
}

/// `--section m1 --csv FILE` writes the nodes as a nodes file and prints a section whose group
/// names it; `check` accepts the two as they are and plans the same nodes.
#[test]
fn probe_writes_the_nodes_as_a_csv_file_that_the_printed_section_names() {
    let server = UaServer::start(free_port(), &[]);
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("m1.csv");
    let (ok, out, err) = probe(
        &[
            &server.endpoint(),
            "ns=2;s=Int32",
            "ns=2;s=Int32Array",
            "ns=2;s=String",
            "--section",
            "m1",
            "--csv",
            csv.to_str().unwrap(),
        ],
        None,
    );
    assert!(ok, "{out}\n{err}");
    let section = printed_section(&out);
    assert!(
        section.contains(&format!("  nodes_file = \"{}\"", csv.display())),
        "{section}"
    );
    assert!(!section.contains("[[opcua.group.node]]"), "{section}");
    let rows = std::fs::read_to_string(&csv).expect("the probe wrote the nodes file");
    assert_eq!(
        rows,
        "node,signal,type,index\n\
         \"nsu=urn:shopfloor:test;s=Int32\",int32,int,\n\
         \"nsu=urn:shopfloor:test;s=Int32Array\",int32_array_0,int,0\n\
         \"nsu=urn:shopfloor:test;s=Int32Array\",int32_array_1,int,1\n\
         \"nsu=urn:shopfloor:test;s=Int32Array\",int32_array_2,int,2\n\
         \"nsu=urn:shopfloor:test;s=String\",string,string,\n"
    );
    let (ok, plan, err) = check_section(dir.path(), section);
    assert!(ok, "check refused the probe's section:\n{err}\n{section}");
    assert!(
        plan.contains(
            "nsu=urn:shopfloor:test;s=Int32Array[2] → machine m1 int32_array_2, an integer"
        ),
        "{plan}"
    );
}

/// A secured probe's section keeps its security and user, with the password from the
/// environment, and `check` accepts it.
#[test]
fn probe_section_of_a_secure_server_keeps_its_security() {
    let dir = tempfile::tempdir().unwrap();
    let server = UaServer::start(
        free_port(),
        &["--secure", dir.path().join("server").to_str().unwrap()],
    );
    let url = format!(
        "{}?security_policy=basic256sha256&username=operator",
        server.endpoint()
    );
    let pki = dir.path().join("pki");
    let pki_arg = pki.to_str().unwrap();
    let (ok, _, _) = probe(&[&url, "--pki-dir", pki_arg], Some("s3cret"));
    assert!(!ok, "untrusted at first");
    std::fs::create_dir_all(pki.join("trusted")).unwrap();
    for cert in std::fs::read_dir(pki.join("rejected")).unwrap().flatten() {
        std::fs::rename(cert.path(), pki.join("trusted").join(cert.file_name())).unwrap();
    }
    let (ok, out, err) = probe(
        &[
            &url,
            "--pki-dir",
            pki_arg,
            "ns=2;s=UInt16",
            "--section",
            "m1",
        ],
        Some("s3cret"),
    );
    assert!(ok, "{out}\n{err}");
    let section = printed_section(&out);
    for text in [
        "security_policy = \"basic256sha256\"\n",
        "username = \"operator\"\n",
        "security_mode = \"sign_and_encrypt\"\n",
        "password = { env = \"SHOPFLOOR_OPCUA_PASSWORD\" }",
        "  signal = \"uint16\"\n  type = \"int\"\n",
    ] {
        assert!(section.contains(text), "`{text}` not in\n{section}");
    }
    let (ok, _, err) = check_section(dir.path(), section);
    assert!(ok, "check refused the probe's section:\n{err}\n{section}");
}

#[test]
fn probe_calls_only_endpoint_session_read_and_browse_services() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("services.txt");
    let server = UaServer::start(free_port(), &["--services", log.to_str().unwrap()]);
    let (ok, out, err) = probe(&[&server.endpoint()], None);
    assert!(ok, "{out}\n{err}");
    let (ok, out, err) = probe(&[&server.endpoint(), "ns=2;s=Counter"], None);
    assert!(ok, "{out}\n{err}");
    let text = std::fs::read_to_string(&log).unwrap();
    let services: BTreeSet<&str> = text.lines().collect();
    let allowed = [
        "GetEndpointsRequest",
        "CreateSessionRequest",
        "ActivateSessionRequest",
        "ReadRequest",
        "BrowseRequest",
        "BrowseNextRequest",
        "CloseSessionRequest",
        "CloseSecureChannelRequest",
    ];
    let other: Vec<&&str> = services.iter().filter(|s| !allowed.contains(s)).collect();
    assert!(
        other.is_empty(),
        "the probe called {other:?}; all it called: {services:?}"
    );
    for needed in ["GetEndpointsRequest", "ReadRequest", "BrowseRequest"] {
        assert!(
            services.contains(needed),
            "{needed} not seen in {services:?}"
        );
    }
}

#[test]
fn probe_of_a_secure_server_says_how_to_trust_it_then_logs_in() {
    let dir = tempfile::tempdir().unwrap();
    let server = UaServer::start(
        free_port(),
        &["--secure", dir.path().join("server").to_str().unwrap()],
    );
    let url = format!(
        "{}?security_policy=basic256sha256&username=operator",
        server.endpoint()
    );
    let pki = dir.path().join("pki");
    let pki_arg = pki.to_str().unwrap();
    // No password in the environment: said before anything is sent.
    let (ok, _, err) = probe(&[&url, "--pki-dir", pki_arg], None);
    assert!(!ok);
    assert!(err.contains("SHOPFLOOR_OPCUA_PASSWORD"), "{err}");
    // Untrusted: where the certificate went and where it must go.
    let (ok, out, err) = probe(&[&url, "--pki-dir", pki_arg], Some("s3cret"));
    assert!(!ok, "{out}");
    assert!(
        out.contains("Basic256Sha256 / SignAndEncrypt  users: UserName"),
        "{out}"
    );
    assert!(err.contains("not trusted"), "{err}");
    assert!(
        err.contains(&format!("move it to {}", pki.join("trusted").display())),
        "{err}"
    );
    let rejected: Vec<_> = std::fs::read_dir(pki.join("rejected"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    let name = rejected[0].file_name().unwrap();
    std::fs::rename(&rejected[0], pki.join("trusted").join(name)).unwrap();
    // Trusted, wrong password: refused in words.
    let (ok, _, err) = probe(&[&url, "--pki-dir", pki_arg], Some("wrong"));
    assert!(!ok);
    assert!(err.contains("refused the user name, password"), "{err}");
    // Trusted, right password: the node is read over the encrypted session.
    let (ok, out, err) = probe(
        &[&url, "--pki-dir", pki_arg, "ns=2;s=UInt16"],
        Some("s3cret"),
    );
    assert!(ok, "{out}\n{err}");
    assert!(
        out.contains("session: Basic256Sha256 / SignAndEncrypt, user operator"),
        "{out}"
    );
    assert!(out.contains("  value:       54321"), "{out}");
}

#[test]
fn probe_of_an_endpoint_nobody_listens_on_says_so() {
    let port = free_port();
    let (ok, _, err) = probe(&[&format!("opc.tcp://127.0.0.1:{port}/")], None);
    assert!(!ok);
    assert!(err.contains("cannot connect"), "{err}");
}
