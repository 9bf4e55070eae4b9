//! The `shopfloor` command line.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use jiff::Timestamp;
use shopfloor::agent::config::Config;
use shopfloor::config::{self};
use shopfloor::engine::{MachineSignals, Snapshot};
use shopfloor::model::State;
use shopfloor::sim::{self, Fault, Framing, SimOptions};
use shopfloor::source::modbus::config::{ModbusSerial, Parity, RegisterKind};
use shopfloor::source::modbus::{self, LinkSpec, plan, probe};
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
        /// The agent's config file (TOML) to check.
        #[arg(short, long)]
        config: PathBuf,
        /// Also print the requests planned for each device (Modbus, OPC UA, S7, MELSEC).
        #[arg(long)]
        plan: bool,
    },
    /// Read every source of a config once (or for --duration) and print each field's value or
    /// error, the machines' states and the lines that would be written; nothing is written.
    /// Exits non-zero when a source fails or a field errors. Needs no data directory, no web
    /// port, no output and no output secret.
    Test {
        /// The config file to test.
        #[arg(short, long)]
        config: PathBuf,
        /// Keep reading for this long (e.g. 30s: MQTT messages, changing states) instead of
        /// stopping once every polled source has answered (at most 30 s).
        #[arg(long, value_parser = config::parse_duration)]
        duration: Option<Duration>,
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
        /// The agent's config file (TOML); SIGHUP reads it again.
        #[arg(short, long)]
        config: PathBuf,
        /// Write the agent's process id here (removed on a clean stop), so that
        /// `kill -HUP "$(cat FILE)"` reloads this agent and no other process.
        #[arg(long)]
        pid_file: Option<PathBuf>,
    },
    /// Serve a simulated workshop over Modbus TCP (or RTU over TCP).
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
        /// Serve the same workshop on this many consecutive ports, from --bind's port.
        #[arg(long, default_value_t = 1)]
        listeners: usize,
        /// Holding registers per machine: the 15 of the map, then filler that changes every second.
        #[arg(long, default_value_t = 15)]
        registers: u16,
        /// Speak RTU frames (with CRC) over TCP, like a serial server, instead of Modbus TCP.
        #[arg(long)]
        rtu_over_tcp: bool,
        /// Serve the machines as PLCs instead of Modbus devices: `s7` (machine N is DB N, word
        /// W at byte 2W) or `melsec` (MC protocol 3E/4E binary; machine N from D((N-1)×registers)).
        #[arg(long, value_name = "PROTOCOL", value_parser = parse_plc)]
        plc: Option<sim::plc::PlcProtocol>,
        /// Misbehave: UNIT:KIND[:EVERY] with UNIT a unit id or *, KIND no-reply, delay=300ms,
        /// exception=N or drop; EVERY n-th request only. Repeat for more faults.
        #[arg(long = "fault", value_name = "FAULT")]
        faults: Vec<Fault>,
        /// Also publish MQTT machines to this broker (`host:port`): JSON IoT boxes mq01… and a
        /// Sparkplug B edge node with devices sp01… (see config/mqtt.toml).
        #[arg(long, value_name = "HOST:PORT")]
        mqtt: Option<String>,
    },
    /// Read registers from a device and print them decoded in every type and byte order; or,
    /// given dlt645://… or cjt188://…, find a meter's address and read its common values; or,
    /// given opc.tcp://…, read OPC UA nodes or browse the server's objects for their ids.
    Probe(Box<ProbeArgs>),
    /// Commissioning of dial-in DTUs.
    Dtu {
        #[command(subcommand)]
        command: DtuCommand,
    },
    /// The county's view of every enterprise: reports against the programme's targets.
    County {
        #[command(subcommand)]
        command: shopfloor::county::cli::CountyCommand,
    },
    /// Run the simulator and the agent together, writing to a local file; no other service needed.
    Demo {
        /// Where the spool and the records file go.
        #[arg(long, default_value = "data/demo")]
        data_dir: PathBuf,
        /// Same seed, same simulated workshop.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

#[derive(Subcommand)]
enum DtuCommand {
    /// Listen on a port and show every DTU that connects: its first bytes (the registration
    /// packet), the configured DTU they match, every packet after them with the time since the
    /// last such one (the heartbeat and its period), and, with --poll, holding registers read
    /// through it (function code 3 only).
    Listen {
        /// The TCP port to listen on: the one the DTUs are configured to dial (all addresses).
        #[arg(long)]
        port: u16,
        /// A config whose [[dial_in.dtu]] registrations and heartbeats name what arrives.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// UNIT:ADDRESS:COUNT of holding registers to read once a DTU has connected, and every
        /// 10 s after.
        #[arg(long, value_name = "UNIT:ADDRESS:COUNT")]
        poll: Option<String>,
        /// `rtu` (transparent) or `tcp` (the DTU converts Modbus TCP), for --poll.
        #[arg(long, default_value = "rtu")]
        framing: String,
    },
}

/// Where and what `shopfloor probe` reads.
#[derive(clap::Args)]
struct ProbeArgs {
    /// A device in another protocol instead of a Modbus one, as a URL:
    /// s7://host[:port]?rack=0&slot=1 (or ?local_tsap=01.00&remote_tsap=20.00) or
    /// melsec://HOST:PORT[?family=fx5&frame=4e] (X/Y numbered as on a Q unless family=fx5),
    /// followed by the first address, --count then in words (S7 timers and counters:
    /// elements); or a meter bus, dlt645://HOST:PORT or cjt188://HOST:PORT for a serial server
    /// in transparent mode, dlt645:///dev/ttyUSB0 for a serial port (2400 8E1 unless --baud,
    /// --parity … say otherwise), whose one meter is found with the broadcast address read
    /// (--meter-address reads a given DL/T 645 meter instead); or an OPC UA server,
    /// opc.tcp://HOST:PORT[/path], followed by node ids to read (ns=2;s=Speed,
    /// nsu=URI;i=5), or by none to browse (--from, --depth, --limit; --section MACHINE
    /// prints a ready [[opcua]] section). Anonymous and
    /// no security unless the URL says so: ?security_policy=basic256sha256&username=NAME
    /// (security_mode=sign_and_encrypt unless &security_mode=sign; the password from the
    /// environment variable SHOPFLOOR_OPCUA_PASSWORD; the server's certificate must be
    /// trusted in --pki-dir).
    #[arg(value_name = "URL", conflicts_with_all = ["address", "serial", "device", "start"])]
    target: Option<String>,
    /// With a PLC URL: the address to start at, as TIA Portal (DB10.DBW0, MW20, VB100) or GX
    /// Works (D100, ZR0, M0, X10) writes it; with opc.tcp://, the first node id.
    first: Option<String>,
    /// With opc.tcp://: more node ids.
    #[arg(value_name = "NODE", requires = "first")]
    more_nodes: Vec<String>,
    /// With opc.tcp://: the certificate store (the agent's is <data_dir>/opcua/pki), to see
    /// whether the server is trusted and keep a rejected certificate; default: a temporary one.
    #[arg(long, requires = "target")]
    pki_dir: Option<PathBuf>,
    /// With opc.tcp:// and no node ids: the node to browse from (any node id form; default
    /// the Objects folder, i=85).
    #[arg(long, alias = "node", value_name = "NODE", requires = "target")]
    from: Option<String>,
    /// With opc.tcp://: how many levels below the start node to browse (default 2).
    #[arg(long, requires = "target")]
    depth: Option<usize>,
    /// With opc.tcp://: nodes listed at most when browsing (default 200).
    #[arg(long, requires = "target")]
    limit: Option<usize>,
    /// With opc.tcp://: end with a ready [[opcua]] section for the nodes read or the variables
    /// listed, their signals belonging to this [[machine]].
    #[arg(long, value_name = "MACHINE", requires = "target")]
    section: Option<String>,
    /// With --section: write the nodes to this CSV file (a nodes_file, columns node, signal,
    /// type, index) and name it in the section's group, instead of [[opcua.group.node]] tables.
    #[arg(long, value_name = "FILE", requires = "section")]
    csv: Option<PathBuf>,
    /// With a dlt645:// URL: the meter's twelve-digit address, instead of finding it.
    #[arg(long, requires = "target")]
    meter_address: Option<String>,
    /// Modbus TCP device or serial server, host:port.
    #[arg(long, conflicts_with_all = ["serial", "device"])]
    address: Option<String>,
    /// With --address: RTU frames over TCP (transparent serial servers, DTUs).
    #[arg(long, requires = "address")]
    rtu_over_tcp: bool,
    /// Serial port for Modbus RTU, e.g. /dev/ttyUSB0.
    #[arg(long, conflicts_with = "device")]
    serial: Option<String>,
    /// Default 9600 (Modbus), 2400 (meters).
    #[arg(long)]
    baud: Option<u32>,
    /// none, even or odd; default none (Modbus), even (meters).
    #[arg(long, value_parser = parse_parity)]
    parity: Option<Parity>,
    /// Data bits of the serial line: 7 or 8.
    #[arg(long, default_value_t = 8)]
    data_bits: u8,
    /// Stop bits of the serial line: 1 or 2.
    #[arg(long, default_value_t = 1)]
    stop_bits: u8,
    /// Take the connection, unit, numbering and timeout of this device in --config.
    #[arg(long, requires = "config")]
    device: Option<String>,
    /// The agent's config file (TOML) that --device names a device of.
    #[arg(short, long)]
    config: Option<PathBuf>,
    /// Unit (slave) id; default 1, or the device's.
    #[arg(long)]
    unit: Option<u8>,
    /// coil, discrete, holding or input.
    #[arg(long, default_value = "holding", value_parser = parse_register)]
    register: RegisterKind,
    /// First register, in the numbering of --address-base.
    #[arg(long, required_unless_present = "target")]
    start: Option<u16>,
    /// How many registers (at most 125) or bits (at most 2000).
    #[arg(long, default_value_t = 10)]
    count: u16,
    /// 1 when --start is numbered as in a manual that counts from 1; default 0, or the device's.
    #[arg(long)]
    address_base: Option<u16>,
    /// Time allowed for connecting and for the read, e.g. 2s.
    #[arg(long, value_parser = config::parse_duration)]
    timeout: Option<Duration>,
}

fn parse_parity(text: &str) -> Result<Parity, String> {
    match text {
        "none" | "n" | "N" => Ok(Parity::None),
        "even" | "e" | "E" => Ok(Parity::Even),
        "odd" | "o" | "O" => Ok(Parity::Odd),
        _ => Err(format!("`{text}` is not a parity: write none, even or odd")),
    }
}

fn parse_register(text: &str) -> Result<RegisterKind, String> {
    match text {
        "coil" | "coils" => Ok(RegisterKind::Coil),
        "discrete" => Ok(RegisterKind::Discrete),
        "holding" => Ok(RegisterKind::Holding),
        "input" => Ok(RegisterKind::Input),
        _ => Err(format!(
            "`{text}` is not a register table: write coil, discrete, holding or input"
        )),
    }
}

/// Two glibc malloc settings, for a process that runs for months at a steady rate:
///
/// - Arenas. glibc gives each thread that contends for the allocator an arena of its own (up
///   to eight per core) and keeps what every arena has freed. Poll results are built on one
///   thread and freed on another, so at 100k values a second the arenas held as much again as
///   the live heap (docs/BENCHMARKS.md). The agent has a handful of threads; two arenas serve
///   them.
/// - Large blocks. A block of [`MMAP_THRESHOLD`] or more gets pages of its own, returned to the
///   system when it is freed. glibc's default starts at 128 KiB but rises to the size of any
///   such block freed, up to 32 MiB: after the first batch of a few megabytes the writers' and
///   the poll results' buffers all came from the heap, and every size that had ever been
///   freed stayed resident in its holes. A fixed threshold keeps them out of the heap; the
///   cost is a map and an unmap per block (a few hundred a second at 100k values a second).
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// See [`tune_malloc`]: a Modbus poll result of 1000 values is 88 KiB, a spool row 64 KiB.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 64 * 1024;

fn main() -> ExitCode {
    tune_malloc();
    let cli = Cli::parse();
    let quiet = matches!(
        cli.command,
        Command::Demo { .. } | Command::Check { .. } | Command::Probe(_) | Command::Test { .. }
    );
    init_logging(if matches!(cli.command, Command::Probe(_)) {
        // The OPC UA library warns about a client built in code and a session closed on
        // purpose; what goes wrong reaches the probe's own message.
        "warn,opcua=off"
    } else if quiet {
        "warn"
    } else {
        "info"
    });
    // Commands that print a result and exit end quietly when their reader goes away
    // (`shopfloor check --plan | head`), as other command-line tools do; Rust's runtime ignores
    // SIGPIPE, which would make every later `println!` panic. The long-running commands keep
    // ignoring it: a peer that closes a socket must cost the agent an error, not its life.
    let prints_and_exits = matches!(
        cli.command,
        Command::Check { .. } | Command::Init { .. } | Command::Probe(_) | Command::Test { .. }
    ) || matches!(&cli.command, Command::County { command } if command.prints_and_exits());
    if prints_and_exits {
        restore_default_sigpipe();
    }
    shopfloor::install_crypto_provider();
    let result = match cli.command {
        Command::Check { config, plan } => return check(&config, plan),
        Command::Test { config, duration } => {
            return match runtime().and_then(|rt| rt.block_on(test(&config, duration))) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Init { output, force } => init(&output, force),
        Command::Run { config, pid_file } => {
            runtime().and_then(|rt| rt.block_on(run(config, pid_file)))
        }
        Command::Sim {
            bind,
            seed,
            machines,
            pace,
            listeners,
            registers,
            rtu_over_tcp,
            plc,
            faults,
            mqtt,
        } => runtime().and_then(|rt| {
            rt.block_on(serve_sim(
                SimOptions {
                    bind,
                    seed,
                    machines,
                    pace,
                    listeners,
                    registers,
                    framing: if rtu_over_tcp {
                        Framing::RtuOverTcp
                    } else {
                        Framing::Tcp
                    },
                    faults,
                    plc,
                },
                mqtt,
            ))
        }),
        Command::Probe(args) => runtime().and_then(|rt| rt.block_on(run_probe(*args))),
        Command::Dtu {
            command:
                DtuCommand::Listen {
                    port,
                    config,
                    poll,
                    framing,
                },
        } => runtime().and_then(|rt| rt.block_on(dtu_listen(port, config, poll, &framing))),
        Command::County { command } => runtime()
            .and_then(|rt| rt.block_on(shopfloor::county::cli::run(command, shutdown_on_signal))),
        Command::Demo { data_dir, seed } => {
            runtime().and_then(|rt| rt.block_on(demo(data_dir, seed)))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Each cause once: most errors already name their cause in their own text.
            let chain = shopfloor::sink::influx::error_chain(e.as_ref());
            eprintln!("error: {chain}");
            ExitCode::FAILURE
        }
    }
}

/// `shopfloor test`: the config checked (resolving only the sources' secrets), every source
/// read once or for `duration`, the report printed; failure when anything did not answer.
async fn test(path: &std::path::Path, duration: Option<Duration>) -> Result<ExitCode> {
    let (cfg, warnings) = shopfloor::agent::config::load_resolving(path, config::Secrets::Sources)
        .map_err(|d| anyhow::anyhow!("{d}"))?;
    if !warnings.problems.is_empty() {
        eprintln!("{warnings}");
    }
    println!("{}: {}", path.display(), cfg.summary());
    let report = agent::trial::test(&cfg, duration).await?;
    println!("{report}");
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
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

/// Lets SIGPIPE end the process, as it does a C program's.
fn restore_default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called at start-up before any thread exists; SIG_DFL is always a valid
    // disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Logs go to standard error at `default` unless `SHOPFLOOR_LOG` says otherwise (the
/// `EnvFilter` syntax: `debug`, `shopfloor::source=debug,tokio_modbus=debug`). Colours only on a
/// terminal and only without `NO_COLOR` (<https://no-color.org>): a journal or a log file gets
/// plain text. The `log` crate's records (tokio-modbus, rumqttc, rustls) are bridged in by
/// `init`, under their crate's target, so the same filter selects them.
fn init_logging(default: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("SHOPFLOOR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
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
    match shopfloor::agent::config::load_warned(path) {
        Ok((cfg, warnings)) => {
            // Warnings go to stderr, one a line, before the "ok" line on stdout.
            if !warnings.problems.is_empty() {
                eprintln!("{warnings}");
            }
            match writable_dir(&cfg.agent.data_dir) {
                Ok(()) => {}
                // Another user (the agent's) may well be able to: said, not refused.
                Err(why) if !running_as_root() => {
                    eprintln!(
                        "{}: warning: {why} (as this user; the agent's must be able to)",
                        path.display()
                    );
                }
                Err(why) => {
                    eprintln!("{}: {why}", path.display());
                    eprintln!("1 problem found");
                    return ExitCode::FAILURE;
                }
            }
            // A host name that does not resolve is a warning, not a refusal: DNS may come up
            // after the agent (it keeps trying), but a typo shows here rather than in the log.
            for warning in unresolved_hosts(&cfg) {
                eprintln!("{}: warning: {warning}", path.display());
            }
            println!("{}: ok: {}", path.display(), cfg.summary());
            for bus in &cfg.dlt645 {
                println!("dlt645 bus {} ({}):", bus.id, bus.bus.describe());
                for m in &bus.meters {
                    let ids: Vec<String> = m
                        .plan()
                        .0
                        .iter()
                        .map(|r| format!("{} {}", r.id, r.signal))
                        .collect();
                    println!(
                        "  meter {} → {}: read {}",
                        m.address,
                        m.meter,
                        ids.join(", ")
                    );
                }
            }
            for bus in &cfg.cjt188 {
                println!("cjt188 bus {} ({}):", bus.id, bus.bus.describe());
                for m in &bus.meters {
                    println!(
                        "  meter {} {} → {}: read 901F",
                        m.address, m.meter_type, m.meter
                    );
                }
            }
            if let Some(uplink) = &cfg.uplink {
                println!("uplink ({}):", uplink.connection.address);
                for m in &uplink.measurements {
                    println!(
                        "  publish {} (QoS 1, MQTT 5)",
                        shopfloor::sink::uplink::topic(&uplink.topic_prefix, &cfg.site, m)
                    );
                }
            }
            for broker in &cfg.mqtt {
                println!("mqtt broker {} ({}):", broker.id, broker.connection.address);
                for topic in &broker.topics {
                    println!("  subscribe {} (QoS 1, {:?})", topic.pattern, topic.format);
                }
            }
            if show_plan {
                for connection in modbus::connections(&cfg) {
                    println!("connection {}:", connection.link);
                    for device in &connection.devices {
                        let profile = device
                            .profile
                            .as_deref()
                            .map(|p| format!(", profile {p}"))
                            .unwrap_or_default();
                        println!("  device {} (unit {}{profile}):", device.id, device.unit.0);
                        for group in plan::plan(device) {
                            println!("    every {:?}:", group.poll);
                            for request in group.requests {
                                println!("      {request}");
                            }
                        }
                    }
                }
                for device in &cfg.melsec {
                    print!("{}", shopfloor::source::melsec::plan::shown(device));
                }
                for server in &cfg.opcua {
                    print!("{}", shopfloor::source::opcua::config::shown(server));
                }
                for listener in &cfg.dial_in {
                    print!("{}", shopfloor::source::dial_in::config::shown(listener));
                }
                for device in &cfg.s7 {
                    let (local, remote) = device.tsaps();
                    println!(
                        "s7 device {} ({}, TSAP {local:04X} to {remote:04X}, planned for a {}-byte PDU; replanned to what the PLC grants):",
                        device.id,
                        device.address(),
                        device.pdu_size
                    );
                    for group in shopfloor::source::s7::plan::plan(device, device.pdu_size) {
                        println!("    every {:?}:", group.poll);
                        for job in group.jobs {
                            println!("      {job}");
                        }
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

/// Whether this process runs as root, who can write anywhere a directory can be written: a
/// failure then means no user can.
/// The peers the agent connects to whose host names do not resolve here (within
/// [`RESOLVE_WAIT`] for all of them), one sentence each. IP addresses are not looked up.
fn unresolved_hosts(cfg: &shopfloor::agent::config::Config) -> Vec<String> {
    let mut peers: Vec<(String, String, u16)> = Vec::new();
    let mut add = |what: String, host: &str, port: u16| {
        if !host.is_empty() && host.parse::<std::net::IpAddr>().is_err() {
            peers.push((what, host.to_string(), port));
        }
    };
    for d in &cfg.modbus {
        if let Some((host, port)) = d.address.as_deref().and_then(split_host_port) {
            add(format!("modbus device {}", d.id), host, port);
        }
    }
    for d in &cfg.s7 {
        add(format!("s7 device {}", d.id), &d.host, d.port);
    }
    for d in &cfg.melsec {
        add(format!("melsec device {}", d.id), &d.host, d.port);
    }
    for b in &cfg.mqtt {
        if let Some((host, port)) = split_host_port(&b.connection.address) {
            add(format!("mqtt broker {}", b.id), host, port);
        }
    }
    if let Some(u) = &cfg.uplink
        && let Some((host, port)) = split_host_port(&u.connection.address)
    {
        add("uplink".to_string(), host, port);
    }
    for s in &cfg.opcua {
        if let Some((host, port)) = url_host_port(&s.endpoint, 4840) {
            add(format!("opcua server {}", s.id), host, port);
        }
    }
    for o in &cfg.influx {
        let usual = if o.url.starts_with("https://") {
            443
        } else {
            80
        };
        if let Some((host, port)) = url_host_port(&o.url, usual) {
            add(
                format!("influx output {}", o.name.as_deref().unwrap_or(&o.url)),
                host,
                port,
            );
        }
    }
    // Each name is looked up on its own thread, so a slow resolver costs the wait once.
    let lookups: Vec<_> = peers
        .into_iter()
        .map(|(what, host, port)| {
            let (tx, rx) = std::sync::mpsc::channel();
            let name = host.clone();
            std::thread::spawn(move || {
                use std::net::ToSocketAddrs;
                let _ = tx.send(
                    (name.as_str(), port)
                        .to_socket_addrs()
                        .map(|mut a| a.next().is_some()),
                );
            });
            (what, host, rx)
        })
        .collect();
    let deadline = std::time::Instant::now() + RESOLVE_WAIT;
    let mut out = Vec::new();
    for (what, host, rx) in lookups {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let why = match rx.recv_timeout(left) {
            Ok(Ok(true)) => continue,
            Ok(Ok(false)) => "it resolves to no address".to_string(),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!(
                "no answer from the resolver within {} s",
                RESOLVE_WAIT.as_secs()
            ),
        };
        out.push(format!(
            "{what}: the host name `{host}` does not resolve here ({why}); the agent keeps trying, \
             but check the name, the gateway's DNS (/etc/resolv.conf, /etc/hosts) or write the IP address"
        ));
    }
    out
}

/// How long `check` waits for host-name lookups in all.
const RESOLVE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// `host:port` or `[v6]:port`; `None` when it has no port (`check` has refused it already).
fn split_host_port(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host, port.parse().ok()?))
}

/// The host and port of `scheme://host[:port][/path]`, with `usual` when no port is written.
fn url_host_port(url: &str, usual: u16) -> Option<(&str, u16)> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    match split_host_port(authority) {
        Some(hp) if !authority.ends_with(']') => Some(hp),
        _ => Some((
            authority.trim_start_matches('[').trim_end_matches(']'),
            usual,
        )),
    }
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Whether the agent can write in `dir` (its spool, state and certificates live there):
/// `check` tries, as the agent would, with a file it removes at once, in the directory or,
/// when that does not exist yet, in the nearest one above it that does (the agent creates the
/// rest).
fn writable_dir(dir: &std::path::Path) -> Result<(), String> {
    let existing = dir
        .ancestors()
        .find(|d| d.exists())
        .unwrap_or(std::path::Path::new("."));
    let shown = dir.display();
    if !existing.is_dir() {
        return Err(format!(
            "data_dir `{shown}`: `{}` is a file, not a directory",
            existing.display()
        ));
    }
    let probe = existing.join(format!(".shopfloor-check-{}", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(format!(
            "data_dir `{shown}` cannot be written ({e} in `{}`): the spool and the agent's state live there; create it and give the agent's user write access, or set [agent] data_dir",
            existing.display()
        )),
    }
}

fn parse_plc(text: &str) -> Result<sim::plc::PlcProtocol, String> {
    match text {
        "s7" => Ok(sim::plc::PlcProtocol::S7),
        "melsec" | "mc" => Ok(sim::plc::PlcProtocol::Melsec),
        other => Err(format!(
            "`{other}` is not a PLC protocol the simulator speaks: s7 or melsec"
        )),
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
async fn run(path: PathBuf, pid_file: Option<PathBuf>) -> Result<()> {
    let (cfg, warnings) =
        shopfloor::agent::config::load_warned(&path).map_err(|d| anyhow::anyhow!("{d}"))?;
    for p in &warnings.problems {
        tracing::warn!(file = %warnings.file, line = p.line, column = p.column, "config: {}", p.message);
    }
    // SIGHUP is caught before the pid is told anywhere: its default would end the agent.
    let signals = Signals::new()?;
    let pid = std::process::id();
    if let Some(file) = &pid_file {
        std::fs::write(file, format!("{pid}\n"))
            .with_context(|| format!("cannot write the pid file {}", file.display()))?;
    }
    tracing::info!(pid, config = %path.display(), "agent started; `systemctl reload shopfloor` (as a service) or `kill -HUP {pid}` reloads the config");
    let result = run_reloading(&path, cfg, signals).await;
    if let Some(file) = &pid_file {
        let _ = std::fs::remove_file(file);
    }
    result
}

/// Hands the heap's free pages back to the system. Reading and checking a large config (a
/// spanned TOML document of 100,000 OPC UA nodes takes some 350 MB for a moment) leaves the
/// freed memory scattered between what the tasks keep, where glibc's allocator would hold it
/// for the life of the process; `malloc_trim` returns every free page, not only the heap's top.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas; it takes no pointer of ours.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The agent's run, started afresh with each config that a SIGHUP brings and that passes the
/// check.
async fn run_reloading(
    path: &std::path::Path,
    mut cfg: Config,
    mut signals: Signals,
) -> Result<()> {
    let mut resume = shopfloor::engine::Resume::AfterStop;
    loop {
        let (trigger, shutdown) = shutdown::channel();
        let running = agent::start_resuming(&cfg, shutdown, resume)?;
        // Every task has what it needs; a reload reads the file afresh. A large register map
        // (100k Modbus fields: about 20 MB) is not worth holding for nothing.
        drop(cfg);
        release_freed_memory();
        let next = loop {
            match signals.next().await {
                Signal::Stop => break None,
                Signal::Reload => {
                    tracing::info!(config = %path.display(), "SIGHUP: checking the config again");
                    match shopfloor::agent::config::load(path) {
                        Ok(new) => break Some(new),
                        Err(d) => tracing::error!(
                            config = %path.display(),
                            "config not reloaded: it does not pass the check, and the running config stays in force; fix these and send SIGHUP again:\n{d}"
                        ),
                    }
                }
            }
        };
        trigger.fire();
        running.finished().await;
        match next {
            Some(new) => {
                tracing::info!(config = %path.display(), "config reloaded: the agent runs on with the new config (spool, open windows and machine states carry on)");
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
    let listening = match sim.addrs.as_slice() {
        [one] => one.to_string(),
        [first, .., last] => format!("{first} … {last} ({} ports)", sim.addrs.len()),
        [] => String::new(),
    };
    let registers = options.registers.max(15);
    match options.plc {
        None => println!(
            "simulating {} CNC machines (unit ids 1–{}) and an electricity meter (unit {}) on {listening}{}",
            options.machines,
            options.machines,
            sim::METER_UNIT,
            if options.framing == Framing::RtuOverTcp {
                ", RTU over TCP"
            } else {
                ""
            }
        ),
        Some(sim::plc::PlcProtocol::S7) => println!(
            "simulating {} CNC machines as an S7 PLC on {listening}: machine N in DBN, {registers} words from DBN.DBW0",
            options.machines
        ),
        Some(sim::plc::PlcProtocol::Melsec) => println!(
            "simulating {} CNC machines as a MELSEC PLC (MC protocol, 3E/4E binary) on {listening}: machine N from D{{(N-1)×{registers}}}, {registers} words each",
            options.machines
        ),
    }
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
    let mut cfg: Config = shopfloor::agent::config::load_str(DEMO_CONFIG, "config/demo.toml")
        .map_err(|d| anyhow::anyhow!("the built-in demo config is broken:\n{d}"))?;
    let mut shutdown = shutdown_on_signal();
    let options = SimOptions {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        seed,
        ..SimOptions::default()
    };
    let sim = sim::start(&options, shutdown.clone(), None).await?;
    for device in &mut cfg.modbus {
        device.address = Some(sim.addr.to_string());
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
        let signals = if tty {
            running.signals.latest().await.unwrap_or_default()
        } else {
            Vec::new()
        };
        let mut out = std::io::stdout().lock();
        if tty {
            let _ = write!(
                out,
                "\x1b[2J\x1b[H{}",
                board(
                    &snapshot,
                    &signals,
                    spool.lines,
                    &records,
                    &board_url,
                    Screen::of_stdout()
                )
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

/// The terminal's size for the demo's table: the window's size on a terminal (`TIOCGWINSZ`),
/// else `COLUMNS` and `LINES`, else 80×24.
#[derive(Debug, Clone, Copy)]
struct Screen {
    width: usize,
    height: usize,
    /// ANSI colours: on a terminal and without `NO_COLOR`, as the logs.
    colour: bool,
}

impl Screen {
    fn of_stdout() -> Screen {
        let (mut width, mut height) = (0usize, 0usize);
        #[cfg(unix)]
        {
            // SAFETY: TIOCGWINSZ fills the winsize it is given and nothing else.
            let mut size: libc::winsize = unsafe { std::mem::zeroed() };
            if unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0 {
                (width, height) = (usize::from(size.ws_col), usize::from(size.ws_row));
            }
        }
        let env = |name: &str| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
        };
        if width == 0 {
            width = env("COLUMNS").unwrap_or(80);
        }
        if height == 0 {
            height = env("LINES").unwrap_or(24);
        }
        Screen {
            width: width.max(40),
            height: height.max(10),
            colour: std::io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        }
    }
}

/// `text` cut to `width` characters (an ellipsis marks the cut) and padded to it.
fn cell(text: &str, width: usize) -> String {
    let n = text.chars().count();
    if n <= width {
        format!("{text:<width$}")
    } else {
        let cut: String = text.chars().take(width.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

/// The same, right-aligned.
fn cell_right(text: &str, width: usize) -> String {
    let n = text.chars().count();
    if n <= width {
        format!("{text:>width$}")
    } else {
        cell(text, width)
    }
}

/// `text` in `code`'s colour when colours are on.
fn paint(text: &str, code: &str, screen: Screen) -> String {
    if screen.colour {
        format!("{code}{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

/// A state's colour, as on the board.
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

const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";

/// The terminal summary of `shopfloor demo`: every line within the screen's width, at most
/// its height less one lines (machines beyond that are counted, devices summed up), states and
/// figures below their target coloured.
fn board(
    snapshot: &Snapshot,
    signals: &[MachineSignals],
    waiting: u64,
    records: &std::path::Path,
    url: &str,
    screen: Screen,
) -> String {
    let width = screen.width;
    let now = snapshot.at.unwrap_or_else(Timestamp::now);
    let networked = snapshot
        .machines
        .iter()
        .filter(|m| m.state != State::Offline)
        .count();
    let mut head: Vec<String> = vec![
        cell(
            &format!(
                "Shopfloor demo  {} machines, {networked} delivering data  spool: {waiting} lines waiting",
                snapshot.machines.len()
            ),
            width,
        ),
        cell(
            &format!("board: {url}  records: {}", records.display()),
            width,
        ),
    ];
    let pct = |r: Option<f64>| r.map_or_else(|| "–".to_string(), |r| format!("{:.1} %", r * 100.0));
    // A figure against its target: green when it meets it, red below (or above a maximum).
    let judged = |text: String, meets: Option<bool>| match meets {
        Some(true) => paint(&text, GREEN, screen),
        Some(false) => paint(&text, RED, screen),
        None => text,
    };
    if let Some(f) = &snapshot.fleet_today {
        let net = f.networking_rate();
        let cnc = f.cnc_rate();
        head.push(format!(
            "today: networked {} ({}/{}, ≥ 55 %)  CNC rate {} ({}/{}, ≥ 65 %)",
            judged(cell(&pct(net), 7), net.map(|v| v >= 0.55)),
            f.machines_networked,
            f.machines_total,
            judged(cell(&pct(cnc), 7), cnc.map(|v| v >= 0.65)),
            f.machines_cnc,
            f.machines_total,
        ));
        let mut line = format!("       CNC utilisation {}", pct(f.cnc_utilisation()));
        if let Some(g) = &snapshot.green_today {
            let intensity = g.tce_per_10k_cny();
            line.push_str(&format!(
                "  energy {} tce per 10k CNY (≤ 0.43)",
                judged(
                    intensity.map_or_else(|| "–".to_string(), |v| format!("{v:.3}")),
                    intensity.map(|v| v <= 0.43)
                )
            ));
        }
        head.push(line);
    }
    let mut text = String::new();
    for line in &head {
        text.push_str(line);
        text.push('\n');
    }
    text.push('\n');
    // 8 + 12 + 3 + 8 + 8 + 6 + 7 + 5 + 6 + 6 characters and 9 spaces: 78, within 80.
    text.push_str(
        "machine  kind         cnc state    for         rpm   parts alarm  avail   made\n",
    );
    // Room for the machines: the height less the lines above (the heading, a blank line, the
    // table's heading), one for the devices and one for the cursor's line.
    let room = screen.height.saturating_sub(head.len() + 2 + 2);
    let shown = if snapshot.machines.len() > room {
        room.saturating_sub(1)
    } else {
        snapshot.machines.len()
    };
    for m in snapshot.machines.iter().take(shown) {
        let latest = signals.iter().find(|s| s.id == m.id);
        let get = |name: &str| {
            latest
                .and_then(|s| s.signals.iter().find(|(k, _)| &**k == name))
                .map_or_else(|| "-".to_string(), |(_, v)| v.to_string())
        };
        let secs = now.duration_since(m.since).as_secs().max(0);
        let since = format!("{}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
        text.push_str(&format!(
            "{} {} {} {} {} {} {} {} {} {}\n",
            cell(&m.id, 8),
            cell(&m.kind, 12),
            cell(if m.cnc { "yes" } else { "no" }, 3),
            paint(&cell(m.state.as_str(), 8), colour(m.state), screen),
            cell_right(&since, 8),
            cell_right(&get("spindle_rpm"), 6),
            cell_right(&get("parts"), 7),
            cell_right(&get("alarm_code"), 5),
            cell_right(&pct(m.availability_today), 6),
            cell_right(&m.parts_today.to_string(), 6),
        ));
    }
    if shown < snapshot.machines.len() {
        text.push_str(&cell(
            &format!(
                "… {} more machines (the board shows every one)",
                snapshot.machines.len() - shown
            ),
            width,
        ));
        text.push('\n');
    }
    let up = snapshot.devices.iter().filter(|d| d.up).count();
    let mut devices = format!("devices: {up} of {} up", snapshot.devices.len());
    for d in snapshot.devices.iter().filter(|d| !d.up) {
        devices.push_str(&format!(
            "; {} down ({})",
            d.id,
            d.reason.as_deref().unwrap_or("unknown")
        ));
    }
    let devices = cell(&devices, width);
    text.push_str(&if up < snapshot.devices.len() {
        paint(&devices, RED, screen)
    } else {
        devices
    });
    text.push('\n');
    text
}

/// `shopfloor probe dlt645://…` or `cjt188://…`.
async fn probe_meter(url: &str, args: &ProbeArgs) -> Result<()> {
    use shopfloor::source::meterbus::config::Bus;
    let (protocol, place) = url.split_once("://").context(
        "write the meter bus as dlt645://HOST:PORT, cjt188://HOST:PORT or dlt645:///dev/ttyUSB0",
    )?;
    let mut bus = Bus {
        baud: args.baud.unwrap_or(2400),
        data_bits: args.data_bits,
        parity: args.parity.unwrap_or(Parity::Even),
        stop_bits: args.stop_bits,
        timeout: args.timeout.unwrap_or(Duration::from_secs(2)),
        ..Bus::default()
    };
    if place.starts_with('/') {
        bus.port = Some(place.to_string());
    } else {
        bus.tcp = Some(place.to_string());
    }
    if let Some((_, problem)) = bus.problems().into_iter().next() {
        anyhow::bail!("{url}: {problem}");
    }
    println!("{protocol} on {}\n", bus.describe());
    let report = match protocol {
        "dlt645" => {
            use shopfloor::source::dlt645::{frame::Address, probe};
            let address = match &args.meter_address {
                Some(a) => Some(Address::parse(a).map_err(|e| anyhow::anyhow!(e))?),
                None => None,
            };
            probe::probe(&bus, address).await
        }
        "cjt188" => {
            use shopfloor::source::cjt188::{frame::DiOrder, probe};
            probe::probe(&bus, DiOrder::AsWritten).await
        }
        other => anyhow::bail!("`{other}://`: the meter buses are dlt645:// and cjt188://"),
    };
    print!("{}", report.map_err(|fault| anyhow::anyhow!("{fault}"))?);
    Ok(())
}

/// `shopfloor dtu listen`: prints what arrives until Ctrl-C.
async fn dtu_listen(
    port: u16,
    config: Option<PathBuf>,
    poll: Option<String>,
    framing: &str,
) -> Result<()> {
    use shopfloor::source::dial_in::commission;
    use shopfloor::source::dial_in::stream::Framing as DtuFraming;
    let dtus = match &config {
        Some(path) => {
            let cfg = shopfloor::agent::config::load(path).map_err(|d| anyhow::anyhow!("{d}"))?;
            commission::known(&cfg.dial_in)
        }
        None => Vec::new(),
    };
    let poll = poll
        .map(|p| commission::parse_poll(&p))
        .transpose()
        .map_err(|e| anyhow::anyhow!(e))?;
    let framing = match framing {
        "rtu" => DtuFraming::Rtu,
        "tcp" => DtuFraming::Tcp,
        other => anyhow::bail!("--framing `{other}`: write rtu (transparent) or tcp"),
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let options = commission::ListenOptions {
        port,
        dtus,
        poll,
        framing,
    };
    let listening = tokio::spawn(commission::listen(options, tx));
    while let Some(line) = rx.recv().await {
        println!("{line}");
    }
    match listening.await {
        Ok(Err(e)) => Err(anyhow::anyhow!(
            "cannot listen on port {port}: {e}; stop the agent or choose another --port"
        )),
        _ => Ok(()),
    }
}

async fn run_probe(args: ProbeArgs) -> Result<()> {
    if let Some(target) = &args.target {
        if target.starts_with("opc.tcp://") {
            return probe_opcua(target, &args).await;
        }
        if !args.more_nodes.is_empty() {
            anyhow::bail!("give one address after the URL; --count says how many to read");
        }
        if target.starts_with("dlt645://") || target.starts_with("cjt188://") {
            return probe_meter(target, &args).await;
        }
        if target.starts_with("s7://") {
            let item =
                (args.first.as_deref()).context("say which address to start at, e.g. DB10.DBW0")?;
            return run_probe_s7(target, item, args.count, args.timeout).await;
        }
        return melsec_probe(target, args.first.as_deref(), args.count, args.timeout).await;
    }
    let first = args.start.context("--start is required")?;
    let mut link = None;
    let (mut unit, mut base, mut timeout) = (1, 0, Duration::from_secs(1));
    if let Some(id) = &args.device {
        let path = args.config.as_deref().context("--device needs --config")?;
        // The probe uses no secret: the store's token, say, is not asked for.
        let (cfg, _) = shopfloor::agent::config::load_resolving(path, config::Secrets::None)
            .map_err(|d| anyhow::anyhow!("{d}"))?;
        let connection = modbus::connections(&cfg)
            .into_iter()
            .find(|c| c.devices.iter().any(|d| &d.id == id))
            .with_context(|| format!("no [[modbus]] device `{id}` in {}", path.display()))?;
        let device = connection
            .devices
            .iter()
            .find(|d| &d.id == id)
            .context("device vanished")?;
        (unit, base, timeout) = (device.unit.0, device.address_base.offset(), device.timeout);
        link = Some(connection.link.clone());
    }
    if let Some(address) = args.address {
        link = Some(if args.rtu_over_tcp {
            LinkSpec::RtuOverTcp(address)
        } else {
            LinkSpec::Tcp(address)
        });
    }
    if let Some(port) = args.serial {
        link = Some(LinkSpec::Serial(ModbusSerial {
            id: "probe".into(),
            port,
            baud: args.baud.unwrap_or(9600),
            data_bits: args.data_bits,
            parity: args.parity.unwrap_or(Parity::None),
            stop_bits: args.stop_bits,
            frame_gap: None,
        }));
    }
    let link = link.context("say where to read: --address, --serial, or --config with --device")?;
    unit = args.unit.unwrap_or(unit);
    base = args.address_base.unwrap_or(base);
    timeout = args.timeout.unwrap_or(timeout);
    let start = first
        .checked_sub(base)
        .context("--start 0 does not exist when --address-base is 1")?;
    let limit = args.register.protocol_limit();
    if args.count == 0 || args.count > limit {
        anyhow::bail!("--count is 1–{limit} for {}", args.register.as_str());
    }
    println!(
        "{link} unit {unit}: fc {} {} {}–{} (protocol addresses {}–{})\n",
        args.register.function_code(),
        args.register.as_str(),
        first,
        u32::from(first) + u32::from(args.count) - 1,
        start,
        u32::from(start) + u32::from(args.count) - 1,
    );
    match probe::read(&link, unit, args.register, start, args.count, timeout).await {
        Ok(Ok(words)) => {
            print!("{}", probe::table(args.register, u32::from(first), &words));
            Ok(())
        }
        Ok(Err(exception)) => anyhow::bail!("the device answered with an exception: {exception}"),
        Err(fault) => anyhow::bail!("{fault}"),
    }
}

/// `shopfloor probe opc.tcp://host:port [NODE ...]`.
async fn probe_opcua(url: &str, args: &ProbeArgs) -> Result<()> {
    use shopfloor::source::opcua::probe as ua;
    let target = ua::parse_url(url, args.pki_dir.as_deref(), args.timeout)
        .map_err(|e| anyhow::anyhow!(e))?;
    let nodes: Vec<String> = args.first.iter().chain(&args.more_nodes).cloned().collect();
    let mut walk = ua::Walk::default();
    if let Some(from) = &args.from {
        if !nodes.is_empty() {
            anyhow::bail!("--from is for browsing: give node ids to read, or --from, not both");
        }
        walk.from = Some(
            shopfloor::source::opcua::node_id::NodeAddress::parse(from)
                .map_err(|e| anyhow::anyhow!("--from `{from}`: {e}"))?,
        );
    }
    if let Some(depth) = args.depth {
        if !(1..=10).contains(&depth) {
            anyhow::bail!("--depth is 1–10 levels");
        }
        walk.depth = depth;
    }
    if let Some(limit) = args.limit {
        if !(1..=100_000).contains(&limit) {
            anyhow::bail!("--limit is 1–100000 nodes");
        }
        walk.limit = limit;
    }
    let outcome = ua::run(
        &target,
        &nodes,
        &walk,
        args.section.as_deref(),
        args.csv.as_deref(),
    )
    .await;
    print!("{}", outcome.text);
    match outcome.error {
        Some(e) => Err(anyhow::anyhow!(e)),
        None => Ok(()),
    }
}

/// `shopfloor probe melsec://host:port D100 --count 20`.
async fn melsec_probe(
    url: &str,
    first: Option<&str>,
    count: u16,
    timeout: Option<Duration>,
) -> Result<()> {
    use shopfloor::source::melsec::{address::Address, probe as mc};
    let target = mc::target(url).map_err(anyhow::Error::msg)?;
    let first = first.context("say which device to start from, e.g. D100")?;
    let first = Address::parse(first, target.family).map_err(anyhow::Error::msg)?;
    mc::request(&first, count).map_err(anyhow::Error::msg)?;
    println!(
        "melsec://{} ({}, {} frames): {} devices from {first}\n",
        target.address,
        match target.family {
            shopfloor::source::melsec::address::Family::Fx => "FX5 numbering, X/Y octal",
            shopfloor::source::melsec::address::Family::Q => "Q/L/iQ-R numbering, X/Y hexadecimal",
        },
        if target.four_e { "4E" } else { "3E" },
        count
    );
    let timeout = timeout.unwrap_or(Duration::from_secs(1));
    let answer = mc::read(&target, &first, count, timeout)
        .await
        .map_err(anyhow::Error::msg)?;
    print!("{}", mc::table(&first, &answer));
    Ok(())
}

/// `shopfloor probe s7://… DB10.DBW0`: reads `count` words and prints them as every S7 type.
async fn run_probe_s7(url: &str, item: &str, count: u16, timeout: Option<Duration>) -> Result<()> {
    use shopfloor::source::s7::probe as s7_probe;
    let target = s7_probe::parse_url(url).map_err(|e| anyhow::anyhow!(e))?;
    let start = s7_probe::start_of(item).map_err(|e| anyhow::anyhow!(e))?;
    if count == 0 || count > 1000 {
        anyhow::bail!("--count is 1–1000 words");
    }
    let timeout = timeout.unwrap_or(Duration::from_secs(2));
    let (pdu, bytes) = s7_probe::read(&target, start, count, timeout)
        .await
        .map_err(|fault| anyhow::anyhow!("{}: {fault}", target.address))?;
    println!(
        "{} (TSAP {:04X} to {:04X}, PDU {pdu}): {count} {} from {start}\n",
        target.address,
        target.tsaps.0,
        target.tsaps.1,
        if start.area.is_element_area() {
            "elements"
        } else {
            "words"
        },
    );
    print!("{}", s7_probe::table(start, &bytes));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shopfloor::engine::indicators::Fleet;

    /// Characters a terminal shows: colour codes take no room.
    fn visible(line: &str) -> usize {
        let mut n = 0;
        let mut escape = false;
        for c in line.chars() {
            match c {
                '\x1b' => escape = true,
                'm' if escape => escape = false,
                _ if escape => {}
                _ => n += 1,
            }
        }
        n
    }

    fn snapshot(machines: usize) -> Snapshot {
        let at = Timestamp::from_second(1_700_000_000).unwrap();
        let mut s = Snapshot {
            at: Some(at),
            fleet_today: Some(Fleet {
                machines_total: machines as u64,
                machines_cnc: 4,
                machines_networked: 2,
                ..Fleet::default()
            }),
            ..Snapshot::default()
        };
        for i in 0..machines {
            s.machines.push(shopfloor::engine::MachineView {
                id: format!("machining-centre-{i:02}").into(),
                name: String::new(),
                kind: "machining_centre_five_axis".into(),
                cnc: true,
                state: if i == 0 { State::Alarm } else { State::Running },
                since: at - jiff::SignedDuration::from_hours(30),
                availability_today: Some(0.875),
                parts_today: 123_456,
            });
        }
        s
    }

    /// Every flag and argument of every command says what it is in `--help`.
    #[test]
    fn every_flag_has_help_text() {
        use clap::CommandFactory;
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "shopfloor", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }

    #[test]
    fn the_demo_table_fits_80_by_24_and_colours_states_and_figures_below_target() {
        let screen = Screen {
            width: 80,
            height: 24,
            colour: true,
        };
        let records =
            std::path::Path::new("/a/very/long/data/directory/that/goes/on/and/on/records.lp");
        for machines in [7, 40] {
            let text = board(
                &snapshot(machines),
                &[],
                1_234_567,
                records,
                "http://127.0.0.1:8080/",
                screen,
            );
            let lines: Vec<&str> = text.lines().collect();
            for line in &lines {
                assert!(visible(line) <= 80, "{} wide: {line}", visible(line));
            }
            // 23 lines at most: the 24th is the cursor's.
            assert!(lines.len() <= 23, "{} lines:\n{text}", lines.len());
            if machines == 40 {
                assert!(text.contains("more machines"), "{text}");
            }
        }
        let text = board(&snapshot(7), &[], 0, records, "http://x/", screen);
        // The alarm in red; networking 2 of 7 = 28.6 % is below 55 %: red; CNC 4 of 7 =
        // 57.1 % below 65 %: red.
        assert!(text.contains("\x1b[31malarm"), "{text}");
        assert!(text.contains("\x1b[31m28.6 %"), "{text}");
        assert!(text.contains("\x1b[31m57.1 %"), "{text}");
        // Without colours (NO_COLOR, or not a terminal): no escape at all.
        let plain = board(
            &snapshot(7),
            &[],
            0,
            records,
            "http://x/",
            Screen {
                colour: false,
                ..screen
            },
        );
        assert!(!plain.contains('\x1b'), "{plain}");
    }
}
