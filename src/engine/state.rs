//! State rules: from a machine's latest signals to one of the ISO 22400-2 states.

use jiff::{SignedDuration, Timestamp};

use super::config::Test;
use super::signals::Signals;
use crate::config::Machine;
use crate::engine::config::{Condition, StateRules};
use crate::model::State;

/// Picks the rule set for a machine: one naming the machine beats one naming its kind, which
/// beats a catch-all naming neither. `None` when no rule set applies.
pub fn rules_for<'a>(machine: &Machine, sets: &'a [StateRules]) -> Option<&'a StateRules> {
    sets.iter()
        .find(|s| s.machines.contains(&machine.id))
        .or_else(|| sets.iter().find(|s| s.kinds.contains(&machine.kind)))
        .or_else(|| {
            sets.iter()
                .find(|s| s.machines.is_empty() && s.kinds.is_empty())
        })
}

/// The state the rules give for these signals: the first rule whose conditions all hold, else
/// the set's default. A condition on a signal the machine has not sent (or that is text) does
/// not hold.
pub fn evaluate(rules: &StateRules, inputs: &Inputs<'_>, found: &mut Found) -> State {
    // Each condition has its slot in `found`, rule after rule.
    let mut base = 0;
    for rule in &rules.rules {
        let end = base + rule.when.len();
        if found.0.len() < end {
            found.0.resize(end, None);
        }
        let slots = &mut found.0[base..end];
        if rule
            .when
            .iter()
            .zip(slots)
            .all(|(c, slot)| holds(c, inputs, slot))
        {
            return rule.state;
        }
        base = end;
    }
    rules.default
}

/// Where each condition's signal was found among a machine's signals, one slot per condition
/// in rule order, so that the rules are evaluated without a search by name (see
/// [`Signals::find`]). Kept per machine, for one rule set.
#[derive(Debug, Clone, Default)]
pub struct Found(Vec<Option<u32>>);

/// What the rules look at: the latest value of each signal and when each last changed, and
/// the moment of evaluation.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    pub signals: &'a Signals,
    pub at: Timestamp,
}

