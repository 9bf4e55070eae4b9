//! The county's two files: the programme's targets (`config/targets.toml`) and the register of
//! the enterprises in the programme (`config/enterprises.toml`).
//!
//! They are two files because they change at different paces and are kept by different people:
//! the targets change when the programme is revised, the register whenever an enterprise joins
//! or leaves; and a register of six hundred enterprises would bury the handful of targets. Both
//! are checked like the agent's config: every unknown key and every mistake is reported with
//! its line and column (`shopfloor county check`).

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::Path;

use jiff::civil::Date;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use toml::Spanned;
use toml::de::DeTable;

use crate::config::{self, Checker, Diagnostics, Seg, key};
use crate::model::Sector;

/// The indicators the county compares with the programme's targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Indicator {
    /// 机器联网率: machines that delivered data ÷ machines in the register.
    NetworkingRate,
    /// 数字化设备联网率: networked digital machines ÷ digital machines.
    NetworkingRateDigital,
    /// 数控化率: CNC machines ÷ machines in the register.
    CncRate,
    /// 数控设备利用率: running ÷ planned busy time of the networked CNC machines.
    CncUtilisation,
    /// 万元增加值能耗: tonnes of standard coal per 10k CNY of value added.
    #[serde(rename = "tce_per_10k_cny")]
    TcePer10kCny,
    /// 单位能耗增加值: 10k CNY of value added per tonne of standard coal.
    ValueAddedPerTce,
    /// 万元增加值用水量: tonnes of water per 10k CNY of value added.
    #[serde(rename = "water_t_per_10k_cny")]
    WaterTPer10kCny,
    /// 单位工业增加值废水排放量: tonnes of wastewater discharged per 10k CNY of value added
    /// (from the outlets' HJ 212 loggers, `wastewater_t`; no data for an enterprise without one).
    #[serde(rename = "wastewater_t_per_10k_cny")]
    WastewaterTPer10kCny,
    /// 在役工业机器人拥有量: industrial robots in service, from the enterprise register.
    Robots,
    /// 数字化车间: digital workshops recognised by the report's year, from the register.
    DigitalWorkshops,
    /// 企业资源计划(ERP)普及率: key enterprises using ERP ÷ key enterprises.
    ErpRate,
    /// 制造执行系统(MES)普及率.
    MesRate,
    /// 供应链管理(SCM)普及率.
    ScmRate,
    /// 产品全生命周期管理(PLM)普及率.
    PlmRate,
    /// 规上企业数: above-scale enterprises in the register.
    AboveScaleEnterprises,
}

impl Indicator {
    pub const ALL: [Indicator; 15] = [
        Indicator::NetworkingRate,
        Indicator::NetworkingRateDigital,
        Indicator::CncRate,
        Indicator::CncUtilisation,
        Indicator::TcePer10kCny,
        Indicator::ValueAddedPerTce,
        Indicator::WaterTPer10kCny,
        Indicator::WastewaterTPer10kCny,
        Indicator::Robots,
        Indicator::DigitalWorkshops,
        Indicator::ErpRate,
        Indicator::MesRate,
        Indicator::ScmRate,
        Indicator::PlmRate,
        Indicator::AboveScaleEnterprises,
    ];

    /// The indicators measured by the agents, per day: machine-days, energy, water.
    pub const MEASURED: [Indicator; 8] = [
        Indicator::NetworkingRate,
        Indicator::NetworkingRateDigital,
        Indicator::CncRate,
        Indicator::CncUtilisation,
        Indicator::TcePer10kCny,
        Indicator::ValueAddedPerTce,
        Indicator::WaterTPer10kCny,
        Indicator::WastewaterTPer10kCny,
    ];

    /// The programme facts taken from the enterprise register (declared, with the year).
    pub const REGISTER: [Indicator; 7] = [
        Indicator::Robots,
        Indicator::DigitalWorkshops,
        Indicator::ErpRate,
        Indicator::MesRate,
        Indicator::ScmRate,
        Indicator::PlmRate,
        Indicator::AboveScaleEnterprises,
    ];

