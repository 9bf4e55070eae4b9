//! Hostile peers against the real `shopfloor run` process: Modbus servers that misbehave in
//! every way the issue lists, an MQTT broker fed abuse, a store that hangs, fails or dawdles,
//! and a spool on a disk that fills up.
//!
//! Each test asserts what the agent promises: it keeps running, says what is wrong (metrics and
//! log), keeps everything else going, drops only by its documented policy, recovers by itself,
//! and keeps its memory bounded. Memory is read from `/proc/<pid>/status` (VmRSS, VmHWM) and
//! held to generous bounds: they are resource bounds, meant to catch a buffer that grows with
//! what a peer sends, not to measure anything. docs/RELIABILITY.md lists what each test shows.

mod common;
mod hostile_peers;

use std::collections::BTreeMap;
use std::time::Duration;

use common::eventually;
use hostile_peers::{Agent, Framing, ModbusMode, ModbusServer, free_addr, site};

/// Modbus devices poll this often; hostile ones cost at most `TIMEOUT` per attempt.
const POLL: &str = "200ms";
const TIMEOUT: Duration = Duration::from_millis(500);

/// A machine and the Modbus device that reads two holding registers of it at `addr`, framed
/// as `framing` says.
fn modbus_device(id: &str, addr: std::net::SocketAddr, framing: Framing) -> String {
    let transport = match framing {
        Framing::Tcp => "tcp",
        Framing::Rtu => "rtu_over_tcp",
    };
    modbus_device_with(id, addr, POLL, "").replace(
        "\n[[modbus]]\n",
        &format!("\n[[modbus]]\ntransport = \"{transport}\"\n"),
    )
}

/// A Modbus TCP [`modbus_device`] polled every `poll`, with `extra` fields.
fn modbus_device_with(id: &str, addr: std::net::SocketAddr, poll: &str, extra: &str) -> String {
    format!(
        r#"
[[machine]]
id = "m_{id}"
kind = "lathe"
cnc = true

[[modbus]]
id = "{id}"
address = "{addr}"
machine = "m_{id}"
poll = "{poll}"
timeout = "{}ms"
field = [
  {{ signal = "a", register = "holding", address = 0 }},
  {{ signal = "b", register = "holding", address = 1 }},{extra}
]
"#,
        TIMEOUT.as_millis()
    )
}

/// The Unix-nanosecond timestamps of the `signal` lines for machine `m_<id>` in `lp`, and
/// whether every one of them carried the honest values (a=1000i, b=1001i).
fn signal_times(lp: &str, id: &str) -> (Vec<i64>, bool) {
    let tag = format!("machine=m_{id},");
    let mut times = Vec::new();
    let mut correct = true;
    for line in lp
        .lines()
        .filter(|l| l.starts_with("signal,") && l.contains(&tag))
    {
        correct &= line.contains("a=1000i") && line.contains("b=1001i");
        if let Some(t) = line.rsplit(' ').next().and_then(|t| t.parse().ok()) {
            times.push(t);
        }
    }
    times.sort_unstable();
    (times, correct)
}

