//! The report as text for a terminal, CSV for a spreadsheet, JSON for other programs, and a
//! self-contained HTML page ([`super::html`]).
//!
//! Every row shows the value with its numerator and denominator, the target in force, the gap
//! and whether the target is met: an intensity or a rate without its basis is not shown.

use std::fmt::Write as _;

use super::aggregate::{Level, Report, Summary};
use super::targets::{Bound, Indicator, TargetInForce};
use crate::model::Sector;

/// `--format`
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned text for a terminal, in English.
    Table,
    /// One row per indicator of each enterprise, sector and the county.
    Csv,
    /// The whole report, numerators and denominators included.
    Json,
    /// One self-contained page with charts.
    Html,
}

/// `--lang` of the HTML report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// 中文
    Zh,
    En,
}

pub fn render(report: &Report, format: Format, lang: Lang) -> String {
    match format {
        Format::Table => table(report),
        Format::Csv => csv(report),
        // Serializing plain numbers, strings and dates cannot fail.
        Format::Json => serde_json::to_string_pretty(report).unwrap_or_default() + "\n",
        Format::Html => super::html::render(report, lang),
    }
}

/// The value in the indicator's display unit.
pub fn value_text(indicator: Indicator, v: f64) -> String {
    match indicator {
        i if i.is_rate() => format!("{:.1} %", v * 100.0),
        Indicator::TcePer10kCny => format!("{v:.3}"),
        _ => format!("{v:.2}"),
    }
}

/// value − target: percentage points for rates.
pub fn gap_text(indicator: Indicator, gap: f64) -> String {
    if indicator.is_rate() {
        format!("{:+.1} pp", gap * 100.0)
    } else if indicator == Indicator::TcePer10kCny {
        format!("{gap:+.3}")
    } else {
        format!("{gap:+.2}")
    }
}

pub fn target_text(indicator: Indicator, t: &TargetInForce) -> String {
    let sign = match t.bound {
        Bound::Min => "≥",
        Bound::Max => "≤",
    };
    let year = t.year.map(|y| format!(" ({y})")).unwrap_or_default();
    format!("{sign} {}{year}", value_text(indicator, t.value))
}

/// The units of an indicator's numerator and denominator.
pub fn basis_units(indicator: Indicator, lang: Lang) -> (&'static str, &'static str) {
    let zh = lang == Lang::Zh;
    let machine_days = if zh { "台·日" } else { "machine-days" };
    let cny = if zh { "万元" } else { "10k CNY" };
    let tce = if zh { "吨标煤" } else { "tce" };
    let water = if zh { "吨水" } else { "t water" };
    match indicator {
        Indicator::NetworkingRate | Indicator::NetworkingRateDigital | Indicator::CncRate => {
            ("", machine_days)
        }
        Indicator::CncUtilisation => ("h", "h"),
        Indicator::TcePer10kCny => (tce, cny),
        Indicator::ValueAddedPerTce => (cny, tce),
        Indicator::WaterTPer10kCny => (water, cny),
    }
}

/// `21 / 42 machine-days`, `85.0 h / 120.0 h`, `2.200 tce / 5.000 10k CNY`.
pub fn basis_text(indicator: Indicator, numerator: f64, denominator: f64, lang: Lang) -> String {
    let (nu, du) = basis_units(indicator, lang);
    let (n, d) = match indicator {
        Indicator::CncUtilisation => (
            format!("{:.1}", numerator / 3600.0),
            format!("{:.1}", denominator / 3600.0),
        ),
        i if i.is_rate() => (format!("{numerator:.0}"), format!("{denominator:.0}")),
        _ => (format!("{numerator:.3}"), format!("{denominator:.3}")),
    };
    let join = |v: String, u: &str| {
        if u.is_empty() { v } else { format!("{v} {u}") }
    };
    format!("{} / {}", join(n, nu), join(d, du))
}

pub fn indicator_name(indicator: Indicator, lang: Lang) -> &'static str {
    match (indicator, lang) {
        (Indicator::NetworkingRate, Lang::Zh) => "机器联网率",
        (Indicator::NetworkingRate, Lang::En) => "Machine networking rate",
        (Indicator::NetworkingRateDigital, Lang::Zh) => "数字化设备联网率",
        (Indicator::NetworkingRateDigital, Lang::En) => "Networking rate of digital machines",
        (Indicator::CncRate, Lang::Zh) => "数控化率",
        (Indicator::CncRate, Lang::En) => "CNC rate",
        (Indicator::CncUtilisation, Lang::Zh) => "数控设备利用率",
        (Indicator::CncUtilisation, Lang::En) => "CNC utilisation",
        (Indicator::TcePer10kCny, Lang::Zh) => "万元增加值能耗 (吨标煤/万元)",
        (Indicator::TcePer10kCny, Lang::En) => "Energy per value added (tce / 10k CNY)",
        (Indicator::ValueAddedPerTce, Lang::Zh) => "单位能耗增加值 (万元/吨标煤)",
        (Indicator::ValueAddedPerTce, Lang::En) => "Value added per energy (10k CNY / tce)",
        (Indicator::WaterTPer10kCny, Lang::Zh) => "万元增加值用水量 (吨/万元)",
        (Indicator::WaterTPer10kCny, Lang::En) => "Water per value added (t / 10k CNY)",
    }
}

