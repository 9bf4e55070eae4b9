//! One energy or water meter: readings to consumption per window.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use tracing::{info, warn};

use super::calendar::Calendar;
use super::energy::{
    Coefficients, Counter, CounterStep, EnergyTotals, Wrap, distribute, to_base_unit,
};
use super::machine::MachineTrack;
use super::windows::{self, Window};
use crate::config::{Meter, Reading};
use crate::line_protocol::contract;
use crate::line_protocol::contract::{
    MEASUREMENT_ENERGY, MEASUREMENT_SIGNAL, SCOPE_SITE, TAG_CARRIER, TAG_METER, TAG_SCOPE,
    TAG_SHIFT, TAG_UNIT, TAG_WINDOW,
};
use crate::line_protocol::{LineBuilder, tag_prefix};
use crate::model::{Carrier, State};

#[derive(Debug)]
pub(super) struct MeterTrack {
    pub id: Arc<str>,
    pub carrier: Carrier,
    /// Base units per unit of the reading.
    to_base: f64,
    /// The machine the meter belongs to, when it is not a site meter.
    pub machine: Option<usize>,
    signal: Option<Arc<str>>,
    reading: Reading,
    /// The counter's modulus and rated maximum rate, in base units.
    wrap: Option<Wrap>,
    /// `signal,county=…,meter=…,carrier=…` for the raw readings.
    pub signal_prefix: String,
    /// `energy,county=…,meter=…,carrier=…,unit=…,scope=…` for the window totals.
    energy_prefix: String,
    pub counter: Counter,
    pub last_rate: Option<(Timestamp, f64)>,
    pub windows: BTreeMap<Window, EnergyTotals>,
}

impl MeterTrack {
    pub fn new(m: &Meter, base: &[(&str, &str)], machine: Option<usize>) -> Self {
        let unit = m.unit.as_deref().unwrap_or(m.carrier.default_unit());
        let to_base = to_base_unit(m.carrier, unit).unwrap_or(1.0);
        let base_unit = m.carrier.default_unit();
        let raw: Vec<(&str, &str)> = base
            .iter()
            .copied()
            .chain([
                (TAG_METER, m.id.as_str()),
                (TAG_CARRIER, m.carrier.as_str()),
            ])
            .collect();
        let scope = if machine.is_some() {
            m.scope.as_str()
        } else {
            SCOPE_SITE
        };
        let energy: Vec<(&str, &str)> = raw
            .iter()
            .copied()
            .chain([(TAG_UNIT, base_unit), (TAG_SCOPE, scope)])
            .collect();
        MeterTrack {
            id: Arc::from(m.id.as_str()),
            carrier: m.carrier,
            to_base,
            machine,
            signal: m.signal.as_deref().map(Arc::from),
            reading: m.reading,
            wrap: m.rollover.map(|modulus| Wrap {
                modulus: modulus * to_base,
                max_rate: m.max_rate.map(|r| r * to_base),
            }),
            signal_prefix: tag_prefix(MEASUREMENT_SIGNAL, &raw),
            energy_prefix: tag_prefix(MEASUREMENT_ENERGY, &energy),
            counter: Counter::default(),
            last_rate: None,
            windows: BTreeMap::new(),
        }
    }

    /// The signal that carries the accounted reading.
    pub fn reading_signal(&self) -> Option<&Arc<str>> {
        self.signal.as_ref()
    }

