//! Integration-test harness: real Mosquitto, InfluxDB 1.x and VictoriaMetrics processes.
//!
//! Why real processes: what the agent promises (nothing is lost while the store is down, a type
//! conflict rejects a whole batch, a broker restart does not end a subscription) are properties
//! of the real services. A mock would only restate what we believe they do, and the old
//! versions we test against (Debian 12: Mosquitto 2.0.11, InfluxDB 1.6.7, VictoriaMetrics
//! 1.79.5) have quirks, documented on each handle as they were found by trying them.
//!
//! Every handle owns a temporary directory (data, generated config, log) and one child process
//! listening on a free loopback port. Dropping the handle kills the process and removes the
//! directory, also while a test is panicking, so a failed test leaves nothing running. The
//! process's stdout and stderr go to `service.log` in that directory, and every panic from this
//! module that concerns a service quotes the end of that log: a CI failure should be readable
//! without a rerun. Set `SHOPFLOOR_TEST_KEEP_DIRS=1` to keep the directories for a post-mortem.
//!
//! Keep handles in locals of the test that uses them, never in a `static`: statics are not
//! dropped, so the process would outlive the test binary.
//!
//! The binaries are looked up on `PATH` plus `/usr/sbin` and `/usr/bin` (Debian puts
//! `mosquitto` in `/usr/sbin`, which is not on a normal user's `PATH`). `scripts/test` installs
//! the Debian packages when they are missing. To test against another build, point
//! `SHOPFLOOR_TEST_MOSQUITTO`, `SHOPFLOOR_TEST_INFLUXD` or `SHOPFLOOR_TEST_VICTORIA_METRICS` at
//! its binary.
//!
//! Everything is async so that it can run inside `#[tokio::test]` next to the agent's own tasks
//! without blocking them; only `Drop` is synchronous (a kill and a wait take milliseconds).
//!
//! ```ignore
//! mod common;
//!
//! #[tokio::test]
//! async fn writes_reach_the_store() {
//!     let vm = common::VictoriaMetrics::start().await;
//!     // ... point the agent at vm.url() ...
//!     let samples = vm.wait_for_query("signal_spindle_rpm", |s| !s.is_empty()).await;
//! }
//! ```

// Each integration-test crate compiles its own copy of this module and uses only part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::future::Future;
use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a service may take to answer its readiness probe. All three start in well under a
/// second on an idle machine; the margin is for a 2-core CI machine that is still linking other
/// test binaries.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the `wait_for_*` helpers poll before they give up. Written data becomes visible in
/// InfluxDB at once and in VictoriaMetrics after about a second (see [`VictoriaMetrics`]).
pub const DATA_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a graceful stop (SIGTERM) may take before the process is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// How often readiness and data are polled.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// How many fresh ports a service start tries when the port it was given is taken.
const START_ATTEMPTS: u32 = 3;

/// Loopback host every service listens on. Tests never use another address.
pub const HOST: &str = "127.0.0.1";

// ---------------------------------------------------------------------------------------------
// Ports, HTTP client, polling
// ---------------------------------------------------------------------------------------------

/// Returns a loopback TCP port that nothing listens on right now.
///
/// The OS picks it (bind to port 0), and the listener is closed before the port is handed to a
/// service, so another process could take it in between. Two defences: ports handed out in this
/// test binary are never handed out twice (tests run in parallel threads), and the service
/// starters retry with a fresh port when the service reports "address already in use".
pub fn free_port() -> u16 {
    static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let handed_out = HANDED_OUT.get_or_init(|| Mutex::new(HashSet::new()));
    for _ in 0..100 {
        let listener = TcpListener::bind((HOST, 0))
            .unwrap_or_else(|e| panic!("cannot bind a loopback port to find a free one: {e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("cannot read the address of a bound listener: {e}"))
            .port();
        // A poisoned lock only means another test panicked while holding it; the set is intact.
        let mut set = handed_out.lock().unwrap_or_else(|p| p.into_inner());
        if set.insert(port) {
            return port;
        }
    }
    panic!("the OS kept offering ports this test binary already handed out");
}

/// An HTTP client for talking to the services in tests.
///
/// The crate builds reqwest with `rustls-no-provider`, under which building a client panics
/// unless a rustls crypto provider is installed process-wide. Installing one here would change
/// global state that the agent's own code sets up, so the client gets a TLS config with the ring
/// provider passed in directly. It has no trusted roots: the harness speaks plain HTTP only.
/// Proxies from the environment are ignored, since a proxy cannot reach our loopback services.
pub fn http_client() -> reqwest::Client {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|e| panic!("ring does not support the default TLS versions: {e}"))
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_else(|e| panic!("cannot build the test HTTP client: {e}"))
}

/// GETs `url` and returns the body as text; an error says what failed. Made for
/// [`eventually`], which retries on `Err`.
pub async fn get_text(http: &reqwest::Client, url: &str) -> Result<String, String> {
    http.get(url)
        .send()
        .await
        .map_err(|e| e.to_string())?
        .text()
        .await
        .map_err(|e| e.to_string())
}

/// GETs `url` and parses the body as JSON; an error says what failed, with the body when it
/// was not JSON. Made for [`eventually`], which retries on `Err`.
pub async fn get_json(http: &reqwest::Client, url: &str) -> Result<serde_json::Value, String> {
    let text = get_text(http, url).await?;
    serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))
}

