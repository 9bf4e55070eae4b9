//! Modbus devices: Modbus TCP, RTU over TCP, and RTU on serial ports.
//!
//! One task owns each connection (a TCP connection, or a serial port) and polls every device
//! (unit) on it, each on its own schedule, one request at a time: a gateway or an RS-485 line
//! can only carry one at a time anyway, and a single owner means no lock and no interleaving.
//! Devices on different connections never wait for each other, so a slow or dead device only
//! delays the devices that share its wire.
//!
//! After a timeout or a protocol error the connection is dropped and opened afresh, so a late
//! reply can never be taken as the answer to a later request. A device that keeps failing is
//! retried with exponential back-off up to a minute, which also keeps a dead unit from eating
//! a shared line's time. An exception on one request (say, illegal address) skips that
//! request's fields; the device's other requests go on.
//!
//! The agent never writes to a machine: [`link::ReadOnly`] is the only handle to a connection,
//! and it offers function codes 1–4 and nothing else.

pub mod config;
pub mod decode;
pub mod health;
pub mod link;
pub mod plan;
pub mod probe;
pub mod profile;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_modbus::Slave;
use tracing::{Instrument, debug, info, warn};

use crate::metrics::{Metrics, RateLimited};
use crate::model::{FieldError, Sample, SourceEvent, Target};
use crate::queue::LossLog;
use crate::shutdown::Shutdown;
use crate::source::field_errors::{self, Failed, FieldErrorCounts};
pub use config::Sections;
use config::{Link, ModbusDevice, ModbusField};
use health::Health;
use link::ReadOnly;
pub use link::{LinkSpec, PollFault};
use plan::{PollGroup, ReadRequest};

/// The longest wait between attempts to reach a dead device.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// One connection and the devices on it.
#[derive(Debug, Clone)]
pub struct Connection {
    pub link: LinkSpec,
    pub devices: Vec<ModbusDevice>,
    /// Where each device's first poll falls (by position in `devices`).
    pub phases: Vec<Phase>,
}

/// The longest a device's first poll waits after the start (see [`Phase`]).
pub const SPREAD_MAX: Duration = Duration::from_secs(5);

/// Where a device's first poll falls within its interval: device `n` of `of` (in config
/// order, over every connection) waits `n / of` of its interval, at most [`SPREAD_MAX`], then
/// keeps that phase. A hundred devices polled every second then answer ten milliseconds apart
/// instead of in the same instant, so their results reach the engine one at a time, not a
/// hundred poll results (100,000 samples at 100 × 1,000 registers) in one burst at start-up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Phase {
    pub n: u32,
    pub of: u32,
}

impl Phase {
    /// The wait before the first poll of a group polled every `poll`.
    pub fn offset(self, poll: Duration) -> Duration {
        if self.of == 0 {
            return Duration::ZERO;
        }
        let span = poll.min(SPREAD_MAX).as_nanos();
        let nanos = span * u128::from(self.n.min(self.of)) / u128::from(self.of);
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

/// Groups the configured devices by the connection they share, in config order.
pub fn connections<'a>(config: impl Into<Sections<'a>>) -> Vec<Connection> {
    connections_lazily(config).collect()
}

/// [`connections`], copying each connection's devices only when it is asked for: the agent
/// compacts one connection before it copies the next, so a large register map is never held
/// three times at once.
pub fn connections_lazily<'a>(
    config: impl Into<Sections<'a>>,
) -> impl Iterator<Item = Connection> + 'a {
    let config = config.into();
    let of = u32::try_from(config.devices.len()).unwrap_or(u32::MAX);
    let mut by_link: BTreeMap<Link, usize> = BTreeMap::new();
    let mut groups: Vec<(LinkSpec, Vec<usize>)> = Vec::new();
    for (n, device) in config.devices.iter().enumerate() {
        let link = device.link();
        let spec = match &link {
            Link::Tcp(a) => LinkSpec::Tcp(a.clone()),
            Link::RtuOverTcp(a) => LinkSpec::RtuOverTcp(a.clone()),
            Link::Serial(id) => match config.serial.iter().find(|s| &s.id == id) {
                Some(s) => LinkSpec::Serial(s.clone()),
                // `check` rejects a device naming an unknown port; skip it if one slips by.
                None => continue,
            },
        };
        match by_link.get(&link) {
            Some(&i) => groups[i].1.push(n),
            None => {
                by_link.insert(link, groups.len());
                groups.push((spec, vec![n]));
            }
        }
    }
    groups.into_iter().map(move |(link, devices)| Connection {
        link,
        phases: devices
            .iter()
            .map(|&n| Phase {
                n: u32::try_from(n).unwrap_or(u32::MAX),
                of,
            })
            .collect(),
        devices: devices
            .into_iter()
            .map(|n| config.devices[n].clone())
            .collect(),
    })
}

