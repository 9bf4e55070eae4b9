//! Per-device health: whether each device answers, when it last did, and its errors by kind.
//!
//! The device task updates the counters (lock-free handles into the shared
//! [`Metrics`] registry); `/metrics` shows them as they are, and once a minute
//! [`device_lines`] turns them into one `agent` line per device, so the county's store shows
//! which device of which enterprise has been failing, and how.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use jiff::Timestamp;

use crate::line_protocol::contract::{MEASUREMENT_AGENT, TAG_DEVICE, agent};
use crate::line_protocol::{LineBuilder, tag_prefix};
use crate::metrics::Metrics;

/// Every kind of error a device's health counts, in the order `agent` lines list them (their
/// fields are [`agent::DEVICE_ERRORS`]; `every_error_kind_has_its_field` checks the two agree).
///
/// `exception` and `decode` are per request or field: the device answered, but refused a
/// request (an exception response) or sent a value that is not one (a NaN, an out-of-range
/// u64). The others fail the whole poll.
pub const ERROR_KINDS: [&str; 8] = [
    "resolve",
    "connect",
    "timeout",
    "transport",
    "protocol",
    "exception",
    "decode",
    "crc",
];

pub const POLLS: &str = "shopfloor_polls_total";
pub const ERRORS: &str = "shopfloor_poll_errors_total";
pub const UP: &str = "shopfloor_device_up";
pub const LAST_SUCCESS: &str = "shopfloor_device_last_success_seconds";
pub const DEGRADED: &str = "shopfloor_device_degraded";
pub const EXCEPTION_CODE: &str = "shopfloor_device_exception_code";

/// One device's health handles.
#[derive(Debug, Clone)]
pub struct Health {
    pub polls: Arc<AtomicU64>,
    pub up: Arc<AtomicU64>,
    /// Unix seconds of the last answered poll; 0 until the first.
    pub last_success: Arc<AtomicU64>,
    /// 1 while the device answers every request with an exception.
    pub degraded: Arc<AtomicU64>,
    /// The (first) exception code while degraded, else 0.
    pub exception_code: Arc<AtomicU64>,
    errors: Vec<Arc<AtomicU64>>,
}

impl Health {
    /// Registers the device's metrics, every error kind at 0, so that a device that never
    /// failed shows zeros rather than nothing.
    pub fn register(metrics: &Metrics, device: &str) -> Self {
        let labels = [("device", device)];
        Health {
            polls: metrics.counter(POLLS, "Polls of a device (Modbus, S7, MELSEC, meter) that answered.", &labels),
            up: metrics.gauge(
                UP,
                "1 while the device answers, 0 while it is down.",
                &labels,
            ),
            last_success: metrics.gauge(
                LAST_SUCCESS,
                "Unix time of the device's last answered poll (0: never).",
                &labels,
            ),
            degraded: metrics.gauge(
                DEGRADED,
                "1 while the device answers but every request gets an exception: up, delivering nothing.",
                &labels,
            ),
            exception_code: metrics.gauge(
                EXCEPTION_CODE,
                "While degraded: the exception code the device answers with (Modbus exception, MC end code, DL/T 645 error byte; 0 otherwise).",
                &labels,
            ),
            errors: ERROR_KINDS
                .iter()
                .map(|kind| {
                    metrics.counter(
                        ERRORS,
                        "Errors polling a device (Modbus, S7, MELSEC, meter), by kind.",
                        &[("device", device), ("kind", kind)],
                    )
                })
                .collect(),
        }
    }

