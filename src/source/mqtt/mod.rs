//! MQTT brokers: machines, IoT boxes and PLC gateways that publish their state.
//!
//! Each `[[mqtt]]` broker is an actor like a Modbus device: one task owns the connection
//! (rumqttc's event loop), turns each message into engine events with a [`Mapper`], and sends
//! them over the engine's bounded channel. The pieces:
//!
//! - [`topic`]: patterns with named captures (`plant/{machine}/status`) and name templates;
//! - [`payload`]: JSON paths, plain text, timestamps, conversion to the declared type;
//! - [`sparkplug`]: the Sparkplug B topic namespace and protobuf payload;
//! - [`mapping`]: message → events, with the counters for everything that is not used.
//!
//! ## Session and delivery
//!
//! The client id is fixed and the session persistent (clean session off; with MQTT 5 a session
//! expiry of [`SESSION_EXPIRY_S`]), subscriptions are QoS 1, and messages are acknowledged by
//! hand, *after* their events are in the engine's queue. So what the broker queued while the
//! agent was away arrives when it is back, and a message the agent had received but not yet
//! handed on when it stopped is sent again by the broker. Delivery is at least once.
//!
//! Subscriptions are made on the first connection of the process (the config may have changed
//! since the broker stored the session) and again whenever the broker says it has no session
//! for the agent (`session_present = 0`: it restarted without persistence, or the session
//! expired). A broker that keeps the session keeps the subscriptions, so nothing is sent then.
//!
//! ## When the engine's queue is full
//!
//! The task waits for room: it stops reading from the broker, so TCP flow control holds the
//! broker back and the broker keeps queueing QoS 1 messages for the session (up to its own
//! limit, `max_queued_messages` in Mosquitto). Nothing is dropped by the agent. Unlike a Modbus
//! poll, whose result is stale a second later, an MQTT message is the only copy of its data.
//! If the engine stayed stuck for longer than one and a half keepalives the broker would close
//! the connection; the unacknowledged messages are then delivered again after the reconnection.
//!
//! ## Acknowledgements in rounds
//!
//! While connected, the task takes what the client has already read without waiting (one
//! read from the socket brings many messages), and turns each message into events. When it
//! has caught up (the next poll would wait for the socket), or after [`ROUND_HANDOVER`]
//! messages, the round's events go into the engine's queue together (one wake-up of the
//! engine per round, not per message); when it has caught up, or after [`ROUND_ACKS`]
//! messages or [`ROUND_HANDOVER_BYTES`] of payloads, its messages are acknowledged. With MQTT 3.1.1
//! each PUBACK is written into the connection's write buffer, and the buffer is sent in one
//! write when the task has caught up: one system call per round instead of one per message,
//! and no turn of the event loop per acknowledgement. The order is unchanged (a PUBACK still follows its
//! events into the engine's queue), so nothing the broker considers delivered is only in the
//! agent's memory outside that queue; PUBACKs still in the buffer when a connection fails are
//! simply not sent, and the broker sends those messages again (at least once, as before).
//! rumqttc keeps an MQTT 5 connection private, so with MQTT 5 each acknowledgement is still a
//! request to the event loop with a write of its own.
//!
//! ## Reading in rounds at low rates
//!
//! When the task's wait for the socket was for new messages (not a round trip), it pauses,
//! four fifths of the broker's in-flight window at the last second's rate (the window is
//! learned, starting from `inflight_window`) and at most `linger` (100 ms), so that at low
//! rates messages are read, handed over and acknowledged in rounds instead of one wake-up each
//! (see `Pacer`): it handles what the wait brought, sends the acknowledgements, and pauses
//! before the next wait. When a pause brought messages, but fewer than the broker's window, the
//! next pause follows as soon as they are handled and acknowledged, without first waiting for
//! the socket: at a steady rate each round is then one wake-up for the pause's end and one
//! write, instead of a second wake-up and write for the message that ended the wait (issue 21,
//! seventh round; MQTT 3.1.1 only, where the acknowledgements are written before the pause).
//! Nothing is left unacknowledged during a pause: a broker that queues
//! new messages while any are unacknowledged (Mosquitto 2.0 with `max_queued_messages 0`
//! does) would otherwise hold the round back until the pause ended. (Until issue 21's sixth
//! round a message that came alone was held, unacknowledged, through the pause.) During a
//! pause the socket does not wake the runtime until the round's bytes are there, and a
//! `timerfd` alarm, not a tokio timer, bounds it (see `quiet`). Under load the client's buffer
//! never runs empty and there is no pause.
//!
//! ## Never blocking the event loop
//!
//! rumqttc's event loop is also what sends the client's requests (subscriptions, MQTT 5
//! acknowledgements), through a bounded channel. The task that drives it must never wait for room
//! in that channel, or it waits for itself. So this task only uses the non-blocking `try_`
//! calls, with a channel ([`REQUEST_CAPACITY`]) far larger than the acknowledgements that can
//! be outstanding between two polls (the broker's in-flight window; with MQTT 5 the agent
//! announces [`RECEIVE_MAXIMUM`]). It never publishes. Should a `try_ack` still fail, the
//! message is delivered again on the next connection rather than lost.
//!
//! ## Oversized messages
//!
//! A payload larger than `max_packet_size` is counted as `oversized` and dropped by the
//! [`Mapper`] (and acknowledged, so it is not sent again). To see its topic the client must
//! read it, so the client reads packets up to four times `max_packet_size` (at least 1 MiB).
//! A larger packet, up to [`OVERSIZED_READ_MAX`], is still read, counted and dropped:
//!
//! - with MQTT 5 the client announces [`OVERSIZED_READ_MAX`] as its maximum packet size; the
//!   broker discards larger messages itself (they leave a trace only in the broker's log);
//! - with 3.1.1 nothing can be announced: the connection fails when such a packet arrives, and
//!   the broker sends it again on the next connection. So the next connection reads packets up
//!   to that packet's size (at most [`OVERSIZED_READ_MAX`]), the message is read, counted,
//!   dropped and acknowledged, and the connection after that is back to the usual limit. A
//!   packet larger than [`OVERSIZED_READ_MAX`] cannot be skipped under 3.1.1: it is counted
//!   (topic `(unread)`) at every attempt, the back-off grows (a connection counts as good only
//!   once it has delivered a message or lasted a minute), and the error says to set the
//!   broker's `message_size_limit` or use MQTT 5.
//!
//! Reading a large packet costs its size in memory for as long as it is read.

