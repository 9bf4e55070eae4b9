//! The section mechanism: one row per section in one table (the agent's, `agent::config`), from
//! which the config struct, the list of sections for "unknown section" hints, the keys for
//! "did you mean" and the dispatch to each owner's check are all derived.
//!
//! A row names the field, the TOML name, whether the section is `one` table (`[web]`, its
//! defaults when absent), `optional` (`[uplink]`, `None` when absent) or `many` (`[[modbus]]`),
//! the type, and the owner's check. The type implements [`Section`], which gives the keys of
//! its nested tables; the check runs after every section has been read, with the register's
//! [`References`] at hand.

use std::collections::HashSet;
use std::marker::PhantomData;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::{Checker, Machine, Meter, Seg, raw_ids, struct_fields};

/// A config section's type: how it is read, and the keys of its tables for "did you mean"
/// hints.
pub(crate) trait Section: for<'de> Deserialize<'de> {
    /// The keys of the table at `path` (table names below the section's own; empty for the
    /// section itself). Types with nested tables add theirs.
    fn keys(path: &[&str]) -> &'static [&'static str] {
        if path.is_empty() {
            struct_fields::<Self>()
        } else {
            &[]
        }
    }

    /// Reads the section from its table at `path`, reporting what is wrong with it. A section
    /// that holds a shared part's keys beside its own (see [`super::composite`]) reads it with
    /// [`Checker::composite`] instead.
    fn read(
        checker: &mut Checker<'_>,
        value: &Spanned<DeValue<'_>>,
        path: Vec<Seg>,
    ) -> Option<Self> {
        checker.section(value, path)
    }
}

/// The check of a section that is one table; it runs on the defaults when the table is absent.
pub(crate) type CheckOne<T> = fn(&mut Checker<'_>, &Spanned<DeTable<'_>>, &mut T, &References<'_>);

/// The check of an array section: `at[k]` is the document index of `items[k]` (elements that did
/// not parse are left out).
pub(crate) type CheckMany<T> =
    fn(&mut Checker<'_>, &Spanned<DeTable<'_>>, &[usize], &mut [T], &References<'_>);

/// For sections without checks of their own.
pub(crate) fn unchecked<T>(
    _: &mut Checker<'_>,
    _: &Spanned<DeTable<'_>>,
    _: &mut T,
    _: &References<'_>,
) {
}

/// The ids things can refer to, and the register. Raw ids are read from the document so that a
/// machine whose own entry has a mistake does not also make every reference to it an error.
pub(crate) struct References<'a> {
    pub machines: HashSet<String>,
    pub meters: HashSet<String>,
    pub kinds: HashSet<String>,
    /// The machines that parsed (a copy: the checks may change the sections they check).
    pub machine_list: Vec<Machine>,
    /// The meters that parsed.
    pub meter_list: Vec<Meter>,
    _document: PhantomData<&'a ()>,
}

impl References<'_> {
    pub fn new(root: &Spanned<DeTable<'_>>, machines: &[Machine], meters: &[Meter]) -> Self {
        References {
            machines: raw_ids(root, "machine").into_iter().collect(),
            meters: raw_ids(root, "meter").into_iter().collect(),
            kinds: machines.iter().map(|m| m.kind.clone()).collect(),
            machine_list: machines.to_vec(),
            meter_list: meters.to_vec(),
            _document: PhantomData,
        }
    }
}

