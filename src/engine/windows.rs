//! Reporting windows: the hour, the shift, the day and the month, in the site's time zone.
//!
//! Totals are kept per window and written with the window's start as timestamp, rewritten while
//! the window is open, so a dashboard sees live totals and a restart simply continues. A day is
//! a local calendar day, 23 or 25 hours long across a daylight-saving change.

use std::sync::Arc;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::calendar::{Calendar, Category, next_month_start};
use crate::line_protocol::contract::{WINDOW_DAY, WINDOW_HOUR, WINDOW_MONTH, WINDOW_SHIFT};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum WindowKind {
    Hour,
    Shift,
    Day,
    Month,
}

impl WindowKind {
    /// The `window` tag.
    pub fn tag(self) -> &'static str {
        match self {
            WindowKind::Hour => WINDOW_HOUR,
            WindowKind::Shift => WINDOW_SHIFT,
            WindowKind::Day => WINDOW_DAY,
            WindowKind::Month => WINDOW_MONTH,
        }
    }
}

/// One window instance.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Window {
    pub kind: WindowKind,
    pub start: Timestamp,
    pub end: Timestamp,
    /// The shift's name, for shift windows.
    pub shift: Option<Arc<str>>,
}

impl Window {
    pub fn length(&self) -> SignedDuration {
        self.end.duration_since(self.start)
    }

    pub fn contains(&self, t: Timestamp) -> bool {
        self.start <= t && t < self.end
    }
}

/// Every window of every kind that overlaps `[from, to)`, shifts from the calendar.
pub fn overlapping(calendar: &Calendar, from: Timestamp, to: Timestamp) -> Vec<Window> {
    let tz = calendar.time_zone();
    let mut out = Vec::new();
    if to <= from {
        return out;
    }
    for kind in [WindowKind::Hour, WindowKind::Day, WindowKind::Month] {
        let mut start = window_start(kind, from, tz);
        while start < to {
            let Some(end) = window_end(kind, start, tz) else {
                break;
            };
            out.push(Window {
                kind,
                start,
                end,
                shift: None,
            });
            start = end;
        }
    }
    for shift in calendar.shifts_between(from, to) {
        out.push(Window {
            kind: WindowKind::Shift,
            start: shift.start,
            end: shift.end,
            shift: Some(shift.name.clone()),
        });
    }
    out
}

/// The windows that contain the moment `t`.
pub fn containing(calendar: &Calendar, t: Timestamp) -> Vec<Window> {
    overlapping(calendar, t, t + SignedDuration::from_nanos(1))
}

/// A stretch of time around a moment over which nothing the accounting looks at changes: for
/// every `[from, to)` inside it, [`overlapping`] gives exactly `windows` (the windows containing
/// the moment) and `Calendar::segments` one piece of `category`. It is bounded by every edge
/// near the moment: the hour's, day's and month's, the start and end of every shift touching
/// the hour, the calendar's category changes in the hour (shift, break and maintenance edges,
/// holidays), and the time zone's offset changes (so that the local hour and date cannot move
/// inside it).
///
/// Accounting a machine's time asks for the windows of each stretch since the last accounting,
/// a few times a second; they change a few times an hour. So a machine keeps the steady
/// stretch of its latest accounting ([`SteadyCache`]) and computes afresh only when a stretch
/// leaves it.
///
/// Why a stretch `[x, y)` inside gets the same answer as from `overlapping(x, y)`: with the
/// offset constant, `x` is in the same local hour, day and month as the moment, and the next
/// of each starts at or after the end; a shift overlapping `[x, y)` touches the hour, so its
/// edges are among the bounds, so it contains the whole stretch (it starts before `y`, hence
/// at or before the start, and ends after `x`, hence at or after the end), and conversely every
/// shift containing the moment contains `[x, y)`; shifts keep their order (by start, then by
/// date and configuration order, as `overlapping` sorts them). The category is a function of
/// the moment alone and is constant between the bounds, so `segments` merges `[x, y)` into one
/// piece. The tests below check both, and the accounting through the cache against the
/// accounting afresh, around every kind of edge, daylight-saving changes included.
#[derive(Debug, Clone, PartialEq)]
pub struct Steady {
    pub from: Timestamp,
    pub to: Timestamp,
    /// What `overlapping` gives for any stretch inside, in its order.
    pub windows: Vec<Window>,
    /// What the calendar says every moment inside is, for the machine it was made for.
    pub category: Category,
}

