//! The outputs' sections: `[spool]`, `[[influx]]`, `[[file]]` and `[uplink]`, and their checks.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::common::mqtt::{MqttConnection, MqttTls, topic_level_problem};
use crate::config::{
    self, Checker, Composite, References, Secret, Section, Seg, duration, join, key, struct_fields,
};

/// `[spool]`: the crash-safe disk queue every record passes through. What the bounds and the
/// sync policies guarantee is explained in `sink::spool`.
#[derive(Debug, Clone, Deserialize)]
pub struct Spool {
    /// Spool file; default `<data_dir>/spool.db`.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Byte bound: past this many bytes of records waiting, the oldest are dropped and counted
    /// (log, `/metrics`, the `agent` line). Default 1 GiB.
    #[serde(default = "default_spool_max_bytes")]
    pub max_bytes: u64,
    /// Age bound: records waiting longer than this are dropped and counted as expired.
    /// Default 30 days; `"0s"` turns the age bound off.
    #[serde(default = "default_spool_max_age", deserialize_with = "duration")]
    pub max_age: Duration,
    /// `"normal"` (default: survives a crash of the agent; on power loss may lose the records
    /// of the last `sync_interval`) or `"full"` (syncs every append; nothing committed is
    /// lost, at one disk sync per append).
    #[serde(default)]
    pub sync: crate::sink::spool::SyncPolicy,
    /// With `sync = "normal"`: how often the spool's log is synced to disk. Default `"1s"`.
    #[serde(default = "default_spool_sync_interval", deserialize_with = "duration")]
    pub sync_interval: Duration,
}

impl Default for Spool {
    fn default() -> Self {
        Spool {
            path: None,
            max_bytes: default_spool_max_bytes(),
            max_age: default_spool_max_age(),
            sync: Default::default(),
            sync_interval: default_spool_sync_interval(),
        }
    }
}

impl Spool {
    /// The bounds and sync policy the spool runs with.
    pub fn limits(&self) -> crate::sink::spool::Limits {
        crate::sink::spool::Limits {
            max_bytes: self.max_bytes,
            max_age: Some(self.max_age).filter(|a| !a.is_zero()),
            sync: self.sync,
        }
    }
}

fn default_spool_max_bytes() -> u64 {
    1 << 30
}
fn default_spool_max_age() -> Duration {
    Duration::from_secs(30 * 86_400)
}
fn default_spool_sync_interval() -> Duration {
    Duration::from_secs(1)
}

/// `[[influx]]`: an InfluxDB-compatible store.
#[derive(Debug, Clone, Deserialize)]
pub struct InfluxOutput {
    /// Name in logs and health lines; default `"influx"`, then `"influx2"`, … for more.
    #[serde(default)]
    pub name: Option<String>,
    /// Base URL, e.g. `http://127.0.0.1:8086`.
    pub url: String,
    /// `v2` (`/api/v2/write`: InfluxDB 2.x and 3.x, VictoriaMetrics) or `v1` (`/write`).
    #[serde(default)]
    pub api: InfluxApi,
    /// v2: organisation.
    #[serde(default)]
    pub org: Option<String>,
    /// v2: bucket.
    #[serde(default)]
    pub bucket: Option<String>,
    /// v2: API token, `{ env = "VAR" }` or `{ file = "/path" }`.
    #[serde(default)]
    pub token: Option<Secret>,
    /// v1: database.
    #[serde(default)]
    pub database: Option<String>,
    /// v1: retention policy (default: the database's default).
    #[serde(default)]
    pub retention_policy: Option<String>,
    /// v1: user name.
    #[serde(default)]
    pub username: Option<String>,
    /// v1: password, `{ env = "VAR" }` or `{ file = "/path" }`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// Timeout of one write request.
    #[serde(default = "default_write_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Lines per write request at most. Default 5000.
    #[serde(default = "default_batch_lines")]
    pub batch_lines: usize,
    /// Bytes of line protocol per write request at most, before compression. Default 4 MiB.
    #[serde(default = "default_batch_bytes")]
    pub batch_bytes: usize,
    /// A request with fewer than `batch_lines` lines waits until this long after the previous
    /// one, so a quiet agent sends about one request per interval. Default `"1s"`.
    #[serde(default = "default_flush_interval", deserialize_with = "duration")]
    pub flush_interval: Duration,
    /// Compress request bodies with gzip. Default true; turn off only for a store or proxy
    /// that cannot take `Content-Encoding: gzip`.
    #[serde(default = "default_true")]
    pub gzip: bool,
    /// Timestamp precision sent to the store: `"ns"` (default), `"us"`, `"ms"` or `"s"`.
    /// Coarser precision is rounded down and makes points within the same unit overwrite
    /// each other; use it only for a store that wants it.
    #[serde(default)]
    pub precision: crate::line_protocol::Precision,
    /// The longest wait between retries of a failing store (back-off doubles from 0.5 s up to
    /// this, with up to 25 % jitter). Default `"60s"`.
    #[serde(default = "default_retry_max", deserialize_with = "duration")]
    pub retry_max: Duration,
    /// Bound of the dead-letter file (`<data_dir>/dead-letter-<name>.lp`, the lines the
    /// store rejected), in bytes. At the bound the file becomes `<file>.1`, replacing the
    /// previous one, whose lines are deleted and counted. Default 16 MiB.
    #[serde(default = "default_dead_letter_max_bytes")]
    pub dead_letter_max_bytes: u64,
}

