//! From a message (topic, payload, arrival time) to the events the engine takes: pure code with
//! no socket, so every payload form and every kind of bad message is unit-tested here.
//!
//! What a message can come to:
//! - samples for one registered machine or meter, all stamped with one time (the message's own
//!   timestamp when it has one, else its arrival);
//! - an `Offline` event: the machine's Last Will payload, or a Sparkplug NDEATH/DDEATH;
//! - nothing, counted: oversized, malformed, a value of the wrong type, a timestamp far from
//!   now, a Sparkplug alias whose birth was missed, a machine that is not in the register.
//!
//! Counters are labelled by topic so an engineer can find the box at fault. A topic label per
//! message could grow without bound on a broker with thousands of topics, so after
//! [`MAX_TOPIC_LABELS`] distinct topics the rest share the label `(other topics)`. Warnings are
//! rate-limited per topic and kind: the first at once, then at most one a minute that says how
//! many were not logged.
//!
//! A topic that came to a registered machine or meter is remembered with its mapping and
//! target, so that the next message on it is not matched against the patterns again (up to
//! [`MAX_ROUTES`] topics, forgotten all at once at the bound). What a message comes to does not
//! depend on it: the mappings and the register do not change while the mapper lives.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use tracing::{debug, warn};

use super::payload::{self, Found, JsonPath, Paths};
use super::sparkplug::{self, MessageType};
use super::topic::{Pattern, Template};
use crate::metrics::Metrics;
use crate::model::SignalType;
use crate::model::{Sample, SourceEvent, Target, Value};
use crate::source::mqtt::config::{MqttBroker, MqttTopic, PayloadFormat};

/// Distinct topics that get a label of their own in the counters.
pub const MAX_TOPIC_LABELS: usize = 1000;
/// The label shared by topics past [`MAX_TOPIC_LABELS`].
pub const OTHER_TOPICS: &str = "(other topics)";
/// The least time between two warnings about one topic and kind of fault.
const LOG_EVERY: Duration = Duration::from_secs(60);
/// Topics with more levels are dropped unread: far beyond any real topic scheme (ISA-95 paths
/// and Sparkplug use under ten), and a topic is matched level by level.
pub const MAX_TOPIC_LEVELS: usize = 128;
/// Sparkplug edge nodes the agent keeps birth certificates of, per broker; messages of
/// further nodes are counted as malformed and dropped.
pub const MAX_SPARKPLUG_NODES: usize = 1000;
/// Metric names (and aliases) kept per Sparkplug node; metrics born past it are read by name
/// only, and by alias counted as `unknown_alias`.
pub const MAX_SPARKPLUG_METRICS: usize = 10_000;
/// Topics are cut to this many bytes in labels and logs: a topic may be 64 KiB long, and up
/// to [`MAX_TOPIC_LABELS`] of them are kept.
pub const MAX_TOPIC_TEXT: usize = 200;
/// Topics whose way (mapping and registered target) the mapper remembers, so that a message on
/// a known topic is not matched against the patterns again; at the bound they are forgotten
/// all at once and learnt again. Topics longer than [`MAX_TOPIC_TEXT`] are not remembered.
pub const MAX_ROUTES: usize = 1000;

/// `topic` cut to [`MAX_TOPIC_TEXT`] bytes (at a character boundary), with `…` when cut.
fn shown(topic: &str) -> std::borrow::Cow<'_, str> {
    if topic.len() <= MAX_TOPIC_TEXT {
        return std::borrow::Cow::Borrowed(topic);
    }
    let cut = (0..=MAX_TOPIC_TEXT)
        .rev()
        .find(|i| topic.is_char_boundary(*i))
        .unwrap_or(0);
    std::borrow::Cow::Owned(format!("{}…", &topic[..cut]))
}

/// Why a message, or a value in it, was not used. The label of the bad-message counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// Payload larger than `max_packet_size`.
    Oversized,
    /// Not JSON, not UTF-8 text, not a Sparkplug payload.
    Malformed,
    /// A value that does not convert to its declared type.
    WrongType,
    /// A mapped field the message does not have (or has as null).
    MissingField,
    /// A timestamp that cannot be read or is further from now than `max_timestamp_skew`.
    Timestamp,
    /// A Sparkplug metric sent by alias whose birth certificate the agent has not seen.
    UnknownAlias,
    /// A topic of more than [`MAX_TOPIC_LEVELS`] levels.
    Topic,
}

impl Fault {
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Oversized => "oversized",
            Fault::Malformed => "malformed",
            Fault::WrongType => "wrong_type",
            Fault::MissingField => "missing_field",
            Fault::Timestamp => "timestamp",
            Fault::UnknownAlias => "unknown_alias",
            Fault::Topic => "topic",
        }
    }
}

/// Whom a topic mapping's messages are for.
#[derive(Debug, Clone)]
enum TargetTemplate {
    Machine(Template),
    Meter(Template),
}

#[derive(Debug, Clone)]
struct Field {
    signal: Template,
    /// The signal name when the template has no capture (nearly always), made once.
    fixed_signal: Option<Arc<str>>,
    /// Slot of its JSON path in the mapping's [`Paths`] (json format).
    slot: Option<usize>,
    /// Metric name (sparkplug format).
    metric: Option<String>,
    value_type: SignalType,
}

#[derive(Debug, Clone)]
struct Mapping {
    pattern: Pattern,
    format: PayloadFormat,
    target: TargetTemplate,
    /// The JSON paths of the fields and the timestamp (json format).
    paths: Paths,
    /// Slot of the timestamp's path in `paths`.
    timestamp: Option<usize>,
    offline_payload: Option<String>,
    fields: Vec<Field>,
    /// Whether a topic's way can be remembered: not Sparkplug (whose messages go by node and
    /// device), and every signal name fixed, so nothing but the target comes from the topic.
    routable: bool,
}

/// What the agent knows of one Sparkplug edge node from its birth certificates.
#[derive(Debug, Default)]
struct EdgeNode {
    /// Metric alias → (name, datatype), from NBIRTH and DBIRTH.
    aliases: HashMap<u64, (String, u32)>,
    /// Metric name → datatype, for DATA messages that leave the datatype out.
    datatypes: HashMap<String, u32>,
    /// The node's `bdSeq` at its last birth: an NDEATH with another one is a stale will from an
    /// earlier session and must not take the node's machines offline.
    bd_seq: Option<i64>,
    /// Device id → the target it maps to, for NDEATH (all of the node's devices go offline).
    devices: HashMap<String, Target>,
}

/// Compiles a broker's topic map. The config was checked by `shopfloor check` (see
/// `config::load`); anything that still fails to compile is reported by the caller.
pub fn compile(topic: &MqttTopic) -> Result<(Pattern, Vec<String>), String> {
    let pattern = Pattern::parse(&topic.pattern)?;
    let mut names: Vec<String> = pattern.capture_names().map(str::to_string).collect();
    if topic.format == PayloadFormat::Sparkplug {
        names.extend(["group", "node", "device"].map(String::from));
    }
    Ok((pattern, names))
}

