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
        }
    }
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
