//! Pollution-source outlets (排污口): the loggers' records as `outlet` lines, the limits judged
//! on hourly averages, the latest values for the board, and the wastewater discharged per day
//! for the `green` lines.
//!
//! **One `outlet` line per pollutant and record**, tags `outlet`, `pollutant`, `cn` (the HJ 212
//! command number of the data: 2011 real-time, 2051 minute, 2061 hourly, 2031 daily) and
//! `unit`, fields `rtd`, `avg`, `min`, `max`, `cou` (and for exhaust the converted `zs_rtd`,
//! `zs_avg`, `zs_min`, `zs_max`) as the record has them and the data `flag`
//! (a string, N, F, M, S, D, C, T or B), stamped with the data time (the period's start). A
//! logger that sends a record again rewrites the same point.
//!
//! **Limits** are judged on hourly averages (2061), as discharge permits state them (for
//! exhaust the average converted to the reference oxygen content, `ZsAvg`, when the logger
//! sends one): an average above its limit opens an alert, the next one within it closes it. A value whose
//! flag says the analyser was not measuring (maintenance M, calibration C, fault D, stopped F,
//! communication fault B) neither opens nor closes one.
//!
//! **Wastewater discharged** per local day and outlet: the daily record's flow total (2031,
//! `w00000-Cou`, m³ = t) when there is one, else the sum of the hourly totals, else of the
//! minute totals; the basis is written beside the figure (`wastewater_basis`). Totals are kept
//! by data time, so data sent twice is counted once. A day without any of them has no figure.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

use super::alerts::{Alerts, KIND_OUTLET_LIMIT};
use super::persist::{SavedDay, SavedOutlets};
use super::windows::{Window, WindowKind};
use crate::line_protocol::LineBuilder;
use crate::line_protocol::contract::{self, TAG_CN, TAG_OUTLET, TAG_POLLUTANT, TAG_UNIT};
use crate::model::{OutletPeriod, OutletRecord, OutletValue};

/// How long discharge totals are kept: a month's figure needs its days.
const KEEP_DAYS: i64 = 40;

/// An outlet as the board shows it: the latest value of each pollutant with its flag.
#[derive(Debug, Clone, PartialEq)]
pub struct OutletView {
    pub outlet: Arc<str>,
    pub name: Arc<str>,
    pub kind: &'static str,
    /// When its last record was taken (data time).
    pub at: Timestamp,
    /// The period of that record.
    pub period: &'static str,
    /// The latest values by pollutant: the average (or the real-time value), its unit and flag,
    /// and its limit.
    pub values: Vec<LatestValue>,
}

/// A pollutant's latest value at an outlet.
#[derive(Debug, Clone, PartialEq)]
pub struct LatestValue {
    pub pollutant: Arc<str>,
    /// The average of the period, or the real-time value.
    pub value: Option<f64>,
    pub unit: Arc<str>,
    pub flag: Option<&'static str>,
    pub limit: Option<f64>,
}

/// One outlet's discharge in one local day, m³, by basis and data time.
#[derive(Debug, Clone, Default)]
struct DayDischarge {
    daily: Option<f64>,
    hourly: BTreeMap<Timestamp, f64>,
    minute: BTreeMap<Timestamp, f64>,
}

impl DayDischarge {
    fn total(&self) -> Option<(f64, &'static str)> {
        if let Some(d) = self.daily {
            Some((d, "daily"))
        } else if !self.hourly.is_empty() {
            Some((self.hourly.values().sum(), "hourly"))
        } else if !self.minute.is_empty() {
            Some((self.minute.values().sum(), "minute"))
        } else {
            None
        }
    }
}

/// The enterprise's outlets.
#[derive(Debug)]
pub struct Outlets {
    prefix: String,
    tz: TimeZone,
    latest: BTreeMap<Arc<str>, OutletView>,
    days: BTreeMap<(Date, Arc<str>), DayDischarge>,
    /// Days whose discharge changed since the last flush.
    dirty: BTreeSet<Date>,
    pub alerts: Alerts,
}

/// The wastewater discharged in a window, t, and how it was found.
#[derive(Debug, Clone, PartialEq)]
pub struct Discharge {
    pub t: f64,
    /// `daily`, `hourly` or `minute`, or several joined by `+` when the outlets differ.
    pub basis: String,
}

impl Outlets {
    /// `prefix`: the `outlet` measurement with the enterprise's tags; `alert_prefix` the same
    /// for `alert`.
    pub fn new(prefix: String, alert_prefix: String, tz: TimeZone) -> Self {
        Outlets {
            prefix,
            tz,
            latest: BTreeMap::new(),
            days: BTreeMap::new(),
            dirty: BTreeSet::new(),
            alerts: Alerts::new(alert_prefix),
        }
    }

