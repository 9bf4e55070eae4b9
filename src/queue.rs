//! Every bounded channel of the process, with its capacity and what its sender does when it is
//! full: the pipeline's buffering semantics in one place, as Vector names them with `WhenFull`.
//!
//! A channel with two kinds of sender has a row per sender: the policy belongs to the side
//! that meets the full queue. Each row is a [`Queue`] below; the code that creates the channel
//! takes the capacity from it, and the code that sends checks at compile time that it does
//! what the row says, so neither can change without the other (and this table: a test
//! compares it with [`ALL`]).
//!
//! | queue | from → to | capacity | when full | why |
//! |---|---|---|---|---|
//! | [`EVENTS_FROM_MODBUS`] | Modbus connection task → engine | 1024 events, or 2 per polled device if more ¹ | DropNewest | polling keeps its schedule whatever the engine does, so this queue is the Modbus samples' bounded buffer: while the engine waits for the spool it fills, and then the newest poll result is dropped (the device's next poll supersedes it), counted in `shopfloor_source_events_dropped_total`, shown on the board (`source_events_dropped`) and logged as [`LossLog`] says |
//! | [`EVENTS_FROM_MQTT`] | MQTT broker task → engine | 1024 events, or 2 per polled device if more ¹ | Block | a message is the only copy of its data: the task stops reading, so the broker keeps the messages for the agent's session |
//! | [`EVENTS_FROM_S7`] | S7 device task → engine | 1024 events, or 2 per polled device if more ¹ | DropNewest | as for Modbus: an S7 PLC is polled, its next poll supersedes a dropped result, and its task keeps its schedule whatever the engine does; drops are counted in `shopfloor_source_events_dropped_total` |
//! | [`EVENTS_FROM_OPCUA`] | OPC UA client task → engine | 1024 events, or 2 per polled device if more ¹ | Block | a data change is the only copy of its value (the server does not send it again); meanwhile changes wait in the task's own bounded queue, where an overflow is counted |
//! | [`EVENTS_FROM_MELSEC`] | MELSEC device task → engine | 1024 events, or 2 per polled device if more ¹ | DropNewest | as for Modbus: polling keeps its schedule, the next poll supersedes a dropped result, counted in `shopfloor_source_events_dropped_total` (label `connection = melsec://host:port`) |
//! | [`EVENTS_FROM_METERS`] | DL/T 645 / CJ/T 188 bus task → engine | 1024 events, or 2 per polled device if more ¹ | Block | a bus is polled once a minute or so and its meters' counters are cumulative, so waiting costs nothing but a late poll: the task waits for room and its meters' schedule slips |
//! | [`EVENTS_FROM_HJ212`] | HJ 212 logger connection → engine | 1024 events, or 2 per polled device if more ¹ | Block | a logger's record is acknowledged only once queued: the connection stops reading, so the logger keeps its data (and sends again what was not acknowledged) |
//! | [`EVENTS_FROM_DIAL_IN`] | dial-in DTU task → engine | 1024 events, or 2 per polled device if more ¹ | DropNewest | as for Modbus: the devices behind a DTU are polled, the next poll supersedes a dropped result, and the DTU's task keeps its schedule whatever the engine does; drops are counted in `shopfloor_source_events_dropped_total` (label `connection = dial-in <dtu>`) |
//! | [`RECORDS_FROM_ENGINE`] | engine → spool task | 8 batches | Block | the engine hands over batches of up to `engine::BATCH_LINES` records, or what it has after `engine::BATCH_LINGER`; when the spool is slow it waits (still answering the board and keeping its clock) and stops taking events, so its own queue fills and holds the sources back; nothing is dropped here |
//! | [`RECORDS_FROM_DEVICE_HEALTH`] | device-health task → spool task | 8 batches | Block | the same queue as the engine's; the task has nothing else to do for a minute, so it waits |
//! | [`INGEST_MESSAGES`] | `county ingest` subscriber → spool task | 1024 messages | Block | a message is acknowledged only once on disk: the subscriber stops reading and the broker keeps it; sized to the broker's in-flight window (`RECEIVE_MAXIMUM`) |
//! | [`UPLINK_JOBS`] | uplink writer → uplink connection task | 1 batch | Block | one batch in flight at a time; the writer waits within its `timeout`, then retries from the spool |
//! | [`UPLINK_REQUESTS`] | uplink connection task → rumqttc event loop | 1024 requests | DropNewest | the task drives the event loop itself and must never wait for room; a message not queued fails its batch, which is sent again from the spool |
//! | [`MQTT_SOURCE_REQUESTS`] | MQTT broker task → rumqttc event loop | 4096 requests | DropNewest | the task drives the event loop itself; an acknowledgement not queued means the broker sends the message again |
//! | [`INGEST_REQUESTS`] | `county ingest` subscriber → rumqttc event loop | 4096 requests | DropNewest | as for the MQTT source: an acknowledgement not queued means the broker sends the message again |
//! | [`SIGNAL_QUERIES`] | web board, summary → engine | 8 queries | Block | the asker waits, at most `SIGNAL_QUERY_TIMEOUT` (2 s); the engine answers between two events |
//! | [`SIM_MQTT_REQUESTS`] | simulator publishers → rumqttc event loop | 64 requests | Block | the simulator's publishing task is not the one driving the event loop, so it may wait |
//!
//! ¹ The `EVENTS_FROM_*` rows are one channel, the engine's. Its capacity is 1024 events, or
//! two per polled device (Modbus, S7, MELSEC, devices behind dial-in DTUs) where the config has
//! more (`agent::config::Config::event_queue`): polled devices may all deliver at once (a
//! thousand DTUs dialling in after a restart, each device's first result with its "up"), and
//! the queue holds that round rather than dropping part of it.
//!
//! Not in the table, because their bound is not a channel's:
//!
//! - The spool itself is the one queue that drops the oldest: at `[spool] max_bytes` or
//!   `max_age`, or on a full disk, it deletes the oldest records, counted in
//!   `shopfloor_spool_dropped_lines` and on the board (`spool_dropped_lines`), logged as
//!   [`LossLog`] says (see `sink::spool`). With the queues above blocking, these bounds and the
//!   Modbus samples' buffer are the only places a record is ever dropped.
//! - The simulator's `seen` channel (requests it served, for tests) has the test's capacity;
//!   the simulator drops the newest when it is full and never waits for its observer.
//! - `county ingest`'s "committed" channel (spool task → subscriber) is unbounded on purpose:
//!   an acknowledgement must never be lost, and what waits in it is bounded by
//!   [`INGEST_MESSAGES`] and the spool task's append group.
//! - `watch` and `oneshot` channels hold one value and never fill.

