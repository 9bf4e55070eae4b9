//! `shopfloor county ingest`: the county's side of the uplink. Subscribes to every enterprise's
//! `fleet` and `green` messages on the county's MQTT broker and writes them into the county's
//! store through the same disk spool and writers as the agent.
//!
//! ```text
//! county broker ──> subscriber task ──(lines + message)──> spool task ──> spool.db ──> writers ──> store
//!        ^                 │                                   │
//!        └──── PUBACK ─────┘<──────────── committed ───────────┘
//! ```
//!
//! ## Delivery
//!
//! The session is persistent (clean start off, a session expiry of seven days), the
//! subscription QoS 1 (made again on every connection: Mosquitto 2.0 forgets shared
//! subscriptions in a restart, though it keeps the session) and acknowledgements manual: a
//! message is acknowledged to the broker only once its lines are committed to the spool, and
//! only on the connection it came on, so neither a broker restart, nor an ingest restart, nor a
//! store outage loses one. A message whose lines could not be committed (a full disk) is not
//! acknowledged; the ingest reconnects after a back-off and the broker sends it again.
//! Delivery is at least once and a point written twice is kept once by the store.
//!
//! ## Scaling out
//!
//! With `share_group` set (the default) the subscription is shared
//! (`$share/<group>/<prefix>/<county>/+/+/+`): every instance with the same group and its own
//! `client_id` gets a share of the messages, so the county adds instances, not code. The broker
//! cluster and the store are what the county scales.
//!
//! ## What is refused
//!
//! The broker's ACL (`deploy/county/mosquitto.acl`) lets each enterprise publish only under its
//! own topic. The ingest checks it again, line by line, so a misconfigured broker cannot let one
//! enterprise write another's figures: the topic must be `<prefix>/<county>/<sector>/<enterprise>/<measurement>`
//! with a known sector and one of the `measurements`, and every line must be that measurement,
//! carry the topic's `county`, `sector` and `enterprise` tags and a timestamp. Anything else is
//! counted (`shopfloor_ingest_rejected_lines_total{reason}`), logged and dropped; the message
//! is still acknowledged, since sending it again would not make it right.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Filter, Packet, Publish};
use rumqttc::v5::{AsyncClient, Event};
use serde::Deserialize;
use tokio::sync::mpsc;
use toml::Spanned;
use toml::de::DeTable;
use tracing::{debug, error, info, warn};

pub use crate::common::mqtt::RECEIVE_MAXIMUM;
use crate::common::mqtt::{
    Backoff, MqttConnection, MqttError, MqttTls, SESSION_EXPIRY_S, topic_level_problem,
};
use crate::config::{self, Checker, Diagnostics, Seg, key};
use crate::line_protocol::contract::{TAG_COUNTY, TAG_ENTERPRISE, TAG_SECTOR};
use crate::line_protocol::parse::parse_key;
use crate::metrics::Metrics;
use crate::model::Sector;
use crate::queue::{self, WhenFull};
use crate::shutdown::Shutdown;
use crate::sink::config::{FileOutput, InfluxOutput};
use crate::sink::{self, Chunk};

// MQTT 5: RECEIVE_MAXIMUM, the unacknowledged messages the broker may have in flight to one
// ingest instance. The spool task's queue is sized to hold them all; should it be full all the
// same (Mosquitto 2.0 was seen to send more when it resumes a session with a backlog), the
// subscriber stops reading until there is room. SESSION_EXPIRY_S: how long the broker keeps an
// ingest's session (and queues its share of the messages) while it is away.
const _: () = assert!(queue::INGEST_MESSAGES.capacity == RECEIVE_MAXIMUM as usize);
/// Rejected lines are logged at most this often (each time with the count since the last).
const REJECT_LOG_EVERY: Duration = Duration::from_secs(10);

/// The ingest's config file (`config/county-ingest.toml`).
#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub ingest: Ingest,
    pub broker: Broker,
    pub spool: crate::sink::config::Spool,
    pub influx: Vec<InfluxOutput>,
    pub file: Vec<FileOutput>,
}

