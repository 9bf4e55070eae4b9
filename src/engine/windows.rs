//! Reporting windows: the hour, the shift, the day and the month, in the site's time zone.
//!
//! Totals are kept per window and written with the window's start as timestamp, rewritten while
//! the window is open, so a dashboard sees live totals and a restart simply continues. A day is
//! a local calendar day, 23 or 25 hours long across a daylight-saving change.

use std::sync::Arc;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::calendar::{Calendar, next_month_start};
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
mod tests {
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
