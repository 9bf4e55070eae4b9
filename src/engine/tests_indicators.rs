//! The engine's indicators end to end, with a fake clock and fabricated samples. Every expected
//! number is worked out by hand in the comment beside it.

use std::sync::Arc;

use jiff::civil::date;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;

use super::indicators::Fleet;
use super::machine::MachineTrack;
use super::*;
use crate::agent::config::load_str;
use crate::model::{Sample, SourceEvent, Target, Value};

const SHANGHAI_SHIFT: &str = r#"
[site]
county = "yk"
sector = "cups"
enterprise = "e7"
timezone = "Asia/Shanghai"

[agent]
offline_after = "2h"
heartbeat = "24h"

[calendar]
shift = [{ name = "day", days = ["mon", "tue", "wed", "thu", "fri"], start = "08:00", end = "16:00", breaks = [{ start = "12:00", end = "12:30" }] }]

[[machine]]
id = "cnc01"
kind = "lathe"
cnc = true
parts_signal = "parts"
reject_signal = "rejects"
ideal_cycle = "50s"
value_added_per_part = 50.0

[[machine]]
id = "press01"
kind = "press"
cnc = false
digital = false

[[meter]]
id = "main"
carrier = "electricity"
signal = "energy_kwh"

[[meter]]
id = "water"
carrier = "water"
signal = "total_m3"
unit = "m3"

[energy]
max_gap = "15m"

[green]
tce_per_10k_cny_limit = 0.05

[[state_rules]]
kinds = ["lathe"]
rule = [
  { state = "alarm", when = [{ signal = "alarm", op = "!=", value = 0 }] },
  { state = "running", when = [{ signal = "run", op = "==", value = 1 }] },
]
"#;

fn tz() -> TimeZone {
    TimeZone::get("Asia/Shanghai").unwrap()
}

/// Monday 2026-11-30, local time.
fn at(h: i8, m: i8) -> Timestamp {
    date(2026, 11, 30)
        .at(h, m, 0, 0)
        .to_zoned_datetime(tz())
        .unwrap()
        .timestamp()
}

fn lathe(at: Timestamp, run: i64, alarm: i64, parts: i64, rejects: i64) -> SourceEvent {
    let m: Arc<str> = Arc::from("cnc01");
    let s = |name: &str, v: i64| Sample {
        target: Target::Machine(m.clone()),
        signal: Arc::from(name),
        value: Value::Int(v),
        at,
    };
    SourceEvent::Samples(vec![
        s("run", run),
        s("alarm", alarm),
        s("parts", parts),
        s("rejects", rejects),
    ])
}

fn meter(id: &str, signal: &str, at: Timestamp, value: f64) -> SourceEvent {
    SourceEvent::Samples(vec![Sample {
        target: Target::Meter(Arc::from(id)),
        signal: Arc::from(signal),
        value: Value::Float(value),
        at,
    }])
}

/// A field of a line, by name.
fn field(line: &str, name: &str) -> Option<f64> {
    let fields = line.split(' ').nth(1)?;
    fields.split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| v.trim_end_matches('i').parse().ok())?
    })
}

/// The six state fields of a `machine_time` line, added up.
fn state_seconds(line: &str) -> f64 {
    State::ALL
        .into_iter()
        .map(|s| field(line, contract::machine_time::seconds_in(s)).unwrap_or(f64::NAN))
        .sum()
}

fn find<'a>(out: &'a [String], prefix: &str, tags: &[&str]) -> Vec<&'a String> {
    out.iter()
        .filter(|l| {
            let key = l.split(' ').next().unwrap_or("");
            key.starts_with(&format!("{prefix},"))
                && tags.iter().all(|t| key.split(',').any(|kv| kv == *t))
        })
        .collect()
}

fn engine_at(start: Timestamp) -> Engine {
    Engine::new(&load_str(SHANGHAI_SHIFT, "test.toml").unwrap(), start)
}

/// Midnight after the example shift: the day window closes and is flushed.
fn close_the_day(e: &mut Engine, out: &mut Vec<String>) {
    let day_end = date(2026, 12, 1)
        .at(0, 0, 0, 0)
        .to_zoned_datetime(tz())
        .unwrap()
        .timestamp();
    e.tick(day_end, out);
    e.flush(day_end, out);
}

/// Drives the lathe through the issue's example shift, polling every ten minutes:
/// running 08:00–13:30 (through the 12:00–12:30 break), alarm 13:30–14:30, idle 14:30–16:00.
fn run_the_example_shift(e: &mut Engine, out: &mut Vec<String>) {
    let mut parts = 1000;
    let mut t = at(8, 0);
    while t < at(16, 0) {
        let (run, alarm) = if t < at(13, 30) {
            (1, 0)
        } else if t < at(14, 30) {
            (0, 1021)
        } else {
            (0, 0)
        };
        e.on_event(lathe(t, run, alarm, parts, 10), out);
        e.tick(t, out);
        if run == 1 {
            // 12 parts per 10 minutes of running.
            parts += 12;
        }
        t += SignedDuration::from_mins(10);
    }
    e.tick(at(16, 0), out);
}

