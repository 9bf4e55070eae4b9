//! The engine: one owner for all machine state.
//!
//! It is plain synchronous code. [`Engine::on_event`] takes what a source delivered and
//! [`Engine::tick`] advances time; both append line-protocol records to an output buffer. The
//! clock is always passed in, so tests drive the engine with fabricated samples and a fake clock.
//! [`run`] is the thin async shell that feeds it from the sources' channel.

pub mod state;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::config::{Config, State, StateRules};
use std::sync::atomic::Ordering;

use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

/// The shortest interval between two snapshots for the board.
const SNAPSHOT_EVERY: Duration = Duration::from_millis(500);

/// How often the engine writes the `agent` health line.
const AGENT_LINE_EVERY: SignedDuration = SignedDuration::from_secs(60);
use crate::sink::line_protocol::{LineBuilder, tag_prefix};
use crate::source::{Sample, SourceEvent, Target, Value};

/// One machine as the engine sees it.
#[derive(Debug)]
struct MachineTrack {
    id: Arc<str>,
    name: String,
    kind: String,
    cnc: bool,
    rules: Option<StateRules>,
    /// `signal,county=…,machine=…` ready for fields.
    signal_prefix: String,
    /// `machine_state,county=…,machine=…` ready for fields.
    state_prefix: String,
    signals: HashMap<Arc<str>, Value>,
    last_data: Option<Timestamp>,
    state: State,
    since: Timestamp,
    /// A candidate state waiting out the rule set's `min_duration`.
    pending: Option<(State, Timestamp)>,
    /// When a line for this machine was last written, for the heartbeat.
    last_written: Timestamp,
    /// The timestamp of the last heartbeat line, which a later-stamped change may have to
    /// correct (see `change_state`).
    last_heartbeat: Option<Timestamp>,
}

/// A device's health, from its up and down events.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceHealth {
    pub id: Arc<str>,
    pub up: bool,
    pub since: Option<Timestamp>,
    pub reason: Option<String>,
}

/// What the board and the terminal summary show; published after every change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub at: Option<Timestamp>,
    pub machines: Vec<MachineView>,
    pub devices: Vec<DeviceHealth>,
    /// Records the engine could not hand to the spool because its queue was full.
    pub records_dropped: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MachineView {
    pub id: Arc<str>,
    pub name: String,
    pub kind: String,
    pub cnc: bool,
    pub state: State,
    pub since: Timestamp,
    pub signals: Vec<(Arc<str>, Value)>,
}

/// The engine. See the module documentation.
#[derive(Debug)]
pub struct Engine {
    machines: Vec<MachineTrack>,
    by_id: HashMap<Arc<str>, usize>,
    /// Meter id → `signal,…,meter=…,carrier=…` prefix.
    meters: HashMap<Arc<str>, String>,
    devices: Vec<DeviceHealth>,
    offline_after: SignedDuration,
    heartbeat: SignedDuration,
    unknown_targets: u64,
    /// `agent,county=…,sector=…,enterprise=…`
    agent_prefix: String,
}

impl Engine {
    /// Every registered machine starts `offline` at `now`: until it delivers data, nothing is
    /// known about it.
    pub fn new(config: &Config, now: Timestamp) -> Self {
        let site = &config.site;
        let base = [
            ("county", site.county.as_str()),
            ("sector", site.sector.as_str()),
            ("enterprise", site.enterprise.as_str()),
        ];
        let machines: Vec<MachineTrack> = config
            .machines
            .iter()
            .map(|m| {
                let cnc = if m.cnc { "true" } else { "false" };
                let tags: Vec<(&str, &str)> = base
                    .iter()
                    .copied()
                    .chain([
                        ("machine", m.id.as_str()),
                        ("kind", m.kind.as_str()),
                        ("cnc", cnc),
                    ])
                    .collect();
                MachineTrack {
                    id: Arc::from(m.id.as_str()),
                    name: m.name.clone(),
                    kind: m.kind.clone(),
                    cnc: m.cnc,
                    rules: state::rules_for(m, &config.state_rules).cloned(),
                    signal_prefix: tag_prefix("signal", &tags),
                    state_prefix: tag_prefix("machine_state", &tags),
                    signals: HashMap::new(),
                    last_data: None,
                    state: State::Offline,
                    since: now,
                    pending: None,
                    last_written: Timestamp::UNIX_EPOCH,
                    last_heartbeat: None,
                }
            })
            .collect();
        let by_id = machines
            .iter()
            .enumerate()
            .map(|(i, m)| (m.id.clone(), i))
            .collect();
        let meters = config
            .meters
            .iter()
            .map(|m| {
                let tags: Vec<(&str, &str)> = base
                    .iter()
                    .copied()
                    .chain([("meter", m.id.as_str()), ("carrier", m.carrier.as_str())])
                    .collect();
                (Arc::from(m.id.as_str()), tag_prefix("signal", &tags))
            })
            .collect();
        let devices = config
            .modbus
            .iter()
            .map(|d| DeviceHealth {
                id: Arc::from(d.id.as_str()),
                up: false,
                since: None,
                reason: Some("not polled yet".into()),
            })
            .collect();
        Engine {
            machines,
            by_id,
            meters,
            devices,
            offline_after: to_signed(config.agent.offline_after),
            heartbeat: to_signed(config.agent.heartbeat),
            unknown_targets: 0,
            agent_prefix: tag_prefix("agent", &base),
        }
    }

