//! The device actor: one task per `[[melsec]]` PLC owns its TCP connection, reads each poll
//! group on its schedule, one request at a time, and sends the values to the engine.
//!
//! Health works as for Modbus (`source::modbus::health`, keyed by the device id): a PLC that
//! cannot be reached, times out or answers with bytes that are not an MC answer is down with
//! the reason in words, retried with the Modbus source's exponential back-off (up to a minute), and its connection
//! is opened afresh (so a late answer is never taken for the next one). An end code on one
//! request skips that request's fields, which stay missing (never zero), and the other
//! requests go on; when every request gets one, the PLC is degraded: it answers but delivers
//! nothing. End codes that refuse the conversation itself (the port set to ASCII code, a
//! command the port does not take, a route to no CPU) make the PLC down with their reason.
//!
//! Each PLC has its own connection and task, so a dead PLC never delays another.
//!
//! The agent never writes to a machine: the only frames this task sends are built by
//! [`frame::batch_read_request`] and [`frame::random_read_request`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{Instrument, debug, info, warn};

use super::config::{MelsecDevice, MelsecField};
use super::decode;
use super::frame::{self, CMD_RANDOM_READ, Framing, McError, Route};
use super::plan::{self, PollGroup, Read, Request, Slice};
use crate::metrics::Metrics;
use crate::model::{FieldError, Sample, SourceEvent};
use crate::queue::LossLog;
use crate::shutdown::Shutdown;
use crate::source::field_errors::{self, Failed, FieldErrorCounts};
use crate::source::modbus::health::Health;
use crate::source::modbus::{Targets, backoff, next_tick};

/// The counter of poll results dropped at the engine queue's bound (the Modbus source's).
pub const SOURCE_EVENTS_DROPPED: &str = "shopfloor_source_events_dropped_total";

/// Why a poll failed as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    Resolve(String),
    Connect(String),
    Timeout,
    Transport(String),
    Protocol(String),
    /// An end code that refuses every request of this kind, with the command it answered.
    Refused {
        code: u16,
        command: u16,
    },
}

impl Fault {
    /// The error kind the device health counts it under.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Resolve(_) => "resolve",
            Fault::Connect(_) => "connect",
            Fault::Timeout => "timeout",
            Fault::Transport(_) => "transport",
            Fault::Protocol(_) => "protocol",
            Fault::Refused { .. } => "exception",
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Resolve(e) => write!(f, "cannot resolve the PLC's host: {e}"),
            Fault::Connect(e) => write!(
                f,
                "cannot connect: {e}. Check that the PLC is on the network and that GX Works \
                 opened this port for the MC protocol (SLMP) over TCP, and that the parameters \
                 were written to the PLC and the CPU reset"
            ),
            Fault::Timeout => f.write_str(
                "no answer within the timeout (is the port an MC protocol port, with binary code?)",
            ),
            Fault::Transport(e) => write!(f, "connection failed: {e}"),
            Fault::Protocol(e) => write!(f, "protocol error: {e}"),
            Fault::Refused { code, command } => {
                write!(f, "{}", McError::EndCode(*code))?;
                if *command == CMD_RANDOM_READ && *code == 0xC059 {
                    f.write_str(
                        ". If batch reads work, this PLC does not take random reads: set \
                         random_read = false for it",
                    )?;
                }
                Ok(())
            }
        }
    }
}

/// End codes that refuse the conversation, not one request: the port is set to ASCII code,
/// does not take the command, or the route names no CPU. The PLC is down until they go away.
fn refuses_everything(code: u16) -> bool {
    matches!(code, 0xC050 | 0xC059 | 0xC05F)
}

struct Scheduled {
    group: PollGroup,
    next: Instant,
    /// Offset of this group's requests in `Polled::refused`.
    first_request: usize,
}

