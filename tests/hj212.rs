//! The HJ 212 receiver against a test data logger written from HJ 212-2017
//! (tests/hj212/logger.py, its own CRC and framing): a day of minute and hourly data and the
//! daily total of a wastewater outlet, sent fast, with a split packet, a bad CRC, a wrong
//! password, an unknown MN, a maintenance period and an hour over the COD limit.
//!
//! The agent runs in-process with a `[[file]]` output, which is what the store would receive;
//! the test reads the lines back from it, the refusals from the agent's metrics and the alerts
//! from its board's snapshot.

mod common;
#[path = "support/python.rs"]
mod python;

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::eventually;
use jiff::tz::TimeZone;
use shopfloor::{agent, shutdown};

const MN: &str = "88888880000001";
const PW: &str = "pw-7Hq2Lz";
const WAIT: Duration = Duration::from_secs(30);

fn config(data: &Path, port: u16, pw_file: &Path) -> String {
    format!(
        r#"
[site]
county = "wuyi"
sector = "cookware"
enterprise = "e1"
timezone = "Asia/Shanghai"

[agent]
data_dir = "{data}"
window_flush = "1s"

[web]
enabled = false

[[hj212]]
id = "outlets"
listen = "127.0.0.1:{port}"
allow = ["127.0.0.0/8"]

  [[hj212.logger]]
  mn = "{MN}"
  password = {{ file = "{pw}" }}
  outlet = "ww1"
  name = "Plating wastewater"
  kind = "wastewater"
  pollutant = [{{ code = "w01018", limit = 100.0 }}]

[[file]]
path = "{data}/records.lp"
"#,
        data = data.display(),
        pw = pw_file.display(),
    )
}

/// `hour`:00 on `day` in the site's zone.
fn local(day: jiff::civil::Date, hour: i8) -> jiff::Timestamp {
    day.at(hour, 0, 0, 0)
        .to_zoned_datetime(TimeZone::get("Asia/Shanghai").unwrap())
        .unwrap()
        .timestamp()
}

/// The refusals counted for `reason`.
fn refused(metrics: &shopfloor::metrics::Metrics, reason: &str) -> u64 {
    metrics
        .read()
        .iter()
        .filter(|m| m.name == "shopfloor_hj212_refused_total")
        .filter(|m| m.labels.contains(&("reason", reason.to_string())))
        .map(|m| m.value)
        .sum()
}

/// Starts the agent with the test config, `listener_extra` added to the `[[hj212]]` table and
/// `web_extra` to `[web]`.
fn start(
    dir: &Path,
    listener_extra: &str,
    web_extra: &str,
) -> (u16, shopfloor::shutdown::Trigger, agent::Running) {
    shopfloor::install_crypto_provider();
    let pw_file = dir.join("hj212-pw");
    std::fs::write(&pw_file, format!("{PW}\n")).unwrap();
    let port = common::free_port();
    let text = config(dir, port, &pw_file)
        .replace(
            "allow = [\"127.0.0.0/8\"]\n",
            &format!("allow = [\"127.0.0.0/8\"]\n{listener_extra}"),
        )
        .replace(
            "enabled = false\n",
            &format!("enabled = false\n{web_extra}"),
        );
    let cfg = agent::config::load_str(&text, "test.toml").unwrap_or_else(|d| panic!("{d}"));
    let (trigger, shutdown) = shutdown::channel();
    let running = agent::start(&cfg, shutdown).expect("agent starts");
    (port, trigger, running)
}