impl Steady {
    /// The steady stretch around `t` for `machine` (maintenance can name machines).
    pub fn around(calendar: &Calendar, machine: &str, t: Timestamp) -> Steady {
        let next = t + SignedDuration::from_nanos(1);
        let windows = overlapping(calendar, t, next);
        let (mut from, mut to) = (Timestamp::MIN, Timestamp::MAX);
        let mut bound = |edge: Timestamp| {
            if edge <= t {
                from = from.max(edge);
            } else {
                to = to.min(edge);
            }
        };
        for w in &windows {
            bound(w.start);
            bound(w.end);
        }
        // Every other edge that matters lies in the hour: the stretch cannot leave it.
        let (hour_start, hour_end) = windows
            .iter()
            .find(|w| w.kind == WindowKind::Hour)
            .map_or((t, next), |w| (w.start, w.end));
        for shift in calendar.shifts_between(hour_start, hour_end) {
            bound(shift.start);
            bound(shift.end);
        }
        let tz = calendar.time_zone();
        // Transitions strictly before `next` (so one at `t` counts) and strictly after `t`.
        if let Some(change) = tz.preceding(next).next() {
            bound(change.timestamp());
        }
        if let Some(change) = tz.following(t).next() {
            bound(change.timestamp());
        }
        let segments = calendar.segments(machine, hour_start, hour_end);
        let category = match segments.iter().find(|(a, b, _)| *a <= t && t < *b) {
            Some(&(a, b, category)) => {
                bound(a);
                bound(b);
                category
            }
            // Only at the ends of time, where the hour could not be made: just the moment.
            None => {
                bound(t);
                bound(next);
                let piece = calendar.segments(machine, t, next);
                piece.first().map_or(Category::Unplanned, |p| p.2)
            }
        };
        Steady {
            from,
            to,
            windows,
            category,
        }
    }

    /// Whether `[from, to)` lies inside.
    pub fn covers(&self, from: Timestamp, to: Timestamp) -> bool {
        self.from <= from && to <= self.to
    }
}

/// A machine's latest [`Steady`] stretch, made afresh when a stretch to account begins outside
/// it (or for the first stretch).
#[derive(Debug, Clone, Default)]
pub struct SteadyCache(Option<Steady>);

