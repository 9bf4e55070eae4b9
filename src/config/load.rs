//! Loading and checking a config file, reporting every problem at once.
//!
//! serde stops at the first error, which makes commissioning a slow loop of fix-one-run-again.
//! So the document is first parsed into a tree that keeps every value's position, then each
//! section, and each element of an array section, is deserialized on its own: a mistake in one
//! `[[modbus]]` does not hide a mistake in the next. Unknown keys are collected with
//! `serde_ignored` rather than `deny_unknown_fields`, so all of them are reported, not the first.
//! Last, the cross-references (a field naming an unregistered machine, overlapping registers, a
//! missing secret) are checked on whatever parsed.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use super::{MqttBroker, PayloadFormat, References};
use crate::source::mqtt::{mapping, payload::JsonPath, topic::Template};

/// One problem in a config file, located by 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Every problem found in one file.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    pub file: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{}:{}: {}", self.file, p.line, p.column, p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// Reads a file and hands its text to `check`; a file that cannot be read is one problem at
/// line 0.
pub(crate) fn load_file<T>(
    path: &Path,
    check: impl FnOnce(&str, &str) -> Result<T, Diagnostics>,
) -> Result<T, Diagnostics> {
    let file = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => check(&text, &file),
        Err(e) => Err(Diagnostics {
            file,
            problems: vec![Problem {
                line: 0,
                column: 0,
                message: format!("cannot read the file: {e}"),
            }],
        }),
    }
}

/// The keys a table at a path takes, for "did you mean" hints; `&[]` when there is no hint.
pub(crate) type KnownKeys = fn(&[Seg]) -> &'static [&'static str];

/// Checks a TOML document with the diagnostics of the agent's config, for every file Shopfloor
/// reads (the agent's config, device profiles, the county's targets and register): `check`
/// deserializes the sections through the [`Checker`] and adds its cross-checks; every problem
/// comes back with its line and column, and the value only when there was none.
pub(crate) fn check_document<T>(
    text: &str,
    file: &str,
    known: KnownKeys,
    check: impl FnOnce(&mut Checker<'_>, &Spanned<DeTable<'_>>) -> Option<T>,
) -> Result<T, Diagnostics> {
    check_document_in(text, file, None, known, check)
}

/// [`check_document`] for a file in `dir`, where files it names (device profiles) are looked
/// for.
pub(crate) fn check_document_in<T>(
    text: &str,
    file: &str,
    dir: Option<&Path>,
    known: KnownKeys,
    check: impl FnOnce(&mut Checker<'_>, &Spanned<DeTable<'_>>) -> Option<T>,
) -> Result<T, Diagnostics> {
    let mut checker = Checker {
        text,
        problems: Vec::new(),
        dir,
        memo: Default::default(),
        claimed: Default::default(),
        known,
        signal_types: Default::default(),
    };
    let value = match DeTable::parse(text) {
        Ok(root) => check(&mut checker, &root),
        Err(e) => {
            checker.push(e.span().unwrap_or(0..0), e.message().trim_end().to_string());
            None
        }
    };
    checker.finish(value, file)
}

/// One step of a path into the document.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

pub(crate) fn key(k: &str) -> Seg {
    Seg::Key(k.to_string())
}

pub(crate) struct Checker<'t> {
    text: &'t str,
    problems: Vec<Problem>,
    /// The config file's directory, where `profiles/` is looked for.
    dir: Option<&'t Path>,
    /// Files already read, by name (device profiles): a hundred devices of one model read its
    /// file once. See [`Checker::remembered`].
    memo: std::collections::HashMap<String, Box<dyn std::any::Any>>,
    /// Names claimed per namespace ([`Checker::claim`]): device ids, output names.
    claimed: HashSet<(&'static str, String)>,
    /// The keys the document's tables take, for hints.
    known: KnownKeys,
    /// Signal name → its type in the `signal` line and where that was first declared
    /// ([`Checker::signal_type`]).
    signal_types: std::collections::HashMap<String, (super::SignalType, String)>,
}

