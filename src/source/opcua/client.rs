//! The task that owns one `[[opcua]]` server's session: connects, subscribes and polls, turns
//! what arrives into [`SourceEvent`]s, and starts afresh after any loss.
//!
//! # Life of a connection
//!
//! 1. `GetEndpoints`, then a secure channel and a session on the endpoint that matches the
//!    configured policy and mode, with the configured identity. The server's certificate must
//!    be in `<pki_dir>/trusted/`; an untrusted one is stored in `<pki_dir>/rejected/` and the
//!    server is reported down with that advice.
//! 2. One Read of the server's `NamespaceArray` (i=2255, to resolve `nsu=` node ids) and of
//!    `MaxNodesPerRead` (i=11705, to size polled reads when the config does not).
//! 3. Every subscribed group becomes one or more subscriptions of at most
//!    `max_items_per_subscription` monitored items; when the server answers
//!    `BadTooManyMonitoredItems` for some items of a subscription, they go to a new one. A node
//!    the server does not know is logged and counted; the others go on. The subscriptions are
//!    the source's own ([`super::subscription`]: the stack keeps no per-item state), made one
//!    after the other while the Publish loop already serves the ones made.
//! 4. Once all are made the server is reported up. Data changes arrive in Publish responses,
//!    each handled before the next Publish goes out (the server queues while the engine is
//!    behind); polled groups are read on their schedules in batches of at most
//!    `MaxNodesPerRead` nodes.
//!
//! Any loss (the transport closes, keep-alives fail, a request fails at the channel level, a
//! subscription ends on the server's side or the server no longer knows it) ends the
//! session: the server is reported down with the reason, and after a back-off (1 s doubling
//! to [`MAX_BACKOFF`]) everything above starts again with a new session and new
//! subscriptions. The library's own reconnection is switched off so that there is one place
//! where a session starts and one where it ends. What changed while the agent was away is
//! not replayed (a new subscription starts from the current values).
//!
//! # No duplicates, no going back
//!
//! A new subscription (or the first read after a reconnection) delivers the current value of
//! every node again, with the timestamp it already had. Each signal remembers the timestamp
//! of the last value it wrote, across sessions, and a value that is not newer is dropped (and
//! counted as `duplicate`): after any recovery the store sees each change once, in order.
//!
//! # Read only
//!
//! The services this task calls are GetEndpoints, OpenSecureChannel, CreateSession,
//! ActivateSession, Read, CreateSubscription, CreateMonitoredItems, Publish, Republish (for a
//! message missing from a subscription's sequence), DeleteSubscriptions and CloseSession.
//! Nothing here writes a value, calls a method or changes the address space;
//! `tests/opcua.rs` records the services the server receives and fails on any other.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use jiff::Timestamp;
use opcua::client::{
    Client, ClientBuilder, ClientEndpoint, IdentityToken, Session, SessionPollResult,
};
use opcua::crypto::{PrivateKey, X509};
use opcua::types::{
    AttributeId, DataChangeFilter, DataChangeNotification, DataChangeTrigger, DataValue,
    DeadbandType, ExtensionObject, MessageSecurityMode, MonitoredItemCreateRequest, MonitoringMode,
    MonitoringParameters, NodeId, NotificationMessage, PublishResponse, ReadValueId,
    StatusChangeNotification, StatusCode, SubscriptionAcknowledgement, TimestampsToReturn, Variant,
};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{Instrument, debug, info, info_span, warn};

use super::config::{
    DEFAULT_MAX_NODES_PER_READ, Deadband, OpcuaServer, Owner, QUALITY_SUFFIX, READ_CAP, ReadMode,
    SecurityMode,
};
use super::node_id::NodeAddress;
use super::subscription::{self, Book, Made, Sequence};
use super::value::{Quality, ValueError, reading};
use crate::metrics::Metrics;
use crate::model::{Sample, SignalType, SourceEvent, Target, Value};
use crate::shutdown::Shutdown;
use crate::source::field_errors::{self, Failed, FieldErrorCounts};

/// The longest wait between attempts to reach a server.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A Publish on its way: the acknowledgements it carries and the server's answer.
type Publishing = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = (
                    Vec<SubscriptionAcknowledgement>,
                    Result<PublishResponse, StatusCode>,
                ),
            > + Send,
    >,
>;

/// A subscription being made: what the server made of it and the requests it answered.
type Making = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Made, String>> + Send>>;

/// One configured node entry: the signal it becomes.
///
/// A server with 100,000 nodes keeps 100,000 of these for as long as it runs, so they are
/// small: the target and signal names are shared (one `Arc` per machine and per distinct
/// signal name, not per node), the `<signal>_quality` name is made at the first Uncertain
/// value, and the config's node tables are not kept beside them.
struct Entry {
    target: Target,
    signal: Arc<str>,
    value_type: SignalType,
    /// The array element it takes, [`WHOLE`] for the whole value (an `Option<u32>` would cost
    /// 8 bytes an entry).
    index: u32,
    /// Timestamp of the last value written, kept across sessions.
    last: Option<Timestamp>,
    errors: FieldErrorCounts,
}

field_errors::field_slot!(Entry);

/// [`Entry::index`] of an entry that takes the whole value. No OPC UA array has an element
/// 4,294,967,295 (their lengths are Int32).
const WHOLE: u32 = u32::MAX;

/// A deadband as a map key: percent or absolute, and the value's bits.
type DeadbandKey = Option<(bool, u64)>;

/// One node the server is asked about, and the entries it feeds: `entries` is a range of
/// [`Task::entries`], which are laid out so that each node's are together. A subscribed node's
/// monitored item has its index in [`Task::nodes`] plus one as client handle.
struct Watched {
    address: NodeAddress,
    entries: std::ops::Range<u32>,
}

struct SubscribedGroup {
    publishing_interval: Duration,
    sampling_interval: Duration,
    queue_size: u32,
    /// A range of [`Task::nodes`].
    nodes: std::ops::Range<u32>,
}

struct PolledGroup {
    poll: Duration,
    /// A range of [`Task::nodes`].
    nodes: std::ops::Range<u32>,
    next: Instant,
}

/// Where the making of a session's subscriptions stands.
#[derive(Default)]
struct Progress {
    /// The subscribed group being made.
    group: usize,
    /// Its next node (an index of [`Task::nodes`]) not yet asked for.
    next: u32,
    /// Its items the server refused as one too many for their subscription: the next
    /// subscription asks for them first.
    refused: Vec<MonitoredItemCreateRequest>,
}

