//! The local web board and its JSON API, `/metrics` and `/healthz`.
//!
//! Served by the agent itself (axum), bound to 127.0.0.1:8080 unless `[web] listen` says
//! otherwise. The board is one page with its script inline: it polls the JSON API every two
//! seconds, so it needs no build step and works on the gateway's own screen with no network.
//! It reads only the engine's published snapshot, the signals it asks the engine for (one copy
//! per `/api/machines` request, made between two of the engine's events) and the metrics
//! registry: the web server owns no state of its own and can never slow the engine down.
//!
//! | path | what |
//! |---|---|
//! | `/` | the machine board, Chinese by default, `?lang=en` for English |
//! | `/api/machines` | every machine: state, time in state, today's availability and parts, latest signals, fields whose reads fail (`field_errors`) |
//! | `/api/fleet` | today's networking rate, CNC rate, CNC utilisation, energy and intensity, with numerators, denominators, targets and the `[green]` limits; why each absent figure is absent |
//! | `/api/health` | devices up, degraded or down and why (and the machines each feeds) and their failing fields, machines without a data source, each output delivering, with a backlog or failing and why, the spool, dropped records |
//! | `POST /api/value-added` | declares value added for a day or month (`{"period": "2026-11", "value_10k_cny": 850.0}`) |
//! | `/metrics` | Prometheus text format |
//! | `/healthz` | 200 while the engine publishes fresh snapshots, 503 otherwise |
//!
//! Who may do what. Every request must name the board in its `Host` header: the listen
//! address, `localhost`, `127.0.0.1`, `[::1]` or one of `[web] hosts` (any IP literal too when
//! the board listens on every interface: DNS rebinding needs a name, never an address);
//! anything else is answered 421, so a web page whose name was rebound to the gateway reads
//! nothing. A request with no `Host` at all (HTTP/1.0, such as the container image's health
//! check) is not from a browser and is let through. Reading is otherwise open. A write (every `POST`) is refused with 403 when its
//! `Origin` names another host (a form or script on a foreign page), with 403 when no
//! `[web] write_token` is configured (the board is read-only then), and with 401 unless it
//! carries `Authorization: Bearer <token>`.

pub mod config;
pub mod webhook;

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::engine::{SignalQuery, Snapshot};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::sink::spool::SpoolStats;
use crate::sink::status::OutputStatus;

/// A snapshot older than this means the engine is stuck: `/healthz` answers 503.
const STALE: SignedDuration = SignedDuration::from_secs(10);

/// What the handlers read. Cheap to clone.
#[derive(Clone)]
pub struct Board {
    pub site_name: Arc<str>,
    pub enterprise: Arc<str>,
    pub snapshots: watch::Receiver<Snapshot>,
    pub signals: SignalQuery,
    pub spool: watch::Receiver<SpoolStats>,
    /// Each output's delivery state, as its writer publishes it.
    pub outputs: Vec<watch::Receiver<OutputStatus>>,
    /// Each machine of the register with the devices that feed it (empty: no data source).
    pub machine_sources: Arc<Vec<(String, Vec<String>)>>,
    pub metrics: Metrics,
    /// Where `POST /api/value-added` writes declared figures (the engine re-reads it).
    pub declared_file: Option<PathBuf>,
    /// Who may write, and which `Host` and `Origin` names the board answers to.
    pub access: Arc<Access>,
    /// Connections of dial-in listeners that matched no DTU, for `/api/health`.
    pub unknown_dtus: crate::source::dial_in::UnknownDtus,
}

/// The board's access rules (see the module's documentation).
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// The write token; `None`: every write is refused.
    pub write_token: Option<String>,
    /// Host names (lower case, without port) accepted in `Host` and `Origin`.
    pub hosts: Vec<String>,
    /// The board listens on every interface: an IP literal is accepted as host too.
    pub any_address: bool,
}

