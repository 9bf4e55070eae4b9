//! `shopfloor probe opc.tcp://HOST:PORT[/path] [NODE ...]`: commissioning a server before
//! writing its `[[opcua]]` section.
//!
//! Connects exactly as the source does ([`super::client::open_session`]), prints the endpoint,
//! the server's namespace table and `MaxNodesPerRead`, then either reads the nodes named on
//! the command line (value, status, variant type, source timestamp, data type and the `type =`
//! a `[[opcua.group.node]]` should use) or browses the Objects folder two levels deep, printing
//! each child's node id as the config writes it (`nsu=` above namespace 0), its browse name,
//! its node class and, for a variable, its value and suggested type.
//!
//! Read only: the probe calls GetEndpoints, CreateSession, ActivateSession, Read, Browse and
//! CloseSession, nothing else.
//!
//! Security from the URL's query: `?security_policy=basic256sha256&security_mode=sign_and_encrypt
//! &username=operator`, the password from the environment variable [`PASSWORD_ENV`]. The
//! certificate store is a temporary directory unless `--pki-dir` names one (the agent's, to see
//! whether it trusts the server).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use opcua::client::Session;
use opcua::types::{
    AttributeId, BrowseDescription, BrowseDirection, BrowseResultMask, DataTypeId, DataValue,
    NodeClass, NodeId, ReadValueId, ReferenceTypeId, TimestampsToReturn, Variant,
};
use serde::Deserialize;

use super::client::{build_client, explain, open_session, read_server_facts};
use super::config::{DEFAULT_MAX_NODES_PER_READ, OpcuaServer};
use super::node_id::NodeAddress;
use super::value::{timestamp_of, type_name};

/// The environment variable the probe takes a user's password from.
pub const PASSWORD_ENV: &str = "SHOPFLOOR_OPCUA_PASSWORD";

/// References printed when browsing before the listing stops with "…".
pub const MAX_LISTED: usize = 200;

/// The Objects folder (i=85) and the Server object (i=2253, diagnostics: not descended into).
const OBJECTS: u32 = 85;
const SERVER_OBJECT: u32 = 2253;

/// Where and how to connect.
pub struct Target {
    pub server: OpcuaServer,
    /// The certificate store is a temporary directory, removed afterwards.
    pub temporary_pki: bool,
}

/// Reads `opc.tcp://host:port[/path][?security_policy=…&security_mode=…&username=…]` into the
/// server settings the source would have.
pub fn parse_url(
    url: &str,
    pki_dir: Option<&Path>,
    timeout: Option<Duration>,
) -> Result<Target, String> {
    if !url.starts_with("opc.tcp://") {
        return Err(format!("`{url}` is not an opc.tcp:// URL"));
    }
    let (endpoint, query) = url.split_once('?').unwrap_or((url, ""));
    super::config::endpoint_host_port(endpoint)?;
    let mut table = toml::Table::new();
    let mut put = |k: &str, v: toml::Value| {
        table.insert(k.to_string(), v);
    };
    put("id", "probe".into());
    put("endpoint", endpoint.into());
    let mut policy_given = false;
    let mut mode_given = false;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "security_policy" => policy_given = v != "none",
            "security_mode" => mode_given = true,
            "username" => {
                put(
                    "password",
                    toml::Value::Table(toml::Table::from_iter([(
                        "env".to_string(),
                        toml::Value::from(PASSWORD_ENV),
                    )])),
                );
            }
            _ => {
                return Err(format!(
                    "`{k}` is not a probe URL parameter: use security_policy, security_mode \
                     or username"
                ));
            }
        }
        put(k, v.into());
    }
    if policy_given && !mode_given {
        put("security_mode", "sign_and_encrypt".into());
    }
    let timeout = timeout.unwrap_or(Duration::from_secs(5));
    put(
        "request_timeout",
        format!("{}ms", timeout.as_millis().max(1)).into(),
    );
    let temporary_pki = pki_dir.is_none();
    let pki = match pki_dir {
        Some(p) => p.to_path_buf(),
        None => temporary_pki_dir(),
    };
    put("pki_dir", pki.display().to_string().into());
    let server = OpcuaServer::deserialize(toml::Value::Table(table)).map_err(|e| {
        format!(
            "{url}: {}",
            e.to_string().trim().replace('\n', " ").replace("  ", " ")
        )
    })?;
    Ok(Target {
        server,
        temporary_pki,
    })
}

