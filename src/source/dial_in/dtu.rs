//! One DTU's task: it owns the DTU's connection (whichever the listener handed it last) and
//! polls the devices behind it.
//!
//! One request at a time, `inter_request_delay` of silence before each, `timeout` for each
//! answer. Between requests the task keeps reading, so heartbeats are seen (and counted) and a
//! closed connection is noticed at once. A DTU that sends nothing for its silence allowance
//! (`heartbeat_timeout`) is taken for gone: 4G links die without a FIN, and the socket would
//! look open for hours. Every device behind a DTU that is not connected is down, with the
//! reason in words ("DTU `x` not connected", "no heartbeat from DTU `x` for 93 s").
//!
//! A new connection from the same DTU replaces the old one at once, even in the middle of a
//! request: the DTU dropped its 4G session and came back, and the old socket is half-open at
//! best. If the old one was still receiving bytes, two devices claim one identity: that is
//! logged as a possible clone (the newer connection wins, as after a reconnect).
//!
//! **A lost link makes the machines behind the DTU offline at once** (`SourceEvent::Offline`),
//! not after the engine's `offline_after` of silence, so a 4G drop of a few seconds is seen
//! and a long one is not stamped late. It is stamped with the time the link was lost:
//! - closed, reset, a failed read or write: the moment the agent saw it (a FIN or RST arrives
//!   within a round trip of the DTU leaving);
//! - silent past `heartbeat_timeout`: **the last time the DTU was heard**, not the time the
//!   allowance ran out. Nothing came after it (no heartbeat, no answer to the polls in
//!   between), so that is the last moment the DTU is known to have been there; with polls
//!   and heartbeats flowing it is within a poll or a heartbeat period of its real departure;
//! - replaced by a new connection while the old one had fallen silent (a request went
//!   unanswered and nothing at all came after it was sent): likewise the last time heard. A
//!   replacement of a connection that was still talking (a reconnect without a gap, or a
//!   clone) is not an outage.
//!
//! The devices are marked down with the reason in words, stamped the same. The first poll
//! through the new connection (devices that are down are read at once) brings the machines
//! back with its samples. A machine fed by other sources too is made offline all the same; its
//! next sample from any source brings it back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::time::Instant;
use tracing::{Instrument, debug, info, warn};

use super::config::Dtu;
use super::stream::{self, Expected, Framing, Piece, SplitError, Splitter};
use crate::metrics::Metrics;
use crate::model::{Sample, SourceEvent, Target};
use crate::queue::LossLog;
use crate::shutdown::Shutdown;
use crate::source::hj212::listen::Io;
use crate::source::modbus::Targets;
use crate::source::modbus::config::{ModbusDevice, ModbusField, RegisterKind};
use crate::source::modbus::decode::Codec;
use crate::source::modbus::health::Health;
use crate::source::modbus::plan::{self, PollGroup};
use crate::source::modbus::{backoff, next_tick};

/// Bytes held per DTU connection while taking its stream apart: the largest answer (255) and
/// registrations and heartbeats around it, with room to spare.
pub const MAX_BUFFER: usize = 4096;

/// A registered connection, handed from the listener to its DTU's task.
pub struct Attached {
    pub stream: Box<dyn Io>,
    pub peer: SocketAddr,
    /// Bytes that came after the registration in the same reads.
    pub rest: Vec<u8>,
    /// The connection's slot in `max_connections`, held as long as the connection.
    pub slot: OwnedSemaphorePermit,
}

impl std::fmt::Debug for Attached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attached")
            .field("peer", &self.peer)
            .field("rest", &self.rest.len())
            .finish_non_exhaustive()
    }
}

/// How many registered connections may wait for their DTU's task; past that the oldest
/// waiting one is closed (a newer connection of a DTU replaces an older one anyway).
const WAITING_MAX: usize = 2;

/// The listener's side of a DTU's [`arrivals`]: hands it registered connections.
#[derive(Debug, Clone)]
pub struct Handoff(Arc<Inbox>);

/// The DTU task's side of [`arrivals`].
#[derive(Debug)]
pub struct Arrivals(Arc<Inbox>);

