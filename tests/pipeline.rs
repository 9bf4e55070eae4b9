//! End to end: the simulated workshop → `shopfloor run`'s pipeline → a real store.
//!
//! The simulator is a pure function of time, so the test can ask it what each register held at
//! any stored timestamp and when each machine changed state, and compare with what the store
//! holds.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Influx1, VictoriaMetrics};
use jiff::{SignedDuration, Timestamp};
use shopfloor::agent::config::Config;
use shopfloor::model::State;
use shopfloor::sim::{self, SeenRequest, SimOptions, Workshop};
use shopfloor::sink::config::InfluxOutput;
use shopfloor::{agent, shutdown};
use tokio::sync::mpsc;

const DEMO: &str = include_str!("../config/demo.toml");
const RUN_FOR: Duration = Duration::from_secs(12);

/// The demo's register and maps, pointed at `sim_addr`, writing to one Influx output.
fn config(sim_addr: std::net::SocketAddr, data_dir: &std::path::Path, output: &str) -> Config {
    let mut cfg =
        shopfloor::agent::config::load_str(DEMO, "config/demo.toml").expect("demo config loads");
    for device in &mut cfg.modbus {
        device.address = Some(sim_addr.to_string());
    }
    cfg.agent.data_dir = data_dir.to_path_buf();
    cfg.file.clear();
    // Tests run side by side: each board on a port of its own.
    cfg.web.listen.set_port(0);
    cfg.influx
        .push(toml::from_str::<InfluxOutput>(output).expect("output config"));
    cfg
}

/// What one run saw: the workshop, the window, and every request the simulator received.
struct Run {
    workshop: std::sync::Arc<Workshop>,
    started: Timestamp,
    ended: Timestamp,
    requests: Vec<SeenRequest>,
}

/// Runs simulator and agent for [`RUN_FOR`], then calls `delivered` until the store has
/// everything up to the end of the run, then stops the agent.
async fn run_pipeline<F, Fut>(output: &str, delivered: F) -> Run
where
    F: Fn(Timestamp) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let data = tempfile::tempdir().expect("temp dir");
    let (trigger, shutdown) = shutdown::channel();
    let (seen_tx, mut seen_rx) = mpsc::channel(100_000);
    let options = SimOptions {
        bind: "127.0.0.1:0".parse().expect("address"),
        seed: 7,
        ..SimOptions::default()
    };
    let simulator = sim::start(&options, shutdown.clone(), Some(seen_tx))
        .await
        .expect("simulator starts");
    let cfg = config(simulator.addr, data.path(), output);
    let started = Timestamp::now();
    let running = agent::start(&cfg, shutdown).expect("agent starts");
    tokio::time::sleep(RUN_FOR).await;
    let ended = Timestamp::now();
    delivered(ended).await;
    trigger.fire();
    running.finished().await;
    let mut requests = Vec::new();
    while let Ok(r) = seen_rx.try_recv() {
        requests.push(r);
    }
    Run {
        workshop: simulator.workshop,
        started,
        ended,
        requests,
    }
}

/// A stored register value is right if the simulator held it at the poll's timestamp or within
/// the 50 ms after it (the request is sent just after the timestamp is taken).
fn register_matches(
    w: &Workshop,
    machine: usize,
    register: usize,
    at: Timestamp,
    stored: f64,
) -> bool {
    [0, 1, 10, 50].iter().any(|ms| {
        w.machine_registers(machine, at + SignedDuration::from_millis(*ms))
            .is_some_and(|r| f64::from(r[register]) == stored)
    })
}

fn parts_match(w: &Workshop, machine: usize, at: Timestamp, stored: f64) -> bool {
    [0, 1, 10, 50].iter().any(|ms| {
        w.machine_registers(machine, at + SignedDuration::from_millis(*ms))
            .is_some_and(|r| f64::from((u32::from(r[4]) << 16) | u32::from(r[5])) == stored)
    })
}

