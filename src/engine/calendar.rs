//! The shift calendar: which moments are planned busy time (计划生产时间), planned downtime, or
//! outside planned operation, in the site's time zone.
//!
//! ISO 22400-2's time model: planned operation time is the shifts minus their breaks; planned
//! busy time (PBT) is planned operation time minus planned downtime (maintenance windows). A
//! shift belongs to the local date it starts on, so a night shift from 22:00 to 06:00 is one
//! shift, and holidays and make-up working days apply by that date. Wall-clock times become
//! instants through jiff, so a shift across a daylight-saving change is an hour shorter or
//! longer, as it is on the floor.

use std::collections::HashSet;
use std::sync::Arc;

use jiff::civil::{Date, DateTime, Weekday};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan};

use super::config;

/// What kind of time a moment is for one machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// Outside the shifts, in a break, or on a holiday.
    Unplanned,
    /// Planned operation time taken by planned maintenance.
    PlannedDown,
    /// Planned busy time: the machine is meant to produce.
    PlannedBusy,
}

/// One shift on one date, as instants.
#[derive(Debug, Clone, PartialEq)]
pub struct ShiftInstance {
    pub name: Arc<str>,
    /// The local date the shift starts on.
    pub date: Date,
    pub start: Timestamp,
    pub end: Timestamp,
    pub breaks: Vec<(Timestamp, Timestamp)>,
}

#[derive(Debug, Clone)]
struct MaintenanceWindow {
    machines: Vec<String>,
    start: Timestamp,
    end: Timestamp,
}

/// The calendar of one site.
#[derive(Debug, Clone)]
pub struct Calendar {
    tz: TimeZone,
    shifts: Vec<config::Shift>,
    names: Vec<Arc<str>>,
    holidays: HashSet<Date>,
    workdays: HashSet<Date>,
    maintenance: Vec<MaintenanceWindow>,
}

impl Calendar {
    pub fn new(cfg: &config::Calendar, tz: TimeZone) -> Self {
        let maintenance = cfg
            .maintenance
            .iter()
            .filter_map(|m| {
                Some(MaintenanceWindow {
                    machines: m.machines.clone(),
                    start: instant(m.start, &tz)?,
                    end: instant(m.end, &tz)?,
                })
            })
            .collect();
        Calendar {
            names: cfg
                .shifts
                .iter()
                .map(|s| Arc::from(s.name.as_str()))
                .collect(),
            shifts: cfg.shifts.clone(),
            holidays: cfg.holidays.iter().copied().collect(),
            workdays: cfg.workdays.iter().copied().collect(),
            maintenance,
            tz,
        }
    }

    pub fn time_zone(&self) -> &TimeZone {
        &self.tz
    }

    /// Whether shifts are configured; without any, every moment is planned busy time.
    pub fn has_shifts(&self) -> bool {
        !self.shifts.is_empty()
    }

    /// Every shift instance that overlaps `[from, to)`, ordered by start.
    pub fn shifts_between(&self, from: Timestamp, to: Timestamp) -> Vec<ShiftInstance> {
        let mut out = Vec::new();
        if self.shifts.is_empty() || to <= from {
            return out;
        }
        // A shift starting the day before `from` can still be running at `from`.
        let first = local_date(from, &self.tz).yesterday().ok();
        let last = local_date(to, &self.tz);
        let mut date = match first {
            Some(d) => d,
            None => return out,
        };
        while date <= last {
            for (i, shift) in self.shifts.iter().enumerate() {
                if let Some(instance) = self.instance(i, shift, date)
                    && instance.start < to
                    && instance.end > from
                {
                    out.push(instance);
                }
            }
            match date.tomorrow() {
                Ok(next) => date = next,
                Err(_) => break,
            }
        }
        out.sort_by_key(|s| s.start);
        out
    }

    fn works_on(&self, shift: &config::Shift, date: Date) -> bool {
        if self.holidays.contains(&date) {
            return false;
        }
        let weekday = if self.workdays.contains(&date) {
            Weekday::Monday
        } else {
            date.weekday()
        };
        shift.days.iter().any(|d| d.to_jiff() == weekday)
    }

