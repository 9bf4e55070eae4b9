//! State rules: from a machine's latest signals to one of the ISO 22400-2 states.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{Condition, Machine, Op, State, StateRules};
use crate::source::Value;

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
pub fn evaluate(rules: &StateRules, signals: &HashMap<Arc<str>, Value>) -> State {
    rules
        .rules
        .iter()
        .find(|rule| rule.when.iter().all(|c| holds(c, signals)))
        .map_or(rules.default, |rule| rule.state)
}

fn holds(condition: &Condition, signals: &HashMap<Arc<str>, Value>) -> bool {
    let Some(x) = signals
        .get(condition.signal.as_str())
        .and_then(Value::as_f64)
    else {
        return false;
    };
    let v = condition.value;
    match condition.op {
        Op::Eq => x == v,
        Op::Ne => x != v,
        Op::Gt => x > v,
        Op::Ge => x >= v,
        Op::Lt => x < v,
        Op::Le => x <= v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Rule;
    use std::time::Duration;

    fn cond(signal: &str, op: Op, value: f64) -> Condition {
        Condition {
            signal: signal.into(),
            op,
            value,
        }
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
                    when: vec![cond("alarm_code", Op::Ne, 0.0)],
                },
                Rule {
                    state: State::Stopped,
                    when: vec![cond("power", Op::Eq, 0.0)],
                },
                Rule {
                    state: State::Running,
                    when: vec![cond("run", Op::Eq, 1.0), cond("spindle_rpm", Op::Gt, 0.0)],
                },
            ],
        }
    }

    fn signals(pairs: &[(&str, Value)]) -> HashMap<Arc<str>, Value> {
        pairs
            .iter()
            .map(|(k, v)| (Arc::from(*k), v.clone()))
            .collect()
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
        assert_eq!(evaluate(&rules, &running), State::Running);
        // An alarm outranks running even while the spindle turns.
        let mut alarm = running.clone();
        alarm.insert(Arc::from("alarm_code"), Value::Int(1021));
        assert_eq!(evaluate(&rules, &alarm), State::Alarm);
        // Run flag set but spindle at 0: not all conditions hold → default idle.
        let mut waiting = running.clone();
        waiting.insert(Arc::from("spindle_rpm"), Value::Int(0));
        assert_eq!(evaluate(&rules, &waiting), State::Idle);
    }

    #[test]
    fn a_missing_signal_never_satisfies_a_condition() {
        let rules = cnc_rules();
        // power is unknown, so "power == 0" does not hold; nothing else matches → idle.
        assert_eq!(
            evaluate(&rules, &signals(&[("alarm_code", Value::Int(0))])),
            State::Idle
        );
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
