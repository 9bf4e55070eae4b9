//! Starting the store-and-forward stage: the spool, the spool task and one writer per output,
//! the same for the agent and for `county ingest`. Each of them builds its outputs (the agent
//! adds the uplink to its stores), hands them to [`start`], feeds the queue of the [`Stage`]
//! it gets back and adds its own tasks to the stage's; [`Tasks::stopped`] waits for them all
//! after shutdown.

use std::path::{Path, PathBuf};

use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::info;

use super::spool::{Spool, SpoolError, SpoolStats};
use super::status::OutputStatus;
use super::{Chunk, Output, WriterOptions, file, influx, run_writer, spawn_spool_task};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

/// Why the stage could not start.
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
    Influx(#[from] influx::InfluxError),
}

/// A running stage.
#[derive(Debug)]
pub struct Stage<C> {
    /// The spool queue: what is sent here is appended to the spool (see [`crate::queue`] for
    /// what each sender does when it is full).
    pub records: flume::Sender<C>,
    /// The spool's figures, updated by the spool task after each append and housekeeping.
    pub stats: watch::Receiver<SpoolStats>,
    pub spool_path: PathBuf,
    /// How many writers run.
    pub outputs: usize,
    /// Each output's delivery state, in the order of the outputs.
    pub status: Vec<watch::Receiver<OutputStatus>>,
    /// The writers and the spool task; the caller adds its own.
    pub tasks: Tasks,
}

/// The tasks of a pipeline (the stage's writers and spool task, and what the caller adds
/// beside them: sources, engine, web board, subscriber), to be waited for at shutdown.
#[derive(Debug)]
pub struct Tasks {
    set: JoinSet<()>,
    spool_thread: std::thread::JoinHandle<()>,
}

impl Tasks {
    pub fn spawn<F>(&mut self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.set.spawn(task);
    }

    /// Waits for every task, then for the spool task, which finishes what it was handed once
    /// the senders are gone (the agent's and `county ingest`'s shutdown).
    pub async fn stopped(self) {
        let Tasks {
            mut set,
            spool_thread,
        } = self;
        while set.join_next().await.is_some() {}
        let _ = tokio::task::spawn_blocking(move || spool_thread.join()).await;
    }
}

/// Creates the data directory (the spool's and the dead-letter files' default place).
pub fn create_data_dir(dir: &Path) -> Result<(), StartError> {
    std::fs::create_dir_all(dir).map_err(|source| StartError::DataDir {
        path: dir.to_path_buf(),
        source,
    })
}

/// Opens the spool (at `[spool] path`, by default `spool.db` in `data_dir`) with a cursor per
/// output, starts the spool task behind a queue of `C::QUEUE`'s capacity and one writer per
/// output. They run until `shutdown` fires and the queue's senders are gone.
pub fn start<C: Chunk>(
    spool: &crate::sink::config::Spool,
    data_dir: &Path,
    outputs: Vec<(Output, WriterOptions)>,
    metrics: &Metrics,
    shutdown: &Shutdown,
) -> Result<Stage<C>, StartError> {
    let spool_path = spool
        .path
        .clone()
        .unwrap_or_else(|| data_dir.join("spool.db"));
    let names: Vec<String> = outputs.iter().map(|(o, _)| o.name().to_string()).collect();
    let sync_interval = spool.sync_interval;
    let spool = Spool::open(&spool_path, spool.limits(), &names)?;
    let left = spool.stats();
    if left.lines > 0 {
        info!(
            lines = left.lines,
            bytes = left.bytes,
            "records left in the spool will be sent first, oldest first"
        );
    }
    let (stats_tx, stats_rx) = watch::channel(left);
    let (records_tx, records_rx) = C::QUEUE.flume();
    let spool_thread = spawn_spool_task(
        spool,
        spool_path.clone(),
        records_rx,
        stats_tx,
        metrics.clone(),
        sync_interval,
    );
    let mut set = JoinSet::new();
    let mut status = Vec::new();
    for (output, options) in outputs {
        let (status_tx, status_rx) = watch::channel(OutputStatus {
            name: output.name().to_string(),
            kind: output.kind(),
            ..OutputStatus::default()
        });
        status.push(status_rx);
        set.spawn(run_writer(
            output,
            spool_path.clone(),
            options,
            stats_rx.clone(),
            status_tx,
            metrics.clone(),
            shutdown.clone(),
        ));
    }
    Ok(Stage {
        records: records_tx,
        stats: stats_rx,
        spool_path,
        outputs: names.len(),
        status,
        tasks: Tasks { set, spool_thread },
    })
}

/// The stores of an `[[influx]]` and `[[file]]` list, named and with their writer options (the
/// agent's outputs, and `county ingest`'s).
pub fn stores(
    influx: &[crate::sink::config::InfluxOutput],
    files: &[crate::sink::config::FileOutput],
    data_dir: &Path,
) -> Result<Vec<(Output, WriterOptions)>, StartError> {
    use crate::sink::config::default_output_name;
    let mut outputs = Vec::new();
    for (n, cfg) in influx.iter().enumerate() {
        let name = cfg
            .name
            .clone()
            .unwrap_or_else(|| default_output_name("influx", n));
        let options = cfg.writer_options(&name, data_dir);
        outputs.push((
            Output::Influx(influx::InfluxWriter::new(&name, cfg)?),
            options,
        ));
    }
    for (n, cfg) in files.iter().enumerate() {
        let name = cfg
            .name
            .clone()
            .unwrap_or_else(|| default_output_name("file", n));
        let options = WriterOptions::new(&name, data_dir);
        outputs.push((
            Output::File(file::FileWriter::new(&name, &cfg.path)),
            options,
        ));
    }
    Ok(outputs)
}
