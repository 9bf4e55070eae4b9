//! The uplink: the enterprise's indicators published to the county's MQTT broker.
//!
//! ```text
//! spool ──> writer "uplink" ──> UplinkWriter::send ──(job)──> connection task ──> county broker
//!                                      ^                              │
//!                                      └────── acknowledged ──────────┘
//! ```
//!
//! An output like the InfluxDB writers: it drains the spool from its own cursor, so what the
//! agent computed while the broker or the network was down is published when they are back,
//! oldest first, up to the spool's bound. Of each batch only the configured measurements
//! (`fleet` and `green` by default) are published, one message per measurement and at most
//! [`MESSAGE_LINES`] lines, under `<prefix>/<county>/<sector>/<enterprise>/<measurement>`, as
//! line protocol. The payload is the spool's lines byte for byte, so `county ingest` writes
//! exactly what the agent would have written to a store of its own.
//!
//! A batch counts as delivered only when the broker has acknowledged every one of its messages
//! (QoS 1). Anything else (no connection, no acknowledgement within `timeout`) leaves the batch
//! in the spool to be sent again: delivery is at least once, and a message that arrives twice
//! writes the same points twice, which the store keeps once. A broker that *refuses* a message
//! (MQTT 5 reason code, e.g. "not authorized" from its ACL) is a configuration error, reported
//! as loudly as a 401 from a store; the data is kept meanwhile. A message the broker had no
//! subscriber for ("no matching subscribers": no `county ingest` holds a subscription, or the
//! broker lost it in a restart, as Mosquitto 2.0 does with shared subscriptions) would reach
//! nobody, so its batch is kept and sent again as well.
//!
//! The connection is owned by one task, which also keeps it alive between batches (rumqttc
//! only pings while its event loop is polled). The session is clean: what is unacknowledged
//! when a connection drops is not resent by the client but by the writer, from the spool.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason};
use rumqttc::v5::{AsyncClient, Event, EventLoop};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::SendError;
pub use super::config::{UPLINK_OUTPUT, Uplink, default_topic_prefix, default_uplink_measurements};
use crate::common::mqtt::{Backoff, MqttError};
use crate::config::Site;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

/// Lines per message at most: a day's backlog of one enterprise goes out in messages of a few
/// tens of kilobytes, well under any broker's message size limit.
pub const MESSAGE_LINES: usize = 500;

/// Requests waiting for rumqttc's event loop. A batch's messages are queued at once, so this
/// bounds the messages of one batch as well.
const REQUEST_CAPACITY: usize = crate::queue::UPLINK_REQUESTS.capacity;

/// One batch's messages, and where to say how it went.
struct Job {
    messages: Vec<(String, Vec<u8>)>,
    done: oneshot::Sender<Result<(), SendError>>,
}

/// The writer's side of the uplink: turns a batch of spool lines into messages and waits for
/// the connection task to have them acknowledged.
#[derive(Debug)]
pub struct UplinkWriter {
    /// `<prefix>/<county>/<sector>/<enterprise>/`.
    topic_base: String,
    /// The measurements published, each with the `measurement,` its lines start with.
    measurements: Vec<(String, String)>,
    timeout: Duration,
    jobs: mpsc::Sender<Job>,
    messages: Arc<AtomicU64>,
    lines: Arc<AtomicU64>,
}

/// The connection task, to be spawned beside the writer.
pub struct Connection {
    client: AsyncClient,
    events: EventLoop,
    jobs: mpsc::Receiver<Job>,
    backoff: Backoff,
    connected: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    unheard: Arc<AtomicU64>,
    address: String,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// The topic of one of an enterprise's measurements: `<prefix>/<county>/<sector>/<enterprise>/<measurement>`.
pub fn topic(prefix: &str, site: &Site, measurement: &str) -> String {
    format!(
        "{prefix}/{}/{}/{}/{measurement}",
        site.county,
        site.sector.as_str(),
        site.enterprise
    )
}

/// The client id an uplink uses when the config names none.
pub fn client_id(cfg: &Uplink, site: &Site) -> String {
    cfg.connection
        .client_id
        .clone()
        .unwrap_or_else(|| format!("shopfloor-uplink-{}", site.enterprise))
}

impl UplinkWriter {
    /// Builds the writer and its connection (reading the password and TLS files now).
    pub fn new(
        cfg: &Uplink,
        site: &Site,
        metrics: &Metrics,
    ) -> Result<(UplinkWriter, Connection), MqttError> {
        let id = client_id(cfg, site);
        // MQTT 5 because its acknowledgements carry a reason code: a publish the broker's ACL
        // refuses comes back as "not authorized", where an MQTT 3.1.1 broker acknowledges it
        // like any other and the data would be lost unseen.
        let mut options = cfg.connection.options_v5("[uplink]", &id)?;
        if let Some(size) = cfg.connection.max_packet_size {
            options.set_max_packet_size(Some(size));
        }
        // The spool is the session: what was not acknowledged is sent again from there.
        options.set_clean_start(true);
        let (client, events) = AsyncClient::new(options, REQUEST_CAPACITY);
        let (jobs_tx, jobs_rx) = crate::queue::UPLINK_JOBS.tokio();
        let labels = [("output", UPLINK_OUTPUT)];
        let writer = UplinkWriter {
            topic_base: topic(&cfg.topic_prefix, site, ""),
            measurements: cfg
                .measurements
                .iter()
                .map(|m| (m.clone(), format!("{m},")))
                .collect(),
            timeout: cfg.timeout,
            jobs: jobs_tx,
            messages: metrics.counter(
                "shopfloor_uplink_messages_total",
                "Messages the county's broker acknowledged.",
                &labels,
            ),
            lines: metrics.counter(
                "shopfloor_uplink_lines_total",
                "Records published to the county's broker and acknowledged by it.",
                &labels,
            ),
        };
        let connection = Connection {
            client,
            events,
            jobs: jobs_rx,
            backoff: cfg.connection.backoff(),
            connected: metrics.gauge(
                "shopfloor_uplink_connected",
                "1 while the agent is connected to the county's broker, 0 while it is not.",
                &labels,
            ),
            refused: metrics.counter(
                "shopfloor_uplink_refused_messages_total",
                "Messages the county's broker refused (its ACL, or a malformed topic).",
                &labels,
            ),
            unheard: metrics.counter(
                "shopfloor_uplink_unheard_messages_total",
                "Messages the county's broker had no subscriber for (no ingest running): sent again later.",
                &labels,
            ),
            address: cfg.connection.address.clone(),
        };
        Ok((writer, connection))
    }

