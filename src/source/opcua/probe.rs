//! `shopfloor probe opc.tcp://HOST:PORT[/path] [NODE ...]`: commissioning a server before
//! writing its `[[opcua]]` section.
//!
//! Connects exactly as the source does ([`super::client::open_session`]), prints the endpoint,
//! the server's namespace table and `MaxNodesPerRead`, then either reads the nodes named on
//! the command line (value, status, variant type, source timestamp, data type, access level
//! and the `type =` a `[[opcua.group.node]]` should use) or browses from a start node (the
//! Objects folder unless `--from` names one) to a depth (`--depth`, default 2), following
//! continuation points with BrowseNext, at most `--limit` nodes (default 200), printing each
//! node's class, browse path below the start node and node id as the config writes it (`nsu=`
//! above namespace 0) and, for a variable, its data type, access level, current value and
//! suggested type. With `--section MACHINE` it ends with a ready `[[opcua]]` section for the
//! nodes read or the variables listed, which `shopfloor check` accepts as it is.
//!
//! Read only: the probe calls GetEndpoints, CreateSession, ActivateSession, Read, Browse,
//! BrowseNext and CloseSession, nothing else.
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
use super::config::{DEFAULT_MAX_NODES_PER_READ, OpcuaServer, READ_CAP};
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
    /// The URL's security and user settings as config keys, for the section the probe prints.
    pub given: Vec<(String, String)>,
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
    let mut given = Vec::new();
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
        given.push((k.to_string(), v.to_string()));
    }
    if policy_given && !mode_given {
        put("security_mode", "sign_and_encrypt".into());
        given.push(("security_mode".into(), "sign_and_encrypt".into()));
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
        given,
    })
}

/// What the probe printed, and why it stopped early if it did.
pub struct Outcome {
    pub text: String,
    pub error: Option<String>,
}

