//! The engine: one owner for all machine state, and the programme's indicators.
//!
//! It is plain synchronous code. [`Engine::on_event`] takes what a source delivered,
//! [`Engine::tick`] advances time and [`Engine::flush`] writes the window totals; all append
//! line-protocol records to an output buffer. The clock is always passed in, so tests drive the
//! engine with fabricated samples and a fake clock. [`run`] is the thin async shell that feeds
//! it from the sources' channel, flushes it on a timer and saves its accumulators.
//!
//! [`run`] hands the records to the spool in batches (by size, [`BATCH_LINES`], or time,
//! [`BATCH_LINGER`]) and, when the spool is slower than the sources, *waits* for room in the
//! spool queue instead of dropping: the wait is one branch of its `select!` loop, so while it
//! lasts the engine takes no events (the sources' channel fills, which holds the MQTT source
//! back and is the Modbus results' bounded buffer) but still keeps its clock (ticks, window
//! flushes, state saves), publishes the board's snapshot and answers its signal queries. Why
//! that shape and not another is in [`run`]'s documentation.
//!
//! What it writes (DESIGN.md, "Data contract"): `signal` and `machine_state` as data arrives;
//! per window (hour, shift, day, month) `machine_time` per machine, `fleet` per enterprise,
//! `energy` per meter, and `green` per enterprise for days and months, each with the window's
//! start as timestamp and rewritten while the window is open.

pub mod alerts;
pub mod calendar;
pub mod config;
pub mod energy;
pub mod green;
pub mod indicators;
mod machine;
mod meter;
pub mod outlet;
pub mod persist;
pub mod signals;
pub mod state;
pub mod timemodel;
pub mod windows;

#[cfg(test)]
mod tests_indicators;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, warn};

use crate::engine::config::ValueAddedMethod;
use crate::line_protocol::contract::{
    self, MEASUREMENT_AGENT, MEASUREMENT_FLEET, MEASUREMENT_GREEN, MEASUREMENT_GREEN_ALERT,
    TAG_COUNTY, TAG_EL_METHOD, TAG_ENTERPRISE, TAG_INDICATOR, TAG_SECTOR, TAG_SHIFT, TAG_VA_METHOD,
    TAG_WINDOW,
};
use crate::line_protocol::{LineBuilder, tag_prefix};
use crate::metrics::Metrics;
use crate::model::Carrier;
use crate::model::{Sample, SourceEvent, State, Target, Value};
use crate::shutdown::Shutdown;
use calendar::Calendar;
use energy::Coefficients;
use green::Declarations;
use indicators::{Fleet, Green};
use machine::MachineTrack;
use meter::MeterTrack;
use persist::{SavedMachine, SavedMeter, SavedState};
use windows::{Window, WindowKind};

/// The counter of records the engine could not hand to the spool, and its help text. The engine
/// waits for room in the spool queue, so this counts only records left when the spool task had
/// stopped; it stays 0 in normal operation.
pub const RECORDS_DROPPED: &str = "shopfloor_records_dropped_total";
pub const RECORDS_DROPPED_HELP: &str =
    "Records the engine could not hand to the spool because the spool task had stopped.";

/// How often the engine writes the `agent` health line.
const AGENT_LINE_EVERY: SignedDuration = SignedDuration::from_secs(60);

/// How long a closed window is kept (and rewritten) after its end, so that a state change
/// stamped back into it still lands in its totals.
const CLOSED_WINDOW_GRACE: SignedDuration = SignedDuration::from_mins(10);

/// Why the engine continues from a saved state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// The agent was stopped and started again: the time between is offline.
    AfterStop,
    /// The config was reloaded: the agent kept watching, states carry on.
    Reload,
}

/// A reload whose saved state is older than this is treated as a stop.
const RELOAD_GAP: SignedDuration = SignedDuration::from_secs(60);

/// A device's health, from its up and down events.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceHealth {
    pub id: Arc<str>,
    pub up: bool,
    pub since: Option<Timestamp>,
    pub reason: Option<String>,
    /// While up: why the device delivers nothing (every request answered with an exception).
    pub degraded: Option<String>,
}

/// What the board and the terminal summary show; published every second. The machines' latest
/// signals are not in it: they are asked for ([`SignalQuery`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub at: Option<Timestamp>,
    pub machines: Vec<MachineView>,
    pub devices: Vec<DeviceHealth>,
    /// Records the engine could not hand to the spool (only if the spool task had stopped).
    pub records_dropped: u64,
    /// The enterprise's fleet in today's (local) day window.
    pub fleet_today: Option<Fleet>,
    /// The enterprise's green figures in today's day window.
    pub green_today: Option<Green>,
    /// Which of the green figures a meter measured today.
    pub metered: indicators::Metered,
    /// Which of them any meter is configured for at all (whether or not it delivered).
    pub meters_configured: indicators::Metered,
    /// Whether today's value added is known (`green_today`'s 0 otherwise means "unknown").
    pub value_added_known: bool,
    /// The shift calendar has shifts and none of them is on now (a break counts as on).
    pub outside_calendar: bool,
    /// The `[green]` limits the day's figures are judged against.
    pub limits: GreenLimits,
    /// Wastewater discharged today, t, when an outlet's logger reported it.
    pub wastewater_today: Option<f64>,
    /// The outlets heard from, with their latest values and flags.
    pub outlets: Vec<outlet::OutletView>,
    /// Open alerts, then the recently closed ones.
    pub alerts: Vec<alerts::AlertView>,
    /// Fields that deliver nothing while their device answers, by target and signal.
    pub field_errors: Vec<FieldErrorView>,
}

/// A field whose reads fail while its device answers (see [`SourceEvent::FieldErrors`]).
#[derive(Debug, Clone, PartialEq)]
pub struct FieldErrorView {
    pub device: Arc<str>,
    pub target: Target,
    pub signal: Arc<str>,
    pub kind: &'static str,
    pub error: String,
    /// When this error was first reported (the field's last value, if any, is older).
    pub since: Timestamp,
}

/// The `[green]` limits, for the board to judge today's figures against and show.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GreenLimits {
    pub tce_per_10k_cny: Option<f64>,
    pub water_t_per_10k_cny: Option<f64>,
    pub wastewater_t_per_10k_cny: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MachineView {
    pub id: Arc<str>,
    pub name: String,
    pub kind: String,
    pub cnc: bool,
    pub state: State,
    pub since: Timestamp,
    /// Availability in today's day window, when there was planned busy time.
    pub availability_today: Option<f64>,
    pub parts_today: i64,
}

/// One machine's latest signals, ordered by name.
#[derive(Debug, Clone, PartialEq)]
pub struct MachineSignals {
    pub id: Arc<str>,
    pub signals: Vec<(Arc<str>, Value)>,
}

/// How long [`SignalQuery::latest`] waits for the engine. It answers between two events (the
/// copy of 100 machines × 1000 signals takes a few milliseconds); only a stuck engine takes
/// this long.
const SIGNAL_QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// The engine's end of [`SignalQuery`].
pub type SignalRequests = mpsc::Receiver<oneshot::Sender<Vec<MachineSignals>>>;

/// Asks the engine for every machine's latest signals, for the board and the demo's summary.
/// They are copied on request rather than into every [`Snapshot`]: at 100 machines of 1000
/// Modbus fields that copy is 5 MB, made every second (and held twice while the new snapshot
/// replaces the old) for a board that nobody may be looking at.
#[derive(Debug, Clone)]
pub struct SignalQuery(mpsc::Sender<oneshot::Sender<Vec<MachineSignals>>>);

impl SignalQuery {
    pub fn channel() -> (SignalQuery, SignalRequests) {
        let (tx, rx) = crate::queue::SIGNAL_QUERIES.tokio();
        (SignalQuery(tx), rx)
    }

    /// Every machine's latest signals, in register order; `None` when the engine has stopped
    /// or did not answer within [`SIGNAL_QUERY_TIMEOUT`].
    pub async fn latest(&self) -> Option<Vec<MachineSignals>> {
        let ask = async {
            let (reply, answer) = oneshot::channel();
            const _: () = crate::queue::SIGNAL_QUERIES.sent_as(crate::queue::WhenFull::Block);
            self.0.send(reply).await.ok()?;
            answer.await.ok()
        };
        tokio::time::timeout(SIGNAL_QUERY_TIMEOUT, ask)
            .await
            .ok()
            .flatten()
    }
}