    /// The key in `targets.toml`, the JSON output and the CSV column.
    pub fn as_str(self) -> &'static str {
        match self {
            Indicator::NetworkingRate => "networking_rate",
            Indicator::NetworkingRateDigital => "networking_rate_digital",
            Indicator::CncRate => "cnc_rate",
            Indicator::CncUtilisation => "cnc_utilisation",
            Indicator::TcePer10kCny => "tce_per_10k_cny",
            Indicator::ValueAddedPerTce => "value_added_per_tce",
            Indicator::WaterTPer10kCny => "water_t_per_10k_cny",
            Indicator::WastewaterTPer10kCny => "wastewater_t_per_10k_cny",
            Indicator::Robots => "robots",
            Indicator::DigitalWorkshops => "digital_workshops",
            Indicator::ErpRate => "erp_rate",
            Indicator::MesRate => "mes_rate",
            Indicator::ScmRate => "scm_rate",
            Indicator::PlmRate => "plm_rate",
            Indicator::AboveScaleEnterprises => "above_scale_enterprises",
        }
    }

    /// A count (robots, workshops, enterprises): the value is the numerator, the denominator
    /// the number of enterprises it was counted over.
    pub fn is_count(self) -> bool {
        matches!(
            self,
            Indicator::Robots | Indicator::DigitalWorkshops | Indicator::AboveScaleEnterprises
        )
    }

    /// A share between 0 and 1, shown in per cent (gaps in percentage points).
    pub fn is_rate(self) -> bool {
        matches!(
            self,
            Indicator::NetworkingRate
                | Indicator::NetworkingRateDigital
                | Indicator::CncRate
                | Indicator::CncUtilisation
                | Indicator::ErpRate
                | Indicator::MesRate
                | Indicator::ScmRate
                | Indicator::PlmRate
        )
    }
}

impl fmt::Display for Indicator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which side of the target meets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    /// The value must be at least the target (the rates).
    Min,
    /// The value must be at most the target (the intensities).
    Max,
}

/// A target figure: one number, or one per year as the programme's plan sets them
/// (`{ 2017 = 0.60, 2018 = 0.57 }`).
#[derive(Debug, Clone, PartialEq)]
pub enum Figure {
    Fixed(f64),
    ByYear(BTreeMap<i16, f64>),
}

impl Figure {
    /// The figure in force in `year`, and the plan year it was taken from. A year past the
    /// plan keeps the plan's last figure (the final target stays in force); a year before it
    /// takes the first; a year the plan skips takes the latest year before it.
    pub fn for_year(&self, year: i16) -> Option<(f64, Option<i16>)> {
        match self {
            Figure::Fixed(v) => Some((*v, None)),
            Figure::ByYear(years) => years
                .range(..=year)
                .next_back()
                .or_else(|| years.iter().next())
                .map(|(y, v)| (*v, Some(*y))),
        }
    }

    fn values(&self) -> Vec<f64> {
        match self {
            Figure::Fixed(v) => vec![*v],
            Figure::ByYear(years) => years.values().copied().collect(),
        }
    }
}

impl<'de> Deserialize<'de> for Figure {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FigureVisitor)
    }
}

struct FigureVisitor;