impl Access {
    /// The rules for a board listening on `listen`, with the configured extra `hosts`.
    pub fn new(
        listen: std::net::SocketAddr,
        hosts: &[String],
        write_token: Option<String>,
    ) -> Self {
        let mut names: Vec<String> = ["localhost", "127.0.0.1", "[::1]"]
            .into_iter()
            .map(String::from)
            .collect();
        names.push(match listen.ip() {
            std::net::IpAddr::V4(ip) => ip.to_string(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        });
        names.extend(
            hosts
                .iter()
                .map(|h| h.trim_end_matches('.').to_ascii_lowercase()),
        );
        Access {
            write_token,
            hosts: names,
            any_address: listen.ip().is_unspecified(),
        }
    }

    /// Whether `authority` (`host[:port]`, as in `Host`) names this board.
    pub fn host_allowed(&self, authority: &str) -> bool {
        let host = strip_port(authority)
            .trim_end_matches('.')
            .to_ascii_lowercase();
        if self.hosts.contains(&host) {
            return true;
        }
        self.any_address
            && (host.parse::<std::net::Ipv4Addr>().is_ok()
                || host
                    .strip_prefix('[')
                    .and_then(|h| h.strip_suffix(']'))
                    .is_some_and(|h| h.parse::<std::net::Ipv6Addr>().is_ok()))
    }

    /// Whether a request's `Origin` (`scheme://host[:port]`, or `null`) is this board.
    pub fn origin_allowed(&self, origin: &str) -> bool {
        match origin.split_once("://") {
            Some(("http" | "https", authority)) => {
                !authority.contains('/') && self.host_allowed(authority)
            }
            _ => false,
        }
    }

    /// Whether `header` (the `Authorization` value) carries the write token.
    fn token_matches(&self, header: Option<&str>) -> bool {
        let (Some(token), Some(header)) = (&self.write_token, header) else {
            return false;
        };
        let Some(given) = header.strip_prefix("Bearer ") else {
            return false;
        };
        // Compared in time independent of where the first difference is.
        let (a, b) = (token.as_bytes(), given.trim().as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// `host` from `host:port` or `[v6]:port`.
fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .find(']')
            .map_or(authority, |end| &authority[..=end]);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

/// Refuses a request to a foreign `Host` (421) and an unauthorised write (403/401).
async fn guard(
    State(board): State<Board>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let access = &board.access;
    let headers = request.headers();
    let header = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let host = header(header::HOST).or_else(|| request.uri().authority().map(|a| a.as_str()));
    // A request without `Host` (HTTP/1.0, the image's health check) cannot come from a
    // browser, and DNS rebinding needs a browser: it is let through.
    if let Some(host) = host
        && !access.host_allowed(host)
    {
        return (
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "this board does not answer to host `{host}`: add the name to [web] hosts if it is the gateway's\n"
            ),
        )
            .into_response();
    }
    if request.method() != axum::http::Method::GET && request.method() != axum::http::Method::HEAD {
        if let Some(origin) = header(header::ORIGIN)
            && !access.origin_allowed(origin)
        {
            return (
                StatusCode::FORBIDDEN,
                format!("writes from origin `{origin}` are refused: only the board's own pages may write\n"),
            )
                .into_response();
        }
        if access.write_token.is_none() {
            return (
                StatusCode::FORBIDDEN,
                "the board is read-only: set [web] write_token = { env = \"VARIABLE\" } or { file = \"/path\" } \
                 and send it as `Authorization: Bearer <token>` to enable writes\n",
            )
                .into_response();
        }
        if !access.token_matches(header(header::AUTHORIZATION)) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "a write needs the [web] write_token as `Authorization: Bearer <token>`\n",
            )
                .into_response();
        }
    }
    next.run(request).await
}

/// Serves on a bound listener until shutdown.
pub async fn serve(board: Board, listener: tokio::net::TcpListener, mut shutdown: Shutdown) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "web board listening");
    }
    let stop = async move { shutdown.wait().await };
    if let Err(e) = axum::serve(listener, router(board))
        .with_graceful_shutdown(stop)
        .await
    {
        warn!(error = %e, "web board stopped");
    }
}

