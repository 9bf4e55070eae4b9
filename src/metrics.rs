//! Counters and gauges that every part of the agent updates, and that the per-minute `agent`
//! line, `/metrics` and the board read.
//!
//! A metric is registered once (a short lock on the registry) and then updated through its own
//! `Arc<AtomicU64>` with no lock at all, so a device task or a writer counts an error as cheaply
//! as it increments an integer. Readers take a consistent-enough snapshot: each value is read
//! atomically, the set as a whole is not (as with any Prometheus exporter).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a metric measures, for the Prometheus `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only ever goes up (errors, lines sent).
    Counter,
    /// Goes up and down (spool bytes, devices up).
    Gauge,
}

type Labels = Vec<(&'static str, String)>;

#[derive(Debug)]
struct Entry {
    kind: Kind,
    help: &'static str,
    series: BTreeMap<Labels, Arc<AtomicU64>>,
}

/// The registry. Cheap to clone (an `Arc` inside); one per agent.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    inner: Arc<Mutex<BTreeMap<&'static str, Entry>>>,
}

/// One value of one metric, as read by [`Metrics::read`].
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub name: &'static str,
    pub labels: Labels,
    pub value: u64,
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// The handle of a counter, created on first use. Names follow Prometheus conventions
    /// (`shopfloor_poll_errors_total`); label values are free text.
    pub fn counter(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
    ) -> Arc<AtomicU64> {
        self.handle(name, help, Kind::Counter, labels)
    }

    /// The handle of a gauge, created on first use. Set it with `store`.
    pub fn gauge(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &str)],
    ) -> Arc<AtomicU64> {
        self.handle(name, help, Kind::Gauge, labels)
    }

    fn handle(
        &self,
        name: &'static str,
        help: &'static str,
        kind: Kind,
        labels: &[(&'static str, &str)],
    ) -> Arc<AtomicU64> {
        let labels: Labels = labels.iter().map(|(k, v)| (*k, v.to_string())).collect();
        // A poisoned lock only means another thread panicked while registering; the map is
        // still whole, so carry on with it.
        let mut map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let entry = map.entry(name).or_insert_with(|| Entry {
            kind,
            help,
            series: BTreeMap::new(),
        });
        entry.series.entry(labels).or_default().clone()
    }

    /// Every value now.
    pub fn read(&self) -> Vec<Reading> {
        let map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .flat_map(|(name, entry)| {
                entry.series.iter().map(move |(labels, value)| Reading {
                    name,
                    labels: labels.clone(),
                    value: value.load(Ordering::Relaxed),
                })
            })
            .collect()
    }

    /// The sum of a metric over all its label sets (0 when it does not exist).
    pub fn sum(&self, name: &str) -> u64 {
        let map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        map.get(name).map_or(0, |e| {
            e.series.values().map(|v| v.load(Ordering::Relaxed)).sum()
        })
    }

    /// The Prometheus text exposition format (version 0.0.4).
    pub fn render_prometheus(&self) -> String {
        let map = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        for (name, entry) in map.iter() {
            let kind = match entry.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
            };
            let _ = writeln!(out, "# HELP {name} {}", entry.help);
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in &entry.series {
                out.push_str(name);
                if !labels.is_empty() {
                    out.push('{');
                    for (i, (k, v)) in labels.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        let _ = write!(out, "{k}=\"{}\"", escape_label(v));
                    }
                    out.push('}');
                }
                let _ = writeln!(out, " {}", value.load(Ordering::Relaxed));
            }
        }
        out
    }
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A log line repeated at most once per period: a store that rejects every batch (a field
/// of the wrong type, say), a device that answers short at every poll or a spool that cannot
/// be trimmed at every tick would otherwise log the same error several times a second. The
/// line that is let through says how many were held back (they are all counted in metrics).
#[derive(Debug)]
pub struct RateLimited {
    every: Duration,
    last: Option<Instant>,
    /// Occurrences since the last line, not logged.
    held: u64,
}

impl RateLimited {
    pub fn new(every: Duration) -> Self {
        RateLimited {
            every,
            last: None,
            held: 0,
        }
    }

    /// One more occurrence: `Some(occurrences not logged before it)` when it is to be logged.
    pub fn due(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < self.every)
        {
            self.held += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_share_one_value_and_render_as_prometheus_text() {
        let m = Metrics::new();
        let a = m.counter(
            "shopfloor_poll_errors_total",
            "Failed polls.",
            &[("device", "box-1")],
        );
        let again = m.counter(
            "shopfloor_poll_errors_total",
            "Failed polls.",
            &[("device", "box-1")],
        );
        let b = m.counter(
            "shopfloor_poll_errors_total",
            "Failed polls.",
            &[("device", "box \"2\"")],
        );
        a.fetch_add(2, Ordering::Relaxed);
        again.fetch_add(1, Ordering::Relaxed);
        b.fetch_add(4, Ordering::Relaxed);
        m.gauge("shopfloor_spool_bytes", "Bytes waiting.", &[])
            .store(512, Ordering::Relaxed);
        assert_eq!(m.sum("shopfloor_poll_errors_total"), 7);
        assert_eq!(
            m.render_prometheus(),
            "# HELP shopfloor_poll_errors_total Failed polls.\n\
             # TYPE shopfloor_poll_errors_total counter\n\
             shopfloor_poll_errors_total{device=\"box \\\"2\\\"\"} 4\n\
             shopfloor_poll_errors_total{device=\"box-1\"} 3\n\
             # HELP shopfloor_spool_bytes Bytes waiting.\n\
             # TYPE shopfloor_spool_bytes gauge\n\
             shopfloor_spool_bytes 512\n"
        );
    }

    #[test]
    fn a_repeated_log_line_is_let_through_once_a_minute_with_the_count_held_back() {
        let mut log = RateLimited::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(log.due(t0), Some(0));
        assert_eq!(log.due(t0 + Duration::from_millis(500)), None);
        assert_eq!(log.due(t0 + Duration::from_secs(59)), None);
        // Two held back since the first line.
        assert_eq!(log.due(t0 + Duration::from_secs(60)), Some(2));
        assert_eq!(log.due(t0 + Duration::from_secs(61)), None);
    }
}