/// What the task counts, as metrics labelled with the server id.
struct Counters {
    bad: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    duplicate: Arc<AtomicU64>,
    skewed: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
    lost: Arc<AtomicU64>,
    unknown_nodes: Arc<AtomicU64>,
    subscriptions: Arc<AtomicU64>,
}

impl Counters {
    fn new(metrics: &Metrics, id: &str) -> Counters {
        let c = |name, help| metrics.counter(name, help, &[("server", id)]);
        Counters {
            bad: c(
                "shopfloor_opcua_bad_values_total",
                "OPC UA values with a Bad status code, counted and not written.",
            ),
            refused: c(
                "shopfloor_opcua_refused_values_total",
                "OPC UA values that do not convert to their signal's type (or array element), not written.",
            ),
            duplicate: c(
                "shopfloor_opcua_duplicate_values_total",
                "OPC UA values not newer than the last one written for their signal, dropped.",
            ),
            skewed: c(
                "shopfloor_opcua_skewed_timestamps_total",
                "OPC UA values whose timestamp was too far from the agent's clock and was replaced.",
            ),
            dropped: c(
                "shopfloor_opcua_changes_dropped_total",
                "OPC UA data changes the server discarded from a monitored item's full queue (values with the Overflow bit).",
            ),
            lost: c(
                "shopfloor_opcua_notifications_lost_total",
                "OPC UA notification messages missing from a subscription's sequence that the server could not send again.",
            ),
            unknown_nodes: c(
                "shopfloor_opcua_node_errors_total",
                "OPC UA nodes the server refused to monitor or read (unknown node, namespace, access).",
            ),
            subscriptions: metrics.gauge(
                "shopfloor_opcua_subscriptions",
                "OPC UA subscriptions of the current session.",
                &[("server", id)],
            ),
        }
    }
}

/// Why a session ended.
enum Ended {
    Shutdown,
    Lost(String),
}

/// Runs one server until shutdown. `pki_dir` is the certificate store when the config names
/// none (the agent passes `<data_dir>/opcua/pki`).
pub fn run(
    server: &OpcuaServer,
    pki_dir: PathBuf,
    events: mpsc::Sender<SourceEvent>,
    metrics: Metrics,
    shutdown: Shutdown,
) -> impl std::future::Future<Output = ()> + Send + use<> {
    let span = info_span!("opcua", server = %server.id);
    Task::new(server, pki_dir, events, &metrics)
        .run(shutdown)
        .instrument(span)
}

struct Task {
    /// The server's settings, its `groups` taken out (they live on as `entries`,
    /// `subscribed` and `polled`).
    server: OpcuaServer,
    /// How often a live session sends `Alive` ([`alive_every`]).
    alive_every: Duration,
    device: Arc<str>,
    pki_dir: PathBuf,
    entries: Vec<Entry>,
    /// Every group's nodes, each group's together.
    nodes: Vec<Watched>,
    /// The deadbands of the nodes that have one, by index of [`Task::nodes`] (few nodes
    /// have one: a field of every node would cost 16 bytes each).
    deadbands: HashMap<u32, Deadband>,
    /// `<signal>_quality` by signal name, made when the first Uncertain value needs it.
    quality_names: HashMap<Arc<str>, Arc<str>>,
    subscribed: Vec<SubscribedGroup>,
    polled: Vec<PolledGroup>,
    events: mpsc::Sender<SourceEvent>,
    counters: Counters,
    /// For the per-field error counters.
    metrics: Metrics,
    /// The machines and meters this server feeds, kept alive while its session lives.
    targets: Vec<Target>,
}

/// How often a live session tells the engine its machines are still heard
/// ([`SourceEvent::Alive`]) at most: an OPC UA server sends a value only when it changes, and a
/// machine whose signals hold still must not be taken for silent after `offline_after` (10 s by
/// default). A server whose groups publish or are polled faster says so as often (not more
/// often than [`ALIVE_FASTEST`]), so that its machines go offline as soon after the server
/// does as a polled device's do: one publishing interval or poll after their last news.
const ALIVE_EVERY: Duration = Duration::from_secs(2);
const ALIVE_FASTEST: Duration = Duration::from_millis(100);

/// The interval of a server's `Alive` events: its fastest group's publishing interval or poll,
/// within [`ALIVE_FASTEST`]..=[`ALIVE_EVERY`].
fn alive_every(server: &OpcuaServer) -> Duration {
    server
        .groups
        .iter()
        .map(|g| match g.mode {
            ReadMode::Subscribe => g.publishing_interval(),
            ReadMode::Poll => g.poll(),
        })
        .min()
        .unwrap_or(ALIVE_EVERY)
        .clamp(ALIVE_FASTEST, ALIVE_EVERY)
}