pub fn router(board: Board) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/api/machines", get(machines))
        .route("/api/fleet", get(fleet))
        .route("/api/health", get(health))
        .route("/api/alerts", get(alerts))
        .route("/api/outlets", get(outlets))
        .route("/api/value-added", post(value_added))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .layer(axum::middleware::from_fn_with_state(board.clone(), guard))
        .with_state(board)
}

#[derive(Deserialize)]
struct PageQuery {
    lang: Option<String>,
}

async fn page(Query(q): Query<PageQuery>) -> Html<String> {
    let lang = match q.lang.as_deref() {
        Some("en") => "en",
        _ => "zh",
    };
    Html(include_str!("board.html").replace("__LANG__", lang))
}

#[derive(Serialize)]
struct MachineJson {
    id: String,
    name: String,
    kind: String,
    cnc: bool,
    state: &'static str,
    code: i64,
    since: String,
    state_s: f64,
    availability_today: Option<f64>,
    parts_today: i64,
    signals: serde_json::Map<String, serde_json::Value>,
    /// The machine's fields whose reads fail while their device answers: they are missing
    /// from `signals` (or hold an older value there).
    field_errors: Vec<FieldErrorJson>,
}

/// One field that delivers nothing while its device answers.
#[derive(Serialize)]
struct FieldErrorJson {
    signal: String,
    device: String,
    /// `exception`, `short` or `decode`.
    kind: &'static str,
    /// In words: the exception and the request, or why the value does not decode.
    error: String,
    since: String,
}

impl From<&crate::engine::FieldErrorView> for FieldErrorJson {
    fn from(e: &crate::engine::FieldErrorView) -> Self {
        FieldErrorJson {
            signal: e.signal.to_string(),
            device: e.device.to_string(),
            kind: e.kind,
            error: e.error.clone(),
            since: e.since.to_string(),
        }
    }
}

async fn machines(State(board): State<Board>) -> Json<Vec<MachineJson>> {
    let snap = board.snapshots.borrow().clone();
    // A stuck engine answers nothing: the states are shown without signals then.
    let signals = board.signals.latest().await.unwrap_or_default();
    let now = snap.at.unwrap_or_else(Timestamp::now);
    Json(
        snap.machines
            .iter()
            .map(|m| MachineJson {
                id: m.id.to_string(),
                name: m.name.clone(),
                kind: m.kind.clone(),
                cnc: m.cnc,
                state: m.state.as_str(),
                code: m.state.code(),
                since: m.since.to_string(),
                state_s: now.duration_since(m.since).as_secs_f64().max(0.0),
                availability_today: m.availability_today,
                parts_today: m.parts_today,
                signals: signals
                    .iter()
                    .find(|s| s.id == m.id)
                    .map(|s| {
                        s.signals
                            .iter()
                            .map(|(k, v)| (k.to_string(), value_json(v)))
                            .collect()
                    })
                    .unwrap_or_default(),
                field_errors: snap
                    .field_errors
                    .iter()
                    .filter(
                        |e| matches!(&e.target, crate::model::Target::Machine(id) if *id == m.id),
                    )
                    .map(FieldErrorJson::from)
                    .collect(),
            })
            .collect(),
    )
}

fn value_json(v: &crate::model::Value) -> serde_json::Value {
    use crate::model::Value;
    match v {
        Value::Bool(b) => (*b).into(),
        Value::Int(i) => (*i).into(),
        Value::Float(f) => {
            serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, Into::into)
        }
        Value::Text(s) => s.clone().into(),
    }
}

/// A ratio with what it is made of and the programme's target, so the board shows both.
#[derive(Serialize)]
struct Ratio {
    value: Option<f64>,
    numerator: f64,
    denominator: f64,
    target: Option<f64>,
}