impl<'de> Visitor<'de> for FigureVisitor {
    type Value = Figure;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number, or a table of years such as { 2021 = 0.45, 2022 = 0.43 }")
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Figure, E> {
        Ok(Figure::Fixed(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Figure, E> {
        Ok(Figure::Fixed(v as f64))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Figure, E> {
        Ok(Figure::Fixed(v as f64))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Figure, A::Error> {
        let mut years = BTreeMap::new();
        while let Some(year) = map.next_key::<String>()? {
            let y = year
                .parse::<i16>()
                .ok()
                .filter(|y| (1900..=2200).contains(y))
                .ok_or_else(|| {
                    de::Error::custom(format!(
                        "`{year}` is not a year: the keys of a yearly target are years such as 2022"
                    ))
                })?;
            years.insert(y, map.next_value::<f64>()?);
        }
        if years.is_empty() {
            return Err(de::Error::custom(
                "a yearly target needs at least one year, e.g. { 2022 = 0.43 }",
            ));
        }
        Ok(Figure::ByYear(years))
    }
}

/// `networking_rate = { min = 0.55 }` or `tce_per_10k_cny = { max = { 2022 = 0.43 } }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Target {
    /// The value must be at least this.
    #[serde(default)]
    pub min: Option<Figure>,
    /// The value must be at most this.
    #[serde(default)]
    pub max: Option<Figure>,
}

impl Target {
    fn bound(&self) -> Option<(Bound, &Figure)> {
        match (&self.min, &self.max) {
            (Some(f), None) => Some((Bound::Min, f)),
            (None, Some(f)) => Some((Bound::Max, f)),
            _ => None,
        }
    }
}

/// A target as it applies to one report: the figure in force in the report's year.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TargetInForce {
    pub bound: Bound,
    pub value: f64,
    /// The plan year the figure comes from, for yearly targets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub year: Option<i16>,
    /// Set by the sector's own table rather than the programme-wide one.
    pub sector_specific: bool,
}

impl TargetInForce {
    /// Whether `value` meets the target. Equal meets it; the tolerance absorbs the rounding of
    /// a ratio of sums (11 ÷ 20 against 0.55).
    pub fn is_met_by(&self, value: f64) -> bool {
        let tolerance = 1e-9 * self.value.abs().max(1.0);
        match self.bound {
            Bound::Min => value >= self.value - tolerance,
            Bound::Max => value <= self.value + tolerance,
        }
    }
}

/// The programme's targets: `config/targets.toml`.
#[derive(Debug, Clone, PartialEq)]
pub struct Targets {
    /// The county, as the agents write it in the `county` tag: the report reads this county's
    /// lines from the store.
    pub county: String,
    /// The report's heading, e.g. the programme's name.
    pub title: Option<String>,
    /// IANA time zone of the county's days; the agents' day windows start at its midnight.
    pub timezone: String,
    /// `[target]`: for every sector unless its own table says otherwise.
    pub programme: BTreeMap<Indicator, Target>,
    /// `[sector.<name>]`: targets the programme sets for one sector.
    pub sectors: BTreeMap<Sector, BTreeMap<Indicator, Target>>,
}

impl Targets {
    pub fn load(path: &Path) -> Result<Targets, Diagnostics> {
        config::load_file(path, Targets::load_str)
    }

    pub fn load_str(text: &str, file: &str) -> Result<Targets, Diagnostics> {
        config::check_document(text, file, targets_keys, check_targets)
    }

    /// The target for `indicator` in `sector` (the programme-wide one for the county as a
    /// whole, `sector` = `None`) in force in `year`.
    pub fn in_force(
        &self,
        sector: Option<Sector>,
        indicator: Indicator,
        year: i16,
    ) -> Option<TargetInForce> {
        let own = sector
            .and_then(|s| self.sectors.get(&s))
            .and_then(|t| t.get(&indicator));
        let (target, sector_specific) = match own {
            Some(t) => (t, true),
            None => (self.programme.get(&indicator)?, false),
        };
        let (bound, figure) = target.bound()?;
        let (value, year) = figure.for_year(year)?;
        Some(TargetInForce {
            bound,
            value,
            year,
            sector_specific,
        })
    }
}

const TARGETS_KEYS: &[&str] = &["county", "title", "timezone", "target", "sector"];

fn targets_keys(path: &[Seg]) -> &'static [&'static str] {
    match path.len() {
        0 => TARGETS_KEYS,
        // [target.<indicator>] or [sector.<name>.<indicator>]
        2 | 3 => &["min", "max"],
        _ => &[],
    }
}

/// Problems are collected in the checker; the document is only returned when there are none.
fn check_targets(checker: &mut Checker<'_>, root: &Spanned<DeTable<'_>>) -> Option<Targets> {
    let mut county = None;
    let mut title = None;
    let mut timezone = None;
    let mut programme = None;
    let mut sectors = None;
    for (name, value) in root.get_ref().iter() {
        let name_str: &str = name.get_ref();
        let path = vec![key(name_str)];
        match name_str {
            "county" => county = checker.section::<String>(value, path),
            "title" => title = checker.section::<String>(value, path),
            "timezone" => timezone = checker.section::<String>(value, path),
            "target" => programme = checker.section(value, path),
            "sector" => sectors = checker.section(value, path),
            other => unknown_top_level(checker, name.span(), other, TARGETS_KEYS),
        }
    }
    let targets = Targets {
        county: county.unwrap_or_default(),
        title,
        timezone: timezone.unwrap_or_else(|| "Asia/Shanghai".to_string()),
        programme: programme.unwrap_or_default(),
        sectors: sectors.unwrap_or_default(),
    };
    if targets.county.trim().is_empty() {
        let at = checker.span_of(root, &[key("county")]);
        checker.push(
            at,
            "`county` is required: the county tag the agents write, e.g. county = \"wuyi\""
                .to_string(),
        );
    }
    if jiff::tz::TimeZone::get(&targets.timezone).is_err() {
        let at = checker.span_of(root, &[key("timezone")]);
        checker.push(
            at,
            format!(
                "unknown time zone `{}`: use an IANA name such as \"Asia/Shanghai\"",
                targets.timezone
            ),
        );
    }
    check_target_table(checker, root, &[key("target")], &targets.programme);
    for (sector, table) in &targets.sectors {
        check_target_table(checker, root, &[key("sector"), key(sector.as_str())], table);
    }
    Some(targets)
}

fn check_target_table(
    checker: &mut Checker<'_>,
    root: &Spanned<DeTable<'_>>,
    base: &[Seg],
    table: &BTreeMap<Indicator, Target>,
) {
    for (indicator, target) in table {
        let mut path = base.to_vec();
        path.push(key(indicator.as_str()));
        let Some((bound, figure)) = target.bound() else {
            let at = checker.span_of(root, &path);
            checker.push(
                at,
                format!(
                    "target `{indicator}` takes exactly one of `min` (at least) or `max` (at most)"
                ),
            );
            continue;
        };
        path.push(key(match bound {
            Bound::Min => "min",
            Bound::Max => "max",
        }));
        let fits = |v: f64| {
            v.is_finite()
                && if indicator.is_rate() {
                    (0.0..=1.0).contains(&v)
                } else if indicator.is_count() {
                    v >= 0.0 && v.fract() == 0.0
                } else {
                    v > 0.0
                }
        };
        if !figure.values().into_iter().all(fits) {
            let at = checker.span_of(root, &path);
            let what = if indicator.is_rate() {
                "a share between 0 and 1 (0.55 for 55 %)"
            } else if indicator.is_count() {
                "a whole number"
            } else {
                "a positive number"
            };
            checker.push(at, format!("target `{indicator}` must be {what}"));
        }
    }
}

fn unknown_top_level(
    checker: &mut Checker<'_>,
    span: std::ops::Range<usize>,
    name: &str,
    known: &[&str],
) {
    let hint = config::suggest(name, known)
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default();
    checker.push(
        span,
        format!(
            "unknown key `{name}`{hint}; the file takes: {}",
            known.join(", ")
        ),
    );
}

/// One enterprise in the programme.
///
/// Besides who it is and the sector it is counted in, the register carries what the county
/// knows of an enterprise without its agent: when it joined (and left) the programme, whether
/// it is above-scale (规上) and a key enterprise (重点骨干), and its declared machine counts,
/// robots, digital workshops and management systems. The declared machine counts stand in for
/// the agent's register while it sends nothing, so a silent enterprise still counts in the
/// denominators (with no machine networked) and the county's rates cannot improve because
/// fewer enterprises report.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Enterprise {
    /// The id its agent writes in the `enterprise` tag (`[site] enterprise`).
    pub id: String,
    /// For people.
    #[serde(default)]
    pub name: String,
    /// The sector the county counts it in, whatever its agent's `sector` tag says.
    pub sector: Sector,
    /// The first day it counts in the programme; its rates cover its registered days only.
    #[serde(
        default,
        deserialize_with = "de_date",
        skip_serializing_if = "Option::is_none"
    )]
    pub joined: Option<Date>,
    /// The last day it counts in the programme.
    #[serde(
        default,
        deserialize_with = "de_date",
        skip_serializing_if = "Option::is_none"
    )]
    pub left: Option<Date>,
    /// 规上企业: above-scale (annual revenue of 20 million CNY or more).
    #[serde(default)]
    pub above_scale: bool,
    /// 重点骨干企业: a key enterprise, the base of the ERP/MES/SCM/PLM adoption rates.
    #[serde(default)]
    pub key_enterprise: bool,
    /// Declared production machines (used while its agent sends nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machines_total: Option<u64>,
    /// Declared digital machines (with a controller that can deliver data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machines_digital: Option<u64>,
    /// Declared CNC machines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machines_cnc: Option<u64>,
    /// 在役工业机器人: industrial robots in service, declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub robots: Option<u64>,
    /// The year the declared counts above were taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declared_year: Option<i16>,
    /// 数字化车间: the year each of its recognised digital workshops was recognised.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub digital_workshops: Vec<i16>,
    /// 企业资源计划: the year ERP went into use; absent when it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erp: Option<i16>,
    /// 制造执行系统: the year MES went into use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mes: Option<i16>,
    /// 供应链管理: the year SCM went into use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scm: Option<i16>,
    /// 产品全生命周期管理: the year PLM went into use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plm: Option<i16>,
}