    /// Takes one event from a source; appends the records it causes to `out`.
    pub fn on_event(&mut self, event: SourceEvent, out: &mut Vec<String>) {
        match event {
            SourceEvent::Samples(samples) => self.on_samples(samples, out),
            SourceEvent::DeviceUp { device, at } => self.set_device(&device, true, at, None),
            SourceEvent::DeviceDown { device, at, reason } => {
                self.set_device(&device, false, at, Some(reason))
            }
        }
    }

    fn set_device(&mut self, id: &str, up: bool, at: Timestamp, reason: Option<String>) {
        if let Some(d) = self.devices.iter_mut().find(|d| &*d.id == id) {
            d.up = up;
            d.since = Some(at);
            d.reason = reason;
        }
    }

    fn on_samples(&mut self, samples: Vec<Sample>, out: &mut Vec<String>) {
        // Samples of one poll arrive together; one `signal` line per target and timestamp.
        let mut start = 0;
        while start < samples.len() {
            let (target, at) = (&samples[start].target, samples[start].at);
            let end = samples[start..]
                .iter()
                .position(|s| s.target != *target || s.at != at)
                .map_or(samples.len(), |n| start + n);
            let group = &samples[start..end];
            match target {
                Target::Machine(id) => self.machine_samples(id, at, group, out),
                Target::Meter(id) => match self.meters.get(id) {
                    Some(prefix) => {
                        let line = group.iter().fold(LineBuilder::with_prefix(prefix), |b, s| {
                            b.value(&s.signal, &s.value)
                        });
                        out.extend(line.finish(at));
                    }
                    None => self.unknown_target(id),
                },
            }
            start = end;
        }
    }

    fn unknown_target(&mut self, id: &str) {
        self.unknown_targets += 1;
        if self.unknown_targets.is_power_of_two() {
            warn!(
                target = id,
                count = self.unknown_targets,
                "samples for a machine or meter that is not registered"
            );
        }
    }

    fn machine_samples(
        &mut self,
        id: &Arc<str>,
        at: Timestamp,
        group: &[Sample],
        out: &mut Vec<String>,
    ) {
        let Some(&index) = self.by_id.get(id) else {
            self.unknown_target(id);
            return;
        };
        let m = &mut self.machines[index];
        let line = group
            .iter()
            .fold(LineBuilder::with_prefix(&m.signal_prefix), |b, s| {
                b.value(&s.signal, &s.value)
            });
        out.extend(line.finish(at));
        for s in group {
            m.signals.insert(s.signal.clone(), s.value.clone());
        }
        m.last_data = Some(m.last_data.map_or(at, |t| t.max(at)));
        let candidate = match &m.rules {
            Some(rules) => state::evaluate(rules, &m.signals),
            // Without rules the engine can only say the machine delivers data.
            None => State::Idle,
        };
        let min = m
            .rules
            .as_ref()
            .map_or(SignedDuration::ZERO, |r| to_signed(r.min_duration));
        if candidate == m.state {
            m.pending = None;
            return;
        }
        let began = match m.pending {
            Some((state, began)) if state == candidate => began,
            _ => at,
        };
        if at.duration_since(began) >= min {
            change_state(m, candidate, began, out);
        } else {
            m.pending = Some((candidate, began));
        }
    }

