//! The machine board and the county report in a real browser: headless Chromium loads the
//! board during `shopfloor demo`, every simulated machine's tile renders, and a state change
//! shows up; it renders the county's HTML report in Chinese and English with every section of
//! the programme; it renders the board of an agent whose store is down and one of whose
//! devices is down, in both languages. The tests leave screenshots in
//! `target/board-screenshot.png`, `target/county-report-{zh,en}.png` and
//! `target/board-faults-{zh,en}.png` (copied to docs/ by hand when the page changes).
//!
//! Chromium comes from Debian (`scripts/test` installs the `chromium` package).

mod common;

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

/// The text of the element that carries `attr="value"` in a dumped DOM, tags stripped.
fn element_text(dom: &str, attr: &str, value: &str) -> String {
    let needle = format!("{attr}=\"{value}\"");
    let Some(at) = dom.find(&needle) else {
        return String::new();
    };
    let start = dom[..at].rfind('<').unwrap_or(at);
    // Walks the tags from the element's own: it ends where its depth returns to zero.
    let (mut depth, mut text, mut tag, mut in_tag) = (0i32, String::new(), String::new(), false);
    for c in dom[start..].chars() {
        match c {
            '<' => {
                in_tag = true;
                tag.clear();
            }
            '>' if in_tag => {
                in_tag = false;
                if tag.starts_with('/') {
                    depth -= 1;
                } else if !tag.ends_with('/') {
                    depth += 1;
                }
                if depth == 0 {
                    break;
                }
                text.push(' ');
            }
            c if in_tag => tag.push(c),
            c => text.push(c),
        }
    }
    text
}

/// The `class` of the element with `id`.
fn class_of(dom: &str, id: &str) -> String {
    dom.split(&format!("id=\"{id}\""))
        .next()
        .and_then(|before| before.rsplit("class=\"").next())
        .and_then(|c| c.split('"').next())
        .unwrap_or_default()
        .to_string()
}

/// The demo agent against the simulator with its store at a closed port (so the output
/// fails), `box-cnc02` at a closed port (so the device is down and cnc02 offline because of
/// it), and the energy-intensity limit `limit`.
async fn faulty_agent(
    sim: std::net::SocketAddr,
    limit: f64,
) -> (String, tempfile::TempDir, shopfloor::agent::Running) {
    let data = tempfile::tempdir().expect("temp dir");
    let mut cfg =
        shopfloor::agent::config::load_str(include_str!("../config/demo.toml"), "config/demo.toml")
            .expect("demo config");
    let closed = format!("127.0.0.1:{}", common::free_port());
    for d in &mut cfg.modbus {
        d.address = Some(if d.id == "box-cnc02" {
            closed.clone()
        } else {
            sim.to_string()
        });
    }
    cfg.agent.data_dir = data.path().to_path_buf();
    cfg.file.clear();
    cfg.web.listen.set_port(0);
    let store = format!(
        "name = \"store\"\nurl = \"http://127.0.0.1:{}\"\norg = \"o\"\nbucket = \"b\"\nretry_max = \"2s\"",
        common::free_port()
    );
    cfg.influx
        .push(toml::from_str(&store).expect("output config"));
    cfg.green.tce_per_10k_cny_limit = Some(limit);
    let (_trigger, shutdown) = shopfloor::shutdown::channel();
    // The trigger is dropped: the agent runs until the test's runtime ends.
    std::mem::forget(_trigger);
    let running = shopfloor::agent::start(&cfg, shutdown).expect("agent");
    let base = format!("http://{}", running.web_addr.expect("board enabled"));
    (base, data, running)
}

