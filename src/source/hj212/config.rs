//! `[[hj212]]`: a port that HJ 212 data loggers (数采仪) of the enterprise's outlets push their
//! data to, as their second platform next to the environmental bureau's, and the loggers
//! expected on it.
//!
//! ```toml
//! [[hj212]]
//! id = "outlets"
//! listen = "0.0.0.0:9212"
//! allow = ["192.168.10.0/24"]               # source addresses accepted (default: any)
//! max_connections = 16
//! max_buffer_bytes = 65536                  # per connection, split parts included
//! idle_timeout = "15m"
//! tls_cert = "/etc/shopfloor/hj212.pem"    # optional: TLS on the port, for loggers that speak it
//! tls_key = "/etc/shopfloor/hj212.key"
//!
//!   [[hj212.logger]]
//!   mn = "88888880000001"
//!   password = { env = "HJ212_PW_WW1" }     # the logger's PW, never in the config text
//!   outlet = "ww1"
//!   name = "Plating line wastewater outlet"
//!   kind = "wastewater"
//!
//!     [[hj212.logger.pollutant]]
//!     code = "w01018"                       # COD
//!     limit = 100.0                         # mg/L, the discharge permit's hourly limit
//!     [[hj212.logger.pollutant]]
//!     code = "w99001"                       # a code the agent does not know
//!     signal = "nickel"
//!     unit = "mg/L"
//!     limit = 0.1
//! ```
//!
//! Every bound has a default that fits a site with a handful of outlets; the listener treats
//! every peer as hostile until a packet with a known MN and its password says otherwise.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::codes;
use super::packet::MAX_PACKET;
use crate::config::{Secret, Seg, key};

/// `[[hj212]]`: one listening port and the loggers expected on it.
#[derive(Debug, Clone, Deserialize)]
pub struct Hj212Listener {
    /// Listener id for logs and metrics.
    pub id: String,
    /// Address and port to listen on (`0.0.0.0:9212`). The loggers' second platform address
    /// points here.
    pub listen: SocketAddr,
    /// Source networks accepted, as CIDRs (`192.168.10.0/24`, `10.1.2.3/32`, `::1/128`) or
    /// single addresses. Empty (the default): any source. Others are closed at once.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Connections open at once (default 32); more are closed at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Connections not yet identified by a valid packet at once (default 8): the half-open
    /// bound, so unknown peers cannot hold every slot.
    #[serde(default = "default_max_unidentified")]
    pub max_unidentified: usize,
    /// New connections accepted per source address per minute (default 20); more are closed at
    /// once.
    #[serde(default = "default_connects_per_minute")]
    pub max_connects_per_minute: u32,
    /// Bytes held per connection: the packet being received plus the parts of a split packet
    /// (default 65536, at least one whole packet, 10 011 bytes).
    #[serde(default = "default_max_buffer_bytes")]
    pub max_buffer_bytes: usize,
    /// A connection that sends nothing for this long is closed (default 15m; loggers send
    /// minute data, and reconnect when they have more).
    #[serde(
        default = "default_idle_timeout",
        deserialize_with = "crate::config::duration"
    )]
    pub idle_timeout: Duration,
    /// A connection that has not sent a valid packet of a known logger after this long is
    /// closed (default 30s).
    #[serde(
        default = "default_identify_timeout",
        deserialize_with = "crate::config::duration"
    )]
    pub identify_timeout: Duration,
    /// TLS on the port: the server's certificate chain, a PEM file (its own certificate first).
    /// Needs `tls_key`. Without both, the port speaks plain TCP, as most loggers do.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// The private key of `tls_cert`, a PEM file (PKCS#8, PKCS#1 or SEC1).
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// The loggers expected, by MN.
    #[serde(default, rename = "logger")]
    pub loggers: Vec<Hj212Logger>,
}

fn default_max_connections() -> usize {
    32
}
fn default_max_unidentified() -> usize {
    8
}
fn default_connects_per_minute() -> u32 {
    20
}
fn default_max_buffer_bytes() -> usize {
    64 * 1024
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(15 * 60)
}
fn default_identify_timeout() -> Duration {
    Duration::from_secs(30)
}

/// `[[hj212.logger]]`: one data logger, the outlet it monitors.
#[derive(Debug, Clone, Deserialize)]
pub struct Hj212Logger {
    /// The logger's MN (设备唯一标识), as set on the logger: 14 to 24 characters.
    pub mn: String,
    /// The logger's password (PW, 访问密码), from the environment or a file.
    pub password: Secret,
    /// The outlet's id (排污口编号), the `outlet` tag of its lines.
    pub outlet: String,
    /// The outlet's name for the board (default: the id).
    #[serde(default)]
    pub name: Option<String>,
    /// `wastewater` (废水) or `exhaust` (废气).
    pub kind: OutletKind,
    /// Pollutant codes the agent does not know, and limits.
    #[serde(default, rename = "pollutant")]
    pub pollutants: Vec<Hj212Pollutant>,
}

