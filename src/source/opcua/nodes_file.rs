//! `nodes_file`: a group's nodes from a CSV tag list, as engineering tools, KEPServerEX or
//! Neuron export them, instead of one `[[opcua.group.node]]` table per node.
//!
//! ```csv
//! node,signal,type,index,deadband,machine,meter
//! "ns=2;s=/Channel/Spindle/actSpeed",spindle_speed,float,,5,lathe01,
//! ns=2;s=Power,power_kw,float,,2%,,main
//! ```
//!
//! The first record names the columns, in any order (case does not matter): `node` and `signal`
//! are required, `type`, `index`, `deadband`, `machine` and `meter` optional, each meaning what
//! the key of that name means in `[[opcua.group.node]]`; `deadband` is an absolute change
//! (`5`) or a percentage of the node's EURange (`2%`). An empty cell is a key not given. Fields
//! are separated by `,` (or by `;` when the header has no `,`); a field holding the separator,
//! a quote or a line break is quoted (`"ns=2;s=a,b"`), a quote inside it doubled. Blank lines
//! are skipped; a UTF-8 byte order mark is allowed.
//!
//! The file is read as a stream, one record at a time into the same buffers, each row handed
//! as its cells to a function that makes the node (`config::node_of_row`): a 100,000-row file
//! costs the nodes it makes and a line number each (see [`FileRows`]), which lets every later
//! check name the file and line of a node. This module knows CSV, not nodes.
//!
//! # Why not the `csv` crate
//!
//! BurntSushi's `csv` (1.4.0, Unlicense/MIT, both allowed by `deny.toml`) would add two crates
//! (`csv`, `csv-core`; its `itoa`, `ryu`, `serde` and `memchr` are in the lock already) and
//! would do: it keeps each record's line too. The reader here is some 200 lines and does what
//! the crate would have to be wrapped for: a bound on a line and a record (the crate reads a
//! record without line breaks whole: `/dev/zero` named by mistake), `;` chosen from the header
//! the way spreadsheets export, and every mistake in this project's words with file, line and
//! column (the crate's "found record with 2 fields, but the previous record has 5 fields"
//! names neither the column nor what to do).

use std::io::{BufRead, Read};
use std::path::Path;

/// The columns a file may have, and how many of the first are required.
#[derive(Debug, Clone, Copy)]
pub struct Columns {
    pub names: &'static [&'static str],
    pub required: usize,
}

/// A row's mistakes, each with the name of its column.
pub type RowMistakes = Vec<(&'static str, String)>;

/// Mistakes reported per file before the rest are only counted.
const MAX_REPORTED: usize = 20;

/// Which of a group's nodes came from its nodes file, and the line each started on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileRows {
    /// The file as the config names it.
    pub file: String,
    /// The index in the group's nodes of the file's first row: the file's rows follow the
    /// group's `[[opcua.group.node]]` tables.
    pub first: usize,
    /// The line (1-based) each row starts on.
    pub lines: Vec<u32>,
    /// The file had mistakes (reported where it is named): some rows may be missing.
    pub failed: bool,
}

impl FileRows {
    /// The line of the group's node `n`, when it came from the file.
    pub fn line_of(&self, n: usize) -> Option<u32> {
        n.checked_sub(self.first)
            .and_then(|i| self.lines.get(i).copied())
    }
}

/// Reads the nodes file `path` (named `shown` in messages) with `columns`, and appends what
/// `row` makes of each row's cells (one per column name, `None` when empty or absent) to
/// `nodes`. Every mistake comes back as a message naming the file, line and column; the rows
/// without one are appended all the same. A file that cannot be read is one mistake.
pub fn read_into<T>(
    path: &Path,
    shown: &str,
    columns: Columns,
    nodes: &mut Vec<T>,
    row: impl FnMut(&[Option<&str>]) -> Result<T, RowMistakes>,
) -> (FileRows, Vec<String>) {
    let mut rows = FileRows {
        file: shown.to_string(),
        first: nodes.len(),
        lines: Vec::new(),
        failed: false,
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => {
            rows.failed = true;
            return (
                rows,
                vec![format!(
                    "cannot read nodes_file `{shown}` ({}): {e}; the path is relative to the \
                     config file's directory",
                    path.display()
                )],
            );
        }
    };
    let mut errors = Vec::new();
    read_from(
        std::io::BufReader::new(file),
        shown,
        columns,
        nodes,
        &mut rows,
        &mut errors,
        row,
    );
    rows.lines.shrink_to_fit();
    rows.failed = !errors.is_empty();
    (rows, errors)
}