/// Every change the simulator made inside the run (away from its edges) must be stored with the
/// new state's code, stamped no earlier than the change and within one poll interval (1 s)
/// after it, give or take the 100 ms a request takes.
fn assert_changes_stored(run: &Run, machine: usize, stored: &[(Timestamp, f64)]) {
    let from = run.started + SignedDuration::from_millis(1500);
    let to = run.ended - SignedDuration::from_millis(1500);
    let changes = run.workshop.changes(machine, from, to);
    for (when, state) in &changes {
        let found = stored.iter().any(|(at, code)| {
            *code == state.code() as f64
                && *at >= *when - SignedDuration::from_millis(100)
                && *at <= *when + SignedDuration::from_millis(1100)
        });
        assert!(
            found,
            "machine {} changed to {state} at {when}; stored states: {stored:?}",
            machine + 1
        );
    }
}

fn assert_read_only(run: &Run) {
    assert!(!run.requests.is_empty(), "the simulator saw no request");
    let functions: std::collections::BTreeSet<u8> =
        run.requests.iter().map(|r| r.function).collect();
    assert!(
        functions.iter().all(|f| (1..=4).contains(f)),
        "the agent sent function codes {functions:?}; only 1–4 are reads"
    );
}

fn ts_ms(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).expect("timestamp")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_to_victoria_metrics_through_the_v2_write_api() {
    // Deduplication makes a replayed point overwrite itself, as the data contract assumes.
    let vm = VictoriaMetrics::start_with_args(&["-dedup.minScrapeInterval=1ms"]).await;
    let output = format!(
        "url = \"{}\"\napi = \"v2\"\norg = \"county\"\nbucket = \"shopfloor\"",
        vm.url()
    );
    let run = run_pipeline(&output, |ended| {
        let vm = &vm;
        async move {
            let end_ms = ended.as_millisecond() - 1000;
            vm.wait_for_export(r#"signal_spindle_rpm{machine="cnc04"}"#, |s| {
                s.iter()
                    .any(|series| series.timestamps_ms.iter().any(|t| *t >= end_ms))
            })
            .await;
        }
    })
    .await;
    assert_read_only(&run);

    for machine in 0..4 {
        let id = format!("cnc{:02}", machine + 1);
        let rpm = vm
            .export_series(&format!(r#"signal_spindle_rpm{{machine="{id}"}}"#))
            .await;
        assert_eq!(rpm.len(), 1, "one series per machine: {rpm:?}");
        let series = &rpm[0];
        assert_eq!(
            series.labels.get("county").map(String::as_str),
            Some("wuyi")
        );
        assert_eq!(series.labels.get("cnc").map(String::as_str), Some("true"));
        // About one poll a second for 12 s.
        assert!(
            series.values.len() >= 9,
            "{id}: {} polls stored",
            series.values.len()
        );
        for (value, at) in series.values.iter().zip(&series.timestamps_ms) {
            assert!(
                register_matches(&run.workshop, machine, 2, ts_ms(*at), *value),
                "{id} spindle_rpm {value} at {at} ms differs from the simulator"
            );
        }
        let alarms = vm
            .export_series(&format!(r#"signal_alarm_code{{machine="{id}"}}"#))
            .await;
        for (value, at) in alarms[0].values.iter().zip(&alarms[0].timestamps_ms) {
            assert!(register_matches(
                &run.workshop,
                machine,
                3,
                ts_ms(*at),
                *value
            ));
        }
        let parts = vm
            .export_series(&format!(r#"signal_parts{{machine="{id}"}}"#))
            .await;
        for (value, at) in parts[0].values.iter().zip(&parts[0].timestamps_ms) {
            assert!(
                parts_match(&run.workshop, machine, ts_ms(*at), *value),
                "{id} parts {value} at {at} ms differs from the simulator"
            );
        }
        let codes = vm
            .export_series(&format!(r#"machine_state_code{{machine="{id}"}}"#))
            .await;
        let stored: Vec<(Timestamp, f64)> = codes[0]
            .timestamps_ms
            .iter()
            .zip(&codes[0].values)
            .map(|(t, v)| (ts_ms(*t), *v))
            .collect();
        assert_changes_stored(&run, machine, &stored);
    }
    // The meter's energy counter (0.01 kWh, low word first) arrives scaled to kWh.
    let energy = vm.export_series(r#"signal_energy_kwh{meter="main"}"#).await;
    assert_eq!(energy.len(), 1, "{energy:?}");
    for (value, at) in energy[0].values.iter().zip(&energy[0].timestamps_ms) {
        let expect = [0, 1, 10, 50].map(|ms| {
            let (kwh, _) = run
                .workshop
                .meter(ts_ms(*at) + SignedDuration::from_millis(ms));
            (kwh * 100.0).floor() / 100.0
        });
        assert!(
            expect.iter().any(|e| (e - value).abs() < 1e-9),
            "energy {value} at {at} ms, simulator {expect:?}"
        );
    }
    // Machines without a data source are in the store too, offline.
    let press = vm
        .wait_for_query(r#"machine_state_code{machine="press01"}"#, |s| {
            !s.is_empty()
        })
        .await;
    assert_eq!(press[0].value, State::Offline.code() as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_to_influxdb_1_through_the_v1_write_api() {
    let influx = Influx1::start_with_auth("agent", "s3cret-pass").await;
    influx.create_db("shopfloor").await;
    let secret_dir = tempfile::tempdir().expect("temp dir");
    let secret_file = secret_dir.path().join("password");
    std::fs::write(&secret_file, "s3cret-pass\n").expect("write the secret");
    let output = format!(
        "url = \"{}\"\napi = \"v1\"\ndatabase = \"shopfloor\"\nusername = \"agent\"\npassword = {{ file = \"{}\" }}",
        influx.url(),
        secret_file.display()
    );
    let run = run_pipeline(&output, |ended| {
        let influx = &influx;
        async move {
            let since = (ended - SignedDuration::from_secs(1)).to_string();
            influx
                .wait_for_rows(
                    "shopfloor",
                    &format!("SELECT spindle_rpm FROM signal WHERE machine = 'cnc04' AND time >= '{since}'"),
                    |rows| !rows.is_empty(),
                )
                .await;
        }
    })
    .await;
    assert_read_only(&run);

    let time_of = |row: &BTreeMap<String, serde_json::Value>| -> Timestamp {
        row["time"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("row without a time: {row:?}"))
    };
    for machine in 0..4 {
        let id = format!("cnc{:02}", machine + 1);
        let rows = influx
            .query_rows(
                "shopfloor",
                &format!(
                    "SELECT spindle_rpm, alarm_code, parts FROM signal WHERE machine = '{id}'"
                ),
            )
            .await;
        assert!(rows.len() >= 9, "{id}: {} polls stored", rows.len());
        for row in &rows {
            let at = time_of(row);
            let rpm = row["spindle_rpm"]
                .as_f64()
                .expect("spindle_rpm is a number");
            assert!(
                register_matches(&run.workshop, machine, 2, at, rpm),
                "{id} rpm {rpm} at {at}"
            );
            let alarm = row["alarm_code"].as_f64().expect("alarm_code is a number");
            assert!(
                register_matches(&run.workshop, machine, 3, at, alarm),
                "{id} alarm {alarm} at {at}"
            );
            let parts = row["parts"].as_f64().expect("parts is a number");
            assert!(
                parts_match(&run.workshop, machine, at, parts),
                "{id} parts {parts} at {at}"
            );
        }
        let states = influx
            .query_rows(
                "shopfloor",
                &format!("SELECT code, state FROM machine_state WHERE machine = '{id}'"),
            )
            .await;
        for row in &states {
            // The string and the code always agree.
            let code = row["code"].as_i64().expect("code is an integer");
            let state = row["state"].as_str().expect("state is a string");
            let named = State::ALL
                .iter()
                .find(|s| s.as_str() == state)
                .expect("a known state");
            assert_eq!(named.code(), code, "{row:?}");
        }
        let stored: Vec<(Timestamp, f64)> = states
            .iter()
            .map(|row| (time_of(row), row["code"].as_f64().unwrap_or(-1.0)))
            .collect();
        assert_changes_stored(&run, machine, &stored);
    }
}