/// Issue 20's board, rendered: the output to a store that is down shows "failing" and why;
/// the machine whose device is down is told apart from the machines without a data source;
/// the device's reason is in the board's language; the water tile, measured by no meter,
/// says "not measured" (未计量); and the energy-intensity tile is judged against the
/// configured limit, which it shows: green under a limit of 100000 (today's figure is a few
/// thousandths), red over a limit of 0.000001. Screenshots of both languages are left in
/// `target/board-faults-{zh,en}.png`. Opened with no API behind it, the page shows the stale
/// banner and greys the figures out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_board_shows_a_failing_store_a_down_device_and_the_judged_intensity_in_both_languages()
{
    use common::{eventually, get_json, http_client};
    let (_sim_trigger, sim_shutdown) = shopfloor::shutdown::channel();
    let options = shopfloor::sim::SimOptions {
        bind: "127.0.0.1:0".parse().expect("addr"),
        ..shopfloor::sim::SimOptions::default()
    };
    let sim = shopfloor::sim::start(&options, sim_shutdown, None)
        .await
        .expect("simulator");
    let (base, data, _running) = faulty_agent(sim.addr, 100_000.0).await;
    let (strict, _strict_data, _strict_running) = faulty_agent(sim.addr, 0.000_001).await;
    let http = http_client();
    // What the page uses: the output failing, cnc02's device down, an intensity to judge.
    for b in [&base, &strict] {
        eventually(
            "a failing store, a down device, an intensity",
            Duration::from_secs(40),
            || {
                let http = http.clone();
                async move {
                    let health = get_json(&http, &format!("{b}/api/health")).await?;
                    let fleet = get_json(&http, &format!("{b}/api/fleet")).await?;
                    let failing = health["outputs"][0]["state"] == "failing";
                    let down = health["devices"]
                        .as_array()
                        .and_then(|a| a.iter().find(|d| d["id"] == "box-cnc02"))
                        .is_some_and(|d| {
                            d["up"] == false
                                && d["reason"].as_str().is_some_and(|r| r.contains("refused"))
                        });
                    (failing && down && fleet["tce_per_10k_cny"].is_number())
                        .then_some(())
                        .ok_or(format!("{health}\n{fleet}"))
                }
            },
        )
        .await;
    }
    let fleet = get_json(&http, &format!("{base}/api/fleet"))
        .await
        .expect("fleet");
    assert_eq!(fleet["tce_per_10k_cny_limit"], 100_000.0, "{fleet}");
    assert!(fleet["water_t"].is_null(), "{fleet}");
    assert_eq!(fleet["absent"]["water_t"], "no_meter", "{fleet}");
    let health = get_json(&http, &format!("{base}/api/health"))
        .await
        .expect("health");
    assert_eq!(
        health["machines_without_source"],
        serde_json::json!(["press01", "weld01", "saw01"]),
        "{health}"
    );

    let profile = tempfile::tempdir().expect("profile dir");
    for (lang, failing, device_down, no_source, not_measured, limit) in [
        (
            "zh",
            "发送失败",
            "设备中断",
            "无数据源",
            "未计量",
            "限值 ≤ 100000",
        ),
        (
            "en",
            "failing",
            "device down",
            "no data source",
            "not measured",
            "limit ≤ 100000",
        ),
    ] {
        let url = format!("{base}/?lang={lang}");
        let dom =
            String::from_utf8_lossy(&chromium_run(profile.path(), &url, &["--dump-dom"]).stdout)
                .into_owned();
        let output = element_text(&dom, "data-output", "store");
        assert!(
            dom.contains("data-output=\"store\" data-state=\"failing\"")
                && output.contains(failing),
            "{lang}: output {output:?}"
        );
        let cnc02 = element_text(&dom, "data-machine", "cnc02");
        assert!(cnc02.contains(device_down), "{lang}: cnc02 {cnc02:?}");
        let press = element_text(&dom, "data-machine", "press01");
        assert!(press.contains(no_source), "{lang}: press01 {press:?}");
        assert!(!press.contains(device_down), "{lang}: press01 {press:?}");
        if lang == "zh" {
            // "cannot connect: … Connection refused" in the board's language.
            assert!(cnc02.contains("连接被拒绝"), "zh: cnc02 {cnc02:?}");
            assert!(
                output.contains("连接被拒绝") || output.contains("无法连接存储"),
                "zh: {output:?}"
            );
        }
        let water = element_text(&dom, "id", "k-water");
        assert!(water.contains(not_measured), "{lang}: water {water:?}");
        let intensity = element_text(&dom, "id", "k-int");
        assert!(intensity.contains(limit), "{lang}: intensity {intensity:?}");
        assert!(
            class_of(&dom, "k-int").split(' ').any(|c| c == "ok"),
            "{lang}: the intensity under a limit of 100000 is not green: {intensity:?}"
        );

        let strict_dom = String::from_utf8_lossy(
            &chromium_run(
                profile.path(),
                &format!("{strict}/?lang={lang}"),
                &["--dump-dom"],
            )
            .stdout,
        )
        .into_owned();
        assert!(
            class_of(&strict_dom, "k-int")
                .split(' ')
                .any(|c| c == "bad"),
            "{lang}: the intensity over a limit of 0.000001 is not red: {}",
            element_text(&strict_dom, "id", "k-int")
        );

        // The same page with no API behind it (opened from a file): the stale banner shows
        // and the body's `stale` class greys the figures out.
        let page = http
            .get(&url)
            .send()
            .await
            .expect("board page")
            .text()
            .await
            .expect("page text");
        let file = data.path().join(format!("board-{lang}.html"));
        std::fs::write(&file, page).expect("page file");
        let offline = String::from_utf8_lossy(
            &chromium_run(
                profile.path(),
                &format!("file://{}", file.display()),
                &["--dump-dom"],
            )
            .stdout,
        )
        .into_owned();
        assert!(
            offline.contains("<body class=\"stale\">"),
            "{lang}: no stale body: {}",
            &offline[..offline.len().min(600)]
        );

        let shot =
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("target/board-faults-{lang}.png"));
        let _ = std::fs::remove_file(&shot);
        chromium_run(
            profile.path(),
            &url,
            &[
                "--hide-scrollbars",
                &format!("--screenshot={}", shot.display()),
            ],
        );
        let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
        assert!(
            size > 10_000,
            "screenshot {} is {size} bytes",
            shot.display()
        );
    }
}