/// `[ingest]`: what is read, and where the ingest keeps its spool.
#[derive(Debug, Clone, Deserialize)]
pub struct Ingest {
    /// The county whose enterprises' messages are read (the agents' `[site] county`).
    pub county: String,
    /// The first topic level, as the agents' `[uplink] topic_prefix`. Default `"shopfloor"`.
    #[serde(default = "sink::uplink::default_topic_prefix")]
    pub topic_prefix: String,
    /// Instances with the same group share the messages; `""` subscribes without sharing.
    /// Default `"county-ingest"`.
    #[serde(default = "default_share_group")]
    pub share_group: String,
    /// The measurements accepted. Default `["fleet", "green"]`.
    #[serde(default = "sink::uplink::default_uplink_measurements")]
    pub measurements: Vec<String>,
    /// Where the spool and dead-letter files go. Default `/var/lib/shopfloor-ingest`.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Serve `/metrics` (Prometheus) and `/healthz` here, e.g. `"127.0.0.1:9108"`.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// The programme's targets for `shopfloor county report` and `check` run with
    /// `--ingest-config` (relative to this file's directory).
    #[serde(default)]
    pub targets: Option<PathBuf>,
    /// The register of enterprises, likewise.
    #[serde(default)]
    pub enterprises: Option<PathBuf>,
}

fn default_share_group() -> String {
    "county-ingest".to_string()
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/shopfloor-ingest")
}

/// `[broker]`: the county's MQTT broker (MQTT 5): an MQTT connection and nothing else (see
/// [`crate::common::mqtt`]). `client_id` is required here, fixed and unique per instance: the
/// broker keeps the instance's session under it. `max_packet_size`: larger messages are refused
/// by the client, default [`DEFAULT_MAX_PACKET_SIZE`].
pub type Broker = MqttConnection;

/// `[broker] max_packet_size` when the file gives none: 1 MiB (an uplink message holds at most
/// 500 lines, a few tens of kilobytes).
pub const DEFAULT_MAX_PACKET_SIZE: u32 = 1 << 20;

const SECTIONS: &[&str] = &["ingest", "broker", "spool", "influx", "file"];

fn known_keys(path: &[Seg]) -> &'static [&'static str] {
    match config::key_names(path).as_slice() {
        [] => SECTIONS,
        ["ingest"] => config::struct_fields::<Ingest>(),
        ["broker"] => config::struct_fields::<MqttConnection>(),
        ["broker", "tls"] => config::struct_fields::<MqttTls>(),
        ["spool"] => config::struct_fields::<crate::sink::config::Spool>(),
        ["influx"] => config::struct_fields::<InfluxOutput>(),
        ["file"] => config::struct_fields::<FileOutput>(),
        _ => &[],
    }
}

impl IngestConfig {
    /// Reads and checks the file, reporting every problem with its line and column.
    pub fn load(path: &Path) -> Result<IngestConfig, Diagnostics> {
        config::load_file(path, IngestConfig::load_str)
    }

    pub fn load_str(text: &str, file: &str) -> Result<IngestConfig, Diagnostics> {
        config::check_document(text, file, known_keys, check)
    }

    /// The subscription: `[$share/<group>/]<prefix>/<county>/+/+/+` (sector, enterprise,
    /// measurement).
    pub fn filter(&self) -> String {
        let i = &self.ingest;
        let topics = format!("{}/{}/+/+/+", i.topic_prefix, i.county);
        if i.share_group.is_empty() {
            topics
        } else {
            format!("$share/{}/{topics}", i.share_group)
        }
    }
}