impl Checker<'_> {
    /// The directory of the file being checked, where files it names are looked for.
    pub(crate) fn dir(&self) -> Option<&Path> {
        self.dir
    }

    /// A value remembered under `name` by [`Checker::remember`] (a file already read).
    pub(crate) fn remembered<T: Clone + 'static>(&self, name: &str) -> Option<T> {
        self.memo.get(name)?.downcast_ref::<T>().cloned()
    }

    pub(crate) fn remember<T: 'static>(&mut self, name: String, value: T) {
        self.memo.insert(name, Box::new(value));
    }

    /// Claims `name` in `namespace` (`"device"`, `"output"`): false when it was claimed before,
    /// by this section or another.
    pub(crate) fn claim(&mut self, namespace: &'static str, name: &str) -> bool {
        self.claimed.insert((namespace, name.to_string()))
    }

    /// Reports a top-level table that is none of `sections`, with the nearest as a hint.
    pub(crate) fn unknown_section(&mut self, span: Range<usize>, name: &str, sections: &[&str]) {
        let hint = suggest(name, sections)
            .map(|s| format!(" (did you mean `{s}`?)"))
            .unwrap_or_default();
        self.push(
            span,
            format!(
                "unknown section `{name}`{hint}; the sections are: {}",
                sections.join(", ")
            ),
        );
    }

    /// The parsed document if nothing was wrong with it, else every problem in file order.
    fn finish<T>(self, parsed: Option<T>, file: &str) -> Result<T, Diagnostics> {
        match parsed {
            Some(parsed) if self.problems.is_empty() => Ok(parsed),
            _ => {
                let mut problems = self.problems;
                problems.sort_by_key(|p| (p.line, p.column));
                problems.dedup();
                Err(Diagnostics {
                    file: file.to_string(),
                    problems,
                })
            }
        }
    }

    pub(crate) fn push(&mut self, span: Range<usize>, message: String) {
        let (line, column) = line_column(self.text, span.start);
        self.problems.push(Problem {
            line,
            column,
            message,
        });
    }

    /// Deserializes one section, reporting unknown keys and the first type error in it.
    pub(crate) fn section<T: for<'de> Deserialize<'de>>(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        path: Vec<Seg>,
    ) -> Option<T> {
        let mut unknown = Vec::new();
        let result = serde_ignored::deserialize(ValueDeserializer::from(value.clone()), |p| {
            unknown.push(ignored_path(&p))
        });
        for rel in unknown {
            let full = join(&path, &rel);
            let span = key_span(value, &rel).unwrap_or_else(|| value.span());
            let name = match full.last() {
                Some(Seg::Key(k)) => k.clone(),
                _ => String::new(),
            };
            let table = table_name(&full[..full.len().saturating_sub(1)]);
            let parent = &full[..full.len().saturating_sub(1)];
            let known = (self.known)(parent);
            let hint = suggest(&name, known)
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            self.push(span, format!("unknown key `{name}` in {table}{hint}"));
        }
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                let table = table_name(&path);
                self.push(
                    e.span().unwrap_or_else(|| value.span()),
                    format!("in {table}: {}", e.message().trim_end()),
                );
                None
            }
        }
    }

    /// Deserializes each element of an array of tables on its own.
    pub(crate) fn array<T: for<'de> Deserialize<'de>>(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        name: &str,
    ) -> Vec<(usize, T)> {
        let Some(items) = value.get_ref().as_array() else {
            self.push(
                value.span(),
                format!("`{name}` must be an array of tables: write [[{name}]]"),
            );
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                self.section(item, vec![key(name), Seg::Index(i)])
                    .map(|v| (i, v))
            })
            .collect()
    }

    pub(crate) fn span_of(&self, root: &Spanned<DeTable<'_>>, path: &[Seg]) -> Range<usize> {
        // Walk as deep as the path goes; a missing key points at its table.
        let mut span = root.span();
        let mut table: Option<&DeTable<'_>> = Some(root.get_ref());
        let mut array: Option<&[Spanned<DeValue<'_>>]> = None;
        for seg in path {
            let next = match (seg, table, array) {
                (Seg::Key(k), Some(t), _) => t
                    .iter()
                    .find(|(name, _)| name.get_ref().as_ref() as &str == k.as_str())
                    .map(|(_, v)| v),
                (Seg::Index(i), _, Some(a)) => a.get(*i),
                _ => None,
            };
            let Some(next) = next else { break };
            span = next.span();
            table = next.get_ref().as_table();
            array = next.get_ref().as_array().map(|a| a.as_ref());
        }
        span
    }

    fn mqtt_broker(
        &mut self,
        root: &Spanned<DeTable<'_>>,
        base: &[Seg],
        broker: &MqttBroker,
        refs: &References<'_>,
    ) {
        let at = |s: &Self, rest: &[Seg]| s.span_of(root, &join(base, rest));
        let name = &broker.id;
        self.broker_link(
            root,
            base,
            &format!("mqtt broker `{name}`"),
            BrokerLink {
                address: &broker.address,
                keepalive: broker.keepalive,
                username: broker.username.as_deref(),
                password: broker.password.as_ref(),
                tls: broker.tls.as_ref(),
            },
        );
        if !(1024..=(1 << 28)).contains(&broker.max_packet_size) {
            let span = at(self, &[key("max_packet_size")]);
            self.push(
                span,
                "max_packet_size must be between 1024 bytes and 256 MiB (MQTT's limit)".into(),
            );
        }
        if broker.topics.is_empty() {
            let span = at(self, &[key("id")]);
            self.push(
                span,
                format!(
                    "mqtt broker `{name}` has no [[mqtt.topic]]: it would subscribe to nothing"
                ),
            );
        }
        // (target template, signal) → declared type, across the broker's topics.
        let mut types: BTreeMap<(String, String), super::SignalType> = BTreeMap::new();
        for (j, topic) in broker.topics.iter().enumerate() {
            let tpath = [key("topic"), Seg::Index(j)];
            let here = |s: &Self, k: &str| at(s, &join(&tpath, &[key(k)]));
            let names = match mapping::compile(topic) {
                Ok((_, names)) => names,
                Err(e) => {
                    let span = here(self, "pattern");
                    self.push(span, format!("pattern `{}`: {e}", topic.pattern));
                    continue;
                }
            };
            if topic.format == PayloadFormat::Sparkplug && !topic.pattern.starts_with("spBv1.0/") {
                let span = here(self, "pattern");
                self.push(
                    span,
                    "a sparkplug topic pattern starts with `spBv1.0/` (e.g. \"spBv1.0/shop1/#\")"
                        .into(),
                );
            }
            let (target_key, target_text, registered, what) = match (&topic.machine, &topic.meter) {
                (Some(_), Some(_)) => {
                    let span = here(self, "meter");
                    self.push(
                        span,
                        "a topic names a `machine` or a `meter`, not both".into(),
                    );
                    continue;
                }
                (_, Some(m)) => ("meter", m.clone(), &refs.meters, "meter"),
                (Some(m), None) => ("machine", m.clone(), &refs.machines, "machine"),
                (None, None) => (
                    "pattern",
                    mapping::default_machine(topic.format).to_string(),
                    &refs.machines,
                    "machine",
                ),
            };
            match Template::parse(&target_text) {
                Err(e) => {
                    let span = here(self, target_key);
                    self.push(span, format!("{what}: {e}"));
                }
                Ok(t) => {
                    if let Some(id) = t.fixed()
                        && !registered.contains(id)
                    {
                        let span = here(self, target_key);
                        self.push(span, not_registered(&format!("topic names {what}"), id));
                    }
                    for capture in t.capture_names() {
                        if !names.iter().any(|n| n == capture) {
                            let span = here(self, target_key);
                            let hint = if target_key == "pattern" {
                                format!(
                                    "; write `{what} = \"...\"` or capture it with `{{{capture}}}` in the pattern"
                                )
                            } else {
                                String::new()
                            };
                            self.push(
                                span,
                                format!(
                                    "{what} `{target_text}` uses `{{{capture}}}`, which the pattern does not capture{hint}"
                                ),
                            );
                        }
                    }
                }
            }
            if let Some(ts) = &topic.timestamp {
                let span = here(self, "timestamp");
                if topic.format != PayloadFormat::Json {
                    self.push(
                        span,
                        "`timestamp` is a JSON path; text messages are stamped on arrival and \
                         Sparkplug payloads carry their own"
                            .into(),
                    );
                } else if let Err(e) = JsonPath::parse(ts) {
                    self.push(span, e);
                }
            }
            if topic.offline_payload.is_some() && topic.format == PayloadFormat::Sparkplug {
                let span = here(self, "offline_payload");
                self.push(
                    span,
                    "Sparkplug machines go offline on NDEATH/DDEATH; `offline_payload` is for JSON and text topics".into(),
                );
            }
            if topic.fields.is_empty() && topic.offline_payload.is_none() {
                let span = here(self, "pattern");
                self.push(
                    span,
                    "this topic has no `field` (and no `offline_payload`): its messages would deliver nothing".into(),
                );
            }
            if topic.format == PayloadFormat::Text && topic.fields.len() > 1 {
                let span = at(self, &join(&tpath, &[key("field"), Seg::Index(1)]));
                self.push(
                    span,
                    "a text message carries one value: map one `field` per topic".into(),
                );
            }
            let mut signals = HashSet::new();
            for (k, field) in topic.fields.iter().enumerate() {
                let fpath = join(&tpath, &[key("field"), Seg::Index(k)]);
                let fhere = |s: &Self, name: &str| at(s, &join(&fpath, &[key(name)]));
                if !signals.insert(field.signal.as_str()) {
                    let span = fhere(self, "signal");
                    self.push(
                        span,
                        format!("signal `{}` is mapped twice in this topic", field.signal),
                    );
                }
                match Template::parse(&field.signal) {
                    Err(e) => {
                        let span = fhere(self, "signal");
                        self.push(span, format!("signal: {e}"));
                    }
                    Ok(t) => {
                        for capture in t.capture_names() {
                            if !names.iter().any(|n| n == capture) {
                                let span = fhere(self, "signal");
                                self.push(
                                    span,
                                    format!("signal `{}` uses `{{{capture}}}`, which the pattern does not capture", field.signal),
                                );
                            }
                        }
                        if t.capture_names().next().is_none() {
                            let here = || format!("mqtt broker `{name}` topic `{}`", topic.pattern);
                            if let Some(clash) =
                                self.signal_type_clash(&field.signal, field.value_type, here)
                            {
                                let span = fhere(self, "type");
                                self.push(span, clash);
                            }
                        }
                    }
                }
                match (topic.format, &field.path) {
                    (PayloadFormat::Text, Some(_)) => {
                        let span = fhere(self, "path");
                        self.push(span, "a text message has no paths: leave out `path`".into());
                    }
                    (PayloadFormat::Json, path) => {
                        if let Err(e) = JsonPath::parse(path.as_deref().unwrap_or(&field.signal)) {
                            let span = fhere(self, if path.is_some() { "path" } else { "signal" });
                            self.push(span, e);
                        }
                    }
                    _ => {}
                }
                // A name without captures is checked across the whole config above; one
                // made from captures is known only per target and topic pattern.
                let templated = Template::parse(&field.signal)
                    .is_ok_and(|t| t.capture_names().next().is_some());
                let declared = (target_text.clone(), field.signal.clone());
                match types.get(&declared) {
                    Some(t) if templated && *t != field.value_type => {
                        let span = fhere(self, "type");
                        self.push(
                            span,
                            format!(
                                "signal `{}` of {what} `{target_text}` is declared with another type in an earlier topic: a field keeps one type forever",
                                field.signal
                            ),
                        );
                    }
                    _ => {
                        types.insert(declared, field.value_type);
                    }
                }
            }
        }
    }

    /// A field of the `signal` line keeps one type across every machine and meter: InfluxDB
    /// types a field per measurement, not per series, and refuses every line that brings it
    /// with another type (they would end in the dead-letter file). The first declaration of
    /// a name sets its type, with `here` saying where; a later one of another type gets the
    /// problem's message back. `here` runs only for a first declaration, so a register of
    /// 100 000 devices of one profile costs a lookup a field.
    pub(crate) fn signal_type_clash(
        &mut self,
        signal: &str,
        ty: super::SignalType,
        here: impl FnOnce() -> String,
    ) -> Option<String> {
        match self.signal_types.get(signal) {
            Some((first, there)) if *first != ty => Some(format!(
                "signal `{signal}` is {} here but {} in {there}: the store keeps one type per field of `signal` across all machines and meters, and refuses the lines of the other type (rename one, or make the types agree: `scale` makes a register a float)",
                ty.with_article(),
                first.with_article()
            )),
            Some(_) => None,
            None => {
                self.signal_types.insert(signal.to_string(), (ty, here()));
                None
            }
        }
    }

    /// Checks the connection settings every MQTT client of Shopfloor has (an `[[mqtt]]`
    /// broker, the `[uplink]`, `county ingest`'s `[broker]`); `what` names it in messages.
    pub(crate) fn broker_link(
        &mut self,
        root: &Spanned<DeTable<'_>>,
        base: &[Seg],
        what: &str,
        link: BrokerLink<'_>,
    ) {
        let at = |s: &Self, rest: &[Seg]| s.span_of(root, &join(base, rest));
        if !valid_host_port(link.address) {
            let span = at(self, &[key("address")]);
            self.push(
                span,
                format!(
                    "{what}: address `{}` is not host:port (e.g. \"192.168.1.10:1883\")",
                    link.address
                ),
            );
        }
        if link.keepalive.is_zero() || link.keepalive.as_secs() > u64::from(u16::MAX) {
            let span = at(self, &[key("keepalive")]);
            self.push(
                span,
                "keepalive must be between 1s and 65535s (18h12m15s)".into(),
            );
        }
        if link.password.is_some() && link.username.is_none() {
            let span = at(self, &[key("password")]);
            self.push(span, "a password needs `username`".into());
        }
        if let Some(Err(e)) = link.password.map(|s| s.resolve()) {
            let span = at(self, &[key("password")]);
            self.push(span, format!("password: {e}"));
        }
        if let Some(tls) = link.tls {
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                let span = at(self, &[key("tls")]);
                self.push(
                    span,
                    "a client certificate needs both `cert_file` and `key_file`".into(),
                );
            }
            for (k, path) in [
                ("ca_file", Some(&tls.ca_file)),
                ("cert_file", tls.cert_file.as_ref()),
                ("key_file", tls.key_file.as_ref()),
            ] {
                if let Some(path) = path
                    && let Err(e) = std::fs::metadata(path)
                {
                    let span = at(self, &[key("tls"), key(k)]);
                    self.push(
                        span,
                        format!("{k} `{}` cannot be read: {e}", path.display()),
                    );
                }
            }
        }
    }
}

