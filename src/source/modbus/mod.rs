//! Modbus TCP devices.
//!
//! Each device is an actor: one task owns its connection, polls it on its own schedule and sends
//! what it read to the engine. A slow or dead device only ever delays its own task. After a
//! timeout or a protocol error the connection is dropped and opened afresh, so a late reply can
//! never be taken as the answer to a later request. A device that keeps failing is retried with
//! exponential back-off up to a minute.
//!
//! The agent never writes to a machine: [`ReadOnly`] is the only handle to a connection, and it
//! offers function codes 1–4 and nothing else.

pub mod decode;
pub mod plan;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_modbus::client::{Context, Reader};
use tokio_modbus::{ExceptionCode, Slave};
use tracing::{debug, info, warn};

use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::{ModbusDevice, RegisterKind};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::source::{Sample, SourceEvent, Target};
use plan::ReadRequest;

/// The longest wait between attempts to reach a dead device.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A connection that can only read. Wrapping the client here is what makes "read only" a
/// property of the code rather than a promise.
struct ReadOnly(Context);

impl ReadOnly {
    /// Reads `count` registers or bits; bits come back as registers of 0 or 1.
    async fn read(
        &mut self,
        kind: RegisterKind,
        start: u16,
        count: u16,
    ) -> Result<Result<Vec<u16>, ExceptionCode>, tokio_modbus::Error> {
        let bits =
            |r: Result<Vec<bool>, ExceptionCode>| r.map(|b| b.into_iter().map(u16::from).collect());
        match kind {
            RegisterKind::Coil => self.0.read_coils(start, count).await.map(bits),
            RegisterKind::Discrete => self.0.read_discrete_inputs(start, count).await.map(bits),
            RegisterKind::Holding => self.0.read_holding_registers(start, count).await,
            RegisterKind::Input => self.0.read_input_registers(start, count).await,
        }
    }
}

/// Why a poll failed, in the words the health report uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollFault {
    Resolve(String),
    Connect(String),
    Timeout,
    Transport(String),
    Protocol(String),
}

impl PollFault {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            PollFault::Resolve(_) => "resolve",
            PollFault::Connect(_) => "connect",
            PollFault::Timeout => "timeout",
            PollFault::Transport(_) => "transport",
            PollFault::Protocol(_) => "protocol",
        }
    }
}

impl std::fmt::Display for PollFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PollFault::Resolve(e) => write!(f, "cannot resolve address: {e}"),
            PollFault::Connect(e) => write!(f, "cannot connect: {e}"),
            PollFault::Timeout => f.write_str("no answer within the timeout"),
            PollFault::Transport(e) => write!(f, "connection failed: {e}"),
            PollFault::Protocol(e) => write!(f, "protocol error: {e}"),
        }
    }
}

/// Polls one device until shutdown.
pub async fn run_device(
    device: ModbusDevice,
    events: mpsc::Sender<SourceEvent>,
    metrics: Metrics,
    mut shutdown: Shutdown,
) {
    let id: Arc<str> = Arc::from(device.id.as_str());
    let labels = [("device", device.id.as_str())];
    let polls = metrics.counter(
        "shopfloor_polls_total",
        "Polls of a Modbus device that answered.",
        &labels,
    );
    let up_gauge = metrics.gauge(
        "shopfloor_device_up",
        "1 while the device answers, 0 while it is down.",
        &labels,
    );
    let dropped_events = metrics.counter(
        "shopfloor_source_events_dropped_total",
        "Poll results dropped because the engine's queue was full.",
        &labels,
    );
    let span = tracing::info_span!("modbus", device = %id);
    let requests = plan::plan(&device);
    let fields: Vec<(Target, Arc<str>)> = device
        .fields
        .iter()
        .map(|f| {
            let target = match (&f.machine, &f.meter) {
                (Some(m), _) => Target::Machine(Arc::from(m.as_str())),
                (None, Some(m)) => Target::Meter(Arc::from(m.as_str())),
                (None, None) => Target::Meter(Arc::from("")),
            };
            (target, Arc::from(f.signal.as_str()))
        })
        .collect();
    for r in &requests {
        debug!(parent: &span, request = %r, "planned");
    }

    let mut ticker = tokio::time::interval(device.poll);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut conn: Option<ReadOnly> = None;
    // None until the first poll: the first success and the first failure are both news.
    let mut up: Option<bool> = None;
    let mut down: Option<PollFault> = None;
    let mut failures: u32 = 0;
    let mut next_attempt = Instant::now();

    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.wait() => break,
        }
        if Instant::now() < next_attempt {
            continue;
        }
        let at = Timestamp::now();
        let result = poll_once(&device, &requests, &fields, &mut conn, at, &span).await;
        let event = match result {
            Ok(samples) => {
                failures = 0;
                polls.fetch_add(1, Ordering::Relaxed);
                up_gauge.store(1, Ordering::Relaxed);
                down = None;
                if up != Some(true) {
                    up = Some(true);
                    info!(parent: &span, "device answers");
                    send(
                        &events,
                        SourceEvent::DeviceUp {
                            device: id.clone(),
                            at,
                        },
                        &dropped_events,
                        &span,
                    );
                }
                if samples.is_empty() {
                    continue;
                }
                SourceEvent::Samples(samples)
            }
            Err(fault) => {
                conn = None;
                up_gauge.store(0, Ordering::Relaxed);
                metrics
                    .counter(
                        "shopfloor_poll_errors_total",
                        "Failed polls of a Modbus device, by kind of failure.",
                        &[("device", device.id.as_str()), ("kind", fault.kind())],
                    )
                    .fetch_add(1, Ordering::Relaxed);
                failures = failures.saturating_add(1);
                let backoff = device
                    .poll
                    .saturating_mul(1u32 << failures.min(16))
                    .min(MAX_BACKOFF);
                next_attempt = Instant::now() + backoff;
                if down.as_ref() == Some(&fault) {
                    debug!(parent: &span, %fault, retry_in = ?backoff, "still down");
                    continue;
                }
                warn!(parent: &span, %fault, retry_in = ?backoff, "device down");
                up = Some(false);
                down = Some(fault.clone());
                SourceEvent::DeviceDown {
                    device: id.clone(),
                    at,
                    reason: fault.to_string(),
                }
            }
        };
        send(&events, event, &dropped_events, &span);
    }
}

