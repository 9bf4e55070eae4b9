//! Wires the pipeline together: device actors and MQTT brokers → engine → spool → one writer
//! per output.

pub mod config;
pub mod trial;

use std::sync::Arc;

use jiff::Timestamp;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::agent::config::Config;
use crate::engine::{self, Engine, Snapshot};
use crate::metrics::Metrics;
use crate::queue;
use crate::shutdown::Shutdown;
use crate::sink::spool::SpoolStats;
use crate::sink::{self, Output, uplink::UplinkWriter};
use crate::source::{cjt188, dial_in, dlt645, hj212, melsec, meterbus, modbus, mqtt, opcua};
use crate::web;

/// Events waiting between the sources and the engine. What a source does at the bound depends
/// on what its data is: a Modbus device task keeps polling on schedule, its results wait here,
/// and at the bound it drops the newest and counts it (the next poll a second later supersedes
/// it; see `source::modbus`), so a stalled engine never stalls polling; an MQTT broker task
/// waits for room and stops reading from the broker meanwhile, so the broker keeps the messages
/// for the agent's session (see `source::mqtt`): a message is the only copy of its data. The
/// engine stops taking events while the spool is slow (see `engine::run`), so this is where a
/// slow spool's back-pressure reaches the sources. Both policies are rows of [`crate::queue`].
pub const EVENT_QUEUE: usize = queue::EVENT_QUEUE;

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory, the spool or an output.
    #[error(transparent)]
    Sink(#[from] sink::StartError),
    #[error(
        "cannot serve the web board on {addr}: {source}; change [web] listen or set enabled = false"
    )]
    Web {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Mqtt(#[from] mqtt::MqttError),
    #[error(transparent)]
    Hj212(#[from] hj212::listen::ListenError),
    #[error(transparent)]
    DialIn(#[from] dial_in::listen::ListenError),
}

/// A running agent.
#[derive(Debug)]
pub struct Running {
    /// The engine's latest view, for the terminal summary and the board.
    pub snapshots: watch::Receiver<Snapshot>,
    /// Asks the engine for the machines' latest signals.
    pub signals: engine::SignalQuery,
    pub spool_stats: watch::Receiver<SpoolStats>,
    /// Counters and gauges of every part, for `/metrics` and the board.
    pub metrics: Metrics,
    /// Where the web board listens, when it is enabled.
    pub web_addr: Option<std::net::SocketAddr>,
    tasks: sink::Tasks,
}

impl Running {
    /// Waits until every task has stopped after shutdown was triggered.
    pub async fn finished(self) {
        self.tasks.stopped().await;
    }
}

/// How often each Modbus device's health goes to the store as an `agent` line.
const DEVICE_HEALTH_EVERY: Duration = Duration::from_secs(60);

/// Writes one `agent` line per Modbus device every minute (see `source::modbus::health`),
/// straight to the spool: the lines come from the metrics alone, so the engine need not know.
/// When the spool queue is full it waits for room, like the engine.
fn report_device_health(
    config: &Config,
    records: flume::Sender<Vec<String>>,
    metrics: Metrics,
    mut shutdown: Shutdown,
) -> impl std::future::Future<Output = ()> + use<> {
    let site = &config.site;
    let tags: Vec<(String, String)> = vec![
        ("county".into(), site.county.clone()),
        ("sector".into(), site.sector.as_str().into()),
        ("enterprise".into(), site.enterprise.clone()),
    ];
    async move {
        let tags: Vec<(&str, &str)> = tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut ticker = tokio::time::interval(DEVICE_HEALTH_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        // The first tick is immediate; skip it so the first line reports a minute of polling.
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.wait() => return,
            }
            let lines = modbus::health::device_lines(&metrics, &tags, Timestamp::now());
            if lines.is_empty() {
                continue;
            }
            const _: () = queue::RECORDS_FROM_DEVICE_HEALTH.sent_as(queue::WhenFull::Block);
            tokio::select! {
                sent = records.send_async(lines) => if sent.is_err() { return },
                _ = shutdown.wait() => return,
            }
        }
    }
}

/// The board's access rules from `[web]`. An unreadable write token (checked at load, so only
/// a file removed since) leaves the board read-only, with a warning.
fn web_access(web: &crate::web::config::Web) -> web::Access {
    let token = web.write_token.as_ref().and_then(|s| match s.resolve() {
        Ok(token) => Some(token),
        Err(e) => {
            warn!(error = %e, "[web] write_token unreadable: the board refuses writes");
            None
        }
    });
    web::Access::new(web.listen, &web.hosts, token)
}

/// A task of a source, boxed: each source's future is of its own type.
pub type SourceTask = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// The tasks of every source that reads devices or brokers (all but the HJ 212 listeners,
/// which wait to be called), ready to spawn: the agent's and `shopfloor test`'s, the one way
/// the sources are started.
pub struct PolledSources {
    pub tasks: Vec<SourceTask>,
    /// How many Modbus connections (a TCP connection or a serial port) are among them.
    pub modbus_connections: usize,
}

/// Makes the tasks of every source but the HJ 212 listeners; `brokers` are the `[[mqtt]]`
/// brokers already prepared ([`prepare_brokers`]), `pki_dir` the OPC UA clients' certificate
/// store.
pub fn polled_sources(
    config: &Config,
    brokers: Vec<mqtt::Broker>,
    pki_dir: std::path::PathBuf,
    events_tx: &mpsc::Sender<crate::model::SourceEvent>,
    metrics: &Metrics,
    shutdown: &Shutdown,
) -> PolledSources {
    let mut tasks: Vec<SourceTask> = Vec::new();
    let mut connection_count = 0;
    for connection in modbus::connections_lazily(config) {
        connection_count += 1;
        tasks.push(Box::pin(modbus::run_connection(
            connection,
            events_tx.clone(),
            metrics.clone(),
            shutdown.clone(),
        )));
    }
    for broker in brokers {
        tasks.push(Box::pin(mqtt::run(
            broker,
            events_tx.clone(),
            metrics.clone(),
            shutdown.clone(),
        )));
    }
    for server in &config.opcua {
        tasks.push(Box::pin(opcua::client::run(
            server,
            pki_dir.clone(),
            events_tx.clone(),
            metrics.clone(),
            shutdown.clone(),
        )));
    }
    for device in &config.melsec {
        tasks.push(Box::pin(melsec::client::run(
            device.clone(),
            events_tx.clone(),
            metrics.clone(),
            shutdown.clone(),
        )));
    }
    for bus in &config.dlt645 {
        tasks.push(Box::pin(meterbus::run(
            "dlt645",
            bus.id.clone(),
            bus.bus.clone(),
            dlt645::bus::meters(bus),
            events_tx.clone(),
            metrics.clone(),
            shutdown.clone(),
        )));
    }
    for device in &config.s7 {
        tasks.push(Box::pin(crate::source::s7::run(
            device.clone(),
            events_tx.clone(),
            metrics.clone(),
            shutdown.clone(),
        )));
    }
    for bus in &config.cjt188 {
        tasks.push(Box::pin(meterbus::run(
            "cjt188",
            bus.id.clone(),
            bus.bus.clone(),
            cjt188::bus::meters(bus),
            events_tx.clone(),
            metrics.clone(),
            shutdown.clone(),
        )));
    }
    PolledSources {
        tasks,
        modbus_connections: connection_count,
    }
}

/// Prepares the `[[mqtt]]` brokers' subscriptions and mappings (nothing is connected yet).
pub fn prepare_brokers(
    config: &Config,
    metrics: &Metrics,
) -> Result<Vec<mqtt::Broker>, mqtt::MqttError> {
    let (machines, meters) = config.register_ids();
    config
        .mqtt
        .iter()
        .map(|b| {
            mqtt::prepare(
                b,
                &config.site,
                machines.clone(),
                meters.clone(),
                metrics.clone(),
            )
        })
        .collect()
}

/// Starts every task of the agent. They run until `shutdown` fires.
pub fn start(config: &Config, shutdown: Shutdown) -> Result<Running, StartError> {
    start_resuming(config, shutdown, engine::Resume::AfterStop)
}

/// Starts the agent, continuing the engine's saved windows as `resume` says: after a stop the
/// time in between is offline; after a config reload the machines keep their states.
pub fn start_resuming(
    config: &Config,
    shutdown: Shutdown,
    resume: engine::Resume,
) -> Result<Running, StartError> {
    let data_dir = config.agent.data_dir.clone();
    sink::create_data_dir(&data_dir)?;
    // The board's port is taken first: when it is busy, nothing else has been started.
    let mut web_listener = if config.web.enabled {
        let listener = std::net::TcpListener::bind(config.web.listen)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(tokio::net::TcpListener::from_std)
            .map_err(|source| StartError::Web {
                addr: config.web.listen,
                source,
            })?;
        Some(listener)
    } else {
        None
    };
    // The loggers' ports too, for the same reason.
    let hj212_listeners = config
        .hj212
        .iter()
        .map(|l| hj212::listen::bind(l).map(|bound| (l.clone(), bound)))
        .collect::<Result<Vec<_>, _>>()?;
    let dial_in_listeners = config
        .dial_in
        .iter()
        .map(|l| dial_in::listen::bind(l).map(|bound| (l.clone(), bound)))
        .collect::<Result<Vec<_>, _>>()?;
    let unknown_dtus = dial_in::UnknownDtus::default();
    let metrics = Metrics::new();
    let brokers = prepare_brokers(config, &metrics)?;

    let mut outputs = sink::stores(&config.influx, &config.file, &data_dir)?;
    let mut uplink_connection = None;
    if let Some(cfg) = &config.uplink {
        let (writer, connection) = UplinkWriter::new(cfg, &config.site, &metrics)?;
        outputs.push((Output::Uplink(writer), cfg.writer_options(&data_dir)));
        uplink_connection = Some(connection);
    }
    let sink::Stage {
        records: records_tx,
        stats: stats_rx,
        spool_path,
        outputs,
        status: output_status,
        mut tasks,
    } = sink::start(&config.spool, &data_dir, outputs, &metrics, &shutdown)?;
    if let Some(connection) = uplink_connection {
        tasks.spawn(connection.run(shutdown.clone()));
    }

    // The engine's start is taken before any source runs, so every sample is stamped after it.
    let now = Timestamp::now();
    let (events_tx, events_rx) = mpsc::channel(config.event_queue());
    let polled = polled_sources(
        config,
        brokers,
        data_dir.join("opcua/pki"),
        &events_tx,
        &metrics,
        &shutdown,
    );
    let connection_count = polled.modbus_connections;
    for task in polled.tasks {
        tasks.spawn(task);
    }
    let site_tz = jiff::tz::TimeZone::get(&config.site.timezone).unwrap_or(jiff::tz::TimeZone::UTC);
    for (listener, bound) in hj212_listeners {
        tasks.spawn(hj212::listen::run(
            listener,
            bound,
            site_tz.clone(),
            events_tx.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
    }
    for (listener, bound) in dial_in_listeners {
        tasks.spawn(dial_in::listen::run(
            listener,
            bound,
            unknown_dtus.clone(),
            events_tx.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
    }
    drop(events_tx);
    if !config.modbus.is_empty()
        || !config.dial_in.is_empty()
        || !config.melsec.is_empty()
        || !config.s7.is_empty()
        || !config.dlt645.is_empty()
        || !config.cjt188.is_empty()
    {
        tasks.spawn(report_device_health(
            config,
            records_tx.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
    }

    // Declared value added: the config's figures, then the file (which the board's API writes).
    let declared_file = config
        .value_added
        .declared_file
        .clone()
        .unwrap_or_else(|| data_dir.join("value-added.toml"));
    let mut engine = Engine::new(config, now);
    let state_path = data_dir.join("engine-state.json");
    let mut restored = Vec::new();
    match engine::persist::load(&state_path) {
        Ok(Some(saved)) => {
            info!(file = %state_path.display(), "continuing the saved windows; the time the agent was down counts as offline");
            engine.restore(saved, now, resume, &mut restored);
        }
        Ok(None) => engine.opening_lines(&mut restored),
        Err(e) => {
            warn!(error = %e, "starting without the saved windows");
            engine.opening_lines(&mut restored);
        }
    }
    if declared_file.exists() {
        match engine::green::Declarations::new(&config.value_added.declared)
            .with_file(&declared_file)
        {
            Ok(d) => engine.set_declarations(d),
            Err(e) => {
                warn!(error = %e, "declared value-added file not read; retrying at every flush")
            }
        }
    }

    let (snap_tx, snap_rx) = watch::channel(engine.snapshot(now, 0));
    if let Some(url) = &config.web.alert_webhook {
        tasks.spawn(web::webhook::run(
            url.clone(),
            Arc::from(config.site.enterprise.as_str()),
            snap_rx.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
    }
    let (signal_query, signal_requests) = engine::SignalQuery::channel();
    let options = engine::RunOptions {
        state_path,
        window_flush: config.agent.window_flush,
        declared: config.value_added.declared.clone(),
        declared_file: Some(declared_file.clone()),
        // The opening or restored lines go first, through the engine's own handover.
        opening: restored,
    };

    let web_addr = if config.web.enabled {
        let board = web::Board {
            site_name: Arc::from(config.site.name.as_str()),
            enterprise: Arc::from(config.site.enterprise.as_str()),
            snapshots: snap_rx.clone(),
            signals: signal_query.clone(),
            spool: stats_rx.clone(),
            outputs: output_status.clone(),
            machine_sources: Arc::new(config.machine_sources()),
            metrics: metrics.clone(),
            declared_file: Some(declared_file),
            access: Arc::new(web_access(&config.web)),
            unknown_dtus: unknown_dtus.clone(),
        };
        let listener = web_listener.take().ok_or(StartError::Web {
            addr: config.web.listen,
            source: std::io::Error::other("listener already taken"),
        })?;
        let addr = listener.local_addr().ok();
        tasks.spawn(web::serve(board, listener, shutdown.clone()));
        addr
    } else {
        None
    };

    tasks.spawn(engine::run(
        engine,
        events_rx,
        records_tx,
        engine::Views {
            snapshots: snap_tx,
            signal_requests,
        },
        metrics.clone(),
        options,
        shutdown,
    ));
    info!(
        machines = config.machines.len(),
        devices = config.modbus.len(),
        connections = connection_count,
        brokers = config.mqtt.len(),
        outputs,
        spool = %spool_path.display(),
        web = ?web_addr,
        "agent started"
    );
    Ok(Running {
        web_addr,
        metrics,
        snapshots: snap_rx,
        signals: signal_query,
        spool_stats: stats_rx,
        tasks,
    })
}
