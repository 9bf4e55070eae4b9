//! Each output's delivery state as its writer sees it, published on a watch channel for the
//! board (`/api/health`'s `outputs`) and mirrored in `/metrics`
//! (`shopfloor_output_backlog_lines`, `shopfloor_output_oldest_age_seconds`,
//! `shopfloor_output_failing`).
//!
//! | state | when |
//! |---|---|
//! | `failing` | the last write request failed (network, timeout, 5xx, 429, or a refusal such as a wrong token): the writer is backing off, the data waits in the spool; `reason` says why |
//! | `backlog` | requests succeed, but a line waits longer than [`BACKLOG_AFTER`] (draining after an outage, or a store slower than the sources) |
//! | `delivering` | requests succeed and nothing waits longer than [`BACKLOG_AFTER`] |

use std::time::Duration;

/// A line that waits longer than this makes an output that is not failing show `backlog`: a
/// healthy writer sends within its flush interval (1 s by default).
pub const BACKLOG_AFTER: Duration = Duration::from_secs(10);

/// One output's delivery, as last published by its writer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutputStatus {
    /// The output's name (`[[influx]] name`, `influx-1`, …).
    pub name: String,
    /// `influx`, `file` or `uplink`.
    pub kind: &'static str,
    /// Lines this output has not delivered yet.
    pub backlog_lines: u64,
    /// When the oldest of them was appended to the spool, Unix ms.
    pub oldest_ms: Option<i64>,
    /// Why the last write request failed, while requests fail; `None` once one succeeds.
    pub failing: Option<String>,
    /// When the current run of failures began, Unix ms.
    pub failing_since_ms: Option<i64>,
    /// The last successful write request, Unix ms.
    pub last_success_ms: Option<i64>,
}

/// What the board shows for an output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Delivering,
    Backlog,
    Failing,
}

impl Delivery {
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Delivering => "delivering",
            Delivery::Backlog => "backlog",
            Delivery::Failing => "failing",
        }
    }
}

impl OutputStatus {
    /// The state at `now_ms` (see the module's table).
    pub fn delivery(&self, now_ms: i64) -> Delivery {
        if self.failing.is_some() {
            Delivery::Failing
        } else if self
            .oldest_age_s(now_ms)
            .is_some_and(|age| age > BACKLOG_AFTER.as_secs_f64())
        {
            Delivery::Backlog
        } else {
            Delivery::Delivering
        }
    }

    /// How long the oldest undelivered line has waited at `now_ms`, seconds.
    pub fn oldest_age_s(&self, now_ms: i64) -> Option<f64> {
        self.oldest_ms
            .map(|ms| (now_ms - ms).max(0) as f64 / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_output_fails_while_requests_fail_and_shows_a_backlog_only_past_ten_seconds() {
        let mut s = OutputStatus {
            name: "influx".into(),
            kind: "influx",
            ..OutputStatus::default()
        };
        assert_eq!(s.delivery(0), Delivery::Delivering);
        // 500 lines, the oldest appended at 1000 ms: at 9000 ms it has waited 8 s.
        s.backlog_lines = 500;
        s.oldest_ms = Some(1000);
        assert_eq!(s.delivery(9000), Delivery::Delivering);
        // At 12 000 ms, 11 s > 10 s.
        assert_eq!(s.delivery(12_000), Delivery::Backlog);
        assert_eq!(s.oldest_age_s(12_000), Some(11.0));
        s.failing = Some("cannot reach the store".into());
        assert_eq!(s.delivery(2000), Delivery::Failing);
    }
}