/// Where [`run`] publishes: the snapshot every second, and answers to signal queries.
#[derive(Debug)]
pub struct Views {
    pub snapshots: watch::Sender<Snapshot>,
    pub signal_requests: SignalRequests,
}

/// The engine. See the module documentation.
#[derive(Debug)]
pub struct Engine {
    machines: Vec<MachineTrack>,
    by_id: HashMap<Arc<str>, usize>,
    meters: Vec<MeterTrack>,
    meter_by_id: HashMap<Arc<str>, usize>,
    devices: Vec<DeviceHealth>,
    calendar: Calendar,
    coefficients: Coefficients,
    va_method: ValueAddedMethod,
    va_rate: Option<f64>,
    declarations: Declarations,
    tce_limit: Option<f64>,
    water_limit: Option<f64>,
    wastewater_limit: Option<f64>,
    offline_after: SignedDuration,
    heartbeat: SignedDuration,
    meter_max_gap: SignedDuration,
    unknown_targets: u64,
    /// Meter counters taken as reset, and as wrapped past their modulus, since the start.
    meter_resets: u64,
    meter_rollovers: u64,
    /// `agent,county=…,sector=…,enterprise=…` and the like for the enterprise's lines.
    agent_prefix: String,
    fleet_prefix: String,
    green_prefix: String,
    alert_prefix: String,
    alerted: BTreeSet<Window>,
    outlets: outlet::Outlets,
    /// Fields failing now, cleared by the field's next sample or its device going down.
    field_errors: HashMap<(Target, Arc<str>), FieldErrorView>,
}

