//! Which signals the sources deliver to which machine and meter, for the check that every
//! signal a state rule, a meter or a part counter names comes from somewhere.
//!
//! A typo in a state rule's signal (`spindle_speed` for `spindle_rpm`) otherwise passes: the
//! rule never holds, and the machine shows idle while it runs, with no warning anywhere. Each
//! source section says what it delivers ([`Deliveries::signal`]); a source whose signal names
//! are only known at run time (an MQTT signal built from a topic's captures) makes its
//! machines [`Deliveries::open`], and nothing is refused for them.
//!
//! The check is one-sided on purpose: a machine that no source names (a register entry
//! without data, which the networking rate counts as not networked) is not checked, and a
//! name delivered to *some* machine a rule set covers but not to others is a warning, since a
//! rule set shared by a kind may name alternatives.

use std::collections::{BTreeSet, HashMap};

use super::load::suggest;

/// Who a source's signal goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum To<'a> {
    Machine(&'a str),
    Meter(&'a str),
    /// Whichever machine a topic's captures name (`plant/{machine}/data`).
    AnyMachine,
    /// Whichever meter a topic's captures name.
    AnyMeter,
}

#[derive(Debug, Default)]
struct Delivered {
    signals: BTreeSet<String>,
    open: bool,
    /// The ids of the sections (devices, brokers, servers) that deliver to it.
    sources: BTreeSet<String>,
}

/// The signals delivered, by machine and meter.
#[derive(Debug, Default)]
pub(crate) struct Deliveries {
    machines: HashMap<String, Delivered>,
    meters: HashMap<String, Delivered>,
    any_machine: Delivered,
    any_meter: Delivered,
    /// The section whose deliveries are being recorded (see [`Deliveries::recording_source`]).
    source: Option<String>,
}

/// What [`Deliveries::machine`] and [`Deliveries::meter`] find for a signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A source delivers it (or may: a source with run-time names covers the target).
    Delivered,
    /// No source delivers anything to the target: not connected, nothing to check.
    NoSource,
    /// Sources deliver to the target, but not this signal; the message says what they do
    /// deliver.
    Missing(String),
}

impl Deliveries {
    fn slot(&mut self, to: To<'_>) -> &mut Delivered {
        let slot = match to {
            To::Machine(id) => self.machines.entry(id.to_string()).or_default(),
            To::Meter(id) => self.meters.entry(id.to_string()).or_default(),
            To::AnyMachine => &mut self.any_machine,
            To::AnyMeter => &mut self.any_meter,
        };
        if let Some(source) = &self.source {
            slot.sources.insert(source.clone());
        }
        slot
    }

    /// What is recorded from now on comes from the section (device, broker, server) `id`
    /// (`""`: from none that is recorded).
    pub(crate) fn recording_source(&mut self, id: &str) {
        self.source = (!id.is_empty()).then(|| id.to_string());
    }

    /// The sections that deliver to machine `id`: its own, and those whose topics name
    /// machines at run time. Empty: the machine has no data source.
    pub(crate) fn machine_sources(&self, id: &str) -> Vec<String> {
        let own = self.machines.get(id).map(|d| &d.sources);
        let any = (self.any_machine.open || !self.any_machine.signals.is_empty())
            .then_some(&self.any_machine.sources);
        let mut all: Vec<String> = own.into_iter().chain(any).flatten().cloned().collect();
        all.sort();
        all.dedup();
        all
    }

    /// A source delivers `signal` to `to`.
    pub(crate) fn signal(&mut self, to: To<'_>, signal: &str) {
        self.slot(to).signals.insert(signal.to_string());
    }

    /// A field's `signal`, delivered to the field's own machine or meter, else to its device's
    /// (the rule every polled source's field follows). A field that names neither goes nowhere.
    pub(crate) fn field(
        &mut self,
        own: (Option<&str>, Option<&str>),
        device: (Option<&str>, Option<&str>),
        signal: &str,
    ) {
        let to = match (own, device) {
            ((Some(m), _), _) => To::Machine(m),
            ((None, Some(m)), _) => To::Meter(m),
            ((None, None), (Some(m), _)) => To::Machine(m),
            ((None, None), (None, Some(m))) => To::Meter(m),
            ((None, None), (None, None)) => return,
        };
        self.signal(to, signal);
    }