#[derive(Serialize)]
struct FleetJson {
    site: String,
    enterprise: String,
    at: Option<String>,
    networking_rate: Option<Ratio>,
    networking_rate_digital: Option<Ratio>,
    cnc_rate: Option<Ratio>,
    cnc_utilisation: Option<Ratio>,
    energy_tce: Option<f64>,
    electricity_kwh: Option<f64>,
    water_t: Option<f64>,
    value_added_10k_cny: Option<f64>,
    tce_per_10k_cny: Option<f64>,
    water_t_per_10k_cny: Option<f64>,
    /// Wastewater discharged today, t, from the outlets' loggers; `null` without one.
    wastewater_t: Option<f64>,
    wastewater_t_per_10k_cny: Option<f64>,
    /// The `[green]` limits today's figures are judged against; `null` when none is set.
    tce_per_10k_cny_limit: Option<f64>,
    water_t_per_10k_cny_limit: Option<f64>,
    wastewater_t_per_10k_cny_limit: Option<f64>,
    /// The shift calendar has shifts and none is on now.
    outside_calendar: bool,
    /// Why each green figure above that is `null` is absent: `no_meter` (no meter of its
    /// carrier is configured), `not_measured` (no meter delivered a reading today),
    /// `no_value_added` (value added unknown or 0 so far today), `outside_calendar` (the
    /// same, while no shift is on), `no_outlet` (no outlet reported a discharge).
    absent: std::collections::BTreeMap<&'static str, &'static str>,
}

/// Why a green figure is absent (see `FleetJson::absent`): `metered` whether a meter of its
/// carrier delivered today, `configured` whether any is configured, `per_va` for the figures
/// divided by value added.
fn absent_reason(snap: &Snapshot, configured: bool, metered: bool, per_va: bool) -> &'static str {
    if !configured {
        "no_meter"
    } else if !metered {
        "not_measured"
    } else if per_va && snap.outside_calendar {
        "outside_calendar"
    } else {
        "no_value_added"
    }
}

/// The programme's targets shown beside today's figures: networking rate ≥ 55 %, CNC rate
/// ≥ 65 % (benchmark enterprises), energy intensity 0.43 tce per 10k CNY (the 2022 figure).
const NETWORKING_TARGET: f64 = 0.55;
const CNC_TARGET: f64 = 0.65;

