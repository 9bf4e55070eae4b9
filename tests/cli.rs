//! The `shopfloor` command as a user runs it: `check` on good and bad configs, and `demo`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_shopfloor");

/// A config with three different mistakes: a duration without a unit (line 7), a misspelt key
/// (line 16) and a field naming a machine that is not in the register (line 19).
const THREE_MISTAKES: &str = r#"[site]
county = "yk"
sector = "doors"
enterprise = "e1"

[agent]
offline_after = 10

[[machine]]
id = "cnc01"
kind = "lathe"
cnc = true

[[modbus]]
id = "box1"
adress = "127.0.0.1:502"
address = "127.0.0.1:502"
field = [
  { machine = "cnc09", signal = "rpm", register = "holding", address = 1 },
]
"#;

#[test]
fn check_reports_every_mistake_with_its_line_and_column() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, THREE_MISTAKES).expect("write config");
    let out = Command::new(BIN)
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .expect("run shopfloor check");
    assert!(!out.status.success(), "a bad config must fail the check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file = path.display().to_string();
    for (at, words) in [
        ("7:17", "a duration needs a unit"),
        ("16:1", "unknown key `adress`"),
        ("19:15", "`cnc09`, which is not in the register"),
    ] {
        let wanted = format!("{file}:{at}: ");
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with(&wanted) && l.contains(words)),
            "expected `{wanted}… {words}` in:\n{stderr}"
        );
    }
    assert!(stderr.contains("3 problems found"), "{stderr}");
}

#[test]
fn check_accepts_a_good_config_and_prints_the_request_plan() {
    let out = Command::new(BIN)
        .args(["check", "--plan", "-c", "config/demo.toml"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run shopfloor check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("ok: 7 machines in the register (4 with a data source)"),
        "{stdout}"
    );
    // The seven fields of the cnc-iot-box profile, holding registers 0–14 of each box, are
    // read in one request; the four boxes and the meter share the simulator's connection.
    assert!(
        stdout.contains("fc 3 holding 0..14 (15 registers, 7 fields)"),
        "{stdout}"
    );
    assert_eq!(stdout.matches("connection tcp://").count(), 1, "{stdout}");
}

/// A host name that does not resolve is named by `check` as a warning (the agent keeps trying:
/// DNS may come up after it), and the config still passes. `.invalid` never resolves
/// (RFC 2606); the IP address beside it is not looked up.
#[test]
fn check_warns_of_a_host_name_that_does_not_resolve() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("dns.toml");
    let text = format!(
        r#"[site]
county = "wuyi"
sector = "doors"
enterprise = "e1"

[agent]
data_dir = "{data}"

[[machine]]
id = "cnc01"
kind = "lathe"
cnc = true

[[modbus]]
id = "box1"
address = "plc-7.shopfloor.invalid:502"
field = [
  {{ machine = "cnc01", signal = "rpm", register = "holding", address = 1 }},
]

[[modbus]]
id = "box2"
address = "127.0.0.1:502"
field = [
  {{ machine = "cnc01", signal = "load", register = "holding", address = 2 }},
]
"#,
        data = dir.path().display()
    );
    std::fs::write(&path, text).expect("write config");
    let out = Command::new(BIN)
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .expect("run shopfloor check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "a name that does not resolve is a warning: {stderr}"
    );
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("does not resolve"))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning, for box1 only:\n{stderr}");
    assert!(
        warnings[0].contains("modbus device box1")
            && warnings[0].contains("`plc-7.shopfloor.invalid`")
            && warnings[0].contains("warning:"),
        "{stderr}"
    );
}