impl Task {
    /// Builds the task's tables from `config`'s groups, keeping only its other settings.
    fn new(
        config: &OpcuaServer,
        pki_dir: PathBuf,
        events: mpsc::Sender<SourceEvent>,
        metrics: &Metrics,
    ) -> Task {
        let alive_every = alive_every(config);
        let groups = &config.groups;
        let server = config.settings();
        // One `Arc` per machine or meter and per distinct signal name: a hundred machines of
        // a thousand signals each share 1,000 names, not 100,000 copies.
        let mut names: HashSet<Arc<str>> = HashSet::new();
        let mut name = |text: &str| -> Arc<str> {
            if let Some(known) = names.get(text) {
                return known.clone();
            }
            let new: Arc<str> = Arc::from(text);
            names.insert(new.clone());
            new
        };
        // Sized once: grown by doubling, the two tables of 100,000 nodes took 21.4 MB at their
        // peak instead of 16.6 (heaptrack, release build).
        let total: usize = groups.iter().map(|g| g.nodes.len()).sum();
        let mut entries = Vec::with_capacity(total);
        let mut all_nodes: Vec<Watched> = Vec::with_capacity(total);
        let mut deadbands = HashMap::new();
        let mut subscribed = Vec::new();
        let mut polled = Vec::new();
        for group in groups {
            // One monitored item or read per distinct node (and deadband): array elements and
            // several signals of one node share it. Its entries are laid out together.
            let mut by_node: HashMap<(&NodeAddress, DeadbandKey), usize> = HashMap::new();
            let mut watched: Vec<(&NodeAddress, Option<Deadband>, Vec<Entry>)> = Vec::new();
            for node in &group.nodes {
                let Some(owner) = server.owner(node) else {
                    continue;
                };
                let target = match owner {
                    Owner::Machine(m) => Target::Machine(name(m)),
                    Owner::Meter(m) => Target::Meter(name(m)),
                };
                let entry = Entry {
                    target,
                    signal: name(&node.signal),
                    value_type: node.value_type,
                    index: node.index.unwrap_or(WHOLE),
                    last: None,
                    errors: FieldErrorCounts::default(),
                };
                let deadband = node.deadband.map(|d| match d {
                    Deadband::Absolute(x) => (false, x.to_bits()),
                    Deadband::Percent(x) => (true, x.to_bits()),
                });
                let w = *by_node.entry((&node.node, deadband)).or_insert_with(|| {
                    watched.push((&node.node, node.deadband, Vec::new()));
                    watched.len() - 1
                });
                watched[w].2.push(entry);
            }
            let start = all_nodes.len() as u32;
            for (address, deadband, mine) in watched {
                let first = entries.len() as u32;
                entries.extend(mine);
                if let Some(d) = deadband {
                    deadbands.insert(all_nodes.len() as u32, d);
                }
                all_nodes.push(Watched {
                    address: address.clone(),
                    entries: first..entries.len() as u32,
                });
            }
            let nodes = start..all_nodes.len() as u32;
            match group.mode {
                ReadMode::Subscribe => subscribed.push(SubscribedGroup {
                    publishing_interval: group.publishing_interval(),
                    sampling_interval: group.sampling_interval(),
                    queue_size: group.queue_size(),
                    nodes,
                }),
                ReadMode::Poll => polled.push(PolledGroup {
                    poll: group.poll(),
                    nodes,
                    next: Instant::now(),
                }),
            }
        }
        entries.shrink_to_fit();
        all_nodes.shrink_to_fit();
        let counters = Counters::new(metrics, &server.id);
        let targets: Vec<Target> = entries
            .iter()
            .map(|e| &e.target)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .cloned()
            .collect();
        Task {
            targets,
            alive_every,
            device: Arc::from(server.id.as_str()),
            pki_dir: server.pki_dir.clone().unwrap_or(pki_dir),
            server,
            entries,
            nodes: all_nodes,
            deadbands,
            quality_names: HashMap::new(),
            subscribed,
            polled,
            events,
            counters,
            metrics: metrics.clone(),
        }
    }

    async fn run(mut self, mut shutdown: Shutdown) {
        let mut failures: u32 = 0;
        let mut outage_since = Instant::now();
        let mut down: Option<String> = None;
        loop {
            let ended = tokio::select! {
                e = self.session(&mut failures, &mut down) => e,
                _ = shutdown.wait() => Ended::Shutdown,
            };
            let reason = match ended {
                Ended::Shutdown => return,
                Ended::Lost(reason) => reason,
            };
            failures = failures.saturating_add(1);
            if failures == 1 {
                outage_since = Instant::now();
            }
            let wait = backoff(failures, outage_since.elapsed());
            if down.as_deref() != Some(reason.as_str()) {
                warn!(%reason, retry_in = ?wait, "server down");
                self.send(SourceEvent::DeviceDown {
                    device: self.device.clone(),
                    at: Timestamp::now(),
                    reason: reason.clone(),
                })
                .await;
                down = Some(reason);
            } else {
                debug!(%reason, retry_in = ?wait, "still down");
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.wait() => return,
            }
        }
    }

    /// One session, from connecting to its loss. Returns only on a loss (shutdown is the
    /// caller's `select!`).
    async fn session(&mut self, failures: &mut u32, down: &mut Option<String>) -> Ended {
        let (mut guard, mut lost) = match self.connect().await {
            Ok(s) => s,
            Err(reason) => return Ended::Lost(reason),
        };
        let session = guard.session.clone();
        let (namespaces, server_max_read) = match read_server_facts(&session).await {
            Ok(f) => f,
            Err(e) => return Ended::Lost(format!("reading the server's namespace table: {e}")),
        };
        let max_read = self
            .server
            .max_nodes_per_read
            .or(server_max_read.filter(|n| *n > 0))
            .unwrap_or(DEFAULT_MAX_NODES_PER_READ)
            .min(READ_CAP) as usize;
        self.counters.subscriptions.store(0, Ordering::Relaxed);

        // Polled nodes resolved once per session.
        let polled_ids: Vec<Vec<Option<NodeId>>> = self
            .polled
            .iter()
            .map(|g| {
                self.nodes[g.nodes.start as usize..g.nodes.end as usize]
                    .iter()
                    .map(|w| self.resolve(&w.address, &namespaces))
                    .collect()
            })
            .collect();

        let mut book = Book::default();
        let mut publishes: FuturesUnordered<Publishing> = FuturesUnordered::new();
        let mut progress = Progress {
            next: self.subscribed.first().map_or(0, |g| g.nodes.start),
            ..Progress::default()
        };
        let mut making = self.next_subscription(&session, &mut progress, &namespaces);
        let mut up = false;
        let mut alive = tokio::time::interval(self.alive_every);
        alive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The subscription's first values carry the times they last changed, maybe long before
        // this session: an Alive right after them keeps the engine from taking the machine for
        // silent since then.
        let mut first_batch = true;
        loop {
            if !up && making.is_none() {
                up = true;
                *failures = 0;
                *down = None;
                info!(
                    subscriptions = book.len(),
                    polled_groups = self.polled.len(),
                    max_nodes_per_read = max_read,
                    "server answers"
                );
                self.send(SourceEvent::DeviceUp {
                    device: self.device.clone(),
                    at: Timestamp::now(),
                })
                .await;
                let start = Instant::now();
                for g in &mut self.polled {
                    g.next = start;
                }
                alive.reset_immediately();
            }
            let next_poll = if up {
                self.polled.iter().map(|g| g.next).min()
            } else {
                None
            };
            // In this order when several are ready: a subscription's CreateMonitoredItems
            // answer comes before its first data message on the wire, and must be taken in
            // first, or that message would be of a subscription the book does not know yet.
            tokio::select! {
                biased;
                reason = lost.recv() => {
                    drop(guard);
                    return Ended::Lost(reason.unwrap_or_else(|| "the session ended".into()));
                }
                _ = alive.tick(), if up => {
                    self.send(SourceEvent::Alive {
                        targets: self.targets.clone(),
                        at: Timestamp::now(),
                    })
                    .await;
                }
                made = async { making.as_mut().expect("guarded").await }, if making.is_some() => {
                    let made = match made {
                        Ok(m) => m,
                        Err(e) => return Ended::Lost(e),
                    };
                    guard.subscriptions.push(made.id);
                    book.add(made.id, made.keep_alive);
                    self.counters
                        .subscriptions
                        .store(book.len() as u64, Ordering::Relaxed);
                    if let Err(e) = self.made(made, &mut progress) {
                        return Ended::Lost(e);
                    }
                    self.top_up(&mut publishes, &mut book, &session);
                    making = self.next_subscription(&session, &mut progress, &namespaces);
                }
                _ = sleep_until_opt(next_poll) => {
                    let now = Instant::now();
                    for (g, ids) in polled_ids.iter().enumerate() {
                        if self.polled[g].next > now {
                            continue;
                        }
                        let group = &mut self.polled[g];
                        group.next = next_tick(group.next, group.poll, now);
                        if let Err(e) = self.poll(&session, g, ids, max_read).await {
                            drop(guard);
                            return Ended::Lost(e);
                        }
                    }
                }
                Some((acks, answer)) = publishes.next(), if !publishes.is_empty() => {
                    match answer {
                        Ok(response) => {
                            if let Err(e) = self
                                .published(&session, &mut book, response, &mut first_batch)
                                .await
                            {
                                return Ended::Lost(e);
                            }
                        }
                        Err(code) => {
                            book.unsent(acks);
                            if code == StatusCode::BadTooManyPublishRequests {
                                debug!(outstanding = publishes.len(), "the server holds no more Publish requests");
                                book.too_many(publishes.len());
                            } else if code == StatusCode::BadTimeout {
                                debug!("a Publish timed out; sent again");
                            } else if code == StatusCode::BadNoSubscription
                                || code == StatusCode::BadSubscriptionIdInvalid
                            {
                                return Ended::Lost(format!(
                                    "the server no longer has this session's subscriptions ({code})"
                                ));
                            } else {
                                return Ended::Lost(format!("Publish: {}", self.explain(code, "")));
                            }
                        }
                    }
                    self.top_up(&mut publishes, &mut book, &session);
                }
            }
        }
    }

