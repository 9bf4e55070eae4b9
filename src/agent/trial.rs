//! `shopfloor test`: reads every source of a config once (or listens for a while), through
//! the same source tasks and the same engine as `run`, and reports each field's value or
//! error, the machines' states and the lines that would be written. Nothing is written: no
//! data directory, no spool, no output, no board, and no output secret.

use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::mpsc;

use crate::agent::config::{Config, FieldTarget, SourceRef};
use crate::engine::{Engine, Snapshot};
use crate::metrics::Metrics;
use crate::model::{SourceEvent, Target, Value};
use crate::shutdown;

/// Without `--duration`: how long the sources get to answer once before those that have not
/// are reported as silent.
pub const ONCE_LIMIT: Duration = Duration::from_secs(30);

/// Without `--duration`: how long MQTT brokers are listened to at least (a broker delivers
/// when its machines publish, not when asked).
pub const MQTT_LISTEN: Duration = Duration::from_secs(5);

/// What one device (or broker, or server, or bus meter) did during the test.
#[derive(Debug, Clone, PartialEq)]
enum Heard {
    Up { degraded: Option<String> },
    Down(String),
}

/// Everything a test saw, ready to print.
#[derive(Debug)]
pub struct Report {
    sources: Vec<(SourceRef, Vec<(FieldTarget, String)>)>,
    listeners: Vec<String>,
    heard: HashMap<String, Heard>,
    values: HashMap<(Target, Arc<str>), Value>,
    errors: HashMap<(Target, Arc<str>), String>,
    snapshot: Snapshot,
    lines: Vec<String>,
    listened: Duration,
}

fn target(t: &FieldTarget, signal: &str) -> Option<(Target, Arc<str>)> {
    let target = match t {
        FieldTarget::Machine(m) => Target::Machine(Arc::from(m.as_str())),
        FieldTarget::Meter(m) => Target::Meter(Arc::from(m.as_str())),
        FieldTarget::AnyMachine | FieldTarget::AnyMeter => return None,
    };
    Some((target, Arc::from(signal)))
}

/// Whether a source is polled (asked, so it answers every field at once) rather than heard
/// (an MQTT broker delivers what its machines publish, when they do).
fn polled(source: &SourceRef) -> bool {
    source.kind != "mqtt"
}

impl Report {
    /// Whether everything answered: every source up, every field of a polled source with a
    /// value, no field in error.
    pub fn ok(&self) -> bool {
        self.problems().is_empty()
    }

    /// The failures, one a line, for the summary.
    fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (source, fields) in &self.sources {
            for id in &source.health {
                match self.heard.get(id) {
                    Some(Heard::Up { .. }) => {}
                    Some(Heard::Down(why)) => {
                        out.push(format!("{} {id} is down: {why}", source.kind))
                    }
                    None => out.push(format!("{} {id} did not answer", source.kind)),
                }
            }
            let up = source
                .health
                .iter()
                .all(|id| matches!(self.heard.get(id), Some(Heard::Up { .. })));
            for (t, signal) in fields {
                let Some(key) = target(t, signal) else {
                    continue;
                };
                if let Some(e) = self.errors.get(&key) {
                    out.push(format!("{} {}: {signal}: {e}", source.kind, source.id));
                } else if up && polled(source) && !self.values.contains_key(&key) {
                    out.push(format!("{} {}: {signal}: no value", source.kind, source.id));
                }
            }
        }
        out
    }
}

