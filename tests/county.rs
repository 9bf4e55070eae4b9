//! `shopfloor county report` against a real InfluxDB 1.x holding twenty enterprises' day
//! windows, written as the agent writes them: `fleet` and `green` lines stamped with the local
//! day's start, some rewritten while the day was open, beside lines the report must ignore
//! (hour and shift windows, another county, days outside the period, an enterprise that is not
//! in the register).
//!
//! The expected figures are sums worked out by hand from the table below; the arithmetic is in
//! the comments.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use jiff::Timestamp;
use jiff::civil::{Date, date};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_shopfloor");
const DB: &str = "county";

/// One enterprise: its register and, per day of the two-day period, what it delivered.
/// `None` for a day it wrote nothing.
struct E {
    id: &'static str,
    sector: &'static str,
    total: u64,
    cnc: u64,
    days: [Option<Day>; 2],
}

#[derive(Clone, Copy)]
struct Day {
    networked: u64,
    running_h: f64,
    planned_h: f64,
    tce: f64,
    water_t: f64,
    /// `None`: value added unknown that day (no `value_added_10k_cny` field).
    va: Option<f64>,
}

const fn day(
    networked: u64,
    running_h: f64,
    planned_h: f64,
    tce: f64,
    water_t: f64,
    va: f64,
) -> Day {
    Day {
        networked,
        running_h,
        planned_h,
        tce,
        water_t,
        va: Some(va),
    }
}

const fn same(d: Day) -> [Option<Day>; 2] {
    [Some(d), Some(d)]
}

/// Twenty registered enterprises across the seven sectors; `o2` is silent.
#[rustfmt::skip]
fn enterprises() -> Vec<E> {
    let e = |id, sector, total, cnc, days| E { id, sector, total, cnc, days };
    //  day(networked, running h, planned h, tce, water t, value added 10k CNY)
    vec![
        e("d1", "doors", 10, 6, [Some(day(6, 30.0, 40.0, 0.40, 10.0, 1.0)), Some(day(7, 32.0, 40.0, 0.45, 12.0, 1.0))]),
        e("d2", "doors", 8, 4, [Some(day(4, 20.0, 32.0, 0.30, 8.0, 0.8)), Some(day(4, 24.0, 32.0, 0.30, 8.0, 0.7))]),
        e("d3", "doors", 12, 9, [Some(day(9, 60.0, 72.0, 0.50, 15.0, 1.2)), Some(day(8, 50.0, 72.0, 0.55, 15.0, 1.3))]),
        // Silent on the second day: its register still counts that day, nothing networked.
        e("d4", "doors", 5, 2, [Some(day(2, 8.0, 16.0, 0.10, 2.0, 0.3)), None]),
        e("c1", "cups", 10, 7, same(day(6, 40.0, 56.0, 0.6, 20.0, 1.5))),
        e("c2", "cups", 6, 3, same(day(3, 15.0, 24.0, 0.3, 9.0, 0.6))),
        e("c3", "cups", 4, 4, same(day(4, 25.0, 32.0, 0.2, 5.0, 0.5))),
        e("k1", "cookware", 20, 10, same(day(12, 60.0, 80.0, 1.0, 30.0, 2.0))),
        e("k2", "cookware", 10, 5, same(day(5, 30.0, 40.0, 0.5, 15.0, 1.0))),
        e("k3", "cookware", 10, 5, same(day(3, 10.0, 40.0, 0.6, 10.0, 1.0))),
        e("p1", "power_tools", 15, 12, same(day(12, 80.0, 96.0, 0.8, 10.0, 2.5))),
        e("p2", "power_tools", 10, 8, same(day(9, 50.0, 64.0, 0.5, 6.0, 1.5))),
        e("p3", "power_tools", 5, 5, same(day(5, 30.0, 40.0, 0.3, 4.0, 1.0))),
        e("l1", "leisure", 8, 4, same(day(4, 16.0, 32.0, 0.4, 12.0, 0.8))),
        e("l2", "leisure", 8, 4, same(day(6, 20.0, 32.0, 0.4, 12.0, 0.8))),
        e("l3", "leisure", 4, 2, same(day(2, 12.0, 16.0, 0.2, 6.0, 0.4))),
        e("s1", "castings", 20, 6, same(day(10, 30.0, 48.0, 3.0, 100.0, 2.0))),
        // Value added unknown on the second day: its energy is in the energy total only.
        e("s2", "castings", 10, 4, [
            Some(day(5, 20.0, 32.0, 1.5, 50.0, 1.0)),
            Some(Day { va: None, ..day(5, 20.0, 32.0, 1.5, 50.0, 0.0) }),
        ]),
        e("o1", "other", 6, 3, same(day(3, 12.0, 24.0, 0.3, 6.0, 0.6))),
        e("o2", "other", 7, 3, [None, None]),
    ]
}

