//! A machine's latest value of every signal, and when each last changed.
//!
//! The engine updates one entry per sample: 100k a second with 100 machines of 1000 Modbus
//! fields. Two hash maps keyed by name (values, change times) cost about 170 bytes per signal
//! with their spare buckets and hashed every name twice per sample. This keeps one vector of
//! entries in the order the signals first arrived, plus their positions sorted by name (4 bytes
//! a signal) for lookups by name and for the board's sorted list. A device's poll delivers its
//! fields in the same order every time, so the entry a sample is for is nearly always the one
//! after the previous sample's: that is checked first, by pointer (a Modbus field's name is one
//! shared `Arc` from the device task to here), and only a miss searches.

use std::cmp::Ordering;
use std::sync::Arc;

use jiff::Timestamp;

use crate::model::Value;

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    name: Arc<str>,
    value: Value,
    /// When the value last changed. A first value is no change: nobody knows when the counter
    /// last moved before the agent saw it.
    changed: Option<Timestamp>,
}

/// See the module documentation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Signals {
    /// In first-arrival order.
    entries: Vec<Entry>,
    /// Indices into `entries`, ordered by name.
    by_name: Vec<u32>,
    /// Where the next sample is expected: one past the last entry updated.
    next: usize,
}

impl Signals {
    /// Sets a signal's latest value, and its change time when the value differs from the one
    /// before.
    pub fn update(&mut self, name: &Arc<str>, value: &Value, at: Timestamp) {
        let index = match self.entries.get(self.next) {
            Some(e) if Arc::ptr_eq(&e.name, name) || *e.name == **name => self.next,
            _ => match self.search(name) {
                Ok(pos) => self.by_name[pos] as usize,
                Err(pos) => {
                    let index = self.entries.len();
                    // A machine with more than 4 billion signals does not fit in memory anyway.
                    self.by_name.insert(pos, index as u32);
                    self.entries.push(Entry {
                        name: name.clone(),
                        value: value.clone(),
                        changed: None,
                    });
                    self.next = index + 1;
                    return;
                }
            },
        };
        self.next = index + 1;
        let entry = &mut self.entries[index];
        if entry.value != *value {
            entry.value.clone_from(value);
            entry.changed = Some(at);
        }
    }

    /// Gives back the room kept for signals that have not arrived (the vectors grow by
    /// doubling: 50 signals would hold room for 64).
    pub fn shrink_to_fit(&mut self) {
        self.entries.shrink_to_fit();
        self.by_name.shrink_to_fit();
    }

    /// The latest value of a signal and when it last changed, looked up first at `hint` (where
    /// it was found before: an entry never moves) and by name only when it is not there; `hint`
    /// is then set to where it was found.
    pub fn find(&self, name: &str, hint: &mut Option<u32>) -> Option<(&Value, Option<Timestamp>)> {
        if let Some(e) = hint.and_then(|i| self.entries.get(i as usize))
            && *e.name == *name
        {
            return Some((&e.value, e.changed));
        }
        let index = self.by_name[self.search(name).ok()?];
        *hint = Some(index);
        let e = &self.entries[index as usize];
        Some((&e.value, e.changed))
    }

    /// The latest value of a signal.
    pub fn get(&self, name: &str) -> Option<&Value> {
        let pos = self.search(name).ok()?;
        Some(&self.entries[self.by_name[pos] as usize].value)
    }

    /// When a signal's value last changed; `None` while it has kept its first value.
    pub fn changed(&self, name: &str) -> Option<Timestamp> {
        let pos = self.search(name).ok()?;
        self.entries[self.by_name[pos] as usize].changed
    }

    /// Every signal and its latest value, ordered by name.
    pub fn sorted(&self) -> impl ExactSizeIterator<Item = (&Arc<str>, &Value)> {
        self.by_name.iter().map(|&i| {
            let e = &self.entries[i as usize];
            (&e.name, &e.value)
        })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn search(&self, name: &str) -> Result<usize, usize> {
        self.by_name
            .binary_search_by(|&i| -> Ordering { (*self.entries[i as usize].name).cmp(name) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    #[test]
    fn values_are_found_by_name_and_listed_in_name_order() {
        let mut s = Signals::default();
        let names: Vec<Arc<str>> = ["rpm", "alarm", "parts"].map(Arc::from).to_vec();
        for (n, name) in names.iter().enumerate() {
            s.update(name, &Value::Int(n as i64), t(0));
        }
        assert_eq!(s.get("alarm"), Some(&Value::Int(1)));
        assert_eq!(s.get("missing"), None);
        let listed: Vec<&str> = s.sorted().map(|(k, _)| &**k).collect();
        assert_eq!(listed, ["alarm", "parts", "rpm"]);
        assert_eq!(s.len(), 3);
    }

    #[test]
    fn a_change_is_stamped_but_a_first_value_or_a_repeat_is_not() {
        let mut s = Signals::default();
        let parts: Arc<str> = Arc::from("parts");
        s.update(&parts, &Value::Int(7), t(0));
        assert_eq!(s.changed("parts"), None, "first value");
        s.update(&parts, &Value::Int(7), t(1));
        assert_eq!(s.changed("parts"), None, "same value");
        s.update(&parts, &Value::Int(8), t(2));
        assert_eq!(s.changed("parts"), Some(t(2)));
        s.update(&parts, &Value::Int(8), t(3));
        assert_eq!(s.changed("parts"), Some(t(2)), "kept until the next change");
    }

    #[test]
    fn find_believes_a_hint_only_when_it_names_the_signal() {
        let mut s = Signals::default();
        for (i, name) in ["b", "a", "c"].iter().enumerate() {
            s.update(&Arc::from(*name), &Value::Int(i as i64), t(0));
        }
        s.update(&Arc::from("c"), &Value::Int(5), t(1));
        let mut hint = None;
        assert_eq!(s.find("c", &mut hint), Some((&Value::Int(5), Some(t(1)))));
        assert_eq!(hint, Some(2), "where c arrived");
        assert_eq!(s.find("c", &mut hint), Some((&Value::Int(5), Some(t(1)))));
        // A hint at another signal, or past the end, is corrected by a search.
        for wrong in [Some(0), Some(99)] {
            let mut hint = wrong;
            assert_eq!(s.find("a", &mut hint), Some((&Value::Int(1), None)));
            assert_eq!(hint, Some(1));
        }
        let mut hint = None;
        assert_eq!(s.find("missing", &mut hint), None);
        assert_eq!(hint, None);
    }

    #[test]
    fn samples_in_another_order_or_with_new_names_land_on_the_right_entry() {
        let mut s = Signals::default();
        // Names made afresh for every message (as an MQTT payload's are), in varying order.
        for (round, order) in [["a", "b", "c"], ["c", "a", "b"], ["b", "d", "a"]]
            .iter()
            .enumerate()
        {
            for name in order {
                let value = Value::Text(format!("{name}{round}"));
                s.update(&Arc::from(*name), &value, t(round as i64));
            }
        }
        let listed: Vec<(&str, &Value)> = s.sorted().map(|(k, v)| (&**k, v)).collect();
        assert_eq!(
            listed,
            [
                ("a", &Value::Text("a2".into())),
                ("b", &Value::Text("b2".into())),
                ("c", &Value::Text("c1".into())),
                ("d", &Value::Text("d2".into())),
            ]
        );
        assert_eq!(s.changed("c"), Some(t(1)));
        assert_eq!(s.changed("d"), None);
    }
}