impl InfluxOutput {
    /// The writer's batching and retry settings, with the dead-letter file in `dir`.
    pub fn writer_options(&self, name: &str, dir: &std::path::Path) -> crate::sink::WriterOptions {
        crate::sink::WriterOptions {
            batch_lines: self.batch_lines,
            batch_bytes: self.batch_bytes,
            flush_interval: self.flush_interval,
            retry_max: self.retry_max,
            dead_letter_max_bytes: self.dead_letter_max_bytes,
            ..crate::sink::WriterOptions::new(name, dir)
        }
    }
}

fn default_write_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_batch_lines() -> usize {
    5000
}
fn default_batch_bytes() -> usize {
    crate::sink::BATCH_BYTES
}
fn default_flush_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_dead_letter_max_bytes() -> u64 {
    crate::sink::DEAD_LETTER_MAX_BYTES
}
fn default_retry_max() -> Duration {
    Duration::from_secs(60)
}
fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InfluxApi {
    V1,
    #[default]
    V2,
}

/// `[uplink]`: publishes the enterprise's indicators (`fleet` and `green` records) to the
/// county's MQTT broker under `<topic_prefix>/<county>/<sector>/<enterprise>/<measurement>`,
/// where `shopfloor county ingest` writes them into the county's store. An output like
/// `[[influx]]`: it drains the spool from its own cursor, so nothing is lost while the broker
/// or the network is down. MQTT 5 only: a broker that refuses a publish (its ACL) says so in
/// the acknowledgement, where MQTT 3.1.1 acknowledges it as if delivered.
#[derive(Debug, Clone, Deserialize)]
#[serde(remote = "Self")]
pub struct Uplink {
    /// The connection to the county's broker: `address` (8883 for TLS by convention; with TLS
    /// the host must be the name the broker's certificate was issued for), `client_id` (default
    /// `shopfloor-uplink-<enterprise>`), `username` (the enterprise's account: the shipped ACL,
    /// `deploy/county/mosquitto.acl`, lets the account named after the enterprise id publish
    /// under its own enterprise's topics only), `password`, `tls`, `keepalive`, `max_backoff`
    /// (the longest wait between retries and between connection attempts; `retry_max` is its
    /// deprecated name) and `max_packet_size`. Its keys sit at the top level of `[uplink]`; see
    /// [`crate::common::mqtt`].
    #[serde(skip)]
    pub connection: MqttConnection,
    /// The first topic level. Default `"shopfloor"`.
    #[serde(default = "default_topic_prefix")]
    pub topic_prefix: String,
    /// The measurements published. Default `["fleet", "green"]`; `"green_alert"` and
    /// `"energy"` are the other enterprise-level ones a county may want.
    #[serde(default = "default_uplink_measurements")]
    pub measurements: Vec<String>,
    /// How long a batch waits for the broker's acknowledgements before it is sent again.
    #[serde(default = "default_write_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Spool lines read per batch (of which only the `measurements` are published).
    #[serde(default = "default_batch_lines")]
    pub batch_lines: usize,
    /// As `[[influx]] flush_interval`.
    #[serde(default = "default_flush_interval", deserialize_with = "duration")]
    pub flush_interval: Duration,
}