/// What the probe printed, and why it stopped early if it did.
pub struct Outcome {
    pub text: String,
    pub error: Option<String>,
}

/// Lists the endpoints, connects, prints what the server says about itself, then reads
/// `nodes` or browses Objects.
pub async fn run(target: &Target, nodes: &[String]) -> Outcome {
    let mut text = String::new();
    let addresses = match nodes
        .iter()
        .map(|n| NodeAddress::parse(n).map_err(|e| format!("`{n}`: {e}")))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(a) => a,
        Err(e) => {
            return Outcome {
                text,
                error: Some(e),
            };
        }
    };
    let s = &target.server;
    let pki = s.pki_dir.clone().unwrap_or_default();
    let result = probe(s, &pki, &addresses, &mut text).await;
    if target.temporary_pki {
        let _ = std::fs::remove_dir_all(&pki);
    }
    let error = result.err().map(|e| {
        if target.temporary_pki && e.contains("rejected") {
            format!(
                "{e}\n(the probe's certificate store was temporary and is gone: run it again \
                 with --pki-dir DIR, e.g. the agent's <data_dir>/opcua/pki, to keep it)"
            )
        } else {
            e
        }
    });
    Outcome { text, error }
}

async fn probe(
    s: &OpcuaServer,
    pki: &Path,
    nodes: &[NodeAddress],
    out: &mut String,
) -> Result<(), String> {
    endpoints(s, pki, out).await?;
    let (guard, _lost) = open_session(s, pki).await?;
    let session = guard.session.clone();
    let facts = read_server_facts(&session).await;
    let result = match facts {
        Ok((namespaces, max_read)) => {
            session_facts(s, &namespaces, max_read, out);
            let batch = max_read
                .filter(|n| *n > 0)
                .unwrap_or(DEFAULT_MAX_NODES_PER_READ)
                .max(2) as usize;
            if nodes.is_empty() {
                browse(&session, &namespaces, batch, out).await
            } else {
                read_nodes(&session, &namespaces, nodes, batch, out).await
            }
        }
        Err(e) => Err(format!("{}: reading the namespace table: {e}", s.endpoint)),
    };
    guard.close().await;
    result
}

/// GetEndpoints: what the server offers, one line each.
async fn endpoints(s: &OpcuaServer, pki: &Path, out: &mut String) -> Result<(), String> {
    let client = build_client(s, pki)?;
    let list = tokio::time::timeout(
        s.request_timeout,
        client.get_server_endpoints_from_url(s.endpoint.as_str()),
    )
    .await
    .map_err(|_| format!("no answer from {} in {:?}", s.endpoint, s.request_timeout))?
    .map_err(|e| explain(s, pki, e.status(), &e.to_string()))?;
    let _ = writeln!(out, "{} offers:", s.endpoint);
    for e in &list {
        let policy = e.security_policy_uri.as_ref();
        let policy = policy.rsplit_once('#').map_or(policy, |(_, p)| p);
        let tokens: Vec<String> = e
            .user_identity_tokens
            .iter()
            .flatten()
            .map(|t| format!("{:?}", t.token_type))
            .collect();
        let _ = writeln!(
            out,
            "  {}  {policy} / {:?}  users: {}",
            e.endpoint_url.as_ref(),
            e.security_mode,
            tokens.join(", ")
        );
    }
    let _ = writeln!(out);
    Ok(())
}

