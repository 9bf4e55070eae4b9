//! The board's HTTP API, `/metrics` and `/healthz` against a running agent and simulator.

mod common;

use std::time::Duration;

use common::{eventually, http_client};
use shopfloor::sim::{self, SimOptions};
use shopfloor::{agent, shutdown};

const DEMO: &str = include_str!("../config/demo.toml");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_board_api_metrics_and_healthz_answer_for_a_running_agent() {
    let data = tempfile::tempdir().expect("temp dir");
    let (trigger, shutdown) = shutdown::channel();
    let options = SimOptions {
        bind: "127.0.0.1:0".parse().expect("addr"),
        ..SimOptions::default()
    };
    let simulator = sim::start(&options, shutdown.clone(), None)
        .await
        .expect("sim");
    let mut cfg =
        shopfloor::agent::config::load_str(DEMO, "config/demo.toml").expect("demo config");
    for d in &mut cfg.modbus {
        d.address = Some(simulator.addr.to_string());
    }
    cfg.agent.data_dir = data.path().to_path_buf();
    cfg.file.clear();
    cfg.web.listen.set_port(0);
    let token_file = data.path().join("board-token");
    std::fs::write(&token_file, TOKEN).expect("token file");
    cfg.web.write_token = Some(shopfloor::config::Secret::File(token_file));
    let running = agent::start(&cfg, shutdown).expect("agent");
    let base = format!("http://{}", running.web_addr.expect("board enabled"));
    let http = http_client();
    let get = |path: &str| {
        let (http, url) = (http.clone(), format!("{base}{path}"));
        async move { http.get(url).send().await.expect("board answers") }
    };

    // /healthz: 200 once the engine publishes snapshots (every second).
    eventually("healthz 200", Duration::from_secs(10), || async {
        let r = get("/healthz").await;
        (r.status() == 200)
            .then_some(())
            .ok_or(format!("{}", r.status()))
    })
    .await;

    // /api/machines: the whole register, the four simulated machines out of offline.
    let machines: serde_json::Value =
        eventually("machines online", Duration::from_secs(10), || async {
            let v: serde_json::Value =
                serde_json::from_str(&get("/api/machines").await.text().await.unwrap_or_default())
                    .map_err(|e| e.to_string())?;
            let online = v
                .as_array()
                .map_or(0, |a| a.iter().filter(|m| m["state"] != "offline").count());
            (online == 4).then_some(v.clone()).ok_or(format!("{v}"))
        })
        .await;
    let list = machines.as_array().expect("a list");
    assert_eq!(list.len(), 7, "{machines}");
    let press = list
        .iter()
        .find(|m| m["id"] == "press01")
        .expect("press01 listed");
    assert_eq!(press["state"], "offline");
    assert_eq!(press["code"], 0);
    let cnc01 = list
        .iter()
        .find(|m| m["id"] == "cnc01")
        .expect("cnc01 listed");
    assert!(cnc01["signals"]["spindle_rpm"].is_number(), "{cnc01}");

    // /api/fleet: 4 of 7 networked, with numerator, denominator and the 55 % target.
    let fleet: serde_json::Value =
        serde_json::from_str(&get("/api/fleet").await.text().await.unwrap_or_default())
            .expect("fleet JSON");
    assert_eq!(fleet["networking_rate"]["numerator"], 4.0, "{fleet}");
    assert_eq!(fleet["networking_rate"]["denominator"], 7.0);
    assert_eq!(fleet["networking_rate"]["target"], 0.55);
    assert_eq!(fleet["cnc_rate"]["numerator"], 4.0);

    // /api/health: every device up, once each has been polled (the meter's device may not have
    // been yet when the machines came online: it is then "not polled yet", rightly not up).
    let health: serde_json::Value =
        eventually("every device up", Duration::from_secs(10), || async {
            let v: serde_json::Value =
                serde_json::from_str(&get("/api/health").await.text().await.unwrap_or_default())
                    .map_err(|e| e.to_string())?;
            (v["devices_up"] == 5)
                .then_some(v.clone())
                .ok_or(format!("{v}"))
        })
        .await;
    assert_eq!(health["devices_up"], 5, "{health}");

    // /metrics: Prometheus text with the poll counters of each device.
    let metrics = get("/metrics").await;
    assert!(
        metrics
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/plain"))
    );
    let text = metrics.text().await.expect("metrics text");
    assert!(
        text.contains("# TYPE shopfloor_polls_total counter"),
        "{text}"
    );
    assert!(
        text.contains("shopfloor_polls_total{device=\"box-cnc01\"}"),
        "{text}"
    );

    // The board page itself, in both languages.
    let zh = get("/").await.text().await.expect("page");
    assert!(zh.contains("<html lang=\"zh\">") && zh.contains("机器联网率"));
    let en = get("/?lang=en").await.text().await.expect("page");
    assert!(en.contains("<html lang=\"en\">"));

    // Declaring value added: with the write token, a good figure lands in the declared file;
    // a bad period is refused.
    let post = |body: &'static str, token: Option<&'static str>| {
        let (http, url) = (http.clone(), format!("{base}/api/value-added"));
        async move {
            let mut request = http
                .post(url)
                .header("content-type", "application/json")
                .body(body);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            request.send().await.expect("board answers")
        }
    };
    let good = post(
        r#"{"period": "2026-11", "value_10k_cny": 850.5}"#,
        Some(TOKEN),
    )
    .await;
    assert_eq!(good.status(), 200);
    let declared = std::fs::read_to_string(data.path().join("value-added.toml"))
        .expect("declared file written");
    assert!(
        declared.contains("period = \"2026-11\"") && declared.contains("value_10k_cny = 850.5"),
        "{declared}"
    );
    let bad = post(
        r#"{"period": "last month", "value_10k_cny": 1}"#,
        Some(TOKEN),
    )
    .await;
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap_or_default().contains("last month"));

    trigger.fire();
    running.finished().await;
}

