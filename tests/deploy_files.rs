//! Every file under `config/` and `deploy/` that the agent, Grafana or Docker reads parses, and
//! the names these files share agree with each other and with the data contract.
//!
//! A renamed field, a moved file or a typo in a Flux query would otherwise surface as an empty
//! panel on a county screen or a container that never starts, long after the change. So:
//!
//! - agent configs parse through `shopfloor::agent::config::load_str`, and the compose stack's config
//!   passes `shopfloor check`;
//! - the dashboards' Flux queries name only measurements, fields and tags of the data contract
//!   (`shopfloor::line_protocol::contract`, the README's "What is written"), and the contract
//!   itself is checked against what the agent writes during a demo;
//! - Grafana's provisioning files are YAML written in its JSON form, so serde_json parses them
//!   exactly, without a YAML crate (serde_yaml is unmaintained) for two short files;
//! - compose.yaml stays ordinary block YAML for the people who edit it; [`yaml_entries`] reads
//!   just enough of it (keys by indentation, list items) to cross-check paths, the InfluxDB org
//!   and bucket, ports and environment variables;
//! - the Dockerfile copies what the build needs and runs the agent on the mounted config.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use shopfloor::agent::config::Config;
use shopfloor::config::Secret;
use shopfloor::line_protocol::contract::{self, RATIO_FIELDS, fleet, green, measurement};

const BIN: &str = env!("CARGO_BIN_EXE_shopfloor");

// ---------------------------------------------------------------------------------------------
// The data contract (README, "What is written")
// ---------------------------------------------------------------------------------------------

// The contract is the library's own table, `shopfloor::line_protocol::contract::MEASUREMENTS`
// (the README's "What is written"): the engine writes through the same names, and
// `the_contract_the_dashboards_are_checked_against_is_what_the_agent_writes` checks the table
// against what the agent writes during a demo. Ratios: the county dashboard must compute these
// from summed numerators and denominators, never read (and so never average) them
// (`contract::RATIO_FIELDS`).

