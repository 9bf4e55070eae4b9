//! The source's own subscription layer: subscriptions, monitored items and the Publish loop on
//! the stack's raw service builders, without the stack's per-item bookkeeping.
//!
//! `Session::create_subscription` of `async-opcua` 0.19 registers every subscription in the
//! session's state, which keeps a `HashMap<u32, MonitoredItem>` of each subscription's items
//! (about 760 bytes an item with its empty buckets: 76 MB for 100,000 items, more than the
//! whole agent should hold). The source needs none of it: a data change names its item by the
//! client handle the source chose, which is the index of the node in the task's own table.
//! So subscriptions are made with the raw `CreateSubscription` and `CreateMonitoredItems`
//! requests, which register nothing, and this module keeps per subscription only its id, its
//! keep-alive period and the last sequence number seen.
//!
//! With no subscription in the session's state, the stack's own publish loop stays idle: it
//! publishes only on a trigger (`Session::trigger_publish_now`, called by the stack's
//! `create_subscription`, `transfer_subscriptions` and `modify_subscription`, none of which the
//! source calls) or on a timer that has no time while its state holds no subscription
//! (`SubscriptionState::next_publish_time` is `None`).
//!
//! # The Publish loop (in [`super::client`])
//!
//! - [`Book::wanted`] Publish requests are kept outstanding: two per subscription, at most
//!   [`MAX_PUBLISH_REQUESTS`]; a server that answers `BadTooManyPublishRequests` gets as many as
//!   it still holds from then on (at least one).
//! - A Publish waits at most the slowest subscription's keep-alive period plus the request
//!   timeout: a live subscription answers within its keep-alive period even when nothing
//!   changes.
//! - Each response is handled before the next Publish goes out, so a slow engine holds the
//!   next Publish back and the server queues (as OPC UA means it to), instead of the agent
//!   dropping changes.
//! - Every data message is acknowledged in the next Publish. A sequence number that skips
//!   ahead means messages were lost on the way: each missing one is asked for again with
//!   `Republish` (at most [`MAX_REPUBLISH`] per gap) and handled before the message that showed
//!   the gap, so that values stay in order; what the server can no longer send
//!   (`BadMessageNotAvailable`, or an empty message) is counted as lost.

use std::time::Duration;

use opcua::client::services::{
    CreateMonitoredItems, CreateSubscription, DeleteSubscriptions, Publish, Republish,
};
use opcua::client::{Session, UARequest};
use opcua::types::{
    MonitoredItemCreateRequest, NotificationMessage, PublishResponse, StatusCode,
    SubscriptionAcknowledgement, TimestampsToReturn,
};

/// Publish requests kept outstanding at most, whatever the number of subscriptions. Each
/// answer is handled and replaced at once, so a few cover many subscriptions; OPC UA servers
/// must accept more than they have subscriptions, some not many more (asyncua evicts above
/// subscriptions + 10).
pub const MAX_PUBLISH_REQUESTS: usize = 10;

/// Messages asked for again for one gap at most; the rest of a larger gap is counted lost
/// (a hostile or confused server cannot make the agent send millions of Republish requests).
pub const MAX_REPUBLISH: u32 = 100;

/// What the source keeps of one subscription.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    pub id: u32,
    /// Revised publishing interval × revised keep-alive count: the longest the server stays
    /// silent on this subscription while it is alive.
    pub keep_alive: Duration,
    /// Sequence number of the last data message handled.
    last: Option<u32>,
}

/// The subscriptions of one session, the acknowledgements owed and how many Publish requests
/// to keep outstanding.
#[derive(Debug, Default)]
pub struct Book {
    subscriptions: Vec<Subscription>,
    acks: Vec<SubscriptionAcknowledgement>,
    /// Lowered after `BadTooManyPublishRequests`.
    ceiling: Option<usize>,
}

