//! The machine board and the county report in a real browser: headless Chromium loads the
//! board during `shopfloor demo`, every simulated machine's tile renders, and a state change
//! shows up; it renders the county's HTML report in Chinese and English with every section of
//! the programme. The tests leave screenshots in `target/board-screenshot.png` and
//! `target/county-report-{zh,en}.png`.
//!
//! Chromium comes from Debian (`scripts/test` installs the `chromium` package).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_shopfloor");

fn chromium() -> PathBuf {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "Chromium is not installed: run scripts/test, which installs Debian's `chromium`"
            )
        })
}

/// Runs headless Chromium on `url` with the flags this machine needs (no sandbox as root, no
/// background traffic to the closed network), letting the page's script run for a while.
fn chromium_run(profile: &Path, url: &str, extra: &[&str]) -> std::process::Output {
    Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1400,900",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("run chromium")
}

/// The `data-state` of each tile in the rendered page, by machine.
fn tiles(dom: &str) -> Vec<(String, String)> {
    dom.split("data-machine=\"")
        .skip(1)
        .filter_map(|rest| {
            let (machine, rest) = rest.split_once('"')?;
            let state = rest.split("data-state=\"").nth(1)?.split('"').next()?;
            Some((machine.to_string(), state.to_string()))
        })
        .collect()
}