pub mod check;
pub mod config;
pub mod mapping;
pub mod payload;
mod quiet;
pub mod sparkplug;
pub mod topic;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::FutureExt;
use jiff::Timestamp;
use rumqttc::v5::mqttbytes::v5 as v5b;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

pub use self::config::{MqttBroker, MqttProtocol};
use crate::common::mqtt::Backoff;
pub use crate::common::mqtt::{MqttError, RECEIVE_MAXIMUM, SESSION_EXPIRY_S};
use crate::config::Site;
use crate::metrics::Metrics;
use crate::model::SourceEvent;
use crate::shutdown::Shutdown;
pub use mapping::Mapper;

/// Requests (acknowledgements, subscriptions) waiting for the event loop to send them.
pub const REQUEST_CAPACITY: usize = crate::queue::MQTT_SOURCE_REQUESTS.capacity;
/// The smallest packet ceiling of the client (see "Oversized messages").
const MIN_PACKET_CEILING: usize = 1 << 20;
/// The largest packet the client reads to count and drop it (see "Oversized messages").
pub const OVERSIZED_READ_MAX: usize = 64 << 20;
/// A connection that lasted this long counts as good: the back-off starts afresh.
const GOOD_CONNECTION: Duration = Duration::from_secs(60);
/// The longest a round's acknowledgements may take to be written to the socket.
const ACK_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// The id a broker's client uses when the config names none. It must be stable across
/// restarts (the broker finds the session by it) and unique among the broker's clients.
pub fn client_id(broker: &MqttBroker, site: &Site) -> String {
    broker
        .connection
        .client_id
        .clone()
        .unwrap_or_else(|| format!("shopfloor-{}-{}", site.enterprise, broker.id))
}

/// The packet size the client reads at most (see "Oversized messages").
pub fn packet_ceiling(max_packet_size: u32) -> usize {
    (max_packet_size as usize)
        .saturating_mul(4)
        .max(MIN_PACKET_CEILING)
        .min(u32::MAX as usize)
}

enum Options {
    V4(Box<rumqttc::MqttOptions>),
    V5(Box<rumqttc::v5::MqttOptions>),
}

/// A broker ready to run: options, topic map, subscriptions.
pub struct Broker {
    id: Arc<str>,
    options: Options,
    mapper: Mapper,
    filters: Vec<String>,
    backoff: Backoff,
    ceiling: usize,
    pacer: Pacer,
    /// The broker's port, to tell the connection's socket (see `quiet`).
    port: u16,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("id", &self.id)
            .field("filters", &self.filters)
            .finish_non_exhaustive()
    }
}

/// Builds a broker's client options (reading the password and the TLS files now, so a missing
/// file stops the start with a clear message) and its topic map. `machines` and `meters` are
/// the register.
pub fn prepare(
    cfg: &MqttBroker,
    site: &Site,
    machines: HashSet<Arc<str>>,
    meters: HashSet<Arc<str>>,
    metrics: Metrics,
) -> Result<Broker, MqttError> {
    let config_error = |message: String| MqttError::Config {
        broker: cfg.id.clone(),
        message,
    };
    let id = client_id(cfg, site);
    let ceiling = packet_ceiling(cfg.max_packet_size());
    let options = match cfg.protocol {
        MqttProtocol::V311 => {
            let mut o = cfg.connection.options_v311(&cfg.id, &id)?;
            o.set_clean_session(cfg.clean_session)
                .set_manual_acks(true)
                .set_max_packet_size(ceiling, ceiling);
            Options::V4(Box::new(o))
        }
        MqttProtocol::V5 => {
            let mut o = cfg.connection.options_v5(&cfg.id, &id)?;
            o.set_clean_start(cfg.clean_session)
                .set_manual_acks(true)
                .set_max_packet_size(Some(OVERSIZED_READ_MAX.max(ceiling) as u32))
                .set_receive_maximum(Some(RECEIVE_MAXIMUM));
            if !cfg.clean_session {
                o.set_session_expiry_interval(Some(SESSION_EXPIRY_S));
            }
            Options::V5(Box::new(o))
        }
    };
    let mapper = Mapper::new(cfg, machines, meters, metrics).map_err(config_error)?;
    let filters = mapper.filters();
    Ok(Broker {
        id: Arc::from(cfg.id.as_str()),
        options,
        mapper,
        filters,
        backoff: cfg.connection.backoff(),
        ceiling,
        pacer: Pacer::new(cfg.inflight_window, cfg.linger),
        port: crate::common::mqtt::host_port(&cfg.connection.address).map_or(0, |h| h.1),
    })
}

/// A received message of either protocol version.
enum Message {
    V4(rumqttc::Publish),
    V5(v5b::Publish),
}

impl Message {
    fn topic(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Message::V4(p) => std::borrow::Cow::Borrowed(&p.topic),
            Message::V5(p) => String::from_utf8_lossy(&p.topic),
        }
    }
    fn payload(&self) -> &[u8] {
        match self {
            Message::V4(p) => &p.payload,
            Message::V5(p) => &p.payload,
        }
    }
    /// About the message's size on the wire: payload, topic, and the 7 bytes a QoS 1
    /// PUBLISH of up to 16 KB adds (fixed header, remaining length, topic length, packet id;
    /// MQTT 5's properties are not counted). It sizes the mark that ends a pause.
    fn wire_bytes(&self) -> usize {
        let topic = match self {
            Message::V4(p) => p.topic.len(),
            Message::V5(p) => p.topic.len(),
        };
        self.payload().len() + topic + 7
    }
}