#[test]
fn availability_of_the_example_shift_is_five_over_seven_and_a_half() {
    let mut e = engine_at(at(8, 0));
    let mut out = Vec::new();
    run_the_example_shift(&mut e, &mut out);
    e.flush(at(16, 0), &mut out);
    let shift = find(
        &out,
        contract::MEASUREMENT_MACHINE_TIME,
        &["machine=cnc01", "window=shift", "shift=day"],
    );
    let line = shift.last().expect("a shift line");
    // PBT = 8 h − 0.5 h break = 7.5 h = 27 000 s.
    assert_eq!(
        field(line, contract::machine_time::PLANNED_S),
        Some(27_000.0)
    );
    // Running 08:00–13:30 = 5.5 h = 19 800 s, of which 5 h (18 000 s) inside PBT.
    assert_eq!(
        field(line, contract::machine_time::RUNNING_S),
        Some(19_800.0)
    );
    assert_eq!(
        field(line, contract::machine_time::RUNNING_PLANNED_S),
        Some(18_000.0)
    );
    assert_eq!(field(line, contract::machine_time::ALARM_S), Some(3600.0));
    assert_eq!(field(line, contract::machine_time::IDLE_S), Some(5400.0));
    // Every second of the 8 h shift is in exactly one state: 19 800 + 3600 + 5400 = 28 800.
    let sum = state_seconds(line);
    assert_eq!(sum, 28_800.0);
    // Availability = 18 000 / 27 000 = 0.6667.
    let a = field(line, contract::machine_time::AVAILABILITY).unwrap();
    assert!((a - 2.0 / 3.0).abs() < 1e-12, "{a}");
    // Parts: the first reading (1000 at 08:00) sets the counter; it then rises by 12 for each
    // of the 33 running polls 08:00–13:20, so it reads 1000 + 33 × 12 = 1396 from 13:30 on:
    // 396 parts. Rejects stay at 10: 396 good.
    assert_eq!(
        field(line, contract::machine_time::PARTS_TOTAL),
        Some(396.0)
    );
    assert_eq!(field(line, contract::machine_time::PARTS_GOOD), Some(396.0));
    // Effectiveness = 50 s × 396 / 19 800 s = 1.0; quality 1.0; OEE = availability.
    assert!((field(line, contract::machine_time::EFFECTIVENESS).unwrap() - 1.0).abs() < 1e-12);
    assert!((field(line, contract::machine_time::OEE).unwrap() - 2.0 / 3.0).abs() < 1e-12);
}

#[test]
fn the_day_window_adds_up_to_the_whole_day_and_the_fleet_counts_the_register() {
    let mut e = engine_at(at(0, 0));
    let mut out = Vec::new();
    run_the_example_shift(&mut e, &mut out);
    close_the_day(&mut e, &mut out);
    let day = find(
        &out,
        contract::MEASUREMENT_MACHINE_TIME,
        &["machine=cnc01", "window=1d"],
    );
    let line = day.last().unwrap();
    let sum = state_seconds(line);
    assert_eq!(sum, 86_400.0);
    // Offline 00:00–08:00 (28 800 s), and from 17:50, when the 2 h offline_after ran out
    // after the last poll at 15:50, to midnight (6 h 10 min = 22 200 s): 51 000 s.
    assert_eq!(
        field(line, contract::machine_time::OFFLINE_S),
        Some(51_000.0)
    );
    let fleet = find(&out, contract::MEASUREMENT_FLEET, &["window=1d"]);
    let f = fleet.last().unwrap();
    // Register: 2 machines, 1 digital (the lathe, digital = cnc), 1 CNC; the lathe delivered.
    assert_eq!(field(f, contract::fleet::MACHINES_TOTAL), Some(2.0));
    assert_eq!(field(f, contract::fleet::MACHINES_DIGITAL), Some(1.0));
    assert_eq!(field(f, contract::fleet::MACHINES_NETWORKED), Some(1.0));
    // 1 / 2 = 0.5 networked; 1 / 1 of the digital machines; CNC rate 1 / 2.
    assert_eq!(field(f, contract::fleet::NETWORKING_RATE), Some(0.5));
    assert_eq!(
        field(f, contract::fleet::NETWORKING_RATE_DIGITAL),
        Some(1.0)
    );
    assert_eq!(field(f, contract::fleet::CNC_RATE), Some(0.5));
    // CNC utilisation: 18 000 s running in 27 000 s planned = 0.6667.
    assert_eq!(field(f, contract::fleet::CNC_RUNNING_S), Some(18_000.0));
    assert_eq!(field(f, contract::fleet::CNC_PLANNED_S), Some(27_000.0));
    // No machine of kind `robot`: no robot count (the county falls back on the declared one),
    // never 0.
    assert_eq!(field(f, contract::fleet::MACHINES_ROBOT), None);
}

#[test]
fn robots_in_the_register_are_counted_on_the_fleet_line() {
    let config = format!(
        "{SHANGHAI_SHIFT}\n[[machine]]\nid = \"r1\"\nkind = \"robot\"\ncnc = true\n\n[[machine]]\nid = \"r2\"\nkind = \"robot\"\ncnc = true\n"
    );
    let mut e = Engine::new(&load_str(&config, "test.toml").unwrap(), at(0, 0));
    let mut out = Vec::new();
    run_the_example_shift(&mut e, &mut out);
    close_the_day(&mut e, &mut out);
    let fleet = find(&out, contract::MEASUREMENT_FLEET, &["window=1d"]);
    let f = fleet.last().unwrap();
    // Register: lathe, press and two robots = 4 machines, of which 2 are robots (whether or
    // not they delivered data: robots in service is a count of the register).
    assert_eq!(field(f, contract::fleet::MACHINES_TOTAL), Some(4.0));
    assert_eq!(field(f, contract::fleet::MACHINES_ROBOT), Some(2.0));
    // Only the lathe delivered: 1 networked of 4.
    assert_eq!(field(f, contract::fleet::MACHINES_NETWORKED), Some(1.0));
}

