//! `[[opcua]]`: one OPC UA server endpoint, how to reach it securely, and which of its nodes
//! become which machine's or meter's signals.
//!
//! ```toml
//! [[opcua]]
//! id = "cnc07"
//! endpoint = "opc.tcp://192.168.1.50:4840"
//! security_policy = "basic256sha256"        # none (default), basic256sha256,
//!                                           # aes128_sha256_rsaoaep, aes256_sha256_rsapss
//! security_mode = "sign_and_encrypt"        # none (default), sign, sign_and_encrypt
//! username = "shopfloor"
//! password = { env = "CNC07_OPCUA_PASSWORD" }
//! machine = "cnc07"
//!
//!   [[opcua.group]]                          # a subscription (the default mode)
//!   publishing_interval = "1s"
//!   [[opcua.group.node]]
//!   node = "ns=2;s=/Channel/Spindle/actSpeed"
//!   signal = "spindle_speed"
//!   type = "float"
//!   deadband = { absolute = 5.0 }
//!
//!   [[opcua.group]]
//!   mode = "poll"                            # the Read service every `poll`
//!   poll = "10s"
//!   [[opcua.group.node]]
//!   node = "ns=2;s=/Channel/State/acTotalParts"
//!   signal = "parts_total"
//!   type = "int"
//! ```
//!
//! The section checks itself with [`OpcuaServer::check`], which returns every problem at once
//! with the path of the key it is about (relative to the `[[opcua]]` table), so the config
//! reader can put a line and column on each; the checks across sections (is the machine
//! registered, does a signal keep one type across devices) take what they need as arguments.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::node_id::NodeAddress;
use super::nodes_file::{self, FileRows};
use crate::config::{Secret, parse_duration};
use crate::model::SignalType;

/// `[[opcua]]`: one server endpoint. The agent keeps one session to it.
#[derive(Debug, Clone, Deserialize)]
pub struct OpcuaServer {
    /// Server id for logs, metrics and the agent's health line.
    pub id: String,
    /// `opc.tcp://host:port[/path]`, as the server's documentation or `shopfloor probe` shows it.
    pub endpoint: String,
    /// The message security policy: `none` (default), `basic256sha256`,
    /// `aes128_sha256_rsaoaep` or `aes256_sha256_rsapss`. With a policy other than `none`, the
    /// agent has an application certificate (its own, made in `pki_dir` on first start unless
    /// `client_certificate` names one) and must trust the server's.
    #[serde(default)]
    pub security_policy: SecurityPolicy,
    /// `none` (default), `sign` or `sign_and_encrypt`; `none` exactly when the policy is `none`.
    #[serde(default)]
    pub security_mode: SecurityMode,
    /// The user to log in as; without it (and without `user_certificate`) the session is
    /// anonymous.
    #[serde(default)]
    pub username: Option<String>,
    /// The user's password, from the environment or a file, never the config text.
    #[serde(default)]
    pub password: Option<Secret>,
    /// An X.509 user certificate (DER or PEM) to log in with, instead of a user name.
    #[serde(default)]
    pub user_certificate: Option<PathBuf>,
    /// The private key (PEM) of `user_certificate`.
    #[serde(default)]
    pub user_private_key: Option<PathBuf>,
    /// The agent's application instance certificate (DER) for this server; default: the one in
    /// `pki_dir/own/cert.der`, made on first start.
    #[serde(default)]
    pub client_certificate: Option<PathBuf>,
    /// The private key (PEM) of `client_certificate`.
    #[serde(default)]
    pub client_private_key: Option<PathBuf>,
    /// The certificate store: `trusted/` holds the server certificates the agent trusts,
    /// `rejected/` receives each untrusted one it was shown (move it to `trusted/` to trust
    /// it), `own/` and `private/` hold the agent's own. Default `<data_dir>/opcua/pki`.
    #[serde(default)]
    pub pki_dir: Option<PathBuf>,
    /// How long the server keeps the session while the agent is away (default 60s).
    #[serde(default = "default_session_timeout", deserialize_with = "duration")]
    pub session_timeout: Duration,
    /// How long the agent waits for the answer to one request (default 10s).
    #[serde(default = "default_request_timeout", deserialize_with = "duration")]
    pub request_timeout: Duration,
    /// Monitored items per subscription before the agent opens another one (default 1000; an
    /// S7-1200 accepts about 1,000 in all, some servers 100 per subscription).
    #[serde(default = "default_max_items_per_subscription")]
    pub max_items_per_subscription: u32,
    /// Nodes per Read request of a polled group; default: the server's
    /// `MaxNodesPerRead` (read at connection), or 500 when it says none.
    #[serde(default)]
    pub max_nodes_per_read: Option<u32>,
    /// A value whose source or server timestamp is further than this from the agent's clock
    /// gets the next timestamp instead (server's, then the arrival time): a controller whose
    /// clock was never set would put data in the wrong shift. Default 10m.
    #[serde(default = "default_max_timestamp_skew", deserialize_with = "duration")]
    pub max_timestamp_skew: Duration,
    /// A node map by name: `profiles/<name>.toml` beside the config, else one shipped with
    /// Shopfloor ([`BUILTIN`]). Its groups come first, the server's own `group`s add to them.
    #[serde(default)]
    pub profile: Option<String>,
    /// The machine that nodes without `machine` or `meter` belong to.
    #[serde(default)]
    pub machine: Option<String>,
    /// The meter that nodes without `machine` or `meter` belong to.
    #[serde(default)]
    pub meter: Option<String>,
    /// The node map, in groups that share a reading mode.
    #[serde(default, rename = "group")]
    pub groups: Vec<OpcuaGroup>,
}

fn default_session_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(10)
}
/// `max_items_per_subscription` when the config gives none.
pub const DEFAULT_MAX_ITEMS_PER_SUBSCRIPTION: u32 = 1000;
fn default_max_items_per_subscription() -> u32 {
    DEFAULT_MAX_ITEMS_PER_SUBSCRIPTION
}
/// Nodes per Read when neither the config nor the server says.
pub const DEFAULT_MAX_NODES_PER_READ: u32 = 500;

/// Nodes per Read at most, whatever the server's `MaxNodesPerRead` or `max_nodes_per_read`
/// say: the client refuses to decode an answer with more values than this (the stack's
/// array limit), and would drop the connection on every poll.
pub const READ_CAP: u32 = opcua::types::constants::MAX_ARRAY_LENGTH as u32;
fn default_max_timestamp_skew() -> Duration {
    Duration::from_secs(600)
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

/// OPC UA's message security policies that the agent speaks. The deprecated Basic128Rsa15 and
/// Basic256 are left out on purpose (SHA-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityPolicy {
    #[default]
    None,
    Basic256sha256,
    #[serde(rename = "aes128_sha256_rsaoaep")]
    Aes128Sha256RsaOaep,
    #[serde(rename = "aes256_sha256_rsapss")]
    Aes256Sha256RsaPss,
}

impl SecurityPolicy {
    /// The policy's URI suffix as OPC UA names it (`Basic256Sha256`).
    pub fn ua_name(self) -> &'static str {
        match self {
            SecurityPolicy::None => "None",
            SecurityPolicy::Basic256sha256 => "Basic256Sha256",
            SecurityPolicy::Aes128Sha256RsaOaep => "Aes128_Sha256_RsaOaep",
            SecurityPolicy::Aes256Sha256RsaPss => "Aes256_Sha256_RsaPss",
        }
    }
}

/// OPC UA's message security modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityMode {
    #[default]
    None,
    Sign,
    SignAndEncrypt,
}