/// What one turn of the event loop produced. Moved once per message and never stored, so its
/// size does not matter and boxing the message would only add an allocation per message.
#[allow(clippy::large_enum_variant)]
enum Polled {
    Connected { session_present: bool },
    Message(Message),
    SubAck { refused: usize },
    Other,
}

/// rumqttc's client and event loop, for either protocol version.
enum Session {
    V4(rumqttc::AsyncClient, Box<rumqttc::EventLoop>),
    V5(rumqttc::v5::AsyncClient, Box<rumqttc::v5::EventLoop>),
}

impl Session {
    fn new(options: Options) -> Session {
        // Only `try_` requests: see "Never blocking the event loop".
        const _: () =
            crate::queue::MQTT_SOURCE_REQUESTS.sent_as(crate::queue::WhenFull::DropNewest);
        match options {
            Options::V4(o) => {
                let (c, e) = rumqttc::AsyncClient::new(*o, REQUEST_CAPACITY);
                Session::V4(c, Box::new(e))
            }
            Options::V5(o) => {
                let (c, e) = rumqttc::v5::AsyncClient::new(*o, REQUEST_CAPACITY);
                Session::V5(c, Box::new(e))
            }
        }
    }

    /// One turn of the event loop. An error gives the reason and, for a 3.1.1 packet over the
    /// read limit, its size.
    async fn poll(&mut self, ceiling: usize) -> Result<Polled, (String, Option<usize>)> {
        use rumqttc::{Event, Packet};
        match self {
            Session::V4(_, events) => match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(c))) => Ok(Polled::Connected {
                    session_present: c.session_present,
                }),
                Ok(Event::Incoming(Packet::Publish(p))) => Ok(Polled::Message(Message::V4(p))),
                Ok(Event::Incoming(Packet::SubAck(s))) => Ok(Polled::SubAck {
                    refused: s
                        .return_codes
                        .iter()
                        .filter(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                        .count(),
                }),
                Ok(_) => Ok(Polled::Other),
                Err(e) => Err((describe_v4(&e, ceiling), too_large(&e))),
            },
            Session::V5(_, events) => match events.poll().await {
                Ok(rumqttc::v5::Event::Incoming(v5b::Packet::ConnAck(c))) => {
                    Ok(Polled::Connected {
                        session_present: c.session_present,
                    })
                }
                Ok(rumqttc::v5::Event::Incoming(v5b::Packet::Publish(p))) => {
                    Ok(Polled::Message(Message::V5(p)))
                }
                Ok(rumqttc::v5::Event::Incoming(v5b::Packet::SubAck(s))) => Ok(Polled::SubAck {
                    refused: s
                        .return_codes
                        .iter()
                        .filter(|c| !matches!(c, v5b::SubscribeReasonCode::Success(_)))
                        .count(),
                }),
                Ok(_) => Ok(Polled::Other),
                Err(rumqttc::v5::ConnectionError::ConnectionRefused(code)) => Err((
                    format!(
                        "the broker refused the connection ({code:?}): check username, password and client id"
                    ),
                    None,
                )),
                Err(e) => Err((e.to_string(), None)),
            },
        }
    }

    /// Queues the subscriptions without waiting; false when the request channel is full.
    fn try_subscribe(&self, filters: &[String]) -> bool {
        match self {
            Session::V4(c, _) => c
                .try_subscribe_many(
                    filters.iter().map(|f| {
                        rumqttc::SubscribeFilter::new(f.clone(), rumqttc::QoS::AtLeastOnce)
                    }),
                )
                .is_ok(),
            Session::V5(c, _) => c
                .try_subscribe_many(
                    filters.iter().map(|f| {
                        v5b::Filter::new(f.clone(), rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
                    }),
                )
                .is_ok(),
        }
    }

    /// Acknowledges a message (see "Acknowledgements in rounds"). 3.1.1: a QoS 1 message's
    /// PUBACK is written into the connection's write buffer, where [`Session::flush_acks`] (or
    /// the event loop's next write) sends it; MQTT 5 (whose connection rumqttc keeps private)
    /// and anything else: a request to the event loop. False when it could not be queued.
    async fn ack(&mut self, message: &Message) -> bool {
        match (self, message) {
            (Session::V4(_, events), Message::V4(p)) if p.qos == rumqttc::QoS::AtLeastOnce => {
                match events.network.as_mut() {
                    Some(network) => network
                        .write(rumqttc::Packet::PubAck(rumqttc::PubAck::new(p.pkid)))
                        .await
                        .is_ok(),
                    None => false,
                }
            }
            (Session::V4(c, _), Message::V4(p)) => c.try_ack(p).is_ok(),
            (Session::V5(c, _), Message::V5(p)) => c.try_ack(p).is_ok(),
            _ => false,
        }
    }

    /// Sends the acknowledgements written since the last flush, in one write. False when the
    /// connection failed (the broker then sends those messages again).
    async fn flush_acks(&mut self) -> bool {
        match self {
            Session::V4(_, events) => match events.network.as_mut() {
                Some(network) => matches!(
                    tokio::time::timeout(ACK_FLUSH_TIMEOUT, network.flush()).await,
                    Ok(Ok(()))
                ),
                None => false,
            },
            Session::V5(..) => true,
        }
    }

    /// Whether the round's acknowledgements are on their way to the broker once
    /// [`Session::flush_acks`] returned: with 3.1.1 they are written to the socket. With MQTT 5
    /// they are requests the event loop sends only when it is next polled, so a pause right
    /// after them would hold them back, and with them the broker's next messages.
    fn acks_sent_before_pause(&self) -> bool {
        matches!(self, Session::V4(..))
    }

    /// 3.1.1: the largest packet the next connection reads (MQTT 5 announces its limit).
    fn set_read_limit(&mut self, limit: usize, outgoing: usize) {
        if let Session::V4(_, events) = self {
            events.mqtt_options.set_max_packet_size(limit, outgoing);
        }
    }

    fn try_disconnect(&self) {
        let _ = match self {
            Session::V4(c, _) => c.try_disconnect().is_ok(),
            Session::V5(c, _) => c.try_disconnect().is_ok(),
        };
    }
}