#[test]
fn part_counter_resets_are_counted_from_zero() {
    let mut e = engine_at(at(9, 0));
    let mut out = Vec::new();
    // 100 → 110 (+10) → reset to 5 (+5) → 8 (+3) = 18 parts; rejects 0 → 1 → 0 (reset, +0)
    // → 2 (+2) = 3 rejects; good = 18 − 3 = 15.
    for (m, parts, rejects) in [(0, 100, 0), (5, 110, 1), (10, 5, 0), (15, 8, 2)] {
        e.on_event(lathe(at(9, m), 1, 0, parts, rejects), &mut out);
    }
    e.flush(at(9, 20), &mut out);
    let line = find(
        &out,
        contract::MEASUREMENT_MACHINE_TIME,
        &["machine=cnc01", "window=1h"],
    )
    .pop()
    .unwrap()
    .clone();
    assert_eq!(
        field(&line, contract::machine_time::PARTS_TOTAL),
        Some(18.0)
    );
    assert_eq!(field(&line, contract::machine_time::PARTS_GOOD), Some(15.0));
    // Quality = 15 / 18 = 0.8333.
    assert!((field(&line, contract::machine_time::QUALITY).unwrap() - 15.0 / 18.0).abs() < 1e-12);
}

#[test]
fn meter_gaps_are_spread_and_reported_and_resets_counted() {
    let mut e = engine_at(at(9, 0));
    let mut out = Vec::new();
    // 1000 → 1010 kWh in 10 min; then no reading for 30 min (over the 15 min max_gap):
    // 1040, 30 kWh spread over 09:10–09:40 and one gap; then the meter is replaced and reads
    // 2 kWh at 09:50 (a reset: +2). Hour total = 10 + 30 + 2 = 42 kWh.
    for (m, v) in [(0, 1000.0), (10, 1010.0), (40, 1040.0), (50, 2.0)] {
        e.on_event(meter("main", "energy_kwh", at(9, m), v), &mut out);
    }
    e.flush(at(9, 55), &mut out);
    let line = find(
        &out,
        contract::MEASUREMENT_ENERGY,
        &["meter=main", "window=1h"],
    )
    .pop()
    .unwrap()
    .clone();
    assert!(
        (field(&line, contract::energy::QUANTITY).unwrap() - 42.0).abs() < 1e-9,
        "{line}"
    );
    // 42 kWh × 0.1229 kgce/kWh = 5.1618 kgce = 0.0051618 tce.
    assert!((field(&line, contract::energy::TCE).unwrap() - 0.005_161_8).abs() < 1e-12);
    assert_eq!(field(&line, contract::energy::GAPS), Some(1.0));
    assert_eq!(field(&line, contract::energy::RESETS), Some(1.0));
}

#[test]
fn green_figures_and_the_alert_when_the_day_closes_over_its_limit() {
    let mut e = engine_at(at(8, 0));
    let mut out = Vec::new();
    run_the_example_shift(&mut e, &mut out);
    // Electricity 5000 → 5420 kWh; water 300 → 318 m³ over the day.
    e.on_event(meter("main", "energy_kwh", at(8, 0), 5000.0), &mut out);
    e.on_event(meter("main", "energy_kwh", at(16, 0), 5420.0), &mut out);
    e.on_event(meter("water", "total_m3", at(8, 0), 300.0), &mut out);
    e.on_event(meter("water", "total_m3", at(16, 0), 318.0), &mut out);
    let day_end = date(2026, 12, 1)
        .at(0, 0, 0, 0)
        .to_zoned_datetime(tz())
        .unwrap()
        .timestamp();
    e.tick(day_end, &mut out);
    out.clear();
    e.flush(day_end, &mut out);
    let g = find(
        &out,
        contract::MEASUREMENT_GREEN,
        &["window=1d", "va_method=parts", "el_method=calorific"],
    )
    .pop()
    .unwrap()
    .clone();
    // 420 kWh × 0.1229 = 51.618 kgce = 0.051618 tce.
    assert!((field(&g, contract::green::ENERGY_TCE).unwrap() - 0.051_618).abs() < 1e-12);
    assert_eq!(field(&g, contract::green::ELECTRICITY_KWH), Some(420.0));
    assert_eq!(field(&g, contract::green::WATER_T), Some(18.0));
    // 396 good parts × 50 CNY = 19 800 CNY = 1.98 (10k CNY).
    assert!((field(&g, contract::green::VALUE_ADDED_10K_CNY).unwrap() - 1.98).abs() < 1e-12);
    // 0.051618 / 1.98 = 0.02607 tce per 10k CNY; 1.98 / 0.051618 = 38.358; 18 / 1.98 = 9.0909.
    assert!((field(&g, contract::green::TCE_PER_10K_CNY).unwrap() - 0.026_07).abs() < 1e-5);
    assert!((field(&g, contract::green::VALUE_ADDED_PER_TCE).unwrap() - 38.358).abs() < 1e-3);
    assert!((field(&g, contract::green::WATER_T_PER_10K_CNY).unwrap() - 9.0909).abs() < 1e-4);
    assert_eq!(
        field(&g, contract::green::ELECTRICITY_KGCE_PER_KWH),
        Some(0.1229)
    );
    // 0.02607 is under the 0.05 limit: no alert.
    assert!(find(&out, contract::MEASUREMENT_GREEN_ALERT, &[]).is_empty());

    // A second engine whose day used ten times the electricity: 0.2607 > 0.05 → one alert,
    // only once.
    let mut e = engine_at(at(8, 0));
    let mut out = Vec::new();
    run_the_example_shift(&mut e, &mut out);
    e.on_event(meter("main", "energy_kwh", at(8, 0), 5000.0), &mut out);
    e.on_event(meter("main", "energy_kwh", at(16, 0), 9200.0), &mut out);
    e.tick(day_end, &mut out);
    out.clear();
    e.flush(day_end, &mut out);
    let alerts = find(
        &out,
        contract::MEASUREMENT_GREEN_ALERT,
        &["window=1d", "indicator=tce_per_10k_cny"],
    );
    assert_eq!(alerts.len(), 1, "{out:?}");
    // 4200 kWh → 0.51618 tce / 1.98 = 0.26070.
    assert!((field(alerts[0], contract::green_alert::VALUE).unwrap() - 0.260_70).abs() < 1e-5);
    out.clear();
    e.flush(day_end + SignedDuration::from_mins(1), &mut out);
    assert!(
        find(&out, contract::MEASUREMENT_GREEN_ALERT, &[]).is_empty(),
        "alerted once"
    );
}

