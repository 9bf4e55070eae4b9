//! The MQTT connection every MQTT client of Shopfloor shares: the settings (one name, one type
//! and one check per setting), and the connector that turns them into rumqttc options.
//!
//! Three clients use it, each embedding [`MqttConnection`] in its own section, with the keys at
//! the top level of that section's table:
//!
//! | section | client | protocol | session |
//! |---|---|---|---|
//! | `[[mqtt]]` (`source::mqtt`) | reads machines' messages | 3.1.1 or 5 (`protocol`) | persistent unless `clean_session` |
//! | `[uplink]` (`sink::uplink`) | publishes the indicators to the county | 5 | clean (the spool is the session) |
//! | `[broker]` (`county ingest`) | reads the enterprises' uplinks | 5 | persistent, [`SESSION_EXPIRY_S`] |
//!
//! What differs between them (protocol, session, acknowledgements, what `max_packet_size`
//! bounds) is each client's own; what is here is the same for all three. The settings were
//! once declared three times and drifted: the uplink's back-off ceiling was `retry_max`, and
//! `max_packet_size` was a `usize` in `[[mqtt]]` and a `u32` in `[broker]`. The old name is
//! still accepted (see [`MqttConnection::max_backoff`]).
//!
//! A section reads the same table twice, once as [`MqttConnection`] and once as its own keys
//! (`config::Composite`), so every key keeps its line and column in `check`'s diagnostics and a
//! key is reported as unknown only when neither knows it. `#[serde(flatten)]` would lose both:
//! serde buffers a flattened table without positions and swallows the keys nobody claims.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use toml::de::DeTable;

use crate::config::{Checker, Secret, SecretError, Seg, duration, host_port_problem, key};

/// The first wait after a failed connection; it doubles up to `max_backoff`.
pub const MIN_BACKOFF: Duration = Duration::from_secs(1);
/// MQTT 5: unacknowledged QoS 1 messages the broker may have in flight to a subscriber (the
/// agent's `[[mqtt]]` brokers, `county ingest`).
pub const RECEIVE_MAXIMUM: u16 = 1024;
/// MQTT 5: how long the broker keeps a persistent session after a disconnection (7 days), the
/// equivalent of a 3.1.1 persistent session with an end.
pub const SESSION_EXPIRY_S: u32 = 7 * 24 * 3600;
/// The `max_packet_size` values `check` accepts: 1 KiB to MQTT's own limit, 256 MiB.
pub const MAX_PACKET_SIZE_RANGE: std::ops::RangeInclusive<u32> = 1024..=(1 << 28);

/// Why an MQTT client cannot be started. `broker` names the section (`plant`, `[uplink]`,
/// `[broker]`).
#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("mqtt broker `{broker}`: {message}")]
    Config { broker: String, message: String },
    #[error("mqtt broker `{broker}`: password: {source}")]
    Secret { broker: String, source: SecretError },
    #[error("mqtt broker `{broker}`: {what} `{path}`: {reason}")]
    Tls {
        broker: String,
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
}