/// What a data message's sequence number says, against the last one of its subscription.
#[derive(Debug, PartialEq, Eq)]
pub enum Sequence {
    /// The next one (or the first).
    Next,
    /// The numbers between the last and this one are missing: ask for `missing` again;
    /// `beyond` more are missing than are asked for.
    Gap { missing: Vec<u32>, beyond: u64 },
    /// Not newer than the last one: sent again (or late); handled, acknowledged, and the
    /// no-duplicate rule keeps its values out if the store has them.
    Old,
    /// A subscription not in the book (yet): its making is still being taken in.
    Unknown,
}

/// The sequence number after `n`: they run from 1 and wrap to 1 after `u32::MAX`.
fn after(n: u32) -> u32 {
    if n == u32::MAX { 1 } else { n + 1 }
}

impl Book {
    pub fn add(&mut self, id: u32, keep_alive: Duration) {
        self.subscriptions.push(Subscription {
            id,
            keep_alive,
            last: None,
        });
    }

    pub fn ids(&self) -> Vec<u32> {
        self.subscriptions.iter().map(|s| s.id).collect()
    }

    pub fn len(&self) -> usize {
        self.subscriptions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.subscriptions.is_empty()
    }

    /// How long a Publish may wait for its answer: the slowest subscription's keep-alive
    /// period plus `request_timeout`.
    pub fn publish_timeout(&self, request_timeout: Duration) -> Duration {
        self.subscriptions
            .iter()
            .map(|s| s.keep_alive)
            .max()
            .unwrap_or_default()
            + request_timeout
    }

    /// Publish requests to keep outstanding: two per subscription, at most
    /// [`MAX_PUBLISH_REQUESTS`] or what the server last accepted.
    pub fn wanted(&self) -> usize {
        if self.subscriptions.is_empty() {
            return 0;
        }
        let n = (2 * self.subscriptions.len()).min(MAX_PUBLISH_REQUESTS);
        self.ceiling.map_or(n, |c| n.min(c)).max(1)
    }

    /// The server refused a Publish as one too many while `outstanding` others wait.
    pub fn too_many(&mut self, outstanding: usize) {
        self.ceiling = Some(outstanding.max(1));
    }

    /// The acknowledgements for the next Publish (taken: give them back with
    /// [`Book::unsent`] if it fails).
    pub fn take_acks(&mut self) -> Vec<SubscriptionAcknowledgement> {
        std::mem::take(&mut self.acks)
    }

    pub fn unsent(&mut self, acks: Vec<SubscriptionAcknowledgement>) {
        self.acks.extend(acks);
    }

    pub fn ack(&mut self, subscription_id: u32, sequence_number: u32) {
        self.acks.push(SubscriptionAcknowledgement {
            subscription_id,
            sequence_number,
        });
    }

    /// Notes a data message's sequence number and says what it means.
    pub fn sequence(&mut self, subscription_id: u32, seq: u32) -> Sequence {
        let Some(sub) = self
            .subscriptions
            .iter_mut()
            .find(|s| s.id == subscription_id)
        else {
            return Sequence::Unknown;
        };
        let Some(last) = sub.last else {
            sub.last = Some(seq);
            return Sequence::Next;
        };
        let distance = seq.wrapping_sub(last);
        if distance == 0 || distance > u32::MAX / 2 {
            // Behind the last one (allowing for the wrap): sent again or late.
            return Sequence::Old;
        }
        sub.last = Some(seq);
        let mut missing = Vec::new();
        let mut n = after(last);
        while n != seq && missing.len() < MAX_REPUBLISH as usize {
            missing.push(n);
            n = after(n);
        }
        if missing.is_empty() {
            return Sequence::Next;
        }
        // The wrap skips 0, so a gap across it is one shorter than `distance` says.
        let skipped_zero = u64::from(seq < last);
        let total = u64::from(distance) - 1 - skipped_zero;
        Sequence::Gap {
            beyond: total.saturating_sub(missing.len() as u64),
            missing,
        }
    }
}