/// What an outlet discharges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutletKind {
    Wastewater,
    Exhaust,
}

impl OutletKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OutletKind::Wastewater => "wastewater",
            OutletKind::Exhaust => "exhaust",
        }
    }
}

/// `[[hj212.logger.pollutant]]`: a pollutant code's signal name and unit (for codes the agent
/// does not know, or to rename one) and its limit.
#[derive(Debug, Clone, Deserialize)]
pub struct Hj212Pollutant {
    /// The HJ 212 code (`w01018`, or a 2005 code such as `011`).
    pub code: String,
    /// The signal name (default: the agent's name for a known code; required otherwise).
    #[serde(default)]
    pub signal: Option<String>,
    /// The unit of its concentration (default: the standard's, for a known code).
    #[serde(default)]
    pub unit: Option<String>,
    /// The concentration limit (e.g. the discharge permit's), in `unit`; hourly averages above
    /// it open an alert. Without it, no alert.
    #[serde(default)]
    pub limit: Option<f64>,
}

/// An allowed source network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `a.b.c.d/n`, `a.b.c.d` (one address), and the same for IPv6.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| {
            format!("`{text}` is not an address or network (write `192.168.10.0/24` or `10.1.2.3`)")
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{text}`: the prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl Hj212Listener {
    /// The allow-list, parsed (the check has refused a config whose entries do not parse).
    pub fn allowed(&self) -> Vec<Cidr> {
        self.allow
            .iter()
            .filter_map(|a| Cidr::parse(a).ok())
            .collect()
    }
}

impl Hj212Listener {
    /// The TLS server config of `tls_cert` and `tls_key`, with the ring provider; `None` without
    /// TLS. A problem comes with the key it is about.
    pub fn tls(&self) -> Result<Option<Arc<rustls::ServerConfig>>, (&'static str, String)> {
        server_tls(self.tls_cert.as_ref(), self.tls_key.as_ref())
    }
}

/// The TLS server config of a listener's `tls_cert` and `tls_key` (`[[hj212]]`, `[[dial_in]]`),
/// with the ring provider; `None` without TLS. A problem comes with the key it is about.
pub fn server_tls(
    tls_cert: Option<&PathBuf>,
    tls_key: Option<&PathBuf>,
) -> Result<Option<Arc<rustls::ServerConfig>>, (&'static str, String)> {
    {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let (cert, key) = match (tls_cert, tls_key) {
            (None, None) => return Ok(None),
            (Some(cert), Some(key)) => (cert, key),
            (Some(_), None) => {
                return Err((
                    "tls_cert",
                    "TLS needs both `tls_cert` and `tls_key`: add the key file, or remove \
                     `tls_cert` for plain TCP"
                        .into(),
                ));
            }
            (None, Some(_)) => {
                return Err((
                    "tls_key",
                    "TLS needs both `tls_cert` and `tls_key`: add the certificate file, or \
                     remove `tls_key` for plain TCP"
                        .into(),
                ));
            }
        };
        let fail = |k: &'static str, path: &PathBuf, e: &dyn std::fmt::Display| {
            (k, format!("{k} `{}` cannot be used: {e}", path.display()))
        };
        let chain = CertificateDer::pem_file_iter(cert)
            .map_err(|e| fail("tls_cert", cert, &e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| fail("tls_cert", cert, &e))?;
        if chain.is_empty() {
            return Err(fail(
                "tls_cert",
                cert,
                &"no PEM certificate in the file (`-----BEGIN CERTIFICATE-----`)",
            ));
        }
        let private = PrivateKeyDer::from_pem_file(key).map_err(|e| fail("tls_key", key, &e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| fail("tls_cert", cert, &e))?
            .with_no_client_auth()
            .with_single_cert(chain, private)
            .map_err(|e| match e {
                rustls::Error::InconsistentKeys(_) => fail(
                    "tls_key",
                    key,
                    &"it is not the private key of the certificate in `tls_cert`: give the key \
                      the certificate was made with",
                ),
                e => fail("tls_key", key, &e),
            })?;
        Ok(Some(Arc::new(config)))
    }
}

impl Hj212Pollutant {
    /// The signal name: the configured one, else the agent's for a known code.
    pub fn signal_name(&self) -> Option<String> {
        self.signal
            .clone()
            .or_else(|| codes::pollutant(&self.code).map(|p| p.signal.to_string()))
    }
}

impl crate::config::Section for Hj212Listener {
    fn keys(path: &[&str]) -> &'static [&'static str] {
        use crate::config::struct_fields;
        match path {
            [] => struct_fields::<Hj212Listener>(),
            ["logger"] => struct_fields::<Hj212Logger>(),
            ["logger", "pollutant"] => struct_fields::<Hj212Pollutant>(),
            _ => &[],
        }
    }
}

/// One problem, with the path of its key below the `[[hj212]]` table.
type Problem = (Vec<Seg>, String);

impl Hj212Listener {
    /// The listener's own checks; each problem with the path of its key. The loggers'
    /// passwords are resolved when `checker_resolves` (see [`crate::config::Secrets`]).
    pub(crate) fn check(&self, checker_resolves: bool) -> Vec<Problem> {
        let mut out: Vec<Problem> = Vec::new();
        let id = &self.id;
        if id.trim().is_empty() {
            out.push((
                vec![key("id")],
                "an [[hj212]] listener needs an `id`".into(),
            ));
        }
        for (i, a) in self.allow.iter().enumerate() {
            if let Err(e) = Cidr::parse(a) {
                out.push((
                    vec![key("allow"), Seg::Index(i)],
                    format!("hj212 `{id}`: {e}"),
                ));
            }
        }
        for (name, value) in [
            ("max_connections", self.max_connections),
            ("max_unidentified", self.max_unidentified),
            (
                "max_connects_per_minute",
                self.max_connects_per_minute as usize,
            ),
        ] {
            if value == 0 {
                out.push((
                    vec![key(name)],
                    format!("hj212 `{id}`: `{name}` must be at least 1"),
                ));
            }
        }
        if self.max_buffer_bytes < MAX_PACKET {
            out.push((
                vec![key("max_buffer_bytes")],
                format!(
                    "hj212 `{id}`: `max_buffer_bytes` must hold one whole packet, at least \
                     {MAX_PACKET} bytes"
                ),
            ));
        }
        for (name, d) in [
            ("idle_timeout", self.idle_timeout),
            ("identify_timeout", self.identify_timeout),
        ] {
            if d.is_zero() {
                out.push((
                    vec![key(name)],
                    format!("hj212 `{id}`: `{name}` must be longer than 0s"),
                ));
            }
        }
        if let Err((k, e)) = self.tls() {
            out.push((vec![key(k)], format!("hj212 `{id}`: {e}")));
        }
        if self.loggers.is_empty() {
            out.push((
                vec![key("id")],
                format!(
                    "hj212 `{id}` expects no logger: add a [[hj212.logger]] with its `mn`, \
                     `password` and `outlet`, or every packet is refused"
                ),
            ));
        }
        for (l, logger) in self.loggers.iter().enumerate() {
            let at = |k: &str| vec![key("logger"), Seg::Index(l), key(k)];
            let mn = &logger.mn;
            if !(14..=24).contains(&mn.len()) || !mn.bytes().all(|b| b.is_ascii_alphanumeric()) {
                out.push((
                    at("mn"),
                    format!(
                        "hj212 logger `{mn}`: an MN is 14 to 24 letters and digits, as set on \
                         the logger"
                    ),
                ));
            }
            if let Some(Err(e)) = checker_resolves.then(|| logger.password.resolve()) {
                out.push((at("password"), format!("hj212 logger `{mn}` password: {e}")));
            }
            if logger.outlet.trim().is_empty() {
                out.push((
                    at("outlet"),
                    format!("hj212 logger `{mn}` needs an `outlet` id"),
                ));
            }
            for (p, pollutant) in logger.pollutants.iter().enumerate() {
                let at = |k: &str| {
                    vec![
                        key("logger"),
                        Seg::Index(l),
                        key("pollutant"),
                        Seg::Index(p),
                        key(k),
                    ]
                };
                let code = &pollutant.code;
                if code.is_empty()
                    || code.len() > 12
                    || !code.bytes().all(|b| b.is_ascii_alphanumeric())
                {
                    out.push((
                        at("code"),
                        format!("hj212 logger `{mn}`: pollutant code `{code}` is not a code (letters and digits, `w01018`)"),
                    ));
                } else if pollutant.signal_name().is_none() {
                    out.push((
                        at("code"),
                        format!(
                            "hj212 logger `{mn}`: pollutant `{code}` is not one the agent knows: \
                             give it a `signal` name (and its `unit`)"
                        ),
                    ));
                }
                if let Some(s) = &pollutant.signal
                    && (s.is_empty() || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
                {
                    out.push((
                        at("signal"),
                        format!(
                            "hj212 logger `{mn}`: signal `{s}` must be letters, digits and `_`"
                        ),
                    ));
                }
                if let Some(limit) = pollutant.limit
                    && !(limit.is_finite() && limit > 0.0)
                {
                    out.push((
                        at("limit"),
                        format!(
                            "hj212 logger `{mn}`: the limit of `{code}` must be a number above 0"
                        ),
                    ));
                }
            }
        }
        out
    }
}

/// `[[hj212]]`'s row in the section table: each listener's checks at their lines, and across
/// listeners one port each, one logger per MN and one logger per outlet.
pub(crate) fn check_listeners(
    checker: &mut crate::config::Checker<'_>,
    root: &toml::Spanned<toml::de::DeTable<'_>>,
    at: &[usize],
    listeners: &mut [Hj212Listener],
    _refs: &crate::config::References<'_>,
) {
    let mut mns = std::collections::HashSet::new();
    let mut outlets = std::collections::HashSet::new();
    let mut ports = std::collections::HashSet::new();
    for (i, listener) in at.iter().zip(listeners.iter()) {
        let base = vec![key("hj212"), Seg::Index(*i)];
        let span = |checker: &crate::config::Checker<'_>, rel: &[Seg]| {
            checker.span_of(root, &crate::config::join(&base, rel))
        };
        let mut problems = listener.check(checker.resolves(crate::config::SecretOf::Source));
        if !checker.claim("device", &listener.id) {
            problems.push((
                vec![key("id")],
                format!(
                    "hj212 listener id `{}` is already used by another listener, server or device",
                    listener.id
                ),
            ));
        }
        if !ports.insert(listener.listen) {
            problems.push((
                vec![key("listen")],
                format!(
                    "{} is the address of another [[hj212]] listener",
                    listener.listen
                ),
            ));
        }
        for (l, logger) in listener.loggers.iter().enumerate() {
            if !mns.insert(logger.mn.clone()) {
                problems.push((
                    vec![key("logger"), Seg::Index(l), key("mn")],
                    format!("hj212 logger MN `{}` is listed twice", logger.mn),
                ));
            }
            if outlets.contains(&logger.outlet) {
                // Reported below as one logger per outlet.
            } else if !checker.claim("device", &logger.outlet) {
                problems.push((
                    vec![key("logger"), Seg::Index(l), key("outlet")],
                    format!(
                        "outlet id `{}` is already the id of a device, server or broker: the \
                         board lists loggers among the devices by their outlet",
                        logger.outlet
                    ),
                ));
            }
            if !outlets.insert(logger.outlet.clone()) {
                problems.push((
                    vec![key("logger"), Seg::Index(l), key("outlet")],
                    format!(
                        "outlet `{}` already has a logger: one logger per outlet",
                        logger.outlet
                    ),
                ));
            }
        }
        for (path, message) in problems {
            let at = span(checker, &path);
            checker.push(at, message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_match_their_network_only() {
        let net = Cidr::parse("192.168.10.0/24").unwrap();
        assert!(net.contains("192.168.10.77".parse().unwrap()));
        assert!(!net.contains("192.168.11.1".parse().unwrap()));
        // An IPv4 peer seen through a dual-stack socket.
        assert!(net.contains("::ffff:192.168.10.5".parse().unwrap()));
        let one = Cidr::parse("10.1.2.3").unwrap();
        assert!(one.contains("10.1.2.3".parse().unwrap()));
        assert!(!one.contains("10.1.2.4".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(
            Cidr::parse("::1/128")
                .unwrap()
                .contains("::1".parse().unwrap())
        );
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("intranet").is_err());
    }

    #[test]
    fn a_listener_reads_with_its_defaults() {
        // Any readable, non-empty file serves as the password here.
        let pw_file = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
        let text = format!(
            "[site]\ncounty = \"yk\"\nsector = \"doors\"\nenterprise = \"e1\"\n\
            [[hj212]]\nid = \"outlets\"\nlisten = \"127.0.0.1:9212\"\n\
            [[hj212.logger]]\nmn = \"88888880000001\"\npassword = {{ file = \"{pw_file}\" }}\n\
            outlet = \"ww1\"\nkind = \"wastewater\"\n\
            pollutant = [{{ code = \"w01018\", limit = 100.0 }}]\n"
        );
        let text = text.as_str();
        let cfg = crate::agent::config::load_str(text, "t.toml").unwrap_or_else(|d| panic!("{d}"));
        let l = &cfg.hj212[0];
        assert_eq!(l.max_connections, 32);
        assert_eq!(l.max_buffer_bytes, 65536);
        assert_eq!(l.idle_timeout, Duration::from_secs(900));
        assert_eq!(l.loggers[0].kind, OutletKind::Wastewater);
        assert_eq!(
            l.loggers[0].pollutants[0].signal_name().as_deref(),
            Some("cod")
        );
    }
}
