//! The county's arithmetic, as pure functions over what the store holds: each enterprise's
//! `fleet` and `green` lines of the day windows in a period, the register and the targets.
//!
//! Enterprises, sectors and the county are combined by adding numerators and adding
//! denominators, then dividing once; a ratio is never averaged (DESIGN.md).
//!
//! **How machine counts combine over days: machine-days.** The agent writes, per enterprise
//! and local day, the machines in the register and how many of them delivered data that day.
//! Over a period, the networking rate is networked machine-days ÷ registered machine-days, and
//! the CNC rate is CNC machine-days ÷ registered machine-days. Why machine-days rather than
//! the mean over days of each enterprise's counts: machine-days are plain sums, so enterprise,
//! sector and county figures add up exactly whatever each reported; a machine networked on 10
//! days of 30 counts as a third of a networked machine, which is what a networking rate over a
//! month should say; and a register that grows during the period weighs each machine by the
//! days it was in it. The mean number of machines shown beside them is machine-days ÷ days in
//! the period, so it too adds up across enterprises.
//!
//! **Registered days.** An enterprise counts on the days of the period between its `joined`
//! and `left` dates in the register, and only on those: its machine-days, its mean machines,
//! its share of the trend. An enterprise that joined on the last day of a week has a week's
//! rate over one day, not a rate diluted by six days before it existed. Its lines from other
//! days are left out and warned about.
//!
//! **Days an enterprise did not report.** A registered day without a `fleet` line from an
//! enterprise that reported on other days (the agent was off, or the gateway lost its
//! network and the spool did not catch up) still counts its register: the register of the
//! nearest earlier day with a line (or the first later one), with no machine networked and no
//! CNC time. The register does not shrink because the agent was silent, so the denominator
//! stays honest, as DESIGN.md asks. CNC utilisation needs the planned time the agent computes,
//! so it covers the days with a line. An enterprise with no `fleet` line at all in the period
//! counts with the machine counts it declared in the register on each registered day, none
//! networked, and is listed as not reporting; so the county's rates cannot rise because fewer
//! enterprises report. Every row says how many enterprises it covers and which share of its
//! denominator was declared rather than measured.
//!
//! **Missing is not zero.** A `green` field the agent did not write (no water meter, no
//! value-added source, no outlet logger) counts in no sum. The intensities are taken over the
//! days on which both their numerator and value added are known: energy per value added over
//! the days with energy and value added, water per value added over the days with water and
//! value added. A figure with nothing under it has no value, no gap and no verdict.
//!
//! **The register's facts** (robots, digital workshops, ERP/MES/SCM/PLM among key enterprises,
//! above-scale enterprises) are counted from the enterprise register as of the report's year
//! ([`RegisterFacts`]). Robots are the exception where an agent measures them: an enterprise
//! whose agent's machine register holds robots (`kind = "robot"`, the `fleet` field
//! `machines_robot`) counts the robots of its last registered day with that field in the
//! period (in the year, for the per-year table) as **measured**; any other counts its declared
//! `robots` as **declared**; the basis is shown beside the figure.
//!
//! **Rewritten windows.** The agent rewrites a day's totals with the day's start as timestamp
//! until the day closes, and InfluxDB keeps the last write, so one query row per enterprise
//! and day is the final figure. Should an enterprise's tags change during a day (its config
//! was edited), two lines of different series share that day: window totals only grow while a
//! window is open, so the larger is the later and is the one kept.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use jiff::civil::Date;
use serde::Serialize;

use super::targets::{Bound, Enterprise, Indicator, Registry, TargetInForce, Targets};
use crate::engine::indicators::{Fleet, Green, ratio};
use crate::model::Sector;

/// One enterprise's `fleet` line for one day window of the period.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetDay {
    pub enterprise: String,
    pub sector_tag: String,
    /// Index into [`Period::days`].
    pub day: usize,
    pub fleet: Fleet,
    /// Industrial robots in the agent's register (`machines_robot`), when it holds any.
    pub robots: Option<u64>,
}

/// One enterprise's `green` line for one day window of the period.
#[derive(Debug, Clone, PartialEq)]
pub struct GreenDay {
    pub enterprise: String,
    pub sector_tag: String,
    /// Index into [`Period::days`].
    pub day: usize,
    /// A field not measured (no value-added source, no water meter …) is 0 here and its
    /// `*_known` flag false: it counts in no sum.
    pub green: Green,
    pub value_added_known: bool,
    /// `energy_tce` and `electricity_kwh` were on the line.
    pub energy_known: bool,
    /// `water_t` was on the line.
    pub water_known: bool,
    /// `wastewater_t`, when the line carries it (outlets' flow).
    pub wastewater_t: Option<f64>,
    pub va_method: String,
    pub el_method: String,
}

/// The days a report covers.
#[derive(Debug, Clone, PartialEq)]
pub struct Period {
    pub from: Date,
    pub to: Date,
    /// The local days counted: `from` to `to`, but none after today. A day that has not begun
    /// has no data and must not count as a day nobody reported.
    pub days: Vec<Date>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeriodError {
    #[error("--from {from} is after --to {to}")]
    Reversed { from: Date, to: Date },
    #[error("the period starting {from} has not begun yet (today is {today})")]
    Future { from: Date, today: Date },
}

impl Period {
    /// The period from `from` to `to`, both included, clipped at `today`.
    pub fn new(from: Date, to: Date, today: Date) -> Result<Period, PeriodError> {
        if from > to {
            return Err(PeriodError::Reversed { from, to });
        }
        if from > today {
            return Err(PeriodError::Future { from, today });
        }
        let last = to.min(today);
        let days = from
            .series(jiff::Span::new().days(1))
            .take_while(|d| *d <= last)
            .collect();
        Ok(Period { from, to, days })
    }

    /// The year whose targets apply: the year of the last day counted.
    pub fn target_year(&self) -> i16 {
        self.days.last().unwrap_or(&self.from).year()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    County,
    Sector,
    Enterprise,
}

/// One indicator of one enterprise, sector or the county: value, its numerator and
/// denominator, and how it stands against the target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IndicatorRow {
    pub indicator: Indicator,
    /// `None` when the denominator is zero: no data is not zero.
    pub value: Option<f64>,
    pub numerator: f64,
    pub denominator: f64,
    /// How many enterprises the figure covers: those with a denominator above zero.
    pub enterprises: usize,
    /// The share of the denominator taken from the enterprise register's declared machine
    /// counts rather than an agent's (machine-day indicators only).
    pub declared_share: Option<f64>,
    pub target: Option<TargetInForce>,
    /// value − target, in the indicator's unit (positive is above the target).
    pub gap: Option<f64>,
    pub meets: Option<bool>,
}

impl IndicatorRow {
    fn new(indicator: Indicator, numerator: f64, denominator: f64) -> IndicatorRow {
        IndicatorRow {
            indicator,
            value: ratio(numerator, denominator),
            numerator,
            denominator,
            enterprises: usize::from(denominator > 0.0),
            declared_share: None,
            target: None,
            gap: None,
            meets: None,
        }
    }

    fn against(mut self, target: Option<TargetInForce>) -> IndicatorRow {
        self.target = target;
        if let (Some(v), Some(t)) = (self.value, target) {
            self.gap = Some(v - t.value);
            self.meets = Some(t.is_met_by(v));
        }
        self
    }
}

/// The measured indicators of a fleet (machine-days) and the green sums: energy over the days
/// with both energy and value added, water (and wastewater) over the days with both it and
/// value added.
pub fn indicators(fleet: &Fleet, green: &GreenTotals) -> Vec<IndicatorRow> {
    let (energy, water) = (&green.energy_basis, &green.water_basis);
    Indicator::MEASURED
        .iter()
        .map(|&i| {
            let (n, d) = match i {
                Indicator::NetworkingRate => {
                    (fleet.machines_networked as f64, fleet.machines_total as f64)
                }
                Indicator::NetworkingRateDigital => (
                    fleet.machines_digital_networked as f64,
                    fleet.machines_digital as f64,
                ),
                Indicator::CncRate => (fleet.machines_cnc as f64, fleet.machines_total as f64),
                Indicator::CncUtilisation => (fleet.cnc_running_s, fleet.cnc_planned_s),
                Indicator::TcePer10kCny => (energy.energy_tce, energy.value_added_10k_cny),
                Indicator::ValueAddedPerTce => (energy.value_added_10k_cny, energy.energy_tce),
                Indicator::WaterTPer10kCny => (water.water_t, water.value_added_10k_cny),
                Indicator::WastewaterTPer10kCny => {
                    (green.wastewater_t, green.wastewater_value_added)
                }
                // Not measured per day: see [`RegisterFacts`].
                _ => (0.0, 0.0),
            };
            IndicatorRow::new(i, n, d)
        })
        .collect()
}

/// Energy, water and value added over a period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct GreenTotals {
    /// Sums over every day with a `green` line, of what was measured.
    pub all_days: Green,
    /// Energy and value added over the days on which both are known: the basis of the energy
    /// intensities.
    pub energy_basis: Green,
    /// Water and value added over the days on which both are known: the basis of the water
    /// intensity.
    pub water_basis: Green,
    pub days: usize,
    pub days_with_value_added: usize,
    /// Days on which water was measured.
    pub days_with_water: usize,
    /// Wastewater discharged and value added over the days on which both are known.
    pub wastewater_t: f64,
    pub wastewater_value_added: f64,
}