/// Whether a message carries notifications (a keep-alive carries none and is not
/// acknowledged).
pub fn has_data(message: &NotificationMessage) -> bool {
    message
        .notification_data
        .as_ref()
        .is_some_and(|d| !d.is_empty())
}

/// A subscription made on the server, as it revised it.
pub struct Made {
    pub id: u32,
    pub keep_alive: Duration,
    pub publishing_interval: Duration,
    /// Each requested item with the server's answer to it.
    pub results: Vec<(StatusCode, MonitoredItemCreateRequest)>,
}

/// Creates one subscription and its monitored items (`CreateSubscription`, then
/// `CreateMonitoredItems`), registering nothing in the session.
pub async fn create(
    session: &Session,
    publishing_interval: Duration,
    keep_alive_count: u32,
    max_notifications: u32,
    items: Vec<MonitoredItemCreateRequest>,
) -> Result<Made, String> {
    let made = CreateSubscription::new(session)
        .publishing_interval(publishing_interval)
        .max_keep_alive_count(keep_alive_count)
        .max_lifetime_count(keep_alive_count * 3)
        .max_notifications_per_publish(max_notifications)
        .publishing_enabled(true)
        .send(session.channel())
        .await
        .map_err(|e| format!("CreateSubscription: {e}"))?;
    let revised = if made.revised_publishing_interval.is_finite() {
        Duration::from_secs_f64(made.revised_publishing_interval.max(0.0) / 1000.0)
    } else {
        publishing_interval
    };
    let keep_alive = revised.saturating_mul(made.revised_max_keep_alive_count.max(1));
    let mut results = Vec::new();
    if !items.is_empty() {
        let answer = CreateMonitoredItems::new(made.subscription_id, session)
            .timestamps_to_return(TimestampsToReturn::Both)
            .items_to_create(items)
            .send(session.channel())
            .await
            .map_err(|e| format!("CreateMonitoredItems: {e}"))?;
        results = answer
            .results
            .into_iter()
            .map(|r| {
                let request = MonitoredItemCreateRequest {
                    item_to_monitor: r.item_to_monitor,
                    monitoring_mode: r.monitoring_mode,
                    requested_parameters: r.requested_parameters,
                };
                (r.result.status_code, request)
            })
            .collect();
    }
    Ok(Made {
        id: made.subscription_id,
        keep_alive,
        publishing_interval: revised,
        results,
    })
}

/// One Publish with the acknowledgements owed; gives them back with the answer so that a
/// failed Publish can return them to the book.
pub async fn publish(
    session: std::sync::Arc<Session>,
    acks: Vec<SubscriptionAcknowledgement>,
    timeout: Duration,
) -> (
    Vec<SubscriptionAcknowledgement>,
    Result<PublishResponse, StatusCode>,
) {
    let answer = Publish::new(&session)
        .acks(acks.clone())
        .timeout(timeout)
        .send(session.channel())
        .await
        .map_err(|e| e.status());
    (acks, answer)
}

/// Asks for a missed message again. `Ok(None)`: the server no longer has it.
pub async fn republish(
    session: &Session,
    subscription_id: u32,
    seq: u32,
) -> Result<Option<NotificationMessage>, StatusCode> {
    match Republish::new(subscription_id, seq, session)
        .send(session.channel())
        .await
    {
        Ok(r) if has_data(&r.notification_message) => Ok(Some(r.notification_message)),
        // asyncua answers a message it no longer has with an empty one.
        Ok(_) => Ok(None),
        Err(e) if e.status() == StatusCode::BadMessageNotAvailable => Ok(None),
        Err(e) => Err(e.status()),
    }
}