/// The modes both framings share, with what the agent must make of them.
fn hostile_in_either_framing() -> Vec<Hostile> {
    use ModbusMode::*;
    vec![
        (
            "never",
            NeverReplies,
            &["timeout"],
            "no answer within the timeout",
        ),
        (
            "late",
            Late(TIMEOUT + Duration::from_millis(400)),
            &["timeout"],
            "no answer within the timeout",
        ),
        (
            "closes",
            ClosesAfterRequest,
            &["transport"],
            "closed the connection",
        ),
        (
            "short_count",
            ShortByteCount,
            &["protocol"],
            "byte count does not match the quantity",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_modbus_servers_are_marked_down_and_do_not_disturb_the_others() {
    use ModbusMode::*;
    let mut hostile = hostile_in_either_framing();
    hostile.extend::<[Hostile; 5]>([
        (
            "wrong_tid",
            WrongTransactionId,
            &["protocol"],
            "protocol error",
        ),
        // The MBAP header is checked as it arrives: a length no Modbus frame has, or a
        // protocol id other than 0, fails at once as a protocol error instead of waiting the
        // whole timeout for bytes that never come (a timeout would count as `timeout`).
        (
            "len65535",
            Length65535ThenSilence,
            &["protocol"],
            "length 65535 in the MBAP header",
        ),
        (
            "protocol_id",
            ProtocolIdNotZero,
            &["protocol"],
            "protocol id 1 in the MBAP header, not 0",
        ),
        // Random bytes almost always make a protocol id other than 0 (a protocol error at
        // once); the rare rest a length never filled (a timeout).
        ("random", RandomBytes, &["timeout", "protocol"], ""),
        ("other_unit", OtherUnit, &["protocol"], "protocol error"),
    ]);
    hostile_modbus_servers(Framing::Tcp, hostile).await;
}

/// The same against RTU frames in a TCP stream (`transport = "rtu_over_tcp"`, what a
/// transparent serial server or DTU forwards): tokio-modbus's RTU decoder has no length field
/// to trust and resynchronises by dropping bytes, so garbage must end in a bounded wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_rtu_over_tcp_servers_are_marked_down_and_do_not_disturb_the_others() {
    use ModbusMode::*;
    let mut hostile = hostile_in_either_framing();
    hostile.extend::<[Hostile; 4]>([
        // tokio-modbus's RTU decoder drops a byte at a time looking for a frame whose
        // checksum holds, and ends in a timeout; the agent checks the answer's checksum as it
        // arrives and counts and reports a CRC error, not a timeout.
        (
            "bad_crc",
            BadChecksum,
            &["crc"],
            "CRC error: the answer's checksum is",
        ),
        (
            "count255",
            ByteCount255ThenSilence,
            &["timeout"],
            "no answer within the timeout",
        ),
        // After 256 dropped bytes the decoder gives up ("Too many retries"): a protocol
        // error; fewer bytes than that end as a timeout. Bytes that happen to start like a
        // read answer (its function code second) end in a CRC error.
        ("random", RandomBytes, &["timeout", "protocol", "crc"], ""),
        (
            "other_unit",
            OtherUnit,
            &["protocol"],
            "mismatching headers",
        ),
    ]);
    hostile_modbus_servers(Framing::Rtu, hostile).await;
}

/// A hostile device: its id, the server's mode, the error kinds that count as the right
/// reason, and words the `device down` log line must hold.
type Hostile = (
    &'static str,
    ModbusMode,
    &'static [&'static str],
    &'static str,
);

/// Every `hostile` server behind a device of its own, beside two honest ones and one that
/// answers a byte at a time, all framed as `framing` says: each hostile device is marked down
/// with its reason, the others keep their schedule, nothing panics, memory stays put.
async fn hostile_modbus_servers(framing: Framing, hostile: Vec<Hostile>) {
    use ModbusMode::*;
    let dir = tempfile::tempdir().expect("temp dir");
    let web = free_addr();
    let mut config = site(dir.path(), web);
    for (id, mode, _, _) in &hostile {
        let server = ModbusServer::start_framed(*mode, framing).await;
        config.push_str(&modbus_device(id, server.addr, framing));
    }
    // Two honest devices, and one that sends its answer a byte at a time: 13 bytes 15 ms
    // apart is about 200 ms, well within the 500 ms timeout.
    for (id, mode) in [
        ("honest1", Honest),
        ("honest2", Honest),
        ("trickle", OneByteAtATime(Duration::from_millis(15))),
    ] {
        let server = ModbusServer::start_framed(mode, framing).await;
        config.push_str(&modbus_device(id, server.addr, framing));
    }
    let out = dir.path().join("out.lp");
    config.push_str(&format!("\n[[file]]\npath = \"{}\"\n", out.display()));
    let mut agent = Agent::start(dir.path(), &config, web);

    // Every hostile device down, with the right kind of error counted.
    eventually(
        "every hostile device marked down",
        Duration::from_secs(30),
        || async {
            let m = agent.metrics().await;
            let mut waiting = Vec::new();
            for (id, _, kinds, _) in &hostile {
                let errors: f64 = kinds
                    .iter()
                    .map(|k| {
                        m.get(&format!(
                            "shopfloor_poll_errors_total{{device=\"{id}\",kind=\"{k}\"}}"
                        ))
                        .copied()
                        .unwrap_or(0.0)
                    })
                    .sum();
                let up = m
                    .get(&format!("shopfloor_device_up{{device=\"{id}\"}}"))
                    .copied();
                if errors < 2.0 || up != Some(0.0) {
                    waiting.push(format!("{id}: up {up:?}, {kinds:?} errors {errors}"));
                }
            }
            if waiting.is_empty() {
                Ok(())
            } else {
                Err(waiting.join("; "))
            }
        },
    )
    .await;
    agent.assert_running();
    let (rss_before, _) = agent.memory_kib();

    // Ten more seconds of abuse: at least five more attempts at every hostile server.
    tokio::time::sleep(Duration::from_secs(10)).await;
    agent.assert_running();
    // A connection's buffers go with it, so ten seconds of garbage leave the resident set
    // where it was, give or take allocator noise.
    agent.assert_memory_grew_less_than(rss_before, 8 * 1024, "over ten seconds of abuse");
    let m = agent.metrics().await;
    let log = agent.log();

    for (id, _, _, reason) in &hostile {
        // The log says the device went down, and why.
        let down = log
            .lines()
            .find(|l| l.contains(&format!("device={id}}}")) && l.contains("device down"))
            .unwrap_or_else(|| panic!("no `device down` line for {id}\n{log}"));
        assert!(
            down.contains(reason),
            "{id}: reason should say `{reason}`: {down}"
        );
        let polls = m
            .get(&format!("shopfloor_polls_total{{device=\"{id}\"}}"))
            .copied();
        assert_eq!(
            polls,
            Some(0.0),
            "{id} never answered, yet polls = {polls:?}"
        );
    }
    // Nothing panicked on anything a server sent.
    assert!(!log.contains("panicked"), "a task panicked:\n{log}");
    // The log went to a file, not a terminal: plain text, no colour codes for a journal.
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escapes in a log that is not a terminal:\n{log}"
    );
    // tokio-modbus reports a corrupt RTU answer through the `log` crate; bridged, it reaches
    // the agent's log under its own target with the checksum it expected.
    if framing == Framing::Rtu {
        assert!(
            log.lines()
                .any(|l| l.contains("tokio_modbus") && l.contains("Invalid CRC")),
            "tokio-modbus's CRC message is not in the log:\n{log}"
        );
        // A corrupt checksum is counted as a CRC error, never as a timeout.
        let timeouts = m
            .get("shopfloor_poll_errors_total{device=\"bad_crc\",kind=\"timeout\"}")
            .copied()
            .unwrap_or(0.0);
        assert_eq!(timeouts, 0.0, "bad_crc counted as a timeout");
    }

    // The honest devices and the trickling one kept their 200 ms schedule: no gap of a
    // second between polls (a hostile device on the same schedule would cost 500 ms per
    // attempt, eight of them 4 s), and their values are right.
    let lp = std::fs::read_to_string(&out).expect("the file output");
    for id in ["honest1", "honest2", "trickle"] {
        let (times, correct) = signal_times(&lp, id);
        assert!(correct, "{id}: a value was wrong:\n{lp}");
        assert!(
            times.len() >= 40,
            "{id}: only {} polls in over 10 s",
            times.len()
        );
        let gap_ms = times
            .windows(2)
            .map(|w| (w[1] - w[0]) / 1_000_000)
            .max()
            .unwrap_or(0);
        assert!(gap_ms < 1000, "{id}: {gap_ms} ms without a poll");
        assert_eq!(
            m.get(&format!("shopfloor_device_up{{device=\"{id}\"}}")),
            Some(&1.0)
        );
    }

    agent.stop();
}