/// Polls `attempt` until it returns `Ok`, and panics after `timeout` with the last `Err`.
///
/// Use it instead of a sleep whenever a test waits for something another process does: it is
/// as fast as the system allows when things work, and says what it last saw when they don't.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    try_eventually(what, timeout, attempt)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// [`eventually`] that returns the failure instead of panicking, so the caller can add context
/// (a service log) to it.
async fn try_eventually<T, F, Fut>(
    what: &str,
    timeout: Duration,
    mut attempt: F,
) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(last) if Instant::now() >= deadline => {
                return Err(format!(
                    "gave up after {timeout:?} waiting for {what}; last attempt: {last}"
                ));
            }
            Err(_) => tokio::time::sleep(POLL_INTERVAL).await,
        }
    }
}

/// Builds `base` + `path` with the query pairs percent-encoded (PromQL and InfluxQL are full of
/// characters that must be escaped, `+` among them).
fn url_with_query(base: &str, path: &str, pairs: &[(&str, &str)]) -> reqwest::Url {
    let mut url = reqwest::Url::parse(&format!("{base}{path}"))
        .unwrap_or_else(|e| panic!("bad test URL {base}{path}: {e}"));
    if !pairs.is_empty() {
        url.query_pairs_mut().extend_pairs(pairs);
    }
    url
}

/// Sends a request and returns status and body, panicking with the URL if there is no answer.
async fn send(request: reqwest::RequestBuilder, what: &str) -> (u16, String) {
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{what}: no HTTP answer: {e}"));
    let status = response.status().as_u16();
    let body = response
        .text()
        .await
        .unwrap_or_else(|e| panic!("{what}: cannot read the response body: {e}"));
    (status, body)
}

// ---------------------------------------------------------------------------------------------
// The process supervisor shared by all three services
// ---------------------------------------------------------------------------------------------

/// How the harness decides that a freshly started service can take traffic.
#[derive(Clone, Copy, Debug)]
enum Probe {
    /// `GET path` answers with `status`. An open port alone is not enough: InfluxDB and
    /// VictoriaMetrics listen before their storage is open.
    Http { path: &'static str, status: u16 },
    /// An MQTT CONNECT gets a CONNACK, whatever its return code: a broker that refuses an
    /// anonymous client (as a test's ACL config may make it) is still up.
    Mqtt,
}

/// Why a start did not reach readiness.
#[derive(Debug)]
enum NotReady {
    Exited(ExitStatus),
    TimedOut,
}

/// One service process: how to start it, where its log goes, and the running child.
struct Service {
    name: &'static str,
    program: PathBuf,
    args: Vec<OsString>,
    probe: Probe,
    port: u16,
    log_path: PathBuf,
    child: Option<Child>,
    dir: TempDir,
}

impl Service {
    /// Starts a service and waits until it answers `probe`.
    ///
    /// `configure` gets the temp dir and returns the port to probe and the command-line
    /// arguments; it picks its ports with [`free_port`] and writes any config file it needs.
    /// It is called again with a fresh chance to pick ports when the service exits complaining
    /// that its address is in use.
    async fn launch(
        name: &'static str,
        program: PathBuf,
        probe: Probe,
        mut configure: impl FnMut(&Path) -> (u16, Vec<OsString>),
    ) -> Service {
        let mut dir = tempfile::Builder::new()
            .prefix(&format!("shopfloor-{name}-"))
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir for {name}: {e}"));
        if keep_dirs() {
            dir.disable_cleanup(true);
            eprintln!("{name}: keeping {}", dir.path().display());
        }
        let log_path = dir.path().join("service.log");
        let mut service = Service {
            name,
            program,
            args: Vec::new(),
            probe,
            port: 0,
            log_path,
            child: None,
            dir,
        };
        let mut attempt = 1;
        loop {
            let (port, args) = configure(service.dir.path());
            service.port = port;
            service.args = args;
            let log_start = service.log_len();
            service.spawn();
            match service.wait_ready().await {
                Ok(()) => return service,
                Err(NotReady::Exited(_))
                    if attempt < START_ATTEMPTS
                        && service
                            .log_since(log_start)
                            .to_lowercase()
                            .contains("address already in use") =>
                {
                    service.child = None;
                    attempt += 1;
                }
                Err(why) => service.fail_start(why),
            }
        }
    }