/// One device as its connection's task keeps it: the plan, and per field only what a sample
/// needs (the device's config is dropped once planned).
struct Polled {
    id: Arc<str>,
    unit: Slave,
    timeout: Duration,
    inter_request_delay: Option<Duration>,
    poll: Duration,
    /// The device's fields, shared with its profile and with every other device of it: a
    /// sample's codec is made from its field as it is decoded, so a hundred devices of one
    /// 1,000-field profile hold one field list, not a hundred compact copies.
    fields: Arc<[ModbusField]>,
    targets: Targets,
    /// The error counters of the fields that have failed, sorted by field index (most fields
    /// never fail).
    errors: Vec<(usize, FieldErrorCounts)>,
    groups: Vec<Scheduled>,
    health: Health,
    span: tracing::Span,
    /// None until the first poll: the first success and the first failure are both news.
    up: Option<bool>,
    down: Option<PollFault>,
    failures: u32,
    /// When the present outage began (its first failed poll); `None` while the device answers.
    down_since: Option<Instant>,
    /// Whether other devices share the connection: a dead one then costs them a timeout at
    /// every retry, so it is retried less often (see [`backoff`]).
    shared: bool,
    /// While backing off: no poll before this.
    retry_at: Option<Instant>,
    /// The exception each request last got, so a lasting refusal is logged once.
    refused: Vec<Option<tokio_modbus::ExceptionCode>>,
    /// Why the device delivers nothing while it answers (every request refused), as last
    /// reported.
    degraded: Option<String>,
    /// For the per-field error counters, made on a field's first error.
    metrics: Metrics,
    /// "device down" at most once a minute: a device that fails every other poll would
    /// otherwise log a line down and a line up at every poll.
    down_log: RateLimited,
    /// Whether the last "device down" was logged (its "device answers" is then logged too).
    down_logged: bool,
}

/// Where a device's fields' values go: one shared name per machine or meter, so a sample costs
/// a reference count. Usually every field goes to the device's machine or meter, and then no
/// list per field is kept.
pub struct Targets {
    /// The first field's (or the device's, without fields).
    first: Target,
    /// Each field's, when they differ; empty when all are `first`.
    each: Box<[Target]>,
}

impl Targets {
    /// The targets of `device`'s fields (the field's own machine or meter, else the device's).
    pub fn new(device: &ModbusDevice) -> Targets {
        let default = (device.machine.as_deref().map(|m| (true, m)))
            .or(device.meter.as_deref().map(|m| (false, m)));
        Targets::of_fields(device.fields.iter().map(|f| device.target_of(f)), default)
    }

    /// The targets of a device's fields, given in order as `(true, machine)` or `(false, meter)`
    /// (`None` only in a config that failed its check), and the device's own, `default`, for a
    /// device without fields. Any polled source's device can use it.
    pub fn of_fields<'a>(
        fields: impl Iterator<Item = Option<(bool, &'a str)>> + Clone,
        default: Option<(bool, &'a str)>,
    ) -> Targets {
        let make = |target: Option<(bool, &str)>| match target.unwrap_or((false, "")) {
            (true, m) => Target::Machine(Arc::from(m)),
            (false, m) => Target::Meter(Arc::from(m)),
        };
        let same =
            |t: &Target, target: Option<(bool, &str)>| match (t, target.unwrap_or((false, ""))) {
                (Target::Machine(n), (true, m)) | (Target::Meter(n), (false, m)) => &**n == m,
                _ => false,
            };
        let first = make(fields.clone().next().flatten().or(default));
        if fields.clone().all(|target| same(&first, target)) {
            return Targets {
                first,
                each: Box::default(),
            };
        }
        let mut distinct = vec![first.clone()];
        let each = fields
            .map(|target| match distinct.iter().find(|t| same(t, target)) {
                Some(t) => t.clone(),
                None => {
                    let t = make(target);
                    distinct.push(t.clone());
                    t
                }
            })
            .collect();
        Targets { first, each }
    }

    /// Field `index`'s.
    pub fn of(&self, index: usize) -> &Target {
        self.each.get(index).unwrap_or(&self.first)
    }

    /// Every field's, each field once (the same target may come more than once).
    pub fn all(&self) -> impl Iterator<Item = &Target> {
        std::iter::once(&self.first).chain(self.each.iter())
    }
}

struct Scheduled {
    group: PollGroup,
    next: Instant,
    /// Offset of this group's requests in `Polled::refused`.
    first_request: usize,
}

impl Polled {
    fn new(device: ModbusDevice, metrics: &Metrics, start: Instant, phase: Phase) -> Self {
        let id: Arc<str> = Arc::from(device.id.as_str());
        let span = tracing::info_span!("modbus", device = %id);
        let targets = Targets::new(&device);
        let mut first_request = 0;
        let groups: Vec<Scheduled> = plan::plan(&device)
            .into_iter()
            .map(|group| {
                for r in &group.requests {
                    debug!(parent: &span, poll = ?group.poll, request = %r, "planned");
                }
                let s = Scheduled {
                    first_request,
                    next: start + phase.offset(group.poll),
                    group,
                };
                first_request += s.group.requests.len();
                s
            })
            .collect();
        Polled {
            health: Health::register(metrics, &device.id),
            refused: vec![None; first_request],
            degraded: None,
            metrics: metrics.clone(),
            down_log: RateLimited::new(DOWN_LOG_EVERY),
            down_logged: true,
            unit: device.unit,
            timeout: device.timeout,
            inter_request_delay: device.inter_request_delay,
            poll: device.poll,
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
            shared: false,
            retry_at: None,
        }
    }