impl GreenTotals {
    fn add(&mut self, other: &GreenTotals) {
        self.all_days = self.all_days.add(&other.all_days);
        self.energy_basis = self.energy_basis.add(&other.energy_basis);
        self.water_basis = self.water_basis.add(&other.water_basis);
        self.days += other.days;
        self.days_with_value_added += other.days_with_value_added;
        self.days_with_water += other.days_with_water;
        self.wastewater_t += other.wastewater_t;
        self.wastewater_value_added += other.wastewater_value_added;
    }

    /// Adds one day's line.
    fn add_day(&mut self, g: &GreenDay) {
        self.days += 1;
        let measured = Green {
            energy_tce: if g.energy_known {
                g.green.energy_tce
            } else {
                0.0
            },
            electricity_kwh: if g.energy_known {
                g.green.electricity_kwh
            } else {
                0.0
            },
            water_t: if g.water_known { g.green.water_t } else { 0.0 },
            value_added_10k_cny: if g.value_added_known {
                g.green.value_added_10k_cny
            } else {
                0.0
            },
        };
        self.all_days = self.all_days.add(&measured);
        if g.water_known {
            self.days_with_water += 1;
        }
        if g.value_added_known {
            self.days_with_value_added += 1;
            if g.energy_known {
                self.energy_basis = self.energy_basis.add(&Green {
                    water_t: 0.0,
                    ..measured
                });
            }
            if let Some(w) = g.wastewater_t {
                self.wastewater_t += w;
                self.wastewater_value_added += measured.value_added_10k_cny;
            }
            if g.water_known {
                self.water_basis = self.water_basis.add(&Green {
                    water_t: measured.water_t,
                    value_added_10k_cny: measured.value_added_10k_cny,
                    ..Green::default()
                });
            }
        }
    }
}

/// The figures of one enterprise, one sector or the county over the period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub level: Level,
    pub sector: Option<Sector>,
    pub enterprise: Option<String>,
    /// The enterprise's name from the register; empty for sectors and the county.
    pub name: String,
    pub enterprises_registered: usize,
    pub enterprises_reporting: usize,
    /// Enterprises counted with their declared machine counts because their agent sent no
    /// `fleet` line in the period.
    pub enterprises_declared: usize,
    /// An enterprise: whether its agent sent anything in the period.
    pub reporting: bool,
    /// Days in the period; for an enterprise, the days of the period it was registered.
    pub days: usize,
    /// Enterprise-days with a `fleet` or `green` line.
    pub days_reported: usize,
    /// The mean number of machines in the register: machine-days ÷ days.
    pub machines: f64,
    /// The fleet's numerators and denominators in machine-days (CNC times in seconds).
    pub machine_days: Fleet,
    /// The part of `machine_days` taken from declared machine counts.
    pub declared_machine_days: Fleet,
    pub green: GreenTotals,
    /// Value-added methods (`va_method`) behind the figures.
    pub va_methods: BTreeSet<String>,
    /// Electricity conversion methods (`el_method`) behind the energy figures.
    pub el_methods: BTreeSet<String>,
    pub indicators: Vec<IndicatorRow>,
    /// The programme facts of the enterprise register, as of the report's year.
    pub register: RegisterFacts,
    /// Per indicator, the enterprises the sums cover (sectors and the county).
    #[serde(skip)]
    covered: BTreeMap<Indicator, usize>,
}

impl Summary {
    fn empty(level: Level, sector: Option<Sector>, days: usize) -> Summary {
        Summary {
            level,
            sector,
            enterprise: None,
            name: String::new(),
            enterprises_registered: 0,
            enterprises_reporting: 0,
            enterprises_declared: 0,
            reporting: false,
            days,
            days_reported: 0,
            machines: 0.0,
            machine_days: Fleet::default(),
            declared_machine_days: Fleet::default(),
            green: GreenTotals::default(),
            va_methods: BTreeSet::new(),
            el_methods: BTreeSet::new(),
            indicators: Vec::new(),
            register: RegisterFacts::default(),
            covered: BTreeMap::new(),
        }
    }

    fn add(&mut self, other: &Summary) {
        self.enterprises_registered += other.enterprises_registered;
        self.enterprises_reporting += other.enterprises_reporting;
        self.enterprises_declared += other.enterprises_declared;
        self.days_reported += other.days_reported;
        self.machine_days = self.machine_days.add(&other.machine_days);
        self.declared_machine_days = self.declared_machine_days.add(&other.declared_machine_days);
        self.register.add(&other.register);
        for row in &other.indicators {
            *self.covered.entry(row.indicator).or_default() += row.enterprises;
        }
        self.green.add(&other.green);
        self.va_methods.extend(other.va_methods.iter().cloned());
        self.el_methods.extend(other.el_methods.iter().cloned());
    }

    /// Computes the mean register and the indicators against the targets of `sector` (the
    /// programme-wide ones for the county).
    fn finish(&mut self, targets: &Targets, year: i16) {
        self.machines = if self.days == 0 {
            0.0
        } else {
            self.machine_days.machines_total as f64 / self.days as f64
        };
        let (md, declared) = (&self.machine_days, &self.declared_machine_days);
        let level = self.level;
        let covered = &self.covered;
        let register = self.register.rows();
        self.indicators = indicators(md, &self.green)
            .into_iter()
            .chain(register)
            .map(|mut row| {
                if level != Level::Enterprise && !row.indicator.is_count() {
                    row.enterprises = covered.get(&row.indicator).copied().unwrap_or(0);
                }
                row.declared_share = match row.indicator {
                    Indicator::NetworkingRate | Indicator::CncRate => {
                        ratio(declared.machines_total as f64, md.machines_total as f64)
                    }
                    Indicator::NetworkingRateDigital => {
                        ratio(declared.machines_digital as f64, md.machines_digital as f64)
                    }
                    // The register's rows bring their own (robots: the enterprises declared).
                    _ => row.declared_share,
                };
                let target = targets.in_force(self.sector, row.indicator, year);
                row.against(target)
            })
            .collect();
    }

    pub fn indicator(&self, indicator: Indicator) -> Option<&IndicatorRow> {
        self.indicators.iter().find(|r| r.indicator == indicator)
    }
}

/// What the enterprise register declares of the programme's facts, summed over enterprises:
/// robots in service, digital workshops, ERP/MES/SCM/PLM among key enterprises, above-scale
/// enterprises. Robots are measured where the enterprise's agent reports them and declared
/// otherwise; a system or workshop counts from the year the register gives for it up to the
/// report's year; an enterprise with neither reported robots nor a `robots` entry is left out
/// of the robot count's coverage rather than counted as 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RegisterFacts {
    pub enterprises: usize,
    pub robots: u64,
    /// Enterprises counted with the robots their register declares (no agent reports them).
    pub robots_declared: usize,
    /// Enterprises counted with the robots their agent reports (`machines_robot`).
    pub robots_measured: usize,
    pub digital_workshops: u64,
    pub key_enterprises: usize,
    pub erp: usize,
    pub mes: usize,
    pub scm: usize,
    pub plm: usize,
    pub above_scale: usize,
}