fn check(checker: &mut Checker<'_>, root: &Spanned<DeTable<'_>>) -> Option<IngestConfig> {
    let mut ingest = None;
    let mut broker = None;
    let mut spool = None;
    let mut influx = Vec::new();
    let mut file = Vec::new();
    for (name, value) in root.get_ref().iter() {
        let name_str: &str = name.get_ref();
        match name_str {
            "ingest" => ingest = checker.section::<Ingest>(value, vec![key("ingest")]),
            "broker" => broker = checker.section::<Broker>(value, vec![key("broker")]),
            "spool" => {
                spool = checker.section::<crate::sink::config::Spool>(value, vec![key("spool")])
            }
            "influx" => influx = checker.array::<InfluxOutput>(value, "influx"),
            "file" => file = checker.array::<FileOutput>(value, "file"),
            other => checker.unknown_section(name.span(), other, SECTIONS),
        }
    }
    let missing = |checker: &mut Checker<'_>, what: &str| {
        checker.push(
            0..0,
            format!("missing [{what}]: see config/county-ingest.toml for an example"),
        );
    };
    if ingest.is_none() && root.get_ref().get("ingest").is_none() {
        missing(checker, "ingest");
    }
    if broker.is_none() && root.get_ref().get("broker").is_none() {
        missing(checker, "broker");
    }
    if influx.is_empty() && file.is_empty() {
        checker.push(
            0..0,
            "no [[influx]] or [[file]] output: the ingest would have nowhere to write".into(),
        );
    }
    if let Some(i) = &ingest {
        let at = |c: &Checker<'_>, k: &str| c.span_of(root, &[key("ingest"), key(k)]);
        for (k, text) in [("county", &i.county), ("topic_prefix", &i.topic_prefix)] {
            if let Some(problem) = topic_level_problem(text) {
                let span = at(checker, k);
                checker.push(span, format!("{k}: {problem}"));
            }
        }
        if i.county.contains('/') {
            let span = at(checker, "county");
            checker.push(
                span,
                "county is one topic level, the agents' [site] county: no `/`".into(),
            );
        }
        if i.share_group.contains(['/', '+', '#']) {
            let span = at(checker, "share_group");
            checker.push(
                span,
                "share_group is one topic level: no `/`, `+` or `#`".into(),
            );
        }
        if i.measurements.is_empty() {
            let span = at(checker, "measurements");
            checker.push(
                span,
                "measurements is empty: nothing would be accepted".into(),
            );
        }
    }
    let mut no_client_id = false;
    if let Some(b) = &broker {
        b.check(
            checker,
            root,
            &[key("broker")],
            "[broker]",
            crate::config::SecretOf::Source,
        );
        match &b.client_id {
            Some(id) if id.is_empty() => {
                let span = checker.span_of(root, &[key("broker"), key("client_id")]);
                checker.push(
                    span,
                    "client_id must not be empty: each instance needs its own".into(),
                );
            }
            Some(_) => {}
            None => {
                // As serde said it when `client_id` was a required field of [broker].
                let span = checker.span_of(root, &[key("broker")]);
                checker.push(span, "in [broker]: missing field `client_id`".into());
                no_client_id = true;
            }
        }
    }
    if no_client_id {
        broker = None;
    }
    sink::config::influx_outputs(checker, root, influx.iter().map(|(i, o)| (*i, o)));
    sink::config::file_outputs(checker, root, file.iter().map(|(i, o)| (*i, o)));
    if let Some(s) = &spool {
        checker.spool(root, s);
    }
    Some(IngestConfig {
        ingest: ingest?,
        broker: broker?,
        spool: spool.unwrap_or_default(),
        influx: influx.into_iter().map(|(_, o)| o).collect(),
        file: file.into_iter().map(|(_, o)| o).collect(),
    })
}

/// Why a line (or a whole message) is not written to the county's store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reject {
    /// The topic is not `<prefix>/<county>/<sector>/<enterprise>/<measurement>` with a known
    /// sector and an accepted measurement.
    Topic,
    /// The payload is not UTF-8 text.
    Encoding,
    /// Not a line-protocol line with a timestamp.
    Syntax,
    /// The line is another measurement than its topic's.
    Measurement,
    /// The line's `county`, `sector` or `enterprise` tag is missing or differs from its topic.
    Origin,
}

impl Reject {
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::Topic => "topic",
            Reject::Encoding => "encoding",
            Reject::Syntax => "syntax",
            Reject::Measurement => "measurement",
            Reject::Origin => "origin",
        }
    }
}

/// Where a message says it comes from: its topic's levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin<'a> {
    pub county: &'a str,
    pub sector: &'a str,
    pub enterprise: &'a str,
    pub measurement: &'a str,
}

/// Reads the origin off a topic, or says why the topic is not one the ingest takes.
pub fn origin<'a>(topic: &'a str, ingest: &'a Ingest) -> Result<Origin<'a>, Reject> {
    let rest = topic
        .strip_prefix(ingest.topic_prefix.as_str())
        .and_then(|r| r.strip_prefix('/'))
        .ok_or(Reject::Topic)?;
    let levels: Vec<&str> = rest.split('/').collect();
    let [county, sector, enterprise, measurement] = levels[..] else {
        return Err(Reject::Topic);
    };
    if county != ingest.county
        || Sector::parse(sector).is_none()
        || enterprise.is_empty()
        || !ingest.measurements.iter().any(|m| m == measurement)
    {
        return Err(Reject::Topic);
    }
    Ok(Origin {
        county,
        sector,
        enterprise,
        measurement,
    })
}