    /// When this device's group `g` is due, back-off included.
    fn due(&self, g: usize) -> Instant {
        let next = self.groups[g].next;
        match self.retry_at {
            Some(retry) => next.max(retry),
            None => next,
        }
    }

    /// The device's shortest interval, which back-off starts from.
    fn base_poll(&self) -> Duration {
        self.groups
            .iter()
            .map(|g| g.group.poll)
            .min()
            .unwrap_or(self.poll)
    }
}

/// Polls every device of one connection until shutdown.
pub fn run_connection(
    connection: Connection,
    events: mpsc::Sender<SourceEvent>,
    metrics: Metrics,
    shutdown: Shutdown,
) -> impl std::future::Future<Output = ()> + Send + use<> {
    // Planned and compacted now, before the task starts, so the caller can drop the
    // connection's copy of the config before it makes the next one.
    let start = Instant::now();
    let mut phases = connection.phases.into_iter();
    let mut devices: Vec<Polled> = connection
        .devices
        .into_iter()
        .map(|d| Polled::new(d, &metrics, start, phases.next().unwrap_or_default()))
        .filter(|p| !p.groups.is_empty())
        .collect();
    let shared = devices.len() > 1;
    for p in &mut devices {
        p.shared = shared;
    }
    let link = connection.link.to_string();
    let mut dropped = Dropped {
        counter: metrics.counter(
            SOURCE_EVENTS_DROPPED,
            "Poll results dropped because the engine's queue, the Modbus samples' bounded buffer, was full.",
            &[("connection", &link)],
        ),
        log: LossLog::new(
            "engine queue full: Modbus poll results dropped (the engine is behind, e.g. waiting for a slow spool)",
            DROP_LOG_EVERY,
        ),
    };
    let span = tracing::info_span!("modbus", connection = %link);
    async move {
        poll_devices(connection.link, devices, events, &mut dropped, shutdown).await;
        dropped.log.finish();
    }
    .instrument(span)
}

/// The counter of poll results dropped at the engine queue's bound, by connection.
pub const SOURCE_EVENTS_DROPPED: &str = "shopfloor_source_events_dropped_total";

/// How often dropped poll results are logged at most (with the count since the last line).
const DROP_LOG_EVERY: Duration = Duration::from_secs(60);

/// Poll results dropped at the engine queue's bound: counted, and logged as [`LossLog`] says.
struct Dropped {
    counter: Arc<AtomicU64>,
    log: LossLog,
}

async fn poll_devices(
    link: LinkSpec,
    mut devices: Vec<Polled>,
    events: mpsc::Sender<SourceEvent>,
    dropped: &mut Dropped,
    mut shutdown: Shutdown,
) {
    if devices.is_empty() {
        return;
    }
    let mut conn: Option<ReadOnly> = None;
    loop {
        // The most overdue group of any device goes first.
        let Some((d, g, due)) = devices
            .iter()
            .enumerate()
            .flat_map(|(d, p)| (0..p.groups.len()).map(move |g| (d, g, p.due(g))))
            .min_by_key(|(_, _, due)| *due)
        else {
            return;
        };
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {}
            _ = shutdown.wait() => return,
        }
        let now = Instant::now();
        let at = Timestamp::now();
        {
            let p = &mut devices[d];
            p.retry_at = None;
            let s = &mut p.groups[g];
            s.next = next_tick(s.next, s.group.poll, now);
        }
        let outcome = poll_group(&link, &mut conn, &mut devices[d], g, at).await;
        match outcome {
            Ok((samples, errors)) => {
                let p = &mut devices[d];
                p.failures = 0;
                p.down_since = None;
                p.down = None;
                p.health.answered(at);
                if p.up != Some(true) {
                    p.up = Some(true);
                    if p.down_logged {
                        info!(parent: &p.span, link = %link, unit = p.unit.0, "device answers");
                    } else {
                        debug!(parent: &p.span, link = %link, unit = p.unit.0, "device answers");
                    }
                    send(
                        &events,
                        SourceEvent::DeviceUp {
                            device: p.id.clone(),
                            at,
                        },
                        dropped,
                    );
                }
                degraded(p, at, &events, dropped);
                if !samples.is_empty() {
                    send(&events, SourceEvent::Samples(samples), dropped);
                }
                if !errors.is_empty() {
                    send(
                        &events,
                        SourceEvent::FieldErrors {
                            device: p.id.clone(),
                            at,
                            errors,
                        },
                        dropped,
                    );
                }
            }
            Err(fault) => {
                // Whatever the device may still send must not meet the next request.
                conn = None;
                if fault.is_link_fault() {
                    // Nothing on this connection can be reached: every device is down.
                    for p in &mut devices {
                        fail(p, &fault, at, &events, dropped);
                    }
                } else {
                    fail(&mut devices[d], &fault, at, &events, dropped);
                }
            }
        }
    }
}