pub fn sector_name(sector: Sector, lang: Lang) -> &'static str {
    match (sector, lang) {
        (Sector::Doors, Lang::Zh) => "门业",
        (Sector::Doors, Lang::En) => "Doors",
        (Sector::Cups, Lang::Zh) => "杯业",
        (Sector::Cups, Lang::En) => "Cups",
        (Sector::Cookware, Lang::Zh) => "炊具",
        (Sector::Cookware, Lang::En) => "Cookware",
        (Sector::PowerTools, Lang::Zh) => "电动工具",
        (Sector::PowerTools, Lang::En) => "Power tools",
        (Sector::Leisure, Lang::Zh) => "休闲器具",
        (Sector::Leisure, Lang::En) => "Leisure products",
        (Sector::Castings, Lang::Zh) => "铸造",
        (Sector::Castings, Lang::En) => "Castings",
        (Sector::Other, Lang::Zh) => "其他",
        (Sector::Other, Lang::En) => "Other",
    }
}

fn heading(report: &Report) -> String {
    let scope = match report.sector_filter {
        Some(s) => format!("sector {}", s.as_str()),
        None => "all sectors".to_string(),
    };
    let clipped = match report.last_day {
        Some(d) if d < report.to => format!(", counted to {d} (today)"),
        _ => String::new(),
    };
    format!(
        "County {} — {} to {} ({} days{clipped}), {scope}; targets in force in {}",
        report.county, report.from, report.to, report.days, report.target_year
    )
}

fn table(report: &Report) -> String {
    let mut out = String::new();
    if let Some(title) = &report.title {
        let _ = writeln!(out, "{title}");
    }
    let _ = writeln!(out, "{}\n", heading(report));
    let summaries = report
        .county_total
        .iter()
        .chain(&report.sectors)
        .chain(&report.enterprises);
    for s in summaries {
        let who = match s.level {
            Level::County => "COUNTY".to_string(),
            Level::Sector => format!("SECTOR {}", s.sector.map_or("", Sector::as_str)),
            Level::Enterprise => format!(
                "ENTERPRISE {}{} ({})",
                s.enterprise.as_deref().unwrap_or(""),
                if s.name.is_empty() {
                    String::new()
                } else {
                    format!(" {}", s.name)
                },
                s.sector.map_or("", Sector::as_str)
            ),
        };
        let reporting = match s.level {
            Level::Enterprise => format!("{} of {} days reported", s.days_reported, s.days),
            _ => format!(
                "{} of {} enterprises reporting, {} enterprise-days reported",
                s.enterprises_reporting, s.enterprises_registered, s.days_reported
            ),
        };
        let _ = writeln!(
            out,
            "{who}: {reporting}, {:.1} machines in the register{}",
            s.machines,
            methods(s)
        );
        let _ = writeln!(
            out,
            "  {:<38} {:>10}  {:<18} {:>10}  {:<5}  numerator / denominator",
            "indicator", "value", "target", "gap", "meets"
        );
        for row in &s.indicators {
            let _ = writeln!(
                out,
                "  {:<38} {:>10}  {:<18} {:>10}  {:<5}  {}",
                indicator_name(row.indicator, Lang::En),
                row.value
                    .map_or("–".into(), |v| value_text(row.indicator, v)),
                row.target
                    .as_ref()
                    .map_or("–".into(), |t| target_text(row.indicator, t)),
                row.gap.map_or("–".into(), |g| gap_text(row.indicator, g)),
                match row.meets {
                    Some(true) => "yes",
                    Some(false) => "NO",
                    None => "–",
                },
                basis_text(row.indicator, row.numerator, row.denominator, Lang::En)
            );
        }
        out.push('\n');
    }
    let _ = writeln!(out, "NOT REPORTING ({}):", report.not_reporting.len());
    for e in &report.not_reporting {
        let _ = writeln!(out, "  {} {} ({})", e.id, e.name, e.sector.as_str());
    }
    if !report.unregistered.is_empty() {
        let _ = writeln!(
            out,
            "\nIN THE STORE BUT NOT IN THE REGISTER ({}), left out of the sums:",
            report.unregistered.len()
        );
        for u in &report.unregistered {
            let tags: Vec<&str> = u.sector_tags.iter().map(String::as_str).collect();
            let _ = writeln!(
                out,
                "  {} (sector={}), {} days reported",
                u.enterprise,
                tags.join(","),
                u.days_reported
            );
        }
    }
    if !report.warnings.is_empty() {
        let _ = writeln!(out, "\nWARNINGS:");
        for w in &report.warnings {
            let _ = writeln!(out, "  {w}");
        }
    }
    out
}

