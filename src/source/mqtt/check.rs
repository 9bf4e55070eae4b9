//! `[[mqtt]]`'s checks: a broker's connection, its topic patterns and the machines, meters and
//! signals they name, against the register and the signal types the rest of the config
//! declares.

use std::collections::{BTreeMap, HashSet};

use toml::Spanned;
use toml::de::DeTable;

use super::config::{MqttBroker, PayloadFormat};
use super::{mapping, payload::JsonPath, topic::Template};
use crate::config::{Checker, References, Seg, join, key, not_registered};
use crate::model::SignalType;

/// `[[mqtt]]`'s row in the section table: broker ids share the device namespace with the
/// Modbus devices (one health line each).
pub(crate) fn check_brokers(
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
        check_broker(checker, root, &base, broker, refs);
    }
}

fn check_broker(
    checker: &mut Checker<'_>,
    root: &Spanned<DeTable<'_>>,
    base: &[Seg],
    broker: &MqttBroker,
    refs: &References<'_>,
) {
    let at = |s: &Checker<'_>, rest: &[Seg]| s.span_of(root, &join(base, rest));
    let name = &broker.id;
    broker.connection.check(
        checker,
        root,
        base,
        &format!("mqtt broker `{name}`"),
        crate::config::SecretOf::Source,
    );
    if broker.inflight_window < 2 {
        let span = at(checker, &[key("inflight_window")]);
        checker.push(
            span,
            format!(
                "mqtt broker `{name}`: inflight_window is {}; give the broker's in-flight window \
                 for this client (Mosquitto's max_inflight_messages, 20 by default), at least 2",
                broker.inflight_window
            ),
        );
    }
    if broker.linger > super::config::MAX_LINGER {
        let span = at(checker, &[key("linger")]);
        checker.push(
            span,
            format!(
                "mqtt broker `{name}`: linger is {:?}, more than the 1 s allowed; a message read \
                 that late holds its acknowledgement back as long",
                broker.linger
            ),
        );
    }
    if broker.topics.is_empty() {
        let span = at(checker, &[key("id")]);
        checker.push(
            span,
            format!("mqtt broker `{name}` has no [[mqtt.topic]]: it would subscribe to nothing"),
        );
    }
    // (target template, signal) → declared type, across the broker's topics.
    let mut types: BTreeMap<(String, String), SignalType> = BTreeMap::new();
    for (j, topic) in broker.topics.iter().enumerate() {
        let tpath = [key("topic"), Seg::Index(j)];
        let here = |s: &Checker<'_>, k: &str| at(s, &join(&tpath, &[key(k)]));
        let names = match mapping::compile(topic) {
            Ok((_, names)) => names,
            Err(e) => {
                let span = here(checker, "pattern");
                checker.push(span, format!("pattern `{}`: {e}", topic.pattern));
                continue;
            }
        };
        if topic.format == PayloadFormat::Sparkplug && !topic.pattern.starts_with("spBv1.0/") {
            let span = here(checker, "pattern");
            checker.push(
                span,
                "a sparkplug topic pattern starts with `spBv1.0/` (e.g. \"spBv1.0/shop1/#\")"
                    .into(),
            );
        }
        let (target_key, target_text, registered, what) = match (&topic.machine, &topic.meter) {
            (Some(_), Some(_)) => {
                let span = here(checker, "meter");
                checker.push(
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
                let span = here(checker, target_key);
                checker.push(span, format!("{what}: {e}"));
            }
            Ok(t) => {
                if let Some(id) = t.fixed()
                    && !registered.contains(id)
                {
                    let span = here(checker, target_key);
                    checker.push(span, not_registered(&format!("topic names {what}"), id));
                }
                for capture in t.capture_names() {
                    if !names.iter().any(|n| n == capture) {
                        let span = here(checker, target_key);
                        let hint = if target_key == "pattern" {
                            format!(
                                "; write `{what} = \"...\"` or capture it with `{{{capture}}}` in the pattern"
                            )
                        } else {
                            String::new()
                        };
                        checker.push(
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
            let span = here(checker, "timestamp");
            if topic.format != PayloadFormat::Json {
                checker.push(
                    span,
                    "`timestamp` is a JSON path; text messages are stamped on arrival and \
                     Sparkplug payloads carry their own"
                        .into(),
                );
            } else if let Err(e) = JsonPath::parse(ts) {
                checker.push(span, e);
            }
        }
        if topic.offline_payload.is_some() && topic.format == PayloadFormat::Sparkplug {
            let span = here(checker, "offline_payload");
            checker.push(
                span,
                "Sparkplug machines go offline on NDEATH/DDEATH; `offline_payload` is for JSON and text topics".into(),
            );
        }
        if topic.fields.is_empty() && topic.offline_payload.is_none() {
            let span = here(checker, "pattern");
            checker.push(
                span,
                "this topic has no `field` (and no `offline_payload`): its messages would deliver nothing".into(),
            );
        }
        if topic.format == PayloadFormat::Text && topic.fields.len() > 1 {
            let span = at(checker, &join(&tpath, &[key("field"), Seg::Index(1)]));
            checker.push(
                span,
                "a text message carries one value: map one `field` per topic".into(),
            );
        }
        let mut signals = HashSet::new();
        for (k, field) in topic.fields.iter().enumerate() {
            let fpath = join(&tpath, &[key("field"), Seg::Index(k)]);
            let fhere = |s: &Checker<'_>, name: &str| at(s, &join(&fpath, &[key(name)]));
            if !signals.insert(field.signal.as_str()) {
                let span = fhere(checker, "signal");
                checker.push(
                    span,
                    format!("signal `{}` is mapped twice in this topic", field.signal),
                );
            }
            match Template::parse(&field.signal) {
                Err(e) => {
                    let span = fhere(checker, "signal");
                    checker.push(span, format!("signal: {e}"));
                }
                Ok(t) => {
                    for capture in t.capture_names() {
                        if !names.iter().any(|n| n == capture) {
                            let span = fhere(checker, "signal");
                            checker.push(
                                span,
                                format!("signal `{}` uses `{{{capture}}}`, which the pattern does not capture", field.signal),
                            );
                        }
                    }
                    if t.capture_names().next().is_none() {
                        let here = || format!("mqtt broker `{name}` topic `{}`", topic.pattern);
                        if let Some(clash) =
                            checker.signal_type_clash(&field.signal, field.value_type, here)
                        {
                            let span = fhere(checker, "type");
                            checker.push(span, clash);
                        }
                    }
                }
            }
            match (topic.format, &field.path) {
                (PayloadFormat::Text, Some(_)) => {
                    let span = fhere(checker, "path");
                    checker.push(span, "a text message has no paths: leave out `path`".into());
                }
                (PayloadFormat::Json, path) => {
                    if let Err(e) = JsonPath::parse(path.as_deref().unwrap_or(&field.signal)) {
                        let span = fhere(checker, if path.is_some() { "path" } else { "signal" });
                        checker.push(span, e);
                    }
                }
                _ => {}
            }
            // A name without captures is checked across the whole config above; one
            // made from captures is known only per target and topic pattern.
            let templated =
                Template::parse(&field.signal).is_ok_and(|t| t.capture_names().next().is_some());
            let declared = (target_text.clone(), field.signal.clone());
            match types.get(&declared) {
                Some(t) if templated && *t != field.value_type => {
                    let span = fhere(checker, "type");
                    checker.push(
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

/// What the broker's topics deliver, for the check that every signal a state rule, meter or
/// part counter names comes from somewhere: a topic whose machine (or meter) is built from
/// captures feeds any of them, a signal built from captures has a run-time name.
pub(crate) fn deliveries(broker: &MqttBroker, out: &mut crate::config::Deliveries) {
    use crate::config::To;
    use mapping::default_machine;
    let templated = |t: &str| {
        Template::parse(t)
            .map(|t| t.capture_names().next().is_some())
            .unwrap_or(true)
    };
    for topic in &broker.topics {
        let to = match (&topic.meter, &topic.machine) {
            (Some(m), _) if templated(m) => To::AnyMeter,
            (Some(m), _) => To::Meter(m),
            (None, Some(m)) if !templated(m) => To::Machine(m),
            (None, Some(_)) => To::AnyMachine,
            (None, None) if templated(default_machine(topic.format)) => To::AnyMachine,
            (None, None) => To::Machine(default_machine(topic.format)),
        };
        for field in &topic.fields {
            if templated(&field.signal) {
                out.open(to);
            } else {
                out.signal(to, &field.signal);
            }
        }
    }
}