impl Engine {
    /// Every registered machine starts `offline` at `now`: until it delivers data, nothing is
    /// known about it.
    pub fn new<'a>(config: impl Into<config::Sections<'a>>, now: Timestamp) -> Self {
        let config = &config.into();
        let site = &config.site;
        let base = [
            (TAG_COUNTY, site.county.as_str()),
            (TAG_SECTOR, site.sector.as_str()),
            (TAG_ENTERPRISE, site.enterprise.as_str()),
        ];
        let tz = TimeZone::get(&site.timezone).unwrap_or(TimeZone::UTC);
        let machines: Vec<MachineTrack> = config
            .machines
            .iter()
            .map(|m| MachineTrack::new(m, config.state_rules, &base, now))
            .collect();
        let by_id: HashMap<Arc<str>, usize> = machines
            .iter()
            .enumerate()
            .map(|(i, m)| (m.id.clone(), i))
            .collect();
        let meters: Vec<MeterTrack> = config
            .meters
            .iter()
            .map(|m| {
                let owner = by_id.get(m.scope.as_str()).copied();
                MeterTrack::new(m, &base, owner)
            })
            .collect();
        let meter_by_id = meters
            .iter()
            .enumerate()
            .map(|(i, m)| (m.id.clone(), i))
            .collect();
        let devices = config
            .devices
            .iter()
            .map(|id| DeviceHealth {
                id: Arc::from(*id),
                up: false,
                since: None,
                reason: Some("not polled yet".into()),
                degraded: None,
            })
            .collect();
        let va = &config.value_added;
        let coefficients = Coefficients::new(config.energy);
        let green_tags: Vec<(&str, &str)> = base
            .iter()
            .copied()
            .chain([
                (TAG_VA_METHOD, va.method().as_str()),
                (TAG_EL_METHOD, coefficients.electricity_method.as_str()),
            ])
            .collect();
        Engine {
            machines,
            by_id,
            meters,
            meter_by_id,
            devices,
            calendar: Calendar::new(config.calendar, tz.clone()),
            coefficients,
            va_method: va.method(),
            va_rate: va.rate,
            declarations: Declarations::new(&va.declared),
            tce_limit: config.green.tce_per_10k_cny_limit,
            water_limit: config.green.water_t_per_10k_cny_limit,
            wastewater_limit: config.green.wastewater_t_per_10k_cny_limit,
            offline_after: to_signed(config.agent.offline_after),
            heartbeat: to_signed(config.agent.heartbeat),
            meter_max_gap: to_signed(config.energy.max_gap),
            unknown_targets: 0,
            meter_resets: 0,
            meter_rollovers: 0,
            agent_prefix: tag_prefix(MEASUREMENT_AGENT, &base),
            fleet_prefix: tag_prefix(MEASUREMENT_FLEET, &base),
            green_prefix: tag_prefix(MEASUREMENT_GREEN, &green_tags),
            alert_prefix: tag_prefix(MEASUREMENT_GREEN_ALERT, &green_tags),
            alerted: BTreeSet::new(),
            outlets: outlet::Outlets::new(
                tag_prefix(contract::MEASUREMENT_OUTLET, &base),
                tag_prefix(contract::MEASUREMENT_ALERT, &base),
                tz.clone(),
            ),
            field_errors: HashMap::new(),
        }
    }

    /// The first `machine_state` line of every machine, offline at the engine's start, so a
    /// dashboard shows the whole register at once, machines without a data source included.
    /// Not for an engine continuing a saved state: its machines' lines are in the store.
    pub fn opening_lines(&mut self, out: &mut Vec<String>) {
        for m in &mut self.machines {
            out.extend(m.heartbeat_line(m.since));
            m.last_written = m.since;
        }
    }

    /// Replaces the declared value-added figures (the config's and the declared file's).
    pub fn set_declarations(&mut self, declarations: Declarations) {
        self.declarations = declarations;
    }

    /// Continues from a saved state. Windows and counters carry on; the time from the last
    /// accounting to `now` is offline, because the agent was not running. A machine that was
    /// not offline gets a state change to offline stamped when the agent stopped watching.
    pub fn restore(
        &mut self,
        saved: SavedState,
        now: Timestamp,
        resume: Resume,
        out: &mut Vec<String>,
    ) {
        // A reload (SIGHUP) takes a moment: the machines were watched all along, so they keep
        // their states. After a real stop nobody watched them.
        let watched = resume == Resume::Reload
            && saved
                .saved_at
                .is_some_and(|t| now.duration_since(t) <= RELOAD_GAP);
        for s in saved.machines {
            let Some(&i) = self.by_id.get(s.id.as_str()) else {
                continue;
            };
            let m = &mut self.machines[i];
            if s.accounted_to > now {
                continue;
            }
            m.state = s.state;
            m.since = s.since;
            m.accounted_to = s.accounted_to;
            m.windows = s.windows.into_iter().collect();
            m.parts = s.parts;
            m.good = s.good;
            m.reject = s.reject;
            m.history.clear();
            m.history.push_back((s.since, s.state));
            if watched {
                // The pause between the save and now is the agent's, not the machine's
                // silence: `offline_after` counts from where it stood at the save, so a
                // reload that takes a few seconds makes no machine offline.
                let paused = saved
                    .saved_at
                    .map_or(SignedDuration::ZERO, |t| now.duration_since(t));
                m.last_data = s.last_data.map(|t| t.checked_add(paused).unwrap_or(t));
            } else if m.state != State::Offline {
                m.change_state(State::Offline, s.accounted_to, &self.calendar, out);
            }
            m.account_to(now, &self.calendar);
        }
        for s in saved.meters {
            let Some(&i) = self.meter_by_id.get(s.id.as_str()) else {
                continue;
            };
            let meter = &mut self.meters[i];
            meter.counter = s.counter;
            meter.last_rate = s.last_rate;
            meter.windows = s.windows.into_iter().collect();
        }
        self.alerted = saved.alerted.into_iter().collect();
        self.outlets.restore(saved.outlets);
    }

    /// Everything needed to continue after a restart.
    pub fn save(&self, now: Timestamp) -> SavedState {
        SavedState {
            version: persist::VERSION,
            saved_at: Some(now),
            machines: self
                .machines
                .iter()
                .map(|m| SavedMachine {
                    id: m.id.to_string(),
                    state: m.state,
                    since: m.since,
                    accounted_to: m.accounted_to,
                    last_data: m.last_data,
                    windows: m
                        .windows
                        .iter()
                        .map(|(w, t)| (w.clone(), t.clone()))
                        .collect(),
                    parts: m.parts.clone(),
                    good: m.good.clone(),
                    reject: m.reject.clone(),
                })
                .collect(),
            meters: self
                .meters
                .iter()
                .map(|m| SavedMeter {
                    id: m.id.to_string(),
                    counter: m.counter.clone(),
                    last_rate: m.last_rate,
                    windows: m
                        .windows
                        .iter()
                        .map(|(w, t)| (w.clone(), t.clone()))
                        .collect(),
                })
                .collect(),
            alerted: self.alerted.iter().cloned().collect(),
            outlets: self.outlets.save(now),
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
            SourceEvent::DeviceDegraded { device, at, reason } => {
                if let Some(d) = self.devices.iter_mut().find(|d| d.id == device) {
                    d.degraded = reason;
                    d.since = Some(at);
                }
            }
            SourceEvent::Offline { target, at, reason } => {
                self.offline_now(&target, at, &reason, out)
            }
            SourceEvent::Alive { targets, at } => self.alive(&targets, at, out),
            SourceEvent::Outlet(record) => self.outlets.record(&record, out),
            SourceEvent::FieldErrors { device, at, errors } => {
                self.field_errors_reported(device, at, errors)
            }
        }
    }

    fn field_errors_reported(
        &mut self,
        device: Arc<str>,
        at: Timestamp,
        errors: Vec<crate::model::FieldError>,
    ) {
        for e in errors {
            let key = (e.target.clone(), e.signal.clone());
            match self.field_errors.get_mut(&key) {
                // The same error again: it keeps the time it began.
                Some(v) if v.error == e.error && v.device == device => {}
                Some(v) => {
                    v.device = device.clone();
                    v.kind = e.kind;
                    v.error = e.error;
                    v.since = at;
                }
                None => {
                    self.field_errors.insert(
                        key,
                        FieldErrorView {
                            device: device.clone(),
                            target: e.target,
                            signal: e.signal,
                            kind: e.kind,
                            error: e.error,
                            since: at,
                        },
                    );
                }
            }
        }
    }

    /// The source still hears these machines, their signals unchanged: their silence restarts
    /// from `at`. A machine that went offline by silence (its source lost the device, then
    /// heard it again with values that had not changed, so not written again) comes back at
    /// `at` in the state its latest values imply. One that has no values yet (the agent just
    /// started), or that a source said is gone (a Last Will), comes back with its next sample.
    fn alive(&mut self, targets: &[Target], at: Timestamp, out: &mut Vec<String>) {
        for target in targets {
            let Target::Machine(id) = target else {
                continue;
            };
            let Some(&index) = self.by_id.get(id) else {
                continue;
            };
            let m = &mut self.machines[index];
            if m.last_data.is_some_and(|t| t >= at) {
                continue;
            }
            if m.state != State::Offline {
                m.last_data = Some(at);
            } else if !m.signals.is_empty() && !m.told_offline {
                m.last_data = Some(at);
                m.derive_state(at, &self.calendar, out);
            }
        }
    }

    /// A source knows the machine is gone (a Last Will, a Sparkplug death): offline now rather
    /// than after `offline_after`. Meters have no state, so only machines are concerned.
    fn offline_now(&mut self, target: &Target, at: Timestamp, reason: &str, out: &mut Vec<String>) {
        let Target::Machine(id) = target else { return };
        let Some(&index) = self.by_id.get(id) else {
            self.unknown_target(id);
            return;
        };
        let m = &mut self.machines[index];
        m.told_offline = true;
        if m.state != State::Offline {
            tracing::info!(machine = %m.id, reason, "offline at once");
            m.change_state(State::Offline, at, &self.calendar, out);
        }
    }

    fn set_device(&mut self, id: &str, up: bool, at: Timestamp, reason: Option<String>) {
        if !up && !self.field_errors.is_empty() {
            // A device that is down says why itself; its fields are judged afresh when it
            // answers again.
            self.field_errors.retain(|_, e| &*e.device != id);
        }
        if let Some(d) = self.devices.iter_mut().find(|d| &*d.id == id) {
            d.up = up;
            d.since = Some(at);
            d.reason = reason;
            // Up again or down: whether it delivers is news the source sends afresh.
            d.degraded = None;
        }
    }

    fn on_samples(&mut self, samples: Vec<Sample>, out: &mut Vec<String>) {
        if !self.field_errors.is_empty() {
            for s in &samples {
                self.field_errors
                    .remove(&(s.target.clone(), s.signal.clone()));
            }
        }
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
                Target::Machine(id) => match self.by_id.get(id) {
                    Some(&i) => self.machines[i].samples(at, group, &self.calendar, out),
                    None => self.unknown_target(id),
                },
                Target::Meter(id) => match self.meter_by_id.get(id) {
                    Some(&i) => self.meter_samples(i, at, group, out),
                    None => self.unknown_target(id),
                },
            }
            start = end;
        }
    }

    fn meter_samples(
        &mut self,
        index: usize,
        at: Timestamp,
        group: &[Sample],
        out: &mut Vec<String>,
    ) {
        let meter = &mut self.meters[index];
        let line = group
            .iter()
            .fold(LineBuilder::with_prefix(&meter.signal_prefix), |b, s| {
                b.value(&s.signal, &s.value)
            });
        out.extend(line.finish(at));
        let Some(signal) = meter.reading_signal() else {
            return;
        };
        let Some(value) = group
            .iter()
            .find(|s| s.signal == *signal)
            .and_then(|s| s.value.as_f64())
        else {
            return;
        };
        let owner = meter.machine.map(|i| &self.machines[i]);
        let event = meter.reading(value, at, self.meter_max_gap, &self.calendar, owner);
        self.meter_resets += u64::from(event.reset);
        self.meter_rollovers += u64::from(event.rollover);
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

    /// Advances the clock: machines without data for `offline_after` go offline, time is
    /// accounted to the windows, and every machine's state line is repeated once per heartbeat.
    pub fn tick(&mut self, now: Timestamp, out: &mut Vec<String>) {
        self.advance(now, out);
        for m in &mut self.machines {
            if now.duration_since(m.last_written) >= self.heartbeat {
                out.extend(m.heartbeat_line(now));
                m.last_written = now;
                m.last_heartbeat = Some(now);
            }
        }
    }

    /// Machines silent for `offline_after` go offline (stamped at that deadline), then time up
    /// to `now` is accounted. The offline check comes first, so no window ever shows silent time
    /// as the machine's last state, not even until the next tick.
    fn advance(&mut self, now: Timestamp, out: &mut Vec<String>) {
        for m in &mut self.machines {
            if m.state != State::Offline {
                let deadline = m.last_data.unwrap_or(m.since) + self.offline_after;
                if now >= deadline {
                    m.change_state(State::Offline, deadline.max(m.since), &self.calendar, out);
                }
            }
            m.account_to(now, &self.calendar);
        }
    }

    /// Writes every open window's totals (and windows closed within the grace period), raises
    /// green alerts for closed windows, and forgets windows past the grace period.
    pub fn flush(&mut self, now: Timestamp, out: &mut Vec<String>) {
        self.advance(now, out);
        for m in &self.machines {
            for (w, t) in &m.windows {
                out.extend(m.time_line(w, t));
            }
        }
        let fleets = self.fleets();
        for (w, f) in &fleets {
            out.extend(self.fleet_line(w, f));
        }
        for meter in &self.meters {
            for (w, t) in &meter.windows {
                let good = meter.machine.and_then(|i| {
                    let m = &self.machines[i];
                    m.windows.get(w).map(|t| {
                        if t.good_known {
                            t.parts_good
                        } else {
                            t.parts_total
                        }
                    })
                });
                out.extend(meter.energy_line(w, t, &self.coefficients, good));
            }
        }
        let mut closed_green = Vec::new();
        // The days and months of the machines and of the meters: a meter-only site has
        // energy to write even without a fleet.
        let green_windows: std::collections::BTreeSet<&Window> = fleets
            .keys()
            .chain(self.meters.iter().flat_map(|m| m.windows.keys()))
            .filter(|w| matches!(w.kind, WindowKind::Day | WindowKind::Month))
            .collect();
        for w in &green_windows {
            let (g, va_known) = self.green(w);
            out.extend(self.green_line(w, &g, va_known));
            if w.end <= now && !self.alerted.contains(w) {
                closed_green.push(((*w).clone(), g));
            }
        }
        // Days whose discharge came after their window was forgotten (a logger's daily data
        // for yesterday, data sent again after an outage): their wastewater fields alone,
        // which the store merges into the day's and the month's `green` point.
        let live: BTreeSet<Window> = green_windows.iter().map(|w| (*w).clone()).collect();
        let mut late = BTreeSet::new();
        for date in self.outlets.take_dirty() {
            let Some(noon) = date
                .at(12, 0, 0, 0)
                .to_zoned_datetime(self.calendar.time_zone().clone())
                .ok()
            else {
                continue;
            };
            for w in windows::containing(&self.calendar, noon.timestamp()) {
                if matches!(w.kind, WindowKind::Day | WindowKind::Month) && !live.contains(&w) {
                    late.insert(w);
                }
            }
        }
        for w in &late {
            out.extend(self.wastewater_line(w));
        }
        for (w, g) in closed_green {
            self.alert(&w, &g, out);
            if w.kind == WindowKind::Day {
                self.judge_day(&w, &g, out);
            }
            self.alerted.insert(w);
        }
        self.outlets.retain(now);
        let keep = |w: &Window| w.end + CLOSED_WINDOW_GRACE > now;
        for m in &mut self.machines {
            m.windows.retain(|w, _| keep(w));
        }
        for meter in &mut self.meters {
            meter.windows.retain(|w, _| keep(w));
        }
        // Alerts are remembered as long as a month window could still be rewritten.
        self.alerted
            .retain(|w| w.end + SignedDuration::from_hours(24 * 40) > now);
    }

    /// The enterprise's fleet per window, from every machine's totals.
    fn fleets(&self) -> BTreeMap<Window, Fleet> {
        let mut out: BTreeMap<Window, Fleet> = BTreeMap::new();
        let keys: BTreeSet<&Window> = self
            .machines
            .iter()
            .flat_map(|m| m.windows.keys())
            .collect();
        for w in keys {
            let mut f = Fleet::default();
            for m in &self.machines {
                f.machines_total += 1;
                f.machines_digital += u64::from(m.digital);
                f.machines_cnc += u64::from(m.cnc);
                let Some(t) = m.windows.get(w) else { continue };
                if t.delivered {
                    f.machines_networked += 1;
                    f.machines_digital_networked += u64::from(m.digital);
                    if m.cnc {
                        f.cnc_running_s += t.running_busy_ns as f64 / 1e9;
                        f.cnc_planned_s += t.planned_busy_ns as f64 / 1e9;
                    }
                }
            }
            out.insert(w.clone(), f);
        }
        out
    }

    fn fleet_line(&self, w: &Window, f: &Fleet) -> Option<String> {
        let mut b = LineBuilder::with_prefix(&self.fleet_prefix)
            .tag(TAG_WINDOW, w.kind.tag())
            .tag(TAG_SHIFT, w.shift.as_deref().unwrap_or(""))
            .int(contract::fleet::MACHINES_TOTAL, f.machines_total as i64)
            .int(contract::fleet::MACHINES_DIGITAL, f.machines_digital as i64)
            .int(contract::fleet::MACHINES_CNC, f.machines_cnc as i64)
            .int(
                contract::fleet::MACHINES_NETWORKED,
                f.machines_networked as i64,
            )
            .int(
                contract::fleet::MACHINES_DIGITAL_NETWORKED,
                f.machines_digital_networked as i64,
            )
            .float(contract::fleet::CNC_RUNNING_S, f.cnc_running_s)
            .float(contract::fleet::CNC_PLANNED_S, f.cnc_planned_s);
        // Robots in service: written only when the register holds a robot, so that an agent
        // whose register leaves robots out does not replace the county's declared count by 0.
        let robots = self.machines.iter().filter(|m| m.robot).count();
        if robots > 0 {
            b = b.int(contract::fleet::MACHINES_ROBOT, robots as i64);
        }
        for (name, value) in [
            (contract::fleet::NETWORKING_RATE, f.networking_rate()),
            (
                contract::fleet::NETWORKING_RATE_DIGITAL,
                f.networking_rate_digital(),
            ),
            (contract::fleet::CNC_RATE, f.cnc_rate()),
            (contract::fleet::CNC_UTILISATION, f.cnc_utilisation()),
        ] {
            if let Some(v) = value {
                b = b.float(name, v);
            }
        }
        b.finish(w.start)
    }

    /// The enterprise's green figures in a day or month window, and whether value added is
    /// known. Energy comes from site meters; a carrier with no site meter is summed from its
    /// machine meters instead (never both, which would count it twice).
    /// Which green figures a meter measured in window `w`: a carrier none of whose meters
    /// delivered a reading there (none configured, none with a `signal`, or all silent) is
    /// "not measured", never 0.
    fn metered_in(&self, w: &Window) -> indicators::Metered {
        indicators::Metered::of(
            self.meters
                .iter()
                .map(|m| (m.carrier, m.windows.contains_key(w))),
        )
    }

    fn green(&self, w: &Window) -> (Green, bool) {
        let mut by_carrier: BTreeMap<Carrier, (f64, f64)> = BTreeMap::new();
        for meter in &self.meters {
            let q = meter.windows.get(w).map_or(0.0, |t| t.quantity);
            let slot = by_carrier.entry(meter.carrier).or_default();
            if meter.machine.is_none() {
                slot.0 += q;
            } else {
                slot.1 += q;
            }
        }
        let has_site = |c: &Carrier| {
            self.meters
                .iter()
                .any(|m| m.carrier == *c && m.machine.is_none())
        };
        let mut g = Green::default();
        for (carrier, (site, machines)) in &by_carrier {
            let q = if has_site(carrier) { *site } else { *machines };
            match carrier {
                Carrier::Water => g.water_t += q,
                c => {
                    if *c == Carrier::Electricity {
                        g.electricity_kwh += q;
                    }
                    g.energy_tce += self.coefficients.tce(*c, q).unwrap_or(0.0);
                }
            }
        }
        let va = match self.va_method {
            ValueAddedMethod::Parts | ValueAddedMethod::GrossOutput => {
                let mut cny = 0.0;
                let mut any = false;
                for m in &self.machines {
                    let per_part = match self.va_method {
                        ValueAddedMethod::Parts => m.value_added_per_part,
                        _ => m
                            .gross_output_per_part
                            .zip(self.va_rate)
                            .map(|(p, r)| p * r),
                    };
                    let (Some(per_part), Some(t)) = (per_part, m.windows.get(w)) else {
                        continue;
                    };
                    let good = if t.good_known {
                        t.parts_good
                    } else {
                        t.parts_total
                    };
                    cny += good as f64 * per_part;
                    any = true;
                }
                any.then_some(cny / 10_000.0)
            }
            ValueAddedMethod::Declared => self.declarations.value_for(w, self.calendar.time_zone()),
            ValueAddedMethod::NoSource => None,
        };
        g.value_added_10k_cny = va.unwrap_or(0.0);
        (g, va.is_some())
    }

    fn green_line(&self, w: &Window, g: &Green, va_known: bool) -> Option<String> {
        // Missing is not zero: a figure no meter measured in the window is left out.
        let m = self.metered_in(w);
        let mut b = LineBuilder::with_prefix(&self.green_prefix).tag(TAG_WINDOW, w.kind.tag());
        for (name, value, measured) in [
            (contract::green::ENERGY_TCE, g.energy_tce, m.energy),
            (
                contract::green::ELECTRICITY_KWH,
                g.electricity_kwh,
                m.electricity,
            ),
            (contract::green::WATER_T, g.water_t, m.water),
        ] {
            if measured {
                b = b.float(name, value);
            }
        }
        b = b.float(
            contract::green::ELECTRICITY_KGCE_PER_KWH,
            self.coefficients
                .kgce_per_unit(Carrier::Electricity)
                .unwrap_or(0.0),
        );
        if va_known {
            b = b.float(contract::green::VALUE_ADDED_10K_CNY, g.value_added_10k_cny);
            for (name, value, measured) in [
                (
                    contract::green::TCE_PER_10K_CNY,
                    g.tce_per_10k_cny(),
                    m.energy,
                ),
                (
                    contract::green::VALUE_ADDED_PER_TCE,
                    g.value_added_per_tce(),
                    m.energy,
                ),
                (
                    contract::green::WATER_T_PER_10K_CNY,
                    g.water_t_per_10k_cny(),
                    m.water,
                ),
            ] {
                if let Some(v) = value.filter(|_| measured) {
                    b = b.float(name, v);
                }
            }
        }
        b = self.wastewater_fields(b, w, va_known.then_some(g.value_added_10k_cny));
        b.finish(w.start)
    }

    /// The wastewater fields of a `green` line, when an outlet reported a discharge for the
    /// window: the total, its basis and, with value added, the intensity.
    fn wastewater_fields(&self, mut b: LineBuilder, w: &Window, va: Option<f64>) -> LineBuilder {
        if let Some(d) = self.outlets.discharge(w) {
            b = b
                .float(contract::green::WASTEWATER_T, d.t)
                .string(contract::green::WASTEWATER_BASIS, &d.basis);
            if let Some(v) = va.and_then(|va| indicators::ratio(d.t, va)) {
                b = b.float(contract::green::WASTEWATER_T_PER_10K_CNY, v);
            }
        }
        b
    }

    /// A `green` line with the wastewater fields alone, for a window no longer kept.
    fn wastewater_line(&self, w: &Window) -> Option<String> {
        let (g, va_known) = self.green(w);
        let b = LineBuilder::with_prefix(&self.green_prefix).tag(TAG_WINDOW, w.kind.tag());
        self.wastewater_fields(b, w, va_known.then_some(g.value_added_10k_cny))
            .finish(w.start)
    }

    /// A closed day against the `[green]` limits, as alerts that stay open over consecutive
    /// days over the limit and close on the first day within it (stamped at the days' ends, so
    /// the duration counts whole days). A figure that was not measured judges nothing.
    fn judge_day(&mut self, w: &Window, g: &Green, out: &mut Vec<String>) {
        let va = (g.value_added_10k_cny > 0.0).then_some(g.value_added_10k_cny);
        let wastewater = self
            .outlets
            .discharge(w)
            .zip(va)
            .and_then(|(d, va)| indicators::ratio(d.t, va));
        let measured = self.metered_in(w);
        let metered = |water: bool| {
            if water {
                measured.water
            } else {
                measured.energy
            }
        };
        let checks = [
            (
                contract::green::TCE_PER_10K_CNY,
                va.filter(|_| metered(false)).and(g.tce_per_10k_cny()),
                self.tce_limit,
            ),
            (
                contract::green::WATER_T_PER_10K_CNY,
                va.filter(|_| metered(true)).and(g.water_t_per_10k_cny()),
                self.water_limit,
            ),
            (
                contract::green::WASTEWATER_T_PER_10K_CNY,
                wastewater,
                self.wastewater_limit,
            ),
        ];
        for (indicator, value, limit) in checks {
            if let (Some(value), Some(limit)) = (value, limit) {
                self.outlets.alerts.judge(
                    alerts::KIND_INDICATOR,
                    indicator,
                    w.end,
                    value,
                    limit,
                    out,
                );
            }
        }
    }

    /// A closed window over a configured limit: a `green_alert` line and a log entry.
    fn alert(&self, w: &Window, g: &Green, out: &mut Vec<String>) {
        let checks = [
            (
                contract::green::TCE_PER_10K_CNY,
                g.tce_per_10k_cny(),
                self.tce_limit,
            ),
            (
                contract::green::WATER_T_PER_10K_CNY,
                g.water_t_per_10k_cny(),
                self.water_limit,
            ),
        ];
        for (indicator, value, limit) in checks {
            let (Some(value), Some(limit)) = (value, limit) else {
                continue;
            };
            if value <= limit {
                continue;
            }
            warn!(window = w.kind.tag(), start = %w.start, indicator, value, limit, "green indicator over its limit");
            let line = LineBuilder::with_prefix(&self.alert_prefix)
                .tag(TAG_WINDOW, w.kind.tag())
                .tag(TAG_INDICATOR, indicator)
                .float(contract::green_alert::VALUE, value)
                .float(contract::green_alert::LIMIT, limit)
                .float(contract::green_alert::OVER_BY, value - limit);
            out.extend(line.finish(w.start));
        }
    }

    /// The per-minute `agent` line: the agent's own health, so the county sees a gateway that
    /// is alive but blind (devices down) or alive but cut off (spool growing).
    pub fn agent_line(&self, now: Timestamp, metrics: &Metrics) -> Option<String> {
        let up = self.devices.iter().filter(|d| d.up).count();
        let sum = |name: &str| metrics.sum(name) as i64;
        LineBuilder::with_prefix(&self.agent_prefix)
            .int(contract::agent::DEVICES_TOTAL, self.devices.len() as i64)
            .int(contract::agent::DEVICES_UP, up as i64)
            .int(
                contract::agent::POLL_ERRORS,
                sum("shopfloor_poll_errors_total"),
            )
            .int(contract::agent::SPOOL_BYTES, sum("shopfloor_spool_bytes"))
            .int(contract::agent::SPOOL_LINES, sum("shopfloor_spool_lines"))
            .int(
                contract::agent::DROPPED_LINES,
                sum("shopfloor_spool_dropped_lines"),
            )
            .int(
                contract::agent::SPOOL_DISK_FULL,
                sum("shopfloor_spool_disk_full"),
            )
            .int(
                contract::agent::LOST_LINES,
                sum("shopfloor_spool_lost_lines_total"),
            )
            .int(
                contract::agent::RECORDS_DROPPED,
                sum("shopfloor_records_dropped_total"),
            )
            .int(
                contract::agent::LAG_S,
                sum("shopfloor_spool_oldest_age_seconds"),
            )
            .int(
                contract::agent::SENT_LINES,
                sum("shopfloor_output_lines_total"),
            )
            .int(
                contract::agent::SENT_LINES_1M,
                sum("shopfloor_output_sent_lines_last_minute"),
            )
            .int(
                contract::agent::DEAD_LETTER_LINES,
                sum("shopfloor_output_dead_letter_lines_total"),
            )
            .finish(now)
    }

    pub fn snapshot(&self, now: Timestamp, records_dropped: u64) -> Snapshot {
        let today = windows::containing(&self.calendar, now)
            .into_iter()
            .find(|w| w.kind == WindowKind::Day);
        Snapshot {
            at: Some(now),
            machines: self
                .machines
                .iter()
                .map(|m| {
                    let t = today.as_ref().and_then(|w| m.windows.get(w));
                    MachineView {
                        id: m.id.clone(),
                        name: m.name.clone(),
                        kind: m.kind.clone(),
                        cnc: m.cnc,
                        state: m.state,
                        since: m.since,
                        availability_today: t.and_then(|t| {
                            indicators::availability(
                                t.running_busy_ns as f64 / 1e9,
                                t.planned_busy_ns as f64 / 1e9,
                            )
                        }),
                        parts_today: t.map_or(0, |t| t.parts_total),
                    }
                })
                .collect(),
            devices: self.devices.clone(),
            records_dropped,
            fleet_today: today.as_ref().and_then(|w| self.fleets().remove(w)),
            green_today: today.as_ref().map(|w| self.green(w).0),
            value_added_known: today.as_ref().is_some_and(|w| self.green(w).1),
            meters_configured: indicators::Metered::of(
                self.meters.iter().map(|m| (m.carrier, true)),
            ),
            outside_calendar: self.calendar.has_shifts()
                && self
                    .calendar
                    .shifts_between(now, now + SignedDuration::from_secs(1))
                    .is_empty(),
            limits: GreenLimits {
                tce_per_10k_cny: self.tce_limit,
                water_t_per_10k_cny: self.water_limit,
                wastewater_t_per_10k_cny: self.wastewater_limit,
            },
            metered: today
                .as_ref()
                .map(|w| self.metered_in(w))
                .unwrap_or_default(),
            wastewater_today: today
                .as_ref()
                .and_then(|w| self.outlets.discharge(w))
                .map(|d| d.t),
            outlets: self.outlets.views(),
            alerts: self.outlets.alerts.views(),
            field_errors: self.field_errors_sorted(),
        }
    }

    /// The failing fields, by device then target and signal.
    fn field_errors_sorted(&self) -> Vec<FieldErrorView> {
        let mut v: Vec<FieldErrorView> = self.field_errors.values().cloned().collect();
        v.sort_by(|a, b| (&a.device, &a.target, &a.signal).cmp(&(&b.device, &b.target, &b.signal)));
        v
    }

    /// Every machine's latest signals, in register order (see [`SignalQuery`]).
    pub fn machine_signals(&self) -> Vec<MachineSignals> {
        self.machines
            .iter()
            .map(|m| MachineSignals {
                id: m.id.clone(),
                signals: m
                    .signals
                    .sorted()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            })
            .collect()
    }
}