    async fn connect(&self) -> Result<(SessionGuard, mpsc::Receiver<String>), String> {
        open_session(&self.server, &self.pki_dir).await
    }

    fn explain(&self, code: StatusCode, detail: &str) -> String {
        explain(&self.server, &self.pki_dir, code, detail)
    }

    fn resolve(&self, address: &NodeAddress, namespaces: &[String]) -> Option<NodeId> {
        let id = address.resolve(namespaces);
        if id.is_none() {
            self.counters.unknown_nodes.fetch_add(1, Ordering::Relaxed);
            warn!(node = %address, "the server has no such namespace URI: node skipped");
        }
        id
    }

    /// Keeps as many Publish requests outstanding as the book wants; the first one sent
    /// carries the acknowledgements owed.
    fn top_up(
        &self,
        publishes: &mut FuturesUnordered<Publishing>,
        book: &mut Book,
        session: &Arc<Session>,
    ) {
        let timeout = book.publish_timeout(self.server.request_timeout);
        while publishes.len() < book.wanted() {
            let acks = book.take_acks();
            publishes.push(Box::pin(subscription::publish(
                session.clone(),
                acks,
                timeout,
            )));
        }
    }

    /// Starts making the next subscription: the items the last one refused as too many,
    /// then the group's next nodes, at most `max_items_per_subscription`. `None` when every
    /// subscribed group is made.
    fn next_subscription(
        &self,
        session: &Arc<Session>,
        progress: &mut Progress,
        namespaces: &[String],
    ) -> Option<Making> {
        let max = self.server.max_items_per_subscription.clamp(1, READ_CAP) as usize;
        loop {
            let group = self.subscribed.get(progress.group)?;
            let take = progress.refused.len().min(max);
            let mut items: Vec<MonitoredItemCreateRequest> =
                progress.refused.drain(..take).collect();
            while items.len() < max && progress.next < group.nodes.end {
                let n = progress.next;
                progress.next += 1;
                let w = &self.nodes[n as usize];
                let Some(node_id) = self.resolve(&w.address, namespaces) else {
                    continue;
                };
                let deadband = self.deadbands.get(&n).copied();
                items.push(monitored_item(group, deadband, node_id, n + 1));
            }
            if items.is_empty() {
                progress.group += 1;
                progress.next = self
                    .subscribed
                    .get(progress.group)
                    .map_or(0, |g| g.nodes.start);
                continue;
            }
            let publishing = group.publishing_interval;
            // Keep-alive every 10 publishing intervals (at least every 10 s); the server drops
            // the subscription after 3 missed keep-alives.
            let keep_alive =
                (10_000.0 / publishing.as_millis().max(1) as f64).clamp(1.0, 10.0) as u32;
            let session = session.clone();
            return Some(Box::pin(async move {
                // Notifications per Publish response: the client decodes no more.
                subscription::create(&session, publishing, keep_alive, READ_CAP, items).await
            }));
        }
    }

    /// Takes in what the server made of a subscription: items refused as one too many wait
    /// for the next subscription; other refusals are counted.
    fn made(&self, made: Made, progress: &mut Progress) -> Result<(), String> {
        let mut created = 0;
        let mut too_many = 0;
        for (status, request) in made.results {
            if status.is_good() {
                created += 1;
            } else if status == StatusCode::BadTooManyMonitoredItems {
                too_many += 1;
                progress.refused.push(request);
            } else {
                self.counters.unknown_nodes.fetch_add(1, Ordering::Relaxed);
                warn!(
                    node = %request.item_to_monitor.node_id,
                    %status,
                    "the server refused to monitor the node"
                );
            }
        }
        if created == 0 && too_many > 0 {
            return Err(format!(
                "the server accepts no more monitored items ({} left): lower \
                 max_items_per_subscription or poll some groups",
                progress.refused.len()
            ));
        }
        debug!(
            subscription = made.id,
            items = created,
            publishing_interval = ?made.publishing_interval,
            "subscribed"
        );
        Ok(())
    }

