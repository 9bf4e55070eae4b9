//! The time model of one machine per window, after ISO 22400-2.
//!
//! Every nanosecond of a window is given to exactly one state (running, setup, idle, alarm,
//! stopped, offline), so a closed window's state seconds add up exactly to its length. Beside
//! that partition the calendar says how much of the window was planned busy time (PBT) and
//! planned downtime, and how much of the running time fell inside PBT (the actual production
//! time that availability divides by PBT).

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::calendar::{Calendar, Category};
use super::windows::{SteadyCache, Window, overlapping};
use crate::model::State;

/// Totals of one machine in one window. Durations in nanoseconds, exact.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TimeTotals {
    /// By state, in the order of [`State::ALL`].
    pub state_ns: [i64; 6],
    /// Planned busy time.
    pub planned_busy_ns: i64,
    /// Planned downtime (maintenance inside planned operation time).
    pub planned_down_ns: i64,
    /// Running time inside planned busy time: actual production time.
    pub running_busy_ns: i64,
    pub parts_total: i64,
    pub parts_good: i64,
    /// Whether good parts are counted (a good or reject counter exists).
    pub good_known: bool,
    /// Whether the machine delivered valid data in the window (it is networked).
    pub delivered: bool,
}

impl TimeTotals {
    pub fn state_s(&self, state: State) -> f64 {
        self.state_ns[state_index(state)] as f64 / 1e9
    }

    /// The sum of all state time: the part of the window accounted so far.
    pub fn accounted_ns(&self) -> i64 {
        self.state_ns.iter().sum()
    }
}

pub fn state_index(state: State) -> usize {
    State::ALL.iter().position(|s| *s == state).unwrap_or(5)
}

/// The calendar and the windows of one stretch of time being accounted.
#[derive(Debug, Clone, Copy)]
pub struct Accounting<'a> {
    pub calendar: &'a Calendar,
    /// Every window overlapping the stretch (see `windows::overlapping`).
    pub windows: &'a [Window],
}

impl Accounting<'_> {
    /// Gives `[from, to)` in `state` to every window it overlaps, creating totals as needed.
    /// `sign` is +1 to add and −1 to take back (when a change turns out to have begun earlier
    /// than the time already accounted).
    pub fn add(
        &self,
        totals: &mut BTreeMap<Window, TimeTotals>,
        machine: &str,
        (from, to): (Timestamp, Timestamp),
        state: State,
        sign: i64,
    ) {
        if to <= from {
            return;
        }
        let segments = self.calendar.segments(machine, from, to);
        account(totals, self.windows, &segments, (from, to), state, sign);
    }
}

/// What [`Accounting::add`] with the windows from `windows::overlapping` does, through a
/// machine's [`SteadyCache`]: a stretch inside the steady stretch around it takes its windows
/// and its one calendar category from there; any other is computed afresh.
#[allow(clippy::too_many_arguments)]
pub fn add_cached(
    totals: &mut BTreeMap<Window, TimeTotals>,
    cache: &mut SteadyCache,
    calendar: &Calendar,
    machine: &str,
    (from, to): (Timestamp, Timestamp),
    state: State,
    sign: i64,
) {
    if to <= from {
        return;
    }
    match cache.get(calendar, machine, from, to) {
        Some(steady) => {
            let segments = [(from, to, steady.category)];
            account(totals, &steady.windows, &segments, (from, to), state, sign);
        }
        None => {
            let windows = overlapping(calendar, from, to);
            let acc = Accounting {
                calendar,
                windows: &windows,
            };
            acc.add(totals, machine, (from, to), state, sign);
        }
    }
}

fn account(
    totals: &mut BTreeMap<Window, TimeTotals>,
    windows: &[Window],
    segments: &[(Timestamp, Timestamp, Category)],
    (from, to): (Timestamp, Timestamp),
    state: State,
    sign: i64,
) {
    let index = state_index(state);
    for window in windows {
        let (ws, we) = (window.start.max(from), window.end.min(to));
        if we <= ws {
            continue;
        }
        let t = totals.entry(window.clone()).or_default();
        for (a, b, category) in segments {
            let (s, e) = ((*a).max(ws), (*b).min(we));
            if e <= s {
                continue;
            }
            let ns = nanos(s, e) * sign;
            t.state_ns[index] += ns;
            match category {
                Category::PlannedBusy => {
                    t.planned_busy_ns += ns;
                    if state == State::Running {
                        t.running_busy_ns += ns;
                    }
                }
                Category::PlannedDown => t.planned_down_ns += ns,
                Category::Unplanned => {}
            }
        }
    }
}