fn seconds(d: SignedDuration) -> f64 {
    d.as_secs_f64()
}

fn to_signed(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

/// What the engine's task needs besides the engine.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Where the accumulators are saved.
    pub state_path: PathBuf,
    /// How often window totals are written and the state saved.
    pub window_flush: Duration,
    /// The config's declared value added, and the file that adds to it.
    pub declared: Vec<crate::engine::config::Declared>,
    pub declared_file: Option<PathBuf>,
    /// Records to hand over first: the opening or restored lines the agent made at start-up.
    pub opening: Vec<String>,
}

/// Records handed to the spool in one batch at most. A batch is one item of the spool queue
/// ([`crate::queue::RECORDS_FROM_ENGINE`]), so this and the queue's capacity bound the memory
/// the queue can hold (8 × 1024 lines of about 200 bytes: under 2 MB).
pub const BATCH_LINES: usize = 1024;

/// How long a record waits in the engine for its batch to fill before the batch goes anyway.
/// At 1000 messages a second that is one spool append of some 1000 lines a second instead of
/// one append a message. Each append is a SQLite commit with its fixed pages, a wake-up of the
/// spool thread and one of every writer: at 1,000 MQTT messages a second, a second here
/// instead of 250 ms took about 7 % off the agent's CPU (docs/BENCHMARKS.md, issue 21, eighth
/// round). A second is the spool's `sync_interval` by default, the most a power cut may cost
/// anyway, and the writers' `flush_interval`, so a record reaches the store at most about a
/// second later than at once. What waits here is lost if the process is killed, as is what
/// waits in the queues; a graceful stop hands it to the spool first.
pub const BATCH_LINGER: Duration = Duration::from_secs(1);