fn session_facts(s: &OpcuaServer, namespaces: &[String], max_read: Option<u32>, out: &mut String) {
    let identity = match &s.username {
        Some(u) => format!("user {u}"),
        None => "anonymous".into(),
    };
    let _ = writeln!(
        out,
        "session: {} / {:?}, {identity}\n",
        s.security_policy.ua_name(),
        s.security_mode
    );
    let _ = writeln!(out, "namespaces:");
    for (i, uri) in namespaces.iter().enumerate() {
        let _ = writeln!(out, "  {i:>3}  {uri}");
    }
    let _ = writeln!(
        out,
        "MaxNodesPerRead: {}\n",
        match max_read {
            Some(0) | None => "not said (the agent reads 500 at a time)".to_string(),
            Some(n) => n.to_string(),
        }
    );
}

/// Reads Value and DataType of each node, in batches.
async fn read_values(
    session: &Session,
    ids: &[NodeId],
    batch: usize,
) -> Result<Vec<(DataValue, DataValue)>, String> {
    let mut out = Vec::new();
    for chunk in ids.chunks((batch / 2).max(1)) {
        let request: Vec<ReadValueId> = chunk
            .iter()
            .flat_map(|id| {
                [AttributeId::Value, AttributeId::DataType].map(|a| ReadValueId {
                    node_id: id.clone(),
                    attribute_id: a as u32,
                    ..Default::default()
                })
            })
            .collect();
        let values = session
            .read(&request, TimestampsToReturn::Both, 0.0)
            .await
            .map_err(|e| format!("Read: {e}"))?;
        let mut it = values.into_iter();
        while let (Some(v), Some(t)) = (it.next(), it.next()) {
            out.push((v, t));
        }
    }
    Ok(out)
}

async fn read_nodes(
    session: &Session,
    namespaces: &[String],
    nodes: &[NodeAddress],
    batch: usize,
    out: &mut String,
) -> Result<(), String> {
    let mut known = Vec::new();
    for n in nodes {
        match n.resolve(namespaces) {
            Some(id) => known.push((n, id)),
            None => {
                let _ = writeln!(
                    out,
                    "{n}\n  the server has no namespace with that URI (its table is above)\n"
                );
            }
        }
    }
    let ids: Vec<NodeId> = known.iter().map(|(_, id)| id.clone()).collect();
    let values = read_values(session, &ids, batch).await?;
    for ((n, id), (value, data_type)) in known.iter().zip(&values) {
        let config_id = NodeAddress::of(id, namespaces);
        let _ = writeln!(out, "{n}");
        if config_id.to_string() != n.to_string() {
            let _ = writeln!(out, "  node id:     {config_id}");
        }
        let status = value.status.unwrap_or_default();
        let _ = writeln!(out, "  status:      {status}");
        match &value.value {
            Some(v) if !matches!(v, Variant::Empty) => {
                let _ = writeln!(out, "  variant:     {}", variant_type(v));
                let _ = writeln!(out, "  value:       {}", shown(v));
            }
            _ => {
                let _ = writeln!(out, "  value:       none");
            }
        }
        if let Some(Variant::NodeId(t)) = &data_type.value {
            let _ = writeln!(out, "  data type:   {}", data_type_name(t, namespaces));
        }
        let when = |t: &Option<opcua::types::DateTime>| {
            t.as_ref()
                .and_then(timestamp_of)
                .map_or("none".to_string(), |t| t.to_string())
        };
        let _ = writeln!(out, "  source time: {}", when(&value.source_timestamp));
        let _ = writeln!(out, "  server time: {}", when(&value.server_timestamp));
        match value.value.as_ref().map(suggested_type) {
            Some(Some(s)) => {
                let _ = writeln!(
                    out,
                    "  config:      node = \"{config_id}\"  type = \"{}\"{}",
                    s.0, s.1
                );
            }
            _ if status.is_bad() => {
                let _ = writeln!(
                    out,
                    "  config:      the server has no value to map ({status})"
                );
            }
            _ => {
                let _ = writeln!(out, "  config:      this type does not map to a signal");
            }
        }
        let _ = writeln!(out);
    }
    Ok(())
}

