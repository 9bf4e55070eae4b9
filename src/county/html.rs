//! The HTML report: one self-contained file (inline CSS, inline SVG charts drawn here, no
//! script and nothing fetched from the network), so it can be mailed, archived and opened on
//! an office PC without internet access. Chinese by default, English with `--lang en`.
//!
//! It shows each sector against its target, the trend over the period against the target, a
//! table per sector and per enterprise with every value beside its numerator and denominator,
//! the enterprises that did not report, and how the figures were summed.

use std::fmt::Write as _;

use super::aggregate::{Bucket, IndicatorRow, Level, Report, Summary, TrendPoint};
use super::labels;
use super::labels::{
    Lang, basis_with_coverage, indicator_name, sector_name, target_text, value_text,
};
use super::targets::Indicator;

/// The indicators charted; the tables show all of them.
const CHARTED: [Indicator; 5] = [
    Indicator::NetworkingRate,
    Indicator::CncRate,
    Indicator::CncUtilisation,
    Indicator::TcePer10kCny,
    Indicator::WaterTPer10kCny,
];

struct Words {
    lang: &'static str,
    default_title: &'static str,
    county: &'static str,
    days: &'static str,
    counted_to: &'static str,
    targets_of: &'static str,
    all_sectors: &'static str,
    sector_only: &'static str,
    overview: &'static str,
    against_target: &'static str,
    trend: &'static str,
    trend_daily: &'static str,
    trend_monthly: &'static str,
    sectors: &'static str,
    enterprises: &'static str,
    not_reporting: &'static str,
    none: &'static str,
    unregistered: &'static str,
    notes: &'static str,
    warnings: &'static str,
    sector: &'static str,
    enterprise: &'static str,
    reporting: &'static str,
    days_reported: &'static str,
    machines: &'static str,
    target: &'static str,
    gap: &'static str,
    yes: &'static str,
    no: &'static str,
    no_data: &'static str,
    methods: &'static str,
    whole_county: &'static str,
    legend_target: &'static str,
    method_notes: [&'static str; 4],
    generated: &'static str,
    programme: &'static str,
    robots: &'static str,
    cnc: &'static str,
    digital_workshops: &'static str,
    systems: &'static str,
    years: &'static str,
    indicator: &'static str,
    laggards: &'static str,
    laggards_none: &'static str,
    shortfall: &'static str,
    value: &'static str,
    basis: &'static str,
    declared_note: &'static str,
    store_holds: &'static str,
    counties: &'static str,
    not_reporting_mark: &'static str,
    sources: &'static str,
}

const ZH: Words = Words {
    lang: "zh-CN",
    default_title: "县域数字化车间与绿色制造指标报告",
    county: "县域",
    days: "天",
    counted_to: "统计至",
    targets_of: "目标年度",
    all_sectors: "全部行业",
    sector_only: "仅限行业",
    overview: "全县指标",
    against_target: "各行业对照目标",
    trend: "期间趋势",
    trend_daily: "按日",
    trend_monthly: "按月",
    sectors: "行业汇总",
    enterprises: "企业明细",
    not_reporting: "未报送数据的企业",
    none: "无",
    unregistered: "未在名录中的企业（未计入合计）",
    notes: "计算说明",
    warnings: "提示",
    sector: "行业",
    enterprise: "企业",
    reporting: "报送/名录",
    days_reported: "报送天数",
    machines: "设备台数",
    target: "目标",
    gap: "差距",
    yes: "达标",
    no: "未达标",
    no_data: "无数据",
    methods: "增加值核算方法 / 电力折标方法",
    whole_county: "全县",
    legend_target: "目标",
    method_notes: [
        "企业、行业与全县的比率均为分子之和除以分母之和，从不对比率求平均。",
        "联网率与数控化率按“台·日”累计：每台设备每天计一次；企业某天未报送时，该天仍按其设备台账计入分母，联网设备计为零。设备台数为期间内台·日数除以天数。",
        "能耗与用水强度只计入增加值已知的日期，分子与分母取自相同的日期。",
        "名录中期间内无任何数据的企业列为未报送，并按名录申报的设备台数计入分母（联网台数为零）；企业的指标只覆盖其加入名录后的日期；未计量的指标显示为“无数据”，不作达标判定。",
    ],
    generated: "生成",
    programme: "行动计划目标（2022年）",
    robots: "在役工业机器人",
    cnc: "装备数控化率",
    digital_workshops: "数字化车间",
    systems: "重点骨干企业 ERP / MES / SCM / PLM 普及率",
    years: "分年度进度（表1）",
    indicator: "指标",
    laggards: "拉低行业指标的企业",
    laggards_none: "无：各行业均达到目标，或无可对照的数据。",
    shortfall: "差额",
    value: "数值",
    basis: "分子 / 分母",
    declared_note: "工业机器人在企业采集终端的设备登记中有（类型 robot）时按实测台数计，否则按企业名录中的申报计，并注明依据（实测／企业申报）；数字化车间、信息化系统与规上企业数取自企业名录中的申报（含年份）；未报送企业按名录中申报的设备台数计入分母，联网台数为零。",
    store_holds: "所选县域、行业与期间无数据。数据库中现有",
    counties: "县域",
    not_reporting_mark: "未报送，按申报台数计",
    sources: "目标与企业名录文件",
};

const EN: Words = Words {
    lang: "en",
    default_title: "County report: digital workshops and green manufacturing",
    county: "County",
    days: "days",
    counted_to: "counted to",
    targets_of: "targets of",
    all_sectors: "all sectors",
    sector_only: "sector",
    overview: "The county",
    against_target: "Sectors against their targets",
    trend: "Trend over the period",
    trend_daily: "per day",
    trend_monthly: "per month",
    sectors: "Sectors",
    enterprises: "Enterprises",
    not_reporting: "Enterprises that did not report",
    none: "none",
    unregistered: "In the store but not in the register (left out of the sums)",
    notes: "How the figures are made",
    warnings: "Warnings",
    sector: "Sector",
    enterprise: "Enterprise",
    reporting: "Reporting / registered",
    days_reported: "Days reported",
    machines: "Machines",
    target: "Target",
    gap: "Gap",
    yes: "yes",
    no: "no",
    no_data: "no data",
    methods: "Value-added method / electricity conversion",
    whole_county: "County",
    legend_target: "target",
    method_notes: [
        "Every ratio of an enterprise, a sector or the county is the sum of the numerators over the sum of the denominators; ratios are never averaged.",
        "Networking and CNC rates count machine-days: each machine once per day. On a day an enterprise did not report, its register still counts in the denominator, with no machine networked. Machines = machine-days ÷ days.",
        "Energy and water intensities cover the days on which value added is known, numerator and denominator alike.",
        "A registered enterprise with no data in the period is listed as not reporting and counts in the denominators with its declared machines, none networked; an enterprise's figures cover only its registered days; a figure not measured shows \"no data\" and is never judged against a target.",
    ],
    generated: "Generated",
    programme: "The programme's targets (2022)",
    robots: "Industrial robots in service",
    cnc: "CNC rate",
    digital_workshops: "Digital workshops",
    systems: "ERP / MES / SCM / PLM adoption among key enterprises",
    years: "Progress per year (Table 1)",
    indicator: "Indicator",
    laggards: "Enterprises pulling their sector below a target",
    laggards_none: "None: every sector meets its targets, or there is nothing to compare.",
    shortfall: "Shortfall",
    value: "Value",
    basis: "Numerator / denominator",
    declared_note: "Robots are counted from the agent's machine register (kind robot) where it holds them (measured) and from the enterprise register otherwise (declared), with the basis shown; digital workshops, management systems and above-scale counts are declared in the enterprise register (with the year); an enterprise that sends nothing counts with its declared machines, none networked.",
    store_holds: "Nothing in the store matches the county, sector and period. The store holds",
    counties: "Counties",
    not_reporting_mark: "not reporting, declared machines",
    sources: "Targets and register read from",
};

const STYLE: &str = r#"
body{font-family:"Noto Sans CJK SC","Source Han Sans SC","Microsoft YaHei","PingFang SC",system-ui,sans-serif;margin:0 auto;max-width:1100px;padding:1.5rem;color:#1d2327;background:#fff}
h1{font-size:1.6rem;margin:.2rem 0}h2{font-size:1.25rem;margin-top:2rem;border-bottom:2px solid #1d2327;padding-bottom:.2rem}
.sub{color:#50575e}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:.8rem}
.card{border:1px solid #c3c4c7;border-radius:6px;padding:.7rem}
.card .v{font-size:1.6rem;font-weight:600}
.card .t{color:#50575e;font-size:.85rem}
.ok{color:#1e7e34}.bad{color:#b32d2e}.na{color:#787c82}
table{border-collapse:collapse;width:100%;font-size:.85rem;margin:.5rem 0}
th,td{border-bottom:1px solid #dcdcde;padding:.3rem .4rem;text-align:right;vertical-align:top}
th:first-child,td:first-child,td.l,th.l{text-align:left}
thead th{background:#f0f0f1}
td.ok{background:#edfaef}td.bad{background:#fcf0f1}
figure{margin:1rem 0;break-inside:avoid}figcaption{font-weight:600;margin-bottom:.3rem}
svg text{font-family:inherit;font-size:12px;fill:#1d2327}
.small{font-size:.8rem;color:#50575e}
@media print{body{max-width:none}h2{break-after:avoid}}
"#;

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn class(row: &IndicatorRow) -> &'static str {
    match row.meets {
        Some(true) => "ok",
        Some(false) => "bad",
        None => "",
    }
}

fn summary_label(s: &Summary, w: &Words, lang: Lang) -> String {
    match (&s.enterprise, s.sector) {
        (Some(id), _) if !s.name.is_empty() => format!("{} ({id})", s.name),
        (Some(id), _) => id.clone(),
        (None, Some(sector)) => sector_name(sector, lang).to_string(),
        (None, None) => w.whole_county.to_string(),
    }
}

pub fn render(report: &Report, lang: Lang) -> String {
    let w = match lang {
        Lang::Zh => &ZH,
        Lang::En => &EN,
    };
    let title = report.title.as_deref().unwrap_or(w.default_title);
    let mut h = String::with_capacity(64 * 1024);
    let _ = writeln!(
        h,
        "<!DOCTYPE html>\n<html lang=\"{}\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{} — {} {}–{}</title>\n<style>{STYLE}</style>\n</head>\n<body>",
        w.lang,
        esc(title),
        esc(&report.county),
        report.from,
        report.to
    );
    let scope = match report.sector_filter {
        Some(s) => format!("{} {}", w.sector_only, sector_name(s, lang)),
        None => w.all_sectors.to_string(),
    };
    let clipped = match report.last_day {
        Some(d) if d < report.to => format!(" ({} {d})", w.counted_to),
        _ => String::new(),
    };
    let _ = writeln!(
        h,
        "<header><h1>{}</h1><p class=\"sub\">{} {} · {} – {}{clipped} · {} {} · {} · {} {}</p></header>",
        esc(title),
        w.county,
        esc(&report.county),
        report.from,
        report.to,
        report.days,
        w.days,
        esc(&scope),
        w.targets_of,
        report.target_year
    );

    if let Some(holds) = &report.store_holds {
        let list = |v: &[String]| {
            if v.is_empty() {
                w.none.to_string()
            } else {
                v.iter().map(|x| esc(x)).collect::<Vec<_>>().join(", ")
            }
        };
        let _ = writeln!(
            h,
            "<section id=\"store-holds\"><p class=\"bad\">{}:</p><ul><li>{}: {}</li><li>{}: {}</li><li>{}: {}</li></ul></section>",
            w.store_holds,
            w.counties,
            list(&holds.counties),
            w.sectors,
            list(&holds.sectors),
            w.enterprises,
            list(&holds.enterprises)
        );
    }

    let top = report
        .county_total
        .as_ref()
        .or_else(|| report.sectors.first());
    if let Some(top) = top {
        let _ = write!(
            h,
            "<section id=\"overview\"><h2>{}</h2><div class=\"cards\">",
            if report.county_total.is_some() {
                w.overview
            } else {
                w.sectors
            }
        );
        for row in &top.indicators {
            card(&mut h, row, w, lang);
        }
        h.push_str("</div></section>\n");
    }

    // What the county is asked for first: the programme's goals per sector, the years of
    // Table 1 and who pulls each sector below its target; the charts and tables follow.
    let rows: Vec<&Summary> = report.county_total.iter().chain(&report.sectors).collect();
    programme_sections(&mut h, &rows, w, lang);
    years_section(&mut h, report, w, lang);
    laggards_section(&mut h, report, w, lang);

    let _ = writeln!(
        h,
        "<section id=\"sectors-chart\"><h2>{}</h2>",
        w.against_target
    );
    for indicator in CHARTED {
        let bars: Vec<(String, Option<&IndicatorRow>)> = rows
            .iter()
            .map(|s| (summary_label(s, w, lang), s.indicator(indicator)))
            .collect();
        figure(
            &mut h,
            "bars",
            indicator,
            lang,
            &bar_chart(indicator, &bars, w),
        );
    }
    h.push_str("</section>\n");

    let bucket = match report.trend.bucket {
        Bucket::Day => w.trend_daily,
        Bucket::Month | Bucket::Year => w.trend_monthly,
    };
    let _ = writeln!(h, "<section id=\"trend\"><h2>{} ({bucket})</h2>", w.trend);
    // The chart starts when the first enterprise of the report's scope joined and ends when
    // the last left: before and after, nobody was there to measure (no 0 % for those days).
    let charted = charted_points(&report.trend.points);
    for indicator in CHARTED {
        let points: Vec<(String, Option<&IndicatorRow>)> = charted
            .iter()
            .map(|p| {
                (
                    p.label.clone(),
                    p.indicators.iter().find(|r| r.indicator == indicator),
                )
            })
            .collect();
        figure(
            &mut h,
            "trend",
            indicator,
            lang,
            &line_chart(indicator, &points, w),
        );
    }
    h.push_str("</section>\n");

    let _ = writeln!(h, "<section id=\"sector-table\"><h2>{}</h2>", w.sectors);
    summary_table(&mut h, &rows, w, lang, false);
    h.push_str("</section>\n");

    let _ = writeln!(
        h,
        "<section id=\"enterprise-table\"><h2>{}</h2>",
        w.enterprises
    );
    let enterprises: Vec<&Summary> = report.enterprises.iter().collect();
    summary_table(&mut h, &enterprises, w, lang, true);
    h.push_str("</section>\n");

    let _ = writeln!(
        h,
        "<section id=\"not-reporting\"><h2>{} ({})</h2>",
        w.not_reporting,
        report.not_reporting.len()
    );
    if report.not_reporting.is_empty() {
        let _ = write!(h, "<p>{}</p>", w.none);
    } else {
        let _ = write!(
            h,
            "<table><thead><tr><th class=\"l\">{}</th><th class=\"l\">{}</th></tr></thead><tbody>",
            w.enterprise, w.sector
        );
        for e in &report.not_reporting {
            let name = if e.name.is_empty() {
                esc(&e.id)
            } else {
                format!("{} ({})", esc(&e.name), esc(&e.id))
            };
            let _ = write!(
                h,
                "<tr class=\"not-reporting\" data-enterprise=\"{}\"><td>{name}</td><td class=\"l\">{}</td></tr>",
                esc(&e.id),
                sector_name(e.sector, lang)
            );
        }
        h.push_str("</tbody></table>");
    }
    h.push_str("</section>\n");

    if !report.unregistered.is_empty() {
        let _ = write!(
            h,
            "<section id=\"unregistered\"><h2>{}</h2><ul>",
            w.unregistered
        );
        for u in &report.unregistered {
            let tags: Vec<&str> = u.sector_tags.iter().map(String::as_str).collect();
            let _ = write!(
                h,
                "<li>{} (sector={}) — {} {}</li>",
                esc(&u.enterprise),
                esc(&tags.join(",")),
                u.days_reported,
                w.days
            );
        }
        h.push_str("</ul></section>\n");
    }

    let _ = write!(h, "<section id=\"notes\"><h2>{}</h2><ul>", w.notes);
    for note in w.method_notes {
        let _ = write!(h, "<li>{note}</li>");
    }
    let _ = write!(h, "<li>{}</li>", w.declared_note);
    if !report.sources.is_empty() {
        let _ = write!(
            h,
            "<li>{}: {}</li>",
            w.sources,
            esc(&report.sources.join(", "))
        );
    }
    h.push_str("</ul>");
    if !report.warnings.is_empty() {
        let _ = write!(h, "<h3>{}</h3><ul>", w.warnings);
        for warning in &report.warnings {
            let _ = write!(h, "<li>{}</li>", esc(warning));
        }
        h.push_str("</ul>");
    }
    h.push_str("</section>\n");
    let _ = writeln!(
        h,
        "<footer class=\"small\"><p>{} {} · shopfloor {}</p></footer>\n</body>\n</html>",
        w.generated,
        generated_at(&report.timezone),
        env!("CARGO_PKG_VERSION")
    );
    h
}

/// The report's generation time in its time zone.
fn generated_at(timezone: &str) -> String {
    let now = jiff::Timestamp::now();
    match jiff::tz::TimeZone::get(timezone) {
        Ok(tz) => format!(
            "{} ({timezone})",
            now.to_zoned_datetime(tz).strftime("%Y-%m-%d %H:%M %:z")
        ),
        Err(_) => now.strftime("%Y-%m-%d %H:%M UTC").to_string(),
    }
}

/// One cell: the value (or "no data"), the target in force and the verdict, the basis below.
fn cell(row: Option<&IndicatorRow>, w: &Words, lang: Lang) -> String {
    let Some(row) = row else {
        return "<td class=\"na\">–</td>".to_string();
    };
    let value = row
        .value
        .map_or(w.no_data.to_string(), |v| value_text(row.indicator, v));
    let target = row
        .target
        .as_ref()
        .map(|t| {
            format!(
                " <span class=\"small\">{}</span>",
                target_text(row.indicator, t)
            )
        })
        .unwrap_or_default();
    let verdict = match row.meets {
        Some(true) => format!(" <span class=\"ok\">✔ {}</span>", w.yes),
        Some(false) => format!(" <span class=\"bad\">✘ {}</span>", w.no),
        None => String::new(),
    };
    format!(
        "<td class=\"{}\" data-indicator=\"{}\">{value}{target}{verdict}<br><span class=\"small\">{}</span></td>",
        class(row),
        row.indicator.as_str(),
        esc(&basis_with_coverage(row, lang))
    )
}

/// The programme's 2022 goals per sector (section 三): robots, CNC rate, digital workshops,
/// ERP/MES/SCM/PLM among key enterprises, above-scale enterprises.
fn programme_sections(h: &mut String, rows: &[&Summary], w: &Words, lang: Lang) {
    let _ = writeln!(h, "<section id=\"programme\"><h2>{}</h2>", w.programme);
    let groups: [(&str, &str, &[Indicator]); 4] = [
        ("robots", w.robots, &[Indicator::Robots]),
        (
            "cnc",
            w.cnc,
            &[Indicator::CncRate, Indicator::NetworkingRate],
        ),
        (
            "digital-workshops",
            w.digital_workshops,
            &[
                Indicator::DigitalWorkshops,
                Indicator::AboveScaleEnterprises,
            ],
        ),
        (
            "systems",
            w.systems,
            &[
                Indicator::ErpRate,
                Indicator::MesRate,
                Indicator::ScmRate,
                Indicator::PlmRate,
            ],
        ),
    ];
    for (id, title, indicators) in groups {
        let _ = write!(
            h,
            "<section id=\"{id}\"><h3>{title}</h3><table><thead><tr><th class=\"l\">{}</th>",
            w.sector
        );
        for i in indicators {
            let _ = write!(h, "<th>{}</th>", indicator_name(*i, lang));
        }
        h.push_str("</tr></thead><tbody>");
        for s in rows {
            let _ = write!(h, "<tr><td>{}</td>", esc(&summary_label(s, w, lang)));
            for i in indicators {
                h.push_str(&cell(s.indicator(*i), w, lang));
            }
            h.push_str("</tr>");
        }
        h.push_str("</tbody></table></section>\n");
    }
    let _ = writeln!(h, "<p class=\"small\">{}</p></section>", w.declared_note);
}

/// Table 1's layout: one row per indicator, one column per year of the period, each against
/// that year's target.
fn years_section(h: &mut String, report: &Report, w: &Words, lang: Lang) {
    let _ = write!(
        h,
        "<section id=\"years\"><h2>{}</h2><table><thead><tr><th class=\"l\">{}</th>",
        w.years, w.indicator
    );
    for p in &report.years.points {
        let _ = write!(h, "<th>{}</th>", esc(&p.label));
    }
    h.push_str("</tr></thead><tbody>");
    for i in Indicator::ALL {
        let shown = report.years.points.iter().any(|p| {
            p.indicators
                .iter()
                .any(|r| r.indicator == i && (r.value.is_some() || r.target.is_some()))
        });
        if !shown {
            continue;
        }
        let _ = write!(h, "<tr><td>{}</td>", indicator_name(i, lang));
        for p in &report.years.points {
            h.push_str(&cell(
                p.indicators.iter().find(|r| r.indicator == i),
                w,
                lang,
            ));
        }
        h.push_str("</tr>");
    }
    h.push_str("</tbody></table></section>\n");
}

fn laggards_section(h: &mut String, report: &Report, w: &Words, lang: Lang) {
    let _ = write!(h, "<section id=\"laggards\"><h2>{}</h2>", w.laggards);
    if report.laggards.is_empty() {
        let _ = writeln!(h, "<p>{}</p></section>", w.laggards_none);
        return;
    }
    let _ = write!(
        h,
        "<table><thead><tr><th class=\"l\">{}</th><th class=\"l\">{}</th><th class=\"l\">{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>",
        w.sector, w.indicator, w.enterprise, w.value, w.basis, w.shortfall
    );
    for l in &report.laggards {
        let name = if l.name.is_empty() {
            esc(&l.enterprise)
        } else {
            format!("{} ({})", esc(&l.name), esc(&l.enterprise))
        };
        let mark = if l.reporting {
            String::new()
        } else {
            format!(
                " <span class=\"small bad\">({})</span>",
                w.not_reporting_mark
            )
        };
        let (n, d) = labels::basis_units(l.indicator, lang);
        let shortfall = match l.indicator {
            Indicator::CncUtilisation => format!("{:.1} h", l.shortfall / 3600.0),
            i if i.is_rate() => format!("{:.0} {}", l.shortfall, if n.is_empty() { d } else { n }),
            _ => format!("{:.3} {n}", l.shortfall),
        };
        let _ = write!(
            h,
            "<tr data-enterprise=\"{}\"><td>{}</td><td class=\"l\">{}</td><td class=\"l\">{name}{mark}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&l.enterprise),
            sector_name(l.sector, lang),
            indicator_name(l.indicator, lang),
            l.value
                .map_or(w.no_data.to_string(), |v| value_text(l.indicator, v)),
            esc(&labels::basis_text(
                l.indicator,
                l.numerator,
                l.denominator,
                lang
            )),
            esc(&shortfall)
        );
    }
    h.push_str("</tbody></table></section>\n");
}

fn figure(h: &mut String, kind: &str, indicator: Indicator, lang: Lang, svg: &str) {
    let _ = writeln!(
        h,
        "<figure id=\"{kind}-{}\"><figcaption>{}</figcaption>{svg}</figure>",
        indicator.as_str(),
        indicator_name(indicator, lang),
    );
}

fn card(h: &mut String, row: &IndicatorRow, w: &Words, lang: Lang) {
    let value = row
        .value
        .map_or(w.no_data.to_string(), |v| value_text(row.indicator, v));
    let target = row.target.as_ref().map_or(String::new(), |t| {
        format!(
            "{} {} · {} {}",
            w.target,
            target_text(row.indicator, t),
            w.gap,
            row.gap.map_or("–".into(), |g| labels::gap_text_in(
                row.indicator,
                g,
                lang
            ))
        )
    });
    let verdict = match row.meets {
        Some(true) => format!("<span class=\"ok\">✔ {}</span>", w.yes),
        Some(false) => format!("<span class=\"bad\">✘ {}</span>", w.no),
        None => String::new(),
    };
    let _ = write!(
        h,
        "<div class=\"card\" data-indicator=\"{}\"><div class=\"t\">{}</div><div class=\"v {}\">{value}</div><div class=\"t\">{target} {verdict}</div><div class=\"t\">{}</div></div>",
        row.indicator.as_str(),
        indicator_name(row.indicator, lang),
        class(row),
        esc(&basis_with_coverage(row, lang))
    );
}

fn summary_table(h: &mut String, rows: &[&Summary], w: &Words, lang: Lang, enterprises: bool) {
    let _ = write!(
        h,
        "<table><thead><tr><th class=\"l\">{}</th>",
        if enterprises { w.enterprise } else { w.sector }
    );
    if enterprises {
        let _ = write!(
            h,
            "<th class=\"l\">{}</th><th>{}</th>",
            w.sector, w.days_reported
        );
    } else {
        let _ = write!(h, "<th>{}</th>", w.reporting);
    }
    let _ = write!(h, "<th>{}</th>", w.machines);
    // The enterprise table adds its robots, with their basis (measured or declared).
    let columns: Vec<Indicator> = Indicator::MEASURED
        .into_iter()
        .chain(enterprises.then_some(Indicator::Robots))
        .collect();
    for &i in &columns {
        let _ = write!(h, "<th>{}</th>", indicator_name(i, lang));
    }
    let _ = write!(h, "<th class=\"l\">{}</th></tr></thead><tbody>", w.methods);
    for s in rows {
        let id = match (&s.enterprise, s.sector) {
            (Some(e), _) => format!(" data-enterprise=\"{}\"", esc(e)),
            (None, Some(sector)) => format!(" id=\"sector-{}\"", sector.as_str()),
            (None, None) => " id=\"county\"".to_string(),
        };
        let mark = if s.level == Level::Enterprise && !s.reporting {
            format!(
                " <span class=\"small bad\">({})</span>",
                w.not_reporting_mark
            )
        } else {
            String::new()
        };
        let _ = write!(
            h,
            "<tr{id}><td>{}{mark}</td>",
            esc(&summary_label(s, w, lang))
        );
        if enterprises {
            let _ = write!(
                h,
                "<td class=\"l\">{}</td><td>{} / {}</td>",
                s.sector.map_or("", |x| sector_name(x, lang)),
                s.days_reported,
                s.days
            );
        } else {
            let _ = write!(
                h,
                "<td>{} / {}</td>",
                s.enterprises_reporting, s.enterprises_registered
            );
        }
        let _ = write!(h, "<td>{:.1}</td>", s.machines);
        for row in columns.iter().filter_map(|&i| s.indicator(i)) {
            let value = row
                .value
                .map_or(w.no_data.to_string(), |v| value_text(row.indicator, v));
            let title = basis_with_coverage(row, lang);
            let target = row
                .target
                .as_ref()
                .map(|t| {
                    format!(
                        "<br><span class=\"small\">{}</span>",
                        target_text(row.indicator, t)
                    )
                })
                .unwrap_or_default();
            let _ = write!(
                h,
                "<td class=\"{}\" title=\"{}\">{value}{target}<br><span class=\"small\">{}</span></td>",
                class(row),
                esc(&title),
                esc(&title)
            );
        }
        let join = |set: &std::collections::BTreeSet<String>| {
            set.iter()
                .filter(|m| !m.is_empty())
                .map(|m| esc(m))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = write!(
            h,
            "<td class=\"l\">{} / {}</td></tr>",
            join(&s.va_methods),
            join(&s.el_methods)
        );
    }
    h.push_str("</tbody></table>\n");
}

const OK: &str = "#2e7d32";
const BAD: &str = "#c62828";
const NEUTRAL: &str = "#4f6d8a";

fn colour(row: Option<&IndicatorRow>) -> &'static str {
    match row.and_then(|r| r.meets) {
        Some(true) => OK,
        Some(false) => BAD,
        None => NEUTRAL,
    }
}

/// A scale's upper end: the largest value or target plus a tenth, and never zero.
fn scale_max<'a>(rows: impl Iterator<Item = &'a IndicatorRow>) -> f64 {
    let max = rows
        .flat_map(|r| [r.value, r.target.map(|t| t.value)])
        .flatten()
        .fold(0.0_f64, f64::max);
    if max > 0.0 { max * 1.1 } else { 1.0 }
}

/// One horizontal bar per sector (and the county), with a tick at each one's own target.
fn bar_chart(indicator: Indicator, bars: &[(String, Option<&IndicatorRow>)], w: &Words) -> String {
    let (label_w, plot_w, value_w, row_h) = (130.0, 440.0, 150.0, 26.0);
    let width = label_w + plot_w + value_w;
    let height = row_h * bars.len() as f64 + 24.0;
    let max = scale_max(bars.iter().filter_map(|(_, r)| *r));
    let x = |v: f64| label_w + (v / max).clamp(0.0, 1.0) * plot_w;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width} {height}\" width=\"100%\" role=\"img\">"
    );
    let _ = write!(
        s,
        "<line x1=\"{label_w}\" y1=\"0\" x2=\"{label_w}\" y2=\"{}\" stroke=\"#8c8f94\"/>",
        height - 24.0
    );
    for (i, (label, row)) in bars.iter().enumerate() {
        let y = i as f64 * row_h;
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            label_w - 6.0,
            y + 17.0,
            esc(label)
        );
        let value = row.and_then(|r| r.value);
        match value {
            Some(v) => {
                let _ = write!(
                    s,
                    "<rect x=\"{label_w}\" y=\"{}\" width=\"{:.1}\" height=\"{}\" fill=\"{}\"/>",
                    y + 5.0,
                    x(v) - label_w,
                    row_h - 10.0,
                    colour(*row)
                );
                let _ = write!(
                    s,
                    "<text x=\"{:.1}\" y=\"{}\">{}</text>",
                    x(v) + 4.0,
                    y + 17.0,
                    value_text(indicator, v)
                );
            }
            None => {
                let _ = write!(
                    s,
                    "<text x=\"{}\" y=\"{}\" fill=\"#787c82\">{}</text>",
                    label_w + 4.0,
                    y + 17.0,
                    w.no_data
                );
            }
        }
        if let Some(t) = row.and_then(|r| r.target) {
            let tx = x(t.value);
            let _ = write!(
                s,
                "<line x1=\"{tx:.1}\" y1=\"{}\" x2=\"{tx:.1}\" y2=\"{}\" stroke=\"#1d2327\" stroke-width=\"2\" stroke-dasharray=\"3 2\"><title>{} {}</title></line>",
                y + 1.0,
                y + row_h - 1.0,
                w.legend_target,
                target_text(indicator, &t)
            );
        }
    }
    let legend_y = height - 6.0;
    let _ = write!(
        s,
        "<line x1=\"{label_w}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#1d2327\" stroke-width=\"2\" stroke-dasharray=\"3 2\"/><text x=\"{}\" y=\"{legend_y}\">{}</text>",
        legend_y - 4.0,
        label_w + 14.0,
        legend_y - 4.0,
        label_w + 18.0,
        w.legend_target
    );
    s.push_str("</svg>");
    s
}

/// The trend's points from the first to the last on which an enterprise of the report's scope
/// was registered.
fn charted_points(points: &[TrendPoint]) -> &[TrendPoint] {
    let first = points.iter().position(|p| p.registered > 0);
    let last = points.iter().rposition(|p| p.registered > 0);
    match (first, last) {
        (Some(a), Some(b)) => &points[a..=b],
        _ => &[],
    }
}

/// The trend as a line (broken where a bucket has no value) with the target as a dashed line.
fn line_chart(
    indicator: Indicator,
    points: &[(String, Option<&IndicatorRow>)],
    w: &Words,
) -> String {
    let (left, right, top, bottom) = (64.0, 16.0, 12.0, 40.0);
    let (width, height) = (720.0, 220.0);
    let plot_w = width - left - right;
    let plot_h = height - top - bottom;
    let max = scale_max(points.iter().filter_map(|(_, r)| *r));
    let n = points.len().max(1);
    let x = |i: usize| {
        if n == 1 {
            left + plot_w / 2.0
        } else {
            left + plot_w * i as f64 / (n - 1) as f64
        }
    };
    let y = |v: f64| top + plot_h * (1.0 - (v / max).clamp(0.0, 1.0));
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width} {height}\" width=\"100%\" role=\"img\">"
    );
    for k in 0..=4 {
        let v = max * k as f64 / 4.0;
        let yy = y(v);
        let _ = write!(
            s,
            "<line x1=\"{left}\" y1=\"{yy:.1}\" x2=\"{}\" y2=\"{yy:.1}\" stroke=\"#e0e0e0\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            width - right,
            left - 6.0,
            yy + 4.0,
            value_text(indicator, v)
        );
    }
    // Labels: every point when few, otherwise about eight spread evenly.
    let step = n.div_ceil(8).max(1);
    for (i, (label, _)) in points.iter().enumerate() {
        if i % step == 0 || i + 1 == n {
            // The ends are anchored inwards so that their labels stay inside the chart.
            let anchor = match i {
                0 if n > 1 => "start",
                i if i + 1 == n && n > 1 => "end",
                _ => "middle",
            };
            let _ = write!(
                s,
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"{anchor}\">{}</text>",
                x(i),
                height - bottom + 18.0,
                esc(label)
            );
        }
    }
    let target = points.iter().find_map(|(_, r)| r.and_then(|r| r.target));
    if let Some(t) = target {
        let ty = y(t.value);
        let _ = write!(
            s,
            "<line x1=\"{left}\" y1=\"{ty:.1}\" x2=\"{}\" y2=\"{ty:.1}\" stroke=\"#1d2327\" stroke-width=\"1.5\" stroke-dasharray=\"6 4\"/><text x=\"{}\" y=\"{:.1}\">{} {}</text>",
            width - right,
            left + 6.0,
            ty - 4.0,
            w.legend_target,
            target_text(indicator, &t)
        );
    }
    let mut segment: Vec<String> = Vec::new();
    let flush = |segment: &mut Vec<String>, s: &mut String| {
        if segment.len() > 1 {
            let _ = write!(
                s,
                "<polyline fill=\"none\" stroke=\"{NEUTRAL}\" stroke-width=\"2\" points=\"{}\"/>",
                segment.join(" ")
            );
        }
        segment.clear();
    };
    for (i, (_, row)) in points.iter().enumerate() {
        match row.and_then(|r| r.value) {
            Some(v) => segment.push(format!("{:.1},{:.1}", x(i), y(v))),
            None => flush(&mut segment, &mut s),
        }
    }
    flush(&mut segment, &mut s);
    for (i, (label, row)) in points.iter().enumerate() {
        if let Some(v) = row.and_then(|r| r.value) {
            let fill = match row.and_then(|r| r.target) {
                Some(t) if t.is_met_by(v) => OK,
                Some(_) => BAD,
                None => NEUTRAL,
            };
            let _ = write!(
                s,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{fill}\"><title>{} {}</title></circle>",
                x(i),
                y(v),
                esc(label),
                value_text(indicator, v)
            );
        }
    }
    let _ = write!(
        s,
        "<line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#8c8f94\"/>",
        top + plot_h,
        width - right,
        top + plot_h
    );
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The labels of the trend chart of `indicator` in a rendered page.
    fn trend_labels(page: &str, indicator: Indicator) -> Vec<String> {
        let start = page
            .find(&format!("<figure id=\"trend-{}\"", indicator.as_str()))
            .expect("the trend figure");
        let figure = &page[start..start + page[start..].find("</figure>").unwrap()];
        figure
            .split("<text ")
            .skip(1)
            .filter_map(|t| {
                let text = &t[t.find('>')? + 1..t.find("</text>")?];
                text.starts_with("2022-").then(|| text.to_string())
            })
            .collect()
    }

    #[test]
    fn charts_start_at_the_join_date_and_end_at_the_leave_date() {
        let report = crate::county::aggregate::tests::joined_and_left_mid_period();
        for lang in [Lang::En, Lang::Zh] {
            let page = render(&report, lang);
            let labels = trend_labels(&page, Indicator::NetworkingRate);
            // Joined 4 March, left 8 March: five daily points, all labelled (fewer than 8).
            assert_eq!(
                labels,
                [
                    "2022-03-04",
                    "2022-03-05",
                    "2022-03-06",
                    "2022-03-07",
                    "2022-03-08"
                ],
                "{lang:?}"
            );
            // And no 0 % plotted: every point of the chart is the enterprise's 50 %.
            let start = page.find("<figure id=\"trend-networking_rate\"").unwrap();
            let figure = &page[start..start + page[start..].find("</figure>").unwrap()];
            assert_eq!(figure.matches("<circle").count(), 5);
            assert_eq!(figure.matches("50.0 %</title>").count(), 5, "{figure}");
        }
    }
}