    /// Handles one Publish response: a keep-alive says nothing; a data message is checked
    /// against its subscription's sequence (what is missing is asked for again first), its
    /// data changes become samples and it is acknowledged in the next Publish. A status change
    /// (the subscription expired or moved) ends the session.
    async fn published(
        &mut self,
        session: &Session,
        book: &mut Book,
        response: PublishResponse,
        first_batch: &mut bool,
    ) -> Result<(), String> {
        let sub = response.subscription_id;
        let message = response.notification_message;
        if !subscription::has_data(&message) {
            return Ok(());
        }
        let seq = message.sequence_number;
        match book.sequence(sub, seq) {
            // A subscription whose making this task has not taken in yet (its items' client
            // handles are this task's all the same): its data is taken, unchecked.
            Sequence::Unknown => {
                debug!(
                    subscription = sub,
                    "a message of a subscription not yet in the book"
                );
            }
            Sequence::Gap { missing, beyond } => {
                let mut lost = beyond;
                for s in missing {
                    match subscription::republish(session, sub, s).await {
                        Ok(Some(again)) => {
                            book.ack(sub, s);
                            self.notified(sub, again, first_batch).await?;
                        }
                        Ok(None) => lost += 1,
                        Err(code) if is_channel_fault(code) => {
                            return Err(format!("Republish: {}", self.explain(code, "")));
                        }
                        Err(code) => {
                            debug!(subscription = sub, seq = s, %code, "Republish refused");
                            lost += 1;
                        }
                    }
                }
                if lost > 0 {
                    self.counters.lost.fetch_add(lost, Ordering::Relaxed);
                    warn!(
                        subscription = sub,
                        lost,
                        "notification messages lost on the way; the server no longer has them"
                    );
                }
            }
            Sequence::Next | Sequence::Old => {}
        }
        book.ack(sub, seq);
        self.notified(sub, message, first_batch).await
    }

