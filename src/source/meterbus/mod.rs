//! What DL/T 645 electricity meters and CJ/T 188 water meters share: the 0x68 framing
//! ([`frame`]), the bus settings ([`config`]), the wire ([`link`]) and the task that polls the
//! meters of one bus ([`run`]). Each protocol adds its requests and its answers' decoding by
//! implementing [`BusMeter`].
//!
//! One task owns each bus and sends one request at a time, as an RS-485 line can only carry
//! one; meters on other buses never wait for it. Each meter is read every `poll`; a meter that
//! fails (silent, a checksum error, another meter answering, a frame that is not the
//! protocol's) is marked down with the reason in words and retried with back-off up to a
//! minute, and the connection is opened afresh, so a late answer can never be taken for the
//! next meter's. A meter that refuses a reading (an error answer) skips that reading; one that
//! refuses every reading is degraded, with the meter's error bits in words.
//!
//! The agent never writes to a meter: the protocols' frame modules can only build read
//! requests, and they are the only thing [`link::Link::exchange`] is given to send.

pub mod config;
pub mod frame;
pub mod link;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{Instrument, debug, info, warn};

use crate::metrics::{Metrics, RateLimited};
use crate::model::{Sample, SourceEvent, Target, Value};
use crate::shutdown::Shutdown;
use crate::source::modbus::health::Health;
use crate::source::modbus::{DOWN_LOG_EVERY, backoff, log_down};
use config::Bus;
use link::Link;

/// Why a meter (or the whole bus) delivered nothing, in words an engineer can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The port cannot be opened or the serial server cannot be reached: every meter on the
    /// bus is down.
    Connect(String),
    /// The connection broke.
    Transport(String),
    /// Not a byte within the timeout.
    Silent { timeout: Duration },
    /// Part of a frame, then silence.
    Cut { got: usize, timeout: Duration },
    /// The checksum disagrees with the bytes.
    Checksum(String),
    /// Another meter answered.
    Address(String),
    /// Bytes that are not the answer: another protocol, an echo, another identifier.
    Protocol(String),
}

impl Fault {
    /// The kind the device health counts the fault under (`source::modbus::health`).
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Connect(_) => "connect",
            Fault::Transport(_) => "transport",
            Fault::Silent { .. } | Fault::Cut { .. } => "timeout",
            Fault::Checksum(_) | Fault::Address(_) | Fault::Protocol(_) => "protocol",
        }
    }

    /// Whether nothing on the bus can be reached.
    pub fn is_bus_fault(&self) -> bool {
        matches!(self, Fault::Connect(_) | Fault::Transport(_))
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Connect(why) | Fault::Transport(why) => f.write_str(why),
            Fault::Silent { timeout } => write!(
                f,
                "silent meter: no answer within {timeout:?}; check the meter's address (on its \
                 nameplate), the A/B wires (swapped A and B is the usual cause when no meter \
                 answers), the baud rate and parity, and raise `timeout` for a slow meter"
            ),
            Fault::Cut { got, timeout } => write!(
                f,
                "the answer stopped after {got} bytes and {timeout:?}: interference on the line \
                 or a serial server that splits frames; check the wiring and raise `timeout`"
            ),
            Fault::Checksum(why) | Fault::Address(why) | Fault::Protocol(why) => f.write_str(why),
        }
    }
}

/// What one poll of one meter brought.
#[derive(Debug, Default)]
pub struct Poll {
    /// Readings that arrived and decoded.
    pub values: Vec<(Arc<str>, Value)>,
    /// Requests sent.
    pub asked: usize,
    /// Why each refused request was refused (the meter's error answer in words).
    pub refused: Vec<String>,
    /// The first refusal's error byte, when the protocol has one (DL/T 645's): what the
    /// health's `exception_code` shows while the meter is degraded.
    pub refusal_code: Option<u8>,
    /// Values that arrived but could not be decoded, with why.
    pub undecodable: Vec<String>,
}