fn fleet_line(county: &str, e: &E, window: &str, d: &Day, at: Timestamp) -> String {
    let rate = |n: f64, d: f64| {
        if d > 0.0 {
            format!(",x={}", n / d)
        } else {
            String::new()
        }
    };
    let networking = rate(d.networked as f64, e.total as f64).replace("x=", "networking_rate=");
    let cnc_rate = rate(e.cnc as f64, e.total as f64).replace("x=", "cnc_rate=");
    let utilisation = rate(d.running_h, d.planned_h).replace("x=", "cnc_utilisation=");
    format!(
        "fleet,county={county},sector={},enterprise={},window={window} machines_total={}i,machines_digital={}i,machines_cnc={}i,machines_networked={}i,machines_digital_networked={}i,cnc_running_s={:?},cnc_planned_s={:?}{networking}{cnc_rate}{utilisation} {}\n",
        e.sector,
        e.id,
        e.total,
        e.cnc,
        e.cnc,
        d.networked,
        d.networked.min(e.cnc),
        d.running_h * 3600.0,
        d.planned_h * 3600.0,
        at.as_nanosecond()
    )
}

fn green_line(county: &str, e: &E, d: &Day, at: Timestamp) -> String {
    let kwh = d.tce / 0.000_122_9;
    let mut line = format!(
        "green,county={county},sector={},enterprise={},va_method=parts,el_method=calorific,window=1d energy_tce={:?},electricity_kwh={kwh:?},water_t={:?},electricity_kgce_per_kwh=0.1229",
        e.sector, e.id, d.tce, d.water_t
    );
    if let Some(va) = d.va {
        let _ = write!(
            line,
            ",value_added_10k_cny={va:?},tce_per_10k_cny={:?},water_t_per_10k_cny={:?}",
            d.tce / va,
            d.water_t / va
        );
    }
    let _ = writeln!(line, " {}", at.as_nanosecond());
    line
}

fn day_start(d: Date) -> Timestamp {
    d.to_zoned_datetime(jiff::tz::TimeZone::get("Asia/Shanghai").unwrap())
        .unwrap()
        .timestamp()
}

/// Everything the store holds: the first batch is what the agents wrote while the days were
/// open (smaller totals), the second the final rewrites at the same timestamps, plus lines the
/// report must not count.
fn batches() -> (String, String) {
    let days = [date(2026, 11, 2), date(2026, 11, 3)];
    let mut early = String::new();
    let mut last = String::new();
    for e in enterprises() {
        for (i, d) in e.days.iter().enumerate() {
            let Some(d) = d else { continue };
            let at = day_start(days[i]);
            // While the day was open: half the networked machines and time, half the energy.
            let partial = Day {
                networked: d.networked / 2,
                running_h: d.running_h / 2.0,
                planned_h: d.planned_h / 2.0,
                tce: d.tce / 2.0,
                water_t: d.water_t / 2.0,
                va: d.va.map(|v| v / 2.0),
            };
            early.push_str(&fleet_line("wuyi", &e, "1d", &partial, at));
            early.push_str(&green_line("wuyi", &e, &partial, at));
            last.push_str(&fleet_line("wuyi", &e, "1d", d, at));
            last.push_str(&green_line("wuyi", &e, d, at));
            // An hour window at the same timestamp: not a day window.
            last.push_str(&fleet_line("wuyi", &e, "1h", d, at));
        }
    }
    let all = enterprises();
    let d1 = &all[0];
    let busy = day(10, 40.0, 40.0, 5.0, 50.0, 1.0);
    // Days just outside the period, another county, and an enterprise not in the register.
    last.push_str(&fleet_line(
        "wuyi",
        d1,
        "1d",
        &busy,
        day_start(date(2026, 11, 1)),
    ));
    last.push_str(&fleet_line(
        "wuyi",
        d1,
        "1d",
        &busy,
        day_start(date(2026, 11, 4)),
    ));
    last.push_str(&green_line("wuyi", d1, &busy, day_start(date(2026, 11, 4))));
    last.push_str(&fleet_line(
        "elsewhere",
        d1,
        "1d",
        &busy,
        day_start(days[0]),
    ));
    let stranger = E {
        id: "x-unknown",
        sector: "doors",
        total: 100,
        cnc: 100,
        days: [None, None],
    };
    last.push_str(&fleet_line(
        "wuyi",
        &stranger,
        "1d",
        &busy,
        day_start(days[0]),
    ));
    (early, last)
}

fn registry_toml() -> String {
    let mut text = String::new();
    for e in enterprises() {
        let _ = writeln!(
            text,
            "[[enterprise]]\nid = \"{}\"\nname = \"Enterprise {}\"\nsector = \"{}\"\n",
            e.id, e.id, e.sector
        );
    }
    text
}