    pub fn count_error(&self, kind: &str, n: u64) {
        if let Some(i) = ERROR_KINDS.iter().position(|k| *k == kind) {
            self.errors[i].fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn answered(&self, at: Timestamp) {
        self.polls.fetch_add(1, Ordering::Relaxed);
        self.up.store(1, Ordering::Relaxed);
        self.last_success
            .store(at.as_second().max(0) as u64, Ordering::Relaxed);
    }

    /// Degraded with this exception code, or (`None`) not degraded.
    pub fn set_degraded(&self, exception: Option<u8>) {
        self.degraded
            .store(u64::from(exception.is_some()), Ordering::Relaxed);
        self.exception_code
            .store(exception.map_or(0, u64::from), Ordering::Relaxed);
    }

    pub fn failed(&self, kind: &str) {
        self.up.store(0, Ordering::Relaxed);
        self.count_error(kind, 1);
    }
}

/// Errors of one kind, summed over every device.
pub fn errors_of_kind(metrics: &Metrics, kind: &str) -> u64 {
    metrics
        .read()
        .iter()
        .filter(|r| r.name == ERRORS && r.labels.iter().any(|(k, v)| *k == "kind" && v == kind))
        .map(|r| r.value)
        .sum()
}

/// One `agent` line per Modbus device, tagged `device`, from the metrics registry:
/// `up` (0 or 1), `polls`, `since_success_s` (absent until the first answer) and one
/// `errors_<kind>` counter per kind in [`ERROR_KINDS`]. `tags` are the site's tags.
pub fn device_lines(metrics: &Metrics, tags: &[(&str, &str)], now: Timestamp) -> Vec<String> {
    #[derive(Default)]
    struct Device {
        up: u64,
        polls: u64,
        last_success: u64,
        degraded: u64,
        exception_code: u64,
        errors: BTreeMap<String, u64>,
    }
    let mut devices: BTreeMap<String, Device> = BTreeMap::new();
    for r in metrics.read() {
        let label = |name: &str| {
            r.labels
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
        };
        let Some(device) = label("device") else {
            continue;
        };
        match r.name {
            UP => devices.entry(device).or_default().up = r.value,
            POLLS => devices.entry(device).or_default().polls = r.value,
            LAST_SUCCESS => devices.entry(device).or_default().last_success = r.value,
            DEGRADED => devices.entry(device).or_default().degraded = r.value,
            EXCEPTION_CODE => devices.entry(device).or_default().exception_code = r.value,
            ERRORS => {
                if let Some(kind) = label("kind") {
                    devices
                        .entry(device)
                        .or_default()
                        .errors
                        .insert(kind, r.value);
                }
            }
            _ => {}
        }
    }
    let now_s = now.as_second().max(0) as u64;
    devices
        .into_iter()
        .filter_map(|(id, d)| {
            let mut all: Vec<(&str, &str)> = tags.to_vec();
            all.push((TAG_DEVICE, &id));
            let mut line = LineBuilder::with_prefix(&tag_prefix(MEASUREMENT_AGENT, &all))
                .int(agent::UP, d.up as i64)
                .int(agent::POLLS, d.polls as i64);
            if d.last_success > 0 {
                line = line.int(
                    agent::SINCE_SUCCESS_S,
                    now_s.saturating_sub(d.last_success) as i64,
                );
            }
            line = line.int(agent::DEGRADED, d.degraded as i64);
            if d.degraded > 0 {
                line = line.int(agent::EXCEPTION_CODE, d.exception_code as i64);
            }
            for (kind, field) in agent::DEVICE_ERRORS {
                let n = d.errors.get(kind).copied().unwrap_or(0);
                line = line.int(field, n as i64);
            }
            line.finish(now)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_kind_has_its_field() {
        assert_eq!(ERROR_KINDS, agent::DEVICE_ERRORS.map(|(kind, _)| kind));
    }

    #[test]
    fn one_agent_line_per_device_with_errors_by_kind() {
        let m = Metrics::new();
        let a = Health::register(&m, "box-1");
        let b = Health::register(&m, "meter");
        // box-1 answered at t=100 after two timeouts; the meter never answered.
        a.failed("timeout");
        a.failed("timeout");
        a.answered(Timestamp::from_second(100).unwrap());
        a.count_error("exception", 3);
        // box-1 answers every request with exception 0x02: degraded, with the code.
        a.set_degraded(Some(2));
        b.failed("connect");
        let now = Timestamp::from_second(160).unwrap();
        let lines = device_lines(&m, &[("county", "yk"), ("enterprise", "e1")], now);
        assert_eq!(
            lines,
            vec![
                // since_success_s = 160 − 100 = 60.
                "agent,county=yk,enterprise=e1,device=box-1 up=1i,polls=1i,since_success_s=60i,\
                 degraded=1i,exception_code=2i,errors_resolve=0i,errors_connect=0i,errors_timeout=2i,errors_transport=0i,\
                 errors_protocol=0i,errors_exception=3i,errors_decode=0i,errors_crc=0i 160000000000"
                    .to_string(),
                "agent,county=yk,enterprise=e1,device=meter up=0i,polls=0i,degraded=0i,\
                 errors_resolve=0i,errors_connect=1i,errors_timeout=0i,errors_transport=0i,\
                 errors_protocol=0i,errors_exception=0i,errors_decode=0i,errors_crc=0i 160000000000"
                    .to_string(),
            ]
        );
    }
}