impl Enterprise {
    /// An enterprise with nothing declared but who it is.
    pub fn new(id: impl Into<String>, name: impl Into<String>, sector: Sector) -> Enterprise {
        Enterprise {
            id: id.into(),
            name: name.into(),
            sector,
            joined: None,
            left: None,
            above_scale: false,
            key_enterprise: false,
            machines_total: None,
            machines_digital: None,
            machines_cnc: None,
            robots: None,
            declared_year: None,
            digital_workshops: Vec::new(),
            erp: None,
            mes: None,
            scm: None,
            plm: None,
        }
    }

    /// Whether `day` lies between its join and leave dates (both included).
    pub fn registered_on(&self, day: Date) -> bool {
        self.joined.is_none_or(|j| day >= j) && self.left.is_none_or(|l| day <= l)
    }

    /// The declared register as a day's fleet with nothing networked; `None` when it declares
    /// no machine count.
    pub fn declared_fleet(&self) -> Option<crate::engine::indicators::Fleet> {
        let total = self.machines_total?;
        Some(crate::engine::indicators::Fleet {
            machines_total: total,
            machines_digital: self.machines_digital.unwrap_or(0),
            machines_cnc: self.machines_cnc.unwrap_or(0),
            ..Default::default()
        })
    }
}

/// A date written as a TOML date (`joined = 2022-03-15`) or a string (`"2022-03-15"`).
fn de_date<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Date>, D::Error> {
    struct DateVisitor;
    impl<'de> Visitor<'de> for DateVisitor {
        type Value = Option<Date>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a date such as 2022-03-15")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            v.parse::<Date>().map(Some).map_err(|_| {
                de::Error::custom(format!("`{v}` is not a date: write it as 2022-03-15"))
            })
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            // toml hands a datetime over as a one-entry map holding its text.
            let Some((_, text)) = map.next_entry::<String, String>()? else {
                return Err(de::Error::custom("a date such as 2022-03-15"));
            };
            self.visit_str(&text)
        }
    }
    d.deserialize_any(DateVisitor)
}

