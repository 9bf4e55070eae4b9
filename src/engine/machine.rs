//! One machine as the engine sees it: its latest signals, its state, its part counters and its
//! time model per window.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use tracing::info;

use super::calendar::Calendar;
use super::energy::{Counter, CounterStep};
use super::signals::Signals;
use super::timemodel::{self, TimeTotals};
use super::windows::{SteadyCache, Window};
use super::{seconds, state};
use crate::config::Machine;
use crate::engine::config::StateRules;
use crate::line_protocol::contract::{
    MEASUREMENT_MACHINE_STATE, MEASUREMENT_MACHINE_TIME, MEASUREMENT_SIGNAL, TAG_CNC, TAG_KIND,
    TAG_MACHINE, TAG_SHIFT, TAG_WINDOW, machine_state, machine_time,
};
use crate::line_protocol::{LineBuilder, tag_prefix};
use crate::model::{Sample, State};

/// How far back state changes are kept, for sharing a machine meter's consumption between
/// states: longer than any sensible gap between two meter readings.
const HISTORY: SignedDuration = SignedDuration::from_hours(2);

/// Distinct signals a machine keeps the latest value of (for its state rules and the board).
pub const MAX_SIGNALS: usize = 1000;

#[derive(Debug)]
pub(super) struct MachineTrack {
    pub id: Arc<str>,
    pub name: String,
    pub kind: String,
    pub cnc: bool,
    pub digital: bool,
    /// An industrial robot (`kind = "robot"`), counted in the fleet's `machines_robot`.
    pub robot: bool,
    pub rules: Option<StateRules>,
    /// Where the rules' signals are among `signals`.
    pub found: state::Found,
    pub parts_signal: Option<Arc<str>>,
    pub good_signal: Option<Arc<str>>,
    pub reject_signal: Option<Arc<str>>,
    pub ideal_cycle_s: Option<f64>,
    pub value_added_per_part: Option<f64>,
    pub gross_output_per_part: Option<f64>,
    /// `signal,county=…,machine=…` ready for fields.
    pub signal_prefix: String,
    pub state_prefix: String,
    pub time_prefix: String,
    /// Latest values and when each changed.
    pub signals: Signals,
    pub last_data: Option<Timestamp>,
    pub state: State,
    pub since: Timestamp,
    /// A candidate state waiting out the rule set's `min_duration`.
    pub pending: Option<(State, Timestamp)>,
    /// When a line for this machine was last written, for the heartbeat.
    pub last_written: Timestamp,
    /// The timestamp of the last heartbeat line, which a later-stamped change may have to
    /// correct (see `change_state`).
    pub last_heartbeat: Option<Timestamp>,
    /// Time is accounted to windows up to here.
    pub accounted_to: Timestamp,
    /// The windows and calendar category around the latest accounting, reused while stretches
    /// to account stay inside.
    pub steady: SteadyCache,
    /// The same around the latest sample, apart: samples stamped by a device (or replayed
    /// from its buffer) can lie in another hour than the accounting.
    pub steady_samples: SteadyCache,
    pub windows: BTreeMap<Window, TimeTotals>,
    pub parts: Counter,
    pub good: Counter,
    pub reject: Counter,
    /// Recent state changes (when each state began), oldest first.
    pub history: VecDeque<(Timestamp, State)>,
    /// Offline because a source said the machine is gone (a Last Will), not by silence: only
    /// a sample brings it back, not a source that merely still hears it.
    pub told_offline: bool,
}

impl MachineTrack {
    pub fn new(
        m: &Machine,
        state_rules: &[StateRules],
        base: &[(&str, &str)],
        now: Timestamp,
    ) -> Self {
        let cnc = if m.cnc { "true" } else { "false" };
        let tags: Vec<(&str, &str)> = base
            .iter()
            .copied()
            .chain([
                (TAG_MACHINE, m.id.as_str()),
                (TAG_KIND, m.kind.as_str()),
                (TAG_CNC, cnc),
            ])
            .collect();
        let arc = |s: &Option<String>| s.as_deref().map(Arc::from);
        MachineTrack {
            id: Arc::from(m.id.as_str()),
            name: m.name.clone(),
            kind: m.kind.clone(),
            cnc: m.cnc,
            digital: m.is_digital(),
            robot: m.is_robot(),
            rules: state::rules_for(m, state_rules).cloned(),
            found: state::Found::default(),
            parts_signal: arc(&m.parts_signal),
            good_signal: arc(&m.good_signal),
            reject_signal: arc(&m.reject_signal),
            ideal_cycle_s: m.ideal_cycle.map(|d| d.as_secs_f64()),
            value_added_per_part: m.value_added_per_part,
            gross_output_per_part: m.gross_output_per_part,
            signal_prefix: tag_prefix(MEASUREMENT_SIGNAL, &tags),
            state_prefix: tag_prefix(MEASUREMENT_MACHINE_STATE, &tags),
            time_prefix: tag_prefix(MEASUREMENT_MACHINE_TIME, &tags),
            signals: Signals::default(),
            last_data: None,
            state: State::Offline,
            since: now,
            pending: None,
            last_written: now,
            last_heartbeat: None,
            accounted_to: now,
            steady: SteadyCache::default(),
            steady_samples: SteadyCache::default(),
            windows: BTreeMap::new(),
            parts: Counter::default(),
            good: Counter::default(),
            reject: Counter::default(),
            history: VecDeque::from([(now, State::Offline)]),
            told_offline: false,
        }
    }