#[test]
fn a_restart_in_the_middle_of_a_window_continues_it_and_counts_the_downtime_as_offline() {
    let mut out = Vec::new();
    let mut e = engine_at(at(9, 0));
    for m in (0..60).step_by(10) {
        e.on_event(lathe(at(9, m), 1, 0, 0, 0), &mut out);
    }
    e.tick(at(9, 59), &mut out);
    let saved = e.save(at(9, 59));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("engine-state.json");
    persist::save(&path, &saved).unwrap();
    drop(e);

    // The agent comes back at 10:20.
    let mut e = engine_at(at(10, 20));
    out.clear();
    e.restore(
        persist::load(&path).unwrap().unwrap(),
        at(10, 20),
        Resume::AfterStop,
        &mut out,
    );
    // The machine went offline when the agent stopped watching, 09:59.
    let change = find(
        &out,
        contract::MEASUREMENT_MACHINE_STATE,
        &["machine=cnc01"],
    )
    .pop()
    .unwrap()
    .clone();
    assert!(change.contains("state=\"offline\""), "{change}");
    assert!(change.ends_with(&format!(" {}", at(9, 59).as_nanosecond())));
    for m in (20..60).step_by(10) {
        e.on_event(lathe(at(10, m), 1, 0, 0, 0), &mut out);
    }
    e.tick(at(11, 0), &mut out);
    out.clear();
    e.flush(at(11, 0), &mut out);
    let hour = |h: i8| {
        let start = at(h, 0).as_nanosecond().to_string();
        find(
            &out,
            contract::MEASUREMENT_MACHINE_TIME,
            &["machine=cnc01", "window=1h"],
        )
        .into_iter()
        .find(|l| l.ends_with(&start))
        .unwrap()
        .clone()
    };
    // 09:00–10:00: running 59 min, offline 1 min (09:59–10:00).
    assert_eq!(
        field(&hour(9), contract::machine_time::RUNNING_S),
        Some(3540.0)
    );
    assert_eq!(
        field(&hour(9), contract::machine_time::OFFLINE_S),
        Some(60.0)
    );
    // 10:00–11:00: offline 10:00–10:20 (the agent was down), running 10:20–11:00.
    assert_eq!(
        field(&hour(10), contract::machine_time::OFFLINE_S),
        Some(1200.0)
    );
    assert_eq!(
        field(&hour(10), contract::machine_time::RUNNING_S),
        Some(2400.0)
    );
    // The day window carried over: running 59 + 40 = 99 min = 5940 s.
    let day = find(
        &out,
        contract::MEASUREMENT_MACHINE_TIME,
        &["machine=cnc01", "window=1d"],
    )
    .pop()
    .unwrap()
    .clone();
    assert_eq!(field(&day, contract::machine_time::RUNNING_S), Some(5940.0));
}

#[test]
fn a_reload_does_not_count_its_own_pause_toward_offline_after() {
    let secs = SignedDuration::from_secs;
    let mut out = Vec::new();
    let mut e = engine_at(at(9, 0));
    e.on_event(lathe(at(9, 0), 1, 0, 0, 0), &mut out);
    // Silent since 09:00; offline_after is 2 h, so the deadline is 11:00:00. The reload saves
    // at 10:59:30 and the new engine restores at 11:00:00: a 30 s pause.
    let saved_at = at(10, 59) + secs(30);
    e.tick(saved_at, &mut out);
    let saved = e.save(saved_at);
    let mut e = engine_at(at(11, 0));
    out.clear();
    e.restore(saved, at(11, 0), Resume::Reload, &mut out);
    // The pause moves the deadline to 11:00:30: still running at 11:00:20 …
    e.tick(at(11, 0) + secs(20), &mut out);
    assert!(
        find(
            &out,
            contract::MEASUREMENT_MACHINE_STATE,
            &["machine=cnc01"]
        )
        .is_empty(),
        "{out:?}"
    );
    // … and offline at 11:00:31, stamped at the moved deadline.
    e.tick(at(11, 0) + secs(31), &mut out);
    let change = find(
        &out,
        contract::MEASUREMENT_MACHINE_STATE,
        &["machine=cnc01"],
    )
    .pop()
    .unwrap()
    .clone();
    assert!(change.contains("state=\"offline\""), "{change}");
    let deadline = (at(11, 0) + secs(30)).as_nanosecond();
    assert!(change.ends_with(&format!(" {deadline}")), "{change}");
}

#[test]
fn the_spring_forward_day_is_accounted_as_twenty_three_hours() {
    let config = SHANGHAI_SHIFT.replace("Asia/Shanghai", "Europe/Berlin");
    let berlin = TimeZone::get("Europe/Berlin").unwrap();
    let midnight = |d: i8| {
        date(2026, 3, d)
            .at(0, 0, 0, 0)
            .to_zoned_datetime(berlin.clone())
            .unwrap()
            .timestamp()
    };
    let mut e = Engine::new(&load_str(&config, "test.toml").unwrap(), midnight(29));
    let mut out = Vec::new();
    let mut t = midnight(29);
    while t < midnight(30) {
        e.on_event(lathe(t, 1, 0, 0, 0), &mut out);
        e.tick(t, &mut out);
        t += SignedDuration::from_mins(30);
    }
    e.tick(midnight(30), &mut out);
    e.flush(midnight(30), &mut out);
    let day = find(
        &out,
        contract::MEASUREMENT_MACHINE_TIME,
        &["machine=cnc01", "window=1d"],
    )
    .pop()
    .unwrap()
    .clone();
    // Running from midnight to midnight: 23 h = 82 800 s.
    assert_eq!(
        field(&day, contract::machine_time::RUNNING_S),
        Some(82_800.0)
    );
}