/// The most events the engine takes from its queue in one turn of its loop: enough to take a
/// round of MQTT messages at once, few enough that the clock and the board's queries never
/// wait long behind a queue of large Modbus poll results.
const EVENTS_PER_TURN: usize = 64;

/// The counter of times the engine found the spool queue full and waited.
pub const SPOOL_WAITS: &str = "shopfloor_engine_spool_waits_total";

/// Feeds the engine from the sources until shutdown, hands records to the spool in batches,
/// publishes snapshots, answers signal queries, writes window totals and saves the
/// accumulators.
///
/// ## Waiting for the spool without stalling the rest
///
/// Records are collected across events and handed over by size ([`BATCH_LINES`]) or time
/// ([`BATCH_LINGER`]), and at every flush and at shutdown. When the spool queue is full the
/// engine waits for room ([`crate::queue::RECORDS_FROM_ENGINE`] is `Block`), and it waits
/// *inside* its `select!` loop rather than in front of it: the pending send is one more branch
/// of the loop, and while it is pending the loop stops taking events from the sources and
/// nothing else. So, while it waits:
///
/// - the sources' channel fills: an MQTT broker task waits for room in it and stops reading
///   its socket, so the broker keeps the messages (QoS 1, persistent session); a Modbus
///   connection keeps polling on schedule, and its results wait in that channel, which is
///   their bounded buffer (at its bound the newest is dropped and counted, see
///   [`crate::queue`]);
/// - the clock-driven work goes on: the one-second tick (state timeouts, heartbeats, the
///   snapshot for the board and `/healthz`), window flushes and state saves, and the board's
///   signal queries are answered. Their lines join the pending records: they are a few per
///   machine per second, not the sources' stream, so the pending records stay bounded by the
///   machine count however long the spool is slow;
/// - the engine holds at most one batch being handed over plus what the clock added.
///
/// Waiting with a blocking `send` in front of the loop would have frozen the board's snapshot
/// and answers for as long as the spool was slow (the board would call the engine stuck), and
/// dropping, as before, lost what the broker would have kept for us.
///
/// A record is lost here only if the spool task has stopped (the queue is disconnected, which
/// happens only at shutdown): counted in [`RECORDS_DROPPED`].
/// The longest the clock holds off while the engine is behind its sources (see `run`): long
/// enough for a stalled spool to recover, short enough that a machine that really fell silent
/// is still found offline within `offline_after` plus this.
const HOLD_WHILE_BEHIND: SignedDuration = SignedDuration::from_secs(5);