async fn fleet(State(board): State<Board>) -> Json<FleetJson> {
    let snap = board.snapshots.borrow().clone();
    let f = snap.fleet_today;
    let g = snap.green_today;
    let (configured, metered) = (snap.meters_configured, snap.metered);
    let va = g
        .filter(|_| snap.value_added_known)
        .map(|g| g.value_added_10k_cny);
    let mut json = FleetJson {
        site: board.site_name.to_string(),
        enterprise: board.enterprise.to_string(),
        at: snap.at.map(|t| t.to_string()),
        networking_rate: f.map(|f| Ratio {
            value: f.networking_rate(),
            numerator: f.machines_networked as f64,
            denominator: f.machines_total as f64,
            target: Some(NETWORKING_TARGET),
        }),
        networking_rate_digital: f.map(|f| Ratio {
            value: f.networking_rate_digital(),
            numerator: f.machines_digital_networked as f64,
            denominator: f.machines_digital as f64,
            target: None,
        }),
        cnc_rate: f.map(|f| Ratio {
            value: f.cnc_rate(),
            numerator: f.machines_cnc as f64,
            denominator: f.machines_total as f64,
            target: Some(CNC_TARGET),
        }),
        cnc_utilisation: f.map(|f| Ratio {
            value: f.cnc_utilisation(),
            numerator: f.cnc_running_s,
            denominator: f.cnc_planned_s,
            target: None,
        }),
        // Missing is not zero: `null` for what no meter measures.
        energy_tce: g.filter(|_| snap.metered.energy).map(|g| g.energy_tce),
        electricity_kwh: (g.filter(|_| snap.metered.electricity)).map(|g| g.electricity_kwh),
        water_t: g.filter(|_| snap.metered.water).map(|g| g.water_t),
        // Missing is not zero: `null` while no source gave a value added today.
        value_added_10k_cny: va,
        tce_per_10k_cny: (g.filter(|_| snap.metered.energy)).and_then(|g| g.tce_per_10k_cny()),
        water_t_per_10k_cny: (g.filter(|_| snap.metered.water))
            .and_then(|g| g.water_t_per_10k_cny()),
        wastewater_t: snap.wastewater_today,
        wastewater_t_per_10k_cny: snap
            .wastewater_today
            .zip(va)
            .and_then(|(w, va)| crate::engine::indicators::ratio(w, va)),
        tce_per_10k_cny_limit: snap.limits.tce_per_10k_cny,
        water_t_per_10k_cny_limit: snap.limits.water_t_per_10k_cny,
        wastewater_t_per_10k_cny_limit: snap.limits.wastewater_t_per_10k_cny,
        outside_calendar: snap.outside_calendar,
        absent: Default::default(),
    };
    let va_reason = if snap.outside_calendar {
        "outside_calendar"
    } else {
        "no_value_added"
    };
    // Wastewater per value added: without a discharge for want of an outlet, else of value added.
    let ww_reason = |per_va: bool| match snap.wastewater_today {
        Some(_) if per_va => va_reason,
        _ => "no_outlet",
    };
    for (field, value, reason) in [
        (
            "energy_tce",
            json.energy_tce,
            absent_reason(&snap, configured.energy, metered.energy, false),
        ),
        (
            "electricity_kwh",
            json.electricity_kwh,
            absent_reason(&snap, configured.electricity, metered.electricity, false),
        ),
        (
            "water_t",
            json.water_t,
            absent_reason(&snap, configured.water, metered.water, false),
        ),
        ("value_added_10k_cny", json.value_added_10k_cny, va_reason),
        (
            "tce_per_10k_cny",
            json.tce_per_10k_cny,
            absent_reason(&snap, configured.energy, metered.energy, true),
        ),
        (
            "water_t_per_10k_cny",
            json.water_t_per_10k_cny,
            absent_reason(&snap, configured.water, metered.water, true),
        ),
        ("wastewater_t", json.wastewater_t, ww_reason(false)),
        (
            "wastewater_t_per_10k_cny",
            json.wastewater_t_per_10k_cny,
            ww_reason(true),
        ),
    ] {
        if value.is_none() {
            json.absent.insert(field, reason);
        }
    }
    Json(json)
}

#[derive(Serialize)]
struct AlertJson {
    /// `outlet_limit` (a pollutant over its limit at an outlet) or `indicator`.
    kind: &'static str,
    /// `<outlet>/<pollutant>`, or the indicator's field name.
    subject: String,
    open: bool,
    since: String,
    until: Option<String>,
    duration_s: Option<f64>,
    /// The highest value while open, and the limit.
    value: f64,
    limit: f64,
}

/// Open alerts first (newest first), then the last closed ones.
async fn alerts(State(board): State<Board>) -> Json<Vec<AlertJson>> {
    let snap = board.snapshots.borrow().clone();
    Json(
        snap.alerts
            .iter()
            .map(|a| AlertJson {
                kind: a.kind,
                subject: a.subject.clone(),
                open: a.until.is_none(),
                since: a.since.to_string(),
                until: a.until.map(|t| t.to_string()),
                duration_s: a.duration_s(),
                value: a.value,
                limit: a.limit,
            })
            .collect(),
    )
}

#[derive(Serialize)]
struct OutletValueJson {
    pollutant: String,
    /// The average of the period (or the real-time value); `null` when the logger sent none.
    value: Option<f64>,
    unit: String,
    /// The data flag: N normal, F stopped, M maintenance, S manual, D fault, C calibration,
    /// T over range, B communication fault.
    flag: Option<&'static str>,
    limit: Option<f64>,
}

