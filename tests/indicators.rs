//! The indicators end to end: a scripted workshop → the agent → VictoriaMetrics, and the stored
//! `machine_time`, `fleet` and `green` figures against numbers worked out by hand.
//!
//! The script runs in real time, and the agent sees it through polls every 200 ms, so state
//! times carry a tolerance of a poll and a half; counts (parts, machines) are exact.

mod common;

use std::time::Duration;

use common::VictoriaMetrics;
use jiff::{SignedDuration, Timestamp};
use shopfloor::model::State;
use shopfloor::sim::{self, ScriptedMachine, Workshop};
use shopfloor::sink::config::InfluxOutput;
use shopfloor::{agent, shutdown};

const DEMO: &str = include_str!("../config/demo.toml");
/// A poll and a half: how far a state time stored by the agent may be from the script's.
const TOLERANCE_S: f64 = 0.35;

fn machine(steps: &[(State, i64)], cycle_s: f64) -> ScriptedMachine {
    ScriptedMachine {
        steps: steps
            .iter()
            .map(|(s, secs)| (*s, SignedDuration::from_secs(*secs)))
            .collect(),
        cycle_s,
        spindle_rpm: 8000,
        alarm_code: 1021,
    }
}

/// Sum of one field over every window of a kind (a run may straddle a window boundary).
async fn total(vm: &VictoriaMetrics, metric: &str, labels: &str) -> f64 {
    let series = vm.export_series(&format!("{metric}{{{labels}}}")).await;
    // Each window is one timestamp, rewritten while the window was open. VictoriaMetrics
    // keeps every rewrite until it deduplicates, in no particular order, so the window's total
    // is the largest value at its timestamp: the totals only grow (a late state change moves
    // time between states by a poll at most, well inside the tolerance).
    // Counts and rates are read the same way, the largest value being the last.
    series
        .iter()
        .flat_map(|s| {
            let mut by_ts: std::collections::BTreeMap<i64, f64> = Default::default();
            for (t, v) in s.timestamps_ms.iter().zip(&s.values) {
                let slot = by_ts.entry(*t).or_insert(f64::MIN);
                *slot = slot.max(*v);
            }
            by_ts.into_values()
        })
        .sum()
}

