//! InfluxDB line protocol, on the ground floor: the format every record has on its way to the
//! store, and the names it is written with.
//!
//! - [`encode`]: [`LineBuilder`], [`tag_prefix`], [`Precision`] and [`rescale_timestamps`]. The
//!   engine and the Modbus health lines write with it; the sinks rescale with it.
//! - [`parse`]: reads a line's measurement and tags back ([`parse::parse_key`]), for the county
//!   ingest.
//! - [`contract`]: every measurement, tag and field name of the data contract with the store
//!   (DESIGN.md, "Data contract with the store"), so that "where is a line written, and with
//!   which names?" has one answer: where these names are used.
//!
//! Written by hand: it is a few escaping rules, and owning them keeps every byte that reaches
//! the spool under our control (a batch must be resent byte for byte).
//!
//! `measurement,tag=value field=1i,count=7u,ratio=0.5,ok=true,text="a \"b\"" 1700000000000000000`
//!
//! The rules, from InfluxDB's line-protocol reference, and what the encoder does where the
//! protocol has no way to say something:
//!
//! | element | escaped with a backslash | notes |
//! |---|---|---|
//! | measurement | `,` and space | must not be empty or start with `#` (a comment line) |
//! | tag key, tag value, field key | `,`, `=` and space | an empty tag key or value is left out (the stores reject it); an empty field key leaves the field out |
//! | string field value | `"` and `\` | always quoted |
//!
//! - A backslash in a name is literal unless it stands before a character the parser treats as
//!   an escape (a special character of that element, or another backslash); there it is
//!   doubled. InfluxDB 2/3 and VictoriaMetrics read the result back exactly; InfluxDB 1.x keeps
//!   doubled backslashes doubled, so only names with `\\` or `\,`-like pairs differ there.
//! - A name cannot end in a backslash (it would escape the separator after it, and InfluxDB 2
//!   rejects the line), so trailing backslashes are removed.
//! - Line protocol has no escape for line breaks or other control characters in names: they
//!   become spaces (and are then escaped as spaces). In string values `\n` and `\r` become
//!   spaces too, because VictoriaMetrics splits a body at every line break.
//! - Integers are `i64` with an `i` suffix, unsigned `u64` with `u` (InfluxDB 2/3 and
//!   VictoriaMetrics; InfluxDB 1.x takes them only when built with unsigned support), floats
//!   in Rust's shortest round-trip form (`1.5`, `1e-7`); a NaN or infinite float has no
//!   line-protocol form and leaves the field out. Booleans are `true` / `false`.
//! - Timestamps are Unix time in a [`Precision`]; the spool holds nanoseconds and each output
//!   rescales to its own precision when it sends ([`rescale_timestamps`]).

pub mod contract;
pub mod encode;
pub mod parse;

pub use encode::{LineBuilder, Precision, rescale_timestamps, tag_prefix};