/// The size of a 3.1.1 packet the client refused to read.
fn too_large(e: &rumqttc::ConnectionError) -> Option<usize> {
    match e {
        rumqttc::ConnectionError::MqttState(rumqttc::StateError::Deserialization(
            rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(size),
        )) => Some(*size),
        _ => None,
    }
}

fn describe_v4(e: &rumqttc::ConnectionError, ceiling: usize) -> String {
    use rumqttc::{ConnectionError, StateError};
    match e {
        ConnectionError::ConnectionRefused(code) => format!(
            "the broker refused the connection ({code:?}): check username, password and client id"
        ),
        ConnectionError::MqttState(StateError::Deserialization(
            rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(size),
        )) if *size <= OVERSIZED_READ_MAX => format!(
            "the broker sent a {size}-byte packet, more than the {ceiling} bytes the client reads: \
             the next connection reads it to count and drop it"
        ),
        ConnectionError::MqttState(StateError::Deserialization(
            rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(size),
        )) => format!(
            "the broker sent a {size}-byte packet, more than the {OVERSIZED_READ_MAX} bytes the \
             client reads at most; with MQTT 3.1.1 it sends it again on every connection: set the \
             broker's message_size_limit below {ceiling}, or use protocol = \"5\""
        ),
        other => other.to_string(),
    }
}