/// Declares a config struct and its table of sections. See the module's documentation; the one
/// use is `agent::config::Config`.
macro_rules! sections {
    (
        $(#[$struct_meta:meta])*
        pub struct $Config:ident {
            $(
                $(#[$meta:meta])*
                $field:ident: $kind:ident $ty:ty = $name:literal, $check:expr;
            )*
        }
    ) => {
        $(#[$struct_meta])*
        #[derive(Debug, Clone, Default)]
        pub struct $Config {
            $( $(#[$meta])* pub $field: $crate::config::sections!(@type $kind $ty), )*
        }

        impl $Config {
            /// Every section's TOML name, in the table's order.
            pub const SECTIONS: &'static [&'static str] = &[$($name),*];

            /// Reads every section of the document into its field. Returns the document index of
            /// each parsed element of an array section, by section name.
            fn read_sections(
                checker: &mut $crate::config::Checker<'_>,
                root: &toml::Spanned<toml::de::DeTable<'_>>,
            ) -> (Self, std::collections::HashMap<&'static str, Vec<usize>>) {
                let mut config = Self::default();
                let mut at = std::collections::HashMap::new();
                for (name, value) in root.get_ref().iter() {
                    let name_str: &str = name.get_ref();
                    match name_str {
                        $( $name => $crate::config::sections!(
                            @read $kind $ty, checker, value, $name, config.$field, at
                        ), )*
                        other => checker.unknown_section(name.span(), other, Self::SECTIONS),
                    }
                }
                (config, at)
            }

            /// Runs each section's check, in the table's order.
            fn check_sections(
                &mut self,
                checker: &mut $crate::config::Checker<'_>,
                root: &toml::Spanned<toml::de::DeTable<'_>>,
                at: &std::collections::HashMap<&'static str, Vec<usize>>,
                refs: &$crate::config::References<'_>,
            ) {
                $(
                    $crate::config::sections!(
                        @check $kind $ty, checker, root, $name, self.$field, at, refs, $check
                    );
                )*
            }

            /// The keys the table at `path` takes, for "did you mean" hints.
            fn known_keys(path: &[$crate::config::Seg]) -> &'static [&'static str] {
                let names = $crate::config::key_names(path);
                let Some((first, rest)) = names.split_first() else {
                    return &[];
                };
                $(
                    if *first == $name {
                        return <$ty as $crate::config::Section>::keys(rest);
                    }
                )*
                &[]
            }
        }
    };
    (@type one $ty:ty) => { $ty };
    (@type optional $ty:ty) => { Option<$ty> };
    (@type many $ty:ty) => { Vec<$ty> };
    (@read one $ty:ty, $c:ident, $value:ident, $name:literal, $slot:expr, $at:ident) => {
        match <$ty as $crate::config::Section>::read(
            $c, $value, vec![$crate::config::key($name)]
        ) {
            Some(v) => $slot = v,
            None => $c.unread($name),
        }
    };
    (@read optional $ty:ty, $c:ident, $value:ident, $name:literal, $slot:expr, $at:ident) => {
        $slot = <$ty as $crate::config::Section>::read($c, $value, vec![$crate::config::key($name)])
    };
    (@read many $ty:ty, $c:ident, $value:ident, $name:literal, $slot:expr, $at:ident) => {{
        let (indices, items) = $c
            .array_with($value, $name, <$ty as $crate::config::Section>::read)
            .into_iter()
            .unzip();
        $at.insert($name, indices);
        $slot = items;
    }};
    (@check one $ty:ty, $c:ident, $root:ident, $name:literal, $slot:expr, $at:ident, $refs:ident, $check:expr) => {{
        let check: $crate::config::CheckOne<$ty> = $check;
        // A table that could not be read holds defaults, not what was written: checking them
        // would report mistakes that are not in the file.
        if !$c.is_unread($name) {
            check($c, $root, &mut $slot, $refs);
        }
    }};
    (@check optional $ty:ty, $c:ident, $root:ident, $name:literal, $slot:expr, $at:ident, $refs:ident, $check:expr) => {{
        let check: $crate::config::CheckOne<$ty> = $check;
        if let Some(section) = &mut $slot {
            check($c, $root, section, $refs);
        }
    }};
    (@check many $ty:ty, $c:ident, $root:ident, $name:literal, $slot:expr, $at:ident, $refs:ident, $check:expr) => {{
        let check: $crate::config::CheckMany<$ty> = $check;
        let indices = $at.get($name).map(Vec::as_slice).unwrap_or_default();
        check($c, $root, indices, &mut $slot, $refs);
    }};
}
pub(crate) use sections;