/// The connection to one MQTT broker: its keys sit at the top level of `[[mqtt]]`, `[uplink]`
/// and the ingest's `[broker]`.
#[derive(Debug, Clone, Deserialize)]
pub struct MqttConnection {
    /// `host:port` of the broker (1883 plain, 8883 TLS by convention). With TLS the host must be
    /// the name (or IP address) the broker's certificate was issued for.
    pub address: String,
    /// The client id. The broker keeps a persistent session under it, so it is fixed, and two
    /// clients must never share one. `[[mqtt]]` default `shopfloor-<enterprise>-<id>`,
    /// `[uplink]` default `shopfloor-uplink-<enterprise>`; `[broker]` requires it.
    #[serde(default)]
    pub client_id: Option<String>,
    /// User name for the broker.
    #[serde(default)]
    pub username: Option<String>,
    /// Password, `{ env = "VAR" }` or `{ file = "/path" }`; needs `username`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// `[….tls]`: TLS; without this table the connection is plain TCP.
    #[serde(default)]
    pub tls: Option<MqttTls>,
    /// How often the client pings an idle connection; the broker drops a client that stays
    /// silent for one and a half times this. Default `"30s"`.
    #[serde(default = "default_keepalive", deserialize_with = "duration")]
    pub keepalive: Duration,
    /// The longest wait between two connection attempts. For the first five minutes of an
    /// outage attempts are at most 2 s apart (1 s, then 2 s), so the client is back within about
    /// two seconds of the broker; after that the wait doubles up to this. Each wait is less up
    /// to a quarter of random jitter so that many clients do not reconnect in step after a
    /// broker restart. Default `"60s"`. In `[uplink]` it also
    /// bounds the wait between two tries of a batch.
    ///
    /// `retry_max` is the deprecated name `[uplink]` used for it; it is still accepted.
    #[serde(
        default = "default_max_backoff",
        alias = "retry_max",
        deserialize_with = "duration"
    )]
    pub max_backoff: Duration,
    /// Bytes; what it bounds is the client's own. `[[mqtt]]`: a larger payload is counted as
    /// oversized and dropped, and the client reads packets up to four times this (at least
    /// 1 MiB) to name its topic, and larger ones up to 64 MiB once to count and drop them
    /// (see `source::mqtt`, "Oversized messages"); default 256 KiB. `[broker]`: the client refuses larger packets
    /// (announced to the broker); default 1 MiB. `[uplink]`: the largest packet the client
    /// sends or reads; default rumqttc's.
    #[serde(default)]
    pub max_packet_size: Option<u32>,
}

impl Default for MqttConnection {
    /// A placeholder until the section's table is read (see `config::Composite`).
    fn default() -> Self {
        MqttConnection {
            address: String::new(),
            client_id: None,
            username: None,
            password: None,
            tls: None,
            keepalive: default_keepalive(),
            max_backoff: default_max_backoff(),
            max_packet_size: None,
        }
    }
}