    pub fn name(&self) -> &str {
        UPLINK_OUTPUT
    }

    /// The messages a batch of spool lines becomes: the configured measurements' lines, grouped
    /// by measurement in their order, [`MESSAGE_LINES`] at most per message.
    fn messages(&self, body: &[u8]) -> (Vec<(String, Vec<u8>)>, u64) {
        let mut groups: Vec<Vec<u8>> = vec![Vec::new(); self.measurements.len()];
        let mut counts = vec![0usize; self.measurements.len()];
        let mut messages = Vec::new();
        let mut published = 0;
        for line in body.split_inclusive(|b| *b == b'\n') {
            let Some(i) = self
                .measurements
                .iter()
                .position(|(_, prefix)| line.starts_with(prefix.as_bytes()))
            else {
                continue;
            };
            groups[i].extend_from_slice(line);
            if !line.ends_with(b"\n") {
                groups[i].push(b'\n');
            }
            counts[i] += 1;
            published += 1;
            if counts[i] == MESSAGE_LINES {
                let topic = format!("{}{}", self.topic_base, self.measurements[i].0);
                messages.push((topic, std::mem::take(&mut groups[i])));
                counts[i] = 0;
            }
        }
        for (i, payload) in groups.into_iter().enumerate() {
            if !payload.is_empty() {
                let topic = format!("{}{}", self.topic_base, self.measurements[i].0);
                messages.push((topic, payload));
            }
        }
        (messages, published)
    }