pub async fn run(
    mut engine: Engine,
    mut events: mpsc::Receiver<SourceEvent>,
    records: flume::Sender<Vec<String>>,
    mut views: Views,
    metrics: Metrics,
    mut options: RunOptions,
    mut shutdown: Shutdown,
) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut flush = tokio::time::interval(options.window_flush.max(Duration::from_secs(1)));
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let dropped = metrics.counter(RECORDS_DROPPED, RECORDS_DROPPED_HELP, &[]);
    let waits = metrics.counter(
        SPOOL_WAITS,
        "Times the engine found the spool queue full and waited for room (back-pressure: the sources are held back, nothing is dropped).",
        &[],
    );
    let unknown = metrics.counter(
        "shopfloor_unknown_target_samples_total",
        "Samples for machines or meters that are not registered.",
        &[],
    );
    let state_errors = metrics.counter(
        "shopfloor_state_save_errors_total",
        "Failed saves of the engine's accumulators.",
        &[],
    );
    let declared_errors = metrics.counter(
        "shopfloor_declared_file_errors_total",
        "Declared value-added files that could not be read.",
        &[],
    );
    let meter_resets = metrics.counter(
        "shopfloor_meter_resets_total",
        "Meter counters that went down and were taken as a reset (see [[meter]] rollover).",
        &[],
    );
    let meter_rollovers = metrics.counter(
        "shopfloor_meter_rollovers_total",
        "Meter counters that passed their modulus and were taken as a rollover.",
        &[],
    );
    let mut declared_seen: Option<std::time::SystemTime> = None;
    let mut next_agent_line = Timestamp::now();
    // The records not yet handed over, and whether the linger timer for them is running.
    let mut pending: Vec<String> = std::mem::take(&mut options.opening);
    let linger = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(linger);
    let mut lingering = false;
    let mut linger_due = !pending.is_empty();
    // The batch waiting for room in the spool queue, if any.
    let mut handing: Option<flume::r#async::SendFut<'_, Vec<String>>> = None;
    // Since when the engine has been behind its sources at a tick (see the ticker below).
    let mut behind_since: Option<Timestamp> = None;
    let lose = |batch: Vec<String>| {
        let n = batch.len() as u64;
        let total = dropped.fetch_add(n, Ordering::Relaxed) + n;
        error!(lost = n, total, "the spool task has stopped: records lost");
    };
    loop {
        let mut stop = false;
        tokio::select! {
            biased;
            _ = shutdown.wait() => stop = true,
            sent = handover(&mut handing), if handing.is_some() => {
                handing = None;
                if let Err(flume::SendError(batch)) = sent {
                    lose(batch);
                }
            }
            Some(reply) = views.signal_requests.recv() => {
                // The asker may have given up meanwhile; then nobody wants the answer.
                let _ = reply.send(engine.machine_signals());
            }
            _ = ticker.tick() => {
                let now = Timestamp::now();
                // While the engine is behind (a batch waits for room in the spool, or events
                // wait for the engine), a machine's silence may be the engine's, not the
                // machine's: its samples are in the queue. The clock then holds off, for
                // [`HOLD_WHILE_BEHIND`] at most, so a spool that stalls for a few seconds
                // (SQLite's busy wait while an old spool closes on a reload) makes no machine
                // offline; the next tick accounts the whole span.
                let behind = handing.is_some() || !events.is_empty();
                let hold = behind && {
                    let since = *behind_since.get_or_insert(now);
                    now.duration_since(since) < HOLD_WHILE_BEHIND
                };
                if !behind {
                    behind_since = None;
                }
                if !hold {
                    engine.tick(now, &mut pending);
                }
                if now >= next_agent_line {
                    pending.extend(engine.agent_line(now, &metrics));
                    next_agent_line = now + AGENT_LINE_EVERY;
                }
                let total_dropped = dropped.load(Ordering::Relaxed);
                views.snapshots.send_replace(engine.snapshot(now, total_dropped));
            }
            _ = flush.tick() => {
                if let Some(path) = &options.declared_file {
                    reload_declared(&mut engine, &options, path, &mut declared_seen, &declared_errors);
                }
                let now = Timestamp::now();
                engine.flush(now, &mut pending);
                linger_due = true;
                save_state(&engine, now, &options.state_path, &state_errors).await;
            }
            _ = &mut linger, if lingering => {
                lingering = false;
                linger_due = true;
            }
            // Only while no batch waits for room: this is what holds the sources back.
            event = events.recv(), if handing.is_none() => match event {
                Some(event) => {
                    engine.on_event(event, &mut pending);
                    // What else is queued is taken in the same turn, up to a bound, so a
                    // round of messages costs one pass of this loop (and of its other
                    // branches' futures), not one each (issue 21).
                    let mut taken = 1;
                    while taken < EVENTS_PER_TURN
                        && pending.len() < BATCH_LINES
                        && let Ok(event) = events.try_recv()
                    {
                        engine.on_event(event, &mut pending);
                        taken += 1;
                    }
                }
                None => stop = true,
            },
        }
        if stop {
            // The windows up to this moment are written and saved, so a restart continues them.
            let now = Timestamp::now();
            engine.flush(now, &mut pending);
            save_state(&engine, now, &options.state_path, &state_errors).await;
        }
        unknown.store(engine.unknown_targets, Ordering::Relaxed);
        meter_resets.store(engine.meter_resets, Ordering::Relaxed);
        meter_rollovers.store(engine.meter_rollovers, Ordering::Relaxed);
        if pending.is_empty() {
            lingering = false;
            linger_due = false;
        } else if handing.is_none() && (pending.len() >= BATCH_LINES || linger_due || stop) {
            let batch = std::mem::replace(&mut pending, Vec::with_capacity(BATCH_LINES));
            lingering = false;
            linger_due = false;
            const _: () = crate::queue::RECORDS_FROM_ENGINE.sent_as(crate::queue::WhenFull::Block);
            match records.try_send(batch) {
                Ok(()) => {}
                Err(flume::TrySendError::Full(batch)) => {
                    waits.fetch_add(1, Ordering::Relaxed);
                    handing = Some(records.send_async(batch));
                }
                Err(flume::TrySendError::Disconnected(batch)) => lose(batch),
            }
        } else if !lingering && !linger_due {
            lingering = true;
            linger
                .as_mut()
                .reset(tokio::time::Instant::now() + BATCH_LINGER);
        }
        if stop {
            // Everything goes to the spool before the engine stops: the spool task runs until
            // the last sender is gone, so these waits end.
            if let Some(send) = handing.take()
                && let Err(flume::SendError(batch)) = send.await
            {
                lose(batch);
            }
            if !pending.is_empty()
                && let Err(flume::SendError(batch)) =
                    records.send_async(std::mem::take(&mut pending)).await
            {
                lose(batch);
            }
            break;
        }
    }
}