/// The lines of a message that may go to the county's store, and the count of the others by
/// reason.
pub fn accept(payload: &[u8], origin: &Origin<'_>, out: &mut Vec<String>) -> BTreeMap<Reject, u64> {
    let mut rejected = BTreeMap::new();
    let Ok(text) = std::str::from_utf8(payload) else {
        let lines = payload
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count();
        rejected.insert(Reject::Encoding, lines.max(1) as u64);
        return rejected;
    };
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let verdict = match parse_key(line) {
            None => Err(Reject::Syntax),
            Some(k) if k.measurement != origin.measurement => Err(Reject::Measurement),
            Some(k) => {
                if k.tag(TAG_COUNTY) == Some(origin.county)
                    && k.tag(TAG_SECTOR) == Some(origin.sector)
                    && k.tag(TAG_ENTERPRISE) == Some(origin.enterprise)
                {
                    Ok(())
                } else {
                    Err(Reject::Origin)
                }
            }
        };
        match verdict {
            Ok(()) => out.push(line.to_string()),
            Err(reason) => *rejected.entry(reason).or_insert(0) += 1,
        }
    }
    rejected
}

/// A message's accepted lines on their way to the spool, with what acknowledges the message
/// once they are committed.
struct Accepted {
    lines: Vec<String>,
    message: Publish,
    /// The connection the message came on (see `Subscriber::run`).
    connection: u64,
    committed: mpsc::UnboundedSender<Committed>,
}

/// What the spool task says of a message: its connection, lines, and whether they are on disk.
type Committed = (Publish, u64, usize, bool);

impl AsRef<[String]> for Accepted {
    fn as_ref(&self) -> &[String] {
        &self.lines
    }
}

impl Chunk for Accepted {
    const QUEUE: queue::Queue = queue::INGEST_MESSAGES;

    fn appended(self, committed: bool) {
        // Gone only when the subscriber has stopped: the broker then sends the message again.
        let lines = self.lines.len();
        let _ = self
            .committed
            .send((self.message, self.connection, lines, committed));
    }
}

/// Why the ingest could not start.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The data directory, the spool or an output.
    #[error(transparent)]
    Sink(#[from] sink::StartError),
    #[error(transparent)]
    Mqtt(#[from] MqttError),
    #[error("cannot serve /metrics on {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running ingest.
#[derive(Debug)]
pub struct Running {
    pub metrics: Metrics,
    /// Where `/metrics` is served, when it is.
    pub metrics_addr: Option<SocketAddr>,
    tasks: sink::Tasks,
}

impl Running {
    /// Waits until every task has stopped after shutdown was triggered.
    pub async fn finished(self) {
        self.tasks.stopped().await;
    }
}

/// Starts the subscriber, the spool task and the writers. They run until `shutdown` fires.
pub async fn start(config: &IngestConfig, shutdown: Shutdown) -> Result<Running, IngestError> {
    let data_dir = config.ingest.data_dir.clone();
    sink::create_data_dir(&data_dir)?;
    let listener = match config.ingest.metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| IngestError::Metrics { addr, source })?,
        ),
        None => None,
    };
    let metrics = Metrics::new();
    let b = &config.broker;
    let client_id = b.client_id.as_deref().unwrap_or_default();
    let mut options = b.options_v5("[broker]", client_id)?;
    options
        .set_clean_start(false)
        .set_session_expiry_interval(Some(SESSION_EXPIRY_S))
        .set_manual_acks(true)
        .set_receive_maximum(Some(RECEIVE_MAXIMUM))
        .set_max_packet_size(Some(b.max_packet_size.unwrap_or(DEFAULT_MAX_PACKET_SIZE)));

    let outputs = sink::stores(&config.influx, &config.file, &data_dir)?;
    // Its queue has room for every message the broker may have in flight to us (see
    // RECEIVE_MAXIMUM and `Accepted`).
    let mut stage = sink::start(&config.spool, &data_dir, outputs, &metrics, &shutdown)?;
    let subscriber = Subscriber {
        client_options: options,
        filter: config.filter(),
        ingest: config.ingest.clone(),
        backoff: b.backoff(),
        address: b.address.clone(),
    };
    let tasks = &mut stage.tasks;
    tasks.spawn(subscriber.run(stage.records, metrics.clone(), shutdown.clone()));
    let metrics_addr = match listener {
        Some(listener) => {
            let addr = listener.local_addr().ok();
            tasks.spawn(serve_metrics(listener, metrics.clone(), shutdown));
            addr
        }
        None => None,
    };
    info!(
        filter = %config.filter(),
        broker = %b.address,
        outputs = stage.outputs,
        spool = %stage.spool_path.display(),
        metrics = ?metrics_addr,
        "county ingest started"
    );
    Ok(Running {
        metrics,
        metrics_addr,
        tasks: stage.tasks,
    })
}