impl Composite for Uplink {
    type Shared = MqttConnection;
    fn own<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Uplink::deserialize(d)
    }
    fn with_shared(self, connection: MqttConnection) -> Self {
        Uplink { connection, ..self }
    }
}

impl<'de> Deserialize<'de> for Uplink {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        config::composite::deserialize(d)
    }
}

impl Uplink {
    /// The writer's batching and retry settings: `max_backoff` bounds the wait between tries
    /// of a batch as it bounds the wait between connection attempts.
    pub fn writer_options(&self, dir: &std::path::Path) -> crate::sink::WriterOptions {
        crate::sink::WriterOptions {
            batch_lines: self.batch_lines,
            flush_interval: self.flush_interval,
            retry_max: self.connection.max_backoff,
            ..crate::sink::WriterOptions::new(UPLINK_OUTPUT, dir)
        }
    }

    /// Checks the section (its connection included); `root` is the whole document.
    pub(crate) fn check(&self, checker: &mut Checker<'_>, root: &Spanned<DeTable<'_>>) {
        let base = [key("uplink")];
        let at = |c: &Checker<'_>, k: &str| c.span_of(root, &[key("uplink"), key(k)]);
        self.connection.check(
            checker,
            root,
            &base,
            "[uplink]",
            crate::config::SecretOf::Output,
        );
        if let Some(problem) = topic_level_problem(&self.topic_prefix) {
            let span = at(checker, "topic_prefix");
            checker.push(span, format!("topic_prefix: {problem}"));
        }
        if self.measurements.is_empty() {
            let span = at(checker, "measurements");
            checker.push(
                span,
                "measurements is empty: the uplink would publish nothing (leave it out for fleet and green)"
                    .into(),
            );
        }
        for (j, m) in self.measurements.iter().enumerate() {
            if let Some(problem) = topic_level_problem(m) {
                let span =
                    checker.span_of(root, &[key("uplink"), key("measurements"), Seg::Index(j)]);
                checker.push(span, format!("measurement `{m}`: {problem}"));
            }
        }
        if self.batch_lines == 0 {
            let span = at(checker, "batch_lines");
            checker.push(span, "batch_lines must be at least 1".to_string());
        }
        if self.timeout.is_zero() {
            let span = at(checker, "timeout");
            checker.push(span, "timeout must be longer than zero".to_string());
        }
        // Here it is also the writer's retry ceiling, where zero would retry without a pause.
        if self.connection.max_backoff.is_zero() {
            let k = written_key(root, &["max_backoff", "retry_max"]);
            let span = at(checker, k);
            checker.push(span, format!("{k} must be longer than zero"));
        }
    }
}

/// Which of a setting's names the `[uplink]` table uses (the first when it uses none).
fn written_key(root: &Spanned<DeTable<'_>>, names: &[&'static str]) -> &'static str {
    let table = root
        .get_ref()
        .get("uplink")
        .and_then(|t| t.get_ref().as_table());
    names
        .iter()
        .find(|n| table.is_some_and(|t| t.get(**n).is_some()))
        .or(names.first())
        .copied()
        .unwrap_or_default()
}

/// The uplink's output name: its spool cursor, logs and metrics.
pub const UPLINK_OUTPUT: &str = "uplink";

pub fn default_topic_prefix() -> String {
    "shopfloor".to_string()
}
pub fn default_uplink_measurements() -> Vec<String> {
    vec!["fleet".to_string(), "green".to_string()]
}

/// `[[file]]`: appends line protocol to a file.
#[derive(Debug, Clone, Deserialize)]
pub struct FileOutput {
    #[serde(default)]
    pub name: Option<String>,
    pub path: PathBuf,
}

