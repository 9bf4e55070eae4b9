//! The report as text for a terminal, CSV for a spreadsheet, JSON for other programs, and a
//! self-contained HTML page ([`super::html`]). Numbers, units and names are worded in
//! [`super::labels`], which both use.
//!
//! Every row shows the value with its numerator and denominator, the target in force, the gap
//! and whether the target is met: an intensity or a rate without its basis is not shown.

use std::fmt::Write as _;

use super::aggregate::{Level, Report, Summary};
use super::labels::{
    self, Lang, basis_with_coverage, gap_text, indicator_name, target_text, value_text,
};
use super::targets::{Bound, Indicator};
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

pub fn render(report: &Report, format: Format, lang: Lang) -> String {
    match format {
        Format::Table => table(report),
        Format::Csv => csv(report),
        Format::Json => json(report),
        Format::Html => super::html::render(report, lang),
    }
}

/// The whole report as JSON: a figure not measured is `null`, never 0, and every number is
/// rounded to its precision so floating-point noise does not pass for a gap.
fn json(report: &Report) -> String {
    // Serializing plain numbers, strings and dates cannot fail.
    let mut value = serde_json::to_value(report).unwrap_or_default();
    round_json(&mut value, None);
    serde_json::to_string_pretty(&value).unwrap_or_default() + "\n"
}

/// Rounds every number: an indicator row's value and gap to the indicator's decimals, the rest
/// to six places.
fn round_json(value: &mut serde_json::Value, decimals: Option<i32>) {
    use serde_json::Value;
    match value {
        Value::Array(items) => items.iter_mut().for_each(|v| round_json(v, None)),
        Value::Object(map) => {
            let row_decimals = map
                .get("indicator")
                .and_then(Value::as_str)
                .and_then(|name| Indicator::ALL.into_iter().find(|i| i.as_str() == name))
                .map(labels::decimals);
            let no_data =
                row_decimals.is_some() && map.get("enterprises").and_then(Value::as_u64) == Some(0);
            for (k, v) in map.iter_mut() {
                let d = match k.as_str() {
                    "value" | "gap" => row_decimals,
                    "declared_share" => Some(5),
                    _ => None,
                };
                round_json(v, d.or(decimals));
                if no_data && (k == "numerator" || k == "denominator") {
                    *v = Value::Null;
                }
            }
        }
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64() {
                let r = labels::round_to(f, decimals.unwrap_or(6));
                if let Some(r) = serde_json::Number::from_f64(r) {
                    *value = Value::Number(r);
                }
            }
        }
        _ => {}
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
    let sources = if report.sources.is_empty() {
        String::new()
    } else {
        format!("\nFrom {}", report.sources.join(" and "))
    };
    format!(
        "County {} — {} to {} ({} days{clipped}, {}), {scope}; targets in force in {}{sources}",
        report.county, report.from, report.to, report.days, report.timezone, report.target_year
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
                "{} of {} enterprises reporting ({} counted with declared machines), {} enterprise-days reported",
                s.enterprises_reporting,
                s.enterprises_registered,
                s.enterprises_declared,
                s.days_reported
            ),
        };
        let reporting = if s.level == Level::Enterprise && !s.reporting {
            format!("NOT REPORTING, declared register on its {} days", s.days)
        } else {
            reporting
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
                    .map_or("no data".into(), |v| value_text(row.indicator, v)),
                row.target
                    .as_ref()
                    .map_or("–".into(), |t| target_text(row.indicator, t)),
                row.gap.map_or("–".into(), |g| gap_text(row.indicator, g)),
                verdict(row.meets),
                basis_with_coverage(row, Lang::En)
            );
        }
        out.push('\n');
    }
    if let Some(holds) = &report.store_holds {
        let _ = writeln!(
            out,
            "NOTHING MATCHED the county, sector and period. The store holds:\n  counties: {}\n  sectors: {}\n  enterprises: {}\n",
            holds.counties.join(", "),
            holds.sectors.join(", "),
            holds.enterprises.join(", ")
        );
    }
    let _ = writeln!(out, "PER YEAR, against each year's target:");
    for p in &report.years.points {
        for row in p
            .indicators
            .iter()
            .filter(|r| r.target.is_some() || r.value.is_some())
        {
            let _ = writeln!(
                out,
                "  {} {:<38} {:>10}  {:<18} {:<5}  {}",
                p.label,
                indicator_name(row.indicator, Lang::En),
                row.value
                    .map_or("no data".into(), |v| value_text(row.indicator, v)),
                row.target
                    .as_ref()
                    .map_or("–".into(), |t| target_text(row.indicator, t)),
                verdict(row.meets),
                basis_with_coverage(row, Lang::En)
            );
        }
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "BELOW TARGET, the enterprises pulling each sector down ({}):",
        report.laggards.len()
    );
    for l in &report.laggards {
        let _ = writeln!(
            out,
            "  {:<12} {:<38} {} {}{}: {}, {} short",
            l.sector.as_str(),
            indicator_name(l.indicator, Lang::En),
            l.enterprise,
            l.name,
            if l.reporting { "" } else { " (not reporting)" },
            labels::basis_text(l.indicator, l.numerator, l.denominator, Lang::En),
            labels::round_to(l.shortfall, 3)
        );
    }
    out.push('\n');
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

fn verdict(meets: Option<bool>) -> &'static str {
    match meets {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "–",
    }
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