/// One browsed reference, at depth 1 or 2.
struct Found {
    depth: usize,
    id: NodeId,
    name: String,
    class: NodeClass,
}

async fn browse_children(
    session: &Session,
    parents: &[NodeId],
) -> Result<Vec<Vec<(NodeId, String, NodeClass)>>, String> {
    let request: Vec<BrowseDescription> = parents
        .iter()
        .map(|p| BrowseDescription {
            node_id: p.clone(),
            browse_direction: BrowseDirection::Forward,
            reference_type_id: ReferenceTypeId::HierarchicalReferences.into(),
            include_subtypes: true,
            node_class_mask: 0,
            result_mask: BrowseResultMask::All as u32,
        })
        .collect();
    let results = session
        .browse(&request, MAX_LISTED as u32 + 1, None)
        .await
        .map_err(|e| format!("Browse: {e}"))?;
    Ok(results
        .into_iter()
        .map(|r| {
            r.references
                .unwrap_or_default()
                .into_iter()
                .filter(|d| d.node_id.server_index == 0)
                .map(|d| {
                    (
                        d.node_id.node_id,
                        d.browse_name.name.as_ref().to_string(),
                        d.node_class,
                    )
                })
                .collect()
        })
        .collect())
}

async fn browse(
    session: &Session,
    namespaces: &[String],
    batch: usize,
    out: &mut String,
) -> Result<(), String> {
    let objects = NodeId::new(0, OBJECTS);
    let first = browse_children(session, std::slice::from_ref(&objects))
        .await?
        .into_iter()
        .next()
        .unwrap_or_default();
    let descend: Vec<NodeId> = first
        .iter()
        .filter(|(id, _, class)| {
            *class == NodeClass::Object && *id != NodeId::new(0, SERVER_OBJECT)
        })
        .map(|(id, _, _)| id.clone())
        .collect();
    let mut second = Vec::new();
    for chunk in descend.chunks(50) {
        second.extend(browse_children(session, chunk).await?);
    }
    let mut found = Vec::new();
    for (id, name, class) in first {
        let children = descend
            .iter()
            .position(|d| *d == id)
            .and_then(|i| second.get(i).cloned())
            .unwrap_or_default();
        found.push(Found {
            depth: 1,
            id,
            name,
            class,
        });
        found.extend(children.into_iter().map(|(id, name, class)| Found {
            depth: 2,
            id,
            name,
            class,
        }));
    }
    let more = found.len() > MAX_LISTED;
    found.truncate(MAX_LISTED);
    let variables: Vec<NodeId> = found
        .iter()
        .filter(|f| f.class == NodeClass::Variable)
        .map(|f| f.id.clone())
        .collect();
    let values = read_values(session, &variables, batch).await?;
    let mut values = variables.iter().zip(values.iter().map(|(v, _)| v));
    let _ = writeln!(
        out,
        "Objects (i=85), two levels (the Server object's diagnostics not opened):"
    );
    for f in &found {
        let indent = "  ".repeat(f.depth);
        let id = NodeAddress::of(&f.id, namespaces);
        let _ = write!(
            out,
            "{indent}{:<9} {:<24} {id}",
            format!("{:?}", f.class),
            f.name
        );
        if f.class == NodeClass::Variable
            && let Some((_, dv)) = values.next()
        {
            match (&dv.value, dv.status.unwrap_or_default()) {
                (_, status) if status.is_bad() => {
                    let _ = write!(out, "  {status}");
                }
                (None | Some(Variant::Empty), _) => {
                    let _ = write!(out, "  no value");
                }
                (Some(v), status) => {
                    let _ = write!(out, "  {} {}", variant_type(v), shown(v));
                    if status.is_uncertain() {
                        let _ = write!(out, " ({status})");
                    }
                    if let Some((ty, note)) = suggested_type(v) {
                        let _ = write!(out, "  type = \"{ty}\"{note}");
                    }
                }
            }
        }
        let _ = writeln!(out);
    }
    if more {
        let _ = writeln!(
            out,
            "  … (more than {MAX_LISTED}: probe the nodes you want by id)"
        );
    }
    Ok(())
}