proptest! {
    /// Whatever the machine does, every window between the first and the last moment is filled
    /// exactly, running inside PBT never exceeds PBT, and availability stays within [0, 1].
    #[test]
    fn state_seconds_sum_to_the_window_length(
        steps in prop::collection::vec((1i64..7200, 0usize..6), 1..60),
        start_min in 0i64..1440,
    ) {
        let cfg = load_str(SHANGHAI_SHIFT, "test.toml").unwrap();
        let calendar = Calendar::new(&cfg.calendar, tz());
        let start = at(0, 0) + SignedDuration::from_mins(start_min);
        let mut m = MachineTrack::new(&cfg.machines[0], &cfg.state_rules, &[], start);
        let mut out = Vec::new();
        let mut t = start;
        for (gap, state) in steps {
            t += SignedDuration::from_secs(gap);
            // Ticks, late changes and changes stamped before the last tick all mix.
            if gap % 3 == 0 {
                m.account_to(t, &calendar);
            }
            m.change_state(State::ALL[state], t - SignedDuration::from_secs(gap % 5), &calendar, &mut out);
        }
        let end = t + SignedDuration::from_secs(1);
        m.account_to(end, &calendar);
        for (w, totals) in &m.windows {
            prop_assert!(totals.running_busy_ns <= totals.planned_busy_ns);
            prop_assert!(totals.state_ns.iter().all(|ns| *ns >= 0), "{totals:?}");
            let a = indicators::availability(totals.running_busy_ns as f64, totals.planned_busy_ns as f64);
            prop_assert!(a.is_none_or(|a| (0.0..=1.0).contains(&a)));
            if w.start >= start && w.end <= end {
                prop_assert_eq!(totals.accounted_ns(), timemodel::nanos(w.start, w.end), "{:?}", w);
            }
        }
    }

    /// Rates stay within [0, 1], and two enterprises together have the rate of their summed
    /// numerators over their summed denominators.
    #[test]
    fn fleet_rates_are_fractions_and_add_by_numerators_and_denominators(
        a in fleet(), b in fleet(),
    ) {
        for f in [a, b, a.add(&b)] {
            for r in [f.networking_rate(), f.networking_rate_digital(), f.cnc_rate(), f.cnc_utilisation()] {
                prop_assert!(r.is_none_or(|r| (0.0..=1.0).contains(&r)));
            }
        }
        let both = a.add(&b);
        let expect = (a.machines_networked + b.machines_networked) as f64
            / (a.machines_total + b.machines_total) as f64;
        if let Some(r) = both.networking_rate() {
            prop_assert!((r - expect).abs() < 1e-12);
        }
        let util = (a.cnc_running_s + b.cnc_running_s) / (a.cnc_planned_s + b.cnc_planned_s);
        if let Some(u) = both.cnc_utilisation() {
            prop_assert!((u - util).abs() < 1e-12);
        }
    }
}

/// A fleet whose counts are consistent: networked ≤ total, digital ≤ total, and so on.
fn fleet() -> impl Strategy<Value = Fleet> {
    (0u64..300).prop_flat_map(|total| {
        (Just(total), 0..=total, 0..=total, 0..=total).prop_flat_map(
            |(total, digital, cnc, networked)| {
                (
                    Just((total, digital, cnc, networked)),
                    0..=networked.min(digital),
                    0.0..1e6f64,
                    0.0..1.0f64,
                )
                    .prop_map(
                        |((total, digital, cnc, networked), dn, planned, share)| Fleet {
                            machines_total: total,
                            machines_digital: digital,
                            machines_cnc: cnc,
                            machines_networked: networked,
                            machines_digital_networked: dn,
                            cnc_running_s: planned * share,
                            cnc_planned_s: planned,
                        },
                    )
            },
        )
    })
}

#[test]
fn a_machine_meter_splits_its_energy_by_state_and_per_good_part() {
    let config = SHANGHAI_SHIFT.replace(
        "[energy]",
        "[[meter]]\nid = \"m1\"\ncarrier = \"electricity\"\nscope = \"cnc01\"\nsignal = \"energy_kwh\"\n\n[energy]",
    );
    let mut e = Engine::new(&load_str(&config, "test.toml").unwrap(), at(9, 0));
    let mut out = Vec::new();
    // Running 09:00–09:30 making 10 parts per 10 minutes (0 → 30), idle 09:30–10:00.
    for (m, run, parts) in [
        (0, 1, 0),
        (10, 1, 10),
        (20, 1, 20),
        (30, 0, 30),
        (40, 0, 30),
        (50, 0, 30),
    ] {
        e.on_event(lathe(at(9, m), run, 0, parts, 0), &mut out);
        e.tick(at(9, m), &mut out);
    }
    // The machine's meter: 0 kWh at 09:00, 30 kWh at 10:00.
    e.on_event(meter("m1", "energy_kwh", at(9, 0), 0.0), &mut out);
    e.on_event(meter("m1", "energy_kwh", at(10, 0), 30.0), &mut out);
    e.tick(at(10, 0), &mut out);
    out.clear();
    e.flush(at(10, 0), &mut out);
    let start = at(9, 0).as_nanosecond().to_string();
    let line = find(
        &out,
        contract::MEASUREMENT_ENERGY,
        &["meter=m1", "window=1h", "scope=cnc01"],
    )
    .into_iter()
    .find(|l| l.ends_with(&start))
    .unwrap()
    .clone();
    // Half of the hour running, half idle: 15 kWh each.
    assert!(
        (field(&line, contract::energy::QUANTITY_RUNNING).unwrap() - 15.0).abs() < 1e-9,
        "{line}"
    );
    assert!((field(&line, contract::energy::QUANTITY_IDLE).unwrap() - 15.0).abs() < 1e-9);
    assert_eq!(field(&line, contract::energy::QUANTITY_ALARM), Some(0.0));
    // 30 kWh for 30 good parts: 1 kWh per part.
    assert!((field(&line, contract::energy::PER_GOOD_PART).unwrap() - 1.0).abs() < 1e-9);
    // The site meter has no reading, and a machine meter never stands in for a site meter of
    // the same carrier: the day's electricity comes from "main", which read nothing.
    let g = find(&out, contract::MEASUREMENT_GREEN, &["window=1d"])
        .pop()
        .unwrap()
        .clone();
    assert_eq!(field(&g, contract::green::ELECTRICITY_KWH), Some(0.0));
}