/// The machine template when the topic gives none: `{machine}`, or `{device}` for Sparkplug.
pub fn default_machine(format: PayloadFormat) -> &'static str {
    match format {
        PayloadFormat::Sparkplug => "{device}",
        _ => "{machine}",
    }
}

/// Counters and rate-limited warnings of one broker.
#[derive(Debug)]
struct Stats {
    broker: Arc<str>,
    metrics: Metrics,
    messages: Arc<AtomicU64>,
    unmapped: Arc<AtomicU64>,
    labelled: HashSet<String>,
    bad: HashMap<(String, Fault), Arc<AtomicU64>>,
    unregistered: HashMap<String, Arc<AtomicU64>>,
    /// (topic label, fault) → when last logged and how many were not logged since.
    logged: HashMap<(String, Fault), (Instant, u64)>,
    unmapped_logged: HashSet<String>,
}

impl Stats {
    fn new(broker: Arc<str>, metrics: Metrics) -> Self {
        let labels = [("broker", &*broker)];
        Stats {
            messages: metrics.counter(
                "shopfloor_mqtt_messages_total",
                "MQTT messages received, good and bad.",
                &labels,
            ),
            unmapped: metrics.counter(
                "shopfloor_mqtt_unmapped_messages_total",
                "MQTT messages on a subscribed topic that no topic pattern matches.",
                &labels,
            ),
            broker,
            metrics,
            labelled: HashSet::new(),
            bad: HashMap::new(),
            unregistered: HashMap::new(),
            logged: HashMap::new(),
            unmapped_logged: HashSet::new(),
        }
    }

    fn label(&mut self, topic: &str) -> String {
        let topic = &*shown(topic);
        if self.labelled.contains(topic) {
            return topic.to_string();
        }
        if self.labelled.len() < MAX_TOPIC_LABELS {
            self.labelled.insert(topic.to_string());
            return topic.to_string();
        }
        OTHER_TOPICS.to_string()
    }