/// A Modbus TCP server on a loopback port that answers every request with exception 0x02
/// (illegal data address): a device that answers, so it is up, but delivers nothing.
async fn exceptions_only_server() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("listener address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                loop {
                    let mut header = [0u8; 7];
                    if stream.read_exact(&mut header).await.is_err() {
                        return;
                    }
                    let len = usize::from(u16::from_be_bytes([header[4], header[5]]));
                    let mut pdu = vec![0u8; len.saturating_sub(1)];
                    if stream.read_exact(&mut pdu).await.is_err() || pdu.is_empty() {
                        return;
                    }
                    // Same transaction, protocol 0, length 3: unit, function | 0x80, code 2.
                    let answer = [
                        header[0],
                        header[1],
                        0,
                        0,
                        0,
                        3,
                        header[6],
                        pdu[0] | 0x80,
                        0x02,
                    ];
                    if stream.write_all(&answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_answers_everything_with_an_exception_is_degraded_in_api_health() {
    let data = tempfile::tempdir().expect("temp dir");
    let (_trigger, shutdown) = shutdown::channel();
    let addr = exceptions_only_server().await;
    let toml = format!(
        r#"
[site]
county = "yk"
sector = "doors"
enterprise = "e1"

[[machine]]
id = "m1"
kind = "lathe"
cnc = true

[[modbus]]
id = "refuser"
address = "{addr}"
machine = "m1"
poll = "200ms"
field = [
  {{ signal = "a", register = "holding", address = 0 }},
  {{ signal = "b", register = "input", address = 7 }},
]
"#
    );
    let mut cfg = shopfloor::agent::config::load_str(&toml, "t.toml").expect("config");
    cfg.agent.data_dir = data.path().to_path_buf();
    cfg.web.listen.set_port(0);
    let running = agent::start(&cfg, shutdown).expect("agent");
    let base = format!("http://{}", running.web_addr.expect("board enabled"));
    let http = http_client();

    // Up (it answers), but degraded, with the exception: not "up with no reason".
    let health: serde_json::Value =
        eventually("the device degraded", Duration::from_secs(10), || async {
            let text = http
                .get(format!("{base}/api/health"))
                .send()
                .await
                .map_err(|e| e.to_string())?
                .text()
                .await
                .unwrap_or_default();
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
            (v["devices"][0]["status"] == "degraded")
                .then_some(v.clone())
                .ok_or(format!("{v}"))
        })
        .await;
    let device = &health["devices"][0];
    assert_eq!(device["id"], "refuser", "{health}");
    assert_eq!(device["up"], true, "{health}");
    assert_eq!(health["devices_degraded"], 1, "{health}");
    let reason = device["degraded_reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("exception") && reason.contains("0x02"),
        "{health}"
    );

    // /metrics: degraded, with the exception code.
    let text = metrics_text(&http, &base).await;
    assert!(
        text.contains("shopfloor_device_degraded{device=\"refuser\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("shopfloor_device_exception_code{device=\"refuser\"} 2"),
        "{text}"
    );
}

/// A field whose request the device refuses is visible as such while its device is up: in
/// `/api/machines` (the machine's `field_errors`), in `/api/health` (the device's
/// `failing_fields`) and in `/metrics` (a counter for that field alone); the device's other
/// fields and the other device deliver as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_whose_register_the_device_refuses_is_listed_with_its_exception() {
    let data = tempfile::tempdir().expect("temp dir");
    let (trigger, shutdown) = shutdown::channel();
    let addr = common::simulator(shutdown.clone()).await;
    // The simulator maps holding registers 0–14 of each machine; 900 is refused with
    // exception 0x02, illegal data address.
    let toml = format!(
        r#"
[site]
county = "yk"
sector = "doors"
enterprise = "e1"

[[machine]]
id = "m1"
kind = "lathe"
cnc = true

[[machine]]
id = "m2"
kind = "lathe"
cnc = true

[[modbus]]
id = "box1"
address = "{addr}"
unit = 1
machine = "m1"
poll = "200ms"
field = [
  {{ signal = "spindle_rpm", register = "holding", address = 2 }},
  {{ signal = "feed", register = "holding", address = 900 }},
]

[[modbus]]
id = "box2"
address = "{addr}"
unit = 2
machine = "m2"
poll = "200ms"
field = [{{ signal = "spindle_rpm", register = "holding", address = 2 }}]
"#
    );
    let mut cfg = shopfloor::agent::config::load_str(&toml, "t.toml").expect("config");
    cfg.agent.data_dir = data.path().to_path_buf();
    cfg.web.listen.set_port(0);
    let running = agent::start(&cfg, shutdown).expect("agent");
    let base = format!("http://{}", running.web_addr.expect("board enabled"));
    let http = http_client();
    let get_json = |path: &str| {
        let (http, url) = (http.clone(), format!("{base}{path}"));
        async move { common::get_json(&http, &url).await }
    };

    let machines = eventually(
        "m1's failing field listed",
        Duration::from_secs(10),
        || async {
            let v = get_json("/api/machines").await?;
            let m1 = v
                .as_array()
                .and_then(|a| a.iter().find(|m| m["id"] == "m1"))
                .cloned()
                .unwrap_or_default();
            (m1["field_errors"].as_array().is_some_and(|e| !e.is_empty())
                && m1["signals"]["spindle_rpm"].is_number())
            .then_some(v.clone())
            .ok_or(format!("{v}"))
        },
    )
    .await;
    let list = machines.as_array().expect("a list");
    let m1 = list.iter().find(|m| m["id"] == "m1").expect("m1");
    let errors = m1["field_errors"].as_array().expect("field_errors");
    assert_eq!(errors.len(), 1, "{m1}");
    assert_eq!(errors[0]["signal"], "feed", "{m1}");
    assert_eq!(errors[0]["device"], "box1", "{m1}");
    assert_eq!(errors[0]["kind"], "exception", "{m1}");
    let error = errors[0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("Illegal data address") && error.contains("holding 900"),
        "{m1}"
    );
    assert!(errors[0]["since"].is_string(), "{m1}");
    // Missing, not zero: the failing field has no value among the signals.
    assert!(m1["signals"].get("feed").is_none(), "{m1}");
    let m2 = list.iter().find(|m| m["id"] == "m2").expect("m2");
    assert_eq!(m2["field_errors"], serde_json::json!([]), "{m2}");

    // /api/health: box1 answers, so it is up, but not fully healthy: its failing field is
    // listed; box2 has none.
    let health = get_json("/api/health").await.expect("health");
    let device = |id: &str| {
        health["devices"]
            .as_array()
            .and_then(|d| d.iter().find(|d| d["id"] == id))
            .cloned()
            .unwrap_or_default()
    };
    let box1 = device("box1");
    assert_eq!(box1["up"], true, "{health}");
    let failing = box1["failing_fields"].as_array().expect("failing_fields");
    assert_eq!(failing.len(), 1, "{health}");
    assert_eq!(failing[0]["target"], "machine", "{health}");
    assert_eq!(failing[0]["id"], "m1", "{health}");
    assert_eq!(failing[0]["signal"], "feed", "{health}");
    assert_eq!(
        device("box2")["failing_fields"],
        serde_json::json!([]),
        "{health}"
    );
    assert_eq!(health["devices_with_failing_fields"], 1, "{health}");

    // /metrics: a counter for the failing field alone, by kind; none for the fields that read.
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let series =
        "shopfloor_field_errors_total{device=\"box1\",field=\"m1.feed\",kind=\"exception\"} ";
    let count: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{series} missing:\n{text}"));
    assert!(count >= 1, "{text}");
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("shopfloor_field_errors_total{"))
            .count(),
        1,
        "{text}"
    );

    trigger.fire();
    running.finished().await;
}