    fn spawn(&mut self) {
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", self.log_path.display()));
        // A marker per start makes a restarted service's log readable.
        let _ = writeln!(log, "=== harness: starting {}", self.command_line());
        let stderr = log
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot duplicate {}: {e}", self.log_path.display()));
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr);
        // influxd lets INFLUXDB_* variables override its config file; a developer's shell
        // might set some, and they must not leak into the generated config.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("INFLUXDB_") {
                command.env_remove(key);
            }
        }
        let child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {} ({}): {e}; scripts/test installs it",
                self.name,
                self.program.display()
            )
        });
        self.child = Some(child);
    }

    async fn wait_ready(&mut self) -> Result<(), NotReady> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let http = http_client();
        loop {
            if let Some(status) = self.exit_status() {
                return Err(NotReady::Exited(status));
            }
            if self.probe_once(&http).await {
                // Something answered; make sure it was our process and not another one that
                // got the port first (ours would then be exiting with "address in use").
                tokio::time::sleep(POLL_INTERVAL).await;
                return match self.exit_status() {
                    Some(status) => Err(NotReady::Exited(status)),
                    None => Ok(()),
                };
            }
            if Instant::now() >= deadline {
                return Err(NotReady::TimedOut);
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    async fn probe_once(&self, http: &reqwest::Client) -> bool {
        match self.probe {
            Probe::Http { path, status } => {
                let url = format!("http://{HOST}:{}{path}", self.port);
                match http.get(url).timeout(Duration::from_secs(2)).send().await {
                    Ok(response) => response.status().as_u16() == status,
                    Err(_) => false,
                }
            }
            Probe::Mqtt => mqtt_connack(self.port).await.is_some(),
        }
    }

    fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Stops the process the way an operator or init system would (SIGTERM), so that it saves
    /// what it saves on shutdown; kills it if it does not exit within [`STOP_TIMEOUT`].
    async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: kill(2) has no memory-safety preconditions. The child has not been
            // waited for, so its pid cannot have been reused by another process.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts the process again with the same arguments, port and data directory.
    async fn start_again(&mut self) {
        if self.child.is_some() {
            self.stop().await;
        }
        self.spawn();
        if let Err(why) = self.wait_ready().await {
            self.fail_start(why);
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn fail_start(&mut self, why: NotReady) -> ! {
        let reason = match why {
            NotReady::Exited(status) => format!("it exited ({status})"),
            NotReady::TimedOut => format!("it did not answer within {STARTUP_TIMEOUT:?}"),
        };
        self.kill();
        panic!(
            "{} did not become ready on {HOST}:{}: {reason}\ncommand: {}\n{}",
            self.name,
            self.port,
            self.command_line(),
            self.log_excerpt()
        );
    }

    fn command_line(&self) -> String {
        let mut line = self.program.display().to_string();
        for arg in &self.args {
            line.push(' ');
            line.push_str(&arg.to_string_lossy());
        }
        line
    }

    fn log_len(&self) -> u64 {
        fs::metadata(&self.log_path).map(|m| m.len()).unwrap_or(0)
    }

    fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    fn log_since(&self, offset: u64) -> String {
        let log = self.log();
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(log.len());
        log.get(start..).unwrap_or(&log).to_owned()
    }

    /// The last lines of the log, labelled, for panic messages.
    fn log_excerpt(&self) -> String {
        const MAX_LINES: usize = 60;
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let skip = lines.len().saturating_sub(MAX_LINES);
        let mut out = format!(
            "--- last {} of {} lines of {} log ({}) ---\n",
            lines.len() - skip,
            lines.len(),
            self.name,
            self.log_path.display()
        );
        for line in &lines[skip..] {
            let _ = writeln!(out, "{line}");
        }
        out.push_str("--- end of log ---");
        if !keep_dirs() {
            out.push_str(" (the dir goes with the handle; SHOPFLOOR_TEST_KEEP_DIRS=1 keeps it)");
        }
        out
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Finds a service binary: the override variable, then `PATH`, then the sbin/bin directories
/// that Debian packages install into.
fn find_binary(name: &str, override_var: &str, package: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(override_var) {
        return PathBuf::from(path);
    }
    let path_dirs = std::env::var_os("PATH").unwrap_or_default();
    let fallbacks = [
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/usr/local/bin",
        "/usr/local/sbin",
    ];
    std::env::split_paths(&path_dirs)
        .chain(fallbacks.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} not found on PATH or in /usr/sbin: run scripts/test, which installs the \
                 Debian package `{package}`, or set {override_var} to the binary"
            )
        })
}

/// Whether to leave services' temp dirs (config, data, log) behind for a post-mortem: set
/// `SHOPFLOOR_TEST_KEEP_DIRS=1` when a failure's quoted log is not enough.
fn keep_dirs() -> bool {
    std::env::var_os("SHOPFLOOR_TEST_KEEP_DIRS").is_some_and(|v| !v.is_empty() && v != "0")
}

fn os(s: impl AsRef<OsStr>) -> OsString {
    s.as_ref().to_owned()
}

// ---------------------------------------------------------------------------------------------
// VictoriaMetrics
// ---------------------------------------------------------------------------------------------

/// A VictoriaMetrics single-node server (Debian's 1.79.5) on a free loopback port.
///
/// How it maps InfluxDB line protocol, which it accepts on `/write` (v1), `/influx/write` and
/// `/api/v2/write` (v2; `bucket` and `org` are accepted and ignored):
/// - measurement `m` with field `f` becomes the metric `m_f` (separator `_`, set by
///   `-influxMeasurementFieldSeparator`), one metric per field, a field named `value`
///   included (`m_value`); only `-influxSkipSingleField` would name a single-field line `m`;
/// - tags become labels; every value becomes a float64: integers (`7i`) lose their type,
///   booleans become 1/0, and string fields are stored as 0 (checked on 1.79.5). So a type
///   conflict that InfluxDB rejects a whole batch for is *accepted* here: test type
///   discipline against [`Influx1`];
/// - a v1 `/write?db=NAME` adds the label `db="NAME"`; a v2 write adds no such label;
/// - the default timestamp precision is nanoseconds, stored with millisecond resolution;
/// - points older than `-retentionPeriod` are dropped silently (the harness sets 100 years so
///   fixtures with old timestamps survive); points more than 2 days in the future are dropped
///   with a warning in the log;
/// - two points with the same series and timestamp are both kept (export shows both), unlike
///   InfluxDB, where the second overwrites the first. Start with
///   `-dedup.minScrapeInterval=1ms` through [`VictoriaMetrics::start_with_args`] to get
///   InfluxDB-like "last write wins" (checked on 1.79.5: the later write survives).
///
/// Freshly written data is not searchable at once: the server buffers rows and registers new
/// series in the background. With `/internal/force_flush` before each query, a new series
/// showed up after about one second; without it, 4–9 s, because a query that found nothing
/// caches that for a while. The `wait_for_*` helpers therefore flush before every poll.
/// `-search.latencyOffset=0s` (default 30 s) lets instant queries see points stamped "now",
/// and `-search.disableCache` keeps range queries from serving stale cached answers.
pub struct VictoriaMetrics {
    service: Service,
    http: reqwest::Client,
}

/// One element of an instant-query result: the series' labels (including `__name__`), its value
/// and the evaluation timestamp.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
    pub timestamp_s: f64,
}

impl Sample {
    /// The metric name (`__name__`), empty for results of functions that drop it.
    pub fn metric(&self) -> &str {
        self.label("__name__").unwrap_or("")
    }

    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }
}