/// What a sender does when its bounded channel is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Wait for room: the producer is held back, and with it whatever feeds it (a broker's TCP
    /// stream, a writer's batch). Nothing is dropped.
    Block,
    /// Drop what is being sent and count it; what is already queued stays.
    DropNewest,
    /// Drop the oldest queued item to make room. No channel does this today; the spool does,
    /// on disk, at its bounds.
    DropOldest,
}

impl WhenFull {
    /// For the compile-time checks at the send sites (`==` is not `const`).
    pub const fn is(self, other: WhenFull) -> bool {
        self as u8 == other as u8
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            WhenFull::Block => "Block",
            WhenFull::DropNewest => "DropNewest",
            WhenFull::DropOldest => "DropOldest",
        }
    }
}

/// A bounded channel as one kind of its senders meets it: a row of the table above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queue {
    /// The constant's name, as the table shows it: `EVENTS_FROM_MODBUS`.
    pub name: &'static str,
    pub capacity: usize,
    pub when_full: WhenFull,
}

impl Queue {
    pub const fn new(name: &'static str, capacity: usize, when_full: WhenFull) -> Queue {
        Queue {
            name,
            capacity,
            when_full,
        }
    }

    /// Called at a send site as `const _: () = QUEUE.sent_as(WhenFull::…);`: fails the build
    /// when the table gives the queue another policy than the code there implements.
    pub const fn sent_as(&self, policy: WhenFull) {
        assert!(
            self.when_full.is(policy),
            "this send site does not do what crate::queue says its queue does when full"
        );
    }