    /// Takes one reading of the meter's accounted signal. `owner` is the machine the meter
    /// belongs to, for consumption by state.
    pub fn reading(
        &mut self,
        value: f64,
        at: Timestamp,
        max_gap: SignedDuration,
        calendar: &Calendar,
        owner: Option<&MachineTrack>,
    ) -> MeterEvent {
        let value = value * self.to_base;
        let mut event = MeterEvent::default();
        let (from, quantity) = match self.reading {
            Reading::Counter => {
                let previous = self.counter.last_at;
                let last = self.counter.last;
                let recent_rate = self.counter.recent_rate;
                let step = self.counter.step(value, at, self.wrap);
                let max_rate = self.wrap.and_then(|w| w.max_rate);
                match step {
                    CounterStep::First => return event,
                    CounterStep::Reset(_) => {
                        event.reset = true;
                        let would_be = self.wrap.map(|w| w.modulus - last.unwrap_or(0.0) + value);
                        warn!(
                            meter = %self.id, last, value, wrap_would_add = would_be,
                            max_rate, recent_rate,
                            "meter counter went down: taken as a reset (a wrap past the modulus would not be plausible)"
                        );
                    }
                    CounterStep::Rollover(added) => {
                        event.rollover = true;
                        info!(
                            meter = %self.id, last, value, added, max_rate, recent_rate,
                            "meter counter passed its modulus: taken as a rollover"
                        );
                    }
                    CounterStep::Delta(_) => {}
                }
                (previous.unwrap_or(at), step.delta())
            }
            Reading::Power => {
                let last = self.last_rate.replace((at, value));
                let Some((t0, v0)) = last else { return event };
                if at <= t0 {
                    return event;
                }
                if at.duration_since(t0) > max_gap {
                    // No reading for too long: the consumption in between is unknown.
                    event.gap = true;
                    self.mark(calendar, at, |t| t.gaps += 1);
                    return event;
                }
                // The trapezoid between the two readings, the rate being per hour.
                let hours = at.duration_since(t0).as_secs_f64() / 3600.0;
                (t0, (v0 + value) / 2.0 * hours)
            }
        };
        if self.reading == Reading::Counter && at.duration_since(from) > max_gap {
            event.gap = true;
            warn!(meter = %self.id, from = %from, to = %at, "gap in meter readings: consumption spread evenly over it");
            self.mark(calendar, at, |t| t.gaps += 1);
        }
        if event.reset {
            self.mark(calendar, at, |t| t.resets += 1);
        }
        if event.rollover {
            self.mark(calendar, at, |t| t.rollovers += 1);
        }
        let span = if from < at {
            windows::overlapping(calendar, from, at)
        } else {
            windows::containing(calendar, at)
        };
        let shares = owner.map(|m| m.state_shares(from, at));
        distribute(
            &mut self.windows,
            &span,
            (from, at),
            quantity,
            shares.as_ref(),
        );
        event
    }

    fn mark(&mut self, calendar: &Calendar, at: Timestamp, f: impl Fn(&mut EnergyTotals)) {
        for w in windows::containing(calendar, at) {
            f(self.windows.entry(w).or_default());
        }
    }

    /// The `energy` line of one window. `good_parts` is the owner machine's good parts in the
    /// same window, for energy per good part.
    pub fn energy_line(
        &self,
        window: &Window,
        t: &EnergyTotals,
        coefficients: &Coefficients,
        good_parts: Option<i64>,
    ) -> Option<String> {
        let mut b = LineBuilder::with_prefix(&self.energy_prefix)
            .tag(TAG_WINDOW, window.kind.tag())
            .tag(TAG_SHIFT, window.shift.as_deref().unwrap_or(""))
            .float(contract::energy::QUANTITY, t.quantity);
        if let Some(tce) = coefficients.tce(self.carrier, t.quantity) {
            b = b.float(contract::energy::TCE, tce);
        }
        b = b
            .int(contract::energy::GAPS, t.gaps)
            .int(contract::energy::RESETS, t.resets)
            .int(contract::energy::ROLLOVERS, t.rollovers);
        if self.machine.is_some() {
            for (state, q) in State::ALL.into_iter().zip(t.by_state) {
                b = b.float(contract::energy::quantity_in(state), q);
            }
            if let Some(per) =
                good_parts.and_then(|g| super::indicators::ratio(t.quantity, g as f64))
            {
                b = b.float(contract::energy::PER_GOOD_PART, per);
            }
        }
        b.finish(window.start)
    }
}

/// What a reading revealed, for counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct MeterEvent {
    pub reset: bool,
    pub rollover: bool,
    pub gap: bool,
}