impl RegisterFacts {
    /// One enterprise's facts as of `year`; `measured_robots` is the robot count its agent
    /// reported, which replaces the declared one.
    pub fn of(e: &Enterprise, year: i16, measured_robots: Option<u64>) -> RegisterFacts {
        let by = |y: Option<i16>| usize::from(e.key_enterprise && y.is_some_and(|y| y <= year));
        RegisterFacts {
            enterprises: 1,
            robots: measured_robots.or(e.robots).unwrap_or(0),
            robots_declared: usize::from(measured_robots.is_none() && e.robots.is_some()),
            robots_measured: usize::from(measured_robots.is_some()),
            digital_workshops: e.digital_workshops.iter().filter(|&&y| y <= year).count() as u64,
            key_enterprises: usize::from(e.key_enterprise),
            erp: by(e.erp),
            mes: by(e.mes),
            scm: by(e.scm),
            plm: by(e.plm),
            above_scale: usize::from(e.above_scale),
        }
    }

    fn add(&mut self, o: &RegisterFacts) {
        self.enterprises += o.enterprises;
        self.robots += o.robots;
        self.robots_declared += o.robots_declared;
        self.robots_measured += o.robots_measured;
        self.digital_workshops += o.digital_workshops;
        self.key_enterprises += o.key_enterprises;
        self.erp += o.erp;
        self.mes += o.mes;
        self.scm += o.scm;
        self.plm += o.plm;
        self.above_scale += o.above_scale;
    }

    /// The register's indicator rows (before targets). A count's value is its numerator and
    /// its denominator the enterprises counted; a rate divides by the key enterprises.
    fn rows(&self) -> Vec<IndicatorRow> {
        let count = |i, n: f64, d: usize| IndicatorRow {
            value: (d > 0).then_some(n),
            enterprises: d,
            ..IndicatorRow::new(i, n, d as f64)
        };
        let key = self.key_enterprises as f64;
        let rate = |i, n: usize| IndicatorRow {
            enterprises: self.key_enterprises,
            ..IndicatorRow::new(i, n as f64, key)
        };
        let robot_enterprises = self.robots_declared + self.robots_measured;
        vec![
            IndicatorRow {
                // The basis: the share of the enterprises counted whose robots are declared.
                declared_share: ratio(self.robots_declared as f64, robot_enterprises as f64),
                ..count(Indicator::Robots, self.robots as f64, robot_enterprises)
            },
            count(
                Indicator::DigitalWorkshops,
                self.digital_workshops as f64,
                self.enterprises,
            ),
            rate(Indicator::ErpRate, self.erp),
            rate(Indicator::MesRate, self.mes),
            rate(Indicator::ScmRate, self.scm),
            rate(Indicator::PlmRate, self.plm),
            count(
                Indicator::AboveScaleEnterprises,
                self.above_scale as f64,
                self.enterprises,
            ),
        ]
    }
}

/// What the store holds when a report's filter matched nothing: the counties, sectors and
/// enterprises of its `fleet` lines, so the reader sees the typo (`wuyi` for `武义`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StoreHolds {
    pub counties: Vec<String>,
    pub sectors: Vec<String>,
    pub enterprises: Vec<String>,
}

/// An enterprise writing to the county's store that is not in the register.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Unregistered {
    pub enterprise: String,
    pub sector_tags: BTreeSet<String>,
    pub days_reported: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bucket {
    Day,
    Month,
    Year,
}

/// The trend: the figures of the whole report (the county, or the sector asked for) per day,
/// or per month for periods longer than [`DAILY_TREND_MAX_DAYS`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trend {
    pub bucket: Bucket,
    pub points: Vec<TrendPoint>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrendPoint {
    /// `2026-11-03` or `2026-11`.
    pub label: String,
    pub first_day: Date,
    pub days: usize,
    /// The most enterprises in the report's scope registered on one day of the bucket: 0
    /// before the first of them joined and after the last left, where charts do not go.
    pub registered: usize,
    pub indicators: Vec<IndicatorRow>,
}

/// A trend over more days than this is drawn per month: two months of daily points still read
/// as a line, a year of them as noise.
pub const DAILY_TREND_MAX_DAYS: usize = 62;

/// An enterprise that pulls its sector below a target: its numerator and denominator, and by
/// how much of the numerator it falls short of the target (machine-days, hours, key
/// enterprises, or tce/t over for an intensity).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Laggard {
    pub sector: Sector,
    pub indicator: Indicator,
    pub enterprise: String,
    pub name: String,
    pub value: Option<f64>,
    pub numerator: f64,
    pub denominator: f64,
    /// For a minimum, target × denominator − numerator; for a maximum, numerator − target ×
    /// denominator: what the enterprise lacks for the sector to meet the target on its share.
    pub shortfall: f64,
    pub reporting: bool,
}

/// The enterprises of each sector below a target it misses, the largest shortfall first.
fn laggards(sectors: &[Summary], enterprises: &[Summary]) -> Vec<Laggard> {
    let mut out = Vec::new();
    for s in sectors {
        for row in s.indicators.iter().filter(|r| r.meets == Some(false)) {
            if row.indicator.is_count() {
                continue;
            }
            let Some(target) = row.target else { continue };
            let mut here: Vec<Laggard> = enterprises
                .iter()
                .filter(|e| e.sector == s.sector)
                .filter_map(|e| {
                    let r = e.indicator(row.indicator)?;
                    if r.enterprises == 0 {
                        return None;
                    }
                    let shortfall = match target.bound {
                        Bound::Min => target.value * r.denominator - r.numerator,
                        Bound::Max => r.numerator - target.value * r.denominator,
                    };
                    (shortfall > 1e-9).then(|| Laggard {
                        sector: s.sector.unwrap_or(Sector::Other),
                        indicator: row.indicator,
                        enterprise: e.enterprise.clone().unwrap_or_default(),
                        name: e.name.clone(),
                        value: r.value,
                        numerator: r.numerator,
                        denominator: r.denominator,
                        shortfall,
                        reporting: e.reporting,
                    })
                })
                .collect();
            here.sort_by(|a, b| b.shortfall.total_cmp(&a.shortfall));
            out.extend(here);
        }
    }
    out
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub county: String,
    /// The targets' time zone: the report's days and times are in it.
    pub timezone: String,
    pub title: Option<String>,
    pub from: Date,
    pub to: Date,
    /// Days counted (the period is clipped at today).
    pub days: usize,
    pub last_day: Option<Date>,
    /// The year whose targets apply.
    pub target_year: i16,
    /// The sector the report is limited to.
    pub sector_filter: Option<Sector>,
    /// The county as a whole; absent when the report is limited to one sector.
    pub county_total: Option<Summary>,
    pub sectors: Vec<Summary>,
    pub enterprises: Vec<Summary>,
    pub not_reporting: Vec<Enterprise>,
    /// Per sector and missed target, the enterprises below it, largest shortfall first.
    pub laggards: Vec<Laggard>,
    pub unregistered: Vec<Unregistered>,
    /// When the period, county or sector asked for matched no line: what the store holds
    /// (filled in by the caller that reads the store).
    pub store_holds: Option<StoreHolds>,
    /// The targets and register files the report was made from.
    pub sources: Vec<String>,
    pub trend: Trend,
    /// Per calendar year of the period, against that year's targets (Table 1's columns).
    pub years: Trend,
    pub warnings: Vec<String>,
}

/// What one enterprise's lines say, day by day.
#[derive(Default)]
struct Days {
    fleet: Vec<Option<Fleet>>,
    /// The robots of the `fleet` line kept for each day, when it carried them.
    robots: Vec<Option<u64>>,
    green: Vec<Option<GreenDay>>,
    sector_tags: BTreeSet<String>,
    duplicates: usize,
}

impl Days {
    fn new(n: usize) -> Days {
        Days {
            fleet: vec![None; n],
            robots: vec![None; n],
            green: vec![None; n],
            ..Days::default()
        }
    }

    fn days_reported(&self) -> usize {
        self.fleet
            .iter()
            .zip(&self.green)
            .filter(|(f, g)| f.is_some() || g.is_some())
            .count()
    }
}

/// How far a day window's totals had got: of two lines for one enterprise and day, the larger
/// is the later (see the module documentation).
fn fleet_progress(f: &Fleet) -> (f64, u64, f64) {
    (f.cnc_planned_s, f.machines_networked, f.cnc_running_s)
}

fn green_progress(g: &GreenDay) -> f64 {
    g.green.energy_tce + g.green.water_t + g.green.value_added_10k_cny
}

/// Every day's fleet of one enterprise with the days it did not report filled in: the
/// register of the nearest earlier reported day (the first later one for days before it),
/// nothing networked, no CNC time. All zeros when it reported no day.
pub fn fill_days(days: &[Option<Fleet>]) -> Vec<Fleet> {
    let register = |f: &Fleet| Fleet {
        machines_total: f.machines_total,
        machines_digital: f.machines_digital,
        machines_cnc: f.machines_cnc,
        ..Fleet::default()
    };
    let mut last = days
        .iter()
        .flatten()
        .next()
        .map(register)
        .unwrap_or_default();
    days.iter()
        .map(|d| match d {
            Some(f) => {
                last = register(f);
                *f
            }
            None => last,
        })
        .collect()
}