/// Runs one broker until shutdown. See the module documentation.
pub async fn run(
    broker: Broker,
    events: mpsc::Sender<SourceEvent>,
    metrics: Metrics,
    mut shutdown: Shutdown,
) {
    let Broker {
        id,
        options,
        mut mapper,
        filters,
        mut backoff,
        ceiling,
        mut pacer,
        port,
    } = broker;
    let span = tracing::info_span!("mqtt", broker = %id);
    let labels = [("broker", &*id)];
    let connected = metrics.gauge(
        "shopfloor_mqtt_connected",
        "1 while the agent is connected to the MQTT broker, 0 while it is not.",
        &labels,
    );
    let connections = metrics.counter(
        "shopfloor_mqtt_connections_total",
        "Connections made to the MQTT broker, the first one and every reconnection.",
        &labels,
    );
    let connect_failures = metrics.counter(
        "shopfloor_mqtt_connection_errors_total",
        "Failed connection attempts and lost connections to the MQTT broker.",
        &labels,
    );
    let ack_failures = metrics.counter(
        "shopfloor_mqtt_ack_failures_total",
        "Acknowledgements that could not be queued; the broker sends those messages again.",
        &labels,
    );
    let window = metrics.gauge(
        "shopfloor_mqtt_inflight_window",
        "The most messages the broker has sent between two rounds of acknowledgements (its in-flight window, or more with brokers that release their queue at once), at least inflight_window; rounds at low rates aim at four fifths of it.",
        &labels,
    );
    window.store(pacer.window as u64, Ordering::Relaxed);
    let mut session = Session::new(options);
    // 3.1.1 acknowledgements written but not yet sent (see "Acknowledgements in rounds").
    let mut unflushed: u64 = 0;
    let mut subscribed_once = false;
    let mut resubscribe = false;
    let mut up: Option<bool> = None;
    let mut out = Vec::new();
    // Messages of the current round whose events are in `out`, not yet in the engine's queue
    // and not acknowledged (see "Acknowledgements in rounds").
    let mut held: Vec<Message> = Vec::new();
    let mut held_bytes = 0;
    // Messages of the round whose events are in `out`, not yet in the engine's queue.
    let mut unsent = 0;
    // How long the last poll that could not be served from the buffer waited for the socket.
    let mut last_wait = Duration::ZERO;
    // Messages read since the last pause, while the task has not waited for the socket since.
    let mut since_pause: Option<usize> = None;
    // Since when the current connection is up, and whether it has delivered a message: only a
    // connection that did either, or lasted [`GOOD_CONNECTION`], resets the back-off, so a
    // connection that fails at once every time backs off like a refused one.
    let mut connected_at: Option<std::time::Instant> = None;
    let mut delivered = false;
    // 3.1.1: the read limit was raised for this connection to read one oversized packet.
    let mut raised = false;
    // The connection's socket, when it could be told apart (see `quiet`), and the sockets to
    // the broker's port before the connection attempt.
    let mut quiet: Option<quiet::Quiet> = None;
    let mut sockets_before = quiet::Sockets::default();
    // What bounds a pause that ends with its bytes (see `quiet`).
    let alarm = quiet::Alarm::new();
    'run: loop {
        // While connected, what the client has buffered is taken without waiting. Only when the
        // task has caught up (the next poll would wait for the socket) are the round's
        // acknowledgements sent, in one write, and the task waits. Connecting is always
        // awaited: a connection attempt must not be started and dropped.
        let ready = match connected_at {
            Some(_) if !shutdown.is_triggered() => session.poll(ceiling).now_or_never(),
            Some(_) => break,
            None => None,
        };
        if !matches!(ready, Some(Ok(Polled::Message(_)))) {
            // The round so far: its events into the engine's queue, then its acknowledgements
            // (none when the connection is gone: the broker sends those messages again).
            if !send_all(&events, &mut out, &mut shutdown).await {
                break 'run;
            }
            unsent = 0;
            if matches!(ready, Some(Err(_))) {
                held.clear();
            }
            if !held.is_empty() {
                pacer.acked(held.len(), &window);
            }
            unflushed += ack_all(&mut session, &mut held, &ack_failures, &span).await;
            held_bytes = 0;
        }
        let polled = match ready {
            Some(polled) => polled,
            None => {
                if unflushed > 0 {
                    if !session.flush_acks().await {
                        ack_failures.fetch_add(unflushed, Ordering::Relaxed);
                        debug!(parent: &span, unflushed, "acknowledgements not sent; the broker will send the messages again");
                    }
                    unflushed = 0;
                }
                // The last wait was for new messages, not a round trip, or the last pause
                // brought a round the broker did not hold back: a round starts (see `Pacer`)
                // before waiting again.
                let round_again = since_pause.is_some_and(|n| pacer.straight_again(n))
                    && session.acks_sent_before_pause();
                let pause = if last_wait >= WAITED || round_again {
                    pacer.pause()
                } else {
                    None
                };
                since_pause = pause.map(|_| 0);
                if connected_at.is_none() {
                    sockets_before = quiet::Sockets::to_port(port);
                }
                let polled_at = std::time::Instant::now();
                // What a pause that ended with its bytes brought; otherwise the task waits.
                let brought = match (pause, quiet.as_mut(), alarm.as_ref()) {
                    // The pause ends with the round's bytes, or the alarm (see `quiet`).
                    (Some(pause), Some(q), Some(alarm)) if alarm.set(pacer.pause_bound(pause)) => {
                        q.hold_until(pacer.round_bytes(pause));
                        let brought = tokio::select! {
                            p = session.poll(ceiling) => Some(p),
                            _ = alarm.rung() => None,
                            _ = shutdown.wait() => {
                                q.release();
                                break;
                            }
                        };
                        q.release();
                        alarm.cancel();
                        brought
                    }
                    (pause, q, _) => {
                        if let Some(pause) = pause
                            && !pause_quietly(pause, q, &mut shutdown).await
                        {
                            break 'run;
                        }
                        None
                    }
                };
                let polled = match brought {
                    Some(p) => p,
                    None => tokio::select! {
                        p = session.poll(ceiling) => p,
                        _ = shutdown.wait() => break,
                    },
                };
                last_wait = polled_at.elapsed();

                polled
            }
        };
        if resubscribe && session.try_subscribe(&filters) {
            resubscribe = false;
        }
        let now = Timestamp::now();
        match polled {
            Ok(Polled::Connected { session_present }) => {
                connected_at = Some(std::time::Instant::now());
                delivered = false;
                quiet = quiet::Sockets::to_port(port).new_since(&sockets_before);
                debug!(parent: &span, quiet = quiet.is_some(), "connected; pauses quiet when the socket is known");
                if raised {
                    // This connection reads with the raised limit; the next one is back to the
                    // usual limit.
                    session.set_read_limit(ceiling, ceiling);
                    raised = false;
                }
                connections.fetch_add(1, Ordering::Relaxed);
                connected.store(1, Ordering::Relaxed);
                if !session_present || !subscribed_once {
                    info!(parent: &span, session_present, ?filters, "connected; subscribing");
                    resubscribe = !session.try_subscribe(&filters);
                    subscribed_once = true;
                } else {
                    info!(parent: &span, "connected; the broker kept the session and its subscriptions");
                }
                if up != Some(true) {
                    up = Some(true);
                    out.push(SourceEvent::DeviceUp {
                        device: id.clone(),
                        at: now,
                    });
                }
            }
            Ok(Polled::Message(message)) => {
                if !delivered {
                    delivered = true;
                    backoff.reset();
                }
                mapper.handle(&message.topic(), message.payload(), now, &mut out);
                held_bytes += message.payload().len();
                pacer.after_message(message.wire_bytes());
                held.push(message);
                if let Some(n) = since_pause.as_mut() {
                    *n += 1;
                }
                unsent += 1;
                let ack_now = held.len() >= ROUND_ACKS || held_bytes >= ROUND_HANDOVER_BYTES;
                if unsent >= ROUND_HANDOVER || ack_now {
                    if !send_all(&events, &mut out, &mut shutdown).await {
                        break 'run;
                    }
                    unsent = 0;
                }
                if ack_now {
                    pacer.acked(held.len(), &window);
                    unflushed += ack_all(&mut session, &mut held, &ack_failures, &span).await;
                    held_bytes = 0;
                }
                continue;
            }
            Ok(Polled::SubAck { refused }) if refused > 0 => warn!(
                parent: &span,
                refused,
                "the broker refused subscriptions: check its ACL for this client and the topic patterns"
            ),
            Ok(_) => {}
            Err((reason, too_large)) => {
                // Acknowledgements still in the lost connection's buffer: the broker sends
                // those messages again.
                unflushed = 0;
                quiet = None;
                since_pause = None;
                connected.store(0, Ordering::Relaxed);
                connect_failures.fetch_add(1, Ordering::Relaxed);
                if connected_at
                    .take()
                    .is_some_and(|t| t.elapsed() >= GOOD_CONNECTION)
                {
                    backoff.reset();
                }
                let wait = match too_large {
                    // 3.1.1: read it on the next connection, at once (see "Oversized messages").
                    Some(size) if size <= OVERSIZED_READ_MAX => {
                        session.set_read_limit(size, ceiling);
                        raised = true;
                        Duration::ZERO
                    }
                    Some(size) => {
                        mapper.oversized_unread(size, OVERSIZED_READ_MAX);
                        backoff.next_wait()
                    }
                    None => backoff.next_wait(),
                };
                if up != Some(false) {
                    warn!(parent: &span, %reason, retry_in = ?wait, "broker connection lost");
                    out.push(SourceEvent::DeviceDown {
                        device: id.clone(),
                        at: now,
                        reason: reason.clone(),
                    });
                    up = Some(false);
                } else {
                    debug!(parent: &span, %reason, retry_in = ?wait, "broker still unreachable");
                }
                if !send_all(&events, &mut out, &mut shutdown).await {
                    break 'run;
                }
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.wait() => break 'run,
                }
                continue;
            }
        }
        if !send_all(&events, &mut out, &mut shutdown).await {
            break;
        }
    }
    // A clean DISCONNECT keeps a persistent session (and tells the broker not to wait for us).
    connected.store(0, Ordering::Relaxed);
    if unflushed > 0 {
        let _ = session.flush_acks().await;
    }
    session.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        while session.poll(ceiling).await.is_ok() {}
    })
    .await;
    debug!(parent: &span, "stopped");
}

