//! The `[[hj212]]` listener: data loggers connect and push packets; the agent checks each, turns
//! the data of known loggers into [`OutletRecord`]s for the engine and answers the
//! acknowledgement a packet asks for.
//!
//! **Every peer is hostile until identified.** A connection is identified by its first packet
//! of a known MN with that logger's password. Until then it holds one of `max_unidentified`
//! slots, may send packets of at most [`UNIDENTIFIED_MAX_PACKET`] bytes, and is closed after
//! `identify_timeout`. A peer outside `allow`, over `max_connections`, or connecting more
//! often than `max_connects_per_minute` is closed at once. So a hostile or unknown peer costs
//! a few KB and, at most every [`LOG_EVERY`], a log line; every refusal is counted by reason in
//! `shopfloor_hj212_refused_total`.
//!
//! **What is refused and not stored:** a packet whose framing is broken (the connection is
//! closed: nothing after it can be trusted to start a packet), a bad CRC, a malformed field, an
//! unknown MN, a wrong password, data without a DataTime, and split packets that do not fit
//! together or overflow `max_buffer_bytes`. Only what is refused is lost; the rest of the
//! connection goes on.
//!
//! **TLS**, when `tls_cert` and `tls_key` are set: each accepted connection (past `allow`, the
//! connection rate and both connection bounds) does the handshake in its own task, within
//! `identify_timeout`, which goes on counting from the accept; a failed or late handshake is a
//! refusal `tls`. After it, plain and TLS connections share all code ([`Io`]).
//!
//! **Acknowledgements** (9014) go out after the record is queued for the engine, so a logger
//! that gets one can forget the data; a part of a split packet is acknowledged when it is
//! held, since loggers wait for it before sending the next part.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::tz::TimeZone;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tracing::{info, warn};

use super::codes::{self, DataFlag};
use super::config::{Cidr, Hj212Listener, OutletKind};
use super::packet::{self, Hj212Error, Packet};
use crate::metrics::Metrics;
use crate::model::{OutletPeriod, OutletRecord, OutletValue, SourceEvent};
use crate::shutdown::Shutdown;

/// The longest packet a connection may send before it is identified.
pub const UNIDENTIFIED_MAX_PACKET: usize = 4096;
/// A refusal is logged at most this often per listener (the counters count every one).
pub const LOG_EVERY: Duration = Duration::from_secs(60);
/// Source addresses remembered for the connection rate; past this, the oldest are forgotten.
const RATE_TABLE: usize = 4096;

/// One logger as the listener checks it.
#[derive(Debug, Clone)]
struct Logger {
    mn: String,
    /// `None` when its secret could not be read at start: every packet is refused.
    password: Option<String>,
    outlet: Arc<str>,
    name: Arc<str>,
    kind: OutletKind,
    /// Configured pollutants by code.
    pollutants: HashMap<String, Mapped>,
}

/// A configured pollutant: its signal name, unit and limit.
#[derive(Debug, Clone)]
struct Mapped {
    signal: Arc<str>,
    unit: Arc<str>,
    limit: Option<f64>,
}

/// What every connection of one listener shares.
#[derive(Debug)]
struct Shared {
    id: Arc<str>,
    loggers: HashMap<String, Logger>,
    tz: TimeZone,
    max_buffer: usize,
    idle_timeout: Duration,
    identify_timeout: Duration,
    unidentified: Arc<Semaphore>,
    /// Open identified connections per outlet: the outlet's logger is up while it has one.
    connected: Mutex<HashMap<Arc<str>, usize>>,
    metrics: Metrics,
    refusals: Mutex<RefusalLog>,
}