/// Where a DTU's new connections wait for its task: a few dozen bytes until one arrives. (A
/// tokio channel allocates a block of 32 slots, some 3 KB, which for a thousand DTUs that
/// connect once a day is 3 MB held for nothing.)
#[derive(Debug, Default)]
struct Inbox {
    waiting: std::sync::Mutex<std::collections::VecDeque<Attached>>,
    ready: tokio::sync::Notify,
    /// Every [`Handoff`] is gone: no connection will come.
    closed: std::sync::atomic::AtomicBool,
}

/// A DTU's hand-off of registered connections from the listener to its task.
pub fn arrivals() -> (Handoff, Arrivals) {
    let inbox = Arc::new(Inbox::default());
    (Handoff(inbox.clone()), Arrivals(inbox))
}

impl Handoff {
    /// Hands `attached` to the task; if [`WAITING_MAX`] connections are already waiting, the
    /// oldest of them is closed.
    pub fn send(&self, attached: Attached) {
        let oldest = {
            let mut waiting = self.0.waiting.lock().unwrap_or_else(|e| e.into_inner());
            waiting.push_back(attached);
            (waiting.len() > WAITING_MAX)
                .then(|| waiting.pop_front())
                .flatten()
        };
        drop(oldest);
        self.0.ready.notify_one();
    }

    /// No more connections will come (the listener is stopping).
    pub fn close(&self) {
        self.0.closed.store(true, Ordering::Release);
        self.0.ready.notify_one();
    }
}

impl Arrivals {
    /// The next connection, `None` once the listener is gone. Cancel-safe: a connection not
    /// taken stays waiting.
    pub async fn recv(&mut self) -> Option<Attached> {
        loop {
            let next = self
                .0
                .waiting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front();
            if next.is_some() {
                return next;
            }
            if self.0.closed.load(Ordering::Acquire) {
                return None;
            }
            self.0.ready.notified().await;
        }
    }
}

/// What the DTU's task needs of its config, planned and compacted.
pub struct DtuTask {
    id: Arc<str>,
    framing: Framing,
    heartbeat: Vec<u8>,
    /// The registration, when the DTU repeats it before every packet.
    repeated_registration: Vec<u8>,
    inter_request_delay: Duration,
    timeout: Duration,
    silence: Duration,
    devices: Vec<Polled>,
    /// The machines fed by the devices behind the DTU: offline when the link is lost.
    machines: Vec<Target>,
    counters: Counters,
}

struct Counters {
    connections: Arc<AtomicU64>,
    clones: Arc<AtomicU64>,
    heartbeats: Arc<AtomicU64>,
    discarded: Arc<AtomicU64>,
    connected: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
}

/// One device behind the DTU.
struct Polled {
    id: Arc<str>,
    unit: u8,
    /// The device's fields, shared with its profile and every device of it (a sample's codec
    /// is made from its field as it is decoded), and where their values go.
    fields: Arc<[ModbusField]>,
    targets: Targets,
    groups: Vec<Scheduled>,
    health: Health,
    up: Option<bool>,
    down: Option<String>,
    failures: u32,
    down_since: Option<Instant>,
    retry_at: Option<Instant>,
}

struct Scheduled {
    group: PollGroup,
    next: Instant,
}

impl Polled {
    fn new(device: &ModbusDevice, metrics: &Metrics, start: Instant) -> Polled {
        let groups = plan::plan(device)
            .into_iter()
            .map(|group| Scheduled { group, next: start })
            .collect();
        Polled {
            id: Arc::from(device.id.as_str()),
            unit: device.unit.0,
            fields: device.fields.clone(),
            targets: Targets::new(device),
            groups,
            health: Health::register(metrics, &device.id),
            up: None,
            down: None,
            failures: 0,
            down_since: None,
            retry_at: None,
        }
    }

    fn due(&self, g: usize) -> Instant {
        let next = self.groups[g].next;
        self.retry_at.map_or(next, |r| next.max(r))
    }

    fn base_poll(&self) -> Duration {
        self.groups
            .iter()
            .map(|g| g.group.poll)
            .min()
            .unwrap_or(Duration::from_secs(1))
    }
}