/// One line of `/api/v1/export`: a series with all its raw samples.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportedSeries {
    pub labels: BTreeMap<String, String>,
    pub values: Vec<f64>,
    pub timestamps_ms: Vec<i64>,
}

impl VictoriaMetrics {
    /// Starts a server with the harness's default flags (see the type's documentation).
    pub async fn start() -> Self {
        Self::start_with_args(&[]).await
    }

    /// Starts a server with extra command-line flags after the defaults, e.g.
    /// `&["-dedup.minScrapeInterval=1ms"]`. Run `victoria-metrics -help` for what 1.79.5 has.
    pub async fn start_with_args(extra_args: &[&str]) -> Self {
        let program = find_binary(
            "victoria-metrics",
            "SHOPFLOOR_TEST_VICTORIA_METRICS",
            "victoria-metrics",
        );
        let service = Service::launch(
            "victoria-metrics",
            program,
            Probe::Http {
                path: "/health",
                status: 200,
            },
            |dir| {
                let port = free_port();
                let mut args = vec![
                    os(format!("-storageDataPath={}", dir.join("data").display())),
                    os(format!("-httpListenAddr={HOST}:{port}")),
                    os("-retentionPeriod=100y"),
                    os("-search.disableCache"),
                    os("-search.latencyOffset=0s"),
                ];
                args.extend(extra_args.iter().map(os));
                (port, args)
            },
        )
        .await;
        VictoriaMetrics {
            service,
            http: http_client(),
        }
    }

    /// Base URL, e.g. `http://127.0.0.1:40123`: the value for the agent's store URL.
    pub fn url(&self) -> String {
        format!("http://{HOST}:{}", self.service.port)
    }

    pub fn port(&self) -> u16 {
        self.service.port
    }

    /// Everything the server has logged so far (all starts), for assertions and debugging.
    pub fn log(&self) -> String {
        self.service.log()
    }

    /// Stops the server gracefully (SIGTERM) so a test can see how the agent copes with a
    /// store that is down. [`VictoriaMetrics::restart`] brings it back with its data.
    pub async fn stop(&mut self) {
        self.service.stop().await;
    }

    /// Stops the server if it runs and starts it again on the same port and data directory.
    pub async fn restart(&mut self) {
        self.service.start_again().await;
    }

    /// Writes line protocol through the v2 endpoint and panics unless the server accepts it.
    pub async fn write_lines(&self, lines: &str) {
        let url = url_with_query(
            &self.url(),
            "/api/v2/write",
            &[("bucket", "b"), ("org", "o")],
        );
        let (status, body) = send(
            self.http.post(url).body(lines.to_owned()),
            "VictoriaMetrics write",
        )
        .await;
        if status != 204 {
            panic!(
                "VictoriaMetrics rejected the write ({status}): {body}\n{}",
                self.service.log_excerpt()
            );
        }
    }

    /// Asks the server to make buffered rows searchable (`/internal/force_flush`). It still
    /// takes about a second before a new series answers queries; use the `wait_for_*` helpers.
    pub async fn flush(&self) {
        let (status, body) = send(
            self.http
                .get(format!("{}/internal/force_flush", self.url())),
            "VictoriaMetrics force_flush",
        )
        .await;
        if status != 200 {
            panic!("VictoriaMetrics force_flush answered {status}: {body}");
        }
    }