/// One meter on a bus, as its protocol reads it.
pub trait BusMeter: Send + 'static {
    /// The device name the health lines and events carry: the `[[meter]]` id it feeds.
    fn device(&self) -> &str;
    /// The meter's address, for logs.
    fn address(&self) -> String;
    /// Reads the meter once: every reading, one request at a time. `Err` when the meter
    /// failed (the rest of its readings are not asked for).
    fn poll<'a>(
        &'a mut self,
        link: &'a mut Link,
        timeout: Duration,
    ) -> impl Future<Output = Result<Poll, Fault>> + Send + 'a;
}

/// One meter as the bus task keeps it.
struct Tracked<M> {
    meter: M,
    id: Arc<str>,
    target: Target,
    health: Health,
    span: tracing::Span,
    up: Option<bool>,
    down: Option<Fault>,
    degraded: Option<String>,
    failures: u32,
    /// When the present outage began; `None` while the meter answers.
    down_since: Option<Instant>,
    next: Instant,
    /// "meter down" at most once a minute (a meter failing every other poll on a noisy bus),
    /// and whether the last one was logged (its "meter answers" is then logged too).
    down_log: RateLimited,
    down_logged: bool,
}

/// Polls every meter of one bus until shutdown. `protocol` names the protocol in logs.
pub fn run<M: BusMeter>(
    protocol: &'static str,
    id: String,
    bus: Bus,
    meters: Vec<M>,
    events: mpsc::Sender<SourceEvent>,
    metrics: Metrics,
    shutdown: Shutdown,
) -> impl Future<Output = ()> + Send + use<M> {
    let start = Instant::now();
    let tracked: Vec<Tracked<M>> = meters
        .into_iter()
        .map(|meter| {
            let id: Arc<str> = Arc::from(meter.device());
            Tracked {
                span: tracing::info_span!("meter", protocol, meter = %id, address = %meter.address()),
                health: Health::register(&metrics, &id),
                target: Target::Meter(id.clone()),
                id,
                meter,
                up: None,
                down: None,
                down_log: RateLimited::new(DOWN_LOG_EVERY),
                down_logged: true,
                degraded: None,
                failures: 0,
                down_since: None,
                next: start,
            }
        })
        .collect();
    let span = tracing::info_span!("bus", protocol, bus = %id, wire = %bus.describe());
    poll_bus(bus, tracked, events, shutdown).instrument(span)
}

async fn poll_bus<M: BusMeter>(
    bus: Bus,
    mut meters: Vec<Tracked<M>>,
    events: mpsc::Sender<SourceEvent>,
    mut shutdown: Shutdown,
) {
    let mut link: Option<Link> = None;
    loop {
        let Some((m, due)) = meters
            .iter()
            .enumerate()
            .map(|(n, t)| (n, t.next))
            .min_by_key(|(_, due)| *due)
        else {
            return;
        };
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {}
            _ = shutdown.wait() => return,
        }
        let at = Timestamp::now();
        let conn = match link.as_mut() {
            Some(l) => l,
            None => match link::open(&bus).await {
                Ok(l) => link.insert(l),
                Err(fault) => {
                    for t in &mut meters {
                        if !fail(t, &fault, &bus, at, &events).await {
                            return;
                        }
                    }
                    continue;
                }
            },
        };
        let t = &mut meters[m];
        let outcome = tokio::select! {
            outcome = t.meter.poll(conn, bus.timeout) => outcome,
            _ = shutdown.wait() => return,
        };
        match outcome {
            Ok(poll) => {
                t.next = next_tick(due, bus.poll, Instant::now());
                if !answered(t, poll, at, &events).await {
                    return;
                }
            }
            Err(fault) => {
                // Whatever the meter may still send must not meet the next request.
                link = None;
                let all = fault.is_bus_fault();
                for (n, t) in meters.iter_mut().enumerate() {
                    if (all || n == m) && !fail(t, &fault, &bus, at, &events).await {
                        return;
                    }
                }
            }
        }
    }
}