pub(crate) fn not_registered(what: &str, id: &str) -> String {
    format!(
        "{what} `{id}`, which is not in the register: add a [[machine]] with id = \"{id}\" or fix the id"
    )
}

pub(crate) fn unknown_meter(what: &str, id: &str) -> String {
    format!("{what} `{id}`, which is not in any [[meter]]: add it there or fix the id")
}

pub(crate) fn raw_ids(root: &Spanned<DeTable<'_>>, section: &str) -> Vec<String> {
    let Some((_, value)) = root
        .get_ref()
        .iter()
        .find(|(k, _)| k.get_ref().as_ref() as &str == section)
    else {
        return Vec::new();
    };
    let Some(items) = value.get_ref().as_array() else {
        return Vec::new();
    };
    items
        .iter()
        .map(|item| {
            item.get_ref()
                .as_table()
                .and_then(|t| t.iter().find(|(k, _)| k.get_ref().as_ref() as &str == "id"))
                .and_then(|(_, v)| v.get_ref().as_str())
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

pub(crate) fn join(base: &[Seg], rest: &[Seg]) -> Vec<Seg> {
    base.iter().chain(rest).cloned().collect()
}

/// `[[mqtt]]`'s row in the section table: broker ids share the device namespace with the
/// Modbus devices (one health line each).
pub(crate) fn check_mqtt_brokers(
    checker: &mut Checker<'_>,
    root: &Spanned<DeTable<'_>>,
    at: &[usize],
    brokers: &mut [MqttBroker],
    refs: &References<'_>,
) {
    for (i, broker) in at.iter().zip(brokers.iter()) {
        let base = vec![key("mqtt"), Seg::Index(*i)];
        if !checker.claim("device", &broker.id) {
            let at = checker.span_of(root, &join(&base, &[key("id")]));
            checker.push(
                at,
                format!(
                    "mqtt broker id `{}` is already used by another broker or Modbus device",
                    broker.id
                ),
            );
        }
        checker.mqtt_broker(root, &base, broker, refs);
    }
}

/// The connection settings [`Checker::broker_link`] checks.
pub(crate) struct BrokerLink<'a> {
    pub address: &'a str,
    pub keepalive: std::time::Duration,
    pub username: Option<&'a str>,
    pub password: Option<&'a super::Secret>,
    pub tls: Option<&'a super::MqttTls>,
}

/// What is wrong with `text` as one or more literal MQTT topic levels, if anything.
pub(crate) fn topic_level_problem(text: &str) -> Option<&'static str> {
    if text.is_empty() {
        Some("must not be empty")
    } else if text.contains(['+', '#']) {
        Some("must not contain the wildcards + or #")
    } else if text.starts_with('/') || text.ends_with('/') || text.contains("//") {
        Some("must not start or end with `/` or have an empty level")
    } else if text.starts_with('$') {
        Some("must not start with `$` (the broker's own topics)")
    } else {
        None
    }
}

pub(crate) fn valid_host_port(address: &str) -> bool {
    match address.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

/// The path serde_ignored reports, as segments. `Some` and newtype wrappers add no step.
fn ignored_path(path: &serde_ignored::Path<'_>) -> Vec<Seg> {
    match path {
        serde_ignored::Path::Root => Vec::new(),
        serde_ignored::Path::Seq { parent, index } => {
            let mut p = ignored_path(parent);
            p.push(Seg::Index(*index));
            p
        }
        serde_ignored::Path::Map { parent, key } => {
            let mut p = ignored_path(parent);
            p.push(Seg::Key(key.clone()));
            p
        }
        serde_ignored::Path::Some { parent }
        | serde_ignored::Path::NewtypeStruct { parent }
        | serde_ignored::Path::NewtypeVariant { parent } => ignored_path(parent),
    }
}

/// The span of the key at the end of `path` inside `value`.
fn key_span(value: &Spanned<DeValue<'_>>, path: &[Seg]) -> Option<Range<usize>> {
    let (last, parents) = path.split_last()?;
    let mut node = value;
    for seg in parents {
        node = match seg {
            Seg::Key(k) => node
                .get_ref()
                .as_table()?
                .iter()
                .find(|(name, _)| name.get_ref().as_ref() as &str == k.as_str())
                .map(|(_, v)| v)?,
            Seg::Index(i) => node.get_ref().as_array()?.as_ref().get(*i)?,
        };
    }
    match last {
        Seg::Key(k) => node
            .get_ref()
            .as_table()?
            .iter()
            .find(|(name, _)| name.get_ref().as_ref() as &str == k.as_str())
            .map(|(name, _)| name.span()),
        Seg::Index(i) => node
            .get_ref()
            .as_array()?
            .as_ref()
            .get(*i)
            .map(|v| v.span()),
    }
}

/// How a user writes the table at `path`: `[site]`, `[[modbus]] #2`, `[[modbus.field]] #3 of [[modbus]] #1`.
fn table_name(path: &[Seg]) -> String {
    let mut names = Vec::new();
    let mut numbers = Vec::new();
    for seg in path {
        match seg {
            Seg::Key(k) => names.push(k.as_str()),
            Seg::Index(i) => numbers.push(i + 1),
        }
    }
    let dotted = names.join(".");
    if names.is_empty() {
        return "the profile".to_string();
    }
    if numbers.is_empty() {
        format!("[{dotted}]")
    } else {
        let mut text = format!("[[{dotted}]] #{}", numbers.last().copied().unwrap_or(0));
        if numbers.len() > 1 {
            text.push_str(&format!(" of [[{}]] #{}", names[0], numbers[0]));
        }
        text
    }
}

/// The table names along a path into the document, array indices left out.
pub(crate) fn key_names(path: &[Seg]) -> Vec<&str> {
    path.iter()
        .filter_map(|s| match s {
            Seg::Key(k) => Some(k.as_str()),
            Seg::Index(_) => None,
        })
        .collect()
}

/// The field names serde derived for a struct, read by asking it to deserialize from a
/// deserializer that only records the names it is offered.
pub(crate) fn struct_fields<T: for<'de> Deserialize<'de>>() -> &'static [&'static str] {
    struct Names(Option<&'static [&'static str]>);
    #[derive(Debug)]
    struct Stop;
    impl fmt::Display for Stop {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("stop")
        }
    }
    impl std::error::Error for Stop {}
    impl serde::de::Error for Stop {
        fn custom<M: fmt::Display>(_: M) -> Self {
            Stop
        }
    }
    impl<'de> serde::Deserializer<'de> for &mut Names {
        type Error = Stop;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0 = Some(fields);
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    let mut names = Names(None);
    let _ = T::deserialize(&mut names);
    names.0.unwrap_or(&[])
}