    /// The data changes of one notification message, to the engine.
    async fn notified(
        &mut self,
        sub: u32,
        message: NotificationMessage,
        first_batch: &mut bool,
    ) -> Result<(), String> {
        let received = Timestamp::now();
        let mut samples = Vec::new();
        let mut failed = Vec::new();
        let mut ended = None;
        for data in message.notification_data.iter().flatten() {
            if let Some(changes) = data.inner_as::<DataChangeNotification>() {
                for item in changes.monitored_items.iter().flatten() {
                    let Some(w) = (item.client_handle as usize)
                        .checked_sub(1)
                        .and_then(|n| self.nodes.get(n))
                    else {
                        continue;
                    };
                    if item.value.status.is_some_and(|s| s.overflow()) {
                        self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    let entries = w.entries.clone();
                    self.take(entries, &item.value, received, &mut samples, &mut failed);
                }
            } else if let Some(change) = data.inner_as::<StatusChangeNotification>() {
                ended = Some(change.status);
            }
        }
        let any = !samples.is_empty();
        self.send_samples(samples, failed).await;
        if *first_batch && any {
            *first_batch = false;
            self.send(SourceEvent::Alive {
                targets: self.targets.clone(),
                at: Timestamp::now(),
            })
            .await;
        }
        match ended {
            Some(status) => Err(format!(
                "the server ended subscription {sub} ({status}); subscribing again"
            )),
            None => Ok(()),
        }
    }

    /// Reads one polled group in batches of `max_read` nodes.
    async fn poll(
        &mut self,
        session: &Arc<Session>,
        g: usize,
        ids: &[Option<NodeId>],
        max_read: usize,
    ) -> Result<(), String> {
        let wanted: Vec<(usize, &NodeId)> = ids
            .iter()
            .enumerate()
            .filter_map(|(n, id)| id.as_ref().map(|id| (n, id)))
            .collect();
        let mut samples = Vec::new();
        let mut failed = Vec::new();
        for batch in wanted.chunks(max_read.max(1)) {
            let request: Vec<ReadValueId> = batch
                .iter()
                .map(|(_, id)| ReadValueId {
                    node_id: (*id).clone(),
                    attribute_id: AttributeId::Value as u32,
                    ..Default::default()
                })
                .collect();
            let values = match session.read(&request, TimestampsToReturn::Both, 0.0).await {
                Ok(v) => v,
                Err(e) if is_channel_fault(e.status()) => {
                    return Err(format!("Read: {}", self.explain(e.status(), "")));
                }
                Err(e) => {
                    warn!(error = %e, "a Read was refused; the group is retried at its next poll");
                    continue;
                }
            };
            let received = Timestamp::now();
            for ((n, _), dv) in batch.iter().zip(values) {
                if dv.status.is_some_and(|s| {
                    s == StatusCode::BadNodeIdUnknown || s == StatusCode::BadNotReadable
                }) {
                    self.counters.unknown_nodes.fetch_add(1, Ordering::Relaxed);
                }
                let node = self.polled[g].nodes.start as usize + *n;
                let entries = self.nodes[node].entries.clone();
                self.take(entries, &dv, received, &mut samples, &mut failed);
            }
        }
        self.send_samples(samples, failed).await;
        Ok(())
    }

    /// Maps one data value to the samples of its entries, applying the status policy and the
    /// no-duplicate rule.
    fn take(
        &mut self,
        entries: std::ops::Range<u32>,
        dv: &DataValue,
        received: Timestamp,
        out: &mut Vec<Sample>,
        failed: &mut Vec<Failed>,
    ) {
        for e in entries {
            let e = e as usize;
            let entry = &mut self.entries[e];
            match reading(
                dv,
                Some(entry.index).filter(|i| *i != WHOLE),
                entry.value_type,
                received,
                self.server.max_timestamp_skew,
            ) {
                Ok(r) => {
                    if r.skewed {
                        self.counters.skewed.fetch_add(1, Ordering::Relaxed);
                    }
                    if entry.last.is_some_and(|last| r.at <= last) {
                        self.counters.duplicate.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    entry.last = Some(r.at);
                    out.push(Sample {
                        target: entry.target.clone(),
                        signal: entry.signal.clone(),
                        value: r.value,
                        at: r.at,
                    });
                    if r.quality == Quality::Uncertain {
                        out.push(Sample {
                            target: entry.target.clone(),
                            signal: self
                                .quality_names
                                .entry(entry.signal.clone())
                                .or_insert_with(|| {
                                    Arc::from(format!("{}{QUALITY_SUFFIX}", entry.signal))
                                })
                                .clone(),
                            value: Value::Text("uncertain".into()),
                            at: r.at,
                        });
                    }
                }
                Err(ValueError::Bad(status)) => {
                    self.counters.bad.fetch_add(1, Ordering::Relaxed);
                    debug!(signal = %entry.signal, %status, "bad value not written");
                    let why = ValueError::Bad(status).to_string();
                    failed.push((e, "exception", why));
                }
                Err(err) => {
                    self.counters.refused.fetch_add(1, Ordering::Relaxed);
                    debug!(signal = %entry.signal, %err, "value not written");
                    failed.push((e, "decode", err.to_string()));
                }
            }
        }
    }

    /// Sends samples as one event per (target, timestamp), in time order, then the errors of
    /// the fields that delivered nothing.
    async fn send_samples(&mut self, samples: Vec<Sample>, failed: Vec<Failed>) {
        let mut by_time: BTreeMap<(Timestamp, String), Vec<Sample>> = BTreeMap::new();
        for s in samples {
            let key = match &s.target {
                Target::Machine(m) | Target::Meter(m) => m.to_string(),
            };
            by_time.entry((s.at, key)).or_default().push(s);
        }
        for (_, group) in by_time {
            self.send(SourceEvent::Samples(group)).await;
        }
        if !failed.is_empty() {
            let errors =
                field_errors::collect(failed, &mut self.entries, &self.metrics, &self.device);
            self.send(SourceEvent::FieldErrors {
                device: self.device.clone(),
                at: Timestamp::now(),
                errors,
            })
            .await;
        }
    }

    /// Waits while the engine's queue is full (policy Block, like MQTT's): a data change is
    /// the only copy of its value. Meanwhile no Publish goes out, so the server keeps the next
    /// changes in its subscriptions' queues (and sets the Overflow bit on a value whose item's
    /// queue overflowed: counted as dropped). A closed queue (the agent stopping) is ignored.
    async fn send(&self, event: SourceEvent) {
        const _: () = crate::queue::EVENTS_FROM_OPCUA.sent_as(crate::queue::WhenFull::Block);
        let _ = self.events.send(event).await;
    }
}

/// The monitored item of one subscribed node: reporting, the group's sampling interval and
/// queue size, the node's deadband, `handle` as its client handle.
fn monitored_item(
    group: &SubscribedGroup,
    deadband: Option<Deadband>,
    node_id: NodeId,
    handle: u32,
) -> MonitoredItemCreateRequest {
    let filter = match deadband {
        None => ExtensionObject::null(),
        Some(d) => {
            let (kind, value) = match d {
                Deadband::Absolute(x) => (DeadbandType::Absolute, x),
                Deadband::Percent(x) => (DeadbandType::Percent, x),
            };
            ExtensionObject::from_message(DataChangeFilter {
                trigger: DataChangeTrigger::StatusValue,
                deadband_type: kind as u32,
                deadband_value: value,
            })
        }
    };
    MonitoredItemCreateRequest {
        item_to_monitor: ReadValueId::from(node_id),
        monitoring_mode: MonitoringMode::Reporting,
        requested_parameters: MonitoringParameters {
            client_handle: handle,
            sampling_interval: group.sampling_interval.as_secs_f64() * 1000.0,
            filter,
            queue_size: group.queue_size,
            discard_oldest: true,
        },
    }
}

/// The client as the agent sets it up for one server: application identity, certificate
/// store, timeouts, no reconnection of its own.
pub(crate) fn build_client(s: &OpcuaServer, pki_dir: &Path) -> Result<Client, String> {
    let mut builder = ClientBuilder::new()
        .application_name("Shopfloor")
        .application_uri(format!("urn:shopfloor:{}", s.id))
        .product_uri("urn:shopfloor")
        .pki_dir(pki_dir)
        .trust_server_certs(false)
        .verify_server_certs(true)
        .create_sample_keypair(s.client_certificate.is_none())
        .session_retry_limit(0)
        .request_timeout(s.request_timeout)
        .session_timeout(u32::try_from(s.session_timeout.as_millis()).unwrap_or(u32::MAX))
        .session_name(format!("shopfloor {}", s.id))
        // The endpoint the session is opened on (`open_session` names it again with its
        // identity). Listed here only so that the stack does not warn at every connection
        // that its client config lists no endpoint.
        .endpoint(
            "server",
            ClientEndpoint {
                url: s.endpoint.clone(),
                security_policy: format!(
                    "http://opcfoundation.org/UA/SecurityPolicy#{}",
                    s.security_policy.ua_name()
                ),
                security_mode: match s.security_mode {
                    SecurityMode::None => "None",
                    SecurityMode::Sign => "Sign",
                    SecurityMode::SignAndEncrypt => "SignAndEncrypt",
                }
                .to_string(),
                ..ClientEndpoint::new(s.endpoint.clone())
            },
        );
    if let (Some(cert), Some(key)) = (&s.client_certificate, &s.client_private_key) {
        builder = builder.certificate_path(cert).private_key_path(key);
    }
    builder
        .client()
        .map_err(|e| format!("OPC UA client set-up: {}", e.join("; ")))
}

/// Builds the client as the source does and opens the session (`pki_dir`: the certificate
/// store to use). Returns it with a receiver that yields the
/// reason when the session's transport is lost.
pub(crate) async fn open_session(
    s: &OpcuaServer,
    pki_dir: &Path,
) -> Result<(SessionGuard, mpsc::Receiver<String>), String> {
    let mut client = build_client(s, pki_dir)?;
    let identity = identity(s)?;
    let policy = format!(
        "http://opcfoundation.org/UA/SecurityPolicy#{}",
        s.security_policy.ua_name()
    );
    let mode = match s.security_mode {
        SecurityMode::None => MessageSecurityMode::None,
        SecurityMode::Sign => MessageSecurityMode::Sign,
        SecurityMode::SignAndEncrypt => MessageSecurityMode::SignAndEncrypt,
    };
    let connect =
        client.connect_to_matching_endpoint((s.endpoint.as_str(), policy.as_str(), mode), identity);
    // One deadline for the whole connection (endpoints, channel, session), so that a server
    // that accepts TCP and then says nothing is reported down in 3 request timeouts.
    let deadline = tokio::time::Instant::now() + s.request_timeout * 3;
    let (session, event_loop) = tokio::time::timeout_at(deadline, connect)
        .await
        .map_err(|_| {
            format!(
                "no answer from {} in {:?}",
                s.endpoint,
                s.request_timeout * 3
            )
        })?
        .map_err(|e| explain(s, pki_dir, e.status(), &e.to_string()))?;

    // The event loop drives the channel; it runs beside this task and reports the first
    // connection and the loss of it.
    let (up_tx, mut up_rx) = mpsc::channel::<Result<(), String>>(1);
    let (lost_tx, lost_rx) = mpsc::channel::<String>(1);
    let explain = {
        let pki = pki_dir.to_path_buf();
        let endpoint = s.endpoint.clone();
        move |code: StatusCode| explain_status(code, &endpoint, &pki)
    };
    let driver = tokio::spawn(async move {
        let stream = event_loop.enter();
        futures_util::pin_mut!(stream);
        let mut connected = false;
        while let Some(r) = stream.next().await {
            match r {
                Ok(SessionPollResult::Reconnected(_)) if !connected => {
                    connected = true;
                    let _ = up_tx.send(Ok(())).await;
                }
                Ok(SessionPollResult::ConnectionLost(code)) => {
                    let _ = lost_tx.send(explain(code)).await;
                    let _ = up_tx.send(Err(explain(code))).await;
                    return;
                }
                Ok(SessionPollResult::ReconnectFailed(code)) | Err(code) => {
                    let _ = up_tx.send(Err(explain(code))).await;
                    let _ = lost_tx.send(explain(code)).await;
                    return;
                }
                Ok(_) => {}
            }
        }
        let _ = up_tx.send(Err("the session closed".into())).await;
        let _ = lost_tx.send("the session closed".into()).await;
    });
    let guard = SessionGuard {
        session,
        driver: Some(driver),
        subscriptions: Vec::new(),
    };
    match tokio::time::timeout_at(deadline, up_rx.recv()).await {
        Ok(Some(Ok(()))) => Ok((guard, lost_rx)),
        Ok(Some(Err(reason))) => Err(reason),
        Ok(None) => Err("the session closed while connecting".into()),
        Err(_) => Err(format!(
            "no session with {} after {:?}",
            s.endpoint,
            s.request_timeout * 3
        )),
    }
}

fn identity(s: &OpcuaServer) -> Result<IdentityToken, String> {
    if let (Some(user), Some(password)) = (&s.username, &s.password) {
        let password = password
            .resolve()
            .map_err(|e| format!("the password of `{user}`: {e}"))?;
        return Ok(IdentityToken::new_user_name(user.clone(), password));
    }
    if let (Some(cert), Some(key)) = (&s.user_certificate, &s.user_private_key) {
        let cert = read_certificate(cert)?;
        let key = PrivateKey::read_pem_file(key).map_err(|e| {
            format!(
                "user_private_key `{}` is not a PEM private key: {e:?}",
                key.display()
            )
        })?;
        return Ok(IdentityToken::X509(Box::new(cert), Box::new(key)));
    }
    Ok(IdentityToken::Anonymous)
}

/// A status code from connecting, in words, with the library's detail when it adds some.
pub(crate) fn explain(s: &OpcuaServer, pki_dir: &Path, code: StatusCode, detail: &str) -> String {
    let base = explain_status(code, &s.endpoint, pki_dir);
    // The library's text starts with the code's name, which `base` already gives.
    let name = code.to_string();
    let detail = detail
        .strip_prefix(name.as_str())
        .map_or(detail, |rest| rest.trim_start_matches([':', ' ']));
    if detail.is_empty() || base.contains(detail) {
        base
    } else {
        format!("{base}: {detail}")
    }
}

/// Deletes the session's subscriptions, closes it and stops its event loop when a session
/// ends for any reason (shutdown included: the `select!` that ends it drops this).
pub(crate) struct SessionGuard {
    pub(crate) session: Arc<Session>,
    driver: Option<tokio::task::JoinHandle<()>>,
    /// The subscriptions made on this session (the stack does not know them).
    pub(crate) subscriptions: Vec<u32>,
}

/// `DeleteSubscriptions` for the source's own subscriptions, then `CloseSession`: at most 2 s.
async fn close_session(session: Arc<Session>, subscriptions: Vec<u32>) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        subscription::delete(&session, subscriptions).await;
        let _ = session.disconnect().await;
    })
    .await;
}

