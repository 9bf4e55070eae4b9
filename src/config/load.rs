//! Loading and checking a config file, reporting every problem at once.
//!
//! serde stops at the first error, which makes commissioning a slow loop of fix-one-run-again.
//! So the document is first parsed into a tree that keeps every value's position, then each
//! section, and each element of an array section, is deserialized on its own: a mistake in one
//! `[[modbus]]` does not hide a mistake in the next. Unknown keys are collected with
//! `serde_ignored` rather than `deny_unknown_fields`, so all of them are reported, not the first.
//! Last, the cross-references (a field naming an unregistered machine, overlapping registers, a
//! missing secret) are checked on whatever parsed.

use std::collections::HashSet;
use std::fmt;
use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

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
    let one = |line: usize, column: usize, message: String| Diagnostics {
        file: file.clone(),
        problems: vec![Problem {
            line,
            column,
            message,
        }],
    };
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) => return Err(one(0, 0, format!("cannot read the file: {e}"))),
    };
    // A BOM (Windows Notepad's "UTF-8 with BOM") is not part of the text.
    let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    match std::str::from_utf8(body) {
        Ok(text) => check(text, &file),
        Err(e) => {
            let (line, column) = line_column_bytes(body, e.valid_up_to());
            Err(one(line, column, not_utf8(body, e.valid_up_to())))
        }
    }
}

/// Why a file is not text Shopfloor reads: a Chinese Windows editor saves GBK (GB18030) unless
/// told otherwise, and its Chinese characters are bytes 0x81–0xFE in pairs.
fn not_utf8(bytes: &[u8], at: usize) -> String {
    let gbk_pair = matches!(bytes.get(at..at + 2), Some([0x81..=0xFE, 0x40..=0xFE]));
    let saved_as = if gbk_pair {
        "it looks saved as GBK/GB18030 (ANSI on a Chinese Windows)"
    } else {
        "it is not UTF-8 text"
    };
    format!(
        "byte {:#04x} is not UTF-8: {saved_as}; save the file as UTF-8 (Notepad: Save as, Encoding UTF-8; VS Code: the encoding in the status bar, Save with Encoding, UTF-8)",
        bytes[at]
    )
}

/// 1-based line and column (in bytes) of a byte offset into text that is not UTF-8.
fn line_column_bytes(bytes: &[u8], at: usize) -> (usize, usize) {
    let before = &bytes[..at.min(bytes.len())];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let column = String::from_utf8_lossy(&before[start..]).chars().count() + 1;
    (line, column)
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
    check_document_warned(text, file, dir, known, check).map(|(value, _)| value)
}

/// [`check_document_in`] that also hands back the warnings of a config that has no error:
/// things that are probably wrong but may be meant (a `rollover` that looks like a display
/// maximum). With errors, the warnings are among the problems, each message starting with
/// `warning: `.
pub(crate) fn check_document_warned<T>(
    text: &str,
    file: &str,
    dir: Option<&Path>,
    known: KnownKeys,
    check: impl FnOnce(&mut Checker<'_>, &Spanned<DeTable<'_>>) -> Option<T>,
) -> Result<(T, Diagnostics), Diagnostics> {
    check_document_resolving(text, file, dir, known, Secrets::All, check)
}

/// Which secrets a load resolves to check that they are readable. A command resolves only the
/// secrets it uses: `check` and `run` all of them; `shopfloor test` the sources' (it writes to
/// no output and serves no board); `probe` none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secrets {
    All,
    Sources,
    None,
}

/// Whose secret a check resolves (see [`Checker::resolves`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SecretOf {
    /// A source's: a broker's or a server's password.
    Source,
    /// An output's or the board's: the store's token, the uplink's password, the write token.
    Output,
}