/// The closest candidate within two edits, if any.
pub(crate) fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use crate::agent::config::load_str;

    const BASE: &str = r#"[site]
county = "yk"
sector = "doors"
enterprise = "e1"

[[machine]]
id = "cnc01"
kind = "lathe"
cnc = true

[[meter]]
id = "main"
carrier = "electricity"
"#;

    fn problems(mqtt: &str) -> Vec<(usize, String)> {
        match load_str(&format!("{BASE}{mqtt}"), "t.toml") {
            Ok(_) => Vec::new(),
            Err(d) => d
                .problems
                .into_iter()
                .map(|p| (p.line, p.message))
                .collect(),
        }
    }

    #[test]
    fn a_good_mqtt_section_loads() {
        let text = r#"
[[mqtt]]
id = "plant"
address = "127.0.0.1:1883"
protocol = "5"
keepalive = "20s"

  [[mqtt.topic]]
  pattern = "plant/{machine}/data"
  timestamp = "ts"
  field = [{ signal = "spindle_rpm", path = "spindle.rpm" }, { signal = "parts", type = "int" }]

  [[mqtt.topic]]
  pattern = "spBv1.0/shop1/#"
  format = "sparkplug"
  field = [{ signal = "run", path = "Running", type = "bool" }]
"#;
        assert_eq!(problems(text), vec![]);
        let cfg = load_str(&format!("{BASE}{text}"), "t.toml").unwrap();
        assert_eq!(cfg.mqtt[0].protocol, super::super::MqttProtocol::V5);
        assert_eq!(cfg.mqtt[0].max_packet_size, 256 * 1024);
        assert!(!cfg.mqtt[0].clean_session);
    }

    #[test]
    fn mqtt_mistakes_are_reported_on_their_lines() {
        // BASE is 13 lines and `text` starts with a newline, so `[[mqtt]]` is line 15.
        let text = r#"
[[mqtt]]
id = "plant"
address = "plant-broker"
pasword = { env = "X" }

  [[mqtt.topic]]
  pattern = "plant/line{n}/data"
  field = [{ signal = "rpm" }]

  [[mqtt.topic]]
  pattern = "plant/{machine}/x"
  machine = "cnc{n}"
  format = "text"
  field = [{ signal = "a", path = "x" }, { signal = "b" }]

  [[mqtt.topic]]
  pattern = "plant/cnc09/y"
  machine = "cnc09"
  field = [{ signal = "rpm", path = "a..b", type = "int" }]

  [[mqtt.topic]]
  pattern = "plant/{machine}/z"
  field = [{ signal = "rpm", type = "int" }]

  [[mqtt.topic]]
  pattern = "plant/{machine}/w"
  field = [{ signal = "rpm", type = "float" }]
"#;
        let got = problems(text);
        let expect: &[(usize, &str)] = &[
            (17, "is not host:port"),
            (
                18,
                "unknown key `pasword` in [[mqtt]] #1 (did you mean `password`?)",
            ),
            (21, "whole level"),
            (26, "uses `{n}`, which the pattern does not capture"),
            (28, "a text message has no paths"),
            (28, "a text message carries one value"),
            (32, "`cnc09`, which is not in the register"),
            (33, "path `a..b`"),
            // The first topic's pattern does not compile, so its fields are not looked at;
            // `rpm` is first an integer (line 33, cnc09), and the float at line 41 is refused
            // although its machine is another: the store types a field across the whole
            // `signal` measurement.
            (
                41,
                "signal `rpm` is a float here but an integer in mqtt broker `plant` topic `plant/cnc09/y`",
            ),
        ];
        for (line, words) in expect {
            assert!(
                got.iter().any(|(l, m)| l == line && m.contains(words)),
                "expected line {line}: {words} in {got:#?}"
            );
        }
        assert_eq!(got.len(), expect.len(), "{got:#?}");
    }
}