impl SessionGuard {
    /// Closes the session now and waits for it (at most 2 s), for a caller that exits next.
    pub(crate) async fn close(mut self) {
        close_session(
            self.session.clone(),
            std::mem::take(&mut self.subscriptions),
        )
        .await;
        if let Some(d) = self.driver.take() {
            d.abort();
        }
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let Some(driver) = self.driver.take() else {
            return; // closed already
        };
        let session = self.session.clone();
        let subscriptions = std::mem::take(&mut self.subscriptions);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                close_session(session, subscriptions).await;
                driver.abort();
            });
        } else {
            driver.abort();
        }
    }
}

/// The server's namespace table and its MaxNodesPerRead (`None` when it does not say).
pub(crate) async fn read_server_facts(
    session: &Session,
) -> Result<(Vec<String>, Option<u32>), String> {
    let ids = [
        ReadValueId::from(NodeId::new(0, 2255u32)),
        ReadValueId::from(NodeId::new(0, 11705u32)),
    ];
    let values = session
        .read(&ids, TimestampsToReturn::Neither, 0.0)
        .await
        .map_err(|e| e.to_string())?;
    let namespaces = match values.first().and_then(|v| v.value.as_ref()) {
        Some(Variant::Array(a)) => a
            .values
            .iter()
            .map(|v| match v {
                Variant::String(s) => s.as_ref().to_string(),
                _ => String::new(),
            })
            .collect(),
        _ => Vec::new(),
    };
    let max_read = match values.get(1).and_then(|v| v.value.as_ref()) {
        Some(Variant::UInt32(n)) => Some(*n),
        _ => None,
    };
    Ok((namespaces, max_read))
}

fn read_certificate(path: &Path) -> Result<X509, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("user_certificate `{}` cannot be read: {e}", path.display()))?;
    X509::from_der(&bytes)
        .or_else(|_| X509::from_pem(&bytes))
        .map_err(|e| {
            format!(
                "user_certificate `{}` is not a DER or PEM certificate: {e:?}",
                path.display()
            )
        })
}