/// `/metrics` and `/healthz` for the county's monitoring.
async fn serve_metrics(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    mut shutdown: Shutdown,
) {
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        metrics.render_prometheus(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }));
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await;
    if let Err(e) = served {
        error!(error = %e, "the /metrics server stopped");
    }
}

/// The subscription's settings.
struct Subscriber {
    client_options: rumqttc::v5::MqttOptions,
    filter: String,
    ingest: Ingest,
    backoff: Backoff,
    address: String,
}

/// The subscriber's counters.
struct Counters {
    messages: Arc<AtomicU64>,
    lines: Arc<AtomicU64>,
    connected: Arc<AtomicU64>,
    rejected: BTreeMap<Reject, Arc<AtomicU64>>,
    not_committed: Arc<AtomicU64>,
}

impl Counters {
    fn new(metrics: &Metrics) -> Self {
        let help = "Lines not written to the county's store, by reason: topic, encoding, syntax, \
                    measurement, origin (tags that differ from the topic).";
        Counters {
            messages: metrics.counter(
                "shopfloor_ingest_messages_total",
                "Messages received from the county's broker.",
                &[],
            ),
            lines: metrics.counter(
                "shopfloor_ingest_lines_total",
                "Lines committed to the ingest's spool and acknowledged to the broker.",
                &[],
            ),
            connected: metrics.gauge(
                "shopfloor_ingest_connected",
                "1 while the ingest is connected to the county's broker, 0 while it is not.",
                &[],
            ),
            rejected: [
                Reject::Topic,
                Reject::Encoding,
                Reject::Syntax,
                Reject::Measurement,
                Reject::Origin,
            ]
            .into_iter()
            .map(|r| {
                let c = metrics.counter(
                    "shopfloor_ingest_rejected_lines_total",
                    help,
                    &[("reason", r.as_str())],
                );
                (r, c)
            })
            .collect(),
            not_committed: metrics.counter(
                "shopfloor_ingest_uncommitted_messages_total",
                "Messages whose lines could not be committed to the spool (the broker sends them again).",
                &[],
            ),
        }
    }
}