const TOKEN: &str = "s3cret-board-token";

/// Starts the demo agent against the simulator with `[web]` changed by `web`; returns its
/// board's base URL, its data directory and the shutdown trigger.
async fn demo_agent(
    web: impl FnOnce(&mut shopfloor::web::config::Web, &std::path::Path),
) -> (String, tempfile::TempDir, shutdown::Trigger, agent::Running) {
    demo_agent_with(|cfg, dir| web(&mut cfg.web, dir)).await
}

/// [`demo_agent`] with any part of the config changed by `configure`.
async fn demo_agent_with(
    configure: impl FnOnce(&mut shopfloor::agent::config::Config, &std::path::Path),
) -> (String, tempfile::TempDir, shutdown::Trigger, agent::Running) {
    let data = tempfile::tempdir().expect("temp dir");
    let (trigger, shutdown) = shutdown::channel();
    let options = SimOptions {
        bind: "127.0.0.1:0".parse().expect("addr"),
        ..SimOptions::default()
    };
    let simulator = sim::start(&options, shutdown.clone(), None)
        .await
        .expect("sim");
    let mut cfg =
        shopfloor::agent::config::load_str(DEMO, "config/demo.toml").expect("demo config");
    for d in &mut cfg.modbus {
        d.address = Some(simulator.addr.to_string());
    }
    cfg.agent.data_dir = data.path().to_path_buf();
    cfg.file.clear();
    cfg.web.listen.set_port(0);
    configure(&mut cfg, data.path());
    let running = agent::start(&cfg, shutdown).expect("agent");
    let base = format!("http://{}", running.web_addr.expect("board enabled"));
    (base, data, trigger, running)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_need_the_token_and_the_board_answers_only_to_its_own_names() {
    let (base, data, trigger, running) = demo_agent(|web, dir| {
        let file = dir.join("board-token");
        std::fs::write(&file, format!("{TOKEN}\n")).expect("token file");
        web.write_token = Some(shopfloor::config::Secret::File(file));
        web.hosts = vec!["gateway.plant.local".into()];
    })
    .await;
    let http = http_client();
    let declared = data.path().join("value-added.toml");
    let body = r#"{"period": "2026-10", "value_10k_cny": 12.0}"#;
    let post = |token: Option<&str>, host: Option<&str>, origin: Option<&str>| {
        let mut request = http
            .post(format!("{base}/api/value-added"))
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(host) = host {
            request = request.header("host", host);
        }
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        async move { request.send().await.expect("board answers") }
    };

    // No token, a wrong one: refused, nothing written.
    assert_eq!(post(None, None, None).await.status(), 401);
    assert_eq!(post(Some("guess"), None, None).await.status(), 401);
    assert!(!declared.exists(), "an unauthorised write reached the file");

    // A foreign Host (a rebound DNS name) is refused for reads and writes alike.
    let foreign = http
        .get(format!("{base}/api/fleet"))
        .header("host", "evil.example:8080")
        .send()
        .await
        .expect("board answers");
    assert_eq!(foreign.status(), 421);
    assert_eq!(
        post(Some(TOKEN), Some("evil.example"), None).await.status(),
        421
    );
    // A foreign Origin on a write is refused even with the token.
    let cross = post(Some(TOKEN), None, Some("http://evil.example")).await;
    assert_eq!(cross.status(), 403);
    assert!(!declared.exists(), "a refused write reached the file");

    // The right token from the board's own origin, and under a configured name: written.
    let origin = base.clone();
    assert_eq!(post(Some(TOKEN), None, Some(&origin)).await.status(), 200);
    assert_eq!(
        post(Some(TOKEN), Some("gateway.plant.local:8080"), None)
            .await
            .status(),
        200
    );
    let text = std::fs::read_to_string(&declared).expect("declared file written");
    assert!(text.contains("period = \"2026-10\""), "{text}");

    // A request without Host (HTTP/1.0, the container's health check) is not a browser's.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = base.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"GET /healthz HTTP/1.0\r\n\r\n")
            .await
            .expect("write");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("read");
        assert!(
            answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
            "{answer}"
        );
    }

    // Reads stay open without a token.
    let fleet = http
        .get(format!("{base}/api/fleet"))
        .send()
        .await
        .expect("board answers");
    assert_eq!(fleet.status(), 200);

    trigger.fire();
    running.finished().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_write_token_the_board_is_read_only() {
    let (base, data, trigger, running) = demo_agent(|_, _| {}).await;
    let refused = http_client()
        .post(format!("{base}/api/value-added"))
        .header("content-type", "application/json")
        .bearer_auth("anything")
        .body(r#"{"period": "2026-10", "value_10k_cny": 12.0}"#)
        .send()
        .await
        .expect("board answers");
    assert_eq!(refused.status(), 403);
    let message = refused.text().await.unwrap_or_default();
    assert!(message.contains("write_token"), "{message}");
    assert!(!data.path().join("value-added.toml").exists());
    trigger.fire();
    running.finished().await;
}

/// Everything the agents of this test binary log, from the first call on (one global
/// subscriber for the binary: tests that look for their lines filter by what they contain).
fn captured_logs() -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    use std::sync::{Arc, Mutex, OnceLock};
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        #[derive(Clone)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                let mut logs = self.0.lock().unwrap_or_else(|p| p.into_inner());
                logs.extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = Sink(logs.clone());
        let _ = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_env_filter("shopfloor=info")
            .with_writer(move || sink.clone())
            .try_init();
        logs
    })
    .clone()
}