/// [`check_document_warned`] resolving only the secrets `secrets` names.
pub(crate) fn check_document_resolving<T>(
    text: &str,
    file: &str,
    dir: Option<&Path>,
    known: KnownKeys,
    secrets: Secrets,
    check: impl FnOnce(&mut Checker<'_>, &Spanned<DeTable<'_>>) -> Option<T>,
) -> Result<(T, Diagnostics), Diagnostics> {
    let mut checker = Checker {
        secrets,
        text,
        problems: Vec::new(),
        warnings: Vec::new(),
        dir,
        memo: Default::default(),
        claimed: Default::default(),
        known,
        signal_types: Default::default(),
        set_aside: Vec::new(),
        unread: HashSet::new(),
    };
    let value = match DeTable::parse(text) {
        Ok(root) => check(&mut checker, &root),
        Err(e) => {
            checker.push(e.span().unwrap_or(0..0), e.message().trim_end().to_string());
            None
        }
    };
    let mut warnings = std::mem::take(&mut checker.warnings);
    warnings.sort_by_key(|p| (p.line, p.column));
    warnings.dedup();
    match checker.finish(value, file) {
        Ok(value) => Ok((
            value,
            Diagnostics {
                file: file.to_string(),
                problems: warnings,
            },
        )),
        Err(mut d) => {
            d.problems.extend(warnings);
            d.problems.sort_by_key(|p| (p.line, p.column));
            Err(d)
        }
    }
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
    /// Problems that do not refuse the config ([`Checker::warn`]).
    warnings: Vec<Problem>,
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
    signal_types: std::collections::HashMap<String, (crate::model::SignalType, String)>,
    /// Values set aside after a type error in them ([`Checker::read`]): a later problem that
    /// points inside one is the same mistake seen again through the default that replaced it,
    /// and is not reported twice.
    set_aside: Vec<Range<usize>>,
    /// Sections of one table that are written but could not be read ([`Checker::unread`]).
    unread: HashSet<&'static str>,
    /// Which secrets are resolved ([`Checker::resolves`]).
    secrets: Secrets,
}