/// The smallest dead-letter bound `check` takes: one rejected batch's reason and a few lines.
const MIN_DEAD_LETTER_BYTES: u64 = 4096;

impl Checker<'_> {
    pub(crate) fn influx(
        &mut self,
        root: &Spanned<DeTable<'_>>,
        base: &[Seg],
        output: &InfluxOutput,
    ) {
        let at = |s: &Self, k: &str| s.span_of(root, &join(base, &[key(k)]));
        match reqwest::Url::parse(&output.url) {
            // Credentials in the URL would be a secret in the config text, and every error
            // message that names the URL (reqwest's among them) would print them.
            Ok(url) if !url.username().is_empty() || url.password().is_some() => {
                let span = at(self, "url");
                self.push(
                    span,
                    format!(
                        "url `{}` carries credentials: a secret is never written in the config; \
                         remove them and use `username` and `password = {{ env = \"VARIABLE\" }}` \
                         (api v1) or `token = {{ env = \"VARIABLE\" }}` (v2)",
                        without_credentials(url)
                    ),
                );
            }
            Ok(url) if matches!(url.scheme(), "http" | "https") => {}
            _ => {
                let span = at(self, "url");
                self.push(
                    span,
                    format!("url `{}` is not an http:// or https:// URL", output.url),
                );
            }
        }
        let required: &[(&str, bool)] = match output.api {
            InfluxApi::V2 => &[
                ("bucket", output.bucket.is_some()),
                ("org", output.org.is_some()),
            ],
            InfluxApi::V1 => &[("database", output.database.is_some())],
        };
        for (name, present) in required {
            if !present {
                let span = at(self, "api");
                let api = if output.api == InfluxApi::V2 {
                    "v2"
                } else {
                    "v1"
                };
                self.push(
                    span,
                    format!("[[influx]] with api = \"{api}\" needs `{name}`"),
                );
            }
        }
        for (name, secret) in [("token", &output.token), ("password", &output.password)] {
            if let Some(Err(e)) = (secret.as_ref())
                .filter(|_| self.resolves(crate::config::SecretOf::Output))
                .map(|s| s.resolve())
            {
                let span = at(self, name);
                self.push(span, format!("{name}: {e}"));
            }
        }
        if output.batch_lines == 0 {
            let span = at(self, "batch_lines");
            self.push(span, "batch_lines must be at least 1".to_string());
        }
        if output.batch_bytes < 1024 {
            let span = at(self, "batch_bytes");
            self.push(
                span,
                format!(
                    "batch_bytes = {} is too small: at least 1024 (a line longer than the bound \
                     goes alone in its request, so a small bound only makes many requests)",
                    output.batch_bytes
                ),
            );
        }
        if output.retry_max.is_zero() {
            let span = at(self, "retry_max");
            self.push(
                span,
                "retry_max must be longer than zero: it bounds the wait between retries"
                    .to_string(),
            );
        }
        if output.timeout.is_zero() {
            let span = at(self, "timeout");
            self.push(span, "timeout must be longer than zero".to_string());
        }
        if output.dead_letter_max_bytes < MIN_DEAD_LETTER_BYTES {
            let span = at(self, "dead_letter_max_bytes");
            self.push(
                span,
                format!(
                    "dead_letter_max_bytes must be at least {MIN_DEAD_LETTER_BYTES}: it keeps the rejected lines for a person to read"
                ),
            );
        }
    }

    pub(crate) fn spool(&mut self, root: &Spanned<DeTable<'_>>, spool: &Spool) {
        let at = |s: &Self, k: &str| s.span_of(root, &[key("spool"), key(k)]);
        if spool.max_bytes == 0 {
            let span = at(self, "max_bytes");
            self.push(
                span,
                "max_bytes must be more than 0: it is how much the spool keeps while the store is unreachable"
                    .to_string(),
            );
        }
        if spool.sync_interval.is_zero() {
            let span = at(self, "sync_interval");
            self.push(
                span,
                "sync_interval must be longer than zero (write sync = \"full\" to sync every append)"
                    .to_string(),
            );
        }
    }
}