/// A field whose register the device refuses shows on its machine's tile with its error, in
/// Chinese and in English, and its device is marked as up with failing fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_board_shows_a_failing_field_on_its_machine_in_both_languages() {
    let data = tempfile::tempdir().expect("temp dir");
    let (trigger, shutdown) = shopfloor::shutdown::channel();
    let addr = common::simulator(shutdown.clone()).await;
    // The simulator refuses holding register 900 with exception 0x02.
    let toml = format!(
        r#"
[site]
county = "yk"
sector = "doors"
enterprise = "e1"

[[machine]]
id = "m1"
kind = "lathe"
cnc = true

[[modbus]]
id = "box1"
address = "{addr}"
unit = 1
machine = "m1"
poll = "200ms"
field = [
  {{ signal = "spindle_rpm", register = "holding", address = 2 }},
  {{ signal = "feed", register = "holding", address = 900 }},
]
"#
    );
    let mut cfg = shopfloor::agent::config::load_str(&toml, "t.toml").expect("config");
    cfg.agent.data_dir = data.path().to_path_buf();
    cfg.web.listen.set_port(0);
    let running = shopfloor::agent::start(&cfg, shutdown).expect("agent");
    let base = format!("http://{}", running.web_addr.expect("board enabled"));
    let profile = tempfile::tempdir().expect("profile dir");
    for (lang, kind, devices) in [
        ("zh", "异常应答", "1 个采集点失败"),
        ("en", "exception", "1 fields failing"),
    ] {
        let url = format!("{base}/?lang={lang}");
        let dir = profile.path().to_path_buf();
        let mut dom = String::new();
        // The first poll's error reaches the API within a second; retry a few times.
        for _ in 0..5 {
            let (dir, url) = (dir.clone(), url.clone());
            let out =
                tokio::task::spawn_blocking(move || chromium_run(&dir, &url, &["--dump-dom"]))
                    .await
                    .expect("join");
            dom = String::from_utf8_lossy(&out.stdout).into_owned();
            if dom.contains("data-signal=\"feed\"") {
                break;
            }
        }
        let tile = dom
            .split("data-machine=\"m1\"")
            .nth(1)
            .unwrap_or_else(|| panic!("no tile for m1 ({lang}):\n{dom}"));
        let failing = tile
            .split("data-signal=\"feed\"")
            .nth(1)
            .and_then(|rest| rest.split("</div>").next())
            .unwrap_or_else(|| panic!("no failing field on m1's tile ({lang}):\n{dom}"));
        assert!(
            failing.contains("feed (box1, ") && failing.contains(kind),
            "{lang}: {failing}"
        );
        assert!(
            failing.contains("Illegal data address"),
            "{lang}: {failing}"
        );
        assert!(
            dom.contains("class=\"dev partial\"") && dom.contains(devices),
            "{lang}:\n{dom}"
        );
    }
    trigger.fire();
    running.finished().await;
}