    fn instance(&self, i: usize, shift: &config::Shift, date: Date) -> Option<ShiftInstance> {
        if !self.works_on(shift, date) {
            return None;
        }
        let start = instant(DateTime::from_parts(date, shift.start), &self.tz)?;
        let end_date = if shift.end > shift.start {
            date
        } else {
            date.tomorrow().ok()?
        };
        let end = instant(DateTime::from_parts(end_date, shift.end), &self.tz)?;
        let breaks = shift
            .breaks
            .iter()
            .filter_map(|b| {
                let b_date = if b.start >= shift.start {
                    date
                } else {
                    date.tomorrow().ok()?
                };
                let e_date = if b.end > b.start {
                    b_date
                } else {
                    b_date.tomorrow().ok()?
                };
                let bs = instant(DateTime::from_parts(b_date, b.start), &self.tz)?;
                let be = instant(DateTime::from_parts(e_date, b.end), &self.tz)?;
                Some((bs.max(start), be.min(end)))
            })
            .filter(|(s, e)| s < e)
            .collect();
        Some(ShiftInstance {
            name: self.names[i].clone(),
            date,
            start,
            end,
            breaks,
        })
    }

    /// Splits `[from, to)` into consecutive pieces by category for `machine`.
    pub fn segments(
        &self,
        machine: &str,
        from: Timestamp,
        to: Timestamp,
    ) -> Vec<(Timestamp, Timestamp, Category)> {
        if to <= from {
            return Vec::new();
        }
        // Planned operation: the shifts minus their breaks (or everything without shifts).
        let mut busy: Vec<(Timestamp, Timestamp)> = Vec::new();
        if self.has_shifts() {
            for shift in self.shifts_between(from, to) {
                let mut cursor = shift.start;
                for (bs, be) in &shift.breaks {
                    busy.push((cursor, *bs));
                    cursor = *be;
                }
                busy.push((cursor, shift.end));
            }
        } else {
            // A 24/7 plant still stops on its holidays.
            let mut date = local_date(from, &self.tz);
            while let Some(start) = day_start(date, &self.tz) {
                if start >= to {
                    break;
                }
                let Some(next) = date.tomorrow().ok() else {
                    break;
                };
                if !self.holidays.contains(&date)
                    && let Some(end) = day_start(next, &self.tz)
                {
                    busy.push((start, end));
                }
                date = next;
            }
        }
        let down: Vec<(Timestamp, Timestamp)> = self
            .maintenance
            .iter()
            .filter(|m| m.machines.is_empty() || m.machines.iter().any(|id| id == machine))
            .map(|m| (m.start, m.end))
            .collect();
        let mut points = vec![from, to];
        for (a, b) in busy.iter().chain(&down) {
            for p in [*a, *b] {
                if p > from && p < to {
                    points.push(p);
                }
            }
        }
        points.sort();
        points.dedup();
        let inside = |set: &[(Timestamp, Timestamp)], t: Timestamp| {
            set.iter().any(|(a, b)| *a <= t && t < *b)
        };
        let mut out: Vec<(Timestamp, Timestamp, Category)> = Vec::new();
        for pair in points.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let category = if !inside(&busy, a) {
                Category::Unplanned
            } else if inside(&down, a) {
                Category::PlannedDown
            } else {
                Category::PlannedBusy
            };
            match out.last_mut() {
                Some(last) if last.2 == category && last.1 == a => last.1 = b,
                _ => out.push((a, b, category)),
            }
        }
        out
    }
}

/// A local wall-clock moment as an instant (in a DST gap, the moment after the gap).
fn instant(dt: DateTime, tz: &TimeZone) -> Option<Timestamp> {
    dt.to_zoned_datetime(tz.clone()).ok().map(|z| z.timestamp())
}

fn local_date(t: Timestamp, tz: &TimeZone) -> Date {
    t.to_zoned_datetime(tz.clone()).date()
}

fn day_start(date: Date, tz: &TimeZone) -> Option<Timestamp> {
    date.to_zoned_datetime(tz.clone())
        .ok()
        .map(|z| z.timestamp())
}

/// The length of a set of segments of one category.
pub fn total(segments: &[(Timestamp, Timestamp, Category)], category: Category) -> SignedDuration {
    segments
        .iter()
        .filter(|s| s.2 == category)
        .map(|(a, b, _)| b.duration_since(*a))
        .sum()
}