/// A DataType node id, with its name when it is a standard one (`i=6 (Int32)`).
fn data_type_name(id: &NodeId, namespaces: &[String]) -> String {
    let address = NodeAddress::of(id, namespaces);
    match (&id.identifier, id.namespace) {
        (opcua::types::Identifier::Numeric(n), 0) => match DataTypeId::try_from(*n) {
            Ok(t) => format!("{address} ({t:?})"),
            Err(_) => address.to_string(),
        },
        _ => address.to_string(),
    }
}

/// The variant's type, `Int32[3]` for an array.
fn variant_type(v: &Variant) -> String {
    match v {
        Variant::Array(a) => match a.values.first() {
            Some(e) => format!("{}[{}]", type_name(e), a.values.len()),
            None => "array[0]".into(),
        },
        v => type_name(v).to_string(),
    }
}

/// The value as text; an array's first elements.
fn shown(v: &Variant) -> String {
    match v {
        Variant::Array(a) => {
            let mut parts: Vec<String> = a.values.iter().take(10).map(scalar).collect();
            if a.values.len() > 10 {
                parts.push("…".into());
            }
            format!("[{}]", parts.join(", "))
        }
        v => scalar(v),
    }
}

fn scalar(v: &Variant) -> String {
    match v {
        Variant::String(s) => format!("{:?}", s.as_ref()),
        Variant::LocalizedText(t) => format!("{:?}", t.text.as_ref()),
        Variant::QualifiedName(q) => format!("{:?}", q.name.as_ref()),
        Variant::DateTime(d) => {
            timestamp_of(d).map_or_else(|| "null DateTime".into(), |t| t.to_string())
        }
        v => v.to_string(),
    }
}

/// The `type =` a `[[opcua.group.node]]` should use for a value like this one (see
/// [`super::value`]), with a note; `None` when it does not map to a signal.
pub fn suggested_type(v: &Variant) -> Option<(&'static str, String)> {
    if let Variant::Array(a) = v {
        let (ty, note) = suggested_type(a.values.first()?)?;
        return Some((
            ty,
            format!(
                "{note} (an array: one node per element, index = 0…{})",
                a.values.len().saturating_sub(1)
            ),
        ));
    }
    let ty = match v {
        Variant::Boolean(_) => "bool",
        Variant::SByte(_)
        | Variant::Byte(_)
        | Variant::Int16(_)
        | Variant::UInt16(_)
        | Variant::Int32(_)
        | Variant::UInt32(_)
        | Variant::Int64(_)
        | Variant::UInt64(_) => "int",
        Variant::Float(_) | Variant::Double(_) => "float",
        Variant::DateTime(_) => {
            return Some(("int", " (Unix ms; or \"string\" for RFC 3339)".into()));
        }
        Variant::String(_)
        | Variant::LocalizedText(_)
        | Variant::QualifiedName(_)
        | Variant::Guid(_)
        | Variant::NodeId(_)
        | Variant::StatusCode(_) => "string",
        Variant::Variant(inner) => return suggested_type(inner),
        _ => return None,
    };
    Some((ty, String::new()))
}

/// The certificate store when `--pki-dir` gives none, removed after the probe.
fn temporary_pki_dir() -> PathBuf {
    std::env::temp_dir().join(format!("shopfloor-probe-{}", std::process::id()))
}