/// [`read_into`] on any reader.
pub(crate) fn read_from<T>(
    input: impl BufRead,
    shown: &str,
    spec: Columns,
    nodes: &mut Vec<T>,
    rows: &mut FileRows,
    errors: &mut Vec<String>,
    mut row: impl FnMut(&[Option<&str>]) -> Result<T, RowMistakes>,
) {
    let mut more = 0usize;
    let mut report = |errors: &mut Vec<String>, message: String| {
        if errors.len() < MAX_REPORTED {
            errors.push(message);
        } else {
            more += 1;
        }
    };
    let mut reader = Records {
        input,
        line: 0,
        raw: String::new(),
        separator: None,
        stopped: false,
    };
    let mut text = String::new();
    let mut fields = Vec::new();
    // The header: which column is which.
    let columns = match reader.next(&mut text, &mut fields) {
        Ok(Some(line)) => match header(&text, &fields, spec) {
            Ok(columns) => columns,
            Err(e) => {
                errors.push(format!("{shown} line {line}: {e}"));
                return;
            }
        },
        Ok(None) => {
            errors.push(format!(
                "nodes_file `{shown}` is empty: its first line names the columns ({}; {} \
                 required)",
                spec.names.join(", "),
                spec.names[..spec.required].join(" and ")
            ));
            return;
        }
        Err((line, e)) => {
            errors.push(format!("{shown} line {line}: {e}"));
            return;
        }
    };
    loop {
        let line = match reader.next(&mut text, &mut fields) {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err((line, e)) => {
                report(errors, format!("{shown} line {line}: {e}"));
                continue;
            }
        };
        if fields.len() != columns.len() {
            report(
                errors,
                format!(
                    "{shown} line {line}: {} field{} where the header names {} columns (a field \
                     holding `{}` is quoted: \"ns=2;s=a{}b\")",
                    fields.len(),
                    if fields.len() == 1 { "" } else { "s" },
                    columns.len(),
                    reader.separator(),
                    reader.separator()
                ),
            );
            continue;
        }
        // The cells by column name, borrowed from this record's text.
        // (A few pointers a row; the text stays in the one record buffer.)
        let mut by_name: Vec<Option<&str>> = vec![None; spec.names.len()];
        for (&c, f) in columns.iter().zip(&fields) {
            let cell = &text[f.clone()];
            by_name[c] = (!cell.is_empty()).then_some(cell);
        }
        match row(&by_name) {
            Ok(node) => {
                nodes.push(node);
                rows.lines.push(line);
            }
            Err(problems) => {
                for (column, e) in problems {
                    report(
                        errors,
                        format!("{shown} line {line}, column `{column}`: {e}"),
                    );
                }
            }
        }
    }
    if more > 0 {
        errors.push(format!(
            "{shown}: {more} more mistake{} not shown",
            if more == 1 { "" } else { "s" }
        ));
    }
}

/// The column names of the header record, as indices into `spec.names`.
fn header(text: &str, fields: &[Field], spec: Columns) -> Result<Vec<usize>, String> {
    let mut columns = Vec::with_capacity(fields.len());
    for f in fields {
        let name = text[f.clone()].trim().to_ascii_lowercase();
        let Some(c) = spec.names.iter().position(|c| *c == name) else {
            let hint = crate::config::suggest(&name, spec.names)
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            return Err(format!(
                "unknown column `{name}`{hint}; the columns are {}",
                spec.names.join(", ")
            ));
        };
        if columns.contains(&c) {
            return Err(format!("column `{name}` is named twice"));
        }
        columns.push(c);
    }
    for required in 0..spec.required {
        if !columns.contains(&required) {
            let names: Vec<String> = spec.names[..spec.required]
                .iter()
                .map(|n| format!("`{n}`"))
                .collect();
            return Err(format!(
                "the header has no column `{}`: the first line names the columns, {} required \
                 (e.g. {})",
                spec.names[required],
                names.join(" and "),
                spec.names[..=spec.required.min(spec.names.len() - 1)].join(",")
            ));
        }
    }
    Ok(columns)
}

/// One field of a record: where its text is in the record's text.
type Field = std::ops::Range<usize>;

/// A CSV reader (RFC 4180, with `;` as the alternative separator) that keeps the line each
/// record starts on and reuses its buffers.
struct Records<R> {
    input: R,
    /// Lines read so far.
    line: u32,
    /// The line being read.
    raw: String,
    /// `,` or `;`, chosen at the first record.
    separator: Option<char>,
    /// Reading stopped for good (the file could not be read on, or is not a tag list): the
    /// end of the input from now on.
    stopped: bool,
}

/// The longest line and the longest record (a quoted field may span lines) read: a tag list's
/// are a few hundred bytes; a file without line breaks (`/dev/zero`, a binary named by
/// mistake) would otherwise be read whole into memory.
const MAX_LINE: u64 = 64 * 1024;
const MAX_RECORD: usize = 1024 * 1024;

/// Where a record is in the field being read.
#[derive(Clone, Copy, PartialEq, Eq)]
enum At {
    /// Before the field's first character (spaces skipped).
    Start,
    Unquoted,
    Quoted,
    /// A `"` in a quoted field: its end, or the first of two.
    QuoteInQuoted,
    /// After a quoted field's closing quote (spaces skipped).
    AfterQuoted,
}