/// The first moment of the local month after the one containing `t`.
pub fn next_month_start(t: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
    let first = local_date(t, tz).first_of_month();
    let next = first.checked_add(1.month()).ok()?;
    day_start(next, tz)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::config::break_within;
    use crate::engine::config::{Break, Shift, Weekday as W};
    use jiff::civil::{date, time};

    fn shanghai() -> TimeZone {
        TimeZone::get("Asia/Shanghai").unwrap()
    }

    fn at(tz: &TimeZone, y: i16, m: i8, d: i8, h: i8, min: i8) -> Timestamp {
        date(y, m, d)
            .at(h, min, 0, 0)
            .to_zoned_datetime(tz.clone())
            .unwrap()
            .timestamp()
    }

    fn day_shift() -> Shift {
        Shift {
            name: "day".into(),
            days: vec![W::Mon, W::Tue, W::Wed, W::Thu, W::Fri],
            start: time(8, 0, 0, 0),
            end: time(16, 0, 0, 0),
            breaks: vec![Break {
                start: time(12, 0, 0, 0),
                end: time(12, 30, 0, 0),
            }],
        }
    }

    fn night_shift() -> Shift {
        Shift {
            name: "night".into(),
            days: vec![W::Mon, W::Tue, W::Wed, W::Thu, W::Fri],
            start: time(22, 0, 0, 0),
            end: time(6, 0, 0, 0),
            breaks: vec![Break {
                start: time(2, 0, 0, 0),
                end: time(2, 30, 0, 0),
            }],
        }
    }

    fn calendar(shifts: Vec<Shift>, tz: TimeZone) -> Calendar {
        Calendar::new(
            &config::Calendar {
                shifts,
                ..Default::default()
            },
            tz,
        )
    }

    #[test]
    fn an_eight_hour_shift_with_a_half_hour_break_is_seven_and_a_half_hours_busy() {
        let tz = shanghai();
        let cal = calendar(vec![day_shift()], tz.clone());
        // Monday 2026-11-30, whole day.
        let segs = cal.segments(
            "cnc01",
            at(&tz, 2026, 11, 30, 0, 0),
            at(&tz, 2026, 12, 1, 0, 0),
        );
        // 08:00–12:00 and 12:30–16:00 = 4 h + 3.5 h = 7.5 h.
        assert_eq!(
            total(&segs, Category::PlannedBusy),
            SignedDuration::from_mins(450)
        );
        // The rest of the 24 h: 24 − 7.5 = 16.5 h.
        assert_eq!(
            total(&segs, Category::Unplanned),
            SignedDuration::from_mins(990)
        );
    }

    #[test]
    fn a_night_shift_crosses_midnight_and_belongs_to_the_day_it_starts() {
        let tz = shanghai();
        let cal = calendar(vec![night_shift()], tz.clone());
        // Friday 2026-12-04 22:00 to Saturday 06:00: one instance, dated Friday.
        let shifts = cal.shifts_between(at(&tz, 2026, 12, 5, 0, 0), at(&tz, 2026, 12, 5, 12, 0));
        assert_eq!(shifts.len(), 1);
        assert_eq!(shifts[0].date, date(2026, 12, 4));
        assert_eq!(shifts[0].start, at(&tz, 2026, 12, 4, 22, 0));
        assert_eq!(shifts[0].end, at(&tz, 2026, 12, 5, 6, 0));
        // The break at 02:00 falls on Saturday's date.
        assert_eq!(
            shifts[0].breaks,
            vec![(at(&tz, 2026, 12, 5, 2, 0), at(&tz, 2026, 12, 5, 2, 30))]
        );
        // Saturday 00:00–12:00: busy 00:00–02:00 and 02:30–06:00 = 5.5 h; no shift starts Saturday.
        let segs = cal.segments("m", at(&tz, 2026, 12, 5, 0, 0), at(&tz, 2026, 12, 5, 12, 0));
        assert_eq!(
            total(&segs, Category::PlannedBusy),
            SignedDuration::from_mins(330)
        );
    }

    #[test]
    fn a_shift_across_the_spring_daylight_saving_change_is_an_hour_shorter() {
        // Europe/Berlin springs forward on 2026-03-29 at 02:00 → 03:00 (a Sunday).
        let tz = TimeZone::get("Europe/Berlin").unwrap();
        let mut shift = night_shift();
        shift.days = vec![W::Sat];
        shift.breaks.clear();
        let cal = calendar(vec![shift], tz.clone());
        let from = at(&tz, 2026, 3, 28, 12, 0);
        let to = at(&tz, 2026, 3, 29, 12, 0);
        let segs = cal.segments("m", from, to);
        // 22:00 Saturday to 06:00 Sunday on the wall clock is 7 h, not 8.
        assert_eq!(
            total(&segs, Category::PlannedBusy),
            SignedDuration::from_hours(7)
        );
        assert_eq!(to.duration_since(from), SignedDuration::from_hours(23));
    }

    #[test]
    fn holidays_cancel_and_make_up_days_add_shifts() {
        let tz = shanghai();
        let cfg = config::Calendar {
            shifts: vec![day_shift()],
            // Thursday 2026-10-01 is a holiday; Saturday 2026-10-10 is worked like a Monday.
            holidays: vec![date(2026, 10, 1)],
            workdays: vec![date(2026, 10, 10)],
            maintenance: vec![],
        };
        let cal = Calendar::new(&cfg, tz.clone());
        let busy = |d: i8| {
            let segs = cal.segments(
                "m",
                at(&tz, 2026, 10, d, 0, 0),
                at(&tz, 2026, 10, d + 1, 0, 0),
            );
            total(&segs, Category::PlannedBusy)
        };
        assert_eq!(busy(1), SignedDuration::ZERO);
        assert_eq!(busy(2), SignedDuration::from_mins(450));
        assert_eq!(busy(10), SignedDuration::from_mins(450));
        assert_eq!(busy(11), SignedDuration::ZERO, "an ordinary Sunday");
    }

    #[test]
    fn maintenance_is_planned_downtime_for_the_machines_it_names() {
        let tz = shanghai();
        let cfg = config::Calendar {
            shifts: vec![day_shift()],
            maintenance: vec![config::Maintenance {
                machines: vec!["cnc01".into()],
                start: date(2026, 11, 30).at(14, 0, 0, 0),
                end: date(2026, 11, 30).at(17, 0, 0, 0),
                reason: "spindle bearing".into(),
            }],
            ..Default::default()
        };
        let cal = Calendar::new(&cfg, tz.clone());
        let (from, to) = (at(&tz, 2026, 11, 30, 0, 0), at(&tz, 2026, 12, 1, 0, 0));
        let segs = cal.segments("cnc01", from, to);
        // Maintenance 14:00–17:00 overlaps the shift 14:00–16:00: 2 h planned downtime;
        // busy 7.5 h − 2 h = 5.5 h; 16:00–17:00 was outside the shift anyway.
        assert_eq!(
            total(&segs, Category::PlannedDown),
            SignedDuration::from_hours(2)
        );
        assert_eq!(
            total(&segs, Category::PlannedBusy),
            SignedDuration::from_mins(330)
        );
        let other = cal.segments("cnc02", from, to);
        assert_eq!(
            total(&other, Category::PlannedBusy),
            SignedDuration::from_mins(450)
        );
    }

    #[test]
    fn without_shifts_every_day_but_holidays_is_busy() {
        let tz = shanghai();
        let cfg = config::Calendar {
            holidays: vec![date(2026, 10, 1)],
            ..Default::default()
        };
        let cal = Calendar::new(&cfg, tz.clone());
        let segs = cal.segments(
            "m",
            at(&tz, 2026, 9, 30, 12, 0),
            at(&tz, 2026, 10, 2, 12, 0),
        );
        // 12 h on the 30th, none on the 1st, 12 h on the 2nd.
        assert_eq!(
            total(&segs, Category::PlannedBusy),
            SignedDuration::from_hours(24)
        );
        assert_eq!(
            total(&segs, Category::Unplanned),
            SignedDuration::from_hours(24)
        );
    }

    #[test]
    fn breaks_are_checked_against_their_shift() {
        let night = night_shift();
        assert!(break_within(&night, &night.breaks[0]));
        let outside = Break {
            start: time(7, 0, 0, 0),
            end: time(7, 30, 0, 0),
        };
        assert!(!break_within(&night, &outside));
        let reversed = Break {
            start: time(3, 0, 0, 0),
            end: time(2, 0, 0, 0),
        };
        assert!(!break_within(&night, &reversed));
    }
}