/// The tick after `last` that is still ahead of `now`, keeping the schedule's phase.
fn next_tick(last: Instant, period: Duration, now: Instant) -> Instant {
    let mut next = last + period;
    if next <= now {
        let behind = now.duration_since(last).as_nanos() / period.as_nanos().max(1);
        next = last + period * u32::try_from(behind + 1).unwrap_or(u32::MAX);
    }
    next
}

/// Sends an event; `false` when the engine is gone. A meter's task waits for room (see
/// [`crate::queue::EVENTS_FROM_METERS`]).
async fn send(events: &mpsc::Sender<SourceEvent>, event: SourceEvent) -> bool {
    const _: () = crate::queue::EVENTS_FROM_METERS.sent_as(crate::queue::WhenFull::Block);
    events.send(event).await.is_ok()
}

async fn answered<M: BusMeter>(
    t: &mut Tracked<M>,
    poll: Poll,
    at: Timestamp,
    events: &mpsc::Sender<SourceEvent>,
) -> bool {
    t.failures = 0;
    t.down_since = None;
    t.down = None;
    t.health.answered(at);
    t.health.count_error("exception", poll.refused.len() as u64);
    t.health
        .count_error("decode", poll.undecodable.len() as u64);
    for why in &poll.undecodable {
        debug!(parent: &t.span, %why, "value skipped");
    }
    if t.up != Some(true) {
        t.up = Some(true);
        if t.down_logged {
            info!(parent: &t.span, "meter answers");
        } else {
            debug!(parent: &t.span, "meter answers");
        }
        if !send(
            events,
            SourceEvent::DeviceUp {
                device: t.id.clone(),
                at,
            },
        )
        .await
        {
            return false;
        }
    }
    let degraded = (poll.asked > 0 && poll.refused.len() == poll.asked).then(|| {
        let mut reasons: Vec<&str> = Vec::new();
        for r in &poll.refused {
            if !reasons.contains(&r.as_str()) {
                reasons.push(r);
            }
        }
        format!("every reading is refused: {}", reasons.join("; "))
    });
    if degraded != t.degraded {
        match &degraded {
            Some(r) => {
                warn!(parent: &t.span, reason = %r, "meter degraded: it answers but delivers nothing")
            }
            None => info!(parent: &t.span, "meter delivers data again"),
        }
        t.health
            .set_degraded(degraded.as_ref().map(|_| poll.refusal_code.unwrap_or(0)));
        t.degraded = degraded.clone();
        if !send(
            events,
            SourceEvent::DeviceDegraded {
                device: t.id.clone(),
                at,
                reason: degraded,
            },
        )
        .await
        {
            return false;
        }
    }
    if poll.values.is_empty() {
        return true;
    }
    let samples = poll
        .values
        .into_iter()
        .map(|(signal, value)| Sample {
            target: t.target.clone(),
            signal,
            value,
            at,
        })
        .collect();
    send(events, SourceEvent::Samples(samples)).await
}

async fn fail<M: BusMeter>(
    t: &mut Tracked<M>,
    fault: &Fault,
    bus: &Bus,
    at: Timestamp,
    events: &mpsc::Sender<SourceEvent>,
) -> bool {
    t.health.failed(fault.kind());
    t.degraded = None;
    t.health.set_degraded(None);
    t.failures = t.failures.saturating_add(1);
    // Meters share their bus: a silent one costs the others a timeout at every retry.
    let outage = t.down_since.get_or_insert_with(Instant::now).elapsed();
    let wait = backoff(bus.poll, t.failures, outage, true);
    t.next = Instant::now() + wait;
    if t.down.as_ref() == Some(fault) {
        debug!(parent: &t.span, %fault, retry_in = ?wait, "still down");
        return true;
    }
    t.down_logged = log_down(&mut t.down_log, &t.span, fault, wait, "meter down");
    t.up = Some(false);
    t.down = Some(fault.clone());
    send(
        events,
        SourceEvent::DeviceDown {
            device: t.id.clone(),
            at,
            reason: fault.to_string(),
        },
    )
    .await
}