/// A status code from connecting or from the channel, in words an engineer can act on.
pub(crate) fn explain_status(code: StatusCode, endpoint: &str, pki: &Path) -> String {
    let c = code;
    if c == StatusCode::BadCertificateUntrusted || c == StatusCode::BadSecurityChecksFailed {
        format!(
            "{endpoint}: the server's certificate is not trusted ({c}): it was stored in {}; \
             check its thumbprint with the machine's OPC UA settings and move it to {} to \
             trust it",
            pki.join("rejected").display(),
            pki.join("trusted").display()
        )
    } else if c == StatusCode::BadIdentityTokenRejected
        || c == StatusCode::BadIdentityTokenInvalid
        || c == StatusCode::BadUserAccessDenied
    {
        format!("{endpoint}: the server refused the user name, password or user certificate ({c})")
    } else if c == StatusCode::BadTcpEndpointUrlInvalid
        || c == StatusCode::BadSecurityPolicyRejected
    {
        format!(
            "{endpoint}: the server offers no endpoint with this security_policy and \
             security_mode ({c}); `shopfloor probe` lists what it offers"
        )
    } else if c == StatusCode::BadCommunicationError
        || c == StatusCode::BadConnectionRejected
        || c == StatusCode::BadNotConnected
        || c == StatusCode::BadConnectionClosed
    {
        format!("{endpoint}: cannot connect or the connection was lost ({c})")
    } else if c == StatusCode::BadTimeout {
        format!("{endpoint}: no answer in time ({c})")
    } else {
        format!("{endpoint}: {c}")
    }
}

/// Whether a failed request means the channel or session is gone (as opposed to the server
/// refusing that one request).
fn is_channel_fault(code: StatusCode) -> bool {
    [
        StatusCode::BadNotConnected,
        StatusCode::BadConnectionClosed,
        StatusCode::BadCommunicationError,
        StatusCode::BadTimeout,
        StatusCode::BadSessionClosed,
        StatusCode::BadSessionIdInvalid,
        StatusCode::BadSecureChannelClosed,
        StatusCode::BadSecureChannelIdInvalid,
        StatusCode::BadTcpInternalError,
    ]
    .contains(&code)
}

/// Back-off after the n-th failure in a row of an outage that began `outage` ago: 1 s
/// doubling, at most 2 s during the first five minutes (a server back from a restart is read
/// again within seconds), at most [`MAX_BACKOFF`] after that.
pub fn backoff(failures: u32, outage: Duration) -> Duration {
    let ceiling = if outage < crate::source::modbus::FAST_PHASE {
        crate::source::modbus::FAST_CEILING
    } else {
        MAX_BACKOFF
    };
    Duration::from_secs(1)
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(ceiling)
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The tick after `last` still ahead of `now`, keeping the schedule's phase.
fn next_tick(last: Instant, period: Duration, now: Instant) -> Instant {
    let next = last + period;
    if next > now {
        return next;
    }
    let behind = now.duration_since(last).as_nanos();
    let periods = behind / period.as_nanos().max(1) + 1;
    last + period * u32::try_from(periods).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The library's text repeats the code's name, which the explanation already gives.
    #[test]
    fn a_connection_error_names_its_code_once() {
        #[derive(serde::Deserialize)]
        struct Doc {
            opcua: Vec<OpcuaServer>,
        }
        let doc: Doc =
            toml::from_str("[[opcua]]\nid = \"cnc\"\nendpoint = \"opc.tcp://plc:4840\"\n").unwrap();
        let message = explain(
            &doc.opcua[0],
            Path::new("/tmp/pki"),
            StatusCode::BadCommunicationError,
            "BadCommunicationError: Could not connect to plc:4840",
        );
        assert_eq!(
            message.matches("BadCommunicationError").count(),
            1,
            "{message}"
        );
        assert!(
            message.ends_with(": Could not connect to plc:4840"),
            "{message}"
        );
    }

    /// A server with 100,000 nodes keeps one `Entry` and one `Watched` for each as long as
    /// it runs: every byte here is 100 kB resident.
    #[test]
    fn a_node_and_its_entry_stay_small() {
        let (entry, node) = (std::mem::size_of::<Entry>(), std::mem::size_of::<Watched>());
        eprintln!("Entry {entry} bytes, Watched {node} bytes");
        assert!(entry <= 96, "Entry is {entry} bytes");
        assert!(node <= 64, "Watched is {node} bytes");
    }

    #[test]
    fn alive_follows_the_fastest_group_within_100_ms_and_2_s() {
        let every = |groups: &str| {
            let server: OpcuaServer = toml::from_str(&format!(
                "id = \"a\"\nendpoint = \"opc.tcp://h:4840\"\n{groups}"
            ))
            .unwrap();
            alive_every(&server)
        };
        let node = "[[group.node]]\nnode = \"i=2258\"\nsignal = \"s\"\n";
        assert_eq!(every(""), Duration::from_secs(2));
        assert_eq!(
            every(&format!(
                "[[group]]\npublishing_interval = \"500ms\"\n{node}[[group]]\nmode = \"poll\"\npoll = \"300ms\"\n{node}"
            )),
            Duration::from_millis(300)
        );
        assert_eq!(
            every(&format!(
                "[[group]]\npublishing_interval = \"20ms\"\n{node}"
            )),
            Duration::from_millis(100)
        );
        assert_eq!(
            every(&format!(
                "[[group]]\nmode = \"poll\"\npoll = \"10s\"\n{node}"
            )),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn back_off_stays_within_two_seconds_for_five_minutes_then_doubles_up_to_a_minute() {
        let early = Duration::from_secs(40);
        let waits: Vec<u64> = (1..=8).map(|n| backoff(n, early).as_secs()).collect();
        assert_eq!(waits, [1, 2, 2, 2, 2, 2, 2, 2]);
        let late = crate::source::modbus::FAST_PHASE;
        let waits: Vec<u64> = (1..=8).map(|n| backoff(n, late).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
    }

    #[test]
    fn an_untrusted_certificate_says_where_it_is_and_how_to_trust_it() {
        let m = explain_status(
            StatusCode::BadCertificateUntrusted,
            "opc.tcp://plc:4840",
            Path::new("/var/lib/shopfloor/opcua/pki"),
        );
        assert!(m.contains("/var/lib/shopfloor/opcua/pki/rejected"), "{m}");
        assert!(
            m.contains("move it to /var/lib/shopfloor/opcua/pki/trusted"),
            "{m}"
        );
    }
}