    /// Takes one record: its lines, its alerts, its discharge.
    pub fn record(&mut self, r: &OutletRecord, out: &mut Vec<String>) {
        let cn = r.cn.to_string();
        for v in &r.values {
            let mut b = LineBuilder::with_prefix(&self.prefix)
                .tag(TAG_OUTLET, &r.outlet)
                .tag(TAG_POLLUTANT, &v.pollutant)
                .tag(TAG_CN, &cn);
            if !v.unit.is_empty() {
                b = b.tag(TAG_UNIT, &v.unit);
            }
            for (name, x) in [
                (contract::outlet::RTD, v.rtd),
                (contract::outlet::AVG, v.avg),
                (contract::outlet::MIN, v.min),
                (contract::outlet::MAX, v.max),
                (contract::outlet::COU, v.cou),
                (contract::outlet::ZS_RTD, v.zs_rtd),
                (contract::outlet::ZS_AVG, v.zs_avg),
                (contract::outlet::ZS_MIN, v.zs_min),
                (contract::outlet::ZS_MAX, v.zs_max),
            ] {
                if let Some(x) = x {
                    b = b.float(name, x);
                }
            }
            if let Some(flag) = v.flag {
                b = b.string(contract::outlet::FLAG, flag);
            }
            out.extend(b.finish(r.at));
            if r.period == OutletPeriod::Hour {
                self.judge(r, v, out);
            }
        }
        self.latest_view(r);
        if let Some(m3) = r.discharged_m3 {
            let date = r.at.to_zoned_datetime(self.tz.clone()).date();
            let day = self.days.entry((date, r.outlet.clone())).or_default();
            match r.period {
                OutletPeriod::Day => day.daily = Some(m3),
                OutletPeriod::Hour => {
                    day.hourly.insert(r.at, m3);
                    // The hours win over the minutes: no need to keep these.
                    day.minute.clear();
                }
                OutletPeriod::Minute if day.hourly.is_empty() && day.daily.is_none() => {
                    day.minute.insert(r.at, m3);
                }
                OutletPeriod::Minute => return,
                OutletPeriod::RealTime => return,
            }
            self.dirty.insert(date);
        }
    }

    fn judge(&mut self, r: &OutletRecord, v: &OutletValue, out: &mut Vec<String>) {
        // Emission limits are stated against the converted concentration where there is one.
        let (Some(limit), Some(avg)) = (v.limit, v.zs_avg.or(v.avg)) else {
            return;
        };
        if !v.may_alert {
            return;
        }
        let subject = format!("{}/{}", r.outlet, v.pollutant);
        self.alerts
            .judge(KIND_OUTLET_LIMIT, &subject, r.at, avg, limit, out);
    }

    fn latest_view(&mut self, r: &OutletRecord) {
        let view = self
            .latest
            .entry(r.outlet.clone())
            .or_insert_with(|| OutletView {
                outlet: r.outlet.clone(),
                name: r.name.clone(),
                kind: r.kind,
                at: r.at,
                period: r.period.as_str(),
                values: Vec::new(),
            });
        if r.at < view.at {
            return;
        }
        view.at = r.at;
        view.period = r.period.as_str();
        view.values = r
            .values
            .iter()
            .map(|v| LatestValue {
                pollutant: v.pollutant.clone(),
                value: v.avg.or(v.rtd),
                unit: v.unit.clone(),
                flag: v.flag,
                limit: v.limit,
            })
            .collect();
    }

    /// The latest values of every outlet heard from.
    pub fn views(&self) -> Vec<OutletView> {
        self.latest.values().cloned().collect()
    }

    /// The wastewater discharged in a day or month window; `None` when no outlet reported a
    /// total for it (not measured, never 0).
    pub fn discharge(&self, w: &Window) -> Option<Discharge> {
        let first = w.start.to_zoned_datetime(self.tz.clone()).date();
        let last = (w.end - SignedDuration::from_nanos(1))
            .to_zoned_datetime(self.tz.clone())
            .date();
        if !matches!(w.kind, WindowKind::Day | WindowKind::Month) {
            return None;
        }
        let mut t = 0.0;
        let mut bases = BTreeSet::new();
        for ((date, _), day) in self.days.range((first, Arc::from(""))..) {
            if *date > last {
                break;
            }
            if let Some((m3, basis)) = day.total() {
                t += m3;
                bases.insert(basis);
            }
        }
        (!bases.is_empty()).then(|| Discharge {
            t,
            basis: bases.into_iter().collect::<Vec<_>>().join("+"),
        })
    }

    /// The days whose discharge changed since the last call.
    pub fn take_dirty(&mut self) -> BTreeSet<Date> {
        std::mem::take(&mut self.dirty)
    }

    /// What a restart needs: the totals of the days kept (a day older than yesterday keeps its
    /// minutes as one sum, so a minute-only logger does not make the file large), and the
    /// open alerts.
    pub fn save(&self, now: Timestamp) -> SavedOutlets {
        let recent = (now - SignedDuration::from_hours(48))
            .to_zoned_datetime(self.tz.clone())
            .date();
        let days = self
            .days
            .iter()
            .map(|((date, outlet), d)| {
                let minute: Vec<(Timestamp, f64)> = if *date >= recent || d.minute.is_empty() {
                    d.minute.iter().map(|(t, v)| (*t, *v)).collect()
                } else {
                    let first = d.minute.keys().next().copied().unwrap_or(now);
                    vec![(first, d.minute.values().sum())]
                };
                SavedDay {
                    date: *date,
                    outlet: outlet.to_string(),
                    daily: d.daily,
                    hourly: d.hourly.iter().map(|(t, v)| (*t, *v)).collect(),
                    minute,
                }
            })
            .collect();
        SavedOutlets {
            days,
            open_alerts: self.alerts.save(),
        }
    }