impl DtuTask {
    /// Plans the DTU's devices. `dtu` has passed the check.
    pub fn new(dtu: &Dtu, listener: &str, metrics: &Metrics) -> DtuTask {
        let start = Instant::now();
        let labels = [("listener", listener), ("dtu", dtu.id.as_str())];
        let counter = |name, help| metrics.counter(name, help, &labels);
        let repeated_registration = match (dtu.identity_every_packet, dtu.identity()) {
            (true, Ok(stream::Identity::Exact(bytes))) => bytes,
            _ => Vec::new(),
        };
        let devices: Vec<Polled> = dtu
            .devices
            .iter()
            .map(|d| Polled::new(d, metrics, start))
            .filter(|p| !p.groups.is_empty())
            .collect();
        let mut machines: Vec<Target> = Vec::new();
        for target in devices.iter().flat_map(|p| p.targets.all()) {
            if matches!(target, Target::Machine(_)) && !machines.contains(target) {
                machines.push(target.clone());
            }
        }
        DtuTask {
            id: Arc::from(dtu.id.as_str()),
            framing: dtu.framing.into(),
            heartbeat: dtu.heartbeat_bytes().unwrap_or_default(),
            repeated_registration,
            inter_request_delay: dtu.inter_request_delay,
            timeout: dtu.timeout,
            silence: dtu.silence_allowed(),
            devices,
            machines,
            counters: Counters {
                connections: counter(
                    "shopfloor_dial_in_connections_total",
                    "Registered connections of a dial-in DTU (reconnects included).",
                ),
                clones: counter(
                    "shopfloor_dial_in_possible_clones_total",
                    "Connections of a dial-in DTU that arrived while its previous one was still live: a possible clone of its registration.",
                ),
                heartbeats: counter(
                    "shopfloor_dial_in_heartbeats_total",
                    "Heartbeats received from a dial-in DTU.",
                ),
                discarded: counter(
                    "shopfloor_dial_in_discarded_bytes_total",
                    "Bytes from a dial-in DTU that were neither heartbeat, registration nor an expected answer (late answers, line noise), dropped.",
                ),
                connected: metrics.gauge(
                    "shopfloor_dial_in_dtu_connected",
                    "1 while a dial-in DTU has a registered connection.",
                    &labels,
                ),
                dropped: metrics.counter(
                    crate::source::modbus::SOURCE_EVENTS_DROPPED,
                    "Poll results dropped because the engine's queue, the Modbus samples' bounded buffer, was full.",
                    &[("connection", &format!("dial-in {}", dtu.id))],
                ),
            },
        }
    }

    /// The DTU's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The count of the DTU's registered connections (0: it has not connected since the
    /// start).
    pub fn connections(&self) -> Arc<AtomicU64> {
        self.counters.connections.clone()
    }
}

/// The DTU's present connection.
struct Conn {
    stream: Box<dyn Io>,
    peer: SocketAddr,
    splitter: Splitter,
    /// When it last sent anything.
    heard: Instant,
    /// The same as a time of day, for stamping the loss of a silent link.
    heard_at: Timestamp,
    /// A request went unanswered and nothing at all has come since it was sent: the link is
    /// likely gone (see [`attach`]).
    unanswered: bool,
    /// When the line last carried a frame (a request's answer or timeout).
    last_frame: Instant,
    transaction: u16,
    _slot: OwnedSemaphorePermit,
}

