//! How the county's reports word a figure: an indicator's value, gap and target in its display
//! unit, its basis (numerator and denominator with their units), and the names of indicators
//! and sectors in Chinese or English. The text report ([`super::render`]) and the HTML page
//! (`html.rs`) both use these, so a number reads the same in each.

use super::aggregate::IndicatorRow;
use super::targets::{Bound, Indicator, TargetInForce};
use crate::model::Sector;

/// `--lang` of the HTML report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// 中文
    Zh,
    En,
}

/// The value in the indicator's display unit.
pub fn value_text(indicator: Indicator, v: f64) -> String {
    match indicator {
        i if i.is_rate() => format!("{:.1} %", v * 100.0),
        i if i.is_count() => format!("{v:.0}"),
        Indicator::TcePer10kCny => format!("{v:.3}"),
        _ => format!("{v:.2}"),
    }
}

/// value − target: percentage points for rates.
pub fn gap_text(indicator: Indicator, gap: f64) -> String {
    if indicator.is_rate() {
        format!("{:+.1} pp", gap * 100.0)
    } else if indicator.is_count() {
        format!("{gap:+.0}")
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
    let enterprises = if zh { "家企业" } else { "enterprises" };
    let key = if zh {
        "家重点骨干企业"
    } else {
        "key enterprises"
    };
    match indicator {
        Indicator::WastewaterTPer10kCny => (if zh { "吨废水" } else { "t wastewater" }, cny),
        Indicator::Robots => (if zh { "台" } else { "robots" }, enterprises),
        Indicator::DigitalWorkshops => (if zh { "个" } else { "workshops" }, enterprises),
        Indicator::AboveScaleEnterprises => {
            (if zh { "家规上" } else { "above-scale" }, enterprises)
        }
        Indicator::ErpRate | Indicator::MesRate | Indicator::ScmRate | Indicator::PlmRate => {
            ("", key)
        }
        Indicator::NetworkingRate | Indicator::NetworkingRateDigital | Indicator::CncRate => {
            ("", machine_days)
        }
        Indicator::CncUtilisation if zh => ("小时", "小时"),
        Indicator::CncUtilisation => ("h", "h"),
        Indicator::TcePer10kCny => (tce, cny),
        Indicator::ValueAddedPerTce => (cny, tce),
        Indicator::WaterTPer10kCny => (water, cny),
    }
}

/// value − target in `lang`: percentage points are 个百分点 in Chinese.
pub fn gap_text_in(indicator: Indicator, gap: f64, lang: Lang) -> String {
    let text = gap_text(indicator, gap);
    match lang {
        Lang::Zh => text.replace(" pp", " 个百分点"),
        Lang::En => text,
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
        i if i.is_rate() || i.is_count() => {
            (format!("{numerator:.0}"), format!("{denominator:.0}"))
        }
        _ => (format!("{numerator:.3}"), format!("{denominator:.3}")),
    };
    let join = |v: String, u: &str| {
        if u.is_empty() { v } else { format!("{v} {u}") }
    };
    format!("{} / {}", join(n, nu), join(d, du))
}

/// What a figure stands on: `21 / 42 machine-days · 3 enterprises, 28.6 % declared`, or
/// "no data" when nothing was measured (never `0 / 0`).
pub fn basis_with_coverage(row: &IndicatorRow, lang: Lang) -> String {
    let zh = lang == Lang::Zh;
    if row.enterprises == 0 {
        return no_data(lang).to_string();
    }
    let basis = basis_text(row.indicator, row.numerator, row.denominator, lang);
    if row.indicator.is_count() {
        // The denominator is already the enterprises counted; the basis says whether the
        // count was measured by agents or declared in the register.
        return format!("{basis} · {}", count_basis(row, lang));
    }
    let covers = if zh {
        format!("{} 家企业", row.enterprises)
    } else if row.enterprises == 1 {
        "1 enterprise".to_string()
    } else {
        format!("{} enterprises", row.enterprises)
    };
    let declared = match row.declared_share {
        Some(d) if d > 0.0 && zh => format!("，其中申报 {:.1} %", d * 100.0),
        Some(d) if d > 0.0 => format!(", {:.1} % declared", d * 100.0),
        _ => String::new(),
    };
    format!("{basis} · {covers}{declared}")
}

/// What a count stands on: `declared`, `measured`, or for robots counted both ways
/// `2 measured, 1 declared` (enterprises).
fn count_basis(row: &IndicatorRow, lang: Lang) -> String {
    let zh = lang == Lang::Zh;
    let (measured, declared) = basis_enterprises(row);
    match (measured, declared) {
        (0, _) if zh => "企业申报".into(),
        (0, _) => "declared".into(),
        (_, 0) if zh => "实测".into(),
        (_, 0) => "measured".into(),
        (m, d) if zh => format!("实测 {m} 家，申报 {d} 家"),
        (m, d) => format!("{m} measured, {d} declared"),
    }
}

/// Of the enterprises a register count covers, how many were measured by their agents and
/// how many declared (only robots can be measured).
fn basis_enterprises(row: &IndicatorRow) -> (usize, usize) {
    let declared = match (row.indicator, row.declared_share) {
        (Indicator::Robots, Some(share)) => (share * row.enterprises as f64).round() as usize,
        _ => row.enterprises,
    };
    (row.enterprises - declared.min(row.enterprises), declared)
}

/// The basis of a figure in one word for the CSV: `measured`, `declared` or
/// `measured+declared`; empty when nothing is under it.
pub fn basis_word(row: &IndicatorRow) -> &'static str {
    if row.enterprises == 0 {
        return "";
    }
    let (measured, declared) = if Indicator::REGISTER.contains(&row.indicator) {
        basis_enterprises(row)
    } else {
        (1, usize::from(row.declared_share.is_some_and(|d| d > 0.0)))
    };
    match (measured > 0, declared > 0) {
        (true, true) => "measured+declared",
        (true, false) => "measured",
        _ => "declared",
    }
}