impl Subscriber {
    async fn run(self, chunks: flume::Sender<Accepted>, metrics: Metrics, mut shutdown: Shutdown) {
        let span = tracing::info_span!("ingest", broker = %self.address);
        let counters = Counters::new(&metrics);
        // Unbounded, because an acknowledgement must never be lost (the broker would hold the
        // message in flight for good); what waits in it is bounded by the spool queue and the
        // append group in progress, since the subscriber stops reading when the queue is full.
        let (committed_tx, mut committed_rx) = mpsc::unbounded_channel();
        let (client, mut events) =
            AsyncClient::new(self.client_options, queue::INGEST_REQUESTS.capacity);
        const _: () = queue::INGEST_REQUESTS.sent_as(WhenFull::DropNewest);
        let mut backoff = self.backoff.clone();
        let mut up: Option<bool> = None;
        let mut rejected_since_log: BTreeMap<Reject, u64> = BTreeMap::new();
        let mut last_reject_log: Option<Instant> = None;
        // Set when the spool failed a commit: the connection is being dropped so that the broker
        // sends the unacknowledged messages again.
        let reconnect = std::sync::atomic::AtomicBool::new(false);
        // Counts the connections: an acknowledgement is only good on the connection its message
        // came on (a packet id of an old one may be another message's on the new one), and the
        // broker sends the old connection's unacknowledged messages again anyway.
        let connection = AtomicU64::new(0);
        // Acknowledges a message whose lines are on disk, or has it sent again.
        let on_committed = |(message, on, lines, ok): Committed| {
            if on != connection.load(Ordering::Relaxed) {
                return;
            }
            if ok {
                counters.lines.fetch_add(lines as u64, Ordering::Relaxed);
                let _ = client.try_ack(&message);
            } else {
                counters.not_committed.fetch_add(1, Ordering::Relaxed);
                if !reconnect.swap(true, Ordering::Relaxed) {
                    error!(parent: &span, topic = %String::from_utf8_lossy(&message.topic), "lines not committed to the spool (see the spool's error): the message stays with the broker, reconnecting to have it sent again");
                    let _ = client.try_disconnect();
                }
            }
        };
        'run: loop {
            let polled = tokio::select! {
                p = events.poll() => p,
                done = committed_rx.recv() => {
                    let Some(done) = done else { break };
                    on_committed(done);
                    continue;
                }
                _ = shutdown.wait() => break,
            };
            match polled {
                Ok(Event::Incoming(Packet::ConnAck(c))) => {
                    backoff.reset();
                    connection.fetch_add(1, Ordering::Relaxed);
                    reconnect.store(false, Ordering::Relaxed);
                    counters.connected.store(1, Ordering::Relaxed);
                    if up != Some(true) {
                        info!(parent: &span, session_present = c.session_present, "connected to the county's broker");
                        up = Some(true);
                    }
                    // Subscribed on every connection, even when the broker kept the session:
                    // Mosquitto 2.0 restores a persistent session after a restart but not its
                    // shared subscriptions. Subscribing again to the same filter only replaces
                    // the subscription; the session's queued messages stay.
                    let filter = Filter::new(self.filter.clone(), QoS::AtLeastOnce);
                    if client.try_subscribe_many([filter]).is_err() {
                        warn!(parent: &span, "subscription not queued; retrying on the next connection");
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(s))) => {
                    use rumqttc::v5::mqttbytes::v5::SubscribeReasonCode;
                    if s.return_codes
                        .iter()
                        .any(|c| !matches!(c, SubscribeReasonCode::Success(_)))
                    {
                        error!(parent: &span, filter = %self.filter, codes = ?s.return_codes, "the broker refused the subscription: check the ingest account's ACL (it reads <prefix>/#)");
                    } else {
                        info!(parent: &span, filter = %self.filter, "subscribed");
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    counters.messages.fetch_add(1, Ordering::Relaxed);
                    let mut lines = Vec::new();
                    let topic = String::from_utf8_lossy(&p.topic).into_owned();
                    let rejected = match origin(&topic, &self.ingest) {
                        Ok(o) => accept(&p.payload, &o, &mut lines),
                        Err(reason) => {
                            let n = p
                                .payload
                                .split(|b| *b == b'\n')
                                .filter(|l| !l.is_empty())
                                .count();
                            BTreeMap::from([(reason, n.max(1) as u64)])
                        }
                    };
                    for (reason, n) in &rejected {
                        if let Some(c) = counters.rejected.get(reason) {
                            c.fetch_add(*n, Ordering::Relaxed);
                        }
                        *rejected_since_log.entry(*reason).or_insert(0) += n;
                    }
                    if !rejected_since_log.is_empty()
                        && last_reject_log.is_none_or(|t| t.elapsed() >= REJECT_LOG_EVERY)
                    {
                        let counts: Vec<String> = rejected_since_log
                            .iter()
                            .map(|(r, n)| format!("{} {n}", r.as_str()))
                            .collect();
                        warn!(parent: &span, %topic, rejected = %counts.join(", "), "lines refused: not this county's, or not from the enterprise their topic names (counted in shopfloor_ingest_rejected_lines_total)");
                        rejected_since_log.clear();
                        last_reject_log = Some(Instant::now());
                    }
                    if lines.is_empty() {
                        // Nothing to keep; acknowledging is all there is to do.
                        let _ = client.try_ack(&p);
                        continue;
                    }
                    let mut chunk = Accepted {
                        lines,
                        message: p,
                        connection: connection.load(Ordering::Relaxed),
                        committed: committed_tx.clone(),
                    };
                    // A full queue means the spool is behind: wait for room without reading
                    // from the broker, so TCP holds it back and it keeps the messages, and
                    // acknowledge what gets committed meanwhile.
                    const _: () = queue::INGEST_MESSAGES.sent_as(WhenFull::Block);
                    loop {
                        match chunks.try_send(chunk) {
                            Ok(()) => break,
                            Err(flume::TrySendError::Full(back)) => chunk = back,
                            Err(flume::TrySendError::Disconnected(_)) => break 'run,
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                            _ = shutdown.wait() => break 'run,
                        }
                        while let Ok(done) = committed_rx.try_recv() {
                            on_committed(done);
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    counters.connected.store(0, Ordering::Relaxed);
                    let reason = match e {
                        rumqttc::v5::ConnectionError::ConnectionRefused(code) => format!(
                            "the county's broker refused the connection ({code:?}): check username, password and client_id"
                        ),
                        other => other.to_string(),
                    };
                    let wait = backoff.next_wait();
                    if up != Some(false) && !reconnect.load(Ordering::Relaxed) {
                        warn!(parent: &span, %reason, retry_in = ?wait, "county broker connection lost");
                    } else {
                        debug!(parent: &span, %reason, retry_in = ?wait, "county broker still unreachable");
                    }
                    up = Some(false);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.wait() => break,
                    }
                }
            }
        }
        counters.connected.store(0, Ordering::Relaxed);
        // Lines already handed to the spool task are committed before it stops; a clean
        // DISCONNECT keeps the session, so what is unacknowledged comes again next time.
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            while events.poll().await.is_ok() {}
        })
        .await;
        debug!(parent: &span, "stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ingest() -> Ingest {
        Ingest {
            county: "wuyi".into(),
            topic_prefix: "shopfloor".into(),
            share_group: "g".into(),
            measurements: vec!["fleet".into(), "green".into()],
            data_dir: PathBuf::from("/tmp"),
            metrics_listen: None,
            targets: None,
            enterprises: None,
        }
    }