/// Why a device or the whole DTU could not be polled.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fault {
    /// The DTU is unreachable: every device behind it is down. Kind for health, reason.
    Link(&'static str, String),
    /// This device did not answer (or answered wrong).
    Device(&'static str, String),
}

impl Conn {
    /// Notes that the DTU sent something.
    fn hear(&mut self) {
        self.heard = Instant::now();
        self.heard_at = Timestamp::now();
        self.unanswered = false;
    }
}

/// What ended a wait for an answer other than the answer.
enum Interrupted {
    Fault(Fault),
    Arrived(Attached),
    Stop,
}

/// Polls the DTU's devices over whichever connection `arrivals` brings last, until shutdown.
pub async fn run(
    task: DtuTask,
    arrivals: Arrivals,
    events: mpsc::Sender<SourceEvent>,
    shutdown: Shutdown,
) {
    let span = tracing::info_span!("dial_in", dtu = %task.id);
    poll_dtu(task, arrivals, events, shutdown)
        .instrument(span)
        .await;
}

async fn poll_dtu(
    mut task: DtuTask,
    mut arrivals: Arrivals,
    events: mpsc::Sender<SourceEvent>,
    mut shutdown: Shutdown,
) {
    if task.devices.is_empty() {
        return;
    }
    let mut loss = LossLog::new(
        "engine queue full: dial-in poll results dropped (the engine is behind)",
        Duration::from_secs(60),
    );
    let mut conn: Option<Conn> = None;
    let mut buf = vec![0u8; 1024];
    loop {
        let Some((d, g, due)) = task
            .devices
            .iter()
            .enumerate()
            .flat_map(|(d, p)| (0..p.groups.len()).map(move |g| (d, g, p.due(g))))
            .min_by_key(|(_, _, due)| *due)
        else {
            return;
        };
        let silent_at = conn.as_ref().map(|c| c.heard + task.silence);
        tokio::select! {
            _ = shutdown.wait() => return,
            arrived = arrivals.recv() => match arrived {
                Some(a) => attach(&mut task, &mut conn, a, &events, &mut loss),
                None => return,
            },
            _ = tokio::time::sleep_until(due) => {
                let now = Instant::now();
                let at = Timestamp::now();
                {
                    let p = &mut task.devices[d];
                    p.retry_at = None;
                    let s = &mut p.groups[g];
                    s.next = next_tick(s.next, s.group.poll, now);
                }
                // Boxed: its state (timers, a write, a read) is only needed during a poll, and
                // would otherwise be part of every idle DTU task.
                let polled = Box::pin(poll_group(&mut task, &mut conn, &mut arrivals, &mut shutdown, (d, g), &mut buf)).await;
                match polled {
                    Ok(answers) => answered(&mut task, (d, g), answers, at, &events, &mut loss),
                    Err(Interrupted::Stop) => return,
                    Err(Interrupted::Arrived(a)) => attach(&mut task, &mut conn, a, &events, &mut loss),
                    Err(Interrupted::Fault(fault)) => {
                        if let Fault::Link(..) = fault {
                            let lost = Timestamp::now();
                            lose_link(&mut task, &mut conn, &fault, lost, &events, &mut loss);
                        } else {
                            fail(&mut task, d, &fault, at, &events, &mut loss);
                        }
                    }
                }
            },
            read = read_some(&mut conn, &mut buf) => {
                let at = Timestamp::now();
                let fault = match read {
                    Ok(0) => Some(Fault::Link("transport", format!("DTU `{}` closed its connection", task.id))),
                    Ok(n) => {
                        let fault = conn.as_mut().and_then(|c| {
                            c.hear();
                            take_in(&task, c, &buf[..n], None).err()
                        });
                        fault.map(|e| Fault::Link("protocol", format!("DTU `{}`: {e}", task.id)))
                    }
                    Err(e) => Some(Fault::Link("transport", format!("DTU `{}` connection failed: {e}", task.id))),
                };
                if let Some(fault) = fault {
                    lose_link(&mut task, &mut conn, &fault, at, &events, &mut loss);
                }
            },
            _ = sleep_until_some(silent_at) => {
                // Gone since it was last heard (see the module's documentation).
                let at = conn.as_ref().map_or_else(Timestamp::now, |c| c.heard_at);
                let fault = Fault::Link(
                    "timeout",
                    format!("no heartbeat from DTU `{}` for {} s", task.id, task.silence.as_secs()),
                );
                lose_link(&mut task, &mut conn, &fault, at, &events, &mut loss);
            },
        }
    }
}

/// Takes a new connection of the DTU, replacing the old one at once. An old one that had
/// fallen silent (a request unanswered, nothing since) was an outage: the machines are
/// offline from when it was last heard until the new connection's first poll.
fn attach(
    task: &mut DtuTask,
    conn: &mut Option<Conn>,
    a: Attached,
    events: &mpsc::Sender<SourceEvent>,
    loss: &mut LossLog,
) {
    task.counters.connections.fetch_add(1, Ordering::Relaxed);
    task.counters.connected.store(1, Ordering::Relaxed);
    if let Some(old) = conn.take() {
        // Still hearing from the old one within a heartbeat period or so: two live devices
        // claim this registration.
        let live = old.heard.elapsed() < (task.silence / 3).max(Duration::from_secs(1));
        if live {
            task.counters.clones.fetch_add(1, Ordering::Relaxed);
            warn!(old = %old.peer, new = %a.peer, "possible clone: two live connections claim this DTU's registration; the newer one is used (registration packets are not authentication: check `allow`)");
        } else {
            info!(old = %old.peer, new = %a.peer, "DTU reconnected; its old connection is dropped");
        }
        if old.unanswered {
            let reason = format!(
                "DTU `{}` fell silent (a request unanswered) and connected again",
                task.id
            );
            offline(task, old.heard_at, &reason, events, loss);
        }
    } else {
        info!(peer = %a.peer, "DTU connected");
    }
    let mut c = Conn {
        stream: a.stream,
        peer: a.peer,
        splitter: Splitter::new(
            task.framing,
            task.heartbeat.clone(),
            task.repeated_registration.clone(),
            MAX_BUFFER,
        ),
        heard: Instant::now(),
        heard_at: Timestamp::now(),
        unanswered: false,
        last_frame: Instant::now(),
        transaction: 0,
        _slot: a.slot,
    };
    let _ = take_in(task, &mut c, &a.rest, None);
    *conn = Some(c);
    // Devices waiting out a back-off are read at once: the DTU is back.
    let now = Instant::now();
    for p in &mut task.devices {
        if p.up != Some(true) {
            p.retry_at = None;
            for s in &mut p.groups {
                s.next = s.next.min(now);
            }
        }
    }
}

/// The link is lost at `at`: the connection is dropped, every device behind the DTU is down
/// and, if there was a connection to lose, its machines are offline from `at`.
fn lose_link(
    task: &mut DtuTask,
    conn: &mut Option<Conn>,
    fault: &Fault,
    at: Timestamp,
    events: &mpsc::Sender<SourceEvent>,
    loss: &mut LossLog,
) {
    let had = conn.take();
    task.counters.connected.store(0, Ordering::Relaxed);
    for n in 0..task.devices.len() {
        fail(task, n, fault, at, events, loss);
    }
    if let Some(c) = had {
        debug!(peer = %c.peer, "DTU connection dropped");
        let (Fault::Link(_, reason) | Fault::Device(_, reason)) = fault;
        offline(task, at, reason, events, loss);
    }
}

/// The machines behind the DTU are offline from `at`.
fn offline(
    task: &DtuTask,
    at: Timestamp,
    reason: &str,
    events: &mpsc::Sender<SourceEvent>,
    loss: &mut LossLog,
) {
    for target in &task.machines {
        let event = SourceEvent::Offline {
            target: target.clone(),
            at,
            reason: reason.to_string(),
        };
        send(events, event, &task.counters.dropped, loss);
    }
}

/// Feeds received bytes to the splitter and takes out what needs no request: heartbeats,
/// repeated registrations, and bytes that are none of these (dropped, counted). With
/// `expected`, stops at the answer and returns it. An overflow is the connection's end.
fn take_in(
    task: &DtuTask,
    c: &mut Conn,
    bytes: &[u8],
    expected: Option<&Expected>,
) -> Result<Option<Piece>, SplitError> {
    c.splitter.push(bytes)?;
    loop {
        match c.splitter.next(expected) {
            Ok(None) => return Ok(None),
            Ok(Some(Piece::Heartbeat)) => {
                task.counters.heartbeats.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Some(Piece::Registration)) => {}
            Ok(Some(answer)) => return Ok(Some(answer)),
            Err(SplitError::Garbage { len, first }) => {
                task.counters
                    .discarded
                    .fetch_add(len as u64, Ordering::Relaxed);
                debug!(len, first = %stream::hex(&first), "bytes dropped: not a heartbeat, registration or expected answer");
            }
            Err(e) => return Err(e),
        }
    }
}

/// Reads from the connection; without one, never returns.
async fn read_some(conn: &mut Option<Conn>, buf: &mut [u8]) -> std::io::Result<usize> {
    match conn {
        Some(c) => c.stream.read(buf).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Reads one group of one device through the DTU.
async fn poll_group(
    task: &mut DtuTask,
    conn: &mut Option<Conn>,
    arrivals: &mut Arrivals,
    shutdown: &mut Shutdown,
    (d, g): (usize, usize),
    buf: &mut [u8],
) -> Result<Vec<(usize, Vec<u16>)>, Interrupted> {
    let Some(c) = conn.as_mut() else {
        return Err(Interrupted::Fault(Fault::Link(
            "connect",
            format!("DTU `{}` not connected", task.id),
        )));
    };
    let unit = task.devices[d].unit;
    let mut answers = Vec::new();
    let requests = task.devices[d].groups[g].group.requests.clone();
    for (r, request) in requests.iter().enumerate() {
        tokio::select! {
            _ = tokio::time::sleep_until(c.last_frame + task.inter_request_delay) => {}
            _ = shutdown.wait() => return Err(Interrupted::Stop),
        }
        // What is left of the last exchange (a late answer) must not meet this request.
        let stale = c.splitter.clear();
        if stale > 0 {
            task.counters
                .discarded
                .fetch_add(stale as u64, Ordering::Relaxed);
        }
        c.transaction = c.transaction.wrapping_add(1);
        let expected = Expected {
            unit,
            function: read_function(request.kind),
            count: request.count,
            transaction: c.transaction,
        };
        let frame = stream::request(task.framing, &expected, request.start);
        let sent = Instant::now();
        let deadline = sent + task.timeout;
        let written = tokio::time::timeout(task.timeout, c.stream.write_all(&frame)).await;
        if !matches!(written, Ok(Ok(()))) {
            return Err(Interrupted::Fault(Fault::Link(
                "transport",
                format!("DTU `{}`: the request could not be sent", task.id),
            )));
        }
        let piece = loop {
            tokio::select! {
                _ = shutdown.wait() => return Err(Interrupted::Stop),
                arrived = arrivals.recv() => match arrived {
                    Some(a) => return Err(Interrupted::Arrived(a)),
                    None => return Err(Interrupted::Stop),
                },
                _ = tokio::time::sleep_until(deadline) => {
                    c.last_frame = Instant::now();
                    // Nothing at all since the request: the link may be gone.
                    c.unanswered = c.heard < sent;
                    return Err(Interrupted::Fault(Fault::Device(
                        "timeout",
                        format!(
                            "unit {unit} behind DTU `{}` did not answer within {} ms",
                            task.id,
                            task.timeout.as_millis()
                        ),
                    )));
                }
                read = c.stream.read(buf) => match read {
                    Ok(0) | Err(_) => return Err(Interrupted::Fault(Fault::Link(
                        "transport",
                        format!("DTU `{}` closed its connection", task.id),
                    ))),
                    Ok(n) => {
                        c.hear();
                        match take_in(task, c, &buf[..n], Some(&expected)) {
                            Ok(Some(piece)) => break piece,
                            Ok(None) => {}
                            Err(e) => return Err(Interrupted::Fault(Fault::Link(
                                "protocol",
                                format!("DTU `{}`: {e}", task.id),
                            ))),
                        }
                    }
                },
            }
        };
        c.last_frame = Instant::now();
        match piece {
            Piece::Answer(data) => answers.push((r, words(request.kind, &data, request.count))),
            Piece::Exception(code) => {
                task.devices[d].health.count_error("exception", 1);
                debug!(unit, request = %request, code, "exception response: fields of this request are skipped");
            }
            Piece::Heartbeat | Piece::Registration => {}
        }
    }
    Ok(answers)
}

/// The function code that reads a table: 1–4, the only ones this module sends.
fn read_function(kind: RegisterKind) -> u8 {
    kind.function_code()
}

/// An answer's data as registers, or bits as 0 and 1 (least significant bit first).
fn words(kind: RegisterKind, data: &[u8], count: u16) -> Vec<u16> {
    if kind.is_bit() {
        (0..usize::from(count))
            .map(|i| u16::from(data.get(i / 8).is_some_and(|b| b >> (i % 8) & 1 == 1)))
            .collect()
    } else {
        data.chunks_exact(2)
            .map(|p| u16::from_be_bytes([p[0], p[1]]))
            .collect()
    }
}

/// After an answered poll: samples out, the device up.
fn answered(
    task: &mut DtuTask,
    (d, g): (usize, usize),
    answers: Vec<(usize, Vec<u16>)>,
    at: Timestamp,
    events: &mpsc::Sender<SourceEvent>,
    loss: &mut LossLog,
) {
    let dropped = task.counters.dropped.clone();
    let p = &mut task.devices[d];
    p.failures = 0;
    p.down_since = None;
    p.down = None;
    p.retry_at = None;
    p.health.answered(at);
    if p.up != Some(true) {
        p.up = Some(true);
        info!(device = %p.id, unit = p.unit, "device answers through the DTU");
        send(
            events,
            SourceEvent::DeviceUp {
                device: p.id.clone(),
                at,
            },
            &dropped,
            loss,
        );
    }
    let mut samples = Vec::new();
    for (r, words) in answers {
        let Some(request) = p.groups[g].group.requests.get(r) else {
            continue;
        };
        for planned in &request.fields {
            let Some(field) = p.fields.get(planned.index) else {
                continue;
            };
            let from = usize::from(planned.offset);
            let Some(slice) = words.get(from..from + usize::from(planned.len)) else {
                p.health.count_error("decode", 1);
                continue;
            };
            match Codec::from(field).decode(slice) {
                Ok(value) => samples.push(Sample {
                    target: p.targets.of(planned.index).clone(),
                    signal: field.signal.clone(),
                    value,
                    at,
                }),
                Err(_) => p.health.count_error("decode", 1),
            }
        }
    }
    if !samples.is_empty() {
        send(events, SourceEvent::Samples(samples), &dropped, loss);
    }
}

fn fail(
    task: &mut DtuTask,
    d: usize,
    fault: &Fault,
    at: Timestamp,
    events: &mpsc::Sender<SourceEvent>,
    loss: &mut LossLog,
) {
    let dropped = task.counters.dropped.clone();
    let shared = task.devices.len() > 1;
    let p = &mut task.devices[d];
    let (kind, reason) = match fault {
        Fault::Link(k, r) | Fault::Device(k, r) => (*k, r.clone()),
    };
    p.health.failed(kind);
    p.failures = p.failures.saturating_add(1);
    let outage = p.down_since.get_or_insert_with(Instant::now).elapsed();
    let wait = backoff(p.base_poll(), p.failures, outage, shared);
    p.retry_at = Some(Instant::now() + wait);
    if p.down.as_deref() == Some(reason.as_str()) || (p.up == Some(false) && kind == "connect") {
        return;
    }
    if p.up.is_none() && kind == "connect" {
        // Not connected since the start: the listener logs one summary of such DTUs after a
        // grace period rather than a line per device (a thousand DTUs starting up).
        debug!(device = %p.id, %reason, "device down");
    } else {
        warn!(device = %p.id, %reason, "device down");
    }
    p.up = Some(false);
    p.down = Some(reason.clone());
    send(
        events,
        SourceEvent::DeviceDown {
            device: p.id.clone(),
            at,
            reason,
        },
        &dropped,
        loss,
    );
}

/// Sends without waiting, as the Modbus source does: polling keeps its schedule whatever the
/// engine does; at the queue's bound the newest result is dropped and counted.
fn send(
    events: &mpsc::Sender<SourceEvent>,
    event: SourceEvent,
    dropped: &AtomicU64,
    loss: &mut LossLog,
) {
    const _: () = crate::queue::EVENTS_FROM_DIAL_IN.sent_as(crate::queue::WhenFull::DropNewest);
    match events.try_send(event) {
        Ok(()) => loss.recovered(),
        Err(mpsc::error::TrySendError::Full(_)) => {
            dropped.fetch_add(1, Ordering::Relaxed);
            loss.lost(1);
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_come_least_significant_first() {
        // 0b0000_0101: bits 0 and 2 set; 10 bits asked for, the second byte 0b10: bit 9.
        assert_eq!(
            words(RegisterKind::Coil, &[0b101, 0b10], 10),
            vec![1, 0, 1, 0, 0, 0, 0, 0, 0, 1]
        );
        assert_eq!(
            words(RegisterKind::Holding, &[0x12, 0x34, 0, 7], 2),
            vec![0x1234, 7]
        );
    }
}