impl<R: BufRead> Records<R> {
    fn separator(&self) -> char {
        self.separator.unwrap_or(',')
    }

    /// Reads one physical line into `raw`; false at the end of the input.
    fn read_line(&mut self) -> Result<bool, (u32, String)> {
        self.raw.clear();
        if self.stopped {
            return Ok(false);
        }
        match (&mut self.input).take(MAX_LINE).read_line(&mut self.raw) {
            Ok(0) => Ok(false),
            Ok(n) if n as u64 == MAX_LINE && !self.raw.ends_with('\n') => {
                self.stopped = true;
                Err((
                    self.line + 1,
                    format!(
                        "a line longer than {} KiB: not a tag list (one node a line); reading \
                         stopped here",
                        MAX_LINE / 1024
                    ),
                ))
            }
            Ok(_) => {
                self.line += 1;
                if self.line == 1
                    && let Some(rest) = self.raw.strip_prefix('\u{feff}')
                {
                    self.raw = rest.to_string();
                }
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                // The line was read all the same: the next one is read next.
                self.line += 1;
                Err((
                    self.line,
                    "not UTF-8 text: save the file as UTF-8 (Excel: Save As, \"CSV UTF-8\")".into(),
                ))
            }
            Err(e) => {
                self.stopped = true;
                Err((self.line + 1, format!("cannot read on: {e}")))
            }
        }
    }

    /// Reads the next record into `text` (its fields' text one after another) and `fields`;
    /// the line it starts on, or `None` at the end. A mistake comes with its line; the reader
    /// goes on at the line after it.
    fn next(
        &mut self,
        text: &mut String,
        fields: &mut Vec<Field>,
    ) -> Result<Option<u32>, (u32, String)> {
        text.clear();
        fields.clear();
        loop {
            if !self.read_line()? {
                return Ok(None);
            }
            if !self.raw.trim().is_empty() {
                break;
            }
        }
        let start = self.line;
        if self.separator.is_none() {
            let semicolons = !self.raw.contains(',') && self.raw.contains(';');
            self.separator = Some(if semicolons { ';' } else { ',' });
        }
        let sep = self.separator();
        let mut at = At::Start;
        let mut field_start = 0;
        let end = |text: &mut String, fields: &mut Vec<Field>, from: &mut usize, at: At| {
            if at == At::Unquoted {
                let kept = text[*from..].trim_end().len();
                text.truncate(*from + kept);
            }
            fields.push(*from..text.len());
            *from = text.len();
        };
        loop {
            let body = self.raw.strip_suffix('\n').unwrap_or(&self.raw);
            let body = body.strip_suffix('\r').unwrap_or(body);
            for c in body.chars() {
                at = match (at, c) {
                    (At::Start | At::AfterQuoted, ' ' | '\t') => at,
                    (At::Start, '"') => At::Quoted,
                    (At::Start | At::Unquoted | At::AfterQuoted | At::QuoteInQuoted, c)
                        if c == sep =>
                    {
                        end(text, fields, &mut field_start, at);
                        At::Start
                    }
                    (At::Unquoted, '"') => {
                        return Err((
                            self.line,
                            "a `\"` inside a field that does not start with one: quote the \
                             whole field and double the quote inside (\"ns=2;s=a\"\"b\")"
                                .into(),
                        ));
                    }
                    (At::Start | At::Unquoted, c) => {
                        text.push(c);
                        At::Unquoted
                    }
                    (At::Quoted, '"') => At::QuoteInQuoted,
                    (At::Quoted, c) => {
                        text.push(c);
                        At::Quoted
                    }
                    (At::QuoteInQuoted, '"') => {
                        text.push('"');
                        At::Quoted
                    }
                    (At::QuoteInQuoted, ' ' | '\t') => At::AfterQuoted,
                    (At::QuoteInQuoted | At::AfterQuoted, c) => {
                        return Err((
                            self.line,
                            format!(
                                "`{c}` after a quoted field's closing quote: a quote inside a \
                                 quoted field is written twice (\"ns=2;s=a\"\"b\")"
                            ),
                        ));
                    }
                };
            }
            if at != At::Quoted {
                break;
            }
            // A line break inside a quoted field is part of it.
            if text.len() > MAX_RECORD {
                self.stopped = true;
                return Err((
                    start,
                    format!(
                        "a quoted field opened on this line runs on past {} MiB: close it with \
                         `\"`; reading stopped here",
                        MAX_RECORD / (1024 * 1024)
                    ),
                ));
            }
            text.push('\n');
            if !self.read_line()? {
                return Err((
                    start,
                    "a quoted field opened on this line is not closed by the end of the file: \
                     close it with `\"`"
                        .into(),
                ));
            }
        }
        end(text, fields, &mut field_start, at);
        Ok(Some(start))
    }
}