/// Runs the test logger for `day` against the agent's port with `extra` arguments; its summary.
async fn run_logger(port: u16, day: jiff::civil::Date, extra: &[&str]) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/hj212/logger.py");
    let day = day.strftime("%Y%m%d").to_string();
    let extra: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
    let python_bin = python::python();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python_bin)
            .args([script, "--port", &port.to_string(), "--mn", MN, "--pw", PW])
            .args(["--day", &day])
            .args(&extra)
            .output()
            .expect("the test logger runs")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "test logger failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn lines_with<'a>(records: &'a str, prefix: &str, has: &[&str]) -> Vec<&'a str> {
    records
        .lines()
        .filter(|l| l.starts_with(prefix) && has.iter().all(|h| l.contains(h)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_of_logger_data_is_stored_with_flags_bad_packets_refused_and_one_alert_closed() {
    let dir = tempfile::tempdir().unwrap();
    // The alert webhook's receiver: an axum server that keeps every body posted to it.
    let posted: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let hook = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hook", hook.local_addr().unwrap());
    let keep = posted.clone();
    let receiver = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
            let keep = keep.clone();
            async move { keep.lock().unwrap().push(body) }
        }),
    );
    let hook_task = tokio::spawn(async move { axum::serve(hook, receiver).await });
    let (port, trigger, running) =
        start(dir.path(), "", &format!("alert_webhook = \"{hook_url}\"\n"));
    let metrics = running.metrics.clone();
    let snapshots = running.snapshots.clone();

    // Yesterday in the site's zone: a closed day, whose windows the engine no longer keeps.
    let tz = TimeZone::get("Asia/Shanghai").unwrap();
    let yesterday = jiff::Timestamp::now()
        .to_zoned_datetime(tz.clone())
        .date()
        .yesterday()
        .unwrap();
    let summary = run_logger(port, yesterday, &[]).await;
    // Acknowledgements: 1440 minute packets, 23 whole hourly packets, the two parts of the
    // split one, the daily one. Every one came back with its QN (the logger checks).
    assert_eq!(summary["acks"], 1440 + 23 + 2 + 1, "{summary}");
    // Nothing answered the damaged, the wrongly signed and the unknown packets.
    for what in ["bad_crc", "wrong_pw", "unknown_mn"] {
        assert_eq!(summary["silent"][what], true, "{what}: {summary}");
    }

    let records_path = dir.path().join("records.lp");
    let read = || std::fs::read_to_string(&records_path).unwrap_or_default();
    eventually(
        "the day's lines, the alert and the discharge",
        WAIT,
        || async {
            let r = read();
            let minute = lines_with(&r, "outlet,", &["cn=2051"]).len();
            let hourly = lines_with(&r, "outlet,", &["cn=2061"]).len();
            let closed = lines_with(&r, "alert,", &["open=false"]).len();
            let daily = lines_with(&r, "green,", &["wastewater_basis=\"daily\""]).len();
            if minute >= 1440 * 4 && hourly >= 24 * 4 && closed >= 1 && daily >= 2 {
                Ok(())
            } else {
                Err(format!(
                    "{minute} minute, {hourly} hourly, {closed} closed alerts, {daily} daily totals"
                ))
            }
        },
    )
    .await;
    let r = read();

    // Every minute and every hour, each pollutant once (the split hour merged: four lines).
    let noon = local(yesterday, 12);
    let eight = local(yesterday, 8);
    let stamp = |t: jiff::Timestamp| format!(" {}", t.as_nanosecond());
    assert_eq!(lines_with(&r, "outlet,", &["cn=2051"]).len(), 1440 * 4);
    assert_eq!(lines_with(&r, "outlet,", &["cn=2061"]).len(), 24 * 4);
    let split_hour = lines_with(&r, "outlet,", &["cn=2061", &stamp(eight)]);
    assert_eq!(split_hour.len(), 4, "{split_hour:?}");
    // Values with their flags and units: COD at noon 60 + 12 = 72 mg/L, normal.
    let cod_noon = lines_with(
        &r,
        "outlet,",
        &["pollutant=cod", "cn=2061", "unit=mg/L", &stamp(noon)],
    );
    assert_eq!(cod_noon.len(), 1, "{cod_noon:?}");
    assert!(
        cod_noon[0].contains("avg=72.0,") && cod_noon[0].contains("flag=\"N\""),
        "{}",
        cod_noon[0]
    );
    // The maintenance hours 03:00 and 04:00, flagged M, minute and hourly alike.
    let maintenance = lines_with(&r, "outlet,", &["pollutant=cod", "flag=\"M\""]);
    assert_eq!(maintenance.len(), 2 * 60 + 2, "{}", maintenance.len());
    // Nothing of the refused packets.
    for value in ["777.7", "888.8", "999.9"] {
        assert!(
            !r.contains(value),
            "a refused packet's value {value} was stored"
        );
    }
    let refused = |reason: &str| refused(&metrics, reason);
    assert_eq!(
        (refused("crc"), refused("password"), refused("unknown_mn")),
        (1, 1, 1)
    );

    // One alert: COD 130 mg/L in the 14:00 hour, over 100; closed by the 15:00 hour (75 mg/L)
    // after 3600 s. The maintenance hours (150 mg/L, flag M) opened none.
    let two = local(yesterday, 14);
    let three = local(yesterday, 15);
    let alerts = lines_with(&r, "alert,", &[]);
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    assert!(
        alerts[0].contains("kind=outlet_limit,subject=ww1/cod "),
        "{}",
        alerts[0]
    );
    assert!(alerts[0].contains("open=true") && alerts[0].ends_with(&stamp(two)));
    assert!(alerts[0].contains("value=130.0,") && alerts[0].contains("limit=100.0,"));
    assert!(alerts[1].contains("open=false") && alerts[1].contains("duration_s=3600.0"));
    assert!(alerts[1].ends_with(&stamp(three)), "{}", alerts[1]);
    let board = snapshots.borrow().clone();
    assert_eq!(board.alerts.len(), 1);
    assert_eq!(board.alerts[0].duration_s(), Some(3600.0));
    assert_eq!(&*board.outlets[0].outlet, "ww1");
    // The logger is among the devices by its outlet: up while connected, down with the
    // reason once the test logger has hung up.
    eventually("the logger shown down after it hung up", WAIT, || async {
        let board = snapshots.borrow().clone();
        let dev = board.devices.iter().find(|d| &*d.id == "ww1").cloned();
        match dev {
            Some(d) if !d.up && d.reason.as_deref().is_some_and(|r| r.contains("closed")) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // The webhook heard the opening and the closing, with the duration.
    eventually("the webhook's two posts", WAIT, || async {
        let posted = posted.lock().unwrap().clone();
        let events: Vec<(String, String, Option<f64>)> = posted
            .iter()
            .map(|p| {
                (
                    p["event"].as_str().unwrap_or("").to_string(),
                    p["subject"].as_str().unwrap_or("").to_string(),
                    p["duration_s"].as_f64(),
                )
            })
            .collect();
        let want = vec![
            ("opened".to_string(), "ww1/cod".to_string(), None),
            ("closed".to_string(), "ww1/cod".to_string(), Some(3600.0)),
        ];
        if events == want {
            Ok(())
        } else {
            Err(format!("{events:?}"))
        }
    })
    .await;
    hook_task.abort();

    // The day's discharge from the daily total, 24 × 9 m³ = 216 t, basis recorded, in the
    // day's and the month's green point (no value added here: no intensity).
    let day_start = local(yesterday, 0);
    let green_day = lines_with(&r, "green,", &["window=1d", &stamp(day_start)]);
    assert!(
        green_day
            .iter()
            .any(|l| l.contains("wastewater_t=216.0,") && l.contains("wastewater_basis=\"daily\"")),
        "{green_day:?}"
    );
    assert!(!r.contains("wastewater_t_per_10k_cny"));

    trigger.fire();
    running.finished().await;
}

/// Reads until the agent closes the connection; false if it is still open after `within`.
async fn closed_by_agent(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 256];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peers_are_closed_at_their_bound_and_counted() {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;
    let dir = tempfile::tempdir().unwrap();
    let (port, trigger, running) = start(
        dir.path(),
        "max_unidentified = 2\nmax_connects_per_minute = 8\nidentify_timeout = \"1s\"\n",
        "",
    );
    let metrics = running.metrics.clone();
    let refused = |reason: &str| refused(&metrics, reason);
    let addr = format!("127.0.0.1:{port}");
    let connect = || TcpStream::connect(addr.clone());
    let short = Duration::from_secs(5);

    // 1. Not HJ 212 at all: closed at the first bytes.
    let mut web = connect().await.unwrap();
    web.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(closed_by_agent(&mut web, short).await);
    // 2. An unknown peer announcing a 9999-character packet: closed before it is buffered.
    let mut big = connect().await.unwrap();
    big.write_all(b"##9999QN=").await.unwrap();
    assert!(closed_by_agent(&mut big, short).await);
    // 3. Two silent peers take the two unidentified slots; a third is closed at once; the two
    //    are closed after `identify_timeout`.
    let mut idle1 = connect().await.unwrap();
    let mut idle2 = connect().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = connect().await.unwrap();
    assert!(closed_by_agent(&mut third, short).await);
    assert!(closed_by_agent(&mut idle1, short).await);
    assert!(closed_by_agent(&mut idle2, short).await);
    // 4. Five connections so far; three more are admitted, the ninth in the minute is not.
    //    (Each closed before the next, so that none meets the unidentified bound.)
    for _ in 0..3 {
        drop(connect().await.unwrap());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut ninth = connect().await.unwrap();
    assert!(closed_by_agent(&mut ninth, short).await);

    eventually("every refusal counted", WAIT, || async {
        let counts = [
            refused("framing"),
            refused("too_long"),
            refused("unidentified"),
            refused("timeout"),
            refused("connect_rate"),
        ];
        if counts == [1, 1, 1, 2, 1] {
            Ok(())
        } else {
            Err(format!(
                "framing, too_long, unidentified, timeout, connect_rate: {counts:?}"
            ))
        }
    })
    .await;
    trigger.fire();
    running.finished().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logger_over_tls_is_stored_and_plain_or_silent_peers_on_the_tls_port_are_refused() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    // A CA, and a certificate for 127.0.0.1 signed by it (openssl, as for the MQTT tests).
    common::make_certificates(dir.path());
    let (port, trigger, running) = start(
        dir.path(),
        &format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"\nidentify_timeout = \"2s\"\n",
            dir.path().join("server.pem").display(),
            dir.path().join("server.key").display(),
        ),
        "",
    );
    let metrics = running.metrics.clone();

    // The test logger over Python's own TLS, checking the agent's certificate against the CA:
    // the first two hours of yesterday and the day's total.
    let tz = TimeZone::get("Asia/Shanghai").unwrap();
    let yesterday = jiff::Timestamp::now()
        .to_zoned_datetime(tz)
        .date()
        .yesterday()
        .unwrap();
    let ca = dir.path().join("ca.pem").display().to_string();
    let summary = run_logger(port, yesterday, &["--hours", "2", "--tls-ca", &ca]).await;
    // 2 hours × 60 minute packets + 2 hourly + 1 daily, each answered with its QN.
    assert_eq!(summary["acks"], 2 * 60 + 2 + 1, "{summary}");

    let records_path = dir.path().join("records.lp");
    let read = || std::fs::read_to_string(&records_path).unwrap_or_default();
    eventually("the two hours' lines", WAIT, || async {
        let r = read();
        let minute = lines_with(&r, "outlet,", &["cn=2051"]).len();
        let hourly = lines_with(&r, "outlet,", &["cn=2061"]).len();
        // Four pollutants a packet.
        if minute == 2 * 60 * 4 && hourly == 2 * 4 {
            Ok(())
        } else {
            Err(format!("{minute} minute and {hourly} hourly lines"))
        }
    })
    .await;
    // COD in the 01:00 hour: 60 + 1 = 61 mg/L.
    let stamp = format!(" {}", local(yesterday, 1).as_nanosecond());
    let r = read();
    let cod = lines_with(&r, "outlet,", &["pollutant=cod", "cn=2061", &stamp]);
    assert_eq!(cod.len(), 1, "{cod:?}");
    assert!(cod[0].contains("avg=61.0,"), "{}", cod[0]);

    // A logger speaking plain TCP to the TLS port: its packet never reaches the parser.
    let refused = |reason: &str| refused(&metrics, reason);
    let short = Duration::from_secs(5);
    let mut plain = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    plain
        .write_all(b"##0040QN=20261205100000000;ST=32;CN=2051;MN=1\r\n")
        .await
        .unwrap();
    assert!(closed_by_agent(&mut plain, short).await);
    // A peer that connects and says nothing: closed at `identify_timeout` (2 s).
    let mut silent = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    assert!(closed_by_agent(&mut silent, short).await);
    eventually("both refused as tls", WAIT, || async {
        let counts = [refused("tls"), refused("framing"), refused("timeout")];
        if counts == [2, 0, 0] {
            Ok(())
        } else {
            Err(format!("tls, framing, timeout: {counts:?}"))
        }
    })
    .await;

    trigger.fire();
    running.finished().await;
}