/// Sends without waiting: a full channel means the engine is behind, and a device task must not
/// stall its polling for that. What cannot be sent is counted and logged.
fn send(
    events: &mpsc::Sender<SourceEvent>,
    event: SourceEvent,
    dropped: &AtomicU64,
    span: &tracing::Span,
) {
    if let Err(mpsc::error::TrySendError::Full(_)) = events.try_send(event) {
        let n = dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            warn!(parent: span, dropped = n, "engine queue full: poll results dropped");
        }
    }
}

async fn poll_once(
    device: &ModbusDevice,
    requests: &[ReadRequest],
    fields: &[(Target, Arc<str>)],
    conn: &mut Option<ReadOnly>,
    at: Timestamp,
    span: &tracing::Span,
) -> Result<Vec<Sample>, PollFault> {
    if conn.is_none() {
        let addr = resolve(&device.address).await?;
        let connect = tokio_modbus::client::tcp::connect_slave(addr, Slave(device.unit));
        let ctx = tokio::time::timeout(device.timeout, connect)
            .await
            .map_err(|_| PollFault::Timeout)?
            .map_err(|e| PollFault::Connect(e.to_string()))?;
        debug!(parent: span, %addr, "connected");
        *conn = Some(ReadOnly(ctx));
    }
    let Some(client) = conn.as_mut() else {
        return Err(PollFault::Connect("no connection".into()));
    };
    let mut samples = Vec::with_capacity(device.fields.len());
    for request in requests {
        let read = client.read(request.kind, request.start, request.count);
        let words = match tokio::time::timeout(device.timeout, read).await {
            Err(_) => return Err(PollFault::Timeout),
            Ok(Err(tokio_modbus::Error::Transport(e))) => {
                return Err(PollFault::Transport(e.to_string()));
            }
            Ok(Err(tokio_modbus::Error::Protocol(e))) => {
                return Err(PollFault::Protocol(e.to_string()));
            }
            Ok(Ok(Err(exception))) => {
                // The device refused this request; its other requests may still work.
                warn!(parent: span, request = %request, %exception, "exception response: fields of this request are skipped");
                continue;
            }
            Ok(Ok(Ok(words))) => words,
        };
        for planned in &request.fields {
            let field = &device.fields[planned.index];
            let from = usize::from(planned.offset);
            let to = from + usize::from(planned.len);
            let Some(slice) = words.get(from..to) else {
                warn!(parent: span, signal = %field.signal, "short answer: field skipped");
                continue;
            };
            match decode::decode(
                slice,
                field.data_type(),
                field.order,
                field.bit,
                field.scale,
                field.offset,
            ) {
                Ok(value) => {
                    let (target, signal) = &fields[planned.index];
                    samples.push(Sample {
                        target: target.clone(),
                        signal: signal.clone(),
                        value,
                        at,
                    });
                }
                Err(e) => warn!(parent: span, signal = %field.signal, error = %e, "value skipped"),
            }
        }
    }
    Ok(samples)
}

async fn resolve(address: &str) -> Result<SocketAddr, PollFault> {
    let mut addrs = tokio::net::lookup_host(address)
        .await
        .map_err(|e| PollFault::Resolve(e.to_string()))?;
    addrs
        .next()
        .ok_or_else(|| PollFault::Resolve(format!("`{address}` has no address")))
}