/// `[[opcua.group]]`: nodes read the same way.
#[derive(Debug, Clone, Deserialize)]
pub struct OpcuaGroup {
    /// `subscribe` (default: the server reports changes) or `poll` (the agent reads every
    /// `poll` with the Read service, for servers with few monitored items or values that
    /// should be written at a steady rate).
    #[serde(default)]
    pub mode: ReadMode,
    /// Subscribe: how often the server sends the changes it collected (default 1s).
    #[serde(default, deserialize_with = "opt_duration")]
    pub publishing_interval: Option<Duration>,
    /// Subscribe: how often the server samples each node (default: the publishing interval).
    #[serde(default, deserialize_with = "opt_duration")]
    pub sampling_interval: Option<Duration>,
    /// Subscribe: changes the server keeps per node between two publications (default 1: the
    /// newest; raise it when sampling is faster than publishing and every change counts).
    #[serde(default)]
    pub queue_size: Option<u32>,
    /// Poll: how often the group is read (default 1s).
    #[serde(default, deserialize_with = "opt_duration")]
    pub poll: Option<Duration>,
    /// The nodes.
    #[serde(default, rename = "node")]
    pub nodes: Vec<OpcuaNode>,
    /// A CSV tag list whose rows are nodes too, after the `node` tables: a path relative to
    /// the config file's directory (a profile's: to the profile's). See
    /// `source::opcua::nodes_file` for the columns.
    #[serde(default)]
    pub nodes_file: Option<PathBuf>,
    /// Which of `nodes` came from `nodes_file`, and their lines there (set when it is read).
    #[serde(skip)]
    pub file_rows: Option<FileRows>,
}

impl OpcuaGroup {
    pub fn publishing_interval(&self) -> Duration {
        self.publishing_interval.unwrap_or(Duration::from_secs(1))
    }
    pub fn sampling_interval(&self) -> Duration {
        self.sampling_interval
            .unwrap_or_else(|| self.publishing_interval())
    }
    pub fn queue_size(&self) -> u32 {
        self.queue_size.unwrap_or(1)
    }
    pub fn poll(&self) -> Duration {
        self.poll.unwrap_or(Duration::from_secs(1))
    }
}

/// The OPC UA profiles shipped with Shopfloor: (name, file text).
pub const BUILTIN: &[(&str, &str)] = &[(
    "sinumerik-828d-840dsl",
    include_str!("../../../config/profiles/opcua/sinumerik-828d-840dsl.toml"),
)];

/// An OPC UA profile file: the node map of a kind of control, used on many machines alike.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpcuaProfile {
    /// What the profile describes.
    pub description: String,
    /// Groups as in `[[opcua.group]]`, their nodes without `machine` or `meter`.
    #[serde(rename = "group")]
    pub groups: Vec<OpcuaGroup>,
}

/// Reads profile `name` (a file beside the config, else a shipped one).
pub fn load_profile(name: &str, dir: Option<&std::path::Path>) -> Result<OpcuaProfile, String> {
    use crate::source::modbus::profile::{ProfileSource, find_in};
    let (source, text) = find_in(name, dir, BUILTIN)?;
    let file = match &source {
        ProfileSource::File(p) => p.display().to_string(),
        _ => format!("<shipped>/config/profiles/opcua/{name}.toml"),
    };
    let mut profile: OpcuaProfile =
        toml::from_str(&text).map_err(|e| format!("profile `{name}` ({file}): {e}"))?;
    for group in &mut profile.groups {
        let Some(csv) = group.nodes_file.clone() else {
            continue;
        };
        let ProfileSource::File(path) = &source else {
            return Err(format!(
                "profile `{name}` ({file}): a shipped profile has no nodes_file"
            ));
        };
        let dir = path.parent().unwrap_or(std::path::Path::new(""));
        let shown = csv.display().to_string();
        let (rows, errors) = nodes_file::read_into(
            &dir.join(&csv),
            &shown,
            NODE_COLUMNS,
            &mut group.nodes,
            node_of_row,
        );
        if !errors.is_empty() {
            return Err(format!("profile `{name}` ({file}): {}", errors.join("; ")));
        }
        group.file_rows = Some(rows);
    }
    let owned = profile
        .groups
        .iter()
        .flat_map(|g| &g.nodes)
        .find(|n| n.machine.is_some() || n.meter.is_some());
    if let Some(n) = owned {
        return Err(format!(
            "profile `{name}` ({file}): node `{}` names a machine or meter; the server using \
             the profile names it",
            n.signal
        ));
    }
    Ok(profile)
}

/// How a group's nodes are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadMode {
    #[default]
    Subscribe,
    Poll,
}

/// `[[opcua.group.node]]`: one node (or one element of an array node) as one signal.
#[derive(Debug, Clone, Deserialize)]
pub struct OpcuaNode {
    /// The node id: `ns=2;s=…`, `ns=3;i=…`, `i=2258`, `nsu=<uri>;s=…`, `ns=1;g=<guid>`,
    /// `ns=1;b=<base64>` (see `source::opcua::node_id`).
    pub node: NodeAddress,
    /// Signal name, the field key in the `signal` line.
    pub signal: String,
    /// The type written to the store (`float` default, `int`, `bool`, `string`); see
    /// `source::opcua::value` for which server types convert to which.
    #[serde(rename = "type", default)]
    pub value_type: SignalType,
    /// For an array node: the element (0-based) this signal is. One node entry per element.
    #[serde(default)]
    pub index: Option<u32>,
    /// Subscribe, numeric signals: report a change only when it exceeds this,
    /// `{ absolute = 0.5 }` (in the value's unit) or `{ percent = 2 }` (of the node's
    /// EURange; only for analog items that have one).
    #[serde(default)]
    pub deadband: Option<Deadband>,
    /// The machine this signal belongs to, instead of the server's.
    #[serde(default)]
    pub machine: Option<String>,
    /// The meter this signal belongs to, instead of the server's machine.
    #[serde(default)]
    pub meter: Option<String>,
}

/// A data-change filter's deadband.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Deadband {
    Absolute(f64),
    Percent(f64),
}

/// Whom a signal belongs to, once the node's and the server's settings are combined.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Owner<'a> {
    Machine(&'a str),
    Meter(&'a str),
}

/// One segment of a key's path inside `[[opcua]]`: `group`, 2, `node`, 0, `signal`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSeg {
    Key(&'static str),
    Index(usize),
}

/// One mistake, at the key it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Relative to the `[[opcua]]` table; empty for the table itself.
    pub path: Vec<PathSeg>,
    pub message: String,
}

/// What the checks across sections need to know: which machines and meters are registered.
pub struct Register<'a> {
    pub is_machine: &'a dyn Fn(&str) -> bool,
    pub is_meter: &'a dyn Fn(&str) -> bool,
}

/// The suffix of the field beside an Uncertain value's signal (see `source::opcua`).
pub const QUALITY_SUFFIX: &str = "_quality";

impl OpcuaServer {
    /// A copy of the settings without the node map: what the source's task keeps once it has
    /// built its own tables from `groups` (a copy of 100,000 nodes would cost some 16 MB at
    /// start for nothing).
    pub fn settings(&self) -> OpcuaServer {
        // Destructured so that a new field cannot be forgotten here.
        let OpcuaServer {
            id,
            endpoint,
            security_policy,
            security_mode,
            username,
            password,
            user_certificate,
            user_private_key,
            client_certificate,
            client_private_key,
            pki_dir,
            session_timeout,
            request_timeout,
            max_items_per_subscription,
            max_nodes_per_read,
            max_timestamp_skew,
            profile,
            machine,
            meter,
            groups: _,
        } = self;
        OpcuaServer {
            id: id.clone(),
            endpoint: endpoint.clone(),
            security_policy: *security_policy,
            security_mode: *security_mode,
            username: username.clone(),
            password: password.clone(),
            user_certificate: user_certificate.clone(),
            user_private_key: user_private_key.clone(),
            client_certificate: client_certificate.clone(),
            client_private_key: client_private_key.clone(),
            pki_dir: pki_dir.clone(),
            session_timeout: *session_timeout,
            request_timeout: *request_timeout,
            max_items_per_subscription: *max_items_per_subscription,
            max_nodes_per_read: *max_nodes_per_read,
            max_timestamp_skew: *max_timestamp_skew,
            profile: profile.clone(),
            machine: machine.clone(),
            meter: meter.clone(),
            groups: Vec::new(),
        }
    }

    /// The owner of a node's signal: the node's `machine` or `meter`, else the server's.
    pub fn owner<'a>(&'a self, node: &'a OpcuaNode) -> Option<Owner<'a>> {
        match (&node.machine, &node.meter, &self.machine, &self.meter) {
            (Some(m), _, _, _) => Some(Owner::Machine(m)),
            (None, Some(m), _, _) => Some(Owner::Meter(m)),
            (None, None, Some(m), _) => Some(Owner::Machine(m)),
            (None, None, None, Some(m)) => Some(Owner::Meter(m)),
            (None, None, None, None) => None,
        }
    }