/// `[spool]` and `[[influx]]`: store-and-forward settings.
#[cfg(test)]
mod store_forward_tests {
    use crate::agent::config::load_str;

    const SITE: &str = "[site]\ncounty = \"yk\"\nsector = \"doors\"\nenterprise = \"e1\"\n";

    fn problems(text: &str) -> Vec<(usize, usize, String)> {
        match load_str(text, "t.toml") {
            Ok(_) => Vec::new(),
            Err(d) => d
                .problems
                .into_iter()
                .map(|p| (p.line, p.column, p.message))
                .collect(),
        }
    }

    fn has_problem(found: &[(usize, usize, String)], line: usize, col: usize, words: &str) -> bool {
        found
            .iter()
            .any(|(l, c, m)| *l == line && *c == col && m.contains(words))
    }

    #[test]
    fn store_and_forward_settings_are_read_with_their_defaults() {
        let cfg = load_str(
            &format!("{SITE}[spool]\nmax_age = \"2d\"\n[[influx]]\nurl = \"http://h:8086\"\napi = \"v1\"\ndatabase = \"d\"\nprecision = \"ms\"\ngzip = false\n"),
            "t.toml",
        )
        .unwrap();
        let limits = cfg.spool.limits();
        assert_eq!(
            limits.max_age,
            Some(std::time::Duration::from_secs(2 * 86_400))
        );
        assert_eq!(cfg.spool.sync_interval, std::time::Duration::from_secs(1));
        let out = &cfg.influx[0];
        assert_eq!(out.precision, crate::sink::line_protocol::Precision::Ms);
        assert!(!out.gzip);
        assert_eq!(out.flush_interval, std::time::Duration::from_secs(1));
        assert_eq!(out.retry_max, std::time::Duration::from_secs(60));
        // "0s" turns the age bound off.
        let cfg = load_str(&format!("{SITE}[spool]\nmax_age = \"0s\"\n"), "t.toml").unwrap();
        assert_eq!(cfg.spool.limits().max_age, None);
    }