/// `[….tls]`: TLS to the broker. The certificates are PEM files.
#[derive(Debug, Clone, Deserialize)]
pub struct MqttTls {
    /// The CA certificate(s) the broker's certificate must chain to. For a broker with a public
    /// certificate, point it at the system bundle (`/etc/ssl/certs/ca-certificates.crt`).
    pub ca_file: PathBuf,
    /// The client's own certificate, for brokers that require client certificates; needs
    /// `key_file`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// The private key of `cert_file` (PKCS#8, PKCS#1 or SEC1).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

pub(crate) fn default_keepalive() -> Duration {
    Duration::from_secs(30)
}
pub(crate) fn default_max_backoff() -> Duration {
    Duration::from_secs(60)
}

impl MqttConnection {
    /// Checks the settings; `base` is the section's path in the document and `what` names it
    /// in messages (`mqtt broker `plant``, `[uplink]`, `[broker]`); `of` says whose password
    /// it is, for commands that resolve only some secrets.
    pub(crate) fn check(
        &self,
        checker: &mut Checker<'_>,
        root: &Spanned<DeTable<'_>>,
        base: &[Seg],
        what: &str,
        of: crate::config::SecretOf,
    ) {
        let at = |c: &Checker<'_>, rest: &[Seg]| -> Range<usize> {
            let path: Vec<Seg> = base.iter().chain(rest).cloned().collect();
            c.span_of(root, &path)
        };
        if let Some(problem) = host_port_problem(&self.address, 1883) {
            let span = at(checker, &[key("address")]);
            checker.push(span, format!("{what}: address {problem}"));
        }
        if self.keepalive.is_zero() || self.keepalive.as_secs() > u64::from(u16::MAX) {
            let span = at(checker, &[key("keepalive")]);
            checker.push(
                span,
                "keepalive must be between 1s and 65535s (18h12m15s)".into(),
            );
        }
        if let Some(size) = self.max_packet_size
            && !MAX_PACKET_SIZE_RANGE.contains(&size)
        {
            let span = at(checker, &[key("max_packet_size")]);
            checker.push(
                span,
                "max_packet_size must be between 1024 bytes and 256 MiB (MQTT's limit)".into(),
            );
        }
        if self.password.is_some() && self.username.is_none() {
            let span = at(checker, &[key("password")]);
            checker.push(span, "a password needs `username`".into());
        }
        if let Some(Err(e)) = (self.password.as_ref())
            .filter(|_| checker.resolves(of))
            .map(|s| s.resolve())
        {
            let span = at(checker, &[key("password")]);
            checker.push(span, format!("password: {e}"));
        }
        if let Some(tls) = &self.tls {
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                let span = at(checker, &[key("tls")]);
                checker.push(
                    span,
                    "a client certificate needs both `cert_file` and `key_file`".into(),
                );
            }
            for (k, path) in [
                ("ca_file", Some(&tls.ca_file)),
                ("cert_file", tls.cert_file.as_ref()),
                ("key_file", tls.key_file.as_ref()),
            ] {
                if let Some(path) = path
                    && let Err(e) = std::fs::metadata(path)
                {
                    let span = at(checker, &[key("tls"), key(k)]);
                    checker.push(
                        span,
                        format!("{k} `{}` cannot be read: {e}", path.display()),
                    );
                }
            }
        }
    }

    /// The back-off between connection attempts, from [`MIN_BACKOFF`] up to `max_backoff`.
    pub fn backoff(&self) -> Backoff {
        Backoff::new(self.max_backoff)
    }

    /// MQTT 3.1.1 client options with the address, keep-alive, credentials and TLS; `name`
    /// names the section in errors. The client's own settings (session, acknowledgements,
    /// packet size) are the caller's to add.
    pub fn options_v311(
        &self,
        name: &str,
        client_id: &str,
    ) -> Result<rumqttc::MqttOptions, MqttError> {
        let Connect {
            host,
            port,
            password,
            tls,
        } = self.connect(name)?;
        let mut o = rumqttc::MqttOptions::new(client_id, host, port);
        o.set_keep_alive(self.keepalive.max(Duration::from_secs(1)));
        if let Some(user) = &self.username {
            o.set_credentials(user.clone(), password.unwrap_or_default());
        }
        if let Some(tls) = tls {
            o.set_transport(rumqttc::Transport::tls_with_config(tls.into()));
        }
        Ok(o)
    }

    /// As [`MqttConnection::options_v311`], for MQTT 5.
    pub fn options_v5(
        &self,
        name: &str,
        client_id: &str,
    ) -> Result<rumqttc::v5::MqttOptions, MqttError> {
        let Connect {
            host,
            port,
            password,
            tls,
        } = self.connect(name)?;
        let mut o = rumqttc::v5::MqttOptions::new(client_id, host, port);
        o.set_keep_alive(self.keepalive.max(Duration::from_secs(1)));
        if let Some(user) = &self.username {
            o.set_credentials(user.clone(), password.unwrap_or_default());
        }
        if let Some(tls) = tls {
            o.set_transport(rumqttc::Transport::tls_with_config(tls.into()));
        }
        Ok(o)
    }

    /// Splits the address and reads the password and the TLS files now, so that a missing file
    /// stops the start with a clear message.
    fn connect(&self, name: &str) -> Result<Connect<'_>, MqttError> {
        let (host, port) = host_port(&self.address).ok_or_else(|| MqttError::Config {
            broker: name.to_string(),
            message: format!("address `{}` is not host:port", self.address),
        })?;
        let password = self
            .password
            .as_ref()
            .map(|s| s.resolve())
            .transpose()
            .map_err(|source| MqttError::Secret {
                broker: name.to_string(),
                source,
            })?;
        let tls = self.tls.as_ref().map(|t| tls_config(name, t)).transpose()?;
        Ok(Connect {
            host,
            port,
            password,
            tls,
        })
    }
}

