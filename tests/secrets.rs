//! Secrets never reach a log line, the board or the data directory.
//!
//! The real binary (`shopfloor run`, with `SHOPFLOOR_LOG=trace`: every log target at trace level) runs against real
//! services with a token and passwords from the environment and from files: InfluxDB 1.x with
//! authentication (one output with the right password, one with a wrong one, so the refusal
//! path logs), VictoriaMetrics behind a v2 output with a token, and Mosquitto with a password
//! file (one broker entry with the right password, one with a wrong one). Then everything the
//! agent showed to anyone is searched for every secret, also base64-encoded as HTTP basic
//! auth carries it: its stdout and stderr, `shopfloor check`'s output, the board's pages and
//! APIs, and every file in its data directory (spool, saved state, dead letters).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Influx1, Mosquitto, VictoriaMetrics, eventually, free_port, http_client};

const BIN: &str = env!("CARGO_BIN_EXE_shopfloor");
const DEMO: &str = include_str!("../config/demo.toml");

// Long and unlike anything else the agent prints, so a hit is a leak and not a coincidence.
const INFLUX_PASSWORD: &str = "infl-pw-7Qd2Xk9vLm3Rt8Zs";
const WRONG_INFLUX_PASSWORD: &str = "wrong-infl-pw-4Hc6Jy1Nb5Wq";
const VM_TOKEN: &str = "vm-token-Tq8Mw2Lr6Kp0Vx4Yz";
const VM_FILE_TOKEN: &str = "vm-file-token-Bs3Pa7Gn1Hd5";
const MQTT_PASSWORD: &str = "mqtt-pw-Gz5Ns9Dh3Fb7Cj1Ke";
const WRONG_MQTT_PASSWORD: &str = "wrong-mqtt-pw-Ra2Uo6Ei8Tl0";

fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ABC[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Every form in which a secret could leak: as it is, and as the basic-auth header carries
/// it with its user name.
fn forms() -> Vec<(String, String)> {
    let mut forms = Vec::new();
    for (what, secret) in [
        ("InfluxDB password", INFLUX_PASSWORD),
        ("wrong InfluxDB password", WRONG_INFLUX_PASSWORD),
        ("VictoriaMetrics token", VM_TOKEN),
        ("VictoriaMetrics token from a file", VM_FILE_TOKEN),
        ("MQTT password", MQTT_PASSWORD),
        ("wrong MQTT password", WRONG_MQTT_PASSWORD),
    ] {
        forms.push((what.to_string(), secret.to_string()));
        forms.push((
            format!("{what}, base64 with its user"),
            base64(format!("shopfloor:{secret}").as_bytes()),
        ));
    }
    forms
}

/// The places where `text` contains a secret.
fn leaks(place: &str, text: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(text);
    forms()
        .into_iter()
        .filter(|(_, form)| text.contains(form.as_str()))
        .map(|(what, _)| format!("{what} in {place}"))
        .collect()
}

/// A child process that is killed when the test ends, also when it panics: a failed test
/// must not leave an agent or a simulator running.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_logs_the_board_or_the_data_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("data");

    let influx = Influx1::start_with_auth("shopfloor", INFLUX_PASSWORD).await;
    influx.create_db("shopfloor").await;
    // `spindle_rpm` already a string here: the agent's integer values conflict, the store
    // refuses those lines with a 400, and the agent moves them to its dead-letter file, which
    // is then searched too. Stamped now: InfluxDB types a field per shard (a week), so a
    // string from another week would not conflict.
    let now_ns = jiff::Timestamp::now().as_nanosecond();
    influx
        .write_lines(
            "shopfloor",
            &format!("signal spindle_rpm=\"text\" {now_ns}\n"),
        )
        .await;
    let vm = VictoriaMetrics::start().await;
    let passwd = dir.path().join("mosquitto.passwd");
    let made = Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(&passwd)
        .args(["shopfloor", MQTT_PASSWORD])
        .status()
        .expect("mosquitto_passwd (Debian's mosquitto package) runs");
    assert!(made.success(), "mosquitto_passwd failed");
    // Anonymous clients (the simulator) may publish; a client that names a user must give
    // that user's password.
    let broker =
        Mosquitto::start_with_config(&[&format!("password_file {}", passwd.display())]).await;

    // The right InfluxDB password, one token and the wrong MQTT password come from files, the
    // others from the environment: both ways of naming a secret are exercised, each on a good and a failing
    // path.
    let influx_password_file = dir.path().join("influx-password");
    std::fs::write(&influx_password_file, format!("{INFLUX_PASSWORD}\n")).expect("write");
    let vm_token_file = dir.path().join("vm-token");
    std::fs::write(&vm_token_file, VM_FILE_TOKEN).expect("write");
    let wrong_mqtt_file = dir.path().join("wrong-mqtt-password");
    std::fs::write(&wrong_mqtt_file, WRONG_MQTT_PASSWORD).expect("write");

    let sim_port = free_port();
    let web_port = free_port();
    let body = DEMO
        .split("[[file]]")
        .next()
        .expect("the demo config has a body")
        .replace("127.0.0.1:5020", &format!("127.0.0.1:{sim_port}"))
        .replace(
            "data_dir = \"data/demo\"",
            &format!("data_dir = \"{}\"", data_dir.display()),
        );
    let config = format!(
        r#"{body}
[[machine]]
id = "mq01"
kind = "machining_centre"
cnc = true

[web]
listen = "127.0.0.1:{web_port}"

[[mqtt]]
id = "broker"
address = "127.0.0.1:{mqtt_port}"
username = "shopfloor"
password = {{ env = "SECRETS_TEST_MQTT_PASSWORD" }}
  [[mqtt.topic]]
  pattern = "shopfloor/sim/{{machine}}/data"
  format = "json"
  field = [{{ signal = "spindle_rpm", path = "spindle.rpm", type = "int" }}]

[[mqtt]]
id = "broker-wrong-password"
address = "127.0.0.1:{mqtt_port}"
username = "shopfloor"
password = {{ file = "{wrong_mqtt}" }}
max_backoff = "1s"
  [[mqtt.topic]]
  pattern = "shopfloor/sim/{{machine}}/status"
  format = "text"
  offline_payload = "offline"

[[influx]]
name = "influx"
url = "{influx_url}"
api = "v1"
database = "shopfloor"
username = "shopfloor"
password = {{ file = "{influx_file}" }}
retry_max = "1s"

[[influx]]
name = "influx-wrong-password"
url = "{influx_url}"
api = "v1"
database = "shopfloor"
username = "shopfloor"
password = {{ env = "SECRETS_TEST_WRONG_INFLUX_PASSWORD" }}
retry_max = "1s"

[[influx]]
name = "vm"
url = "{vm_url}"
org = "o"
bucket = "b"
token = {{ env = "SECRETS_TEST_VM_TOKEN" }}
retry_max = "1s"

[[influx]]
name = "vm-token-file"
url = "{vm_url}"
org = "o"
bucket = "b"
token = {{ file = "{vm_token_file}" }}
retry_max = "1s"
"#,
        vm_token_file = vm_token_file.display(),
        mqtt_port = broker.port(),
        wrong_mqtt = wrong_mqtt_file.display(),
        influx_url = influx.url(),
        influx_file = influx_password_file.display(),
        vm_url = vm.url(),
    );
    let config_path = dir.path().join("shopfloor.toml");
    std::fs::write(&config_path, &config).expect("write config");
    let env = [
        ("SECRETS_TEST_MQTT_PASSWORD", MQTT_PASSWORD),
        ("SECRETS_TEST_WRONG_INFLUX_PASSWORD", WRONG_INFLUX_PASSWORD),
        ("SECRETS_TEST_VM_TOKEN", VM_TOKEN),
        ("SHOPFLOOR_LOG", "trace"),
    ];

    let check = Command::new(BIN)
        .args(["check", "--plan", "-c"])
        .arg(&config_path)
        .envs(env)
        .output()
        .expect("shopfloor check runs");
    assert!(
        check.status.success(),
        "shopfloor check refused the config:\n{}",
        String::from_utf8_lossy(&check.stderr)
    );

    let sim_log = std::fs::File::create(dir.path().join("sim.log")).expect("sim log");
    let sim = Command::new(BIN)
        .args(["sim", "--bind", &format!("127.0.0.1:{sim_port}")])
        .args(["--mqtt", &format!("127.0.0.1:{}", broker.port())])
        .stdin(Stdio::null())
        .stdout(sim_log.try_clone().expect("log handle"))
        .stderr(sim_log)
        .spawn()
        .expect("start shopfloor sim");
    let _sim = Reaped(sim);
    let stdout_path = dir.path().join("agent.stdout");
    let stderr_path = dir.path().join("agent.stderr");
    let agent = Command::new(BIN)
        .args(["run", "-c"])
        .arg(&config_path)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).expect("stdout file"))
        .stderr(std::fs::File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .expect("start shopfloor run");
    let mut agent = Reaped(agent);

    // Wait until every path has been taken: points in InfluxDB through the right password,
    // the refusals of the wrong passwords logged, a dead letter, and an MQTT machine on the
    // board.
    let http = http_client();
    let board = format!("http://127.0.0.1:{web_port}");
    influx
        .wait_for_rows("shopfloor", "SELECT * FROM machine_state LIMIT 1", |rows| {
            !rows.is_empty()
        })
        .await;
    eventually("the refusals logged", Duration::from_secs(30), || async {
        let log = std::fs::read_to_string(&stderr_path).unwrap_or_default()
            + &std::fs::read_to_string(&stdout_path).unwrap_or_default();
        let influx_refused = log
            .lines()
            .any(|l| l.contains("influx-wrong-password") && l.contains("output misconfigured"));
        let mqtt_refused = log
            .lines()
            .any(|l| l.contains("broker-wrong-password") && l.contains("connection lost"));
        let dead_letter = data_dir.join("dead-letter-influx.lp").exists();
        (influx_refused && mqtt_refused && dead_letter)
            .then_some(())
            .ok_or(format!(
                "influx refused: {influx_refused}, mqtt refused: {mqtt_refused}, dead letter: {dead_letter}"
            ))
    })
    .await;
    eventually("mq01 on the board", Duration::from_secs(30), || async {
        let v = common::get_json(&http, &format!("{board}/api/machines")).await?;
        let online = v.as_array().is_some_and(|a| {
            a.iter()
                .any(|m| m["id"] == "mq01" && m["state"] != "offline")
        });
        online.then_some(()).ok_or(v.to_string())
    })
    .await;

    let mut found = Vec::new();
    for page in [
        "/",
        "/?lang=en",
        "/api/machines",
        "/api/fleet",
        "/api/health",
        "/metrics",
    ] {
        let response = http
            .get(format!("{board}{page}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(
            response.status().is_success(),
            "{page}: {}",
            response.status()
        );
        let text = response.text().await.unwrap_or_default();
        found.extend(leaks(&format!("the board's {page}"), text.as_bytes()));
    }

    // A graceful stop, so the spool and the saved state are written out as they would be.
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(agent.0.id() as libc::pid_t, libc::SIGTERM);
    }
    let _ = agent.0.wait();

    found.extend(leaks("shopfloor check's stdout", &check.stdout));
    found.extend(leaks("shopfloor check's stderr", &check.stderr));
    let stdout = std::fs::read(&stdout_path).expect("agent stdout");
    let stderr = std::fs::read(&stderr_path).expect("agent stderr");
    found.extend(leaks("the agent's stdout", &stdout));
    found.extend(leaks("the agent's stderr", &stderr));
    let mut files = Vec::new();
    files_under(&data_dir, &mut files);
    assert!(
        files.iter().any(|f| f.ends_with("spool.db")),
        "no spool in {}: {files:?}",
        data_dir.display()
    );
    for file in &files {
        let bytes = std::fs::read(file).unwrap_or_default();
        found.extend(leaks(&file.display().to_string(), &bytes));
    }
    // The search would be empty if the log were: the agent's debug and trace lines must be
    // there. (Dependencies that log through the `log` crate, rustls and rumqttc, print
    // nothing: the agent's subscriber takes `tracing` events only.)
    let log = String::from_utf8_lossy(&stderr);
    assert!(
        log.contains("DEBUG") && log.contains("TRACE"),
        "no debug or trace lines in the agent's log:\n{log}"
    );
    assert!(
        found.is_empty(),
        "secrets leaked:\n{}\n(agent log kept in {})",
        found.join("\n"),
        {
            let kept = dir.keep();
            kept.display().to_string()
        }
    );
    if std::env::var_os("SHOPFLOOR_TEST_KEEP_DIRS").is_some() {
        eprintln!("logs and data kept in {}", dir.keep().display());
    }
}