/// "no data" / "无数据": a figure nothing was measured for.
pub fn no_data(lang: Lang) -> &'static str {
    match lang {
        Lang::Zh => "无数据",
        Lang::En => "no data",
    }
}

/// The number of decimals a value of `indicator` is written with in CSV and JSON: enough for
/// its display precision with two digits to spare, and none of floating-point noise
/// (0.000000000000003552713678800501).
pub fn decimals(indicator: Indicator) -> i32 {
    if indicator.is_rate() { 5 } else { 4 }
}

/// `v` rounded to `decimals` places, without -0.
pub fn round_to(v: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    let r = (v * scale).round() / scale;
    if r == 0.0 { 0.0 } else { r }
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
        (Indicator::WastewaterTPer10kCny, Lang::Zh) => "单位工业增加值废水排放量 (吨/万元)",
        (Indicator::WastewaterTPer10kCny, Lang::En) => "Wastewater per value added (t / 10k CNY)",
        (Indicator::Robots, Lang::Zh) => "在役工业机器人 (台)",
        (Indicator::Robots, Lang::En) => "Industrial robots in service",
        (Indicator::DigitalWorkshops, Lang::Zh) => "数字化车间 (个)",
        (Indicator::DigitalWorkshops, Lang::En) => "Digital workshops",
        (Indicator::ErpRate, Lang::Zh) => "企业资源计划 (ERP) 普及率",
        (Indicator::ErpRate, Lang::En) => "ERP adoption (key enterprises)",
        (Indicator::MesRate, Lang::Zh) => "制造执行系统 (MES) 普及率",
        (Indicator::MesRate, Lang::En) => "MES adoption (key enterprises)",
        (Indicator::ScmRate, Lang::Zh) => "供应链管理 (SCM) 普及率",
        (Indicator::ScmRate, Lang::En) => "SCM adoption (key enterprises)",
        (Indicator::PlmRate, Lang::Zh) => "产品全生命周期管理 (PLM) 普及率",
        (Indicator::PlmRate, Lang::En) => "PLM adoption (key enterprises)",
        (Indicator::AboveScaleEnterprises, Lang::Zh) => "规上企业数 (家)",
        (Indicator::AboveScaleEnterprises, Lang::En) => "Above-scale enterprises",
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
}