/// Builds the report. `fleet` and `green` are the lines read from the store, with their day
/// index into `period.days`; `warnings` are carried over from reading them.
pub fn aggregate(
    targets: &Targets,
    registry: &Registry,
    period: &Period,
    sector_filter: Option<Sector>,
    fleet: Vec<FleetDay>,
    green: Vec<GreenDay>,
    mut warnings: Vec<String>,
) -> Report {
    let n = period.days.len();
    let year = period.target_year();
    let mut by_enterprise: HashMap<String, Days> = HashMap::new();
    for line in fleet {
        if line.day >= n {
            continue;
        }
        let days = by_enterprise
            .entry(line.enterprise)
            .or_insert_with(|| Days::new(n));
        days.sector_tags.insert(line.sector_tag);
        let keep = match &days.fleet[line.day] {
            Some(old) => {
                days.duplicates += 1;
                fleet_progress(&line.fleet) > fleet_progress(old)
            }
            None => true,
        };
        if keep {
            days.fleet[line.day] = Some(line.fleet);
            days.robots[line.day] = line.robots;
        }
    }
    for line in green {
        if line.day >= n {
            continue;
        }
        let days = by_enterprise
            .entry(line.enterprise.clone())
            .or_insert_with(|| Days::new(n));
        days.sector_tags.insert(line.sector_tag.clone());
        let day = line.day;
        let slot = &mut days.green[day];
        match slot {
            Some(old) => {
                days.duplicates += 1;
                if green_progress(&line) > green_progress(old) {
                    *old = line;
                }
            }
            None => *slot = Some(line),
        }
    }

    let wanted = |s: Sector| sector_filter.is_none_or(|f| f == s);
    let mut enterprises = Vec::new();
    let mut not_reporting = Vec::new();
    let mut trend_fleet = vec![Fleet::default(); n];
    let mut trend_green = vec![GreenTotals::default(); n];
    // Per day, the enterprises in scope registered that day.
    let mut trend_registered = vec![0usize; n];
    let mut registered_per_sector: BTreeMap<Sector, usize> = BTreeMap::new();
    // Per enterprise, the registered days on which its agent reported robots.
    let mut robot_days: HashMap<String, Vec<(Date, u64)>> = HashMap::new();
    for e in registry.enterprises.iter().filter(|e| wanted(e.sector)) {
        // The days of the period the enterprise was in the programme: its rates cover these
        // only, and its lines from other days are left out.
        let registered: Vec<bool> = period.days.iter().map(|d| e.registered_on(*d)).collect();
        let active: Vec<usize> = (0..n).filter(|&i| registered[i]).collect();
        for &i in &active {
            trend_registered[i] += 1;
        }
        let days = by_enterprise.remove(&e.id);
        if active.is_empty() {
            if days.is_some_and(|d| d.days_reported() > 0) {
                warnings.push(format!(
                    "enterprise {} wrote lines in the period but is registered only from {} to {}: they are left out",
                    e.id,
                    e.joined.map_or("the start".to_string(), |d| d.to_string()),
                    e.left.map_or("now".to_string(), |d| d.to_string()),
                ));
            }
            continue;
        }
        *registered_per_sector.entry(e.sector).or_default() += 1;
        let mut days = days.unwrap_or_else(|| Days::new(n));
        let outside = (0..n)
            .filter(|&i| !registered[i])
            .filter(|&i| days.fleet[i].is_some() || days.green[i].is_some())
            .count();
        if outside > 0 {
            warnings.push(format!(
                "enterprise {}: {outside} day(s) with lines outside its registered days ({} to {}) are left out",
                e.id,
                e.joined.map_or("the start".to_string(), |d| d.to_string()),
                e.left.map_or("now".to_string(), |d| d.to_string()),
            ));
        }
        let fleet_days: Vec<Option<Fleet>> = active.iter().map(|&i| days.fleet[i]).collect();
        let green_days: Vec<Option<GreenDay>> =
            active.iter().map(|&i| days.green[i].take()).collect();
        let days_reported = fleet_days
            .iter()
            .zip(&green_days)
            .filter(|(f, g)| f.is_some() || g.is_some())
            .count();
        let reporting = days_reported > 0;
        if reporting && days.sector_tags.iter().any(|t| t != e.sector.as_str()) {
            warnings.push(format!(
                "enterprise {} is registered in sector {} but its agent writes sector={}; it is counted in {}",
                e.id,
                e.sector.as_str(),
                days.sector_tags.iter().cloned().collect::<Vec<_>>().join(","),
                e.sector.as_str()
            ));
        }
        if days.duplicates > 0 {
            warnings.push(format!(
                "enterprise {}: {} day(s) have lines under two tag sets (its config changed during the day); the larger totals were kept",
                e.id, days.duplicates
            ));
        }
        let mut s = Summary::empty(Level::Enterprise, Some(e.sector), active.len());
        s.enterprise = Some(e.id.clone());
        s.name = e.name.clone();
        s.enterprises_registered = 1;
        s.enterprises_reporting = usize::from(reporting);
        s.reporting = reporting;
        s.days_reported = days_reported;
        let robots: Vec<(Date, u64)> = active
            .iter()
            .filter_map(|&i| days.robots[i].map(|r| (period.days[i], r)))
            .collect();
        s.register = RegisterFacts::of(e, year, robots.last().map(|r| r.1));
        if !robots.is_empty() {
            robot_days.insert(e.id.clone(), robots);
        }
        if fleet_days.iter().any(Option::is_some) {
            for (&day, f) in active.iter().zip(fill_days(&fleet_days).iter()) {
                s.machine_days = s.machine_days.add(f);
                trend_fleet[day] = trend_fleet[day].add(f);
            }
        } else if let Some(declared) = e.declared_fleet() {
            // No `fleet` line at all: the declared register counts on each registered day,
            // with nothing networked.
            s.enterprises_declared = 1;
            for &day in &active {
                s.machine_days = s.machine_days.add(&declared);
                trend_fleet[day] = trend_fleet[day].add(&declared);
            }
            s.declared_machine_days = s.machine_days;
        } else {
            warnings.push(format!(
                "enterprise {} sent no fleet line and declares no machine counts (machines_total in the register): its machines are missing from the denominators",
                e.id
            ));
        }
        for (&day, g) in active.iter().zip(&green_days) {
            let Some(g) = g else { continue };
            s.green.add_day(g);
            s.va_methods.insert(g.va_method.clone());
            s.el_methods.insert(g.el_method.clone());
            trend_green[day].add_day(g);
        }
        s.finish(targets, year);
        if !reporting {
            not_reporting.push(e.clone());
        }
        enterprises.push(s);
    }
    enterprises.sort_by(|a, b| (a.sector, &a.enterprise).cmp(&(b.sector, &b.enterprise)));

    let mut unregistered: Vec<Unregistered> = by_enterprise
        .into_iter()
        .filter(|(_, d)| {
            sector_filter.is_none_or(|f| d.sector_tags.contains(f.as_str()))
                && d.days_reported() > 0
        })
        .map(|(id, d)| Unregistered {
            days_reported: d.days_reported(),
            enterprise: id,
            sector_tags: d.sector_tags,
        })
        .collect();
    unregistered.sort_by(|a, b| a.enterprise.cmp(&b.enterprise));
    if !unregistered.is_empty() {
        warnings.push(format!(
            "{} enterprise(s) write to the store but are not in the register and are left out of the sums: {}",
            unregistered.len(),
            unregistered
                .iter()
                .map(|u| u.enterprise.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }

    let mut sectors = Vec::new();
    let mut total = Summary::empty(Level::County, None, n);
    for sector in Sector::ALL.into_iter().filter(|s| wanted(*s)) {
        let mut s = Summary::empty(Level::Sector, Some(sector), n);
        for e in enterprises.iter().filter(|e| e.sector == Some(sector)) {
            s.add(e);
        }
        s.enterprises_registered = registered_per_sector.get(&sector).copied().unwrap_or(0);
        s.finish(targets, year);
        total.add(&s);
        sectors.push(s);
    }
    total.finish(targets, year);
    if total.el_methods.len() > 1 {
        warnings.push(format!(
            "electricity is converted by different methods ({}): the energy sums mix calorific and equivalent values",
            total.el_methods.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }

    // The trend is drawn against the targets of the report's scope.
    let bucket = if period.days.len() > DAILY_TREND_MAX_DAYS {
        Bucket::Month
    } else {
        Bucket::Day
    };
    let in_force = |i, y| targets.in_force(sector_filter, i, y);
    let sums = DaySums {
        fleet: &trend_fleet,
        green: &trend_green,
        registered: &trend_registered,
    };
    let mut years = trend(period, Bucket::Year, &sums, in_force);
    // Table 1 also counts enterprises (规上企业数) per year: the register's facts as of each
    // year, over the enterprises registered on some day of it in the period.
    for point in &mut years.points {
        let y = point.first_day.year();
        let mut facts = RegisterFacts::default();
        for e in registry.enterprises.iter().filter(|e| wanted(e.sector)) {
            if period
                .days
                .iter()
                .any(|d| d.year() == y && e.registered_on(*d))
            {
                let measured = robot_days
                    .get(&e.id)
                    .and_then(|r| r.iter().rev().find(|(d, _)| d.year() == y))
                    .map(|r| r.1);
                facts.add(&RegisterFacts::of(e, y, measured));
            }
        }
        point.indicators.extend(facts.rows().into_iter().map(|r| {
            let t = in_force(r.indicator, y);
            r.against(t)
        }));
    }
    let trend = trend(period, bucket, &sums, in_force);

    let laggards = laggards(&sectors, &enterprises);
    Report {
        county: targets.county.clone(),
        timezone: targets.timezone.clone(),
        title: targets.title.clone(),
        from: period.from,
        to: period.to,
        days: n,
        last_day: period.days.last().copied(),
        target_year: year,
        sector_filter,
        county_total: sector_filter.is_none().then_some(total),
        sectors,
        enterprises,
        not_reporting,
        laggards,
        unregistered,
        store_holds: None,
        sources: Vec::new(),
        trend,
        years,
        warnings,
    }
}

/// The report scope's sums per day of the period.
struct DaySums<'a> {
    fleet: &'a [Fleet],
    green: &'a [GreenTotals],
    /// Enterprises registered on the day.
    registered: &'a [usize],
}

/// The per-day sums bucketed by day, month or year; each point is set against the targets
/// of its own year.
fn trend(
    period: &Period,
    bucket: Bucket,
    sums: &DaySums<'_>,
    target: impl Fn(Indicator, i16) -> Option<TargetInForce>,
) -> Trend {
    let (fleet, green) = (sums.fleet, sums.green);
    let mut points: Vec<(String, Date, usize, Fleet, GreenTotals, usize)> = Vec::new();
    for (i, day) in period.days.iter().enumerate() {
        let label = match bucket {
            Bucket::Day => day.to_string(),
            Bucket::Month => format!("{:04}-{:02}", day.year(), day.month()),
            Bucket::Year => format!("{:04}", day.year()),
        };
        match points.last_mut() {
            Some(p) if p.0 == label => {
                p.2 += 1;
                p.3 = p.3.add(&fleet[i]);
                p.4.add(&green[i]);
                p.5 = p.5.max(sums.registered[i]);
            }
            _ => points.push((label, *day, 1, fleet[i], green[i], sums.registered[i])),
        }
    }
    Trend {
        bucket,
        points: points
            .into_iter()
            .map(|(label, first_day, days, f, g, registered)| TrendPoint {
                label,
                first_day,
                days,
                registered,
                indicators: indicators(&f, &g)
                    .into_iter()
                    .map(|r| {
                        let t = target(r.indicator, first_day.year());
                        r.against(t)
                    })
                    .collect(),
            })
            .collect(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use jiff::civil::date;

    fn targets() -> Targets {
        Targets::load_str(
            r#"county = "yk"
[target]
networking_rate = { min = 0.55 }
cnc_rate = { min = 0.65 }
tce_per_10k_cny = { max = { 2021 = 0.45, 2022 = 0.43 } }
water_t_per_10k_cny = { max = { 2022 = 26.76 } }
[sector.castings]
cnc_rate = { min = 0.4 }
"#,
            "t.toml",
        )
        .unwrap()
    }

    fn registry() -> Registry {
        Registry::load_str(
            r#"
[[enterprise]]
id = "a"
name = "A Doors"
sector = "doors"
[[enterprise]]
id = "b"
sector = "doors"
[[enterprise]]
id = "c"
sector = "castings"
[[enterprise]]
id = "silent"
sector = "cups"
"#,
            "e.toml",
        )
        .unwrap()
    }

    fn fleet(total: u64, cnc: u64, networked: u64, running_h: f64, planned_h: f64) -> Fleet {
        Fleet {
            machines_total: total,
            machines_digital: cnc,
            machines_cnc: cnc,
            machines_networked: networked,
            machines_digital_networked: networked.min(cnc),
            cnc_running_s: running_h * 3600.0,
            cnc_planned_s: planned_h * 3600.0,
        }
    }

    fn f(enterprise: &str, sector: &str, day: usize, fleet: Fleet) -> FleetDay {
        FleetDay {
            enterprise: enterprise.into(),
            sector_tag: sector.into(),
            day,
            fleet,
            robots: None,
        }
    }

    fn g(
        enterprise: &str,
        sector: &str,
        day: usize,
        tce: f64,
        water: f64,
        va: Option<f64>,
    ) -> GreenDay {
        GreenDay {
            enterprise: enterprise.into(),
            sector_tag: sector.into(),
            day,
            green: Green {
                energy_tce: tce,
                electricity_kwh: tce / 0.0001229,
                water_t: water,
                value_added_10k_cny: va.unwrap_or(0.0),
            },
            value_added_known: va.is_some(),
            energy_known: true,
            water_known: true,
            wastewater_t: None,
            va_method: "parts".into(),
            el_method: "calorific".into(),
        }
    }

    fn period() -> Period {
        Period::new(date(2022, 3, 1), date(2022, 3, 3), date(2022, 6, 1)).unwrap()
    }

    fn value(s: &Summary, i: Indicator) -> f64 {
        s.indicator(i).and_then(|r| r.value).unwrap()
    }

    fn report() -> Report {
        let fleet = vec![
            // a: 10 machines, 6 CNC, on all three days.
            f("a", "doors", 0, fleet(10, 6, 6, 30.0, 40.0)),
            f("a", "doors", 1, fleet(10, 6, 5, 20.0, 40.0)),
            f("a", "doors", 2, fleet(10, 6, 7, 35.0, 40.0)),
            // b: 4 machines, 2 CNC; silent on day 1 (index 0), so day 1 takes day 2's register.
            f("b", "doors", 1, fleet(4, 2, 2, 10.0, 16.0)),
            f("b", "doors", 2, fleet(4, 2, 1, 6.0, 16.0)),
            // c: 5 machines, 2 CNC, one day only; its agent writes the wrong sector.
            f("c", "cups", 0, fleet(5, 2, 5, 12.0, 16.0)),
            // Not in the register.
            f("stranger", "doors", 0, fleet(100, 100, 100, 1.0, 1.0)),
        ];
        let green = vec![
            g("a", "doors", 0, 0.9, 40.0, Some(2.0)),
            g("a", "doors", 1, 1.1, 60.0, Some(2.5)),
            // Energy on a day without value added: in the energy total, not in the intensity.
            g("a", "doors", 2, 0.5, 20.0, None),
            g("b", "doors", 1, 0.2, 10.0, Some(0.5)),
        ];
        aggregate(
            &targets(),
            &registry(),
            &period(),
            None,
            fleet,
            green,
            Vec::new(),
        )
    }

    #[test]
    fn a_missing_day_keeps_the_register_with_nothing_networked() {
        // Days: none, (4 machines, 2 networked), none, (5 machines, 1 networked).
        let filled = fill_days(&[
            None,
            Some(fleet(4, 2, 2, 1.0, 2.0)),
            None,
            Some(fleet(5, 3, 1, 1.0, 2.0)),
        ]);
        let totals: Vec<(u64, u64, u64)> = filled
            .iter()
            .map(|f| (f.machines_total, f.machines_cnc, f.machines_networked))
            .collect();
        // Day 1 takes the first later register, day 3 the earlier one.
        assert_eq!(totals, vec![(4, 2, 0), (4, 2, 2), (4, 2, 0), (5, 3, 1)]);
        assert_eq!(filled[0].cnc_planned_s, 0.0);
        assert_eq!(fill_days(&[None, None]), vec![Fleet::default(); 2]);
    }

    #[test]
    fn enterprises_add_up_in_machine_days() {
        let r = report();
        let a = &r.enterprises[0];
        assert_eq!(a.enterprise.as_deref(), Some("a"));
        // a: networked 6 + 5 + 7 = 18 of 3 × 10 = 30 machine-days → 0.6; CNC 18 / 30 = 0.6.
        assert_eq!(a.machine_days.machines_networked, 18);
        assert_eq!(a.machine_days.machines_total, 30);
        assert!((value(a, Indicator::NetworkingRate) - 0.6).abs() < 1e-12);
        assert!((a.machines - 10.0).abs() < 1e-12);
        // CNC utilisation (30 + 20 + 35) h / 120 h = 85 / 120 = 0.70833.
        assert!((value(a, Indicator::CncUtilisation) - 85.0 / 120.0).abs() < 1e-12);

        let b = &r.enterprises[1];
        // b: day 1 filled with day 2's register: 4 + 4 + 4 = 12 machine-days, networked
        // 0 + 2 + 1 = 3 → 0.25; CNC 2 × 3 = 6 / 12 = 0.5; 2 of 3 days reported.
        assert_eq!(b.machine_days.machines_total, 12);
        assert_eq!(b.machine_days.machines_networked, 3);
        assert_eq!(b.days_reported, 2);
        assert!((value(b, Indicator::NetworkingRate) - 0.25).abs() < 1e-12);

        let doors = &r.sectors[0];
        assert_eq!(doors.sector, Some(Sector::Doors));
        // Sector doors = a + b: networked 18 + 3 = 21 of 30 + 12 = 42 → 0.5; not the mean of
        // 0.6 and 0.25 (0.425). Mean machines 42 / 3 = 14 = 10 + 4.
        assert!((value(doors, Indicator::NetworkingRate) - 0.5).abs() < 1e-12);
        assert!((doors.machines - 14.0).abs() < 1e-12);
        let row = doors.indicator(Indicator::NetworkingRate).unwrap();
        // 0.5 − 0.55 = −0.05: below the target.
        assert!((row.gap.unwrap() + 0.05).abs() < 1e-12);
        assert_eq!(row.meets, Some(false));
        // CNC rate: a 18 + b 6 = 24 of 42 = 0.5714 < 0.65.
        let cnc = doors.indicator(Indicator::CncRate).unwrap();
        assert!((cnc.value.unwrap() - 24.0 / 42.0).abs() < 1e-12);
        assert_eq!(cnc.meets, Some(false));
    }

    #[test]
    fn intensities_sum_over_the_days_with_value_added() {
        let r = report();
        let a = &r.enterprises[0];
        // Energy over all green days: 0.9 + 1.1 + 0.5 = 2.5 tce; value added 2.0 + 2.5 = 4.5.
        assert!((a.green.all_days.energy_tce - 2.5).abs() < 1e-12);
        // Intensity over the value-added days only: (0.9 + 1.1) / 4.5 = 0.4444 ≤ 0.43? No.
        let tce = a.indicator(Indicator::TcePer10kCny).unwrap();
        assert!((tce.value.unwrap() - 2.0 / 4.5).abs() < 1e-12);
        assert_eq!(
            tce.target.map(|t| (t.value, t.year)),
            Some((0.43, Some(2022)))
        );
        assert_eq!(tce.meets, Some(false));
        // Water (40 + 60) / 4.5 = 22.22 ≤ 26.76: met, 4.54 under.
        let water = a.indicator(Indicator::WaterTPer10kCny).unwrap();
        assert!((water.value.unwrap() - 100.0 / 4.5).abs() < 1e-12);
        assert_eq!(water.meets, Some(true));
        assert!(water.gap.unwrap() < 0.0);

        // Doors = a + b: (2.0 + 0.2) tce / (4.5 + 0.5) = 2.2 / 5.0 = 0.44.
        let doors = &r.sectors[0];
        assert!((value(doors, Indicator::TcePer10kCny) - 0.44).abs() < 1e-12);
        // Value added per tce: 5.0 / 2.2 = 2.2727.
        assert!((value(doors, Indicator::ValueAddedPerTce) - 5.0 / 2.2).abs() < 1e-12);
    }

    #[test]
    fn silent_and_unregistered_enterprises_are_listed_not_summed() {
        let r = report();
        let ids: Vec<&str> = r.not_reporting.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, vec!["silent"]);
        assert_eq!(r.unregistered.len(), 1);
        assert_eq!(r.unregistered[0].enterprise, "stranger");
        let county = r.county_total.as_ref().unwrap();
        // County = a 30 + b 12 + c (5 × 3 = 15, its one day's register filled to all three)
        // = 57 machine-days; networked 18 + 3 + 5 = 26. The stranger's 100 count nowhere.
        assert_eq!(county.machine_days.machines_total, 57);
        assert_eq!(county.machine_days.machines_networked, 26);
        assert_eq!(county.enterprises_registered, 4);
        assert_eq!(county.enterprises_reporting, 3);
        // c is counted in castings, its registered sector, against castings' own CNC target:
        // 2 × 3 = 6 of 15 = 0.4 ≥ 0.4.
        let castings = r
            .sectors
            .iter()
            .find(|s| s.sector == Some(Sector::Castings))
            .unwrap();
        let cnc = castings.indicator(Indicator::CncRate).unwrap();
        assert!((cnc.value.unwrap() - 0.4).abs() < 1e-12);
        assert_eq!(cnc.meets, Some(true));
        assert!(cnc.target.unwrap().sector_specific);
        assert!(
            r.warnings
                .iter()
                .any(|w| w.contains("enterprise c is registered in sector castings"))
        );
        // Every sector has a row, also those without enterprises.
        assert_eq!(r.sectors.len(), 7);
        let cups = r
            .sectors
            .iter()
            .find(|s| s.sector == Some(Sector::Cups))
            .unwrap();
        assert_eq!(
            (cups.enterprises_registered, cups.enterprises_reporting),
            (1, 0)
        );
        assert_eq!(
            cups.indicator(Indicator::NetworkingRate).unwrap().value,
            None
        );
    }

    #[test]
    fn of_two_lines_for_one_day_the_larger_is_kept() {
        let lines = vec![
            f("a", "doors", 0, fleet(10, 6, 6, 30.0, 40.0)),
            f("a", "other", 0, fleet(10, 6, 6, 10.0, 12.0)),
        ];
        let r = aggregate(
            &targets(),
            &registry(),
            &period(),
            Some(Sector::Doors),
            lines,
            Vec::new(),
            Vec::new(),
        );
        let a = &r.enterprises[0];
        // Day 0: the line with 40 h planned wins; days 1 and 2 are filled.
        assert_eq!(a.machine_days.cnc_planned_s, 40.0 * 3600.0);
        assert!(r.county_total.is_none(), "limited to one sector");
        assert_eq!(r.sectors.len(), 1);
        assert!(r.warnings.iter().any(|w| w.contains("two tag sets")));
    }

    #[test]
    fn the_trend_sums_each_day_across_enterprises() {
        let r = report();
        assert_eq!(r.trend.bucket, Bucket::Day);
        assert_eq!(r.trend.points.len(), 3);
        let day1 = &r.trend.points[0];
        // Day 1: a 6 of 10, b filled 0 of 4, c 5 of 5 → 11 / 19.
        let net = day1
            .indicators
            .iter()
            .find(|i| i.indicator == Indicator::NetworkingRate)
            .unwrap();
        assert_eq!((net.numerator, net.denominator), (11.0, 19.0));
        // Day 3: a's energy without value added is not in the intensity: no value added that
        // day at all, so no intensity.
        let tce = r.trend.points[2]
            .indicators
            .iter()
            .find(|i| i.indicator == Indicator::TcePer10kCny)
            .unwrap();
        assert_eq!(tce.value, None);
    }

    #[test]
    fn long_periods_trend_by_month_and_stop_at_today() {
        let p = Period::new(date(2022, 1, 1), date(2022, 12, 31), date(2022, 3, 10)).unwrap();
        // 31 + 28 + 10 = 69 days counted, more than 62: by month, three points.
        assert_eq!(p.days.len(), 69);
        let r = aggregate(
            &targets(),
            &registry(),
            &p,
            None,
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        assert_eq!(r.trend.bucket, Bucket::Month);
        let labels: Vec<&str> = r.trend.points.iter().map(|p| p.label.as_str()).collect();
        assert_eq!(labels, vec!["2022-01", "2022-02", "2022-03"]);
        assert_eq!(r.trend.points[2].days, 10);
        assert_eq!(r.not_reporting.len(), 4);
        assert!(Period::new(date(2022, 2, 1), date(2022, 1, 1), date(2022, 3, 1)).is_err());
        assert!(Period::new(date(2023, 2, 1), date(2023, 3, 1), date(2022, 3, 1)).is_err());
    }

    /// The county of issue 15: d1 (doors) reports every day; d2 (doors) joined on 7 March
    /// and wrote a line before it; c1 (cups) never reports but declares its machines; k1
    /// (cookware) has no water meter. Sectors of uneven size: doors 2, cups 1, cookware 1.
    /// Period 1–10 March 2022, ten days.
    fn wuyi() -> (Targets, Registry, Period, Vec<FleetDay>, Vec<GreenDay>) {
        let targets = Targets::load_str(
            "county = \"wuyi\"\n[target]\nnetworking_rate = { min = 0.55 }\ncnc_rate = { min = 0.65 }\ntce_per_10k_cny = { max = { 2022 = 0.43 } }\nwater_t_per_10k_cny = { max = { 2022 = 26.76 } }\n[sector.doors]\nerp_rate = { min = 0.9 }\nrobots = { min = 200 }\n",
            "t.toml",
        )
        .unwrap();
        let registry = Registry::load_str(
            r#"
[[enterprise]]
id = "d1"
sector = "doors"
key_enterprise = true
above_scale = true
robots = 10
digital_workshops = [2021, 2023]
erp = 2020
mes = 2023
[[enterprise]]
id = "d2"
sector = "doors"
joined = "2022-03-07"
key_enterprise = true
[[enterprise]]
id = "c1"
sector = "cups"
robots = 40
machines_total = 20
machines_digital = 12
machines_cnc = 14
[[enterprise]]
id = "k1"
sector = "cookware"
"#,
            "e.toml",
        )
        .unwrap();
        let period = Period::new(date(2022, 3, 1), date(2022, 3, 10), date(2022, 6, 1)).unwrap();
        let mut fleet = Vec::new();
        let mut green = Vec::new();
        for day in 0..10 {
            fleet.push(f("d1", "doors", day, fleet_of(10, 7, 6)));
            green.push(g("d1", "doors", day, 0.4, 20.0, Some(1.0)));
            fleet.push(f("k1", "cookware", day, fleet_of(4, 4, 4)));
            let mut no_water = g("k1", "cookware", day, 0.1, 0.0, Some(0.5));
            no_water.water_known = false;
            green.push(no_water);
        }
        // d2 from 7 March (index 6) on, and once on 5 March (index 4), before it joined.
        for day in [4, 6, 7, 8, 9] {
            fleet.push(f("d2", "doors", day, fleet_of(5, 2, 4)));
            green.push(g("d2", "doors", day, 0.2, 10.0, Some(0.5)));
        }
        (targets, registry, period, fleet, green)
    }

    fn fleet_of(total: u64, cnc: u64, networked: u64) -> Fleet {
        Fleet {
            machines_total: total,
            machines_digital: cnc,
            machines_cnc: cnc,
            machines_networked: networked,
            machines_digital_networked: networked.min(cnc),
            ..Fleet::default()
        }
    }

    fn row(s: &Summary, i: Indicator) -> &IndicatorRow {
        s.indicator(i).unwrap()
    }

    fn enterprise<'a>(r: &'a Report, id: &str) -> &'a Summary {
        r.enterprises
            .iter()
            .find(|e| e.enterprise.as_deref() == Some(id))
            .unwrap()
    }

    fn sector(r: &Report, s: Sector) -> &Summary {
        r.sectors.iter().find(|x| x.sector == Some(s)).unwrap()
    }

    #[test]
    fn a_mid_period_enterprise_counts_its_registered_days_only() {
        let (t, reg, p, fleet, green) = wuyi();
        let r = aggregate(&t, &reg, &p, None, fleet, green, Vec::new());
        let d2 = enterprise(&r, "d2");
        // Registered 7–10 March: 4 days × 5 machines = 20 machine-days, networked 4 × 4 = 16
        // → 16 / 20 = 0.8 (over the whole period it would read 16 / 50 = 0.32, a red "no").
        assert_eq!(d2.days, 4);
        assert_eq!(d2.days_reported, 4, "the line of 5 March is left out");
        let net = row(d2, Indicator::NetworkingRate);
        assert_eq!((net.numerator, net.denominator), (16.0, 20.0));
        assert_eq!(net.meets, Some(true));
        // Mean machines over its own days: 20 / 4 = 5.
        assert!((d2.machines - 5.0).abs() < 1e-12);
        // Energy 4 × 0.2 = 0.8 tce over 4 × 0.5 = 2.0 → 0.4.
        assert!((row(d2, Indicator::TcePer10kCny).value.unwrap() - 0.4).abs() < 1e-12);
        assert!(
            r.warnings
                .iter()
                .any(|w| w.contains("enterprise d2: 1 day(s)"))
        );
        // The trend has no d2 before it joined: 1 March = d1 6 + c1 0 + k1 4 = 10 networked
        // of 10 + 20 + 4 = 34 machines; 7 March adds d2: 14 of 39.
        let net_on = |i: usize| {
            let r = &r.trend.points[i].indicators[0];
            (r.numerator, r.denominator)
        };
        assert_eq!(net_on(0), (10.0, 34.0));
        assert_eq!(net_on(6), (14.0, 39.0));
    }

    /// A castings report whose only enterprise joined on 4 March and left on 8 March: the
    /// trend has no value (not 0 %) before and after, and says nobody was registered there.
    pub(in crate::county) fn joined_and_left_mid_period() -> Report {
        let registry = Registry::load_str(
            "[[enterprise]]\nid = \"late\"\nsector = \"castings\"\njoined = 2022-03-04\nleft = 2022-03-08\n",
            "e.toml",
        )
        .unwrap();
        let period = Period::new(date(2022, 3, 1), date(2022, 3, 10), date(2022, 6, 1)).unwrap();
        // Lines on every day of the period, also before it joined and after it left (an agent
        // installed early): only 4–8 March (indices 3 to 7) count.
        let fleet = (0..10)
            .map(|day| f("late", "castings", day, fleet_of(10, 5, 5)))
            .collect();
        aggregate(
            &targets(),
            &registry,
            &period,
            Some(Sector::Castings),
            fleet,
            Vec::new(),
            Vec::new(),
        )
    }

    #[test]
    fn the_trend_starts_at_the_join_date_and_ends_at_the_leave_date() {
        let r = joined_and_left_mid_period();
        let points = &r.trend.points;
        assert_eq!(points.len(), 10);
        for (i, p) in points.iter().enumerate() {
            let net = &p.indicators[0];
            assert_eq!(net.indicator, Indicator::NetworkingRate);
            if (3..=7).contains(&i) {
                // 5 networked of 10 machines on each registered day: 50 %.
                assert_eq!((p.registered, net.value), (1, Some(0.5)), "{}", p.label);
            } else {
                // Not registered: no value at all, not 0 %.
                assert_eq!((p.registered, net.value), (0, None), "{}", p.label);
                assert_eq!(net.denominator, 0.0);
            }
        }
        // The enterprise's own rate: 5 days × 5 / 5 days × 10 = 25 / 50.
        let net = row(enterprise(&r, "late"), Indicator::NetworkingRate);
        assert_eq!((net.numerator, net.denominator), (25.0, 50.0));
    }

    #[test]
    fn a_silent_enterprise_counts_with_its_declared_machines() {
        let (t, reg, p, fleet, green) = wuyi();
        let r = aggregate(&t, &reg, &p, None, fleet, green, Vec::new());
        let c1 = enterprise(&r, "c1");
        assert!(!c1.reporting);
        // 10 days × 20 declared machines = 200 machine-days, none networked: 0 %, a real 0
        // (its machines exist and none delivered data), all of it declared.
        let net = row(c1, Indicator::NetworkingRate);
        assert_eq!((net.numerator, net.denominator), (0.0, 200.0));
        assert_eq!(net.declared_share, Some(1.0));
        assert_eq!(net.meets, Some(false));
        // CNC rate from the declaration: 10 × 14 = 140 / 200 = 0.7.
        assert!((row(c1, Indicator::CncRate).value.unwrap() - 0.7).abs() < 1e-12);
        // Nothing of its energy or water is known: no data, no verdict.
        let tce = row(c1, Indicator::TcePer10kCny);
        assert_eq!((tce.value, tce.meets, tce.enterprises), (None, None, 0));
        assert_eq!(r.not_reporting.len(), 1);
        assert_eq!(r.not_reporting[0].id, "c1");
        let cups = sector(&r, Sector::Cups);
        assert_eq!(row(cups, Indicator::NetworkingRate).denominator, 200.0);
        assert_eq!(
            (cups.enterprises_registered, cups.enterprises_reporting),
            (1, 0)
        );

        let county = r.county_total.as_ref().unwrap();
        // Networked: d1 10 × 6 = 60, d2 16, c1 0, k1 10 × 4 = 40 → 116.
        // Machine-days: d1 100, d2 20, c1 200, k1 40 → 360. 116 / 360 = 0.3222, not the
        // 116 / 160 = 0.725 of the reporting enterprises alone.
        let net = row(county, Indicator::NetworkingRate);
        assert_eq!((net.numerator, net.denominator), (116.0, 360.0));
        assert!((net.value.unwrap() - 116.0 / 360.0).abs() < 1e-12);
        assert_eq!(net.meets, Some(false));
        assert_eq!(net.enterprises, 4);
        // Declared: 200 of 360 machine-days = 0.5556.
        assert!((net.declared_share.unwrap() - 200.0 / 360.0).abs() < 1e-12);
        // CNC: d1 70 + d2 4 × 2 = 8 + c1 140 + k1 40 = 258 / 360 = 0.7167 ≥ 0.65.
        let cnc = row(county, Indicator::CncRate);
        assert_eq!((cnc.numerator, cnc.denominator), (258.0, 360.0));
        assert_eq!(cnc.meets, Some(true));
        assert_eq!(county.enterprises_declared, 1);

        // Doors = d1 + d2: networked 60 + 16 = 76 of 100 + 20 = 120 = 0.6333 ≥ 0.55;
        // CNC 70 + 8 = 78 of 120 = 0.65, on the target: met.
        let doors = sector(&r, Sector::Doors);
        let net = row(doors, Indicator::NetworkingRate);
        assert_eq!((net.numerator, net.denominator), (76.0, 120.0));
        assert_eq!(row(doors, Indicator::CncRate).meets, Some(true));
        assert_eq!(
            row(doors, Indicator::NetworkingRate).declared_share,
            Some(0.0)
        );
    }

    #[test]
    fn water_not_measured_is_no_data_not_zero() {
        let (t, reg, p, fleet, green) = wuyi();
        let r = aggregate(&t, &reg, &p, None, fleet.clone(), green.clone(), Vec::new());
        let k1 = enterprise(&r, "k1");
        let water = row(k1, Indicator::WaterTPer10kCny);
        // No water meter: no value, no gap, no verdict; the sums carry no water.
        assert_eq!((water.value, water.gap, water.meets), (None, None, None));
        assert_eq!(water.enterprises, 0);
        assert_eq!(k1.green.days_with_water, 0);
        // Its energy is measured: 10 × 0.1 = 1.0 tce / 10 × 0.5 = 5.0 → 0.2.
        assert!((row(k1, Indicator::TcePer10kCny).value.unwrap() - 0.2).abs() < 1e-12);
        let cookware = sector(&r, Sector::Cookware);
        assert_eq!(row(cookware, Indicator::WaterTPer10kCny).value, None);
        assert_eq!(row(cookware, Indicator::WaterTPer10kCny).meets, None);

        // The county's water covers d1 and d2 only: (10 × 20 + 4 × 10) t = 240 t over
        // (10 × 1.0 + 4 × 0.5) = 12 10k CNY = 20.0 t per 10k CNY; with k1's value added in the
        // denominator it would read 240 / 17 = 14.1.
        let county = r.county_total.as_ref().unwrap();
        let water = row(county, Indicator::WaterTPer10kCny);
        assert_eq!((water.numerator, water.denominator), (240.0, 12.0));
        assert_eq!(water.enterprises, 2);
        assert_eq!(water.meets, Some(true));
        // Energy covers all three that report: (4.0 + 0.8 + 1.0) / (10 + 2 + 5) = 5.8 / 17.
        let tce = row(county, Indicator::TcePer10kCny);
        assert!((tce.value.unwrap() - 5.8 / 17.0).abs() < 1e-12);
        assert_eq!(tce.enterprises, 3);

        // A county with no water meter anywhere: no data and no verdict, not "0.00 meets".
        let dry: Vec<GreenDay> = green
            .into_iter()
            .map(|mut g| {
                g.water_known = false;
                g
            })
            .collect();
        let r = aggregate(&t, &reg, &p, None, fleet, dry, Vec::new());
        let water = row(r.county_total.as_ref().unwrap(), Indicator::WaterTPer10kCny);
        assert_eq!(
            (water.value, water.meets, water.enterprises),
            (None, None, 0)
        );
        assert!(r.years.points[0].indicators.iter().all(|i| {
            i.indicator != Indicator::WaterTPer10kCny || (i.value.is_none() && i.meets.is_none())
        }));
    }

    #[test]
    fn register_facts_and_the_enterprises_below_target() {
        let (t, reg, p, fleet, green) = wuyi();
        let r = aggregate(&t, &reg, &p, None, fleet, green, Vec::new());
        let doors = sector(&r, Sector::Doors);
        // Robots: d1 declares 10, d2 declares nothing: 10 over 1 enterprise (d2 is not
        // counted as 0), against doors' 200: short by 190.
        let robots = row(doors, Indicator::Robots);
        assert_eq!((robots.value, robots.enterprises), (Some(10.0), 1));
        assert_eq!(robots.meets, Some(false));
        assert!((robots.gap.unwrap() + 190.0).abs() < 1e-12);
        // Digital workshops as of 2022: d1's 2021 one, not its 2023 one; over 2 enterprises.
        let ws = row(doors, Indicator::DigitalWorkshops);
        assert_eq!((ws.value, ws.enterprises), (Some(1.0), 2));
        // ERP among key enterprises: d1 (2020) of d1, d2 = 1 / 2 = 0.5 < 0.9. MES: d1's is
        // from 2023, after the report's year: 0 / 2.
        let erp = row(doors, Indicator::ErpRate);
        assert_eq!((erp.numerator, erp.denominator), (1.0, 2.0));
        assert_eq!(erp.meets, Some(false));
        assert_eq!(row(doors, Indicator::MesRate).numerator, 0.0);
        // No key enterprise in cups: no data, not 0 %.
        assert_eq!(
            row(sector(&r, Sector::Cups), Indicator::ErpRate).value,
            None
        );
        // County: robots 10 + 40 = 50 over 2 declaring; above-scale 1 of 4.
        let county = r.county_total.as_ref().unwrap();
        assert_eq!(row(county, Indicator::Robots).value, Some(50.0));
        assert_eq!(
            row(county, Indicator::AboveScaleEnterprises).value,
            Some(1.0)
        );
        // The per-year table carries the register's facts too: 2022, one above-scale (d1).
        let above = r.years.points[0]
            .indicators
            .iter()
            .find(|i| i.indicator == Indicator::AboveScaleEnterprises)
            .unwrap();
        assert_eq!(above.value, Some(1.0));

        // Below target, per sector: doors' ERP is pulled down by d2 (0.9 × 1 − 0 = 0.9 of a
        // key enterprise short; d1's 1 ≥ 0.9 is not); cups' networking rate by c1, silent:
        // 0.55 × 200 − 0 = 110 machine-days short. Doors' networking (76 / 120) meets it, so
        // nobody is listed for it.
        let listed: Vec<(Sector, Indicator, &str, f64)> = r
            .laggards
            .iter()
            .map(|l| (l.sector, l.indicator, l.enterprise.as_str(), l.shortfall))
            .collect();
        let has = |s: Sector, i: Indicator, e: &str, short: f64| {
            listed
                .iter()
                .any(|l| l.0 == s && l.1 == i && l.2 == e && (l.3 - short).abs() < 1e-9)
        };
        assert!(
            has(Sector::Doors, Indicator::ErpRate, "d2", 0.9),
            "{listed:?}"
        );
        assert!(
            has(Sector::Cups, Indicator::NetworkingRate, "c1", 110.0),
            "{listed:?}"
        );
        assert!(
            !listed
                .iter()
                .any(|l| l.1 == Indicator::NetworkingRate && l.0 == Sector::Doors)
        );
        assert!(
            !listed
                .iter()
                .any(|l| l.2 == "d1" && l.1 == Indicator::ErpRate)
        );
    }
}