/// The tick after `last` that is still ahead of `now`, keeping the schedule's phase: a poll
/// that overran skips the ticks it missed rather than firing them in a burst.
pub fn next_tick(last: Instant, period: Duration, now: Instant) -> Instant {
    let next = last + period;
    if next > now {
        return next;
    }
    let behind = now.duration_since(last).as_nanos();
    let periods = behind / period.as_nanos().max(1) + 1;
    last + period * u32::try_from(periods).unwrap_or(u32::MAX)
}

/// For this long after a device stops answering, retries stay at most [`FAST_CEILING`] apart
/// ([`FAST_CEILING_SHARED`] on a shared connection).
pub const FAST_PHASE: Duration = Duration::from_secs(300);
/// The longest wait between retries of a device alone on its connection during
/// [`FAST_PHASE`] (or one poll, when that is longer).
pub const FAST_CEILING: Duration = Duration::from_secs(2);
/// The same for a device that shares its connection (an RS-485 line, a gateway): each retry
/// of a dead device costs the others one timeout.
pub const FAST_CEILING_SHARED: Duration = Duration::from_secs(10);

/// Back-off after the n-th failure in a row of an outage that began `outage` ago: 2ⁿ polls,
/// at most [`FAST_CEILING`] (or [`FAST_CEILING_SHARED`], or one poll when that is longer)
/// during the first [`FAST_PHASE`], so that a device back from a short outage (a power blip,
/// a cable replugged, a PLC restarted) is read again within seconds and its machine is not
/// counted offline for longer than it was; at most [`MAX_BACKOFF`] after that.
pub fn backoff(poll: Duration, failures: u32, outage: Duration, shared: bool) -> Duration {
    let fast = if shared {
        FAST_CEILING_SHARED
    } else {
        FAST_CEILING
    };
    let ceiling = if outage < FAST_PHASE {
        fast.max(poll).min(MAX_BACKOFF)
    } else {
        MAX_BACKOFF
    };
    poll.saturating_mul(1u32 << failures.min(16)).min(ceiling)
}

/// After an answered poll: whether every request of the device now gets an exception (it
/// answers, so it is up, but it delivers nothing), reported when that changes.
fn degraded(
    p: &mut Polled,
    at: Timestamp,
    events: &mpsc::Sender<SourceEvent>,
    dropped: &mut Dropped,
) {
    let now = refused_everything(&p.refused);
    let reason = now.as_ref().map(|codes| {
        let words: Vec<String> = codes
            .iter()
            .map(|c| format!("{c} (exception {:#04x})", u8::from(*c)))
            .collect();
        format!(
            "every request is answered with an exception: {}",
            words.join(", ")
        )
    });
    if reason == p.degraded {
        return;
    }
    p.health
        .set_degraded(now.as_ref().and_then(|c| c.first()).map(|c| u8::from(*c)));
    match &reason {
        Some(r) => {
            warn!(parent: &p.span, reason = %r, "device degraded: it answers but delivers nothing")
        }
        None => info!(parent: &p.span, "device delivers data again"),
    }
    p.degraded = reason.clone();
    send(
        events,
        SourceEvent::DeviceDegraded {
            device: p.id.clone(),
            at,
            reason,
        },
        dropped,
    );
}

