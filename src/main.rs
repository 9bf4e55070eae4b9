//! The `shopfloor` command line.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use jiff::Timestamp;
use shopfloor::config::{self, Config, State};
use shopfloor::engine::Snapshot;
use shopfloor::sim::{self, SimOptions};
use shopfloor::source::modbus::plan;
use shopfloor::{agent, shutdown};

/// The starter config of `shopfloor init`: the complete commented example.
const STARTER_CONFIG: &str = include_str!("../config/shopfloor.toml");

/// The demo's configuration, compiled in so `shopfloor demo` needs no file.
const DEMO_CONFIG: &str = include_str!("../config/demo.toml");

#[derive(Parser)]
#[command(
    name = "shopfloor",
    version,
    about = "Edge agent for metal-products workshops"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a config file and report every problem with its line and column.
    Check {
        #[arg(short, long)]
        config: PathBuf,
        /// Also print the Modbus requests planned for each device.
        #[arg(long)]
        plan: bool,
    },
    /// Write a commented starter config to begin commissioning from.
    Init {
        /// Where to write it.
        #[arg(short, long, default_value = "shopfloor.toml")]
        output: PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Poll the configured devices and write to the configured outputs. SIGHUP reloads the
    /// config.
    Run {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Serve a simulated workshop over Modbus TCP.
    Sim {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:5020")]
        bind: SocketAddr,
        /// Same seed, same workshop.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Number of CNC machines (unit ids 1…N; the meter is unit 100).
        #[arg(long, default_value_t = 4)]
        machines: usize,
        /// Stretch every state's duration by this factor.
        #[arg(long, default_value_t = 1.0)]
        pace: f64,
        /// Also publish MQTT machines to this broker (`host:port`): JSON IoT boxes mq01… and a
        /// Sparkplug B edge node with devices sp01… (see config/mqtt.toml).
        #[arg(long, value_name = "HOST:PORT")]
        mqtt: Option<String>,
    },
    /// Run the simulator and the agent together, writing to a local file; no other service needed.
    Demo {
        /// Where the spool and the records file go.
        #[arg(long, default_value = "data/demo")]
        data_dir: PathBuf,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let quiet = matches!(cli.command, Command::Demo { .. } | Command::Check { .. });
    init_logging(if quiet { "warn" } else { "info" });
    shopfloor::install_crypto_provider();
    let result = match cli.command {
        Command::Check { config, plan } => return check(&config, plan),
        Command::Init { output, force } => init(&output, force),
        Command::Run { config } => runtime().and_then(|rt| rt.block_on(run(config))),
        Command::Sim {
            bind,
            seed,
            machines,
            pace,
            mqtt,
        } => runtime().and_then(|rt| {
            rt.block_on(serve_sim(
                SimOptions {
                    bind,
                    seed,
                    machines,
                    pace,
                },
                mqtt,
            ))
        }),
        Command::Demo { data_dir, seed } => {
            runtime().and_then(|rt| rt.block_on(demo(data_dir, seed)))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init(output: &std::path::Path, force: bool) -> Result<()> {
    if output.exists() && !force {
        anyhow::bail!(
            "{} exists; choose another file with -o or replace it with --force",
            output.display()
        );
    }
    std::fs::write(output, STARTER_CONFIG)
        .with_context(|| format!("cannot write {}", output.display()))?;
    println!(
        "wrote {}: edit [site], the [[machine]] register and the [[modbus]] devices, then run\n  shopfloor check -c {} --plan",
        output.display(),
        output.display()
    );
    Ok(())
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SHOPFLOOR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn check(path: &std::path::Path, show_plan: bool) -> ExitCode {
    match config::load(path) {
        Ok(cfg) => {
            let sourced = cfg
                .modbus
                .iter()
                .flat_map(|d| &d.fields)
                .filter_map(|f| f.machine.as_deref())
                .collect::<std::collections::HashSet<_>>()
                .len();
            println!(
                "{}: ok: {} machines in the register ({} with a data source), {} meters, {} Modbus devices, {} MQTT brokers, {} outputs",
                path.display(),
                cfg.machines.len(),
                sourced,
                cfg.meters.len(),
                cfg.modbus.len(),
                cfg.mqtt.len(),
                cfg.influx.len() + cfg.file.len()
            );
            for broker in &cfg.mqtt {
                println!("mqtt broker {} ({}):", broker.id, broker.address);
                for topic in &broker.topics {
                    println!("  subscribe {} (QoS 1, {:?})", topic.pattern, topic.format);
                }
            }
            if show_plan {
                for device in &cfg.modbus {
                    println!(
                        "device {} ({} unit {}):",
                        device.id, device.address, device.unit
                    );
                    for request in plan::plan(device) {
                        println!("  {request}");
                    }
                }
            }
            ExitCode::SUCCESS
        }
        Err(diagnostics) => {
            eprintln!("{diagnostics}");
            let n = diagnostics.problems.len();
            eprintln!("{n} problem{} found", if n == 1 { "" } else { "s" });
            ExitCode::FAILURE
        }
    }
}

/// A shutdown that fires on Ctrl-C or SIGTERM.
fn shutdown_on_signal() -> shutdown::Shutdown {
    let (trigger, shutdown) = shutdown::channel();
    tokio::spawn(async move {
        wait_for_signal().await;
        eprintln!("stopping…");
        trigger.fire();
    });
    shutdown
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Runs the agent; SIGHUP reloads the config. A config that does not pass the check is
/// reported and the running one kept. A good one replaces it: the agent stops (the engine
/// writes and saves its windows, the spool keeps every record) and starts again with the new
/// config, continuing the windows and the machines' states.
async fn run(path: PathBuf) -> Result<()> {
    let mut cfg = config::load(&path).map_err(|d| anyhow::anyhow!("{d}"))?;
    let mut signals = Signals::new()?;
    let mut resume = shopfloor::engine::Resume::AfterStop;
    loop {
        let (trigger, shutdown) = shutdown::channel();
        let running = agent::start_resuming(&cfg, shutdown, resume)?;
        let next = loop {
            match signals.next().await {
                Signal::Stop => break None,
                Signal::Reload => match config::load(&path) {
                    Ok(new) => break Some(new),
                    Err(d) => {
                        tracing::error!("config not reloaded, the running one stays in force:\n{d}")
                    }
                },
            }
        };
        trigger.fire();
        running.finished().await;
        match next {
            Some(new) => {
                tracing::info!(config = %path.display(), "config reloaded");
                cfg = new;
                resume = shopfloor::engine::Resume::Reload;
            }
            None => return Ok(()),
        }
    }
}

enum Signal {
    Stop,
    Reload,
}

/// Ctrl-C and SIGTERM stop, SIGHUP reloads.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                term: signal(SignalKind::terminate()).context("cannot watch SIGTERM")?,
                hup: signal(SignalKind::hangup()).context("cannot watch SIGHUP")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    async fn next(&mut self) -> Signal {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => Signal::Stop,
                _ = self.term.recv() => Signal::Stop,
                _ = self.hup.recv() => Signal::Reload,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Signal::Stop
        }
    }
}

async fn serve_sim(options: SimOptions, mqtt: Option<String>) -> Result<()> {
    let mut shutdown = shutdown_on_signal();
    let sim = sim::start(&options, shutdown.clone(), None)
        .await
        .with_context(|| format!("cannot listen on {}", options.bind))?;
    println!(
        "simulating {} CNC machines (unit ids 1–{}) and an electricity meter (unit {}) on {}",
        options.machines,
        options.machines,
        sim::METER_UNIT,
        sim.addr
    );
    if let Some(broker) = mqtt {
        let mqtt = sim::mqtt::MqttSimOptions {
            broker: broker.clone(),
            seed: options.seed,
            pace: options.pace,
            ..Default::default()
        };
        sim::mqtt::start(&mqtt, shutdown.clone())?;
        println!(
            "publishing to MQTT broker {broker}: JSON boxes {}–{} on {}/<id>/data, Sparkplug B node {}/{} with devices {}–{}",
            sim::mqtt::json_machine_id(0),
            sim::mqtt::json_machine_id(mqtt.json_machines - 1),
            sim::mqtt::JSON_PREFIX,
            sim::mqtt::SPARKPLUG_GROUP,
            sim::mqtt::SPARKPLUG_NODE,
            sim::mqtt::sparkplug_device_id(0),
            sim::mqtt::sparkplug_device_id(mqtt.sparkplug_devices - 1),
        );
    }
    shutdown.wait().await;
    Ok(())
}

async fn demo(data_dir: PathBuf, seed: u64) -> Result<()> {
    let mut cfg: Config = config::load_str(DEMO_CONFIG, "config/demo.toml")
        .map_err(|d| anyhow::anyhow!("the built-in demo config is broken:\n{d}"))?;
    let mut shutdown = shutdown_on_signal();
    let options = SimOptions {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        seed,
        ..SimOptions::default()
    };
    let sim = sim::start(&options, shutdown.clone(), None).await?;
    for device in &mut cfg.modbus {
        device.address = sim.addr.to_string();
    }
    cfg.agent.data_dir = data_dir.clone();
    for file in &mut cfg.file {
        file.path = data_dir.join("records.lp");
    }
    let records = data_dir.join("records.lp");
    let running = match agent::start(&cfg, shutdown.clone()) {
        // Another program has the board's usual port: take any free one.
        Err(agent::StartError::Web { .. }) => {
            cfg.web.listen.set_port(0);
            agent::start(&cfg, shutdown.clone())?
        }
        other => other?,
    };
    let mut snapshots = running.snapshots.clone();
    let stats = running.spool_stats.clone();
    let tty = std::io::stdout().is_terminal();
    let board_url = running
        .web_addr
        .map_or_else(|| "off".to_string(), |a| format!("http://{a}/"));
    println!(
        "Shopfloor demo: simulator on {}, board on {board_url}, records in {} (Ctrl-C stops)",
        sim.addr,
        records.display()
    );
    let mut last_states: Vec<State> = Vec::new();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = snapshots.changed() => continue,
            _ = shutdown.wait() => break,
        }
        let snapshot = snapshots.borrow().clone();
        let spool = *stats.borrow();
        let mut out = std::io::stdout().lock();
        if tty {
            let _ = write!(
                out,
                "\x1b[2J\x1b[H{}",
                board(&snapshot, spool.lines, &records, &board_url)
            );
        } else {
            // Not a terminal: one line per change, so the output reads well in a log.
            for m in &snapshot.machines {
                let before = last_states
                    .get(
                        snapshot
                            .machines
                            .iter()
                            .position(|x| x.id == m.id)
                            .unwrap_or(0),
                    )
                    .copied();
                if before != Some(m.state) {
                    let _ = writeln!(out, "{} {:<8} {}", m.since, m.id, m.state);
                }
            }
        }
        let _ = out.flush();
        last_states = snapshot.machines.iter().map(|m| m.state).collect();
    }
    running.finished().await;
    println!("demo stopped; records are in {}", records.display());
    Ok(())
}

/// The terminal summary of `shopfloor demo`.
fn board(snapshot: &Snapshot, waiting: u64, records: &std::path::Path, url: &str) -> String {
    let now = snapshot.at.unwrap_or_else(Timestamp::now);
    let networked = snapshot
        .machines
        .iter()
        .filter(|m| m.state != State::Offline)
        .count();
    let mut text = format!(
        "Shopfloor demo   {} machines in the register, {} delivering data   spool: {} lines waiting → {}   board: {}\n",
        snapshot.machines.len(),
        networked,
        waiting,
        records.display(),
        url
    );
    let pct = |r: Option<f64>| r.map_or_else(|| "–".to_string(), |r| format!("{:.1} %", r * 100.0));
    if let Some(f) = &snapshot.fleet_today {
        text.push_str(&format!(
            "today: networking rate {} ({}/{}, target ≥ 55 %)   CNC rate {} ({}/{}, target ≥ 65 %)   CNC utilisation {}\n",
            pct(f.networking_rate()),
            f.machines_networked,
            f.machines_total,
            pct(f.cnc_rate()),
            f.machines_cnc,
            f.machines_total,
            pct(f.cnc_utilisation()),
        ));
    }
    if let Some(g) = &snapshot.green_today {
        let intensity = g
            .tce_per_10k_cny()
            .map_or_else(|| "–".to_string(), |v| format!("{v:.3}"));
        text.push_str(&format!(
            "       electricity {:.2} kWh = {:.5} tce   value added {:.4} (10k CNY)   {} tce per 10k CNY (2022 target 0.43)\n",
            g.electricity_kwh, g.energy_tce, g.value_added_10k_cny, intensity
        ));
    }
    text.push('\n');
    text.push_str("machine   kind               cnc  state      for      rpm    parts  alarm  avail today  parts today\n");
    for m in &snapshot.machines {
        let get = |name: &str| {
            m.signals
                .iter()
                .find(|(k, _)| &**k == name)
                .map_or_else(|| "-".to_string(), |(_, v)| v.to_string())
        };
        let secs = now.duration_since(m.since).as_secs().max(0);
        text.push_str(&format!(
            "{:<9} {:<18} {:<4} {}{:<10}\x1b[0m {:>2}:{:02}:{:02} {:>6} {:>8} {:>6}  {:>11}  {:>11}\n",
            m.id,
            m.kind,
            if m.cnc { "yes" } else { "no" },
            colour(m.state),
            m.state.as_str(),
            secs / 3600,
            secs / 60 % 60,
            secs % 60,
            get("spindle_rpm"),
            get("parts"),
            get("alarm_code"),
            pct(m.availability_today),
            m.parts_today,
        ));
    }
    text.push_str("\ndevices:\n");
    for d in &snapshot.devices {
        let status = if d.up {
            "up".to_string()
        } else {
            format!("down ({})", d.reason.as_deref().unwrap_or("unknown"))
        };
        text.push_str(&format!("  {:<12} {status}\n", d.id));
    }
    text
}

fn colour(state: State) -> &'static str {
    match state {
        State::Running => "\x1b[32m",
        State::Setup => "\x1b[36m",
        State::Idle => "\x1b[33m",
        State::Alarm => "\x1b[31m",
        State::Stopped => "\x1b[35m",
        State::Offline => "\x1b[90m",
    }
}