/// The name the n-th output of a type gets when it has none.
pub fn default_output_name(kind: &str, n: usize) -> String {
    if n == 0 {
        kind.to_string()
    } else {
        format!("{kind}{}", n + 1)
    }
}

/// The URL as a diagnostic may show it: user and password replaced by `***`.
fn without_credentials(mut url: reqwest::Url) -> String {
    let _ = url.set_username("***");
    let _ = url.set_password(None);
    url.to_string()
}

impl Section for Spool {}
impl Section for InfluxOutput {}
impl Section for FileOutput {}
impl Section for Uplink {
    fn keys(path: &[&str]) -> &'static [&'static str] {
        match path {
            [] => crate::config::composite::fields::<Uplink>(),
            ["tls"] => struct_fields::<MqttTls>(),
            _ => &[],
        }
    }

    fn read(
        checker: &mut Checker<'_>,
        value: &Spanned<DeValue<'_>>,
        path: Vec<Seg>,
    ) -> Option<Self> {
        checker.composite(value, path)
    }
}

/// `[spool]`'s row in the section table.
pub(crate) fn check_spool(
    checker: &mut Checker<'_>,
    root: &Spanned<DeTable<'_>>,
    spool: &mut Spool,
    _: &References<'_>,
) {
    checker.spool(root, spool);
}

/// `[[influx]]`'s row.
pub(crate) fn check_influx(
    checker: &mut Checker<'_>,
    root: &Spanned<DeTable<'_>>,
    at: &[usize],
    outputs: &mut [InfluxOutput],
    _: &References<'_>,
) {
    influx_outputs(checker, root, at.iter().copied().zip(outputs.iter()));
}

/// `[[file]]`'s row.
pub(crate) fn check_files(
    checker: &mut Checker<'_>,
    root: &Spanned<DeTable<'_>>,
    at: &[usize],
    outputs: &mut [FileOutput],
    _: &References<'_>,
) {
    file_outputs(checker, root, at.iter().copied().zip(outputs.iter()));
}

/// Checks `[[influx]]` outputs (document index, output), here and in `county ingest`'s file.
/// Every output has a cursor in the spool under its name, so names are unique across kinds:
/// `[[influx]]` claims first, then `[[file]]`, then `[uplink]`.
pub(crate) fn influx_outputs<'a>(
    checker: &mut Checker<'_>,
    root: &Spanned<DeTable<'_>>,
    outputs: impl IntoIterator<Item = (usize, &'a InfluxOutput)>,
) {
    for (n, (i, output)) in outputs.into_iter().enumerate() {
        let base = vec![key("influx"), Seg::Index(i)];
        let name = output
            .name
            .clone()
            .unwrap_or_else(|| default_output_name("influx", n));
        if !checker.claim("output", &name) {
            let at = checker.span_of(root, &join(&base, &[key("name")]));
            checker.push(at, format!("output name `{name}` is used twice"));
        }
        checker.influx(root, &base, output);
    }
}

/// Checks `[[file]]` outputs (document index, output): their names.
pub(crate) fn file_outputs<'a>(
    checker: &mut Checker<'_>,
    root: &Spanned<DeTable<'_>>,
    outputs: impl IntoIterator<Item = (usize, &'a FileOutput)>,
) {
    for (n, (i, output)) in outputs.into_iter().enumerate() {
        let name = output
            .name
            .clone()
            .unwrap_or_else(|| default_output_name("file", n));
        if !checker.claim("output", &name) {
            let at = checker.span_of(root, &[key("file"), Seg::Index(i), key("name")]);
            checker.push(at, format!("output name `{name}` is used twice"));
        }
    }
}

/// `[uplink]`'s row.
pub(crate) fn check_uplink(
    checker: &mut Checker<'_>,
    root: &Spanned<DeTable<'_>>,
    uplink: &mut Uplink,
    _: &References<'_>,
) {
    if !checker.claim("output", UPLINK_OUTPUT) {
        let at = checker.span_of(root, &[key("uplink")]);
        checker.push(
            at,
            format!("output name `{UPLINK_OUTPUT}` is the uplink's: rename the other output"),
        );
    }
    uplink.check(checker, root);
}