/// What [`MqttConnection::connect`] read.
struct Connect<'a> {
    host: &'a str,
    port: u16,
    password: Option<String>,
    tls: Option<rustls::ClientConfig>,
}

/// For this long after a connection is lost, attempts are at most [`FAST_CEILING`] apart.
pub const FAST_PHASE: Duration = Duration::from_secs(300);
/// The longest wait between attempts during [`FAST_PHASE`].
pub const FAST_CEILING: Duration = Duration::from_secs(2);

/// The wait between connection attempts.
///
/// A broker is usually away for seconds (a restart, an upgrade, a switch rebooting), and while
/// the client is away the broker queues its session's messages only up to its own limit
/// (Mosquitto's `max_queued_messages`, 1,000 by default): every second the client spends
/// waiting after the broker is back fills that queue. So for the first [`FAST_PHASE`] of an
/// outage the waits are 1 s then [`FAST_CEILING`] (an attempt against a broker that is down costs
/// one refused TCP connection): the client is back within about two seconds of the broker.
/// After that the wait doubles up to the ceiling (`max_backoff`), so that a broker gone for
/// good is not hammered. Each wait is shortened by up to a quarter at random so that the agents
/// of a county do not all reconnect in the same second after its broker restarts.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
    /// When the first failed attempt of this outage was made.
    outage_since: Option<std::time::Instant>,
}

impl Backoff {
    /// `max` below [`MIN_BACKOFF`] counts as [`MIN_BACKOFF`].
    pub fn new(max: Duration) -> Backoff {
        Backoff {
            next: MIN_BACKOFF,
            max: max.max(MIN_BACKOFF),
            outage_since: None,
        }
    }

    /// After a successful connection: the next failure starts a new outage.
    pub fn reset(&mut self) {
        self.next = MIN_BACKOFF;
        self.outage_since = None;
    }

    /// The wait before the next attempt.
    pub fn next_wait(&mut self) -> Duration {
        self.next_wait_at(std::time::Instant::now())
    }

    fn next_wait_at(&mut self, now: std::time::Instant) -> Duration {
        let since = *self.outage_since.get_or_insert(now);
        let ceiling = if now.duration_since(since) < FAST_PHASE {
            FAST_CEILING.min(self.max)
        } else {
            self.max
        };
        let base = self.next.min(ceiling);
        self.next = (base * 2).min(self.max);
        let nanos = jiff::Timestamp::now().subsec_nanosecond().unsigned_abs();
        base - base.mul_f64(f64::from(nanos % 1000) / 4000.0)
    }
}

/// `host:port` split, with the brackets of an IPv6 address taken off.
pub fn host_port(address: &str) -> Option<(&str, u16)> {
    address
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
}

/// What is wrong with `text` as one or more literal MQTT topic levels, if anything.
pub(crate) fn topic_level_problem(text: &str) -> Option<&'static str> {
    if text.is_empty() {
        Some("must not be empty")
    } else if text.contains(['+', '#']) {
        Some("must not contain the wildcards + or #")
    } else if text.starts_with('/') || text.ends_with('/') || text.contains("//") {
        Some("must not start or end with `/` or have an empty level")
    } else if text.starts_with('$') {
        Some("must not start with `$` (the broker's own topics)")
    } else {
        None
    }
}