/// Nanoseconds from `a` to `b`.
pub fn nanos(a: Timestamp, b: Timestamp) -> i64 {
    i64::try_from(b.duration_since(a).as_nanos()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::config;
    use crate::engine::windows::WindowKind;
    use jiff::civil::{date, time};
    use jiff::tz::TimeZone;

    fn shift_calendar(tz: &TimeZone) -> Calendar {
        let cfg = config::Calendar {
            shifts: vec![config::Shift {
                name: "day".into(),
                days: vec![config::Weekday::Mon],
                start: time(8, 0, 0, 0),
                end: time(16, 0, 0, 0),
                breaks: vec![config::Break {
                    start: time(12, 0, 0, 0),
                    end: time(12, 30, 0, 0),
                }],
            }],
            ..Default::default()
        };
        Calendar::new(&cfg, tz.clone())
    }

    fn at(tz: &TimeZone, h: i8, m: i8) -> Timestamp {
        date(2026, 11, 30)
            .at(h, m, 0, 0)
            .to_zoned_datetime(tz.clone())
            .unwrap()
            .timestamp()
    }

    #[test]
    fn the_shift_of_the_issue_gives_availability_of_two_thirds() {
        // An 8 h shift (08:00–16:00) with a 30 min break: PBT 7.5 h. The machine runs 5 h
        // (08:00–12:00 and 12:30–13:30), is in alarm 1 h (13:30–14:30) and idle 1.5 h
        // (14:30–16:00). Availability = 5 / 7.5 = 0.6667.
        let tz = TimeZone::get("Asia/Shanghai").unwrap();
        let cal = shift_calendar(&tz);
        let (from, to) = (at(&tz, 8, 0), at(&tz, 16, 0));
        let windows = overlapping(&cal, from, to);
        let mut totals = BTreeMap::new();
        let acc = Accounting {
            calendar: &cal,
            windows: &windows,
        };
        let mut go = |a, b, s| acc.add(&mut totals, "cnc01", (a, b), s, 1);
        go(at(&tz, 8, 0), at(&tz, 12, 0), State::Running);
        // Idle through the break: not planned, so it costs nothing.
        go(at(&tz, 12, 0), at(&tz, 12, 30), State::Idle);
        go(at(&tz, 12, 30), at(&tz, 13, 30), State::Running);
        go(at(&tz, 13, 30), at(&tz, 14, 30), State::Alarm);
        go(at(&tz, 14, 30), at(&tz, 16, 0), State::Idle);
        let shift = totals
            .keys()
            .find(|w| w.kind == WindowKind::Shift)
            .unwrap()
            .clone();
        let t = &totals[&shift];
        assert_eq!(t.planned_busy_ns, 27_000 * 1_000_000_000, "7.5 h");
        assert_eq!(t.running_busy_ns, 18_000 * 1_000_000_000, "5 h");
        assert_eq!(t.state_s(State::Alarm), 3600.0);
        // The state seconds fill the shift window exactly: 8 h.
        assert_eq!(t.accounted_ns(), shift.length().as_nanos() as i64);
        let a = crate::engine::indicators::availability(
            t.running_busy_ns as f64 / 1e9,
            t.planned_busy_ns as f64 / 1e9,
        )
        .unwrap();
        assert!((a - 0.6667).abs() < 1e-4, "{a}");
    }

    #[test]
    fn taking_time_back_moves_it_between_states() {
        let tz = TimeZone::get("Asia/Shanghai").unwrap();
        let cal = shift_calendar(&tz);
        let (from, to) = (at(&tz, 9, 0), at(&tz, 10, 0));
        let windows = overlapping(&cal, from, to);
        let mut totals = BTreeMap::new();
        let acc = Accounting {
            calendar: &cal,
            windows: &windows,
        };
        acc.add(&mut totals, "m", (from, to), State::Idle, 1);
        // The change to running began at 09:40, after 09:40–10:00 had been accounted as idle.
        let began = at(&tz, 9, 40);
        acc.add(&mut totals, "m", (began, to), State::Idle, -1);
        acc.add(&mut totals, "m", (began, to), State::Running, 1);
        let hour = totals
            .keys()
            .find(|w| w.kind == WindowKind::Hour)
            .unwrap()
            .clone();
        let t = &totals[&hour];
        assert_eq!(t.state_s(State::Idle), 2400.0);
        assert_eq!(t.state_s(State::Running), 1200.0);
        assert_eq!(t.running_busy_ns, 1_200_000_000_000);
        assert_eq!(t.planned_busy_ns, 3_600_000_000_000);
    }

    #[test]
    fn accounting_through_the_cache_equals_accounting_afresh() {
        use crate::engine::windows::tests::{cases, steps};
        use crate::engine::windows::{SteadyCache, Window, containing, overlapping};
        use crate::model::State;
        use jiff::SignedDuration;
        use std::collections::BTreeMap;
        let ns = SignedDuration::from_nanos;
        for (cal, start, end) in cases() {
            let mut random = steps(0x9E37_79B9_7F4A_7C15);
            let mut cache = SteadyCache::default();
            let mut cached: BTreeMap<Window, TimeTotals> = BTreeMap::new();
            let mut afresh: BTreeMap<Window, TimeTotals> = BTreeMap::new();
            let direct = |totals: &mut BTreeMap<Window, TimeTotals>, from, to, state, sign| {
                let windows = overlapping(&cal, from, to);
                let acc = Accounting {
                    calendar: &cal,
                    windows: &windows,
                };
                acc.add(totals, "m1", (from, to), state, sign);
            };
            // Every edge in the days: of windows (hours, days, months, shifts) and of the
            // calendar's categories (breaks, maintenance, holidays). Around each, stretches of
            // a few seconds cross it; between them one long stretch crosses many.
            let mut edges: Vec<Timestamp> = overlapping(&cal, start, end)
                .iter()
                .flat_map(|w| [w.start, w.end])
                .chain(
                    cal.segments("m1", start, end)
                        .iter()
                        .flat_map(|p| [p.0, p.1]),
                )
                .collect();
            edges.sort();
            edges.dedup();
            let mut accounted = start;
            let mut state = State::Idle;
            for edge in edges.into_iter().filter(|e| *e > start && *e < end) {
                let before = edge - ns(random(10_000_000_000));
                let after = edge + ns(random(10_000_000_000));
                let mut targets = vec![before.max(accounted)];
                while *targets.last().unwrap() < after {
                    let last = *targets.last().unwrap();
                    targets.push(last + ns(1 + random(3_000_000_000)));
                }
                for now in targets {
                    if now <= accounted {
                        continue;
                    }
                    add_cached(
                        &mut cached,
                        &mut cache,
                        &cal,
                        "m1",
                        (accounted, now),
                        state,
                        1,
                    );
                    direct(&mut afresh, accounted, now, state, 1);
                    accounted = now;
                    if random(3) == 0 {
                        // A change that began earlier than the time accounted: that time is
                        // moved between states.
                        let to = State::ALL[random(6) as usize];
                        let at = now - ns(random(20_000_000_000));
                        for (s, sign) in [(state, -1), (to, 1)] {
                            add_cached(&mut cached, &mut cache, &cal, "m1", (at, now), s, sign);
                            direct(&mut afresh, at, now, s, sign);
                        }
                        state = to;
                    }
                    // Samples look up the windows of their moment through the same cache.
                    if random(2) == 0 {
                        let t = now - ns(random(3_000_000_000));
                        assert_eq!(cache.containing(&cal, "m1", t), containing(&cal, t));
                    }
                }
            }
            assert!(cached.len() > 20, "{}", cached.len());
            assert_eq!(cached, afresh);
        }
    }
}