/// Columns every Flux table may have besides tags and fields.
const FLUX_COLUMNS: &[&str] = &[
    "_time",
    "_value",
    "_field",
    "_measurement",
    "_start",
    "_stop",
];

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deploy() -> PathBuf {
    root().join("deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every file under `dir`, recursively, sorted; hidden files (`.gitignore`, a local `.env`
/// with real secrets) are not the project's deployment files and are left out.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.expect("directory entry").path();
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn rel(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// What reads each kind of file under deploy/, and so how it is checked.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    AgentConfig,
    Dashboard,
    Provisioning,
    Compose,
    Dockerfile,
    /// Read by people or by programs other than the agent, Grafana and Docker (systemd,
    /// journald, logrotate, Mosquitto, compose's env file); the tests below that read them say
    /// so.
    Other,
}

fn kind_of(path: &Path) -> Option<Kind> {
    let r = path
        .strip_prefix(deploy())
        .ok()?
        .to_string_lossy()
        .to_string();
    let ext = path.extension().map(|e| e.to_string_lossy().to_string());
    Some(match (r.as_str(), ext.as_deref()) {
        (_, Some("toml")) => Kind::AgentConfig,
        (r, Some("json")) if r.starts_with("grafana/dashboards/") => Kind::Dashboard,
        (r, Some("yaml" | "yml")) if r.starts_with("grafana/provisioning/") => Kind::Provisioning,
        ("compose.yaml", _) => Kind::Compose,
        ("Dockerfile", _) => Kind::Dockerfile,
        (
            "README.md"
            | "shopfloor.service"
            | "env.example"
            | "compose/mosquitto.conf"
            // Mosquitto's, on the county's broker; tests/county_uplink.rs runs a broker with
            // both.
            | "county/mosquitto.acl"
            | "county/mosquitto.conf"
            | "journald-shopfloor.conf"
            | "logrotate-shopfloor",
            _,
        ) => Kind::Other,
        _ => return None,
    })
}

fn deploy_files(kind: Kind) -> Vec<PathBuf> {
    files_under(&deploy())
        .into_iter()
        .filter(|p| kind_of(p) == Some(kind))
        .collect()
}

#[test]
fn every_file_under_deploy_is_known_to_this_test() {
    let unknown: Vec<String> = files_under(&deploy())
        .into_iter()
        .filter(|p| kind_of(p).is_none())
        .map(|p| rel(&p))
        .collect();
    assert!(
        unknown.is_empty(),
        "files under deploy/ that no test knows: {unknown:?}; add them to kind_of() in \
         tests/deploy_files.rs with the check that fits what reads them"
    );
    assert_eq!(
        deploy_files(Kind::Dashboard).len(),
        2,
        "enterprise and county dashboards"
    );
    assert_eq!(
        deploy_files(Kind::Provisioning).len(),
        2,
        "datasource and dashboards"
    );
    assert_eq!(deploy_files(Kind::Compose).len(), 1);
    assert_eq!(deploy_files(Kind::Dockerfile).len(), 1);
    assert!(!deploy_files(Kind::AgentConfig).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Agent configs
// ---------------------------------------------------------------------------------------------

/// Every agent config under config/ and deploy/: the TOML files with a `[site]` table.
/// (config/ also holds device profiles, parsed by their own test, and the county's files.)
fn agent_configs() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = files_under(&root().join("config"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .filter(|p| is_agent_config(&read(p)))
        .collect();
    out.extend(deploy_files(Kind::AgentConfig));
    out
}

fn is_agent_config(text: &str) -> bool {
    text.lines().any(|l| l.trim() == "[site]")
}

/// The environment variables the configs name for their secrets (`{ env = "NAME" }`).
fn secret_variables(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("env = \"") {
        rest = &rest[at + 7..];
        if let Some(end) = rest.find('"') {
            names.insert(rest[..end].to_string());
        }
    }
    names
}

/// Gives every secret variable the configs name a value, once per test process.
fn set_sample_secrets() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for path in agent_configs() {
            for name in secret_variables(&read(&path)) {
                if std::env::var_os(&name).is_none() {
                    // SAFETY: every reader of the environment in this test process goes through
                    // std (std::env::var in Secret::resolve, Command when spawning), which
                    // holds std's environment lock; no C code here calls getenv.
                    unsafe { std::env::set_var(&name, "deploy-files-test-secret") };
                }
            }
        }
    });
}

fn load(path: &Path) -> Config {
    set_sample_secrets();
    shopfloor::agent::config::load_str(&read(path), &rel(path))
        .unwrap_or_else(|d| panic!("{} does not load:\n{d}", rel(path)))
}

fn compose_config_path() -> PathBuf {
    deploy().join("compose/shopfloor.toml")
}

#[test]
fn every_agent_config_under_config_and_deploy_loads() {
    let configs = agent_configs();
    assert!(configs.len() >= 3, "{configs:?}");
    for path in configs {
        let cfg = load(&path);
        assert!(
            !cfg.machines.is_empty(),
            "{}: an empty register",
            rel(&path)
        );
    }
}

#[test]
fn the_compose_agent_config_passes_check() {
    set_sample_secrets();
    let out = Command::new(BIN)
        .args(["check", "--plan", "-c"])
        .arg(compose_config_path())
        .output()
        .expect("run shopfloor check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ok: "), "{stdout}");
    // The same check fails without the token the config names: the secret really is checked.
    let out = Command::new(BIN)
        .args(["check", "-c"])
        .arg(compose_config_path())
        .env_remove("SHOPFLOOR_INFLUX_TOKEN")
        .output()
        .expect("run shopfloor check");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("SHOPFLOOR_INFLUX_TOKEN"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// Flux
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    /// A number or a duration literal (`26h`, `1000000000.0`).
    Num,
    /// A regular expression literal, after `=~` or `!~`.
    Regex,
    Punct(char),
}

/// Enough of Flux's lexical grammar to find names: identifiers, string, regex, number and
/// duration literals, comments, punctuation.
fn lex(query: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = query.chars().collect();
    let mut toks: Vec<Tok> = Vec::new();
    let mut i = 0;
    let delimited = |i: &mut usize, close: char, what: &str| -> Result<String, String> {
        let start = *i + 1;
        let mut j = start;
        while j < chars.len() && chars[j] != close {
            j += if chars[j] == '\\' { 2 } else { 1 };
        }
        if j >= chars.len() {
            return Err(format!("unterminated {what}"));
        }
        *i = j + 1;
        Ok(chars[start..j].iter().collect())
    };
    while i < chars.len() {
        let c = chars[i];
        let after_match_op = toks.len() >= 2
            && matches!(toks[toks.len() - 1], Tok::Punct('~'))
            && matches!(toks[toks.len() - 2], Tok::Punct('=' | '!'));
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '"' {
            toks.push(Tok::Str(delimited(&mut i, '"', "string")?));
        } else if c == '/' && after_match_op {
            delimited(&mut i, '/', "regular expression")?;
            toks.push(Tok::Regex);
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            toks.push(Tok::Ident(chars[start..i].iter().collect()));
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            toks.push(Tok::Num);
        } else {
            toks.push(Tok::Punct(c));
            i += 1;
        }
    }
    Ok(toks)
}

fn ident(t: Option<&Tok>, name: &str) -> bool {
    matches!(t, Some(Tok::Ident(s)) if s == name)
}

fn punct(t: Option<&Tok>, c: char) -> bool {
    t == Some(&Tok::Punct(c))
}

/// `r.<column> == "<value>"` for the given column: the measurements or fields a query filters on.
fn compared(toks: &[Tok], column: &str) -> Vec<String> {
    (0..toks.len())
        .filter_map(|i| {
            let w = &toks[i..(i + 6).min(toks.len())];
            match w {
                [
                    Tok::Ident(r),
                    Tok::Punct('.'),
                    Tok::Ident(c),
                    Tok::Punct('='),
                    Tok::Punct('='),
                    Tok::Str(v),
                ] if r == "r" && c == column => Some(v.clone()),
                _ => None,
            }
        })
        .collect()
}

/// The Grafana template variables a query uses: `${name}`, `${name:format}`, `$name`.
fn grafana_variables(query: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in query.match_indices('$') {
        let rest = &query[i + 1..];
        let rest = rest.strip_prefix('{').unwrap_or(rest);
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

/// Checks one Flux query against the data contract; returns its problems.
///
/// A query must read the datasource's default bucket, filter on at least one measurement of
/// the contract, and use only fields and tags of the measurements it filters on: in
/// `r._field == "…"`, in `r.<name>` (after a pivot, fields are columns), in `columns:`,
/// `rowKey:`, `columnKey:` and `tag:` arguments. Names the query defines itself (record keys
/// such as `n:` in a `reduce`) are allowed as columns too. Delimiters must balance and every
/// template variable must be one the dashboard defines.
fn check_flux(query: &str, variables: &BTreeSet<String>) -> Vec<String> {
    let toks = match lex(query) {
        Ok(t) => t,
        Err(e) => return vec![e],
    };
    let mut problems = Vec::new();

    let mut stack = Vec::new();
    for t in &toks {
        match t {
            Tok::Punct(c @ ('(' | '[' | '{')) => stack.push(*c),
            Tok::Punct(c @ (')' | ']' | '}')) => {
                let open = match c {
                    ')' => '(',
                    ']' => '[',
                    _ => '{',
                };
                if stack.pop() != Some(open) {
                    problems.push(format!("unbalanced `{c}`"));
                }
            }
            _ => {}
        }
    }
    if !stack.is_empty() {
        problems.push(format!("unclosed {stack:?}"));
    }

    for name in grafana_variables(query) {
        if !variables.contains(&name) {
            problems.push(format!("template variable `${name}` is not defined"));
        }
    }

    let reads_default_bucket = toks.windows(5).any(|w| {
        ident(w.first(), "bucket")
            && punct(w.get(1), ':')
            && ident(w.get(2), "v")
            && punct(w.get(3), '.')
            && ident(w.get(4), "defaultBucket")
    });
    if !reads_default_bucket {
        problems.push("does not read `bucket: v.defaultBucket`".to_string());
    }

    let mut measurements = Vec::new();
    for name in compared(&toks, "_measurement") {
        match measurement(&name) {
            Some(m) => measurements.push(m),
            None => problems.push(format!("measurement `{name}` is not in the data contract")),
        }
    }
    if measurements.is_empty() && problems.is_empty() {
        problems.push("filters on no measurement of the data contract".to_string());
    }
    let field_known = |f: &str| measurements.iter().any(|m| m.has_field(f));
    let tag_known = |t: &str| measurements.iter().any(|m| m.has_tag(t));
    for f in compared(&toks, "_field") {
        if !field_known(&f) {
            problems.push(format!(
                "field `{f}` is not a field of {:?}",
                measurements.iter().map(|m| m.name).collect::<Vec<_>>()
            ));
        }
    }

    // Names the query defines: record keys and named arguments (`n: 0.0`, `fn: …`).
    let defined: BTreeSet<&str> = toks
        .windows(2)
        .filter_map(|w| match w {
            [Tok::Ident(s), Tok::Punct(':')] => Some(s.as_str()),
            _ => None,
        })
        .collect();
    let column_known = |c: &str| {
        FLUX_COLUMNS.contains(&c) || tag_known(c) || field_known(c) || defined.contains(c)
    };
    for (i, t) in toks.iter().enumerate() {
        let Tok::Ident(record) = t else { continue };
        if record != "r" && record != "accumulator" {
            continue;
        }
        if i > 0 && punct(toks.get(i - 1), '.') {
            continue;
        }
        if let (true, Some(Tok::Ident(c))) = (punct(toks.get(i + 1), '.'), toks.get(i + 2))
            && !column_known(c)
        {
            problems.push(format!(
                "`{record}.{c}` is neither a column, a tag nor a field"
            ));
        }
    }
    for (i, t) in toks.iter().enumerate() {
        let Tok::Ident(arg) = t else { continue };
        if !punct(toks.get(i + 1), ':') {
            continue;
        }
        match arg.as_str() {
            "columns" | "rowKey" | "columnKey" => {
                for s in toks[i + 2..]
                    .iter()
                    .skip(1)
                    .take_while(|t| !punct(Some(t), ']'))
                {
                    if let Tok::Str(c) = s
                        && !column_known(c)
                    {
                        problems.push(format!("column `{c}` in `{arg}:` is unknown"));
                    }
                }
            }
            "tag" => {
                if let Some(Tok::Str(tag)) = toks.get(i + 2)
                    && !tag_known(tag)
                {
                    problems.push(format!("`{tag}` is not a tag of the measurement"));
                }
            }
            _ => {}
        }
    }
    problems
}

#[test]
fn the_flux_check_finds_what_breaks_a_panel() {
    let vars: BTreeSet<String> = ["county".to_string()].into();
    let good = r#"from(bucket: v.defaultBucket)
  |> range(start: v.timeRangeStart)
  |> filter(fn: (r) => r._measurement == "fleet" and r.county == "${county}" and r.window == "1d")
  |> filter(fn: (r) => r._field == "machines_total" or r._field == "machines_networked")
  |> group(columns: ["sector"])
  |> reduce(identity: {n: 0.0}, fn: (r, accumulator) => ({n: accumulator.n + r._value}))"#;
    assert_eq!(check_flux(good, &vars), Vec::<String>::new());
    for (broken, expected) in [
        (
            good.replace("machines_networked", "machines_netwrked"),
            "field `machines_netwrked`",
        ),
        (
            good.replace("\"fleet\"", "\"fleets\""),
            "measurement `fleets`",
        ),
        (good.replace("r.window", "r.machine"), "`r.machine`"),
        (
            good.replace("[\"sector\"]", "[\"meter\"]"),
            "column `meter`",
        ),
        (good.replace("{n: 0.0}", "{n: 0.0"), "unbalanced"),
        (good.replace("${county}", "${site}"), "`$site`"),
        (
            good.replace("v.defaultBucket", "\"shopfloor\""),
            "v.defaultBucket",
        ),
        (good[..good.len() - 1].to_string(), "unclosed"),
    ] {
        let problems = check_flux(&broken, &vars);
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "expected a problem with {expected}, got {problems:?} for\n{broken}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Grafana
// ---------------------------------------------------------------------------------------------

/// A provisioning file: YAML in its JSON form after leading `#` comment lines.
fn provisioning(name: &str) -> Value {
    let path = deploy().join("grafana/provisioning").join(name);
    let json: String = read(&path)
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("{} is not YAML in JSON form: {e}", rel(&path)))
}

fn datasource() -> Value {
    let file = provisioning("datasources/influxdb.yaml");
    let list = file["datasources"].as_array().expect("datasources: a list");
    assert_eq!(list.len(), 1, "one datasource for every panel");
    list[0].clone()
}

fn str_at<'v>(v: &'v Value, pointer: &str) -> &'v str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {v}"))
}

#[test]
fn grafana_provisioning_parses_and_declares_a_flux_datasource() {
    for name in ["datasources/influxdb.yaml", "dashboards/shopfloor.yaml"] {
        assert_eq!(provisioning(name)["apiVersion"], 1, "{name}");
    }
    let ds = datasource();
    assert_eq!(str_at(&ds, "/type"), "influxdb");
    assert_eq!(str_at(&ds, "/jsonData/version"), "Flux");
    assert!(!str_at(&ds, "/uid").is_empty());
    assert!(!str_at(&ds, "/jsonData/organization").is_empty());
    assert!(!str_at(&ds, "/jsonData/defaultBucket").is_empty());
    // The token comes from Grafana's environment, never from the file.
    let token = str_at(&ds, "/secureJsonData/token");
    assert!(
        token.starts_with("${") && token.ends_with('}'),
        "the datasource token must be an environment variable, not `{token}`"
    );
    let providers = provisioning("dashboards/shopfloor.yaml");
    let provider = &providers["providers"][0];
    assert_eq!(str_at(provider, "/type"), "file");
    assert!(str_at(provider, "/options/path").starts_with('/'));
}

fn dashboards() -> Vec<(String, Value)> {
    deploy_files(Kind::Dashboard)
        .into_iter()
        .map(|p| {
            let v: Value = serde_json::from_str(&read(&p))
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", rel(&p)));
            (rel(&p), v)
        })
        .collect()
}

fn dashboard(uid: &str) -> Value {
    dashboards()
        .into_iter()
        .map(|(_, d)| d)
        .find(|d| d["uid"] == uid)
        .unwrap_or_else(|| panic!("no dashboard with uid {uid}"))
}

/// Panels, including those inside collapsed rows.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().into_iter().flatten() {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

/// Every Flux query of a dashboard, with where it is: panel targets and query variables.
fn queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for v in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if v["type"] == "query" {
            out.push((
                format!("variable {}", v["name"]),
                v["query"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    for p in panels(dashboard) {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                format!("panel {} ({}) query {}", p["id"], p["title"], t["refId"]),
                t["query"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    out
}

#[test]
fn dashboards_query_only_the_data_contract_through_the_provisioned_datasource() {
    let ds_uid = str_at(&datasource(), "/uid").to_string();
    let mut uids = BTreeSet::new();
    let mut problems = Vec::new();
    for (file, d) in dashboards() {
        let mut say = |what: String| problems.push(format!("{file}: {what}"));
        if !uids.insert(d["uid"].as_str().unwrap_or_default().to_string()) {
            say(format!("uid {} is not unique", d["uid"]));
        }
        if d["title"].as_str().is_none_or(str::is_empty) {
            say("no title".into());
        }
        let variables: BTreeSet<String> = d["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["name"].as_str().map(str::to_string))
            .collect();
        for v in d["templating"]["list"].as_array().into_iter().flatten() {
            if v["type"] == "query" && v["datasource"]["uid"] != ds_uid.as_str() {
                say(format!("variable {} uses another datasource", v["name"]));
            }
        }
        let mut ids = BTreeSet::new();
        let all = panels(&d);
        if !all.iter().any(|p| {
            p["type"] == "text"
                && p["options"]["content"]
                    .as_str()
                    .is_some_and(|c| c.contains("How these figures are computed"))
        }) {
            say("no text panel explaining how the figures are computed".into());
        }
        for p in all {
            let id = p["id"].as_u64().unwrap_or(0);
            if !ids.insert(id) {
                say(format!("panel id {id} is not unique"));
            }
            let (x, w) = (p["gridPos"]["x"].as_u64(), p["gridPos"]["w"].as_u64());
            if !matches!((x, w), (Some(x), Some(w)) if w > 0 && x + w <= 24)
                || p["gridPos"]["h"].as_u64().is_none()
            {
                say(format!(
                    "panel {id}: gridPos {} is off the 24-column grid",
                    p["gridPos"]
                ));
            }
            if p["type"] == "text" || p["type"] == "row" {
                continue;
            }
            if p["description"].as_str().is_none_or(str::is_empty) {
                say(format!(
                    "panel {id} ({}) has no description of its method",
                    p["title"]
                ));
            }
            let targets = p["targets"].as_array().map_or(&[][..], Vec::as_slice);
            if targets.is_empty() {
                say(format!("panel {id} ({}) has no query", p["title"]));
            }
            if p["datasource"]["uid"] != ds_uid.as_str() {
                say(format!("panel {id} uses datasource {}", p["datasource"]));
            }
            for t in targets {
                if t["datasource"]["uid"] != ds_uid.as_str() {
                    say(format!(
                        "panel {id} query {} uses datasource {}",
                        t["refId"], t["datasource"]
                    ));
                }
            }
        }
        for (place, query) in queries(&d) {
            for problem in check_flux(&query, &variables) {
                say(format!("{place}: {problem}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_eq!(uids.len(), 2);
}

/// Every threshold step value of a dashboard's panels, defaults and overrides.
fn thresholds(dashboard: &Value) -> Vec<f64> {
    let mut out = Vec::new();
    let mut steps = |t: &Value| {
        for s in t["steps"].as_array().into_iter().flatten() {
            out.extend(s["value"].as_f64());
        }
    };
    for p in panels(dashboard) {
        steps(&p["fieldConfig"]["defaults"]["thresholds"]);
        for o in p["fieldConfig"]["overrides"]
            .as_array()
            .into_iter()
            .flatten()
        {
            for prop in o["properties"].as_array().into_iter().flatten() {
                if prop["id"] == "thresholds" {
                    steps(&prop["value"]);
                }
            }
        }
    }
    out
}

#[test]
fn both_dashboards_draw_the_programme_targets() {
    // Networking rate ≥ 55 %, CNC rate ≥ 65 %, energy intensity ≤ 0.43 tce per 10k CNY.
    for uid in ["shopfloor-enterprise", "shopfloor-county"] {
        let t = thresholds(&dashboard(uid));
        for target in [0.55, 0.65, 0.43] {
            assert!(
                t.contains(&target),
                "{uid} has no threshold at {target}: {t:?}"
            );
        }
    }
}

#[test]
fn the_county_dashboard_sums_numerators_and_denominators_and_never_reads_a_ratio() {
    let county = dashboard("shopfloor-county");
    let all = queries(&county);
    let mut used = BTreeSet::new();
    for (place, query) in &all {
        let toks = lex(query).expect("lexes");
        for f in compared(&toks, "_field") {
            assert!(
                !RATIO_FIELDS.contains(&f.as_str()),
                "{place} reads the ratio `{f}`: a county figure is Σ numerator ÷ Σ denominator"
            );
            used.insert(f);
        }
        assert!(!query.contains("mean("), "{place} averages");
    }
    for pair in [
        [fleet::MACHINES_NETWORKED, fleet::MACHINES_TOTAL],
        [fleet::MACHINES_CNC, fleet::MACHINES_TOTAL],
        [fleet::CNC_RUNNING_S, fleet::CNC_PLANNED_S],
        [green::ENERGY_TCE, green::VALUE_ADDED_10K_CNY],
    ] {
        for f in pair {
            assert!(used.contains(f), "the county dashboard never reads `{f}`");
        }
    }
    // Per sector: every sector panel groups by the sector tag.
    let per_sector = all
        .iter()
        .filter(|(_, q)| q.contains("group(columns: [\"sector\""))
        .count();
    assert!(per_sector >= 4, "{per_sector} queries group by sector");
}

// ---------------------------------------------------------------------------------------------
// compose.yaml and env.example
// ---------------------------------------------------------------------------------------------

/// One `key: value` or `- item` line of block YAML, with the keys above it.
#[derive(Debug)]
struct Entry {
    path: Vec<String>,
    value: String,
    item: bool,
}

/// Reads block YAML by indentation: enough to look up `services.agent.volumes` and the like.
/// Flow collections stay text (`["CMD", "influx", "ping"]`); comments and blank lines are
/// skipped; quotes around keys and values are removed.
fn yaml_entries(text: &str) -> Vec<Entry> {
    let unquote = |s: &str| s.trim().trim_matches('"').trim_matches('\'').to_string();
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let content = line.trim_start();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let indent = line.len() - content.len();
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        let keys = |stack: &[(usize, String)]| stack.iter().map(|(_, k)| k.clone()).collect();
        if let Some(item) = content.strip_prefix("- ") {
            out.push(Entry {
                path: keys(&stack),
                value: unquote(item),
                item: true,
            });
        } else if let Some((key, value)) = content
            .split_once(": ")
            .or_else(|| content.strip_suffix(':').map(|k| (k, "")))
        {
            stack.push((indent, unquote(key)));
            if !value.trim().is_empty() {
                out.push(Entry {
                    path: keys(&stack),
                    value: unquote(value),
                    item: false,
                });
            }
        }
    }
    out
}

struct Compose {
    entries: Vec<Entry>,
    text: String,
}

impl Compose {
    fn load() -> Self {
        let text = read(&deploy().join("compose.yaml"));
        Compose {
            entries: yaml_entries(&text),
            text,
        }
    }

    fn get(&self, path: &[&str]) -> Option<&str> {
        self.entries
            .iter()
            .find(|e| !e.item && e.path == path)
            .map(|e| e.value.as_str())
    }

    fn items(&self, path: &[&str]) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|e| e.item && e.path == path)
            .map(|e| e.value.as_str())
            .collect()
    }

    fn services(&self) -> BTreeSet<&str> {
        self.entries
            .iter()
            .filter(|e| e.path.len() >= 2 && e.path[0] == "services")
            .map(|e| e.path[1].as_str())
            .collect()
    }

    /// A service's bind mounts and volumes as (source, target).
    fn mounts(&self, service: &str) -> Vec<(String, String)> {
        self.items(&["services", service, "volumes"])
            .into_iter()
            .filter_map(|m| {
                let mut parts = m.split(':');
                Some((parts.next()?.to_string(), parts.next()?.to_string()))
            })
            .collect()
    }

    fn target_of(&self, service: &str, source: &str) -> String {
        self.mounts(service)
            .into_iter()
            .find(|(s, _)| s == source)
            .map(|(_, t)| t)
            .unwrap_or_else(|| panic!("compose.yaml: {service} does not mount {source}"))
    }
}

/// `${NAME}`, `${NAME:-default}` and `${NAME:?message}` in a text.
fn substituted_variables(text: &str) -> BTreeSet<String> {
    text.match_indices("${")
        .map(|(i, _)| {
            text[i + 2..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

fn compose_agent_config() -> Config {
    load(&compose_config_path())
}

#[test]
fn compose_yaml_agrees_with_the_agent_config_grafana_and_env_example() {
    let compose = Compose::load();
    let cfg = compose_agent_config();
    let ds = datasource();

    let services = compose.services();
    for s in ["agent", "sim", "influxdb", "grafana", "mosquitto"] {
        assert!(
            services.contains(s),
            "compose.yaml has no service {s}: {services:?}"
        );
    }

    // Every bind mount's source exists.
    for service in &services {
        for (source, _) in compose.mounts(service) {
            if source.starts_with('.') {
                assert!(
                    deploy().join(&source).exists(),
                    "compose.yaml: {service} mounts {source}, which does not exist"
                );
            }
        }
    }

    // The agent: its config where the image's CMD reads it, its data directory on a volume,
    // its secrets in its environment, its board on the published port.
    let config_target = compose.target_of("agent", "./compose/shopfloor.toml");
    assert_eq!(config_target, dockerfile().config_path);
    assert!(
        compose
            .mounts("agent")
            .iter()
            .any(|(s, t)| !s.starts_with('.') && Path::new(t) == cfg.agent.data_dir),
        "compose.yaml: no volume at the agent's data_dir {}",
        cfg.agent.data_dir.display()
    );
    let secrets = cfg
        .influx
        .iter()
        .flat_map(|o| [&o.token, &o.password])
        .flatten();
    for secret in secrets {
        if let Secret::Env(name) = secret {
            assert!(
                compose
                    .get(&["services", "agent", "environment", name])
                    .is_some(),
                "compose.yaml: the agent's environment lacks {name}, which the config names"
            );
        }
    }
    assert!(cfg.web.enabled && cfg.web.listen.ip().is_unspecified());
    let port = cfg.web.listen.port();
    assert!(
        compose
            .items(&["services", "agent", "ports"])
            .iter()
            .any(|p| p.ends_with(&format!(":{port}"))),
        "compose.yaml does not publish the board's port {port}"
    );
    assert_eq!(port, dockerfile().health_port);

    // InfluxDB, the agent and Grafana name the same org, bucket and URL.
    let influx = cfg
        .influx
        .first()
        .expect("the compose config writes to InfluxDB");
    let init = |k: &str| compose.get(&["services", "influxdb", "environment", k]);
    assert_eq!(init("DOCKER_INFLUXDB_INIT_ORG"), influx.org.as_deref());
    assert_eq!(
        init("DOCKER_INFLUXDB_INIT_BUCKET"),
        influx.bucket.as_deref()
    );
    assert_eq!(
        influx.org.as_deref(),
        Some(str_at(&ds, "/jsonData/organization"))
    );
    assert_eq!(
        influx.bucket.as_deref(),
        Some(str_at(&ds, "/jsonData/defaultBucket"))
    );
    assert_eq!(influx.url, str_at(&ds, "/url"));
    assert!(influx.url.contains("//influxdb:"), "{}", influx.url);

    // Grafana: provisioning where Grafana looks, dashboards where the provider reads them.
    assert_eq!(
        compose.target_of("grafana", "./grafana/provisioning"),
        "/etc/grafana/provisioning"
    );
    let dashboards_target = compose.target_of("grafana", "./grafana/dashboards");
    let providers = provisioning("dashboards/shopfloor.yaml");
    assert_eq!(
        str_at(&providers, "/providers/0/options/path"),
        dashboards_target
    );
    let home = compose
        .get(&[
            "services",
            "grafana",
            "environment",
            "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH",
        ])
        .expect("a home dashboard");
    let home_file = home
        .strip_prefix(&format!("{dashboards_target}/"))
        .unwrap_or_else(|| panic!("home dashboard {home} is not under {dashboards_target}"));
    assert!(deploy().join("grafana/dashboards").join(home_file).exists());
    for name in ["datasources/influxdb.yaml", "dashboards/shopfloor.yaml"] {
        let text = read(&deploy().join("grafana/provisioning").join(name));
        for var in substituted_variables(&text) {
            assert!(
                compose
                    .get(&["services", "grafana", "environment", &var])
                    .is_some(),
                "{name} reads ${{{var}}}, which compose.yaml does not give Grafana"
            );
        }
    }

    // Every variable compose.yaml substitutes is described in env.example.
    let example: BTreeSet<String> = read(&deploy().join("env.example"))
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim().to_string()))
        .filter(|k| !k.starts_with('#'))
        .collect();
    for var in substituted_variables(&compose.text) {
        assert!(
            example.contains(&var),
            "compose.yaml reads ${{{var}}}, missing from env.example"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Dockerfile
// ---------------------------------------------------------------------------------------------

struct Dockerfile {
    /// (instruction, arguments), continuation lines joined.
    instructions: Vec<(String, String)>,
    /// The config `CMD` runs the agent with.
    config_path: String,
    /// The port the HEALTHCHECK asks.
    health_port: u16,
}

/// An exec-form argument list; Docker silently runs anything else through a shell.
fn exec_form(args: &str, what: &str) -> Vec<String> {
    serde_json::from_str(args)
        .unwrap_or_else(|e| panic!("Dockerfile {what} is not a JSON string array ({e}): {args}"))
}

fn dockerfile() -> Dockerfile {
    let text = read(&deploy().join("Dockerfile"));
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && current.is_empty()) {
            continue;
        }
        current.push_str(t.trim_end_matches('\\'));
        current.push(' ');
        if !t.ends_with('\\') {
            let joined = current.trim().to_string();
            current.clear();
            if let Some((ins, args)) = joined.split_once(' ') {
                instructions.push((ins.to_uppercase(), args.trim().to_string()));
            }
        }
    }
    let one = |name: &str| {
        let found: Vec<&String> = instructions
            .iter()
            .filter(|(i, _)| i == name)
            .map(|(_, a)| a)
            .collect();
        assert_eq!(found.len(), 1, "Dockerfile: one {name}");
        found[0].clone()
    };
    let entrypoint = exec_form(&one("ENTRYPOINT"), "ENTRYPOINT");
    let cmd = exec_form(&one("CMD"), "CMD");
    assert!(
        entrypoint.len() == 1 && entrypoint[0].ends_with("/shopfloor"),
        "{entrypoint:?}"
    );
    let config_path = match cmd.as_slice() {
        [run, c, path] if run == "run" && c == "-c" => path.clone(),
        other => panic!("Dockerfile CMD is not `run -c <config>`: {other:?}"),
    };
    let health = one("HEALTHCHECK");
    let (_, health_cmd) = health.split_once("CMD ").expect("HEALTHCHECK … CMD […]");
    let health_cmd = exec_form(health_cmd, "HEALTHCHECK CMD").join(" ");
    assert!(health_cmd.contains("GET /healthz"), "{health_cmd}");
    let health_port = health_cmd
        .split("/dev/tcp/127.0.0.1/")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("HEALTHCHECK asks no port on 127.0.0.1: {health_cmd}"));
    Dockerfile {
        instructions,
        config_path,
        health_port,
    }
}

#[test]
fn the_dockerfile_copies_what_the_build_needs_and_runs_the_agent_unprivileged() {
    let docker = dockerfile();
    let cfg = compose_agent_config();
    let of = |name: &str| -> Vec<&str> {
        docker
            .instructions
            .iter()
            .filter(|(i, _)| i == name)
            .map(|(_, a)| a.as_str())
            .collect()
    };

    let from = of("FROM");
    assert!(from.len() >= 2, "a multi-stage build: {from:?}");
    assert!(
        from[0].starts_with("rust:") && from[0].contains("bookworm"),
        "{from:?}"
    );
    assert!(
        from[from.len() - 1].starts_with("debian:bookworm-slim"),
        "{from:?}"
    );
    let user = of("USER");
    assert!(
        user.last().is_some_and(|u| *u != "root" && *u != "0"),
        "the agent must not run as root: {user:?}"
    );
    let volumes = exec_form(of("VOLUME").first().expect("a VOLUME"), "VOLUME");
    assert!(
        volumes.iter().any(|v| Path::new(v) == cfg.agent.data_dir),
        "VOLUME {volumes:?} is not the config's data_dir {}",
        cfg.agent.data_dir.display()
    );

    // What COPY takes from the build context exists and passes .dockerignore.
    let ignore = read(&root().join(".dockerignore"));
    let mut copied = BTreeSet::new();
    for args in of("COPY") {
        if args.starts_with("--from") {
            continue;
        }
        let words: Vec<&str> = args.split_whitespace().collect();
        for source in &words[..words.len() - 1] {
            let source = source.trim_end_matches('/');
            assert!(root().join(source).exists(), "COPY {source}: no such file");
            assert!(
                ignore.lines().any(|l| l.trim() == format!("!{source}")),
                ".dockerignore does not let {source} into the build context"
            );
            copied.insert(source.to_string());
        }
    }
    // Files the code compiles in (include_str!) are inside what is copied.
    for path in files_under(&root().join("src")) {
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = read(&path);
        for (i, _) in text.match_indices("include_str!(\"") {
            let name = &text[i + 14..];
            let name = &name[..name.find('"').unwrap_or(0)];
            let included = path.parent().expect("a folder").join(name);
            let included = std::fs::canonicalize(&included)
                .unwrap_or_else(|e| panic!("{}: {name}: {e}", rel(&path)));
            let inside = included
                .strip_prefix(std::fs::canonicalize(root()).expect("root"))
                .expect("inside the repository");
            let top = inside.components().next().expect("a path");
            assert!(
                copied.contains(&top.as_os_str().to_string_lossy().to_string()),
                "{} compiles in {}, which the Dockerfile does not COPY",
                rel(&path),
                inside.display()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The contract against what the agent writes
// ---------------------------------------------------------------------------------------------

/// Splits a line-protocol line into measurement, tag keys and field keys.
fn parse_line(line: &str) -> Option<(String, Vec<String>, Vec<String>)> {
    // Split at unescaped spaces outside quoted string fields.
    let mut parts = Vec::new();
    let (mut current, mut quoted, mut escaped) = (String::new(), false, false);
    for c in line.chars() {
        match c {
            _ if escaped => {
                current.push(c);
                escaped = false;
            }
            '\\' => {
                current.push(c);
                escaped = true;
            }
            '"' => {
                current.push(c);
                quoted = !quoted;
            }
            ' ' if !quoted => parts.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    parts.push(current);
    let [series, fields, _time] = parts.as_slice() else {
        return None;
    };
    let mut series = series.split(',');
    let name = series.next()?.to_string();
    let tags = series
        .filter_map(|t| t.split_once('='))
        .map(|(k, _)| k.to_string())
        .collect();
    // Field values here are numbers, booleans or strings without commas (state names).
    let fields = fields
        .split(',')
        .filter_map(|f| f.split_once('='))
        .map(|(k, _)| k.to_string())
        .collect();
    Some((name, tags, fields))
}

#[test]
fn the_contract_the_dashboards_are_checked_against_is_what_the_agent_writes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let records = dir.path().join("records.lp");
    let mut child = Command::new(BIN)
        .args(["demo", "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start shopfloor demo");
    // The demo writes every measurement but green_alert within its first window flush (10 s).
    let wanted = [
        contract::MEASUREMENT_SIGNAL,
        contract::MEASUREMENT_MACHINE_STATE,
        contract::MEASUREMENT_MACHINE_TIME,
        contract::MEASUREMENT_FLEET,
        contract::MEASUREMENT_ENERGY,
        contract::MEASUREMENT_GREEN,
        contract::MEASUREMENT_AGENT,
    ];
    let started = Instant::now();
    let mut seen: BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
    while started.elapsed() < Duration::from_secs(40) {
        std::thread::sleep(Duration::from_millis(500));
        seen.clear();
        for line in read_or_empty(&records).lines() {
            let (name, tags, fields) =
                parse_line(line).unwrap_or_else(|| panic!("bad line {line}"));
            let entry = seen.entry(name).or_default();
            entry.0.extend(tags);
            entry.1.extend(fields);
        }
        if wanted.iter().all(|m| seen.contains_key(*m)) {
            break;
        }
    }
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let _ = child.wait();
    for m in wanted {
        assert!(
            seen.contains_key(m),
            "the demo wrote no `{m}` line in 40 s: {:?}",
            seen.keys()
        );
    }
    for (name, (tags, fields)) in &seen {
        let m = measurement(name)
            .unwrap_or_else(|| panic!("the agent writes `{name}`, which the contract lacks"));
        for t in tags {
            assert!(m.has_tag(t), "`{name}` has tag `{t}`, not in the contract");
        }
        for f in fields {
            assert!(
                m.has_field(f),
                "`{name}` has field `{f}`, not in the contract"
            );
        }
    }
}

fn read_or_empty(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// The systemd unit
// ---------------------------------------------------------------------------------------------

/// The unit's `[Service]` settings as (key, value) pairs, in order; a key may repeat.
fn unit_settings(text: &str) -> Vec<(String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            section = line.to_string();
        } else if section == "[Service]"
            && let Some((k, v)) = line.split_once('=')
        {
            out.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

/// A Modbus RTU device hangs on /dev/ttyUSB0 (or ttyS*, ttyACM*), owned by group dialout. The
/// hardened unit once had `PrivateDevices=yes` and no dialout group, so the agent could not open
/// the port it was configured for. The unit must keep every other device closed while letting
/// the serial families through.
#[test]
fn the_systemd_unit_opens_serial_ports_and_keeps_other_devices_closed() {
    let path = deploy().join("shopfloor.service");
    let text = read(&path);
    let settings = unit_settings(&text);
    let values = |key: &str| -> Vec<&str> {
        settings
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_ne!(
        values("PrivateDevices").last().copied(),
        Some("yes"),
        "PrivateDevices=yes hides every serial port"
    );
    assert_eq!(
        values("DevicePolicy"),
        ["closed"],
        "other devices stay closed"
    );
    let allowed: Vec<&str> = values("DeviceAllow");
    for family in ["char-ttyS", "char-ttyUSB", "char-ttyACM"] {
        assert!(
            allowed.iter().any(|a| {
                let mut words = a.split_whitespace();
                words.next() == Some(family)
                    && words
                        .next()
                        .is_some_and(|m| m.contains('r') && m.contains('w'))
            }),
            "DeviceAllow lacks `{family} rw`: {allowed:?}"
        );
    }
    assert!(
        values("SupplementaryGroups")
            .iter()
            .any(|g| g.split_whitespace().any(|g| g == "dialout")),
        "the serial ports belong to group dialout"
    );

    // systemd's own reading of the unit, where systemd-analyze is at hand: no unknown key, no
    // bad value. The agent's path is replaced by this build's binary, which verify wants to
    // exist.
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze not found: the unit's syntax is not verified by systemd");
        return;
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let unit = dir.path().join("shopfloor.service");
    std::fs::write(&unit, text.replace("/usr/local/bin/shopfloor", BIN)).expect("write the unit");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("run systemd-analyze verify");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && !said.contains("Unknown") && !said.contains("Failed to parse"),
        "systemd-analyze verify {}: {said}",
        path.display()
    );
}
