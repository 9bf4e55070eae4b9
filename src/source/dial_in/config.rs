//! `[[dial_in]]`: a port that 4G and Ethernet DTUs (有人 USR-G780/G771-style) and serial
//! servers in client mode connect out to, and the DTUs expected on it with the Modbus devices
//! on the RS-485 line behind each.
//!
//! ```toml
//! [[dial_in]]
//! id = "dtus"
//! listen = "0.0.0.0:9600"
//! allow = ["10.20.0.0/16"]                 # source networks accepted (default: any)
//!
//!   [[dial_in.dtu]]
//!   id = "dtu-press-3"
//!   imei = "868626041234567"               # the registration packet (注册包) it sends
//!   heartbeat = "www.usr.cn"               # its heartbeat packet (心跳包)
//!   heartbeat_period = "30s"
//!   framing = "rtu"                        # transparent mode
//!   inter_request_delay = "100ms"
//!
//!     [[dial_in.dtu.device]]
//!     id = "press-3-box"
//!     unit = 1
//!     poll = "5s"
//!     machine = "press-3"
//!     field = [{ signal = "run", register = "holding", address = 0 }]
//! ```
//!
//! A registration packet is not authentication: anyone who knows a DTU's IMEI can claim it.
//! The listener bounds what an unknown or hostile peer can cost (`allow`, the connection
//! bounds, the connection rate, the registration timeout, bytes buffered), and TLS can be
//! turned on for DTUs that speak it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::stream::{Framing, Identity, Pattern};
use crate::config::{Seg, key};
use crate::source::hj212::config::Cidr;
use crate::source::modbus::config::ModbusDevice;

/// `[[dial_in]]`: one listening port and the DTUs expected on it.
#[derive(Debug, Clone, Deserialize)]
pub struct DialInListener {
    /// Listener id for logs and metrics.
    pub id: String,
    /// Address and port to listen on (`0.0.0.0:9600`). The DTUs' server address points here.
    pub listen: SocketAddr,
    /// Source networks accepted, as CIDRs (`10.20.0.0/16`) or single addresses. Empty (the
    /// default): any source. Others are closed at once.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Connections open at once (default 1100); more are closed at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Connections that have not yet sent a known registration, at once (default 64): the
    /// half-open bound, so unknown peers cannot hold every slot.
    #[serde(default = "default_max_unregistered")]
    pub max_unregistered: usize,
    /// New connections accepted per source address per minute (default 30); more are closed
    /// at once. DTUs behind one carrier NAT share an address: raise it for many DTUs.
    #[serde(default = "default_connects_per_minute")]
    pub max_connects_per_minute: u32,
    /// A connection whose first bytes match no DTU's registration after this long is closed
    /// (default 20s).
    #[serde(
        default = "default_registration_timeout",
        deserialize_with = "crate::config::duration"
    )]
    pub registration_timeout: Duration,
    /// TLS on the port: the server's certificate chain, a PEM file. Needs `tls_key`. Without
    /// both, the port speaks plain TCP, as most DTUs do.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// The private key of `tls_cert`, a PEM file.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// The DTUs expected.
    #[serde(default, rename = "dtu")]
    pub dtus: Vec<Dtu>,
}

fn default_max_connections() -> usize {
    1100
}
fn default_max_unregistered() -> usize {
    64
}
fn default_connects_per_minute() -> u32 {
    30
}
fn default_registration_timeout() -> Duration {
    Duration::from_secs(20)
}