/// A rustls client config with the ring provider passed in, so it does not depend on which
/// provider is installed process-wide.
fn tls_config(broker: &str, tls: &MqttTls) -> Result<rustls::ClientConfig, MqttError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let fail = |what: &'static str, path: &Path, reason: String| MqttError::Tls {
        broker: broker.to_string(),
        what,
        path: path.to_path_buf(),
        reason,
    };
    let certs =
        |what: &'static str, path: &Path| -> Result<Vec<CertificateDer<'static>>, MqttError> {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| fail(what, path, e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| fail(what, path, e.to_string()))?;
            if certs.is_empty() {
                return Err(fail(what, path, "no PEM certificate in the file".into()));
            }
            Ok(certs)
        };
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs("ca_file", &tls.ca_file)? {
        roots
            .add(cert)
            .map_err(|e| fail("ca_file", &tls.ca_file, e.to_string()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail("ca_file", &tls.ca_file, e.to_string()))?
        .with_root_certificates(roots);
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert_file), Some(key_file)) => {
            let chain = certs("cert_file", cert_file)?;
            let key = PrivateKeyDer::from_pem_file(key_file)
                .map_err(|e| fail("key_file", key_file, e.to_string()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| fail("cert_file", cert_file, e.to_string()))
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(path), None) | (None, Some(path)) => Err(fail(
            "cert_file and key_file",
            path,
            "a client certificate needs both".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_the_deprecated_retry_max_name() {
        let c: MqttConnection = toml::from_str("address = \"h:1883\"").unwrap();
        assert_eq!(c.keepalive, Duration::from_secs(30));
        assert_eq!(c.max_backoff, Duration::from_secs(60));
        assert_eq!(c.max_packet_size, None);
        let c: MqttConnection = toml::from_str("address = \"h:1883\"\nretry_max = \"5s\"").unwrap();
        assert_eq!(c.max_backoff, Duration::from_secs(5));
    }

    #[test]
    fn the_backoff_stays_low_for_the_first_minutes_then_doubles_up_to_its_ceiling() {
        let within = |wait: Duration, base: f64| {
            let wait = wait.as_secs_f64();
            assert!((base * 0.75..=base).contains(&wait), "{wait} for {base}");
        };
        let t0 = std::time::Instant::now();
        let mut b = Backoff::new(Duration::from_secs(60));
        // The first five minutes of an outage: 1 s, then 2 s apart; each wait between three
        // quarters of its base and the base.
        for (at, base) in [(0, 1.0), (1, 2.0), (3, 2.0), (299, 2.0)] {
            within(b.next_wait_at(t0 + Duration::from_secs(at)), base);
        }
        // Then doubling from there, up to the ceiling.
        for (at, base) in [
            (301, 4.0),
            (305, 8.0),
            (313, 16.0),
            (329, 32.0),
            (361, 60.0),
            (421, 60.0),
        ] {
            within(b.next_wait_at(t0 + Duration::from_secs(at)), base);
        }
        // A connection ends the outage: the next one starts fast again.
        b.reset();
        within(b.next_wait_at(t0 + Duration::from_secs(500)), 1.0);
        within(b.next_wait_at(t0 + Duration::from_secs(501)), 2.0);
        // A ceiling below the fast one is kept.
        let mut low = Backoff::new(Duration::from_millis(1500));
        low.next_wait();
        within(low.next_wait(), 1.5);
        assert_eq!(Backoff::new(Duration::ZERO).max, MIN_BACKOFF);
    }

    /// Line 1 to 8; a section appended starts on line 9.
    const SITE: &str = "[site]\ncounty = \"yk\"\nsector = \"doors\"\nenterprise = \"e1\"\n[[machine]]\nid = \"cnc01\"\nkind = \"lathe\"\ncnc = true\n";

    fn problems(section: &str) -> Vec<(usize, usize, String)> {
        match crate::agent::config::load_str(&format!("{SITE}{section}"), "t.toml") {
            Ok(_) => Vec::new(),
            Err(d) => d
                .problems
                .into_iter()
                .map(|p| (p.line, p.column, p.message))
                .collect(),
        }
    }

    #[test]
    fn the_connection_keys_sit_at_the_top_of_each_section_with_their_old_names() {
        let text = format!(
            "{SITE}[uplink]\naddress = \"county:8883\"\nretry_max = \"5s\"\nmax_packet_size = 65536\n\n\
             [[mqtt]]\nid = \"plant\"\naddress = \"plant:1883\"\nmax_backoff = \"7s\"\nclean_session = true\n\
             [[mqtt.topic]]\npattern = \"plant/{{machine}}/data\"\nfield = [{{ signal = \"rpm\" }}]\n"
        );
        let cfg = crate::agent::config::load_str(&text, "t.toml").expect("loads");
        let uplink = cfg.uplink.expect("uplink");
        assert_eq!(uplink.connection.address, "county:8883");
        assert_eq!(uplink.connection.max_backoff, Duration::from_secs(5));
        assert_eq!(uplink.connection.max_packet_size, Some(65536));
        let options = uplink.writer_options(Path::new("/tmp"));
        assert_eq!(options.retry_max, Duration::from_secs(5));
        let broker = &cfg.mqtt[0];
        assert_eq!(broker.connection.address, "plant:1883");
        assert_eq!(broker.connection.max_backoff, Duration::from_secs(7));
        assert!(broker.clean_session);
        assert_eq!(broker.max_packet_size(), 256 * 1024);
    }

    #[test]
    fn mistakes_in_either_part_keep_their_line_column_and_hint() {
        // Each part stops at its first type error, as serde does, and sees the keys in their
        // sorted order: `username` comes after `tls`, so `cafile` is still seen.
        let got = problems(
            "[uplink]\naddress = \"county:8883\"\nusername = 5\ntopic_prefx = \"x\"\n\
             max_bakoff = \"1s\"\nbatch_lines = \"many\"\ntls = { ca_file = \"/\", cafile = \"x\" }\n",
        );
        let expect: &[(usize, usize, &str)] = &[
            (11, 12, "in [uplink]: invalid type: integer `5`"),
            (
                12,
                1,
                "unknown key `topic_prefx` in [uplink] (did you mean `topic_prefix`?)",
            ),
            (
                13,
                1,
                "unknown key `max_bakoff` in [uplink] (did you mean `max_backoff`?)",
            ),
            (14, 15, "in [uplink]: invalid type: string \"many\""),
            (
                15,
                24,
                "unknown key `cafile` in [uplink.tls] (did you mean `ca_file`?)",
            ),
        ];
        for (line, column, words) in expect {
            assert!(
                got.iter()
                    .any(|(l, c, m)| l == line && c == column && m.contains(words)),
                "expected {line}:{column} {words} in {got:#?}"
            );
        }
        assert_eq!(got.len(), expect.len(), "{got:#?}");
    }

    #[test]
    fn a_misspelt_key_after_a_type_error_is_still_reported() {
        // The connection part stops at `keepalive`; the own part still knows `pasword` is
        // neither's, and the broker's own `clean_sesion` is found by the connection part.
        let got = problems(
            "[[mqtt]]\nid = \"p\"\naddress = \"p:1883\"\nkeepalive = true\npasword = \"x\"\nclean_sesion = true\n\
             [[mqtt.topic]]\npattern = \"p/{machine}\"\nfield = [{ signal = \"rpm\", tpye = \"int\" }]\n",
        );
        let lines: Vec<(usize, &str)> = got.iter().map(|(l, _, m)| (*l, m.as_str())).collect();
        assert!(
            lines
                .iter()
                .any(|(l, m)| *l == 12 && m.contains("invalid type")),
            "{got:#?}"
        );
        assert!(
            lines.iter().any(|(l, m)| *l == 13
                && m.contains("`pasword` in [[mqtt]] #1 (did you mean `password`?)")),
            "{got:#?}"
        );
        assert!(
            lines.iter().any(|(l, m)| *l == 14
                && m.contains("`clean_sesion` in [[mqtt]] #1 (did you mean `clean_session`?)")),
            "{got:#?}"
        );
        assert!(
            lines.iter().any(|(l, m)| *l == 17 && m.contains("`tpye`")),
            "{got:#?}"
        );
        assert_eq!(got.len(), 4, "{got:#?}");
    }

    #[test]
    fn topic_levels() {
        assert_eq!(topic_level_problem("shopfloor"), None);
        assert!(topic_level_problem("a/+").is_some());
        assert!(topic_level_problem("$SYS").is_some());
        assert!(topic_level_problem("a//b").is_some());
    }
}