    /// Takes the samples of one poll or message, all stamped `at`.
    pub fn samples(
        &mut self,
        at: Timestamp,
        group: &[Sample],
        calendar: &Calendar,
        out: &mut Vec<String>,
    ) {
        let line = group.iter().fold(
            LineBuilder::with_prefix_for(&self.signal_prefix, group.len()),
            |b, s| b.value(&s.signal, &s.value),
        );
        out.extend(line.finish(at));
        let known = self.signals.len();
        for s in group {
            // A signal name built from a topic capture could be anything: past the bound, new
            // names are still written, just not kept for the rules and the board.
            if self.signals.len() >= MAX_SIGNALS && self.signals.get(&s.signal).is_none() {
                continue;
            }
            self.signals.update(&s.signal, &s.value, at);
        }
        if self.signals.len() != known {
            // New signals (a device's first poll): no room for more kept than arrived.
            self.signals.shrink_to_fit();
        }
        self.last_data = Some(self.last_data.map_or(at, |t| t.max(at)));
        let mut steady = std::mem::take(&mut self.steady_samples);
        let here = steady.containing(calendar, &self.id, at);
        self.count_parts(at, group, here);
        self.steady_samples = steady;
        self.told_offline = false;
        self.derive_state(at, calendar, out);
    }

    /// The state the latest signals imply at `at`, taken now or once it has held for the rule
    /// set's `min_duration`.
    pub fn derive_state(&mut self, at: Timestamp, calendar: &Calendar, out: &mut Vec<String>) {
        let candidate = match &self.rules {
            Some(rules) => state::evaluate(
                rules,
                &state::Inputs {
                    signals: &self.signals,
                    at,
                },
                &mut self.found,
            ),
            // Without rules the engine can only say the machine delivers data.
            None => State::Idle,
        };
        let min = self
            .rules
            .as_ref()
            .map_or(SignedDuration::ZERO, |r| super::to_signed(r.min_duration));
        if candidate == self.state {
            self.pending = None;
            return;
        }
        let began = match self.pending {
            Some((state, began)) if state == candidate => began,
            _ => at,
        };
        if at.duration_since(began) >= min {
            self.change_state(candidate, began, calendar, out);
        } else {
            self.pending = Some((candidate, began));
        }
    }

    /// Marks the windows containing the reading as delivered, and gives them the part
    /// counters' increments.
    fn count_parts(&mut self, at: Timestamp, group: &[Sample], here: &[Window]) {
        let reading = |name: &Option<Arc<str>>| {
            name.as_ref().and_then(|n| {
                group
                    .iter()
                    .find(|s| s.signal == *n)
                    .and_then(|s| s.value.as_f64())
            })
        };
        let step = |counter: &mut Counter, value: Option<f64>, what: &str, id: &str| {
            let value = value?;
            let step = counter.step(value, at, None);
            if let CounterStep::Reset(_) = step {
                info!(machine = id, counter = what, value, "part counter reset");
            }
            Some(step.delta().round() as i64)
        };
        let total = step(
            &mut self.parts,
            reading(&self.parts_signal),
            "parts",
            &self.id,
        );
        let good = step(&mut self.good, reading(&self.good_signal), "good", &self.id);
        let rejects = step(
            &mut self.reject,
            reading(&self.reject_signal),
            "reject",
            &self.id,
        );
        let good = good.or_else(|| Some(total? - rejects?));
        let known = self.good_signal.is_some() || self.reject_signal.is_some();
        for w in here {
            let t = self.windows.entry(w.clone()).or_default();
            t.delivered = true;
            t.parts_total += total.unwrap_or(0);
            t.parts_good += good.unwrap_or(0);
            t.good_known |= known;
        }
    }

    /// Gives the time since the last accounting to the current state.
    pub fn account_to(&mut self, now: Timestamp, calendar: &Calendar) {
        if now <= self.accounted_to {
            return;
        }
        self.account(calendar, (self.accounted_to, now), self.state, 1);
        self.accounted_to = now;
    }

    /// Gives `stretch` in `state` to the windows (`sign` −1 takes it back).
    fn account(
        &mut self,
        calendar: &Calendar,
        stretch: (Timestamp, Timestamp),
        state: State,
        sign: i64,
    ) {
        timemodel::add_cached(
            &mut self.windows,
            &mut self.steady,
            calendar,
            &self.id,
            stretch,
            state,
            sign,
        );
    }