struct Demo(std::process::Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_board_renders_every_machine_and_shows_state_changes() {
    let data = tempfile::tempdir().expect("temp dir");
    let mut demo = Demo(
        Command::new(BIN)
            .args(["demo", "--data-dir"])
            .arg(data.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start shopfloor demo"),
    );
    let stdout = demo.0.stdout.take().expect("piped stdout");
    let mut first = String::new();
    BufReader::new(stdout)
        .read_line(&mut first)
        .expect("demo prints its addresses");
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .map(|w| w.trim_end_matches(','))
        .unwrap_or_else(|| panic!("no board address in {first:?}"))
        .to_string();

    let profile = tempfile::tempdir().expect("profile dir");
    let started = Instant::now();
    let mut before: Vec<(String, String)> = Vec::new();
    let mut changed = None;
    while started.elapsed() < Duration::from_secs(60) && changed.is_none() {
        let out = chromium_run(profile.path(), &url, &["--dump-dom"]);
        let now = tiles(&String::from_utf8_lossy(&out.stdout));
        if before.is_empty() {
            before = now;
            continue;
        }
        changed = now
            .iter()
            .find(|(m, s)| {
                before
                    .iter()
                    .any(|(bm, bs)| bm == m && bs != s && bs != "offline")
            })
            .cloned();
        if changed.is_none() {
            before = now;
        }
    }
    let machines: Vec<&str> = before.iter().map(|(m, _)| m.as_str()).collect();
    for id in [
        "cnc01", "cnc02", "cnc03", "cnc04", "press01", "weld01", "saw01",
    ] {
        assert!(machines.contains(&id), "no tile for {id}: {before:?}");
    }
    assert!(
        changed.is_some(),
        "no state change showed up on the board in 60 s: {before:?}"
    );

    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/board-screenshot.png");
    let _ = std::fs::remove_file(&shot);
    chromium_run(
        profile.path(),
        &url,
        &[&format!("--screenshot={}", shot.display())],
    );
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(
        size > 10_000,
        "screenshot {} is {size} bytes",
        shot.display()
    );
}

/// Wuyi's sample targets and register over October 2021 to March 2022, as the county report
/// renders it: the per-year table (2021, 2022), the robot, CNC, digital-workshop and
/// ERP/MES/SCM/PLM sections, a silent enterprise counted with its declared machines, an
/// enterprise without a water meter ("no data"), one that joined on 1 March 2022.
fn wuyi_report() -> shopfloor::county::aggregate::Report {
    use jiff::civil::date;
    use shopfloor::county::aggregate::{FleetDay, GreenDay, Period, aggregate};
    use shopfloor::county::targets::{Registry, Targets};
    use shopfloor::engine::indicators::{Fleet, Green};

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let targets = Targets::load(&root.join("config/targets.toml")).expect("sample targets");
    let registry = Registry::load(&root.join("config/enterprises.toml")).expect("sample register");
    let period = Period::new(date(2021, 10, 1), date(2022, 3, 31), date(2026, 1, 1)).unwrap();
    let mut fleet = Vec::new();
    let mut green = Vec::new();
    for e in &registry.enterprises {
        if e.sector.as_str() == "leisure" {
            continue; // silent: counted with its declared machines
        }
        let total = e.machines_total.unwrap_or(10);
        let cnc = e.machines_cnc.unwrap_or(0);
        for (i, day) in period.days.iter().enumerate() {
            if !e.registered_on(*day) {
                continue;
            }
            // Networking grows over the months: 40 % in October to 75 % in March.
            let share = 0.4 + 0.35 * i as f64 / period.days.len() as f64;
            let networked = (total as f64 * share).round() as u64;
            fleet.push(FleetDay {
                enterprise: e.id.clone(),
                sector_tag: e.sector.as_str().to_string(),
                day: i,
                fleet: Fleet {
                    machines_total: total,
                    machines_digital: e.machines_digital.unwrap_or(0),
                    machines_cnc: cnc,
                    machines_networked: networked,
                    machines_digital_networked: networked.min(e.machines_digital.unwrap_or(0)),
                    cnc_running_s: cnc as f64 * 5.0 * 3600.0,
                    cnc_planned_s: cnc as f64 * 8.0 * 3600.0,
                },
                // The cups enterprises' agents register their robots: measured, the others
                // declared.
                robots: (e.sector.as_str() == "cups").then_some(e.robots.unwrap_or(0) + 5),
            });
            let water = e.sector.as_str() != "cookware";
            green.push(GreenDay {
                enterprise: e.id.clone(),
                sector_tag: e.sector.as_str().to_string(),
                day: i,
                green: Green {
                    energy_tce: total as f64 * 0.004,
                    electricity_kwh: total as f64 * 30.0,
                    water_t: if water { total as f64 * 0.25 } else { 0.0 },
                    value_added_10k_cny: total as f64 * 0.01,
                },
                value_added_known: true,
                energy_known: true,
                water_known: water,
                wastewater_t: None,
                va_method: "parts".into(),
                el_method: "calorific".into(),
            });
        }
    }
    aggregate(&targets, &registry, &period, None, fleet, green, Vec::new())
}

#[test]
fn the_county_report_renders_every_programme_section_in_both_languages() {
    use shopfloor::county::labels::Lang;
    use shopfloor::county::render::{Format, render};

    let report = wuyi_report();
    let dir = tempfile::tempdir().expect("temp dir");
    let profile = tempfile::tempdir().expect("profile dir");
    for (lang, code, words) in [
        (
            Lang::Zh,
            "zh",
            &[
                "在役工业机器人",
                "数控化率",
                "数字化车间",
                "ERP",
                "PLM",
                "分年度进度",
                "无数据",
                "未报送",
            ][..],
        ),
        (
            Lang::En,
            "en",
            &[
                "Industrial robots in service",
                "CNC rate",
                "Digital workshops",
                "ERP",
                "PLM",
                "Progress per year",
                "no data",
                "not reporting",
            ][..],
        ),
    ] {
        let page = dir.path().join(format!("report-{code}.html"));
        std::fs::write(&page, render(&report, Format::Html, lang)).expect("write the report");
        let url = format!("file://{}", page.display());
        let out = chromium_run(profile.path(), &url, &["--dump-dom"]);
        let dom = String::from_utf8_lossy(&out.stdout);
        for id in [
            "robots",
            "cnc",
            "digital-workshops",
            "systems",
            "years",
            "laggards",
        ] {
            assert!(
                dom.contains(&format!("<section id=\"{id}\">")),
                "no {id} section in the rendered {code} report"
            );
        }
        for word in words {
            assert!(dom.contains(word), "`{word}` in the rendered {code} report");
        }
        // The per-year table has a column per year of the period.
        let years = dom.split("<section id=\"years\">").nth(1).unwrap_or("");
        assert!(years.contains("<th>2021</th>") && years.contains("<th>2022</th>"));
        // Every label of the Chinese report in Chinese: none of the English words.
        if lang == Lang::Zh {
            // The warnings are the program's messages (ids, tags, file names), in English.
            let page = dom.split("<h3>提示</h3>").next().unwrap_or(&dom);
            // The text a reader sees: without the tags and their attributes.
            let mut labels = String::new();
            let mut in_tag = false;
            for c in page.chars() {
                match c {
                    '<' => in_tag = true,
                    '>' => {
                        in_tag = false;
                        labels.push(' ');
                    }
                    c if !in_tag => labels.push(c),
                    _ => {}
                }
            }
            for english in [
                "Sector",
                "Enterprises",
                "no data",
                "Target",
                "Progress",
                " pp",
                "machine-days",
                "declared",
                "enterprises",
                "robots",
            ] {
                let at = labels.find(english).map(|i| {
                    let from = labels.floor_char_boundary(i.saturating_sub(200));
                    &labels[from..i + english.len()]
                });
                assert!(at.is_none(), "`{english}` in the Chinese report: {at:?}");
            }
        }

        let shot =
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("target/county-report-{code}.png"));
        let _ = std::fs::remove_file(&shot);
        Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--hide-scrollbars",
                "--window-size=1200,2600",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("--screenshot={}", shot.display()))
            .arg(&url)
            .output()
            .expect("run chromium");
        let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
        assert!(
            size > 10_000,
            "screenshot {} is {size} bytes",
            shot.display()
        );
    }
}