    #[test]
    fn credentials_in_an_output_url_are_refused_without_being_echoed() {
        let text = format!(
            "{SITE}[[influx]]\nurl = \"http://admin:hunter2-secret@h:8086\"\napi = \"v1\"\ndatabase = \"d\"\n"
        );
        let found = problems(&text);
        assert!(
            has_problem(&found, 6, 7, "carries credentials"),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .all(|(_, _, m)| !m.contains("hunter2") && !m.contains("admin")),
            "{found:?}"
        );
        // A token alone is a user name to the URL parser: refused the same way.
        let text = format!(
            "{SITE}[[influx]]\nurl = \"https://t0ken-secret@h\"\norg = \"o\"\nbucket = \"b\"\n"
        );
        let found = problems(&text);
        assert!(
            found
                .iter()
                .any(|(_, _, m)| m.contains("carries credentials") && !m.contains("t0ken")),
            "{found:?}"
        );
    }

    #[test]
    fn mistakes_in_spool_and_influx_are_located() {
        // Lines 5–8: [spool]; lines 9–15: [[influx]]; lines 16–18: a [[file]].
        let text = format!(
            "{SITE}[spool]\nmax_bytes = 0\nsync_interval = \"0s\"\nmax_age = 7\n[[influx]]\nname = \"store\"\nurl = \"http://h:8086\"\norg = \"o\"\nbucket = \"b\"\nretry_max = \"0s\"\nprecision = \"minutes\"\n[[file]]\nname = \"store\"\npath = \"x.lp\"\n"
        );
        let found = problems(&text);
        let has = |line, col, words| has_problem(&found, line, col, words);
        assert!(has(8, 11, "a duration needs a unit"), "{found:?}");
        assert!(has(15, 13, "unknown variant `minutes`"), "{found:?}");
        // Range checks run on sections that parsed: fix the types and they show up.
        let text = format!(
            "{SITE}[spool]\nmax_bytes = 0\nsync_interval = \"0s\"\n[[influx]]\nurl = \"http://h:8086\"\norg = \"o\"\nbucket = \"b\"\nretry_max = \"0s\"\ndead_letter_max_bytes = 100\n[[file]]\nname = \"influx\"\npath = \"x.lp\"\n"
        );
        let found = problems(&text);
        let has = |line, col, words| has_problem(&found, line, col, words);
        assert!(has(6, 13, "max_bytes must be more than 0"), "{found:?}");
        assert!(
            has(7, 17, "sync_interval must be longer than zero"),
            "{found:?}"
        );
        assert!(
            has(12, 13, "retry_max must be longer than zero"),
            "{found:?}"
        );
        assert!(
            has(13, 25, "dead_letter_max_bytes must be at least 4096"),
            "{found:?}"
        );
        // Outputs share the spool's cursor table, so names are unique across kinds.
        assert!(
            has(15, 8, "output name `influx` is used twice"),
            "{found:?}"
        );
    }
}