fn describe_target(t: &Target) -> String {
    match t {
        Target::Machine(m) => format!("machine {m}"),
        Target::Meter(m) => format!("meter {m}"),
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown: std::collections::HashSet<(Target, Arc<str>)> = Default::default();
        for (source, fields) in &self.sources {
            let status: Vec<String> = source
                .health
                .iter()
                .map(|id| {
                    let what = match self.heard.get(id) {
                        Some(Heard::Up { degraded: None }) => "up".to_string(),
                        Some(Heard::Up {
                            degraded: Some(why),
                        }) => format!("answers, but delivers nothing: {why}"),
                        Some(Heard::Down(why)) => format!("DOWN: {why}"),
                        None => "did not answer".to_string(),
                    };
                    if source.health.len() == 1 && *id == source.id {
                        what
                    } else {
                        format!("{id} {what}")
                    }
                })
                .collect();
            let failing = fields
                .iter()
                .filter_map(|(t, signal)| target(t, signal))
                .filter(|k| self.errors.contains_key(k))
                .count();
            let failing = match failing {
                0 => String::new(),
                1 => ", 1 field failing".to_string(),
                n => format!(", {n} fields failing"),
            };
            writeln!(
                f,
                "{} {}: {}{failing}",
                source.kind,
                source.id,
                status.join("; ")
            )?;
            let down = source
                .health
                .iter()
                .all(|id| !matches!(self.heard.get(id), Some(Heard::Up { .. })));
            if down && polled(source) && !fields.is_empty() {
                writeln!(f, "  ({} fields not read)", fields.len())?;
                continue;
            }
            for (t, signal) in fields {
                let Some(key) = target(t, signal) else {
                    continue;
                };
                let name = format!("{} {signal}", describe_target(&key.0));
                match (self.values.get(&key), self.errors.get(&key)) {
                    (_, Some(e)) => writeln!(f, "  {name}: ERROR {e}")?,
                    (Some(v), None) => writeln!(f, "  {name} = {v}")?,
                    (None, None) if polled(source) => writeln!(f, "  {name}: no value")?,
                    (None, None) => writeln!(f, "  {name}: no message")?,
                }
                shown.insert(key);
            }
            if !polled(source) {
                writeln!(
                    f,
                    "  (listened {:.0} s; --duration listens longer)",
                    self.listened.as_secs_f64()
                )?;
            }
        }
        for l in &self.listeners {
            writeln!(f, "{l}")?;
        }
        // Values no configured field names: an MQTT topic whose machine or signal comes from
        // the topic.
        let mut other: BTreeMap<(Target, Arc<str>), &Value> = BTreeMap::new();
        for (k, v) in &self.values {
            if !shown.contains(k) {
                other.insert(k.clone(), v);
            }
        }
        if !other.is_empty() {
            writeln!(f, "values named at run time:")?;
            for ((t, signal), v) in other {
                writeln!(f, "  {} {signal} = {v}", describe_target(&t))?;
            }
        }
        writeln!(f, "machine states:")?;
        if self.snapshot.machines.is_empty() {
            writeln!(f, "  (no machines in the register)")?;
        }
        for m in &self.snapshot.machines {
            writeln!(f, "  {} {}", m.id, m.state.as_str())?;
        }
        writeln!(f, "lines that would be written ({}):", self.lines.len())?;
        for l in &self.lines {
            writeln!(f, "  {l}")?;
        }
        let problems = self.problems();
        if problems.is_empty() {
            write!(f, "ok: every source answered and every field read")
        } else {
            let mut text = String::new();
            for p in &problems {
                let _ = writeln!(text, "  {p}");
            }
            write!(
                f,
                "{} {} found:\n{}",
                problems.len(),
                if problems.len() == 1 {
                    "problem"
                } else {
                    "problems"
                },
                text.trim_end()
            )
        }
    }
}

/// Runs every source of `config` (all but the HJ 212 listeners) once, or for `duration`, and
/// feeds what they deliver to an engine, as `run` does, keeping the lines instead of writing
/// them. The OPC UA clients use `<data_dir>/opcua/pki` when it exists (the agent's trusted
/// servers), else a temporary store.
pub async fn test(
    config: &Config,
    duration: Option<Duration>,
) -> Result<Report, super::StartError> {
    let metrics = Metrics::new();
    let brokers = super::prepare_brokers(config, &metrics)?;
    let agent_pki = config.agent.data_dir.join("opcua/pki");
    let temporary = (!agent_pki.is_dir() && !config.opcua.is_empty())
        .then(|| std::env::temp_dir().join(format!("shopfloor-test-pki-{}", std::process::id())));
    let pki = temporary.clone().unwrap_or(agent_pki);
    let (trigger, stop) = shutdown::channel();
    let (events_tx, mut events) = mpsc::channel(config.event_queue());
    let sources = config.source_fields();
    let started = tokio::time::Instant::now();
    let now = Timestamp::now();
    let polled_tasks = super::polled_sources(config, brokers, pki, &events_tx, &metrics, &stop);
    drop(events_tx);
    let handles: Vec<_> = polled_tasks.tasks.into_iter().map(tokio::spawn).collect();

    let mut engine = Engine::new(config, now);
    let mut lines = Vec::new();
    engine.opening_lines(&mut lines);
    let mut report = Report {
        sources,
        listeners: config
            .hj212
            .iter()
            .map(|l| {
                format!(
                    "hj212 {}: listens on {} (not exercised by test: loggers call in)",
                    l.id, l.listen
                )
            })
            .chain(config.dial_in.iter().map(|l| {
                format!(
                    "dial_in {}: listens on {} for {} DTU(s) (not exercised by test: DTUs call in; see `shopfloor dtu listen`)",
                    l.id,
                    l.listen,
                    l.dtus.len()
                )
            }))
            .collect(),
        heard: HashMap::new(),
        values: HashMap::new(),
        errors: HashMap::new(),
        snapshot: Snapshot::default(),
        lines: Vec::new(),
        listened: Duration::ZERO,
    };
    let has_brokers = report.sources.iter().any(|(s, _)| !polled(s));
    let deadline = started + duration.unwrap_or(ONCE_LIMIT);
    loop {
        if duration.is_none()
            && (!has_brokers || started.elapsed() >= MQTT_LISTEN)
            && report.answered_once()
        {
            break;
        }
        let wake = if duration.is_none() && has_brokers && report.answered_once() {
            deadline.min(started + MQTT_LISTEN)
        } else {
            deadline
        };
        let event = tokio::select! {
            e = events.recv() => e,
            _ = tokio::time::sleep_until(wake) => {
                if wake >= deadline { break } else { continue }
            }
        };
        let Some(event) = event else { break };
        report.record(&event);
        engine.on_event(event, &mut lines);
    }
    report.listened = started.elapsed();
    trigger.fire();
    for h in handles {
        if tokio::time::timeout(Duration::from_secs(5), h)
            .await
            .is_err()
        {
            tracing::warn!("a source did not stop within 5 s");
        }
    }
    if let Some(dir) = temporary {
        let _ = std::fs::remove_dir_all(dir);
    }
    let end = Timestamp::now();
    engine.tick(end, &mut lines);
    report.snapshot = engine.snapshot(end, 0);
    report.lines = lines;
    Ok(report)
}