/// The example site with the main meter's register counting to 999 999.99 kWh (modulus
/// 1 000 000), and `extra` keys for it.
fn engine_with_rollover(start: Timestamp, extra: &str) -> Engine {
    let config = SHANGHAI_SHIFT.replace(
        "signal = \"energy_kwh\"\n",
        &format!("signal = \"energy_kwh\"\nrollover = 1000000.0\n{extra}"),
    );
    Engine::new(&load_str(&config, "test.toml").unwrap(), start)
}

fn hour_energy_line(out: &[String]) -> String {
    find(
        out,
        contract::MEASUREMENT_ENERGY,
        &["meter=main", "window=1h"],
    )
    .pop()
    .unwrap()
    .clone()
}

#[test]
fn a_meter_reset_just_below_its_rollover_is_a_reset_not_phantom_energy() {
    let mut e = engine_with_rollover(at(9, 0), "");
    let mut out = Vec::new();
    let ms = |n: i64| at(9, 0) + SignedDuration::from_millis(n);
    // 3.6 kW on a 0.01 kWh register: one step every 10 s, 999 992.95 → 999 992.99 from
    // 09:00:00 to 09:00:40 (+0.04 kWh; recent rate 0.01 kWh / 10 s = 3.6 kW).
    for (i, v) in [999_992.95, 999_992.96, 999_992.97, 999_992.98, 999_992.99]
        .into_iter()
        .enumerate()
    {
        e.on_event(
            meter("main", "energy_kwh", ms(i as i64 * 10_000), v),
            &mut out,
        );
    }
    // 100 ms later the counter reads 0.00: a wrap would mean 1 000 000 − 999 992.99 = 7.01 kWh
    // in 0.1 s (252 360 kW), over 2 × 3.6 kW × 0.1 s = 0.0002 kWh: a reset, counting from 0.
    e.on_event(meter("main", "energy_kwh", ms(40_100), 0.0), &mut out);
    // 10 s later 0.01 (+0.01). Hour total = 0.04 + 0 + 0.01 = 0.05 kWh, not 7.06.
    e.on_event(meter("main", "energy_kwh", ms(50_100), 0.01), &mut out);
    e.flush(at(9, 5), &mut out);
    let line = hour_energy_line(&out);
    let quantity = field(&line, contract::energy::QUANTITY).unwrap();
    assert!((quantity - 0.05).abs() < 1e-6, "{line}");
    assert_eq!(field(&line, contract::energy::RESETS), Some(1.0), "{line}");
    assert_eq!(
        field(&line, contract::energy::ROLLOVERS),
        Some(0.0),
        "{line}"
    );
    assert_eq!((e.meter_resets, e.meter_rollovers), (1, 0));
}

#[test]
fn a_reset_with_no_rate_yet_is_judged_by_the_rated_maximum() {
    // The same reset as the first drop the meter shows: no recent rate, only `max_rate`.
    let mut e = engine_with_rollover(at(9, 0), "max_rate = 10.0\n");
    let mut out = Vec::new();
    e.on_event(meter("main", "energy_kwh", at(9, 0), 999_992.99), &mut out);
    // 100 ms later 0.00: 7.01 kWh would need 252 360 kW; 10 kW allows 10 × 0.1 / 3600 =
    // 0.000 28 kWh. A reset, +0.
    let t = at(9, 0) + SignedDuration::from_millis(100);
    e.on_event(meter("main", "energy_kwh", t, 0.0), &mut out);
    e.flush(at(9, 5), &mut out);
    let line = hour_energy_line(&out);
    assert!(
        field(&line, contract::energy::QUANTITY).unwrap().abs() < 1e-9,
        "{line}"
    );
    assert_eq!(field(&line, contract::energy::RESETS), Some(1.0), "{line}");
    assert_eq!(
        field(&line, contract::energy::ROLLOVERS),
        Some(0.0),
        "{line}"
    );
}

#[test]
fn a_true_rollover_adds_the_exact_energy_and_is_counted() {
    let mut e = engine_with_rollover(at(9, 0), "");
    let mut out = Vec::new();
    // 3.6 kW: +0.06 kWh a minute, 999 999.70 at 09:00 to 999 999.94 at 09:04 (+0.24).
    for (m, v) in [
        (0, 999_999.70),
        (1, 999_999.76),
        (2, 999_999.82),
        (3, 999_999.88),
        (4, 999_999.94),
    ] {
        e.on_event(meter("main", "energy_kwh", at(9, m), v), &mut out);
    }
    // 09:05 reads 0.00: a wrap of 1 000 000 − 999 999.94 + 0 = 0.06 kWh in a minute, within
    // 2 × 3.6 kW × 1/60 h = 0.12 kWh. Then 0.06 at 09:06 (+0.06).
    // Hour total = 0.24 + 0.06 + 0.06 = 0.36 kWh.
    e.on_event(meter("main", "energy_kwh", at(9, 5), 0.0), &mut out);
    e.on_event(meter("main", "energy_kwh", at(9, 6), 0.06), &mut out);
    e.flush(at(9, 10), &mut out);
    let line = hour_energy_line(&out);
    let quantity = field(&line, contract::energy::QUANTITY).unwrap();
    assert!((quantity - 0.36).abs() < 1e-6, "{line}");
    assert_eq!(
        field(&line, contract::energy::ROLLOVERS),
        Some(1.0),
        "{line}"
    );
    assert_eq!(field(&line, contract::energy::RESETS), Some(0.0), "{line}");
    assert_eq!((e.meter_resets, e.meter_rollovers), (0, 1));
}