/// Modbus sections: devices, serial ports and profiles.
#[cfg(test)]
mod modbus_tests {
    use super::*;
    use crate::agent::config::load_str;
    use crate::source::modbus::config::{ModbusSerial, load_profile_str};
    use crate::source::modbus::profile;

    const SITE: &str = r#"[site]
county = "yk"
sector = "doors"
enterprise = "e1"

[[machine]]
id = "cnc01"
kind = "lathe"
cnc = true

[[meter]]
id = "main"
carrier = "electricity"
"#;

    fn problems(text: &str, file: &str) -> Vec<String> {
        match load_str(text, file) {
            Ok(_) => Vec::new(),
            Err(d) => d
                .problems
                .iter()
                .map(|p| format!("{}:{}: {}", p.line, p.column, p.message))
                .collect(),
        }
    }

    #[test]
    fn every_shipped_profile_parses() {
        // Every file under config/profiles/ is shipped (compiled in), and parses.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/profiles");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        files.sort();
        let mut shipped: Vec<String> = profile::BUILTIN
            .iter()
            .map(|(n, _)| format!("{n}.toml"))
            .collect();
        shipped.sort();
        assert_eq!(files, shipped);
        for (name, text) in profile::BUILTIN {
            let p = load_profile_str(text, name).unwrap_or_else(|d| panic!("{d}"));
            assert!(!p.fields.is_empty(), "{name}");
            assert!(!p.description.is_empty(), "{name}");
        }
    }

    #[test]
    fn a_profile_fills_the_device_and_its_fields_belong_to_the_device_machine() {
        let text = format!(
            "{SITE}\n[[modbus]]\nid = \"box\"\naddress = \"h:502\"\nprofile = \"cnc-iot-box\"\nmachine = \"cnc01\"\nfield = [{{ signal = \"feed\", register = \"holding\", address = 41, address_base = 1 }}]\n"
        );
        // `address_base` is not a field key: the device's own fields use the device's base.
        assert!(problems(&text, "t.toml")[0].contains("unknown key `address_base`"));
        let text = format!(
            "{SITE}\n[[modbus]]\nid = \"box\"\naddress = \"h:502\"\naddress_base = 1\nprofile = \"cnc-iot-box\"\nmachine = \"cnc01\"\nfield = [{{ signal = \"feed\", register = \"holding\", address = 41 }}]\n"
        );
        let cfg = load_str(&text, "t.toml").unwrap_or_else(|d| panic!("{d}"));
        let d = &cfg.modbus[0];
        // Seven profile fields, then the device's own.
        assert_eq!(d.fields.len(), 8);
        assert!(
            d.fields
                .iter()
                .all(|f| f.machine.as_deref() == Some("cnc01"))
        );
        let program = d.fields.iter().find(|f| f.signal == "program").unwrap();
        assert_eq!(
            (program.registers(), program.protocol_address()),
            (8, Some(7))
        );
        // The device counts from 1, the profile from 0: each field keeps its own numbering.
        let feed = d.fields.last().unwrap();
        assert_eq!(feed.protocol_address(), Some(40));
    }

