//! Siemens S7 PLCs (S7-200 SMART, S7-300/400, S7-1200, S7-1500, LOGO!) over ISO-on-TCP,
//! read only.
//!
//! The protocol is written here rather than taken from a crate: no maintained Rust S7 client
//! exists, and the part the agent needs (connect, negotiate the PDU, Read Var) is small. The
//! pieces follow the Modbus source's shape: [`address`] parses what the engineer writes,
//! [`frame`] builds and checks the wire frames without I/O, [`decode`] turns bytes into values,
//! [`plan`] groups fields into Read Var jobs that fit the negotiated PDU, [`link`] is one
//! connection, and [`run`] is one PLC's task.
//!
//! Each PLC has a task and a connection of its own, so a dead PLC never delays another. The
//! task connects (COTP connection request with the TSAPs, Setup Communication), plans its
//! reads for the PDU the PLC granted, and reads each poll group on its schedule. After a
//! timeout or a protocol error the connection is dropped and opened afresh, so a late answer
//! can never be taken for the next; a PLC that keeps failing is retried with exponential
//! back-off up to a minute. An item the PLC refuses (a DB that does not exist or is
//! optimized, an address past its end) skips that item's fields; the others are delivered.
//! A PLC whose every item is refused is up but degraded, with the reasons.
//!
//! The agent never writes to a machine: [`frame`] can build the connection request, Setup
//! Communication and Read Var, and nothing else.

pub mod address;
pub mod config;
pub mod decode;
pub mod frame;
pub mod link;
pub mod plan;
pub mod probe;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{Instrument, debug, info, warn};

use self::address::S7Type;
use self::config::S7Device;
use self::frame::ItemError;
use self::link::{Connection, Fault};
use self::plan::PollGroup;
use crate::metrics::Metrics;
use crate::model::{FieldError, Sample, SourceEvent, Target};
use crate::queue::LossLog;
use crate::shutdown::Shutdown;
use crate::source::field_errors::{self, Failed, FieldErrorCounts};
use crate::source::modbus::health::Health;
use crate::source::modbus::{SOURCE_EVENTS_DROPPED, backoff, next_tick, refused_everything};

/// How often dropped poll results are logged at most (with the count since the last line).
const DROP_LOG_EVERY: Duration = Duration::from_secs(60);

/// A field ready to become samples.
struct Slot {
    target: Target,
    signal: Arc<str>,
    ty: S7Type,
    scale: Option<f64>,
    offset: Option<f64>,
    errors: FieldErrorCounts,
}

field_errors::field_slot!(Slot);

struct Scheduled {
    group: PollGroup,
    next: Instant,
    /// Offset of this group's items in `Task::refused`.
    first_item: usize,
}

/// One PLC as its task keeps it.
struct Task {
    /// For the per-field error counters.
    metrics: Metrics,
    device: S7Device,
    id: Arc<str>,
    address: String,
    slots: Vec<Slot>,
    /// The PDU the plan was made for.
    planned_for: u16,
    groups: Vec<Scheduled>,
    health: Health,
    span: tracing::Span,
    up: Option<bool>,
    down: Option<Fault>,
    failures: u32,
    /// When the present outage began; `None` while the PLC answers.
    down_since: Option<Instant>,
    retry_at: Option<Instant>,
    /// Why each item was last refused, so a lasting refusal is logged once.
    refused: Vec<Option<ItemError>>,
    degraded: Option<String>,
    events: mpsc::Sender<SourceEvent>,
    dropped: Arc<AtomicU64>,
    loss: LossLog,
}

/// Reads one PLC until shutdown.
pub fn run(
    device: S7Device,
    events: mpsc::Sender<SourceEvent>,
    metrics: Metrics,
    shutdown: Shutdown,
) -> impl std::future::Future<Output = ()> + Send + use<> {
    let span = tracing::info_span!("s7", device = %device.id);
    let mut task = Task::new(device, events, &metrics, Instant::now());
    async move {
        task.run(shutdown).await;
        task.loss.finish();
    }
    .instrument(span)
}

