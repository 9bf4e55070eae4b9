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
//! The file is read as a stream, one record at a time into the same buffers, straight into
//! [`OpcuaNode`]s: a 100,000-row file costs the nodes it makes and a line number each (see
//! [`FileRows`]), which lets every later check name the file and line of a node.

use std::io::BufRead;
use std::path::Path;

use super::config::{Deadband, OpcuaNode};
use super::node_id::NodeAddress;
use crate::model::SignalType;

/// The columns a nodes file may have.
pub const COLUMNS: &[&str] = &[
    "node", "signal", "type", "index", "deadband", "machine", "meter",
];

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

/// Reads the nodes file `path` (named `shown` in messages) and appends its rows to `nodes`.
/// Every mistake comes back as a message naming the file, line and column; the rows without
/// one are appended all the same. A file that cannot be read is one mistake.
pub fn read_into(
    path: &Path,
    shown: &str,
    nodes: &mut Vec<OpcuaNode>,
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
        nodes,
        &mut rows,
        &mut errors,
    );
    rows.lines.shrink_to_fit();
    rows.failed = !errors.is_empty();
    (rows, errors)
}

/// [`read_into`] on any reader.
fn read_from(
    input: impl BufRead,
    shown: &str,
    nodes: &mut Vec<OpcuaNode>,
    rows: &mut FileRows,
    errors: &mut Vec<String>,
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
    };
    let mut text = String::new();
    let mut fields = Vec::new();
    // The header: which column is which.
    let columns = loop {
        match reader.next(&mut text, &mut fields) {
            Ok(Some(line)) => match header(&text, &fields) {
                Ok(columns) => break columns,
                Err(e) => {
                    errors.push(format!("{shown} line {line}: {e}"));
                    return;
                }
            },
            Ok(None) => {
                errors.push(format!(
                    "nodes_file `{shown}` is empty: its first line names the columns ({}; node \
                     and signal required)",
                    COLUMNS.join(", ")
                ));
                return;
            }
            Err((line, e)) => {
                errors.push(format!("{shown} line {line}: {e}"));
                return;
            }
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
        match row(&columns, &text, &fields) {
            Ok(node) => {
                nodes.push(node);
                rows.lines.push(line);
            }
            Err(problems) => {
                for (column, e) in problems {
                    report(errors, format!("{shown} line {line}, column `{column}`: {e}"));
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

/// The column names of the header record, as indices into [`COLUMNS`].
fn header(text: &str, fields: &[Field]) -> Result<Vec<usize>, String> {
    let mut columns = Vec::with_capacity(fields.len());
    for f in fields {
        let name = text[f.clone()].trim().to_ascii_lowercase();
        let Some(c) = COLUMNS.iter().position(|c| *c == name) else {
            let hint = crate::config::suggest(&name, COLUMNS)
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            return Err(format!(
                "unknown column `{name}`{hint}; the columns are {}",
                COLUMNS.join(", ")
            ));
        };
        if columns.contains(&c) {
            return Err(format!("column `{name}` is named twice"));
        }
        columns.push(c);
    }
    for required in [0, 1] {
        if !columns.contains(&required) {
            return Err(format!(
                "the header has no column `{}`: the first line names the columns, `node` and \
                 `signal` required (e.g. node,signal,type)",
                COLUMNS[required]
            ));
        }
    }
    Ok(columns)
}

/// One row as a node, or every mistake in it with its column's name.
fn row(
    columns: &[usize],
    text: &str,
    fields: &[Field],
) -> Result<OpcuaNode, Vec<(&'static str, String)>> {
    let mut problems = Vec::new();
    let mut node = None;
    let mut signal = None;
    let mut value_type = SignalType::default();
    let mut index = None;
    let mut deadband = None;
    let mut machine = None;
    let mut meter = None;
    for (&c, f) in columns.iter().zip(fields) {
        let cell = &text[f.clone()];
        let name = COLUMNS[c];
        if cell.is_empty() {
            if c <= 1 {
                problems.push((name, format!("is empty: every row needs a {name}")));
            }
            continue;
        }
        match name {
            "node" => match NodeAddress::parse(cell) {
                Ok(a) => node = Some(a),
                Err(e) => problems.push((name, e.to_string())),
            },
            "signal" => signal = Some(cell.to_string()),
            "type" => match cell {
                "float" => value_type = SignalType::Float,
                "int" => value_type = SignalType::Int,
                "bool" => value_type = SignalType::Bool,
                "string" => value_type = SignalType::String,
                other => problems.push((
                    name,
                    format!("unknown type `{other}` (float, int, bool, string)"),
                )),
            },
            "index" => match cell.parse::<u32>() {
                Ok(i) => index = Some(i),
                Err(_) => problems.push((
                    name,
                    format!("`{cell}` is not an array element's index (0, 1, 2 …)"),
                )),
            },
            "deadband" => {
                let (number, percent) = match cell.strip_suffix('%') {
                    Some(n) => (n.trim_end(), true),
                    None => (cell, false),
                };
                match number.parse::<f64>() {
                    Ok(x) if percent => deadband = Some(Deadband::Percent(x)),
                    Ok(x) => deadband = Some(Deadband::Absolute(x)),
                    Err(_) => problems.push((
                        name,
                        format!(
                            "`{cell}` is not a deadband: write an absolute change (`0.5`) or a \
                             percentage of the node's EURange (`2%`)"
                        ),
                    )),
                }
            }
            "machine" => machine = Some(cell.to_string()),
            _ => meter = Some(cell.to_string()),
        }
    }
    match (node, signal) {
        (Some(node), Some(signal)) if problems.is_empty() => Ok(OpcuaNode {
            node,
            signal,
            value_type,
            index,
            deadband,
            machine,
            meter,
        }),
        _ => Err(problems),
    }
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
}

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
        match self.input.read_line(&mut self.raw) {
            Ok(0) => Ok(false),
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
                    "not UTF-8 text: save the file as UTF-8 (Excel: Save As, \"CSV UTF-8\")"
                        .into(),
                ))
            }
            Err(e) => Err((self.line + 1, format!("cannot read on: {e}"))),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> (Vec<OpcuaNode>, FileRows, Vec<String>) {
        let mut nodes = Vec::new();
        let mut rows = FileRows {
            file: "tags/lathes.csv".into(),
            ..FileRows::default()
        };
        let mut errors = Vec::new();
        read_from(
            text.as_bytes(),
            "tags/lathes.csv",
            &mut nodes,
            &mut rows,
            &mut errors,
        );
        (nodes, rows, errors)
    }

    #[test]
    fn a_good_file_gives_its_nodes_in_any_column_order() {
        let (nodes, rows, errors) = read(
            "\u{feff}Signal,node,type,index,deadband,machine,meter\r\n\
             spindle_speed,\"ns=2;s=/Channel/Spindle/actSpeed\",float,,5,lathe01,\r\n\
             \r\n\
             axis_load, ns=2;s=load ,int,2,2.5%,,\r\n\
             power_kw,nsu=urn:meter;i=7,,,,,main\r\n",
        );
        assert_eq!(errors, Vec::<String>::new());
        assert_eq!(rows.lines, [2, 4, 5]);
        assert_eq!(nodes.len(), 3);
        assert_eq!(nodes[0].node.to_string(), "ns=2;s=/Channel/Spindle/actSpeed");
        assert_eq!(nodes[0].signal, "spindle_speed");
        assert_eq!(nodes[0].value_type, SignalType::Float);
        assert_eq!(nodes[0].deadband, Some(Deadband::Absolute(5.0)));
        assert_eq!(nodes[0].machine.as_deref(), Some("lathe01"));
        assert_eq!(nodes[0].meter, None);
        // Unquoted cells are trimmed.
        assert_eq!(nodes[1].node.to_string(), "ns=2;s=load");
        assert_eq!(nodes[1].value_type, SignalType::Int);
        assert_eq!(nodes[1].index, Some(2));
        assert_eq!(nodes[1].deadband, Some(Deadband::Percent(2.5)));
        assert_eq!(nodes[1].machine, None);
        // Empty cells are keys not given: the default type, no index, no deadband.
        assert_eq!(nodes[2].value_type, SignalType::Float);
        assert_eq!(nodes[2].index, None);
        assert_eq!(nodes[2].meter.as_deref(), Some("main"));
    }

    #[test]
    fn quoted_node_ids_keep_separators_quotes_and_line_breaks() {
        let (nodes, rows, errors) = read(
            "node,signal\n\
             \"ns=2;s=a,b\",one\n\
             \"ns=2;s=say \"\"hi\"\"\" , two\n\
             \"ns=2;s=two\nlines\",three\n\
             ns=2;s=x,four\n",
        );
        assert_eq!(errors, Vec::<String>::new());
        let ids: Vec<String> = nodes.iter().map(|n| n.node.to_string()).collect();
        assert_eq!(
            ids,
            ["ns=2;s=a,b", "ns=2;s=say \"hi\"", "ns=2;s=two\nlines", "ns=2;s=x"]
        );
        assert_eq!(nodes[1].signal, "two");
        // The row after the two-line one starts on line 6.
        assert_eq!(rows.lines, [2, 3, 4, 6]);
    }

    #[test]
    fn semicolons_separate_when_the_header_has_no_comma() {
        let (nodes, _, errors) = read("node;signal;type\n\"ns=2;s=A\";a;bool\n");
        assert_eq!(errors, Vec::<String>::new());
        assert_eq!(nodes[0].node.to_string(), "ns=2;s=A");
        assert_eq!(nodes[0].value_type, SignalType::Bool);
    }

    #[test]
    fn every_bad_row_is_named_by_line_and_column_and_the_good_rows_stay() {
        let (nodes, rows, errors) = read(
            "node,signal,type,index,deadband\n\
             ns=2;s=A,a,flaot,,\n\
             ns=2;q=B,b,,,\n\
             ,c,,,\n\
             ns=2;s=D,,,x,\n\
             ns=2;s=E,e,,,much\n\
             ns=2;s=F,f\n\
             ns=2;s=G,g,int,3,1%\n\
             ns=2;s=\"H\",h,,,\n\
             \"ns=2;s=I\"x,i,,,\n\
             ns=2;s=J,j,,,\n\
             \"ns=2;s=K,k,,,\n",
        );
        let want = [
            "tags/lathes.csv line 2, column `type`: unknown type `flaot` (float, int, bool, string)",
            "tags/lathes.csv line 3, column `node`: unknown identifier type `q=`: use `i=` (numeric), `s=` (string), `g=` (GUID) or `b=` (opaque, base64)",
            "tags/lathes.csv line 4, column `node`: is empty: every row needs a node",
            "tags/lathes.csv line 5, column `signal`: is empty: every row needs a signal",
            "tags/lathes.csv line 5, column `index`: `x` is not an array element's index (0, 1, 2 …)",
            "tags/lathes.csv line 6, column `deadband`: `much` is not a deadband: write an absolute change (`0.5`) or a percentage of the node's EURange (`2%`)",
            "tags/lathes.csv line 7: 2 fields where the header names 5 columns (a field holding `,` is quoted: \"ns=2;s=a,b\")",
            "tags/lathes.csv line 9: a `\"` inside a field that does not start with one: quote the whole field and double the quote inside (\"ns=2;s=a\"\"b\")",
            "tags/lathes.csv line 10: `x` after a quoted field's closing quote: a quote inside a quoted field is written twice (\"ns=2;s=a\"\"b\")",
            "tags/lathes.csv line 12: a quoted field opened on this line is not closed by the end of the file: close it with `\"`",
        ];
        assert_eq!(errors, want);
        let signals: Vec<&str> = nodes.iter().map(|n| n.signal.as_str()).collect();
        assert_eq!(signals, ["g", "j"]);
        assert_eq!(rows.lines, [8, 11]);
    }

    #[test]
    fn a_bad_header_stops_the_file() {
        let one = |text: &str| read(text).2;
        assert_eq!(
            one("node,signal,typ\nns=2;s=A,a,int\n"),
            ["tags/lathes.csv line 1: unknown column `typ` (did you mean `type`?); the columns are node, signal, type, index, deadband, machine, meter"]
        );
        assert_eq!(
            one("node,type\n"),
            ["tags/lathes.csv line 1: the header has no column `signal`: the first line names the columns, `node` and `signal` required (e.g. node,signal,type)"]
        );
        assert_eq!(
            one("node,signal,node\n"),
            ["tags/lathes.csv line 1: column `node` is named twice"]
        );
        assert_eq!(
            one("\n\n"),
            ["nodes_file `tags/lathes.csv` is empty: its first line names the columns (node, signal, type, index, deadband, machine, meter; node and signal required)"]
        );
    }

    #[test]
    fn text_that_is_not_utf8_is_named() {
        let mut nodes = Vec::new();
        let mut rows = FileRows::default();
        let mut errors = Vec::new();
        read_from(
            &b"node,signal\nns=2;s=\xc4\xe3,a\n"[..],
            "t.csv",
            &mut nodes,
            &mut rows,
            &mut errors,
        );
        assert_eq!(
            errors,
            ["t.csv line 2: not UTF-8 text: save the file as UTF-8 (Excel: Save As, \"CSV UTF-8\")"]
        );
    }

    #[test]
    fn many_mistakes_are_counted_beyond_the_first_twenty() {
        let text = format!("node,signal,type\n{}", "ns=2;s=A,a,x\n".repeat(25));
        let errors = read(&text).2;
        assert_eq!(errors.len(), 21);
        assert_eq!(errors[20], "tags/lathes.csv: 5 more mistakes not shown");
    }

    #[test]
    fn a_missing_file_is_one_clear_mistake() {
        let mut nodes = Vec::new();
        let (_, errors) = read_into(Path::new("/nonexistent/tags.csv"), "tags.csv", &mut nodes);
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].starts_with("cannot read nodes_file `tags.csv` (/nonexistent/tags.csv): ")
                && errors[0].ends_with("the path is relative to the config file's directory"),
            "{errors:?}"
        );
    }
}