    /// Every named signal delivered, by machine then meter (each in id and signal order);
    /// those that go to whichever machine or meter a topic names last.
    pub(crate) fn listed(&self) -> Vec<(To<'_>, &str)> {
        let mut out: Vec<(To<'_>, &str)> = Vec::new();
        let mut machines: Vec<_> = self.machines.iter().collect();
        machines.sort_by_key(|(id, _)| *id);
        for (id, d) in machines {
            out.extend(d.signals.iter().map(|s| (To::Machine(id), s.as_str())));
        }
        let mut meters: Vec<_> = self.meters.iter().collect();
        meters.sort_by_key(|(id, _)| *id);
        for (id, d) in meters {
            out.extend(d.signals.iter().map(|s| (To::Meter(id), s.as_str())));
        }
        out.extend(
            self.any_machine
                .signals
                .iter()
                .map(|s| (To::AnyMachine, s.as_str())),
        );
        out.extend(
            self.any_meter
                .signals
                .iter()
                .map(|s| (To::AnyMeter, s.as_str())),
        );
        out
    }

    /// A source delivers signals to `to` whose names are known only at run time.
    pub(crate) fn open(&mut self, to: To<'_>) {
        self.slot(to).open = true;
    }

    /// How many of `machines` a source names, and whether a topic built from captures may
    /// feed others: what `check` reports as machines with a data source.
    pub(crate) fn sourced<'a>(&self, machines: impl Iterator<Item = &'a str>) -> (usize, bool) {
        let named = machines.filter(|m| self.machines.contains_key(*m)).count();
        let any = self.any_machine.open || !self.any_machine.signals.is_empty();
        (named, any)
    }

    /// Whether machine `id` gets `signal`.
    pub(crate) fn machine(&self, id: &str, signal: &str) -> Verdict {
        verdict(
            "machine",
            id,
            self.machines.get(id),
            &self.any_machine,
            signal,
        )
    }

    /// Whether meter `id` gets `signal`.
    pub(crate) fn meter(&self, id: &str, signal: &str) -> Verdict {
        verdict("meter", id, self.meters.get(id), &self.any_meter, signal)
    }
}

fn verdict(
    what: &str,
    id: &str,
    own: Option<&Delivered>,
    any: &Delivered,
    signal: &str,
) -> Verdict {
    let Some(own) = own else {
        // Only a capture-built source might feed it: that may be any signal of any target.
        return if any.signals.contains(signal) || any.open {
            Verdict::Delivered
        } else {
            Verdict::NoSource
        };
    };
    if own.open || any.open || own.signals.contains(signal) || any.signals.contains(signal) {
        return Verdict::Delivered;
    }
    let names: Vec<&str> = own
        .signals
        .iter()
        .chain(&any.signals)
        .map(String::as_str)
        .collect();
    // Near in spelling, or else the one name that starts with the same word
    // (`spindle_speed` for `spindle_rpm`).
    let first_word = |n: &str| n.split('_').next().unwrap_or(n).to_ascii_lowercase();
    let same_word: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| n.contains('_') && first_word(n) == first_word(signal))
        .collect();
    let near = suggest(signal, &names).or(match same_word[..] {
        [one] => Some(one),
        _ => None,
    });
    let hint = match near {
        Some(near) => format!("did you mean `{near}`? "),
        None => String::new(),
    };
    const SHOWN: usize = 12;
    let mut list = names
        .iter()
        .take(SHOWN)
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        list.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    Verdict::Missing(format!(
        "no source delivers signal `{signal}` to {what} `{id}`: {hint}its sources deliver {list}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_is_missing_with_the_names_the_machine_gets() {
        let mut d = Deliveries::default();
        d.signal(To::Machine("cnc01"), "spindle_rpm");
        d.signal(To::Machine("cnc01"), "parts");
        assert_eq!(d.machine("cnc01", "spindle_rpm"), Verdict::Delivered);
        let Verdict::Missing(message) = d.machine("cnc01", "spindle_speed") else {
            panic!("the typo passes");
        };
        assert!(message.contains("`parts`, `spindle_rpm`"), "{message}");
        assert!(message.contains("did you mean `spindle_rpm`?"), "{message}");
        // One edit away: named as the likely one.
        let Verdict::Missing(message) = d.machine("cnc01", "part") else {
            panic!("the typo passes");
        };
        assert!(message.contains("did you mean `parts`?"), "{message}");
    }

    #[test]
    fn unconnected_and_run_time_named_targets_are_not_judged() {
        let mut d = Deliveries::default();
        assert_eq!(d.machine("press01", "run"), Verdict::NoSource);
        d.open(To::Machine("press01"));
        assert_eq!(d.machine("press01", "anything"), Verdict::Delivered);
        // A topic built from captures may feed any machine its pattern matches.
        d.signal(To::AnyMachine, "run");
        assert_eq!(d.machine("lathe07", "run"), Verdict::Delivered);
        assert_eq!(d.machine("lathe07", "spindle"), Verdict::NoSource);
        d.signal(To::Meter("main"), "kwh");
        assert!(matches!(d.meter("main", "kWh"), Verdict::Missing(_)));
    }
}