/// The distinct refusals (exceptions; an S7 PLC's item errors), in request order, when every
/// request got one.
pub fn refused_everything<T: Copy + PartialEq>(refused: &[Option<T>]) -> Option<Vec<T>> {
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

fn fail(
    p: &mut Polled,
    fault: &PollFault,
    at: Timestamp,
    events: &mpsc::Sender<SourceEvent>,
    dropped: &mut Dropped,
) {
    p.health.failed(fault.kind());
    // Down is worse than degraded; once it answers again, degraded is judged afresh.
    p.degraded = None;
    p.health.set_degraded(None);
    p.failures = p.failures.saturating_add(1);
    let outage = p.down_since.get_or_insert_with(Instant::now).elapsed();
    let wait = backoff(p.base_poll(), p.failures, outage, p.shared);
    p.retry_at = Some(Instant::now() + wait);
    if p.down.as_ref() == Some(fault) {
        debug!(parent: &p.span, %fault, retry_in = ?wait, "still down");
        return;
    }
    p.down_logged = log_down(&mut p.down_log, &p.span, fault, wait, "device down");
    p.up = Some(false);
    p.down = Some(fault.clone());
    send(
        events,
        SourceEvent::DeviceDown {
            device: p.id.clone(),
            at,
            reason: fault.to_string(),
        },
        dropped,
    );
}

/// Sends without waiting: a full channel means the engine is behind (waiting for a slow spool,
/// say), and a connection's task must not stall its polling for that. The engine's queue is
/// the poll results' bounded buffer; at its bound the newest result is dropped, counted (also
/// on the board) and logged once a minute with the count, and with the total when sends get
/// through again and at shutdown.
fn send(events: &mpsc::Sender<SourceEvent>, event: SourceEvent, dropped: &mut Dropped) {
    const _: () = crate::queue::EVENTS_FROM_MODBUS.sent_as(crate::queue::WhenFull::DropNewest);
    match events.try_send(event) {
        Ok(()) => dropped.log.recovered(),
        Err(mpsc::error::TrySendError::Full(_)) => {
            dropped.counter.fetch_add(1, Ordering::Relaxed);
            dropped.log.lost(1);
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {}
    }
}

/// How often a device's (or a bus meter's) "down" line may be logged.
pub(crate) const DOWN_LOG_EVERY: Duration = Duration::from_secs(60);

/// Logs a device going down unless one was logged in the last [`DOWN_LOG_EVERY`] (then at
/// debug level); the next line says how many outages were not logged. Whether it was logged.
pub(crate) fn log_down(
    log: &mut RateLimited,
    span: &tracing::Span,
    fault: &dyn std::fmt::Display,
    wait: Duration,
    what: &'static str,
) -> bool {
    match log.due(std::time::Instant::now()) {
        Some(0) => {
            warn!(parent: span, %fault, retry_in = ?wait, "{what}");
            true
        }
        Some(unlogged) => {
            warn!(parent: span, %fault, retry_in = ?wait, unlogged, "{what} (`unlogged` outages since the last such line, at most one a minute)");
            true
        }
        None => {
            debug!(parent: span, %fault, retry_in = ?wait, "{what}");
            false
        }
    }
}

/// Reads one group of one device. `Ok` when the device answered every request (exceptions
/// included: refusing is an answer), with the samples of the requests it did not refuse and
/// the errors of the fields that delivered nothing.
async fn poll_group(
    link: &LinkSpec,
    conn: &mut Option<ReadOnly>,
    p: &mut Polled,
    g: usize,
    at: Timestamp,
) -> Result<(Vec<Sample>, Vec<FieldError>), PollFault> {
    let timeout = p.timeout;
    if conn.is_none() {
        *conn = Some(link::open(link, timeout).await?);
        debug!(parent: &p.span, %link, "connected");
    }
    let Some(client) = conn.as_mut() else {
        return Err(PollFault::Connect("no connection".into()));
    };
    client.set_inter_request_delay(p.inter_request_delay);
    let unit = p.unit;
    let span = p.span.clone();
    let scheduled = &p.groups[g];
    let mut samples = Vec::with_capacity(p.fields.len());
    // (field index, kind, error in words) of the fields that delivered nothing.
    let mut failed: Vec<Failed> = Vec::new();
    for (n, request) in scheduled.group.requests.iter().enumerate() {
        let answer = client
            .read(unit, request.kind, request.start, request.count, timeout)
            .await?;
        let refused = &mut p.refused[scheduled.first_request + n];
        let words = match answer {
            Err(exception) => {
                p.health.count_error("exception", 1);
                if *refused != Some(exception) {
                    warn!(parent: &span, request = %request, %exception, "exception response: fields of this request are skipped");
                    *refused = Some(exception);
                }
                let error = exception_in_words(exception, request);
                for planned in &request.fields {
                    failed.push((planned.index, "exception", error.clone()));
                }
                continue;
            }
            Ok(words) => {
                if refused.take().is_some() {
                    info!(parent: &span, request = %request, "request answered again");
                }
                words
            }
        };
        decode_request(p, request, &words, at, &mut samples, &mut failed);
    }
    let errors = collect_errors(p, failed);
    Ok((samples, errors))
}

/// The errors of one poll's failed fields, each counted on its field's counter.
fn collect_errors(p: &mut Polled, failed: Vec<Failed>) -> Vec<FieldError> {
    let field = |index: usize| {
        let signal = p.fields.get(index)?.signal.clone();
        Some((p.targets.of(index).clone(), signal))
    };
    field_errors::collect_sparse(failed, &mut p.errors, field, &p.metrics, &p.id)
}

/// A field's error for an exception to its request, with what to look at.
fn exception_in_words(exception: tokio_modbus::ExceptionCode, request: &ReadRequest) -> String {
    use tokio_modbus::ExceptionCode::*;
    let hint = match exception {
        IllegalDataAddress => {
            "; the device has no such register: check the field's register table, address \
             and address_base against its register map"
        }
        IllegalFunction => "; the device does not offer this register table",
        ServerDeviceBusy | GatewayTargetDevice | GatewayPathUnavailable => {
            "; the device or its gateway could not answer now"
        }
        _ => "",
    };
    format!("exception {exception} to {request}{hint}")
}

fn decode_request(
    p: &Polled,
    request: &ReadRequest,
    words: &[u16],
    at: Timestamp,
    samples: &mut Vec<Sample>,
    failed: &mut Vec<Failed>,
) {
    for planned in &request.fields {
        let field = &p.fields[planned.index];
        let from = usize::from(planned.offset);
        let to = from + usize::from(planned.len);
        let Some(slice) = words.get(from..to) else {
            p.health.count_error("decode", 1);
            warn!(parent: &p.span, signal = %field.signal, got = words.len(), "short answer: field skipped");
            failed.push((
                planned.index,
                "short",
                format!(
                    "short answer to {request}: {} values, the field needs values {from} to {} \
                     of it; the device's register map may differ from the config",
                    words.len(),
                    to - 1
                ),
            ));
            continue;
        };
        match decode::Codec::from(field).decode(slice) {
            Ok(value) => samples.push(Sample {
                target: p.targets.of(planned.index).clone(),
                signal: field.signal.clone(),
                value,
                at,
            }),
            Err(e) => {
                p.health.count_error("decode", 1);
                debug!(parent: &p.span, signal = %field.signal, error = %e, "value skipped");
                failed.push((planned.index, "decode", format!("does not decode: {e}")));
            }
        }
    }
}

/// Entry points for the fuzz targets under `fuzz/`, not an API: the whole response path of a
/// poll (framing, the device's answer, cutting fields out of it, decoding) behind a
/// transport that replays bytes the fuzzer made up instead of a socket.
#[doc(hidden)]
pub mod fuzzing {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

    use crate::source::modbus::config::ModbusDevice;

    use super::*;

    /// A device's side of a connection: reads get the next bytes of the reply script, in the
    /// chunk sizes the script says (so a frame can arrive a byte at a time), then end of
    /// stream.
    #[derive(Debug)]
    struct Replay {
        chunks: std::collections::VecDeque<Vec<u8>>,
    }

    impl Replay {
        fn read(&mut self, buf: &mut ReadBuf<'_>) {
            if let Some(chunk) = self.chunks.front_mut() {
                let n = chunk.len().min(buf.remaining());
                buf.put_slice(&chunk[..n]);
                chunk.drain(..n);
                if chunk.is_empty() {
                    self.chunks.pop_front();
                }
            }
        }
    }

    /// Polls every group of `device` once over a connection whose answers are `chunks`, in
    /// order, with RTU or TCP framing; after a fault the connection is opened afresh on what
    /// is left, as the real loop does. Returns the samples and the faults. The replay
    /// ends in end of stream, never in silence, so no input waits out a timeout.
    pub fn poll_replayed(
        device: ModbusDevice,
        rtu: bool,
        chunks: Vec<Vec<u8>>,
    ) -> (Vec<Sample>, Vec<PollFault>) {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        else {
            return (Vec::new(), Vec::new());
        };
        runtime.block_on(async move {
            let metrics = Metrics::new();
            let mut p = Polled::new(device, &metrics, Instant::now(), Phase::default());
            let link = LinkSpec::Tcp("replay".into());
            let replay = Arc::new(std::sync::Mutex::new(Some(Replay {
                chunks: chunks.into(),
            })));
            let mut samples = Vec::new();
            let mut faults = Vec::new();
            for g in 0..p.groups.len() {
                // A fresh connection per group: the same bytes continue, as after a reconnect.
                let Some(transport) = replay.lock().ok().and_then(|mut r| r.take()) else {
                    break;
                };
                let transport = Shared(replay.clone(), Some(transport));
                let mut conn = Some(link::attach(transport, rtu));
                match poll_group(&link, &mut conn, &mut p, g, Timestamp::UNIX_EPOCH).await {
                    Ok((s, _)) => samples.extend(s),
                    Err(fault) => faults.push(fault),
                }
                drop(conn);
            }
            (samples, faults)
        })
    }

    /// A [`Replay`] that goes back to the shared slot when the connection drops it; requests
    /// written to it are thrown away.
    #[derive(Debug)]
    struct Shared(Arc<std::sync::Mutex<Option<Replay>>>, Option<Replay>);

    impl Drop for Shared {
        fn drop(&mut self) {
            if let (Ok(mut slot), Some(r)) = (self.0.lock(), self.1.take()) {
                *slot = Some(r);
            }
        }
    }

    impl AsyncRead for Shared {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            if let Some(r) = self.1.as_mut() {
                r.read(buf);
            }
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Shared {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_going_down_is_logged_at_most_once_a_minute() {
        let mut log = RateLimited::new(DOWN_LOG_EVERY);
        let span = tracing::Span::none();
        let fault = PollFault::Timeout;
        let wait = Duration::from_secs(1);
        // The first outage is logged; a second and third within the minute (a device failing
        // every other poll) are not, so their "device answers" is not logged either.
        assert!(log_down(&mut log, &span, &fault, wait, "device down"));
        assert!(!log_down(&mut log, &span, &fault, wait, "device down"));
        assert!(!log_down(&mut log, &span, &fault, wait, "device down"));
    }

    #[test]
    fn a_device_is_degraded_only_when_every_request_is_refused() {
        use tokio_modbus::ExceptionCode::{IllegalDataAddress, ServerDeviceBusy};
        assert_eq!(refused_everything::<tokio_modbus::ExceptionCode>(&[]), None);
        // One request of three still delivers: not degraded.
        assert_eq!(
            refused_everything(&[Some(IllegalDataAddress), None, Some(IllegalDataAddress)]),
            None
        );
        // All refused: each distinct exception once, in request order.
        assert_eq!(
            refused_everything(&[
                Some(ServerDeviceBusy),
                Some(IllegalDataAddress),
                Some(ServerDeviceBusy)
            ]),
            Some(vec![ServerDeviceBusy, IllegalDataAddress])
        );
    }

    #[test]
    fn first_polls_are_spread_over_the_interval_up_to_five_seconds() {
        let s = Duration::from_secs(1);
        let phase = |n, of| Phase { n, of };
        // Device 0 of 100 at once, device 50 half a 1 s interval later, device 99 at 990 ms.
        assert_eq!(phase(0, 100).offset(s), Duration::ZERO);
        assert_eq!(phase(50, 100).offset(s), Duration::from_millis(500));
        assert_eq!(phase(99, 100).offset(s), Duration::from_millis(990));
        // A minute's interval is spread over SPREAD_MAX (5 s), not 60: 50/100 × 5 s = 2.5 s.
        assert_eq!(
            phase(50, 100).offset(Duration::from_secs(60)),
            Duration::from_millis(2500)
        );
        // No phase (probe, fuzzing): at once.
        assert_eq!(Phase::default().offset(s), Duration::ZERO);
    }

    #[test]
    fn missed_ticks_are_skipped_keeping_the_phase() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        // On time: the next tick is one period on.
        assert_eq!(next_tick(t0, s, t0 + Duration::from_millis(100)), t0 + s);
        // A poll that overran to 3.4 s: ticks 1, 2 and 3 are gone, the next is at 4 s.
        assert_eq!(
            next_tick(t0, s, t0 + Duration::from_millis(3400)),
            t0 + 4 * s
        );
        // Exactly on a tick counts as missed: the next is one further.
        assert_eq!(next_tick(t0, s, t0 + 2 * s), t0 + 3 * s);
    }

    /// One device with a coil and two holding registers, as the fuzz target's replay sees it.
    fn replay_device() -> ModbusDevice {
        let text = r#"
[site]
county = "c"
sector = "other"
enterprise = "e"

[[machine]]
id = "m1"
kind = "lathe"
cnc = true

[[modbus]]
id = "dev"
address = "127.0.0.1:502"
unit = 7
field = [
  { machine = "m1", signal = "run", register = "coil", address = 0, type = "bool" },
  { machine = "m1", signal = "parts", register = "holding", address = 0, type = "u32" },
]
"#;
        match crate::agent::config::load_str(text, "t.toml") {
            Ok(config) => config.modbus[0].clone(),
            Err(d) => panic!("{d}"),
        }
    }

    /// A Modbus TCP answer: transaction id, protocol 0, length, unit 7, then the PDU.
    fn tcp_frame(transaction: u16, pdu: &[u8]) -> Vec<u8> {
        let mut frame = transaction.to_be_bytes().to_vec();
        frame.extend([0, 0]);
        frame.extend((pdu.len() as u16 + 1).to_be_bytes());
        frame.push(7);
        frame.extend(pdu);
        frame
    }

    #[test]
    fn answers_of_the_right_size_become_samples() {
        let chunks = vec![
            tcp_frame(0, &[1, 1, 0b1]),
            tcp_frame(1, &[3, 4, 0, 1, 0, 2]),
        ];
        let (samples, faults) = fuzzing::poll_replayed(replay_device(), false, chunks);
        assert_eq!(faults, vec![]);
        let values: Vec<_> = samples.iter().map(|s| s.value.clone()).collect();
        // 0x0001_0002 = 65538.
        assert_eq!(
            values,
            vec![
                crate::model::Value::Bool(true),
                crate::model::Value::Int(65538)
            ]
        );
    }

    /// Found by the modbus_response fuzz target: an answer to "read 1 coil" with a byte count
    /// of 0 tripped an assertion inside tokio-modbus (a panic of the connection's task in a
    /// debug build, a silently short answer otherwise). It is the device's protocol error.
    #[test]
    fn an_answer_with_fewer_bits_than_asked_for_is_a_protocol_error() {
        let chunks = vec![tcp_frame(0, &[1, 0])];
        let (samples, faults) = fuzzing::poll_replayed(replay_device(), false, chunks);
        assert!(samples.is_empty(), "{samples:?}");
        assert!(
            matches!(&faults[..], [PollFault::Protocol(why)] if why.contains("asked for 1, the answer holds 0 bytes of bits")),
            "{faults:?}"
        );
    }

    #[test]
    fn an_answer_with_other_than_the_registers_asked_for_is_a_protocol_error() {
        for pdu in [&[3u8, 2, 0, 1][..], &[3, 6, 0, 1, 0, 2, 0, 3]] {
            let chunks = vec![tcp_frame(0, &[1, 1, 1]), tcp_frame(1, pdu)];
            let (_, faults) = fuzzing::poll_replayed(replay_device(), false, chunks);
            assert!(
                matches!(&faults[..], [PollFault::Protocol(why)] if why.contains("asked for 2, the answer holds")),
                "{pdu:?}: {faults:?}"
            );
        }
    }

    #[test]
    fn back_off_stays_within_seconds_for_five_minutes_then_doubles_up_to_a_minute() {
        let s = Duration::from_secs(1);
        let early = Duration::from_secs(30);
        let late = FAST_PHASE;
        // Alone on its connection: 2 s apart at most while the outage is young.
        let waits: Vec<u64> = (1..=7)
            .map(|n| backoff(s, n, early, false).as_secs())
            .collect();
        assert_eq!(waits, vec![2, 2, 2, 2, 2, 2, 2]);
        // Sharing an RS-485 line: 2, 4, 8, then 10 s apart.
        let waits: Vec<u64> = (1..=5)
            .map(|n| backoff(s, n, early, true).as_secs())
            .collect();
        assert_eq!(waits, vec![2, 4, 8, 10, 10]);
        // A slow poll is never retried faster than it is polled.
        assert_eq!(
            backoff(Duration::from_secs(5), 3, early, false).as_secs(),
            5
        );
        // After five minutes: 2¹, 2², 2³ … polls of 1 s, capped at 60 s.
        let waits: Vec<u64> = (1..=7)
            .map(|n| backoff(s, n, late, false).as_secs())
            .collect();
        assert_eq!(waits, vec![2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(backoff(s, 1000, late, true), MAX_BACKOFF);
    }
}