impl Task {
    fn new(
        device: S7Device,
        events: mpsc::Sender<SourceEvent>,
        metrics: &Metrics,
        start: Instant,
    ) -> Task {
        let id: Arc<str> = Arc::from(device.id.as_str());
        let mut targets: Vec<Target> = Vec::new();
        let slots = device
            .fields
            .iter()
            .map(|f| {
                let machine = device.machine_of(f);
                let target = match targets
                    .iter()
                    .find(|t| matches!(t, Target::Machine(m) if &**m == machine))
                {
                    Some(t) => t.clone(),
                    None => {
                        let t = Target::Machine(Arc::from(machine));
                        targets.push(t.clone());
                        t
                    }
                };
                Slot {
                    target,
                    signal: f.signal.clone(),
                    ty: f.s7_type(),
                    scale: f.scale,
                    offset: f.offset,
                    errors: FieldErrorCounts::default(),
                }
            })
            .collect();
        let address = device.address();
        let connection = format!("s7 {address}");
        let mut task = Task {
            metrics: metrics.clone(),
            health: Health::register(metrics, &device.id),
            span: tracing::info_span!("s7", device = %id),
            id,
            slots,
            planned_for: 0,
            groups: Vec::new(),
            up: None,
            down: None,
            failures: 0,
            down_since: None,
            retry_at: None,
            refused: Vec::new(),
            degraded: None,
            events,
            dropped: metrics.counter(
                SOURCE_EVENTS_DROPPED,
                "Poll results dropped because the engine's queue, the polled sources' bounded buffer, was full.",
                &[("connection", &connection)],
            ),
            loss: LossLog::new(
                "engine queue full: S7 poll results dropped (the engine is behind, e.g. waiting for a slow spool)",
                DROP_LOG_EVERY,
            ),
            address,
            device,
        };
        // Planned for the PDU asked for until the PLC says what it grants.
        task.replan(task.device.pdu_size, start);
        task
    }

    /// Plans the reads for a `pdu`-byte PDU, keeping each group's schedule.
    fn replan(&mut self, pdu: u16, start: Instant) {
        let mut first_item = 0;
        let old: Vec<Instant> = self.groups.iter().map(|s| s.next).collect();
        self.groups = plan::plan(&self.device, pdu)
            .into_iter()
            .enumerate()
            .map(|(n, group)| {
                for job in &group.jobs {
                    debug!(parent: &self.span, pdu, poll = ?group.poll, %job, "planned");
                }
                let items: usize = group.jobs.iter().map(|j| j.items.len()).sum();
                let s = Scheduled {
                    next: old.get(n).copied().unwrap_or(start),
                    first_item,
                    group,
                };
                first_item += items;
                s
            })
            .collect();
        self.refused = vec![None; first_item];
        self.planned_for = pdu;
    }

    fn due(&self, g: usize) -> Instant {
        let next = self.groups[g].next;
        self.retry_at.map_or(next, |r| next.max(r))
    }

    fn base_poll(&self) -> Duration {
        (self.groups.iter().map(|g| g.group.poll).min()).unwrap_or(self.device.poll)
    }

    async fn run(&mut self, mut shutdown: Shutdown) {
        let mut conn: Option<Connection> = None;
        loop {
            let Some((g, due)) = (0..self.groups.len())
                .map(|g| (g, self.due(g)))
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
            self.retry_at = None;
            let s = &mut self.groups[g];
            s.next = next_tick(s.next, s.group.poll, now);
            match self.poll(&mut conn, g, at).await {
                Ok((samples, errors)) => self.answered(samples, errors, at),
                Err(fault) => {
                    // Whatever the PLC may still send must not meet the next request.
                    conn = None;
                    self.fail(fault, at);
                }
            }
        }
    }

    /// Reads group `g`: `Ok` when the PLC answered every job (refused items included), with
    /// the samples and the errors of the fields that delivered nothing.
    async fn poll(
        &mut self,
        conn: &mut Option<Connection>,
        g: usize,
        at: Timestamp,
    ) -> Result<(Vec<Sample>, Vec<FieldError>), Fault> {
        let timeout = self.device.timeout;
        if conn.is_none() {
            let c = link::connect(
                &self.address,
                self.device.tsaps(),
                self.device.pdu_size,
                timeout,
            )
            .await?;
            debug!(parent: &self.span, pdu = c.pdu, "connected");
            if c.pdu != self.planned_for {
                info!(parent: &self.span, asked = self.device.pdu_size, granted = c.pdu, "the PLC grants a smaller PDU: reads planned to it");
                self.replan(c.pdu, Instant::now());
            }
            *conn = Some(c);
        }
        let Some(client) = conn.as_mut() else {
            return Err(Fault::Connect("no connection".into()));
        };
        let Task {
            groups,
            refused: refusals,
            slots,
            health,
            span,
            metrics,
            id,
            ..
        } = self;
        // (field index, kind, error in words) of the fields that delivered nothing.
        let mut failed: Vec<Failed> = Vec::new();
        let mut samples = Vec::with_capacity(slots.len());
        let scheduled = &groups[g];
        let mut item_at = scheduled.first_item;
        for job in &scheduled.group.jobs {
            let (frame, parts) = client.read(&job.read_items(), timeout).await?;
            for (item, part) in job.items.iter().zip(parts) {
                let refused = &mut refusals[item_at];
                item_at += 1;
                let range = match part {
                    Err(e) => {
                        health.count_error("exception", 1);
                        if *refused != Some(e) {
                            warn!(parent: &*span, item = %item, reason = %e, "the PLC refused an item: its fields are skipped");
                            *refused = Some(e);
                        }
                        for planned in &item.fields {
                            failed.push((
                                planned.index,
                                "exception",
                                format!("the PLC refuses {item}: {e}"),
                            ));
                        }
                        continue;
                    }
                    Ok(range) => {
                        if refused.take().is_some() {
                            info!(parent: &*span, item = %item, "item read again");
                        }
                        range
                    }
                };
                let data = &frame[range];
                for planned in &item.fields {
                    let slot = &slots[planned.index];
                    let value = data
                        .get(planned.offset..planned.offset + planned.len)
                        .ok_or(decode::DecodeError::TooShort {
                            ty: slot.ty.name(),
                            needed: planned.offset + planned.len,
                            got: data.len(),
                        })
                        .and_then(|bytes| {
                            decode::decode(slot.ty, bytes, planned.bit, slot.scale, slot.offset)
                        });
                    match value {
                        Ok(value) => samples.push(Sample {
                            target: slot.target.clone(),
                            signal: slot.signal.clone(),
                            value,
                            at,
                        }),
                        Err(e) => {
                            health.count_error("decode", 1);
                            debug!(parent: &*span, signal = %slot.signal, error = %e, "value skipped");
                            let kind = match e {
                                decode::DecodeError::TooShort { .. } => "short",
                                _ => "decode",
                            };
                            failed.push((planned.index, kind, format!("{item}: {e}")));
                        }
                    }
                }
            }
        }
        let errors = field_errors::collect(failed, slots, metrics, id);
        Ok((samples, errors))
    }