/// The report of 2 and 3 November 2026 with `extra` arguments: its standard output.
fn report(url: &str, registry: &Path, extra: &[&str]) -> String {
    run_report(url, registry, ("2026-11-02", "2026-11-03"), extra)
}

/// (numerator, denominator, meets) of one indicator of a summary in the JSON report.
fn figures(summary: &Value, indicator: &str) -> (f64, f64, Option<bool>) {
    let row = summary["indicators"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["indicator"] == indicator))
        .unwrap_or_else(|| panic!("no {indicator} in {summary}"));
    (
        row["numerator"].as_f64().unwrap(),
        row["denominator"].as_f64().unwrap(),
        row["meets"].as_bool(),
    )
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9 * b.abs().max(1.0)
}

/// Seconds per hour.
const H: f64 = 3600.0;

/// Per sector over the two days, worked out by hand from [`enterprises`]: (networked /
/// machine-days, CNC / machine-days, running / planned time, tce / value added, water / value
/// added).
#[rustfmt::skip]
fn expected_sectors() -> [(&'static str, [(f64, f64); 5]); 7] {
    [
        // doors: machine-days d1 10×2 + d2 8×2 + d3 12×2 + d4 5×2 (its silent day filled)
        // = 20 + 16 + 24 + 10 = 70; networked 13 + 8 + 17 + (2 + 0) = 40; CNC 12 + 8 + 18 + 4
        // = 42; running 62 + 44 + 110 + 8 = 224 h of 80 + 64 + 144 + 16 = 304 h; energy
        // 0.85 + 0.60 + 1.05 + 0.10 = 2.6 tce on value added 2.0 + 1.5 + 2.5 + 0.3 = 6.3;
        // water 22 + 16 + 30 + 2 = 70 t.
        ("doors", [(40.0, 70.0), (42.0, 70.0), (224.0 * H, 304.0 * H), (2.6, 6.3), (70.0, 6.3)]),
        // cups per day: machines 10 + 6 + 4 = 20, networked 6 + 3 + 4 = 13, CNC 7 + 3 + 4 =
        // 14, running 40 + 15 + 25 = 80 h of 56 + 24 + 32 = 112 h, 0.6 + 0.3 + 0.2 = 1.1 tce,
        // 20 + 9 + 5 = 34 t, value added 1.5 + 0.6 + 0.5 = 2.6; twice.
        ("cups", [(26.0, 40.0), (28.0, 40.0), (160.0 * H, 224.0 * H), (2.2, 5.2), (68.0, 5.2)]),
        // cookware per day: 20 + 10 + 10 = 40, 12 + 5 + 3 = 20, 10 + 5 + 5 = 20, 100 h of
        // 160 h, 2.1 tce, 55 t, 4.0; twice.
        ("cookware", [(40.0, 80.0), (40.0, 80.0), (200.0 * H, 320.0 * H), (4.2, 8.0), (110.0, 8.0)]),
        // power tools per day: 30, 26, 25, 160 h of 200 h, 1.6 tce, 20 t, 5.0; twice.
        ("power_tools", [(52.0, 60.0), (50.0, 60.0), (320.0 * H, 400.0 * H), (3.2, 10.0), (40.0, 10.0)]),
        // leisure per day: 20, 12, 10, 48 h of 80 h, 1.0 tce, 30 t, 2.0; twice.
        ("leisure", [(24.0, 40.0), (20.0, 40.0), (96.0 * H, 160.0 * H), (2.0, 4.0), (60.0, 4.0)]),
        // castings per day: 30, 15, 10, 50 h of 80 h; the intensities leave out s2's second
        // day (no value added): tce 3.0 × 2 + 1.5 = 7.5, water 100 × 2 + 50 = 250 on value
        // added 2.0 × 2 + 1.0 = 5.0.
        ("castings", [(30.0, 60.0), (20.0, 60.0), (100.0 * H, 160.0 * H), (7.5, 5.0), (250.0, 5.0)]),
        // other: o1 alone (o2 is silent): 6, 3, 3, 12 h of 24 h, 0.3 tce, 6 t, 0.6; twice.
        ("other", [(6.0, 12.0), (6.0, 12.0), (24.0 * H, 48.0 * H), (0.6, 1.2), (12.0, 1.2)]),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn county_report_sums_every_enterprise_against_the_targets() {
    let influx = common::Influx1::start().await;
    influx.create_db(DB).await;
    let (early, last) = batches();
    influx.write_lines(DB, &early).await;
    influx.write_lines(DB, &last).await;
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("enterprises.toml");
    std::fs::write(&registry, registry_toml()).unwrap();
    let url = influx.url();

    let out = report(&url, &registry, &["--format", "json"]);
    let json: Value = serde_json::from_str(&out).expect("JSON report");
    let sectors: BTreeMap<&str, &Value> = json["sectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["sector"].as_str().unwrap(), s))
        .collect();
    assert_eq!(sectors.len(), 7);
    let names = [
        "networking_rate",
        "cnc_rate",
        "cnc_utilisation",
        "tce_per_10k_cny",
        "water_t_per_10k_cny",
    ];
    for (sector, rows) in expected_sectors() {
        for (name, (n, d)) in names.iter().zip(rows) {
            let (got_n, got_d, _) = figures(sectors[sector], name);
            assert!(
                close(got_n, n) && close(got_d, d),
                "{sector} {name}: got {got_n} / {got_d}, worked out {n} / {d}"
            );
        }
    }

    let county = &json["county_total"];
    // The county: the sectors' sums added. Machine-days 70 + 40 + 80 + 60 + 40 + 60 + 12 =
    // 362; networked 40 + 26 + 40 + 52 + 24 + 30 + 6 = 218 → 218 / 362 = 60.2 % ≥ 55 %.
    assert_eq!(
        figures(county, "networking_rate"),
        (218.0, 362.0, Some(true))
    );
    // CNC 42 + 28 + 40 + 50 + 20 + 20 + 6 = 206 → 206 / 362 = 56.9 % < 65 %.
    assert_eq!(figures(county, "cnc_rate"), (206.0, 362.0, Some(false)));
    // Running 224 + 160 + 200 + 320 + 96 + 100 + 24 = 1124 h of 304 + 224 + 320 + 400 + 160
    // + 160 + 48 = 1616 h; no target.
    let (n, d, meets) = figures(county, "cnc_utilisation");
    assert!(close(n, 1124.0 * H) && close(d, 1616.0 * H) && meets.is_none());
    // Energy 2.6 + 2.2 + 4.2 + 3.2 + 2.0 + 7.5 + 0.6 = 22.3 tce on 6.3 + 5.2 + 8.0 + 10 + 4.0
    // + 5.0 + 1.2 = 39.7 → 0.5617 > 0.43 (the 2022 target, still in force in 2026).
    let (n, d, meets) = figures(county, "tce_per_10k_cny");
    assert!(close(n, 22.3) && close(d, 39.7), "{n} / {d}");
    assert_eq!(meets, Some(false));
    // Water 70 + 68 + 110 + 40 + 60 + 250 + 12 = 610 t → 15.37 ≤ 26.76.
    let (n, d, meets) = figures(county, "water_t_per_10k_cny");
    assert!(close(n, 610.0) && close(d, 39.7), "{n} / {d}");
    assert_eq!(meets, Some(true));
    // Energy on every green day, s2's second included: 22.3 + 1.5 = 23.8 tce.
    assert!(close(
        county["green"]["all_days"]["energy_tce"].as_f64().unwrap(),
        23.8
    ));
    assert_eq!(county["enterprises_registered"], 20);
    assert_eq!(county["enterprises_reporting"], 19);

    // The silent enterprise, and the one that is not in the register.
    let silent: Vec<&str> = json["not_reporting"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(silent, vec!["o2"]);
    assert_eq!(json["unregistered"][0]["enterprise"], "x-unknown");

    // One enterprise: d4 reported one day of two; c3 was rewritten, the final write counts.
    let enterprise = |id: &str| {
        json["enterprises"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["enterprise"] == id)
            .unwrap_or_else(|| panic!("{id} in the report"))
            .clone()
    };
    let d4 = enterprise("d4");
    assert_eq!(d4["days_reported"], 1);
    assert_eq!(figures(&d4, "networking_rate"), (2.0, 10.0, Some(false)));
    assert_eq!(
        figures(&enterprise("c3"), "networking_rate"),
        (8.0, 8.0, Some(true))
    );

    // The HTML report: one file, every sector, the silent enterprise, nothing from the network.
    let html_path = dir.path().join("report.html");
    report(
        &url,
        &registry,
        &["--format", "html", "-o", html_path.to_str().unwrap()],
    );
    let html = std::fs::read_to_string(&html_path).unwrap();
    for (sector, zh) in [
        ("doors", "门业"),
        ("cups", "杯业"),
        ("cookware", "炊具"),
        ("power_tools", "电动工具"),
        ("leisure", "休闲器具"),
        ("castings", "铸造"),
        ("other", "其他"),
    ] {
        assert!(
            html.contains(&format!("id=\"sector-{sector}\"")),
            "{sector} row"
        );
        assert!(html.contains(zh), "{zh} in the Chinese report");
    }
    assert!(html.contains("<svg") && html.contains("未报送"));
    assert!(html.contains("data-enterprise=\"o2\""));
    assert!(!html.contains("<script") && !html.contains("src=") && !html.contains("<link"));
    let english = report(&url, &registry, &["--format", "html", "--lang", "en"]);
    for name in [
        "Doors",
        "Cups",
        "Cookware",
        "Power tools",
        "Leisure products",
        "Castings",
        "Other",
    ] {
        assert!(english.contains(name), "{name} in the English report");
    }
    assert!(english.contains("did not report"));

    // One sector as CSV: doors' networking rate, 40 / 70 = 57.1 % ≥ 55 %: met.
    let csv = report(&url, &registry, &["--format", "csv", "--sector", "doors"]);
    let row = csv
        .lines()
        .find(|l| l.starts_with("sector,doors,,,reporting,networking_rate,"))
        .unwrap_or_else(|| panic!("doors networking row in\n{csv}"));
    let cells: Vec<&str> = row.split(',').collect();
    // Rounded to the rate's five decimals: 40 / 70 = 0.571428… → 0.57143.
    assert_eq!(cells[6], "0.57143");
    assert!(csv.starts_with('\u{feff}'), "a BOM for Excel");
    assert_eq!(cells[11], "true");
    assert!(!csv.contains(",cups,"), "limited to doors:\n{csv}");

    // The terminal table names the silent enterprise.
    let table = report(&url, &registry, &[]);
    assert!(
        table.contains("NOT REPORTING (1):\n  o2 Enterprise o2 (other)"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_refuses_says_what_to_check() {
    let influx = common::Influx1::start_with_auth("admin", "secret").await;
    influx.create_db(DB).await;
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("enterprises.toml");
    std::fs::write(&registry, registry_toml()).unwrap();
    let password = dir.path().join("password");
    std::fs::write(&password, "wrong\n").unwrap();
    let targets = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/targets.toml");
    let run = |password_file: &Path| {
        Command::new(BIN)
            .args([
                "county",
                "report",
                "--from",
                "2026-11-02",
                "--to",
                "2026-11-03",
                "--db",
                DB,
            ])
            .args([
                "--url",
                &influx.url(),
                "--username",
                "admin",
                "--password-file",
            ])
            .arg(password_file)
            .arg("--targets")
            .arg(&targets)
            .arg("--enterprises")
            .arg(&registry)
            .output()
            .expect("run shopfloor county report")
    };
    let out = run(&password);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refused the query (401)") && stderr.contains("--password-file"),
        "{stderr}"
    );
    // The right password: the report runs, and with nothing written every enterprise is
    // listed as not reporting.
    std::fs::write(&password, "secret\n").unwrap();
    let out = run(&password);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("NOT REPORTING (20):"), "{table}");
}

/// Runs `shopfloor county report` over `from`..`to` against `url`'s `county` database with
/// the shipped targets and `registry`, plus `args`; its standard output.
fn run_report(url: &str, registry: &Path, (from, to): (&str, &str), args: &[&str]) -> String {
    let targets = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/targets.toml");
    let out = Command::new(BIN)
        .args(["county", "report", "--from", from, "--to", to])
        .args(["--db", DB, "--url", url])
        .arg("--targets")
        .arg(&targets)
        .arg("--enterprises")
        .arg(registry)
        .args(args)
        .output()
        .expect("run shopfloor county report");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The element of the JSON array `list` whose `key` is `value`.
fn find_in(list: &Value, key: &str, value: &str) -> Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|x| x[key] == value)
        .unwrap_or_else(|| panic!("no {key} {value} in {list}"))
        .clone()
}

/// Issue 15's county, through a real store: d1 (doors) reports every day of 1–10 March 2022;
/// d2 (doors) joined on 7 March and wrote one line on 5 March, before it joined; c1 (cups)
/// never reports and declares 20 machines, 12 digital, 14 CNC; k1 (cookware) has no water
/// meter, so its `green` lines carry no `water_t`. Sectors of uneven size: doors 2, cups 1,
/// cookware 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_is_not_zero_and_denominators_are_honest() {
    let influx = common::Influx1::start().await;
    influx.create_db(DB).await;
    let mut lines = String::new();
    let fleet = |e: &str, sector: &str, total: u64, cnc: u64, networked: u64, at: Timestamp| {
        format!(
            "fleet,county=wuyi,sector={sector},enterprise={e},window=1d machines_total={total}i,machines_digital={cnc}i,machines_cnc={cnc}i,machines_networked={networked}i,machines_digital_networked={networked}i,cnc_running_s=0,cnc_planned_s=0 {}\n",
            at.as_nanosecond()
        )
    };
    let green = |e: &str, sector: &str, tce: f64, water: Option<f64>, va: f64, at: Timestamp| {
        let water = water.map(|w| format!(",water_t={w:?}")).unwrap_or_default();
        format!(
            "green,county=wuyi,sector={sector},enterprise={e},va_method=parts,el_method=calorific,window=1d energy_tce={tce:?},electricity_kwh={:?}{water},value_added_10k_cny={va:?} {}\n",
            tce / 0.000_122_9,
            at.as_nanosecond()
        )
    };
    for day in 1..=10 {
        let at = day_start(date(2022, 3, day));
        lines.push_str(&fleet("d1", "doors", 10, 7, 6, at));
        // d1 alone has an outlet logger: 3.5 t of wastewater a day, written as the agent
        // writes it (with its basis).
        lines.push_str(&green("d1", "doors", 0.4, Some(20.0), 1.0, at).replace(
            ",value_added",
            ",wastewater_t=3.5,wastewater_basis=\"daily\",wastewater_t_per_10k_cny=3.5,value_added",
        ));
        lines.push_str(&fleet("k1", "cookware", 4, 4, 4, at));
        lines.push_str(&green("k1", "cookware", 0.1, None, 0.5, at));
        if day == 5 || day >= 7 {
            lines.push_str(&fleet("d2", "doors", 5, 2, 4, at));
            lines.push_str(&green("d2", "doors", 0.2, Some(10.0), 0.5, at));
        }
    }
    influx.write_lines(DB, &lines).await;
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("enterprises.toml");
    std::fs::write(
        &registry,
        "[[enterprise]]\nid = \"d1\"\nsector = \"doors\"\n\n[[enterprise]]\nid = \"d2\"\nsector = \"doors\"\njoined = 2022-03-07\n\n[[enterprise]]\nid = \"c1\"\nsector = \"cups\"\nmachines_total = 20\nmachines_digital = 12\nmachines_cnc = 14\n\n[[enterprise]]\nid = \"k1\"\nsector = \"cookware\"\n",
    )
    .unwrap();
    let targets = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/targets.toml");
    let run = |format: &str| {
        run_report(
            &influx.url(),
            &registry,
            ("2022-03-01", "2022-03-10"),
            &["--format", format],
        )
    };
    let json: Value = serde_json::from_str(&run("json")).expect("JSON report");
    let enterprise = |id: &str| {
        json["enterprises"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["enterprise"] == id)
            .unwrap_or_else(|| panic!("{id} in the report"))
            .clone()
    };
    let row = |summary: &Value, indicator: &str| {
        summary["indicators"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["indicator"] == indicator)
            .unwrap()
            .clone()
    };

    // d2 covers its registered days only: 7–10 March, 4 × 5 = 20 machine-days, 4 × 4 = 16
    // networked → 80 % (over all ten days it would read 16 / 50 = 32 %, below 55 %).
    let d2 = enterprise("d2");
    assert_eq!(d2["days"], 4);
    assert_eq!(figures(&d2, "networking_rate"), (16.0, 20.0, Some(true)));
    // c1 never reported: its declared 20 machines on each of the 10 days, none networked.
    let c1 = enterprise("c1");
    assert_eq!(c1["reporting"], false);
    assert_eq!(figures(&c1, "networking_rate"), (0.0, 200.0, Some(false)));
    assert_eq!(row(&c1, "networking_rate")["declared_share"], 1.0);
    // k1 has no water meter: its water intensity is null with no verdict, not 0 and "met".
    let k1 = enterprise("k1");
    let water = row(&k1, "water_t_per_10k_cny");
    assert!(
        water["value"].is_null() && water["meets"].is_null(),
        "{water}"
    );
    assert!(
        water["numerator"].is_null(),
        "no 0 for what was not measured: {water}"
    );

    let county = &json["county_total"];
    // Networked d1 10 × 6 = 60 + d2 16 + c1 0 + k1 10 × 4 = 40 = 116 of machine-days d1 100
    // + d2 20 + c1 200 + k1 40 = 360 → 32.2 % < 55 %; without c1 it would be 116 / 160.
    assert_eq!(
        figures(county, "networking_rate"),
        (116.0, 360.0, Some(false))
    );
    let net = row(county, "networking_rate");
    assert_eq!(net["enterprises"], 4);
    // 200 of 360 machine-days declared: 0.555556 (rounded to the rate's precision).
    assert_eq!(net["declared_share"], 0.55556);
    // Doors = d1 + d2: 76 / 120 = 63.3 %; cups = c1 alone: 0 / 200.
    let sector = |s: &str| {
        json["sectors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["sector"] == s)
            .unwrap()
            .clone()
    };
    assert_eq!(
        figures(&sector("doors"), "networking_rate"),
        (76.0, 120.0, Some(true))
    );
    assert_eq!(
        figures(&sector("cups"), "networking_rate"),
        (0.0, 200.0, Some(false))
    );
    // Water: d1 200 t + d2 40 t over d1 10 + d2 2 = 12 10k CNY = 20.0, k1 left out of both.
    let water = row(county, "water_t_per_10k_cny");
    assert_eq!(
        (water["numerator"].as_f64(), water["denominator"].as_f64()),
        (Some(240.0), Some(12.0))
    );
    assert_eq!(water["enterprises"], 2);
    assert!(row(&sector("cookware"), "water_t_per_10k_cny")["value"].is_null());
    // Energy (4.0 + 0.8 + 1.0) / (10 + 2 + 5) = 5.8 / 17 = 0.341176… → 0.3412 in JSON.
    assert_eq!(row(county, "tce_per_10k_cny")["value"], 0.3412);
    // Wastewater: d1's 10 × 3.5 t = 35 t over its 10 × 1.0 = 10 (10k CNY) = 3.5 t per 10k CNY,
    // within 2022's 3.8 (Table 1: 4.9 in 2017 falling to 3.8); d2 and k1 have no logger and
    // are in neither sum.
    let ww = row(county, "wastewater_t_per_10k_cny");
    assert_eq!(
        figures(county, "wastewater_t_per_10k_cny"),
        (35.0, 10.0, Some(true))
    );
    assert_eq!(
        (ww["value"].as_f64(), ww["enterprises"].as_u64()),
        (Some(3.5), Some(1))
    );
    assert!(row(&enterprise("k1"), "wastewater_t_per_10k_cny")["value"].is_null());
    // The per-year table: 2022 against 2022's targets.
    assert_eq!(json["years"]["points"][0]["label"], "2022");

    // CSV: k1's water row has empty value, numerator, denominator and verdict.
    let csv = run("csv");
    assert!(csv.starts_with('\u{feff}'));
    let k1_water = csv
        .lines()
        .find(|l| l.starts_with("enterprise,cookware,k1,,reporting,water_t_per_10k_cny,"))
        .unwrap_or_else(|| panic!("k1 water row in\n{csv}"));
    let cells: Vec<&str> = k1_water.split(',').collect();
    assert_eq!(
        (cells[6], cells[11], cells[12], cells[13]),
        ("", "", "", ""),
        "{k1_water}"
    );
    assert!(csv.contains("enterprise,cups,c1,,not_reporting,networking_rate,0,"));
    // The table says "no data", never 0.00 and a verdict.
    let table = run("table");
    assert!(
        table
            .lines()
            .any(|l| l.contains("Water per value added") && l.contains("no data")),
        "{table}"
    );

    // Another county asked for: nothing matches, and the report says what the store holds.
    let out = Command::new(BIN)
        .args([
            "county",
            "report",
            "--from",
            "2022-03-01",
            "--to",
            "2022-03-10",
        ])
        .args(["--db", DB, "--url", &influx.url(), "--county", "yongkang"])
        .arg("--targets")
        .arg(&targets)
        .arg("--enterprises")
        .arg(&registry)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("NOTHING MATCHED") && table.contains("counties: wuyi"),
        "{table}"
    );
}

/// Robots are counted from the agent's machine register where it reports them (`fleet`
/// field `machines_robot`, measured) and from the enterprise register otherwise (declared),
/// with the basis shown in JSON, CSV, the table and both HTML languages. Over 30 December 2021
/// to 2 January 2022 in cups (2022 target: ≥ 300 robots in service):
/// - r1's agent reports 110 robots in 2021 and 130 from 1 January; it declared 100 (stale);
/// - r2's agent reports no robots (none of kind `robot`); it declared 90;
/// - r3 sends nothing and declared 50;
/// - r4's agent reports no robots and nothing is declared: left out, never 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn robots_are_measured_where_agents_report_them_and_declared_otherwise() {
    let influx = common::Influx1::start().await;
    influx.create_db(DB).await;
    let mut lines = String::new();
    let days = [
        date(2021, 12, 30),
        date(2021, 12, 31),
        date(2022, 1, 1),
        date(2022, 1, 2),
    ];
    for d in days {
        let at = day_start(d).as_nanosecond();
        let robots = if d.year() == 2021 { 110 } else { 130 };
        for (e, extra) in [
            ("r1", format!(",machines_robot={robots}i")),
            ("r2", String::new()),
            ("r4", String::new()),
        ] {
            let _ = writeln!(
                lines,
                "fleet,county=wuyi,sector=cups,enterprise={e},window=1d machines_total=10i,machines_digital=5i,machines_cnc=5i,machines_networked=5i,machines_digital_networked=5i,cnc_running_s=0,cnc_planned_s=0{extra} {at}"
            );
        }
    }
    influx.write_lines(DB, &lines).await;
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("enterprises.toml");
    std::fs::write(
        &registry,
        "[[enterprise]]\nid = \"r1\"\nsector = \"cups\"\nrobots = 100\n\n\
         [[enterprise]]\nid = \"r2\"\nsector = \"cups\"\nrobots = 90\n\n\
         [[enterprise]]\nid = \"r3\"\nsector = \"cups\"\nmachines_total = 10\nrobots = 50\n\n\
         [[enterprise]]\nid = \"r4\"\nsector = \"cups\"\n",
    )
    .unwrap();
    let run =
        |args: &[&str]| run_report(&influx.url(), &registry, ("2021-12-30", "2022-01-02"), args);
    let json: Value = serde_json::from_str(&run(&["--format", "json"])).expect("JSON report");
    let robots = |summary: &Value| find_in(&summary["indicators"], "indicator", "robots");
    let enterprise = |id: &str| find_in(&json["enterprises"], "enterprise", id);
    // r1: the last reported day's 130, measured (not the declared 100).
    let r1 = robots(&enterprise("r1"));
    assert_eq!(
        (r1["value"].as_f64(), r1["declared_share"].as_f64()),
        (Some(130.0), Some(0.0))
    );
    // r2 and r3: declared.
    for (id, n) in [("r2", 90.0), ("r3", 50.0)] {
        let r = robots(&enterprise(id));
        assert_eq!(
            (r["value"].as_f64(), r["declared_share"].as_f64()),
            (Some(n), Some(1.0)),
            "{id}"
        );
    }
    // r4: nothing reported, nothing declared: no data, not 0.
    let r4 = robots(&enterprise("r4"));
    assert!(r4["value"].is_null() && r4["meets"].is_null(), "{r4}");
    // Cups: 130 + 90 + 50 = 270 over 3 enterprises (1 measured, 2 declared: share 2 / 3),
    // below 300 by 30.
    let cups = find_in(&json["sectors"], "sector", "cups");
    assert_eq!(figures(&cups, "robots"), (270.0, 3.0, Some(false)));
    let row = robots(&cups);
    assert_eq!(row["declared_share"], 0.66667);
    assert_eq!(row["gap"], -30.0);
    // Per year: 2021 counts r1's 2021 figure, 110 + 90 + 50 = 250; 2022 its 130: 270.
    let year =
        |label: &str| robots(&find_in(&json["years"]["points"], "label", label))["value"].as_f64();
    assert_eq!((year("2021"), year("2022")), (Some(250.0), Some(270.0)));

    // The basis in every format.
    let table = run(&[]);
    assert!(
        table
            .lines()
            .any(|l| l.contains("Industrial robots in service")
                && l.contains("270 robots / 3 enterprises · 1 measured, 2 declared")),
        "{table}"
    );
    let csv = run(&["--format", "csv"]);
    let basis = |prefix: &str| {
        let line = csv
            .lines()
            .find(|l| l.starts_with(prefix) && l.contains(",robots,"))
            .unwrap_or_else(|| panic!("{prefix} robots in\n{csv}"));
        line.rsplit(',').next().unwrap().to_string()
    };
    assert_eq!(basis("sector,cups,"), "measured+declared");
    assert_eq!(basis("enterprise,cups,r1,"), "measured");
    assert_eq!(basis("enterprise,cups,r2,"), "declared");
    let en = run(&["--format", "html", "--lang", "en"]);
    assert!(en.contains("1 measured, 2 declared"), "English HTML");
    let zh = run(&["--format", "html", "--lang", "zh"]);
    assert!(zh.contains("实测 1 家，申报 2 家"), "Chinese HTML");
    assert!(zh.contains("130 台 / 1 家企业 · 实测"), "Chinese HTML, r1");
}

/// `county init` writes the two files to start from, `county check` finds them through the
/// ingest config and says which files it read, and `init` does not overwrite without --force.
#[test]
fn init_writes_the_files_and_commands_say_which_they_read() {
    let dir = tempfile::tempdir().unwrap();
    let county = dir.path().join("county");
    let run = |args: &[&str]| {
        Command::new(BIN)
            .arg("county")
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("run shopfloor county")
    };
    let out = run(&["init", "--dir", county.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let targets = std::fs::read_to_string(county.join("targets.toml")).unwrap();
    assert!(targets.contains("county = \"wuyi\"") && targets.contains("seed 397"));
    assert!(county.join("enterprises.toml").exists());
    // A second init refuses to replace them.
    let out = run(&["init", "--dir", county.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));

    // The ingest config names the files, relative to itself.
    let sample = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/county-ingest.toml"),
    )
    .unwrap();
    let ingest = sample.replacen(
        "[ingest]\n",
        "[ingest]\ntargets = \"targets.toml\"\nenterprises = \"enterprises.toml\"\n",
        1,
    );
    std::fs::write(county.join("county-ingest.toml"), ingest).unwrap();
    let config = county.join("county-ingest.toml");
    let out = run(&["check", "--ingest-config", config.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "targets: {} (named in {})",
            county.join("targets.toml").display(),
            config.display()
        )),
        "{stderr}"
    );
    assert!(stdout.contains("ok: county wuyi"), "{stdout}");
    assert!(stdout.contains("ok: 7 enterprises"), "{stdout}");

    // Nothing given and nothing at the default places: the error says where it looked.
    let out = run(&["check"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("config/targets.toml") && stderr.contains("county init"),
        "{stderr}"
    );
}
