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

    // Declaring value added: a good figure lands in the declared file; a bad period is refused.
    let post = |body: &'static str| {
        let (http, url) = (http.clone(), format!("{base}/api/value-added"));
        async move {
            http.post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("board answers")
        }
    };
    assert_eq!(
        post(r#"{"period": "2026-11", "value_10k_cny": 850.5}"#)
            .await
            .status(),
        204
    );
    let declared = std::fs::read_to_string(data.path().join("value-added.toml"))
        .expect("declared file written");
    assert!(
        declared.contains("period = \"2026-11\"") && declared.contains("value_10k_cny = 850.5"),
        "{declared}"
    );
    let bad = post(r#"{"period": "last month", "value_10k_cny": 1}"#).await;
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap_or_default().contains("last month"));

    trigger.fire();
    running.finished().await;
}