/// Deletes the session's subscriptions (best effort: closing the session deletes them too).
pub async fn delete(session: &Session, ids: Vec<u32>) {
    if ids.is_empty() {
        return;
    }
    let _ = DeleteSubscriptions::new(session)
        .subscription_ids(ids)
        .send(session.channel())
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book() -> Book {
        let mut b = Book::default();
        b.add(7, Duration::from_secs(10));
        b
    }

    #[test]
    fn consecutive_sequence_numbers_are_next_and_a_repeat_is_old() {
        let mut b = book();
        assert_eq!(b.sequence(7, 1), Sequence::Next);
        assert_eq!(b.sequence(7, 2), Sequence::Next);
        assert_eq!(b.sequence(7, 2), Sequence::Old);
        assert_eq!(b.sequence(7, 1), Sequence::Old);
        assert_eq!(b.sequence(7, 3), Sequence::Next);
        assert_eq!(b.sequence(8, 1), Sequence::Unknown);
    }

    #[test]
    fn a_gap_names_the_missing_numbers() {
        let mut b = book();
        assert_eq!(b.sequence(7, 4), Sequence::Next);
        assert_eq!(
            b.sequence(7, 7),
            Sequence::Gap {
                missing: vec![5, 6],
                beyond: 0
            }
        );
        // The gap's late messages are older than the last one now.
        assert_eq!(b.sequence(7, 5), Sequence::Old);
        assert_eq!(b.sequence(7, 8), Sequence::Next);
    }

    #[test]
    fn sequence_numbers_wrap_to_one_not_zero() {
        let mut b = book();
        assert_eq!(b.sequence(7, u32::MAX - 1), Sequence::Next);
        assert_eq!(b.sequence(7, u32::MAX), Sequence::Next);
        assert_eq!(b.sequence(7, 1), Sequence::Next);
        // MAX-1 then 2: MAX and 1 are missing (0 is not a sequence number).
        let mut b = book();
        assert_eq!(b.sequence(7, u32::MAX - 1), Sequence::Next);
        assert_eq!(
            b.sequence(7, 2),
            Sequence::Gap {
                missing: vec![u32::MAX, 1],
                beyond: 0
            }
        );
    }

    #[test]
    fn a_huge_gap_asks_for_at_most_max_republish_and_counts_the_rest() {
        let mut b = book();
        assert_eq!(b.sequence(7, 10), Sequence::Next);
        // 10 then 1,011: 1,000 missing (11..=1010), 100 asked for, 900 beyond.
        match b.sequence(7, 1011) {
            Sequence::Gap { missing, beyond } => {
                assert_eq!(missing.len(), MAX_REPUBLISH as usize);
                assert_eq!(missing.first(), Some(&11));
                assert_eq!(missing.last(), Some(&110));
                assert_eq!(beyond, 900);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn publish_requests_two_per_subscription_capped_and_lowered_on_too_many() {
        let mut b = Book::default();
        assert_eq!(b.wanted(), 0, "no subscription, no Publish");
        b.add(1, Duration::from_secs(10));
        assert_eq!(b.wanted(), 2);
        for id in 2..=20 {
            b.add(id, Duration::from_secs(30));
        }
        assert_eq!(b.wanted(), MAX_PUBLISH_REQUESTS);
        b.too_many(4);
        assert_eq!(b.wanted(), 4);
        b.too_many(0);
        assert_eq!(b.wanted(), 1, "never none while subscriptions live");
        assert_eq!(
            b.publish_timeout(Duration::from_secs(5)),
            Duration::from_secs(35),
            "the slowest keep-alive (30 s) plus the request timeout"
        );
    }

    #[test]
    fn acks_taken_for_a_failed_publish_are_owed_again() {
        let mut b = book();
        b.ack(7, 1);
        b.ack(7, 2);
        let sent = b.take_acks();
        assert_eq!(sent.len(), 2);
        assert!(b.take_acks().is_empty());
        b.ack(7, 3);
        b.unsent(sent);
        let seqs: Vec<u32> = b.take_acks().iter().map(|a| a.sequence_number).collect();
        assert_eq!(seqs, [3, 1, 2]);
    }
}