/// `[[dial_in.dtu]]`: one DTU, its registration, heartbeat, framing and pacing, and the
/// devices behind it.
#[derive(Debug, Clone, Deserialize)]
pub struct Dtu {
    /// DTU id for logs.
    pub id: String,
    /// Registration packet, as text (what was typed into the DTU's "custom registration").
    #[serde(default)]
    pub registration: Option<String>,
    /// Registration packet, as hex bytes (`"7e 01 02"` or `"7e0102"`).
    #[serde(default)]
    pub registration_hex: Option<String>,
    /// Registration packet: the DTU's IMEI, 15 digits, sent as text.
    #[serde(default)]
    pub imei: Option<String>,
    /// Registration packet: the SIM's ICCID, 20 characters, sent as text.
    #[serde(default)]
    pub iccid: Option<String>,
    /// Registration packet: the MAC address (`D8:B0:4C:01:02:03`), sent as its 6 bytes, as
    /// Ethernet serial servers do.
    #[serde(default)]
    pub mac: Option<String>,
    /// Registration packet: the first packet of the connection, which begins with this text
    /// (for DTUs that add a serial number or time after a fixed part).
    #[serde(default)]
    pub registration_prefix: Option<String>,
    /// Registration packet: what this regular expression matches, anchored at the first
    /// byte, over bytes with ASCII classes (`"^USR[0-9]{6}"`; see `stream::Pattern`).
    #[serde(default)]
    pub registration_regex: Option<String>,
    /// Whether the DTU repeats its registration before every packet it sends (some models do).
    #[serde(default)]
    pub identity_every_packet: bool,
    /// Heartbeat packet, as text.
    #[serde(default)]
    pub heartbeat: Option<String>,
    /// Heartbeat packet, as hex bytes.
    #[serde(default)]
    pub heartbeat_hex: Option<String>,
    /// How often the DTU sends its heartbeat (for `dtu listen` and the default
    /// `heartbeat_timeout`).
    #[serde(default, deserialize_with = "crate::config::optional_duration")]
    pub heartbeat_period: Option<Duration>,
    /// A connection that sends nothing (no heartbeat, no answer) for this long is closed and
    /// the devices behind it are down. Default: 3 heartbeat periods, else 5 minutes.
    #[serde(default, deserialize_with = "crate::config::optional_duration")]
    pub heartbeat_timeout: Option<Duration>,
    /// `rtu` (transparent mode: RTU frames pass through, the agent adds and checks the CRC) or
    /// `tcp` (the DTU converts Modbus TCP to RTU itself).
    #[serde(default)]
    pub framing: DtuFraming,
    /// Silence kept between an answer (or timeout) and the next request (default 50ms).
    #[serde(
        default = "default_inter_request_delay",
        deserialize_with = "crate::config::duration"
    )]
    pub inter_request_delay: Duration,
    /// Time allowed for each answer through the DTU (default 3s: 4G round trips take hundreds
    /// of milliseconds to seconds).
    #[serde(
        default = "default_timeout",
        deserialize_with = "crate::config::duration"
    )]
    pub timeout: Duration,
    /// The Modbus devices behind the DTU, written as `[[modbus]]` devices without `address`
    /// or `serial`.
    #[serde(default, rename = "device")]
    pub devices: Vec<ModbusDevice>,
}

fn default_inter_request_delay() -> Duration {
    Duration::from_millis(50)
}
fn default_timeout() -> Duration {
    Duration::from_secs(3)
}

/// `framing` of a DTU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DtuFraming {
    #[default]
    Rtu,
    Tcp,
}

impl From<DtuFraming> for Framing {
    fn from(f: DtuFraming) -> Framing {
        match f {
            DtuFraming::Rtu => Framing::Rtu,
            DtuFraming::Tcp => Framing::Tcp,
        }
    }
}

/// The registration keys, one of which each DTU sets.
const IDENTITY_KEYS: [&str; 7] = [
    "registration",
    "registration_hex",
    "imei",
    "iccid",
    "mac",
    "registration_prefix",
    "registration_regex",
];

