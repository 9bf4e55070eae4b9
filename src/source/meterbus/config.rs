//! The bus settings `[[dlt645]]` and `[[cjt188]]` share, read from the top level of either
//! section beside its own keys (see `config::composite`): where the meters hang (an RS-485
//! port or a serial server's TCP port), the line settings, and the timing of the polls.

use std::time::Duration;

use serde::{Deserialize, Deserializer};
use toml::Spanned;
use toml::de::DeTable;

use crate::config::{Checker, Seg, duration, host_port_problem, key};
pub use crate::source::modbus::config::Parity;

/// A bus of meters: one port, one request at a time.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Bus {
    /// The serial device the RS-485 adapter is, e.g. `/dev/ttyUSB0`. Give `port` or `tcp`.
    #[serde(default)]
    pub port: Option<String>,
    /// `host:port` of a serial server (串口服务器) in transparent mode (TCP server, raw bytes
    /// passed to the RS-485 side unchanged). Give `port` or `tcp`.
    #[serde(default)]
    pub tcp: Option<String>,
    /// Line speed in bit/s, for `port` (a serial server sets its own). Default 2400, what
    /// DL/T 645-2007 and CJ/T 188 meters leave the factory with.
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// 7 or 8 (default 8).
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    /// `even` (default, both standards'), `none` or `odd`.
    #[serde(default = "default_parity")]
    pub parity: Parity,
    /// 1 (default) or 2.
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    /// How often each meter on the bus is read (default 60s).
    #[serde(default = "default_poll", deserialize_with = "duration")]
    pub poll: Duration,
    /// How long the agent waits for a meter's answer to one request (default 2s: at 2400
    /// baud a long answer alone takes a third of a second).
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Silence kept on the bus between an answer and the next request (default 100ms): some
    /// meters need it to turn their line driver round.
    #[serde(default = "default_delay", deserialize_with = "duration")]
    pub delay: Duration,
}

impl Default for Bus {
    fn default() -> Self {
        Bus {
            port: None,
            tcp: None,
            baud: default_baud(),
            data_bits: default_data_bits(),
            parity: default_parity(),
            stop_bits: default_stop_bits(),
            poll: default_poll(),
            timeout: default_timeout(),
            delay: default_delay(),
        }
    }
}

fn default_baud() -> u32 {
    2400
}
fn default_data_bits() -> u8 {
    8
}
fn default_parity() -> Parity {
    Parity::Even
}
fn default_stop_bits() -> u8 {
    1
}
fn default_poll() -> Duration {
    Duration::from_secs(60)
}
fn default_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_delay() -> Duration {
    Duration::from_millis(100)
}

impl Bus {
    /// Where the bus is, for logs: `tcp 10.0.0.5:8899` or `serial /dev/ttyUSB0 2400 8E1`.
    pub fn describe(&self) -> String {
        match (&self.tcp, &self.port) {
            (Some(tcp), _) => format!("tcp {tcp}"),
            (None, Some(port)) => format!(
                "serial {port} {} {}{}{}",
                self.baud,
                self.data_bits,
                match self.parity {
                    Parity::None => 'N',
                    Parity::Even => 'E',
                    Parity::Odd => 'O',
                },
                self.stop_bits
            ),
            (None, None) => "no port".to_string(),
        }
    }

    /// What is wrong with the settings: (key, message) pairs.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        match (&self.port, &self.tcp) {
            (None, None) => out.push((
                "id",
                "a bus needs `port = \"/dev/ttyUSB0\"` (an RS-485 adapter) or `tcp = \
                 \"host:port\"` (a serial server in transparent mode)"
                    .to_string(),
            )),
            (Some(_), Some(_)) => out.push((
                "tcp",
                "give `port` or `tcp`, not both: a bus is one RS-485 line".to_string(),
            )),
            (Some(port), None) if port.trim().is_empty() => {
                out.push(("port", "`port` is empty".to_string()))
            }
            (None, Some(tcp)) => {
                // A serial server's TCP port has no standard number; 8899 is a common default.
                if let Some(problem) = host_port_problem(tcp, 8899) {
                    out.push(("tcp", format!("tcp {problem}")));
                }
            }
            _ => {}
        }
        if self.baud == 0 {
            out.push((
                "baud",
                "baud must be more than 0 (2400 is usual)".to_string(),
            ));
        }
        if !matches!(self.data_bits, 7 | 8) {
            out.push(("data_bits", "data_bits is 7 or 8".to_string()));
        }
        if !matches!(self.stop_bits, 1 | 2) {
            out.push(("stop_bits", "stop_bits is 1 or 2".to_string()));
        }
        for (name, value) in [("poll", self.poll), ("timeout", self.timeout)] {
            if value.is_zero() {
                out.push((name, format!("{name} must be more than 0s")));
            }
        }
        out
    }
}