    /// Publishes the batch's indicator lines and waits until the broker acknowledged them all.
    /// A batch without any is delivered at once.
    pub async fn send(&self, body: &[u8]) -> Result<(), SendError> {
        let (messages, lines) = self.messages(body);
        if messages.is_empty() {
            return Ok(());
        }
        let count = messages.len() as u64;
        let (done, answer) = oneshot::channel();
        let retry = |reason: &str| SendError::Retry {
            reason: reason.to_string(),
            after: None,
        };
        // The connection task takes one job at a time; while it reconnects the job waits, and
        // the timeout below covers the wait.
        const _: () = crate::queue::UPLINK_JOBS.sent_as(crate::queue::WhenFull::Block);
        let result = tokio::time::timeout(self.timeout, async {
            self.jobs
                .send(Job { messages, done })
                .await
                .map_err(|_| retry("the uplink's connection task has stopped"))?;
            answer
                .await
                .map_err(|_| retry("the uplink's connection task has stopped"))?
        })
        .await
        .unwrap_or_else(|_| {
            Err(retry(
                "the county's broker did not acknowledge the batch within the timeout",
            ))
        });
        if result.is_ok() {
            self.messages.fetch_add(count, Ordering::Relaxed);
            self.lines.fetch_add(lines, Ordering::Relaxed);
        }
        result
    }
}

/// The batch being published: its packet ids as rumqttc assigns them, and what is still to be
/// acknowledged.
struct InFlight {
    done: oneshot::Sender<Result<(), SendError>>,
    /// Messages not yet written to the connection (their packet ids are not known yet).
    unsent: usize,
    pkids: HashSet<u16>,
    /// Why the broker refused a message, if it did.
    refusal: Option<String>,
    /// Why a message could not even be queued, if it could not.
    failure: Option<String>,
}

impl Connection {
    /// Keeps the connection to the county's broker and publishes the writer's jobs, until
    /// shutdown.
    pub async fn run(self, mut shutdown: Shutdown) {
        let Connection {
            client,
            mut events,
            mut jobs,
            mut backoff,
            connected,
            refused,
            unheard,
            address,
        } = self;
        let span = tracing::info_span!("uplink", broker = %address);
        let mut current: Option<InFlight> = None;
        let mut up: Option<bool> = None;
        // Publish events still to come for messages of a job the writer gave up on.
        let mut skip = 0usize;
        loop {
            tokio::select! {
                job = jobs.recv() => {
                    let Some(job) = job else { break };
                    // The writer sends one job at a time and waits for it: a new one means it
                    // gave up on the previous (its timeout). Those messages' publish events
                    // still come first, in order, and are not the new job's.
                    if let Some(old) = current.take() {
                        skip += old.unsent;
                    }
                    current = queue(&client, job);
                }
                polled = events.poll() => match polled {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        backoff.reset();
                        connected.store(1, Ordering::Relaxed);
                        if up != Some(true) {
                            info!(parent: &span, "connected to the county's broker");
                            up = Some(true);
                        }
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Publish(_))) if skip > 0 => skip -= 1,
                    Ok(Event::Outgoing(rumqttc::Outgoing::Publish(pkid))) => {
                        if let Some(c) = current.as_mut().filter(|c| c.unsent > 0) {
                            c.unsent -= 1;
                            c.pkids.insert(pkid);
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        let Some(c) = current.as_mut() else { continue };
                        if !c.pkids.remove(&ack.pkid) {
                            continue;
                        }
                        if ack.reason == PubAckReason::NoMatchingSubscribers {
                            // Nobody would get it: no ingest holds a subscription (it never
                            // subscribed, or the broker lost it in a restart). Keep the batch.
                            unheard.fetch_add(1, Ordering::Relaxed);
                            c.failure.get_or_insert_with(|| "no county ingest is subscribed to the uplink's topics (the broker answered \"no matching subscribers\"): the batch stays in the spool until one is".to_string());
                        } else if ack.reason != PubAckReason::Success {
                            refused.fetch_add(1, Ordering::Relaxed);
                            let reason = ack
                                .properties
                                .and_then(|p| p.reason_string)
                                .map(|r| format!(": {r}"))
                                .unwrap_or_default();
                            c.refusal = Some(format!("the county's broker refused a message ({:?}{reason}): check the uplink's username and the broker's ACL for this enterprise", ack.reason));
                        }
                        if c.unsent == 0 && c.pkids.is_empty()
                            && let Some(c) = current.take()
                        {
                            let result = match (c.failure, c.refusal) {
                                (Some(reason), _) => Err(SendError::Retry { reason, after: None }),
                                (None, Some(message)) => Err(SendError::Refused(message)),
                                (None, None) => Ok(()),
                            };
                            let _ = c.done.send(result);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        connected.store(0, Ordering::Relaxed);
                        let reason = match e {
                            rumqttc::v5::ConnectionError::ConnectionRefused(code) => format!(
                                "the county's broker refused the connection ({code:?}): check the uplink's username, password and client id"
                            ),
                            other => other.to_string(),
                        };
                        if let Some(c) = current.take() {
                            let _ = c.done.send(Err(SendError::Retry { reason: reason.clone(), after: None }));
                        }
                        // A new clean session starts from nothing: the batch is resent from the
                        // spool, not by the client.
                        events.pending.clear();
                        skip = 0;
                        let wait = backoff.next_wait();
                        if up != Some(false) {
                            warn!(parent: &span, %reason, retry_in = ?wait, "county broker connection lost");
                            up = Some(false);
                        } else {
                            debug!(parent: &span, %reason, retry_in = ?wait, "county broker still unreachable");
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = shutdown.wait() => break,
                        }
                    }
                },
                _ = shutdown.wait() => break,
            }
        }
        connected.store(0, Ordering::Relaxed);
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            while events.poll().await.is_ok() {}
        })
        .await;
        debug!(parent: &span, "stopped");
    }
}

/// Queues a job's messages with the client. A message that cannot be queued fails the job.
fn queue(client: &AsyncClient, job: Job) -> Option<InFlight> {
    let mut flight = InFlight {
        done: job.done,
        unsent: 0,
        pkids: HashSet::new(),
        refusal: None,
        failure: None,
    };
    const _: () = crate::queue::UPLINK_REQUESTS.sent_as(crate::queue::WhenFull::DropNewest);
    for (topic, payload) in job.messages {
        if let Err(e) = client.try_publish(topic, QoS::AtLeastOnce, false, payload) {
            flight.failure = Some(format!(
                "cannot queue a message for the county's broker: {e}"
            ));
            break;
        }
        flight.unsent += 1;
    }
    if flight.unsent == 0 {
        // Nothing was queued, so no acknowledgement will end the job: end it now.
        let reason = flight.failure.take().unwrap_or_default();
        let _ = flight.done.send(Err(SendError::Retry {
            reason,
            after: None,
        }));
        return None;
    }
    Some(flight)
}