// ---------------------------------------------------------------------------------------------
// A store that misbehaves
// ---------------------------------------------------------------------------------------------

/// The spool's byte bound in the store and disk tests: reached within seconds.
const SPOOL_MAX_BYTES: u64 = 16 * 1024;

/// `n` honest Modbus devices polled every 100 ms, each with `fields` registers beyond the two
/// every device has: the agent's data while the store or the disk misbehaves.
async fn honest_devices(n: usize, fields: u16) -> String {
    let extra: String = (2..2 + fields)
        .map(|a| format!("\n  {{ signal = \"r{a}\", register = \"holding\", address = {a} }},"))
        .collect();
    let mut config = String::new();
    for i in 1..=n {
        let server = ModbusServer::start(ModbusMode::Honest).await;
        config.push_str(&modbus_device_with(
            &format!("src{i}"),
            server.addr,
            "100ms",
            &extra,
        ));
    }
    config
}

/// The `[[influx]]` output `store` writing to `store`: plain bodies, a 1 s timeout, retries
/// at most 2 s apart.
fn store_output(store: &hostile_peers::Store) -> String {
    format!(
        "\n[[influx]]\nname = \"store\"\nurl = \"{}\"\norg = \"o\"\nbucket = \"b\"\n\
         gzip = false\ntimeout = \"1s\"\nretry_max = \"2s\"\n",
        store.url
    )
}