    /// A tokio channel of this capacity.
    pub fn tokio<T>(&self) -> (tokio::sync::mpsc::Sender<T>, tokio::sync::mpsc::Receiver<T>) {
        tokio::sync::mpsc::channel(self.capacity)
    }

    /// A channel of this capacity for senders on the async side, which may wait for room
    /// (`send_async`) or not (`try_send`), and a receiver on a thread of its own
    /// (`recv_timeout`): the spool queue.
    pub fn flume<T>(&self) -> (flume::Sender<T>, flume::Receiver<T>) {
        flume::bounded(self.capacity)
    }
}

/// Records lost at a bound, told to the log without flooding it and without losing count
/// (issue 22: a once-a-minute warning missed the drops after its last line). The first loss of
/// an episode is logged at once, then at most once per `every` with the count since the last
/// line; when the losses stop ([`LossLog::recovered`]) and at shutdown ([`LossLog::finish`]) a
/// last line gives the episode's total, so the log always adds up to the counter.
#[derive(Debug)]
pub struct LossLog {
    /// What was lost and where, for the log line: "spool full: oldest records dropped".
    what: &'static str,
    every: std::time::Duration,
    last_logged: Option<std::time::Instant>,
    unlogged: u64,
    episode: u64,
    total: u64,
}

impl LossLog {
    pub fn new(what: &'static str, every: std::time::Duration) -> Self {
        LossLog {
            what,
            every,
            last_logged: None,
            unlogged: 0,
            episode: 0,
            total: 0,
        }
    }

    /// `n` more records lost; logs the count since the last line when a line is due.
    pub fn lost(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        self.unlogged += n;
        self.episode += n;
        self.total += n;
        let due = self.last_logged.is_none_or(|t| t.elapsed() >= self.every);
        if due {
            tracing::warn!(
                lost = std::mem::take(&mut self.unlogged),
                episode_total = self.episode,
                process_total = self.total,
                every_s = self.every.as_secs(),
                "{} (logged at most once per every_s with the count since the last line)",
                self.what
            );
            self.last_logged = Some(std::time::Instant::now());
        }
    }

    /// Nothing was lost this time: if losses were going on, they stopped; log the episode's
    /// total, including what was lost since the last line.
    pub fn recovered(&mut self) {
        if self.episode == 0 {
            return;
        }
        tracing::warn!(
            lost = std::mem::take(&mut self.unlogged),
            episode_total = std::mem::take(&mut self.episode),
            process_total = self.total,
            "{}: stopped; episode_total is everything lost since it began",
            self.what
        );
        self.last_logged = None;
    }

    /// At shutdown: the losses not yet logged and the process's total.
    pub fn finish(&mut self) {
        if self.total == 0 {
            return;
        }
        tracing::warn!(
            lost = std::mem::take(&mut self.unlogged),
            episode_total = std::mem::take(&mut self.episode),
            process_total = self.total,
            "{}: total at shutdown",
            self.what
        );
    }

    /// Lost since the process started.
    pub fn total(&self) -> u64 {
        self.total
    }
}

/// Source events waiting for the engine (`agent::EVENT_QUEUE`), or two per polled device where
/// the config has more (`agent::config::Config::event_queue`).
pub const EVENT_QUEUE: usize = 1024;
/// Batches of records waiting for the spool task (`sink::SPOOL_QUEUE`). Few, because every
/// sender waits for room: the queue only smooths the spool task's transactions, and at
/// `engine::BATCH_LINES` (1024) records of about 200 bytes a batch it holds under 2 MB.
pub const SPOOL_QUEUE: usize = 8;

pub const EVENTS_FROM_MODBUS: Queue =
    Queue::new("EVENTS_FROM_MODBUS", EVENT_QUEUE, WhenFull::DropNewest);