    #[test]
    fn a_profile_beside_the_config_wins_and_its_mistakes_name_its_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("profiles")).unwrap();
        std::fs::write(
            dir.path().join("profiles/cnc-iot-box.toml"),
            "description = \"local\"\n[[field]]\nsignal = \"run\"\nregister = \"holding\"\nadress = 0\n",
        )
        .unwrap();
        let file = dir.path().join("site.toml");
        let text = format!(
            "{SITE}\n[[modbus]]\nid = \"box\"\naddress = \"h:502\"\nprofile = \"cnc-iot-box\"\nmachine = \"cnc01\"\n"
        );
        let found = problems(&text, &file.display().to_string());
        // Reported at the `profile` key (line 18, column 11), naming the profile's own file
        // and the line of the misspelt key in it.
        let local = dir.path().join("profiles/cnc-iot-box.toml");
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("18:11: profile `cnc-iot-box` (")
                    && p.contains(&format!("{}:5:1): unknown key `adress`", local.display()))
                    && p.contains("did you mean `address`")),
            "{found:?}"
        );
    }

    #[test]
    fn a_signal_keeps_one_type_across_devices_profiles_and_mqtt() {
        // cnc-iot-box's `spindle_rpm` is a u16: an integer. A second machine's device reads
        // its `spindle_rpm` as an f32, and an MQTT box sends it as a float; InfluxDB would
        // refuse whichever comes second, for every machine, so `check` refuses both here.
        // The profile's `run` (u16) read with a scale on the second device is a float there,
        // refused too; `feed`, u16 on both devices and an int over MQTT, is fine.
        let text = format!(
            r#"{SITE}
[[machine]]
id = "cnc02"
kind = "mill"
cnc = true

[[modbus]]
id = "box"
address = "h:502"
profile = "cnc-iot-box"
machine = "cnc01"
field = [{{ signal = "feed", register = "holding", address = 40 }}]

[[modbus]]
id = "plc"
address = "h2:502"
machine = "cnc02"
field = [
  {{ signal = "spindle_rpm", register = "input", address = 0, type = "f32" }},
  {{ signal = "feed", register = "input", address = 2 }},
  {{ signal = "run", register = "input", address = 3, scale = 0.1 }},
]

[[mqtt]]
id = "plant"
address = "h:1883"
[[mqtt.topic]]
pattern = "plant/{{machine}}/data"
field = [{{ signal = "spindle_rpm", type = "float" }}, {{ signal = "feed", type = "int" }}]
"#
        );
        let found = problems(&text, "t.toml");
        let conflict = |line: usize, signal: &str, is: &str, was: &str, there: &str| {
            found.iter().any(|p| {
                p.starts_with(&format!("{line}:"))
                    && p.contains(&format!(
                        "signal `{signal}` is {is} here but {was} in {there}"
                    ))
            })
        };
        assert!(
            conflict(
                32,
                "spindle_rpm",
                "a float",
                "an integer",
                "modbus device `box` (profile `cnc-iot-box`)"
            ),
            "{found:?}"
        );
        assert!(
            conflict(
                34,
                "run",
                "a float",
                "an integer",
                "modbus device `box` (profile `cnc-iot-box`)"
            ),
            "{found:?}"
        );
        assert!(
            conflict(
                42,
                "spindle_rpm",
                "a float",
                "an integer",
                "modbus device `box`"
            ),
            "{found:?}"
        );
        assert_eq!(found.len(), 3, "{found:?}");
    }

    #[test]
    fn profile_fields_need_the_device_to_name_a_target() {
        let text = format!(
            "{SITE}\n[[modbus]]\nid = \"m\"\naddress = \"h:502\"\nprofile = \"eastron-sdm630\"\n"
        );
        let found = problems(&text, "t.toml");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains("belong to no machine or meter"),
            "{found:?}"
        );
        let text = format!(
            "{SITE}\n[[modbus]]\nid = \"m\"\naddress = \"h:502\"\nprofile = \"no-such-meter\"\nmeter = \"main\"\n"
        );
        let found = problems(&text, "t.toml");
        assert!(
            found[0].contains("unknown profile `no-such-meter`")
                && found[0].contains("eastron-sdm630"),
            "{found:?}"
        );
    }

    #[test]
    fn serial_devices_and_ports_are_checked() {
        let text = format!(
            r#"{SITE}
[[modbus_serial]]
id = "rs485"
port = "/dev/ttyUSB0"
stop_bits = 3

[[modbus]]
id = "a"
serial = "rs486"
unit = 2
meter = "main"
field = [{{ signal = "name", register = "holding", address = 0, type = "string" }}]

[[modbus]]
id = "b"
serial = "rs485"
transport = "rtu_over_tcp"
unit = 0
meter = "main"

[[modbus]]
id = "c"
address = "h:502"
serial = "rs485"
"#
        );
        let found = problems(&text, "t.toml");
        for (at, words) in [
            ("18:13", "stop_bits is 1 or 2"),
            (
                "22:10",
                "serial port `rs486`, which is not a [[modbus_serial]] id",
            ),
            ("25:71", "a string needs `length`"),
            ("30:13", "`transport` goes with `address`"),
            ("31:8", "unit 0 is not in 1–247 on RTU"),
            ("34:1", "needs exactly one of `address`"),
        ] {
            assert!(
                found
                    .iter()
                    .any(|p| p.starts_with(&format!("{at}: ")) && p.contains(words)),
                "expected {at} {words} in {found:?}"
            );
        }
    }

    #[test]
    fn a_serial_line_keeps_three_and_a_half_characters_of_silence() {
        let mut port: ModbusSerial = toml::from_str("id = \"l\"\nport = \"/dev/ttyS0\"").unwrap();
        // 9600 8N1: 10 bits a character; 3.5 × 10 / 9600 s = 3.6458 ms.
        assert_eq!(port.effective_frame_gap().as_micros(), 3645);
        // 19200 8E1: 11 bits; 3.5 × 11 / 19200 s = 2.0052 ms.
        port.baud = 19_200;
        port.parity = super::super::Parity::Even;
        assert_eq!(port.effective_frame_gap().as_micros(), 2005);
        // Above 19200 the specification fixes 1.75 ms.
        port.baud = 115_200;
        assert_eq!(port.effective_frame_gap().as_micros(), 1750);
        port.frame_gap = Some(std::time::Duration::from_millis(10));
        assert_eq!(port.effective_frame_gap().as_millis(), 10);
    }
}