impl Report {
    fn record(&mut self, event: &SourceEvent) {
        match event {
            SourceEvent::Samples(samples) => {
                for s in samples {
                    let key = (s.target.clone(), s.signal.clone());
                    self.errors.remove(&key);
                    self.values.insert(key, s.value.clone());
                }
            }
            SourceEvent::DeviceUp { device, .. } => {
                self.heard
                    .insert(device.to_string(), Heard::Up { degraded: None });
            }
            SourceEvent::DeviceDown { device, reason, .. } => {
                self.heard
                    .insert(device.to_string(), Heard::Down(reason.clone()));
            }
            SourceEvent::DeviceDegraded { device, reason, .. } => {
                self.heard.insert(
                    device.to_string(),
                    Heard::Up {
                        degraded: reason.clone(),
                    },
                );
            }
            SourceEvent::FieldErrors { errors, .. } => {
                for e in errors {
                    self.errors
                        .insert((e.target.clone(), e.signal.clone()), e.error.clone());
                }
            }
            SourceEvent::Offline { .. } | SourceEvent::Alive { .. } | SourceEvent::Outlet(_) => {}
        }
    }

    /// Whether every polled source has been heard from, and every field of each one that is
    /// up has a value or an error: the test has seen one answer of everything.
    fn answered_once(&self) -> bool {
        self.sources
            .iter()
            .filter(|(s, _)| polled(s))
            .all(|(s, fields)| {
                let mut up = true;
                for id in &s.health {
                    match self.heard.get(id) {
                        None => return false,
                        Some(Heard::Down(_)) => up = false,
                        Some(Heard::Up { .. }) => {}
                    }
                }
                !up || fields.iter().all(|(t, signal)| {
                    target(t, signal).is_none_or(|k| {
                        self.values.contains_key(&k) || self.errors.contains_key(&k)
                    })
                })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secrets;

    const SITE: &str = "[site]\ncounty = \"yk\"\nsector = \"doors\"\nenterprise = \"e1\"\n[[machine]]\nid = \"m1\"\nkind = \"lathe\"\ncnc = true\n";

    fn report(sources: Vec<(SourceRef, Vec<(FieldTarget, String)>)>) -> Report {
        Report {
            sources,
            listeners: Vec::new(),
            heard: HashMap::new(),
            values: HashMap::new(),
            errors: HashMap::new(),
            snapshot: Snapshot::default(),
            lines: Vec::new(),
            listened: Duration::from_secs(5),
        }
    }

    fn source(kind: &'static str, id: &str) -> SourceRef {
        SourceRef {
            kind,
            id: id.into(),
            health: vec![id.into()],
        }
    }

    fn field(signal: &str) -> (FieldTarget, String) {
        (FieldTarget::Machine("m1".into()), signal.into())
    }

    fn sample(signal: &str) -> SourceEvent {
        SourceEvent::Samples(vec![crate::model::Sample {
            target: Target::Machine(Arc::from("m1")),
            signal: Arc::from(signal),
            value: Value::Int(7),
            at: Timestamp::UNIX_EPOCH,
        }])
    }

    fn up(device: &str) -> SourceEvent {
        SourceEvent::DeviceUp {
            device: Arc::from(device),
            at: Timestamp::UNIX_EPOCH,
        }
    }

    #[test]
    fn a_polled_field_without_a_value_fails_the_test_an_unheard_mqtt_field_does_not() {
        let mut r = report(vec![
            (source("modbus", "box1"), vec![field("a"), field("b")]),
            (source("mqtt", "broker"), vec![field("c")]),
        ]);
        assert!(!r.answered_once());
        for e in [up("box1"), up("broker"), sample("a")] {
            r.record(&e);
        }
        // box1 answered `a` but not yet `b`: not done, and `b` is a problem.
        assert!(!r.answered_once());
        assert_eq!(r.problems(), vec!["modbus box1: b: no value".to_string()]);
        r.record(&SourceEvent::FieldErrors {
            device: Arc::from("box1"),
            at: Timestamp::UNIX_EPOCH,
            errors: vec![crate::model::FieldError {
                target: Target::Machine(Arc::from("m1")),
                signal: Arc::from("b"),
                kind: "exception",
                error: "exception Illegal data address".into(),
            }],
        });
        assert!(r.answered_once());
        assert_eq!(
            r.problems(),
            vec!["modbus box1: b: exception Illegal data address".to_string()]
        );
        let text = r.to_string();
        assert!(
            text.contains("modbus box1: up, 1 field failing\n"),
            "{text}"
        );
        assert!(text.contains("  machine m1 a = 7\n"), "{text}");
        assert!(text.contains("  machine m1 b: ERROR exception Illegal data address\n"));
        // The broker's field had no message: said, not a problem.
        assert!(text.contains("  machine m1 c: no message\n"), "{text}");
        // A value clears the field's error.
        r.record(&sample("b"));
        assert!(r.ok(), "{:?}", r.problems());
    }

    #[test]
    fn a_source_that_never_answers_or_goes_down_fails_the_test() {
        let mut r = report(vec![
            (source("s7", "plc"), vec![field("a")]),
            (source("melsec", "fx"), vec![field("b")]),
        ]);
        r.record(&SourceEvent::DeviceDown {
            device: Arc::from("plc"),
            at: Timestamp::UNIX_EPOCH,
            reason: "cannot connect".into(),
        });
        assert_eq!(
            r.problems(),
            vec![
                "s7 plc is down: cannot connect".to_string(),
                "melsec fx did not answer".to_string()
            ]
        );
        assert!(
            r.to_string()
                .contains("s7 plc: DOWN: cannot connect\n  (1 fields not read)")
        );
    }

    /// `shopfloor test` resolves the sources' secrets, not the outputs' or the board's: a
    /// missing store token or write token passes, a missing broker password does not.
    #[test]
    fn only_the_sources_secrets_are_resolved_for_test() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("t.toml");
        let missing = "{ env = \"SHOPFLOOR_TEST_UNSET_SECRET_9F2\" }";
        let outputs = format!(
            "{SITE}[web]\nwrite_token = {missing}\n[[influx]]\nurl = \"http://127.0.0.1:8086\"\norg = \"o\"\nbucket = \"b\"\ntoken = {missing}\n"
        );
        std::fs::write(&path, &outputs).expect("write");
        assert!(crate::agent::config::load_resolving(&path, Secrets::Sources).is_ok());
        assert!(crate::agent::config::load_resolving(&path, Secrets::None).is_ok());
        let all = crate::agent::config::load_resolving(&path, Secrets::All)
            .expect_err("check resolves the token");
        assert!(all.to_string().contains("token"), "{all}");
        let broker = format!(
            "{outputs}[[mqtt]]\nid = \"b\"\naddress = \"127.0.0.1:1883\"\nusername = \"u\"\npassword = {missing}\n  [[mqtt.topic]]\n  pattern = \"a/b\"\n  machine = \"m1\"\n  format = \"json\"\n  field = [{{ path = \"x\", signal = \"x\", type = \"int\" }}]\n"
        );
        std::fs::write(&path, &broker).expect("write");
        let sources = crate::agent::config::load_resolving(&path, Secrets::Sources)
            .expect_err("test resolves the broker's password");
        assert_eq!(sources.problems.len(), 1, "{sources}");
        assert!(
            sources.problems[0]
                .message
                .starts_with("password: environment variable"),
            "{sources}"
        );
        if let Err(d) = crate::agent::config::load_resolving(&path, Secrets::None) {
            panic!("{d}");
        }
    }
}