/// The board's output state (issue 20), against a real store: an output whose store is up
/// is "delivering"; with the store stopped it turns "failing" with the reason, while its
/// backlog of lines and the oldest line's age grow, in `/api/health` and `/metrics`; with
/// the store started again it drains the backlog, is "delivering" with nothing waiting, and
/// says in the log how long it was down and how much it drained.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_is_failing_while_its_store_is_stopped_and_delivering_once_it_is_started() {
    let logs = captured_logs();
    let mut vm = common::VictoriaMetrics::start().await;
    let url = vm.url();
    let (base, _data, trigger, running) = demo_agent_with(|cfg, _| {
        // retry_max 2 s: the writer tries again soon after the store is back.
        let output = format!(
            "name = \"vm\"\nurl = \"{url}\"\norg = \"o\"\nbucket = \"b\"\nretry_max = \"2s\""
        );
        cfg.influx
            .push(toml::from_str(&output).expect("output config"));
    })
    .await;
    let http = http_client();
    let output = |want: fn(&serde_json::Value) -> bool| {
        let (http, url) = (http.clone(), format!("{base}/api/health"));
        async move {
            let health = common::get_json(&http, &url).await?;
            let vm = health["outputs"]
                .as_array()
                .and_then(|a| a.iter().find(|o| o["name"] == "vm"))
                .cloned()
                .ok_or(format!("no output vm in {health}"))?;
            want(&vm).then_some(vm.clone()).ok_or(format!("{vm}"))
        }
    };

    let up = eventually("the output delivering", Duration::from_secs(15), || {
        output(|o| o["state"] == "delivering" && o["last_success"].is_string())
    })
    .await;
    assert_eq!(up["kind"], "influx", "{up}");
    assert!(up["reason"].is_null(), "{up}");

    vm.stop().await;
    let down = eventually("the output failing", Duration::from_secs(20), || {
        output(|o| {
            o["state"] == "failing"
                && o["backlog_lines"].as_u64().is_some_and(|n| n > 0)
                && o["oldest_age_s"].as_f64().is_some_and(|a| a >= 1.0)
        })
    })
    .await;
    let reason = down["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("cannot reach the store"), "{down}");
    assert!(down["failing_s"].is_number(), "{down}");
    let metrics = metrics_text(&http, &base).await;
    assert!(
        metrics.contains("shopfloor_output_failing{output=\"vm\"} 1"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("shopfloor_output_backlog_lines{output=\"vm\"} 0"),
        "{metrics}"
    );

    vm.restart().await;
    let again = eventually(
        "the output delivering again with nothing waiting",
        Duration::from_secs(30),
        || output(|o| o["state"] == "delivering" && o["backlog_lines"] == 0),
    )
    .await;
    assert!(
        again["reason"].is_null() && again["failing_s"].is_null(),
        "{again}"
    );
    assert!(again["oldest_age_s"].is_null(), "{again}");
    let logged = eventually("the drain logged", Duration::from_secs(5), || {
        let logs = logs.clone();
        async move {
            let text = String::from_utf8_lossy(&logs.lock().unwrap_or_else(|p| p.into_inner()))
                .into_owned();
            let resumed = text
                .lines()
                .find(|l| l.contains("delivery resumed") && l.contains("output=vm"));
            let drained = text
                .lines()
                .find(|l| l.contains("backlog drained") && l.contains("output=vm"));
            match (resumed, drained) {
                (Some(r), Some(d)) => Ok((r.to_string(), d.to_string())),
                _ => Err("no resumption or drain line for output vm yet".to_string()),
            }
        }
    })
    .await;
    assert!(
        logged.0.contains("outage_s=") && logged.0.contains("lines_waiting="),
        "{logged:?}"
    );
    assert!(
        logged.1.contains("lines_drained=") && logged.1.contains("outage_s="),
        "{logged:?}"
    );
    trigger.fire();
    running.finished().await;
}

/// The board's `/metrics` text.
async fn metrics_text(http: &reqwest::Client, base: &str) -> String {
    http.get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text")
}