    /// Every (owner, signal, type) this server writes, for the check that a signal keeps one
    /// type across devices.
    pub fn signals(&self) -> impl Iterator<Item = (Owner<'_>, &str, SignalType)> {
        self.groups.iter().flat_map(move |g| {
            g.nodes
                .iter()
                .filter_map(move |n| self.owner(n).map(|o| (o, n.signal.as_str(), n.value_type)))
        })
    }

    /// Every problem of this section, at once.
    pub fn check(&self, register: &Register<'_>) -> Vec<ConfigProblem> {
        use PathSeg::{Index, Key};
        let mut out = Vec::new();
        let mut push =
            |path: Vec<PathSeg>, message: String| out.push(ConfigProblem { path, message });
        let name = &self.id;
        if self.id.trim().is_empty() {
            push(vec![Key("id")], "an [[opcua]] server needs an `id`".into());
        }
        if let Err(e) = endpoint_host_port(&self.endpoint) {
            push(vec![Key("endpoint")], format!("opcua server `{name}`: {e}"));
        }
        match (self.security_policy, self.security_mode) {
            (SecurityPolicy::None, SecurityMode::None) => {}
            (SecurityPolicy::None, _) => push(
                vec![Key("security_mode")],
                format!(
                    "opcua server `{name}`: security_mode `sign` or `sign_and_encrypt` needs a \
                     security_policy (e.g. \"basic256sha256\")"
                ),
            ),
            (p, SecurityMode::None) => push(
                vec![Key("security_policy")],
                format!(
                    "opcua server `{name}`: security_policy `{}` needs security_mode \"sign\" or \
                     \"sign_and_encrypt\"",
                    p.ua_name()
                ),
            ),
            _ => {}
        }
        match (&self.username, &self.password) {
            (Some(_), None) => push(
                vec![Key("username")],
                format!(
                    "opcua server `{name}`: a username needs a password = {{ env = \"…\" }} or \
                     {{ file = \"…\" }}"
                ),
            ),
            (None, Some(_)) => push(
                vec![Key("password")],
                format!("opcua server `{name}`: a password needs a username"),
            ),
            _ => {}
        }
        if self.user_certificate.is_some() && self.username.is_some() {
            push(
                vec![Key("user_certificate")],
                format!(
                    "opcua server `{name}`: log in with a username or a user_certificate, not both"
                ),
            );
        }
        for (cert, key, ck, kk) in [
            (
                &self.user_certificate,
                &self.user_private_key,
                "user_certificate",
                "user_private_key",
            ),
            (
                &self.client_certificate,
                &self.client_private_key,
                "client_certificate",
                "client_private_key",
            ),
        ] {
            match (cert, key) {
                (Some(_), None) => push(
                    vec![Key(ck)],
                    format!("opcua server `{name}`: {ck} needs its {kk}"),
                ),
                (None, Some(_)) => push(
                    vec![Key(kk)],
                    format!("opcua server `{name}`: {kk} belongs to a {ck}, which is missing"),
                ),
                _ => {}
            }
        }
        for (key, d) in [
            ("session_timeout", self.session_timeout),
            ("request_timeout", self.request_timeout),
        ] {
            if d.is_zero() {
                push(
                    vec![Key(key)],
                    format!("opcua server `{name}`: {key} must be more than 0s"),
                );
            }
        }
        if self.session_timeout.as_millis() > u128::from(u32::MAX) {
            push(
                vec![Key("session_timeout")],
                format!("opcua server `{name}`: session_timeout is at most 49d17h2m47s"),
            );
        }
        for (key, value) in [
            (
                "max_items_per_subscription",
                Some(self.max_items_per_subscription),
            ),
            ("max_nodes_per_read", self.max_nodes_per_read),
        ] {
            if let Some(n) = value
                && !(1..=READ_CAP).contains(&n)
            {
                push(
                    vec![Key(key)],
                    format!(
                        "opcua server `{name}`: {key} is 1–{READ_CAP} (the most values the \
                         client decodes in one answer; more nodes are split over several)"
                    ),
                );
            }
        }
        if self.machine.is_some() && self.meter.is_some() {
            push(
                vec![Key("meter")],
                format!("opcua server `{name}` names a `machine` or a `meter`, not both"),
            );
        }
        for (key, id, registered, what) in [
            ("machine", &self.machine, register.is_machine, "[[machine]]"),
            ("meter", &self.meter, register.is_meter, "[[meter]]"),
        ] {
            if let Some(id) = id
                && !registered(id)
            {
                push(
                    vec![Key(key)],
                    format!("opcua server `{name}`: `{id}` is not a registered {what}"),
                );
            }
        }
        // (A group with an empty or unread nodes file says so itself.)
        if self
            .groups
            .iter()
            .all(|g| g.nodes.is_empty() && g.nodes_file.is_none())
        {
            push(
                vec![Key("id")],
                format!("opcua server `{name}` has no [[opcua.group.node]]: it would read nothing"),
            );
        }
        // (owner, signal) → where it was first mapped, across the server's groups.
        let mut seen: BTreeMap<(Owner<'_>, &str), (usize, usize)> = BTreeMap::new();
        let mut quality_names = Vec::new();
        for (g, group) in self.groups.iter().enumerate() {
            let at = |rest: &[PathSeg]| {
                let mut p = vec![Key("group"), Index(g)];
                p.extend_from_slice(rest);
                p
            };
            let subscribe_only = [
                ("publishing_interval", group.publishing_interval.is_some()),
                ("sampling_interval", group.sampling_interval.is_some()),
                ("queue_size", group.queue_size.is_some()),
            ];
            match group.mode {
                ReadMode::Subscribe => {
                    if group.poll.is_some() {
                        push(
                            at(&[Key("poll")]),
                            "`poll` is for groups with mode = \"poll\"; a subscription has a \
                             publishing_interval"
                                .into(),
                        );
                    }
                    if group.publishing_interval().is_zero() {
                        push(
                            at(&[Key("publishing_interval")]),
                            "publishing_interval must be more than 0s".into(),
                        );
                    }
                    if group.queue_size == Some(0) {
                        push(
                            at(&[Key("queue_size")]),
                            "queue_size must be at least 1".into(),
                        );
                    }
                }
                ReadMode::Poll => {
                    for (key, set) in subscribe_only {
                        if set {
                            push(
                                at(&[Key(key)]),
                                format!(
                                    "`{key}` is for subscriptions; a group with mode = \"poll\" \
                                     has `poll`"
                                ),
                            );
                        }
                    }
                    if group.poll().is_zero() {
                        push(at(&[Key("poll")]), "poll must be more than 0s".into());
                    }
                }
            }
            if group.nodes.is_empty() && group.nodes_file.is_some() {
                if !group.file_failed() {
                    push(
                        at(&[Key("nodes_file")]),
                        format!(
                            "opcua server `{name}`: the group's nodes_file has no rows and the \
                             group no [[opcua.group.node]]"
                        ),
                    );
                }
            } else if group.nodes.is_empty() {
                push(
                    at(&[]),
                    format!(
                        "opcua server `{name}`: a group without [[opcua.group.node]] or \
                         nodes_file"
                    ),
                );
            }
            for (n, node) in group.nodes.iter().enumerate() {
                let at = |k: &'static str| at(&[Key("node"), Index(n), Key(k)]);
                if node.signal.trim().is_empty() {
                    push(at("signal"), "a node needs a `signal` name".into());
                }
                if node.machine.is_some() && node.meter.is_some() {
                    push(
                        at("meter"),
                        "a node names a `machine` or a `meter`, not both".into(),
                    );
                }
                for (key, id, registered, what) in [
                    ("machine", &node.machine, register.is_machine, "[[machine]]"),
                    ("meter", &node.meter, register.is_meter, "[[meter]]"),
                ] {
                    if let Some(id) = id
                        && !registered(id)
                    {
                        push(at(key), format!("`{id}` is not a registered {what}"));
                    }
                }
                if let Some(d) = node.deadband {
                    if group.mode == ReadMode::Poll {
                        push(
                            at("deadband"),
                            "a deadband is for subscriptions; a polled node is read every poll"
                                .into(),
                        );
                    } else if !matches!(node.value_type, SignalType::Float | SignalType::Int) {
                        push(
                            at("deadband"),
                            format!(
                                "a deadband needs a numeric signal; `{}` is {}",
                                node.signal,
                                node.value_type.with_article()
                            ),
                        );
                    }
                    match d {
                        Deadband::Absolute(x) if !(x >= 0.0 && x.is_finite()) => push(
                            at("deadband"),
                            format!("deadband absolute = {x}: must be 0 or more"),
                        ),
                        Deadband::Percent(x) if !(0.0..=100.0).contains(&x) => push(
                            at("deadband"),
                            format!("deadband percent = {x}: must be from 0 to 100"),
                        ),
                        _ => {}
                    }
                }
                let Some(owner) = self.owner(node) else {
                    push(
                        at("signal"),
                        format!(
                            "signal `{}` belongs to no machine or meter: set `machine` (or \
                             `meter`) on the [[opcua]] server or on the node",
                            node.signal
                        ),
                    );
                    continue;
                };
                quality_names.push((owner.clone(), g, n));
                if let Some((g0, n0)) = seen.insert((owner.clone(), node.signal.as_str()), (g, n)) {
                    push(
                        at("signal"),
                        format!(
                            "signal `{}` of {} is already mapped ({}): one node per signal",
                            node.signal,
                            owner_words(&owner),
                            self.node_place(g0, n0)
                        ),
                    );
                }
            }
        }
        // `<signal>_quality` is written beside Uncertain values: no signal may be called that.
        for (owner, g, n) in quality_names {
            let signal = &self.groups[g].nodes[n].signal;
            if let Some(base) = signal.strip_suffix(QUALITY_SUFFIX)
                && seen.contains_key(&(owner.clone(), base))
            {
                push(
                    vec![Key("group"), Index(g), Key("node"), Index(n), Key("signal")],
                    format!(
                        "signal `{signal}` would clash with the quality field written beside \
                         `{base}` when its value is uncertain: choose another name"
                    ),
                );
            }
        }
        out
    }
}

/// A nodes file's columns: each means what the `[[opcua.group.node]]` key of its name means;
/// `deadband` is `5` (absolute) or `2%` (percent).
pub const NODE_COLUMNS: nodes_file::Columns = nodes_file::Columns {
    names: &[
        "node", "signal", "type", "index", "deadband", "machine", "meter",
    ],
    required: 2,
};

/// One row of a nodes file (its cells in [`NODE_COLUMNS`] order) as a node, or every mistake
/// in it with its column's name.
pub(crate) fn node_of_row(cells: &[Option<&str>]) -> Result<OpcuaNode, nodes_file::RowMistakes> {
    let mut problems = Vec::new();
    let mut node = None;
    let mut signal = None;
    let mut value_type = SignalType::default();
    let mut index = None;
    let mut deadband = None;
    let mut machine = None;
    let mut meter = None;
    for (c, cell) in cells.iter().enumerate() {
        let name = NODE_COLUMNS.names[c];
        let Some(cell) = *cell else {
            if c < NODE_COLUMNS.required {
                problems.push((name, format!("is empty: every row needs a {name}")));
            }
            continue;
        };
        match name {
            "node" => match NodeAddress::parse(cell) {
                Ok(a) => node = Some(a),
                Err(e) => problems.push((name, e.to_string())),
            },
            "signal" => signal = Some(cell.to_string()),
            // Spelt as the `type` key is (serde's names for `SignalType`).
            "type" => match SignalType::deserialize(serde::de::value::StrDeserializer::<
                serde::de::value::Error,
            >::new(cell))
            {
                Ok(t) => value_type = t,
                Err(_) => problems.push((
                    name,
                    format!("unknown type `{cell}` (float, int, bool, string)"),
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

impl OpcuaGroup {
    /// Whether the group's nodes file was named but could not be read whole (its mistakes are
    /// reported at `nodes_file`, not again as a group without nodes).
    pub fn file_failed(&self) -> bool {
        self.nodes_file.is_some() && self.file_rows.as_ref().is_none_or(|r| r.failed)
    }
}

impl OpcuaServer {
    /// Where node `n` of group `g` is written, for people: `tags/lathes.csv line 12` for a
    /// row of a nodes file, else `group 1, node 3` (1-based).
    pub fn node_place(&self, g: usize, n: usize) -> String {
        match self.file_line(g, n) {
            Some((file, line)) => format!("{file} line {line}"),
            None => format!("group {}, node {}", g + 1, n + 1),
        }
    }

    /// The nodes file and line of node `n` of group `g`, when it is a row of one.
    pub fn file_line(&self, g: usize, n: usize) -> Option<(&str, u32)> {
        let rows = self.groups.get(g)?.file_rows.as_ref()?;
        Some((rows.file.as_str(), rows.line_of(n)?))
    }

    /// A problem's path inside a nodes file's row, as the path of the group's `nodes_file` key
    /// and the words that put the row's file, line and column in front of its message.
    fn in_nodes_file(&self, path: &[PathSeg]) -> Option<(Vec<PathSeg>, String)> {
        let [
            PathSeg::Key("group"),
            PathSeg::Index(g),
            PathSeg::Key("node"),
            PathSeg::Index(n),
            rest @ ..,
        ] = path
        else {
            return None;
        };
        let (file, line) = self.file_line(*g, *n)?;
        let column = match rest.last() {
            Some(PathSeg::Key(k)) => format!(", column `{k}`"),
            _ => String::new(),
        };
        Some((
            vec![
                PathSeg::Key("group"),
                PathSeg::Index(*g),
                PathSeg::Key("nodes_file"),
            ],
            format!("{file} line {line}{column}: "),
        ))
    }
}

fn owner_words(owner: &Owner<'_>) -> String {
    match owner {
        Owner::Machine(m) => format!("machine `{m}`"),
        Owner::Meter(m) => format!("meter `{m}`"),
    }
}

/// The `host:port` of an `opc.tcp://` URL (port 4840 when it has none).
pub fn endpoint_host_port(url: &str) -> Result<(String, u16), String> {
    let example = "(e.g. \"opc.tcp://192.168.1.50:4840\")";
    let Some(rest) = url.strip_prefix("opc.tcp://") else {
        return Err(format!(
            "endpoint `{url}` is not an opc.tcp:// URL {example}"
        ));
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err(format!("endpoint `{url}` names no host {example}"));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, _)) if !h.ends_with(']') && h.contains(':') => (authority, None),
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    };
    let port = match port {
        None => 4840,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("endpoint `{url}`: port `{p}` is not 1–65535 {example}"))?,
    };
    if host.is_empty() {
        return Err(format!("endpoint `{url}` names no host {example}"));
    }
    Ok((host.to_string(), port))
}

impl crate::config::Section for OpcuaServer {
    fn keys(path: &[&str]) -> &'static [&'static str] {
        use crate::config::struct_fields;
        match path {
            [] => struct_fields::<OpcuaServer>(),
            ["group"] => struct_fields::<OpcuaGroup>(),
            ["group", "node"] => struct_fields::<OpcuaNode>(),
            _ => &[],
        }
    }
}

/// `[[opcua]]`'s row in the section table: each server's own checks ([`OpcuaServer::check`])
/// at their lines, its id in the device namespace (one health line each), and its signals'
/// types against every other source's.
pub(crate) fn check_servers(
    checker: &mut crate::config::Checker<'_>,
    root: &toml::Spanned<toml::de::DeTable<'_>>,
    at: &[usize],
    servers: &mut [OpcuaServer],
    refs: &crate::config::References<'_>,
) {
    use crate::config::{Seg, key};
    for (i, server) in at.iter().zip(servers.iter_mut()) {
        let base = vec![key("opcua"), Seg::Index(*i)];
        // Each group's nodes file, beside the config: its rows follow the group's node tables.
        for (g, group) in server.groups.iter_mut().enumerate() {
            let Some(csv) = group.nodes_file.clone() else {
                continue;
            };
            let path = checker.dir().map_or_else(|| csv.clone(), |d| d.join(&csv));
            let (mut rows, errors) = nodes_file::read_into(
                &path,
                &csv.display().to_string(),
                NODE_COLUMNS,
                &mut group.nodes,
                node_of_row,
            );
            if !errors.is_empty() {
                rows.failed = true;
                let mut at = base.clone();
                at.extend([key("group"), Seg::Index(g), key("nodes_file")]);
                let at = checker.span_of(root, &at);
                for e in errors {
                    checker.push(at.clone(), e);
                }
            }
            group.nodes.shrink_to_fit();
            group.file_rows = Some(rows);
        }
        // A profile's groups come first; problems with them are reported at `profile`.
        let mut from_profile = 0;
        if let Some(name) = server.profile.clone() {
            let memo = format!("opcua profile {name}");
            let loaded = match checker.remembered::<OpcuaProfile>(&memo) {
                Some(p) => Ok(p),
                None => load_profile(&name, checker.dir()),
            };
            match loaded {
                Ok(profile) => {
                    checker.remember(memo, profile.clone());
                    from_profile = profile.groups.len();
                    let mut groups = profile.groups;
                    groups.append(&mut server.groups);
                    server.groups = groups;
                }
                Err(message) => {
                    let mut path = base.clone();
                    path.push(key("profile"));
                    let at = checker.span_of(root, &path);
                    checker.push(at, format!("opcua server `{}`: {message}", server.id));
                }
            }
        }
        let server = &*server;
        // A path into the merged groups, as the config writes it: the profile's groups are
        // reported at `profile`, the server's own at their index in its `group` list.
        let relative = |rel: &[PathSeg]| -> Vec<PathSeg> {
            match rel {
                [PathSeg::Key("group"), PathSeg::Index(g), ..] if *g < from_profile => {
                    vec![PathSeg::Key("profile")]
                }
                [PathSeg::Key("group"), PathSeg::Index(g), rest @ ..] => {
                    let mut out = vec![PathSeg::Key("group"), PathSeg::Index(g - from_profile)];
                    out.extend_from_slice(rest);
                    out
                }
                _ => rel.to_vec(),
            }
        };
        let span = |checker: &crate::config::Checker<'_>, rel: &[PathSeg]| {
            let mut path = base.clone();
            path.extend(rel.iter().map(|s| match s {
                PathSeg::Key(k) => key(k),
                PathSeg::Index(n) => Seg::Index(*n),
            }));
            checker.span_of(root, &path)
        };
        if !checker.claim("device", &server.id) {
            let at = span(checker, &[PathSeg::Key("id")]);
            checker.push(
                at,
                format!(
                    "opcua server id `{}` is already used by another server, broker or Modbus device",
                    server.id
                ),
            );
        }
        let is_machine = |id: &str| refs.machines.contains(id);
        let is_meter = |id: &str| refs.meters.contains(id);
        let register = Register {
            is_machine: &is_machine,
            is_meter: &is_meter,
        };
        for problem in server.check(&register) {
            // A row of a nodes file is reported at `nodes_file`, its file and line in words.
            let (path, problem) = match server.in_nodes_file(&problem.path) {
                Some((path, row)) => (
                    path,
                    ConfigProblem {
                        message: format!("{row}{}", problem.message),
                        ..problem
                    },
                ),
                None => (problem.path.clone(), problem),
            };
            let path = relative(&path);
            let at = span(checker, &path);
            let message = if path == [PathSeg::Key("profile")] {
                format!(
                    "profile `{}`: {}",
                    server.profile.as_deref().unwrap_or_default(),
                    problem.message
                )
            } else {
                problem.message
            };
            checker.push(at, message);
        }
        for (g, group) in server.groups.iter().enumerate() {
            for (n, node) in group.nodes.iter().enumerate() {
                let here = || match server.file_line(g, n) {
                    Some((file, line)) => {
                        format!(
                            "[[opcua]] `{}` node {} ({file} line {line})",
                            server.id, node.node
                        )
                    }
                    None => format!("[[opcua]] `{}` node {}", server.id, node.node),
                };
                if let Some(clash) = checker.signal_type_clash(&node.signal, node.value_type, here)
                {
                    let rel = vec![
                        PathSeg::Key("group"),
                        PathSeg::Index(g),
                        PathSeg::Key("node"),
                        PathSeg::Index(n),
                        PathSeg::Key("type"),
                    ];
                    let (rel, clash) = match server.in_nodes_file(&rel) {
                        Some((path, row)) => (path, format!("{row}{clash}")),
                        None => (rel, clash),
                    };
                    let at = span(checker, &relative(&rel));
                    checker.push(at, clash);
                }
            }
        }
    }
}

/// What `check --plan` shows of a server: the connection, then each group as the agent will
/// read it (subscriptions split at `max_items_per_subscription`, polled groups in Read requests
/// of `max_nodes_per_read`, or at most 500 until the server says its own limit), each node with
/// the signal it becomes.
pub fn shown(server: &OpcuaServer) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let user = match (&server.username, &server.user_certificate) {
        (Some(u), _) => format!("user {u}"),
        (None, Some(_)) => "user certificate".to_string(),
        (None, None) => "anonymous".to_string(),
    };
    let _ = writeln!(
        out,
        "opcua server {} ({}, security {:?}/{:?}, {user}):",
        server.id, server.endpoint, server.security_policy, server.security_mode
    );
    for group in &server.groups {
        let n = group.nodes.len();
        match group.mode {
            ReadMode::Subscribe => {
                let per = server.max_items_per_subscription.max(1) as usize;
                let _ = writeln!(
                    out,
                    "  subscribe, publishing every {:?}, sampling every {:?}, queue {}: {n} monitored item{} in {} subscription{}",
                    group.publishing_interval(),
                    group.sampling_interval(),
                    group.queue_size(),
                    if n == 1 { "" } else { "s" },
                    n.div_ceil(per),
                    if n.div_ceil(per) == 1 { "" } else { "s" },
                );
            }
            ReadMode::Poll => {
                let per = server.max_nodes_per_read.unwrap_or(500).max(1) as usize;
                let _ = writeln!(
                    out,
                    "  poll every {:?}: {n} node{} in {} Read request{}{}",
                    group.poll(),
                    if n == 1 { "" } else { "s" },
                    n.div_ceil(per),
                    if n.div_ceil(per) == 1 { "" } else { "s" },
                    if server.max_nodes_per_read.is_none() && n > per {
                        " (fewer if the server's MaxNodesPerRead allows more than 500)"
                    } else {
                        ""
                    },
                );
            }
        }
        for node in &group.nodes {
            let owner = match server.owner(node) {
                Some(Owner::Machine(m)) => format!("machine {m}"),
                Some(Owner::Meter(m)) => format!("meter {m}"),
                None => "nobody".to_string(),
            };
            let index = node.index.map(|i| format!("[{i}]")).unwrap_or_default();
            let _ = writeln!(
                out,
                "    {}{index} → {owner} {}, {}",
                node.node,
                node.signal,
                node.value_type.with_article()
            );
        }
    }
    out
}

/// What the server's nodes deliver, for the check that every signal a state rule, meter or
/// part counter names comes from somewhere.
pub(crate) fn deliveries(server: &OpcuaServer, out: &mut crate::config::Deliveries) {
    use crate::config::To;
    for (owner, signal, _) in server.signals() {
        let to = match owner {
            Owner::Machine(m) => To::Machine(m),
            Owner::Meter(m) => To::Meter(m),
        };
        out.signal(to, signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> OpcuaServer {
        #[derive(Deserialize)]
        struct Doc {
            opcua: Vec<OpcuaServer>,
        }
        let doc: Doc = toml::from_str(text).unwrap_or_else(|e| panic!("{e}"));
        doc.opcua.into_iter().next().unwrap()
    }

    fn problems(server: &OpcuaServer) -> Vec<String> {
        let register = Register {
            is_machine: &|m| m.starts_with("cnc"),
            is_meter: &|m| m == "main",
        };
        server
            .check(&register)
            .into_iter()
            .map(|p| {
                let path: Vec<String> = p
                    .path
                    .iter()
                    .map(|s| match s {
                        PathSeg::Key(k) => k.to_string(),
                        PathSeg::Index(i) => i.to_string(),
                    })
                    .collect();
                format!("{}: {}", path.join("."), p.message)
            })
            .collect()
    }

    const GOOD: &str = r#"
[[opcua]]
id = "cnc07"
endpoint = "opc.tcp://192.168.1.50:4840"
security_policy = "basic256sha256"
security_mode = "sign_and_encrypt"
username = "shopfloor"
password = { env = "CNC07_OPCUA_PASSWORD" }
machine = "cnc07"

  [[opcua.group]]
  publishing_interval = "500ms"
  queue_size = 5
  [[opcua.group.node]]
  node = "ns=2;s=/Channel/Spindle/actSpeed"
  signal = "spindle_speed"
  deadband = { absolute = 5.0 }
  [[opcua.group.node]]
  node = "ns=2;s=/Channel/Axis/load"
  signal = "axis_load_z"
  index = 2
  [[opcua.group.node]]
  node = "nsu=urn:meter;i=7"
  signal = "power_kw"
  meter = "main"

  [[opcua.group]]
  mode = "poll"
  poll = "10s"
  [[opcua.group.node]]
  node = "ns=2;s=/Channel/State/acTotalParts"
  signal = "parts_total"
  type = "int"
"#;

    #[test]
    fn a_good_section_reads_with_its_defaults() {
        let s = load(GOOD);
        assert_eq!(problems(&s), Vec::<String>::new());
        assert_eq!(s.security_policy, SecurityPolicy::Basic256sha256);
        assert_eq!(s.security_mode, SecurityMode::SignAndEncrypt);
        assert_eq!(s.password, Some(Secret::Env("CNC07_OPCUA_PASSWORD".into())));
        assert_eq!(s.session_timeout, Duration::from_secs(60));
        assert_eq!(s.request_timeout, Duration::from_secs(10));
        assert_eq!(s.max_items_per_subscription, 1000);
        assert_eq!(s.max_nodes_per_read, None);
        let sub = &s.groups[0];
        assert_eq!(sub.mode, ReadMode::Subscribe);
        assert_eq!(sub.publishing_interval(), Duration::from_millis(500));
        assert_eq!(sub.sampling_interval(), Duration::from_millis(500));
        assert_eq!(sub.queue_size(), 5);
        assert_eq!(sub.nodes[0].deadband, Some(Deadband::Absolute(5.0)));
        assert_eq!(sub.nodes[0].value_type, SignalType::Float);
        assert_eq!(sub.nodes[1].index, Some(2));
        assert_eq!(s.owner(&sub.nodes[2]), Some(Owner::Meter("main")));
        assert_eq!(s.owner(&sub.nodes[0]), Some(Owner::Machine("cnc07")));
        let poll = &s.groups[1];
        assert_eq!(
            (poll.mode, poll.poll()),
            (ReadMode::Poll, Duration::from_secs(10))
        );
        assert_eq!(poll.nodes[0].value_type, SignalType::Int);
        assert_eq!(s.signals().count(), 4);
    }

    #[test]
    fn a_password_in_the_config_text_is_refused() {
        let text = GOOD.replace(
            "password = { env = \"CNC07_OPCUA_PASSWORD\" }",
            "password = \"hunter2\"",
        );
        #[derive(Debug, Deserialize)]
        struct Doc {
            #[allow(dead_code)]
            opcua: Vec<OpcuaServer>,
        }
        let e = toml::from_str::<Doc>(&text).unwrap_err().to_string();
        assert!(e.contains("a secret is never written in the config"), "{e}");
        assert!(!e.contains("hunter2 "), "{e}");
    }

    #[test]
    fn a_bad_node_id_is_named_at_read_time() {
        let text = GOOD.replace("ns=2;s=/Channel/Axis/load", "ns=2;q=load");
        #[derive(Debug, Deserialize)]
        struct Doc {
            #[allow(dead_code)]
            opcua: Vec<OpcuaServer>,
        }
        let e = toml::from_str::<Doc>(&text).unwrap_err().to_string();
        assert!(e.contains("unknown identifier type `q=`"), "{e}");
    }

    #[test]
    fn every_mistake_is_reported_at_its_key() {
        let text = r#"
[[opcua]]
id = "plc1"
endpoint = "tcp://10.0.0.5:4840"
security_mode = "sign"
username = "u"
client_certificate = "own.der"
session_timeout = "0s"
max_items_per_subscription = 0
max_nodes_per_read = 5000
machine = "press1"

  [[opcua.group]]
  poll = "1s"
  queue_size = 0
  [[opcua.group.node]]
  node = "i=2258"
  signal = "clock"
  type = "string"
  deadband = { percent = 150 }
  [[opcua.group.node]]
  node = "ns=2;i=5"
  signal = "clock"
  [[opcua.group.node]]
  node = "ns=2;i=6"
  signal = "clock_quality"
  type = "string"

  [[opcua.group]]
  mode = "poll"
  sampling_interval = "1s"
  [[opcua.group.node]]
  node = "ns=2;i=9"
  signal = "x"
  deadband = { absolute = 1 }
"#;
        let got = problems(&load(text));
        let want = [
            "endpoint: opcua server `plc1`: endpoint `tcp://10.0.0.5:4840` is not an opc.tcp:// URL (e.g. \"opc.tcp://192.168.1.50:4840\")",
            "security_mode: opcua server `plc1`: security_mode `sign` or `sign_and_encrypt` needs a security_policy (e.g. \"basic256sha256\")",
            "username: opcua server `plc1`: a username needs a password = { env = \"…\" } or { file = \"…\" }",
            "client_certificate: opcua server `plc1`: client_certificate needs its client_private_key",
            "session_timeout: opcua server `plc1`: session_timeout must be more than 0s",
            "max_items_per_subscription: opcua server `plc1`: max_items_per_subscription is 1–1000 (the most values the client decodes in one answer; more nodes are split over several)",
            "max_nodes_per_read: opcua server `plc1`: max_nodes_per_read is 1–1000 (the most values the client decodes in one answer; more nodes are split over several)",
            "machine: opcua server `plc1`: `press1` is not a registered [[machine]]",
            "group.0.poll: `poll` is for groups with mode = \"poll\"; a subscription has a publishing_interval",
            "group.0.queue_size: queue_size must be at least 1",
            "group.0.node.0.deadband: a deadband needs a numeric signal; `clock` is a string",
            "group.0.node.0.deadband: deadband percent = 150: must be from 0 to 100",
            "group.0.node.1.signal: signal `clock` of machine `press1` is already mapped (group 1, node 1): one node per signal",
            "group.1.sampling_interval: `sampling_interval` is for subscriptions; a group with mode = \"poll\" has `poll`",
            "group.1.node.0.deadband: a deadband is for subscriptions; a polled node is read every poll",
            "group.0.node.2.signal: signal `clock_quality` would clash with the quality field written beside `clock` when its value is uncertain: choose another name",
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn a_node_without_an_owner_and_a_server_without_nodes() {
        let s = load(
            r#"
[[opcua]]
id = "x"
endpoint = "opc.tcp://[fe80::1]:4840/UA/Server"
  [[opcua.group]]
  [[opcua.group.node]]
  node = "i=2258"
  signal = "clock"
"#,
        );
        assert_eq!(
            problems(&s),
            [
                "group.0.node.0.signal: signal `clock` belongs to no machine or meter: set `machine` (or `meter`) on the [[opcua]] server or on the node"
            ]
        );
        let s = load("[[opcua]]\nid = \"y\"\nendpoint = \"opc.tcp://h\"\n");
        assert_eq!(
            problems(&s),
            ["id: opcua server `y` has no [[opcua.group.node]]: it would read nothing"]
        );
    }

    const SITE: &str = "[site]\ncounty = \"yk\"\nsector = \"doors\"\nenterprise = \"e1\"\n[[machine]]\nid = \"mc01\"\nkind = \"machining_centre\"\ncnc = true\n";

    #[test]
    fn the_sinumerik_profile_fills_a_server_and_its_own_groups_add_to_it() {
        let text = format!(
            "{SITE}[[opcua]]\nid = \"ncu\"\nendpoint = \"opc.tcp://192.168.214.1:4840\"\nprofile = \"sinumerik-828d-840dsl\"\nmachine = \"mc01\"\n[[opcua.group]]\nmode = \"poll\"\npoll = \"10s\"\n[[opcua.group.node]]\nnode = \"ns=2;s=/Channel/State/acTotalParts\"\nsignal = \"parts_total\"\ntype = \"int\"\n"
        );
        let cfg = crate::agent::config::load_str(&text, "t.toml").unwrap_or_else(|d| panic!("{d}"));
        let server = &cfg.opcua[0];
        assert_eq!(server.groups.len(), 2);
        let signals: Vec<&str> = server
            .groups
            .iter()
            .flat_map(|g| &g.nodes)
            .map(|n| n.signal.as_str())
            .collect();
        assert_eq!(
            signals,
            [
                "prog_status",
                "op_mode",
                "spindle_rpm",
                "spindle_load",
                "spindle_override",
                "feed_override",
                "parts",
                "alarm_code",
                "program",
                "parts_total"
            ]
        );
        assert_eq!(
            server.groups[0].nodes[0].node.to_string(),
            "ns=2;s=/Channel/State/progStatus"
        );
        assert_eq!(server.groups[1].mode, ReadMode::Poll);
    }

    #[test]
    fn a_profile_mistake_is_reported_at_profile_and_the_servers_own_at_its_group() {
        let problems = |server: &str| -> Vec<String> {
            match crate::agent::config::load_str(&format!("{SITE}{server}"), "t.toml") {
                Ok(_) => Vec::new(),
                Err(d) => d.problems.iter().map(|p| p.message.clone()).collect(),
            }
        };
        let got = problems(
            "[[opcua]]\nid = \"ncu\"\nendpoint = \"opc.tcp://h:4840\"\nprofile = \"no-such\"\nmachine = \"mc01\"\n[[opcua.group]]\n[[opcua.group.node]]\nnode = \"i=2258\"\nsignal = \"clock\"\ntype = \"string\"\n",
        );
        assert!(
            got.len() == 1 && got[0].contains("unknown profile `no-such`"),
            "{got:?}"
        );
        // The server's own node maps a signal the profile maps already: reported at the
        // server's group 0 (the merged group 1), naming the clash.
        let got = problems(
            "[[opcua]]\nid = \"ncu\"\nendpoint = \"opc.tcp://h:4840\"\nprofile = \"sinumerik-828d-840dsl\"\nmachine = \"mc01\"\n[[opcua.group]]\n[[opcua.group.node]]\nnode = \"ns=2;s=/x\"\nsignal = \"parts\"\ntype = \"int\"\n",
        );
        assert!(
            got.len() == 1 && got[0].contains("signal `parts` of machine `mc01` is already mapped"),
            "{got:?}"
        );
    }

    /// A config in a fresh directory with the files `files` beside it; its problems as
    /// `line:column: message`, or the config.
    fn load_with_files(
        config: &str,
        files: &[(&str, &str)],
    ) -> Result<crate::agent::config::Config, Vec<String>> {
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, text) in files {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, text).expect("write");
        }
        let path = dir.path().join("shopfloor.toml");
        std::fs::write(&path, config).expect("write config");
        crate::agent::config::load(&path).map_err(|d| {
            d.problems
                .iter()
                .map(|p| format!("{}:{}: {}", p.line, p.column, p.message))
                .collect()
        })
    }

    const TWO_LATHES: &str = "[site]\ncounty = \"yk\"\nsector = \"doors\"\nenterprise = \"e1\"\n\
        [[machine]]\nid = \"cnc1\"\nkind = \"lathe\"\ncnc = true\n\
        [[machine]]\nid = \"cnc2\"\nkind = \"lathe\"\ncnc = true\n";

    #[test]
    fn a_nodes_file_adds_its_rows_after_the_groups_own_nodes() {
        let config = format!(
            "{TWO_LATHES}[[opcua]]\nid = \"plc\"\nendpoint = \"opc.tcp://h:4840\"\nmachine = \"cnc1\"\n\
             [[opcua.group]]\nnodes_file = \"tags/lathes.csv\"\n\
             [[opcua.group.node]]\nnode = \"ns=2;s=Mode\"\nsignal = \"mode\"\ntype = \"string\"\n"
        );
        let csv = "node,signal,type,machine,deadband\n\
                   \"ns=2;s=Spindle,Speed\",spindle_speed,float,,5\n\
                   ns=2;s=Count,parts,int,cnc2,\n";
        let cfg = load_with_files(&config, &[("tags/lathes.csv", csv)])
            .unwrap_or_else(|p| panic!("{p:#?}"));
        let server = &cfg.opcua[0];
        let nodes = &server.groups[0].nodes;
        let got: Vec<(String, &str, Option<Owner<'_>>)> = nodes
            .iter()
            .map(|n| (n.node.to_string(), n.signal.as_str(), server.owner(n)))
            .collect();
        assert_eq!(
            got,
            [
                ("ns=2;s=Mode".into(), "mode", Some(Owner::Machine("cnc1"))),
                (
                    "ns=2;s=Spindle,Speed".into(),
                    "spindle_speed",
                    Some(Owner::Machine("cnc1"))
                ),
                ("ns=2;s=Count".into(), "parts", Some(Owner::Machine("cnc2"))),
            ]
        );
        assert_eq!(nodes[1].deadband, Some(Deadband::Absolute(5.0)));
        assert_eq!(server.node_place(0, 0), "group 1, node 1");
        assert_eq!(server.node_place(0, 2), "tags/lathes.csv line 3");
    }

    #[test]
    fn the_whole_config_checks_on_a_nodes_files_rows_name_its_file_and_line() {
        let config = format!(
            "{TWO_LATHES}[[modbus]]\nid = \"m\"\naddress = \"10.0.0.9:502\"\nmachine = \"cnc2\"\n\
             [[modbus.field]]\nsignal = \"temp\"\nregister = \"holding\"\naddress = 1\ntype = \"u16\"\n\
             [[opcua]]\nid = \"plc\"\nendpoint = \"opc.tcp://h:4840\"\nmachine = \"cnc1\"\n\
             [[opcua.group]]\nmode = \"poll\"\n\
             nodes_file = \"tags.csv\"\n\
             [[opcua.group.node]]\nnode = \"ns=2;s=Mode\"\nsignal = \"mode\"\ntype = \"string\"\n"
        );
        let csv = "signal,node,machine,deadband,type\n\
                   speed,ns=2;s=A,,,\n\
                   mode,ns=2;s=B,,,string\n\
                   \n\
                   speed,ns=2;s=C,,,\n\
                   x,ns=2;s=D,press9,,\n\
                   y,ns=2;s=E,,1,\n\
                   temp,ns=2;s=F,cnc2,,float\n\
                   z,ns=2;s=G,,,flaot\n";
        let problems = load_with_files(&config, &[("tags.csv", csv)]).expect_err("refused");
        // Line 28 of the config is `nodes_file = …`, its value at column 14.
        let at = "28:14: ";
        let want = [
            format!(
                "{at}tags.csv line 9, column `type`: unknown type `flaot` (float, int, bool, string)"
            ),
            format!(
                "{at}tags.csv line 3, column `signal`: signal `mode` of machine `cnc1` is already mapped (group 1, node 1): one node per signal"
            ),
            format!(
                "{at}tags.csv line 5, column `signal`: signal `speed` of machine `cnc1` is already mapped (tags.csv line 2): one node per signal"
            ),
            format!(
                "{at}tags.csv line 6, column `machine`: `press9` is not a registered [[machine]]"
            ),
            format!(
                "{at}tags.csv line 7, column `deadband`: a deadband is for subscriptions; a polled node is read every poll"
            ),
            format!(
                "{at}tags.csv line 8, column `type`: signal `temp` is a float here but an integer in modbus device `m`: the store keeps one type per field of `signal` across all machines and meters, and refuses the lines of the other type (rename one, or make the types agree: `scale` makes a register a float)"
            ),
        ];
        let mut got = problems.clone();
        got.sort();
        let mut want = want.to_vec();
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn a_missing_nodes_file_is_a_config_error_at_its_key() {
        let config = format!(
            "{TWO_LATHES}[[opcua]]\nid = \"plc\"\nendpoint = \"opc.tcp://h:4840\"\nmachine = \"cnc1\"\n\
             [[opcua.group]]\nnodes_file = \"tags/none.csv\"\n"
        );
        let problems = load_with_files(&config, &[]).expect_err("refused");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("18:14: cannot read nodes_file `tags/none.csv` (")
                && problems[0].contains("No such file"),
            "{problems:?}"
        );
        // Header only: the group has no nodes, said at `nodes_file`.
        let problems = load_with_files(
            &config.replace("none", "empty"),
            &[("tags/empty.csv", "node,signal\n")],
        )
        .expect_err("refused");
        assert_eq!(
            problems,
            [
                "18:14: opcua server `plc`: the group's nodes_file has no rows and the group no [[opcua.group.node]]"
            ]
        );
    }

    #[test]
    fn a_profiles_nodes_file_is_beside_the_profile() {
        let config = format!(
            "{TWO_LATHES}[[opcua]]\nid = \"plc\"\nendpoint = \"opc.tcp://h:4840\"\nmachine = \"cnc1\"\nprofile = \"lathe\"\n"
        );
        let profile = "description = \"a lathe\"\n[[group]]\nnodes_file = \"lathe.csv\"\n";
        let cfg = load_with_files(
            &config,
            &[
                ("profiles/lathe.toml", profile),
                ("profiles/lathe.csv", "node,signal\nns=2;s=S,speed\n"),
            ],
        )
        .unwrap_or_else(|p| panic!("{p:#?}"));
        assert_eq!(cfg.opcua[0].groups[0].nodes[0].signal, "speed");
        let problems = load_with_files(
            &config,
            &[
                ("profiles/lathe.toml", profile),
                (
                    "profiles/lathe.csv",
                    "node,signal,machine\nns=2;s=S,speed,cnc2\n",
                ),
            ],
        )
        .expect_err("refused");
        assert!(
            problems
                .iter()
                .any(|p| p.contains("node `speed` names a machine or meter")),
            "{problems:?}"
        );
    }

    #[test]
    fn endpoints_give_host_and_port() {
        assert_eq!(
            endpoint_host_port("opc.tcp://10.0.0.5:4841"),
            Ok(("10.0.0.5".into(), 4841))
        );
        assert_eq!(
            endpoint_host_port("opc.tcp://plc/UA"),
            Ok(("plc".into(), 4840))
        );
        assert_eq!(
            endpoint_host_port("opc.tcp://[fe80::1]:4840/x"),
            Ok(("[fe80::1]".into(), 4840))
        );
        assert!(
            endpoint_host_port("opc.tcp://plc:0")
                .unwrap_err()
                .contains("not 1–65535")
        );
        assert!(
            endpoint_host_port("opc.tcp://")
                .unwrap_err()
                .contains("names no host")
        );
    }
}

#[cfg(test)]
mod nodes_file_tests {
    //! A nodes file read into nodes: the CSV reader (`nodes_file`) with [`node_of_row`].
    use super::*;
    use std::path::Path;

    fn read(text: &str) -> (Vec<OpcuaNode>, FileRows, Vec<String>) {
        read_bytes(text.as_bytes(), "tags/lathes.csv")
    }

    /// The mistakes of the file at `path`, named `shown`.
    fn read_path(path: &Path, shown: &str) -> Vec<String> {
        let mut nodes = Vec::new();
        nodes_file::read_into(path, shown, NODE_COLUMNS, &mut nodes, node_of_row).1
    }

    /// The nodes, rows and mistakes of a file `shown` holding `bytes`.
    fn read_bytes(bytes: &[u8], shown: &str) -> (Vec<OpcuaNode>, FileRows, Vec<String>) {
        let mut nodes = Vec::new();
        let mut rows = FileRows::default();
        let mut errors = Vec::new();
        nodes_file::read_from(
            bytes,
            shown,
            NODE_COLUMNS,
            &mut nodes,
            &mut rows,
            &mut errors,
            node_of_row,
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
        assert_eq!(
            nodes[0].node.to_string(),
            "ns=2;s=/Channel/Spindle/actSpeed"
        );
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
            [
                "ns=2;s=a,b",
                "ns=2;s=say \"hi\"",
                "ns=2;s=two\nlines",
                "ns=2;s=x"
            ]
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
            [
                "tags/lathes.csv line 1: unknown column `typ` (did you mean `type`?); the columns are node, signal, type, index, deadband, machine, meter"
            ]
        );
        assert_eq!(
            one("node,type\n"),
            [
                "tags/lathes.csv line 1: the header has no column `signal`: the first line names the columns, `node` and `signal` required (e.g. node,signal,type)"
            ]
        );
        assert_eq!(
            one("node,signal,node\n"),
            ["tags/lathes.csv line 1: column `node` is named twice"]
        );
        assert_eq!(
            one("\n\n"),
            [
                "nodes_file `tags/lathes.csv` is empty: its first line names the columns (node, signal, type, index, deadband, machine, meter; node and signal required)"
            ]
        );
    }

    #[test]
    fn text_that_is_not_utf8_is_named() {
        let (_, _, errors) = read_bytes(b"node,signal\nns=2;s=\xc4\xe3,a\n", "t.csv");
        assert_eq!(
            errors,
            [
                "t.csv line 2: not UTF-8 text: save the file as UTF-8 (Excel: Save As, \"CSV UTF-8\")"
            ]
        );
    }

    /// Hostile files: any mix of separators, quotes, line ends, a BOM, bytes that are not
    /// UTF-8 and cell text never panics, and every node comes with the line it starts on.
    #[test]
    fn arbitrary_bytes_never_panic_and_every_node_has_its_line() {
        const PIECES: &[&[u8]] = &[
            b",",
            b";",
            b"\"",
            b"\"\"",
            b"\n",
            b"\r\n",
            b" ",
            b"node",
            b"signal",
            b"type",
            b"index",
            b"deadband",
            b"machine",
            b"ns=2;s=",
            b"i=7",
            b"a",
            b"int",
            b"2%",
            b"-1",
            b"\xef\xbb\xbf",
            b"\xff",
            b"\xc4\xe3",
            "运".as_bytes(),
        ];
        // A fixed linear congruential generator: the same 20,000 files every run.
        let mut state: u64 = 0x5eed;
        let mut next = |n: usize| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as usize % n
        };
        let mut made = 0;
        for _ in 0..20_000 {
            let mut file = b"node,signal,type,index,deadband\n".to_vec();
            if next(8) == 0 {
                file.clear();
            }
            // Rows of likely cells, with a random piece thrown in now and then.
            const CELLS: [&[&[u8]]; 5] = [
                &[
                    b"ns=2;s=a",
                    b"\"ns=2;s=a,\"\"b\"\"\"",
                    b"i=7",
                    b"",
                    b"ns=2;q=x",
                ],
                &[b"a", b"b", b"", b"c d"],
                &[b"int", b"", b"flaot", b"bool"],
                &[b"", b"1", b"x"],
                &[b"", b"2%", b"5", b"much"],
            ];
            for _ in 0..next(6) {
                for (c, choices) in CELLS.iter().enumerate() {
                    if c > 0 {
                        file.push(b',');
                    }
                    file.extend_from_slice(choices[next(choices.len())]);
                    if next(10) == 0 {
                        file.extend_from_slice(PIECES[next(PIECES.len())]);
                    }
                }
                file.extend_from_slice([&b"\n"[..], b"\r\n", b"\n\n"][next(3)]);
            }
            let (nodes, rows, errors) = read_bytes(&file, "f.csv");
            assert_eq!(
                rows.lines.len(),
                nodes.len(),
                "{:?}",
                String::from_utf8_lossy(&file)
            );
            let lines = file.iter().filter(|b| **b == b'\n').count() as u32 + 1;
            assert!(rows.lines.windows(2).all(|w| w[0] < w[1]));
            assert!(rows.lines.iter().all(|l| (2..=lines).contains(l)));
            assert!(errors.len() <= 21);
            made += nodes.len();
        }
        // Some of them hold good rows too, so that the nodes' side is exercised.
        assert!(made > 100, "{made} nodes");
    }

    #[test]
    fn a_directory_or_a_file_without_line_breaks_stops_with_one_mistake() {
        let dir = tempfile::tempdir().expect("temp dir");
        let errors = read_path(dir.path(), "tags");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("tags line 1: cannot read on: "),
            "{errors:?}"
        );
        let errors = read_path(Path::new("/dev/zero"), "zero");
        assert_eq!(
            errors,
            [
                "zero line 1: a line longer than 64 KiB: not a tag list (one node a line); reading stopped here"
            ]
        );
        let long_quote = format!("node,signal\n\"{}", "ns=2;s=x\n".repeat(200_000));
        let errors = read(&long_quote).2;
        assert_eq!(
            errors,
            [
                "tags/lathes.csv line 2: a quoted field opened on this line runs on past 1 MiB: close it with `\"`; reading stopped here"
            ]
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
        let errors = read_path(Path::new("/nonexistent/tags.csv"), "tags.csv");
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].starts_with("cannot read nodes_file `tags.csv` (/nonexistent/tags.csv): ")
                && errors[0].ends_with("the path is relative to the config file's directory"),
            "{errors:?}"
        );
    }
}