    /// Evaluates a PromQL/MetricsQL instant query at the current time. Only series with a
    /// point in the last 5 minutes (the default lookback) appear; for fixtures with old
    /// timestamps use [`VictoriaMetrics::query_instant_at`] or [`VictoriaMetrics::export`].
    pub async fn query_instant(&self, promql: &str) -> Vec<Sample> {
        self.try_query(promql, None)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Evaluates an instant query at `unix_seconds`.
    pub async fn query_instant_at(&self, promql: &str, unix_seconds: f64) -> Vec<Sample> {
        self.try_query(promql, Some(unix_seconds))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    async fn try_query(&self, promql: &str, at: Option<f64>) -> Result<Vec<Sample>, String> {
        let time = at.map(|t| t.to_string());
        let mut pairs = vec![("query", promql)];
        if let Some(time) = &time {
            pairs.push(("time", time));
        }
        let url = url_with_query(&self.url(), "/api/v1/query", &pairs);
        let (status, body) = send(self.http.get(url), "VictoriaMetrics query").await;
        if status != 200 {
            return Err(format!(
                "VictoriaMetrics query {promql:?} answered {status}: {body}"
            ));
        }
        parse_instant_vector(&body).map_err(|e| format!("query {promql:?}: {e}: {body}"))
    }

    /// Exports the raw samples of all series matching `selector` (e.g. `{__name__=~"m_.*"}` or
    /// `m_f{host="a"}`) over all time, one JSON document per series, as the server sends them.
    pub async fn export(&self, selector: &str) -> Vec<String> {
        let url = url_with_query(&self.url(), "/api/v1/export", &[("match[]", selector)]);
        let (status, body) = send(self.http.get(url), "VictoriaMetrics export").await;
        if status != 200 {
            panic!("VictoriaMetrics export {selector:?} answered {status}: {body}");
        }
        body.lines()
            .filter(|line| !line.trim().is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// [`VictoriaMetrics::export`], parsed.
    pub async fn export_series(&self, selector: &str) -> Vec<ExportedSeries> {
        self.export(selector)
            .await
            .iter()
            .map(|line| {
                parse_export_line(line)
                    .unwrap_or_else(|e| panic!("cannot parse export line {line:?}: {e}"))
            })
            .collect()
    }

    /// Flushes and queries until `done` accepts the result, and returns that result; panics
    /// with the last result and the server log after [`DATA_TIMEOUT`].
    pub async fn wait_for_query(
        &self,
        promql: &str,
        done: impl Fn(&[Sample]) -> bool,
    ) -> Vec<Sample> {
        let what = format!("VictoriaMetrics query {promql:?} to satisfy the test");
        try_eventually(&what, DATA_TIMEOUT, || async {
            self.flush().await;
            let samples = self.try_query(promql, None).await?;
            if done(&samples) {
                Ok(samples)
            } else {
                Err(format!("{samples:?}"))
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", self.service.log_excerpt()))
    }

    /// Flushes and exports until `done` accepts the series, and returns them.
    pub async fn wait_for_export(
        &self,
        selector: &str,
        done: impl Fn(&[ExportedSeries]) -> bool,
    ) -> Vec<ExportedSeries> {
        let what = format!("VictoriaMetrics export {selector:?} to satisfy the test");
        try_eventually(&what, DATA_TIMEOUT, || async {
            self.flush().await;
            let series = self.export_series(selector).await;
            if done(&series) {
                Ok(series)
            } else {
                Err(format!("{series:?}"))
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", self.service.log_excerpt()))
    }
}

/// Parses a Prometheus-style instant-vector answer:
/// `{"status":"success","data":{"resultType":"vector","result":[{"metric":{..},"value":[t,"v"]}]}}`.
fn parse_instant_vector(body: &str) -> Result<Vec<Sample>, String> {
    let json: Value = serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    if json["status"] != "success" {
        return Err("status is not success".into());
    }
    let result_type = &json["data"]["resultType"];
    let results = json["data"]["result"]
        .as_array()
        .ok_or("no data.result array")?;
    if result_type != "vector" {
        return Err(format!(
            "resultType is {result_type}, the helpers expect a vector"
        ));
    }
    results
        .iter()
        .map(|item| {
            let labels = string_map(&item["metric"])?;
            let timestamp_s = item["value"][0]
                .as_f64()
                .ok_or("value[0] is not a number")?;
            let value = item["value"][1]
                .as_str()
                .ok_or("value[1] is not a string")?
                .parse::<f64>()
                .map_err(|e| format!("value[1] is not a float: {e}"))?;
            Ok(Sample {
                labels,
                value,
                timestamp_s,
            })
        })
        .collect()
}

/// Parses one export line: `{"metric":{..},"values":[..],"timestamps":[..]}`.
fn parse_export_line(line: &str) -> Result<ExportedSeries, String> {
    let json: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let labels = string_map(&json["metric"])?;
    let values = json["values"]
        .as_array()
        .ok_or("no values array")?
        .iter()
        // Export writes NaN and infinities as bare words JSON cannot carry; they come back as
        // strings or nulls depending on version, and are all NaN to the tests.
        .map(|v| v.as_f64().unwrap_or(f64::NAN))
        .collect();
    let timestamps_ms = json["timestamps"]
        .as_array()
        .ok_or("no timestamps array")?
        .iter()
        .map(|t| {
            t.as_i64()
                .ok_or_else(|| format!("timestamp {t} is not an integer"))
        })
        .collect::<Result<_, _>>()?;
    Ok(ExportedSeries {
        labels,
        values,
        timestamps_ms,
    })
}

fn string_map(value: &Value) -> Result<BTreeMap<String, String>, String> {
    let Some(object) = value.as_object() else {
        return Ok(BTreeMap::new());
    };
    object
        .iter()
        .map(|(k, v)| match v.as_str() {
            Some(s) => Ok((k.clone(), s.to_owned())),
            None => Err(format!("label {k} is not a string: {v}")),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// InfluxDB 1.x
// ---------------------------------------------------------------------------------------------

/// An InfluxDB 1.x server (Debian's 1.6.7) on a free loopback port.
///
/// It is started with `influxd run -config <generated file>`; the file puts meta, data and WAL
/// in the temp dir, binds HTTP and the RPC service used by backup/restore (the top-level
/// `bind-address`, default 127.0.0.1:8088, which would collide between parallel tests) to free
/// loopback ports, and turns off reporting, the `_internal` monitor database, retention
/// enforcement, shard precreation, continuous queries, the subscriber and ifql services.
///
/// Quirks of 1.6.7 that tests should know:
/// - only the v1 API exists: `/write?db=` and `/query`. `/api/v2/write` (the compatibility
///   endpoint) arrived in 1.8 and answers 404 here, so the agent's v1 mode is what is tested
///   against this server;
/// - with `auth-enabled = true`, the first admin user can be created without credentials
///   (that is how [`Influx1::start_with_auth`] bootstraps); every other request then needs
///   them, and a missing or wrong one gets 401 with `{"error":"unable to parse authentication
///   credentials"}` or `"authorization failed"`; `/ping` never needs them;
/// - writes are visible to queries as soon as `/write` has answered 204;
/// - a point whose series, field set and timestamp equal an earlier one overwrites it, and a
///   field that changes type (integer to float) rejects the whole batch with 400.
pub struct Influx1 {
    service: Service,
    http: reqwest::Client,
    credentials: Option<(String, String)>,
}

/// One series of an InfluxQL result.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub name: String,
    pub tags: BTreeMap<String, String>,
    pub columns: Vec<String>,
    pub values: Vec<Vec<Value>>,
}

impl Series {
    /// The rows as maps from column to value, with the series' tags (from `GROUP BY`) added as
    /// string columns.
    pub fn rows(&self) -> Vec<BTreeMap<String, Value>> {
        self.values
            .iter()
            .map(|row| {
                let mut map: BTreeMap<String, Value> = self
                    .tags
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect();
                for (column, value) in self.columns.iter().zip(row) {
                    map.insert(column.clone(), value.clone());
                }
                map
            })
            .collect()
    }
}

impl Influx1 {
    /// Starts a server without authentication.
    pub async fn start() -> Self {
        Self::launch(false, 0).await
    }

    /// Starts a server without authentication whose `/write` takes request bodies of at most
    /// `bytes` (`[http] max-body-size`) and answers 413 to larger ones, for testing how a
    /// client splits its batches.
    pub async fn start_with_max_body_size(bytes: usize) -> Self {
        Self::launch(false, bytes).await
    }

    /// Starts a server with `auth-enabled = true` and an admin user `user`/`password`. The
    /// helpers of the handle authenticate as that user; the agent must bring its own.
    pub async fn start_with_auth(user: &str, password: &str) -> Self {
        let mut influx = Self::launch(true, 0).await;
        let statement = format!(
            "CREATE USER {} WITH PASSWORD {} WITH ALL PRIVILEGES",
            influxql_ident(user),
            influxql_string(password)
        );
        influx.query("", &statement).await;
        influx.credentials = Some((user.to_owned(), password.to_owned()));
        influx
    }

    /// `max_body`: 0 keeps the server's default (25 MB).
    async fn launch(auth: bool, max_body: usize) -> Self {
        let program = find_binary("influxd", "SHOPFLOOR_TEST_INFLUXD", "influxdb");
        let service = Service::launch(
            "influxd",
            program,
            Probe::Http {
                path: "/ping",
                status: 204,
            },
            |dir| {
                let http_port = free_port();
                let rpc_port = free_port();
                let config = influx1_config(dir, http_port, rpc_port, auth, max_body);
                let config_path = dir.join("influxdb.conf");
                fs::write(&config_path, config)
                    .unwrap_or_else(|e| panic!("cannot write {}: {e}", config_path.display()));
                (
                    http_port,
                    vec![os("run"), os("-config"), config_path.into_os_string()],
                )
            },
        )
        .await;
        Influx1 {
            service,
            http: http_client(),
            credentials: None,
        }
    }

    /// Base URL, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("http://{HOST}:{}", self.service.port)
    }

    pub fn port(&self) -> u16 {
        self.service.port
    }

    /// The admin user and password given to [`Influx1::start_with_auth`], if any.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.credentials
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// Everything the server has logged so far (all starts).
    pub fn log(&self) -> String {
        self.service.log()
    }

    /// Stops the server gracefully (SIGTERM); [`Influx1::restart`] brings it back with its data.
    pub async fn stop(&mut self) {
        self.service.stop().await;
    }

    /// Stops the server if it runs and starts it again on the same ports and data directory.
    pub async fn restart(&mut self) {
        self.service.start_again().await;
    }

    fn authenticated(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.credentials {
            Some((user, password)) => request.basic_auth(user, Some(password)),
            None => request,
        }
    }

    /// Creates a database (a no-op if it exists).
    pub async fn create_db(&self, name: &str) {
        self.query("", &format!("CREATE DATABASE {}", influxql_ident(name)))
            .await;
    }

    /// Writes line protocol (nanosecond timestamps) to `db` and panics unless it is accepted.
    pub async fn write_lines(&self, db: &str, lines: &str) {
        let url = url_with_query(&self.url(), "/write", &[("db", db)]);
        let request = self.authenticated(self.http.post(url).body(lines.to_owned()));
        let (status, body) = send(request, "InfluxDB write").await;
        if status != 204 {
            panic!("InfluxDB rejected the write to {db:?} ({status}): {body}");
        }
    }

    /// Runs InfluxQL (any statement, hence POST) and returns the JSON answer. `db` may be empty
    /// for server-level statements. Panics on an HTTP error or an `error` in any statement's
    /// result, quoting the server log.
    pub async fn query(&self, db: &str, influxql: &str) -> Value {
        let mut pairs = vec![("q", influxql)];
        if !db.is_empty() {
            pairs.push(("db", db));
        }
        let url = url_with_query(&self.url(), "/query", &pairs);
        let (status, body) = send(self.authenticated(self.http.post(url)), "InfluxDB query").await;
        let json: Value = serde_json::from_str(&body).unwrap_or_else(|e| {
            panic!("InfluxDB query {influxql:?} answered {status} with non-JSON ({e}): {body}")
        });
        let statement_error = json["results"]
            .as_array()
            .and_then(|results| results.iter().find_map(|r| r["error"].as_str()));
        if status != 200 || json.get("error").is_some() || statement_error.is_some() {
            panic!(
                "InfluxDB query {influxql:?} on {db:?} failed ({status}): {body}\n{}",
                self.service.log_excerpt()
            );
        }
        json
    }

    /// Runs InfluxQL and returns the series of all statements' results.
    pub async fn query_series(&self, db: &str, influxql: &str) -> Vec<Series> {
        let json = self.query(db, influxql).await;
        parse_influx_series(&json)
            .unwrap_or_else(|e| panic!("cannot read InfluxDB answer to {influxql:?}: {e}: {json}"))
    }

    /// Runs InfluxQL and returns the rows of all series, each with its `GROUP BY` tags. Use
    /// [`Influx1::query_series`] when the measurement name matters.
    pub async fn query_rows(&self, db: &str, influxql: &str) -> Vec<BTreeMap<String, Value>> {
        self.query_series(db, influxql)
            .await
            .iter()
            .flat_map(Series::rows)
            .collect()
    }

    /// Queries until `done` accepts the rows and returns them; panics after [`DATA_TIMEOUT`]
    /// with the last rows. For waiting on writes made by the agent.
    pub async fn wait_for_rows(
        &self,
        db: &str,
        influxql: &str,
        done: impl Fn(&[BTreeMap<String, Value>]) -> bool,
    ) -> Vec<BTreeMap<String, Value>> {
        let what = format!("InfluxDB query {influxql:?} on {db:?} to satisfy the test");
        try_eventually(&what, DATA_TIMEOUT, || async {
            // Before the agent's first write the database may not exist; that is "not yet".
            let url = url_with_query(&self.url(), "/query", &[("q", influxql), ("db", db)]);
            let (status, body) =
                send(self.authenticated(self.http.post(url)), "InfluxDB query").await;
            let json: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
            if status != 200 {
                return Err(format!("{status}: {body}"));
            }
            let rows: Vec<_> = parse_influx_series(&json)?
                .iter()
                .flat_map(Series::rows)
                .collect();
            if done(&rows) {
                Ok(rows)
            } else {
                Err(format!("{rows:?}"))
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", self.service.log_excerpt()))
    }
}

/// The generated `influxdb.conf`. Keys as in 1.6.7's `influxd config`; an unknown key is
/// ignored by this version, so a typo here fails silently — check the log's "Listening" lines.
fn influx1_config(
    dir: &Path,
    http_port: u16,
    rpc_port: u16,
    auth: bool,
    max_body: usize,
) -> String {
    let path = |name: &str| toml_string(&dir.join(name).display().to_string());
    let max_body = if max_body == 0 { 25_000_000 } else { max_body };
    format!(
        r#"# Generated by tests/common/mod.rs for one test.
reporting-enabled = false
bind-address = "{HOST}:{rpc_port}"

[meta]
  dir = {meta}
  logging-enabled = true

[data]
  dir = {data}
  wal-dir = {wal}
  wal-fsync-delay = "0s"
  query-log-enabled = true

[coordinator]

[retention]
  enabled = false

[shard-precreation]
  enabled = false

[monitor]
  store-enabled = false

[subscriber]
  enabled = false

[http]
  enabled = true
  bind-address = "{HOST}:{http_port}"
  auth-enabled = {auth}
  log-enabled = true
  pprof-enabled = false
  https-enabled = false
  max-body-size = {max_body}

[ifql]
  enabled = false

[logging]
  level = "info"
  suppress-logo = true

[continuous_queries]
  enabled = false
"#,
        meta = path("meta"),
        data = path("data"),
        wal = path("wal"),
    )
}

/// A TOML basic string. Temp-dir paths have no quotes or backslashes, but a `TMPDIR` could.
fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// An InfluxQL identifier, double-quoted so that names like `shop-floor` work.
fn influxql_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

/// An InfluxQL string literal.
fn influxql_string(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Collects the series of every statement in an InfluxDB `/query` answer.
fn parse_influx_series(json: &Value) -> Result<Vec<Series>, String> {
    if let Some(error) = json.get("error") {
        return Err(format!("error {error}"));
    }
    let results = json["results"].as_array().ok_or("no results array")?;
    let mut all = Vec::new();
    for result in results {
        if let Some(error) = result.get("error") {
            return Err(format!("statement error {error}"));
        }
        let Some(series) = result["series"].as_array() else {
            continue; // a statement with no rows has no "series" key at all
        };
        for s in series {
            let columns = s["columns"]
                .as_array()
                .ok_or("series without columns")?
                .iter()
                .map(|c| {
                    c.as_str()
                        .map(str::to_owned)
                        .ok_or("column is not a string")
                })
                .collect::<Result<_, _>>()?;
            let values = s["values"]
                .as_array()
                .map(|rows| {
                    rows.iter()
                        .map(|row| row.as_array().cloned().unwrap_or_default())
                        .collect()
                })
                .unwrap_or_default();
            all.push(Series {
                name: s["name"].as_str().unwrap_or_default().to_owned(),
                tags: string_map(&s["tags"])?,
                columns,
                values,
            });
        }
    }
    Ok(all)
}

// ---------------------------------------------------------------------------------------------
// Mosquitto
// ---------------------------------------------------------------------------------------------

/// A Mosquitto broker (Debian's 2.0.11) on a free loopback port.
///
/// The generated `mosquitto.conf` has one plain listener on `127.0.0.1:PORT`, anonymous access,
/// persistence in the temp dir and everything logged to stderr (captured in the log file).
///
/// Quirks of 2.0.11:
/// - started as root it switches to the `mosquitto` user, which could not write into our
///   root-owned 0700 temp dir; the config says `user root` (ignored when not root);
/// - since 2.0 a broker with no `listener` line listens on localhost only and refuses
///   anonymous clients unless `allow_anonymous true` is set, hence both lines;
/// - it writes its persistence file (retained messages, durable sessions, queued QoS 1/2
///   messages) only on a clean shutdown or every `autosave_interval` (30 min), so
///   [`Mosquitto::restart`] stops it with SIGTERM, never SIGKILL.
pub struct Mosquitto {
    service: Service,
}

impl Mosquitto {
    pub async fn start() -> Self {
        Self::start_with_config(&[]).await
    }

    /// Starts a broker with `extra_conf_lines` appended to the generated config, e.g. a TLS
    /// listener on another [`free_port`] or `acl_file`/`password_file` lines. Global options
    /// given again override the generated ones (`allow_anonymous false`); file paths in them
    /// should be absolute (the broker runs in its temp dir).
    pub async fn start_with_config(extra_conf_lines: &[&str]) -> Self {
        let program = find_binary("mosquitto", "SHOPFLOOR_TEST_MOSQUITTO", "mosquitto");
        let service = Service::launch("mosquitto", program, Probe::Mqtt, |dir| {
            let port = free_port();
            let config_path = dir.join("mosquitto.conf");
            let persistence = dir.join("persistence");
            fs::create_dir_all(&persistence)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", persistence.display()));
            let mut config = format!(
                "# Generated by tests/common/mod.rs for one test.\n\
                 user root\n\
                 listener {port} {HOST}\n\
                 allow_anonymous true\n\
                 persistence true\n\
                 persistence_location {}/\n\
                 log_dest stderr\n\
                 log_type all\n\
                 log_timestamp_format %Y-%m-%dT%H:%M:%S\n",
                persistence.display()
            );
            for line in extra_conf_lines {
                config.push_str(line);
                config.push('\n');
            }
            fs::write(&config_path, config)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", config_path.display()));
            (port, vec![os("-c"), config_path.into_os_string()])
        })
        .await;
        Mosquitto { service }
    }

    /// The plain MQTT listener's port (on [`HOST`]).
    pub fn port(&self) -> u16 {
        self.service.port
    }

    pub fn host(&self) -> &'static str {
        HOST
    }

    /// The broker's temp dir, which holds `mosquitto.conf`, `persistence/` and `service.log`.
    pub fn dir(&self) -> &Path {
        self.service.dir.path()
    }

    /// Everything the broker has logged so far (all starts). With `log_type all` that includes
    /// each CONNECT, SUBSCRIBE and PUBLISH, which tests may assert on.
    pub fn log(&self) -> String {
        self.service.log()
    }

    /// Stops the broker gracefully (SIGTERM), saving its persistence file. Clients see their
    /// connections close; [`Mosquitto::restart`] brings it back.
    pub async fn stop(&mut self) {
        self.service.stop().await;
    }

    /// Stops the broker if it runs and starts it again on the same port with the same config
    /// and persistence, as a broker restart in the field would.
    pub async fn restart(&mut self) {
        self.service.start_again().await;
    }
}

/// Makes a CA (`ca.pem`), a server certificate for 127.0.0.1 (`server.pem`, `server.key`) and a
/// client certificate (`client.pem`, `client.key`) in `dir` with `openssl`.
pub fn make_certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs (it is on every Debian machine)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let key = |name: &str| {
        run(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            name,
        ])
    };
    key("ca.key");
    run(&[
        "req",
        "-x509",
        "-new",
        "-key",
        "ca.key",
        "-days",
        "2",
        "-subj",
        "/CN=Shopfloor test CA",
        "-out",
        "ca.pem",
    ]);
    for (name, cn, ext) in [
        (
            "server",
            "127.0.0.1",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "shopfloor-agent", "extendedKeyUsage=clientAuth\n"),
    ] {
        key(&format!("{name}.key"));
        run(&[
            "req",
            "-new",
            "-key",
            &format!("{name}.key"),
            "-subj",
            &format!("/CN={cn}"),
            "-out",
            &format!("{name}.csr"),
        ]);
        std::fs::write(dir.join(format!("{name}.ext")), ext).expect("write ext file");
        run(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.pem"),
        ]);
    }
}

/// Sends an MQTT 3.1.1 CONNECT (empty client id, clean session) and returns the CONNACK
/// return code (0 = accepted, 5 = not authorised, ...), or `None` if no broker answered.
/// Enough MQTT to tell a broker from an open port without an MQTT client crate.
pub async fn mqtt_connack(port: u16) -> Option<u8> {
    const CONNECT: [u8; 14] = [
        0x10, 12, // CONNECT, remaining length
        0, 4, b'M', b'Q', b'T', b'T', // protocol name
        4,    // protocol level 3.1.1
        0x02, // flags: clean session
        0, 10, // keep alive 10 s
        0, 0, // client id "" (allowed with clean session)
    ];
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect((HOST, port)).await.ok()?;
        stream.write_all(&CONNECT).await.ok()?;
        let mut connack = [0u8; 4];
        stream.read_exact(&mut connack).await.ok()?;
        let _ = stream.write_all(&[0xE0, 0]).await; // DISCONNECT
        (connack[0] == 0x20 && connack[1] == 2).then_some(connack[3])
    };
    tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .ok()
        .flatten()
}

/// The simulated workshop (`shopfloor sim`'s defaults: four machines, units 1–4, the meter
/// unit 100) on a free loopback port, until `shutdown`.
pub async fn simulator(shutdown: shopfloor::shutdown::Shutdown) -> std::net::SocketAddr {
    let options = shopfloor::sim::SimOptions {
        bind: "127.0.0.1:0".parse().expect("addr"),
        ..shopfloor::sim::SimOptions::default()
    };
    shopfloor::sim::start(&options, shutdown, None)
        .await
        .expect("sim")
        .addr
}