impl SteadyCache {
    /// The steady stretch `[from, to)` lies inside, if it lies inside one; `None` when it
    /// crosses an edge (the caller then asks `overlapping` and `segments`).
    pub fn get(
        &mut self,
        calendar: &Calendar,
        machine: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Option<&Steady> {
        if !self
            .0
            .as_ref()
            .is_some_and(|s| s.from <= from && from < s.to)
        {
            self.0 = Some(Steady::around(calendar, machine, from));
        }
        self.0.as_ref().filter(|s| s.covers(from, to))
    }

    /// The windows containing `t`: the same as [`containing`].
    pub fn containing(&mut self, calendar: &Calendar, machine: &str, t: Timestamp) -> &[Window] {
        let next = t + SignedDuration::from_nanos(1);
        if !self.0.as_ref().is_some_and(|s| s.covers(t, next)) {
            self.0 = Some(Steady::around(calendar, machine, t));
        }
        self.0.as_ref().map_or(&[], |s| &s.windows)
    }
}

/// The start of the window of `kind` containing `t` (not for shifts).
fn window_start(kind: WindowKind, t: Timestamp, tz: &TimeZone) -> Timestamp {
    match kind {
        // The local hour: floor in local time with the offset in force at `t`, which is right
        // for half-hour zones and during a repeated hour alike.
        WindowKind::Hour | WindowKind::Shift => {
            let offset = i64::from(tz.to_offset(t).seconds());
            let local = t.as_second() + offset;
            let floored = local - local.rem_euclid(3600) - offset;
            Timestamp::from_second(floored).unwrap_or(t)
        }
        WindowKind::Day => t
            .to_zoned_datetime(tz.clone())
            .start_of_day()
            .map_or(t, |z| z.timestamp()),
        WindowKind::Month => {
            let first = t.to_zoned_datetime(tz.clone()).date().first_of_month();
            first
                .to_zoned_datetime(tz.clone())
                .map_or(t, |z| z.timestamp())
        }
    }
}

fn window_end(kind: WindowKind, start: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
    match kind {
        WindowKind::Hour | WindowKind::Shift => Some(start + SignedDuration::from_hours(1)),
        WindowKind::Day => {
            let tomorrow = start.to_zoned_datetime(tz.clone()).date().tomorrow().ok()?;
            tomorrow
                .to_zoned_datetime(tz.clone())
                .ok()
                .map(|z| z.timestamp())
        }
        WindowKind::Month => next_month_start(start, tz),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::engine::config;
    use jiff::civil::date;

    fn cal(tz: &str) -> Calendar {
        Calendar::new(&config::Calendar::default(), TimeZone::get(tz).unwrap())
    }

    #[test]
    fn hour_day_and_month_windows_follow_local_time() {
        let c = cal("Asia/Shanghai");
        // 2026-11-30 13:45 local = 05:45 UTC.
        let t: Timestamp = "2026-11-30T05:45:00Z".parse().unwrap();
        let w = containing(&c, t);
        let find = |k| w.iter().find(|x| x.kind == k).unwrap().clone();
        assert_eq!(
            find(WindowKind::Hour).start,
            "2026-11-30T05:00:00Z".parse().unwrap()
        );
        // The local day starts at 00:00 +08:00 = 16:00 UTC the day before.
        let day = find(WindowKind::Day);
        assert_eq!(day.start, "2026-11-29T16:00:00Z".parse().unwrap());
        assert_eq!(day.length(), SignedDuration::from_hours(24));
        let month = find(WindowKind::Month);
        assert_eq!(month.start, "2026-10-31T16:00:00Z".parse().unwrap());
        // November has 30 days.
        assert_eq!(month.length(), SignedDuration::from_hours(30 * 24));
    }

    #[test]
    fn the_spring_forward_day_is_twenty_three_hours_long() {
        let c = cal("Europe/Berlin");
        let t = date(2026, 3, 29)
            .at(12, 0, 0, 0)
            .to_zoned_datetime(TimeZone::get("Europe/Berlin").unwrap())
            .unwrap()
            .timestamp();
        let day = containing(&c, t)
            .into_iter()
            .find(|w| w.kind == WindowKind::Day)
            .unwrap();
        assert_eq!(day.length(), SignedDuration::from_hours(23));
    }

    #[test]
    fn a_half_hour_zone_has_local_hours() {
        let c = cal("Asia/Kolkata");
        // 10:15 UTC = 15:45 IST; the local hour 15:00 IST = 09:30 UTC.
        let t: Timestamp = "2026-11-30T10:15:00Z".parse().unwrap();
        let hour = containing(&c, t)
            .into_iter()
            .find(|w| w.kind == WindowKind::Hour)
            .unwrap();
        assert_eq!(hour.start, "2026-11-30T09:30:00Z".parse().unwrap());
    }

    /// Shifts at odd minutes, one across midnight overlapping another, a break in the spring
    /// DST gap, holidays, a Sunday worked, maintenance for `m1` only (one across the repeated
    /// autumn hour).
    fn busy_calendar(tz: &str) -> Calendar {
        use config::Weekday::*;
        use jiff::civil::time;
        let shift = |name: &str, days: Vec<config::Weekday>, start, end, breaks| config::Shift {
            name: name.into(),
            days,
            start,
            end,
            breaks,
        };
        let brk = |start, end| config::Break { start, end };
        let cfg = config::Calendar {
            shifts: vec![
                shift(
                    "early",
                    vec![Mon, Tue, Wed, Thu, Fri, Sat],
                    time(6, 17, 0, 0),
                    time(14, 43, 0, 0),
                    vec![brk(time(10, 5, 0, 0), time(10, 20, 0, 0))],
                ),
                shift(
                    "late",
                    vec![Mon, Tue, Wed, Thu, Fri],
                    time(14, 43, 0, 0),
                    time(23, 11, 30, 0),
                    vec![],
                ),
                shift(
                    "night",
                    vec![Mon, Tue, Wed, Thu, Fri, Sat, Sun],
                    time(22, 5, 0, 0),
                    time(6, 5, 0, 0),
                    vec![brk(time(2, 10, 0, 0), time(2, 40, 0, 0))],
                ),
            ],
            holidays: vec![date(2026, 3, 30), date(2026, 10, 26), date(2026, 11, 30)],
            workdays: vec![date(2026, 10, 25)],
            maintenance: vec![
                config::Maintenance {
                    machines: vec!["m1".into()],
                    start: date(2026, 3, 29).at(5, 0, 0, 0),
                    end: date(2026, 3, 29).at(7, 30, 0, 0),
                    reason: String::new(),
                },
                config::Maintenance {
                    machines: vec!["m1".into()],
                    start: date(2026, 10, 25).at(1, 30, 0, 0),
                    end: date(2026, 10, 25).at(3, 30, 0, 0),
                    reason: String::new(),
                },
                config::Maintenance {
                    machines: vec![],
                    start: date(2026, 12, 1).at(0, 0, 0, 0),
                    end: date(2026, 12, 1).at(1, 1, 0, 0),
                    reason: String::new(),
                },
            ],
        };
        Calendar::new(&cfg, TimeZone::get(tz).unwrap())
    }

    /// A 24/7 calendar (no shifts), with holidays.
    fn plain_calendar(tz: &str) -> Calendar {
        let cfg = config::Calendar {
            holidays: vec![date(2026, 3, 30), date(2026, 10, 26), date(2026, 11, 30)],
            ..Default::default()
        };
        Calendar::new(&cfg, TimeZone::get(tz).unwrap())
    }

    /// Stretches of days around a month's end, a DST change in Berlin, a month's end in a
    /// half-hour zone, and a daylight-saving change of half an hour.
    /// Stretches of days around daylight-saving changes and month ends, in four zones, with a
    /// busy calendar and a plain one (also used by `timemodel`'s tests).
    pub(crate) fn cases() -> Vec<(Calendar, Timestamp, Timestamp)> {
        let local = |tz: &str, y, m, d, h| {
            date(y, m, d)
                .at(h, 0, 0, 0)
                .to_zoned_datetime(TimeZone::get(tz).unwrap())
                .unwrap()
                .timestamp()
        };
        let mut out = Vec::new();
        for cal in [busy_calendar, plain_calendar] {
            for (tz, from, to) in [
                // Spring forward (Sunday 29 March), then the month's end.
                ("Europe/Berlin", (2026, 3, 27), (2026, 4, 1)),
                // Fall back (Sunday 25 October).
                ("Europe/Berlin", (2026, 10, 24), (2026, 10, 27)),
                ("Asia/Kolkata", (2026, 11, 29), (2026, 12, 2)),
                // Lord Howe Island's daylight saving is half an hour: on 4 October 02:00
                // (+10:30) becomes 02:30 (+11), so the first local hour after the change,
                // 02:00–03:00 +11, began half an hour before it.
                ("Australia/Lord_Howe", (2026, 10, 3), (2026, 10, 6)),
            ] {
                out.push((
                    cal(tz),
                    local(tz, from.0, from.1, from.2, 12),
                    local(tz, to.0, to.1, to.2, 12),
                ));
            }
        }
        out
    }

    /// A tiny xorshift, for steps of varying length.
    pub(crate) fn steps(seed: u64) -> impl FnMut(i64) -> i64 {
        let mut state = seed;
        move |max| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % max as u64) as i64
        }
    }