    /// Writes a state change stamped `at`, when the new state began. That can be earlier than
    /// the time already accounted (a poll result still in the queue during a tick, or a state
    /// waiting out `min_duration`): that stretch is then moved from the old state to the new.
    /// It can also be earlier than the last heartbeat, which then stated the old state for a
    /// moment that belongs to the new one: it is rewritten with the same timestamp, which
    /// overwrites it in the store, so the stored timeline never contradicts itself.
    pub fn change_state(
        &mut self,
        to: State,
        at: Timestamp,
        calendar: &Calendar,
        out: &mut Vec<String>,
    ) {
        let at = at.max(self.since);
        if at >= self.accounted_to {
            self.account_to(at, calendar);
        } else {
            let stretch = (at, self.accounted_to);
            self.account(calendar, stretch, self.state, -1);
            self.account(calendar, stretch, to, 1);
        }
        let previous = self.state;
        let previous_s = seconds(at.duration_since(self.since).max(SignedDuration::ZERO));
        info!(machine = %self.id, from = %previous, to = %to, "state change");
        let line = LineBuilder::with_prefix(&self.state_prefix)
            .string(machine_state::STATE, to.as_str())
            .int(machine_state::CODE, to.code())
            .string(machine_state::PREVIOUS, previous.as_str())
            .float(machine_state::PREVIOUS_S, previous_s);
        out.extend(line.finish(at));
        self.state = to;
        self.since = at;
        self.pending = None;
        self.history.push_back((at, to));
        while self.history.len() > 1 && self.history[1].0 < at - HISTORY {
            self.history.pop_front();
        }
        match self.last_heartbeat {
            Some(hb) if hb >= at => out.extend(self.heartbeat_line(hb)),
            _ => self.last_written = at,
        }
    }

    pub fn heartbeat_line(&self, at: Timestamp) -> Option<String> {
        LineBuilder::with_prefix(&self.state_prefix)
            .string(machine_state::STATE, self.state.as_str())
            .int(machine_state::CODE, self.state.code())
            .float(
                machine_state::STATE_S,
                seconds(at.duration_since(self.since).max(SignedDuration::ZERO)),
            )
            .finish(at)
    }

    /// The share of `[from, to)` spent in each state, in `State::ALL` order.
    pub fn state_shares(&self, from: Timestamp, to: Timestamp) -> [f64; 6] {
        let mut shares = [0.0; 6];
        let total = super::timemodel::nanos(from, to);
        if total <= 0 {
            shares[super::timemodel::state_index(self.state_at(to))] = 1.0;
            return shares;
        }
        let mut entries: Vec<(Timestamp, State)> = self.history.iter().copied().collect();
        entries.push((to, self.state));
        for pair in entries.windows(2) {
            let (s, e) = (pair[0].0.max(from), pair[1].0.min(to));
            if e > s {
                shares[super::timemodel::state_index(pair[0].1)] +=
                    super::timemodel::nanos(s, e) as f64 / total as f64;
            }
        }
        // Before the oldest kept change the state is unknown: offline.
        let first = entries.first().map_or(to, |e| e.0);
        if first > from {
            shares[super::timemodel::state_index(State::Offline)] +=
                super::timemodel::nanos(from, first.min(to)) as f64 / total as f64;
        }
        shares
    }

    fn state_at(&self, t: Timestamp) -> State {
        self.history
            .iter()
            .rev()
            .find(|(start, _)| *start <= t)
            .map_or(State::Offline, |(_, s)| *s)
    }

    /// The `machine_time` line of one window.
    pub fn time_line(&self, window: &Window, t: &TimeTotals) -> Option<String> {
        let planned_s = t.planned_busy_ns as f64 / 1e9;
        let running_planned_s = t.running_busy_ns as f64 / 1e9;
        let running_s = t.state_s(State::Running);
        let availability = super::indicators::availability(running_planned_s, planned_s);
        let effectiveness = self
            .ideal_cycle_s
            .and_then(|c| super::indicators::effectiveness(c, t.parts_total, running_s));
        let quality = t
            .good_known
            .then(|| super::indicators::quality(t.parts_good, t.parts_total))
            .flatten();
        let mut b = LineBuilder::with_prefix(&self.time_prefix)
            .tag(TAG_WINDOW, window.kind.tag())
            .tag(TAG_SHIFT, window.shift.as_deref().unwrap_or(""))
            .float(machine_time::PLANNED_S, planned_s)
            .float(machine_time::PLANNED_STOP_S, t.planned_down_ns as f64 / 1e9)
            .float(machine_time::RUNNING_PLANNED_S, running_planned_s);
        for state in State::ALL {
            b = b.float(machine_time::seconds_in(state), t.state_s(state));
        }
        b = b.int(machine_time::PARTS_TOTAL, t.parts_total);
        if t.good_known {
            b = b.int(machine_time::PARTS_GOOD, t.parts_good);
        }
        for (name, value) in [
            (machine_time::AVAILABILITY, availability),
            (machine_time::EFFECTIVENESS, effectiveness),
            (machine_time::QUALITY, quality),
            (
                machine_time::OEE,
                super::indicators::oee(availability, effectiveness, quality),
            ),
        ] {
            if let Some(v) = value {
                b = b.float(name, v);
            }
        }
        b.finish(window.start)
    }
}