    /// Advances the clock: machines without data for `offline_after` go offline, and every
    /// machine's state line is repeated once per heartbeat.
    pub fn tick(&mut self, now: Timestamp, out: &mut Vec<String>) {
        for m in &mut self.machines {
            if m.state != State::Offline {
                let deadline = m.last_data.unwrap_or(m.since) + self.offline_after;
                if now >= deadline {
                    change_state(m, State::Offline, deadline.max(m.since), out);
                }
            }
            if now.duration_since(m.last_written) >= self.heartbeat {
                out.extend(heartbeat_line(m, now));
                m.last_written = now;
                m.last_heartbeat = Some(now);
            }
        }
    }

    /// The per-minute `agent` line: the agent's own health, so the county sees a gateway that
    /// is alive but blind (devices down) or alive but cut off (spool growing).
    pub fn agent_line(&self, now: Timestamp, metrics: &Metrics) -> Option<String> {
        let up = self.devices.iter().filter(|d| d.up).count();
        let sum = |name: &str| metrics.sum(name) as i64;
        LineBuilder::with_prefix(&self.agent_prefix)
            .int("devices_total", self.devices.len() as i64)
            .int("devices_up", up as i64)
            .int("poll_errors", sum("shopfloor_poll_errors_total"))
            .int("spool_bytes", sum("shopfloor_spool_bytes"))
            .int("spool_lines", sum("shopfloor_spool_lines"))
            .int("dropped_lines", sum("shopfloor_spool_dropped_lines"))
            .int("records_dropped", sum("shopfloor_records_dropped_total"))
            .int("lag_s", sum("shopfloor_spool_oldest_age_seconds"))
            .int("sent_lines", sum("shopfloor_output_lines_total"))
            .finish(now)
    }

    pub fn snapshot(&self, now: Timestamp, records_dropped: u64) -> Snapshot {
        Snapshot {
            at: Some(now),
            machines: self
                .machines
                .iter()
                .map(|m| {
                    let mut signals: Vec<_> = m
                        .signals
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    signals.sort_by(|a, b| a.0.cmp(&b.0));
                    MachineView {
                        id: m.id.clone(),
                        name: m.name.clone(),
                        kind: m.kind.clone(),
                        cnc: m.cnc,
                        state: m.state,
                        since: m.since,
                        signals,
                    }
                })
                .collect(),
            devices: self.devices.clone(),
            records_dropped,
        }
    }
}

fn heartbeat_line(m: &MachineTrack, at: Timestamp) -> Option<String> {
    LineBuilder::with_prefix(&m.state_prefix)
        .string("state", m.state.as_str())
        .int("code", m.state.code())
        .float(
            "state_s",
            seconds(at.duration_since(m.since).max(SignedDuration::ZERO)),
        )
        .finish(at)
}

/// Writes a state change stamped `at`, when the new state began. That can be earlier than the
/// last heartbeat (a poll result still in the queue when the heartbeat was written, or a state
/// waiting out `min_duration`); the heartbeat then stated the old state for a moment that
/// belongs to the new one. It is rewritten with the same timestamp, which overwrites it in the
/// store, so the stored timeline never contradicts itself.
fn change_state(m: &mut MachineTrack, to: State, at: Timestamp, out: &mut Vec<String>) {
    let previous = m.state;
    let previous_s = seconds(at.duration_since(m.since).max(SignedDuration::ZERO));
    info!(machine = %m.id, from = %previous, to = %to, "state change");
    let line = LineBuilder::with_prefix(&m.state_prefix)
        .string("state", to.as_str())
        .int("code", to.code())
        .string("previous", previous.as_str())
        .float("previous_s", previous_s);
    out.extend(line.finish(at));
    m.state = to;
    m.since = at;
    m.pending = None;
    match m.last_heartbeat {
        Some(hb) if hb >= at => out.extend(heartbeat_line(m, hb)),
        _ => m.last_written = at,
    }
}

fn seconds(d: SignedDuration) -> f64 {
    d.as_secs_f64()
}

