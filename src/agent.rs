//! Wires the pipeline together: device actors → engine → spool → one writer per output.

use std::path::PathBuf;

use jiff::Timestamp;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use tracing::{info, warn};

use crate::config::{Config, default_output_name};
use crate::engine::{self, Engine, Snapshot};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::sink::spool::{Spool, SpoolError, SpoolStats};
use crate::sink::{self, Output, file::FileWriter, influx::InfluxWriter};
use crate::source::modbus;

/// Events waiting between the sources and the engine. At the bound a device task drops its poll
/// result and counts it (see `source::modbus`), so a stalled engine never stalls polling.
pub const EVENT_QUEUE: usize = 1024;

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error(transparent)]
    Influx(#[from] sink::influx::InfluxError),
}

/// A running agent.
#[derive(Debug)]
pub struct Running {
    /// The engine's latest view, for the terminal summary and the board.
    pub snapshots: watch::Receiver<Snapshot>,
    pub spool_stats: watch::Receiver<SpoolStats>,
    /// Counters and gauges of every part, for `/metrics` and the board.
    pub metrics: Metrics,
    tasks: JoinSet<()>,
    spool_thread: std::thread::JoinHandle<()>,
}

impl Running {
    /// Waits until every task has stopped after shutdown was triggered.
    pub async fn finished(mut self) {
        while self.tasks.join_next().await.is_some() {}
        let thread = self.spool_thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}

/// How often each Modbus device's health goes to the store as an `agent` line.
const DEVICE_HEALTH_EVERY: Duration = Duration::from_secs(60);

/// Writes one `agent` line per Modbus device every minute (see `source::modbus::health`),
/// straight to the spool: the lines come from the metrics alone, so the engine need not know.
fn report_device_health(
    config: &Config,
    records: std::sync::mpsc::SyncSender<Vec<String>>,
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
            if !lines.is_empty() && records.try_send(lines).is_err() {
                warn!("spool queue full: device health lines dropped");
            }
        }
    }
}

/// Starts every task of the agent. They run until `shutdown` fires.
pub fn start(config: &Config, shutdown: Shutdown) -> Result<Running, StartError> {
    let data_dir = config.agent.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|source| StartError::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    let spool_path = config
        .spool
        .path
        .clone()
        .unwrap_or_else(|| data_dir.join("spool.db"));

    let mut outputs: Vec<(Output, usize)> = Vec::new();
    for (n, cfg) in config.influx.iter().enumerate() {
        let name = cfg
            .name
            .clone()
            .unwrap_or_else(|| default_output_name("influx", n));
        outputs.push((
            Output::Influx(InfluxWriter::new(&name, cfg)?),
            cfg.batch_lines,
        ));
    }
    for (n, cfg) in config.file.iter().enumerate() {
        let name = cfg
            .name
            .clone()
            .unwrap_or_else(|| default_output_name("file", n));
        outputs.push((Output::File(FileWriter::new(&name, &cfg.path)), 5000));
    }
    let names: Vec<String> = outputs.iter().map(|(o, _)| o.name().to_string()).collect();
    let spool = Spool::open(
        &spool_path,
        config.spool.max_bytes,
        config.spool.sync,
        &names,
    )?;
    let left = spool.stats();
    if left.lines > 0 {
        info!(
            lines = left.lines,
            bytes = left.bytes,
            "records left in the spool will be sent first"
        );
    }

    let metrics = Metrics::new();
    let (stats_tx, stats_rx) = watch::channel(left);
    let (records_tx, records_rx) = std::sync::mpsc::sync_channel(sink::SPOOL_QUEUE);
    let spool_thread = sink::spawn_spool_task(spool, records_rx, stats_tx, metrics.clone());

    let mut tasks = JoinSet::new();
    for (output, batch_lines) in outputs {
        tasks.spawn(sink::run_writer(
            output,
            spool_path.clone(),
            batch_lines,
            data_dir.clone(),
            stats_rx.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
    }

    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    let mut connection_count = 0;
    for connection in modbus::connections_lazily(config) {
        connection_count += 1;
        tasks.spawn(modbus::run_connection(
            connection,
            events_tx.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
    }
    drop(events_tx);
    if !config.modbus.is_empty() {
        tasks.spawn(report_device_health(
            config,
            records_tx.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
    }

    let engine = Engine::new(config, Timestamp::now());
    let (snap_tx, snap_rx) = watch::channel(engine.snapshot(Timestamp::now(), 0));
    tasks.spawn(engine::run(
        engine,
        events_rx,
        records_tx,
        snap_tx,
        metrics.clone(),
        shutdown,
    ));
    info!(
        machines = config.machines.len(),
        devices = config.modbus.len(),
        connections = connection_count,
        outputs = names.len(),
        spool = %spool_path.display(),
        "agent started"
    );
    Ok(Running {
        metrics,
        snapshots: snap_rx,
        spool_stats: stats_rx,
        tasks,
        spool_thread,
    })
}