/// The value of the newest window of a metric (its largest rewrite, see `total`).
async fn latest(vm: &VictoriaMetrics, metric: &str, labels: &str) -> f64 {
    let series = vm.export_series(&format!("{metric}{{{labels}}}")).await;
    let newest = series
        .iter()
        .flat_map(|s| s.timestamps_ms.iter().copied())
        .max()
        .unwrap_or_else(|| panic!("no {metric}{{{labels}}} stored"));
    series
        .iter()
        .flat_map(|s| s.timestamps_ms.iter().zip(&s.values))
        .filter(|(t, _)| **t == newest)
        .map(|(_, v)| *v)
        .fold(f64::MIN, f64::max)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripted_workshop_gives_the_hand_computed_indicators() {
    // Without deduplication: VictoriaMetrics 1.79 deduplicating samples of one timestamp keeps
    // an early rewrite of a window rather than the last, so the test reads every rewrite and
    // takes the largest (see `total`).
    let vm = VictoriaMetrics::start().await;
    let data = tempfile::tempdir().expect("temp dir");
    let (trigger, shutdown) = shutdown::channel();

    // The script starts 2 s after the agent and lasts 15 s; then the devices fall silent.
    //   cnc01: running 6 s (cycle 2 s → 3 parts), alarm 3 s, idle 6 s
    //   cnc02: stopped 15 s
    //   cnc03: running 15 s (cycle 4 s → 3 parts)
    //   cnc04: setup 15 s
    let script_start = Timestamp::now() + SignedDuration::from_secs(2);
    let script_end = script_start + SignedDuration::from_secs(15);
    let workshop = Workshop::scripted(
        script_start,
        script_end,
        vec![
            machine(
                &[(State::Running, 6), (State::Alarm, 3), (State::Idle, 6)],
                2.0,
            ),
            machine(&[(State::Stopped, 15)], 2.0),
            machine(&[(State::Running, 15)], 4.0),
            machine(&[(State::Setup, 15)], 2.0),
        ],
    );
    let simulator = sim::serve(
        workshop,
        "127.0.0.1:0".parse().expect("addr"),
        shutdown.clone(),
        None,
    )
    .await
    .expect("simulator");

    let mut cfg =
        shopfloor::agent::config::load_str(DEMO, "config/demo.toml").expect("demo config");
    for device in &mut cfg.modbus {
        device.address = Some(simulator.addr.to_string());
        device.poll = Duration::from_millis(200);
        device.timeout = Duration::from_millis(500);
    }
    cfg.agent.data_dir = data.path().to_path_buf();
    cfg.agent.offline_after = Duration::from_secs(5);
    cfg.agent.window_flush = Duration::from_secs(1);
    // Only cnc01's parts carry value added: 50 CNY each.
    for m in &mut cfg.machines {
        m.value_added_per_part = (m.id == "cnc01").then_some(50.0);
    }
    cfg.file.clear();
    // Tests run side by side: each board on a port of its own.
    cfg.web.listen.set_port(0);
    cfg.influx.push(
        toml::from_str::<InfluxOutput>(&format!(
            "url = \"{}\"\norg = \"county\"\nbucket = \"shopfloor\"",
            vm.url()
        ))
        .expect("output"),
    );
    let running = agent::start(&cfg, shutdown).expect("agent starts");

    // The script, then offline_after (5 s), then two flushes and a writer round.
    let settle = script_end + SignedDuration::from_secs(5 + 4);
    tokio::time::sleep(
        Duration::try_from(settle.duration_since(Timestamp::now())).unwrap_or_default(),
    )
    .await;
    vm.wait_for_query(r#"machine_state_code{machine="cnc01"}"#, |s| {
        s.iter().any(|x| x.value == State::Offline.code() as f64)
    })
    .await;
    vm.flush().await;

    let m = |id: &str| format!(r#"machine="{id}",window="1d""#);
    let near = |got: f64, want: f64, what: &str| {
        assert!(
            (got - want).abs() <= TOLERANCE_S,
            "{what}: stored {got}, expected {want}"
        );
    };
    // cnc01: running 6 s, alarm 3 s; idle from 9 s to the end of the script (6 s) and on
    // until offline_after ran out after the last answer (5 s): 11 s.
    near(
        total(&vm, "machine_time_running_s", &m("cnc01")).await,
        6.0,
        "cnc01 running",
    );
    near(
        total(&vm, "machine_time_alarm_s", &m("cnc01")).await,
        3.0,
        "cnc01 alarm",
    );
    near(
        total(&vm, "machine_time_idle_s", &m("cnc01")).await,
        11.0,
        "cnc01 idle",
    );
    // Parts: one every 2 s of the 6 s running → 3, exactly.
    assert_eq!(
        total(&vm, "machine_time_parts_total", &m("cnc01")).await,
        3.0
    );
    // cnc02 stopped 15 + 5 s; cnc03 running 15 + 5 s; cnc04 setup 15 + 5 s.
    near(
        total(&vm, "machine_time_stopped_s", &m("cnc02")).await,
        20.0,
        "cnc02 stopped",
    );
    near(
        total(&vm, "machine_time_running_s", &m("cnc03")).await,
        20.0,
        "cnc03 running",
    );
    near(
        total(&vm, "machine_time_setup_s", &m("cnc04")).await,
        20.0,
        "cnc04 setup",
    );
    // Without a calendar every second is planned busy time: availability of cnc01 is its
    // running time over all the time it was watched, and the state seconds fill that time.
    let states: f64 = {
        let mut sum = 0.0;
        for s in [
            "running_s",
            "setup_s",
            "idle_s",
            "alarm_s",
            "stopped_s",
            "offline_s",
        ] {
            sum += total(&vm, &format!("machine_time_{s}"), &m("cnc01")).await;
        }
        sum
    };
    let planned = total(&vm, "machine_time_planned_s", &m("cnc01")).await;
    // Exact in the engine (see the property tests); here each field's largest rewrite may
    // predate a late change that moved a fraction of a millisecond between two states.
    assert!(
        (states - planned).abs() < 0.01,
        "states {states} vs planned {planned}"
    );

    // The fleet: the demo register has 7 machines, 5 digital (4 CNC + the welding robot),
    // 4 CNC; the 4 simulated machines delivered data.
    let f = r#"window="1d""#;
    let latest = |metric: &'static str| latest(&vm, metric, r#"window="1d""#);
    assert_eq!(latest("fleet_machines_total").await, 7.0);
    assert_eq!(latest("fleet_machines_digital").await, 5.0);
    assert_eq!(latest("fleet_machines_cnc").await, 4.0);
    assert_eq!(latest("fleet_machines_networked").await, 4.0);
    // 4 / 7 networked = 0.5714; 4 / 5 of the digital machines = 0.8; CNC rate 4 / 7.
    let rate = latest("fleet_networking_rate").await;
    assert!((rate - 4.0 / 7.0).abs() < 1e-9, "{rate}");
    assert!((latest("fleet_networking_rate_digital").await - 0.8).abs() < 1e-9);
    assert!((latest("fleet_cnc_rate").await - 4.0 / 7.0).abs() < 1e-9);
    // CNC running = cnc01 6 s + cnc03 20 s = 26 s.
    let cnc_running = total(&vm, "fleet_cnc_running_s", f).await;
    assert!(
        (cnc_running - 26.0).abs() <= 2.0 * TOLERANCE_S,
        "cnc running {cnc_running}"
    );

    // Green: the meter counts 2 kW of base load plus each machine's load (running 15 kW,
    // setup 5, idle 3, alarm 2, stopped 0) over the 15 s script:
    //   cnc01 15×6 + 2×3 + 3×6 = 114 kW·s; cnc02 0; cnc03 15×15 = 225; cnc04 5×15 = 75;
    //   base 2×15 = 30 → 444 kW·s = 0.1233 kWh.
    // The agent reads the 0.01 kWh register every 200 ms from the script's first to its last
    // moment, so it sees 0.1233 kWh give or take one register step and two polls of load.
    let kwh = total(&vm, "green_electricity_kwh", f).await;
    assert!((kwh - 0.1233).abs() <= 0.015, "electricity {kwh} kWh");
    let tce = total(&vm, "green_energy_tce", f).await;
    // tce = kWh × 0.1229 kgce/kWh ÷ 1000, exactly as stored.
    assert!(
        (tce - kwh * 0.1229 / 1000.0).abs() < 1e-12,
        "tce {tce} for {kwh} kWh"
    );
    // Value added: cnc01's 3 parts × 50 CNY = 150 CNY = 0.015 (10k CNY).
    let va = total(&vm, "green_value_added_10k_cny", f).await;
    assert!((va - 0.015).abs() < 1e-12, "value added {va}");
    let intensity = total(&vm, "green_tce_per_10k_cny", f).await;
    assert!(
        (intensity - tce / 0.015).abs() < 1e-9,
        "intensity {intensity}"
    );
    let labelled = vm
        .export_series(
            r#"green_tce_per_10k_cny{window="1d",va_method="parts",el_method="calorific"}"#,
        )
        .await;
    assert!(
        !labelled.is_empty(),
        "green lines carry their value-added and electricity methods"
    );

    trigger.fire();
    running.finished().await;
}