fn methods(s: &Summary) -> String {
    let list = |set: &std::collections::BTreeSet<String>| {
        set.iter()
            .filter(|m| !m.is_empty())
            .cloned()
            .collect::<Vec<_>>()
            .join("+")
    };
    let va = list(&s.va_methods);
    let el = list(&s.el_methods);
    if va.is_empty() && el.is_empty() {
        String::new()
    } else {
        format!("; value added by {va}, electricity {el}")
    }
}

/// Quotes a CSV field when it needs it (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

const CSV_HEADER: &str = "level,sector,enterprise,name,status,indicator,value,target_bound,target,target_year,gap,meets,numerator,denominator,days,days_reported,machines,va_methods,el_methods";

fn csv(report: &Report) -> String {
    let mut out = String::from(CSV_HEADER);
    out.push('\n');
    let num = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
    let summaries = report
        .county_total
        .iter()
        .chain(&report.sectors)
        .chain(&report.enterprises);
    for s in summaries {
        let level = match s.level {
            Level::County => "county",
            Level::Sector => "sector",
            Level::Enterprise => "enterprise",
        };
        let join = |set: &std::collections::BTreeSet<String>| {
            set.iter().cloned().collect::<Vec<_>>().join("+")
        };
        for row in &s.indicators {
            let fields = [
                level.to_string(),
                s.sector.map_or("", Sector::as_str).to_string(),
                s.enterprise.clone().unwrap_or_default(),
                s.name.clone(),
                "reporting".to_string(),
                row.indicator.as_str().to_string(),
                num(row.value),
                row.target
                    .map(|t| match t.bound {
                        Bound::Min => "min",
                        Bound::Max => "max",
                    })
                    .unwrap_or_default()
                    .to_string(),
                num(row.target.map(|t| t.value)),
                row.target
                    .and_then(|t| t.year)
                    .map(|y| y.to_string())
                    .unwrap_or_default(),
                num(row.gap),
                row.meets.map(|m| m.to_string()).unwrap_or_default(),
                row.numerator.to_string(),
                row.denominator.to_string(),
                s.days.to_string(),
                s.days_reported.to_string(),
                s.machines.to_string(),
                join(&s.va_methods),
                join(&s.el_methods),
            ];
            push_csv_row(&mut out, &fields);
        }
    }
    for e in &report.not_reporting {
        let mut fields = vec![String::new(); 19];
        fields[0] = "enterprise".into();
        fields[1] = e.sector.as_str().into();
        fields[2] = e.id.clone();
        fields[3] = e.name.clone();
        fields[4] = "not_reporting".into();
        fields[14] = report.days.to_string();
        fields[15] = "0".into();
        push_csv_row(&mut out, &fields);
    }
    for u in &report.unregistered {
        let mut fields = vec![String::new(); 19];
        fields[0] = "enterprise".into();
        fields[1] = u.sector_tags.iter().cloned().collect::<Vec<_>>().join("+");
        fields[2] = u.enterprise.clone();
        fields[4] = "unregistered".into();
        fields[14] = report.days.to_string();
        fields[15] = u.days_reported.to_string();
        push_csv_row(&mut out, &fields);
    }
    out
}

fn push_csv_row(out: &mut String, fields: &[String]) {
    let row: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
    out.push_str(&row.join(","));
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_carry_their_units() {
        assert_eq!(value_text(Indicator::NetworkingRate, 0.5734), "57.3 %");
        assert_eq!(gap_text(Indicator::NetworkingRate, -0.05), "-5.0 pp");
        assert_eq!(value_text(Indicator::TcePer10kCny, 0.44), "0.440");
        assert_eq!(
            basis_text(
                Indicator::CncUtilisation,
                85.0 * 3600.0,
                120.0 * 3600.0,
                Lang::En
            ),
            "85.0 h / 120.0 h"
        );
        assert_eq!(
            basis_text(Indicator::NetworkingRate, 21.0, 42.0, Lang::En),
            "21 / 42 machine-days"
        );
        assert_eq!(
            basis_text(Indicator::TcePer10kCny, 2.2, 5.0, Lang::Zh),
            "2.200 吨标煤 / 5.000 万元"
        );
        let t = TargetInForce {
            bound: Bound::Max,
            value: 0.43,
            year: Some(2022),
            sector_specific: false,
        };
        assert_eq!(target_text(Indicator::TcePer10kCny, &t), "≤ 0.430 (2022)");
    }

    #[test]
    fn csv_fields_with_commas_or_quotes_are_quoted() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("A, B"), "\"A, B\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(CSV_HEADER.split(',').count(), 19);
    }
}