#[test]
fn a_meter_only_site_writes_energy_with_value_added_not_measured() {
    let config = r#"
[site]
county = "yk"
sector = "cookware"
enterprise = "e42"
timezone = "Asia/Shanghai"

[[meter]]
id = "main"
carrier = "electricity"
signal = "energy_kwh"
"#;
    let mut e = Engine::new(&load_str(config, "test.toml").unwrap(), at(8, 0));
    let mut out = Vec::new();
    // 5000 → 5420 kWh: 420 kWh × 0.1229 = 51.618 kgce = 0.051618 tce.
    e.on_event(meter("main", "energy_kwh", at(8, 0), 5000.0), &mut out);
    e.on_event(meter("main", "energy_kwh", at(16, 0), 5420.0), &mut out);
    let day_end = date(2026, 12, 1)
        .at(0, 0, 0, 0)
        .to_zoned_datetime(tz())
        .unwrap()
        .timestamp();
    e.tick(day_end, &mut out);
    out.clear();
    e.flush(day_end, &mut out);
    let g = find(
        &out,
        contract::MEASUREMENT_GREEN,
        &["window=1d", "va_method=none"],
    )
    .pop()
    .unwrap_or_else(|| panic!("{out:?}"))
    .clone();
    assert!((field(&g, contract::green::ENERGY_TCE).unwrap() - 0.051_618).abs() < 1e-12);
    // No value-added source: value added and every intensity absent, never 0.
    for name in [
        contract::green::VALUE_ADDED_10K_CNY,
        contract::green::TCE_PER_10K_CNY,
        contract::green::VALUE_ADDED_PER_TCE,
        contract::green::WATER_T_PER_10K_CNY,
    ] {
        assert_eq!(field(&g, name), None, "{name} in {g}");
    }
}

/// An outlet record of the wastewater outlet `ww1`: the flow's total over the period.
fn discharge(period: crate::model::OutletPeriod, at: Timestamp, m3: f64) -> SourceEvent {
    SourceEvent::Outlet(crate::model::OutletRecord {
        outlet: Arc::from("ww1"),
        name: Arc::from("Outlet 1"),
        kind: "wastewater",
        period,
        cn: match period {
            crate::model::OutletPeriod::Day => 2031,
            _ => 2061,
        },
        at,
        values: vec![crate::model::OutletValue {
            pollutant: Arc::from("wastewater_flow"),
            unit: Arc::from("L/s"),
            avg: Some(m3 / 3.6),
            cou: Some(m3),
            flag: Some("N"),
            may_alert: true,
            ..Default::default()
        }],
        discharged_m3: Some(m3),
    })
}