/// Reading in rounds at low rates (issue 21: the cost per message was 5 to 10 times higher at
/// 1000 messages a second than at 50 000). At a low rate every message used to arrive on its
/// own: a wake-up of a runtime worker from `epoll`, one read, one hand-over to the engine (which
/// woke the other worker), one write for its acknowledgement, and back to sleep, each costing
/// more than the message's own decoding. So when the task has read everything (the client's
/// buffer is empty) and its last wait for the socket was a real one (at least [`WAITED`]: it
/// waited for new messages, not for a round trip through a broker holding messages back behind
/// its in-flight window), it pauses after sending the acknowledgements of what it read (see
/// the module documentation), long enough for about
/// [`ROUND_SHARE`] of the broker's in-flight window at the rate of the last second, but at
/// most `linger` (default 100 ms); the broker holds them meanwhile (in TCP, within its
/// in-flight window) and the next polls find them buffered, read in one go, with one write for
/// their acknowledgements. During the pause the socket is kept quiet until the round's bytes
/// are there (see `quiet`). Under load the buffer never runs empty, so there is no pause and
/// nothing changes; below [`ROUND_MIN`]
/// a pause is not worth its timer. A message waits at most `linger` longer, against the
/// engine's `BATCH_LINGER` of a second; the broker keeps it until it is acknowledged, so a
/// crash meanwhile loses nothing.
///
/// ## The broker's window, learned
///
/// MQTT 3.1.1 gives no way to ask a broker how many unacknowledged messages it sends before it
/// waits (Mosquitto's `max_inflight_messages`, 20 by default; EMQX 32; some brokers 1000 or no
/// limit), and a round aimed past it waits for messages the broker holds back: each round then
/// brings one window, the rate measured falls, the pauses grow, and delivery collapses towards
/// one window per `linger` while the broker's queue grows (seen in the third round with a
/// target that doubled whenever a round brought what it waited for). So the window is never
/// guessed upwards, only *shown*: the messages read between two rounds of acknowledgements
/// were all unacknowledged at once (their acknowledgements were not even written when the
/// broker sent the last of them, whenever the client's own writes flush the buffer), so the
/// broker's window is at least that many. The estimate
/// starts at `inflight_window` (default 20) and rises to the largest such round seen.
///
/// Some brokers let more through than their window says: Mosquitto 2.0 sends its whole queue
/// for the client as soon as acknowledgements come (measured: 20 messages, then 180 at once
/// after their 20 acknowledgements), so what is shown is what the broker delivers between two
/// rounds of acknowledgements, which is what sizing a round needs. Whatever is shown, a pause
/// never lets more than [`PAUSE_MESSAGES_MAX`] messages gather at the broker, far inside the
/// queues brokers keep per client by default.
///
/// To give the broker the chance to show more, after [`GROW_AFTER`] rounds that came near
/// their target (four fifths of it: arrivals are never quite regular), one round pauses for [`PROBE`] times as long (as long as the rate,
/// not `linger`, sizes the pause). If the broker has room, that round brings more than the
/// estimate and raises it; if not, the broker holds the rest back until the round's
/// acknowledgements and sends it at once: one round trip, and the estimate stays. A broker
/// window smaller than `inflight_window` is still the config's to avoid.
struct Pacer {
    /// Messages counted since `window_start`, and the rate of the last full window; the
    /// same for their bytes on the wire.
    window_start: std::time::Instant,
    in_window: u32,
    per_second: f64,
    bytes_in_window: u64,
    bytes_per_second: f64,
    /// The broker's in-flight window as far as it has shown it (at least `inflight_window`).
    window: f64,
    /// The longest pause (`linger`, 100 ms by default).
    round_max: Duration,
    /// A pause came before the messages not yet acknowledged: whether the rate (not
    /// `linger`) sized it and it was not a probe.
    paused: Option<bool>,
    /// Rounds since the last probe that came near their target (four fifths of it), with
    /// pauses sized by the rate.
    full: u32,
}

/// The share of the broker's in-flight window (as shown, see `Pacer`) a round aims to collect.
const ROUND_SHARE: f64 = 0.8;
/// Rounds near their target before a probe.
const GROW_AFTER: u32 = 8;
/// How much longer a probe pauses than a round.
const PROBE: f64 = 2.0;
/// The most messages a pause lets gather at the broker, at the measured rate: half of the
/// queue Mosquitto and EMQX keep per client by default (1000 messages beyond the in-flight
/// window; a broker drops what its queue cannot hold).
const PAUSE_MESSAGES_MAX: f64 = 500.0;
/// Messages handled before their events go to the engine's queue together, when the client's
/// buffer does not run empty first: one hand-over (and one wake-up of the engine) per round
/// rather than per message, bounded for a stream that never pauses. The engine takes up to
/// this many queued events in one turn.
const ROUND_HANDOVER: usize = 64;
/// Messages handled before they are acknowledged (after their events), when the client's
/// buffer does not run empty first. Larger than [`ROUND_HANDOVER`] so that a round can show
/// a broker window of up to this many (see `Pacer`); what bounds it is the memory of the
/// held messages.
const ROUND_ACKS: usize = 1024;
/// ... or when the held messages' payloads reach this many bytes.
const ROUND_HANDOVER_BYTES: usize = 1 << 20;
/// Pauses shorter than this are not taken.
const ROUND_MIN: Duration = Duration::from_millis(1);
/// A poll that took this long waited for the socket: the messages had all been read, and the
/// next one starts a round. A shorter wait is a round trip through a broker that holds more
/// messages back behind its in-flight window; pausing then would only slow a backlog down.
const WAITED: Duration = Duration::from_micros(200);