/// Refusals told to the log at most once per [`LOG_EVERY`], with the count since the last line.
#[derive(Debug, Default)]
struct RefusalLog {
    last: Option<Instant>,
    unlogged: u64,
}

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error(
        "cannot listen for HJ 212 loggers on {addr} ([[hj212]] `{id}`): {source}; change `listen` or free the port"
    )]
    Bind {
        id: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("[[hj212]] `{id}`: {reason}; correct `{key}` (`shopfloor check` tells the same)")]
    Tls {
        id: String,
        key: &'static str,
        reason: String,
    },
}

/// A listener's bound port and, with TLS, its acceptor (`[[hj212]]`, `[[dial_in]]`).
pub struct Bound {
    pub(crate) listener: TcpListener,
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound")
            .field("listener", &self.listener)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// A connection's byte stream, plain TCP or TLS over it.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Binds the listener's port and reads its TLS files, so that a port in use or an unusable
/// certificate stops the agent's start with a clear error.
pub fn bind(cfg: &Hj212Listener) -> Result<Bound, ListenError> {
    let tls = cfg
        .tls()
        .map_err(|(key, reason)| ListenError::Tls {
            id: cfg.id.clone(),
            key,
            reason,
        })?
        .map(tokio_rustls::TlsAcceptor::from);
    let err = |source| ListenError::Bind {
        id: cfg.id.clone(),
        addr: cfg.listen,
        source,
    };
    let listener = listen_on(cfg.listen).map_err(err)?;
    Ok(Bound { listener, tls })
}

impl Shared {
    fn new(cfg: &Hj212Listener, tz: TimeZone, metrics: Metrics) -> Shared {
        let loggers = cfg
            .loggers
            .iter()
            .map(|l| {
                let password = match l.password.resolve() {
                    Ok(pw) => Some(pw),
                    Err(e) => {
                        warn!(listener = %cfg.id, mn = %l.mn, error = %e, "HJ 212 logger's password unreadable: its packets are refused until the agent restarts with it");
                        None
                    }
                };
                let pollutants = l
                    .pollutants
                    .iter()
                    .filter_map(|p| {
                        let known = codes::pollutant(&p.code);
                        let signal = p.signal_name()?;
                        let unit = p
                            .unit
                            .clone()
                            .or_else(|| known.map(|k| k.unit.to_string()))
                            .unwrap_or_default();
                        let mapped = Mapped {
                            signal: Arc::from(signal),
                            unit: Arc::from(unit),
                            limit: p.limit,
                        };
                        Some((canonical(&p.code).to_string(), mapped))
                    })
                    .collect();
                let logger = Logger {
                    mn: l.mn.clone(),
                    password,
                    outlet: Arc::from(l.outlet.as_str()),
                    name: Arc::from(l.name.as_deref().unwrap_or(&l.outlet)),
                    kind: l.kind,
                    pollutants,
                };
                (l.mn.clone(), logger)
            })
            .collect();
        Shared {
            id: Arc::from(cfg.id.as_str()),
            loggers,
            tz,
            max_buffer: cfg.max_buffer_bytes,
            idle_timeout: cfg.idle_timeout,
            identify_timeout: cfg.identify_timeout,
            unidentified: Arc::new(Semaphore::new(cfg.max_unidentified)),
            connected: Mutex::new(HashMap::new()),
            metrics,
            refusals: Mutex::new(RefusalLog::default()),
        }
    }

    /// Counts a refusal by reason and logs it, at most once per [`LOG_EVERY`].
    fn refuse(&self, reason: &'static str, peer: SocketAddr, detail: &str) {
        self.metrics
            .counter(
                "shopfloor_hj212_refused_total",
                "HJ 212 connections and packets refused, by reason: not_allowed, \
                 connections, unidentified, connect_rate, timeout, framing, crc, field, \
                 too_long, unknown_mn, password, no_time, split, buffer, tls.",
                &[("listener", &self.id), ("reason", reason)],
            )
            .fetch_add(1, Ordering::Relaxed);
        let mut log = self.refusals.lock().unwrap_or_else(|e| e.into_inner());
        log.unlogged += 1;
        if log.last.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            warn!(listener = %self.id, %peer, reason, refused = log.unlogged, "HJ 212: {detail} (refusals since the last such line; all are counted in shopfloor_hj212_refused_total)");
            log.last = Some(Instant::now());
            log.unlogged = 0;
        }
    }