/// `shopfloor check --plan | head` once ended in a panic ("failed printing to stdout: Broken
/// pipe"). The reader here goes away before the command writes anything, so every line it
/// prints meets a closed pipe.
#[test]
fn check_ends_quietly_when_its_reader_goes_away() {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    let mut child = Command::new(BIN)
        .args(["check", "--plan", "-c", "config/demo.toml"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run shopfloor check");
    drop(child.stdout.take());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    let status = child.wait().expect("wait for check");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Ended by SIGPIPE like `cat` would be, or finished before noticing: never a panic's 101.
    assert!(
        status.signal() == Some(libc::SIGPIPE) || status.success(),
        "{status:?}: {stderr}"
    );
}

#[test]
fn init_writes_a_starter_config_that_passes_check_and_never_overwrites_by_accident() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("shopfloor.toml");
    let out = Command::new(BIN)
        .args(["init", "-o"])
        .arg(&path)
        .output()
        .expect("run shopfloor init");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let check = Command::new(BIN)
        .args(["check", "-c"])
        .arg(&path)
        .env("SHOPFLOOR_INFLUX_TOKEN", "starter")
        .output()
        .expect("run shopfloor check");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let again = Command::new(BIN)
        .args(["init", "-o"])
        .arg(&path)
        .output()
        .expect("run shopfloor init");
    assert!(
        !again.status.success(),
        "init must not overwrite without --force"
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
}

#[test]
fn every_sample_config_parses() {
    // The samples name their secrets by environment variable; give them values.
    let config_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut checked = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&config_dir)
        .expect("config/ exists")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        // Agent configs have a [site]; the county's files and device profiles do not.
        .filter(|p| {
            std::fs::read_to_string(p).is_ok_and(|t| t.lines().any(|l| l.trim() == "[site]"))
        })
        .collect();
    entries.sort();
    for path in entries {
        let out = Command::new(BIN)
            .args(["check", "-c"])
            .arg(&path)
            .env("SHOPFLOOR_INFLUX_TOKEN", "sample-token")
            .env("HJ212_WW1_PASSWORD", "sample-password")
            .env("SHOPFLOOR_OPCUA_MC01_PASSWORD", "sample-password")
            .output()
            .expect("run shopfloor check");
        assert!(
            out.status.success(),
            "{} does not pass check:\n{}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(
        checked >= 2,
        "expected the sample configs under config/, found {checked}"
    );
}

#[test]
fn the_county_sample_files_pass_county_check() {
    let config_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let out = Command::new(BIN)
        .args(["county", "check", "--targets"])
        .arg(config_dir.join("targets.toml"))
        .arg("--enterprises")
        .arg(config_dir.join("enterprises.toml"))
        .output()
        .expect("run shopfloor county check");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("targets.toml: ok: county wuyi"), "{stdout}");
}

#[test]
fn demo_shows_machine_states_changing_within_ten_seconds() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(BIN)
        .args(["demo", "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start shopfloor demo");
    let stdout = child.stdout.take().expect("piped stdout");
    // Lines arrive as "<timestamp> <machine> <state>", one per change (stdout is not a terminal).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let started = Instant::now();
    let mut seen: std::collections::HashMap<String, Vec<String>> = Default::default();
    let mut changed_after_first_data = None;
    while started.elapsed() < Duration::from_secs(10) && changed_after_first_data.is_none() {
        let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        let words: Vec<&str> = line.split_whitespace().collect();
        if let [_, machine, state] = words[..] {
            let states = seen.entry(machine.to_string()).or_default();
            states.push(state.to_string());
            // offline → (first data) → another state: a real change in the workshop.
            if states.iter().filter(|s| *s != "offline").count() >= 2 {
                changed_after_first_data = Some((machine.to_string(), states.clone()));
            }
        }
    }
    // Ctrl-C stops the demo cleanly.
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().expect("demo exits");
    let (machine, states) = changed_after_first_data
        .unwrap_or_else(|| panic!("no machine changed state within 10 s: {seen:?}"));
    assert!(
        states.windows(2).any(|w| w[0] != w[1] && w[0] != "offline"),
        "{machine}: {states:?}"
    );
    assert!(status.success(), "demo exit status after Ctrl-C: {status}");
    let records = std::fs::read_to_string(dir.path().join("records.lp")).unwrap_or_default();
    assert!(
        records.lines().any(|l| l.starts_with("machine_state,")),
        "the local store has no machine_state lines"
    );
}

/// A failing command names each cause once: the county store's "cannot reach the store"
/// wrapped in the report's error used to be printed twice (once by each layer).
#[test]
fn a_failing_command_says_its_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(BIN)
        .args([
            "county",
            "report",
            "--from",
            "2022-03-01",
            "--to",
            "2022-03-02",
        ])
        .args(["--url", "http://127.0.0.1:1", "--db", "county"])
        .arg("--targets")
        .arg(root.join("config/targets.toml"))
        .arg("--enterprises")
        .arg(root.join("config/enterprises.toml"))
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.matches("cannot reach the store").count(),
        1,
        "{stderr}"
    );
    // And the operating system's reason once too.
    assert_eq!(stderr.matches("onnection refused").count(), 1, "{stderr}");
}