#[test]
fn wastewater_per_value_added_stands_beside_energy_and_water_and_each_is_absent_unmeasured() {
    use crate::model::OutletPeriod::{Day, Hour};
    let day_end = date(2026, 12, 1)
        .at(0, 0, 0, 0)
        .to_zoned_datetime(tz())
        .unwrap()
        .timestamp();
    // The green line of 2026-11-30, whatever other days the flush writes.
    let day_start = format!(" {}", at(0, 0).as_nanosecond());
    let green_day = |out: &[String]| {
        find(out, contract::MEASUREMENT_GREEN, &["window=1d"])
            .into_iter()
            .rfind(|l| l.ends_with(&day_start))
            .cloned()
            .unwrap()
    };
    let basis = |line: &str| {
        line.split("wastewater_basis=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .map(str::to_string)
    };

    // Hourly totals only: 9 + 9 + 7.2 = 25.2 t; the 09:00 hour sent twice counts once. With a
    // wastewater limit of 10 t per 10k CNY.
    let limited = SHANGHAI_SHIFT.replace(
        "[green]\n",
        "[green]\nwastewater_t_per_10k_cny_limit = 10.0\n",
    );
    let mut e = Engine::new(&load_str(&limited, "test.toml").unwrap(), at(8, 0));
    let mut out = Vec::new();
    run_the_example_shift(&mut e, &mut out);
    // The electricity meter 5000 → 5420 kWh and the water meter 300 → 318 m³ over the day
    // (as a DL/T 645 and a CJ/T 188 meter deliver them: counters), beside the outlet's logger.
    e.on_event(meter("main", "energy_kwh", at(8, 0), 5000.0), &mut out);
    e.on_event(meter("main", "energy_kwh", at(16, 0), 5420.0), &mut out);
    e.on_event(meter("water", "total_m3", at(8, 0), 300.0), &mut out);
    e.on_event(meter("water", "total_m3", at(16, 0), 318.0), &mut out);
    for (h, m3) in [(8, 9.0), (9, 9.0), (9, 9.0), (10, 7.2)] {
        e.on_event(discharge(Hour, at(h, 0), m3), &mut out);
    }
    e.tick(day_end, &mut out);
    out.clear();
    e.flush(day_end, &mut out);
    let g = green_day(&out);
    assert!((field(&g, contract::green::WASTEWATER_T).unwrap() - 25.2).abs() < 1e-12);
    assert_eq!(basis(&g).as_deref(), Some("hourly"));
    // Value added 396 good parts × 50 CNY = 1.98 (10k CNY): 25.2 / 1.98 = 12.7273 t per 10k CNY.
    assert!((field(&g, contract::green::WASTEWATER_T_PER_10K_CNY).unwrap() - 12.7273).abs() < 1e-4);
    // The programme's three green figures on the one line (Table 1): energy from the
    // electricity meter, 420 kWh × 0.1229 kgce/kWh = 0.051618 tce, 0.051618 / 1.98 = 0.02607
    // tce per 10k CNY; water from the water meter, 18 t / 1.98 = 9.0909 t per 10k CNY; and the
    // wastewater above, 12.7273 t per 10k CNY.
    assert!((field(&g, contract::green::ENERGY_TCE).unwrap() - 0.051_618).abs() < 1e-12);
    assert!((field(&g, contract::green::TCE_PER_10K_CNY).unwrap() - 0.026_07).abs() < 1e-5);
    assert_eq!(field(&g, contract::green::WATER_T), Some(18.0));
    assert!((field(&g, contract::green::WATER_T_PER_10K_CNY).unwrap() - 9.0909).abs() < 1e-4);
    // 12.7273 > 10: the closed day opens one indicator alert, stamped at the day's end; the
    // energy intensity (0.02607 under its 0.05) opens none.
    let alerts = find(&out, contract::MEASUREMENT_ALERT, &[]);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert!(alerts[0].contains("kind=indicator,subject=wastewater_t_per_10k_cny "));
    assert!(
        alerts[0].contains("open=true")
            && alerts[0].ends_with(&format!(" {}", day_end.as_nanosecond()))
    );
    assert!((field(alerts[0], contract::alert::VALUE).unwrap() - 12.7273).abs() < 1e-4);

    // The logger's daily total then wins over the summed hours: 30 t / 1.98 = 15.1515.
    e.on_event(discharge(Day, at(0, 0), 30.0), &mut out);
    out.clear();
    e.flush(day_end + SignedDuration::from_mins(1), &mut out);
    let g = green_day(&out);
    assert_eq!(field(&g, contract::green::WASTEWATER_T), Some(30.0));
    assert_eq!(basis(&g).as_deref(), Some("daily"));
    assert!((field(&g, contract::green::WASTEWATER_T_PER_10K_CNY).unwrap() - 15.1515).abs() < 1e-4);
    // November's only day with a discharge: 30 t.
    let november = date(2026, 11, 1)
        .to_zoned_datetime(tz())
        .unwrap()
        .timestamp()
        .as_nanosecond();
    let month = find(&out, contract::MEASUREMENT_GREEN, &["window=1mo"])
        .into_iter()
        .find(|l| l.ends_with(&format!(" {november}")))
        .cloned()
        .unwrap();
    assert_eq!(field(&month, contract::green::WASTEWATER_T), Some(30.0));

    // Without a logger: wastewater not measured (absent, not 0).
    let mut e = engine_at(at(8, 0));
    let mut out = Vec::new();
    run_the_example_shift(&mut e, &mut out);
    e.tick(day_end, &mut out);
    out.clear();
    e.flush(day_end, &mut out);
    let g = green_day(&out);
    assert!(field(&g, contract::green::VALUE_ADDED_10K_CNY).is_some());
    assert_eq!(field(&g, contract::green::WASTEWATER_T), None);
    assert!(!g.contains("wastewater"), "{g}");
    // Here the two meters are configured but delivered nothing all day: energy and water
    // were not measured either, and are absent, not 0 (issue 15).
    for name in [
        contract::green::ENERGY_TCE,
        contract::green::ELECTRICITY_KWH,
        contract::green::WATER_T,
        contract::green::TCE_PER_10K_CNY,
        contract::green::WATER_T_PER_10K_CNY,
    ] {
        assert_eq!(field(&g, name), None, "{name} in {g}");
    }
}

/// What the board judges today's figures by: the `[green]` limit, which meters exist, which
/// measured, whether value added is known and whether a shift is on. Before the Monday shift
/// (07:00) nothing is measured and no shift is on; at 10:00, with the shift on, the meter's
/// two readings and the lathe's parts, energy is measured and value added known.
#[test]
fn the_snapshot_tells_the_board_the_limit_and_why_a_figure_is_absent() {
    let mut e = engine_at(at(7, 0));
    let mut out = Vec::new();
    let early = e.snapshot(at(7, 0), 0);
    assert_eq!(early.limits.tce_per_10k_cny, Some(0.05));
    assert_eq!(early.limits.water_t_per_10k_cny, None);
    // Both carriers have a meter configured; neither delivered a reading yet.
    assert!(early.meters_configured.energy && early.meters_configured.water);
    assert!(!early.metered.energy && !early.metered.water);
    assert!(!early.value_added_known);
    assert!(early.outside_calendar, "07:00 is before the 08:00 shift");

    let mut parts = 1000;
    let mut t = at(8, 0);
    while t <= at(10, 0) {
        e.on_event(lathe(t, 1, 0, parts, 10), &mut out);
        e.on_event(
            meter("main", "energy_kwh", t, (parts - 1000) as f64 + 1000.0),
            &mut out,
        );
        e.tick(t, &mut out);
        parts += 12;
        t += SignedDuration::from_mins(10);
    }
    let on = e.snapshot(at(10, 0), 0);
    assert!(!on.outside_calendar, "10:00 is in the shift");
    assert!(on.metered.energy && !on.metered.water);
    assert!(on.value_added_known);
    let g = on.green_today.expect("today's green figures");
    assert!(g.value_added_10k_cny > 0.0 && g.energy_tce > 0.0, "{g:?}");
    // The break (12:00–12:30) is inside the shift: the calendar counts it as on.
    assert!(!e.snapshot(at(12, 15), 0).outside_calendar);
    assert!(e.snapshot(at(17, 0), 0).outside_calendar);
}