pub const EVENTS_FROM_MQTT: Queue = Queue::new("EVENTS_FROM_MQTT", EVENT_QUEUE, WhenFull::Block);
pub const EVENTS_FROM_S7: Queue = Queue::new("EVENTS_FROM_S7", EVENT_QUEUE, WhenFull::DropNewest);
pub const EVENTS_FROM_OPCUA: Queue = Queue::new("EVENTS_FROM_OPCUA", EVENT_QUEUE, WhenFull::Block);
pub const EVENTS_FROM_MELSEC: Queue =
    Queue::new("EVENTS_FROM_MELSEC", EVENT_QUEUE, WhenFull::DropNewest);
pub const EVENTS_FROM_METERS: Queue =
    Queue::new("EVENTS_FROM_METERS", EVENT_QUEUE, WhenFull::Block);
pub const EVENTS_FROM_HJ212: Queue = Queue::new("EVENTS_FROM_HJ212", EVENT_QUEUE, WhenFull::Block);
pub const EVENTS_FROM_DIAL_IN: Queue =
    Queue::new("EVENTS_FROM_DIAL_IN", EVENT_QUEUE, WhenFull::DropNewest);
pub const RECORDS_FROM_ENGINE: Queue =
    Queue::new("RECORDS_FROM_ENGINE", SPOOL_QUEUE, WhenFull::Block);
pub const RECORDS_FROM_DEVICE_HEALTH: Queue =
    Queue::new("RECORDS_FROM_DEVICE_HEALTH", SPOOL_QUEUE, WhenFull::Block);
// MQTT 5 receive maximum of `county ingest` (`county::ingest::RECEIVE_MAXIMUM`).
pub const INGEST_MESSAGES: Queue = Queue::new("INGEST_MESSAGES", 1024, WhenFull::Block);
pub const UPLINK_JOBS: Queue = Queue::new("UPLINK_JOBS", 1, WhenFull::Block);
pub const UPLINK_REQUESTS: Queue = Queue::new("UPLINK_REQUESTS", 1024, WhenFull::DropNewest);
pub const MQTT_SOURCE_REQUESTS: Queue =
    Queue::new("MQTT_SOURCE_REQUESTS", 4096, WhenFull::DropNewest);
pub const INGEST_REQUESTS: Queue = Queue::new("INGEST_REQUESTS", 4096, WhenFull::DropNewest);
pub const SIGNAL_QUERIES: Queue = Queue::new("SIGNAL_QUERIES", 8, WhenFull::Block);
pub const SIM_MQTT_REQUESTS: Queue = Queue::new("SIM_MQTT_REQUESTS", 64, WhenFull::Block);

/// Every row of the table, in its order.
pub const ALL: &[Queue] = &[
    EVENTS_FROM_MODBUS,
    EVENTS_FROM_MQTT,
    EVENTS_FROM_S7,
    EVENTS_FROM_OPCUA,
    EVENTS_FROM_MELSEC,
    EVENTS_FROM_METERS,
    EVENTS_FROM_HJ212,
    EVENTS_FROM_DIAL_IN,
    RECORDS_FROM_ENGINE,
    RECORDS_FROM_DEVICE_HEALTH,
    INGEST_MESSAGES,
    UPLINK_JOBS,
    UPLINK_REQUESTS,
    MQTT_SOURCE_REQUESTS,
    INGEST_REQUESTS,
    SIGNAL_QUERIES,
    SIM_MQTT_REQUESTS,
];

#[cfg(test)]
mod tests {
    use super::*;

    /// The table in the module docs says what the constants say, row for row.
    #[test]
    fn the_table_lists_every_queue_with_its_capacity_and_policy() {
        let rows: Vec<(String, usize, String)> = include_str!("queue.rs")
            .lines()
            .filter_map(|l| l.strip_prefix("//! | [`"))
            .map(|row| {
                let cells: Vec<&str> = row.split(" | ").collect();
                let name = cells[0].trim_end_matches("`]").to_string();
                let capacity = cells[2]
                    .split(' ')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(usize::MAX);
                (name, capacity, cells[3].to_string())
            })
            .collect();
        let expected: Vec<(String, usize, String)> = ALL
            .iter()
            .map(|q| {
                (
                    q.name.to_string(),
                    q.capacity,
                    q.when_full.as_str().to_string(),
                )
            })
            .collect();
        assert_eq!(rows, expected);
    }
}