impl Pacer {
    fn new(inflight_window: u16, linger: Duration) -> Self {
        Pacer {
            window_start: std::time::Instant::now(),
            in_window: 0,
            per_second: 0.0,
            bytes_in_window: 0,
            bytes_per_second: 0.0,
            window: f64::from(inflight_window.max(2)),
            round_max: linger,
            paused: None,
            full: 0,
        }
    }

    /// The messages a round aims at.
    fn round_messages(&self) -> f64 {
        (self.window * ROUND_SHARE).floor().max(1.0)
    }

    /// Counts a message of `bytes` on the wire.
    fn after_message(&mut self, bytes: usize) {
        self.in_window += 1;
        self.bytes_in_window += bytes as u64;
    }

    /// The bytes a pause of `pause` is expected to bring at the last second's rate: the mark
    /// that ends it (see `quiet`, "The round's bytes end the pause").
    fn round_bytes(&self, pause: Duration) -> usize {
        (pause.as_secs_f64() * self.bytes_per_second) as usize
    }

    /// How long a pause of `pause` that ends with its bytes may last: half as long again,
    /// for arrivals that are never quite regular, but at most `linger`.
    fn pause_bound(&self, pause: Duration) -> Duration {
        pause.mul_f64(1.5).min(self.round_max).max(pause)
    }

    /// The pause to take before waiting for the socket, if any; taking it starts a round.
    fn pause(&mut self) -> Option<Duration> {
        let window = self.window_start.elapsed();
        if window >= Duration::from_secs(1) {
            self.per_second = f64::from(self.in_window) / window.as_secs_f64();
            self.bytes_per_second = self.bytes_in_window as f64 / window.as_secs_f64();
            self.window_start = std::time::Instant::now();
            self.in_window = 0;
            self.bytes_in_window = 0;
        }
        if self.per_second <= 0.0 {
            return None;
        }
        let by_rate = Duration::from_secs_f64(self.round_messages() / self.per_second);
        let probe = self.full >= GROW_AFTER;
        // However large the window shown, a pause never lets more than [`PAUSE_MESSAGES_MAX`]
        // gather at the broker.
        let most = Duration::from_secs_f64(PAUSE_MESSAGES_MAX / self.per_second);
        let pause = if probe {
            self.full = 0;
            by_rate.mul_f64(PROBE)
        } else {
            by_rate
        }
        .min(self.round_max)
        .min(most);
        (pause >= ROUND_MIN).then(|| {
            self.paused = Some(!probe && by_rate < self.round_max);
            pause
        })
    }

    /// Whether a pause that brought `messages` (and nothing more waits: the task has read
    /// everything) is followed by the next pause at once, without waiting for the socket
    /// first. Yes when it brought some, but fewer than the broker's window: the broker did not
    /// hold any back, so the stream goes on at about the rate measured. Not when it brought
    /// nothing (the stream paused or stopped: the task waits for the next message, as after
    /// any wait) or a whole window (the broker may be holding more back: the task waits, and a
    /// short wait, a round trip, means a backlog to read at once).
    fn straight_again(&self, messages: usize) -> bool {
        messages > 0 && (messages as f64) < self.window
    }

    /// The `messages` read since the last acknowledgements are acknowledged: the broker had
    /// let them all through unacknowledged, so its window is at least that many.
    /// `shown` is the gauge of the window.
    fn acked(&mut self, messages: usize, shown: &std::sync::atomic::AtomicU64) {
        let messages = messages as f64;
        self.window = self.window.max(messages);
        shown.store(self.window as u64, Ordering::Relaxed);
        if self.paused.take() == Some(true) && messages >= self.round_messages() * ROUND_SHARE {
            self.full += 1;
        }
    }
}

/// Pauses for `pause` with the connection's socket quiet (see `quiet`); false when the agent
/// is shutting down.
async fn pause_quietly(
    pause: Duration,
    mut quiet: Option<&mut quiet::Quiet>,
    shutdown: &mut Shutdown,
) -> bool {
    if let Some(q) = quiet.as_deref_mut() {
        q.hold();
    }
    let slept = tokio::select! {
        _ = tokio::time::sleep(pause) => true,
        _ = shutdown.wait() => false,
    };
    if let Some(q) = quiet {
        // Lowering the mark makes the kernel report what arrived during the pause; the runtime
        // learns it when it next polls `epoll`, which it does at once when the task's next
        // read finds the socket not yet reported readable and waits. (A `yield_now` here made
        // the runtime also wake its other worker, for nothing: issue 21, seventh round.)
        q.release();
    }
    slept
}

/// Acknowledges the held messages (their events are in the engine's queue); how many
/// acknowledgements were written.
async fn ack_all(
    session: &mut Session,
    held: &mut Vec<Message>,
    ack_failures: &std::sync::atomic::AtomicU64,
    span: &tracing::Span,
) -> u64 {
    let mut written = 0;
    for message in held.drain(..) {
        if session.ack(&message).await {
            written += 1;
        } else {
            ack_failures.fetch_add(1, Ordering::Relaxed);
            debug!(parent: span, "acknowledgement not queued; the broker will send the message again");
        }
    }
    written
}