/// Waits until `value` of the agent's `/metrics` satisfies `ok`; panics with the last value
/// and the end of the agent's log.
async fn wait_for_value(
    agent: &Agent,
    what: &str,
    value: impl Fn(&BTreeMap<String, f64>) -> f64,
    ok: impl Fn(f64) -> bool,
) -> f64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let v = value(&agent.metrics().await);
        if ok(v) {
            return v;
        }
        if std::time::Instant::now() > deadline {
            let log = agent.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!(
                "gave up waiting for {what} (last {v})\nagent log (end):\n{}",
                tail.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the series `series` satisfies `ok`.
async fn wait_for_metric(agent: &Agent, what: &str, series: &str, ok: impl Fn(f64) -> bool) -> f64 {
    wait_for_value(agent, what, |m| m.get(series).copied().unwrap_or(0.0), ok).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_hangs_fails_or_dawdles_fills_the_spool_to_its_cap_and_gets_the_rest_back() {
    use hostile_peers::{Store, StoreMode};
    let store = Store::start(StoreMode::Silent).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let web = free_addr();
    let mut config = site(dir.path(), web);
    config.push_str(&honest_devices(4, 0).await);
    config.push_str(&format!(
        "\n[spool]\nmax_bytes = {SPOOL_MAX_BYTES}\n{}",
        store_output(&store)
    ));
    let mut agent = Agent::start(dir.path(), &config, web);
    let retries = r#"shopfloor_output_errors_total{output="store",kind="retry"}"#;

    // A store that accepts the connection and never answers: the request times out.
    wait_for_metric(&agent, "write timeouts", retries, |v| v >= 2.0).await;
    let log = agent.log();
    assert!(
        log.lines()
            .any(|l| l.contains("write failed") && l.contains("timed out")),
        "no timed-out write in the log:\n{log}"
    );
    let (rss_before, _) = agent.memory_kib();

    // 500 forever: retried with back-off while the spool fills to its cap and then drops the
    // oldest, counted.
    store.set_mode(StoreMode::Error500);
    let full = r#"shopfloor_spool_dropped_lines{reason="full"}"#;
    wait_for_metric(&agent, "lines dropped at the spool's cap", full, |v| {
        v > 0.0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let m = agent.metrics().await;
    let spooled = m.get("shopfloor_spool_bytes").copied().unwrap_or(0.0);
    assert!(
        spooled <= SPOOL_MAX_BYTES as f64,
        "{spooled} bytes in the spool, above max_bytes = {SPOOL_MAX_BYTES}"
    );
    assert!(spooled > 0.0, "the spool should hold the newest records");
    let log = agent.log();
    assert!(
        log.contains("store error (500 Internal Server Error)"),
        "{log}"
    );
    assert!(log.contains("spool full: oldest records dropped"), "{log}");
    assert_eq!(store.lines().len(), 0, "nothing was accepted yet");
    agent.assert_running();
    agent.assert_memory_grew_less_than(rss_before, 8 * 1024, "while the spool filled");

    // The store comes back: the writer's next retry delivers what the spool kept, oldest
    // first, and the spool empties.
    let recovered_at_ns = jiff::Timestamp::now().as_nanosecond() as i64;
    store.set_mode(StoreMode::Accept);
    wait_for_metric(&agent, "the spool drained", "shopfloor_spool_lines", |v| {
        v < 20.0
    })
    .await;
    let lines = store.lines();
    let kept: Vec<i64> = lines
        .iter()
        .filter(|l| l.starts_with("signal,") && l.contains("machine=m_src1,"))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .filter(|t| *t < recovered_at_ns)
        .collect();
    // What was kept is the newest part of the outage, without holes: the spool dropped only
    // from the front. 100 ms polls; a second without one would be a hole.
    assert!(
        kept.len() >= 10,
        "only {} outage lines of src1 delivered",
        kept.len()
    );
    let mut sorted = kept.clone();
    sorted.sort_unstable();
    let gap_ms = sorted
        .windows(2)
        .map(|w| (w[1] - w[0]) / 1_000_000)
        .max()
        .unwrap_or(0);
    assert!(gap_ms < 1000, "a {gap_ms} ms hole in what the spool kept");

    // A slow store (600 ms, under the 1 s timeout) is slow, not failing: lines keep arriving
    // and no request fails.
    store.set_mode(StoreMode::Slow(Duration::from_millis(600)));
    let failed_before = agent.metric(retries).await;
    let delivered_before = store.lines().len();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        store.lines().len() > delivered_before,
        "nothing delivered to the slow store"
    );
    assert_eq!(
        agent.metric(retries).await,
        failed_before,
        "a slow answer counted as failure"
    );

    agent.assert_running();
    agent.assert_memory_grew_less_than(rss_before, 8 * 1024, "by the end");
    agent.stop();
}

// ---------------------------------------------------------------------------------------------
// A full disk
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_drops_the_oldest_records_loudly_and_the_agent_recovers_when_space_returns() {
    use hostile_peers::{SmallDisk, Store, StoreMode};
    let dir = tempfile::tempdir().expect("temp dir");
    let disk = match SmallDisk::mount(&dir.path().join("disk"), "8m") {
        Ok(disk) => disk,
        Err(reason) => {
            println!("skipping the full-disk test: cannot mount a small file system: {reason}");
            return;
        }
    };
    // The store fails, so everything stays in the spool, which only the disk bounds.
    let store = Store::start(StoreMode::Error500).await;
    let web = free_addr();
    // The data directory (the engine's saved state, dead-letter files) is on the small disk
    // too, with the state saved every second.
    let data = disk.dir.join("data");
    let mut config = site(&data, web).replace(
        "offline_after = \"2s\"",
        "offline_after = \"2s\"\nwindow_flush = \"1s\"",
    );
    config.push_str(&honest_devices(8, 20).await);
    let spool = disk.dir.join("spool.db");
    config.push_str(&format!(
        "\n[spool]\npath = \"{}\"\nmax_bytes = 1073741824\n{}",
        spool.display(),
        store_output(&store)
    ));
    let mut agent = Agent::start(dir.path(), &config, web);
    wait_for_metric(&agent, "records spooled", "shopfloor_spool_lines", |v| {
        v > 0.0
    })
    .await;
    let filler = disk.fill("filler", 256 * 1024);
    let (rss_before, _) = agent.memory_kib();

    // The disk fills: reported as an error, a gauge and on the `agent` line's metrics, and the
    // oldest records make room for the newest.
    wait_for_metric(
        &agent,
        "the disk reported full",
        "shopfloor_spool_disk_full",
        |v| v == 1.0,
    )
    .await;
    let full = r#"shopfloor_spool_dropped_lines{reason="full"}"#;
    wait_for_metric(&agent, "records dropped for room", full, |v| v > 0.0).await;
    let log = agent.log();
    assert!(
        log.contains("the spool's disk is full"),
        "no disk-full error:\n{log}"
    );
    // Polling goes on while the disk is full, and appends keep succeeding in the room made.
    let polls = r#"shopfloor_polls_total{device="src1"}"#;
    let appended = "shopfloor_spool_appended_lines_total";
    let (polls_then, appended_then) = (agent.metric(polls).await, agent.metric(appended).await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        agent.metric(polls).await >= polls_then + 10.0,
        "polling stalled on a full disk"
    );
    assert!(
        agent.metric(appended).await > appended_then,
        "nothing appended on a full disk"
    );
    agent.assert_running();
    agent.assert_memory_grew_less_than(rss_before, 8 * 1024, "on the full disk");

    // The filler left 256 KiB for the spool to work in, and a small state file can still fit
    // there now and then; taking the last of it makes every save fail. The engine's state
    // cannot be saved: counted and logged, and the last saved state stays whole.
    let rest = disk.fill("rest", 0);
    let save_errors = "shopfloor_state_save_errors_total";
    wait_for_metric(&agent, "state saves failing", save_errors, |v| v > 0.0).await;
    assert!(
        agent
            .log()
            .contains("cannot save the engine state: a restart would lose the open windows"),
        "no state-save error:\n{}",
        agent.log()
    );
    let state = data.join("engine-state.json");
    if let Ok(saved) = std::fs::read(&state) {
        serde_json::from_slice::<serde_json::Value>(&saved).expect("the saved state is whole");
    }

    // Space returns: the condition clears by itself, and once the store is back the spool
    // drains to it.
    std::fs::remove_file(&filler).expect("remove the filler");
    std::fs::remove_file(&rest).expect("remove the rest");
    wait_for_metric(
        &agent,
        "the disk no longer full",
        "shopfloor_spool_disk_full",
        |v| v == 0.0,
    )
    .await;
    assert!(agent.log().contains("the spool's disk has room again"));
    // And the engine saves its state again: the failures stop and the file is rewritten.
    let removed = std::time::SystemTime::now();
    eventually("the state saved again", Duration::from_secs(10), || async {
        let modified = std::fs::metadata(&state).and_then(|m| m.modified());
        match modified {
            Ok(t) if t > removed => Ok(()),
            other => Err(format!("{}: {other:?}", state.display())),
        }
    })
    .await;
    let failed = agent.metric(save_errors).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        agent.metric(save_errors).await,
        failed,
        "state saves still failing with room on the disk"
    );
    serde_json::from_slice::<serde_json::Value>(&std::fs::read(&state).expect("state file"))
        .expect("the saved state is whole");
    store.set_mode(StoreMode::Accept);
    wait_for_metric(&agent, "the spool drained", "shopfloor_spool_lines", |v| {
        v < 200.0
    })
    .await;
    assert!(!store.lines().is_empty());
    agent.assert_running();
    agent.assert_memory_grew_less_than(rss_before, 8 * 1024, "after the disk had room");
    agent.stop();
    drop(disk);
}

// ---------------------------------------------------------------------------------------------
// MQTT abuse
// ---------------------------------------------------------------------------------------------

/// The sum of every series whose text contains all of `parts`.
fn sum_of(metrics: &BTreeMap<String, f64>, parts: &[&str]) -> f64 {
    metrics
        .iter()
        .filter(|(series, _)| parts.iter().all(|p| series.contains(p)))
        .map(|(_, v)| v)
        .sum()
}

async fn metric_sum(agent: &Agent, parts: &[&str]) -> f64 {
    sum_of(&agent.metrics().await, parts)
}

async fn wait_for_sum(agent: &Agent, what: &str, parts: &[&str], at_least: f64) -> f64 {
    wait_for_value(agent, what, |m| sum_of(m, parts), |v| v >= at_least).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_abuse_is_counted_and_dropped_and_memory_stays_bounded() {
    use rumqttc::{AsyncClient, MqttOptions, QoS};
    const MIB: usize = 1024 * 1024;
    // Mosquitto's own limit lets 10 MB through to the agent, whose ceiling (four times
    // max_packet_size) is 16 MiB: the agent must read them, count them and let them go.
    let broker = common::Mosquitto::start_with_config(&["message_size_limit 12582912"]).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let web = free_addr();
    let out = dir.path().join("out.lp");
    let mut config = site(dir.path(), web);
    config.push_str(&format!(
        r#"
[[machine]]
id = "cnc01"
kind = "lathe"
cnc = true

[[machine]]
id = "cnc02"
kind = "lathe"
cnc = true

[[mqtt]]
id = "plant"
address = "{}:{}"
max_packet_size = 4194304

  [[mqtt.topic]]
  pattern = "plant/{{machine}}/data"
  field = [{{ signal = "spindle_rpm", path = "spindle.rpm" }}, {{ signal = "seq", type = "int" }}]

  [[mqtt.topic]]
  pattern = "plant/{{machine}}/status"
  format = "text"
  field = [{{ signal = "status", type = "string" }}]

  [[mqtt.topic]]
  pattern = "deep/{{machine}}/#"
  field = [{{ signal = "seq", type = "int" }}]

[[file]]
path = "{}"
"#,
        broker.host(),
        broker.port(),
        out.display()
    ));
    let mut agent = Agent::start(dir.path(), &config, web);

    let mut options = MqttOptions::new("abuser", broker.host(), broker.port());
    options.set_max_packet_size(20 * MIB, 20 * MIB);
    let (client, mut events) = AsyncClient::new(options, 1000);
    tokio::spawn(async move {
        loop {
            if events.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let publish = |topic: String, payload: Vec<u8>| {
        let client = client.clone();
        async move {
            client
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await
                .expect("queue a publish");
        }
    };
    // Publishes a good message with `seq` every half second until it is in the file output.
    let publish_until_delivered = |seq: u64, within: Duration| {
        let out = out.clone();
        let log = dir.path().join("agent.log");
        async move {
            let payload = format!(r#"{{"spindle": {{"rpm": 1}}, "seq": {seq}}}"#);
            let started = std::time::Instant::now();
            while !std::fs::read_to_string(&out).is_ok_and(|t| t.contains(&format!("seq={seq}i"))) {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                assert!(
                    started.elapsed() < within,
                    "message {seq} never arrived\n{log}"
                );
                publish("plant/cnc01/data".into(), payload.clone().into_bytes()).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    // Once the agent's subscription is in place, a good message comes through.
    publish_until_delivered(1, Duration::from_secs(30)).await;
    let (rss_start, _) = agent.memory_kib();

    // 10 MB payloads, JSON 100 000 levels deep, invalid UTF-8 as JSON and as text, a topic of
    // 3000 levels.
    let big = |n: u8| {
        let mut p = br#"{"seq": 2, "pad": ""#.to_vec();
        p.resize(10_000_000, b'a' + n);
        p.extend_from_slice(br#""}"#);
        p
    };
    for n in 0..3 {
        publish("plant/cnc01/data".into(), big(n)).await;
    }
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    publish("plant/cnc01/data".into(), deep.into_bytes()).await;
    publish(
        "plant/cnc02/data".into(),
        vec![0xFF, 0xFE, b'{', 0xC3, 0x28],
    )
    .await;
    publish("plant/cnc01/status".into(), vec![b'o', 0xFF, b'k']).await;
    // 150 levels: Mosquitto passes it on (it refuses more than 200 itself, below).
    publish(
        format!("deep/cnc01/{}end", "x/".repeat(148)),
        br#"{"seq": 3}"#.to_vec(),
    )
    .await;

    let plant = r#"broker="plant""#;
    let bad = "shopfloor_mqtt_bad_messages_total";
    let cnc01 = r#"topic="plant/cnc01/data""#;
    let cnc02 = r#"topic="plant/cnc02/data""#;
    let status = r#"topic="plant/cnc01/status""#;
    for (what, topic, kind, n) in [
        ("10 MB payloads", cnc01, r#"kind="oversized""#, 3.0),
        ("deep JSON", cnc01, r#"kind="malformed""#, 1.0),
        ("invalid UTF-8 JSON", cnc02, r#"kind="malformed""#, 1.0),
        ("invalid UTF-8 text", status, r#"kind="malformed""#, 1.0),
        ("the 150-level topic", "", r#"kind="topic""#, 1.0),
    ] {
        wait_for_sum(&agent, what, &[bad, plant, topic, kind], n).await;
    }
    let log = agent.log();
    for (what, words) in [
        ("10 MB", "larger than max_packet_size"),
        ("deep JSON", "recursion limit exceeded"),
        ("invalid UTF-8 JSON", "topic=plant/cnc02/data"),
        ("invalid UTF-8 text", "payload is not UTF-8 text"),
        ("deep topic", "topic of 151 levels"),
    ] {
        assert!(
            log.lines().any(|l| l.contains("WARN") && l.contains(words)),
            "no warning for {what} (`{words}`):\n{log}"
        );
    }
    // Thousands of levels, from a client of its own: Mosquitto itself refuses the publish and
    // drops that client (it allows at most 200 levels), so the agent never sees it.
    {
        let options = MqttOptions::new("deep-abuser", broker.host(), broker.port());
        let (client, mut events) = AsyncClient::new(options, 10);
        let topic = format!("deep/cnc01/{}end", "x/".repeat(3000));
        client
            .publish(topic, QoS::AtLeastOnce, false, br#"{"seq": 4}"#.to_vec())
            .await
            .expect("queue the deep publish");
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Err(e) = events.poll().await {
                    break e.to_string();
                }
            }
        })
        .await;
        let ended = ended.expect("Mosquitto should drop a client publishing 3000 levels");
        assert!(ended.contains("closed"), "{ended}");
        assert!(
            broker
                .log()
                .contains("deep-abuser disconnected due to protocol error")
        );
    }
    agent.assert_running();
    let (rss_abused, _) = agent.memory_kib();

    // Six more 10 MB payloads, one after the other, cost far less than one more each: nothing
    // of them is kept (what growth there is, is the allocator settling at the largest packet).
    for n in 3..9 {
        publish("plant/cnc01/data".into(), big(n)).await;
        let oversized = [bad, plant, cnc01, r#"kind="oversized""#];
        wait_for_sum(
            &agent,
            "a 10 MB payload counted",
            &oversized,
            1.0 + f64::from(n),
        )
        .await;
    }
    agent.assert_memory_grew_less_than(rss_abused, 32 * 1024, "after six more 10 MB payloads");
    let (rss_again, _) = agent.memory_kib();

    // A flood faster than the engine takes it: the agent stops reading (the broker queues or
    // drops, by its own limits), keeps going, and takes a message after the flood.
    for seq in 10..20_010u64 {
        let payload = format!(r#"{{"spindle": {{"rpm": {seq}}}, "seq": {seq}}}"#);
        publish("plant/cnc02/data".into(), payload.into_bytes()).await;
    }
    publish_until_delivered(777_777, Duration::from_secs(40)).await;
    agent.assert_running();
    let messages = metric_sum(&agent, &["shopfloor_mqtt_messages_total", plant]).await;
    assert!(
        messages > 1000.0,
        "only {messages} messages read during the flood"
    );
    agent.assert_memory_grew_less_than(rss_again, 16 * 1024, "during the flood");
    // The 10 MB packets are read whole (the client's buffer holds one), nothing more.
    agent.assert_memory_grew_less_than(rss_start, 96 * 1024, "in all");
    assert!(!agent.log().contains("panicked"));
    agent.stop();
}