    fn counter(&self, name: &'static str, help: &'static str, outlet: &str) -> Arc<AtomicU64> {
        self.metrics
            .counter(name, help, &[("listener", &self.id), ("outlet", outlet)])
    }
}

/// Connections the kernel completes and holds for a listener (`[[hj212]]`, `[[dial_in]]`) to
/// accept, capped by the system's `net.core.somaxconn`. Beyond it new connections' SYNs are
/// dropped and retried a second or more later: a fleet of DTUs or data loggers dialling in at
/// once after a restart, or a flood, would wait (the standard library's listener holds 128).
pub const BACKLOG: u32 = 4096;

/// A listening socket on `addr` with [`BACKLOG`] and `SO_REUSEADDR` (a restarted agent binds
/// again at once, while its old connections are in TIME_WAIT).
pub(crate) fn listen_on(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// The next connection on a listening port (`[[hj212]]`, `[[dial_in]]`), or `None` at
/// shutdown. A failed accept (out of file descriptors and the like) is logged at most once a
/// minute, with the count since, and waited out rather than spun on.
pub(crate) async fn accept(
    listener: &TcpListener,
    shutdown: &mut Shutdown,
    id: &str,
    what: &str,
) -> Option<(tokio::net::TcpStream, SocketAddr)> {
    let mut failed_log = crate::metrics::RateLimited::new(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = shutdown.wait() => return None,
            accepted = listener.accept() => match accepted {
                Ok(a) => return Some(a),
                Err(e) => {
                    if let Some(unlogged) = failed_log.due(std::time::Instant::now()) {
                        warn!(listener = %id, error = %e, unlogged, "{what}: accepting a connection failed (logged at most once a minute; `unlogged` failures since the last line)");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

/// What a listening port (`[[hj212]]`, `[[dial_in]]`) checks of a new connection before it
/// costs anything, in this order: its source against `allow`, its address's connections this
/// minute against `max_connects_per_minute`, then a slot among `max_connections` and one among
/// the connections not yet identified (the half-open bound).
#[derive(Debug)]
pub(crate) struct Gate {
    allowed: Vec<Cidr>,
    per_minute: u32,
    rate: ConnectRate,
    connections: Arc<Semaphore>,
    half_open: Arc<Semaphore>,
}

/// Why [`Gate::admit`] closed a connection at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Turned {
    NotAllowed,
    ConnectRate,
    Connections,
    HalfOpen,
}

impl Turned {
    /// The counter's reason label; `half_open` is the listener's own word for its half-open
    /// bound.
    pub(crate) fn reason(self, half_open: &'static str) -> &'static str {
        match self {
            Turned::NotAllowed => "not_allowed",
            Turned::ConnectRate => "connect_rate",
            Turned::Connections => "connections",
            Turned::HalfOpen => half_open,
        }
    }

    /// The log's words; `half_open` says what the half-open bound is full of.
    pub(crate) fn detail(self, half_open: &str) -> String {
        match self {
            Turned::NotAllowed => "a connection from outside `allow`, closed".into(),
            Turned::ConnectRate => {
                "more connections from this address than `max_connects_per_minute`, closed".into()
            }
            Turned::Connections => {
                "`max_connections` connections are open, a new one is closed".into()
            }
            Turned::HalfOpen => format!("{half_open}, a new one is closed"),
        }
    }
}

impl Gate {
    pub(crate) fn new(
        allowed: Vec<Cidr>,
        per_minute: u32,
        max_connections: usize,
        half_open: Arc<Semaphore>,
    ) -> Gate {
        Gate {
            allowed,
            per_minute,
            rate: ConnectRate::default(),
            connections: Arc::new(Semaphore::new(max_connections)),
            half_open,
        }
    }

    /// Slots among `max_connections` not in use now.
    pub(crate) fn free_slots(&self) -> usize {
        self.connections.available_permits()
    }

    /// The connection's slot and its half-open slot, or why it is closed at once.
    pub(crate) fn admit(
        &mut self,
        ip: IpAddr,
    ) -> Result<(OwnedSemaphorePermit, OwnedSemaphorePermit), Turned> {
        if !self.allowed.is_empty() && !self.allowed.iter().any(|c| c.contains(ip)) {
            return Err(Turned::NotAllowed);
        }
        if !self.rate.admit(ip, self.per_minute, Instant::now()) {
            return Err(Turned::ConnectRate);
        }
        let slot = self
            .connections
            .clone()
            .try_acquire_owned()
            .map_err(|_| Turned::Connections)?;
        let half_open = self
            .half_open
            .clone()
            .try_acquire_owned()
            .map_err(|_| Turned::HalfOpen)?;
        Ok((slot, half_open))
    }
}

/// Connections per source address in the current minute.
#[derive(Debug, Default)]
struct ConnectRate {
    seen: HashMap<IpAddr, (Instant, u32)>,
}

impl ConnectRate {
    /// Whether another connection from `ip` is within `per_minute`.
    fn admit(&mut self, ip: IpAddr, per_minute: u32, now: Instant) -> bool {
        if self.seen.len() >= RATE_TABLE {
            self.seen
                .retain(|_, (start, _)| now.duration_since(*start) < Duration::from_secs(60));
            if self.seen.len() >= RATE_TABLE {
                // Still full of fresh addresses: a scan. Forget them all rather than grow.
                self.seen.clear();
            }
        }
        let entry = self.seen.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= Duration::from_secs(60) {
            *entry = (now, 0);
        }
        entry.1 += 1;
        entry.1 <= per_minute
    }
}

/// Accepts loggers until `shutdown`.
pub async fn run(
    cfg: Hj212Listener,
    bound: Bound,
    tz: TimeZone,
    events: mpsc::Sender<SourceEvent>,
    metrics: Metrics,
    mut shutdown: Shutdown,
) {
    let shared = Arc::new(Shared::new(&cfg, tz, metrics));
    let mut gate = Gate::new(
        cfg.allowed(),
        cfg.max_connects_per_minute,
        cfg.max_connections,
        shared.unidentified.clone(),
    );
    let Bound { listener, tls } = bound;
    info!(listener = %cfg.id, addr = %cfg.listen, loggers = cfg.loggers.len(), tls = tls.is_some(), "listening for HJ 212 loggers");
    loop {
        let Some((stream, peer)) = accept(&listener, &mut shutdown, &cfg.id, "HJ 212").await else {
            return;
        };
        let (slot, unidentified) = match gate.admit(peer.ip()) {
            Ok(permits) => permits,
            Err(turned) => {
                shared.refuse(
                    turned.reason("unidentified"),
                    peer,
                    &turned.detail(
                        "`max_unidentified` connections have not identified themselves yet",
                    ),
                );
                continue;
            }
        };
        let shared = shared.clone();
        let events = events.clone();
        let mut shutdown = shutdown.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let stream: Box<dyn Io> = match tls {
                None => Box::new(stream),
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(shared.identify_timeout, acceptor.accept(stream));
                    let done = tokio::select! {
                        _ = shutdown.wait() => return,
                        done = handshake => done,
                    };
                    match done {
                        Ok(Ok(tls)) => Box::new(tls),
                        Ok(Err(e)) => {
                            shared.refuse(
                                "tls",
                                peer,
                                &format!("the TLS handshake failed ({e}): a logger speaking plain TCP, or one that does not trust `tls_cert`; closed"),
                            );
                            return;
                        }
                        Err(_) => {
                            shared.refuse(
                                "tls",
                                peer,
                                "no TLS handshake within `identify_timeout`, closed",
                            );
                            return;
                        }
                    }
                }
            };
            let mut conn = Connection {
                shared,
                peer,
                events,
                logger: None,
                unidentified: Some(unidentified),
                pending: Vec::new(),
                pending_bytes: 0,
            };
            conn.serve(stream, started, shutdown).await;
            conn.gone().await;
            drop(slot);
        });
    }
}

/// One logger's connection.
struct Connection {
    shared: Arc<Shared>,
    peer: SocketAddr,
    events: mpsc::Sender<SourceEvent>,
    /// The MN it identified itself with.
    logger: Option<String>,
    /// Its unidentified slot, given back when it identifies itself.
    unidentified: Option<tokio::sync::OwnedSemaphorePermit>,
    /// Parts of split packets waiting for the rest, with their sizes.
    pending: Vec<(Packet, usize)>,
    pending_bytes: usize,
}

/// What to do with the connection after a packet.
enum Next {
    Go,
    Close,
}

impl Connection {
    /// Reads packets until the peer goes, a bound closes it or the agent stops; `started` is
    /// when it was accepted, for `identify_timeout`.
    async fn serve(&mut self, mut stream: Box<dyn Io>, started: Instant, mut shutdown: Shutdown) {
        let mut buf: Vec<u8> = Vec::new();
        let mut chunk = [0u8; 2048];
        loop {
            let wait = match self.logger {
                Some(_) => self.shared.idle_timeout,
                None => self
                    .shared
                    .identify_timeout
                    .saturating_sub(started.elapsed()),
            };
            let read = tokio::select! {
                _ = shutdown.wait() => return,
                r = tokio::time::timeout(wait, stream.read(&mut chunk)) => r,
            };
            let n = match read {
                Err(_) => {
                    if self.logger.is_none() {
                        self.shared.refuse(
                            "timeout",
                            self.peer,
                            "no valid packet of a known logger within `identify_timeout`, closed",
                        );
                    }
                    return;
                }
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(n)) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            loop {
                let len = match packet::packet_length(&buf) {
                    Ok(Some(len)) => len,
                    Ok(None) => break,
                    Err(e) => {
                        self.shared
                            .refuse(e.kind(), self.peer, &format!("{e}; connection closed"));
                        return;
                    }
                };
                let most = if self.logger.is_some() {
                    packet::MAX_PACKET
                } else {
                    UNIDENTIFIED_MAX_PACKET
                };
                if len > most || len + self.pending_bytes > self.shared.max_buffer {
                    self.shared.refuse(
                        "too_long",
                        self.peer,
                        &format!(
                            "a packet of {len} bytes, more than this connection may send \
                             (unidentified peers {UNIDENTIFIED_MAX_PACKET}, and \
                             `max_buffer_bytes` with split parts held); connection closed"
                        ),
                    );
                    return;
                }
                if buf.len() < len {
                    break;
                }
                let bytes: Vec<u8> = buf.drain(..len).collect();
                match self.packet(&bytes, &mut *stream).await {
                    Next::Go => {}
                    Next::Close => return,
                }
            }
        }
    }

    /// One whole packet.
    async fn packet(&mut self, bytes: &[u8], stream: &mut dyn Io) -> Next {
        let packet = match packet::parse(bytes) {
            Ok(p) => p,
            Err(e) => {
                self.shared.refuse(e.kind(), self.peer, &e.to_string());
                return match e {
                    Hj212Error::Framing(_) => Next::Close,
                    _ => Next::Go,
                };
            }
        };
        let Some(logger) = self.shared.loggers.get(&packet.mn) else {
            self.shared.refuse(
                "unknown_mn",
                self.peer,
                &format!(
                    "a packet of MN {:?}, which no [[hj212.logger]] lists: add the logger, or \
                     correct the MN on it",
                    packet.mn.chars().take(24).collect::<String>()
                ),
            );
            return Next::Go;
        };
        let good = match (&logger.password, &packet.pw) {
            (Some(want), Some(got)) => same(want.as_bytes(), got.as_bytes()),
            _ => false,
        };
        if !good {
            self.shared.refuse(
                "password",
                self.peer,
                &format!(
                    "a packet of logger {} with a wrong or missing PW: set the same password on \
                     the logger and in its `password`",
                    logger.mn
                ),
            );
            return Next::Go;
        }
        let logger = logger.clone();
        if self.logger.is_none() {
            info!(listener = %self.shared.id, peer = %self.peer, mn = %logger.mn, outlet = %logger.outlet, "HJ 212 logger connected");
            self.logger = Some(logger.mn.clone());
            self.unidentified = None;
            if self.count(&logger.outlet, 1) == 1 {
                let event = SourceEvent::DeviceUp {
                    device: logger.outlet.clone(),
                    at: jiff::Timestamp::now(),
                };
                if !self.tell(event).await {
                    return Next::Close;
                }
            }
        }
        if packet.is_split() {
            return self.part(packet, bytes.len(), &logger, stream).await;
        }
        self.complete(packet, &logger, stream).await
    }

    /// A part of a split packet: held until every part is there.
    async fn part(
        &mut self,
        packet: Packet,
        size: usize,
        logger: &Logger,
        stream: &mut dyn Io,
    ) -> Next {
        let ack = packet::acknowledgement(&packet);
        let same_packet = |p: &Packet| p.mn == packet.mn && p.qn == packet.qn && p.cn == packet.cn;
        self.pending.push((packet.clone(), size));
        self.pending_bytes += size;
        if let Some(ack) = ack
            && !self.send(stream, &ack).await
        {
            return Next::Close;
        }
        let count = usize::from(packet.pnum.unwrap_or(1));
        let parts: Vec<Packet> = self
            .pending
            .iter()
            .filter(|(p, _)| same_packet(p))
            .map(|(p, _)| p.clone())
            .collect();
        if parts.len() < count {
            return Next::Go;
        }
        self.pending.retain(|(p, _)| !same_packet(p));
        self.pending_bytes = self.pending.iter().map(|(_, s)| s).sum();
        match packet::merge(&parts) {
            Ok(whole) => self.store(whole, logger).await,
            Err(e) => {
                self.shared.refuse(
                    "split",
                    self.peer,
                    &format!("a split packet whose parts do not fit together: {e}"),
                );
                Next::Go
            }
        }
    }

    /// A packet that is not split: stored, then acknowledged.
    async fn complete(&mut self, packet: Packet, logger: &Logger, stream: &mut dyn Io) -> Next {
        let ack = packet::acknowledgement(&packet);
        if let Next::Close = self.store(packet, logger).await {
            return Next::Close;
        }
        if let Some(ack) = ack
            && !self.send(stream, &ack).await
        {
            return Next::Close;
        }
        Next::Go
    }

    /// Adds `delta` to the outlet's open connections; the count after.
    fn count(&self, outlet: &Arc<str>, delta: isize) -> usize {
        let mut connected = self
            .shared
            .connected
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let n = connected.entry(outlet.clone()).or_default();
        *n = n.saturating_add_signed(delta);
        *n
    }

    /// Tells the engine; false when it is gone (the agent is stopping).
    async fn tell(&self, event: SourceEvent) -> bool {
        const _: () = crate::queue::EVENTS_FROM_HJ212.sent_as(crate::queue::WhenFull::Block);
        self.events.send(event).await.is_ok()
    }

    /// The connection has ended: a logger's last connection makes it down.
    async fn gone(&self) {
        let Some(logger) = self
            .logger
            .as_ref()
            .and_then(|mn| self.shared.loggers.get(mn))
        else {
            return;
        };
        if self.count(&logger.outlet, -1) == 0 {
            info!(listener = %self.shared.id, peer = %self.peer, outlet = %logger.outlet, "HJ 212 logger disconnected");
            let event = SourceEvent::DeviceDown {
                device: logger.outlet.clone(),
                at: jiff::Timestamp::now(),
                reason: "the logger's connection closed: it reconnects when it has data; \
                         check its second platform address if it stays down"
                    .into(),
            };
            self.tell(event).await;
        }
    }

    async fn send(&self, stream: &mut dyn Io, ack: &str) -> bool {
        let sent = tokio::time::timeout(Duration::from_secs(10), stream.write_all(ack.as_bytes()))
            .await
            .is_ok_and(|r| r.is_ok());
        if sent {
            self.shared
                .counter(
                    "shopfloor_hj212_acks_total",
                    "HJ 212 acknowledgements (9014) sent to loggers.",
                    "",
                )
                .fetch_add(1, Ordering::Relaxed);
        }
        sent
    }

    /// Queues the packet's data for the engine (waiting for room: the logger keeps what is not
    /// acknowledged). Packets that carry no outlet data are only counted.
    async fn store(&mut self, packet: Packet, logger: &Logger) -> Next {
        let Some(period) = period(packet.cn) else {
            self.shared
                .counter(
                    "shopfloor_hj212_other_packets_total",
                    "HJ 212 packets of known loggers that carry no outlet data (running state, \
                     equipment information …), acknowledged and not stored.",
                    &logger.outlet,
                )
                .fetch_add(1, Ordering::Relaxed);
            return Next::Go;
        };
        let Some(record) = record(&packet, period, logger, &self.shared.tz) else {
            self.shared.refuse(
                "no_time",
                self.peer,
                &format!(
                    "data of logger {} without a valid DataTime in CP, not stored",
                    logger.mn
                ),
            );
            return Next::Go;
        };
        self.shared
            .counter(
                "shopfloor_hj212_records_total",
                "HJ 212 data records (real-time, minute, hourly, daily) taken from loggers.",
                &logger.outlet,
            )
            .fetch_add(1, Ordering::Relaxed);
        if !self.tell(SourceEvent::Outlet(record)).await {
            // The engine is gone: the agent is stopping.
            return Next::Close;
        }
        Next::Go
    }
}

/// A pollutant's HJ 212-2017 code for a 2005 code the agent knows (`011` → `w01018`), so a
/// limit configured under either edition's code applies to packets of both.
fn canonical(code: &str) -> &str {
    codes::pollutant(code).map_or(code, |k| k.code)
}

/// Compares two secrets in time that depends on their lengths only.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The period of a data upload's values; `None` for packets without outlet data.
fn period(cn: u16) -> Option<OutletPeriod> {
    Some(match cn {
        codes::CN_REALTIME => OutletPeriod::RealTime,
        codes::CN_MINUTE => OutletPeriod::Minute,
        codes::CN_HOURLY => OutletPeriod::Hour,
        codes::CN_DAILY => OutletPeriod::Day,
        _ => return None,
    })
}

/// A data packet as the engine's record: codes to signal names and units (the logger's
/// configuration first, then the standard's), the data time to UTC in the site's zone.
/// `None` without a DataTime.
fn record(
    packet: &Packet,
    period: OutletPeriod,
    logger: &Logger,
    tz: &TimeZone,
) -> Option<OutletRecord> {
    let at = tz
        .to_ambiguous_timestamp(packet.cp.data_time?)
        .compatible()
        .ok()?;
    let mut discharged_m3 = None;
    let values = packet
        .cp
        .values
        .iter()
        .map(|v| {
            let known = codes::pollutant(&v.code);
            let (signal, unit, limit) = match logger.pollutants.get(canonical(&v.code)) {
                Some(m) => (m.signal.clone(), m.unit.clone(), m.limit),
                None => match known {
                    Some(k) => (Arc::from(k.signal), Arc::from(k.unit), None),
                    // Unknown and not configured: kept under its code, nothing lost.
                    None => (Arc::from(v.code.as_str()), Arc::from(""), None),
                },
            };
            if logger.kind == OutletKind::Wastewater
                && known.is_some_and(|k| k.code == "w00000")
                && v.cou.is_some()
            {
                discharged_m3 = v.cou;
            }
            OutletValue {
                pollutant: signal,
                unit,
                rtd: v.rtd,
                avg: v.avg,
                min: v.min,
                max: v.max,
                cou: v.cou,
                zs_rtd: v.zs_rtd,
                zs_avg: v.zs_avg,
                zs_min: v.zs_min,
                zs_max: v.zs_max,
                flag: v.flag.map(DataFlag::as_str),
                // A value without a flag is taken as normal, as the standard's default.
                may_alert: v.flag.is_none_or(DataFlag::may_alert),
                limit,
            }
        })
        .collect();
    Some(OutletRecord {
        outlet: logger.outlet.clone(),
        name: logger.name.clone(),
        kind: logger.kind.as_str(),
        period,
        cn: packet.cn,
        at,
        values,
        discharged_m3,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_rate_is_per_address_and_per_minute() {
        let mut rate = ConnectRate::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let t = Instant::now();
        assert!(rate.admit(a, 2, t));
        assert!(rate.admit(a, 2, t));
        assert!(!rate.admit(a, 2, t));
        assert!(rate.admit(b, 2, t));
        assert!(rate.admit(a, 2, t + Duration::from_secs(61)));
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same(b"123456", b"123456"));
        assert!(!same(b"123456", b"123457"));
        assert!(!same(b"123456", b"12345"));
    }

    #[test]
    fn a_record_keeps_flags_names_codes_and_takes_the_discharge_from_the_flow_total() {
        let text = "QN=20261205100000000;ST=32;CN=2061;PW=123456;MN=88888880000001;Flag=5;\
            CP=&&DataTime=20261205100000;w00000-Avg=2.5,w00000-Cou=9.0,w00000-Flag=N;\
            w01018-Avg=120.5,w01018-Flag=M;w99001-Avg=0.2,w99001-Flag=N&&";
        let packet = packet::parse_segment(text).unwrap();
        let logger = Logger {
            mn: "88888880000001".into(),
            password: Some("123456".into()),
            outlet: Arc::from("ww1"),
            name: Arc::from("ww1"),
            kind: OutletKind::Wastewater,
            pollutants: [(
                "w01018".to_string(),
                Mapped {
                    signal: Arc::from("cod"),
                    unit: Arc::from("mg/L"),
                    limit: Some(100.0),
                },
            )]
            .into(),
        };
        let tz = TimeZone::get("Asia/Shanghai").unwrap();
        let r = record(&packet, OutletPeriod::Hour, &logger, &tz).unwrap();
        // 10:00 in Shanghai is 02:00 UTC.
        assert_eq!(r.at.to_string(), "2026-12-05T02:00:00Z");
        assert_eq!(r.discharged_m3, Some(9.0));
        assert_eq!(&*r.values[1].pollutant, "cod");
        assert_eq!(r.values[1].flag, Some("M"));
        assert!(!r.values[1].may_alert);
        assert_eq!(r.values[1].limit, Some(100.0));
        assert_eq!(&*r.values[2].pollutant, "w99001");
        assert!(r.values[2].may_alert);
        // An HJ/T 212-2005 logger names COD `011`: the limit configured for w01018 applies.
        let old = "ST=32;CN=2061;PW=123456;MN=88888880000001;\
            CP=&&DataTime=20261205100000;011-Avg=120.5,011-Flag=N&&";
        let r = record(
            &packet::parse_segment(old).unwrap(),
            OutletPeriod::Hour,
            &logger,
            &tz,
        )
        .unwrap();
        assert_eq!(
            (&*r.values[0].pollutant, r.values[0].limit),
            ("cod", Some(100.0))
        );
    }
}