impl Dtu {
    /// The DTU's identity, or which key is wrong and why.
    pub fn identity(&self) -> Result<Identity, (&'static str, String)> {
        let set: Vec<&str> = IDENTITY_KEYS
            .into_iter()
            .filter(|k| self.identity_text(k).is_some())
            .collect();
        let id = &self.id;
        match set.as_slice() {
            [] => {
                return Err((
                    "id",
                    format!(
                        "dial-in DTU `{id}` needs its registration packet: one of `imei`, \
                         `iccid`, `mac`, `registration` (text), `registration_hex`, \
                         `registration_prefix` or `registration_regex` (`shopfloor dtu listen` \
                         shows what it sends)"
                    ),
                ));
            }
            [_] => {}
            [_, second, ..] => {
                return Err((
                    second,
                    format!(
                        "dial-in DTU `{id}`: set only one of {}: the one registration packet the DTU sends",
                        set.join(", ")
                    ),
                ));
            }
        }
        let text = |k: &str| self.identity_text(k).unwrap_or_default();
        if let Some(imei) = &self.imei {
            if imei.len() != 15 || !imei.bytes().all(|b| b.is_ascii_digit()) {
                return Err((
                    "imei",
                    format!("dial-in DTU `{id}`: an IMEI is 15 digits (`868626041234567`)"),
                ));
            }
            return Ok(Identity::Exact(imei.as_bytes().to_vec()));
        }
        if let Some(iccid) = &self.iccid {
            if !(19..=20).contains(&iccid.len())
                || !iccid.bytes().all(|b| b.is_ascii_alphanumeric())
            {
                return Err((
                    "iccid",
                    format!(
                        "dial-in DTU `{id}`: an ICCID is 20 digits (some SIMs end in a letter), \
                         as printed on the SIM card"
                    ),
                ));
            }
            return Ok(Identity::Exact(iccid.as_bytes().to_vec()));
        }
        if self.mac.is_some() {
            let bytes = parse_hex(&text("mac").replace([':', '-'], ""))
                .filter(|b| b.len() == 6)
                .ok_or_else(|| {
                    (
                        "mac",
                        format!("dial-in DTU `{id}`: a MAC is 6 bytes, `D8:B0:4C:01:02:03`"),
                    )
                })?;
            return Ok(Identity::Exact(bytes));
        }
        if self.registration_hex.is_some() {
            let bytes = parse_hex(&text("registration_hex"))
                .filter(|b| !b.is_empty() && b.len() <= MAX_REGISTRATION)
                .ok_or_else(|| {
                    (
                        "registration_hex",
                        format!(
                            "dial-in DTU `{id}`: registration_hex is 1–{MAX_REGISTRATION} bytes \
                             in hex (`7e 01 02` or `7e0102`)"
                        ),
                    )
                })?;
            return Ok(Identity::Exact(bytes));
        }
        if let Some(pattern) = &self.registration_regex {
            if self.identity_every_packet {
                return Err(not_every_packet(id, "a pattern"));
            }
            return Pattern::new(pattern)
                .map(Identity::Regex)
                .map_err(|e| ("registration_regex", format!("dial-in DTU `{id}`: {e}")));
        }
        let (k, literal) = match (&self.registration, &self.registration_prefix) {
            (Some(r), _) => ("registration", r),
            (None, Some(p)) => ("registration_prefix", p),
            (None, None) => ("registration", &String::new()),
        };
        if literal.is_empty() || literal.len() > MAX_REGISTRATION {
            return Err((
                k,
                format!("dial-in DTU `{id}`: `{k}` is 1–{MAX_REGISTRATION} characters"),
            ));
        }
        if k == "registration_prefix" {
            if self.identity_every_packet {
                return Err(not_every_packet(id, "its prefix"));
            }
            return Ok(Identity::Prefix(literal.as_bytes().to_vec()));
        }
        Ok(Identity::Exact(literal.as_bytes().to_vec()))
    }

    fn identity_text(&self, k: &str) -> Option<String> {
        match k {
            "registration" => self.registration.clone(),
            "registration_hex" => self.registration_hex.clone(),
            "imei" => self.imei.clone(),
            "iccid" => self.iccid.clone(),
            "mac" => self.mac.clone(),
            "registration_prefix" => self.registration_prefix.clone(),
            "registration_regex" => self.registration_regex.clone(),
            _ => None,
        }
    }