fn holds(condition: &Condition, inputs: &Inputs<'_>, hint: &mut Option<u32>) -> bool {
    let Some((value, changed)) = inputs.signals.find(&condition.signal, hint) else {
        // A signal the machine has not sent: no condition on it holds.
        return false;
    };
    let value = || value.as_f64();
    match condition.test {
        Test::ChangedWithin(within) => {
            let Some(changed) = changed else {
                return false;
            };
            SignedDuration::try_from(within)
                .is_ok_and(|within| inputs.at.duration_since(changed) <= within)
        }
        Test::Compare(compare, v) => value().is_some_and(|x| compare.holds(x, v)),
        Test::Between { min, max } => value().is_some_and(|x| min <= x && x <= max),
        Test::BitSet(bit) => value().is_some_and(|x| bit.is(x, true)),
        Test::BitClear(bit) => value().is_some_and(|x| bit.is(x, false)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::config::Rule;
    use crate::engine::config::{Bit, Compare};
    use crate::model::Value;
    use std::sync::Arc;
    use std::time::Duration;

    fn cond(signal: &str, compare: Compare, value: f64) -> Condition {
        Condition {
            signal: signal.into(),
            test: Test::Compare(compare, value),
        }
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    /// Evaluates with no change history, at a fixed moment.
    fn eval(rules: &StateRules, signals: &Signals) -> State {
        evaluate(rules, &Inputs { signals, at: t(0) }, &mut Found::default())
    }

    fn cnc_rules() -> StateRules {
        StateRules {
            machines: vec![],
            kinds: vec!["machining_centre".into()],
            default: State::Idle,
            min_duration: Duration::ZERO,
            rules: vec![
                Rule {
                    state: State::Alarm,
                    when: vec![cond("alarm_code", Compare::Ne, 0.0)],
                },
                Rule {
                    state: State::Stopped,
                    when: vec![cond("power", Compare::Eq, 0.0)],
                },
                Rule {
                    state: State::Running,
                    when: vec![
                        cond("run", Compare::Eq, 1.0),
                        cond("spindle_rpm", Compare::Gt, 0.0),
                    ],
                },
            ],
        }
    }

    fn signals(pairs: &[(&str, Value)]) -> Signals {
        let mut s = Signals::default();
        for (k, v) in pairs {
            s.update(&Arc::from(*k), v, t(0));
        }
        s
    }

    #[test]
    fn first_matching_rule_wins_and_default_covers_the_rest() {
        let rules = cnc_rules();
        let running = signals(&[
            ("alarm_code", Value::Int(0)),
            ("power", Value::Bool(true)),
            ("run", Value::Bool(true)),
            ("spindle_rpm", Value::Int(8000)),
        ]);
        assert_eq!(eval(&rules, &running), State::Running);
        // An alarm outranks running even while the spindle turns.
        let mut alarm = running.clone();
        alarm.update(&Arc::from("alarm_code"), &Value::Int(1021), t(0));
        assert_eq!(eval(&rules, &alarm), State::Alarm);
        // Run flag set but spindle at 0: not all conditions hold → default idle.
        let mut waiting = running.clone();
        waiting.update(&Arc::from("spindle_rpm"), &Value::Int(0), t(0));
        assert_eq!(eval(&rules, &waiting), State::Idle);
    }

    #[test]
    fn a_missing_signal_never_satisfies_a_condition() {
        let rules = cnc_rules();
        // power is unknown, so "power == 0" does not hold; nothing else matches → idle.
        assert_eq!(
            eval(&rules, &signals(&[("alarm_code", Value::Int(0))])),
            State::Idle
        );
    }

    #[test]
    fn ranges_bits_and_recent_changes() {
        let range = Condition {
            signal: "load_pct".into(),
            test: Test::Between {
                min: 5.0,
                max: 95.0,
            },
        };
        let bit3 = Condition {
            signal: "status".into(),
            test: Test::BitSet(Bit::new(3).unwrap()),
        };
        let counting = Condition {
            signal: "parts".into(),
            test: Test::ChangedWithin(Duration::from_secs(90)),
        };
        let rules = StateRules {
            default: State::Idle,
            rules: vec![
                Rule {
                    state: State::Running,
                    when: vec![counting.clone()],
                },
                Rule {
                    state: State::Setup,
                    when: vec![range.clone(), bit3.clone()],
                },
            ],
            ..cnc_rules()
        };
        // load 50 % (in 5–95) and status 0b1000 (bit 3 set) → setup; no part count yet.
        let mut values = signals(&[
            ("load_pct", Value::Float(50.0)),
            ("status", Value::Int(0b1000)),
            ("parts", Value::Int(7)),
        ]);
        // One `Found` throughout, as a machine keeps it.
        let mut found = Found::default();
        let mut at =
            |s: i64, signals: &Signals| evaluate(&rules, &Inputs { signals, at: t(s) }, &mut found);
        assert_eq!(at(0, &values), State::Setup);
        // Bit 3 clear (0b0111) → no rule → idle; load 96 % is out of range as well.
        values.update(&Arc::from("status"), &Value::Int(0b0111), t(0));
        assert_eq!(at(0, &values), State::Idle);
        // The part counter changed at t=100: running until t=190 inclusive, idle after.
        values.update(&Arc::from("parts"), &Value::Int(8), t(100));
        assert_eq!(at(150, &values), State::Running);
        assert_eq!(at(190, &values), State::Running);
        assert_eq!(at(191, &values), State::Idle);
    }

    #[test]
    fn machine_rules_beat_kind_rules_beat_catch_all() {
        let machine = Machine {
            id: "cnc01".into(),
            name: String::new(),
            kind: "machining_centre".into(),
            cnc: true,
            digital: None,
            parts_signal: None,
            good_signal: None,
            reject_signal: None,
            ideal_cycle: None,
            value_added_per_part: None,
            gross_output_per_part: None,
        };
        let catch_all = StateRules {
            kinds: vec![],
            default: State::Stopped,
            ..cnc_rules()
        };
        let by_machine = StateRules {
            machines: vec!["cnc01".into()],
            kinds: vec![],
            default: State::Setup,
            ..cnc_rules()
        };
        let sets = vec![catch_all.clone(), cnc_rules(), by_machine];
        assert_eq!(rules_for(&machine, &sets).unwrap().default, State::Setup);
        assert_eq!(
            rules_for(&machine, &sets[..2]).unwrap().default,
            State::Idle
        );
        assert_eq!(
            rules_for(&machine, &sets[..1]).unwrap().default,
            State::Stopped
        );
    }
}