#[derive(Serialize)]
struct OutletJson {
    outlet: String,
    name: String,
    kind: &'static str,
    at: String,
    period: &'static str,
    values: Vec<OutletValueJson>,
}

/// The outlets heard from, with their latest values and flags.
async fn outlets(State(board): State<Board>) -> Json<Vec<OutletJson>> {
    let snap = board.snapshots.borrow().clone();
    Json(
        snap.outlets
            .iter()
            .map(|o| OutletJson {
                outlet: o.outlet.to_string(),
                name: o.name.to_string(),
                kind: o.kind,
                at: o.at.to_string(),
                period: o.period,
                values: o
                    .values
                    .iter()
                    .map(|v| OutletValueJson {
                        pollutant: v.pollutant.to_string(),
                        value: v.value,
                        unit: v.unit.to_string(),
                        flag: v.flag,
                        limit: v.limit,
                    })
                    .collect(),
            })
            .collect(),
    )
}

#[derive(Serialize)]
struct DeviceJson {
    id: String,
    /// Whether the device answers (an exception is an answer).
    up: bool,
    since: Option<String>,
    /// Why it is down; `null` while up.
    reason: Option<String>,
    /// `"up"`, `"degraded"` (up, but every request answered with an exception: it delivers
    /// nothing) or `"down"`.
    status: &'static str,
    /// While degraded: the exceptions it answers with; `null` otherwise.
    degraded_reason: Option<String>,
    /// The machines whose signals it delivers.
    machines: Vec<String>,
    /// Its fields whose reads fail while it answers (machines' and meters'): a device that
    /// is up with failing fields is not fully healthy.
    failing_fields: Vec<FailingFieldJson>,
}

/// One output's delivery (see `sink::status`).
#[derive(Serialize)]
struct OutputJson {
    name: String,
    /// `influx`, `file` or `uplink`.
    kind: &'static str,
    /// `"delivering"`, `"backlog"` (a line waits longer than 10 s) or `"failing"`.
    state: &'static str,
    /// Lines this output has not delivered yet.
    backlog_lines: u64,
    /// How long the oldest of them has waited; `null` when none waits.
    oldest_age_s: Option<f64>,
    /// Why the last write request failed, while failing; `null` otherwise.
    reason: Option<String>,
    /// How long requests have been failing; `null` while not failing.
    failing_s: Option<f64>,
    /// The last successful write request; `null` before the first.
    last_success: Option<String>,
}

fn output_json(s: &OutputStatus, now_ms: i64) -> OutputJson {
    let at = |ms: i64| Timestamp::from_millisecond(ms).ok().map(|t| t.to_string());
    OutputJson {
        name: s.name.clone(),
        kind: s.kind,
        state: s.delivery(now_ms).as_str(),
        backlog_lines: s.backlog_lines,
        oldest_age_s: s.oldest_age_s(now_ms),
        reason: s.failing.clone(),
        failing_s: s
            .failing_since_ms
            .map(|ms| (now_ms - ms).max(0) as f64 / 1000.0),
        last_success: s.last_success_ms.and_then(at),
    }
}

/// A failing field of a device in `/api/health`.
#[derive(Serialize)]
struct FailingFieldJson {
    /// `machine` or `meter`.
    target: &'static str,
    id: String,
    #[serde(flatten)]
    field: FieldErrorJson,
}