    fn answered(&mut self, samples: Vec<Sample>, errors: Vec<FieldError>, at: Timestamp) {
        self.failures = 0;
        self.down_since = None;
        self.down = None;
        self.health.answered(at);
        if self.up != Some(true) {
            self.up = Some(true);
            info!(parent: &self.span, address = %self.address, pdu = self.planned_for, "PLC answers");
            self.send(SourceEvent::DeviceUp {
                device: self.id.clone(),
                at,
            });
        }
        let reason = refused_everything(&self.refused).map(|reasons| {
            format!(
                "the PLC refuses every item: {}",
                reasons
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        });
        if reason != self.degraded {
            self.health.set_degraded(
                refused_everything(&self.refused).and_then(|r| r.first().map(|e| e.code)),
            );
            match &reason {
                Some(r) => {
                    warn!(parent: &self.span, reason = %r, "PLC degraded: it answers but delivers nothing")
                }
                None => info!(parent: &self.span, "PLC delivers data again"),
            }
            self.degraded = reason.clone();
            self.send(SourceEvent::DeviceDegraded {
                device: self.id.clone(),
                at,
                reason,
            });
        }
        if !samples.is_empty() {
            self.send(SourceEvent::Samples(samples));
        }
        if !errors.is_empty() {
            self.send(SourceEvent::FieldErrors {
                device: self.id.clone(),
                at,
                errors,
            });
        }
    }

    fn fail(&mut self, fault: Fault, at: Timestamp) {
        self.health.failed(fault.kind());
        self.degraded = None;
        self.health.set_degraded(None);
        self.failures = self.failures.saturating_add(1);
        // One PLC per connection: the short ceiling of a device alone on its link.
        let outage = self.down_since.get_or_insert_with(Instant::now).elapsed();
        let wait = backoff(self.base_poll(), self.failures, outage, false);
        self.retry_at = Some(Instant::now() + wait);
        if self.down.as_ref() == Some(&fault) {
            debug!(parent: &self.span, %fault, retry_in = ?wait, "still down");
            return;
        }
        warn!(parent: &self.span, %fault, retry_in = ?wait, "PLC down");
        self.up = Some(false);
        let reason = fault.to_string();
        self.down = Some(fault);
        self.send(SourceEvent::DeviceDown {
            device: self.id.clone(),
            at,
            reason,
        });
    }

    /// Sends without waiting, as the Modbus source does: the engine's queue is the poll
    /// results' bounded buffer, and at its bound the newest result is dropped and counted.
    fn send(&mut self, event: SourceEvent) {
        const _: () = crate::queue::EVENTS_FROM_S7.sent_as(crate::queue::WhenFull::DropNewest);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_counted_under_the_health_kinds() {
        use crate::source::modbus::health::ERROR_KINDS;
        use frame::S7Error;
        for fault in [
            Fault::Resolve(String::new()),
            Fault::Connect(String::new()),
            Fault::Timeout("x"),
            Fault::Transport(String::new()),
            Fault::S7(S7Error::Malformed(String::new())),
            Fault::S7(S7Error::Refused(String::new())),
            Fault::S7(S7Error::Job {
                class: 0x81,
                code: 4,
            }),
        ] {
            assert!(ERROR_KINDS.contains(&fault.kind()), "{fault:?}");
        }
    }
}
