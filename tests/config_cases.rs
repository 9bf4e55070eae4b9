//! Config cases as data, after Telegraf's `plugins/inputs/modbus/testcases/`: every folder
//! under `tests/config_cases/` is one case, run through the built binary as a user runs it.
//!
//! A case folder holds:
//!
//! - `shopfloor.toml`: the config, and beside it anything a config finds beside itself
//!   (`profiles/<name>.toml`);
//! - `expected`: `ok` when `shopfloor check` accepts the config (after its warnings, if any), or else the exact diagnostics,
//!   one `shopfloor.toml:LINE:COL: message` a line, in the order `check` prints them (the
//!   closing "N problems found" line is checked against their number and left out);
//! - `env` (optional): `NAME=value` lines, the only environment `check` runs with (the secrets
//!   a config names by `{ env = "…" }`);
//! - `must_not_contain` (optional): one string a line that must appear nowhere in `check`'s
//!   output (a secret that must not be echoed); blessing never rewrites it;
//! - `README` (optional): what the case is about, for the reader.
//!
//! `shopfloor check -c shopfloor.toml` runs with the case folder as its working directory, so
//! the diagnostics name `shopfloor.toml` and profile files by their path relative to it.
//!
//! To add a case: make the folder with its `shopfloor.toml`, run
//! `SHOPFLOOR_BLESS=1 cargo test --test config_cases`, read the `expected` it wrote, and commit
//! both if every line is what `check` should say. After a deliberate change of a message, the
//! same command rewrites the `expected` files; review them with `git diff`.
//!
//! Going through the binary keeps the cases independent of where the config code lives.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_shopfloor");

#[test]
fn every_config_case_gives_its_expected_diagnostics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/config_cases");
    let bless = std::env::var_os("SHOPFLOOR_BLESS").is_some_and(|v| v == "1");
    let cases = case_folders(&root);
    assert!(
        cases.len() >= 10,
        "expected the cases under {}, found {}",
        root.display(),
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().map_or_else(
            || case.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        if let Err(why) = run_case(case, &name, bless) {
            failures.push(why);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} config cases failed (run with SHOPFLOOR_BLESS=1 to rewrite the expected files \
         from what `check` says now, then read the diff):\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

fn case_folders(root: &Path) -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    cases
}

/// Runs one case; `Err` carries the message that names the case and shows the difference.
fn run_case(case: &Path, name: &str, bless: bool) -> Result<(), String> {
    if !case.join("shopfloor.toml").is_file() {
        return Err(format!(
            "case `{name}`: no shopfloor.toml in {}",
            case.display()
        ));
    }
    let mut command = Command::new(BIN);
    command
        .args(["check", "-c", "shopfloor.toml"])
        .current_dir(case)
        .env_clear();
    if let Ok(env) = std::fs::read_to_string(case.join("env")) {
        for line in env.lines().filter(|l| !l.trim().is_empty()) {
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| format!("case `{name}`: env line `{line}` is not NAME=value"))?;
            command.env(key.trim(), value);
        }
    }
    let out = command
        .output()
        .map_err(|e| format!("case `{name}`: cannot run {BIN}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);

    let forbidden = std::fs::read_to_string(case.join("must_not_contain")).unwrap_or_default();
    for word in forbidden.lines().filter(|l| !l.is_empty()) {
        if stdout.contains(word) || stderr.contains(word) {
            return Err(format!(
                "case `{name}`: the output shows `{word}`, which it must not:\n{stdout}{stderr}"
            ));
        }
    }

    let actual = outcome(out.status.code(), &stdout, &stderr)
        .map_err(|why| format!("case `{name}`: {why}"))?;
    let expected_path = case.join("expected");
    let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
    if expected == actual {
        return Ok(());
    }
    if bless {
        std::fs::write(&expected_path, &actual).map_err(|e| {
            format!(
                "case `{name}`: cannot write {}: {e}",
                expected_path.display()
            )
        })?;
        eprintln!("blessed {}", expected_path.display());
        return Ok(());
    }
    Err(format!(
        "case `{name}` (tests/config_cases/{name}/expected): - expected, + what check says\n{}",
        diff(&expected, &actual)
    ))
}

/// What `check` said, in the form of an `expected` file: `ok\n`, or the diagnostics lines.
fn outcome(code: Option<i32>, stdout: &str, stderr: &str) -> Result<String, String> {
    match code {
        // Accepted: its warnings (stderr, one a line, each `…: warning: …`), then `ok`.
        Some(0)
            if stdout.contains(": ok: ") && stderr.lines().all(|l| l.contains(": warning: ")) =>
        {
            Ok(stderr
                .lines()
                .map(|l| format!("{l}\n"))
                .chain(["ok\n".to_string()])
                .collect())
        }
        Some(0) => Err(format!(
            "`check` accepted the config but did not print only its \"ok\" line:\nstdout:\n{stdout}\nstderr:\n{stderr}"
        )),
        Some(1) => {
            let mut lines: Vec<&str> = stderr.lines().collect();
            let summary = lines.pop().unwrap_or_default();
            let count = summary
                .strip_suffix(" problems found")
                .or_else(|| summary.strip_suffix(" problem found"))
                .and_then(|n| n.parse::<usize>().ok());
            if count != Some(lines.len()) {
                return Err(format!(
                    "`check` failed without its diagnostics and their count (one a line, then \
                     \"N problems found\"):\n{stderr}"
                ));
            }
            Ok(lines.iter().map(|l| format!("{l}\n")).collect())
        }
        _ => Err(format!(
            "`check` exited with {code:?}:\nstdout:\n{stdout}\nstderr:\n{stderr}"
        )),
    }
}

/// A line diff (longest common subsequence): ` ` both, `-` only expected, `+` only actual.
fn diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    // lcs[i][j]: the longest common subsequence of a[i..] and b[j..].
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push(format!("  {}", a[i]));
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push(format!("+ {}", b[j]));
            j += 1;
        } else {
            out.push(format!("- {}", a[i]));
            i += 1;
        }
    }
    if expected.is_empty() {
        out.insert(0, "  (no expected file yet)".to_string());
    }
    out.join("\n")
}

#[test]
fn the_diff_shows_what_was_expected_and_what_came() {
    assert_eq!(
        diff("a\nb\nc\n", "a\nc\nd\n"),
        "  a\n- b\n  c\n+ d".to_string()
    );
    assert_eq!(
        outcome(Some(1), "", "t:1:1: x\nt:2:1: y\n2 problems found\n"),
        Ok("t:1:1: x\nt:2:1: y\n".to_string())
    );
    assert!(outcome(Some(1), "", "t:1:1: x\n2 problems found\n").is_err());
    assert!(outcome(Some(101), "", "thread 'main' panicked").is_err());
}