    #[test]
    fn a_topic_names_county_sector_enterprise_and_measurement() {
        let i = ingest();
        assert_eq!(
            origin("shopfloor/wuyi/doors/e01/fleet", &i),
            Ok(Origin {
                county: "wuyi",
                sector: "doors",
                enterprise: "e01",
                measurement: "fleet"
            })
        );
        for bad in [
            "shopfloor/other/doors/e01/fleet",
            "shopfloor/wuyi/boats/e01/fleet",
            "shopfloor/wuyi/doors/e01/signal",
            "shopfloor/wuyi/doors/e01/fleet/extra",
            "shopfloor/wuyi/doors//fleet",
            "elsewhere/wuyi/doors/e01/fleet",
        ] {
            assert_eq!(origin(bad, &i), Err(Reject::Topic), "{bad}");
        }
    }

    #[test]
    fn only_lines_of_the_topics_enterprise_and_measurement_are_accepted() {
        let i = ingest();
        let o = origin("shopfloor/wuyi/doors/e01/fleet", &i).unwrap();
        let payload = "fleet,county=wuyi,sector=doors,enterprise=e01,window=1d machines_total=10i 1700000000000000000\n\
                       fleet,county=wuyi,sector=doors,enterprise=e02,window=1d machines_total=10i 1700000000000000000\n\
                       green,county=wuyi,sector=doors,enterprise=e01,window=1d energy_tce=1 1700000000000000000\n\
                       fleet,county=wuyi,sector=doors,window=1d machines_total=1i 1700000000000000000\n\
                       fleet,county=wuyi,sector=doors,enterprise=e01 machines_total=10i\n\
                       not line protocol\n";
        let mut out = Vec::new();
        let rejected = accept(payload.as_bytes(), &o, &mut out);
        assert_eq!(out.len(), 1);
        assert!(out[0].contains("enterprise=e01,window=1d"));
        assert_eq!(rejected.get(&Reject::Origin), Some(&2));
        assert_eq!(rejected.get(&Reject::Measurement), Some(&1));
        assert_eq!(rejected.get(&Reject::Syntax), Some(&2));
        let mut out = Vec::new();
        let rejected = accept(b"fleet\xff\xfe x=1 1\n", &o, &mut out);
        assert!(out.is_empty());
        assert_eq!(rejected.get(&Reject::Encoding), Some(&1));
    }

    #[test]
    fn a_config_with_mistakes_reports_each_with_its_line() {
        let text = "[ingest]\ncounty = \"a/b\"\nshare_grop = \"x\"\n[broker]\naddress = \"nohost\"\nclient_id = \"\"\n";
        let err = IngestConfig::load_str(text, "ingest.toml").unwrap_err();
        let shown = err.to_string();
        assert!(shown.contains("ingest.toml:2:"), "{shown}");
        assert!(shown.contains("share_group"), "{shown}");
        assert!(
            shown.contains("`nohost` has no port: write `nohost:1883`"),
            "{shown}"
        );
        assert!(shown.contains("client_id must not be empty"), "{shown}");
        assert!(shown.contains("nowhere to write"), "{shown}");
    }
}