    /// The heartbeat's bytes (empty: none configured), or which key is wrong and why.
    pub fn heartbeat_bytes(&self) -> Result<Vec<u8>, (&'static str, String)> {
        let id = &self.id;
        match (&self.heartbeat, &self.heartbeat_hex) {
            (Some(_), Some(_)) => Err((
                "heartbeat_hex",
                format!("dial-in DTU `{id}`: set `heartbeat` (text) or `heartbeat_hex`, not both"),
            )),
            (Some(t), None) if t.is_empty() || t.len() > MAX_REGISTRATION => Err((
                "heartbeat",
                format!("dial-in DTU `{id}`: `heartbeat` is 1–{MAX_REGISTRATION} characters"),
            )),
            (Some(t), None) => Ok(t.as_bytes().to_vec()),
            (None, Some(h)) => parse_hex(h)
                .filter(|b| !b.is_empty() && b.len() <= MAX_REGISTRATION)
                .ok_or_else(|| {
                    (
                        "heartbeat_hex",
                        format!(
                            "dial-in DTU `{id}`: heartbeat_hex is 1–{MAX_REGISTRATION} bytes in \
                             hex (`fe` or `48 42`)"
                        ),
                    )
                }),
            (None, None) => Ok(Vec::new()),
        }
    }

    /// How long the DTU may stay silent: `heartbeat_timeout`, else 3 heartbeat periods, else
    /// 5 minutes.
    pub fn silence_allowed(&self) -> Duration {
        self.heartbeat_timeout.unwrap_or_else(|| {
            self.heartbeat_period
                .map_or(Duration::from_secs(300), |p| p * 3)
        })
    }
}

/// `identity_every_packet` with a registration known only by `by` (its prefix, a pattern).
fn not_every_packet(id: &str, by: &str) -> (&'static str, String) {
    (
        "identity_every_packet",
        format!(
            "dial-in DTU `{id}`: a registration known only by {by} cannot be taken off every \
             packet; give the whole registration (`registration` or `registration_hex`)"
        ),
    )
}

/// The longest registration or heartbeat the listener takes.
pub const MAX_REGISTRATION: usize = 128;

/// Hex bytes, with or without spaces; `None` if it is not hex.
pub fn parse_hex(text: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(s, 16).ok()
        })
        .collect()
}

impl DialInListener {
    /// The allow-list, parsed (the check has refused a config whose entries do not parse).
    pub fn allowed(&self) -> Vec<Cidr> {
        self.allow
            .iter()
            .filter_map(|a| Cidr::parse(a).ok())
            .collect()
    }

    /// The TLS server config, as `[[hj212]]` reads it.
    pub fn tls(
        &self,
    ) -> Result<Option<std::sync::Arc<rustls::ServerConfig>>, (&'static str, String)> {
        crate::source::hj212::config::server_tls(self.tls_cert.as_ref(), self.tls_key.as_ref())
    }
}

/// The listener as `check --plan` shows it: each DTU's registration, heartbeat, framing and
/// pacing, and the requests planned for the devices behind it.
pub fn shown(listener: &DialInListener) -> String {
    use super::stream::{ascii, hex};
    use std::fmt::Write as _;
    let mut out = String::new();
    let tls = if listener.tls_cert.is_some() {
        ", TLS"
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "dial_in {} (listen {}{tls}):",
        listener.id, listener.listen
    );
    for dtu in &listener.dtus {
        let identity = match dtu.identity() {
            Ok(Identity::Exact(b)) => format!("registration {} \"{}\"", hex(&b), ascii(&b)),
            Ok(Identity::Prefix(p)) => format!("first packet beginning \"{}\"", ascii(&p)),
            Ok(Identity::Regex(p)) => format!("first bytes matching /{}/", p.text()),
            Err((_, e)) => e,
        };
        let every = if dtu.identity_every_packet {
            ", repeated before every packet"
        } else {
            ""
        };
        let heartbeat = match dtu.heartbeat_bytes() {
            Ok(b) if !b.is_empty() => format!("heartbeat {} \"{}\"", hex(&b), ascii(&b)),
            _ => "no heartbeat".to_string(),
        };
        let _ = writeln!(
            out,
            "  dtu {} ({identity}{every}; {heartbeat}, down after {:?} of silence; {:?} framing, {:?} between requests, {:?} timeout):",
            dtu.id,
            dtu.silence_allowed(),
            dtu.framing,
            dtu.inter_request_delay,
            dtu.timeout
        );
        for device in &dtu.devices {
            let profile = device
                .profile
                .as_deref()
                .map(|p| format!(", profile {p}"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "    device {} (unit {}{profile}):",
                device.id, device.unit.0
            );
            for group in crate::source::modbus::plan::plan(device) {
                let _ = writeln!(out, "      every {:?}:", group.poll);
                for request in group.requests {
                    let _ = writeln!(out, "        {request}");
                }
            }
        }
    }
    out
}

impl crate::config::Section for DialInListener {
    fn keys(path: &[&str]) -> &'static [&'static str] {
        use crate::config::struct_fields;
        use crate::source::modbus::config::ModbusField;
        match path {
            [] => struct_fields::<DialInListener>(),
            ["dtu"] => struct_fields::<Dtu>(),
            ["dtu", "device"] => struct_fields::<ModbusDevice>(),
            ["dtu", "device", "field"] => struct_fields::<ModbusField>(),
            _ => &[],
        }
    }
}