/// The pending handover, or never when there is none (its branch is disabled then anyway).
async fn handover(
    handing: &mut Option<flume::r#async::SendFut<'_, Vec<String>>>,
) -> Result<(), flume::SendError<Vec<String>>> {
    match handing {
        Some(send) => send.await,
        None => std::future::pending().await,
    }
}

async fn save_state(
    engine: &Engine,
    now: Timestamp,
    path: &std::path::Path,
    errors: &std::sync::atomic::AtomicU64,
) {
    let state = engine.save(now);
    let path = path.to_path_buf();
    let result = tokio::task::spawn_blocking(move || persist::save(&path, &state)).await;
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            errors.fetch_add(1, Ordering::Relaxed);
            error!(error = %e, "cannot save the engine state: a restart would lose the open windows");
        }
        Err(e) => {
            errors.fetch_add(1, Ordering::Relaxed);
            error!(error = %e, "engine state save task failed");
        }
    }
}

/// Re-reads the declared value-added file when it has changed.
fn reload_declared(
    engine: &mut Engine,
    options: &RunOptions,
    path: &std::path::Path,
    seen: &mut Option<std::time::SystemTime>,
    errors: &std::sync::atomic::AtomicU64,
) {
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    if modified.is_none() || modified == *seen {
        return;
    }
    *seen = modified;
    match Declarations::new(&options.declared).with_file(path) {
        Ok(d) => {
            tracing::info!(file = %path.display(), "declared value added reloaded");
            engine.set_declarations(d);
        }
        Err(e) => {
            errors.fetch_add(1, Ordering::Relaxed);
            error!(error = %e, "declared value-added file ignored; fix it and save it again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::config::load_str;

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
            .filter(|l| l.starts_with(contract::MEASUREMENT_MACHINE_STATE))
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
    fn latest_signals_are_listed_per_machine_by_name_in_register_order() {
        let mut e = engine();
        let mut out = Vec::new();
        e.on_event(poll("cnc01", t(1), 1, 0), &mut out);
        e.on_event(poll("cnc01", t(2), 0, 5), &mut out);
        let listed = e.machine_signals();
        let ids: Vec<&str> = listed.iter().map(|m| &*m.id).collect();
        assert_eq!(ids, ["cnc01", "press01"]);
        assert_eq!(
            listed[0].signals,
            [
                (Arc::from("alarm_code"), Value::Int(5)),
                (Arc::from("run"), Value::Int(0)),
            ]
        );
        assert!(listed[1].signals.is_empty(), "press01 sent nothing");
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
    fn a_machine_whose_source_is_alive_is_not_taken_for_silent() {
        let mut e = engine();
        let mut out = Vec::new();
        for s in 1..=3 {
            e.on_event(poll("cnc01", t(s), 1, 0), &mut out);
        }
        // Last data at t=3; the source says at t=9 that it still hears the machine, its values
        // unchanged: offline_after (10 s) now counts from t=9, so the machine is still running
        // at t=14 (offline at t=13 without it) and goes offline at t=19.
        let alive = |at| SourceEvent::Alive {
            targets: vec![Target::Machine("cnc01".into())],
            at,
        };
        e.on_event(alive(t(9)), &mut out);
        out.clear();
        e.tick(t(14), &mut out);
        let offline = |out: &[String]| {
            out.iter()
                .any(|l| l.contains("machine=cnc01") && l.contains("state=\"offline\""))
        };
        assert!(!offline(&out), "{out:?}");
        e.tick(t(20), &mut out);
        let change = state_lines(&out)
            .into_iter()
            .find(|l| l.contains("machine=cnc01") && l.contains("previous="))
            .unwrap();
        // Running from t=1 to t=19 = 18 s.
        assert!(change.ends_with(
            " state=\"offline\",code=0i,previous=\"running\",previous_s=18.0 1700000019000000000"
        ));
        // Offline by silence, then heard again at t=21 with its values unchanged (nothing new
        // to write): it comes back in the state its latest values imply (run = 1: running),
        // once that has held min_duration (2 s): at the Alive of t=23, stamped t=21, when it
        // was heard again. Offline from t=19 to t=21 = 2 s. No `signal` line is written again.
        out.clear();
        e.on_event(alive(t(21)), &mut out);
        e.tick(t(22), &mut out);
        assert!(state_lines(&out).is_empty(), "{out:?}");
        e.on_event(alive(t(23)), &mut out);
        let lines = state_lines(&out);
        assert_eq!(lines.len(), 1, "{out:?}");
        assert!(
            lines[0].ends_with(
                " state=\"running\",code=1i,previous=\"offline\",previous_s=2.0 1700000021000000000"
            ),
            "{lines:?}"
        );
        assert!(!out.iter().any(|l| l.starts_with("signal,")), "{out:?}");
        // Kept alive from there: offline_after counts from t=23.
        out.clear();
        e.tick(t(32), &mut out);
        assert!(state_lines(&out).is_empty(), "{out:?}");
    }

    #[test]
    fn a_machine_a_source_said_is_gone_or_that_never_delivered_is_not_brought_back_by_alive() {
        let mut e = engine();
        let mut out = Vec::new();
        let alive = |machine: &str, at| SourceEvent::Alive {
            targets: vec![Target::Machine(machine.into())],
            at,
        };
        // press01 never delivered: nothing says what state it is in.
        e.on_event(alive("press01", t(1)), &mut out);
        e.on_event(alive("press01", t(5)), &mut out);
        assert!(state_lines(&out).is_empty(), "{out:?}");
        // cnc01 runs from t=1, then its Last Will at t=5; a source that still hears the
        // machine's controller does not undo that: only a sample does.
        for s in 1..=3 {
            e.on_event(poll("cnc01", t(s), 1, 0), &mut out);
        }
        e.on_event(
            SourceEvent::Offline {
                target: Target::Machine(Arc::from("cnc01")),
                at: t(5),
                reason: "last will".into(),
            },
            &mut out,
        );
        out.clear();
        e.on_event(alive("cnc01", t(6)), &mut out);
        e.on_event(alive("cnc01", t(9)), &mut out);
        assert!(state_lines(&out).is_empty(), "{out:?}");
        // Its next sample (t=10), then one 2 s later (min_duration): running from t=10.
        e.on_event(poll("cnc01", t(10), 1, 0), &mut out);
        e.on_event(poll("cnc01", t(12), 1, 0), &mut out);
        let lines = state_lines(&out);
        assert_eq!(lines.len(), 1, "{out:?}");
        assert!(
            lines[0].ends_with(
                " state=\"running\",code=1i,previous=\"offline\",previous_s=5.0 1700000010000000000"
            ),
            "{lines:?}"
        );
    }

    #[test]
    fn an_offline_event_makes_a_machine_offline_at_once() {
        let mut e = engine();
        let mut out = Vec::new();
        for s in 1..=3 {
            e.on_event(poll("cnc01", t(s), 1, 0), &mut out);
        }
        out.clear();
        let offline = |at| SourceEvent::Offline {
            target: Target::Machine(Arc::from("cnc01")),
            at,
            reason: "last will".into(),
        };
        e.on_event(offline(t(5)), &mut out);
        // Running from t=1 (taken after min_duration, stamped when it began) to t=5 = 4 s;
        // offline at t=5, not at the silence deadline t=3+10.
        let lines = state_lines(&out);
        assert_eq!(lines.len(), 1, "{out:?}");
        assert!(lines[0].ends_with(
            " state=\"offline\",code=0i,previous=\"running\",previous_s=4.0 1700000005000000000"
        ));
        // A second death changes nothing.
        out.clear();
        e.on_event(offline(t(6)), &mut out);
        assert!(state_lines(&out).is_empty());
    }

    #[test]
    fn a_field_error_lasts_until_the_field_delivers_or_its_device_goes_down() {
        let mut e = engine();
        let mut out = Vec::new();
        let fails = |at, error: &str| SourceEvent::FieldErrors {
            device: Arc::from("box1"),
            at,
            errors: vec![crate::model::FieldError {
                target: Target::Machine(Arc::from("cnc01")),
                signal: Arc::from("run"),
                kind: "exception",
                error: error.into(),
            }],
        };
        e.on_event(fails(t(1), "exception Illegal data address"), &mut out);
        e.on_event(fails(t(2), "exception Illegal data address"), &mut out);
        let errors = e.snapshot(t(2), 0).field_errors;
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(&*errors[0].device, "box1");
        assert_eq!(&*errors[0].signal, "run");
        // The same error again keeps the time it began.
        assert_eq!(errors[0].since, t(1));
        // Another error starts afresh.
        e.on_event(fails(t(3), "does not decode"), &mut out);
        assert_eq!(e.snapshot(t(3), 0).field_errors[0].since, t(3));
        // A value of another signal leaves it; a value of this one clears it.
        e.on_event(
            SourceEvent::Samples(vec![Sample {
                target: Target::Machine(Arc::from("cnc01")),
                signal: Arc::from("spindle_rpm"),
                value: Value::Int(1),
                at: t(4),
            }]),
            &mut out,
        );
        assert_eq!(e.snapshot(t(4), 0).field_errors.len(), 1);
        e.on_event(poll("cnc01", t(5), 1, 0), &mut out);
        assert!(e.snapshot(t(5), 0).field_errors.is_empty());
        // Its device going down clears it too: the device's reason says it all.
        e.on_event(fails(t(6), "exception Illegal data address"), &mut out);
        e.on_event(
            SourceEvent::DeviceDown {
                device: Arc::from("box1"),
                at: t(7),
                reason: "timeout".into(),
            },
            &mut out,
        );
        assert!(e.snapshot(t(7), 0).field_errors.is_empty());
    }

    #[test]
    fn machines_without_a_source_stay_offline_and_still_get_heartbeats() {
        let mut e = engine();
        let mut out = Vec::new();
        e.opening_lines(&mut out);
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
        // The heartbeat at t=60 says offline; then a poll stamped t=60 (still in the queue
        // when the heartbeat was written) shows an alarm. min_duration is 2 s: feed t=60..62.
        e.tick(t(60), &mut out);
        out.clear();
        for s in 60..=62 {
            e.on_event(poll("cnc01", t(s), 0, 9), &mut out);
        }
        let cnc: Vec<_> = state_lines(&out)
            .into_iter()
            .filter(|l| l.contains("cnc01"))
            .collect();
        assert_eq!(cnc.len(), 2, "{cnc:?}");
        assert!(cnc[0].ends_with(
            "state=\"alarm\",code=4i,previous=\"offline\",previous_s=60.0 1700000060000000000"
        ));
        // The heartbeat at t=60 is written again, now saying alarm.
        assert!(cnc[1].ends_with("state=\"alarm\",code=4i,state_s=0.0 1700000060000000000"));
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

    /// While the spool queue is full the engine takes no events (so the sources' channel
    /// fills and holds them back), yet it keeps publishing snapshots and answering the board;
    /// once there is room, everything it held arrives, nothing dropped.
    #[tokio::test]
    async fn a_full_spool_queue_holds_the_sources_back_but_not_the_board() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::new(&load_str(CONFIG, "test.toml").unwrap(), Timestamp::now());
        let (events_tx, events_rx) = mpsc::channel(4);
        let (records_tx, records_rx) = flume::bounded(1);
        // The queue is full before the engine hands anything over.
        records_tx.try_send(vec!["filler".to_string()]).unwrap();
        let (snapshots, mut snapshot_rx) = watch::channel(Snapshot::default());
        let (query, signal_requests) = SignalQuery::channel();
        let (trigger, shutdown) = crate::shutdown::channel();
        let metrics = Metrics::new();
        let options = RunOptions {
            state_path: dir.path().join("engine-state.json"),
            window_flush: Duration::from_secs(3600),
            declared: Vec::new(),
            declared_file: None,
            opening: Vec::new(),
        };
        let task = tokio::spawn(run(
            engine,
            events_rx,
            records_tx,
            Views {
                snapshots,
                signal_requests,
            },
            metrics.clone(),
            options,
            shutdown,
        ));
        // One `signal` line per poll: events until the channel stays full (the first batch to
        // wait may be the tick's lines, handed over after BATCH_LINGER, or a full one).
        let mut sent = 0usize;
        loop {
            let event = poll("cnc01", Timestamp::now(), 1, 0);
            let send = events_tx.send(event);
            match tokio::time::timeout(Duration::from_millis(500), send).await {
                Ok(Ok(())) => sent += 1,
                Ok(Err(_)) => panic!("the engine stopped"),
                Err(_) => break,
            }
            assert!(
                sent < 10 * BATCH_LINES,
                "the engine never held the sources back"
            );
        }
        assert_eq!(metrics.sum(SPOOL_WAITS), 1);
        // The board still gets answers and fresh snapshots.
        let signals = query.latest().await.expect("an answer while waiting");
        assert_eq!(signals.len(), 2);
        snapshot_rx.borrow_and_update();
        tokio::time::timeout(Duration::from_secs(3), snapshot_rx.changed())
            .await
            .expect("a snapshot while waiting")
            .unwrap();
        // Room again: the held batch goes, the events flow, and at shutdown all is handed over.
        let mut lines = Vec::new();
        lines.extend(records_rx.recv_async().await.unwrap());
        let more = poll("cnc01", Timestamp::now(), 1, 0);
        let receiver = tokio::spawn(async move {
            let mut lines = lines;
            while let Ok(batch) = records_rx.recv_async().await {
                lines.extend(batch);
            }
            lines
        });
        tokio::time::timeout(Duration::from_secs(5), events_tx.send(more))
            .await
            .expect("the engine takes events again")
            .unwrap();
        sent += 1;
        // Every event taken before the stop (at shutdown what is still queued is not).
        while events_tx.capacity() < events_tx.max_capacity() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        trigger.fire();
        task.await.unwrap();
        let lines = receiver.await.unwrap();
        let signal_lines = lines
            .iter()
            .filter(|l| l.starts_with(contract::MEASUREMENT_SIGNAL))
            .count();
        assert_eq!(signal_lines, sent, "every event's line arrived");
        assert_eq!(metrics.sum(RECORDS_DROPPED), 0);
    }
}