    /// Counts a fault and logs it unless one like it was logged in the last minute.
    fn fault(&mut self, topic: &str, fault: Fault, detail: &str) {
        let label = self.label(topic);
        let key = (label, fault);
        let counter = match self.bad.get(&key) {
            Some(c) => c.clone(),
            None => {
                let c = self.metrics.counter(
                    "shopfloor_mqtt_bad_messages_total",
                    "MQTT messages or values not used, by topic and kind of fault.",
                    &[
                        ("broker", &self.broker),
                        ("topic", &key.0),
                        ("kind", fault.as_str()),
                    ],
                );
                self.bad.insert(key.clone(), c.clone());
                c
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        if self.logged.len() > 4 * MAX_TOPIC_LABELS {
            self.logged.clear();
        }
        match self.logged.get_mut(&key) {
            Some((last, suppressed)) if now.duration_since(*last) < LOG_EVERY => {
                *suppressed += 1;
            }
            entry => {
                let suppressed = entry.map_or(0, |(_, n)| *n);
                warn!(
                    broker = %self.broker,
                    topic = %shown(topic),
                    kind = fault.as_str(),
                    not_logged_since_last = suppressed,
                    "{detail}"
                );
                self.logged.insert(key, (now, 0));
            }
        }
    }

    fn unregistered(&mut self, topic: &str, id: &str) {
        let label = self.label(topic);
        if let Some(c) = self.unregistered.get(&label) {
            c.fetch_add(1, Ordering::Relaxed);
            return;
        }
        warn!(
            broker = %self.broker,
            topic = %shown(topic),
            id,
            "messages for `{id}`, which is not in the register: add a [[machine]] (or [[meter]]) \
             with this id or fix the topic map; counted, not logged again for this topic"
        );
        let c = self.metrics.counter(
            "shopfloor_mqtt_unregistered_messages_total",
            "MQTT messages for machines or meters that are not in the register, by topic.",
            &[("broker", &self.broker), ("topic", &label)],
        );
        c.fetch_add(1, Ordering::Relaxed);
        self.unregistered.insert(label, c);
    }

    fn unmapped(&mut self, topic: &str) {
        self.unmapped.fetch_add(1, Ordering::Relaxed);
        let topic = shown(topic);
        if self.unmapped_logged.len() < MAX_TOPIC_LABELS
            && self.unmapped_logged.insert(topic.to_string())
        {
            debug!(broker = %self.broker, %topic, "no topic pattern matches: message ignored");
        }
    }
}

/// Turns messages of one broker into engine events. See the module documentation.
#[derive(Debug)]
pub struct Mapper {
    mappings: Vec<Mapping>,
    /// Topic → (index of its mapping, its registered target), for topics that came to a
    /// registered target of a [`Mapping::routable`] mapping; at most [`MAX_ROUTES`].
    routes: HashMap<Box<str>, (usize, Target)>,
    ctx: Ctx,
}

/// Everything of a [`Mapper`] that handling a message changes, apart from the mappings it
/// reads, so the two can be borrowed at once.
#[derive(Debug)]
struct Ctx {
    machines: HashSet<Arc<str>>,
    meters: HashSet<Arc<str>>,
    max_payload: usize,
    max_skew: SignedDuration,
    /// (group, node) → what its births said.
    nodes: HashMap<(String, String), EdgeNode>,
    stats: Stats,
    /// The room of the values a JSON payload has at the mapping's paths, kept empty between
    /// messages so that reading one allocates nothing for them.
    found: Vec<Option<Found<'static>>>,
}

impl Mapper {
    /// Counts a message the client could not read at all: a 3.1.1 packet of `size` bytes,
    /// larger than the client reads (its topic is unknown).
    pub fn oversized_unread(&mut self, size: usize, limit: usize) {
        self.ctx.stats.fault(
            "(unread)",
            Fault::Oversized,
            &format!("a message of {size} bytes is larger than the {limit} bytes the client reads: not read"),
        );
    }

    /// `machines` and `meters` are the register: messages for anything else are counted.
    pub fn new(
        broker: &MqttBroker,
        machines: HashSet<Arc<str>>,
        meters: HashSet<Arc<str>>,
        metrics: Metrics,
    ) -> Result<Mapper, String> {
        let mut mappings = Vec::with_capacity(broker.topics.len());
        for topic in &broker.topics {
            let (pattern, _) = compile(topic)?;
            let target = match (&topic.machine, &topic.meter) {
                (_, Some(meter)) => TargetTemplate::Meter(Template::parse(meter)?),
                (Some(machine), None) => TargetTemplate::Machine(Template::parse(machine)?),
                (None, None) => {
                    TargetTemplate::Machine(Template::parse(default_machine(topic.format))?)
                }
            };
            let mut fields = Vec::with_capacity(topic.fields.len());
            let mut paths = Paths::default();
            for f in &topic.fields {
                let signal = Template::parse(&f.signal)?;
                let (slot, metric) = match (topic.format, &f.path) {
                    (PayloadFormat::Json, p) => {
                        let path = JsonPath::parse(p.as_deref().unwrap_or(&f.signal))?;
                        (Some(paths.add(&path)), None)
                    }
                    (PayloadFormat::Sparkplug, p) => {
                        (None, Some(p.clone().unwrap_or_else(|| f.signal.clone())))
                    }
                    (PayloadFormat::Text, _) => (None, None),
                };
                fields.push(Field {
                    fixed_signal: signal.fixed().map(Arc::from),
                    signal,
                    slot,
                    metric,
                    value_type: f.value_type,
                });
            }
            mappings.push(Mapping {
                routable: topic.format != PayloadFormat::Sparkplug
                    && fields.iter().all(|f| f.fixed_signal.is_some()),
                pattern,
                format: topic.format,
                target,
                timestamp: match topic.timestamp.as_deref().map(JsonPath::parse) {
                    Some(t) if topic.format == PayloadFormat::Json => Some(paths.add(&t?)),
                    Some(t) => t.map(|_| None)?,
                    None => None,
                },
                paths,
                offline_payload: topic.offline_payload.as_ref().map(|s| s.trim().to_string()),
                fields,
            });
        }
        Ok(Mapper {
            mappings,
            routes: HashMap::new(),
            ctx: Ctx {
                machines,
                meters,
                max_payload: broker.max_packet_size() as usize,
                max_skew: SignedDuration::try_from(broker.max_timestamp_skew)
                    .unwrap_or(SignedDuration::MAX),
                nodes: HashMap::new(),
                stats: Stats::new(Arc::from(broker.id.as_str()), metrics),
                found: Vec::new(),
            },
        })
    }

    /// The subscription filters, one per distinct pattern.
    pub fn filters(&self) -> Vec<String> {
        let mut filters: Vec<String> = Vec::new();
        for m in &self.mappings {
            if !filters.iter().any(|f| f == m.pattern.filter()) {
                filters.push(m.pattern.filter().to_string());
            }
        }
        filters
    }

    /// Handles one message; appends what it comes to to `out`.
    pub fn handle(
        &mut self,
        topic: &str,
        payload: &[u8],
        arrival: Timestamp,
        out: &mut Vec<SourceEvent>,
    ) {
        let ctx = &mut self.ctx;
        ctx.stats.messages.fetch_add(1, Ordering::Relaxed);
        // A known topic passed the checks below before and leads where it led then: the
        // mappings and the register do not change.
        let known = if topic.len() <= MAX_TOPIC_TEXT {
            self.routes.get(topic).cloned()
        } else {
            None
        };
        let (index, captures) = match &known {
            Some((index, _)) => (*index, Vec::new()),
            None => {
                let levels = topic.bytes().filter(|b| *b == b'/').count() + 1;
                if levels > MAX_TOPIC_LEVELS {
                    let detail = format!(
                        "topic of {levels} levels ({} bytes), more than {MAX_TOPIC_LEVELS}: dropped",
                        topic.len()
                    );
                    ctx.stats.fault(topic, Fault::Topic, &detail);
                    return;
                }
                let Some(found) = self
                    .mappings
                    .iter()
                    .enumerate()
                    .find_map(|(i, m)| m.pattern.matches(topic).map(|c| (i, c)))
                else {
                    ctx.stats.unmapped(topic);
                    return;
                };
                found
            }
        };
        let mapping = &self.mappings[index];
        if payload.len() > ctx.max_payload {
            let detail = format!(
                "payload of {} bytes is larger than max_packet_size ({}): dropped",
                payload.len(),
                ctx.max_payload
            );
            ctx.stats.fault(topic, Fault::Oversized, &detail);
            return;
        }
        if mapping.format == PayloadFormat::Sparkplug {
            let Some(sp) = sparkplug::parse_topic(topic) else {
                ctx.stats.unmapped(topic);
                return;
            };
            let mut captures = captures;
            captures.extend([
                ("group", sp.group),
                ("node", sp.node),
                ("device", sp.device),
            ]);
            ctx.sparkplug(mapping, topic, &sp, &captures, payload, arrival, out);
            return;
        }
        let target = match known {
            Some((_, target)) => target,
            None => {
                let Some(target) = ctx.resolve(mapping, topic, &captures) else {
                    return;
                };
                if mapping.routable && topic.len() <= MAX_TOPIC_TEXT {
                    if self.routes.len() >= MAX_ROUTES {
                        self.routes.clear();
                    }
                    self.routes.insert(topic.into(), (index, target.clone()));
                }
                target
            }
        };
        if let Some(offline) = &mapping.offline_payload
            && is_offline(payload, offline)
        {
            out.push(SourceEvent::Offline {
                target,
                at: arrival,
                reason: format!("offline payload on {topic}"),
            });
            return;
        }
        match mapping.format {
            PayloadFormat::Json => {
                ctx.json(mapping, topic, &captures, target, payload, arrival, out)
            }
            PayloadFormat::Text => {
                ctx.text(mapping, topic, &captures, target, payload, arrival, out)
            }
            PayloadFormat::Sparkplug => {}
        }
    }
}

impl Ctx {
    /// The registered target of a message, or `None` (counted) when the topic names none.
    fn resolve(
        &mut self,
        mapping: &Mapping,
        topic: &str,
        captures: &[(&str, &str)],
    ) -> Option<Target> {
        let (template, registered, make): (_, _, fn(Arc<str>) -> Target) = match &mapping.target {
            TargetTemplate::Machine(t) => (t, &self.machines, Target::Machine),
            TargetTemplate::Meter(t) => (t, &self.meters, Target::Meter),
        };
        let id = template.render(captures)?;
        match registered.get(id.as_str()) {
            Some(id) => Some(make(id.clone())),
            None => {
                self.stats.unregistered(topic, &id);
                None
            }
        }
    }

    /// Checks a message's own timestamp against the clock; `None` (counted) when it is too far.
    fn checked_time(
        &mut self,
        topic: &str,
        at: Timestamp,
        arrival: Timestamp,
    ) -> Option<Timestamp> {
        if at.duration_since(arrival).abs() > self.max_skew {
            let detail = format!(
                "timestamp {at} is {} from the agent's clock, more than max_timestamp_skew: message dropped",
                at.duration_since(arrival)
                    .round(jiff::Unit::Second)
                    .unwrap_or_default()
            );
            self.stats.fault(topic, Fault::Timestamp, &detail);
            return None;
        }
        Some(at)
    }

    #[allow(clippy::too_many_arguments)]
    fn json(
        &mut self,
        mapping: &Mapping,
        topic: &str,
        captures: &[(&str, &str)],
        target: Target,
        payload: &[u8],
        arrival: Timestamp,
        out: &mut Vec<SourceEvent>,
    ) {
        let mut doc = emptied(std::mem::take(&mut self.found));
        self.json_found(
            mapping, topic, captures, target, payload, arrival, &mut doc, out,
        );
        self.found = emptied(doc);
    }

    /// [`Ctx::json`] with `doc`, the room for the values at the mapping's paths.
    #[allow(clippy::too_many_arguments)]
    fn json_found<'p>(
        &mut self,
        mapping: &Mapping,
        topic: &str,
        captures: &[(&str, &str)],
        target: Target,
        payload: &'p [u8],
        arrival: Timestamp,
        doc: &mut Vec<Option<Found<'p>>>,
        out: &mut Vec<SourceEvent>,
    ) {
        if let Err(e) = mapping.paths.read(payload, doc) {
            self.stats
                .fault(topic, Fault::Malformed, &format!("not JSON ({e}): dropped"));
            return;
        }
        let at = match mapping.timestamp.and_then(|slot| doc[slot].as_ref()) {
            None | Some(Found::Null) => arrival,
            Some(t) => match payload::timestamp_of(t) {
                Ok(at) => at,
                Err(e) => {
                    self.stats.fault(
                        topic,
                        Fault::Timestamp,
                        &format!("timestamp: {e}: message dropped"),
                    );
                    return;
                }
            },
        };
        let Some(at) = self.checked_time(topic, at, arrival) else {
            return;
        };
        let mut found = Collected::new(target, at, mapping.fields.len());
        for field in &mapping.fields {
            let Some(signal) = signal_name(field, captures) else {
                continue;
            };
            match field.slot.and_then(|slot| doc[slot].as_ref()) {
                None | Some(Found::Null) => {
                    found.fault(Fault::MissingField, format!("no value for `{signal}`"));
                }
                Some(j) => match payload::from_found(j) {
                    Ok(raw) => found.take(signal, raw, field.value_type, ""),
                    Err(what) => found.fault(
                        Fault::WrongType,
                        format!("`{signal}` is {what}, not a single value"),
                    ),
                },
            }
        }
        found.finish(&mut self.stats, topic, out);
    }

    #[allow(clippy::too_many_arguments)]
    fn text(
        &mut self,
        mapping: &Mapping,
        topic: &str,
        captures: &[(&str, &str)],
        target: Target,
        payload: &[u8],
        arrival: Timestamp,
        out: &mut Vec<SourceEvent>,
    ) {
        let Ok(text) = std::str::from_utf8(payload) else {
            self.stats.fault(
                topic,
                Fault::Malformed,
                "payload is not UTF-8 text: dropped",
            );
            return;
        };
        let Some(field) = mapping.fields.first() else {
            return;
        };
        let Some(signal) = signal_name(field, captures) else {
            return;
        };
        match payload::coerce(payload::from_text(text), field.value_type) {
            Ok(value) => out.push(SourceEvent::Samples(vec![Sample {
                target,
                signal,
                value,
                at: arrival,
            }])),
            Err(e) => {
                let detail = format!("`{signal}`: {e}: dropped");
                self.stats.fault(topic, Fault::WrongType, &detail);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn sparkplug(
        &mut self,
        mapping: &Mapping,
        topic: &str,
        sp: &sparkplug::Topic<'_>,
        captures: &[(&str, &str)],
        payload: &[u8],
        arrival: Timestamp,
        out: &mut Vec<SourceEvent>,
    ) {
        let node_key = (sp.group.to_string(), sp.node.to_string());
        match sp.kind {
            MessageType::Other => return,
            MessageType::NDeath => {
                let Some(node) = self.nodes.get_mut(&node_key) else {
                    return;
                };
                let bd_seq = sparkplug::decode(payload).ok().and_then(|p| bd_seq(&p));
                if let (Some(death), Some(birth)) = (bd_seq, node.bd_seq)
                    && death != birth
                {
                    debug!(topic, death, birth, "NDEATH of an earlier session: ignored");
                    return;
                }
                node.aliases.clear();
                node.datatypes.clear();
                for (device, target) in node.devices.drain() {
                    out.push(SourceEvent::Offline {
                        target,
                        at: arrival,
                        reason: format!("Sparkplug NDEATH of node {} (device {device})", sp.node),
                    });
                }
                return;
            }
            MessageType::DDeath => {
                let target = self
                    .nodes
                    .get_mut(&node_key)
                    .and_then(|n| n.devices.remove(sp.device));
                if let Some(target) = target.or_else(|| self.resolve(mapping, topic, captures)) {
                    out.push(SourceEvent::Offline {
                        target,
                        at: arrival,
                        reason: format!("Sparkplug DDEATH of {}/{}", sp.node, sp.device),
                    });
                }
                return;
            }
            _ => {}
        }
        let decoded = match sparkplug::decode(payload) {
            Ok(p) => p,
            Err(e) => {
                self.stats
                    .fault(topic, Fault::Malformed, &format!("{e}: dropped"));
                return;
            }
        };
        if !self.nodes.contains_key(&node_key) && self.nodes.len() >= MAX_SPARKPLUG_NODES {
            let detail = format!(
                "more than {MAX_SPARKPLUG_NODES} Sparkplug edge nodes on this broker: message of a new node dropped"
            );
            self.stats.fault(topic, Fault::Malformed, &detail);
            return;
        }
        let node = self.nodes.entry(node_key).or_default();
        if sp.kind == MessageType::NBirth {
            // A new session of the node: its aliases start afresh.
            *node = EdgeNode {
                bd_seq: bd_seq(&decoded),
                devices: std::mem::take(&mut node.devices),
                ..EdgeNode::default()
            };
        }
        if matches!(sp.kind, MessageType::NBirth | MessageType::DBirth) {
            for m in &decoded.metrics {
                if let Some(name) = &m.name {
                    if node.datatypes.len() >= MAX_SPARKPLUG_METRICS
                        && !node.datatypes.contains_key(name)
                    {
                        continue;
                    }
                    node.datatypes.insert(name.clone(), m.datatype);
                    if let Some(alias) = m.alias {
                        node.aliases.insert(alias, (name.clone(), m.datatype));
                    }
                }
            }
        }
        // Node-level metrics belong to no machine unless the machine is named by `{node}`.
        let Some(target) = self.resolve(mapping, topic, captures) else {
            return;
        };
        if let Some(node) = self
            .nodes
            .get_mut(&(sp.group.to_string(), sp.node.to_string()))
        {
            // Devices map to registered machines, so there are only as many as the register.
            node.devices.insert(sp.device.to_string(), target.clone());
        }
        let at = match decoded.timestamp.and_then(|ms| i64::try_from(ms).ok()) {
            Some(ms) => match Timestamp::from_millisecond(ms) {
                Ok(at) => at,
                Err(e) => {
                    let detail = format!("payload timestamp {ms}: {e}: message dropped");
                    self.stats.fault(topic, Fault::Timestamp, &detail);
                    return;
                }
            },
            None => arrival,
        };
        let Some(at) = self.checked_time(topic, at, arrival) else {
            return;
        };
        let mut found = Collected::new(target, at, mapping.fields.len());
        let node = self.nodes.get(&(sp.group.to_string(), sp.node.to_string()));
        for m in &decoded.metrics {
            let (name, datatype) = match (&m.name, m.alias) {
                (Some(name), _) => (
                    name.as_str(),
                    match m.datatype {
                        0 => node
                            .and_then(|n| n.datatypes.get(name))
                            .copied()
                            .unwrap_or(0),
                        d => d,
                    },
                ),
                (None, Some(alias)) => match node.and_then(|n| n.aliases.get(&alias)) {
                    Some((name, datatype)) => (name.as_str(), *datatype),
                    None => {
                        found.fault(
                            Fault::UnknownAlias,
                            format!(
                                "metric alias {alias} was not in any birth certificate seen \
                                 since the agent started: value left out until the node \
                                 publishes its birth again"
                            ),
                        );
                        continue;
                    }
                },
                (None, None) => continue,
            };
            for field in mapping
                .fields
                .iter()
                .filter(|f| f.metric.as_deref() == Some(name))
            {
                let Some(signal) = signal_name(field, captures) else {
                    continue;
                };
                let raw = match (&m.value, m.is_null) {
                    (Some(raw), false) => sparkplug::value(raw, datatype),
                    _ => None,
                };
                match raw {
                    Some(raw) => found.take(signal, raw, field.value_type, name),
                    None => {
                        found.fault(Fault::MissingField, format!("`{signal}` ({name}) is null"))
                    }
                }
            }
        }
        found.finish(&mut self.stats, topic, out);
    }
}

/// The samples and the faults of one message, all for one target and one timestamp.
struct Collected {
    target: Target,
    at: Timestamp,
    samples: Vec<Sample>,
    faults: Vec<(Fault, String)>,
}

impl Collected {
    fn new(target: Target, at: Timestamp, capacity: usize) -> Self {
        Collected {
            target,
            at,
            samples: Vec::with_capacity(capacity),
            faults: Vec::new(),
        }
    }

    fn fault(&mut self, fault: Fault, detail: String) {
        self.faults.push((fault, detail));
    }

    /// Takes a value converted to the declared type, or records why it was left out. `source`
    /// names where it came from (a Sparkplug metric) when that is not the signal.
    fn take(&mut self, signal: Arc<str>, raw: Value, declared: SignalType, source: &str) {
        match payload::coerce(raw, declared) {
            Ok(value) => self.samples.push(Sample {
                target: self.target.clone(),
                signal,
                value,
                at: self.at,
            }),
            Err(e) if source.is_empty() => {
                self.fault(Fault::WrongType, format!("`{signal}`: {e}: value left out"))
            }
            Err(e) => self.fault(
                Fault::WrongType,
                format!("`{signal}` ({source}): {e}: value left out"),
            ),
        }
    }

    /// Counts the faults and hands on the samples, if any.
    fn finish(self, stats: &mut Stats, topic: &str, out: &mut Vec<SourceEvent>) {
        for (fault, detail) in self.faults {
            stats.fault(topic, fault, &detail);
        }
        if !self.samples.is_empty() {
            out.push(SourceEvent::Samples(self.samples));
        }
    }
}

/// Whether `payload`, trimmed, is the (trimmed) offline payload `offline`. A payload of another
/// length that starts and ends with a printable ASCII character (any JSON object or array) is
/// not, without reading it through: `trim` would leave it as it is.
fn is_offline(payload: &[u8], offline: &str) -> bool {
    let untrimmable = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_graphic());
    if payload.len() != offline.len() && untrimmable(payload.first()) && untrimmable(payload.last())
    {
        return false;
    }
    std::str::from_utf8(payload).is_ok_and(|p| p.trim() == offline)
}

/// `found` emptied, on the same allocation (collecting a vector's own values, mapped to a type
/// of the same size, reuses its room): the values borrowed from one payload go, the room stays
/// for the next payload.
fn emptied<'a, 'b>(mut found: Vec<Option<Found<'a>>>) -> Vec<Option<Found<'b>>> {
    found.clear();
    found.into_iter().map(|_| None).collect()
}

fn signal_name(field: &Field, captures: &[(&str, &str)]) -> Option<Arc<str>> {
    match &field.fixed_signal {
        Some(s) => Some(s.clone()),
        None => field.signal.render(captures).map(Arc::from),
    }
}

/// The `bdSeq` metric of an NBIRTH or NDEATH, which pairs a death with its birth.
fn bd_seq(p: &sparkplug::Payload) -> Option<i64> {
    p.metrics
        .iter()
        .find(|m| m.name.as_deref() == Some("bdSeq"))
        .and_then(|m| m.value.as_ref())
        .and_then(|raw| sparkplug::value(raw, sparkplug::datatype::INT64))
        .and_then(|v| match v {
            crate::model::Value::Int(i) => Some(i),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::source::mqtt::sparkplug::{Metric, Payload, Raw, datatype};

    const BROKER: &str = r#"
id = "plant"
address = "127.0.0.1:1883"
max_packet_size = 2048
max_timestamp_skew = "10m"

[[topic]]
pattern = "plant/{machine}/data"
timestamp = "ts"
field = [
  { signal = "run", path = "state.run", type = "bool" },
  { signal = "spindle_rpm", path = "spindle.rpm", type = "float" },
  { signal = "parts", type = "int" },
  { signal = "program", path = "nc.program", type = "string" },
  { signal = "x_load", path = "axes[0].load" },
]

[[topic]]
pattern = "plant/{machine}/status"
format = "text"
offline_payload = "offline"
field = [{ signal = "status", type = "string" }]

[[topic]]
pattern = "meters/{m}/kwh"
meter = "{m}"
format = "text"
field = [{ signal = "energy_kwh" }]

[[topic]]
pattern = "spBv1.0/shop1/#"
format = "sparkplug"
field = [
  { signal = "spindle_rpm", path = "Spindle/RPM" },
  { signal = "alarm_code", path = "Alarm/Code", type = "int" },
  { signal = "run", path = "Running", type = "bool" },
]
"#;

    fn now() -> Timestamp {
        Timestamp::from_second(1_714_521_600).unwrap()
    }

    fn mapper() -> (Mapper, Metrics) {
        let broker: MqttBroker = toml::from_str(BROKER).unwrap();
        let metrics = Metrics::new();
        let ids = |list: &[&str]| list.iter().map(|s| Arc::from(*s)).collect();
        let m = Mapper::new(
            &broker,
            ids(&["cnc01", "cnc02"]),
            ids(&["main"]),
            metrics.clone(),
        )
        .unwrap();
        (m, metrics)
    }

    fn handle(m: &mut Mapper, topic: &str, payload: &[u8]) -> Vec<SourceEvent> {
        let mut out = Vec::new();
        m.handle(topic, payload, now(), &mut out);
        out
    }

    /// (signal, value, at) of the one Samples event in `events`.
    fn samples(events: &[SourceEvent]) -> Vec<(String, Value, Timestamp)> {
        match events {
            [SourceEvent::Samples(s)] => s
                .iter()
                .map(|s| (s.signal.to_string(), s.value.clone(), s.at))
                .collect(),
            other => panic!("expected one Samples event, got {other:?}"),
        }
    }

    fn bad(metrics: &Metrics, topic: &str, kind: &str) -> u64 {
        metrics
            .read()
            .iter()
            .filter(|r| r.name == "shopfloor_mqtt_bad_messages_total")
            .filter(|r| r.labels.contains(&("topic", topic.to_string())))
            .filter(|r| r.labels.contains(&("kind", kind.to_string())))
            .map(|r| r.value)
            .sum()
    }

    #[test]
    fn subscriptions_are_the_patterns_with_captures_as_plus() {
        let (m, _) = mapper();
        assert_eq!(
            m.filters(),
            vec![
                "plant/+/data",
                "plant/+/status",
                "meters/+/kwh",
                "spBv1.0/shop1/#"
            ]
        );
    }

    #[test]
    fn json_fields_are_read_by_path_and_typed_by_the_mapping() {
        let (mut m, metrics) = mapper();
        let payload = br#"{"ts": 1714521590000, "state": {"run": 1},
            "spindle": {"rpm": 8000}, "parts": "42", "nc": {"program": "O1234"},
            "axes": [{"load": 37.5}, {"load": 12}]}"#;
        let events = handle(&mut m, "plant/cnc01/data", payload);
        let at = Timestamp::from_second(1_714_521_590).unwrap();
        assert_eq!(
            samples(&events),
            vec![
                ("run".into(), Value::Bool(true), at),
                // An integer in JSON, declared float: written as a float, always.
                ("spindle_rpm".into(), Value::Float(8000.0), at),
                ("parts".into(), Value::Int(42), at),
                ("program".into(), Value::Text("O1234".into()), at),
                ("x_load".into(), Value::Float(37.5), at),
            ]
        );
        let SourceEvent::Samples(s) = &events[0] else {
            unreachable!()
        };
        assert_eq!(s[0].target, Target::Machine(Arc::from("cnc01")));
        assert_eq!(metrics.sum("shopfloor_mqtt_bad_messages_total"), 0);
    }

    #[test]
    fn without_a_timestamp_field_the_arrival_time_is_used() {
        let (mut m, _) = mapper();
        let events = handle(&mut m, "plant/cnc01/data", br#"{"parts": 1}"#);
        assert_eq!(samples(&events)[0].2, now());
        let events = handle(&mut m, "plant/cnc01/data", br#"{"parts": 1, "ts": null}"#);
        assert_eq!(samples(&events)[0].2, now());
        let events = handle(
            &mut m,
            "plant/cnc01/data",
            br#"{"parts": 1, "ts": "2024-05-01T07:59:00+08:00"}"#,
        );
        assert_eq!(
            samples(&events)[0].2,
            now() - jiff::SignedDuration::from_mins(1)
        );
    }

    #[test]
    fn wrong_types_are_left_out_and_counted_while_the_rest_is_used() {
        let (mut m, metrics) = mapper();
        // rpm as text that is not a number, parts as a fraction, program fine.
        let payload = br#"{"spindle": {"rpm": "fast"}, "parts": 2.5, "nc": {"program": 7},
            "state": {"run": {"a": 1}}}"#;
        let events = handle(&mut m, "plant/cnc01/data", payload);
        assert_eq!(
            samples(&events),
            vec![("program".into(), Value::Text("7".into()), now())]
        );
        // rpm, parts, run: three wrong types; x_load absent: one missing field.
        assert_eq!(bad(&metrics, "plant/cnc01/data", "wrong_type"), 3);
        assert_eq!(bad(&metrics, "plant/cnc01/data", "missing_field"), 1);
    }

    #[test]
    fn malformed_oversized_and_badly_stamped_messages_are_counted_per_topic() {
        let (mut m, metrics) = mapper();
        assert!(handle(&mut m, "plant/cnc01/data", b"{\"parts\": ").is_empty());
        assert!(handle(&mut m, "plant/cnc02/data", &[0xff, 0xfe]).is_empty());
        // max_packet_size is 2048 in this config.
        let big = format!("{{\"parts\": 1, \"pad\": \"{}\"}}", "x".repeat(2048));
        assert!(handle(&mut m, "plant/cnc01/data", big.as_bytes()).is_empty());
        // 11 minutes in the future and a year in the past, with max_timestamp_skew = 10m.
        let future = now().as_second() + 660;
        let late = format!("{{\"parts\": 1, \"ts\": {future}}}");
        assert!(handle(&mut m, "plant/cnc01/data", late.as_bytes()).is_empty());
        let old = br#"{"parts": 1, "ts": "2023-05-01T00:00:00Z"}"#;
        assert!(handle(&mut m, "plant/cnc01/data", old).is_empty());
        let garbage = br#"{"parts": 1, "ts": "soon"}"#;
        assert!(handle(&mut m, "plant/cnc01/data", garbage).is_empty());
        assert_eq!(bad(&metrics, "plant/cnc01/data", "malformed"), 1);
        assert_eq!(bad(&metrics, "plant/cnc02/data", "malformed"), 1);
        assert_eq!(bad(&metrics, "plant/cnc01/data", "oversized"), 1);
        assert_eq!(bad(&metrics, "plant/cnc01/data", "timestamp"), 3);
        // A good message right after is used: one bad message never stops the flow.
        assert_eq!(
            samples(&handle(&mut m, "plant/cnc01/data", br#"{"parts": 9}"#)).len(),
            1
        );
        assert_eq!(metrics.sum("shopfloor_mqtt_messages_total"), 7);
    }

    #[test]
    fn unregistered_machines_and_unmapped_topics_are_counted() {
        let (mut m, metrics) = mapper();
        for _ in 0..3 {
            assert!(handle(&mut m, "plant/ghost/data", br#"{"parts": 1}"#).is_empty());
        }
        assert!(handle(&mut m, "other/topic", b"1").is_empty());
        let unregistered: Vec<_> = metrics
            .read()
            .into_iter()
            .filter(|r| r.name == "shopfloor_mqtt_unregistered_messages_total")
            .collect();
        assert_eq!(unregistered.len(), 1);
        assert_eq!(unregistered[0].value, 3);
        assert!(
            unregistered[0]
                .labels
                .contains(&("topic", "plant/ghost/data".into()))
        );
        assert_eq!(metrics.sum("shopfloor_mqtt_unmapped_messages_total"), 1);
    }

    #[test]
    fn plain_text_values_and_the_offline_payload() {
        let (mut m, metrics) = mapper();
        assert_eq!(
            samples(&handle(&mut m, "plant/cnc02/status", b"RUNNING\n")),
            vec![("status".into(), Value::Text("RUNNING".into()), now())]
        );
        // Declared float (the default): an integer text becomes a float.
        let events = handle(&mut m, "meters/main/kwh", b"1234");
        assert_eq!(
            samples(&events),
            vec![("energy_kwh".into(), Value::Float(1234.0), now())]
        );
        let SourceEvent::Samples(s) = &events[0] else {
            unreachable!()
        };
        assert_eq!(s[0].target, Target::Meter(Arc::from("main")));
        assert!(handle(&mut m, "meters/main/kwh", b"n/a").is_empty());
        assert_eq!(bad(&metrics, "meters/main/kwh", "wrong_type"), 1);
        match handle(&mut m, "plant/cnc02/status", b" offline ").as_slice() {
            [SourceEvent::Offline { target, at, .. }] => {
                assert_eq!(*target, Target::Machine(Arc::from("cnc02")));
                assert_eq!(*at, now());
            }
            other => panic!("{other:?}"),
        }
    }

    fn metric(name: Option<&str>, alias: Option<u64>, dt: u32, value: Raw) -> Metric {
        Metric {
            name: name.map(String::from),
            alias,
            datatype: dt,
            value: Some(value),
            ..Metric::default()
        }
    }

    fn payload(ms: u64, metrics: Vec<Metric>) -> Vec<u8> {
        sparkplug::encode(&Payload {
            timestamp: Some(ms),
            metrics,
            seq: Some(0),
        })
    }

    const T_MS: u64 = 1_714_521_600_000;

    fn dbirth() -> Vec<u8> {
        payload(
            T_MS,
            vec![
                metric(
                    Some("Spindle/RPM"),
                    Some(10),
                    datatype::FLOAT,
                    Raw::Float(0.0),
                ),
                metric(Some("Alarm/Code"), Some(11), datatype::INT16, Raw::Int(0)),
                metric(
                    Some("Running"),
                    Some(12),
                    datatype::BOOLEAN,
                    Raw::Bool(false),
                ),
                metric(Some("Unmapped"), Some(13), datatype::INT32, Raw::Int(5)),
            ],
        )
    }

    #[test]
    fn sparkplug_births_define_aliases_that_data_messages_use() {
        let (mut m, metrics) = mapper();
        let nbirth = payload(
            T_MS,
            vec![metric(Some("bdSeq"), None, datatype::INT64, Raw::Long(3))],
        );
        // The node itself is no machine here (machine = "{device}"): nothing, no fault.
        assert!(handle(&mut m, "spBv1.0/shop1/NBIRTH/edge1", &nbirth).is_empty());
        let birth = samples(&handle(
            &mut m,
            "spBv1.0/shop1/DBIRTH/edge1/cnc01",
            &dbirth(),
        ));
        assert_eq!(birth.len(), 3, "{birth:?}");
        // DDATA by alias only, without datatypes: the birth's datatypes apply, so the Int16
        // alarm code 0xFFFE reads -2.
        let ddata = payload(
            T_MS + 1000,
            vec![
                metric(None, Some(10), 0, Raw::Float(8000.0)),
                metric(None, Some(11), 0, Raw::Int(0xFFFE)),
                metric(None, Some(12), 0, Raw::Bool(true)),
                metric(None, Some(13), 0, Raw::Int(6)),
            ],
        );
        let at = Timestamp::from_millisecond(T_MS as i64 + 1000).unwrap();
        assert_eq!(
            samples(&handle(&mut m, "spBv1.0/shop1/DDATA/edge1/cnc01", &ddata)),
            vec![
                ("spindle_rpm".into(), Value::Float(8000.0), at),
                ("alarm_code".into(), Value::Int(-2), at),
                ("run".into(), Value::Bool(true), at),
            ]
        );
        assert_eq!(metrics.sum("shopfloor_mqtt_bad_messages_total"), 0);
    }

    #[test]
    fn an_alias_whose_birth_was_missed_is_counted() {
        let (mut m, metrics) = mapper();
        let ddata = payload(
            T_MS,
            vec![
                metric(None, Some(10), 0, Raw::Float(8000.0)),
                metric(Some("Running"), None, datatype::BOOLEAN, Raw::Bool(true)),
            ],
        );
        // The named metric is still used; the alias is not.
        assert_eq!(
            samples(&handle(&mut m, "spBv1.0/shop1/DDATA/edge1/cnc01", &ddata)),
            vec![(
                "run".into(),
                Value::Bool(true),
                Timestamp::from_millisecond(T_MS as i64).unwrap()
            )]
        );
        assert_eq!(
            bad(&metrics, "spBv1.0/shop1/DDATA/edge1/cnc01", "unknown_alias"),
            1
        );
        assert!(handle(&mut m, "spBv1.0/shop1/DDATA/edge1/cnc01", b"\x08").is_empty());
        assert_eq!(
            bad(&metrics, "spBv1.0/shop1/DDATA/edge1/cnc01", "malformed"),
            1
        );
    }

    #[test]
    fn sparkplug_deaths_make_machines_offline_at_once() {
        let (mut m, _) = mapper();
        let nbirth = |bd: u64| {
            payload(
                T_MS,
                vec![metric(Some("bdSeq"), None, datatype::INT64, Raw::Long(bd))],
            )
        };
        let death = |bd: u64| {
            payload(
                T_MS,
                vec![metric(Some("bdSeq"), None, datatype::INT64, Raw::Long(bd))],
            )
        };
        handle(&mut m, "spBv1.0/shop1/NBIRTH/edge1", &nbirth(4));
        handle(&mut m, "spBv1.0/shop1/DBIRTH/edge1/cnc01", &dbirth());
        handle(&mut m, "spBv1.0/shop1/DBIRTH/edge1/cnc02", &dbirth());
        // DDEATH: that device only, stamped on arrival (a will's payload is old).
        match handle(
            &mut m,
            "spBv1.0/shop1/DDEATH/edge1/cnc02",
            &payload(T_MS, vec![]),
        )
        .as_slice()
        {
            [SourceEvent::Offline { target, at, .. }] => {
                assert_eq!(*target, Target::Machine(Arc::from("cnc02")));
                assert_eq!(*at, now());
            }
            other => panic!("{other:?}"),
        }
        // A stale NDEATH (bdSeq of an earlier session) changes nothing.
        assert!(handle(&mut m, "spBv1.0/shop1/NDEATH/edge1", &death(3)).is_empty());
        // The node's own death: every device still alive under it.
        let events = handle(&mut m, "spBv1.0/shop1/NDEATH/edge1", &death(4));
        let targets: Vec<_> = events
            .iter()
            .map(|e| match e {
                SourceEvent::Offline { target, .. } => target.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(targets, vec![Target::Machine(Arc::from("cnc01"))]);
        // After the death the aliases are gone until the next birth.
        let ddata = payload(T_MS, vec![metric(None, Some(10), 0, Raw::Float(1.0))]);
        assert!(handle(&mut m, "spBv1.0/shop1/DDATA/edge1/cnc01", &ddata).is_empty());
    }

    #[test]
    fn json_nested_past_serde_jsons_recursion_limit_is_malformed_not_a_crash() {
        // 1000 levels of arrays (2000 bytes, under this config's max_packet_size): serde_json
        // stops at 128, its default; the `unbounded_depth` feature would lift the limit and let
        // deeper payloads overflow the stack. tests/hostile.rs sends 100 000 levels through a
        // real broker.
        let (mut m, metrics) = mapper();
        let deep = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
        assert!(handle(&mut m, "plant/cnc01/data", deep.as_bytes()).is_empty());
        assert_eq!(bad(&metrics, "plant/cnc01/data", "malformed"), 1);
    }

    /// Every counter as (name, labels, value), in order.
    fn counters(metrics: &Metrics) -> Vec<String> {
        let mut all: Vec<String> = metrics
            .read()
            .iter()
            .map(|r| format!("{} {:?} {}", r.name, r.labels, r.value))
            .collect();
        all.sort();
        all
    }

    #[test]
    fn a_known_topic_leads_where_it_led_the_first_time() {
        // One mapper remembers topics; the other forgets them before every message, so it
        // matches every topic against the patterns as on its first message.
        let (mut remembers, metrics_r) = mapper();
        let (mut forgets, metrics_f) = mapper();
        let big = format!("{{\"parts\": 1, \"pad\": \"{}\"}}", "x".repeat(2048));
        let ddata = payload(T_MS, vec![metric(None, Some(10), 0, Raw::Float(1.0))]);
        let birth = dbirth();
        let messages: Vec<(&str, &[u8])> = vec![
            ("plant/cnc01/data", br#"{"parts": 1, "state": {"run": 1}}"#),
            ("plant/ghost/data", br#"{"parts": 1}"#),
            ("plant/cnc02/status", b"RUNNING"),
            ("meters/main/kwh", b"12.5"),
            ("other/topic", b"1"),
            ("spBv1.0/shop1/DBIRTH/edge1/cnc01", &birth),
            ("spBv1.0/shop1/DDATA/edge1/cnc01", &ddata),
            ("plant/cnc01/data", b"{\"parts\": "),
            ("plant/cnc01/data", big.as_bytes()),
            (
                "plant/cnc01/data",
                br#"{"parts": 2.5, "nc": {"program": [1]}}"#,
            ),
            ("plant/cnc02/status", b"offline"),
            ("meters/main/kwh", b"n/a"),
            (
                "plant/cnc01/data",
                br#"{"parts": 3, "ts": "2024-05-01T07:59:00+08:00"}"#,
            ),
        ];
        // Twice over, so that the second round meets every topic known.
        for (topic, payload) in messages.iter().chain(&messages) {
            forgets.routes.clear();
            let known = handle(&mut remembers, topic, payload);
            assert_eq!(known, handle(&mut forgets, topic, payload), "{topic}");
        }
        assert_eq!(counters(&metrics_r), counters(&metrics_f));
        // Remembered: topics that came to a registered target of a JSON or text mapping;
        // not a machine out of the register, nor Sparkplug, nor a topic no pattern matches.
        let mut known: Vec<&str> = remembers.routes.keys().map(|t| &**t).collect();
        known.sort();
        assert_eq!(
            known,
            vec!["meters/main/kwh", "plant/cnc01/data", "plant/cnc02/status"]
        );
        // The unregistered machine is counted at each of its messages.
        assert_eq!(
            metrics_r.sum("shopfloor_mqtt_unregistered_messages_total"),
            2
        );
    }

    #[test]
    fn remembered_topics_are_bounded_and_long_or_captured_ones_not_kept() {
        let broker: MqttBroker = toml::from_str(
            r#"
id = "line"
address = "127.0.0.1:1883"

[[topic]]
pattern = "line/{machine}/#"
field = [{ signal = "parts", type = "int" }]

[[topic]]
pattern = "named/{machine}/{s}"
field = [{ signal = "{s}", path = "v", type = "int" }]
"#,
        )
        .unwrap();
        let machines = ["cnc01"].into_iter().map(Arc::from).collect();
        let mut m = Mapper::new(&broker, machines, HashSet::new(), Metrics::new()).unwrap();
        let sample = |events: &[SourceEvent]| -> (String, Value) {
            let [(signal, value, _)] = samples(events).try_into().unwrap();
            (signal, value)
        };
        for i in 0..2 * MAX_ROUTES + 5 {
            let topic = format!("line/cnc01/x{i}");
            let events = handle(&mut m, &topic, format!(r#"{{"parts": {i}}}"#).as_bytes());
            assert_eq!(sample(&events), ("parts".into(), Value::Int(i as i64)));
            assert!(m.routes.len() <= MAX_ROUTES, "{} at {i}", m.routes.len());
        }
        // Forgotten at the bound and learnt again: the last five since the second clearing.
        assert_eq!(m.routes.len(), 5);
        // A topic longer than MAX_TOPIC_TEXT: read each time, never kept.
        let long = format!("line/cnc01/{}", "y".repeat(MAX_TOPIC_TEXT));
        for parts in [7, 8] {
            let events = handle(&mut m, &long, format!(r#"{{"parts": {parts}}}"#).as_bytes());
            assert_eq!(sample(&events), ("parts".into(), Value::Int(parts)));
        }
        assert!(!m.routes.contains_key(long.as_str()));
        // A signal named from the topic: the name is made from each message's own topic.
        for s in ["a", "b", "a"] {
            let events = handle(&mut m, &format!("named/cnc01/{s}"), br#"{"v": 1}"#);
            assert_eq!(sample(&events), (s.into(), Value::Int(1)));
        }
        assert_eq!(m.routes.len(), 5);
    }

    #[test]
    fn the_offline_payload_is_recognised_as_by_trimming_the_text() {
        let payloads: [&[u8]; 14] = [
            b"offline",
            b" offline\n",
            b"\toffline",
            b"offline ",
            "\u{3000}offline".as_bytes(),
            "offline\u{a0}".as_bytes(),
            "\u{2003}offline\u{85}".as_bytes(),
            b"Offline",
            b"offline!",
            b"{\"state\": \"offline\"}",
            b"offlin",
            b"",
            b"\xffoffline",
            b"offline\xff",
        ];
        for payload in payloads {
            let trimmed = std::str::from_utf8(payload).is_ok_and(|p| p.trim() == "offline");
            assert_eq!(
                is_offline(payload, "offline"),
                trimmed,
                "{:?}",
                String::from_utf8_lossy(payload)
            );
        }
    }

    #[test]
    fn topics_of_thousands_of_levels_are_dropped_and_labelled_short() {
        let (mut m, metrics) = mapper();
        let deep = format!("plant/cnc01/{}data", "x/".repeat(3000));
        assert!(handle(&mut m, &deep, br#"{"parts": 1}"#).is_empty());
        let label = format!("{}…", &deep[..MAX_TOPIC_TEXT]);
        assert_eq!(bad(&metrics, &label, "topic"), 1);
        // 128 levels are still read.
        let ok = format!("plant/{}", "x/".repeat(126));
        assert_eq!(ok.split('/').count(), MAX_TOPIC_LEVELS);
        handle(&mut m, &ok, b"1");
        assert_eq!(metrics.sum("shopfloor_mqtt_bad_messages_total"), 1);
    }
}
