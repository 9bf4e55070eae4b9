//! SIGHUP: `shopfloor run` reloads a changed config without losing a spooled record, a window
//! total, or the machines' states.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{VictoriaMetrics, eventually, free_port, http_client};
use shopfloor::model::State;
use shopfloor::shutdown;
use shopfloor::sim::{self, SimOptions};

const BIN: &str = env!("CARGO_BIN_EXE_shopfloor");
const DEMO: &str = include_str!("../config/demo.toml");

/// The demo config, pointed at the simulator, writing to `store`, the board on `web`.
fn config(sim: &str, data: &std::path::Path, store: &str, web: u16, extra: &str) -> String {
    let file_output = DEMO.find("[[file]]").map_or(DEMO, |i| &DEMO[..i]);
    format!(
        "{}\n[[influx]]\nurl = \"{store}\"\norg = \"county\"\nbucket = \"shopfloor\"\n\n[web]\nlisten = \"127.0.0.1:{web}\"\n{extra}",
        file_output
            .replace("127.0.0.1:5020", sim)
            .replace(
                "data_dir = \"data/demo\"",
                &format!("data_dir = \"{}\"", data.display())
            )
            .replace("window_flush = \"10s\"", "window_flush = \"1s\"")
    )
}

struct Agent(std::process::Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &std::process::Child, sig: i32) {
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, sig) };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_new_config_and_keeps_spool_windows_and_states() {
    let (_trigger, shutdown) = shutdown::channel();
    let options = SimOptions {
        bind: "127.0.0.1:0".parse().expect("addr"),
        pace: 3.0,
        ..SimOptions::default()
    };
    let simulator = sim::start(&options, shutdown, None).await.expect("sim");
    // The store is down while the agent starts: every record waits in the spool.
    let mut vm = VictoriaMetrics::start().await;
    vm.stop().await;
    let data = tempfile::tempdir().expect("temp dir");
    let path = data.path().join("shopfloor.toml");
    let web = free_port();
    let sim_addr = simulator.addr.to_string();
    std::fs::write(&path, config(&sim_addr, data.path(), &vm.url(), web, ""))
        .expect("write config");
    let pid_file = data.path().join("shopfloor.pid");
    let mut agent = Agent(
        Command::new(BIN)
            .args(["run", "-c"])
            .arg(&path)
            .arg("--pid-file")
            .arg(&pid_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start shopfloor run"),
    );
    let http = http_client();
    let board = format!("http://127.0.0.1:{web}");
    let json = |path: &'static str| {
        let (http, url) = (http.clone(), format!("{board}{path}"));
        async move { common::get_json(&http, &url).await }
    };
    let parts_today = |v: &serde_json::Value| -> i64 {
        v.as_array().map_or(0, |a| {
            a.iter().filter_map(|m| m["parts_today"].as_i64()).sum()
        })
    };

    // Before: records pile up in the spool, and the workshop makes some parts.
    let (spooled, parts_before) = eventually(
        "spool and parts before the reload",
        Duration::from_secs(30),
        || async {
            let health = json("/api/health").await?;
            let machines = json("/api/machines").await?;
            let (lines, parts) = (
                health["spool_lines"].as_u64().unwrap_or(0),
                parts_today(&machines),
            );
            (lines > 50 && parts > 0)
                .then_some((lines, parts))
                .ok_or(format!("spool {lines}, parts {parts}"))
        },
    )
    .await;

    // A changed config: one more machine in the register.
    let extra = "\n[[machine]]\nid = \"mill09\"\nkind = \"mill\"\ncnc = true\n";
    std::fs::write(&path, config(&sim_addr, data.path(), &vm.url(), web, extra))
        .expect("rewrite config");
    // As the README says: `kill -HUP "$(cat shopfloor.pid)"`, which reaches this agent and no
    // other process.
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("the pid file")
        .trim()
        .parse()
        .expect("a pid");
    assert_eq!(pid as u32, agent.0.id());
    // SAFETY: sending a signal to the process the pid file names, our child.
    unsafe { libc::kill(pid, libc::SIGHUP) };

    // The new register is in force: 8 machines.
    eventually("the new register", Duration::from_secs(20), || async {
        let fleet = json("/api/fleet").await?;
        (fleet["networking_rate"]["denominator"] == 8.0)
            .then_some(())
            .ok_or(format!("{fleet}"))
    })
    .await;
    // Nothing spooled was lost, and today's parts carried over.
    let health = json("/api/health").await.expect("health");
    assert!(
        health["spool_lines"].as_u64().unwrap_or(0) >= spooled,
        "{health} after {spooled}"
    );
    let machines = json("/api/machines").await.expect("machines");
    assert!(
        parts_today(&machines) >= parts_before,
        "parts today fell from {parts_before}: {machines}"
    );

    // A config that fails the check is refused, and the agent keeps running the good one.
    std::fs::write(&path, "[site]\ncounty = 1\n").expect("break config");
    signal(&agent.0, libc::SIGHUP);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        agent.0.try_wait().expect("agent status").is_none(),
        "agent died on a bad config"
    );
    let fleet = json("/api/fleet").await.expect("fleet");
    assert_eq!(fleet["networking_rate"]["denominator"], 8.0);

    // The store comes back: every record spooled before the reload arrives, and cnc01 never
    // went offline across the reload (the simulated machines always answer).
    vm.restart().await;
    let series = vm
        .wait_for_export(r#"machine_state_code{machine="cnc01"}"#, |s| {
            s.iter().map(|x| x.values.len()).sum::<usize>() >= 3
        })
        .await;
    let codes: Vec<f64> = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .collect();
    let offline = State::Offline.code() as f64;
    // The first line is the start (offline → first state); none after it is offline.
    let after_first_data: Vec<_> = codes.iter().skip_while(|c| **c == offline).collect();
    assert!(
        after_first_data.iter().all(|c| **c != offline),
        "cnc01 went offline across the reload: {codes:?}"
    );
    let spooled_signals = vm
        .wait_for_export(r#"signal_spindle_rpm{machine="cnc01"}"#, |s| !s.is_empty())
        .await;
    assert!(!spooled_signals.is_empty());

    signal(&agent.0, libc::SIGTERM);
    let status = agent.0.wait().expect("agent exits");
    assert!(status.success(), "exit after SIGTERM: {status}");
    assert!(
        !pid_file.exists(),
        "the pid file is removed on a clean stop"
    );
}