    pub fn restore(&mut self, saved: SavedOutlets) {
        for d in saved.days {
            self.days.insert(
                (d.date, Arc::from(d.outlet.as_str())),
                DayDischarge {
                    daily: d.daily,
                    hourly: d.hourly.into_iter().collect(),
                    minute: d.minute.into_iter().collect(),
                },
            );
        }
        self.alerts.restore(saved.open_alerts);
    }

    /// Forgets totals older than [`KEEP_DAYS`].
    pub fn retain(&mut self, now: Timestamp) {
        let oldest = (now - SignedDuration::from_hours(24 * KEEP_DAYS))
            .to_zoned_datetime(self.tz.clone())
            .date();
        self.days.retain(|(d, _), _| *d >= oldest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tz() -> TimeZone {
        TimeZone::get("Asia/Shanghai").unwrap()
    }

    fn hour(h: i8) -> Timestamp {
        jiff::civil::date(2026, 12, 5)
            .at(h, 0, 0, 0)
            .to_zoned_datetime(tz())
            .unwrap()
            .timestamp()
    }

    /// The hourly record of `ww1`: `m3` discharged, COD `cod` against a limit of 100.
    fn hourly(h: i8, m3: f64, cod: f64, flag: &'static str) -> OutletRecord {
        OutletRecord {
            outlet: Arc::from("ww1"),
            name: Arc::from("ww1"),
            kind: "wastewater",
            period: OutletPeriod::Hour,
            cn: 2061,
            at: hour(h),
            values: vec![OutletValue {
                pollutant: Arc::from("cod"),
                unit: Arc::from("mg/L"),
                avg: Some(cod),
                flag: Some(flag),
                may_alert: flag == "N",
                limit: Some(100.0),
                ..Default::default()
            }],
            discharged_m3: Some(m3),
        }
    }

    fn outlets() -> Outlets {
        Outlets::new(
            "outlet,enterprise=e1".into(),
            "alert,enterprise=e1".into(),
            tz(),
        )
    }

    #[test]
    fn an_exhaust_limit_is_judged_on_the_converted_average() {
        let mut o = outlets();
        let mut out = Vec::new();
        // SO₂ measured 40 mg/m³, 60 converted to the reference oxygen: over a limit of 50.
        let record = OutletRecord {
            outlet: Arc::from("ex1"),
            name: Arc::from("ex1"),
            kind: "exhaust",
            period: OutletPeriod::Hour,
            cn: 2061,
            at: hour(10),
            values: vec![OutletValue {
                pollutant: Arc::from("so2"),
                unit: Arc::from("mg/m³"),
                avg: Some(40.0),
                zs_avg: Some(60.0),
                flag: Some("N"),
                may_alert: true,
                limit: Some(50.0),
                ..Default::default()
            }],
            discharged_m3: None,
        };
        o.record(&record, &mut out);
        assert!(
            out[0].contains("avg=40.0,zs_avg=60.0,flag=\"N\""),
            "{}",
            out[0]
        );
        assert!(out[1].starts_with("alert,enterprise=e1,kind=outlet_limit,subject=ex1/so2 value=60.0,limit=50.0,open=true"), "{}", out[1]);
    }

    #[test]
    fn a_restart_keeps_the_days_discharge_and_the_open_alert() {
        let mut before = outlets();
        let mut out = Vec::new();
        before.record(&hourly(9, 8.0, 90.0, "N"), &mut out);
        before.record(&hourly(10, 9.0, 120.0, "N"), &mut out);
        // Maintenance at 11:00 neither closes nor reopens it.
        before.record(&hourly(11, 9.5, 60.0, "M"), &mut out);
        assert_eq!(out.iter().filter(|l| l.starts_with("alert,")).count(), 1);
        let saved = before.save(hour(12));

        let mut after = outlets();
        after.restore(saved);
        let mut out = Vec::new();
        after.record(&hourly(12, 7.5, 80.0, "N"), &mut out);
        // Open from 10:00 to 12:00 across the restart: 7200 s.
        let closing: Vec<&String> = out.iter().filter(|l| l.starts_with("alert,")).collect();
        assert_eq!(closing.len(), 1, "{out:?}");
        assert!(closing[0].contains("open=false") && closing[0].contains("duration_s=7200"));
        // 8 + 9 + 9.5 + 7.5 = 34 t over the day, the hours before the restart included.
        let day = Window {
            kind: WindowKind::Day,
            start: hour(0),
            end: hour(0) + SignedDuration::from_hours(24),
            shift: None,
        };
        assert_eq!(
            after.discharge(&day),
            Some(Discharge {
                t: 34.0,
                basis: "hourly".into()
            })
        );
    }
}