impl Checker<'_> {
    /// Whether a secret of `of` is resolved, to refuse one that is not readable: only the
    /// secrets of what the command uses are (see [`Secrets`]).
    pub(crate) fn resolves(&self, of: SecretOf) -> bool {
        match self.secrets {
            Secrets::All => true,
            Secrets::Sources => of == SecretOf::Source,
            Secrets::None => false,
        }
    }

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

    /// Marks the section `name` as written but not read: its check is not run on the defaults.
    pub(crate) fn unread(&mut self, name: &'static str) {
        self.unread.insert(name);
    }

    pub(crate) fn is_unread(&self, name: &str) -> bool {
        self.unread.contains(name)
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

    /// Whether a problem was reported: checks that build on the whole config skip themselves
    /// then, rather than report what follows from a section that could not be read.
    pub(crate) fn has_problems(&self) -> bool {
        !self.problems.is_empty()
    }

    /// A warning: reported by `check` and logged at start, but the config is accepted.
    pub(crate) fn warn(&mut self, span: Range<usize>, message: String) {
        let (line, column) = line_column(self.text, span.start);
        self.warnings.push(Problem {
            line,
            column,
            message: format!("warning: {message}"),
        });
    }

    pub(crate) fn push(&mut self, span: Range<usize>, message: String) {
        if self.set_aside.iter().any(|r| r.contains(&span.start)) {
            return;
        }
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
        let (result, unknown) = self.read::<T>(value, &path);
        for rel in unknown {
            self.unknown_key(value, &path, rel);
        }
        result
    }

    /// Deserializes a section that holds a shared part's keys beside its own (see
    /// [`super::composite`]): the table is read once as each part, both with positions, and a
    /// key is unknown only when neither part knows it.
    pub(crate) fn composite<T: super::Composite>(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        path: Vec<Seg>,
    ) -> Option<T> {
        let (shared, in_shared) = self.read::<T::Shared>(value, &path);
        let (own, in_own) = self.read::<super::composite::Own<T>>(value, &path);
        // A key at the top is unknown when neither part takes it. It is looked up in the
        // table itself: each part stops at its first type error, and the table's keys do not
        // come in document order, so neither part's list of ignored keys is complete.
        let own_keys = struct_fields::<super::composite::Own<T>>();
        let shared_keys = struct_fields::<T::Shared>();
        let mut unknown: Vec<Vec<Seg>> = value
            .get_ref()
            .as_table()
            .into_iter()
            .flat_map(|t| t.iter())
            .map(|(k, _)| k.get_ref().as_ref() as &str)
            .filter(|k| !own_keys.contains(k) && !shared_keys.contains(k))
            .map(|k| vec![key(k)])
            .collect();
        // Below the top, each part reports the keys it does not take in its own tables (`tls`,
        // `topic`); the other part ignores those tables whole.
        for (paths, mine) in [(&in_shared, shared_keys), (&in_own, own_keys)] {
            for p in paths {
                if p.len() > 1
                    && matches!(p.first(), Some(Seg::Key(k)) if mine.contains(&k.as_str()))
                {
                    unknown.push(p.clone());
                }
            }
        }
        for rel in unknown {
            self.unknown_key(value, &path, rel);
        }
        Some(own?.0.with_shared(shared?))
    }

    /// Deserializes `value` as `T`, reporting every type error in it; returns the paths (under
    /// `value`) of the keys `T` does not take.
    ///
    /// serde stops at the first error, so one bad value used to hide every other mistake of
    /// its table and every check that needs the table read. After a type error the key that
    /// holds it (the innermost one) is set aside and the table read again: the next error is
    /// found, and a table whose bad keys all have defaults is read with those defaults, so the
    /// checks after reading still run on it (problems they find inside a set-aside value are
    /// not reported again: see [`Checker::push`]). A key set aside that the type requires makes
    /// its table missing that field; then the key holding that table is set aside in turn, up
    /// to the section itself, which is then not read.
    fn read<T: for<'de> Deserialize<'de>>(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        path: &[Seg],
    ) -> (Option<T>, Vec<Vec<Seg>>) {
        let mut unknown: Vec<Vec<Seg>> = Vec::new();
        let mut working = value.clone();
        let mut removed: Vec<(Vec<Seg>, Range<usize>)> = Vec::new();
        // Each turn sets a key aside, so the turns are bounded by the keys in the table.
        for _ in 0..256 {
            let mut seen = Vec::new();
            let result =
                serde_ignored::deserialize(ValueDeserializer::from(working.clone()), |p| {
                    seen.push(ignored_path(&p))
                });
            for p in seen {
                if !unknown.contains(&p) {
                    unknown.push(p);
                }
            }
            let e = match result {
                Ok(v) => return (Some(v), unknown),
                Err(e) => e,
            };
            let at = e.span().unwrap_or_else(|| working.span());
            let message = e.message().trim_end();
            // A required field missing because this reading set it aside: set its table aside.
            let ours = message.starts_with("missing field")
                && removed.iter().any(|(p, _)| {
                    parent_table(p).is_some_and(|t| {
                        node_at(&working, &t).map(|n| n.span()) == Some(at.clone())
                    })
                });
            let next = if ours {
                removed
                    .iter()
                    .filter_map(|(p, _)| parent_table(p))
                    .find(|t| node_at(&working, t).map(|n| n.span()) == Some(at.clone()))
                    .map(|t| holding_key(&t))
            } else {
                let table = table_name(path);
                self.push(at.clone(), format!("in {table}: {}", in_words(message)));
                Some(holding_key(&innermost_key_at(&working, at.start)))
            };
            let Some(next) = next.filter(|p| !p.is_empty()) else {
                return (None, unknown);
            };
            let Some(span) = node_at(&working, &next).map(|n| n.span()) else {
                return (None, unknown);
            };
            if !remove_at(&mut working, &next) {
                return (None, unknown);
            }
            self.set_aside.push(span.clone());
            removed.push((next, span));
        }
        (None, unknown)
    }

    /// Reports the key at `rel` under the section at `path`, with a "did you mean".
    fn unknown_key(&mut self, value: &Spanned<DeValue<'_>>, path: &[Seg], rel: Vec<Seg>) {
        let full = join(path, &rel);
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

    /// Deserializes each element of an array of tables on its own.
    pub(crate) fn array<T: for<'de> Deserialize<'de>>(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        name: &str,
    ) -> Vec<(usize, T)> {
        self.array_with(value, name, Self::section)
    }

    /// [`Checker::array`] with another way of reading each element (a [`super::Section`]'s
    /// own, such as [`Checker::composite`]).
    pub(crate) fn array_with<T>(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        name: &str,
        mut read: impl FnMut(&mut Self, &Spanned<DeValue<'_>>, Vec<Seg>) -> Option<T>,
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
                read(self, item, vec![key(name), Seg::Index(i)]).map(|v| (i, v))
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

    /// A field of the `signal` line keeps one type across every machine and meter: InfluxDB
    /// types a field per measurement, not per series, and refuses every line that brings it
    /// with another type (they would end in the dead-letter file). The first declaration of
    /// a name sets its type, with `here` saying where; a later one of another type gets the
    /// problem's message back. `here` runs only for a first declaration, so a register of
    /// 100 000 devices of one profile costs a lookup a field.
    pub(crate) fn signal_type_clash(
        &mut self,
        signal: &str,
        ty: crate::model::SignalType,
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

/// serde's messages for a wrong choice or an out-of-range number, in the user's words: the
/// choices with a "did you mean", the range a number must be in. Others pass unchanged.
fn in_words(message: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown variant `")
        && let Some((got, expected)) = rest.split_once("`, expected ")
    {
        let choices: Vec<&str> = expected
            .trim_start_matches("one of ")
            .split(['`', ',', ' '])
            .filter(|w| !w.is_empty() && *w != "or")
            .collect();
        let hint = suggest(got, &choices)
            .map(|c| format!(" (did you mean `{c}`?)"))
            .unwrap_or_default();
        let list: Vec<String> = choices.iter().map(|c| format!("`{c}`")).collect();
        return format!("`{got}` is not one of {}{hint}", list.join(", "));
    }
    if let Some(rest) = message.strip_prefix("invalid value: integer `")
        && let Some((got, ty)) = rest.split_once("`, expected ")
    {
        let range = match ty {
            "u8" => "a whole number from 0 to 255",
            "u16" => "a whole number from 0 to 65535",
            "u32" => "a whole number from 0 to 4294967295",
            "u64" | "usize" => "a whole number from 0 up",
            "i8" => "a whole number from -128 to 127",
            "i16" => "a whole number from -32768 to 32767",
            "i32" => "a whole number from -2147483648 to 2147483647",
            _ => return message.to_string(),
        };
        return format!("`{got}` is out of range: {range}");
    }
    message.to_string()
}

/// What is wrong with a `host:port` address, in words with the form to write; `None` when it
/// is one. `usual_port` is the protocol's port, for the hint when the port is missing.
pub(crate) fn host_port_problem(address: &str, usual_port: u16) -> Option<String> {
    if let Some((scheme, rest)) = address.split_once("://") {
        return Some(format!(
            "`{address}` has a scheme: write `{rest}` without `{scheme}://` (the protocol follows from the section{})",
            if scheme.starts_with("rtu") {
                " and `transport = \"rtu_over_tcp\"`"
            } else {
                ""
            }
        ));
    }
    // `[::1]:502`: an IPv6 address in brackets.
    let (host, port) = match address.strip_prefix('[') {
        Some(rest) => match rest.split_once("]:") {
            Some((host, port)) if host.parse::<std::net::Ipv6Addr>().is_ok() => (host, Some(port)),
            _ => {
                return Some(format!(
                    "`{address}` is not an IPv6 address and port: write it as `[fd00::10]:{usual_port}`"
                ));
            }
        },
        None => match address.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (address, None),
        },
    };
    let Some(port) = port else {
        return Some(format!(
            "`{address}` has no port: write `{address}:{usual_port}` (the protocol's usual port) or the port it listens on"
        ));
    };
    if port.parse::<u16>().is_ok_and(|p| p > 0) {
        // Fall through to the host.
    } else {
        return Some(format!(
            "`{address}`: the port `{port}` is not a number from 1 to 65535"
        ));
    }
    if host.is_empty() {
        return Some(format!(
            "`{address}` has no host: write `192.168.1.20:{port}` or a host name"
        ));
    }
    if address.starts_with('[') {
        return None;
    }
    // Only digits and dots: meant as an IPv4 address, so it must be one (a name never is).
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        if host.parse::<std::net::Ipv4Addr>().is_err() {
            return Some(format!(
                "`{host}` is not an IPv4 address: four numbers from 0 to 255, like `192.168.1.20`"
            ));
        }
        return None;
    }
    let name_ok = host.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    if !name_ok {
        return Some(format!(
            "`{host}` is neither an IP address nor a host name (letters, digits, `-` and dots)"
        ));
    }
    None
}

/// The path serde_ignored reports, as segments. `Some` and newtype wrappers add no step.
/// The path of the innermost value under `value` whose span holds `at`.
fn innermost_key_at(value: &Spanned<DeValue<'_>>, at: usize) -> Vec<Seg> {
    let mut path = Vec::new();
    let mut node = value;
    loop {
        let next = match node.get_ref() {
            DeValue::Table(t) => t
                .iter()
                .find(|(_, v)| v.span().contains(&at))
                .map(|(k, v)| (key(k.get_ref()), v)),
            DeValue::Array(a) => a
                .iter()
                .enumerate()
                .find(|(_, v)| v.span().contains(&at))
                .map(|(i, v)| (Seg::Index(i), v)),
            _ => None,
        };
        let Some((seg, v)) = next else { return path };
        path.push(seg);
        node = v;
    }
}

/// `path` up to its last key: an array element is set aside with its whole array, so that the
/// indices of the elements that are read stay those of the document.
fn holding_key(path: &[Seg]) -> Vec<Seg> {
    let end = path
        .iter()
        .rposition(|s| matches!(s, Seg::Key(_)))
        .map_or(0, |i| i + 1);
    path[..end].to_vec()
}

/// The path of the table that holds the key at `path`.
fn parent_table(path: &[Seg]) -> Option<Vec<Seg>> {
    path.split_last().map(|(_, parent)| parent.to_vec())
}

/// The value at `path` under `value`.
fn node_at<'v, 'i>(
    value: &'v Spanned<DeValue<'i>>,
    path: &[Seg],
) -> Option<&'v Spanned<DeValue<'i>>> {
    let mut node = value;
    for seg in path {
        node = match (seg, node.get_ref()) {
            (Seg::Key(k), DeValue::Table(t)) => {
                t.iter()
                    .find(|(name, _)| name.get_ref().as_ref() as &str == k.as_str())?
                    .1
            }
            (Seg::Index(i), DeValue::Array(a)) => a.get(*i)?,
            _ => return None,
        };
    }
    Some(node)
}

/// Removes the key at `path` (which ends with a key) from `value`.
fn remove_at(value: &mut Spanned<DeValue<'_>>, path: &[Seg]) -> bool {
    let Some((Seg::Key(last), parents)) = path.split_last() else {
        return false;
    };
    let mut node = value;
    for seg in parents {
        let next = match (seg, node.get_mut()) {
            (Seg::Key(k), DeValue::Table(t)) => t
                .iter_mut()
                .find(|(name, _)| name.get_ref().as_ref() as &str == k.as_str())
                .map(|(_, v)| v),
            (Seg::Index(i), DeValue::Array(a)) => a.get_mut(*i),
            _ => None,
        };
        let Some(next) = next else { return false };
        node = next;
    }
    let DeValue::Table(t) = node.get_mut() else {
        return false;
    };
    let before = t.len();
    let entries = std::mem::take(t);
    *t = entries
        .into_iter()
        .filter(|(name, _)| name.get_ref().as_ref() as &str != last.as_str())
        .collect();
    t.len() < before
}

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

/// The span of what `path` names inside `value` (the key of a table entry, an array element),
/// or of `value` itself when the path leads nowhere.
pub(crate) fn span_in(value: &Spanned<DeValue<'_>>, path: &[Seg]) -> Range<usize> {
    key_span(value, path).unwrap_or_else(|| value.span())
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