/// One problem, with the path of its key below the `[[dial_in]]` table.
type Problem = (Vec<Seg>, String);

impl DialInListener {
    /// The listener's and its DTUs' own checks (the devices' are the Modbus checks).
    fn check(&self) -> Vec<Problem> {
        let mut out: Vec<Problem> = Vec::new();
        let id = &self.id;
        for (i, a) in self.allow.iter().enumerate() {
            if let Err(e) = Cidr::parse(a) {
                out.push((
                    vec![key("allow"), Seg::Index(i)],
                    format!("dial_in `{id}`: {e}"),
                ));
            }
        }
        for (name, value) in [
            ("max_connections", self.max_connections),
            ("max_unregistered", self.max_unregistered),
            (
                "max_connects_per_minute",
                self.max_connects_per_minute as usize,
            ),
        ] {
            if value == 0 {
                out.push((
                    vec![key(name)],
                    format!("dial_in `{id}`: `{name}` must be at least 1"),
                ));
            }
        }
        if self.registration_timeout.is_zero() {
            out.push((
                vec![key("registration_timeout")],
                format!("dial_in `{id}`: `registration_timeout` must be longer than 0s"),
            ));
        }
        if let Err((k, e)) = self.tls() {
            out.push((vec![key(k)], format!("dial_in `{id}`: {e}")));
        }
        if self.dtus.is_empty() {
            out.push((
                vec![key("id")],
                format!(
                    "dial_in `{id}` expects no DTU: add a [[dial_in.dtu]] with its registration \
                     and devices (`shopfloor dtu listen` shows what a DTU sends)"
                ),
            ));
        }
        let mut identities: Vec<(Identity, usize)> = Vec::new();
        for (d, dtu) in self.dtus.iter().enumerate() {
            let at = |k: &str| vec![key("dtu"), Seg::Index(d), key(k)];
            match dtu.identity() {
                Ok(identity) => {
                    if let Some((_, other)) = identities.iter().find(|(i, _)| *i == identity) {
                        out.push((
                            at("id"),
                            format!(
                                "dial-in DTU `{}` has the registration of DTU `{}`: each DTU \
                                 needs its own",
                                dtu.id, self.dtus[*other].id
                            ),
                        ));
                    }
                    identities.push((identity, d));
                }
                Err((k, e)) => out.push((at(k), e)),
            }
            if let Err((k, e)) = dtu.heartbeat_bytes() {
                out.push((at(k), e));
            }
            for (k, value) in [
                ("timeout", Some(dtu.timeout)),
                ("heartbeat_period", dtu.heartbeat_period),
                ("heartbeat_timeout", dtu.heartbeat_timeout),
            ] {
                if value.is_some_and(|v| v.is_zero()) {
                    out.push((
                        at(k),
                        format!("dial-in DTU `{}`: `{k}` must be longer than 0s", dtu.id),
                    ));
                }
            }
            if let (Some(period), Some(timeout)) = (dtu.heartbeat_period, dtu.heartbeat_timeout)
                && timeout <= period
            {
                out.push((
                    at("heartbeat_timeout"),
                    format!(
                        "dial-in DTU `{}`: `heartbeat_timeout` must be longer than \
                         `heartbeat_period`, or every DTU is down between two heartbeats",
                        dtu.id
                    ),
                ));
            }
            if dtu.devices.is_empty() {
                out.push((
                    at("id"),
                    format!(
                        "dial-in DTU `{}` has no device: add a [[dial_in.dtu.device]] with its \
                         unit and register map",
                        dtu.id
                    ),
                ));
            }
            let mut units = std::collections::HashSet::new();
            for (n, device) in dtu.devices.iter().enumerate() {
                let at = |k: &str| {
                    vec![
                        key("dtu"),
                        Seg::Index(d),
                        key("device"),
                        Seg::Index(n),
                        key(k),
                    ]
                };
                for k in ["address", "serial"] {
                    let set = match k {
                        "address" => device.address.is_some(),
                        _ => device.serial.is_some(),
                    };
                    if set {
                        out.push((
                            at(k),
                            format!(
                                "device `{}` is behind DTU `{}`: it has no `{k}` of its own \
                                 (the DTU connects to the agent)",
                                device.id, dtu.id
                            ),
                        ));
                    }
                }
                if device.inter_request_delay.is_some() {
                    out.push((
                        at("inter_request_delay"),
                        format!(
                            "device `{}`: behind a DTU the pause between requests is the DTU's \
                             `inter_request_delay`",
                            device.id
                        ),
                    ));
                }
                if !units.insert(device.unit.0) {
                    out.push((
                        at("unit"),
                        format!(
                            "DTU `{}` has two devices with unit {}: one RS-485 line, one unit id each",
                            dtu.id, device.unit.0
                        ),
                    ));
                }
            }
        }
        out
    }
}