    #[test]
    fn every_stretch_inside_a_steady_one_gets_its_windows_and_category() {
        let ns = SignedDuration::from_nanos;
        for (cal, start, end) in cases() {
            let mut random = steps(0x2545_F491_4F6C_DD1D);
            for machine in ["m1", "m2"] {
                let mut t = start;
                let mut stretches = 0;
                while t < end {
                    let steady = Steady::around(&cal, machine, t);
                    assert!(steady.from <= t && t < steady.to, "{steady:?} around {t}");
                    let (a, b) = (steady.from, steady.to);
                    // The whole stretch, its ends, the moment, and random stretches inside.
                    let mut spans = vec![(a, b), (a, a + ns(1)), (b - ns(1), b), (t, b), (a, t)];
                    let length = b.duration_since(a).as_nanos() as i64;
                    for _ in 0..4 {
                        let x = a + ns(random(length));
                        let y = x + ns(1 + random(b.duration_since(x).as_nanos() as i64));
                        spans.push((x, y.min(b)));
                    }
                    for (x, y) in spans.into_iter().filter(|(x, y)| x < y) {
                        assert_eq!(
                            overlapping(&cal, x, y),
                            steady.windows,
                            "[{x}, {y}) inside {a}..{b}"
                        );
                        assert_eq!(
                            cal.segments(machine, x, y),
                            vec![(x, y, steady.category)],
                            "[{x}, {y}) inside {a}..{b}"
                        );
                    }
                    // Just past the end something changes: a window or the category.
                    let after = Steady::around(&cal, machine, b);
                    assert!(
                        after.windows != steady.windows
                            || after.category != steady.category
                            || cal.time_zone().to_offset(b) != cal.time_zone().to_offset(a)
                            || cal.shifts_between(a, b + ns(1)).len()
                                != cal.shifts_between(a, b).len(),
                        "nothing changes at {b}: {steady:?}"
                    );
                    // The next moment: the next stretch, or a random one further.
                    t = if random(3) == 0 {
                        b
                    } else {
                        t + ns(1 + random(40 * 60 * 1_000_000_000))
                    };
                    stretches += 1;
                }
                assert!(stretches > 100, "{stretches}");
            }
        }
    }

    #[test]
    fn overlapping_lists_every_window_an_interval_touches() {
        let c = cal("Asia/Shanghai");
        let from: Timestamp = "2026-11-30T05:50:00Z".parse().unwrap();
        let to: Timestamp = "2026-11-30T07:10:00Z".parse().unwrap();
        let hours = overlapping(&c, from, to)
            .into_iter()
            .filter(|w| w.kind == WindowKind::Hour)
            .count();
        // 05:00, 06:00 and 07:00 UTC.
        assert_eq!(hours, 3);
    }
}
