//! The register's checks: `[site]`, `[[machine]]` and `[[meter]]`, the sections every other
//! section refers to.

use std::collections::HashSet;

use toml::Spanned;
use toml::de::DeTable;

use super::{Checker, Machine, Meter, References, Seg, Site, key, raw_ids};

/// `[site]`'s row in the section table.
pub(crate) fn check_site(
    checker: &mut Checker<'_>,
    root: &Spanned<DeTable<'_>>,
    site: &mut Site,
    _: &References<'_>,
) {
    checker.site(root, site);
}

/// `[[machine]]`'s row: ids are unique and not empty.
pub(crate) fn check_machines(
    checker: &mut Checker<'_>,
    root: &Spanned<DeTable<'_>>,
    _: &[usize],
    _: &mut [Machine],
    _: &References<'_>,
) {
    checker.unique_ids(root, "machine", &raw_ids(root, "machine"));
}

/// `[[meter]]`'s row: ids are unique, a scope names a machine, a rollover is positive.
pub(crate) fn check_meters(
    checker: &mut Checker<'_>,
    root: &Spanned<DeTable<'_>>,
    at: &[usize],
    meters: &mut [Meter],
    refs: &References<'_>,
) {
    checker.unique_ids(root, "meter", &raw_ids(root, "meter"));
    for (i, meter) in at.iter().zip(meters.iter()) {
        if meter.scope != "site" && !refs.machines.contains(meter.scope.as_str()) {
            let at = checker.span_of(root, &[key("meter"), Seg::Index(*i), key("scope")]);
            checker.push(
                at,
                format!(
                    "meter `{}` has scope `{}`, which is neither \"site\" nor a registered machine",
                    meter.id, meter.scope
                ),
            );
        }
        if meter.rollover.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
            let span = checker.span_of(root, &[key("meter"), Seg::Index(*i), key("rollover")]);
            checker.push(span, "rollover must be a positive number".to_string());
        } else if let Some(modulus) = meter.rollover.and_then(display_maximum_modulus) {
            let span = checker.span_of(root, &[key("meter"), Seg::Index(*i), key("rollover")]);
            checker.warn(
                span,
                format!(
                    "rollover is the modulus: did you mean {modulus}? (`{}` looks like the largest value the register shows; the count wraps one step above it)",
                    meter.rollover.unwrap_or_default()
                ),
            );
        }
        if meter.max_rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
            let span = checker.span_of(root, &[key("meter"), Seg::Index(*i), key("max_rate")]);
            checker.push(span, "max_rate must be a positive number".to_string());
        }
    }
}

/// The modulus a `rollover` probably meant when it is written as a display maximum: all nines
/// with at least one decimal nine (999999.99, 99999999.9) → the next power of ten (1000000,
/// 100000000). Whole nines (65535 aside, 9999) are left alone: a counter may well wrap there.
fn display_maximum_modulus(rollover: f64) -> Option<u64> {
    let text = format!("{rollover}");
    let (whole, decimals) = text.split_once('.')?;
    let nines = |s: &str| !s.is_empty() && s.bytes().all(|b| b == b'9');
    if !(nines(whole) && nines(decimals)) {
        return None;
    }
    10u64.checked_pow(u32::try_from(whole.len()).ok()?)
}

impl Checker<'_> {
    fn site(&mut self, root: &Spanned<DeTable<'_>>, site: &Site) {
        for (field, value) in [("county", &site.county), ("enterprise", &site.enterprise)] {
            if value.trim().is_empty() {
                let at = self.span_of(root, &[key("site"), key(field)]);
                self.push(at, format!("[site] `{field}` must not be empty"));
            }
        }
        if jiff::tz::TimeZone::get(&site.timezone).is_err() {
            let at = self.span_of(root, &[key("site"), key("timezone")]);
            self.push(
                at,
                format!(
                    "unknown time zone `{}`: use an IANA name such as \"Asia/Shanghai\"",
                    site.timezone
                ),
            );
        }
    }

    /// Ids of an array section's elements are unique and not empty.
    pub(crate) fn unique_ids(
        &mut self,
        root: &Spanned<DeTable<'_>>,
        section: &str,
        ids: &[String],
    ) {
        let mut seen = HashSet::new();
        for (i, id) in ids.iter().enumerate() {
            if id.is_empty() || !seen.insert(id) {
                let at = self.span_of(root, &[key(section), Seg::Index(i), key("id")]);
                let what = if id.is_empty() { "empty" } else { "used twice" };
                self.push(at, format!("[[{section}]] id `{id}` is {what}"));
            }
        }
    }
}

#[cfg(test)]
mod rollover_tests {
    use super::display_maximum_modulus;

    #[test]
    fn a_display_maximum_is_told_apart_from_a_modulus() {
        // 999 999.99 (6+2 digits) wraps at 1 000 000; 99 999 999.9 (8+1) at 100 000 000.
        assert_eq!(display_maximum_modulus(999_999.99), Some(1_000_000));
        assert_eq!(display_maximum_modulus(99_999_999.9), Some(100_000_000));
        // A modulus, or whole nines, is taken as written.
        assert_eq!(display_maximum_modulus(1_000_000.0), None);
        assert_eq!(display_maximum_modulus(9999.0), None);
        assert_eq!(display_maximum_modulus(65_536.0), None);
    }
}