#[derive(Serialize)]
struct HealthJson {
    devices: Vec<DeviceJson>,
    /// Each output: delivering, backlog of N lines with the oldest's age, or failing and why.
    outputs: Vec<OutputJson>,
    /// Machines of the register that no device or topic feeds: offline because nothing
    /// reads them, not because a device failed.
    machines_without_source: Vec<String>,
    devices_up: usize,
    /// Devices up but delivering nothing (counted in `devices_up` too).
    devices_degraded: usize,
    /// Devices up with at least one failing field (counted in `devices_up` too).
    devices_with_failing_fields: usize,
    spool_lines: u64,
    spool_bytes: u64,
    /// Lines the spool deleted before every output had them: at `max_bytes` (or a full disk)
    /// and at `max_age`, since the spool was created.
    spool_dropped_lines: u64,
    /// Lines the spool could not append at all (a full disk with nothing left to drop).
    spool_lost_lines: u64,
    oldest_waiting_s: Option<f64>,
    /// Records the engine could not hand to the spool (only if the spool task had stopped).
    records_dropped: u64,
    /// Modbus poll results dropped at the engine queue's bound.
    source_events_dropped: u64,
    /// Times the engine waited for room in the spool queue: back-pressure, nothing lost.
    spool_waits: u64,
    sent_lines: u64,
    /// Connections to a `[[dial_in]]` port whose first bytes matched no DTU, newest first:
    /// the bytes to copy into a `[[dial_in.dtu]]`.
    unknown_dtus: Vec<UnknownDtuJson>,
}

#[derive(Serialize)]
struct UnknownDtuJson {
    listener: String,
    peer: String,
    first_bytes_hex: String,
    first_bytes_ascii: String,
    reason: &'static str,
    last_seen: String,
    times: u64,
}

async fn health(State(board): State<Board>) -> Json<HealthJson> {
    let snap = board.snapshots.borrow().clone();
    let spool = *board.spool.borrow();
    let now = Timestamp::now().as_millisecond();
    Json(HealthJson {
        outputs: board
            .outputs
            .iter()
            .map(|o| output_json(&o.borrow(), now))
            .collect(),
        machines_without_source: board
            .machine_sources
            .iter()
            .filter(|(_, sources)| sources.is_empty())
            .map(|(m, _)| m.clone())
            .collect(),
        devices_up: snap.devices.iter().filter(|d| d.up).count(),
        devices_degraded: snap
            .devices
            .iter()
            .filter(|d| d.up && d.degraded.is_some())
            .count(),
        devices_with_failing_fields: snap
            .devices
            .iter()
            .filter(|d| d.up && snap.field_errors.iter().any(|e| e.device == d.id))
            .count(),
        devices: snap
            .devices
            .iter()
            .map(|d| DeviceJson {
                id: d.id.to_string(),
                up: d.up,
                since: d.since.map(|t| t.to_string()),
                reason: d.reason.clone(),
                status: match (d.up, &d.degraded) {
                    (false, _) => "down",
                    (true, Some(_)) => "degraded",
                    (true, None) => "up",
                },
                degraded_reason: d.degraded.clone().filter(|_| d.up),
                machines: board
                    .machine_sources
                    .iter()
                    .filter(|(_, sources)| sources.iter().any(|s| **s == *d.id))
                    .map(|(m, _)| m.clone())
                    .collect(),
                failing_fields: snap
                    .field_errors
                    .iter()
                    .filter(|e| e.device == d.id)
                    .map(|e| {
                        let (target, id) = match &e.target {
                            crate::model::Target::Machine(id) => ("machine", id),
                            crate::model::Target::Meter(id) => ("meter", id),
                        };
                        FailingFieldJson {
                            target,
                            id: id.to_string(),
                            field: e.into(),
                        }
                    })
                    .collect(),
            })
            .collect(),
        spool_lines: spool.lines,
        spool_bytes: spool.bytes,
        spool_dropped_lines: spool.dropped_lines,
        spool_lost_lines: board.metrics.sum("shopfloor_spool_lost_lines_total"),
        oldest_waiting_s: spool.oldest_ms.map(|ms| (now - ms).max(0) as f64 / 1000.0),
        records_dropped: snap.records_dropped,
        source_events_dropped: board
            .metrics
            .sum(crate::source::modbus::SOURCE_EVENTS_DROPPED),
        spool_waits: board.metrics.sum(crate::engine::SPOOL_WAITS),
        sent_lines: board.metrics.sum("shopfloor_output_lines_total"),
        unknown_dtus: board
            .unknown_dtus
            .list()
            .into_iter()
            .map(|u| UnknownDtuJson {
                listener: u.listener,
                peer: u.peer,
                first_bytes_hex: u.first_bytes_hex,
                first_bytes_ascii: u.first_bytes_ascii,
                reason: u.reason,
                last_seen: u.last_seen.to_string(),
                times: u.times,
            })
            .collect(),
    })
}