/// `[[dial_in]]`'s row in the section table: each listener's checks, one port each, and each
/// device behind a DTU checked as a `[[modbus]]` device (profile merged in).
pub(crate) fn check_listeners(
    checker: &mut crate::config::Checker<'_>,
    root: &toml::Spanned<toml::de::DeTable<'_>>,
    at: &[usize],
    listeners: &mut [DialInListener],
    refs: &crate::config::References<'_>,
) {
    let mut ports = std::collections::HashSet::new();
    for (i, listener) in at.iter().zip(listeners.iter_mut()) {
        let base = vec![key("dial_in"), Seg::Index(*i)];
        let span = |checker: &crate::config::Checker<'_>, rel: &[Seg]| {
            checker.span_of(root, &crate::config::join(&base, rel))
        };
        let mut problems = listener.check();
        if !ports.insert(listener.listen) {
            problems.push((
                vec![key("listen")],
                format!(
                    "{} is the address of another [[dial_in]] listener",
                    listener.listen
                ),
            ));
        }
        for (d, dtu) in listener.dtus.iter().enumerate() {
            if !checker.claim("device", &dtu.id) {
                problems.push((
                    vec![key("dtu"), Seg::Index(d), key("id")],
                    format!(
                        "dial-in DTU id `{}` is already used by another DTU, server or device",
                        dtu.id
                    ),
                ));
            }
        }
        for (path, message) in problems {
            let at = span(checker, &path);
            checker.push(at, message);
        }
        for (d, dtu) in listener.dtus.iter_mut().enumerate() {
            for (n, device) in dtu.devices.iter_mut().enumerate() {
                let dbase = crate::config::join(
                    &base,
                    &[key("dtu"), Seg::Index(d), key("device"), Seg::Index(n)],
                );
                if !checker.claim("device", &device.id) {
                    let at = checker.span_of(root, &crate::config::join(&dbase, &[key("id")]));
                    checker.push(at, format!("device id `{}` is used twice", device.id));
                }
                let origins = checker.merge_profile(root, &dbase, device);
                // Behind a DTU the line is RTU whatever the framing to the DTU.
                checker.modbus_map(root, &dbase, device, &origins, refs, true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_reads_with_or_without_spaces() {
        assert_eq!(parse_hex("7e 01 ff"), Some(vec![0x7e, 1, 0xff]));
        assert_eq!(parse_hex("7e01FF"), Some(vec![0x7e, 1, 0xff]));
        assert_eq!(parse_hex("7e0"), None);
        assert_eq!(parse_hex("zz"), None);
    }
}
