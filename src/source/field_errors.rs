//! The per-field error counter every polled source keeps: `shopfloor_field_errors_total`,
//! one series per configured field and kind of error, made at the field's first error of that
//! kind, so only fields that fail have one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::metrics::Metrics;
use crate::model::{FieldError, Target};

/// The counter of failed reads per configured field, labelled `device`, `field`
/// (`<machine or meter>.<signal>`) and `kind` (`exception`, `short`, `decode`).
pub const FIELD_ERRORS: &str = "shopfloor_field_errors_total";

/// One field's error counters by kind.
#[derive(Debug, Default)]
pub struct FieldErrorCounts(Vec<(&'static str, Arc<AtomicU64>)>);

impl FieldErrorCounts {
    /// Counts one error of `kind` for the field `signal` of `target` on `device`.
    pub fn count(
        &mut self,
        metrics: &Metrics,
        device: &str,
        target: &Target,
        signal: &str,
        kind: &'static str,
    ) {
        if let Some((_, c)) = self.0.iter().find(|(k, _)| *k == kind) {
            c.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let field = match target {
            Target::Machine(m) | Target::Meter(m) if !m.is_empty() => format!("{m}.{signal}"),
            _ => signal.to_string(),
        };
        let c = metrics.counter(
            FIELD_ERRORS,
            "Reads of one configured field that delivered no value: an exception or refusal of its request, an answer too short for it, or a value that does not decode.",
            &[("device", device), ("field", &field), ("kind", kind)],
        );
        c.fetch_add(1, Ordering::Relaxed);
        self.0.push((kind, c));
    }
}

impl FieldErrorCounts {
    /// Counts one error of `kind` for the field, and returns it as the engine takes it.
    pub fn error(
        &mut self,
        metrics: &Metrics,
        device: &str,
        (target, signal): (Target, Arc<str>),
        kind: &'static str,
        error: String,
    ) -> FieldError {
        self.count(metrics, device, &target, &signal, kind);
        FieldError {
            target,
            signal,
            kind,
            error,
        }
    }
}

/// A polled source's field as [`collect`] needs it: where its values go, and its counters.
pub trait FieldSlot {
    fn target(&self) -> &Target;
    fn signal(&self) -> &Arc<str>;
    fn counts(&mut self) -> &mut FieldErrorCounts;
}

/// Implements [`FieldSlot`] for a source's field type with fields `target`, `signal` and
/// `errors`.
macro_rules! field_slot {
    ($slot:ty) => {
        impl $crate::source::field_errors::FieldSlot for $slot {
            fn target(&self) -> &$crate::model::Target {
                &self.target
            }
            fn signal(&self) -> &std::sync::Arc<str> {
                &self.signal
            }
            fn counts(&mut self) -> &mut $crate::source::field_errors::FieldErrorCounts {
                &mut self.errors
            }
        }
    };
}
pub(crate) use field_slot;

/// One field that delivered nothing in a poll: its index among the device's fields, the kind
/// of error (`exception`, `short`, `decode`) and the error in words.
pub type Failed = (usize, &'static str, String);

/// The errors of one poll's failed fields, each counted on its field's counter in `counts`:
/// the counters of the fields that have failed so far, by field index in order (most fields
/// never fail, so none is kept for them). `field` gives field `index`'s target and signal.
pub fn collect_sparse(
    failed: Vec<Failed>,
    counts: &mut Vec<(usize, FieldErrorCounts)>,
    field: impl Fn(usize) -> Option<(Target, Arc<str>)>,
    metrics: &Metrics,
    device: &str,
) -> Vec<FieldError> {
    failed
        .into_iter()
        .filter_map(|(index, kind, error)| {
            let (target, signal) = field(index)?;
            let at = match counts.binary_search_by_key(&index, |(i, _)| *i) {
                Ok(at) => at,
                Err(at) => {
                    counts.insert(at, (index, FieldErrorCounts::default()));
                    at
                }
            };
            Some(
                counts[at]
                    .1
                    .error(metrics, device, (target, signal), kind, error),
            )
        })
        .collect()
}

/// The errors of one poll's failed fields, each counted on its field's counter.
pub fn collect<S: FieldSlot>(
    failed: Vec<Failed>,
    slots: &mut [S],
    metrics: &Metrics,
    device: &str,
) -> Vec<FieldError> {
    failed
        .into_iter()
        .filter_map(|(index, kind, error)| {
            let slot = slots.get_mut(index)?;
            let (target, signal) = (slot.target().clone(), slot.signal().clone());
            Some(
                slot.counts()
                    .error(metrics, device, (target, signal), kind, error),
            )
        })
        .collect()
}