async fn metrics(State(board): State<Board>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        board.metrics.render_prometheus(),
    )
        .into_response()
}

async fn healthz(State(board): State<Board>) -> Response {
    let at = board.snapshots.borrow().at;
    match at {
        Some(at) if Timestamp::now().duration_since(at) <= STALE => {
            (StatusCode::OK, "ok\n").into_response()
        }
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            "engine has not published a snapshot in the last 10 s\n",
        )
            .into_response(),
    }
}

#[derive(Deserialize)]
struct DeclaredJson {
    period: String,
    value_10k_cny: f64,
}

/// Adds (or replaces) a declared figure in the declared file, atomically; the engine picks it
/// up at its next flush.
async fn value_added(State(board): State<Board>, Json(d): Json<DeclaredJson>) -> Response {
    let Some(path) = board.declared_file.clone() else {
        return (
            StatusCode::CONFLICT,
            "no [value_added] declared_file is configured; declared figures have nowhere to go\n",
        )
            .into_response();
    };
    if crate::engine::config::parse_period(&d.period).is_none() {
        return (
            StatusCode::BAD_REQUEST,
            format!(
                "period `{}` is neither \"YYYY-MM\" nor \"YYYY-MM-DD\"\n",
                d.period
            ),
        )
            .into_response();
    }
    if !(d.value_10k_cny.is_finite() && d.value_10k_cny >= 0.0) {
        return (
            StatusCode::BAD_REQUEST,
            "value_10k_cny must be a number ≥ 0\n",
        )
            .into_response();
    }
    let result =
        tokio::task::spawn_blocking(move || declare(&path, &d.period, d.value_10k_cny)).await;
    match result {
        Ok(Ok(())) => (StatusCode::OK, "declared\n").into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// Rewrites the declared file with `period` set to `value`, keeping every other entry.
fn declare(path: &std::path::Path, period: &str, value: f64) -> std::io::Result<()> {
    let mut entries: Vec<(String, f64)> = Vec::new();
    if let Ok(text) = std::fs::read_to_string(path) {
        #[derive(Deserialize)]
        struct File {
            #[serde(default)]
            declared: Vec<crate::engine::config::Declared>,
        }
        let file: File = toml::from_str(&text)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
        entries = file
            .declared
            .into_iter()
            .map(|d| (d.period, d.value_10k_cny))
            .collect();
    }
    entries.retain(|(p, _)| p != period);
    entries.push((period.to_string(), value));
    let mut text = String::from(
        "# Declared value added, 10k CNY per period. Written by the board's API; may be edited.\n",
    );
    for (p, v) in &entries {
        text.push_str(&format!(
            "\n[[declared]]\nperiod = \"{p}\"\nvalue_10k_cny = {v:?}\n"
        ));
    }
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_absent_green_figure_says_why() {
        let mut snap = Snapshot::default();
        // No meter of the carrier at all.
        assert_eq!(absent_reason(&snap, false, false, true), "no_meter");
        // A meter, but no reading today.
        assert_eq!(absent_reason(&snap, true, false, true), "not_measured");
        // Measured, but the intensity has no value added yet: during a shift…
        assert_eq!(absent_reason(&snap, true, true, true), "no_value_added");
        // …and while no shift is on.
        snap.outside_calendar = true;
        assert_eq!(absent_reason(&snap, true, true, true), "outside_calendar");
        // A total (not per value added) is never absent for the calendar's sake.
        assert_eq!(absent_reason(&snap, true, false, false), "not_measured");
    }
}