/// Sends the events in order, waiting for room (see "When the engine's queue is full"). False
/// when the agent is shutting down or the engine is gone.
async fn send_all(
    events: &mpsc::Sender<SourceEvent>,
    out: &mut Vec<SourceEvent>,
    shutdown: &mut Shutdown,
) -> bool {
    const _: () = crate::queue::EVENTS_FROM_MQTT.sent_as(crate::queue::WhenFull::Block);
    for event in out.drain(..) {
        tokio::select! {
            sent = events.send(event) => if sent.is_err() { return false },
            _ = shutdown.wait() => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pacer that has measured `rate` messages a second, told the broker's window is
    /// `window`, with `linger` as given.
    fn pacer(window: u16, linger_ms: u64, rate: f64) -> Pacer {
        let mut p = Pacer::new(window, Duration::from_millis(linger_ms));
        p.per_second = rate;
        p
    }

    /// One round: a pause, then as many messages as the broker lets through of those the
    /// pause waits for at `rate` (at most `broker_window`), and their acknowledgements.
    /// Returns the pause.
    fn round(p: &mut Pacer, rate: f64, broker_window: u32) -> Duration {
        let pause = p.pause().expect("a pause");
        let arrived = (pause.as_secs_f64() * rate).round() as u32;
        let messages = arrived.min(broker_window);
        for _ in 0..messages {
            p.after_message(200);
        }
        p.acked(messages as usize, &Default::default());
        pause
    }

    #[test]
    fn a_round_aims_at_four_fifths_of_the_window_at_the_measured_rate() {
        // 0.8 × 20 = 16 messages at 1000/s: 16 ms, under the 100 ms linger.
        let mut p = pacer(20, 100, 1000.0);
        assert_eq!(p.pause(), Some(Duration::from_millis(16)));
        // At 100/s the same 16 messages would take 160 ms: the linger bounds it.
        let mut p = pacer(20, 100, 100.0);
        assert_eq!(p.pause(), Some(Duration::from_millis(100)));
    }

    #[test]
    fn the_window_rises_to_what_the_broker_lets_through_and_never_past_it() {
        // A broker of 1000 at 1000 messages a second, linger 100 ms. Rounds of 16 (16 ms);
        // after eight full ones a probe waits twice as long, 32 ms, and brings 32: the window
        // is 32 (target 25: 25 ms).
        let mut p = pacer(20, 100, 1000.0);
        for _ in 0..8 {
            assert_eq!(round(&mut p, 1000.0, 1000), Duration::from_millis(16));
        }
        assert_eq!(p.window, 20.0);
        assert_eq!(round(&mut p, 1000.0, 1000), Duration::from_millis(32));
        assert_eq!(p.window, 32.0);
        assert_eq!(round(&mut p, 1000.0, 1000), Duration::from_millis(25));
        // Each probe waits twice a round and shows twice the target: 32 → 50 (2 × 25) → 80
        // (2 × 40) → 100 (2 × 64 = 128 ms, capped at the 100 ms linger, brings 100). From
        // there a probe brings the linger's 100 again, and rounds aim at 0.8 × 100 = 80: 80 ms.
        for _ in 0..100 {
            round(&mut p, 1000.0, 1000);
        }
        assert_eq!(p.window, 100.0);
        assert_eq!(p.pause(), Some(Duration::from_millis(80)));

        // Mosquitto's default window: probes bring 20 and the window stays 20.
        let mut p = pacer(20, 100, 1000.0);
        for _ in 0..100 {
            round(&mut p, 1000.0, 20);
        }
        assert_eq!(p.window, 20.0);
    }

    #[test]
    fn a_pause_is_followed_by_the_next_only_when_it_brought_some_but_not_a_window() {
        // The window as shown: 20 (the default inflight_window).
        let p = pacer(20, 100, 1000.0);
        // 16 of a window of 20: the broker held nothing back, the next pause follows at once.
        assert!(p.straight_again(16));
        assert!(p.straight_again(1));
        // Nothing: the stream paused; the task waits for the next message first.
        assert!(!p.straight_again(0));
        // A whole window: the broker may hold more; the task waits (a round trip).
        assert!(!p.straight_again(20));
        assert!(!p.straight_again(25));
    }

    #[test]
    fn a_pause_ends_with_its_bytes_or_half_as_long_again_at_most_the_linger() {
        // 1000 messages of 200 bytes a second: a 16 ms pause brings 16 × 200 = 3200 bytes,
        // and lasts 16 × 1.5 = 24 ms at most.
        let mut p = pacer(20, 100, 1000.0);
        p.bytes_per_second = 200_000.0;
        let pause = p.pause().unwrap();
        assert_eq!(pause, Duration::from_millis(16));
        assert_eq!(p.round_bytes(pause), 3200);
        assert_eq!(p.pause_bound(pause), Duration::from_millis(24));
        // An 80 ms round would last 120 ms at most: the linger's 100 ms bounds it; a pause as
        // long as the linger is not made shorter.
        assert_eq!(
            p.pause_bound(Duration::from_millis(80)),
            Duration::from_millis(100)
        );
        assert_eq!(
            p.pause_bound(Duration::from_millis(100)),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn a_pause_never_lets_more_than_500_messages_gather() {
        // A window of 2000 shown at 10,000 messages a second: the target of 1600 would take
        // 160 ms (capped at the 100 ms linger: 1000 messages); 500 messages take 50 ms.
        let mut p = pacer(2000, 100, 10_000.0);
        assert_eq!(p.pause(), Some(Duration::from_millis(50)));
    }

    #[test]
    fn rounds_short_of_their_target_or_sized_by_the_linger_do_not_lead_to_a_probe() {
        // 100 messages a second: a target of 16 would take 160 ms, the linger's 100 ms sizes
        // every round, so there is never a probe and the window stays.
        let mut p = pacer(20, 100, 100.0);
        for _ in 0..50 {
            assert_eq!(round(&mut p, 100.0, 1000), Duration::from_millis(100));
        }
        assert_eq!(p.window, 20.0);
        // Rounds that bring 12 of 16 (under four fifths) do not lead to a probe.
        let mut p = pacer(20, 100, 1000.0);
        for _ in 0..50 {
            assert_eq!(round(&mut p, 1000.0, 12), Duration::from_millis(16));
        }
        assert_eq!(p.window, 20.0);
    }
}