/// The register of the enterprises in the programme: `config/enterprises.toml`.
///
/// It defines whom the county's figures cover: an enterprise in the register that wrote
/// nothing in a period is listed as not reporting, and one that writes to the store without
/// being in the register is listed as unregistered and left out of the sums, so totals do not
/// depend on who happened to point an agent at the county's store.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Registry {
    pub enterprises: Vec<Enterprise>,
}

impl Registry {
    pub fn load(path: &Path) -> Result<Registry, Diagnostics> {
        config::load_file(path, Registry::load_str)
    }

    pub fn load_str(text: &str, file: &str) -> Result<Registry, Diagnostics> {
        config::check_document(text, file, registry_keys, check_registry)
    }
}

fn registry_keys(path: &[Seg]) -> &'static [&'static str] {
    match path {
        [] => &["enterprise"],
        [Seg::Key(k), Seg::Index(_)] if k == "enterprise" => config::struct_fields::<Enterprise>(),
        _ => &[],
    }
}

fn check_registry(checker: &mut Checker<'_>, root: &Spanned<DeTable<'_>>) -> Option<Registry> {
    let mut registry = Registry::default();
    let mut at = Vec::new();
    for (name, value) in root.get_ref().iter() {
        let name_str: &str = name.get_ref();
        match name_str {
            "enterprise" => {
                (at, registry.enterprises) = checker.array(value, "enterprise").into_iter().unzip();
            }
            other => unknown_top_level(checker, name.span(), other, &["enterprise"]),
        }
    }
    let mut seen = HashSet::new();
    for (i, e) in at.iter().zip(&registry.enterprises) {
        let problem = if e.id.trim().is_empty() {
            Some("is empty")
        } else if !seen.insert(e.id.as_str()) {
            Some("is used twice")
        } else {
            None
        };
        if let Some(problem) = problem {
            let span = checker.span_of(root, &[key("enterprise"), Seg::Index(*i), key("id")]);
            checker.push(span, format!("[[enterprise]] id `{}` {problem}", e.id));
        }
        if let (Some(j), Some(l)) = (e.joined, e.left)
            && l < j
        {
            let span = checker.span_of(root, &[key("enterprise"), Seg::Index(*i), key("left")]);
            checker.push(
                span,
                format!(
                    "[[enterprise]] `{}` left ({l}) before it joined ({j})",
                    e.id
                ),
            );
        }
        let total = e.machines_total.unwrap_or(0);
        for (name, n) in [
            ("machines_digital", e.machines_digital),
            ("machines_cnc", e.machines_cnc),
        ] {
            if let Some(n) = n
                && n > total
            {
                let span = checker.span_of(root, &[key("enterprise"), Seg::Index(*i), key(name)]);
                checker.push(
                    span,
                    format!(
                        "[[enterprise]] `{}` declares {n} {name} but machines_total = {total}: they are among its machines",
                        e.id
                    ),
                );
            }
        }
    }
    Some(registry)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE_TARGETS: &str = include_str!("../../config/targets.toml");
    const SAMPLE_REGISTRY: &str = include_str!("../../config/enterprises.toml");

    #[test]
    fn the_sample_targets_carry_the_programme_figures() {
        let t = Targets::load_str(SAMPLE_TARGETS, "targets.toml").unwrap();
        let f = |i, year| {
            t.in_force(None, i, year)
                .map(|t| (t.bound, t.value, t.year))
        };
        assert_eq!(
            f(Indicator::NetworkingRate, 2022),
            Some((Bound::Min, 0.55, None))
        );
        assert_eq!(f(Indicator::CncRate, 2022), Some((Bound::Min, 0.65, None)));
        for (year, tce, water) in [
            (2017, 0.60, 31.26),
            (2018, 0.57, 30.91),
            (2019, 0.53, 29.07),
            (2020, 0.48, 28.27),
            (2021, 0.45, 27.5),
            (2022, 0.43, 26.76),
        ] {
            assert_eq!(
                f(Indicator::TcePer10kCny, year),
                Some((Bound::Max, tce, Some(year)))
            );
            assert_eq!(
                f(Indicator::WaterTPer10kCny, year),
                Some((Bound::Max, water, Some(year)))
            );
        }
        // Past the plan, the final target stays in force; before it, the first applies.
        assert_eq!(
            f(Indicator::TcePer10kCny, 2026),
            Some((Bound::Max, 0.43, Some(2022)))
        );
        assert_eq!(
            f(Indicator::TcePer10kCny, 2015),
            Some((Bound::Max, 0.60, Some(2017)))
        );
        // Section 三's 2022 goals per sector.
        let s = |sector, i| {
            t.in_force(Some(sector), i, 2022)
                .map(|t| (t.value, t.sector_specific))
        };
        assert_eq!(s(Sector::Cups, Indicator::Robots), Some((300.0, true)));
        for sector in [Sector::Cookware, Sector::PowerTools, Sector::Leisure] {
            assert_eq!(s(sector, Indicator::Robots), Some((200.0, true)));
            assert_eq!(s(sector, Indicator::DigitalWorkshops), Some((3.0, true)));
            assert_eq!(s(sector, Indicator::CncRate), Some((0.65, true)));
        }
        assert_eq!(
            s(Sector::Doors, Indicator::Robots),
            None,
            "no figure for doors"
        );
        assert_eq!(
            s(Sector::Castings, Indicator::DigitalWorkshops),
            Some((1.0, true))
        );
        for (i, v) in [
            (Indicator::ErpRate, 0.9),
            (Indicator::MesRate, 0.6),
            (Indicator::ScmRate, 0.8),
            (Indicator::PlmRate, 0.7),
        ] {
            assert_eq!(s(Sector::Doors, i), Some((v, true)));
            assert_eq!(s(Sector::Cups, i), Some((v, true)));
        }
        assert_eq!(
            s(Sector::Doors, Indicator::AboveScaleEnterprises),
            Some((70.0, true))
        );
        assert_eq!(
            f(Indicator::AboveScaleEnterprises, 2019),
            Some((Bound::Min, 170.0, Some(2019)))
        );
        assert_eq!(
            f(Indicator::WastewaterTPer10kCny, 2021),
            Some((Bound::Max, 4.0, Some(2021)))
        );
        let r = Registry::load_str(SAMPLE_REGISTRY, "enterprises.toml").unwrap();
        let sectors: HashSet<Sector> = r.enterprises.iter().map(|e| e.sector).collect();
        assert_eq!(sectors.len(), 7, "the sample register covers every sector");
    }

    #[test]
    fn a_sector_table_overrides_the_programme_target() {
        let t = Targets::load_str(
            "county = \"yk\"\n[target]\ncnc_rate = { min = 0.65 }\n[sector.castings]\ncnc_rate = { min = 0.4 }\n",
            "t.toml",
        )
        .unwrap();
        let castings = t
            .in_force(Some(Sector::Castings), Indicator::CncRate, 2026)
            .unwrap();
        assert_eq!((castings.value, castings.sector_specific), (0.4, true));
        let doors = t
            .in_force(Some(Sector::Doors), Indicator::CncRate, 2026)
            .unwrap();
        assert_eq!((doors.value, doors.sector_specific), (0.65, false));
        assert_eq!(
            t.in_force(None, Indicator::CncUtilisation, 2026),
            None,
            "no target set, none in force"
        );
    }

    #[test]
    fn a_gap_in_the_plan_takes_the_year_before() {
        let f = Figure::ByYear(BTreeMap::from([(2017, 0.6), (2020, 0.48)]));
        assert_eq!(f.for_year(2019), Some((0.6, Some(2017))));
        assert_eq!(f.for_year(2020), Some((0.48, Some(2020))));
    }

    #[test]
    fn mistakes_are_reported_with_line_and_column() {
        let text = "county = \"yk\"\ntimzone = \"Asia/Shanghai\"\n[target]\nnetworking_rate = { min = 55 }\ncnc_rate = { min = 0.65, max = 0.9 }\n[target.tce_per_10k_cny]\nmax = { 2022 = 0.43 }\nmaximum = 1\n[sector.door]\ncnc_rate = { min = 0.7 }\n";
        let d = Targets::load_str(text, "t.toml").unwrap_err();
        let found: Vec<(usize, usize, &str)> = d
            .problems
            .iter()
            .map(|p| (p.line, p.column, p.message.as_str()))
            .collect();
        let has = |line: usize, needle: &str| {
            found
                .iter()
                .any(|(l, _, m)| *l == line && m.contains(needle))
        };
        assert!(has(2, "did you mean `timezone`"), "{found:?}");
        assert!(has(4, "between 0 and 1"), "{found:?}");
        assert!(has(5, "exactly one of `min`"), "{found:?}");
        assert!(has(8, "unknown key `maximum`"), "{found:?}");
        assert!(has(9, "`door` is not one of `doors`"), "{found:?}");
        assert!(has(9, "did you mean `doors`?"), "{found:?}");
    }

    #[test]
    fn registry_ids_are_unique_and_sectors_known() {
        let text = "[[enterprise]]\nid = \"e1\"\nsector = \"doors\"\n\n[[enterprise]]\nid = \"e1\"\nsector = \"cups\"\n\n[[enterprise]]\nid = \"e3\"\nsector = \"pans\"\nnmae = \"x\"\n";
        let d = Registry::load_str(text, "e.toml").unwrap_err();
        let text = d.to_string();
        assert!(
            text.contains("e.toml:6:6: [[enterprise]] id `e1` is used twice"),
            "{text}"
        );
        assert!(text.contains("e.toml:11:"), "{text}");
        assert!(
            text.contains(
                "e.toml:12:1: unknown key `nmae` in [[enterprise]] #3 (did you mean `name`?)"
            ),
            "{text}"
        );
    }
}
