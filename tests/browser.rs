//! The machine board in a real browser: headless Chromium loads it during `shopfloor demo`,
//! every simulated machine's tile renders, and a state change shows up. The test leaves a
//! screenshot in `target/board-screenshot.png`.
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