/// Lists the endpoints, connects, prints what the server says about itself, then reads
/// `nodes` or browses as `walk` says; with `section_for` a machine id, ends with a ready
/// `[[opcua]]` section for the nodes read or the variables listed.
pub async fn run(
    target: &Target,
    nodes: &[String],
    walk: &Walk,
    section_for: Option<&str>,
    csv: Option<&Path>,
) -> Outcome {
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
    let result = probe(s, &pki, &addresses, walk, &mut text).await;
    let mut result = result;
    if let (Ok(chosen), Some(machine)) = (&result, section_for) {
        let (printed, rows) = section(target, machine, chosen, csv);
        text.push('\n');
        text.push_str(&printed);
        if let (Some(path), Some(rows)) = (csv, rows)
            && let Err(e) = std::fs::write(path, rows)
        {
            result = Err(format!(
                "cannot write the nodes file {}: {e}",
                path.display()
            ));
        }
    }
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
    walk: &Walk,
    out: &mut String,
) -> Result<Vec<Chosen>, String> {
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
                .clamp(4, READ_CAP) as usize;
            if nodes.is_empty() {
                browse(&session, &namespaces, batch, walk, out).await
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

/// What the probe reads of a variable: its value, data type, access level and browse name.
struct Attributes {
    value: DataValue,
    data_type: Option<NodeId>,
    access: Option<u8>,
    browse_name: Option<String>,
}

/// Reads Value, DataType, AccessLevel and BrowseName of each node, in batches.
async fn read_attributes(
    session: &Session,
    ids: &[NodeId],
    batch: usize,
) -> Result<Vec<Attributes>, String> {
    const ASKED: [AttributeId; 4] = [
        AttributeId::Value,
        AttributeId::DataType,
        AttributeId::AccessLevel,
        AttributeId::BrowseName,
    ];
    let mut out = Vec::new();
    for chunk in ids.chunks((batch / ASKED.len()).max(1)) {
        let request: Vec<ReadValueId> = chunk
            .iter()
            .flat_map(|id| {
                ASKED.map(|a| ReadValueId {
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
        if values.len() != request.len() {
            return Err(format!(
                "Read: the server answered {} values for {} asked",
                values.len(),
                request.len()
            ));
        }
        for four in values.chunks(ASKED.len()) {
            out.push(Attributes {
                value: four[0].clone(),
                data_type: match &four[1].value {
                    Some(Variant::NodeId(t)) => Some((**t).clone()),
                    _ => None,
                },
                access: match &four[2].value {
                    Some(Variant::Byte(b)) => Some(*b),
                    _ => None,
                },
                browse_name: match &four[3].value {
                    Some(Variant::QualifiedName(q)) => Some(q.name.as_ref().to_string()),
                    _ => None,
                },
            });
        }
    }
    Ok(out)
}

/// The AccessLevel attribute in words: `read`, `read/write`, `write`, `none`, with `history`
/// when the server keeps it.
fn access_words(access: Option<u8>) -> String {
    let Some(a) = access else {
        return "access ?".into();
    };
    let mut words = match (a & 0x01 != 0, a & 0x02 != 0) {
        (true, true) => "read/write",
        (true, false) => "read",
        (false, true) => "write",
        (false, false) => "none",
    }
    .to_string();
    if a & 0x04 != 0 {
        words.push_str("+history");
    }
    words
}

/// One node chosen for the `[[opcua]]` section the probe prints.
struct Chosen {
    node: NodeAddress,
    name: String,
    value: Option<Variant>,
    data_type: Option<NodeId>,
    status: opcua::types::StatusCode,
}

async fn read_nodes(
    session: &Session,
    namespaces: &[String],
    nodes: &[NodeAddress],
    batch: usize,
    out: &mut String,
) -> Result<Vec<Chosen>, String> {
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
    let read = read_attributes(session, &ids, batch).await?;
    let mut chosen = Vec::new();
    for ((n, id), attributes) in known.iter().zip(read) {
        let value = &attributes.value;
        let config_id = NodeAddress::of(id, namespaces);
        let _ = writeln!(out, "{n}");
        if config_id.to_string() != n.to_string() {
            let _ = writeln!(out, "  node id:     {config_id}");
        }
        if let Some(name) = &attributes.browse_name {
            let _ = writeln!(out, "  browse name: {name}");
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
        if let Some(t) = &attributes.data_type {
            let _ = writeln!(out, "  data type:   {}", data_type_name(t, namespaces));
        }
        let _ = writeln!(out, "  access:      {}", access_words(attributes.access));
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
        chosen.push(Chosen {
            node: config_id,
            name: attributes
                .browse_name
                .unwrap_or_else(|| identifier_name(id)),
            value: value.value.clone(),
            data_type: attributes.data_type,
            status,
        });
    }
    Ok(chosen)
}

/// A name for a node that has no browse name: its identifier's last part.
fn identifier_name(id: &NodeId) -> String {
    match &id.identifier {
        opcua::types::Identifier::String(s) => s
            .as_ref()
            .rsplit(['/', '.'])
            .find(|p| !p.is_empty())
            .unwrap_or("node")
            .to_string(),
        opcua::types::Identifier::Numeric(n) => format!("node_{n}"),
        _ => "node".into(),
    }
}

/// One reference found by browsing: the node, its browse path below the start node, its class,
/// and where it hangs in the tree.
struct Found {
    depth: usize,
    parent: Option<usize>,
    id: NodeId,
    path: String,
    class: NodeClass,
}

/// References asked for per node in one Browse; the rest come by BrowseNext.
const BROWSE_PAGE: u32 = 100;

/// The hierarchical children of each parent, following continuation points (BrowseNext)
/// until each parent's list is complete or longer than `limit`, then releasing the rest.
async fn browse_children(
    session: &Session,
    parents: &[NodeId],
    limit: usize,
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
    let mut results = session
        .browse(&request, BROWSE_PAGE, None)
        .await
        .map_err(|e| format!("Browse: {e}"))?;
    let mut out: Vec<Vec<(NodeId, String, NodeClass)>> = vec![Vec::new(); parents.len()];
    // (parent index, result) of this round; then the BrowseNext answers of the next one.
    let mut round: Vec<(usize, opcua::types::BrowseResult)> =
        results.drain(..).enumerate().collect();
    // A server that keeps answering continuation points is stopped after this many rounds.
    for _ in 0..10_000 {
        let mut more = Vec::new();
        let mut release = Vec::new();
        for (i, r) in round {
            if let Some(list) = out.get_mut(i) {
                list.extend(
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
                        }),
                );
                if !r.continuation_point.is_null_or_empty() {
                    if list.len() > limit {
                        release.push(r.continuation_point);
                    } else {
                        more.push((i, r.continuation_point));
                    }
                }
            }
        }
        if !release.is_empty() {
            session
                .browse_next(true, &release)
                .await
                .map_err(|e| format!("BrowseNext: {e}"))?;
        }
        if more.is_empty() {
            return Ok(out);
        }
        let points: Vec<_> = more.iter().map(|(_, p)| p.clone()).collect();
        let answers = session
            .browse_next(false, &points)
            .await
            .map_err(|e| format!("BrowseNext: {e}"))?;
        round = more.iter().map(|(i, _)| *i).zip(answers).collect();
    }
    Err("Browse: the server kept sending continuation points; browse a node further down".into())
}

/// Where browsing starts, how deep it goes and how much it lists.
pub struct Walk {
    /// The start node; default the Objects folder.
    pub from: Option<NodeAddress>,
    /// Levels below the start node (1 = its children).
    pub depth: usize,
    /// Nodes listed before the listing stops with "…".
    pub limit: usize,
}

impl Default for Walk {
    fn default() -> Walk {
        Walk {
            from: None,
            depth: 2,
            limit: MAX_LISTED,
        }
    }
}

async fn browse(
    session: &Session,
    namespaces: &[String],
    batch: usize,
    walk: &Walk,
    out: &mut String,
) -> Result<Vec<Chosen>, String> {
    let objects = NodeId::new(0, OBJECTS);
    let start = match &walk.from {
        None => objects.clone(),
        Some(a) => a.resolve(namespaces).ok_or_else(|| {
            format!("`{a}`: the server has no namespace with that URI (its table is above)")
        })?,
    };
    let server_object = NodeId::new(0, SERVER_OBJECT);
    let start_name = read_attributes(session, std::slice::from_ref(&start), batch)
        .await?
        .pop()
        .and_then(|a| a.browse_name)
        .ok_or_else(|| {
            format!(
                "{}: the server does not know this node",
                NodeAddress::of(&start, namespaces)
            )
        })?;
    let mut found: Vec<Found> = Vec::new();
    let mut visited = std::collections::HashSet::from([start.clone()]);
    let mut frontier: Vec<(Option<usize>, NodeId, String)> =
        vec![(None, start.clone(), String::new())];
    let mut more = false;
    'levels: for depth in 1..=walk.depth.max(1) {
        let mut next = Vec::new();
        for chunk in frontier.chunks(50) {
            let ids: Vec<NodeId> = chunk.iter().map(|(_, id, _)| id.clone()).collect();
            let children = browse_children(session, &ids, walk.limit).await?;
            for ((parent, _, path), kids) in chunk.iter().zip(children) {
                for (id, name, class) in kids {
                    if !visited.insert(id.clone()) {
                        continue;
                    }
                    if found.len() == walk.limit {
                        more = true;
                        break 'levels;
                    }
                    let path = if path.is_empty() {
                        name
                    } else {
                        format!("{path}/{name}")
                    };
                    // Objects (folders included) are opened; the Server object's diagnostics
                    // only when browsing starts there.
                    if class == NodeClass::Object && id != server_object {
                        next.push((Some(found.len()), id.clone(), path.clone()));
                    }
                    found.push(Found {
                        depth,
                        parent: *parent,
                        id,
                        path,
                        class,
                    });
                }
            }
        }
        frontier = next;
        if frontier.is_empty() {
            break;
        }
    }
    let variables: Vec<NodeId> = found
        .iter()
        .filter(|f| f.class == NodeClass::Variable)
        .map(|f| f.id.clone())
        .collect();
    let read = read_attributes(session, &variables, batch).await?;
    let mut attributes: std::collections::HashMap<NodeId, Attributes> =
        variables.into_iter().zip(read).collect();
    let _ = writeln!(
        out,
        "{start_name} ({}), {} level{} down, at most {} nodes{}:",
        NodeAddress::of(&start, namespaces),
        walk.depth.max(1),
        if walk.depth > 1 { "s" } else { "" },
        walk.limit,
        if start == objects {
            " (the Server object's diagnostics not opened)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "  (class, browse path, node id; for a variable: data type, access, value, the type to map it with)"
    );
    // Depth first, in the order the server listed them.
    let mut order = Vec::with_capacity(found.len());
    let mut stack: Vec<usize> = (0..found.len())
        .filter(|&i| found[i].parent.is_none())
        .rev()
        .collect();
    while let Some(i) = stack.pop() {
        order.push(i);
        stack.extend(
            (0..found.len())
                .filter(|&j| found[j].parent == Some(i))
                .rev(),
        );
    }
    let mut chosen = Vec::new();
    for i in order {
        let f = &found[i];
        let indent = "  ".repeat(f.depth);
        let id = NodeAddress::of(&f.id, namespaces);
        let _ = write!(
            out,
            "{indent}{:<9} {:<24} {id}",
            format!("{:?}", f.class),
            f.path
        );
        if let Some(a) = attributes.remove(&f.id) {
            let dv = &a.value;
            let _ = write!(
                out,
                "  {}  {}",
                a.data_type
                    .as_ref()
                    .map_or("?".to_string(), |t| short_type_name(t, namespaces)),
                access_words(a.access)
            );
            let status = dv.status.unwrap_or_default();
            match &dv.value {
                _ if status.is_bad() => {
                    let _ = write!(out, "  {status}");
                }
                None | Some(Variant::Empty) => {
                    let _ = write!(out, "  no value");
                }
                Some(v) => {
                    let _ = write!(out, "  {}", shown(v));
                    if status.is_uncertain() {
                        let _ = write!(out, " ({status})");
                    }
                    if let Some((ty, note)) = suggested_type(v) {
                        let _ = write!(out, "  type = \"{ty}\"{note}");
                    }
                }
            }
            chosen.push(Chosen {
                node: id,
                name: f.path.rsplit('/').next().unwrap_or("node").to_string(),
                value: dv.value.clone(),
                data_type: a.data_type,
                status,
            });
        }
        let _ = writeln!(out);
    }
    if more {
        let _ = writeln!(
            out,
            "  … (more than {}: browse further down with --from NODE, or raise --limit)",
            walk.limit
        );
    }
    Ok(chosen)
}

/// A standard data type by its name (`Double`), any other by its id.
fn short_type_name(id: &NodeId, namespaces: &[String]) -> String {
    match (&id.identifier, id.namespace) {
        (opcua::types::Identifier::Numeric(n), 0) => match DataTypeId::try_from(*n) {
            Ok(t) => format!("{t:?}"),
            Err(_) => NodeAddress::of(id, namespaces).to_string(),
        },
        _ => NodeAddress::of(id, namespaces).to_string(),
    }
}

/// The signal type for a node without a usable value, from its DataType attribute.
fn type_of_data_type(id: &NodeId) -> Option<&'static str> {
    if id.namespace != 0 {
        return None;
    }
    match &id.identifier {
        opcua::types::Identifier::Numeric(n) => match n {
            1 => Some("bool"),
            2..=9 | 13 => Some("int"),
            10 | 11 => Some("float"),
            12 | 20 | 21 => Some("string"),
            _ => None,
        },
        _ => None,
    }
}

/// A signal name from a browse name: `actSpeed` → `act_speed`, `Int32Array` →
/// `int32_array`, anything but letters and digits → `_`.
pub fn signal_name(browse_name: &str) -> String {
    let mut out = String::new();
    let mut prev: Option<char> = None;
    for c in browse_name.chars() {
        if c.is_alphanumeric() {
            if c.is_uppercase()
                && prev.is_some_and(|p| p.is_lowercase() || p.is_ascii_digit())
                && !out.ends_with('_')
            {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
        prev = Some(c);
    }
    let out = out.trim_end_matches('_').to_string();
    match out.chars().next() {
        None => "node".into(),
        Some(c) if c.is_ascii_digit() => format!("n{out}"),
        Some(_) if out.ends_with(super::config::QUALITY_SUFFIX) => format!("{out}_value"),
        Some(_) => out,
    }
}

/// Array elements put in the section at most; a longer array gets a comment.
const MAX_ELEMENTS: usize = 32;

/// A ready `[[opcua]]` section for `chosen`, for machine `machine`: the server's connection
/// as the probe made it, one subscription group, one node per signal (per element of an
/// array), the type from the value (else the data type). Nodes that map to no signal are
/// listed as comments. With `csv` a path, the group names it as its `nodes_file` and the nodes
/// come back as that file's text (a row each, columns node, signal, type, index) instead of
/// `[[opcua.group.node]]` tables.
fn section(
    target: &Target,
    machine: &str,
    chosen: &[Chosen],
    csv: Option<&Path>,
) -> (String, Option<String>) {
    let s = &target.server;
    let quote = |t: &str| toml::Value::String(t.to_string()).to_string();
    let host = super::config::endpoint_host_port(&s.endpoint)
        .map(|(h, _)| h)
        .unwrap_or_default();
    let id: String = format!("opcua-{host}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# A ready [[opcua]] section: add it to the agent's config (machine `{machine}` must be a\n\
         # [[machine]] there), rename the signals as you like and run `shopfloor check --plan`."
    );
    let _ = writeln!(
        out,
        "[[opcua]]\nid = {}\nendpoint = {}",
        quote(&id),
        quote(&s.endpoint)
    );
    for (k, v) in &target.given {
        let _ = writeln!(out, "{k} = {}", quote(v));
    }
    if s.username.is_some() {
        let _ = writeln!(
            out,
            "password = {{ env = \"SHOPFLOOR_OPCUA_PASSWORD\" }}  # or {{ file = \"/path\" }}"
        );
    }
    let _ = writeln!(
        out,
        "machine = {}\n\n  [[opcua.group]]\n  publishing_interval = \"1s\"",
        quote(machine)
    );
    let mut rows = csv.map(|path| {
        let _ = writeln!(
            out,
            "  nodes_file = {}   # its nodes, written by the probe",
            quote(&path.display().to_string())
        );
        String::from("node,signal,type,index\n")
    });
    // A node as a table, or as a row of the nodes file (its id always quoted: a
    // spreadsheet that splits at `;` keeps it whole).
    let mut node_out = |out: &mut String,
                        node: &str,
                        index: Option<usize>,
                        signal: String,
                        ty: &str| {
        match rows.as_mut() {
            Some(rows) => {
                let index = index.map(|i| i.to_string()).unwrap_or_default();
                let _ = writeln!(
                    rows,
                    "\"{}\",{signal},{ty},{index}",
                    node.replace('"', "\"\"")
                );
            }
            None => {
                let index = index
                    .map(|i| format!("\n  index = {i}"))
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "\n  [[opcua.group.node]]\n  node = {}{index}\n  signal = {}\n  type = \"{ty}\"",
                    quote(node),
                    quote(&signal)
                );
            }
        }
    };
    let mut used = std::collections::HashSet::new();
    let mut unique = |base: String| -> String {
        let mut name = base.clone();
        let mut n = 2;
        while !used.insert(name.clone()) {
            name = format!("{base}_{n}");
            n += 1;
        }
        name
    };
    for c in chosen {
        let from_value = c.value.as_ref().and_then(suggested_type).map(|t| t.0);
        let ty = match from_value.or_else(|| c.data_type.as_ref().and_then(type_of_data_type)) {
            Some(t) => t,
            None => {
                let _ = writeln!(
                    out,
                    "\n  # {}: {}, no type to map it with",
                    c.node,
                    if c.status.is_bad() {
                        c.status.to_string()
                    } else {
                        "not a value that maps to a signal".into()
                    }
                );
                continue;
            }
        };
        let base = signal_name(&c.name);
        let elements = match &c.value {
            Some(Variant::Array(a)) => Some(a.values.len()),
            _ => None,
        };
        let node = c.node.to_string();
        match elements {
            None => node_out(&mut out, &node, None, unique(base), ty),
            Some(n) => {
                for i in 0..n.min(MAX_ELEMENTS) {
                    node_out(&mut out, &node, Some(i), unique(format!("{base}_{i}")), ty);
                }
                if n > MAX_ELEMENTS {
                    let _ = writeln!(
                        out,
                        "  # … {} more elements ({MAX_ELEMENTS}–{}): add those you need",
                        n - MAX_ELEMENTS,
                        n - 1
                    );
                }
            }
        }
    }
    (out, rows)
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