/// Reads a value whose type parses itself from text (an address, a meter type), so that a
/// mistake is reported at its key with the type's own words.
pub fn parsed<'de, D, T>(d: D, parse: fn(&str) -> Result<T, String>) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    let text = String::deserialize(d)?;
    parse(&text).map_err(serde::de::Error::custom)
}

/// One bus section's element, as [`check_bus`] checks it.
pub(crate) struct BusEntry<'a> {
    /// `dlt645` or `cjt188`.
    pub section: &'static str,
    /// The element's index in the document.
    pub index: usize,
    pub id: &'a str,
    pub bus: &'a Bus,
    /// The `meter` of each `[[<section>.meter]]`.
    pub meters: Vec<&'a str>,
}

/// The checks every bus section shares: the bus settings, and each meter's `meter` in the
/// register and used once (the meter's id is its device name in the health lines).
pub(crate) fn check_bus(
    checker: &mut Checker<'_>,
    root: &Spanned<DeTable<'_>>,
    entry: BusEntry<'_>,
    registered: &std::collections::HashSet<String>,
) {
    let BusEntry {
        section,
        index,
        id,
        bus,
        meters,
    } = entry;
    let at = |checker: &Checker<'_>, rel: &[Seg]| {
        let mut path = vec![key(section), Seg::Index(index)];
        path.extend_from_slice(rel);
        checker.span_of(root, &path)
    };
    for (k, message) in bus.problems() {
        let span = at(checker, &[key(k)]);
        checker.push(span, format!("[[{section}]] `{id}`: {message}"));
    }
    if id.trim().is_empty() {
        let span = at(checker, &[]);
        checker.push(span, format!("a [[{section}]] bus needs an `id`"));
    }
    if meters.is_empty() {
        let span = at(checker, &[key("id")]);
        checker.push(
            span,
            format!("[[{section}]] `{id}` has no [[{section}.meter]]: add the meters on this bus"),
        );
    }
    for (n, meter) in meters.iter().enumerate() {
        let span = at(checker, &[key("meter"), Seg::Index(n), key("meter")]);
        if !registered.contains(*meter) {
            checker.push(
                span,
                crate::config::unknown_meter(&format!("[[{section}.meter]] feeds"), meter),
            );
        } else if !checker.claim("device", meter) {
            checker.push(
                span,
                format!(
                    "meter `{meter}` is already the name of another device (a Modbus device, \
                     broker, OPC UA server or bus meter): each device's health is reported \
                     under its name, so a [[meter]] is read by one bus meter"
                ),
            );
        }
    }
}

/// A `[[meter]]` that names its accounted `signal` must get it from the bus meter that feeds
/// it: otherwise its consumption stays unmeasured and nobody notices. `reads` says whether
/// the bus meter reads a signal; `offers` lists what it could read, for the message.
pub(crate) fn check_accounted(
    checker: &mut Checker<'_>,
    root: &Spanned<DeTable<'_>>,
    refs: &crate::config::References<'_>,
    meter: &str,
    reads: &dyn Fn(&str) -> bool,
    offers: &str,
    path: &[Seg],
) {
    let Some(signal) = refs
        .meter_list
        .iter()
        .find(|m| m.id == meter)
        .and_then(|m| m.signal.as_deref())
    else {
        return;
    };
    if !reads(signal) {
        let span = checker.span_of(root, path);
        checker.push(
            span,
            format!(
                "[[meter]] `{meter}` accounts signal `{signal}`, which this meter's readings do \
                 not include: add it to `readings` ({offers})"
            ),
        );
    }
}

/// The path of a key of meter `n` of bus element `index` of `section`.
pub(crate) fn meter_path(section: &str, index: usize, n: usize, rel: &[Seg]) -> Vec<Seg> {
    let mut path = vec![key(section), Seg::Index(index), key("meter"), Seg::Index(n)];
    path.extend_from_slice(rel);
    path
}

/// A bus meter feeds a `[[meter]]` of its own carrier: an electricity meter's kWh counted as
/// water would be a wrong figure that nothing else notices. `carriers` are the ones the bus
/// meter can measure; `what` names it.
pub(crate) fn check_carrier(
    checker: &mut Checker<'_>,
    root: &Spanned<DeTable<'_>>,
    refs: &crate::config::References<'_>,
    meter: &str,
    carriers: &[crate::model::Carrier],
    what: &str,
    path: &[Seg],
) {
    let Some(m) = refs.meter_list.iter().find(|m| m.id == meter) else {
        return;
    };
    if !carriers.contains(&m.carrier) {
        let span = checker.span_of(root, path);
        let names: Vec<&str> = carriers.iter().map(|c| c.as_str()).collect();
        checker.push(
            span,
            format!(
                "[[meter]] `{meter}` has carrier `{}`, but a {what} measures {}: feed a [[meter]] \
                 of that carrier",
                m.carrier.as_str(),
                names.join(" or ")
            ),
        );
    }
}