const CSV_HEADER: &str = "level,sector,enterprise,name,status,indicator,value,target_bound,target,target_year,gap,meets,numerator,denominator,days,days_reported,machines,va_methods,el_methods,enterprises_covered,declared_share,basis";

/// The byte order mark that makes Excel read the file as UTF-8 (the Chinese names).
const BOM: &str = "\u{feff}";

/// CSV: a figure not measured has an empty value, numerator and denominator (never 0) and no
/// verdict; numbers are rounded to their precision.
fn csv(report: &Report) -> String {
    let mut out = String::from(BOM);
    out.push_str(CSV_HEADER);
    out.push('\n');
    let columns = CSV_HEADER.split(',').count();
    let num = |v: Option<f64>, d: i32| {
        v.map(|v| labels::round_to(v, d).to_string())
            .unwrap_or_default()
    };
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
            let d = labels::decimals(row.indicator);
            let measured = row.enterprises > 0;
            let basis = |v: f64| {
                if measured {
                    num(Some(v), 6)
                } else {
                    String::new()
                }
            };
            let fields = [
                level.to_string(),
                s.sector.map_or("", Sector::as_str).to_string(),
                s.enterprise.clone().unwrap_or_default(),
                s.name.clone(),
                if s.level == Level::Enterprise && !s.reporting {
                    "not_reporting"
                } else {
                    "reporting"
                }
                .to_string(),
                row.indicator.as_str().to_string(),
                num(row.value, d),
                row.target
                    .map(|t| match t.bound {
                        Bound::Min => "min",
                        Bound::Max => "max",
                    })
                    .unwrap_or_default()
                    .to_string(),
                num(row.target.map(|t| t.value), d),
                row.target
                    .and_then(|t| t.year)
                    .map(|y| y.to_string())
                    .unwrap_or_default(),
                num(row.gap, d),
                row.meets.map(|m| m.to_string()).unwrap_or_default(),
                basis(row.numerator),
                basis(row.denominator),
                s.days.to_string(),
                s.days_reported.to_string(),
                num(Some(s.machines), 3),
                join(&s.va_methods),
                join(&s.el_methods),
                row.enterprises.to_string(),
                num(row.declared_share, 5),
                labels::basis_word(row).to_string(),
            ];
            push_csv_row(&mut out, &fields);
        }
    }
    // Table 1's columns: the county (or the sector asked for) per calendar year.
    for p in &report.years.points {
        for row in &p.indicators {
            let d = labels::decimals(row.indicator);
            let measured = row.enterprises > 0;
            let mut fields = vec![String::new(); columns];
            fields[0] = "year".into();
            fields[1] = report.sector_filter.map_or("", Sector::as_str).into();
            fields[3] = p.label.clone();
            fields[5] = row.indicator.as_str().into();
            fields[6] = num(row.value, d);
            fields[7] = row
                .target
                .map(|t| match t.bound {
                    Bound::Min => "min",
                    Bound::Max => "max",
                })
                .unwrap_or_default()
                .into();
            fields[8] = num(row.target.map(|t| t.value), d);
            fields[9] = row
                .target
                .and_then(|t| t.year)
                .map(|y| y.to_string())
                .unwrap_or_default();
            fields[10] = num(row.gap, d);
            fields[11] = row.meets.map(|m| m.to_string()).unwrap_or_default();
            if measured {
                fields[12] = num(Some(row.numerator), 6);
                fields[13] = num(Some(row.denominator), 6);
            }
            fields[14] = p.days.to_string();
            fields[19] = row.enterprises.to_string();
            fields[20] = num(row.declared_share, 5);
            fields[21] = labels::basis_word(row).to_string();
            push_csv_row(&mut out, &fields);
        }
    }
    for u in &report.unregistered {
        let mut fields = vec![String::new(); columns];
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
    fn csv_fields_with_commas_or_quotes_are_quoted() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("A, B"), "\"A, B\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(CSV_HEADER.split(',').count(), 22);
    }

    #[test]
    fn floating_point_noise_is_rounded_away() {
        // Issue 22 saw a gap of 0.000000000000003552713678800501: 26.76 − 26.759999999999998.
        let noisy_gap = 26.76 - (26.0 + 0.76);
        let mut v = serde_json::json!({
            "indicator": "water_t_per_10k_cny",
            "value": 26.0 + 0.76,
            "gap": 0.1 + 0.2 - 0.3,
            "numerator": 0.1 + 0.2,
            "denominator": 0.0,
            "enterprises": 3,
            "declared_share": 5.0 / 9.0,
        });
        round_json(&mut v, None);
        assert_eq!(v["value"], 26.76);
        assert_eq!(v["gap"], 0.0);
        assert_eq!(v["numerator"], 0.3);
        assert_eq!(labels::round_to(noisy_gap, 4), 0.0);
        assert_eq!(v["declared_share"], 0.55556);
        // A row that covers no enterprise: no numerator or denominator, never 0.
        let mut none = serde_json::json!({
            "indicator": "water_t_per_10k_cny", "value": null, "numerator": 0.0,
            "denominator": 0.0, "enterprises": 0,
        });
        round_json(&mut none, None);
        assert!(none["numerator"].is_null() && none["denominator"].is_null());
        assert_eq!(labels::round_to(-0.000001, 4).to_string(), "0");
    }
}
