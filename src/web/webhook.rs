//! The optional alert webhook (`[web] alert_webhook`): every alert opening and closing, as the
//! engine's snapshots show them, POSTed as JSON to one URL, for a chat bot, a pager or the
//! enterprise's environmental system.
//!
//! ```json
//! {"event": "opened", "kind": "outlet_limit", "subject": "ww1/cod", "enterprise": "e1",
//!  "since": "2026-12-05T06:00:00Z", "until": null, "duration_s": null, "value": 130.0, "limit": 100.0}
//! ```
//!
//! Delivery is best effort: one attempt per event within 10 s; a failure is logged and counted
//! in `shopfloor_alert_webhook_errors_total`, and the alert stays in the store and in
//! `/api/alerts`, which remain the record.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;
use tokio::sync::watch;
use tracing::warn;

use crate::engine::Snapshot;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

#[derive(Serialize)]
struct Event<'a> {
    /// `opened` or `closed`.
    event: &'static str,
    kind: &'static str,
    subject: &'a str,
    enterprise: &'a str,
    since: String,
    until: Option<String>,
    duration_s: Option<f64>,
    value: f64,
    limit: f64,
}

/// Posts every alert event seen in the snapshots until `shutdown`.
pub async fn run(
    url: String,
    enterprise: Arc<str>,
    mut snapshots: watch::Receiver<Snapshot>,
    metrics: Metrics,
    mut shutdown: Shutdown,
) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "alert webhook: no HTTP client, alerts are not posted");
            return;
        }
    };
    let errors = metrics.counter(
        "shopfloor_alert_webhook_errors_total",
        "Alert events the webhook did not accept (no answer, or not 2xx).",
        &[],
    );
    // Alerts already told, by (kind, subject, since) and whether closed.
    let mut told: HashSet<(&'static str, String, Timestamp, bool)> = HashSet::new();
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            changed = snapshots.changed() => if changed.is_err() { return },
        }
        let alerts = snapshots.borrow_and_update().alerts.clone();
        for a in alerts {
            let closed = a.until.is_some();
            let key = (a.kind, a.subject.clone(), a.since, closed);
            // A closed alert whose opening was never told (it opened and closed between two
            // snapshots) is told as opened first.
            let mut events = Vec::new();
            if !told.contains(&(a.kind, a.subject.clone(), a.since, false)) {
                events.push("opened");
            }
            if closed && !told.contains(&key) {
                events.push("closed");
            }
            for event in events {
                let body = Event {
                    event,
                    kind: a.kind,
                    subject: &a.subject,
                    enterprise: &enterprise,
                    since: a.since.to_string(),
                    until: (event == "closed")
                        .then(|| a.until.map(|t| t.to_string()))
                        .flatten(),
                    duration_s: (event == "closed").then(|| a.duration_s()).flatten(),
                    value: a.value,
                    limit: a.limit,
                };
                let Ok(json) = serde_json::to_vec(&body) else {
                    continue;
                };
                let sent = client
                    .post(&url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(json)
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().is_success() => {}
                    Ok(r) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        warn!(status = %r.status(), subject = %a.subject, event, "alert webhook refused the alert");
                    }
                    Err(e) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        warn!(error = %e, subject = %a.subject, event, "alert webhook not reached");
                    }
                }
                told.insert((a.kind, a.subject.clone(), a.since, event == "closed"));
            }
        }
        // Keep what the snapshots still show, so the set stays bounded.
        let shown = snapshots.borrow().alerts.clone();
        told.retain(|(k, s, t, _)| {
            shown
                .iter()
                .any(|a| a.kind == *k && &a.subject == s && a.since == *t)
        });
    }
}