/// The PLC as its task keeps it.
struct Polled {
    /// For the per-field error counters.
    metrics: Metrics,
    id: Arc<str>,
    address: String,
    route: Route,
    four_e: bool,
    serial: u16,
    timeout: Duration,
    timer: u16,
    /// The device's fields, shared with its profile and with every other device of it: a
    /// value's type, scale and offset are read from its field as it is decoded, so a hundred
    /// PLCs of one 1,000-field profile hold one field list, not a hundred compact copies.
    fields: Arc<[MelsecField]>,
    targets: Targets,
    /// The error counters of the fields that have failed, by field index (most never fail).
    errors: Vec<(usize, FieldErrorCounts)>,
    groups: Vec<Scheduled>,
    health: Health,
    span: tracing::Span,
    up: Option<bool>,
    down: Option<Fault>,
    failures: u32,
    /// When the present outage began; `None` while the PLC answers.
    down_since: Option<Instant>,
    retry_at: Option<Instant>,
    /// The end code each request last got, so a lasting refusal is logged once.
    refused: Vec<Option<u16>>,
    degraded: Option<String>,
    events: mpsc::Sender<SourceEvent>,
    dropped: Arc<AtomicU64>,
    loss: LossLog,
}

impl Polled {
    fn new(
        device: &MelsecDevice,
        metrics: &Metrics,
        events: mpsc::Sender<SourceEvent>,
        start: Instant,
    ) -> Self {
        let id: Arc<str> = Arc::from(device.id.as_str());
        let span = tracing::info_span!("melsec", device = %id);
        let default = (device.machine.as_deref().map(|m| (true, m)))
            .or(device.meter.as_deref().map(|m| (false, m)));
        let targets =
            Targets::of_fields(device.fields.iter().map(|f| device.target_of(f)), default);
        let mut first_request = 0;
        let groups = plan::plan(device)
            .into_iter()
            .map(|group| {
                for r in &group.requests {
                    debug!(parent: &span, poll = ?group.poll, request = %r, "planned");
                }
                let s = Scheduled {
                    first_request,
                    next: start,
                    group,
                };
                first_request += s.group.requests.len();
                s
            })
            .collect();
        let address = device.address();
        let link = format!("melsec://{address}");
        // The PLC gives up on a request in the monitoring timer's 250 ms units: as long as
        // the agent waits, at least one unit.
        let timer = (device.timeout.as_millis() / 250).clamp(1, u128::from(u16::MAX)) as u16;
        Polled {
            metrics: metrics.clone(),
            health: Health::register(metrics, &device.id),
            refused: vec![None; first_request],
            degraded: None,
            address,
            route: device.route(),
            four_e: device.frame == super::config::FrameName::E4,
            serial: 0,
            timeout: device.timeout,
            timer,
            id,
            fields: device.fields.clone(),
            targets,
            errors: Vec::new(),
            groups,
            span,
            up: None,
            down: None,
            failures: 0,
            down_since: None,
            retry_at: None,
            events,
            dropped: metrics.counter(
                SOURCE_EVENTS_DROPPED,
                "Poll results dropped because the engine's queue, the polled samples' bounded buffer, was full.",
                &[("connection", &link)],
            ),
            loss: LossLog::new(
                "engine queue full: MELSEC poll results dropped (the engine is behind, e.g. waiting for a slow spool)",
                Duration::from_secs(60),
            ),
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

    fn framing(&mut self) -> Framing {
        if self.four_e {
            self.serial = self.serial.wrapping_add(1);
            Framing::E4 {
                serial: self.serial,
            }
        } else {
            Framing::E3
        }
    }

    /// Sends without waiting: a full queue drops the newest result (the next poll
    /// supersedes it), counted and logged.
    fn send(&mut self, event: SourceEvent) {
        const _: () = crate::queue::EVENTS_FROM_MELSEC.sent_as(crate::queue::WhenFull::DropNewest);
        match self.events.try_send(event) {
            Ok(()) => self.loss.recovered(),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                self.loss.lost(1);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

/// Polls one PLC until shutdown.
pub fn run(
    device: MelsecDevice,
    events: mpsc::Sender<SourceEvent>,
    metrics: Metrics,
    shutdown: Shutdown,
) -> impl std::future::Future<Output = ()> + Send + use<> {
    let p = Polled::new(&device, &metrics, events, Instant::now());
    let span = p.span.clone();
    async move {
        let mut p = p;
        poll(&mut p, shutdown).await;
        p.loss.finish();
    }
    .instrument(span)
}

async fn poll(p: &mut Polled, mut shutdown: Shutdown) {
    let mut conn: Option<TcpStream> = None;
    loop {
        let Some((g, due)) = (0..p.groups.len())
            .map(|g| (g, p.due(g)))
            .min_by_key(|(_, due)| *due)
        else {
            return;
        };
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {}
            _ = shutdown.wait() => return,
        }
        let now = Instant::now();
        let at = Timestamp::now();
        p.retry_at = None;
        let s = &mut p.groups[g];
        s.next = next_tick(s.next, s.group.poll, now);
        match poll_group(&mut conn, p, g, at).await {
            Ok((samples, errors)) => {
                p.failures = 0;
                p.down_since = None;
                p.down = None;
                p.health.answered(at);
                if p.up != Some(true) {
                    p.up = Some(true);
                    info!(address = %p.address, "PLC answers");
                    let device = p.id.clone();
                    p.send(SourceEvent::DeviceUp { device, at });
                }
                degraded(p, at);
                if !samples.is_empty() {
                    p.send(SourceEvent::Samples(samples));
                }
                if !errors.is_empty() {
                    let device = p.id.clone();
                    p.send(SourceEvent::FieldErrors { device, at, errors });
                }
            }
            Err(fault) => {
                if !matches!(fault, Fault::Refused { .. }) {
                    conn = None;
                }
                fail(p, fault, at);
            }
        }
    }
}

fn fail(p: &mut Polled, fault: Fault, at: Timestamp) {
    p.health.failed(fault.kind());
    p.degraded = None;
    p.health.set_degraded(None);
    p.failures = p.failures.saturating_add(1);
    // One PLC per connection: the short ceiling of a device alone on its link.
    let outage = p.down_since.get_or_insert_with(Instant::now).elapsed();
    let wait = backoff(p.base_poll(), p.failures, outage, false);
    p.retry_at = Some(Instant::now() + wait);
    if p.down.as_ref() == Some(&fault) {
        debug!(%fault, retry_in = ?wait, "still down");
        return;
    }
    warn!(%fault, retry_in = ?wait, "PLC down");
    p.up = Some(false);
    let reason = fault.to_string();
    p.down = Some(fault);
    let device = p.id.clone();
    p.send(SourceEvent::DeviceDown { device, at, reason });
}

/// After an answered poll: whether every request now gets an end code (the PLC answers but
/// delivers nothing), reported when that changes.
fn degraded(p: &mut Polled, at: Timestamp) {
    let codes = refused_everything(&p.refused);
    let reason = codes.as_ref().map(|codes| {
        let words: Vec<String> = codes
            .iter()
            .map(|c| McError::EndCode(*c).to_string())
            .collect();
        format!("every request is refused: {}", words.join("; "))
    });
    if reason == p.degraded {
        return;
    }
    p.health
        .degraded
        .store(u64::from(codes.is_some()), Ordering::Relaxed);
    p.health.exception_code.store(
        codes
            .as_ref()
            .and_then(|c| c.first())
            .map_or(0, |c| u64::from(*c)),
        Ordering::Relaxed,
    );
    match &reason {
        Some(r) => warn!(reason = %r, "PLC degraded: it answers but delivers nothing"),
        None => info!("PLC delivers data again"),
    }
    p.degraded = reason.clone();
    let device = p.id.clone();
    p.send(SourceEvent::DeviceDegraded { device, at, reason });
}

/// The distinct end codes, in request order, when every request got one.
fn refused_everything(refused: &[Option<u16>]) -> Option<Vec<u16>> {
    if refused.is_empty() {
        return None;
    }
    let mut codes = Vec::new();
    for code in refused {
        let code = (*code)?;
        if !codes.contains(&code) {
            codes.push(code);
        }
    }
    Some(codes)
}

pub(super) async fn connect(address: &str, timeout: Duration) -> Result<TcpStream, Fault> {
    let addrs: Vec<_> = tokio::time::timeout(timeout, tokio::net::lookup_host(address))
        .await
        .map_err(|_| Fault::Resolve(format!("{address}: no answer within the timeout")))?
        .map_err(|e| Fault::Resolve(format!("{address}: {e}")))?
        .collect();
    let first = addrs
        .first()
        .ok_or_else(|| Fault::Resolve(format!("{address}: no address")))?;
    let stream = tokio::time::timeout(timeout, TcpStream::connect(first))
        .await
        .map_err(|_| Fault::Connect(format!("{address}: no answer within the timeout")))?
        .map_err(|e| Fault::Connect(format!("{address}: {e}")))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Sends one request and reads its whole answer, checked for length.
pub(super) async fn exchange(
    stream: &mut TcpStream,
    framing: Framing,
    request: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, Fault> {
    let io = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Fault::Transport("the PLC closed the connection".into())
        } else {
            Fault::Transport(e.to_string())
        }
    };
    tokio::time::timeout(timeout, async {
        stream.write_all(request).await.map_err(io)?;
        let header = framing.answer_header();
        let mut answer = vec![0; header];
        stream.read_exact(&mut answer).await.map_err(io)?;
        let total =
            frame::answer_length(framing, &answer).map_err(|e| Fault::Protocol(e.to_string()))?;
        answer.resize(total, 0);
        stream.read_exact(&mut answer[header..]).await.map_err(io)?;
        Ok(answer)
    })
    .await
    .map_err(|_| Fault::Timeout)?
}

/// One request's outcome: its data, or the end code it was refused with.
async fn read(
    stream: &mut TcpStream,
    p: &mut Polled,
    request: &Request,
) -> Result<Result<Vec<u8>, u16>, Fault> {
    let framing = p.framing();
    let (bytes, command) = match &request.read {
        Read::Batch(b) => (
            frame::batch_read_request(framing, &p.route, p.timer, b),
            frame::CMD_BATCH_READ,
        ),
        Read::Random(r) => (
            frame::random_read_request(framing, &p.route, p.timer, r),
            CMD_RANDOM_READ,
        ),
    };
    let answer = exchange(stream, framing, &bytes, p.timeout).await?;
    let data = match &request.read {
        Read::Batch(b) => frame::batch_read_reply(framing, &answer, b),
        Read::Random(r) => frame::random_read_reply(framing, &answer, r),
    };
    match data {
        Ok(range) => Ok(Ok(answer[range].to_vec())),
        Err(McError::EndCode(code)) if refuses_everything(code) => {
            Err(Fault::Refused { code, command })
        }
        Err(McError::EndCode(code)) => Ok(Err(code)),
        Err(e @ McError::Malformed(_)) => Err(Fault::Protocol(e.to_string())),
    }
}

/// Reads one group. `Ok` when the PLC answered every request (end codes included), with the
/// samples of the requests it did not refuse.
async fn poll_group(
    conn: &mut Option<TcpStream>,
    p: &mut Polled,
    g: usize,
    at: Timestamp,
) -> Result<(Vec<Sample>, Vec<FieldError>), Fault> {
    if conn.is_none() {
        *conn = Some(connect(&p.address, p.timeout).await?);
        debug!(address = %p.address, "connected");
    }
    let Some(stream) = conn.as_mut() else {
        return Err(Fault::Connect("no connection".into()));
    };
    let mut samples = Vec::with_capacity(p.fields.len());
    let mut failed: Vec<Failed> = Vec::new();
    let first = p.groups[g].first_request;
    for n in 0..p.groups[g].group.requests.len() {
        let request = p.groups[g].group.requests[n].clone();
        let answer = read(stream, p, &request).await?;
        let refused = &mut p.refused[first + n];
        match answer {
            Err(code) => {
                p.health.count_error("exception", 1);
                if *refused != Some(code) {
                    warn!(request = %request, end_code = format!("{code:#06X}"), reason = %McError::EndCode(code), "request refused: its fields are skipped");
                    *refused = Some(code);
                }
                let error = format!(
                    "the PLC refuses {request}: end code {code:#06X}, {}",
                    McError::EndCode(code)
                );
                for planned in &request.fields {
                    failed.push((planned.index, "exception", error.clone()));
                }
            }
            Ok(data) => {
                if refused.take().is_some() {
                    info!(request = %request, "request answered again");
                }
                decode_request(p, &request, &data, at, &mut samples, &mut failed);
            }
        }
    }
    let field = |index: usize| {
        let signal = p.fields.get(index)?.signal.clone();
        Some((p.targets.of(index).clone(), signal))
    };
    let errors = field_errors::collect_sparse(failed, &mut p.errors, field, &p.metrics, &p.id);
    Ok((samples, errors))
}

fn decode_request(
    p: &Polled,
    request: &Request,
    data: &[u8],
    at: Timestamp,
    samples: &mut Vec<Sample>,
    failed: &mut Vec<Failed>,
) {
    let points = match &request.read {
        Read::Batch(b) if b.in_bits() => match decode::bit_points(data, usize::from(b.count())) {
            Ok(points) => Some(points),
            Err(e) => {
                p.health.count_error("decode", request.fields.len() as u64);
                warn!(request = %request, error = %e, "answer in bit units not decoded: its fields are skipped");
                for planned in &request.fields {
                    failed.push((planned.index, "decode", format!("{request}: {e}")));
                }
                return;
            }
        },
        _ => None,
    };
    for planned in &request.fields {
        let field = &p.fields[planned.index];
        let value = match planned.at {
            Slice::Point(i) => match points.as_ref().and_then(|pts| pts.get(i)) {
                Some(b) => Ok(crate::model::Value::Bool(*b)),
                None => Err(("short", "the point is not in the answer".to_string())),
            },
            Slice::Words { offset, len, bit } => match data.get(offset..offset + len) {
                Some(bytes) => {
                    decode::decode(field.mc_type(), bytes, bit, field.scale, field.offset)
                        .map_err(|e| ("decode", e.to_string()))
                }
                None => Err((
                    "short",
                    format!(
                        "{} bytes in the answer, the field is at {offset}",
                        data.len()
                    ),
                )),
            },
        };
        match value {
            Ok(value) => samples.push(Sample {
                target: p.targets.of(planned.index).clone(),
                signal: field.signal.clone(),
                value,
                at,
            }),
            Err((kind, e)) => {
                p.health.count_error("decode", 1);
                debug!(signal = %field.signal, error = %e, "value skipped");
                failed.push((planned.index, kind, format!("{request}: {e}")));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plc_is_degraded_only_when_every_request_is_refused() {
        assert_eq!(refused_everything(&[]), None);
        assert_eq!(refused_everything(&[Some(0xC056), None]), None);
        assert_eq!(
            refused_everything(&[Some(0xC056), Some(0xC05B), Some(0xC056)]),
            Some(vec![0xC056, 0xC05B])
        );
    }

    #[test]
    fn a_refused_random_read_says_how_to_do_without() {
        let f = Fault::Refused {
            code: 0xC059,
            command: CMD_RANDOM_READ,
        };
        let words = f.to_string();
        assert!(words.contains("does not support this command"), "{words}");
        assert!(words.contains("random_read = false"), "{words}");
        assert_eq!(f.kind(), "exception");
    }
}
