//! `shopfloor test` against the simulator, as a technician runs it at the cabinet: every field's
//! value and the lines that would be written, exit 0; one wrong register, that field's
//! exception and exit 1. Neither needs the store's token, the data directory or the board's
//! port. And `probe --device` does not ask for the token either.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;

use shopfloor::shutdown;

const BIN: &str = env!("CARGO_BIN_EXE_shopfloor");

/// The starter config: three Modbus devices on the simulator, an InfluxDB output whose token
/// comes from `SHOPFLOOR_INFLUX_TOKEN`, a board on port 8080.
const STARTER: &str = include_str!("../config/shopfloor.toml");

/// The token's variable, removed from every command's environment below.
const TOKEN_VAR: &str = "SHOPFLOOR_INFLUX_TOKEN";

/// The starter config pointed at the simulator on `sim`, with a data directory that does not
/// exist (and must not be created), with `extra` fields added to box-cnc02.
fn config(dir: &Path, sim: std::net::SocketAddr, extra: &str) -> (PathBuf, PathBuf) {
    let data_dir = dir.join("no-data-dir");
    let mode = r#"  { machine = "cnc02", signal = "mode", register = "holding", address = 6 },"#;
    assert!(STARTER.contains(mode), "the starter config changed");
    let text = STARTER
        .replace("127.0.0.1:5020", &sim.to_string())
        .replace("/var/lib/shopfloor", &data_dir.display().to_string())
        .replace(mode, &format!("{mode}\n{extra}"));
    let path = dir.join("shopfloor.toml");
    std::fs::write(&path, text).expect("write config");
    (path, data_dir)
}

async fn shopfloor(args: &[&str], config: &Path) -> Output {
    let mut command = Command::new(BIN);
    command.args(args).arg(config).env_remove(TOKEN_VAR);
    tokio::task::spawn_blocking(move || command.output().expect("run shopfloor"))
        .await
        .expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_prints_every_field_and_the_lines_and_needs_no_token_data_dir_or_port() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_trigger, stop) = shutdown::channel();
    let sim = common::simulator(stop).await;
    let (path, data_dir) = config(dir.path(), sim, "");

    // `check` is for `run`: it needs the token, which this environment does not have.
    let check = shopfloor(&["check", "-c"], &path).await;
    assert!(!check.status.success(), "check passed without the token");
    assert!(
        String::from_utf8_lossy(&check.stderr).contains("token"),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    // The board's port taken: `test` serves no board, so it does not care.
    let _port = std::net::TcpListener::bind("127.0.0.1:8080");
    let out = shopfloor(&["test", "-c"], &path).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for device in [
        "modbus box-cnc01: up",
        "modbus box-cnc02: up",
        "modbus meter-main: up",
    ] {
        assert!(stdout.lines().any(|l| l == device), "{device}:\n{stdout}");
    }
    // Every configured field with its value: 7 of box-cnc01, 6 of box-cnc02, 2 of the meter.
    for (target, signals) in [
        (
            "machine cnc01",
            &[
                "run",
                "power",
                "spindle_rpm",
                "alarm_code",
                "parts",
                "mode",
                "program",
            ][..],
        ),
        (
            "machine cnc02",
            &["run", "power", "spindle_rpm", "alarm_code", "parts", "mode"],
        ),
        ("meter main", &["energy_kwh", "power_kw"]),
    ] {
        for signal in signals {
            let field = format!("  {target} {signal} = ");
            assert!(
                stdout.lines().any(|l| l.starts_with(&field)),
                "{field}…:\n{stdout}"
            );
        }
    }
    assert!(
        !stdout.contains("ERROR") && !stdout.contains("no value"),
        "{stdout}"
    );
    // The derived states: the simulated machines out of offline; press01 has no source.
    assert!(stdout.contains("\n  press01 offline\n"), "{stdout}");
    for m in ["cnc01", "cnc02"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(&format!("  {m} ")) && !l.ends_with(" offline")),
            "{m}:\n{stdout}"
        );
    }
    // The lines, exactly as the encoder writes them: the signal line of each machine and the
    // meter, and the state change out of offline.
    let lines: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("lines that would be written"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(str::trim)
        .collect();
    for prefix in [
        "signal,county=wuyi,sector=cups,enterprise=913307840000000000,machine=cnc01,",
        "signal,county=wuyi,sector=cups,enterprise=913307840000000000,machine=cnc02,",
        "signal,county=wuyi,sector=cups,enterprise=913307840000000000,meter=main,",
        "machine_state,county=wuyi,sector=cups,enterprise=913307840000000000,machine=cnc01,",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(prefix)),
            "{prefix}:\n{stdout}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("machine=cnc01") && l.contains("previous=\"offline\"")),
        "{stdout}"
    );
    assert!(stdout.contains("ok: every source answered"), "{stdout}");
    assert!(!data_dir.exists(), "test created the data directory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_prints_the_exception_of_a_wrong_register_and_fails() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_trigger, stop) = shutdown::channel();
    let sim = common::simulator(stop).await;
    // The simulator maps 15 holding registers per machine (--registers); 900 is not one.
    let wrong = r#"  { machine = "cnc02", signal = "feed", register = "holding", address = 900 },"#;
    let (path, data_dir) = config(dir.path(), sim, wrong);
    let out = shopfloor(&["test", "-c"], &path).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("modbus box-cnc02: up, 1 field failing\n"),
        "{stdout}"
    );
    assert!(
        stdout.lines().any(|l| l.starts_with(
            "  machine cnc02 feed: ERROR exception Illegal data address to fc 3 holding 900..900"
        ) && l
            .contains("check the field's register table, address and address_base")),
        "{stdout}"
    );
    // The device's other fields still read.
    assert!(
        stdout.contains("  machine cnc02 spindle_rpm = "),
        "{stdout}"
    );
    assert!(stdout.contains("1 problem found:"), "{stdout}");
    assert!(!data_dir.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_of_a_configured_device_does_not_ask_for_the_token() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_trigger, stop) = shutdown::channel();
    let sim = common::simulator(stop).await;
    let (path, _) = config(dir.path(), sim, "");
    let out = shopfloor(
        &[
            "probe",
            "--device",
            "box-cnc01",
            "--start",
            "0",
            "--count",
            "2",
            "--config",
        ],
        &path,
    )
    .await;
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