fn to_signed(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

/// Feeds the engine from the sources until shutdown, hands records to the spool and publishes
/// snapshots. Records go to the spool with `try_send`: the engine never waits for a sink.
pub async fn run(
    mut engine: Engine,
    mut events: mpsc::Receiver<SourceEvent>,
    records: std::sync::mpsc::SyncSender<Vec<String>>,
    snapshots: watch::Sender<Snapshot>,
    metrics: Metrics,
    mut shutdown: Shutdown,
) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let dropped = metrics.counter(
        "shopfloor_records_dropped_total",
        "Records the engine could not hand to the spool because its queue was full.",
        &[],
    );
    let unknown = metrics.counter(
        "shopfloor_unknown_target_samples_total",
        "Samples for machines or meters that are not registered.",
        &[],
    );
    let mut out = Vec::new();
    let mut next_agent_line = Timestamp::now();
    let mut last_snapshot = None;
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => engine.on_event(event, &mut out),
                None => break,
            },
            _ = ticker.tick() => {
                let now = Timestamp::now();
                engine.tick(now, &mut out);
                if now >= next_agent_line {
                    out.extend(engine.agent_line(now, &metrics));
                    next_agent_line = now + AGENT_LINE_EVERY;
                }
            }
            _ = shutdown.wait() => break,
        }
        unknown.store(engine.unknown_targets, Ordering::Relaxed);
        if !out.is_empty() {
            let batch = std::mem::take(&mut out);
            if let Err(std::sync::mpsc::TrySendError::Full(batch)) = records.try_send(batch) {
                let n = dropped.fetch_add(batch.len() as u64, Ordering::Relaxed);
                warn!(
                    dropped = n + batch.len() as u64,
                    "spool queue full: records dropped"
                );
            }
        }
        // A snapshot clones every machine's signals: at hundreds of poll results a second that
        // was most of the agent's CPU, so the board's view is refreshed at most every
        // SNAPSHOT_EVERY (the 1 s tick always publishes the latest).
        if last_snapshot.is_none_or(|t: std::time::Instant| t.elapsed() >= SNAPSHOT_EVERY) {
            let total_dropped = dropped.load(Ordering::Relaxed);
            snapshots.send_replace(engine.snapshot(Timestamp::now(), total_dropped));
            last_snapshot = Some(std::time::Instant::now());
        }
    }
    // Whatever the last event produced still goes to the spool.
    if !out.is_empty() {
        let _ = records.try_send(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;

    const CONFIG: &str = r#"
[site]
county = "yk"
sector = "doors"
enterprise = "e1"

[agent]
offline_after = "10s"
heartbeat = "60s"

[[machine]]
id = "cnc01"
kind = "machining_centre"
cnc = true

[[machine]]
id = "press01"
kind = "press"
cnc = false

[[state_rules]]
kinds = ["machining_centre"]
min_duration = "2s"
rule = [
  { state = "alarm", when = [{ signal = "alarm_code", op = "!=", value = 0 }] },
  { state = "running", when = [{ signal = "run", op = "==", value = 1 }] },
]
"#;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn poll(machine: &str, at: Timestamp, run: i64, alarm: i64) -> SourceEvent {
        let m: Arc<str> = Arc::from(machine);
        SourceEvent::Samples(vec![
            Sample {
                target: Target::Machine(m.clone()),
                signal: Arc::from("run"),
                value: Value::Int(run),
                at,
            },
            Sample {
                target: Target::Machine(m),
                signal: Arc::from("alarm_code"),
                value: Value::Int(alarm),
                at,
            },
        ])
    }

    fn engine() -> Engine {
        Engine::new(&load_str(CONFIG, "test.toml").unwrap(), t(0))
    }

    fn state_lines(out: &[String]) -> Vec<&String> {
        out.iter()
            .filter(|l| l.starts_with("machine_state"))
            .collect()
    }

    #[test]
    fn signals_become_one_line_per_poll_with_the_machine_tags() {
        let mut e = engine();
        let mut out = Vec::new();
        e.on_event(poll("cnc01", t(1), 1, 0), &mut out);
        assert_eq!(
            out[0],
            "signal,county=yk,sector=doors,enterprise=e1,machine=cnc01,kind=machining_centre,cnc=true run=1i,alarm_code=0i 1700000001000000000"
        );
    }

    #[test]
    fn a_state_change_waits_out_min_duration_and_is_stamped_when_it_began() {
        let mut e = engine();
        let mut out = Vec::new();
        // First data: running is a candidate at t=1 but must hold 2 s.
        e.on_event(poll("cnc01", t(1), 1, 0), &mut out);
        assert!(state_lines(&out).is_empty());
        e.on_event(poll("cnc01", t(2), 1, 0), &mut out);
        assert!(state_lines(&out).is_empty());
        e.on_event(poll("cnc01", t(3), 1, 0), &mut out);
        // Held from t=1 to t=3: taken, stamped t=1, previous offline since t=0 → 1 s.
        let lines = state_lines(&out);
        assert_eq!(lines.len(), 1);
        assert!(lines[0].ends_with(
            " state=\"running\",code=1i,previous=\"offline\",previous_s=1.0 1700000001000000000"
        ));
        // A one-poll alarm blip at t=4 is not taken (back to running at t=5).
        out.clear();
        e.on_event(poll("cnc01", t(4), 1, 7), &mut out);
        e.on_event(poll("cnc01", t(5), 1, 0), &mut out);
        assert!(state_lines(&out).is_empty());
    }

    #[test]
    fn silence_makes_a_machine_offline_at_the_deadline() {
        let mut e = engine();
        let mut out = Vec::new();
        for s in 1..=3 {
            e.on_event(poll("cnc01", t(s), 1, 0), &mut out);
        }
        out.clear();
        // Last data at t=3, offline_after 10 s: still running at t=12, offline from t=13.
        e.tick(t(12), &mut out);
        assert!(
            !out.iter()
                .any(|l| l.contains("machine=cnc01") && l.contains("offline"))
        );
        e.tick(t(14), &mut out);
        let change = state_lines(&out)
            .into_iter()
            .find(|l| l.contains("machine=cnc01") && l.contains("previous="))
            .unwrap();
        // Running from t=1 to t=13 = 12 s.
        assert!(change.ends_with(
            " state=\"offline\",code=0i,previous=\"running\",previous_s=12.0 1700000013000000000"
        ));
    }

    #[test]
    fn machines_without_a_source_stay_offline_and_still_get_heartbeats() {
        let mut e = engine();
        let mut out = Vec::new();
        e.tick(t(0), &mut out);
        let press: Vec<_> = out
            .iter()
            .filter(|l| l.contains("machine=press01"))
            .collect();
        assert_eq!(press.len(), 1);
        assert!(press[0].contains("state=\"offline\",code=0i,state_s=0.0"));
        out.clear();
        e.tick(t(30), &mut out);
        assert!(
            out.iter().all(|l| !l.contains("machine=press01")),
            "no heartbeat before 60 s"
        );
        e.tick(t(60), &mut out);
        assert!(
            out.iter()
                .any(|l| l.contains("machine=press01") && l.contains("state_s=60.0"))
        );
    }

    #[test]
    fn a_heartbeat_contradicted_by_an_earlier_change_is_rewritten() {
        let mut e = engine();
        let mut out = Vec::new();
        // Heartbeat at t=0 says offline; then a poll stamped t=0 (still in the queue when the
        // heartbeat was written) shows an alarm. min_duration is 2 s, so feed t=0..2.
        e.tick(t(0), &mut out);
        out.clear();
        for s in 0..=2 {
            e.on_event(poll("cnc01", t(s), 0, 9), &mut out);
        }
        let cnc: Vec<_> = state_lines(&out)
            .into_iter()
            .filter(|l| l.contains("cnc01"))
            .collect();
        assert_eq!(cnc.len(), 2, "{cnc:?}");
        assert!(cnc[0].ends_with(
            "state=\"alarm\",code=4i,previous=\"offline\",previous_s=0.0 1700000000000000000"
        ));
        // The heartbeat at t=0 is written again, now saying alarm.
        assert!(cnc[1].ends_with("state=\"alarm\",code=4i,state_s=0.0 1700000000000000000"));
    }

    #[test]
    fn the_agent_line_reports_devices_and_spool_from_the_metrics() {
        let cfg = load_str(
            &format!(
                "{CONFIG}\n[[modbus]]\nid = \"a\"\naddress = \"h:502\"\n[[modbus]]\nid = \"b\"\naddress = \"h:502\"\n"
            ),
            "test.toml",
        )
        .unwrap();
        let mut e = Engine::new(&cfg, t(0));
        e.on_event(
            SourceEvent::DeviceUp {
                device: Arc::from("a"),
                at: t(1),
            },
            &mut Vec::new(),
        );
        let m = Metrics::new();
        m.counter(
            "shopfloor_poll_errors_total",
            "",
            &[("device", "b"), ("kind", "timeout")],
        )
        .store(3, Ordering::Relaxed);
        m.gauge("shopfloor_spool_bytes", "", &[])
            .store(2048, Ordering::Relaxed);
        let line = e.agent_line(t(60), &m).unwrap();
        assert!(
            line.starts_with("agent,county=yk,sector=doors,enterprise=e1 "),
            "{line}"
        );
        assert!(
            line.contains("devices_total=2i,devices_up=1i,poll_errors=3i,spool_bytes=2048i"),
            "{line}"
        );
    }

    #[test]
    fn samples_for_unregistered_machines_are_counted_not_written() {
        let mut e = engine();
        let mut out = Vec::new();
        e.on_event(poll("ghost", t(1), 1, 0), &mut out);
        assert!(out.is_empty());
        assert_eq!(e.unknown_targets, 1);
    }
}
