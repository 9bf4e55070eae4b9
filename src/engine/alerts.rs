//! Early warning (预警): alerts that open once when a condition starts, stay open while it
//! holds, and close with their duration when it ends. Each opening and closing is an `alert`
//! line (tags `kind`, `subject`); the open ones and the last closed ones are on the board and
//! in `/api/alerts`.
//!
//! The caller decides what "over" means and which values may judge at all: a value flagged as
//! maintenance or calibration is not passed here, so it neither opens nor closes an alert.

use std::collections::{BTreeMap, VecDeque};

use jiff::Timestamp;
use tracing::{info, warn};

use crate::line_protocol::LineBuilder;
use crate::line_protocol::contract::{self, TAG_KIND, TAG_SUBJECT};

/// `kind` of an outlet's pollutant over its concentration limit; the subject is
/// `<outlet>/<pollutant>`.
pub const KIND_OUTLET_LIMIT: &str = "outlet_limit";
/// `kind` of a green indicator (a `green` field) over its limit for a closed day; the subject
/// is the field's name.
pub const KIND_INDICATOR: &str = "indicator";

/// Closed alerts kept for the board.
const RECENT: usize = 50;

/// An alert as the board and `/api/alerts` show it.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertView {
    pub kind: &'static str,
    pub subject: String,
    pub since: Timestamp,
    /// When it closed; `None` while open.
    pub until: Option<Timestamp>,
    /// The value that opened it (the highest seen while open).
    pub value: f64,
    pub limit: f64,
}

impl AlertView {
    pub fn duration_s(&self) -> Option<f64> {
        self.until
            .map(|u| u.duration_since(self.since).as_secs_f64())
    }
}

/// The open alerts and the recently closed ones.
#[derive(Debug)]
pub struct Alerts {
    prefix: String,
    open: BTreeMap<(&'static str, String), AlertView>,
    recent: VecDeque<AlertView>,
}

impl Alerts {
    /// `prefix`: the `alert` measurement with the enterprise's tags.
    pub fn new(prefix: String) -> Self {
        Alerts {
            prefix,
            open: BTreeMap::new(),
            recent: VecDeque::new(),
        }
    }

    /// One judgement of `subject` at `at`: `value` against `limit`, over when above it.
    pub fn judge(
        &mut self,
        kind: &'static str,
        subject: &str,
        at: Timestamp,
        value: f64,
        limit: f64,
        out: &mut Vec<String>,
    ) {
        let over = value > limit;
        let k = (kind, subject.to_string());
        match (self.open.get_mut(&k), over) {
            (None, true) => {
                warn!(kind, subject, value, limit, at = %at, "alert opened: over the limit");
                let line = self
                    .line(kind, subject, value, limit)
                    .bool(contract::alert::OPEN, true);
                out.extend(line.finish(at));
                self.open.insert(
                    k,
                    AlertView {
                        kind,
                        subject: subject.to_string(),
                        since: at,
                        until: None,
                        value,
                        limit,
                    },
                );
            }
            (Some(a), true) => a.value = a.value.max(value),
            // A value older than the opening (a logger sending old data again) closes nothing.
            (Some(a), false) if at > a.since => {
                let mut a = self.open.remove(&k).unwrap_or_else(|| unreachable!());
                a.until = Some(at);
                let duration = a.duration_s().unwrap_or(0.0);
                info!(
                    kind,
                    subject,
                    duration_s = duration,
                    "alert closed: back within the limit"
                );
                let line = self
                    .line(kind, subject, a.value, a.limit)
                    .bool(contract::alert::OPEN, false)
                    .float(contract::alert::DURATION_S, duration);
                out.extend(line.finish(at));
                self.recent.push_front(a);
                self.recent.truncate(RECENT);
            }
            _ => {}
        }
    }

    fn line(&self, kind: &str, subject: &str, value: f64, limit: f64) -> LineBuilder {
        LineBuilder::with_prefix(&self.prefix)
            .tag(TAG_KIND, kind)
            .tag(TAG_SUBJECT, subject)
            .float(contract::alert::VALUE, value)
            .float(contract::alert::LIMIT, limit)
    }

    /// The open alerts, to be saved.
    pub fn save(&self) -> Vec<super::persist::SavedAlert> {
        self.open
            .values()
            .map(|a| super::persist::SavedAlert {
                kind: a.kind.to_string(),
                subject: a.subject.clone(),
                since: a.since,
                value: a.value,
                limit: a.limit,
            })
            .collect()
    }

    /// Takes back the open alerts saved before a restart: they stay open, and close with
    /// their whole duration.
    pub fn restore(&mut self, saved: Vec<super::persist::SavedAlert>) {
        for a in saved {
            let Some(kind) = [KIND_OUTLET_LIMIT, KIND_INDICATOR]
                .into_iter()
                .find(|k| *k == a.kind)
            else {
                continue;
            };
            let view = AlertView {
                kind,
                subject: a.subject,
                since: a.since,
                until: None,
                value: a.value,
                limit: a.limit,
            };
            self.open.insert((kind, view.subject.clone()), view);
        }
    }

    /// The open alerts, then the recently closed ones, newest first.
    pub fn views(&self) -> Vec<AlertView> {
        let mut open: Vec<AlertView> = self.open.values().cloned().collect();
        open.sort_by_key(|a| std::cmp::Reverse(a.since));
        open.extend(self.recent.iter().cloned());
        open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(h: i64) -> Timestamp {
        Timestamp::from_second(1_780_000_000 + h * 3600).unwrap()
    }

    #[test]
    fn an_alert_opens_once_stays_open_and_closes_with_its_duration() {
        let mut a = Alerts::new("alert,enterprise=e1".into());
        let mut out = Vec::new();
        a.judge(KIND_OUTLET_LIMIT, "ww1/cod", t(0), 80.0, 100.0, &mut out);
        assert!(out.is_empty());
        a.judge(KIND_OUTLET_LIMIT, "ww1/cod", t(1), 120.0, 100.0, &mut out);
        a.judge(KIND_OUTLET_LIMIT, "ww1/cod", t(2), 130.0, 100.0, &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out[0].contains("open=true"), "{}", out[0]);
        a.judge(KIND_OUTLET_LIMIT, "ww1/cod", t(3), 90.0, 100.0, &mut out);
        assert_eq!(out.len(), 2);
        // Open from hour 1 to hour 3: 2 h = 7200 s, with the highest value seen.
        assert!(out[1].contains("open=false"), "{}", out[1]);
        assert!(out[1].contains("duration_s=7200"), "{}", out[1]);
        assert!(out[1].contains("value=130"), "{}", out[1]);
        let views = a.views();
        assert_eq!(views.len(), 1);
        assert_eq!(views[0].duration_s(), Some(7200.0));
    }
}
